/**
 * Memory policies and page migration on a multi-node host, against the man
 * pages' rules (this machine has one node, so these are checked here rather
 * than against the real kernel).
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { smallKernel, RW, ANON } from '../testing/fixtures.ts';
import { MADV, MPOL, PAGE_SIZE, PMD_SIZE, MAP } from './uapi.ts';
import { setCpusetMems, sysGetMempolicy, sysMbind, sysMigratePages, sysProcessMbind, sysSetMempolicy } from './mempolicy.ts';
import { sysSetresuid } from './cred.ts';
import { sysMovePages } from './migrate.ts';
import { followPage } from './memory.ts';
import { verifyKernel } from './debug_vm.ts';
import { numaMaps, pagemap } from './procfs.ts';
import type { Kernel } from './kernel.ts';
import type { Process } from './sched.ts';

function nodesOf(k: Kernel, p: Process, a: number, pages: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < pages; i++) {
    const pfn = followPage(p.mm, a + i * PAGE_SIZE);
    out.push(pfn >= 0 ? k.phys.nodeOfPfn(pfn) : -1);
  }
  return out;
}

function fourNodes() {
  const k = smallKernel({ nodes: 4, mib: 64 });
  const p = k.createProcess('n');
  return { k, p, t: p.mainThread };
}

describe('memory policies', () => {
  it('task interleave goes round robin; VMA interleave by page offset (set_mempolicy02, mbind)', () => {
    const { k, p, t } = fourNodes();
    expect(sysSetMempolicy(k, t, MPOL.MPOL_INTERLEAVE, [0, 1])).toBe(0);
    const a = k.mmap(p, 0, 16 * PAGE_SIZE, RW, ANON);
    k.access(t, a, 16 * PAGE_SIZE, PAGE_SIZE, true, 1);
    const nodes = nodesOf(k, p, a, 16);
    expect(nodes.filter((n) => n === 0)).toHaveLength(8);
    expect(nodes.filter((n) => n === 1)).toHaveLength(8);
    sysSetMempolicy(k, t, MPOL.MPOL_DEFAULT, []);
    const b = k.mmap(p, 0, 8 * PAGE_SIZE, RW, ANON);
    expect(sysMbind(k, t, b, 8 * PAGE_SIZE, MPOL.MPOL_INTERLEAVE, [1, 2, 3], 0)).toBe(0);
    k.access(t, b, 8 * PAGE_SIZE, PAGE_SIZE, true, 1);
    // node = nodes[(vpn) % 3], vpn = address / 4K for an anonymous VMA
    expect(nodesOf(k, p, b, 8)).toEqual(Array.from({ length: 8 }, (_, i) => [1, 2, 3][(b / PAGE_SIZE + i) % 3]));
    expect(numaMaps(k, p.mm, b)!.policy).toBe('interleave:1-3');
    expect(k.vmstat.snapshot().numa_interleave).toBeGreaterThanOrEqual(16);
  });

  it('binds faults to the nearest allowed node, and reports policies back as Linux does', () => {
    const { k, p, t } = fourNodes();
    const a = k.mmap(p, 0, 4 * PAGE_SIZE, RW, ANON);
    expect(sysMbind(k, t, a, 4 * PAGE_SIZE, MPOL.MPOL_BIND, [2, 3], 0)).toBe(0);
    k.access(t, a, 4 * PAGE_SIZE, PAGE_SIZE, true, 1);
    expect(nodesOf(k, p, a, 4).every((n) => n === 2)).toBe(true); // distances are equal: lowest id first
    expect(sysGetMempolicy(k, t, MPOL.MPOL_F_ADDR, a, () => 0)).toEqual({ mode: MPOL.MPOL_BIND, nodes: [2, 3] });
    expect(sysSetMempolicy(k, t, MPOL.MPOL_PREFERRED, [])).toBe(0);
    expect(sysGetMempolicy(k, t, 0, 0, () => 0)).toEqual({ mode: MPOL.MPOL_LOCAL, nodes: [] });
    expect(sysSetMempolicy(k, t, MPOL.MPOL_BIND | MPOL.MPOL_F_RELATIVE_NODES, [5])).toBe(0);
    // relative node 5 of 4 allowed nodes folds onto the second allowed node
    expect(sysGetMempolicy(k, t, 0, 0, () => 0)).toEqual({ mode: MPOL.MPOL_BIND | MPOL.MPOL_F_RELATIVE_NODES, nodes: [5] });
    const b = k.mmap(p, 0, PAGE_SIZE, RW, ANON);
    k.access(t, b, PAGE_SIZE, PAGE_SIZE, true, 1);
    expect(nodesOf(k, p, b, 1)).toEqual([1]);
    expect(sysSetMempolicy(k, t, MPOL.MPOL_INTERLEAVE, [])).toBe(-22);
    expect(sysSetMempolicy(k, t, MPOL.MPOL_PREFERRED | MPOL.MPOL_F_NUMA_BALANCING, [0])).toBe(-22);
  });

  it('MPOL_MF_STRICT refuses misplaced pages with EIO; MPOL_MF_MOVE moves them (mbind02, mbind03)', () => {
    const { k, p, t } = fourNodes();
    const a = k.mmap(p, 0, PAGE_SIZE, RW, ANON);
    k.access(t, a, PAGE_SIZE, PAGE_SIZE, true, 9);
    expect(nodesOf(k, p, a, 1)).toEqual([0]);
    for (const mode of [MPOL.MPOL_PREFERRED, MPOL.MPOL_BIND, MPOL.MPOL_INTERLEAVE])
      expect(sysMbind(k, t, a, PAGE_SIZE, mode, [1], MPOL.MPOL_MF_STRICT)).toBe(-5);
    expect(sysMbind(k, t, a, PAGE_SIZE, MPOL.MPOL_BIND, [1], MPOL.MPOL_MF_MOVE)).toBe(0);
    expect(nodesOf(k, p, a, 1)).toEqual([1]);
    let byte = -1;
    k.access(t, a, 1, PAGE_SIZE, false, 0, (_v, b) => (byte = b));
    expect(byte).toBe(9);
    expect(k.vmstat.snapshot().pgmigrate_success).toBe(1);
  });

  it('move_pages reports per-page status and moves a whole THP (move_pages01-04)', () => {
    const { k, p, t } = fourNodes();
    k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'always');
    const a = k.mmap(p, 0, 2 * PMD_SIZE, RW, ANON);
    k.access(t, a, PMD_SIZE, PAGE_SIZE, true, 3); // one THP
    k.access(t, a + PMD_SIZE, PAGE_SIZE, PAGE_SIZE, false, 0); // huge zero page
    const q = sysMovePages(k, p, p, [a, a + PMD_SIZE, a + 4 * PMD_SIZE], null, 0);
    expect(q.status).toEqual([0, '-EFAULT', '-EFAULT']);
    const r = sysMovePages(k, p, p, [a, a + PAGE_SIZE], [2, 2], MPOL.MPOL_MF_MOVE);
    // The second address's folio is already isolated in this batch (add_folio_for_migration): -EBUSY.
    expect(r).toEqual({ ret: 0, status: [2, '-EBUSY'] });
    expect(pagemap(k, p.mm, a, PMD_SIZE)).toEqual([{ n: 512, present: true, node: 2, size: '2M' }]);
    expect(k.vmstat.snapshot().thp_migration_success).toBe(1);
    expect(sysMovePages(k, p, p, [a], [7], MPOL.MPOL_MF_MOVE).ret).toBe(-19);
    expect(sysMovePages(k, p, p, [a], [0], MPOL.MPOL_MF_STRICT).ret).toBe(-22);
    expect(verifyKernel(k)).toEqual([]);
  });

  it('migrate_pages between overlapping node sets moves each page once, as do_migrate_pages orders it', () => {
    const { k, p, t } = fourNodes();
    const a = k.mmap(p, 0, 12 * PAGE_SIZE, RW, ANON);
    k.madvise(p, a, 12 * PAGE_SIZE, MADV.MADV_NOHUGEPAGE);
    sysMbind(k, t, a, 12 * PAGE_SIZE, MPOL.MPOL_INTERLEAVE, [0, 1, 2], 0);
    k.access(t, a, 12 * PAGE_SIZE, PAGE_SIZE, true, 5);
    const before = nodesOf(k, p, a, 12);
    // [0,1,2] -> [1,2,3]: 2->3 first (3 is not a source), then 1->2, then 0->1
    expect(sysMigratePages(k, p, p, [0, 1, 2], [1, 2, 3])).toBe(0);
    expect(nodesOf(k, p, a, 12)).toEqual(before.map((n) => n + 1));
    expect(k.vmstat.snapshot().pgmigrate_success).toBe(12);
    // different sizes: [1,2,3] -> [0,1]: sources that are also targets (1) stay
    expect(sysMigratePages(k, p, p, [1, 2, 3], [0, 1])).toBe(0);
    expect(new Set(nodesOf(k, p, a, 12))).toEqual(new Set([0, 1]));
    expect(sysMigratePages(k, p, p, [0], [9])).toBe(-22);
  });

  it('property: after MPOL_MF_MOVE no page of a bound VMA is outside its nodes, and no byte is lost', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.integer({ min: 0, max: 63 }), fc.integer({ min: 1, max: 255 }), fc.integer({ min: 0, max: 3 })), {
          minLength: 1,
          maxLength: 40,
        }),
        fc.uniqueArray(fc.integer({ min: 0, max: 3 }), { minLength: 1, maxLength: 3 }),
        fc.boolean(),
        (writes, bindTo, thp) => {
          const { k, p } = fourNodes();
          k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', thp ? 'always' : 'never');
          const len = 64 * PAGE_SIZE;
          const a = k.mmap(p, 0, PMD_SIZE, RW, ANON | MAP.MAP_POPULATE);
          const threads = [0, 1, 2, 3].map((n) => k.createThread(p, 2 * n)) as Exclude<ReturnType<typeof k.createThread>, number>[];
          const content = new Map<number, number>();
          for (const [page, fill, cpuNode] of writes) {
            k.access(threads[cpuNode]!, a + page * PAGE_SIZE, 1, PAGE_SIZE, true, fill);
            content.set(page, fill);
          }
          const sorted = [...bindTo].sort();
          expect(sysMbind(k, p.mainThread, a, len, MPOL.MPOL_BIND, sorted, MPOL.MPOL_MF_MOVE | MPOL.MPOL_MF_STRICT)).toBe(0);
          const nodes = nodesOf(k, p, a, 64);
          expect(nodes.every((n) => sorted.includes(n))).toBe(true);
          for (let i = 0; i < 64; i++) {
            let b = -1;
            k.access(p.mainThread, a + i * PAGE_SIZE, 1, PAGE_SIZE, false, 0, (_v, x) => (b = x));
            expect(b).toBe(content.get(i) ?? 0);
          }
          expect(verifyKernel(k)).toEqual([]);
        },
      ),
      { numRuns: 100 },
    );
  });
});

describe('cpusets', () => {
  it('limit allocations to cpuset.mems and rebind static, relative and plain policies when it changes', () => {
    const { k, p, t } = fourNodes();
    expect(setCpusetMems(k, p, [2, 3])).toBe(0);
    const a = k.mmap(p, 0, 2 * PAGE_SIZE, RW, ANON);
    k.access(t, a, PAGE_SIZE, PAGE_SIZE, true, 1);
    expect(nodesOf(k, p, a, 1)).toEqual([2]); // local node 0 is not allowed: nearest allowed
    expect(sysGetMempolicy(k, t, MPOL.MPOL_F_MEMS_ALLOWED, 0, () => 0)).toEqual({ mode: 0, nodes: [2, 3] });
    // policies made under {2,3}
    const b = k.mmap(p, 0, 3 * PAGE_SIZE, RW, ANON);
    sysMbind(k, t, b, PAGE_SIZE, MPOL.MPOL_BIND, [3], 0);
    sysMbind(k, t, b + PAGE_SIZE, PAGE_SIZE, MPOL.MPOL_BIND | MPOL.MPOL_F_STATIC_NODES, [3], 0);
    sysMbind(k, t, b + 2 * PAGE_SIZE, PAGE_SIZE, MPOL.MPOL_BIND | MPOL.MPOL_F_RELATIVE_NODES, [1], 0);
    expect(setCpusetMems(k, p, [0, 1])).toBe(0);
    const pol = (va: number) => p.mm.vmaAt(va)!.policy!.nodes;
    expect(pol(b)).toEqual([1]); // 3 was the 2nd of {2,3}: now the 2nd of {0,1}
    expect(pol(b + PAGE_SIZE)).toEqual([0, 1]); // static {3} has no allowed node: all allowed nodes
    expect(pol(b + 2 * PAGE_SIZE)).toEqual([1]); // relative node 1 = 2nd allowed
    k.access(t, b, 3 * PAGE_SIZE, PAGE_SIZE, true, 1);
    expect(nodesOf(k, p, b, 3)).toEqual([1, 0, 1]);
    expect(setCpusetMems(k, p, [7])).toBe(-22);
  });
});

describe('migrate_pages and the caller cpuset', () => {
  it('masks the new nodes with the caller cpuset before remapping (kernel_migrate_pages nodes_and)', () => {
    const k = smallKernel({ nodes: 3, mib: 64 });
    const target = k.createProcess('t', 0); // CPU 0: node 0
    const a = k.mmap(target, 0, 8 * PAGE_SIZE, RW, ANON);
    k.madvise(target, a, 8 * PAGE_SIZE, MADV.MADV_NOHUGEPAGE);
    k.access(target.mainThread, a, 8 * PAGE_SIZE, PAGE_SIZE, true, 1);
    const tool = k.createProcess('migratepages', 0);
    expect(setCpusetMems(k, tool, [0, 2])).toBe(0);
    // new {1,2} & caller {0,2} = {2}: node 0 maps to node 2 (not to node 1, which the caller may not use).
    expect(sysMigratePages(k, tool, target, [0, 1], [1, 2])).toBe(0);
    for (let i = 0; i < 8; i++) expect(k.phys.nodeOfPfn(followPage(target.mm, a + i * PAGE_SIZE))).toBe(2);
    // Nothing of the new set is allowed to the caller: EINVAL.
    expect(sysMigratePages(k, tool, target, [2], [1])).toBe(-22);
    expect(verifyKernel(k)).toEqual([]);
  });
});

describe('process_mbind (proposal, feature process_mbind)', () => {
  /** A VMM-like process with 8 MiB bound to node 0 (as QEMU's host-nodes=0,policy=bind), half of it touched, and a root tool. */
  function setup(): { k: Kernel; vmm: Process; tool: Process; a: number } {
    const k = smallKernel({ nodes: 2, mib: 64 });
    const vmm = k.createProcess('vmm');
    const tool = k.createProcess('numatool');
    const a = k.mmap(vmm, 0, 8 << 20, RW, ANON);
    k.madvise(vmm, a, 8 << 20, MADV.MADV_NOHUGEPAGE);
    expect(sysMbind(k, vmm.mainThread, a, 8 << 20, MPOL.MPOL_BIND, [0], 0)).toBe(0);
    k.access(vmm.mainThread, a, 4 << 20, PAGE_SIZE, true, 1);
    return { k, vmm, tool, a };
  }
  const half = (4 << 20) / PAGE_SIZE;

  it('is off by default: ENOSYS, and nothing changes', () => {
    const { k, vmm, tool, a } = setup();
    expect(sysProcessMbind(k, tool, vmm, [{ start: a, len: 8 << 20 }], MPOL.MPOL_BIND, [1], MPOL.MPOL_MF_MOVE)).toBe(-38);
    expect(new Set(nodesOf(k, vmm, a, half))).toEqual(new Set([0]));
    expect(sysGetMempolicy(k, vmm.mainThread, MPOL.MPOL_F_ADDR, a, () => 0)).toEqual({ mode: MPOL.MPOL_BIND, nodes: [0] });
  });

  it('migrate_pages from a tool moves the pages but not the policy: later faults land on the old node', () => {
    const { k, vmm, tool, a } = setup();
    expect(sysMigratePages(k, tool, vmm, [0], [1])).toBe(0);
    expect(new Set(nodesOf(k, vmm, a, half))).toEqual(new Set([1]));
    k.access(vmm.mainThread, a + (4 << 20), 4 << 20, PAGE_SIZE, true, 2);
    expect(new Set(nodesOf(k, vmm, a + (4 << 20), half))).toEqual(new Set([0]));
  });

  it("with the feature on, the tool changes the target's policy for its ranges: pages move and later faults follow", () => {
    const { k, vmm, tool, a } = setup();
    k.sysfs.write('/sys/kernel/memtwin/features/process_mbind', '1');
    const ranges = [
      { start: a, len: 2 << 20 },
      { start: a + (2 << 20), len: 6 << 20 },
    ];
    expect(sysProcessMbind(k, tool, vmm, ranges, MPOL.MPOL_BIND, [1], MPOL.MPOL_MF_MOVE)).toBe(0);
    expect(new Set(nodesOf(k, vmm, a, half))).toEqual(new Set([1]));
    expect(sysGetMempolicy(k, vmm.mainThread, MPOL.MPOL_F_ADDR, a + (6 << 20), () => 0)).toEqual({ mode: MPOL.MPOL_BIND, nodes: [1] });
    k.access(vmm.mainThread, a + (4 << 20), 4 << 20, PAGE_SIZE, true, 2);
    expect(new Set(nodesOf(k, vmm, a + (4 << 20), half))).toEqual(new Set([1]));
    // The tool's own policy is untouched.
    expect(sysGetMempolicy(k, tool.mainThread, 0, 0, () => 0)).toEqual({ mode: MPOL.MPOL_DEFAULT, nodes: [] });
  });

  it('checks the target (ESRCH), ptrace access and CAP_SYS_NICE (EPERM), and stops at the first failing range', () => {
    const { k, vmm, tool, a } = setup();
    k.sysfs.write('/sys/kernel/memtwin/features/process_mbind', '1');
    const r = [{ start: a, len: 8 << 20 }];
    expect(sysProcessMbind(k, tool, undefined, r, MPOL.MPOL_BIND, [1], 0)).toBe(-3);
    const user = k.createProcess('user');
    expect(sysSetresuid(k, user, 1000)).toBe(0);
    expect(sysProcessMbind(k, user, vmm, r, MPOL.MPOL_BIND, [1], 0)).toBe(-1);
    // An unmapped second range: EFAULT after the first range was bound.
    const bad = [
      { start: a, len: 2 << 20 },
      { start: a + (64 << 20), len: 2 << 20 },
    ];
    expect(sysProcessMbind(k, tool, vmm, bad, MPOL.MPOL_BIND, [1], 0)).toBe(-14);
    expect(sysGetMempolicy(k, vmm.mainThread, MPOL.MPOL_F_ADDR, a, () => 0)).toEqual({ mode: MPOL.MPOL_BIND, nodes: [1] });
    expect(sysGetMempolicy(k, vmm.mainThread, MPOL.MPOL_F_ADDR, a + (4 << 20), () => 0)).toEqual({ mode: MPOL.MPOL_BIND, nodes: [0] });
  });
});

describe('memory policies under the watermarks (page_alloc.ts)', () => {
  it('MPOL_PREFERRED node 0 fills node 0 down to its low watermark, then node 1, without waking kswapd or reclaiming', () => {
    const k = smallKernel({ nodes: 2, mib: 64 });
    k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'never');
    const p = k.createProcess('pref');
    const t = p.mainThread;
    expect(sysSetMempolicy(k, t, MPOL.MPOL_PREFERRED, [0])).toBe(0);
    const z0 = k.phys.zones[0]!;
    const low = z0.wmark[1]!;
    expect(low).toBeGreaterThan(0);
    const pages = z0.freePages; // more than node 0 can give above its low watermark
    const a = k.mmap(p, 0, pages * PAGE_SIZE, RW, ANON);
    k.access(t, a, pages * PAGE_SIZE, PAGE_SIZE, true, 1);
    expect(z0.freePages).toBe(low);
    const nodes = pagemap(k, p.mm, a, pages * PAGE_SIZE).map((r) => [r.node, r.n]);
    // Node 0's pages first (page tables took some of its frames too), then node 1's for the rest.
    expect(nodes.length).toBe(2);
    expect(nodes[0]![0]).toBe(0);
    expect(nodes[1]![0]).toBe(1);
    const s = k.vmstat.snapshot();
    expect([s.pageoutrun ?? 0, s.allocstall_normal ?? 0]).toEqual([0, 0]);
    expect(verifyKernel(k)).toEqual([]);
  });
});
