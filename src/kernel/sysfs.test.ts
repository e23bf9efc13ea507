/**
 * Numbers written to knobs: sysfs (kstrtoul/kstrtouint, base 10) and
 * /proc/sys (proc_do*vec_minmax, base 0) parse them differently, as Linux
 * does; test/op-scripts/sysfs-numbers.jsonl confirms the cases against the
 * real kernel. Here: the rules as properties over any input.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { smallKernel } from '../testing/fixtures.ts';
import { ERRNO } from './uapi.ts';

const POOL = '/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages';
const SCAN = '/sys/kernel/mm/transparent_hugepage/khugepaged/pages_to_scan';
const OVERCOMMIT = '/proc/sys/vm/overcommit_memory';

describe('sysfs and procfs number parsing', () => {
  it('never throws, and answers 0 or a negative errno, whatever is written to any knob', () => {
    const k = smallKernel({ nodes: 2, mib: 64 });
    const errnos = new Set(Object.values(ERRNO).map((e) => -e));
    const paths = k.sysfs.paths();
    fc.assert(
      fc.property(
        fc.constantFrom(...paths),
        fc.oneof(fc.string({ unit: 'binary', maxLength: 30 }), fc.bigInt({ min: -(2n ** 70n), max: 2n ** 70n }).map(String)),
        (path, v) => {
          const r = k.sysfs.write(path, v);
          expect(r === 0 || errnos.has(r)).toBe(true);
        },
      ),
      { numRuns: 3000 },
    );
  });

  it('sysfs: decimal only; above ULONG_MAX is ERANGE for nr_hugepages, above UINT_MAX EINVAL for pages_to_scan', () => {
    const k = smallKernel({ nodes: 2, mib: 64 });
    fc.assert(
      fc.property(fc.bigInt({ min: 2n ** 64n, max: 2n ** 200n }), (n) => {
        expect(k.sysfs.write(POOL, String(n))).toBe(-ERRNO.ERANGE);
        expect(k.sysfs.write(SCAN, String(n))).toBe(-ERRNO.EINVAL);
      }),
    );
    expect(k.sysfs.write(SCAN, String(2n ** 32n))).toBe(-ERRNO.EINVAL);
    expect(k.sysfs.write(SCAN, String(2n ** 32n - 1n))).toBe(0);
    expect(k.sysfs.write(POOL, '0x1')).toBe(-ERRNO.EINVAL);
    expect(k.sysfs.write(POOL, '+1')).toBe(0);
    expect(k.sysfs.write(POOL, '')).toBe(0);
    // 2^64 - 1 is a valid count: the pool takes what the 128 MiB of memory holds, as Linux would.
    expect(k.sysfs.write(POOL, String(2n ** 64n - 1n))).toBe(0);
    expect(Number(k.sysfs.read(POOL))).toBeLessThanOrEqual(64);
    expect(Number(k.sysfs.read(POOL))).toBeGreaterThan(0);
  });

  it('/proc/sys: whitespace and base 0, every error EINVAL, the first value counts', () => {
    const k = smallKernel({ nodes: 2, mib: 64 });
    const w = (v: string): number => k.sysfs.write(OVERCOMMIT, v);
    expect([w(' 0x2\n'), k.sysfs.read(OVERCOMMIT)]).toEqual([0, '2']);
    expect([w('01 7'), k.sysfs.read(OVERCOMMIT)]).toEqual([0, '1']);
    expect([w('-0'), k.sysfs.read(OVERCOMMIT)]).toEqual([0, '0']);
    for (const v of ['+1', '08', '3', '-1', '0x', '\n', String(2n ** 64n), '2147483648', '0.5'])
      expect([v, w(v)]).toEqual([v, -ERRNO.EINVAL]);
    expect(k.sysfs.write('/proc/sys/vm/nr_hugepages', '-0')).toBe(-ERRNO.EINVAL);
    expect(w('')).toBe(0);
  });
});
