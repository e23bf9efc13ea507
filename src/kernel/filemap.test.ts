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
