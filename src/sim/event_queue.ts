import { Heap } from 'heap-js';
import type { Nanoseconds, VirtualClock } from './clock.ts';

/** A scheduled callback. Ties at the same instant run in scheduling order. */
interface QueuedEvent {
  at: Nanoseconds;
  seq: number;
  name: string;
  run: () => void;
  cancelled: boolean;
}

export interface EventHandle {
  cancel(): void;
  readonly at: Nanoseconds;
}

/**
 * Discrete-event queue over a VirtualClock. Ordering is (time, sequence
 * number), so two runs that schedule the same events in the same order
 * execute them in the same order: no dependence on heap internals.
 */
export class EventQueue {
  private readonly heap = new Heap<QueuedEvent>((a, b) => a.at - b.at || a.seq - b.seq);
  private seq = 0;

  constructor(readonly clock: VirtualClock) {}

  schedule(at: Nanoseconds, name: string, run: () => void): EventHandle {
    if (at < this.clock.now()) at = this.clock.now();
    const ev: QueuedEvent = { at: Math.round(at), seq: this.seq++, name, run, cancelled: false };
    this.heap.push(ev);
    return {
      at: ev.at,
      cancel: () => {
        ev.cancelled = true;
      },
    };
  }

  after(delay: Nanoseconds, name: string, run: () => void): EventHandle {
    return this.schedule(this.clock.now() + delay, name, run);
  }

  get size(): number {
    return this.heap.length;
  }

  peekTime(): Nanoseconds | undefined {
    this.dropCancelled();
    return this.heap.peek()?.at;
  }

  /** Run every event due at or before `until`, advancing the clock to each. */
  runUntil(until: Nanoseconds): number {
    let n = 0;
    for (;;) {
      this.dropCancelled();
      const ev = this.heap.peek();
      if (!ev || ev.at > until) break;
      this.heap.pop();
      this.clock.advanceTo(Math.max(ev.at, this.clock.now()));
      ev.run();
      n++;
    }
    if (this.clock.now() < until) this.clock.advanceTo(until);
    return n;
  }

  private dropCancelled(): void {
    while (this.heap.length > 0 && this.heap.peek()!.cancelled) this.heap.pop();
  }
}
