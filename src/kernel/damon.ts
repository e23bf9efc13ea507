/**
 * DAMON, the data access monitor, with its virtual-address operations
 * (mm/damon/core.c, mm/damon/vaddr.c, mm/damon/ops-common.c).
 *
 * A context monitors one target address space as a list of regions. Every
 * sampling interval it checks one random address per region: at the start
 * of the interval it picks the address and clears the accessed bit of the
 * page mapping it (damon_va_prepare_access_checks -> damon_va_mkold), at the
 * end it asks whether the bit was set again (damon_va_check_accesses ->
 * damon_va_young); a young page counts one access for the whole region.
 * Every aggregation interval the counts are merged and reset: neighbours
 * whose nr_accesses differ by at most a threshold (a tenth of the largest
 * nr_accesses, doubled while there are more than max_nr_regions) merge,
 * each region's age grows while its count stays within the threshold of the
 * previous one, and then each region is split in two (three when the
 * number of regions did not change since the last split) at a random 10% to
 * 90% point, unless that would exceed max_nr_regions / 2. Every ops update
 * interval the regions are fitted to the target's mappings again
 * (damon_va_update: the three regions that the two biggest unmapped gaps
 * leave; see damonVaRegions for an address space with fewer gaps).
 *
 * What memtwin keeps of the accessed bit: a load through a 4K PTE sets the
 * PTE's bit (pteMkyoung), a store or an access through a huge mapping sets
 * the frame's PG.young. A page is young to DAMON when either is set, as
 * Linux's check is `pte_young() || !folio_test_idle()`; mkold clears both.
 * Linux keeps reclaim's view apart (folio_set_young in damon_ptep_mkold);
 * memtwin has one bit, so reclaim beside DAMON sees only the accesses since
 * DAMON last sampled that page (at most one page per region per sample).
 *
 * Randomness (the sampled address, the split points) comes from a named
 * stream of the run's seed, so a run is deterministic. kdamond's CPU time is
 * charged per region checked (damonCheckNs).
 */
import type { Kernel } from './kernel.ts';
import { HugeLeaf, PageTable, type MmStruct, ptepTestAndClearYoung } from './mm_types.ts';
import { PG } from './page.ts';
import { HPAGE_PMD_NR, PAGE_SIZE, PMD_SIZE } from './uapi.ts';
import type { RandomStream } from '../sim/random.ts';

/** DAMON_MIN_REGION: regions are page-aligned and at least a page. */
export const DAMON_MIN_REGION = PAGE_SIZE;

/** struct damon_attrs as the sysfs interface spells it (monitoring_attrs/intervals, nr_regions). */
export interface DamonAttrs {
  /** Sampling interval, µs (intervals/sample_us; DAMON's default 5000). */
  sample_us: number;
  /** Aggregation interval, µs (intervals/aggr_us; default 100000). */
  aggr_us: number;
  /** Operations update interval, µs (intervals/update_us; default 1000000). */
  update_us: number;
  /** nr_regions/min (default 10). */
  min_nr_regions: number;
  /** nr_regions/max (default 1000). */
  max_nr_regions: number;
}

export const DAMON_DEFAULT_ATTRS: DamonAttrs = {
  sample_us: 5000,
  aggr_us: 100_000,
  update_us: 1_000_000,
  min_nr_regions: 10,
  max_nr_regions: 1000,
};

/** struct damon_region. */
export interface DamonRegion {
  start: number;
  end: number;
  /** Samples of this aggregation interval that found the region accessed. */
  nr_accesses: number;
  /** nr_accesses of the previous aggregation interval. */
  last_nr_accesses: number;
  /** Aggregation intervals its access frequency has stayed (within the merge threshold) the same. */
  age: number;
  /** The address checked in the current sampling interval. */
  sampling_addr: number;
}

/** A region as an aggregation interval ended (before reset): what DAMON's tracepoint and tried_regions show. */
export interface DamonSnapshotRegion {
  start: number;
  end: number;
  nr_accesses: number;
  age: number;
}

/** damon_max_nr_accesses(): the most samples an aggregation interval holds. */
export function damonMaxNrAccesses(a: DamonAttrs): number {
  return Math.floor(a.aggr_us / Math.max(a.sample_us, 1));
}

/**
 * CPU time of checking one region in one sampling interval: two walks of
 * one address (mkold at prepare, young at check) under mmap_read_lock.
 * DAMON's virtual-address operations are not built into this machine's
 * kernel (CONFIG_DAMON_VADDR is not set), so the cost cannot be measured
 * here; it is derived from the measured pagemap walk per page (one walk per
 * page-table lookup, no syscall entry: kdamond is a kernel thread).
 */
export function damonCheckNs(k: Kernel): number {
  return 2 * k.costs.ns('pagemap_read_per_page');
}

const sz = (r: { start: number; end: number }): number => r.end - r.start;
const alignDown = (x: number, a: number): number => Math.floor(x / a) * a;
const alignUp = (x: number, a: number): number => Math.ceil(x / a) * a;

/** __damon_va_three_regions: the mapped span cut at its two biggest gaps; null with fewer than two gaps (-EINVAL). */
export function damonVaThreeRegions(mm: MmStruct): [number, number][] | null {
  let first = { start: 0, end: 0 };
  let second = { start: 0, end: 0 };
  let start = 0;
  let prevEnd = -1;
  for (const v of mm.vmas) {
    if (prevEnd < 0) start = v.start;
    else {
      const gap = v.start - prevEnd;
      if (gap > sz(first)) {
        second = first;
        first = { start: prevEnd, end: v.start };
      } else if (gap > sz(second)) second = { start: prevEnd, end: v.start };
    }
    prevEnd = v.end;
  }
  if (!sz(first) || !sz(second)) return null;
  if (first.start > second.start) [first, second] = [second, first];
  const a = (x: number): number => alignUp(x, DAMON_MIN_REGION);
  return [
    [a(start), a(first.start)],
    [a(first.end), a(second.start)],
    [a(second.end), a(prevEnd)],
  ];
}

/**
 * The regions vaddr monitors in an address space: the three regions, or,
 * for an address space with fewer than two gaps, the mapped span cut at the
 * gap it has (if any). A real process always has the gaps around its heap
 * and stack; memtwin's processes have only the mappings their scenario
 * gives them, where Linux would monitor nothing (-EINVAL).
 */
export function damonVaRegions(mm: MmStruct): [number, number][] {
  const three = damonVaThreeRegions(mm);
  if (three) return three;
  const vmas = mm.vmas;
  if (!vmas.length) return [];
  const out: [number, number][] = [[vmas[0]!.start, vmas[0]!.end]];
  for (const v of vmas.slice(1)) {
    const last = out[out.length - 1]!;
    if (v.start === last[1]) last[1] = v.end;
    else out.push([v.start, v.end]);
  }
  // at most one gap here: the span is one or two regions
  return out.map(([s, e]) => [alignUp(s, DAMON_MIN_REGION), alignUp(e, DAMON_MIN_REGION)]);
}

/** Monitoring statistics of a context (what kdamond has done). */
export interface DamonStats {
  /** Sampling intervals passed (ctx->passed_sample_intervals). */
  samples: number;
  /** Aggregation intervals completed. */
  aggregations: number;
  /** Region checks made (regions × samples): what kdamond's CPU time is charged by. */
  checks: number;
  /** kdamond's CPU time, ns. */
  cpu_ns: number;
}

/**
 * A DAMON context with one virtual-address target (struct damon_ctx +
 * kdamond_fn's loop, one step per sampling interval: see the file comment).
 */
export class DamonCtx {
  regions: DamonRegion[] = [];
  readonly stats: DamonStats = { samples: 0, aggregations: 0, checks: 0, cpu_ns: 0 };
  /** Called at the end of each aggregation interval, before nr_accesses is reset (the aggregated result). */
  onAggregate: ((regions: readonly DamonSnapshotRegion[]) => void) | undefined;
  private nextAggregationSis = 0;
  private nextOpsUpdateSis = 0;
  /** kdamond_split_regions' static last_nr_regions. */
  private lastNrRegions = 0;
  /** __damon_va_check_access' statics: the last page checked, its folio size, and its answer. */
  private lastAddr = -1;
  private lastFolioSz = PAGE_SIZE;
  private lastAccessed = false;
  private readonly checkNs: number;

  /**
   * @param ranges initial regions (the sysfs targets/N/regions); none: the three regions of the mappings (damon_va_init)
   */
  constructor(
    private readonly k: Kernel,
    readonly mm: MmStruct,
    readonly attrs: DamonAttrs,
    private readonly rand: RandomStream,
    ranges: [number, number][] = [],
  ) {
    checkAttrs(attrs);
    this.checkNs = damonCheckNs(k);
    if (ranges.length) this.setRegions(ranges);
    else this.initRegions();
    const s = Math.max(attrs.sample_us, 1);
    this.nextAggregationSis = Math.floor(attrs.aggr_us / s);
    this.nextOpsUpdateSis = Math.floor(attrs.update_us / s);
  }

  /** Sampling interval in ns. */
  get sampleNs(): number {
    return this.attrs.sample_us * 1000;
  }

  /** __damon_va_init_regions: the three regions, each evenly split into pieces of (their total / min_nr_regions). */
  private initRegions(): void {
    const three = damonVaRegions(this.mm);
    let total = three.reduce((a, [s, e]) => a + e - s, 0);
    if (this.attrs.min_nr_regions) total = Math.floor(total / this.attrs.min_nr_regions);
    if (total < DAMON_MIN_REGION) total = DAMON_MIN_REGION;
    for (const [s, e] of three) {
      const r = newRegion(s, e);
      this.regions.push(r);
      this.evenlySplit(this.regions.length - 1, Math.floor((e - s) / total));
    }
  }

  /** damon_va_evenly_split_region: region i into nr pieces of the same page-aligned size, the last taking the rest. */
  private evenlySplit(i: number, nr: number): void {
    const r = this.regions[i]!;
    if (!nr) return;
    const piece = alignDown(Math.floor(sz(r) / nr), DAMON_MIN_REGION);
    if (!piece) return;
    const end = r.end;
    r.end = r.start + piece;
    const added: DamonRegion[] = [];
    for (let s = r.end; s + piece <= end; s += piece) added.push(newRegion(s, s + piece));
    if (added.length) added[added.length - 1]!.end = end;
    else r.end = end;
    this.regions.splice(i + 1, 0, ...added);
  }

  /**
   * damon_set_regions: fit the regions to `ranges` (sorted, disjoint): regions
   * outside every range go; the first and last region meeting a range are
   * stretched to its (page-aligned) ends; a range no region meets gets one.
   */
  setRegions(ranges: [number, number][]): void {
    const inside = (r: DamonRegion): boolean => ranges.some(([s, e]) => r.start < e && s < r.end);
    let rs = this.regions.filter(inside);
    for (const [s0, e0] of ranges) {
      const s = alignDown(s0, DAMON_MIN_REGION);
      const e = alignUp(e0, DAMON_MIN_REGION);
      const meet = rs.filter((r) => r.start < e0 && s0 < r.end);
      if (!meet.length) rs.push(newRegion(s, e));
      else {
        meet[0]!.start = s;
        meet[meet.length - 1]!.end = e;
      }
    }
    rs = rs.sort((a, b) => a.start - b.start);
    this.regions = rs;
  }

  /**
   * One sampling interval of kdamond_fn: the access checks prepared at the
   * start of the interval are read now (`between` runs in between: whatever
   * touches memory during the interval), then aggregation, split and ops
   * update when their time has come, then the next interval's checks are
   * prepared. Returns kdamond's CPU time for the interval, ns.
   */
  sample(): number {
    const checks = this.regions.length;
    const max = this.checkAccesses();
    this.stats.samples++;
    const passed = this.stats.samples;
    const s = Math.max(this.attrs.sample_us, 1);
    if (passed >= this.nextAggregationSis) {
      this.mergeRegions(Math.floor(max / 10), this.regionSzLimit());
      this.onAggregate?.(this.regions.map((r) => ({ start: r.start, end: r.end, nr_accesses: r.nr_accesses, age: r.age })));
      this.nextAggregationSis += Math.floor(this.attrs.aggr_us / s);
      this.stats.aggregations++;
      for (const r of this.regions) {
        r.last_nr_accesses = r.nr_accesses;
        r.nr_accesses = 0;
      }
      this.splitRegions();
    }
    if (passed >= this.nextOpsUpdateSis) {
      this.nextOpsUpdateSis += Math.floor(this.attrs.update_us / s);
      const three = damonVaRegions(this.mm);
      if (three.length) this.setRegions(three);
    }
    this.prepareAccessChecks();
    const ns = (checks + this.regions.length) * (this.checkNs / 2);
    this.stats.checks += checks;
    this.stats.cpu_ns += ns;
    return ns;
  }

  /** damon_va_prepare_access_checks: a random address per region, its page made old. Called once before the first sample(). */
  prepareAccessChecks(): void {
    for (const r of this.regions) {
      r.sampling_addr = r.start + this.rand.int(0, r.end - r.start - 1);
      mkold(this.k, this.mm, r.sampling_addr);
    }
  }

  /** damon_va_check_accesses: whether each region's sampled page was accessed; the highest nr_accesses. */
  private checkAccesses(): number {
    let max = 0;
    let sameTarget = false;
    for (const r of this.regions) {
      // The same folio as the region checked just before: its answer holds (__damon_va_check_access).
      if (!(sameTarget && alignDown(this.lastAddr, this.lastFolioSz) === alignDown(r.sampling_addr, this.lastFolioSz))) {
        const y = young(this.k, this.mm, r.sampling_addr);
        this.lastAccessed = y.young;
        this.lastFolioSz = y.folioSz;
        this.lastAddr = r.sampling_addr;
      }
      if (this.lastAccessed) r.nr_accesses++;
      if (r.nr_accesses > max) max = r.nr_accesses;
      sameTarget = true;
    }
    return max;
  }

  /** damon_region_sz_limit: the largest region a merge may make, the target's size / min_nr_regions. */
  private regionSzLimit(): number {
    let total = 0;
    for (const r of this.regions) total += sz(r);
    if (this.attrs.min_nr_regions) total = Math.floor(total / this.attrs.min_nr_regions);
    return Math.max(total, DAMON_MIN_REGION);
  }

  /** kdamond_merge_regions: merge with a threshold doubled until the regions fit max_nr_regions. */
  private mergeRegions(threshold: number, szLimit: number): void {
    const maxThres = damonMaxNrAccesses(this.attrs);
    let t = threshold;
    do {
      this.mergeRegionsOf(t, szLimit);
      t = Math.max(1, t * 2);
    } while (this.regions.length > this.attrs.max_nr_regions && Math.floor(t / 2) < maxThres);
  }

  /** damon_merge_regions_of: ages, then merges adjacent regions of similar nr_accesses. */
  private mergeRegionsOf(thres: number, szLimit: number): void {
    const out: DamonRegion[] = [];
    for (const r of this.regions) {
      if (Math.abs(r.nr_accesses - r.last_nr_accesses) > thres) r.age = 0;
      // A change between accessed and not accessed restarts the age too (a 2025 change to core.c, after 6.12).
      else if ((r.nr_accesses === 0) !== (r.last_nr_accesses === 0)) r.age = 0;
      else r.age++;
      const prev = out[out.length - 1];
      if (prev && prev.end === r.start && Math.abs(prev.nr_accesses - r.nr_accesses) <= thres && sz(prev) + sz(r) <= szLimit) {
        // damon_merge_two_regions: size-weighted averages of nr_accesses and age.
        const sl = sz(prev);
        const sr = sz(r);
        prev.nr_accesses = Math.floor((prev.nr_accesses * sl + r.nr_accesses * sr) / (sl + sr));
        prev.age = Math.floor((prev.age * sl + r.age * sr) / (sl + sr));
        prev.end = r.end;
      } else out.push(r);
    }
    this.regions = out;
  }

  /** kdamond_split_regions. */
  private splitRegions(): void {
    const n = this.regions.length;
    if (n > Math.floor(this.attrs.max_nr_regions / 2)) return;
    // Maybe the middle of the region has a different access frequency.
    const subs = this.lastNrRegions === n && n < Math.floor(this.attrs.max_nr_regions / 3) ? 3 : 2;
    const out: DamonRegion[] = [];
    for (const r of this.regions) {
      // damon_split_regions_of: each split point at a random 10%..90% of what is left of the region.
      const pieces: DamonRegion[] = [r];
      const cur = r;
      let szRegion = sz(r);
      for (let i = 0; i < subs - 1 && szRegion > 2 * DAMON_MIN_REGION; i++) {
        const szSub = alignDown(Math.floor((this.rand.int(1, 9) * szRegion) / 10), DAMON_MIN_REGION);
        if (szSub === 0 || szSub >= szRegion) continue;
        // damon_split_region_at: the right part inherits the counters.
        const right: DamonRegion = { ...cur, start: cur.start + szSub };
        cur.end = right.start;
        pieces.splice(pieces.indexOf(cur) + 1, 0, right);
        szRegion = szSub;
      }
      out.push(...pieces);
    }
    this.lastNrRegions = n;
    this.regions = out;
  }
}

function newRegion(start: number, end: number): DamonRegion {
  return { start, end, nr_accesses: 0, last_nr_accesses: 0, age: 0, sampling_addr: start };
}

/** The sysfs interface's own checks of the attributes (damon_set_attrs: -EINVAL). */
export function checkAttrs(a: DamonAttrs): void {
  if (a.min_nr_regions < 3) throw new RangeError('min_nr_regions must be at least 3');
  if (a.min_nr_regions > a.max_nr_regions) throw new RangeError('min_nr_regions must not exceed max_nr_regions');
  if (a.sample_us > a.aggr_us) throw new RangeError('sample_us must not exceed aggr_us');
}

/** The 512 frames of the 2M-aligned part of a huge leaf that holds va (a PMD leaf: its whole folio). */
function huge512(leaf: HugeLeaf, va: number): number {
  if (leaf.level === 'pmd') return leaf.pfn;
  return leaf.pfn + alignDown(va % (PMD_SIZE * 512), PMD_SIZE) / PAGE_SIZE;
}

/** damon_va_mkold: the accessed bit of the page mapping va cleared (PTE or huge leaf). */
function mkold(k: Kernel, mm: MmStruct, va: number): void {
  const leaf = mm.pgtable.puds.get(PageTable.pudKey(va)) ?? mm.pgtable.pmds.get(PageTable.pmdKey(va));
  if (!leaf) return;
  if (leaf instanceof HugeLeaf) {
    if (leaf.pfn < 0) return;
    const head = huge512(leaf, va);
    for (let i = 0; i < HPAGE_PMD_NR; i++) k.mem.clearFlags(head + i, PG.young);
    return;
  }
  const i = (va / PAGE_SIZE) & 511;
  const pte = leaf.ptes[i]!;
  if (pte <= 0) return; // none, the zero page, or a swap entry: not present
  ptepTestAndClearYoung(leaf, i);
  k.mem.clearFlags(pte - 1, PG.young);
}

/** damon_va_young: whether the page mapping va was accessed since mkold, and the size of its folio. */
function young(k: Kernel, mm: MmStruct, va: number): { young: boolean; folioSz: number } {
  const leaf = mm.pgtable.puds.get(PageTable.pudKey(va)) ?? mm.pgtable.pmds.get(PageTable.pmdKey(va));
  const no = { young: false, folioSz: PAGE_SIZE };
  if (!leaf) return no;
  if (leaf instanceof HugeLeaf) {
    if (leaf.pfn < 0) return no; // the huge zero page is no LRU folio (damon_get_folio)
    const head = huge512(leaf, va);
    let y = false;
    for (let i = 0; i < HPAGE_PMD_NR && !y; i++) y = (k.mem.flags(head + i) & PG.young) !== 0;
    return { young: y, folioSz: PMD_SIZE };
  }
  const i = (va / PAGE_SIZE) & 511;
  const pte = leaf.ptes[i]!;
  if (pte <= 0) return no;
  const y = (leaf.young[i >>> 5]! & (1 << (i & 31))) !== 0 || (k.mem.flags(pte - 1) & PG.young) !== 0;
  return { young: y, folioSz: PAGE_SIZE };
}
