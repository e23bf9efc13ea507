import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { smallKernel, RW, ANON } from '../testing/fixtures.ts';
import { verifyKernel } from './debug_vm.ts';
import { sysSwapon } from './swapfile.ts';
import { MADV, MAP, PAGE_SIZE, PMD_SIZE } from './uapi.ts';
import { sysFtruncate, sysMemfdCreate } from './shmem.ts';
import type { Kernel } from './kernel.ts';
import { calculateHighDelay, memcgStat, readCgroupFile, renderEvents, verifyMemcg, type MemCgroup } from './memcontrol.ts';
import { oomBadness, oomScore } from './oom_kill.ts';
import { sysMovePages } from './migrate.ts';

const MiB = 2 ** 20;
const PAGES = (b: number): number => b / PAGE_SIZE;

function kernel(opts: { mib?: number; nodes?: number; swap?: number; thp?: string } = {}): Kernel {
  const k = smallKernel({ nodes: opts.nodes ?? 1, mib: opts.mib ?? 64 });
  k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', opts.thp ?? 'never');
  if (opts.swap) expect(sysSwapon(k, { path: '/swapfile', size: opts.swap, kind: 'file', prio: 32767 })).toBe(0);
  return k;
}

function group(
  k: Kernel,
  name: string,
  limits: Partial<Pick<MemCgroup, 'max' | 'high' | 'low' | 'min' | 'swapMax'>> = {},
  parent?: MemCgroup,
): MemCgroup {
  const cg = k.memcg.create(name, parent);
  Object.assign(cg, limits);
  return cg;
}

describe('memory cgroups (memcontrol.ts)', () => {
  it('charges each page a process faults to its group, on the group lruvec, and uncharges it when freed', () => {
    const k = kernel();
    const g = group(k, 'g');
    const p = k.createProcess('p');
    k.memcg.attach(p, g);
    const a = k.mmap(p, 0, 4 * MiB, RW, ANON);
    k.access(p.mainThread, a, 4 * MiB, PAGE_SIZE, true, 1);
    expect(g.usage).toBe(PAGES(4 * MiB));
    expect(g.lruvecs[0]!.total()).toBe(PAGES(4 * MiB));
    expect(k.nodeLruvec[0]!.total()).toBe(0); // every folio is on its memcg's lruvec
    expect(memcgStat(k, g).anon).toBe(4 * MiB);
    k.madvise(p, a, MiB, MADV.MADV_DONTNEED);
    expect(g.usage).toBe(PAGES(3 * MiB));
    k.munmap(p, a, 4 * MiB);
    expect(g.usage).toBe(0);
    expect(verifyKernel(k)).toEqual([]);
  });

  it('charges shmem page-cache pages to the group of the task that faults them in, until the file lets them go', () => {
    const k = kernel();
    const g = group(k, 'g');
    const p = k.createProcess('p');
    k.memcg.attach(p, g);
    const f = sysMemfdCreate(k, p, 'm', 0);
    if (typeof f === 'number') throw new Error('memfd_create');
    expect(sysFtruncate(k, f, 16 * PAGE_SIZE)).toBe(0);
    const a = k.mmap(p, 0, 16 * PAGE_SIZE, RW, MAP.MAP_SHARED, { file: f, offset: 0 });
    expect(k.access(p.mainThread, a, 16 * PAGE_SIZE, PAGE_SIZE, true, 3).signal).toBeUndefined();
    expect(g.usage).toBe(16);
    expect(verifyKernel(k)).toEqual([]);
    k.munmap(p, a, 16 * PAGE_SIZE);
    expect(g.usage).toBe(16); // the page cache keeps them
    expect(sysFtruncate(k, f, 0)).toBe(0);
    expect(g.usage).toBe(0);
    expect(verifyKernel(k)).toEqual([]);
  });

  it('charges only what a process charges after entering: earlier pages stay with the root', () => {
    const k = kernel();
    const p = k.createProcess('p');
    const a = k.mmap(p, 0, 2 * MiB, RW, ANON);
    k.access(p.mainThread, a, MiB, PAGE_SIZE, true, 1);
    const g = group(k, 'g');
    k.memcg.attach(p, g);
    k.access(p.mainThread, a, 2 * MiB, PAGE_SIZE, true, 2);
    expect(g.usage).toBe(PAGES(MiB));
    expect(k.nodeLruvec[0]!.total()).toBe(PAGES(MiB));
    expect(verifyKernel(k)).toEqual([]);
  });

  it('a child charges its ancestors too, and the nearest limit is the one that holds', () => {
    const k = kernel();
    const parent = group(k, 'a', { max: PAGES(8 * MiB) });
    const child = group(k, 'b', {}, parent);
    const p = k.createProcess('p');
    k.memcg.attach(p, child);
    const a = k.mmap(p, 0, 16 * MiB, RW, ANON);
    const r = k.access(p.mainThread, a, 16 * MiB, PAGE_SIZE, true, 1);
    expect(r.signal).toBe('SIGKILL'); // over the parent's limit, no swap: the OOM killer
    expect(parent.events).toMatchObject({ max: expect.any(Number), oom: 1, oom_kill: 1 });
    expect(child.events.oom_kill).toBe(1); // counted in the victim's group, and up
    expect(child.events.oom).toBe(0); // oom belongs to the group whose limit was hit
    expect(parent.eventsLocal.oom).toBe(1);
    k.runDueEvents();
    expect(parent.usage).toBe(0);
    expect(child.usage).toBe(0);
    expect(readCgroupFile(k, '/sys/fs/cgroup/a/memory.max')).toBe(`${8 * MiB}\n`);
    expect(readCgroupFile(k, '/sys/fs/cgroup/a/b/memory.high')).toBe('max\n');
    expect(readCgroupFile(k, '/sys/fs/cgroup/a/b/memory.events.local')).toContain('oom_kill 1\n');
    expect(readCgroupFile(k, '/sys/fs/cgroup/a/memory.stat')).toMatch(/^anon 0\nfile 0\n/);
    expect(readCgroupFile(k, '/sys/fs/cgroup/nosuch/memory.max')).toBeUndefined();
    expect(renderEvents(parent)).toBe(`low 0\nhigh 0\nmax ${parent.events.max}\noom 1\noom_kill 1\noom_group_kill 0\n`);
    expect(verifyKernel(k)).toEqual([]);
  });

  it('at memory.max with swap, reclaims the group to swap instead of killing; contents survive', () => {
    const k = kernel({ swap: 64 * MiB });
    const g = group(k, 'g', { max: PAGES(8 * MiB) });
    const p = k.createProcess('p');
    k.memcg.attach(p, g);
    const a = k.mmap(p, 0, 24 * MiB, RW, ANON);
    for (let i = 0; i < 24; i++) k.access(p.mainThread, a + i * MiB, MiB, PAGE_SIZE, true, 1 + i);
    expect(p.exited).toBe(false);
    expect(g.usage).toBeLessThanOrEqual(g.max);
    expect(g.swapUsage).toBeGreaterThanOrEqual(PAGES(16 * MiB));
    expect(g.events.max).toBeGreaterThan(0);
    expect(g.events.oom).toBe(0);
    expect(memcgStat(k, g).pgsteal).toBeGreaterThan(0);
    const back: number[] = [];
    k.access(p.mainThread, a, 24 * MiB, MiB, false, 0, (_va, b) => back.push(b));
    expect(back).toEqual(Array.from({ length: 24 }, (_, i) => 1 + i));
    expect(verifyKernel(k)).toEqual([]);
  });

  it('memory.swap.max bounds the swap a group takes; past it the group is OOM-killed', () => {
    const k = kernel({ swap: 64 * MiB });
    const g = group(k, 'g', { max: PAGES(8 * MiB), swapMax: PAGES(4 * MiB) });
    const p = k.createProcess('p');
    k.memcg.attach(p, g);
    const a = k.mmap(p, 0, 24 * MiB, RW, ANON);
    const r = k.access(p.mainThread, a, 24 * MiB, PAGE_SIZE, true, 1);
    expect(r.signal).toBe('SIGKILL');
    expect(g.events.oom_kill).toBe(1);
    expect(k.oom.dmesg.some((l) => /Memory cgroup out of memory: Killed process \d+ \(p\) total-vm:24576kB/.test(l))).toBe(true);
    expect(k.oom.dmesg.some((l) => l.includes('oom-kill:constraint=CONSTRAINT_MEMCG') && l.includes('oom_memcg=/g,task_memcg=/g'))).toBe(
      true,
    );
    k.runDueEvents();
    expect(g.swapUsage).toBe(0); // exit_mmap freed the slots
    expect(verifyKernel(k)).toEqual([]);
  });

  it('picks the largest process of the group, not the one charging', () => {
    const k = kernel();
    const g = group(k, 'g', { max: PAGES(16 * MiB) });
    const big = k.createProcess('big');
    const small = k.createProcess('small');
    const other = k.createProcess('other');
    k.memcg.attach(big, g);
    k.memcg.attach(small, g);
    const o = k.mmap(other, 0, 20 * MiB, RW, ANON);
    k.access(other.mainThread, o, 20 * MiB, PAGE_SIZE, true, 1); // larger still, but outside the group
    const b = k.mmap(big, 0, 12 * MiB, RW, ANON);
    k.access(big.mainThread, b, 12 * MiB, PAGE_SIZE, true, 1);
    const s = k.mmap(small, 0, 8 * MiB, RW, ANON);
    expect(k.access(small.mainThread, s, 8 * MiB, PAGE_SIZE, true, 1).signal).toBeUndefined();
    expect(big.exited).toBe(true);
    expect(small.exited).toBe(false);
    expect(other.exited).toBe(false);
    expect(g.usage).toBe(PAGES(8 * MiB));
    // oom_score_adj -1000 protects the larger one: the charging process goes instead
    const small2 = k.createProcess('small2');
    k.memcg.attach(small2, g);
    k.oom.scoreAdj.set(small.pid, -1000);
    const s2 = k.mmap(small2, 0, 12 * MiB, RW, ANON);
    expect(k.access(small2.mainThread, s2, 12 * MiB, PAGE_SIZE, true, 1).signal).toBe('SIGKILL');
    expect(small.exited).toBe(false);
    k.runDueEvents();
    expect(verifyKernel(k)).toEqual([]);
  });

  it('a THP the group cannot take falls back to 4K pages (thp_fault_fallback_charge), never an OOM kill', () => {
    const k = kernel({ thp: 'always' });
    const g = group(k, 'g', { max: PAGES(3 * MiB) });
    const p = k.createProcess('p');
    k.memcg.attach(p, g);
    const a = k.mmap(p, 0, 8 * MiB, RW, ANON);
    const h = Math.ceil(a / PMD_SIZE) * PMD_SIZE;
    k.access(p.mainThread, h, PAGE_SIZE, PAGE_SIZE, true, 1);
    expect(g.usage).toBe(512);
    expect(memcgStat(k, g).anon_thp).toBe(2 * MiB);
    k.access(p.mainThread, h + PMD_SIZE, PAGE_SIZE, PAGE_SIZE, true, 1);
    expect(k.vmstat.events.thp_fault_fallback_charge).toBe(1);
    expect(g.usage).toBe(513);
    expect(g.events.oom).toBe(0);
    expect(verifyKernel(k)).toEqual([]);
  });

  it('a remote MADV_COLLAPSE charges the new huge page to the target process group', () => {
    const k = kernel({ thp: 'madvise' });
    const tg = group(k, 'target');
    const cg = group(k, 'caller');
    const target = k.createProcess('t');
    const caller = k.createProcess('c');
    k.memcg.attach(target, tg);
    k.memcg.attach(caller, cg);
    const a = k.mmap(target, 0, 4 * MiB, RW, ANON);
    const h = Math.ceil(a / PMD_SIZE) * PMD_SIZE;
    k.access(target.mainThread, h, PMD_SIZE, PAGE_SIZE, true, 4);
    expect(tg.usage).toBe(512);
    expect(k.processMadvise(caller, target, [[h, PMD_SIZE]], MADV.MADV_COLLAPSE, 0)).toBe(PMD_SIZE);
    expect(tg.usage).toBe(512); // the new THP charged, the old pages uncharged
    expect(memcgStat(k, tg).anon_thp).toBe(2 * MiB);
    expect(cg.usage).toBe(0);
    // a target group without room for the new THP: the collapse fails with EBUSY (SCAN_CGROUP_CHARGE_FAIL)
    const b = k.mmap(target, 0, 4 * MiB, RW, ANON);
    const hb = Math.ceil(b / PMD_SIZE) * PMD_SIZE;
    k.access(target.mainThread, hb, PMD_SIZE, PAGE_SIZE, true, 4);
    tg.max = tg.usage;
    expect(k.processMadvise(caller, target, [[hb, PMD_SIZE]], MADV.MADV_COLLAPSE, 0)).toBe(-16);
    expect(verifyKernel(k)).toEqual([]);
  });

  it('migration keeps the charge: the new page is charged, the old one freed without uncharging', () => {
    const k = kernel({ nodes: 2 });
    const g = group(k, 'g');
    const p = k.createProcess('p');
    k.memcg.attach(p, g);
    const a = k.mmap(p, 0, MiB, RW, ANON);
    k.access(p.mainThread, a, MiB, PAGE_SIZE, true, 1);
    const pages = Array.from({ length: 256 }, (_, i) => a + i * PAGE_SIZE);
    const r = sysMovePages(k, p, p, pages, new Array(256).fill(1), 0);
    expect(r.ret).toBe(0);
    expect(g.usage).toBe(256);
    expect(g.lruvecs[1]!.total()).toBe(256);
    expect(g.lruvecs[0]!.total()).toBe(0);
    expect(verifyKernel(k)).toEqual([]);
  });

  it('memory.high throttles: the group reclaims and the task pays the penalty delay, but is never killed', () => {
    const k = kernel({ swap: 64 * MiB });
    const g = group(k, 'g', { high: PAGES(8 * MiB) });
    const p = k.createProcess('p');
    k.memcg.attach(p, g);
    const a = k.mmap(p, 0, 24 * MiB, RW, ANON);
    k.access(p.mainThread, a, 24 * MiB, PAGE_SIZE, true, 1);
    expect(p.exited).toBe(false);
    expect(g.events.high).toBeGreaterThan(0);
    expect(g.events.max).toBe(0);
    expect(g.swapUsage).toBeGreaterThan(0);
    expect(verifyKernel(k)).toEqual([]);
    // without swap nothing can be reclaimed: the overage grows and the task sleeps for it
    const k2 = kernel();
    const g2 = group(k2, 'g', { high: PAGES(4 * MiB) });
    const p2 = k2.createProcess('p');
    k2.memcg.attach(p2, g2);
    const b = k2.mmap(p2, 0, 16 * MiB, RW, ANON);
    k2.access(p2.mainThread, b, 16 * MiB, PAGE_SIZE, true, 1);
    expect(p2.exited).toBe(false);
    expect(g2.usage).toBe(PAGES(16 * MiB));
    expect(g2.highDelayNs).toBeGreaterThan(0);
  });

  it('calculate_high_delay: quadratic in the overage, 0 below it, for the pages charged', () => {
    expect(calculateHighDelay(64, 0)).toBe(0);
    // overage 1.0 (usage twice high) = 2^20: 2^40 * 1000 >> 34 = 64000 jiffies for a batch
    expect(calculateHighDelay(64, 2 ** 20)).toBe(64000);
    expect(calculateHighDelay(32, 2 ** 20)).toBe(32000);
    expect(calculateHighDelay(64, 2 ** 19)).toBe(16000);
  });

  it('memory.min protects a group from global reclaim; memory.low too, until nothing else can be reclaimed', () => {
    const k = kernel({ mib: 32, swap: 64 * MiB });
    const prot = group(k, 'prot', { min: PAGES(8 * MiB) });
    const lowg = group(k, 'low', { low: PAGES(64 * MiB) });
    const p = k.createProcess('p');
    const q = k.createProcess('q');
    const r = k.createProcess('r');
    k.memcg.attach(p, prot);
    k.memcg.attach(q, lowg);
    const a = k.mmap(p, 0, 8 * MiB, RW, ANON);
    k.access(p.mainThread, a, 8 * MiB, PAGE_SIZE, true, 1);
    const b = k.mmap(q, 0, 4 * MiB, RW, ANON);
    k.access(q.mainThread, b, 4 * MiB, PAGE_SIZE, true, 1);
    const c = k.mmap(r, 0, 24 * MiB, RW, ANON);
    k.access(r.mainThread, c, 24 * MiB, PAGE_SIZE, true, 1); // more than is left: global reclaim
    expect(r.exited).toBe(false);
    expect(prot.usage).toBe(PAGES(8 * MiB)); // within memory.min: never reclaimed
    expect(prot.swapUsage).toBe(0);
    expect(lowg.swapUsage).toBe(0); // within memory.low, and the root's pages could be reclaimed instead
    expect(lowg.events.low).toBe(0);
    expect(verifyKernel(k)).toEqual([]);

    // Only protected memory left to reclaim: the second pass takes from under memory.low (low events), never under min.
    const k2 = kernel({ mib: 32, swap: 64 * MiB });
    const prot2 = group(k2, 'prot', { min: PAGES(8 * MiB) });
    const low2 = group(k2, 'low', { low: PAGES(64 * MiB) });
    const p2 = k2.createProcess('p');
    const q2 = k2.createProcess('q');
    k2.memcg.attach(p2, prot2);
    k2.memcg.attach(q2, low2);
    const a2 = k2.mmap(p2, 0, 8 * MiB, RW, ANON);
    k2.access(p2.mainThread, a2, 8 * MiB, PAGE_SIZE, true, 1);
    const b2 = k2.mmap(q2, 0, 28 * MiB, RW, ANON);
    expect(k2.access(q2.mainThread, b2, 28 * MiB, PAGE_SIZE, true, 1).signal).toBeUndefined();
    expect(low2.events.low).toBeGreaterThan(0);
    expect(low2.swapUsage).toBeGreaterThan(0);
    expect(prot2.swapUsage).toBe(0);
    expect(verifyKernel(k2)).toEqual([]);
  });

  it('a migration target that a full node cannot give (__GFP_THISNODE) fails without an OOM kill', () => {
    const k = kernel({ nodes: 2, mib: 16 });
    const filler = k.createProcess('filler', 2); // CPU 2: node 1
    const f = k.mmap(filler, 0, 15 * MiB, RW, ANON);
    k.access(filler.mainThread, f, 15 * MiB, PAGE_SIZE, true, 1);
    const p = k.createProcess('p', 0);
    const a = k.mmap(p, 0, 4 * MiB, RW, ANON);
    k.access(p.mainThread, a, 4 * MiB, PAGE_SIZE, true, 1);
    const pages = Array.from({ length: 1024 }, (_, i) => a + i * PAGE_SIZE);
    const r = sysMovePages(k, p, p, pages, new Array(1024).fill(1), 0);
    expect(r.ret).toBeGreaterThan(0); // pages node 1 could not take stay (move_pages counts them)
    expect(k.vmstat.events.oom_kill).toBe(0);
    expect(filler.exited || p.exited).toBe(false);
    expect(verifyKernel(k)).toEqual([]);
  });

  it('oom_badness and /proc/<pid>/oom_score: rss + swap + page tables, oom_score_adj scaled', () => {
    const k = kernel();
    const p = k.createProcess('p');
    const a = k.mmap(p, 0, 4 * MiB, RW, ANON);
    k.access(p.mainThread, a, 4 * MiB, PAGE_SIZE, true, 1);
    const total = k.phys.totalPages();
    expect(oomBadness(k, p, total)).toBe(1024 + p.mm.pgtablesBytes / PAGE_SIZE);
    k.oom.scoreAdj.set(p.pid, 500);
    expect(oomBadness(k, p, total)).toBe(1024 + p.mm.pgtablesBytes / PAGE_SIZE + 500 * Math.floor(total / 1000));
    k.oom.scoreAdj.set(p.pid, -1000);
    expect(oomBadness(k, p, total)).toBeNull();
    expect(oomScore(k, p)).toBe(0);
    k.oom.scoreAdj.set(p.pid, 0);
    expect(oomScore(k, p)).toBe(Math.trunc(((1000 + Math.trunc(((1024 + 1) * 1000) / total)) * 2) / 3));
  });
});

describe('memory cgroup invariants (property)', () => {
  type Op =
    | { k: 'touch'; proc: number; off: number; len: number; fill: number }
    | { k: 'madvise'; proc: number; off: number; len: number; advice: number }
    | { k: 'munmap'; proc: number; off: number; len: number }
    | { k: 'collapse'; proc: number; off: number }
    | { k: 'enter'; proc: number; group: number };
  const ARENA = 16 * MiB;
  const opArb: fc.Arbitrary<Op> = fc.oneof(
    {
      weight: 5,
      arbitrary: fc.record({
        k: fc.constant('touch' as const),
        proc: fc.nat(2),
        off: fc.nat(ARENA / PAGE_SIZE - 1),
        len: fc.integer({ min: 1, max: 1024 }),
        fill: fc.integer({ min: 0, max: 255 }),
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({
        k: fc.constant('madvise' as const),
        proc: fc.nat(2),
        off: fc.nat(ARENA / PAGE_SIZE - 1),
        len: fc.integer({ min: 1, max: 1024 }),
        advice: fc.constantFrom(MADV.MADV_DONTNEED, MADV.MADV_PAGEOUT, MADV.MADV_COLD, MADV.MADV_FREE),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        k: fc.constant('munmap' as const),
        proc: fc.nat(2),
        off: fc.nat(ARENA / PAGE_SIZE - 1),
        len: fc.integer({ min: 1, max: 256 }),
      }),
    },
    { weight: 1, arbitrary: fc.record({ k: fc.constant('collapse' as const), proc: fc.nat(2), off: fc.nat(ARENA / PMD_SIZE - 1) }) },
    { weight: 1, arbitrary: fc.record({ k: fc.constant('enter' as const), proc: fc.nat(2), group: fc.nat(3) }) },
  );

  it('every charged frame is counted once in its group and its ancestors; free frames are charged to nobody; no group stays above memory.max', () => {
    fc.assert(
      fc.property(
        fc.constantFrom('never', 'always', 'madvise'),
        fc.boolean(),
        fc.array(fc.integer({ min: 256, max: 4096 }), { minLength: 3, maxLength: 3 }),
        fc.array(opArb, { minLength: 1, maxLength: 40 }),
        (thp, swap, maxes, ops) => {
          const k = kernel({ mib: 64, thp, swap: swap ? 32 * MiB : 0 });
          const a = group(k, 'a', { max: maxes[0]! });
          const groups = [
            k.memcg.root,
            a,
            group(k, 'b', { max: maxes[1]!, swapMax: 512 }, a),
            group(k, 'c', { max: maxes[2]!, high: 512 }),
          ];
          const procs = [0, 1, 2].map((i) => k.createProcess(`p${i}`));
          procs.forEach((p, i) => k.memcg.attach(p, groups[i + 1]!));
          const base = procs.map((p) => k.mmap(p, 0, ARENA, RW, ANON));
          for (const op of ops) {
            const p = procs[op.proc]!;
            if (p.exited) continue;
            const at = base[op.proc]!;
            switch (op.k) {
              case 'touch':
                k.access(
                  p.mainThread,
                  at + op.off * PAGE_SIZE,
                  Math.min(op.len * PAGE_SIZE, ARENA - op.off * PAGE_SIZE),
                  PAGE_SIZE,
                  true,
                  op.fill,
                );
                break;
              case 'madvise':
                k.madvise(p, at + op.off * PAGE_SIZE, Math.min(op.len * PAGE_SIZE, ARENA - op.off * PAGE_SIZE), op.advice);
                break;
              case 'munmap':
                k.munmap(p, at + op.off * PAGE_SIZE, Math.min(op.len * PAGE_SIZE, ARENA - op.off * PAGE_SIZE));
                break;
              case 'collapse':
                k.madvise(p, Math.ceil(at / PMD_SIZE) * PMD_SIZE + op.off * PMD_SIZE - PMD_SIZE, PMD_SIZE, MADV.MADV_COLLAPSE);
                break;
              case 'enter':
                k.memcg.attach(p, groups[op.group]!);
                break;
            }
            k.runDueEvents();
            expect(verifyMemcg(k)).toEqual([]);
          }
          expect(verifyKernel(k)).toEqual([]);
          // tear everything down: every charge goes
          for (const p of procs) for (const v of [...p.mm.vmas]) k.munmap(p, v.start, v.size);
          k.runDueEvents();
          for (const g of groups.slice(1)) {
            expect(g.usage).toBe(0);
            expect(g.swapUsage).toBe(0);
          }
        },
      ),
      { numRuns: 40, seed: 18_4 },
    );
  });
});
