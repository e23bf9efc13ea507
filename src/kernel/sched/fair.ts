/**
 * The fair scheduling class as Linux 6.6+ has it (kernel/sched/fair.c):
 * EEVDF, "Earliest Eligible Virtual Deadline First". What this file keeps:
 *
 * - Weights from nice (sched_prio_to_weight): a task's virtual runtime
 *   advances by its CPU time scaled by NICE_0_LOAD / weight.
 * - The queue's weighted average virtual runtime V (avg_vruntime, the
 *   current task included); a task is eligible when its vruntime is at or
 *   below V (entity_eligible: it is owed service, lag >= 0).
 * - A virtual deadline per task, vruntime + base_slice * NICE_0_LOAD /
 *   weight, renewed each time the task has used a slice (update_deadline).
 * - The pick: the eligible task with the earliest deadline (pick_eevdf);
 *   the running task keeps the CPU until its slice is used (RUN_TO_PARITY)
 *   and the next tick notices it (HRTICK is off by default, so at HZ=250 a
 *   CPU-bound task runs about 4 ms per turn).
 * - Lag kept across a sleep or a move to another CPU and restored when the
 *   task is queued again (place_entity with PLACE_LAG), bounded as
 *   update_entity_lag bounds it.
 *
 * The base slice is sysctl_sched_base_slice (0.70 ms in 6.18) scaled by
 * 1 + ilog2(min(CPUs, 8)) (SCHED_TUNABLESCALING_LOG, the default).
 */

/** The weight of a nice-0 task. */
export const NICE_0_LOAD = 1024;

/** sched_prio_to_weight: nice -20 .. 19. */
export const SCHED_PRIO_TO_WEIGHT = [
  88761, 71755, 56483, 46273, 36291, 29154, 23254, 18705, 14949, 11916, 9548, 7620, 6100, 4904, 3906, 3121, 2501, 1991, 1586, 1277, 1024,
  820, 655, 526, 423, 335, 272, 215, 172, 137, 110, 87, 70, 56, 45, 36, 29, 23, 18, 15,
] as const;

export function niceToWeight(nice: number): number {
  if (!Number.isInteger(nice) || nice < -20 || nice > 19) throw new RangeError(`nice ${nice} is outside -20..19`);
  return SCHED_PRIO_TO_WEIGHT[nice + 20]!;
}

/** normalized_sysctl_sched_base_slice: 0.70 ms in Linux 6.18 (0.75 ms in 6.6). */
export const NORMALIZED_BASE_SLICE_NS = 700_000;
/** TICK_NSEC at HZ=250 (Debian's and most distributions' kernels). */
export const TICK_NSEC = 4_000_000;

/** sysctl_sched_base_slice for a machine with `cpus` CPUs (get_update_sysctl_factor, log scaling). */
export function baseSliceNs(cpus: number): number {
  return NORMALIZED_BASE_SLICE_NS * (1 + Math.floor(Math.log2(Math.max(1, Math.min(cpus, 8)))));
}

/** What EEVDF keeps per task (struct sched_entity). */
export interface FairEntity {
  readonly id: number;
  weight: number;
  vruntime: number;
  deadline: number;
  /** Lag saved when the task left a queue (sleep or migration), restored when it comes back. */
  vlag: number;
}

/** calc_delta_fair: CPU time scaled to virtual time for a task of `weight`. */
export function calcDeltaFair(delta: number, weight: number): number {
  return weight === NICE_0_LOAD ? delta : (delta * NICE_0_LOAD) / weight;
}

/** A CPU's queue of fair tasks (struct cfs_rq), the running one included. */
export class CfsRq {
  readonly tasks: FairEntity[] = [];
  /** A monotonic base for V while the queue is empty (min_vruntime). */
  private base = 0;

  constructor(readonly slice: number) {}

  get nr(): number {
    return this.tasks.length;
  }

  /** V: the weighted average vruntime of the queued tasks (avg_vruntime), or the base when empty. */
  avgVruntime(): number {
    let sw = 0;
    let swv = 0;
    for (const e of this.tasks) {
      sw += e.weight;
      swv += e.weight * (e.vruntime - this.base);
    }
    return sw ? this.base + swv / sw : this.base;
  }

  private totalWeight(): number {
    let w = 0;
    for (const e of this.tasks) w += e.weight;
    return w;
  }

  /** entity_eligible: the task has received no more than its share (vruntime <= V). */
  eligible(e: FairEntity, V = this.avgVruntime()): boolean {
    return e.vruntime <= V + 1e-6;
  }

  /**
   * place_entity: a task joins the queue at V minus its saved lag (the lag
   * inflated by (W + w) / W so that adding it leaves V where the lag says),
   * with a fresh deadline; a new task gets half a slice for its first deadline.
   */
  enqueue(e: FairEntity, isNew = false): void {
    const V = this.avgVruntime();
    const W = this.totalWeight();
    let lag = e.vlag;
    if (W > 0) lag = (lag * (W + e.weight)) / W;
    e.vruntime = V - lag;
    const vslice = calcDeltaFair(this.slice, e.weight);
    e.deadline = e.vruntime + (isNew ? vslice / 2 : vslice);
    this.tasks.push(e);
  }

  /** update_entity_lag, then remove: the lag is bounded by two slices (or a tick) of virtual time. */
  dequeue(e: FairEntity): void {
    const V = this.avgVruntime();
    const limit = calcDeltaFair(Math.max(2 * this.slice, TICK_NSEC), e.weight);
    e.vlag = Math.max(-limit, Math.min(limit, V - e.vruntime));
    const i = this.tasks.indexOf(e);
    if (i >= 0) this.tasks.splice(i, 1);
    if (!this.tasks.length) this.base = V;
  }

  /** update_curr + update_deadline: `delta` ns of CPU time for `e`; true when its slice is used up. */
  account(e: FairEntity, delta: number): boolean {
    e.vruntime += calcDeltaFair(delta, e.weight);
    if (e.vruntime < e.deadline) return false;
    e.deadline = e.vruntime + calcDeltaFair(this.slice, e.weight);
    return true;
  }

  /**
   * pick_eevdf: the eligible task with the earliest virtual deadline (ties:
   * the lower id). The scheduler asks only when the running task's slice
   * is used up or it left the CPU: Linux reschedules the running task when
   * update_deadline finds its deadline passed (RUN_TO_PARITY), and a wakeup
   * of a task with the same slice does not preempt it before then.
   */
  pick(): FairEntity | null {
    if (!this.tasks.length) return null;
    const V = this.avgVruntime();
    let best: FairEntity | null = null;
    for (const e of this.tasks) {
      if (!this.eligible(e, V)) continue;
      if (!best || e.deadline < best.deadline || (e.deadline === best.deadline && e.id < best.id)) best = e;
    }
    // Some task is always eligible (V is their weighted average); guard against rounding all the same.
    return best ?? this.tasks.reduce((a, b) => (b.vruntime < a.vruntime || (b.vruntime === a.vruntime && b.id < a.id) ? b : a));
  }
}
