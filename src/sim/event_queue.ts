import { Heap } from 'heap-js';
import type { Nanoseconds, VirtualClock } from './clock.ts';

export interface EventHandle {
  cancel(): void;
  readonly at: Nanoseconds;
}

/** A scheduled callback, and its own handle. Ties at the same instant run in scheduling order. */
class QueuedEvent implements EventHandle {
  cancelled = false;
  constructor(
    readonly at: Nanoseconds,
    readonly seq: number,
    readonly name: string,
    readonly run: () => void,
  ) {}
  cancel(): void {
    this.cancelled = true;
  }
}

/**
 * Events that may run at one virtual instant before the queue decides the
 * simulation is stuck there (a model scheduling itself again and again
 * without time advancing). Far above any legitimate burst: every thread of
 * a scenario starting at once is thousands.
 */
export const MAX_EVENTS_PER_INSTANT = 1_000_000;

/** How often (in events run) EventQueue.poll is called: a power of two; an event can simulate thousands of accesses, so a small one. */
export const POLL_EVENTS = 64;

/**
 * A model kept scheduling events at one virtual instant: a memtwin bug,
 * reported instead of hanging.
 */
export class SimulationStuckError extends Error {
  override readonly name = 'SimulationStuckError';
}

/**
 * Discrete-event queue over a VirtualClock. Ordering is (time, sequence
 * number), so two runs that schedule the same events in the same order
 * execute them in the same order: no dependence on heap internals.
 *
 * Virtual time is a whole number of nanoseconds: `schedule` refuses any
 * other time (a caller computing times from fractional costs must round
 * them where it charges them, so what it believes and when its event runs
 * agree); `after` takes a delay that is a cost and rounds it itself.
 */
export class EventQueue {
  private readonly heap = new Heap<QueuedEvent>((a, b) => a.at - b.at || a.seq - b.seq);
  private seq = 0;
  /** The instant the last event ran at, and how many ran there (the stuck-loop guard). */
  private instant = -1;
  private atInstant = 0;
  private readonly namesAtInstant = new Map<string, number>();
  /** Events run so far, by every runUntil (up to date when poll is called, and when runUntil returns). */
  executed = 0;
  /**
   * Called every POLL_EVENTS events of a runUntil that started with it set
   * (a run's progress report: it reads the clock and `executed`, and must
   * not schedule anything, so that a run with a poll is the run without one).
   */
  poll: (() => void) | undefined;

  /** `maxEventsPerInstant`: the stuck-loop guard's limit (tests lower it). */
  constructor(
    readonly clock: VirtualClock,
    readonly maxEventsPerInstant = MAX_EVENTS_PER_INSTANT,
  ) {}

  schedule(at: Nanoseconds, name: string, run: () => void): EventHandle {
    if (!Number.isSafeInteger(at))
      throw new RangeError(`memtwin internal error: event "${name}" scheduled at ${at} ns; virtual time is a whole number of ns`);
    if (at < this.clock.now()) at = this.clock.now();
    const ev = new QueuedEvent(at, this.seq++, name, run);
    this.heap.push(ev);
    return ev;
  }

  /** Run `run` after `delay` ns (a cost, possibly fractional: rounded to whole ns here). */
  after(delay: number, name: string, run: () => void): EventHandle {
    return this.schedule(this.clock.now() + Math.round(delay), name, run);
  }

  get size(): number {
    return this.heap.length;
  }

  peekTime(): Nanoseconds | undefined {
    this.dropCancelled();
    return this.heap.peek()?.at;
  }

  /** Run every event due at or before `until`, advancing the clock to each (and then to `until`, in whole ns). */
  runUntil(until: Nanoseconds): number {
    let n = 0;
    // Counted in the local n, added to `executed` in steps of POLL_EVENTS and at the end: nothing per event
    // beyond n++ and, only with a poll, one test (a nested runUntil adds its own count the same way).
    const poll = this.poll;
    for (;;) {
      this.dropCancelled();
      const ev = this.heap.peek();
      if (!ev || ev.at > until) break;
      this.heap.pop();
      this.clock.advanceTo(Math.max(ev.at, this.clock.now()));
      this.count(ev.name);
      ev.run();
      n++;
      if (poll !== undefined && (n & (POLL_EVENTS - 1)) === 0) {
        this.executed += POLL_EVENTS;
        poll();
      }
    }
    this.executed += poll !== undefined ? n & (POLL_EVENTS - 1) : n;
    if (this.clock.now() < Math.floor(until)) this.clock.advanceTo(Math.floor(until));
    return n;
  }

  /** The stuck-loop guard: count events at the current instant; too many means time no longer advances. */
  private count(name: string): void {
    const now = this.clock.now();
    if (now !== this.instant) {
      this.instant = now;
      this.atInstant = 0;
      if (this.namesAtInstant.size) this.namesAtInstant.clear();
    }
    this.atInstant++;
    const limit = this.maxEventsPerInstant;
    const window = Math.min(1000, limit);
    // Names are counted only near the limit, for the report, so the common path stays cheap.
    if (this.atInstant > limit + 1 - window) this.namesAtInstant.set(name, (this.namesAtInstant.get(name) ?? 0) + 1);
    if (this.atInstant <= limit) return;
    const top = [...this.namesAtInstant]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 3)
      .map(([n, c]) => `"${n}" ${c}`)
      .join(', ');
    throw new SimulationStuckError(
      `memtwin internal error: simulated time stopped advancing at ${now} ns: more than ${limit} events ran at that ` +
        `instant (the last ${window}: ${top}); a model keeps rescheduling itself without time passing. Please report it with the scenario.`,
    );
  }

  private dropCancelled(): void {
    while (this.heap.length > 0 && this.heap.peek()!.cancelled) this.heap.pop();
  }
}
