/**
 * The guest's virtio-balloon driver (drivers/virtio/virtio_balloon.c):
 *
 * - inflate (fill_balloon) allocates pages one at a time with
 *   __GFP_NORETRY, queues them on the balloon's page list and tells the
 *   host their PFNs, VIRTIO_BALLOON_ARRAY_PFNS_MAX (256) 4-byte PFNs per
 *   message, one kick per message; deflate (leak_balloon) tells the host
 *   first, then frees the pages (MUST_TELL_HOST order). The work item
 *   (update_balloon_size_func) reads the target from config space, does one
 *   message's worth, writes `actual` back and requeues itself;
 * - deflate-on-oom (VIRTIO_BALLOON_F_DEFLATE_ON_OOM): balloon pages stay
 *   counted in totalram, and an OOM notifier deflates 256 pages;
 * - statistics (VIRTIO_BALLOON_F_STATS_VQ): the stats buffer is primed at
 *   probe, and each time the host returns it the driver refills it with
 *   VIRTIO_BALLOON_S_* tags and values and sends it back;
 * - free page hints (VIRTIO_BALLOON_F_FREE_PAGE_HINT): on a new command id
 *   the driver sends the id, takes free blocks from the highest order down
 *   (allocating them, so they stay unused while the host relies on the
 *   hint), reports them in the encoding and batch the device's config
 *   gives (see src/virtio/virtio_balloon.ts), sends STOP, and gives every
 *   held block back when the host says DONE (or a shrinker asks);
 * - free page reporting (VIRTIO_BALLOON_F_REPORTING) through
 *   mm/page_reporting.c (page_reporting.ts): each report is one chain of up
 *   to 32 device-writable descriptors, one per free block, and one kick;
 * - memtwin's inflate encodings (proposals, never merged; one feature bit
 *   each, see src/virtio/virtio_balloon.ts): `chunks` (the chunked transfer
 *   of 2017, (addr, len) chunks), `bitmap` (Liang Li's 2016 page bitmap),
 *   `pfn-order` (GPA | order per block) and `per-order` (one message per
 *   order). With any of them inflate works to the whole target in one go
 *   and allocates either 4 KiB pages one at a time (`inflateAlloc: '4k'`,
 *   what the 2017 patches did: their TODO was "allocating/freeing a chunk
 *   of pages instead of a single page each time") or the highest order
 *   that fits first (`'high-order'`, the default).
 *
 * Work items run on the guest workqueue as events, each run a generator
 * of steps that yields after every message sent (and, hinting under
 * init_on_alloc, after every block zeroed), driven by the transport's
 * VirtioTiming.runSteps: sequentially all steps run at once and the guest
 * CPU they use advances the clock; in a scenario it is CPU time of the
 * driver's vCPU thread, the device's work CPU time of QEMU's thread, and
 * each step's effects happen when it starts while the next step starts
 * once this one has had its CPU (see src/virtio/timing.ts). The device
 * answers a kick before the vCPU resumes (QEMU's handlers run
 * synchronously here), so `tell_host`'s wait lasts the device's work plus
 * the two host wakeups it takes (VirtioTiming.vcpuWait). A work item queued while it runs runs
 * again once it completes (queue_work on a running item). Where Linux
 * sleeps 200 ms after an allocation failure (msleep in fill_balloon) the
 * work is requeued 200 ms later instead.
 */
import type { GuestMemory } from '../hw/guest_memory.ts';
import { NSEC_PER_MSEC } from '../sim/clock.ts';
import type { EventHandle, EventQueue } from '../sim/event_queue.ts';
import { requireCosts } from '../virtio/timing.ts';
import type { VirtioTransport } from '../virtio/transport.ts';
import type { Sg, SplitVirtqueue } from '../virtio/virtqueue.ts';
import * as vb from '../virtio/virtio_balloon.ts';
import { InflateWriter, inflateBufferBytes, writeBitmapWindows } from '../virtio/balloon_encoding.ts';
import { MAX_PAGE_ORDER, PAGE_SIZE, PageUse, type GuestPageAlloc } from './page_alloc.ts';
import { PAGE_REPORTING_CAPACITY, PageReporting, type ReportedBlock } from './page_reporting.ts';

/**
 * Guest costs the driver charges besides the transport's:
 * - guest_page_alloc / guest_page_free: one buddy allocation or free of a
 *   block (any order, no zeroing), as balloon_page_alloc, alloc_pages for a
 *   hint block, or __free_pages do;
 * - guest_balloon_stats_update: update_balloon_stats (all_vm_events,
 *   si_meminfo, si_mem_available) before the stats buffer is sent.
 */
export const GUEST_BALLOON_COSTS = ['guest_page_alloc', 'guest_page_free', 'guest_balloon_stats_update'] as const;

/** Features this driver implements (its feature table). */
export const VIRTIO_BALLOON_DRIVER_FEATURES =
  (1n << BigInt(vb.VIRTIO_BALLOON_F_MUST_TELL_HOST)) |
  (1n << BigInt(vb.VIRTIO_BALLOON_F_STATS_VQ)) |
  (1n << BigInt(vb.VIRTIO_BALLOON_F_DEFLATE_ON_OOM)) |
  (1n << BigInt(vb.VIRTIO_BALLOON_F_FREE_PAGE_HINT)) |
  (1n << BigInt(vb.VIRTIO_BALLOON_F_REPORTING)) |
  (1n << BigInt(vb.VIRTIO_BALLOON_F_CHUNK_TRANSFER)) |
  (1n << BigInt(vb.VIRTIO_BALLOON_F_PAGE_BITMAP)) |
  (1n << BigInt(vb.VIRTIO_BALLOON_F_PFN_ORDER)) |
  (1n << BigInt(vb.VIRTIO_BALLOON_F_PER_ORDER));

/** Sleep after an allocation failure in fill_balloon (msleep(200)). */
const OUT_OF_PUFF_SLEEP_NS = 200 * NSEC_PER_MSEC;

/** The driver's kzalloc'd struct: pfns[256], stats[16], cmd_id_active, cmd_id_stop. */
const VB_PFNS_OFF = 0;
const VB_STATS_OFF = VB_PFNS_OFF + vb.VIRTIO_BALLOON_ARRAY_PFNS_MAX * vb.VIRTIO_BALLOON_PFN_BYTES;
const VB_CMD_ACTIVE_OFF = VB_STATS_OFF + vb.VIRTIO_BALLOON_S_NR * vb.VIRTIO_BALLOON_STAT_BYTES;
const VB_CMD_STOP_OFF = VB_CMD_ACTIVE_OFF + vb.VIRTIO_BALLOON_CMD_ID_BYTES;
const VB_STRUCT_BYTES = VB_CMD_STOP_OFF + vb.VIRTIO_BALLOON_CMD_ID_BYTES;

/** Guest VM event counters the stats queue reports (all_vm_events); the model fills what it knows. */
export interface GuestVmEvents {
  pswpin?: number;
  pswpout?: number;
  pgmajfault?: number;
  pgfault?: number;
  htlbBuddyAlloc?: number;
  htlbBuddyAllocFail?: number;
}

export interface VirtioBalloonDriverOptions {
  /** vCPU whose workqueue runs the balloon's work: its node is where balloon pages come from first. */
  cpu?: number;
  /** Features the guest's driver knows (an older guest knows fewer). Default: all it implements. */
  features?: bigint;
  /** The page_reporting.page_reporting_order parameter; default pageblock_order. */
  pageReportingOrder?: number;
  /** The guest's VM event counters, for the stats queue. */
  vmEvents?: () => GuestVmEvents;
  /** init_on_alloc: every page allocation is zeroed (want_init_on_alloc), the hinting's blocks included. */
  initOnAlloc?: boolean;
  /**
   * memtwin: how inflate allocates with a proposal encoding: '4k' one page
   * at a time (the 2017 patches), 'high-order' (default) the largest block
   * that fits first. Upstream's PFN arrays always allocate 4 KiB pages.
   */
  inflateAlloc?: '4k' | 'high-order';
}

/** The driver's work items: update_balloon_size_func, update_balloon_stats_func, report_free_page_func. */
type WorkName = 'size' | 'stats' | 'hint';

/** A block the balloon or the hinting holds. */
interface HeldBlock {
  pfn: number;
  order: number;
}

/** A driver-owned buffer in guest memory. */
interface DriverBuffer {
  gpa: number;
  order: number;
  bytes: Uint8Array;
  view: DataView;
}

/** Counters of the driver's own work. */
export interface VirtioBalloonDriverStats {
  /** Balloon pages (4 KiB) the host was told about (vb->num_pages). */
  numPages: number;
  inflateMessages: number;
  deflateMessages: number;
  /** Inflate messages that found no memory (Out of puff!). */
  outOfPuff: number;
  oomDeflates: number;
  statsUpdates: number;
  hintSessions: number;
  hintMessages: number;
  hintedBlocks: number;
  hintedPages: number;
  /** Hinted pages still held by the driver (not yet given back). */
  hintHeldPages: number;
  reports: number;
  reportedPages: number;
}

export class VirtioBalloonDriver {
  private readonly pages: GuestPageAlloc;
  private readonly cpu: number;
  private features = 0n;
  private readonly balloon: HeldBlock[] = [];
  private numPages = 0;
  private vbStruct: DriverBuffer | null = null;
  private inflateEnc: vb.InflateEncodingName = 'pfns';
  private encBuf: DriverBuffer | null = null;
  private hintBuf: DriverBuffer | null = null;
  private hintEncoding: vb.HintEncodingCode = vb.HintEncodingCode.RANGES;
  private hintBatch = 1;
  private hintMinOrder = MAX_PAGE_ORDER;
  private hintBitmapOrder = 0;
  private cmdIdReceivedCache = vb.VIRTIO_BALLOON_CMD_ID_STOP;
  private cmdIdActive = vb.VIRTIO_BALLOON_CMD_ID_STOP;
  private configReadPending = false;
  private readonly freePageList: HeldBlock[] = [];
  private sizeWork: EventHandle | null = null;
  private statsWork: EventHandle | null = null;
  private hintWork: EventHandle | null = null;
  /** Work items whose run has started and not completed (its CPU not all spent yet). */
  private readonly running = new Set<WorkName>();
  /** Work items queued again while running: the delay to requeue them with. */
  private readonly requeued = new Map<WorkName, number>();
  private probed = false;
  /** Messages sent on any queue with a kick (step boundaries). */
  private messagesSent = 0;
  reporting: PageReporting | null = null;
  private readonly counters = {
    inflateMessages: 0,
    deflateMessages: 0,
    outOfPuff: 0,
    oomDeflates: 0,
    statsUpdates: 0,
    hintSessions: 0,
    hintMessages: 0,
    hintedBlocks: 0,
    hintedPages: 0,
  };

  constructor(
    private readonly guest: { readonly pages: GuestPageAlloc; readonly memory: GuestMemory },
    private readonly transport: VirtioTransport,
    private readonly events: EventQueue,
    private readonly opts: VirtioBalloonDriverOptions = {},
  ) {
    requireCosts(transport.timing.costs, GUEST_BALLOON_COSTS, 'virtio-balloon driver');
    this.pages = guest.pages;
    this.cpu = opts.cpu ?? 0;
  }

  private has(bit: number): boolean {
    return (this.features & (1n << BigInt(bit))) !== 0n;
  }

  private vq(i: number): SplitVirtqueue {
    const q = this.transport.queues[i];
    if (!q) throw new Error(`virtio-balloon: the device has no ${vb.VIRTIO_BALLOON_VQ_NAMES[i]}`);
    return q;
  }

  private cost(name: string): number {
    return this.transport.timing.cost(name);
  }

  private chargeGuest(ns: number): void {
    this.transport.timing.chargeGuest(ns);
  }

  // --- probe ---------------------------------------------------------------------------

  /** virtballoon_probe: negotiate, set up queues and buffers, register hooks, start towards the target. */
  probe(): void {
    if (this.probed) throw new Error('virtio-balloon: already probed');
    this.probed = true;
    const known = (this.opts.features ?? VIRTIO_BALLOON_DRIVER_FEATURES) & VIRTIO_BALLOON_DRIVER_FEATURES;
    this.features = this.transport.negotiate(known, () => this.changed());
    this.initVqs();
    this.vbStruct = this.kzalloc(VB_STRUCT_BYTES);
    this.inflateEnc = vb.negotiatedInflateEncoding(this.features);
    if (this.inflateEnc !== 'pfns') this.encBuf = this.kzalloc(inflateBufferBytes(this.inflateEnc));
    if (this.has(vb.VIRTIO_BALLOON_F_STATS_VQ)) this.primeStats();
    if (this.has(vb.VIRTIO_BALLOON_F_FREE_PAGE_HINT)) this.initFreePageHint();
    if (this.has(vb.VIRTIO_BALLOON_F_DEFLATE_ON_OOM)) this.pages.oomNotifiers.push(() => this.oomNotify());
    if (this.has(vb.VIRTIO_BALLOON_F_REPORTING)) this.initReporting();
    if (this.towardsTarget() !== 0) this.changed();
  }

  /** init_vqs: callbacks as Linux sets them (none for the free page vq). */
  private initVqs(): void {
    const ack = (): void => {};
    this.vq(vb.VIRTIO_BALLOON_VQ_INFLATE).setDriverCallback(ack);
    this.vq(vb.VIRTIO_BALLOON_VQ_DEFLATE).setDriverCallback(ack);
    if (this.has(vb.VIRTIO_BALLOON_F_STATS_VQ)) this.vq(vb.VIRTIO_BALLOON_VQ_STATS).setDriverCallback(() => this.statsRequest());
    if (this.has(vb.VIRTIO_BALLOON_F_FREE_PAGE_HINT)) this.vq(vb.VIRTIO_BALLOON_VQ_FREE_PAGE).setDriverCallback(null);
    if (this.has(vb.VIRTIO_BALLOON_F_REPORTING)) this.vq(vb.VIRTIO_BALLOON_VQ_REPORTING).setDriverCallback(ack);
  }

  /**
   * kzalloc/alloc_pages for a driver buffer: kernel pages on the driver's
   * node, zeroed, which touches them (the host backs them now).
   */
  private kzalloc(bytes: number): DriverBuffer {
    const order = Math.max(0, Math.ceil(Math.log2(Math.ceil(bytes / PAGE_SIZE))));
    if (order > MAX_PAGE_ORDER) throw new Error(`virtio-balloon: a ${bytes}-byte buffer exceeds a MAX_PAGE_ORDER block`);
    const pfn = this.pages.allocPages({ order, use: PageUse.Kernel, cpu: this.cpu });
    this.chargeGuest(this.cost('guest_page_alloc'));
    if (pfn < 0) throw new Error('virtio-balloon: cannot allocate a driver buffer');
    const gpa = pfn * PAGE_SIZE;
    const len = PAGE_SIZE << order;
    this.chargeGuest(this.guest.memory.access(this.cpu, gpa, len, 64, true, 0));
    const buf = this.transport.buffers.map(gpa, len);
    return { gpa, order, bytes: buf, view: new DataView(buf.buffer, buf.byteOffset, buf.byteLength) };
  }

  /** The guest CPU writing `bytes` bytes into a buffer. */
  private chargeWrite(bytes: number): void {
    this.chargeGuest(this.transport.timing.copyNs(bytes));
  }

  /**
   * queue_work / queue_delayed_work of one of the driver's work items. One
   * queued while it runs (its step not complete yet) runs again after it,
   * with the shortest delay asked for.
   */
  private queueWork(which: WorkName, delay = 0): void {
    if (this.running.has(which)) {
      const d = this.requeued.get(which);
      this.requeued.set(which, d === undefined ? delay : Math.min(d, delay));
      return;
    }
    const key = `${which}Work` as const;
    if (this[key]) return;
    this[key] = this.events.after(delay, `virtio-balloon:${which}`, () => {
      this[key] = null;
      this.running.add(which);
      this.transport.timing.runSteps(this.runWork(which), () => {
        this.running.delete(which);
        const again = this.requeued.get(which);
        if (again === undefined) return;
        this.requeued.delete(which);
        this.queueWork(which, again);
      });
    });
  }

  /** One run of a work item, a step per message sent (see VirtioTiming.runSteps). */
  private *runWork(which: WorkName): Generator<void, void> {
    if (which === 'size') yield* this.updateBalloonSizeFunc();
    else if (which === 'stats') this.statsHandleRequest();
    else yield* this.reportFreePageFunc();
  }

  // --- config changes and the balloon size ---------------------------------------------

  /** virtballoon_changed: the config interrupt. */
  private changed(): void {
    this.queueWork('size');
    this.queueFreePageWork();
  }

  /** towards_target: pages to inflate (> 0) or deflate (< 0). Reads config: one exit. */
  private towardsTarget(): number {
    const target = this.transport.readConfig32(vb.CONFIG_NUM_PAGES);
    return target - this.numPages;
  }

  /** update_balloon_size: write `actual`. One exit. */
  private updateBalloonSize(): void {
    this.transport.writeConfig32(vb.CONFIG_ACTUAL, this.numPages);
  }

  /** update_balloon_size_func: one message's worth towards the target, then requeue. */
  private *updateBalloonSizeFunc(): Generator<void, void> {
    let diff = this.towardsTarget();
    if (diff === 0) return;
    let starved = false;
    if (diff > 0) {
      const got = yield* this.fillBalloon(diff);
      starved = got.starved;
      diff -= got.pages;
    } else diff += this.leakBalloon(-diff);
    this.updateBalloonSize();
    if (diff !== 0) this.queueWork('size', starved ? OUT_OF_PUFF_SLEEP_NS : 0);
  }

  // --- inflate and deflate ---------------------------------------------------------------

  /** fill_balloon: returns balloon pages added and whether an allocation failed. */
  private *fillBalloon(num: number): Generator<void, { pages: number; starved: boolean }> {
    return this.inflateEnc === 'pfns' ? this.fillBalloonPfns(num) : yield* this.fillBalloonBlocks(num);
  }

  private fillBalloonPfns(num: number): { pages: number; starved: boolean } {
    num = Math.min(num, vb.VIRTIO_BALLOON_ARRAY_PFNS_MAX);
    const got: number[] = [];
    let starved = false;
    while (got.length < num) {
      const pfn = this.balloonPageAlloc(0);
      if (pfn < 0) {
        starved = true;
        this.counters.outOfPuff++;
        break;
      }
      got.push(pfn);
    }
    const view = this.vbStruct!.view;
    got.forEach((pfn, i) => {
      this.balloonPageEnqueue(pfn, 0);
      view.setUint32(VB_PFNS_OFF + i * vb.VIRTIO_BALLOON_PFN_BYTES, toBalloonPfn(pfn), true);
    });
    if (got.length) {
      const bytes = got.length * vb.VIRTIO_BALLOON_PFN_BYTES;
      this.chargeWrite(bytes);
      this.tellHost(vb.VIRTIO_BALLOON_VQ_INFLATE, this.vbStruct!.gpa + VB_PFNS_OFF, bytes);
      this.counters.inflateMessages++;
    }
    return { pages: got.length, starved };
  }

  /**
   * memtwin inflate encodings: allocate towards the whole target in one go,
   * 4 KiB at a time or the highest order that fits what is left (falling
   * back order by order), and write the blocks in the negotiated encoding.
   * A step ends after each message sent.
   */
  private *fillBalloonBlocks(num: number): Generator<void, { pages: number; starved: boolean }> {
    const w = this.writer(vb.VIRTIO_BALLOON_VQ_INFLATE);
    let sent = this.messagesSent;
    let done = 0;
    let maxOrder = this.opts.inflateAlloc === '4k' ? 0 : MAX_PAGE_ORDER;
    while (done < num) {
      let order = Math.min(maxOrder, Math.floor(Math.log2(num - done)));
      let pfn = -1;
      for (; order >= 0; order--) {
        pfn = this.balloonPageAlloc(order);
        if (pfn >= 0) break;
      }
      if (pfn < 0) {
        this.counters.outOfPuff++;
        break;
      }
      maxOrder = order;
      this.balloonPageEnqueue(pfn, order);
      w.add(pfn, order);
      done += 1 << order;
      if (this.messagesSent !== sent) {
        sent = this.messagesSent;
        yield;
      }
    }
    w.finish();
    return { pages: done, starved: done < num };
  }

  /** A writer of the negotiated encoding whose messages go to `vqIndex`. */
  private writer(vqIndex: number): InflateWriter {
    return new InflateWriter(this.inflateEnc, this.encBuf!, (len) => this.sendEncoded(vqIndex, len), this.pages.maxPfn);
  }

  private sendEncoded(vqIndex: number, bytes: number): void {
    this.chargeWrite(bytes);
    this.tellHost(vqIndex, this.encBuf!.gpa, bytes);
    if (vqIndex === vb.VIRTIO_BALLOON_VQ_INFLATE) this.counters.inflateMessages++;
    else this.counters.deflateMessages++;
  }

  /** balloon_page_alloc: GFP_HIGHUSER_MOVABLE | __GFP_NORETRY | __GFP_NOMEMALLOC | __GFP_NOWARN. */
  private balloonPageAlloc(order: number): number {
    this.chargeGuest(this.cost('guest_page_alloc'));
    return this.pages.allocPages({ order, use: PageUse.Balloon, cpu: this.cpu, noRetry: true });
  }

  /** balloon_page_enqueue: onto the balloon list; out of totalram unless deflate-on-oom. */
  private balloonPageEnqueue(pfn: number, order: number): void {
    this.balloon.push({ pfn, order });
    this.numPages += 1 << order;
    if (!this.has(vb.VIRTIO_BALLOON_F_DEFLATE_ON_OOM)) this.pages.adjustManagedPages(-(1 << order));
  }

  /** leak_balloon: tell the host (MUST_TELL_HOST order), then free. Returns pages released. */
  private leakBalloon(num: number): number {
    const encoded = this.inflateEnc !== 'pfns';
    if (!encoded) num = Math.min(num, vb.VIRTIO_BALLOON_ARRAY_PFNS_MAX);
    num = Math.min(num, this.numPages);
    const taken = this.balloonPageDequeue(num);
    if (!taken.length) return 0;
    if (encoded) {
      const w = this.writer(vb.VIRTIO_BALLOON_VQ_DEFLATE);
      for (const b of taken) w.add(b.pfn, b.order);
      w.finish();
    } else {
      const view = this.vbStruct!.view;
      taken.forEach((b, i) => view.setUint32(VB_PFNS_OFF + i * vb.VIRTIO_BALLOON_PFN_BYTES, toBalloonPfn(b.pfn), true));
      const bytes = taken.length * vb.VIRTIO_BALLOON_PFN_BYTES;
      this.chargeWrite(bytes);
      this.tellHost(vb.VIRTIO_BALLOON_VQ_DEFLATE, this.vbStruct!.gpa + VB_PFNS_OFF, bytes);
      this.counters.deflateMessages++;
    }
    let released = 0;
    for (const b of taken) {
      this.pages.freePages(b.pfn, b.order);
      this.chargeGuest(this.cost('guest_page_free'));
      if (!this.has(vb.VIRTIO_BALLOON_F_DEFLATE_ON_OOM)) this.pages.adjustManagedPages(1 << b.order);
      released += 1 << b.order;
    }
    return released;
  }

  /** balloon_page_dequeue, newest first; a larger block is split and its upper part stays. */
  private balloonPageDequeue(num: number): HeldBlock[] {
    const out: HeldBlock[] = [];
    let left = num;
    while (left > 0 && this.balloon.length) {
      let b = this.balloon.pop()!;
      while (1 << b.order > left) {
        const half = b.order - 1;
        this.balloon.push({ pfn: b.pfn + (1 << half), order: half });
        b = { pfn: b.pfn, order: half };
      }
      out.push(b);
      left -= 1 << b.order;
      this.numPages -= 1 << b.order;
    }
    return out;
  }

  /** tell_host: one readable buffer, a kick, and the wait for the host's ack. */
  private tellHost(vqIndex: number, gpa: number, bytes: number): void {
    this.messagesSent++;
    const q = this.vq(vqIndex);
    if (!q.addBuf([{ addr: gpa, len: bytes }], [], 'vb')) throw new Error(`virtio-balloon: ${q.name} is full`);
    q.kick();
    this.transport.timing.vcpuWait();
    if (!q.getBuf()) throw new Error(`virtio-balloon: the device did not return the ${q.name} buffer`);
  }

  /** virtio_balloon_oom_notify: deflate VIRTIO_BALLOON_OOM_NR_PAGES. */
  private oomNotify(): number {
    const freed = this.leakBalloon(vb.VIRTIO_BALLOON_OOM_NR_PAGES);
    if (freed) {
      this.counters.oomDeflates++;
      this.updateBalloonSize();
    }
    return freed;
  }

  // --- statistics ------------------------------------------------------------------------

  private primeStats(): void {
    const n = this.updateBalloonStats();
    const q = this.vq(vb.VIRTIO_BALLOON_VQ_STATS);
    q.addBuf([{ addr: this.vbStruct!.gpa + VB_STATS_OFF, len: n * vb.VIRTIO_BALLOON_STAT_BYTES }], [], 'stats');
    q.kick();
  }

  /** stats_request: the host returned the stats buffer; refill it from the workqueue. */
  private statsRequest(): void {
    this.queueWork('stats');
  }

  /** stats_handle_request. */
  private statsHandleRequest(): void {
    const n = this.updateBalloonStats();
    const q = this.vq(vb.VIRTIO_BALLOON_VQ_STATS);
    if (!q.getBuf()) return;
    q.addBuf([{ addr: this.vbStruct!.gpa + VB_STATS_OFF, len: n * vb.VIRTIO_BALLOON_STAT_BYTES }], [], 'stats');
    q.kick();
  }

  /** update_balloon_stats: write the tag/value pairs; returns how many. */
  private updateBalloonStats(): number {
    this.counters.statsUpdates++;
    const ev = this.opts.vmEvents?.() ?? {};
    const mi = this.pages.meminfo();
    const pg = (n: number | undefined): number => (n ?? 0) * PAGE_SIZE;
    const stats: [number, number][] = [
      [vb.VIRTIO_BALLOON_S_SWAP_IN, pg(ev.pswpin)],
      [vb.VIRTIO_BALLOON_S_SWAP_OUT, pg(ev.pswpout)],
      [vb.VIRTIO_BALLOON_S_MAJFLT, ev.pgmajfault ?? 0],
      [vb.VIRTIO_BALLOON_S_MINFLT, ev.pgfault ?? 0],
      [vb.VIRTIO_BALLOON_S_OOM_KILL, this.pages.oomKills],
      [vb.VIRTIO_BALLOON_S_ALLOC_STALL, this.pages.allocStalls],
      [vb.VIRTIO_BALLOON_S_ASYNC_SCAN, 0],
      [vb.VIRTIO_BALLOON_S_DIRECT_SCAN, 0],
      [vb.VIRTIO_BALLOON_S_ASYNC_RECLAIM, 0],
      [vb.VIRTIO_BALLOON_S_DIRECT_RECLAIM, 0],
      [vb.VIRTIO_BALLOON_S_HTLB_PGALLOC, ev.htlbBuddyAlloc ?? 0],
      [vb.VIRTIO_BALLOON_S_HTLB_PGFAIL, ev.htlbBuddyAllocFail ?? 0],
      [vb.VIRTIO_BALLOON_S_MEMFREE, mi.MemFree],
      [vb.VIRTIO_BALLOON_S_MEMTOT, mi.MemTotal],
      [vb.VIRTIO_BALLOON_S_AVAIL, mi.MemAvailable],
      [vb.VIRTIO_BALLOON_S_CACHES, mi.Cached],
    ];
    const view = this.vbStruct!.view;
    stats.forEach(([tag, val], i) => {
      const off = VB_STATS_OFF + i * vb.VIRTIO_BALLOON_STAT_BYTES;
      view.setUint16(off, tag, true);
      view.setBigUint64(off + 2, BigInt(Math.max(0, Math.round(val))), true);
    });
    this.chargeGuest(this.cost('guest_balloon_stats_update'));
    this.chargeWrite(stats.length * vb.VIRTIO_BALLOON_STAT_BYTES);
    return stats.length;
  }

  // --- free page hints ------------------------------------------------------------------

  /** Read the device's hint parameters (memtwin config fields) and allocate the hint buffer. */
  private initFreePageHint(): void {
    const t = this.transport;
    this.hintEncoding = t.readConfig32(vb.CONFIG_MEMTWIN_HINT_ENCODING) as vb.HintEncodingCode;
    this.hintBatch = Math.max(1, t.readConfig32(vb.CONFIG_MEMTWIN_HINT_BATCH));
    this.hintMinOrder = Math.min(MAX_PAGE_ORDER, t.readConfig32(vb.CONFIG_MEMTWIN_HINT_MIN_ORDER));
    if (this.hintEncoding === vb.HintEncodingCode.BITMAP) {
      // A bit of a coarser bitmap says "all of this aligned unit is free": smaller blocks cannot be hinted, so none is held.
      this.hintBitmapOrder = Math.min(MAX_PAGE_ORDER, t.readConfig32(vb.CONFIG_MEMTWIN_HINT_BITMAP_ORDER));
      this.hintMinOrder = Math.max(this.hintMinOrder, this.hintBitmapOrder);
    }
    const bytes =
      this.hintEncoding === vb.HintEncodingCode.BITMAP
        ? vb.hintBitmapMessageBytes(this.hintBatch)
        : this.hintBatch * vb.hintEntryBytes(this.hintEncoding);
    this.hintBuf = this.kzalloc(bytes);
    this.pages.shrinkers.push({
      count: () => this.heldHintPages(),
      scan: (nr) => this.shrinkFreePages(nr),
    });
  }

  /** virtio_balloon_queue_free_page_work. */
  private queueFreePageWork(): void {
    if (!this.has(vb.VIRTIO_BALLOON_F_FREE_PAGE_HINT)) return;
    if (this.configReadPending) return;
    this.configReadPending = true;
    this.queueWork('hint');
  }

  /** virtio_balloon_cmd_id_received: re-read the config only after a config change. */
  private cmdIdReceived(): number {
    if (this.configReadPending) {
      this.configReadPending = false;
      this.cmdIdReceivedCache = this.transport.readConfig32(vb.CONFIG_FREE_PAGE_HINT_CMD_ID);
    }
    return this.cmdIdReceivedCache;
  }

  /** report_free_page_func. */
  private *reportFreePageFunc(): Generator<void, void> {
    const id = this.cmdIdReceived();
    if (id === vb.VIRTIO_BALLOON_CMD_ID_DONE) this.returnFreePagesToMm(Infinity);
    else if (id !== vb.VIRTIO_BALLOON_CMD_ID_STOP && id !== this.cmdIdActive) yield* this.reportFreePages();
  }

  /** virtio_balloon_report_free_page: start id, the hints, stop id. */
  private *reportFreePages(): Generator<void, void> {
    this.counters.hintSessions++;
    const q = this.vq(vb.VIRTIO_BALLOON_VQ_FREE_PAGE);
    this.cmdIdActive = this.cmdIdReceived();
    this.sendCmdId(q, VB_CMD_ACTIVE_OFF, this.cmdIdActive);
    yield* this.sendFreePages(q);
    this.sendCmdId(q, VB_CMD_STOP_OFF, vb.VIRTIO_BALLOON_CMD_ID_STOP);
  }

  /** send_cmd_id_start / send_cmd_id_stop. */
  private sendCmdId(q: SplitVirtqueue, off: number, id: number): void {
    while (q.getBuf());
    this.vbStruct!.view.setUint32(off, id, true);
    this.chargeWrite(vb.VIRTIO_BALLOON_CMD_ID_BYTES);
    if (q.addBuf([{ addr: this.vbStruct!.gpa + off, len: vb.VIRTIO_BALLOON_CMD_ID_BYTES }], [], 'cmd_id')) q.kick();
  }

  /**
   * send_free_pages: free blocks from MAX_PAGE_ORDER down to the device's
   * lowest hinted order, each allocated (and held), encoded and flushed
   * `batch` entries at a time; stops if the host changes the command id
   * (which, in a scenario, it can do between two messages: a step ends
   * after each).
   */
  private *sendFreePages(q: SplitVirtqueue): Generator<void, void> {
    let sent = this.messagesSent;
    const enc = new HintEncoder(this.hintEncoding, this.hintBatch, this.hintBitmapOrder, this.pages.maxPfn, this.hintBuf!, (len) =>
      this.flushHints(q, len),
    );
    outer: for (let order = MAX_PAGE_ORDER; order >= this.hintMinOrder; order--) {
      for (;;) {
        if (this.cmdIdActive !== this.cmdIdReceived()) break outer;
        this.chargeGuest(this.cost('guest_page_alloc'));
        const pfn = this.pages.allocPages({ order, use: PageUse.Hinted, cpu: this.cpu, noRetry: true });
        if (pfn < 0) break;
        // post_alloc_hook zeroes the block under init_on_alloc: the host sees every hinted page written. The
        // zeroing is most of the hinting's time then, so a step ends after each block, and the pages are written
        // while the migration runs beside it, block by block, not all at the session's start.
        let zeroed = false;
        if (this.opts.initOnAlloc) {
          this.chargeGuest(this.guest.memory.clear(this.cpu, pfn * PAGE_SIZE, PAGE_SIZE << order));
          zeroed = true;
        }
        this.freePageList.push({ pfn, order });
        this.counters.hintedBlocks++;
        this.counters.hintedPages += 1 << order;
        enc.add(pfn, order);
        if (this.messagesSent !== sent || zeroed) {
          sent = this.messagesSent;
          yield;
        }
      }
    }
    enc.finish();
  }

  /** One hint message: the buffer's first `len` bytes as a device-writable buffer, one kick. */
  private flushHints(q: SplitVirtqueue, len: number): void {
    while (q.getBuf());
    this.chargeWrite(len);
    this.counters.hintMessages++;
    this.messagesSent++;
    if (!q.addBuf([], [{ addr: this.hintBuf!.gpa, len }], 'hints')) throw new Error('virtio-balloon: free_page_vq is full');
    q.kick();
    while (q.getBuf());
  }

  /** return_free_pages_to_mm: give back up to `blocks` held blocks; returns pages freed. */
  private returnFreePagesToMm(blocks: number): number {
    let pages = 0;
    for (let n = 0; n < blocks && this.freePageList.length; n++) {
      const b = this.freePageList.pop()!;
      this.pages.freePages(b.pfn, b.order);
      this.chargeGuest(this.cost('guest_page_free'));
      pages += 1 << b.order;
    }
    return pages;
  }

  /** shrink_free_pages: whole blocks until `nr` pages are freed. */
  private shrinkFreePages(nr: number): number {
    let pages = 0;
    while (pages < nr && this.freePageList.length) pages += this.returnFreePagesToMm(1);
    return pages;
  }

  private heldHintPages(): number {
    return this.freePageList.reduce((s, b) => s + (1 << b.order), 0);
  }

  // --- free page reporting ------------------------------------------------------------------

  private initReporting(): void {
    const q = this.vq(vb.VIRTIO_BALLOON_VQ_REPORTING);
    if (q.num < PAGE_REPORTING_CAPACITY)
      throw new Error(`virtio-balloon: reporting_vq of ${q.num} entries is below PAGE_REPORTING_CAPACITY`);
    const t = this.transport.timing;
    this.reporting = new PageReporting(
      this.pages,
      this.events,
      t.costs,
      (ns) => t.chargeGuest(ns),
      { report: (sgl) => this.freePageReport(sgl) },
      this.opts.pageReportingOrder,
      (steps, then) => t.runSteps(steps, then),
    );
    this.reporting.register();
  }

  /** virtballoon_free_page_report: one chain of in-buffers, one kick, wait for the ack. */
  private freePageReport(sgl: readonly ReportedBlock[]): number {
    const q = this.vq(vb.VIRTIO_BALLOON_VQ_REPORTING);
    const sg: Sg[] = sgl.map((b) => ({ addr: b.pfn * PAGE_SIZE, len: PAGE_SIZE << b.order }));
    if (!q.addBuf([], sg, 'report')) return -28; // -ENOSPC
    q.kick();
    this.transport.timing.vcpuWait();
    if (!q.getBuf()) throw new Error('virtio-balloon: the device did not return the report');
    return 0;
  }

  // --- observation ----------------------------------------------------------------------------

  stats(): VirtioBalloonDriverStats {
    return {
      numPages: this.numPages,
      ...this.counters,
      hintHeldPages: this.heldHintPages(),
      reports: this.reporting?.reports ?? 0,
      reportedPages: this.reporting?.pagesReported ?? 0,
    };
  }

  /** The balloon's blocks (pfn, order), for checks. */
  balloonBlocks(): readonly { pfn: number; order: number }[] {
    return this.balloon;
  }

  get negotiatedFeatures(): bigint {
    return this.features;
  }
}

/** page_to_balloon_pfn: VIRTIO_BALLOON_PAGES_PER_PAGE is 1 with 4 KiB guest pages. */
function toBalloonPfn(pfn: number): number {
  return pfn * (PAGE_SIZE >> vb.VIRTIO_BALLOON_PFN_SHIFT);
}

/**
 * Packs hinted blocks into the hint buffer in one of memtwin's encodings
 * (src/virtio/virtio_balloon.ts) and flushes `batch` entries per message.
 * A bitmap needs every block before it can send a window, so it is built
 * whole and sent window by window at the end.
 */
class HintEncoder {
  private n = 0;
  private readonly entryBytes: number;
  private bitmapBlocks: { pfn: number; order: number }[] = [];

  constructor(
    private readonly code: vb.HintEncodingCode,
    private readonly batch: number,
    private readonly bitmapOrder: number,
    private readonly maxPfn: number,
    private readonly buf: DriverBuffer,
    private readonly flush: (len: number) => void,
  ) {
    this.entryBytes = vb.hintEntryBytes(code);
  }

  add(pfn: number, order: number): void {
    const v = this.buf.view;
    switch (this.code) {
      case vb.HintEncodingCode.BITMAP:
        this.bitmapBlocks.push({ pfn, order });
        return;
      case vb.HintEncodingCode.PFN_LIST_32:
      case vb.HintEncodingCode.PFN_LIST_64:
        for (let p = pfn; p < pfn + (1 << order); p++) {
          const off = this.slot();
          if (this.code === vb.HintEncodingCode.PFN_LIST_32) v.setUint32(off, toBalloonPfn(p), true);
          else v.setBigUint64(off, BigInt(toBalloonPfn(p)), true);
        }
        return;
      case vb.HintEncodingCode.PFN_ORDER:
        v.setBigUint64(this.slot(), BigInt(pfn * PAGE_SIZE + order), true);
        return;
      case vb.HintEncodingCode.RANGES: {
        const off = this.slot();
        v.setBigUint64(off, BigInt(pfn * PAGE_SIZE), true);
        v.setBigUint64(off + 8, BigInt(PAGE_SIZE << order), true);
        return;
      }
    }
  }

  /** The byte offset of the next entry, flushing a full buffer first. */
  private slot(): number {
    if (this.n === this.batch) {
      this.flush(this.n * this.entryBytes);
      this.n = 0;
    }
    return this.n++ * this.entryBytes;
  }

  finish(): void {
    if (this.code === vb.HintEncodingCode.BITMAP) this.finishBitmap();
    else if (this.n) {
      this.flush(this.n * this.entryBytes);
      this.n = 0;
    }
  }

  /** Windows of `batch` bits aligned on `batch`; each non-empty one is a message (see writeBitmapWindows). */
  private finishBitmap(): void {
    writeBitmapWindows(this.bitmapBlocks, this.bitmapOrder, this.batch, this.maxPfn, this.buf, this.flush);
    this.bitmapBlocks = [];
  }
}
