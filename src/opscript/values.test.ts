import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { FLAG_SETS, flags, mempolicyModeNames } from './values.ts';
import { MPOL } from '../kernel/uapi.ts';

describe('mempolicyModeNames (get_mempolicy mode)', () => {
  it('names the mode alone as a string', () => {
    expect(mempolicyModeNames(MPOL.MPOL_DEFAULT)).toBe('MPOL_DEFAULT');
    expect(mempolicyModeNames(MPOL.MPOL_INTERLEAVE)).toBe('MPOL_INTERLEAVE');
    expect(mempolicyModeNames(MPOL.MPOL_WEIGHTED_INTERLEAVE)).toBe('MPOL_WEIGHTED_INTERLEAVE');
  });
  it('lists the mode and its flags when flags are set (32770 is BIND|STATIC_NODES)', () => {
    expect(mempolicyModeNames(32770)).toEqual(['MPOL_BIND', 'MPOL_F_STATIC_NODES']);
    expect(mempolicyModeNames(MPOL.MPOL_BIND | MPOL.MPOL_F_NUMA_BALANCING)).toEqual(['MPOL_BIND', 'MPOL_F_NUMA_BALANCING']);
    expect(mempolicyModeNames(MPOL.MPOL_INTERLEAVE | MPOL.MPOL_F_RELATIVE_NODES)).toEqual(['MPOL_INTERLEAVE', 'MPOL_F_RELATIVE_NODES']);
  });
  it('keeps a mode no name covers as a number', () => {
    expect(mempolicyModeNames(7)).toEqual([7]);
  });
  it('round-trips: the output parses back, as set_mempolicy`s mode, to the same number', () => {
    const modes = Object.values(FLAG_SETS.mode).filter((v) => v < 8);
    const f = [0, MPOL.MPOL_F_STATIC_NODES, MPOL.MPOL_F_RELATIVE_NODES, MPOL.MPOL_F_NUMA_BALANCING];
    fc.assert(
      fc.property(fc.constantFrom(...modes), fc.subarray(f), (m, fl) => {
        const v = fl.reduce((a, b) => a | b, m);
        expect(flags('mode', mempolicyModeNames(v), 'mode')).toBe(v);
      }),
    );
  });
});
