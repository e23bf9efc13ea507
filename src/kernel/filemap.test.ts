import { describe, expect, it } from 'vitest';
import { smallKernel, RW } from '../testing/fixtures.ts';
import { verifyKernel } from './debug_vm.ts';
import { pagemap } from './procfs.ts';
import { sysOpen, VM_READAHEAD_KB } from './filemap.ts';
import { sysMemfdCreate, sysFtruncate } from './shmem.ts';
import { followPage } from './memory.ts';
import { PG } from './page.ts';
import { MAP, PAGE_SIZE, PROT } from './uapi.ts';
import type { MappedFile } from './mm_types.ts';
import type { Kernel } from './kernel.ts';
import type { Process } from './sched.ts';

const MiB = 1 << 20;

function peek(k: Kernel, p: Process, a: number, n: number): number[] {
  const out: number[] = [];
  const r = k.access(p.mainThread, a, n * PAGE_SIZE, PAGE_SIZE, false, 0, (_va, b) => out.push(b));
  expect(r.signal).toBeUndefined();
  return out;
}

function open(k: Kernel, p: Process, kind: 'tmpfs' | 'disk', size: number): MappedFile {
  const f = sysOpen(k, p, `${kind}/f`, size);
  if (typeof f === 'number') throw new Error(`open: ${f}`);
  return f;
}

describe('file mappings and the page cache (filemap.ts)', () => {
  it("a disk file's first read fault reads the read-around window, maps its 64K around the fault, one major fault", () => {
    const k = smallKernel({ nodes: 1, mib: 64 });
    const p = k.createProcess('p');
    const f = open(k, p, 'disk', 4 * MiB);
    const a = k.mmap(p, 0, 4 * MiB, PROT.PROT_READ, MAP.MAP_SHARED, { file: f, offset: 0 });
    expect(a).toBeGreaterThan(0);
    const maj = k.vmstat.events.pgmajfault ?? 0;
    expect(peek(k, p, a + 2 * MiB, 1)).toEqual([0]);
    const ra = (k.host.diskReadAheadKb ?? VM_READAHEAD_KB) / 4;
    // Read-around: ra_pages starting ra_pages/2 before the fault (clamped to the file).
    expect(f.pages.size).toBe(ra);
    expect(k.vmstat.events.pgmajfault).toBe(maj + 1);
    // The window's page ra_pages/4 before its end is marked PG_readahead: fault-around leaves it (128K: 8 pages on).
    expect(ra).toBe(32);
    expect(pagemap(k, p.mm, a + 2 * MiB, 16 * PAGE_SIZE)).toEqual([
      { n: 8, present: true, node: 0, size: '4K' },
      { n: 1, present: false, node: null, size: null },
      { n: 7, present: true, node: 0, size: '4K' },
    ]);
    // Touching the marked page starts the next window (async readahead), the same size.
    peek(k, p, a + 2 * MiB + 8 * PAGE_SIZE, 1);
    expect(f.pages.size).toBe(2 * ra);
    expect(k.vmstat.events.pgmajfault).toBe(maj + 1);
    for (const pfn of f.pages.values()) expect(k.mem.flags(pfn) & (PG.diskFile | PG.fileLru)).toBe(PG.diskFile | PG.fileLru);
    expect(verifyKernel(k)).toEqual([]);
  });

  it('MAP_PRIVATE of a memfd: reads map the page cache, a write copies the page and leaves the file as it was', () => {
    const k = smallKernel({ nodes: 1, mib: 64 });
    const p = k.createProcess('p');
    const f = sysMemfdCreate(k, p, 'm', 0);
    if (typeof f === 'number') throw new Error('memfd');
    expect(sysFtruncate(k, f, 8 * PAGE_SIZE)).toBe(0);
    const s = k.mmap(p, 0, 8 * PAGE_SIZE, RW, MAP.MAP_SHARED, { file: f, offset: 0 });
    expect(k.access(p.mainThread, s, 2 * PAGE_SIZE, PAGE_SIZE, true, 5).signal).toBeUndefined();
    const q = k.mmap(p, 0, 4 * PAGE_SIZE, RW, MAP.MAP_PRIVATE, { file: f, offset: PAGE_SIZE });
    expect(peek(k, p, q, 2)).toEqual([5, 0]);
    expect(followPage(p.mm, q)).toBe(f.pages.get(1));
    expect(k.access(p.mainThread, q, PAGE_SIZE, PAGE_SIZE, true, 9).signal).toBeUndefined();
    expect(followPage(p.mm, q)).not.toBe(f.pages.get(1));
    expect(k.mem.flags(followPage(p.mm, q)) & PG.anon).toBeTruthy();
    expect(peek(k, p, s, 2)).toEqual([5, 5]);
    expect(peek(k, p, q, 1)).toEqual([9]);
    // Beyond i_size: SIGBUS.
    const big = k.mmap(p, 0, 16 * PAGE_SIZE, PROT.PROT_READ, MAP.MAP_SHARED, { file: f, offset: 0 });
    expect(k.access(p.mainThread, big + 8 * PAGE_SIZE, 1, PAGE_SIZE, false, 0).signal).toBe('SIGBUS');
    // A misaligned offset is EINVAL; the file outlives its mappings while the memfd is open.
    expect(k.mmap(p, 0, PAGE_SIZE, PROT.PROT_READ, MAP.MAP_SHARED, { file: f, offset: 1 })).toBe(-22);
    for (const x of [s, q, big]) k.munmap(p, x, x === big ? 16 * PAGE_SIZE : x === q ? 4 * PAGE_SIZE : 8 * PAGE_SIZE);
    expect(f.pages.size).toBeGreaterThan(0);
    expect(verifyKernel(k)).toEqual([]);
  });
});

describe('reclaim of file pages (vmscan.ts)', () => {
  it('direct reclaim drops clean disk-file pages, unmapping them from every process; a dirty page stays', () => {
    const k = smallKernel({ nodes: 1, mib: 64 });
    k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'never');
    const p = k.createProcess('p');
    const f = open(k, p, 'disk', 8 * MiB);
    const a = k.mmap(p, 0, 8 * MiB, RW, MAP.MAP_SHARED, { file: f, offset: 0 });
    peek(k, p, a, 2048); // every page read and mapped
    expect(k.access(p.mainThread, a, 1, PAGE_SIZE, true, 7).signal).toBeUndefined(); // page 0 dirty
    const cached = f.pages.size;
    expect(cached).toBe(2048);
    // Fill the rest of memory with anonymous pages (no swap): reclaim can only take file pages.
    const q = k.createProcess('q');
    const b = k.mmap(q, 0, 64 * MiB, RW, MAP.MAP_PRIVATE | MAP.MAP_ANONYMOUS);
    const r = k.access(q.mainThread, b, 56 * MiB, PAGE_SIZE, true, 1);
    expect(r.signal).toBeUndefined();
    expect(f.pages.size).toBeLessThan(cached);
    expect(f.pages.has(0)).toBe(true); // dirty: no writeback, so it stays
    expect(k.vmstat.events.pgsteal_file).toBe(cached - f.pages.size);
    expect(p.mm.rssFile).toBe(pagemap(k, p.mm, a, 8 * MiB).reduce((n, x) => n + (x.present ? x.n : 0), 0));
    // A dropped page is read from the disk again, zeros as before; the dirty one kept its byte.
    expect(peek(k, p, a, 2048).filter((x) => x !== 0)).toEqual([7]);
    expect(verifyKernel(k)).toEqual([]);
  });
});
