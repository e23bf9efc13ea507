/**
 * Address streams of workload threads. Each generator yields virtual
 * addresses inside its region, deterministically from its random stream.
 */
import type { RandomStream } from '../sim/random.ts';
import { PAGE_SIZE } from '../kernel/uapi.ts';

export interface AddressStream {
  /** Next address, or -1 when the pattern is finished (first-touch). */
  next(): number;
  /** True for streams whose accesses are dependent random loads (vs sequential). */
  readonly random: boolean;
  /** Bytes the stream keeps live: what the TLB and caches must cover. */
  readonly workingSet: number;
  readonly stride: number;
}

/** Bytes of a cache line: what a random access moves. */
export const LINE = 64;

export class Sequential implements AddressStream {
  readonly random = false;
  private pos = 0;
  constructor(
    private readonly base: number,
    private readonly len: number,
    readonly stride: number,
  ) {}
  get workingSet(): number {
    return this.len;
  }
  next(): number {
    const a = this.base + this.pos;
    this.pos += this.stride;
    if (this.pos >= this.len) this.pos = 0;
    return a;
  }
}

/**
 * STREAM's copy, a[i] = b[i]: a load from the source, then a store to the
 * destination at the same offset, `stride` bytes on; wraps around. The
 * working set is both regions.
 */
export class Copy implements AddressStream {
  readonly random = false;
  /** Whether the address next() returned last is the store. */
  writing = true;
  private pos = 0;
  constructor(
    private readonly from: number,
    private readonly to: number,
    private readonly len: number,
    readonly stride: number,
  ) {}
  get workingSet(): number {
    return 2 * this.len;
  }
  next(): number {
    this.writing = !this.writing;
    if (this.writing) {
      const a = this.to + this.pos;
      this.pos += this.stride;
      if (this.pos >= this.len) this.pos = 0;
      return a;
    }
    return this.from + this.pos;
  }
}

export class Uniform implements AddressStream {
  readonly random = true;
  readonly stride = LINE;
  private readonly lines: number;
  constructor(
    private readonly base: number,
    len: number,
    private readonly rng: RandomStream,
  ) {
    this.lines = Math.max(1, Math.floor(len / LINE));
  }
  get workingSet(): number {
    return this.lines * LINE;
  }
  next(): number {
    return this.base + Math.floor(this.rng.float() * this.lines) * LINE;
  }
}

/**
 * Zipf over the pages of the region: the page of popularity rank r is hit
 * with probability proportional to 1/r^s. Ranks come from the continuous
 * inverse CDF (the standard approximation for large N); ranks are spread
 * over the region by a fixed multiplicative permutation so the hot pages are
 * not all at its start. The working set is the number of hottest pages that
 * take 90% of the accesses.
 */
export class Zipf implements AddressStream {
  readonly random = true;
  readonly stride = LINE;
  private readonly n: number;
  private readonly mult: number;
  readonly workingSet: number;
  constructor(
    private readonly base: number,
    len: number,
    private readonly s: number,
    private readonly rng: RandomStream,
  ) {
    this.n = Math.max(1, Math.floor(len / PAGE_SIZE));
    if (this.n >= 2 ** 26) throw new RangeError('zipf regions are limited to 256 GiB');
    let m = 2654435761 % this.n || 1;
    while (gcd(m, this.n) !== 1) m++;
    this.mult = m;
    this.workingSet = this.rankCovering(0.9) * PAGE_SIZE;
  }
  private cdfInv(u: number): number {
    const n = this.n;
    const s = this.s;
    const r = Math.abs(s - 1) < 1e-9 ? Math.pow(n, u) : Math.pow((Math.pow(n, 1 - s) - 1) * u + 1, 1 / (1 - s));
    return Math.min(n, Math.max(1, Math.floor(r))) - 1;
  }
  private rankCovering(mass: number): number {
    return this.cdfInv(mass) + 1;
  }
  next(): number {
    const rank = this.cdfInv(this.rng.float());
    const page = (rank * this.mult) % this.n; // exact: both factors < 2^26
    return this.base + page * PAGE_SIZE + Math.floor(this.rng.float() * (PAGE_SIZE / LINE)) * LINE;
  }
}

/** First touch of one slice: every page written once, in order; then finished. */
export class FirstTouch implements AddressStream {
  readonly random = false;
  readonly stride = PAGE_SIZE;
  private pos = 0;
  constructor(
    private readonly base: number,
    private readonly len: number,
  ) {}
  get workingSet(): number {
    return this.len;
  }
  next(): number {
    if (this.pos >= this.len) return -1;
    const a = this.base + this.pos;
    this.pos += PAGE_SIZE;
    return a;
  }
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

/** No accesses: a thread waiting for a phase to end. */
export class Idle implements AddressStream {
  readonly random = false;
  readonly stride = PAGE_SIZE;
  readonly workingSet = PAGE_SIZE;
  next(): number {
    return -2;
  }
}
