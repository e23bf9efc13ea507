/**
 * A list of guest page frame numbers in the order they were added, kept as
 * runs of consecutive frames (a task's pages, which the buddy allocator
 * hands out in ascending runs): 8 bytes per run instead of 8 per page.
 */
export class PfnRuns {
  /** Per run: its first frame and its length, at 2r and 2r + 1. */
  private runs = new Int32Array(64);
  private nrRuns = 0;
  /** Frames held. */
  length = 0;

  /** Add a frame at the end. */
  push(pfn: number): void {
    const r = this.nrRuns;
    if (r > 0) {
      const last = 2 * (r - 1);
      if (this.runs[last]! + this.runs[last + 1]! === pfn && this.runs[last + 1]! < 0x7fffffff) {
        this.runs[last + 1]!++;
        this.length++;
        return;
      }
    }
    if (2 * r + 2 > this.runs.length) {
      const grown = new Int32Array(this.runs.length * 2);
      grown.set(this.runs);
      this.runs = grown;
    }
    this.runs[2 * r] = pfn;
    this.runs[2 * r + 1] = 1;
    this.nrRuns++;
    this.length++;
  }

  /** Take the newest n frames (n <= length) off the end, in the order they were added. */
  popNewest(n: number): number[] {
    const out = new Array<number>(n);
    let k = n;
    while (k > 0) {
      const last = 2 * (this.nrRuns - 1);
      const start = this.runs[last]!;
      const len = this.runs[last + 1]!;
      const take = Math.min(k, len);
      for (let j = 0; j < take; j++) out[k - take + j] = start + len - take + j;
      k -= take;
      if (take === len) this.nrRuns--;
      else this.runs[last + 1] = len - take;
    }
    this.length -= n;
    return out;
  }

  /** The frames, oldest first. */
  *[Symbol.iterator](): IterableIterator<number> {
    for (let r = 0; r < this.nrRuns; r++) {
      const start = this.runs[2 * r]!;
      for (let j = 0; j < this.runs[2 * r + 1]!; j++) yield start + j;
    }
  }
}
