/**
 * Address-space layout (mm/mmap.c, mm/vma.c, mm/mprotect.c): the top-down
 * unmapped-area search (with THP alignment of PMD-multiple anonymous
 * mappings and hugetlb alignment), mmap/munmap/mprotect, and VMA split and
 * merge with Linux's compatibility rules.
 */
import type { Kernel } from './kernel.ts';
import type { Process, Thread } from './sched.ts';
import { MMAP_LOWEST, MmStruct, PageTable, PteTable, Vma, VM, vmStartGap, type HugetlbResvMap } from './mm_types.ts';
import {
  MAP,
  MAP_HUGE_MASK,
  MAP_HUGE_SHIFT,
  MAP_TYPE,
  MMAP_MIN_ADDR,
  PAGE_SIZE,
  PMD_SIZE,
  PROT,
  TASK_SIZE,
  UFFD_FEATURE,
  alignDown,
  alignUp,
  isAligned,
  neg,
  type SysRet,
} from './uapi.ts';
import { freePteTable, zapRange, handleMmFault, followPage, vmaAllows, FAULT_OK, writeFaults } from './memory.ts';
import { clearMarkers, clearUffdWp, type UserfaultfdCtx } from './userfaultfd.ts';
import { splitHugePmd } from './huge_memory.ts';
import { HugeLeaf } from './mm_types.ts';
import { alignedAreaTopdown } from './vma_tree.ts';
import { policyEqual, type Mempolicy } from './mempolicy.ts';
import { evictInode, vmaSetSharedPolicy } from './shmem.ts';
import { UnmodelledError } from './errors.ts';
import type { MappedFile } from './mm_types.ts';

// --- unmapped area search ----------------------------------------------------

/**
 * vm_unmapped_area, top-down: the highest address A with A + len below the
 * gap's end, A >= gap start, A aligned to `align`, in the highest gap
 * below mmap_base where one exists. -ENOMEM if none. The gaps are those
 * between the VMAs that start below mmap_base (from max(PAGE_SIZE,
 * mmap_min_addr) up, each ending at the next VMA's vm_start_gap), tried
 * from the top down: first the one above the last such VMA, up to
 * mmap_base, then the VMA tree's gaps, visiting only subtrees that hold a
 * gap of at least len (unmapped_area_topdown), so the search is O(log n)
 * unless gaps of len bytes or more cannot hold an aligned area.
 */
function unmappedAreaTopdown(mm: MmStruct, len: number, align: number): number {
  const last = mm.lastVmaBelow(mm.mmapBase);
  const top = alignedAreaTopdown(Math.max(last ? last.end : MMAP_LOWEST, MMAP_LOWEST), mm.mmapBase, len, align);
  if (top >= 0) return top;
  const a = mm.gapTopdown(mm.mmapBase, len, align);
  return a >= 0 ? a : neg('ENOMEM');
}

/** The hint check: nothing mapped in [addr, addr+len) and clear of a stack's guard gap above. */
function rangeFree(mm: MmStruct, addr: number, len: number): boolean {
  const v = mm.findVma(addr);
  return !v || addr + len <= vmStartGap(v);
}

/** __get_unmapped_area for anonymous and hugetlb mappings. */
function getUnmappedArea(mm: MmStruct, hint: number, len: number, flags: number, hugeSize: number): number {
  if (len > TASK_SIZE - MMAP_MIN_ADDR) return neg('ENOMEM');
  if (flags & MAP.MAP_FIXED) {
    if (hugeSize && (!isAligned(hint, hugeSize) || !isAligned(len, hugeSize))) return neg('EINVAL');
    if (hint > TASK_SIZE - len) return neg('ENOMEM');
    if (hint % PAGE_SIZE) return neg('EINVAL');
    return hint;
  }
  if (hint) {
    // x86's arch_get_unmapped_area_topdown rounds a hint down to a page; hugetlb aligns it up.
    const a = hugeSize ? alignUp(hint, hugeSize) : alignDown(hint, PAGE_SIZE);
    if (TASK_SIZE - len >= a && a >= MMAP_MIN_ADDR && rangeFree(mm, a, len)) return a;
  }
  if (hugeSize) return unmappedAreaTopdown(mm, len, hugeSize);
  if (!(flags & MAP.MAP_SHARED && (flags & MAP_TYPE) !== MAP.MAP_PRIVATE) && !hint && isAligned(len, PMD_SIZE)) {
    // thp_get_unmapped_area: search len + 2M, then align inside the padding.
    const ret = unmappedAreaTopdown(mm, len + PMD_SIZE, PAGE_SIZE);
    if (ret >= 0) {
      const offSub = (PMD_SIZE - (ret % PMD_SIZE)) % PMD_SIZE;
      return offSub === 0 ? ret + PMD_SIZE : ret + offSub;
    }
  }
  return unmappedAreaTopdown(mm, len, PAGE_SIZE);
}

// --- VMA list maintenance -------------------------------------------------------

/** Whether b can be merged onto the end of a (is_mergeable_vma + anon_vma + pgoff). */
export function canMerge(a: Vma, b: Vma): boolean {
  if (a.end !== b.start) return false;
  if ((a.flags & ~VM.SOFTDIRTY) !== (b.flags & ~VM.SOFTDIRTY)) return false;
  if (a.file !== b.file || a.resv !== b.resv || a.hugeShift !== b.hugeShift) return false;
  if (!policyEqual(a.policy, b.policy)) return false;
  if (a.uffdCtx !== b.uffdCtx) return false;
  if (a.isHugetlb()) return false;
  if (a.anonVma && b.anonVma && a.anonVma !== b.anonVma) return false;
  return b.pgoff === a.pgoff + (a.end - a.start) / PAGE_SIZE;
}

/**
 * anon_vma_prepare: a VMA about to get its first anonymous page takes the
 * anon_vma of an adjacent VMA it could one day merge with (next first, then
 * prev: find_mergeable_anon_vma), so a later mprotect or mmap can merge them;
 * otherwise it gets a new one. Protections may differ (VM_ACCESS_FLAGS are
 * ignored), file, flags and pgoff continuity may not.
 */
export function anonVmaPrepare(k: Kernel, mm: MmStruct, vma: Vma): void {
  if (vma.anonVma) return;
  const compatible = (a: Vma, b: Vma): boolean =>
    a.end === b.start &&
    policyEqual(a.policy, b.policy) &&
    a.file === b.file &&
    ((a.flags ^ b.flags) & ~(VM.READ | VM.WRITE | VM.EXEC | VM.SOFTDIRTY)) === 0 &&
    b.pgoff === a.pgoff + (a.end - a.start) / PAGE_SIZE;
  const next = mm.nextVma(vma);
  const prev = mm.prevVma(vma);
  if (next?.anonVma && compatible(vma, next)) vma.anonVma = next.anonVma;
  else if (prev?.anonVma && compatible(prev, vma)) vma.anonVma = prev.anonVma;
  else vma.anonVma = k.newAnonVma();
}

/** b, the VMA right after a, becomes part of a. */
export function mergeInto(mm: MmStruct, a: Vma, b: Vma): void {
  a.end = b.end;
  a.flags |= b.flags & VM.SOFTDIRTY;
  if (!a.anonVma) a.anonVma = b.anonVma;
  if (b.file) b.file.mapCount--;
  mm.removeVma(b); // the gap above a (now above b's end) follows
}

/**
 * Merge adjacent pairs of VMAs where either is in `changed`, from the
 * lowest address up: a VMA that absorbed its neighbour counts as changed
 * and tries the next one. The order matters (an absorbed anon_vma can
 * make the next merge impossible), so the pairs are taken as a scan of
 * every VMA in address order would take them; only the VMAs where that
 * scan could merge are visited: each changed VMA and the one before it.
 */
function mergeAround(mm: MmStruct, changed: Set<Vma>): void {
  const at = new Set<Vma>();
  for (const v of changed) {
    const prev = mm.prevVma(v);
    if (prev) at.add(prev);
    at.add(v);
  }
  for (const a of [...at].sort((x, y) => x.start - y.start)) {
    if (!mm.hasVma(a)) continue; // merged into the VMA before it
    for (let b = mm.nextVma(a); b && (changed.has(a) || changed.has(b)) && canMerge(a, b); b = mm.nextVma(a)) {
      mergeInto(mm, a, b);
      changed.add(a);
    }
  }
}

/**
 * __split_vma at addr: vma keeps [start, addr), a new VMA gets [addr, end).
 * Returns the new upper VMA, or -errno (hugetlb needs huge alignment;
 * the map count may not exceed vm.max_map_count).
 */
export function splitVma(k: Kernel, mm: MmStruct, vma: Vma, addr: number): Vma | number {
  if (vma.isHugetlb() && !isAligned(addr, vma.hugePageSize())) return neg('EINVAL');
  if (mm.mapCount >= k.sysctl.max_map_count) return neg('ENOMEM');
  const upper = vma.clone();
  upper.start = addr;
  upper.pgoff = vma.pgoff + (addr - vma.start) / PAGE_SIZE;
  vma.end = addr;
  if (upper.file) upper.file.mapCount++;
  mm.insertVma(upper); // the gap below upper is 0: vma ends where it starts
  // A THP mapped across the split point is split (vma_adjust_trans_huge).
  splitPmdAt(k, mm, addr);
  return upper;
}

/** Split a huge PMD that straddles addr (not at a 2M boundary). */
function splitPmdAt(k: Kernel, mm: MmStruct, addr: number): void {
  if (isAligned(addr, PMD_SIZE)) return;
  const e = mm.pgtable.pmds.get(PageTable.pmdKey(addr));
  if (e instanceof HugeLeaf) splitHugePmd(k, mm, alignDown(addr, PMD_SIZE), 0);
}

/**
 * Apply `fn` to the vm_flags of every VMA part inside [start, end),
 * splitting at the ends and merging changed parts with their neighbours
 * (vma_modify_flags). VMAs whose flags do not change are left whole.
 * Stops with -errno from `fn` or from a split.
 */
export function modifyVmaFlags(k: Kernel, mm: MmStruct, start: number, end: number, fn: (vma: Vma) => number): SysRet {
  return modifyVmas(k, mm, start, end, (vma) => {
    const nf = fn(vma);
    if (nf < 0 && nf > -4096) return nf;
    return nf === vma.flags ? null : (v) => void (v.flags = nf);
  });
}

/** mbind_range / vma_modify_policy: split at the range ends, set the policy, merge. */
export function modifyVmaPolicy(k: Kernel, mm: MmStruct, start: number, end: number, pol: Mempolicy | null): SysRet {
  // vma_replace_policy: a shmem mapping's file takes the policy too (shmem_set_policy), only where vm_policy changes.
  return modifyVmas(k, mm, start, end, (vma) =>
    policyEqual(vma.policy, pol)
      ? null
      : (v) => {
          v.policy = pol;
          vmaSetSharedPolicy(v, pol);
        },
  );
}

/** userfaultfd_register_range / userfaultfd_clear_vma: split, set the context and the VM_UFFD_* flags, merge. */
export function modifyVmaUffd(
  k: Kernel,
  mm: MmStruct,
  start: number,
  end: number,
  ctx: Vma['uffdCtx'],
  uffdFlags: number,
  mask: number,
): SysRet {
  return modifyVmas(k, mm, start, end, (vma) =>
    vma.uffdCtx === ctx && (vma.flags & mask) === uffdFlags
      ? null
      : (v) => {
          v.uffdCtx = ctx;
          v.flags = (v.flags & ~mask) | uffdFlags;
        },
  );
}

/**
 * vma_modify: for each VMA in [start, end), `decide` returns null (no
 * change: the VMA is left whole), -errno (stop), or the change to make. A
 * changed VMA is first split at the range ends, then the parts changed are
 * merged with their neighbours where compatible.
 */
function modifyVmas(k: Kernel, mm: MmStruct, start: number, end: number, decide: (vma: Vma) => ((v: Vma) => void) | null | number): SysRet {
  const changed = new Set<Vma>();
  let err = 0;
  for (const v0 of mm.vmasIn(start, end)) {
    let vma = v0;
    const change = decide(vma);
    if (change === null) continue;
    if (typeof change === 'number') {
      err = change;
      break;
    }
    if (vma.start < start) {
      const up = splitVma(k, mm, vma, start);
      if (typeof up === 'number') {
        err = up;
        break;
      }
      vma = up;
    }
    if (vma.end > end) {
      const up = splitVma(k, mm, vma, end);
      if (typeof up === 'number') {
        err = up;
        break;
      }
    }
    change(vma);
    changed.add(vma);
  }
  mergeAround(mm, changed);
  return err;
}

// --- mmap -----------------------------------------------------------------------

function calcVmFlags(prot: number, flags: number): number {
  let vf = VM.MAYREAD | VM.MAYWRITE | VM.MAYEXEC;
  if (prot & PROT.PROT_READ) vf |= VM.READ;
  if (prot & PROT.PROT_WRITE) vf |= VM.WRITE;
  if (prot & PROT.PROT_EXEC) vf |= VM.EXEC;
  if (flags & MAP.MAP_GROWSDOWN) vf |= VM.GROWSDOWN;
  if (flags & MAP.MAP_LOCKED) vf |= VM.LOCKED;
  if (flags & MAP.MAP_SYNC) vf |= VM.SYNC;
  if (flags & MAP.MAP_STACK) vf |= VM.NOHUGEPAGE;
  return vf;
}

/** __vm_enough_memory under vm.overcommit_memory = 0 (OVERCOMMIT_GUESS). */
export function vmEnoughMemory(k: Kernel, pages: number): boolean {
  if (k.sysctl.overcommit_memory === 1) return true;
  // OVERCOMMIT_GUESS: no more than all of RAM and swap.
  return pages <= k.phys.totalPages() + k.swap.totalSwapPages;
}

export function doMmap(
  k: Kernel,
  p: Process,
  addr: number,
  len: number,
  prot: number,
  flags: number,
  fd?: { file: MappedFile; offset: number },
): SysRet {
  const mm = p.mm;
  // A file is a memfd (or an op-script's opened file); MAP_ANONYMOUS ignores the fd, as Linux does.
  const mapped = flags & MAP.MAP_ANONYMOUS ? undefined : fd;
  if (!(flags & MAP.MAP_ANONYMOUS) && !mapped) return neg('EBADF');
  if (mapped) {
    if (mapped.offset % PAGE_SIZE) return neg('EINVAL');
    if (mapped.file.kind === 'hugetlbfs') throw new UnmodelledError('mmap of a hugetlbfs file (a MFD_HUGETLB memfd) is not modelled');
    if (flags & MAP.MAP_HUGETLB) return neg('EINVAL');
    return mmapFile(k, p, addr, len, prot, flags, mapped.file, mapped.offset / PAGE_SIZE);
  }
  let hugeShift = 0;
  if (flags & MAP.MAP_HUGETLB) {
    const log = (flags >>> MAP_HUGE_SHIFT) & MAP_HUGE_MASK;
    const h = log === 0 ? k.hugetlb.defaultHstate : k.hugetlb.byShift(log);
    if (!h) return neg('EINVAL');
    hugeShift = h.shift;
    len = alignUp(len, h.size);
  }
  const placed = placeMapping(k, mm, addr, len, flags, hugeShift ? 2 ** hugeShift : 0);
  if (typeof placed === 'number') return placed;
  const start = placed.start;
  len = placed.len;
  flags = placed.flags;
  let vf = calcVmFlags(prot, flags);
  let pgoff: number;
  const type = flags & MAP_TYPE;
  if (hugeShift) {
    if (type !== MAP.MAP_SHARED && type !== MAP.MAP_SHARED_VALIDATE && type !== MAP.MAP_PRIVATE) return neg('EINVAL');
    if (type !== MAP.MAP_PRIVATE) vf |= VM.SHARED | VM.MAYSHARE;
    pgoff = 0;
  } else if (type === MAP.MAP_SHARED) {
    if (vf & VM.GROWSDOWN) return neg('EINVAL');
    vf |= VM.SHARED | VM.MAYSHARE;
    pgoff = 0;
  } else if (type === MAP.MAP_PRIVATE) {
    pgoff = start / PAGE_SIZE;
  } else return neg('EINVAL');
  if (flags & MAP.MAP_NORESERVE && (k.sysctl.overcommit_memory !== 2 || hugeShift)) vf |= VM.NORESERVE;

  // MAP_FIXED replaces whatever was there: the old VMAs are split off first
  // (vms_gather_munmap_vmas), the new mapping is set up (its hugetlb
  // reservation taken while the old one still holds its own), and only then
  // are the old ones unmapped. If setup fails, the old mappings stay (split).
  const fixed = (flags & MAP.MAP_FIXED) !== 0;
  if (fixed) {
    const r = gatherMunmap(k, mm, start, start + len);
    if (r < 0) return r;
    // A file-backed mapping (hugetlbfs, shmem) clears the old area and closes
    // its VMAs before its ->mmap runs (vms_clean_up_area); if that then fails,
    // Linux leaves a gap where the old mappings were.
    if (hugeShift || vf & VM.SHARED) cleanUpArea(k, mm, start, start + len);
  }
  const fileFail = (): number => {
    if (fixed) completeMunmap(k, mm, start, start + len);
    return neg('ENOMEM');
  };
  const vma = new Vma(start, start + len, vf, pgoff, null, hugeShift);
  if (hugeShift) {
    vma.flags |= VM.HUGETLB | VM.DONTEXPAND;
    const h = k.hugetlb.byShift(hugeShift)!;
    const file = k.newFile('hugetlbfs');
    file.hugeShift = hugeShift;
    const pages = len / h.size;
    if (!(vf & VM.NORESERVE)) {
      if (k.hugetlb.reserve(h, pages) < 0) {
        k.files.delete(file.id);
        return fileFail();
      }
      if (vf & VM.MAYSHARE) for (let i = 0; i < pages; i++) file.reserved.add(i);
      else vma.resv = { consumed: new Set<number>() } satisfies HugetlbResvMap;
    }
    vma.file = file;
    file.mapCount = 1;
  } else if (vf & VM.SHARED) {
    if (!(vf & VM.NORESERVE) && !vmEnoughMemory(k, len / PAGE_SIZE)) return fileFail();
    const file = k.newFile('shmem');
    vma.file = file;
    file.mapCount = 1;
  } else if ((vf & (VM.NORESERVE | VM.SHARED | VM.WRITE)) === VM.WRITE) {
    if (!vmEnoughMemory(k, len / PAGE_SIZE)) return neg('ENOMEM');
    vma.flags |= VM.ACCOUNT;
    k.committedPages += len / PAGE_SIZE;
  }
  if (fixed) completeMunmap(k, mm, start, start + len);
  const populate = (flags & (MAP.MAP_POPULATE | MAP.MAP_NONBLOCK)) === MAP.MAP_POPULATE || (vf & VM.LOCKED) !== 0;
  // __mmap_complete: hugetlb (and special) VMAs never keep VM_LOCKED, though they are still populated.
  if (vma.isHugetlb()) vma.flags &= ~(VM.LOCKED | VM.LOCKONFAULT);
  mm.insertVma(vma);
  mergeAround(mm, new Set([vma]));
  k.charge(k.costs.ns('mmap_munmap_pair') / 2);
  if (populate) populateRange(k, p, start, start + len, null);
  return start;
}

/**
 * do_mmap's part that every kind of mapping shares: a zero length is EINVAL,
 * a hint below mmap_min_addr is raised to it, the length is rounded to
 * pages and checked against TASK_SIZE and max_map_count, MAP_FIXED_NOREPLACE
 * implies MAP_FIXED, get_unmapped_area picks the range (aligned to `align`
 * when it is a huge page size), and MAP_FIXED_NOREPLACE over a mapping is
 * EEXIST. Returns the range and the flags to go on with, or -errno.
 */
function placeMapping(
  k: Kernel,
  mm: MmStruct,
  addr: number,
  len: number,
  flags: number,
  align: number,
): { start: number; len: number; flags: number } | number {
  if (len === 0) return neg('EINVAL');
  if (!(flags & MAP.MAP_FIXED) && addr && addr < MMAP_MIN_ADDR) addr = alignUp(MMAP_MIN_ADDR, PAGE_SIZE);
  len = alignUp(len, PAGE_SIZE);
  if (len > TASK_SIZE) return neg('ENOMEM');
  if (mm.mapCount > k.sysctl.max_map_count) return neg('ENOMEM');
  if (flags & MAP.MAP_FIXED_NOREPLACE) flags |= MAP.MAP_FIXED;
  const start = getUnmappedArea(mm, addr, len, flags, align);
  if (start < 0) return start;
  if (flags & MAP.MAP_FIXED_NOREPLACE && mm.vmasIn(start, start + len).length) return neg('EEXIST');
  return { start, len, flags };
}

/**
 * mmap_region for a shmem or disk file (a memfd, an opened file): MAP_SHARED
 * maps its page cache; MAP_PRIVATE maps it read-only until a write copies a
 * page (do_cow_fault, filemap.ts), and a writable private mapping is
 * accounted (accountable_mapping). pgoff is the file offset in pages.
 */
function mmapFile(k: Kernel, p: Process, addr: number, len: number, prot: number, flags: number, file: MappedFile, pgoff: number): SysRet {
  const mm = p.mm;
  const placed = placeMapping(k, mm, addr, len, flags, 0);
  if (typeof placed === 'number') return placed;
  const start = placed.start;
  len = placed.len;
  flags = placed.flags;
  let vf = calcVmFlags(prot, flags);
  const type = flags & MAP_TYPE;
  if (type === MAP.MAP_SHARED || type === MAP.MAP_SHARED_VALIDATE) vf |= VM.SHARED | VM.MAYSHARE;
  else if (type !== MAP.MAP_PRIVATE) return neg('EINVAL');
  if (flags & MAP.MAP_NORESERVE && k.sysctl.overcommit_memory !== 2) vf |= VM.NORESERVE;
  const fixed = (flags & MAP.MAP_FIXED) !== 0;
  if (fixed) {
    const r = gatherMunmap(k, mm, start, start + len);
    if (r < 0) return r;
    cleanUpArea(k, mm, start, start + len);
  }
  const vma = new Vma(start, start + len, vf, pgoff, null, 0);
  if ((vf & (VM.NORESERVE | VM.SHARED | VM.WRITE)) === VM.WRITE) {
    if (!vmEnoughMemory(k, len / PAGE_SIZE)) {
      if (fixed) completeMunmap(k, mm, start, start + len);
      return neg('ENOMEM');
    }
    vma.flags |= VM.ACCOUNT;
    k.committedPages += len / PAGE_SIZE;
  }
  vma.file = file;
  file.mapCount++;
  if (fixed) completeMunmap(k, mm, start, start + len);
  mm.insertVma(vma);
  mergeAround(mm, new Set([vma]));
  k.charge(k.costs.ns('mmap_munmap_pair') / 2);
  if ((flags & (MAP.MAP_POPULATE | MAP.MAP_NONBLOCK)) === MAP.MAP_POPULATE || vf & VM.LOCKED) populateRange(k, p, start, start + len, null);
  return start;
}

/**
 * populate_vma_page_range / faultin_page_range: fault in every page, with
 * write faults for private writable mappings (or when `write` is forced).
 * Returns 0, or a fault outcome for MADV_POPULATE_*.
 */
export function populateRange(k: Kernel, p: Process, start: number, end: number, write: boolean | null): number {
  const mm = p.mm;
  for (let va = start; va < end;) {
    const vma = mm.vmaAt(va);
    if (!vma) return neg('ENOMEM');
    const w = write ?? (vma.flags & (VM.WRITE | VM.SHARED)) === VM.WRITE;
    if (!vmaAllows(vma, w)) return neg('EINVAL');
    const step = vma.isHugetlb() ? vma.hugePageSize() : PAGE_SIZE;
    const stop = Math.min(vma.end, end);
    for (; va < stop; va = alignDown(va, step) + step) {
      const pfn = followPage(mm, va);
      // A present page a write may not use in place (shared by a fork, a page-cache page) still faults: do_wp_page.
      if ((pfn >= 0 && !(w && mm.cowPossible && writeFaults(k, vma, pfn))) || (pfn === -1 && !w)) continue;
      const r = handleMmFault(k, mm, vma, va, w, p.mainThread);
      if (r !== FAULT_OK) return neg(r === 3 ? 'ENOMEM' : 'EFAULT');
    }
  }
  return 0;
}

// --- munmap -----------------------------------------------------------------------

export function sysMunmap(k: Kernel, p: Process, start: number, len: number, thread: Thread = p.mainThread): SysRet {
  if (start % PAGE_SIZE || start > TASK_SIZE || len > TASK_SIZE - start) return neg('EINVAL');
  len = alignUp(len, PAGE_SIZE);
  if (len === 0) return neg('EINVAL');
  // userfaultfd_unmap_prep: every userfaultfd with UFFD_EVENT_UNMAP that registered a VMA in the range.
  const ctxs = [...new Set(p.mm.vmasIn(start, start + len).map((v) => v.uffdCtx))].filter(
    (c): c is UserfaultfdCtx => c !== null && ((c.features ?? 0) & UFFD_FEATURE.UFFD_FEATURE_EVENT_UNMAP) !== 0,
  );
  const r = doMunmap(k, p.mm, start, len);
  if (r === 0) unmapComplete(k, ctxs, start, start + len, thread);
  return r;
}

/** userfaultfd_unmap_complete: one UFFD_EVENT_UNMAP per context, each waited for (read) before the next. */
function unmapComplete(k: Kernel, ctxs: UserfaultfdCtx[], start: number, end: number, thread: Thread): void {
  const [ctx, ...rest] = ctxs;
  if (ctx) k.uffd.event(ctx, 'UFFD_EVENT_UNMAP', start, end, thread, () => unmapComplete(k, rest, start, end, thread));
}

/** do_vmi_munmap on page-aligned arguments. */
export function doMunmap(k: Kernel, mm: MmStruct, start: number, len: number): SysRet {
  const r = gatherMunmap(k, mm, start, start + len);
  if (r < 0) return r;
  completeMunmap(k, mm, start, start + len);
  return 0;
}

/**
 * vms_gather_munmap_vmas: split the first VMA at start, then the last at
 * end. If the second split fails (a hugetlb VMA split off its huge page
 * boundary) the call fails, but the first split stays done.
 */
function gatherMunmap(k: Kernel, mm: MmStruct, start: number, end: number): SysRet {
  let vmas = mm.vmasIn(start, end);
  if (!vmas.length) return 0;
  const first = vmas[0]!;
  if (first.start < start) {
    if (first.end > end && mm.mapCount >= k.sysctl.max_map_count) return neg('ENOMEM');
    const r = splitVma(k, mm, first, start);
    if (typeof r === 'number') return r;
  }
  vmas = mm.vmasIn(start, end);
  const tail = vmas[vmas.length - 1]!;
  if (tail.end > end) {
    const r = splitVma(k, mm, tail, end);
    if (typeof r === 'number') return r;
  }
  return 0;
}

/** vms_clean_up_area: clear the old VMAs' pages and close them (a private hugetlb reservation goes). */
function cleanUpArea(k: Kernel, mm: MmStruct, start: number, end: number): void {
  for (const v of mm.vmasIn(start, end)) {
    zapRange(k, mm, v, v.start, v.end, false, 0);
    if (v.isHugetlb() && v.resv) {
      releaseReservation(k, v);
      v.resv = null;
    }
  }
}

/** vms_complete_munmap_vmas: unmap the (already split) VMAs inside [start, end). */
function completeMunmap(k: Kernel, mm: MmStruct, start: number, end: number): void {
  const vmas = mm.vmasIn(start, end);
  if (!vmas.length) return;
  let pages = 0;
  for (const v of vmas) {
    const st = zapRange(k, mm, v, v.start, v.end, false, 0);
    clearUffdWp(mm, v.start, v.end);
    clearMarkers(mm.uffdPoison, v.start, v.end);
    pages += st.pages + st.hugePmds * 512;
    unaccountVma(k, v);
    mm.removeVma(v);
    releaseVmaResources(k, v);
  }
  freePgtables(k, mm, start, end);
  k.charge(k.costs.ns('mmap_munmap_pair') / 2 + pages * k.costs.ns('munmap_populated_4k'));
}

function unaccountVma(k: Kernel, v: Vma): void {
  if (v.flags & VM.ACCOUNT) k.committedPages -= v.size / PAGE_SIZE;
}

/** hugetlb_vm_op_close: a private mapping gives back the reservations it did not consume. */
function releaseReservation(k: Kernel, v: Vma): void {
  const h = k.hugetlb.byShift(v.hugeShift)!;
  const first = (v.pgoff * PAGE_SIZE) / h.size;
  const n = v.size / h.size;
  let unconsumed = 0;
  for (let i = first; i < first + n; i++) if (!v.resv!.consumed.has(i)) unconsumed++;
  k.hugetlb.unreserve(h, unconsumed);
}

/** What a VMA held beyond its pages: hugetlb reservations, its file when last unmapped. */
function releaseVmaResources(k: Kernel, v: Vma): void {
  if (v.isHugetlb() && v.resv) releaseReservation(k, v);
  const f = v.file;
  // The file stays while an fd holds it open (a memfd, an opened file).
  // Last mapping of an anonymous shmem/hugetlbfs file: the inode goes away.
  if (f && --f.mapCount === 0 && f.opens === 0) evictInode(k, f);
}

/** free_pgtables: PTE tables whose 2M range no VMA covers any more (PMD slots not in use are skipped). */
function freePgtables(k: Kernel, mm: MmStruct, start: number, end: number): void {
  const pt = mm.pgtable;
  const from = alignDown(start, PMD_SIZE);
  for (let va = pt.skipNone(from, end, PMD_SIZE); va < end; va = pt.skipNone(va + PMD_SIZE, end, PMD_SIZE)) {
    const key = PageTable.pmdKey(va);
    const e = pt.pmds.get(key);
    if (!(e instanceof PteTable)) continue;
    if (mm.vmasIn(key * PMD_SIZE, (key + 1) * PMD_SIZE).length) continue;
    pt.pmds.delete(key);
    freePteTable(k, mm, e);
  }
}

// --- mprotect -----------------------------------------------------------------------

export function sysMprotect(k: Kernel, p: Process, start: number, len: number, prot: number): SysRet {
  const mm = p.mm;
  const grows = prot & (PROT.PROT_GROWSDOWN | PROT.PROT_GROWSUP);
  prot &= ~grows;
  if (grows === (PROT.PROT_GROWSDOWN | PROT.PROT_GROWSUP)) return neg('EINVAL');
  if (start % PAGE_SIZE) return neg('EINVAL');
  if (!len) return 0;
  len = alignUp(len, PAGE_SIZE);
  const end = start + len;
  if (end <= start) return neg('ENOMEM');
  if (prot & ~(PROT.PROT_READ | PROT.PROT_WRITE | PROT.PROT_EXEC | PROT.PROT_SEM)) return neg('EINVAL');
  const firstVma = mm.findVma(start);
  if (!firstVma || firstVma.start > start) return neg('ENOMEM');
  // Walk the contiguous VMAs; a hole stops the walk with ENOMEM after what came before was changed.
  let covered = start;
  for (const v of mm.vmasIn(start, end)) {
    if (v.start > covered) break;
    covered = v.end;
  }
  const stop = Math.min(end, covered);
  const want = (prot & PROT.PROT_READ ? VM.READ : 0) | (prot & PROT.PROT_WRITE ? VM.WRITE : 0) | (prot & PROT.PROT_EXEC ? VM.EXEC : 0);
  let charged = 0;
  const r = modifyVmaFlags(k, mm, start, stop, (vma) => {
    if ((want & VM.WRITE && !(vma.flags & VM.MAYWRITE)) || (want & VM.EXEC && !(vma.flags & VM.MAYEXEC))) return neg('EACCES');
    let nf = (vma.flags & ~(VM.READ | VM.WRITE | VM.EXEC)) | want;
    if (nf === vma.flags) return nf;
    const pages = (Math.min(vma.end, stop) - Math.max(vma.start, start)) / PAGE_SIZE;
    if (nf & VM.WRITE) {
      if (!(vma.flags & (VM.ACCOUNT | VM.WRITE | VM.HUGETLB | VM.SHARED | VM.NORESERVE))) {
        if (!vmEnoughMemory(k, pages)) return neg('ENOMEM');
        nf |= VM.ACCOUNT;
        charged += pages;
      }
    } else if (vma.flags & VM.ACCOUNT && vma.isAnonymous() && !vma.anonVma) {
      nf &= ~VM.ACCOUNT;
      charged -= pages;
    }
    return nf;
  });
  k.committedPages += charged;
  // Huge PMDs the range only partly covers were split where the VMA was split
  // (only VMAs whose flags change are split: an unchanged protection splits nothing).
  k.charge(k.costs.ns('mprotect_split'));
  if (r < 0) return r;
  return covered < end ? neg('ENOMEM') : 0;
}
