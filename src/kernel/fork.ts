/**
 * fork(2) for the address space (kernel/fork.c copy_process/dup_mm,
 * mm/mmap.c dup_mmap, mm/memory.c copy_page_range, mm/huge_memory.c
 * copy_huge_pmd, mm/hugetlb.c copy_hugetlb_page_range) and the end of an
 * address space (exit_mmap).
 *
 * The child gets a copy of every VMA but those marked MADV_DONTFORK
 * (VM_DONTCOPY), without VM_LOCKED, without userfaultfd registrations (no
 * UFFD_FEATURE_EVENT_FORK is modelled), with a policy of its own, and, for a
 * private hugetlb mapping, without the parent's reservations. Page tables
 * are copied only where a fault could not fill them back (vma_needs_copy: a
 * VMA with an anon_vma); a shared mapping's pages are found again by the
 * child's faults. A copied anonymous page is mapped by both processes, its
 * mapcount raised and PageAnonExclusive cleared, so the first write on
 * either side faults and copies it (do_wp_page, memory.ts); a THP stays
 * PMD-mapped in both (entire mapcount 2), a private hugetlb page likewise.
 * MADV_WIPEONFORK VMAs start empty in the child.
 *
 * The rmap of anonymous pages: a page records the mm that created it
 * (owner) and its virtual page number, which a fork does not change (the
 * child's VMAs are at the same addresses, and nothing here moves anonymous
 * memory between addresses of a shared page). The mms a fork makes form a
 * family, the anon_vma tree of Linux in one set: an rmap walk looks for the
 * page at that address in every mm of the owner's family
 * (anonMms), which finds every mapping Linux's anon_vma chain would.
 */
import type { Kernel } from './kernel.ts';
import type { Process, Thread } from './sched.ts';
import { HugeLeaf, MmStruct, PteTable, PTE_NONE, PTE_ZERO, VM, pfnOfPte, swpEntryOfPte, type Vma } from './mm_types.ts';
import { PG } from './page.ts';
import { HPAGE_PMD_NR, PAGE_SIZE, PMD_SIZE, PUD_SIZE, UFFD_FEATURE, neg } from './uapi.ts';
import { allocPteTable } from './memory.ts';
import { doMunmap, vmEnoughMemory } from './mmap.ts';
import { UnmodelledError } from './errors.ts';
import { exitFiles } from './shmem.ts';
import type { Mempolicy } from './mempolicy.ts';

/** mm id -> the mms sharing anonymous pages with it through fork (members alive; the map keeps ids of exited mms). */
const families = new WeakMap<Kernel, Map<number, Set<MmStruct>>>();
function familyMap(k: Kernel): Map<number, Set<MmStruct>> {
  let m = families.get(k);
  if (!m) families.set(k, (m = new Map()));
  return m;
}

/**
 * The mms that may map an anonymous page created by mm `ownerId` (the
 * anon_vma chain): its fork family, or the owner alone if it never forked
 * nor was forked.
 */
export function anonMms(k: Kernel, ownerId: number): Iterable<MmStruct> {
  const fam = families.get(k)?.get(ownerId);
  if (fam) return fam;
  const mm = k.mmById(ownerId);
  return mm ? [mm] : [];
}

/** A policy of the child's own (vma_dup_policy / mpol_dup): rebinding one does not move the other. */
function dupPolicy(pol: Mempolicy | null): Mempolicy | null {
  return pol && { ...pol, nodes: [...pol.nodes], userNodes: [...pol.userNodes], allowedAt: pol.allowedAt && [...pol.allowedAt] };
}

export interface ForkStats {
  /** Present PTEs, PMDs and PUDs copied into the child (copy_page_range's work). */
  entries: number;
}

/**
 * fork() by `thread`: a new process `name` whose mm is a copy of the
 * thread's process's (dup_mmap). Returns the child, or -errno: -ENOMEM when
 * VM_ACCOUNT memory cannot be committed again for the child.
 */
export function sysFork(k: Kernel, thread: Thread, name: string): Process | number {
  const parent = thread.process;
  const pmm = parent.mm;
  for (const v of pmm.vmas)
    if (v.uffdCtx && (v.uffdCtx.features ?? 0) & UFFD_FEATURE.UFFD_FEATURE_EVENT_FORK)
      throw new UnmodelledError('fork of an mm registered with a userfaultfd that asked for UFFD_FEATURE_EVENT_FORK is not modelled');
  if (pmm.hgm.size) throw new UnmodelledError('fork of hugetlb pages mapped in parts (hugetlb_hgm.ts proposals) is not modelled');
  let charge = 0;
  for (const v of pmm.vmas) if (!(v.flags & VM.DONTCOPY) && v.flags & VM.ACCOUNT) charge += v.size / PAGE_SIZE;
  if (charge && !vmEnoughMemory(k, charge)) return neg('ENOMEM');
  const child = k.createProcess(name, thread.cpu);
  const t = child.mainThread;
  t.mempolicy = dupPolicy(thread.mempolicy);
  child.cred.uid = parent.cred.uid;
  child.cred.gid = parent.cred.gid;
  child.cred.caps = new Set(parent.cred.caps);
  child.dumpable = parent.dumpable;
  child.memsAllowed = parent.memsAllowed && [...parent.memsAllowed];
  // dup_fd: the child's descriptors refer to the parent's open files.
  for (const f of parent.files) {
    f.opens++;
    child.files.push(f);
  }
  k.committedPages += charge;
  const cmm = child.mm;
  const stats: ForkStats = { entries: 0 };
  const nid = k.cpuToNode(thread.cpu);
  for (const v of pmm.vmas) {
    if (v.flags & VM.DONTCOPY) continue;
    const tmp = v.clone();
    tmp.policy = dupPolicy(v.policy);
    // dup_userfaultfd without UFFD_FEATURE_EVENT_FORK: the child's VMA is not registered (userfaultfd_reset_ctx).
    tmp.uffdCtx = null;
    tmp.flags &= ~(VM.UFFD_MISSING | VM.UFFD_WP | VM.UFFD_MINOR | VM.LOCKED | VM.LOCKONFAULT);
    if (tmp.flags & VM.WIPEONFORK) {
      tmp.anonVma = 0;
      tmp.forkedAnonVma = false;
    } else if (v.anonVma) {
      // anon_vma_fork: the child's VMA gets an anon_vma of its own, chained to the parent's.
      tmp.anonVma = k.newAnonVma();
      tmp.forkedAnonVma = true;
    }
    // hugetlb_dup_vma_private: a private mapping's reservations stay the parent's.
    if (tmp.isHugetlb()) {
      tmp.resv = null;
      tmp.hugetlbResvUnmapped = false;
    }
    if (tmp.file) tmp.file.mapCount++;
    cmm.insertVma(tmp);
    // vma_needs_copy: only a VMA with an anon_vma has PTEs a fault could not fill back.
    if (!(tmp.flags & VM.WIPEONFORK) && v.anonVma) copyPageRange(k, cmm, pmm, v, nid, stats);
  }
  cmm.cowPossible = pmm.cowPossible = true;
  // khugepaged_fork: a child of an mm on khugepaged's list joins it.
  if (k.khugepaged.mmHead.includes(pmm)) k.khugepaged.mmHead.push(cmm);
  const fam = familyMap(k);
  let f = fam.get(pmm.id);
  if (!f) fam.set(pmm.id, (f = new Set([pmm])));
  f.add(cmm);
  fam.set(cmm.id, f);
  k.charge(k.costs.ns('fork_mm') + stats.entries * k.costs.ns('fork_copy_pte'));
  return child;
}

/**
 * copy_page_range for one VMA: every present entry of the parent's range
 * is copied into the child's page table, the pages mapped once more.
 * Anonymous pages lose PageAnonExclusive (folio_try_dup_anon_rmap_*: no
 * page is ever pinned in memtwin, so none is copied at fork); page-cache
 * pages of a private file mapping are simply mapped again.
 */
function copyPageRange(k: Kernel, cmm: MmStruct, pmm: MmStruct, pvma: Vma, nid: number, stats: ForkStats): void {
  const m = k.mem;
  const pt = pmm.pgtable;
  if (pvma.isHugetlb()) {
    const hs = pvma.hugePageSize();
    const pud = hs === PUD_SIZE;
    const map = pud ? pt.puds : pt.pmds;
    for (let va = pt.skipNone(pvma.start, pvma.end, hs); va < pvma.end; va = pt.walkNext(va, pvma.end, hs)) {
      const key = Math.floor(va / hs);
      const leaf = map.get(key);
      if (!(leaf instanceof HugeLeaf)) continue;
      // copy_hugetlb_page_range: a private page is shared until one side writes (hugetlb_wp).
      m.addEntireMapcount(leaf.pfn, 1);
      m.clearFlags(leaf.pfn, PG.anonExclusive);
      (pud ? cmm.pgtable.puds : cmm.pgtable.pmds).set(key, new HugeLeaf(leaf.pfn, leaf.level));
      stats.entries++;
    }
    return;
  }
  for (let va = pt.skipNone(pvma.start, pvma.end, PAGE_SIZE); va < pvma.end;) {
    const key = Math.floor(va / PMD_SIZE);
    const stop = Math.min(pvma.end, (key + 1) * PMD_SIZE);
    const e = pt.pmds.get(key);
    if (e instanceof HugeLeaf) {
      // copy_huge_pmd: the huge zero page or a THP, mapped by both, write-protected in both.
      if (!e.isZero) {
        m.addEntireMapcount(e.pfn, 1);
        for (let j = 0; j < HPAGE_PMD_NR; j++) m.clearFlags(e.pfn + j, PG.anonExclusive);
        cmm.rssAnon += HPAGE_PMD_NR;
      }
      cmm.pgtable.pmds.set(key, new HugeLeaf(e.pfn, 'pmd'));
      stats.entries++;
    } else if (e instanceof PteTable) {
      let t = cmm.pgtable.pmds.get(key) as PteTable | undefined;
      for (let a = va; a < stop; a += PAGE_SIZE) {
        const i = Math.floor(a / PAGE_SIZE) & 511;
        const pte = e.ptes[i]!;
        if (pte === PTE_NONE) continue;
        if (!t) {
          t = allocPteTable(k, cmm, nid);
          cmm.pgtable.pmds.set(key, t);
        }
        t.ptes[i] = pte;
        t.used++;
        stats.entries++;
        if (pte === PTE_ZERO) continue;
        if (pte < PTE_ZERO) {
          // copy_nonpresent_pte: a swap entry is held by one more PTE (swap_duplicate), the child's MM_SWAPENTS.
          k.swap.dup(swpEntryOfPte(pte));
          cmm.swapents++;
          continue;
        }
        const pfn = pfnOfPte(pte);
        m.addMapcount(pfn, 1);
        const f = m.flags(pfn);
        if (f & PG.anon) {
          m.clearFlags(pfn, PG.anonExclusive);
          cmm.rssAnon++;
        } else if (f & PG.diskFile) cmm.rssFile++;
        else cmm.rssShmem++;
      }
    }
    va = pt.skipNone(stop, pvma.end, PAGE_SIZE);
  }
}

/**
 * exit_mmap of a process that exits: every VMA unmapped (pages it alone
 * mapped are freed, shared ones lose a mapping), the process gone from the
 * kernel's tables and from khugepaged's list.
 */
export function exitProcess(k: Kernel, p: Process): void {
  const mm = p.mm;
  for (const v of [...mm.vmas]) if (mm.hasVma(v)) doMunmap(k, mm, v.start, v.size);
  const i = k.khugepaged.mmHead.indexOf(mm);
  if (i >= 0) k.khugepaged.mmHead.splice(i, 1);
  familyMap(k).get(mm.id)?.delete(mm);
  exitFiles(k, p);
  p.exited = true;
  k.processes.delete(p.pid);
}
