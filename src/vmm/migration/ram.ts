/**
 * RAM migration (QEMU migration/ram.c): what the source sends of guest RAM
 * and, in precopy, what the destination does with it. Postcopy (postcopy.ts)
 * takes pages from the same bitmaps (takePage, nextDirtyHostPage,
 * chunkHostPages) and places them on the destination itself.
 *
 * - Dirty bitmap: one bit per 4 KiB target page per RAM block
 *   (RAMBlock->bmap), a byte here. The bulk stage sets every bit
 *   (ram_list_init_bitmaps); migration_bitmap_sync harvests KVM's dirty
 *   log into it and counts `dirty-sync-count` and the pages dirtied since
 *   the previous sync (num_dirty_pages_period).
 * - KVM's dirty log is read from the host page table, which is where a
 *   guest store lands: each page's content token (first byte + write
 *   serial, kernel/page.ts) and whether the host backs it. A page whose
 *   token changed since the migration last looked at it was written (every
 *   store bumps the serial), so it is dirty, exactly as KVM would have
 *   logged it; a page the host discarded is dirty too. A frame the host
 *   zeroed and nothing stored to since (the other pages of a THP that one
 *   store brought in) holds what the zero page it replaced held and is not
 *   dirty: KVM logs only the page the guest wrote. Callers may also
 *   log writes explicitly (logWrite: the `onGuestWrite` hook).
 * - Dirty logging at 4K: when logging starts (KVM_MEM_LOG_DIRTY_PAGES on
 *   each memslot), KVM splits huge EPT mappings so it can track 4K pages
 *   (eager page splitting, kvm_mmu_slot_try_split_huge_pages). memtwin's EPT
 *   entries are already per 4K page (vm.ts), so the split is a flag
 *   (`dirtyLogging`, `isDirtyLogging(gpa)`) and a cost per huge mapping
 *   split (costs.hugeSplit, per 2M; a 1G mapping is split into 512 2M ones
 *   first). vm.ts's tlbMappingSize does not read the flag (not our file):
 *   a caller modelling TLB reach during migration should take 4K where
 *   isDirtyLogging says so. When logging stops, KVM lets the mappings be
 *   rebuilt huge on later faults; not modelled.
 * - Pages sent (ram_save_target_page): a page header of 8 bytes (offset |
 *   flags), plus 1 + strlen(idstr) when the block changes
 *   (RAM_SAVE_FLAG_CONTINUE otherwise). Zero pages (`zero-page-detection`
 *   not `none`, save_zero_page): a page that is all zeros (the host never
 *   backed it, maps the zero page, or the kernel's page flag says no
 *   non-zero byte was stored) goes as RAM_SAVE_FLAG_ZERO, the header and one
 *   byte, and counts in `ram.duplicate`; other pages go as the header and
 *   4096 bytes, counted in `ram.normal`. Reading a page the host never
 *   backed faults in the zero page on the source, as QEMU's read does.
 * - Free page hints: a dirty page the balloon device hinted free
 *   (`isSkippable`) is not sent in this pass: qemu_guest_free_page_hint
 *   cleared its bit when the hint came, whether the guest wrote it before
 *   the hint (a guest with init_on_alloc zeroes each page it hints) or after.
 *   Either write is in the dirty log (TCG's dirty memory; KVM's log, whose
 *   clear for hinted ranges under manual dirty-log protect is not
 *   modelled), so the next sync dirties the page again, ends its hint
 *   (markDirty) and a later pass sends it. Skipped pages
 *   are free in the guest; their content on the destination is whatever
 *   it was (zero for a fresh destination), which is why the content check
 *   (verify) leaves them out.
 * - The destination (ram_load_precopy) writes each normal page into its
 *   guest RAM (its first byte: the content token memtwin tracks) through
 *   its VMM's page table, and for a zero page reads it and clears it only
 *   if it is not zero already (ram_handle_zero).
 *
 * Costs (profile entry names, configurable): the channel's socket, per 4K
 * of stream bytes, `tcp_send_4k` on the source's migration thread (QEMU
 * queues a page's address in the QEMUFile's iovec, qemu_put_buffer_async,
 * and writev's it from guest RAM: the socket's copy is the only one) and
 * `tcp_recv_4k` on the destination's (recvmsg into the QEMUFile's
 * buffer); the destination's copy of a normal page out of that buffer into
 * guest RAM (qemu_get_buffer) `memcpy_4k`, and the source's too when xbzrle
 * runs outside the last stage (ram_save_page sends the cache's copy with
 * qemu_put_buffer: send_async false); checking a zero
 * page (buffer_is_zero reads the whole page) `dram_access_seq_per_4k`;
 * a dirty-log harvest `syscall_null` per memslot (KVM_GET_DIRTY_LOG),
 * `kvm_get_dirty_log_per_page` per page of guest RAM (the bitmap copied
 * out) and `kvm_clear_dirty_log_per_page` per page found dirty (KVM
 * re-protecting it, KVM_CLEAR_DIRTY_LOG: QEMU clears a chunk's log lazily,
 * before it sends the chunk's first page, charged here at the sync), both
 * published dirty_log_perf_test figures (profiles/default.json says
 * where from); splitting one huge
 * EPT mapping `thp_split_pmd` (a proxy: the same page-table work on the
 * host side). Host faults (reads of never-backed pages on the source,
 * first writes on the destination) are charged by the kernel.
 *
 * With the KVM dirty ring (`dirtyRing`, dirty_ring.ts) a sync reaps the
 * rings instead (per entry, not per page of RAM); guest stores reported
 * through onGuestStore push ring entries and may stall their vCPU at a
 * ring-full exit. With xbzrle (`xbzrle`, xbzrle.ts) each page read for
 * sending goes through one call, Xbzrle.send, which may make it an
 * encoded page; the stores also tell xbzrle which lines of a page changed.
 */
import type { Kernel } from '../../kernel/kernel.ts';
import type { Thread } from '../../kernel/sched.ts';
import { PAGE_SIZE, PMD_SIZE, PUD_SIZE } from '../../kernel/uapi.ts';
import { followPage, followPmdRange, PMD_RANGE_NONE, PMD_RANGE_PAGES, PMD_RANGE_ZERO, readFaultNonePte } from '../../kernel/memory.ts';
import { PAGES_PER_SECTION, PG, SECTION_MASK, SECTION_SHIFT } from '../../kernel/page.ts';
import type { RAMBlock } from '../ram_block.ts';
import type { Vm } from '../vm.ts';
import type { Xbzrle } from './xbzrle.ts';
import type { KvmDirtyRing } from './dirty_ring.ts';
import type { FlowClass } from '../../sim/membw.ts';

/** save_page_header: be64 offset | flags. */
export const PAGE_HEADER_BYTES = 8;
/** RAM_SAVE_FLAG_EOS and other 8-byte stream markers. */
export const STREAM_MARKER_BYTES = 8;

/** enum PrecopyNotifyReason (include/migration/misc.h): when precopy_notify() calls the precopy notifiers. */
export type PrecopyNotifyReason = 'setup' | 'before-bitmap-sync' | 'after-bitmap-sync' | 'complete' | 'cleanup';

/** The free-page-hint side of virtio-balloon migration uses (VirtioBalloonDevice has both). */
export interface FreePageHints {
  isSkippable(gpa: number): boolean;
  markDirty(gpa: number, len: number): void;
  /**
   * virtio_balloon_free_page_hint_notify, the device's precopy notifier:
   * `vmRunning` is the source VM's state, `postcopyRam` the capability
   * (with it QEMU never starts hinting).
   */
  precopyNotify?(reason: PrecopyNotifyReason, vmRunning: boolean, postcopyRam: boolean): void;
  /**
   * The migration's qemu_guest_free_page_hint, which the device calls with each range it records while dirty
   * logging is on (null: none). It clears the range's clear chunks before its pages are skipped, so a later
   * write to a hinted page is logged (RamMigration.freePageHint).
   */
  setFreePageHint?(hint: ((gpa: number, len: number) => void) | null): void;
}

/** Cost-profile entry names the RAM migration charges. */
export interface RamMigrationCostNames {
  /** Copy of a normal page out of the QEMUFile's buffer on the destination (and into it with xbzrle). Default memcpy_4k. */
  pageCopy?: string;
  /** The socket's send, per 4K of stream bytes, on the sending thread. Default tcp_send_4k. */
  socketSend?: string;
  /** The socket's receive, per 4K of stream bytes, on the receiving thread. Default tcp_recv_4k. */
  socketRecv?: string;
  /** buffer_is_zero over a zero page. Default dram_access_seq_per_4k. */
  zeroCheck?: string;
  /** One KVM_GET_DIRTY_LOG call per memslot per sync. Default syscall_null. */
  dirtyLogIoctl?: string;
  /** KVM_GET_DIRTY_LOG's cost per page of guest RAM. Default kvm_get_dirty_log_per_page. */
  dirtySyncPerPage?: string;
  /** Re-protecting one page found dirty (KVM_CLEAR_DIRTY_LOG). Default kvm_clear_dirty_log_per_page. */
  dirtyClearPerPage?: string;
  /** Splitting one 2M EPT mapping when logging starts. Default thp_split_pmd (proxy). */
  hugeSplit?: string;
}

export interface RamMigrationOptions {
  /** Zero-page detection on (zero-page-detection legacy/multifd) or off (none). */
  zeroPageDetection: boolean;
  hints?: FreePageHints;
  costs?: RamMigrationCostNames;
  /** precopy_notify: called before and after every bitmap sync (migration_bitmap_sync_precopy). */
  precopyNotify?: (reason: PrecopyNotifyReason) => void;
  /**
   * How the source's dirty log is cleared, which decides whether a write
   * made after a sync but before its page is sent is found by the next
   * sync:
   * - a number N (KVM's bitmap with KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 and
   *   KVM_DIRTY_LOG_INITIALLY_SET, as QEMU uses it): QEMU's clear chunk is
   *   2^N pages (its x-clear-bitmap-shift, CLEAR_BITMAP_SHIFT_DEFAULT 18:
   *   1 GiB). The sync's KVM_GET_DIRTY_LOG leaves the pages it reports
   *   writable and logged; migration_bitmap_clear_dirty clears a chunk's
   *   reported pages (KVM_CLEAR_DIRTY_LOG, write-protecting them) when the
   *   first dirty page of the chunk is taken to send. A write to a reported
   *   page before that clear is forgotten (the page goes with its latest
   *   content anyway); every write after it is kept.
   * - null (default): nothing is forgotten. TCG's dirty memory bitmap is
   *   cleared only by the sync's harvest, and KVM's dirty ring resets the
   *   harvested entries (write-protecting their pages) within the sync.
   */
  clearBitmapShift?: number | null;
}

/** QEMU's CLEAR_BITMAP_SHIFT_MIN, _DEFAULT, _MAX (migration.h): clear chunks of 64 pages, 1 GiB, 8 TiB at 4K. */
export const CLEAR_BITMAP_SHIFT_MIN = 6;
export const CLEAR_BITMAP_SHIFT_DEFAULT = 18;
export const CLEAR_BITMAP_SHIFT_MAX = 31;

/** One RAM block as migration sees it, on both sides: 6 bytes per 4K page. */
export interface BlockState {
  block: RAMBlock;
  dst: RAMBlock;
  pages: number;
  /** Dirty bitmap (1 byte per 4K page, so that the next dirty page is an indexOf). */
  bmap: Uint8Array;
  /** `bmap` four pages to a word (its whole words): a dirty run of four is 0x01010101. */
  bmap32: Uint32Array;
  /** Per page: PAGE_LOGGED, PAGE_SKIPPED, PAGE_BACKED, PAGE_UNCLEARED. */
  state: Uint8Array;
  /** `state` four pages to a word, for checking a run of pages at once (its length is padded to whole words). */
  state32: Uint32Array;
  /** The content token the migration last saw (sync, send or skip), when it saw the page backed (PAGE_BACKED). */
  seen: Uint32Array;
  /** Where the block's pages sit in guest-physical memory: [first page, pages, GPA of the first], by page. */
  gpaRuns: [number, number, number][];
  /**
   * QEMU's clear_bmap (with clearBitmapShift): per clear chunk, 1 while the chunk holds pages the last sync
   * reported (PAGE_UNCLEARED) and no page of it has been taken to send since; null when the log is cleared at
   * the sync.
   */
  clearBmap: Uint8Array | null;
}

/**
 * Whether runs of pages in one state are handled as one unit: a 2M that
 * nothing (or the huge zero page) maps and whose pages the migration last
 * saw zero is skipped by the sync and the content check, and a run of zero
 * pages on both sides is sent without a page-table walk per page; in
 * postcopy, the background stream takes the dirty pages of a 2M with one
 * page-table lookup (takeRunCodes), the destination discards runs of dirty
 * pages found by indexOf, and the setup's sync does not walk the page table
 * its own walk has just read. Tests turn it off to check that the
 * page-by-page path gives the same results.
 */
export const ramRuns = { enabled: true };
/** Pages sendZeroFrames reads the mappings of at once (a short run of a 2M: it stops at the first page not zero). */
const ZERO_FRAMES_WINDOW = 64;

/** Logged written by logWrite since the last sync. */
const PAGE_LOGGED = 1;
/** Last skipped by a free page hint (not sent since). */
const PAGE_SKIPPED = 2;
/** Backed by a frame when the migration last saw it (its token is in `seen`); else it saw it zero/unbacked. */
const PAGE_BACKED = 4;
/**
 * Reported by a sync and not cleared since (clearBitmapShift): a write to it is not logged until its chunk is
 * cleared. KVM's log still has it, so the next sync reports it again, which changes nothing (it is dirty in the
 * bitmap until taken, and taking it clears its chunk first): the sync looks only at what changed since.
 */
const PAGE_UNCLEARED = 8;
/** PAGE_LOGGED | PAGE_BACKED in each byte of a state32 word (four pages). */
const LOGGED_OR_BACKED4 = (PAGE_LOGGED | PAGE_BACKED) * 0x01010101;
/** PAGE_UNCLEARED in each byte of a state32 word. */
const UNCLEARED4 = PAGE_UNCLEARED * 0x01010101;

/** Whether page p was last skipped by a free page hint and not sent since. */
export function pageSkipped(b: BlockState, p: number): boolean {
  return (b.state[p]! & PAGE_SKIPPED) !== 0;
}

/** GPA of page p of the block, -1 when no memory slot maps it. */
export function gpaOfPage(b: BlockState, p: number): number {
  for (const [first, n, gpa] of b.gpaRuns) if (p >= first && p < first + n) return gpa + (p - first) * PAGE_SIZE;
  return -1;
}

/** The content key (RamMigration.key) is what the migration last saw, and KVM logged no write since. */
function unchangedSinceSeen(b: BlockState, p: number, key: number): boolean {
  const st = b.state[p]!;
  if (st & PAGE_LOGGED) return false;
  return key === 0 ? (st & PAGE_BACKED) === 0 : (st & PAGE_BACKED) !== 0 && b.seen[p] === key - 1;
}

/** The migration saw page p with content key `key`: the log is harvested (and cleared); a hint's skip stays. */
function noteSeen(b: BlockState, p: number, key: number): void {
  b.state[p] = (b.state[p]! & PAGE_SKIPPED) | (key ? PAGE_BACKED : 0);
  b.seen[p] = key ? key - 1 : 0;
}

/**
 * Page p was sent with content key `key`: no longer skipped by a hint. Sending does not touch the dirty log
 * (its clear chunk was cleared before, clearChunk): a write since the migration last saw the page stays for the
 * next sync to find, whether it came before the send or after, so only a page unchanged since then takes the key.
 */
function sentSeen(b: BlockState, p: number, key: number): void {
  if (unchangedSinceSeen(b, p, key)) noteSeen(b, p, key);
  b.state[p]! &= ~PAGE_SKIPPED;
}

/** Pages of one page-table lookup from page p: to the next 2M boundary of the block's host range, or the block's end. */
function chunkPages(b: BlockState, p: number): number {
  return Math.min(b.pages - p, 512 - ((b.block.host / PAGE_SIZE + p) % 512));
}

/** chunkPages on both sides: the run stays inside one 2M of the source's and of the destination's host range. */
function chunkPagesBoth(b: BlockState, p: number): number {
  return Math.min(chunkPages(b, p), 512 - ((b.dst.host / PAGE_SIZE + p) % 512));
}

/** Whether any of pages [p, p + n) of the block has one of the state bits `mask`. */
function anyState(b: BlockState, p: number, n: number, mask: number): boolean {
  const st = b.state;
  const end = p + n;
  let i = p;
  for (; i < end && i & 3; i++) if (st[i]! & mask) return true;
  const m4 = mask * 0x01010101;
  for (const w = b.state32; i + 4 <= end; i += 4) if (w[i >>> 2]! & m4) return true;
  for (; i < end; i++) if (st[i]! & mask) return true;
  return false;
}

/** readPageCode's answer: the page was not sent (a free page hint skipped it, or it was clean). */
export const PAGE_NOT_SENT = -1;
/** readPageCode's answer: the page went as a zero page (ORed with its first byte otherwise). */
export const PAGE_SENT_ZERO = 0x100;
/** readPageCode's answer for a multifd page (stream false): the page holds no non-zero byte. */
export const PAGE_EMPTY = 0x200;

/** What one sending step did. */
export interface SendResult {
  bytes: number;
  pages: number;
  /** Source CPU ns (zero checks, copies, read faults). */
  srcNs: number;
  /** Destination CPU ns (copies, zero checks, faults). */
  dstNs: number;
  /**
   * Host pages begun (ram_find_and_save_block calls: each sends the dirty
   * 4K pages of one host page, a 2M one on hugetlbfs); a host page a step
   * left half sent is not begun again by the next (send only).
   */
  hostPages?: number;
  /** The step stopped inside a host page that still has dirty 4K pages (send only). */
  midHostPage?: boolean;
  /** The page size of the block of the last page sent (send only). */
  hostPageSize?: number;
}

/** A page a multifd sender thread sends: its 4K page index in the block, zero (detected by the sender: offset only), its first byte. */
export interface MultifdPage {
  p: number;
  zero: boolean;
  byte: number;
  /** All zeros on the source (a zero page sent whole when zero-page-detection is none). */
  empty: boolean;
}

/** A sync's result. */
export interface SyncResult {
  ns: number;
  newDirty: number;
}

export class RamMigration {
  readonly blocks: BlockState[] = [];
  /** ram_bytes_total. */
  readonly totalBytes: number;
  /** migration_dirty_pages: bits set in the bitmaps. */
  dirtyPages = 0;
  dirtySyncCount = 0;
  /** Pages newly dirtied since the last rate period (num_dirty_pages_period). */
  dirtyPagesPeriod = 0;
  duplicate = 0;
  normal = 0;
  /** Pages not sent because a free page hint covered them (QEMU no longer reports this). */
  skippedByHints = 0;
  /** Bytes of RAM pages and RAM stream markers sent. */
  bytes = 0;
  /** Whether KVM dirty logging is on (huge EPT mappings treated as split to 4K). */
  dirtyLogging = false;
  /** Huge (2M) EPT mappings split when logging started. */
  hugeSplits = 0;
  /** XBZRLE's cache and counters, with the `xbzrle` capability (not in postcopy). */
  xbzrle: Xbzrle | null = null;
  /** The KVM dirty ring, when the VM has one (`-accel kvm,dirty-ring-size`): syncs reap it. */
  dirtyRing: KvmDirtyRing | null = null;
  /** Ring-full exits reap only the exiting vCPU's ring (dirty-limit in service). */
  dirtyRingOwnOnly = false;
  /** The guest is stopped for the switchover (QEMU's rs->last_stage): xbzrle no longer updates its cache. */
  lastStage = false;
  /** Pages xbzrle sent encoded (counted in neither normal nor duplicate). */
  xbzrlePages = 0;
  /** ns of every bitmap sync so far (the dirty log's ioctls, or reaping the dirty rings). */
  syncNsTotal = 0;
  private cursorBlock = 0;
  private cursorPage = 0;
  private lastSentBlock: BlockState | null = null;
  /** The host page send() is in (ram_save_host_page's): its block and first 4K page. */
  private hostPageBlock: BlockState | null = null;
  private hostPageFirst = -1;
  private readonly srcThread: Thread;
  private readonly dstThread: Thread;
  /** The source host's kernel, and the destination's (the same one when both VMMs run on one host). */
  private readonly k: Kernel;
  private readonly dk: Kernel;
  private readonly ns: Required<{ [K in keyof RamMigrationCostNames]-?: number }>;
  /** Scratch for one page-table lookup's frames (followPmdRange), source and destination. */
  private readonly pfns = new Int32Array(512);
  private readonly dstPfns = new Int32Array(512);
  /** Scratch for the content keys of one run (readKeys). */
  private readonly keys = new Float64Array(512);
  /** The destination's decode time of the page readPageCode last sent, when it went xbzrle-encoded. */
  private lastDecodeNs: number | undefined = undefined;
  /** Stream bytes of the page readPageCode last sent (its header included). */
  private lastPageBytes = 0;
  /** The block nextDirty found its page in. */
  private nextBlock!: BlockState;
  /** The destination's task time while it loads a page (sendPage), and the page: reused, not made per page. */
  private readonly dstTime = { ns: 0 };
  private dstHva = 0;
  private dstByte = 0;
  /** Pages the sync in progress found in KVM's log, each to be re-protected (KVM_CLEAR_DIRTY_LOG). */
  private syncLogged = 0;
  /** opts.clearBitmapShift: each block's clear chunks are 2^clearShift pages; null: the log is cleared at the sync. */
  private readonly clearShift: number | null;

  constructor(
    readonly src: Vm,
    readonly dst: Vm,
    readonly opts: RamMigrationOptions,
  ) {
    if (src.k.clock !== dst.k.clock)
      throw new Error("memtwin: the destination host must share the source host's virtual time (KernelOptions.sameTimeAs)");
    this.k = src.k;
    this.dk = dst.k;
    const shift = opts.clearBitmapShift ?? null;
    if (shift !== null && !(Number.isInteger(shift) && shift >= CLEAR_BITMAP_SHIFT_MIN && shift <= CLEAR_BITMAP_SHIFT_MAX))
      throw new RangeError(`clear_bitmap_shift ${shift} must be an integer from ${CLEAR_BITMAP_SHIFT_MIN} to ${CLEAR_BITMAP_SHIFT_MAX}`);
    this.clearShift = shift;
    const c = opts.costs ?? {};
    const cost = (name: string, what: string): number =>
      this.k.costs.nsOf(
        name,
        `RAM migration charges it for ${what}. Add it to the profile or name another entry in the migration's costs option.`,
      );
    this.ns = {
      pageCopy: cost(c.pageCopy ?? 'memcpy_4k', 'each normal page copied'),
      socketSend: cost(c.socketSend ?? 'tcp_send_4k', "each 4K written to a channel's socket"),
      socketRecv: cost(c.socketRecv ?? 'tcp_recv_4k', "each 4K read from a channel's socket"),
      zeroCheck: cost(c.zeroCheck ?? 'dram_access_seq_per_4k', 'each zero page checked'),
      dirtyLogIoctl: cost(c.dirtyLogIoctl ?? 'syscall_null', 'each KVM_GET_DIRTY_LOG call'),
      dirtySyncPerPage: cost(c.dirtySyncPerPage ?? 'kvm_get_dirty_log_per_page', "each page's dirty bit harvested"),
      dirtyClearPerPage: cost(c.dirtyClearPerPage ?? 'kvm_clear_dirty_log_per_page', 'each dirty page re-protected'),
      hugeSplit: cost(c.hugeSplit ?? 'thp_split_pmd', 'each huge EPT mapping split when dirty logging starts'),
    };
    let total = 0;
    for (const block of src.ramList.blocks) {
      const dstBlock = dst.ramList.byName(block.idstr);
      if (!dstBlock) throw new Error(`Unknown ramblock "${block.idstr}", cannot accept migration`);
      if (dstBlock.usedLength !== block.usedLength)
        throw new Error(
          `Length mismatch: ${block.idstr}: 0x${block.usedLength.toString(16)} in != 0x${dstBlock.usedLength.toString(16)}: Invalid argument`,
        );
      const pages = block.usedLength / PAGE_SIZE;
      const gpaRuns: [number, number, number][] = [];
      for (const s of src.slots) if (s.block === block) gpaRuns.push([s.blockOffset / PAGE_SIZE, s.size / PAGE_SIZE, s.gpa]);
      const state32 = new Uint32Array(Math.ceil(pages / 4));
      const bmap = new Uint8Array(pages);
      this.blocks.push({
        block,
        dst: dstBlock,
        pages,
        bmap,
        bmap32: new Uint32Array(bmap.buffer, 0, pages >>> 2),
        state: new Uint8Array(state32.buffer, 0, pages),
        state32,
        seen: new Uint32Array(pages),
        gpaRuns,
        clearBmap: this.clearShift === null ? null : new Uint8Array(Math.ceil(pages / 2 ** this.clearShift)),
      });
      total += block.usedLength;
    }
    if (dst.ramList.blocks.length !== src.ramList.blocks.length) {
      const extra = dst.ramList.blocks.find((b) => !src.ramList.byName(b.idstr));
      if (extra) throw new Error(`memtwin: destination RAM block "${extra.idstr}" has no source`);
    }
    this.totalBytes = total;
    this.srcThread = this.newThread(src);
    this.dstThread = dst.process.threads[0]!;
  }

  private newThread(vm: Vm): Thread {
    const cpu = vm.process.threads[0]!.cpu;
    const t = this.k.createThread(vm.process, cpu);
    if (typeof t === 'number') throw new Error(`cannot create the migration thread on CPU ${cpu}`);
    return t;
  }

  // --- dirty logging ---------------------------------------------------------------

  /**
   * ram_init_bitmaps: start KVM dirty logging (splitting huge EPT mappings),
   * set every bit (the bulk stage) and sync once. Returns the ns it takes.
   */
  setup(): number {
    let ns = 0;
    this.dirtyLogging = true;
    for (const s of this.src.slots) {
      ns += this.ns.dirtyLogIoctl; // KVM_SET_USER_MEMORY_REGION with KVM_MEM_LOG_DIRTY_PAGES
      if (!s.ept) continue;
      for (let off = 0; off < s.size; off += PMD_SIZE) {
        const i = off / PAGE_SIZE;
        if (!s.ept.get(i)) continue;
        const size = this.src.eptMappingSize(s.gpa + off);
        if (size === PMD_SIZE) this.hugeSplits++;
        else if (size === PUD_SIZE && off % PUD_SIZE === 0) this.hugeSplits += 1 + PUD_SIZE / PMD_SIZE;
      }
    }
    ns += this.hugeSplits * this.ns.hugeSplit;
    for (const b of this.blocks) {
      b.bmap.fill(1);
      this.dirtyPages += b.pages;
      for (let p = 0, n = 0; p < b.pages; p += n) {
        n = chunkPages(b, p);
        if (this.readKeys(b, p, n)) for (let i = 0; i < n; i++) noteSeen(b, p + i, this.keys[i]!);
        else if (!ramRuns.enabled || anyState(b, p, n, PAGE_LOGGED | PAGE_BACKED)) for (let i = 0; i < n; i++) noteSeen(b, p + i, 0);
      }
    }
    // ram_init_bitmaps syncs once. The walk above has just seen every page as the sync would, so (with no free
    // page hints, whose notifiers run around the sync) the sync can find nothing new: it is charged without
    // walking the page table a second time.
    ns += (this.opts.hints || !ramRuns.enabled ? this.sync() : this.sync(false)).ns;
    if (this.clearShift !== null) {
      // KVM_DIRTY_LOG_INITIALLY_SET: that first KVM_GET_DIRTY_LOG reported every page, none write-protected yet;
      // each clear chunk is cleared when the bulk stage takes its first page, or a free page hint covers it.
      for (const b of this.blocks) {
        const w = b.state32;
        for (let i = 0; i < w.length; i++) w[i]! |= UNCLEARED4;
        b.clearBmap!.fill(1);
      }
      this.opts.hints?.setFreePageHint?.((gpa, len) => this.freePageHint(gpa, len));
    }
    return ns;
  }

  /** Stop dirty logging (completion, cancel, failure). */
  stopDirtyLog(): void {
    this.dirtyLogging = false;
    this.opts.hints?.setFreePageHint?.(null);
  }

  /**
   * qemu_guest_free_page_hint for the guest's range [gpa, gpa + len): with a clear chunk (clearBitmapShift),
   * migration_clear_memory_region_dirty_bitmap_range clears every chunk the range touches that the last sync
   * left uncleared, before the hint drops the range's bits; so the guest's next write to a page it hinted, when
   * it reuses the page, is logged. (The bits themselves memtwin drops when it takes each page: isSkippable.)
   */
  freePageHint(gpa: number, len: number): void {
    const shift = this.clearShift;
    if (shift === null || !this.dirtyLogging) return;
    const chunk = 2 ** shift;
    for (let a = gpa - (gpa % PAGE_SIZE); a < gpa + len;) {
      const t = this.src.translate(a);
      if (!t) {
        a += PAGE_SIZE;
        continue;
      }
      const b = this.blocks.find((x) => x.block === t.block)!;
      const p = Math.floor(t.offset / PAGE_SIZE);
      const c = Math.floor(p / chunk);
      if (b.clearBmap![c]) this.clearChunk(b, c);
      // On to the next chunk, or the end of the memory slot's run of the block (the GPA after it may map elsewhere).
      const run = b.gpaRuns.find(([first, n]) => p >= first && p < first + n);
      a += (Math.min((c + 1) * chunk, run ? run[0] + run[1] : p + 1) - p) * PAGE_SIZE;
    }
  }

  /** Whether the guest page at gpa is tracked at 4K by dirty logging (its huge EPT mapping split). */
  isDirtyLogging(gpa: number): boolean {
    return this.dirtyLogging && this.src.slotOf(gpa) !== undefined;
  }

  /** KVM logged a guest write to [gpa, gpa + len) (the onGuestWrite hook); harvested at the next sync. */
  logWrite(gpa: number, len: number): void {
    if (!this.dirtyLogging || len <= 0) return;
    for (let a = gpa - (gpa % PAGE_SIZE); a < gpa + len; a += PAGE_SIZE) {
      const t = this.src.translate(a);
      if (!t) throw new RangeError(`GPA 0x${a.toString(16)} is not guest RAM`);
      const b = this.blocks.find((x) => x.block === t.block)!;
      b.state[Math.floor(t.offset / PAGE_SIZE)]! |= PAGE_LOGGED;
    }
  }

  /**
   * A guest store of `len` bytes at `hva` of the source VMM by vCPU
   * `vcpu`, reported by the workload: the dirty ring takes an entry for
   * the page (the ns its vCPU loses at a ring-full exit is returned) and
   * xbzrle notes the lines it changed. Dirty pages themselves are found
   * at the sync either way.
   */
  onGuestStore(vcpu: number, hva: number, len: number): number {
    if (!this.dirtyLogging) return 0;
    const b = this.blockOfHva(hva);
    if (!b) return 0;
    const off = hva - b.block.host;
    const page = this.ramPage(b, Math.floor(off / PAGE_SIZE));
    this.xbzrle?.store(page, off % PAGE_SIZE, len);
    const ring = this.dirtyRing;
    return ring && vcpu < ring.nrVcpus ? ring.push(vcpu, page, this.dirtyRingOwnOnly) : 0;
  }

  private lastStoreBlock: BlockState | null = null;
  private blockOfHva(hva: number): BlockState | undefined {
    const last = this.lastStoreBlock;
    if (last && hva >= last.block.host && hva < last.block.host + last.block.usedLength) return last;
    const b = this.blocks.find((x) => hva >= x.block.host && hva < x.block.host + x.block.usedLength);
    if (b) this.lastStoreBlock = b;
    return b;
  }

  /** The ram_addr_t page index of page p of block b (xbzrle's cache address, the dirty ring's GFN). */
  ramPage(b: BlockState, p: number): number {
    return b.block.offset / PAGE_SIZE + p;
  }

  /** Pages of ram_addr_t space the blocks span (sizes per-page arrays by ramPage). */
  get ramPages(): number {
    return this.blocks.reduce((m, b) => Math.max(m, this.ramPage(b, b.pages)), 0);
  }

  /**
   * migration_bitmap_sync_precopy: the precopy notifiers (the balloon's
   * free page hinting stops before the sync and starts again after it),
   * around migration_bitmap_sync, which harvests the dirty log into the
   * bitmaps: a page is dirty if it was logged or its content key changed
   * since the migration last saw it; hinted pages written are no longer
   * skippable.
   */
  sync(walk = true): SyncResult {
    this.opts.precopyNotify?.('before-bitmap-sync');
    const r = this.bitmapSync(walk);
    this.opts.precopyNotify?.('after-bitmap-sync');
    return r;
  }

  /** `walk` false: nothing changed since every page was last seen (setup's own walk), so only the cost is counted. */
  private bitmapSync(walk: boolean): SyncResult {
    let newDirty = 0;
    let pages = 0;
    this.syncLogged = 0;
    const { pfns } = this;
    const mem = this.k.mem;
    const mm = this.src.process.mm;
    for (const b of this.blocks) {
      pages += b.pages;
      const { state, state32, seen } = b;
      if (walk && !ramRuns.enabled) {
        // Page by page: each page's content key from its own page-table walk.
        for (let p = 0; p < b.pages; p++) {
          const key = this.keyOfFrame(followPage(mm, b.block.host + p * PAGE_SIZE));
          if (unchangedSinceSeen(b, p, key)) continue;
          newDirty += this.harvest(b, p, key);
        }
        continue;
      }
      for (let p0 = 0, n = 0; walk && p0 < b.pages; p0 += n) {
        n = chunkPages(b, p0);
        if (followPmdRange(mm, b.block.host + p0 * PAGE_SIZE, n, pfns) !== PMD_RANGE_PAGES) {
          // Nothing maps this 2M: every key is 0, so only pages logged or last seen backed changed.
          if (!anyState(b, p0, n, PAGE_LOGGED | PAGE_BACKED)) continue;
          for (let p = p0; p < p0 + n; p++)
            if (!unchangedSinceSeen(b, p, 0)) {
              newDirty += this.harvest(b, p, 0);
            }
          continue;
        }
        // unchangedSinceSeen on each page's content key (keyOfFrame), reading the section arrays of the frames
        // that follow each other (a THP's) directly, as readKeys does.
        for (let i = 0; i < n;) {
          const pfn = pfns[i]!;
          if (pfn < 0) {
            if (!unchangedSinceSeen(b, p0 + i, 0)) {
              newDirty += this.harvest(b, p0 + i, 0);
            }
            i++;
            continue;
          }
          const { token, flags } = mem.sec(pfn);
          const base = (pfn & SECTION_MASK) - i;
          // The frames that follow pfn in its section: pages [i, end).
          const limit = Math.min(n, PAGES_PER_SECTION - base);
          let end = i + 1;
          while (end < limit && pfns[end] === pfn + (end - i)) end++;
          for (; i < end; i++) {
            const p = p0 + i;
            // Four pages at once (the common case): none logged or last seen backed, all four frames zero.
            if ((p & 3) === 0 && i + 4 <= end && (state32[p >>> 2]! & LOGGED_OR_BACKED4) === 0) {
              const k = base + i;
              if (
                (token[k]! | token[k + 1]! | token[k + 2]! | token[k + 3]!) === 0 &&
                ((flags[k]! | flags[k + 1]! | flags[k + 2]! | flags[k + 3]!) & PG.nonzero) === 0
              ) {
                i += 3;
                continue;
              }
            }
            const t = token[base + i]!;
            const st = state[p]!;
            if (t === 0) {
              // key 0 unless the page holds non-zero bytes: changed if logged, or last seen backed
              if ((flags[base + i]! & PG.nonzero) === 0) {
                if ((st & (PAGE_LOGGED | PAGE_BACKED)) === 0) continue;
                newDirty += this.harvest(b, p, 0);
                continue;
              }
            }
            // key t + 1: changed if logged, or not last seen backed with this token
            if ((st & PAGE_LOGGED) === 0 && (st & PAGE_BACKED) !== 0 && seen[p] === t) continue;
            newDirty += this.harvest(b, p, t + 1);
          }
        }
      }
    }
    this.dirtySyncCount++;
    this.dirtyPagesPeriod += newDirty;
    // KVM_GET_DIRTY_LOG per memslot and KVM_CLEAR_DIRTY_LOG per page found dirty, or with the dirty ring every
    // ring reaped (kvm_dirty_ring_flush): the cost follows what was dirtied, not the guest's size.
    const ns = this.dirtyRing
      ? this.dirtyRing.flush(this.syncLogged)
      : this.src.slots.length * this.ns.dirtyLogIoctl + pages * this.ns.dirtySyncPerPage + this.syncLogged * this.ns.dirtyClearPerPage;
    this.syncNsTotal += ns;
    return { ns, newDirty };
  }

  /**
   * The sync found page p of block b changed since the migration last saw
   * it (KVM's log had it; its content key now `key`): seen now, no longer
   * skippable by a free page hint, and dirty in the bitmap. Returns 1 when
   * it was not dirty yet.
   */
  private harvest(b: BlockState, p: number, key: number): number {
    // Re-protected once (already dirty in the bitmap or not): a page reported again before its chunk's clear is not.
    if ((b.state[p]! & PAGE_UNCLEARED) === 0) this.syncLogged++;
    noteSeen(b, p, key);
    if (b.clearBmap) {
      // Reported by KVM_GET_DIRTY_LOG: in the log until its chunk is cleared.
      b.state[p]! |= PAGE_UNCLEARED;
      b.clearBmap[p >>> this.clearShift!] = 1;
    }
    if (this.opts.hints) {
      const gpa = gpaOfPage(b, p);
      if (gpa >= 0) this.opts.hints.markDirty(gpa, PAGE_SIZE);
    }
    if (b.bmap[p]) return 0;
    b.bmap[p] = 1;
    this.dirtyPages++;
    return 1;
  }

  /**
   * memory_region_clear_dirty_bitmap for clear chunk c of block b (KVM_CLEAR_DIRTY_LOG of the pages the last
   * sync reported there): each is write-protected again with what it holds now, so a write to it since the sync
   * is forgotten, and the next write is logged. Its cost is in the sync's (dirtyClearPerPage per page reported).
   */
  private clearChunk(b: BlockState, c: number): void {
    b.clearBmap![c] = 0;
    const first = c * 2 ** this.clearShift!;
    const end = Math.min(b.pages, first + 2 ** this.clearShift!);
    const { state, state32 } = b;
    const { keys } = this;
    for (let p = first, n = 0; p < end; p += n) {
      n = Math.min(chunkPages(b, p), end - p);
      if (!anyState(b, p, n, PAGE_UNCLEARED)) continue;
      if (!this.readKeys(b, p, n)) {
        // Nothing maps the run: every key is 0, so a page last seen zero and not logged is unchanged; four at once.
        for (let i = p; i < p + n;) {
          if ((i & 3) === 0 && i + 4 <= p + n && (state32[i >>> 2]! & LOGGED_OR_BACKED4) === 0) {
            state32[i >>> 2]! &= ~UNCLEARED4;
            i += 4;
            continue;
          }
          if (state[i]! & PAGE_UNCLEARED) noteSeen(b, i, 0);
          i++;
        }
        continue;
      }
      for (let i = 0; i < n; i++) {
        const q = p + i;
        const st = state[q]!;
        if ((st & PAGE_UNCLEARED) === 0) continue;
        // Unchanged since the sync: only the bit goes; else what it holds now is seen (the write is forgotten).
        if (unchangedSinceSeen(b, q, keys[i]!)) state[q] = st & ~PAGE_UNCLEARED;
        else noteSeen(b, q, keys[i]!);
      }
    }
  }

  /** ram_bytes_remaining: dirty pages not sent yet. */
  get remainingBytes(): number {
    return this.dirtyPages * PAGE_SIZE;
  }

  // --- sending ---------------------------------------------------------------------

  /**
   * Send dirty pages from where the last step stopped (ram_find_and_save_block
   * wraps around the blocks), until the bytes reach `maxBytes`, the step's
   * time (max of source CPU, wire time at `rateBps`, destination CPU)
   * reaches `maxNs`, or no dirty page is left.
   */
  send(maxBytes: number, maxNs: number, rateBps: number): SendResult {
    const r: SendResult = { bytes: 0, pages: 0, srcNs: 0, dstNs: 0, hostPages: 0, midHostPage: false };
    const wireNs = (): number => (r.bytes * 1e9) / rateBps;
    // The step's reads are one bandwidth flow per stretch on one node (batchReads), as postcopy's chunks are.
    this.batchReads(true);
    while (this.dirtyPages > 0 && r.bytes < maxBytes && Math.max(r.srcNs, r.dstNs, wireNs()) < maxNs) {
      const p = this.nextDirty();
      const b = this.nextBlock;
      if (this.zeroOnBothSides(b, p)) {
        this.sendZeroRun(b, p, r, maxBytes, maxNs, rateBps);
        continue;
      }
      if (this.sendZeroFrames(b, p, r, maxBytes, maxNs, rateBps)) continue;
      this.beginPage(b, p, r);
      this.sendPage(b, p, r);
    }
    this.batchReads(false);
    const b = this.hostPageBlock;
    if (b && r.pages > 0) {
      const next = b.bmap.indexOf(1, this.cursorBlock === this.blocks.indexOf(b) ? this.cursorPage : b.pages);
      r.midHostPage = next >= 0 && next < this.hostPageFirst + b.block.pageSize / PAGE_SIZE;
      r.hostPageSize = b.block.pageSize;
    }
    this.bytes += r.bytes;
    return r;
  }

  /**
   * Take dirty page p of block b to send (migration_bitmap_clear_dirty): its clear chunk is cleared first if
   * the last sync left it uncleared; a host page begun counts in `r.hostPages`; its bit is cleared.
   */
  private beginPage(b: BlockState, p: number, r: SendResult): void {
    if (b.clearBmap?.[p >>> this.clearShift!]) this.clearChunk(b, p >>> this.clearShift!);
    const first = p - (p % (b.block.pageSize / PAGE_SIZE));
    if (b !== this.hostPageBlock || first !== this.hostPageFirst) {
      r.hostPages!++;
      this.hostPageBlock = b;
      this.hostPageFirst = first;
    }
    b.bmap[p] = 0;
    this.dirtyPages--;
  }

  /**
   * Whether page p, and the rest of its 2M, is the huge zero page on both
   * sides with no free page hints to consult and zero-page detection on:
   * each such page goes as a zero page without a fault on either side, so
   * sendZeroRun can take the run without a page-table walk per page.
   */
  private zeroOnBothSides(b: BlockState, p: number): boolean {
    if (!ramRuns.enabled || this.opts.hints || !this.opts.zeroPageDetection || this.xbzrle) return false;
    // n = 0: what maps each side's 2M, without reading its pages.
    return (
      followPmdRange(this.src.process.mm, b.block.host + p * PAGE_SIZE, 0, this.pfns) === PMD_RANGE_ZERO &&
      followPmdRange(this.dst.process.mm, b.dst.host + p * PAGE_SIZE, 0, this.dstPfns) === PMD_RANGE_ZERO
    );
  }

  /**
   * The dirty pages from p to the end of its 2M run (zeroOnBothSides), sent
   * as the per-page path (beginPage, readPageCode, then loadZeroPage) sends
   * them: a zero-page marker each, the zero check on both sides, no fault;
   * the step's limits are checked before each page, as in send(). The
   * per-page steps are written out here on locals, for speed.
   */
  private sendZeroRun(b: BlockState, p: number, r: SendResult, maxBytes: number, maxNs: number, rateBps: number): void {
    const end = p + chunkPagesBoth(b, p);
    const perHostPage = b.block.pageSize / PAGE_SIZE;
    const zeroCheck = this.ns.zeroCheck;
    const sendPerByte = this.ns.socketSend / PAGE_SIZE;
    const recvPerByte = this.ns.socketRecv / PAGE_SIZE;
    const { bmap, clearBmap } = b;
    const shift = this.clearShift!;
    if (clearBmap?.[p >>> shift]) this.clearChunk(b, p >>> shift);
    let bytes = r.bytes;
    let srcNs = r.srcNs;
    let dstNs = r.dstNs;
    let hostPages = r.hostPages!;
    let dirty = this.dirtyPages;
    let q = p;
    for (; q < end && bmap[q]; q++) {
      if (q > p && !(dirty > 0 && bytes < maxBytes && Math.max(srcNs, dstNs, (bytes * 1e9) / rateBps) < maxNs)) break;
      if (clearBmap?.[q >>> shift]) break; // a clear chunk to clear first: send() goes on from q
      const first = q - (q % perHostPage);
      if (b !== this.hostPageBlock || first !== this.hostPageFirst) {
        hostPages++;
        this.hostPageBlock = b;
        this.hostPageFirst = first;
      }
      bmap[q] = 0;
      dirty--;
      const n = PAGE_HEADER_BYTES + (this.lastSentBlock === b ? 0 : 1 + b.block.idstr.length) + 1;
      bytes += n;
      this.lastSentBlock = b;
      srcNs += zeroCheck + n * sendPerByte;
      dstNs += zeroCheck + n * recvPerByte;
      sentSeen(b, q, 0);
    }
    const sent = q - p;
    this.duplicate += sent;
    r.pages += sent;
    r.bytes = bytes;
    r.srcNs = srcNs;
    r.dstNs = dstNs;
    r.hostPages = hostPages;
    this.dirtyPages = dirty;
    this.cursorPage = q;
  }

  /**
   * The dirty pages from p on (at most ZERO_FRAMES_WINDOW, inside one 2M
   * of both sides) that hold zeros on the source, in frames (a THP's) or
   * the zero page, and whose destination page is mapped and zero already:
   * each goes as a zero page exactly as beginPage and sendPage take it
   * (the source's read and zero check priced by readNs, the destination's
   * check finding zero and writing nothing), without a page-table walk on
   * either side per page. The step's limits are checked before each page
   * after the first, as in send(). Returns the pages taken: 0 when page p
   * is not such a page (it goes page by page).
   */
  private sendZeroFrames(b: BlockState, p: number, r: SendResult, maxBytes: number, maxNs: number, rateBps: number): number {
    if (!ramRuns.enabled || this.opts.hints || !this.opts.zeroPageDetection || this.xbzrle) return 0;
    const n = Math.min(chunkPagesBoth(b, p), ZERO_FRAMES_WINDOW);
    const { clearBmap } = b;
    const shift = this.clearShift!;
    // beginPage's clear first: clearChunk's page-table reads use the scratch arrays read below.
    if (clearBmap?.[p >>> shift]) this.clearChunk(b, p >>> shift);
    const { pfns, dstPfns } = this;
    const src = followPmdRange(this.src.process.mm, b.block.host + p * PAGE_SIZE, n, pfns);
    if (src === PMD_RANGE_NONE) return 0; // never backed: the read faults (readPageCode)
    const dst = followPmdRange(this.dst.process.mm, b.dst.host + p * PAGE_SIZE, n, dstPfns);
    if (dst === PMD_RANGE_NONE) return 0; // the destination's check faults (loadZeroPage)
    if (!this.zeroSrc(pfns[0]!) || !this.zeroDst(dstPfns[0]!)) return 0;
    const perHostPage = b.block.pageSize / PAGE_SIZE;
    const zeroCheck = this.ns.zeroCheck;
    const { bmap } = b;
    let q = p;
    for (let i = 0; i < n && bmap[q]; i++, q++) {
      if (i > 0) {
        if (!(this.dirtyPages > 0 && r.bytes < maxBytes && Math.max(r.srcNs, r.dstNs, (r.bytes * 1e9) / rateBps) < maxNs)) break;
        if (!this.zeroSrc(pfns[i]!) || !this.zeroDst(dstPfns[i]!)) break;
        if (clearBmap?.[q >>> shift]) break; // a clear chunk to clear first: send() goes on from q
      }
      const pfn = pfns[i]!;
      // beginPage
      const first = q - (q % perHostPage);
      if (b !== this.hostPageBlock || first !== this.hostPageFirst) {
        r.hostPages!++;
        this.hostPageBlock = b;
        this.hostPageFirst = first;
      }
      bmap[q] = 0;
      this.dirtyPages--;
      // readPageCode: a zero page's marker, its read and zero check
      const bytes = PAGE_HEADER_BYTES + (this.lastSentBlock === b ? 0 : 1 + b.block.idstr.length) + 1;
      this.lastSentBlock = b;
      const at = this.k.clock.now() + r.srcNs;
      r.srcNs += this.readNs(pfn, zeroCheck, at);
      this.duplicate++;
      r.bytes += bytes;
      r.srcNs += this.socketSendNs(bytes);
      this.lastPageBytes = bytes;
      r.pages++;
      sentSeen(b, q, this.keyOfFrame(pfn));
      this.lastDecodeNs = undefined;
      // sendPage's destination: the socket, the zero check (loadPage finds the page zero: 0 ns)
      r.dstNs += this.socketRecvNs(bytes) + 0 + zeroCheck;
    }
    this.cursorPage = q;
    return q - p;
  }

  /** A source frame (or the zero page) holding zeros as readPageCode judges it. */
  private zeroSrc(pfn: number): boolean {
    return pfn === -1 || (pfn >= 0 && (this.k.mem.flags(pfn) & PG.nonzero) === 0 && (this.k.mem.token(pfn) & 0xff) === 0);
  }

  /** A destination page mapped and zero as loadZeroPage's check (pageByte) finds it: no write, no fault. */
  private zeroDst(pfn: number): boolean {
    return pfn === -1 || (pfn >= 0 && (this.dk.mem.token(pfn) & 0xff) === 0);
  }

  /**
   * With multifd (multifd.ts), ram_find_and_save_block's scan hands pages
   * to multifd_queue_page: the next dirty pages from the cursor, all of one
   * RAM block (a block change sends the packet queued), at most `max`.
   * Each is read as readPageCode does (hints, the zero page faulted in) and
   * its bit cleared; its bytes are the channel's. With `mainZero`
   * (zero-page-detection legacy) the migration thread finds zero pages
   * itself and sends them on the main channel as RAM_SAVE_FLAG_ZERO (its
   * bytes and check in `r`), as QEMU before 9.0 did; otherwise (multifd)
   * the sender thread detects them and they travel in the packet as
   * offsets only. Host pages begun go in `r.hostPages`.
   */
  takeMultifdPages(max: number, r: SendResult, mainZero: boolean): { block: BlockState; pages: MultifdPage[] } {
    const pages: MultifdPage[] = [];
    let block: BlockState | null = null;
    while (this.dirtyPages > 0 && pages.length < max) {
      const p = this.nextDirty();
      const b = this.nextBlock;
      if (block && b !== block) {
        this.cursorPage = p; // not taken: the next packet starts here
        break;
      }
      block = b;
      this.beginPage(b, p, r);
      const code = this.readPageCode(b, p, r, false);
      if (code === PAGE_NOT_SENT) continue;
      const zero = (code & PAGE_SENT_ZERO) !== 0;
      if (zero && mainZero) {
        // save_zero_page on the main channel: its header, one byte, and buffer_is_zero on the migration thread.
        const n = PAGE_HEADER_BYTES + (this.lastSentBlock === b ? 0 : 1 + b.block.idstr.length) + 1;
        r.bytes += n;
        this.lastSentBlock = b;
        r.srcNs += this.ns.zeroCheck + this.socketSendNs(n);
        r.dstNs += this.loadPage(b, p, true, 0) + this.ns.zeroCheck + this.socketRecvNs(n);
        continue;
      }
      pages.push({ p, zero, byte: code & 0xff, empty: (code & PAGE_EMPTY) !== 0 });
    }
    this.bytes += r.bytes;
    return { block: block ?? this.blocks[0]!, pages };
  }

  /** The stream's end-of-section marker (RAM_SAVE_FLAG_EOS) after each ram_save_iterate / ram_save_complete. */
  sendEos(): number {
    this.bytes += STREAM_MARKER_BYTES;
    return STREAM_MARKER_BYTES;
  }

  /** Bytes of ram_save_setup: RAM_SAVE_FLAG_MEM_SIZE, then each block's idstr and length, then EOS. */
  setupBytes(): number {
    let n = 8;
    for (const b of this.blocks) n += 1 + b.block.idstr.length + 8;
    n += STREAM_MARKER_BYTES;
    this.bytes += n;
    return n;
  }

  /** The next dirty page from the cursor (there is one: dirtyPages > 0); its block in `nextBlock`. */
  private nextDirty(): number {
    for (;;) {
      const b = this.blocks[this.cursorBlock]!;
      const i = b.bmap.indexOf(1, this.cursorPage);
      if (i >= 0) {
        this.cursorPage = i + 1;
        this.nextBlock = b;
        return i;
      }
      this.cursorBlock = (this.cursorBlock + 1) % this.blocks.length;
      this.cursorPage = 0;
      // find_dirty_block: past the last block the round is complete, and xbzrle starts.
      if (this.cursorBlock === 0 && this.xbzrle) this.xbzrle.started = true;
    }
  }

  /**
   * One page on the main channel: the source's side (readPageCode), then the
   * destination's: its bytes read from the socket, then the zero check, the
   * xbzrle decode or the copy out of the QEMUFile's buffer, and the fault.
   */
  private sendPage(b: BlockState, p: number, r: SendResult): void {
    const page = this.readPageCode(b, p, r);
    if (page === PAGE_NOT_SENT) return;
    const zero = (page & PAGE_SENT_ZERO) !== 0;
    r.dstNs +=
      this.socketRecvNs(this.lastPageBytes) +
      this.loadPage(b, p, zero, page & 0xff) +
      (zero ? this.ns.zeroCheck : (this.lastDecodeNs ?? this.ns.pageCopy));
  }

  /** The sending thread's socket time for `bytes` of stream (tcp_send_4k per 4K). */
  socketSendNs(bytes: number): number {
    return (bytes * this.ns.socketSend) / PAGE_SIZE;
  }

  /** The receiving thread's socket time for `bytes` of stream (tcp_recv_4k per 4K). */
  socketRecvNs(bytes: number): number {
    return (bytes * this.ns.socketRecv) / PAGE_SIZE;
  }

  /**
   * The destination takes page `p` of block `b` (ram_load_precopy, or a
   * multifd receiver thread): a zero page is cleared only if it is not zero
   * already (ram_handle_zero), a normal page written. Returns the
   * destination's fault ns; the copy or check itself is the caller's to
   * charge (it differs with xbzrle and multifd compression).
   */
  loadPage(b: BlockState, p: number, zero: boolean, byte: number): number {
    this.dstHva = b.dst.host + p * PAGE_SIZE;
    const dt = this.dstTime;
    dt.ns = 0;
    if (zero) this.dk.runAsTask(dt, this.loadZeroPage);
    else {
      this.dstByte = byte;
      this.dk.runAsTask(dt, this.loadNormalPage);
    }
    return dt.ns;
  }

  /** ram_handle_zero: clear the destination page only if it is not zero already. */
  private readonly loadZeroPage = (): void => {
    if (this.pageByte(this.dstHva, true) !== 0) this.dk.access(this.dstThread, this.dstHva, 1, 1, true, 0);
  };

  /** A normal page's contents written into the destination's RAM. */
  private readonly loadNormalPage = (): void => {
    this.dk.access(this.dstThread, this.dstHva, 1, 1, true, this.dstByte);
  };

  /**
   * The source side of sending one dirty 4K page (its bit already cleared):
   * skipped by a free page hint (undefined), or read (faulting in the zero
   * page if the host never backed it) and put in the stream as a zero-page
   * marker or with its contents; counts, bytes and source time go into `r`.
   * Returns PAGE_NOT_SENT, or the page's first byte, with PAGE_SENT_ZERO
   * when it went as a zero page. With `stream` false it is a multifd
   * sender thread's page: counted, its bytes and time left to the channel,
   * and PAGE_EMPTY set when it is all zeros (whether or not it was sent as
   * a zero page).
   */
  readPageCode(b: BlockState, p: number, r: SendResult, stream = true): number {
    const hints = this.opts.hints;
    const gpa = hints ? gpaOfPage(b, p) : -1;
    if (hints && gpa >= 0 && hints.isSkippable(gpa)) {
      // The hint cleared the bit (qemu_guest_free_page_hint): not sent now. A write since the migration last saw
      // the page is left unseen, so bitmapSync finds it and a later pass sends the page.
      b.state[p]! |= PAGE_SKIPPED;
      this.skippedByHints++;
      return PAGE_NOT_SENT;
    }
    const hva = b.block.host + p * PAGE_SIZE;
    const mm = this.src.process.mm;
    let pfn = followPage(mm, hva);
    if (pfn === -2) {
      // QEMU reads the page: a never-backed page faults in the zero page.
      const t = { ns: 0 };
      this.k.runAsTask(t, () => this.k.access(this.srcThread, hva, 1, 1, false, 0));
      r.srcNs += t.ns;
      pfn = followPage(mm, hva);
    }
    const zero = pfn < 0 || ((this.k.mem.flags(pfn) & PG.nonzero) === 0 && (this.k.mem.token(pfn) & 0xff) === 0);
    const sentZero = zero && this.opts.zeroPageDetection;
    if (!stream) {
      // A multifd sender thread's page: its bytes, its check or copy are the channel's (multifd.ts).
      if (sentZero) this.duplicate++;
      else this.normal++;
      r.pages++;
      sentSeen(b, p, this.keyOfFrame(pfn));
      return (sentZero ? PAGE_SENT_ZERO : 0) | (zero ? PAGE_EMPTY : 0) | (pfn < 0 ? 0 : this.k.mem.token(pfn) & 0xff);
    }
    const at = this.k.clock.now() + r.srcNs;
    const key = this.keyOfFrame(pfn); // pfn: what maps the page now (after the read fault)
    const xb = this.xbzrle?.send(this.ramPage(b, p), sentZero, this.dirtySyncCount, this.lastStage, key);
    let decodeNs: number | undefined;
    if (xb) r.srcNs += xb.srcNs;
    if (xb?.kind === 'skip') {
      // save_xbzrle_page: the page holds what it was last sent with (written before that send, so the sync found
      // it dirty again): nothing goes in the stream, and ram_save_target_page counts no page.
      sentSeen(b, p, key);
      return PAGE_NOT_SENT;
    }
    const header = PAGE_HEADER_BYTES + (this.lastSentBlock === b ? 0 : 1 + b.block.idstr.length);
    this.lastSentBlock = b;
    let bytes: number;
    if (sentZero) {
      bytes = header + 1;
      r.srcNs += this.readNs(pfn, this.ns.zeroCheck, at);
      this.duplicate++;
    } else if (xb?.kind === 'xbzrle') {
      bytes = header + xb.bytes;
      decodeNs = xb.dstNs;
      this.xbzrlePages++;
    } else {
      bytes = header + PAGE_SIZE;
      // The socket's copy reads the page (readNs prices that read as a copy of it, waiting for its node); QEMU's
      // own copy into the QEMUFile's buffer only when xbzrle sends the cache's page (not async, last stage aside).
      const copy = xb && !this.lastStage ? this.ns.pageCopy : 0;
      r.srcNs += this.readNs(pfn, this.ns.pageCopy, at) - this.ns.pageCopy + copy;
      this.normal++;
    }
    r.bytes += bytes;
    r.srcNs += this.socketSendNs(bytes);
    this.lastPageBytes = bytes;
    r.pages++;
    sentSeen(b, p, key);
    this.lastDecodeNs = decodeNs;
    return (sentZero ? PAGE_SENT_ZERO : 0) | (pfn < 0 ? 0 : this.k.mem.token(pfn) & 0xff);
  }

  /**
   * The migration thread reading a 4K page at `at` (its copy into the
   * stream, or the zero check): `ns` on an idle node; with a bandwidth
   * model (src/sim/membw.ts) it waits for the page's node (and the
   * interconnect) and its 4K are registered there. The zero page (pfn < 0)
   * is in every cache.
   */
  private readNs(pfn: number, ns: number, at: number): number {
    const bw = this.k.membw;
    if (!bw || pfn < 0) return ns;
    const node = this.k.phys.nodeOfPfn(pfn);
    const cpu = this.k.cpuToNode(this.srcThread.cpu);
    const m = bw.multiplier(cpu, node, this.k.clock.now());
    if (this.readRun.on) return this.batchedRead(bw, node, cpu, m, ns, at);
    const total = ns + Math.round(ns * (m - 1));
    // One class object and its array, reused for every page (flow() copies what it keeps).
    const c = this.readClass;
    c.node = node;
    c.bytes = PAGE_SIZE;
    c.memNs = ns;
    c.seenNs = ns * m;
    bw.flow(at, total, cpu, this.readClasses, true);
    return total;
  }

  private readonly readClass: FlowClass = { node: 0, bytes: PAGE_SIZE, memNs: 0, seenNs: 0 };
  private readonly readClasses: readonly FlowClass[] = [this.readClass];

  /**
   * The reads of a batch (batchReads): the pages the migration thread reads
   * one after another for one write to its channel, with its socket writes
   * between them, are one bandwidth flow per stretch on one node, from the
   * first page's read to the last one's end, with their bytes, idle DRAM
   * time and that time as it ran summed: what a task copying page after
   * page is (MemBandwidth.flow), not one flow per page. Each page costs
   * what it does alone (the multiplier is the same for all: the clock does
   * not move while the batch is taken).
   */
  private readonly readRun = { on: false, node: -1, cpu: 0, at: 0, end: 0, bytes: 0, memNs: 0, seenNs: 0 };

  /**
   * From batchReads(true) to batchReads(false) the migration thread's
   * reads are batched (readRun), and registered at the end: a precopy
   * step (send) and a postcopy chunk. multifd's sender threads read in
   * their channels (multifd.ts).
   */
  batchReads(on: boolean): void {
    const bw = this.k.membw;
    if (bw) this.flushReads(bw);
    this.readRun.on = on;
  }

  /** Register the batched reads' flow, if any. */
  private flushReads(bw: NonNullable<Kernel['membw']>): void {
    const run = this.readRun;
    if (run.node < 0) return;
    const c = this.readClass;
    c.node = run.node;
    c.bytes = run.bytes;
    c.memNs = run.memNs;
    c.seenNs = run.seenNs;
    bw.flow(run.at, run.end - run.at, run.cpu, this.readClasses, true);
    run.node = -1;
    run.end = 0;
  }

  // --- postcopy (postcopy.ts drives these) -------------------------------------------

  /**
   * postcopy_chunk_hostpages: on blocks backed by huge pages, a host page
   * with any dirty 4K page is dirty whole (it is discarded on the
   * destination and sent again whole). Returns the pages newly dirtied.
   */
  chunkHostPages(): number {
    let added = 0;
    for (const b of this.blocks) {
      const n = b.block.pageSize / PAGE_SIZE;
      if (n === 1) continue;
      for (let h = 0; h < b.pages; h += n) {
        const i = b.bmap.indexOf(1, h);
        if (i < 0) break;
        if (i >= h + n) {
          h = i - (i % n) - n;
          continue;
        }
        for (let p = h; p < h + n; p++)
          if (!b.bmap[p]) {
            b.bmap[p] = 1;
            added++;
          }
      }
    }
    this.dirtyPages += added;
    return added;
  }

  /** Whether any 4K page of the host page starting at page `p` of block `bi` is dirty. */
  hostPageDirty(bi: number, p: number): boolean {
    const b = this.blocks[bi]!;
    const n = b.block.pageSize / PAGE_SIZE;
    const i = b.bmap.indexOf(1, p);
    return i >= 0 && i < p + n;
  }

  /** Pages of one source page-table lookup from page p of block bi: to the end of its 2M, or of the block. */
  runPages(bi: number, p: number): number {
    return chunkPages(this.blocks[bi]!, p);
  }

  /**
   * takePageCode for the `n` pages from 4K page `p` of block `bi` (all dirty, inside one runPages run) with one
   * page-table lookup, each page's code into codes[0..]: the same counts, bytes, times (summed in the same
   * order) and seen state as taking them one by one. Before each page after the first it stops once `r.bytes`
   * reaches `maxBytes` or `r.pages` `maxPages` (the postcopy stream's limits). A page nothing maps is faulted
   * in as readPageCode does, in its place in the run. Returns the pages taken: 0 where the run must go page by
   * page (free page hints or xbzrle to consult).
   */
  takeRunCodes(bi: number, p: number, n: number, r: SendResult, maxBytes: number, maxPages: number, codes: Int32Array): number {
    if (this.opts.hints || this.xbzrle || !ramRuns.enabled) return 0;
    const b = this.blocks[bi]!;
    const pfns = this.pfns;
    const mm = this.src.process.mm;
    const mem = this.k.mem;
    const { bmap, state, seen } = b;
    const detect = this.opts.zeroPageDetection;
    const { zeroCheck, pageCopy } = this.ns;
    const now = this.k.clock.now();
    this.runRead.node = -1;
    // r's figures and the counters in locals, written back once (the same sums, in the same order).
    let { bytes: rBytes, pages: rPages, srcNs } = r;
    let duplicate = 0;
    let normal = 0;
    // The PTEs are read a piece at a time, as far as the stream's limits can reach at a full page each (and one
    // more), not to the 2M's end: a chunk stops most runs long before it. pfns[i - looked] is page p + i's frame.
    let looked = 0;
    let lookedEnd = 0;
    // The section of the frames last read (a run's frames follow each other): its token and flags arrays.
    let secNo = -1;
    let token32: Uint32Array | null = null;
    let flags32: Uint32Array | null = null;
    let header = 0;
    let i = 0;
    for (; i < n && (i === 0 || (rBytes < maxBytes && rPages < maxPages)); i++) {
      const q = p + i;
      if (i === lookedEnd) {
        const m = Math.min(n - i, Math.max(1, Math.ceil((maxBytes - rBytes) / PAGE_SIZE) + 1));
        // Nothing maps the 2M: each page is faulted in as it is read (below).
        if (followPmdRange(mm, b.block.host + q * PAGE_SIZE, m, pfns) === PMD_RANGE_NONE) pfns.fill(-2, 0, m);
        looked = i;
        lookedEnd = i + m;
      }
      let pfn = pfns[i - looked]!;
      if (pfn === -2) {
        // readPageCode's read: a never-backed page faults in (the zero page), its time the migration thread's,
        // unless a fault of this run mapped it meanwhile (a huge zero page).
        const hva = b.block.host + q * PAGE_SIZE;
        pfn = followPage(mm, hva);
        const ns = pfn === -2 ? readFaultNonePte(this.k, this.srcThread, hva) : -1;
        if (ns >= 0) {
          // The fault in a PTE table an earlier page's fault made: the zero page, the fault's time the thread's.
          srcNs += 0 + ns;
          pfn = -1;
        } else if (pfn === -2) {
          const t = { ns: 0 };
          this.k.runAsTask(t, () => this.k.access(this.srcThread, hva, 1, 1, false, 0));
          srcNs += t.ns;
          pfn = followPage(mm, hva);
          this.runRead.node = -1; // the fault may have moved what runReadNs remembers
          secNo = -1; // ... and the frames' sections
        }
      }
      bmap[q] = 0;
      // readPageCode (stream, no hints, no xbzrle) on the frame looked up above.
      let token = 0;
      let nonzero = 0;
      if (pfn >= 0) {
        if (pfn >>> SECTION_SHIFT !== secNo) {
          const sec = mem.sec(pfn);
          secNo = pfn >>> SECTION_SHIFT;
          token32 = sec.token;
          flags32 = sec.flags;
        }
        token = token32![pfn & SECTION_MASK]!;
        nonzero = flags32![pfn & SECTION_MASK]! & PG.nonzero;
      }
      const zero = pfn < 0 || (nonzero === 0 && (token & 0xff) === 0);
      const sentZero = zero && detect;
      if (i === 0) {
        header = PAGE_HEADER_BYTES + (this.lastSentBlock === b ? 0 : 1 + b.block.idstr.length);
        this.lastSentBlock = b;
      } else header = PAGE_HEADER_BYTES;
      const at = now + srcNs;
      let bytes: number;
      if (sentZero) {
        bytes = header + 1;
        srcNs += this.runReadNs(pfn, zeroCheck, at);
        duplicate++;
      } else {
        bytes = header + PAGE_SIZE;
        srcNs += this.runReadNs(pfn, pageCopy, at) - pageCopy + 0;
        normal++;
      }
      rBytes += bytes;
      srcNs += this.socketSendNs(bytes);
      this.lastPageBytes = bytes;
      rPages++;
      // noteSeen(b, q, keyOfFrame(pfn)) with the skip cleared.
      const key = pfn < 0 || (token === 0 && nonzero === 0) ? 0 : token + 1;
      state[q] = key ? PAGE_BACKED : 0;
      seen[q] = key ? key - 1 : 0;
      codes[i] = (sentZero ? PAGE_SENT_ZERO : 0) | (pfn < 0 ? 0 : token & 0xff);
    }
    this.dirtyPages -= i;
    this.duplicate += duplicate;
    this.normal += normal;
    r.bytes = rBytes;
    r.pages = rPages;
    r.srcNs = srcNs;
    if (i === 0) return 0;
    this.lastDecodeNs = undefined;
    this.cursorBlock = bi;
    this.cursorPage = p + i;
    return i;
  }

  /**
   * readNs for a page of takeRunCodes' run, the same answer and the same
   * batched flow, with the load multiplier looked up once per node of the
   * run rather than per page: the clock does not move while a run is taken,
   * and nothing in between solves a window (a read fault clears what is
   * remembered, see takeRunCodes). Page by page (no bandwidth model, the
   * zero page, reads not batched): readNs itself.
   */
  private runReadNs(pfn: number, ns: number, at: number): number {
    const bw = this.k.membw;
    const run = this.readRun;
    if (!bw || pfn < 0 || !run.on) return this.readNs(pfn, ns, at);
    const node = this.k.phys.nodeOfPfn(pfn);
    const rr = this.runRead;
    const now = this.k.clock.now();
    if (rr.node !== node || rr.now !== now) {
      rr.cpu = this.k.cpuToNode(this.srcThread.cpu);
      rr.m = bw.multiplier(rr.cpu, node, now);
      rr.node = node;
      rr.now = now;
    }
    return this.batchedRead(bw, node, rr.cpu, rr.m, ns, at);
  }

  /**
   * readNs with its reads batched (batchReads): the page read at `at` from
   * CPU node `cpu` on node `node`, at load multiplier `m`, joins the run's
   * flow (a page on another node, or from another CPU node, starts one).
   * Returns its time.
   */
  private batchedRead(bw: NonNullable<Kernel['membw']>, node: number, cpu: number, m: number, ns: number, at: number): number {
    const total = ns + Math.round(ns * (m - 1));
    const run = this.readRun;
    if (run.node !== node || run.cpu !== cpu) {
      this.flushReads(bw);
      run.node = node;
      run.cpu = cpu;
      run.at = at;
      run.bytes = 0;
      run.memNs = 0;
      run.seenNs = 0;
    }
    run.end = Math.max(run.end, at + total);
    run.bytes += PAGE_SIZE;
    run.memNs += ns;
    run.seenNs += ns * m;
    return total;
  }

  /** What runReadNs remembers: the node, the clock's time, the migration thread's CPU node, the multiplier. */
  private readonly runRead = { node: -1, now: -1, cpu: 0, m: 1 };

  /**
   * destByte for pages [p, p + n) of block b with one page-table lookup, into out[0..]: as many as one lookup
   * reaches (to the end of the destination's 2M), which it returns.
   */
  destBytes(b: BlockState, p: number, n: number, out: Int32Array): number {
    const m = Math.min(n, 512 - ((b.dst.host / PAGE_SIZE + p) % 512));
    const pfns = this.dstPfns;
    if (followPmdRange(this.dst.process.mm, b.dst.host + p * PAGE_SIZE, m, pfns) !== PMD_RANGE_PAGES) {
      out.fill(0, 0, m);
      return m;
    }
    const mem = this.dk.mem;
    // The section of the frames last read (placed runs' frames mostly follow each other): its token array.
    let secNo = -1;
    let token: Uint32Array | null = null;
    for (let i = 0; i < m; i++) {
      const pfn = pfns[i]!;
      if (pfn < 0) {
        out[i] = 0;
        continue;
      }
      if (pfn >>> SECTION_SHIFT !== secNo) {
        secNo = pfn >>> SECTION_SHIFT;
        token = mem.sec(pfn).token;
      }
      out[i] = token![pfn & SECTION_MASK]! & 0xff;
    }
    return m;
  }

  /** Mark a 4K page dirty again (its copy was lost in flight). */
  redirtyPage(bi: number, p: number): void {
    const b = this.blocks[bi]!;
    if (b.bmap[p]) return;
    b.bmap[p] = 1;
    this.dirtyPages++;
  }

  /**
   * The next host page with dirty 4K pages from the background cursor
   * (ram_find_and_save_block's scan, host-page aligned): its first 4K page,
   * its block's index in `hostPageBlockIndex`; -1 when none is left.
   */
  nextDirtyHostPage(): number {
    if (this.dirtyPages === 0) return -1;
    const p = this.nextDirty();
    const b = this.nextBlock;
    const n = b.block.pageSize / PAGE_SIZE;
    this.cursorPage = p - (p % n) + n;
    this.hostPageBlockIndex = this.blocks.indexOf(b);
    return p - (p % n);
  }

  /** The block index of the host page nextDirtyHostPage found. */
  hostPageBlockIndex = 0;

  /**
   * get_queued_page: once a page the destination asked for is taken, the
   * background scan continues from it ("the guest is likely to want other
   * pages near to the page it just requested"): from 4K page `p` of block
   * `bi` on.
   */
  continueFrom(bi: number, p: number): void {
    this.cursorBlock = bi;
    this.cursorPage = p;
  }

  /**
   * Send 4K page `p` of block `bi` if it is dirty (clearing its bit): its
   * readPageCode answer, PAGE_NOT_SENT if it was clean or skipped. Bytes
   * and source time go into `r`; the caller adds `r.bytes` to `bytes`.
   */
  takePageCode(bi: number, p: number, r: SendResult): number {
    const b = this.blocks[bi]!;
    if (!b.bmap[p]) return PAGE_NOT_SENT;
    b.bmap[p] = 0;
    this.dirtyPages--;
    return this.readPageCode(b, p, r);
  }

  /** First byte of the destination page at hva (0 if zero or never backed); `fault` reads it in as QEMU's read does. */
  private pageByte(hva: number, fault: boolean): number {
    let pfn = followPage(this.dst.process.mm, hva);
    if (pfn === -2 && fault) {
      this.dk.access(this.dstThread, hva, 1, 1, false, 0);
      pfn = followPage(this.dst.process.mm, hva);
    }
    return pfn < 0 ? 0 : this.dk.mem.token(pfn) & 0xff;
  }

  /** First byte of the destination's 4K page `p` of block `b` (0 if zero or never backed). */
  destByte(b: BlockState, p: number): number {
    return this.pageByte(b.dst.host + p * PAGE_SIZE, false);
  }

  /** First byte of the source's 4K page `p` of block `b` (0 if zero or never backed). */
  sourceByte(b: BlockState, p: number): number {
    const pfn = followPage(this.src.process.mm, b.block.host + p * PAGE_SIZE);
    return pfn < 0 ? 0 : this.k.mem.token(pfn) & 0xff;
  }

  /**
   * The content key of what maps a source page: 0 if nothing, the zero
   * page, or a frame nothing was stored to since the kernel zeroed it
   * (token 0, no non-zero byte: the frames of a THP that a store to one
   * of its pages brought in hold what the zero page held, and KVM logs
   * only the page the guest wrote); else its token + 1.
   */
  private keyOfFrame(pfn: number): number {
    if (pfn < 0) return 0;
    const token = this.k.mem.token(pfn);
    return token === 0 && (this.k.mem.flags(pfn) & PG.nonzero) === 0 ? 0 : token + 1;
  }

  /**
   * The content keys of pages [p, p + n) of block b (one chunkPages run)
   * into `keys`, with one page-table lookup; false, leaving `keys` as it
   * was, when nothing or the huge zero page maps the run (every key is 0).
   */
  private readKeys(b: BlockState, p: number, n: number): boolean {
    const pfns = this.pfns;
    if (followPmdRange(this.src.process.mm, b.block.host + p * PAGE_SIZE, n, pfns) !== PMD_RANGE_PAGES) return false;
    const mem = this.k.mem;
    const keys = this.keys;
    for (let i = 0; i < n;) {
      const pfn = pfns[i]!;
      if (pfn < 0) {
        keys[i++] = 0;
        continue;
      }
      // keyOfFrame for the frames that follow pfn in its section (a THP's), reading the section's arrays directly.
      const { token, flags } = mem.sec(pfn);
      const base = (pfn & SECTION_MASK) - i;
      do {
        const t = token[base + i]!;
        keys[i] = t === 0 && (flags[base + i]! & PG.nonzero) === 0 ? 0 : t + 1;
        i++;
      } while (i < n && pfns[i] === pfns[i - 1]! + 1 && ((base + i) & ~SECTION_MASK) === 0);
    }
    return true;
  }

  // --- the content check -----------------------------------------------------------

  /**
   * Pages whose first byte differs between source and destination, except
   * pages skipped as free by the balloon's hints and not written since
   * (their content is the guest's free memory).
   */
  verify(limit = 10): { block: string; offset: number; src: number; dst: number }[] {
    const out: { block: string; offset: number; src: number; dst: number }[] = [];
    const { pfns, dstPfns } = this;
    const byte = (k: Kernel, pfn: number): number => (pfn < 0 ? 0 : k.mem.token(pfn) & 0xff);
    for (const b of this.blocks)
      for (let p0 = 0, n = 0; p0 < b.pages && out.length < limit; p0 += n) {
        n = chunkPagesBoth(b, p0);
        const srcPages = followPmdRange(this.src.process.mm, b.block.host + p0 * PAGE_SIZE, n, pfns) === PMD_RANGE_PAGES;
        const dstPages = followPmdRange(this.dst.process.mm, b.dst.host + p0 * PAGE_SIZE, n, dstPfns) === PMD_RANGE_PAGES;
        if (!srcPages && !dstPages && ramRuns.enabled) continue; // zero on both sides
        if (!srcPages) pfns.fill(-2, 0, n);
        if (!dstPages) dstPfns.fill(-2, 0, n);
        if (!ramRuns.enabled) {
          // Page by page.
          for (let i = 0; i < n && out.length < limit; i++) {
            const p = p0 + i;
            if (pageSkipped(b, p)) continue;
            const sv = byte(this.k, pfns[i]!);
            const dv = byte(this.dk, dstPfns[i]!);
            if (sv !== dv) out.push({ block: b.block.idstr, offset: p * PAGE_SIZE, src: sv, dst: dv });
          }
          continue;
        }
        for (let i = 0; i < n && out.length < limit;) {
          const sp = pfns[i]!;
          const dp = dstPfns[i]!;
          if (sp < 0 || dp < 0) {
            const sv = byte(this.k, sp);
            const dv = byte(this.dk, dp);
            if (sv !== dv && !pageSkipped(b, p0 + i)) out.push({ block: b.block.idstr, offset: (p0 + i) * PAGE_SIZE, src: sv, dst: dv });
            i++;
            continue;
          }
          // Frames that follow each other on both sides (THPs): their section arrays read directly.
          const st = this.k.mem.sec(sp).token;
          const sb = (sp & SECTION_MASK) - i;
          const dt = this.dk.mem.sec(dp).token;
          const db = (dp & SECTION_MASK) - i;
          do {
            const sv = st[sb + i]! & 0xff;
            const dv = dt[db + i]! & 0xff;
            if (sv !== dv && !pageSkipped(b, p0 + i)) out.push({ block: b.block.idstr, offset: (p0 + i) * PAGE_SIZE, src: sv, dst: dv });
            i++;
          } while (
            i < n &&
            out.length < limit &&
            pfns[i] === pfns[i - 1]! + 1 &&
            dstPfns[i] === dstPfns[i - 1]! + 1 &&
            ((sb + i) & ~SECTION_MASK) === 0 &&
            ((db + i) & ~SECTION_MASK) === 0
          );
        }
      }
    return out;
  }

  /** Pages currently skipped by free page hints (not sent since). */
  get skippedPages(): number {
    let n = 0;
    for (const b of this.blocks) for (let p = 0; p < b.pages; p++) if (pageSkipped(b, p)) n++;
    return n;
  }
}
