/**
 * Reclaim (mm/vmscan.c): of given pages as MADV_PAGEOUT drives it
 * (reclaim_pages -> shrink_folio_list, and the unmap half of mm/rmap.c
 * try_to_unmap), and direct reclaim when an order-0 allocation finds no
 * free frame (try_to_free_pages: the priority loop over the classic
 * two-list LRU of swap.ts, below).
 *
 * For each order-0 anonymous folio, in the order the caller isolated them
 * (address order for madvise):
 * - a lazyfree folio (MADV_FREE'd, not written since) is discarded: its PTE
 *   is cleared, the frame freed (pglazyfreed); a later read sees zeros; one
 *   written since is swap-backed again and kept (activated);
 * - any other one needs a swap slot (add_to_swap: folio_alloc_swap, then
 *   the swap cache, dirty); without one it stays (activate_locked);
 * - try_to_unmap puts the swap entry in the PTE (MM_SWAPENTS, the slot's
 *   count); a dirty folio is written (pageout -> swap_writeout): a
 *   zero-filled one only sets the zeromap, zram completes at once, a swap
 *   file's write is asynchronous and the folio stays in the swap cache,
 *   PG_reclaim, until reclaim scans it again; a clean one (already in the
 *   cache with its slot) is freed at once (__remove_mapping).
 *
 * A folio no page table maps any more (read ahead, or left in the swap
 * cache by an asynchronous write) is freed when reclaim meets it clean.
 */
import type { Kernel } from './kernel.ts';
import { PG } from './page.ts';
import {
  LRU_ACTIVE_ANON,
  LRU_ACTIVE_FILE,
  LRU_INACTIVE_ANON,
  LRU_INACTIVE_FILE,
  NR_LRU_LISTS,
  ANON,
  FILE,
  folioDeactivate,
  folioLruvec,
  folioIsolateLru,
  folioNrPages,
  folioPutbackLru,
  lruvecAddFolioTail,
  lruListOf,
  lruNoteCost,
  type Lruvec,
} from './swap.ts';
import { splitAnonFolio } from './huge_memory.ts';
import { WMARK_HIGH, type AllocRequest } from './page_alloc.ts';
import type { EventHandle } from '../sim/event_queue.ts';
import { PageTable, PteTable, PTE_NONE, VM, pfnOfPte, pteOf, pteOfSwpEntry, ptepTestAndClearYoung } from './mm_types.ts';
import { mappedShared, rmapWalk } from './migrate.ts';
import { followPage } from './memory.ts';
import type { MmStruct } from './mm_types.ts';
import { HPAGE_PMD_NR, PAGE_SIZE, PMD_SIZE } from './uapi.ts';
import { swapCacheAddFolio, swapCacheDelFolio, swapWriteout } from './swap_state.ts';
import { pageCacheDelete, snapshotRefaults, workingsetAgeNonresident, workingsetEviction } from './workingset.ts';
import {
  memcgBelowLow,
  memcgBelowMin,
  memcgCalculateProtection,
  memcgMemoryEvent,
  memcgSwapMargin,
  memcgTryChargeSwap,
  type MemCgroup,
} from './memcontrol.ts';
import { shmemWriteout } from './shmem.ts';

/**
 * madvise_cold_or_pageout_pte_range for MADV_COLD: each folio of
 * [start, end) on an LRU list that no other mapping uses (order 0: mapcount
 * 1; a THP, which the caller split if the range covers it in part: not
 * mapped by another process) loses its accessed bits (the PTE's young bit,
 * PG_referenced, the page's young flag), is marked workingset if it was
 * active, and goes to the head of its inactive list (folio_deactivate), so
 * reclaim takes it before the pages that were not advised.
 */
export function madviseCold(k: Kernel, mm: MmStruct, start: number, end: number): void {
  const m = k.mem;
  const pt = mm.pgtable;
  let lastHead = -1;
  for (let va = pt.skipNone(start, end, PAGE_SIZE); va < end; va = pt.walkNext(va, end, PAGE_SIZE)) {
    const pfn = followPage(mm, va);
    if (pfn < 0) continue;
    const f = m.flags(pfn);
    if (f & PG.hugetlb) continue;
    const large = (f & (PG.head | PG.tail)) !== 0;
    const head = large ? pfn - (pfn % HPAGE_PMD_NR) : pfn;
    if (large ? mappedShared(k, head) : m.mapcount(pfn) !== 1) continue;
    const t = pt.pmds.get(PageTable.pmdKey(va));
    if (t instanceof PteTable) {
      const i = Math.floor(va / PAGE_SIZE) & 511;
      if (t.ptes[i] === pteOf(pfn)) ptepTestAndClearYoung(t, i);
    }
    m.clearFlags(pfn, PG.young);
    if (head === lastHead || !(m.flags(head) & PG.lru)) continue;
    lastHead = head;
    m.clearFlags(head, PG.referenced | PG.young);
    if (m.flags(head) & PG.active) m.addFlags(head, PG.workingset);
    folioDeactivate(k, head);
  }
}

/** What shrinkFolio did with a folio. */
export type ShrinkResult = 'freed' | 'swapcache' | 'kept';

/** Pages shrinkFolio has handed to swap_writeout successfully (reclaim_stat's nr_pageout, read as a difference). */
let nrPageout = 0;

/** pageout -> swap_writeout of a dirty folio in the swap cache, counted as nr_pageout unless it failed. */
function pageout(k: Kernel, pfn: number): 'sync' | 'async' | 'fail' {
  const w = swapWriteout(k, pfn);
  if (w !== 'fail') nrPageout++;
  return w;
}

/**
 * try_to_unmap of an order-0 anonymous folio: every PTE mapping it (the
 * rmap walk finds them in each process a fork shared it with) gets
 * `swapPte` (PTE_NONE to discard), each one more reference to the swap
 * entry; RSS and the mapcount drop. False if some mapping was not found
 * (the folio stays mapped there).
 */
function tryToUnmap(k: Kernel, pfn: number, swapPte: number): boolean {
  const m = k.mem;
  rmapWalk(k, pfn, (mm, _vma, va) => {
    const t = mm.pgtable.pmds.get(PageTable.pmdKey(va));
    if (!(t instanceof PteTable)) return;
    const i = Math.floor(va / PAGE_SIZE) & 511;
    const pte = t.ptes[i]!;
    if (pte <= 0 || pfnOfPte(pte) !== pfn) return;
    t.ptes[i] = swapPte;
    if (swapPte === PTE_NONE) t.used--;
    else {
      mm.swapents++;
      k.swap.dup(k.swap.entryOf.get(pfn)!);
    }
    mm.rssAnon--;
    m.addMapcount(pfn, -1);
  });
  return m.mapcount(pfn) === 0;
}

/**
 * try_to_unmap of a page-cache page: every PTE mapping it is cleared (a
 * later access faults it in from the file). False if some mapping was not
 * found.
 */
function tryToUnmapFile(k: Kernel, pfn: number): boolean {
  const m = k.mem;
  const disk = (m.flags(pfn) & PG.diskFile) !== 0;
  rmapWalk(k, pfn, (mm, _vma, va) => {
    const t = mm.pgtable.pmds.get(PageTable.pmdKey(va));
    if (!(t instanceof PteTable)) return;
    const i = Math.floor(va / PAGE_SIZE) & 511;
    if (t.ptes[i]! <= 0 || pfnOfPte(t.ptes[i]!) !== pfn) return;
    t.ptes[i] = PTE_NONE;
    t.used--;
    if (disk) mm.rssFile--;
    else mm.rssShmem--;
    m.addMapcount(pfn, -1);
  });
  return m.mapcount(pfn) === 0;
}

/**
 * shrink_folio_list for a shmem folio (swap-backed, on the anon list):
 * try_to_unmap clears its PTEs, pageout's shmem_writeout moves it to the
 * swap cache (the file keeps the entry) and the write starts; a swap
 * file's write completes later (the folio stays in the swap cache, as an
 * anonymous one does), a zero-filled one is only marked and freed at once.
 */
function shrinkShmemFolio(k: Kernel, pfn: number, target: MemCgroup | null): ShrinkResult {
  const m = k.mem;
  if (m.flags(pfn) & (PG.head | PG.tail) || !tryToUnmapFile(k, pfn)) return 'kept';
  if (!shmemWriteout(k, pfn)) return 'kept'; // no slot: redirty, activate
  return pageoutAndRemove(k, pfn, target);
}

/**
 * The end of shrink_folio_list for an unmapped folio in the swap cache:
 * pageout if it is dirty (a write that fails leaves it in the cache, dirty,
 * for the next reclaim; an asynchronous one leaves it there with
 * PG_reclaim until the write completes), then __remove_mapping takes a
 * clean one out of the swap cache (keeping the slot, with the shadow
 * workingset_eviction leaves for reclaim on behalf of `target`) and frees it.
 */
function pageoutAndRemove(k: Kernel, pfn: number, target: MemCgroup | null): ShrinkResult {
  const m = k.mem;
  if (m.flags(pfn) & PG.dirty) {
    const w = pageout(k, pfn);
    if (w === 'fail') return 'swapcache';
    if (w === 'async') {
      m.addFlags(pfn, PG.reclaim);
      return 'swapcache';
    }
  }
  swapCacheDelFolio(k, pfn, workingsetEviction(k, pfn, target));
  k.freeUserPages(pfn, 0);
  return 'freed';
}

/**
 * shrink_folio_list for one isolated order-0 anonymous folio mapped by one
 * PTE, with references ignored (reclaim_pages): see the header. `target`
 * is the memory cgroup reclaim is for (null: global reclaim, MADV_PAGEOUT),
 * whose clock the evicted folio's shadow reads.
 */
export function shrinkFolio(k: Kernel, pfn: number, target: MemCgroup | null = null): ShrinkResult {
  const m = k.mem;
  const f = m.flags(pfn);
  if (f & PG.swapcache && m.mapcount(pfn) === 0 && !(f & (PG.head | PG.tail))) {
    // Unmapped and in the swap cache: free it if clean (its slot keeps the content, and the shadow), else write
    // it first.
    if (f & PG.dirty && pageout(k, pfn) !== 'sync') return 'swapcache';
    swapCacheDelFolio(k, pfn, workingsetEviction(k, pfn, target));
    k.freeUserPages(pfn, 0);
    return 'freed';
  }
  if (f & PG.shmem && !(f & PG.diskFile)) return shrinkShmemFolio(k, pfn, target);
  if (!(f & PG.anon) || f & (PG.head | PG.tail) || m.mapcount(pfn) < 1) return 'kept';
  if (f & PG.lazyfree && !(f & PG.swapcache) && m.mapcount(pfn) === 1) {
    // Written since MADV_FREE: try_to_unmap_one sets PG_swapbacked again and keeps the mapping; the folio is
    // activated and swaps like any other anonymous folio from the next reclaim on.
    if (f & PG.dirty) {
      m.clearFlags(pfn, PG.lazyfree);
      return 'kept';
    }
    // A clean lazyfree folio: try_to_unmap discards it (the PTE is cleared).
    if (!tryToUnmap(k, pfn, PTE_NONE)) return 'kept';
    k.vmstat.count('pglazyfreed');
    k.freeUserPages(pfn, 0);
    return 'freed';
  }
  if (!(f & PG.swapcache)) {
    // add_to_swap: a slot, the swap cache, and the folio dirty (its content is not on swap yet).
    // folio_alloc_swap fails when the folio's memory cgroup is at memory.swap.max (mem_cgroup_try_charge_swap).
    if (k.memcg.active && memcgSwapMargin(k.memcg.ofFrame(pfn)) < 1) return 'kept';
    const entry = k.swap.allocSwapEntry(0);
    if (entry < 0) return 'kept';
    memcgTryChargeSwap(k, pfn, entry);
    swapCacheAddFolio(k, pfn, entry, 1);
    m.addFlags(pfn, PG.dirty);
  }
  const entry = k.swap.entryOf.get(pfn)!;
  if (!tryToUnmap(k, pfn, pteOfSwpEntry(entry))) return 'kept';
  return pageoutAndRemove(k, pfn, target);
}

// --- direct reclaim ---------------------------------------------------------------

export const DEF_PRIORITY = 12;
export const SWAP_CLUSTER_MAX = 32;
/** MAX_SWAPPINESS: vm.swappiness's top (200: anon favoured as much as file is at 0). */
export const MAX_SWAPPINESS = 200;
/** enum scan_balance. */
const SCAN_EQUAL = 0;
const SCAN_FRACT = 1;
const SCAN_ANON = 2;
const SCAN_FILE = 3;
/** scan_control's may_deactivate bits. */
const DEACTIVATE_ANON = 1;
const DEACTIVATE_FILE = 2;
export { MAX_RECLAIM_RETRIES } from './page_alloc.ts';

/** struct scan_control, the part memtwin uses. */
export interface ScanControl {
  nrToReclaim: number;
  nrReclaimed: number;
  nrScanned: number;
  priority: number;
  /** The node the allocation prefers (split THPs' pages stay there). */
  nid: number;
  /** kswapd's reclaim (pgscan_kswapd, pgsteal_kswapd) rather than direct reclaim. */
  kswapd: boolean;
  /** target_mem_cgroup: the group reclaim is for (null: global reclaim, the whole hierarchy). */
  memcg?: MemCgroup | null;
  /** memcg_low_reclaim: groups under memory.low are reclaimed too (a second pass when nothing else could be). */
  memcgLowReclaim?: boolean;
  /** memcg_low_skipped: a group was spared for its memory.low. */
  memcgLowSkipped?: boolean;
  /** may_swap: anonymous pages may go to swap (false: get_scan_count scans the file lists only). */
  maySwap?: boolean;
  /** prepare_scan_control's view of the target lruvec (set per node, per round: see prepareScanControl). */
  anonCost?: number;
  fileCost?: number;
  /** DEACTIVATE_ANON | DEACTIVATE_FILE: which active lists shrink_list may age. */
  mayDeactivate?: number;
  /** force_deactivate: the retry after a round that skipped aging and reclaimed nothing ages both. */
  forceDeactivate?: boolean;
  /** skipped_deactivate: an active list was left alone because may_deactivate did not allow it. */
  skippedDeactivate?: boolean;
  /** cache_trim_mode: plenty of inactive file pages that are not thrashing: reclaim those first (SCAN_FILE). */
  cacheTrimMode?: boolean;
  /** file_is_tiny: global reclaim, the node almost out of file pages: scan anon only (SCAN_ANON). */
  fileIsTiny?: boolean;
}

/**
 * folio_referenced: how many of the folio's mappings were accessed since
 * reclaim last looked (the young bits, cleared here). A PMD-mapped THP has
 * one mapping; a PTE-mapped one, one per young page.
 */
export function folioReferenced(k: Kernel, head: number): number {
  const m = k.mem;
  const nr = folioNrPages(m, head);
  let young = 0;
  for (let i = 0; i < nr; i++) {
    // The page's own bit (faults, stores, huge mappings) and the accessed bits of the PTEs mapping it: both cleared.
    const ptes = ptesTestAndClearYoung(k, head + i);
    if (m.flags(head + i) & PG.young) {
      m.clearFlags(head + i, PG.young);
      young++;
    } else if (ptes) young++;
  }
  if (nr > 1 && young && m.entireMapcount(head) > 0) return 1;
  return young;
}

/** ptep_clear_flush_young over the rmap: whether a PTE mapping `pfn` at 4K was accessed (its bit cleared). */
function ptesTestAndClearYoung(k: Kernel, pfn: number): boolean {
  let young = false;
  rmapWalk(k, pfn, (mm, _vma, va) => {
    const t = mm.pgtable.pmds.get(PageTable.pmdKey(va));
    if (!(t instanceof PteTable)) return;
    const i = Math.floor(va / PAGE_SIZE) & 511;
    if (t.ptes[i] === pteOf(pfn) && ptepTestAndClearYoung(t, i)) young = true;
  });
  return young;
}

/** folio_check_references for an anonymous folio: 'activate', 'keep' (another trip on the inactive list) or 'reclaim'. */
function folioCheckReferences(k: Kernel, head: number): 'activate' | 'keep' | 'reclaim' {
  const m = k.mem;
  const referencedPtes = folioReferenced(k, head);
  const referencedFolio = (m.flags(head) & PG.referenced) !== 0;
  m.clearFlags(head, PG.referenced);
  if (referencedPtes) {
    // Mapped folios start out referenced by the fault that made them: look twice before activating.
    m.addFlags(head, PG.referenced);
    return referencedFolio || referencedPtes > 1 ? 'activate' : 'keep';
  }
  return 'reclaim';
}

/** Take up to nrToScan pages' worth of folios off the tail of list `lru` (isolate_lru_folios); returns them and the pages scanned. */
function isolateLruFolios(k: Kernel, lv: Lruvec, lru: number, nrToScan: number): { folios: number[]; scanned: number } {
  const m = k.mem;
  const folios: number[] = [];
  let scanned = 0;
  while (scanned < nrToScan) {
    const head = lv.tail[lru]!;
    if (head < 0) break;
    scanned += folioNrPages(m, head);
    folioIsolateLru(k, head);
    folios.push(head);
  }
  return { folios, scanned };
}

/**
 * A folio the caller isolated goes back (move_folios_to_lru): on the active
 * list (pgactivate), which advances its lruvec's workingset clock as an
 * activation pushes the inactive pages towards the tail, or the inactive one.
 */
function putback(k: Kernel, head: number, active: boolean): void {
  const m = k.mem;
  if (active && !(m.flags(head) & PG.active)) k.vmstat.count('pgactivate', folioNrPages(m, head));
  if (active) m.addFlags(head, PG.active);
  else m.clearFlags(head, PG.active);
  folioPutbackLru(k, head);
  if (active) workingsetAgeNonresident(k, folioLruvec(k, head), folioNrPages(m, head));
}

/**
 * A large folio reclaim wants to swap: folio_alloc_swap cannot give a swap
 * file's slots to it whole, so it is split (thp_swpout_fallback) and its
 * pages that stay mapped are returned isolated, to be reclaimed in turn.
 */
function splitForSwap(k: Kernel, head: number, sc: ScanControl): number[] {
  const m = k.mem;
  const mm = k.mmById(m.owner(head));
  if (!mm) return [];
  const haddr = Math.floor((m.index(head) * PAGE_SIZE) / PMD_SIZE) * PMD_SIZE;
  folioPutbackLru(k, head); // splitAnonFolio takes it off its list and lists what stays
  splitAnonFolio(k, mm, head, haddr, sc.nid);
  k.vmstat.count('thp_swpout_fallback');
  const out: number[] = [];
  for (let i = 0; i < HPAGE_PMD_NR; i++) if (m.flags(head + i) & PG.lru && folioIsolateLru(k, head + i)) out.push(head + i);
  return out;
}

/** isolate_lru_folios for shrink_inactive_list, counted as scanned (pgscan_kswapd or _direct unless for a group, and _anon or _file). */
function isolateForShrink(k: Kernel, lv: Lruvec, lru: number, nrToScan: number, sc: ScanControl): number[] {
  const { folios, scanned } = isolateLruFolios(k, lv, lru, nrToScan);
  sc.nrScanned += scanned;
  // A memory cgroup's reclaim counts in its group's memory.stat (shrinkNode), not in the global pgscan_direct.
  if (!sc.memcg) k.vmstat.count(sc.kswapd ? 'pgscan_kswapd' : 'pgscan_direct', scanned);
  k.vmstat.count(lru === LRU_INACTIVE_FILE ? 'pgscan_file' : 'pgscan_anon', scanned);
  return folios;
}

/** The pages shrink_inactive_list reclaimed, counted as stolen (pgsteal_kswapd or _direct unless for a group, and _anon or _file). */
function countSteal(k: Kernel, sc: ScanControl, file: boolean, reclaimed: number): void {
  if (!sc.memcg) k.vmstat.count(sc.kswapd ? 'pgsteal_kswapd' : 'pgsteal_direct', reclaimed);
  k.vmstat.count(file ? 'pgsteal_file' : 'pgsteal_anon', reclaimed);
}

/**
 * shrink_inactive_list for the inactive anon list: isolate from the tail,
 * check references, reclaim the rest (shrinkFolio); what is kept goes back
 * (referenced twice: to the active list), a folio whose swap write is in
 * flight to the tail of the inactive list (folio_rotate_reclaimable, as the
 * write completes at once here). Returns the pages reclaimed.
 */
function shrinkInactiveList(k: Kernel, lv: Lruvec, nrToScan: number, sc: ScanControl): number {
  const m = k.mem;
  const scannedBefore = sc.nrScanned;
  const folios = isolateForShrink(k, lv, LRU_INACTIVE_ANON, nrToScan, sc);
  let reclaimed = 0;
  const pageoutsBefore = nrPageout;
  for (let j = 0; j < folios.length; j++) {
    const head = folios[j]!;
    const refs = m.mapcount(head) + m.entireMapcount(head) > 0 || m.flags(head) & PG.head ? folioCheckReferences(k, head) : 'reclaim';
    if (refs !== 'reclaim') {
      putback(k, head, refs === 'activate');
      continue;
    }
    if (m.flags(head) & PG.head) {
      folios.push(...splitForSwap(k, head, sc));
      continue;
    }
    const r = shrinkFolio(k, head, sc.memcg ?? null);
    if (r === 'freed') reclaimed++;
    else if (r === 'swapcache') {
      m.clearFlags(head, PG.active);
      m.addFlags(head, PG.lru);
      lruvecAddFolioTail(m, lv, head, 1, lruListOf(m.flags(head)));
      k.vmstat.count('pgrotated');
    } else putback(k, head, true); // activate_locked: no swap slot, or still mapped elsewhere
  }
  countSteal(k, sc, false, reclaimed);
  // lru_note_cost: the swap writes started (stat.nr_pageout) and the pages scanned but kept weigh against anon.
  lruNoteCost(k, lv, false, nrPageout - pageoutsBefore, sc.nrScanned - scannedBefore - reclaimed);
  return reclaimed;
}

/**
 * shrink_inactive_list for the inactive file list: a folio referenced since
 * reclaim last looked goes back (activated when mapped and referenced), a
 * dirty one stays (there is no writeback), a clean one is unmapped from
 * every process (try_to_unmap through the file's mappings), taken out of
 * the page cache (__remove_mapping) and freed: a later fault reads it from
 * the disk again.
 */
function shrinkInactiveFileList(k: Kernel, lv: Lruvec, nrToScan: number, sc: ScanControl): number {
  const m = k.mem;
  const scannedBefore = sc.nrScanned;
  const folios = isolateForShrink(k, lv, LRU_INACTIVE_FILE, nrToScan, sc);
  let reclaimed = 0;
  for (const pfn of folios) {
    const refs = m.mapcount(pfn) > 0 ? folioCheckReferences(k, pfn) : 'reclaim';
    if (refs !== 'reclaim' || m.flags(pfn) & PG.dirty) {
      putback(k, pfn, refs === 'activate');
      continue;
    }
    if (!tryToUnmapFile(k, pfn)) {
      putback(k, pfn, true);
      continue;
    }
    // __remove_mapping: the page cache slot keeps the shadow workingset_eviction leaves.
    const file = k.files.get(m.owner(pfn));
    if (file) pageCacheDelete(file, m.index(pfn), workingsetEviction(k, pfn, sc.memcg ?? null));
    k.freeUserPages(pfn, 0);
    reclaimed++;
  }
  countSteal(k, sc, true, reclaimed);
  // lru_note_cost: no writeback here (nr_pageout 0); what was scanned and kept weighs against the file lists.
  lruNoteCost(k, lv, true, 0, sc.nrScanned - scannedBefore - reclaimed);
  return reclaimed;
}

/**
 * shrink_active_list: isolated from the tail of an active list, accessed
 * bits cleared (folio_referenced), and every folio deactivated, except a
 * referenced file folio that a VM_EXEC mapping uses, which gets another
 * trip on the active list (counted as rotated: lru_note_cost).
 */
function shrinkActiveList(k: Kernel, lv: Lruvec, nrToScan: number, lru: number, sc: ScanControl): void {
  const m = k.mem;
  const file = lru === LRU_ACTIVE_FILE;
  const { folios, scanned } = isolateLruFolios(k, lv, lru, nrToScan);
  if (!sc.memcg) k.vmstat.count('pgrefill', scanned);
  let rotated = 0;
  for (const head of folios) {
    if (folioReferenced(k, head) && file && mappedExec(k, head)) {
      rotated += folioNrPages(m, head);
      putback(k, head, true);
      continue;
    }
    m.addFlags(head, PG.workingset);
    putback(k, head, false);
    k.vmstat.count('pgdeactivate', folioNrPages(m, head));
  }
  if (rotated) lruNoteCost(k, lv, file, 0, rotated);
}

/** The vm_flags folio_referenced gathers: whether some VMA mapping the page is VM_EXEC. */
function mappedExec(k: Kernel, pfn: number): boolean {
  let exec = false;
  rmapWalk(k, pfn, (_mm, vma) => {
    if (vma.flags & VM.EXEC) exec = true;
  });
  return exec;
}

/**
 * lruvec_page_state of a list: a memory cgroup's lruvec counts its
 * descendants' pages too (the root's: the whole node), its own list only
 * when it has none (lruvec_lru_size, which get_scan_count sizes its scan
 * by, is always the lruvec's own: Lruvec.size).
 */
function lruvecPageState(k: Kernel, lv: Lruvec, lru: number): number {
  const cg = (lv.memcg as MemCgroup | null) ?? (k.memcg.active ? k.memcg.root : null);
  if (!cg || !cg.children.length) return lv.size(lru);
  let n = 0;
  for (const c of cg.subtree()) n += c.lruvecs[lv.nid]!.size(lru);
  return n;
}

/**
 * inactive_is_low: the inactive list of a type is smaller than its active
 * list over inactive_ratio (int_sqrt(10 * GiB of both), at least 1).
 */
function inactiveIsLow(k: Kernel, lv: Lruvec, inactiveLru: number): boolean {
  const inactive = lruvecPageState(k, lv, inactiveLru);
  const active = lruvecPageState(k, lv, inactiveLru + 1);
  const gb = Math.floor(((inactive + active) * PAGE_SIZE) / 2 ** 30);
  const ratio = gb ? Math.floor(Math.sqrt(10 * gb)) : 1;
  return inactive * ratio < active;
}

/** The lruvec reclaim is for on node nid: the target group's (mem_cgroup_lruvec), the node's for global reclaim. */
function targetLruvec(k: Kernel, sc: ScanControl, nid: number): Lruvec {
  return sc.memcg ? sc.memcg.lruvecs[nid]! : k.nodeLruvec[nid]!;
}

/**
 * prepare_scan_control, at the start of each shrink_node: the target's
 * reclaim costs; which active lists may be aged (an inactive list that is
 * low, or refaults activated since reclaim last left the node: a new
 * workingset forming, whose stale active pages should go); cache_trim_mode when the inactive file list is large enough
 * at this priority and need not be refilled; and, for global reclaim,
 * file_is_tiny: file pages and free pages together under the node's high
 * watermark while the inactive anon list is not low.
 */
function prepareScanControl(k: Kernel, nid: number, sc: ScanControl): void {
  const target = targetLruvec(k, sc, nid);
  sc.anonCost = target.anonCost;
  sc.fileCost = target.fileCost;
  if (sc.forceDeactivate) sc.mayDeactivate = DEACTIVATE_ANON | DEACTIVATE_FILE;
  else
    sc.mayDeactivate =
      (target.workingsetActivate[ANON] !== target.refaults[ANON] || inactiveIsLow(k, target, LRU_INACTIVE_ANON) ? DEACTIVATE_ANON : 0) |
      (target.workingsetActivate[FILE] !== target.refaults[FILE] || inactiveIsLow(k, target, LRU_INACTIVE_FILE) ? DEACTIVATE_FILE : 0);
  const inactiveFile = lruvecPageState(k, target, LRU_INACTIVE_FILE);
  sc.cacheTrimMode = shr(inactiveFile, sc.priority) > 0 && !(sc.mayDeactivate & DEACTIVATE_FILE);
  if (!sc.memcg) {
    const z = k.phys.zones[nid]!;
    const file = inactiveFile + lruvecPageState(k, target, LRU_ACTIVE_FILE);
    const anon = lruvecPageState(k, target, LRU_INACTIVE_ANON);
    sc.fileIsTiny = file + z.freePages <= z.wmark[WMARK_HIGH]! && !(sc.mayDeactivate & DEACTIVATE_ANON) && shr(anon, sc.priority) > 0;
  }
}

/** x >> shift for page counts past 2^32. */
function shr(x: number, shift: number): number {
  return Math.floor(x / 2 ** shift);
}

/** can_reclaim_anon_pages: swap has free slots, and the lruvec's group (and its ancestors) may take more. */
function canReclaimAnonPages(k: Kernel, lv: Lruvec): boolean {
  if (k.swap.nrSwapPages <= 0) return false;
  return !lv.memcg || memcgSwapMargin(lv.memcg as MemCgroup) >= 1;
}

/**
 * get_scan_count: how many pages of each list of `lv` to scan this round,
 * each list's own size >> priority (less what memory.min/low protects),
 * split between anon and file by scan_balance:
 * - SCAN_FILE when anon cannot go anywhere (no swap slot, may_swap off),
 *   for cgroup reclaim at swappiness 0, and in cache_trim_mode;
 * - SCAN_EQUAL at priority 0 (near OOM) unless swappiness is 0;
 * - SCAN_ANON when file_is_tiny;
 * - otherwise SCAN_FRACT: anon in proportion to swappiness over the
 *   anon cost, file to (MAX_SWAPPINESS - swappiness) over the file cost,
 *   each cost at least a third of the total (total + own).
 * vm.swappiness is every group's (cgroup v2's mem_cgroup_swappiness).
 */
export function getScanCount(k: Kernel, lv: Lruvec, sc: ScanControl, prot: Protection = NO_PROTECTION): number[] {
  const swappiness = k.swappiness;
  let balance: number;
  let fraction: [bigint, bigint] = [0n, 0n];
  let denominator = 0n;
  if (sc.maySwap === false || !canReclaimAnonPages(k, lv)) balance = SCAN_FILE;
  else if (sc.memcg && !swappiness) balance = SCAN_FILE;
  else if (!sc.priority && swappiness) balance = SCAN_EQUAL;
  else if (sc.fileIsTiny) balance = SCAN_ANON;
  else if (sc.cacheTrimMode) balance = SCAN_FILE;
  else {
    balance = SCAN_FRACT;
    const own = BigInt(sc.anonCost! + sc.fileCost!);
    const anonCost = own + BigInt(sc.anonCost!);
    const fileCost = own + BigInt(sc.fileCost!);
    const total = anonCost + fileCost;
    const ap = (BigInt(swappiness) * (total + 1n)) / (anonCost + 1n);
    const fp = (BigInt(MAX_SWAPPINESS - swappiness) * (total + 1n)) / (fileCost + 1n);
    fraction = [ap, fp];
    denominator = ap + fp;
  }
  const nr = [0, 0, 0, 0];
  for (let lru = 0; lru < NR_LRU_LISTS; lru++) {
    const file = lru >= LRU_INACTIVE_FILE ? 1 : 0;
    let scan = shr(protectedSize(lv.size(lru), prot, sc), sc.priority);
    if (balance === SCAN_FRACT) scan = denominator ? Number((BigInt(scan) * fraction[file]!) / denominator) : 0;
    else if ((balance === SCAN_FILE || balance === SCAN_ANON) && (balance === SCAN_FILE) !== (file === 1)) scan = 0;
    nr[lru] = scan;
  }
  return nr;
}

/** shrink_list: an active list is aged if may_deactivate allows it (else skipped_deactivate); an inactive one reclaimed. */
function shrinkList(k: Kernel, lru: number, nrToScan: number, lv: Lruvec, sc: ScanControl): number {
  if (lru === LRU_ACTIVE_ANON || lru === LRU_ACTIVE_FILE) {
    if (sc.mayDeactivate! & (lru === LRU_ACTIVE_FILE ? DEACTIVATE_FILE : DEACTIVATE_ANON)) shrinkActiveList(k, lv, nrToScan, lru, sc);
    else sc.skippedDeactivate = true;
    return 0;
  }
  return lru === LRU_INACTIVE_FILE ? shrinkInactiveFileList(k, lv, nrToScan, sc) : shrinkInactiveList(k, lv, nrToScan, sc);
}

/**
 * shrink_lruvec: get_scan_count's targets, taken SWAP_CLUSTER_MAX pages
 * per list per pass in list order (inactive anon, active anon, inactive
 * file, active file) while an inactive list or the active file list has
 * some left. Direct global reclaim at DEF_PRIORITY scans its targets
 * whole; any other reclaim stops once it has nr_to_reclaim, after one
 * nudge towards proportionality: the type with less left stops, the other
 * is cut to the share of its target the first had left. Then, if swap
 * exists, the active anon list is aged when the inactive one is low.
 */
function shrinkLruvec(k: Kernel, lv: Lruvec, sc: ScanControl, prot: Protection = NO_PROTECTION): void {
  const nr = getScanCount(k, lv, sc, prot);
  const targets = nr.slice();
  const proportionalReclaim = !sc.memcg && !sc.kswapd && sc.priority === DEF_PRIORITY;
  let reclaimed = 0;
  while (nr[LRU_INACTIVE_ANON] || nr[LRU_ACTIVE_FILE] || nr[LRU_INACTIVE_FILE]) {
    for (let lru = 0; lru < NR_LRU_LISTS; lru++) {
      if (!nr[lru]) continue;
      const n = Math.min(nr[lru]!, SWAP_CLUSTER_MAX);
      nr[lru]! -= n;
      reclaimed += shrinkList(k, lru, n, lv, sc);
    }
    if (reclaimed < sc.nrToReclaim || proportionalReclaim) continue;
    const nrFile = nr[LRU_INACTIVE_FILE]! + nr[LRU_ACTIVE_FILE]!;
    const nrAnon = nr[LRU_INACTIVE_ANON]! + nr[LRU_ACTIVE_ANON]!;
    if (!nrFile || !nrAnon) break;
    // Stop the type with less left; scale the other down to the share the stopped one had still to go.
    const [stop, other] = nrFile > nrAnon ? [LRU_INACTIVE_ANON, LRU_INACTIVE_FILE] : [LRU_INACTIVE_FILE, LRU_INACTIVE_ANON];
    const left = stop === LRU_INACTIVE_ANON ? nrAnon : nrFile;
    const percentage = Math.floor((left * 100) / (targets[stop]! + targets[stop + 1]! + 1));
    nr[stop] = 0;
    nr[stop + 1] = 0;
    for (const lru of [other, other + 1]) {
      const scanned = targets[lru]! - nr[lru]!;
      nr[lru] = Math.floor((targets[lru]! * (100 - percentage)) / 100);
      nr[lru]! -= Math.min(nr[lru]!, scanned);
    }
  }
  sc.nrReclaimed += reclaimed;
  // can_age_anon_pages (swap exists) and the anon inactive list low: rebalance it even if anon was not scanned.
  if (k.swap.totalSwapPages > 0 && inactiveIsLow(k, lv, LRU_INACTIVE_ANON)) shrinkActiveList(k, lv, SWAP_CLUSTER_MAX, LRU_ACTIVE_ANON, sc);
}

/** mem_cgroup_protection of a group below the target: its effective memory.min and memory.low (pages). */
export interface Protection {
  min: number;
  low: number;
  /** mem_cgroup_size: the group's usage. */
  size: number;
}
const NO_PROTECTION: Protection = { min: 0, low: 0, size: 0 };

/**
 * apply_proportional_protection (get_scan_count): a list of a group with
 * memory.low or memory.min protection is scanned in proportion to how far
 * the group is over it (memory.low's only in the first pass, which then
 * counts as having skipped protection: memcg_low_skipped), at least
 * SWAP_CLUSTER_MAX pages.
 */
function protectedSize(size: number, prot: Protection, sc: ScanControl): number {
  if (!prot.min && !prot.low) return size;
  let protection = prot.min;
  if (!sc.memcgLowReclaim && prot.low > prot.min) {
    protection = prot.low;
    sc.memcgLowSkipped = true;
  }
  const cgroupSize = Math.max(prot.size, protection);
  const scan = size - Math.floor((size * protection) / (cgroupSize + 1));
  return Math.max(scan, SWAP_CLUSTER_MAX);
}

/**
 * shrink_node: prepare_scan_control, then shrink_node_memcgs: reclaim on
 * node `nid` from every group under the target (the root for global
 * reclaim), each from its own lruvec, skipping groups within their
 * memory.min, and within memory.low unless this is the pass that may take
 * from them (then counting a low event). Each group's pgscan and pgsteal
 * count what was taken from it.
 */
function shrinkNode(k: Kernel, nid: number, sc: ScanControl): void {
  prepareScanControl(k, nid, sc);
  if (!k.memcg.active) {
    shrinkLruvec(k, k.nodeLruvec[nid]!, sc);
    return;
  }
  const target = sc.memcg ?? k.memcg.root;
  memcgCalculateProtection(target);
  for (const cg of target.subtree()) {
    let prot = NO_PROTECTION;
    if (memcgBelowMin(target, cg)) continue;
    if (memcgBelowLow(target, cg)) {
      if (!sc.memcgLowReclaim) {
        sc.memcgLowSkipped = true;
        continue;
      }
      memcgMemoryEvent(cg, 'low');
    }
    if (cg !== target && cg.parent) prot = { min: cg.emin, low: cg.elow, size: cg.usage };
    const scanned = sc.nrScanned;
    const reclaimed = sc.nrReclaimed;
    shrinkLruvec(k, cg.lruvecs[nid]!, sc, prot);
    if (cg.parent) {
      cg.count('pgscan', sc.nrScanned - scanned);
      cg.count('pgsteal', sc.nrReclaimed - reclaimed);
      cg.count(sc.kswapd ? 'pgscan_kswapd' : 'pgscan_direct', sc.nrScanned - scanned);
      cg.count(sc.kswapd ? 'pgsteal_kswapd' : 'pgsteal_direct', sc.nrReclaimed - reclaimed);
    }
    if (sc.nrReclaimed >= sc.nrToReclaim && !sc.kswapd) break;
  }
}

/**
 * The priority loop of do_try_to_free_pages over `nodes`. When a whole
 * loop reclaimed nothing it is run again from DEF_PRIORITY: first with
 * force_deactivate if an active list was left unaged (skipped_deactivate),
 * then into memory.low protection if a protected group was spared.
 */
function doTryToFreePages(k: Kernel, nodes: readonly number[], sc: ScanControl): number {
  const saved = k.phys.memalloc;
  k.phys.memalloc = true;
  try {
    for (;;) {
      for (; sc.priority >= 0; sc.priority--) {
        for (const nid of nodes) shrinkNode(k, nid, sc);
        if (sc.nrReclaimed >= sc.nrToReclaim) break;
      }
      for (const nid of nodes) snapshotRefaults(targetLruvec(k, sc, nid));
      if (sc.nrReclaimed) break;
      if (sc.skippedDeactivate) {
        sc.priority = DEF_PRIORITY;
        sc.forceDeactivate = true;
        sc.skippedDeactivate = false;
        continue;
      }
      if (!sc.memcgLowSkipped || sc.memcgLowReclaim) break;
      sc.priority = DEF_PRIORITY;
      sc.forceDeactivate = false;
      sc.memcgLowReclaim = true;
      sc.memcgLowSkipped = false;
    }
  } finally {
    k.phys.memalloc = saved;
  }
  return sc.nrReclaimed;
}

/**
 * try_to_free_mem_cgroup_pages: reclaim at least nrPages (and
 * SWAP_CLUSTER_MAX) from `memcg`'s subtree on every node, for a charge
 * over memory.max or memory.high. `maySwap` false: file pages only
 * (MEMCG_RECLAIM_MAY_SWAP not given).
 */
export function tryToFreeMemCgroupPages(k: Kernel, memcg: MemCgroup, nrPages: number, maySwap: boolean): number {
  const sc: ScanControl = {
    nrToReclaim: Math.max(nrPages, SWAP_CLUSTER_MAX),
    nrReclaimed: 0,
    nrScanned: 0,
    priority: DEF_PRIORITY,
    nid: 0,
    kswapd: false,
    memcg,
    maySwap,
  };
  return doTryToFreePages(
    k,
    k.nodeLruvec.map((lv) => lv.nid),
    sc,
  );
}

/**
 * try_to_free_pages / do_try_to_free_pages for an allocation on the nodes
 * of `req`: from DEF_PRIORITY down to 0, shrink each allowed node's lruvec
 * until SWAP_CLUSTER_MAX pages are reclaimed. Counts allocstall_normal.
 */
export function tryToFreePages(k: Kernel, req: AllocRequest): number {
  k.vmstat.count('allocstall_normal');
  const sc: ScanControl = {
    nrToReclaim: SWAP_CLUSTER_MAX,
    nrReclaimed: 0,
    nrScanned: 0,
    priority: DEF_PRIORITY,
    nid: req.nid,
    kswapd: false,
  };
  const nodes = (req.thisNode ? [req.nid] : k.phys.zonelists[req.nid]!).filter((n) => !req.nodemask || req.nodemask.includes(n));
  return doTryToFreePages(k, nodes, sc);
}

// --- kswapd ----------------------------------------------------------------------

/**
 * zone_reclaimable_pages: node nid's file pages, and its anon pages while
 * swap has a free slot; a node with neither counts its free pages (6.18:
 * such a zone is not written off while it still has free memory).
 */
export function zoneReclaimablePages(k: Kernel, nid: number): number {
  const lv = k.nodeLruvec[nid]!;
  let nr = nodeFilePages(k, nid);
  if (k.swap.nrSwapPages > 0) nr += lruvecPageState(k, lv, LRU_INACTIVE_ANON) + lruvecPageState(k, lv, LRU_ACTIVE_ANON);
  return nr || k.phys.zones[nid]!.freePages;
}

/** Pages on node nid's file lists, every group's. */
export function nodeFilePages(k: Kernel, nid: number): number {
  const lv = k.nodeLruvec[nid]!;
  return lruvecPageState(k, lv, LRU_INACTIVE_FILE) + lruvecPageState(k, lv, LRU_ACTIVE_FILE);
}

/**
 * The per-node kswapd threads: woken when an allocation leaves a node below
 * its low watermark (unless the node has neither a free swap slot nor a
 * file page: nothing they could reclaim), each runs balance_pgdat as a task of its own (its
 * time in `cpuNs`, not the allocating task's), then sleeps until the next
 * wake-up.
 */
export class Kswapd {
  private readonly pending: (EventHandle | null)[];
  /** Thread time per node, and passes (pageoutrun). */
  readonly cpuNs: number[];

  constructor(private readonly k: Kernel) {
    this.pending = k.nodeLruvec.map(() => null);
    this.cpuNs = k.nodeLruvec.map(() => 0);
  }

  /** wakeup_kswapd (not when it could reclaim nothing: no swap slot and no file page on the node). */
  wake(nid: number): void {
    if (this.pending[nid] || (this.k.swap.nrSwapPages <= 0 && !nodeFilePages(this.k, nid))) return;
    this.pending[nid] = this.k.events.after(0, 'kswapd', () => this.run(nid));
  }

  private run(nid: number): void {
    this.pending[nid] = null;
    const own = { ns: 0 };
    // kswapdN runs on its node's CPUs (kthread_bind_mask to cpumask_of_node), its time spent on the scheduler.
    this.k.runAsTask(own, () => balancePgdat(this.k, nid));
    const se = this.k.spend({ name: `kswapd${nid}`, cpus: this.k.host.nodes[nid]?.cpus }, own.ns);
    // balance_pgdat runs in a memory stall (psi_memstall_enter): kswapd's pressure on the system (psi.ts).
    this.k.psi.kthreadStall(se, own.ns);
    this.cpuNs[nid]! += own.ns;
  }
}

/**
 * balance_pgdat: reclaim on node `nid` until its free pages are above the
 * high watermark, from DEF_PRIORITY down (a priority that reclaimed its
 * target is kept for the next round, as kswapd raises it back), in rounds
 * of at least SWAP_CLUSTER_MAX pages (kswapd_shrink_node's target is the
 * high watermark). The whole work loop of one wake-up, so that it can move
 * onto a scheduled CPU later.
 */
export function balancePgdat(k: Kernel, nid: number): void {
  const z = k.phys.zones[nid]!;
  const high = z.wmark[WMARK_HIGH]!;
  k.vmstat.count('pageoutrun');
  const saved = k.phys.memalloc;
  k.phys.memalloc = true; // PF_MEMALLOC
  try {
    let priority = DEF_PRIORITY;
    while (z.freePages <= high && priority >= 1) {
      const sc: ScanControl = { nrToReclaim: Math.max(SWAP_CLUSTER_MAX, high), nrReclaimed: 0, nrScanned: 0, priority, nid, kswapd: true };
      shrinkNode(k, nid, sc);
      if (sc.nrReclaimed < sc.nrToReclaim) priority--;
      if (!sc.nrScanned && !sc.nrReclaimed && k.swap.nrSwapPages <= 0 && !nodeFilePages(k, nid)) break;
    }
    snapshotRefaults(k.nodeLruvec[nid]!);
  } finally {
    k.phys.memalloc = saved;
  }
}
