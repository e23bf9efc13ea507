import { describe, expect, it } from 'vitest';
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
});
