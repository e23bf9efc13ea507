/**
 * Collapsing 4K-mapped anonymous memory into THPs (mm/khugepaged.c): the
 * khugepaged kernel thread with its mm scan list, and MADV_COLLAPSE, which
 * runs the same scan and collapse synchronously for the caller.
 *
 * One 2M region is examined by scanPmd (hpage_collapse_scan_pmd): every PTE
 * is looked at; none or zero-page PTEs count against max_ptes_none and shared
 * pages against max_ptes_shared, but only for khugepaged (MADV_COLLAPSE
 * ignores both limits, unless madv-collapse-flags' MADV_F_COLLAPSE_LIMITS).
 * The node holding most of the small pages becomes the target node
 * (hpage_collapse_find_target_node). collapseHugePage allocates
 * a THP there (khugepaged: direct compaction and reclaim only with
 * khugepaged/defrag=1; MADV_COLLAPSE always, GFP_TRANSHUGE, unless one of
 * the proposals below is enabled), copies every present page into it
 * (content tokens carried over, missing pages zero-filled), frees the small
 * pages and the PTE table, and maps the THP with one PMD. Memory policies do
 * not steer the allocation, as in Linux.
 *
 * Linux 6.18 behaviour confirmed on the real kernel here: read-only PTEs and
 * zero-page PTEs collapse (there is no writability check any more); an
 * empty PMD (no PTE table) ends MADV_COLLAPSE with EINVAL before the regions
 * after it; a VMA with no 2M-aligned region, or never faulted (no anon_vma),
 * gives EINVAL; a range with no whole aligned region inside a suitable VMA
 * gives 0.
 *
 * MADV_COLLAPSE's allocation rule was argued over on linux-mm, and the
 * variants that were not merged are memtwin features, off by default
 * (madvCollapseControl): the VMA's fault-time gfp mask, khugepaged's defrag
 * knob, and process_madvise flags for the max_ptes_* limits and for direct
 * reclaim/compaction.
 *
 * Simplifications, and why they do not change the results memtwin reports:
 * - pte_young: every present PTE counts as referenced. Nothing clears
 *   accessed bits on a host without reclaim or idle-page tracking, so on the
 *   real kernel too every present page is young;
 * - pages are never locked, pinned or off the LRU when khugepaged looks at
 *   them (the simulator has no concurrent GUP), so the EAGAIN results other
 *   than a swap-in in flight (SCAN_PAGE_LOCK) do not arise;
 * - the PTE table is freed on collapse rather than deposited for a later
 *   split; the THP fault path does not deposit one either, so PageTables in
 *   meminfo stays consistent between the two.
 */
import type { Kernel } from './kernel.ts';
import type { MigrationBatch } from './migrate_entry.ts';
import { mappedShared } from './migrate.ts';
import { PG } from './page.ts';
import { MIGRATE_MOVABLE, WMARK_LOW, type AllocRequest } from './page_alloc.ts';
import { HugeLeaf, PageTable, PteTable, PTE_NONE, PTE_ZERO, VM, pfnOfPte, swpEntryOfPte, type MmStruct, type Vma } from './mm_types.ts';
import { HPAGE_PMD_NR, HPAGE_PMD_ORDER, MADV_F_PROPOSED, PAGE_SIZE, PMD_SIZE, alignDown, alignUp, neg, type SysRet } from './uapi.ts';
import { compactForOrder, wakeupKcompactd } from './compaction.ts';
import { freePteTable, hasPmdTable } from './memory.ts';
import { doSwapPage, swapCacheGetFolio, swapinReadahead } from './swap_state.ts';
import { folioUnmappedSome, prepAnonThp, thpGfp, thpVmaAllowable } from './huge_memory.ts';
import { nodeFilePages, tryToFreePages } from './vmscan.ts';
import { memcgCharge } from './memcontrol.ts';
import type { EventHandle } from '../sim/event_queue.ts';
import { UnmodelledError } from './errors.ts';

/** enum scan_result (mm/khugepaged.c), the subset an anonymous collapse can reach here. */
export const SCAN = {
  SCAN_FAIL: 'SCAN_FAIL',
  SCAN_SUCCEED: 'SCAN_SUCCEED',
  SCAN_PMD_NULL: 'SCAN_PMD_NULL',
  SCAN_PMD_NONE: 'SCAN_PMD_NONE',
  SCAN_PMD_MAPPED: 'SCAN_PMD_MAPPED',
  SCAN_PTE_NON_PRESENT: 'SCAN_PTE_NON_PRESENT',
  SCAN_EXCEED_NONE_PTE: 'SCAN_EXCEED_NONE_PTE',
  SCAN_EXCEED_SHARED_PTE: 'SCAN_EXCEED_SHARED_PTE',
  SCAN_EXCEED_SWAP_PTE: 'SCAN_EXCEED_SWAP_PTE',
  SCAN_PAGE_LOCK: 'SCAN_PAGE_LOCK',
  SCAN_LACK_REFERENCED_PAGE: 'SCAN_LACK_REFERENCED_PAGE',
  SCAN_PAGE_NULL: 'SCAN_PAGE_NULL',
  SCAN_PAGE_ANON: 'SCAN_PAGE_ANON',
  SCAN_VMA_CHECK: 'SCAN_VMA_CHECK',
  SCAN_ALLOC_HUGE_PAGE_FAIL: 'SCAN_ALLOC_HUGE_PAGE_FAIL',
  SCAN_CGROUP_CHARGE_FAIL: 'SCAN_CGROUP_CHARGE_FAIL',
} as const;
export type ScanResult = (typeof SCAN)[keyof typeof SCAN];

/** Results after which MADV_COLLAPSE goes on with the next region (the whitelist in madvise_collapse). */
const CONTINUE_AFTER = new Set<ScanResult>([
  SCAN.SCAN_PMD_NULL,
  SCAN.SCAN_PTE_NON_PRESENT,
  SCAN.SCAN_PAGE_NULL,
  SCAN.SCAN_LACK_REFERENCED_PAGE,
  SCAN.SCAN_PAGE_LOCK,
]);

/** madvise_collapse_errno. */
export function collapseErrno(r: ScanResult): number {
  switch (r) {
    case SCAN.SCAN_ALLOC_HUGE_PAGE_FAIL:
      return neg('ENOMEM');
    case SCAN.SCAN_CGROUP_CHARGE_FAIL:
      return neg('EBUSY');
    case SCAN.SCAN_EXCEED_NONE_PTE:
      return neg('EBUSY');
    case SCAN.SCAN_PAGE_LOCK: // "resource temporarily unavailable": trying again may succeed
      return neg('EAGAIN');
    default:
      return neg('EINVAL');
  }
}

/**
 * The reclaim part of the gfp mask a collapse allocates with: `direct` is
 * __GFP_DIRECT_RECLAIM (GFP_TRANSHUGE: direct compaction and reclaim in the
 * caller), without it GFP_TRANSHUGE_LIGHT (the free lists only);
 * `kcompactd` wakes kcompactd when that fails (defrag=defer).
 */
export interface CollapseGfp {
  direct: boolean;
  kcompactd: boolean;
}

/** struct collapse_control. */
export interface CollapseControl {
  isKhugepaged: boolean;
  /** Small pages found per node in the region being scanned. */
  nodeLoad: number[];
  /** PTEs looked at, for khugepaged's CPU time. */
  scannedPtes: number;
  /** max_ptes_none/swap/shared apply: khugepaged; MADV_COLLAPSE only with MADV_F_COLLAPSE_LIMITS. */
  enforceLimits: boolean;
  /** How the huge page is allocated; null: khugepaged's defrag knob, read when it allocates. */
  gfp: CollapseGfp | null;
}

export function newCollapseControl(k: Kernel, isKhugepaged: boolean): CollapseControl {
  return {
    isKhugepaged,
    nodeLoad: new Array<number>(k.nrNodes).fill(0),
    scannedPtes: 0,
    enforceLimits: isKhugepaged,
    gfp: isKhugepaged ? null : GFP_TRANSHUGE,
  };
}

const GFP_TRANSHUGE: CollapseGfp = { direct: true, kcompactd: false };
const GFP_TRANSHUGE_LIGHT: CollapseGfp = { direct: false, kcompactd: false };

/** alloc_hugepage_khugepaged_gfpmask: GFP_TRANSHUGE with khugepaged/defrag=1, else GFP_TRANSHUGE_LIGHT. */
function khugepagedGfp(k: Kernel): CollapseGfp {
  return k.thp.khugepaged.defrag === 1 ? GFP_TRANSHUGE : GFP_TRANSHUGE_LIGHT;
}

/** The process_madvise flags madv-collapse-flags adds. */
export const MADV_F_COLLAPSE_MASK = MADV_F_PROPOSED.MADV_F_COLLAPSE_LIMITS | MADV_F_PROPOSED.MADV_F_COLLAPSE_DEFRAG;

/**
 * The collapse_control of one MADV_COLLAPSE on `vma`: Linux 6.18's merged
 * rule (GFP_TRANSHUGE whatever the sysfs defrag says, max_ptes_* ignored),
 * or, while a proposal is enabled, its rule. `flags` is process_madvise's
 * flags argument, null for madvise(2), which has none.
 *
 * - `madv-collapse-flags` (the RFC, Zach O'Keefe, "mm: userspace hugepage
 *   collapse", lkml 20220308213417.1407042-1-zokeefe@google.com; the plan
 *   Zach restated in January 2024: "pick a sane default, and implement
 *   options in flags down the line", answering Lance Yang's
 *   MADV_TRY_COLLAPSE / MADV_F_COLLAPSE_LIGHT, lkml
 *   20240119115104.75456-1-ioworker0@gmail.com): a process_madvise call
 *   chooses with its flags. MADV_F_COLLAPSE_LIMITS honours max_ptes_none,
 *   max_ptes_swap and max_ptes_shared as khugepaged does (a region over one
 *   ends the call: EBUSY for none, EINVAL for swap and shared, as
 *   madvise_collapse_errno maps them); MADV_F_COLLAPSE_DEFRAG allows direct
 *   reclaim and compaction; without it the allocation is
 *   GFP_TRANSHUGE_LIGHT and fails at once (ENOMEM), as MADV_F_COLLAPSE_LIGHT
 *   proposed. madvise(2) keeps the merged rule.
 * - `madv-collapse-vma-gfp` (the series before v6, which allocated as a
 *   fault in the VMA would): vma_thp_gfp_mask, the sysfs defrag mode and
 *   the VMA's VM_HUGEPAGE (thpGfp).
 * - `madv-collapse-khugepaged-defrag`: khugepaged's own mask,
 *   khugepaged/defrag (1: GFP_TRANSHUGE, 0: GFP_TRANSHUGE_LIGHT).
 *
 * Enabled together, the first in that order that applies decides.
 */
export function madvCollapseControl(k: Kernel, vma: Vma, flags: number | null): CollapseControl {
  const cc = newCollapseControl(k, false);
  const on = k.thp.collapseProposals;
  if (on['madv-collapse-flags'] && flags !== null) {
    cc.enforceLimits = (flags & MADV_F_PROPOSED.MADV_F_COLLAPSE_LIMITS) !== 0;
    cc.gfp = flags & MADV_F_PROPOSED.MADV_F_COLLAPSE_DEFRAG ? GFP_TRANSHUGE : GFP_TRANSHUGE_LIGHT;
  } else if (on['madv-collapse-vma-gfp']) cc.gfp = thpGfp(k, vma);
  else if (on['madv-collapse-khugepaged-defrag']) cc.gfp = khugepagedGfp(k);
  return cc;
}

/**
 * thp_vma_allowable_order outside the fault path: TVA_KHUGEPAGED enforces
 * the sysfs mode, TVA_FORCED_COLLAPSE (MADV_COLLAPSE) does not; both need an
 * anon_vma and a 2M-aligned region inside the VMA.
 */
export function collapseAllowed(k: Kernel, vma: Vma, forced: boolean): boolean {
  return vma.anonVma !== 0 && thpVmaAllowable(k, vma, { smaps: true, ignoreSysfs: forced });
}

/** find_pmd_or_thp_or_none for the anonymous page table. */
function findPmd(mm: MmStruct, haddr: number): ScanResult | PteTable {
  const key = PageTable.pmdKey(haddr);
  const e = mm.pgtable.pmds.get(key);
  if (e instanceof HugeLeaf) return SCAN.SCAN_PMD_MAPPED;
  if (e) return e;
  // pmd_none, or no PMD table at all for this 1G range (mm_find_pmd finds nothing).
  return hasPmdTable(mm, haddr) ? SCAN.SCAN_PMD_NONE : SCAN.SCAN_PMD_NULL;
}

/**
 * hpage_collapse_scan_pmd: examine the 2M region at haddr and, if it
 * qualifies, collapse it. Returns the scan (or collapse) result.
 */
export function scanPmd(k: Kernel, mm: MmStruct, vma: Vma, haddr: number, cc: CollapseControl): ScanResult {
  const found = findPmd(mm, haddr);
  if (!(found instanceof PteTable)) return found;
  const kh = k.thp.khugepaged;
  const m = k.mem;
  cc.nodeLoad.fill(0);
  let noneOrZero = 0;
  let unmapped = 0;
  let shared = 0;
  let referenced = 0;
  const uffdArmed = (vma.flags & (VM.UFFD_MISSING | VM.UFFD_WP | VM.UFFD_MINOR)) !== 0; // userfaultfd_armed
  for (let i = 0; i < HPAGE_PMD_NR; i++) {
    cc.scannedPtes++;
    const pte = found.ptes[i]!;
    if (pte < PTE_ZERO) {
      // A swapped-out page: khugepaged swaps in at most max_ptes_swap of them; MADV_COLLAPSE any number.
      unmapped++;
      if (!cc.enforceLimits || unmapped <= kh.max_ptes_swap) continue;
      k.vmstat.count('thp_scan_exceed_swap_pte');
      return SCAN.SCAN_EXCEED_SWAP_PTE;
    }
    if (pte === PTE_NONE || pte === PTE_ZERO) {
      noneOrZero++;
      if (!uffdArmed && (!cc.enforceLimits || noneOrZero <= kh.max_ptes_none)) continue;
      k.vmstat.count('thp_scan_exceed_none_pte');
      return SCAN.SCAN_EXCEED_NONE_PTE;
    }
    const pfn = pfnOfPte(pte);
    const f = m.flags(pfn);
    if (!(f & PG.anon)) return SCAN.SCAN_PAGE_ANON;
    // folio_maybe_mapped_shared: a page another process maps too (since a fork), or a large folio two mms map.
    if (mappedShared(k, pfn)) {
      shared++;
      if (cc.enforceLimits && shared > kh.max_ptes_shared) {
        k.vmstat.count('thp_scan_exceed_share_pte');
        return SCAN.SCAN_EXCEED_SHARED_PTE;
      }
    }
    cc.nodeLoad[k.phys.nodeOfPfn(pfn)]!++;
    referenced++; // pte_young: see the header
  }
  // khugepaged wants referenced pages, and half of the region referenced before it swaps anything in.
  if (cc.isKhugepaged && (referenced === 0 || (unmapped && referenced < HPAGE_PMD_NR / 2))) return SCAN.SCAN_LACK_REFERENCED_PAGE;
  return collapseHugePage(k, mm, vma, haddr, found, cc, unmapped);
}

/**
 * __collapse_huge_page_swapin: do_swap_page for each swap PTE of the
 * region, with FAULT_FLAG_ALLOW_RETRY. A page found in the swap cache, or
 * read synchronously (zram), is mapped; a read from a swap file is
 * asynchronous, so do_swap_page finds the new folio still locked for its
 * I/O and returns VM_FAULT_RETRY: the collapse stops with SCAN_PAGE_LOCK,
 * the page (and what readahead brought with it) waiting in the swap cache
 * for the next attempt.
 */
function collapseSwapin(k: Kernel, mm: MmStruct, vma: Vma, haddr: number, t: PteTable, nid: number): ScanResult {
  for (let i = 0; i < HPAGE_PMD_NR; i++) {
    const pte = t.ptes[i]!;
    if (pte >= PTE_ZERO) continue;
    const entry = swpEntryOfPte(pte);
    const si = k.swap.info(entry);
    if (!si) return SCAN.SCAN_FAIL;
    const va = haddr + i * PAGE_SIZE;
    if (swapCacheGetFolio(k, entry) < 0 && !si.synchronous) {
      const r = swapinReadahead(k, mm, entry, vma, va, nid);
      if (r.pfn < 0) return SCAN.SCAN_FAIL;
      k.vmstat.count('pgmajfault');
      k.charge(r.ns);
      return SCAN.SCAN_PAGE_LOCK;
    }
    if (!doSwapPage(k, mm, vma, t, i, va, false, nid)) return SCAN.SCAN_FAIL;
  }
  // A swap-in's allocation may have reclaimed pages of this very region (hugepage_vma_revalidate and the PMD
  // check after it find the region changed): give up this time.
  for (let i = 0; i < HPAGE_PMD_NR; i++) if (t.ptes[i]! < PTE_ZERO) return SCAN.SCAN_FAIL;
  return SCAN.SCAN_SUCCEED;
}

/** hpage_collapse_find_target_node: the first node with the most pages, and every node tied with it. */
function targetNodes(cc: CollapseControl): { nid: number; nodemask: number[] } {
  let nid = 0;
  let max = 0;
  cc.nodeLoad.forEach((n, i) => {
    if (n > max) {
      max = n;
      nid = i;
    }
  });
  const nodemask: number[] = [];
  cc.nodeLoad.forEach((n, i) => n === max && nodemask.push(i));
  return { nid, nodemask };
}

/**
 * alloc_charge_folio: a PMD-sized folio on the target node set, with the
 * collapse's gfp mask (CollapseGfp). Without __GFP_DIRECT_RECLAIM only the
 * free lists are tried; with it, __alloc_pages_slowpath's path for a costly
 * order: direct compaction, direct reclaim, direct compaction again, then
 * failure (no __GFP_RETRY_MAYFAIL, so no further retries). The compaction
 * and reclaim run in the caller (its time, its memory stall).
 */
function allocCollapseFolio(k: Kernel, cc: CollapseControl): number {
  const { nid, nodemask } = targetNodes(cc);
  const gfp = cc.gfp ?? khugepagedGfp(k);
  // GFP_TRANSHUGE(_LIGHT): no __GFP_KSWAPD_RECLAIM, kswapd is not woken.
  const req: AllocRequest = { order: HPAGE_PMD_ORDER, mt: MIGRATE_MOVABLE, nid, nodemask, noKswapd: true };
  let pfn = k.phys.alloc(req);
  if (pfn < 0 && gfp.direct) {
    const nodes = k.phys.zonelists[nid]!.filter((x) => nodemask.includes(x));
    pfn = directCompact(k, nodes);
    if (pfn < 0 && directReclaim(k, req) > 0) pfn = k.phys.alloc(req);
    if (pfn < 0) pfn = directCompact(k, nodes);
  } else if (pfn < 0 && gfp.kcompactd) wakeupKcompactd(k, nid, HPAGE_PMD_ORDER);
  if (pfn < 0) {
    k.vmstat.count('thp_collapse_alloc_failed');
    return -1;
  }
  k.vmstat.count('thp_collapse_alloc');
  k.accountAlloc(pfn, nid, HPAGE_PMD_NR);
  return pfn;
}

/**
 * compaction_suitable for an order-9 request on node `nid`: compaction needs
 * free pages to migrate into, compact_gap(order) = 2 << order above the low
 * watermark (the low one for a costly order, __compaction_suitable). Below
 * that it is skipped (COMPACT_SKIPPED: no stall counted, no deferral), and
 * direct reclaim is what can help.
 */
function compactionSuitable(k: Kernel, nid: number): boolean {
  const z = k.phys.zones[nid]!;
  return z.freePages >= z.wmark[WMARK_LOW]! + (2 << HPAGE_PMD_ORDER);
}

/** __alloc_pages_direct_compact over the allowed nodes: a huge page from the first node compaction frees one on. */
function directCompact(k: Kernel, nodes: readonly number[]): number {
  for (const n of nodes)
    if (compactionSuitable(k, n) && compactForOrder(k, n, HPAGE_PMD_ORDER, 'direct')) {
      const pfn = k.phys.alloc({ order: HPAGE_PMD_ORDER, mt: MIGRATE_MOVABLE, nid: n, thisNode: true, noKswapd: true });
      if (pfn >= 0) return pfn;
    }
  return -1;
}

/**
 * __alloc_pages_direct_reclaim for an order-9 request: try_to_free_pages
 * rounds, each a memory stall of the caller, until one allowed node is
 * suitable for compaction again (should_continue_reclaim's stop) or a
 * round reclaims nothing. Returns the pages reclaimed.
 */
function directReclaim(k: Kernel, req: AllocRequest): number {
  const nodes = req.nodemask ?? k.phys.zonelists[req.nid]!;
  // Without a free swap slot only page cache can go: nothing to do when the nodes have none (get_scan_count would
  // scan nothing), which keeps runs without swap or files as they were.
  if (k.swap.nrSwapPages <= 0 && !nodes.some((n) => nodeFilePages(k, n))) return 0;
  let total = 0;
  while (!nodes.some((n) => compactionSuitable(k, n))) {
    const r = k.psi.memstall(() => tryToFreePages(k, req));
    if (r <= 0) break;
    total += r;
  }
  return total;
}

/**
 * collapse_huge_page: allocate, copy the 512 PTEs' pages into the new THP
 * (zero-filling none and zero-page entries), release the old pages and the
 * PTE table, and install the PMD.
 */
function collapseHugePage(
  k: Kernel,
  mm: MmStruct,
  vma: Vma,
  haddr: number,
  t: PteTable,
  cc: CollapseControl,
  unmapped: number,
): ScanResult {
  const pfn = allocCollapseFolio(k, cc);
  if (pfn < 0) return SCAN.SCAN_ALLOC_HUGE_PAGE_FAIL;
  // alloc_charge_folio: the new THP is charged to mm's memory cgroup (the target's, for a remote MADV_COLLAPSE).
  if (memcgCharge(k, mm, pfn, HPAGE_PMD_NR, { current: null, order: HPAGE_PMD_ORDER }) < 0) {
    k.phys.free(pfn, HPAGE_PMD_ORDER);
    return SCAN.SCAN_CGROUP_CHARGE_FAIL;
  }
  if (unmapped) {
    const r = collapseSwapin(k, mm, vma, haddr, t, targetNodes(cc).nid);
    if (r !== SCAN.SCAN_SUCCEED) {
      k.phys.free(pfn, HPAGE_PMD_ORDER);
      return r;
    }
  }
  // __collapse_huge_page_isolate: the allocation's direct reclaim may have swapped out pages of this very region
  // since the scan; a PTE no longer present ends this region's collapse (SCAN_PTE_NON_PRESENT).
  for (let i = 0; i < HPAGE_PMD_NR; i++)
    if (t.ptes[i]! < PTE_ZERO) {
      k.phys.free(pfn, HPAGE_PMD_ORDER);
      return SCAN.SCAN_PTE_NON_PRESENT;
    }
  const m = k.mem;
  prepAnonThp(k, pfn, mm, haddr);
  const oldThps = new Set<number>();
  for (let i = 0; i < HPAGE_PMD_NR; i++) {
    const pte = t.ptes[i]!;
    const dst = pfn + i;
    m.setToken(dst, 0);
    if (pte === PTE_NONE || pte === PTE_ZERO) continue; // clear_user_highpage
    const src = pfnOfPte(pte);
    m.setToken(dst, m.token(src));
    if (m.flags(src) & PG.nonzero) m.addFlags(dst, PG.nonzero);
    m.addMapcount(src, -1);
    mm.rssAnon--;
    if (m.flags(src) & (PG.head | PG.tail)) oldThps.add(src - (src % HPAGE_PMD_NR));
    else if (m.mapcount(src) === 0) k.freeUserPages(src, 0);
  }
  const key = PageTable.pmdKey(haddr);
  mm.pgtable.pmds.set(key, new HugeLeaf(pfn, 'pmd'));
  freePteTable(k, mm, t);
  m.addEntireMapcount(pfn, 1);
  mm.rssAnon += HPAGE_PMD_NR;
  for (const head of oldThps) folioUnmappedSome(k, head);
  const start = k.clock.now() + (k.taskTime?.ns ?? 0);
  // The copy of 512 pages into the new huge page, on its node (the one most of the pages were on).
  const node = k.phys.nodeOfPfn(pfn);
  mm.collapsing = mm.collapsing.filter((c) => c.remapAt > k.clock.now());
  const cost = k.chargeMem(k.costs.ns('madv_collapse_2m'), HPAGE_PMD_NR * k.hot.copy4k, node, node, PMD_SIZE);
  const window = { pmdKey: key, vma, unmapAt: start, remapAt: start + cost };
  mm.collapsing.push(window);
  k.noteBatch(window); // khugepaged's window follows its CPU time (a nice-19 thread on a busy host takes long)
  return SCAN.SCAN_SUCCEED;
}

/**
 * madvise_collapse for the part [start, end) of one VMA: every 2M-aligned
 * region inside it is collapsed (or found already PMD-mapped); 0 when all
 * are, else the errno of the last failure. A result outside the whitelist
 * stops at that region. A range that holds no whole region succeeds only if
 * it starts on a 2M boundary (see below).
 */
export function madviseCollapse(k: Kernel, vma: Vma, mm: MmStruct, start: number, end: number, flags: number | null = null): SysRet {
  if (vma.file?.kind === 'shmem' && !(vma.flags & VM.NOHUGEPAGE) && (vma.start / PAGE_SIZE - vma.pgoff) % HPAGE_PMD_NR === 0)
    // MADV_COLLAPSE ignores shmem_enabled and would build a file THP in the page cache: not modelled.
    throw new UnmodelledError('MADV_COLLAPSE of shmem (a file THP in the page cache) is not modelled');
  if (!collapseAllowed(k, vma, true)) return neg('EINVAL');
  const hstart = alignUp(start, PMD_SIZE);
  const hend = alignDown(end, PMD_SIZE);
  const cc = madvCollapseControl(k, vma, flags);
  let thps = 0;
  let lastFail: ScanResult = SCAN.SCAN_FAIL;
  for (let addr = hstart; addr < hend; addr += PMD_SIZE) {
    const table = mm.pgtable.nextPmdTable(addr, hend);
    if (table > addr) {
      // Every region up to there has no PMD table: SCAN_PMD_NULL each, which the walk goes past.
      lastFail = SCAN.SCAN_PMD_NULL;
      addr = table - PMD_SIZE;
      continue;
    }
    const r = scanPmd(k, mm, vma, addr, cc);
    if (r === SCAN.SCAN_SUCCEED || r === SCAN.SCAN_PMD_MAPPED) {
      thps++;
      continue;
    }
    lastFail = r;
    if (!CONTINUE_AFTER.has(r)) break;
  }
  // Linux computes the region count in unsigned arithmetic: a range inside one
  // region that starts unaligned (hend < hstart) "expects" 2^43 regions and
  // fails with the errno of SCAN_FAIL, EINVAL; an empty one (hend == hstart) succeeds.
  if (hend < hstart) return collapseErrno(lastFail);
  return thps === (hend - hstart) / PMD_SIZE ? 0 : collapseErrno(lastFail);
}

/** Statistics of the khugepaged thread, beyond the sysfs counters. */
export interface KhugepagedStats {
  /** CPU time the thread used, ns (scanning, copying, compacting). */
  cpuNs: number;
  passes: number;
  scannedPtes: number;
  allocFailed: number;
}

/**
 * The khugepaged thread (khugepaged(), khugepaged_do_scan,
 * khugepaged_scan_mm_slot) in virtual time. The thread exists while the
 * PMD THP mode is not `never`; mms join its scan list through
 * khugepaged_enter_vma (a THP fault, MADV_HUGEPAGE) when one of their VMAs is
 * eligible. A pass scans up to pages_to_scan PTEs (a skipped VMA counts one),
 * carrying on from where the previous pass stopped, then sleeps
 * scan_sleep_millisecs; an allocation failure sleeps alloc_sleep_millisecs
 * and, if it fails again, ends the pass. Each full round over the list
 * counts full_scans. The thread's work is charged to its own CPU time, not
 * to any task: it runs on another CPU.
 *
 * The host is assumed to have other processes on khugepaged's list (on a
 * real host, every process that ever took a THP fault or used
 * MADV_HUGEPAGE), so the thread is always on its scan timer from boot: a new
 * mm does not wake it (Linux wakes it only when the list was empty) and waits
 * for the next pass. Starting the thread (THP enabled again after `never`)
 * or writing a sleep knob starts a pass at once, as in Linux. A pass that
 * found nothing to do takes at least one jiffy (1 ms), so scan_sleep 0 does
 * not stop virtual time.
 */
/** khugepaged runs at the lowest priority (set_user_nice(current, MAX_NICE)). */
export const KHUGEPAGED_NICE = 19;

export class Khugepaged {
  /** khugepaged_scan.mm_head. */
  readonly mmHead: MmStruct[] = [];
  private scanSlot: MmStruct | null = null;
  private scanAddress = 0;
  private running: boolean;
  private next: EventHandle | null = null;
  /** A pass sleeping on allocation failure resumes with this much budget left. */
  private resume: { progress: number } | null = null;
  /** A pass's CPU work is still running (on a scheduler's CPU). */
  private busy = false;
  /** Woken during a pass: the next one starts without sleeping. */
  private woken = false;
  readonly stats: KhugepagedStats = { cpuNs: 0, passes: 0, scannedPtes: 0, allocFailed: 0 };
  /** Called after each collapse by the thread (for scenario accounting). */
  onCollapse: ((mm: MmStruct, haddr: number, at: number, ns: number) => void) | null = null;

  constructor(private readonly k: Kernel) {
    this.running = k.thp.pmdMode !== 'never';
    if (this.running) this.schedule(k.thp.khugepaged.scan_sleep_millisecs * 1e6);
  }

  /** hugepage_pmd_enabled(). */
  private enabled(): boolean {
    return this.k.thp.pmdMode !== 'never';
  }

  /** khugepaged_enter_vma: register the mm if this VMA is one khugepaged would collapse. */
  enterVma(mm: MmStruct, vma: Vma): void {
    if (this.mmHead.includes(mm) || !this.enabled() || !collapseAllowed(this.k, vma, false)) return;
    this.mmHead.push(mm); // no wake-up: the list was not empty (see above)
  }

  /**
   * start_stop_khugepaged, after a write to a THP `enabled` knob: a thread
   * started afresh scans at once; a running one keeps its timer; a disabled
   * one stops.
   */
  startStop(): void {
    if (this.enabled()) {
      if (!this.running) {
        this.running = true;
        this.schedule(0);
      }
    } else if (this.running) {
      this.running = false;
      this.next?.cancel();
      this.next = null;
      this.resume = null;
    }
  }

  /** A write to scan_sleep_millisecs or alloc_sleep_millisecs: the thread's sleep ends now (or as soon as its pass is done). */
  wake(): void {
    if (!this.running || this.resume) return;
    if (this.busy) this.woken = true;
    else this.schedule(0);
  }

  private schedule(delayNs: number): void {
    this.next?.cancel();
    this.next = this.k.events.after(delayNs, 'khugepaged', () => this.pass());
  }

  /** khugepaged_do_scan, then khugepaged_wait_work. */
  private pass(): void {
    const k = this.k;
    this.next = null;
    if (!this.running) return;
    const kh = k.thp.khugepaged;
    const pages = kh.pages_to_scan;
    const wait = this.resume === null; // a resumed pass already slept once
    let progress = this.resume?.progress ?? 0;
    this.resume = null;
    this.stats.passes++;
    // The thread's own time: charges made while it works go here, not to a task.
    const own = { ns: 0 };
    const cc = newCollapseControl(k, true);
    let passThroughHead = 0;
    let allocFailed = false;
    let windows: readonly MigrationBatch[] | null = null;
    k.runAsTask(own, () => {
      for (;;) {
        if (!this.scanSlot) passThroughHead++;
        if (this.mmHead.length && passThroughHead < 2) {
          const r = this.scanMmSlot(pages - progress, cc);
          progress += r.progress;
          allocFailed = r.allocFailed;
        } else progress = pages;
        if (progress >= pages) break;
        if (allocFailed) break;
      }
      own.ns = this.elapsed(cc); // the scanning too
      windows = k.taskBatches; // the collapses' windows, in the pass's own time from its start
    });
    this.stats.cpuNs += own.ns;
    this.stats.scannedPtes += cc.scannedPtes;
    let sleepNs = Math.max(0, kh.scan_sleep_millisecs * 1e6);
    if (allocFailed) {
      this.stats.allocFailed++;
      if (wait) {
        // khugepaged_alloc_sleep, then the same pass goes on.
        this.resume = { progress };
        sleepNs = kh.alloc_sleep_millisecs * 1e6;
      }
    }
    // The pass's CPU time runs on a CPU (khugepaged is unbound, at nice 19); the thread sleeps once it is done.
    const start = k.clock.now();
    this.busy = true;
    k.spend({ name: 'khugepaged', nice: KHUGEPAGED_NICE, onDone: (at) => this.passDone(at, start, sleepNs) }, own.ns, windows, start);
  }

  /** The pass's CPU work is done at `at`: khugepaged_wait_work, then the next pass (at least a jiffy after this one began). */
  private passDone(at: number, start: number, sleepNs: number): void {
    this.busy = false;
    if (!this.running) return;
    const JIFFY = 1e6;
    const delay = this.woken ? 0 : sleepNs;
    this.woken = false;
    this.next?.cancel();
    this.next = this.k.events.schedule(Math.max(start + JIFFY, at + Math.round(delay)), 'khugepaged', () => this.pass());
  }

  /** Thread time used so far in this pass: charged work plus the PTEs scanned. */
  private elapsed(cc: CollapseControl): number {
    return (this.k.taskTime?.ns ?? 0) + cc.scannedPtes * this.k.costs.ns('khugepaged_scan_per_pte');
  }

  /** khugepaged_scan_mm_slot: scan the current mm from scanAddress. */
  private scanMmSlot(pages: number, cc: CollapseControl): { progress: number; allocFailed: boolean } {
    const k = this.k;
    if (!this.scanSlot) {
      this.scanSlot = this.mmHead[0]!;
      this.scanAddress = 0;
    }
    const mm = this.scanSlot;
    let progress = 1; // the mm itself (after mmap_read_trylock)
    let finished = true;
    // From the first VMA ending above scanAddress (find_vma), in address order.
    for (let vma = mm.findVma(this.scanAddress); vma; vma = mm.nextVma(vma)) {
      if (!collapseAllowed(k, vma, false)) {
        progress++;
        continue;
      }
      const hstart = alignUp(vma.start, PMD_SIZE);
      const hend = alignDown(vma.end, PMD_SIZE);
      if (this.scanAddress > hend) {
        progress++;
        continue;
      }
      if (this.scanAddress < hstart) this.scanAddress = hstart;
      while (this.scanAddress < hend) {
        const haddr = this.scanAddress;
        const t0 = this.elapsed(cc);
        const r = scanPmd(k, mm, vma, haddr, cc);
        this.scanAddress += PMD_SIZE;
        progress += HPAGE_PMD_NR;
        if (r === SCAN.SCAN_SUCCEED) {
          k.thp.khugepaged.pages_collapsed++;
          this.onCollapse?.(mm, haddr, k.clock.now() + t0, this.elapsed(cc) - t0);
        }
        // After a collapse attempt the mmap lock was dropped: return to do_scan.
        if (r === SCAN.SCAN_SUCCEED || r === SCAN.SCAN_ALLOC_HUGE_PAGE_FAIL)
          return { progress, allocFailed: r === SCAN.SCAN_ALLOC_HUGE_PAGE_FAIL };
        if (progress >= pages) {
          finished = false;
          break;
        }
      }
      if (!finished) break;
    }
    if (finished) {
      // Every VMA of this mm scanned: on to the next mm, or a full scan is done.
      const i = this.mmHead.indexOf(mm);
      if (i + 1 < this.mmHead.length) this.scanSlot = this.mmHead[i + 1]!;
      else {
        this.scanSlot = null;
        k.thp.khugepaged.full_scans++;
      }
      this.scanAddress = 0;
    }
    return { progress, allocFailed: false };
  }

  /**
   * Run the simulated clock until khugepaged has finished `n` more full
   * scans, or `timeoutNs` of virtual time passed. Returns whether it did.
   */
  waitFullScans(n: number, timeoutNs: number): boolean {
    const k = this.k;
    const target = k.thp.khugepaged.full_scans + n;
    const deadline = k.clock.now() + timeoutNs;
    while (k.thp.khugepaged.full_scans < target) {
      const t = k.events.peekTime();
      if (t === undefined || t > deadline) {
        k.events.runUntil(deadline);
        k.clock.advance(Math.max(0, deadline - k.clock.now()));
        return false;
      }
      k.events.runUntil(t);
    }
    return true;
  }
}
