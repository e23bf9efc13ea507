/**
 * The balloon's proposed inflate encodings and page bitmaps: what the guest
 * writes, the host reads back, page for page.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { InflateWriter, decodeBitmap, decodeInflate, inflateBufferBytes, writeBitmapWindows, type ByteRange } from './balloon_encoding.ts';
import * as vb from './virtio_balloon.ts';

const PAGE = 4096;

function buffer(bytes: number): { bytes: Uint8Array; view: DataView } {
  const b = new Uint8Array(bytes);
  return { bytes: b, view: new DataView(b.buffer) };
}

/** Disjoint buddy blocks (each aligned on its order) inside `maxPfn` pages, from a seed list. */
function blocksFrom(picks: readonly { slot: number; order: number }[], maxPfn: number): { pfn: number; order: number }[] {
  const used = new Uint8Array(maxPfn);
  const out: { pfn: number; order: number }[] = [];
  for (const { slot, order } of picks) {
    const n = 1 << order;
    const pfn = (slot * n) % maxPfn;
    if (pfn + n > maxPfn) continue;
    let free = true;
    for (let p = pfn; p < pfn + n && free; p++) free = !used[p];
    if (!free) continue;
    used.fill(1, pfn, pfn + n);
    out.push({ pfn, order });
  }
  return out;
}

/** The 4 KiB pages of ranges, sorted (duplicates kept, so a page sent twice shows). */
function pagesOfRanges(ranges: readonly ByteRange[]): number[] {
  const out: number[] = [];
  for (const r of ranges) for (let a = r.gpa; a < r.gpa + r.len; a += PAGE) out.push(a / PAGE);
  return out.sort((a, b) => a - b);
}

function pagesOfBlocks(blocks: readonly { pfn: number; order: number }[]): number[] {
  const out: number[] = [];
  for (const b of blocks) for (let p = b.pfn; p < b.pfn + (1 << b.order); p++) out.push(p);
  return out.sort((a, b) => a - b);
}

/** Encode blocks, decode every message; returns the ranges, message sizes and decode work. */
function roundTrip(enc: vb.InflateEncodingName, blocks: readonly { pfn: number; order: number }[], maxPfn: number) {
  const buf = buffer(inflateBufferBytes(enc));
  const ranges: ByteRange[] = [];
  const sizes: number[] = [];
  const work = { entries: 0, words: 0 };
  const w = new InflateWriter(
    enc,
    buf,
    (len) => {
      sizes.push(len);
      ranges.push(...decodeInflate(enc, buf.bytes.slice(0, len), work));
    },
    maxPfn,
  );
  for (const b of blocks) w.add(b.pfn, b.order);
  w.finish();
  return { ranges, sizes, work, entries: w.entries };
}

const blockPicks = fc.array(fc.record({ slot: fc.nat(1 << 16), order: fc.integer({ min: 0, max: 10 }) }), { maxLength: 120 });

describe('inflate encodings', () => {
  it('property: every encoding round-trips: the host reads back exactly the pages the guest wrote, once each', () => {
    fc.assert(
      fc.property(blockPicks, fc.constantFrom(...vb.INFLATE_ENCODINGS), (picks, enc) => {
        const maxPfn = 1 << 17; // 512 MiB
        const blocks = blocksFrom(picks, maxPfn);
        const { ranges, sizes } = roundTrip(enc, blocks, maxPfn);
        expect(pagesOfRanges(ranges)).toEqual(pagesOfBlocks(blocks));
        for (const s of sizes) expect(s).toBeLessThanOrEqual(inflateBufferBytes(enc));
      }),
      { numRuns: 150 },
    );
  });

  it('sizes messages as each proposal does: 4 bytes a page, 16 a chunk, 8 a block, a per-order header, a bit a page', () => {
    // 2 order-10 blocks side by side, then 3 single pages, one of them contiguous with the last block
    const blocks = [
      { pfn: 0, order: 10 },
      { pfn: 1024, order: 10 },
      { pfn: 2048, order: 0 },
      { pfn: 5000, order: 0 },
      { pfn: 7000, order: 0 },
    ];
    const maxPfn = 1 << 15;
    expect(roundTrip('pfns', blocks, maxPfn).sizes).toEqual([1024, 1024, 1024, 1024, 1024, 1024, 1024, 1024, 12]);
    // chunks merge contiguous blocks: [0, 2049) is one chunk
    expect(roundTrip('chunks', blocks, maxPfn).sizes).toEqual([3 * 16]);
    expect(roundTrip('pfn-order', blocks, maxPfn).sizes).toEqual([5 * 8]);
    // one message per order, highest first
    expect(roundTrip('per-order', blocks, maxPfn).sizes).toEqual([8 + 2 * 4, 8 + 3 * 4]);
    // all in the first 32768-page window: one header and 4 KiB of bits
    const bm = roundTrip('bitmap', blocks, maxPfn);
    expect(bm.sizes).toEqual([16 + 4096]);
    // 512 words scanned, 3 runs found
    expect(bm.work).toEqual({ entries: 3, words: 512 });
  });

  it('refuses a per-order or bitmap message whose header claims more than it holds', () => {
    const b = new Uint8Array(16);
    new DataView(b.buffer).setUint32(4, 100, true);
    expect(() => decodeInflate('per-order', b, { entries: 0, words: 0 })).toThrow(/100 PFNs does not fit in 16 bytes/);
    const m = new Uint8Array(24);
    new DataView(m.buffer).setBigUint64(8, 4096n, true);
    expect(() => decodeBitmap(m, 0, { entries: 0, words: 0 })).toThrow(/4096 bits does not fit in 24 bytes/);
  });
});

describe('page bitmaps at 4 KiB and 2 MiB', () => {
  it('property: a 2 MiB bitmap names exactly the aligned 2 MiB units wholly in the blocks, and at most 1/512 of the bits', () => {
    fc.assert(
      fc.property(blockPicks, (picks) => {
        const maxPfn = 1 << 17;
        const blocks = blocksFrom(picks, maxPfn);
        const pages = new Set(pagesOfBlocks(blocks));
        const buf = buffer(vb.hintBitmapMessageBytes(1024));
        const got: ByteRange[] = [];
        const sizes: number[] = [];
        const work = { entries: 0, words: 0 };
        const set = writeBitmapWindows(blocks, 9, 1024, maxPfn, buf, (len) => {
          sizes.push(len);
          got.push(...decodeBitmap(buf.bytes.slice(0, len), 9, work));
        });
        const whole: number[] = [];
        for (let u = 0; u < maxPfn / 512; u++) {
          let all = true;
          for (let p = u * 512; p < (u + 1) * 512 && all; p++) all = pages.has(p);
          if (all) whole.push(u);
        }
        expect(set).toBe(whole.length);
        const gotUnits = pagesOfRanges(got)
          .filter((p) => p % 512 === 0)
          .map((p) => p / 512);
        expect(gotUnits).toEqual(whole);
        for (const r of got) expect((r.gpa % (2 * 1024 * 1024)) + (r.len % (2 * 1024 * 1024))).toBe(0);
        // 256 units (512 MiB of 2 MiB) fit one window: at most one message of 16 + 32 bytes
        expect(sizes.length).toBeLessThanOrEqual(1);
        for (const s of sizes) expect(s).toBe(16 + 32);
      }),
      { numRuns: 150 },
    );
  });

  it('at 4 KiB names every page; a 2 MiB bitmap of sparse free pages is empty', () => {
    const sparse = Array.from({ length: 1024 }, (_, i) => ({ pfn: i * 2, order: 0 }));
    const maxPfn = 4096;
    const sent = (order: number): ByteRange[] => {
      const buf = buffer(vb.hintBitmapMessageBytes(4096));
      const out: ByteRange[] = [];
      writeBitmapWindows(sparse, order, 4096, maxPfn, buf, (len) =>
        out.push(...decodeBitmap(buf.bytes.slice(0, len), order, { entries: 0, words: 0 })),
      );
      return out;
    };
    expect(pagesOfRanges(sent(0))).toEqual(pagesOfBlocks(sparse));
    expect(sent(9)).toEqual([]);
  });
});
