import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { VirtualClock } from '../../sim/clock.ts';
import { EventQueue } from '../../sim/event_queue.ts';
import { Scheduler, SCHED_QUANTUM_NS, type RunOutcome, type SchedTask } from './core.ts';
import { baseSliceNs, niceToWeight } from './fair.ts';

/** Two nodes of `per` CPUs each. */
function machine(per = 4): { s: Scheduler; clock: VirtualClock; events: EventQueue } {
  const clock = new VirtualClock();
  const events = new EventQueue(clock);
  const cpuNode = new Map<number, number>();
  for (let c = 0; c < 2 * per; c++) cpuNode.set(c, c < per ? 0 : 1);
  return { s: new Scheduler(events, clock, { cpuNode }), clock, events };
}

interface Ran {
  task: string;
  cpu: number;
  from: number;
  to: number;
}

/** A task that computes forever (or for `total` ns), recording where and when it ran. */
function spinner(log: Ran[], name: string, total = Infinity): { run(now: number, budget: number, cpu: number): RunOutcome } {
  let left = total;
  return {
    run(now, budget, cpu) {
      const used = Math.min(budget, left);
      left -= used;
      log.push({ task: name, cpu, from: now, to: now + used });
      return { used, next: left > 0 ? 'run' : 'exit' };
    },
  };
}

const cpuTime = (log: Ran[], task: string): number => log.filter((r) => r.task === task).reduce((a, r) => a + r.to - r.from, 0);

describe('the scheduler (EEVDF, one queue per CPU)', () => {
  it('gives two tasks pinned to one CPU half of it each, and a task alone its whole CPU', () => {
    const { s, events } = machine();
    const log: Ran[] = [];
    s.spawn('a', spinner(log, 'a'), { allowed: [0] });
    s.spawn('b', spinner(log, 'b'), { allowed: [0] });
    s.spawn('c', spinner(log, 'c'), { allowed: [1] });
    events.runUntil(100_000_000);
    const a = cpuTime(log, 'a');
    const b = cpuTime(log, 'b');
    expect(a + b).toBeGreaterThan(99_000_000);
    expect(Math.abs(a - b)).toBeLessThanOrEqual(2 * baseSliceNs(8));
    expect(cpuTime(log, 'c')).toBeGreaterThan(99_000_000);
  });

  it('shares a CPU by weight: nice 0 against nice 19 is 1024 : 15', () => {
    const { s, events } = machine();
    const log: Ran[] = [];
    s.spawn('n0', spinner(log, 'n0'), { allowed: [2] });
    s.spawn('n19', spinner(log, 'n19'), { allowed: [2], nice: 19 });
    events.runUntil(2_000_000_000);
    const share = cpuTime(log, 'n19') / (cpuTime(log, 'n0') + cpuTime(log, 'n19'));
    expect(share).toBeCloseTo(niceToWeight(19) / (niceToWeight(0) + niceToWeight(19)), 2);
  });

  it('runs kernel work to completion on a shared CPU, later than on an idle one', () => {
    const { s, events } = machine();
    const log: Ran[] = [];
    let alone = 0;
    let shared = 0;
    s.work('kwork-idle', 1_000_000, { allowed: [3], onDone: (t) => (alone = t) });
    s.spawn('hog', spinner(log, 'hog'), { allowed: [4] });
    s.work('kwork-busy', 1_000_000, { allowed: [4], onDone: (t) => (shared = t) });
    events.runUntil(50_000_000);
    expect(alone).toBe(1_000_000);
    expect(shared).toBeGreaterThan(1_500_000);
    expect(shared).toBeLessThan(1_000_000 + 2 * baseSliceNs(8) + SCHED_QUANTUM_NS);
  });

  it('wakes a sleeping task at its time, on a CPU of its mask', () => {
    const { s, events } = machine();
    const runs: number[] = [];
    let n = 0;
    s.spawn(
      'sleeper',
      {
        run(now, budget) {
          runs.push(now);
          return n++ < 3 ? { used: Math.min(budget, 10_000), next: 'sleep', until: now + 1_000_000 } : { used: 0, next: 'exit' };
        },
      },
      { allowed: [5, 6] },
    );
    events.runUntil(10_000_000);
    expect(runs).toEqual([0, 1_000_000, 2_000_000, 3_000_000]);
  });

  it('spreads tasks started on one node over idle CPUs of both (newidle and nohz idle balance)', () => {
    const { s, events } = machine();
    const log: Ran[] = [];
    const tasks: SchedTask[] = [];
    for (let i = 0; i < 8; i++) tasks.push(s.spawn(`t${i}`, spinner(log, `t${i}`), { cpu: i % 4 }));
    events.runUntil(200_000_000);
    expect(new Set(tasks.map((t) => t.cpu)).size).toBe(8);
    for (const t of tasks) expect(cpuTime(log, t.name)).toBeGreaterThan(150_000_000);
  });

  it('evens out busy CPUs of a node (periodic balance): three tasks on one CPU and one on its neighbour end two and two', () => {
    const { s, events } = machine();
    const log: Ran[] = [];
    const tasks: SchedTask[] = [];
    // Sixteen tasks on eight CPUs, no CPU ever idle: only the periodic balance can move them.
    const start = [0, 0, 0, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7];
    start.forEach((cpu, i) => tasks.push(s.spawn(`t${i}`, spinner(log, `t${i}`), { cpu })));
    events.runUntil(300_000_000);
    expect([...s.rqs.values()].map((rq) => rq.cfs.nr)).toEqual([2, 2, 2, 2, 2, 2, 2, 2]);
    // Once even, each task gets half a CPU: over the last 100 ms every task ran 50 ms, within two slices.
    for (const t of tasks) {
      const late = log.filter((r) => r.task === t.name && r.from >= 200_000_000).reduce((a, r) => a + r.to - r.from, 0);
      expect(Math.abs(late - 50_000_000)).toBeLessThanOrEqual(2 * baseSliceNs(8));
    }
    // No move across nodes: both nodes had as many tasks as each other all along.
    for (const t of tasks) expect(s.rq(t.cpu).node).toBe(start[tasks.indexOf(t)]! < 4 ? 0 : 1);
  });

  it('moves a task when sched_setaffinity takes its CPU away', () => {
    const { s, events, clock } = machine();
    const log: Ran[] = [];
    const t = s.spawn('m', spinner(log, 'm'), { allowed: [0] });
    events.runUntil(1_000_000);
    s.setAffinity(t, [7]);
    events.runUntil(3_000_000);
    expect(log.filter((r) => r.from > 1_000_000 + SCHED_QUANTUM_NS).every((r) => r.cpu === 7)).toBe(true);
    expect(clock.now()).toBe(3_000_000);
  });

  it('property: a CPU runs one task at a time, a task one CPU at a time, always within its mask, and busy time never exceeds elapsed time', () => {
    const taskArb = fc.record({
      mask: fc.uniqueArray(fc.integer({ min: 0, max: 7 }), { minLength: 1, maxLength: 8 }),
      nice: fc.integer({ min: -5, max: 19 }),
      total: fc.option(fc.integer({ min: 1, max: 20_000_000 }), { nil: undefined }),
      sleepEvery: fc.option(fc.integer({ min: 1, max: 5 }), { nil: undefined }),
      start: fc.integer({ min: 0, max: 5_000_000 }),
    });
    fc.assert(
      fc.property(fc.array(taskArb, { minLength: 1, maxLength: 14 }), (specs) => {
        const { s, events } = machine();
        const log: Ran[] = [];
        specs.forEach((sp, i) => {
          let left = sp.total ?? Infinity;
          let n = 0;
          s.spawn(
            `t${i}`,
            {
              run(now, budget, cpu) {
                expect(sp.mask).toContain(cpu);
                const used = Math.min(budget, left);
                left -= used;
                log.push({ task: `t${i}`, cpu, from: now, to: now + used });
                if (left <= 0) return { used, next: 'exit' };
                if (sp.sleepEvery && ++n % sp.sleepEvery === 0) return { used, next: 'sleep', until: now + used + 300_000 };
                return { used, next: 'run' };
              },
            },
            { allowed: sp.mask, nice: sp.nice, start: sp.start },
          );
        });
        const end = 40_000_000;
        events.runUntil(end);
        const overlap = (key: (r: Ran) => string | number): boolean => {
          const by = new Map<string | number, Ran[]>();
          for (const r of log) if (r.to > r.from) (by.get(key(r)) ?? by.set(key(r), []).get(key(r))!).push(r);
          for (const rs of by.values()) {
            rs.sort((x, y) => x.from - y.from);
            for (let i = 1; i < rs.length; i++) if (rs[i]!.from < rs[i - 1]!.to) return true;
          }
          return false;
        };
        expect(overlap((r) => r.cpu)).toBe(false);
        expect(overlap((r) => r.task)).toBe(false);
        for (const [, rq] of s.rqs) expect(rq.busyNs).toBeLessThanOrEqual(end + SCHED_QUANTUM_NS);
      }),
      {
        numRuns: 60,
        // Found on a random seed: CPU 4 was kicked while it decided, and ran two tasks from the same instant.
        examples: [
          [
            [
              { mask: [0], nice: 0, total: undefined, sleepEvery: undefined, start: 0 },
              { mask: [0], nice: 0, total: undefined, sleepEvery: undefined, start: 0 },
              { mask: [1], nice: 0, total: undefined, sleepEvery: undefined, start: 1 },
              { mask: [4], nice: 0, total: undefined, sleepEvery: undefined, start: 1 },
              { mask: [1, 0], nice: 0, total: undefined, sleepEvery: undefined, start: 1 },
              { mask: [1, 4], nice: 0, total: undefined, sleepEvery: 1, start: 1 },
            ],
          ],
        ],
      },
    );
  });
});
