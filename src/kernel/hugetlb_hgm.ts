/**
 * Postcopy on hugetlbfs at small granularity: three upstream proposals,
 * none merged, as switchable features (off by default; each enabled at
 * /sys/kernel/memtwin/features/<name> and then offered as a feature bit by
 * UFFDIO_API, which a userfaultfd must request).
 *
 * Linux today resolves a userfault on a hugetlb page only with a copy of
 * the whole page (mfill_atomic_hugetlb): with 1G pages one missing byte
 * waits for a gigabyte. The proposals:
 *
 * - `uffd-hugetlb-subpage-copy` (UFFD_FEATURE_HUGETLB_SUBPAGE_COPY):
 *   UFFDIO_COPY accepts 4K-aligned ranges on hugetlb. The first copy into a
 *   huge page allocates the whole page (zeroed); only the copied parts are
 *   mapped, by PTEs, or by PMD leaves for whole aligned 2M parts of a 1G
 *   page; touching the rest raises new missing faults at 4K addresses; a
 *   copy onto a mapped part is EEXIST. When every part is mapped, or the
 *   range is unregistered, the huge mapping is restored in place, without
 *   a copy.
 * - `uffd-hugetlb-vma-split` (UFFD_FEATURE_HUGETLB_VMA_SPLIT): the same
 *   copies, but the first one into a huge page splits the VMA so the page
 *   gets a VMA of its own with 4K pages (all its copies map PTEs, even 2M
 *   ones), and the VMA merges back when the page is complete. It costs VMA
 *   splits and merges under the mmap lock and counts against
 *   vm.max_map_count; /proc/PID/maps and smaps show the split.
 * - `hugetlb-hgm` (high-granularity mapping, UFFD_FEATURE_MINOR_HUGETLBFS_HGM):
 *   MADV_SPLIT marks a shared hugetlb VMA for high-granularity mapping;
 *   minor faults in it report 4K addresses; UFFDIO_CONTINUE maps 4K (or
 *   whole 2M) parts of the page the hugetlbfs file holds (the VMM wrote the
 *   data there through a second mapping); MADV_COLLAPSE restores the huge
 *   mapping without a copy. Nothing collapses by itself.
 *
 * Costs, all measured: the huge page's allocation is the hugetlb fault
 * (fault_hugetlb_2m/1g_write, which zeroes it); each 4K copy is
 * uffdio_copy_4k, each 2M copy uffdio_copy_2m_hugetlb; a 4K CONTINUE maps
 * like a minor fault (fault_anon_4k_read_zeropage); restoring the huge
 * mapping rewrites one page table per PTE table it frees, charged as a PMD
 * split (thp_split_pmd, the same 512-entry rewrite the other way); a VMA
 * split or merge costs mprotect_split.
 */
import type { Kernel } from './kernel.ts';
import type { Thread } from './sched.ts';
import { HugeLeaf, PageTable, PteTable, PTE_NONE, VM, pteOf, type HgmFolio, type MmStruct, type Vma } from './mm_types.ts';
import { PAGE_SIZE, PMD_SIZE, PUD_SIZE, UFFD_FEATURE_PROPOSED as P, neg, type SysRet } from './uapi.ts';
import { allocPteTable, freePteTable, hugetlbAllocPage, hugetlbIndex } from './memory.ts';
import { mergeInto, splitVma } from './mmap.ts';

export const HGM_PROPOSALS = ['uffd-hugetlb-subpage-copy', 'uffd-hugetlb-vma-split', 'hugetlb-hgm'] as const;
export type HgmProposal = (typeof HGM_PROPOSALS)[number];

const FEATURE_BIT: Record<HgmProposal, number> = {
  'uffd-hugetlb-subpage-copy': P.UFFD_FEATURE_HUGETLB_SUBPAGE_COPY,
  'uffd-hugetlb-vma-split': P.UFFD_FEATURE_HUGETLB_VMA_SPLIT,
  'hugetlb-hgm': P.UFFD_FEATURE_MINOR_HUGETLBFS_HGM,
};

/** The proposals' switches and counters. */
export class HugetlbHgm {
  readonly enabled: Record<HgmProposal, number> = { 'uffd-hugetlb-subpage-copy': 0, 'uffd-hugetlb-vma-split': 0, 'hugetlb-hgm': 0 };
  /** Huge mappings restored in place, PTE tables freed doing so, VMA splits and merges. */
  readonly stats = { collapses: 0, pteTablesFreed: 0, vmaSplits: 0, vmaMerges: 0 };

  /** UFFDIO_API feature bits of the enabled proposals. */
  features(): number {
    let f = 0;
    for (const p of HGM_PROPOSALS) if (this.enabled[p]) f |= FEATURE_BIT[p];
    return f;
  }
}

/** Whether a userfaultfd with `features` copies into hugetlb pages by parts, and how. */
export function subpageCopyMode(features: number): 'subpage' | 'split' | null {
  if (features & P.UFFD_FEATURE_HUGETLB_VMA_SPLIT) return 'split';
  if (features & P.UFFD_FEATURE_HUGETLB_SUBPAGE_COPY) return 'subpage';
  return null;
}

/** Whether userfaults in this hugetlb VMA report 4K addresses (any proposal in use) rather than the huge page's. */
export function subpageFaults(vma: Vma, features: number): boolean {
  return vma.hgm !== null || (features & (P.UFFD_FEATURE_HUGETLB_SUBPAGE_COPY | P.UFFD_FEATURE_HUGETLB_VMA_SPLIT)) !== 0;
}

const subIndex = (f: HgmFolio, va: number): number => (va - f.haddr) / PAGE_SIZE;

/** Whether the 4K page at va of a huge page mapped in parts is unmapped. */
export function hgmSubpageMissing(f: HgmFolio, va: number): boolean {
  return f.mapped[Math.floor(subIndex(f, va))] === 0;
}

/** Where the run of unmapped 4K parts of f that starts at a ends (at most partEnd). */
function unmappedRun(f: HgmFolio, a: number, partEnd: number): number {
  let stop = a;
  while (stop < partEnd && hgmSubpageMissing(f, stop)) stop += PAGE_SIZE;
  return stop;
}

/** Start mapping the huge page at haddr (head frame pfn) in parts. */
export function newFolio(k: Kernel, mm: MmStruct, haddr: number, size: number, pfn: number): HgmFolio {
  const n = size / PAGE_SIZE;
  const f: HgmFolio = { haddr, size, pfn, mapped: new Uint8Array(n), nMapped: 0, copies: new Uint8Array(n) };
  mm.hgm.set(haddr, f);
  k.mem.addEntireMapcount(pfn, 1);
  return f;
}

/**
 * Map [va, va + len) of a huge page mapped in parts: PMD leaves for whole
 * aligned 2M parts of a 1G page when `pmds` allows, PTEs otherwise. With
 * `fill`, the bytes are written first (a copy). The parts must be unmapped.
 */
export function hgmMapRange(
  k: Kernel,
  mm: MmStruct,
  f: HgmFolio,
  va: number,
  len: number,
  fill: number | ((dst: number) => number) | null,
  pmds = true,
): void {
  const m = k.mem;
  for (let a = va; a < va + len;) {
    const key = PageTable.pmdKey(a);
    const whole2M = pmds && f.size === PUD_SIZE && a % PMD_SIZE === 0 && a + PMD_SIZE <= va + len && !mm.pgtable.pmds.has(key);
    const n = whole2M ? PMD_SIZE / PAGE_SIZE : 1;
    const sub = subIndex(f, a);
    for (let j = 0; j < n; j++) {
      if (fill !== null) {
        k.writeSerial = (k.writeSerial + 1) & 0xffffff;
        m.storeByte(f.pfn + sub + j, k.writeSerial, typeof fill === 'function' ? fill(a + j * PAGE_SIZE) : fill, true);
        f.copies[sub + j]!++;
      }
      f.mapped[sub + j] = 1;
    }
    f.nMapped += n;
    if (whole2M) mm.pgtable.pmds.set(key, new HugeLeaf(f.pfn + sub, 'pmd'));
    else {
      let t = mm.pgtable.pmds.get(key) as PteTable | undefined;
      if (!t) {
        t = allocPteTable(k, mm, k.phys.nodeOfPfn(f.pfn));
        mm.pgtable.pmds.set(key, t);
      }
      t.ptes[(a / PAGE_SIZE) & 511] = pteOf(f.pfn + sub);
      t.used++;
    }
    a += n * PAGE_SIZE;
  }
}

/** Remove the partial mappings of f (PTE tables freed, PMD leaves cleared); returns the PTE tables freed. */
function unmapParts(k: Kernel, mm: MmStruct, f: HgmFolio): number {
  let tables = 0;
  for (let a = f.haddr; a < f.haddr + f.size; a += PMD_SIZE) {
    const key = PageTable.pmdKey(a);
    const e = mm.pgtable.pmds.get(key);
    if (e instanceof PteTable) {
      freePteTable(k, mm, e);
      tables++;
    }
    mm.pgtable.pmds.delete(key);
  }
  mm.hgm.delete(f.haddr);
  return tables;
}

/**
 * Restore the huge mapping of a page mapped in parts, in place: no copy,
 * its unmapped parts showing what the page holds there (zeroes, for a
 * page allocated by a copy).
 */
export function hgmCollapse(k: Kernel, mm: MmStruct, f: HgmFolio): void {
  const tables = unmapParts(k, mm, f);
  if (f.size === PUD_SIZE) mm.pgtable.puds.set(PageTable.pudKey(f.haddr), new HugeLeaf(f.pfn, 'pud'));
  else mm.pgtable.pmds.set(PageTable.pmdKey(f.haddr), new HugeLeaf(f.pfn, 'pmd'));
  k.charge(k.costs.ns('thp_split_pmd') * Math.max(1, tables));
  k.hgm.stats.collapses++;
  k.hgm.stats.pteTablesFreed += tables;
  // A page reached through a /dev/mem alias (src/kernel/hugetlb_devmem.ts): this is its remap, the alias goes.
  if (k.devmem.aliased.delete(f)) {
    k.devmem.stats.remaps++;
    k.devmem.stats.pteTablesFreed += tables;
    k.devmem.openAliases--;
  }
}

/** zap of a huge page mapped in parts: its mappings go; returns its head frame for the caller to release. */
export function hgmZap(k: Kernel, mm: MmStruct, f: HgmFolio): number {
  unmapParts(k, mm, f);
  if (k.devmem.aliased.delete(f)) k.devmem.openAliases--;
  k.mem.addEntireMapcount(f.pfn, -1);
  return f.pfn;
}

/** The huge page at haddr is mapped whole. */
export function mappedHuge(mm: MmStruct, haddr: number, size: number): boolean {
  return size === PUD_SIZE
    ? mm.pgtable.puds.has(PageTable.pudKey(haddr))
    : mm.pgtable.pmds.get(PageTable.pmdKey(haddr)) instanceof HugeLeaf;
}

/**
 * UFFDIO_COPY of a 4K-aligned range into a hugetlb VMA under
 * uffd-hugetlb-subpage-copy or uffd-hugetlb-vma-split: bytes copied, or
 * -errno if none were.
 */
export function hgmCopy(
  k: Kernel,
  mm: MmStruct,
  vma: Vma,
  thread: Thread,
  dst: number,
  len: number,
  fill: number | ((dst: number) => number),
  mode: 'subpage' | 'split',
): number {
  const hs = vma.hugePageSize();
  const end = dst + len;
  let done = 0;
  for (let a = dst; a < end;) {
    const haddr = a - (a % hs);
    const partEnd = Math.min(end, haddr + hs);
    if (mappedHuge(mm, haddr, hs)) return done || neg('EEXIST');
    let f = mm.hgm.get(haddr);
    if (!f) {
      if (mode === 'split') {
        const r = splitForCopy(k, mm, mm.vmaAt(haddr)!, haddr, hs);
        if (r < 0) return done || r;
      }
      const pfn = hugetlbAllocPage(k, mm, mm.vmaAt(haddr)!, haddr, thread, null);
      if (pfn < 0) return done || neg('ENOMEM');
      f = newFolio(k, mm, haddr, hs, pfn);
    }
    // The part up to the first subpage already mapped is copied; that one stops the copy with EEXIST.
    const stop = unmappedRun(f, a, partEnd);
    if (stop > a) {
      hgmMapRange(k, mm, f, a, stop - a, fill, mode === 'subpage');
      chargeCopy(k, a, stop - a, mode === 'subpage' && hs === PUD_SIZE);
      done += stop - a;
    }
    if (f.nMapped === f.mapped.length) completeFolio(k, mm, f);
    if (stop < partEnd) return done || neg('EEXIST');
    a = partEnd;
  }
  return done;
}

/** A copy's cost: uffdio_copy_2m_hugetlb for each whole aligned 2M part mapped by a PMD, uffdio_copy_4k per other 4K page. */
function chargeCopy(k: Kernel, va: number, len: number, pmds: boolean): void {
  let whole = 0;
  if (pmds) for (let a = va + ((PMD_SIZE - (va % PMD_SIZE)) % PMD_SIZE); a + PMD_SIZE <= va + len; a += PMD_SIZE) whole++;
  k.charge(whole * k.costs.ns('uffdio_copy_2m_hugetlb') + ((len - whole * PMD_SIZE) / PAGE_SIZE) * k.costs.ns('uffdio_copy_4k'));
}

/** Every part of f is mapped: merge a split VMA back, then restore the huge mapping. */
function completeFolio(k: Kernel, mm: MmStruct, f: HgmFolio): void {
  const vma = mm.vmaAt(f.haddr)!;
  if (vma.hgm === 'split') mergeBack(k, mm, vma);
  hgmCollapse(k, mm, f);
}

/** uffd-hugetlb-vma-split: give the huge page at haddr a VMA of its own, with 4K pages. */
function splitForCopy(k: Kernel, mm: MmStruct, vma: Vma, haddr: number, hs: number): SysRet {
  if (vma.hgm === 'split') return 0;
  const splits = (haddr > vma.start ? 1 : 0) + (haddr + hs < vma.end ? 1 : 0);
  if (mm.mapCount + splits > k.sysctl.max_map_count) return neg('ENOMEM');
  let mid = vma;
  if (haddr > vma.start) mid = splitVma(k, mm, vma, haddr) as Vma;
  if (haddr + hs < mid.end) splitVma(k, mm, mid, haddr + hs);
  mid.hgm = 'split';
  k.charge(splits * k.costs.ns('mprotect_split'));
  k.hgm.stats.vmaSplits += splits;
  return 0;
}

/** Pieces of one hugetlb mapping that a split cut apart (same file, reservation, flags, registration, contiguous offsets). */
function samePieces(a: Vma, b: Vma): boolean {
  return (
    a.end === b.start &&
    a.file === b.file &&
    a.resv === b.resv &&
    a.flags === b.flags &&
    a.uffdCtx === b.uffdCtx &&
    a.hugeShift === b.hugeShift &&
    b.pgoff === a.pgoff + (a.end - a.start) / PAGE_SIZE
  );
}

/** uffd-hugetlb-vma-split: the page's own VMA merges back with the neighbours it was split from. */
function mergeBack(k: Kernel, mm: MmStruct, vma: Vma): void {
  vma.hgm = null;
  let merges = 0;
  const next = mm.nextVma(vma);
  if (next && next.hgm === null && samePieces(vma, next)) {
    mergeInto(mm, vma, next);
    merges++;
  }
  const prev = mm.prevVma(vma);
  if (prev && prev.hgm === null && samePieces(prev, vma)) {
    mergeInto(mm, prev, vma);
    merges++;
  }
  k.charge(merges * k.costs.ns('mprotect_split'));
  k.hgm.stats.vmaMerges += merges;
}

/** UFFDIO_UNREGISTER under the copy proposals: every huge page mapped in parts in [start, end) is completed in place. */
export function hgmCompleteRange(k: Kernel, mm: MmStruct, start: number, end: number): void {
  for (const f of [...mm.hgm.values()])
    if (f.haddr < end && f.haddr + f.size > start && mm.vmaAt(f.haddr)?.hgm !== 'hgm') completeFolio(k, mm, f);
}

/** MADV_SPLIT (hugetlb-hgm): shared hugetlb VMAs in [start, end) become eligible for high-granularity mapping. */
export function madvSplit(mm: MmStruct, start: number, end: number): SysRet {
  const vmas = mm.vmasIn(start, end);
  for (const v of vmas) if (!v.isHugetlb() || !(v.flags & VM.MAYSHARE)) return neg('EINVAL');
  for (const v of vmas) v.hgm = 'hgm';
  return 0;
}

/**
 * UFFDIO_CONTINUE of a 4K-aligned range in a MADV_SPLIT hugetlb VMA: maps
 * parts of the pages the file holds. Bytes mapped, or -errno if none were
 * (-EFAULT without a page in the file, -EEXIST for a mapped part).
 */
export function hgmContinue(k: Kernel, mm: MmStruct, vma: Vma, dst: number, len: number): number {
  const hs = vma.hugePageSize();
  const end = dst + len;
  let done = 0;
  for (let a = dst; a < end;) {
    const haddr = a - (a % hs);
    const partEnd = Math.min(end, haddr + hs);
    const pfn = vma.file!.pages.get(hugetlbIndex(vma, haddr));
    if (pfn === undefined) return done || neg('EFAULT');
    if (mappedHuge(mm, haddr, hs)) return done || neg('EEXIST');
    const f = mm.hgm.get(haddr) ?? newFolio(k, mm, haddr, hs, pfn);
    const stop = unmappedRun(f, a, partEnd);
    if (stop > a) {
      hgmMapRange(k, mm, f, a, stop - a, null);
      k.charge(((stop - a) / PAGE_SIZE) * k.costs.ns('fault_anon_4k_read_zeropage'));
      done += stop - a;
    }
    if (stop < partEnd) return done || neg('EEXIST');
    a = partEnd;
  }
  return done;
}

/** MADV_COLLAPSE on a MADV_SPLIT hugetlb VMA: restore the huge mapping of every page mapped in parts in [start, end). */
export function hgmMadvCollapse(k: Kernel, mm: MmStruct, start: number, end: number): SysRet {
  for (const f of [...mm.hgm.values()]) if (f.haddr < end && f.haddr + f.size > start) hgmCollapse(k, mm, f);
  return 0;
}

/** The mapped parts of a huge page mapped in parts, as (va, frame, size) leaves, for smaps, numa_maps and pagemap walks. */
export function hgmLeaves(mm: MmStruct, f: HgmFolio, cb: (va: number, pfn: number, size: number) => void): void {
  for (let a = f.haddr; a < f.haddr + f.size; a += PMD_SIZE) {
    const e = mm.pgtable.pmds.get(PageTable.pmdKey(a));
    if (e instanceof HugeLeaf) cb(a, e.pfn, PMD_SIZE);
    else if (e instanceof PteTable)
      for (let j = 0; j < 512; j++) {
        const pte = e.ptes[j]!;
        if (pte !== PTE_NONE) cb(a + j * PAGE_SIZE, pte - 1, PAGE_SIZE);
      }
  }
}
