import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { PfnRuns } from './pfn_runs.ts';

describe('PfnRuns', () => {
  it('holds the same frames in the same order as an array pushed and spliced from the end', () => {
    const step = fc.oneof(
      fc.record({ push: fc.nat(1 << 20), run: fc.integer({ min: 1, max: 300 }) }),
      fc.record({ pop: fc.integer({ min: 0, max: 400 }) }),
    );
    fc.assert(
      fc.property(fc.array(step, { maxLength: 60 }), (steps) => {
        const runs = new PfnRuns();
        const arr: number[] = [];
        for (const s of steps) {
          if ('push' in s)
            for (let j = 0; j < s.run; j++) {
              runs.push(s.push + j);
              arr.push(s.push + j);
            }
          else {
            const n = Math.min(s.pop, arr.length);
            expect(runs.popNewest(n)).toEqual(arr.splice(arr.length - n, n));
          }
          expect(runs.length).toBe(arr.length);
        }
        expect([...runs]).toEqual(arr);
      }),
      { numRuns: 200 },
    );
  });
});
