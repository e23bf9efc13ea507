/**
 * Property tests over random syscall sequences: whatever the sequence,
 * the kernel stays consistent (verifyKernel: pages conserved, no frame
 * owned twice, mapcounts match page tables), the VMAs cover exactly what
 * was mapped, and every page holds what was last written to it (MADV_COLLAPSE
 * and khugepaged passes are among the steps; khugepaged.test.ts tests collapse
 * on purpose-built regions).
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { smallKernel, RW, ANON } from '../testing/fixtures.ts';
import { verifyKernel } from './debug_vm.ts';
import { followPage } from './memory.ts';
import { MADV, MAP, PAGE_SIZE, PROT } from './uapi.ts';

const BASE = 0x7e0000000000;
const ARENA_PAGES = 4096; // 16 MiB: eight PMDs, so THPs, splits and merges all happen

type Step =
  | { k: 'mmap'; page: number; pages: number; prot: number }
  | { k: 'munmap'; page: number; pages: number }
  | { k: 'mprotect'; page: number; pages: number; prot: number }
  | { k: 'madvise'; page: number; pages: number; advice: number }
  | { k: 'touch'; page: number; pages: number; write: boolean; fill: number; thread: number }
  | { k: 'khugepaged'; page: number; pages: number; maxPtesNone: number };

const range = { page: fc.integer({ min: 0, max: ARENA_PAGES - 1 }), pages: fc.integer({ min: 1, max: 1024 }) };
const prot = fc.constantFrom(PROT.PROT_NONE, PROT.PROT_READ, RW);
const step: fc.Arbitrary<Step> = fc.oneof(
  fc.record({ k: fc.constant('mmap' as const), ...range, prot }),
  fc.record({ k: fc.constant('munmap' as const), ...range }),
  fc.record({ k: fc.constant('mprotect' as const), ...range, prot }),
  fc.record({
    k: fc.constant('madvise' as const),
    ...range,
    advice: fc.constantFrom(
      MADV.MADV_DONTNEED,
      MADV.MADV_FREE,
      MADV.MADV_HUGEPAGE,
      MADV.MADV_NOHUGEPAGE,
      MADV.MADV_POPULATE_WRITE,
      MADV.MADV_POPULATE_READ,
      MADV.MADV_COLLAPSE,
    ),
  }),
  fc.record({
    k: fc.constant('khugepaged' as const),
    page: fc.constant(0),
    pages: fc.constant(0),
    maxPtesNone: fc.constantFrom(0, 64, 511),
  }),
  fc.record({
    k: fc.constant('touch' as const),
    ...range,
    write: fc.boolean(),
    fill: fc.integer({ min: 1, max: 255 }),
    thread: fc.integer({ min: 0, max: 1 }),
  }),
);

/** The reference model: per arena page, its protection (undefined = unmapped) and content byte. */
interface ModelPage {
  prot: number;
  content: number;
}

describe('kernel under random syscall sequences', () => {
  it('stays consistent, covers exactly what was mapped, and loses no data', () => {
    fc.assert(
      fc.property(fc.constantFrom('always', 'madvise', 'never'), fc.array(step, { minLength: 1, maxLength: 40 }), (thp, steps) => {
        const k = smallKernel({ nodes: 2, mib: 64 });
        k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', thp);
        const p = k.createProcess('t');
        const t2 = k.createThread(p, 2);
        if (typeof t2 === 'number') throw new Error('thread');
        const model: (ModelPage | undefined)[] = Array.from({ length: ARENA_PAGES }, () => undefined);
        const clampN = (s: { page: number; pages: number }): number => Math.min(s.pages, ARENA_PAGES - s.page);
        for (const s of steps) {
          const n = clampN(s);
          const addr = BASE + s.page * PAGE_SIZE;
          const len = n * PAGE_SIZE;
          switch (s.k) {
            case 'mmap': {
              const r = k.mmap(p, addr, len, s.prot, ANON | MAP.MAP_FIXED);
              expect(r).toBe(addr);
              for (let i = s.page; i < s.page + n; i++) model[i] = { prot: s.prot, content: 0 };
              break;
            }
            case 'munmap':
              expect(k.munmap(p, addr, len)).toBe(0);
              for (let i = s.page; i < s.page + n; i++) model[i] = undefined;
              break;
            case 'mprotect': {
              const r = k.mprotect(p, addr, len, s.prot);
              let i = s.page;
              if (model[i] === undefined) expect(r).toBe(-12);
              else {
                for (; i < s.page + n && model[i]; i++) model[i]!.prot = s.prot;
                expect(r).toBe(i < s.page + n ? -12 : 0);
              }
              break;
            }
            case 'madvise': {
              const r = k.madvise(p, addr, len, s.advice);
              if (s.advice === MADV.MADV_DONTNEED) for (let i = s.page; i < s.page + n; i++) if (model[i]) model[i]!.content = 0;
              const allMapped = model.slice(s.page, s.page + n).every(Boolean);
              if (s.advice === MADV.MADV_POPULATE_WRITE || s.advice === MADV.MADV_POPULATE_READ || s.advice === MADV.MADV_COLLAPSE)
                expect(r <= 0).toBe(true);
              else expect(r).toBe(allMapped ? 0 : -12);
              break;
            }
            case 'khugepaged':
              // Two full scans by khugepaged, which may collapse any eligible region.
              k.sysfs.write('/sys/kernel/mm/transparent_hugepage/khugepaged/max_ptes_none', String(s.maxPtesNone));
              k.sysfs.write('/sys/kernel/mm/transparent_hugepage/khugepaged/scan_sleep_millisecs', '10');
              k.khugepaged.waitFullScans(2, 10e9);
              break;
            case 'touch': {
              const thread = s.thread ? t2 : p.mainThread;
              const res = k.access(thread, addr, len, PAGE_SIZE, s.write, s.fill);
              let i = s.page;
              for (; i < s.page + n; i++) {
                const mp = model[i];
                const ok = mp && (s.write ? mp.prot & PROT.PROT_WRITE : mp.prot !== PROT.PROT_NONE);
                if (!ok) break;
                if (s.write) mp.content = s.fill;
              }
              if (i < s.page + n) {
                expect(res.signal).toBe('SIGSEGV');
                expect(res.at).toBe(BASE + i * PAGE_SIZE);
              } else expect(res.signal).toBeUndefined();
              break;
            }
          }
          expect(verifyKernel(k)).toEqual([]);
          // VMAs cover exactly the mapped pages, with the modelled protection.
          const wrong: number[] = [];
          for (let i = 0; i < ARENA_PAGES; i++) if (Boolean(p.mm.vmaAt(BASE + i * PAGE_SIZE)) !== Boolean(model[i])) wrong.push(i);
          expect(wrong).toEqual([]);
        }
        // Every readable page holds its last written byte (never-written pages read zero).
        const lost: string[] = [];
        for (let i = 0; i < ARENA_PAGES; i++) {
          const mp = model[i];
          if (!mp || mp.prot === PROT.PROT_NONE) continue;
          let got = -1;
          k.access(p.mainThread, BASE + i * PAGE_SIZE, 1, PAGE_SIZE, false, 0, (_va, b) => (got = b));
          if (got !== mp.content) lost.push(`page ${i}: read ${got}, wrote ${mp.content}`);
        }
        expect(lost).toEqual([]);
        // Unmapping everything returns every page to the free lists.
        k.munmap(p, BASE, ARENA_PAGES * PAGE_SIZE);
        expect(verifyKernel(k)).toEqual([]);
        expect(k.phys.freePages()).toBe(k.phys.totalPages());
      }),
      { numRuns: 300 },
    );
  });

  it('keeps hugetlb counters consistent and never SIGBUSes a reserved page', () => {
    const hstep = fc.oneof(
      fc.record({ k: fc.constant('map' as const), pages: fc.integer({ min: 1, max: 6 }), shared: fc.boolean(), noreserve: fc.boolean() }),
      fc.record({ k: fc.constant('touch' as const), which: fc.nat(), page: fc.nat() }),
      fc.record({ k: fc.constant('dontneed' as const), which: fc.nat(), page: fc.nat() }),
      fc.record({ k: fc.constant('unmap' as const), which: fc.nat() }),
      fc.record({ k: fc.constant('pool' as const), nr: fc.integer({ min: 0, max: 12 }), overcommit: fc.integer({ min: 0, max: 4 }) }),
    );
    fc.assert(
      fc.property(fc.array(hstep, { maxLength: 40 }), (steps) => {
        const k = smallKernel({ nodes: 2, mib: 64 });
        const h = k.hugetlb.bySize(2 << 20)!;
        k.hugetlb.setNrHugepages(h, 8);
        const p = k.createProcess('h');
        // A private mapping's fault consumes its page's reservation, and MADV_DONTNEED does not give it back:
        // that page may SIGBUS later if the pool shrank (Linux 6.18 does; checked with an op-script).
        const maps: { addr: number; pages: number; reserved: boolean; shared: boolean; spent: Set<number> }[] = [];
        for (const s of steps) {
          if (s.k === 'map') {
            const flags =
              (s.shared ? MAP.MAP_SHARED : MAP.MAP_PRIVATE) | MAP.MAP_ANONYMOUS | MAP.MAP_HUGETLB | (s.noreserve ? MAP.MAP_NORESERVE : 0);
            const free0 = h.free - h.resv + (h.overcommit - h.surplus);
            const r = k.mmap(p, 0, s.pages * h.size, RW, flags);
            if (r >= 0) maps.push({ addr: r, pages: s.pages, reserved: !s.noreserve, shared: s.shared, spent: new Set() });
            else expect(s.noreserve || free0 < s.pages).toBe(true);
          } else if (s.k === 'pool') {
            h.overcommit = s.overcommit;
            k.hugetlb.setNrHugepages(h, s.nr);
          } else if (maps.length) {
            const m = maps[s.which % maps.length]!;
            if (s.k === 'unmap') {
              expect(k.munmap(p, m.addr, m.pages * h.size)).toBe(0);
              maps.splice(maps.indexOf(m), 1);
            } else {
              const i = s.page % m.pages;
              const a = m.addr + i * h.size;
              if (s.k === 'touch') {
                const res = k.access(p.mainThread, a, 1, PAGE_SIZE, true, 9);
                if (m.reserved && !m.spent.has(i)) expect(res.signal).toBeUndefined();
              } else {
                if (!m.shared && followPage(p.mm, a) >= 0) m.spent.add(i);
                expect(k.madvise(p, a, h.size, MADV.MADV_DONTNEED)).toBe(0);
              }
            }
          }
          expect(verifyKernel(k)).toEqual([]);
          expect(h.free).toBeGreaterThanOrEqual(h.resv);
        }
        for (const m of maps) k.munmap(p, m.addr, m.pages * h.size);
        expect(h.resv).toBe(0);
        expect(verifyKernel(k)).toEqual([]);
      }),
      {
        numRuns: 300,
        // Found by the property before it knew: a private page faulted, the pool shrunk to 0, zapped, touched again (SIGBUS, as on Linux).
        examples: [
          [
            [
              { k: 'map', pages: 1, shared: false, noreserve: false },
              { k: 'pool', nr: 0, overcommit: 0 },
              { k: 'touch', which: 0, page: 0 },
              { k: 'dontneed', which: 0, page: 0 },
              { k: 'touch', which: 0, page: 0 },
            ],
          ],
        ],
      },
    );
  });
});
