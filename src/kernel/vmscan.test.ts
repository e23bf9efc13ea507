import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { smallKernel, RW, ANON, SHARED_ANON } from '../testing/fixtures.ts';
import { verifyKernel } from './debug_vm.ts';
import { pagemap, renderMeminfo } from './procfs.ts';
import { sysSwapon, renderSwaps } from './swapfile.ts';
import { MADV, PAGE_SIZE, PMD_SIZE } from './uapi.ts';
import type { Kernel } from './kernel.ts';
import type { Process } from './sched.ts';
import { DEF_PRIORITY, MAX_SWAPPINESS, folioReferenced, getScanCount, tryToFreePages, type ScanControl } from './vmscan.ts';
import { followPage } from './memory.ts';
import { LRU_ACTIVE_ANON, LRU_ACTIVE_FILE, LRU_INACTIVE_ANON, LRU_INACTIVE_FILE, Lruvec, folioActivate, folioNrPages } from './swap.ts';
import { PG } from './page.ts';
import { sysFork } from './fork.ts';
import { sysOpen } from './filemap.ts';
import { MAP, PROT } from './uapi.ts';
import { MIGRATE_MOVABLE } from './page_alloc.ts';

const MiB = 1 << 20;

function setup(opts: { swap?: number; thp?: string } = {}): { k: Kernel; p: Process } {
  const k = smallKernel({ nodes: 1, mib: 64 });
  k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', opts.thp ?? 'never');
  if (opts.swap !== 0) expect(sysSwapon(k, { path: '/swapfile', size: opts.swap ?? 16 * MiB, kind: 'file', prio: 32767 })).toBe(0);
  return { k, p: k.createProcess('t') };
}

/** First byte of each page of [a, a + n pages). */
function peek(k: Kernel, p: Process, a: number, n: number): number[] {
  const out: number[] = [];
  const r = k.access(p.mainThread, a, n * PAGE_SIZE, PAGE_SIZE, false, 0, (_va, b) => out.push(b));
  expect(r.signal).toBeUndefined();
  return out;
}

function write(k: Kernel, p: Process, a: number, n: number, fill: (i: number) => number): void {
  for (let i = 0; i < n; i++) k.access(p.mainThread, a + i * PAGE_SIZE, 1, PAGE_SIZE, true, fill(i));
}

const ev = (k: Kernel): Record<string, number> => ({ ...k.vmstat.events });

describe('MADV_PAGEOUT with a swap file (vmscan.ts, swap_state.ts)', () => {
  it('swaps written pages out: pagemap swapped, pswpout, the pages wait in the swap cache; a read maps them back (minor faults)', () => {
    const { k, p } = setup();
    const a = k.mmap(p, 0, 64 * PAGE_SIZE, RW, ANON);
    write(k, p, a, 64, (i) => 1 + i);
    const before = ev(k);
    expect(k.madvise(p, a, 64 * PAGE_SIZE, MADV.MADV_PAGEOUT)).toBe(0);
    expect(pagemap(k, p.mm, a, 64 * PAGE_SIZE)).toEqual([{ n: 64, present: false, node: null, size: null, swapped: true }]);
    expect(k.vmstat.events.pswpout - before.pswpout!).toBe(64);
    expect(p.mm.swapents).toBe(64);
    expect(p.mm.rssAnon).toBe(0);
    // A swap file's writes are asynchronous: the pages stay in the swap cache until reclaim comes back.
    expect(k.swapCachePages).toBe(64);
    expect(renderMeminfo(k)).toMatch(/SwapCached:\s+256 kB/);
    expect(renderMeminfo(k)).toMatch(/SwapFree:\s+16124 kB/); // 4095 usable slots less 64
    expect(verifyKernel(k)).toEqual([]);
    expect(peek(k, p, a, 64)).toEqual(Array.from({ length: 64 }, (_, i) => 1 + i));
    expect(k.vmstat.events.pgmajfault).toBe(before.pgmajfault);
    expect(k.vmstat.events.pswpin).toBe(before.pswpin);
    expect(pagemap(k, p.mm, a, 64 * PAGE_SIZE)).toEqual([{ n: 64, present: true, node: 0, size: '4K' }]);
    // Read faults keep the slots (the pages are clean copies of them).
    expect(k.swap.nrSwapPages).toBe(4095 - 64);
    expect(verifyKernel(k)).toEqual([]);
  });

  it('frees a clean swap-cache page at once on the next pageout, and a major fault reads it back with cluster readahead', () => {
    const { k, p } = setup();
    const a = k.mmap(p, 0, 32 * PAGE_SIZE, RW, ANON);
    write(k, p, a, 32, (i) => 100 + i);
    k.madvise(p, a, 32 * PAGE_SIZE, MADV.MADV_PAGEOUT);
    peek(k, p, a, 32); // back from the swap cache, clean
    const free0 = k.phys.freePages();
    const before = ev(k);
    k.madvise(p, a, 32 * PAGE_SIZE, MADV.MADV_PAGEOUT);
    expect(k.vmstat.events.pswpout).toBe(before.pswpout); // nothing written again
    expect(k.phys.freePages() - free0).toBe(32);
    expect(k.swapCachePages).toBe(0);
    expect(verifyKernel(k)).toEqual([]);
    // One page: its fault reads the aligned block of 2^page_cluster = 8 slots around it (slot 0 is the header).
    expect(peek(k, p, a + 9 * PAGE_SIZE, 1)).toEqual([109]);
    expect(k.vmstat.events.pgmajfault - before.pgmajfault!).toBe(1);
    expect(k.vmstat.events.pswpin - before.pswpin!).toBe(8);
    expect(k.vmstat.events.swap_ra - before.swap_ra!).toBe(7);
    expect(k.swapCachePages).toBe(8);
    // The pages read ahead are in the swap cache, not mapped: pagemap still says swapped.
    expect(pagemap(k, p.mm, a + 8 * PAGE_SIZE, PAGE_SIZE)[0]!.swapped).toBe(true);
    expect(peek(k, p, a, 32)).toEqual(Array.from({ length: 32 }, (_, i) => 100 + i));
    expect(k.vmstat.events.swap_ra_hit - before.swap_ra_hit!).toBeGreaterThan(0);
    expect(verifyKernel(k)).toEqual([]);
  });

  it('readahead off (page-cluster 0) reads one page per fault', () => {
    const { k, p } = setup();
    k.sysfs.write('/proc/sys/vm/page-cluster', '0');
    const a = k.mmap(p, 0, 16 * PAGE_SIZE, RW, ANON);
    write(k, p, a, 16, (i) => 7 + i);
    k.madvise(p, a, 16 * PAGE_SIZE, MADV.MADV_PAGEOUT);
    peek(k, p, a, 16);
    k.madvise(p, a, 16 * PAGE_SIZE, MADV.MADV_PAGEOUT);
    const before = ev(k);
    const t0 = k.clock.now();
    expect(peek(k, p, a, 16)).toEqual(Array.from({ length: 16 }, (_, i) => 7 + i));
    expect(k.vmstat.events.pgmajfault - before.pgmajfault!).toBe(16);
    expect(k.vmstat.events.swap_ra).toBe(before.swap_ra);
    // Each major fault waits for its read: swapin_4k each.
    expect(k.clock.now() - t0).toBeGreaterThanOrEqual(Math.floor(16 * k.costs.nsOf('swapin_4k')));
  });

  it('a zero-filled page is not written (swpout_zero) and is freed at once; it reads back as zeros (swpin_zero)', () => {
    const { k, p } = setup();
    const a = k.mmap(p, 0, 4 * PAGE_SIZE, RW, ANON);
    write(k, p, a, 4, () => 0);
    const before = ev(k);
    const free0 = k.phys.freePages();
    k.madvise(p, a, 4 * PAGE_SIZE, MADV.MADV_PAGEOUT);
    expect(k.vmstat.events.swpout_zero - before.swpout_zero!).toBe(4);
    expect(k.vmstat.events.pswpout).toBe(before.pswpout);
    expect(k.phys.freePages() - free0).toBe(4);
    expect(pagemap(k, p.mm, a, 4 * PAGE_SIZE)[0]).toMatchObject({ n: 4, swapped: true });
    expect(peek(k, p, a, 4)).toEqual([0, 0, 0, 0]);
    expect(k.vmstat.events.swpin_zero - before.swpin_zero!).toBeGreaterThan(0);
    expect(verifyKernel(k)).toEqual([]);
  });

  it('MADV_WILLNEED reads swapped pages into the swap cache without mapping them; the faults then find them there', () => {
    const { k, p } = setup();
    const a = k.mmap(p, 0, 16 * PAGE_SIZE, RW, ANON);
    write(k, p, a, 16, (i) => 40 + i);
    k.madvise(p, a, 16 * PAGE_SIZE, MADV.MADV_PAGEOUT);
    peek(k, p, a, 16);
    k.madvise(p, a, 16 * PAGE_SIZE, MADV.MADV_PAGEOUT); // only on swap now
    const before = ev(k);
    expect(k.madvise(p, a, 16 * PAGE_SIZE, MADV.MADV_WILLNEED)).toBe(0);
    expect(k.vmstat.events.pswpin - before.pswpin!).toBe(16);
    expect(k.swapCachePages).toBe(16);
    expect(pagemap(k, p.mm, a, 16 * PAGE_SIZE)[0]).toMatchObject({ n: 16, swapped: true });
    expect(peek(k, p, a, 16)).toEqual(Array.from({ length: 16 }, (_, i) => 40 + i));
    expect(k.vmstat.events.pgmajfault).toBe(before.pgmajfault);
    expect(verifyKernel(k)).toEqual([]);
  });

  it('a write fault takes the page out of the swap cache and frees its slot', () => {
    const { k, p } = setup();
    const a = k.mmap(p, 0, 8 * PAGE_SIZE, RW, ANON);
    write(k, p, a, 8, () => 5);
    k.madvise(p, a, 8 * PAGE_SIZE, MADV.MADV_PAGEOUT);
    expect(k.swap.nrSwapPages).toBe(4095 - 8);
    write(k, p, a, 8, () => 6);
    expect(k.swap.nrSwapPages).toBe(4095);
    expect(k.swapCachePages).toBe(0);
    expect(peek(k, p, a, 8)).toEqual(Array(8).fill(6));
    expect(verifyKernel(k)).toEqual([]);
  });

  it('munmap of swapped pages frees their slots and their swap cache pages', () => {
    const { k, p } = setup();
    const free0 = k.phys.freePages();
    const a = k.mmap(p, 0, 8 * PAGE_SIZE, RW, ANON);
    write(k, p, a, 8, () => 9);
    k.madvise(p, a, 8 * PAGE_SIZE, MADV.MADV_PAGEOUT);
    k.munmap(p, a, 8 * PAGE_SIZE);
    expect(k.swap.nrSwapPages).toBe(4095);
    expect(k.swapCachePages).toBe(0);
    expect(p.mm.swapents).toBe(0);
    expect(free0 - k.phys.freePages()).toBeLessThanOrEqual(1); // the PTE table may stay
    expect(verifyKernel(k)).toEqual([]);
  });

  it('without swap, anonymous pages stay; lazyfree (MADV_FREE) pages are discarded either way and read back as zeros', () => {
    const { k, p } = setup({ swap: 0 });
    const a = k.mmap(p, 0, 8 * PAGE_SIZE, RW, ANON);
    write(k, p, a, 8, (i) => 1 + i);
    k.madvise(p, a + 4 * PAGE_SIZE, 4 * PAGE_SIZE, MADV.MADV_FREE);
    const before = ev(k);
    k.madvise(p, a, 8 * PAGE_SIZE, MADV.MADV_PAGEOUT);
    expect(k.vmstat.events.pglazyfreed - before.pglazyfreed!).toBe(4);
    expect(pagemap(k, p.mm, a, 8 * PAGE_SIZE)).toEqual([
      { n: 4, present: true, node: 0, size: '4K' },
      { n: 4, present: false, node: null, size: null },
    ]);
    expect(peek(k, p, a, 8)).toEqual([1, 2, 3, 4, 0, 0, 0, 0]);
    expect(verifyKernel(k)).toEqual([]);
  });

  it('a lazyfree page written again is swap-backed again: PAGEOUT keeps it once, then swaps it', () => {
    const { k, p } = setup();
    const a = k.mmap(p, 0, 4 * PAGE_SIZE, RW, ANON);
    write(k, p, a, 4, (i) => 1 + i);
    const before = ev(k);
    k.madvise(p, a, 4 * PAGE_SIZE, MADV.MADV_FREE);
    k.madvise(p, a, 4 * PAGE_SIZE, MADV.MADV_FREE); // already lazyfree: not counted again
    expect(k.vmstat.events.pglazyfree - before.pglazyfree!).toBe(4);
    write(k, p, a, 1, () => 9);
    k.madvise(p, a, 4 * PAGE_SIZE, MADV.MADV_PAGEOUT);
    expect(k.vmstat.events.pglazyfreed - before.pglazyfreed!).toBe(3);
    expect(pagemap(k, p.mm, a, 4 * PAGE_SIZE)).toEqual([
      { n: 1, present: true, node: 0, size: '4K' },
      { n: 3, present: false, node: null, size: null },
    ]);
    k.madvise(p, a, PAGE_SIZE, MADV.MADV_PAGEOUT);
    expect(pagemap(k, p.mm, a, PAGE_SIZE)).toEqual([{ n: 1, present: false, node: null, size: null, swapped: true }]);
    expect(peek(k, p, a, 4)).toEqual([9, 0, 0, 0]);
    expect(verifyKernel(k)).toEqual([]);
  });

  it('MADV_FREE of swapped pages drops their entries: they read back as zeros', () => {
    const { k, p } = setup();
    const a = k.mmap(p, 0, 4 * PAGE_SIZE, RW, ANON);
    write(k, p, a, 4, () => 3);
    k.madvise(p, a, 4 * PAGE_SIZE, MADV.MADV_PAGEOUT);
    k.madvise(p, a, 4 * PAGE_SIZE, MADV.MADV_FREE);
    expect(k.swap.nrSwapPages).toBe(4095);
    expect(pagemap(k, p.mm, a, 4 * PAGE_SIZE)).toEqual([{ n: 4, present: false, node: null, size: null }]);
    expect(peek(k, p, a, 4)).toEqual([0, 0, 0, 0]);
    expect(verifyKernel(k)).toEqual([]);
  });

  it('splits a THP to swap it to a file (thp_swpout_fallback): written pages swapped, zero-filled ones on the zero page', () => {
    const { k, p } = setup({ thp: 'always' });
    const raw = k.mmap(p, 0, 2 * PMD_SIZE, RW, ANON);
    const a = Math.ceil(raw / PMD_SIZE) * PMD_SIZE;
    write(k, p, a, 4, (i) => 10 + i);
    expect(pagemap(k, p.mm, a, PMD_SIZE)[0]!.size).toBe('2M');
    const before = ev(k);
    k.madvise(p, a, PMD_SIZE, MADV.MADV_PAGEOUT);
    expect(k.vmstat.events.thp_swpout_fallback - before.thp_swpout_fallback!).toBe(1);
    expect(k.vmstat.events.pswpout - before.pswpout!).toBe(4);
    expect(pagemap(k, p.mm, a, PMD_SIZE)).toEqual([
      { n: 4, present: false, node: null, size: null, swapped: true },
      { n: 508, present: true, node: null, size: '4K' },
    ]);
    expect(peek(k, p, a, 5)).toEqual([10, 11, 12, 13, 0]);
    expect(verifyKernel(k)).toEqual([]);
  });

  it("swaps shared anonymous (shmem) pages out too: not present, and not swapped in pagemap (the entry is the file's)", () => {
    const { k, p } = setup();
    const a = k.mmap(p, 0, 4 * PAGE_SIZE, RW, SHARED_ANON);
    write(k, p, a, 4, (i) => 1 + i);
    const out = k.vmstat.events.pswpout;
    k.madvise(p, a, 4 * PAGE_SIZE, MADV.MADV_PAGEOUT);
    expect(pagemap(k, p.mm, a, 4 * PAGE_SIZE)).toEqual([{ n: 4, present: false, node: null, size: null }]);
    expect(k.vmstat.events.pswpout - out).toBe(4);
    expect(peek(k, p, a, 4)).toEqual([1, 2, 3, 4]);
    expect(verifyKernel(k)).toEqual([]);
  });

  it('runs out of slots gracefully: pages without one stay mapped', () => {
    const { k, p } = setup({ swap: 8 * PAGE_SIZE }); // header + 7 slots
    const a = k.mmap(p, 0, 10 * PAGE_SIZE, RW, ANON);
    write(k, p, a, 10, (i) => 1 + i);
    k.madvise(p, a, 10 * PAGE_SIZE, MADV.MADV_PAGEOUT);
    expect(pagemap(k, p.mm, a, 10 * PAGE_SIZE)).toEqual([
      { n: 7, present: false, node: null, size: null, swapped: true },
      { n: 3, present: true, node: 0, size: '4K' },
    ]);
    expect(peek(k, p, a, 10)).toEqual(Array.from({ length: 10 }, (_, i) => 1 + i));
    expect(verifyKernel(k)).toEqual([]);
  });

  it('/proc/swaps and meminfo describe the area', () => {
    const { k } = setup();
    expect(renderSwaps(k)).toBe(
      'Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/swapfile                               file\t\t16380\t\t0\t\t32767\n',
    );
    expect(renderMeminfo(k)).toMatch(/SwapTotal:\s+16380 kB/);
  });
});

describe('MADV_COLLAPSE of a region with swapped pages (khugepaged.ts)', () => {
  it('first reads them in (the async read makes do_swap_page retry: EAGAIN), then collapses with their contents', () => {
    const { k, p } = setup({ thp: 'madvise' });
    const raw = k.mmap(p, 0, 2 * PMD_SIZE, RW, ANON);
    const a = Math.ceil(raw / PMD_SIZE) * PMD_SIZE;
    write(k, p, a, 512, (i) => 1 + (i % 200));
    k.madvise(p, a, 8 * PAGE_SIZE, MADV.MADV_PAGEOUT);
    peek(k, p, a, 8);
    k.madvise(p, a, 8 * PAGE_SIZE, MADV.MADV_PAGEOUT); // clean: freed, only on swap now
    expect(k.swapCachePages).toBe(0);
    expect(k.madvise(p, a, PMD_SIZE, MADV.MADV_COLLAPSE)).toBe(-11); // EAGAIN
    expect(k.swapCachePages).toBeGreaterThan(0);
    let tries = 0;
    while (k.madvise(p, a, PMD_SIZE, MADV.MADV_COLLAPSE) !== 0 && tries < 8) tries++;
    expect(pagemap(k, p.mm, a, PMD_SIZE)).toEqual([{ n: 512, present: true, node: 0, size: '2M' }]);
    expect(peek(k, p, a, 512)).toEqual(Array.from({ length: 512 }, (_, i) => 1 + (i % 200)));
    expect(k.swap.nrSwapPages).toBe(4095);
    expect(verifyKernel(k)).toEqual([]);
  });
});

describe('swap invariants (property)', () => {
  type Step =
    | { k: 'write'; page: number; pages: number; fill: number }
    | { k: 'read'; page: number; pages: number }
    | { k: 'advise'; page: number; pages: number; advice: number }
    | { k: 'munmap'; page: number; pages: number };
  const N = 96;
  const range = { page: fc.integer({ min: 0, max: N - 1 }), pages: fc.integer({ min: 1, max: 24 }) };
  const step: fc.Arbitrary<Step> = fc.oneof(
    fc.record({ k: fc.constant('write' as const), ...range, fill: fc.integer({ min: 0, max: 255 }) }),
    fc.record({ k: fc.constant('read' as const), ...range }),
    fc.record({
      k: fc.constant('advise' as const),
      ...range,
      advice: fc.constantFrom(MADV.MADV_PAGEOUT, MADV.MADV_PAGEOUT, MADV.MADV_FREE, MADV.MADV_DONTNEED, MADV.MADV_COLLAPSE),
    }),
    fc.record({ k: fc.constant('munmap' as const), ...range }),
  );

  it('contents survive any sequence of writes, pageouts, swap-ins, frees and unmaps; frames and slots are conserved', () => {
    fc.assert(
      fc.property(
        fc.constantFrom('never', 'always'),
        fc.integer({ min: 0, max: 5 }),
        fc.array(step, { minLength: 1, maxLength: 30 }),
        (thp, cluster, steps) => {
          const { k, p } = setup({ thp, swap: 64 * PAGE_SIZE });
          k.sysfs.write('/proc/sys/vm/page-cluster', String(cluster));
          const raw = k.mmap(p, 0, N * PAGE_SIZE + PMD_SIZE, RW, ANON);
          const a = Math.ceil(raw / PMD_SIZE) * PMD_SIZE;
          // What each page must read: its last write, 0 once freed or unmapped-and-remapped; null: lazyfree (0, or its
          // last write, `written`, until it is written again: a read does not redirty it, reclaim may still discard it).
          const model: (number | null)[] = Array(N).fill(0);
          const written: number[] = Array(N).fill(0);
          const mapped: boolean[] = Array(N).fill(true);
          for (const s of steps) {
            const end = Math.min(N, s.page + s.pages);
            const va = a + s.page * PAGE_SIZE;
            const len = (end - s.page) * PAGE_SIZE;
            if (s.k === 'write') {
              for (let i = s.page; i < end; i++) {
                if (!mapped[i]) k.mmap(p, a + i * PAGE_SIZE, PAGE_SIZE, RW, ANON | 0x10); // MAP_FIXED
                mapped[i] = true;
                k.access(p.mainThread, a + i * PAGE_SIZE, 1, PAGE_SIZE, true, s.fill);
                model[i] = s.fill;
                written[i] = s.fill;
              }
            } else if (s.k === 'read') {
              for (let i = s.page; i < end; i++) {
                if (!mapped[i]) continue;
                const got = peek(k, p, a + i * PAGE_SIZE, 1)[0]!;
                // A lazyfree page reads its content or, once reclaim discarded it, zeros (and zeros from then on).
                expect(model[i] === null ? got === written[i] || got === 0 : got === model[i]).toBe(true);
                if (model[i] === null && got === 0) model[i] = 0;
              }
            } else if (s.k === 'advise') {
              k.madvise(p, va, len, s.advice);
              for (let i = s.page; i < end; i++) {
                if (s.advice === MADV.MADV_DONTNEED) model[i] = 0;
                if (s.advice === MADV.MADV_FREE) model[i] = model[i] === 0 ? 0 : null;
              }
            } else {
              k.munmap(p, va, len);
              for (let i = s.page; i < end; i++) {
                mapped[i] = false;
                model[i] = 0;
                written[i] = 0;
              }
            }
            const errs = verifyKernel(k);
            if (errs.length) throw new Error(`${JSON.stringify(s)}: ${errs.slice(0, 3).join('; ')}`);
          }
          for (let i = 0; i < N; i++) {
            if (!mapped[i]) continue;
            const got = peek(k, p, a + i * PAGE_SIZE, 1)[0]!;
            expect(model[i] === null ? got === written[i] || got === 0 : got === model[i]).toBe(true);
          }
          expect(verifyKernel(k)).toEqual([]);
        },
      ),
      {
        numRuns: 60,
        // Found on a random seed: a read does not take a page out of lazyfree, so PAGEOUT may still discard it.
        examples: [
          [
            'never',
            0,
            [
              { k: 'write', page: 0, pages: 1, fill: 1 },
              { k: 'advise', page: 0, pages: 1, advice: MADV.MADV_FREE },
              { k: 'read', page: 0, pages: 1 },
              { k: 'advise', page: 0, pages: 1, advice: MADV.MADV_PAGEOUT },
            ],
          ],
        ],
      },
    );
  });
});

describe('direct reclaim (tryToFreePages)', () => {
  it('an anonymous working set larger than the node swaps instead of failing, and every page reads back', () => {
    const k = smallKernel({ nodes: 1, mib: 16 });
    k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'never');
    expect(sysSwapon(k, { path: '/swapfile', size: 32 * MiB, kind: 'file', prio: 32767 })).toBe(0);
    const p = k.createProcess('big');
    const n = (24 * MiB) / PAGE_SIZE;
    const a = k.mmap(p, 0, n * PAGE_SIZE, RW, ANON);
    for (let i = 0; i < n; i++) expect(k.access(p.mainThread, a + i * PAGE_SIZE, 1, PAGE_SIZE, true, 1 + (i % 250)).signal).toBeUndefined();
    const e = k.vmstat.events;
    expect(e.pgsteal_kswapd + e.pgsteal_direct).toBeGreaterThan(0);
    expect(e.pswpout).toBeGreaterThan(0);
    expect(p.mm.swapents).toBeGreaterThan(0);
    expect(verifyKernel(k)).toEqual([]);
    const got: number[] = [];
    for (let i = 0; i < n; i++) k.access(p.mainThread, a + i * PAGE_SIZE, 1, PAGE_SIZE, false, 0, (_va, b) => got.push(b));
    expect(got).toEqual(Array.from({ length: n }, (_, i) => 1 + (i % 250)));
    expect(e.pgmajfault).toBeGreaterThan(0);
    expect(verifyKernel(k)).toEqual([]);
  });

  it('reclaims the pages not used lately first: a page touched again is kept, one touched once goes', () => {
    const k = smallKernel({ nodes: 1, mib: 16 });
    k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'never');
    sysSwapon(k, { path: '/swapfile', size: 32 * MiB, kind: 'file', prio: 32767 });
    const p = k.createProcess('lru');
    const hot = k.mmap(p, 0, 64 * PAGE_SIZE, RW, ANON);
    write(k, p, hot, 64, () => 1);
    const n = (20 * MiB) / PAGE_SIZE;
    const cold = k.mmap(p, 0, n * PAGE_SIZE, RW, ANON);
    for (let i = 0; i < n; i++) {
      if (i % 256 === 0) peek(k, p, hot, 64); // the hot pages keep being used
      k.access(p.mainThread, cold + i * PAGE_SIZE, 1, PAGE_SIZE, true, 2);
    }
    expect(pagemap(k, p.mm, hot, 64 * PAGE_SIZE)).toEqual([{ n: 64, present: true, node: 0, size: '4K' }]);
    expect(pagemap(k, p.mm, cold, PAGE_SIZE)[0]!.swapped).toBe(true);
    expect(k.vmstat.events.pswpout).toBeGreaterThan(0);
    expect(verifyKernel(k)).toEqual([]);
  });

  it('try_to_free_pages reclaims at least SWAP_CLUSTER_MAX pages from a full node once swap is there', () => {
    const k = smallKernel({ nodes: 1, mib: 16 });
    k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'never');
    const p = k.createProcess('full');
    const a = k.mmap(p, 0, 12 * MiB, RW, ANON);
    write(k, p, a, (12 * MiB) / PAGE_SIZE, (i) => 1 + (i % 9));
    sysSwapon(k, { path: '/swapfile', size: 32 * MiB, kind: 'file', prio: 32767 });
    const free0 = k.phys.freePages();
    const got = tryToFreePages(k, { order: 0, mt: MIGRATE_MOVABLE, nid: 0 });
    expect(got).toBeGreaterThanOrEqual(32);
    expect(k.phys.freePages() - free0).toBe(got);
    expect(k.vmstat.events.allocstall_normal).toBe(1);
    expect(k.vmstat.events.pgsteal_direct).toBe(got);
    expect(k.vmstat.events.pgscan_direct).toBeGreaterThanOrEqual(got);
    expect(verifyKernel(k)).toEqual([]);
    const back: number[] = [];
    k.access(p.mainThread, a, 12 * MiB, PAGE_SIZE, false, 0, (_va, b) => back.push(b));
    expect(back).toEqual(Array.from({ length: (12 * MiB) / PAGE_SIZE }, (_, i) => 1 + (i % 9)));
  });

  it('without swap, after a reclaim attempt, the OOM killer kills the process and its memory comes back', () => {
    const k = smallKernel({ nodes: 1, mib: 16 });
    k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'never');
    const p = k.createProcess('nos');
    const a = k.mmap(p, 0, 12 * MiB, RW, ANON);
    const b = k.mmap(p, 0, 12 * MiB, RW, ANON);
    expect(k.access(p.mainThread, a, 12 * MiB, PAGE_SIZE, true, 1).signal).toBeUndefined();
    const free0 = k.phys.freePages();
    const r = k.access(p.mainThread, b, 12 * MiB, PAGE_SIZE, true, 1);
    expect(r.signal).toBe('SIGKILL');
    expect(r.at).toBeUndefined();
    expect(p.exited).toBe(true);
    expect(k.vmstat.events.allocstall_normal).toBeGreaterThan(0);
    expect(k.vmstat.events.pgsteal_direct).toBe(0);
    expect(k.vmstat.events.oom_kill).toBe(1);
    expect(k.oom.dmesg.some((l) => /Out of memory: Killed process \d+ \(nos\) total-vm:24576kB, anon-rss:\d+kB/.test(l))).toBe(true);
    k.runDueEvents(); // exit_mmap
    expect(p.mm.vmas.length).toBe(0);
    expect(p.mm.rssAnon).toBe(0);
    expect(k.phys.freePages()).toBeGreaterThan(free0 + (12 * MiB) / PAGE_SIZE - 64);
    expect(verifyKernel(k)).toEqual([]);
  });

  it('without swap and nothing the OOM killer may kill (oom_score_adj -1000), the allocation fails (SIGBUS)', () => {
    const k = smallKernel({ nodes: 1, mib: 16 });
    k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'never');
    const p = k.createProcess('nos');
    k.oom.scoreAdj.set(p.pid, -1000);
    const a = k.mmap(p, 0, 12 * MiB, RW, ANON);
    const b = k.mmap(p, 0, 12 * MiB, RW, ANON);
    expect(k.access(p.mainThread, a, 12 * MiB, PAGE_SIZE, true, 1).signal).toBeUndefined();
    expect(k.access(p.mainThread, b, 12 * MiB, PAGE_SIZE, true, 1).signal).toBe('SIGBUS');
    expect(k.vmstat.events.oom_kill).toBe(0);
    expect(k.oom.dmesg.some((l) => l.includes('Out of memory and no killable processes...'))).toBe(true);
    expect(verifyKernel(k)).toEqual([]);
  });

  it('splits THPs to swap them under pressure and keeps their contents', () => {
    const k = smallKernel({ nodes: 1, mib: 16 });
    k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'always');
    sysSwapon(k, { path: '/swapfile', size: 32 * MiB, kind: 'file', prio: 32767 });
    const p = k.createProcess('thp');
    const len = 24 * MiB;
    const a = k.mmap(p, 0, len, RW, ANON);
    expect(k.access(p.mainThread, a, len, PAGE_SIZE, true, 7).signal).toBeUndefined();
    expect(k.vmstat.events.thp_swpout_fallback).toBeGreaterThan(0);
    const got = new Set<number>();
    k.access(p.mainThread, a, len, PAGE_SIZE, false, 0, (_va, b) => got.add(b));
    expect([...got]).toEqual([7]);
    expect(verifyKernel(k)).toEqual([]);
  });
});

describe('watermarks and kswapd', () => {
  it('computes min_free_kbytes and the watermarks as __setup_per_zone_wmarks does, and recomputes them on a write', () => {
    const k = smallKernel({ nodes: 1, mib: 16 });
    // calculate_min_free_kbytes gives sqrt(16384 * 16) = 512; khugepaged's recommendation is more
    // (5% of the pages above the high watermark the first setup gave: 3904 / 20 = 195 pages).
    expect(k.sysfs.read('/proc/sys/vm/min_free_kbytes')).toBe('780');
    expect([...k.phys.zones[0]!.wmark]).toEqual([195, 243, 291]);
    expect(k.sysfs.write('/proc/sys/vm/watermark_scale_factor', '1000')).toBe(0);
    expect([...k.phys.zones[0]!.wmark]).toEqual([195, 604, 1013]); // a step of 4096 * 1000 / 10000 pages
    expect(k.sysfs.write('/proc/sys/vm/watermark_scale_factor', '0')).toBe(-22);
    expect(k.sysfs.write('/proc/sys/vm/min_free_kbytes', '4096')).toBe(0);
    expect(k.phys.zones[0]!.wmark[0]).toBe(1024);
  });

  it('kswapd wakes below the low watermark and reclaims to the high one in its own time, sparing the faulting task', () => {
    const k = smallKernel({ nodes: 1, mib: 16 });
    k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'never');
    sysSwapon(k, { path: '/swapfile', size: 32 * MiB, kind: 'file', prio: 32767 });
    const p = k.createProcess('w');
    const z = k.phys.zones[0]!;
    const n = (20 * MiB) / PAGE_SIZE;
    const a = k.mmap(p, 0, n * PAGE_SIZE, RW, ANON);
    for (let i = 0; i < n; i++) {
      k.access(p.mainThread, a + i * PAGE_SIZE, 1, PAGE_SIZE, true, 1 + (i % 250));
      k.runDueEvents();
    }
    const e = k.vmstat.events;
    expect(e.pageoutrun).toBeGreaterThan(0);
    expect(e.pgsteal_kswapd).toBeGreaterThan(0);
    expect(e.pgscan_kswapd).toBeGreaterThanOrEqual(e.pgsteal_kswapd);
    expect(e.allocstall_normal).toBe(0); // kswapd kept ahead: no direct reclaim
    expect(z.freePages).toBeGreaterThan(z.wmark[0]!);
    expect(k.kswapd.cpuNs[0]).toBeGreaterThan(0);
    expect(verifyKernel(k)).toEqual([]);
    const got: number[] = [];
    for (let i = 0; i < n; i++) k.access(p.mainThread, a + i * PAGE_SIZE, 1, PAGE_SIZE, false, 0, (_va, b) => got.push(b));
    expect(got).toEqual(Array.from({ length: n }, (_, i) => 1 + (i % 250)));
  });
});

describe('reclaim invariants under memory pressure (property)', () => {
  it('with a working set larger than the node, contents survive reclaim, kswapd and swap-in; frames, slots and LRU lists stay consistent', () => {
    const N = 5000; // pages: more than the node's 4096
    type Op = { k: 'write' | 'read' | 'pageout' | 'dontneed'; page: number; pages: number; fill: number };
    const op: fc.Arbitrary<Op> = fc.record({
      k: fc.constantFrom('write', 'write', 'read', 'pageout', 'dontneed'),
      page: fc.integer({ min: 0, max: N - 1 }),
      pages: fc.integer({ min: 1, max: 1500 }),
      fill: fc.integer({ min: 1, max: 255 }),
    });
    fc.assert(
      fc.property(fc.constantFrom('never', 'always'), fc.array(op, { minLength: 1, maxLength: 12 }), (thp, ops) => {
        const k = smallKernel({ nodes: 1, mib: 16 });
        k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', thp);
        sysSwapon(k, { path: '/swapfile', size: 32 * MiB, kind: 'file', prio: 32767 });
        const p = k.createProcess('pressure');
        const raw = k.mmap(p, 0, N * PAGE_SIZE + PMD_SIZE, RW, ANON);
        const a = Math.ceil(raw / PMD_SIZE) * PMD_SIZE;
        const model = new Array<number>(N).fill(0);
        for (const o of ops) {
          const end = Math.min(N, o.page + o.pages);
          const va = a + o.page * PAGE_SIZE;
          const len = (end - o.page) * PAGE_SIZE;
          if (o.k === 'write') {
            expect(k.access(p.mainThread, va, len, PAGE_SIZE, true, o.fill).signal).toBeUndefined();
            for (let i = o.page; i < end; i++) model[i] = o.fill;
          } else if (o.k === 'read') {
            const got: number[] = [];
            expect(k.access(p.mainThread, va, len, PAGE_SIZE, false, 0, (_v, b) => got.push(b)).signal).toBeUndefined();
            expect(got).toEqual(model.slice(o.page, end));
          } else {
            k.madvise(p, va, len, o.k === 'pageout' ? MADV.MADV_PAGEOUT : MADV.MADV_DONTNEED);
            if (o.k === 'dontneed') for (let i = o.page; i < end; i++) model[i] = 0;
          }
          k.runDueEvents();
          const errs = verifyKernel(k);
          if (errs.length) throw new Error(`${JSON.stringify(o)}: ${errs.slice(0, 3).join('; ')}`);
        }
        const got: number[] = [];
        k.access(p.mainThread, a, N * PAGE_SIZE, PAGE_SIZE, false, 0, (_v, b) => got.push(b));
        expect(got).toEqual(model);
        expect(verifyKernel(k)).toEqual([]);
      }),
      { numRuns: 25 },
    );
  });
});

describe('folio_referenced: the accessed bits (vmscan.ts)', () => {
  it('sees a fault or store on the page and a load through its PTE once each (the bits are cleared)', () => {
    const { k, p } = setup();
    const a = k.mmap(p, 0, 8 * PAGE_SIZE, RW, ANON);
    write(k, p, a, 4, (i) => 1 + i);
    const pfns = [0, 1, 2, 3].map((i) => followPage(p.mm, a + i * PAGE_SIZE));
    expect(pfns.every((f) => f >= 0)).toBe(true);
    // The fault and the store marked each page.
    expect(pfns.map((f) => folioReferenced(k, f))).toEqual([1, 1, 1, 1]);
    expect(pfns.map((f) => folioReferenced(k, f))).toEqual([0, 0, 0, 0]);
    // Loads through the 4K mappings of pages 1 and 3 set those PTEs' accessed bits.
    peek(k, p, a + PAGE_SIZE, 1);
    peek(k, p, a + 3 * PAGE_SIZE, 1);
    expect(pfns.map((f) => folioReferenced(k, f))).toEqual([0, 1, 0, 1]);
    expect(pfns.map((f) => folioReferenced(k, f))).toEqual([0, 0, 0, 0]);
    expect(verifyKernel(k)).toEqual([]);
  });

  it('counts a PMD-mapped THP once, whichever of its pages a load reached', () => {
    const { k, p } = setup({ thp: 'always' });
    const a = k.mmap(p, 0, 2 * PMD_SIZE, RW, ANON);
    const h = Math.ceil(a / PMD_SIZE) * PMD_SIZE;
    write(k, p, h, 1, () => 7);
    const head = followPage(p.mm, h);
    expect(folioNrPages(k.mem, head)).toBe(512);
    expect(folioReferenced(k, head)).toBe(1);
    expect(folioReferenced(k, head)).toBe(0);
    peek(k, p, h + 100 * PAGE_SIZE, 1);
    expect(folioReferenced(k, head)).toBe(1);
    expect(folioReferenced(k, head)).toBe(0);
  });
});

describe('get_scan_count: the balance between anon and file (vm.swappiness)', () => {
  /** An lruvec with these list sizes (pages), not linked to any page: get_scan_count reads sizes only. */
  function lruvec(ia: number, aa: number, iF: number, aF: number): Lruvec {
    const lv = new Lruvec(0);
    lv.nrPages.set([ia, aa, iF, aF]);
    return lv;
  }
  const sc = (over: Partial<ScanControl> = {}): ScanControl => ({
    nrToReclaim: 32,
    nrReclaimed: 0,
    nrScanned: 0,
    priority: DEF_PRIORITY,
    nid: 0,
    kswapd: false,
    anonCost: 0,
    fileCost: 0,
    ...over,
  });
  const big = lruvec(1 << 22, 1 << 21, 1 << 22, 1 << 21);

  it('SCAN_FRACT with no costs yet: anon gets swappiness/200 of its lists >> priority, file the rest', () => {
    const { k } = setup();
    k.swappiness = 60;
    // 2^22 >> 12 = 1024 and 2^21 >> 12 = 512 pages; ap = 60, fp = 140.
    expect(getScanCount(k, big, sc())).toEqual([307, 153, 716, 358]);
  });

  it('SCAN_FILE without swap, or for cgroup reclaim at swappiness 0, or in cache_trim_mode; SCAN_ANON when file is tiny', () => {
    const { k } = setup({ swap: 0 });
    expect(getScanCount(k, big, sc())).toEqual([0, 0, 1024, 512]);
    const { k: s } = setup();
    s.swappiness = 0;
    const g = s.memcg.create('g');
    expect(getScanCount(s, big, sc({ memcg: g }))).toEqual([0, 0, 1024, 512]);
    // Global reclaim at swappiness 0 still balances (it swaps rather than OOM): SCAN_FRACT gives anon nothing here.
    expect(getScanCount(s, big, sc())).toEqual([0, 0, 1024, 512]);
    s.swappiness = 100;
    expect(getScanCount(s, big, sc({ cacheTrimMode: true }))).toEqual([0, 0, 1024, 512]);
    expect(getScanCount(s, big, sc({ fileIsTiny: true }))).toEqual([1024, 512, 0, 0]);
    // may_swap off (a memcg reclaim that must not swap) is SCAN_FILE too.
    expect(getScanCount(s, big, sc({ maySwap: false }))).toEqual([0, 0, 1024, 512]);
  });

  it('SCAN_EQUAL at priority 0 unless swappiness is 0: every list whole', () => {
    const { k } = setup();
    k.swappiness = 1;
    const lv = lruvec(1000, 10, 20, 3);
    expect(getScanCount(k, lv, sc({ priority: 0, anonCost: 1e6 }))).toEqual([1000, 10, 20, 3]);
    k.swappiness = 0;
    expect(getScanCount(k, lv, sc({ priority: 0 }))[LRU_INACTIVE_ANON]).toBe(0);
  });

  it('property: anon scanning grows with swappiness and file scanning shrinks; at 100 each type gets a third to two thirds', () => {
    const { k } = setup();
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 1e9 }),
        fc.integer({ min: 0, max: 1e9 }),
        fc.integer({ min: 1, max: MAX_SWAPPINESS - 1 }),
        fc.integer({ min: 1, max: 6 }),
        (anonCost, fileCost, s, priority) => {
          const at = (sw: number): number[] => {
            k.swappiness = sw;
            return getScanCount(k, big, sc({ anonCost, fileCost, priority }));
          };
          const lo = at(s);
          const hi = at(s + 1);
          expect(hi[LRU_INACTIVE_ANON]!).toBeGreaterThanOrEqual(lo[LRU_INACTIVE_ANON]!);
          expect(hi[LRU_INACTIVE_FILE]!).toBeLessThanOrEqual(lo[LRU_INACTIVE_FILE]!);
          const mid = at(100);
          const share = mid[LRU_INACTIVE_ANON]! / (mid[LRU_INACTIVE_ANON]! + mid[LRU_INACTIVE_FILE]!);
          expect(share).toBeGreaterThanOrEqual(1 / 3 - 1e-3);
          expect(share).toBeLessThanOrEqual(2 / 3 + 1e-3);
        },
      ),
    );
  });

  it('ages the active file list: file pages reclaim activated are deactivated and dropped later, not kept for ever', () => {
    const { k, p } = setup({ swap: 0 });
    const f = sysOpen(k, p, 'disk/f', 8 * MiB);
    if (typeof f === 'number') throw new Error(`open: ${f}`);
    const a = k.mmap(p, 0, 8 * MiB, PROT.PROT_READ, MAP.MAP_SHARED, { file: f, offset: 0 });
    const lv = k.nodeLruvec[0]!;
    // Read, reclaim (referenced once: kept, PG_referenced), read again, reclaim (referenced twice: activated).
    for (let r = 0; r < 2; r++) {
      peek(k, p, a, 2048);
      tryToFreePages(k, { order: 0, mt: MIGRATE_MOVABLE, nid: 0 });
    }
    const activeBefore = lv.size(LRU_ACTIVE_FILE);
    expect(activeBefore).toBeGreaterThan(256);
    const stolenBefore = k.vmstat.events.pgsteal_file;
    // Now the file is not used: anonymous memory fills the node (no swap). Only file pages can go, active ones too.
    const q = k.createProcess('q');
    const b = k.mmap(q, 0, 64 * MiB, RW, ANON);
    expect(k.access(q.mainThread, b, 60 * MiB, PAGE_SIZE, true, 1).signal).toBeUndefined();
    // More file pages dropped than were inactive: active ones were deactivated (shrink_active_list) and reclaimed.
    const inactiveBefore = 2048 - stolenBefore - activeBefore;
    expect(k.vmstat.events.pgsteal_file - stolenBefore).toBeGreaterThan(inactiveBefore);
    expect(lv.size(LRU_ACTIVE_FILE)).toBeLessThan(activeBefore);
    expect(k.vmstat.events.pgdeactivate).toBeGreaterThan(0);
    expect(k.oom.kills.length).toBe(0);
    expect(lv.size(LRU_ACTIVE_ANON) + lv.size(LRU_INACTIVE_ANON)).toBeGreaterThan(0);
    expect(verifyKernel(k)).toEqual([]);
  });
});

describe('MADV_COLD (madvise_cold_or_pageout_pte_range, folio_deactivate)', () => {
  it('takes the accessed bits off the range and moves its active folios to the inactive list; shared pages are left', () => {
    const { k, p } = setup();
    const a = k.mmap(p, 0, 64 * PAGE_SIZE, RW, ANON);
    write(k, p, a, 64, () => 4);
    const pfns = Array.from({ length: 64 }, (_, i) => followPage(p.mm, a + i * PAGE_SIZE));
    for (const pfn of pfns) folioActivate(k, pfn);
    const lv = k.nodeLruvec[0]!;
    expect(lv.size(LRU_ACTIVE_ANON)).toBe(64);
    const c = sysFork(k, p.mainThread, 'c'); // the first 16 pages become shared: MADV_COLD leaves them alone
    if (typeof c === 'number') throw new Error(`fork: ${c}`);
    write(k, p, a + 16 * PAGE_SIZE, 48, () => 5); // the parent's writes break COW: its own copies, new and inactive
    for (let i = 16; i < 64; i++) folioActivate(k, followPage(p.mm, a + i * PAGE_SIZE));
    expect(k.madvise(p, a, 64 * PAGE_SIZE, MADV.MADV_COLD)).toBe(0);
    for (let i = 0; i < 64; i++) {
      const pfn = followPage(p.mm, a + i * PAGE_SIZE);
      const f = k.mem.flags(pfn);
      if (i < 16) expect(f & PG.active).toBeTruthy();
      else {
        expect(f & (PG.active | PG.referenced | PG.young)).toBe(0);
        expect(f & PG.workingset).toBeTruthy();
        expect(folioReferenced(k, pfn)).toBe(0); // the PTE's accessed bit went too
      }
    }
    expect(k.vmstat.events.pgdeactivate).toBe(48);
    expect(c.mm.rssAnon).toBe(64);
    expect(verifyKernel(k)).toEqual([]);
  });
});
