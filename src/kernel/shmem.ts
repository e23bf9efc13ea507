/**
 * Shared memory files (mm/shmem.c, mm/memfd.c, fs/hugetlbfs): memfd_create,
 * a file's size (ftruncate), and the shared memory policy of a shmem file
 * (shmem_set_policy / shmem_get_policy: mbind on a shmem mapping sets the
 * policy of the file's pages, which every process mapping them follows).
 *
 * The page cache of a shmem file is its MappedFile's `pages`; faults in it
 * are filemap.ts's (shmem_fault allocates a zeroed page where the file has
 * none). shmem pages are swap-backed: they live on the anon LRU lists, and
 * reclaim writes them to swap (shmemWriteout), leaving the swap entry in
 * the file where the page was (shmemSwapped); a fault there reads it back
 * (shmemSwapin). A hugetlb memfd is a hugetlbfs file: its pages and reservations
 * are memory.ts's and hugetlb.ts's, as for MAP_HUGETLB mappings.
 */
import type { Kernel } from './kernel.ts';
import type { Process } from './sched.ts';
import type { MappedFile, Vma } from './mm_types.ts';
import type { Mempolicy } from './mempolicy.ts';
import { MFD, MFD_HUGE_MASK, MFD_HUGE_SHIFT, PAGE_SIZE, neg, type SysRet } from './uapi.ts';
import { zapRange } from './memory.ts';
import { PG } from './page.ts';
import {
  OWNER_SWAPCACHE,
  shmemSwapCacheHit,
  shmemSwapinCluster,
  swapCacheAddFolio,
  swapCacheDelFolio,
  swapCacheGetFolio,
} from './swap_state.ts';
import { memcgSwapMargin, memcgTryChargeSwap } from './memcontrol.ts';
import { dropPageCacheShadows } from './workingset.ts';

/** MFD_NAME_MAX_LEN: NAME_MAX minus strlen("memfd:"). */
export const MFD_NAME_MAX_LEN = 255 - 'memfd:'.length;
const MFD_ALL_FLAGS = MFD.MFD_CLOEXEC | MFD.MFD_ALLOW_SEALING | MFD.MFD_HUGETLB | MFD.MFD_NOEXEC_SEAL | MFD.MFD_EXEC;

/**
 * memfd_create(name, flags): a new shmem file, or a hugetlbfs file with
 * MFD_HUGETLB (of the default huge page size, or the one encoded in the
 * flags), of size 0. Returns the file, or -EINVAL for bad flags or a name
 * too long, -ENODEV for a huge page size the host does not have.
 */
export function sysMemfdCreate(k: Kernel, p: Process, name: string, flags: number): MappedFile | number {
  // sanitize_flags
  const allowed = flags & MFD.MFD_HUGETLB ? MFD_ALL_FLAGS | (MFD_HUGE_MASK << MFD_HUGE_SHIFT) : MFD_ALL_FLAGS;
  if (flags & ~allowed) return neg('EINVAL');
  if (flags & MFD.MFD_EXEC && flags & MFD.MFD_NOEXEC_SEAL) return neg('EINVAL');
  if (Buffer.byteLength(name) > MFD_NAME_MAX_LEN) return neg('EINVAL');
  let file: MappedFile;
  if (flags & MFD.MFD_HUGETLB) {
    const log = (flags >>> MFD_HUGE_SHIFT) & MFD_HUGE_MASK;
    const h = log === 0 ? k.hugetlb.defaultHstate : k.hugetlb.byShift(log);
    if (!h) return neg('ENODEV'); // hugetlb_file_setup: get_hstate_idx < 0
    file = k.newFile('hugetlbfs');
    file.hugeShift = h.shift;
  } else file = k.newFile('shmem');
  file.size = 0;
  file.name = `memfd:${name}`;
  file.opens = 1;
  p.files.push(file);
  return file;
}

/**
 * fput of a descriptor's reference: the last one to an unlinked file (a
 * memfd) that no VMA maps any more frees it (shmem_evict_inode: its pages
 * uncharged and freed, its swap slots freed; a hugetlbfs file's huge pages
 * and reservations given back). A file `open` made stays: it is linked in
 * its directory, and its count here stands for the link too.
 */
export function fput(k: Kernel, f: MappedFile): void {
  if (!f.name?.startsWith('memfd:')) return;
  if (--f.opens > 0 || f.mapCount > 0) return;
  evictInode(k, f);
}

/**
 * The last reference to an anonymous shmem or hugetlbfs file is gone (its
 * last mapping, or its last open descriptor): shmem_evict_inode /
 * hugetlbfs_evict_inode free its pages, its swap slots and its reservation.
 */
export function evictInode(k: Kernel, f: MappedFile): void {
  if (f.kind === 'hugetlbfs') {
    const h = k.hugetlb.byShift(f.hugeShift)!;
    for (const pfn of f.pages.values()) k.hugetlb.freeHugePage(h, pfn, false);
    k.hugetlb.unreserve(h, f.reserved.size);
  } else {
    for (const pfn of f.pages.values()) k.freeUserPages(pfn, 0);
    shmemFreeSwap(k, f, 0); // and the slots of its swapped pages
  }
  f.pages.clear();
  f.reserved.clear();
  k.files.delete(f.id);
}

/** exit_files: a process that exits (or is killed) closes every descriptor it holds. */
export function exitFiles(k: Kernel, p: Process): void {
  for (const f of p.files.splice(0)) fput(k, f);
}

/**
 * ftruncate(fd, size) of a memfd or an opened tmpfs/disk file: a hugetlbfs
 * file takes only multiples of its page size (-EINVAL). Shrinking unmaps
 * the pages beyond the new end from every mapping and drops them
 * (truncate_pagecache; a hugetlbfs file gives back their reservations).
 */
export function sysFtruncate(k: Kernel, file: MappedFile, size: number): SysRet {
  if (size < 0 || size > Number.MAX_SAFE_INTEGER) return neg('EINVAL');
  const psize = file.kind === 'hugetlbfs' ? 2 ** file.hugeShift : PAGE_SIZE;
  if (file.kind === 'hugetlbfs' && size % psize) return neg('EINVAL');
  const old = file.size ?? 0;
  file.size = size;
  if (size >= old) return 0;
  const first = Math.ceil(size / psize);
  // unmap_mapping_range from the new end on, in every process, then drop the pages (and reservations) there.
  for (const p of k.processes.values())
    for (const v of p.mm.vmas) {
      if (v.file !== file) continue;
      const s = Math.max(v.start, v.start + first * psize - v.pgoff * PAGE_SIZE);
      if (s < v.end) zapRange(k, p.mm, v, s, v.end, false, 0);
    }
  shmemFreeSwap(k, file, first);
  dropPageCacheShadows(file, first);
  for (const [idx, pfn] of [...file.pages]) {
    if (idx < first) continue;
    file.pages.delete(idx);
    if (file.kind === 'hugetlbfs') k.hugetlb.freeHugePage(k.hugetlb.byShift(file.hugeShift)!, pfn, false);
    else k.freeUserPages(pfn, 0);
  }
  if (file.kind === 'hugetlbfs') {
    let n = 0;
    for (const idx of [...file.reserved])
      if (idx >= first) {
        file.reserved.delete(idx);
        n++;
      }
    k.hugetlb.unreserve(k.hugetlb.byShift(file.hugeShift)!, n);
  }
  return 0;
}

/** mpol_shared_policy_lookup: the shared policy of file page idx, or null. */
export function sharedPolicyLookup(file: MappedFile, idx: number): Mempolicy | null {
  for (const r of file.policy) if (idx >= r.start && idx < r.end) return r.pol;
  return null;
}

/**
 * shmem_set_policy → mpol_set_shared_policy: the file pages [start, end)
 * take `pol` (null: the range has no shared policy any more).
 */
export function shmemSetPolicy(file: MappedFile, start: number, end: number, pol: Mempolicy | null): void {
  const out: MappedFile['policy'] = [];
  for (const r of file.policy) {
    if (r.end <= start || r.start >= end) out.push(r);
    else {
      if (r.start < start) out.push({ start: r.start, end: start, pol: r.pol });
      if (r.end > end) out.push({ start: end, end: r.end, pol: r.pol });
    }
  }
  if (pol) out.push({ start, end, pol });
  out.sort((a, b) => a.start - b.start);
  file.policy.splice(0, file.policy.length, ...out);
}

/** Whether a VMA's policy is its shmem file's (vm_ops->get_policy is shmem_get_policy). */
export function vmaHasSharedPolicy(vma: Vma): boolean {
  return vma.file?.kind === 'shmem';
}

/**
 * __get_vma_policy: the policy of the VMA at va: a shmem mapping's is its
 * file's shared policy at that page (its own vm_policy is not consulted);
 * any other VMA's is vm_policy. null: fall back to the task policy.
 */
export function vmaPolicy(vma: Vma, va: number): Mempolicy | null {
  if (!vmaHasSharedPolicy(vma)) return vma.policy;
  return sharedPolicyLookup(vma.file!, vma.pgoff + Math.floor((va - vma.start) / PAGE_SIZE));
}

/**
 * vma_replace_policy's vm_ops->set_policy for a VMA whose policy mbind
 * changes: a shmem mapping sets its file's shared policy over the pages
 * the VMA maps.
 */
export function vmaSetSharedPolicy(vma: Vma, pol: Mempolicy | null): void {
  if (vmaHasSharedPolicy(vma)) shmemSetPolicy(vma.file!, vma.pgoff, vma.pgoff + vma.size / PAGE_SIZE, pol);
}

// --- swap ------------------------------------------------------------------------

/** The swap entries shmem keeps in a file's page cache where reclaim took pages out (index -> entry). */
const swappedOf = new WeakMap<MappedFile, Map<number, number>>();

/** The swap entries of a shmem file's swapped pages, by page index (none: undefined). */
export function shmemSwapped(file: MappedFile): ReadonlyMap<number, number> | undefined {
  return swappedOf.get(file);
}

/**
 * shmem_writeout, for a shmem folio reclaim has unmapped: a swap slot
 * (folio_alloc_swap, charged to the folio's group: false when there is none
 * or the group is at memory.swap.max, and the folio stays), the folio moves
 * from the file's page cache to the swap cache, the file keeps the entry in
 * its place (swap_shmem_alloc: the slot's one reference), and the folio is
 * dirty for the caller's pageout to write.
 */
export function shmemWriteout(k: Kernel, pfn: number): boolean {
  const m = k.mem;
  const file = k.files.get(m.owner(pfn));
  if (!file || file.kind !== 'shmem') return false;
  if (k.memcg.active && memcgSwapMargin(k.memcg.ofFrame(pfn)) < 1) return false;
  const entry = k.swap.allocSwapEntry(0);
  if (entry < 0) return false;
  memcgTryChargeSwap(k, pfn, entry);
  const idx = m.index(pfn);
  swapCacheAddFolio(k, pfn, entry, 1);
  k.swap.dup(entry);
  // shmem_delete_from_page_cache: the page is the swap cache's now (no longer Shmem).
  file.pages.delete(idx);
  let map = swappedOf.get(file);
  if (!map) swappedOf.set(file, (map = new Map()));
  map.set(idx, entry);
  m.setOwner(pfn, OWNER_SWAPCACHE);
  m.setFlags(pfn, (m.flags(pfn) & ~PG.shmem) | PG.dirty);
  return true;
}

/**
 * shmem_swapin_folio: the page at idx of a shmem file whose entry is
 * `entry`: from the swap cache, or read into a new page on node `nid`
 * (charged to the group the entry was charged to) with swap_cluster_readahead
 * of its vm.page-cluster window of slots (shmem_swapin_cluster). It leaves
 * the swap cache and frees its slot (shmem keeps no swap copy of a page it
 * holds), and is the file's page again, dirty. The frame (-1 without
 * memory) and the time the fault waits.
 */
export function shmemSwapin(k: Kernel, file: MappedFile, idx: number, entry: number, nid: number): { pfn: number; ns: number } {
  const m = k.mem;
  let ns: number;
  let pfn = swapCacheGetFolio(k, entry);
  if (pfn >= 0) {
    shmemSwapCacheHit(k, pfn);
    ns = k.costs.nsOf('swapin_swapcache_4k', 'a fault on a page in the swap cache');
  } else {
    // shmem_swapin_cluster: the page and its vm.page-cluster window around its slot.
    const r = shmemSwapinCluster(k, entry, nid);
    if (r.pfn < 0) return { pfn: -1, ns: 0 };
    pfn = r.pfn;
    ns = r.ns;
    k.vmstat.count('pgmajfault');
  }
  // swap_free_nr of the file's reference, then delete_from_swap_cache frees the slot.
  const s = k.swap.slot(entry);
  if (s.t.count[s.i]! > 0) s.t.count[s.i]!--;
  swapCacheDelFolio(k, pfn, 0);
  swappedOf.get(file)!.delete(idx);
  m.setOwner(pfn, file.id);
  m.setIndex(pfn, idx);
  m.setFlags(pfn, (m.flags(pfn) & ~(PG.readahead | PG.anon)) | PG.shmem | PG.dirty);
  file.pages.set(idx, pfn);
  return { pfn, ns };
}

/**
 * shmem_undo_range's swap half: the swap entries of the file's pages from
 * index `first` on are freed (free_swap_and_cache), with a swap cache page
 * no one maps.
 */
export function shmemFreeSwap(k: Kernel, file: MappedFile, first: number): void {
  const map = swappedOf.get(file);
  if (!map) return;
  for (const [idx, entry] of [...map]) {
    if (idx < first) continue;
    map.delete(idx);
    const s = k.swap.slot(entry);
    if (s.t.count[s.i]! > 0) s.t.count[s.i]!--;
    const pfn = swapCacheGetFolio(k, entry);
    if (pfn >= 0 && k.mem.mapcount(pfn) === 0)
      k.freeUserPages(pfn, 0); // leaves the cache and frees the slot
    else k.swap.maybeFree(entry);
  }
}
