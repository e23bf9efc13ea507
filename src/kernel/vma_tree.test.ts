import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { VmaTree, alignedAreaTopdown } from './vma_tree.ts';
import { STACK_GUARD_GAP, VM, Vma, vmStartGap } from './mm_types.ts';
import { PAGE_SIZE } from './uapi.ts';

const FLOOR = 16 * PAGE_SIZE;
const SPACE = 1 << 16; // pages: 256 MiB, so stack guard gaps (256 pages) matter

type Op =
  | { k: 'insert'; at: number; pages: number; grows: boolean }
  | { k: 'erase'; i: number }
  | { k: 'shrink'; i: number; pages: number }
  | { k: 'grow'; i: number; pages: number }
  | { k: 'query'; at: number; len: number; limit: number; align: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      k: fc.constant('insert' as const),
      at: fc.nat(SPACE - 1),
      pages: fc.integer({ min: 1, max: 600 }),
      grows: fc.boolean(),
    }),
  },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('erase' as const), i: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('shrink' as const), i: fc.nat(), pages: fc.integer({ min: 1, max: 100 }) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('grow' as const), i: fc.nat(), pages: fc.integer({ min: 1, max: 400 }) }) },
  {
    weight: 3,
    arbitrary: fc.record({
      k: fc.constant('query' as const),
      at: fc.nat(SPACE),
      len: fc.integer({ min: 1, max: 2000 }),
      limit: fc.nat(SPACE + 16),
      align: fc.constantFrom(1, 16, 512),
    }),
  },
);

/** Brute force over the sorted array: the gaps below the VMAs starting under limit, highest first. */
function bruteGapTopdown(vmas: readonly Vma[], limit: number, len: number, align: number): number {
  for (let i = vmas.length - 1; i >= 0; i--) {
    const v = vmas[i]!;
    if (v.start >= limit) continue;
    const gapStart = Math.max(i > 0 ? vmas[i - 1]!.end : FLOOR, FLOOR);
    const a = alignedAreaTopdown(gapStart, vmStartGap(v), len, align);
    if (a >= 0) return a;
  }
  return -1;
}

describe('VmaTree', () => {
  it('answers every lookup, range and top-down gap search as a sorted array does, and stays balanced', () => {
    fc.assert(
      fc.property(fc.array(opArb, { minLength: 1, maxLength: 400, size: 'max' }), (ops) => {
        const tree = new VmaTree(FLOOR, vmStartGap);
        let model: Vma[] = [];
        const sorted = (): void => void model.sort((a, b) => a.start - b.start);
        const free = (s: number, e: number, except?: Vma): boolean => model.every((v) => v === except || v.end <= s || v.start >= e);
        for (const op of ops) {
          if (op.k === 'insert') {
            const s = op.at * PAGE_SIZE;
            const e = Math.min(SPACE, op.at + op.pages) * PAGE_SIZE;
            if (e <= s || !free(s, e)) continue;
            const v = new Vma(s, e, op.grows ? VM.GROWSDOWN : 0, 0);
            tree.insert(v);
            model.push(v);
            sorted();
          } else if (op.k === 'erase') {
            if (!model.length) continue;
            const v = model[op.i % model.length]!;
            tree.erase(v);
            model = model.filter((x) => x !== v);
          } else if (op.k === 'shrink') {
            // A split's lower part, or munmap of a tail: the end moves down in place.
            if (!model.length) continue;
            const v = model[op.i % model.length]!;
            if (v.size <= op.pages * PAGE_SIZE) continue;
            v.end -= op.pages * PAGE_SIZE;
            tree.adjusted(v);
          } else if (op.k === 'grow') {
            // A stack growing down into free space: the start moves down in place.
            if (!model.length) continue;
            const v = model[op.i % model.length]!;
            const s = v.start - op.pages * PAGE_SIZE;
            if (s < 0 || !free(s, v.end, v)) continue;
            v.start = s;
            tree.adjusted(v);
          } else {
            const a = op.at * PAGE_SIZE;
            const b = a + op.len * PAGE_SIZE;
            expect(tree.findVma(a)).toBe(model.find((v) => v.end > a));
            expect(tree.lastBelow(a)).toBe(model.filter((v) => v.start < a).at(-1));
            expect(tree.firstAbove(a)).toBe(model.find((v) => v.start > a));
            expect(tree.range(a, b)).toEqual(model.filter((v) => v.end > a && v.start < b));
            const limit = op.limit * PAGE_SIZE;
            const len = op.len * PAGE_SIZE;
            expect(tree.gapTopdown(limit, len, op.align * PAGE_SIZE)).toBe(bruteGapTopdown(model, limit, len, op.align * PAGE_SIZE));
          }
          expect(tree.size).toBe(model.length);
          expect(tree.verify()).toEqual([]);
        }
        expect(tree.toArray()).toEqual(model);
        for (const v of model) expect(tree.has(v)).toBe(true);
      }),
      { numRuns: 200 },
    );
  });

  it('keeps the stack guard gap out of the gap below a VM_GROWSDOWN VMA', () => {
    const tree = new VmaTree(FLOOR, vmStartGap);
    const low = new Vma(FLOOR, FLOOR + 16 * PAGE_SIZE, 0, 0);
    const stack = new Vma(FLOOR + 16 * PAGE_SIZE + STACK_GUARD_GAP + 8 * PAGE_SIZE, FLOOR + 2 * STACK_GUARD_GAP, VM.GROWSDOWN, 0);
    tree.insert(stack);
    tree.insert(low);
    // 8 pages free below the guard gap: a 9-page area does not fit there.
    expect(tree.gapTopdown(Infinity, 8 * PAGE_SIZE, PAGE_SIZE)).toBe(low.end);
    expect(tree.gapTopdown(Infinity, 9 * PAGE_SIZE, PAGE_SIZE)).toBe(-1);
    expect(tree.verify()).toEqual([]);
  });
});
