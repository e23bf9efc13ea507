/**
 * XBZRLE: the encoder's output for known pages, the round trip, the size
 * model against the real encoder, the page cache's rules (page_cache.c),
 * and save_xbzrle_page's decisions and counters.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { PAGE_SIZE } from '../../kernel/uapi.ts';
import { CACHED_PAGE_LIFETIME, LINE_BYTES, PageCache, Xbzrle, xbzrleDecode, xbzrleEncode, xbzrleEncodedLength } from './xbzrle.ts';

/** A page of bytes from a seed (never all zero). */
function page(seed: number): Uint8Array {
  const p = new Uint8Array(PAGE_SIZE);
  let x = seed * 2654435761 + 1;
  for (let i = 0; i < PAGE_SIZE; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    p[i] = x >>> 24;
  }
  return p;
}

/** `old` with the given bytes made to differ (XOR a non-zero value). */
function changed(old: Uint8Array, at: Iterable<number>): Uint8Array {
  const p = old.slice();
  for (const i of at) p[i] = old[i]! ^ 0x5a;
  return p;
}

const range = (from: number, n: number): number[] => Array.from({ length: n }, (_, i) => from + i);

describe('xbzrle_encode_buffer format', () => {
  it('an unchanged page encodes to nothing', () => {
    const old = page(1);
    expect(xbzrleEncode(old, old.slice())).toEqual(new Uint8Array(0));
  });

  it('one changed byte: the unchanged run before it, the changed run, the byte; the trailing unchanged run is left out', () => {
    const old = page(2);
    const at0 = changed(old, [0]);
    expect([...(xbzrleEncode(old, at0) as Uint8Array)]).toEqual([0, 1, at0[0]]);
    // An unchanged run of 200 bytes takes two ULEB128 bytes: 200 = 0x48 | 0x80, then 1.
    const at200 = changed(old, [200]);
    expect([...(xbzrleEncode(old, at200) as Uint8Array)]).toEqual([0xc8, 0x01, 1, at200[200]]);
  });

  it('runs of 8 bytes at the start of 4 cache lines: 4 x (1 + 1 + 8) bytes', () => {
    const old = page(3);
    const cur = changed(
      old,
      [0, 64, 128, 192].flatMap((l) => range(l, 8)),
    );
    const enc = xbzrleEncode(old, cur) as Uint8Array;
    expect(enc.length).toBe(40);
    expect([enc[0], enc[1]]).toEqual([0, 8]);
    expect([enc[10], enc[11]]).toEqual([56, 8]); // 64 - 8 unchanged bytes between
  });

  it('a page changed whole overflows (its lengths do not fit beside 4096 bytes)', () => {
    const old = page(4);
    expect(xbzrleEncode(old, changed(old, range(0, PAGE_SIZE)))).toBe(-1);
    // Every other byte changed: 2048 runs of 1 + 1 + 1 bytes, far past the page.
    expect(
      xbzrleEncode(
        old,
        changed(
          old,
          range(0, 2048).map((i) => 2 * i),
        ),
      ),
    ).toBe(-1);
  });

  it('property: decode(encode(old, new)) applied to old gives new, unless the encoding overflowed', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 1000 }),
        fc.array(fc.tuple(fc.integer({ min: 0, max: PAGE_SIZE - 1 }), fc.integer({ min: 1, max: 300 })), { maxLength: 40 }),
        (seed, runs) => {
          const old = page(seed);
          const cur = changed(
            old,
            runs.flatMap(([at, n]) => range(at, Math.min(n, PAGE_SIZE - at))),
          );
          const enc = xbzrleEncode(old, cur);
          if (enc === -1) return;
          expect(enc.length).toBeLessThanOrEqual(PAGE_SIZE);
          const out = old.slice();
          expect(xbzrleDecode(enc, out)).toBeGreaterThanOrEqual(0);
          expect(out).toEqual(cur);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('a malformed encoding is refused', () => {
    const p = new Uint8Array(PAGE_SIZE);
    expect(xbzrleDecode(Uint8Array.of(0, 5, 1), p)).toBe(-1); // 5 literal bytes announced, 1 there
    expect(xbzrleDecode(Uint8Array.of(0xff, 0x7f, 1, 9), p)).toBe(-1); // an unchanged run past the page
  });
});

describe('the size model (changed cache lines) against the encoder', () => {
  /** A page whose lines in `lines` have their first `w` bytes changed. */
  const linesChanged = (old: Uint8Array, lines: number[], w: number): Uint8Array =>
    changed(
      old,
      lines.flatMap((l) => range(l * LINE_BYTES, w)),
    );
  const mask = (lines: number[]): [number, number] => {
    let lo = 0;
    let hi = 0;
    for (const l of lines) {
      if (l < 32) lo = (lo | (1 << l)) >>> 0;
      else hi = (hi | (1 << (l - 32))) >>> 0;
    }
    return [lo, hi];
  };

  it('property: xbzrleEncodedLength gives the encoder length (or -1) for any lines and bytes per line', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.integer({ min: 0, max: 63 }), { maxLength: 64 }),
        fc.integer({ min: 1, max: 64 }),
        fc.integer({ min: 0, max: 100 }),
        (lines, w, seed) => {
          const old = page(seed);
          const enc = xbzrleEncode(old, linesChanged(old, lines, w));
          const [lo, hi] = mask(lines);
          expect(xbzrleEncodedLength(lo, hi, w)).toBe(enc === -1 ? -1 : enc.length);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('known sizes: no line 0, one line of 8 bytes 10, every line rewritten whole overflows', () => {
    expect(xbzrleEncodedLength(0, 0, 8)).toBe(0);
    expect(xbzrleEncodedLength(1, 0, 8)).toBe(10);
    expect(xbzrleEncodedLength(0xffffffff, 0xffffffff, 64)).toBe(-1);
    // 64 lines of 8 bytes: 64 x (1 + 1 + 8) = 640 bytes, a sixth of the page.
    expect(xbzrleEncodedLength(0xffffffff, 0xffffffff, 8)).toBe(640);
  });
});

describe('page_cache.c', () => {
  it('is direct mapped by page address over size / 4K entries (a power of two)', () => {
    const c = new PageCache(16 * PAGE_SIZE);
    expect(c.maxItems).toBe(16);
    expect(c.pos(3 * PAGE_SIZE)).toBe(3);
    expect(c.pos(19 * PAGE_SIZE)).toBe(3);
    expect(() => new PageCache(12 * PAGE_SIZE)).toThrow(/power of two/);
  });

  it('a page inserted is cached; another page of the same entry replaces it only once it is CACHED_PAGE_LIFETIME syncs old', () => {
    const c = new PageCache(16 * PAGE_SIZE);
    const a = 3 * PAGE_SIZE;
    const b = 19 * PAGE_SIZE; // same entry
    expect(c.isCached(a)).toBe(false);
    expect(c.insert(a, 5)).toBe(true);
    expect(c.isCached(a)).toBe(true);
    expect(c.insert(b, 5 + CACHED_PAGE_LIFETIME - 1)).toBe(false); // too young to evict
    expect(c.isCached(a)).toBe(true);
    expect(c.insert(a, 6)).toBe(true); // the same page is always updated (its age too)
    expect(c.insert(b, 6 + CACHED_PAGE_LIFETIME)).toBe(true);
    expect(c.isCached(a)).toBe(false);
    expect(c.isCached(b)).toBe(true);
  });

  it('property: an entry holds the last page inserted into it, and isCached says exactly that', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 63 }), fc.integer({ min: 0, max: 3 })), { maxLength: 60 }), (ops) => {
        const c = new PageCache(8 * PAGE_SIZE);
        const held = new Map<number, { page: number; age: number }>();
        let age = 0;
        for (const [p, dage] of ops) {
          age += dage;
          const slot = p & 7;
          const h = held.get(slot);
          const ok = c.insert(p * PAGE_SIZE, age);
          expect(ok).toBe(!h || h.page === p || h.age + CACHED_PAGE_LIFETIME <= age);
          if (ok) held.set(slot, { page: p, age });
          for (let q = 0; q < 64; q++) expect(c.isCached(q * PAGE_SIZE)).toBe(held.get(q & 7)?.page === q);
        }
      }),
      { numRuns: 100 },
    );
  });
});

describe('save_xbzrle_page', () => {
  const costs = { encode4k: 300, encodePerByte: 0.5, decodePerByte: 0.2, pageCopy: 350 };

  it('before the first round is done nothing is cached; then a miss inserts, a hit encodes what the stores changed', () => {
    const x = new Xbzrle(64 * PAGE_SIZE, 1024, costs);
    expect(x.send(7, false, 1, false)).toBeNull();
    x.started = true;
    // A miss: counted, inserted (a memcpy), sent normal.
    expect(x.send(7, false, 2, false)).toEqual({ kind: 'normal', srcNs: 350 });
    expect(x.counters.cacheMiss).toBe(1);
    // Two 8-byte stores in one line, one in another: 2 lines of 8 bytes changed.
    x.store(7, 0, 8);
    x.store(7, 4, 8);
    x.store(7, 1000, 8);
    expect(x.changedLines(7)).toBe(2);
    const r = x.send(7, false, 3, false);
    expect(r).toEqual({
      kind: 'xbzrle',
      bytes: 1 + 2 + xbzrleEncodedLength(0b1 | (1 << 15), 0, 8),
      srcNs: 350 + 300 + 16 * 0.5 + 350,
      dstNs: 16 * 0.2,
    });
    expect(x.counters.pages).toBe(1);
    expect(x.counters.bytes).toBe((r as { bytes: number }).bytes);
    expect(x.changedLines(7)).toBe(0);
  });

  it('a cached page dirtied by a path that reports no stores is taken as changed whole: an overflow, sent normal', () => {
    const x = new Xbzrle(64 * PAGE_SIZE, 1024, costs);
    x.started = true;
    x.send(9, false, 1, false);
    const r = x.send(9, false, 2, false);
    expect(r?.kind).toBe('normal');
    expect(x.counters.overflow).toBe(1);
    expect(x.counters.bytes).toBe(PAGE_SIZE);
  });

  it('a hit unchanged since its last send (the same content key) is skipped, nothing sent; every hit counts in pages', () => {
    const x = new Xbzrle(64 * PAGE_SIZE, 1024, costs);
    x.started = true;
    // A miss with key 41: inserted, sent normal.
    expect(x.send(3, false, 1, false, 41)?.kind).toBe('normal');
    // Written before that send, found dirty again by the next sync: the key is the one sent, so encoded_len 0.
    x.store(3, 0, 8); // (a store reported before the send would have been cleared by it; this one is after)
    expect(x.send(3, false, 2, false, 42)?.kind).toBe('xbzrle'); // key changed: the store's line is encoded
    expect(x.send(3, false, 3, false, 42)).toEqual({ kind: 'skip', srcNs: 350 + 300 });
    expect(x.counters.pages).toBe(2);
    expect(x.counters.bytes).toBe(1 + 2 + xbzrleEncodedLength(0b1, 0, 8)); // the skip adds none
    // A new key with no store reported: changed by a path that reports none, an overflow, and a hit counted.
    expect(x.send(3, false, 4, false, 43)?.kind).toBe('normal');
    expect([x.counters.overflow, x.counters.pages]).toEqual([1, 3]);
    // Without a key (callers that do not know it), an unreported change is an overflow as before.
    expect(x.send(3, false, 5, false)?.kind).toBe('normal');
    expect(x.counters.overflow).toBe(2);
  });

  it('stores rewriting whole lines everywhere overflow; in the last stage a miss does not insert', () => {
    const x = new Xbzrle(64 * PAGE_SIZE, 1024, costs);
    x.started = true;
    x.send(1, false, 1, false);
    for (let off = 0; off < PAGE_SIZE; off += 64) x.store(1, off, 64);
    expect(x.send(1, false, 2, false)?.kind).toBe('normal');
    expect(x.counters.overflow).toBe(1);
    expect(x.send(2, false, 3, true)).toEqual({ kind: 'normal', srcNs: 0 });
    expect(x.cache.isCached(2 * PAGE_SIZE)).toBe(false);
  });

  it('a zero page is cached as zeros once started; rates per period follow migration_update_rates', () => {
    const x = new Xbzrle(64 * PAGE_SIZE, 1024, costs);
    x.started = true;
    expect(x.send(4, true, 1, false)).toBeNull();
    expect(x.cache.isCached(4 * PAGE_SIZE)).toBe(true);
    x.store(4, 0, 8);
    expect(x.send(4, false, 2, false)?.kind).toBe('xbzrle');
    x.send(5, false, 2, false); // a miss
    x.updateRates(4);
    expect(x.counters.cacheMissRate).toBeCloseTo(1 / 4);
    expect(x.counters.encodingRate).toBeCloseTo(PAGE_SIZE / x.counters.bytes);
    x.updateRates(4); // no page handled since: the rates stay
    expect(x.counters.cacheMissRate).toBeCloseTo(1 / 4);
  });
});
