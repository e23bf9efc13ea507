/**
 * A split virtqueue as virtio 1.x defines it (§2.7): a descriptor table,
 * an available ring the driver writes and a used ring the device writes.
 * The driver half follows drivers/virtio/virtio_ring.c (virtqueue_add_split,
 * virtqueue_kick_prepare, virtqueue_get_buf), the device half QEMU's
 * hw/virtio/virtio.c (virtqueue_pop, virtqueue_push, virtio_notify).
 *
 * The buffers a descriptor points to are bytes in guest memory, addressed
 * by GPA: the driver writes them into pages it owns (GuestBuffers) and the
 * device copies them out by the GPA and length the descriptor carries, so
 * byte counts are exact. Time is charged through VirtioTiming.
 */
import type { VirtioTiming } from './timing.ts';

/** struct vring_desc flags. */
export const VRING_DESC_F_NEXT = 1;
export const VRING_DESC_F_WRITE = 2;
/** struct vring_avail flags: the driver does not want used-buffer interrupts. */
export const VRING_AVAIL_F_NO_INTERRUPT = 1;
/** struct vring_used flags: the device does not want to be notified (it polls). */
export const VRING_USED_F_NO_NOTIFY = 1;

/** Bytes of one struct vring_desc (addr u64, len u32, flags u16, next u16). */
export const VRING_DESC_BYTES = 16;
/** Bytes of one available ring entry (a u16 head index). */
export const VRING_AVAIL_ELEM_BYTES = 2;
/** Bytes of one struct vring_used_elem (id u32, len u32). */
export const VRING_USED_ELEM_BYTES = 8;

/** One scatter-gather entry: a guest-physical buffer. */
export interface Sg {
  readonly addr: number;
  readonly len: number;
}

/** What the device pops: QEMU's VirtQueueElement. */
export interface VirtQueueElement {
  /** Head descriptor index (the used element's id). */
  readonly index: number;
  /** Device-readable buffers (out_sg). */
  readonly outSg: readonly Sg[];
  /** Device-writable buffers (in_sg). */
  readonly inSg: readonly Sg[];
}

/**
 * The bytes of the buffers drivers placed in guest memory, by GPA. Each
 * buffer lives in guest pages its driver allocated; the device reads it
 * back by GPA. Only buffers that carry data are stored: pages handed over
 * by reference (free page reports) are described by descriptors alone.
 */
export class GuestBuffers {
  private starts: number[] = [];
  private readonly bufs = new Map<number, Uint8Array>();

  /** A zeroed buffer of `len` bytes at `gpa` (the driver's kzalloc). */
  map(gpa: number, len: number): Uint8Array {
    if (this.find(gpa, 1) || this.find(gpa + len - 1, 1)) throw new Error(`guest buffer at 0x${gpa.toString(16)} overlaps another`);
    const b = new Uint8Array(len);
    this.bufs.set(gpa, b);
    this.starts.push(gpa);
    this.starts.sort((x, y) => x - y);
    return b;
  }

  /** The driver frees the buffer's pages. */
  unmap(gpa: number): void {
    if (!this.bufs.delete(gpa)) throw new Error(`no guest buffer at 0x${gpa.toString(16)}`);
    this.starts = this.starts.filter((s) => s !== gpa);
  }

  /** The bytes [gpa, gpa + len), which must lie inside one buffer (a view, not a copy). */
  view(gpa: number, len: number): Uint8Array {
    const hit = this.find(gpa, len);
    if (!hit) throw new Error(`no guest buffer holds [0x${gpa.toString(16)}, +${len})`);
    return hit.buf.subarray(gpa - hit.start, gpa - hit.start + len);
  }

  private find(gpa: number, len: number): { start: number; buf: Uint8Array } | undefined {
    let lo = 0;
    let hi = this.starts.length - 1;
    let best = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (this.starts[mid]! <= gpa) {
        best = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    if (best < 0) return undefined;
    const start = this.starts[best]!;
    const buf = this.bufs.get(start)!;
    return gpa + len <= start + buf.length ? { start, buf } : undefined;
  }
}

/** Counters of one queue. */
export interface VirtqueueStats {
  /** Buffer chains the driver made available (messages). */
  messages: number;
  /** Descriptors used by those chains. */
  descriptors: number;
  /** Bytes in device-readable buffers made available. */
  outBytes: number;
  /** Bytes in device-writable buffers made available. */
  inBytes: number;
  /** Bytes the device copied out of readable buffers. */
  bytesRead: number;
  /** Ring bytes written: descriptors, available and used ring entries. */
  ringBytes: number;
  /** Notifications that exited to the device. */
  kicks: number;
  /** Notifications the device had suppressed (VRING_USED_F_NO_NOTIFY): no exit. */
  kicksSuppressed: number;
  /** Used entries the device returned. */
  used: number;
  /** Used-buffer interrupts delivered to the driver. */
  interrupts: number;
}

/**
 * One split virtqueue of `num` entries (a power of 2, at most 32768).
 * `onNotify` is the device's queue handler (QEMU's handle_output), called
 * when a kick exits; `driverCallback` is the driver's vq callback, or null
 * when the driver created the queue without one (then the avail ring asks
 * for no interrupts, as vring_create_virtqueue does).
 */
export class SplitVirtqueue {
  // The rings, as the guest-memory structures virtio 1.x lays out.
  private readonly descAddr: Float64Array;
  private readonly descLen: Uint32Array;
  private readonly descFlags: Uint16Array;
  private readonly descNext: Uint16Array;
  private availFlags = 0;
  private availIdx = 0;
  private readonly availRing: Uint16Array;
  private usedFlags = 0;
  private usedIdx = 0;
  private readonly usedId: Uint32Array;
  private readonly usedLen: Uint32Array;

  // Driver-private state (struct vring_virtqueue).
  private freeHead = 0;
  private numFreeDesc: number;
  private lastUsedIdx = 0;
  private readonly tokens: unknown[];

  // Device-private state (QEMU's VirtQueue).
  private lastAvailIdx = 0;

  readonly stats: VirtqueueStats = {
    messages: 0,
    descriptors: 0,
    outBytes: 0,
    inBytes: 0,
    bytesRead: 0,
    ringBytes: 0,
    kicks: 0,
    kicksSuppressed: 0,
    used: 0,
    interrupts: 0,
  };

  onNotify: ((vq: SplitVirtqueue) => void) | null = null;
  private driverCallback: ((vq: SplitVirtqueue) => void) | null = null;

  constructor(
    readonly name: string,
    readonly num: number,
    private readonly timing: VirtioTiming,
    private readonly buffers: GuestBuffers,
  ) {
    if (!(num > 0 && num <= 32768 && (num & (num - 1)) === 0)) throw new RangeError(`virtqueue size ${num} is not a power of 2 <= 32768`);
    this.descAddr = new Float64Array(num);
    this.descLen = new Uint32Array(num);
    this.descFlags = new Uint16Array(num);
    this.descNext = new Uint16Array(num);
    this.availRing = new Uint16Array(num);
    this.usedId = new Uint32Array(num);
    this.usedLen = new Uint32Array(num);
    this.tokens = new Array<unknown>(num).fill(undefined);
    for (let i = 0; i < num - 1; i++) this.descNext[i] = i + 1;
    this.numFreeDesc = num;
  }

  // --- driver side --------------------------------------------------------------

  /** The driver's find_vqs: its callback, or null (then no interrupts are wanted). */
  setDriverCallback(cb: ((vq: SplitVirtqueue) => void) | null): void {
    this.driverCallback = cb;
    this.availFlags = cb ? 0 : VRING_AVAIL_F_NO_INTERRUPT;
  }

  /** Free descriptors (vq->num_free). */
  get numFree(): number {
    return this.numFreeDesc;
  }

  /**
   * virtqueue_add_sgs: chain the readable buffers, then the writable ones,
   * and publish the head in the available ring. Returns false (-ENOSPC)
   * when there are not enough free descriptors. Charges the driver.
   */
  addBuf(out: readonly Sg[], inb: readonly Sg[], token: unknown): boolean {
    const total = out.length + inb.length;
    if (total === 0) throw new Error(`${this.name}: empty buffer chain`);
    if (total > this.numFreeDesc) return false;
    const head = this.freeHead;
    let i = head;
    let prev = -1;
    const all = [...out.map((s) => [s, 0] as const), ...inb.map((s) => [s, VRING_DESC_F_WRITE] as const)];
    for (const [sg, flags] of all) {
      this.descAddr[i] = sg.addr;
      this.descLen[i] = sg.len;
      this.descFlags[i] = flags | VRING_DESC_F_NEXT;
      prev = i;
      i = this.descNext[i]!;
    }
    this.descFlags[prev]! &= ~VRING_DESC_F_NEXT;
    this.freeHead = i;
    this.numFreeDesc -= total;
    this.tokens[head] = token;
    this.availRing[this.availIdx % this.num] = head;
    this.availIdx = (this.availIdx + 1) & 0xffff;

    const s = this.stats;
    s.messages++;
    s.descriptors += total;
    s.outBytes += out.reduce((a, b) => a + b.len, 0);
    s.inBytes += inb.reduce((a, b) => a + b.len, 0);
    s.ringBytes += total * VRING_DESC_BYTES + VRING_AVAIL_ELEM_BYTES;
    this.timing.chargeGuest(total * this.timing.cost('virtqueue_add_per_desc'));
    return true;
  }

  /**
   * virtqueue_kick: notify the device unless it suppressed notifications.
   * A notification is a VM exit; the device's handler runs before the
   * vCPU resumes in this sequential model. Returns whether it exited.
   */
  kick(): boolean {
    if (this.usedFlags & VRING_USED_F_NO_NOTIFY) {
      this.stats.kicksSuppressed++;
      return false;
    }
    this.stats.kicks++;
    this.timing.kickExit();
    this.onNotify?.(this);
    return true;
  }

  /** virtqueue_get_buf: the next used buffer's token and written length, or null. */
  getBuf(): { token: unknown; len: number } | null {
    if (this.lastUsedIdx === this.usedIdx) return null;
    const slot = this.lastUsedIdx % this.num;
    const head = this.usedId[slot]!;
    const len = this.usedLen[slot]!;
    this.lastUsedIdx = (this.lastUsedIdx + 1) & 0xffff;
    const token = this.tokens[head];
    this.tokens[head] = undefined;
    this.detachChain(head);
    return { token, len };
  }

  /** detach_buf_split: return a chain's descriptors to the free list. */
  private detachChain(head: number): void {
    let i = head;
    let n = 1;
    while (this.descFlags[i]! & VRING_DESC_F_NEXT) {
      i = this.descNext[i]!;
      n++;
    }
    this.descNext[i] = this.freeHead;
    this.freeHead = head;
    this.numFreeDesc += n;
  }

  // --- device side ---------------------------------------------------------------

  /** virtio_queue_set_notification: the device polls (false) or wants kicks (true). */
  setNotification(enable: boolean): void {
    this.usedFlags = enable ? 0 : VRING_USED_F_NO_NOTIFY;
  }

  /** virtqueue_pop: the next available chain, or null. Charges the VMM for pop + push. */
  pop(): VirtQueueElement | null {
    if (this.lastAvailIdx === this.availIdx) return null;
    const head = this.availRing[this.lastAvailIdx % this.num]!;
    this.lastAvailIdx = (this.lastAvailIdx + 1) & 0xffff;
    const outSg: Sg[] = [];
    const inSg: Sg[] = [];
    let i = head;
    for (let n = 0; ; n++) {
      if (n >= this.num) throw new Error(`${this.name}: descriptor loop`);
      const sg = { addr: this.descAddr[i]!, len: this.descLen[i]! };
      if (this.descFlags[i]! & VRING_DESC_F_WRITE) inSg.push(sg);
      else if (inSg.length) throw new Error(`${this.name}: readable descriptor after a writable one`);
      else outSg.push(sg);
      if (!(this.descFlags[i]! & VRING_DESC_F_NEXT)) break;
      i = this.descNext[i]!;
    }
    this.timing.chargeHost(this.timing.cost('vmm_virtqueue_elem'));
    return { index: head, outSg, inSg };
  }

  /**
   * iov_to_buf over the element's readable buffers: the bytes the driver
   * wrote, copied out of guest memory by GPA. Charges the copy to the VMM.
   */
  readOut(elem: VirtQueueElement): Uint8Array {
    return this.readSg(elem.outSg);
  }

  /**
   * The bytes of the element's writable buffers, for protocols whose driver
   * fills them before handing them over (memtwin's encoded free page hints).
   */
  readIn(elem: VirtQueueElement): Uint8Array {
    return this.readSg(elem.inSg);
  }

  private readSg(sgs: readonly Sg[]): Uint8Array {
    const total = sgs.reduce((a, b) => a + b.len, 0);
    const out = new Uint8Array(total);
    let off = 0;
    for (const sg of sgs) {
      out.set(this.buffers.view(sg.addr, sg.len), off);
      off += sg.len;
    }
    this.stats.bytesRead += total;
    this.timing.chargeHost(this.timing.copyNs(total));
    return out;
  }

  /** virtqueue_push: return the element with `len` bytes written into its writable buffers. */
  push(elem: VirtQueueElement, len: number): void {
    const slot = this.usedIdx % this.num;
    this.usedId[slot] = elem.index;
    this.usedLen[slot] = len;
    this.usedIdx = (this.usedIdx + 1) & 0xffff;
    this.stats.used++;
    this.stats.ringBytes += VRING_USED_ELEM_BYTES;
  }

  /**
   * virtio_notify: interrupt the driver unless it asked for none
   * (VRING_AVAIL_F_NO_INTERRUPT); the driver's callback then runs.
   */
  notify(): void {
    if (this.availFlags & VRING_AVAIL_F_NO_INTERRUPT) return;
    this.stats.interrupts++;
    this.timing.interrupt();
    this.driverCallback?.(this);
  }

  /** Chains available and not yet popped. */
  get pending(): number {
    return (this.availIdx - this.lastAvailIdx) & 0xffff;
  }
}
