/**
 * Shared memory files (mm/shmem.c, mm/memfd.c, fs/hugetlbfs): memfd_create,
 * a file's size (ftruncate), and the shared memory policy of a shmem file
 * (shmem_set_policy / shmem_get_policy: mbind on a shmem mapping sets the
 * policy of the file's pages, which every process mapping them follows).
 *
 * The page cache of a shmem file is its MappedFile's `pages`; faults in it
 * are filemap.ts's (shmem_fault allocates a zeroed page where the file has
 * none). A hugetlb memfd is a hugetlbfs file: its pages and reservations
 * are memory.ts's and hugetlb.ts's, as for MAP_HUGETLB mappings.
 */
import type { Kernel } from './kernel.ts';
import type { Process } from './sched.ts';
import type { MappedFile, Vma } from './mm_types.ts';
import type { Mempolicy } from './mempolicy.ts';
import { MFD, MFD_HUGE_MASK, MFD_HUGE_SHIFT, PAGE_SIZE, neg, type SysRet } from './uapi.ts';
import { zapRange } from './memory.ts';

/** MFD_NAME_MAX_LEN: NAME_MAX minus strlen("memfd:"). */
export const MFD_NAME_MAX_LEN = 255 - 'memfd:'.length;
const MFD_ALL_FLAGS = MFD.MFD_CLOEXEC | MFD.MFD_ALLOW_SEALING | MFD.MFD_HUGETLB | MFD.MFD_NOEXEC_SEAL | MFD.MFD_EXEC;

/**
 * memfd_create(name, flags): a new shmem file, or a hugetlbfs file with
 * MFD_HUGETLB (of the default huge page size, or the one encoded in the
 * flags), of size 0. Returns the file, or -EINVAL for bad flags or a name
 * too long, -ENODEV for a huge page size the host does not have.
 */
export function sysMemfdCreate(k: Kernel, _p: Process, name: string, flags: number): MappedFile | number {
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
  return file;
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
