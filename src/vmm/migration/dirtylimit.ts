/**
 * The dirty page rate limit (QEMU system/dirtylimit.c, 7.1+; the
 * migration's `dirty-limit` capability, 8.1+): each vCPU's dirty rate is
 * held under a quota (MB/s) by sleeping it at each KVM_EXIT_DIRTY_RING_FULL
 * exit (cpu->throttle_us_per_full, dirtylimit_vcpu_execute). It needs the
 * KVM dirty ring (dirty_ring.ts).
 *
 * - set-vcpu-dirty-limit (cpu-index optional: every vCPU), with
 *   dirty-rate 0 cancelling, cancel-vcpu-dirty-limit,
 *   query-vcpu-dirty-limit; QEMU's errors.
 * - The throttle thread measures each vCPU's dirty rate over a period
 *   (x-vcpu-dirty-limit-period ms with the migration's capability, 1 s
 *   otherwise) from the entries its ring took, and sets the sleep per
 *   ring-full so that the rate meets the quota. QEMU gets there by
 *   feedback over a few periods (dirtylimit_adjust_throttle); memtwin sets
 *   in one period the run fraction that meets it: f = quota / (rate / f),
 *   at least 1% (DIRTYLIMIT_THROTTLE_PCT_MAX 99). The caller scales the
 *   vCPU's work by f (the workload engine's runFraction, as auto-converge
 *   does).
 * - The migration (migration_trigger_throttle): where auto-converge would
 *   throttle, dirty-limit sets every vCPU's quota to vcpu-dirty-limit
 *   (migration_dirty_limit_guest), cancelled when the migration ends.
 * - query-migrate (8.1): dirty-limit-throttle-time-per-round, the largest
 *   sleep per ring-full round among the vCPUs (us), and
 *   dirty-limit-ring-full-time, how long a ring takes to fill at the
 *   vCPUs' average dirty rate (the fastest seen: dirty ring MiB x 10^6 /
 *   MB/s, us).
 */
import { PAGE_SIZE } from '../../kernel/uapi.ts';
import type { KvmDirtyRing } from './dirty_ring.ts';

/** DIRTYLIMIT_THROTTLE_PCT_MAX. */
export const DIRTYLIMIT_THROTTLE_PCT_MAX = 99;
/** The throttle thread's period without the migration's x-vcpu-dirty-limit-period (DIRTYLIMIT_CALC_TIME_MS). */
export const DIRTYLIMIT_CALC_TIME_MS = 1000;

const MiB = 2 ** 20;

export class DirtyLimit {
  /** Quota per vCPU (MB/s), undefined: not limited. */
  readonly quota: (number | undefined)[];
  /** The share of time each vCPU runs (1: not throttled). */
  readonly fraction: number[];
  /** Measured dirty rate per vCPU over the last period (MB/s), and the unthrottled estimate. */
  readonly rate: number[];
  /** throttle_us_per_full per vCPU. */
  readonly throttleUsPerFull: number[];
  /** The largest throttle_us_per_full any vCPU had, and the smallest run fraction (kept after a cancel: reports). */
  peakThrottleUs = 0;
  minFraction = 1;
  private maxDirtyRate = 0;

  constructor(
    readonly ring: KvmDirtyRing,
    nrVcpus: number,
  ) {
    this.quota = new Array<number | undefined>(nrVcpus).fill(undefined);
    this.fraction = new Array<number>(nrVcpus).fill(1);
    this.rate = new Array<number>(nrVcpus).fill(0);
    this.throttleUsPerFull = new Array<number>(nrVcpus).fill(0);
  }

  /** dirtylimit_in_service. */
  get inService(): boolean {
    return this.quota.some((q) => q !== undefined);
  }

  /** qmp_set_vcpu_dirty_limit's effect: `cpu` undefined sets every vCPU. */
  set(cpu: number | undefined, mbps: number): void {
    for (let v = 0; v < this.quota.length; v++) if (cpu === undefined || cpu === v) this.quota[v] = mbps;
  }

  /** qmp_cancel_vcpu_dirty_limit's effect. */
  cancel(cpu: number | undefined): void {
    for (let v = 0; v < this.quota.length; v++)
      if (cpu === undefined || cpu === v) {
        this.quota[v] = undefined;
        this.fraction[v] = 1;
        this.throttleUsPerFull[v] = 0;
      }
  }

  /**
   * One period of the throttle thread, `periodNs` long: each vCPU's dirty
   * rate from the entries its ring took, and its run fraction and sleep
   * per ring-full set to meet its quota.
   */
  period(periodNs: number): void {
    const perEntryMb = PAGE_SIZE / MiB;
    for (let v = 0; v < this.quota.length; v++) {
      const pages = this.ring.takePushed(v);
      const measured = (pages * perEntryMb * 1e9) / periodNs;
      this.rate[v] = measured;
      const q = this.quota[v];
      if (q === undefined) continue;
      const f = this.fraction[v]!;
      // What the vCPU would dirty unthrottled; a vCPU that dirtied nothing keeps its fraction.
      if (measured <= 0) continue;
      const free = measured / f;
      const next = Math.max(1 - DIRTYLIMIT_THROTTLE_PCT_MAX / 100, Math.min(1, q / free));
      this.fraction[v] = next;
      // The vCPU fills its ring (soft limit) in fullUs of running, then sleeps to keep its fraction.
      const fullUs = ((this.ring.softLimit * perEntryMb) / free) * 1e6;
      this.throttleUsPerFull[v] = next >= 1 ? 0 : Math.round(fullUs * (1 / next - 1));
      this.peakThrottleUs = Math.max(this.peakThrottleUs, this.throttleUsPerFull[v]!);
      this.minFraction = Math.min(this.minFraction, next);
    }
  }

  /** dirtylimit_throttle_time_per_round (us). */
  throttleTimePerRound(): number {
    return Math.max(0, ...this.throttleUsPerFull);
  }

  /** dirtylimit_ring_full_time (us): the ring's MiB at the vCPUs' average dirty rate, the fastest seen. */
  ringFullTime(): number {
    const running = this.rate.filter((r) => r > 0);
    if (!running.length) return 0;
    const avg = running.reduce((a, b) => a + b, 0) / running.length;
    this.maxDirtyRate = Math.max(this.maxDirtyRate, avg);
    const ringMiB = Math.floor((this.ring.size * PAGE_SIZE) / MiB);
    return Math.floor((ringMiB * 1e6) / this.maxDirtyRate);
  }
}
