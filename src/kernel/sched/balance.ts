/**
 * Where tasks run: the placement half of kernel/sched/fair.c.
 *
 * - Fork (sched_balance_find_dst_cpu): a new task goes to the idlest CPU of
 *   its mask, fewest runnable tasks first, then the lowest number.
 * - Wakeup (select_task_rq_fair, select_idle_sibling): the previous CPU if
 *   it is idle, else an idle CPU of the same node (the LLC domain), else
 *   the previous CPU again: wakeups do not cross nodes.
 * - Newidle (sched_balance_newidle): a CPU that runs out of work pulls a
 *   waiting task from the busiest CPU of its node, then of other nodes.
 * - Nohz idle balance (nohz_balancer_kick): while a CPU has tasks waiting,
 *   CPUs that sit idle pull them, at most once per NUMA balance interval
 *   (the NUMA domain's min_interval: one ms per CPU it spans).
 *
 * - Periodic balance (sched_balance_rq from sched_balance_domains): each CPU,
 *   at its domains' intervals, evens out runnable tasks: within its node (the
 *   MC domain) when the busiest CPU has two or more tasks more than it, and
 *   across nodes (the NUMA domain) only while the busiest node has more
 *   runnable tasks than CPUs.
 *
 * Tasks that merely run (none waiting) are never moved across nodes to even
 * out the count: Linux allows that imbalance between NUMA nodes
 * (allow_numa_imbalance) and leaves placement by memory to NUMA balancing.
 */
import type { Rq, SchedTask, Scheduler } from './core.ts';

const load = (rq: Rq): number => rq.cfs.nr;

/** The idlest allowed CPU (fork and exec balancing). */
export function forkCpu(s: Scheduler, allowed: readonly number[]): number {
  let best = allowed[0]!;
  for (const c of allowed) if (load(s.rq(c)) < load(s.rq(best))) best = c;
  return best;
}

/** select_task_rq for a wakeup. */
export function selectTaskRq(s: Scheduler, t: SchedTask): number {
  const prev = t.allowed.includes(t.cpu) ? t.cpu : t.allowed[0]!;
  const prq = s.rq(prev);
  if (prq.idle || (prq.cfs.nr === 0 && prq.curr === null)) return prev;
  for (const c of t.allowed) if (c !== prev && s.rq(c).node === prq.node && s.rq(c).idle) return c;
  if (!t.allowed.includes(t.cpu)) return forkCpu(s, t.allowed);
  return prev;
}

/** The task to take for `dst` from the busiest other CPU with a waiting task it may run, nodes nearest first. */
function stealFor(s: Scheduler, dst: Rq): SchedTask | null {
  // Nothing allocated per call: a CPU going idle looks here every time (a migration's chunks, one task each).
  let best: SchedTask | null = null;
  let bestRq: Rq | null = null;
  for (let pass = 0; pass < 2; pass++) {
    const sameNode = pass === 0;
    for (const rq of s.rqs.values()) {
      // A queue of fewer than two keeps its task (Rq.waiting).
      if (rq === dst || (rq.node === dst.node) !== sameNode || load(rq) < 2) continue;
      const t = waitingFor(s, rq, dst);
      if (!t) continue;
      if (!bestRq || load(rq) > load(bestRq)) {
        best = t;
        bestRq = rq;
      }
    }
    if (best) return best;
  }
  return null;
}

/** sched_balance_newidle: `rq` has nothing to run; pull one waiting task. Returns whether it did. */
export function newidleBalance(s: Scheduler, rq: Rq): boolean {
  const t = stealFor(s, rq);
  if (!t) return false;
  s.migrate(t, rq.cpu);
  return true;
}

/** nohz idle balance: every idle CPU pulls a waiting task if one may run there. */
export function nohzIdleBalance(s: Scheduler, now: number): void {
  s.nextNohzBalance = now + s.cpus.length * 1_000_000;
  for (const rq of s.rqs.values()) if (rq.idle) newidleBalance(s, rq);
}

/** sd->busy_factor: a busy CPU balances its domains this many times less often than an idle one. */
export const BUSY_FACTOR = 16;

/**
 * get_sd_balance_interval: a domain's min_interval is one ms per CPU it
 * spans (sd_weight), times BUSY_FACTOR while the CPU is busy.
 */
function balanceInterval(span: number, busy: boolean): number {
  return span * 1_000_000 * (busy ? BUSY_FACTOR : 1);
}

/** A waiting task of `src` that may run on `dst` (the lowest id: deterministic), if any. */
function waitingFor(s: Scheduler, src: Rq, dst: Rq): SchedTask | null {
  let best: SchedTask | null = null;
  const now = s.clock.now();
  // src.waiting(), read in place: a queue of two or more, its tasks but the one on the CPU.
  if (src.cfs.nr < 2) return null;
  for (const e of src.cfs.tasks) {
    const t = e as SchedTask;
    if (t !== src.curr && t.allowed.includes(dst.cpu) && t.busyUntil <= now && (!best || t.id < best.id)) best = t;
  }
  return best;
}

/** Pull one task to `dst` from the busiest CPU among `from` that has two or more tasks more than `dst`. */
function pullFromBusiest(s: Scheduler, dst: Rq, from: Rq[]): boolean {
  const busiest = [...from].sort((a, b) => load(b) - load(a) || a.cpu - b.cpu);
  for (const src of busiest) {
    // calculate_imbalance: half the difference in runnable tasks, one task at a time.
    if (load(src) - load(dst) < 2) return false;
    const t = waitingFor(s, src, dst);
    if (t) {
      s.migrate(t, dst.cpu);
      return true;
    }
  }
  return false;
}

/** Periodic load balance of `rq`'s domains that are due (called as the CPU schedules). */
export function periodicBalance(s: Scheduler, rq: Rq, now: number): void {
  const busy = rq.cfs.nr > 0;
  if (now >= rq.nextBalanceMc) {
    const node = [...s.rqs.values()].filter((o) => o.node === rq.node && o !== rq);
    rq.nextBalanceMc = now + balanceInterval(node.length + 1, busy);
    if (pullFromBusiest(s, rq, node)) return;
  }
  if (now >= rq.nextBalanceNuma) {
    rq.nextBalanceNuma = now + balanceInterval(s.cpus.length, busy);
    // The NUMA domain: the busiest other node, if it is overloaded and has two or more tasks more than this one.
    const byNode = new Map<number, { nr: number; cpus: number; rqs: Rq[] }>();
    for (const o of s.rqs.values()) {
      const e = byNode.get(o.node) ?? { nr: 0, cpus: 0, rqs: [] };
      e.nr += load(o);
      e.cpus++;
      e.rqs.push(o);
      byNode.set(o.node, e);
    }
    const local = byNode.get(rq.node)!;
    let busiest: { nr: number; cpus: number; rqs: Rq[] } | null = null;
    for (const [n, e] of byNode) if (n !== rq.node && (!busiest || e.nr > busiest.nr)) busiest = e;
    if (busiest && busiest.nr > busiest.cpus && busiest.nr - local.nr >= 2) pullFromBusiest(s, rq, busiest.rqs);
  }
}
