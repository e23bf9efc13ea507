/**
 * madvise(2) and process_madvise(2) (mm/madvise.c). Unmapped parts of the
 * range are skipped and reported as ENOMEM after the advice was applied
 * to the mapped parts, as Linux does.
 */
import type { Kernel } from './kernel.ts';
import { mappedShared } from './migrate.ts';
import type { Process, Thread } from './sched.ts';
import { PageTable, PteTable, PTE_NONE, VM, swpEntryOfPte, type MmStruct, type Vma } from './mm_types.ts';
import { MADV, MADV_SPLIT, UFFD_FEATURE, PAGE_SIZE, PMD_SIZE, alignDown, alignUp, neg, type SysRet } from './uapi.ts';
import { modifyVmaFlags, populateRange } from './mmap.ts';
import { zapRange, followPage, swapPteAt } from './memory.ts';
import { folioFreeSwap, freeSwapAndCache, readSwapCache } from './swap_state.ts';
import { anonFolioAt, splitAnonFolio } from './huge_memory.ts';
import { PG } from './page.ts';
import { madviseCold, shrinkFolio } from './vmscan.ts';
import { MADV_F_COLLAPSE_MASK, madviseCollapse } from './khugepaged.ts';
import { UnmodelledError } from './errors.ts';
import { capable, ptraceMayAccess } from './cred.ts';
import { hgmMadvCollapse, madvSplit } from './hugetlb_hgm.ts';

const VALID_ADVICE = new Set<number>(Object.values(MADV));

/** Advice that Linux implements but memtwin does not model yet. */
export const UNMODELLED_ADVICE = new Set<number>([
  MADV.MADV_HWPOISON,
  MADV.MADV_SOFT_OFFLINE,
  MADV.MADV_GUARD_INSTALL,
  MADV.MADV_GUARD_REMOVE,
]);

export { UnmodelledError };

/**
 * madvise(2) by `thread` of p. `entry` charges the system call's entry
 * (syscall_null); process_madvise charges it once for all its iovecs, and
 * passes its flags (`collapseFlags`; null for madvise(2)) to MADV_COLLAPSE.
 */
export function sysMadvise(
  k: Kernel,
  p: Process,
  start: number,
  lenIn: number,
  advice: number,
  thread: Thread = p.mainThread,
  entry = true,
  collapseFlags: number | null = null,
): SysRet {
  // MADV_SPLIT exists only while the hugetlb-hgm proposal is enabled.
  const split = advice === MADV_SPLIT && k.hgm.enabled['hugetlb-hgm'] === 1;
  if (!VALID_ADVICE.has(advice) && !split) return neg('EINVAL');
  if (UNMODELLED_ADVICE.has(advice)) {
    const name = Object.entries(MADV).find(([, v]) => v === advice)?.[0] ?? String(advice);
    throw new UnmodelledError(`${name} is not modelled by the simulator yet`);
  }
  if (start % PAGE_SIZE) return neg('EINVAL');
  const len = alignUp(lenIn, PAGE_SIZE);
  if (lenIn && !len) return neg('EINVAL');
  const end = start + len;
  if (end < start) return neg('EINVAL');
  if (end === start) return 0;
  if (entry) k.charge(k.costs.ns('syscall_null'));
  const mm = p.mm;

  if (advice === MADV.MADV_POPULATE_READ || advice === MADV.MADV_POPULATE_WRITE) {
    return populateRange(k, p, start, end, advice === MADV.MADV_POPULATE_WRITE);
  }

  // Walk the range VMA by VMA; remember holes.
  let hole = mm.vmasIn(start, end).length === 0;
  let covered = start;
  for (const v of mm.vmasIn(start, end)) {
    if (v.start > covered) hole = true;
    covered = Math.max(covered, v.end);
  }
  if (covered < end) hole = true;
  if (mm.vmasIn(start, end).length === 0) return neg('ENOMEM');

  let err = 0;
  if (split) return madvSplit(mm, start, end);
  switch (advice) {
    case MADV.MADV_NORMAL:
    case MADV.MADV_RANDOM:
    case MADV.MADV_SEQUENTIAL:
    case MADV.MADV_DONTFORK:
    case MADV.MADV_DOFORK:
    case MADV.MADV_WIPEONFORK:
    case MADV.MADV_KEEPONFORK:
    case MADV.MADV_DONTDUMP:
    case MADV.MADV_DODUMP:
    case MADV.MADV_HUGEPAGE:
    case MADV.MADV_NOHUGEPAGE:
    case MADV.MADV_MERGEABLE:
    case MADV.MADV_UNMERGEABLE:
      err = modifyVmaFlags(k, mm, start, end, (vma) => newFlags(vma, advice));
      // hugepage_madvise: an mm with an eligible VMA joins khugepaged's list.
      if (!err && advice === MADV.MADV_HUGEPAGE) for (const v of mm.vmasIn(start, end)) k.khugepaged.enterVma(mm, v);
      break;
    case MADV.MADV_COLLAPSE:
      // madvise_collapse, VMA by VMA; the first failing VMA ends the walk.
      for (const v of mm.vmasIn(start, end)) {
        const r =
          v.hgm === 'hgm'
            ? hgmMadvCollapse(k, mm, Math.max(start, v.start), Math.min(end, v.end))
            : madviseCollapse(k, v, mm, Math.max(start, v.start), Math.min(end, v.end), collapseFlags);
        if (r < 0) {
          err = r;
          break;
        }
      }
      break;
    case MADV.MADV_DONTNEED:
    case MADV.MADV_DONTNEED_LOCKED:
    case MADV.MADV_FREE:
    case MADV.MADV_REMOVE: {
      const pieces = mm.vmasIn(start, end).map((v): Piece => [v, Math.max(start, v.start), Math.min(end, v.end)]);
      err = zapAdvice(k, p, thread, pieces, advice, 0, false);
      break;
    }
    case MADV.MADV_COLD:
    case MADV.MADV_PAGEOUT:
      // Both split the THPs the range covers in part; MADV_COLD then deactivates the range's folios, MADV_PAGEOUT
      // reclaims them (vmscan.ts).
      for (const v of mm.vmasIn(start, end)) {
        if (v.flags & (VM.LOCKED | VM.PFNMAP | VM.HUGETLB)) {
          err = neg('EINVAL');
          break;
        }
        const s0 = Math.max(start, v.start);
        const e0 = Math.min(end, v.end);
        if (advice === MADV.MADV_PAGEOUT) madvisePageout(k, p, v, s0, e0);
        else {
          splitPartlyCoveredThps(k, p, v, s0, e0);
          madviseCold(k, p.mm, s0, e0);
        }
      }
      break;
    case MADV.MADV_WILLNEED:
      // madvise_willneed on anonymous memory: swapin_walk_pmd_entry starts the read of every swapped page of
      // the range into the swap cache (read_swap_cache_async; nothing is mapped). Shmem: not swapped here.
      for (const v of mm.vmasIn(start, end))
        if (v.isAnonymous()) willneedSwapin(k, mm, Math.max(start, v.start), Math.min(end, v.end), k.cpuToNode(thread.cpu));
      break;
  }
  if (err) return err;
  return hole ? neg('ENOMEM') : 0;
}

/** madvise_update_vma's new vm_flags for flag-only advice, or -errno. */
function newFlags(vma: Vma, advice: number): number {
  let f = vma.flags;
  switch (advice) {
    case MADV.MADV_NORMAL:
      return f & ~(VM.RAND_READ | VM.SEQ_READ);
    case MADV.MADV_RANDOM:
      return (f & ~VM.SEQ_READ) | VM.RAND_READ;
    case MADV.MADV_SEQUENTIAL:
      return (f & ~VM.RAND_READ) | VM.SEQ_READ;
    case MADV.MADV_DONTFORK:
      if (f & VM.IO) return neg('EINVAL');
      return f | VM.DONTCOPY;
    case MADV.MADV_DOFORK:
      if (f & VM.IO) return neg('EINVAL');
      return f & ~VM.DONTCOPY;
    case MADV.MADV_WIPEONFORK:
      if (vma.file || f & VM.SHARED) return neg('EINVAL');
      return f | VM.WIPEONFORK;
    case MADV.MADV_KEEPONFORK:
      return f & ~VM.WIPEONFORK;
    case MADV.MADV_DONTDUMP:
      return f | VM.DONTDUMP;
    case MADV.MADV_DODUMP:
      if (!vma.isHugetlb() && f & (VM.IO | VM.PFNMAP | VM.MIXEDMAP | VM.DONTEXPAND)) return neg('EINVAL');
      return f & ~VM.DONTDUMP;
    case MADV.MADV_HUGEPAGE:
      f &= ~VM.NOHUGEPAGE;
      return f | VM.HUGEPAGE;
    case MADV.MADV_NOHUGEPAGE:
      f &= ~VM.HUGEPAGE;
      return f | VM.NOHUGEPAGE;
    case MADV.MADV_MERGEABLE:
      if (f & (VM.SHARED | VM.MAYSHARE | VM.PFNMAP | VM.IO | VM.DONTEXPAND | VM.HUGETLB | VM.MIXEDMAP)) return f;
      return f | VM.MERGEABLE;
    case MADV.MADV_UNMERGEABLE:
      return f & ~VM.MERGEABLE;
  }
  return f;
}

type Piece = [Vma, number, number];

/**
 * MADV_DONTNEED/DONTNEED_LOCKED/FREE/REMOVE over the VMA pieces from the
 * i-th on. Each piece is checked, then, if its userfaultfd asked for
 * UFFD_EVENT_REMOVE, the event is queued and the call waits until it is
 * read (userfaultfd_remove): the rest of the call runs then, in `told`
 * mode for this piece. Returns what the call returns when nothing waits.
 */
function zapAdvice(k: Kernel, p: Process, thread: Thread, pieces: Piece[], advice: number, i: number, told: boolean): SysRet {
  const resumed = told; // the call waited for an event: the VMAs may have changed meanwhile
  for (; i < pieces.length; i++, told = false) {
    const [v, s] = pieces[i]!;
    if (resumed && !p.mm.hasVma(v)) return neg('ENOMEM'); // unmapped while the call waited
    const e = advice === MADV.MADV_REMOVE ? removeCheck(v, pieces[i]![2]) : dontneedFreeCheck(v, s, pieces[i]![2], advice);
    if (e < 0) return e;
    if (e <= s) continue;
    const ctx = v.uffdCtx;
    if (!told && ctx && (ctx.features ?? 0) & UFFD_FEATURE.UFFD_FEATURE_EVENT_REMOVE) {
      const at = i;
      k.uffd.event(ctx, 'UFFD_EVENT_REMOVE', s, e, thread, () => void zapAdvice(k, p, thread, pieces, advice, at, true));
      return 0;
    }
    const r = advice === MADV.MADV_REMOVE ? madviseRemove(k, v, s, e) : dontneedFree(k, p, v, s, e, advice);
    if (r < 0) return r;
  }
  return 0;
}

/** madvise_dontneed_free_valid_vma: -errno, or the end the advice applies to (hugetlb: whole huge pages only). */
function dontneedFreeCheck(vma: Vma, start: number, end: number, advice: number): number {
  if (!vma.isHugetlb()) {
    let forbidden = VM.PFNMAP;
    if (advice !== MADV.MADV_DONTNEED_LOCKED) forbidden |= VM.LOCKED;
    return vma.flags & forbidden ? neg('EINVAL') : end;
  }
  if (advice === MADV.MADV_FREE) return neg('EINVAL');
  const hs = vma.hugePageSize();
  if (start % hs) return neg('EINVAL');
  return alignDown(end, hs);
}

/** MADV_DONTNEED / MADV_DONTNEED_LOCKED / MADV_FREE on one VMA's part, checked already. */
function dontneedFree(k: Kernel, p: Process, vma: Vma, start: number, end: number, advice: number): SysRet {
  const mm = p.mm;
  if (advice === MADV.MADV_FREE) {
    if (!vma.isAnonymous() || vma.flags & VM.SHARED) return neg('EINVAL');
    madviseFree(k, p, vma, start, end);
    return 0;
  }
  const st = zapRange(k, mm, vma, start, end, true, k.cpuToNode(p.mainThread.cpu));
  k.charge(st.pages * k.costs.ns('madv_dontneed_4k') + st.hugePmds * k.costs.ns('madv_dontneed_2m_thp'));
  return 0;
}

/**
 * MADV_FREE: pages stay mapped with their contents but are marked lazily
 * freeable; a later write cancels that. Only reclaim (MADV_PAGEOUT here:
 * memtwin has no reclaim under memory pressure yet) discards them. A page
 * in the swap cache leaves it (folio_free_swap) and is clean; a swapped-out
 * page's entry is dropped (free_swap_and_cache), so it reads back as zeros.
 * A huge PMD the range covers only partly is split first.
 */
function madviseFree(k: Kernel, p: Process, vma: Vma, start: number, end: number): void {
  const mm = p.mm;
  splitPartlyCoveredThps(k, p, vma, start, end);
  const pt = mm.pgtable;
  const m = k.mem;
  for (let va = pt.skipNone(start, end, PAGE_SIZE); va < end; va = pt.walkNext(va, end, PAGE_SIZE)) {
    if (swapPteAt(mm, va)) {
      const t = pt.pmds.get(PageTable.pmdKey(va)) as PteTable;
      const i = Math.floor(va / PAGE_SIZE) & 511;
      const entry = swpEntryOfPte(t.ptes[i]!);
      t.ptes[i] = PTE_NONE;
      t.used--;
      mm.swapents--;
      freeSwapAndCache(k, entry);
      continue;
    }
    const pfn = followPage(mm, va);
    if (pfn < 0 || m.mapcount(pfn) + m.entireMapcount(pfn) > 1) continue;
    if (m.flags(pfn) & PG.swapcache && !folioFreeSwap(k, pfn)) continue;
    m.clearFlags(pfn, PG.dirty);
    // folio_mark_lazyfree: a swap-backed folio becomes lazyfree (counted once: pglazyfree).
    if (!(m.flags(pfn) & PG.lazyfree)) k.vmstat.count('pglazyfree');
    m.addFlags(pfn, PG.lazyfree);
  }
}

/**
 * A THP that [start, end) covers only in part is split (split_folio), as
 * MADV_COLD, MADV_PAGEOUT and MADV_FREE do before acting on its pages; a
 * huge zero PMD is left alone.
 */
function splitPartlyCoveredThps(k: Kernel, p: Process, vma: Vma, start: number, end: number): void {
  const mm = p.mm;
  for (const edge of [start, end - 1]) {
    const haddr = alignDown(edge, PMD_SIZE);
    if (haddr >= start && haddr + PMD_SIZE <= end) continue; // fully covered
    const head = anonFolioAt(k, mm, edge, followPage);
    if (head < 0 || !vma.isAnonymous()) continue;
    splitAnonFolio(k, mm, head, haddr, k.cpuToNode(p.mainThread.cpu));
  }
}

/**
 * MADV_PAGEOUT (madvise_cold_or_pageout_pte_range, then reclaim_pages):
 * the anonymous folios of the range mapped by this mm alone are isolated
 * and reclaimed with references ignored. A THP cannot go to a swap file
 * whole (folio_alloc_swap fails for a large folio on a file, and with no
 * swap at all): shrink_folio_list splits it ("fallback to swap normal
 * pages", thp_swpout_fallback), the split maps its all-zero pages to the
 * zero page, and its other pages are reclaimed one by one. Order-0 pages
 * go to swap (or are discarded when lazyfree); without swap they stay.
 * A shmem mapping's pages (a memfd, a shared anonymous mapping: a file this
 * process may write, can_do_file_pageout) that only it maps go to swap too
 * (shmem_writeout, vmscan.ts).
 */
function madvisePageout(k: Kernel, p: Process, vma: Vma, start: number, end: number): void {
  if (!vma.isAnonymous() && vma.file?.kind !== 'shmem') return;
  const mm = p.mm;
  const m = k.mem;
  const nid = k.cpuToNode(p.mainThread.cpu);
  const pt = mm.pgtable;
  const heads = new Map<number, number>();
  for (let va = pt.skipNone(start, end, PAGE_SIZE); va < end; va = pt.walkNext(va, end, PAGE_SIZE)) {
    const head = anonFolioAt(k, mm, va, followPage);
    if (head >= 0 && !heads.has(head)) heads.set(head, alignDown(va, PMD_SIZE));
  }
  for (const [head, haddr] of heads) {
    // folio_maybe_mapped_shared: not a folio another mapping (another process, since a fork) uses.
    if (mappedShared(k, head)) continue;
    splitAnonFolio(k, mm, head, haddr, nid);
    // A THP the range covers whole is split by shrink_folio_list (counted); one covered in part, by the walk.
    if (haddr >= start && haddr + PMD_SIZE <= end) k.vmstat.count('thp_swpout_fallback');
  }
  for (let va = pt.skipNone(start, end, PAGE_SIZE); va < end; va = pt.walkNext(va, end, PAGE_SIZE)) {
    const pfn = followPage(mm, va);
    if (pfn < 0 || m.mapcount(pfn) !== 1) continue;
    const f = m.flags(pfn);
    if (!(f & PG.anon) && !(f & PG.shmem && !(f & PG.diskFile))) continue;
    shrinkFolio(k, pfn);
  }
}

/** swapin_walk_pmd_entry over [start, end): each swap PTE's page read into the swap cache, not waited for. */
function willneedSwapin(k: Kernel, mm: MmStruct, start: number, end: number, nid: number): void {
  const pt = mm.pgtable;
  for (let va = pt.skipNone(start, end, PAGE_SIZE); va < end; va = pt.walkNext(va, end, PAGE_SIZE)) {
    if (!swapPteAt(mm, va)) continue;
    const t = pt.pmds.get(PageTable.pmdKey(va)) as PteTable;
    readSwapCache(k, swpEntryOfPte(t.ptes[Math.floor(va / PAGE_SIZE) & 511]!), nid);
  }
}

/** MADV_REMOVE: punch a hole in a shared writable mapping's backing file. */
/** madvise_remove's checks: -errno, or the end. */
function removeCheck(vma: Vma, end: number): number {
  if (vma.flags & VM.LOCKED) return neg('EINVAL');
  if (!vma.file) return neg('EINVAL');
  if (!(vma.flags & VM.SHARED && vma.flags & VM.MAYWRITE)) return neg('EACCES');
  return end;
}

function madviseRemove(k: Kernel, vma: Vma, start: number, end: number): SysRet {
  const file = vma.file!;
  const psize = file.kind === 'hugetlbfs' ? 2 ** file.hugeShift : PAGE_SIZE;
  const i0 = Math.ceil((vma.pgoff * PAGE_SIZE + (start - vma.start)) / psize);
  const i1 = Math.floor((vma.pgoff * PAGE_SIZE + (end - vma.start)) / psize);
  // Unmap the range from every process mapping the file, then drop the pages.
  for (const proc of k.processes.values())
    for (const v of proc.mm.vmas) {
      if (v.file !== file) continue;
      const s = Math.max(v.start, v.start + i0 * psize - v.pgoff * PAGE_SIZE);
      const e = Math.min(v.end, v.start + i1 * psize - v.pgoff * PAGE_SIZE);
      if (s < e) zapRange(k, proc.mm, v, s, e, false, 0);
    }
  // The file's pages in [i0, i1), in index order: shmem_undo_range walks the page cache, not every index.
  const indices =
    i1 - i0 > file.pages.size
      ? [...file.pages.keys()].filter((i) => i >= i0 && i < i1).sort((a, b) => a - b)
      : Array.from({ length: Math.max(0, i1 - i0) }, (_, j) => i0 + j);
  for (const i of indices) {
    const pfn = file.pages.get(i);
    if (pfn === undefined) continue;
    file.pages.delete(i);
    if (file.kind === 'hugetlbfs') k.hugetlb.freeHugePage(k.hugetlb.byShift(file.hugeShift)!, pfn, false);
    else k.freeUserPages(pfn, 0);
  }
  return 0;
}

/** Advice process_madvise accepts for another process (process_madvise_remote_valid). */
const REMOTE_ADVICE = new Set<number>([MADV.MADV_COLD, MADV.MADV_PAGEOUT, MADV.MADV_WILLNEED, MADV.MADV_COLLAPSE]);
export const UIO_MAXIOV = 1024;

/**
 * process_madvise(pidfd, iovec, vlen, advice, flags): bytes advised, or
 * -errno. Stops at the first failing iovec and returns what was advised
 * before it, if anything.
 */
export function sysProcessMadvise(
  k: Kernel,
  caller: Process,
  target: Process | undefined,
  iov: readonly [number, number][],
  advice: number,
  flags: number,
): SysRet {
  // Linux 6.18 defines no flag: any is EINVAL. The madv-collapse-flags proposal's two, for MADV_COLLAPSE only.
  const collapseFlags = k.thp.collapseProposals['madv-collapse-flags'] && advice === MADV.MADV_COLLAPSE ? MADV_F_COLLAPSE_MASK : 0;
  if (flags & ~collapseFlags) return neg('EINVAL');
  if (iov.length > UIO_MAXIOV) return neg('EINVAL');
  if (!target || target.exited) return neg('ESRCH');
  // mm_access(task, PTRACE_MODE_READ_FSCREDS) turns a failed ptrace check into -EACCES.
  const remote = target !== caller;
  if (remote && !ptraceMayAccess(caller, target, 'READ_FSCREDS')) return neg('EACCES');
  if (remote && !REMOTE_ADVICE.has(advice)) return neg('EINVAL');
  if (!VALID_ADVICE.has(advice)) return neg('EINVAL');
  // CAP_SYS_NICE only to influence another process; the caller's own mm needs none.
  if (remote && !capable(caller, 'CAP_SYS_NICE')) return neg('EPERM');
  let total = 0;
  for (const [, len] of iov) total += len;
  if (total > Number.MAX_SAFE_INTEGER) return neg('EINVAL');
  let done = 0;
  k.charge(k.costs.ns('syscall_null')); // one entry, however many iovecs
  for (const [base, len] of iov) {
    const r = sysMadvise(k, target, base, len, advice, target.mainThread, false, flags);
    if (r < 0) return done > 0 ? done : r;
    done += len;
  }
  return done;
}
