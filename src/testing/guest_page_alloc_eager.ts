/**
 * The guest buddy allocator as it was before it kept boot memory as
 * intervals and its per-frame state in sections made on first write
 * (src/guest/page_alloc.ts): every frame's state in arrays as large as the
 * guest, written at boot. Kept only as the reference the property test of
 * page_alloc.ts compares the sparse allocator with, operation by operation:
 * the same blocks on the same lists in the same order.
 */
import type { GuestRamRange } from '../hw/guest_memory.ts';
import {
  GuestZone,
  MAX_PAGE_ORDER,
  PAGE_SIZE,
  PageUse,
  type GuestAllocOptions,
  type GuestAllocRequest,
  type GuestMeminfo,
  type GuestShrinker,
  type OomNotifier,
} from '../guest/page_alloc.ts';

const NR_USES = 8;
const PG_BUDDY = 1;
const PG_REPORTED = 2;

export class EagerGuestPageAlloc {
  readonly maxPfn: number;
  readonly zones: GuestZone[];
  readonly ranges: readonly GuestRamRange[];
  private readonly use: Uint8Array;
  private readonly flags: Uint8Array;
  private readonly order: Uint8Array;
  private readonly next: Int32Array;
  private readonly prev: Int32Array;
  private readonly node: Uint8Array;
  private readonly nrUse = new Float64Array(NR_USES);
  private readonly zonelists: number[][];
  private readonly cpuNode: readonly number[];
  /** Pages taken out of totalram_pages (adjust_managed_page_count). */
  private managedAdjust = 0;
  readonly shrinkers: GuestShrinker[] = [];
  readonly oomNotifiers: OomNotifier[] = [];
  /** page_reporting_notify_free: called with the merged order of every free not flagged FPI_SKIP_REPORT_NOTIFY. */
  onFree: ((order: number) => void) | null = null;
  /** Allocations that failed after shrinkers and OOM notifiers (the OOM killer would run). */
  oomKills = 0;
  /** Allocations that entered the slow path (shrinkers ran). */
  allocStalls = 0;

  constructor(ranges: readonly GuestRamRange[], opts: GuestAllocOptions = {}) {
    this.ranges = [...ranges].sort((a, b) => a.gpa - b.gpa);
    for (const r of this.ranges) {
      if (r.gpa % PAGE_SIZE || r.size % PAGE_SIZE)
        throw new Error(`guest RAM range 0x${r.gpa.toString(16)}+0x${r.size.toString(16)} is not page aligned`);
      if (r.node < 0 || r.node > 254) throw new Error(`guest node ${r.node} out of range`);
    }
    const last = this.ranges[this.ranges.length - 1];
    this.maxPfn = last ? (last.gpa + last.size) / PAGE_SIZE : 0;
    const nNodes = Math.max(0, ...this.ranges.map((r) => r.node + 1));
    this.zones = Array.from({ length: nNodes }, (_, nid) => new GuestZone(nid));
    this.use = new Uint8Array(this.maxPfn).fill(PageUse.Hole);
    this.flags = new Uint8Array(this.maxPfn);
    this.order = new Uint8Array(this.maxPfn);
    this.next = new Int32Array(this.maxPfn).fill(-1);
    this.prev = new Int32Array(this.maxPfn).fill(-1);
    this.node = new Uint8Array(this.maxPfn).fill(255);
    this.cpuNode = opts.cpuNode ?? [0];
    this.zonelists = this.zones.map((_, nid) => buildZonelist(nid, nNodes, opts.distance));
    for (const r of this.ranges) this.freeBootRange(r);
  }

  /** memblock_free_all: hand a RAM range to the buddy allocator in maximal aligned blocks. */
  private freeBootRange(r: GuestRamRange): void {
    const start = r.gpa / PAGE_SIZE;
    const end = start + r.size / PAGE_SIZE;
    this.node.fill(r.node, start, end);
    const z = this.zones[r.node]!;
    z.presentPages += end - start;
    for (let pfn = start; pfn < end;) {
      let o = Math.min(MAX_PAGE_ORDER, lowestBit(pfn));
      while (pfn + (1 << o) > end) o--;
      this.freePagesFpi(pfn, o, true, true);
      pfn += 1 << o;
    }
  }

  // --- queries ---------------------------------------------------------------------

  get totalPages(): number {
    return this.zones.reduce((s, z) => s + z.presentPages, 0);
  }

  /** totalram_pages: RAM minus what the balloon took out (without deflate-on-oom). */
  get managedPages(): number {
    return this.totalPages - this.managedAdjust;
  }

  get freePageCount(): number {
    return this.zones.reduce((s, z) => s + z.freePages, 0);
  }

  /** Pages currently used for `use`. */
  pagesOf(use: PageUse): number {
    return this.nrUse[use]!;
  }

  pageUse(pfn: number): PageUse {
    return (pfn >= 0 && pfn < this.maxPfn ? this.use[pfn]! : PageUse.Hole) as PageUse;
  }

  nodeOf(pfn: number): number {
    const n = this.node[pfn];
    if (n === undefined || n === 255) throw new RangeError(`guest pfn ${pfn} is not RAM`);
    return n;
  }

  /** Guest node of a vCPU. */
  nodeOfCpu(cpu: number): number {
    return this.cpuNode[cpu] ?? this.cpuNode[0] ?? 0;
  }

  /** The order of the free block whose head is `pfn`, or -1. */
  buddyOrder(pfn: number): number {
    return pfn >= 0 && pfn < this.maxPfn && this.flags[pfn]! & PG_BUDDY ? this.order[pfn]! : -1;
  }

  isReported(pfn: number): boolean {
    return (this.flags[pfn]! & PG_REPORTED) !== 0;
  }

  /** Free blocks per order of one zone. */
  nrFreeByOrder(nid: number): number[] {
    return Array.from(this.zones[nid]!.nrFree);
  }

  /** Every free block, [pfn, order], list order. For checks and tests. */
  *freeBlocks(nid?: number): Generator<[number, number]> {
    for (const z of this.zones) {
      if (nid !== undefined && z.nid !== nid) continue;
      for (let o = 0; o <= MAX_PAGE_ORDER; o++) for (let p = z.heads[o]!; p >= 0; p = this.next[p]!) yield [p, o];
    }
  }

  /** First block of a free list (list_first_entry), or -1. */
  freeListFirst(nid: number, order: number): number {
    return this.zones[nid]!.heads[order]!;
  }

  /** The block after `pfn` on its free list, or -1. */
  freeListNext(pfn: number): number {
    return this.next[pfn]!;
  }

  /** meminfo_proc_show, reduced: MemAvailable is free plus page cache (no watermarks, no slab). */
  meminfo(): GuestMeminfo {
    const b = (pages: number): number => pages * PAGE_SIZE;
    const free = this.freePageCount;
    return {
      MemTotal: b(this.managedPages),
      MemFree: b(free),
      MemAvailable: b(free + this.nrUse[PageUse.File]!),
      AnonPages: b(this.nrUse[PageUse.Anon]!),
      Cached: b(this.nrUse[PageUse.File]!),
      Kernel: b(this.nrUse[PageUse.Kernel]!),
      Balloon: b(this.nrUse[PageUse.Balloon]!),
      FreePageHinted: b(this.nrUse[PageUse.Hinted]!),
      Isolated: b(this.nrUse[PageUse.Isolated]!),
    };
  }

  /** adjust_managed_page_count: the balloon takes pages out of (or gives back to) totalram. */
  adjustManagedPages(delta: number): void {
    this.managedAdjust -= delta;
  }

  // --- allocation ------------------------------------------------------------------

  /**
   * __alloc_pages: the preferred node (the allocating CPU's, i.e. first
   * touch) then the zonelist; on failure, unless __GFP_NORETRY, shrinkers
   * and then OOM notifiers may free memory and the allocation is retried.
   * Returns the head pfn, or -1.
   */
  allocPages(req: GuestAllocRequest): number {
    if (req.use === PageUse.Free || req.use === PageUse.Hole || req.use === PageUse.Isolated)
      throw new Error(`cannot allocate pages for use ${req.use}`);
    let pfn = this.getPageFromFreelist(req);
    if (pfn >= 0 || req.noRetry) return pfn;
    this.allocStalls++;
    if (this.runShrinkers(1 << req.order) > 0) pfn = this.getPageFromFreelist(req);
    while (pfn < 0) {
      const freed = this.oomNotifiers.reduce((s, n) => s + n(), 0);
      if (freed === 0) {
        this.oomKills++;
        return -1;
      }
      pfn = this.getPageFromFreelist(req);
    }
    return pfn;
  }

  private getPageFromFreelist(req: GuestAllocRequest): number {
    const preferred = req.nid ?? this.nodeOfCpu(req.cpu ?? 0);
    const list = req.thisNode ? [preferred] : (this.zonelists[preferred] ?? this.zonelists[0]!);
    for (const nid of list) {
      const z = this.zones[nid];
      if (!z) continue;
      const pfn = this.rmqueueSmallest(z, req.order);
      if (pfn < 0) continue;
      this.setUse(pfn, 1 << req.order, req.use);
      return pfn;
    }
    return -1;
  }

  private runShrinkers(want: number): number {
    let freed = 0;
    for (const s of this.shrinkers) {
      if (freed >= want) break;
      if (s.count() > 0) freed += s.scan(want - freed);
    }
    return freed;
  }

  /** __rmqueue_smallest: the head of the smallest non-empty list, split down to `order`. */
  private rmqueueSmallest(z: GuestZone, order: number): number {
    for (let o = order; o <= MAX_PAGE_ORDER; o++) {
      const pfn = z.heads[o]!;
      if (pfn < 0) continue;
      this.listDel(z, pfn, o);
      this.expand(z, pfn, order, o);
      z.freePages -= 1 << order;
      return pfn;
    }
    return -1;
  }

  /** expand: file the upper halves of a split block at the head of their lists. */
  private expand(z: GuestZone, pfn: number, low: number, high: number): void {
    while (high > low) {
      high--;
      this.listAdd(z, pfn + (1 << high), high, false);
    }
  }

  // --- freeing ---------------------------------------------------------------------

  /** __free_pages: give back a block that was allocated (or isolated) as a whole. */
  freePages(pfn: number, order: number): void {
    this.freePagesFpi(pfn, order, false, false);
  }

  private freePagesFpi(pfn: number, order: number, toTail: boolean, skipReportNotify: boolean): void {
    const n = 1 << order;
    if (pfn % n) throw new Error(`guest pfn ${pfn} is not aligned to order ${order}`);
    for (let p = pfn; p < pfn + n; p++) {
      const u = this.use[p];
      if (u === PageUse.Free) throw new Error(`double free of guest pfn ${p}`);
      if (u === undefined || (u === PageUse.Hole && this.node[p] === 255)) throw new Error(`guest pfn ${p} is not RAM`);
    }
    this.setUse(pfn, n, PageUse.Free);
    this.freeOnePage(pfn, order, toTail, skipReportNotify);
  }

  /** __free_one_page: merge with free buddies, then file the block. */
  private freeOnePage(pfn: number, order: number, toTail: boolean, skipReportNotify: boolean): void {
    const nid = this.node[pfn]!;
    const z = this.zones[nid]!;
    z.freePages += 1 << order;
    while (order < MAX_PAGE_ORDER) {
      const buddy = pfn ^ (1 << order);
      if (!this.isBuddy(buddy, order, nid)) break;
      this.listDel(z, buddy, order);
      pfn = Math.min(pfn, buddy);
      order++;
    }
    const tail = toTail || this.buddyMergeLikely(pfn, order, nid);
    this.listAdd(z, pfn, order, tail);
    if (!skipReportNotify) this.onFree?.(order);
  }

  /** page_is_buddy: a free block head of exactly `order` in the same zone. */
  private isBuddy(pfn: number, order: number, nid: number): boolean {
    return pfn >= 0 && pfn < this.maxPfn && (this.flags[pfn]! & PG_BUDDY) !== 0 && this.order[pfn] === order && this.node[pfn] === nid;
  }

  /** buddy_merge_likely: the next-higher buddy is free, so this block may merge soon: file it at the tail. */
  private buddyMergeLikely(pfn: number, order: number, nid: number): boolean {
    if (order >= MAX_PAGE_ORDER - 1) return false;
    const higher = pfn & ~((2 << order) - 1);
    const higherBuddy = higher ^ (2 << order);
    return this.isBuddy(higherBuddy, order + 1, nid);
  }

  /**
   * Take the free pages of [pfn, pfn + nr) for `use`, wherever they sit in
   * their free blocks (take_page_off_buddy for a range: each block holding
   * one is taken off its list and the pages outside the range go back):
   * memory a guest task holds at known guest-physical addresses. Pages not
   * free (in use, holes) are skipped. Returns the pages taken.
   */
  allocRange(pfn: number, nr: number, use: PageUse): number {
    if (use === PageUse.Free || use === PageUse.Hole || use === PageUse.Isolated) throw new Error(`cannot allocate pages for use ${use}`);
    const end = Math.min(pfn + nr, this.maxPfn);
    let taken = 0;
    for (let p = Math.max(0, pfn); p < end;) {
      if (this.use[p] !== PageUse.Free) {
        p++;
        continue;
      }
      let head = p;
      let order = 0;
      while (this.buddyOrder(head) !== order && order < MAX_PAGE_ORDER) {
        order++;
        head = p & ~((1 << order) - 1);
      }
      if (this.buddyOrder(head) !== order) throw new Error(`guest pfn ${p} is free but in no free block`);
      const z = this.zones[this.node[head]!]!;
      this.listDel(z, head, order);
      z.freePages -= 1 << order;
      this.setUse(head, 1 << order, use);
      const blockEnd = head + (1 << order);
      for (let q = head; q < blockEnd; q++) if (q < pfn || q >= end) this.freePagesFpi(q, 0, false, true);
      taken += Math.min(blockEnd, end) - Math.max(head, pfn);
      p = blockEnd;
    }
    return taken;
  }

  // --- page reporting's isolate/putback ----------------------------------------------

  /** __isolate_free_page: take a free block off its list (its PG_reported is cleared). */
  isolateFreePage(pfn: number, order: number): void {
    if (this.buddyOrder(pfn) !== order) throw new Error(`guest pfn ${pfn} is not a free block of order ${order}`);
    const z = this.zones[this.node[pfn]!]!;
    this.listDel(z, pfn, order);
    z.freePages -= 1 << order;
    this.setUse(pfn, 1 << order, PageUse.Isolated);
  }

  /** __putback_isolated_page: back to the tail of its list, without a report notification. */
  putbackIsolatedPage(pfn: number, order: number): void {
    if (this.use[pfn] !== PageUse.Isolated) throw new Error(`guest pfn ${pfn} was not isolated`);
    this.setUse(pfn, 1 << order, PageUse.Free);
    this.freeOnePage(pfn, order, true, true);
  }

  /** __SetPageReported. */
  setReported(pfn: number): void {
    this.flags[pfn]! |= PG_REPORTED;
  }

  /** list_rotate_to_front: make `pfn` the first entry of its free list, keeping the cyclic order. */
  rotateToFront(pfn: number): void {
    const order = this.buddyOrder(pfn);
    if (order < 0) throw new Error(`guest pfn ${pfn} is not a free block`);
    const z = this.zones[this.node[pfn]!]!;
    const first = z.heads[order]!;
    if (first === pfn) return;
    const before = this.prev[pfn]!;
    const last = z.tails[order]!;
    // [first .. before] [pfn .. last]  ->  [pfn .. last] [first .. before]
    this.next[last] = first;
    this.prev[first] = last;
    this.next[before] = -1;
    this.prev[pfn] = -1;
    z.heads[order] = pfn;
    z.tails[order] = before;
  }

  // --- lists and bookkeeping ----------------------------------------------------------

  private listAdd(z: GuestZone, pfn: number, order: number, tail: boolean): void {
    this.flags[pfn] = PG_BUDDY;
    this.order[pfn] = order;
    if (tail) {
      const t = z.tails[order]!;
      this.prev[pfn] = t;
      this.next[pfn] = -1;
      if (t >= 0) this.next[t] = pfn;
      else z.heads[order] = pfn;
      z.tails[order] = pfn;
    } else {
      const h = z.heads[order]!;
      this.next[pfn] = h;
      this.prev[pfn] = -1;
      if (h >= 0) this.prev[h] = pfn;
      else z.tails[order] = pfn;
      z.heads[order] = pfn;
    }
    z.nrFree[order]!++;
  }

  /** del_page_from_free_list: unlink; clears PG_buddy and PG_reported. */
  private listDel(z: GuestZone, pfn: number, order: number): void {
    const p = this.prev[pfn]!;
    const n = this.next[pfn]!;
    if (p >= 0) this.next[p] = n;
    else z.heads[order] = n;
    if (n >= 0) this.prev[n] = p;
    else z.tails[order] = p;
    this.next[pfn] = -1;
    this.prev[pfn] = -1;
    this.flags[pfn] = 0;
    z.nrFree[order]!--;
  }

  private setUse(pfn: number, n: number, use: PageUse): void {
    for (let p = pfn; p < pfn + n; p++) {
      const old = this.use[p]!;
      if (old !== PageUse.Hole) this.nrUse[old]!--;
      this.nrUse[use]!++;
    }
    this.use.fill(use, pfn, pfn + n);
  }
}

/** build_zonelists: nearest node first by distance (ties by id), or local then by id. */
function buildZonelist(nid: number, n: number, distance?: readonly (readonly number[])[]): number[] {
  const ids = Array.from({ length: n }, (_, i) => i);
  if (distance) return ids.sort((a, b) => distance[nid]![a]! - distance[nid]![b]! || a - b);
  return [nid, ...ids.filter((i) => i !== nid)];
}

/** Index of the lowest set bit (alignment order of a pfn); large for pfn 0. */
function lowestBit(pfn: number): number {
  if (pfn === 0) return 62;
  let o = 0;
  while (pfn % 2 ** (o + 1) === 0) o++;
  return o;
}
