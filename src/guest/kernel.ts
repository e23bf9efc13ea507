/**
 * The guest kernel, as much of it as the balloon needs: its page allocator
 * over the RAM the firmware reports, and guest tasks faulting memory in.
 * A fault allocates on the faulting vCPU's node (first touch) and writes
 * the page through GuestMemory, which charges the EPT violation and host
 * fault when the host has not backed the page yet.
 */
import type { GuestMemory } from '../hw/guest_memory.ts';
import { requireCosts, type CostTable } from '../virtio/timing.ts';
import { GuestPageAlloc, PAGE_SIZE, PageUse, type GuestAllocOptions } from './page_alloc.ts';

/**
 * fault_anon_4k_write: the guest kernel's own part of a write fault (the
 * same code as the host's: allocation, zeroing, PTE install), measured on
 * the host; GuestMemory adds what the host does underneath.
 */
export const GUEST_KERNEL_COSTS = ['fault_anon_4k_write'] as const;

export interface GuestVmEventCounters {
  pgfault: number;
  pgmajfault: number;
}

export class GuestKernel {
  readonly pages: GuestPageAlloc;
  readonly vmEvents: GuestVmEventCounters = { pgfault: 0, pgmajfault: 0 };

  constructor(
    readonly memory: GuestMemory,
    private readonly costs: CostTable,
    opts: GuestAllocOptions = {},
  ) {
    requireCosts(costs, GUEST_KERNEL_COSTS, 'guest kernel');
    this.pages = new GuestPageAlloc(memory.ramRanges(), opts);
  }

  /**
   * A task on vCPU `cpu` write-faults `nr` new pages of anonymous memory or
   * page cache. Returns the frames (fewer if the guest ran out) and the
   * virtual time it took.
   */
  faultIn(cpu: number, use: typeof PageUse.Anon | typeof PageUse.File, nr: number, fill = 1): { pfns: number[]; ns: number } {
    const pfns: number[] = [];
    let ns = 0;
    for (let i = 0; i < nr; i++) {
      const pfn = this.pages.allocPages({ order: 0, use, cpu });
      if (pfn < 0) break;
      this.vmEvents.pgfault++;
      ns += this.costs.nsOf('fault_anon_4k_write');
      ns += this.memory.access(cpu, pfn * PAGE_SIZE, PAGE_SIZE, PAGE_SIZE, true, fill);
      pfns.push(pfn);
    }
    return { pfns, ns };
  }

  /** A task on `cpu` writes pages it already has. */
  write(cpu: number, pfns: readonly number[], fill = 1): number {
    let ns = 0;
    for (const pfn of pfns) ns += this.memory.access(cpu, pfn * PAGE_SIZE, PAGE_SIZE, PAGE_SIZE, true, fill);
    return ns;
  }

  /** munmap / page cache eviction: the pages go back to the buddy allocator. */
  release(pfns: readonly number[]): void {
    for (const pfn of pfns) this.pages.freePages(pfn, 0);
  }
}
