/**
 * shmem under memory pressure (shmem.ts, vmscan.ts): a memfd's pages live
 * on the anon LRU, reclaim writes them to swap leaving the entry in the
 * file (shmem_writeout), a fault reads them back (shmem_swapin_folio), and
 * truncation or the file's end frees their slots.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { smallKernel, RW, ANON, SHARED_ANON } from '../testing/fixtures.ts';
import { verifyKernel } from './debug_vm.ts';
import { sysSwapon } from './swapfile.ts';
import { exitFiles, shmemSwapped, sysFtruncate, sysMemfdCreate } from './shmem.ts';
import { exitProcess, sysFork } from './fork.ts';
import { LRU_ACTIVE_ANON, LRU_INACTIVE_ANON, folioIsolateLru } from './swap.ts';
import { shrinkFolio } from './vmscan.ts';
import { MADV, MAP, PAGE_SIZE } from './uapi.ts';
import type { Kernel } from './kernel.ts';
import type { MappedFile } from './mm_types.ts';
import type { Process } from './sched.ts';

const MiB = 1 << 20;

function setup(swapMiB: number): { k: Kernel; p: Process } {
  const k = smallKernel({ nodes: 1, mib: 64 });
  k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'never');
  if (swapMiB) expect(sysSwapon(k, { path: '/swapfile', size: swapMiB * MiB, kind: 'file', prio: 32767 })).toBe(0);
  return { k, p: k.createProcess('p') };
}

function memfd(k: Kernel, p: Process, size: number): MappedFile {
  const f = sysMemfdCreate(k, p, 'shm', 0);
  if (typeof f === 'number') throw new Error(`memfd_create: ${f}`);
  expect(sysFtruncate(k, f, size)).toBe(0);
  return f;
}

/** First byte of each page of [a, a + n pages). */
function peek(k: Kernel, p: Process, a: number, n: number): number[] {
  const out: number[] = [];
  const r = k.access(p.mainThread, a, n * PAGE_SIZE, PAGE_SIZE, false, 0, (_va, b) => out.push(b));
  expect(r.signal).toBeUndefined();
  return out;
}

describe('shmem reclaim to swap (shmem_writeout, shmem_swapin_folio)', () => {
  it('puts shmem pages on the anon LRU; reclaim swaps them out, a fault reads them back with their contents', () => {
    const { k, p } = setup(32);
    const f = memfd(k, p, 24 * MiB);
    const a = k.mmap(p, 0, 24 * MiB, RW, MAP.MAP_SHARED, { file: f, offset: 0 });
    const n = (24 * MiB) / PAGE_SIZE;
    for (let i = 0; i < n; i++) k.access(p.mainThread, a + i * PAGE_SIZE, 1, PAGE_SIZE, true, 1 + (i % 200));
    const lv = k.nodeLruvec[0]!;
    expect(lv.size(LRU_INACTIVE_ANON) + lv.size(LRU_ACTIVE_ANON)).toBeGreaterThanOrEqual(n);
    // Another process fills the node with anonymous memory: the memfd's pages go to swap.
    const q = k.createProcess('q');
    const b = k.mmap(q, 0, 48 * MiB, RW, ANON);
    expect(k.access(q.mainThread, b, 48 * MiB, PAGE_SIZE, true, 3).signal).toBeUndefined();
    const swapped = shmemSwapped(f)?.size ?? 0;
    expect(swapped).toBeGreaterThan(0);
    expect(f.pages.size + swapped).toBe(n); // every page is in the file or in swap, once
    expect(k.oom.kills.length).toBe(0);
    expect(verifyKernel(k)).toEqual([]);
    // Reading the memfd back swaps its pages in (major faults) with what was written.
    const maj = k.vmstat.events.pgmajfault;
    expect(peek(k, p, a, n)).toEqual(Array.from({ length: n }, (_, i) => 1 + (i % 200)));
    expect(k.vmstat.events.pgmajfault).toBeGreaterThan(maj);
    expect(verifyKernel(k)).toEqual([]);
  });

  it('frees the slots of swapped pages when a memfd is truncated', () => {
    const { k, p } = setup(32);
    const total = k.swap.nrSwapPages;
    const f = memfd(k, p, 24 * MiB);
    const a = k.mmap(p, 0, 24 * MiB, RW, MAP.MAP_SHARED, { file: f, offset: 0 });
    expect(k.access(p.mainThread, a, 24 * MiB, PAGE_SIZE, true, 9).signal).toBeUndefined();
    const q = k.createProcess('q');
    const b = k.mmap(q, 0, 48 * MiB, RW, ANON);
    expect(k.access(q.mainThread, b, 48 * MiB, PAGE_SIZE, true, 3).signal).toBeUndefined();
    k.munmap(q, b, 48 * MiB);
    expect(shmemSwapped(f)!.size).toBeGreaterThan(0);
    expect(sysFtruncate(k, f, 0)).toBe(0);
    expect(shmemSwapped(f)!.size).toBe(0);
    expect(k.swap.nrSwapPages).toBe(total);
    expect(verifyKernel(k)).toEqual([]);
  });

  it('frees the slots of swapped pages of a shared anonymous mapping when it is unmapped (its file goes)', () => {
    const { k, p } = setup(32);
    const total = k.swap.nrSwapPages;
    const a = k.mmap(p, 0, 24 * MiB, RW, SHARED_ANON);
    expect(k.access(p.mainThread, a, 24 * MiB, PAGE_SIZE, true, 9).signal).toBeUndefined();
    const q = k.createProcess('q');
    const b = k.mmap(q, 0, 48 * MiB, RW, ANON);
    expect(k.access(q.mainThread, b, 48 * MiB, PAGE_SIZE, true, 3).signal).toBeUndefined();
    k.munmap(q, b, 48 * MiB);
    expect(k.swap.nrSwapPages).toBeLessThan(total);
    expect(k.munmap(p, a, 24 * MiB)).toBe(0);
    expect(k.swap.nrSwapPages).toBe(total);
    expect(verifyKernel(k)).toEqual([]);
  });

  it('keeps shmem in memory without swap: the anon lists are not scanned, the OOM killer runs instead', () => {
    const { k, p } = setup(0);
    const f = memfd(k, p, 40 * MiB);
    const a = k.mmap(p, 0, 40 * MiB, RW, MAP.MAP_SHARED, { file: f, offset: 0 });
    expect(k.access(p.mainThread, a, 40 * MiB, PAGE_SIZE, true, 9).signal).toBeUndefined();
    const q = k.createProcess('q');
    const b = k.mmap(q, 0, 40 * MiB, RW, ANON);
    k.access(q.mainThread, b, 40 * MiB, PAGE_SIZE, true, 3);
    expect(shmemSwapped(f)?.size ?? 0).toBe(0);
    expect(k.oom.kills.length).toBeGreaterThan(0);
  });

  it('property: under a 4 MiB memory cgroup with swap, a memfd written and read at random keeps every byte', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            write: fc.boolean(),
            page: fc.nat(8 * 256 - 1),
            len: fc.integer({ min: 1, max: 256 }),
            fill: fc.integer({ min: 1, max: 255 }),
          }),
          { minLength: 1, maxLength: 12 },
        ),
        (steps) => {
          const { k, p } = setup(32);
          const g = k.memcg.create('g');
          g.max = (4 * MiB) / PAGE_SIZE;
          k.memcg.attach(p, g);
          const n = 8 * 256; // 8 MiB
          const f = memfd(k, p, n * PAGE_SIZE);
          const a = k.mmap(p, 0, n * PAGE_SIZE, RW, MAP.MAP_SHARED, { file: f, offset: 0 });
          const model = new Uint8Array(n);
          for (const s of steps) {
            const len = Math.min(s.len, n - s.page);
            const va = a + s.page * PAGE_SIZE;
            if (s.write) {
              expect(k.access(p.mainThread, va, len * PAGE_SIZE, PAGE_SIZE, true, s.fill).signal).toBeUndefined();
              model.fill(s.fill, s.page, s.page + len);
            } else expect(peek(k, p, va, len)).toEqual([...model.subarray(s.page, s.page + len)]);
            expect(g.usage).toBeLessThanOrEqual(g.max);
            const swapped = shmemSwapped(f);
            for (const idx of swapped?.keys() ?? []) expect(f.pages.has(idx)).toBe(false);
          }
          expect(peek(k, p, a, n)).toEqual([...model]);
          expect(k.oom.kills.length).toBe(0);
          expect(verifyKernel(k)).toEqual([]);
        },
      ),
      { numRuns: 15 },
    );
  });
});

describe('a memfd when its processes exit (exit_files, fput)', () => {
  it('is freed with its pages and swap slots when the last process holding it exits; a forked child keeps it alive', () => {
    const { k, p } = setup(16);
    const f = memfd(k, p, 32 * PAGE_SIZE);
    const a = k.mmap(p, 0, 32 * PAGE_SIZE, RW, MAP.MAP_SHARED, { file: f, offset: 0 });
    for (let i = 0; i < 32; i++) k.access(p.mainThread, a + i * PAGE_SIZE, 1, PAGE_SIZE, true, 1 + i);
    const child = sysFork(k, p.mainThread, 'c');
    if (typeof child === 'number') throw new Error(`fork: ${child}`);
    expect(f.opens).toBe(2);
    const free0 = k.phys.zones[0]!.freePages;
    exitProcess(k, p);
    // The child still maps it and holds a descriptor: nothing freed.
    expect(k.files.has(f.id)).toBe(true);
    expect(f.pages.size).toBe(32);
    exitProcess(k, child);
    expect(k.files.has(f.id)).toBe(false);
    expect(k.phys.zones[0]!.freePages - free0).toBeGreaterThanOrEqual(32);
    expect(verifyKernel(k)).toEqual([]);
  });

  it('an unmapped memfd stays while a descriptor holds it, and goes at the last close', () => {
    const { k, p } = setup(0);
    const f = memfd(k, p, 8 * PAGE_SIZE);
    const a = k.mmap(p, 0, 8 * PAGE_SIZE, RW, MAP.MAP_SHARED, { file: f, offset: 0 });
    for (let i = 0; i < 8; i++) k.access(p.mainThread, a + i * PAGE_SIZE, 1, PAGE_SIZE, true, 3);
    expect(k.munmap(p, a, 8 * PAGE_SIZE)).toBe(0);
    expect(f.pages.size).toBe(8);
    exitFiles(k, p);
    expect(k.files.has(f.id)).toBe(false);
    expect(p.files).toEqual([]);
    expect(verifyKernel(k)).toEqual([]);
  });
});

describe('shmem swap-in readahead (shmem_swapin_cluster)', () => {
  /** A 64-page memfd written, paged out (freed to swap), then its first page read back with vm.page-cluster `pc`. */
  function swapinFirst(pc: number): { ra: number; pswpin: number; raHit: number; k: Kernel; p: Process; a: number } {
    const { k, p } = setup(16);
    k.sysfs.write('/proc/sys/vm/page-cluster', String(pc));
    const f = memfd(k, p, 64 * PAGE_SIZE);
    const a = k.mmap(p, 0, 64 * PAGE_SIZE, RW, MAP.MAP_SHARED, { file: f, offset: 0 });
    for (let i = 0; i < 64; i++) k.access(p.mainThread, a + i * PAGE_SIZE, 1, PAGE_SIZE, true, 1 + i);
    expect(k.madvise(p, a, 64 * PAGE_SIZE, MADV.MADV_PAGEOUT)).toBe(0);
    // The swap file's writes complete: reclaim meeting the swap cache pages again frees them.
    for (const pfn of [...k.swap.cache.values()]) {
      folioIsolateLru(k, pfn);
      expect(shrinkFolio(k, pfn)).toBe('freed');
    }
    expect(shmemSwapped(f)!.size).toBe(64);
    const before = { ...k.vmstat.events };
    expect(peek(k, p, a, 1)).toEqual([1]);
    return {
      ra: k.vmstat.events.swap_ra - before.swap_ra,
      pswpin: k.vmstat.events.pswpin - before.pswpin,
      raHit: k.vmstat.events.swap_ra_hit - before.swap_ra_hit,
      k,
      p,
      a,
    };
  }

  it('reads the aligned page-cluster block of slots around the faulting one into the swap cache', () => {
    // The first fault has no readahead history: swapin_nr_pages gives one page unless the offset is adjacent to
    // the last one; the header slot (offset 0) is never read. The window then grows with hits.
    const r = swapinFirst(3);
    expect(r.pswpin).toBe(1 + r.ra);
    const rest = peek(r.k, r.p, r.a + PAGE_SIZE, 7);
    expect(rest).toEqual([2, 3, 4, 5, 6, 7, 8]);
    expect(verifyKernel(r.k)).toEqual([]);
  });

  it('reads the faulting page alone with vm.page-cluster 0', () => {
    const r = swapinFirst(0);
    expect(r.ra).toBe(0);
    expect(r.pswpin).toBe(1);
  });

  it('a sequential read of swapped shmem reads ahead and hits what it read (swap_ra, swap_ra_hit)', () => {
    const r = swapinFirst(3);
    const before = { ...r.k.vmstat.events };
    expect(peek(r.k, r.p, r.a + PAGE_SIZE, 63)).toEqual(Array.from({ length: 63 }, (_, i) => 2 + i));
    expect(r.k.vmstat.events.swap_ra - before.swap_ra).toBeGreaterThan(0);
    expect(r.k.vmstat.events.swap_ra_hit - before.swap_ra_hit).toBeGreaterThan(0);
    // Fewer reads waited for than pages: the rest came from the swap cache.
    expect(r.k.vmstat.events.pgmajfault - before.pgmajfault).toBeLessThan(63);
  });
});
