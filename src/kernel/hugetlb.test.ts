/**
 * hugetlb pool accounting against LTP's counter models (hugemmap05,
 * hugemmap10) and the hugetlb-madvise selftest.
 */
import { describe, expect, it } from 'vitest';
import { smallKernel, RW } from '../testing/fixtures.ts';
import { MADV, MAP, PAGE_SIZE } from './uapi.ts';
import { verifyKernel } from './debug_vm.ts';

const HUGE = MAP.MAP_ANONYMOUS | MAP.MAP_HUGETLB;
const M2 = 2 << 20;

function setup() {
  const k = smallKernel({ nodes: 2, mib: 128 });
  const h = k.hugetlb.bySize(M2)!;
  const p = k.createProcess('h');
  const counters = () => ({ T: h.nr, F: h.free, R: h.resv, S: h.surplus });
  return { k, h, p, counters };
}

describe('hugetlb pools', () => {
  it('reserves at mmap, consumes at fault, releases at munmap (hugemmap10 shape)', () => {
    const { k, h, p, counters } = setup();
    k.hugetlb.setNrHugepages(h, 3);
    h.overcommit = 3;
    expect(counters()).toEqual({ T: 3, F: 3, R: 0, S: 0 });
    const a = k.mmap(p, 0, 2 * M2, RW, HUGE | MAP.MAP_SHARED);
    expect(counters()).toEqual({ T: 3, F: 3, R: 2, S: 0 });
    k.access(p.mainThread, a, M2, PAGE_SIZE, true, 1);
    expect(counters()).toEqual({ T: 3, F: 2, R: 1, S: 0 });
    // a second mapping of 3 pages: shortfall = 3 + R(1) - F(2) = 2 surplus pages
    const b = k.mmap(p, 0, 3 * M2, RW, HUGE | MAP.MAP_PRIVATE);
    expect(counters()).toEqual({ T: 5, F: 4, R: 4, S: 2 });
    k.munmap(p, b, 3 * M2);
    expect(counters()).toEqual({ T: 3, F: 2, R: 1, S: 0 });
    k.munmap(p, a, 2 * M2);
    expect(counters()).toEqual({ T: 3, F: 3, R: 0, S: 0 });
    expect(verifyKernel(k)).toEqual([]);
  });

  it('turns in-use pages into surplus when the pool shrinks below use (set_max_huge_pages)', () => {
    const { k, h, p, counters } = setup();
    k.hugetlb.setNrHugepages(h, 4);
    const a = k.mmap(p, 0, 3 * M2, RW, HUGE | MAP.MAP_PRIVATE);
    k.access(p.mainThread, a, 3 * M2, M2, true, 1);
    k.hugetlb.setNrHugepages(h, 1);
    expect(counters()).toEqual({ T: 3, F: 0, R: 0, S: 2 });
    k.munmap(p, a, 3 * M2);
    expect(counters()).toEqual({ T: 1, F: 1, R: 0, S: 0 });
  });

  it('fails an mmap the pool cannot cover with ENOMEM, and MAP_NORESERVE faults with SIGBUS instead', () => {
    const { k, h, p } = setup();
    k.hugetlb.setNrHugepages(h, 2);
    expect(k.mmap(p, 0, 3 * M2, RW, HUGE | MAP.MAP_PRIVATE)).toBe(-12);
    const a = k.mmap(p, 0, 3 * M2, RW, HUGE | MAP.MAP_PRIVATE | MAP.MAP_NORESERVE);
    expect(a).toBeGreaterThan(0);
    const r = k.access(p.mainThread, a, 3 * M2, M2, true, 1);
    expect(r.signal).toBe('SIGBUS');
    expect(r.at).toBe(a + 2 * M2);
  });

  it('MADV_DONTNEED on a private mapping frees the page and restores its reservation; the length is aligned down', () => {
    const { k, h, p, counters } = setup();
    k.hugetlb.setNrHugepages(h, 4);
    const a = k.mmap(p, 0, 4 * M2, RW, HUGE | MAP.MAP_PRIVATE);
    k.access(p.mainThread, a, 4 * M2, M2, true, 1);
    expect(counters()).toEqual({ T: 4, F: 0, R: 0, S: 0 });
    expect(k.madvise(p, a + PAGE_SIZE, M2, MADV.MADV_DONTNEED)).toBe(-22);
    expect(k.madvise(p, a, 2 * M2 + PAGE_SIZE, MADV.MADV_DONTNEED)).toBe(0);
    expect(counters()).toEqual({ T: 4, F: 2, R: 2, S: 0 });
    // refaulting uses the restored reservations
    expect(k.access(p.mainThread, a, 2 * M2, M2, true, 1).signal).toBeUndefined();
    expect(counters()).toEqual({ T: 4, F: 0, R: 0, S: 0 });
  });

  it('gives 1G pages only from a free aligned gigabyte', () => {
    const k = smallKernel({ nodes: 1, mib: 2048 });
    const h = k.hugetlb.bySize(1 << 30)!;
    const p = k.createProcess('pin');
    // 4K pages in both gigabytes of the node: no free aligned gigabyte is left
    const len = (1 << 30) + (8 << 20);
    const a = k.mmap(p, 0, len, RW, MAP.MAP_PRIVATE | MAP.MAP_ANONYMOUS);
    k.madvise(p, a, len, MADV.MADV_NOHUGEPAGE);
    k.access(p.mainThread, a, len, PAGE_SIZE, true, 1);
    k.hugetlb.setNrHugepages(h, 2);
    expect(h.nr).toBe(0);
    k.munmap(p, a, len);
    k.hugetlb.setNrHugepages(h, 2);
    expect(h.nr).toBe(2);
    expect(verifyKernel(k)).toEqual([]);
  });
});
