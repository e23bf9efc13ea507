import { describe, expect, it } from 'vitest';
import { smallKernel, RW, ANON } from '../testing/fixtures.ts';
import { MADV, MAP, PROT } from './uapi.ts';
import { smaps } from './procfs.ts';
import { VM } from './mm_types.ts';

describe('mmap placement and VMA merging', () => {
  it('places mappings top-down, 2M-aligns PMD-multiple anonymous lengths, and merges neighbours', () => {
    const k = smallKernel();
    const p = k.createProcess('m');
    const a = k.mmap(p, 0, 4 << 20, RW, ANON);
    const b = k.mmap(p, 0, 4 << 20, RW, ANON);
    expect(a % (2 << 20)).toBe(0);
    expect(b).toBe(a - (4 << 20));
    expect(p.mm.vmas).toHaveLength(1);
    expect(smaps(k, p.mm, a)!.Size).toBe(8192);
    const c = k.mmap(p, 0, 12 << 10, RW, ANON); // not a PMD multiple: directly below, not aligned
    expect(c).toBe(b - (12 << 10));
    expect(p.mm.vmas).toHaveLength(1);
  });

  it('splits on a partial mprotect and merges back when the protection returns', () => {
    const k = smallKernel();
    const p = k.createProcess('m');
    const a = k.mmap(p, 0, 64 << 10, RW, ANON);
    expect(k.mprotect(p, a + (16 << 10), 8 << 10, PROT.PROT_READ)).toBe(0);
    expect(p.mm.vmas.map((v) => (v.end - v.start) >> 10)).toEqual([16, 8, 40]);
    expect(k.mprotect(p, a + (16 << 10), 8 << 10, RW)).toBe(0);
    expect(p.mm.vmas).toHaveLength(1);
  });

  it('gives Linux errnos for bad arguments', () => {
    const k = smallKernel();
    const p = k.createProcess('m');
    expect(k.mmap(p, 0, 0, RW, ANON)).toBe(-22);
    expect(k.mmap(p, 0, 4096, RW, MAP.MAP_ANONYMOUS)).toBe(-22);
    const a = k.mmap(p, 0, 8192, RW, ANON);
    expect(k.mmap(p, a, 4096, RW, ANON | MAP.MAP_FIXED_NOREPLACE)).toBe(-17);
    expect(k.munmap(p, a + 1, 4096)).toBe(-22);
    expect(k.mprotect(p, a + 8192, 4096, RW)).toBe(-12);
    expect(k.madvise(p, a, 4096, 999)).toBe(-22);
    // a single mapping larger than RAM fails under the overcommit heuristic
    expect(k.mmap(p, 0, 1 << 30, RW, ANON)).toBe(-12);
    expect(k.mmap(p, 0, 1 << 30, RW, ANON | MAP.MAP_NORESERVE)).toBeGreaterThan(0);
  });

  it('sets VM flags as calcvmflags and madvise do, and reports THPeligible by the sysfs mode', () => {
    const k = smallKernel();
    const p = k.createProcess('m');
    const a = k.mmap(p, 0, 4 << 20, RW, ANON);
    const v = p.mm.vmaAt(a)!;
    expect(v.flags & VM.ACCOUNT).toBeTruthy();
    expect(smaps(k, p.mm, a)!.VmFlags).toEqual(['rd', 'wr', 'mr', 'mw', 'me', 'ac']);
    expect(smaps(k, p.mm, a)!.THPeligible).toBe(0);
    k.madvise(p, a, 4 << 20, MADV.MADV_HUGEPAGE);
    expect(smaps(k, p.mm, a)!.THPeligible).toBe(1);
    k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'never');
    expect(smaps(k, p.mm, a)!.THPeligible).toBe(0);
    const s = k.mmap(p, 0, 4 << 20, RW, ANON | MAP.MAP_STACK);
    expect(smaps(k, p.mm, s)!.VmFlags).toContain('nh');
  });
});

describe('sysfs knobs', () => {
  it('reads the bracketed mode and rejects what Linux rejects', () => {
    const k = smallKernel();
    expect(k.sysfs.read('/sys/kernel/mm/transparent_hugepage/enabled')).toBe('always [madvise] never');
    expect(k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'sometimes')).toBe(-22);
    expect(k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'always\n')).toBe(0);
    expect(k.sysfs.write('/sys/kernel/mm/transparent_hugepage/khugepaged/max_ptes_none', '512')).toBe(-22);
    expect(k.sysfs.write('/sys/kernel/mm/transparent_hugepage/khugepaged/pages_collapsed', '1')).toBe(-13);
    expect(k.sysfs.write('/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_overcommit_hugepages', '1')).toBe(-22);
    expect(k.sysfs.write('/sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages', '3')).toBe(0);
    expect(k.sysfs.read('/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages')).toBe('3');
    expect(k.sysfs.read('/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages')).toBe('0');
  });
});
