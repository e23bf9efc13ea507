import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { smallKernel, fragment, RW, ANON } from '../testing/fixtures.ts';
import { verifyKernel } from './debug_vm.ts';
import { pagemap } from './procfs.ts';
import { followPage } from './memory.ts';
import { HPAGE_PMD_NR, MADV, MADV_F_PROPOSED, PAGE_SIZE, PMD_SIZE } from './uapi.ts';
import { sysSwapon } from './swapfile.ts';
import { sysFork } from './fork.ts';
import type { Kernel } from './kernel.ts';
import type { Process } from './sched.ts';

const KH = '/sys/kernel/mm/transparent_hugepage/khugepaged';

/** What one 4K page of a test region holds before collapse. */
type PageState = { kind: 'none' } | { kind: 'zero' } | { kind: 'data'; fill: number; node: number };

const pageState: fc.Arbitrary<PageState> = fc.oneof(
  { weight: 2, arbitrary: fc.constant({ kind: 'none' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'zero' as const }) },
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant('data' as const),
      fill: fc.integer({ min: 1, max: 255 }),
      node: fc.integer({ min: 0, max: 1 }),
    }),
  },
);

/**
 * Regions of 512 pages, each described by runs of page states (so that
 * realistic mixes, not just noise, come out), or left without a PTE table.
 */
const region = fc.oneof(
  { weight: 1, arbitrary: fc.constant(null) },
  { weight: 5, arbitrary: fc.array(fc.tuple(pageState, fc.integer({ min: 1, max: 512 })), { minLength: 1, maxLength: 6 }) },
);

function expand(runs: [PageState, number][]): PageState[] {
  const out: PageState[] = [];
  for (const [st, n] of runs) for (let i = 0; i < n && out.length < HPAGE_PMD_NR; i++) out.push(st);
  while (out.length < HPAGE_PMD_NR) out.push({ kind: 'none' });
  return out;
}

/** Build the regions in a fresh 4K-only mapping; a thread per node writes that node's pages. */
function build(k: Kernel, regions: (PageState[] | null)[]): { p: Process; a: number } {
  k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'never');
  const p = k.createProcess('c', 0);
  const t1 = k.nrNodes > 1 ? k.createThread(p, 2) : p.mainThread; // CPU 2 is on node 1
  if (typeof t1 === 'number') throw new Error('thread');
  const len = (regions.length + 1) * PMD_SIZE;
  const a = k.mmap(p, 0, len, RW, ANON);
  const base = Math.ceil(a / PMD_SIZE) * PMD_SIZE;
  k.access(p.mainThread, a + len - PAGE_SIZE, PAGE_SIZE, PAGE_SIZE, true, 1); // an anon_vma, after the regions
  regions.forEach((r, ri) => {
    r?.forEach((st, i) => {
      const va = base + ri * PMD_SIZE + i * PAGE_SIZE;
      if (st.kind === 'zero') k.access(p.mainThread, va, 1, PAGE_SIZE, false, 0);
      if (st.kind === 'data') k.access(st.node ? t1 : p.mainThread, va, 1, PAGE_SIZE, true, st.fill);
    });
  });
  return { p, a: base };
}

function contents(k: Kernel, p: Process, a: number, n: number): number[] {
  const out: number[] = [];
  k.access(p.mainThread, a, n * PMD_SIZE, PAGE_SIZE, false, 0, (_va, b) => out.push(b));
  return out;
}

const expected = (regions: (PageState[] | null)[]): number[] =>
  regions.flatMap((r) => (r ?? expand([])).map((st) => (st.kind === 'data' ? st.fill : 0)));

const isHuge = (k: Kernel, p: Process, va: number): boolean => pagemap(k, p.mm, va, PAGE_SIZE)[0]!.size === '2M';

describe('MADV_COLLAPSE', () => {
  it('collapses exactly the regions that have a PTE table, onto the node holding most pages, and changes no byte', () => {
    fc.assert(
      fc.property(fc.array(region, { minLength: 1, maxLength: 4 }), (spec) => {
        const regions = spec.map((r) => (r ? expand(r) : null));
        const k = smallKernel({ nodes: 2, mib: 64 });
        const { p, a } = build(k, regions);
        regions.forEach((r, ri) => {
          const va = a + ri * PMD_SIZE;
          const ret = k.madvise(p, va, PMD_SIZE, MADV.MADV_COLLAPSE);
          // A region with any PTE (even zero-page or cleared ones) has a table; a never-touched one has none.
          expect(ret).toBe(r && r.some((st) => st.kind !== 'none') ? 0 : -22);
          expect(isHuge(k, p, va)).toBe(ret === 0);
          if (ret === 0 && r) {
            const load = [0, 0];
            for (const st of r) if (st.kind === 'data') load[st.node]!++;
            const want = load[1]! > load[0]! ? 1 : 0; // first node with the most pages
            expect(k.phys.nodeOfPfn(followPage(p.mm, va))).toBe(want);
          }
        });
        expect(contents(k, p, a, regions.length)).toEqual(expected(regions));
        expect(verifyKernel(k)).toEqual([]);
      }),
      { numRuns: 150 },
    );
  });

  it('fails with ENOMEM when no huge page can be had even by compaction, and compacts when it can', () => {
    const k = smallKernel({ nodes: 1, mib: 64 });
    // 63 of the node's 64 MiB in use is below its boot-time min watermark (min_free_kbytes 3276 with THP on): Linux,
    // as memtwin, would reclaim and OOM-kill first. A small min_free_kbytes (128, calculate_min_free_kbytes's floor) lets the fixture fill it.
    k.sysfs.write('/proc/sys/vm/min_free_kbytes', '128');
    fragment(k, 63); // every 2M block of the node has a used page
    const p = k.createProcess('c');
    k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'never');
    const a = k.mmap(p, 0, 2 * PMD_SIZE, RW, ANON);
    const h = Math.ceil(a / PMD_SIZE) * PMD_SIZE;
    k.access(p.mainThread, h, PMD_SIZE, PAGE_SIZE, true, 3);
    const t0 = k.clock.now();
    expect(k.madvise(p, h, PMD_SIZE, MADV.MADV_COLLAPSE)).toBe(0);
    const s = k.vmstat.snapshot();
    expect(s.compact_stall).toBe(1);
    expect(s.thp_collapse_alloc).toBe(1);
    // the caller paid for compaction (migrations) and for the collapse itself
    expect(k.clock.now() - t0).toBeGreaterThan(k.costs.ns('madv_collapse_2m') + s.pgmigrate_success! * k.costs.ns('page_migrate_4k'));
    expect(contents(k, p, h, 1)).toEqual(new Array(512).fill(3));

    // A node with no free memory left at all: the allocation fails.
    const k2 = smallKernel({ nodes: 1, mib: 16 });
    const p2 = k2.createProcess('c');
    k2.oom.scoreAdj.set(p2.pid, -1000); // OOM_SCORE_ADJ_MIN: the OOM killer leaves it, so memory stays full
    k2.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'never');
    const b = k2.mmap(p2, 0, 16 * 2 ** 20, RW, ANON);
    k2.access(p2.mainThread, b, 16 * 2 ** 20, PAGE_SIZE, true, 4); // as much as fits
    const hb = Math.ceil(b / PMD_SIZE) * PMD_SIZE;
    expect(k2.madvise(p2, hb, PMD_SIZE, MADV.MADV_COLLAPSE)).toBe(-12);
    expect(k2.vmstat.snapshot().thp_collapse_alloc_failed).toBe(1);
    expect(verifyKernel(k2)).toEqual([]);
  });
});

describe('khugepaged', () => {
  it('collapses a region only within max_ptes_none, and never changes a byte', () => {
    fc.assert(
      fc.property(fc.array(region, { minLength: 1, maxLength: 3 }), fc.constantFrom(0, 64, 256, 511), (spec, maxNone) => {
        const regions = spec.map((r) => (r ? expand(r) : null));
        const k = smallKernel({ nodes: 2, mib: 64 });
        const { p, a } = build(k, regions);
        k.sysfs.write(`${KH}/max_ptes_none`, String(maxNone));
        k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'madvise'); // starts khugepaged
        k.madvise(p, a - PMD_SIZE, (regions.length + 2) * PMD_SIZE, MADV.MADV_HUGEPAGE); // joins its list
        expect(k.khugepaged.waitFullScans(2, 600e9)).toBe(true);
        regions.forEach((r, ri) => {
          const present = r ? r.filter((st) => st.kind === 'data').length : 0;
          const want = r !== null && r.some((st) => st.kind !== 'none') && present > 0 && HPAGE_PMD_NR - present <= maxNone;
          expect(isHuge(k, p, a + ri * PMD_SIZE)).toBe(want);
        });
        expect(contents(k, p, a, regions.length)).toEqual(expected(regions));
        expect(verifyKernel(k)).toEqual([]);
      }),
      { numRuns: 100 },
    );
  });

  it('scans pages_to_scan PTEs per pass, sleeps scan_sleep_millisecs between passes, and accounts its CPU time', () => {
    const k = smallKernel({ nodes: 1, mib: 64 });
    const { p, a } = build(
      k,
      Array.from({ length: 4 }, () => expand([[{ kind: 'data', fill: 9, node: 0 }, 512]])),
    );
    k.sysfs.write(`${KH}/pages_to_scan`, '512');
    k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'madvise');
    k.madvise(p, a, 4 * PMD_SIZE, MADV.MADV_HUGEPAGE);
    const t0 = k.clock.now();
    k.sysfs.write(`${KH}/scan_sleep_millisecs`, '10000'); // ends the current sleep: a pass now
    k.runDueEvents();
    const huge = (): number => [0, 1, 2, 3].filter((i) => isHuge(k, p, a + i * PMD_SIZE)).length;
    expect(huge()).toBe(1); // one region per pass: the budget is 512 PTEs
    k.events.runUntil(t0 + 10_000e6 + 5e6); // scan_sleep_millisecs = 10000
    expect(huge()).toBe(2);
    k.events.runUntil(t0 + 30_000e6 + 10e6);
    expect(huge()).toBe(4);
    expect(k.thp.khugepaged.pages_collapsed).toBe(4);
    const st = k.khugepaged.stats;
    expect(st.cpuNs).toBeCloseTo(st.scannedPtes * k.costs.ns('khugepaged_scan_per_pte') + 4 * k.costs.ns('madv_collapse_2m'), -1);
    expect(k.clock.now()).toBeLessThan(t0 + 31_000e6); // its work did not advance any task's time
  });

  it("a collapse's window follows khugepaged's CPU time: beside busy nice-0 tasks it waits for its CPU, and so does the window", () => {
    /** One region collapsed by a khugepaged pass with `hogs` busy tasks on every CPU: its window, from the pass's start. */
    const window = (hogs: number): { from: number; len: number } => {
      const k = smallKernel({ nodes: 1, mib: 64 });
      const { p, a } = build(k, [expand([[{ kind: 'data', fill: 9, node: 0 }, 512]])]);
      k.sysfs.write(`${KH}/pages_to_scan`, '512');
      k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'madvise');
      k.madvise(p, a, PMD_SIZE, MADV.MADV_HUGEPAGE);
      k.enableScheduler();
      for (const cpu of k.host.nodes[0]!.cpus) for (let h = 0; h < hogs; h++) k.spend({ name: `hog${cpu}.${h}`, cpus: [cpu] }, 10e9);
      const t0 = k.clock.now();
      k.sysfs.write(`${KH}/scan_sleep_millisecs`, '10000'); // a pass now
      k.runDueEvents();
      expect(isHuge(k, p, a)).toBe(true); // applied at once; threads see the window
      const w = p.mm.collapsing[0]!;
      k.events.runUntil(t0 + 5e9);
      return { from: w.unmapAt - t0, len: w.remapAt - w.unmapAt };
    };
    const alone = window(0);
    const busy = window(1);
    // Alone its pass starts at once; beside a nice-0 task on every CPU it waits for the running task's slice to end
    // (to the tick), and the PMD is not cleared before it runs. Once running, it keeps the CPU for its own slice, so
    // the copy takes as long as alone.
    expect(alone.from).toBeLessThan(0.1e6);
    expect(busy.from).toBeGreaterThan(alone.from + 1e6);
    expect(busy.len).toBeCloseTo(alone.len, 0);
  });

  it('with khugepaged/defrag=0 does not compact, and after a failed allocation sleeps alloc_sleep_millisecs', () => {
    const k = smallKernel({ nodes: 1, mib: 64 });
    // 63 of the node's 64 MiB in use is below its boot-time min watermark (min_free_kbytes 3276 with THP on): Linux,
    // as memtwin, would reclaim and OOM-kill first. A small min_free_kbytes (128, calculate_min_free_kbytes's floor) lets the fixture fill it.
    k.sysfs.write('/proc/sys/vm/min_free_kbytes', '128');
    fragment(k, 63);
    const { p, a } = build(k, [expand([[{ kind: 'data', fill: 5, node: 0 }, 512]])]);
    k.sysfs.write(`${KH}/defrag`, '0');
    k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'madvise');
    k.madvise(p, a, PMD_SIZE, MADV.MADV_HUGEPAGE);
    const t0 = k.clock.now();
    k.sysfs.write(`${KH}/scan_sleep_millisecs`, '10000');
    k.runDueEvents();
    let s = k.vmstat.snapshot();
    expect(s.thp_collapse_alloc_failed).toBe(1);
    expect(s.compact_stall).toBe(0);
    expect(k.khugepaged.stats.allocFailed).toBe(1);
    // The next attempt comes after alloc_sleep_millisecs (60 s), not scan_sleep_millisecs (10 s).
    k.events.runUntil(t0 + 59_000e6);
    expect(k.vmstat.snapshot().thp_collapse_alloc_failed).toBe(1);
    k.events.runUntil(t0 + 61_000e6);
    s = k.vmstat.snapshot();
    expect(s.thp_collapse_alloc_failed).toBe(2);
    // With defrag=1 the same collapse compacts and succeeds.
    k.sysfs.write(`${KH}/defrag`, '1');
    k.sysfs.write(`${KH}/scan_sleep_millisecs`, '10');
    k.khugepaged.waitFullScans(2, 600e9);
    expect(k.vmstat.snapshot().compact_stall).toBeGreaterThan(0);
    expect(isHuge(k, p, a)).toBe(true);
    expect(verifyKernel(k)).toEqual([]);
  });
});

describe('MADV_COLLAPSE allocation proposals (features, off by default)', () => {
  const FEAT = '/sys/kernel/memtwin/features';
  const LIMITS = MADV_F_PROPOSED.MADV_F_COLLAPSE_LIMITS;
  const DEFRAG = MADV_F_PROPOSED.MADV_F_COLLAPSE_DEFRAG;

  /** A 16 MiB node fragmented so that no free 2M block is left, and one 4K-mapped 2M region written with 3. */
  function fragmented(opts: { madvised?: boolean } = {}): { k: Kernel; p: Process; h: number } {
    const k = smallKernel({ nodes: 1, mib: 16 });
    fragment(k, 15);
    const p = k.createProcess('c');
    k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'never');
    const a = k.mmap(p, 0, 2 * PMD_SIZE, RW, ANON);
    const h = Math.ceil(a / PMD_SIZE) * PMD_SIZE;
    if (opts.madvised) k.madvise(p, a, 2 * PMD_SIZE, MADV.MADV_HUGEPAGE);
    k.access(p.mainThread, h, PMD_SIZE, PAGE_SIZE, true, 3);
    return { k, p, h };
  }
  const pm = (k: Kernel, p: Process, h: number, flags: number): number =>
    k.processMadvise(p, p, [[h, PMD_SIZE]], MADV.MADV_COLLAPSE, flags);

  it('exist under /sys/kernel/memtwin/features, 0 by default, and take only 0 or 1', () => {
    const k = smallKernel({ nodes: 1, mib: 16 });
    for (const name of ['madv-collapse-vma-gfp', 'madv-collapse-khugepaged-defrag', 'madv-collapse-flags']) {
      expect(k.sysfs.read(`${FEAT}/${name}`)).toBe('0');
      expect(k.sysfs.write(`${FEAT}/${name}`, '2')).toBe(-22);
      expect(k.sysfs.write(`${FEAT}/${name}`, '1')).toBe(0);
    }
  });

  it('default: the merged rule compacts whatever the defrag settings say', () => {
    const { k, p, h } = fragmented();
    k.sysfs.write('/sys/kernel/mm/transparent_hugepage/defrag', 'never');
    k.sysfs.write(`${KH}/defrag`, '0');
    expect(k.madvise(p, h, PMD_SIZE, MADV.MADV_COLLAPSE)).toBe(0);
    expect(k.vmstat.snapshot().compact_stall).toBe(1);
    expect(isHuge(k, p, h)).toBe(true);
  });

  it('madv-collapse-vma-gfp: compacts only when a fault in the VMA would (defrag mode and VM_HUGEPAGE)', () => {
    for (const [defrag, madvised, ok] of [
      ['madvise', false, false],
      ['madvise', true, true],
      ['always', false, true],
      ['defer', true, false],
      ['never', true, false],
    ] as const) {
      const { k, p, h } = fragmented({ madvised });
      k.sysfs.write(`${FEAT}/madv-collapse-vma-gfp`, '1');
      k.sysfs.write('/sys/kernel/mm/transparent_hugepage/defrag', defrag);
      const t0 = k.clock.now();
      expect(k.madvise(p, h, PMD_SIZE, MADV.MADV_COLLAPSE)).toBe(ok ? 0 : -12);
      const s = k.vmstat.snapshot();
      expect(s.compact_stall).toBe(ok ? 1 : 0);
      expect(s.thp_collapse_alloc_failed).toBe(ok ? 0 : 1);
      expect(isHuge(k, p, h)).toBe(ok);
      // the failed call returns at once: no compaction, no copy
      if (!ok) expect(k.clock.now() - t0).toBeLessThan(k.costs.ns('madv_collapse_2m'));
      if (defrag === 'defer') {
        k.events.runUntil(k.clock.now() + 1e9);
        expect(k.vmstat.snapshot().compact_daemon_wake).toBe(1); // kcompactd woken instead
      }
      expect(contents(k, p, h, 1)).toEqual(new Array(512).fill(3));
    }
  });

  it('madv-collapse-khugepaged-defrag: compacts only with khugepaged/defrag=1', () => {
    for (const defrag of [0, 1]) {
      const { k, p, h } = fragmented();
      k.sysfs.write(`${FEAT}/madv-collapse-khugepaged-defrag`, '1');
      k.sysfs.write(`${KH}/defrag`, String(defrag));
      expect(k.madvise(p, h, PMD_SIZE, MADV.MADV_COLLAPSE)).toBe(defrag ? 0 : -12);
      expect(k.vmstat.snapshot().compact_stall).toBe(defrag);
    }
  });

  it('madv-collapse-flags: process_madvise flags choose; madvise(2) keeps the merged rule; bad flags are EINVAL', () => {
    const { k, p, h } = fragmented();
    expect(pm(k, p, h, DEFRAG)).toBe(-22); // feature off: Linux 6.18 has no flag
    k.sysfs.write(`${FEAT}/madv-collapse-flags`, '1');
    expect(pm(k, p, h, 4)).toBe(-22); // a bit the proposal does not define
    expect(k.processMadvise(p, p, [[h, PMD_SIZE]], MADV.MADV_COLD, DEFRAG)).toBe(-22); // MADV_COLLAPSE only
    expect(pm(k, p, h, 0)).toBe(-12); // no MADV_F_COLLAPSE_DEFRAG: GFP_TRANSHUGE_LIGHT, fails at once
    expect(k.vmstat.snapshot().compact_stall).toBe(0);
    expect(pm(k, p, h, DEFRAG)).toBe(PMD_SIZE);
    expect(k.vmstat.snapshot().compact_stall).toBe(1);
    expect(isHuge(k, p, h)).toBe(true);
    const second = fragmented();
    second.k.sysfs.write(`${FEAT}/madv-collapse-flags`, '1');
    expect(second.k.madvise(second.p, second.h, PMD_SIZE, MADV.MADV_COLLAPSE)).toBe(0);
  });

  it('MADV_F_COLLAPSE_LIMITS honours max_ptes_none (EBUSY, the walk stops) and max_ptes_shared (EINVAL)', () => {
    const k = smallKernel({ nodes: 1, mib: 64 });
    k.sysfs.write(`${FEAT}/madv-collapse-flags`, '1');
    k.sysfs.write(`${KH}/max_ptes_none`, '256');
    const regions: PageState[][] = [
      expand([[{ kind: 'data', fill: 7, node: 0 }, 200]]), // 312 none: over the limit
      expand([[{ kind: 'data', fill: 8, node: 0 }, 400]]), // 112 none: within
    ];
    const { p, a } = build(k, regions);
    expect(pm(k, p, a, LIMITS | DEFRAG)).toBe(-16);
    expect(k.vmstat.snapshot().thp_scan_exceed_none_pte).toBe(1);
    expect(k.processMadvise(p, p, [[a, 2 * PMD_SIZE]], MADV.MADV_COLLAPSE, LIMITS | DEFRAG)).toBe(-16); // stops at the first
    expect(isHuge(k, p, a + PMD_SIZE)).toBe(false);
    expect(pm(k, p, a + PMD_SIZE, LIMITS | DEFRAG)).toBe(PMD_SIZE);
    expect(pm(k, p, a, DEFRAG)).toBe(PMD_SIZE); // without the flag the limit does not apply
    expect(contents(k, p, a, 2)).toEqual(expected(regions));

    // A region a fork shares: over max_ptes_shared, EINVAL (madvise_collapse_errno's default).
    const k2 = smallKernel({ nodes: 1, mib: 64 });
    k2.sysfs.write(`${FEAT}/madv-collapse-flags`, '1');
    k2.sysfs.write(`${KH}/max_ptes_shared`, '0');
    const b = build(k2, [expand([[{ kind: 'data', fill: 9, node: 0 }, 512]])]);
    expect(sysFork(k2, b.p.mainThread, 'child')).not.toBeTypeOf('number');
    expect(pm(k2, b.p, b.a, LIMITS | DEFRAG)).toBe(-22);
    expect(pm(k2, b.p, b.a, DEFRAG)).toBe(PMD_SIZE);
    expect(verifyKernel(k2)).toEqual([]);
  });

  it('under memory pressure the merged rule reclaims to swap so compaction has room; the light rule fails without reclaim', () => {
    const run = (light: boolean): { ret: number; s: Record<string, number> } => {
      const k = smallKernel({ nodes: 1, mib: 16 });
      expect(sysSwapon(k, { path: '/swapfile', size: 16 * 2 ** 20, kind: 'file', prio: 32767 })).toBe(0);
      k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'never');
      k.sysfs.write(`${FEAT}/madv-collapse-flags`, '1');
      const f = fragment(k, 12); // half of it freed again: scattered holes
      // fill the holes but for the region's pages and 256 more: free memory is then below what compaction needs
      // (compact_gap: 1024 pages), and the region is the youngest memory
      const hog = k.createProcess('hog');
      const hl = (k.phys.zones[0]!.freePages - 512 - 256) * PAGE_SIZE;
      const ha = k.mmap(hog, 0, hl, RW, ANON);
      k.madvise(hog, ha, hl, MADV.MADV_NOHUGEPAGE);
      k.access(hog.mainThread, ha, hl, PAGE_SIZE, true, 5);
      expect(f.len).toBeGreaterThan(0);
      const p = k.createProcess('c');
      const a = k.mmap(p, 0, 2 * PMD_SIZE, RW, ANON);
      const h = Math.ceil(a / PMD_SIZE) * PMD_SIZE;
      k.access(p.mainThread, h, PMD_SIZE, PAGE_SIZE, true, 3);
      const ret = pm(k, p, h, light ? 0 : DEFRAG);
      expect(contents(k, p, h, 1)).toEqual(new Array(512).fill(3));
      expect(verifyKernel(k)).toEqual([]);
      return { ret, s: k.vmstat.snapshot() as Record<string, number> };
    };
    const merged = run(false);
    expect(merged.ret).toBe(PMD_SIZE);
    expect(merged.s.allocstall_normal).toBeGreaterThan(0);
    expect(merged.s.pgscan_direct).toBeGreaterThan(0);
    expect(merged.s.pswpout).toBeGreaterThan(0);
    expect(merged.s.compact_stall).toBeGreaterThan(0);
    const light = run(true);
    expect(light.ret).toBe(-12);
    expect(light.s.allocstall_normal ?? 0).toBe(0);
    expect(light.s.compact_stall ?? 0).toBe(0);
  });

  it('every variant conserves pages and contents: no frame owned twice (verifyKernel), no byte changed', () => {
    const rule = fc.constantFrom(
      { feat: null, flags: null },
      { feat: 'madv-collapse-vma-gfp', flags: null },
      { feat: 'madv-collapse-khugepaged-defrag', flags: null },
      { feat: 'madv-collapse-flags', flags: 0 },
      { feat: 'madv-collapse-flags', flags: LIMITS },
      { feat: 'madv-collapse-flags', flags: DEFRAG },
      { feat: 'madv-collapse-flags', flags: LIMITS | DEFRAG },
    );
    fc.assert(
      fc.property(
        fc.array(region, { minLength: 1, maxLength: 3 }),
        rule,
        fc.boolean(),
        fc.constantFrom(0, 1),
        fc.constantFrom('always', 'madvise', 'never'),
        (spec, r, frag, khDefrag, defrag) => {
          const regions = spec.map((x) => (x ? expand(x) : null));
          const k = smallKernel({ nodes: 2, mib: 16 });
          if (frag) fragment(k, 12);
          if (r.feat) k.sysfs.write(`${FEAT}/${r.feat}`, '1');
          k.sysfs.write(`${KH}/defrag`, String(khDefrag));
          k.sysfs.write(`${KH}/max_ptes_none`, '128');
          k.sysfs.write('/sys/kernel/mm/transparent_hugepage/defrag', defrag);
          const { p, a } = build(k, regions);
          const len = regions.length * PMD_SIZE;
          const ret =
            r.flags === null ? k.madvise(p, a, len, MADV.MADV_COLLAPSE) : k.processMadvise(p, p, [[a, len]], MADV.MADV_COLLAPSE, r.flags);
          expect(ret === 0 || ret === len || [-12, -16, -22].includes(ret)).toBe(true);
          expect(contents(k, p, a, regions.length)).toEqual(expected(regions));
          expect(verifyKernel(k)).toEqual([]);
        },
      ),
      { numRuns: 60 },
    );
  });
});
