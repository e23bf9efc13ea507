/**
 * The /dev/mem remap for postcopy on hugetlb: an unmerged proposal, a
 * switchable feature, off by default
 * (/sys/kernel/memtwin/features/hugetlb-devmem-remap).
 *
 * The idea weighed against the UFFDIO_COPY extensions of
 * src/kernel/hugetlb_hgm.ts in the 2023 discussion of postcopy at 4K on 1G
 * pages: leave hugetlb alone; the destination VMM maps each huge page that
 * is still incomplete a second time, through /dev/mem, at 4K (a mapping of
 * the page's physical frames, so of the same memory), points the guest's
 * memory slot at that alias, registers it with userfaultfd and resolves
 * faults with 4K UFFDIO_COPYs into it. When the last 4K piece is there,
 * the alias goes and the guest maps the page at its huge size again.
 *
 * What it costs, and what this model charges (all from the cost profile):
 * - opening an alias, at the first fault into a huge page: the huge page
 *   is allocated, zeroed (fault_hugetlb_1g/2m_write, as a hugetlb fault);
 *   its physical address is read from /proc/self/pagemap, one entry
 *   (pagemap_read_per_page; PFNs are visible to CAP_SYS_ADMIN only); the
 *   /dev/mem mmap and, at the remap, its munmap (mmap_munmap_pair); the
 *   alias's UFFDIO_REGISTER (syscall_null, a lower bound);
 * - each piece: one 4K UFFDIO_COPY (uffdio_copy_4k) into the page's own
 *   frame, mapped by a PTE: /dev/mem maps with PTEs only (remap_pfn_range),
 *   so a 2M part is 512 PTEs too, and the guest's TLB reach over the whole
 *   huge page is 4K while the alias is in use (the workload engine charges
 *   it through the mapping size it translates through);
 * - page tables: one PTE table per 2M part touched (512, 2 MiB, for a full
 *   1G alias), counted in the mm's page-table bytes;
 * - the remap: zapping the alias's PTEs and freeing its tables, each table
 *   priced as a 512-entry rewrite with its TLB flush (thp_split_pmd, as the
 *   copy proposals' in-place collapse), then the huge mapping.
 *   Not priced: KVM_SET_USER_MEMORY_REGION to switch the slot (no KVM on
 *   the calibration host), the EPT rebuilt at the huge size afterwards.
 *
 * The precondition: the mmap of /dev/mem over System RAM must be allowed.
 * With CONFIG_STRICT_DEVMEM (y on almost every distribution kernel;
 * /sys/kernel/memtwin/config/CONFIG_STRICT_DEVMEM, 1 by default) mmap_mem's
 * range_is_allowed() asks devmem_is_allowed() for each frame, and x86
 * answers 0 for System RAM above the first MiB: mmap fails with -EPERM.
 * (Without CONFIG_DEVMEM there is no /dev/mem at all, as on this machine's
 * kernel; kernel lockdown refuses the open with -EPERM too.) PAT: /dev/mem
 * maps RAM write-back only when the page's memory type agrees; memtwin
 * models no memory types, so no PAT conflict can arise here.
 *
 * The model keeps the alias at the guest RAM's own addresses (the slot's
 * view): the huge page is mapped in parts by PTEs, as the copy proposals'
 * pages are (HgmFolio), and userfaults there are missing faults. Linux's
 * userfaultfd does not register VM_PFNMAP VMAs (vma_can_userfault): that
 * is the one kernel change the proposal needs, and what the feature switch
 * stands for.
 */
import type { Kernel } from './kernel.ts';
import type { Thread } from './sched.ts';
import type { HgmFolio, MmStruct } from './mm_types.ts';
import { PAGE_SIZE, neg, type SysRet } from './uapi.ts';
import { hgmCollapse, hgmMapRange, hgmSubpageMissing, mappedHuge, newFolio } from './hugetlb_hgm.ts';
import { hugetlbAllocPage } from './memory.ts';

export const DEVMEM_REMAP = 'hugetlb-devmem-remap' as const;

/** The proposal's switch, its precondition, and its counters. */
export class DevmemRemap {
  /** /sys/kernel/memtwin/features/hugetlb-devmem-remap. */
  enabled = 0;
  /** CONFIG_STRICT_DEVMEM (/sys/kernel/memtwin/config/CONFIG_STRICT_DEVMEM). */
  strictDevmem = 1;
  /** Aliases opened, remaps to the huge size, mmaps refused, alias PTE tables freed by remaps. */
  readonly stats = { aliases: 0, remaps: 0, refused: 0, pteTablesFreed: 0 };
  /** Aliases mapped now: each is a VMA of the VMM's (a /dev/mem mapping) beside guest RAM's. */
  openAliases = 0;
  /** The huge pages mapped through an alias. */
  readonly aliased = new WeakSet<HgmFolio>();
}

/** The first pfn devmem_is_allowed() refuses in System RAM: below 1 MiB it lets reads see zeroes instead. */
const DEVMEM_LOW_PFNS = (1 << 20) / PAGE_SIZE;

/**
 * mmap_mem's permission check for [pfn, pfn + n): range_is_allowed() under
 * CONFIG_STRICT_DEVMEM, every frame of memtwin's memory being System RAM.
 * 0, or -EPERM.
 */
export function devmemRangeAllowed(k: Kernel, pfn: number, n: number): SysRet {
  if (!k.devmem.strictDevmem) return 0;
  return pfn + n > DEVMEM_LOW_PFNS ? neg('EPERM') : 0;
}

/**
 * The VMM's probe at postcopy setup: can a huge page of guest RAM be mapped
 * through /dev/mem? (Any RAM frame above the first MiB answers as a guest
 * page would.) 0, or -errno.
 */
export function devmemProbe(k: Kernel): SysRet {
  return devmemRangeAllowed(k, DEVMEM_LOW_PFNS, 1);
}

/**
 * Open the alias of the huge page at haddr: allocate the page (zeroed),
 * read its physical address, mmap /dev/mem over it, register the alias.
 * The folio, or -errno (-EPERM under CONFIG_STRICT_DEVMEM, -ENOMEM when
 * the pool is empty).
 */
export function devmemAliasOpen(k: Kernel, mm: MmStruct, haddr: number, thread: Thread): HgmFolio | number {
  const vma = mm.vmaAt(haddr)!;
  const hs = vma.hugePageSize();
  // The check needs no frame: every huge page is System RAM above the first MiB.
  const allowed = devmemProbe(k);
  if (allowed < 0) {
    k.devmem.stats.refused++;
    return allowed;
  }
  const pfn = hugetlbAllocPage(k, mm, vma, haddr, thread, null);
  if (pfn < 0) return neg('ENOMEM');
  const f = newFolio(k, mm, haddr, hs, pfn);
  k.devmem.aliased.add(f);
  k.devmem.stats.aliases++;
  k.devmem.openAliases++;
  k.charge(k.costs.ns('pagemap_read_per_page') + k.costs.ns('mmap_munmap_pair') + k.costs.ns('syscall_null'));
  return f;
}

/**
 * UFFDIO_COPY of [dst, dst + len) (4K-aligned, inside one huge page) into
 * the alias of a huge page of a registered hugetlb VMA, opening the alias
 * at the first copy; the page is remapped huge when its last piece is in.
 * Bytes copied, or -errno if none were: -EINVAL with the feature off (no
 * userfaultfd on a /dev/mem mapping) or a range not 4K-aligned, -ENOENT
 * outside a registered hugetlb VMA, -EEXIST on a piece already there,
 * -EPERM under CONFIG_STRICT_DEVMEM.
 */
export function devmemAliasCopy(
  k: Kernel,
  mm: MmStruct,
  thread: Thread,
  dst: number,
  len: number,
  fill: number | ((dst: number) => number),
): number {
  if (!k.devmem.enabled || dst % PAGE_SIZE || len % PAGE_SIZE || len <= 0) return neg('EINVAL');
  const vma = mm.vmaAt(dst);
  if (!vma || !vma.isHugetlb() || !vma.uffdCtx || dst + len > vma.end) return neg('ENOENT');
  const hs = vma.hugePageSize();
  const haddr = dst - (dst % hs);
  if (dst + len > haddr + hs) return neg('EINVAL');
  if (mappedHuge(mm, haddr, hs)) return neg('EEXIST');
  let f = mm.hgm.get(haddr);
  if (f && !k.devmem.aliased.has(f)) return neg('EINVAL'); // mapped in parts by another proposal
  if (!f) {
    const r = devmemAliasOpen(k, mm, haddr, thread);
    if (typeof r === 'number') return r;
    f = r;
  }
  let stop = dst;
  while (stop < dst + len && hgmSubpageMissing(f, stop)) stop += PAGE_SIZE;
  if (stop === dst) return neg('EEXIST');
  // /dev/mem maps with PTEs only: no PMD leaf even for a whole 2M part.
  hgmMapRange(k, mm, f, dst, stop - dst, fill, false);
  k.charge(((stop - dst) / PAGE_SIZE) * k.costs.ns('uffdio_copy_4k'));
  if (f.nMapped === f.mapped.length) devmemRemapHuge(k, mm, f);
  return stop - dst;
}

/**
 * The alias of a complete page goes and the page is mapped at its huge
 * size again (hgmCollapse does the accounting of an aliased page: the
 * remap, the alias's tables freed).
 */
export function devmemRemapHuge(k: Kernel, mm: MmStruct, f: HgmFolio): void {
  hgmCollapse(k, mm, f);
}
