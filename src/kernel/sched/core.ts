/**
 * CPUs shared by tasks (kernel/sched/core.c): one run queue per CPU, tasks
 * that run, sleep and wake, affinity masks, and the dispatch loop that gives
 * each CPU to one task at a time in quanta of virtual time. Which task runs
 * is the fair class's choice (fair.ts, EEVDF); where a task runs is
 * select_task_rq and the load balancer (balance.ts).
 *
 * A task is anything that needs CPU time: a workload thread, a vCPU, a
 * kernel thread (khugepaged, kcompactd), the VMM's migration thread, a tool
 * making a syscall. Its client does the work: asked to run for at most a
 * budget of CPU time, it does what fits (its effects happen at the start of
 * the quantum, as the workload engine's steps always have) and says how
 * much CPU time it used and whether it is still runnable.
 *
 * Only a scenario run has a scheduler (Kernel.sched); op-scripts run one op
 * at a time on the clock and need none.
 */
import type { EventHandle, EventQueue } from '../../sim/event_queue.ts';
import type { VirtualClock } from '../../sim/clock.ts';
import { CfsRq, TICK_NSEC, baseSliceNs, niceToWeight, type FairEntity } from './fair.ts';
import { forkCpu, newidleBalance, nohzIdleBalance, periodicBalance, selectTaskRq } from './balance.ts';

/** The longest a task runs before its CPU decides again: the workload engine's step. */
export const SCHED_QUANTUM_NS = 100_000;

/** What a task's quantum ended with. */
export interface RunOutcome {
  /** CPU time used (ns, >= 0). */
  used: number;
  /** run: still runnable; sleep: off the CPU until `until` or until woken; exit: done. */
  next: 'run' | 'sleep' | 'exit';
  /** For sleep: the absolute time it wakes by itself (undefined: only wake() wakes it). */
  until?: number;
}

export interface TaskClient {
  /** Run on `cpu` from `now` for at most `budget` ns of CPU time. */
  run(now: number, budget: number, cpu: number): RunOutcome;
}

export type TaskState = 'new' | 'queued' | 'sleeping' | 'dead';

/** The scheduler's part of a task (task_struct: its sched_entity, cpus_mask, schedstats). */
export class SchedTask implements FairEntity {
  vruntime = 0;
  deadline = 0;
  vlag = 0;
  state: TaskState = 'new';
  /** Runnable tasks' CPU; a sleeping task's last CPU (task_cpu). */
  cpu: number;
  /** The end of the quantum it last ran: it cannot run anywhere before then. */
  busyUntil = 0;
  /** When it last became runnable and waiting (for waitNs). */
  queuedAt = 0;
  /** se.sum_exec_runtime. */
  sumExecNs = 0;
  /** Time runnable but not running (schedstat run_delay). */
  waitNs = 0;
  nrMigrations = 0;
  nrSwitches = 0;
  /** A CPU it is to move to when its running quantum ends (migrate_task_to on a running task). */
  moveTo: number | undefined;
  wakeTimer: EventHandle | null = null;

  constructor(
    readonly id: number,
    readonly name: string,
    public client: TaskClient,
    /** cpus_mask, sorted. */
    public allowed: readonly number[],
    public weight: number,
    cpu: number,
  ) {
    this.cpu = cpu;
  }
}

/**
 * Scheduler.work's client: runs until its `total` ns of CPU time are used,
 * then exits, and `onDone` hears when it finished. A class, not a closure
 * per work item (a migration makes one per chunk).
 */
class WorkClient implements TaskClient {
  private left: number;

  constructor(
    private readonly events: EventQueue,
    private readonly name: string,
    private readonly total: number,
    private readonly onRun: ((now: number, done: number, used: number) => void) | undefined,
    private readonly onDone: ((at: number) => void) | undefined,
  ) {
    this.left = total;
  }

  run(now: number, budget: number): RunOutcome {
    const used = Math.min(this.left, budget);
    this.onRun?.(now, this.total - this.left, used);
    this.left -= used;
    // The outcome is read at once by the scheduler: one object per item, refilled.
    const out = this.out;
    out.used = used;
    if (this.left > 0) {
      out.next = 'run';
      return out;
    }
    const done = this.onDone;
    if (done) this.events.schedule(now + used, `${this.name} done`, () => done(now + used));
    out.next = 'exit';
    return out;
  }

  private readonly out: RunOutcome = { used: 0, next: 'run' };
}

/** The client of a task that exited (never run again). */
const EXITED: TaskClient = {
  run(): RunOutcome {
    throw new Error('sched: a dead task ran');
  },
};

/** A CPU's run queue (struct rq). */
export class Rq {
  readonly cfs: CfsRq;
  /** The task on the CPU (its quantum may still be running until `dispatch`). */
  curr: SchedTask | null = null;
  /** The CPU's next decision, while it is busy. */
  dispatch: EventHandle | null = null;
  /** CPU time used since the curr task last got the CPU (its slice). */
  sliceUsed = 0;
  /** Once the slice is used up: the tick that reschedules (scheduler_tick -> update_curr -> resched_curr). */
  reschedAt = Infinity;
  /** Total busy time, counting the running quantum whole (it ends at quantumEnd). */
  busyNs = 0;
  quantumEnd = 0;
  /** When this CPU next balances its node's CPUs (MC domain) and the nodes (NUMA domain). */
  nextBalanceMc = 0;
  nextBalanceNuma = 0;
  /** The dispatch event's name and callback (set by the Scheduler; made once, not per quantum). */
  readonly dispatchName: string;
  dispatchRun: () => void = () => {};

  constructor(
    readonly cpu: number,
    readonly node: number,
    slice: number,
  ) {
    this.cfs = new CfsRq(slice);
    this.dispatchName = `cpu${cpu}`;
  }

  get idle(): boolean {
    return this.dispatch === null && this.curr === null;
  }

  /** Runnable tasks waiting for this CPU: candidates for another CPU to pull (it keeps one to run). */
  waiting(): SchedTask[] {
    if (this.cfs.nr < 2) return [];
    return (this.cfs.tasks as SchedTask[]).filter((t) => t !== this.curr);
  }
}

export interface SchedTopology {
  /** Every CPU id, and its node. */
  cpuNode: ReadonlyMap<number, number>;
}

export class Scheduler {
  readonly rqs = new Map<number, Rq>();
  readonly cpus: readonly number[];
  readonly slice: number;
  readonly tasks: SchedTask[] = [];
  private nextId = 1;
  /** When idle CPUs next look for waiting tasks on busy ones (nohz idle balance). */
  nextNohzBalance = 0;

  constructor(
    readonly events: EventQueue,
    readonly clock: VirtualClock,
    topo: SchedTopology,
  ) {
    this.cpus = [...topo.cpuNode.keys()].sort((a, b) => a - b);
    this.slice = baseSliceNs(this.cpus.length);
    for (const c of this.cpus) {
      const rq = new Rq(c, topo.cpuNode.get(c)!, this.slice);
      rq.dispatchRun = () => this.schedule(rq);
      this.rqs.set(c, rq);
    }
  }

  rq(cpu: number): Rq {
    const rq = this.rqs.get(cpu);
    if (!rq) throw new RangeError(`no CPU ${cpu}`);
    return rq;
  }

  /** Normalise an affinity mask: existing CPUs, sorted, at least one. */
  mask(cpus: readonly number[] | null | undefined): readonly number[] {
    if (!cpus) return (this.allCpus ??= [...this.cpus]);
    // The last mask asked for again (a VMM thread's work items, one per chunk of a migration: the same array): the
    // same answer, shared (a task's mask is only ever replaced, never changed in place).
    const memo = this.maskMemo;
    if (memo && memo.of === cpus && memo.copy.length === cpus.length && memo.copy.every((c, i) => c === cpus[i])) return memo.mask;
    const m = [...new Set(cpus)].filter((c) => this.rqs.has(c)).sort((a, b) => a - b);
    if (!m.length) throw new RangeError(`no existing CPU in the mask ${cpus.join(',')}`);
    this.maskMemo = { of: cpus, copy: [...cpus], mask: m };
    return m;
  }

  /** mask(null), made once. */
  private allCpus: readonly number[] | null = null;
  /** The last mask() normalised: the array asked with, its contents then, and the answer. */
  private maskMemo: { of: readonly number[]; copy: number[]; mask: readonly number[] } | null = null;

  /**
   * A new task (clone): on `cpu` if given, else on the idlest CPU of its
   * mask (fork balancing); runnable at `start` (default now).
   */
  spawn(
    name: string,
    client: TaskClient,
    o: { allowed?: readonly number[] | null; nice?: number; cpu?: number; start?: number } = {},
  ): SchedTask {
    const allowed = this.mask(o.allowed);
    const cpu = o.cpu !== undefined && allowed.includes(o.cpu) ? o.cpu : forkCpu(this, allowed);
    const t = new SchedTask(this.nextId++, name, client, allowed, niceToWeight(o.nice ?? 0), cpu);
    this.tasks.push(t);
    this.wake(t, o.start ?? this.clock.now());
    return t;
  }

  /**
   * Kernel or VMM work of `ns` CPU time (a khugepaged pass, a tool's
   * migrate_pages, a migration thread's step): a task that runs until the
   * work is done, then exits and calls `onDone` with the time it finished.
   * `onRun` hears each quantum as it is given: the work's CPU time from
   * `done` to `done + used` runs from `now` to `now + used` (what was
   * decided inside the work in its own time can be placed in real time).
   */
  work(
    name: string,
    ns: number,
    o: {
      allowed?: readonly number[] | null;
      nice?: number;
      cpu?: number;
      onDone?: (at: number) => void;
      onRun?: (now: number, done: number, used: number) => void;
    } = {},
  ): SchedTask {
    return this.spawn(name, new WorkClient(this.events, name, Math.max(0, Math.round(ns)), o.onRun, o.onDone), o);
  }

  /** try_to_wake_up: a sleeping (or new) task becomes runnable at `at`. */
  wake(t: SchedTask, at = this.clock.now()): void {
    if (t.state === 'dead' || t.state === 'queued') return;
    t.wakeTimer?.cancel();
    t.wakeTimer = null;
    const when = Math.max(at, t.busyUntil, this.clock.now());
    if (when > this.clock.now()) {
      t.wakeTimer = this.events.schedule(when, `wake ${t.name}`, () => {
        t.wakeTimer = null;
        this.enqueue(t, selectTaskRq(this, t));
      });
      return;
    }
    this.enqueue(t, selectTaskRq(this, t));
  }

  /** sched_setaffinity: a task not allowed on its CPU any more moves (a runnable one at once). */
  setAffinity(t: SchedTask, cpus: readonly number[]): void {
    t.allowed = this.mask(cpus);
    if (t.allowed.includes(t.cpu)) return;
    const rq = this.rq(t.cpu);
    if (t.state === 'queued' && rq.curr !== t) this.migrate(t, selectTaskRq(this, t));
    else if (t.state !== 'queued') t.cpu = t.allowed[0]!;
    // A running task moves when its quantum ends (dispatch sees it is not allowed there).
  }

  /**
   * migrate_task_to: put the task on `cpu` (which its mask allows): a
   * waiting task moves now, a running one when its quantum ends, a sleeping
   * one wakes there.
   */
  moveTo(t: SchedTask, cpu: number): void {
    if (!t.allowed.includes(cpu) || t.state === 'dead') return;
    if (t.state !== 'queued') t.cpu = cpu;
    else if (this.rq(t.cpu).curr === t) t.moveTo = cpu;
    else this.migrate(t, cpu);
  }

  /** The task stops for good (exit, or a thread the run stops on a signal). */
  kill(t: SchedTask): void {
    t.wakeTimer?.cancel();
    if (t.state === 'queued') {
      const rq = this.rq(t.cpu);
      rq.cfs.dequeue(t);
      if (rq.curr === t) rq.curr = null;
    }
    t.state = 'dead';
  }

  /** Put a runnable task on a CPU's queue; an idle CPU starts at once. */
  enqueue(t: SchedTask, cpu: number): void {
    if (t.cpu !== cpu && t.state !== 'new') t.nrMigrations++;
    const isNew = t.state === 'new';
    t.cpu = cpu;
    t.state = 'queued';
    t.queuedAt = this.clock.now();
    const rq = this.rq(cpu);
    rq.cfs.enqueue(t, isNew);
    if (rq.idle) this.kick(rq, this.clock.now());
  }

  /** Move a queued task that is not running to another CPU (migrate_task_rq / detach+attach). */
  migrate(t: SchedTask, cpu: number): void {
    const src = this.rq(t.cpu);
    if (t.state !== 'queued' || src.curr === t || cpu === t.cpu) return;
    src.cfs.dequeue(t);
    t.state = 'sleeping';
    this.enqueue(t, cpu);
  }

  /** Schedule the CPU's next decision at `at`. */
  private kick(rq: Rq, at: number): void {
    if (rq.dispatch) return;
    rq.dispatch = this.events.schedule(at, rq.dispatchName, rq.dispatchRun);
  }

  /** __schedule on one CPU: pick a task and run it for one quantum. */
  private schedule(rq: Rq): void {
    rq.dispatch = null;
    const now = this.clock.now();
    let prev = rq.curr;
    // A running task moved elsewhere (migrate_task_to), or no longer allowed here (sched_setaffinity), goes now that it is off the CPU.
    if (prev && prev.state === 'queued' && (prev.moveTo !== undefined || !prev.allowed.includes(rq.cpu))) {
      const to = prev.moveTo !== undefined && prev.allowed.includes(prev.moveTo) ? prev.moveTo : selectTaskRq(this, prev);
      prev.moveTo = undefined;
      rq.curr = null;
      this.migrate(prev, to);
      prev = null;
    }
    if (now >= this.nextNohzBalance && rq.cfs.nr > 1) nohzIdleBalance(this, now);
    if (now >= rq.nextBalanceMc || now >= rq.nextBalanceNuma) periodicBalance(this, rq, now);
    // The running task keeps the CPU until the tick after its slice is used up; then EEVDF picks (maybe it again).
    const keep = prev !== null && prev.state === 'queued' && now < rq.reschedAt;
    const next = keep ? prev : (rq.cfs.pick() as SchedTask | null);
    if (!next) {
      // Nothing to run: pull a waiting task (queueing it here kicks this CPU again), or stay idle until one is queued.
      rq.curr = null;
      newidleBalance(this, rq);
      return;
    }
    if (next.busyUntil > now) {
      // Its last quantum (on another CPU) is not over: decide again then.
      this.kick(rq, next.busyUntil);
      return;
    }
    if (!keep) {
      rq.sliceUsed = 0;
      rq.reschedAt = Infinity;
    }
    if (next !== prev) next.nrSwitches++;
    next.waitNs += Math.max(0, now - next.queuedAt);
    rq.curr = next;
    const budget = Math.max(1, Math.min(SCHED_QUANTUM_NS, rq.sliceUsed < this.slice ? this.slice - rq.sliceUsed : rq.reschedAt - now));
    const out = next.client.run(now, budget, rq.cpu);
    let used = Math.max(0, Math.round(out.used));
    if (out.next === 'run' && used === 0) used = 1; // a runnable task always moves time forward
    next.sumExecNs += used;
    rq.busyNs += used;
    rq.quantumEnd = now + used;
    rq.sliceUsed += used;
    next.busyUntil = now + used;
    // Slice used up (its deadline passed): the next tick reschedules.
    if (rq.cfs.account(next, used) || rq.sliceUsed >= this.slice) {
      rq.sliceUsed = Math.max(rq.sliceUsed, this.slice);
      if (rq.reschedAt === Infinity) rq.reschedAt = Math.ceil((now + used) / TICK_NSEC) * TICK_NSEC;
    }
    if (out.next === 'run') {
      next.queuedAt = now + used;
    } else {
      rq.cfs.dequeue(next);
      rq.curr = null;
      if (out.next === 'exit') {
        next.state = 'dead';
        // The scheduler keeps its dead tasks (psi reads every task made): what their client held goes now.
        next.client = EXITED;
      } else {
        next.state = 'sleeping';
        if (out.until !== undefined) this.wake(next, out.until);
      }
    }
    // A kick while this CPU was deciding (a balance, or a wakeup, queuing a task here) must not make it decide again
    // before this quantum ends: two tasks would run on it at once.
    const early = rq.dispatch as EventHandle | null; // set by a call above, which the type checker cannot see
    if (early && early.at < now + used) {
      early.cancel();
      rq.dispatch = null;
    }
    // Decide again when the quantum ends (an empty queue then looks for work to pull: newidle balance).
    this.kick(rq, now + used);
  }

  /** CPU time run on all CPUs up to now (the part of a running quantum still to come left out). */
  busyNsNow(): number {
    const now = this.clock.now();
    let ns = 0;
    for (const rq of this.rqs.values()) ns += rq.busyNs - Math.max(0, rq.quantumEnd - now);
    return ns;
  }

  /** Busy fraction of each CPU over `ns` of elapsed time. */
  utilisation(ns: number): Record<number, number> {
    const out: Record<number, number> = {};
    for (const [c, rq] of this.rqs) out[c] = ns > 0 ? rq.busyNs / ns : 0;
    return out;
  }
}
