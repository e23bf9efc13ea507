/**
 * multifd (QEMU migration/multifd.c, multifd-nocomp.c, multifd-zlib.c,
 * multifd-zstd.c, multifd-zero-page.c): RAM pages sent over several TCP
 * channels, each with a sender thread on the source (`multifdsend_N`) and
 * a receiver thread on the destination (`multifdrecv_N`). QEMU 9.x
 * semantics; where 7.2 differs it is said below.
 *
 * - The migration thread's scan (ram_find_and_save_block) hands each dirty
 *   page to multifd_queue_page: pages of one RAM block gather into a packet
 *   of MULTIFD_PACKET_SIZE (512 KiB: 128 pages of 4K); a full packet, or a
 *   block change, hands the packet to the next free channel, round robin
 *   (multifd_send_pages).
 * - A packet on the wire: MultiFDPacket_t (magic, version, flags,
 *   pages_alloc, normal_pages, next_packet_size, packet_num, zero_pages,
 *   unused32[1], unused64[3], ramblock[256]: 320 bytes) and its offset[]
 *   array, allocated and sent whole for 128 pages (8 bytes each: 1,344
 *   bytes a packet), then the normal pages' data (4 KiB each, or what the
 *   compressor made of them). Zero pages (zero-page-detection `multifd`,
 *   QEMU 9.0's default) are found by the sender thread (buffer_is_zero)
 *   and travel as offsets only; with `legacy` the migration thread finds
 *   them and sends them on the main channel as RAM_SAVE_FLAG_ZERO, as QEMU
 *   7.2 did; with `none` they are sent (and compressed) as normal pages.
 * - Each channel opens with MultiFDInit_t (64 bytes: magic, version, the
 *   VM's UUID, the channel id, padding).
 * - multifd_send_sync_main: at the start (ram_save_setup), at every bitmap
 *   sync (QEMU 8.0+ without multifd-flush-after-each-section; 7.2 synced
 *   at the end of every ram_save_iterate) and at completion, every channel
 *   sends a packet with MULTIFD_FLAG_SYNC and no page (the header and its
 *   offset array), and the main channel RAM_SAVE_FLAG_MULTIFD_FLUSH (8
 *   bytes). The migration thread waits until each channel has sent its
 *   sync packet: here the step that carries them ends when every channel's
 *   bytes are on the wire.
 * - Bytes: every packet (header and data) and the initial packets count in
 *   query-migrate's ram.multifd-bytes and in ram.transferred (QEMU:
 *   migration_transferred_bytes = the main channel's bytes + multifd_bytes).
 *   The rate limit (max-bandwidth) counts them too (migration_rate_account).
 * - Compression (multifd-compression zlib or zstd, at multifd-zlib-level or
 *   multifd-zstd-level): each channel keeps one deflate / zstd stream and
 *   compresses a packet's normal pages into it, flushing at the packet's
 *   last page (Z_SYNC_FLUSH / ZSTD_e_flush); the receiver inflates into
 *   guest RAM. The ns per page and the compressed size come from the cost
 *   profile, measured per content class with the real libraries
 *   (`memtwin calibrate`, group multifd_compress: native/calibrate.md).
 *   memtwin tracks one byte of a page's content, so what a non-zero page
 *   holds is the migration's `pageContent` (same-filled, text or random);
 *   a zero page sent whole (zero-page-detection none) is the `zero` class.
 *   Only the levels the profile was measured at (QEMU's default, 1) are
 *   modelled.
 * - CPU: a sender thread's per-page work and a receiver's are CPU work on
 *   the scheduler. Without compression the sender sendmsg's the packet's
 *   header and its pages straight from guest RAM (nocomp_send_prepare puts
 *   their addresses in the iovec) and the receiver readv's them straight
 *   into guest RAM (nocomp_recv): each side pays its socket per 4K
 *   (tcp_send_4k, tcp_recv_4k, the copy included) and no memcpy of its own.
 *   With zlib the sender first copies each page (zlib_send_prepare: the
 *   page may change under deflate; memcpy_4k), with zstd it compresses
 *   from guest RAM; either sends its output buffer, and the receiver reads
 *   the compressed bytes into its buffer and inflates into guest RAM: the
 *   socket's costs then follow the compressed bytes. Zero pages cost the
 *   check on each side (buffer_is_zero; clearing a non-zero destination
 *   page is a fault the kernel charges). All of it runs on the VM's QEMU
 *   threads' CPUs (competing with its vCPUs and everything else): a
 *   channel's share of a step ends when its CPU work is done and its bytes
 *   are on the wire, so a sender without a CPU to run on holds its channel
 *   back. Without a scheduler (op-scripts) each thread has a CPU of its own.
 *   The migration thread's own work per page (the bitmap scan, queueing)
 *   is not charged, as on the single channel.
 * - Postcopy: multifd carries precopy only (QEMU sends postcopy pages on
 *   the main channel and the preempt channel).
 */
import type { CpuWork, Kernel } from '../../kernel/kernel.ts';
import type { RunOutcome, SchedTask } from '../../kernel/sched/core.ts';
import { MovableEvent, Transfer, type Flow } from '../../sim/network.ts';
import { PAGE_SIZE } from '../../kernel/uapi.ts';
import type { EventQueue } from '../../sim/event_queue.ts';
import type { Vm } from '../vm.ts';
import type { Link } from './link.ts';
import type { RamMigration, SendResult } from './ram.ts';

/** MULTIFD_PACKET_SIZE (migration/multifd.h): the pages one packet carries at most, in bytes. */
export const MULTIFD_PACKET_SIZE = 512 * 1024;
/** Pages a packet carries at most (MULTIFD_PACKET_SIZE / the 4K target page). */
export const MULTIFD_PAGES_PER_PACKET = MULTIFD_PACKET_SIZE / PAGE_SIZE;
/** sizeof(MultiFDPacket_t) without its offset[] array. */
export const MULTIFD_PACKET_HEADER_BYTES = 4 * 6 + 8 + 4 + 4 + 3 * 8 + 256;
/** p->packet_len: the header and the offset array for a whole packet, sent with every packet (sync ones too). */
export const MULTIFD_PACKET_LEN = MULTIFD_PACKET_HEADER_BYTES + 8 * MULTIFD_PAGES_PER_PACKET;
/** sizeof(MultiFDInit_t): magic, version, uuid[16], id, unused1[7], unused2[4] (uint64). */
export const MULTIFD_INIT_BYTES = 4 + 4 + 16 + 1 + 7 + 4 * 8;
/** RAM_SAVE_FLAG_MULTIFD_FLUSH on the main channel (an 8-byte flag word). */
export const MULTIFD_FLUSH_BYTES = 8;

/** MultiFDCompression (qapi/migration.json). */
export const MULTIFD_COMPRESSIONS = ['none', 'zlib', 'zstd'] as const;
export type MultiFDCompression = (typeof MULTIFD_COMPRESSIONS)[number];

/** What a non-zero guest page holds, for compression (memtwin tracks one byte of it). */
export const PAGE_CONTENTS = ['same-filled', 'text', 'random'] as const;
export type PageContent = (typeof PAGE_CONTENTS)[number];
/** The content classes `memtwin calibrate` measures compression on (the zero page's too). */
export type ContentClass = 'zero' | PageContent;

/** The levels the profile's compression costs were measured at (QEMU's defaults). */
export const CALIBRATED_LEVEL = 1;

/** Cost-profile names of a compressor's figures for one content class. */
export function compressionCostNames(alg: 'zlib' | 'zstd', cls: ContentClass): { compress: string; decompress: string; bytes: string } {
  const c = cls.replace('-', '_');
  return {
    compress: `multifd_${alg}_compress_4k_${c}`,
    decompress: `multifd_${alg}_decompress_4k_${c}`,
    bytes: `multifd_${alg}_bytes_4k_${c}`,
  };
}

export interface MultifdOptions {
  channels: number;
  compression: MultiFDCompression;
  /** The level of the compression in use (multifd-zlib-level or multifd-zstd-level). */
  level: number;
  /** zero-page-detection: multifd (sender threads), legacy (the migration thread, main channel), none. */
  zeroPageDetection: 'none' | 'legacy' | 'multifd';
  /** What non-zero pages hold (default random: incompressible). */
  pageContent?: PageContent;
  /** Name prefix of the channels' flows (`NAME.multifdN`). */
  flowName: string;
}

/** Per 4K page ns and compressed bytes of one content class. */
interface ClassCost {
  srcNs: number;
  dstNs: number;
  bytes: number;
}

/** One channel: its TCP connection (a flow of its own) and its two threads. */
export interface MultifdChannel {
  id: number;
  flow: Flow;
  send: CpuWork;
  recv: CpuWork;
  /** Sync packets queued for the next step (bytes). */
  pending: number;
  /** Packets sent (sync packets included). */
  packets: number;
  /** Bytes sent (multifd-bytes' share). */
  bytes: number;
}

/** A channel's share of one step. */
export interface ChannelLoad {
  bytes: number;
  srcNs: number;
  dstNs: number;
}

/** What one multifd sending step did: the main channel's part (SendResult) and each channel's. */
export interface MultifdStep {
  main: SendResult;
  channels: ChannelLoad[];
  /** Bytes of all channels together. */
  bytes: number;
}

export class Multifd {
  readonly channels: MultifdChannel[] = [];
  /** ram.multifd-bytes. */
  bytes = 0;
  /** multifd_send_sync_main calls. */
  syncs = 0;
  /** Packets with pages (packet_num). */
  packets = 0;
  /** multifd_send_pages' round robin: the channel the next packet tries first. */
  private next = 0;
  private readonly costs: Record<'zero' | 'normal', ClassCost>;
  private readonly zeroCheckNs: number;
  private readonly mainZero: boolean;

  constructor(
    readonly ram: RamMigration,
    src: Vm,
    dst: Vm,
    link: Link,
    events: EventQueue,
    readonly opts: MultifdOptions,
  ) {
    if (!(Number.isInteger(opts.channels) && opts.channels >= 1 && opts.channels <= 255))
      throw new RangeError(`multifd channels ${opts.channels} must be 1 to 255`);
    const k = src.k;
    const nsOf = (name: string, what: string): number =>
      k.costs.nsOf(name, `multifd charges it for ${what}. Measure it (memtwin calibrate --only multifd_compress --merge PROFILE).`);
    this.zeroCheckNs = nsOf('dram_access_seq_per_4k', 'each zero page checked');
    const classCost = (cls: ContentClass): ClassCost => {
      // nocomp: sendmsg from guest RAM, readv into guest RAM: the socket's copies are the only ones.
      if (opts.compression === 'none') return { srcNs: ram.socketSendNs(PAGE_SIZE), dstNs: ram.socketRecvNs(PAGE_SIZE), bytes: PAGE_SIZE };
      const n = compressionCostNames(opts.compression, cls);
      const bytes = nsOf(n.bytes, `the compressed size of a ${cls} page`);
      // zlib_send_prepare copies the page before deflate (it may change under it); zstd reads guest RAM.
      const copy = opts.compression === 'zlib' ? nsOf('memcpy_4k', 'zlib copying each page before deflate') : 0;
      return {
        srcNs: copy + nsOf(n.compress, `compressing a ${cls} page`) + ram.socketSendNs(bytes),
        dstNs: ram.socketRecvNs(bytes) + nsOf(n.decompress, `decompressing a ${cls} page`),
        bytes,
      };
    };
    this.costs = { zero: classCost('zero'), normal: classCost(opts.pageContent ?? 'random') };
    this.mainZero = opts.zeroPageDetection === 'legacy';
    for (let id = 0; id < opts.channels; id++) {
      const flow = link.openFlow(events, `${opts.flowName}.multifd${id}`);
      this.channels.push({
        id,
        flow,
        send: src.qemuThread(`multifdsend_${id}`),
        recv: dst.qemuThread(`multifdrecv_${id}`),
        pending: 0,
        packets: 0,
        bytes: 0,
      });
    }
  }

  /** The channels' initial packets (multifd_send_initial_packet): bytes, counted in multifd-bytes and transferred. */
  initialPackets(): number {
    const n = MULTIFD_INIT_BYTES * this.channels.length;
    for (const c of this.channels) c.bytes += MULTIFD_INIT_BYTES;
    this.account(n);
    return n;
  }

  /**
   * multifd_send_sync_main: a sync packet queued on every channel (sent, and
   * counted, with the next step), and RAM_SAVE_FLAG_MULTIFD_FLUSH on the
   * main channel. Returns the main channel's bytes.
   */
  sync(): number {
    this.syncs++;
    for (const c of this.channels) {
      c.pending += MULTIFD_PACKET_LEN;
      c.packets++;
    }
    this.ram.bytes += MULTIFD_FLUSH_BYTES;
    return MULTIFD_FLUSH_BYTES;
  }

  /** Bytes queued on the channels (sync packets) that no step has carried yet. */
  get pendingBytes(): number {
    return this.channels.reduce((s, c) => s + c.pending, 0);
  }

  /**
   * One step of ram_save_iterate with multifd: packets of dirty pages, each
   * to the channel that would be free first, until the bytes reach
   * `maxBytes`, every channel's time (its sender's CPU, its receiver's, its
   * bytes at its flow's rate) or the migration thread's reaches `maxNs`, or
   * no dirty page is left. The sync packets queued go first. The channels' flows
   * must be active (their rates are what the step plans with).
   */
  send(maxBytes: number, maxNs: number): MultifdStep {
    const main: SendResult = { bytes: 0, pages: 0, srcNs: 0, dstNs: 0, hostPages: 0 };
    const loads: ChannelLoad[] = this.channels.map(() => ({ bytes: 0, srcNs: 0, dstNs: 0 }));
    let total = this.drainPending(loads);
    // A channel's time in the step: its sender's CPU, its receiver's, its bytes at its flow's rate.
    const busy = (i: number): number => {
      const l = loads[i]!;
      const rate = this.channels[i]!.flow.rate;
      return Math.max(l.srcNs, l.dstNs, rate > 0 ? (l.bytes * 1e9) / rate : l.bytes > 0 ? Infinity : 0);
    };
    // The migration thread queues packets until every channel has a step's worth (QEMU's main thread waits
    // for a free channel: all of them stay busy), or its own work fills the step.
    const leastBusy = (): number => {
      let t = Infinity;
      for (let i = 0; i < loads.length; i++) t = Math.min(t, busy(i));
      return Math.max(t, main.srcNs);
    };
    // multifd_send_pages: the first free channel from where the last search stopped; here the one that would be
    // free first (least busy in the step), ties in round-robin order.
    const pick = (): number => {
      let best = this.next;
      for (let j = 1; j < loads.length; j++) {
        const i = (this.next + j) % loads.length;
        if (busy(i) < busy(best)) best = i;
      }
      this.next = (best + 1) % loads.length;
      return best;
    };
    while (this.ram.dirtyPages > 0 && total + main.bytes < maxBytes && leastBusy() < maxNs) {
      const { block, pages } = this.ram.takeMultifdPages(MULTIFD_PAGES_PER_PACKET, main, this.mainZero);
      if (!pages.length) continue;
      const i = pick();
      const l = loads[i]!;
      let data = 0;
      for (const pg of pages) {
        const faultNs = this.ram.loadPage(block, pg.p, pg.zero, pg.byte);
        if (pg.zero) {
          // multifd_send_zero_page_detect / multifd_recv_zero_page_process: buffer_is_zero on both sides.
          l.srcNs += this.zeroCheckNs;
          l.dstNs += this.zeroCheckNs + faultNs;
          continue;
        }
        const c = pg.empty ? this.costs.zero : this.costs.normal;
        l.srcNs += c.srcNs;
        l.dstNs += c.dstNs + faultNs;
        data += c.bytes;
      }
      const bytes = MULTIFD_PACKET_LEN + Math.round(data);
      // The packet's header and offset array go through the socket with its pages.
      l.srcNs += this.ram.socketSendNs(MULTIFD_PACKET_LEN);
      l.dstNs += this.ram.socketRecvNs(MULTIFD_PACKET_LEN);
      l.bytes += bytes;
      total += bytes;
      const ch = this.channels[i]!;
      ch.packets++;
      ch.bytes += bytes;
      this.packets++;
      this.account(bytes);
    }
    return { main, channels: loads, bytes: total };
  }

  /** The sync packets queued go into `loads` (the completion's last sync, sent with the final pages). */
  drainPending(loads: ChannelLoad[]): number {
    let n = 0;
    this.channels.forEach((c, i) => {
      loads[i]!.bytes += c.pending;
      loads[i]!.srcNs += this.ram.socketSendNs(c.pending);
      loads[i]!.dstNs += this.ram.socketRecvNs(c.pending);
      c.bytes += c.pending;
      n += c.pending;
      c.pending = 0;
    });
    this.account(n);
    return n;
  }

  /** Bytes the channels carried: multifd-bytes, and in transferred. */
  private account(bytes: number): void {
    this.bytes += bytes;
    this.ram.bytes += bytes;
  }

  /** Every channel's flow leaves the network (the migration is over). */
  close(): void {
    for (const c of this.channels) c.flow.stop();
  }
}

/** What a step or the completion has on the wire: its bytes, when the first `mark` of them have left, and its end. */
export interface OnWire {
  readonly bytes: number;
  at(mark: number): number;
  finish(): void;
}

/**
 * The bytes of one step on several channels at once (the main channel and
 * the multifd channels), each a Transfer on its own flow: all of them are
 * on the wire when the last channel's are; the first `mark` bytes are taken
 * as the same fraction of every channel's (they send side by side). A
 * channel whose bytes are all on the wire goes idle (its flow stops), so
 * that the others get its share of the link while they finish.
 */
export class WireGroup implements OnWire {
  readonly bytes: number;
  private readonly parts: { tx: Transfer; bytes: number; sent: boolean; done: MovableEvent }[] = [];
  private finished = false;

  constructor(
    parts: readonly { flow: Flow; bytes: number }[],
    private readonly start: number,
    replan: () => void,
  ) {
    let total = 0;
    const moved = (): void => {
      this.schedule();
      replan();
    };
    for (const p of parts) {
      if (p.bytes <= 0) continue;
      total += p.bytes;
      const part = {
        tx: new Transfer(p.flow, p.bytes, start, moved),
        bytes: p.bytes,
        sent: false,
        done: new MovableEvent(p.flow.net.events, `${p.flow.name} sent`, () => {
          part.sent = true;
          part.tx.finish();
          p.flow.stop();
        }),
      };
      this.parts.push(part);
    }
    this.bytes = total;
    this.schedule();
  }

  /** Each channel's end on the wire, as its rate is now. */
  private schedule(): void {
    if (this.finished) return;
    for (const p of this.parts) if (!p.sent) p.done.set(p.tx.at(p.bytes));
  }

  at(mark: number): number {
    if (mark <= 0 || !this.bytes) return this.start;
    const f = Math.min(1, mark / this.bytes);
    let t = this.start;
    for (const p of this.parts) t = Math.max(t, p.tx.at(p.bytes * f));
    return t;
  }

  finish(): void {
    this.finished = true;
    for (const p of this.parts) {
      p.tx.finish();
      p.done.cancel();
    }
  }
}

/**
 * One of QEMU's threads whose CPU work the scheduler runs (the migration
 * thread, the incoming side, a multifd sender or receiver): work is queued
 * to it, it runs while it has some and sleeps when it has none, as a thread
 * blocked on its socket does. One task for the thread's whole life keeps
 * its lag across sleeps (a fresh task for each step would wait behind the
 * running vCPU's slice every time). `run` calls back when the CPU has done
 * the work; without a scheduler (op-scripts) at once, at now + ns.
 */
export class PacedThread {
  private task: SchedTask | null = null;
  private queued = 0;
  private done = 0;
  private readonly waiters: { target: number; cb: (at: number) => void }[] = [];

  constructor(
    private readonly k: Kernel,
    private readonly work: CpuWork,
  ) {}

  run(ns: number, cb: (at: number) => void): void {
    const n = Math.max(0, Math.round(ns));
    const sched = this.k.sched;
    if (!sched) {
      cb(this.k.clock.now() + n);
      return;
    }
    this.queued += n;
    this.waiters.push({ target: this.queued, cb });
    if (!this.task || this.task.state === 'dead')
      this.task = sched.spawn(
        this.work.name,
        { run: (now, budget) => this.runFor(now, budget) },
        { allowed: this.work.cpus, nice: this.work.nice },
      );
    else sched.wake(this.task);
  }

  private runFor(now: number, budget: number): RunOutcome {
    const used = Math.min(this.queued - this.done, budget);
    this.done += used;
    const end = now + used;
    while (this.waiters.length && this.waiters[0]!.target <= this.done) {
      const w = this.waiters.shift()!;
      this.k.events.schedule(end, `${this.work.name} done`, () => w.cb(end));
    }
    return { used, next: this.queued > this.done ? 'run' : 'sleep' };
  }

  /** CPU work queued and not done yet (ns). */
  get backlogNs(): number {
    return this.queued - this.done;
  }

  /** The thread exits (the migration is over): work not done yet is dropped. */
  exit(): void {
    if (this.task) this.k.sched?.kill(this.task);
    this.task = null;
    this.waiters.length = 0;
    this.queued = this.done;
  }
}
