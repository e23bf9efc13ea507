/**
 * hugetlb pools (mm/hugetlb.c): one hstate per huge page size, with
 * per-node free lists and the nr/free/resv/surplus counters that
 * /proc/meminfo and /sys/kernel/mm/hugepages/* report, following Linux's
 * reservation rules: a mapping reserves its pages at mmap time (unless
 * MAP_NORESERVE), surplus pages are allocated within nr_overcommit_hugepages,
 * and a fault that can neither use a reservation nor find an unreserved
 * page gets SIGBUS.
 */
import type { Kernel } from './kernel.ts';
import { PG, OWNER_HUGETLB_POOL } from './page.ts';
import { MIGRATE_MOVABLE } from './page_alloc.ts';
import { PAGE_SHIFT, PMD_SHIFT, PUD_SHIFT } from './uapi.ts';
import { compactForOrder } from './compaction.ts';

export class Hstate {
  nr = 0;
  free = 0;
  resv = 0;
  surplus = 0;
  overcommit = 0; // nr_overcommit_hugepages
  readonly nrNode: number[];
  readonly freeNode: number[];
  readonly surplusNode: number[];
  /** Free hugetlb folios per node (head pfns), LIFO like enqueue/dequeue. */
  readonly freeLists: number[][];
  private nextNidToAlloc = 0;
  private nextNidToFree = 0;

  constructor(
    readonly shift: number,
    nrNodes: number,
  ) {
    this.nrNode = new Array<number>(nrNodes).fill(0);
    this.freeNode = new Array<number>(nrNodes).fill(0);
    this.surplusNode = new Array<number>(nrNodes).fill(0);
    this.freeLists = Array.from({ length: nrNodes }, () => []);
  }

  get size(): number {
    return 2 ** this.shift;
  }
  get order(): number {
    return this.shift - PAGE_SHIFT;
  }
  /** "hugepages-2048kB" */
  get dirName(): string {
    return `hugepages-${this.size / 1024}kB`;
  }
  get persistent(): number {
    return this.nr - this.surplus;
  }

  /** hstate_next_node_to_alloc: round-robin over the allowed nodes. */
  nextAllocNode(allowed: readonly number[]): number {
    const n = this.nrNode.length;
    for (let i = 0; i < n; i++) {
      const nid = (this.nextNidToAlloc + i) % n;
      if (allowed.includes(nid)) {
        this.nextNidToAlloc = (nid + 1) % n;
        return nid;
      }
    }
    return allowed[0] ?? 0;
  }
  nextFreeNode(allowed: readonly number[], pred: (nid: number) => boolean): number {
    const n = this.nrNode.length;
    for (let i = 0; i < n; i++) {
      const nid = (this.nextNidToFree + i) % n;
      if (allowed.includes(nid) && pred(nid)) {
        this.nextNidToFree = (nid + 1) % n;
        return nid;
      }
    }
    return -1;
  }
}

export class HugetlbState {
  readonly hstates: Hstate[];
  constructor(private readonly k: Kernel) {
    this.hstates = k.host.hugepageSizes.map((s) => new Hstate(Math.log2(s), k.host.nodes.length));
  }

  /** The default hstate (default_hugepagesz = 2M). */
  get defaultHstate(): Hstate | undefined {
    return this.bySize(2 ** PMD_SHIFT) ?? this.hstates[0];
  }

  bySize(size: number): Hstate | undefined {
    return this.hstates.find((h) => h.size === size);
  }
  byShift(shift: number): Hstate | undefined {
    return this.hstates.find((h) => h.shift === shift);
  }

  private allNodes(): number[] {
    return this.k.host.nodes.map((n) => n.id);
  }

  // --- fresh pages from the buddy allocator ---------------------------------

  /** alloc_fresh_hugetlb_folio on one node (__GFP_THISNODE|__GFP_RETRY_MAYFAIL). */
  private allocFresh(h: Hstate, nid: number): number {
    const k = this.k;
    let pfn: number;
    if (h.shift === PUD_SHIFT) {
      pfn = k.phys.zones[nid]!.allocContig(h.order);
    } else {
      pfn = k.phys.alloc({ order: h.order, mt: MIGRATE_MOVABLE, nid, thisNode: true });
      if (pfn < 0 && compactForOrder(k, nid, h.order, 'direct')) {
        pfn = k.phys.alloc({ order: h.order, mt: MIGRATE_MOVABLE, nid, thisNode: true });
      }
    }
    if (pfn < 0) {
      if (h.shift !== PUD_SHIFT) k.vmstat.count('htlb_buddy_alloc_fail');
      return -1;
    }
    if (h.shift !== PUD_SHIFT) k.vmstat.count('htlb_buddy_alloc_success');
    this.prepCompound(pfn, h);
    return pfn;
  }

  private prepCompound(pfn: number, h: Hstate): void {
    const m = this.k.mem;
    const n = 2 ** h.order;
    m.setFlags(pfn, PG.head | PG.hugetlb);
    m.setOrder(pfn, h.order);
    m.setOwner(pfn, OWNER_HUGETLB_POOL);
    for (let i = 1; i < n; i++) {
      m.setFlags(pfn + i, PG.tail | PG.hugetlb);
      m.setOwner(pfn + i, OWNER_HUGETLB_POOL);
    }
  }

  /** update_and_free_hugetlb_folio: give the memory back to the buddy allocator. */
  private releaseToBuddy(h: Hstate, pfn: number): void {
    const k = this.k;
    const nid = k.phys.nodeOfPfn(pfn);
    if (h.shift === PUD_SHIFT) k.phys.zones[nid]!.freeContig(pfn, h.order);
    else k.phys.free(pfn, h.order);
  }

  private enqueue(h: Hstate, pfn: number): void {
    const nid = this.k.phys.nodeOfPfn(pfn);
    this.k.mem.setOwner(pfn, OWNER_HUGETLB_POOL);
    h.freeLists[nid]!.push(pfn);
    h.free++;
    h.freeNode[nid]!++;
  }

  private dequeueFromNode(h: Hstate, nid: number): number {
    const pfn = h.freeLists[nid]!.pop();
    if (pfn === undefined) return -1;
    h.free--;
    h.freeNode[nid]!--;
    return pfn;
  }

  // --- pool sizing (set_max_huge_pages) ---------------------------------------

  /**
   * Write nr_hugepages, globally (node undefined) or for one node, with
   * Linux's order: surplus pages become persistent first, then fresh pages
   * are allocated round-robin; shrinking frees free pages and turns the
   * rest into surplus.
   */
  setNrHugepages(h: Hstate, target: number, node?: number): void {
    const allowed = node === undefined ? this.allNodes() : [node];
    let count = target;
    if (node !== undefined) count = target + (h.nr - h.nrNode[node]!);
    while (h.surplus > 0 && count > h.persistent) {
      const nid = h.nextFreeNode(allowed, (n) => h.surplusNode[n]! > 0);
      if (nid < 0) break;
      h.surplus--;
      h.surplusNode[nid]!--;
    }
    while (count > h.persistent) {
      let ok = false;
      for (let i = 0; i < allowed.length && !ok; i++) {
        const nid = h.nextAllocNode(allowed);
        const pfn = this.allocFresh(h, nid);
        if (pfn >= 0) {
          h.nr++;
          h.nrNode[nid]!++;
          this.enqueue(h, pfn);
          ok = true;
        }
      }
      if (!ok) break;
    }
    const minCount = Math.max(count, h.resv + h.nr - h.free);
    while (minCount < h.persistent) {
      const nid = h.nextFreeNode(allowed, (n) => h.freeNode[n]! > 0);
      if (nid < 0) break;
      const pfn = this.dequeueFromNode(h, nid);
      h.nr--;
      h.nrNode[nid]!--;
      this.releaseToBuddy(h, pfn);
    }
    while (count < h.persistent) {
      const nid = h.nextFreeNode(allowed, (n) => h.nrNode[n]! - h.surplusNode[n]! > 0);
      if (nid < 0) break;
      h.surplus++;
      h.surplusNode[nid]!++;
    }
  }

  // --- reservations -----------------------------------------------------------

  /** hugetlb_acct_memory(h, delta > 0): reserve, growing surplus if allowed. 0 or -ENOMEM. */
  reserve(h: Hstate, delta: number): number {
    if (delta <= 0) return 0;
    const needed = h.resv + delta - h.free;
    if (needed > 0) {
      if (h.surplus + needed > h.overcommit) return -12;
      const got: number[] = [];
      for (let i = 0; i < needed; i++) {
        const pfn = this.allocSurplus(h);
        if (pfn < 0) {
          for (const p of got) this.freeSurplusNow(h, p);
          return -12;
        }
        got.push(pfn);
      }
      for (const p of got) this.enqueue(h, p);
    }
    h.resv += delta;
    return 0;
  }

  /** hugetlb_acct_memory(h, -n) / return_unused_surplus_pages. */
  unreserve(h: Hstate, n: number): void {
    if (n <= 0) return;
    h.resv -= n;
    let toFree = Math.min(n, h.surplus);
    while (toFree > 0) {
      const nid = h.nextFreeNode(this.allNodes(), (x) => h.surplusNode[x]! > 0 && h.freeNode[x]! > 0);
      if (nid < 0) break;
      const pfn = this.dequeueFromNode(h, nid);
      h.nr--;
      h.nrNode[nid]!--;
      h.surplus--;
      h.surplusNode[nid]!--;
      this.releaseToBuddy(h, pfn);
      toFree--;
    }
  }

  private allocSurplus(h: Hstate): number {
    // alloc_surplus_hugetlb_folio: gigantic pages are never surplus.
    if (h.shift === PUD_SHIFT) return -1;
    const allowed = this.allNodes();
    for (let i = 0; i < allowed.length; i++) {
      const nid = h.nextAllocNode(allowed);
      const pfn = this.allocFresh(h, nid);
      if (pfn >= 0) {
        h.nr++;
        h.nrNode[nid]!++;
        h.surplus++;
        h.surplusNode[nid]!++;
        return pfn;
      }
    }
    return -1;
  }

  private freeSurplusNow(h: Hstate, pfn: number): void {
    const nid = this.k.phys.nodeOfPfn(pfn);
    h.nr--;
    h.nrNode[nid]!--;
    h.surplus--;
    h.surplusNode[nid]!--;
    this.releaseToBuddy(h, pfn);
  }

  // --- faults -------------------------------------------------------------

  /**
   * A page for a fault: from the pool, nearest node first, consuming a
   * reservation when the fault has one; otherwise an unreserved free page or
   * a new surplus page. -1 when none (the fault gets SIGBUS).
   */
  allocForFault(h: Hstate, nid: number, reserved: boolean, nodemask?: readonly number[]): number {
    if (!reserved && h.free - h.resv <= 0) {
      if (h.surplus >= h.overcommit) return -1;
      const pfn = this.allocSurplus(h);
      return pfn; // not enqueued: goes straight to the faulting mapping
    }
    for (const n of this.k.phys.zonelists[nid]!) {
      if (h.freeNode[n]! === 0 || (nodemask && !nodemask.includes(n))) continue;
      const pfn = this.dequeueFromNode(h, n);
      if (reserved) h.resv--;
      return pfn;
    }
    return -1;
  }

  /** free_huge_folio: back to the pool, or to the buddy allocator while there is surplus. */
  freeHugePage(h: Hstate, pfn: number, restoreReserve: boolean): void {
    const nid = this.k.phys.nodeOfPfn(pfn);
    if (restoreReserve) h.resv++;
    const m = this.k.mem;
    m.setEntireMapcountZero(pfn);
    if (h.surplusNode[nid]! > 0) {
      h.nr--;
      h.nrNode[nid]!--;
      h.surplus--;
      h.surplusNode[nid]!--;
      this.releaseToBuddy(h, pfn);
    } else {
      this.enqueue(h, pfn);
    }
  }
}
