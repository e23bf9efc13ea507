/**
 * AgentSys on the simulated kernel: the agent is a process of its own whose
 * calls are charged to its CPU time, at the profile's costs (reading smaps
 * and pagemap walks the page tables: pagemap_read_per_page per page covered;
 * process_madvise costs what the collapses it causes cost).
 */
import type { Kernel } from '../kernel/kernel.ts';
import type { Process } from '../kernel/sched.ts';
import { pagemap, renderSmaps } from '../kernel/procfs.ts';
import { sysProcessMadvise } from '../kernel/madvise.ts';
import { HPAGE_PMD_NR, PAGE_SIZE, PMD_SIZE, alignUp, alignDown } from '../kernel/uapi.ts';
import type { AgentSys, RegionState } from './uhugepaged.ts';
import type { DamonHeat } from './damon_heat.ts';

/** Accesses per 2M region (PMD index) of one mm, counted by the workload engine. */
export type HeatMap = Map<number, number>;

export class SimAgentSys implements AgentSys {
  /** CPU time of the ticks before the current one. */
  private done = 0;
  /** The current tick's CPU time: Kernel.taskTime points here while the agent runs. */
  private tickTime = { ns: 0 };
  readonly self: Process;

  constructor(
    private readonly k: Kernel,
    name: string,
    private readonly procs: Process[],
    private readonly heat: Map<Process, HeatMap>,
    /** With it, heat is what DAMON reported (hotness: damon) instead of the workload's exact counts. */
    readonly damon?: DamonHeat,
  ) {
    this.self = k.createProcess(name);
  }

  private proc(pid: number): Process {
    const p = this.procs.find((x) => x.pid === pid);
    if (!p) throw new Error(`no process ${pid}`);
    return p;
  }

  processes(): { pid: number; name: string }[] {
    return this.procs.filter((p) => !p.exited).map((p) => ({ pid: p.pid, name: p.name }));
  }

  readSmaps(pid: number): string {
    const p = this.proc(pid);
    const pages = p.mm.vmas.reduce((a, v) => a + v.size / PAGE_SIZE, 0);
    this.k.charge(this.k.costs.ns('syscall_null') + pages * this.k.costs.ns('pagemap_read_per_page'));
    return renderSmaps(this.k, p.mm);
  }

  regions(pid: number, start: number, end: number): RegionState[] {
    const p = this.proc(pid);
    const s = alignUp(start, PMD_SIZE);
    const e = alignDown(end, PMD_SIZE);
    if (e <= s) return [];
    this.k.charge(this.k.costs.ns('syscall_null') + ((e - s) / PAGE_SIZE) * this.k.costs.ns('pagemap_read_per_page'));
    const out: RegionState[] = [];
    for (let a = s; a < e; a += PMD_SIZE) out.push({ addr: a, present: 0, huge: false });
    let off = 0;
    for (const run of pagemap(this.k, p.mm, s, e - s)) {
      for (let i = 0; i < run.n;) {
        const r = out[Math.floor((off + i) / HPAGE_PMD_NR)]!;
        const inRegion = Math.min(run.n - i, HPAGE_PMD_NR - ((off + i) % HPAGE_PMD_NR));
        if (run.present && run.size === '2M') r.huge = true;
        else if (run.present) r.present += inRegion;
        i += inRegion;
      }
      off += run.n;
    }
    return out;
  }

  takeHeat(pid: number): Map<number, number> {
    if (this.damon) {
      const out = new Map<number, number>();
      for (const [key, n] of this.damon.take(this.proc(pid))) out.set(key * PMD_SIZE, n);
      return out;
    }
    const h = this.heat.get(this.proc(pid));
    const out = new Map<number, number>();
    if (!h) return out;
    for (const [key, n] of h) out.set(key * PMD_SIZE, n);
    h.clear();
    return out;
  }

  processMadvise(pid: number, iov: [number, number][], advice: number): number {
    return sysProcessMadvise(this.k, this.self, this.proc(pid), iov, advice, 0);
  }

  cpuNs(): number {
    return this.done + this.tickTime.ns;
  }

  /** Run `f` as the agent's task: kernel work it causes is charged to the agent, from the current time. */
  run(f: () => void): void {
    this.tickTime = { ns: 0 };
    try {
      // The agent is a process of its own, on any CPU.
      this.k.runAsTask(this.tickTime, f, { name: this.self.name });
    } finally {
      this.done += this.tickTime.ns;
      this.tickTime = { ns: 0 };
    }
  }
}
