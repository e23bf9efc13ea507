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
  /** wakeup_kswapd, set by the Kernel (vmscan.ts): an allocation left node `nid` below its low watermark. */
  wakeKswapd: ((nid: number) => void) | null = null;

  /** __alloc_pages: the free lists, then (order 0) direct reclaim; -1 when every allowed node is exhausted. */
  alloc(req: AllocRequest): number {
    const pfn = this.getPageFromFreelist(req);
    if (pfn >= 0 || req.order || !this.slowpath || this.memalloc) return pfn;
    return this.slowpath(req);
  }

  /** get_page_from_freelist over the zonelist (no watermarks: see docs/simplifications.md); -1 when every allowed node is exhausted. */
  getPageFromFreelist(req: AllocRequest): number {
    const order = req.order;
    const list = req.thisNode ? [req.nid] : this.zonelists[req.nid]!;
    for (const nid of list) {
      if (req.nodemask && !req.nodemask.includes(nid)) continue;
      const z = this.zones[nid]!;
      const pfn = z.rmqueue(order, req.mt);
      if (pfn >= 0) {
        if (!req.callerPreps) this.prepNewPage(pfn, order);
        if (z.freePages < z.wmark[WMARK_LOW]! && this.wakeKswapd) this.wakeKswapd(nid);
        return pfn;
      }
    }
    return -1;
  }

  /**
   * alloc_pages_bulk for order-0 frames of callerPreps requests (the caller
   * sets every field of each frame, as lruAddNewAnon does): n frames from
   * node req.nid into out[0..n), the very frames n single alloc() calls
   * would return in that order, with the same free lists after. Taken only
   * when those n calls would all be served by the local node without waking
   * kswapd (the node stays at or above its low watermark) or entering the
   * slowpath; otherwise nothing is taken and 0 returned, and the caller
   * allocates one frame at a time.
   */
  allocBulk(req: AllocRequest, n: number, out: Int32Array): number {
    if (req.order !== 0 || !req.callerPreps || (req.nodemask && !req.nodemask.includes(req.nid))) return 0;
    // The zone single allocations try first: the node's own (first in its zonelist, or the only one with __GFP_THISNODE).
    const z = req.thisNode || this.zonelists[req.nid]?.[0] === req.nid ? this.zones[req.nid] : undefined;
    if (!z || z.freePages - n < z.wmark[WMARK_LOW]! || z.freePages < n) return 0;
    const got = z.rmqueueBulk(n, req.mt, out, 0);
    if (got !== n) throw new Error(`memtwin internal error: node ${req.nid} handed out ${got} of ${n} free frames`);
    return n;
  }

  /**
   * __alloc_pages_slowpath's direct reclaim, set by the Kernel (vmscan.ts):
   * an order-0 request that found no free frame reclaims and retries.
   * Larger orders (THPs, hugetlb pool pages) fail as before.
   */
  slowpath: ((req: AllocRequest) => number) | null = null;
  /** PF_MEMALLOC: reclaim is running; its own allocations never reclaim. */
  memalloc = false;

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

/** Watermark indices (enum zone_watermarks). */
export const WMARK_MIN = 0;
export const WMARK_LOW = 1;
export const WMARK_HIGH = 2;

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
