import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { smallKernel, RW, ANON, MiB } from '../testing/fixtures.ts';
import { MADV, PAGE_SIZE, PMD_SIZE } from './uapi.ts';
import { DamonCtx, damonMaxNrAccesses, damonVaThreeRegions, type DamonAttrs, type DamonSnapshotRegion } from './damon.ts';

const ATTRS: DamonAttrs = { sample_us: 5000, aggr_us: 100_000, update_us: 1_000_000_000, min_nr_regions: 10, max_nr_regions: 1000 };

/** A process with `mib` MiB of 4K pages, all present; and a DAMON context on [a, a+len). */
function setup(mib: number, attrs: DamonAttrs = ATTRS, seed = 1, thp = false) {
  const k = smallKernel({ nodes: 1, mib: Math.max(64, 2 * mib), seed });
  const p = k.createProcess('app');
  const len = mib * MiB;
  const raw = k.mmap(p, 0, len + PMD_SIZE, RW, ANON);
  const a = Math.ceil(raw / PMD_SIZE) * PMD_SIZE;
  k.madvise(p, raw, len + PMD_SIZE, thp ? MADV.MADV_HUGEPAGE : MADV.MADV_NOHUGEPAGE);
  k.access(p.mainThread, a, len, PAGE_SIZE, true, 7);
  const ctx = new DamonCtx(k, p.mm, attrs, k.random.stream('damon'), [[a, a + len]]);
  return { k, p, a, len, ctx };
}

/** Run `aggrs` aggregation intervals, loading every page of [hot, hot+hotLen) in each sampling interval. */
function run(s: ReturnType<typeof setup>, aggrs: number, hot?: [number, number]): DamonSnapshotRegion[][] {
  const out: DamonSnapshotRegion[][] = [];
  s.ctx.onAggregate = (r) => out.push([...r]);
  s.ctx.prepareAccessChecks();
  while (out.length < aggrs) {
    if (hot) s.k.access(s.p.mainThread, hot[0], hot[1], PAGE_SIZE, false, 0);
    s.ctx.sample();
  }
  return out;
}

function expectCover(rs: readonly { start: number; end: number }[], a: number, len: number): void {
  expect(rs[0]!.start).toBe(a);
  expect(rs[rs.length - 1]!.end).toBe(a + len);
  for (let i = 0; i < rs.length; i++) {
    expect(rs[i]!.end).toBeGreaterThan(rs[i]!.start);
    expect(rs[i]!.start % PAGE_SIZE).toBe(0);
    if (i) expect(rs[i]!.start).toBe(rs[i - 1]!.end);
  }
}

describe('DAMON (vaddr)', () => {
  it('the three regions are the mapped span cut at the two biggest gaps', () => {
    const k = smallKernel({ nodes: 1 });
    const p = k.createProcess('app');
    const a = k.mmap(p, 0x10000000, 4 * MiB, RW, ANON | 0x10 /* MAP_FIXED */);
    const b = k.mmap(p, 0x20000000, 4 * MiB, RW, ANON | 0x10);
    const c = k.mmap(p, 0x20800000, 4 * MiB, RW, ANON | 0x10);
    const d = k.mmap(p, 0x40000000, 4 * MiB, RW, ANON | 0x10);
    expect([a, b, c, d]).toEqual([0x10000000, 0x20000000, 0x20800000, 0x40000000]);
    expect(damonVaThreeRegions(p.mm)).toEqual([
      [0x10000000, 0x10400000],
      [0x20000000, 0x20c00000],
      [0x40000000, 0x40400000],
    ]);
    // Without a user range the context starts from them, split into about min_nr_regions pieces.
    const ctx = new DamonCtx(k, p.mm, ATTRS, k.random.stream('damon'));
    expect(ctx.regions.length).toBeGreaterThanOrEqual(ATTRS.min_nr_regions);
    expect(ctx.regions[0]!.start).toBe(0x10000000);
    expect(ctx.regions[ctx.regions.length - 1]!.end).toBe(0x40400000);
  });

  it('a region always touched counts every sample (nr_accesses = aggr/sample); one never touched counts none', () => {
    const s = setup(64);
    const hot: [number, number] = [s.a + 16 * MiB, 16 * MiB];
    const snaps = run(s, 20, hot);
    const last = snaps[snaps.length - 1]!;
    expectCover(last, s.a, s.len);
    const max = damonMaxNrAccesses(ATTRS);
    for (const r of last) {
      if (r.start >= hot[0] && r.end <= hot[0] + hot[1]) expect(r.nr_accesses).toBe(max);
      if (r.end <= hot[0] || r.start >= hot[0] + hot[1]) expect(r.nr_accesses).toBe(0);
    }
    // The cold memory settled into few, old regions.
    const cold = last.filter((r) => r.nr_accesses === 0);
    expect(cold.some((r) => r.age >= 5)).toBe(true);
    expect(s.ctx.stats.checks).toBeGreaterThan(0);
    expect(s.ctx.stats.cpu_ns).toBeGreaterThan(0);
  });

  it('sees accesses through PMD-mapped THPs', () => {
    const s = setup(16, ATTRS, 1, true);
    const hot: [number, number] = [s.a, 8 * MiB];
    const last = run(s, 10, hot).at(-1)!;
    const max = damonMaxNrAccesses(ATTRS);
    for (const r of last) {
      if (r.end <= s.a + 8 * MiB) expect(r.nr_accesses).toBe(max);
      if (r.start >= s.a + 8 * MiB) expect(r.nr_accesses).toBe(0);
    }
  });

  it('is deterministic for a seed', () => {
    const one = run(setup(32, ATTRS, 3), 10, undefined);
    const two = run(setup(32, ATTRS, 3), 10, undefined);
    expect(two).toEqual(one);
  });

  it('property: regions cover the target without overlap, their count stays within [min, max], nr_accesses <= aggr/sample', () => {
    fc.assert(
      fc.property(
        fc.record({
          mib: fc.integer({ min: 2, max: 24 }),
          min: fc.integer({ min: 3, max: 20 }),
          extra: fc.integer({ min: 0, max: 40 }),
          samplesPerAggr: fc.integer({ min: 1, max: 12 }),
          hotStart: fc.integer({ min: 0, max: 100 }),
          hotLen: fc.integer({ min: 0, max: 100 }),
          aggrs: fc.integer({ min: 1, max: 12 }),
          seed: fc.integer({ min: 1, max: 1000 }),
        }),
        (c) => {
          const attrs: DamonAttrs = {
            sample_us: 1000,
            aggr_us: 1000 * c.samplesPerAggr,
            update_us: 1e9,
            min_nr_regions: c.min,
            max_nr_regions: c.min + c.extra,
          };
          const s = setup(c.mib, attrs, c.seed);
          const pages = s.len / PAGE_SIZE;
          const hs = Math.floor((c.hotStart / 100) * pages);
          const hl = Math.min(pages - hs, Math.floor((c.hotLen / 100) * pages));
          const snaps = run(s, c.aggrs, hl ? [s.a + hs * PAGE_SIZE, hl * PAGE_SIZE] : undefined);
          for (const rs of snaps) {
            expectCover(rs, s.a, s.len);
            expect(rs.length).toBeLessThanOrEqual(attrs.max_nr_regions);
            for (const r of rs) expect(r.nr_accesses).toBeLessThanOrEqual(c.samplesPerAggr);
          }
          // Regions are split until there are at least min_nr_regions (when the target has the pages for them).
          expect(s.ctx.regions.length).toBeLessThanOrEqual(attrs.max_nr_regions);
          expectCover(s.ctx.regions, s.a, s.len);
        },
      ),
      { numRuns: 40 },
    );
  });

  it('refuses attributes the sysfs interface refuses', () => {
    const k = smallKernel({ nodes: 1 });
    const p = k.createProcess('app');
    expect(() => new DamonCtx(k, p.mm, { ...ATTRS, min_nr_regions: 2 }, k.random.stream('d'))).toThrow(/at least 3/);
    expect(() => new DamonCtx(k, p.mm, { ...ATTRS, min_nr_regions: 20, max_nr_regions: 10 }, k.random.stream('d'))).toThrow(/exceed/);
    expect(() => new DamonCtx(k, p.mm, { ...ATTRS, sample_us: 200_000 }, k.random.stream('d'))).toThrow(/sample_us/);
  });
});
