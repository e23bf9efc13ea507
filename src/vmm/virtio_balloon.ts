/**
 * The virtio-balloon device (QEMU hw/virtio/virtio-balloon.c):
 *
 * - inflate/deflate queues (virtio_balloon_handle_output): each element's
 *   4-byte PFNs are translated and, on inflate, the page is discarded on the
 *   host (balloon_inflate_page → ram_block_discard_range, one call per
 *   page). For RAM backed by pages larger than 4 KiB only whole host pages
 *   are discarded: subpages are collected in a PartiallyBalloonedPage bitmap
 *   that, as in QEMU, lives for one element and is dropped when a PFN of a
 *   different host page arrives. Deflate hints the whole host page with
 *   MADV_WILLNEED (balloon_deflate_page). With one of memtwin's inflate
 *   encodings (chunks, bitmap, pfn-order, per-order: proposals, off by
 *   default) the device decodes each element into ranges, paying a
 *   decode cost per entry and per bitmap word, then translates and
 *   discards each range; only the whole host pages inside a range are
 *   discarded.
 * - `balloon` (virtio_balloon_to_target) sets num_pages and raises a config
 *   interrupt; the guest writes `actual` back (virtio_balloon_set_config)
 *   and `query-balloon` answers ram_size - actual.
 * - the stats queue (virtio_balloon_receive_stats, the poll timer and the
 *   guest-stats property).
 * - free page hints: command ids and states (FREE_PAGE_HINT_S_REQUESTED,
 *   START, STOP, DONE) as the precopy notifier drives them; hints received
 *   in START are recorded as ranges migration may skip (QEMU clears their
 *   dirty bits: qemu_guest_free_page_hint) until the dirty log reports a
 *   guest write to them (markDirty). memtwin decodes the hint encodings of
 *   src/virtio/virtio_balloon.ts and can discard hinted memory on the host.
 * - free page reporting (virtio_balloon_handle_report): every reported range
 *   aligned to the host page size is discarded.
 *
 * Each element popped is a VM exit's worth of device work, charged in
 * virtual time (the exit itself is charged by the transport): sequentially
 * on the clock, in a scenario as CPU time of QEMU's main loop (free page
 * hints: its iothread, which QEMU requires for them), see
 * src/virtio/timing.ts. The host side of a discard is the VMM's business,
 * behind the BalloonHost interface; its syscalls' time is the same
 * thread's CPU time.
 */
import type { EventHandle, EventQueue } from '../sim/event_queue.ts';
import { NSEC_PER_SEC } from '../sim/clock.ts';
import { requireCosts, type VirtioTiming } from '../virtio/timing.ts';
import { VirtioTransport } from '../virtio/transport.ts';
import type { GuestBuffers, SplitVirtqueue, VirtQueueElement, VirtqueueStats } from '../virtio/virtqueue.ts';
import * as vb from '../virtio/virtio_balloon.ts';
import { decodeBitmap, decodeInflate, type DecodeWork } from '../virtio/balloon_encoding.ts';
import type { PrecopyNotifyReason } from './migration/ram.ts';

const BALLOON_PAGE_SIZE = 1 << vb.VIRTIO_BALLOON_PFN_SHIFT;
/** VIRTQUEUE_MAX_SIZE: the free page vq's size. */
const VIRTQUEUE_MAX_SIZE = 1024;

/** A guest-physical range. */
export interface GpaRange {
  readonly gpa: number;
  readonly len: number;
}

/** What a host call cost and did. */
export interface HostCallResult {
  /** Virtual nanoseconds the VMM spent in it. */
  ns: number;
  /** System calls made (one madvise per range, or one process_madvise for all). */
  syscalls: number;
  /** Bytes of host memory freed. */
  bytesReturned: number;
}

/**
 * The VMM's side of a discard, implemented over its RAM blocks: anonymous
 * RAM with MADV_DONTNEED, shared and hugetlb backends with MADV_REMOVE or
 * fallocate(PUNCH_HOLE) (ram_block_discard_range). A range may span RAM
 * blocks; the host splits it.
 */
export interface BalloonHost {
  /**
   * Discard guest RAM. `batched`: one process_madvise with an iovec per range
   * (memtwin option); otherwise one madvise (or fallocate) per range, as QEMU does.
   */
  discard(ranges: readonly GpaRange[], batched: boolean): HostCallResult;
  /** QEMU_MADV_WILLNEED on deflated host pages, one call per range. */
  willNeed(ranges: readonly GpaRange[]): HostCallResult;
  /** qemu_ram_pagesize of the RAM block holding `gpa`; 0 if `gpa` is not RAM. */
  pageSize(gpa: number): number;
  /** virtio_balloon_inhibited: discards disabled (VFIO, incoming postcopy, background snapshot). */
  discardInhibited?(): boolean;
}

/**
 * Device costs besides the transport's (src/virtio/timing.ts):
 * - vmm_gpa_lookup: translating one PFN, chunk or range to its RAM block
 *   (memory_region_find, qemu_ram_block_from_host), and for hints clearing
 *   its dirty bits.
 * - vmm_balloon_decode_entry / vmm_balloon_decode_bitmap_word: reading one
 *   message entry (a PFN, chunk, pfn+order entry, or a bitmap's run) into a
 *   range, and scanning one u64 word of a bitmap (measured here).
 */
export const VMM_BALLOON_COSTS = ['vmm_gpa_lookup', 'vmm_balloon_decode_entry', 'vmm_balloon_decode_bitmap_word'] as const;

export interface VirtioBalloonDeviceOptions {
  /** get_current_ram_size(): guest RAM bytes, hotplugged DIMMs included. */
  ramSize: number;
  /** QEMU property deflate-on-oom. */
  deflateOnOom?: boolean;
  /** QEMU property free-page-hint. */
  freePageHint?: boolean;
  /** QEMU property free-page-reporting. */
  freePageReporting?: boolean;
  /** memtwin feature `virtio-balloon-chunks` (off by default): the same as inflateEncoding 'chunks'. */
  chunks?: boolean;
  /** memtwin: the inflate/deflate encoding offered (default 'pfns', upstream's PFN arrays). */
  inflateEncoding?: vb.InflateEncodingName;
  /**
   * memtwin: the free page hint encoding (default `ranges`), its PFN width
   * (pfn-list: 4 or 8 bytes), entries per message (default 1; bitmap: bits
   * per window, a multiple of 64) and the lowest order hinted (default 0).
   * Upstream Linux behaves like `ranges` with batch 1 and lowest order
   * MAX_PAGE_ORDER (VIRTIO_BALLOON_HINT_BLOCK_ORDER), the block itself
   * being the descriptor.
   */
  hintEncoding?: vb.HintEncodingName;
  hintPfnBytes?: 4 | 8;
  hintBatch?: number;
  hintMinOrder?: number;
  /** memtwin: with the bitmap hint encoding, the order of the pages one bit covers (0: 4 KiB, default; 9: 2 MiB). */
  hintBitmapOrder?: number;
  /** memtwin: also discard hinted ranges on the host. */
  hintDiscard?: boolean;
  /** memtwin: one batched host call (process_madvise) per element instead of one per range. */
  discardBatched?: boolean;
  /** guest-stats-polling-interval, seconds (0: off). */
  statsPollIntervalS?: number;
}

/** enum virtio_balloon_free_page_hint_status. */
export const FREE_PAGE_HINT_S_STOP = 0;
export const FREE_PAGE_HINT_S_REQUESTED = 1;
export const FREE_PAGE_HINT_S_START = 2;
export const FREE_PAGE_HINT_S_DONE = 3;

/** A BALLOON_CHANGE event (qapi_event_send_balloon_change). */
export interface BalloonChangeEvent {
  at: number;
  actual: number;
}

export interface VirtioBalloonMetrics {
  /** Buffer chains the driver sent, all queues. */
  messages: number;
  /** VM exits: kicks plus config-space accesses. */
  exits: number;
  kicks: number;
  configExits: number;
  interrupts: number;
  /** Bytes of the buffers the device read (PFN arrays, chunks, hints, stats, command ids). */
  bytesRead: number;
  /** Bytes the driver offered: readable plus writable buffers. */
  bufferBytes: number;
  /** Ring bytes: descriptors, available and used ring entries. */
  ringBytes: number;
  guestCpuNs: number;
  exitNs: number;
  /** vCPU time halted waiting for the host beyond its work: the thread wakeups of tell_host and reports. */
  waitNs: number;
  hostCpuNs: number;
  /** Of hostCpuNs, decoding messages (entries and bitmap words). */
  decodeNs: number;
  hostSyscalls: number;
  hostBytesReturned: number;
  /** Balloon PFNs (4 KiB) processed on the inflate and deflate queues. */
  pfnsInflated: number;
  pfnsDeflated: number;
  /** 4 KiB pages hinted while hinting was on (START). */
  pagesHinted: number;
  /** Bytes reported free on the reporting queue. */
  bytesReported: number;
  elapsedNs: number;
  perQueue: Record<string, VirtqueueStats>;
}

type Counters = Omit<VirtioBalloonMetrics, 'perQueue'>;

export class VirtioBalloonDevice {
  readonly transport: VirtioTransport;
  /** Pages the host asked for (config num_pages). */
  numPages = 0;
  /** Pages the guest says it gave (config actual). */
  actual = 0;
  freePageHintStatus = FREE_PAGE_HINT_S_STOP;
  freePageHintCmdId = vb.VIRTIO_BALLOON_FREE_PAGE_HINT_CMD_ID_MIN;
  poisonVal = 0;
  readonly events: BalloonChangeEvent[] = [];
  private readonly stats = new Array<number>(vb.VIRTIO_BALLOON_S_NR).fill(-1);
  private statsLastUpdate = 0;
  private statsVqElem: VirtQueueElement | null = null;
  private statsPollIntervalS = 0;
  private statsTimer: EventHandle | null = null;
  /** Hinted 4 KiB pages migration may skip (1) — cleared by markDirty. */
  private hinted = new Uint8Array(0);
  private hintedCount = 0;
  /** The migration's qemu_guest_free_page_hint while it logs dirty pages (setFreePageHint). */
  private migrationHint: ((gpa: number, len: number) => void) | null = null;
  private hostSyscalls = 0;
  private hostBytesReturned = 0;
  private pfnsInflated = 0;
  private pfnsDeflated = 0;
  private pagesHinted = 0;
  private bytesReported = 0;
  private decodeNs = 0;
  private readonly inflateEncoding: vb.InflateEncodingName;
  private baseline: Counters | null = null;
  private readonly baselineQueues = new Map<string, VirtqueueStats>();
  private readonly hintCode: vb.HintEncodingCode;

  constructor(
    private readonly timing: VirtioTiming,
    buffers: GuestBuffers,
    private readonly clockEvents: EventQueue,
    private readonly host: BalloonHost,
    private readonly opts: VirtioBalloonDeviceOptions,
  ) {
    requireCosts(timing.costs, VMM_BALLOON_COSTS, 'virtio-balloon device');
    if (opts.chunks && opts.inflateEncoding && opts.inflateEncoding !== 'chunks')
      throw new RangeError(`virtio-balloon-chunks and inflate encoding ${opts.inflateEncoding} exclude each other`);
    this.inflateEncoding = opts.inflateEncoding ?? (opts.chunks ? 'chunks' : 'pfns');
    const bitmapOrder = opts.hintBitmapOrder ?? 0;
    if (!(Number.isInteger(bitmapOrder) && bitmapOrder >= 0 && bitmapOrder <= 10))
      throw new RangeError(`free page hint bitmap order ${bitmapOrder} must be 0 to 10`);
    this.hintCode = vb.hintEncodingCode(opts.hintEncoding ?? 'ranges', opts.hintPfnBytes ?? 4);
    const batch = opts.hintBatch ?? 1;
    if (!(Number.isInteger(batch) && batch >= 1)) throw new RangeError(`free page hint batch ${batch} must be a positive integer`);
    if (this.hintCode === vb.HintEncodingCode.BITMAP && batch % 64)
      throw new RangeError(`a bitmap hint batch (${batch} bits) must be a multiple of 64`);
    this.transport = new VirtioTransport(
      vb.VIRTIO_ID_BALLOON,
      this.hostFeatures(),
      vb.VIRTIO_BALLOON_CONFIG_BYTES,
      this.queueSpecs(),
      timing,
      buffers,
    );
    this.transport.onConfigWrite = () => this.setConfig();
    this.setQueueHandlers();
    const c = this.transport.config;
    c.setUint32(vb.CONFIG_MEMTWIN_HINT_ENCODING, this.hintCode, true);
    c.setUint32(vb.CONFIG_MEMTWIN_HINT_BATCH, batch, true);
    c.setUint32(vb.CONFIG_MEMTWIN_HINT_MIN_ORDER, opts.hintMinOrder ?? 0, true);
    c.setUint32(vb.CONFIG_MEMTWIN_HINT_BITMAP_ORDER, bitmapOrder, true);
    this.syncConfig();
    if (opts.statsPollIntervalS) this.setStatsPollInterval(opts.statsPollIntervalS);
  }

  /** host_features: STATS_VQ always (virtio_balloon_get_features), the rest by property. */
  private hostFeatures(): bigint {
    const bit = (b: number): bigint => 1n << BigInt(b);
    let f = bit(vb.VIRTIO_BALLOON_F_STATS_VQ);
    if (this.opts.deflateOnOom) f |= bit(vb.VIRTIO_BALLOON_F_DEFLATE_ON_OOM);
    if (this.opts.freePageHint) f |= bit(vb.VIRTIO_BALLOON_F_FREE_PAGE_HINT);
    if (this.opts.freePageReporting) f |= bit(vb.VIRTIO_BALLOON_F_REPORTING);
    const enc = vb.inflateEncodingFeature(this.opts.inflateEncoding ?? (this.opts.chunks ? 'chunks' : 'pfns'));
    if (enc !== undefined) f |= bit(enc);
    return f;
  }

  /** virtio_balloon_device_realize: 128-entry inflate, deflate and stats queues; the others by feature. */
  private queueSpecs(): (null | { name: string; size: number })[] {
    const n = vb.VIRTIO_BALLOON_VQ_NAMES;
    return [
      { name: n[0], size: 128 },
      { name: n[1], size: 128 },
      { name: n[2], size: 128 },
      this.opts.freePageHint ? { name: n[3], size: VIRTQUEUE_MAX_SIZE } : null,
      this.opts.freePageReporting ? { name: n[4], size: 32 } : null,
    ];
  }

  private setQueueHandlers(): void {
    const q = this.transport.queues;
    q[vb.VIRTIO_BALLOON_VQ_INFLATE]!.onNotify = (vq) => this.handleOutput(vq, false);
    q[vb.VIRTIO_BALLOON_VQ_DEFLATE]!.onNotify = (vq) => this.handleOutput(vq, true);
    q[vb.VIRTIO_BALLOON_VQ_STATS]!.onNotify = (vq) => this.receiveStats(vq);
    const fpv = q[vb.VIRTIO_BALLOON_VQ_FREE_PAGE];
    if (fpv) fpv.onNotify = (vq) => this.getFreePageHints(vq);
    const rep = q[vb.VIRTIO_BALLOON_VQ_REPORTING];
    if (rep) rep.onNotify = (vq) => this.handleReport(vq);
  }

  /** The inflate encoding in use: the one offered, if the driver accepted its feature bit. */
  private encoding(): vb.InflateEncodingName {
    const bit = vb.inflateEncodingFeature(this.inflateEncoding);
    return bit !== undefined && this.transport.hasFeature(bit) ? this.inflateEncoding : 'pfns';
  }

  /** The host CPU of decoding: entries read and bitmap words scanned. */
  private chargeDecode(work: DecodeWork): void {
    const ns =
      work.entries * this.timing.cost('vmm_balloon_decode_entry') + work.words * this.timing.cost('vmm_balloon_decode_bitmap_word');
    this.decodeNs += ns;
    this.timing.chargeHost(ns);
  }

  private inhibited(): boolean {
    return this.host.discardInhibited?.() ?? false;
  }

  private lookup(n = 1): void {
    this.timing.chargeHost(n * this.timing.cost('vmm_gpa_lookup'));
  }

  private hostCall(r: HostCallResult): void {
    this.hostSyscalls += r.syscalls;
    this.hostBytesReturned += r.bytesReturned;
    this.timing.chargeHost(r.ns);
  }

  // --- config, target, actual ---------------------------------------------------------------

  /** virtio_balloon_get_config: what the guest reads. */
  private syncConfig(): void {
    const c = this.transport.config;
    c.setUint32(vb.CONFIG_NUM_PAGES, this.numPages, true);
    c.setUint32(vb.CONFIG_ACTUAL, this.actual, true);
    c.setUint32(vb.CONFIG_POISON_VAL, this.poisonVal, true);
    let id = 0;
    if (this.freePageHintStatus === FREE_PAGE_HINT_S_REQUESTED) id = this.freePageHintCmdId;
    else if (this.freePageHintStatus === FREE_PAGE_HINT_S_STOP) id = vb.VIRTIO_BALLOON_CMD_ID_STOP;
    else if (this.freePageHintStatus === FREE_PAGE_HINT_S_DONE) id = vb.VIRTIO_BALLOON_CMD_ID_DONE;
    else id = this.transport.config.getUint32(vb.CONFIG_FREE_PAGE_HINT_CMD_ID, true); // START: unchanged
    c.setUint32(vb.CONFIG_FREE_PAGE_HINT_CMD_ID, id, true);
  }

  /** virtio_balloon_set_config: the guest wrote `actual`. */
  private setConfig(): void {
    const old = this.actual;
    this.actual = this.transport.config.getUint32(vb.CONFIG_ACTUAL, true);
    // The change is in effect now (a step's effects happen when it starts); BALLOON_CHANGE carries the time the
    // guest's work that wrote it is done (VirtioTiming.atCompletion: the clock's time without a scheduler).
    if (this.actual !== old) {
      const actual = this.queryBalloon().actual;
      this.timing.atCompletion((at) => this.events.push({ at, actual }));
    }
    this.syncConfig();
  }

  /** QMP `balloon`: virtio_balloon_to_target. `target` is the guest's wanted RAM in bytes. */
  balloon(target: number): void {
    if (!(target > 0)) throw new RangeError(`Parameter 'value' expects a size greater than zero, got ${target}`);
    target = Math.min(target, this.opts.ramSize);
    this.numPages = Math.floor((this.opts.ramSize - target) / BALLOON_PAGE_SIZE);
    this.syncConfig();
    this.transport.notifyConfig();
  }

  /** QMP `query-balloon`: { actual } in bytes, ram_size - actual pages. */
  queryBalloon(): { actual: number } {
    return { actual: this.opts.ramSize - this.actual * BALLOON_PAGE_SIZE };
  }

  // --- inflate and deflate ---------------------------------------------------------------------

  /** virtio_balloon_handle_output. */
  private handleOutput(vq: SplitVirtqueue, deflate: boolean): void {
    for (let elem = vq.pop(); elem; elem = vq.pop()) {
      const bytes = vq.readOut(elem);
      const enc = this.encoding();
      if (enc === 'pfns') this.handlePfns(bytes, deflate);
      else {
        const work = { entries: 0, words: 0 };
        const ranges = decodeInflate(enc, bytes, work);
        this.chargeDecode(work);
        this.handleRanges(ranges, deflate);
      }
      vq.push(elem, 0);
      vq.notify();
    }
  }

  private handlePfns(bytes: Uint8Array, deflate: boolean): void {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const pbp: PartiallyBalloonedPage = { base: -1, bits: null };
    const batch: GpaRange[] = [];
    this.chargeDecode({ entries: Math.floor(bytes.length / vb.VIRTIO_BALLOON_PFN_BYTES), words: 0 });
    for (let off = 0; off + 4 <= bytes.length; off += 4) {
      const pa = view.getUint32(off, true) * BALLOON_PAGE_SIZE;
      this.lookup();
      const ps = this.host.pageSize(pa);
      if (!ps) continue;
      if (deflate) this.pfnsDeflated++;
      else this.pfnsInflated++;
      if (this.inhibited()) continue;
      if (deflate) this.hostCall(this.host.willNeed([{ gpa: alignDown(pa, ps), len: ps }]));
      else this.inflatePage(pa, ps, pbp, batch);
    }
    if (batch.length) this.hostCall(this.host.discard(batch, true));
  }

  /**
   * balloon_inflate_page: a 4 KiB host page is discarded at once; a subpage
   * of a larger host page is set in the partially-ballooned bitmap, and the
   * host page is discarded when every subpage is in.
   */
  private inflatePage(pa: number, ps: number, pbp: PartiallyBalloonedPage, batch: GpaRange[]): void {
    if (ps === BALLOON_PAGE_SIZE) return this.discardOne({ gpa: pa, len: ps }, batch);
    const base = alignDown(pa, ps);
    const subpages = ps / BALLOON_PAGE_SIZE;
    if (pbp.bits && pbp.base !== base) pbp.bits = null;
    if (!pbp.bits) {
      pbp.base = base;
      pbp.bits = new Uint8Array(subpages);
      pbp.set = 0;
    }
    const i = (pa - base) / BALLOON_PAGE_SIZE;
    if (!pbp.bits[i]) {
      pbp.bits[i] = 1;
      pbp.set = (pbp.set ?? 0) + 1;
    }
    if (pbp.set === subpages) {
      this.discardOne({ gpa: base, len: ps }, batch);
      pbp.bits = null;
    }
  }

  private discardOne(r: GpaRange, batch: GpaRange[]): void {
    if (this.opts.discardBatched) batch.push(r);
    else this.hostCall(this.host.discard([r], false));
  }

  /** memtwin encodings: one translation per decoded range; whole host pages inside a range are discarded. */
  private handleRanges(ranges: readonly GpaRange[], deflate: boolean): void {
    const discard: GpaRange[] = [];
    const willNeed: GpaRange[] = [];
    for (const { gpa: addr, len } of ranges) {
      this.lookup();
      const ps = this.host.pageSize(addr);
      if (!ps) continue;
      if (deflate) this.pfnsDeflated += len / BALLOON_PAGE_SIZE;
      else this.pfnsInflated += len / BALLOON_PAGE_SIZE;
      if (this.inhibited()) continue;
      if (deflate) {
        const start = alignDown(addr, ps);
        willNeed.push({ gpa: start, len: alignUp(addr + len, ps) - start });
        continue;
      }
      const start = alignUp(addr, ps);
      const end = alignDown(addr + len, ps);
      if (end > start) discard.push({ gpa: start, len: end - start });
    }
    if (willNeed.length) this.hostCall(this.host.willNeed(willNeed));
    if (discard.length) this.hostCall(this.host.discard(discard, !!this.opts.discardBatched));
  }

  // --- statistics --------------------------------------------------------------------------------

  /** virtio_balloon_receive_stats: keep the element, parse tag/value pairs. */
  private receiveStats(vq: SplitVirtqueue): void {
    const elem = vq.pop();
    if (elem) {
      if (this.statsVqElem) {
        vq.push(this.statsVqElem, 0);
        vq.notify();
      }
      this.statsVqElem = elem;
      this.stats.fill(-1);
      const bytes = vq.readOut(elem);
      const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      for (let off = 0; off + vb.VIRTIO_BALLOON_STAT_BYTES <= bytes.length; off += vb.VIRTIO_BALLOON_STAT_BYTES) {
        const tag = view.getUint16(off, true);
        if (tag < vb.VIRTIO_BALLOON_S_NR) this.stats[tag] = Number(view.getBigUint64(off + 2, true));
      }
      this.statsLastUpdate = Math.floor(this.timing.clock.now() / NSEC_PER_SEC);
    }
    if (this.statsPollIntervalS > 0) this.changeStatsTimer(this.statsPollIntervalS);
  }

  /** guest-stats-polling-interval: 0 stops polling. */
  setStatsPollInterval(seconds: number): void {
    if (!(seconds >= 0)) throw new RangeError('timer value must be greater than zero');
    if (seconds === this.statsPollIntervalS) return;
    if (seconds === 0) {
      this.statsTimer?.cancel();
      this.statsTimer = null;
      this.statsPollIntervalS = 0;
      return;
    }
    const wasEnabled = this.statsPollIntervalS > 0;
    this.statsPollIntervalS = seconds;
    this.changeStatsTimer(wasEnabled ? seconds : 0);
  }

  private changeStatsTimer(seconds: number): void {
    this.statsTimer?.cancel();
    this.statsTimer = this.clockEvents.after(seconds * NSEC_PER_SEC, 'virtio-balloon:stats-poll', () => this.statsPoll());
  }

  /** balloon_stats_poll_cb: hand the buffer back so the guest refills it. */
  private statsPoll(): void {
    this.statsTimer = null;
    const vq = this.transport.queues[vb.VIRTIO_BALLOON_VQ_STATS]!;
    if (!this.statsVqElem || !this.transport.hasFeature(vb.VIRTIO_BALLOON_F_STATS_VQ)) {
      this.changeStatsTimer(this.statsPollIntervalS);
      return;
    }
    const elem = this.statsVqElem;
    this.statsVqElem = null;
    vq.push(elem, 0);
    vq.notify();
  }

  /** The guest-stats property: last-update (seconds of virtual time) and stat-* values (-1: unset). */
  guestStats(): { 'last-update': number; stats: Record<string, number> } {
    const stats: Record<string, number> = {};
    vb.VIRTIO_BALLOON_S_NAMES.forEach((n, i) => (stats[`stat-${n}`] = this.stats[i]!));
    return { 'last-update': this.statsLastUpdate, stats };
  }

  // --- free page hints ----------------------------------------------------------------------------

  /** virtio_balloon_free_page_start (PRECOPY_NOTIFY_AFTER_BITMAP_SYNC): a new command id. */
  freePageStart(): void {
    this.requireHints();
    this.freePageHintCmdId =
      this.freePageHintCmdId === 0xffffffff ? vb.VIRTIO_BALLOON_FREE_PAGE_HINT_CMD_ID_MIN : this.freePageHintCmdId + 1;
    this.freePageHintStatus = FREE_PAGE_HINT_S_REQUESTED;
    this.syncConfig();
    this.transport.notifyConfig();
  }

  /** virtio_balloon_free_page_stop (PRECOPY_NOTIFY_BEFORE_BITMAP_SYNC). */
  freePageStop(): void {
    this.requireHints();
    if (this.freePageHintStatus === FREE_PAGE_HINT_S_STOP) return;
    this.freePageHintStatus = FREE_PAGE_HINT_S_STOP;
    this.syncConfig();
    this.transport.notifyConfig();
  }

  /** virtio_balloon_free_page_done (cleanup, or the VM stopped): the guest may reuse every hinted page. */
  freePageDone(): void {
    this.requireHints();
    if (this.freePageHintStatus === FREE_PAGE_HINT_S_DONE) return;
    this.freePageHintStatus = FREE_PAGE_HINT_S_DONE;
    this.syncConfig();
    this.transport.notifyConfig();
  }

  /**
   * virtio_balloon_free_page_hint_notify, the device's precopy notifier:
   * hinting stops before each bitmap sync and starts again (a new command
   * id) after it while the VM runs; after the final sync (the VM stopped)
   * and at cleanup (completed, failed or cancelled) the guest is told DONE
   * and takes its hinted pages back. Never with postcopy-ram: a page
   * hinted free is not in the bitmap, and a destination that faults on it
   * would wait until postcopy ends.
   */
  precopyNotify(reason: PrecopyNotifyReason, vmRunning: boolean, postcopyRam: boolean): void {
    if (!this.opts.freePageHint || postcopyRam) return;
    switch (reason) {
      case 'before-bitmap-sync':
        this.freePageStop();
        return;
      case 'after-bitmap-sync':
        if (vmRunning) this.freePageStart();
        else this.freePageDone();
        return;
      case 'cleanup':
        this.freePageDone();
        return;
      case 'setup':
      case 'complete':
        return;
    }
  }

  private requireHints(): void {
    if (!this.opts.freePageHint) throw new Error('virtio-balloon: free-page-hint is off');
  }

  /** get_free_page_hints over every pending element (the iothread's bottom half: its CPU is the iothread's). */
  private getFreePageHints(vq: SplitVirtqueue): void {
    this.timing.onIothread(() => this.getFreePageHintsOn(vq));
  }

  private getFreePageHintsOn(vq: SplitVirtqueue): void {
    for (let elem = vq.pop(); elem; elem = vq.pop()) {
      if (elem.outSg.length) this.receiveCmdId(vq, elem);
      if (elem.inSg.length && this.freePageHintStatus === FREE_PAGE_HINT_S_START) this.receiveHints(vq.readIn(elem));
      vq.push(elem, 0);
      vq.notify();
    }
  }

  private receiveCmdId(vq: SplitVirtqueue, elem: VirtQueueElement): void {
    const bytes = vq.readOut(elem);
    if (bytes.length !== vb.VIRTIO_BALLOON_CMD_ID_BYTES) throw new Error('virtio-balloon: received an incorrect cmd id');
    const id = new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0, true);
    if (this.freePageHintStatus === FREE_PAGE_HINT_S_REQUESTED && id === this.freePageHintCmdId)
      this.freePageHintStatus = FREE_PAGE_HINT_S_START;
    else if (this.freePageHintStatus === FREE_PAGE_HINT_S_START) this.freePageHintStatus = FREE_PAGE_HINT_S_STOP;
    this.syncConfig();
  }

  /** Decode one hint message and record (and maybe discard) its ranges. */
  private receiveHints(bytes: Uint8Array): void {
    const work = { entries: 0, words: 0 };
    const ranges = decodeHints(this.hintCode, bytes, this.transport.config.getUint32(vb.CONFIG_MEMTWIN_HINT_BITMAP_ORDER, true), work);
    this.chargeDecode(work);
    this.lookup(ranges.length);
    for (const r of ranges) this.recordHint(r);
    if (this.opts.hintDiscard && !this.inhibited() && ranges.length) this.hostCall(this.host.discard(ranges, !!this.opts.discardBatched));
  }

  /** qemu_guest_free_page_hint: the range's pages are clean for migration until written. */
  private recordHint(r: GpaRange): void {
    this.migrationHint?.(r.gpa, r.len);
    const first = r.gpa / BALLOON_PAGE_SIZE;
    const n = r.len / BALLOON_PAGE_SIZE;
    this.ensureHinted(first + n);
    for (let p = first; p < first + n; p++) {
      if (!this.hinted[p]) this.hintedCount++;
      this.hinted[p] = 1;
    }
    this.pagesHinted += n;
  }

  private ensureHinted(pages: number): void {
    if (pages <= this.hinted.length) return;
    const grown = new Uint8Array(Math.max(pages, this.hinted.length * 2));
    grown.set(this.hinted);
    this.hinted = grown;
  }

  /**
   * The dirty log saw the guest write [gpa, gpa + len) (KVM's dirty bitmap,
   * migration_bitmap_sync): hinted pages in it are dirty again and must be sent.
   */
  markDirty(gpa: number, len: number): void {
    const first = Math.floor(gpa / BALLOON_PAGE_SIZE);
    const end = Math.min(this.hinted.length, Math.ceil((gpa + len) / BALLOON_PAGE_SIZE));
    for (let p = first; p < end; p++) {
      if (this.hinted[p]) this.hintedCount--;
      this.hinted[p] = 0;
    }
  }

  /** The migration's side of qemu_guest_free_page_hint, told each range recorded (FreePageHints). */
  setFreePageHint(hint: ((gpa: number, len: number) => void) | null): void {
    this.migrationHint = hint;
  }

  /** Whether migration may skip the 4 KiB page at `gpa` (hinted free and not written since). */
  isSkippable(gpa: number): boolean {
    return this.hinted[Math.floor(gpa / BALLOON_PAGE_SIZE)] === 1;
  }

  /** The hinted ranges migration may skip, ascending, contiguous pages merged. */
  hintedRanges(): GpaRange[] {
    const out: GpaRange[] = [];
    const h = this.hinted;
    for (let p = 0; p < h.length; p++) {
      if (!h[p]) continue;
      const start = p;
      while (p < h.length && h[p]) p++;
      out.push({ gpa: start * BALLOON_PAGE_SIZE, len: (p - start) * BALLOON_PAGE_SIZE });
    }
    return out;
  }

  /** 4 KiB pages currently skippable. */
  get hintedPages(): number {
    return this.hintedCount;
  }

  /** Forget every hint (a migration ended). */
  clearHints(): void {
    this.hinted.fill(0);
    this.hintedCount = 0;
  }

  // --- free page reporting ----------------------------------------------------------------------------

  /** virtio_balloon_handle_report: discard every host-page-aligned reported range. */
  private handleReport(vq: SplitVirtqueue): void {
    for (let elem = vq.pop(); elem; elem = vq.pop()) {
      if (!this.inhibited() && !this.poisonVal) {
        const ranges: GpaRange[] = [];
        for (const sg of elem.inSg) {
          this.lookup();
          const ps = this.host.pageSize(sg.addr);
          if (!ps || (sg.addr | sg.len) % ps) continue;
          ranges.push({ gpa: sg.addr, len: sg.len });
          this.bytesReported += sg.len;
        }
        if (ranges.length && this.opts.discardBatched) this.hostCall(this.host.discard(ranges, true));
        else for (const r of ranges) this.hostCall(this.host.discard([r], false));
      }
      vq.push(elem, 0);
      vq.notify();
    }
  }

  // --- metrics -----------------------------------------------------------------------------------------

  private counters(): Counters {
    const qs = this.transport.queues.filter((q): q is SplitVirtqueue => !!q);
    const sum = (f: (s: VirtqueueStats) => number): number => qs.reduce((a, q) => a + f(q.stats), 0);
    const t = this.timing;
    return {
      messages: sum((s) => s.messages),
      exits: t.exits,
      kicks: t.kicks,
      configExits: t.configExits,
      interrupts: t.interrupts,
      bytesRead: sum((s) => s.bytesRead),
      bufferBytes: sum((s) => s.outBytes + s.inBytes),
      ringBytes: sum((s) => s.ringBytes),
      guestCpuNs: t.guestCpuNs,
      exitNs: t.exitNs,
      waitNs: t.waitNs,
      hostCpuNs: t.hostCpuNs,
      decodeNs: this.decodeNs,
      hostSyscalls: this.hostSyscalls,
      hostBytesReturned: this.hostBytesReturned,
      pfnsInflated: this.pfnsInflated,
      pfnsDeflated: this.pfnsDeflated,
      pagesHinted: this.pagesHinted,
      bytesReported: this.bytesReported,
      elapsedNs: t.clock.now(),
    };
  }

  /** Start measuring from now: later metrics() are differences from this point. */
  resetMetrics(): void {
    this.baseline = this.counters();
    for (const q of this.transport.queues) if (q) this.baselineQueues.set(q.name, { ...q.stats });
  }

  /** Messages, exits, bytes, guest and host CPU, syscalls, memory returned, elapsed time. */
  metrics(): VirtioBalloonMetrics {
    const now = this.counters();
    const base = this.baseline;
    const out = { ...now } as Counters;
    if (base) for (const k of Object.keys(now) as (keyof Counters)[]) out[k] = now[k] - base[k];
    const perQueue: Record<string, VirtqueueStats> = {};
    for (const q of this.transport.queues) {
      if (!q) continue;
      const b = this.baselineQueues.get(q.name);
      const s = { ...q.stats };
      if (b) for (const k of Object.keys(s) as (keyof VirtqueueStats)[]) s[k] -= b[k];
      perQueue[q.name] = s;
    }
    return { ...out, perQueue };
  }
}

/** QEMU's PartiallyBalloonedPage (plus a count of set bits). */
interface PartiallyBalloonedPage {
  base: number;
  bits: Uint8Array | null;
  set?: number;
}

/**
 * Decode a hint message into guest-physical ranges, one per entry (a
 * bitmap: one per run of set bits, each bit 2^bitmapOrder pages), counting
 * the decoding work into `work`.
 */
export function decodeHints(
  code: vb.HintEncodingCode,
  bytes: Uint8Array,
  bitmapOrder = 0,
  work: DecodeWork = { entries: 0, words: 0 },
): GpaRange[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: GpaRange[] = [];
  const es = vb.hintEntryBytes(code);
  switch (code) {
    case vb.HintEncodingCode.PFN_LIST_32:
      for (let o = 0; o + es <= bytes.length; o += es)
        out.push({ gpa: view.getUint32(o, true) * BALLOON_PAGE_SIZE, len: BALLOON_PAGE_SIZE });
      break;
    case vb.HintEncodingCode.PFN_LIST_64:
      for (let o = 0; o + es <= bytes.length; o += es)
        out.push({ gpa: Number(view.getBigUint64(o, true)) * BALLOON_PAGE_SIZE, len: BALLOON_PAGE_SIZE });
      break;
    case vb.HintEncodingCode.PFN_ORDER:
      for (let o = 0; o + es <= bytes.length; o += es) {
        const v = Number(view.getBigUint64(o, true));
        const order = v % (vb.HINT_PFN_ORDER_MASK + 1);
        out.push({ gpa: v - order, len: BALLOON_PAGE_SIZE * 2 ** order });
      }
      break;
    case vb.HintEncodingCode.RANGES:
      for (let o = 0; o + es <= bytes.length; o += es)
        out.push({ gpa: Number(view.getBigUint64(o, true)), len: Number(view.getBigUint64(o + 8, true)) });
      break;
    case vb.HintEncodingCode.BITMAP:
      return decodeBitmap(bytes, bitmapOrder, work);
  }
  work.entries += out.length;
  return out;
}

function alignDown(x: number, a: number): number {
  return x - (x % a);
}

function alignUp(x: number, a: number): number {
  return Math.ceil(x / a) * a;
}
