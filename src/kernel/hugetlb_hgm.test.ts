import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { verifyKernel } from './debug_vm.ts';
import type { Kernel } from './kernel.ts';
import { MADV, MADV_SPLIT, PAGE_SIZE, PMD_SIZE, PUD_SIZE, UFFD_API, UFFD_FEATURE, UFFD_FEATURE_PROPOSED as P } from './uapi.ts';
import { uffdioApi, uffdioContinue, uffdioFill, uffdioUnregister } from './userfaultfd.ts';
import { smapsOf } from './procfs.ts';
import { followPage } from './memory.ts';
import { PageTable } from './mm_types.ts';
import type { HgmProposal } from './hugetlb_hgm.ts';
import { aliasWrite as destAliasWrite, destination, srcByte, vcpuFaults, type Destination } from '../agents/uffd_hugetlb_dest.ts';

const GiB = PUD_SIZE;

type Setup = Destination;
const vmm = (proposal: HgmProposal | null, hugeSize = GiB, pages = 2): Setup => destination(proposal, hugeSize, pages);
const aliasWrite = (s: Setup, va: number, len: number): void => destAliasWrite(s, va, len);

/** The vCPU's faults, each resolved by the proposal's 4K placement (checked to succeed). */
function guestFaults(s: Setup, _proposal: HgmProposal | null, offsets: number[]): { faults: number; latency: number[] } {
  const r = vcpuFaults(s, offsets);
  expect(s.k.uffd.ctxs.get(s.fd)!.pending).toEqual([]);
  expect(s.k.uffd.isBlocked(s.vcpu)).toBe(false);
  return r;
}

const TOUCHED = [0x1234000, 0x3fff000, 0x2000, 0x20000000, 0x3ffff000, 0x1234000];

describe('postcopy on 1G hugetlb pages: Linux 6.18 and the three proposals', () => {
  it('Linux 6.18: a 4K UFFDIO_COPY into a 1G page is EINVAL, the proposals bits are not offered, one fault waits for the whole page', () => {
    const s = vmm(null);
    const { k, p, fd, a } = s;
    expect(uffdioFill(k, p.mainThread, fd, a, PAGE_SIZE, 0, 1)).toEqual({ ret: -22, done: -22 });
    const api = uffdioApi(k, p, k.uffd.create(p, 0), UFFD_API, P.UFFD_FEATURE_HUGETLB_SUBPAGE_COPY);
    expect(api.ret).toBe(-22);
    expect(k.madvise(p, a, GiB, MADV_SPLIT)).toBe(-22);
    const { faults, latency } = guestFaults(s, null, TOUCHED);
    expect(faults).toBe(1);
    expect(latency[0]).toBeCloseTo(512 * k.costs.ns('uffdio_copy_2m_hugetlb'), -1);
    const ctx = k.uffd.ctxs.get(fd)!;
    expect(ctx.features).toBe(UFFD_FEATURE.UFFD_FEATURE_MISSING_HUGETLBFS);
    expect(verifyKernel(k)).toEqual([]);
  });

  for (const proposal of ['uffd-hugetlb-subpage-copy', 'uffd-hugetlb-vma-split', 'hugetlb-hgm'] as const) {
    it(`${proposal}: 4K faults from another thread fill a 1G page that ends as one 1G mapping with the right content`, () => {
      const s = vmm(proposal);
      const { k, p, a, fd } = s;
      const mm = p.mm;
      const poolFree = (): number => k.hugetlb.byShift(30)!.free;
      const free0 = poolFree();
      // 1. The guest's faults: one per distinct 4K page touched, each reported at its 4K address.
      const { faults, latency } = guestFaults(s, proposal, TOUCHED);
      expect(faults).toBe(5);
      expect(poolFree()).toBe(free0 - (proposal === 'hugetlb-hgm' ? 0 : 1)); // allocated once (HGM: at setup)
      const part = mm.hgm.get(a)!;
      expect(part.nMapped).toBe(5);
      // The first fault pays for the huge page (allocated and zeroed whole) and, with a VMA split, the split.
      const c = (n: Parameters<Kernel['costs']['ns']>[0]): number => k.costs.ns(n);
      const per4k = proposal === 'hugetlb-hgm' ? c('memcpy_4k') + c('fault_anon_4k_read_zeropage') : c('uffdio_copy_4k');
      const split = proposal === 'uffd-hugetlb-vma-split' ? c('mprotect_split') : 0;
      expect(latency[0]).toBeCloseTo((proposal === 'hugetlb-hgm' ? 0 : c('fault_hugetlb_1g_write')) + per4k + split, -1);
      for (const l of latency.slice(1)) expect(l).toBeCloseTo(per4k, -1);
      // 2. While partly mapped: 4K translations, smaps counts what is mapped, the split is visible.
      expect(followPage(mm, a + 0x1000)).toBe(-2);
      expect(followPage(mm, a + 0x2000)).toBe(part.pfn + 2);
      const sm = smapsOf(k, mm, mm.vmaAt(a)!);
      expect(sm.Private_Hugetlb).toBe(20); // mapped by one mm: private, even for a MAP_SHARED page
      expect(sm.KernelPageSize).toBe(proposal === 'uffd-hugetlb-vma-split' ? 4 : 1024 * 1024);
      expect(mm.vmas.length).toBe(proposal === 'uffd-hugetlb-vma-split' ? 2 : 1);
      // A second resolution of a resolved page: EEXIST.
      if (proposal === 'hugetlb-hgm') expect(uffdioContinue(k, p.mainThread, fd, a + 0x2000, PAGE_SIZE, 0).ret).toBe(-17);
      else expect(uffdioFill(k, p.mainThread, fd, a + 0x2000, PAGE_SIZE, 0, 1).ret).toBe(-17);
      expect(verifyKernel(k)).toEqual([]);
      // 3. The background stream: every other 4K page of the 1G page, at 4K granularity.
      for (let off = 0; off < GiB; off += PAGE_SIZE) {
        if (part.mapped[off / PAGE_SIZE]) continue;
        if (proposal === 'hugetlb-hgm') {
          aliasWrite(s, a + off, PAGE_SIZE);
          expect(uffdioContinue(k, p.mainThread, fd, a + off, PAGE_SIZE, 0).ret).toBe(0);
        } else expect(uffdioFill(k, p.mainThread, fd, a + off, PAGE_SIZE, 0, srcByte(off)).ret).toBe(0);
      }
      // hugetlb-hgm restores the huge mapping only when asked; the copy proposals by themselves.
      if (proposal === 'hugetlb-hgm') {
        expect(mm.hgm.size).toBe(1);
        expect(k.madvise(p, a, GiB, MADV.MADV_COLLAPSE)).toBe(0);
      }
      // 4. One 1G mapping, the same frames, every 4K page holding what the source sent, copied once.
      expect(mm.hgm.size).toBe(0);
      expect(mm.pgtable.puds.get(PageTable.pudKey(a))?.pfn).toBe(part.pfn);
      expect([...mm.pgtable.pmds.keys()].filter((key) => key * PMD_SIZE >= a && key * PMD_SIZE < a + GiB)).toEqual([]);
      for (let off = 0; off < GiB; off += PAGE_SIZE) {
        if ((k.mem.token(part.pfn + off / PAGE_SIZE) & 0xff) !== srcByte(off)) throw new Error(`byte at ${off.toString(16)}`);
      }
      if (proposal !== 'hugetlb-hgm') expect(part.copies.every((n) => n === 1)).toBe(true);
      expect(mm.pgtablesBytes).toBe(0);
      expect(mm.vmas.length).toBe(1);
      expect(smapsOf(k, mm, mm.vmaAt(a)!).KernelPageSize).toBe(1024 * 1024);
      expect(k.hgm.stats.collapses).toBe(1);
      expect(k.hgm.stats.pteTablesFreed).toBe(512);
      if (proposal === 'uffd-hugetlb-vma-split') expect(k.hgm.stats).toMatchObject({ vmaSplits: 1, vmaMerges: 1 });
      expect(poolFree()).toBe(free0 - (proposal === 'hugetlb-hgm' ? 0 : 1));
      expect(verifyKernel(k)).toEqual([]);
    });
  }

  it('uffd-hugetlb-subpage-copy maps whole aligned 2M parts of a 1G page with PMDs; vma-split maps them with PTEs', () => {
    for (const proposal of ['uffd-hugetlb-subpage-copy', 'uffd-hugetlb-vma-split'] as const) {
      const s = vmm(proposal);
      const { k, p, a, fd } = s;
      const t0 = k.clock.now();
      expect(uffdioFill(k, p.mainThread, fd, a + PMD_SIZE - PAGE_SIZE, PMD_SIZE + PAGE_SIZE, 0, 3).ret).toBe(0);
      const pmd = p.mm.pgtable.pmds.get(PageTable.pmdKey(a + PMD_SIZE))!;
      expect(pmd.constructor.name).toBe(proposal === 'uffd-hugetlb-subpage-copy' ? 'HugeLeaf' : 'PteTable');
      const c = (n: Parameters<Kernel['costs']['ns']>[0]): number => k.costs.ns(n);
      const copy = proposal === 'uffd-hugetlb-subpage-copy' ? c('uffdio_copy_4k') + c('uffdio_copy_2m_hugetlb') : 513 * c('uffdio_copy_4k');
      expect(k.clock.now() - t0).toBeCloseTo(
        c('fault_hugetlb_1g_write') + copy + (proposal === 'uffd-hugetlb-vma-split' ? c('mprotect_split') : 0),
        -1,
      );
      expect(verifyKernel(k)).toEqual([]);
    }
  });

  it('unregistering a page mapped in parts restores its huge mapping, the rest zero; munmap of one frees the page', () => {
    const s = vmm('uffd-hugetlb-subpage-copy');
    const { k, p, a, fd } = s;
    expect(uffdioFill(k, p.mainThread, fd, a + GiB + 0x5000, PAGE_SIZE, 0, 9).ret).toBe(0);
    expect(uffdioFill(k, p.mainThread, fd, a + 0x5000, PAGE_SIZE, 0, 9).ret).toBe(0);
    expect(uffdioUnregister(k, fd, a, GiB)).toBe(0);
    const pfn = followPage(p.mm, a);
    expect(p.mm.pgtable.puds.has(PageTable.pudKey(a))).toBe(true);
    expect(k.mem.token(pfn + 5) & 0xff).toBe(9);
    expect(k.mem.token(pfn + 4) & 0xff).toBe(0);
    // The second page is still mapped in parts; unmapping it returns it to the pool.
    expect(p.mm.hgm.size).toBe(1);
    const free = k.hugetlb.byShift(30)!.free;
    expect(k.munmap(p, a + GiB, GiB)).toBe(0);
    expect(k.hugetlb.byShift(30)!.free).toBe(free + 1);
    expect(p.mm.hgm.size).toBe(0);
    expect(verifyKernel(k)).toEqual([]);
  });

  it('a whole-page UFFDIO_COPY onto a 2M page already mapped in parts copies up to the first mapped part (EAGAIN), or is EEXIST at it', () => {
    for (const proposal of ['uffd-hugetlb-subpage-copy', 'uffd-hugetlb-vma-split'] as const) {
      const s = vmm(proposal, PMD_SIZE, 3);
      const { k, p, a, fd } = s;
      const free = k.hugetlb.byShift(21)!.free;
      expect(uffdioFill(k, p.mainThread, fd, a + PMD_SIZE + PAGE_SIZE, PAGE_SIZE, 0, 1)).toEqual({ ret: 0, done: PAGE_SIZE });
      // The aligned 2M copy takes the page's first 4K and stops at the second, copied before: no second huge page.
      expect(uffdioFill(k, p.mainThread, fd, a + PMD_SIZE, PMD_SIZE, 0, 2)).toEqual({ ret: -11, done: PAGE_SIZE });
      expect(uffdioFill(k, p.mainThread, fd, a + PMD_SIZE, PMD_SIZE, 0, 3)).toEqual({ ret: -17, done: -17 });
      expect(k.hugetlb.byShift(21)!.free).toBe(free - 1);
      const pfn = followPage(p.mm, a + PMD_SIZE);
      expect(k.mem.token(pfn) & 0xff).toBe(2);
      expect(k.mem.token(followPage(p.mm, a + PMD_SIZE + PAGE_SIZE)) & 0xff).toBe(1);
      expect(verifyKernel(k)).toEqual([]);
    }
  });

  it('uffd-hugetlb-vma-split fails with ENOMEM when the split would pass vm.max_map_count', () => {
    const s = vmm('uffd-hugetlb-vma-split');
    const { k, p, a, fd } = s;
    k.sysctl.max_map_count = 1;
    expect(uffdioFill(k, p.mainThread, fd, a, PAGE_SIZE, 0, 1)).toEqual({ ret: -12, done: -12 });
    expect(p.mm.hgm.size).toBe(0);
    expect(verifyKernel(k)).toEqual([]);
  });
});

describe('property: copies into 2M hugetlb pages by parts (uffd-hugetlb-subpage-copy, uffd-hugetlb-vma-split)', () => {
  it('every byte a thread reads was copied exactly once, no huge page is allocated twice, complete pages end huge and unchanged', () => {
    const PAGES = 3;
    const N = (PAGES * PMD_SIZE) / PAGE_SIZE;
    const op = fc.oneof(
      fc.tuple(fc.constant('copy' as const), fc.nat(N - 1), fc.integer({ min: 1, max: 700 }), fc.integer({ min: 1, max: 255 })),
      fc.tuple(fc.constant('touch' as const), fc.nat(N - 1), fc.constant(1), fc.constant(0)),
    );
    fc.assert(
      fc.property(
        fc.constantFrom<HgmProposal>('uffd-hugetlb-subpage-copy', 'uffd-hugetlb-vma-split'),
        fc.array(op, { maxLength: 40 }),
        fc.boolean(),
        (proposal, ops, finish) => {
          const s = vmm(proposal, PMD_SIZE, PAGES);
          const { k, p, a, fd, vcpu: guest } = s;
          const mm = p.mm;
          const ctx = k.uffd.ctxs.get(fd)!;
          const sent = new Uint8Array(N); // the byte copied into each 4K page (0: never copied)
          const allocated = new Set<number>();
          for (const [kind, page, n, fill] of ops) {
            const va = a + page * PAGE_SIZE;
            if (kind === 'touch') {
              const r = k.access(guest, va, 1, PAGE_SIZE, false, 0, (_va, byte) => expect(byte).toBe(sent[page]));
              if (r.blocked !== undefined) {
                expect(sent[page]).toBe(0);
                expect(ctx.pending.shift()!.address).toBe(va);
                k.uffd.wake(ctx, va, PAGE_SIZE);
              } else expect(sent[page]).not.toBe(0);
              continue;
            }
            const len = Math.min(n, N - page) * PAGE_SIZE;
            // Under uffd-hugetlb-vma-split a range that crosses a split VMA's edge is not in one VMA: ENOENT, nothing copied.
            const crosses = va + len > mm.vmaAt(va)!.end;
            const r = uffdioFill(k, p.mainThread, fd, va, len, 0, fill);
            if (crosses) {
              expect(proposal).toBe('uffd-hugetlb-vma-split');
              expect(r).toEqual({ ret: -2, done: -2 });
              continue;
            }
            // The copy goes as far as the first page already copied, and no further.
            let expectDone = 0;
            while (expectDone < len && !sent[page + expectDone / PAGE_SIZE]) expectDone += PAGE_SIZE;
            expect(r).toEqual(
              expectDone === len ? { ret: 0, done: len } : expectDone ? { ret: -11, done: expectDone } : { ret: -17, done: -17 },
            );
            for (let off = 0; off < expectDone; off += PAGE_SIZE) {
              sent[page + off / PAGE_SIZE] = fill;
              const pfn = followPage(mm, va + off);
              allocated.add(pfn - (pfn % 512));
            }
            const err = verifyKernel(k);
            if (err.length) throw new Error(err.join('\n'));
          }
          // No huge page allocated twice: the pool lost exactly the pages copies went to.
          expect(k.hugetlb.byShift(21)!.free).toBe(PAGES - allocated.size);
          if (finish) expect(uffdioUnregister(k, fd, a, PAGES * PMD_SIZE)).toBe(0);
          for (let hp = 0; hp < PAGES; hp++) {
            const haddr = a + hp * PMD_SIZE;
            const mine = sent.subarray(hp * 512, hp * 512 + 512);
            const complete = mine.every((c) => c !== 0);
            if (complete || (finish && mine.some((c) => c !== 0))) {
              expect(mm.hgm.get(haddr)).toBeUndefined();
              expect(mm.pgtable.pmds.get(PageTable.pmdKey(haddr))?.constructor.name).toBe('HugeLeaf');
            }
            // Content unchanged by the collapse: every copied page holds what was sent, the rest (when mapped) zero.
            for (let j = 0; j < 512; j++) {
              const pfn = followPage(mm, haddr + j * PAGE_SIZE);
              if (pfn >= 0) expect(k.mem.token(pfn) & 0xff).toBe(mine[j]);
              else expect(mine[j]).toBe(0);
            }
          }
          // The VMAs still tile the mapping; a split VMA is exactly one huge page still mapped in parts.
          const vmas = mm.vmasIn(a, a + PAGES * PMD_SIZE);
          expect(vmas[0]!.start).toBe(a);
          for (let i = 1; i < vmas.length; i++) expect(vmas[i]!.start).toBe(vmas[i - 1]!.end);
          expect(vmas.at(-1)!.end).toBe(a + PAGES * PMD_SIZE);
          for (const v of vmas) if (v.hgm === 'split') expect(v.size === PMD_SIZE && mm.hgm.has(v.start)).toBe(true);
          if (proposal === 'uffd-hugetlb-vma-split') for (const f of mm.hgm.values()) expect(mm.vmaAt(f.haddr)!.hgm).toBe('split');
          const err = verifyKernel(k);
          if (err.length) throw new Error(err.join('\n'));
        },
      ),
      { numRuns: 60 },
    );
  });
});

describe('property: hugetlb-hgm on 2M pages (MADV_SPLIT, 4K UFFDIO_CONTINUE, MADV_COLLAPSE)', () => {
  it('a thread reads only what the VMM placed, each part is mapped once, collapse keeps the page and its content', () => {
    const PAGES = 3;
    const N = (PAGES * PMD_SIZE) / PAGE_SIZE;
    const op = fc.oneof(
      fc.tuple(fc.constant('place' as const), fc.nat(N - 1), fc.integer({ min: 1, max: 600 })),
      fc.tuple(fc.constant('touch' as const), fc.nat(N - 1), fc.constant(1)),
      fc.tuple(fc.constant('collapse' as const), fc.nat(PAGES - 1), fc.constant(1)),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 30 }), (ops) => {
        const s = vmm('hugetlb-hgm', PMD_SIZE, PAGES);
        const { k, p, a, fd, vcpu } = s;
        const mm = p.mm;
        const ctx = k.uffd.ctxs.get(fd)!;
        const file = mm.vmaAt(a)!.file!;
        const frames = [...file.pages.values()].sort((x, y) => x - y);
        const written = new Uint8Array(N); // the VMM wrote the page through its alias
        const mapped = new Uint8Array(N); // a CONTINUE mapped it (or a collapse did)
        for (const [kind, at, n] of ops) {
          if (kind === 'collapse') {
            expect(k.madvise(p, a + at * PMD_SIZE, PMD_SIZE, MADV.MADV_COLLAPSE)).toBe(0);
            if (mapped.subarray(at * 512, at * 512 + 512).some((x) => x)) mapped.fill(1, at * 512, at * 512 + 512);
          } else if (kind === 'touch') {
            const r = k.access(vcpu, a + at * PAGE_SIZE, 1, PAGE_SIZE, false, 0, (_va, byte) =>
              expect(byte).toBe(written[at] ? srcByte(at * PAGE_SIZE) : 0),
            );
            expect(r.blocked !== undefined).toBe(!mapped[at]);
            if (r.blocked !== undefined) {
              expect(ctx.pending.shift()).toMatchObject({ address: a + at * PAGE_SIZE, flags: ['UFFD_PAGEFAULT_FLAG_MINOR'] });
              k.uffd.wake(ctx, a + at * PAGE_SIZE, PAGE_SIZE);
            }
          } else {
            const len = Math.min(n, N - at) * PAGE_SIZE;
            aliasWrite(s, a + at * PAGE_SIZE, len);
            written.fill(1, at, at + len / PAGE_SIZE);
            const r = uffdioContinue(k, p.mainThread, fd, a + at * PAGE_SIZE, len, 0);
            let expectDone = 0;
            while (expectDone < len && !mapped[at + expectDone / PAGE_SIZE]) expectDone += PAGE_SIZE;
            expect(r).toEqual(
              expectDone === len ? { ret: 0, done: len } : expectDone ? { ret: -11, done: expectDone } : { ret: -17, done: -17 },
            );
            mapped.fill(1, at, at + expectDone / PAGE_SIZE);
          }
          const err = verifyKernel(k);
          if (err.length) throw new Error(err.join('\n'));
        }
        // The file's pages never changed (fallocated once); a mapped part maps the file's own frame.
        expect([...file.pages.values()].sort((x, y) => x - y)).toEqual(frames);
        for (let pg = 0; pg < N; pg++) {
          const pfn = followPage(mm, a + pg * PAGE_SIZE);
          if (mapped[pg]) expect(pfn).toBe(file.pages.get(Math.floor(pg / 512))! + (pg % 512));
          else expect(pfn).toBe(-2);
        }
      }),
      { numRuns: 60 },
    );
  });
});
