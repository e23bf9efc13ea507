/**
 * Migration in virtual time: migrate_pages' batches (NR_MAX_BATCHED_MIGRATION
 * pages, one after another in the calling task's time), the migration
 * entries they leave, and what an access at a given time finds.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { smallKernel, fragment, RW, ANON } from '../testing/fixtures.ts';
import { MADV, MAX_PAGE_ORDER, PAGE_SIZE, PMD_SIZE } from './uapi.ts';
import { sysMigratePages } from './mempolicy.ts';
import { NR_MAX_BATCHED_MIGRATION, sysMovePages } from './migrate.ts';
import { followPage } from './memory.ts';
import { COMPACT_CLUSTER_MAX, compactZone } from './compaction.ts';
import type { Kernel } from './kernel.ts';
import type { Process } from './sched.ts';

/** n pages first-touched on node 0 (THP only if asked), then 1 ms later. */
function onNode0(n: number, thp = false): { k: Kernel; p: Process; a: number; c: number } {
  const k = smallKernel({ nodes: 2, mib: 64 });
  const p = k.createProcess('app', 0);
  const a = k.mmap(p, 0, n * PAGE_SIZE + (thp ? PMD_SIZE : 0), RW, ANON);
  const base = thp ? Math.ceil(a / PMD_SIZE) * PMD_SIZE : a;
  k.madvise(p, a, n * PAGE_SIZE, thp ? MADV.MADV_HUGEPAGE : MADV.MADV_NOHUGEPAGE);
  k.access(p.mainThread, base, n * PAGE_SIZE, PAGE_SIZE, true, 7);
  k.clock.advance(1_000_000);
  return { k, p, a: base, c: k.costs.ns('page_migrate_4k') };
}

/** migrate_pages by a tool task starting now: returns the task's time. */
function toolMigrate(k: Kernel, p: Process, from: number[], to: number[]): number {
  const ctx = { ns: 0 };
  expect(k.runAsTask(ctx, () => sysMigratePages(k, p, p, from, to))).toBe(0);
  return ctx.ns;
}

describe('migration entries', () => {
  it('migrate_pages works in batches of NR_MAX_BATCHED_MIGRATION pages, one after another in the tool task time', () => {
    const n = 3 * NR_MAX_BATCHED_MIGRATION;
    const { k, p, a, c } = onNode0(n);
    const T = k.clock.now();
    const ns = toolMigrate(k, p, [0], [1]);
    expect(ns).toBeCloseTo(n * c, 3);
    expect(k.clock.now()).toBe(T); // the tool's time, not the clock
    for (let i = 0; i < n; i++) {
      const va = a + i * PAGE_SIZE;
      const e = p.mm.migrating.lookup(va, followPage(p.mm, va))!;
      const b = Math.floor(i / NR_MAX_BATCHED_MIGRATION);
      expect(e.from).toBe(0);
      expect(e.batch.unmapAt).toBeCloseTo(T + b * NR_MAX_BATCHED_MIGRATION * c, 3);
      expect(e.batch.remapAt).toBeCloseTo(T + (b + 1) * NR_MAX_BATCHED_MIGRATION * c, 3);
    }
  });

  it('an access in a batch window waits until its remap; pages of done batches are on the new node, of later ones on the old', () => {
    const { k, p, a } = onNode0(3 * NR_MAX_BATCHED_MIGRATION);
    toolMigrate(k, p, [0], [1]);
    const page = (i: number): [number, number] => [a + i * PAGE_SIZE, followPage(p.mm, a + i * PAGE_SIZE)];
    const b1 = p.mm.migrating.lookup(...page(NR_MAX_BATCHED_MIGRATION))!.batch;
    const t = b1.unmapAt + 1000;
    expect(p.mm.migrating.at(...page(NR_MAX_BATCHED_MIGRATION), t)).toEqual({ wait: b1.remapAt - t, oldNode: -1, batch: b1 });
    expect(p.mm.migrating.at(...page(2 * NR_MAX_BATCHED_MIGRATION - 1), t)).toEqual({ wait: b1.remapAt - t, oldNode: -1, batch: b1 });
    // batch 0 is done: the page table's node (1); batch 2 not reached: still node 0
    expect(p.mm.migrating.at(...page(NR_MAX_BATCHED_MIGRATION - 1), t)).toEqual({ wait: 0, oldNode: -1 });
    expect(k.phys.nodeOfPfn(page(0)[1])).toBe(1);
    expect(p.mm.migrating.at(...page(2 * NR_MAX_BATCHED_MIGRATION), t)).toEqual({ wait: 0, oldNode: 0 });
    // at the remap the page is there, and nothing waits once every window has ended
    expect(p.mm.migrating.at(...page(NR_MAX_BATCHED_MIGRATION), b1.remapAt)).toEqual({ wait: 0, oldNode: -1 });
    const last = p.mm.migrating.lookup(...page(3 * NR_MAX_BATCHED_MIGRATION - 1))!.batch.remapAt;
    p.mm.migrating.prune(last - 1);
    expect(p.mm.migrating.size).toBe(3 * NR_MAX_BATCHED_MIGRATION);
    p.mm.migrating.prune(last);
    expect(p.mm.migrating.size).toBe(0);
  });

  it('an entry counts only while its folio maps the address', () => {
    const { k, p, a } = onNode0(4);
    toolMigrate(k, p, [0], [1]);
    const pfn = followPage(p.mm, a);
    expect(p.mm.migrating.lookup(a, pfn)).toBeDefined();
    expect(p.mm.migrating.lookup(a, pfn + 1000)).toBeUndefined();
    expect(p.mm.migrating.lookup(a + 8 * PAGE_SIZE, pfn)).toBeUndefined();
  });

  it('a THP is migrated whole, a batch of its own, its window found through the PMD mapping', () => {
    const { k, p, a, c } = onNode0(2 * 512, true);
    const T = k.clock.now();
    toolMigrate(k, p, [0], [1]);
    expect(k.vmstat.snapshot().thp_migration_success).toBe(2);
    const e0 = p.mm.migrating.lookup(a + 5 * PAGE_SIZE, followPage(p.mm, a + 5 * PAGE_SIZE))!;
    const e1 = p.mm.migrating.lookup(a + PMD_SIZE + 7 * PAGE_SIZE, followPage(p.mm, a + PMD_SIZE + 7 * PAGE_SIZE))!;
    expect(e0.nr).toBe(512);
    expect(e0.batch.unmapAt).toBeCloseTo(T, 3);
    expect(e0.batch.remapAt).toBeCloseTo(T + 512 * c, 3);
    expect(e1.batch.unmapAt).toBeCloseTo(T + 512 * c, 3);
    expect(e1.batch.remapAt).toBeCloseTo(T + 1024 * c, 3);
  });

  it('move_pages: each run of entries for one node is a migrate_pages call of its own', () => {
    const { k, p, a, c } = onNode0(6);
    const T = k.clock.now();
    const pages = Array.from({ length: 6 }, (_, i) => a + i * PAGE_SIZE);
    const ctx = { ns: 0 };
    // 3 pages to node 1, then an entry that fails (already there: the run ends), then 2 more
    const r = k.runAsTask(ctx, () => sysMovePages(k, p, p, [...pages.slice(0, 3), pages[0]!, ...pages.slice(3, 5)], [1, 1, 1, 1, 1, 1], 0));
    expect(r.ret).toBe(0);
    const win = (i: number) => p.mm.migrating.lookup(pages[i]!, followPage(p.mm, pages[i]!))!.batch;
    expect(win(0)).toBe(win(2));
    expect(win(3)).not.toBe(win(2));
    expect(win(0).remapAt).toBeCloseTo(T + 3 * c, 3);
    expect(win(3).unmapAt).toBeGreaterThanOrEqual(win(0).remapAt);
  });

  it('compaction migrates in clusters of COMPACT_CLUSTER_MAX pages, one after another in the compacting task time', () => {
    const k = smallKernel({ nodes: 1, mib: 32 });
    const { p, a, len } = fragment(k, 16);
    k.clock.advance(1_000_000);
    const T = k.clock.now();
    const ctx = { ns: 0 };
    const r = k.runAsTask(ctx, () => compactZone(k, 0, MAX_PAGE_ORDER + 1)); // the whole zone, as compact_memory
    expect(r.migrated).toBeGreaterThan(COMPACT_CLUSTER_MAX);
    const batches = new Map<object, number>();
    for (let va = a; va < a + len; va += PAGE_SIZE) {
      const pfn = followPage(p.mm, va);
      const e = pfn >= 0 ? p.mm.migrating.lookup(va, pfn) : undefined;
      if (e) batches.set(e.batch, (batches.get(e.batch) ?? 0) + 1);
    }
    expect([...batches.values()].reduce((x, y) => x + y, 0)).toBe(r.migrated);
    const list = [...batches.keys()] as { unmapAt: number; remapAt: number }[];
    list.sort((x, y) => x.unmapAt - y.unmapAt);
    expect([...batches.values()].every((n) => n <= COMPACT_CLUSTER_MAX)).toBe(true);
    expect(list[0]!.unmapAt).toBeGreaterThanOrEqual(T);
    for (let i = 1; i < list.length; i++) expect(list[i]!.unmapAt).toBeGreaterThanOrEqual(list[i - 1]!.remapAt);
    // The last window ends when the task's work does.
    expect(list[list.length - 1]!.remapAt).toBeLessThanOrEqual(T + r.ns + 1e-6);
  });

  it('op-scripts: without a task, the call advances the clock and its windows have ended when it returns', () => {
    const { k, p, a } = onNode0(NR_MAX_BATCHED_MIGRATION + 10);
    expect(sysMigratePages(k, p, p, [0], [1])).toBe(0);
    for (let i = 0; i < NR_MAX_BATCHED_MIGRATION + 10; i++) {
      const va = a + i * PAGE_SIZE;
      expect(p.mm.migrating.at(va, followPage(p.mm, va), k.clock.now())).toEqual({ wait: 0, oldNode: -1 });
    }
  });

  describe('the windows follow the migrating task on the CPUs (Kernel.spend, followCpu)', () => {
    const n = 16 * NR_MAX_BATCHED_MIGRATION;
    /** migrate_pages by a tool task on CPU 0, with `hogs` busy tasks there too; the batches in their order. */
    function onSharedCpu(hogs: number): { T: number; ns: number; batches: { unmapAt: number; remapAt: number }[] } {
      const { k, p, a } = onNode0(n);
      k.enableScheduler();
      for (let h = 0; h < hogs; h++) k.spend({ name: `hog${h}`, cpus: [0] }, 1e9);
      const T = k.clock.now();
      const ctx = { ns: 0 };
      expect(k.runAsTask(ctx, () => sysMigratePages(k, p, p, [0], [1]), { name: 'tool migrate_pages', cpus: [0] })).toBe(0);
      const seen = new Set<object>();
      const batches: { unmapAt: number; remapAt: number }[] = [];
      for (let i = 0; i < n; i++) {
        const b = p.mm.migrating.lookup(a + i * PAGE_SIZE, followPage(p.mm, a + i * PAGE_SIZE))!.batch;
        if (!seen.has(b)) batches.push(b);
        seen.add(b);
      }
      k.events.runUntil(T + 4 * ctx.ns);
      return { T, ns: ctx.ns, batches };
    }

    it('alone on its CPU the windows stay where the task placed them', () => {
      const { T, ns, batches } = onSharedCpu(0);
      expect(batches.length).toBe(16);
      expect(batches[0]!.unmapAt).toBeCloseTo(T, 3);
      expect(batches[15]!.remapAt).toBeCloseTo(T + ns, 3);
    });

    it('sharing its CPU with a busy task, the windows stretch about twice, in order, and an access waits that much longer', () => {
      const alone = onSharedCpu(0);
      const shared = onSharedCpu(1);
      const last = shared.batches[15]!.remapAt - shared.T;
      // Two tasks of one weight on one CPU get half of it each: the work takes about twice as long (give or take the
      // slices: the busy task holds the CPU to the end of its slice before the tool first runs).
      expect(last / alone.ns).toBeGreaterThan(1.8);
      expect(last / alone.ns).toBeLessThan(2.3);
      for (let i = 0; i < 16; i++) {
        const b = shared.batches[i]!;
        expect(b.unmapAt).toBeGreaterThanOrEqual(shared.T);
        expect(b.remapAt).toBeGreaterThan(b.unmapAt);
        if (i) expect(b.unmapAt).toBeGreaterThanOrEqual(shared.batches[i - 1]!.remapAt - 1e-6);
      }
      // An access at the start of the last batch's window waits for its remap: longer when the migrating task shares its CPU.
      const waitAlone = alone.batches[15]!.remapAt - alone.batches[15]!.unmapAt;
      const waitShared = shared.batches[15]!.remapAt - shared.batches[15]!.unmapAt;
      expect(waitShared).toBeGreaterThan(1.3 * waitAlone);
    });

    it('property: whatever the busy tasks, the windows keep their order, start no earlier than planned and end when the work does', () => {
      fc.assert(
        fc.property(fc.integer({ min: 0, max: 3 }), (hogs) => {
          const r = onSharedCpu(hogs);
          const planned = onSharedCpu(0).batches;
          r.batches.forEach((b, i) => {
            expect(b.unmapAt).toBeGreaterThanOrEqual(planned[i]!.unmapAt - 1e-6);
            expect(b.remapAt).toBeGreaterThanOrEqual(planned[i]!.remapAt - 1e-6);
            if (i) expect(b.unmapAt).toBeGreaterThanOrEqual(r.batches[i - 1]!.remapAt - 1e-6);
          });
          // With h busy tasks the tool gets 1/(h+1) of the CPU: it ends about (h+1) times its work after the start.
          const end = r.batches[r.batches.length - 1]!.remapAt - r.T;
          expect(end / r.ns / (hogs + 1)).toBeGreaterThan(0.9);
          expect(end / r.ns / (hogs + 1)).toBeLessThan(1.15);
        }),
        { numRuns: 4 },
      );
    });
  });
});
