/**
 * Memory compaction (mm/compaction.c). A migrate scanner walks movable
 * pageblocks from the bottom of the zone isolating in-use movable pages;
 * a free scanner walks from the top isolating free pages; pages are
 * migrated from the bottom to the top until a free block of the requested
 * order exists (COMPACT_SUCCESS) or the scanners meet (COMPACT_COMPLETE,
 * a failure). Unmovable pages (page tables), hugetlb pages and compound
 * pages at least as large as the request pin their pageblock, which is
 * what makes fragmentation real. Each page scanned and migrated costs
 * what the profile measured. Failed direct compaction is deferred like
 * Linux's compact_defer_shift.
 */
import type { Kernel } from './kernel.ts';
import { PG } from './page.ts';
import { MIGRATE_MOVABLE, PAGEBLOCK_ORDER, type Zone } from './page_alloc.ts';
import { migrateFrame } from './migrate.ts';
import type { MigrationBatch } from './migrate_entry.ts';
import type { MmStruct } from './mm_types.ts';
import { MAX_PAGE_ORDER, PAGE_SIZE } from './uapi.ts';

const PAGEBLOCK_NR = 1 << PAGEBLOCK_ORDER;
/** COMPACT_CLUSTER_MAX (SWAP_CLUSTER_MAX): the pages isolate_migratepages takes before each migrate_pages(). */
export const COMPACT_CLUSTER_MAX = 32;
const COMPACT_MAX_DEFER_SHIFT = 6;

export class CompactionState {
  /** per node: compact_considered, compact_defer_shift, compact_order_failed */
  readonly considered: number[];
  readonly deferShift: number[];
  readonly orderFailed: number[];
  /** kcompactd wake-ups pending per node (order requested), -1 = idle. */
  readonly kcompactdOrder: number[];
  /**
   * Where the scanners stopped last time, per node, in pageblocks
   * (zone->compact_cached_migrate_pfn / compact_cached_free_pfn): the next
   * compaction resumes there instead of rescanning the zone; both reset
   * when the scanners meet.
   */
  readonly cachedMigrate: number[];
  readonly cachedFree: number[];
  constructor(k: Kernel) {
    const n = k.host.nodes.length;
    this.considered = new Array<number>(n).fill(0);
    this.deferShift = new Array<number>(n).fill(0);
    this.orderFailed = new Array<number>(n).fill(MAX_PAGE_ORDER + 1);
    this.kcompactdOrder = new Array<number>(n).fill(-1);
    this.cachedMigrate = new Array<number>(n).fill(0);
    this.cachedFree = new Array<number>(n).fill(Infinity);
  }

  /** compaction_deferred() */
  deferred(nid: number, order: number): boolean {
    if (order < this.orderFailed[nid]!) return false;
    if (++this.considered[nid]! >= 1 << this.deferShift[nid]!) return false;
    return true;
  }
  /** defer_compaction() */
  defer(nid: number, order: number): void {
    this.considered[nid] = 0;
    this.deferShift[nid] = Math.min(this.deferShift[nid]! + 1, COMPACT_MAX_DEFER_SHIFT);
    if (order < this.orderFailed[nid]!) this.orderFailed[nid] = order;
  }
  /** compaction_defer_reset() after a success */
  reset(nid: number, order: number): void {
    this.considered[nid] = 0;
    this.deferShift[nid] = 0;
    if (order >= this.orderFailed[nid]!) this.orderFailed[nid] = order + 1;
  }
}

export interface CompactResult {
  success: boolean;
  migrated: number;
  scanned: number;
  ns: number;
}

function hasFreeBlock(zone: Zone, order: number): boolean {
  if (zone.pristineStart < zone.endPfn) return true;
  const counts = zone.nrFreeByOrder();
  for (let o = order; o <= MAX_PAGE_ORDER; o++) if (counts[o]! > 0) return true;
  return false;
}

/**
 * Compact one zone until a free block of `order` exists. Returns what was
 * done; the caller charges `ns` to whoever did the work (the faulting task
 * for direct compaction, kcompactd otherwise).
 */
export function compactZone(k: Kernel, nid: number, order: number): CompactResult {
  const zone = k.phys.zones[nid]!;
  const m = k.mem;
  const res: CompactResult = { success: false, migrated: 0, scanned: 0, ns: 0 };
  // order > MAX_PAGE_ORDER: compact the whole zone (/proc/sys/vm/compact_memory).
  const full = order > MAX_PAGE_ORDER;
  if (!full && hasFreeBlock(zone, order)) {
    res.success = true;
    return res;
  }
  const st = k.compaction;
  const top = Math.floor((zone.pristineStart - zone.startPfn) / PAGEBLOCK_NR) - 1;
  let freeScanBlock = full ? top : Math.min(top, st.cachedFree[nid]!);
  let b = full ? 0 : st.cachedMigrate[nid]!;
  const freePool: number[] = [];
  let freeScanned = 0;
  let migrateScanned = 0;
  // Compaction's migrations take time too: each cluster of COMPACT_CLUSTER_MAX pages is one migrate_pages() batch,
  // under migration (migrate_entry.ts) from when the scanning and migrating before it are done until its own are,
  // in the time of the task compacting (the faulting task, or kcompactd).
  const t0 = k.clock.now() + (k.taskTime?.ns ?? 0);
  const scanNs = k.costs.ns('compact_scan_per_page');
  const migNs = k.costs.ns('page_migrate_4k');
  const elapsed = (): number => t0 + (migrateScanned + freeScanned) * scanNs + res.migrated * migNs;
  let batch: MigrationBatch | null = null;
  const moved: [MmStruct, number][] = [];

  const refillFree = (limitBlock: number): boolean => {
    while (freePool.length === 0 && freeScanBlock > limitBlock) {
      const start = zone.startPfn + freeScanBlock * PAGEBLOCK_NR;
      freeScanBlock--;
      if (zone.pageblockType(start) !== MIGRATE_MOVABLE) continue;
      for (let p = start; p < start + PAGEBLOCK_NR;) {
        freeScanned++;
        if (m.test(p, PG.buddy)) {
          const o = m.order(p);
          zone.takeFreeBlock(p, o);
          for (let i = 0; i < 1 << o; i++) freePool.push(p + i);
          p += 1 << o;
        } else p++;
      }
    }
    return freePool.length > 0;
  };

  let met = false;
  for (; zone.startPfn + b * PAGEBLOCK_NR < zone.pristineStart; b++) {
    if (b >= freeScanBlock) {
      met = true; // scanners met
      break;
    }
    const start = zone.startPfn + b * PAGEBLOCK_NR;
    if (zone.pageblockType(start) !== MIGRATE_MOVABLE) continue;
    // A pageblock is worth migrating only if everything in it can move.
    let movable = true;
    const victims: number[] = [];
    for (let p = start; p < start + PAGEBLOCK_NR;) {
      migrateScanned++;
      const f = m.flags(p);
      if (f & PG.buddy) {
        p += 1 << m.order(p);
        continue;
      }
      if (f & (PG.pgtable | PG.hugetlb | PG.reserved) || f & PG.head || f & PG.tail) {
        movable = false;
        break;
      }
      if (f & (PG.anon | PG.shmem)) victims.push(p);
      else {
        movable = false;
        break;
      }
      p++;
    }
    if (!movable || victims.length === 0) continue;
    let done = true;
    for (const src of victims) {
      if (!refillFree(b)) {
        done = false;
        break;
      }
      const dst = freePool.pop()!;
      if (!batch || res.migrated % COMPACT_CLUSTER_MAX === 0) {
        batch = { unmapAt: elapsed(), remapAt: 0 };
        k.noteBatch(batch);
      }
      moved.length = 0;
      migrateFrame(k, src, dst, (mm, va) => moved.push([mm, va]));
      res.migrated++;
      batch.remapAt = elapsed();
      for (const [mm, va] of moved) mm.migrating.add(va, PAGE_SIZE, { batch, from: nid, pfn: dst, nr: 1 });
    }
    if (!done) break;
    if (!full && hasFreeBlock(zone, order)) {
      res.success = true;
      break;
    }
  }
  if (met || zone.startPfn + b * PAGEBLOCK_NR >= zone.pristineStart) {
    st.cachedMigrate[nid] = 0;
    st.cachedFree[nid] = Infinity;
  } else {
    st.cachedMigrate[nid] = b;
    st.cachedFree[nid] = freeScanBlock + 1;
  }
  // Return isolated free pages that were not used (release_freepages).
  for (const p of freePool) zone.free(p, 0);
  res.scanned = migrateScanned + freeScanned;
  k.vmstat.count('compact_migrate_scanned', migrateScanned);
  k.vmstat.count('compact_free_scanned', freeScanned);
  k.vmstat.count('compact_isolated', res.migrated * 2);
  res.ns = res.migrated * k.costs.ns('page_migrate_4k') + res.scanned * k.costs.ns('compact_scan_per_page');
  return res;
}

/**
 * Direct compaction by an allocating task (try_to_compact_pages), or a
 * kcompactd pass. Direct compaction counts compact_stall/success/fail and
 * charges its time to the caller. Returns whether an `order` block is free now.
 */
export function compactForOrder(k: Kernel, nid: number, order: number, mode: 'direct' | 'kcompactd'): boolean {
  // __alloc_pages_direct_compact: direct compaction is a memory stall of the allocating task (psi.ts).
  return mode === 'direct' ? k.psi.memstall(() => compactNode(k, nid, order, mode)) : compactNode(k, nid, order, mode);
}

function compactNode(k: Kernel, nid: number, order: number, mode: 'direct' | 'kcompactd'): boolean {
  const st = k.compaction;
  if (mode === 'direct') {
    if (st.deferred(nid, order)) return false;
    k.vmstat.count('compact_stall');
  }
  const r = compactZone(k, nid, order);
  // kcompactd's work, its copies stretched by the node's load, runs on its node's CPUs (the kthread is bound there, nice 0).
  // Its clusters' windows follow that CPU time (the pass started at kcompactd's task time 0: wakeupKcompactd).
  if (mode === 'kcompactd')
    k.spend({ name: `kcompactd${nid}`, cpus: k.host.nodes[nid]!.cpus }, chargeCompaction(k, nid, r), k.taskBatches, k.clock.now());
  if (mode === 'direct') {
    chargeCompaction(k, nid, r);
    if (r.success) {
      k.vmstat.count('compact_success');
      st.reset(nid, order);
    } else {
      k.vmstat.count('compact_fail');
      st.defer(nid, order);
    }
  }
  return r.success;
}

/** wakeup_kcompactd: compaction in the background on the node's kcompactd. */
export function wakeupKcompactd(k: Kernel, nid: number, order: number): void {
  const st = k.compaction;
  if (st.kcompactdOrder[nid]! >= order) return;
  const already = st.kcompactdOrder[nid]! >= 0;
  st.kcompactdOrder[nid] = order;
  if (already) return;
  k.events.after(0, `kcompactd${nid}`, () => {
    const o = st.kcompactdOrder[nid]!;
    st.kcompactdOrder[nid] = -1;
    k.vmstat.count('compact_daemon_wake');
    // kcompactd's own time is not a workload's; its copies still load the node.
    k.runAsTask({ ns: 0 }, () => compactForOrder(k, nid, o, 'kcompactd'));
  });
}

/** Charge a compaction run to the running task: its migrations are copies within node `nid` (chargeMem). Returns the time charged. */
export function chargeCompaction(k: Kernel, nid: number, r: CompactResult): number {
  return k.chargeMem(r.ns, r.migrated * k.hot.copy4k, nid, nid, r.migrated * PAGE_SIZE);
}
