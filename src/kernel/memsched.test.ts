import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { smallKernel, RW, ANON } from '../testing/fixtures.ts';
import { PAGE_SIZE } from './uapi.ts';
import { followPage } from './memory.ts';

describe('memsched groups (proposal, feature memsched)', () => {
  it('is off by default: the calls fail with ENOSYS', () => {
    const k = smallKernel();
    const p = k.createProcess('m');
    expect(k.memsched.tbind(p.mainThread, 1)).toBe(-38);
  });

  it('keeps a group on one node, spreads groups, and moves a group as a whole', () => {
    const k = smallKernel({ nodes: 2, mib: 64 });
    k.sysfs.write('/sys/kernel/memtwin/features/memsched', '1');
    const p = k.createProcess('vm');
    const a = k.mmap(p, 0, 16 << 20, RW, ANON);
    const b = k.mmap(p, 0, 16 << 20, RW, ANON);
    expect(k.memsched.mbind(p, a, 16 << 20, 1)).toBe(0);
    expect(k.memsched.mbind(p, b, 16 << 20, 2)).toBe(0); // group 2 goes to the other node
    const t1 = k.createThread(p, 0) as Exclude<ReturnType<typeof k.createThread>, number>;
    const t2 = k.createThread(p, 0) as Exclude<ReturnType<typeof k.createThread>, number>;
    k.memsched.tbind(t1, 1);
    k.memsched.tbind(t2, 2);
    expect(k.cpuToNode(t1.cpu)).not.toBe(k.cpuToNode(t2.cpu));
    k.access(t2, a, 16 << 20, PAGE_SIZE, true, 3); // a thread of another group touches group 1's memory
    const nodeOf = (va: number): number => k.phys.nodeOfPfn(followPage(p.mm, va));
    const home1 = nodeOf(a);
    expect(home1).toBe(k.cpuToNode(t1.cpu));
    expect(k.memsched.move(1, 1 - home1)).toBe(0);
    expect(nodeOf(a)).toBe(1 - home1);
    expect(nodeOf(a + (8 << 20))).toBe(1 - home1);
    expect(k.cpuToNode(t1.cpu)).toBe(1 - home1);
  });

  it('homes two groups bound by their threads first on different nodes, even when one node has more free memory', () => {
    const k = smallKernel({ nodes: 2, mib: 64 });
    k.sysfs.write('/sys/kernel/memtwin/features/memsched', '1');
    // Another process holds 16 MiB of node 1: node 0 has the most free memory for both groups.
    const other = k.createProcess('other');
    const o = k.mmap(other, 0, 16 << 20, RW, ANON);
    const ot = k.createThread(other, 2) as Exclude<ReturnType<typeof k.createThread>, number>; // a CPU of node 1: first touch there
    k.access(ot, o, 16 << 20, PAGE_SIZE, true, 1);
    expect(k.phys.zones[0]!.freePages).toBeGreaterThan(k.phys.zones[1]!.freePages);
    const p = k.createProcess('vms');
    const t1 = k.createThread(p, 0) as Exclude<ReturnType<typeof k.createThread>, number>;
    const t2 = k.createThread(p, 0) as Exclude<ReturnType<typeof k.createThread>, number>;
    expect(k.memsched.tbind(t1, 1)).toBe(0);
    expect(k.memsched.tbind(t2, 2)).toBe(0);
    expect(k.cpuToNode(t1.cpu)).toBe(0);
    expect(k.cpuToNode(t2.cpu)).toBe(1);
    // Their memory follows their homes.
    const a = k.mmap(p, 0, 8 << 20, RW, ANON);
    const b = k.mmap(p, 0, 8 << 20, RW, ANON);
    expect(k.memsched.mbind(p, a, 8 << 20, 1)).toBe(0);
    expect(k.memsched.mbind(p, b, 8 << 20, 2)).toBe(0);
    k.access(t1, a, 8 << 20, PAGE_SIZE, true, 2);
    k.access(t1, b, 8 << 20, PAGE_SIZE, true, 2);
    expect(k.phys.nodeOfPfn(followPage(p.mm, a))).toBe(0);
    expect(k.phys.nodeOfPfn(followPage(p.mm, b))).toBe(1);
  });

  it('homes a group where its memory fits, even on a node with more groups', () => {
    const k = smallKernel({ nodes: 2, mib: 64 });
    k.sysfs.write('/sys/kernel/memtwin/features/memsched', '1');
    const p = k.createProcess('vms');
    const a = k.mmap(p, 0, 40 << 20, RW, ANON);
    const b = k.mmap(p, 0, 40 << 20, RW, ANON);
    const c = k.mmap(p, 0, 8 << 20, RW, ANON);
    expect(k.memsched.mbind(p, a, 40 << 20, 1)).toBe(0); // node 0
    expect(k.memsched.mbind(p, c, 8 << 20, 3)).toBe(0); // node 1: fewer groups
    // 40 MiB fits only in node 1's room (node 0 has 64 - 40 left): group 2 joins group 3 there.
    expect(k.memsched.mbind(p, b, 40 << 20, 2)).toBe(0);
    const t = k.createThread(p, 0) as Exclude<ReturnType<typeof k.createThread>, number>;
    k.memsched.tbind(t, 2);
    expect(k.cpuToNode(t.cpu)).toBe(1);
  });

  it('spreads up to one group per node before doubling any (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 8 }), (nodes, groups) => {
        const k = smallKernel({ nodes, mib: 16 });
        k.sysfs.write('/sys/kernel/memtwin/features/memsched', '1');
        const p = k.createProcess('vms');
        const homes = new Map<number, number>();
        for (let g = 0; g < groups; g++) {
          const t = k.createThread(p, 0) as Exclude<ReturnType<typeof k.createThread>, number>;
          expect(k.memsched.tbind(t, g)).toBe(0);
          const n = k.cpuToNode(t.cpu);
          homes.set(n, (homes.get(n) ?? 0) + 1);
        }
        // Equal nodes: the counts of groups per node differ by at most one.
        const counts = Array.from({ length: nodes }, (_, n) => homes.get(n) ?? 0);
        expect(Math.max(...counts) - Math.min(...counts)).toBeLessThanOrEqual(1);
      }),
      { numRuns: 30 },
    );
  });
});
