/**
 * Consistency checks over the whole simulated kernel (the spirit of
 * CONFIG_DEBUG_VM): every frame is free exactly once or owned exactly
 * once, mapcounts match the page tables, free blocks are aligned, VMAs do
 * not overlap (and their tree is ordered, balanced, with the right gaps),
 * page tables map only inside VMAs and count their slots in use per 1G
 * and 512G; swap slots, swap PTEs and the swap cache agree (verifySwap);
 * the LRU lists hold every anonymous folio once (verifyLru).
 * Used by the property tests after every random operation.
 */
import type { Kernel } from './kernel.ts';
import { PteTable, PTE_NONE, PTE_ZERO, pfnOfPte, swpEntryOfPte, type HgmFolio } from './mm_types.ts';
import { SWAPFILE_CLUSTER, swpEntry, swpOffset, swpType } from './swapfile.ts';
import { LRU_NAMES, NR_LRU_LISTS, folioNrPages, lruListOf } from './swap.ts';
import { hgmLeaves } from './hugetlb_hgm.ts';
import { PG } from './page.ts';
import { verifyMemcg } from './memcontrol.ts';
import { PAGE_SIZE, PMD_SIZE, PUD_SIZE, HPAGE_PMD_NR } from './uapi.ts';
import { shmemSwapped } from './shmem.ts';

export function verifyKernel(k: Kernel): string[] {
  const errs: string[] = [];
  const total = k.phys.totalPages();
  if (total > 1 << 24) return ['verifyKernel: host too large to check frame by frame'];
  // who[pfn]: 0 unaccounted, 1 free, 2 page table, 3 user page, 4 hugetlb
  const who = new Uint8Array(total);
  const claim = (pfn: number, n: number, kind: number, what: string): void => {
    for (let p = pfn; p < pfn + n; p++) {
      if (who[p]) {
        errs.push(`frame ${p} claimed twice (${who[p]} then ${kind}: ${what})`);
        return;
      }
      who[p] = kind;
    }
  };

  for (const z of k.phys.zones) {
    let free = z.endPfn - z.pristineStart;
    claim(z.pristineStart, z.endPfn - z.pristineStart, 1, `node ${z.nid} pristine`);
    for (const [pfn, order] of z.freeBlocks()) {
      if ((pfn - z.startPfn) % (1 << order)) errs.push(`free block ${pfn} of order ${order} is misaligned`);
      claim(pfn, 1 << order, 1, `free block order ${order}`);
      free += 1 << order;
    }
    if (free !== z.freePages) errs.push(`node ${z.nid}: free lists hold ${free} pages, counter says ${z.freePages}`);
  }

  for (const h of k.hugetlb.hstates) {
    let nfree = 0;
    for (const list of h.freeLists)
      for (const pfn of list) {
        claim(pfn, h.size / PAGE_SIZE, 4, `free hugetlb ${h.dirName}`);
        nfree++;
      }
    if (nfree !== h.free) errs.push(`${h.dirName}: ${nfree} pages on free lists, free counter ${h.free}`);
    if (h.resv > h.free) errs.push(`${h.dirName}: resv ${h.resv} > free ${h.free}`);
    if (h.surplus > h.nr || h.free > h.nr) errs.push(`${h.dirName}: counters inconsistent nr=${h.nr} free=${h.free} surplus=${h.surplus}`);
  }

  const m = k.mem;
  const ptRefs = new Map<number, number>();
  const entireRefs = new Map<number, number>();
  const userSeen = new Set<number>();
  /** Swap entry -> PTEs holding it. */
  const swapRefs = new Map<number, number>();
  const userPage = (pfn: number, n: number, what: string): void => {
    if (userSeen.has(pfn)) return;
    userSeen.add(pfn);
    claim(pfn, n, m.flags(pfn) & PG.hugetlb ? 4 : 3, what);
  };

  for (const p of k.processes.values()) {
    const mm = p.mm;
    for (let i = 0; i + 1 < mm.vmas.length; i++)
      if (mm.vmas[i]!.end > mm.vmas[i + 1]!.start) errs.push(`pid ${p.pid}: VMAs overlap at ${mm.vmas[i + 1]!.start.toString(16)}`);
    for (const v of mm.vmas)
      if (v.start >= v.end || v.start % PAGE_SIZE || v.end % PAGE_SIZE) errs.push(`pid ${p.pid}: bad VMA ${v.start}-${v.end}`);
    // The VMA tree (order, balance, free gaps) and the page table's counts of slots in use.
    for (const e of mm.verifyStructures()) errs.push(`pid ${p.pid}: ${e}`);
    // Huge pages mapped in parts (hugetlb_hgm.ts): owned whole, one entire mapping; their PTEs and PMD leaves
    // must be exactly the parts marked mapped.
    const partOf = (va: number): HgmFolio | undefined => mm.hgm.get(va - (va % PUD_SIZE)) ?? mm.hgm.get(va - (va % PMD_SIZE));
    for (const f of mm.hgm.values()) {
      entireRefs.set(f.pfn, (entireRefs.get(f.pfn) ?? 0) + 1);
      userPage(f.pfn, f.size / PAGE_SIZE, 'hugetlb page mapped in parts');
      let mapped = 0;
      hgmLeaves(mm, f, (va, pfn, size) => {
        if (pfn !== f.pfn + (va - f.haddr) / PAGE_SIZE) errs.push(`pid ${p.pid}: part at ${va.toString(16)} maps the wrong frame`);
        for (let a = va; a < va + size; a += PAGE_SIZE)
          if (f.mapped[(a - f.haddr) / PAGE_SIZE] !== 1) errs.push(`pid ${p.pid}: ${a.toString(16)} mapped, not marked`);
        mapped += size / PAGE_SIZE;
      });
      if (mapped !== f.nMapped) errs.push(`pid ${p.pid}: huge page at ${f.haddr.toString(16)} maps ${mapped} pages, counts ${f.nMapped}`);
    }
    let swapents = 0;
    for (const [key, e] of mm.pgtable.pmds) {
      if (mm.pgtable.pmdEntry(key) !== e)
        errs.push(`pid ${p.pid}: the PMD table array disagrees with pmds at ${(key * PMD_SIZE).toString(16)}`);
      const base = key * PMD_SIZE;
      const part = partOf(base);
      if (part) {
        if (e instanceof PteTable && e.tablePfn >= 0) claim(e.tablePfn, 1, 2, 'pte table');
        continue;
      }
      if (e instanceof PteTable) {
        if (e.tablePfn >= 0) claim(e.tablePfn, 1, 2, 'pte table');
        let used = 0;
        for (let i = 0; i < 512; i++) {
          const pte = e.ptes[i]!;
          if (pte === PTE_NONE) continue;
          used++;
          const va = base + i * PAGE_SIZE;
          if (!mm.vmaAt(va)) errs.push(`pid ${p.pid}: PTE outside any VMA at ${va.toString(16)}`);
          if (pte === PTE_ZERO) continue;
          if (pte < PTE_ZERO) {
            const entry = swpEntryOfPte(pte);
            swapRefs.set(entry, (swapRefs.get(entry) ?? 0) + 1);
            swapents++;
            continue;
          }
          const pfn = pfnOfPte(pte);
          ptRefs.set(pfn, (ptRefs.get(pfn) ?? 0) + 1);
          const f = m.flags(pfn);
          if (f & (PG.head | PG.tail)) userPage(pfn - (pfn % HPAGE_PMD_NR), HPAGE_PMD_NR, 'pte-mapped thp');
          else if (!(f & PG.shmem)) userPage(pfn, 1, 'anon page');
        }
        if (used !== e.used) errs.push(`pid ${p.pid}: PTE table at ${base.toString(16)} counts ${e.used} used, has ${used}`);
      } else {
        if (!mm.vmaAt(base)) errs.push(`pid ${p.pid}: PMD outside any VMA at ${base.toString(16)}`);
        if (e.isZero) continue;
        entireRefs.set(e.pfn, (entireRefs.get(e.pfn) ?? 0) + 1);
        userPage(e.pfn, PMD_SIZE / PAGE_SIZE, 'pmd-mapped page');
      }
    }
    if (swapents !== mm.swapents) errs.push(`pid ${p.pid}: ${swapents} swap PTEs, MM_SWAPENTS ${mm.swapents}`);
    for (const [key, e] of mm.pgtable.puds) {
      if (!mm.vmaAt(key * PUD_SIZE)) errs.push(`pid ${p.pid}: PUD outside any VMA`);
      entireRefs.set(e.pfn, (entireRefs.get(e.pfn) ?? 0) + 1);
      userPage(e.pfn, PUD_SIZE / PAGE_SIZE, 'pud-mapped page');
    }
  }
  for (const f of k.files.values()) {
    for (const pfn of f.pages.values()) {
      if (userSeen.has(pfn)) continue;
      userSeen.add(pfn);
      claim(pfn, f.kind === 'hugetlbfs' ? 2 ** (f.hugeShift - 12) : 1, f.kind === 'hugetlbfs' ? 4 : 3, 'file page');
    }
  }
  // A shmem file holds one reference to the entry of each page reclaim swapped out of it (shmem.ts).
  for (const f of k.files.values())
    for (const entry of shmemSwapped(f)?.values() ?? []) swapRefs.set(entry, (swapRefs.get(entry) ?? 0) + 1);
  errs.push(...verifySwap(k, swapRefs, userSeen, claim));
  errs.push(...verifyLru(k));
  errs.push(...verifyMemcg(k));
  for (const [pfn, n] of ptRefs) if (m.mapcount(pfn) !== n) errs.push(`frame ${pfn}: mapcount ${m.mapcount(pfn)} but ${n} PTEs map it`);
  for (const [pfn, n] of entireRefs)
    if (m.entireMapcount(pfn) !== n) errs.push(`frame ${pfn}: entire mapcount ${m.entireMapcount(pfn)} but ${n} PMD/PUD map it`);
  for (let p = 0; p < total; p++)
    if (!who[p]) {
      errs.push(`frame ${p} is neither free nor owned (leaked)`);
      break;
    }
  return errs;
}

/**
 * Swap: each slot's count is the number of PTEs holding its entry, its
 * cache bit says whether the swap cache has a folio for it, the areas'
 * counters add up; every swap cache folio carries PG_swapcache and its
 * entry, and one no page table maps is owned by the cache alone (claimed
 * here, kind 5), as are zram's frames.
 */
function verifySwap(
  k: Kernel,
  swapRefs: Map<number, number>,
  userSeen: Set<number>,
  claim: (pfn: number, n: number, kind: number, what: string) => void,
): string[] {
  const errs: string[] = [];
  const st = k.swap;
  const m = k.mem;
  for (const [entry, n] of swapRefs) {
    const si = st.info(entry);
    const off = swpOffset(entry);
    if (!si || off < 1 || off >= si.max) {
      errs.push(`swap PTE holds entry ${entry}, which names no slot of a swap area`);
      continue;
    }
    if (st.count(entry) !== n) errs.push(`swap entry ${swpType(entry)}:${off}: count ${st.count(entry)} but ${n} PTEs hold it`);
  }
  let free = 0;
  for (const si of st.areas) {
    if (!si) continue;
    let inuse = 0;
    for (let off = 1; off < si.max; off++) {
      const t = si.tables[Math.floor(off / SWAPFILE_CLUSTER)];
      if (!t) continue;
      const i = off % SWAPFILE_CLUSTER;
      const entry = swpEntry(si.type, off);
      if (t.count[i]! > 0 || t.cache[i]!) inuse++;
      if (t.count[i]! > 0 && !swapRefs.has(entry)) errs.push(`swap entry ${si.type}:${off}: count ${t.count[i]} but no PTE holds it`);
      if (!!t.cache[i] !== st.cache.has(entry))
        errs.push(`swap entry ${si.type}:${off}: cache bit ${t.cache[i]}, swap cache ${st.cache.has(entry)}`);
    }
    if (inuse !== si.inuse) errs.push(`swap area ${si.path}: ${inuse} slots in use, counter ${si.inuse}`);
    free += si.pages - si.inuse;
    for (const pfn of si.zramFrames) claim(pfn, 1, 5, 'zram frame');
  }
  if (free !== st.nrSwapPages) errs.push(`nr_swap_pages ${st.nrSwapPages}, free slots ${free}`);
  if (st.cache.size !== k.swapCachePages) errs.push(`swap cache holds ${st.cache.size} pages, SwapCached counts ${k.swapCachePages}`);
  for (const [entry, pfn] of st.cache) {
    if (!(m.flags(pfn) & PG.swapcache) || st.entryOf.get(pfn) !== entry)
      errs.push(`swap cache page ${pfn} for entry ${entry} lacks PG_swapcache or its entry`);
    if (m.mapcount(pfn) === 0 && !userSeen.has(pfn)) claim(pfn, 1, 5, 'swap cache page');
  }
  return errs;
}

/**
 * The LRU lists: each list's links are consistent, its folios carry PG_lru
 * and the list's flags and belong to its node, the page counts add up; and
 * every anonymous folio (mapped or in the swap cache) is on a list: nothing
 * is isolated between operations.
 */
function verifyLru(k: Kernel): string[] {
  const errs: string[] = [];
  const m = k.mem;
  const listed = new Set<number>();
  // Every group's lruvecs (the root's are the nodes' own); a folio is on its own group's.
  for (const lv of k.memcg.byId.flatMap((cg) => cg!.lruvecs)) {
    const id = (lv.memcg as { id: number } | null)?.id ?? 0;
    for (let lru = 0; lru < NR_LRU_LISTS; lru++) {
      let pages = 0;
      let prev = -1;
      for (let h = lv.head[lru]!; h >= 0; h = m.next(h)) {
        if (listed.has(h)) {
          errs.push(`lruvec ${lv.nid} ${LRU_NAMES[lru]}: frame ${h} listed twice (a cycle?)`);
          break;
        }
        listed.add(h);
        const f = m.flags(h);
        if (!(f & PG.lru) || lruListOf(f) !== lru) errs.push(`lruvec ${lv.nid} ${LRU_NAMES[lru]}: frame ${h} has flags ${f.toString(16)}`);
        if (k.phys.nodeOfPfn(h) !== lv.nid) errs.push(`lruvec ${lv.nid}: frame ${h} is on node ${k.phys.nodeOfPfn(h)}`);
        if (m.memcg(h) !== id) errs.push(`lruvec ${lv.nid} of memcg ${id}: frame ${h} is charged to memcg ${m.memcg(h)}`);
        if (m.prev(h) !== prev) errs.push(`lruvec ${lv.nid} ${LRU_NAMES[lru]}: frame ${h} prev link ${m.prev(h)}, expected ${prev}`);
        pages += folioNrPages(m, h);
        prev = h;
      }
      if (lv.tail[lru] !== prev) errs.push(`lruvec ${lv.nid} ${LRU_NAMES[lru]}: tail ${lv.tail[lru]}, last ${prev}`);
      if (pages !== lv.size(lru)) errs.push(`lruvec ${lv.nid} ${LRU_NAMES[lru]}: ${pages} pages listed, counter ${lv.size(lru)}`);
    }
  }
  const total = k.phys.totalPages();
  for (let pfn = 0; pfn < total; pfn++) {
    const f = m.flags(pfn);
    if (f & PG.buddy || f & PG.tail || f & PG.hugetlb) continue;
    const want = (f & PG.anon && m.owner(pfn) > 0) || f & PG.swapcache;
    if (want && !(f & PG.lru)) errs.push(`frame ${pfn} (anon or swap cache, flags ${f.toString(16)}) is on no LRU list`);
    if (f & PG.lru && !listed.has(pfn)) errs.push(`frame ${pfn} has PG_lru but is on no list`);
  }
  return errs;
}
