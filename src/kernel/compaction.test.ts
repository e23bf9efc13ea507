import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { smallKernel, fragment, RW, ANON } from '../testing/fixtures.ts';
import { verifyKernel } from './debug_vm.ts';
import { MADV, PAGE_SIZE, PMD_SIZE, MAP } from './uapi.ts';
import { pagemap } from './procfs.ts';

/** A 64 MiB node fragmented by `fragment`, THP enabled=always with the given defrag, and a fresh process. */
function fragmentedThpHost(defrag: string) {
  const k = smallKernel({ nodes: 1, mib: 64 });
  // 63 of the node's 64 MiB in use is below its boot-time min watermark (min_free_kbytes 3276 with THP on): Linux,
  // as memtwin, would reclaim and OOM-kill first. A small min_free_kbytes (128, calculate_min_free_kbytes's floor) lets the fixture fill it.
  k.sysfs.write('/proc/sys/vm/min_free_kbytes', '128');
  const f = fragment(k, 63);
  k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'always');
  k.sysfs.write('/sys/kernel/mm/transparent_hugepage/defrag', defrag);
  return { k, f, p: k.createProcess('thp') };
}

describe('compaction', () => {
  it('direct compaction at a THP fault (defrag=always) makes a huge page and keeps every byte', () => {
    const { k, f, p } = fragmentedThpHost('always');
    expect(
      k.phys.zones[0]!.nrFreeByOrder()
        .slice(9)
        .every((n) => n === 0),
    ).toBe(true);
    const b = k.mmap(p, 0, 2 * PMD_SIZE, RW, ANON);
    const t0 = k.clock.now();
    k.access(p.mainThread, b, PMD_SIZE, PAGE_SIZE, true, 7);
    const snap = k.vmstat.snapshot();
    expect(snap.compact_stall).toBe(1);
    expect(snap.compact_success).toBe(1);
    expect(snap.thp_fault_alloc).toBe(1);
    expect(snap.pgmigrate_success).toBeGreaterThan(0);
    expect(pagemap(k, p.mm, b, PMD_SIZE)).toEqual([{ n: 512, present: true, node: 0, size: '2M' }]);
    // the stall includes the migrations, at the profile's per-page cost
    expect(k.clock.now() - t0).toBeGreaterThan(snap.pgmigrate_success! * k.costs.ns('page_migrate_4k'));
    // the fragmenting process still reads its data on every other page
    let bad = 0;
    k.access(f.p.mainThread, f.a, f.len, PAGE_SIZE, false, 0, (va, byte) => {
      const expectByte = ((va - f.a) / PAGE_SIZE) % 2 === 1 ? 0x5a : 0;
      if (byte !== expectByte) bad++;
    });
    expect(bad).toBe(0);
    expect(verifyKernel(k)).toEqual([]);
  });

  it('without direct reclaim (defrag=never) the fault falls back to 4K and counts thp_fault_fallback', () => {
    const { k, p } = fragmentedThpHost('never');
    const b = k.mmap(p, 0, 2 * PMD_SIZE, RW, ANON);
    k.access(p.mainThread, b, PAGE_SIZE, PAGE_SIZE, true, 7);
    const snap = k.vmstat.snapshot();
    expect(snap.compact_stall).toBe(0);
    expect(snap.thp_fault_fallback).toBe(1);
    expect(pagemap(k, p.mm, b, PAGE_SIZE)[0]!.size).toBe('4K');
  });

  it('defrag=defer wakes kcompactd, which makes later faults huge', () => {
    const { k, p } = fragmentedThpHost('defer');
    const b = k.mmap(p, 0, 4 * PMD_SIZE, RW, ANON);
    k.access(p.mainThread, b, PAGE_SIZE, PAGE_SIZE, true, 7);
    k.runDueEvents();
    expect(k.vmstat.snapshot().compact_daemon_wake).toBe(1);
    expect(k.vmstat.snapshot().compact_stall).toBe(0);
    k.access(p.mainThread, b + 2 * PMD_SIZE, PAGE_SIZE, PAGE_SIZE, true, 7);
    expect(pagemap(k, p.mm, b + 2 * PMD_SIZE, PAGE_SIZE)[0]!.size).toBe('2M');
  });

  it('/proc/sys/vm/compact_memory migrates pages without losing any (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 2047 }), { minLength: 1, maxLength: 300 }), (holes) => {
        const k = smallKernel({ nodes: 1, mib: 16 });
        const p = k.createProcess('c');
        const len = 8 * 2 ** 20;
        const a = k.mmap(p, 0, len, RW, ANON | MAP.MAP_POPULATE);
        k.madvise(p, a, len, MADV.MADV_NOHUGEPAGE);
        k.access(p.mainThread, a, len, PAGE_SIZE, true, 0);
        for (let i = 0; i < 2048; i++) k.access(p.mainThread, a + i * PAGE_SIZE, 1, PAGE_SIZE, true, (i % 250) + 1);
        for (const h of holes) k.madvise(p, a + h * PAGE_SIZE, PAGE_SIZE, MADV.MADV_DONTNEED);
        expect(k.sysfs.write('/proc/sys/vm/compact_memory', '1')).toBe(0);
        const dead = new Set(holes);
        let bad = 0;
        k.access(p.mainThread, a, len, PAGE_SIZE, false, 0, (va, byte) => {
          const i = (va - a) / PAGE_SIZE;
          if (byte !== (dead.has(i) ? 0 : (i % 250) + 1)) bad++;
        });
        expect(bad).toBe(0);
        expect(verifyKernel(k)).toEqual([]);
      }),
      { numRuns: 40 },
    );
  });
});
