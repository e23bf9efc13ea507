/**
 * Page faults and unmapping (mm/memory.c): handle_mm_fault for anonymous,
 * shared-anonymous (shmem) and hugetlb VMAs, the user access path that
 * op-script `touch`/`peek` and workloads use, and zap_page_range.
 */
import type { Kernel } from './kernel.ts';
import { PG, OWNER_KERNEL } from './page.ts';
import { MIGRATE_MOVABLE, MIGRATE_UNMOVABLE } from './page_alloc.ts';
import {
  HugeLeaf,
  PageTable,
  PteTable,
  PTE_NONE,
  PTE_ZERO,
  VM,
  pfnOfPte,
  pteMkyoung,
  pteOf,
  swpEntryOfPte,
  type MmStruct,
  type Vma,
} from './mm_types.ts';
import { doSwapPage, folioFreeSwap, freeSwapAndCache } from './swap_state.ts';
import { lruAddNewAnon, lruAddNewAnonRun } from './swap.ts';
import { memcgCharge } from './memcontrol.ts';
import {
  HPAGE_PMD_NR,
  HPAGE_PMD_ORDER,
  MMAP_MIN_ADDR,
  PAGE_SIZE,
  PMD_SIZE,
  PUD_SHIFT,
  PUD_SIZE,
  UFFD_FEATURE,
  alignDown,
  neg,
  type SysRet,
} from './uapi.ts';
import { RLIMIT_STACK, STACK_GUARD_GAP, vmaIsAccessible } from './mm_types.ts';
import { anonVmaPrepare, vmEnoughMemory } from './mmap.ts';
import {
  doHugePmdAnonymousPage,
  folioMapped,
  folioUnmappedSome,
  splitHugePmd,
  thpSuitable,
  thpVmaAllowable,
  allocThp,
  prepAnonThp,
} from './huge_memory.ts';
import { accountPolicyAlloc, allocPolicyPages, policyPlacement } from './mempolicy.ts';
import type { Thread } from './sched.ts';
import { clearMarkers, clearUffdWp, unprotectAsync } from './userfaultfd.ts';
import { hgmMapRange, hgmSubpageMissing, hgmZap } from './hugetlb_hgm.ts';
import { folioMappedByOtherMm } from './migrate.ts';
import { filemapFault } from './filemap.ts';

export const FAULT_OK = 0;
export const FAULT_SIGSEGV = 1;
export const FAULT_SIGBUS = 2;
export const FAULT_OOM = 3;
/** The fault became a userfault: the thread blocks until a UFFDIO_COPY/ZEROPAGE/WAKE wakes it. */
export const FAULT_USERFAULT = 4;
export type FaultResult = typeof FAULT_OK | typeof FAULT_SIGSEGV | typeof FAULT_SIGBUS | typeof FAULT_OOM | typeof FAULT_USERFAULT;

/** pte_alloc: a page-table page, unmovable, from the faulting node. */
export function allocPteTable(k: Kernel, mm: MmStruct, nid: number): PteTable {
  let pfn = k.phys.alloc({ order: 0, mt: MIGRATE_UNMOVABLE, nid });
  if (pfn >= 0) {
    k.mem.setFlags(pfn, PG.pgtable);
    k.mem.setOwner(pfn, OWNER_KERNEL);
    mm.pgtablesBytes += PAGE_SIZE;
  } else pfn = -1; // memory exhausted: the table is not charged a frame
  return new PteTable(pfn);
}

export function freePteTable(k: Kernel, mm: MmStruct, t: PteTable): void {
  if (t.tablePfn >= 0) {
    k.phys.free(t.tablePfn, 0);
    mm.pgtablesBytes -= PAGE_SIZE;
  }
}

const ORDER0_MOVABLE = { order: 0, mt: MIGRATE_MOVABLE as typeof MIGRATE_MOVABLE, nid: 0, callerPreps: true };

/** A new anonymous page for va, placed by the memory policy (the local node when there is none). */
export function newAnonPage(k: Kernel, mm: MmStruct, vma: Vma, va: number, t: Thread): number {
  const local = k.cpuToNode(t.cpu);
  let pfn: number;
  if (!vma.policy && !t.mempolicy && !t.process.memsAllowed) {
    ORDER0_MOVABLE.nid = local;
    pfn = k.phys.alloc(ORDER0_MOVABLE);
    if (pfn >= 0) k.accountAlloc(pfn, local, 1);
  } else pfn = allocPolicyPages(k, policyPlacement(k, t, vma, va, 0), 0, MIGRATE_MOVABLE, local);
  if (pfn < 0) return -1;
  // mem_cgroup_charge (which may OOM-kill), and a task the OOM killer chose while it allocated gets nothing.
  if ((k.memcg.active && memcgCharge(k, mm, pfn, 1, { current: t.process, order: 0 }) < 0) || t.process.exited) {
    k.phys.free(pfn, 0);
    return -1;
  }
  lruAddNewAnon(k, pfn, mm.id, va / PAGE_SIZE, PG.anon | PG.young | PG.anonExclusive);
  anonVmaPrepare(k, mm, vma);
  mm.rssAnon++;
  return pfn;
}

/**
 * handle_mm_fault for a user access at `va` in `vma`. The caller has
 * already checked the VMA's permissions.
 */
export function handleMmFault(k: Kernel, mm: MmStruct, vma: Vma, va: number, write: boolean, thread: Thread): FaultResult {
  k.vmstat.events.pgfault++;
  k.current = thread; // whose stalls PSI counts (psi.ts)
  // handle_pte_marker: a PTE_MARKER_POISONED (UFFDIO_POISON) is VM_FAULT_HWPOISON.
  if (mm.uffdPoison.size && mm.uffdPoison.has(Math.floor(va / PAGE_SIZE))) return FAULT_SIGBUS;
  // do_wp_page / do_huge_pmd_wp_page / hugetlb_wp: a write to a page mapped with the uffd-wp bit.
  if (write && vma.flags & VM.UFFD_WP && mm.uffdWp.has(Math.floor(va / PAGE_SIZE)) && followPage(mm, va) !== -2) {
    if ((vma.uffdCtx?.features ?? 0) & UFFD_FEATURE.UFFD_FEATURE_WP_ASYNC) {
      unprotectAsync(mm, vma, va); // UFFD_FEATURE_WP_ASYNC: the kernel resolves it itself
      k.charge(k.hot.faultRead);
      return FAULT_OK;
    }
    return k.uffd.fault(vma, va, write, thread, 'wp') === 'sigbus' ? FAULT_SIGBUS : FAULT_USERFAULT;
  }
  if (vma.flags & VM.UFFD_MISSING && pageMissing(mm, vma, va)) {
    // do_huge_pmd_anonymous_page prepares the anon_vma (and enters khugepaged) before it raises the
    // userfault; do_anonymous_page allocates the PTE table first.
    const key = PageTable.pmdKey(va);
    if (!vma.file && !vma.isHugetlb() && !mm.pgtable.pmds.has(key)) {
      if (thpVmaAllowable(k, vma) && thpSuitable(vma, alignDown(va, PMD_SIZE))) {
        anonVmaPrepare(k, mm, vma);
        k.khugepaged.enterVma(mm, vma);
      } else mm.pgtable.pmds.set(key, allocPteTable(k, mm, k.cpuToNode(thread.cpu)));
    }
    return k.uffd.fault(vma, va, write, thread) === 'sigbus' ? FAULT_SIGBUS : FAULT_USERFAULT;
  }
  // shmem_get_folio_gfp / hugetlb_no_page: a page the file holds but this VMA does not map is a minor fault.
  if (vma.flags & VM.UFFD_MINOR && pageMinor(mm, vma, va))
    return k.uffd.fault(vma, va, write, thread, 'minor') === 'sigbus' ? FAULT_SIGBUS : FAULT_USERFAULT;
  const nid = k.cpuToNode(thread.cpu);
  if (vma.isHugetlb()) return hugetlbFault(k, mm, vma, va, write, thread);
  const key = PageTable.pmdKey(va);
  let e = mm.pgtable.pmds.get(key);
  if (e === undefined) {
    if (thpVmaAllowable(k, vma) && doHugePmdAnonymousPage(k, mm, vma, va, write, thread) === 'done') return FAULT_OK;
  } else if (e instanceof HugeLeaf) {
    if (!write) return FAULT_OK;
    // do_huge_pmd_wp_page: a THP shared with a forked process (or taken back by it).
    if (!e.isZero) return mm.cowPossible && writeFaults(k, vma, e.pfn) ? doHugePmdWpPage(k, mm, vma, va, e, thread) : FAULT_OK;
    // do_huge_zero_wp_pmd: try a THP for the written huge zero page, else split and COW one PTE.
    const haddr = alignDown(va, PMD_SIZE);
    const pl = policyPlacement(k, thread, vma, haddr, HPAGE_PMD_ORDER);
    let pfn = allocThp(k, vma, pl);
    if (pfn >= 0 && k.memcg.active && memcgCharge(k, mm, pfn, HPAGE_PMD_NR, { current: thread.process, order: HPAGE_PMD_ORDER }) < 0) {
      k.phys.free(pfn, HPAGE_PMD_ORDER);
      k.vmstat.count('thp_fault_fallback_charge');
      pfn = -1;
    }
    if (pfn >= 0) {
      accountPolicyAlloc(k, pl, pfn, HPAGE_PMD_ORDER, nid);
      prepAnonThp(k, pfn, mm, haddr);
      k.mem.addEntireMapcount(pfn, 1);
      e.pfn = pfn;
      mm.rssAnon += HPAGE_PMD_NR;
      k.vmstat.count('thp_fault_alloc');
      k.chargeMem(k.costs.ns('fault_thp_2m_write'), HPAGE_PMD_NR * k.hot.zero4k, -1, k.phys.nodeOfPfn(pfn), PMD_SIZE, nid);
      return FAULT_OK;
    }
    k.vmstat.count('thp_fault_fallback');
    e = splitHugePmd(k, mm, haddr, nid);
  }
  let t = e as PteTable | undefined;
  if (!t) {
    t = allocPteTable(k, mm, nid);
    mm.pgtable.pmds.set(key, t);
  }
  const i = Math.floor(va / PAGE_SIZE) & 511;
  const pte = t.ptes[i]!;
  // A swap entry (only private anonymous memory is swapped): do_swap_page.
  if (pte < PTE_ZERO) return doSwapPage(k, mm, vma, t, i, va, write, nid) ? FAULT_OK : FAULT_OOM;
  // do_wp_page: a write to a page this mm may not write in place (shared by fork, a page-cache page, a clean disk page).
  if (pte > 0) return write && mm.cowPossible && writeFaults(k, vma, pfnOfPte(pte)) ? doWpPage(k, mm, vma, t, i, va, thread) : FAULT_OK;
  if (vma.file) return filemapFault(k, mm, vma, t, i, va, write, thread);
  if (pte === PTE_NONE && !write) {
    t.ptes[i] = PTE_ZERO;
    t.used++;
    k.charge(k.hot.faultRead);
    return FAULT_OK;
  }
  if (pte === PTE_NONE || pte === PTE_ZERO) {
    const pfn = newAnonPage(k, mm, vma, va, thread);
    if (pfn < 0) return FAULT_OOM;
    if (pte === PTE_NONE) t.used++;
    t.ptes[i] = pteOf(pfn);
    if (k.membw) k.chargeMem(k.hot.faultWrite, k.hot.zero4k, -1, k.phys.nodeOfPfn(pfn), PAGE_SIZE, nid);
    else k.charge(k.hot.faultWrite);
  }
  return FAULT_OK;
}

/**
 * mm_find_pmd() != NULL: whether the 1G range containing va has a PMD table
 * (some PMD slot of it was ever populated). Upper page-table levels are not
 * frames in memtwin; a PMD table is taken to exist while any slot is used.
 */
export function hasPmdTable(mm: MmStruct, va: number): boolean {
  return mm.pgtable.hasPmdTable(va);
}

/**
 * Whether the fault at va is a missing fault, the kind userfaultfd's MISSING
 * mode intercepts: nothing mapped there and, for shmem and shared hugetlb,
 * nothing in the page cache either.
 */
function pageMissing(mm: MmStruct, vma: Vma, va: number): boolean {
  if (vma.isHugetlb()) {
    const hs = vma.hugePageSize();
    const haddr = alignDown(va, hs);
    const map = hs === PUD_SIZE ? mm.pgtable.puds : mm.pgtable.pmds;
    // A page mapped in parts by the copy proposals: its parts not copied yet are missing (under hugetlb-hgm, minor).
    const part = mm.hgm.get(haddr);
    if (part) return hgmSubpageMissing(part, va) && vma.hgm !== 'hgm';
    if (map.get(hs === PUD_SIZE ? PageTable.pudKey(haddr) : PageTable.pmdKey(haddr))) return false;
    return !(vma.flags & VM.MAYSHARE) || !vma.file!.pages.has(hugetlbIndex(vma, haddr));
  }
  if (followPage(mm, va) !== -2 || swapPteAt(mm, va)) return false;
  if (!vma.file) return true;
  return !vma.file.pages.has(vma.pgoff + Math.floor((va - vma.start) / PAGE_SIZE));
}

/**
 * Whether the fault at va is a minor fault, the kind userfaultfd's MINOR
 * mode intercepts: the VMA maps nothing there, but its shmem or shared
 * hugetlbfs file holds the page.
 */
function pageMinor(mm: MmStruct, vma: Vma, va: number): boolean {
  if (!vma.file) return false;
  if (vma.isHugetlb()) {
    const hs = vma.hugePageSize();
    const haddr = alignDown(va, hs);
    const map = hs === PUD_SIZE ? mm.pgtable.puds : mm.pgtable.pmds;
    const part = mm.hgm.get(haddr);
    if (part) return hgmSubpageMissing(part, va) && vma.hgm === 'hgm';
    if (map.get(hs === PUD_SIZE ? PageTable.pudKey(haddr) : PageTable.pmdKey(haddr))) return false;
    return (vma.flags & VM.MAYSHARE) !== 0 && vma.file.pages.has(hugetlbIndex(vma, haddr));
  }
  return followPage(mm, va) === -2 && vma.file.pages.has(vma.pgoff + Math.floor((va - vma.start) / PAGE_SIZE));
}

/** The page index in a hugetlbfs file (in huge pages) of the huge page at haddr. */
export function hugetlbIndex(vma: Vma, haddr: number): number {
  return (vma.pgoff * PAGE_SIZE + (haddr - vma.start)) / vma.hugePageSize();
}

/**
 * mfill_atomic_pte_copy: a new anonymous page at va (in the PTE table t,
 * whose entry is none) holding `fill` in every byte. Returns the frame, or
 * -1 when memory is exhausted.
 */
export function installAnonPage(k: Kernel, mm: MmStruct, vma: Vma, t: PteTable, va: number, thread: Thread, fill: number): number {
  const pfn = newAnonPage(k, mm, vma, va, thread);
  if (pfn < 0) return -1;
  t.ptes[Math.floor(va / PAGE_SIZE) & 511] = pteOf(pfn);
  t.used++;
  k.writeSerial = (k.writeSerial + 1) & 0xffffff;
  k.mem.storeByte(pfn, k.writeSerial, fill, true);
  return pfn;
}

/** Frames of one installAnonPages call (at most a PTE table's worth). */
const bulkFrames = new Int32Array(512);

/**
 * installAnonPage for the n (<= 512) none PTEs of t from va, their frames
 * taken by one bulk allocation (PhysMem.allocBulk: the frames n single
 * allocations would hand out, in that order), then each page set up, mapped
 * and filled in address order as n calls would. `src` is the fill byte, or
 * the byte for each page's address. Returns n, or 0 with nothing done when
 * the pages must go one at a time: a memory policy or cpuset to apply, a
 * memory cgroup to charge, a task the OOM killer chose, or a node that
 * would fall to its low watermark (kswapd, reclaim).
 */
export function installAnonPages(
  k: Kernel,
  mm: MmStruct,
  vma: Vma,
  t: PteTable,
  va: number,
  n: number,
  thread: Thread,
  src: number | ((va: number) => number),
  frames: Int32Array = bulkFrames,
): number {
  if (vma.policy || thread.mempolicy || thread.process.memsAllowed || k.memcg.active || thread.process.exited) return 0;
  const local = k.cpuToNode(thread.cpu);
  ORDER0_MOVABLE.nid = local;
  if (k.phys.allocBulk(ORDER0_MOVABLE, n, frames) === 0) return 0;
  k.accountAlloc(frames[0]!, local, n);
  const owner = mm.id;
  const vpn = va / PAGE_SIZE;
  const i0 = vpn & 511;
  const fill = typeof src === 'number' ? src : -1;
  lruAddNewAnonRun(k, frames, n, owner, vpn, PG.anon | PG.young | PG.anonExclusive);
  // set_pte_at, then the copy of each page (its first byte stored at the page's start, in address order).
  const ptes = t.ptes;
  for (let j = 0; j < n; j++) ptes[i0 + j] = pteOf(frames[j]!);
  const byteOf = fill >= 0 ? null : (j: number): number => (src as (va: number) => number)(va + j * PAGE_SIZE);
  k.writeSerial = k.mem.storePageStarts(frames, n, k.writeSerial, fill, byteOf);
  t.used += n;
  mm.rssAnon += n;
  anonVmaPrepare(k, mm, vma);
  return n;
}

/**
 * Write faults on the n (<= 512) none PTEs of one PTE table from va, as n
 * one-page stores by `thread` through userAccess would take them
 * (accessPtes: do_anonymous_page for each, then the store of `fill`):
 * their frames from one bulk allocation (PhysMem.allocBulk: the frames n
 * single allocations would hand out, in that order), each page set up,
 * mapped and written in address order, the faults counted. The time is
 * not charged here: the caller charges chargeAnonWriteFault per page, in
 * the order of its other charges. `frames` receives the frames. Returns
 * n, or 0 with nothing done when the pages must go one at a time: not a
 * plain private anonymous VMA (a file, hugetlb, userfaultfd), no PTE table
 * yet (the first fault makes it), a PTE that is not none, a memory policy
 * or cpuset to apply, a memory cgroup to charge, a task the OOM killer
 * chose, a node that would fall to its low watermark, background work due
 * within the faults, or no running task (each fault would move the clock).
 */
export function writeFaultAnonRun(k: Kernel, thread: Thread, va: number, n: number, fill: number, frames: Int32Array): number {
  const proc = thread.process;
  if (k.taskTime === null || proc.exited || proc.memsAllowed || thread.mempolicy || k.memcg.active) return 0;
  if (n <= 0 || n > 512 || Math.floor(va / PMD_SIZE) !== Math.floor((va + n * PAGE_SIZE - 1) / PMD_SIZE) || va % PAGE_SIZE) return 0;
  // accessPtes runs background work that falls due within a fault (the clock stands still inside a task).
  if (k.events.size && (k.events.peekTime() ?? Infinity) <= k.clock.now() + k.hot.faultWrite) return 0;
  const mm = proc.mm;
  const vma = mm.vmaAt(va);
  if (!vma || va + n * PAGE_SIZE > vma.end || !vmaAllows(vma, true) || vma.policy) return 0;
  if (vma.file || vma.isHugetlb() || vma.flags & (VM.UFFD_MISSING | VM.UFFD_WP)) return 0;
  const t = mm.pgtable.pmds.get(Math.floor(va / PMD_SIZE));
  if (!(t instanceof PteTable)) return 0;
  const ptes = t.ptes;
  const vpn = va / PAGE_SIZE;
  const i0 = vpn & 511;
  for (let j = 0; j < n; j++) if (ptes[i0 + j] !== PTE_NONE) return 0;
  if (installAnonPages(k, mm, vma, t, va, n, thread, fill, frames) === 0) return 0;
  k.vmstat.events.pgfault += n;
  return n;
}

/** The time of one anonymous write fault into frame pfn by a task on node `nid` (do_anonymous_page's clear_page with a bandwidth model). */
export function chargeAnonWriteFault(k: Kernel, pfn: number, nid: number): void {
  if (k.membw) k.chargeMem(k.hot.faultWrite, k.hot.zero4k, -1, k.phys.nodeOfPfn(pfn), PAGE_SIZE, nid);
  else k.charge(k.hot.faultWrite);
}

/** fault_around_bytes default (64K): pages a read fault maps around itself. */
export const FAULT_AROUND_PAGES = 16;

/**
 * shmem_mfill_atomic_pte: a new page for va in the VMA's shmem file, filled
 * with `fill` (0 for UFFDIO_ZEROPAGE), added to the page cache and mapped.
 * -EEXIST if the file already has a page there or va is mapped, -ENOMEM.
 */
export function installShmemPage(k: Kernel, mm: MmStruct, vma: Vma, t: PteTable, va: number, thread: Thread, fill: number): SysRet {
  const file = vma.file!;
  const idx = vma.pgoff + (va - vma.start) / PAGE_SIZE;
  const i = Math.floor(va / PAGE_SIZE) & 511;
  if (file.pages.has(idx) || t.ptes[i] !== PTE_NONE) return neg('EEXIST');
  const pfn = allocPolicyPages(k, policyPlacement(k, thread, vma, va, 0), 0, MIGRATE_MOVABLE, k.cpuToNode(thread.cpu));
  if (pfn < 0) return neg('ENOMEM');
  k.mem.setFlags(pfn, PG.shmem);
  k.mem.setOwner(pfn, file.id);
  k.mem.setIndex(pfn, idx);
  k.writeSerial = (k.writeSerial + 1) & 0xffffff;
  k.mem.storeByte(pfn, k.writeSerial, fill, true);
  file.pages.set(idx, pfn);
  mapShmemPage(k, mm, t, i, pfn);
  return 0;
}

/** Map a page-cache page (shmem or a disk file's) at slot i of t. */
export function mapShmemPage(k: Kernel, mm: MmStruct, t: PteTable, i: number, pfn: number): void {
  t.ptes[i] = pteOf(pfn);
  t.used++;
  k.mem.addMapcount(pfn, 1);
  if (k.mem.flags(pfn) & PG.diskFile) mm.rssFile++;
  else mm.rssShmem++;
}

/**
 * hugetlb_fault: hugetlb_no_page maps the page (from the file, or a new
 * one); a write to a private page shared with a forked process, or to a
 * page of the file mapped privately, copies it (hugetlb_wp).
 */
function hugetlbFault(k: Kernel, mm: MmStruct, vma: Vma, va: number, write: boolean, thread: Thread): FaultResult {
  if (hugetlbMap(k, mm, vma, va, thread, null) === -1) return FAULT_SIGBUS;
  if (!write || vma.flags & VM.MAYSHARE || mm.hgm.size) return FAULT_OK;
  const pfn = followPage(mm, va);
  return pfn >= 0 && writeFaults(k, vma, pfn) ? hugetlbWp(k, mm, vma, va, thread) : FAULT_OK;
}

/**
 * hugetlb_mfill_atomic_pte: a fresh huge page at va holding `fill` in every
 * byte. 0, -EEXIST if something is mapped there, -ENOMEM without a page.
 */
export function hugetlbInstall(k: Kernel, mm: MmStruct, vma: Vma, va: number, thread: Thread, fill: number): SysRet {
  const r = hugetlbMap(k, mm, vma, va, thread, fill);
  return r === 0 ? 0 : r === -1 ? neg('ENOMEM') : neg('EEXIST');
}

/**
 * hugetlb_mfill_atomic_pte for UFFDIO_CONTINUE: map the page a shared
 * hugetlbfs file already holds at va. 0, -EFAULT if the file has no page
 * there, -EEXIST if va is mapped.
 */
export function hugetlbContinue(k: Kernel, mm: MmStruct, vma: Vma, va: number, thread: Thread): SysRet {
  if (!(vma.flags & VM.MAYSHARE) || !vma.file!.pages.has(hugetlbIndex(vma, va))) return neg('EFAULT');
  if (followPage(mm, va) !== -2 || mm.hgm.has(va)) return neg('EEXIST');
  hugetlbMap(k, mm, vma, va, thread, null);
  return 0;
}

/**
 * Map the huge page for va, allocating it (or taking it from the file) as
 * hugetlb_no_page does; with `fill`, only a fresh page filled with it
 * (UFFDIO_COPY). 0 on success, -1 without a page, -2 if already mapped
 * (only with `fill`).
 */
function hugetlbMap(k: Kernel, mm: MmStruct, vma: Vma, va: number, thread: Thread, fill: number | null): number {
  const h = k.hugetlb.byShift(vma.hugeShift)!;
  const haddr = alignDown(va, h.size);
  const map = h.shift === PUD_SHIFT ? mm.pgtable.puds : mm.pgtable.pmds;
  const key = h.shift === PUD_SHIFT ? PageTable.pudKey(haddr) : PageTable.pmdKey(haddr);
  const part = mm.hgm.get(haddr);
  if (!part && map.get(key)) return fill === null ? 0 : -2;
  if (part) {
    // A huge page mapped in parts (hugetlb_hgm.ts): a copy of the whole page finds it mapped; a fault maps its 4K.
    if (fill !== null) return -2;
    if (!hgmSubpageMissing(part, va)) return 0;
    hgmMapRange(k, mm, part, alignDown(va, PAGE_SIZE), PAGE_SIZE, null);
    k.charge(k.costs.ns('fault_anon_4k_read_zeropage'));
    return 0;
  }
  // hugetlb_no_page: after the reservation owner took a shared page back (HPAGE_RESV_UNMAPPED), or beyond i_size: SIGBUS.
  if (fill === null && vma.hugetlbResvUnmapped) return -1;
  const file = vma.file!;
  if (file.size !== null && hugetlbIndex(vma, haddr) >= file.size / h.size) return -1;
  // The file's page, shared or (a private mapping of a hugetlbfs file) to be copied on write; a private
  // MAP_HUGETLB mapping's file never holds pages.
  let pfn = file.pages.get(hugetlbIndex(vma, haddr));
  if (pfn === undefined) {
    pfn = hugetlbAllocPage(k, mm, vma, haddr, thread, fill);
    if (pfn < 0) return -1;
  } else if (fill !== null) return -2;
  else k.charge(k.costs.ns('fault_anon_4k_read_zeropage'));
  k.mem.addEntireMapcount(pfn, 1);
  map.set(key, new HugeLeaf(pfn, h.shift === PUD_SHIFT ? 'pud' : 'pmd'));
  return 0;
}

/**
 * alloc_hugetlb_folio for the huge page at haddr of a hugetlb VMA, as a
 * fault or UFFDIO_COPY takes it: from the pool by the memory policy,
 * consuming the reservation; zeroed (charged as the fault that zeroes it)
 * or filled with `fill` (the copy's cost is the caller's); added to the
 * file for shared mappings. Not mapped. The head frame, or -1.
 */
export function hugetlbAllocPage(k: Kernel, mm: MmStruct, vma: Vma, haddr: number, thread: Thread, fill: number | null): number {
  const h = k.hugetlb.byShift(vma.hugeShift)!;
  const idx = hugetlbIndex(vma, haddr);
  const shared = (vma.flags & VM.MAYSHARE) !== 0;
  const reserved = shared ? vma.file!.reserved.has(idx) : vma.resv !== null && !vma.resv.consumed.has(idx);
  const pl = policyPlacement(k, thread, vma, haddr, h.order);
  const pfn = k.hugetlb.allocForFault(h, pl.nid, reserved, pl.nodemask);
  if (pfn < 0) return -1;
  accountPolicyAlloc(k, pl, pfn, h.order, k.cpuToNode(thread.cpu));
  const n = 2 ** h.order;
  const m = k.mem;
  const owner = shared ? vma.file!.id : mm.id;
  for (let j = 0; j < n; j++) {
    if (fill !== null) {
      k.writeSerial = (k.writeSerial + 1) & 0xffffff;
      m.storeByte(pfn + j, k.writeSerial, fill, true);
    } else m.setToken(pfn + j, 0);
    m.setOwner(pfn + j, owner);
    m.setIndex(pfn + j, shared ? idx : haddr / PAGE_SIZE + j);
  }
  if (shared) {
    vma.file!.pages.set(idx, pfn);
    if (reserved) vma.file!.reserved.delete(idx);
  } else {
    m.addFlags(pfn, PG.anon | PG.anonExclusive);
    if (reserved) vma.resv!.consumed.add(idx);
    anonVmaPrepare(k, mm, vma); // hugetlb_no_page: __vmf_anon_prepare for a private page
  }
  if (fill === null)
    k.chargeMem(
      k.costs.ns(h.shift === PUD_SHIFT ? 'fault_hugetlb_1g_write' : 'fault_hugetlb_2m_write'),
      n * k.hot.zero4k,
      -1,
      k.phys.nodeOfPfn(pfn),
      n * PAGE_SIZE,
      k.cpuToNode(thread.cpu),
    );
  return pfn;
}

/** Whether va's PTE holds a swap entry (the page is swapped out). */
export function swapPteAt(mm: MmStruct, va: number): boolean {
  const e = mm.pgtable.pmds.get(PageTable.pmdKey(va));
  return e instanceof PteTable && e.ptes[Math.floor(va / PAGE_SIZE) & 511]! < PTE_ZERO;
}

/**
 * Translate va: the 4K frame it maps, PTE_ZERO-like -1 for a zero page,
 * or -2 when not mapped. The caller ensures the VMA exists.
 */
export function followPage(mm: MmStruct, va: number): number {
  const pt = mm.pgtable;
  if (pt.puds.size) {
    const leaf = pt.puds.get(PageTable.pudKey(va));
    if (leaf) return leaf.pfn + Math.floor((va % PUD_SIZE) / PAGE_SIZE);
  }
  const e = pt.pmdEntry(PageTable.pmdKey(va)); // pmds.get, through the PMD table the last lookup used
  if (e === undefined) return -2;
  if (e instanceof HugeLeaf) return e.isZero ? -1 : e.pfn + Math.floor((va % PMD_SIZE) / PAGE_SIZE);
  const pte = e.ptes[Math.floor(va / PAGE_SIZE) & 511]!;
  if (pte === PTE_NONE || pte < PTE_ZERO) return -2; // none, or a swap entry (not present)
  if (pte === PTE_ZERO) return -1;
  return pfnOfPte(pte);
}

/** The frame of 4K page `first` (va's) where a 1G leaf maps va, else undefined (followPmdRange, pmdRangeResident). */
function pudLeafBase(pt: PageTable, va: number, first: number): number | undefined {
  if (!pt.puds.size) return undefined;
  const leaf = pt.puds.get(PageTable.pudKey(va));
  return leaf ? leaf.pfn + (first % (PUD_SIZE / PAGE_SIZE)) : undefined;
}

/** followPmdRange's answers: nothing maps the 2M; the huge zero page maps it; `out` holds each page's frame. */
export const PMD_RANGE_NONE = 0;
export const PMD_RANGE_ZERO = 1;
export const PMD_RANGE_PAGES = 2;

/**
 * followPage for the `n` 4K pages from va, none crossing a 2M boundary,
 * with one page-table lookup for all of them (a walk_page_range() over
 * one PMD slot): out[i] is the frame, -1 for a zero page or -2 when not
 * mapped. Returns PMD_RANGE_NONE, leaving `out` untouched, when nothing
 * maps the 2M (every page is -2), and PMD_RANGE_ZERO when the huge zero
 * page does (every page is -1): callers can treat such a range as one unit.
 * With n = 0 it only says what maps the 2M.
 */
export function followPmdRange(mm: MmStruct, va: number, n: number, out: Int32Array): number {
  const pt = mm.pgtable;
  const first = Math.floor(va / PAGE_SIZE);
  const pudBase = pudLeafBase(pt, va, first);
  if (pudBase !== undefined) {
    for (let i = 0; i < n; i++) out[i] = pudBase + i;
    return PMD_RANGE_PAGES;
  }
  const e = pt.pmdEntry(PageTable.pmdKey(va));
  if (e === undefined) return PMD_RANGE_NONE;
  if (e instanceof HugeLeaf) {
    if (e.isZero) {
      out.fill(-1, 0, n);
      return PMD_RANGE_ZERO;
    }
    for (let i = 0, base = e.pfn + (first & 511); i < n; i++) out[i] = base + i;
    return PMD_RANGE_PAGES;
  }
  const ptes = e.ptes;
  for (let i = 0, j = first & 511; i < n; i++, j++) {
    const pte = ptes[j]!;
    out[i] = pte === PTE_NONE || pte < PTE_ZERO ? -2 : pte === PTE_ZERO ? -1 : pfnOfPte(pte);
  }
  return PMD_RANGE_PAGES;
}

/**
 * How many of the `n` 4K pages from va (none crossing a 2M boundary) map a
 * frame: followPmdRange's count of out[i] >= 0 (the zero page, swap entries
 * and holes not counted), with its one page-table lookup and no per-page
 * output (smaps' Rss of one PMD slot, as smaps_pte_range counts it).
 */
export function pmdRangeResident(mm: MmStruct, va: number, n: number): number {
  const pt = mm.pgtable;
  const first = Math.floor(va / PAGE_SIZE);
  const pudBase = pudLeafBase(pt, va, first);
  if (pudBase !== undefined) return pudBase >= 0 ? n : Math.max(0, Math.min(n, pudBase + n));
  const e = pt.pmdEntry(PageTable.pmdKey(va));
  if (e === undefined) return 0;
  if (e instanceof HugeLeaf) return e.isZero ? 0 : n;
  const ptes = e.ptes;
  let c = 0;
  // A PTE maps a frame when it is above PTE_NONE (pteOf(pfn) = pfn + 1); PTE_ZERO and swap entries are below.
  for (let i = 0, j = first & 511; i < n; i++, j++) if (ptes[j]! > PTE_NONE) c++;
  return c;
}

/** Size of the leaf found by the last translate(): PAGE_SIZE, PMD_SIZE, PUD_SIZE, or 0. */
export let translatedSize = 0;
/** The PTE table holding the entry the last translate() found when it maps a frame at 4K (not the zero page), else null. */
export let translatedTable: PteTable | null = null;

/**
 * followPage and mappingSize in one page-table walk, for the workload
 * engine's hot loop: returns the frame (or -1 for a zero page, -2 when not
 * mapped) and leaves the leaf size in `translatedSize`.
 */
export function translate(mm: MmStruct, va: number): number {
  const pt = mm.pgtable;
  translatedTable = null;
  if (pt.puds.size) {
    const leaf = pt.puds.get(PageTable.pudKey(va));
    if (leaf) {
      translatedSize = PUD_SIZE;
      return leaf.pfn + Math.floor((va % PUD_SIZE) / PAGE_SIZE);
    }
  }
  const e = pt.pmdEntry(PageTable.pmdKey(va));
  if (e === undefined) {
    translatedSize = 0;
    return -2;
  }
  if (e instanceof HugeLeaf) {
    translatedSize = PMD_SIZE;
    return e.isZero ? -1 : e.pfn + Math.floor((va % PMD_SIZE) / PAGE_SIZE);
  }
  const pte = e.ptes[(va / PAGE_SIZE) & 511]!;
  if (pte === PTE_NONE || pte < PTE_ZERO) {
    translatedSize = 0;
    return -2;
  }
  translatedSize = PAGE_SIZE;
  if (pte === PTE_ZERO) return -1;
  translatedTable = e;
  return pte - 1;
}

/** Size of the leaf mapping va: PAGE_SIZE, PMD_SIZE or PUD_SIZE, 0 if nothing maps it. */
export function mappingSize(mm: MmStruct, va: number): number {
  const pt = mm.pgtable;
  if (pt.puds.size && pt.puds.get(PageTable.pudKey(va))) return PUD_SIZE;
  const e = pt.pmds.get(PageTable.pmdKey(va));
  if (e === undefined) return 0;
  if (e instanceof HugeLeaf) return PMD_SIZE;
  const pte = e.ptes[(va / PAGE_SIZE) & 511]!;
  return pte === PTE_NONE || pte < PTE_ZERO ? 0 : PAGE_SIZE;
}

export interface AccessResult {
  /** SIGKILL: the OOM killer killed the process during the access (no `at`). */
  signal?: 'SIGSEGV' | 'SIGBUS' | 'SIGKILL';
  at?: number;
  /** The access blocked in a userfault at this address (it resumes when woken). */
  blocked?: number;
  faults: number;
}

export function vmaAllows(vma: Vma, write: boolean): boolean {
  return write ? (vma.flags & VM.WRITE) !== 0 : (vma.flags & (VM.READ | VM.WRITE | VM.EXEC)) !== 0;
}

/**
 * A load by `thread` from the page at va whose PTE is none in a PTE table
 * that exists, in a private anonymous VMA (no file, not hugetlb, no
 * userfaultfd): do_anonymous_page's read fault, which maps the shared zero
 * page (the PTE becomes PTE_ZERO). What userAccess(k, thread, va, 1, 1,
 * false, 0) does there (accessPtes' read fault), without the walk: the
 * fault counted and the PTE set. Returns the fault's time for the caller to
 * charge, or -1, doing nothing, when va is not that case (the caller makes
 * the access). A migration thread reading never-backed pages in a run.
 */
export function readFaultNonePte(k: Kernel, thread: Thread, va: number): number {
  const mm = thread.process.mm;
  if (thread.process.exited) return -1;
  const vma = mm.vmaAt(va);
  if (!vma || !vmaAllows(vma, false) || vma.file || vma.isHugetlb() || vma.flags & (VM.UFFD_MISSING | VM.UFFD_WP)) return -1;
  const t = mm.pgtable.pmds.get(Math.floor(va / PMD_SIZE));
  if (!(t instanceof PteTable)) return -1;
  const i = (va / PAGE_SIZE) & 511;
  if (t.ptes[i] !== PTE_NONE) return -1;
  k.vmstat.events.pgfault++;
  t.ptes[i] = PTE_ZERO;
  t.used++;
  return 0 + k.hot.faultRead; // accessPtes' cost, summed from 0
}

/**
 * A thread's loads or stores, one byte every `stride` bytes over
 * [start, start + len): faults as the hardware would, writes `fill` into
 * the page contents, and reads the first byte of each page into `read`
 * when given. Stops at the first signal, as the real access would.
 */
export function userAccess(
  k: Kernel,
  thread: Thread,
  start: number,
  len: number,
  stride: number,
  write: boolean,
  fill: number,
  read?: (va: number, byte: number) => void,
): AccessResult {
  const mm = thread.process.mm;
  const res: AccessResult = { faults: 0 };
  if (thread.process.exited) return { faults: 0, signal: 'SIGKILL' }; // killed (OOM): its threads run no more
  const end = start + len;
  let va = start;
  while (va < end) {
    const vma = mm.vmaAt(va) ?? expandStack(k, mm, va);
    if (!vma || !vmaAllows(vma, write)) {
      k.vmstat.events.pgfault++;
      return { ...res, signal: 'SIGSEGV', at: va };
    }
    const stop = Math.min(vma.end, end);
    const fast = !vma.file && !vma.isHugetlb() && !(vma.flags & (VM.UFFD_MISSING | VM.UFFD_WP));
    while (va < stop) {
      if (fast) {
        // Fast path: walk one PTE table directly.
        const key = Math.floor(va / PMD_SIZE);
        const t = mm.pgtable.pmds.get(key);
        if (t instanceof PteTable) {
          va = accessPtes(k, mm, vma, t, va, Math.min(stop, (key + 1) * PMD_SIZE), stride, write, fill, thread, res, read);
          if (res.signal) return res;
          continue;
        }
      }
      let pfn = followPage(mm, va);
      // A write may fault twice: a page allocated where a uffd-wp marker was keeps the bit, and faults again.
      while (
        pfn === -2 ||
        (write &&
          (pfn === -1 ||
            (vma.flags & VM.UFFD_WP && mm.uffdWp.has(Math.floor(va / PAGE_SIZE))) ||
            (pfn >= 0 && mm.cowPossible && writeFaults(k, vma, pfn))))
      ) {
        const r = handleMmFault(k, mm, vma, va, write, thread);
        res.faults++;
        if (r === FAULT_USERFAULT) return { ...res, blocked: va };
        if (thread.process.exited) return { ...res, signal: 'SIGKILL' }; // OOM-killed in the fault: no address
        if (r !== FAULT_OK) return { ...res, signal: r === FAULT_SIGSEGV ? 'SIGSEGV' : 'SIGBUS', at: va };
        if (k.events.size) k.runDueEvents();
        pfn = followPage(mm, va);
      }
      if (write) writeByte(k, pfn, va, fill);
      else {
        if (pfn >= 0) k.mem.markYoung(pfn);
        if (read) read(va, pfn < 0 ? 0 : k.mem.token(pfn) & 0xff);
      }
      va += stride;
    }
  }
  return res;
}

/**
 * A user fault below a VM_GROWSDOWN VMA grows it (expand_downwards): not
 * into the stack guard gap above an accessible non-stack VMA, not beyond
 * RLIMIT_STACK, and with the growth committed like any accounted memory.
 * Returns the grown VMA, or undefined (the access gets SIGSEGV). GUP
 * (MADV_POPULATE_*) never grows stacks since Linux 6.5.
 */
export function expandStack(k: Kernel, mm: MmStruct, va: number): Vma | undefined {
  const vma = mm.findVma(va);
  if (!vma || !(vma.flags & VM.GROWSDOWN) || vma.start <= va) return undefined;
  const address = alignDown(va, PAGE_SIZE);
  if (address < MMAP_MIN_ADDR) return undefined;
  const prev = mm.prevVma(vma);
  if (prev && prev.end > address) return undefined;
  if (prev && !(prev.flags & VM.GROWSDOWN) && vmaIsAccessible(prev) && address - prev.end < STACK_GUARD_GAP) return undefined;
  const grow = (vma.start - address) / PAGE_SIZE;
  if (grow > vma.pgoff) return undefined;
  if (vma.end - address > RLIMIT_STACK) return undefined;
  if (vma.flags & VM.ACCOUNT) {
    if (!vmEnoughMemory(k, grow)) return undefined;
    k.committedPages += grow;
  }
  vma.start = address;
  vma.pgoff -= grow;
  mm.vmaAdjusted(vma); // the gap below it shrank
  return vma;
}

/** Store `fill` at va in frame pfn: the page's first byte changes only at offset 0. */
function writeByte(k: Kernel, pfn: number, va: number, fill: number): void {
  k.writeSerial = (k.writeSerial + 1) & 0xffffff;
  k.mem.storeByte(pfn, k.writeSerial, fill, va % PAGE_SIZE === 0);
}

/** A fault that could not get memory: SIGKILL if the OOM killer chose the process (no address), else SIGBUS at va. */
function oomSignal(thread: Thread, res: AccessResult, va: number): void {
  if (thread.process.exited) res.signal = 'SIGKILL';
  else {
    res.signal = 'SIGBUS';
    res.at = va;
  }
}

/**
 * Accesses inside one PTE table of a private anonymous VMA, faulting
 * missing pages in place (the common case: do_anonymous_page and the
 * zero-page COW). Returns the next address.
 */
function accessPtes(
  k: Kernel,
  mm: MmStruct,
  vma: Vma,
  t: PteTable,
  va: number,
  stop: number,
  stride: number,
  write: boolean,
  fill: number,
  thread: Thread,
  res: AccessResult,
  read?: (va: number, byte: number) => void,
): number {
  const ptes = t.ptes;
  const m = k.mem;
  let cost = 0; // charged in one go: time is integer ns, costs are not
  // Background work due while this loop faults pages in runs between faults.
  let nextEvent = k.events.size ? (k.events.peekTime() ?? Infinity) : Infinity;
  // Only an mm that forked or maps file pages has pages it may not write in place (do_wp_page).
  const cow = write && mm.cowPossible;
  // A write that starts each page it touches (stride 4K from a page boundary) and has no bandwidth model to charge
  // may fault a run of none PTEs in at once (faultAnonRun); otherwise, and where that declines, page by page.
  const runs = write && stride === PAGE_SIZE && va % PAGE_SIZE === 0 && !k.membw;
  for (; va < stop; va += stride) {
    const i = (va / PAGE_SIZE) & 511;
    let pte = ptes[i]!;
    if (pte < PTE_ZERO) {
      // A swapped-out page: do_swap_page maps it (writable: the mm is its only user), then the access proceeds.
      k.charge(cost);
      cost = 0;
      k.vmstat.events.pgfault++;
      res.faults++;
      k.current = thread;
      if (!doSwapPage(k, mm, vma, t, i, va, write, k.cpuToNode(thread.cpu))) {
        oomSignal(thread, res, va);
        return va;
      }
      pte = ptes[i]!;
    }
    if (cow && pte > 0 && writeFaults(k, vma, pte - 1)) {
      // A page shared with a forked process, or a page-cache page: do_wp_page copies or reuses it in this PTE.
      k.charge(cost);
      cost = 0;
      res.faults++; // handleMmFault counts pgfault
      if (handleMmFault(k, mm, vma, va, true, thread) !== FAULT_OK) {
        res.signal = 'SIGBUS';
        res.at = va;
        return va;
      }
      pte = ptes[i]!;
    }
    if (pte <= 0 && (write || pte === PTE_NONE)) {
      k.vmstat.events.pgfault++;
      res.faults++;
      if (!write) {
        pte = ptes[i] = PTE_ZERO;
        t.used++;
        cost += k.hot.faultRead;
        if (read) read(va, 0);
        continue;
      }
      if (runs && pte === PTE_NONE && i < 511 && ptes[i + 1] === PTE_NONE && va + PAGE_SIZE < stop) {
        const n = faultAnonRun(k, mm, vma, t, va, stop, thread, fill, cost, nextEvent);
        if (n > 0) {
          k.vmstat.events.pgfault += n - 1; // this one is counted above
          res.faults += n - 1;
          for (let j = 0; j < n; j++) cost += k.hot.faultWrite; // the same float sum as n faults one by one
          va += (n - 1) * PAGE_SIZE;
          continue;
        }
      }
      const pfn = newAnonPage(k, mm, vma, va, thread);
      if (pfn < 0) {
        k.charge(cost);
        oomSignal(thread, res, va);
        return va;
      }
      if (pte === PTE_NONE) t.used++;
      pte = ptes[i] = pteOf(pfn);
      // The page's clear_page moves bytes on its node: with a bandwidth model it is registered there (and waits for
      // the node's load), as handleMmFault's do_anonymous_page does.
      if (k.membw) k.chargeMem(k.hot.faultWrite, k.hot.zero4k, -1, k.phys.nodeOfPfn(pfn), PAGE_SIZE, k.cpuToNode(thread.cpu));
      else cost += k.hot.faultWrite;
      if (k.clock.now() + cost >= nextEvent) {
        k.charge(cost);
        cost = 0;
        k.runDueEvents();
        nextEvent = k.events.size ? (k.events.peekTime() ?? Infinity) : Infinity;
        // Background work (khugepaged) may have replaced this PTE table: finish
        // this access through it, then let the caller walk the new one.
        if (mm.pgtable.pmds.get(Math.floor(va / PMD_SIZE)) !== t) {
          const now = followPage(mm, va);
          if (write && now >= 0) {
            k.writeSerial = (k.writeSerial + 1) & 0xffffff;
            m.storeByte(now, k.writeSerial, fill, va % PAGE_SIZE === 0);
          }
          return va + stride;
        }
      }
    }
    if (write) {
      k.writeSerial = (k.writeSerial + 1) & 0xffffff;
      m.storeByte(pte - 1, k.writeSerial, fill, va % PAGE_SIZE === 0);
    } else if (pte > 0) {
      pteMkyoung(t, i); // the load sets the PTE's accessed bit
      if (read) read(va, m.token(pte - 1) & 0xff);
    } else if (read) read(va, 0);
  }
  k.charge(cost);
  return va;
}

/**
 * accessPtes' write faults over a run of none PTEs of t from va (page
 * aligned, each page written at its first byte): the pages n faults one by
 * one would install (do_anonymous_page: newAnonPage, the PTE, then the
 * write), taken in one go by installAnonPages. The run ends at the table's
 * end, at `stop`, at the first PTE that is not none, and before the fault
 * whose cost would reach the next pending event (the per-page loop runs
 * events after that fault; the run leaves it to the loop). Returns the
 * pages installed and written, or 0 with nothing done.
 */
function faultAnonRun(
  k: Kernel,
  mm: MmStruct,
  vma: Vma,
  t: PteTable,
  va: number,
  stop: number,
  thread: Thread,
  fill: number,
  cost: number,
  nextEvent: number,
): number {
  const ptes = t.ptes;
  const i = (va / PAGE_SIZE) & 511;
  const max = Math.min(512 - i, Math.ceil((stop - va) / PAGE_SIZE));
  const now = k.clock.now();
  let n = 0;
  while (n < max && ptes[i + n] === PTE_NONE) {
    cost += k.hot.faultWrite;
    if (now + cost >= nextEvent) break;
    n++;
  }
  if (n < 2) return 0;
  return installAnonPages(k, mm, vma, t, va, n, thread, fill);
}

// --- unmapping ------------------------------------------------------------------

export interface ZapStats {
  pages: number;
  hugePmds: number;
}

/**
 * zap_page_range_single / unmap_vmas over [start, end) of one VMA.
 * `dontneed` restores hugetlb reservations and frees page-table pages that
 * became empty (CONFIG_PT_RECLAIM), as MADV_DONTNEED does.
 */
export function zapRange(k: Kernel, mm: MmStruct, vma: Vma, start: number, end: number, dontneed: boolean, nid: number): ZapStats {
  const stats: ZapStats = { pages: 0, hugePmds: 0 };
  // Zapping anonymous memory drops its uffd-wp bits (pte_install_uffd_wp_if_needed keeps markers for files only);
  // poison markers go everywhere.
  if (vma.isAnonymous()) clearUffdWp(mm, start, end);
  clearMarkers(mm.uffdPoison, start, end);
  if (vma.isHugetlb()) {
    zapHugetlb(k, mm, vma, start, end, dontneed, stats);
    return stats;
  }
  const m = k.mem;
  const touched = new Set<number>();
  const pt = mm.pgtable;
  // PMD slots not in use (and whole 1G/512G ranges without any) hold nothing to zap: skipped.
  for (let va = pt.skipNone(start, end, PAGE_SIZE); va < end;) {
    const key = PageTable.pmdKey(va);
    const pmdStart = key * PMD_SIZE;
    const segEnd = Math.min(end, pmdStart + PMD_SIZE);
    let e = mm.pgtable.pmds.get(key);
    if (e instanceof HugeLeaf) {
      if (va === pmdStart && segEnd === pmdStart + PMD_SIZE) {
        mm.pgtable.pmds.delete(key);
        if (!e.isZero) {
          m.addEntireMapcount(e.pfn, -1);
          mm.rssAnon -= HPAGE_PMD_NR;
          stats.hugePmds++;
          folioUnmappedSome(k, e.pfn);
        }
        va = pt.skipNone(segEnd, end, PAGE_SIZE);
        continue;
      }
      e = splitHugePmd(k, mm, pmdStart, nid);
    }
    if (e) {
      const t = e;
      const i0 = (va - pmdStart) / PAGE_SIZE;
      const i1 = (segEnd - pmdStart) / PAGE_SIZE;
      for (let i = i0; i < i1; i++) {
        const pte = t.ptes[i]!;
        if (pte === PTE_NONE) continue;
        t.ptes[i] = PTE_NONE;
        t.used--;
        if (pte === PTE_ZERO) continue;
        if (pte < PTE_ZERO) {
          // A swap entry: free_swap_and_cache (and MM_SWAPENTS drops).
          mm.swapents--;
          freeSwapAndCache(k, swpEntryOfPte(pte));
          continue;
        }
        const pfn = pfnOfPte(pte);
        m.addMapcount(pfn, -1);
        stats.pages++;
        const f = m.flags(pfn);
        if (f & PG.shmem) {
          if (f & PG.diskFile) mm.rssFile--;
          else mm.rssShmem--;
          continue;
        }
        mm.rssAnon--;
        if (f & (PG.head | PG.tail)) {
          touched.add(pfn - (pfn % HPAGE_PMD_NR)); // anon THPs are order-9, naturally aligned
        } else if (m.mapcount(pfn) === 0) k.freeUserPages(pfn, 0);
      }
      if (t.used === 0 && dontneed) {
        mm.pgtable.pmds.delete(key);
        freePteTable(k, mm, t);
      }
    }
    va = pt.skipNone(segEnd, end, PAGE_SIZE);
  }
  for (const head of touched) folioUnmappedSome(k, head);
  return stats;
}

function zapHugetlb(k: Kernel, mm: MmStruct, vma: Vma, start: number, end: number, dontneed: boolean, stats: ZapStats): void {
  const h = k.hugetlb.byShift(vma.hugeShift)!;
  const hsize = h.size;
  const pud = h.shift === PUD_SHIFT;
  const map = pud ? mm.pgtable.puds : mm.pgtable.pmds;
  const shared = (vma.flags & VM.MAYSHARE) !== 0;
  // Huge pages not in the page table are skipped, unless pages mapped in parts (mm.hgm) may be among them.
  const pt = mm.pgtable;
  const walk = mm.hgm.size === 0;
  const next = (a: number): number => (walk ? pt.skipNone(a, end, hsize) : a);
  for (let haddr = next(start); haddr < end; haddr = next(haddr + hsize)) {
    const key = pud ? PageTable.pudKey(haddr) : PageTable.pmdKey(haddr);
    const leaf = map.get(key) as HugeLeaf | undefined;
    const part = leaf ? undefined : mm.hgm.get(haddr);
    let pfn: number;
    if (leaf) {
      map.delete(key);
      k.mem.addEntireMapcount(leaf.pfn, -1);
      pfn = leaf.pfn;
    } else if (part) pfn = hgmZap(k, mm, part);
    else continue;
    stats.hugePmds++;
    if (shared) continue; // the page stays in the hugetlbfs file
    // A private mapping's page that a forked process still maps, or a hugetlbfs file's page mapped privately, stays.
    if (!(k.mem.flags(pfn) & PG.anon) || k.mem.entireMapcount(pfn) > 0) continue;
    const idx = (vma.pgoff * PAGE_SIZE + (haddr - vma.start)) / hsize;
    const restore = dontneed && h.surplus === 0 && vma.resv !== null;
    if (restore) vma.resv!.consumed.delete(idx);
    k.hugetlb.freeHugePage(h, pfn, restore);
  }
}

// --- write faults on present pages: copy-on-write (do_wp_page) ---------------------

/**
 * Whether a write to frame pfn, mapped in vma, faults first (a PTE Linux
 * keeps write-protected): in a private mapping, unless the page is
 * anonymous and this mm's alone (PageAnonExclusive); in a shared mapping,
 * a disk-file page not yet dirtied (page_mkwrite). memtwin has no PTE write
 * bit, so this is read off the page; it is asked only of mms with
 * cowPossible.
 */
export function writeFaults(k: Kernel, vma: Vma, pfn: number): boolean {
  const m = k.mem;
  let f = m.flags(pfn);
  if (vma.flags & VM.MAYSHARE) return (f & (PG.diskFile | PG.dirty)) === PG.diskFile;
  // A hugetlb page keeps its flags in its head.
  if (f & PG.hugetlb && f & PG.tail) f = m.flags(pfn - (pfn % (vma.hugePageSize() / PAGE_SIZE)));
  return (f & (PG.anon | PG.anonExclusive)) !== (PG.anon | PG.anonExclusive);
}

/**
 * do_wp_page for the present PTE at slot i of t (va): a shared mapping's
 * disk page is dirtied (wp_page_shared); a private mapping's anonymous page
 * is reused if this mm is its only user (wp_can_reuse_anon_folio), and
 * copied otherwise (wp_page_copy), as is a page-cache page.
 */
function doWpPage(k: Kernel, mm: MmStruct, vma: Vma, t: PteTable, i: number, va: number, thread: Thread): FaultResult {
  const m = k.mem;
  const pfn = pfnOfPte(t.ptes[i]!);
  if (vma.flags & VM.MAYSHARE) {
    m.addFlags(pfn, PG.dirty); // page_mkwrite: the filesystem will write it back
    k.charge(k.costs.ns('fault_wp_reuse_4k'));
    return FAULT_OK;
  }
  const f = m.flags(pfn);
  if (f & PG.anon && (f & PG.anonExclusive || wpCanReuseAnonFolio(k, mm, pfn))) {
    m.addFlags(pfn, PG.anonExclusive); // wp_page_reuse
    k.charge(k.costs.ns('fault_wp_reuse_4k'));
    return FAULT_OK;
  }
  return wpPageCopy(k, mm, vma, t, i, va, thread, pfn);
}

/**
 * wp_can_reuse_anon_folio: a small folio whose only reference is this
 * mapping (no pins or swap cache are modelled, so its refcount is its
 * mapcount); a large folio all of whose mappings are this mm's
 * (__wp_can_reuse_large_anon_folio; Linux tracks that with the folio's
 * two mm ids, exact for two mms), unless only one page of it is mapped,
 * when copying frees it.
 */
function wpCanReuseAnonFolio(k: Kernel, mm: MmStruct, pfn: number): boolean {
  const m = k.mem;
  if (!(m.flags(pfn) & (PG.head | PG.tail))) {
    if (m.mapcount(pfn) !== 1) return false;
    // The swap cache's reference: dropped if no PTE holds the page's swap entry any more (folio_free_swap), else
    // another process's swap PTE still reads this page's content from it: copy.
    return !(m.flags(pfn) & PG.swapcache) || folioFreeSwap(k, pfn);
  }
  const head = pfn - (pfn % HPAGE_PMD_NR);
  if (folioMapped(k, head, HPAGE_PMD_NR) <= 1) return false;
  return !folioMappedByOtherMm(k, head, HPAGE_PMD_NR, mm);
}

/**
 * wp_page_copy: a new anonymous page takes the contents of `old` (a page
 * shared with another process, or a page-cache page) and replaces it in
 * this PTE; the old page loses this mapping (and is freed if that was its
 * last, or, as part of a THP, queued for a deferred split if it was the
 * folio's last page this way).
 */
function wpPageCopy(k: Kernel, mm: MmStruct, vma: Vma, t: PteTable, i: number, va: number, thread: Thread, old: number): FaultResult {
  const m = k.mem;
  const pfn = newAnonPage(k, mm, vma, va, thread); // counts MM_ANONPAGES
  if (pfn < 0) return FAULT_OOM;
  // newAnonPage charged the copy to the faulting mm's memory cgroup (wp_page_copy's mem_cgroup_charge).
  m.setToken(pfn, m.token(old));
  if (m.flags(old) & PG.nonzero) m.addFlags(pfn, PG.nonzero);
  t.ptes[i] = pteOf(pfn);
  m.addMapcount(old, -1);
  const f = m.flags(old);
  if (f & PG.anon) mm.rssAnon--;
  else if (f & PG.diskFile) mm.rssFile--;
  else mm.rssShmem--;
  if (f & PG.anon) {
    // The last mapping gone: freed, unless the swap cache holds it (it stays there, as Linux's folio_put leaves
    // the cache's reference, until reclaim or a swap-in of another process's swap PTE finds it).
    if (f & (PG.head | PG.tail)) folioUnmappedSome(k, old - (old % HPAGE_PMD_NR));
    else if (m.mapcount(old) === 0 && !(f & PG.swapcache)) k.freeUserPages(old, 0);
  }
  k.chargeMem(k.costs.ns('fault_cow_4k'), k.hot.copy4k, k.phys.nodeOfPfn(old), k.phys.nodeOfPfn(pfn), PAGE_SIZE, k.cpuToNode(thread.cpu));
  return FAULT_OK;
}

/**
 * do_huge_pmd_wp_page: a write to a PMD-mapped THP that is not this mm's
 * alone. Reused whole when this PMD is its only mapping; otherwise the PMD
 * is split and the written 4K page copied (the fallback to do_wp_page).
 */
function doHugePmdWpPage(k: Kernel, mm: MmStruct, vma: Vma, va: number, leaf: HugeLeaf, thread: Thread): FaultResult {
  const m = k.mem;
  const head = leaf.pfn;
  if (folioMapped(k, head, HPAGE_PMD_NR) === 1) {
    for (let j = 0; j < HPAGE_PMD_NR; j++) m.addFlags(head + j, PG.anonExclusive);
    k.charge(k.costs.ns('fault_wp_reuse_4k'));
    return FAULT_OK;
  }
  const t = splitHugePmd(k, mm, alignDown(va, PMD_SIZE), k.cpuToNode(thread.cpu));
  return doWpPage(k, mm, vma, t, Math.floor(va / PAGE_SIZE) & 511, va, thread);
}

/**
 * hugetlb_wp for a private hugetlb mapping: the page is reused if this is
 * its only mapping and it is anonymous; otherwise a new huge page is taken
 * outside any reservation (the child has none; the owner does not use its
 * own for a copy) and the contents copied. If none is free, the owner of
 * the mapping's reservations takes the page back from the other processes
 * (unmap_ref_private: their VMA then gets SIGBUS on any fault there) and
 * reuses it; anyone else gets SIGBUS.
 */
function hugetlbWp(k: Kernel, mm: MmStruct, vma: Vma, va: number, thread: Thread): FaultResult {
  const m = k.mem;
  const h = k.hugetlb.byShift(vma.hugeShift)!;
  const n = 2 ** h.order;
  const haddr = alignDown(va, h.size);
  const pud = h.shift === PUD_SHIFT;
  const map = pud ? mm.pgtable.puds : mm.pgtable.pmds;
  const leaf = map.get(pud ? PageTable.pudKey(haddr) : PageTable.pmdKey(haddr)) as HugeLeaf;
  const old = leaf.pfn;
  const anon = (m.flags(old) & PG.anon) !== 0;
  if (anon && m.entireMapcount(old) === 1) {
    m.addFlags(old, PG.anonExclusive);
    return FAULT_OK;
  }
  const owner = vma.resv !== null && anon; // HPAGE_RESV_OWNER and a consumed reservation: cow_from_owner
  const pl = policyPlacement(k, thread, vma, haddr, h.order);
  const pfn = k.hugetlb.allocForFault(h, pl.nid, false, pl.nodemask);
  if (pfn < 0) {
    if (!owner) return FAULT_SIGBUS;
    unmapRefPrivate(k, mm, vma, old, haddr);
    m.addFlags(old, PG.anonExclusive);
    return FAULT_OK;
  }
  accountPolicyAlloc(k, pl, pfn, h.order, k.cpuToNode(thread.cpu));
  anonVmaPrepare(k, mm, vma);
  for (let j = 0; j < n; j++) {
    m.setToken(pfn + j, m.token(old + j));
    m.setOwner(pfn + j, mm.id);
    m.setIndex(pfn + j, haddr / PAGE_SIZE + j);
    if (m.flags(old + j) & PG.nonzero) m.addFlags(pfn + j, PG.nonzero);
  }
  m.addFlags(pfn, PG.anon | PG.anonExclusive);
  m.addEntireMapcount(pfn, 1);
  leaf.pfn = pfn;
  m.addEntireMapcount(old, -1);
  // The old page: freed with its last mapping unless the file holds it (a private mapping of a hugetlbfs file).
  if (anon && m.entireMapcount(old) === 0) k.hugetlb.freeHugePage(h, old, false);
  k.chargeMem(n * k.costs.ns('memcpy_4k'), n * k.hot.copy4k, k.phys.nodeOfPfn(old), k.phys.nodeOfPfn(pfn), h.size, k.cpuToNode(thread.cpu));
  return FAULT_OK;
}

/**
 * unmap_ref_private: the owner of a private hugetlb mapping's reservations
 * could not copy a page it shares with forked processes, so it unmaps the
 * page from every other VMA of the mapping's file that maps it (those VMAs
 * are marked HPAGE_RESV_UNMAPPED: their next fault there is SIGBUS).
 */
function unmapRefPrivate(k: Kernel, mm: MmStruct, vma: Vma, pfn: number, haddr: number): void {
  const pud = vma.hugePageSize() === PUD_SIZE;
  for (const p of k.processes.values())
    for (const v of p.mm.vmas) {
      if (v.file !== vma.file || (p.mm === mm && v === vma) || v.flags & VM.MAYSHARE || v.resv) continue;
      if (haddr < v.start || haddr >= v.end) continue;
      const map = pud ? p.mm.pgtable.puds : p.mm.pgtable.pmds;
      const key = pud ? PageTable.pudKey(haddr) : PageTable.pmdKey(haddr);
      const leaf = map.get(key) as HugeLeaf | undefined;
      if (!leaf || leaf.pfn !== pfn) continue;
      map.delete(key);
      k.mem.addEntireMapcount(pfn, -1);
      v.hugetlbResvUnmapped = true;
    }
}
