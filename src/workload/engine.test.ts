/**
 * The workload engine against pages under migration: an access to a page
 * whose batch is being migrated waits until the batch's remap
 * (migration_entry_wait), and every access sees the page on the node it is
 * on at that time.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { smallKernel, RW, ANON } from '../testing/fixtures.ts';
import { MADV, PAGE_SIZE } from '../kernel/uapi.ts';
import { sysMigratePages } from '../kernel/mempolicy.ts';
import { NR_MAX_BATCHED_MIGRATION } from '../kernel/migrate.ts';
import { followPage } from '../kernel/memory.ts';
import { verifyKernel } from '../kernel/debug_vm.ts';
import type { Kernel } from '../kernel/kernel.ts';
import type { Process } from '../kernel/sched.ts';
import type { PhaseSpec } from '../scenario/schema.ts';
import { AccessModel } from './access_model.ts';
import { WorkloadThread } from './engine.ts';
import { Sequential } from './patterns.ts';

const N = NR_MAX_BATCHED_MIGRATION;

/** A kernel of `nodes` nodes and a process with `pages` 4K pages first-touched on node 0. */
function setup(pages: number, nodes = 2): { k: Kernel; p: Process; a: number; model: AccessModel } {
  const k = smallKernel({ nodes, mib: 64 });
  const p = k.createProcess('app', 0);
  const a = k.mmap(p, 0, pages * PAGE_SIZE, RW, ANON);
  k.madvise(p, a, pages * PAGE_SIZE, MADV.MADV_NOHUGEPAGE);
  k.access(p.mainThread, a, pages * PAGE_SIZE, PAGE_SIZE, true, 3);
  k.clock.advance(1_000_000);
  return { k, p, a, model: new AccessModel(k.costs) };
}

/** One read of the page at va by a thread on CPU 0, at the current clock: what it waited and the node it saw. */
function touch(k: Kernel, p: Process, model: AccessModel, va: number): { wait: number; node: number } {
  const spec = { pattern: 'sequential', read_ratio: 1 } as PhaseSpec;
  const wt = new WorkloadThread(
    k,
    p,
    p.mainThread,
    'app/t',
    [{ spec, stream: new Sequential(va, PAGE_SIZE, PAGE_SIZE), end: Infinity }],
    model,
    () => 0,
    () => {},
    0,
  );
  // A step whose budget ends 1 ns after it starts makes exactly one access, or sleeps on a migration entry first
  // (migrationWaitUntil) and makes it when it runs again.
  wt.step(k.clock.now() + 1);
  if (wt.migrationWaitUntil !== undefined) {
    expect(wt.accesses).toBe(0);
    k.clock.advanceTo(wt.migrationWaitUntil);
    wt.migrationWaitUntil = undefined;
    wt.step(k.clock.now() + 1);
  }
  expect(wt.accesses).toBe(1);
  const node = [...wt.byNodeLocal.keys()].find((n) => wt.byNodeLocal[n]! + wt.byNodeRemote[n]! > 0)!;
  expect(wt.stallNs).toBe(wt.migrationWaitNs);
  return { wait: wt.migrationWaitNs, node };
}

/** migrate_pages from `from` to `to` by a tool task at the current clock; returns its time. */
function toolMigrate(k: Kernel, p: Process, from: number, to: number): number {
  const ctx = { ns: 0 };
  expect(k.runAsTask(ctx, () => sysMigratePages(k, p, p, [from], [to]))).toBe(0);
  return ctx.ns;
}

describe('accesses to pages under migration', () => {
  it('waits exactly until its batch is remapped; pages of batches before and after do not wait', () => {
    const { k, p, a, model } = setup(3 * N);
    const T = k.clock.now();
    const c = k.costs.ns('page_migrate_4k');
    toolMigrate(k, p, 0, 1);
    // Inside batch 1's window: batch 0 is done, batch 2 not started.
    k.clock.advanceTo(Math.ceil(T + N * c + 5000));
    const now = k.clock.now();
    const remap1 = T + 2 * N * c;
    expect(touch(k, p, model, a + 3 * PAGE_SIZE)).toEqual({ wait: 0, node: 1 });
    expect(touch(k, p, model, a + (2 * N + 1) * PAGE_SIZE)).toEqual({ wait: 0, node: 0 });
    expect(k.clock.now()).toBe(now);
    // The access sleeps until the remap, then sees the page on its new node.
    const inBatch = touch(k, p, model, a + (N + 17) * PAGE_SIZE);
    expect(inBatch.wait).toBeCloseTo(remap1 - now, 3);
    expect(inBatch.node).toBe(1);
    expect(k.clock.now()).toBe(Math.ceil(remap1));
    // After the last batch every page is on node 1 and nothing waits.
    k.clock.advanceTo(Math.ceil(T + 3 * N * c));
    for (const i of [0, N + 17, 3 * N - 1]) expect(touch(k, p, model, a + i * PAGE_SIZE)).toEqual({ wait: 0, node: 1 });
  });

  it('property: no access sees a page on a node it was not on at that time; contents and pages are kept', () => {
    // The expected node of each page over time, computed independently of the kernel: a call moving pages
    // from node s to node d takes them in address order, batch b of NR_MAX_BATCHED_MIGRATION pages under
    // migration from T + b*N*c to T + (b+1)*N*c.
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 3 * N }),
        fc.array(
          fc.record({
            gap: fc.integer({ min: 0, max: 3_000_000 }),
            from: fc.integer({ min: 0, max: 2 }),
            to: fc.integer({ min: 0, max: 2 }),
            probes: fc.array(fc.tuple(fc.integer({ min: 0, max: 4_000_000 }), fc.nat()), { maxLength: 12 }),
          }),
          { minLength: 1, maxLength: 4 },
        ),
        (pages, calls) => {
          const { k, p, a, model } = setup(pages, 3);
          const c = k.costs.ns('page_migrate_4k');
          const tokens = Array.from({ length: pages }, (_, i) => k.mem.token(followPage(p.mm, a + i * PAGE_SIZE)));
          const free0 = k.phys.freePages();
          // history[i]: the moves of page i: [unmapAt, remapAt, from, to]
          const history: [number, number, number, number][][] = Array.from({ length: pages }, () => []);
          const nodeAt = (i: number, t: number): { node: number; until?: number } => {
            let node = 0;
            for (const [u, r, f, to] of history[i]!) {
              if (t < u) return { node };
              if (t < r) return { node: to, until: r };
              node = to;
              void f;
            }
            return { node };
          };
          let busyUntil = k.clock.now();
          for (const call of calls) {
            // One migration at a time: the next call starts after the last one's time.
            k.clock.advanceTo(Math.ceil(Math.max(busyUntil, k.clock.now() + call.gap)));
            const T = k.clock.now();
            const moving: number[] = [];
            if (call.from !== call.to) for (let i = 0; i < pages; i++) if (nodeAt(i, T).node === call.from) moving.push(i);
            const ns = toolMigrate(k, p, call.from, call.to);
            expect(ns).toBeCloseTo(moving.length * c, 3);
            moving.forEach((i, j) => {
              const b = Math.floor(j / N);
              history[i]!.push([T + b * N * c, T + Math.min((b + 1) * N, moving.length) * c, call.from, call.to]);
            });
            busyUntil = T + ns;
            for (const [dt, pi] of [...call.probes].sort((x, y) => x[0] - y[0])) {
              k.clock.advanceTo(Math.max(k.clock.now(), T + dt));
              const t = k.clock.now();
              const i = pi % pages;
              const seen = touch(k, p, model, a + i * PAGE_SIZE);
              const want = nodeAt(i, t);
              expect(seen.node).toBe(want.node);
              if (want.until !== undefined) expect(seen.wait).toBeCloseTo(want.until - t, 3);
              else expect(seen.wait).toBe(0);
            }
          }
          for (let i = 0; i < pages; i++) expect(k.mem.token(followPage(p.mm, a + i * PAGE_SIZE))).toBe(tokens[i]);
          expect(k.phys.freePages()).toBe(free0);
          expect(verifyKernel(k)).toEqual([]);
        },
      ),
      { numRuns: 40 },
    );
  });
});

describe('the store hook (a live migration watching the guest stores)', () => {
  it("is told of every store with the phase's write_bytes (default a cache line), and what it returns is the thread's time", () => {
    const { k, p, a, model } = setup(16);
    const run = (spec: PhaseSpec, lost: number): { calls: [number, number][]; wt: WorkloadThread; used: number } => {
      const wt = new WorkloadThread(
        k,
        p,
        p.mainThread,
        'app/t',
        [{ spec, stream: new Sequential(a, 16 * PAGE_SIZE, 512), end: Infinity }],
        model,
        () => 0.5,
        () => {},
        0,
      );
      const calls: [number, number][] = [];
      wt.storeHook = (va, n) => {
        calls.push([va, n]);
        return lost;
      };
      const used = wt.step(k.clock.now() + 100_000);
      return { calls, wt, used };
    };
    const w = run({ pattern: 'sequential', read_ratio: 0 } as PhaseSpec, 0);
    expect(w.calls.length).toBe(w.wt.writes);
    expect(w.calls.length).toBeGreaterThan(0);
    expect(w.calls.every(([, n]) => n === 64)).toBe(true);
    expect(w.calls.slice(0, 3).map(([va]) => va - a)).toEqual([0, 512, 1024]);
    const b = run({ pattern: 'sequential', read_ratio: 0, write_bytes: 8 } as PhaseSpec, 0);
    expect(b.calls.every(([, n]) => n === 8)).toBe(true);
    // Loads are not stores.
    expect(run({ pattern: 'sequential', read_ratio: 1 } as PhaseSpec, 0).calls).toEqual([]);
    // 10 us lost per store (a ring-full exit, say): fewer stores fit in the same budget.
    const slow = run({ pattern: 'sequential', read_ratio: 0 } as PhaseSpec, 10_000);
    expect(slow.calls.length).toBeLessThan(w.calls.length);
    expect(slow.used).toBeGreaterThanOrEqual(slow.calls.length * 10_000);
  });
});
