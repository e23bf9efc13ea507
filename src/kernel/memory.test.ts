import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { anonStateOf, smallKernel, RW, ANON } from '../testing/fixtures.ts';
import { verifyKernel } from './debug_vm.ts';
import { MADV, PAGE_SIZE } from './uapi.ts';
import { followPage, followPmdRange, pmdRangeResident, PMD_RANGE_PAGES, readFaultNonePte } from './memory.ts';
import { sysSwapon } from './swapfile.ts';

describe('read faults on none PTEs without the walk (readFaultNonePte)', () => {
  it('property: the same PTEs, counters and time as a one-page read access (userAccess), or declines and leaves all as it was', () => {
    // Pages written, read, zapped; then loads of pages, each through readFaultNonePte (an access where it
    // declines) or through an access, their times summed as a migration thread's are (runAsTask).
    const PAGES = 1100;
    const op = fc.record({
      kind: fc.constantFrom('write' as const, 'read' as const, 'zap' as const),
      at: fc.nat(PAGES - 1),
      n: fc.integer({ min: 1, max: 600 }),
    });
    type Op = { kind: 'write' | 'read' | 'zap'; at: number; n: number };
    const run = (ops: Op[], loads: number[], thp: string, direct: boolean) => {
      const k = smallKernel({ nodes: 1, mib: 32 });
      k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', thp);
      k.hot.faultRead = 300.25; // fractional, as the profile's costs are
      const p = k.createProcess('app');
      const a = k.mmap(p, 0, PAGES * PAGE_SIZE, RW, ANON);
      for (const o of ops) {
        const n = Math.min(o.n, PAGES - o.at);
        const start = a + o.at * PAGE_SIZE;
        if (o.kind === 'zap') expect(k.madvise(p, start, n * PAGE_SIZE, MADV.MADV_DONTNEED)).toBe(0);
        else k.access(p.mainThread, start, n * PAGE_SIZE, PAGE_SIZE, o.kind === 'write', 0x5a);
      }
      const times: number[] = [];
      let sum = 0;
      let declined = 0;
      for (const q of loads) {
        const va = a + q * PAGE_SIZE;
        const ns = direct ? readFaultNonePte(k, p.mainThread, va) : -1;
        if (ns >= 0) {
          sum += 0 + ns;
          times.push(ns);
          continue;
        }
        if (direct) declined++;
        const t = { ns: 0 };
        k.runAsTask(t, () => k.access(p.mainThread, va, 1, 1, false, 0));
        sum += t.ns;
        times.push(t.ns);
      }
      expect(verifyKernel(k)).toEqual([]);
      return { k, p, a, times, sum, declined };
    };
    fc.assert(
      fc.property(
        fc.array(op, { minLength: 0, maxLength: 8 }),
        fc.array(fc.nat(PAGES - 1), { minLength: 1, maxLength: 300 }),
        fc.constantFrom('never', 'always'),
        (ops, loads, thp) => {
          const x = run(ops, loads, thp, true);
          const y = run(ops, loads, thp, false);
          expect(x.times).toEqual(y.times);
          expect(x.sum).toBe(y.sum);
          const state = (r: typeof x) => anonStateOf(r.k, r.p.mm, r.a, PAGES, (pfn) => r.k.mem.index(pfn));
          expect(state(x)).toEqual(state(y));
        },
      ),
      { numRuns: 60 },
    );
  });

  it('maps the zero page where a PTE table exists, and declines where none does', () => {
    const k = smallKernel({ nodes: 1, mib: 32 });
    k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'never');
    const p = k.createProcess('app');
    const a = k.mmap(p, 0, 1024 * PAGE_SIZE, RW, ANON);
    expect(readFaultNonePte(k, p.mainThread, a + PAGE_SIZE)).toBe(-1); // no PTE table yet
    k.access(p.mainThread, a, 1, 1, true, 1);
    const faults = k.vmstat.events.pgfault;
    expect(readFaultNonePte(k, p.mainThread, a + PAGE_SIZE)).toBe(k.hot.faultRead);
    expect(followPage(p.mm, a + PAGE_SIZE)).toBe(-1);
    expect(k.vmstat.events.pgfault).toBe(faults + 1);
    expect(readFaultNonePte(k, p.mainThread, a + PAGE_SIZE)).toBe(-1); // mapped now
    expect(readFaultNonePte(k, p.mainThread, a + 600 * PAGE_SIZE)).toBe(-1); // the next 2M has no table
  });
});

describe('write faults over runs of none PTEs (accessPtes, faultAnonRun)', () => {
  it('property: one write access over a range faults in what one access per page faults in (frames, contents, LRU order, counters, time, events)', () => {
    // One access over a range takes a run of none PTEs' frames at once (installAnonPages); an access per page
    // takes them one at a time. Random ranges over 3 PTE tables and a bit, some pages read first (zero-page
    // PTEs break a run), some zapped between accesses (their frames go back to the buddy lists), a timer due
    // part-way through (the run stops before the fault that reaches it), on a node small enough to pass its
    // low watermark (kswapd, and the run declines).
    const PAGES = 1700;
    const op = fc.oneof(
      fc.record({ kind: fc.constant('write' as const), at: fc.nat(PAGES - 1), n: fc.integer({ min: 1, max: 1100 }) }),
      fc.record({ kind: fc.constant('read' as const), at: fc.nat(PAGES - 1), n: fc.integer({ min: 1, max: 40 }) }),
      fc.record({ kind: fc.constant('zap' as const), at: fc.nat(PAGES - 1), n: fc.integer({ min: 1, max: 600 }) }),
      fc.record({ kind: fc.constant('timer' as const), at: fc.integer({ min: 1, max: 3000 }), n: fc.constant(0) }),
    );
    type Op = { kind: 'write' | 'read' | 'zap' | 'timer'; at: number; n: number };
    const run = (ops: Op[], perPage: boolean, mib: number) => {
      const k = smallKernel({ nodes: 1, mib });
      k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'never');
      expect(sysSwapon(k, { path: '/swap', size: 64 << 20, kind: 'file' })).toBe(0); // so that the low watermark wakes kswapd
      // An integer cost per fault: one access charges the sum once, an access per page charges it per page.
      k.hot.faultWrite = 1000;
      k.hot.faultRead = 300;
      const p = k.createProcess('app');
      const a = k.mmap(p, 0, PAGES * PAGE_SIZE, RW, ANON);
      const trace: (number | string)[] = [];
      for (const o of ops) {
        const n = Math.min(o.n, PAGES - o.at);
        const start = a + o.at * PAGE_SIZE;
        if (o.kind === 'timer') {
          // A timer due o.at faults from now: what runs when, seen in the trace.
          k.events.after(o.at * 1000 - 1, 'timer', () => trace.push(`timer@${k.clock.now()}:${p.mm.rssAnon}`));
          continue;
        }
        if (o.kind === 'zap') {
          expect(k.madvise(p, start, n * PAGE_SIZE, MADV.MADV_DONTNEED)).toBe(0);
          continue;
        }
        const write = o.kind === 'write';
        if (!perPage) {
          const r = k.access(p.mainThread, start, n * PAGE_SIZE, PAGE_SIZE, write, 0x5a);
          trace.push(r.faults, r.signal ?? '', k.events.size);
          continue;
        }
        let faults = 0;
        let signal = '';
        for (let i = 0; i < n && !signal; i++) {
          const r = k.access(p.mainThread, start + i * PAGE_SIZE, PAGE_SIZE, PAGE_SIZE, write, 0x5a);
          faults += r.faults;
          signal = r.signal ?? '';
        }
        trace.push(faults, signal, k.events.size);
      }
      expect(verifyKernel(k)).toEqual([]);
      return { k, p, a, trace };
    };
    fc.assert(
      fc.property(fc.array(op, { minLength: 1, maxLength: 12 }), fc.constantFrom(8, 32), (ops, mib) => {
        const x = run(ops, false, mib);
        const y = run(ops, true, mib);
        expect(x.trace).toEqual(y.trace);
        // Frames, contents and flags of every page, LRU order, vmstat, clock, RSS and free lists alike.
        const state = (r: typeof x) => anonStateOf(r.k, r.p.mm, r.a, PAGES, (pfn) => r.k.mem.index(pfn));
        expect(state(x)).toEqual(state(y));
      }),
      {
        numRuns: 40,
        examples: [
          // Past the low watermark of an 8 MiB node: the run declines and the faults go one by one, waking kswapd.
          [[{ kind: 'write', at: 0, n: 1700 }], 8],
          // A timer due in the middle of a run.
          [
            [
              { kind: 'timer', at: 300, n: 0 },
              { kind: 'write', at: 5, n: 1000 },
            ],
            32,
          ],
        ],
      },
    );
  });

  it('a run whose frames cross a section of the frame metadata gives what single faults give', () => {
    const run = (perPage: boolean) => {
      const k = smallKernel({ nodes: 1, mib: 256 });
      k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'never');
      k.hot.faultWrite = 1000;
      const p = k.createProcess('app');
      // Frames up to just below the first section's end (pfn 32768) taken first, in a mapping of their own.
      const fill = k.mmap(p, 0, 123 << 20, RW, ANON);
      k.access(p.mainThread, fill, 123 << 20, PAGE_SIZE, true, 1);
      const a = k.mmap(p, 0, 4 << 20, RW, ANON);
      if (perPage) for (let i = 0; i < 1024; i++) k.access(p.mainThread, a + i * PAGE_SIZE, PAGE_SIZE, PAGE_SIZE, true, 9);
      else k.access(p.mainThread, a, 4 << 20, PAGE_SIZE, true, 9);
      const pages = Array.from({ length: 1024 }, (_, i) => {
        const pfn = followPage(p.mm, a + i * PAGE_SIZE);
        return `${pfn}:${k.mem.token(pfn)}:${k.mem.flags(pfn)}:${k.mem.index(pfn)}:${k.mem.next(pfn)}:${k.mem.prev(pfn)}`;
      });
      expect(verifyKernel(k)).toEqual([]);
      return { k, pages };
    };
    const x = run(false);
    const y = run(true);
    // The region's frames straddle the section boundary.
    const pfns = x.pages.map((s) => Number(s.split(':')[0]));
    expect(Math.min(...pfns)).toBeLessThan(32768);
    expect(Math.max(...pfns)).toBeGreaterThanOrEqual(32768);
    expect(x.pages).toEqual(y.pages);
    expect(x.k.vmstat.snapshot()).toEqual(y.k.vmstat.snapshot());
    expect(x.k.clock.now()).toBe(y.k.clock.now());
  });

  it('a write over untouched memory takes its frames a run at a time and counts one fault per page', () => {
    const k = smallKernel({ nodes: 1, mib: 64 });
    k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'never');
    const p = k.createProcess('app');
    const a = k.mmap(p, 0, 4 << 20, RW, ANON);
    const faults = k.vmstat.events.pgfault;
    const r = k.access(p.mainThread, a, 4 << 20, PAGE_SIZE, true, 7);
    expect(r.faults).toBe(1024);
    expect(k.vmstat.events.pgfault - faults).toBe(1024);
    expect(p.mm.rssAnon).toBe(1024);
    // Frames in the order single allocations hand them out: ascending within each table.
    const first = followPage(p.mm, a);
    for (let i = 1; i < 512; i++) expect(followPage(p.mm, a + i * PAGE_SIZE)).toBe(first + i);
    for (let i = 0; i < 1024; i++) expect(k.mem.token(followPage(p.mm, a + i * PAGE_SIZE)) & 0xff).toBe(7);
    expect(verifyKernel(k)).toEqual([]);
  });
});

describe('resident pages of a PMD slot (pmdRangeResident)', () => {
  it('property: the count of frames followPmdRange reports (zero page, swap entries and holes not counted), at 4K and with THP', () => {
    const PAGES = 1536; // three 2M slots
    const op = fc.record({
      kind: fc.constantFrom('write' as const, 'read' as const, 'zap' as const, 'pageout' as const),
      at: fc.nat(PAGES - 1),
      n: fc.integer({ min: 1, max: 700 }),
    });
    const range = fc.record({ at: fc.nat(PAGES - 1), n: fc.nat(512) });
    fc.assert(
      fc.property(
        fc.array(op, { maxLength: 8 }),
        fc.array(range, { minLength: 1, maxLength: 40 }),
        fc.constantFrom('never', 'always'),
        (ops, ranges, thp) => {
          const k = smallKernel({ nodes: 1, mib: 32 });
          k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', thp);
          expect(sysSwapon(k, { path: '/swap', size: 64 << 20, kind: 'file' })).toBe(0);
          const p = k.createProcess('app');
          const a0 = k.mmap(p, 0, (PAGES + 512) * PAGE_SIZE, RW, ANON);
          const a = a0 + (((2 << 20) - (a0 % (2 << 20))) % (2 << 20)); // 2M-aligned, so THP can map whole slots
          for (const o of ops) {
            const n = Math.min(o.n, PAGES - o.at);
            const start = a + o.at * PAGE_SIZE;
            if (o.kind === 'zap') expect(k.madvise(p, start, n * PAGE_SIZE, MADV.MADV_DONTNEED)).toBe(0);
            else if (o.kind === 'pageout') expect(k.madvise(p, start, n * PAGE_SIZE, MADV.MADV_PAGEOUT)).toBe(0);
            else k.access(p.mainThread, start, n * PAGE_SIZE, PAGE_SIZE, o.kind === 'write', 0x5a);
          }
          const out = new Int32Array(512);
          for (const r of ranges) {
            const n = Math.min(r.n, 512 - (r.at % 512));
            const va = a + r.at * PAGE_SIZE;
            out.fill(-3);
            const kind = followPmdRange(p.mm, va, n, out);
            let want = 0;
            if (kind === PMD_RANGE_PAGES) for (let i = 0; i < n; i++) if (out[i]! >= 0) want++;
            expect(pmdRangeResident(p.mm, va, n)).toBe(want);
          }
        },
      ),
      { numRuns: 80 },
    );
  });
});
