import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import type { GuestMemory, GuestRamRange } from '../hw/guest_memory.ts';
import type { CostTable } from '../virtio/timing.ts';
import { GuestKernel, SWAP_CLUSTER_MAX } from './kernel.ts';
import { GuestPageAlloc, PAGE_SIZE, PageUse } from './page_alloc.ts';

const MiB = 1 << 20;
const costs: CostTable = { nsOf: (n) => (n === 'fault_anon_4k_write' ? 1900 : 0) };

/** Guest RAM whose every access costs nothing: the allocator and reclaim are what is tested. */
function memory(ranges: GuestRamRange[]): GuestMemory {
  return {
    ramSize: ranges.reduce((s, r) => s + r.size, 0),
    ramRanges: () => ranges,
    access: () => 0,
    clear: () => 0,
    peek: () => 0,
  } as GuestMemory;
}

function uses(g: GuestPageAlloc): number {
  const all: PageUse[] = [PageUse.Free, PageUse.Anon, PageUse.File, PageUse.Kernel, PageUse.Balloon, PageUse.Hinted, PageUse.Isolated];
  return all.reduce<number>((s, u) => s + g.pagesOf(u), 0);
}

describe('guest memory at known addresses (allocRange)', () => {
  it('takes exactly the free pages of the range out of their blocks, and the rest stays free', () => {
    const g = new GuestKernel(memory([{ gpa: 0, size: 16 * MiB, node: 0 }]), costs);
    const total = g.pages.freePageCount;
    // 1 MiB starting 12 KiB into the RAM: cuts through a 4 MiB block.
    expect(g.claimRange(3 * PAGE_SIZE, MiB)).toBe(256);
    expect(g.pages.freePageCount).toBe(total - 256);
    expect(g.pages.pagesOf(PageUse.Anon)).toBe(256);
    for (let p = 0; p < 4096; p++) expect(g.pages.pageUse(p)).toBe(p >= 3 && p < 259 ? PageUse.Anon : PageUse.Free);
    // Taken again: nothing left to take.
    expect(g.claimRange(3 * PAGE_SIZE, MiB)).toBe(0);
    // Freed page by page, the blocks merge back whole.
    g.release(Array.from({ length: 256 }, (_, i) => 3 + i));
    expect(g.pages.freePageCount).toBe(total);
    expect(g.pages.nrFreeByOrder(0)[10]).toBe(4);
  });

  it('property: any ranges taken and given back conserve pages, and every page is in exactly one use', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 4095 }), fc.integer({ min: 1, max: 1200 })), { maxLength: 12 }), (rs) => {
        const g = new GuestKernel(memory([{ gpa: 0, size: 16 * MiB, node: 0 }]), costs);
        const total = g.pages.freePageCount;
        let taken = 0;
        for (const [p, n] of rs) taken += g.claimRange(p * PAGE_SIZE, n * PAGE_SIZE);
        expect(g.pages.pagesOf(PageUse.Anon)).toBe(taken);
        expect(g.pages.freePageCount).toBe(total - taken);
        expect(uses(g.pages)).toBe(g.pages.totalPages);
        const anon: number[] = [];
        for (let p = 0; p < 4096; p++) if (g.pages.pageUse(p) === PageUse.Anon) anon.push(p);
        g.release(anon);
        expect(g.pages.freePageCount).toBe(total);
        expect(g.pages.nrFreeByOrder(0)[10]).toBe(4);
      }),
    );
  });
});

describe('guest reclaim', () => {
  it('drops the oldest page cache first, SWAP_CLUSTER_MAX pages a round, when an allocation finds nothing free', () => {
    const g = new GuestKernel(memory([{ gpa: 0, size: 4 * MiB, node: 0 }]), costs);
    const cache = g.faultIn(0, PageUse.File, 1000).pfns;
    const anon = g.faultIn(0, PageUse.Anon, 24).pfns;
    expect(g.pages.freePageCount).toBe(0);
    expect(g.pageCachePages).toBe(1000);
    // One more anonymous page: direct reclaim drops 32 cache pages, the oldest (first read).
    const more = g.faultIn(0, PageUse.Anon, 1).pfns;
    expect(more).toHaveLength(1);
    expect(g.vmEvents.pgsteal_direct).toBe(SWAP_CLUSTER_MAX);
    expect(g.pages.allocStalls).toBe(1);
    expect(g.pageCachePages).toBe(1000 - SWAP_CLUSTER_MAX);
    for (const pfn of cache.slice(0, SWAP_CLUSTER_MAX)) if (pfn !== more[0]) expect(g.pages.pageUse(pfn)).toBe(PageUse.Free);
    expect(g.pages.pageUse(cache[SWAP_CLUSTER_MAX]!)).toBe(PageUse.File);
    // The next 31 pages need no reclaim.
    expect(g.faultIn(0, PageUse.Anon, 31).pfns).toHaveLength(31);
    expect(g.pages.allocStalls).toBe(1);
    // Anonymous memory is not reclaimed (no guest swap): all the cache goes, then the OOM path.
    const rest = g.faultIn(0, PageUse.Anon, 2000).pfns;
    expect(rest).toHaveLength(1000 - SWAP_CLUSTER_MAX);
    expect(g.pageCachePages).toBe(0);
    expect(g.pages.oomKills).toBe(1);
    expect(g.pages.pagesOf(PageUse.Anon)).toBe(1024);
    expect(anon).toHaveLength(24);
  });
});
