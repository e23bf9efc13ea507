/**
 * The page cache and file faults (mm/filemap.c, mm/readahead.c, the fault
 * paths of mm/memory.c for files: do_read_fault, do_cow_fault,
 * do_shared_fault, do_fault_around) for shmem files (shared anonymous
 * memory, memfds, tmpfs files) and disk files, and the files an op-script
 * opens (`open`: a tmpfs file or a file on the host's disk).
 *
 * A file page is in the page cache or not (MappedFile.pages). A shmem page
 * that is not there is allocated zeroed by the fault (shmem_fault); a disk
 * file's is read from the disk, which costs filemap_read_4k per page (what
 * `memtwin calibrate` measured: reading a file whose cache was dropped,
 * through mmap, with this machine's readahead), with readahead:
 *
 * - mmap read-around (do_sync_mmap_readahead): a fault on a page not in the
 *   cache reads ra_pages pages (the disk's read_ahead_kb, from the host
 *   file; Linux's default is 128 KB) starting ra_pages/2 before it, and
 *   marks the page ra_pages/4 before the window's end PG_readahead;
 *   MADV_RANDOM reads the faulting page only, MADV_SEQUENTIAL ra_pages from
 *   it;
 * - a fault on a page marked PG_readahead reads the next window of the
 *   same size (do_async_mmap_readahead, the window not grown), its first
 *   page marked; fault-around never maps a marked page (so the fault comes);
 * - the mmap_miss heuristic (read-around stops after 100 misses more than
 *   hits) is not modelled, nor large folios: every page-cache page is 4K,
 *   and MADV_HUGEPAGE on a disk file (which reads PMD-sized folios) is
 *   refused as unmodelled. The readahead state is the file's (Linux keeps
 *   it per open file description).
 *
 * A read fault first maps the pages of its 64K window that the cache holds
 * (do_fault_around); a fault that had to read from the disk is retried
 * after the I/O, and the retry maps that window too (the faulting page
 * included, pages marked PG_readahead not).
 *
 * A private mapping maps page-cache pages read-only: a write copies the
 * page into a new anonymous page (do_cow_fault for a page not mapped yet,
 * wp_page_copy for one mapped). A shared mapping of a disk file maps a page
 * clean; the first write through it dirties it (page_mkwrite, a write
 * fault); a shmem page is never write-protected. A disk file's pages go on
 * the file LRU (swap.ts lruAdd), where reclaim drops clean ones (vmscan.ts);
 * dirty pages stay in the cache (there is no writeback). A shmem page goes
 * on the anon LRU; reclaim swaps it out (shmem.ts) and a fault swaps it in.
 */
import type { Kernel } from './kernel.ts';
import type { Process, Thread } from './sched.ts';
import { PG } from './page.ts';
import { MIGRATE_MOVABLE } from './page_alloc.ts';
import { PTE_NONE, VM, pteOf, type MappedFile, type MmStruct, type PteTable, type Vma } from './mm_types.ts';
import { PAGE_SIZE, neg } from './uapi.ts';
import { FAULT_AROUND_PAGES, FAULT_OK, FAULT_OOM, FAULT_SIGBUS, mapShmemPage, newAnonPage, type FaultResult } from './memory.ts';
import { allocPolicyPages, policyPlacement } from './mempolicy.ts';
import { memcgCharge } from './memcontrol.ts';
import { UnmodelledError } from './errors.ts';
import { shmemSwapin, shmemSwapped, sysFtruncate } from './shmem.ts';
import { lruAdd } from './swap.ts';
import { takePageCacheShadow, workingsetRefault } from './workingset.ts';

/** VM_READAHEAD_KB: a block device's default read_ahead_kb. */
export const VM_READAHEAD_KB = 128;

/** file->f_ra: the readahead window of a file, and its pages marked PG_readahead. */
interface RaState {
  start: number;
  size: number;
  asyncSize: number;
  marks: Set<number>;
}
const raStates = new WeakMap<MappedFile, RaState>();
function raOf(file: MappedFile): RaState {
  let ra = raStates.get(file);
  if (!ra) raStates.set(file, (ra = { start: 0, size: 0, asyncSize: 0, marks: new Set() }));
  return ra;
}

/** The files `open` made, by path ("tmpfs/NAME" or "disk/NAME"), per kernel: the simulated file systems. */
const namespaces = new WeakMap<Kernel, Map<string, MappedFile>>();

/** The pages of a file (i_size rounded up to pages); Infinity for an anonymous mapping's shmem file. */
function maxIndex(file: MappedFile): number {
  return file.size === null ? Infinity : Math.ceil(file.size / PAGE_SIZE);
}

/**
 * open(path, O_RDWR | O_CREAT) of a file of the op-script's temporary
 * directories: "tmpfs/NAME" (a tmpfs file, shmem) or "disk/NAME" (a file on
 * the host's disk). A new file has `size` bytes (0 if not given): on tmpfs a
 * sparse file, on the disk zeros written and flushed, none of it left in the
 * page cache. Opening an existing path opens the same file (and, with
 * `size`, truncates it to that size). Returns the file, or -EINVAL for a
 * path outside both directories.
 */
export function sysOpen(k: Kernel, p: Process, path: string, size: number | undefined): MappedFile | number {
  const m = /^(tmpfs|disk)\/([^/]+)$/.exec(path);
  if (!m) return neg('EINVAL');
  let ns = namespaces.get(k);
  if (!ns) namespaces.set(k, (ns = new Map()));
  let file = ns.get(path);
  if (file) {
    file.opens++;
    p.files.push(file);
    if (size !== undefined) {
      const r = sysFtruncate(k, file, size);
      if (r < 0) return r;
    }
    return file;
  }
  file = k.newFile(m[1] === 'tmpfs' ? 'shmem' : 'file');
  file.name = path;
  file.size = size ?? 0;
  file.opens = 1;
  p.files.push(file);
  ns.set(path, file);
  return file;
}

/** A new page-cache page of `file` at idx: flags, owner, rmap index, in the cache, on the LRU. */
function addToPageCache(k: Kernel, file: MappedFile, idx: number, pfn: number): void {
  const m = k.mem;
  m.setFlags(pfn, file.kind === 'file' ? PG.shmem | PG.diskFile : PG.shmem);
  m.setOwner(pfn, file.id);
  m.setIndex(pfn, idx);
  file.pages.set(idx, pfn);
  // folio_add_lru: a disk file's page on the file LRU, a shmem page (swap-backed) on the anon LRU, where reclaim
  // writes it to swap (shmem.ts shmemWriteout). A disk file's page read into a slot reclaim left a shadow in is
  // a refault first (filemap_add_folio: workingset_refault, which may activate it).
  if (file.kind === 'file') {
    m.addFlags(pfn, PG.fileLru);
    workingsetRefault(k, pfn, takePageCacheShadow(file, idx));
    lruAdd(k, pfn, true);
  } else if (file.kind === 'shmem') lruAdd(k, pfn, false);
}

/**
 * Read pages [start, start + n) of a disk file that the cache lacks (the
 * readahead's I/O), the page `mark` marked PG_readahead, as the task's
 * policy places them (page-cache pages follow the task policy, not a VMA's).
 * Returns false if memory ran out.
 */
function readPages(k: Kernel, file: MappedFile, start: number, n: number, mark: number, thread: Thread): boolean {
  const ra = raOf(file);
  const end = Math.min(start + n, maxIndex(file));
  let read = 0;
  for (let idx = Math.max(0, start); idx < end; idx++) {
    if (file.pages.has(idx)) continue;
    const pfn = allocPolicyPages(k, policyPlacement(k, thread, null, 0, 0), 0, MIGRATE_MOVABLE, k.cpuToNode(thread.cpu));
    if (pfn < 0 || !chargePageCache(k, pfn, thread)) return false;
    addToPageCache(k, file, idx, pfn); // the disk holds zeros: the page's contents (token 0) are what was read
    if (idx === mark) ra.marks.add(idx);
    read++;
  }
  k.charge(read * k.costs.ns('filemap_read_4k'));
  return true;
}

/**
 * filemap_fault's page for a disk file at idx: in the cache (a hit on a
 * PG_readahead page starts the next window), or read with readahead. The
 * frame, or -1 without memory.
 */
function diskPage(k: Kernel, vma: Vma, idx: number, thread: Thread): number {
  const file = vma.file!;
  const ra = raOf(file);
  const ra_pages = Math.floor((k.host.diskReadAheadKb ?? VM_READAHEAD_KB) / 4);
  let pfn = file.pages.get(idx);
  if (pfn !== undefined) {
    if (ra.marks.delete(idx) && ra_pages && !(vma.flags & VM.RAND_READ)) {
      // do_async_mmap_readahead → page_cache_async_ra: the next window, marked at its first page.
      ra.start += ra.size;
      ra.asyncSize = ra.size;
      if (!readPages(k, file, ra.start, ra.size, ra.start, thread)) return -1;
    }
    return pfn;
  }
  k.vmstat.count('pgmajfault');
  if (vma.flags & VM.HUGEPAGE)
    throw new UnmodelledError('readahead of PMD-sized folios into a disk file mapped with MADV_HUGEPAGE is not modelled');
  if (vma.flags & VM.RAND_READ || !ra_pages) {
    if (!readPages(k, file, idx, 1, -1, thread)) return -1;
  } else if (vma.flags & VM.SEQ_READ) {
    // page_cache_sync_ra: ra_pages from the fault (the first read of a file; no sequential history is kept).
    Object.assign(ra, { start: idx, size: ra_pages, asyncSize: ra_pages });
    if (!readPages(k, file, idx, ra_pages, idx, thread)) return -1;
  } else {
    // mmap read-around
    const start = Math.max(0, idx - Math.floor(ra_pages / 2));
    Object.assign(ra, { start, size: ra_pages, asyncSize: Math.floor(ra_pages / 4) });
    if (!readPages(k, file, start, ra_pages, start + ra_pages - Math.floor(ra_pages / 4), thread)) return -1;
  }
  pfn = file.pages.get(idx);
  return pfn ?? -1;
}

/**
 * shmem_fault's page at idx: the file's, or a new zeroed one placed by the
 * VMA's (shared) policy. The frame, or -1 without memory.
 */
function shmemPage(k: Kernel, vma: Vma, va: number, idx: number, thread: Thread): number {
  const file = vma.file!;
  const pfn = file.pages.get(idx);
  if (pfn !== undefined) return pfn;
  const entry = shmemSwapped(file)?.get(idx);
  if (entry !== undefined) {
    // shmem_swapin_folio: the page comes back from swap (the fault waits for the read).
    const r = shmemSwapin(k, file, idx, entry, k.cpuToNode(thread.cpu));
    k.charge(r.ns);
    return r.pfn;
  }
  const n = allocPolicyPages(k, policyPlacement(k, thread, vma, va, 0), 0, MIGRATE_MOVABLE, k.cpuToNode(thread.cpu));
  if (n < 0 || !chargePageCache(k, n, thread)) return -1;
  addToPageCache(k, file, idx, n);
  return n;
}

/**
 * mem_cgroup_charge of a new page-cache page (filemap_add_folio,
 * shmem_alloc_and_add_folio): to the memory cgroup of the task that brings
 * it in, before it joins its LRU (the group's). False, with the page freed,
 * when the group cannot take it even after reclaim and the OOM killer.
 */
function chargePageCache(k: Kernel, pfn: number, thread: Thread): boolean {
  if (!k.memcg.active) return true;
  if (memcgCharge(k, thread.process.mm, pfn, 1, { current: thread.process, order: 0 }) < 0 || thread.process.exited) {
    k.phys.free(pfn, 0);
    return false;
  }
  return true;
}

/**
 * do_fault_around / filemap_map_pages: map the pages of the 64K window
 * around slot i (clamped to the VMA, the PTE table and the file's end) that
 * the cache holds, up to date and not marked PG_readahead.
 */
function faultAround(k: Kernel, mm: MmStruct, vma: Vma, t: PteTable, i: number, va: number): void {
  const file = vma.file!;
  const vmaOff = (va - vma.start) / PAGE_SIZE;
  const from = Math.max(i - (i % FAULT_AROUND_PAGES), i - Math.min(i, vmaOff));
  const to = Math.min(from + FAULT_AROUND_PAGES, 512, i + vma.size / PAGE_SIZE - vmaOff) - 1;
  const ra = raStates.get(file);
  const max = maxIndex(file);
  for (let j = from; j <= to; j++) {
    if (t.ptes[j] !== PTE_NONE) continue;
    const idx = vma.pgoff + vmaOff + (j - i);
    if (idx >= max || ra?.marks.has(idx)) continue;
    const pfn = file.pages.get(idx);
    if (pfn !== undefined) mapShmemPage(k, mm, t, j, pfn);
  }
}

/**
 * A fault on a not-present page of a file mapping (shmem, tmpfs, disk; not
 * hugetlbfs): do_read_fault, do_cow_fault or do_shared_fault. Beyond the
 * file's end: SIGBUS.
 */
export function filemapFault(
  k: Kernel,
  mm: MmStruct,
  vma: Vma,
  t: PteTable,
  i: number,
  va: number,
  write: boolean,
  thread: Thread,
): FaultResult {
  const file = vma.file!;
  const idx = vma.pgoff + (va - vma.start) / PAGE_SIZE;
  if (idx >= maxIndex(file)) return FAULT_SIGBUS;
  const disk = file.kind === 'file';
  const shared = (vma.flags & VM.MAYSHARE) !== 0;
  // should_fault_around: not with uffd WP or MINOR registered (uffd_disable_fault_around).
  if (!write && !(vma.flags & (VM.UFFD_WP | VM.UFFD_MINOR))) {
    faultAround(k, mm, vma, t, i, va);
    if (t.ptes[i] !== PTE_NONE) {
      if (disk || !shared) mm.cowPossible = true;
      k.charge(k.costs.ns(disk ? 'fault_file_4k_read' : 'fault_anon_4k_read_zeropage'));
      return FAULT_OK;
    }
  }
  const cached = file.pages.has(idx) || (!disk && shmemSwapped(file)?.has(idx) === true);
  const pfn = disk ? diskPage(k, vma, idx, thread) : shmemPage(k, vma, va, idx, thread);
  if (pfn < 0) return FAULT_OOM;
  if (disk) k.charge(k.costs.ns('fault_file_4k_read'));
  else if (cached) k.charge(k.costs.ns('fault_anon_4k_read_zeropage'));
  else k.chargeMem(k.costs.ns('fault_anon_4k_write'), k.hot.zero4k, -1, k.phys.nodeOfPfn(pfn), PAGE_SIZE, k.cpuToNode(thread.cpu));
  if (write && !shared) {
    // do_cow_fault: the page-cache page is copied into a new anonymous page, which is mapped instead.
    const anon = newAnonPage(k, mm, vma, va, thread);
    if (anon < 0) return FAULT_OOM;
    k.mem.setToken(anon, k.mem.token(pfn));
    if (k.mem.flags(pfn) & PG.nonzero) k.mem.addFlags(anon, PG.nonzero);
    t.ptes[i] = pteOf(anon);
    t.used++;
    // newAnonPage charged the copy to the mm's memory cgroup (do_cow_fault's mem_cgroup_charge).
    k.chargeMem(
      k.costs.ns('fault_cow_4k'),
      k.hot.copy4k,
      k.phys.nodeOfPfn(pfn),
      k.phys.nodeOfPfn(anon),
      PAGE_SIZE,
      k.cpuToNode(thread.cpu),
    );
    return FAULT_OK;
  }
  if (write && disk) k.mem.addFlags(pfn, PG.dirty); // do_shared_fault: page_mkwrite
  if (disk || !shared) mm.cowPossible = true; // a clean disk page, or a page-cache page mapped privately
  // A read fault that waited for the disk is retried (VM_FAULT_RETRY) once the I/O is done, and the retry maps
  // the fault-around window of what is now cached (filemap_map_pages), the faulting page included.
  if (disk && !write && !cached && !(vma.flags & (VM.UFFD_WP | VM.UFFD_MINOR))) faultAround(k, mm, vma, t, i, va);
  if (t.ptes[i] === PTE_NONE) mapShmemPage(k, mm, t, i, pfn);
  return FAULT_OK;
}
