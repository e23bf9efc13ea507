/**
 * GuestPageAlloc.allocBlockPages (and peekBlockPages, which names its block
 * without taking it) against what it stands for: 1024 order-0
 * allocPages calls. On random allocator states (allocations of orders
 * 0-10, frees, ranges taken, two nodes, an odd-sized range), either it
 * declines and changes nothing, or the 1024 calls hand out exactly its
 * block in ascending order and leave every field of the allocator equal.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { SeededRandom } from '../sim/random.ts';
import { GuestPageAlloc, PageUse, type GuestAllocRequest } from './page_alloc.ts';
import { stateDigest } from '../testing/state_digest.ts';

const MiB = 2 ** 20;

function guest(): GuestPageAlloc {
  // Node 0: 16 MiB and an 8 MiB + 12 KiB range (not block aligned at its end); node 1: 16 MiB.
  return new GuestPageAlloc(
    [
      { gpa: 0, size: 16 * MiB, node: 0 },
      { gpa: 32 * MiB, size: 8 * MiB + 12288, node: 0 },
      { gpa: 64 * MiB, size: 16 * MiB, node: 1 },
    ],
    { cpuNode: [0, 1] },
  );
}

/** Replay `steps` random operations of stream `seed` on g; returns the blocks still allocated. */
function churn(g: GuestPageAlloc, seed: number, steps: number): void {
  const rnd = new SeededRandom(seed).stream('guest-block');
  const live: [number, number][] = [];
  for (let i = 0; i < steps; i++) {
    const r = rnd.float();
    if (live.length && r < 0.4) {
      const [p, o] = live.splice(rnd.int(0, live.length - 1), 1)[0]!;
      g.freePages(p, o);
    } else if (r < 0.45) {
      const pfn = rnd.int(0, g.maxPfn - 1);
      const nr = rnd.int(1, 64);
      if (g.allocRange(pfn, nr, PageUse.Anon) === nr) for (let p = pfn; p < pfn + nr; p++) live.push([p, 0]);
    } else {
      const o = rnd.float() < 0.1 ? 10 : rnd.int(0, 3);
      const p = g.allocPages({ order: o, use: PageUse.Anon, cpu: rnd.int(0, 1), noRetry: true });
      if (p >= 0) live.push([p, o]);
    }
  }
}

describe('guest allocator: a block of order-0 pages at once', () => {
  it('property: allocBlockPages leaves the state 1024 allocPages calls leave, or declines and changes nothing', () => {
    let taken = 0;
    let declined = 0;
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 1 << 30 }),
        fc.integer({ min: 0, max: 300 }),
        fc.record({
          cpu: fc.integer({ min: 0, max: 1 }),
          file: fc.boolean(),
          thisNode: fc.boolean(),
          nid: fc.option(fc.integer({ min: 0, max: 1 })),
        }),
        fc.integer({ min: 1, max: 12 }),
        (seed, steps, r, blocks) => {
          const a = guest();
          const b = guest();
          churn(a, seed, steps);
          churn(b, seed, steps);
          expect(stateDigest(a)).toBe(stateDigest(b));
          const req: GuestAllocRequest = {
            order: 0,
            use: r.file ? PageUse.File : PageUse.Anon,
            cpu: r.cpu,
            thisNode: r.thisNode,
            noRetry: true,
          };
          if (r.nid !== null) req.nid = r.nid;
          // Several blocks one after the other (the second starts from the state the first left).
          for (let k = 0; k < blocks; k++) {
            const peek = a.peekBlockPages(req);
            expect(stateDigest(a)).toBe(stateDigest(b)); // peeking changes nothing
            const p = a.allocBlockPages(req);
            expect(p).toBe(peek);
            if (p < 0) {
              declined++;
              expect(stateDigest(a)).toBe(stateDigest(b));
              return;
            }
            taken++;
            expect(p % 1024).toBe(0);
            let inOrder = 0;
            for (let j = 0; j < 1024; j++) if (b.allocPages(req) === p + j) inOrder++;
            expect(inOrder).toBe(1024);
            expect(stateDigest(a)).toBe(stateDigest(b));
          }
        },
      ),
      { numRuns: 200 },
    );
    // Both outcomes were exercised.
    expect(taken).toBeGreaterThan(0);
    expect(declined).toBeGreaterThan(0);
  });
});
