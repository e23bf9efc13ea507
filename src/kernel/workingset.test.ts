import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { smallKernel, RW, ANON } from '../testing/fixtures.ts';
import { sysSwapon } from './swapfile.ts';
import { MADV, PAGE_SIZE } from './uapi.ts';
import type { Kernel } from './kernel.ts';
import { PG } from './page.ts';
import { LRU_ACTIVE_ANON, LRU_ACTIVE_FILE, LRU_INACTIVE_ANON, LRU_INACTIVE_FILE, folioActivate, folioIsolateLru } from './swap.ts';
import { shrinkFolio } from './vmscan.ts';
import { EVICTION_BITS, packShadow, refaultDistance, unpackShadow, workingsetSize, workingsetTestRecent } from './workingset.ts';
import { verifyKernel } from './debug_vm.ts';
import { followPage } from './memory.ts';

const MiB = 1 << 20;

function setup(swap = true): Kernel {
  const k = smallKernel({ nodes: 1, mib: 64 });
  k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'never');
  if (swap) expect(sysSwapon(k, { path: '/swapfile', size: 16 * MiB, kind: 'file', prio: 32767 })).toBe(0);
  return k;
}

describe('shadow entries (pack_shadow, unpack_shadow)', () => {
  it('round-trip every field, are never 0, and stay exact integers', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 0xffff }),
        fc.integer({ min: 0, max: 31 }),
        fc.integer({ min: 0, max: 2 ** 40 }),
        fc.boolean(),
        (memcgId, nid, eviction, ws) => {
          const s = packShadow(memcgId, nid, eviction, ws);
          expect(s).toBeGreaterThan(0);
          expect(Number.isSafeInteger(s)).toBe(true);
          expect(unpackShadow(s)).toEqual({ memcgId, nid, eviction: eviction % 2 ** EVICTION_BITS, workingset: ws });
        },
      ),
    );
  });

  it('measure the refault distance modulo the clock bits (a clock that wrapped still gives the pages evicted since)', () => {
    expect(refaultDistance(100, 150)).toBe(50);
    expect(refaultDistance(2 ** EVICTION_BITS - 10, 5)).toBe(15);
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 45 }), fc.integer({ min: 0, max: 2 ** 29 }), (ev, d) => {
        expect(refaultDistance(unpackShadow(packShadow(0, 0, ev, false)).eviction, ev + d)).toBe(d);
      }),
    );
  });
});

describe('the refault decision (workingset_test_recent)', () => {
  /** A node lruvec with given list sizes (only the counts matter here). */
  function sized(k: Kernel, lists: [number, number, number, number]): void {
    const lv = k.nodeLruvec[0]!;
    [LRU_INACTIVE_ANON, LRU_ACTIVE_ANON, LRU_INACTIVE_FILE, LRU_ACTIVE_FILE].forEach((l, j) => (lv.nrPages[l] = lists[j]!));
  }

  it('weighs a file refault against the active file list, and the anon lists only when swap has room', () => {
    const k = setup(true);
    const lv = k.nodeLruvec[0]!;
    sized(k, [100, 200, 1000, 300]);
    // file: active_file + active_anon + inactive_anon (swap present)
    expect(workingsetSize(k, lv, true, true)).toBe(300 + 200 + 100);
    expect(workingsetSize(k, lv, true, false)).toBe(300);
    // anon: active_file + inactive_file + active_anon (swap present)
    expect(workingsetSize(k, lv, false, true)).toBe(300 + 1000 + 200);
    expect(workingsetSize(k, lv, false, false)).toBe(300 + 1000);
    sized(k, [0, 0, 0, 0]);
  });

  it('activates a refault whose distance is at most the workingset size, not one further away', () => {
    const k = setup(true);
    const lv = k.nodeLruvec[0]!;
    sized(k, [0, 50, 0, 100]); // file workingset with swap: 150
    const shadow = packShadow(0, 0, lv.nonresidentAge, false);
    lv.nonresidentAge += 150;
    expect(workingsetTestRecent(k, shadow, true)).toBe(true);
    lv.nonresidentAge += 1;
    expect(workingsetTestRecent(k, shadow, true)).toBe(false);
    // An anon refault weighs active file + inactive file + active anon: 150 < 151 too.
    expect(workingsetTestRecent(k, shadow, false)).toBe(false);
    sized(k, [0, 0, 0, 0]);
  });

  it('does not activate a refault evicted by a group that is gone (its id names no group)', () => {
    const k = setup(true);
    expect(workingsetTestRecent(k, packShadow(777, 0, 0, false), true)).toBe(false);
  });
});

/** Reclaim meets each unmapped swap cache folio again: shrink_folio_list frees it, leaving its shadow. */
function evictSwapCache(k: Kernel): void {
  for (const pfn of [...k.swap.cache.values()]) {
    expect(folioIsolateLru(k, pfn)).toBe(true);
    expect(shrinkFolio(k, pfn)).toBe('freed');
  }
  expect(k.swap.cache.size).toBe(0);
}

describe('refaults through swap (workingset_eviction, workingset_refault)', () => {
  it('MADV_PAGEOUT leaves shadows; swapping back in counts refaults, activates recent ones and restores workingset pages', () => {
    const k = setup(true);
    const p = k.createProcess('t');
    const n = 64;
    const a = k.mmap(p, 0, n * PAGE_SIZE, RW, ANON);
    for (let i = 0; i < n; i++) k.access(p.mainThread, a + i * PAGE_SIZE, 1, PAGE_SIZE, true, 1 + i);
    // Mark them workingset, as pages that were active once are (shrink_active_list sets PG_workingset).
    for (let i = 0; i < n; i++) {
      const pfn = followPage(p.mm, a + i * PAGE_SIZE);
      k.mem.addFlags(pfn, PG.workingset);
    }
    // Another 128 pages on the active anon list: the anon workingset the refault distances are weighed against.
    const b = k.mmap(p, 0, 128 * PAGE_SIZE, RW, ANON);
    for (let i = 0; i < 128; i++) {
      k.access(p.mainThread, b + i * PAGE_SIZE, 1, PAGE_SIZE, true, 3);
      folioActivate(k, followPage(p.mm, b + i * PAGE_SIZE));
    }
    const age0 = k.nodeLruvec[0]!.nonresidentAge;
    expect(k.madvise(p, a, n * PAGE_SIZE, MADV.MADV_PAGEOUT)).toBe(0);
    // A swap file's writes are asynchronous: the pages wait in the swap cache; reclaim meeting them again evicts them.
    evictSwapCache(k);
    expect(k.nodeLruvec[0]!.nonresidentAge - age0).toBe(n);
    const cost0 = k.nodeLruvec[0]!.anonCost;
    const before = { ...k.vmstat.events };
    // Reading them back: every page refaults; its distance (at most the n evictions and the activations since)
    // is within the workingset (the 128 active anon pages, and the refaults activated before it): all activate.
    const bytes: number[] = [];
    k.access(p.mainThread, a, n * PAGE_SIZE, PAGE_SIZE, false, 0, (_va, x) => bytes.push(x));
    expect(bytes).toEqual(Array.from({ length: n }, (_, i) => 1 + i));
    const d = (key: keyof typeof before): number => k.vmstat.events[key] - before[key];
    expect(d('workingset_refault_anon')).toBe(n);
    expect(d('workingset_activate_anon')).toBe(n);
    for (let i = 0; i < n; i++) expect(k.mem.flags(followPage(p.mm, a + i * PAGE_SIZE)) & PG.active).toBeTruthy();
    // Every one had been workingset: restored, and its refault noted as anon reclaim cost.
    expect(d('workingset_restore_anon')).toBe(n);
    expect(k.nodeLruvec[0]!.workingsetActivate[0]).toBe(n);
    expect(k.nodeLruvec[0]!.anonCost).toBeGreaterThan(cost0);
    expect(d('workingset_refault_file')).toBe(0);
    expect(verifyKernel(k)).toEqual([]);
  });

  it('a refault that is not recent stays inactive and is not counted as activated', () => {
    const k = setup(true);
    const p = k.createProcess('t');
    const a = k.mmap(p, 0, PAGE_SIZE, RW, ANON);
    k.access(p.mainThread, a, 1, PAGE_SIZE, true, 9);
    k.madvise(p, a, PAGE_SIZE, MADV.MADV_PAGEOUT);
    evictSwapCache(k);
    k.nodeLruvec[0]!.nonresidentAge += 10_000; // many evictions since, nothing active
    const before = { ...k.vmstat.events };
    k.access(p.mainThread, a, 1, PAGE_SIZE, false, 0, (_va, b) => expect(b).toBe(9));
    expect(k.vmstat.events.workingset_refault_anon - before.workingset_refault_anon).toBe(1);
    expect(k.vmstat.events.workingset_activate_anon - before.workingset_activate_anon).toBe(0);
    expect(k.mem.flags(followPage(p.mm, a)) & PG.active).toBe(0);
  });
});
