/**
 * The LRU lists (mm/swap.c, include/linux/mm_inline.h, include/linux/mmzone.h):
 * every user folio that reclaim may take lives on one of four lists of its
 * lruvec: inactive and active anon, inactive and active file. This is the
 * classic two-list LRU; the multi-generational LRU (CONFIG_LRU_GEN) is not
 * modelled, as this machine's 6.18 kernel is built without it
 * (/sys/kernel/mm/lru_gen does not exist).
 *
 * A node has one lruvec of its own (pglist_data's __lruvec, the root memory
 * cgroup's); a memory cgroup may own one per node (Lruvec is a separate
 * object for that reason) and tell the kernel which lruvec a page belongs
 * to through `k.lruvecOf`. A folio is linked through its head page's
 * struct page lru list_head (MemMap.next/prev, the same links free buddy
 * blocks use: a page is never on both). Lists are kept in pages, as
 * lruvec->lists sizes are (NR_INACTIVE_ANON ...).
 *
 * New folios go to the head of their inactive list (folio_add_lru; since
 * Linux 5.9 anonymous pages start inactive too); reclaim takes from the
 * tail. The per-CPU folio batches that delay these moves in Linux
 * (lru_add, lru_activate, ...) are not modelled: a move happens at once.
 * Private anonymous, shmem and swap cache folios are on the anon lists,
 * disk files' page cache on the file lists (filemap.ts).
 */
import type { Kernel } from './kernel.ts';
import { PAGES_PER_SECTION, PG, SECTION_MASK, SECTION_SHIFT, type MemMap } from './page.ts';

/** enum lru_list. */
export const LRU_INACTIVE_ANON = 0;
export const LRU_ACTIVE_ANON = 1;
export const LRU_INACTIVE_FILE = 2;
export const LRU_ACTIVE_FILE = 3;
export const NR_LRU_LISTS = 4;
export const LRU_NAMES = ['inactive_anon', 'active_anon', 'inactive_file', 'active_file'] as const;

/** enum lruvec_flags / the anon/file index of lruvec arrays (WORKINGSET_ANON = 0, WORKINGSET_FILE = 1). */
export const ANON = 0;
export const FILE = 1;

/** folio_lru_list: the list a folio with these flags belongs on. */
export function lruListOf(flags: number): number {
  return (flags & PG.fileLru ? LRU_INACTIVE_FILE : LRU_INACTIVE_ANON) + (flags & PG.active ? 1 : 0);
}

/** folio_nr_pages from the head page's flags and order. */
export function folioNrPages(m: MemMap, head: number): number {
  return m.flags(head) & PG.head ? 1 << m.order(head) : 1;
}

/**
 * struct lruvec: the four lists of one node (and one memory cgroup), with
 * the reclaim cost balance (anon_cost, file_cost: lru_note_cost), the
 * refault snapshot prepare_scan_control compares against, and the
 * workingset clock (nonresident_age).
 */
export class Lruvec {
  /** List heads (most recently added) and tails (next to be scanned), -1 = empty. */
  readonly head = new Int32Array(NR_LRU_LISTS).fill(-1);
  readonly tail = new Int32Array(NR_LRU_LISTS).fill(-1);
  /** Pages on each list (lruvec_page_state NR_LRU_BASE + lru). */
  readonly nrPages = new Float64Array(NR_LRU_LISTS);
  /** Folios on each list. */
  readonly nrFolios = new Float64Array(NR_LRU_LISTS);
  /** lruvec->anon_cost, file_cost (lru_note_cost). */
  anonCost = 0;
  fileCost = 0;
  /** lruvec->nonresident_age: the workingset clock (workingset.ts), in pages evicted and activated. */
  nonresidentAge = 0;
  /** WORKINGSET_ACTIVATE_ANON/_FILE of this lruvec, hierarchical (a group's counts its descendants'). */
  readonly workingsetActivate = [0, 0];
  /** lruvec->refaults: those counters as reclaim last left the node (snapshot_refaults). */
  readonly refaults = [0, 0];
  /** LRUVEC_NODE_CONGESTED / LRUVEC_CGROUP_CONGESTED are not modelled (no writeback congestion). */

  constructor(
    /** The node whose pages this lruvec holds. */
    readonly nid: number,
    /** The memory cgroup owning it; null for a node's own lruvec (the root's). */
    readonly memcg: unknown = null,
  ) {}

  /** lruvec_lru_size over the whole node. */
  size(lru: number): number {
    return this.nrPages[lru]!;
  }

  /** Every page on the four lists. */
  total(): number {
    const n = this.nrPages;
    return n[0]! + n[1]! + n[2]! + n[3]!;
  }
}

/** The lruvec a folio belongs to (folio_lruvec): its memory cgroup's on its node, else the node's. */
export function folioLruvec(k: Kernel, head: number): Lruvec {
  const nid = k.phys.nodeOfPfn(head);
  return k.lruvecOf?.(head, nid) ?? k.nodeLruvec[nid]!;
}

/** lruvec_add_folio: link the folio at the head of its list. */
export function lruvecAddFolio(m: MemMap, lv: Lruvec, head: number, nr: number, lru: number): void {
  const h = lv.head[lru]!;
  m.setPrev(head, -1);
  m.setNext(head, h);
  if (h >= 0) m.setPrev(h, head);
  else lv.tail[lru] = head;
  lv.head[lru] = head;
  lv.nrPages[lru]! += nr;
  lv.nrFolios[lru]!++;
}

/** lruvec_add_folio_tail: link the folio at the tail of its list (the next to be scanned). */
export function lruvecAddFolioTail(m: MemMap, lv: Lruvec, head: number, nr: number, lru: number): void {
  const t = lv.tail[lru]!;
  m.setNext(head, -1);
  m.setPrev(head, t);
  if (t >= 0) m.setNext(t, head);
  else lv.head[lru] = head;
  lv.tail[lru] = head;
  lv.nrPages[lru]! += nr;
  lv.nrFolios[lru]!++;
}

/** lruvec_del_folio: unlink the folio from list `lru`. */
export function lruvecDelFolio(m: MemMap, lv: Lruvec, head: number, nr: number, lru: number): void {
  const p = m.prev(head);
  const n = m.next(head);
  if (p >= 0) m.setNext(p, n);
  else lv.head[lru] = n;
  if (n >= 0) m.setPrev(n, p);
  else lv.tail[lru] = p;
  m.setNext(head, -1);
  m.setPrev(head, -1);
  lv.nrPages[lru]! -= nr;
  lv.nrFolios[lru]!--;
}

/**
 * folio_add_lru: put a folio that is on no list on its lruvec's list for
 * its flags (inactive unless PG_active), setting PG_lru.
 */
export function folioAddLru(k: Kernel, head: number): void {
  const m = k.mem;
  const f = m.flags(head);
  if (f & PG.lru) throw new Error(`folioAddLru: frame ${head} is already on an LRU list`);
  m.setFlags(head, f | PG.lru);
  lruvecAddFolio(m, folioLruvec(k, head), head, folioNrPages(m, head), lruListOf(f));
}

/**
 * A new order-0 anonymous page (the fault path's hot case), allocated with
 * callerPreps: every field post_alloc_hook would reset and the anonymous
 * page's owner, index, flags and mapcount (initAnonPage) set, then
 * folio_add_lru, in one pass over the frame's section.
 */
export function lruAddNewAnon(k: Kernel, pfn: number, owner: number, index: number, newFlags: number): void {
  const s = k.mem.sec(pfn);
  const i = pfn & SECTION_MASK;
  s.flags[i] = (newFlags & ~PG.fileLru) | PG.lru;
  s.order[i] = 0;
  s.mapcount[i] = 1;
  if (s.entireMapcount) s.entireMapcount[i] = 0;
  s.setOwnerAt(i, owner);
  s.setIndexAt(i, index);
  s.token[i] = 0;
  if (s.lastCpupid) s.lastCpupid[i] = -1;
  const lv = k.lruvecOf === undefined ? k.nodeLruvec[k.phys.nodeOfPfn(pfn)]! : folioLruvec(k, pfn);
  const lru = newFlags & PG.active ? LRU_ACTIVE_ANON : LRU_INACTIVE_ANON;
  const h = lv.head[lru]!;
  s.setLinksAt(i, h, -1);
  // The old head is usually in the same section (frames are handed out in order).
  if (h >= 0) {
    if (h >>> SECTION_SHIFT === pfn >>> SECTION_SHIFT) s.setPrevAt(h & SECTION_MASK, pfn);
    else k.mem.setPrev(h, pfn);
  } else lv.tail[lru] = pfn;
  lv.head[lru] = pfn;
  lv.nrPages[lru]!++;
  lv.nrFolios[lru]!++;
}

/**
 * lruAddNewAnon for frames[0..n) in that order, the page at frames[j]
 * getting index vpn0 + j: the same metadata and list as n calls. Where
 * frames follow each other in one section (as a bulk allocation hands them
 * out), their columns are filled at once and each frame's links written
 * once with their final values (the run's pages end linked to their
 * neighbours in the run, the first to the old head).
 */
export function lruAddNewAnonRun(k: Kernel, frames: Int32Array, n: number, owner: number, vpn0: number, newFlags: number): void {
  let j = 0;
  while (j < n) {
    const pfn = frames[j]!;
    let m = 1;
    const room = PAGES_PER_SECTION - (pfn & SECTION_MASK);
    while (j + m < n && m < room && frames[j + m] === pfn + m) m++;
    if (m < 4 || k.lruvecOf !== undefined) {
      for (const end = j + m; j < end; j++) lruAddNewAnon(k, frames[j]!, owner, vpn0 + j, newFlags);
      continue;
    }
    const s = k.mem.sec(pfn);
    const lo = pfn & SECTION_MASK;
    const hi = lo + m;
    s.flags.fill((newFlags & ~PG.fileLru) | PG.lru, lo, hi);
    s.order.fill(0, lo, hi);
    s.mapcount.fill(1, lo, hi);
    s.entireMapcount?.fill(0, lo, hi);
    s.fillOwner(owner, lo, hi);
    for (let i = lo, v = vpn0 + j; i < hi; i++, v++) s.setIndexAt(i, v);
    s.token.fill(0, lo, hi);
    s.lastCpupid?.fill(-1, lo, hi);
    const lv = k.nodeLruvec[k.phys.nodeOfPfn(pfn)]!;
    const lru = newFlags & PG.active ? LRU_ACTIVE_ANON : LRU_INACTIVE_ANON;
    const h = lv.head[lru]!;
    s.setLinksAt(lo, h, pfn + 1);
    if (h >= 0) {
      if (h >>> SECTION_SHIFT === pfn >>> SECTION_SHIFT) s.setPrevAt(h & SECTION_MASK, pfn);
      else k.mem.setPrev(h, pfn);
    } else lv.tail[lru] = pfn;
    for (let i = lo + 1; i < hi; i++) s.setLinksAt(i, s.base + i - 1, i < hi - 1 ? s.base + i + 1 : -1);
    lv.head[lru] = pfn + m - 1;
    lv.nrPages[lru]! += m;
    lv.nrFolios[lru]! += m;
    j += m;
  }
}

/** lruDel of an order-0 page (the free path's hot case), the links read and written in place. */
export function lruDelPage(k: Kernel, pfn: number): void {
  const m = k.mem;
  const s = m.sec(pfn);
  const i = pfn & SECTION_MASK;
  const f = s.flags[i]!;
  const lv = k.lruvecOf ? folioLruvec(k, pfn) : k.nodeLruvec[k.phys.nodeOfPfn(pfn)]!;
  const lru = lruListOf(f);
  const p = s.prevAt(i);
  const n = s.nextAt(i);
  if (p >= 0) m.setNext(p, n);
  else lv.head[lru] = n;
  if (n >= 0) m.setPrev(n, p);
  else lv.tail[lru] = p;
  s.setLinksAt(i, -1, -1);
  s.flags[i] = f & ~PG.lru;
  lv.nrPages[lru]!--;
  lv.nrFolios[lru]!--;
}

/**
 * The page cache's entry point (filemap.ts, shmem.ts): put a new folio on
 * the file LRU (`file`: folio_is_file_lru, a page cache page not backed by
 * swap) or the anon LRU (anonymous and shmem pages), inactive.
 */
export function lruAdd(k: Kernel, head: number, file: boolean): void {
  const m = k.mem;
  if (file) m.addFlags(head, PG.fileLru);
  else m.clearFlags(head, PG.fileLru);
  folioAddLru(k, head);
}

/** Take a folio off its LRU list (folio_isolate_lru without keeping it isolated, or as it is freed). */
export function lruDel(k: Kernel, head: number): void {
  const m = k.mem;
  const f = m.flags(head);
  if (!(f & PG.lru)) return;
  lruvecDelFolio(m, folioLruvec(k, head), head, folioNrPages(m, head), lruListOf(f));
  m.setFlags(head, f & ~PG.lru);
}

/**
 * folio_isolate_lru: take the folio off its list and clear PG_lru (the
 * caller owns it until it puts it back with folioPutbackLru). False if it
 * was on no list.
 */
export function folioIsolateLru(k: Kernel, head: number): boolean {
  if (!(k.mem.flags(head) & PG.lru)) return false;
  lruDel(k, head);
  return true;
}

/** folio_putback_lru. */
export function folioPutbackLru(k: Kernel, head: number): void {
  folioAddLru(k, head);
}

/**
 * A folio's frame is replaced by another (migration, compaction): the new
 * frame takes the old one's place on the same list, so the LRU order is
 * kept. Both heads must already carry the same flags.
 */
export function lruReplace(k: Kernel, oldHead: number, newHead: number): void {
  const m = k.mem;
  const f = m.flags(oldHead);
  if (!(f & PG.lru)) return;
  const lvOld = folioLruvec(k, oldHead);
  const lvNew = folioLruvec(k, newHead);
  const lru = lruListOf(f);
  const nr = folioNrPages(m, oldHead);
  if (lvOld !== lvNew) {
    // Another node's lruvec: the folio joins it at the head (migrate_pages puts the new folio back there).
    lruvecDelFolio(m, lvOld, oldHead, nr, lru);
    m.clearFlags(oldHead, PG.lru);
    m.setFlags(newHead, m.flags(newHead) | PG.lru);
    lruvecAddFolio(m, lvNew, newHead, nr, lru);
    return;
  }
  const p = m.prev(oldHead);
  const n = m.next(oldHead);
  m.setPrev(newHead, p);
  m.setNext(newHead, n);
  if (p >= 0) m.setNext(p, newHead);
  else lvOld.head[lru] = newHead;
  if (n >= 0) m.setPrev(n, newHead);
  else lvOld.tail[lru] = newHead;
  m.setNext(oldHead, -1);
  m.setPrev(oldHead, -1);
  m.clearFlags(oldHead, PG.lru);
  m.addFlags(newHead, PG.lru);
}

/**
 * lru_add_split_folio: the pages of a folio just split into order-0 pages
 * join the list right behind the head (list_add_tail on the head's links),
 * with the head's LRU flags. `pages` are the subpages that stay (the head
 * first), all already order 0.
 */
export function lruSplitFolio(k: Kernel, head: number, oldNr: number, tails: readonly number[]): void {
  const m = k.mem;
  const f = m.flags(head);
  if (!(f & PG.lru)) return;
  const lv = folioLruvec(k, head);
  const lru = lruListOf(f);
  // The head's entry now counts one page; each tail is a folio of its own.
  lv.nrPages[lru]! -= oldNr - 1;
  const carry = f & (PG.lru | PG.active | PG.referenced | PG.workingset | PG.fileLru | PG.young | PG.dirty);
  let prev = head;
  for (const t of tails) {
    m.setFlags(t, (m.flags(t) & ~(PG.lru | PG.active | PG.referenced | PG.workingset | PG.fileLru)) | carry);
    // list_add_tail(&tail->lru, &head->lru) for each in turn: they end up between the head and its old successor,
    // the last split-off page nearest the head's successor.
    const n = m.next(prev);
    m.setPrev(t, prev);
    m.setNext(t, n);
    m.setNext(prev, t);
    if (n >= 0) m.setPrev(n, t);
    else lv.tail[lru] = t;
    prev = t;
    lv.nrPages[lru]!++;
    lv.nrFolios[lru]!++;
  }
}

/**
 * lru_note_cost: the cost of reclaiming from one type of list, in pages
 * (nr_io * SWAP_CLUSTER_MAX + nr_rotated: I/O weighs more than a
 * rotation), which get_scan_count weighs against the other type. Noted in
 * the lruvec and each ancestor's (a group's parent's on the same node, up
 * to the node's own), each halving both costs once their sum exceeds a
 * quarter of its lists (its descendants' pages counted), as Linux decays
 * them.
 */
export function lruNoteCost(k: Kernel, lv: Lruvec, file: boolean, nrIo: number, nrRotated: number): void {
  const cost = nrIo * 32 + nrRotated;
  if (!cost) return;
  for (let l: Lruvec | undefined = lv; l; l = parentLruvec(k, l)) {
    if (file) l.fileCost += cost;
    else l.anonCost += cost;
    if (l.anonCost + l.fileCost > Math.floor(hierarchicalTotal(k, l) / 4)) {
      l.anonCost = Math.floor(l.anonCost / 2);
      l.fileCost = Math.floor(l.fileCost / 2);
    }
  }
}

/** The structural view of a memory cgroup swap.ts needs (memcontrol.ts imports this file). */
interface CgroupLike {
  parent: CgroupLike | null;
  readonly children: readonly CgroupLike[];
  readonly lruvecs: Lruvec[];
  subtree(): CgroupLike[];
}

/** parent_lruvec: the parent group's lruvec on the same node; none above the node's own. */
export function parentLruvec(k: Kernel, lv: Lruvec): Lruvec | undefined {
  const cg = lv.memcg as CgroupLike | null;
  if (!cg?.parent) return undefined;
  return cg.parent.parent ? cg.parent.lruvecs[lv.nid] : k.nodeLruvec[lv.nid];
}

/** Pages on the four lists of `lv` and, for a group's (or the node's, the root's), its descendants' on that node. */
function hierarchicalTotal(k: Kernel, lv: Lruvec): number {
  const cg = (lv.memcg as CgroupLike | null) ?? (k.memcg.active ? (k.memcg.root as CgroupLike) : null);
  if (!cg || !cg.children.length) return lv.total();
  let n = 0;
  for (const c of cg.subtree()) n += c.lruvecs[lv.nid]!.total();
  return n;
}

/**
 * folio_activate: move an inactive folio on an LRU list to the head of the
 * active list (mark_page_accessed's second reference, a refault). Counts
 * pgactivate.
 */
export function folioActivate(k: Kernel, head: number): void {
  const m = k.mem;
  const f = m.flags(head);
  if (!(f & PG.lru) || f & PG.active) return;
  const lv = folioLruvec(k, head);
  const nr = folioNrPages(m, head);
  lruvecDelFolio(m, lv, head, nr, lruListOf(f));
  m.setFlags(head, f | PG.active);
  lruvecAddFolio(m, lv, head, nr, lruListOf(f | PG.active));
  k.vmstat.count('pgactivate', nr);
}

/**
 * folio_deactivate (lru_deactivate, MADV_COLD): an active folio goes to the
 * head of the inactive list, referenced bit cleared. Counts pgdeactivate.
 */
export function folioDeactivate(k: Kernel, head: number): void {
  const m = k.mem;
  const f = m.flags(head);
  if (!(f & PG.lru) || !(f & PG.active)) return;
  const lv = folioLruvec(k, head);
  const nr = folioNrPages(m, head);
  lruvecDelFolio(m, lv, head, nr, lruListOf(f));
  const nf = f & ~(PG.active | PG.referenced);
  m.setFlags(head, nf);
  lruvecAddFolio(m, lv, head, nr, lruListOf(nf));
  k.vmstat.count('pgdeactivate', nr);
}

/** folio_rotate_reclaimable: a folio written back with PG_reclaim moves to the tail of its inactive list. */
export function folioRotateReclaimable(k: Kernel, head: number): void {
  const m = k.mem;
  const f = m.flags(head);
  if (!(f & PG.lru) || f & PG.active) return;
  const lv = folioLruvec(k, head);
  const nr = folioNrPages(m, head);
  const lru = lruListOf(f);
  lruvecDelFolio(m, lv, head, nr, lru);
  lruvecAddFolioTail(m, lv, head, nr, lru);
  k.vmstat.count('pgrotated', nr);
}
