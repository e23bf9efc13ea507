/**
 * The guest kernel, as much of it as the balloon needs: its page allocator
 * over the RAM the firmware reports, and guest tasks faulting memory in.
 * A fault allocates on the faulting vCPU's node (first touch) and writes
 * the page through GuestMemory, which charges the EPT violation and host
 * fault when the host has not backed the page yet (or the host's swap-in,
 * when the host has swapped the page out).
 *
 * Reclaim: the page cache (clean file pages: what a guest task read) is on
 * an LRU, oldest first, and a shrinker drops it when an allocation finds
 * no free page (direct reclaim, at least SWAP_CLUSTER_MAX pages a round,
 * counted as pgscan_direct/pgsteal_direct; the allocator counts the
 * stall, allocStalls), before the OOM notifiers (the
 * balloon's deflate-on-oom) and the OOM killer. Left out: watermarks and
 * kswapd (the guest reclaims only when an allocation fails), the
 * active/inactive split, dirty page cache and writeback, and guest swap
 * (a guest without a swap device, as cloud images ship: its anonymous
 * memory is given back only by freeing it or by the OOM killer). Dropping
 * a clean page costs no measured time here (no profile entry).
 */
import type { GuestMemory } from '../hw/guest_memory.ts';
import { requireCosts, type CostTable } from '../virtio/timing.ts';
import { GuestPageAlloc, MAX_PAGE_ORDER, PAGE_SIZE, PageUse, type GuestAllocOptions } from './page_alloc.ts';

/** What each page of a block written at once took (GuestMemory.writePages). */
const blockNs = new Float64Array(1 << MAX_PAGE_ORDER);

/**
 * fault_anon_4k_write: the guest kernel's own part of a write fault (the
 * same code as the host's: allocation, zeroing, PTE install), measured on
 * the host; GuestMemory adds what the host does underneath.
 */
export const GUEST_KERNEL_COSTS = ['fault_anon_4k_write'] as const;

export interface GuestVmEventCounters {
  pgfault: number;
  pgmajfault: number;
  /** Page cache pages the direct reclaim looked at, and dropped (all of them: clean). */
  pgscan_direct: number;
  pgsteal_direct: number;
}

/** SWAP_CLUSTER_MAX: direct reclaim's target per round. */
export const SWAP_CLUSTER_MAX = 32;

export class GuestKernel {
  readonly pages: GuestPageAlloc;
  readonly vmEvents: GuestVmEventCounters = { pgfault: 0, pgmajfault: 0, pgscan_direct: 0, pgsteal_direct: 0 };
  /** The page cache's LRU, oldest first (a Set keeps insertion order). */
  private readonly fileLru = new Set<number>();

  constructor(
    readonly memory: GuestMemory,
    private readonly costs: CostTable,
    opts: GuestAllocOptions = {},
  ) {
    requireCosts(costs, GUEST_KERNEL_COSTS, 'guest kernel');
    this.pages = new GuestPageAlloc(memory.ramRanges(), opts);
    // The page cache's shrinker comes first: the allocator runs shrinkers before the OOM notifiers.
    this.pages.shrinkers.push({ count: () => this.fileLru.size, scan: (nr) => this.shrinkPageCache(nr) });
  }

  /** Page cache pages on the LRU (Cached). */
  get pageCachePages(): number {
    return this.fileLru.size;
  }

  /**
   * Direct reclaim of the page cache: drop the oldest clean pages, at least
   * SWAP_CLUSTER_MAX (or what there is). Returns the pages freed.
   */
  private shrinkPageCache(nr: number): number {
    const want = Math.max(nr, SWAP_CLUSTER_MAX);
    let freed = 0;
    for (const pfn of this.fileLru) {
      if (freed >= want) break;
      this.fileLru.delete(pfn);
      this.pages.freePages(pfn, 0);
      freed++;
    }
    this.vmEvents.pgscan_direct += freed;
    this.vmEvents.pgsteal_direct += freed;
    return freed;
  }

  /**
   * A guest task's memory at known guest-physical addresses ([gpa, gpa +
   * len): what a guest workload accesses): its free pages are taken as
   * anonymous memory, so neither the balloon nor another allocation gets
   * them. Returns the pages taken.
   */
  claimRange(gpa: number, len: number): number {
    return this.pages.allocRange(Math.floor(gpa / PAGE_SIZE), Math.ceil(len / PAGE_SIZE), PageUse.Anon);
  }

  /**
   * A task on vCPU `cpu` write-faults `nr` new pages of anonymous memory or
   * page cache. Returns the frames (fewer if the guest ran out) and the
   * virtual time it took.
   */
  faultIn(cpu: number, use: typeof PageUse.Anon | typeof PageUse.File, nr: number, fill = 1): { pfns: number[]; ns: number } {
    const pfns: number[] = [];
    const { ns } = this.faultInto(cpu, use, nr, (pfn) => pfns.push(pfn), fill);
    return { pfns, ns };
  }

  /**
   * faultIn, handing each frame to `take` as it is faulted in instead of
   * collecting them (a guest_alloc of tens of GiB keeps them as runs).
   * Returns the pages faulted in and the virtual time it took.
   */
  faultInto(
    cpu: number,
    use: typeof PageUse.Anon | typeof PageUse.File,
    nr: number,
    take: (pfn: number) => void,
    fill = 1,
  ): { n: number; ns: number } {
    let ns = 0;
    let n = 0;
    const faultNs = this.costs.nsOf('fault_anon_4k_write');
    const req = { order: 0, use, cpu }; // one request for every page (allocPages keeps no reference to it)
    const block = 1 << MAX_PAGE_ORDER;
    while (n < nr) {
      // A whole block's worth of pages, when 1024 allocations would take one block in order (allocBlockPages) and
      // GuestMemory writes runs of pages (writePages): the same frames, state, counters and times as page by page.
      if (nr - n >= block && this.memory.writePages) {
        const first = this.pages.peekBlockPages(req);
        // The host's side first, then the guest's allocations: nothing else runs meanwhile (writePages promises
        // it, or declines) and neither side reads the other's state, so the order does not matter, except when
        // the host side fails (the VMM killed): then page by page would have allocated the pages up to the one
        // whose access failed, and handed on those before it.
        let wrote = false;
        if (first >= 0) {
          blockNs.fill(NaN);
          try {
            wrote = this.memory.writePages(cpu, first * PAGE_SIZE, block, fill, blockNs);
          } catch (e) {
            let j = 0;
            while (j < block && !Number.isNaN(blockNs[j]!)) j++;
            for (let q = 0; q <= j && q < block; q++) {
              this.pages.allocPages(req);
              this.vmEvents.pgfault++;
              if (q < j) {
                take(first + q);
                if (use === PageUse.File) this.fileLru.add(first + q);
              }
            }
            throw e;
          }
        }
        if (wrote) {
          this.pages.allocBlockPages(req);
          for (let j = 0; j < block; j++) {
            this.vmEvents.pgfault++;
            ns += faultNs;
            ns += blockNs[j]!;
            take(first + j);
            if (use === PageUse.File) this.fileLru.add(first + j);
          }
          n += block;
          continue;
        }
      }
      const pfn = this.pages.allocPages(req);
      if (pfn < 0) break;
      this.vmEvents.pgfault++;
      ns += faultNs;
      ns += this.memory.access(cpu, pfn * PAGE_SIZE, PAGE_SIZE, PAGE_SIZE, true, fill);
      take(pfn);
      if (use === PageUse.File) this.fileLru.add(pfn);
      n++;
    }
    return { n, ns };
  }

  /** A task on `cpu` writes pages it already has. */
  write(cpu: number, pfns: readonly number[], fill = 1): number {
    let ns = 0;
    for (const pfn of pfns) ns += this.memory.access(cpu, pfn * PAGE_SIZE, PAGE_SIZE, PAGE_SIZE, true, fill);
    return ns;
  }

  /** munmap / page cache eviction: the pages go back to the buddy allocator (page cache pages leave its LRU). */
  release(pfns: readonly number[]): void {
    for (const pfn of pfns) {
      this.fileLru.delete(pfn);
      this.pages.freePages(pfn, 0);
    }
  }
}
