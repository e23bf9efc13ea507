/**
 * /proc as memtwin's kernel reports it (fs/proc/task_mmu.c, fs/proc/meminfo.c,
 * mm/vmstat.c): structured records for the op-script observation ops, and
 * the text files for people.
 */
import { hgmLeaves } from './hugetlb_hgm.ts';
import type { Kernel } from './kernel.ts';
import { HugeLeaf, PageTable, PteTable, PTE_NONE, PTE_ZERO, VM, VM_MNEMONICS, pfnOfPte, type MmStruct, type Vma } from './mm_types.ts';
import { PG } from './page.ts';
import { HPAGE_PMD_NR, PAGE_SIZE, PMD_SIZE, PUD_SIZE } from './uapi.ts';
import { thpVmaAllowable } from './huge_memory.ts';
import { policyString, type Mempolicy } from './mempolicy.ts';
import { formatSize } from '../util/input_error.ts';
import { vmaPolicy } from './shmem.ts';

export interface PagemapRun {
  n: number;
  present: boolean;
  node: number | null;
  size: '4K' | '2M' | '1G' | null;
  /** PM_UFFD_WP: the page (or the PTE marker where nothing is mapped) is userfaultfd-write-protected; absent otherwise. */
  uffd_wp?: true;
  /** PM_SWAP: the page is not present but in a swap area (its PTE holds a swap entry); absent otherwise. */
  swapped?: true;
  /**
   * A present page (not the zero page) without PM_MMAP_EXCLUSIVE: it is mapped more than once (by another process
   * after a fork, or twice in this one); absent otherwise.
   */
  shared?: true;
}

/** The pagemap runs of [start, start + len): present, node and mapping size per 4K page, run-length encoded. */
export function pagemap(k: Kernel, mm: MmStruct, start: number, len: number): PagemapRun[] {
  const runs: PagemapRun[] = [];
  const wpOf = (va: number): boolean => mm.uffdWp.size > 0 && mm.uffdWp.has(va / PAGE_SIZE);
  const push = (n: number, present: boolean, node: number | null, size: PagemapRun['size'], wp: boolean, shared = false): void => {
    if (n <= 0) return;
    const last = runs[runs.length - 1];
    if (
      last &&
      !last.swapped &&
      last.present === present &&
      last.node === node &&
      last.size === size &&
      (last.uffd_wp ?? false) === wp &&
      (last.shared ?? false) === shared
    )
      last.n += n;
    else {
      const r: PagemapRun = wp ? { n, present, node, size, uffd_wp: true } : { n, present, node, size };
      if (shared) r.shared = true;
      runs.push(r);
    }
  };
  const m = k.mem;
  const pushSwapped = (wp: boolean): void => {
    const last = runs[runs.length - 1];
    if (last && last.swapped && (last.uffd_wp ?? false) === wp) last.n++;
    else
      runs.push(
        wp
          ? { n: 1, present: false, node: null, size: null, uffd_wp: true, swapped: true }
          : { n: 1, present: false, node: null, size: null, swapped: true },
      );
  };
  const end = start + len;
  /** The write-protected pages of [start, end), in order (made when a run is longer than the set is large). */
  let wpSorted: number[] | null = null;
  const wpPagesIn = (va: number, stop: number): number[] => {
    wpSorted ??= [...mm.uffdWp].filter((pg) => pg >= start / PAGE_SIZE && pg < end / PAGE_SIZE).sort((a, b) => a - b);
    let lo = 0;
    let hi = wpSorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (wpSorted[mid]! < va / PAGE_SIZE) lo = mid + 1;
      else hi = mid;
    }
    const out: number[] = [];
    for (let i = lo; i < wpSorted.length && wpSorted[i]! < stop / PAGE_SIZE; i++) out.push(wpSorted[i]!);
    return out;
  };
  /** Pages [va, stop) that share one leaf (or are all unmapped): split only where the uffd-wp bit changes. */
  const pushLeaf = (va: number, stop: number, present: boolean, node: number | null, size: PagemapRun['size'], shared = false): void => {
    if (!mm.uffdWp.size) return push((stop - va) / PAGE_SIZE, present, node, size, false, shared);
    if ((stop - va) / PAGE_SIZE <= mm.uffdWp.size || va % PAGE_SIZE || stop % PAGE_SIZE) {
      for (let a = va; a < stop; a += PAGE_SIZE) push(1, present, node, size, wpOf(a), shared);
      return;
    }
    // A run longer than the set of bits: go from one write-protected page to the next.
    let a = va;
    for (const pg of wpPagesIn(va, stop)) {
      push(pg - a / PAGE_SIZE, present, node, size, false, shared);
      push(1, present, node, size, true, shared);
      a = (pg + 1) * PAGE_SIZE;
    }
    push((stop - a) / PAGE_SIZE, present, node, size, false, shared);
  };
  const pt = mm.pgtable;
  for (let va = start; va < end;) {
    // Nothing in use up to `next` (pagemap_pmd_range is not even called there): one unmapped run.
    const next = va % PAGE_SIZE ? va : pt.skipNone(va, end, PAGE_SIZE);
    if (next > va) {
      pushLeaf(va, next, false, null, null);
      va = next;
      continue;
    }
    const pud = pt.puds.size ? pt.puds.get(PageTable.pudKey(va)) : undefined;
    if (pud) {
      const stop = Math.min(end, (PageTable.pudKey(va) + 1) * PUD_SIZE);
      pushLeaf(va, stop, true, k.phys.nodeOfPfn(pud.pfn), '1G', m.entireMapcount(pud.pfn) > 1);
      va = stop;
      continue;
    }
    const key = PageTable.pmdKey(va);
    const stop = Math.min(end, (key + 1) * PMD_SIZE);
    const e = pt.pmds.get(key);
    if (e === undefined) pushLeaf(va, stop, false, null, null);
    else if (e instanceof HugeLeaf) {
      if (e.isZero) pushLeaf(va, stop, true, null, '2M');
      else if (m.flags(e.pfn) & PG.hugetlb) pushLeaf(va, stop, true, k.phys.nodeOfPfn(e.pfn), '2M', m.entireMapcount(e.pfn) > 1);
      else {
        // A PMD-mapped THP: pagemap_pmd_range asks folio_precise_page_mapcount of the PMD's page (the head: its PTE
        // mappings in other processes plus the entire mapcount) once, for all 512 entries.
        pushLeaf(va, stop, true, k.phys.nodeOfPfn(e.pfn), '2M', m.entireMapcount(e.pfn) + m.mapcount(e.pfn) > 1);
      }
    } else {
      for (let a = va; a < stop; a += PAGE_SIZE) {
        const pte = e.ptes[Math.floor(a / PAGE_SIZE) & 511]!;
        if (pte === PTE_NONE) push(1, false, null, null, wpOf(a));
        else if (pte < PTE_ZERO) pushSwapped(wpOf(a));
        else if (pte === PTE_ZERO) push(1, true, null, '4K', wpOf(a));
        else {
          // A page of a THP mapped by PTEs counts the folio's PMD mappings too (folio_precise_page_mapcount).
          const pfn = pfnOfPte(pte);
          const f = m.flags(pfn);
          const n =
            m.mapcount(pfn) +
            (f & PG.tail && !(f & PG.hugetlb) ? m.entireMapcount(pfn - (pfn % HPAGE_PMD_NR)) : f & PG.head ? m.entireMapcount(pfn) : 0);
          push(1, true, k.phys.nodeOfPfn(pfn), '4K', wpOf(a), n > 1);
        }
      }
    }
    va = stop;
  }
  return runs;
}

export interface SmapsRecord {
  Size: number;
  KernelPageSize: number;
  Rss: number;
  Anonymous: number;
  AnonHugePages: number;
  Shared_Hugetlb: number;
  Private_Hugetlb: number;
  THPeligible: number;
  VmFlags: string[];
}

/** Visit every mapped leaf of a VMA: (va, pfn or -1 for a zero page, size in bytes). */
function walkVma(mm: MmStruct, vma: Vma, cb: (va: number, pfn: number, size: number) => void): void {
  const pt = mm.pgtable;
  if (vma.isHugetlb()) {
    const hs = vma.hugePageSize();
    const map = hs === PUD_SIZE ? pt.puds : pt.pmds;
    for (let va = pt.skipNone(vma.start, vma.end, hs); va < vma.end; va = pt.walkNext(va, vma.end, hs)) {
      const leaf = map.get(hs === PUD_SIZE ? PageTable.pudKey(va) : PageTable.pmdKey(va));
      if (leaf instanceof HugeLeaf) cb(va, leaf.pfn, hs);
      else {
        const part = mm.hgm.get(va); // mapped in parts (hugetlb_hgm.ts): each part at its own size
        if (part) hgmLeaves(mm, part, cb);
      }
    }
    return;
  }
  for (let va = pt.skipNone(vma.start, vma.end, PAGE_SIZE); va < vma.end;) {
    const key = PageTable.pmdKey(va);
    const stop = Math.min(vma.end, (key + 1) * PMD_SIZE);
    const e = pt.pmds.get(key);
    if (e instanceof HugeLeaf) cb(key * PMD_SIZE, e.pfn, PMD_SIZE);
    else if (e instanceof PteTable) {
      for (let a = va; a < stop; a += PAGE_SIZE) {
        const pte = e.ptes[Math.floor(a / PAGE_SIZE) & 511]!;
        if (pte !== PTE_NONE && pte >= PTE_ZERO) cb(a, pte === PTE_ZERO ? -1 : pfnOfPte(pte), PAGE_SIZE);
      }
    }
    va = pt.skipNone(stop, vma.end, PAGE_SIZE);
  }
}

export function vmFlagNames(flags: number): string[] {
  return VM_MNEMONICS.filter(([bit]) => (flags & bit) !== 0).map(([, n]) => n);
}

/** The /proc/PID/smaps record of the VMA containing addr, or undefined. */
export function smaps(k: Kernel, mm: MmStruct, addr: number): SmapsRecord | undefined {
  const vma = mm.vmaAt(addr);
  return vma ? smapsOf(k, mm, vma) : undefined;
}

export function smapsOf(k: Kernel, mm: MmStruct, vma: Vma): SmapsRecord {
  const r: SmapsRecord = {
    Size: vma.size / 1024,
    // A VMA uffd-hugetlb-vma-split cut out has 4K pages until it merges back.
    KernelPageSize: (vma.hgm === 'split' ? PAGE_SIZE : vma.hugePageSize()) / 1024,
    Rss: 0,
    Anonymous: 0,
    AnonHugePages: 0,
    Shared_Hugetlb: 0,
    Private_Hugetlb: 0,
    THPeligible: thpVmaAllowable(k, vma, { smaps: true }) ? 1 : 0,
    VmFlags: vmFlagNames(vma.flags),
  };
  const m = k.mem;
  walkVma(mm, vma, (_va, pfn, size) => {
    if (pfn < 0) return; // the zero page is not a "normal" page: not in Rss
    const kb = size / 1024;
    if (vma.isHugetlb()) {
      if (m.entireMapcount(pfn) > 1) r.Shared_Hugetlb += kb;
      else r.Private_Hugetlb += kb;
      return;
    }
    r.Rss += kb;
    if (m.flags(pfn) & PG.anon) {
      r.Anonymous += kb;
      if (size === PMD_SIZE) r.AnonHugePages += kb;
    }
  });
  return r;
}

export interface NumaMapsRecord {
  policy: string;
  nodes: Record<string, number>;
  huge: boolean;
  /** Printed only when the VMA has pages (show_numa_map stops early otherwise): null then. */
  kernelpagesize_kB: number | null;
}

/**
 * The /proc/PID/numa_maps line of the VMA containing addr. The policy shown
 * is the VMA's, or else the task policy of the process's main thread
 * (show_numa_map falls back to proc_priv->task_mempolicy).
 */
export function numaMaps(k: Kernel, mm: MmStruct, addr: number, taskPolicy: Mempolicy | null = null): NumaMapsRecord | undefined {
  const vma = mm.vmaAt(addr);
  if (!vma) return undefined;
  const counts = new Map<number, number>();
  walkVma(mm, vma, (_va, pfn, size) => {
    if (pfn < 0) return;
    const n = vma.isHugetlb() ? 1 : size === PMD_SIZE ? HPAGE_PMD_NR : 1;
    const nid = k.phys.nodeOfPfn(pfn);
    counts.set(nid, (counts.get(nid) ?? 0) + n);
  });
  const nodes: Record<string, number> = {};
  for (const nid of [...counts.keys()].sort((a, b) => a - b)) nodes[String(nid)] = counts.get(nid)!;
  const any = counts.size > 0;
  return {
    policy: policyString(vmaPolicy(vma, vma.start) ?? taskPolicy),
    nodes,
    huge: vma.isHugetlb(),
    kernelpagesize_kB: any ? vma.hugePageSize() / 1024 : null,
  };
}

export interface HugepagesCounts {
  nr: number;
  free: number;
  resv?: number;
  surplus: number;
}
export interface MeminfoRecord {
  HugePages_Total: number;
  HugePages_Free: number;
  HugePages_Rsvd?: number;
  HugePages_Surp: number;
  hugepages: Record<string, HugepagesCounts>;
}

/** The hugetlb part of /proc/meminfo, or of /sys/devices/system/node/nodeN/meminfo. */
export function meminfo(k: Kernel, node?: number): MeminfoRecord {
  const hugepages: Record<string, HugepagesCounts> = {};
  for (const h of k.hugetlb.hstates) {
    hugepages[formatSize(h.size)] =
      node === undefined
        ? { nr: h.nr, free: h.free, resv: h.resv, surplus: h.surplus }
        : { nr: h.nrNode[node]!, free: h.freeNode[node]!, surplus: h.surplusNode[node]! };
  }
  const d = k.hugetlb.defaultHstate;
  const global = node === undefined;
  return {
    HugePages_Total: d ? (global ? d.nr : d.nrNode[node]!) : 0,
    HugePages_Free: d ? (global ? d.free : d.freeNode[node]!) : 0,
    ...(global ? { HugePages_Rsvd: d ? d.resv : 0 } : {}),
    HugePages_Surp: d ? (global ? d.surplus : d.surplusNode[node]!) : 0,
    hugepages,
  };
}

// --- text files -------------------------------------------------------------------

const kb = (pages: number): string => `${String(pages * 4).padStart(8)} kB`;

/** /proc/meminfo (the fields memtwin models). */
export function renderMeminfo(k: Kernel): string {
  const total = k.phys.totalPages();
  const free = k.phys.freePages();
  let anon = 0;
  let shmem = 0;
  let anonHuge = 0;
  let pgtables = 0;
  for (const p of k.processes.values()) {
    anon += p.mm.rssAnon;
    shmem += p.mm.rssShmem;
    pgtables += p.mm.pgtablesBytes / PAGE_SIZE;
    for (const e of p.mm.pgtable.pmds.values())
      if (e instanceof HugeLeaf && !e.isZero && !(k.mem.flags(e.pfn) & PG.hugetlb)) anonHuge += HPAGE_PMD_NR;
  }
  const d = k.hugetlb.defaultHstate;
  const hugetlbKb = k.hugetlb.hstates.reduce((s, h) => s + (h.nr * h.size) / 1024, 0);
  const line = (name: string, v: string): string => `${(name + ':').padEnd(16)}${v}\n`;
  return (
    line('MemTotal', kb(total)) +
    line('MemFree', kb(free)) +
    line('SwapCached', kb(k.swapCachePages)) +
    line('SwapTotal', kb(k.swap.totalSwapPages)) +
    line('SwapFree', kb(k.swap.nrSwapPages)) +
    line('AnonPages', kb(anon)) +
    line('Shmem', kb(shmem)) +
    line('PageTables', kb(pgtables)) +
    line('Committed_AS', kb(k.committedPages)) +
    line('AnonHugePages', kb(anonHuge)) +
    line('HugePages_Total', String(d?.nr ?? 0).padStart(8)) +
    line('HugePages_Free', String(d?.free ?? 0).padStart(8)) +
    line('HugePages_Rsvd', String(d?.resv ?? 0).padStart(8)) +
    line('HugePages_Surp', String(d?.surplus ?? 0).padStart(8)) +
    line('Hugepagesize', `${String((d?.size ?? 0) / 1024).padStart(8)} kB`) +
    line('Hugetlb', `${String(hugetlbKb).padStart(8)} kB`)
  );
}

/** /proc/swaps. */
export { renderSwaps } from './swapfile.ts';

/** /proc/pressure/memory (psi_show of psi_system for PSI_MEM): aggregates first, as a read does. */
export function renderPressureMemory(k: Kernel): string {
  return k.psi.show();
}

export function renderVmstat(k: Kernel): string {
  return Object.entries(k.vmstat.snapshot())
    .map(([n, v]) => `${n} ${v}\n`)
    .join('');
}

/** /proc/buddyinfo: free blocks per order, per node (one zone per node). */
export function renderBuddyinfo(k: Kernel): string {
  return k.phys.zones
    .map(
      (z) =>
        `Node ${z.nid}, zone   Normal ${z
          .nrFreeByOrder()
          .map((n) => String(n).padStart(6))
          .join(' ')}\n`,
    )
    .join('');
}

const hex = (n: number): string => n.toString(16).padStart(8, '0');

function vmaName(vma: Vma): string {
  if (vma.isHugetlb()) return '/anon_hugepage (deleted)';
  if (vma.file) return '/dev/zero (deleted)';
  return '';
}

function permString(vma: Vma): string {
  return `${vma.flags & VM.READ ? 'r' : '-'}${vma.flags & VM.WRITE ? 'w' : '-'}${vma.flags & VM.EXEC ? 'x' : '-'}${vma.flags & VM.MAYSHARE ? 's' : 'p'}`;
}

export function renderMaps(mm: MmStruct): string {
  return mm.vmas
    .map(
      (v) =>
        `${hex(v.start)}-${hex(v.end)} ${permString(v)} ${hex(v.pgoff * (v.file ? PAGE_SIZE : 0))} 00:00 0 ${vmaName(v)}`.trimEnd() + '\n',
    )
    .join('');
}

export function renderSmaps(k: Kernel, mm: MmStruct): string {
  let out = '';
  for (const v of mm.vmas) {
    const s = smapsOf(k, mm, v);
    out += `${hex(v.start)}-${hex(v.end)} ${permString(v)} 00000000 00:00 0 ${vmaName(v)}`.trimEnd() + '\n';
    for (const f of ['Size', 'KernelPageSize', 'Rss', 'Anonymous', 'AnonHugePages', 'Shared_Hugetlb', 'Private_Hugetlb'] as const)
      out += `${(f + ':').padEnd(16)}${String(s[f]).padStart(8)} kB\n`;
    out += `THPeligible:    ${String(s.THPeligible).padStart(8)}\nVmFlags: ${s.VmFlags.join(' ')} \n`;
  }
  return out;
}

export function renderNumaMaps(k: Kernel, mm: MmStruct, taskPolicy: Mempolicy | null = null): string {
  return mm.vmas
    .map((v) => {
      const r = numaMaps(k, mm, v.start, taskPolicy)!;
      const nodes = Object.entries(r.nodes)
        .map(([n, c]) => ` N${n}=${c}`)
        .join('');
      const tail = r.kernelpagesize_kB === null ? '' : `${nodes} kernelpagesize_kB=${r.kernelpagesize_kB}`;
      return `${v.start.toString(16)} ${r.policy}${v.isHugetlb() ? ' file=/anon_hugepage\\040(deleted) huge' : ''}${tail}\n`;
    })
    .join('');
}
