/**
 * XBZRLE (QEMU migration/xbzrle.c, migration/page_cache.c and the xbzrle
 * half of migration/ram.c): with the `xbzrle` capability the source keeps
 * a cache of pages it sent, and a page sent before and dirtied again goes
 * as the XOR of its cached copy and its content now, run-length encoded.
 *
 * - The format (xbzrle_encode_buffer): runs over old XOR new, each a
 *   ULEB128 length of unchanged bytes, then a ULEB128 length of changed
 *   bytes and those bytes; the unchanged run at the end is left out; an
 *   unchanged page encodes to nothing (0) and an encoding that would not
 *   fit in `dlen` (the page size) is an overflow (-1). Lengths are at most
 *   two bytes (uleb128_encode_small: < 2^14). xbzrleEncode/xbzrleDecode
 *   work on real bytes (tests, and native/calibrate.c's measurement uses
 *   the same format); the simulator itself knows which 64-byte lines of
 *   a page its guest stores changed (changedLines), not the bytes, and
 *   xbzrleEncodedLength gives the length the encoder would produce for
 *   them.
 * - The cache (page_cache.c): xbzrle-cache-size / 4K entries, direct
 *   mapped by page address ((addr / 4K) & (entries - 1)); cache_insert
 *   refuses to replace an entry of another page that was inserted less
 *   than CACHED_PAGE_LIFETIME (2) bitmap syncs ago (its `age` is
 *   dirty-sync-count at insertion); cache_is_cached: the entry holds that
 *   page.
 * - save_xbzrle_page, once the first full round over RAM is done
 *   (xbzrle_started; never in postcopy): a page not in the cache is a
 *   cache miss, inserted (unless in the last stage, the guest stopped) and
 *   sent normal; a cached page is encoded against its copy, the copy
 *   updated (not in the last stage); an unchanged page is not sent; an
 *   overflow counts and goes normal; otherwise the page goes as its header
 *   (RAM_SAVE_FLAG_XBZRLE), ENCODING_FLAG_XBZRLE (1 byte), be16 length and
 *   the encoding, counted in xbzrle-cache.pages and .bytes (less the 8-byte
 *   header). A zero page sent with xbzrle started is cached as zeros
 *   (xbzrle_cache_zero_page).
 * - Rates, per bitmap-sync period (migration_update_rates):
 *   cache-miss-rate = misses / target pages handled, encoding-rate =
 *   xbzrle pages x 4K / xbzrle bytes, both over the period.
 *
 * What a guest store changes: a store of the workload engine changes
 * `write_bytes` (a phase field, default 64: its whole cache line) from its
 * address on; the migration keeps, per 4K page, a 64-bit mask of the lines
 * stores changed since the page was last sent, and takes each changed line
 * as `bytesPerLine` changed bytes from its start (a line rewritten twice
 * is changed once). A page dirtied by anything that does not report its
 * stores (the guest kernel zeroing it, a fault, a DMA) is taken as changed
 * whole: its encoding overflows and it goes normal. Stores of the same
 * value (XOR 0) are not modelled: every byte stored counts as changed.
 *
 * Costs (profile entries): the source's encode, xbzrle_encode_4k per page
 * compared plus xbzrle_encode_per_changed_byte, and two memcpy_4k (QEMU
 * copies the page into current_buf and back into the cache); a miss
 * inserts (one memcpy_4k); the destination decodes,
 * xbzrle_decode_per_changed_byte (memtwin calibrate's xbzrle group).
 */
import { PAGE_SIZE } from '../../kernel/uapi.ts';

/** QEMU's default xbzrle-cache-size (DEFAULT_MIGRATE_XBZRLE_CACHE_SIZE). */
export const DEFAULT_XBZRLE_CACHE_SIZE = 64 * 2 ** 20;
/** page_cache.c: an entry of another page younger than this many syncs is not replaced. */
export const CACHED_PAGE_LIFETIME = 2;
/** ram.c: the byte after an XBZRLE page's header. */
export const ENCODING_FLAG_XBZRLE = 0x1;
/** Bytes of a cache line: the granule the simulator tracks a page's changes in. */
export const LINE_BYTES = 64;
const LINES = PAGE_SIZE / LINE_BYTES;

/** uleb128_encode_small's length for v (< 2^14). */
function ulebLength(v: number): number {
  return v < 0x80 ? 1 : 2;
}

function ulebPut(dst: Uint8Array, d: number, v: number): number {
  if (v < 0x80) {
    dst[d] = v;
    return 1;
  }
  dst[d] = (v & 0x7f) | 0x80;
  dst[d + 1] = v >> 7;
  return 2;
}

/**
 * Encode `cur` against `old` (same length): the encoding, an empty array
 * when nothing changed, or -1 when it would exceed `dlen` bytes.
 */
export function xbzrleEncode(old: Uint8Array, cur: Uint8Array, dlen = old.length): Uint8Array | -1 {
  if (old.length !== cur.length) throw new RangeError('xbzrle: the pages differ in length');
  const slen = old.length;
  const dst = new Uint8Array(dlen + 2);
  let d = 0;
  let i = 0;
  while (i < slen) {
    if (d + 2 > dlen) return -1;
    const z = i;
    while (i < slen && old[i] === cur[i]) i++;
    if (i - z === slen) return new Uint8Array(0);
    if (i === slen) break; // the trailing unchanged run is left out
    d += ulebPut(dst, d, i - z);
    if (d + 2 > dlen) return -1;
    const nz = i;
    while (i < slen && old[i] !== cur[i]) i++;
    d += ulebPut(dst, d, i - nz);
    if (d + (i - nz) > dlen) return -1;
    dst.set(cur.subarray(nz, i), d);
    d += i - nz;
  }
  return dst.slice(0, d);
}

/** Apply an encoding to `page` (the old content, changed in place): the bytes it covers, or -1 if malformed. */
export function xbzrleDecode(src: Uint8Array, page: Uint8Array): number {
  let i = 0;
  let d = 0;
  const get = (): number => {
    if (i >= src.length) return -1;
    const b = src[i++]!;
    if (!(b & 0x80)) return b;
    if (i >= src.length) return -1;
    return (b & 0x7f) | (src[i++]! << 7);
  };
  while (i < src.length) {
    const z = get();
    if (z < 0) return -1;
    d += z;
    const nz = get();
    if (nz < 0 || d + nz > page.length || i + nz > src.length) return -1;
    page.set(src.subarray(i, i + nz), d);
    i += nz;
    d += nz;
  }
  return d;
}

/**
 * The encoder's length for a page whose changed bytes are `bytesPerLine`
 * (1 to 64) bytes at the start of each line set in the mask (lo: lines
 * 0-31, hi: 32-63): 0 when no line changed, -1 on overflow.
 */
export function xbzrleEncodedLength(lo: number, hi: number, bytesPerLine: number, dlen = PAGE_SIZE): number {
  if (!lo && !hi) return 0;
  const w = Math.min(LINE_BYTES, Math.max(1, bytesPerLine));
  let d = 0;
  let pos = 0; // the first byte after the last changed run
  let line = 0;
  while (line < LINES) {
    if (!lineSet(lo, hi, line)) {
      line++;
      continue;
    }
    // A run of changed bytes: lines in a row merge when each is changed whole.
    const start = line * LINE_BYTES;
    let end = start + w;
    line++;
    while (w === LINE_BYTES && line < LINES && lineSet(lo, hi, line)) {
      end += LINE_BYTES;
      line++;
    }
    if (d + 2 > dlen) return -1;
    d += ulebLength(start - pos);
    if (d + 2 > dlen) return -1;
    d += ulebLength(end - start);
    if (d + (end - start) > dlen) return -1;
    d += end - start;
    pos = end;
  }
  return d;
}

function lineSet(lo: number, hi: number, line: number): boolean {
  return line < 32 ? ((lo >>> line) & 1) !== 0 : ((hi >>> (line - 32)) & 1) !== 0;
}

/**
 * page_cache.c's PageCache without the page contents (the simulator keeps
 * what changed, not the bytes): per entry the page address it holds and
 * its age.
 */
export class PageCache {
  readonly maxItems: number;
  /** Page address of each entry (-1: empty). */
  private readonly addr: Float64Array;
  private readonly age: Float64Array;

  constructor(
    readonly size: number,
    readonly pageSize = PAGE_SIZE,
  ) {
    const n = Math.floor(size / pageSize);
    if (n < 1 || (n & (n - 1)) !== 0) throw new RangeError(`xbzrle: cache of ${size} bytes is not a power of two of pages`);
    this.maxItems = n;
    this.addr = new Float64Array(n).fill(-1);
    this.age = new Float64Array(n);
  }

  /** cache_get_cache_pos. */
  pos(addr: number): number {
    return Math.floor(addr / this.pageSize) & (this.maxItems - 1);
  }

  /** cache_is_cached. */
  isCached(addr: number): boolean {
    return this.addr[this.pos(addr)] === addr;
  }

  /** cache_insert: false (-1 in QEMU) when the entry holds another page inserted less than CACHED_PAGE_LIFETIME syncs ago. */
  insert(addr: number, currentAge: number): boolean {
    const i = this.pos(addr);
    const held = this.addr[i]!;
    if (held !== -1 && held !== addr && this.age[i]! + CACHED_PAGE_LIFETIME > currentAge) return false;
    this.addr[i] = addr;
    this.age[i] = currentAge;
    return true;
  }

  /** Whether the entry of addr holds a page (any). */
  occupied(addr: number): boolean {
    return this.addr[this.pos(addr)] !== -1;
  }
}

/** XBZRLECacheStats (qapi/migration.json). */
export interface XbzrleCounters {
  bytes: number;
  pages: number;
  cacheMiss: number;
  cacheMissRate: number;
  encodingRate: number;
  overflow: number;
}

/** The ns costs xbzrle charges (profile entries, see the file's comment). */
export interface XbzrleCosts {
  encode4k: number;
  encodePerByte: number;
  decodePerByte: number;
  pageCopy: number;
}

/** What save_xbzrle_page decided for one page. */
export type XbzrleResult =
  /** Send the page normal (a miss, an overflow, or xbzrle not started); srcNs is what xbzrle cost before that. */
  | { kind: 'normal'; srcNs: number }
  /** Sent encoded: `bytes` after the page header (flag, length, encoding). */
  | { kind: 'xbzrle'; bytes: number; srcNs: number; dstNs: number }
  /**
   * Not sent at all: the page is what the cache holds (encoded_len 0: save_xbzrle_page returns 0 pages and
   * nothing goes in the stream), a page written before it was last sent and found dirty again by the next sync.
   */
  | { kind: 'skip'; srcNs: number };

/** The source's xbzrle state for one migration: the cache, the counters, and what guest stores changed per page. */
export class Xbzrle {
  readonly cache: PageCache;
  readonly counters: XbzrleCounters = { bytes: 0, pages: 0, cacheMiss: 0, cacheMissRate: 0, encodingRate: 0, overflow: 0 };
  /** xbzrle_started: the first full round over RAM is done. */
  started = false;
  /** CPU ns xbzrle cost the source (encodes, cache copies) and the destination (decodes), for reports. */
  srcNs = 0;
  dstNs = 0;
  /** Per page (by ram_addr page index): changed lines since last sent, lo and hi words; `known` says stores reported them. */
  private readonly lo: Uint32Array;
  private readonly hi: Uint32Array;
  /** Bytes changed per line by the stores since the page was last sent (the largest store's, at most 64). */
  private readonly perLine: Uint8Array;
  /** Per page: the content key (ram.ts) it was last sent or cached with, + 1; 0: none known. */
  private readonly sentKey: Float64Array;
  // migration_update_rates' period marks
  private missPrev = 0;
  private pagesPrev = 0;
  private bytesPrev = 0;
  private targetPagesPrev = 0;

  constructor(
    cacheSize: number,
    totalPages: number,
    private readonly costs: XbzrleCosts,
  ) {
    this.cache = new PageCache(cacheSize);
    this.lo = new Uint32Array(totalPages);
    this.hi = new Uint32Array(totalPages);
    this.perLine = new Uint8Array(totalPages);
    this.sentKey = new Float64Array(totalPages);
  }

  /**
   * A guest store of `len` bytes at byte `offset` of page `page` (ram_addr
   * page index); a store of a page or more rewrites the page whole.
   */
  store(page: number, offset: number, len: number): void {
    if (len >= PAGE_SIZE) offset = 0;
    const first = Math.floor(offset / LINE_BYTES);
    const last = Math.min(LINES - 1, Math.floor((offset + Math.max(1, len) - 1) / LINE_BYTES));
    for (let l = first; l <= last; l++) {
      if (l < 32) this.lo[page] = (this.lo[page]! | (1 << l)) >>> 0;
      else this.hi[page] = (this.hi[page]! | (1 << (l - 32))) >>> 0;
    }
    const w = Math.min(LINE_BYTES, len);
    if (w > this.perLine[page]!) this.perLine[page] = w;
  }

  /** Lines changed since page was last sent (tests, reports). */
  changedLines(page: number): number {
    let n = 0;
    for (let v of [this.lo[page]!, this.hi[page]!]) for (; v; v >>>= 1) n += v & 1;
    return n;
  }

  /** The page was sent (any way), with content key `key` if known: what changes next is against this content. */
  private sent(page: number, key?: number): void {
    this.lo[page] = 0;
    this.hi[page] = 0;
    this.perLine[page] = 0;
    this.sentKey[page] = key === undefined ? 0 : key + 1;
  }

  /** xbzrle_cache_zero_page: a zero page sent once xbzrle has started is cached as zeros. */
  zeroPage(page: number, age: number): void {
    this.sent(page);
    if (this.started) this.cache.insert(page * PAGE_SIZE, age);
  }

  /**
   * The one call ram.ts's send path makes per page it reads (not skipped
   * by a hint): a zero page is cached as zeros once started; before
   * xbzrle_started a page goes normal untouched (null); after it,
   * save_xbzrle_page decides.
   */
  send(page: number, zero: boolean, age: number, lastStage: boolean, key?: number): XbzrleResult | null {
    if (zero) {
      this.zeroPage(page, age);
      return null;
    }
    if (!this.started) {
      this.sent(page, key);
      return null;
    }
    return this.savePage(page, age, lastStage, key);
  }

  /**
   * save_xbzrle_page for a dirty, non-zero page at ram_addr page index
   * `page`, in bitmap-sync generation `age`; `lastStage`: the guest is
   * stopped (the cache is no longer updated). `key`: the page's content key
   * now (ram.ts; every store changes it), if the caller knows it.
   *
   * Every cache hit counts in `pages`, whatever its encoding (QEMU 5.1+:
   * the encoding rate counts skipped and overflowing pages too). A hit
   * whose key is the one it was last sent with is unchanged: the encoding
   * is empty and the page is skipped (the dirty log keeps a write made
   * before the page's last send, so the next sync finds it dirty again
   * with nothing new in it).
   */
  savePage(page: number, age: number, lastStage: boolean, key?: number): XbzrleResult {
    const addr = page * PAGE_SIZE;
    const c = this.costs;
    if (!this.cache.isCached(addr)) {
      this.counters.cacheMiss++;
      const inserted = !lastStage && this.cache.insert(addr, age);
      this.sent(page, key);
      if (inserted) this.srcNs += c.pageCopy;
      return { kind: 'normal', srcNs: inserted ? c.pageCopy : 0 };
    }
    const lo = this.lo[page]!;
    const hi = this.hi[page]!;
    if (key !== undefined && this.sentKey[page] === key + 1) {
      // memcpy into current_buf and an encode that finds nothing changed; the cache is left as it is.
      const srcNs = c.pageCopy + c.encode4k;
      this.srcNs += srcNs;
      this.counters.pages++;
      this.sent(page, key);
      return { kind: 'skip', srcNs };
    }
    // A dirty page with no store reported since it was last sent, and (without a key) not known unchanged:
    // changed by a path that reports no stores (the guest kernel zeroing it, a fault, a DMA), taken as changed
    // whole (the encoding overflows).
    const whole = !lo && !hi;
    const len = whole ? -1 : xbzrleEncodedLength(lo, hi, this.perLine[page]!);
    const changed = whole ? PAGE_SIZE : Math.min(PAGE_SIZE, this.changedLines(page) * this.perLine[page]!);
    // memcpy into current_buf, the encode, and the cache's copy updated (not in the last stage).
    const srcNs = c.pageCopy + c.encode4k + changed * c.encodePerByte + (lastStage ? 0 : c.pageCopy);
    this.srcNs += srcNs;
    this.sent(page, key);
    this.counters.pages++;
    if (len < 0) {
      this.counters.overflow++;
      this.counters.bytes += PAGE_SIZE;
      return { kind: 'normal', srcNs };
    }
    const bytes = 1 + 2 + len;
    this.dstNs += changed * c.decodePerByte;
    this.counters.bytes += bytes;
    return { kind: 'xbzrle', bytes, srcNs, dstNs: changed * c.decodePerByte };
  }

  /** migration_update_rates' xbzrle part, over the pages handled (`targetPages`, cumulative) since the last call. */
  updateRates(targetPages: number): void {
    const pageCount = targetPages - this.targetPagesPrev;
    if (pageCount <= 0) return;
    const k = this.counters;
    k.cacheMissRate = (k.cacheMiss - this.missPrev) / pageCount;
    const unencoded = (k.pages - this.pagesPrev) * PAGE_SIZE;
    const encoded = k.bytes - this.bytesPrev;
    k.encodingRate = k.pages === this.pagesPrev || !encoded ? 0 : unencoded / encoded;
    this.missPrev = k.cacheMiss;
    this.pagesPrev = k.pages;
    this.bytesPrev = k.bytes;
    this.targetPagesPrev = targetPages;
  }
}
