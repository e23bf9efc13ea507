/**
 * The swap cache and swap I/O (mm/swap_state.c, mm/page_io.c).
 *
 * A folio being written to swap, or read back from it, sits in the swap
 * cache under its swap entry (PG_swapcache, folio->swap), so that every
 * page table holding the entry finds the same page. After a swap-in the
 * page may stay there with its slot kept (a clean copy on swap: reclaim
 * can drop it again without writing); a write to it makes it dirty.
 *
 * I/O: a swap file's writes are asynchronous (the folio stays in the swap
 * cache, on the tail of the inactive list, until reclaim finds it again;
 * memtwin completes the write at once, as if its bio ended before that
 * scan). zram's are synchronous (the folio is freed in the same pass). A
 * zero-filled page is not written at all (the zeromap, swpout_zero) and
 * reads back as zeros (swpin_zero). Reads: do_swap_page of a slot not in
 * the cache reads it with readahead (swapin_readahead): cluster readahead
 * (2^page_cluster slots around it) when any swap area is rotational, VMA
 * readahead (neighbouring PTEs) otherwise; zram with a slot used once
 * skips the cache and readahead altogether (SWP_SYNCHRONOUS_IO).
 *
 * Costs (profiles/default.json, measured by memtwin calibrate on a swap
 * file): swapout_4k per page written, swapin_4k for a major fault (the
 * fault's own read; pages read ahead with it are not waited for),
 * swapin_swapcache_4k for a fault that finds its page in the swap cache
 * (swapin_4k_ra, measured with readahead on, checks that model). zram
 * (zram_swapout_4k, zram_swapin_4k) has no measurement yet: swapon of a
 * zram area is not offered by any op.
 */
import { memcgSwapFull, memcgSwapinCharge } from './memcontrol.ts';
import type { Kernel } from './kernel.ts';
import { PG } from './page.ts';
import { MIGRATE_MOVABLE } from './page_alloc.ts';
import { folioAddLru } from './swap.ts';
import { PAGE_SIZE, PMD_SIZE } from './uapi.ts';
import { swpEntry, swpOffset, swpType, type SwapInfo } from './swapfile.ts';
import { PageTable, PteTable, isSwapPte, pteOf, swpEntryOfPte, type MmStruct, type Vma } from './mm_types.ts';
import { anonVmaPrepare } from './mmap.ts';
import { workingsetRefault } from './workingset.ts';

/** Owner of a swap cache page that no page table maps yet (read ahead, or read for another mm). */
export const OWNER_SWAPCACHE = -3;
/** Owner of a frame holding zram's compressed data (zsmalloc). */
export const OWNER_ZRAM = -4;

/** swap_cache_get_folio: the frame caching `entry`, or -1. */
export function swapCacheGetFolio(k: Kernel, entry: number): number {
  return k.swap.cache.get(entry) ?? -1;
}

/**
 * swap_cache_add_folio: the folio's pages join the swap cache under
 * `entry` and the slots that follow (already taken with SWAP_HAS_CACHE).
 * Returns the shadow the first slot held.
 */
export function swapCacheAddFolio(k: Kernel, head: number, entry: number, nr: number): number {
  const st = k.swap;
  const { t, i } = st.slot(entry);
  const shadow = t.shadow[i]!;
  for (let j = 0; j < nr; j++) {
    st.cache.set(entry + j, head + j);
    const s = st.slot(entry + j);
    s.t.cache[s.i] = 1;
    s.t.shadow[s.i] = 0;
  }
  st.entryOf.set(head, entry);
  k.mem.addFlags(head, PG.swapcache);
  k.swapCachePages += nr;
  return shadow;
}

/** __swap_cache_replace_folio: a migrated folio's new frame takes its place in the swap cache. */
export function swapCacheReplace(k: Kernel, oldPfn: number, newPfn: number): void {
  const st = k.swap;
  const entry = st.entryOf.get(oldPfn);
  if (entry === undefined) return;
  st.entryOf.delete(oldPfn);
  st.entryOf.set(newPfn, entry);
  st.cache.set(entry, newPfn);
}

/**
 * __swap_cache_del_folio: the folio leaves the swap cache; each slot keeps
 * `shadow` (0: none) and loses SWAP_HAS_CACHE, and is freed if no page
 * table holds it any more.
 */
export function swapCacheDelFolio(k: Kernel, head: number, shadow: number): void {
  const st = k.swap;
  const entry = st.entryOf.get(head);
  if (entry === undefined) return;
  const nr = k.mem.flags(head) & PG.head ? 1 << k.mem.order(head) : 1;
  st.entryOf.delete(head);
  k.mem.clearFlags(head, PG.swapcache | PG.reclaim);
  k.swapCachePages -= nr;
  for (let j = 0; j < nr; j++) {
    st.cache.delete(entry + j);
    const { t, i } = st.slot(entry + j);
    t.cache[i] = 0;
    t.shadow[i] = shadow;
    st.maybeFree(entry + j);
  }
}

/** folio_swapped: whether any page table still holds one of the folio's entries. */
export function folioSwapped(k: Kernel, head: number): boolean {
  const entry = k.swap.entryOf.get(head);
  if (entry === undefined) return false;
  const nr = k.mem.flags(head) & PG.head ? 1 << k.mem.order(head) : 1;
  for (let j = 0; j < nr; j++) if (k.swap.count(entry + j) > 0) return true;
  return false;
}

/**
 * folio_free_swap: a folio in the swap cache that no page table references
 * through its entry leaves the cache and frees its slot; it is dirty now
 * (its only copy is in memory). False if it is still swapped somewhere.
 */
export function folioFreeSwap(k: Kernel, head: number): boolean {
  if (!(k.mem.flags(head) & PG.swapcache) || folioSwapped(k, head)) return false;
  swapCacheDelFolio(k, head, 0);
  k.mem.addFlags(head, PG.dirty);
  return true;
}

/** The cost of a swap I/O of one page on an area: `file` or zram measurements. */
function ioCost(k: Kernel, si: SwapInfo, write: boolean): number {
  if (si.kind === 'zram') return k.costs.nsOf(write ? 'zram_swapout_4k' : 'zram_swapin_4k', 'zram swap');
  return k.costs.nsOf(write ? 'swapout_4k' : 'swapin_4k', 'swap to a file');
}

/**
 * swap_writeout of a folio in the swap cache: a zero-filled folio only sets
 * the zeromap (swpout_zero, no I/O); otherwise its pages' contents go to
 * their slots (pswpout). zram keeps the compressed data in frames of its
 * own, allocated as it fills (-1 when it cannot get one: the write fails).
 * Returns 'sync' when the write is complete (zram, or nothing written),
 * 'async' for a swap file's bio, 'fail'.
 */
export function swapWriteout(k: Kernel, head: number): 'sync' | 'async' | 'fail' {
  const m = k.mem;
  const st = k.swap;
  const entry = st.entryOf.get(head)!;
  const si = st.info(entry)!;
  const nr = m.flags(head) & PG.head ? 1 << m.order(head) : 1;
  let zero = true;
  for (let j = 0; j < nr && zero; j++) if (m.flags(head + j) & PG.nonzero || m.token(head + j) & 0xff) zero = false;
  if (zero) {
    for (let j = 0; j < nr; j++) {
      const { t, i } = st.slot(entry + j);
      t.written[i] = 1;
      t.token[i] = 0;
    }
    m.clearFlags(head, PG.dirty);
    k.vmstat.count('swpout_zero', nr);
    return 'sync';
  }
  if (si.kind === 'zram' && !zramReserve(k, si, nr)) return 'fail';
  for (let j = 0; j < nr; j++) {
    const { t, i } = st.slot(entry + j);
    if (t.written[i] !== 2 && si.kind === 'zram') si.zramPagesStored++;
    t.written[i] = 2;
    // The slot keeps the content token and whether the page was known non-zero (the token's first byte says the rest).
    t.token[i] = m.token(head + j);
    if (m.flags(head + j) & PG.nonzero) t.written[i] = 3;
  }
  m.clearFlags(head, PG.dirty);
  k.vmstat.count('pswpout', nr);
  if (nr > 1) k.vmstat.count('thp_swpout');
  k.charge(nr * ioCost(k, si, true));
  return si.synchronous ? 'sync' : 'async';
}

/**
 * zram's memory for `nr` more pages: zsmalloc takes frames as the
 * compressed data grows (zramBytesPerPage per page stored).
 */
function zramReserve(k: Kernel, si: SwapInfo, nr: number): boolean {
  const need = Math.ceil(((si.zramPagesStored + nr) * si.zramBytesPerPage) / PAGE_SIZE);
  while (si.zramFrames.length < need) {
    const pfn = k.phys.alloc({ order: 0, mt: MIGRATE_MOVABLE, nid: 0 });
    if (pfn < 0) return false;
    k.mem.setOwner(pfn, OWNER_ZRAM);
    si.zramFrames.push(pfn);
  }
  return true;
}

/** zram gives back frames its stored pages no longer need (zsmalloc compaction, done at once). */
export function zramShrink(k: Kernel, si: SwapInfo): void {
  const need = Math.ceil((si.zramPagesStored * si.zramBytesPerPage) / PAGE_SIZE);
  while (si.zramFrames.length > need) k.phys.free(si.zramFrames.pop()!, 0);
}

/**
 * swap_read_folio: the page at `pfn` gets the content of `entry`'s slot.
 * A zeromap slot reads as zeros (swpin_zero), anything else is I/O
 * (pswpin). Returns the cost of the read (the caller charges it: a fault
 * waits for it, readahead does not).
 */
export function swapReadFolio(k: Kernel, pfn: number, entry: number): number {
  const m = k.mem;
  const { si, t, i } = k.swap.slot(entry);
  const w = t.written[i]!;
  if (w <= 1) {
    m.setToken(pfn, 0);
    m.clearFlags(pfn, PG.nonzero);
    k.vmstat.count('swpin_zero');
    return 0;
  }
  m.setToken(pfn, t.token[i]!);
  if (w === 3) m.addFlags(pfn, PG.nonzero);
  else m.clearFlags(pfn, PG.nonzero);
  k.vmstat.count('pswpin');
  return ioCost(k, si, false);
}

/**
 * swap_entry_swapped: whether a slot is worth reading (some page table
 * still holds it).
 */
function entrySwapped(k: Kernel, entry: number): boolean {
  const si = k.swap.info(entry);
  if (!si) return false;
  const off = swpOffset(entry);
  if (off <= 0 || off >= si.max) return false;
  return k.swap.count(entry) > 0;
}

export interface SwapinResult {
  /** The frame now holding the page, or -1 (no memory). */
  pfn: number;
  /** Time the faulting task waits for the read (0 when it was cached). */
  ns: number;
  /** The page was read (not found in the swap cache). */
  read: boolean;
}

/**
 * __read_swap_cache_async + swap_read_folio: the page for `entry`, from
 * the swap cache or read into a new page added to it (on the LRU, activated
 * if the refault test says so). `nid` is where the page is allocated.
 */
export function readSwapCache(k: Kernel, entry: number, nid: number): SwapinResult {
  const cached = swapCacheGetFolio(k, entry);
  if (cached >= 0) return { pfn: cached, ns: 0, read: false };
  if (!entrySwapped(k, entry)) return { pfn: -1, ns: 0, read: false };
  const pfn = k.phys.alloc({ order: 0, mt: MIGRATE_MOVABLE, nid });
  if (pfn < 0) return { pfn: -1, ns: 0, read: false };
  // mem_cgroup_swapin_charge_folio: charged to the group the entry was charged to.
  if (k.memcg.active && memcgSwapinCharge(k, pfn, entry, null) < 0) {
    k.phys.free(pfn, 0);
    return { pfn: -1, ns: 0, read: false };
  }
  k.accountAlloc(pfn, nid, 1);
  const m = k.mem;
  m.setOwner(pfn, OWNER_SWAPCACHE);
  m.setFlags(pfn, 0);
  // workingset_refault (workingset.ts): a folio evicted recently enough is activated, and one that was
  // workingset before is again (waiting for its read is then a memory stall: a thrashing refault, psi.ts).
  workingsetRefault(k, pfn, swapCacheAddFolio(k, pfn, entry, 1));
  folioAddLru(k, pfn);
  const ns = swapReadFolio(k, pfn, entry);
  return { pfn, ns, read: true };
}

/** Per-VMA readahead state (vma->swap_readahead_info: the last fault address, window and hits). */
const vmaRa = new WeakMap<Vma, { addr: number; win: number; hits: number }>();

/** __swapin_nr_pages: the readahead window from the hits since the last one and the access pattern. */
export function swapinNrPages(prevOffset: number, offset: number, hits: number, maxPages: number, prevWin: number): number {
  let pages = hits + 2;
  if (pages === 2) {
    if (offset !== prevOffset + 1 && offset !== prevOffset - 1) pages = 1;
  } else {
    let roundup = 4;
    while (roundup < pages) roundup <<= 1;
    pages = roundup;
  }
  if (pages > maxPages) pages = maxPages;
  const lastRa = Math.floor(prevWin / 2);
  if (pages < lastRa) pages = lastRa;
  return pages;
}

/** swap_use_vma_readahead: VMA readahead unless disabled or some swap area is rotational. */
export function swapUseVmaReadahead(k: Kernel): boolean {
  return k.swap.vmaRaEnabled && k.swap.nrRotateSwap === 0;
}

/**
 * swap_update_readahead: a fault found its page in the swap cache; a page
 * read ahead counts a hit (swap_ra_hit) for the next window.
 */
export function swapUpdateReadahead(k: Kernel, pfn: number, vma: Vma): void {
  const m = k.mem;
  if (!(m.flags(pfn) & PG.readahead)) return;
  m.clearFlags(pfn, PG.readahead);
  k.vmstat.count('swap_ra_hit');
  if (swapUseVmaReadahead(k)) {
    const ra = vmaRa.get(vma);
    if (ra) ra.hits = Math.min(ra.hits + 1, 0xff);
  } else k.swap.raHits++;
}

/** Read one slot ahead of the fault (skipping what is cached or free); its read cost is not waited for. */
function readAhead(k: Kernel, entry: number, nid: number): number {
  if (swapCacheGetFolio(k, entry) >= 0 || !entrySwapped(k, entry)) return 0;
  // Readahead takes only free memory: reclaim here could free the faulting page, read earlier in the window
  // and not yet mapped (Linux holds it locked and referenced; memtwin does not reclaim for readahead).
  const saved = k.phys.noDirectReclaim;
  k.phys.noDirectReclaim = true;
  const r = readSwapCache(k, entry, nid);
  k.phys.noDirectReclaim = saved;
  if (r.pfn < 0 || !r.read) return 0;
  k.mem.addFlags(r.pfn, PG.readahead);
  k.vmstat.count('swap_ra');
  return 1;
}

/**
 * swapin_readahead for a fault on `entry` at va in mm: the faulting page,
 * read with its readahead window (swap_cluster_readahead or
 * swap_vma_readahead). The fault waits for its own read; the pages read
 * ahead are submitted in the same plug and not waited for (their cost is
 * not charged: see swapin_4k's method, measured with readahead on and off).
 */
export function swapinReadahead(k: Kernel, mm: MmStruct, entry: number, vma: Vma, va: number, nid: number): SwapinResult {
  let own: SwapinResult | null = null;
  const readOwn = (): void => void (own ??= readSwapCache(k, entry, nid));
  const extra = swapUseVmaReadahead(k)
    ? swapVmaReadahead(k, mm, entry, vma, va, nid, readOwn)
    : swapClusterReadahead(k, entry, nid, readOwn);
  readOwn();
  void extra;
  return own as unknown as SwapinResult;
}

/**
 * shmem_swapin_cluster: a shmem page's swap-in reads with
 * swap_cluster_readahead whatever the swap device (shmem has no VMA
 * readahead: its pages are found by file index, not by neighbouring PTEs).
 * The page, read with its window; the pages read ahead are not waited for.
 */
export function shmemSwapinCluster(k: Kernel, entry: number, nid: number): SwapinResult {
  let own: SwapinResult | null = null;
  const readOwn = (): void => void (own ??= readSwapCache(k, entry, nid));
  swapClusterReadahead(k, entry, nid, readOwn);
  readOwn();
  return own as unknown as SwapinResult;
}

/**
 * swap_cache_get_folio for a shmem page found in the swap cache: one read
 * ahead counts a hit (swap_ra_hit) towards the next cluster window.
 */
export function shmemSwapCacheHit(k: Kernel, pfn: number): void {
  if (!(k.mem.flags(pfn) & PG.readahead)) return;
  k.mem.clearFlags(pfn, PG.readahead);
  k.vmstat.count('swap_ra_hit');
  k.swap.raHits++;
}

/**
 * swap_cluster_readahead: an aligned block of 2^page_cluster slots around
 * the faulting one (the window shrinks to one page without readahead hits
 * or an adjacent offset: swapin_nr_pages); returns the pages read ahead.
 */
function swapClusterReadahead(k: Kernel, entry: number, nid: number, readOwn: () => void): number {
  const st = k.swap;
  const offset = swpOffset(entry);
  const si = st.info(entry)!;
  const maxPages = 1 << st.pageCluster;
  if (maxPages <= 1) return 0;
  const hits = st.raHits;
  st.raHits = 0;
  const win = swapinNrPages(st.raPrevOffset, offset, hits, maxPages, st.raLastPages);
  if (!hits) st.raPrevOffset = offset;
  st.raLastPages = win;
  const mask = win - 1;
  if (!mask) return 0;
  let start = offset & ~mask;
  let end = offset | mask;
  if (!start) start++; // the first page is the swap header
  if (end >= si.max) end = si.max - 1;
  let n = 0;
  for (let o = start; o <= end; o++) {
    if (o === offset) readOwn();
    else n += readAhead(k, swpEntry(si.type, o), nid);
  }
  return n;
}

/**
 * swap_vma_readahead: PTEs around the fault in the same VMA and PMD that
 * hold swap entries (the window grows with hits, as swap_vma_ra_win
 * computes it); returns the pages read ahead.
 */
function swapVmaReadahead(k: Kernel, mm: MmStruct, entry: number, vma: Vma, va: number, nid: number, readOwn: () => void): number {
  const st = k.swap;
  const maxWin = 1 << Math.min(st.pageCluster, 5); // SWAP_RA_ORDER_CEILING
  if (maxWin === 1) return 0;
  const faddr = va - (va % PAGE_SIZE);
  const ra = vmaRa.get(vma) ?? { addr: 0, win: 0, hits: 0 };
  const win = swapinNrPages(ra.addr / PAGE_SIZE, faddr / PAGE_SIZE, ra.hits, maxWin, ra.win);
  vmaRa.set(vma, { addr: faddr, win, hits: 0 });
  if (win === 1) return 0;
  let left: number;
  if (faddr === ra.addr + PAGE_SIZE) left = faddr;
  else if (ra.addr === faddr + PAGE_SIZE) left = faddr - win * PAGE_SIZE + PAGE_SIZE;
  else left = faddr - Math.floor((win - 1) / 2) * PAGE_SIZE;
  const right = left + win * PAGE_SIZE;
  if (left < 0) left = 0;
  const pmdStart = faddr - (faddr % PMD_SIZE);
  const start = Math.max(left, vma.start, pmdStart);
  const end = Math.min(right, vma.end, pmdStart + PMD_SIZE);
  const t = mm.pgtable.pmds.get(PageTable.pmdKey(faddr));
  if (!(t instanceof PteTable)) return 0;
  let n = 0;
  for (let a = start; a < end; a += PAGE_SIZE) {
    const pte = t.ptes[(a / PAGE_SIZE) & 511]!;
    if (!isSwapPte(pte)) continue;
    const e = swpEntryOfPte(pte);
    if (a === faddr) readOwn();
    else if (swpType(e) === swpType(entry) || st.info(e)) n += readAhead(k, e, nid);
  }
  return n;
}

/**
 * free_swap_and_cache: a page table drops its reference to `entry` (zap,
 * MADV_FREE). When no page table holds the slot any more and its swap cache
 * folio is mapped nowhere, the folio leaves the cache and is freed
 * (__try_to_reclaim_swap with TTRS_UNMAPPED); the slot is freed with it.
 */
export function freeSwapAndCache(k: Kernel, entry: number): void {
  const st = k.swap;
  if (!st.info(entry)) return;
  const { t, i } = st.slot(entry);
  if (t.count[i]! > 0) t.count[i]!--;
  if (t.count[i] !== 0) return;
  const pfn = swapCacheGetFolio(k, entry);
  if (pfn >= 0 && k.mem.mapcount(pfn) === 0)
    k.freeUserPages(pfn, 0); // leaves the cache as it is freed
  else st.maybeFree(entry);
}

/**
 * do_swap_page for the swap entry in PTE i of table t (va in a private
 * anonymous VMA): the page from the swap cache (a minor fault), else read
 * with readahead (a major fault: pgmajfault). It is mapped in place of the
 * entry, exclusive to this mm, and the entry's reference is dropped
 * (swap_free). should_try_to_free_swap: on a write fault, or with more than
 * half of the swap in use (vm_swap_full), the page leaves the swap cache
 * and its slot is freed; otherwise it stays there, clean, so reclaim can
 * drop it again without writing. False when no page could be allocated
 * (VM_FAULT_OOM). New pages are allocated on node `nid` (the faulting CPU's).
 */
export function doSwapPage(k: Kernel, mm: MmStruct, vma: Vma, t: PteTable, i: number, va: number, write: boolean, nid: number): boolean {
  const st = k.swap;
  const entry = swpEntryOfPte(t.ptes[i]!);
  let pfn = swapCacheGetFolio(k, entry);
  if (pfn >= 0) {
    swapUpdateReadahead(k, pfn, vma);
    k.charge(k.costs.nsOf('swapin_swapcache_4k', 'a fault on a page in the swap cache')); // a minor fault
  } else {
    const r = swapinReadahead(k, mm, entry, vma, va, nid);
    if (r.pfn < 0) return false;
    pfn = r.pfn;
    k.vmstat.count('pgmajfault');
    // swap_read_folio / folio_wait_bit: waiting for a workingset folio's read is a memory stall (psi.ts).
    if (r.read && k.mem.flags(pfn) & PG.workingset) k.psi.memstall(() => k.charge(r.ns));
    else k.charge(r.ns);
  }
  const m = k.mem;
  m.clearFlags(pfn, PG.readahead);
  const page = Math.floor(va / PAGE_SIZE);
  // The fault's access sets the accessed bit of the new PTE.
  const alone = m.mapcount(pfn) === 0;
  if (alone) m.initAnonPage(pfn, mm.id, page, (m.flags(pfn) & ~PG.anonExclusive) | PG.anon | PG.young);
  else {
    m.addMapcount(pfn, 1);
    m.addFlags(pfn, PG.young);
  }
  t.ptes[i] = pteOf(pfn);
  mm.swapents--;
  mm.rssAnon++;
  anonVmaPrepare(k, mm, vma);
  // swap_free_nr: the PTE's reference to the slot goes (the cache's stays).
  const s = st.slot(entry);
  s.t.count[s.i]!--;
  // RMAP_EXCLUSIVE: no other process maps the page or holds its swap entry (one a fork shared) - the exclusive
  // marker of Linux's swap PTE, which memtwin's swap PTEs do not carry, read off the counts instead.
  if (alone && s.t.count[s.i] === 0) m.addFlags(pfn, PG.anonExclusive);
  else m.clearFlags(pfn, PG.anonExclusive);
  if (write || st.vmSwapFull() || (k.memcg.active && memcgSwapFull(k, pfn))) folioFreeSwap(k, pfn);
  return true;
}
