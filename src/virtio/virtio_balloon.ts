/**
 * The virtio-balloon device ABI both sides build against, as
 * include/uapi/linux/virtio_balloon.h defines it (and QEMU's copy in
 * include/standard-headers), plus memtwin's own additions, marked as such:
 * the inflate encoding proposals (chunks, bitmap, pfn-order, per-order;
 * their wire format is in balloon_encoding.ts) and the free page hint
 * encodings with their 4 KiB or 2 MiB bitmaps.
 */

export const VIRTIO_ID_BALLOON = 5;

/** Feature bits (device-specific bits 0..23). */
export const VIRTIO_BALLOON_F_MUST_TELL_HOST = 0;
export const VIRTIO_BALLOON_F_STATS_VQ = 1;
export const VIRTIO_BALLOON_F_DEFLATE_ON_OOM = 2;
export const VIRTIO_BALLOON_F_FREE_PAGE_HINT = 3;
export const VIRTIO_BALLOON_F_PAGE_POISON = 4;
export const VIRTIO_BALLOON_F_REPORTING = 5;
/**
 * memtwin: the chunked inflate/deflate proposed upstream in 2017 (Liang Li,
 * Wei Wang, "VIRTIO_BALLOON_F_CHUNK_TRANSFER", never merged). The patches
 * used bit 3, later given to FREE_PAGE_HINT; memtwin uses the last
 * device-specific bit. Feature name: `virtio-balloon-chunks`.
 */
export const VIRTIO_BALLOON_F_CHUNK_TRANSFER = 23;
/**
 * memtwin: the bitmap inflate of Liang Li's 2016 series ("virtio-balloon:
 * speed up inflate/deflate process", VIRTIO_BALLOON_F_PAGE_BITMAP, never
 * merged): a message is a header (base PFN u64, bit count u64) and one bit
 * per 4 KiB page. Inflate encoding `bitmap`.
 */
export const VIRTIO_BALLOON_F_PAGE_BITMAP = 22;
/**
 * memtwin: one u64 per block, its guest-physical address with the order in
 * the low 12 bits (the compact pfn+order encoding suggested in the same
 * thread). Inflate encoding `pfn-order`.
 */
export const VIRTIO_BALLOON_F_PFN_ORDER = 21;
/**
 * memtwin: one message per order, a header (order u32, count u32) then
 * 4-byte PFNs each naming a block of that order. Inflate encoding
 * `per-order`.
 */
export const VIRTIO_BALLOON_F_PER_ORDER = 20;

/**
 * How inflate/deflate messages describe pages: `pfns` is upstream (256
 * 4-byte PFNs per message); the others are the proposals above, each
 * with its own feature bit.
 */
export type InflateEncodingName = 'pfns' | 'chunks' | 'bitmap' | 'pfn-order' | 'per-order';
export const INFLATE_ENCODINGS: readonly InflateEncodingName[] = ['pfns', 'chunks', 'bitmap', 'pfn-order', 'per-order'];

/** The feature bit of an inflate encoding (none for upstream's PFN arrays). */
export function inflateEncodingFeature(name: InflateEncodingName): number | undefined {
  switch (name) {
    case 'pfns':
      return undefined;
    case 'chunks':
      return VIRTIO_BALLOON_F_CHUNK_TRANSFER;
    case 'bitmap':
      return VIRTIO_BALLOON_F_PAGE_BITMAP;
    case 'pfn-order':
      return VIRTIO_BALLOON_F_PFN_ORDER;
    case 'per-order':
      return VIRTIO_BALLOON_F_PER_ORDER;
  }
}

/** The inflate encoding two sides negotiated, from the negotiated features. */
export function negotiatedInflateEncoding(features: bigint): InflateEncodingName {
  for (const e of INFLATE_ENCODINGS) {
    const bit = inflateEncodingFeature(e);
    if (bit !== undefined && features & (1n << BigInt(bit))) return e;
  }
  return 'pfns';
}

/** Balloon PFNs are in 4 KiB units whatever the guest page size. */
export const VIRTIO_BALLOON_PFN_SHIFT = 12;
/** drivers/virtio/virtio_balloon.c: PFNs per inflate/deflate message (vb->pfns[]). */
export const VIRTIO_BALLOON_ARRAY_PFNS_MAX = 256;
/** Bytes of one PFN in an inflate/deflate message (__virtio32). */
export const VIRTIO_BALLOON_PFN_BYTES = 4;
/** Pages deflated per OOM notification (VIRTIO_BALLOON_OOM_NR_PAGES). */
export const VIRTIO_BALLOON_OOM_NR_PAGES = 256;

/** Free page hint command ids (config free_page_hint_cmd_id). */
export const VIRTIO_BALLOON_CMD_ID_STOP = 0;
export const VIRTIO_BALLOON_CMD_ID_DONE = 1;
/** QEMU: the first id of a hinting round. */
export const VIRTIO_BALLOON_FREE_PAGE_HINT_CMD_ID_MIN = 2;
/** Bytes of a command id message (__virtio32). */
export const VIRTIO_BALLOON_CMD_ID_BYTES = 4;

/** struct virtio_balloon_config offsets (little-endian u32 fields). */
export const CONFIG_NUM_PAGES = 0;
export const CONFIG_ACTUAL = 4;
export const CONFIG_FREE_PAGE_HINT_CMD_ID = 8;
export const CONFIG_POISON_VAL = 12;
/** memtwin: hint encoding (HintEncodingCode), entries per message, lowest order hinted. */
export const CONFIG_MEMTWIN_HINT_ENCODING = 16;
export const CONFIG_MEMTWIN_HINT_BATCH = 20;
export const CONFIG_MEMTWIN_HINT_MIN_ORDER = 24;
/** memtwin: the order of the pages one bit of a hint bitmap covers (0: 4 KiB, 9: 2 MiB). */
export const CONFIG_MEMTWIN_HINT_BITMAP_ORDER = 28;
export const VIRTIO_BALLOON_CONFIG_BYTES = 32;

/** Virtqueue indices (enum virtio_balloon_vq). */
export const VIRTIO_BALLOON_VQ_INFLATE = 0;
export const VIRTIO_BALLOON_VQ_DEFLATE = 1;
export const VIRTIO_BALLOON_VQ_STATS = 2;
export const VIRTIO_BALLOON_VQ_FREE_PAGE = 3;
export const VIRTIO_BALLOON_VQ_REPORTING = 4;
export const VIRTIO_BALLOON_VQ_NAMES = ['inflate', 'deflate', 'stats', 'free_page_vq', 'reporting_vq'] as const;

/** Statistics tags (VIRTIO_BALLOON_S_*). */
export const VIRTIO_BALLOON_S_SWAP_IN = 0;
export const VIRTIO_BALLOON_S_SWAP_OUT = 1;
export const VIRTIO_BALLOON_S_MAJFLT = 2;
export const VIRTIO_BALLOON_S_MINFLT = 3;
export const VIRTIO_BALLOON_S_MEMFREE = 4;
export const VIRTIO_BALLOON_S_MEMTOT = 5;
export const VIRTIO_BALLOON_S_AVAIL = 6;
export const VIRTIO_BALLOON_S_CACHES = 7;
export const VIRTIO_BALLOON_S_HTLB_PGALLOC = 8;
export const VIRTIO_BALLOON_S_HTLB_PGFAIL = 9;
export const VIRTIO_BALLOON_S_OOM_KILL = 10;
export const VIRTIO_BALLOON_S_ALLOC_STALL = 11;
export const VIRTIO_BALLOON_S_ASYNC_SCAN = 12;
export const VIRTIO_BALLOON_S_DIRECT_SCAN = 13;
export const VIRTIO_BALLOON_S_ASYNC_RECLAIM = 14;
export const VIRTIO_BALLOON_S_DIRECT_RECLAIM = 15;
export const VIRTIO_BALLOON_S_NR = 16;
/** VIRTIO_BALLOON_S_NAMES; QEMU prefixes them with "stat-" in guest-stats. */
export const VIRTIO_BALLOON_S_NAMES = [
  'swap-in',
  'swap-out',
  'major-faults',
  'minor-faults',
  'free-memory',
  'total-memory',
  'available-memory',
  'disk-caches',
  'hugetlb-allocations',
  'hugetlb-failures',
  'oom-kills',
  'alloc-stalls',
  'async-scans',
  'direct-scans',
  'async-reclaims',
  'direct-reclaims',
] as const;
/** struct virtio_balloon_stat is packed: __virtio16 tag + __virtio64 val. */
export const VIRTIO_BALLOON_STAT_BYTES = 10;

/**
 * memtwin, chunked inflate (`virtio-balloon-chunks`): a message is an array
 * of (addr u64, len u64) chunks, contiguous guest-physical ranges in bytes
 * (the proposal's "extended chunk" format; its packed 52+12-bit form only
 * holds 4095 pages per chunk). One page of chunks per message.
 */
export const VIRTIO_BALLOON_CHUNK_BYTES = 16;
export const VIRTIO_BALLOON_CHUNKS_MAX = 256;

/** memtwin `pfn-order` inflate: u64 entries (GPA | order) per message, a 2 KiB buffer. */
export const VIRTIO_BALLOON_PFN_ORDER_BYTES = 8;
export const VIRTIO_BALLOON_PFN_ORDER_MAX = 256;
/** memtwin `per-order` inflate: the header (order u32, count u32), then up to 256 4-byte PFNs. */
export const VIRTIO_BALLOON_PER_ORDER_HEADER_BYTES = 8;
/** memtwin `bitmap` inflate: bits per message (a 4 KiB bitmap: 128 MiB of guest memory) after the 16-byte header. */
export const VIRTIO_BALLOON_BITMAP_BITS = 32768;

/**
 * memtwin, free page hint encodings. Upstream sends each hinted block as
 * its own device-writable descriptor (addr, len), one block per kick; here
 * the driver packs `batch` entries per message into a buffer it owns (the
 * in-buffer of the message) in one of these formats, all little-endian:
 * - `pfn-list`: every 4 KiB page as a PFN of `pfnBytes` (4 or 8) bytes;
 * - `bitmap`: a 16-byte header (base u64, bit count u64) then one bit per
 *   page of the bitmap's order in u64 words (order 0: a bit per 4 KiB page,
 *   base a PFN; order 9: a bit per 2 MiB, base in 2 MiB units, the 2M
 *   bitmap argued for in the 2016 thread: 512 times fewer bits, but a free
 *   2 MiB region is the smallest thing it can say); `batch` is the bit
 *   count of a window, and only windows with a hinted page are sent;
 * - `pfn-order`: one u64 per free block, its GPA with the order in the low
 *   12 bits (GPA | order);
 * - `ranges`: one (addr u64, len u64) per free block.
 */
export type HintEncodingName = 'pfn-list' | 'bitmap' | 'pfn-order' | 'ranges';
export const HINT_ENCODINGS: readonly HintEncodingName[] = ['pfn-list', 'bitmap', 'pfn-order', 'ranges'];

/** The config-space code of an encoding (pfn-list is split by PFN width). */
export const HintEncodingCode = {
  PFN_LIST_32: 0,
  PFN_LIST_64: 1,
  BITMAP: 2,
  PFN_ORDER: 3,
  RANGES: 4,
} as const;
export type HintEncodingCode = (typeof HintEncodingCode)[keyof typeof HintEncodingCode];

export function hintEncodingCode(name: HintEncodingName, pfnBytes: 4 | 8 = 4): HintEncodingCode {
  switch (name) {
    case 'pfn-list':
      return pfnBytes === 8 ? HintEncodingCode.PFN_LIST_64 : HintEncodingCode.PFN_LIST_32;
    case 'bitmap':
      return HintEncodingCode.BITMAP;
    case 'pfn-order':
      return HintEncodingCode.PFN_ORDER;
    case 'ranges':
      return HintEncodingCode.RANGES;
  }
}

/** Bytes of one entry of a list encoding (bitmap: see HINT_BITMAP_HEADER_BYTES). */
export function hintEntryBytes(code: HintEncodingCode): number {
  switch (code) {
    case HintEncodingCode.PFN_LIST_32:
      return 4;
    case HintEncodingCode.PFN_LIST_64:
    case HintEncodingCode.PFN_ORDER:
      return 8;
    case HintEncodingCode.RANGES:
      return 16;
    case HintEncodingCode.BITMAP:
      return 0;
  }
}
export const HINT_BITMAP_HEADER_BYTES = 16;
/** Low bits of a pfn-order entry that carry the order. */
export const HINT_PFN_ORDER_MASK = 0xfff;

/** Bytes of a bitmap window message of `bits` bits (rounded up to u64 words). */
export function hintBitmapMessageBytes(bits: number): number {
  return HINT_BITMAP_HEADER_BYTES + Math.ceil(bits / 64) * 8;
}
