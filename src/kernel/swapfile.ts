/**
 * Swap areas (mm/swapfile.c): swapon/swapoff, the slots of each area with
 * their reference counts (swap_map), the cluster allocator that hands out
 * slots, priorities, and /proc/swaps.
 *
 * An area is a swap file (on this machine's rotational virtio disk: its
 * bio completes asynchronously, and a file is not a block device, so it
 * cannot take a THP whole) or a zram device (compressed in RAM: a block
 * device, non-rotational, SWP_SYNCHRONOUS_IO). Slot 0 holds the swap
 * header. Slots are grouped in clusters of SWAPFILE_CLUSTER (512) slots;
 * a cluster is free, nonfull, frag or full, and allocation follows
 * cluster_alloc_swap_entry: the area's next offset in its current cluster,
 * then a nonfull cluster, a free one, a frag one. An order-9 folio (a THP,
 * zram only) needs a whole free cluster. Among areas, the highest priority
 * is used first; areas of equal priority take turns (swap_alloc_slow
 * requeues the area it used, and a rotational area always allocates through
 * that slow path).
 *
 * What each slot holds when written: the page's content token (what peek
 * reads back), whether it was zero-filled (the zeromap: such pages are not
 * written at all), and the shadow entry workingset.ts left at eviction.
 * Arrays are allocated per cluster on first use, as 6.18 allocates its swap
 * tables.
 */
import type { Kernel } from './kernel.ts';
import { PAGE_SIZE, neg, type SysRet } from './uapi.ts';

export const SWAPFILE_CLUSTER = 512;
/** MAX_SWAPFILES on x86-64 with this machine's config (32 types less device-private, migration, hwpoison and marker types). */
export const MAX_SWAPFILES = 28;
/** Bits of the offset in memtwin's swap entry encoding (type << 26 | offset): 256 GiB per area. */
export const SWP_OFFSET_BITS = 26;
const OFFSET_MASK = 2 ** SWP_OFFSET_BITS - 1;
/** swp_entry(type, offset). */
export const swpEntry = (type: number, offset: number): number => type * 2 ** SWP_OFFSET_BITS + offset;
export const swpType = (e: number): number => Math.floor(e / 2 ** SWP_OFFSET_BITS);
export const swpOffset = (e: number): number => e % 2 ** SWP_OFFSET_BITS;

/** Cluster states (CLUSTER_FLAG_*): on the free, nonfull, frag or full list, or off every list (being scanned). */
const CLUSTER_FREE = 0;
const CLUSTER_NONFULL = 1;
const CLUSTER_FRAG = 2;
const CLUSTER_FULL = 3;
const CLUSTER_NONE = 4;

export type SwapKind = 'file' | 'zram';

export interface SwaponOptions {
  /** The area's path in /proc/swaps. */
  path: string;
  /** Size in bytes (the file's size, or zram's disksize). */
  size: number;
  kind: SwapKind;
  /** swapon -p: 0..32767; undefined: the next lower negative priority (-2, -3, ...). */
  prio?: number;
  /** file: on a rotational disk (this machine's virtio disk is): cluster readahead instead of VMA readahead. */
  rotational?: boolean;
  /** zram: bytes stored per page written (4096 / compression ratio). */
  zramBytesPerPage?: number;
}

/** One cluster's per-slot arrays. */
class ClusterTable {
  /** swap_map: references from page tables (PTEs holding the entry). */
  readonly count = new Uint16Array(SWAPFILE_CLUSTER);
  /** SWAP_HAS_CACHE: the slot has a folio in the swap cache. */
  readonly cache = new Uint8Array(SWAPFILE_CLUSTER);
  /** Content token of the page written there. */
  readonly token = new Uint32Array(SWAPFILE_CLUSTER);
  /** 1: written as zero-filled (zeromap), 2: written with data, 0: never written since allocated. */
  readonly written = new Uint8Array(SWAPFILE_CLUSTER);
  /** Shadow entry left at eviction (workingset.ts), 0 = none. */
  readonly shadow = new Float64Array(SWAPFILE_CLUSTER);
}

/** struct swap_info_struct. */
export class SwapInfo {
  readonly path: string;
  readonly kind: SwapKind;
  prio: number;
  /** Slots, the header included (si->max). */
  readonly max: number;
  /** Usable slots (si->pages). */
  readonly pages: number;
  /** Slots in use (swap_usage_in_pages). */
  inuse = 0;
  /** SWP_SOLIDSTATE: not rotational. */
  readonly solidstate: boolean;
  /** SWP_SYNCHRONOUS_IO (zram): reads and writes complete before the call returns. */
  readonly synchronous: boolean;
  /** SWP_BLKDEV: a block device (zram), which can take a THP whole. */
  readonly blkdev: boolean;
  /** zram: bytes kept per page stored, and the frames holding them (zsmalloc pages). */
  readonly zramBytesPerPage: number;
  zramPagesStored = 0;
  readonly zramFrames: number[] = [];
  /** Per cluster: slots in use, list, order, arrays. */
  readonly clusterCount: Uint16Array;
  readonly clusterList: Uint8Array;
  readonly clusterOrder: Uint8Array;
  readonly tables: (ClusterTable | undefined)[];
  /** Cluster lists, each in list order (allocation takes the first). */
  readonly freeClusters: number[] = [];
  readonly nonfull: [number[], number[]] = [[], []];
  readonly frag: [number[], number[]] = [[], []];
  /** global_cluster->next[order] (for a rotational area; per-CPU for a solid-state one: memtwin keeps one). */
  readonly next = [0, 0];
  /** Whether swapoff is running (SWP_WRITEOK cleared: no new slots). */
  writeok = true;

  constructor(
    readonly type: number,
    opts: SwaponOptions,
    prio: number,
  ) {
    this.path = opts.path;
    this.kind = opts.kind;
    this.prio = prio;
    this.max = Math.floor(opts.size / PAGE_SIZE);
    this.pages = this.max - 1;
    this.synchronous = opts.kind === 'zram';
    this.blkdev = opts.kind === 'zram';
    this.solidstate = opts.kind === 'zram' || opts.rotational === false;
    this.zramBytesPerPage = opts.zramBytesPerPage ?? PAGE_SIZE;
    const n = Math.ceil(this.max / SWAPFILE_CLUSTER);
    this.clusterCount = new Uint16Array(n);
    this.clusterList = new Uint8Array(n);
    this.clusterOrder = new Uint8Array(n);
    this.tables = new Array<ClusterTable | undefined>(n);
    // The header page, and in the last cluster the slots past the end, are never free (setup_clusters):
    // clusters holding them start on the nonfull list, the others on the free list.
    this.table(0).count[0] = 0xffff;
    this.clusterCount[0]!++;
    this.clusterCount[n - 1]! += n * SWAPFILE_CLUSTER - this.max;
    for (let c = 0; c < n; c++) {
      const kind = this.clusterCount[c] ? CLUSTER_NONFULL : CLUSTER_FREE;
      this.clusterList[c] = kind;
      this.listOf(kind, 0).push(c);
    }
  }

  table(offset: number): ClusterTable {
    const c = Math.floor(offset / SWAPFILE_CLUSTER);
    return (this.tables[c] ??= new ClusterTable());
  }

  slotFree(offset: number): boolean {
    const t = this.tables[Math.floor(offset / SWAPFILE_CLUSTER)];
    if (!t) return true;
    const i = offset % SWAPFILE_CLUSTER;
    return t.count[i] === 0 && t.cache[i] === 0;
  }

  private listOf(kind: number, order: number): number[] {
    return kind === CLUSTER_FREE ? this.freeClusters : kind === CLUSTER_NONFULL ? this.nonfull[order ? 1 : 0] : this.frag[order ? 1 : 0];
  }

  /** Take cluster c off whatever list it is on. */
  private unlist(c: number): void {
    const old = this.clusterList[c]!;
    if (old !== CLUSTER_FULL && old !== CLUSTER_NONE) {
      const l = this.listOf(old, this.clusterOrder[c]!);
      const i = l.indexOf(c);
      if (i >= 0) l.splice(i, 1);
    }
    this.clusterList[c] = CLUSTER_NONE;
  }

  /** move_cluster: cluster c goes to the tail of `kind`'s list (list_move_tail). */
  private move(c: number, kind: number): void {
    this.unlist(c);
    this.clusterList[c] = kind;
    if (kind !== CLUSTER_FULL) this.listOf(kind, this.clusterOrder[c]!).push(c);
  }

  /** relocate_cluster, after an allocation scanned cluster c: free, frag or full by its count. */
  private relocate(c: number): void {
    const n = this.clusterCount[c]!;
    const want = n === 0 ? CLUSTER_FREE : n === SWAPFILE_CLUSTER ? CLUSTER_FULL : CLUSTER_FRAG;
    if (want === CLUSTER_FREE) this.clusterOrder[c] = 0;
    if (this.clusterList[c] !== want) this.move(c, want);
  }

  /** After slots of cluster c were freed: free_cluster when empty, else partial_free_cluster (the nonfull list). */
  private afterFree(c: number): void {
    if (this.clusterCount[c] === 0) {
      this.unlist(c);
      this.clusterOrder[c] = 0;
      this.move(c, CLUSTER_FREE);
    } else if (this.clusterList[c] !== CLUSTER_NONFULL) this.move(c, CLUSTER_NONFULL);
  }

  /**
   * alloc_swap_scan_cluster: the first run of 2^order free slots at or after
   * `offset` in cluster c (order-aligned), taken with SWAP_HAS_CACHE; 0 if none.
   */
  private scanCluster(c: number, offset: number, order: number): number {
    const nr = 1 << order;
    const start = c * SWAPFILE_CLUSTER;
    let end = Math.min(start + SWAPFILE_CLUSTER, this.max);
    let found = 0;
    let next = 0;
    if (end >= nr && this.clusterCount[c]! + nr <= SWAPFILE_CLUSTER) {
      if (this.clusterCount[c] === 0) {
        offset = start;
        this.clusterOrder[c] = order;
      }
      for (end -= nr; offset <= end; offset += nr) {
        let ok = true;
        for (let o = offset; o < offset + nr; o++)
          if (!this.slotFree(o)) {
            ok = false;
            break;
          }
        if (!ok) continue;
        const t = this.table(offset);
        for (let o = offset; o < offset + nr; o++) {
          const i = o % SWAPFILE_CLUSTER;
          t.cache[i] = 1;
          t.written[i] = 0;
          t.shadow[i] = 0;
        }
        this.clusterCount[c]! += nr;
        this.inuse += nr;
        found = offset;
        offset += nr;
        if (this.clusterCount[c]! < SWAPFILE_CLUSTER && offset <= end) next = offset;
        break;
      }
    }
    this.relocate(c);
    this.next[order ? 1 : 0] = next;
    return found;
  }

  /** alloc_swap_scan_list: clusters taken off `list` in turn (isolate_lock_cluster) until one yields slots; only the first unless scanAll. */
  private scanList(list: number[], order: number, scanAll: boolean): number {
    while (list.length) {
      const c = list[0]!;
      this.unlist(c);
      const found = this.scanCluster(c, c * SWAPFILE_CLUSTER, order);
      if (found || !scanAll) return found;
    }
    return 0;
  }

  /** cluster_is_usable: a cluster not full can take order-0 slots; a larger order needs it empty or of that order. */
  private usable(c: number, order: number): boolean {
    if (this.clusterList[c] === CLUSTER_FULL) return false;
    return !order || this.clusterCount[c] === 0 || this.clusterOrder[c] === order;
  }

  /** cluster_alloc_swap_entry: the first slot of 2^order for a folio, or 0. */
  allocEntry(order: number): number {
    if (!this.writeok) return 0;
    // "Swapfile is not block device so unable to allocate large entries."
    if (order && !this.blkdev) return 0;
    const o = order ? 1 : 0;
    const next = this.next[o]!;
    if (next) {
      const c = Math.floor(next / SWAPFILE_CLUSTER);
      if (this.usable(c, order)) {
        const found = this.scanCluster(c, next, order);
        if (found) return found;
      }
    }
    let found = 0;
    if (!order) found = this.scanList(this.nonfull[0], 0, true);
    if (!found) found = this.scanList(this.freeClusters, order, false);
    if (!found && !order) found = this.scanList(this.frag[0], 0, false);
    // Order 0 stealing from higher order clusters.
    if (!found && !order) found = this.scanList(this.frag[1], 0, true) || this.scanList(this.nonfull[1], 0, true);
    return found;
  }

  /** A slot's last reference went (count and cache both 0): the cluster gets it back (swap_range_free). */
  freeSlot(offset: number): void {
    const c = Math.floor(offset / SWAPFILE_CLUSTER);
    const t = this.table(offset);
    const i = offset % SWAPFILE_CLUSTER;
    if (t.written[i] === 2 && this.kind === 'zram') this.zramPagesStored--;
    t.written[i] = 0;
    t.shadow[i] = 0;
    t.token[i] = 0;
    this.clusterCount[c]!--;
    this.inuse--;
    this.afterFree(c);
  }
}

/** The kernel's swap state: areas by type, counters, the swap cache (swap_state.ts keeps its maps here). */
export class SwapState {
  readonly areas: (SwapInfo | undefined)[] = [];
  /** swap_avail_heads: areas that can take slots, by priority (highest first; equal ones in turn). */
  avail: SwapInfo[] = [];
  /** least_priority: the last default priority handed out. */
  leastPriority = -1;
  /** total_swap_pages, nr_swap_pages. */
  totalSwapPages = 0;
  nrSwapPages = 0;
  /** The swap cache: entry -> frame (swap_state.ts). */
  readonly cache = new Map<number, number>();
  /** folio->swap for frames in the swap cache. */
  readonly entryOf = new Map<number, number>();
  /** vm.page-cluster (readahead of 2^page_cluster pages). */
  pageCluster = 3;
  /** /sys/kernel/mm/swap/vma_ra_enabled. */
  vmaRaEnabled = true;
  /** swapin_readahead_hits (cluster readahead) and its prev_offset / last_readahead_pages. */
  raHits = 4;
  raPrevOffset = 0;
  raLastPages = 0;

  info(entry: number): SwapInfo | undefined {
    return this.areas[swpType(entry)];
  }

  /** nr_rotate_swap: areas on rotational devices (they turn VMA readahead off). */
  get nrRotateSwap(): number {
    return this.areas.filter((a) => a && !a.solidstate).length;
  }

  /** vm_swap_full: more than half of the swap space is used. */
  vmSwapFull(): boolean {
    return this.nrSwapPages * 2 < this.totalSwapPages;
  }

  /** The swap count of an entry (__swap_count): PTEs holding it. */
  count(entry: number): number {
    const si = this.info(entry);
    if (!si) return 0;
    const off = swpOffset(entry);
    return si.tables[Math.floor(off / SWAPFILE_CLUSTER)]?.count[off % SWAPFILE_CLUSTER] ?? 0;
  }

  /** The slot's arrays and index. */
  slot(entry: number): { si: SwapInfo; t: ClusterTable; i: number } {
    const si = this.info(entry)!;
    const off = swpOffset(entry);
    return { si, t: si.table(off), i: off % SWAPFILE_CLUSTER };
  }

  /** Insert an area into the avail list by priority, after those of the same priority. */
  addAvail(si: SwapInfo): void {
    const i = this.avail.findIndex((a) => a.prio < si.prio);
    if (i < 0) this.avail.push(si);
    else this.avail.splice(i, 0, si);
  }

  removeAvail(si: SwapInfo): void {
    this.avail = this.avail.filter((a) => a !== si);
  }

  /** plist_requeue: the area goes behind the others of its priority. */
  requeue(si: SwapInfo): void {
    const i = this.avail.indexOf(si);
    if (i < 0) return;
    let j = i;
    while (j + 1 < this.avail.length && this.avail[j + 1]!.prio === si.prio) j++;
    if (j === i) return;
    this.avail.splice(i, 1);
    this.avail.splice(j, 0, si);
  }

  /**
   * folio_alloc_swap's slot search (swap_alloc_fast, then swap_alloc_slow):
   * the first entry of 2^order slots, taken with SWAP_HAS_CACHE, or -1.
   */
  allocSwapEntry(order: number): number {
    // swap_alloc_fast: a solid-state area's current cluster (percpu_swap_cluster; one CPU's here).
    const last = this.lastSolid[order ? 1 : 0];
    if (last && last.writeok && this.areas[last.type] === last && last.next[order ? 1 : 0]) {
      const off = last.allocEntry(order);
      if (off) return this.taken(last, off, order);
    }
    // swap_alloc_slow: by priority, requeueing each area as it is tried.
    for (const si of [...this.avail]) {
      this.requeue(si);
      const off = si.allocEntry(order);
      if (off) {
        if (si.solidstate) this.lastSolid[order ? 1 : 0] = si;
        return this.taken(si, off, order);
      }
      if (order) return -1;
    }
    return -1;
  }
  private readonly lastSolid: [SwapInfo | null, SwapInfo | null] = [null, null];

  private taken(si: SwapInfo, off: number, order: number): number {
    this.nrSwapPages -= 1 << order;
    if (si.inuse === si.pages) this.removeAvail(si); // del_from_avail_list when full
    return swpEntry(si.type, off);
  }

  /** A slot's last reference went: memcontrol.ts uncharges it from its group (set once a memory cgroup exists). */
  onSlotFree: ((entry: number) => void) | null = null;

  /** swap_duplicate: one more page table holds `entry`. */
  dup(entry: number): void {
    const { t, i } = this.slot(entry);
    t.count[i]!++;
  }

  /** A slot's reference (PTE or cache) dropped: free the slot when none is left. */
  maybeFree(entry: number): void {
    const { si, t, i } = this.slot(entry);
    if (t.count[i] !== 0 || t.cache[i] !== 0) return;
    const wasFull = si.inuse === si.pages;
    this.onSlotFree?.(entry); // mem_cgroup_uncharge_swap
    si.freeSlot(swpOffset(entry));
    this.nrSwapPages++;
    if (wasFull && si.writeok) this.addAvail(si);
  }
}

/** swapon(2) of a new area: its type, or -errno. */
export function sysSwapon(k: Kernel, opts: SwaponOptions): SysRet {
  const st = k.swap;
  if (st.areas.some((a) => a && a.path === opts.path)) return neg('EBUSY');
  if (opts.prio !== undefined && (opts.prio < 0 || opts.prio > 32767)) return neg('EINVAL');
  const slots = Math.floor(opts.size / PAGE_SIZE);
  // read_swap_header: an area needs its header and at least one page; the offset must fit the entry encoding.
  if (slots < 2) return neg('EINVAL');
  if (slots - 1 > OFFSET_MASK) return neg('EINVAL');
  let type = st.areas.findIndex((a) => a === undefined);
  if (type < 0) type = st.areas.length;
  if (type >= MAX_SWAPFILES) return neg('EPERM');
  const prio = opts.prio ?? --st.leastPriority;
  const si = new SwapInfo(type, opts, prio);
  st.areas[type] = si;
  st.totalSwapPages += si.pages;
  st.nrSwapPages += si.pages;
  st.addAvail(si);
  return type;
}

/** /proc/swaps. */
export function renderSwaps(k: Kernel): string {
  let out = 'Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n';
  for (const si of k.swap.areas) {
    if (!si) continue;
    const bytes = (si.pages * PAGE_SIZE) / 1024;
    const inuse = (si.inuse * PAGE_SIZE) / 1024;
    const len = si.path.length;
    out +=
      si.path +
      ' '.repeat(len < 40 ? 40 - len : 1) +
      `${si.blkdev ? 'partition' : 'file\t'}\t${bytes}\t${bytes < 10000000 ? '\t' : ''}${inuse}\t${inuse < 10000000 ? '\t' : ''}${si.prio}\n`;
  }
  return out;
}
