/**
 * Range operations over sparse address ranges skip the page-table slots
 * nothing uses (PageTable.skipNone, as mm/pagewalk.c skips pgd_none,
 * pud_none and pmd_none) and must give exactly what a walk over every
 * page gives. Two identical kernels run the same random steps over sparse
 * mappings that cross 1G and 512G boundaries, one walking every page
 * (pagewalk.skipNone off, as memtwin walked before), and must agree on
 * every result and on the whole state after each step. A 1 TiB mapping
 * holding a handful of pages checks the results against what is known to
 * be there.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { smallKernel } from '../testing/fixtures.ts';
import type { Kernel } from './kernel.ts';
import type { Process } from './sched.ts';
import { verifyKernel } from './debug_vm.ts';
import { pagewalk, PGDIR_SIZE } from './mm_types.ts';
import { sysMbind, sysMigratePages } from './mempolicy.ts';
import { numaMaps, pagemap, renderBuddyinfo, renderMeminfo, renderNumaMaps, renderSmaps, smaps } from './procfs.ts';
import { MADV, MAP, MPOL, PAGE_SIZE, PMD_SIZE, PROT, PUD_SIZE, UFFD_API, UFFDIO_MODE, UFFDIO_REGISTER_MODE } from './uapi.ts';
import { uffdioApi, uffdioRegister, uffdioWriteprotect } from './userfaultfd.ts';

const RW = PROT.PROT_READ | PROT.PROT_WRITE;
const M2 = PMD_SIZE;

/**
 * The mappings: private anonymous across a 1G boundary and the 512G one
 * (its last 512 MiB registered with userfaultfd for write protection),
 * shared anonymous across a 1G boundary, 2M hugetlb.
 */
const MAPS = {
  anon: { start: PGDIR_SIZE - 1.25 * PUD_SIZE, len: 2 * PUD_SIZE, flags: MAP.MAP_PRIVATE | MAP.MAP_ANONYMOUS | MAP.MAP_NORESERVE },
  shmem: { start: PGDIR_SIZE + 3.75 * PUD_SIZE, len: 0.5 * PUD_SIZE, flags: MAP.MAP_SHARED | MAP.MAP_ANONYMOUS | MAP.MAP_NORESERVE },
  huge: {
    start: PGDIR_SIZE + 5 * PUD_SIZE,
    len: 32 * M2,
    flags: MAP.MAP_PRIVATE | MAP.MAP_ANONYMOUS | MAP.MAP_HUGETLB | MAP.MAP_NORESERVE,
  },
} as const;
type MapName = keyof typeof MAPS;
const WP_START = PGDIR_SIZE + 0.25 * PUD_SIZE;
const NAMES = Object.keys(MAPS) as MapName[];

interface World {
  k: Kernel;
  p: Process;
  uffd: number;
}

function world(): World {
  const k = smallKernel({ nodes: 2, mib: 128 });
  k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'madvise');
  k.hugetlb.setNrHugepages(k.hugetlb.bySize(M2)!, 12);
  const p = k.createProcess('t', 0);
  for (const n of NAMES) {
    const m = MAPS[n];
    if (k.mmap(p, m.start, m.len, RW, m.flags | MAP.MAP_FIXED) !== m.start) throw new Error(`mmap ${n}`);
  }
  const uffd = k.uffd.create(p, 0);
  uffdioApi(k, p, uffd, UFFD_API, 0);
  const wp = uffdioRegister(k, uffd, WP_START, MAPS.anon.start + MAPS.anon.len - WP_START, UFFDIO_REGISTER_MODE.UFFDIO_REGISTER_MODE_WP);
  if (wp.ret !== 0) throw new Error('uffd register');
  return { k, p, uffd };
}

type Step =
  | { k: 'touch'; m: MapName; at: At; pages: number; stride: number; write: boolean; cpu: number }
  | { k: 'migrate'; from: number }
  | { k: 'mbind'; m: MapName; at: At; len: number; node: number }
  | { k: 'madvise'; m: MapName; at: At; len: number; advice: number }
  | { k: 'mprotect'; m: MapName; at: At; len: number; prot: number }
  | { k: 'munmap'; m: MapName; at: At; len: number }
  | { k: 'wp'; at: At; len: number; on: boolean };

const mapArb = fc.constantFrom<MapName>(...NAMES);
/**
 * A position in a mapping: a fraction of it (so every mapping can use it),
 * or a landmark where walks skip to: a 1G or 2M boundary inside it, or the
 * page before one.
 */
type At = number | { unit: number; i: number; before: boolean };
const at: fc.Arbitrary<At> = fc.oneof(
  fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true }),
  fc.record({ unit: fc.constantFrom(PUD_SIZE, PMD_SIZE), i: fc.nat(), before: fc.boolean() }),
);
/** A length as a fraction of the mapping: often small, often most of it (the sparse walks). */
const len = fc.oneof(fc.double({ min: 0, max: 0.01, noNaN: true }), fc.double({ min: 0, max: 1, noNaN: true }));
const stepArb: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      k: fc.constant('touch' as const),
      m: mapArb,
      at,
      pages: fc.integer({ min: 1, max: 40 }),
      stride: fc.constantFrom(1, 7, 512),
      write: fc.boolean(),
      cpu: fc.constantFrom(0, 2),
    }),
  },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('migrate' as const), from: fc.constantFrom(0, 1) }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('mbind' as const), m: mapArb, at, len, node: fc.constantFrom(0, 1) }) },
  {
    weight: 3,
    arbitrary: fc.record({
      k: fc.constant('madvise' as const),
      m: mapArb,
      at,
      len,
      advice: fc.constantFrom(
        MADV.MADV_DONTNEED,
        MADV.MADV_FREE,
        MADV.MADV_PAGEOUT,
        MADV.MADV_COLD,
        MADV.MADV_COLLAPSE,
        MADV.MADV_HUGEPAGE,
        MADV.MADV_REMOVE,
      ),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ k: fc.constant('mprotect' as const), m: mapArb, at, len, prot: fc.constantFrom(PROT.PROT_READ, RW) }),
  },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('munmap' as const), m: mapArb, at, len }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('wp' as const), at, len, on: fc.boolean() }) },
);

/** [start, end) of a step's range, in whole pages (hugetlb: whole huge pages) inside its mapping. */
function rangeOf(m: MapName, pos: At, fLen: number): [number, number] {
  const { start, len: size } = MAPS[m];
  const unit = m === 'huge' ? M2 : PAGE_SIZE;
  const n = size / unit;
  let s: number;
  if (typeof pos === 'number') s = Math.min(n - 1, Math.floor(pos * n));
  else {
    const first = Math.ceil(start / pos.unit) * pos.unit;
    const count = Math.max(1, Math.floor((start + size - first) / pos.unit));
    const va = Math.max(start, first + (pos.i % count) * pos.unit - (pos.before ? PAGE_SIZE : 0));
    s = Math.min(n - 1, Math.floor((va - start) / unit));
  }
  const e = Math.min(n, s + Math.max(1, Math.round(fLen * n)));
  return [start + s * unit, start + e * unit];
}

/** Run one step; its results (or what it threw, such as an advice not modelled for shmem), as text. */
function run(w: World, s: Step): string {
  try {
    return runStep(w, s);
  } catch (e) {
    return String(e);
  }
}

function runStep({ k, p, uffd }: World, s: Step): string {
  const out: unknown[] = [];
  switch (s.k) {
    case 'touch': {
      const [a] = rangeOf(s.m, s.at, 0);
      const end = Math.min(MAPS[s.m].start + MAPS[s.m].len, a + s.pages * s.stride * PAGE_SIZE);
      const t = s.cpu === 0 ? p.mainThread : (p.threads.find((x) => x.cpu === 2) ?? k.createThread(p, 2));
      if (typeof t === 'number') throw new Error('thread');
      out.push(k.access(t, a, end - a, s.stride * PAGE_SIZE, s.write, 0x40 + s.pages));
      break;
    }
    case 'migrate':
      out.push(sysMigratePages(k, p, p, [s.from], [1 - s.from]));
      break;
    case 'mbind': {
      const [a, e] = rangeOf(s.m, s.at, s.len);
      out.push(sysMbind(k, p.mainThread, a, e - a, MPOL.MPOL_BIND, [s.node], MPOL.MPOL_MF_MOVE));
      break;
    }
    case 'madvise': {
      const [a, e] = rangeOf(s.m, s.at, s.len);
      out.push(k.madvise(p, a, e - a, s.advice));
      break;
    }
    case 'mprotect': {
      const [a, e] = rangeOf(s.m, s.at, s.len);
      out.push(k.mprotect(p, a, e - a, s.prot));
      break;
    }
    case 'munmap': {
      const [a, e] = rangeOf(s.m, s.at, s.len);
      out.push(k.munmap(p, a, e - a));
      break;
    }
    case 'wp': {
      const [a0, e] = rangeOf('anon', s.at, s.len);
      const a = Math.max(WP_START, a0);
      if (a >= e) break;
      out.push(uffdioWriteprotect(k, uffd, a, e - a, s.on ? UFFDIO_MODE.UFFDIO_WRITEPROTECT_MODE_WP : 0));
      break;
    }
  }
  return JSON.stringify(out);
}

/** Everything the steps can change, as /proc and the op-script observation ops show it. */
function state({ k, p }: World): string {
  const mm = p.mm;
  return JSON.stringify({
    vmas: mm.vmas.map((v) => [v.start, v.end, v.flags, v.pgoff, v.anonVma]),
    pagemap: NAMES.map((n) => pagemap(k, mm, MAPS[n].start, MAPS[n].len)),
    smaps: renderSmaps(k, mm),
    numaMaps: renderNumaMaps(k, mm),
    meminfo: renderMeminfo(k),
    buddyinfo: renderBuddyinfo(k),
    vmstat: k.vmstat.snapshot(),
    rss: [mm.rssAnon, mm.rssShmem, mm.pgtablesBytes, mm.uffdWp.size],
    pmds: [...mm.pgtable.pmds.keys()].sort((a, b) => a - b),
    clock: k.clock.now(),
  });
}

/** Run f with every page walk looking at every page. */
function walkingEveryPage<T>(f: () => T): T {
  pagewalk.skipNone = false;
  try {
    return f();
  } finally {
    pagewalk.skipNone = true;
  }
}

describe('page walks over sparse ranges', () => {
  it('skipping unused page-table slots changes no result and no state', () => {
    fc.assert(
      fc.property(fc.array(stepArb, { minLength: 1, maxLength: 24, size: 'max' }), (steps) => {
        const fast = world();
        const full = walkingEveryPage(() => world());
        for (const [i, s] of steps.entries()) {
          const at = `step ${i}: ${JSON.stringify(s)}`;
          const want = walkingEveryPage(() => run(full, s));
          expect(run(fast, s), at).toBe(want);
          expect(state(fast), at).toBe(walkingEveryPage(() => state(full)));
        }
        expect(verifyKernel(fast.k)).toEqual([]);
      }),
      { numRuns: 40 },
    );
  });

  it('MADV_COLLAPSE goes past 1G ranges without a PMD table and stops at the first empty PMD of one with a table', () => {
    const collapse = (): { ret: number; map: ReturnType<typeof pagemap> } => {
      const k = smallKernel({ nodes: 1, mib: 64 });
      k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'never');
      const p = k.createProcess('t', 0);
      const a = k.mmap(p, 4 * PUD_SIZE, 4 * PUD_SIZE, RW, MAP.MAP_PRIVATE | MAP.MAP_ANONYMOUS | MAP.MAP_NORESERVE | MAP.MAP_FIXED);
      for (const off of [2 * PUD_SIZE, 2 * PUD_SIZE + 100 * PAGE_SIZE, 3 * PUD_SIZE])
        k.access(p.mainThread, a + off, 1, PAGE_SIZE, true, 9);
      const ret = k.madvise(p, a, 4 * PUD_SIZE, MADV.MADV_COLLAPSE);
      return { ret, map: pagemap(k, p.mm, a + 2 * PUD_SIZE, 2 * PUD_SIZE) };
    };
    // The first 2G: SCAN_PMD_NULL, skipped; the region at 2G collapses; the one after it is pmd_none: EINVAL.
    const got = collapse();
    expect(got.ret).toBe(-22);
    expect(got.map.slice(0, 2)).toEqual([
      { n: 512, present: true, node: 0, size: '2M' },
      { n: PUD_SIZE / PAGE_SIZE - 512, present: false, node: null, size: null },
    ]);
    expect(got).toEqual(walkingEveryPage(collapse));
  });

  it('over a 1 TiB mapping holding a few pages, every range operation finds exactly those pages', () => {
    const k = smallKernel({ nodes: 2, mib: 64 });
    k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'never');
    const p = k.createProcess('t', 0);
    const len = 1024 * PUD_SIZE;
    const a = k.mmap(p, PGDIR_SIZE / 2, len, RW, MAP.MAP_PRIVATE | MAP.MAP_ANONYMOUS | MAP.MAP_NORESERVE | MAP.MAP_FIXED);
    expect(a).toBe(PGDIR_SIZE / 2);
    // Pages on both sides of the 512G boundary (PGD slots 0 and 1, then 2), at 1G and 2M boundaries, and at the ends.
    const offsets = [
      0,
      PUD_SIZE - PAGE_SIZE,
      PGDIR_SIZE / 2 - PAGE_SIZE,
      PGDIR_SIZE / 2,
      PGDIR_SIZE / 2 + 5 * M2 + 3 * PAGE_SIZE,
      len - PAGE_SIZE,
    ];
    for (const off of offsets) expect(k.access(p.mainThread, a + off, 1, PAGE_SIZE, true, 0x33).signal).toBeUndefined();
    const n = offsets.length;
    /** pagemap over the whole mapping: the pages present on `node`, nothing else. */
    const expected = (node: number): { n: number; present: boolean; node: number | null; size: string | null }[] => {
      const runs: { n: number; present: boolean; node: number | null; size: string | null }[] = [];
      const push = (pages: number, present: boolean): void => {
        const last = runs.at(-1);
        if (last && last.present === present) last.n += pages;
        else if (pages > 0) runs.push(present ? { n: pages, present, node, size: '4K' } : { n: pages, present, node: null, size: null });
      };
      let prev = 0;
      for (const off of offsets) {
        push((off - prev) / PAGE_SIZE, false);
        push(1, true);
        prev = off + PAGE_SIZE;
      }
      push((len - prev) / PAGE_SIZE, false);
      return runs;
    };
    expect(pagemap(k, p.mm, a, len)).toEqual(expected(0));
    expect(smaps(k, p.mm, a)!.Rss).toBe(n * 4);
    // migrate_pages moves exactly the pages there are.
    expect(sysMigratePages(k, p, p, [0], [1])).toBe(0);
    expect(k.vmstat.events.pgmigrate_success).toBe(n);
    expect(pagemap(k, p.mm, a, len)).toEqual(expected(1));
    expect(numaMaps(k, p.mm, a)!.nodes).toEqual({ 1: n });
    // mbind with MPOL_MF_MOVE brings them back.
    expect(sysMbind(k, p.mainThread, a, len, MPOL.MPOL_BIND, [0], MPOL.MPOL_MF_MOVE)).toBe(0);
    expect(k.vmstat.events.pgmigrate_success).toBe(2 * n);
    expect(pagemap(k, p.mm, a, len)).toEqual(expected(0));
    // MADV_COLD and MADV_PAGEOUT find no THP to split; MADV_FREE marks each page lazily freeable.
    expect(k.madvise(p, a, len, MADV.MADV_COLD)).toBe(0);
    expect(k.madvise(p, a, len, MADV.MADV_PAGEOUT)).toBe(0);
    expect(k.madvise(p, a, len, MADV.MADV_FREE)).toBe(0);
    expect(pagemap(k, p.mm, a, len)).toEqual(expected(0));
    // mprotect splits nothing it does not have to, and the pages keep their contents.
    expect(k.mprotect(p, a + PGDIR_SIZE / 2, len / 2, PROT.PROT_READ)).toBe(0);
    const bytes: number[] = [];
    k.access(p.mainThread, a + offsets[3]!, 1, PAGE_SIZE, false, 0, (_va, b) => bytes.push(b));
    expect(bytes).toEqual([0x33]);
    // MADV_DONTNEED over all of it empties it, PTE tables included.
    expect(k.madvise(p, a, len, MADV.MADV_DONTNEED)).toBe(0);
    expect(p.mm.rssAnon).toBe(0);
    expect(pagemap(k, p.mm, a, len)).toEqual([{ n: len / PAGE_SIZE, present: false, node: null, size: null }]);
    for (const off of [offsets[0]!, offsets[4]!]) k.access(p.mainThread, a + off, 1, PAGE_SIZE, false, 0);
    // munmap of all of it frees the PTE tables of what was touched since.
    expect(k.munmap(p, a, len)).toBe(0);
    expect(p.mm.pgtablesBytes).toBe(0);
    expect(p.mm.pgtable.pmds.size).toBe(0);
    expect(verifyKernel(k)).toEqual([]);
  });
});
