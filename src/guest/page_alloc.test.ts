import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { SeededRandom } from '../sim/random.ts';
import { GuestPageAlloc, MAX_PAGE_ORDER, PageUse } from './page_alloc.ts';
import { EagerGuestPageAlloc } from '../testing/guest_page_alloc_eager.ts';

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

describe('guest buddy allocator: memory that follows use', () => {
  it('a 60 GiB guest costs no per-frame state until it allocates, then only the sections it writes', () => {
    const g = new GuestPageAlloc([
      { gpa: 0, size: 2 * GiB, node: 0 },
      { gpa: 4 * GiB, size: 58 * GiB, node: 0 },
    ]);
    expect(g.metadataBytes()).toBe(0);
    expect(g.meminfo().MemFree).toBe(60 * GiB);
    expect(g.nrFreeByOrder(0)[MAX_PAGE_ORDER]).toBe((60 * GiB) / (4 * MiB));
    expect(g.pageUse(5 * 262144)).toBe(PageUse.Free);
    expect(g.pageUse(3 * 262144)).toBe(PageUse.Hole);
    expect(g.allocPages({ order: 0, use: PageUse.Anon })).toBe(0); // lowest first, as boot's FPI_TO_TAIL order gives
    expect(g.allocRange(40 * 262144, 262144, PageUse.Anon)).toBe(262144); // 1 GiB at a known address
    // Sections (2^15 frames, 3 bytes each): one for the first page, eight for the GiB; free-list links (8 bytes a
    // frame, in tables of 512) only where a block is on a list: the first page's buddies (orders 0-9, at frames
    // 1, 2, 4, ..., 512) in the first two tables.
    expect(g.metadataBytes()).toBe(9 * 32768 * 3 + 2 * 512 * 8);
    conserved(g);
  });

  // Layouts with ranges that do not start or end on a block or a section, and a hole between nodes.
  const layouts: { gpa: number; size: number; node: number }[][] = [
    [{ gpa: 0, size: 300 * MiB, node: 0 }],
    [
      { gpa: 0, size: 2 * MiB + 40 * 4096, node: 0 },
      { gpa: 130 * MiB, size: 150 * MiB, node: 0 },
      { gpa: 292 * MiB + 8192, size: 140 * MiB, node: 1 },
    ],
    [
      { gpa: 0, size: 64 * MiB, node: 0 },
      { gpa: 64 * MiB, size: 196 * MiB, node: 1 },
    ],
  ];

  it('property: does what the eager allocator does, operation by operation (same blocks, same list order)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: layouts.length - 1 }),
        fc.integer({ min: 1, max: 1 << 30 }),
        fc.integer({ min: 20, max: 250 }),
        (li, seed, steps) => {
          const ranges = layouts[li]!;
          const opts = { cpuNode: [0, 1, 0, 1].map((n) => Math.min(n, Math.max(...ranges.map((r) => r.node)))) };
          const a = new GuestPageAlloc(ranges, opts);
          const b = new EagerGuestPageAlloc(ranges, opts);
          const rnd = new SeededRandom(seed).stream('guest-sparse');
          const live: [number, number][] = [];
          const isolated: [number, number][] = [];
          const same = (): void => {
            expect([...a.freeBlocks()]).toEqual([...b.freeBlocks()]);
            for (let n = 0; n < a.zones.length; n++) expect(a.nrFreeByOrder(n)).toEqual(b.nrFreeByOrder(n));
            expect(a.meminfo()).toEqual(b.meminfo());
          };
          same();
          for (let i = 0; i < steps; i++) {
            const x = rnd.float();
            if (x < 0.3 && live.length) {
              const [p, o] = live.splice(rnd.int(0, live.length - 1), 1)[0]!;
              a.freePages(p, o);
              b.freePages(p, o);
            } else if (x < 0.6) {
              const req = {
                order: rnd.float() < 0.2 ? MAX_PAGE_ORDER : rnd.int(0, 4),
                use: PageUse.Anon,
                cpu: rnd.int(0, 3),
                noRetry: true,
              };
              const p = a.allocPages(req);
              expect(p).toBe(b.allocPages(req));
              if (p >= 0) live.push([p, req.order]);
            } else if (x < 0.7) {
              const pfn = rnd.int(0, a.maxPfn - 1);
              const nr = rnd.int(1, 3000);
              expect(a.allocRange(pfn, nr, PageUse.File)).toBe(b.allocRange(pfn, nr, PageUse.File));
            } else if (x < 0.85) {
              // page reporting: isolate the first unreported blocks of an order, put them back, flag them
              const nid = rnd.int(0, a.zones.length - 1);
              const o = rnd.int(9, MAX_PAGE_ORDER);
              let p = a.freeListFirst(nid, o);
              expect(p).toBe(b.freeListFirst(nid, o));
              for (let n = rnd.int(1, 40); p >= 0 && n > 0; n--) {
                const next = a.freeListNext(p);
                expect(next).toBe(b.freeListNext(p));
                if (!a.isReported(p)) {
                  a.isolateFreePage(p, o);
                  b.isolateFreePage(p, o);
                  isolated.push([p, o]);
                }
                p = next;
              }
              if (p >= 0 && rnd.float() < 0.5) {
                a.rotateToFront(p);
                b.rotateToFront(p);
              }
              for (const [q, qo] of isolated.splice(0)) {
                a.putbackIsolatedPage(q, qo);
                b.putbackIsolatedPage(q, qo);
                if (a.buddyOrder(q) === qo) {
                  a.setReported(q);
                  b.setReported(q);
                }
              }
            } else {
              // rotate a list at any block of it
              const nid = rnd.int(0, a.zones.length - 1);
              const o = rnd.int(0, MAX_PAGE_ORDER);
              const list = [...a.freeBlocks(nid)].filter(([, bo]) => bo === o);
              if (list.length) {
                const [p] = list[rnd.int(0, list.length - 1)]!;
                a.rotateToFront(p);
                b.rotateToFront(p);
              }
            }
            same();
          }
          for (let p = 0; p < a.maxPfn; p += 97) {
            expect(a.pageUse(p)).toBe(b.pageUse(p));
            expect(a.buddyOrder(p)).toBe(b.buddyOrder(p));
            expect(a.isReported(p)).toBe(b.isReported(p));
          }
          conserved(a);
        },
      ),
      { numRuns: 60 },
    );
  });
});

describe('memory hotplug (addMemory: add_memory + auto-online)', () => {
  it('gives a DIMM range to its node, including a node that had no memory, and every page of it can be allocated once', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 16 }), fc.integer({ min: 0, max: 2 }), fc.integer({ min: 0, max: 3 }), (mib, node, gapMib) => {
        // One node of 16 MiB at boot; the DIMM above it (2 MiB aligned, as device memory is).
        const g = new GuestPageAlloc([{ gpa: 0, size: 16 << 20, node: 0 }], { cpuNode: [0, 1] });
        const free0 = g.freePageCount;
        const gpa = (16 + 2 * gapMib) << 20;
        g.addMemory({ gpa, size: mib << 20, node });
        const pages = (mib << 20) / 4096;
        expect(g.freePageCount).toBe(free0 + pages);
        expect(g.nodeOf(gpa / 4096)).toBe(node);
        expect(g.zones[node]!.presentPages).toBe(node === 0 ? free0 + pages : pages);
        // __GFP_THISNODE allocations on the DIMM's node take exactly its pages (plus node 0's boot RAM when it is node 0).
        const got = new Set<number>();
        for (;;) {
          const pfn = g.allocPages({ order: 0, use: PageUse.Anon, nid: node, thisNode: true, noRetry: true });
          if (pfn < 0) break;
          expect(got.has(pfn)).toBe(false);
          got.add(pfn);
        }
        expect(got.size).toBe(node === 0 ? free0 + pages : pages);
      }),
      { numRuns: 25 },
    );
  });

  it('refuses a range that is not above guest RAM or not page aligned', () => {
    const g = new GuestPageAlloc([{ gpa: 0, size: 16 << 20, node: 0 }]);
    expect(() => g.addMemory({ gpa: 8 << 20, size: 2 << 20, node: 0 })).toThrow(/not above guest RAM/);
    expect(() => g.addMemory({ gpa: (16 << 20) + 1, size: 2 << 20, node: 0 })).toThrow(/not page aligned/);
  });
});
