/**
 * A bitmap over n items that costs memory only where bits are set: chunks of
 * 2^15 bits (4 KiB) made on the first set in them, and the number of set
 * bits kept as bits change. For per-page marks over mappings or guest RAM
 * of any size (a 60 GiB mapping with 1 GiB written costs 32 KiB, not 15 MiB).
 */
const CHUNK_SHIFT = 15;
const CHUNK_BITS = 1 << CHUNK_SHIFT;
const CHUNK_MASK = CHUNK_BITS - 1;

export class SparseBitmap {
  private readonly chunks: (Uint32Array | undefined)[];
  /** Set bits. */
  count = 0;

  constructor(readonly length: number) {
    this.chunks = new Array(Math.ceil(length / CHUNK_BITS));
  }

  test(i: number): boolean {
    const c = this.chunks[i >>> CHUNK_SHIFT];
    return c !== undefined && (c[(i & CHUNK_MASK) >>> 5]! & (1 << (i & 31))) !== 0;
  }

  /** Set bit i (0 <= i < length); true when it was clear. */
  set(i: number): boolean {
    const ci = i >>> CHUNK_SHIFT;
    const c = (this.chunks[ci] ??= new Uint32Array(CHUNK_BITS >>> 5));
    const w = (i & CHUNK_MASK) >>> 5;
    const bit = 1 << (i & 31);
    if (c[w]! & bit) return false;
    c[w]! |= bit;
    this.count++;
    return true;
  }

  /** Set every bit. */
  fill(): void {
    for (let i = 0; i < this.length; i++) this.set(i);
  }

  /** Bytes of the chunks made. */
  bytes(): number {
    let n = 0;
    for (const c of this.chunks) if (c) n += c.byteLength;
    return n;
  }
}
