/**
 * Frame metadata: the simulator's `struct page` array (mem_map).
 *
 * Like SPARSEMEM, metadata lives in sections of 2^15 frames (128 MiB) that
 * are created the first time any frame in them is handed out, so a host of
 * 1 TiB costs nothing until its memory is used. Fields are parallel typed
 * arrays, one element per 4K frame, the way struct page is one per frame;
 * the ones whose values follow a pattern are kept narrow until a frame of
 * the section breaks it (Section).
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

/** Frames of a section that share one rmap index rule (index = base + i): a pageblock's worth. */
const INDEX_CHUNK_SHIFT = 9;
const INDEX_CHUNKS = PAGES_PER_SECTION >>> INDEX_CHUNK_SHIFT;
/** Distinct owners a section's byte-wide owner column can name before it widens to the owner ids themselves. */
const OWNER_CODES = 256;
/**
 * Links a section keeps outside its link nibbles before it widens to two
 * int32 link columns (8 bytes a frame). A section of huge folios and free
 * blocks links only their heads, far apart: at most 64 2M folios or 32 4M
 * blocks, two links each, stay below it without widening.
 */
const LINK_ESCAPES_MAX = 256;
/** Link nibble codes: 0 is no link (-1); 1..7 is pfn + 1..7; 8..14 is pfn - 1..7; 15 is in the escape map. */
const LINK_NONE = 0;
const LINK_ESCAPE = 15;

/**
 * One section of the frame metadata. Columns whose values follow a pattern
 * in practice are narrow, and a section widens a column the first time one
 * of its frames needs a value the narrow form cannot hold, so the cost
 * follows the distinct state rather than the frame count:
 * - mapcount is a byte (int32 after a value outside -128..127);
 * - owner is a byte naming one of the section's owners (the owner ids
 *   themselves once a 257th distinct owner appears in the section);
 * - the rmap index is a rule per 512 frames (index = base + offset, or 0),
 *   a bit per frame saying which (5 bytes a frame after a frame breaks its
 *   chunk's rule);
 * - the list links (struct page's lru / buddy_list: a frame is on an LRU
 *   list or a free list, never both) are a nibble each holding the
 *   distance to the linked frame when it is within 7 frames, which it is
 *   when frames are put on a list in pfn order; farther links sit in a
 *   small map (two int32 columns after LINK_ESCAPES_MAX of them).
 * Every accessor reads back exactly what was written.
 */
export class Section {
  readonly flags = new Uint32Array(PAGES_PER_SECTION);
  /** buddy order for a free head; compound order for a compound head. */
  readonly order = new Uint8Array(PAGES_PER_SECTION);
  /** PTE mappings of this 4K page (page->_mapcount + 1): a byte until a value needs more. */
  mapcount: Int8Array | Int32Array = new Int8Array(PAGES_PER_SECTION);
  /**
   * PMD/PUD mappings of the folio (head only: folio->_entire_mapcount + 1).
   * Allocated when a frame of the section first gets a non-zero value: a
   * section no PMD or PUD ever mapped keeps none (0 everywhere).
   */
  entireMapcount: Int32Array | null = null;
  /** The frame's owner as a code into `owners` (until ownerWide exists). */
  private readonly ownerCode = new Uint8Array(PAGES_PER_SECTION);
  /** Owner ids by code; code 0 is OWNER_FREE. */
  private readonly owners: number[] = [OWNER_FREE];
  private lastOwner = OWNER_FREE;
  private lastOwnerCode = 0;
  /** Owner ids per frame, once the section has seen more than OWNER_CODES owners. */
  private ownerWide: Int32Array | null = null;
  /**
   * rmap: virtual page number (anon) or file page index (shmem/hugetlbfs),
   * below 2^40 (a 52-bit address space of 4K pages). While every frame of a
   * 512-frame chunk holds 0 or base + offset, the chunk keeps base and a bit
   * per frame; the first frame that breaks its chunk's rule gives the
   * section the index columns (low 32 bits, high 8 bits).
   */
  private readonly indexBase = new Float64Array(INDEX_CHUNKS);
  private readonly indexCount = new Uint16Array(INDEX_CHUNKS);
  private readonly indexBits = new Int32Array(PAGES_PER_SECTION >>> 5);
  private indexLo: Uint32Array | null = null;
  private indexHi: Uint8Array | null = null;
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
  /** next (low nibble) and prev (high nibble) list links as distance codes (LINK_*). */
  private readonly link = new Uint8Array(PAGES_PER_SECTION);
  /** Links too far for a nibble: key 2i (next) or 2i + 1 (prev). */
  private linkEscapes: Map<number, number> | null = null;
  /** The links as pfns, once the section has more than LINK_ESCAPES_MAX far links. */
  private nextWide: Int32Array | null = null;
  private prevWide: Int32Array | null = null;
  /**
   * The memory cgroup charged for the frame (folio->memcg_data as an id:
   * memcontrol.ts; 0 = none, the root). Allocated at the section's first
   * charge to a group other than the root.
   */
  memcg: Uint16Array | null = null;

  /** `base` is the section's first pfn (links are kept relative to the frame's own pfn). */
  constructor(readonly base: number) {}

  // --- mapcount ---

  setMapcountAt(i: number, v: number): void {
    if ((v < -128 || v > 127) && this.mapcount instanceof Int8Array) this.mapcount = Int32Array.from(this.mapcount);
    this.mapcount[i] = v;
  }

  // --- owner ---

  ownerAt(i: number): number {
    return this.ownerWide ? this.ownerWide[i]! : this.owners[this.ownerCode[i]!]!;
  }
  setOwnerAt(i: number, o: number): void {
    if (this.ownerWide) {
      this.ownerWide[i] = o;
      return;
    }
    if (o === OWNER_FREE) {
      this.ownerCode[i] = 0; // code 0 is always OWNER_FREE: frames freed between uses of one owner keep its cache
      return;
    }
    if (o !== this.lastOwner) {
      let c = this.owners.indexOf(o);
      if (c < 0) {
        if (this.owners.length === OWNER_CODES) {
          this.widenOwner();
          this.ownerWide![i] = o;
          return;
        }
        c = this.owners.push(o) - 1;
      }
      this.lastOwner = o;
      this.lastOwnerCode = c;
    }
    this.ownerCode[i] = this.lastOwnerCode;
  }
  /** setOwnerAt for frames lo..hi-1. */
  fillOwner(o: number, lo: number, hi: number): void {
    if (this.ownerWide) this.ownerWide.fill(o, lo, hi);
    else if (lo < hi) {
      this.setOwnerAt(lo, o);
      if (this.ownerWide) (this.ownerWide as Int32Array).fill(o, lo, hi);
      else this.ownerCode.fill(this.ownerCode[lo]!, lo, hi);
    }
  }
  private widenOwner(): void {
    const w = new Int32Array(PAGES_PER_SECTION);
    for (let i = 0; i < PAGES_PER_SECTION; i++) w[i] = this.owners[this.ownerCode[i]!]!;
    this.ownerWide = w;
  }

  // --- rmap index ---

  indexAt(i: number): number {
    if (this.indexLo) return this.indexHi![i]! * 2 ** 32 + this.indexLo[i]!;
    return this.indexBits[i >>> 5]! & (1 << (i & 31)) ? this.indexBase[i >>> INDEX_CHUNK_SHIFT]! + i : 0;
  }
  setIndexAt(i: number, v: number): void {
    if (this.indexLo) {
      this.indexLo[i] = v >>> 0; // ToUint32: the low 32 bits of an integer below 2^53
      this.indexHi![i] = (v / 2 ** 32) | 0;
      return;
    }
    const c = i >>> INDEX_CHUNK_SHIFT;
    const w = i >>> 5;
    const bit = 1 << (i & 31);
    const isSet = (this.indexBits[w]! & bit) !== 0;
    if (v === 0) {
      if (isSet) {
        this.indexBits[w]! &= ~bit;
        this.indexCount[c]!--;
      }
      return;
    }
    const b = v - i;
    if (this.indexCount[c] === 0 || (isSet && this.indexCount[c] === 1)) this.indexBase[c] = b;
    else if (this.indexBase[c] !== b) {
      this.widenIndex();
      this.setIndexAt(i, v);
      return;
    }
    if (!isSet) {
      this.indexBits[w]! |= bit;
      this.indexCount[c]!++;
    }
  }
  /**
   * setIndexAt(i + j, v + j) for j < n (frames inside the section; v > 0):
   * a folio's frames at consecutive virtual pages. Where a chunk is empty
   * or already follows the run's rule its bits are set in one pass;
   * anything else goes frame by frame.
   */
  setIndexRun(i: number, n: number, v: number): void {
    const b = v - i;
    for (let q = i, end = i + n; q < end;) {
      const c = q >>> INDEX_CHUNK_SHIFT;
      const hi = Math.min(end, (c + 1) << INDEX_CHUNK_SHIFT);
      if (this.indexLo || v <= 0 || (this.indexCount[c] !== 0 && this.indexBase[c] !== b)) {
        for (; q < end; q++) this.setIndexAt(q, b + q);
        return;
      }
      this.indexBase[c] = b;
      let count = this.indexCount[c]!;
      const bits = this.indexBits;
      for (; q < hi; q++) {
        const w = q >>> 5;
        const bit = 1 << (q & 31);
        if ((bits[w]! & bit) === 0) {
          bits[w]! |= bit;
          count++;
        }
      }
      this.indexCount[c] = count;
    }
  }
  /** setIndexAt(i, 0) for frames lo..hi-1. */
  clearIndex(lo: number, hi: number): void {
    if (this.indexLo) {
      this.indexLo.fill(0, lo, hi);
      this.indexHi!.fill(0, lo, hi);
    } else for (let i = lo; i < hi; i++) if (this.indexBits[i >>> 5]) this.setIndexAt(i, 0);
  }
  private widenIndex(): void {
    const lo = new Uint32Array(PAGES_PER_SECTION);
    const hi = new Uint8Array(PAGES_PER_SECTION);
    for (let i = 0; i < PAGES_PER_SECTION; i++) {
      const v = this.indexAt(i);
      lo[i] = v >>> 0;
      hi[i] = (v / 2 ** 32) | 0;
    }
    this.indexLo = lo;
    this.indexHi = hi;
  }

  // --- list links ---

  nextAt(i: number): number {
    return this.nextWide ? this.nextWide[i]! : this.linkOf(i, this.link[i]! & 15, 0);
  }
  prevAt(i: number): number {
    return this.prevWide ? this.prevWide[i]! : this.linkOf(i, this.link[i]! >>> 4, 1);
  }
  setNextAt(i: number, v: number): void {
    if (this.nextWide) this.nextWide[i] = v;
    else this.setLink(i, v, 0);
  }
  setPrevAt(i: number, v: number): void {
    if (this.prevWide) this.prevWide[i] = v;
    else this.setLink(i, v, 1);
  }
  /** Both links of frame i (list_add and list_del's hot cases: one byte written when both are near or none). */
  setLinksAt(i: number, next: number, prev: number): void {
    if (this.nextWide) {
      this.nextWide[i] = next;
      this.prevWide![i] = prev;
      return;
    }
    const old = this.link[i]!;
    const cn = this.linkCode(i, next);
    const cp = this.linkCode(i, prev);
    if (cn !== LINK_ESCAPE && cp !== LINK_ESCAPE && (old & 15) !== LINK_ESCAPE && old >>> 4 !== LINK_ESCAPE) this.link[i] = cn | (cp << 4);
    else {
      this.setLink(i, next, 0);
      this.setLinksAtPrev(i, prev);
    }
  }
  private setLinksAtPrev(i: number, prev: number): void {
    if (this.prevWide)
      this.prevWide[i] = prev; // the next link's escape widened the section
    else this.setLink(i, prev, 1);
  }
  private linkCode(i: number, v: number): number {
    if (v === -1) return LINK_NONE;
    const d = v - this.base - i;
    return d >= 1 && d <= 7 ? d : d <= -1 && d >= -7 ? 7 - d : LINK_ESCAPE;
  }
  private linkOf(i: number, code: number, which: number): number {
    if (code === LINK_NONE) return -1;
    if (code < 8) return this.base + i + code;
    if (code < LINK_ESCAPE) return this.base + i + 7 - code;
    return this.linkEscapes!.get(2 * i + which)!;
  }
  private setLink(i: number, v: number, which: number): void {
    const code = this.linkCode(i, v);
    const old = this.link[i]!;
    const shift = which << 2;
    if (((old >>> shift) & 15) === LINK_ESCAPE && code !== LINK_ESCAPE) this.linkEscapes!.delete(2 * i + which);
    this.link[i] = (old & ~(15 << shift)) | (code << shift);
    if (code === LINK_ESCAPE) {
      const esc = (this.linkEscapes ??= new Map());
      esc.set(2 * i + which, v);
      if (esc.size > LINK_ESCAPES_MAX) this.widenLinks();
    }
  }
  private widenLinks(): void {
    const next = new Int32Array(PAGES_PER_SECTION);
    const prev = new Int32Array(PAGES_PER_SECTION);
    // nextAt and prevAt for every frame, the codes decoded here (most frames are on no list: code LINK_NONE).
    const { link, base } = this;
    for (let i = 0; i < PAGES_PER_SECTION; i++) {
      const l = link[i]!;
      if (l === 0) {
        next[i] = -1;
        prev[i] = -1;
        continue;
      }
      const cn = l & 15;
      const cp = l >>> 4;
      next[i] = cn === LINK_NONE ? -1 : cn < 8 ? base + i + cn : cn < LINK_ESCAPE ? base + i + 7 - cn : this.linkOf(i, cn, 0);
      prev[i] = cp === LINK_NONE ? -1 : cp < 8 ? base + i + cp : cp < LINK_ESCAPE ? base + i + 7 - cp : this.linkOf(i, cp, 1);
    }
    this.nextWide = next;
    this.prevWide = prev;
    this.linkEscapes = null;
  }

  /** Bytes of the arrays allocated: the narrow columns always, the wide and side ones when in use. */
  bytes(): number {
    const P = PAGES_PER_SECTION;
    let b = P * (4 + 1 + 4) + this.mapcount.byteLength; // flags, order, token
    b += this.ownerWide ? this.ownerWide.byteLength : P + this.owners.length * 8;
    b += this.indexLo ? P * 5 : INDEX_CHUNKS * (8 + 2) + P / 8;
    b += this.nextWide ? P * 8 : P + (this.linkEscapes?.size ?? 0) * 16;
    b += (this.entireMapcount?.byteLength ?? 0) + (this.lastCpupid?.byteLength ?? 0) + (this.memcg?.byteLength ?? 0);
    return b;
  }
}

/** Store a frame's rmap index (below 2^40) in a section. */
export function setIndexAt(s: Section, i: number, index: number): void {
  s.setIndexAt(i, index);
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
      s = new Section(i << SECTION_SHIFT);
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
    const i = pfn & SECTION_MASK;
    const v = s.mapcount[i]! + d;
    s.setMapcountAt(i, v);
    return v;
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
    return this.sec(pfn).ownerAt(pfn & SECTION_MASK);
  }
  setOwner(pfn: number, o: number): void {
    this.sec(pfn).setOwnerAt(pfn & SECTION_MASK, o);
  }

  index(pfn: number): number {
    return this.sec(pfn).indexAt(pfn & SECTION_MASK);
  }
  setIndex(pfn: number, i: number): void {
    this.sec(pfn).setIndexAt(pfn & SECTION_MASK, i);
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
    return this.sec(pfn).nextAt(pfn & SECTION_MASK);
  }
  setNext(pfn: number, v: number): void {
    this.sec(pfn).setNextAt(pfn & SECTION_MASK, v);
  }
  prev(pfn: number): number {
    return this.sec(pfn).prevAt(pfn & SECTION_MASK);
  }
  setPrev(pfn: number, v: number): void {
    this.sec(pfn).setPrevAt(pfn & SECTION_MASK, v);
  }

  /** A freshly allocated order-0 page becomes an anonymous page mapped once (page_add_new_anon_rmap). */
  initAnonPage(pfn: number, owner: number, index: number, flags: number): void {
    const s = this.sec(pfn);
    const i = pfn & SECTION_MASK;
    s.flags[i] = flags;
    s.setOwnerAt(i, owner);
    s.setIndexAt(i, index);
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
   * storeByte(frames[j], serial, byte, true) for j = 0 .. n - 1 in order, each store taking the next write
   * serial (24 bits) after `serial`, its byte `fill`, or byteOf(j) when fill < 0. The frames' section arrays
   * are looked up once per section (a bulk allocation's frames mostly follow each other). Returns the last serial.
   */
  storePageStarts(frames: Int32Array, n: number, serial: number, fill: number, byteOf: ((j: number) => number) | null): number {
    let secNo = -1;
    let token: Uint32Array | null = null;
    let flags: Uint32Array | null = null;
    for (let j = 0; j < n; j++) {
      const pfn = frames[j]!;
      serial = (serial + 1) & 0xffffff;
      const byte = fill >= 0 ? fill : byteOf!(j);
      if (pfn >>> SECTION_SHIFT !== secNo) {
        const s = this.sec(pfn);
        secNo = pfn >>> SECTION_SHIFT;
        token = s.token;
        flags = s.flags;
      }
      const i = pfn & SECTION_MASK;
      token![i] = (serial * 256 + byte) >>> 0;
      flags![i] = flags![i]! | (byte ? PG.nonzero | PG.dirty | PG.young : PG.dirty | PG.young);
    }
    return serial;
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
    s.fillOwner(owner, i, i + n);
    s.setIndexRun(i, n, vpn);
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
    s.setOwnerAt(i, OWNER_FREE);
    s.setIndexAt(i, 0);
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
      s.fillOwner(OWNER_FREE, lo, hi);
      s.clearIndex(lo, hi);
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
