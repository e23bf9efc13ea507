/**
 * Postcopy live migration (QEMU migration/postcopy-ram.c and ram.c's
 * postcopy paths), in virtual time: after the switchover the guest runs on
 * the destination, whose guest RAM is registered with userfaultfd; a vCPU
 * touching a page that has not arrived blocks in a userfault, the
 * destination's fault thread asks the source for it, and the source sends
 * it ahead of the background stream, which goes on sending the rest.
 *
 * - Start (postcopy_start / the destination's POSTCOPY_LISTEN and discard):
 *   with the guest stopped on the source, the last dirty bitmap sync; on
 *   blocks backed by huge pages a host page with any dirty 4K page becomes
 *   dirty whole (postcopy_chunk_hostpages); the destination discards every
 *   dirty host page (ram_discard_range) and registers each RAM block with
 *   UFFDIO_REGISTER_MODE_MISSING. The device state package goes over the
 *   main channel and the guest resumes on the destination when it arrives.
 * - Units: a page is requested and placed in units of the block's page size
 *   (4K, 2M or 1G: postcopy_request_page rounds down to qemu_ram_pagesize).
 *   With uffd-hugetlb-subpage-copy or uffd-hugetlb-vma-split enabled on the
 *   destination kernel, hugetlb blocks are requested and placed in units of
 *   `hugetlbRequestSize` (4K or 2M) instead, and the kernel restores the
 *   huge mapping when the last unit of a page is placed. With hugetlb-hgm
 *   on and a shared hugetlbfs block, the block is marked MADV_SPLIT and
 *   registered MISSING and MINOR: a unit is placed by writing its bytes into
 *   the file through a second mapping (the first write allocates the huge
 *   page) and UFFDIO_CONTINUE, and MADV_COLLAPSE restores the huge mappings
 *   at the end. With hugetlb-devmem-remap (and no copy proposal), hugetlb
 *   blocks are placed in 4K units through a /dev/mem alias of each huge page
 *   (src/kernel/hugetlb_devmem.ts), the userfaultfd reporting exact fault
 *   addresses; the page is remapped huge when its last unit is in. Under
 *   CONFIG_STRICT_DEVMEM the migration fails when postcopy is advised
 *   (postcopyDevmemRefusal).
 * - The main channel (one TCP stream) carries the background pages, whole
 *   host pages in address order (ram_save_host_page), as fast as the link
 *   and `max-postcopy-bandwidth` allow. The sender keeps at most the socket
 *   send buffer (the link's `sndbuf`) ahead of the wire; when the destination's load
 *   thread places pages slower than they arrive, the receive buffer
 *   (`rcvbuf`) fills as well before TCP's flow control stops the sender.
 *   Without postcopy-preempt, a requested page goes on this channel too:
 *   after the host page being written (a huge page is not interrupted) and
 *   behind everything already buffered, which is why a request waits about
 *   (sndbuf [+ rcvbuf]) / bandwidth.
 * - postcopy-preempt: requested pages go on a channel of their own, placed
 *   by a thread of their own on the destination; while the main channel is
 *   busy the two share the link (each gets half of it).
 * - After a request the background stream goes on from the requested unit
 *   (QEMU's get_queued_page sets the page search there: "the guest is
 *   likely to want other pages near to the page it just requested"), with
 *   or without preempt. With preempt (QEMU 7.2's, the migration thread
 *   sending both channels) the main thread then fills its QEMUFile with the
 *   pages that follow (32: MAX_IOV_SIZE over two iovecs a page) before it
 *   blocks on the main socket; a vCPU asking for one of those waits for it
 *   there (the source finds it not dirty and sends nothing). A huge page the
 *   request interrupted is finished first (postcopy_preempt_restore) and the
 *   stream goes on after it.
 * - The destination's fault thread wakes (poll) when a vCPU blocks, reads
 *   every queued fault, drops units already placed or already requested
 *   (QEMU's page_requested tree), and sends one request per unit on the
 *   return path (ram.postcopy-requests counts them on the source). The
 *   source sends the unit's dirty pages; a unit already in flight on the
 *   main channel is not sent again: its vCPU waits for it there. A unit that
 *   is neither dirty nor on the destination (a page a free page hint let
 *   precopy skip) is sent anyway (memtwin's choice: QEMU would not; do not
 *   combine free page hints with postcopy).
 * - Placement: UFFDIO_COPY of the unit (4K, or the whole huge page from the
 *   buffer it was assembled in, or a part under a copy proposal),
 *   UFFDIO_ZEROPAGE for a zero 4K page, with DONTWAKE, then the wake once
 *   the copy is done. Costs are the kernel's (measured uffdio_copy_*).
 * - Blocktime (postcopy-blocktime): per vCPU, the time it spent blocked in
 *   userfaults, and the time all vCPUs were blocked at once; every fault's
 *   latency (block to wake) is kept for the latency figures.
 * - Faults: a link stall delays everything in flight by its length; a link
 *   drop pauses postcopy (postcopy-paused): what was in flight is lost and
 *   dirty again on the source, vCPUs stay blocked; recover() reconnects
 *   (postcopy-recover: a round trip and the destination's received bitmap),
 *   the fault thread asks again for every page its vCPUs wait on, and the
 *   background stream resumes. Losing the source during postcopy loses the
 *   VM: the destination cannot get the pages it lacks.
 */
import type { CpuWork, Kernel } from '../../kernel/kernel.ts';
import type { Thread } from '../../kernel/sched.ts';
import type { EventHandle } from '../../sim/event_queue.ts';
import {
  MADV_SPLIT,
  MADV,
  PAGE_SIZE,
  PMD_SIZE,
  UFFD_API,
  UFFD_FEATURE,
  UFFD_FEATURE_PROPOSED,
  UFFDIO_MODE,
  UFFDIO_REGISTER_MODE,
} from '../../kernel/uapi.ts';
import { uffdioApi, uffdioContinue, uffdioFill, uffdioRegister, uffdioUnregister } from '../../kernel/userfaultfd.ts';
import { hugetlbAllocPage, hugetlbIndex } from '../../kernel/memory.ts';
import { DEVMEM_REMAP, devmemAliasCopy, devmemProbe } from '../../kernel/hugetlb_devmem.ts';
import { strerror } from '../memory_backend.ts';
import { VM } from '../../kernel/mm_types.ts';
import type { Vm } from '../vm.ts';
import type { Link } from './link.ts';
import type { Flow } from '../../sim/network.ts';
import { PAGE_NOT_SENT, PAGE_SENT_ZERO, STREAM_MARKER_BYTES, pageSkipped, ramRuns, type RamMigration, type SendResult } from './ram.ts';

/** Background bytes written to the main channel per event (small pages are batched). */
const BATCH_BYTES = 256 * 1024;
/** ... and at most this many 4K pages (zero pages are 9 bytes each on the wire). */
const BATCH_PAGES = 512;
/**
 * 4K pages the source's migration thread holds in its QEMUFile before it
 * blocks writing them to the socket: QEMU 7.2 migration/qemu-file.c's
 * MAX_IOV_SIZE (64 iovecs) over two per page (save_page_header's bytes in
 * the buffer, the page itself by qemu_put_buffer_async).
 */
const QEMU_FILE_PAGES = 64 / 2;

export interface PostcopyOptions {
  preempt: boolean;
  /** max-postcopy-bandwidth, bytes/s (0: the link's rate). */
  maxBandwidth: number;
  /** Unit hugetlb blocks are requested in under a copy proposal (4K or 2M). */
  hugetlbRequestSize?: number;
}

/**
 * Units in flight, in the order they were taken, as parallel typed arrays (no object per unit or page): unit i is
 * unit `u[i]` of block `bi[i]`, and its 4K pages' codes (what the source sent: RamMigration.readPageCode's
 * answer, PAGE_NOT_SENT for a page it did not send) are codes[at[i]] to codes[at[i + 1] - 1]. Lists are reused
 * (Postcopy.lists) once their chunk is placed.
 */
class UnitList {
  n = 0;
  bi = new Int32Array(16);
  u = new Int32Array(16);
  at = new Int32Array(17);
  codes = new Int32Array(512);

  /** Append unit `u` of block `bi` with `pages` codes, each PAGE_NOT_SENT; returns where its codes start. */
  push(bi: number, u: number, pages: number): number {
    const i = this.n;
    if (i + 1 >= this.bi.length) {
      this.bi = grow(this.bi, 2 * this.bi.length);
      this.u = grow(this.u, 2 * this.u.length);
      this.at = grow(this.at, 2 * this.at.length + 1);
    }
    const off = this.at[i]!;
    if (off + pages > this.codes.length) this.codes = grow(this.codes, Math.max(2 * this.codes.length, off + pages));
    this.codes.fill(PAGE_NOT_SENT, off, off + pages);
    this.bi[i] = bi;
    this.u[i] = u;
    this.at[i + 1] = off + pages;
    this.n = i + 1;
    return off;
  }

  /** push() of a one-page unit whose page's code is `code`. */
  push1(bi: number, u: number, code: number): void {
    const i = this.n;
    const off = this.at[i]!;
    if (i + 1 >= this.bi.length || off + 1 > this.codes.length) {
      const at = this.push(bi, u, 1); // first: push may grow `codes`
      this.codes[at] = code;
      return;
    }
    this.codes[off] = code;
    this.bi[i] = bi;
    this.u[i] = u;
    this.at[i + 1] = off + 1;
    this.n = i + 1;
  }

  /** push1() of units u0 .. u0 + n - 1 of block `bi`, one page each, their codes from codes[0..n). */
  pushRun(bi: number, u0: number, n: number, codes: Int32Array): void {
    const i = this.n;
    const off = this.at[i]!;
    // Room for the run at once (push grows the arrays a unit at a time).
    if (i + n >= this.bi.length) {
      const len = Math.max(2 * this.bi.length, i + n + 1);
      this.bi = grow(this.bi, len);
      this.u = grow(this.u, len);
      this.at = grow(this.at, len + 1);
    }
    if (off + n > this.codes.length) this.codes = grow(this.codes, Math.max(2 * this.codes.length, off + n));
    this.bi.fill(bi, i, i + n);
    const { u, at, codes: c } = this;
    for (let x = 0; x < n; x++) {
      c[off + x] = codes[x]!;
      u[i + x] = u0 + x;
      at[i + x + 1] = off + x + 1;
    }
    this.n = i + n;
  }

  clear(): void {
    this.n = 0;
  }
}

/** A copy of `a` with room for `len` elements. */
function grow(a: Int32Array, len: number): Int32Array<ArrayBuffer> {
  const b = new Int32Array(len);
  b.set(a);
  return b;
}

/**
 * The byte every page of a run of 4K units holds as sent (codes[c0] to codes[c0 + n - 1], a zero page's byte
 * 0), or -1 when they differ or a page was not sent (its byte is the source's: Postcopy.sentByte).
 */
function uniformByte(codes: Int32Array, c0: number, n: number): number {
  const c = codes[c0]!;
  if (c === PAGE_NOT_SENT) return -1;
  const byte = c & 0xff;
  for (let x = c0 + 1; x < c0 + n; x++) {
    const d = codes[x]!;
    if (d === PAGE_NOT_SENT || (d & 0xff) !== byte) return -1;
  }
  return byte;
}

/** Bytes written to a channel together, and when they arrive. */
interface Chunk {
  units: UnitList;
  arriveAt: number;
  event: EventHandle | null;
  urgent: boolean;
  /** Its bytes on the stream: what the receiving thread reads from the socket (tcp_recv_4k per 4K). */
  bytes: number;
}

/** Per block: the placement unit and the destination's view of each unit. */
interface BlockPc {
  /** hugetlb-hgm: the block is a MADV_SPLIT shared hugetlbfs mapping resolved by minor faults and UFFDIO_CONTINUE. */
  hgm: boolean;
  /** hugetlb-devmem-remap: the block's incomplete huge pages are reached through 4K /dev/mem aliases. */
  devmem: boolean;
  /** Bytes per unit. */
  unit: number;
  /** 4K pages per unit. */
  n: number;
  /** 1: the unit is on the destination (receivedmap). */
  received: Uint8Array;
  /** 1: a request for it is outstanding (page_requested). */
  requested: Uint8Array;
  /** 1: it is in flight on a channel. */
  inflight: Uint8Array;
  /** `received` and `inflight` four units to a word (their whole words), for takeRun. */
  received32: Uint32Array;
  inflight32: Uint32Array;
}

/**
 * Where the pages takeNext would send from 4K page `p` (4K units: unit q is page q) stop before `end`: the
 * first that is clean, on the destination or in flight. Four pages a word where they are aligned.
 */
function takeable(bmap: Uint8Array, bmap32: Uint32Array, pc: BlockPc, p: number, end: number): number {
  const { received, inflight, received32, inflight32 } = pc;
  let q = p;
  for (; q < end && q & 3; q++) if (!bmap[q] || received[q] || inflight[q]) return q;
  for (let w = q >>> 2; q + 4 <= end && bmap32[w] === 0x01010101 && !received32[w] && !inflight32[w]; w++) q += 4;
  for (; q < end; q++) if (!bmap[q] || received[q] || inflight[q]) return q;
  return q;
}

/** A page whose destination content differs from the source's at switchover. */
export interface PageDiff {
  block: string;
  offset: number;
  src: number;
  dst: number;
}

export interface PostcopyStats {
  /** Requests the source received (ram.postcopy-requests). */
  requests: number;
  /** Bytes sent after the switchover (ram.postcopy-bytes). */
  bytes: number;
  /** Of those, the bytes the preempt channel carried (requested pages, with postcopy-preempt); the rest went on the main channel. */
  preemptBytes: number;
  /** Every fault's latency (ns, block to wake), in the order they were woken. */
  latencies: number[];
  /** Beside latencies, each fault's wake time (ns) and vCPU index (-1: not a vCPU), for the view's timeline. */
  wokenAt: number[];
  wokenVcpu: number[];
  /** Per vCPU (index), ns blocked in userfaults. */
  vcpuBlocktime: number[];
  /** ns during which every vCPU was blocked at once. */
  totalBlocktime: number;
  /**
   * The content check, made as each page becomes the destination's (at the
   * switchover for pages precopy left clean, at placement for the rest),
   * so later guest writes on the destination do not count: pages whose
   * byte differed from the source's, and the first few of them.
   */
  pagesDiffering: number;
  differing: PageDiff[];
  /** The destination VMM's page-table bytes: at the switchover, and the most at any placement after it. */
  pgtablesAtStart: number;
  pgtablesPeak: number;
}

export class Postcopy {
  status: 'postcopy-active' | 'postcopy-paused' | 'postcopy-recover' | 'completed' | 'lost' = 'postcopy-active';
  readonly stats: PostcopyStats;
  /** Virtual time the guest resumed on the destination. */
  resumedAt = 0;
  /** Called once when every unit is on the destination (or the VM is lost). */
  onDone: (() => void) | undefined;
  private readonly k: Kernel;
  private readonly pc: BlockPc[] = [];
  private readonly fd: number;
  private rate = 0;
  /** The preempt channel's flow (postcopy-preempt), active while an urgent page is on its wire. */
  private readonly preemptFlow: Flow | null;
  /** When the main channel's wire is free of everything written so far; the destination's load thread is free. */
  private mainWireFreeAt = 0;
  private loadBusyUntil = 0;
  private preemptWireFreeAt = 0;
  private preemptBusyUntil = 0;
  /** Preempt: the main thread is writing a requested unit until then (no background meanwhile). */
  private urgentBusyUntil = 0;
  /** Without preempt: requested units waiting for a host page boundary. */
  private readonly urgentQueue: [number, number][] = [];
  /**
   * The host page being written on the main channel: block, next and end 4K page, and the unit being filled
   * (-1: none; its pages' codes so far in `curCodes`, from its first page on).
   */
  private cur: { bi: number; next: number; end: number; unit: number } | null = null;
  private readonly curHostPage: NonNullable<Postcopy['cur']> = { bi: 0, next: 0, end: 0, unit: -1 };
  private curCodes = new Int32Array(512);
  /** checkPlaced's destination bytes (one page-table lookup's). */
  private readonly placedBytes = new Int32Array(512);
  /** takeRun's codes (a run is at most a 2M of 4K pages). */
  private readonly runCodes = new Int32Array(512);
  /** Chunks arrived on the main and the preempt channel, waiting for their thread, in the order they arrived. */
  private readonly loadWaiting: Chunk[] = [];
  private readonly preemptWaiting: Chunk[] = [];
  /** Unit lists no chunk uses any more. */
  private readonly lists: UnitList[] = [];
  /** When each unit of the chunk being placed is done (ns into its task; NaN: not placed), by its place in the chunk. */
  private doneNs = new Float64Array(512);
  private readonly inflight = new Set<Chunk>();
  private pump: EventHandle | null = null;
  private readonly loadThread: Thread;
  private readonly preemptThread: Thread;
  private readonly blockedSince = new Map<Thread, number>();
  private readonly vcpuIndex = new Map<Thread, number>();
  private allBlockedSince: number | undefined;
  private readPending = false;
  /** Units still to place. */
  private missing = 0;

  constructor(
    readonly ram: RamMigration,
    readonly src: Vm,
    readonly dst: Vm,
    readonly link: Link,
    readonly flow: Flow,
    readonly opts: PostcopyOptions,
  ) {
    // Everything here but the source's reads (ram.ts) happens on the destination host.
    this.k = dst.k;
    const k = this.k;
    // The channels send at their flows' shares of the path, as they change (chunks already written keep their
    // times): the main channel's, plus the preempt channel's while it has an urgent page on the wire (two TCP
    // connections get two shares of a link they share with others; alone on a link they split it).
    flow.start();
    this.preemptFlow = opts.preempt ? link.openFlow(flow.net.events, `${flow.name.replace(/\.main$/, '')}.preempt`) : null;
    const cap = opts.maxBandwidth || Infinity;
    const update = (): void => {
      const r = flow.rate + (this.preemptFlow?.rate ?? 0);
      if (r > 0) this.rate = Math.min(r, cap);
    };
    update();
    flow.onRate(update);
    this.preemptFlow?.onRate(update);
    this.stats = {
      requests: 0,
      bytes: 0,
      preemptBytes: 0,
      latencies: [],
      wokenAt: [],
      wokenVcpu: [],
      vcpuBlocktime: dst.vcpus.map(() => 0),
      totalBlocktime: 0,
      pagesDiffering: 0,
      differing: [],
      pgtablesAtStart: dst.process.mm.pgtablesBytes,
      pgtablesPeak: dst.process.mm.pgtablesBytes,
    };
    dst.vcpus.forEach((c, i) => this.vcpuIndex.set(c.thread, i));
    const proposal =
      k.hgm.features() & (UFFD_FEATURE_PROPOSED.UFFD_FEATURE_HUGETLB_SUBPAGE_COPY | UFFD_FEATURE_PROPOSED.UFFD_FEATURE_HUGETLB_VMA_SPLIT);
    const hgmOn = k.hgm.enabled['hugetlb-hgm'] === 1;
    // The /dev/mem remap, where no copy proposal is in use: its aliases map 4K pages only.
    const devmemOn = k.devmem.enabled === 1 && !proposal;
    const sub = opts.hugetlbRequestSize ?? PAGE_SIZE;
    if ((proposal || hgmOn) && sub !== PAGE_SIZE && sub !== PMD_SIZE)
      throw new Error(`postcopy: hugetlb request size must be 4K or 2M, not ${sub}`);
    for (const b of ram.blocks) {
      const hs = b.block.pageSize;
      // hugetlb-hgm needs a shared hugetlbfs file (the VMM writes the bytes through a second mapping of it).
      const hgm = hgmOn && hs > PAGE_SIZE && (dst.process.mm.vmaAt(b.dst.host)!.flags & VM.MAYSHARE) !== 0;
      const devmem = devmemOn && !hgm && hs > PAGE_SIZE;
      if (devmem && sub !== PAGE_SIZE)
        throw new Error(`postcopy: ${DEVMEM_REMAP} maps its aliases by 4K pages: the hugetlb request size must be 4K, not ${sub}`);
      const unit = hs > PAGE_SIZE && (proposal || hgm || devmem) ? Math.min(sub, hs) : hs;
      const units = b.pages / (unit / PAGE_SIZE);
      const received = new Uint8Array(units);
      const inflight = new Uint8Array(units);
      this.pc.push({
        hgm,
        devmem,
        unit,
        n: unit / PAGE_SIZE,
        received,
        requested: new Uint8Array(units),
        inflight,
        received32: new Uint32Array(received.buffer, 0, units >>> 2),
        inflight32: new Uint32Array(inflight.buffer, 0, units >>> 2),
      });
    }
    const mk = (what: string): Thread => {
      const t = k.createThread(dst.process, dst.process.threads[0]!.cpu);
      if (typeof t === 'number') throw new Error(`postcopy: cannot create the destination's ${what} thread`);
      return t;
    };
    this.loadThread = dst.process.threads[0]!;
    this.preemptThread = mk('preempt');
    // The destination's userfaultfd (postcopy_ram_incoming_setup).
    const fd = k.uffd.create(dst.process, 0);
    if (fd < 0) throw new Error(`postcopy: userfaultfd: ${fd}`);
    this.fd = fd;
    const hgmFeatures = this.pc.some((x) => x.hgm)
      ? UFFD_FEATURE.UFFD_FEATURE_MINOR_HUGETLBFS | UFFD_FEATURE_PROPOSED.UFFD_FEATURE_MINOR_HUGETLBFS_HGM
      : 0;
    // The remap learns which 4K page a vCPU wants from the exact fault address (hugetlb faults report the huge page's).
    const devmemFeatures = this.pc.some((x) => x.devmem) ? UFFD_FEATURE.UFFD_FEATURE_EXACT_ADDRESS : 0;
    const features =
      UFFD_FEATURE.UFFD_FEATURE_MISSING_HUGETLBFS | UFFD_FEATURE.UFFD_FEATURE_MISSING_SHMEM | proposal | hgmFeatures | devmemFeatures;
    const api = uffdioApi(k, dst.process, fd, UFFD_API, features);
    if (api.ret < 0) throw new Error(`postcopy: UFFDIO_API: ${api.ret}`);
    k.uffd.ctxs.get(fd)!.onReadable = (at, t) => this.faulted(at, t);
    k.uffd.wakeListeners.push((t) => this.woken(t));
  }

  /**
   * The switchover's RAM part, with the guest stopped on the source: chunk
   * host pages, discard the dirty ones on the destination, register guest
   * RAM. Returns the destination's ns for it and the bytes of the discard
   * commands.
   */
  listen(): { ns: number; bytes: number } {
    const k = this.k;
    const ram = this.ram;
    ram.chunkHostPages();
    const t = { ns: 0 };
    let bytes = 0;
    k.runAsTask(t, () => {
      ram.blocks.forEach((b, bi) => {
        const pc = this.pc[bi]!;
        const hn = b.block.pageSize / PAGE_SIZE;
        // Discard runs of dirty host pages (ram_discard_range), one command (two be64) each. On 4K blocks the
        // runs are found by indexOf on the dirty bitmap (native code) instead of page by page.
        if (hn === 1 && pc.n === 1 && ramRuns.enabled)
          for (let h = 0; h < b.pages;) {
            const dirty = b.bmap.indexOf(1, h);
            const e = dirty < 0 ? b.pages : dirty;
            pc.received.fill(1, h, e); // clean: on the destination already
            if (e === b.pages) break;
            const clean = b.bmap.indexOf(0, e);
            h = clean < 0 ? b.pages : clean;
            b.dst.discardRange(k, this.dst.process, e * PAGE_SIZE, (h - e) * PAGE_SIZE);
            bytes += 16;
          }
        else
          for (let h = 0; h < b.pages;) {
            if (!ram.hostPageDirty(bi, h)) {
              pc.received.fill(1, h / pc.n, (h + hn) / pc.n);
              h += hn;
              continue;
            }
            let e = h + hn;
            while (e < b.pages && ram.hostPageDirty(bi, e)) e += hn;
            b.dst.discardRange(k, this.dst.process, h * PAGE_SIZE, (e - h) * PAGE_SIZE);
            bytes += 16;
            h = e;
          }
        if (pc.hgm) this.hgmPrepare(bi);
        const mode = pc.hgm
          ? UFFDIO_REGISTER_MODE.UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE.UFFDIO_REGISTER_MODE_MINOR
          : UFFDIO_REGISTER_MODE.UFFDIO_REGISTER_MODE_MISSING;
        const r = uffdioRegister(k, this.fd, b.dst.host, b.pages * PAGE_SIZE, mode);
        if (r.ret < 0) throw new Error(`postcopy: UFFDIO_REGISTER ${b.block.idstr}: ${r.ret}`);
      });
    });
    this.pc.forEach((pc, bi) => {
      for (let u = 0; u < pc.received.length; u++)
        if (pc.received[u]) {
          const b = this.ram.blocks[bi]!;
          for (let q = u * pc.n; q < (u + 1) * pc.n; q++) this.check(b, q, this.ram.sourceByte(b, q));
        } else this.missing++;
    });
    return { ns: t.ns, bytes };
  }

  /** The guest runs on the destination from `at` on: the background stream starts. */
  run(at: number): void {
    this.resumedAt = at;
    this.mainWireFreeAt = Math.max(this.mainWireFreeAt, at);
    this.loadBusyUntil = Math.max(this.loadBusyUntil, at);
    if (this.missing === 0) this.finish();
    else this.schedulePump(at);
  }

  // --- the source's background stream -------------------------------------------------

  /** Wake the migration thread at `at` (a time computed from fractional wire times: rounded to whole ns here). */
  private schedulePump(at: number): void {
    if (this.pump || this.status !== 'postcopy-active') return;
    this.pump = this.k.events.schedule(Math.max(Math.round(at), this.k.clock.now()), 'postcopy-send', () => {
      this.pump = null;
      this.send();
    });
  }

  /**
   * The migration thread: write while the socket has room. A host page is
   * written 4K page by 4K page (a huge page takes many writes); without
   * preempt a requested unit goes next at a host page boundary.
   */
  private send(): void {
    if (this.status !== 'postcopy-active') return;
    const now = this.k.clock.now();
    const sndNs = (this.link.sndbuf * 1e9) / this.rate;
    const rcvNs = (this.link.rcvbuf * 1e9) / this.rate;
    while (this.mainWireFreeAt - now < sndNs && this.loadBusyUntil - now < sndNs + rcvNs && this.urgentBusyUntil <= now) {
      const units = this.list();
      const r: SendResult = { bytes: 0, pages: 0, srcNs: 0, dstNs: 0 };
      const urgent = !this.cur ? this.urgentQueue.shift() : undefined;
      // The chunk's reads are one bandwidth flow per node (RamMigration.batchReads).
      this.ram.batchReads(true);
      if (urgent) {
        this.takeUnit(urgent[0], urgent[1], r, units);
        this.continueAfter(urgent[0], urgent[1]);
      } else this.takeBackground(r, units, BATCH_BYTES, BATCH_PAGES);
      this.ram.batchReads(false);
      if (!units.n && !r.bytes) {
        this.lists.push(units);
        break;
      }
      this.write(units, r, false);
    }
    if (this.ram.dirtyPages === 0 && !this.cur && !this.urgentQueue.length) return; // all written; completion follows the last placement
    this.schedulePump(Math.max(now + 1, this.mainWireFreeAt - sndNs, this.loadBusyUntil - sndNs - rcvNs, this.urgentBusyUntil));
  }

  /**
   * Background pages from the scan (ram_find_and_save_block's
   * find_dirty_block), whole host pages in address order, into `units`
   * until `maxBytes` or `maxPages`; stops where a requested unit waits for
   * the next host page boundary.
   */
  private takeBackground(r: SendResult, units: UnitList, maxBytes: number, maxPages: number): void {
    while (r.bytes < maxBytes && r.pages < maxPages) {
      if (!this.cur) {
        if (this.urgentQueue.length) break;
        const p = this.ram.nextDirtyHostPage();
        if (p < 0) break;
        const bi = this.ram.hostPageBlockIndex;
        if (this.pc[bi]!.n === 1 && this.ram.blocks[bi]!.block.pageSize === PAGE_SIZE && this.takeRun(bi, p, r, units, maxBytes, maxPages))
          continue;
        // One object reused for every host page (a 4K page each on 4K blocks).
        const c = this.curHostPage;
        c.bi = bi;
        c.next = p;
        c.end = p + this.ram.blocks[c.bi]!.block.pageSize / PAGE_SIZE;
        c.unit = -1;
        this.cur = c;
      }
      const cur = this.cur;
      while (cur.next < cur.end && r.bytes < maxBytes && r.pages < maxPages) this.takeNext(cur, r, units);
      if (cur.next >= cur.end) this.cur = null;
    }
  }

  /**
   * get_queued_page: the background scan goes on from the requested unit
   * (QEMU sets its PageSearchStatus to the queued page, and
   * ram_find_and_save_block leaves last_seen_block/last_page after it), so
   * the pages after the one a vCPU asked for follow it on the main channel.
   */
  private continueAfter(bi: number, u: number): void {
    this.ram.continueFrom(bi, (u + 1) * this.pc[bi]!.n);
  }

  /**
   * The background scan's pages from 4K page `p` of 4K block `bi` (4K units), a run at once: the dirty pages
   * that follow it up to its 2M's end (RamMigration.takeRunCodes: one page-table lookup), as takeNext would
   * take them one by one, each unit into `units`. False when the run cannot be taken so (the page is on the
   * destination or in flight): take it page by page.
   */
  private takeRun(bi: number, p: number, r: SendResult, units: UnitList, maxBytes: number, maxPages: number): boolean {
    const pc = this.pc[bi]!;
    const ram = this.ram;
    const b = ram.blocks[bi]!;
    const runEnd = p + ram.runPages(bi, p);
    const codes = this.runCodes;
    // The takeable pages are found a piece at a time, as far as the stream's limits can reach at a full page each
    // (and one more), not to the 2M's end: a chunk stops most runs long before it. Each piece is taken as the whole
    // run would be (takeRunCodes checks the limits before each page after the run's first, as here before a piece).
    let q = p;
    while (q < runEnd && (q === p || (r.bytes < maxBytes && r.pages < maxPages))) {
      const pieceEnd = Math.min(runEnd, q + Math.max(1, Math.ceil((maxBytes - r.bytes) / PAGE_SIZE) + 1));
      const end = takeable(b.bmap, b.bmap32, pc, q, pieceEnd);
      if (end === q) break;
      const n = ram.takeRunCodes(bi, q, end - q, r, maxBytes, maxPages, codes);
      if (n === 0) break;
      pc.inflight.fill(1, q, q + n);
      units.pushRun(bi, q, n, codes);
      q += n;
      if (q < pieceEnd) break; // stopped by a page it cannot take, or by the limits
    }
    return q > p;
  }

  /** The next 4K page of the host page being written; a unit goes in the chunk that carries its last page. */
  private takeNext(cur: NonNullable<Postcopy['cur']>, r: SendResult, units: UnitList): void {
    const q = cur.next++;
    const pc = this.pc[cur.bi]!;
    const u = Math.floor(q / pc.n);
    const i = q % pc.n;
    if (i === 0) {
      // A unit on the destination, or already sent for a request, is not sent again.
      cur.unit = pc.received[u] || pc.inflight[u] ? -1 : u;
      if (cur.unit >= 0) {
        pc.inflight[u] = 1;
        if (this.curCodes.length < pc.n) this.curCodes = new Int32Array(pc.n);
      }
    }
    if (cur.unit < 0) return;
    const code = this.ram.takePageCode(cur.bi, q, r);
    if (pc.n === 1) {
      units.push1(cur.bi, u, code);
      return;
    }
    this.curCodes[i] = code;
    if (i === pc.n - 1) {
      const at = units.push(cur.bi, u, pc.n); // first: push may grow `codes`
      units.codes.set(this.curCodes.subarray(0, pc.n), at);
    }
  }

  /** A whole unit at once (a request): its dirty pages, or all of them if it was never sent (hinted free). */
  private takeUnit(bi: number, u: number, r: SendResult, units: UnitList): void {
    const pc = this.pc[bi]!;
    const b = this.ram.blocks[bi]!;
    const p0 = u * pc.n;
    const dirty = this.ram.hostPageDirty(bi, p0) || pc.n < b.block.pageSize / PAGE_SIZE;
    const off = units.push(bi, u, pc.n);
    for (let q = p0; q < p0 + pc.n; q++)
      units.codes[off + q - p0] = dirty ? this.ram.takePageCode(bi, q, r) : this.ram.readPageCode(b, q, r);
    pc.inflight[u] = 1;
  }

  /** An empty unit list (a spare one when there is). */
  private list(): UnitList {
    const l = this.lists.pop() ?? new UnitList();
    l.clear();
    return l;
  }

  /**
   * Write a chunk to the main or the preempt channel; it arrives and is
   * placed in order. The preempt channel shares the link with what the
   * main socket still holds, then has it alone: the main thread writes the
   * urgent page and no background until it is on the wire.
   */
  private write(units: UnitList, r: SendResult, urgent: boolean): void {
    const now = this.k.clock.now();
    this.ram.bytes += r.bytes;
    this.link.carry(r.bytes);
    this.stats.bytes += r.bytes;
    if (urgent) this.stats.preemptBytes += r.bytes;
    if (urgent) this.preemptFlow?.start();
    const xfer = (r.bytes * 1e9) / this.rate;
    let wireEnd: number;
    if (urgent) {
      const start = Math.max(now, this.preemptWireFreeAt);
      const mainLeft = Math.max(0, this.mainWireFreeAt - start);
      let dur: number;
      if (xfer <= mainLeft) {
        dur = 2 * xfer;
        this.mainWireFreeAt += xfer;
      } else {
        dur = mainLeft + xfer;
        this.mainWireFreeAt = start + 2 * mainLeft;
      }
      wireEnd = start + Math.max(r.srcNs, dur);
      this.preemptWireFreeAt = wireEnd;
      // The main thread writes no background until the urgent page is out (QEMU 7.1's preempt: one thread sends both).
      this.urgentBusyUntil = wireEnd;
      // The preempt channel is idle once its last urgent page is on the wire.
      this.k.events.schedule(Math.ceil(wireEnd), 'postcopy-preempt-idle', () => {
        if (this.preemptWireFreeAt <= this.k.clock.now()) this.preemptFlow?.stop();
      });
    } else {
      wireEnd = Math.max(now, this.mainWireFreeAt) + Math.max(r.srcNs, xfer);
      this.mainWireFreeAt = wireEnd;
    }
    const chunk: Chunk = { units, arriveAt: Math.ceil(wireEnd + this.link.latency), event: null, urgent, bytes: r.bytes };
    this.inflight.add(chunk);
    chunk.event = this.k.events.schedule(chunk.arriveAt, urgent ? 'postcopy-preempt-recv' : 'postcopy-recv', () => this.arrive(chunk));
  }

  // --- the destination ---------------------------------------------------------------

  /**
   * A chunk arrived: its thread (load, or preempt) places it once done with the chunks that arrived before it
   * on its channel (a TCP stream is read in order). Waiting chunks queue; only the first has an event.
   */
  private arrive(chunk: Chunk): void {
    const waiting = chunk.urgent ? this.preemptWaiting : this.loadWaiting;
    const busy = chunk.urgent ? this.preemptBusyUntil : this.loadBusyUntil;
    chunk.event = null;
    if (waiting.length || busy > this.k.clock.now()) {
      waiting.push(chunk);
      if (waiting.length === 1) this.placeLater(waiting, busy);
      return;
    }
    this.place(chunk);
  }

  /** The first chunk waiting on a channel is placed when its thread is free (at `busy`). */
  private placeLater(waiting: Chunk[], busy: number): void {
    waiting[0]!.event = this.k.events.schedule(Math.ceil(busy), 'postcopy-place', () => {
      const chunk = waiting[0]!;
      const free = chunk.urgent ? this.preemptBusyUntil : this.loadBusyUntil;
      if (free > this.k.clock.now()) {
        this.placeLater(waiting, free);
        return;
      }
      waiting.shift();
      chunk.event = null;
      this.place(chunk);
      if (waiting.length) this.placeLater(waiting, chunk.urgent ? this.preemptBusyUntil : this.loadBusyUntil);
    });
  }

  /** The CPU work of the listen and preempt threads (Vm.qemuThread, made once: a chunk spends on one of them). */
  private listenWork: CpuWork | null = null;
  private preemptWork: CpuWork | null = null;

  /** The channel's thread places a chunk now. */
  private place(chunk: Chunk): void {
    const now = this.k.clock.now();
    this.inflight.delete(chunk);
    const thread = chunk.urgent ? this.preemptThread : this.loadThread;
    const t = { ns: 0 };
    const units = chunk.units;
    // When each unit's copy is done (ns after now), by its place in the chunk (NaN: not placed).
    if (this.doneNs.length < units.n) this.doneNs = new Float64Array(Math.max(units.n, 2 * this.doneNs.length));
    const done = this.doneNs;
    done.fill(NaN, 0, units.n);
    // The copy runs on the destination's CPUs: QEMU's postcopy/listen thread, or the preempt channel's thread.
    this.k.runAsTask(
      t,
      () => {
        // The thread reads the chunk from its socket (into the QEMUFile's buffer; qemu_get_buffer_in_place), then places it.
        this.k.charge(this.ram.socketRecvNs(chunk.bytes));
        this.placeChunk(thread, units, t, done);
      },
      chunk.urgent
        ? (this.preemptWork ??= this.dst.qemuThread('postcopy/preempt'))
        : (this.listenWork ??= this.dst.qemuThread('postcopy/listen')),
    );
    const end = now + Math.ceil(t.ns);
    if (chunk.urgent) this.preemptBusyUntil = end;
    else this.loadBusyUntil = end;
    // A vCPU waiting on a unit wakes when that unit's copy is done (the copy wakes its range).
    const ctx = this.k.uffd.ctxs.get(this.fd)!;
    if (ctx.waiters.length) {
      const woken = new Set<number>();
      const doneAt = new Map<number, number>();
      for (let i = 0; i < units.n; i++) if (!Number.isNaN(done[i]!)) doneAt.set(this.key(units.bi[i]!, units.u[i]!), done[i]!);
      for (const w of ctx.waiters) {
        const where = this.unitAt(w.address);
        if (!where) continue;
        const key = this.key(where[0], where[1]);
        const ns = doneAt.get(key);
        if (ns === undefined || woken.has(key)) continue;
        woken.add(key);
        const pc = this.pc[where[0]]!;
        const start = this.ram.blocks[where[0]]!.dst.host + where[1] * pc.unit;
        this.k.events.schedule(now + ns, 'postcopy-wake', () => this.k.uffd.wake(ctx, start, pc.unit));
      }
    }
    // Placed: its list is free for another chunk.
    this.lists.push(units);
    this.k.events.schedule(end, 'postcopy-placed', this.placed);
  }

  /** A chunk's placement is over: the migration completes once nothing is missing or in flight (made once, not per chunk). */
  private readonly placed = (): void => {
    if (this.missing === 0 && this.inflight.size === 0) this.finish();
  };

  /** A unit's key in doneAt. */
  private key(bi: number, u: number): number {
    return bi * 2 ** 32 + u;
  }

  /**
   * Place a chunk's units in order with UFFDIO_COPY/ZEROPAGE (DONTWAKE),
   * one ioctl per run of consecutive missing 4K units of one kind (the
   * kernel charges each page as QEMU's one copy per page costs), one per
   * huge unit. Sets each placed unit's completion (ns into `t`) in `done`,
   * at the unit's place in `units`.
   */
  private placeChunk(thread: Thread, units: UnitList, t: { ns: number }, done: Float64Array): void {
    const k = this.k;
    const { bi: ubi, u: uu, at, codes } = units;
    for (let i = 0; i < units.n;) {
      const bi = ubi[i]!;
      const u0 = uu[i]!;
      const pc = this.pc[bi]!;
      pc.inflight[u0] = 0;
      if (pc.received[u0]) {
        i++;
        continue;
      }
      let j = i + 1;
      const zero = this.zeroUnit(units, i);
      // Runs only on 4K-backed blocks: a hugetlb page filled in parts may be a VMA of its own (vma-split), and one
      // UFFDIO_COPY must stay inside one VMA.
      if (pc.unit === PAGE_SIZE && this.ram.blocks[bi]!.block.pageSize === PAGE_SIZE) {
        // zeroUnit of each unit that follows, read from the codes directly (a 4K unit's one code).
        const { received, inflight } = pc;
        for (let u = u0 + 1; j < units.n && ubi[j] === bi && uu[j] === u && !received[u]; u++, j++) {
          const c = codes[at[j]!]!;
          if ((c >= 0 && (c & PAGE_SENT_ZERO) !== 0) !== zero) break;
          inflight[u] = 0;
        }
      }
      // Units i..j-1 are consecutive, so their pages' codes are too: page p0 + x's is codes[c0 + x].
      const nu = j - i;
      const p0 = u0 * pc.n;
      const c0 = at[i]!;
      const b = this.ram.blocks[bi]!;
      const start = b.dst.host + u0 * pc.unit;
      const before = t.ns;
      let r: number;
      let byte: number;
      if (pc.hgm) r = this.hgmPlace(thread, b, codes, c0, start, pc.unit);
      else if (pc.devmem)
        r = devmemAliasCopy(k, this.dst.process.mm, thread, start, PAGE_SIZE, (va) =>
          this.sentByte(b, p0 + (va - start) / PAGE_SIZE, codes, c0, p0),
        );
      else if (zero && !b.dst.hasFd)
        r = uffdioFill(k, thread, this.fd, start, nu * PAGE_SIZE, UFFDIO_MODE.UFFDIO_ZEROPAGE_MODE_DONTWAKE, null).ret;
      else if (pc.unit === PAGE_SIZE && b.block.pageSize === PAGE_SIZE && (byte = uniformByte(codes, c0, nu)) >= 0)
        // Every page of the run was sent holding one byte: the copy's source is that byte for each (what
        // fillSource would answer page by page).
        r = uffdioFill(k, thread, this.fd, start, nu * PAGE_SIZE, UFFDIO_MODE.UFFDIO_COPY_MODE_DONTWAKE, byte).ret;
      else {
        // The copy's source (fillSource, one function for every run: the run's place in the chunk set here).
        const f = this.fill;
        const saved = f.b;
        const savedCodes = f.codes;
        const { p0: sp0, c0: sc0, start: sstart } = f;
        f.b = b;
        f.codes = codes;
        f.p0 = p0;
        f.c0 = c0;
        f.start = start;
        r = uffdioFill(k, thread, this.fd, start, nu * pc.unit, UFFDIO_MODE.UFFDIO_COPY_MODE_DONTWAKE, this.fillSource).ret;
        f.b = saved;
        f.codes = savedCodes;
        f.p0 = sp0;
        f.c0 = sc0;
        f.start = sstart;
      }
      if (r < 0) throw new Error(`postcopy: placing ${b.block.idstr}+0x${(u0 * pc.unit).toString(16)}: ${r}`);
      const spent = t.ns - before;
      pc.received.fill(1, u0, u0 + nu);
      pc.requested.fill(0, u0, u0 + nu);
      this.missing -= nu;
      for (let x = 0; x < nu; x++) done[i + x] = Math.ceil(before + ((x + 1) * spent) / nu);
      this.checkPlaced(b, p0, nu * pc.n, codes, c0);
      const pt = this.dst.process.mm.pgtablesBytes;
      if (pt > this.stats.pgtablesPeak) this.stats.pgtablesPeak = pt;
      i = j;
    }
  }

  /** A 4K unit sent as a zero page: the unit at `i` in `units`. */
  private zeroUnit(units: UnitList, i: number): boolean {
    const c = units.codes[units.at[i]!]!;
    return this.pc[units.bi[i]!]!.unit === PAGE_SIZE && c >= 0 && (c & PAGE_SENT_ZERO) !== 0;
  }

  /** The run placeChunk is copying: its block, codes (page p0 + x's at c0 + x) and destination address. */
  private readonly fill: { b: RamMigration['blocks'][number] | null; codes: Int32Array | null; p0: number; c0: number; start: number } = {
    b: null,
    codes: null,
    p0: 0,
    c0: 0,
    start: 0,
  };

  /** UFFDIO_COPY's source for the run in `fill`: sentByte of the page at va (made once, not per run). */
  private readonly fillSource = (va: number): number => {
    const f = this.fill;
    return this.sentByte(f.b!, f.p0 + (va - f.start) / PAGE_SIZE, f.codes!, f.c0, f.p0);
  };

  /** The content check of pages [p0, p0 + n) of block b just placed from `codes` (page p0 + x's at c0 + x). */
  private checkPlaced(b: RamMigration['blocks'][number], p0: number, n: number, codes: Int32Array, c0: number): void {
    const dst = this.placedBytes;
    for (let x = 0; x < n;) {
      const m = this.ram.destBytes(b, p0 + x, n - x, dst);
      for (let y = 0; y < m; y++) {
        const p = p0 + x + y;
        if (pageSkipped(b, p)) continue;
        const c = codes[c0 + x + y]!;
        const expected = c !== PAGE_NOT_SENT ? c & 0xff : this.ram.sourceByte(b, p); // a zero page's byte is 0
        if (dst[y] !== expected) this.differs(b, p, expected, dst[y]!);
      }
      x += m;
    }
  }

  /**
   * hugetlb-hgm at the switchover: the block is marked MADV_SPLIT, so a
   * vCPU touching a page the file lacks (discarded) takes a missing fault
   * at 4K, and one touching a part not mapped yet a minor fault at 4K.
   */
  private hgmPrepare(bi: number): void {
    const b = this.ram.blocks[bi]!;
    const r = this.k.madvise(this.dst.process, b.dst.host, b.pages * PAGE_SIZE, MADV_SPLIT);
    if (r < 0) throw new Error(`postcopy: MADV_SPLIT ${b.block.idstr}: ${r}`);
  }

  /**
   * hugetlb-hgm placement of one unit: the VMM writes its bytes into the
   * file's page through a second (unregistered) mapping, a 4K copy each
   * (its first write allocates the huge page, zeroed), then
   * UFFDIO_CONTINUE maps the unit (DONTWAKE).
   */
  private hgmPlace(thread: Thread, b: RamMigration['blocks'][number], codes: Int32Array, c0: number, start: number, len: number): number {
    const k = this.k;
    const vma = this.dst.process.mm.vmaAt(start)!;
    const hs = vma.hugePageSize();
    const haddr = start - (start % hs);
    const mm = this.dst.process.mm;
    const head = vma.file!.pages.get(hugetlbIndex(vma, haddr)) ?? hugetlbAllocPage(k, mm, vma, haddr, thread, null);
    if (head < 0) throw new Error(`postcopy: no huge page for ${b.block.idstr}+0x${(haddr - b.dst.host).toString(16)} (hugetlb pool)`);
    const p0 = (start - b.dst.host) / PAGE_SIZE;
    for (let q = 0; q < len / PAGE_SIZE; q++) {
      k.writeSerial = (k.writeSerial + 1) & 0xffffff;
      k.mem.storeByte(head + (start - haddr) / PAGE_SIZE + q, k.writeSerial, this.sentByte(b, p0 + q, codes, c0, p0), true);
    }
    k.charge((len / PAGE_SIZE) * k.costs.ns('memcpy_4k'));
    return uffdioContinue(k, thread, this.fd, start, len, UFFDIO_MODE.UFFDIO_CONTINUE_MODE_DONTWAKE).ret;
  }

  /** The byte the source sent for 4K page `p` (its code at codes[c0 + p - p0]), or its content if it was not sent. */
  private sentByte(b: RamMigration['blocks'][number], p: number, codes: Int32Array, c0: number, p0: number): number {
    const pg = codes[c0 + p - p0]!;
    if (pg !== PAGE_NOT_SENT) return pg & 0xff; // a zero page's byte is 0
    return this.ram.sourceByte(b, p);
  }

  /** The content check of 4K page `p`: the destination must hold `expected`, the source's byte (hinted free pages aside). */
  private check(b: RamMigration['blocks'][number], p: number, expected: number): void {
    if (pageSkipped(b, p)) return;
    const dv = this.ram.destByte(b, p);
    if (dv !== expected) this.differs(b, p, expected, dv);
  }

  /** Page p differs: counted, and kept among the first few. */
  private differs(b: RamMigration['blocks'][number], p: number, expected: number, dv: number): void {
    this.stats.pagesDiffering++;
    if (this.stats.differing.length < 10)
      this.stats.differing.push({ block: b.block.idstr, offset: p * PAGE_SIZE, src: expected, dst: dv });
  }

  /**
   * A vCPU blocked at `at` (its own time, fractional inside its step: the
   * block is counted from the whole ns nearest): the fault thread's poll wakes.
   */
  private faulted(fault: number, t: Thread): void {
    const at = Math.round(fault);
    this.blockedSince.set(t, at);
    if (this.vcpuIndex.has(t) && [...this.vcpuIndex.keys()].every((v) => this.blockedSince.has(v))) this.allBlockedSince = at;
    if (this.readPending) return;
    this.readPending = true;
    // poll() returns, then read(): two kernel entries.
    const wakeNs = 2 * this.k.costs.ns('syscall_null');
    this.k.events.schedule(Math.round(Math.max(fault, this.k.clock.now()) + wakeNs), 'postcopy-fault-thread', () => {
      // QEMU's fault thread (postcopy_ram_fault_thread) spends that time on a CPU of the destination.
      this.k.spend(this.dst.qemuThread('postcopy/fault'), wakeNs);
      this.readPending = false;
      this.readFaults();
    });
  }

  /** The woken vCPU's blocktime and its fault's latency. */
  woken(t: Thread): void {
    const since = this.blockedSince.get(t);
    if (since === undefined) return;
    const now = this.k.clock.now();
    this.blockedSince.delete(t);
    this.stats.latencies.push(now - since);
    const i = this.vcpuIndex.get(t);
    this.stats.wokenAt.push(now);
    this.stats.wokenVcpu.push(i ?? -1);
    if (i !== undefined) this.stats.vcpuBlocktime[i]! += now - since;
    if (this.allBlockedSince !== undefined) {
      this.stats.totalBlocktime += now - this.allBlockedSince;
      this.allBlockedSince = undefined;
    }
  }

  /** The fault thread reads the queued faults and requests the units not placed or requested yet. */
  private readFaults(): void {
    const k = this.k;
    const ctx = k.uffd.ctxs.get(this.fd)!;
    const msgs = k.uffd.read(ctx, Number.MAX_SAFE_INTEGER);
    for (const m of msgs) {
      if (m.event !== 'UFFD_EVENT_PAGEFAULT') continue;
      const where = this.unitAt(m.address);
      if (!where) continue;
      const [bi, u] = where;
      const pc = this.pc[bi]!;
      if (pc.received[u]) {
        // Placed meanwhile: just wake (the copy's wake may have raced the fault).
        k.uffd.wake(ctx, this.ram.blocks[bi]!.dst.host + u * pc.unit, pc.unit);
        continue;
      }
      // While paused nothing is sent: recovery asks for every page a vCPU waits on.
      if (pc.requested[u] || this.status !== 'postcopy-active') continue;
      pc.requested[u] = 1;
      this.request(bi, u);
    }
  }

  private unitAt(hva: number): [number, number] | undefined {
    for (let bi = 0; bi < this.ram.blocks.length; bi++) {
      const b = this.ram.blocks[bi]!;
      if (hva >= b.dst.host && hva < b.dst.host + b.pages * PAGE_SIZE) return [bi, Math.floor((hva - b.dst.host) / this.pc[bi]!.unit)];
    }
    return undefined;
  }

  /** migrate_send_rp_req_pages: the request crosses the link; the source sends the unit. */
  private request(bi: number, u: number): void {
    const bytes = 8 + 8 + 1 + this.ram.blocks[bi]!.block.idstr.length; // MIG_RP_MSG_REQ_PAGES_ID: start, len, idstr
    this.link.carry(bytes);
    this.k.events.after(this.link.latency, 'postcopy-request', () => {
      if (this.status !== 'postcopy-active') return;
      this.stats.requests++;
      this.serve(bi, u);
    });
  }

  /**
   * The source's answer to a request: with preempt, the main thread writes
   * the unit on the preempt channel now, leaving the host page it was
   * writing; without, the unit is queued (unqueue_page) and goes on the
   * main channel at the next host page boundary.
   */
  private serve(bi: number, u: number): void {
    const pc = this.pc[bi]!;
    if (pc.received[u] || pc.inflight[u]) return; // on its way: the vCPU waits for it
    if (this.opts.preempt) {
      const units = this.list();
      const r: SendResult = { bytes: 0, pages: 0, srcNs: 0, dstNs: 0 };
      this.ram.batchReads(true);
      this.takeUnit(bi, u, r, units);
      this.ram.batchReads(false);
      this.write(units, r, true);
      // A huge page interrupted for the request is finished first (postcopy_preempt_restore), and the scan goes on
      // after it; between host pages the scan goes on after the requested unit, and the main thread at once fills
      // its QEMUFile with the pages that follow (taken: a request for one of them is dropped as not dirty, its
      // vCPU waits for it on the main channel), then blocks writing them behind what the socket holds.
      if (!this.cur) {
        this.continueAfter(bi, u);
        const bg = this.list();
        const rb: SendResult = { bytes: 0, pages: 0, srcNs: 0, dstNs: 0 };
        this.ram.batchReads(true);
        this.takeBackground(rb, bg, QEMU_FILE_PAGES * PAGE_SIZE, BATCH_PAGES);
        this.ram.batchReads(false);
        if (bg.n || rb.bytes) this.write(bg, rb, false);
        else this.lists.push(bg);
      }
      return;
    }
    pc.inflight[u] = 1;
    this.urgentQueue.push([bi, u]);
    this.schedulePump(this.k.clock.now());
  }

  // --- completion and faults ----------------------------------------------------------

  private finish(): void {
    if (this.status === 'completed' || this.status === 'lost') return;
    this.status = 'completed';
    this.preemptFlow?.stop();
    this.stats.bytes += STREAM_MARKER_BYTES;
    this.ram.bytes += STREAM_MARKER_BYTES;
    // postcopy_ram_incoming_cleanup: unregister guest RAM (a copy proposal's parts get their huge mapping back;
    // under hugetlb-hgm the VMM asks for it with MADV_COLLAPSE).
    this.ram.blocks.forEach((b, bi) => {
      if (this.pc[bi]!.hgm)
        this.k.runAsTask({ ns: 0 }, () => this.k.madvise(this.dst.process, b.dst.host, b.pages * PAGE_SIZE, MADV.MADV_COLLAPSE));
      uffdioUnregister(this.k, this.fd, b.dst.host, b.pages * PAGE_SIZE);
    });
    this.onDone?.();
  }

  /** The link stalled from now for `ns`: everything in flight arrives that much later. */
  stall(ns: number): void {
    this.mainWireFreeAt = Math.max(this.mainWireFreeAt, this.k.clock.now()) + ns;
    this.preemptWireFreeAt = Math.max(this.preemptWireFreeAt, this.k.clock.now()) + ns;
    for (const c of this.inflight) {
      if (c.arriveAt <= this.k.clock.now()) continue;
      c.event?.cancel();
      c.arriveAt += ns;
      c.event = this.k.events.schedule(c.arriveAt, 'postcopy-recv', () => this.arrive(c));
    }
  }

  /** The link dropped: postcopy pauses; what was in flight is lost and dirty again on the source. */
  drop(): void {
    if (this.status !== 'postcopy-active') return;
    this.status = 'postcopy-paused';
    this.pump?.cancel();
    this.pump = null;
    const now = this.k.clock.now();
    // Units whose pages go back to the source's dirty bitmap: [block, unit] pairs.
    const lost: number[] = [];
    for (const c of [...this.inflight]) {
      if (c.arriveAt <= now) continue; // arrived, waiting for its thread: it is on the destination
      c.event?.cancel();
      this.inflight.delete(c);
      for (let i = 0; i < c.units.n; i++) lost.push(c.units.bi[i]!, c.units.u[i]!);
    }
    // The unit the main channel was in the middle of, and requests not sent yet.
    if (this.cur && this.cur.unit >= 0) lost.push(this.cur.bi, this.cur.unit);
    this.cur = null;
    for (const [bi, u] of this.urgentQueue.splice(0)) lost.push(bi, u);
    for (let i = 0; i < lost.length; i += 2) {
      const bi = lost[i]!;
      const u = lost[i + 1]!;
      const pc = this.pc[bi]!;
      pc.inflight[u] = 0;
      for (let q = u * pc.n; q < (u + 1) * pc.n; q++) this.ram.redirtyPage(bi, q);
    }
    for (const pc of this.pc) pc.requested.fill(0);
    this.mainWireFreeAt = this.preemptWireFreeAt = this.urgentBusyUntil = now;
    this.preemptFlow?.stop();
  }

  /**
   * migrate-recover on the destination and migrate resume=true on the
   * source: a round trip, the received bitmap back to the source, then the
   * fault thread asks again for every page a vCPU waits on. Returns the ns
   * of the recovery handshake.
   */
  recover(): number {
    if (this.status !== 'postcopy-paused') return 0;
    this.status = 'postcopy-recover';
    let bitmapBytes = 0;
    for (const b of this.ram.blocks) bitmapBytes += Math.ceil(b.pages / 8) + 8;
    const ns = 2 * this.link.latency + this.link.rttNs + Math.ceil((bitmapBytes * 1e9) / this.rate);
    this.link.carry(bitmapBytes);
    this.k.events.after(ns, 'postcopy-recovered', () => {
      if (this.status !== 'postcopy-recover') return;
      this.status = 'postcopy-active';
      const ctx = this.k.uffd.ctxs.get(this.fd)!;
      for (const w of ctx.waiters) {
        const where = this.unitAt(w.address);
        if (!where) continue;
        const [bi, u] = where;
        const pc = this.pc[bi]!;
        if (pc.received[u] || pc.requested[u]) continue;
        pc.requested[u] = 1;
        this.request(bi, u);
      }
      this.schedulePump(this.k.clock.now());
    });
    return ns;
  }

  /** The source is gone: the destination cannot get its missing pages; the VM is lost. */
  loseSource(): void {
    if (this.status === 'completed' || this.status === 'lost') return;
    this.pump?.cancel();
    this.pump = null;
    for (const c of this.inflight) if (c.arriveAt > this.k.clock.now()) c.event?.cancel();
    this.preemptFlow?.stop();
    this.status = 'lost';
    this.onDone?.();
  }

  /** Units not on the destination yet. */
  get missingUnits(): number {
    return this.missing;
  }
}

/**
 * hugetlb-devmem-remap's precondition, checked when postcopy is advised
 * (as QEMU's destination checks postcopy_ram_supported_by_host): the
 * destination must be able to map guest RAM on huge pages through
 * /dev/mem, which CONFIG_STRICT_DEVMEM forbids. memtwin's error (the
 * proposal is not QEMU's), or undefined when it does not apply or passes.
 */
export function postcopyDevmemRefusal(dst: Vm): string | undefined {
  const k = dst.k;
  if (!k.devmem.enabled || !dst.ramList.blocks.some((b) => b.pageSize > PAGE_SIZE)) return undefined;
  const r = devmemProbe(k);
  if (r >= 0) return undefined;
  k.devmem.stats.refused++;
  return `${DEVMEM_REMAP}: mmap of /dev/mem over guest RAM: ${strerror(r)} (CONFIG_STRICT_DEVMEM=y)`;
}
