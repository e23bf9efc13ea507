import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Ept, EPT_NONE, EPT_TABLE_ENTRIES, EPT_ZERO } from './ept.ts';

/** What vm.ts's eptMap writes: a run of frames (4K, 2M or 1G aligned, or any run) or the zero page. */
const op = (entries: number) =>
  fc.oneof(
    fc.record({
      kind: fc.constant('run' as const),
      i0: fc.nat(entries - 1),
      n: fc.oneof(fc.constant(1), fc.integer({ min: 1, max: 3 * EPT_TABLE_ENTRIES })),
      first: fc.integer({ min: 1, max: 2 ** 31 - 4 * EPT_TABLE_ENTRIES }),
    }),
    fc.record({ kind: fc.constant('zero' as const), i0: fc.nat(entries - 1), n: fc.integer({ min: 1, max: 2 * EPT_TABLE_ENTRIES }) }),
    // A fault after fault of ascending pages on ascending frames: the case kept as a run.
    fc.record({
      kind: fc.constant('ascending' as const),
      i0: fc.nat(entries - 1),
      n: fc.integer({ min: 1, max: 2 * EPT_TABLE_ENTRIES }),
      first: fc.integer({ min: 1, max: 2 ** 20 }),
    }),
  );

describe('Ept', () => {
  it('reads exactly as a flat array of one entry per page, whatever is written (get, tableEmpty, noneIn)', () => {
    const entries = 5 * EPT_TABLE_ENTRIES + 17; // a partial last table
    fc.assert(
      fc.property(fc.array(op(entries), { maxLength: 40 }), (ops) => {
        const ept = new Ept(entries);
        const flat = new Int32Array(entries);
        for (const o of ops) {
          const n = Math.min(o.n, entries - o.i0);
          if (o.kind === 'zero') {
            ept.fillZero(o.i0, n);
            flat.fill(EPT_ZERO, o.i0, o.i0 + n);
          } else if (o.kind === 'run') {
            ept.setRun(o.i0, n, o.first);
            for (let j = 0; j < n; j++) flat[o.i0 + j] = o.first + j;
          } else {
            for (let j = 0; j < n; j++) {
              ept.setRun(o.i0 + j, 1, o.first + j);
              flat[o.i0 + j] = o.first + j;
            }
          }
          for (let i = 0; i < entries; i++) if (ept.get(i) !== flat[i]) return false;
          // noneIn over a few ranges, against the flat array.
          for (let r = 0; r < 8; r++) {
            const i0 = (o.i0 * 7 + r * 613) % entries;
            const len = 1 + ((o.n + r * 97) % Math.min(3 * EPT_TABLE_ENTRIES, entries - i0));
            if (ept.noneIn(i0, len) !== flat.subarray(i0, i0 + len).every((e) => e === EPT_NONE)) return false;
          }
          for (let t = 0; t * EPT_TABLE_ENTRIES < entries; t++) {
            const empty = flat.subarray(t * EPT_TABLE_ENTRIES, (t + 1) * EPT_TABLE_ENTRIES).every((e) => e === EPT_NONE);
            if (ept.tableEmpty(t) !== empty) return false;
          }
        }
        return true;
      }),
      { numRuns: 300 },
    );
  });

  it('keeps a 2M of ascending frames faulted page by page as one run (no table of 512 entries)', () => {
    const ept = new Ept(4 * EPT_TABLE_ENTRIES);
    for (let i = 0; i < 2 * EPT_TABLE_ENTRIES; i++) ept.setRun(i, 1, 1000 + i);
    expect(ept.get(0)).toBe(1000);
    expect(ept.get(2 * EPT_TABLE_ENTRIES - 1)).toBe(1000 + 2 * EPT_TABLE_ENTRIES - 1);
    expect(ept.get(2 * EPT_TABLE_ENTRIES)).toBe(EPT_NONE);
    expect(ept.denseTables).toBe(0);
    // Another frame in the middle: that table becomes an array, the other stays a run.
    ept.setRun(700, 1, 5);
    expect(ept.get(700)).toBe(5);
    expect(ept.get(701)).toBe(1000 + 701);
    expect(ept.denseTables).toBe(1);
  });
});
