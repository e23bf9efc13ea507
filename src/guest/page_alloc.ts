/**
 * The guest kernel's buddy allocator (mm/page_alloc.c) over guest-physical
 * frames, one zone per guest node, built from the RAM ranges the firmware
 * reports (GuestMemory.ramRanges()).
 *
 * Free blocks of 2^order frames sit on free_area[order] lists (orders
 * 0..MAX_PAGE_ORDER); allocation takes the head of the smallest list that
 * has a block and splits it (expand), freeing merges a block with its buddy
 * (pfn ^ (1 << order)) while the buddy is a free block of the same order
 * in the same zone (__free_one_page). As in Linux, a block freed with
 * FPI_TO_TAIL (boot memory, reported pages put back) or likely to merge
 * soon goes to the tail of its list, so the head is what was freed last.
 *
 * Simplified from Linux, as the host model (src/kernel/page_alloc.ts) is:
 * one zone per node, one migratetype, no watermarks, no per-CPU lists;
 * no memory is reserved at boot (kernel image, memmap), so a fresh guest
 * has every page free. The allocator itself charges no time: its callers
 * (drivers, the guest kernel) charge the guest_page_alloc/free costs.
 *
 * Pages the guest has never touched are free here like any other; whether
 * the host backs a page is GuestMemory's business, not the guest's.
 *
 * What this costs memtwin grows with what the guest uses, not with its size:
 * - Boot memory in MAX_PAGE_ORDER blocks is "pristine": kept as intervals of
 *   pfns, not written per frame. Boot frees memory in ascending order to the
 *   tail of its list (FPI_TO_TAIL), so these blocks sit together, ascending,
 *   in free_area[MAX_PAGE_ORDER]; that list holds one sentinel entry that
 *   stands for all of them, and taking the first block (or any, for
 *   take_page_off_buddy and page reporting) shrinks or splits an interval.
 * - The per-frame arrays come in sections of 2^15 frames, made when a frame
 *   of the section is first written; until then every frame in it reads as
 *   pristine (free, a buddy head every 1024 frames) or a hole.
 * - The free-list links (next, prev) only matter while a block is on a free
 *   list; they come in tables of 512 frames, made when one of those frames
 *   is linked and dropped when the last of them leaves its list (an entry
 *   off every list reads -1, as a table's fresh entries do). A guest that
 *   allocated a region keeps 3 bytes a frame for it, not 11.
 * - A frame's node comes from the RAM ranges, not from a per-frame array.
 */
import type { GuestRamRange } from '../hw/guest_memory.ts';

export const PAGE_SHIFT = 12;
export const PAGE_SIZE = 1 << PAGE_SHIFT;
/** x86-64: orders 0..10, 4 MiB blocks. */
export const MAX_PAGE_ORDER = 10;
export const NR_PAGE_ORDERS = MAX_PAGE_ORDER + 1;
/** pageblock_order = HPAGE_PMD_ORDER on x86-64. */
export const PAGEBLOCK_ORDER = 9;

/** What a frame is used for: enough to answer "what is free" as /proc/meminfo does. */
export const PageUse = {
  /** On a free list (head or tail page of a free block). */
  Free: 0,
  /** Anonymous memory of guest processes (AnonPages). */
  Anon: 1,
  /** Page cache (Cached). */
  File: 2,
  /** Kernel allocations: driver buffers, slab. */
  Kernel: 3,
  /** In the balloon (balloon_page_enqueue). */
  Balloon: 4,
  /** Allocated by virtio-balloon's free page hinting and held until the host says DONE. */
  Hinted: 5,
  /** Taken off the free lists by page reporting while the device is told (__isolate_free_page). */
  Isolated: 6,
  /** Not RAM (a hole between ranges, e.g. the PCI hole). */
  Hole: 7,
} as const;
export type PageUse = (typeof PageUse)[keyof typeof PageUse];
const NR_USES = 8;

/** Page flags kept per frame. */
const PG_BUDDY = 1;
/** PG_reported: a free block the device has been told about (mm/page_reporting.c). */
const PG_REPORTED = 2;

export interface GuestAllocRequest {
  order: number;
  use: PageUse;
  /** The allocating vCPU: its node is tried first (first-touch placement). */
  cpu?: number;
  /** A preferred node that overrides `cpu`. */
  nid?: number;
  /** __GFP_THISNODE: no fallback to other nodes. */
  thisNode?: boolean;
  /** __GFP_NORETRY: give up at once, no shrinkers and no OOM notifiers. */
  noRetry?: boolean;
}

/** A shrinker (register_shrinker): count objects, free some; returns pages freed. */
export interface GuestShrinker {
  count(): number;
  scan(nrPages: number): number;
}

/** An OOM notifier (register_oom_notifier): returns pages it freed. */
export type OomNotifier = () => number;

/** Options from the guest's firmware tables that GuestMemory does not carry. */
export interface GuestAllocOptions {
  /** Guest node of each vCPU (SRAT processor affinity); default: every vCPU on node 0. */
  cpuNode?: readonly number[];
  /** Guest SLIT; default: local node first, then the others by id. */
  distance?: readonly (readonly number[])[];
}

/** The free_area[MAX_PAGE_ORDER] entry that stands for a zone's pristine blocks (a list id, never a pfn). */
const PRISTINE = -2;

/** One zone per guest node: free_area[] and counters. */
export class GuestZone {
  /** First and last entry of each free list: a pfn, PRISTINE, or -1 (empty). */
  readonly heads = new Int32Array(NR_PAGE_ORDERS).fill(-1);
  readonly tails = new Int32Array(NR_PAGE_ORDERS).fill(-1);
  readonly nrFree = new Float64Array(NR_PAGE_ORDERS);
  /** Frames of RAM in the zone (present_pages). */
  presentPages = 0;
  /** Pages on the free lists. */
  freePages = 0;
  /**
   * Pristine MAX_PAGE_ORDER blocks: ascending, disjoint [start, end) pfn
   * intervals, block aligned, in list order at the PRISTINE entry.
   */
  readonly pristine: [number, number][] = [];
  /** The PRISTINE entry's list links (it is on the list exactly while `pristine` is not empty). */
  pristineNext = -1;
  pristinePrev = -1;

  constructor(readonly nid: number) {}
}

const SECTION_SHIFT = 15;
const SECTION_PAGES = 1 << SECTION_SHIFT;
const SECTION_MASK = SECTION_PAGES - 1;

const LINK_SHIFT = 9;
const LINK_FRAMES = 1 << LINK_SHIFT;
const LINK_MASK = LINK_FRAMES - 1;
const LINK_TABLES = SECTION_PAGES / LINK_FRAMES;

/** Per-frame state of 2^15 frames. */
class Section {
  readonly use = new Uint8Array(SECTION_PAGES).fill(PageUse.Hole);
  readonly flags = new Uint8Array(SECTION_PAGES);
  readonly order = new Uint8Array(SECTION_PAGES);
  /** Free-list links per 512 frames (next at 2i, prev at 2i + 1), while one of those frames is on a list. */
  readonly links = new Array<Int32Array | undefined>(LINK_TABLES);
  /** Frames of each link table on a free list. */
  readonly linked = new Uint16Array(LINK_TABLES);
}
/** Bytes per frame of a section (use, flags, order), and of a link table (next, prev). */
const SECTION_FRAME_BYTES = 1 + 1 + 1;
const LINK_FRAME_BYTES = 4 + 4;

/** /proc/meminfo, in bytes, as far as the model knows it. */
export interface GuestMeminfo {
  MemTotal: number;
  MemFree: number;
  MemAvailable: number;
  AnonPages: number;
  Cached: number;
  Kernel: number;
  Balloon: number;
  FreePageHinted: number;
  Isolated: number;
}

export class GuestPageAlloc {
  /** One past the last RAM pfn (grows when memory is hotplugged: addMemory). */
  maxPfn: number;
  readonly zones: GuestZone[];
  ranges: readonly GuestRamRange[];
  /** Per-frame state, by section; made on first write (see the header). */
  private readonly sections: (Section | undefined)[];
  /** Each range's first and end pfn and node, for nodeOf. */
  private readonly rangeStart: number[];
  private readonly rangeEnd: number[];
  private readonly rangeNode: number[];
  private readonly nrUse = new Float64Array(NR_USES);
  private zonelists: number[][];
  private readonly cpuNode: readonly number[];
  private readonly distance: readonly (readonly number[])[] | undefined;
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
    let prevEnd = 0;
    for (const r of this.ranges) {
      if (r.gpa % PAGE_SIZE || r.size % PAGE_SIZE)
        throw new Error(`guest RAM range 0x${r.gpa.toString(16)}+0x${r.size.toString(16)} is not page aligned`);
      if (r.node < 0 || r.node > 254) throw new Error(`guest node ${r.node} out of range`);
      if (r.gpa < prevEnd) throw new Error(`guest RAM range 0x${r.gpa.toString(16)} overlaps the one before it`);
      prevEnd = r.gpa + r.size;
    }
    const last = this.ranges[this.ranges.length - 1];
    this.maxPfn = last ? (last.gpa + last.size) / PAGE_SIZE : 0;
    this.rangeStart = this.ranges.map((r) => r.gpa / PAGE_SIZE);
    this.rangeEnd = this.ranges.map((r) => (r.gpa + r.size) / PAGE_SIZE);
    this.rangeNode = this.ranges.map((r) => r.node);
    const nNodes = Math.max(0, ...this.ranges.map((r) => r.node + 1));
    this.zones = Array.from({ length: nNodes }, (_, nid) => new GuestZone(nid));
    this.sections = new Array(Math.ceil(this.maxPfn / SECTION_PAGES));
    this.cpuNode = opts.cpuNode ?? [0];
    this.distance = opts.distance;
    this.zonelists = this.zones.map((_, nid) => buildZonelist(nid, nNodes, opts.distance));
    for (const r of this.ranges) this.freeBootRange(r);
  }

  /**
   * Memory hotplug as the guest's ACPI memory hotplug driver does it with
   * auto-online (memhp_default_state=online, as distributions configure
   * it): add_memory(nid, start, size) makes the range's sections present,
   * online_pages gives its pages to the node's zone, freed to the buddy
   * allocator in maximal aligned blocks (generic_online_page). A node that
   * had no memory gets a zone, and every node's zonelist is rebuilt
   * (build_all_zonelists). Memory blocks, ZONE_MOVABLE (online_movable)
   * and offlining are not modelled. The range must lie above all RAM (the
   * device memory region does).
   */
  addMemory(r: GuestRamRange): void {
    if (r.gpa % PAGE_SIZE || r.size % PAGE_SIZE || r.size <= 0)
      throw new Error(`guest RAM range 0x${r.gpa.toString(16)}+0x${r.size.toString(16)} is not page aligned`);
    if (r.node < 0 || r.node > 254) throw new Error(`guest node ${r.node} out of range`);
    if (r.gpa / PAGE_SIZE < this.maxPfn) throw new Error(`hotplugged range 0x${r.gpa.toString(16)} is not above guest RAM`);
    this.ranges = [...this.ranges, r];
    this.maxPfn = (r.gpa + r.size) / PAGE_SIZE;
    this.sections.length = Math.ceil(this.maxPfn / SECTION_PAGES);
    this.rangeStart.push(r.gpa / PAGE_SIZE);
    this.rangeEnd.push(this.maxPfn);
    this.rangeNode.push(r.node);
    if (r.node >= this.zones.length) {
      for (let nid = this.zones.length; nid <= r.node; nid++) this.zones.push(new GuestZone(nid));
      this.zonelists = this.zones.map((_, nid) => buildZonelist(nid, this.zones.length, this.distance));
    }
    this.freeBootRange(r);
  }

  /** memblock_free_all: hand a RAM range to the buddy allocator in maximal aligned blocks. */
  private freeBootRange(r: GuestRamRange): void {
    const start = r.gpa / PAGE_SIZE;
    const end = start + r.size / PAGE_SIZE;
    const z = this.zones[r.node]!;
    z.presentPages += end - start;
    for (let pfn = start; pfn < end;) {
      let o = Math.min(MAX_PAGE_ORDER, lowestBit(pfn));
      while (pfn + (1 << o) > end) o--;
      if (o === MAX_PAGE_ORDER && this.addPristine(z, pfn)) pfn += 1 << o;
      else {
        this.freePagesFpi(pfn, o, true, true);
        pfn += 1 << o;
      }
    }
  }

  /**
   * A boot block of MAX_PAGE_ORDER to the tail of its list as a pristine
   * block: possible while the list's tail is the PRISTINE entry (or the list
   * is empty); otherwise (an explicit block was filed after the pristine
   * ones) false, and the caller files it explicitly.
   */
  private addPristine(z: GuestZone, pfn: number): boolean {
    const o = MAX_PAGE_ORDER;
    const tail = z.tails[o]!;
    if (tail !== -1 && tail !== PRISTINE) return false;
    const n = 1 << o;
    const lastIv = z.pristine[z.pristine.length - 1];
    if (lastIv && lastIv[1] === pfn) lastIv[1] += n;
    else z.pristine.push([pfn, pfn + n]);
    if (tail === -1) this.linkAdd(z, PRISTINE, o, true);
    z.nrFree[o]!++;
    z.freePages += n;
    this.nrUse[PageUse.Free]! += n;
    const s = this.sections[pfn >>> SECTION_SHIFT];
    if (s) {
      // the section was made for a smaller boot block before: keep it in step
      const i = pfn & SECTION_MASK;
      s.use.fill(PageUse.Free, i, i + n);
      s.flags[i] = PG_BUDDY;
      s.order[i] = o;
    }
    return true;
  }

  // --- per-frame state ---------------------------------------------------------------

  /** The section of pfn, made (from the pristine intervals) on first use. */
  private sec(pfn: number): Section {
    const si = pfn >>> SECTION_SHIFT;
    let s = this.sections[si];
    if (s) return s;
    s = new Section();
    this.sections[si] = s;
    const lo = si * SECTION_PAGES;
    const hi = lo + SECTION_PAGES;
    for (const z of this.zones)
      for (const [a, b] of z.pristine) {
        if (b <= lo || a >= hi) continue;
        const from = Math.max(a, lo);
        const to = Math.min(b, hi);
        s.use.fill(PageUse.Free, from - lo, to - lo);
        for (let p = from; p < to; p += 1 << MAX_PAGE_ORDER) {
          s.flags[p - lo] = PG_BUDDY;
          s.order[p - lo] = MAX_PAGE_ORDER;
        }
      }
    return s;
  }

  /** Is pfn the head of a pristine block of its zone? */
  private isPristine(pfn: number): boolean {
    if (pfn & ((1 << MAX_PAGE_ORDER) - 1)) return false;
    const nid = this.nodeOrNone(pfn);
    return nid >= 0 && this.pristineIndex(this.zones[nid]!, pfn) >= 0;
  }

  /** Index of the pristine interval holding pfn, or -1. */
  private pristineIndex(z: GuestZone, pfn: number): number {
    const iv = z.pristine;
    let lo = 0;
    let hi = iv.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const [a, b] = iv[mid]!;
      if (pfn < a) hi = mid - 1;
      else if (pfn >= b) lo = mid + 1;
      else return mid;
    }
    return -1;
  }

  private useOf(pfn: number): PageUse {
    const s = this.sections[pfn >>> SECTION_SHIFT];
    if (s) return s.use[pfn & SECTION_MASK]! as PageUse;
    const nid = this.nodeOrNone(pfn);
    return nid >= 0 && this.pristineIndex(this.zones[nid]!, pfn) >= 0 ? PageUse.Free : PageUse.Hole;
  }

  private flagsOf(pfn: number): number {
    const s = this.sections[pfn >>> SECTION_SHIFT];
    if (s) return s.flags[pfn & SECTION_MASK]!;
    return this.isPristine(pfn) ? PG_BUDDY : 0;
  }

  private orderOf(pfn: number): number {
    const s = this.sections[pfn >>> SECTION_SHIFT];
    if (s) return s.order[pfn & SECTION_MASK]!;
    return this.isPristine(pfn) ? MAX_PAGE_ORDER : 0;
  }

  /** The node of a RAM pfn, or -1 for a hole. */
  private nodeOrNone(pfn: number): number {
    const st = this.rangeStart;
    let lo = 0;
    let hi = st.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (pfn < st[mid]!) hi = mid - 1;
      else if (pfn >= this.rangeEnd[mid]!) lo = mid + 1;
      else return this.rangeNode[mid]!;
    }
    return -1;
  }

  /** Bytes of per-frame state made so far (memtwin's own memory, for benchmarks). */
  metadataBytes(): number {
    let n = 0;
    for (const s of this.sections)
      if (s) {
        n += SECTION_PAGES * SECTION_FRAME_BYTES;
        for (const l of s.links) if (l) n += LINK_FRAMES * LINK_FRAME_BYTES;
      }
    return n;
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
    return pfn >= 0 && pfn < this.maxPfn ? this.useOf(pfn) : PageUse.Hole;
  }

  nodeOf(pfn: number): number {
    const n = pfn >= 0 && pfn < this.maxPfn ? this.nodeOrNone(pfn) : -1;
    if (n < 0) throw new RangeError(`guest pfn ${pfn} is not RAM`);
    return n;
  }

  /** Guest node of a vCPU. */
  nodeOfCpu(cpu: number): number {
    return this.cpuNode[cpu] ?? this.cpuNode[0] ?? 0;
  }

  /** The order of the free block whose head is `pfn`, or -1. */
  buddyOrder(pfn: number): number {
    return pfn >= 0 && pfn < this.maxPfn && this.flagsOf(pfn) & PG_BUDDY ? this.orderOf(pfn) : -1;
  }

  isReported(pfn: number): boolean {
    return (this.flagsOf(pfn) & PG_REPORTED) !== 0;
  }

  /** Free blocks per order of one zone. */
  nrFreeByOrder(nid: number): number[] {
    return Array.from(this.zones[nid]!.nrFree);
  }

  /** Every free block, [pfn, order], list order. For checks and tests. */
  *freeBlocks(nid?: number): Generator<[number, number]> {
    for (const z of this.zones) {
      if (nid !== undefined && z.nid !== nid) continue;
      for (let o = 0; o <= MAX_PAGE_ORDER; o++) for (let p = this.freeListFirst(z.nid, o); p >= 0; p = this.freeListNext(p)) yield [p, o];
    }
  }

  /** First block of a free list (list_first_entry), or -1. */
  freeListFirst(nid: number, order: number): number {
    const z = this.zones[nid]!;
    return this.resolve(z, z.heads[order]!);
  }

  /** The block after `pfn` on its free list, or -1. */
  freeListNext(pfn: number): number {
    const z = this.zones[this.nodeOf(pfn)]!;
    const i = pfn & ((1 << MAX_PAGE_ORDER) - 1) ? -1 : this.pristineIndex(z, pfn);
    if (i >= 0) {
      if (pfn + (1 << MAX_PAGE_ORDER) < z.pristine[i]![1]) return pfn + (1 << MAX_PAGE_ORDER);
      if (i + 1 < z.pristine.length) return z.pristine[i + 1]![0];
      return this.resolve(z, z.pristineNext);
    }
    return this.resolve(z, this.linkNext(z, pfn));
  }

  /** A list entry as a pfn: the PRISTINE entry is its first block. */
  private resolve(z: GuestZone, id: number): number {
    return id === PRISTINE ? z.pristine[0]![0] : id;
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

  /**
   * 2^MAX_PAGE_ORDER order-0 allocations of `req` at once, when they would
   * take one whole block in ascending order: the first zone of the
   * request's zonelist with a free page has no free block below
   * MAX_PAGE_ORDER, so the first allocation splits the head block of
   * free_area[MAX_PAGE_ORDER] and the next 1023 take its pieces, lowest
   * first. The state left is what those allocations leave: the block off
   * its list, every frame but the head filed once (PG_buddy cleared again,
   * its order that of the piece it headed: the lowest set bit of its
   * offset), no link table, the counters moved by 1024. Returns the
   * block's first frame, or -1 (nothing done) when the allocations would
   * not go that way; then allocPages, one page at a time.
   */
  allocBlockPages(req: GuestAllocRequest): number {
    const z = this.blockZone(req);
    if (!z) return -1;
    const pfn = this.resolve(z, z.heads[MAX_PAGE_ORDER]!);
    this.listDel(z, pfn, MAX_PAGE_ORDER);
    const s = this.sec(pfn);
    const base = pfn & SECTION_MASK;
    for (let x = 1; x < 1 << MAX_PAGE_ORDER; x++) {
      s.flags[base + x] = 0;
      s.order[base + x] = 31 - Math.clz32(x & -x);
    }
    z.freePages -= 1 << MAX_PAGE_ORDER;
    this.setUse(pfn, 1 << MAX_PAGE_ORDER, req.use);
    return pfn;
  }

  /** The block allocBlockPages(req) would take now, or -1; changes nothing. */
  peekBlockPages(req: GuestAllocRequest): number {
    const z = this.blockZone(req);
    return z ? this.resolve(z, z.heads[MAX_PAGE_ORDER]!) : -1;
  }

  /** The zone whose head MAX_PAGE_ORDER block 1024 order-0 allocations of req would take, or undefined. */
  private blockZone(req: GuestAllocRequest): GuestZone | undefined {
    if (req.order !== 0 || req.use === PageUse.Free || req.use === PageUse.Hole || req.use === PageUse.Isolated) return undefined;
    const preferred = req.nid ?? this.nodeOfCpu(req.cpu ?? 0);
    const list = req.thisNode ? [preferred] : (this.zonelists[preferred] ?? this.zonelists[0]!);
    for (const nid of list) {
      const z = this.zones[nid];
      if (!z) continue;
      let o = 0;
      while (o <= MAX_PAGE_ORDER && z.heads[o] === -1) o++;
      if (o > MAX_PAGE_ORDER) continue; // nothing free here: the allocation would go on to the next zone
      return o === MAX_PAGE_ORDER ? z : undefined;
    }
    return undefined;
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
      const pfn = this.resolve(z, z.heads[o]!);
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
      if (p < 0 || p >= this.maxPfn || this.nodeOrNone(p) < 0) throw new Error(`guest pfn ${p} is not RAM`);
      if (this.useOf(p) === PageUse.Free) throw new Error(`double free of guest pfn ${p}`);
    }
    this.setUse(pfn, n, PageUse.Free);
    this.freeOnePage(pfn, order, toTail, skipReportNotify);
  }

  /** __free_one_page: merge with free buddies, then file the block. */
  private freeOnePage(pfn: number, order: number, toTail: boolean, skipReportNotify: boolean): void {
    const nid = this.nodeOrNone(pfn);
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
    return (
      pfn >= 0 && pfn < this.maxPfn && (this.flagsOf(pfn) & PG_BUDDY) !== 0 && this.orderOf(pfn) === order && this.nodeOrNone(pfn) === nid
    );
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
      if (this.useOf(p) !== PageUse.Free) {
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
      const z = this.zones[this.nodeOrNone(head)]!;
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
    const z = this.zones[this.nodeOrNone(pfn)]!;
    this.listDel(z, pfn, order);
    z.freePages -= 1 << order;
    this.setUse(pfn, 1 << order, PageUse.Isolated);
  }

  /** __putback_isolated_page: back to the tail of its list, without a report notification. */
  putbackIsolatedPage(pfn: number, order: number): void {
    if (this.useOf(pfn) !== PageUse.Isolated) throw new Error(`guest pfn ${pfn} was not isolated`);
    this.setUse(pfn, 1 << order, PageUse.Free);
    this.freeOnePage(pfn, order, true, true);
  }

  /** __SetPageReported. */
  setReported(pfn: number): void {
    if (this.isPristine(pfn)) this.unpristineThrough(this.zones[this.nodeOrNone(pfn)]!, pfn);
    this.sec(pfn).flags[pfn & SECTION_MASK]! |= PG_REPORTED;
  }

  /** list_rotate_to_front: make `pfn` the first entry of its free list, keeping the cyclic order. */
  rotateToFront(pfn: number): void {
    const order = this.buddyOrder(pfn);
    if (order < 0) throw new Error(`guest pfn ${pfn} is not a free block`);
    const z = this.zones[this.nodeOrNone(pfn)]!;
    let id = pfn;
    if (this.isPristine(pfn)) {
      // The pristine blocks before it become explicit entries before the PRISTINE entry, which then leads.
      if (pfn > z.pristine[0]![0]) this.unpristineThrough(z, pfn - (1 << MAX_PAGE_ORDER));
      id = PRISTINE;
    }
    const first = z.heads[order]!;
    if (first === id) return;
    const before = this.linkPrev(z, id);
    const last = z.tails[order]!;
    // [first .. before] [id .. last]  ->  [id .. last] [first .. before]
    this.setLinkNext(z, last, first);
    this.setLinkPrev(z, first, last);
    this.setLinkNext(z, before, -1);
    this.setLinkPrev(z, id, -1);
    z.heads[order] = id;
    z.tails[order] = before;
  }

  /**
   * The pristine blocks from the first through `pfn` become explicit list
   * entries, in order, just before the PRISTINE entry (their list position).
   */
  private unpristineThrough(z: GuestZone, pfn: number): void {
    while (z.pristine.length && z.pristine[0]![0] <= pfn) {
      const p = z.pristine[0]![0];
      this.sec(p); // made while the block is still pristine: its frames read free, p a buddy head
      this.takeFirstPristine(z);
      this.linkBefore(z, p, PRISTINE, MAX_PAGE_ORDER);
      if (!z.pristine.length) this.unlinkPristineEntry(z);
    }
  }

  // --- lists and bookkeeping ----------------------------------------------------------

  private linkNext(z: GuestZone, id: number): number {
    if (id === PRISTINE) return z.pristineNext;
    const o = id & SECTION_MASK;
    const l = this.sec(id).links[o >>> LINK_SHIFT];
    return l === undefined ? -1 : l[2 * (o & LINK_MASK)]!;
  }
  private linkPrev(z: GuestZone, id: number): number {
    if (id === PRISTINE) return z.pristinePrev;
    const o = id & SECTION_MASK;
    const l = this.sec(id).links[o >>> LINK_SHIFT];
    return l === undefined ? -1 : l[2 * (o & LINK_MASK) + 1]!;
  }
  private setLinkNext(z: GuestZone, id: number, v: number): void {
    if (id === PRISTINE) z.pristineNext = v;
    else if (id >= 0) this.linkTable(id)[2 * (id & LINK_MASK)] = v;
  }
  private setLinkPrev(z: GuestZone, id: number, v: number): void {
    if (id === PRISTINE) z.pristinePrev = v;
    else if (id >= 0) this.linkTable(id)[2 * (id & LINK_MASK) + 1] = v;
  }

  /** The link table of frame pfn, made (every entry -1: on no list) when it has none. */
  private linkTable(pfn: number): Int32Array {
    const s = this.sec(pfn);
    const t = (pfn & SECTION_MASK) >>> LINK_SHIFT;
    let l = s.links[t];
    if (l === undefined) s.links[t] = l = new Int32Array(2 * LINK_FRAMES).fill(-1);
    return l;
  }

  /** Frame `id` (not the PRISTINE entry) goes on a free list, or comes off one (its links are then -1). */
  private countLinked(id: number, delta: 1 | -1): void {
    if (id < 0) return;
    const s = this.sec(id);
    const t = (id & SECTION_MASK) >>> LINK_SHIFT;
    s.linked[t]! += delta;
    // Its last frame left the lists: every entry reads -1 again, which no table says as well.
    if (s.linked[t] === 0) s.links[t] = undefined;
  }

  /** Link entry `id` at the head or tail of free_area[order]. */
  private linkAdd(z: GuestZone, id: number, order: number, tail: boolean): void {
    this.countLinked(id, 1);
    if (tail) {
      const t = z.tails[order]!;
      this.setLinkPrev(z, id, t);
      this.setLinkNext(z, id, -1);
      if (t !== -1) this.setLinkNext(z, t, id);
      else z.heads[order] = id;
      z.tails[order] = id;
    } else {
      const h = z.heads[order]!;
      this.setLinkNext(z, id, h);
      this.setLinkPrev(z, id, -1);
      if (h !== -1) this.setLinkPrev(z, h, id);
      else z.tails[order] = id;
      z.heads[order] = id;
    }
  }

  /** Link pfn just before entry `at` (-1: at the tail) of free_area[order]; counts nothing. */
  private linkBefore(z: GuestZone, pfn: number, at: number, order: number): void {
    if (at === -1) return this.linkAdd(z, pfn, order, true);
    this.countLinked(pfn, 1);
    const p = this.linkPrev(z, at);
    this.setLinkNext(z, pfn, at);
    this.setLinkPrev(z, pfn, p);
    this.setLinkPrev(z, at, pfn);
    if (p !== -1) this.setLinkNext(z, p, pfn);
    else z.heads[order] = pfn;
  }

  /** Unlink entry `id` from free_area[order]. */
  private unlink(z: GuestZone, id: number, order: number): void {
    const p = this.linkPrev(z, id);
    const n = this.linkNext(z, id);
    if (p !== -1) this.setLinkNext(z, p, n);
    else z.heads[order] = n;
    if (n !== -1) this.setLinkPrev(z, n, p);
    else z.tails[order] = p;
    this.setLinkNext(z, id, -1);
    this.setLinkPrev(z, id, -1);
    this.countLinked(id, -1);
  }

  private unlinkPristineEntry(z: GuestZone): void {
    this.unlink(z, PRISTINE, MAX_PAGE_ORDER);
  }

  /** The first pristine block leaves the intervals (not the counters); returns it. */
  private takeFirstPristine(z: GuestZone): number {
    const iv = z.pristine[0]!;
    const pfn = iv[0];
    iv[0] += 1 << MAX_PAGE_ORDER;
    if (iv[0] === iv[1]) z.pristine.shift();
    return pfn;
  }

  private listAdd(z: GuestZone, pfn: number, order: number, tail: boolean): void {
    const s = this.sec(pfn);
    s.flags[pfn & SECTION_MASK] = PG_BUDDY;
    s.order[pfn & SECTION_MASK] = order;
    this.linkAdd(z, pfn, order, tail);
    z.nrFree[order]!++;
  }

  /** del_page_from_free_list: unlink; clears PG_buddy and PG_reported. A pristine block leaves its interval. */
  private listDel(z: GuestZone, pfn: number, order: number): void {
    if (order === MAX_PAGE_ORDER && this.isPristine(pfn)) {
      this.sec(pfn); // made while the block is still pristine: its frames read free
      const i = this.pristineIndex(z, pfn);
      const [a, b] = z.pristine[i]!;
      const n = 1 << MAX_PAGE_ORDER;
      if (a === pfn && b === pfn + n) z.pristine.splice(i, 1);
      else if (a === pfn) z.pristine[i]![0] = pfn + n;
      else if (b === pfn + n) z.pristine[i]![1] = pfn;
      else z.pristine.splice(i, 1, [a, pfn], [pfn + n, b]);
      if (!z.pristine.length) this.unlinkPristineEntry(z);
    } else this.unlink(z, pfn, order);
    this.sec(pfn).flags[pfn & SECTION_MASK] = 0;
    z.nrFree[order]!--;
  }

  private setUse(pfn: number, n: number, use: PageUse): void {
    for (let p = pfn; p < pfn + n;) {
      const s = this.sec(p);
      const lo = p & SECTION_MASK;
      const hi = Math.min(SECTION_PAGES, lo + (pfn + n - p));
      for (let i = lo; i < hi; i++) {
        const old = s.use[i]!;
        if (old !== PageUse.Hole) this.nrUse[old]!--;
      }
      this.nrUse[use]! += hi - lo;
      s.use.fill(use, lo, hi);
      p += hi - lo;
    }
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
