/**
 * Precopy live migration: the bulk pass, iterations and convergence,
 * auto-converge, free page hints, the QMP interface, and the content
 * check (no data lost) under arbitrary guest writes.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { vmTestKernel } from '../test_fixtures.ts';
import { Vm } from '../vm.ts';
import type { Kernel } from '../../kernel/kernel.ts';
import { MADV, PAGE_SIZE } from '../../kernel/uapi.ts';
import { NSEC_PER_MSEC, NSEC_PER_SEC } from '../../sim/clock.ts';
import { Link } from './link.ts';
import { MigrationState } from './migration.ts';
import { Network } from '../../sim/network.ts';
import { MemBandwidth } from '../../sim/membw.ts';
import { RamMigration, ramRuns, type FreePageHints } from './ram.ts';
import { followPage } from '../../kernel/memory.ts';

const MiB = 2 ** 20;
const URI = 'tcp:dest:4444';
/** 10 Gbit/s goodput, 50 µs one way. */
const link10g = (): Link => new Link({ bandwidth: 1.25e9, latency: 50_000 });

function pair(m = 64 * MiB, hints?: FreePageHints, accel?: 'kvm' | 'tcg'): { k: Kernel; src: Vm; dst: Vm; mig: MigrationState } {
  const k = vmTestKernel({ nodes: 1, gib: 2, cpus: 4 });
  const src = new Vm(k, { name: 'src', m, smp: 1 });
  const dst = new Vm(k, { name: 'dst', m, smp: 1 });
  const mig = new MigrationState(src, { hints, ...(accel ? { accel } : {}) }).register();
  mig.incoming(URI, dst, link10g());
  return { k, src, dst, mig };
}

/** A guest store of `fill` at the start of page `page`, logged for migration. */
function guestWrite(k: Kernel, vm: Vm, mig: MigrationState, page: number, fill: number): void {
  k.runAsTask({ ns: 0 }, () => vm.access(0, page * PAGE_SIZE, 1, 1, true, fill));
  mig.onGuestWrite(page * PAGE_SIZE, 1);
}

/**
 * A guest dirtying `ws` pages from `first`, round robin, at `pagesPerSec`
 * scaled by the auto-converge throttle, in 1 ms steps (the working set is written once first) while it runs on the source.
 */
function dirtier(k: Kernel, vm: Vm, mig: MigrationState, first: number, ws: number, pagesPerSec: number): void {
  let cursor = 0;
  let carry = 0;
  let fill = 2;
  for (let p = 0; p < ws; p++) guestWrite(k, vm, mig, first + p, 1);
  const tick = (): void => {
    if (mig.status === 'completed' || mig.status === 'cancelled' || mig.status === 'failed') return;
    if (mig.guestRunning) {
      carry += (pagesPerSec * mig.guestRunFraction) / 1000;
      const n = Math.floor(carry);
      carry -= n;
      for (let i = 0; i < n; i++) {
        guestWrite(k, vm, mig, first + cursor, fill);
        cursor = (cursor + 1) % ws;
        if (cursor === 0) fill = (fill % 255) + 1;
      }
    }
    k.events.after(NSEC_PER_MSEC, 'guest-dirtier', tick);
  };
  k.events.after(0, 'guest-dirtier', tick);
}

function runUntilDone(k: Kernel, mig: MigrationState, limitNs: number): void {
  const end = k.clock.now() + limitNs;
  while (k.clock.now() < end && mig.status !== 'completed' && mig.status !== 'failed')
    k.events.runUntil(Math.min(end, k.clock.now() + 100 * NSEC_PER_MSEC));
}

const qmp = (vm: Vm, execute: string, args?: Record<string, unknown>): Record<string, unknown> =>
  vm.monitor.execute(args ? { execute, arguments: args } : { execute }) as Record<string, unknown>;

describe('precopy: the bulk pass', () => {
  it('a 64 MiB guest that never touched its memory moves in one pass of zero pages', () => {
    const { k, src, mig } = pair();
    expect(qmp(src, 'query-migrate')).toEqual({ return: {} });
    expect(qmp(src, 'migrate', { uri: URI })).toEqual({ return: {} });
    expect(mig.query()).toEqual({ status: 'setup' });
    runUntilDone(k, mig, 10 * NSEC_PER_SEC);
    const q = mig.query() as { status: string; ram: Record<string, number>; 'total-time': number; downtime: number };
    expect(q.status).toBe('completed');
    const pages = (64 * MiB) / PAGE_SIZE;
    expect(q.ram.total).toBe(64 * MiB);
    expect(q.ram.duplicate).toBe(pages);
    expect(q.ram.normal).toBe(0);
    expect(q.ram.remaining).toBe(0);
    // setup (MEM_SIZE, idstr "pc.ram" + length, EOS), then 9 bytes per page, the first with the idstr, EOS per step.
    expect(q.ram.transferred).toBeGreaterThanOrEqual(pages * 9 + 7 + 8 + 7 + 8 + 8);
    expect(q.ram.transferred).toBeLessThan(pages * 9 + 2000);
    expect(q.ram['dirty-sync-count']).toBe(3); // setup, the pass's end, completion (guest stopped)
    expect(mig.verify()).toEqual([]);
    // Time: the zero checks (the pass is CPU-bound, not wire-bound) plus the read faults, setup and latency.
    const zeroNs = pages * k.costs.nsOf('dram_access_seq_per_4k');
    const totalNs = mig.endTime - mig.startTime;
    expect(totalNs).toBeGreaterThan(zeroNs);
    expect(totalNs).toBeLessThan(zeroNs + 20 * NSEC_PER_MSEC);
  });

  it('touched memory goes as normal pages at max-bandwidth', () => {
    const { k, src, mig } = pair();
    for (let p = 0; p < 4096; p++) guestWrite(k, src, mig, p, 0x40 + (p % 7));
    const t0 = k.clock.now();
    qmp(src, 'migrate', { uri: URI });
    runUntilDone(k, mig, 10 * NSEC_PER_SEC);
    const q = mig.query() as { status: string; ram: Record<string, number> };
    expect(q.status).toBe('completed');
    expect(q.ram.normal).toBe(4096);
    expect(q.ram['normal-bytes']).toBe(16 * MiB);
    expect(q.ram.duplicate).toBe(16384 - 4096);
    // One 100 ms window at max-bandwidth (12.8 MiB); then the 3.2 MiB left are below
    // bandwidth x downtime-limit, so the guest stops and they go at the link's full rate.
    const window = 100 * NSEC_PER_MSEC;
    const rest = ((16 * MiB - 12.8 * MiB) / 1.25e9) * NSEC_PER_SEC;
    expect(mig.endTime - t0).toBeGreaterThan(window + rest);
    expect(mig.endTime - t0).toBeLessThan(window + 2 * rest + 5 * NSEC_PER_MSEC);
    expect(mig.downtime).toBeGreaterThan(0); // less than `rest`: remaining counts zero pages as 4 KiB, as QEMU's does
    expect(mig.downtime).toBeLessThan(2 * rest + NSEC_PER_MSEC);
    expect(mig.verify()).toEqual([]);
    for (const p of [0, 1, 4095]) expect(mig.dest!.peek(p * PAGE_SIZE)).toBe(0x40 + (p % 7));
  });

  it('zero-page-detection none sends every page whole', () => {
    const { k, src, mig } = pair(16 * MiB);
    expect(qmp(src, 'migrate-set-parameters', { 'zero-page-detection': 'none' })).toEqual({ return: {} });
    qmp(src, 'migrate', { uri: URI });
    runUntilDone(k, mig, 10 * NSEC_PER_SEC);
    const q = mig.query() as { ram: Record<string, number> };
    expect(q.ram.normal).toBe(4096);
    expect(q.ram.duplicate).toBe(0);
    expect(mig.verify()).toEqual([]);
  });
});

describe('precopy: iterations and convergence', () => {
  it('a working set dirtied slower than the link converges in a few iterations, downtime under the limit', () => {
    const { k, src, mig } = pair();
    qmp(src, 'migrate-set-parameters', { 'downtime-limit': 50 });
    dirtier(k, src, mig, 0, 8192, 4096); // 16 MiB/s over a 32 MiB working set
    qmp(src, 'migrate', { uri: URI });
    runUntilDone(k, mig, 30 * NSEC_PER_SEC);
    const q = mig.query() as { status: string; downtime: number; ram: Record<string, number> };
    expect(q.status).toBe('completed');
    expect(q.ram['dirty-sync-count']).toBeGreaterThanOrEqual(3);
    expect(q.ram['dirty-sync-count']).toBeLessThanOrEqual(8);
    expect(q.downtime).toBeLessThan(50);
    expect(mig.downtime).toBeGreaterThan(0);
    expect(q.ram.normal).toBeGreaterThan(8192); // pages sent again
    expect(mig.verify()).toEqual([]);
  });

  it('syncs only between ram_save_iterate calls, which run until the rate limit, MAX_WAIT (50 ms) or an empty bitmap', () => {
    // A 64 MiB guest rewriting a 32 MiB working set at 4,000 pages/s under max-bandwidth 32 MiB/s: what remains
    // hovers around threshold_size (32 MiB/s x 300 ms) for several iterations. Checking it after every 1 ms step
    // synced again each time it dipped below (two syncs 2.4 ms apart here). QEMU checks only when
    // ram_save_iterate returns: here each one ends at the rate limit (a window's 3.4 MB go in about 3 ms at
    // 10 Gbit/s, far from MAX_WAIT), so the next iteration, and its sync, starts with the next 100 ms window.
    const { k, src, mig } = pair(64 * MiB);
    qmp(src, 'migrate-set-parameters', { 'max-bandwidth': 32 * MiB });
    dirtier(k, src, mig, 0, 8192, 4000);
    qmp(src, 'migrate', { uri: URI });
    runUntilDone(k, mig, 20 * NSEC_PER_SEC);
    expect(mig.status).toBe('completed');
    expect(mig.verify()).toEqual([]);
    // The setup's sync is first, the stop-and-copy's last; a sync that found the bitmap emptied may come early.
    const live = mig.iterations.slice(1, -1);
    expect(live.length).toBeGreaterThan(2);
    for (let i = 1; i < live.length; i++) {
      if (live[i]!.remainingBytes === live[i]!.newDirtyPages * PAGE_SIZE) continue;
      expect(live[i]!.at - live[i - 1]!.at, `sync ${live[i]!.syncCount}`).toBeGreaterThanOrEqual(100 * NSEC_PER_MSEC);
    }
  });

  it('a guest dirtying faster than max-bandwidth does not converge without auto-converge', () => {
    const { k, src, mig } = pair(32 * MiB);
    qmp(src, 'migrate-set-parameters', { 'max-bandwidth': 32 * MiB, 'downtime-limit': 30 });
    dirtier(k, src, mig, 0, 2048, 16384); // 64 MiB/s over 8 MiB
    qmp(src, 'migrate', { uri: URI });
    runUntilDone(k, mig, 15 * NSEC_PER_SEC);
    const q = mig.query() as { status: string; 'expected-downtime': number; ram: Record<string, number> };
    expect(q.status).toBe('active');
    expect(q.ram['dirty-sync-count']).toBeGreaterThan(10);
    expect(q.ram['dirty-pages-rate']).toBeGreaterThan(1000);
    expect(q['expected-downtime']).toBeGreaterThan(30);
    expect(mig.throttlePercentage).toBe(0);
    expect(qmp(src, 'migrate_cancel')).toEqual({ return: {} });
    expect(mig.query()).toEqual({ status: 'cancelled' });
    expect(mig.guestRunning).toBe(true);
  });

  it('converges with auto-converge, throttling the guest', () => {
    const { k, src, mig } = pair(32 * MiB);
    qmp(src, 'migrate-set-parameters', { 'max-bandwidth': 32 * MiB, 'downtime-limit': 30 });
    qmp(src, 'migrate-set-capabilities', { capabilities: [{ capability: 'auto-converge', state: true }] });
    dirtier(k, src, mig, 0, 2048, 16384);
    qmp(src, 'migrate', { uri: URI });
    let maxThrottle = 0;
    const end = k.clock.now() + 120 * NSEC_PER_SEC;
    while (mig.status === 'setup' || mig.status === 'active') {
      if (k.clock.now() >= end) break;
      k.events.runUntil(k.clock.now() + 100 * NSEC_PER_MSEC);
      const q = mig.query() as { 'cpu-throttle-percentage'?: number };
      maxThrottle = Math.max(maxThrottle, q['cpu-throttle-percentage'] ?? 0);
    }
    const q = mig.query() as { status: string; downtime: number };
    expect(q.status).toBe('completed');
    expect(maxThrottle).toBeGreaterThanOrEqual(20);
    expect(q.downtime).toBeLessThan(30);
    expect(mig.verify()).toEqual([]);
  });
});

describe('precopy: rate limiting in whole nanoseconds', () => {
  /**
   * A guest writing random pages (each write logged, as KVM would) while
   * it runs on the source, `perSec` a second in 1 ms ticks.
   */
  function randomWriter(k: Kernel, vm: Vm, mig: MigrationState, pages: number, perSec: number): void {
    let x = 7920;
    let carry = 0;
    const tick = (): void => {
      if (mig.status === 'completed' || mig.status === 'failed') return;
      if (mig.guestRunning) {
        carry += perSec / 1000;
        const n = Math.floor(carry);
        carry -= n;
        for (let i = 0; i < n; i++) {
          x = (x * 1103515245 + 12345) % 2 ** 31;
          guestWrite(k, vm, mig, Math.floor((x / 2 ** 31) * pages), 7);
        }
      }
      k.events.after(NSEC_PER_MSEC, 'guest-dirtier', tick);
    };
    k.events.after(0, 'guest-dirtier', tick);
  }

  it('regression: a rate-limited precopy of a randomly dirtied guest finishes (it used to spin at one instant forever)', () => {
    // A 1 GiB guest writing 20,000 random pages a second, max-bandwidth 64 MiB/s: its syncs cost a fractional
    // number of ns, so a rate window could start at a fractional time, the wake-up was computed below the window's
    // end (rounded down by the queue) and the window never reset: millions of steps at one virtual instant.
    const k = vmTestKernel({ nodes: 1, gib: 4, cpus: 4 });
    const src = new Vm(k, { name: 'src', m: 1024 * MiB, smp: 1 });
    const dst = new Vm(k, { name: 'dst', m: 1024 * MiB, smp: 1 });
    const mig = new MigrationState(src).register();
    mig.incoming(URI, dst, link10g());
    randomWriter(k, src, mig, (1024 * MiB) / PAGE_SIZE, 20_000);
    expect(qmp(src, 'migrate-set-parameters', { 'max-bandwidth': 64 * MiB })).toEqual({ return: {} });
    expect(qmp(src, 'migrate', { uri: URI })).toEqual({ return: {} });
    runUntilDone(k, mig, 5 * NSEC_PER_SEC);
    expect(mig.status).toBe('completed');
    expect(mig.verify()).toEqual([]);
    for (const t of [mig.startTime, mig.setupTime, mig.endTime, mig.downtimeStart, mig.downtime, mig.guestResumedAt])
      expect(Number.isInteger(t)).toBe(true);
    for (const it of mig.iterations) expect(Number.isInteger(it.at)).toBe(true);
  });

  it('max-bandwidth 0 is no limit (RATE_LIMIT_DISABLED), as below 10 bytes/s: not a migration that never sends', () => {
    const time = (maxBw: number): number => {
      const { k, src, mig } = pair();
      for (let p = 0; p < 8192; p++) guestWrite(k, src, mig, p, 0x11);
      qmp(src, 'migrate-set-parameters', { 'max-bandwidth': maxBw });
      qmp(src, 'migrate', { uri: URI });
      runUntilDone(k, mig, 10 * NSEC_PER_SEC);
      expect(mig.status).toBe('completed');
      expect(mig.verify()).toEqual([]);
      return mig.endTime - mig.startTime;
    };
    // 32 MiB of written pages: at the link's 1.25 GB/s about 27 ms, far from 128 MiB/s windows (about 250 ms).
    const unlimited = time(0);
    expect(unlimited).toBeLessThan(60 * NSEC_PER_MSEC);
    expect(time(9)).toBe(unlimited);
    expect(time(128 * MiB)).toBeGreaterThan(200 * NSEC_PER_MSEC);
  });
});

describe("a bitmap sync's cost: KVM's dirty log (published dirty_log_perf_test figures)", () => {
  it('is per memslot, per page of guest RAM (KVM_GET_DIRTY_LOG) and per page found dirty (KVM_CLEAR_DIRTY_LOG)', () => {
    const { k, src, dst } = pair(64 * MiB);
    const ram = new RamMigration(src, dst, { zeroPageDetection: true });
    ram.setup();
    const c = (name: string): number => k.costs.nsOf(name, 'test');
    const pages = (64 * MiB) / PAGE_SIZE;
    const base = src.slots.length * c('syscall_null') + pages * c('kvm_get_dirty_log_per_page');
    expect(ram.sync().ns).toBeCloseTo(base, 6); // nothing written since
    // Two whole 2M ranges.
    for (let p = 0; p < 1024; p++) k.runAsTask({ ns: 0 }, () => src.access(0, p * PAGE_SIZE, 1, 1, true, 5));
    expect(ram.sync().ns).toBeCloseTo(base + 1024 * c('kvm_clear_dirty_log_per_page'), 6);
    // The published figures, not the pagemap stand-in: re-protecting a dirty page costs ~45 ns, reading the log
    // a few hundredths of a ns per page.
    expect(c('kvm_clear_dirty_log_per_page')).toBeGreaterThan(30);
    expect(c('kvm_get_dirty_log_per_page')).toBeLessThan(0.1);
  });
});

describe("KVM's dirty log holds the pages the guest wrote", () => {
  it('a store that brings in a THP dirties its own page, not the 511 zeroed beside it', () => {
    const { k, src, dst } = pair(8 * MiB);
    k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'always');
    const ram = new RamMigration(src, dst, { zeroPageDetection: true });
    ram.setup();
    ram.send(Infinity, Infinity, 1e12); // the bulk pass: the source reads map the huge zero page
    expect(ram.dirtyPages).toBe(0);
    k.runAsTask({ ns: 0 }, () => src.access(0, 2 * MiB + 5 * PAGE_SIZE, 1, 1, true, 7));
    const hva = src.ramList.blocks[0]!.host + 2 * MiB;
    expect(followPage(src.process.mm, hva)).toBeGreaterThanOrEqual(0); // a THP replaced the huge zero page: page 0 has a frame
    expect(ram.sync().newDirty).toBe(1);
    // A store of zeros is a store too.
    k.runAsTask({ ns: 0 }, () => src.access(0, 2 * MiB + 9 * PAGE_SIZE, 1, 1, true, 0));
    expect(ram.sync().newDirty).toBe(1);
    const r = ram.send(Infinity, Infinity, 1e12);
    expect(r.pages).toBe(2);
    expect(ram.verify()).toEqual([]);
  });

  /**
   * With ramRuns `runs`: a pair of 8 MiB VMs on THPs whose source pages `written` hold `fill(p)`, migrated
   * once with setup and one unlimited bulk pass; `body` goes on from there.
   */
  function afterBulkPass(
    runs: boolean,
    written: number[],
    fill: (p: number) => number,
    body: (s: { k: Kernel; src: Vm; dst: Vm; ram: RamMigration }) => void,
  ): void {
    ramRuns.enabled = runs;
    try {
      const { k, src, dst } = pair(8 * MiB);
      k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'always');
      for (const p of written) k.runAsTask({ ns: 0 }, () => src.access(0, p * PAGE_SIZE, 1, 1, true, fill(p)));
      const ram = new RamMigration(src, dst, { zeroPageDetection: true });
      ram.setup();
      ram.send(Infinity, Infinity, 1e12);
      body({ k, src, dst, ram });
    } finally {
      ramRuns.enabled = true;
    }
  }
  const range = (from: number, to: number, step = 1): number[] =>
    Array.from({ length: Math.ceil((to - from) / step) }, (_, i) => from + i * step);

  it.each([true, false])('a sync finds each page of a THP written without a log entry, wherever it sits (runs %s)', (runs) => {
    // A THP of zeroed frames (page 512 written).
    afterBulkPass(
      runs,
      [512],
      () => 1,
      ({ k, src, ram }) => {
        expect(ram.sync().newDirty).toBe(0);
        for (const p of [603, 605, 610, 1020, 1023]) k.runAsTask({ ns: 0 }, () => src.access(0, p * PAGE_SIZE, 1, 1, true, 3));
        expect(ram.sync().newDirty).toBe(5);
        expect(ram.send(Infinity, Infinity, 1e12).pages).toBe(5);
        expect(ram.verify()).toEqual([]);
      },
    );
  });

  it.each([true, false])('the content check finds each page whose first byte differs between the sides (runs %s)', (runs) => {
    afterBulkPass(
      runs,
      range(512, 1536, 3),
      (p) => (p % 250) + 1,
      ({ k, src, dst, ram }) => {
        expect(ram.verify()).toEqual([]);
        // Behind the migration's back: the destination's THP frames, the source's, and a 2M only the destination maps.
        // Pages written: 512 + 3j (p % 3 == 2), with (p % 250) + 1.
        k.runAsTask({ ns: 0 }, () => dst.access(0, 700 * PAGE_SIZE, 1, 1, true, 0xee)); // zero on the source
        k.runAsTask({ ns: 0 }, () => src.access(0, 1027 * PAGE_SIZE, 1, 1, true, 0x11)); // zero on the destination
        k.runAsTask({ ns: 0 }, () => dst.access(0, 1028 * PAGE_SIZE, 1, 1, true, 0xee)); // written on both
        k.runAsTask({ ns: 0 }, () => dst.access(0, 1800 * PAGE_SIZE, 1, 1, true, 0x22)); // nothing maps the source's 2M
        const id = src.ramList.blocks[0]!.idstr;
        expect(ram.verify()).toEqual([
          { block: id, offset: 700 * PAGE_SIZE, src: 0, dst: 0xee },
          { block: id, offset: 1027 * PAGE_SIZE, src: 0x11, dst: 0 },
          { block: id, offset: 1028 * PAGE_SIZE, src: (1028 % 250) + 1, dst: 0xee },
          { block: id, offset: 1800 * PAGE_SIZE, src: 0, dst: 0x22 },
        ]);
        expect(ram.verify(2)).toHaveLength(2);
      },
    );
  });

  it.each([true, false])('a page sent with contents and then discarded (zero again) is dirty at the next sync (runs %s)', (runs) => {
    afterBulkPass(
      runs,
      [...range(512, 520), ...range(1024, 1032)],
      () => 7,
      ({ k, src, ram }) => {
        expect(ram.sync().newDirty).toBe(0);
        // MADV_DONTNEED on two whole 2Ms: their pages read as zeros now, so the 16 sent with contents changed,
        // unlogged. In the first nothing maps the 2M; the second is a new THP at once (one page written): its
        // zeroed frames hold zeros where the migration last saw contents.
        const host = src.ramList.blocks[0]!.host;
        expect(k.madvise(src.process, host + 2 * MiB, 2 * MiB, MADV.MADV_DONTNEED)).toBe(0);
        expect(k.madvise(src.process, host + 4 * MiB, 2 * MiB, MADV.MADV_DONTNEED)).toBe(0);
        k.runAsTask({ ns: 0 }, () => src.access(0, 1100 * PAGE_SIZE, 1, 1, true, 9));
        expect(followPage(src.process.mm, host + 1024 * PAGE_SIZE)).toBeGreaterThanOrEqual(0);
        expect(ram.sync().newDirty).toBe(17);
        expect(ram.send(Infinity, Infinity, 1e12).pages).toBe(17);
        expect(ram.verify()).toEqual([]);
      },
    );
  });
});

/**
 * Hints kept in a set; `hint` records one as the balloon device does (the migration's qemu_guest_free_page_hint
 * first, then the page skippable); a sync that finds a page written ends its hint (markDirty).
 */
function setHints(): { hinted: Set<number>; hints: FreePageHints; hint: (p: number) => void } {
  const hinted = new Set<number>();
  let migrationHint: ((gpa: number, len: number) => void) | null = null;
  const hints: FreePageHints = {
    isSkippable: (gpa) => hinted.has(gpa / PAGE_SIZE),
    markDirty: (gpa, len) => {
      for (let a = gpa; a < gpa + len; a += PAGE_SIZE) hinted.delete(Math.floor(a / PAGE_SIZE));
    },
    setFreePageHint: (h) => (migrationHint = h),
  };
  const hint = (p: number): void => {
    migrationHint?.(p * PAGE_SIZE, PAGE_SIZE);
    hinted.add(p);
  };
  return { hinted, hints, hint };
}

describe("a write between a sync and its page's send: KVM forgets it until the clear chunk is cleared, TCG keeps it", () => {
  /**
   * An 8 MiB pair, every page written (fill 1), its setup done: the bulk stage's bitmap is full. `shift`: the
   * clear chunks' size (2^shift pages), null for TCG's log.
   */
  function started(shift: number | null): { k: Kernel; src: Vm; ram: RamMigration; write: (p: number, fill: number) => void } {
    const { k, src, dst } = pair(8 * MiB);
    const write = (p: number, fill: number): void => void k.runAsTask({ ns: 0 }, () => src.access(0, p * PAGE_SIZE, 1, 1, true, fill));
    for (let p = 0; p < 2048; p++) write(p, 1);
    const ram = new RamMigration(src, dst, { zeroPageDetection: true, clearBitmapShift: shift });
    ram.setup();
    return { k, src, ram, write };
  }
  const onePage = (ram: RamMigration): number => ram.send(1, Infinity, 1e12).pages;

  it('KVM: the first page taken from a chunk clears it; a write before that is forgotten, one after is kept', () => {
    const { ram, write } = started(6); // chunks of 64 pages
    write(10, 2); // chunk 0, before its clear (KVM_DIRTY_LOG_INITIALLY_SET: reported, still writable)
    write(100, 2); // chunk 1
    expect(onePage(ram)).toBe(1); // page 0: chunk 0 is cleared
    write(20, 3); // chunk 0, after its clear: logged, although page 20 is not sent yet
    write(100, 3); // chunk 1, still not cleared: forgotten too
    ram.send(Infinity, Infinity, 1e12);
    expect(ram.dirtyPages).toBe(0);
    expect(ram.sync().newDirty).toBe(1); // page 20 only
    expect(ram.send(Infinity, Infinity, 1e12).pages).toBe(1);
    expect(ram.verify()).toEqual([]);
  });

  it.each([true, false])('KVM: a run of zero pages that crosses into another chunk clears that chunk first (runs %s)', (runs) => {
    ramRuns.enabled = runs;
    try {
      const { k, src, dst } = pair(8 * MiB);
      k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'always');
      const write = (p: number, fill: number): void => void k.runAsTask({ ns: 0 }, () => src.access(0, p * PAGE_SIZE, 1, 1, true, fill));
      write(512, 1); // a THP of zeroed frames on the source (and, once sent, on the destination)
      const ram = new RamMigration(src, dst, { zeroPageDetection: true, clearBitmapShift: 6 });
      ram.setup();
      ram.send(Infinity, Infinity, 1e12);
      for (let p = 600; p < 700; p++) write(p, 0); // stores of zeros: dirty, still zero
      expect(ram.sync().newDirty).toBe(100);
      // 64 zero pages, 600-663: the run crosses from chunk 9 into chunk 10 at page 640, then the step ends.
      expect(ram.send(64 * (8 + 1), Infinity, 1e12).pages).toBe(64);
      write(650, 9); // after its send and its chunk's clear: logged
      ram.send(Infinity, Infinity, 1e12);
      expect(ram.sync().newDirty).toBe(1);
      ram.send(Infinity, Infinity, 1e12);
      expect(ram.verify()).toEqual([]);
    } finally {
      ramRuns.enabled = true;
    }
  });

  it('TCG (and the dirty ring): every write since the sync is kept, before its page is sent or after', () => {
    const { ram, write } = started(null);
    write(10, 2);
    write(100, 2);
    expect(onePage(ram)).toBe(1);
    write(20, 3);
    write(100, 3);
    ram.send(Infinity, Infinity, 1e12);
    expect(ram.sync().newDirty).toBe(3); // pages 10, 20 and 100, although each went with its latest content
    expect(ram.send(Infinity, Infinity, 1e12).pages).toBe(3);
    expect(ram.verify()).toEqual([]);
  });

  it('KVM: a page a sync reported stays in the log until its chunk is cleared, and is charged one clear', () => {
    const { k, ram, write } = started(6);
    const c = (name: string): number => k.costs.nsOf(name, 'test');
    write(10, 2);
    const base = ram.sync().ns; // every page reported at setup, none cleared: nothing charged again
    expect(base).toBeCloseTo(2048 * c('kvm_get_dirty_log_per_page') + c('syscall_null'), 6);
    ram.send(Infinity, Infinity, 1e12); // the bulk stage clears every chunk
    write(70, 4);
    expect(ram.sync()).toEqual({ ns: base + c('kvm_clear_dirty_log_per_page'), newDirty: 1 });
    // Not sent, so chunk 1 not cleared: the next sync finds page 70 again, and charges no second clear.
    expect(ram.sync()).toEqual({ ns: base, newDirty: 0 });
    expect(ram.dirtyPages).toBe(1);
  });

  it("KVM: a free page hint clears the chunks it covers, so the guest's next write to a hinted page is logged", () => {
    const { src, ram, write } = started(6);
    write(10, 2); // before the hint: forgotten
    ram.freePageHint(src.slots[0]!.gpa + 64 * PAGE_SIZE, 128 * PAGE_SIZE); // chunks 1 and 2
    write(70, 3); // after the hint: logged
    write(200, 3); // chunk 3, never cleared before its pages are taken: forgotten
    ram.send(Infinity, Infinity, 1e12);
    expect(ram.sync().newDirty).toBe(1); // page 70
    ram.send(Infinity, Infinity, 1e12);
    expect(ram.verify()).toEqual([]);
  });

  it('KVM: the guest zeroes a page before hinting it (init_on_alloc): the hint clears the chunk after the zeroing, which is forgotten; the page is never sent again', () => {
    const { hints, hint } = setHints();
    const { k, src, mig } = pair(64 * MiB, hints, 'kvm');
    for (let p = 0; p < 4096; p++) guestWrite(k, src, mig, p, 7);
    qmp(src, 'migrate', { uri: URI });
    k.events.runUntil(k.clock.now() + 1);
    k.runAsTask({ ns: 0 }, () => src.clear(0, 2048 * PAGE_SIZE, 2048 * PAGE_SIZE));
    for (let p = 2048; p < 4096; p++) hint(p);
    runUntilDone(k, mig, 10 * NSEC_PER_SEC);
    const q = mig.query() as { status: string; ram: Record<string, number> };
    expect(q.status).toBe('completed');
    expect(mig.ram!.skippedByHints).toBe(2048);
    expect(q.ram.normal).toBe(2048);
    expect(q.ram.duplicate).toBe(16384 - 4096); // only the never-written pages: TCG also sends the 2048 zeroed ones
    // The destination never had them: zero, as the guest left them.
    expect(mig.dest!.peek(3000 * PAGE_SIZE)).toBe(0);
    expect(mig.verify()).toEqual([]);
  });
});

describe('precopy: free page hints', () => {
  it.each(['kvm', 'tcg'] as const)('skips hinted pages unless the guest writes them (%s)', (accel) => {
    const { hints, hint } = setHints();
    const { k, src, mig } = pair(64 * MiB, hints, accel);
    for (let p = 0; p < 4096; p++) guestWrite(k, src, mig, p, 7);
    qmp(src, 'migrate', { uri: URI });
    k.events.runUntil(k.clock.now() + 1); // setup done
    for (let p = 2048; p < 4096; p++) hint(p);
    // The guest reuses one hinted page: the hint cleared KVM's log for its chunk, so the write is logged.
    guestWrite(k, src, mig, 3000, 9);
    runUntilDone(k, mig, 10 * NSEC_PER_SEC);
    const q = mig.query() as { status: string; ram: Record<string, number> };
    expect(q.status).toBe('completed');
    expect(q.ram.normal).toBe(2049);
    expect(mig.ram!.skippedPages).toBe(2047);
    expect(mig.dest!.peek(3000 * PAGE_SIZE)).toBe(9);
    expect(mig.dest!.peek(2048 * PAGE_SIZE)).toBe(0); // free in the guest: not sent
    expect(mig.verify()).toEqual([]);
  });
});

describe('precopy: free page hints as qemu_guest_free_page_hint clears the bitmap', () => {
  it('TCG: a page the guest zeroed before hinting it (init_on_alloc) is skipped in the pass, then sent as a zero page after the next sync', () => {
    const { hints, hint } = setHints();
    const { k, src, mig } = pair(64 * MiB, hints, 'tcg');
    for (let p = 0; p < 4096; p++) guestWrite(k, src, mig, p, 7);
    qmp(src, 'migrate', { uri: URI });
    k.events.runUntil(k.clock.now() + 1); // setup done: the first sync has every page dirty
    // The driver allocates the free pages (zeroing them), then hints them.
    k.runAsTask({ ns: 0 }, () => src.clear(0, 2048 * PAGE_SIZE, 2048 * PAGE_SIZE));
    for (let p = 2048; p < 4096; p++) hint(p);
    runUntilDone(k, mig, 10 * NSEC_PER_SEC);
    const q = mig.query() as { status: string; ram: Record<string, number> };
    expect(q.status).toBe('completed');
    expect(mig.ram!.skippedByHints).toBe(2048); // each skipped once, in the pass the hint came in
    expect(q.ram.normal).toBe(2048);
    expect(q.ram.duplicate).toBe(16384 - 2048); // the never-written pages and, in a later pass, the zeroed ones
    expect(q.ram['dirty-sync-count']).toBeGreaterThanOrEqual(3); // setup, the sync that finds the zeroing, the final one
    expect(mig.dest!.peek(3000 * PAGE_SIZE)).toBe(0);
    expect(mig.verify()).toEqual([]);
  });

  it('property: whatever the guest writes before or after a hint, every written page ends on the destination with the source content', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.integer({ min: 0, max: 4095 }), { maxLength: 400 }),
        fc.array(
          fc.record({
            page: fc.integer({ min: 0, max: 4095 }),
            fill: fc.integer({ min: 0, max: 255 }),
            atUs: fc.integer({ min: 0, max: 200_000 }),
          }),
          { maxLength: 100 },
        ),
        fc.integer({ min: 0, max: 100_000 }),
        fc.constantFrom('kvm' as const, 'tcg' as const),
        (hintPages, writes, hintAtUs, accel) => {
          const { hints, hint } = setHints();
          const { k, src, mig } = pair(16 * MiB, hints, accel);
          for (let p = 0; p < 4096; p += 3) guestWrite(k, src, mig, p, 5);
          qmp(src, 'migrate-set-parameters', { 'max-bandwidth': 16 * MiB, 'downtime-limit': 10 });
          const t0 = k.clock.now();
          const written = new Set<number>();
          for (const w of writes)
            k.events.schedule(t0 + w.atUs * 1000, 'guest-write', () => {
              if (!mig.guestRunning) return;
              guestWrite(k, src, mig, w.page, w.fill);
              written.add(w.page);
            });
          k.events.schedule(t0 + hintAtUs * 1000, 'free-page-hint', () => {
            if (mig.guestRunning && mig.status === 'active') for (const p of hintPages) if (!written.has(p)) hint(p);
          });
          qmp(src, 'migrate', { uri: URI });
          runUntilDone(k, mig, 60 * NSEC_PER_SEC);
          expect(mig.status).toBe('completed');
          expect(mig.verify()).toEqual([]);
          // A page written at any time (before its hint, after it, or never hinted) is not lost.
          for (const p of written) expect(mig.dest!.peek(p * PAGE_SIZE)).toBe(src.peek(p * PAGE_SIZE));
        },
      ),
      { numRuns: 25, seed: 20 },
    );
  });
});

describe('pause-before-switchover', () => {
  /** A 64 MiB guest with 8 MiB written, the capability on, migrated until it stops at the switchover. */
  function paused(): ReturnType<typeof pair> {
    const p = pair();
    for (let pg = 0; pg < 2048; pg++) guestWrite(p.k, p.src, p.mig, pg, 0x21);
    expect(qmp(p.src, 'migrate-set-capabilities', { capabilities: [{ capability: 'pause-before-switchover', state: true }] })).toEqual({
      return: {},
    });
    qmp(p.src, 'migrate', { uri: URI });
    p.k.events.runUntil(p.k.clock.now() + NSEC_PER_SEC);
    return p;
  }

  it('stops the guest and waits in pre-switchover until migrate-continue; the wait is downtime', () => {
    const { k, src, mig } = paused();
    expect(mig.status).toBe('pre-switchover');
    expect(mig.guestRunning).toBe(false);
    expect((mig.query() as { status: string }).status).toBe('pre-switchover');
    // Nothing moves while it waits.
    const sent = (mig.query() as { ram: { transferred: number } }).ram.transferred;
    k.events.runUntil(k.clock.now() + 200 * NSEC_PER_MSEC);
    expect(mig.status).toBe('pre-switchover');
    expect((mig.query() as { ram: { transferred: number } }).ram.transferred).toBe(sent);
    expect(qmp(src, 'migrate-continue', { state: 'device' })).toEqual({
      error: { class: 'GenericError', desc: 'Migration not in expected state: pre-switchover' },
    });
    expect(qmp(src, 'migrate-continue', {})).toEqual({ error: { class: 'GenericError', desc: "Parameter 'state' is missing" } });
    const waited = k.clock.now() - mig.downtimeStart;
    expect(qmp(src, 'migrate-continue', { state: 'pre-switchover' })).toEqual({ return: {} });
    k.events.runUntil(k.clock.now());
    expect(mig.status).toBe('device'); // sending what is left, the guest still stopped
    expect(mig.guestRunning).toBe(false);
    runUntilDone(k, mig, NSEC_PER_SEC);
    expect(mig.status).toBe('completed');
    expect(mig.downtime).toBeGreaterThan(waited);
    expect(mig.verify()).toEqual([]);
    // Without a migration paused, migrate-continue is refused.
    expect(qmp(src, 'migrate-continue', { state: 'pre-switchover' })).toEqual({
      error: { class: 'GenericError', desc: 'Migration not in expected state: completed' },
    });
  });

  it('a cancel while it waits leaves the guest running on the source', () => {
    const { src, mig } = paused();
    expect(mig.status).toBe('pre-switchover');
    expect(qmp(src, 'migrate_cancel')).toEqual({ return: {} });
    expect(mig.status).toBe('cancelled');
    expect(mig.guestRunning).toBe(true);
    expect(qmp(src, 'migrate-continue', { state: 'pre-switchover' })).toEqual({
      error: { class: 'GenericError', desc: 'Migration not in expected state: cancelled' },
    });
  });

  it('before a postcopy switchover too: pre-switchover, then postcopy-active', () => {
    const p = pair();
    for (let pg = 0; pg < 2048; pg++) guestWrite(p.k, p.src, p.mig, pg, 0x33);
    qmp(p.src, 'migrate-set-capabilities', {
      capabilities: [
        { capability: 'pause-before-switchover', state: true },
        { capability: 'postcopy-ram', state: true },
      ],
    });
    qmp(p.src, 'migrate-set-parameters', { 'max-bandwidth': 16 * MiB });
    qmp(p.src, 'migrate', { uri: URI });
    p.k.events.runUntil(p.k.clock.now() + 50 * NSEC_PER_MSEC);
    expect(qmp(p.src, 'migrate-start-postcopy')).toEqual({ return: {} });
    p.k.events.runUntil(p.k.clock.now() + 200 * NSEC_PER_MSEC);
    expect(p.mig.status).toBe('pre-switchover');
    expect(p.mig.postcopy).toBeNull();
    qmp(p.src, 'migrate-continue', { state: 'pre-switchover' });
    p.k.events.runUntil(p.k.clock.now() + NSEC_PER_MSEC);
    expect(p.mig.postcopy).not.toBeNull();
    runUntilDone(p.k, p.mig, 10 * NSEC_PER_SEC);
    expect(p.mig.status).toBe('completed');
    expect(p.mig.contentCheck?.pagesDiffering).toBe(0);
  });
});

describe('QMP', () => {
  it('capabilities, parameters and errors as QEMU answers them', () => {
    const { src } = pair(16 * MiB);
    const caps = qmp(src, 'query-migrate-capabilities').return as { capability: string; state: boolean }[];
    expect(caps.find((c) => c.capability === 'auto-converge')).toEqual({ capability: 'auto-converge', state: false });
    expect(qmp(src, 'query-migrate-parameters').return).toMatchObject({
      'max-bandwidth': 134217728,
      'downtime-limit': 300,
      'cpu-throttle-initial': 20,
      'cpu-throttle-increment': 10,
      'zero-page-detection': 'multifd',
    });
    expect(qmp(src, 'migrate-set-capabilities', { capabilities: [{ capability: 'zero-page', state: true }] })).toEqual({
      error: { class: 'GenericError', desc: "Parameter 'capability' does not accept value 'zero-page'" },
    });
    expect(qmp(src, 'migrate-set-parameters', { 'downtime-limit': 2_000_001 })).toEqual({
      error: { class: 'GenericError', desc: "Parameter 'downtime_limit' expects an integer in the range of 0 to 2000 seconds" },
    });
    expect(qmp(src, 'migrate-set-parameters', { 'cpu-throttle-initial': 0 })).toEqual({
      error: { class: 'GenericError', desc: "Parameter 'cpu_throttle_initial' expects an integer in the range of 1 to 99" },
    });
    expect(qmp(src, 'migrate', { uri: 'bogus' })).toEqual({ error: { class: 'GenericError', desc: 'unknown migration protocol: bogus' } });
    expect(qmp(src, 'migrate', { uri: URI })).toEqual({ return: {} });
    expect(qmp(src, 'migrate', { uri: URI })).toEqual({
      error: { class: 'GenericError', desc: "There's a migration process in progress" },
    });
    expect(qmp(src, 'migrate-set-capabilities', { capabilities: [{ capability: 'auto-converge', state: true }] })).toEqual({
      error: { class: 'GenericError', desc: "There's a migration process in progress" },
    });
  });

  it('an unknown destination fails the migration; a RAM size mismatch too', () => {
    const { k, src, mig } = pair(16 * MiB);
    qmp(src, 'migrate', { uri: 'tcp:nowhere:1' });
    expect(mig.query()).toEqual({ status: 'failed', 'error-desc': "Failed to connect to 'nowhere:1': Connection refused" });
    const small = new Vm(k, { m: 8 * MiB });
    mig.incoming('tcp:small:1', small, link10g());
    qmp(src, 'migrate', { uri: 'tcp:small:1' });
    expect(mig.query()).toEqual({ status: 'failed', 'error-desc': 'Length mismatch: pc.ram: 0x1000000 in != 0x800000: Invalid argument' });
  });
});

describe('no data lost', () => {
  it('whatever pages the guest writes during precopy, the destination ends with the source content', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            page: fc.integer({ min: 0, max: 4095 }),
            fill: fc.integer({ min: 0, max: 255 }),
            atUs: fc.integer({ min: 0, max: 300_000 }),
          }),
          {
            maxLength: 200,
          },
        ),
        fc.integer({ min: 1, max: 64 }),
        (writes, mbps) => {
          const { k, src, mig } = pair(16 * MiB);
          qmp(src, 'migrate-set-parameters', { 'max-bandwidth': mbps * MiB, 'downtime-limit': 10 });
          const t0 = k.clock.now();
          for (const w of writes)
            k.events.schedule(t0 + w.atUs * 1000, 'guest-write', () => {
              if (mig.guestRunning) guestWrite(k, src, mig, w.page, w.fill);
            });
          qmp(src, 'migrate', { uri: URI });
          runUntilDone(k, mig, 60 * NSEC_PER_SEC);
          expect(mig.status).toBe('completed');
          expect(mig.verify()).toEqual([]);
        },
      ),
      { numRuns: 25, seed: 9 },
    );
  });
});

describe('runs of pages handled as one unit (ramRuns)', () => {
  /** One precopy, everything query-migrate says and when it ended, with runs on or off. */
  function precopy(
    thp: string,
    before: { page: number; fill: number }[],
    during: { page: number; fill: number; atUs: number; logged: boolean }[],
    mbps: number,
    membw: boolean,
    log: { accel: 'kvm' | 'tcg'; clearBitmapShift: number },
    runs: boolean,
  ): unknown {
    ramRuns.enabled = runs;
    try {
      const k = vmTestKernel({ nodes: 1, gib: 2, cpus: 4 });
      // With a bandwidth model the source's reads are flows, and their load prices later reads.
      if (membw) k.membw = new MemBandwidth({ nodes: [2e9], interconnect: [[0]] });
      k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', thp);
      const src = new Vm(k, { name: 'src', m: 24 * MiB, smp: 1 });
      const dst = new Vm(k, { name: 'dst', m: 24 * MiB, smp: 1 });
      const mig = new MigrationState(src, log).register();
      mig.incoming(URI, dst, link10g());
      for (const w of before) k.runAsTask({ ns: 0 }, () => src.access(0, w.page * PAGE_SIZE, 1, 1, true, w.fill));
      qmp(src, 'migrate-set-parameters', { 'max-bandwidth': mbps * MiB, 'downtime-limit': 10 });
      const t0 = k.clock.now();
      for (const w of during)
        k.events.schedule(t0 + w.atUs * 1000, 'guest-write', () => {
          if (!mig.guestRunning) return;
          if (w.logged) guestWrite(k, src, mig, w.page, w.fill);
          else k.runAsTask({ ns: 0 }, () => src.access(0, w.page * PAGE_SIZE, 1, 1, true, w.fill));
        });
      qmp(src, 'migrate', { uri: URI });
      runUntilDone(k, mig, 60 * NSEC_PER_SEC);
      const ns = { start: mig.startTime, end: mig.endTime, downtime: mig.downtime };
      const bw = k.membw ? [k.membw.bytesOnNode(0), k.membw.utilisation(0, k.clock.now())] : null;
      return { query: mig.query(), ns, differing: mig.verify(), bw };
    } finally {
      ramRuns.enabled = true;
    }
  }

  it('property: a precopy gives the same results, byte for byte and nanosecond for nanosecond, as page by page', () => {
    // Writes of zeros are frequent: a logged write that leaves a page zero changes nothing but the log.
    const write = { page: fc.integer({ min: 0, max: 6143 }), fill: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 255 })) };
    fc.assert(
      fc.property(
        fc.constantFrom('always', 'madvise', 'never'),
        fc.array(fc.record(write), { maxLength: 60 }),
        fc.array(fc.record({ ...write, atUs: fc.integer({ min: 0, max: 200_000 }), logged: fc.boolean() }), { maxLength: 60 }),
        fc.integer({ min: 8, max: 2048 }),
        fc.boolean(),
        // KVM's log cleared per chunk (of 64 pages: chunks begin and end inside runs; 1 GiB: one chunk), or TCG's.
        fc.record({ accel: fc.constantFrom('kvm' as const, 'tcg' as const), clearBitmapShift: fc.constantFrom(6, 7, 18) }),
        (thp, before, during, mbps, membw, log) => {
          const paged = precopy(thp, before, during, mbps, membw, log, false);
          expect(precopy(thp, before, during, mbps, membw, log, true)).toEqual(paged);
          expect((paged as { differing: unknown[] }).differing).toEqual([]);
        },
      ),
      { numRuns: 30, seed: 19 },
    );
  });
});

describe('migrations sharing the network (src/sim/network.ts)', () => {
  /**
   * `n` 64 MiB guests on one host, each written in full (so every page is
   * sent with its contents), migrating to VMs on the same kernel over one
   * shared 10 Gbit/s path (source NIC out, destination NIC in), with
   * max-bandwidth at the link's rate. `bg`: a background flow on the same
   * path (greedy, or capped at that many bytes/s) from the start.
   */
  function shared(n: number, bg?: number | 'greedy', maxBandwidth = 1.25e9) {
    const k = vmTestKernel({ nodes: 1, gib: 2, cpus: 4 });
    const net = new Network(k.events);
    net.addHost('a', { bandwidth: 1.25e9, latency: 25_000 });
    net.addHost('b', { bandwidth: 1.25e9, latency: 25_000 });
    const path = net.path('a', 'b');
    const migs: MigrationState[] = [];
    for (let i = 0; i < n; i++) {
      const src = new Vm(k, { name: `src${i}`, m: 64 * MiB, smp: 1 });
      const dst = new Vm(k, { name: `dst${i}`, m: 64 * MiB, smp: 1 });
      const mig = new MigrationState(src, {}).register();
      for (let p = 0; p < (64 * MiB) / PAGE_SIZE; p++) guestWrite(k, src, mig, p, (p % 250) + 1);
      mig.incoming(URI, dst, new Link({ network: net, path }));
      qmp(src, 'migrate-set-parameters', { 'max-bandwidth': maxBandwidth });
      migs.push(mig);
    }
    const other = bg === undefined ? undefined : net.flow('bg', path, bg === 'greedy' ? {} : { cap: bg });
    other?.start();
    // The peak sum of the channels' rates on the path, checked whenever a rate changes.
    let peak = 0;
    const watch = (): void => {
      peak = Math.max(
        peak,
        net.flows.filter((f) => f.active).reduce((a, f) => a + f.rate, 0),
      );
    };
    const start = (): void => {
      for (const m of migs) qmp(m.vm, 'migrate', { uri: URI });
      for (const f of net.flows) f.onRate(watch);
    };
    const run = (): void => {
      const end = k.clock.now() + 20 * NSEC_PER_SEC;
      while (k.clock.now() < end && migs.some((m) => m.status !== 'completed' && m.status !== 'failed'))
        k.events.runUntil(Math.min(end, k.clock.now() + 100 * NSEC_PER_MSEC));
    };
    return { k, net, migs, other, start, run, peak: () => peak };
  }
  const totalTime = (m: MigrationState): number => m.endTime - m.startTime;

  it('one migration alone gets the whole path: the same time as over a link of its own', () => {
    const one = shared(1);
    one.start();
    one.run();
    const k = vmTestKernel({ nodes: 1, gib: 2, cpus: 4 });
    const src = new Vm(k, { name: 'src0', m: 64 * MiB, smp: 1 });
    const dst = new Vm(k, { name: 'dst0', m: 64 * MiB, smp: 1 });
    const mig = new MigrationState(src, {}).register();
    for (let p = 0; p < (64 * MiB) / PAGE_SIZE; p++) guestWrite(k, src, mig, p, (p % 250) + 1);
    // The same one-way latency as the path's two NICs.
    mig.incoming(URI, dst, new Link({ bandwidth: 1.25e9, latency: 50_000 }));
    qmp(src, 'migrate-set-parameters', { 'max-bandwidth': 1.25e9 });
    qmp(src, 'migrate', { uri: URI });
    runUntilDone(k, mig, 20 * NSEC_PER_SEC);
    expect(one.migs[0]!.status).toBe('completed');
    expect(totalTime(one.migs[0]!)).toBe(totalTime(mig));
    expect(one.migs[0]!.contentCheck!.pagesDiffering).toBe(0);
  });

  it('two at once share the link: each is slower than alone, their rates never sum above the link, nothing is lost', () => {
    const one = shared(1);
    one.start();
    one.run();
    const two = shared(2);
    two.start();
    two.run();
    const alone = totalTime(one.migs[0]!);
    for (const m of two.migs) {
      expect(m.status).toBe('completed');
      expect(m.contentCheck!.pagesDiffering).toBe(0);
      expect(totalTime(m)).toBeGreaterThan(alone * 1.5);
    }
    expect(two.peak()).toBeGreaterThan(0);
    expect(two.peak()).toBeLessThanOrEqual(1.25e9 * (1 + 1e-9));
    // Each source NIC carried both streams' bytes.
    two.net.settle();
    const sent = two.migs.reduce((a, m) => a + m.flow!.bytes, 0);
    expect(two.net.host('a')!.tx.bytes).toBeCloseTo(sent, 0);
  });

  it("QEMU's rate limit is not a pacer: two migrations limited to a quarter of the link each, bursting then idle, do not slow each other before the switchover", () => {
    const one = shared(1, undefined, 1.25e9 / 4);
    one.start();
    one.run();
    const two = shared(2, undefined, 1.25e9 / 4);
    two.start();
    two.run();
    const alone = totalTime(one.migs[0]!);
    for (const m of two.migs) {
      expect(m.status).toBe('completed');
      expect(m.contentCheck!.pagesDiffering).toBe(0);
      // Before the switchover each window's budget goes at half the link instead of all of it: the bursts
      // overlap, the windows do not grow. The final transfer (no rate limit) shares the link: about twice as long.
      expect((totalTime(m) - m.downtime) / (alone - one.migs[0]!.downtime)).toBeLessThan(1.02);
      expect(m.downtime / one.migs[0]!.downtime).toBeGreaterThan(1.8);
    }
    // Each QEMU measured about its limit, not the link.
    for (const m of two.migs) {
      const mbps = (m.query() as { ram: { mbps: number } }).ram.mbps;
      expect(mbps).toBeGreaterThan(((1.25e9 / 4) * 8 * 0.9) / 1e6);
      expect(mbps).toBeLessThan(((1.25e9 / 4) * 8 * 1.05) / 1e6);
    }
  });

  it('background traffic on the path slows a migration by the share it takes', () => {
    const alone = shared(1);
    alone.start();
    alone.run();
    const greedy = shared(1, 'greedy');
    greedy.start();
    greedy.run();
    const capped = shared(1, 250e6);
    capped.start();
    capped.run();
    const t = totalTime(alone.migs[0]!);
    // A greedy flow takes half the link: about twice as long. A flow capped at a fifth: about 5/4 as long.
    expect(totalTime(greedy.migs[0]!) / t).toBeGreaterThan(1.8);
    expect(totalTime(greedy.migs[0]!) / t).toBeLessThan(2.2);
    expect(totalTime(capped.migs[0]!) / t).toBeGreaterThan(1.15);
    expect(totalTime(capped.migs[0]!) / t).toBeLessThan(1.35);
    for (const s of [greedy, capped]) expect(s.migs[0]!.contentCheck!.pagesDiffering).toBe(0);
  });
});

describe('precopy: the stop-and-copy and the socket buffer (what query-migrate downtime measures)', () => {
  const RATE = 100e6; // bytes/s
  const SNDBUF = MiB;
  /**
   * A 64 MiB guest rewriting a working set while it migrates over a 100 MB/s
   * link with a 1 MiB send buffer, at `maxBandwidth` (0: no cap, the channel
   * always busy); downtime-limit 300 ms leaves most of the working set for the
   * stop-and-copy. Returns the downtime (ns) and the final stage's bytes.
   */
  function finalStage(maxBandwidth: number, wsPages: number, pagesPerSec: number, rcvbuf?: number): { downtime: number; bytes: number } {
    const k = vmTestKernel({ nodes: 1, gib: 2, cpus: 4 });
    const src = new Vm(k, { name: 'src', m: 64 * MiB, smp: 1 });
    const dst = new Vm(k, { name: 'dst', m: 64 * MiB, smp: 1 });
    const mig = new MigrationState(src).register();
    // With rcvbuf: a receiver-limited link (the receiving application sets the rate) with that receive buffer.
    const recv = rcvbuf === undefined ? {} : { rcvbuf, receiverLimited: true };
    mig.incoming(URI, dst, new Link({ bandwidth: RATE, latency: 50_000, sndbuf: SNDBUF, ...recv }));
    for (let p = 0; p < 4096; p++) guestWrite(k, src, mig, p, 1);
    dirtier(k, src, mig, 0, wsPages, pagesPerSec);
    qmp(src, 'migrate-set-parameters', { 'max-bandwidth': maxBandwidth, 'downtime-limit': 300 });
    qmp(src, 'migrate', { uri: URI });
    runUntilDone(k, mig, 60 * NSEC_PER_SEC);
    expect(mig.status).toBe('completed');
    expect(mig.contentCheck!.pagesDiffering).toBe(0);
    const q = mig.query() as { ram: Record<string, number> };
    return { downtime: mig.downtime, bytes: q.ram['downtime-bytes']! };
  }
  const atLinkRate = (bytes: number): number => (bytes * NSEC_PER_SEC) / RATE;

  it('a capped channel idles at the end of each rate window: the final stage first fills the empty send buffer', () => {
    const { downtime, bytes } = finalStage(32 * MiB, 4096, 8000);
    expect(bytes).toBeGreaterThan(2 * SNDBUF);
    // Shorter than the bytes at the link rate by the buffer's room, never shorter than what the buffer cannot take.
    expect(downtime).toBeLessThan(atLinkRate(bytes) - atLinkRate(SNDBUF) / 2);
    expect(downtime).toBeGreaterThanOrEqual(atLinkRate(bytes - SNDBUF));
  });

  it('an uncapped channel is busy at the switchover, its send buffer full: the final stage goes at the link rate', () => {
    const { downtime, bytes } = finalStage(0, 4096, 8000);
    expect(bytes).toBeGreaterThan(2 * SNDBUF);
    // Less only by what the wire drained during the two bitmap syncs before it (under 1 ms), plus the final sync.
    expect(downtime).toBeGreaterThan(atLinkRate(bytes) - NSEC_PER_MSEC);
    expect(downtime).toBeLessThan(atLinkRate(bytes) + 2 * NSEC_PER_MSEC);
  });

  it('a receiver-limited link: its receive buffer is room too, when the channel idled; none when it was busy', () => {
    const capped = finalStage(32 * MiB, 4096, 8000, 2 * MiB);
    expect(capped.bytes).toBeGreaterThan(4 * SNDBUF);
    expect(capped.downtime).toBeLessThan(atLinkRate(capped.bytes - 2 * SNDBUF));
    expect(capped.downtime).toBeGreaterThanOrEqual(atLinkRate(capped.bytes - 3 * SNDBUF));
    expect(capped.downtime).toBeLessThan(finalStage(32 * MiB, 4096, 8000).downtime);
    const busy = finalStage(0, 4096, 8000, 2 * MiB);
    expect(busy.downtime).toBeGreaterThan(atLinkRate(busy.bytes) - NSEC_PER_MSEC);
  });

  it('property: downtime lies between the bytes the buffer cannot take and all of them, at the link rate', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(0, 16 * MiB, 32 * MiB, 64 * MiB),
        fc.integer({ min: 256, max: 3072 }),
        fc.integer({ min: 500, max: 4000 }),
        (cap, ws, rate) => {
          const { downtime, bytes } = finalStage(cap, ws, rate);
          expect(downtime).toBeGreaterThanOrEqual(atLinkRate(bytes - SNDBUF));
          expect(downtime).toBeLessThan(atLinkRate(bytes) + 2 * NSEC_PER_MSEC);
        },
      ),
      { numRuns: 8, seed: 20 },
    );
  });
});
