/**
 * Compact snapshots of a run's memory, for `memtwin view` (src/view/): what
 * each node's physical memory holds, what each process's and VM's address
 * space maps, and what each live migration did, at the sample interval.
 *
 * They go to DIR/snapshots.json beside result.json (output.ts), not into
 * result.json, which reports and resumed sweeps read whole.
 *
 * The maps cost time (each snapshot walks every frame in use and every
 * page table: a third more CPU time for a run of 4K pages sampled every
 * 10 ms), so they are recorded only when asked (`sample.snapshots: true`,
 * `memtwin run --snapshots`); migrations, read once at the end, always.
 *
 * Sizes stay bounded whatever the host: physical memory is described per
 * pageblock (2 MiB, pageblock_order 9), run-length encoded; an address
 * space per VMA as runs of equal pagemap entries (present, page size,
 * node), aggregated into at most MAX_RUNS_PER_VMA buckets when longer; at
 * most MAX_SNAPSHOTS snapshots per run (every `stride`-th sample). Postcopy
 * faults are kept as per-vCPU buckets in time, a latency histogram and the
 * longest ones, not one record per fault.
 *
 * Reading the kernel here changes nothing in it: a run with snapshots gives
 * the same result.json as one without.
 */
import type { Kernel } from '../kernel/kernel.ts';
import { HugeLeaf, PageTable, PTE_NONE, PTE_ZERO, pfnOfPte, type MmStruct, type Vma } from '../kernel/mm_types.ts';
import { OWNER_HUGETLB_POOL, OWNER_KERNEL, PG, SECTION_MASK } from '../kernel/page.ts';
import { MIGRATETYPE_NAMES, MIGRATE_TYPES, PAGEBLOCK_ORDER, type Zone } from '../kernel/page_alloc.ts';
import { vmFlagNames } from '../kernel/procfs.ts';
import { policyString } from '../kernel/mempolicy.ts';
import { MAX_PAGE_ORDER, PAGE_SIZE, PMD_SIZE, PUD_SIZE } from '../kernel/uapi.ts';
import type { Process } from '../kernel/sched.ts';
import type { VmRt } from './vms.ts';

/** Bumped when the layout below changes; the view refuses a format it does not know. */
export const SNAPSHOT_FORMAT = 1;
/** At most this many snapshots per run (a longer run keeps every stride-th sample). */
export const MAX_SNAPSHOTS = 120;
/** A VMA's pagemap runs beyond this are aggregated into this many equal buckets. */
export const MAX_RUNS_PER_VMA = 1024;
/** Postcopy faults: the longest this many are kept whole, per run. */
export const LONGEST_FAULTS = 32;
/** Postcopy faults are counted in this many time buckets over the run, per vCPU. */
export const FAULT_BUCKETS = 400;

/** What a pageblock (2 MiB) holds, by its most telling content: kernel pages, a huge page, free memory, 4K pages. */
export const PAGEBLOCK_KINDS = ['pristine', 'free', '4k', 'thp', 'hugetlb', 'hugetlb-free', 'kernel'] as const;
export type PageblockKind = (typeof PAGEBLOCK_KINDS)[number];
const K_PRISTINE = 0;
const K_FREE = 1;
const K_4K = 2;
const K_THP = 3;
const K_HUGETLB = 4;
const K_HUGETLB_FREE = 5;
const K_KERNEL = 6;

/** Page size codes of address-space runs. */
export const RUN_SIZES = ['none', '4K', '2M', '1G', 'swap'] as const;

export interface HugetlbNodeSnap {
  /** "2M" or "1G". */
  size: string;
  /** nr_hugepages, free_hugepages, surplus_hugepages of the node (/sys/devices/system/node/nodeN/hugepages/...). */
  nr: number;
  free: number;
  surplus: number;
  /** resv_hugepages: of the whole pool (Linux keeps reservations per hstate, not per node). */
  resv: number;
}

export interface NodeSnap {
  node: number;
  free_pages: number;
  /** /proc/buddyinfo's row: free blocks per order 0..MAX_PAGE_ORDER (never-touched memory counted at the top order). */
  buddyinfo: number[];
  /** /proc/pagetypeinfo's free blocks per order, by migratetype name (never-touched memory not included). */
  free_by_migratetype: Record<string, number[]>;
  /** Pageblocks per migratetype name. */
  pageblocks: Record<string, number>;
  /** Anonymous THPs (PMD-sized compound pages) on the node. */
  thp: number;
  hugetlb: HugetlbNodeSnap[];
  /** User pages (4K, THP and hugetlb frames in use) whose content is all zeros. */
  zero_pages: number;
  /** Page tables and other kernel memory. */
  kernel_pages: number;
  /** Frames in use by anything. */
  used_pages: number;
  /**
   * /sys/kernel/debug/extfrag/extfrag_index per order, in thousandths
   * (Linux prints them divided by 1000): -1000 when a block of the order
   * is free, 0 without free memory.
   */
  extfrag_index: number[];
  /** /sys/kernel/debug/extfrag/unusable_index per order, in thousandths. */
  unusable_index: number[];
  /**
   * The node's pageblocks in pfn order, run-length encoded: flat quadruples
   * [count, kind (PAGEBLOCK_KINDS index), migratetype, used frames per block].
   */
  map: number[];
}

export interface VmaSnap {
  start: number;
  end: number;
  /** smaps VmFlags mnemonics. */
  flags: string[];
  /** numa_maps' policy ("default", "bind:0-1", ...). */
  policy: string;
  kind: 'anon' | 'shmem' | 'hugetlb' | 'file';
  /** The scenario mapping's name, or the RAM block's for a VM. */
  name?: string;
  /**
   * The VMA in 4K pages, run-length encoded: flat quadruples [pages,
   * present pages, size (RUN_SIZES index), node or -1 (none, zero page,
   * swap)]. Exact runs have present = pages or 0; when the VMA had more
   * than MAX_RUNS_PER_VMA runs, each quadruple is a bucket and gives the
   * bucket's present pages and its most common size and node.
   */
  runs: number[];
  /** The runs are buckets (aggregated). */
  aggregated?: true;
}

export interface SpaceSnap {
  process: string;
  pid: number;
  /** For a VM's VMM process: the VM, and "source" or "destination" for a migration's two sides. */
  vm?: string;
  side?: 'source' | 'destination';
  host?: string;
  rss_pages: number;
  vmas: VmaSnap[];
  /** A VM's `info ram`: guest-physical ranges against host-virtual ones. */
  ram?: { gpa: number; size: number; hva: number; block: string; page_size: number; node: number }[];
}

export interface MigrationSnap {
  vm: string;
  status: string;
  /** Times in ns since the start of the workloads. */
  start_ns: number;
  end_ns?: number;
  /** QEMU's states in time: setup, active (precopy), device (stop-and-copy), postcopy-active. */
  phases: { name: string; from_ns: number; to_ns: number }[];
  /** Each dirty-bitmap sync: when, the pages it found dirty since the last, what remained to send. */
  syncs: { at_ns: number; sync: number; new_dirty_pages: number; remaining_bytes: number }[];
  downtime_ns?: number;
  total_time_ns?: number;
  /** The content check: pages that did not arrive with the source's content, and the first few. */
  content_check?: { pages_differing: number; differing: { block: string; offset: number; src: number; dst: number }[] };
  postcopy?: PostcopySnap;
  /**
   * Progress at every sample while the migration runs (and once after it
   * ends): RAM bytes sent (pages and stream markers, both phases), the part
   * sent after the switchover, what remained dirty, page requests so far.
   * Rates are the differences between samples.
   */
  progress: {
    t_ns: number[];
    ram_bytes: number[];
    postcopy_bytes: number[];
    /** Of postcopy_bytes, what the preempt channel carried (the rest went on the main channel). */
    preempt_bytes: number[];
    remaining_bytes: number[];
    postcopy_requests: number[];
  };
}

export interface PostcopySnap {
  /** When the guest ran again on the destination (postcopy's faults start there). */
  start_ns: number;
  requests: number;
  bytes: number;
  faults: number;
  /** Per vCPU: ns blocked in userfaults (postcopy-vcpu-blocktime), and the ns all were blocked at once. */
  vcpu_blocktime_ns: number[];
  all_vcpus_blocked_ns: number;
  latency: { mean_ns: number; p50_ns: number; p99_ns: number; max_ns: number };
  /** Faults by latency: [upper bound ns (powers of two), count]. */
  histogram: [number, number][];
  /** Per vCPU, faults woken in each time bucket: flat [bucket, vcpu, count, sum ns, max ns]; bucket i covers [i*width, (i+1)*width). */
  bucket_ns: number;
  buckets: number[];
  /** The longest faults, longest first: blocked at, for how long, which vCPU. */
  longest: { at_ns: number; ns: number; vcpu: number }[];
  /** Per vCPU, its longest fault. */
  longest_by_vcpu: { vcpu: number; at_ns: number; ns: number }[];
}

export interface RunSnapshots {
  format: typeof SNAPSHOT_FORMAT;
  /** Whether the memory maps were recorded (`sample.snapshots`, `memtwin run --snapshots`); phys and spaces are empty without. */
  maps: boolean;
  /** One snapshot every `stride` samples of the run's series. */
  stride: number;
  /** Snapshot times, ns since the start of the workloads. */
  t_ns: number[];
  host: string;
  nodes: { id: number; start_pfn: number; pages: number }[];
  hugepage_sizes: string[];
  /** phys[i][n]: node n at t_ns[i]. */
  phys: NodeSnap[][];
  /** spaces[i]: every process and VM at t_ns[i]. */
  spaces: SpaceSnap[][];
  migrations: MigrationSnap[];
}

const sizeName = (bytes: number): string => (bytes >= PUD_SIZE ? `${bytes / PUD_SIZE}G` : `${bytes / 2 ** 20}M`);

/**
 * __fragmentation_index (mm/vmstat.c) in thousandths, from free blocks per
 * order: 0 without free memory, -1000 when a block of `order` is free,
 * else towards 1000 when the failure is due to fragmentation.
 */
export function fragmentationIndex(freeByOrder: readonly number[], order: number): number {
  const { total, freePages, suitable } = contigInfo(freeByOrder, order);
  if (!total) return 0;
  if (suitable) return -1000;
  const requested = 2 ** order;
  return 1000 - Math.floor((1000 + Math.floor((freePages * 1000) / requested)) / total);
}

/** unusable_free_index (mm/vmstat.c) in thousandths: the share of free memory in blocks smaller than `order`. */
export function unusableIndex(freeByOrder: readonly number[], order: number): number {
  const { freePages, suitable } = contigInfo(freeByOrder, order);
  if (!freePages) return 0;
  return Math.floor(((freePages - suitable * 2 ** order) * 1000) / freePages);
}

/** fill_contig_page_info: free blocks, free pages, and blocks usable for `order`. */
function contigInfo(freeByOrder: readonly number[], order: number): { total: number; freePages: number; suitable: number } {
  let total = 0;
  let freePages = 0;
  let suitable = 0;
  freeByOrder.forEach((blocks, o) => {
    total += blocks;
    freePages += blocks * 2 ** o;
    if (o >= order) suitable += blocks * 2 ** (o - order);
  });
  return { total, freePages, suitable };
}

/** One node's physical memory now. */
export function nodeSnapshot(k: Kernel, z: Zone): NodeSnap {
  const m = k.mem;
  const nr = z.spannedPages >>> PAGEBLOCK_ORDER;
  const kind = new Uint8Array(nr);
  const used = new Uint16Array(nr);
  let thp = 0;
  let zero = 0;
  let kernel = 0;
  let usedAll = 0;
  const firstPristine = (z.pristineStart - z.startPfn) >>> PAGEBLOCK_ORDER;
  kind.fill(K_PRISTINE, firstPristine);
  kind.fill(K_FREE, 0, firstPristine);
  /** Mark frames [pfn, pfn + n) of a folio: whole pageblocks take its kind, parts of one count as used 4K. */
  const folio = (pfn: number, n: number, kd: number): void => {
    const pb = (pfn - z.startPfn) >>> PAGEBLOCK_ORDER;
    if (n >= 1 << PAGEBLOCK_ORDER) {
      kind.fill(kd, pb, pb + (n >>> PAGEBLOCK_ORDER));
      used.fill(kd === K_HUGETLB_FREE ? 0 : 1 << PAGEBLOCK_ORDER, pb, pb + (n >>> PAGEBLOCK_ORDER));
      return;
    }
    if (kind[pb] !== K_KERNEL) kind[pb] = kd === K_KERNEL ? K_KERNEL : K_4K;
    used[pb]! += n;
  };
  for (let pfn = z.startPfn; pfn < z.pristineStart;) {
    // The section's arrays directly: this walk visits every frame in use of the node.
    const sec = m.sec(pfn);
    const i = pfn & SECTION_MASK;
    const f = sec.flags[i]!;
    if (f & PG.buddy) {
      pfn += 2 ** sec.order[i]!;
      continue;
    }
    const n = f & PG.head ? 2 ** sec.order[i]! : 1;
    const owner = sec.ownerAt(i);
    if (f & PG.hugetlb) {
      const free = owner === OWNER_HUGETLB_POOL;
      folio(pfn, n, free ? K_HUGETLB_FREE : K_HUGETLB);
      if (!free) {
        usedAll += n;
        if (!(f & PG.nonzero)) zero += n;
      }
    } else if (owner === OWNER_KERNEL || f & PG.pgtable) {
      kernel += n;
      usedAll += n;
      folio(pfn, n, K_KERNEL);
    } else {
      const isThp = n === 1 << PAGEBLOCK_ORDER && (f & PG.anon) !== 0;
      if (isThp) thp++;
      usedAll += n;
      folio(pfn, n, isThp ? K_THP : K_4K);
      // Such a folio is at most a pageblock, inside one section (128 MiB).
      for (let j = i; j < i + n; j++) if (!(sec.flags[j]! & PG.nonzero)) zero++;
    }
    pfn += n;
  }
  const map: number[] = [];
  const mts = z.pageblockMt;
  for (let i = 0; i < nr; i++) {
    const kd = kind[i]!;
    const u = kd === K_PRISTINE || kd === K_FREE ? 0 : used[i]!;
    const mt = mts[i]!;
    const l = map.length;
    if (l && map[l - 3] === kd && map[l - 2] === mt && map[l - 1] === u) map[l - 4]!++;
    else map.push(1, kd, mt, u);
  }
  const buddyinfo = z.nrFreeByOrder();
  const byMt: Record<string, number[]> = {};
  const pbs: Record<string, number> = {};
  for (let mt = 0; mt < MIGRATE_TYPES; mt++) {
    const name = MIGRATETYPE_NAMES[mt]!;
    byMt[name] = Array.from({ length: MAX_PAGE_ORDER + 1 }, (_, o) => z.nrFree(o, mt as 0 | 1));
    pbs[name] = 0;
  }
  for (const mt of mts) pbs[MIGRATETYPE_NAMES[mt]!]!++;
  const orders = Array.from({ length: MAX_PAGE_ORDER + 1 }, (_, o) => o);
  return {
    node: z.nid,
    free_pages: z.freePages,
    buddyinfo,
    free_by_migratetype: byMt,
    pageblocks: pbs,
    thp,
    hugetlb: k.hugetlb.hstates.map((h) => ({
      size: sizeName(h.size),
      nr: h.nrNode[z.nid]!,
      free: h.freeNode[z.nid]!,
      surplus: h.surplusNode[z.nid]!,
      resv: h.resv,
    })),
    zero_pages: zero,
    kernel_pages: kernel,
    used_pages: usedAll,
    extfrag_index: orders.map((o) => fragmentationIndex(buddyinfo, o)),
    unusable_index: orders.map((o) => unusableIndex(buddyinfo, o)),
    map,
  };
}

const vmaKind = (v: Vma): VmaSnap['kind'] =>
  v.isHugetlb() ? 'hugetlb' : !v.file ? 'anon' : v.file.kind === 'file' ? 'file' : v.file.kind === 'hugetlbfs' ? 'hugetlb' : 'shmem';

/**
 * A VMA's mappings as flat [pages, present, size, node] runs, one unit per
 * PMD slot (2 MiB: what a screen can show of a large space), bucketed when
 * there are still too many. A unit's size is its leaf's (2M or 1G), or 4K
 * when PTEs map some of it (swap when only swap entries do); its node the
 * one most of its present pages are on (-1 for none and the zero page).
 */
export function vmaRuns(k: Kernel, mm: MmStruct, v: Vma): { runs: number[]; aggregated?: true } {
  const pt = mm.pgtable;
  const runs: number[] = [];
  const push = (pages: number, present: number, size: number, node: number): void => {
    const l = runs.length;
    if (
      l &&
      runs[l - 2] === size &&
      runs[l - 1] === node &&
      (runs[l - 3] === 0) === (present === 0) &&
      (runs[l - 3] === runs[l - 4]) === (present === pages)
    ) {
      runs[l - 4]! += pages;
      runs[l - 3]! += present;
    } else runs.push(pages, present, size, node);
  };
  const byNode = new Int32Array(k.nrNodes + 1);
  const zones = k.phys.zones;
  let zone = zones[0]!;
  for (let va = v.start; va < v.end;) {
    const next = pt.skipNone(va, v.end, PAGE_SIZE);
    if (next > va) {
      push((next - va) / PAGE_SIZE, 0, 0, -1);
      va = next;
      continue;
    }
    const pud = pt.puds.size ? pt.puds.get(PageTable.pudKey(va)) : undefined;
    if (pud) {
      const stop = Math.min(v.end, (PageTable.pudKey(va) + 1) * PUD_SIZE);
      const n = (stop - va) / PAGE_SIZE;
      push(n, n, 3, pud.isZero ? -1 : k.phys.nodeOfPfn(pud.pfn));
      va = stop;
      continue;
    }
    const key = PageTable.pmdKey(va);
    const stop = Math.min(v.end, (key + 1) * PMD_SIZE);
    const n = (stop - va) / PAGE_SIZE;
    const e = pt.pmds.get(key);
    if (e === undefined) push(n, 0, 0, -1);
    else if (e instanceof HugeLeaf) push(n, n, 2, e.isZero ? -1 : k.phys.nodeOfPfn(e.pfn));
    else {
      byNode.fill(0);
      let present = 0;
      let swapped = 0;
      const ptes = e.ptes;
      const first = Math.floor(va / PAGE_SIZE) % 512;
      for (let j = first; j < first + n; j++) {
        const pte = ptes[j]!;
        if (pte === PTE_NONE) continue;
        if (pte < PTE_ZERO) swapped++;
        else if (pte === PTE_ZERO) {
          present++;
          byNode[0]!++;
        } else {
          present++;
          // Pages of one table are mostly on one node: look the node up only off the last one's range.
          const pfn = pfnOfPte(pte);
          if (pfn < zone.startPfn || pfn >= zone.endPfn) zone = zones[k.phys.nodeOfPfn(pfn)]!;
          byNode[zone.nid + 1]!++;
        }
      }
      let node = 0;
      for (let i = 1; i < byNode.length; i++) if (byNode[i]! > byNode[node]!) node = i;
      push(n, present, present ? 1 : swapped ? 4 : 0, present ? node - 1 : -1);
    }
    va = stop;
  }
  if (runs.length / 4 <= MAX_RUNS_PER_VMA) return { runs };
  // Equal buckets of whole 4K pages; each takes the size and node that cover most of its present pages.
  const pages = (v.end - v.start) / PAGE_SIZE;
  const per = Math.ceil(pages / MAX_RUNS_PER_VMA);
  const out: number[] = [];
  let i = 0;
  let left = runs[0]!;
  for (let b = 0; b * per < pages; b++) {
    const want = Math.min(per, pages - b * per);
    const weight = new Map<number, number>();
    let present = 0;
    for (let got = 0; got < want;) {
      while (left === 0) left = runs[(i += 4)]!;
      const take = Math.min(left, want - got);
      const [n, p, size, node] = [runs[i]!, runs[i + 1]!, runs[i + 2]!, runs[i + 3]!];
      const pr = p === 0 ? 0 : Math.round((take * p) / n);
      present += pr;
      const key = size * 4096 + (node + 1);
      weight.set(key, (weight.get(key) ?? 0) + (size === 0 ? 0 : take));
      got += take;
      left -= take;
    }
    let best = 0;
    let bestW = -1;
    for (const [key, w] of weight) if (w > bestW || (w === bestW && key < best)) [best, bestW] = [key, w];
    out.push(want, present, Math.floor(best / 4096), (best % 4096) - 1);
  }
  return { runs: out, aggregated: true };
}

/** One process's address space now. */
export function spaceSnapshot(
  k: Kernel,
  p: Process,
  names: { base: number; len: number; name: string }[],
  extra: Partial<SpaceSnap> = {},
): SpaceSnap {
  const mm = p.mm;
  const vmas = mm.vmas.map((v): VmaSnap => {
    const name = names.find((n) => v.start < n.base + n.len && n.base < v.end)?.name;
    return {
      start: v.start,
      end: v.end,
      flags: vmFlagNames(v.flags),
      policy: policyString(v.policy),
      kind: vmaKind(v),
      ...(name ? { name } : {}),
      ...vmaRuns(k, mm, v),
    };
  });
  return { process: p.name, pid: p.pid, ...extra, rss_pages: mm.rssAnon + mm.rssShmem, vmas };
}

/** A VM's `info ram` rows. */
function infoRam(rt: VmRt, dst: boolean): SpaceSnap['ram'] {
  const vm = dst ? rt.dst! : rt.vm;
  return vm.slots.map((s) => ({ gpa: s.gpa, size: s.size, hva: s.hva, block: s.block.idstr, page_size: s.block.pageSize, node: s.node }));
}

export interface SnapshotSources {
  procs: { p: Process; maps: Map<string, { base: number; len: number }> }[];
  vms: VmRt[];
}

type Progress = MigrationSnap['progress'];

/** Records snapshots at the run's samples; `data` is complete after finish(). */
export class SnapshotRecorder {
  readonly data: RunSnapshots;
  private sampleIndex = 0;
  private readonly progress = new Map<VmRt, Progress>();

  constructor(
    private readonly k: Kernel,
    private readonly src: SnapshotSources,
    private readonly t0: number,
    expectedSamples: number,
    maps: boolean,
  ) {
    this.data = {
      format: SNAPSHOT_FORMAT,
      maps,
      stride: Math.max(1, Math.ceil(expectedSamples / MAX_SNAPSHOTS)),
      t_ns: [],
      host: k.host.name,
      nodes: k.phys.zones.map((z) => ({ id: z.nid, start_pfn: z.startPfn, pages: z.spannedPages })),
      hugepage_sizes: k.hugetlb.hstates.map((h) => sizeName(h.size)),
      phys: [],
      spaces: [],
      migrations: [],
    };
  }

  /** The migrations' counters now: plain fields, read at the samples (a timer of its own would move the charges of faulting loops, which run until the next event). */
  private readProgress(): void {
    for (const rt of this.src.vms) {
      const mig = rt.mig;
      if (!mig?.ram) continue;
      let p = this.progress.get(rt);
      if (!p) {
        p = { t_ns: [], ram_bytes: [], postcopy_bytes: [], preempt_bytes: [], remaining_bytes: [], postcopy_requests: [] };
        this.progress.set(rt, p);
      }
      const t = this.k.clock.now() - this.t0;
      const last = p.t_ns.length - 1;
      // Once it has ended, one more reading and no more.
      if (last >= 0 && mig.endTime > 0 && mig.endTime - this.t0 < p.t_ns[last]!) continue;
      if (last >= 0 && p.t_ns[last] === t) continue;
      p.t_ns.push(t);
      p.ram_bytes.push(mig.ram.bytes);
      p.postcopy_bytes.push(mig.postcopy?.stats.bytes ?? 0);
      p.preempt_bytes.push(mig.postcopy?.stats.preemptBytes ?? 0);
      p.remaining_bytes.push(mig.ram.remainingBytes);
      p.postcopy_requests.push(mig.postcopy?.stats.requests ?? 0);
    }
  }

  /** Called at every sample of the series (the last one too, even off the stride). */
  sample(last = false): void {
    this.readProgress();
    const i = this.sampleIndex++;
    if (!this.data.maps || (i % this.data.stride !== 0 && !last)) return;
    const t = this.k.clock.now() - this.t0;
    if (this.data.t_ns[this.data.t_ns.length - 1] === t) return;
    this.data.t_ns.push(t);
    this.data.phys.push(this.k.phys.zones.map((z) => nodeSnapshot(this.k, z)));
    this.data.spaces.push(this.spaces());
  }

  private spaces(): SpaceSnap[] {
    const out: SpaceSnap[] = [];
    const vmProcs = new Set(this.src.vms.map((rt) => rt.vm.process));
    for (const { p, maps } of this.src.procs) {
      if (vmProcs.has(p) || p.exited) continue;
      out.push(
        spaceSnapshot(
          this.k,
          p,
          [...maps].map(([name, m]) => ({ name, base: m.base, len: m.len })),
        ),
      );
    }
    for (const rt of this.src.vms) {
      const blocks = (dst: boolean) => infoRam(rt, dst)!.map((r) => ({ name: r.block, base: r.hva, len: r.size }));
      const name = rt.spec.name;
      const side = rt.dst ? { side: 'source' as const } : {};
      if (!rt.vm.process.exited)
        out.push(
          spaceSnapshot(rt.vm.k, rt.vm.process, blocks(false), { vm: name, ...side, host: rt.vm.k.host.name, ram: infoRam(rt, false) }),
        );
      if (rt.dst && !rt.dst.process.exited)
        out.push(
          spaceSnapshot(rt.dst.k, rt.dst.process, blocks(true), {
            vm: name,
            side: 'destination',
            host: rt.dst.k.host.name,
            ram: infoRam(rt, true),
          }),
        );
    }
    return out;
  }

  /** At the end of the run: the migrations' records. */
  finish(): RunSnapshots {
    const end = this.k.clock.now();
    this.readProgress();
    const none = (): Progress => ({
      t_ns: [],
      ram_bytes: [],
      postcopy_bytes: [],
      preempt_bytes: [],
      remaining_bytes: [],
      postcopy_requests: [],
    });
    this.data.migrations = this.src.vms.flatMap((rt) =>
      rt.mig ? [{ ...migrationSnapshot(rt, this.t0, end), progress: this.progress.get(rt) ?? none() }] : [],
    );
    return this.data;
  }
}

/** A VM's migration: phases, syncs, the content check, and postcopy's faults. */
export function migrationSnapshot(rt: VmRt, t0: number, runEnd: number): Omit<MigrationSnap, 'progress'> {
  const mig = rt.mig!;
  const rel = (t: number): number => t - t0;
  const start = mig.startTime;
  const ended = mig.endTime > 0 ? mig.endTime : runEnd;
  const phases: MigrationSnap['phases'] = [];
  const phase = (name: string, from: number, to: number): void => {
    if (to > from) phases.push({ name, from_ns: rel(from), to_ns: rel(to) });
  };
  const setupEnd = Math.min(ended, start + mig.setupTime);
  phase('setup', start, setupEnd);
  const stop = mig.downtimeStart > 0 ? mig.downtimeStart : ended;
  phase('active', setupEnd, stop);
  const pc = mig.postcopy;
  if (mig.downtimeStart > 0) {
    if (pc && mig.guestResumedAt > 0) {
      phase('device', mig.downtimeStart, mig.guestResumedAt);
      phase('postcopy-active', mig.guestResumedAt, ended);
    } else phase('device', mig.downtimeStart, ended);
  }
  const out: Omit<MigrationSnap, 'progress'> = {
    vm: rt.spec.name,
    status: mig.status,
    start_ns: rel(start),
    ...(mig.endTime > 0 ? { end_ns: rel(mig.endTime) } : {}),
    phases,
    syncs: mig.iterations.map((it) => ({
      at_ns: rel(it.at),
      sync: it.syncCount,
      new_dirty_pages: it.newDirtyPages,
      remaining_bytes: it.remainingBytes,
    })),
  };
  if (mig.status === 'completed') {
    out.downtime_ns = mig.downtime;
    out.total_time_ns = mig.endTime - mig.startTime;
  }
  if (mig.contentCheck) out.content_check = { pages_differing: mig.contentCheck.pagesDiffering, differing: mig.contentCheck.differing };
  if (pc) out.postcopy = postcopySnapshot(pc, mig.guestResumedAt > 0 ? mig.guestResumedAt : pc.resumedAt, t0, runEnd);
  return out;
}

type PostcopyLike = NonNullable<NonNullable<VmRt['mig']>['postcopy']>;

function postcopySnapshot(pc: PostcopyLike, startAt: number, t0: number, runEnd: number): PostcopySnap {
  const st = pc.stats;
  const lat = st.latencies;
  const n = lat.length;
  const sorted = Float64Array.from(lat).sort();
  const pct = (f: number): number => (n ? sorted[Math.min(n - 1, Math.floor(f * n))]! : 0);
  const hist = new Map<number, number>();
  for (const ns of lat) {
    const le = 2 ** Math.max(10, Math.ceil(Math.log2(Math.max(1, ns))));
    hist.set(le, (hist.get(le) ?? 0) + 1);
  }
  const width = Math.max(1, Math.ceil((runEnd - t0) / FAULT_BUCKETS));
  const cells = new Map<number, [number, number, number]>();
  const vcpus = st.vcpuBlocktime.length;
  const longestBy: { vcpu: number; at_ns: number; ns: number }[] = [];
  const order: number[] = [];
  for (let i = 0; i < n; i++) {
    const ns = lat[i]!;
    const woke = st.wokenAt[i]!;
    const vcpu = st.wokenVcpu[i]!;
    const at = woke - ns - t0;
    const key = Math.floor((woke - t0) / width) * (vcpus + 1) + (vcpu + 1);
    const c = cells.get(key) ?? [0, 0, 0];
    c[0]++;
    c[1] += ns;
    c[2] = Math.max(c[2], ns);
    cells.set(key, c);
    if (vcpu >= 0) {
      const b = longestBy[vcpu];
      if (!b || ns > b.ns) longestBy[vcpu] = { vcpu, at_ns: at, ns };
    }
    order.push(i);
  }
  order.sort((a, b) => lat[b]! - lat[a]! || a - b);
  const buckets: number[] = [];
  for (const key of [...cells.keys()].sort((a, b) => a - b)) {
    const [count, sum, max] = cells.get(key)!;
    buckets.push(Math.floor(key / (vcpus + 1)), (key % (vcpus + 1)) - 1, count, sum, max);
  }
  return {
    start_ns: startAt - t0,
    requests: st.requests,
    bytes: st.bytes,
    faults: n,
    vcpu_blocktime_ns: [...st.vcpuBlocktime],
    all_vcpus_blocked_ns: st.totalBlocktime,
    latency: {
      mean_ns: n ? Math.round(lat.reduce((a, b) => a + b, 0) / n) : 0,
      p50_ns: pct(0.5),
      p99_ns: pct(0.99),
      max_ns: n ? sorted[n - 1]! : 0,
    },
    histogram: [...hist].sort((a, b) => a[0] - b[0]),
    bucket_ns: width,
    buckets,
    longest: order.slice(0, LONGEST_FAULTS).map((i) => ({ at_ns: st.wokenAt[i]! - lat[i]! - t0, ns: lat[i]!, vcpu: st.wokenVcpu[i]! })),
    longest_by_vcpu: longestBy.filter((x) => x !== undefined),
  };
}

/** The interval samples a run takes (the sampler's schedule: t0, every interval before the end, and the end). */
export function expectedSamples(durationNs: number, intervalNs: number): number {
  return Math.ceil(durationNs / Math.max(1, intervalNs)) + 1;
}
