/**
 * The buddy allocator (mm/page_alloc.c), one zone per NUMA node.
 *
 * Free blocks of 2^order frames sit on free_area[order] lists, split per
 * migratetype as Linux groups pageblocks by mobility; freeing coalesces a
 * block with its buddy (pfn ^ (1 << order)) for as long as the buddy is
 * free at the same order. Memory a node has never handed out is kept as a
 * "pristine" tail that is carved into MAX_PAGE_ORDER blocks on demand
 * (cf. deferred struct page init), which is what lets a 1 TiB host exist
 * without 1 TiB worth of metadata.
 */
import { MAX_PAGE_ORDER } from './uapi.ts';
import { PG, OWNER_FREE, PAGES_PER_SECTION, type MemMap } from './page.ts';

const SECTION_MASK = PAGES_PER_SECTION - 1;

export const MIGRATE_UNMOVABLE = 0;
export const MIGRATE_MOVABLE = 1;
export const MIGRATE_TYPES = 2;
export type MigrateType = typeof MIGRATE_UNMOVABLE | typeof MIGRATE_MOVABLE;
export const MIGRATETYPE_NAMES = ['Unmovable', 'Movable'] as const;

export const PAGEBLOCK_ORDER = 9; // pageblock_order = HPAGE_PMD_ORDER on x86-64
const PAGEBLOCK_NR = 1 << PAGEBLOCK_ORDER;
const MAX_BLOCK = 1 << MAX_PAGE_ORDER;

/** Watermark indices (enum zone_watermarks). */
export const WMARK_MIN = 0;
export const WMARK_LOW = 1;
export const WMARK_HIGH = 2;

/**
 * The watermark part of alloc_flags (ALLOC_WMARK_MIN/LOW/HIGH are the
 * zone_watermarks indices, as in mm/internal.h) and ALLOC_NO_WATERMARKS.
 * The reserve flags (ALLOC_HIGH/ALLOC_MIN_RESERVE, ALLOC_NON_BLOCK,
 * ALLOC_OOM) are not modelled: no memtwin allocation is GFP_ATOMIC, and an
 * OOM victim's memory is reaped at once.
 */
export const ALLOC_WMARK_MIN = WMARK_MIN;
export const ALLOC_WMARK_LOW = WMARK_LOW;
export const ALLOC_WMARK_HIGH = WMARK_HIGH;
export const ALLOC_NO_WATERMARKS = 4;
export type AllocFlags = typeof ALLOC_WMARK_MIN | typeof ALLOC_WMARK_LOW | typeof ALLOC_WMARK_HIGH | typeof ALLOC_NO_WATERMARKS;

/** MAX_RECLAIM_RETRIES (mm/internal.h): rounds of direct reclaim without progress before the OOM killer. */
export const MAX_RECLAIM_RETRIES = 16;

export class Zone {
  /** free_area[order][migratetype]: head pfn of a doubly linked list, or -1. */
  private readonly heads: Int32Array;
  /** nr_free per (order, migratetype), pristine tail not included. */
  private readonly nrFreeLists: Float64Array;
  /** Per-pageblock migratetype. */
  readonly pageblockMt: Uint8Array;
  /** Frames in [pristineStart, endPfn) were never handed out. */
  pristineStart: number;
  /** Free frames, pristine ones included. */
  freePages: number;
  /** _watermark[WMARK_MIN, WMARK_LOW, WMARK_HIGH], in pages (setupPerZoneWmarks). */
  readonly wmark = [0, 0, 0];

  constructor(
    readonly nid: number,
    readonly startPfn: number,
    readonly spannedPages: number,
    private readonly mem: MemMap,
  ) {
    if (startPfn % MAX_BLOCK !== 0 || spannedPages % MAX_BLOCK !== 0)
      throw new Error(`node ${nid}: memory must be a multiple of 4 MiB and 4 MiB aligned`);
    this.heads = new Int32Array((MAX_PAGE_ORDER + 1) * MIGRATE_TYPES).fill(-1);
    this.nrFreeLists = new Float64Array((MAX_PAGE_ORDER + 1) * MIGRATE_TYPES);
    this.pageblockMt = new Uint8Array(spannedPages / PAGEBLOCK_NR).fill(MIGRATE_MOVABLE);
    this.pristineStart = startPfn;
    this.freePages = spannedPages;
  }

  get endPfn(): number {
    return this.startPfn + this.spannedPages;
  }

  contains(pfn: number): boolean {
    return pfn >= this.startPfn && pfn < this.endPfn;
  }

  pageblockType(pfn: number): MigrateType {
    return this.pageblockMt[(pfn - this.startPfn) >>> PAGEBLOCK_ORDER] as MigrateType;
  }

  private setPageblockType(pfn: number, order: number, mt: MigrateType): void {
    const first = (pfn - this.startPfn) >>> PAGEBLOCK_ORDER;
    const n = Math.max(1, (1 << order) >>> PAGEBLOCK_ORDER);
    this.pageblockMt.fill(mt, first, first + n);
  }

  /** Free blocks per order (all migratetypes, pristine counted at MAX order). */
  nrFreeByOrder(): number[] {
    const out: number[] = [];
    for (let o = 0; o <= MAX_PAGE_ORDER; o++) {
      let n = 0;
      for (let mt = 0; mt < MIGRATE_TYPES; mt++) n += this.nrFreeLists[o * MIGRATE_TYPES + mt]!;
      out.push(n);
    }
    out[MAX_PAGE_ORDER]! += (this.endPfn - this.pristineStart) / MAX_BLOCK;
    return out;
  }

  nrFree(order: number, mt: MigrateType): number {
    return this.nrFreeLists[order * MIGRATE_TYPES + mt]!;
  }

  /** Every block on the free lists: [pfn, order, migratetype]. For checks and /proc/pagetypeinfo. */
  *freeBlocks(): Generator<[number, number, number]> {
    for (let o = 0; o <= MAX_PAGE_ORDER; o++)
      for (let mt = 0; mt < MIGRATE_TYPES; mt++)
        for (let p = this.heads[o * MIGRATE_TYPES + mt]!; p >= 0; p = this.mem.next(p)) yield [p, o, mt];
  }

  // --- free lists -------------------------------------------------------

  private listAdd(pfn: number, order: number, mt: number): void {
    const m = this.mem;
    const li = order * MIGRATE_TYPES + mt;
    const head = this.heads[li]!;
    const s = m.sec(pfn);
    const i = pfn & SECTION_MASK;
    s.flags[i] = PG.buddy;
    s.order[i] = order;
    s.setOwnerAt(i, OWNER_FREE);
    s.setLinksAt(i, head, -1);
    if (head >= 0) m.setPrev(head, pfn);
    this.heads[li] = pfn;
    this.nrFreeLists[li]!++;
  }

  private listDel(pfn: number, order: number, mt: number): void {
    const m = this.mem;
    const li = order * MIGRATE_TYPES + mt;
    const s = m.sec(pfn);
    const i = pfn & SECTION_MASK;
    const p = s.prevAt(i);
    const n = s.nextAt(i);
    if (p >= 0) m.setNext(p, n);
    else this.heads[li] = n;
    if (n >= 0) m.setPrev(n, p);
    s.setLinksAt(i, -1, -1);
    s.flags[i]! &= ~PG.buddy;
    this.nrFreeLists[li]!--;
  }

  /** Which list a free head is on: the migratetype of its pageblock at the time it was added. */
  private freeListMt(pfn: number): number {
    // Blocks are always filed under their pageblock's type; a type change
    // moves the pageblock's free blocks (move_freepages_block).
    return this.pageblockType(pfn);
  }

  private isFreeHead(pfn: number, order: number): boolean {
    if (pfn < this.startPfn || pfn >= this.pristineStart) return false;
    const m = this.mem;
    return m.test(pfn, PG.buddy) && m.order(pfn) === order;
  }

  // --- allocation ----------------------------------------------------------

  /** __rmqueue: a block of 2^order frames, or -1 when none is free. */
  rmqueue(order: number, mt: MigrateType): number {
    let pfn = this.rmqueueSmallest(order, mt);
    if (pfn >= 0) return pfn;
    if (this.carvePristine(mt)) {
      pfn = this.rmqueueSmallest(order, mt);
      if (pfn >= 0) return pfn;
    }
    pfn = this.rmqueueFallback(order, mt);
    return pfn;
  }

  private rmqueueSmallest(order: number, mt: number): number {
    for (let o = order; o <= MAX_PAGE_ORDER; o++) {
      const pfn = this.heads[o * MIGRATE_TYPES + mt]!;
      if (pfn < 0) continue;
      this.listDel(pfn, o, mt);
      this.expand(pfn, order, o);
      this.freePages -= 1 << order;
      return pfn;
    }
    return -1;
  }

  /**
   * __rmqueue(0, mt) `n` times, into out[at..]: the frames n single
   * order-0 allocations hand out, in that order, with the free lists left
   * as they would leave them. Where the smallest free block of `mt` has
   * order o >= 1 (every list below it then empty), one allocation after
   * another splits it from its low end: its frames come out in address
   * order and what is left is filed as expand() files it, so a run is taken
   * in one step instead of a split per frame. Returns how many were taken
   * (fewer than n only when the zone runs out).
   */
  rmqueueBulk(n: number, mt: MigrateType, out: Int32Array, at: number): number {
    let got = 0;
    while (got < n) {
      const o = this.smallestFreeOrder(mt);
      if (o <= 0 || !this.splitsWithin(o, mt)) {
        // An order-0 block, none of this type (the pristine tail or a fallback), or a MAX_PAGE_ORDER
        // block over pageblocks of two types: one allocation the usual way.
        const pfn = this.rmqueue(0, mt);
        if (pfn < 0) break;
        out[at + got++] = pfn;
        continue;
      }
      const li = o * MIGRATE_TYPES + mt;
      const pfn = this.heads[li]!;
      this.listDel(pfn, o, mt);
      const take = Math.min(n - got, 1 << o);
      for (let j = 0; j < take; j++) out[at + got + j] = pfn + j;
      got += take;
      this.freePages -= take;
      this.fileRest(pfn + take, pfn + (1 << o));
    }
    return got;
  }

  /** The lowest order with a free block of `mt` on its list, or -1. */
  private smallestFreeOrder(mt: number): number {
    for (let o = 0; o <= MAX_PAGE_ORDER; o++) if (this.heads[o * MIGRATE_TYPES + mt]! >= 0) return o;
    return -1;
  }

  /** Whether splitting the head block of order o on mt's list files every part on mt's lists (one pageblock type under it). */
  private splitsWithin(o: number, mt: number): boolean {
    if (o <= PAGEBLOCK_ORDER) return true;
    const pfn = this.heads[o * MIGRATE_TYPES + mt]!;
    for (let p = pfn; p < pfn + (1 << o); p += PAGEBLOCK_NR) if (this.pageblockType(p) !== mt) return false;
    return true;
  }

  /**
   * File [from, end) (end aligned to the block it was split from) as the
   * naturally aligned blocks splitting one frame at a time from the low end
   * leaves: one block per order at most, each on a list that was empty.
   */
  private fileRest(from: number, end: number): void {
    let x = from;
    while (x < end) {
      let o = 0;
      while (o < MAX_PAGE_ORDER && (x & ((2 << o) - 1)) === 0 && x + (2 << o) <= end) o++;
      this.listAdd(x, o, this.freeListMt(x));
      x += 1 << o;
    }
  }

  /** Split a block of order `high` down to `low`, filing the upper halves. */
  private expand(pfn: number, low: number, high: number): void {
    while (high > low) {
      high--;
      const buddy = pfn + (1 << high);
      this.listAdd(buddy, high, this.freeListMt(buddy));
    }
  }

  private carvePristine(mt: MigrateType): boolean {
    if (this.pristineStart >= this.endPfn) return false;
    const pfn = this.pristineStart;
    this.mem.resetRange(pfn, MAX_BLOCK);
    this.pristineStart += MAX_BLOCK;
    this.setPageblockType(pfn, MAX_PAGE_ORDER, mt);
    this.listAdd(pfn, MAX_PAGE_ORDER, mt);
    return true;
  }

  /**
   * __rmqueue_fallback: steal from another migratetype, largest block
   * first; a large enough steal claims the whole pageblock for `mt` so
   * that unmovable allocations cluster instead of spreading.
   */
  private rmqueueFallback(order: number, mt: MigrateType): number {
    for (let o = MAX_PAGE_ORDER; o >= order; o--) {
      for (let other = 0; other < MIGRATE_TYPES; other++) {
        if (other === mt) continue;
        const pfn = this.heads[o * MIGRATE_TYPES + other]!;
        if (pfn < 0) continue;
        if (o >= PAGEBLOCK_ORDER) {
          this.listDel(pfn, o, other);
          this.setPageblockType(pfn, o, mt);
          this.listAdd(pfn, o, mt);
        } else if (o >= PAGEBLOCK_ORDER / 2 || mt === MIGRATE_UNMOVABLE) {
          this.claimPageblock(pfn, mt);
        }
        const src = o >= PAGEBLOCK_ORDER || this.pageblockType(pfn) === mt ? mt : other;
        this.listDel(pfn, o, src);
        this.expand(pfn, order, o);
        this.freePages -= 1 << order;
        return pfn;
      }
    }
    return -1;
  }

  /** move_freepages_block: retype a pageblock and refile its free blocks. */
  private claimPageblock(pfn: number, mt: MigrateType): void {
    const start = pfn - ((pfn - this.startPfn) % PAGEBLOCK_NR);
    const old = this.pageblockType(start);
    if (old === mt) return;
    const moves: [number, number][] = [];
    for (let p = start; p < start + PAGEBLOCK_NR;) {
      if (this.mem.isMaterialized(p) && this.mem.test(p, PG.buddy)) {
        const o = this.mem.order(p);
        moves.push([p, o]);
        p += 1 << o;
      } else p++;
    }
    for (const [p, o] of moves) this.listDel(p, o, old);
    this.setPageblockType(start, 0, mt);
    for (const [p, o] of moves) this.listAdd(p, o, mt);
  }

  /** Take a specific free block out of the free lists (used by compaction and contig alloc). */
  takeFreeBlock(pfn: number, order: number): void {
    this.listDel(pfn, order, this.freeListMt(pfn));
    this.freePages -= 1 << order;
  }

  // --- freeing -------------------------------------------------------------

  /** __free_one_page: return a block and merge it with free buddies. */
  free(pfn: number, order: number): void {
    this.freePages += 1 << order;
    while (order < MAX_PAGE_ORDER) {
      const buddy = pfn ^ (1 << order);
      if (!this.isFreeHead(buddy, order)) break;
      this.listDel(buddy, order, this.freeListMt(buddy));
      pfn = Math.min(pfn, buddy);
      order++;
    }
    this.listAdd(pfn, order, this.freeListMt(pfn));
  }

  // --- contiguous ranges (alloc_contig_pages) --------------------------------

  /**
   * A free, naturally aligned range of 2^order frames (order > MAX_PAGE_ORDER),
   * as gigantic hugetlb pages need. Succeeds only if such a free range exists;
   * movable pages are not migrated out of the way.
   */
  allocContig(order: number): number {
    const n = 2 ** order;
    const first = Math.ceil(this.startPfn / n) * n;
    for (let s = first; s + n <= this.endPfn; s += n) {
      if (!this.rangeFree(s, n)) continue;
      for (let p = s; p < s + n && p < this.pristineStart; p += MAX_BLOCK) this.takeFreeBlock(p, MAX_PAGE_ORDER);
      if (s + n > this.pristineStart) {
        // Carve what lies below s out of the pristine tail into free blocks.
        const low = this.pristineStart;
        const taken = s + n - Math.max(s, low);
        this.freePages -= taken;
        for (let p = low; p < s; p += MAX_BLOCK) {
          this.mem.resetRange(p, MAX_BLOCK);
          this.pristineStart = p + MAX_BLOCK;
          this.listAdd(p, MAX_PAGE_ORDER, MIGRATE_MOVABLE);
        }
        this.pristineStart = s + n;
        this.mem.resetRange(Math.max(s, low), taken);
      }
      this.setPageblockType(s, MAX_PAGE_ORDER, MIGRATE_MOVABLE);
      return s;
    }
    return -1;
  }

  private rangeFree(s: number, n: number): boolean {
    for (let p = s; p < s + n; p += MAX_BLOCK) {
      if (p >= this.pristineStart) return true;
      if (!this.isFreeHead(p, MAX_PAGE_ORDER)) return false;
    }
    return true;
  }

  /** Free a range from allocContig, MAX order block by block. */
  freeContig(pfn: number, order: number): void {
    for (let p = pfn; p < pfn + 2 ** order; p += MAX_BLOCK) {
      this.mem.resetRange(p, MAX_BLOCK);
      this.free(p, MAX_PAGE_ORDER);
    }
  }

  /**
   * __zone_watermark_ok (zone_watermark_fast's order-0 shortcut folded in):
   * whether taking a block of 2^order frames leaves the zone at or above
   * `mark`, i.e. free - (2^order - 1) > mark, and, for order > 0, whether a
   * free block of at least that order exists (any migratetype; the pristine
   * tail counts as MAX_PAGE_ORDER blocks). No highatomic reserve, CMA or
   * lowmem_reserve term: memtwin has none of them (one zone per node).
   */
  watermarkOk(order: number, mark: number): boolean {
    if (order === 0) return this.freePages > mark;
    if (this.freePages - (1 << order) + 1 <= mark) return false;
    if (this.pristineStart < this.endPfn) return true;
    for (let o = order; o <= MAX_PAGE_ORDER; o++)
      for (let mt = 0; mt < MIGRATE_TYPES; mt++) if (this.heads[o * MIGRATE_TYPES + mt]! >= 0) return true;
    return false;
  }

  /** Whether pfn is currently free (inside a free buddy block or pristine). */
  isFree(pfn: number): boolean {
    if (pfn >= this.pristineStart) return true;
    for (let o = 0; o <= MAX_PAGE_ORDER; o++) {
      const head = pfn & ~((1 << o) - 1);
      if (head < this.startPfn) break;
      if (this.isFreeHead(head, o)) return true;
    }
    return false;
  }
}

/** Allocation context, a small subset of gfp_t. */
export interface AllocRequest {
  order: number;
  mt: MigrateType;
  /** Node the allocation prefers (numa_node_id() or the policy's node). */
  nid: number;
  /** Nodes allowed (policy/cpuset); undefined = all. */
  nodemask?: readonly number[] | undefined;
  /** __GFP_THISNODE: do not fall back to other nodes. */
  thisNode?: boolean;
  /**
   * No __GFP_KSWAPD_RECLAIM in the gfp mask (GFP_TRANSHUGE and
   * GFP_TRANSHUGE_LIGHT, the THP masks of every defrag mode but defer):
   * the slowpath does not wake kswapd.
   */
  noKswapd?: boolean;
  /**
   * No __GFP_DIRECT_RECLAIM: the slowpath stops after its try at the min
   * watermark (with noKswapd, gfp & ~__GFP_RECLAIM: alloc_misplaced_dst_folio's
   * mask for NUMA balancing's migrations).
   */
  noDirectReclaim?: boolean;
  /**
   * The caller sets every field of the new order-0 frame itself
   * (swap.ts's lruAddNewAnon: post_alloc_hook and the anonymous folio's
   * setup in one pass over the frame, the fault path's hot case).
   */
  callerPreps?: boolean;
}

/**
 * All physical memory: the mem_map and one zone per node, with the
 * zonelist fallback order of each node (nearest node first by SLIT
 * distance, ties by node id), as build_zonelists() orders them.
 */
export class PhysMem {
  readonly mem: MemMap;
  readonly zones: Zone[];
  readonly zonelists: number[][];
  /** Node of each MAX_PAGE_ORDER block (nodes are 4 MiB aligned): pfn_to_nid in O(1). */
  private readonly blockNode: Int16Array;

  constructor(nodePages: readonly number[], distance: readonly (readonly number[])[], mem: MemMap) {
    this.mem = mem;
    this.zones = [];
    let start = 0;
    this.blockNode = new Int16Array(nodePages.reduce((a, b) => a + b, 0) / MAX_BLOCK);
    nodePages.forEach((n, nid) => {
      this.zones.push(new Zone(nid, start, n, mem));
      this.blockNode.fill(nid, start / MAX_BLOCK, (start + n) / MAX_BLOCK);
      start += n;
    });
    this.zonelists = nodePages.map((_, nid) => nodePages.map((_, j) => j).sort((a, b) => distance[nid]![a]! - distance[nid]![b]! || a - b));
  }

  nodeOfPfn(pfn: number): number {
    const nid = this.blockNode[Math.floor(pfn / MAX_BLOCK)];
    if (nid === undefined) throw new RangeError(`pfn ${pfn} is outside every node`);
    return nid;
  }

  /** vm.min_free_kbytes, and what a user wrote to it (user_min_free_kbytes; -1: never). */
  minFreeKbytes = 0;
  userMinFreeKbytes = -1;
  /** vm.watermark_scale_factor (10000ths of a zone between watermarks). */
  watermarkScaleFactor = 10;
  /** wakeup_kswapd, set by the Kernel (vmscan.ts): wake node `nid`'s kswapd. */
  wakeKswapd: ((nid: number) => void) | null = null;
  /**
   * __alloc_pages_direct_reclaim's reclaim, set by the Kernel: try_to_free_pages
   * for `req` in the allocating task, inside a PSI memstall; pages reclaimed.
   */
  directReclaim: ((req: AllocRequest) => number) | null = null;
  /** zone_reclaimable_pages of node `nid` (vmscan.ts), set by the Kernel: what should_reclaim_retry counts on. */
  reclaimablePages: ((nid: number) => number) | null = null;
  /** __alloc_pages_may_oom's out_of_memory (oom_kill.ts), set by the Kernel: true if a process was killed. */
  outOfMemory: ((req: AllocRequest) => boolean) | null = null;
  /** PF_MEMALLOC: reclaim is running; its own allocations ignore the watermarks and never reclaim. */
  memalloc = false;
  /**
   * The current allocations' gfp mask lacks __GFP_DIRECT_RECLAIM (memtwin's
   * swap readahead, which must not reclaim the page it reads around): the
   * slowpath stops after its min-watermark try.
   */
  noDirectReclaim = false;

  /**
   * __alloc_pages_noprof: get_page_from_freelist at the low watermark
   * (ALLOC_WMARK_LOW) over the zonelist, then __alloc_pages_slowpath. -1
   * when the request cannot be served.
   */
  alloc(req: AllocRequest): number {
    const pfn = this.getPageFromFreelist(req, ALLOC_WMARK_LOW);
    if (pfn >= 0) return pfn;
    return this.allocSlowpath(req);
  }

  /**
   * get_page_from_freelist: the first allowed zone in the zonelist that
   * passes the watermark `alloc_flags` selects (node_reclaim_mode 0: a zone
   * below it is skipped, never reclaimed); -1 if none does.
   */
  getPageFromFreelist(req: AllocRequest, allocFlags: AllocFlags): number {
    if (req.thisNode) return this.rmqueueIfOk(req, req.nid, allocFlags);
    const list = this.zonelists[req.nid]!;
    for (let i = 0; i < list.length; i++) {
      const pfn = this.rmqueueIfOk(req, list[i]!, allocFlags);
      if (pfn >= 0) return pfn;
    }
    return -1;
  }

  /** One zone of get_page_from_freelist: allowed by the nodemask, passing the watermark, with a free block. */
  private rmqueueIfOk(req: AllocRequest, nid: number, allocFlags: AllocFlags): number {
    if (req.nodemask && !req.nodemask.includes(nid)) return -1;
    const z = this.zones[nid]!;
    if (allocFlags !== ALLOC_NO_WATERMARKS && !z.watermarkOk(req.order, z.wmark[allocFlags]!)) return -1;
    const pfn = z.rmqueue(req.order, req.mt);
    if (pfn >= 0 && !req.callerPreps) this.prepNewPage(pfn, req.order);
    return pfn;
  }

  /** The zones a request may use, in zonelist order (for_each_zone_zonelist_nodemask). */
  private allowedNodes(req: AllocRequest): number[] {
    const list = req.thisNode ? [req.nid] : this.zonelists[req.nid]!;
    return req.nodemask ? list.filter((n) => req.nodemask!.includes(n)) : list;
  }

  /**
   * wake_all_kswapds: wakeup_kswapd on every allowed node of the zonelist,
   * except one already balanced for this order (pgdat_balanced: above its
   * high watermark), whose kswapd would have nothing to do.
   */
  wakeAllKswapds(req: AllocRequest): void {
    if (!this.wakeKswapd) return;
    for (const nid of this.allowedNodes(req)) {
      const z = this.zones[nid]!;
      if (!z.watermarkOk(req.order, z.wmark[WMARK_HIGH]!)) this.wakeKswapd(nid);
    }
  }

  /**
   * __alloc_pages_slowpath (gfp_to_alloc_flags: ALLOC_WMARK_MIN, and
   * ALLOC_KSWAPD unless the mask lacks __GFP_KSWAPD_RECLAIM): wake every
   * allowed node's kswapd and try again at the min watermark. PF_MEMALLOC
   * then takes any free frame (ALLOC_NO_WATERMARKS) and never reclaims.
   * Order-0 requests that may reclaim then loop: direct reclaim, a try at
   * min, should_reclaim_retry; when that gives up, __alloc_pages_may_oom
   * (never for __GFP_THISNODE): a last try at the high watermark, the OOM
   * killer, and the loop again. Larger orders stop after the try at min
   * (a THP fault compacts in its caller but does not reclaim; khugepaged
   * reclaims in its own code: docs/simplifications.md).
   */
  private allocSlowpath(req: AllocRequest): number {
    const kswapd = !req.noKswapd;
    if (kswapd) this.wakeAllKswapds(req);
    let pfn = this.getPageFromFreelist(req, ALLOC_WMARK_MIN);
    if (pfn >= 0) return pfn;
    if (this.memalloc) return this.getPageFromFreelist(req, ALLOC_NO_WATERMARKS);
    if (req.order || req.noDirectReclaim || this.noDirectReclaim || !this.directReclaim) return -1;
    const retry = { noProgressLoops: 0 };
    for (;;) {
      const reclaimed = this.directReclaim(req);
      pfn = this.getPageFromFreelist(req, ALLOC_WMARK_MIN);
      if (pfn >= 0) return pfn;
      if (!this.shouldReclaimRetry(req, reclaimed > 0, retry)) {
        // __alloc_pages_may_oom: no kill for __GFP_THISNODE (a node's shortage does not justify one).
        if (req.thisNode || !this.outOfMemory) return -1;
        pfn = this.getPageFromFreelist(req, ALLOC_WMARK_HIGH);
        if (pfn >= 0) return pfn;
        if (!this.outOfMemory(req)) return -1;
        retry.noProgressLoops = 0;
      }
      // retry: kswapd again, then the free lists at min before the next reclaim.
      if (kswapd) this.wakeAllKswapds(req);
      pfn = this.getPageFromFreelist(req, ALLOC_WMARK_MIN);
      if (pfn >= 0) return pfn;
    }
  }

  /**
   * alloc_pages_bulk for order-0 frames of callerPreps requests (the caller
   * sets every field of each frame, as lruAddNewAnon does): n frames from
   * node req.nid into out[0..n), the very frames n single alloc() calls
   * would return in that order, with the same free lists after. Taken only
   * when each of those n calls would pass the local node's low watermark in
   * the fast path (the node keeps at least its low watermark free after the
   * n-th); otherwise nothing is taken and 0 returned, and the caller
   * allocates one frame at a time (falling back, waking kswapd, reclaiming).
   */
  allocBulk(req: AllocRequest, n: number, out: Int32Array): number {
    if (req.order !== 0 || !req.callerPreps || (req.nodemask && !req.nodemask.includes(req.nid))) return 0;
    // The zone single allocations try first: the node's own (first in its zonelist, or the only one with __GFP_THISNODE).
    const z = req.thisNode || this.zonelists[req.nid]?.[0] === req.nid ? this.zones[req.nid] : undefined;
    // The k-th single allocation passes iff free - (k - 1) > low; the n-th is the last to check.
    if (!z || z.freePages - n < z.wmark[WMARK_LOW]! || z.freePages < n) return 0;
    const got = z.rmqueueBulk(n, req.mt, out, 0);
    if (got !== n) throw new Error(`memtwin internal error: node ${req.nid} handed out ${got} of ${n} free frames`);
    return n;
  }

  /**
   * should_reclaim_retry: a round that reclaimed something resets the count
   * of rounds without progress, after MAX_RECLAIM_RETRIES of those it gives
   * up; otherwise retry while some allowed zone would pass its min watermark
   * if everything reclaimable on it were freed.
   */
  private shouldReclaimRetry(req: AllocRequest, progress: boolean, retry: { noProgressLoops: number }): boolean {
    if (progress) retry.noProgressLoops = 0;
    else retry.noProgressLoops++;
    if (retry.noProgressLoops > MAX_RECLAIM_RETRIES) return false;
    for (const nid of this.allowedNodes(req)) {
      const z = this.zones[nid]!;
      const available = z.freePages + (this.reclaimablePages ? this.reclaimablePages(nid) : 0);
      if (available - (1 << req.order) + 1 > z.wmark[WMARK_MIN]!) return true;
    }
    return false;
  }

  /** post_alloc_hook: a fresh block reads as zeros and belongs to nobody yet. */
  private prepNewPage(pfn: number, order: number): void {
    if (order === 0) this.mem.resetPage(pfn);
    else this.mem.resetRange(pfn, 1 << order);
  }

  /** mem_cgroup_uncharge of frames being freed, set by memcontrol.ts once a memory cgroup exists. */
  uncharge: ((pfn: number, order: number) => void) | null = null;

  free(pfn: number, order: number): void {
    if (this.uncharge !== null) this.uncharge(pfn, order);
    if (order === 0) this.mem.resetPage(pfn);
    else this.mem.resetRange(pfn, 1 << order);
    this.zones[this.nodeOfPfn(pfn)]!.free(pfn, order);
  }

  totalPages(): number {
    return this.zones.reduce((s, z) => s + z.spannedPages, 0);
  }
  freePages(): number {
    return this.zones.reduce((s, z) => s + z.freePages, 0);
  }
}

/** nr_free_buffer_pages: over every zone, its managed pages above its high watermark. */
function nrFreeBufferPages(phys: PhysMem): number {
  let sum = 0;
  for (const z of phys.zones) sum += Math.max(0, z.spannedPages - z.wmark[WMARK_HIGH]!);
  return sum;
}

/** calculate_min_free_kbytes: int_sqrt(lowmem_kbytes * 16) clamped to [128, 262144], unless a user wrote more. */
export function calculateMinFreeKbytes(phys: PhysMem): void {
  const v = Math.floor(Math.sqrt(nrFreeBufferPages(phys) * 4 * 16));
  if (v > phys.userMinFreeKbytes) phys.minFreeKbytes = Math.min(262144, Math.max(128, v));
}

/**
 * __setup_per_zone_wmarks: each zone's min watermark is its share of
 * min_free_kbytes (every zone here is a lowmem Normal zone); low and high
 * are one and two steps above it, a step being the larger of min / 4 and
 * managed * watermark_scale_factor / 10000.
 */
export function setupPerZoneWmarks(phys: PhysMem): void {
  const pagesMin = phys.minFreeKbytes >> 2;
  const lowmem = phys.zones.reduce((s, z) => s + z.spannedPages, 0);
  for (const z of phys.zones) {
    const min = Math.floor((pagesMin * z.spannedPages) / lowmem);
    const step = Math.max(min >> 2, Math.floor((z.spannedPages * phys.watermarkScaleFactor) / 10000));
    z.wmark[WMARK_MIN] = min;
    z.wmark[WMARK_LOW] = min + step;
    z.wmark[WMARK_HIGH] = min + 2 * step;
  }
}

/** init_per_zone_wmark_min at boot. */
export function initPerZoneWmarkMin(phys: PhysMem): void {
  calculateMinFreeKbytes(phys);
  setupPerZoneWmarks(phys);
}

/**
 * set_recommended_min_free_kbytes (mm/khugepaged.c), when khugepaged starts
 * with THP enabled: room for two free pageblocks per zone plus
 * MIGRATE_PCPTYPES^2 for fallbacks, at most 5% of lowmem; min_free_kbytes
 * only grows. memtwin has one zone per node, where this machine has DMA,
 * DMA32 and Normal: 22528 kB here against Linux's 67584.
 */
export function setRecommendedMinFreeKbytes(phys: PhysMem): void {
  const nrZones = phys.zones.filter((z) => z.spannedPages > 0).length;
  const MIGRATE_PCPTYPES = 3;
  let recommended = PAGEBLOCK_NR * nrZones * 2 + PAGEBLOCK_NR * nrZones * MIGRATE_PCPTYPES * MIGRATE_PCPTYPES;
  recommended = Math.min(recommended, Math.floor(nrFreeBufferPages(phys) / 20)) * 4;
  if (recommended > phys.minFreeKbytes) phys.minFreeKbytes = recommended;
  setupPerZoneWmarks(phys);
}
