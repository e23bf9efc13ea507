/**
 * Free page reporting (mm/page_reporting.c): a delayed work item that walks
 * the free lists of order >= page_reporting_order, isolates blocks not yet
 * reported into a scatterlist of PAGE_REPORTING_CAPACITY entries, hands
 * each full list to the device (prdev->report), then puts the blocks back
 * at the tail of their lists flagged PG_reported, so they are not reported
 * again until they are allocated (or merged into a larger block).
 *
 * Each list gets a budget of DIV_ROUND_UP(nr_free, CAPACITY * 16) reports
 * per pass, about a sixteenth of the list plus one; when a budget runs out
 * the pass asks for another one PAGE_REPORTING_DELAY later, so an idle
 * guest is reported in about 16 passes (some 30 seconds), as Linux says.
 * A free of order >= page_reporting_order requests a pass, delayed by the
 * same 2 seconds so that a sizable queue builds up.
 *
 * The zone watermark check counts only PAGE_REPORTING_CAPACITY <<
 * page_reporting_order pages: the model has no low watermark.
 */
import { NSEC_PER_SEC } from '../sim/clock.ts';
import type { EventHandle, EventQueue } from '../sim/event_queue.ts';
import { requireCosts, type CostTable } from '../virtio/timing.ts';
import { MAX_PAGE_ORDER, PAGEBLOCK_ORDER, type GuestPageAlloc } from './page_alloc.ts';

/** Entries of the scatterlist handed to the device per report. */
export const PAGE_REPORTING_CAPACITY = 32;
/** PAGE_REPORTING_DELAY = 2 * HZ. */
export const PAGE_REPORTING_DELAY_NS = 2 * NSEC_PER_SEC;

export const PAGE_REPORTING_IDLE = 0;
export const PAGE_REPORTING_REQUESTED = 1;
export const PAGE_REPORTING_ACTIVE = 2;

/** A free block in the scatterlist: pfn and order (length PAGE_SIZE << order). */
export interface ReportedBlock {
  readonly pfn: number;
  readonly order: number;
}

/** struct page_reporting_dev_info. */
export interface PageReportingDevInfo {
  /** Tell the device about these blocks; 0 or -errno. Blocks stay isolated until it returns. */
  report(sgl: readonly ReportedBlock[]): number;
  /** The driver's preferred order (0: none). */
  readonly order?: number;
}

/**
 * Guest CPU costs of a pass: isolating a block (__isolate_free_page, priced
 * as an allocation) and putting it back (__putback_isolated_page, a free).
 */
export const PAGE_REPORTING_COSTS = ['guest_page_alloc', 'guest_page_free'] as const;

export class PageReporting {
  state = PAGE_REPORTING_IDLE;
  /** page_reporting_order, fixed at registration. */
  order = -1;
  passes = 0;
  reports = 0;
  blocksReported = 0;
  pagesReported = 0;
  private work: EventHandle | null = null;

  constructor(
    private readonly pages: GuestPageAlloc,
    private readonly events: EventQueue,
    private readonly costs: CostTable,
    /** Charge guest CPU time (the kworker's). */
    private readonly charge: (ns: number) => void,
    private readonly prdev: PageReportingDevInfo,
    /** The page_reporting.page_reporting_order module parameter, if set. */
    private readonly orderParam?: number,
    /**
     * Run a pass in steps, one per report, on the driver's timing
     * (VirtioTiming.runSteps): `then` when the last step's CPU is spent.
     * Default: all at once.
     */
    private readonly runSteps: (steps: Iterator<unknown>, then: (at: number) => void) => void = (steps, then) => {
      while (!steps.next().done);
      then(events.clock.now());
    },
  ) {
    requireCosts(costs, PAGE_REPORTING_COSTS, 'free page reporting');
  }

  /** page_reporting_register: fix the order, start a first flush, hook frees. */
  register(): void {
    if (this.orderParam !== undefined && this.orderParam >= 0 && this.orderParam <= MAX_PAGE_ORDER) this.order = this.orderParam;
    else if (this.prdev.order && this.prdev.order > 0 && this.prdev.order <= MAX_PAGE_ORDER) this.order = this.prdev.order;
    else this.order = PAGEBLOCK_ORDER;
    this.state = PAGE_REPORTING_IDLE;
    this.request();
    this.pages.onFree = (order) => {
      if (order >= this.order) this.request();
    };
  }

  unregister(): void {
    this.pages.onFree = null;
    this.work?.cancel();
    this.work = null;
  }

  /** __page_reporting_request. */
  private request(): void {
    if (this.state === PAGE_REPORTING_REQUESTED) return;
    const old = this.state;
    this.state = PAGE_REPORTING_REQUESTED;
    if (old !== PAGE_REPORTING_IDLE) return;
    this.work = this.events.after(PAGE_REPORTING_DELAY_NS, 'page_reporting_process', () => this.process());
  }

  /**
   * page_reporting_process: one pass over every zone. The pass stays
   * ACTIVE until its CPU is spent (a free meanwhile only marks it
   * REQUESTED); the next pass is then delayed from the pass's end.
   */
  process(): void {
    this.work = null;
    this.passes++;
    this.state = PAGE_REPORTING_ACTIVE;
    const pass = function* (this: PageReporting): Generator<void, void> {
      for (const z of this.pages.zones) if ((yield* this.processZone(z.nid)) !== 0) break;
    };
    this.runSteps(pass.call(this), () => {
      if (this.state === PAGE_REPORTING_ACTIVE) this.state = PAGE_REPORTING_IDLE;
      else if (this.state === PAGE_REPORTING_REQUESTED)
        this.work = this.events.after(PAGE_REPORTING_DELAY_NS, 'page_reporting_process', () => this.process());
    });
  }

  /** page_reporting_process_zone: each order from page_reporting_order up, then the leftover. */
  private *processZone(nid: number): Generator<void, number> {
    const z = this.pages.zones[nid]!;
    if (z.freePages < PAGE_REPORTING_CAPACITY << this.order) return 0;
    const sgl = new Array<ReportedBlock>(PAGE_REPORTING_CAPACITY);
    const cursor = { offset: PAGE_REPORTING_CAPACITY };
    for (let order = this.order; order <= MAX_PAGE_ORDER; order++) {
      const err = yield* this.cycle(nid, order, sgl, cursor);
      if (err) return err;
    }
    const leftover = PAGE_REPORTING_CAPACITY - cursor.offset;
    if (!leftover) return 0;
    const rest = sgl.slice(cursor.offset);
    const err = this.doReport(rest);
    this.drain(rest, err === 0);
    return err;
  }

  /** page_reporting_cycle: fill, report, drain over one free list until its budget is spent; a step ends after each report. */
  private *cycle(nid: number, order: number, sgl: ReportedBlock[], cursor: { offset: number }): Generator<void, number> {
    const pages = this.pages;
    if (pages.freeListFirst(nid, order) < 0) return 0;
    let budget = Math.ceil(pages.zones[nid]!.nrFree[order]! / (PAGE_REPORTING_CAPACITY * 16));
    let err = 0;
    let page = pages.freeListFirst(nid, order);
    let stoppedAt = -1;
    while (page >= 0) {
      const next = pages.freeListNext(page);
      if (pages.isReported(page)) {
        page = next;
        continue;
      }
      if (budget < 0) {
        this.state = PAGE_REPORTING_REQUESTED;
        stoppedAt = page;
        break;
      }
      if (cursor.offset > 0) {
        pages.isolateFreePage(page, order);
        this.charge(this.costs.nsOf('guest_page_alloc'));
        sgl[--cursor.offset] = { pfn: page, order };
        page = next;
        continue;
      }
      pages.rotateToFront(page);
      err = this.doReport(sgl);
      cursor.offset = PAGE_REPORTING_CAPACITY;
      budget--;
      this.drain(sgl, err === 0);
      if (err) break;
      yield;
      page = pages.freeListFirst(nid, order);
    }
    if (stoppedAt >= 0) pages.rotateToFront(stoppedAt);
    return err;
  }

  private doReport(sgl: readonly ReportedBlock[]): number {
    this.reports++;
    const err = this.prdev.report(sgl);
    if (err === 0) {
      this.blocksReported += sgl.length;
      this.pagesReported += sgl.reduce((s, b) => s + (1 << b.order), 0);
    }
    return err;
  }

  /** page_reporting_drain: back to the free lists; flag those that did not merge. */
  private drain(sgl: readonly ReportedBlock[], reported: boolean): void {
    for (const b of sgl) {
      this.pages.putbackIsolatedPage(b.pfn, b.order);
      this.charge(this.costs.nsOf('guest_page_free'));
      if (reported && this.pages.buddyOrder(b.pfn) === b.order) this.pages.setReported(b.pfn);
    }
  }
}
