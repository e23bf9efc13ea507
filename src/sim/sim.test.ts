import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { VirtualClock } from './clock.ts';
import { EventQueue, MAX_EVENTS_PER_INSTANT, POLL_EVENTS, SimulationStuckError } from './event_queue.ts';
import { SeededRandom } from './random.ts';
import { CostProfile, REQUIRED_COSTS } from './cost_profile.ts';
import { resolveHost } from './host.ts';

describe('event queue', () => {
  it('runs events in time order, ties in scheduling order, and skips cancelled ones', () => {
    const q = new EventQueue(new VirtualClock());
    const seen: string[] = [];
    q.schedule(20, 'b', () => seen.push('b@' + q.clock.now()));
    q.schedule(10, 'a1', () => seen.push('a1@' + q.clock.now()));
    q.schedule(10, 'a2', () => seen.push('a2@' + q.clock.now()));
    q.schedule(15, 'x', () => seen.push('x')).cancel();
    q.runUntil(100);
    expect(seen).toEqual(['a1@10', 'a2@10', 'b@20']);
    expect(q.clock.now()).toBe(100);
  });

  it('property: any schedule runs sorted by (time, sequence)', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 50 }), { maxLength: 100 }), (times) => {
        const q = new EventQueue(new VirtualClock());
        const order: [number, number][] = [];
        times.forEach((t, i) => q.schedule(t, `e${i}`, () => order.push([t, i])));
        q.runUntil(1000);
        const sorted = [...order].sort((a, b) => a[0] - b[0] || a[1] - b[1]);
        expect(order).toEqual(sorted);
      }),
    );
  });

  it('property: poll is called once every POLL_EVENTS events a runUntil runs, executed counts them all, and a poll changes nothing', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 100 * POLL_EVENTS }), { minLength: 1, maxLength: 4 }), (batches) => {
        const run = (poll: boolean): { order: number[]; polls: number[]; executed: number } => {
          const q = new EventQueue(new VirtualClock());
          const order: number[] = [];
          const polls: number[] = [];
          if (poll) q.poll = () => polls.push(q.executed);
          let t = 0;
          let id = 0;
          for (const n of batches) {
            for (let i = 0; i < n; i++) {
              const me = id++;
              q.schedule(t + ((i * 5) % 7), 'e', () => order.push(me));
            }
            q.runUntil((t += 10));
          }
          return { order, polls, executed: q.executed };
        };
        const total = batches.reduce((a, b) => a + b, 0);
        const polled = run(true);
        expect(polled.executed).toBe(total);
        // Each runUntil (one per batch here) polls after every POLL_EVENTS of its own events, with `executed` up to date.
        const expected: number[] = [];
        let base = 0;
        for (const n of batches) {
          for (let k = 1; k * POLL_EVENTS <= n; k++) expected.push(base + k * POLL_EVENTS);
          base += n;
        }
        expect(polled.polls).toEqual(expected);
        expect(polled.order).toEqual(run(false).order);
      }),
      { numRuns: 30 },
    );
  });
});

describe('virtual time in whole nanoseconds', () => {
  it('refuses to schedule an event at a fractional time, and rounds a fractional delay (a cost) to whole ns', () => {
    const q = new EventQueue(new VirtualClock());
    expect(() => q.schedule(10.5, 'half', () => {})).toThrow(/event "half" scheduled at 10.5 ns; virtual time is a whole number of ns/);
    expect(() => q.schedule(NaN, 'nan', () => {})).toThrow(RangeError);
    expect(q.after(2.4, 'a', () => {}).at).toBe(2);
    expect(q.after(2.5, 'b', () => {}).at).toBe(3);
    expect(() => q.clock.advanceTo(7.25)).toThrow(/not a whole number/);
  });

  it('property: after any fractional delays and runUntil bounds, the clock and every event time are whole ns', () => {
    fc.assert(
      fc.property(
        fc.array(fc.double({ min: 0, max: 1e6, noNaN: true }), { maxLength: 60 }),
        fc.double({ min: 0, max: 3e6, noNaN: true }),
        (delays, until) => {
          const q = new EventQueue(new VirtualClock());
          const seen: number[] = [];
          for (const d of delays) q.after(d, 'e', () => seen.push(q.clock.now()));
          q.runUntil(until);
          expect(Number.isInteger(q.clock.now())).toBe(true);
          for (const t of seen) expect(Number.isInteger(t)).toBe(true);
        },
      ),
    );
  });

  it('stops a model that keeps rescheduling itself at one instant with a clear internal error, not a hang', () => {
    const q = new EventQueue(new VirtualClock(), 5000);
    q.schedule(5, 'tick', () => {});
    const loop = (): void => {
      q.schedule(q.clock.now(), 'migration-iterate', loop);
    };
    q.schedule(10, 'migration-iterate', loop);
    let err: unknown;
    try {
      q.runUntil(100);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SimulationStuckError);
    expect((err as Error).message).toMatch(
      /simulated time stopped advancing at 10 ns: more than 5000 events ran at that instant \(the last 1000: "migration-iterate" 1000\)/,
    );
    expect(q.clock.now()).toBe(10);
    // The shipped limit is far above any real burst (every thread of a scenario starting at once).
    expect(new EventQueue(new VirtualClock()).maxEventsPerInstant).toBe(MAX_EVENTS_PER_INSTANT);
    expect(MAX_EVENTS_PER_INSTANT).toBeGreaterThanOrEqual(1_000_000);
  });

  it('lets a burst up to the limit through at one instant, and counts afresh once time advances', () => {
    const q = new EventQueue(new VirtualClock(), 5000);
    let n = 0;
    for (let t = 0; t < 3; t++) for (let i = 0; i < 5000; i++) q.schedule(t, 'burst', () => n++);
    q.runUntil(10);
    expect(n).toBe(15000);
  });
});

describe('seeded random streams', () => {
  it('gives the same numbers for the same seed and name, independent of other streams', () => {
    const a = new SeededRandom(42);
    const b = new SeededRandom(42);
    b.stream('other').int(0, 100); // another consumer drawing first changes nothing
    const xs = Array.from({ length: 5 }, () => a.stream('w').int(0, 1000));
    const ys = Array.from({ length: 5 }, () => b.stream('w').int(0, 1000));
    expect(xs).toEqual(ys);
    expect(new SeededRandom(43).stream('w').int(0, 1 << 30)).not.toBe(new SeededRandom(42).stream('w').int(0, 1 << 30));
  });
});

describe('cost profile and hosts', () => {
  it('ships a measured default profile with every cost the model reads', () => {
    const p = CostProfile.default();
    for (const c of REQUIRED_COSTS) expect(p.ns(c)).toBeGreaterThan(0);
    expect(p.data.machine.kernel).toMatch(/^6\./);
    for (const c of Object.values(p.data.costs)) expect(c.method.length).toBeGreaterThan(10);
  });

  it('ships the default two-node host and this machine', () => {
    const d = resolveHost('default');
    expect(d.nodes.map((n) => n.memory)).toEqual([8 * 2 ** 30, 8 * 2 ** 30]);
    expect(d.distances).toEqual([
      [10, 21],
      [21, 10],
    ]);
    expect(d.cpuNode.get(5)).toBe(1);
    expect(resolveHost('this-machine').nodes).toHaveLength(1);
  });
});
