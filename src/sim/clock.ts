/**
 * Virtual time. Every duration in memtwin is an integer number of
 * nanoseconds of *simulated* time; nothing reads the wall clock.
 * A JS number holds integers exactly up to 2^53 ns (about 104 days).
 */
export type Nanoseconds = number;

export const NSEC_PER_USEC = 1_000;
export const NSEC_PER_MSEC = 1_000_000;
export const NSEC_PER_SEC = 1_000_000_000;

export class VirtualClock {
  private nowNs: Nanoseconds = 0;

  now(): Nanoseconds {
    return this.nowNs;
  }

  /** Advance by a (possibly fractional) cost; time stays an integer. */
  advance(ns: number): Nanoseconds {
    if (!(ns >= 0)) throw new RangeError(`cannot advance the clock by ${ns} ns`);
    this.nowNs += Math.round(ns);
    return this.nowNs;
  }

  /** Jump forward to an absolute time (never backwards), a whole number of ns. */
  advanceTo(t: Nanoseconds): void {
    if (!Number.isSafeInteger(t)) throw new RangeError(`memtwin internal error: cannot move the clock to ${t} ns (not a whole number)`);
    if (t < this.nowNs) throw new RangeError(`time ${t} ns is before now (${this.nowNs} ns)`);
    this.nowNs = t;
  }
}
