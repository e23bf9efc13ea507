/**
 * Access recency for agents, learned the way a real agent learns it: from
 * DAMON. One kdamond (a kernel thread, `kdamond.0`) monitors every watched
 * process with a DAMON context of its own (src/kernel/damon.ts), one step
 * per sampling interval in virtual time; its CPU time is spent on the
 * scheduler like any kernel thread's, competing with the workloads.
 *
 * What the agent gets is what DAMON reports: at the end of every
 * aggregation interval, the regions and their nr_accesses (how many of the
 * interval's samples found the region accessed, 0 to aggr/sample). Each 2M
 * block is credited with the nr_accesses of the regions over it, in
 * proportion to how much of the block each covers: DAMON assumes a region's
 * pages are accessed alike. The sums since the agent's last look are its
 * heat; a region that DAMON has not yet split away from cold memory around
 * it spreads its heat over the cold blocks too, and small hot spots inside
 * a big region may be missed in some samples: the approximation real agents
 * live with, instead of the exact per-2M counts (`hotness: exact`).
 */
import type { Kernel } from '../kernel/kernel.ts';
import type { Process } from '../kernel/sched.ts';
import { DamonCtx, type DamonAttrs, type DamonSnapshotRegion } from '../kernel/damon.ts';
import { PMD_SIZE } from '../kernel/uapi.ts';
import type { HeatMap } from './sim_sys.ts';

export class DamonHeat {
  readonly ctxs = new Map<Process, DamonCtx>();
  private readonly heat = new Map<Process, HeatMap>();
  /** kdamond's CPU time so far, ns. */
  cpuNs = 0;

  constructor(
    private readonly k: Kernel,
    procs: readonly Process[],
    readonly attrs: DamonAttrs,
    /** The kernel thread's name on the scheduler. */
    readonly name = 'kdamond.0',
  ) {
    for (const p of procs) {
      const ctx = new DamonCtx(k, p.mm, attrs, k.random.stream(`${name}:${p.pid}`));
      const h: HeatMap = new Map();
      ctx.onAggregate = (regions) => credit(h, regions);
      this.ctxs.set(p, ctx);
      this.heat.set(p, h);
    }
  }

  /** Start kdamond at t0: a step every sampling interval until `end`. */
  start(t0: number, end: number): void {
    const sampleNs = this.attrs.sample_us * 1000;
    for (const ctx of this.ctxs.values()) ctx.prepareAccessChecks();
    const step = (): void => {
      let ns = 0;
      for (const [p, ctx] of this.ctxs) if (!p.exited) ns += ctx.sample();
      this.cpuNs += ns;
      this.k.spend({ name: this.name }, ns);
      if (this.k.clock.now() + sampleNs < end) this.k.events.schedule(this.k.clock.now() + sampleNs, this.name, step);
    };
    this.k.events.schedule(t0 + sampleNs, this.name, step);
  }

  /** The heat per 2M block (by PMD index) DAMON reported since the last call, cleared. */
  take(p: Process): HeatMap {
    const h = this.heat.get(p);
    if (!h) return new Map();
    const out = new Map(h);
    h.clear();
    return out;
  }
}

/** Add each region's nr_accesses to the 2M blocks it covers, in proportion to the share of the block it covers. */
export function credit(h: HeatMap, regions: readonly DamonSnapshotRegion[]): void {
  for (const r of regions) {
    if (!r.nr_accesses) continue;
    for (let b = Math.floor(r.start / PMD_SIZE); b * PMD_SIZE < r.end; b++) {
      const lo = Math.max(r.start, b * PMD_SIZE);
      const hi = Math.min(r.end, (b + 1) * PMD_SIZE);
      h.set(b, (h.get(b) ?? 0) + (r.nr_accesses * (hi - lo)) / PMD_SIZE);
    }
  }
}
