import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { verifyKernel } from './debug_vm.ts';
import type { Kernel } from './kernel.ts';
import { PAGE_SIZE, PMD_SIZE, PUD_SIZE } from './uapi.ts';
import { uffdioUnregister } from './userfaultfd.ts';
import * as hostMemory from './memory.ts';
import { followPage } from './memory.ts';
import { PageTable, PteTable } from './mm_types.ts';
import { DEVMEM_REMAP, devmemAliasCopy } from './hugetlb_devmem.ts';
import { destination, fillHugePage, srcByte, vcpuFaults } from '../agents/uffd_hugetlb_dest.ts';

const GiB = PUD_SIZE;
const TOUCHED = [0x1234000, 0x3fff000, 0x2000, 0x20000000, 0x3ffff000, 0x1234000];
const c = (k: Kernel, n: Parameters<Kernel['costs']['ns']>[0]): number => k.costs.ns(n);

describe('hugetlb-devmem-remap: postcopy into a 4K /dev/mem alias of a 1G page', () => {
  it('is off by default, and CONFIG_STRICT_DEVMEM is on by default', () => {
    const { k } = destination(null);
    expect(k.sysfs.read(`/sys/kernel/memtwin/features/${DEVMEM_REMAP}`)).toBe('0');
    expect(k.sysfs.read('/sys/kernel/memtwin/config/CONFIG_STRICT_DEVMEM')).toBe('1');
    expect(k.sysfs.write('/sys/kernel/memtwin/config/CONFIG_STRICT_DEVMEM', '2')).toBe(-22);
    // Without the feature, no userfaultfd on a /dev/mem mapping: the alias copy is EINVAL.
    const d = destination(null);
    expect(devmemAliasCopy(d.k, d.p.mm, d.p.mainThread, d.a, PAGE_SIZE, 1)).toBe(-22);
  });

  it('resolves each fault at 4K through the alias, and remaps the page at 1G when its last 4K piece arrives, content intact', () => {
    const d = destination(DEVMEM_REMAP);
    const { k, p, a, fd } = d;
    const mm = p.mm;
    const free0 = k.hugetlb.byShift(30)!.free;
    // 1. The vCPU's faults: one per distinct 4K page, reported at its exact address (UFFD_FEATURE_EXACT_ADDRESS).
    const ctx = k.uffd.ctxs.get(fd)!;
    expect(k.access(d.vcpu, a + 0x1234567, 1, PAGE_SIZE, false, 0).blocked).not.toBeUndefined();
    expect(ctx.pending[0]!.address).toBe(a + 0x1234567);
    ctx.pending.length = 0;
    k.uffd.wake(ctx, a, GiB);
    const { faults, latency } = vcpuFaults(d, TOUCHED);
    expect(faults).toBe(5);
    // The first pays for the page (allocated, zeroed), its PFN from pagemap, the /dev/mem mmap and the alias's registration.
    const open = c(k, 'fault_hugetlb_1g_write') + c(k, 'pagemap_read_per_page') + c(k, 'mmap_munmap_pair') + c(k, 'syscall_null');
    expect(latency[0]).toBeCloseTo(open + c(k, 'uffdio_copy_4k'), -1);
    for (const l of latency.slice(1)) expect(l).toBeCloseTo(c(k, 'uffdio_copy_4k'), -1);
    expect(k.devmem.stats).toMatchObject({ aliases: 1, remaps: 0 });
    expect(k.devmem.openAliases).toBe(1);
    expect(k.hugetlb.byShift(30)!.free).toBe(free0 - 1);
    // 2. While aliased: the guest translates through 4K PTEs (TLB reach 4K), one PTE table per 2M part touched.
    const part = mm.hgm.get(a)!;
    expect(followPage(mm, a + 0x2000)).toBe(part.pfn + 2);
    expect(hostMemory.translate(mm, a + 0x2000)).toBe(part.pfn + 2);
    expect(hostMemory.translatedSize).toBe(PAGE_SIZE);
    expect(followPage(mm, a + 0x1000)).toBe(-2);
    expect(mm.pgtablesBytes).toBe(5 * PAGE_SIZE); // 2M parts 0, 9, 31, 256 and 511
    // A piece already there: EEXIST.
    expect(devmemAliasCopy(k, mm, p.mainThread, a + 0x2000, PAGE_SIZE, 1)).toBe(-17);
    expect(verifyKernel(k)).toEqual([]);
    // 3. The rest, 4K at a time, even whole 2M parts (PTEs only: /dev/mem has no PMD leaves), then the remap.
    const t0 = k.clock.now();
    expect(devmemAliasCopy(k, mm, p.mainThread, a + PMD_SIZE, PMD_SIZE, 7)).toBe(PMD_SIZE);
    expect(mm.pgtable.pmds.get(PageTable.pmdKey(a + PMD_SIZE))).toBeInstanceOf(PteTable);
    expect(k.clock.now() - t0).toBeCloseTo(512 * c(k, 'uffdio_copy_4k'), -2);
    for (let off = PMD_SIZE; off < 2 * PMD_SIZE; off += PAGE_SIZE) part.copies[off / PAGE_SIZE] = 1; // the 2M copy above: 7s
    const tables = (): number => mm.pgtablesBytes / PAGE_SIZE;
    let peak = 0;
    const rest = (): void => {
      for (let off = 0; off < GiB; off += PAGE_SIZE) {
        if (part.mapped[off / PAGE_SIZE]) continue;
        peak = Math.max(peak, tables());
        expect(devmemAliasCopy(k, mm, p.mainThread, a + off, PAGE_SIZE, srcByte(off))).toBe(PAGE_SIZE);
      }
    };
    const t1 = k.clock.now();
    rest();
    expect(peak).toBe(512); // the whole 1G alias, 2 MiB of PTE tables, just before the remap
    // The remap: the alias's 512 tables zapped (a 512-entry rewrite and TLB flush each), the page mapped at 1G
    // (within 0.1 ms of 0.6 s: the PTE tables' allocation is charged too).
    const copies = GiB / PAGE_SIZE - 5 - 512;
    expect(k.clock.now() - t1).toBeCloseTo(copies * c(k, 'uffdio_copy_4k') + 512 * c(k, 'thp_split_pmd'), -5);
    expect(mm.hgm.size).toBe(0);
    expect(mm.pgtable.puds.get(PageTable.pudKey(a))?.pfn).toBe(part.pfn);
    expect(hostMemory.translate(mm, a + 0x2000)).toBe(part.pfn + 2);
    expect(hostMemory.translatedSize).toBe(GiB);
    expect(mm.pgtablesBytes).toBe(0);
    expect(k.devmem.stats).toMatchObject({ aliases: 1, remaps: 1, pteTablesFreed: 512 });
    expect(k.devmem.openAliases).toBe(0);
    // 4. No data lost: every 4K page holds what was sent for it, copied once, in the same frames.
    for (let off = 0; off < GiB; off += PAGE_SIZE) {
      const want = off >= PMD_SIZE && off < 2 * PMD_SIZE ? 7 : srcByte(off);
      if ((k.mem.token(part.pfn + off / PAGE_SIZE) & 0xff) !== want) throw new Error(`byte at ${off.toString(16)}`);
    }
    expect(part.copies.every((n) => n === 1)).toBe(true);
    expect(k.hugetlb.byShift(30)!.free).toBe(free0 - 1);
    // The second page was never touched: still missing, whole.
    expect(followPage(mm, a + GiB)).toBe(-2);
    expect(verifyKernel(k)).toEqual([]);
  });

  it('fillHugePage after the vCPU faults: the page ends as one 1G mapping (the comparison table uses this)', () => {
    const d = destination(DEVMEM_REMAP);
    vcpuFaults(d, TOUCHED);
    fillHugePage(d, d.a);
    expect(d.p.mm.pgtable.puds.has(PageTable.pudKey(d.a))).toBe(true);
    expect(d.k.devmem.stats.remaps).toBe(1);
    expect(verifyKernel(d.k)).toEqual([]);
  });

  it('CONFIG_STRICT_DEVMEM: mapping guest RAM through /dev/mem is refused with EPERM; nothing is allocated', () => {
    const d = destination(DEVMEM_REMAP, GiB, 2, undefined, true);
    const { k, p, a } = d;
    const free0 = k.hugetlb.byShift(30)!.free;
    expect(devmemAliasCopy(k, p.mm, p.mainThread, a, PAGE_SIZE, 1)).toBe(-1);
    expect(k.devmem.stats).toMatchObject({ aliases: 0, refused: 1 });
    expect(p.mm.hgm.size).toBe(0);
    expect(k.hugetlb.byShift(30)!.free).toBe(free0);
    // Turned off (a kernel built without it), the same copy goes through.
    expect(k.sysfs.write('/sys/kernel/memtwin/config/CONFIG_STRICT_DEVMEM', '0')).toBe(0);
    expect(devmemAliasCopy(k, p.mm, p.mainThread, a, PAGE_SIZE, 1)).toBe(PAGE_SIZE);
    expect(verifyKernel(k)).toEqual([]);
  });

  it('unregistering or unmapping an aliased page: the remap (rest zero), or the alias and the page go', () => {
    const d = destination(DEVMEM_REMAP);
    const { k, p, a, fd } = d;
    expect(devmemAliasCopy(k, p.mm, p.mainThread, a + 0x5000, PAGE_SIZE, 9)).toBe(PAGE_SIZE);
    expect(devmemAliasCopy(k, p.mm, p.mainThread, a + GiB + 0x5000, PAGE_SIZE, 9)).toBe(PAGE_SIZE);
    expect(uffdioUnregister(k, fd, a, GiB)).toBe(0);
    const pfn = followPage(p.mm, a);
    expect(p.mm.pgtable.puds.has(PageTable.pudKey(a))).toBe(true);
    expect(k.mem.token(pfn + 5) & 0xff).toBe(9);
    expect(k.mem.token(pfn + 4) & 0xff).toBe(0);
    expect(k.devmem.openAliases).toBe(1);
    const free = k.hugetlb.byShift(30)!.free;
    expect(k.munmap(p, a + GiB, GiB)).toBe(0);
    expect(k.hugetlb.byShift(30)!.free).toBe(free + 1);
    expect(k.devmem.openAliases).toBe(0);
    expect(verifyKernel(k)).toEqual([]);
  });
});

describe('property: hugetlb-devmem-remap over random fault orders (2M pages)', () => {
  it('every piece is copied once into its own frame, no frame is owned twice, pages are conserved, complete pages end huge', () => {
    const PAGES = 3;
    const N = (PAGES * PMD_SIZE) / PAGE_SIZE;
    fc.assert(
      fc.property(
        // A random order of the 4K pieces (the faults' and the background stream's), and how far along it the run stops.
        fc.array(fc.nat(N - 1), { minLength: 1, maxLength: 400 }),
        fc.boolean(),
        (order, complete) => {
          const d = destination(DEVMEM_REMAP, PMD_SIZE, PAGES);
          const { k, p, a, fd } = d;
          const mm = p.mm;
          const ctx = k.uffd.ctxs.get(fd)!;
          const free0 = k.hugetlb.byShift(21)!.free;
          const sent = new Uint8Array(N);
          const pieces = complete ? [...order, ...Array.from({ length: N }, (_, i) => i)] : order;
          for (const page of pieces) {
            const va = a + page * PAGE_SIZE;
            // The vCPU touches it first: it blocks exactly when the piece is not there yet.
            const r = k.access(d.vcpu, va, 1, PAGE_SIZE, false, 0, (_va, byte) => expect(byte).toBe(sent[page]));
            expect(r.blocked !== undefined).toBe(sent[page] === 0);
            if (r.blocked === undefined) continue;
            expect(ctx.pending.shift()!.address).toBe(va);
            expect(devmemAliasCopy(k, mm, p.mainThread, va, PAGE_SIZE, srcByte(page * PAGE_SIZE))).toBe(PAGE_SIZE);
            sent[page] = srcByte(page * PAGE_SIZE);
            k.uffd.wake(ctx, va, PAGE_SIZE);
          }
          const err = verifyKernel(k);
          if (err.length) throw new Error(err.join('\n'));
          // Pages conserved: the pool lost one huge page per page with an alias or a remap, no more.
          let used = 0;
          for (let hp = 0; hp < PAGES; hp++) {
            const haddr = a + hp * PMD_SIZE;
            const mine = sent.subarray(hp * 512, hp * 512 + 512);
            if (mine.some((x) => x !== 0)) used++;
            if (mine.every((x) => x !== 0)) {
              expect(mm.hgm.has(haddr)).toBe(false);
              expect(mm.pgtable.pmds.get(PageTable.pmdKey(haddr))?.constructor.name).toBe('HugeLeaf');
            } else if (mine.some((x) => x !== 0)) expect(mm.hgm.get(haddr)!.nMapped).toBe(mine.filter((x) => x !== 0).length);
            for (let j = 0; j < 512; j++) {
              const pfn = followPage(mm, haddr + j * PAGE_SIZE);
              if (pfn >= 0) expect(k.mem.token(pfn) & 0xff).toBe(mine[j]);
              else expect(mine[j]).toBe(0);
            }
          }
          expect(k.hugetlb.byShift(21)!.free).toBe(free0 - used);
          expect(k.devmem.stats.aliases).toBe(used);
          expect(k.devmem.openAliases + k.devmem.stats.remaps).toBe(used);
          if (complete) expect(k.devmem.stats.remaps).toBe(PAGES);
          // Every piece copied at most once.
          for (const f of mm.hgm.values()) expect(f.copies.every((x) => x <= 1)).toBe(true);
        },
      ),
      { numRuns: 40 },
    );
  });
});
