/**
 * memtwin's inflate/deflate encodings for virtio-balloon (the proposals of
 * src/virtio/virtio_balloon.ts: chunks, bitmap, pfn-order, per-order) and
 * the page bitmaps both they and the free page hints use. The guest driver
 * writes messages with InflateWriter into a buffer it owns; the device
 * reads them back with decodeInflate. Both sides share this file the way
 * Linux and QEMU share include/uapi/linux/virtio_balloon.h: it holds the
 * wire format, not either side's policy.
 *
 * Addresses are 4 KiB PFNs on the guest side (the balloon's page unit) and
 * guest-physical byte ranges on the host side.
 */
import * as vb from './virtio_balloon.ts';

const PAGE_SHIFT = vb.VIRTIO_BALLOON_PFN_SHIFT;
const PAGE_SIZE = 1 << PAGE_SHIFT;

/** A guest-physical byte range (what the host discards). */
export interface ByteRange {
  readonly gpa: number;
  readonly len: number;
}

/** A driver-owned message buffer. */
export interface EncodeBuffer {
  readonly bytes: Uint8Array;
  readonly view: DataView;
}

/** What decoding a message cost the host: entries read (runs, for a bitmap) and u64 bitmap words scanned. */
export interface DecodeWork {
  entries: number;
  words: number;
}

/** Buffer bytes a driver needs for one message of an inflate encoding. */
export function inflateBufferBytes(enc: vb.InflateEncodingName): number {
  switch (enc) {
    case 'pfns':
      return vb.VIRTIO_BALLOON_ARRAY_PFNS_MAX * vb.VIRTIO_BALLOON_PFN_BYTES;
    case 'chunks':
      return vb.VIRTIO_BALLOON_CHUNKS_MAX * vb.VIRTIO_BALLOON_CHUNK_BYTES;
    case 'pfn-order':
      return vb.VIRTIO_BALLOON_PFN_ORDER_MAX * vb.VIRTIO_BALLOON_PFN_ORDER_BYTES;
    case 'per-order':
      return vb.VIRTIO_BALLOON_PER_ORDER_HEADER_BYTES + vb.VIRTIO_BALLOON_ARRAY_PFNS_MAX * vb.VIRTIO_BALLOON_PFN_BYTES;
    case 'bitmap':
      return vb.hintBitmapMessageBytes(vb.VIRTIO_BALLOON_BITMAP_BITS);
  }
}

/**
 * Writes blocks (pfn, order) into messages of one inflate encoding and calls
 * `send(len)` for each full message (and at finish). `pfns` lists every 4 KiB
 * page of a block; `chunks` merges a block into the previous chunk when they
 * are contiguous; `pfn-order` is one entry per block; `per-order` keeps one
 * list per order and sends a list when it is full or at finish (highest
 * order first); `bitmap` sends at finish, one message per 32768-page window
 * holding a page.
 */
export class InflateWriter {
  private n = 0;
  private lastEnd = -1;
  private readonly perOrder = new Map<number, number[]>();
  private readonly blocks: { pfn: number; order: number }[] = [];
  /** Entries written (PFNs, chunks, pfn+order entries), or set bits for a bitmap. */
  entries = 0;

  constructor(
    private readonly enc: vb.InflateEncodingName,
    private readonly buf: EncodeBuffer,
    private readonly send: (len: number) => void,
    /** Pages of guest-physical address space (the bitmap's last window stops there). */
    private readonly maxPfn: number,
  ) {}

  add(pfn: number, order: number): void {
    switch (this.enc) {
      case 'pfns':
        for (let p = pfn; p < pfn + (1 << order); p++) {
          if (this.n === vb.VIRTIO_BALLOON_ARRAY_PFNS_MAX) this.flush(this.n * vb.VIRTIO_BALLOON_PFN_BYTES);
          this.buf.view.setUint32(this.n++ * vb.VIRTIO_BALLOON_PFN_BYTES, p, true);
          this.entries++;
        }
        return;
      case 'chunks':
        return this.addChunk(pfn, order);
      case 'pfn-order':
        if (this.n === vb.VIRTIO_BALLOON_PFN_ORDER_MAX) this.flush(this.n * vb.VIRTIO_BALLOON_PFN_ORDER_BYTES);
        this.buf.view.setBigUint64(this.n++ * vb.VIRTIO_BALLOON_PFN_ORDER_BYTES, BigInt(pfn * PAGE_SIZE + order), true);
        this.entries++;
        return;
      case 'per-order': {
        let list = this.perOrder.get(order);
        if (!list) this.perOrder.set(order, (list = []));
        list.push(pfn);
        this.entries++;
        if (list.length === vb.VIRTIO_BALLOON_ARRAY_PFNS_MAX) this.sendOrder(order);
        return;
      }
      case 'bitmap':
        this.blocks.push({ pfn, order });
        this.entries += 1 << order;
        return;
    }
  }

  private addChunk(pfn: number, order: number): void {
    const addr = pfn * PAGE_SIZE;
    const len = PAGE_SIZE << order;
    const v = this.buf.view;
    const E = vb.VIRTIO_BALLOON_CHUNK_BYTES;
    if (this.n > 0 && addr === this.lastEnd) {
      const off = (this.n - 1) * E;
      v.setBigUint64(off + 8, v.getBigUint64(off + 8, true) + BigInt(len), true);
    } else {
      if (this.n === vb.VIRTIO_BALLOON_CHUNKS_MAX) this.flush(this.n * E);
      v.setBigUint64(this.n * E, BigInt(addr), true);
      v.setBigUint64(this.n * E + 8, BigInt(len), true);
      this.n++;
      this.entries++;
    }
    this.lastEnd = addr + len;
  }

  /** One per-order message: (order u32, count u32) then the PFNs. */
  private sendOrder(order: number): void {
    const list = this.perOrder.get(order);
    if (!list?.length) return;
    const v = this.buf.view;
    v.setUint32(0, order, true);
    v.setUint32(4, list.length, true);
    list.forEach((p, i) => v.setUint32(vb.VIRTIO_BALLOON_PER_ORDER_HEADER_BYTES + i * vb.VIRTIO_BALLOON_PFN_BYTES, p, true));
    this.perOrder.delete(order);
    this.send(vb.VIRTIO_BALLOON_PER_ORDER_HEADER_BYTES + list.length * vb.VIRTIO_BALLOON_PFN_BYTES);
  }

  finish(): void {
    switch (this.enc) {
      case 'pfns':
        if (this.n) this.flush(this.n * vb.VIRTIO_BALLOON_PFN_BYTES);
        return;
      case 'chunks':
        if (this.n) this.flush(this.n * vb.VIRTIO_BALLOON_CHUNK_BYTES);
        return;
      case 'pfn-order':
        if (this.n) this.flush(this.n * vb.VIRTIO_BALLOON_PFN_ORDER_BYTES);
        return;
      case 'per-order':
        for (const order of [...this.perOrder.keys()].sort((a, b) => b - a)) this.sendOrder(order);
        return;
      case 'bitmap':
        writeBitmapWindows(this.blocks, 0, vb.VIRTIO_BALLOON_BITMAP_BITS, this.maxPfn, this.buf, this.send);
        this.blocks.length = 0;
        return;
    }
  }

  private flush(len: number): void {
    this.send(len);
    this.n = 0;
    this.lastEnd = -1;
  }
}

/**
 * Page bitmap messages: a header (base u64, bit count u64) then bits in u64
 * words, one bit per unit of 2^order 4 KiB pages (base in those units). A
 * unit's bit is set only when every page of it is in `blocks`: a bitmap of
 * order 9 cannot say that less than an aligned 2 MiB is free. Windows of
 * `windowBits` units, aligned; only windows with a set bit are sent.
 * Returns the bits set.
 */
export function writeBitmapWindows(
  blocks: readonly { pfn: number; order: number }[],
  order: number,
  windowBits: number,
  maxPfn: number,
  buf: EncodeBuffer,
  send: (len: number) => void,
): number {
  const unitPages = 2 ** order;
  const units = Math.ceil(maxPfn / unitPages);
  const covered = new Uint32Array(units);
  for (const b of blocks) {
    const pages = 2 ** b.order;
    if (b.order >= order) for (let u = b.pfn / unitPages; u < (b.pfn + pages) / unitPages; u++) covered[u] = unitPages;
    else covered[Math.floor(b.pfn / unitPages)]! += pages;
  }
  let set = 0;
  for (let base = 0; base < units; base += windowBits) {
    const bits = Math.min(windowBits, units - base);
    let any = false;
    for (let u = base; u < base + bits && !any; u++) any = covered[u] === unitPages;
    if (!any) continue;
    const len = vb.hintBitmapMessageBytes(bits);
    buf.bytes.fill(0, 0, len);
    buf.view.setBigUint64(0, BigInt(base), true);
    buf.view.setBigUint64(8, BigInt(bits), true);
    for (let u = base; u < base + bits; u++) {
      if (covered[u] !== unitPages) continue;
      const bit = u - base;
      buf.bytes[vb.HINT_BITMAP_HEADER_BYTES + (bit >> 3)]! |= 1 << (bit & 7);
      set++;
    }
    send(len);
  }
  return set;
}

/** A bitmap message back into ranges, one per run of set bits, each bit 2^order pages. */
export function decodeBitmap(bytes: Uint8Array, order: number, work: DecodeWork): ByteRange[] {
  if (bytes.length < vb.HINT_BITMAP_HEADER_BYTES) throw new RangeError(`a ${bytes.length}-byte bitmap message has no header`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const base = Number(view.getBigUint64(0, true));
  const bits = Number(view.getBigUint64(8, true));
  if (vb.hintBitmapMessageBytes(bits) > bytes.length)
    throw new RangeError(`a bitmap of ${bits} bits does not fit in ${bytes.length} bytes`);
  const unit = PAGE_SIZE * 2 ** order;
  const map = bytes.subarray(vb.HINT_BITMAP_HEADER_BYTES);
  const out: ByteRange[] = [];
  const isSet = (b: number): boolean => ((map[b >> 3]! >> (b & 7)) & 1) === 1;
  work.words += Math.ceil(bits / 64);
  for (let b = 0; b < bits; b++) {
    if (!isSet(b)) continue;
    const start = b;
    while (b < bits && isSet(b)) b++;
    out.push({ gpa: (base + start) * unit, len: (b - start) * unit });
    work.entries++;
  }
  return out;
}

/** An inflate/deflate message back into guest-physical ranges, one per entry (a bitmap: one per run). */
export function decodeInflate(enc: vb.InflateEncodingName, bytes: Uint8Array, work: DecodeWork): ByteRange[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: ByteRange[] = [];
  switch (enc) {
    case 'pfns':
      for (let o = 0; o + vb.VIRTIO_BALLOON_PFN_BYTES <= bytes.length; o += vb.VIRTIO_BALLOON_PFN_BYTES)
        out.push({ gpa: view.getUint32(o, true) * PAGE_SIZE, len: PAGE_SIZE });
      break;
    case 'chunks':
      for (let o = 0; o + vb.VIRTIO_BALLOON_CHUNK_BYTES <= bytes.length; o += vb.VIRTIO_BALLOON_CHUNK_BYTES)
        out.push({ gpa: Number(view.getBigUint64(o, true)), len: Number(view.getBigUint64(o + 8, true)) });
      break;
    case 'pfn-order':
      for (let o = 0; o + vb.VIRTIO_BALLOON_PFN_ORDER_BYTES <= bytes.length; o += vb.VIRTIO_BALLOON_PFN_ORDER_BYTES) {
        const v = Number(view.getBigUint64(o, true));
        const order = v % (vb.HINT_PFN_ORDER_MASK + 1);
        out.push({ gpa: v - order, len: PAGE_SIZE * 2 ** order });
      }
      break;
    case 'per-order': {
      const order = view.getUint32(0, true);
      const count = view.getUint32(4, true);
      const H = vb.VIRTIO_BALLOON_PER_ORDER_HEADER_BYTES;
      if (H + count * vb.VIRTIO_BALLOON_PFN_BYTES > bytes.length)
        throw new RangeError(`a per-order message of ${count} PFNs does not fit in ${bytes.length} bytes`);
      for (let i = 0; i < count; i++)
        out.push({ gpa: view.getUint32(H + i * vb.VIRTIO_BALLOON_PFN_BYTES, true) * PAGE_SIZE, len: PAGE_SIZE * 2 ** order });
      break;
    }
    case 'bitmap':
      return decodeBitmap(bytes, 0, work);
  }
  work.entries += out.length;
  return out;
}
