import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { MemMap } from './page.ts';
import {
  MAX_RECLAIM_RETRIES,
  MIGRATE_MOVABLE,
  MIGRATE_UNMOVABLE,
  PhysMem,
  WMARK_LOW,
  WMARK_MIN,
  initPerZoneWmarkMin,
  type AllocRequest,
} from './page_alloc.ts';

function phys(mib = 64, nodes = 1): PhysMem {
  const pages = (mib * 2 ** 20) / 4096;
  const dist = Array.from({ length: nodes }, (_, i) => Array.from({ length: nodes }, (_, j) => (i === j ? 10 : 21)));
  return new PhysMem(new Array(nodes).fill(pages), dist, new MemMap(pages * nodes));
}

describe('buddy allocator', () => {
  it('hands out naturally aligned blocks and splits larger ones', () => {
    const p = phys();
    const z = p.zones[0]!;
    const a = p.alloc({ order: 3, mt: MIGRATE_MOVABLE, nid: 0 });
    expect(a % 8).toBe(0);
    // one 4 MiB block was split: orders 3..9 each have one free buddy left
    expect(z.nrFreeByOrder().slice(3, 10)).toEqual([1, 1, 1, 1, 1, 1, 1]);
    expect(z.freePages).toBe(z.spannedPages - 8);
  });

  it('coalesces buddies back into the largest block', () => {
    const p = phys();
    const z = p.zones[0]!;
    const before = z.nrFreeByOrder();
    const pfns = Array.from({ length: 100 }, () => p.alloc({ order: 0, mt: MIGRATE_MOVABLE, nid: 0 }));
    for (const x of pfns) p.free(x, 0);
    const after = z.nrFreeByOrder();
    expect(after.slice(0, 10)).toEqual(new Array(10).fill(0));
    expect(after[10]).toBe(before[10]);
  });

  it('falls back to the next node in distance order when a node is full', () => {
    const p = phys(8, 2);
    const n0 = p.zones[0]!.spannedPages;
    for (let i = 0; i < n0; i++) expect(p.nodeOfPfn(p.alloc({ order: 0, mt: MIGRATE_MOVABLE, nid: 0 }))).toBe(0);
    expect(p.nodeOfPfn(p.alloc({ order: 0, mt: MIGRATE_MOVABLE, nid: 0 }))).toBe(1);
    expect(p.alloc({ order: 0, mt: MIGRATE_MOVABLE, nid: 0, thisNode: true })).toBe(-1);
  });

  it('allocates a gigantic range only when a free aligned range exists', () => {
    const p = phys(2048);
    const z = p.zones[0]!;
    const g = z.allocContig(18);
    expect(g).toBe(0);
    expect(z.freePages).toBe(z.spannedPages - 262144);
    // the second 1G range is still free; pin one page in it and the contiguous allocation fails
    const pin = p.alloc({ order: 0, mt: MIGRATE_UNMOVABLE, nid: 0 });
    expect(pin).toBeGreaterThanOrEqual(262144);
    expect(z.allocContig(18)).toBe(-1);
    p.free(pin, 0);
    expect(z.allocContig(18)).toBe(262144);
    z.freeContig(g, 18);
    expect(z.freePages).toBe(z.spannedPages - 262144);
  });

  it('keeps unmovable allocations out of movable pageblocks while it can', () => {
    const p = phys(64);
    const z = p.zones[0]!;
    const u = p.alloc({ order: 0, mt: MIGRATE_UNMOVABLE, nid: 0 });
    const m = p.alloc({ order: 0, mt: MIGRATE_MOVABLE, nid: 0 });
    expect(z.pageblockType(u)).toBe(MIGRATE_UNMOVABLE);
    expect(z.pageblockType(m)).toBe(MIGRATE_MOVABLE);
    expect(Math.floor(u / 512)).not.toBe(Math.floor(m / 512));
  });

  it('property: any alloc/free sequence conserves pages and coalesces fully', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 10 }), fc.boolean(), fc.nat()), { maxLength: 200 }), (steps) => {
        const p = phys(32);
        const z = p.zones[0]!;
        const live: [number, number][] = [];
        for (const [order, unmov, pick] of steps) {
          if (live.length && pick % 3 === 0) {
            const [pfn, o] = live.splice(pick % live.length, 1)[0]!;
            p.free(pfn, o);
          } else {
            const pfn = p.alloc({ order, mt: unmov ? MIGRATE_UNMOVABLE : MIGRATE_MOVABLE, nid: 0 });
            if (pfn >= 0) {
              expect(pfn % (1 << order)).toBe(0);
              live.push([pfn, order]);
            }
          }
          const used = live.reduce((s, [, o]) => s + (1 << o), 0);
          expect(z.freePages + used).toBe(z.spannedPages);
        }
        // no two live blocks overlap
        const sorted = [...live].sort((a, b) => a[0] - b[0]);
        for (let i = 1; i < sorted.length; i++) expect(sorted[i]![0]).toBeGreaterThanOrEqual(sorted[i - 1]![0] + (1 << sorted[i - 1]![1]));
        for (const [pfn, o] of live) p.free(pfn, o);
        const counts = z.nrFreeByOrder();
        expect(counts.slice(0, 10).every((c) => c === 0)).toBe(true);
        expect(counts[10]).toBe(z.spannedPages / 1024);
        for (const [pfn, o] of z.freeBlocks()) expect(pfn % (1 << o)).toBe(0);
      }),
      { numRuns: 100 },
    );
  });

  it('property: alloc_pages_bulk hands out the frames single allocations would, and leaves the same free lists and frame state', () => {
    // Two allocators side by side under the same random allocations and frees (any order, both
    // migratetypes, so pageblocks get stolen and MAX_PAGE_ORDER blocks can span two types); a bulk
    // request is one allocBulk on the first and n single callerPreps allocations on the second.
    const step = fc.oneof(
      fc.record({ kind: fc.constant('alloc' as const), order: fc.integer({ min: 0, max: 10 }), unmovable: fc.boolean(), nid: fc.nat(1) }),
      fc.record({ kind: fc.constant('bulk' as const), n: fc.integer({ min: 1, max: 700 }), nid: fc.nat(1) }),
      fc.record({ kind: fc.constant('free' as const), pick: fc.nat(), count: fc.integer({ min: 1, max: 64 }) }),
    );
    fc.assert(
      fc.property(fc.array(step, { maxLength: 60 }), fc.boolean(), (steps, wmarks) => {
        const a = phys(8, 2);
        const b = phys(8, 2);
        if (wmarks) for (const p of [a, b]) initPerZoneWmarkMin(p);
        let woke = 0;
        b.wakeKswapd = () => woke++;
        const live: [number, number][] = [];
        const out = new Int32Array(700);
        const callerPreps = (p: PhysMem, pfn: number): void => {
          // What the caller of a callerPreps allocation does to the frame (lruAddNewAnon sets every field).
          p.mem.resetPage(pfn);
          p.mem.setNext(pfn, -1);
          p.mem.setPrev(pfn, -1);
          p.mem.setOwner(pfn, 7);
        };
        for (const s of steps) {
          if (s.kind === 'alloc') {
            const req: AllocRequest = { order: s.order, mt: s.unmovable ? MIGRATE_UNMOVABLE : MIGRATE_MOVABLE, nid: s.nid };
            const x = a.alloc({ ...req });
            expect(b.alloc({ ...req })).toBe(x);
            if (x >= 0) live.push([x, s.order]);
          } else if (s.kind === 'bulk') {
            const req: AllocRequest = { order: 0, mt: MIGRATE_MOVABLE, nid: s.nid, callerPreps: true };
            const got = a.allocBulk(req, s.n, out);
            expect([0, s.n]).toContain(got);
            if (!got) continue;
            woke = 0;
            for (let j = 0; j < got; j++) {
              const pfn = b.alloc({ ...req });
              if (pfn !== out[j] || b.nodeOfPfn(pfn) !== s.nid) expect([j, pfn, b.nodeOfPfn(pfn)]).toEqual([j, out[j], s.nid]);
              callerPreps(a, out[j]!);
              callerPreps(b, pfn);
              live.push([pfn, 0]);
            }
            expect(woke).toBe(0); // taken only where every single allocation passes the fast path (no slowpath, no kswapd)
          } else {
            for (let c = 0; c < s.count && live.length; c++) {
              const [pfn, o] = live.splice((s.pick + c) % live.length, 1)[0]!;
              a.free(pfn, o);
              b.free(pfn, o);
            }
          }
          for (const [za, zb] of a.zones.map((z, i) => [z, b.zones[i]!] as const)) {
            expect([...za.freeBlocks()].join(' ')).toBe([...zb.freeBlocks()].join(' '));
            expect(za.freePages).toBe(zb.freePages);
            expect(za.pristineStart).toBe(zb.pristineStart);
            expect(za.pageblockMt.join('')).toBe(zb.pageblockMt.join(''));
          }
        }
        const state = (p: PhysMem): string => {
          const f: number[] = [];
          for (let pfn = 0; pfn < p.totalPages(); pfn++)
            if (p.mem.isMaterialized(pfn))
              f.push(pfn, p.mem.flags(pfn), p.mem.order(pfn), p.mem.owner(pfn), p.mem.next(pfn), p.mem.prev(pfn), p.mem.mapcount(pfn));
          return f.join(',');
        };
        expect(state(a) === state(b)).toBe(true);
      }),
      {
        numRuns: 100,
        // A MAX_PAGE_ORDER block over a movable and an unmovable pageblock (with no pristine memory
        // left, an unmovable allocation stole the upper half; then both halves were freed and merged),
        // split by a bulk request: single allocations take its movable half, then steal the other.
        examples: [
          [
            [
              { kind: 'alloc', order: 10, unmovable: false, nid: 0 },
              { kind: 'alloc', order: 10, unmovable: false, nid: 0 },
              { kind: 'free', pick: 0, count: 1 },
              { kind: 'alloc', order: 9, unmovable: false, nid: 0 },
              { kind: 'alloc', order: 0, unmovable: true, nid: 0 },
              { kind: 'free', pick: 2, count: 1 },
              { kind: 'free', pick: 1, count: 1 },
              { kind: 'bulk', n: 700, nid: 0 },
            ],
            false,
          ],
          // The third request would take node 0 below its low watermark: declined (single allocations would fall back to node 1).
          [
            [
              { kind: 'bulk', n: 700, nid: 0 },
              { kind: 'bulk', n: 700, nid: 0 },
              { kind: 'bulk', n: 600, nid: 0 },
            ],
            true,
          ],
        ],
      },
    );
  });
});

describe('watermark-gated allocation (get_page_from_freelist, __alloc_pages_slowpath)', () => {
  const ORDER0: AllocRequest = { order: 0, mt: MIGRATE_MOVABLE, nid: 0 };

  /** Two 8 MiB nodes (2048 frames each) with the given watermarks [min, low, high] on both. */
  function twoNodes(wmark: [number, number, number]): PhysMem {
    const p = phys(8, 2);
    for (const z of p.zones) z.wmark.splice(0, 3, ...wmark);
    return p;
  }

  /** Allocate order-0 frames on node 0's zonelist until node 0 has `free` frames left. */
  function fillTo(p: PhysMem, nid: number, free: number): number[] {
    const got: number[] = [];
    while (p.zones[nid]!.freePages > free) got.push(p.alloc({ ...ORDER0, nid, thisNode: true }));
    expect(got.every((pfn) => p.nodeOfPfn(pfn) === nid)).toBe(true);
    return got;
  }

  it('a node at its low watermark falls back to the next node without waking kswapd; kswapd wakes when every node is at low', () => {
    const p = twoNodes([100, 200, 300]);
    const woke: number[] = [];
    p.wakeKswapd = (nid) => woke.push(nid);
    // Node 0 is used down to its low watermark: the last allocation there leaves exactly `low` free.
    for (let i = 0; i < 2048 - 200; i++) expect(p.nodeOfPfn(p.alloc(ORDER0))).toBe(0);
    expect(p.zones[0]!.freePages).toBe(200);
    // One more would leave it below low: node 1 serves it (node_reclaim_mode 0), nobody is woken.
    expect(p.nodeOfPfn(p.alloc(ORDER0))).toBe(1);
    expect(woke).toEqual([]);
    fillTo(p, 1, 200);
    // Every node at low: the slowpath wakes both kswapds and takes node 0's frame at the min watermark.
    expect(p.nodeOfPfn(p.alloc(ORDER0))).toBe(0);
    expect(woke).toEqual([0, 1]);
    // __GFP_THISNODE never leaves its node: node 1 serves from its min reserve, then fails at min.
    fillTo(p, 1, 100);
    expect(p.alloc({ ...ORDER0, nid: 1, thisNode: true })).toBe(-1);
  });

  it('an allocation at the min watermark enters direct reclaim; between min and low it only wakes kswapd', () => {
    const p = twoNodes([100, 200, 300]);
    let woke = 0;
    let reclaims = 0;
    p.wakeKswapd = () => woke++;
    const held = fillTo(p, 0, 101);
    woke = 0;
    p.directReclaim = (req) => {
      reclaims++;
      expect(req.nid).toBe(0);
      // Reclaim frees 32 of the held frames (SWAP_CLUSTER_MAX).
      for (const pfn of held.splice(0, 32)) p.free(pfn, 0);
      return 32;
    };
    const req: AllocRequest = { ...ORDER0, thisNode: true };
    expect(p.alloc(req)).toBeGreaterThanOrEqual(0); // 101 -> 100: allowed at min
    expect([woke, reclaims]).toEqual([1, 0]);
    expect(p.alloc(req)).toBeGreaterThanOrEqual(0); // would go to 99: reclaim first
    expect(reclaims).toBe(1);
    expect(p.zones[0]!.freePages).toBe(131);
  });

  it('PF_MEMALLOC allocates below the min watermark and never reclaims', () => {
    const p = twoNodes([100, 200, 300]);
    fillTo(p, 0, 100);
    let reclaims = 0;
    p.directReclaim = () => (reclaims++, 0);
    p.memalloc = true;
    for (let i = 0; i < 100; i++) expect(p.alloc({ ...ORDER0, thisNode: true })).toBeGreaterThanOrEqual(0);
    expect(p.zones[0]!.freePages).toBe(0);
    expect(p.alloc({ ...ORDER0, thisNode: true })).toBe(-1);
    expect(reclaims).toBe(0);
  });

  it('a THP with __GFP_THISNODE: fast path at low, slowpath at min, and an order-9 block must be free', () => {
    const p = twoNodes([100, 200, 300]);
    const THP: AllocRequest = { order: 9, mt: MIGRATE_MOVABLE, nid: 0, thisNode: true, noKswapd: true };
    let woke = 0;
    p.wakeKswapd = () => woke++;
    // 2048 frames, 4 blocks of 512: three THPs leave 512 free; a fourth would leave 0 < min.
    for (let i = 0; i < 3; i++) expect(p.alloc(THP)).toBeGreaterThanOrEqual(0);
    expect(p.alloc(THP)).toBe(-1);
    expect(woke).toBe(0); // GFP_TRANSHUGE_LIGHT: no __GFP_KSWAPD_RECLAIM
    // Enough free frames above min but no free order-9 block: the per-order check fails it.
    const q = phys(8, 1);
    const frames = Array.from({ length: 2048 }, () => q.alloc(ORDER0));
    q.zones[0]!.wmark.splice(0, 3, 10, 20, 30);
    for (let i = 0; i < frames.length; i += 2) q.free(frames[i]!, 0);
    expect(q.zones[0]!.freePages).toBe(1024);
    expect(q.alloc({ ...THP, nid: 0 })).toBe(-1);
    expect(q.zones[0]!.watermarkOk(0, 20)).toBe(true);
    expect(q.zones[0]!.watermarkOk(1, 20)).toBe(false);
  });

  it('should_reclaim_retry: MAX_RECLAIM_RETRIES + 1 rounds without progress while reclaimable pages would lift the zone over min, then the OOM killer', () => {
    for (const reclaimable of [0, 10_000]) {
      const p = twoNodes([100, 200, 300]);
      const held = fillTo(p, 0, 100);
      let rounds = 0;
      let kills = 0;
      p.directReclaim = () => (rounds++, 0);
      p.reclaimablePages = () => reclaimable;
      p.outOfMemory = () => {
        kills++;
        for (const pfn of held.splice(0, 500)) p.free(pfn, 0); // the victim's memory is reaped
        return true;
      };
      expect(p.alloc({ ...ORDER0, thisNode: false, nodemask: [0] })).toBeGreaterThanOrEqual(0);
      expect(kills).toBe(1);
      expect(rounds).toBe(reclaimable ? MAX_RECLAIM_RETRIES + 1 : 1);
    }
  });

  it("property: no allocation without PF_MEMALLOC takes a zone below min, fallback only past the preferred node's low watermark, no frame twice, pages conserved", () => {
    const step = fc.oneof(
      fc.record({
        kind: fc.constant('alloc' as const),
        order: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 10 })),
        nid: fc.nat(1),
        thisNode: fc.boolean(),
        memalloc: fc.boolean(),
      }),
      fc.record({ kind: fc.constant('free' as const), pick: fc.nat(), count: fc.integer({ min: 1, max: 40 }) }),
    );
    const wm = fc.tuple(fc.integer({ min: 0, max: 600 }), fc.integer({ min: 0, max: 300 }), fc.integer({ min: 0, max: 300 }));
    fc.assert(
      fc.property(fc.array(step, { maxLength: 120 }), wm, wm, (steps, w0, w1) => {
        const p = phys(8, 2);
        for (const [z, [min, d1, d2]] of [
          [p.zones[0]!, w0],
          [p.zones[1]!, w1],
        ] as const)
          z.wmark.splice(0, 3, min, min + d1, min + d1 + d2);
        const live: [number, number][] = [];
        // Direct reclaim and the OOM killer free some of what is live, as reclaim would.
        const reclaim = (n: number): number => {
          let freed = 0;
          for (const [pfn, o] of live.splice(0, n)) {
            p.free(pfn, o);
            freed += 1 << o;
          }
          return freed;
        };
        p.directReclaim = () => reclaim(2);
        p.reclaimablePages = () => 0;
        p.outOfMemory = () => reclaim(8) > 0;
        for (const s of steps) {
          if (s.kind === 'free') {
            for (let c = 0; c < s.count && live.length; c++) {
              const [pfn, o] = live.splice((s.pick + c) % live.length, 1)[0]!;
              p.free(pfn, o);
            }
          } else {
            const pref = p.zones[s.nid]!;
            const prefOkAtLow = pref.watermarkOk(s.order, pref.wmark[WMARK_LOW]!);
            p.memalloc = s.memalloc;
            const pfn = p.alloc({ order: s.order, mt: MIGRATE_MOVABLE, nid: s.nid, thisNode: s.thisNode });
            p.memalloc = false;
            if (pfn >= 0) {
              const z = p.zones[p.nodeOfPfn(pfn)]!;
              if (!s.memalloc) expect(z.freePages).toBeGreaterThanOrEqual(z.wmark[WMARK_MIN]!);
              if (z !== pref) expect(prefOkAtLow).toBe(false);
              if (s.thisNode) expect(z).toBe(pref);
              live.push([pfn, s.order]);
            }
          }
          const used = live.reduce((a, [, o]) => a + (1 << o), 0);
          expect(p.freePages() + used).toBe(p.totalPages());
        }
        const sorted = [...live].sort((a, b) => a[0] - b[0]);
        for (let i = 1; i < sorted.length; i++) expect(sorted[i]![0]).toBeGreaterThanOrEqual(sorted[i - 1]![0] + (1 << sorted[i - 1]![1]));
      }),
      { numRuns: 150 },
    );
  });
});
