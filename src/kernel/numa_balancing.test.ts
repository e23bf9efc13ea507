/**
 * Automatic NUMA balancing and memory policies (vma_policy_mof and
 * mpol_misplaced in mm/mempolicy.c): the default policy lets pages follow
 * the task; an explicit policy keeps the memory out of the scan unless it
 * was set with MPOL_F_NUMA_BALANCING, and then pages move only to nodes in
 * the policy. Two nodes; the task runs on node 1, its memory is on node 0.
 */
import { describe, expect, it } from 'vitest';
import { smallKernel, RW, ANON } from '../testing/fixtures.ts';
import { MPOL, PAGE_SIZE } from './uapi.ts';
import { sysMbind, sysSetMempolicy } from './mempolicy.ts';
import { followPage } from './memory.ts';
import type { Kernel } from './kernel.ts';
import type { Thread } from './sched.ts';

const PAGES = 16;

function remoteTask(setup: (k: Kernel, t: Thread, a: number) => void) {
  const k = smallKernel({ nodes: 2, mib: 64 });
  k.sysctl.numa_balancing = 1;
  const p = k.createProcess('b');
  const t = p.mainThread;
  const a = k.mmap(p, 0, PAGES * PAGE_SIZE, RW, ANON);
  setup(k, t, a);
  k.access(t, a, PAGES * PAGE_SIZE, PAGE_SIZE, true, 1); // first touch on node 0 (cpu 0)
  const t0 = k.clock.now(); // the first touch took virtual time
  k.numab.start([p]);
  // Two scan periods, each followed by a pass over the memory from node 1:
  // the two-stage filter migrates on the second fault from the same node.
  for (let round = 1; round <= 2; round++) {
    k.events.runUntil(t0 + round * 1e9 + 1);
    t.cpu = 2; // node 1; placement may have moved the task, keep it remote
    for (let i = 0; i < PAGES; i++) {
      const va = a + i * PAGE_SIZE;
      k.numab.hintingFault(t, va, followPage(p.mm, va), PAGE_SIZE);
    }
  }
  const nodes = Array.from({ length: PAGES }, (_, i) => k.phys.nodeOfPfn(followPage(p.mm, a + i * PAGE_SIZE)));
  return { nodes, vmstat: k.vmstat.snapshot() };
}

describe('NUMA balancing and memory policies', () => {
  it('default policy: pages follow the task after two faults from its node', () => {
    const { nodes, vmstat } = remoteTask(() => {});
    expect(nodes).toEqual(Array(PAGES).fill(1));
    expect(vmstat.numa_pte_updates).toBe(2 * PAGES);
    expect(vmstat.numa_hint_faults).toBe(2 * PAGES);
    expect(vmstat.numa_pages_migrated).toBe(PAGES);
  });

  it('an explicit VMA or task policy without MPOL_F_NUMA_BALANCING is not scanned', () => {
    const bound = remoteTask((k, t, a) => expect(sysMbind(k, t, a, PAGES * PAGE_SIZE, MPOL.MPOL_BIND, [0, 1], 0)).toBe(0));
    expect(bound.nodes).toEqual(Array(PAGES).fill(0));
    expect(bound.vmstat.numa_pte_updates ?? 0).toBe(0);
    expect(bound.vmstat.numa_hint_faults ?? 0).toBe(0);
    const task = remoteTask((k, t) => expect(sysSetMempolicy(k, t, MPOL.MPOL_PREFERRED, [0])).toBe(0));
    expect(task.nodes).toEqual(Array(PAGES).fill(0));
    expect(task.vmstat.numa_pte_updates ?? 0).toBe(0);
  });

  it('MPOL_BIND | MPOL_F_NUMA_BALANCING: pages move within the bound nodes only', () => {
    const mode = MPOL.MPOL_BIND | MPOL.MPOL_F_NUMA_BALANCING;
    const wide = remoteTask((k, t, a) => expect(sysMbind(k, t, a, PAGES * PAGE_SIZE, mode, [0, 1], 0)).toBe(0));
    expect(wide.nodes).toEqual(Array(PAGES).fill(1));
    expect(wide.vmstat.numa_pages_migrated).toBe(PAGES);
    const narrow = remoteTask((k, t, a) => expect(sysMbind(k, t, a, PAGES * PAGE_SIZE, mode, [0], 0)).toBe(0));
    expect(narrow.nodes).toEqual(Array(PAGES).fill(0));
    expect(narrow.vmstat.numa_hint_faults).toBe(2 * PAGES); // scanned and faulted, never moved
    expect(narrow.vmstat.numa_pages_migrated ?? 0).toBe(0);
  });
});
