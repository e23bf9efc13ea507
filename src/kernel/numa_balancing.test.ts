/**
 * Automatic NUMA balancing. First, memory policies (vma_policy_mof and
 * mpol_misplaced in mm/mempolicy.c): the default policy lets pages follow
 * the task; an explicit policy keeps the memory out of the scan unless it
 * was set with MPOL_F_NUMA_BALANCING, and then pages move only to nodes in
 * the policy. Two nodes; the task runs on node 1, its memory is on node 0.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { smallKernel, RW, ANON, SHARED_ANON } from '../testing/fixtures.ts';
import { MPOL, PAGE_SIZE } from './uapi.ts';
import { MIGRATE_MOVABLE, WMARK_HIGH } from './page_alloc.ts';
import { sysMbind, sysSetMempolicy } from './mempolicy.ts';
import { followPage } from './memory.ts';
import { NUMA_MEM, NUMA_MEMBUF, taskFaultsIdx, type NumaGroup } from './numa_balancing.ts';
import type { Kernel } from './kernel.ts';
import type { Process, Thread } from './sched.ts';

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
  it('a process that arrives later (a VMM migrating in) is scanned from its arrival; one started twice is scanned once', () => {
    const k = smallKernel({ nodes: 2, mib: 64 });
    k.sysctl.numa_balancing = 1;
    const populated = (name: string): Process => {
      const p = k.createProcess(name);
      const a = k.mmap(p, 0, PAGES * PAGE_SIZE, RW, ANON);
      k.access(p.mainThread, a, PAGES * PAGE_SIZE, PAGE_SIZE, true, 1);
      return p;
    };
    const updates = (): number => k.vmstat.snapshot()['numa_pte_updates']!;
    const first = populated('first');
    const t0 = k.clock.now();
    k.numab.start([first]);
    k.events.runUntil(t0 + 500e6);
    const later = populated('later');
    const t1 = k.clock.now();
    k.numab.start([first, later]);
    k.events.runUntil(t0 + 1e9 + 1);
    expect(updates()).toBe(PAGES); // the first process's first scan, once
    k.events.runUntil(t1 + 1e9 + 1);
    expect(updates()).toBe(2 * PAGES); // the later one's, scan_delay after it arrived
  });

  it('default policy: pages follow the task (first faults migrate at once early in its life)', () => {
    const { nodes, vmstat } = remoteTask(() => {});
    expect(nodes).toEqual(Array(PAGES).fill(1));
    expect(vmstat.numa_pte_updates).toBe(2 * PAGES);
    expect(vmstat.numa_hint_faults).toBe(2 * PAGES);
    expect(vmstat.numa_pages_migrated).toBe(PAGES);
  });

  it('a hinting fault that migrates costs the fault plus one migration, charged once', () => {
    const k = smallKernel({ nodes: 2, mib: 64 });
    k.sysctl.numa_balancing = 1;
    const p = k.createProcess('b');
    const t = p.mainThread;
    const a = k.mmap(p, 0, PAGE_SIZE, RW, ANON);
    k.access(t, a, PAGE_SIZE, PAGE_SIZE, true, 1); // on node 0
    k.numab.start([p]);
    k.events.runUntil(k.clock.now() + 2e9); // scanned: the page is marked
    t.cpu = 2; // node 1: a task early in its life migrates on its first remote fault
    const ctx = { ns: 0 };
    const ret = k.runAsTask(ctx, () => k.numab.hintingFault(t, a, followPage(p.mm, a), PAGE_SIZE));
    expect(k.phys.nodeOfPfn(followPage(p.mm, a))).toBe(1);
    expect(ret).toBe(k.costs.ns('fault_anon_4k_read_zeropage')); // the fault's own time
    expect(ctx.ns).toBe(k.costs.ns('page_migrate_4k')); // the migration, charged where it happened
  });

  it('migrate_balanced_pgdat: no migration to a node at or below its high watermark plus the pages; above it, one without reclaim', () => {
    for (const spare of [0, 1]) {
      const k = smallKernel({ nodes: 2, mib: 64 });
      k.sysctl.numa_balancing = 1;
      const p = k.createProcess('b');
      const t = p.mainThread;
      const a = k.mmap(p, 0, PAGE_SIZE, RW, ANON);
      k.access(t, a, PAGE_SIZE, PAGE_SIZE, true, 1); // on node 0
      const z = k.phys.zones[1]!;
      // Fill node 1 (order-0 frames, nobody's) until it holds its high watermark plus one page, plus `spare`.
      while (z.freePages > z.wmark[WMARK_HIGH]! + 1 + spare)
        expect(k.phys.alloc({ order: 0, mt: MIGRATE_MOVABLE, nid: 1, thisNode: true })).toBeGreaterThanOrEqual(0);
      k.numab.start([p]);
      k.events.runUntil(k.clock.now() + 2e9); // scanned: the page is marked
      t.cpu = 2; // node 1
      const free = z.freePages;
      k.runAsTask({ ns: 0 }, () => k.numab.hintingFault(t, a, followPage(p.mm, a), PAGE_SIZE));
      const v = k.vmstat.snapshot();
      expect(k.phys.nodeOfPfn(followPage(p.mm, a))).toBe(spare ? 1 : 0);
      expect(v.numa_pages_migrated).toBe(spare);
      expect(z.freePages).toBe(free - spare);
      expect(v.pgscan_kswapd ?? 0).toBe(0);
      expect(v.pgscan_direct ?? 0).toBe(0);
    }
  });

  it("the scanner's walk costs CPU time: change_prot_numa per PTE it changes", () => {
    const k = smallKernel({ nodes: 2, mib: 64 });
    k.sysctl.numa_balancing = 1;
    const p = k.createProcess('b');
    const a = k.mmap(p, 0, 64 * PAGE_SIZE, RW, ANON);
    k.access(p.mainThread, a, 40 * PAGE_SIZE, PAGE_SIZE, true, 1); // 40 of 64 pages present
    k.numab.start([p]);
    k.events.runUntil(k.clock.now() + 1.1e9); // the first scan (scan_delay_ms 1000)
    expect(k.vmstat.snapshot().numa_pte_updates).toBe(40);
    expect(k.numab.scanCpuNs).toBeCloseTo(40 * k.costs.nsOf('change_prot_numa_per_pte'), 6);
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

/** A kernel scanning every 100 ms from 100 ms on. */
function balancingKernel(): Kernel {
  const k = smallKernel({ nodes: 2, mib: 64 }); // CPUs 0,1 on node 0; 2,3 on node 1
  k.sysctl.numa_balancing = 1;
  Object.assign(k.numab.settings, { scan_delay_ms: 100, scan_period_min_ms: 100, scan_period_max_ms: 100 });
  return k;
}

/** Let the scanner run once more over every process (marking their pages again). */
function nextScan(k: Kernel, t0: number, round: number): void {
  k.events.runUntil(t0 + round * 100e6 + 1);
}

/** Hinting faults by t on pages [from, to) of the mapping at a (each page once, if marked). */
function faultPages(k: Kernel, t: Thread, a: number, from: number, to: number): void {
  for (let i = from; i < to; i++) {
    const va = a + i * PAGE_SIZE;
    k.numab.hintingFault(t, va, followPage(t.process.mm, va), PAGE_SIZE);
  }
}

/** Map p1's shmem mapping at a1 into p2 as well (what shmat or a fork would give p2). */
function attachShared(k: Kernel, p1: Process, a1: number, p2: Process, len: number): number {
  const a2 = k.mmap(p2, 0, len, RW, SHARED_ANON);
  const v1 = p1.mm.vmaAt(a1)!;
  const v2 = p2.mm.vmaAt(a2)!;
  k.files.delete(v2.file!.id);
  v2.file = v1.file;
  v1.file!.mapCount++;
  return a2;
}

describe('NUMA hinting faults: private and shared, numa groups', () => {
  it("a fault is private when the page's last faulting task is the same task, shared otherwise", () => {
    const k = balancingKernel();
    const p = k.createProcess('app', 0);
    const a = k.mmap(p, 0, PAGES * PAGE_SIZE, RW, ANON);
    k.access(p.mainThread, a, PAGES * PAGE_SIZE, PAGE_SIZE, true, 1); // node 0, no hinting fault yet: cpupid unset
    const ta = k.createThread(p, 2) as Thread; // node 1
    const tb = k.createThread(p, 3) as Thread; // node 1
    const t0 = k.clock.now();
    k.numab.start([p]);
    nextScan(k, t0, 1);
    faultPages(k, ta, a, 0, PAGES); // first faults: private, and they migrate at once (no preferred node yet)
    const sa = k.numab.task(ta);
    expect(sa.hintFaultsPrivate).toBe(PAGES);
    expect(k.vmstat.snapshot().numa_pages_migrated).toBe(PAGES);
    for (let i = 0; i < PAGES; i++) expect(k.mem.lastCpupid(followPage(p.mm, a + i * PAGE_SIZE)) >> 8).toBe(2); // ta's CPU
    nextScan(k, t0, 2);
    faultPages(k, ta, a, 0, PAGES / 2); // ta again: private
    faultPages(k, tb, a, PAGES / 2, PAGES); // last faulted by ta: shared
    const sb = k.numab.task(tb);
    expect(sa.hintFaultsPrivate).toBe(PAGES + PAGES / 2);
    expect(sa.hintFaultsShared).toBe(0);
    expect(sb.hintFaultsShared).toBe(PAGES / 2);
    expect(sb.hintFaultsPrivate).toBe(0);
    // numa_faults: buffered by memory node (now node 1) and kind, until the next placement
    expect(sb.numaFaults[taskFaultsIdx(2, NUMA_MEMBUF, 1, 0)]).toBe(PAGES / 2);
    expect(sb.numaFaults[taskFaultsIdx(2, NUMA_MEMBUF, 1, 1)]).toBe(0);
    // tb's shared faults gave it a group of its own; ta has none to join (it never took a shared fault)
    expect(sb.group?.nrTasks).toBe(1);
    expect(sa.group).toBeNull();
    nextScan(k, t0, 3); // placement folds the buffers into the decayed NUMA_MEM totals
    expect(sb.numaFaults[taskFaultsIdx(2, NUMA_MEM, 1, 0)]).toBe(PAGES / 2);
    expect(sb.numaFaults[taskFaultsIdx(2, NUMA_MEMBUF, 1, 0)]).toBe(0);
  });

  it('two processes sharing a shm mapping end up in one numa group', () => {
    const k = balancingKernel();
    const p1 = k.createProcess('p1', 0);
    const p2 = k.createProcess('p2', 2);
    const len = PAGES * PAGE_SIZE;
    const a1 = k.mmap(p1, 0, len, RW, SHARED_ANON);
    const a2 = attachShared(k, p1, a1, p2, len);
    k.access(p1.mainThread, a1, len, PAGE_SIZE, true, 1); // node 0
    k.access(p2.mainThread, a2, len, PAGE_SIZE, false, 0); // p2 maps the same pages
    expect(followPage(p2.mm, a2)).toBe(followPage(p1.mm, a1));
    const t0 = k.clock.now();
    k.numab.start([p1, p2]);
    const s1 = k.numab.task(p1.mainThread);
    const s2 = k.numab.task(p2.mainThread);
    // p1 works from node 0, p2 from node 1 (task placement may move them: put them back).
    for (let round = 1; round <= 6 && !(s1.group && s1.group === s2.group); round++) {
      nextScan(k, t0, round);
      p1.mainThread.cpu = 0;
      p2.mainThread.cpu = 2;
      faultPages(k, p2.mainThread, a2, 0, PAGES);
      faultPages(k, p1.mainThread, a1, 0, PAGES);
    }
    expect(s1.group).not.toBeNull();
    expect(s1.group).toBe(s2.group);
    expect(s1.group!.nrTasks).toBe(2);
    expect(k.numab.groups().size).toBe(1);
    expect(s1.hintFaultsShared + s2.hintFaultsShared).toBeGreaterThan(0);
  });

  it('two processes with private mappings never group, whatever their pid bits', () => {
    const k = balancingKernel();
    const p1 = k.createProcess('p1', 0);
    const p2 = k.createProcess('p2', 2);
    const a1 = k.mmap(p1, 0, PAGES * PAGE_SIZE, RW, ANON);
    const a2 = k.mmap(p2, 0, PAGES * PAGE_SIZE, RW, ANON);
    k.access(p1.mainThread, a1, PAGES * PAGE_SIZE, PAGE_SIZE, true, 1);
    k.access(p2.mainThread, a2, PAGES * PAGE_SIZE, PAGE_SIZE, true, 1);
    const t0 = k.clock.now();
    k.numab.start([p1, p2]);
    for (let round = 1; round <= 4; round++) {
      nextScan(k, t0, round);
      [p1.mainThread.cpu, p2.mainThread.cpu] = [p2.mainThread.cpu, p1.mainThread.cpu]; // each runs where the other was
      faultPages(k, p1.mainThread, a1, 0, PAGES);
      faultPages(k, p2.mainThread, a2, 0, PAGES);
    }
    expect(k.numab.groups().size).toBe(0);
    expect(k.numab.task(p1.mainThread).hintFaultsShared).toBe(0);
  });

  it("a grouped task's preferred node follows its group's faults, not its own", () => {
    const k = balancingKernel();
    const p = k.createProcess('app', 0);
    const mode = MPOL.MPOL_BIND | MPOL.MPOL_F_NUMA_BALANCING; // every fault goes through should_numa_migrate_memory
    const Y = 64;
    const X = 16;
    const ya = k.mmap(p, 0, Y * PAGE_SIZE, RW, ANON);
    const xa = k.mmap(p, 0, X * PAGE_SIZE, RW, ANON);
    expect(sysMbind(k, p.mainThread, ya, Y * PAGE_SIZE, mode, [0, 1], 0)).toBe(0);
    expect(sysMbind(k, p.mainThread, xa, X * PAGE_SIZE, mode, [0, 1], 0)).toBe(0);
    const ta = p.mainThread; // CPU 0
    const tb = k.createThread(p, 1) as Thread; // node 0
    const tc = k.createThread(p, 2) as Thread; // node 1
    k.access(ta, ya, Y * PAGE_SIZE, PAGE_SIZE, true, 1); // Y on node 0
    k.access(tc, xa, X * PAGE_SIZE, PAGE_SIZE, true, 1); // X on node 1
    const t0 = k.clock.now();
    k.numab.start([p]);
    nextScan(k, t0, 1);
    faultPages(k, ta, ya, 0, Y); // private (first faults)
    faultPages(k, tc, xa, 0, X);
    nextScan(k, t0, 2);
    faultPages(k, tb, ya, 0, Y); // shared with ta: tb gets a group, ta has none yet
    faultPages(k, tc, xa, 0, X);
    nextScan(k, t0, 3);
    faultPages(k, ta, ya, 1, Y); // shared with tb: ta joins tb's group
    faultPages(k, tc, ya, 0, 1); // tc: one shared fault on Y, joins the (larger) group
    faultPages(k, tc, xa, 0, X);
    const [sa, sb, sc] = [ta, tb, tc].map((t) => k.numab.task(t));
    expect(sa!.group).not.toBeNull();
    expect(sa!.group).toBe(sb!.group);
    expect(sc!.group).toBe(sb!.group);
    expect(sb!.group!.nrTasks).toBe(3);
    nextScan(k, t0, 4); // placement
    const own = (nid: number) => sc!.numaFaults[taskFaultsIdx(2, NUMA_MEM, nid, 0)]! + sc!.numaFaults[taskFaultsIdx(2, NUMA_MEM, nid, 1)]!;
    expect(own(1)).toBeGreaterThan(own(0)); // tc's own faults are on node 1 ...
    expect(sc!.preferred).toBe(0); // ... but its group's are on node 0
    expect(sa!.preferred).toBe(0);
  });

  it('group membership stays consistent: nr_tasks counts the members, group faults are the sum of theirs', () => {
    const NP = 8;
    const action = fc.oneof(
      { arbitrary: fc.record({ k: fc.constant('scan' as const) }), weight: 4 },
      { arbitrary: fc.record({ k: fc.constant('move' as const), t: fc.nat(3), cpu: fc.nat(3) }), weight: 1 },
      {
        arbitrary: fc.record({
          k: fc.constant('fault' as const),
          t: fc.nat(3),
          shared: fc.boolean(),
          from: fc.oneof(fc.constant(0), fc.nat(NP - 1)),
          n: fc.oneof(fc.constant(NP), fc.integer({ min: 1, max: NP })),
        }),
        weight: 8,
      },
    );
    let joined = 0; // runs where some group gathered two tasks or more
    fc.assert(
      // With MPOL_F_NUMA_BALANCING every fault records its cpupid; with the default policy only remote ones do.
      fc.property(fc.boolean(), fc.array(action, { minLength: 1, maxLength: 80, size: 'large' }), (bind, actions) => {
        const k = balancingKernel();
        const len = NP * PAGE_SIZE;
        const p1 = k.createProcess('p1', 0);
        const p2 = k.createProcess('p2', 2);
        const shm1 = k.mmap(p1, 0, len, RW, SHARED_ANON);
        const shm2 = attachShared(k, p1, shm1, p2, len);
        const priv = [k.mmap(p1, 0, len, RW, ANON), k.mmap(p2, 0, len, RW, ANON)];
        if (bind)
          for (const [p, a] of [
            [p1, shm1],
            [p2, shm2],
            [p1, priv[0]!],
            [p2, priv[1]!],
          ] as const)
            expect(sysMbind(k, p.mainThread, a, len, MPOL.MPOL_BIND | MPOL.MPOL_F_NUMA_BALANCING, [0, 1], 0)).toBe(0);
        const threads = [p1.mainThread, k.createThread(p1, 1) as Thread, p2.mainThread, k.createThread(p2, 3) as Thread];
        k.access(p1.mainThread, shm1, len, PAGE_SIZE, true, 1);
        k.access(p2.mainThread, shm2, len, PAGE_SIZE, false, 0);
        k.access(p1.mainThread, priv[0]!, len, PAGE_SIZE, true, 1);
        k.access(p2.mainThread, priv[1]!, len, PAGE_SIZE, true, 1);
        const t0 = k.clock.now();
        k.numab.start([p1, p2]);
        let round = 0;
        nextScan(k, t0, ++round);
        for (const a of actions) {
          if (a.k === 'scan') nextScan(k, t0, ++round);
          else if (a.k === 'move') threads[a.t]!.cpu = a.cpu;
          else {
            const t = threads[a.t]!;
            const base = a.shared ? (t.process === p1 ? shm1 : shm2) : priv[t.process === p1 ? 0 : 1]!;
            faultPages(k, t, base, a.from, Math.min(NP, a.from + a.n));
          }
        }
        const members = new Map<NumaGroup, Thread[]>();
        for (const t of threads) {
          const g = k.numab.tasks.get(t)?.group;
          if (g) members.set(g, [...(members.get(g) ?? []), t]);
        }
        expect(new Set(members.keys())).toEqual(k.numab.groups());
        if ([...members.values()].some((m) => m.length > 1)) joined++;
        for (const [g, ts] of members) {
          expect(g.nrTasks).toBe(ts.length);
          // a group joins tasks of different processes only through the shm mapping, and its faults are its members' faults
          for (let i = 0; i < g.faults.length; i++) {
            const sum = ts.reduce((s, t) => s + k.numab.task(t).numaFaults[i]!, 0);
            expect(g.faults[i]).toBeCloseTo(sum, 6);
          }
          expect(g.totalFaults).toBeCloseTo(
            ts.reduce((s, t) => s + k.numab.task(t).totalNumaFaults, 0),
            6,
          );
        }
      }),
      { numRuns: 100 },
    );
    expect(joined).toBeGreaterThan(10);
  });
});
