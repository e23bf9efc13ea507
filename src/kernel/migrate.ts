/**
 * Page migration (mm/migrate.c): move a page's contents and identity to
 * another frame and repoint every mapping of it (the rmap walk), then free
 * the old frame. The content token travels with the page, which is how the
 * tests prove migration loses nothing.
 */
import { memcgMigrate, memcgMigrateDone } from './memcontrol.ts';
import type { Kernel } from './kernel.ts';
import { PG } from './page.ts';
import { HugeLeaf, PageTable, PteTable, pteOf, pfnOfPte, type Vma, type MmStruct } from './mm_types.ts';
import { HPAGE_PMD_NR, HPAGE_PMD_ORDER, PAGE_SIZE, PMD_SIZE, PUD_SIZE, alignDown, neg } from './uapi.ts';
import { MIGRATE_MOVABLE } from './page_alloc.ts';
import { followPage } from './memory.ts';
import { swapCacheReplace } from './swap_state.ts';
import { lruReplace } from './swap.ts';
import { deferredSplitFolio, folioMapped, folioTestPartiallyMapped, folioUnqueueDeferredSplit, splitAnonFolio } from './huge_memory.ts';
import { anonMms } from './fork.ts';
import { MAX_NUMNODES, memsAllowed } from './mempolicy.ts';
import { MPOL } from './uapi.ts';
import type { Process } from './sched.ts';
import { capable, ptraceMayAccess } from './cred.ts';
import type { MigrationBatch } from './migrate_entry.ts';

/** NR_MAX_BATCHED_MIGRATION (mm/migrate.c, HPAGE_PMD_NR with THP): the pages one migrate_pages_batch takes. */
export const NR_MAX_BATCHED_MIGRATION = HPAGE_PMD_NR;

/**
 * The batches of one migrate_pages() call, in virtual time. migrate_pages
 * cuts its list of folios into batches of NR_MAX_BATCHED_MIGRATION pages
 * (the folio that reaches the limit is the batch's last, so a batch of THPs
 * holds one) and migrate_pages_batch unmaps every folio of a batch (migration
 * entries in their PTEs/PMDs), flushes the TLB once, then copies each folio
 * and removes its migration entries; hugetlb folios go first, one at a time
 * (migrate_hugetlbs, unmap_and_move_huge_page). The cost profile has one
 * figure per page (page_migrate_4k) and no split of it between unmap and
 * copy, so memtwin keeps a batch's folios all under migration from the
 * batch's start to its end: in Linux a folio is remapped right after its own
 * copy, so a folio early in a batch is available up to a batch's time
 * (512 pages: about 1.3 ms with the default profile) sooner.
 *
 * Time is the calling task's: the clock plus what the task has charged so
 * far (Kernel.taskTime), or `clock` when the caller keeps its own.
 * The copies are charged through Kernel.chargeMem (migrateOne, moveFolio,
 * migrateHugetlb), so a loaded node's bandwidth stretches them, and the
 * windows with them: they are read from the task's charged time. When that
 * time is then spent on a CPU (a tool's task in a scenario), the batches
 * follow it there (Kernel.noteBatch, migrate_entry.ts followCpu).
 */
export class MigrateBatches {
  private cur: MigrationBatch | null = null;
  private pages = 0;

  constructor(
    private readonly k: Kernel,
    private readonly clock: () => number = () => k.clock.now() + (k.taskTime?.ns ?? 0),
  ) {}

  /** A folio of `nr` pages joins the batch being built, or starts the next one; `alone`: a batch of its own. */
  join(nr: number, alone = false): MigrationBatch {
    if (!this.cur || alone || this.pages >= NR_MAX_BATCHED_MIGRATION) {
      const t = this.clock();
      this.cur = { unmapAt: t, remapAt: t };
      this.pages = 0;
      this.k.noteBatch(this.cur);
    }
    const b = this.cur;
    this.pages = alone ? NR_MAX_BATCHED_MIGRATION : this.pages + nr;
    return b;
  }

  /**
   * The folio mapped at va (`bytes` long, it was on node `from`) is now the
   * `nr` frames at `pfn`: its batch ends no earlier than now, and the mm
   * keeps its migration entry.
   */
  moved(b: MigrationBatch, mm: MmStruct, va: number, bytes: number, from: number, pfn: number, nr: number): void {
    b.remapAt = Math.max(b.remapAt, this.clock());
    mm.migrating.add(alignDown(va, bytes), bytes, { batch: b, from, pfn, nr });
  }
}

/**
 * Every (mm, vma, va) whose PTE maps a 4K frame (rmap_walk), for anon and
 * page-cache pages: an anonymous page at its address in each mm of its
 * owner's fork family (the anon_vma chain, fork.ts), a page-cache page in
 * every VMA of its file (i_mmap).
 */
export function rmapWalk(k: Kernel, pfn: number, cb: (mm: MmStruct, vma: Vma, va: number) => void): void {
  const m = k.mem;
  const f = m.flags(pfn);
  if (f & PG.anon) {
    const va = m.index(pfn) * PAGE_SIZE;
    for (const mm of anonMms(k, m.owner(pfn))) {
      const vma = mm.vmaAt(va);
      if (vma && followPage(mm, va) === pfn) cb(mm, vma, va);
    }
    return;
  }
  if (f & PG.shmem) {
    const file = k.files.get(m.owner(pfn));
    if (!file) return;
    const idx = m.index(pfn);
    for (const p of k.processes.values()) {
      for (const vma of p.mm.vmas) {
        if (vma.file !== file) continue;
        const va = vma.start + (idx - vma.pgoff) * PAGE_SIZE;
        // A private mapping may have copied the page (do_cow_fault / wp_page_copy): its PTE maps another.
        if (va >= vma.start && va < vma.end && followPage(p.mm, va) === pfn) cb(p.mm, vma, va);
      }
    }
  }
}

/** One mapping of a folio: a PTE mapping page `pfn`, or a PMD/PUD leaf mapping the whole folio (pfn = head). */
export type FolioMapping = { mm: MmStruct; va: number; pfn: number; level: 'pte' | 'pmd' | 'pud' };

/**
 * rmap_walk of a whole folio (head, nr pages: a THP or a hugetlb page):
 * every PMD or PUD leaf mapping it whole and, for a THP, every PTE mapping
 * one of its pages, in every mm that may map it.
 */
export function folioRmap(k: Kernel, head: number, nr: number): FolioMapping[] {
  const m = k.mem;
  const out: FolioMapping[] = [];
  const look = (mm: MmStruct, va: number): void => {
    if (nr === PUD_SIZE / PAGE_SIZE) {
      const leaf = mm.pgtable.puds.get(PageTable.pudKey(va));
      if (leaf?.pfn === head) out.push({ mm, va, pfn: head, level: 'pud' });
      return;
    }
    const e = mm.pgtable.pmds.get(PageTable.pmdKey(va));
    if (e instanceof HugeLeaf) {
      if (e.pfn === head) out.push({ mm, va, pfn: head, level: 'pmd' });
    } else if (e && nr <= HPAGE_PMD_NR)
      for (let j = 0; j < nr; j++) {
        const pte = e.ptes[(Math.floor(va / PAGE_SIZE) + j) & 511]!;
        if (pte > 0 && pfnOfPte(pte) === head + j) out.push({ mm, va: va + j * PAGE_SIZE, pfn: head + j, level: 'pte' });
      }
  };
  const f = m.flags(head);
  if (f & PG.anon) {
    for (const mm of anonMms(k, m.owner(head))) look(mm, m.index(head) * PAGE_SIZE);
    return out;
  }
  const file = k.files.get(m.owner(head));
  if (!file) return out;
  const psize = file.kind === 'hugetlbfs' ? 2 ** file.hugeShift : PAGE_SIZE;
  const off = m.index(head) * psize;
  for (const p of k.processes.values())
    for (const vma of p.mm.vmas) {
      if (vma.file !== file) continue;
      const va = vma.start + off - vma.pgoff * PAGE_SIZE;
      if (va >= vma.start && va < vma.end) look(p.mm, va);
    }
  return out;
}

/** Whether some mm other than `mm` maps a page of the folio (the FOLIO_MM_IDS_SHARED test, exact here). */
export function folioMappedByOtherMm(k: Kernel, head: number, nr: number, mm: MmStruct): boolean {
  return folioRmap(k, head, nr).some((x) => x.mm !== mm);
}

/** The head frame of the hugetlb page holding pfn (2M pages are 2M-aligned, 1G pages 1G-aligned). */
function hugetlbHead(k: Kernel, pfn: number): number {
  const h2 = pfn - (pfn % HPAGE_PMD_NR);
  return k.mem.flags(h2) & PG.head ? h2 : pfn - (pfn % (PUD_SIZE / PAGE_SIZE));
}

/**
 * Migrate one order-0 page from `src` to the free frame `dst` (already
 * taken off the free lists). Counts pgmigrate_success. `mapped` hears of
 * each mapping repointed.
 */
export function migrateFrame(k: Kernel, src: number, dst: number, mapped?: (mm: MmStruct, va: number) => void): void {
  const m = k.mem;
  m.resetRange(dst, 1);
  m.setFlags(dst, m.flags(src) & ~PG.buddy);
  m.setOwner(dst, m.owner(src));
  m.setIndex(dst, m.index(src));
  m.setToken(dst, m.token(src));
  m.xchgLastCpupid(dst, m.lastCpupid(src)); // folio_migrate_flags
  m.addMapcount(dst, m.mapcount(src));
  rmapWalk(k, src, (mm, _vma, va) => {
    const e = mm.pgtable.pmds.get(PageTable.pmdKey(va));
    if (e instanceof PteTable) {
      const i = Math.floor(va / PAGE_SIZE) & 511;
      if (e.ptes[i]! > 0 && pfnOfPte(e.ptes[i]!) === src) {
        e.ptes[i] = pteOf(dst);
        mapped?.(mm, va);
      }
    }
  });
  if (m.flags(src) & PG.shmem) {
    const file = k.files.get(m.owner(src));
    file?.pages.set(m.index(src), dst);
  }
  if (m.flags(src) & PG.swapcache) swapCacheReplace(k, src, dst); // folio_migrate_mapping of a swap cache folio
  memcgMigrate(k, src, dst, 1); // mem_cgroup_migrate: the new folio takes the charge
  lruReplace(k, src, dst);
  memcgMigrateDone(k, src, 1);
  k.phys.free(src, 0);
  k.vmstat.count('pgmigrate_success');
}

/**
 * Migrate whatever maps va in mm (a 4K page, a whole THP, a hugetlb page)
 * to node `target`, as migrate_pages() does for one folio: the new memory
 * comes from the target node only (__GFP_THISNODE). migrate_pages_batch
 * splits a THP first when it is partially mapped (on the deferred split
 * queue) or when no huge page is free on the target (thp_migration_split);
 * the split maps its all-zero pages to the zero page and frees the pages
 * nothing maps, and the rest migrate one by one. The frames the folio's
 * pages now occupy are added to `moved`. Returns 0, or -ENOMEM when the
 * target has no memory. `misplaced`: NUMA balancing's migration, whose
 * new memory is allocated without reclaim (alloc_misplaced_dst_folio:
 * gfp & ~__GFP_RECLAIM, neither kswapd nor direct reclaim).
 */
export function migrateMappedPage(
  k: Kernel,
  mm: MmStruct,
  vma: Vma,
  va: number,
  target: number,
  moved?: Set<number>,
  batches?: MigrateBatches,
  misplaced = false,
): number {
  const m = k.mem;
  const pfn = followPage(mm, va);
  if (pfn < 0) return 0;
  const from = k.phys.nodeOfPfn(pfn);
  if (vma.isHugetlb()) {
    // A huge page mapped in parts (hugetlb_hgm.ts proposals) stays put: memtwin does not migrate those.
    const hsize = vma.hugePageSize();
    if (mm.hgm.has(alignDown(va, hsize))) return neg('EBUSY');
    const b = batches?.join(hsize / PAGE_SIZE, true);
    const r = migrateHugetlb(k, vma, pfn, target);
    const dst = followPage(mm, alignDown(va, hsize));
    moved?.add(dst);
    if (b && r === 0) batches!.moved(b, mm, va, hsize, from, dst, hsize / PAGE_SIZE);
    return r;
  }
  const f = m.flags(pfn);
  if (f & (PG.head | PG.tail)) {
    const head = pfn - (pfn % HPAGE_PMD_NR);
    const haddr = alignDown(va, PMD_SIZE);
    if (!folioTestPartiallyMapped(k, head)) {
      // alloc_migration_target drops __GFP_RECLAIM for a large folio (GFP_TRANSHUGE adds direct reclaim back,
      // which memtwin's order > 0 requests do not take): it never wakes kswapd.
      const dst = k.phys.alloc({ order: HPAGE_PMD_ORDER, mt: MIGRATE_MOVABLE, nid: target, thisNode: true, noKswapd: true });
      if (dst >= 0) {
        const b = batches?.join(HPAGE_PMD_NR);
        moveFolio(k, head, dst);
        if (b) batches!.moved(b, mm, haddr, PMD_SIZE, from, dst, HPAGE_PMD_NR);
        moved?.add(dst);
        k.vmstat.count('thp_migration_success');
        k.vmstat.count('pgmigrate_success', HPAGE_PMD_NR);
        return 0;
      }
    }
    k.vmstat.count('thp_migration_split');
    splitAnonFolio(k, mm, head, haddr, k.cpuToNode(0));
    // The split pages go back on the list and migrate one by one; those the split freed (unmapped, or replaced by
    // the zero page) count as migrated (migrate_folio_unmap: "Folio was freed from under us").
    let err = 0;
    let freed = HPAGE_PMD_NR;
    for (let i = 0; i < HPAGE_PMD_NR; i++) {
      const sub = followPage(mm, haddr + i * PAGE_SIZE);
      if (sub < head || sub >= head + HPAGE_PMD_NR) continue;
      freed--;
      const r = migrateRecorded(k, mm, haddr + i * PAGE_SIZE, sub, target, batches, misplaced);
      if (r < 0) err = r;
      else moved?.add(followPage(mm, haddr + i * PAGE_SIZE));
    }
    k.vmstat.count('pgmigrate_success', freed);
    return err;
  }
  const r = migrateRecorded(k, mm, va, pfn, target, batches, misplaced);
  if (r === 0) moved?.add(followPage(mm, va));
  return r;
}

/** migrateOne for the 4K page mapped at va, in the batches' time when given. */
function migrateRecorded(
  k: Kernel,
  mm: MmStruct,
  va: number,
  src: number,
  target: number,
  batches?: MigrateBatches,
  misplaced = false,
): number {
  const from = k.phys.nodeOfPfn(src);
  const b = batches?.join(1);
  const r = migrateOne(k, src, target, misplaced);
  if (b && r === 0) batches!.moved(b, mm, va, PAGE_SIZE, from, followPage(mm, va), 1);
  return r;
}

function migrateOne(k: Kernel, src: number, target: number, misplaced = false): number {
  const dst = k.phys.alloc(
    misplaced
      ? { order: 0, mt: MIGRATE_MOVABLE, nid: target, thisNode: true, noKswapd: true, noDirectReclaim: true }
      : { order: 0, mt: MIGRATE_MOVABLE, nid: target, thisNode: true },
  );
  if (dst < 0) {
    k.vmstat.count('pgmigrate_fail');
    return neg('ENOMEM');
  }
  const from = k.phys.nodeOfPfn(src);
  migrateFrame(k, src, dst);
  k.chargeMem(k.costs.ns('page_migrate_4k'), k.hot.copy4k, from, target, PAGE_SIZE);
  return 0;
}

/** Copy a THP's 512 pages to the huge page at dst and repoint its mappings (PMDs or PTEs, in every mm). */
function moveFolio(k: Kernel, head: number, dst: number): void {
  const m = k.mem;
  const maps = folioRmap(k, head, HPAGE_PMD_NR);
  m.resetRange(dst, HPAGE_PMD_NR);
  for (let i = 0; i < HPAGE_PMD_NR; i++) {
    m.setFlags(dst + i, m.flags(head + i));
    m.setOwner(dst + i, m.owner(head + i));
    m.setIndex(dst + i, m.index(head + i));
    m.setToken(dst + i, m.token(head + i));
    m.xchgLastCpupid(dst + i, m.lastCpupid(head + i)); // folio_migrate_flags
    m.addMapcount(dst + i, m.mapcount(head + i));
  }
  m.setOrder(dst, m.order(head));
  m.addEntireMapcount(dst, m.entireMapcount(head));
  folioUnqueueDeferredSplit(k, dst);
  for (const x of maps) {
    const e = x.mm.pgtable.pmds.get(PageTable.pmdKey(x.va))!;
    if (e instanceof HugeLeaf) e.pfn = dst;
    else e.ptes[Math.floor(x.va / PAGE_SIZE) & 511] = pteOf(dst + x.pfn - head);
  }
  // try_to_migrate_one unmaps a PTE-mapped folio one PTE at a time, so __folio_remove_rmap finds it partially
  // mapped (deferred_split_folio), and the new folio inherits the mark: its next migration splits it.
  if (maps.length && maps.every((x) => x.level === 'pte')) deferredSplitFolio(k, dst);
  folioUnqueueDeferredSplit(k, head);
  memcgMigrate(k, head, dst, HPAGE_PMD_NR);
  lruReplace(k, head, dst); // the new folio takes the old one's place on its LRU list
  memcgMigrateDone(k, head, HPAGE_PMD_NR);
  k.phys.free(head, HPAGE_PMD_ORDER);
  k.chargeMem(
    HPAGE_PMD_NR * k.costs.ns('page_migrate_4k'),
    HPAGE_PMD_NR * k.hot.copy4k,
    k.phys.nodeOfPfn(head),
    k.phys.nodeOfPfn(dst),
    PMD_SIZE,
  );
}

/** A hugetlb page moves to a free page of the same size on the target node's pool. */
function migrateHugetlb(k: Kernel, vma: Vma, pfn: number, target: number): number {
  const h = k.hugetlb.byShift(vma.hugeShift)!;
  const m = k.mem;
  const head = pfn - (pfn % 2 ** h.order); // hugetlb pages are naturally aligned
  const dst = k.hugetlb.allocForFault(h, target, false, [target]);
  if (dst < 0) {
    k.vmstat.count('pgmigrate_fail');
    return neg('ENOMEM');
  }
  const n = 2 ** h.order;
  const maps = folioRmap(k, head, n);
  for (let i = 0; i < n; i++) {
    m.setToken(dst + i, m.token(head + i));
    m.setOwner(dst + i, m.owner(head + i));
    m.setIndex(dst + i, m.index(head + i));
    m.addFlags(dst + i, m.flags(head + i) & PG.nonzero);
  }
  m.addFlags(dst, m.flags(head) & (PG.anon | PG.anonExclusive));
  m.addEntireMapcount(dst, m.entireMapcount(head));
  // Every leaf mapping it, in every mm (a private page shared by fork, a shared file's page).
  for (const x of maps) {
    const leaf = (x.level === 'pud' ? x.mm.pgtable.puds : x.mm.pgtable.pmds).get(
      x.level === 'pud' ? PageTable.pudKey(x.va) : PageTable.pmdKey(x.va),
    ) as HugeLeaf;
    leaf.pfn = dst;
  }
  if (vma.file) for (const [idx, p] of vma.file.pages) if (p === head) vma.file.pages.set(idx, dst);
  k.hugetlb.freeHugePage(h, head, false);
  k.vmstat.count('pgmigrate_success', n);
  k.chargeMem(n * k.costs.ns('page_migrate_4k'), n * k.hot.copy4k, k.phys.nodeOfPfn(head), target, n * PAGE_SIZE);
  return 0;
}

/**
 * folio_maybe_mapped_shared for the folio holding pfn: a small folio or a
 * hugetlb page mapped more than once; a THP mapped by more than one mm
 * (Linux tracks up to two mm ids per large folio, and is exact for two).
 * MPOL_MF_MOVE, move_pages without MPOL_MF_MOVE_ALL and khugepaged's
 * max_ptes_shared go by it.
 */
export function mappedShared(k: Kernel, pfn: number): boolean {
  const m = k.mem;
  const f = m.flags(pfn);
  if (f & PG.hugetlb) return m.entireMapcount(hugetlbHead(k, pfn)) > 1;
  if (!(f & (PG.head | PG.tail))) return m.mapcount(pfn) > 1;
  const head = pfn - (pfn % HPAGE_PMD_NR);
  if (folioMapped(k, head, HPAGE_PMD_NR) <= 1) return false;
  const maps = folioRmap(k, head, HPAGE_PMD_NR);
  return maps.some((x) => x.mm !== maps[0]!.mm);
}

export type MoveStatus = number | string;

/**
 * move_pages(2): query (nodes null) or move each page; per-page status is a
 * node or a negative errno name; the return value counts pages that could
 * not be migrated. Whole-call errors as kernel_move_pages and do_pages_move
 * check them, entry by entry.
 */
export function sysMovePages(
  k: Kernel,
  caller: Process,
  target: Process | undefined,
  pages: readonly number[],
  nodes: readonly number[] | null,
  flags: number,
): { ret: number; status?: MoveStatus[] } {
  if (flags & ~(MPOL.MPOL_MF_MOVE | MPOL.MPOL_MF_MOVE_ALL)) return { ret: neg('EINVAL') };
  if (flags & MPOL.MPOL_MF_MOVE_ALL && !capable(caller, 'CAP_SYS_NICE')) return { ret: neg('EPERM') };
  if (!target || target.exited) return { ret: neg('ESRCH') };
  // find_mm_struct: another process must pass ptrace_may_access(PTRACE_MODE_READ_REALCREDS).
  if (!ptraceMayAccess(caller, target, 'READ_REALCREDS')) return { ret: neg('EPERM') };
  const mm = target.mm;
  const status: MoveStatus[] = [];
  const st = (e: 'ENOENT' | 'EFAULT' | 'EACCES' | 'EBUSY' | 'ENOMEM'): string => `-${e}`;
  if (nodes === null) {
    for (const va of pages) {
      const vma = mm.vmaAt(va);
      if (!vma) status.push(st('EFAULT'));
      else {
        const pfn = followPage(mm, va);
        status.push(pfn === -2 ? st('ENOENT') : pfn === -1 ? st('EFAULT') : k.phys.nodeOfPfn(pfn));
      }
    }
    k.charge(pages.length * k.costs.nsOf('move_pages_query'));
    return { ret: 0, status };
  }
  const allowed = memsAllowed(k, target);
  let failed = 0;
  // do_pages_move queues consecutive entries for one node (add_folio_for_migration isolates each folio) and
  // migrates the batch when the node changes or an entry is not queued. memtwin migrates each folio at once and
  // remembers the address ranges of the folios isolated in the current batch: Linux would still find those
  // folios mapped there, isolated, on their old node, so folio_isolate_lru fails with -EBUSY.
  let batchNode = -1;
  let isolated: [number, number][] = [];
  // Each run of entries for one node is one migrate_pages() call (do_move_pages_to_node), in batches of its own.
  let batches = new MigrateBatches(k);
  const flush = (): void => {
    isolated = [];
    batchNode = -1;
    batches = new MigrateBatches(k);
  };
  for (let i = 0; i < pages.length; i++) {
    const node = nodes[i]!;
    if (node !== batchNode) flush();
    if (node < 0 || node >= MAX_NUMNODES || !k.host.nodes.some((n) => n.id === node && n.memory > 0)) return { ret: neg('ENODEV'), status };
    if (!allowed.includes(node)) return { ret: neg('EACCES'), status };
    batchNode = node;
    const va = pages[i]!;
    const vma = mm.vmaAt(va);
    if (!vma) {
      status.push(st('EFAULT'));
      flush();
      continue;
    }
    const pfn = followPage(mm, va);
    if (pfn === -2) status.push(st('ENOENT'));
    else if (isolated.some(([s, e]) => va >= s && va < e)) status.push(st('EBUSY'));
    else if (pfn === -1) status.push(st('EFAULT'));
    else if (k.phys.nodeOfPfn(pfn) === node) status.push(node);
    else if (mappedShared(k, pfn) && !(flags & MPOL.MPOL_MF_MOVE_ALL)) status.push(st('EACCES'));
    else {
      const size = vma.isHugetlb() ? vma.hugePageSize() : k.mem.flags(pfn) & (PG.head | PG.tail) ? PMD_SIZE : PAGE_SIZE;
      const s = alignDown(va, size);
      if (migrateMappedPage(k, mm, vma, va, node, undefined, batches) < 0) {
        failed++;
        status.push(st('ENOMEM'));
      } else status.push(node);
      isolated.push([s, s + size]);
      continue; // queued: the batch goes on
    }
    flush();
  }
  k.charge(pages.length * k.costs.nsOf('move_pages_same_node'));
  return { ret: failed, status };
}

/**
 * Every page of mm on node `source` moves to `dest` (migrate_to_node);
 * returns how many could not be moved.
 */
export function migrateToNode(k: Kernel, mm: MmStruct, source: number, dest: number, moveAll: boolean): number {
  let failed = 0;
  // The pages found are one migrate_pages() list, migrated in batches in VA order.
  const batches = new MigrateBatches(k);
  const pt = mm.pgtable;
  for (const vma of [...mm.vmas]) {
    const step = vma.isHugetlb() ? vma.hugePageSize() : PAGE_SIZE;
    // Page by page, skipping PMD slots and upper-level ranges with nothing mapped (walk_page_range).
    for (let va = pt.skipNone(vma.start, vma.end, step); va < vma.end; va = pt.walkNext(va, vma.end, step)) {
      const pfn = followPage(mm, va);
      if (pfn < 0 || k.phys.nodeOfPfn(pfn) !== source) continue;
      if (mappedShared(k, pfn) && !moveAll) continue;
      if (migrateMappedPage(k, mm, vma, va, dest, undefined, batches) < 0) failed++;
    }
  }
  return failed;
}
