/**
 * Frame metadata: the simulator's `struct page` array (mem_map).
 *
 * Like SPARSEMEM, metadata lives in sections of 2^15 frames (128 MiB) that
 * are created the first time any frame in them is handed out, so a host of
 * 1 TiB costs nothing until its memory is used. Fields are parallel typed
 * arrays, one element per 4K frame, the way struct page is one per frame.
 */

export const SECTION_SHIFT = 15;
export const PAGES_PER_SECTION = 1 << SECTION_SHIFT;
export const SECTION_MASK = PAGES_PER_SECTION - 1;

/** page flags (a subset of enum pageflags, with the same meaning). */
export const PG = {
  buddy: 1 << 0, // head of a free buddy block (PageBuddy)
  head: 1 << 1, // head of a compound page (PG_head)
  tail: 1 << 2, // tail of a compound page
  hugetlb: 1 << 3, // belongs to a hugetlb folio (free in a pool or in use)
  anon: 1 << 4, // anonymous (PageAnon)
  pgtable: 1 << 5, // a page-table page (PageTable)
  shmem: 1 << 6, // a page-cache page: shmem/tmpfs (PageSwapBacked), or a disk file's with diskFile (mapping = inode)
  lazyfree: 1 << 7, // MADV_FREE'd: anonymous but not PG_swapbacked (until reclaim finds it dirty again)
  reserved: 1 << 8, // PG_reserved: never allocatable (holes, the zero page)
  nonzero: 1 << 9, // some byte of the page was written non-zero (memtwin: "is it all zeros?")
  // Swap state (include/linux/page-flags.h), kept on the head page of a folio.
  swapcache: 1 << 10, // PG_swapcache: in the swap cache (swap_state.ts), folio->swap in SwapState.entryOf
  dirty: 1 << 11, // PG_dirty (with pte_dirty): written since its swap slot last got its content (a disk file's page: since read)
  reclaim: 1 << 12, // PG_reclaim: written to swap by reclaim, stays in the swap cache until reclaim finds it again
  readahead: 1 << 13, // PG_readahead: read ahead by swap readahead and not used yet
  // LRU state (kept on the head page of a folio): swap.ts, vmscan.ts.
  lru: 1 << 14, // PG_lru: on an LRU list of its lruvec
  active: 1 << 15, // PG_active: on the active list
  referenced: 1 << 16, // PG_referenced: seen referenced once by reclaim (folio_check_references)
  workingset: 1 << 17, // PG_workingset
  /** memtwin: the accessed (young) bit of the PTE or PMD mapping the page, kept per frame (reclaim reads and clears it). */
  young: 1 << 18,
  /** memtwin: on a file LRU list (folio_is_file_lru); anonymous and swap-backed pages are not. */
  fileLru: 1 << 19,
  /**
   * PageAnonExclusive: this anonymous page is mapped by one mm only, which may
   * write it in place. New anonymous pages have it; fork clears it on every
   * page it shares (copy_page_range), and a write fault that finds a page
   * without it copies the page or reuses it (do_wp_page). Only what it means
   * for writes is modelled: memtwin's PTEs have no write bit, so a write to an
   * anonymous page without it, in a private mapping, always faults.
   */
  anonExclusive: 1 << 20,
  /** A page-cache page of a disk file (not PageSwapBacked): read from the disk, counted in MM_FILEPAGES. Set with shmem. */
  diskFile: 1 << 21,
} as const;

/** Owner ids in `owner`: > 0 is an mm id or a shmem/hugetlbfs inode id. */
export const OWNER_FREE = 0;
export const OWNER_KERNEL = -1; // page tables and other kernel memory
export const OWNER_HUGETLB_POOL = -2; // a free hugetlb page in its pool

export class Section {
  readonly flags = new Uint32Array(PAGES_PER_SECTION);
  /** buddy order for a free head; compound order for a compound head. */
  readonly order = new Uint8Array(PAGES_PER_SECTION);
  /** PTE mappings of this 4K page (page->_mapcount + 1). */
  readonly mapcount = new Int32Array(PAGES_PER_SECTION);
  /**
   * PMD/PUD mappings of the folio (head only: folio->_entire_mapcount + 1).
   * Allocated when a frame of the section first gets a non-zero value: a
   * section no PMD or PUD ever mapped keeps none (0 everywhere).
   */
  entireMapcount: Int32Array | null = null;
  readonly owner = new Int32Array(PAGES_PER_SECTION);
  /**
   * rmap: virtual page number (anon) or file page index (shmem/hugetlbfs),
   * below 2^40 (a 52-bit address space of 4K pages): its low 32 bits here,
   * the rest in indexHi (5 bytes a frame instead of a float64's 8).
   */
  readonly index = new Uint32Array(PAGES_PER_SECTION);
  readonly indexHi = new Uint8Array(PAGES_PER_SECTION);
  /**
   * Content token of the 4K page: low 8 bits are the first byte of the page
   * (what `peek` reads), the upper 24 bits a write serial, so migration and
   * copies can be proven to carry data, not just "some" byte.
   */
  readonly token = new Uint32Array(PAGES_PER_SECTION);
  /**
   * page->_last_cpupid (LAST_CPUPID_NOT_IN_PAGE_FLAGS): cpu and low pid bits
   * of the task that took the last NUMA hinting fault on the page, -1 when
   * none has (page_cpupid_reset_last). A folio keeps it in its head page.
   * Allocated at the section's first hinting fault (-1 everywhere until then).
   */
  lastCpupid: Int32Array | null = null;
  /** free-list links for buddy heads (struct page's lru list_head). */
  readonly next = new Int32Array(PAGES_PER_SECTION).fill(-1);
  readonly prev = new Int32Array(PAGES_PER_SECTION).fill(-1);
  /**
   * The memory cgroup charged for the frame (folio->memcg_data as an id:
   * memcontrol.ts; 0 = none, the root). Allocated at the section's first
   * charge to a group other than the root.
   */
  memcg: Uint16Array | null = null;

  /** Bytes of the arrays allocated: 30 per frame always, the side arrays when in use. */
  bytes(): number {
    const side = (this.entireMapcount ? 4 : 0) + (this.lastCpupid ? 4 : 0) + (this.memcg ? 2 : 0);
    return PAGES_PER_SECTION * (4 + 1 + 4 + 4 + 5 + 4 + 4 + 4 + side);
  }
}

/** Store a frame's rmap index (below 2^40) in a section. */
export function setIndexAt(s: Section, i: number, index: number): void {
  s.index[i] = index >>> 0; // ToUint32: the low 32 bits of an integer below 2^53
  s.indexHi[i] = (index / 2 ** 32) | 0;
}

export class MemMap {
  private readonly sections: (Section | undefined)[];
  materialized = 0;

  constructor(readonly totalPages: number) {
    this.sections = new Array(Math.ceil(totalPages / PAGES_PER_SECTION));
  }

  /** The section holding pfn, created on first use. */
  sec(pfn: number): Section {
    const i = pfn >>> SECTION_SHIFT;
    let s = this.sections[i];
    if (!s) {
      s = new Section();
      this.sections[i] = s;
      this.materialized++;
    }
    return s;
  }

  isMaterialized(pfn: number): boolean {
    return this.sections[pfn >>> SECTION_SHIFT] !== undefined;
  }

  flags(pfn: number): number {
    return this.sec(pfn).flags[pfn & SECTION_MASK]!;
  }
  setFlags(pfn: number, f: number): void {
    this.sec(pfn).flags[pfn & SECTION_MASK] = f;
  }
  addFlags(pfn: number, f: number): void {
    this.sec(pfn).flags[pfn & SECTION_MASK]! |= f;
  }
  clearFlags(pfn: number, f: number): void {
    this.sec(pfn).flags[pfn & SECTION_MASK]! &= ~f;
  }
  test(pfn: number, f: number): boolean {
    return (this.sec(pfn).flags[pfn & SECTION_MASK]! & f) !== 0;
  }

  order(pfn: number): number {
    return this.sec(pfn).order[pfn & SECTION_MASK]!;
  }
  setOrder(pfn: number, o: number): void {
    this.sec(pfn).order[pfn & SECTION_MASK] = o;
  }

  mapcount(pfn: number): number {
    return this.sec(pfn).mapcount[pfn & SECTION_MASK]!;
  }
  addMapcount(pfn: number, d: number): number {
    const s = this.sec(pfn);
    return (s.mapcount[pfn & SECTION_MASK]! += d);
  }
  entireMapcount(pfn: number): number {
    const a = this.sec(pfn).entireMapcount;
    return a ? a[pfn & SECTION_MASK]! : 0;
  }
  addEntireMapcount(pfn: number, d: number): number {
    const s = this.sec(pfn);
    s.entireMapcount ??= new Int32Array(PAGES_PER_SECTION);
    return (s.entireMapcount[pfn & SECTION_MASK]! += d);
  }

  setEntireMapcountZero(pfn: number): void {
    const a = this.sec(pfn).entireMapcount;
    if (a) a[pfn & SECTION_MASK] = 0;
  }

  owner(pfn: number): number {
    return this.sec(pfn).owner[pfn & SECTION_MASK]!;
  }
  setOwner(pfn: number, o: number): void {
    this.sec(pfn).owner[pfn & SECTION_MASK] = o;
  }

  index(pfn: number): number {
    const s = this.sec(pfn);
    const i = pfn & SECTION_MASK;
    return s.indexHi[i]! * 2 ** 32 + s.index[i]!;
  }
  setIndex(pfn: number, i: number): void {
    setIndexAt(this.sec(pfn), pfn & SECTION_MASK, i);
  }

  token(pfn: number): number {
    return this.sec(pfn).token[pfn & SECTION_MASK]!;
  }
  setToken(pfn: number, t: number): void {
    this.sec(pfn).token[pfn & SECTION_MASK] = t;
  }

  /** folio_last_cpupid: the cpupid of the last NUMA hinting fault (-1: none). */
  lastCpupid(pfn: number): number {
    const a = this.sec(pfn).lastCpupid;
    return a ? a[pfn & SECTION_MASK]! : -1;
  }
  /** folio_xchg_last_cpupid: store cpupid, return the previous value. */
  xchgLastCpupid(pfn: number, cpupid: number): number {
    const s = this.sec(pfn);
    if (!s.lastCpupid && cpupid === -1) return -1;
    const a = (s.lastCpupid ??= new Int32Array(PAGES_PER_SECTION).fill(-1));
    const i = pfn & SECTION_MASK;
    const old = a[i]!;
    a[i] = cpupid;
    return old;
  }

  /** The id of the memory cgroup the frame is charged to (0: none, the root's). */
  memcg(pfn: number): number {
    const a = this.sec(pfn).memcg;
    return a ? a[pfn & SECTION_MASK]! : 0;
  }
  /** Charge `n` frames from pfn (one section) to memory cgroup `id` (commit_charge), or clear them (0). */
  setMemcg(pfn: number, n: number, id: number): void {
    const s = this.sec(pfn);
    if (!s.memcg && id === 0) return;
    const i = pfn & SECTION_MASK;
    (s.memcg ??= new Uint16Array(PAGES_PER_SECTION)).fill(id, i, i + n);
  }

  next(pfn: number): number {
    return this.sec(pfn).next[pfn & SECTION_MASK]!;
  }
  setNext(pfn: number, v: number): void {
    this.sec(pfn).next[pfn & SECTION_MASK] = v;
  }
  prev(pfn: number): number {
    return this.sec(pfn).prev[pfn & SECTION_MASK]!;
  }
  setPrev(pfn: number, v: number): void {
    this.sec(pfn).prev[pfn & SECTION_MASK] = v;
  }

  /** A freshly allocated order-0 page becomes an anonymous page mapped once (page_add_new_anon_rmap). */
  initAnonPage(pfn: number, owner: number, index: number, flags: number): void {
    const s = this.sec(pfn);
    const i = pfn & SECTION_MASK;
    s.flags[i] = flags;
    s.owner[i] = owner;
    setIndexAt(s, i, index);
    s.mapcount[i] = 1;
  }

  /** clear_page: the whole page is zero now (a new write serial; no non-zero byte; not lazyfree; dirty). */
  clearPage(pfn: number, serial: number): void {
    const s = this.sec(pfn);
    const i = pfn & SECTION_MASK;
    s.token[i] = (serial * 256) >>> 0;
    s.flags[i] = (s.flags[i]! & ~(PG.lazyfree | PG.nonzero)) | PG.dirty | PG.young;
  }

  /** A load from the page: the hardware sets the accessed bit of the PTE or PMD mapping it (PG.young). */
  markYoung(pfn: number): void {
    this.sec(pfn).flags[pfn & SECTION_MASK]! |= PG.young;
  }

  /**
   * A store of `fill` into the page: the first byte changes only for a
   * store at offset 0; the write serial changes either way. The page is dirty
   * (its swap copy, if any, is stale). A lazyfree page stays lazyfree (not
   * PG_swapbacked): reclaim finds it dirty and makes it swap-backed again
   * instead of discarding it (try_to_unmap_one).
   */
  storeByte(pfn: number, serial: number, fill: number, atPageStart: boolean): void {
    const s = this.sec(pfn);
    const i = pfn & SECTION_MASK;
    const keep = atPageStart ? fill : s.token[i]! & 0xff;
    s.token[i] = (serial * 256 + keep) >>> 0;
    s.flags[i] = s.flags[i]! | (fill ? PG.nonzero | PG.dirty | PG.young : PG.dirty | PG.young);
  }

  /**
   * A fresh naturally aligned compound folio of 2^order pages (order <= 15,
   * inside one section) becomes anonymous memory of `owner` at virtual page
   * `vpn`: head and tail flags, owner, rmap index.
   */
  initAnonFolio(pfn: number, order: number, owner: number, vpn: number, extraFlags: number): void {
    const s = this.sec(pfn);
    const i = pfn & SECTION_MASK;
    const n = 1 << order;
    s.flags[i] = PG.head | extraFlags;
    s.flags.fill(PG.tail | extraFlags, i + 1, i + n);
    s.order[i] = order;
    s.owner.fill(owner, i, i + n);
    for (let j = 0; j < n; j++) setIndexAt(s, i + j, vpn + j);
  }

  /** Sum of the PTE mapcounts of n pages from pfn (inside one section). */
  sumMapcount(pfn: number, n: number): number {
    const s = this.sec(pfn);
    const i = pfn & SECTION_MASK;
    let t = 0;
    for (let j = i; j < i + n; j++) t += s.mapcount[j]!;
    return t;
  }

  /** Reset one frame (the hot order-0 case of resetRange). */
  resetPage(pfn: number): void {
    const s = this.sec(pfn);
    const i = pfn & SECTION_MASK;
    s.flags[i] = 0;
    s.order[i] = 0;
    s.mapcount[i] = 0;
    if (s.entireMapcount) s.entireMapcount[i] = 0;
    s.owner[i] = 0;
    s.index[i] = 0;
    s.indexHi[i] = 0;
    s.token[i] = 0;
    if (s.lastCpupid) s.lastCpupid[i] = -1;
    if (s.memcg) s.memcg[i] = 0;
  }

  /** Reset every field of `n` frames from pfn (frames handed to a new user). */
  resetRange(pfn: number, n: number): void {
    let p = pfn;
    const end = pfn + n;
    while (p < end) {
      const s = this.sec(p);
      const lo = p & SECTION_MASK;
      const hi = Math.min(PAGES_PER_SECTION, lo + (end - p));
      s.flags.fill(0, lo, hi);
      s.order.fill(0, lo, hi);
      s.mapcount.fill(0, lo, hi);
      s.entireMapcount?.fill(0, lo, hi);
      s.owner.fill(0, lo, hi);
      s.index.fill(0, lo, hi);
      s.indexHi.fill(0, lo, hi);
      s.token.fill(0, lo, hi);
      s.lastCpupid?.fill(-1, lo, hi);
      s.memcg?.fill(0, lo, hi);
      p += hi - lo;
    }
  }

  /** Bytes of metadata currently allocated (for memtwin's own memory use). */
  metadataBytes(): number {
    let b = 0;
    for (const s of this.sections) if (s) b += s.bytes();
    return b;
  }
}
