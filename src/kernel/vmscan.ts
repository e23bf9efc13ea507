/**
 * Reclaim of given pages (mm/vmscan.c reclaim_pages -> shrink_folio_list,
 * and the unmap half of mm/rmap.c try_to_unmap), as MADV_PAGEOUT drives it.
 *
 * For each order-0 anonymous folio, in the order the caller isolated them
 * (address order for madvise):
 * - a lazyfree folio (MADV_FREE'd, not written since) is discarded: its PTE
 *   is cleared, the frame freed (pglazyfreed); a later read sees zeros;
 * - any other one needs a swap slot (add_to_swap: folio_alloc_swap, then
 *   the swap cache, dirty); without one it stays (activate_locked);
 * - try_to_unmap puts the swap entry in the PTE (MM_SWAPENTS, the slot's
 *   count); a dirty folio is written (pageout -> swap_writeout): a
 *   zero-filled one only sets the zeromap, zram completes at once, a swap
 *   file's write is asynchronous and the folio stays in the swap cache,
 *   PG_reclaim, until reclaim scans it again; a clean one (already in the
 *   cache with its slot) is freed at once (__remove_mapping).
 *
 * The LRU lists, watermarks, kswapd and direct reclaim are not modelled yet:
 * nothing reclaims memory by itself when a node runs short, and pages left
 * in the swap cache after an asynchronous write stay there (SwapCached)
 * until their slot goes (zap, swap-in by a write fault).
 */
import type { Kernel } from './kernel.ts';
import { PG } from './page.ts';
import { PageTable, PteTable, PTE_NONE, pfnOfPte, pteOfSwpEntry } from './mm_types.ts';
import { PAGE_SIZE } from './uapi.ts';
import { swapCacheAddFolio, swapCacheDelFolio, swapWriteout } from './swap_state.ts';

/** What shrinkFolio did with a folio. */
export type ShrinkResult = 'freed' | 'swapcache' | 'kept';

/**
 * try_to_unmap of an order-0 anonymous folio mapped once, by the PTE at
 * its rmap address (owner mm, index): the PTE gets `swapPte` (PTE_NONE to
 * discard), RSS and the mapcount drop. False if the PTE does not map it.
 */
function tryToUnmap(k: Kernel, pfn: number, swapPte: number): boolean {
  const m = k.mem;
  const mm = k.mmById(m.owner(pfn));
  if (!mm) return false;
  const va = m.index(pfn) * PAGE_SIZE;
  const t = mm.pgtable.pmds.get(PageTable.pmdKey(va));
  if (!(t instanceof PteTable)) return false;
  const i = Math.floor(va / PAGE_SIZE) & 511;
  const pte = t.ptes[i]!;
  if (pte <= 0 || pfnOfPte(pte) !== pfn) return false;
  t.ptes[i] = swapPte;
  if (swapPte === PTE_NONE) t.used--;
  else {
    mm.swapents++;
    k.swap.dup(k.swap.entryOf.get(pfn)!);
  }
  mm.rssAnon--;
  m.addMapcount(pfn, -1);
  return true;
}

/**
 * shrink_folio_list for one isolated order-0 anonymous folio mapped by one
 * PTE, with references ignored (reclaim_pages): see the header.
 */
export function shrinkFolio(k: Kernel, pfn: number): ShrinkResult {
  const m = k.mem;
  const f = m.flags(pfn);
  if (!(f & PG.anon) || f & (PG.head | PG.tail) || m.mapcount(pfn) !== 1) return 'kept';
  if (f & PG.lazyfree && !(f & PG.swapcache)) {
    // A clean lazyfree folio: try_to_unmap discards it (the PTE is cleared).
    if (!tryToUnmap(k, pfn, PTE_NONE)) return 'kept';
    k.vmstat.count('pglazyfreed');
    k.freeUserPages(pfn, 0);
    return 'freed';
  }
  if (!(f & PG.swapcache)) {
    // add_to_swap: a slot, the swap cache, and the folio dirty (its content is not on swap yet).
    const entry = k.swap.allocSwapEntry(0);
    if (entry < 0) return 'kept';
    swapCacheAddFolio(k, pfn, entry, 1);
    m.addFlags(pfn, PG.dirty);
  }
  const entry = k.swap.entryOf.get(pfn)!;
  if (!tryToUnmap(k, pfn, pteOfSwpEntry(entry))) return 'kept';
  if (m.flags(pfn) & PG.dirty) {
    const w = swapWriteout(k, pfn);
    if (w === 'fail') return 'swapcache'; // stays in the cache, dirty: the next reclaim tries again
    if (w === 'async') {
      m.addFlags(pfn, PG.reclaim);
      return 'swapcache';
    }
  }
  // Clean and unmapped: __remove_mapping takes it out of the swap cache (keeping the slot) and frees it.
  swapCacheDelFolio(k, pfn, 0);
  k.freeUserPages(pfn, 0);
  return 'freed';
}
