/**
 * Address-space types (include/linux/mm_types.h, include/linux/mm.h):
 * VMAs with their vm_flags, the page table, and mm_struct.
 */
import { MMAP_MIN_ADDR, PMD_SIZE, PUD_SIZE, PAGE_SIZE } from './uapi.ts';
import type { Mempolicy } from './mempolicy.ts';
import type { UserfaultfdCtx } from './userfaultfd.ts';
import { VmaTree } from './vma_tree.ts';
import { MigrationEntries } from './migrate_entry.ts';

/** vm_flags bits, with Linux's values (bits above 31 are kept as separate booleans). */
export const VM = {
  READ: 0x1,
  WRITE: 0x2,
  EXEC: 0x4,
  SHARED: 0x8,
  MAYREAD: 0x10,
  MAYWRITE: 0x20,
  MAYEXEC: 0x40,
  MAYSHARE: 0x80,
  GROWSDOWN: 0x100,
  UFFD_MISSING: 0x200,
  PFNMAP: 0x400,
  UFFD_WP: 0x1000,
  LOCKED: 0x2000,
  IO: 0x4000,
  SEQ_READ: 0x8000,
  RAND_READ: 0x10000,
  DONTCOPY: 0x20000,
  DONTEXPAND: 0x40000,
  LOCKONFAULT: 0x80000,
  ACCOUNT: 0x100000,
  NORESERVE: 0x200000,
  HUGETLB: 0x400000,
  SYNC: 0x800000,
  ARCH_1: 0x1000000,
  WIPEONFORK: 0x2000000,
  DONTDUMP: 0x4000000,
  SOFTDIRTY: 0x8000000,
  MIXEDMAP: 0x10000000,
  HUGEPAGE: 0x20000000,
  NOHUGEPAGE: 0x40000000,
  MERGEABLE: 0x80000000,
  /** VM_UFFD_MINOR is bit 41 in Linux; memtwin keeps flags in 32 bits and uses the free bit 11 for it. */
  UFFD_MINOR: 0x800,
} as const;

/** The two-letter names /proc/PID/smaps prints in VmFlags, in bit order. */
export const VM_MNEMONICS: readonly [number, string][] = [
  [VM.READ, 'rd'],
  [VM.WRITE, 'wr'],
  [VM.EXEC, 'ex'],
  [VM.SHARED, 'sh'],
  [VM.MAYREAD, 'mr'],
  [VM.MAYWRITE, 'mw'],
  [VM.MAYEXEC, 'me'],
  [VM.MAYSHARE, 'ms'],
  [VM.GROWSDOWN, 'gd'],
  [VM.UFFD_MISSING, 'um'],
  [VM.PFNMAP, 'pf'],
  [VM.UFFD_WP, 'uw'],
  [VM.LOCKED, 'lo'],
  [VM.IO, 'io'],
  [VM.SEQ_READ, 'sr'],
  [VM.RAND_READ, 'rr'],
  [VM.DONTCOPY, 'dc'],
  [VM.DONTEXPAND, 'de'],
  [VM.LOCKONFAULT, 'lf'],
  [VM.ACCOUNT, 'ac'],
  [VM.NORESERVE, 'nr'],
  [VM.HUGETLB, 'ht'],
  [VM.SYNC, 'sf'],
  [VM.ARCH_1, 'ar'],
  [VM.WIPEONFORK, 'wf'],
  [VM.DONTDUMP, 'dd'],
  [VM.SOFTDIRTY, 'sd'],
  [VM.MIXEDMAP, 'mm'],
  [VM.HUGEPAGE, 'hg'],
  [VM.NOHUGEPAGE, 'nh'],
  [VM.MERGEABLE, 'mg'],
  [VM.UFFD_MINOR, 'ui'],
];

/**
 * An inode with a page cache: the shmem file behind a shared anonymous
 * mapping or a memfd (shmem.ts), a hugetlbfs file (MAP_HUGETLB, a hugetlb
 * memfd), a tmpfs file or a disk file that the op-script `open` created
 * (filemap.ts).
 */
export interface MappedFile {
  readonly id: number;
  /** 'shmem': tmpfs/shmem (swap-backed); 'file': a file on a disk, whose pages are read from it. */
  readonly kind: 'shmem' | 'hugetlbfs' | 'file';
  /** file page index (in units of the file's page size) -> head pfn */
  readonly pages: Map<number, number>;
  /** Number of VMAs that map this file. */
  mapCount: number;
  /** hugetlbfs: page indices reserved (region_chg'd) but not yet allocated. */
  readonly reserved: Set<number>;
  /** hugetlbfs: log2 of the page size. */
  hugeShift: number;
  /** Open file descriptions (memfd_create, open): a file with one stays when its last mapping goes. */
  opens: number;
  /** i_size in bytes; null for the shmem file of a shared anonymous mapping, which its one VMA covers. */
  size: number | null;
  /** The file's name ("memfd:NAME", or the op-script path); null for anonymous mappings' files. */
  name: string | null;
  /** shmem: the shared policy (shmem_set_policy), as ranges of file page indices [start, end). */
  readonly policy: { start: number; end: number; pol: Mempolicy }[];
}

/** A private hugetlb mapping's reservation map (shared by the VMAs split from it). */
export interface HugetlbResvMap {
  /** Huge page indices whose reservation was consumed by a fault. */
  readonly consumed: Set<number>;
}

export class Vma {
  constructor(
    public start: number,
    public end: number,
    public flags: number,
    /** vm_pgoff, in 4K pages. */
    public pgoff: number,
    public file: MappedFile | null = null,
    /** log2 of the hugetlb page size, or 0. */
    public hugeShift = 0,
  ) {}
  /** anon_vma identity (0 = none yet). */
  anonVma = 0;
  resv: HugetlbResvMap | null = null;
  /** The VMA memory policy (mbind); null = fall back to the task policy. */
  policy: Mempolicy | null = null;
  /** vm_userfaultfd_ctx: the userfaultfd this VMA is registered with. */
  uffdCtx: UserfaultfdCtx | null = null;
  /**
   * hugetlb VMAs under the unmerged proposals of hugetlb_hgm.ts: 'split' for
   * the piece uffd-hugetlb-vma-split cut out around a huge page being
   * copied (its page size is 4K until it merges back), 'hgm' after
   * MADV_SPLIT (hugetlb-hgm); null otherwise.
   */
  hgm: 'split' | 'hgm' | null = null;
  /**
   * The anon_vma chain holds more than the VMA's own anon_vma (a fork's
   * child): the VMA neither lends its anon_vma to a neighbour nor merges
   * with one that has none (reusable_anon_vma, vma_had_uncowed_parents).
   */
  forkedAnonVma = false;
  /** HPAGE_RESV_UNMAPPED: the reservation owner took a shared private hugetlb page back; a later fault here is SIGBUS. */
  hugetlbResvUnmapped = false;

  get size(): number {
    return this.end - this.start;
  }
  isHugetlb(): boolean {
    return (this.flags & VM.HUGETLB) !== 0;
  }
  /** vma_is_anonymous(): private or shared-anonymous before shmem setup. Here: no file. */
  isAnonymous(): boolean {
    return this.file === null;
  }
  hugePageSize(): number {
    return this.hugeShift ? 2 ** this.hugeShift : PAGE_SIZE;
  }
  clone(): Vma {
    const v = new Vma(this.start, this.end, this.flags, this.pgoff, this.file, this.hugeShift);
    v.anonVma = this.anonVma;
    v.resv = this.resv;
    v.policy = this.policy;
    v.uffdCtx = this.uffdCtx;
    v.hgm = this.hgm;
    v.forkedAnonVma = this.forkedAnonVma;
    v.hugetlbResvUnmapped = this.hugetlbResvUnmapped;
    return v;
  }
}

/** stack_guard_gap: 256 pages kept free below a VM_GROWSDOWN VMA. */
export const STACK_GUARD_GAP = 256 * PAGE_SIZE;
/** RLIMIT_STACK default (8 MiB): how far a stack VMA may grow. */
export const RLIMIT_STACK = 8 * 1024 * 1024;

/** vm_start_gap(): where the gap below a VMA ends, counting the stack guard gap. */
export function vmStartGap(v: Vma): number {
  if (!(v.flags & VM.GROWSDOWN)) return v.start;
  const s = v.start - STACK_GUARD_GAP;
  return s > v.start ? 0 : Math.max(0, s);
}

/** vma_is_accessible(): any of read, write, exec. */
export const vmaIsAccessible = (v: Vma): boolean => (v.flags & (VM.READ | VM.WRITE | VM.EXEC)) !== 0;

/** PTE values in a PteTable. */
export const PTE_NONE = 0;
export const PTE_ZERO = -1; // maps the shared zero page, read-only
export const pteOf = (pfn: number): number => pfn + 1;
export const pfnOfPte = (pte: number): number => pte - 1;
/** A swap entry in a PTE (a non-present pte holding swp_entry_t): every value below PTE_ZERO, -2 - entry. */
export const isSwapPte = (pte: number): boolean => pte < PTE_ZERO;
export const pteOfSwpEntry = (entry: number): number => -2 - entry;
export const swpEntryOfPte = (pte: number): number => -2 - pte;

export class PteTable {
  readonly ptes = new Int32Array(512);
  /**
   * The entries' accessed bits (pte_young), one per entry: a load through
   * the 4K mapping sets its bit, as the MMU does (pteMkyoung). Faults,
   * stores and huge mappings mark the page itself (PG.young); reclaim's
   * folio_referenced reads and clears both. Kept beside the entries: the
   * load that sets a bit has just read its entry, where the frame's flags
   * would cost another cache miss per simulated access.
   */
  readonly young = new Uint32Array(16);
  /** entries that are not PTE_NONE */
  used = 0;
  constructor(readonly tablePfn: number) {}
}

/** pte_mkyoung: the MMU sets entry i's accessed bit on a load through it. */
export function pteMkyoung(t: PteTable, i: number): void {
  t.young[i >>> 5]! |= 1 << (i & 31);
}

/** ptep_test_and_clear_young: whether entry i's accessed bit was set; clears it. */
export function ptepTestAndClearYoung(t: PteTable, i: number): boolean {
  const w = i >>> 5;
  const bit = 1 << (i & 31);
  const was = (t.young[w]! & bit) !== 0;
  t.young[w]! &= ~bit;
  return was;
}

/** A huge leaf entry at PMD or PUD level. pfn < 0 means the huge zero page. */
export class HugeLeaf {
  constructor(
    public pfn: number,
    readonly level: 'pmd' | 'pud',
  ) {}
  get isZero(): boolean {
    return this.pfn < 0;
  }
}

/** PGDIR_SIZE with 4-level paging: what one PGD entry maps (512 GiB). */
export const PGDIR_SIZE = 512 * PUD_SIZE;

/**
 * Whether page walks skip the page-table slots not in use (PageTable.skipNone).
 * Tests turn it off to check that a walk gives the same results as one that
 * looks at every page.
 */
export const pagewalk = { skipNone: true };

/**
 * A map of page-table entries by slot number that counts, per slot of the
 * level above, how many of its entries are in use: what pgd_none() and
 * pud_none() answer in Linux, where an upper-level table exists while
 * anything below it does. Page walks use the counts to skip empty ranges.
 */
class CountedSlots<V> extends Map<number, V> {
  /**
   * With `indexed`: the slots of each table one level up as a 512-entry
   * array (a PMD table's entries, by va / 1G), kept with the map, for
   * lookups on the access path that index an array instead of hashing
   * (translate()). An array, once made, stays (its table may be reused).
   */
  readonly tables: Map<number, (V | undefined)[]> | null;

  constructor(
    /** In-use counts of the level above, by its slot number (this map adds to them). */
    private readonly upper: Map<number, number>,
    /** Counts two levels up, by that level's slot number, or null. */
    private readonly upper2: Map<number, number> | null,
    indexed = false,
  ) {
    super();
    this.tables = indexed ? new Map() : null;
  }
  override set(key: number, value: V): this {
    if (!super.has(key)) {
      const u = Math.floor(key / 512);
      this.upper.set(u, (this.upper.get(u) ?? 0) + 1);
      if (this.upper2) {
        const g = Math.floor(u / 512);
        this.upper2.set(g, (this.upper2.get(g) ?? 0) + 1);
      }
    }
    if (this.tables) {
      const u = Math.floor(key / 512);
      let t = this.tables.get(u);
      if (!t) this.tables.set(u, (t = new Array<V | undefined>(512).fill(undefined)));
      t[key & 511] = value;
    }
    return super.set(key, value);
  }
  override delete(key: number): boolean {
    if (!super.delete(key)) return false;
    if (this.tables) this.tables.get(Math.floor(key / 512))![key & 511] = undefined;
    const u = Math.floor(key / 512);
    const n = this.upper.get(u)! - 1;
    if (n) this.upper.set(u, n);
    else this.upper.delete(u);
    if (this.upper2) {
      const g = Math.floor(u / 512);
      const m = this.upper2.get(g)! - 1;
      if (m) this.upper2.set(g, m);
      else this.upper2.delete(g);
    }
    return true;
  }
  override clear(): void {
    for (const key of [...this.keys()]) this.delete(key);
  }
}

/**
 * Page table of one mm: PMD slots keyed by va / 2M hold a PTE table or a
 * PMD leaf; PUD leaves (1G) are keyed by va / 1G. Upper levels (PGD, P4D,
 * PUD/PMD table pages) are not modelled as frames; they are counts of the
 * entries in use below each of their slots, so that a walk over a range
 * skips what pgd_none/pud_none/pmd_none would (mm/pagewalk.c).
 */
export class PageTable {
  /** PMD slots in use per 1G (by va / 1G): a PMD table exists there (mm_find_pmd) while the count is not 0. */
  readonly pmdsPerPud = new Map<number, number>();
  /** PMD slots and PUD leaves in use per 512G (by va / PGDIR_SIZE). */
  readonly usedPerPgd = new Map<number, number>();
  private readonly pmdSlots = new CountedSlots<PteTable | HugeLeaf>(this.pmdsPerPud, this.usedPerPgd, true);
  readonly pmds: Map<number, PteTable | HugeLeaf> = this.pmdSlots;
  /** The PMD table (512 slots) translate() used last, and the 1G range it covers (va / 1G). */
  private lastPmdTable: (PteTable | HugeLeaf | undefined)[] | undefined = undefined;
  private lastPud = -1;
  readonly puds: Map<number, HugeLeaf> = new CountedSlots<HugeLeaf>(this.usedPerPgd, null);

  static pmdKey(va: number): number {
    return Math.floor(va / PMD_SIZE);
  }
  static pudKey(va: number): number {
    return Math.floor(va / PUD_SIZE);
  }

  /** pmds.get(pmdKey) for the access path: the slot in its PMD table's array, the last table kept. */
  pmdEntry(key: number): PteTable | HugeLeaf | undefined {
    const u = Math.floor(key / 512);
    let t = this.lastPmdTable;
    if (u !== this.lastPud) {
      t = this.pmdSlots.tables!.get(u);
      if (!t) return undefined; // no table yet: nothing cached, so one made later is found
      this.lastPmdTable = t;
      this.lastPud = u;
    }
    return t![key & 511];
  }

  /** mm_find_pmd() != NULL: some PMD slot of the 1G range containing va is in use. */
  hasPmdTable(va: number): boolean {
    return this.pmdsPerPud.has(Math.floor(va / PUD_SIZE));
  }

  /**
   * Where a page walk over [va, end) with stride `step` (4K, 2M or 1G) must
   * look next: va itself if its PMD slot or PUD slot holds an entry, else
   * the last address of the walk (va + k * step) at or before the first
   * slot in use after va, skipping whole 512G and 1G ranges with nothing
   * in use as walk_pgd_range and walk_pud_range skip pgd_none and pud_none;
   * end if nothing after va is in use. Every address the walk skips is
   * unmapped: followPage gives -2 there.
   */
  skipNone(va: number, end: number, step: number): number {
    if (!pagewalk.skipNone) return va;
    let a = va;
    while (a < end) {
      const g = Math.floor(a / PGDIR_SIZE);
      if (!this.usedPerPgd.has(g)) {
        a = (g + 1) * PGDIR_SIZE;
        continue;
      }
      const u = Math.floor(a / PUD_SIZE);
      const pud = this.puds.has(u);
      if (!pud && !this.pmdsPerPud.has(u)) {
        a = (u + 1) * PUD_SIZE;
        continue;
      }
      if (pud || this.pmds.has(Math.floor(a / PMD_SIZE))) return a === va ? va : va + Math.floor((a - va) / step) * step;
      a = (Math.floor(a / PMD_SIZE) + 1) * PMD_SIZE;
    }
    return end;
  }

  /**
   * The address after va in a walk with stride `step` that ends at end:
   * va + step, or where that enters another PMD slot, skipNone from there.
   * For `for (let va = pt.skipNone(s, e, step); va < e; va = pt.walkNext(va, e, step))`.
   */
  walkNext(va: number, end: number, step: number): number {
    const n = va + step;
    return step >= PMD_SIZE || n % PMD_SIZE < step ? this.skipNone(n, end, step) : n;
  }

  /** The first address in [va, end) (va 2M-aligned) whose 1G range has a PMD table: va if its own has; end if none. */
  nextPmdTable(va: number, end: number): number {
    if (!pagewalk.skipNone) return va;
    let a = va;
    while (a < end) {
      const g = Math.floor(a / PGDIR_SIZE);
      if (!this.usedPerPgd.has(g)) {
        a = (g + 1) * PGDIR_SIZE;
        continue;
      }
      const u = Math.floor(a / PUD_SIZE);
      if (this.pmdsPerPud.has(u)) return a;
      a = (u + 1) * PUD_SIZE;
    }
    return end;
  }

  /** Whether the per-slot counts match the entries (for verifyKernel). */
  verifyCounts(): string[] {
    const pud = new Map<number, number>();
    const pgd = new Map<number, number>();
    const add = (m: Map<number, number>, k: number): void => void m.set(k, (m.get(k) ?? 0) + 1);
    for (const key of this.pmds.keys()) {
      add(pud, Math.floor(key / 512));
      add(pgd, Math.floor(key / (512 * 512)));
    }
    for (const key of this.puds.keys()) add(pgd, Math.floor(key / 512));
    const same = (a: Map<number, number>, b: Map<number, number>): boolean => a.size === b.size && [...a].every(([k, n]) => b.get(k) === n);
    const errs: string[] = [];
    if (!same(pud, this.pmdsPerPud)) errs.push('page table: PMD slots in use per 1G do not match the PMD entries');
    if (!same(pgd, this.usedPerPgd)) errs.push('page table: entries in use per 512G do not match the PMD and PUD entries');
    return errs;
  }
}

/**
 * A hugetlb page that an mm maps in parts (the unmerged proposals of
 * hugetlb_hgm.ts): the page is allocated whole, and its 4K subpages are
 * mapped by PTEs or, 2M at a time inside a 1G page, by PMD leaves.
 */
export interface HgmFolio {
  readonly haddr: number;
  readonly size: number;
  /** Head frame of the huge page. */
  readonly pfn: number;
  /** 1 where the 4K subpage is mapped. */
  readonly mapped: Uint8Array;
  nMapped: number;
  /** UFFDIO_COPYs into each 4K subpage (what property tests check). */
  readonly copies: Uint8Array;
}

/** The lowest address an unmapped-area search may return: max(PAGE_SIZE, mmap_min_addr). */
export const MMAP_LOWEST = Math.max(PAGE_SIZE, MMAP_MIN_ADDR);

let mmSeq = 0;
export class MmStruct {
  readonly id = ++mmSeq;
  /** The VMAs, in address order, never overlapping (mm->mm_mt). */
  private readonly tree = new VmaTree(MMAP_LOWEST, vmStartGap);
  /** The VMAs as an array, built when first asked for after the set of VMAs last changed. */
  private list: Vma[] | null = null;
  readonly pgtable = new PageTable();
  /** Pages counted as in RSS: anon, shmem (MM_ANONPAGES, MM_SHMEMPAGES). */
  rssAnon = 0;
  rssShmem = 0;
  /** MM_SWAPENTS: PTEs holding a swap entry (VmSwap). */
  swapents = 0;
  /** Disk-file pages mapped (MM_FILEPAGES). */
  rssFile = 0;
  /**
   * The mm may map pages it must not write in place: anonymous pages shared
   * with a forked process, page-cache pages of a private file mapping, clean
   * disk-file pages. Writes then check the page (writeFaults, memory.ts);
   * an mm that never forked nor mapped a file skips the check.
   */
  cowPossible = false;
  pgtablesBytes = 0;
  /**
   * Collapses in progress or recently finished, in virtual time: from
   * `unmapAt` to `remapAt`, the 2M region `pmdKey` is being copied (its PMD is cleared, so
   * touching it waits) and its VMA is write-locked (faults in it wait).
   * Background collapses run ahead of the threads' clocks; threads look here.
   * The window is a migration batch's shape: when the collapsing task's CPU
   * time is spent on a CPU it follows it (Kernel.noteBatch, followCpu).
   */
  collapsing: { pmdKey: number; vma: Vma; unmapAt: number; remapAt: number }[] = [];
  /** Folios migrated recently, with when each was under migration (migrate_entry.ts): accesses in that window wait. */
  readonly migrating = new MigrationEntries();
  /**
   * userfaultfd write protection, by 4K page number: the uffd-wp bit of a
   * present PTE (or of each PTE a huge leaf stands for), or a uffd-wp PTE
   * marker where nothing is mapped.
   */
  readonly uffdWp = new Set<number>();
  /** PTE_MARKER_POISONED markers that UFFDIO_POISON installed, by 4K page number: touching one is SIGBUS. */
  readonly uffdPoison = new Set<number>();
  /** Huge pages mapped in parts, by address (hugetlb_hgm.ts). */
  readonly hgm = new Map<number, HgmFolio>();
  constructor(readonly mmapBase: number) {}

  /**
   * Every VMA in address order, as an array: O(1) while the set of VMAs is
   * unchanged, O(n) the first time after an insertion or removal. A
   * snapshot: it does not follow later insertions and removals.
   */
  get vmas(): readonly Vma[] {
    return (this.list ??= this.tree.toArray());
  }

  /** mm->map_count. */
  get mapCount(): number {
    return this.tree.size;
  }

  /** find_vma: the first VMA with end > addr, or undefined. O(log n). */
  findVma(addr: number): Vma | undefined {
    return this.tree.findVma(addr);
  }

  /** The VMA containing addr, or undefined. */
  vmaAt(addr: number): Vma | undefined {
    const v = this.tree.findVma(addr);
    return v && v.start <= addr ? v : undefined;
  }

  /** VMAs intersecting [start, end), in address order. O(log n + their number). */
  vmasIn(start: number, end: number): Vma[] {
    return this.tree.range(start, end);
  }

  /** The VMA before v (vma_prev). */
  prevVma(v: Vma): Vma | undefined {
    return this.tree.lastBelow(v.start);
  }

  /** The VMA after v (vma_next). */
  nextVma(v: Vma): Vma | undefined {
    return this.tree.firstAbove(v.start);
  }

  /** The last VMA starting below addr. */
  lastVmaBelow(addr: number): Vma | undefined {
    return this.tree.lastBelow(addr);
  }

  /** Whether v is one of this mm's VMAs (not unmapped or merged away). */
  hasVma(v: Vma): boolean {
    return this.tree.has(v);
  }

  /** Add a VMA that overlaps none (vma_link). */
  insertVma(v: Vma): void {
    this.tree.insert(v);
    this.list = null;
  }

  /** Remove a VMA (vma_iter_clear). */
  removeVma(v: Vma): void {
    this.tree.erase(v);
    this.list = null;
  }

  /** v's start or end moved in place with its order unchanged (a stack growing down): the free gaps follow. */
  vmaAdjusted(v: Vma): void {
    this.tree.adjusted(v);
  }

  /**
   * The top-down unmapped-area search over the gaps below the VMAs that
   * start under `limit` (VmaTree.gapTopdown): the highest `align`-aligned
   * address with len bytes free above it, or -1. O(log n) when the first
   * gap of len bytes or more can hold it.
   */
  gapTopdown(limit: number, len: number, align: number): number {
    return this.tree.gapTopdown(limit, len, align);
  }

  /** The VMA tree's and the page table's own invariants (for verifyKernel). */
  verifyStructures(): string[] {
    return [...this.tree.verify(), ...this.pgtable.verifyCounts()];
  }
}
