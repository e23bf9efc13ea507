/**
 * Pressure stall information for memory (kernel/sched/psi.c), as Linux 6.18
 * accounts it and /proc/pressure/memory prints it.
 *
 * A task is in a memory stall between psi_memstall_enter and
 * psi_memstall_leave (nestable: only the outermost pair counts). memtwin
 * enters it where Linux does, for the mechanisms it models:
 * - direct reclaim (__alloc_pages_direct_reclaim around try_to_free_pages:
 *   page_alloc.ts allocSlowpath, the hook kernel.ts sets);
 * - a swap-in that refaults a workingset folio (swap_read_folio and the
 *   wait on the locked folio: only when the folio was on the active list
 *   before it was evicted, i.e. a thrashing refault; a cold swap-in is I/O
 *   wait, not a memory stall);
 * - direct compaction (__alloc_pages_direct_compact: compaction.ts);
 * - a memory cgroup over memory.high: reclaim_high's reclaim and the
 *   throttling sleep of __mem_cgroup_handle_over_high (memcontrol.ts);
 * - kswapd's balance_pgdat (kthreadStall, below).
 *
 * Per CPU and group (psi_group_cpu), the states are, per the kernel's
 * definitions (test_state):
 * - SOME: at least one task of the group on that CPU is stalled;
 * - FULL: tasks are stalled and none of the group's tasks on that CPU is
 *   running productively (nr_running == nr_memstall_running);
 * - NONIDLE: the group has a task that is running, runnable or stalled.
 *
 * memtwin's stalls are CPU time charged to the task's quantum (a workload
 * step or a task's syscall: Kernel.taskTime), so a stall is known when the
 * quantum is computed, as the interval [start, start + ns) of the task's
 * own time on its CPU. It is FULL when no other task of the group is
 * queued on that CPU then (rq.cfs, as the scheduler has it at that moment:
 * memtwin decides a quantum at its start). NONIDLE time is the CPU's busy
 * time (the system group: rq.busyNs) or the group's tasks' CPU time on it
 * (a VM's group: its threads and work items), each quantum counted whole
 * as the stalls are. Without a scheduler (op-scripts, one op at a time) a
 * stall is FULL, and the CPU of the task that stalled is non-idle all the
 * time (the script's process runs from its start).
 *
 * Aggregation (collect_percpu_times): each CPU's state times since the
 * last aggregation, weighted by its non-idle time in jiffies, summed over
 * CPUs and divided by the total non-idle jiffies, are added to the
 * group's total. psi_avgs_work runs every psi_period (PSI_FREQ = 2*HZ+1
 * jiffies): update_averages feeds each state's share of the period, in
 * percent, into three fixed-point exponential averages (avg10, avg60,
 * avg300: calc_load with EXP_10s, EXP_60s, EXP_300s), zero-filling missed
 * periods, and caps a sample at the period (the overage is kept for the
 * next one). Reading /proc/pressure/memory aggregates first and updates
 * the averages if a period is due (psi_show).
 *
 * kswapd's balance_pgdat is a memstall too: its work is computed before the
 * scheduler runs it, so its stall is put at the time it is queued, on the
 * CPU its work item is queued on (kthreadStall). kcompactd's is not
 * modelled. Not modelled either: the psi triggers (poll), the
 * cpu/io/irq resources, and cgroup v2's per-cgroup pressure files (a VM's
 * group here is its VMM's tasks, what a per-VM cgroup would hold).
 */
import type { Thread } from './sched.ts';
import type { Scheduler, SchedTask } from './sched/core.ts';
import type { EventQueue } from '../sim/event_queue.ts';
import type { VirtualClock } from '../sim/clock.ts';

/** CONFIG_HZ of this machine's kernel (6.18, /proc/config.gz). */
export const HZ = 250;
export const NSEC_PER_JIFFY = 1_000_000_000 / HZ;
/** PSI_FREQ: 2 s and a tick, so the averaging does not run in step with periodic work. */
export const PSI_FREQ = 2 * HZ + 1;
/** psi_period = jiffies_to_nsecs(PSI_FREQ). */
export const PSI_PERIOD_NS = PSI_FREQ * NSEC_PER_JIFFY;
/** include/linux/sched/loadavg.h fixed point. */
export const FSHIFT = 11;
export const FIXED_1 = 1 << FSHIFT;
/** 1/exp(2s/10s), 1/exp(2s/60s), 1/exp(2s/300s) in fixed point (psi.c). */
export const EXP_10s = 1677;
export const EXP_60s = 1981;
export const EXP_300s = 2034;
const EXPS = [EXP_10s, EXP_60s, EXP_300s] as const;

export const PSI_MEM_SOME = 0;
export const PSI_MEM_FULL = 1;

/** calc_load: load = (load * exp + active * (FIXED_1 - exp)) / FIXED_1, rounded up while rising. */
export function calcLoad(load: number, exp: number, active: number): number {
  let n = load * exp + active * (FIXED_1 - exp);
  if (active >= load) n += FIXED_1 - 1;
  return Math.floor(n / FIXED_1);
}

/** fixed_power_int(x, FSHIFT, n): x^n in fixed point, rounding each product as the kernel does. */
export function fixedPowerInt(x: number, n: number): number {
  let result = FIXED_1;
  if (n) {
    for (;;) {
      if (n & 1) {
        result = Math.floor((result * x + FIXED_1 / 2) / FIXED_1);
      }
      n >>>= 1;
      if (!n) break;
      x = Math.floor((x * x + FIXED_1 / 2) / FIXED_1);
    }
  }
  return result;
}

/** calc_load_n: n periods of `active` at once. */
export function calcLoadN(load: number, exp: number, active: number, n: number): number {
  return calcLoad(load, fixedPowerInt(exp, n), active);
}

/** LOAD_INT.LOAD_FRAC as psi_show prints an average ("%lu.%02lu"). */
export function formatAvg(x: number): string {
  const int = x >> FSHIFT;
  const frac = ((x & (FIXED_1 - 1)) * 100) >> FSHIFT;
  return `${int}.${String(frac).padStart(2, '0')}`;
}

/** psi_group_cpu: one CPU's state times of one group (ns, cumulative) and the aggregator's last view. */
class PsiGroupCpu {
  readonly times = [0, 0];
  /** The end of the last stall counted. */
  until = 0;
  /** times_prev[PSI_AVGS]. */
  readonly prev = [0, 0];
  prevNonidle = 0;
}

/** Which tasks a group holds: every task (the system), or a VM's. */
export interface PsiMembers {
  thread(t: Thread | null): boolean;
  task(se: SchedTask): boolean;
}

/** struct psi_group: the memory resource's SOME/FULL totals and averages. */
export class PsiGroup {
  private readonly cpus = new Map<number, PsiGroupCpu>();
  /** total[PSI_AVGS][s], ns. */
  readonly total = [0, 0];
  /** avg_total[s]: what update_averages has consumed. */
  private readonly avgTotal = [0, 0];
  /** avg[s][0..2]: avg10, avg60, avg300 in fixed point (percent * FIXED_1). */
  readonly avg = [
    [0, 0, 0],
    [0, 0, 0],
  ];
  avgLastUpdate = 0;
  avgNextUpdate = PSI_PERIOD_NS;
  /** For a group of some tasks: each matched task's CPU time already attributed, by task. */
  private readonly seen = new Map<SchedTask, number>();
  private scanned = 0;
  private readonly taskNonidle = new Map<number, number>();

  constructor(
    readonly name: string,
    readonly members: PsiMembers | null,
  ) {}

  private cpu(c: number): PsiGroupCpu {
    let g = this.cpus.get(c);
    if (!g) this.cpus.set(c, (g = new PsiGroupCpu()));
    return g;
  }

  /**
   * A stall of [start, end) on `cpu`: SOME, and FULL when `full`. A CPU's
   * stalls are taken in time order: what overlaps the CPU's last counted
   * stall is counted once (so FULL time never exceeds SOME time).
   */
  record(cpu: number, start: number, end: number, full: boolean): void {
    const g = this.cpu(cpu);
    const from = Math.max(start, g.until);
    if (end <= from) return;
    g.times[PSI_MEM_SOME]! += end - from;
    if (full) g.times[PSI_MEM_FULL]! += end - from;
    g.until = end;
  }

  /** Cumulative non-idle time of the group on each CPU. */
  private nonidle(sched: Scheduler | null, now: number): Map<number, number> {
    const out = new Map<number, number>();
    if (!sched) {
      // One task at a time, running all along (an op-script's): its CPU is non-idle the whole time.
      for (const c of this.cpus.keys()) out.set(c, now);
      return out;
    }
    if (!this.members) {
      for (const [c, rq] of sched.rqs) out.set(c, rq.busyNs);
      return out;
    }
    // A group of some tasks: each new slice of a member's CPU time goes to the CPU it is on now.
    for (; this.scanned < sched.tasks.length; this.scanned++) {
      const t = sched.tasks[this.scanned]!;
      if (this.members.task(t)) this.seen.set(t, 0);
    }
    for (const [t, before] of this.seen) {
      if (t.sumExecNs > before) {
        this.taskNonidle.set(t.cpu, (this.taskNonidle.get(t.cpu) ?? 0) + t.sumExecNs - before);
        this.seen.set(t, t.sumExecNs);
      }
      if (t.state === 'dead') this.seen.delete(t);
    }
    return this.taskNonidle;
  }

  /** collect_percpu_times(PSI_AVGS): fold each CPU's new state time into total[], weighted by its non-idle jiffies. */
  collect(sched: Scheduler | null, now: number): void {
    const deltas = [0, 0];
    let nonidleTotal = 0;
    const nonidle = this.nonidle(sched, now);
    const cpus = new Set([...this.cpus.keys(), ...nonidle.keys()]);
    for (const c of [...cpus].sort((a, b) => a - b)) {
      const g = this.cpu(c);
      const ni = nonidle.get(c) ?? 0;
      // A stall is non-idle time: never weigh a CPU by less than its stalls (a stall counted ahead of its quantum).
      const dSome = g.times[PSI_MEM_SOME]! - g.prev[PSI_MEM_SOME]!;
      const dNonidle = Math.max(ni - g.prevNonidle, dSome);
      g.prevNonidle = Math.max(ni, g.prevNonidle + dNonidle);
      const jiffies = Math.floor(dNonidle / NSEC_PER_JIFFY);
      nonidleTotal += jiffies;
      for (const s of [PSI_MEM_SOME, PSI_MEM_FULL]) {
        deltas[s]! += (g.times[s]! - g.prev[s]!) * jiffies;
        g.prev[s] = g.times[s]!;
      }
    }
    for (const s of [PSI_MEM_SOME, PSI_MEM_FULL]) this.total[s]! += Math.floor(deltas[s]! / Math.max(nonidleTotal, 1));
  }

  /** update_averages at `now`; returns the next update time. */
  updateAverages(now: number): number {
    const expires = this.avgNextUpdate;
    const missed = now - expires >= PSI_PERIOD_NS ? Math.floor((now - expires) / PSI_PERIOD_NS) : 0;
    const next = expires + (1 + missed) * PSI_PERIOD_NS;
    const period = now - (this.avgLastUpdate + missed * PSI_PERIOD_NS);
    this.avgLastUpdate = now;
    for (const s of [PSI_MEM_SOME, PSI_MEM_FULL]) {
      let sample = this.total[s]! - this.avgTotal[s]!;
      if (sample > period) sample = period;
      this.avgTotal[s]! += sample;
      this.calcAvgs(this.avg[s]!, missed, sample, period);
    }
    this.avgNextUpdate = next;
    return next;
  }

  /** calc_avgs. */
  private calcAvgs(avg: number[], missed: number, time: number, period: number): void {
    if (missed) for (let w = 0; w < 3; w++) avg[w] = calcLoadN(avg[w]!, EXPS[w]!, 0, missed);
    const pct = Math.floor((time * 100) / period) * FIXED_1;
    for (let w = 0; w < 3; w++) avg[w] = calcLoad(avg[w]!, EXPS[w]!, pct);
  }

  /** psi_show for the memory resource. */
  show(): string {
    return ['some', 'full']
      .map((what, s) => {
        const [a10, a60, a300] = this.avg[s]!;
        const total = Math.floor(this.total[s]! / 1000);
        return `${what} avg10=${formatAvg(a10!)} avg60=${formatAvg(a60!)} avg300=${formatAvg(a300!)} total=${total}\n`;
      })
      .join('');
  }
}

/** What a Kernel gives PSI: its clock and events, scheduler, and the task it is running. */
export interface PsiHost {
  readonly clock: VirtualClock;
  readonly events: EventQueue;
  readonly sched: Scheduler | null;
  readonly taskTime: { ns: number } | null;
  current: Thread | null;
}

/** A memstall in progress (psi_memstall_enter's saved state). */
export interface MemstallToken {
  start: number;
  nested: boolean;
}

/** The kernel's PSI: the system group (psi_system) and the groups of some tasks (a VM's). */
export class Psi {
  readonly system = new PsiGroup('system', null);
  readonly groups: PsiGroup[] = [this.system];
  /** PF_MEMSTALL of the running task: nesting depth. */
  private depth = 0;
  private avgsWork = false;

  constructor(private readonly k: PsiHost) {}

  /** A group of the tasks `members` selects (a VM's VMM), accounted from now on. */
  addGroup(name: string, members: PsiMembers): PsiGroup {
    const g = new PsiGroup(name, members);
    g.avgLastUpdate = this.k.clock.now();
    g.avgNextUpdate = g.avgLastUpdate + PSI_PERIOD_NS;
    this.groups.push(g);
    return g;
  }

  /** The running task's time now: the clock plus what its quantum has used so far. */
  private now(): number {
    return this.k.clock.now() + Math.round(this.k.taskTime?.ns ?? 0);
  }

  /** psi_memstall_enter. */
  enter(): MemstallToken {
    return { start: this.now(), nested: this.depth++ > 0 };
  }

  /** psi_memstall_leave: the stall's time goes to every group the current task is in. */
  leave(tok: MemstallToken): void {
    this.depth--;
    if (tok.nested) return;
    const end = this.now();
    if (end <= tok.start) return;
    const t = this.k.current;
    const se = t?.se ?? null;
    const cpu = se?.cpu ?? t?.cpu ?? 0;
    const sched = this.k.sched;
    for (const g of this.groups) {
      if (g.members && !g.members.thread(t)) continue;
      const full = !sched || !se || !this.othersRunnable(g, cpu, se);
      g.record(cpu, tok.start, end, full);
    }
  }

  /**
   * A kernel thread's memory stall of `ns` (kswapd's balance_pgdat): its
   * work is computed before the scheduler runs it, so the stall is put at
   * [now, now + ns) on the CPU its work item was queued on, for the system
   * group (a kernel thread is in no VM's group). Without a scheduler it is
   * not counted (op-scripts: kswapd runs beside no task).
   */
  kthreadStall(se: SchedTask | null, ns: number): void {
    if (!se || ns <= 0) return;
    const start = this.k.clock.now();
    const full = !this.othersRunnable(this.system, se.cpu, se);
    this.system.record(se.cpu, start, start + Math.round(ns), full);
  }

  /** Run `f` in a memory stall (enter, f, leave). */
  memstall<T>(f: () => T): T {
    const tok = this.enter();
    try {
      return f();
    } finally {
      this.leave(tok);
    }
  }

  /** Whether another of the group's tasks is runnable on `cpu` besides `se` (then the stall is only SOME). */
  private othersRunnable(g: PsiGroup, cpu: number, se: SchedTask): boolean {
    const rq = this.k.sched!.rqs.get(cpu);
    if (!rq) return false;
    for (const t of rq.cfs.tasks as SchedTask[]) if (t !== se && (!g.members || g.members.task(t))) return true;
    return false;
  }

  /** Aggregate and, if due, update a group's averages (psi_show's first half, and psi_avgs_work's). */
  update(g: PsiGroup): void {
    const now = this.k.clock.now();
    g.collect(this.k.sched, now);
    if (now >= g.avgNextUpdate) g.updateAverages(now);
  }

  /** /proc/pressure/memory of a group (default: the system's). */
  show(g: PsiGroup = this.system): string {
    this.update(g);
    return g.show();
  }

  /**
   * psi_avgs_work on every group, every psi_period from now (scenario runs:
   * their workloads keep the groups non-idle, which is when Linux keeps
   * rescheduling it), so the averages follow the run period by period.
   */
  startAvgsWork(): void {
    if (this.avgsWork) return;
    this.avgsWork = true;
    const tick = (): void => {
      let next = Infinity;
      for (const g of this.groups) {
        this.update(g);
        next = Math.min(next, g.avgNextUpdate);
      }
      this.k.events.schedule(next, 'psi_avgs_work', tick);
    };
    this.k.events.schedule(Math.min(...this.groups.map((g) => g.avgNextUpdate)), 'psi_avgs_work', tick);
  }
}
