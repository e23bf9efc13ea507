/**
 * Workingset detection (mm/workingset.c, the classic two-list LRU's half:
 * lru_gen is not built on this machine, see swap.ts).
 *
 * Each lruvec keeps a clock, nonresident_age, that advances by one page
 * for every page evicted from it and every page activated on it (a refault
 * or a reference promoting an inactive page: the moves that push an
 * inactive page towards the list's tail). When reclaim evicts a page, the
 * slot it leaves (the swap cache slot for anonymous and shmem pages, the
 * page cache slot for a file page) keeps a shadow entry: the clock of the
 * reclaim target's lruvec at eviction, that lruvec's memory cgroup and node,
 * and whether the page was workingset (PG_workingset: it had been active).
 *
 * When the page comes back (a swap-in, or a page-cache read into a slot
 * with a shadow) it is a refault. Its refault distance is how far the clock
 * moved while it was out: the inactive list would have had to be that much
 * bigger for the page to stay. If the distance is no more than what the
 * active lists could give up (the workingset size below), the page is
 * activated at once (workingset_activate_*), the clock advances, and if it
 * was workingset before it is again (workingset_restore_*), its refault
 * counting as reclaim cost for its type (lru_note_cost_refault), which
 * get_scan_count weighs. Activations also make prepare_scan_control age the
 * active lists of their type (vmscan.ts).
 *
 * Not modelled: the shadow node shrinker (workingset_nodereclaim stays 0:
 * shadows are kept until their slot is reused or freed), bucket_order (the
 * clock is kept in pages: bucket_order is 0 below 2^40 pages of memory).
 */
import type { Kernel } from './kernel.ts';
import { memcgSwapMargin, type MemCgroup } from './memcontrol.ts';
import type { MappedFile } from './mm_types.ts';
import { PG } from './page.ts';
import {
  ANON,
  FILE,
  LRU_ACTIVE_ANON,
  LRU_ACTIVE_FILE,
  LRU_INACTIVE_ANON,
  LRU_INACTIVE_FILE,
  folioLruvec,
  folioNrPages,
  lruNoteCost,
  parentLruvec,
  type Lruvec,
} from './swap.ts';

/**
 * EVICTION_BITS: the eviction clock kept in a shadow, modulo 2^30 pages (4
 * TiB evicted before it wraps; Linux keeps 40-odd bits and masks the
 * distance the same way). With a 16-bit memory cgroup id, 5 node bits, a tag
 * bit and the workingset bit the shadow packs into 53 bits, a JavaScript number's exact
 * integers (the swap map's Float64Array holds it as is).
 */
export const EVICTION_BITS = 30;
const EVICTION_MASK = 2 ** EVICTION_BITS;
const MEMCG_ID_BITS = 16;
const NODES_BITS = 5;
/** WORKINGSET_SHIFT: the low bit says the page was workingset. */
const WORKINGSET_BIT = 1;

/** pack_shadow: the eviction clock, the memory cgroup id and node of the lruvec, and the workingset bit. Never 0. */
export function packShadow(memcgId: number, nid: number, eviction: number, workingset: boolean): number {
  const ev = eviction % EVICTION_MASK;
  // Bit 1 set in every shadow (xa_mk_value's tag): a shadow of all zeros would read as "no shadow".
  return (((ev * 2 ** MEMCG_ID_BITS + memcgId) * 2 ** NODES_BITS + nid) * 2 + 1) * 2 + (workingset ? WORKINGSET_BIT : 0);
}

/** unpack_shadow. */
export function unpackShadow(shadow: number): { memcgId: number; nid: number; eviction: number; workingset: boolean } {
  const workingset = shadow % 2 === WORKINGSET_BIT;
  let x = Math.floor(shadow / 4);
  const nid = x % 2 ** NODES_BITS;
  x = Math.floor(x / 2 ** NODES_BITS);
  const memcgId = x % 2 ** MEMCG_ID_BITS;
  const eviction = Math.floor(x / 2 ** MEMCG_ID_BITS);
  return { memcgId, nid, eviction, workingset };
}

/** workingset_age_nonresident: the clock of `lv` and each ancestor lruvec advances by nr pages. */
export function workingsetAgeNonresident(k: Kernel, lv: Lruvec, nr: number): void {
  for (let l: Lruvec | undefined = lv; l; l = parentLruvec(k, l)) l.nonresidentAge += nr;
}

/** mem_cgroup_lruvec: a group's lruvec on a node; the node's own for the root (or without groups). */
function memcgLruvec(k: Kernel, memcg: MemCgroup | null | undefined, nid: number): Lruvec {
  return memcg && memcg.parent ? memcg.lruvecs[nid]! : k.nodeLruvec[nid]!;
}

/**
 * workingset_eviction: the shadow a page evicted by reclaim for
 * `targetMemcg` (null: global reclaim, MADV_PAGEOUT) leaves in its slot.
 * The clock read is the target's lruvec on the page's node, which then
 * advances by the folio's pages.
 */
export function workingsetEviction(k: Kernel, head: number, targetMemcg: MemCgroup | null | undefined): number {
  const nid = k.phys.nodeOfPfn(head);
  const lv = memcgLruvec(k, targetMemcg, nid);
  const memcgId = targetMemcg && targetMemcg.parent ? targetMemcg.id : 0;
  const eviction = lv.nonresidentAge;
  workingsetAgeNonresident(k, lv, folioNrPages(k.mem, head));
  return packShadow(memcgId, nid, eviction, (k.mem.flags(head) & PG.workingset) !== 0);
}

/**
 * lruvec_page_state of a list, hierarchical: a group's lruvec counts its
 * descendants' pages on that node, the node's (the root's) every group's.
 */
function lruvecState(k: Kernel, lv: Lruvec, lru: number): number {
  const cg = (lv.memcg as MemCgroup | null) ?? (k.memcg.active ? k.memcg.root : null);
  if (!cg || !cg.children.length) return lv.size(lru);
  let n = 0;
  for (const c of cg.subtree()) n += c.lruvecs[lv.nid]!.size(lru);
  return n;
}

/**
 * The sizes workingset_test_recent weighs a refault distance against, in
 * pages: the active file list; for an anonymous refault the inactive file
 * list too; and, when the group may still swap (mem_cgroup_get_nr_swap_pages
 * > 0), the active anon list, plus the inactive anon list for a file
 * refault. (The lists a refaulting page's own kind would have to push out to
 * stay resident; the anon lists count only when anon can be reclaimed.)
 */
export function workingsetSize(k: Kernel, lv: Lruvec, file: boolean, canSwap: boolean): number {
  let size = lruvecState(k, lv, LRU_ACTIVE_FILE);
  if (!file) size += lruvecState(k, lv, LRU_INACTIVE_FILE);
  if (canSwap) {
    size += lruvecState(k, lv, LRU_ACTIVE_ANON);
    if (file) size += lruvecState(k, lv, LRU_INACTIVE_ANON);
  }
  return size;
}

/** refault_distance: how far the clock moved since eviction, modulo the shadow's clock bits. */
export function refaultDistance(eviction: number, now: number): number {
  return (((now - eviction) % EVICTION_MASK) + EVICTION_MASK) % EVICTION_MASK;
}

/** mem_cgroup_get_nr_swap_pages > 0: a free swap slot, and room under every ancestor's memory.swap.max. */
function memcgCanSwap(k: Kernel, cg: MemCgroup | undefined): boolean {
  return k.swap.nrSwapPages > 0 && memcgSwapMargin(cg ?? null) >= 1;
}

/**
 * workingset_test_recent: whether a page evicted with `shadow` refaults
 * within the workingset (distance <= workingset size), read against the
 * lruvec that evicted it. False when that group is gone (its id no longer
 * names a group: mem_cgroup_tryget fails).
 */
export function workingsetTestRecent(k: Kernel, shadow: number, file: boolean): boolean {
  const { memcgId, nid, eviction } = unpackShadow(shadow);
  const cg = memcgId ? k.memcg.byId[memcgId] : undefined;
  if (memcgId && !cg) return false;
  const lv = memcgLruvec(k, cg, nid);
  if (!lv) return false;
  const distance = refaultDistance(eviction, lv.nonresidentAge);
  return distance <= workingsetSize(k, lv, file, memcgCanSwap(k, cg));
}

/** mod_lruvec_state of a workingset counter: /proc/vmstat and the folio's memory cgroup (memory.stat). */
function countWorkingset(k: Kernel, head: number, what: 'refault' | 'activate' | 'restore', file: boolean, nr: number): void {
  const name = `workingset_${what}_${file ? 'file' : 'anon'}` as const;
  k.vmstat.count(name, nr);
  if (k.memcg.active) {
    const cg = k.memcg.ofFrame(head);
    if (cg.parent) cg.count(name, nr);
  }
  if (what === 'activate') {
    // The lruvec's WORKINGSET_ACTIVATE counters, hierarchical, that prepare_scan_control compares with its snapshot.
    for (let l: Lruvec | undefined = folioLruvec(k, head); l; l = parentLruvec(k, l)) l.workingsetActivate[file ? FILE : ANON] += nr;
  }
}

/**
 * workingset_refault: a folio just read back into a slot that held
 * `shadow`, before it joins its LRU list (charged to its group already).
 * Counts the refault; if it is recent it is made active, the clock of its
 * lruvec advances, and a folio that was workingset is marked so again, its
 * refault noted as reclaim cost of its type.
 */
export function workingsetRefault(k: Kernel, head: number, shadow: number): void {
  if (!shadow) return;
  const m = k.mem;
  const file = (m.flags(head) & PG.fileLru) !== 0;
  const nr = folioNrPages(m, head);
  countWorkingset(k, head, 'refault', file, nr);
  if (!workingsetTestRecent(k, shadow, file)) return;
  m.addFlags(head, PG.active);
  const lv = folioLruvec(k, head);
  workingsetAgeNonresident(k, lv, nr);
  countWorkingset(k, head, 'activate', file, nr);
  if (unpackShadow(shadow).workingset) {
    m.addFlags(head, PG.workingset);
    // lru_note_cost_refault: the refault of a workingset page is I/O reclaim caused.
    lruNoteCost(k, lv, file, nr, 0);
    countWorkingset(k, head, 'restore', file, nr);
  }
}

/**
 * snapshot_refaults: the target's activation counters as reclaim leaves a
 * node (prepare_scan_control sees activations since then as a new
 * workingset forming, and ages the active list of that type).
 */
export function snapshotRefaults(lv: Lruvec): void {
  lv.refaults[ANON] = lv.workingsetActivate[ANON]!;
  lv.refaults[FILE] = lv.workingsetActivate[FILE]!;
}

/** The shadow entries of each file's page cache, by index (the xarray slots a reclaimed page left). */
const fileShadows = new WeakMap<MappedFile, Map<number, number>>();

/** __filemap_remove_folio via __remove_mapping: the page leaves the page cache, its slot keeps `shadow`. */
export function pageCacheDelete(file: MappedFile, idx: number, shadow: number): void {
  file.pages.delete(idx);
  let map = fileShadows.get(file);
  if (!map) fileShadows.set(file, (map = new Map()));
  map.set(idx, shadow);
}

/** The shadow a page-cache slot holds (taken out: a page is about to be added there), 0 if none. */
export function takePageCacheShadow(file: MappedFile, idx: number): number {
  const map = fileShadows.get(file);
  const shadow = map?.get(idx);
  if (shadow === undefined) return 0;
  map!.delete(idx);
  return shadow;
}

/** truncate_inode_pages_range's shadow half: the slots from `first` on forget their shadows. */
export function dropPageCacheShadows(file: MappedFile, first: number): void {
  const map = fileShadows.get(file);
  if (map) for (const idx of [...map.keys()]) if (idx >= first) map.delete(idx);
}
