import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { SeededRandom } from '../sim/random.ts';
import { GuestPageAlloc, MAX_PAGE_ORDER, PageUse } from './page_alloc.ts';

const MiB = 2 ** 20;
const GiB = 2 ** 30;

function guest(mib = 64, nodes = 1): GuestPageAlloc {
  const ranges = Array.from({ length: nodes }, (_, n) => ({ gpa: n * mib * MiB, size: mib * MiB, node: n }));
  return new GuestPageAlloc(ranges, { cpuNode: Array.from({ length: nodes * 2 }, (_, c) => c % nodes) });
}

/** Every page accounted exactly once: free lists plus every use equals RAM. */
function conserved(g: GuestPageAlloc): void {
  let onLists = 0;
  for (const [, o] of g.freeBlocks()) onLists += 1 << o;
  expect(onLists).toBe(g.freePageCount);
  expect(g.pagesOf(PageUse.Free)).toBe(g.freePageCount);
  const used = [PageUse.Anon, PageUse.File, PageUse.Kernel, PageUse.Balloon, PageUse.Hinted, PageUse.Isolated].reduce(
    (s, u) => s + g.pagesOf(u),
    0,
  );
  expect(g.freePageCount + used).toBe(g.totalPages);
}

describe('guest buddy allocator', () => {
  it('starts with every page free in MAX_PAGE_ORDER blocks', () => {
    const g = guest(64);
    expect(g.nrFreeByOrder(0)).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16]);
    expect(g.meminfo().MemFree).toBe(64 * MiB);
    conserved(g);
  });

  it('splits the lowest block for an order-0 page, leaving one buddy per order', () => {
    const g = guest(64);
    const p = g.allocPages({ order: 0, use: PageUse.Anon });
    expect(p).toBe(0);
    expect(g.nrFreeByOrder(0)).toEqual([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 15]);
    // the buddies are the upper halves: pfn 1 (order 0), 2 (1), 4 (2) ... 512 (9)
    for (let o = 0; o < MAX_PAGE_ORDER; o++) expect(g.buddyOrder(1 << o)).toBe(o);
    expect(g.allocPages({ order: 0, use: PageUse.Anon })).toBe(1);
    conserved(g);
  });

  it('merges freed buddies back into the largest block', () => {
    const g = guest(64);
    const pfns = Array.from({ length: 300 }, () => g.allocPages({ order: 0, use: PageUse.File }));
    expect(g.meminfo().Cached).toBe(300 * 4096);
    for (const p of pfns) g.freePages(p, 0);
    expect(g.nrFreeByOrder(0)).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16]);
    conserved(g);
  });

  it('places a first touch on the allocating vCPU node and falls back when it is full', () => {
    const g = guest(8, 2);
    expect(g.nodeOf(g.allocPages({ order: 0, use: PageUse.Anon, cpu: 1 }))).toBe(1);
    expect(g.nodeOf(g.allocPages({ order: 0, use: PageUse.Anon, cpu: 0 }))).toBe(0);
    for (let i = 0; i < 2047; i++) g.allocPages({ order: 0, use: PageUse.Anon, cpu: 1 });
    expect(g.zones[1]!.freePages).toBe(0);
    expect(g.nodeOf(g.allocPages({ order: 0, use: PageUse.Anon, cpu: 1 }))).toBe(0);
    expect(g.allocPages({ order: 0, use: PageUse.Anon, cpu: 1, thisNode: true })).toBe(-1);
  });

  it('never merges across nodes or into the PCI hole', () => {
    // a PC-like layout: 3 GiB below the hole, 1 GiB above 4 GiB, the upper part on node 1
    const g = new GuestPageAlloc([
      { gpa: 0, size: 3 * GiB, node: 0 },
      { gpa: 4 * GiB, size: GiB, node: 1 },
    ]);
    expect(g.totalPages).toBe(4 * 262144);
    expect(g.pageUse(3 * 262144)).toBe(PageUse.Hole);
    for (const [pfn, o] of g.freeBlocks()) expect(g.nodeOf(pfn)).toBe(g.nodeOf(pfn + (1 << o) - 1));
    expect(g.meminfo().MemTotal).toBe(4 * GiB);
  });

  it('clears PG_reported when a reported block is allocated or merged', () => {
    const g = guest(8);
    const first = g.freeListFirst(0, MAX_PAGE_ORDER);
    g.setReported(first);
    expect(g.isReported(first)).toBe(true);
    const p = g.allocPages({ order: MAX_PAGE_ORDER, use: PageUse.Anon });
    expect(p).toBe(first);
    expect(g.isReported(first)).toBe(false);
  });

  it('rotates a free list so a given block comes first, keeping the cyclic order', () => {
    const g = guest(32);
    const order = [...g.freeBlocks()].map(([p]) => p);
    g.rotateToFront(order[3]!);
    expect([...g.freeBlocks()].map(([p]) => p)).toEqual([...order.slice(3), ...order.slice(0, 3)]);
  });

  it('runs shrinkers, then OOM notifiers, before failing an allocation that may retry', () => {
    const g = guest(8);
    const held: number[] = [];
    while (g.freePageCount) held.push(g.allocPages({ order: 0, use: PageUse.Balloon, noRetry: true }));
    expect(g.allocPages({ order: 0, use: PageUse.Anon, noRetry: true })).toBe(-1);
    let notified = 0;
    g.oomNotifiers.push(() => {
      notified++;
      const p = held.pop();
      if (p === undefined) return 0;
      g.freePages(p, 0);
      return 1;
    });
    expect(g.allocPages({ order: 0, use: PageUse.Anon })).toBeGreaterThanOrEqual(0);
    expect(notified).toBe(1);
    expect(g.allocStalls).toBe(1);
    conserved(g);
  });

  it('property: random allocations and frees conserve pages and leave no free buddy pair unmerged', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 1 << 30 }), fc.integer({ min: 10, max: 400 }), (seed, steps) => {
        const g = guest(16, 2);
        const rnd = new SeededRandom(seed).stream('guest-buddy');
        const live: [number, number][] = [];
        for (let i = 0; i < steps; i++) {
          if (live.length && rnd.float() < 0.45) {
            const [p, o] = live.splice(rnd.int(0, live.length - 1), 1)[0]!;
            g.freePages(p, o);
          } else {
            const o = rnd.int(0, 4);
            const p = g.allocPages({ order: o, use: PageUse.Anon, cpu: rnd.int(0, 3), noRetry: true });
            if (p >= 0) {
              expect(p % (1 << o)).toBe(0);
              live.push([p, o]);
            }
          }
        }
        conserved(g);
        for (const [p, o] of g.freeBlocks())
          if (o < MAX_PAGE_ORDER) {
            const buddy = p ^ (1 << o);
            expect(g.buddyOrder(buddy) === o && g.nodeOf(buddy) === g.nodeOf(p)).toBe(false);
          }
        for (const [p, o] of live) g.freePages(p, o);
        expect(g.nrFreeByOrder(0)[MAX_PAGE_ORDER]).toBe(4);
        expect(g.nrFreeByOrder(1)[MAX_PAGE_ORDER]).toBe(4);
      }),
      { numRuns: 40 },
    );
  });
});
