/**
 * A memslot's EPT entries, as the VMM's model keeps them: per guest 4K page
 * of the slot, the host frame + 1 the entry maps (EPT_NONE: no entry,
 * EPT_ZERO: the zero page, read-only).
 *
 * KVM's EPT is a radix tree whose last-level tables exist only where the
 * guest touched memory; this model keeps the same property per 2M of the
 * slot (one last-level table's reach). A 2M range whose entries map one run
 * of consecutive host frames (what a fault after fault of ascending guest
 * pages gives: the host's buddy allocator hands out ascending frames) is
 * kept as three numbers: the run's base and the range [lo, hi) of entries
 * it fills, the others having no entry. It becomes an array of 512 entries
 * the first time an entry does not continue the run (another frame, the
 * zero page, an entry before lo - 1 or after hi). The memory then follows
 * what the guest touched and how scattered its frames are, not the slot's
 * size: 16 bytes per 2M of slot, plus 2 KiB per 2M that is not one run.
 *
 * Reads (get) are exactly those of a flat Int32Array of one entry per page.
 */

/** Entries per 2M table. */
export const EPT_TABLE_ENTRIES = 512;
const SHIFT = 9;
const MASK = EPT_TABLE_ENTRIES - 1;

export const EPT_NONE = 0;
export const EPT_ZERO = -1;

export class Ept {
  /** Entries of the slot (its size / 4K). */
  readonly length: number;
  /** Per 2M: entry o holds runBase + o for o in [lo, hi) (when hi > lo and there is no dense table). */
  private readonly runBase: Int32Array;
  private readonly lo: Uint16Array;
  private readonly hi: Uint16Array;
  /** Per 2M: its 512 entries, once they are not one run. */
  private readonly dense: (Int32Array | undefined)[];

  constructor(entries: number) {
    this.length = entries;
    const tables = Math.ceil(entries / EPT_TABLE_ENTRIES);
    this.runBase = new Int32Array(tables);
    this.lo = new Uint16Array(tables);
    this.hi = new Uint16Array(tables);
    this.dense = new Array<Int32Array | undefined>(tables);
  }

  /** The entry of page i (EPT_NONE, EPT_ZERO, or the host frame + 1). */
  get(i: number): number {
    const t = i >>> SHIFT;
    const d = this.dense[t];
    const o = i & MASK;
    if (d !== undefined) return d[o]!;
    return o >= this.lo[t]! && o < this.hi[t]! ? this.runBase[t]! + o : EPT_NONE;
  }

  /** Whether entries [i0, i0 + n) are all EPT_NONE (a run's table by its bounds, not entry by entry). */
  noneIn(i0: number, n: number): boolean {
    for (let i = i0; i < i0 + n;) {
      const t = i >>> SHIFT;
      const o = i & MASK;
      const m = Math.min(i0 + n - i, EPT_TABLE_ENTRIES - o);
      const d = this.dense[t];
      if (d !== undefined) {
        for (let j = o; j < o + m; j++) if (d[j] !== EPT_NONE) return false;
      } else if (this.hi[t]! > this.lo[t]! && o < this.hi[t]! && o + m > this.lo[t]!) return false;
      i += m;
    }
    return true;
  }

  /** Entries [i0, i0 + n) map consecutive host frames: entry i0 + j holds first + j. */
  setRun(i0: number, n: number, first: number): void {
    for (let i = i0; i < i0 + n;) {
      const t = i >>> SHIFT;
      const o = i & MASK;
      const m = Math.min(i0 + n - i, EPT_TABLE_ENTRIES - o);
      this.setInTable(t, o, m, first + (i - i0));
      i += m;
    }
  }

  /** Entries [i0, i0 + n) map the zero page. */
  fillZero(i0: number, n: number): void {
    for (let i = i0; i < i0 + n;) {
      const t = i >>> SHIFT;
      const o = i & MASK;
      const m = Math.min(i0 + n - i, EPT_TABLE_ENTRIES - o);
      this.densify(t).fill(EPT_ZERO, o, o + m);
      i += m;
    }
  }

  /** 2M tables kept as arrays of 512 entries (not one run). */
  get denseTables(): number {
    let n = 0;
    for (const d of this.dense) if (d !== undefined) n++;
    return n;
  }

  /** Whether no entry of 2M table t is set (none was ever built there). */
  tableEmpty(t: number): boolean {
    return this.dense[t] === undefined && this.hi[t]! <= this.lo[t]!;
  }

  /** Entries [o, o + m) of table t hold v, v + 1, ...: continue or start the run, else the table's array. */
  private setInTable(t: number, o: number, m: number, v: number): void {
    const d = this.dense[t];
    if (d !== undefined) {
      for (let j = 0; j < m; j++) d[o + j] = v + j;
      return;
    }
    const lo = this.lo[t]!;
    const hi = this.hi[t]!;
    const base = v - o;
    if (hi <= lo) {
      this.runBase[t] = base;
      this.lo[t] = o;
      this.hi[t] = o + m;
      return;
    }
    // The same run, overlapping or touching [lo, hi): the run grows.
    if (base === this.runBase[t] && o <= hi && o + m >= lo) {
      this.lo[t] = Math.min(lo, o);
      this.hi[t] = Math.max(hi, o + m);
      return;
    }
    const a = this.densify(t);
    for (let j = 0; j < m; j++) a[o + j] = v + j;
  }

  /** Table t's entries as an array (made from its run the first time). */
  private densify(t: number): Int32Array {
    let d = this.dense[t];
    if (d !== undefined) return d;
    d = new Int32Array(EPT_TABLE_ENTRIES);
    const base = this.runBase[t]!;
    for (let o = this.lo[t]!; o < this.hi[t]!; o++) d[o] = base + o;
    this.dense[t] = d;
    return d;
  }
}
