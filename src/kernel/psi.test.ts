import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { smallKernel, RW, ANON } from '../testing/fixtures.ts';
import {
  EXP_10s,
  EXP_300s,
  EXP_60s,
  FIXED_1,
  PSI_MEM_FULL,
  PSI_MEM_SOME,
  PSI_PERIOD_NS,
  Psi,
  PsiGroup,
  calcLoad,
  fixedPowerInt,
  formatAvg,
  type PsiHost,
} from './psi.ts';
import { renderPressureMemory } from './procfs.ts';
import { sysSwapon } from './swapfile.ts';
import { followPage } from './memory.ts';
import { PG } from './page.ts';
import { folioActivate } from './swap.ts';
import { MADV, PAGE_SIZE } from './uapi.ts';
import type { Scheduler, SchedTask } from './sched/core.ts';
import { VirtualClock } from '../sim/clock.ts';
import { EventQueue } from '../sim/event_queue.ts';

const MiB = 1 << 20;

/** A scheduler as PSI reads it: each CPU's busy time and queued tasks. */
function fakeSched(cpus: { busyNs: number; tasks: SchedTask[] }[]): Scheduler {
  return {
    rqs: new Map(cpus.map((c, i) => [i, { busyNs: c.busyNs, cfs: { tasks: c.tasks } }])),
    tasks: [],
  } as unknown as Scheduler;
}

describe('PSI arithmetic (kernel/sched/psi.c, loadavg.h)', () => {
  it('psi_period is PSI_FREQ = 2*HZ+1 jiffies at HZ=250: 2.004 s', () => {
    expect(PSI_PERIOD_NS).toBe(2_004_000_000);
  });

  it('calc_load of one 100% period from 0: avg10 18.11, avg60 3.27, avg300 0.68 (fixed point, rounded up while rising)', () => {
    // (100 * 2048) * (2048 - 1677) + 2047 = 75,982,847; / 2048 = 37100 -> 18 + 236/2048 -> "18.11"
    expect(calcLoad(0, EXP_10s, 100 * FIXED_1)).toBe(37100);
    expect(formatAvg(37100)).toBe('18.11');
    // (204800 * 67 + 2047) / 2048 = 6701 -> 3 + 557/2048 -> "3.27"
    expect(formatAvg(calcLoad(0, EXP_60s, 100 * FIXED_1))).toBe('3.27');
    // (204800 * 14 + 2047) / 2048 = 1400 -> "0.68"
    expect(formatAvg(calcLoad(0, EXP_300s, 100 * FIXED_1))).toBe('0.68');
  });

  it('fixed_power_int: x^1 = x, x^0 = 1.0, x^2 rounded', () => {
    expect(fixedPowerInt(EXP_10s, 0)).toBe(FIXED_1);
    expect(fixedPowerInt(EXP_10s, 1)).toBe(EXP_10s);
    // 1677 * 1677 = 2,812,329; + 1024 = 2,813,353; / 2048 = 1373
    expect(fixedPowerInt(EXP_10s, 2)).toBe(1373);
  });
});

describe('PSI accounting (psi.ts)', () => {
  it('without a scheduler a stall is SOME and FULL and its own non-idle time; averages update once a period is due', () => {
    const clock = new VirtualClock();
    const host: PsiHost = { clock, events: new EventQueue(clock), sched: null, taskTime: null, current: null };
    const psi = new Psi(host);
    psi.memstall(() => clock.advance(1_000_000_000));
    // Before the first period ends: totals only.
    expect(psi.show()).toBe('some avg10=0.00 avg60=0.00 avg300=0.00 total=1000000\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=1000000\n');
    clock.advance(PSI_PERIOD_NS - 1_000_000_000);
    // One period of 2.004 s with 1 s stalled: pct = floor(1e9 * 100 / 2.004e9) = 49, i.e. 100352 in fixed point;
    // avg10 = (100352 * 371 + 2047) / 2048 = 18179 -> 8.87; avg60 = (100352 * 67 + 2047) / 2048 = 3283 -> 1.60;
    // avg300 = (100352 * 14 + 2047) / 2048 = 686 -> 0.33.
    expect(psi.show()).toBe('some avg10=8.87 avg60=1.60 avg300=0.33 total=1000000\nfull avg10=8.87 avg60=1.60 avg300=0.33 total=1000000\n');
    // Nested stalls count once (PF_MEMSTALL): 8 ms, 2 jiffies of non-idle weight.
    psi.memstall(() => {
      clock.advance(4_000_000);
      psi.memstall(() => clock.advance(4_000_000));
    });
    psi.update(psi.system);
    expect(psi.system.total[PSI_MEM_SOME]).toBe(1_008_000_000);
    // Less than a jiffy of non-idle time weighs nothing (collect_percpu_times counts it in jiffies).
    psi.memstall(() => clock.advance(3000));
    psi.update(psi.system);
    expect(psi.system.total[PSI_MEM_SOME]).toBe(1_008_000_000);
  });

  it('missed periods decay the averages as calc_load_n with zero activity', () => {
    const g = new PsiGroup('g', null);
    g.total[PSI_MEM_SOME] = PSI_PERIOD_NS; // a whole period stalled
    g.updateAverages(PSI_PERIOD_NS);
    expect(g.avg[PSI_MEM_SOME]![0]).toBe(37100);
    // Three periods later (two missed): two zero periods, then the latest (also zero).
    g.updateAverages(PSI_PERIOD_NS * 4);
    // calc_load_n(37100, 1677, 0, 2) = 37100 * 1373 / 2048 = 24872; then calc_load(24872, 1677, 0) = 20366.
    expect(g.avg[PSI_MEM_SOME]![0]).toBe(Math.floor((Math.floor((37100 * 1373) / 2048) * 1677) / 2048));
    expect(g.avgNextUpdate).toBe(PSI_PERIOD_NS * 5);
  });

  it('weights each CPU by its non-idle jiffies: a stalled CPU beside a busy one is half the pressure, beside an idle one all of it', () => {
    const g = new PsiGroup('system', null);
    // CPU 0 busy 1 s, 0.5 s of it stalled (SOME only: another task was queued); CPU 1 busy 1 s, no stall.
    g.record(0, 0, 500_000_000, false);
    g.collect(
      fakeSched([
        { busyNs: 1e9, tasks: [] },
        { busyNs: 1e9, tasks: [] },
      ]),
      0,
    );
    // (0.5e9 * 250 + 0 * 250) / 500 = 0.25e9
    expect(g.total[PSI_MEM_SOME]).toBe(250_000_000);
    expect(g.total[PSI_MEM_FULL]).toBe(0);
    // Next window: CPU 0 another 1 s with 0.5 s stalled and alone (FULL), CPU 1 idle: all of it counts.
    g.record(0, 1e9, 1.5e9, true);
    g.collect(
      fakeSched([
        { busyNs: 2e9, tasks: [] },
        { busyNs: 1e9, tasks: [] },
      ]),
      0,
    );
    expect(g.total[PSI_MEM_SOME]).toBe(750_000_000);
    expect(g.total[PSI_MEM_FULL]).toBe(500_000_000);
  });

  it('a stall is FULL only when no other task of the group is queued on its CPU', () => {
    const clock = new VirtualClock();
    const me = { cpu: 0 } as SchedTask;
    const other = { cpu: 0 } as SchedTask;
    const stranger = { cpu: 0 } as SchedTask;
    const sched = fakeSched([{ busyNs: 0, tasks: [me, other, stranger] }]);
    const host: PsiHost = { clock, events: new EventQueue(clock), sched, taskTime: { ns: 0 }, current: null };
    const psi = new Psi(host);
    const vm = psi.addGroup('vm', { thread: (t) => t !== null, task: (t) => t !== other });
    host.current = { cpu: 0, se: me } as unknown as PsiHost['current'];
    psi.memstall(() => (host.taskTime!.ns += 4_000_000));
    (sched.rqs.get(0) as unknown as { busyNs: number }).busyNs = 4_000_000;
    (sched as unknown as { tasks: SchedTask[] }).tasks.push(me, stranger);
    me.sumExecNs = 4_000_000;
    psi.update(psi.system);
    psi.update(vm);
    // The system has `other` queued beside it: SOME only. The VM's group holds me and stranger: stranger is queued.
    expect(psi.system.total).toEqual([4_000_000, 0]);
    expect(vm.total).toEqual([4_000_000, 0]);
    // With only `other` (not the VM's) queued, the VM's stall is FULL.
    (sched.rqs.get(0) as unknown as { cfs: { tasks: SchedTask[] } }).cfs.tasks = [me, other];
    psi.memstall(() => (host.taskTime!.ns += 4_000_000));
    me.sumExecNs = 8_000_000;
    psi.update(vm);
    expect(vm.total).toEqual([8_000_000, 4_000_000]);
  });

  it("a kernel thread's stall (kswapd) counts for the system only, on the CPU its work was queued on; nothing without a scheduler", () => {
    const clock = new VirtualClock();
    const kswapd = { cpu: 1 } as SchedTask;
    const vcpu = { cpu: 1 } as SchedTask;
    const sched = fakeSched([
      { busyNs: 0, tasks: [] },
      { busyNs: 8_000_000, tasks: [kswapd, vcpu] },
    ]);
    const host: PsiHost = { clock, events: new EventQueue(clock), sched, taskTime: null, current: null };
    const psi = new Psi(host);
    const vm = psi.addGroup('vm', { thread: () => true, task: (t) => t === vcpu });
    psi.kthreadStall(kswapd, 8_000_000);
    psi.update(psi.system);
    psi.update(vm);
    // A vCPU is queued beside it: SOME only; CPU 1 is the only non-idle CPU, so all of it counts.
    expect(psi.system.total).toEqual([8_000_000, 0]);
    expect(vm.total).toEqual([0, 0]);
    const alone = new Psi({ ...host, sched: null });
    alone.kthreadStall(null, 8_000_000);
    alone.update(alone.system);
    expect(alone.system.total).toEqual([0, 0]);
  });

  it('property: FULL never exceeds SOME, and totals never decrease', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            cpu: fc.integer({ min: 0, max: 2 }),
            gap: fc.integer({ min: -3_000_000, max: 10_000_000 }),
            len: fc.integer({ min: 0, max: 10_000_000 }),
            full: fc.boolean(),
            busy: fc.integer({ min: 0, max: 20_000_000 }),
            collect: fc.boolean(),
          }),
          { maxLength: 200 },
        ),
        (steps) => {
          const g = new PsiGroup('system', null);
          const busy = [0, 0, 0];
          const at = [0, 0, 0];
          let last = [0, 0];
          for (const s of steps) {
            const start = Math.max(0, at[s.cpu]! + s.gap);
            g.record(s.cpu, start, start + s.len, s.full);
            at[s.cpu] = start + s.len;
            busy[s.cpu]! += s.busy;
            if (s.collect) {
              g.collect(fakeSched(busy.map((b) => ({ busyNs: b, tasks: [] }))), 0);
              expect(g.total[PSI_MEM_FULL]).toBeLessThanOrEqual(g.total[PSI_MEM_SOME]!);
              expect(g.total[PSI_MEM_SOME]).toBeGreaterThanOrEqual(last[0]!);
              expect(g.total[PSI_MEM_FULL]).toBeGreaterThanOrEqual(last[1]!);
              last = [...g.total];
            }
          }
        },
      ),
    );
  });
});

describe('PSI in the kernel: where memory stalls are entered', () => {
  function swapKernel(mib: number, swapMib: number) {
    const k = smallKernel({ nodes: 1, mib });
    k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'never');
    expect(sysSwapon(k, { path: '/swapfile', size: swapMib * MiB, kind: 'file', prio: 32767 })).toBe(0);
    return { k, p: k.createProcess('t') };
  }

  it('direct reclaim is a memory stall: a working set larger than the node shows in /proc/pressure/memory', () => {
    const { k, p } = swapKernel(16, 32);
    const n = (24 * MiB) / PAGE_SIZE;
    const a = k.mmap(p, 0, n * PAGE_SIZE, RW, ANON);
    // One access over the whole range: kswapd's wake-up waits for the fault path to run due events, so the
    // allocations find the node short and reclaim directly.
    k.access(p.mainThread, a, n * PAGE_SIZE, PAGE_SIZE, true, 1);
    expect(k.vmstat.events.allocstall_normal).toBeGreaterThan(0);
    const text = renderPressureMemory(k);
    expect(text).toMatch(
      /^some avg10=\d+\.\d\d avg60=\d+\.\d\d avg300=\d+\.\d\d total=\d+\nfull avg10=\d+\.\d\d avg60=\d+\.\d\d avg300=\d+\.\d\d total=\d+\n$/,
    );
    // One task, no scheduler: every stall is FULL.
    expect(k.psi.system.total[PSI_MEM_SOME]).toBeGreaterThan(0);
    expect(k.psi.system.total[PSI_MEM_FULL]).toBe(k.psi.system.total[PSI_MEM_SOME]);
  });

  function refault(workingset: boolean): { stall: number; majfaults: number; readNs: number } {
    const { k, p } = swapKernel(64, 16);
    k.sysfs.write('/proc/sys/vm/page-cluster', '0');
    const a = k.mmap(p, 0, 16 * PAGE_SIZE, RW, ANON);
    for (let i = 0; i < 16; i++) k.access(p.mainThread, a + i * PAGE_SIZE, 1, PAGE_SIZE, true, 7 + i);
    // Pages that were on the active list once (shrink_active_list marks them PG_workingset), beside 32 active
    // pages: refaulting within that workingset, they are workingset again (workingset_refault's restore).
    if (workingset) {
      for (let i = 0; i < 16; i++) k.mem.addFlags(followPage(p.mm, a + i * PAGE_SIZE), PG.workingset);
      const b = k.mmap(p, 0, 32 * PAGE_SIZE, RW, ANON);
      for (let i = 0; i < 32; i++) {
        k.access(p.mainThread, b + i * PAGE_SIZE, 1, PAGE_SIZE, true, 1);
        folioActivate(k, followPage(p.mm, b + i * PAGE_SIZE));
      }
    }
    k.madvise(p, a, 16 * PAGE_SIZE, MADV.MADV_PAGEOUT);
    k.access(p.mainThread, a, 16 * PAGE_SIZE, PAGE_SIZE, false, 0); // back from the swap cache, clean
    k.madvise(p, a, 16 * PAGE_SIZE, MADV.MADV_PAGEOUT); // freed, shadows left in the slots
    // The script has run for a while (PSI weighs a CPU by its non-idle jiffies: a run shorter than one counts nothing).
    k.clock.advance(1e9);
    const maj0 = k.vmstat.events.pgmajfault;
    const t0 = k.clock.now();
    k.access(p.mainThread, a, 16 * PAGE_SIZE, PAGE_SIZE, false, 0);
    const readNs = k.clock.now() - t0;
    k.psi.update(k.psi.system);
    return { stall: k.psi.system.total[PSI_MEM_SOME]!, majfaults: k.vmstat.events.pgmajfault - maj0, readNs };
  }

  it('a swap-in of a workingset folio (a thrashing refault) is a memory stall of the read; a cold swap-in is not', () => {
    const hot = refault(true);
    expect(hot.majfaults).toBe(16);
    // Each of the 16 faults waits swapin_4k for its read, all of it stalled (nothing else is charged here).
    expect(hot.stall).toBe(hot.readNs);
    expect(hot.stall).toBeGreaterThan(0);
    const cold = refault(false);
    expect(cold.majfaults).toBe(16);
    expect(cold.stall).toBe(0);
  });
});
