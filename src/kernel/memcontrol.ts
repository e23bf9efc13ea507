/**
 * Memory cgroups (mm/memcontrol.c, mm/page_counter.c), cgroup v2's memory
 * controller: a tree of groups under the root, each with the limits
 * memory.max, memory.high, memory.low, memory.min and memory.swap.max, the
 * charge memory.current / memory.swap.current, memory.stat and
 * memory.events.
 *
 * Every user page is charged to exactly one group (folio->memcg_data: the
 * group's id in MemMap's per-frame `memcg`, 0 for the root, whose charge
 * is not counted: the root has no memory.current). A group has one lruvec
 * per node (mem_cgroup_lruvec), and, as in 6.18, every folio lives on its
 * group's lruvec: the root's are the nodes' own (Kernel.nodeLruvec), so
 * reclaim can target one group (try_to_free_mem_cgroup_pages) or walk the
 * groups of a node (shrink_node_memcgs, vmscan.ts).
 *
 * Until the first group is made none of this runs: the fault path tests
 * one flag (`active`), frames keep memcg 0, and lruvecs are the nodes'.
 *
 * Simplifications: charges are not batched through a per-CPU stock
 * (MEMCG_CHARGE_BATCH), so memory.current is exact rather than up to 64
 * pages ahead; kernel memory (page tables, stacks, slab) is not charged;
 * the over-high penalty is paid at the charge that crossed a batch of
 * pages over memory.high, not on the return to user space.
 */
import type { Kernel } from './kernel.ts';
import type { MmStruct } from './mm_types.ts';
import type { Process } from './sched.ts';
import { PG } from './page.ts';
import { Lruvec, LRU_NAMES, folioNrPages } from './swap.ts';
import { MAX_RECLAIM_RETRIES, tryToFreeMemCgroupPages } from './vmscan.ts';
import { outOfMemory } from './oom_kill.ts';
import { PAGE_SIZE } from './uapi.ts';
import { WORKINGSET_STATS } from './vmstat.ts';

/** MEMCG_CHARGE_BATCH: pages charged over memory.high before the task pays for it. */
export const MEMCG_CHARGE_BATCH = 64;
/** PAGE_ALLOC_COSTLY_ORDER: charges of larger folios never invoke the OOM killer (mem_cgroup_oom). */
export const PAGE_ALLOC_COSTLY_ORDER = 3;
/** MEMCG_MAX_HIGH_DELAY_JIFFIES (2 s) and HZ (1000 on this machine's kernel). */
const HZ = 1000;
const MEMCG_MAX_HIGH_DELAY_JIFFIES = 2 * HZ;
const MEMCG_DELAY_PRECISION_SHIFT = 20;
const MEMCG_DELAY_SCALING_SHIFT = 14;
/** Most groups a kernel holds (ids are 16 bits; MEM_CGROUP_ID_MAX is 65535). */
export const MEM_CGROUP_ID_MAX = 0xffff;

/** memory.events keys, in the order the file prints them. */
export const MEMCG_EVENTS = ['low', 'high', 'max', 'oom', 'oom_kill', 'oom_group_kill'] as const;
export type MemcgEvent = (typeof MEMCG_EVENTS)[number];

/** struct mem_cgroup: limits and usage in pages (Infinity = "max"). */
export class MemCgroup {
  readonly children: MemCgroup[] = [];
  /** memory.max, memory.high, memory.low, memory.min, memory.swap.max (pages). */
  max = Infinity;
  high = Infinity;
  low = 0;
  min = 0;
  swapMax = Infinity;
  /** page_counter usage of memory and swap: this group's pages and its descendants' (pages). */
  usage = 0;
  swapUsage = 0;
  /** Effective protection (page_counter emin/elow), set by mem_cgroup_calculate_protection. */
  emin = 0;
  elow = 0;
  /** memory.events (hierarchical: a descendant's event counts here too) and memory.events.local. */
  readonly events: Record<MemcgEvent, number> = { low: 0, high: 0, max: 0, oom: 0, oom_kill: 0, oom_group_kill: 0 };
  readonly eventsLocal: Record<MemcgEvent, number> = { low: 0, high: 0, max: 0, oom: 0, oom_kill: 0, oom_group_kill: 0 };
  /** Local memory.stat event counters this model counts (pgscan, pgsteal, ...; summed over the subtree when read). */
  readonly stat: Record<string, number> = Object.create(null) as Record<string, number>;
  /** Pages charged over memory.high not yet paid for (current->memcg_nr_pages_over_high, per group here). */
  nrPagesOverHigh = 0;
  /** Time the group's tasks were made to sleep for being over memory.high (ns). */
  highDelayNs = 0;

  constructor(
    readonly id: number,
    readonly name: string,
    readonly parent: MemCgroup | null,
    /** mem_cgroup_lruvec by node. */
    readonly lruvecs: Lruvec[],
  ) {}

  /** The group's path in the hierarchy ("/" for the root, "/a/b"). */
  path(): string {
    if (!this.parent) return '/';
    const up = this.parent.path();
    return up === '/' ? `/${this.name}` : `${up}/${this.name}`;
  }

  /** This group and every descendant, parents first. */
  subtree(): MemCgroup[] {
    const out: MemCgroup[] = [this];
    for (let i = 0; i < out.length; i++) out.push(...out[i]!.children);
    return out;
  }

  isAncestorOf(g: MemCgroup): boolean {
    for (let c: MemCgroup | null = g; c; c = c.parent) if (c === this) return true;
    return false;
  }

  count(stat: string, n = 1): void {
    this.stat[stat] = (this.stat[stat] ?? 0) + n;
  }
}

/** The kernel's memory cgroups (k.memcg). */
export class MemcgState {
  readonly root: MemCgroup;
  /** Groups by id (idr of mem_cgroup ids); the root is 0. */
  readonly byId: (MemCgroup | undefined)[] = [];
  /** Some group other than the root exists: charges are counted. */
  active = false;
  /** The group of each mm (mm->owner's memcg, get_mem_cgroup_from_mm), by mm id; absent = the root. */
  private readonly mmMemcg = new Map<number, MemCgroup>();
  /** swap_cgroup: the group each swap entry is charged to (swap_cgroup_record), by entry. */
  readonly swapCgroup = new Map<number, number>();

  constructor(private readonly k: Kernel) {
    this.root = new MemCgroup(0, '', null, k.nodeLruvec);
    this.byId.push(this.root);
  }

  /** mkdir of a group under `parent`: empty, no limits. */
  create(name: string, parent: MemCgroup = this.root): MemCgroup {
    const id = this.byId.length;
    if (id > MEM_CGROUP_ID_MAX) throw new Error(`memcg: more than ${MEM_CGROUP_ID_MAX} memory cgroups`);
    const lruvecs: Lruvec[] = [];
    const cg = new MemCgroup(id, name, parent, lruvecs);
    for (const lv of this.k.nodeLruvec) lruvecs.push(new Lruvec(lv.nid, cg));
    parent.children.push(cg);
    this.byId.push(cg);
    if (!this.active) this.activate();
    return cg;
  }

  /** The first group: the kernel starts asking which lruvec a folio is on, and freed frames leave their charge. */
  private activate(): void {
    const k = this.k;
    this.active = true;
    k.lruvecOf = (head, nid) => {
      const id = k.mem.memcg(head);
      return id === 0 ? undefined : this.byId[id]!.lruvecs[nid];
    };
    k.phys.uncharge = (pfn, order) => memcgUncharge(k, pfn, 1 << order);
    k.swap.onSlotFree = (entry) => memcgUnchargeSwap(k, entry);
  }

  /** A child of the root by name (a scenario's group). */
  byName(name: string): MemCgroup | undefined {
    return this.root.children.find((c) => c.name === name);
  }

  /** cgroup.procs write: the process's later charges go to `cg` (charges already made stay where they are). */
  attach(p: Process, cg: MemCgroup): void {
    if (cg === this.root) this.mmMemcg.delete(p.mm.id);
    else this.mmMemcg.set(p.mm.id, cg);
  }

  /** get_mem_cgroup_from_mm. */
  ofMm(mm: MmStruct): MemCgroup {
    return this.mmMemcg.get(mm.id) ?? this.root;
  }

  /** The processes in `cg`'s subtree (mem_cgroup_scan_tasks), in pid order. */
  tasks(cg: MemCgroup): Process[] {
    const out: Process[] = [];
    for (const p of this.k.processes.values()) if (!p.exited && cg.isAncestorOf(this.ofMm(p.mm))) out.push(p);
    return out;
  }

  /** The group a frame is charged to (folio_memcg; the root when none). */
  ofFrame(pfn: number): MemCgroup {
    return this.byId[this.k.mem.memcg(pfn)]!;
  }
}

// --- page counters ------------------------------------------------------------------

/** mem_cgroup_margin: pages `cg` may still charge before memory.max (or memory.swap.max with swap). */
export function memcgMargin(cg: MemCgroup): number {
  return Math.max(0, cg.max - cg.usage);
}

/**
 * page_counter_try_charge of memory: charge `nr` pages to `cg` and its
 * ancestors; if one of them would go over its memory.max nothing is
 * charged and that group (mem_over_limit) is returned.
 */
function pageCounterTryCharge(cg: MemCgroup, nr: number): MemCgroup | null {
  for (let c: MemCgroup | null = cg; c && c.parent; c = c.parent) if (c.usage + nr > c.max) return c;
  for (let c: MemCgroup | null = cg; c && c.parent; c = c.parent) c.usage += nr;
  return null;
}

function pageCounterUncharge(cg: MemCgroup, nr: number): void {
  for (let c: MemCgroup | null = cg; c && c.parent; c = c.parent) c.usage -= nr;
}

/** memcg_memory_event: counted in the group's memory.events.local and in memory.events up to the root. */
export function memcgMemoryEvent(cg: MemCgroup, ev: MemcgEvent): void {
  cg.eventsLocal[ev]++;
  for (let c: MemCgroup | null = cg; c && c.parent; c = c.parent) c.events[ev]++;
}

// --- charge and uncharge ------------------------------------------------------------

/** What charges pass to tryCharge: the task charging (for the OOM killer's "current"), and the folio's order. */
export interface ChargeContext {
  current?: Process | null;
  order?: number;
}

/**
 * try_charge_memcg: charge `nr` pages to `cg`. At a memory.max it reclaims
 * from the group over its limit (with swap while memory.swap.max allows),
 * retries up to MAX_RECLAIM_RETRIES rounds without progress, then (for a
 * folio of order <= PAGE_ALLOC_COSTLY_ORDER) the memcg OOM killer, and
 * retries again after a kill. 0, or -ENOMEM (-12) when the charge failed.
 */
export function tryCharge(k: Kernel, cg: MemCgroup, nr: number, ctx: ChargeContext = {}): number {
  if (!cg.parent) return 0;
  const order = ctx.order ?? 0;
  let nrRetries = MAX_RECLAIM_RETRIES;
  let passedOom = false;
  for (;;) {
    const over = pageCounterTryCharge(cg, nr);
    if (!over) break;
    memcgMemoryEvent(over, 'max');
    // Under PF_MEMALLOC (reclaim) and without __GFP_DIRECT_RECLAIM (swap readahead, which memtwin keeps from
    // reclaiming: Linux would find the faulting folio locked and leave it, memtwin's reclaim would free it) the
    // charge fails instead of reclaiming.
    if (k.phys.memalloc || k.phys.noDirectReclaim) return -12;
    const reclaimed = tryToFreeMemCgroupPages(k, over, nr, true);
    if (memcgMargin(over) >= nr) continue;
    // nr_reclaimed && nr_pages <= (1 << PAGE_ALLOC_COSTLY_ORDER): progress, try again without counting a retry.
    if (reclaimed && nr <= 1 << PAGE_ALLOC_COSTLY_ORDER) continue;
    if (nrRetries-- > 0) continue;
    if (passedOom && ctx.current?.exited) return -12; // task_is_dying: the victim gives up the charge
    if (memcgOom(k, over, order, ctx.current ?? null)) {
      passedOom = true;
      nrRetries = MAX_RECLAIM_RETRIES;
      if (ctx.current?.exited) return -12;
      continue;
    }
    return -12;
  }
  // Over memory.high: the charging task reclaims and may be throttled once a batch of pages is over.
  for (let c: MemCgroup | null = cg; c && c.parent; c = c.parent)
    if (c.usage > c.high) {
      c.nrPagesOverHigh += nr;
      if (c.nrPagesOverHigh > MEMCG_CHARGE_BATCH && !k.phys.memalloc && !k.phys.noDirectReclaim) memCgroupHandleOverHigh(k, c);
      break;
    }
  return 0;
}

/**
 * mem_cgroup_oom: count an oom event and run the OOM killer in `cg`.
 * Never for a costly order (a THP charge fails and falls back instead).
 * True if the killer freed something (or chose a victim).
 */
function memcgOom(k: Kernel, cg: MemCgroup, order: number, current: Process | null): boolean {
  if (order > PAGE_ALLOC_COSTLY_ORDER) return false;
  memcgMemoryEvent(cg, 'oom');
  // mem_cgroup_out_of_memory: a margin that appeared meanwhile is enough.
  if (memcgMargin(cg) >= 1 << order) return true;
  return outOfMemory(k, { memcg: cg, order, current });
}

/**
 * mem_cgroup_charge: charge `nr` new frames from pfn (a folio of `nr`
 * pages) to mm's group and record it in the frames. 0 or -ENOMEM (the
 * caller frees the folio). Nothing to do while no group exists.
 */
export function memcgCharge(k: Kernel, mm: MmStruct, pfn: number, nr: number, ctx: ChargeContext = {}): number {
  const st = k.memcg;
  if (!st.active) return 0;
  const cg = st.ofMm(mm);
  if (!cg.parent) return 0;
  const current = ctx.current !== undefined ? ctx.current : processOfMm(k, mm);
  const r = tryCharge(k, cg, nr, { current, order: ctx.order ?? Math.log2(nr) });
  if (r < 0) return r;
  commitCharge(k, pfn, nr, cg.id);
  return 0;
}

/** commit_charge: the frames name their group (every frame of the folio, so a split keeps it). */
function commitCharge(k: Kernel, pfn: number, nr: number, id: number): void {
  k.mem.setMemcg(pfn, nr, id);
}

/** The process owning mm (mm->owner). */
export function processOfMm(k: Kernel, mm: MmStruct): Process | null {
  for (const p of k.processes.values()) if (p.mm === mm) return p;
  return null;
}

/**
 * mem_cgroup_uncharge for `nr` frames being freed from pfn: each charged
 * frame leaves its group's counter. Called from the page allocator's free
 * once a group exists.
 */
export function memcgUncharge(k: Kernel, pfn: number, nr: number): void {
  const m = k.mem;
  const st = k.memcg;
  let run = 0;
  let id = 0;
  for (let i = 0; i < nr; i++) {
    const c = m.memcg(pfn + i);
    if (c !== id) {
      if (run) pageCounterUncharge(st.byId[id]!, run);
      id = c;
      run = 0;
    }
    if (c) run++;
  }
  if (run) pageCounterUncharge(st.byId[id]!, run);
}

/**
 * mem_cgroup_migrate: the new folio at dst takes the old one's charge
 * (call before the LRU move, so the new folio goes on the group's lruvec);
 * memcgMigrateDone clears the old frames once they left their list, so
 * freeing them uncharges nothing.
 */
export function memcgMigrate(k: Kernel, src: number, dst: number, nr: number): void {
  const id = k.mem.memcg(src);
  if (id) k.mem.setMemcg(dst, nr, id);
}
export function memcgMigrateDone(k: Kernel, src: number, nr: number): void {
  if (k.mem.memcg(src)) k.mem.setMemcg(src, nr, 0);
}

// --- swap -----------------------------------------------------------------------------

/** mem_cgroup_get_nr_swap_pages: swap slots the frame's group may still take (Infinity for the root). */
export function memcgSwapMargin(cg: MemCgroup | null): number {
  let margin = Infinity;
  for (let c = cg; c && c.parent; c = c.parent) margin = Math.min(margin, c.swapMax - c.swapUsage);
  return Math.max(0, margin);
}

/**
 * __mem_cgroup_try_charge_swap: the folio at pfn goes to swap entry
 * `entry`: its group's swap counter takes the slot, recorded in
 * swap_cgroup. False (no swap for it) when the group is at memory.swap.max.
 */
export function memcgTryChargeSwap(k: Kernel, pfn: number, entry: number): boolean {
  const st = k.memcg;
  if (!st.active) return true;
  const id = k.mem.memcg(pfn);
  if (!id) return true;
  const cg = st.byId[id]!;
  if (memcgSwapMargin(cg) < 1) return false;
  for (let c: MemCgroup | null = cg; c && c.parent; c = c.parent) c.swapUsage++;
  st.swapCgroup.set(entry, id);
  return true;
}

/**
 * mem_cgroup_swap_full: the folio's group (or an ancestor) uses half its
 * memory.swap.max or more, so a swap-in frees the slot at once rather than
 * keeping it (do_swap_page's should_try_to_free_swap).
 */
export function memcgSwapFull(k: Kernel, pfn: number): boolean {
  for (let c: MemCgroup | null = k.memcg.ofFrame(pfn); c && c.parent; c = c.parent) if (c.swapUsage * 2 >= c.swapMax) return true;
  return false;
}

/** __mem_cgroup_uncharge_swap: a slot was freed. */
export function memcgUnchargeSwap(k: Kernel, entry: number): void {
  const st = k.memcg;
  const id = st.swapCgroup.get(entry);
  if (id === undefined) return;
  st.swapCgroup.delete(entry);
  for (let c: MemCgroup | null = st.byId[id]!; c && c.parent; c = c.parent) c.swapUsage--;
}

/**
 * mem_cgroup_swapin_charge_folio: a page read from swap is charged to the
 * group the entry was charged to (swap_cgroup), else to mm's.
 */
export function memcgSwapinCharge(k: Kernel, pfn: number, entry: number, mm: MmStruct | null): number {
  const st = k.memcg;
  if (!st.active) return 0;
  const id = st.swapCgroup.get(entry);
  const cg = id !== undefined ? st.byId[id]! : mm ? st.ofMm(mm) : st.root;
  if (!cg.parent) return 0;
  const r = tryCharge(k, cg, 1, { current: mm ? processOfMm(k, mm) : null, order: 0 });
  if (r < 0) return r;
  commitCharge(k, pfn, 1, cg.id);
  return 0;
}

// --- memory.high --------------------------------------------------------------------

/** calculate_overage: how far usage is over high, in 2^-20 units of high. */
function calculateOverage(usage: number, high: number): number {
  if (usage <= high) return 0;
  const h = Math.max(high, 1);
  return Math.floor(((usage - h) * 2 ** MEMCG_DELAY_PRECISION_SHIFT) / h);
}

/** mem_find_max_overage: the largest overage of the group and its ancestors. */
function memFindMaxOverage(cg: MemCgroup): number {
  let max = 0;
  for (let c: MemCgroup | null = cg; c && c.parent; c = c.parent) max = Math.max(max, calculateOverage(c.usage, c.high));
  return max;
}

function swapFindMaxOverage(cg: MemCgroup): number {
  // memory.swap.high is not modelled (it is "max" unless set): no swap overage.
  void cg;
  return 0;
}

/** calculate_high_delay: the penalty in jiffies for nr pages charged at this overage (quadratic in it). */
export function calculateHighDelay(nrPages: number, maxOverage: number): number {
  if (!maxOverage) return 0;
  // max_overage^2 * HZ >> 20 >> 14, in exact integers (BigInt: the square passes 2^53).
  const o = BigInt(maxOverage);
  const penalty = Number((o * o * BigInt(HZ)) >> BigInt(MEMCG_DELAY_PRECISION_SHIFT + MEMCG_DELAY_SCALING_SHIFT));
  return Math.floor((penalty * nrPages) / MEMCG_CHARGE_BATCH);
}

/**
 * reclaim_high: reclaim nr pages from each group over its memory.high, from
 * `cg` up (counting a high event in each). Returns the pages reclaimed.
 */
function reclaimHigh(k: Kernel, cg: MemCgroup, nr: number): number {
  let reclaimed = 0;
  for (let c: MemCgroup | null = cg; c && c.parent; c = c.parent) {
    if (c.usage <= c.high) continue;
    memcgMemoryEvent(c, 'high');
    reclaimed += tryToFreeMemCgroupPages(k, c, nr, true);
  }
  return reclaimed;
}

/**
 * __mem_cgroup_handle_over_high: the charging task reclaims what it
 * charged over memory.high, and if the group stays far enough over, sleeps
 * the penalty (at most 2 s; nothing under 10 ms), charged as its time.
 */
function memCgroupHandleOverHigh(k: Kernel, cg: MemCgroup): void {
  const nrPages = cg.nrPagesOverHigh;
  cg.nrPagesOverHigh = 0;
  let nrRetries = MAX_RECLAIM_RETRIES;
  let inRetry = false;
  for (;;) {
    // reclaim_high reclaims in a memory stall (psi.ts).
    const reclaimed = k.psi.memstall(() => reclaimHigh(k, cg, inRetry ? 32 : nrPages));
    let penalty = calculateHighDelay(nrPages, memFindMaxOverage(cg)) + calculateHighDelay(nrPages, swapFindMaxOverage(cg));
    penalty = Math.min(penalty, MEMCG_MAX_HIGH_DELAY_JIFFIES);
    if (penalty <= HZ / 100) return;
    if (reclaimed || nrRetries-- > 0) {
      inRetry = true;
      continue;
    }
    const ns = penalty * (1e9 / HZ);
    cg.highDelayNs += ns;
    k.psi.memstall(() => k.charge(ns)); // schedule_timeout_killable: the task sleeps, in a memory stall (psi.ts)
    return;
  }
}

// --- protection -----------------------------------------------------------------------

/** effective_protection for a group under a protected parent (without memory_recursiveprot). */
function effectiveProtection(usage: number, setting: number, parentEffective: number, siblingsProtected: number): number {
  const protectedPages = Math.min(usage, setting);
  if (siblingsProtected > parentEffective) return Math.floor((protectedPages * parentEffective) / siblingsProtected);
  return protectedPages;
}

/**
 * mem_cgroup_calculate_protection for reclaim aimed at `root` (the root of
 * the hierarchy for global reclaim): the groups' emin and elow. The target
 * itself is unprotected; its children get their own settings; deeper
 * groups a share of what their parent got, split over siblings by usage.
 */
export function memcgCalculateProtection(root: MemCgroup): void {
  root.emin = 0;
  root.elow = 0;
  for (const parent of root.subtree()) {
    let sibMin = 0;
    let sibLow = 0;
    for (const c of parent.children) {
      sibMin += Math.min(c.usage, c.min);
      sibLow += Math.min(c.usage, c.low);
    }
    for (const c of parent.children) {
      if (parent === root) {
        c.emin = c.min;
        c.elow = c.low;
      } else {
        c.emin = effectiveProtection(c.usage, c.min, parent.emin, sibMin);
        c.elow = effectiveProtection(c.usage, c.low, parent.elow, sibLow);
      }
    }
  }
}

/** mem_cgroup_below_min / below_low: usage within the effective protection. */
export function memcgBelowMin(target: MemCgroup, cg: MemCgroup): boolean {
  return cg !== target && cg.parent !== null && cg.usage <= cg.emin;
}
export function memcgBelowLow(target: MemCgroup, cg: MemCgroup): boolean {
  return cg !== target && cg.parent !== null && cg.usage <= cg.elow;
}

// --- the control files ------------------------------------------------------------------

/** A limit as memory.max prints it: bytes, or "max". */
export function renderLimit(pages: number): string {
  return pages === Infinity ? 'max' : String(pages * PAGE_SIZE);
}

/** memory.events (or memory.events.local). */
export function renderEvents(cg: MemCgroup, local = false): string {
  const e = local ? cg.eventsLocal : cg.events;
  return MEMCG_EVENTS.map((n) => `${n} ${e[n]}\n`).join('');
}

/**
 * memory.stat, the fields this model knows (bytes for sizes, counts for
 * events), over the group's subtree as Linux reports them: anon, file,
 * shmem, anon_thp, swapcached, the LRU list sizes, the reclaim
 * counters and the workingset ones (workingset.ts).
 */
export function memcgStat(k: Kernel, cg: MemCgroup): Record<string, number> {
  const lists = [0, 0, 0, 0];
  let anonThp = 0;
  let shmem = 0;
  let swapcached = 0;
  const ev: Record<string, number> = {};
  for (const c of cg.subtree()) {
    if (!c.parent) continue; // the root's lruvecs are the nodes' (the root has no memory.stat)
    for (const lv of c.lruvecs) {
      for (let l = 0; l < 4; l++) lists[l]! += lv.nrPages[l]!;
      for (let l = 0; l < 4; l++)
        for (let h = lv.head[l]!; h >= 0; h = k.mem.next(h)) {
          const f = k.mem.flags(h);
          if (f & PG.head && k.mem.order(h) === 9 && f & PG.anon) anonThp += 512;
          if (f & PG.shmem) shmem += folioNrPages(k.mem, h);
          if (f & PG.swapcache) swapcached += folioNrPages(k.mem, h);
        }
    }
    for (const [key, n] of Object.entries(c.stat)) ev[key] = (ev[key] ?? 0) + n;
  }
  const out: Record<string, number> = {
    anon: (lists[0]! + lists[1]! - shmem) * PAGE_SIZE,
    file: (lists[2]! + lists[3]!) * PAGE_SIZE,
    shmem: shmem * PAGE_SIZE,
    anon_thp: anonThp * PAGE_SIZE,
    swapcached: swapcached * PAGE_SIZE,
  };
  LRU_NAMES.forEach((n, l) => (out[n] = lists[l]! * PAGE_SIZE));
  for (const key of ['pgscan', 'pgsteal', 'pgscan_direct', 'pgsteal_direct', 'pgscan_kswapd', 'pgsteal_kswapd', ...WORKINGSET_STATS])
    out[key] = ev[key] ?? 0;
  return out;
}

export function renderStat(k: Kernel, cg: MemCgroup): string {
  return Object.entries(memcgStat(k, cg))
    .map(([n, v]) => `${n} ${v}\n`)
    .join('');
}

// --- consistency (debug_vm.ts) -------------------------------------------------------------

/**
 * The charges agree with the frames: each group's memory.current is the
 * number of frames charged to it and its descendants, its swap.current the
 * swap entries recorded for them; a free frame is charged to nobody; no
 * group with a memory.max is above it.
 */
export function verifyMemcg(k: Kernel): string[] {
  const st = k.memcg;
  if (!st.active) return [];
  const errs: string[] = [];
  const local = new Float64Array(st.byId.length);
  const localSwap = new Float64Array(st.byId.length);
  const m = k.mem;
  const total = k.phys.totalPages();
  for (let pfn = 0; pfn < total; pfn++) {
    if (!m.isMaterialized(pfn)) {
      pfn |= (1 << 15) - 1; // a section never handed out: nothing charged in it
      continue;
    }
    const id = m.memcg(pfn);
    if (!id) continue;
    if (m.flags(pfn) & PG.buddy || m.owner(pfn) === 0) errs.push(`frame ${pfn} is free but charged to memcg ${id}`);
    local[id]!++;
  }
  for (const id of st.swapCgroup.values()) localSwap[id]!++;
  for (const cg of st.byId) {
    if (!cg || !cg.parent) continue;
    let usage = 0;
    let swap = 0;
    for (const c of cg.subtree()) {
      usage += local[c.id]!;
      swap += localSwap[c.id]!;
    }
    if (usage !== cg.usage) errs.push(`memcg ${cg.path()}: ${usage} frames charged, memory.current says ${cg.usage} pages`);
    if (swap !== cg.swapUsage) errs.push(`memcg ${cg.path()}: ${swap} swap entries charged, memory.swap.current says ${cg.swapUsage}`);
    if (cg.usage > cg.max) errs.push(`memcg ${cg.path()}: memory.current ${cg.usage} pages above memory.max ${cg.max}`);
    if (cg.swapUsage > cg.swapMax) errs.push(`memcg ${cg.path()}: swap.current ${cg.swapUsage} above swap.max ${cg.swapMax}`);
  }
  return errs;
}

/**
 * The group's control files as cgroup v2 shows them under /sys/fs/cgroup:
 * `/sys/fs/cgroup/<path>/memory.{current,max,high,low,min,swap.current,
 * swap.max,stat,events,events.local}`; undefined for any other path.
 */
export function readCgroupFile(k: Kernel, path: string): string | undefined {
  const m = /^\/sys\/fs\/cgroup\/(.+)\/(memory\.[a-z.]+)$/.exec(path);
  if (!m) return undefined;
  let cg: MemCgroup | undefined = k.memcg.root;
  for (const part of m[1]!.split('/')) cg = cg?.children.find((c) => c.name === part);
  if (!cg) return undefined;
  const bytes = (pages: number): string => `${pages * PAGE_SIZE}\n`;
  switch (m[2]) {
    case 'memory.current':
      return bytes(cg.usage);
    case 'memory.swap.current':
      return bytes(cg.swapUsage);
    case 'memory.max':
      return `${renderLimit(cg.max)}\n`;
    case 'memory.high':
      return `${renderLimit(cg.high)}\n`;
    case 'memory.swap.max':
      return `${renderLimit(cg.swapMax)}\n`;
    case 'memory.low':
      return bytes(cg.low);
    case 'memory.min':
      return bytes(cg.min);
    case 'memory.stat':
      return renderStat(k, cg);
    case 'memory.events':
      return renderEvents(cg);
    case 'memory.events.local':
      return renderEvents(cg, true);
  }
  return undefined;
}
