/**
 * Transparent hugepages (mm/huge_memory.c): the sysfs policy, whether a
 * VMA may get a PMD-sized folio, the huge anonymous fault with its
 * defrag-dependent allocation, the huge zero page, and PMD splitting.
 */
import type { Kernel } from './kernel.ts';
import { folioRmap } from './migrate.ts';
import { PG } from './page.ts';
import { MIGRATE_MOVABLE } from './page_alloc.ts';
import { HugeLeaf, PageTable, PteTable, PTE_ZERO, VM, pteOf, type MmStruct, type Vma } from './mm_types.ts';
import { lruAdd, lruDel } from './swap.ts';
import { HPAGE_PMD_ORDER, HPAGE_PMD_NR, PMD_SIZE, alignDown } from './uapi.ts';
import { compactForOrder, wakeupKcompactd } from './compaction.ts';
import { allocPteTable } from './memory.ts';
import { anonVmaPrepare } from './mmap.ts';
import { accountPolicyAlloc, policyPlacement, type PolicyPlacement } from './mempolicy.ts';
import type { Thread } from './sched.ts';
import { memcgCharge } from './memcontrol.ts';

export const THP_ENABLED = ['always', 'madvise', 'never'] as const;
export const THP_DEFRAG = ['always', 'defer', 'defer+madvise', 'madvise', 'never'] as const;
export type ThpEnabled = (typeof THP_ENABLED)[number];
export type ThpDefrag = (typeof THP_DEFRAG)[number];

/**
 * MADV_COLLAPSE allocation variants argued over on linux-mm and never
 * merged, as memtwin features (/sys/kernel/memtwin/features/<name>, off by
 * default; khugepaged.ts, madvCollapseControl, has their rules and sources).
 */
export const MADV_COLLAPSE_PROPOSALS = ['madv-collapse-vma-gfp', 'madv-collapse-khugepaged-defrag', 'madv-collapse-flags'] as const;
export type MadvCollapseProposal = (typeof MADV_COLLAPSE_PROPOSALS)[number];

/** /sys/kernel/mm/transparent_hugepage/* with Linux's defaults. */
export class ThpSettings {
  enabled: ThpEnabled = 'madvise';
  defrag: ThpDefrag = 'madvise';
  useZeroPage = 1;
  /** hugepages-2048kB/enabled: "inherit" follows `enabled`. */
  pmdEnabled: ThpEnabled | 'inherit' = 'inherit';
  readonly khugepaged = {
    defrag: 1,
    pages_to_scan: 8 * HPAGE_PMD_NR,
    scan_sleep_millisecs: 10000,
    alloc_sleep_millisecs: 60000,
    max_ptes_none: HPAGE_PMD_NR - 1,
    max_ptes_swap: HPAGE_PMD_NR / 8,
    max_ptes_shared: HPAGE_PMD_NR / 2,
    pages_collapsed: 0,
    full_scans: 0,
  };
  /** The MADV_COLLAPSE proposals' switches (0 or 1): all 0 is Linux 6.18's merged rule. */
  readonly collapseProposals: Record<MadvCollapseProposal, number> = {
    'madv-collapse-vma-gfp': 0,
    'madv-collapse-khugepaged-defrag': 0,
    'madv-collapse-flags': 0,
  };

  /** The effective PMD-order mode. */
  get pmdMode(): ThpEnabled {
    return this.pmdEnabled === 'inherit' ? this.enabled : this.pmdEnabled;
  }
}

/** Whether [haddr, haddr + 2M) fits the VMA (thp_vma_suitable_order). */
export function thpSuitable(vma: Vma, haddr: number): boolean {
  return haddr >= vma.start && haddr + PMD_SIZE <= vma.end;
}

/**
 * thp_vma_allowable_order(vma, PMD_ORDER) for faults (and smaps). With
 * `smaps`, also the size check smaps does: an aligned 2M range must end
 * inside the VMA. `ignoreSysfs` is MADV_COLLAPSE's view.
 */
export function thpVmaAllowable(k: Kernel, vma: Vma, opts: { smaps?: boolean; ignoreSysfs?: boolean } = {}): boolean {
  if (vma.isHugetlb()) return false;
  if (vma.flags & (VM.NOHUGEPAGE | VM.PFNMAP | VM.IO | VM.MIXEDMAP | VM.DONTEXPAND)) return false;
  if (vma.file) return false; // shmem_enabled=never: shmem THP not modelled
  if (!opts.ignoreSysfs) {
    const mode = k.thp.pmdMode;
    if (mode === 'never') return false;
    if (mode === 'madvise' && !(vma.flags & VM.HUGEPAGE)) return false;
  }
  if (opts.smaps) return thpSuitable(vma, alignDown(vma.end - PMD_SIZE, PMD_SIZE));
  return true;
}

/** The defrag mode's allocation behaviour for this VMA (vma_thp_gfp_mask). */
export function thpGfp(k: Kernel, vma: Vma): { direct: boolean; kcompactd: boolean } {
  const madv = (vma.flags & VM.HUGEPAGE) !== 0;
  switch (k.thp.defrag) {
    case 'always':
      return { direct: true, kcompactd: false };
    case 'defer':
      return { direct: false, kcompactd: true };
    case 'defer+madvise':
      return madv ? { direct: true, kcompactd: false } : { direct: false, kcompactd: true };
    case 'madvise':
      return { direct: madv, kcompactd: false };
    case 'never':
      return { direct: false, kcompactd: false };
  }
}

/**
 * Allocate a PMD-sized folio for a fault on node `nid`: first the local node
 * only and without reclaim (as alloc_pages_mpol does for THP), then, if the
 * mode allows direct reclaim, any node and direct compaction. -1 on failure.
 */
export function allocThp(k: Kernel, vma: Vma, pl: PolicyPlacement): number {
  const gfp = thpGfp(k, vma);
  const nid = pl.nid;
  // GFP_TRANSHUGE(_LIGHT) has no __GFP_KSWAPD_RECLAIM; the defer modes add it (vma_thp_gfp_mask).
  const noKswapd = !gfp.kcompactd;
  if (pl.nodemask) {
    // A policy with a node set: its nodes only (then any for PREFERRED_MANY), compaction if the mode allows.
    let pfn = k.phys.alloc({ order: HPAGE_PMD_ORDER, mt: MIGRATE_MOVABLE, noKswapd, nid, nodemask: pl.nodemask });
    if (pfn < 0 && gfp.direct)
      for (const n of k.phys.zonelists[nid]!.filter((x) => pl.nodemask!.includes(x)))
        if (
          compactForOrder(k, n, HPAGE_PMD_ORDER, 'direct') &&
          (pfn = k.phys.alloc({ order: HPAGE_PMD_ORDER, mt: MIGRATE_MOVABLE, noKswapd, nid: n, thisNode: true })) >= 0
        )
          break;
    if (pfn < 0 && pl.fallbackAll) pfn = k.phys.alloc({ order: HPAGE_PMD_ORDER, mt: MIGRATE_MOVABLE, noKswapd, nid });
    return pfn;
  }
  let pfn = k.phys.alloc({ order: HPAGE_PMD_ORDER, mt: MIGRATE_MOVABLE, noKswapd, nid, thisNode: true });
  if (pfn >= 0 || !gfp.direct) {
    if (pfn < 0 && gfp.kcompactd) wakeupKcompactd(k, nid, HPAGE_PMD_ORDER);
    return pfn;
  }
  pfn = k.phys.alloc({ order: HPAGE_PMD_ORDER, mt: MIGRATE_MOVABLE, noKswapd, nid });
  if (pfn >= 0) return pfn;
  for (const n of k.phys.zonelists[nid]!) {
    if (compactForOrder(k, n, HPAGE_PMD_ORDER, 'direct')) {
      pfn = k.phys.alloc({ order: HPAGE_PMD_ORDER, mt: MIGRATE_MOVABLE, noKswapd, nid: n, thisNode: true });
      if (pfn >= 0) return pfn;
    }
  }
  return -1;
}

/** Mark a freshly allocated order-9 block as an anonymous compound folio of `mm`. */
export function prepAnonThp(k: Kernel, pfn: number, mm: MmStruct, haddr: number): void {
  k.mem.initAnonFolio(pfn, HPAGE_PMD_ORDER, mm.id, haddr / 4096, PG.anon | PG.young | PG.anonExclusive);
  folioUnqueueDeferredSplit(k, pfn);
  lruAdd(k, pfn, false);
}

/**
 * The deferred split queue (struct deferred_split): heads of anonymous large
 * folios marked partially mapped (PG_partially_mapped). One per kernel here,
 * not per node or memcg: only membership matters.
 */
const deferredSplitQueues = new WeakMap<Kernel, Set<number>>();
function splitQueue(k: Kernel): Set<number> {
  let q = deferredSplitQueues.get(k);
  if (!q) deferredSplitQueues.set(k, (q = new Set()));
  return q;
}

/**
 * deferred_split_folio(folio, partially_mapped = true): the folio lost some
 * of its mappings (__folio_remove_rmap) and waits, partially mapped, for a
 * split: by the shrinker under memory pressure (not modelled) or when it is
 * next migrated (migrate_pages_batch) or split by madvise.
 */
export function deferredSplitFolio(k: Kernel, head: number): void {
  const q = splitQueue(k);
  if (q.has(head)) return;
  q.add(head);
  k.vmstat.count('thp_deferred_split_page');
}

/** folio_test_partially_mapped. */
export function folioTestPartiallyMapped(k: Kernel, head: number): boolean {
  return (k.mem.flags(head) & PG.head) !== 0 && splitQueue(k).has(head);
}

/** folio_unqueue_deferred_split: the folio is split, freed or fresh. */
export function folioUnqueueDeferredSplit(k: Kernel, head: number): void {
  deferredSplitQueues.get(k)?.delete(head);
}

export type HugeFaultResult = 'done' | 'fallback';

/**
 * do_huge_pmd_anonymous_page: a read maps the huge zero page (when
 * use_zero_page), a write allocates and maps a THP; failure falls back to
 * PTEs and counts thp_fault_fallback.
 */
export function doHugePmdAnonymousPage(k: Kernel, mm: MmStruct, vma: Vma, va: number, write: boolean, thread: Thread): HugeFaultResult {
  const haddr = alignDown(va, PMD_SIZE);
  if (!thpSuitable(vma, haddr)) return 'fallback';
  anonVmaPrepare(k, mm, vma);
  k.khugepaged.enterVma(mm, vma);
  const key = PageTable.pmdKey(haddr);
  if (!write && k.thp.useZeroPage) {
    mm.pgtable.pmds.set(key, new HugeLeaf(-1, 'pmd'));
    k.charge(k.costs.ns('fault_anon_4k_read_zeropage'));
    return 'done';
  }
  const pl = policyPlacement(k, thread, vma, haddr, HPAGE_PMD_ORDER);
  const pfn = allocThp(k, vma, pl);
  if (pfn < 0) {
    k.vmstat.count('thp_fault_fallback');
    return 'fallback';
  }
  // vma_alloc_anon_folio_pmd: a THP its memory cgroup cannot take falls back to 4K pages (never an OOM kill).
  if (k.memcg.active && memcgCharge(k, mm, pfn, HPAGE_PMD_NR, { current: thread.process, order: HPAGE_PMD_ORDER }) < 0) {
    k.phys.free(pfn, HPAGE_PMD_ORDER);
    k.vmstat.count('thp_fault_fallback');
    k.vmstat.count('thp_fault_fallback_charge');
    return 'fallback';
  }
  accountPolicyAlloc(k, pl, pfn, HPAGE_PMD_ORDER, k.cpuToNode(thread.cpu));
  prepAnonThp(k, pfn, mm, haddr);
  k.mem.addEntireMapcount(pfn, 1);
  mm.pgtable.pmds.set(key, new HugeLeaf(pfn, 'pmd'));
  mm.rssAnon += HPAGE_PMD_NR;
  k.vmstat.count('thp_fault_alloc');
  k.chargeMem(k.costs.ns('fault_thp_2m_write'), HPAGE_PMD_NR * k.hot.zero4k, -1, k.phys.nodeOfPfn(pfn), PMD_SIZE, k.cpuToNode(thread.cpu));
  return 'done';
}

/**
 * __split_huge_pmd: replace a PMD leaf with a PTE table mapping the same
 * 512 pages (the folio itself stays whole, PTE-mapped). Counts thp_split_pmd.
 */
export function splitHugePmd(k: Kernel, mm: MmStruct, haddr: number, nid: number): PteTable {
  const key = PageTable.pmdKey(haddr);
  const leaf = mm.pgtable.pmds.get(key);
  if (!(leaf instanceof HugeLeaf)) throw new Error('splitHugePmd: not a huge PMD');
  const t = allocPteTable(k, mm, nid);
  const m = k.mem;
  if (leaf.isZero) {
    t.ptes.fill(PTE_ZERO);
  } else {
    for (let i = 0; i < HPAGE_PMD_NR; i++) {
      t.ptes[i] = pteOf(leaf.pfn + i);
      m.addMapcount(leaf.pfn + i, 1);
    }
    m.addEntireMapcount(leaf.pfn, -1);
  }
  t.used = HPAGE_PMD_NR;
  mm.pgtable.pmds.set(key, t);
  k.vmstat.count('thp_split_pmd');
  k.charge(k.costs.ns('thp_split_pmd'));
  return t;
}

/** Total mappings of a folio: entire (PMD) plus per-page PTE mappings. */
export function folioMapped(k: Kernel, head: number, nr: number): number {
  return k.mem.entireMapcount(head) + k.mem.sumMapcount(head, nr);
}

/**
 * An anonymous THP lost some of its mappings (__folio_remove_rmap): free it
 * whole if nothing maps it any more; if no PMD maps it whole any more and
 * some of its pages are not mapped at all, it stays whole, partially
 * mapped, on the deferred split queue (a page another process still maps,
 * as after a fork, keeps it off); its unmapped pages are freed when it is
 * split (the shrinker's split under memory pressure is not modelled, so
 * only a migration or madvise splits it).
 */
export function folioUnmappedSome(k: Kernel, head: number): void {
  const m = k.mem;
  if (!(m.flags(head) & PG.head)) return;
  const order = m.order(head);
  const nr = 1 << order;
  if (folioMapped(k, head, nr) === 0) {
    folioUnqueueDeferredSplit(k, head);
    k.freeUserPages(head, order);
    return;
  }
  if (m.entireMapcount(head) > 0) return;
  for (let j = 0; j < nr; j++)
    if (m.mapcount(head + j) === 0) {
      deferredSplitFolio(k, head);
      return;
    }
}

/**
 * split_folio() of an anonymous THP of `mm` whose head is `head`, mapped at
 * `haddr`: a PMD mapping is split first, the folio becomes 512 order-0
 * pages, pages nothing maps are freed, and pages whose contents are all
 * zeros are remapped to the shared zero page and freed
 * (RMP_USE_SHARED_ZEROPAGE, Linux 6.12+). MADV_COLD, MADV_PAGEOUT and
 * MADV_FREE do this to a THP they cover only in part.
 */
export function splitAnonFolio(k: Kernel, mm: MmStruct, head: number, haddr: number, nid: number): void {
  const m = k.mem;
  // unmap_folio: another process's PMD mapping of the folio (shared since a fork) is split to PTEs first.
  if (m.flags(head) & PG.head && m.entireMapcount(head) > 0)
    for (const x of folioRmap(k, head, HPAGE_PMD_NR)) if (x.level === 'pmd' && x.mm !== mm) splitHugePmd(k, x.mm, x.va, nid);
  const key = PageTable.pmdKey(haddr);
  let t = mm.pgtable.pmds.get(key);
  if (t instanceof HugeLeaf) t = splitHugePmd(k, mm, haddr, nid);
  if (!(t instanceof PteTable) || !(m.flags(head) & PG.head)) return;
  folioUnqueueDeferredSplit(k, head);
  k.vmstat.count('thp_split_page');
  // The folio leaves its LRU list whole; the pages that stay mapped return one by one with its LRU state
  // (lru_add_split_folio puts them beside the head; memtwin at the list's head).
  const lruState = m.flags(head) & (PG.active | PG.referenced | PG.workingset | PG.young);
  const listed = (m.flags(head) & PG.lru) !== 0;
  if (listed) lruDel(k, head);
  for (let i = 0; i < HPAGE_PMD_NR; i++) {
    m.clearFlags(head + i, PG.head | PG.tail);
    m.setOrder(head + i, 0);
  }
  for (let i = 0; i < HPAGE_PMD_NR; i++) {
    const pfn = head + i;
    if (m.mapcount(pfn) === 1 && !(m.flags(pfn) & PG.nonzero)) {
      const j = (m.index(pfn) - haddr / 4096) | 0;
      if (j >= 0 && j < HPAGE_PMD_NR && t.ptes[j] === pteOf(pfn)) {
        t.ptes[j] = PTE_ZERO;
        m.addMapcount(pfn, -1);
        mm.rssAnon--;
      }
    }
    if (m.mapcount(pfn) === 0) k.freeUserPages(pfn, 0);
    else if (listed) {
      m.addFlags(pfn, lruState);
      lruAdd(k, pfn, false);
    }
  }
}

/** The THP (head pfn) mapped at va in mm, if va is inside an anonymous large folio. */
export function anonFolioAt(k: Kernel, mm: MmStruct, va: number, followPage: (mm: MmStruct, va: number) => number): number {
  const pfn = followPage(mm, va);
  if (pfn < 0) return -1;
  const f = k.mem.flags(pfn);
  if (!(f & PG.anon) || !(f & (PG.head | PG.tail)) || f & PG.hugetlb) return -1;
  return pfn - (pfn % HPAGE_PMD_NR);
}
