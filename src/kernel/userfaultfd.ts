/**
 * userfaultfd (fs/userfaultfd.c, mm/userfaultfd.c): the file descriptor,
 * the UFFDIO_API handshake, range registration, the fault messages that
 * missing, minor and write-protect faults in registered ranges queue, and
 * the ioctls that resolve them. A thread whose fault becomes a userfault
 * blocks until a wake covers its address; it then retries the access,
 * which faults again if the page is still missing or protected.
 *
 * Modelled: MISSING faults on anonymous, shmem and hugetlb ranges; MINOR
 * faults on shmem and shared hugetlb ranges (a page the file holds that the
 * VMA does not map); WP faults (a write to a page with the uffd-wp bit),
 * UFFD_FEATURE_WP_ASYNC and WP_UNPOPULATED markers; UFFDIO_COPY, ZEROPAGE,
 * CONTINUE (with their WP modes), WRITEPROTECT, POISON, WAKE, MOVE
 * (anonymous pages: whole PMDs when aligned, THPs split otherwise),
 * UFFD_FEATURE_SIGBUS and UFFD_FEATURE_EXACT_ADDRESS; the REMOVE and
 * UNMAP events (the caller waits until the event is read; meanwhile
 * mmap_changing makes the fill ioctls answer EAGAIN). FORK and REMAP
 * events cannot arise: memtwin has no fork or mremap. The unmerged proposals for hugetlb pages at small
 * granularity live in hugetlb_hgm.ts.
 * Costs: uffdio_copy_4k per 4K page copied, uffdio_copy_2m_hugetlb per 2M
 * hugetlb page; a CONTINUE maps like a minor fault
 * (fault_anon_4k_read_zeropage); WRITEPROTECT and POISON charge no time
 * (their per-PTE work is not measured).
 */
import type { Kernel } from './kernel.ts';
import type { Process, Thread } from './sched.ts';
import { VM, PTE_NONE, PTE_ZERO, PteTable, HugeLeaf, PageTable, pfnOfPte, swpEntryOfPte, type MmStruct, type Vma } from './mm_types.ts';
import { swapCacheGetFolio } from './swap_state.ts';
import {
  MMAP_MIN_ADDR,
  OPEN,
  HPAGE_PMD_NR,
  MAX_PAGE_ORDER,
  PAGE_SIZE,
  PMD_SIZE,
  TASK_SIZE,
  UFFD_API,
  UFFD_EVENT,
  UFFD_FEATURE,
  UFFD_PAGEFAULT_FLAG,
  UFFD_USER_MODE_ONLY,
  UFFDIO_IOCTL_BITS as B,
  UFFDIO_MODE,
  UFFDIO_REGISTER_MODE,
  neg,
  type SysRet,
} from './uapi.ts';
import {
  allocPteTable,
  followPage,
  hasPmdTable,
  hugetlbContinue,
  hugetlbInstall,
  installAnonPage,
  installAnonPages,
  installShmemPage,
  mapShmemPage,
} from './memory.ts';
import { splitAnonFolio, splitHugePmd } from './huge_memory.ts';
import { PG } from './page.ts';
import { anonVmaPrepare, modifyVmaUffd } from './mmap.ts';
import { hgmCompleteRange, hgmContinue, hgmCopy, subpageCopyMode, subpageFaults } from './hugetlb_hgm.ts';

/** Every feature Linux 6.18 offers on x86-64 (UFFD_API_FEATURES). */
export const UFFD_API_FEATURES = Object.values(UFFD_FEATURE).reduce((a, b) => a | b, 0);
// Ioctl sets as _UFFDIO_* bit numbers (UFFDIO_API is bit 63: too wide for a JS bitmask).
const UFFD_API_IOCTLS = [B.UFFDIO_REGISTER, B.UFFDIO_UNREGISTER, B.UFFDIO_API];
const UFFD_API_RANGE_IOCTLS = [
  B.UFFDIO_WAKE,
  B.UFFDIO_COPY,
  B.UFFDIO_ZEROPAGE,
  B.UFFDIO_MOVE,
  B.UFFDIO_WRITEPROTECT,
  B.UFFDIO_CONTINUE,
  B.UFFDIO_POISON,
];
const UFFD_API_RANGE_IOCTLS_BASIC = [B.UFFDIO_WAKE, B.UFFDIO_COPY, B.UFFDIO_WRITEPROTECT, B.UFFDIO_CONTINUE, B.UFFDIO_POISON];
const UFFD_API_REGISTER_MODES =
  UFFDIO_REGISTER_MODE.UFFDIO_REGISTER_MODE_MISSING |
  UFFDIO_REGISTER_MODE.UFFDIO_REGISTER_MODE_WP |
  UFFDIO_REGISTER_MODE.UFFDIO_REGISTER_MODE_MINOR;
/** __VM_UFFD_FLAGS. */
export const VM_UFFD_FLAGS = VM.UFFD_MISSING | VM.UFFD_WP | VM.UFFD_MINOR;

export interface UffdMsg {
  event: keyof typeof UFFD_EVENT;
  /** The fault address, or the start of a REMOVE/UNMAP range. */
  address: number;
  /** REMOVE/UNMAP: the range's length. */
  len?: number;
  flags: (keyof typeof UFFD_PAGEFAULT_FLAG)[];
  /** The faulting thread (UFFD_FEATURE_THREAD_ID's ptid). */
  tid: number;
}

/** One userfaultfd (struct userfaultfd_ctx). */
export class UserfaultfdCtx {
  /** Features enabled by UFFDIO_API; null before the handshake. */
  features: number | null = null;
  /** Messages not read yet (fault_pending_wqh). */
  readonly pending: UffdMsg[] = [];
  /** Threads blocked in a userfault, with the address they wait on (fault_pending_wqh + fault_wqh). */
  readonly waiters: { thread: Thread; address: number }[] = [];
  /** Non-cooperative event messages not read yet (event_wqh). */
  readonly events: UffdMsg[] = [];
  /**
   * The reader's poll(2) wakeup: called with the faulting thread's own
   * virtual time when a fault message is queued (a VMM's fault thread
   * sleeping in poll sets it; see Userfaultfd.faulted).
   */
  onReadable: ((at: number, t: Thread) => void) | undefined;
  /** mmap_changing: events are queued and not read yet; the fill ioctls answer EAGAIN meanwhile. */
  get mmapChanging(): boolean {
    return this.events.length > 0;
  }
  constructor(
    readonly id: number,
    readonly mm: MmStruct,
    readonly flags: number,
  ) {}
}

/** The userfaultfd state of the kernel: every context, by id. */
export class Userfaultfd {
  private nextId = 1;
  readonly ctxs = new Map<number, UserfaultfdCtx>();

  /** userfaultfd(2). Returns the context id (the fd), or -errno. */
  create(p: Process, flags: number): SysRet {
    if (flags & ~(OPEN.O_CLOEXEC | OPEN.O_NONBLOCK | UFFD_USER_MODE_ONLY)) return neg('EINVAL');
    // userfaultfd_syscall_allowed: user-mode-only, vm.unprivileged_userfaultfd, or CAP_SYS_PTRACE.
    if (!(flags & UFFD_USER_MODE_ONLY) && !p.cred.caps.has('CAP_SYS_PTRACE')) return neg('EPERM');
    const ctx = new UserfaultfdCtx(this.nextId++, p.mm, flags);
    this.ctxs.set(ctx.id, ctx);
    return ctx.id;
  }

  /** Threads blocked delivering an event, and the rest of the call each runs once its event is read. */
  private readonly eventWaiters: { ctx: UserfaultfdCtx; msg: UffdMsg; thread: Thread; rest: () => void }[] = [];

  /** Called for each thread woken from a userfault (a scheduler resumes it, a VMM counts blocktime). */
  readonly wakeListeners: ((t: Thread) => void)[] = [];

  /**
   * A thread that blocked in a userfault did so at virtual time `at` (its
   * own time, which can run ahead of the event being executed): wake the
   * poll(2) of its context's reader.
   */
  faulted(t: Thread, at: number): void {
    for (const c of this.ctxs.values()) if (c.waiters.some((w) => w.thread === t)) c.onReadable?.(at, t);
  }

  /** Threads blocked in any context (in a userfault, or delivering an event). */
  isBlocked(t: Thread): boolean {
    for (const c of this.ctxs.values()) if (c.waiters.some((w) => w.thread === t)) return true;
    return this.eventWaiters.some((w) => w.thread === t);
  }

  /**
   * userfaultfd_event_wait_completion: queue a non-cooperative event (the
   * range [start, end)); `thread` waits until it is read, then runs `rest`,
   * the remainder of its system call.
   */
  event(
    ctx: UserfaultfdCtx,
    event: 'UFFD_EVENT_REMOVE' | 'UFFD_EVENT_UNMAP',
    start: number,
    end: number,
    thread: Thread,
    rest: () => void,
  ): void {
    const msg: UffdMsg = { event, address: start, len: end - start, flags: [], tid: thread.tid };
    ctx.events.push(msg);
    this.eventWaiters.push({ ctx, msg, thread, rest });
  }

  /**
   * read(2) of a context: up to `max` messages, page faults first, then
   * events (userfaultfd_ctx_read). Reading an event lets its producer go on.
   */
  read(ctx: UserfaultfdCtx, max: number): UffdMsg[] {
    const out = ctx.pending.splice(0, max);
    const evs = ctx.events.splice(0, max - out.length);
    for (const msg of evs) {
      const i = this.eventWaiters.findIndex((w) => w.msg === msg);
      this.eventWaiters.splice(i, 1)[0]!.rest();
    }
    return [...out, ...evs];
  }

  /**
   * handle_userfault: a missing, minor or write-protect fault at va in a registered VMA. Returns
   * 'sigbus' with UFFD_FEATURE_SIGBUS, else queues the message and blocks
   * the thread ('blocked').
   */
  fault(vma: Vma, va: number, write: boolean, thread: Thread, reason: 'missing' | 'minor' | 'wp' = 'missing'): 'sigbus' | 'blocked' {
    const ctx = vma.uffdCtx!;
    const features = ctx.features ?? 0;
    if (features & UFFD_FEATURE.UFFD_FEATURE_SIGBUS) return 'sigbus';
    // userfault_msg: the exact address on request (hugetlb too: vmf->real_address), else hugetlb faults report the
    // huge page's address (vmf->address is haddr there) and others the 4K page's.
    const address =
      features & UFFD_FEATURE.UFFD_FEATURE_EXACT_ADDRESS
        ? va
        : vma.isHugetlb() && !subpageFaults(vma, features)
          ? va - (va % vma.hugePageSize())
          : va - (va % PAGE_SIZE);
    const flags: UffdMsg['flags'] = write ? ['UFFD_PAGEFAULT_FLAG_WRITE'] : [];
    if (reason === 'wp') flags.push('UFFD_PAGEFAULT_FLAG_WP');
    if (reason === 'minor') flags.push('UFFD_PAGEFAULT_FLAG_MINOR');
    ctx.pending.push({ event: 'UFFD_EVENT_PAGEFAULT', address, flags, tid: thread.tid });
    ctx.waiters.push({ thread, address: va });
    return 'blocked';
  }

  /** wake_userfault: unblock the threads waiting on an address in [start, start + len). */
  wake(ctx: UserfaultfdCtx, start: number, len: number): void {
    for (let i = ctx.waiters.length - 1; i >= 0; i--) {
      const w = ctx.waiters[i]!;
      if (w.address >= start && w.address < start + len) {
        ctx.waiters.splice(i, 1);
        for (const l of this.wakeListeners) l(w.thread);
      }
    }
  }
}

/** validate_range / validate_unaligned_range. */
function validateRange(start: number, len: number): SysRet {
  if (start % PAGE_SIZE || len % PAGE_SIZE || !len) return neg('EINVAL');
  if (start < MMAP_MIN_ADDR || start >= TASK_SIZE || len > TASK_SIZE - start) return neg('EINVAL');
  return 0;
}

function ctxOf(k: Kernel, id: number): UserfaultfdCtx | number {
  const ctx = k.uffd.ctxs.get(id);
  if (!ctx) return neg('EBADF');
  return ctx;
}

/** A context past its UFFDIO_API handshake (userfaultfd_ioctl refuses every other ioctl before it). */
function readyCtx(k: Kernel, id: number): UserfaultfdCtx | number {
  const ctx = ctxOf(k, id);
  if (typeof ctx === 'number') return ctx;
  return ctx.features === null ? neg('EINVAL') : ctx;
}

/** The checks every range ioctl starts with: a ready context, and validate_range. */
function rangeCtx(k: Kernel, id: number, start: number, len: number): UserfaultfdCtx | number {
  const ctx = readyCtx(k, id);
  if (typeof ctx === 'number') return ctx;
  return validateRange(start, len) || ctx;
}

/**
 * The ioctls that change page tables first refuse while events are
 * unread (mmap_changing), before they look at the range: EAGAIN, written
 * back in the result field too. Null when the call may go on.
 */
function changing(k: Kernel, id: number): { ret: SysRet; done: number } | null {
  const ctx = readyCtx(k, id);
  return typeof ctx !== 'number' && ctx.mmapChanging ? { ret: neg('EAGAIN'), done: neg('EAGAIN') } : null;
}

/** The VMAs of [start, end) for (un)registering: at least one, and a hugetlb first one aligned at start. */
function rangeVmas(ctx: UserfaultfdCtx, start: number, end: number): Vma[] | number {
  const vmas = ctx.mm.vmasIn(start, end);
  if (!vmas.length) return neg('EINVAL');
  const first = vmas[0]!;
  if (first.isHugetlb() && start % first.hugePageSize()) return neg('EINVAL');
  return vmas;
}

/** A hugetlb VMA containing `end` must end the range on a huge page boundary. */
const badHugetlbEnd = (v: Vma, end: number): boolean => v.isHugetlb() && end <= v.end && end > v.start && end % v.hugePageSize() !== 0;

/** UFFDIO_API. On failure the structure is zeroed, as Linux writes it back. */
export function uffdioApi(
  k: Kernel,
  p: Process,
  id: number,
  api: number,
  features: number,
): { ret: SysRet; features: number; ioctls: number[] } {
  const ctx = ctxOf(k, id);
  if (typeof ctx === 'number') return { ret: ctx, features: 0, ioctls: [] };
  const fail = (e: SysRet): { ret: SysRet; features: number; ioctls: number[] } => ({ ret: e, features: 0, ioctls: [] });
  if (api !== UFFD_API) return fail(neg('EINVAL'));
  if (features & UFFD_FEATURE.UFFD_FEATURE_EVENT_FORK && !p.cred.caps.has('CAP_SYS_PTRACE')) return fail(neg('EPERM'));
  if (features & UFFD_FEATURE.UFFD_FEATURE_WP_ASYNC) features |= UFFD_FEATURE.UFFD_FEATURE_WP_UNPOPULATED;
  const offered = UFFD_API_FEATURES | k.hgm.features();
  if (features & ~offered) return fail(neg('EINVAL'));
  // The supported set is reported before the context is checked for a second handshake.
  if (ctx.features !== null) return fail(neg('EINVAL'));
  ctx.features = features;
  return { ret: 0, features: offered, ioctls: UFFD_API_IOCTLS };
}

/** vma_can_userfault. */
function canUserfault(vma: Vma, vmFlags: number): boolean {
  if (vmFlags & VM.UFFD_MINOR && !vma.isHugetlb() && vma.file?.kind !== 'shmem') return false;
  return vma.isAnonymous() || vma.isHugetlb() || vma.file?.kind === 'shmem';
}

/** UFFDIO_REGISTER: ret and the ioctls the range supports. */
export function uffdioRegister(k: Kernel, id: number, start: number, len: number, mode: number): { ret: SysRet; ioctls?: number[] } {
  const ready = readyCtx(k, id);
  if (typeof ready === 'number') return { ret: ready };
  if (!mode || mode & ~UFFD_API_REGISTER_MODES) return { ret: neg('EINVAL') };
  const ctx = rangeCtx(k, id, start, len);
  if (typeof ctx === 'number') return { ret: ctx };
  let vmFlags = 0;
  if (mode & UFFDIO_REGISTER_MODE.UFFDIO_REGISTER_MODE_MISSING) vmFlags |= VM.UFFD_MISSING;
  if (mode & UFFDIO_REGISTER_MODE.UFFDIO_REGISTER_MODE_WP) vmFlags |= VM.UFFD_WP;
  if (mode & UFFDIO_REGISTER_MODE.UFFDIO_REGISTER_MODE_MINOR) vmFlags |= VM.UFFD_MINOR;
  const end = start + len;
  const vmas = rangeVmas(ctx, start, end);
  if (typeof vmas === 'number') return { ret: vmas };
  let basic = false;
  for (const cur of vmas) {
    if (!canUserfault(cur, vmFlags)) return { ret: neg('EINVAL') };
    if (!(cur.flags & VM.MAYWRITE)) return { ret: neg('EPERM') };
    if (badHugetlbEnd(cur, end)) return { ret: neg('EINVAL') };
    if (cur.uffdCtx && cur.uffdCtx !== ctx) return { ret: neg('EBUSY') };
    if (cur.isHugetlb()) basic = true;
  }
  modifyVmaUffd(k, ctx.mm, Math.max(start, vmas[0]!.start), end, ctx, vmFlags, VM_UFFD_FLAGS);
  const ioctls = (basic ? UFFD_API_RANGE_IOCTLS_BASIC : UFFD_API_RANGE_IOCTLS).filter(
    (b) =>
      (b !== B.UFFDIO_WRITEPROTECT || mode & UFFDIO_REGISTER_MODE.UFFDIO_REGISTER_MODE_WP) &&
      (b !== B.UFFDIO_CONTINUE || mode & UFFDIO_REGISTER_MODE.UFFDIO_REGISTER_MODE_MINOR),
  );
  return { ret: 0, ioctls };
}

/** UFFDIO_UNREGISTER: clears the registration and wakes the range's waiters. */
export function uffdioUnregister(k: Kernel, id: number, start: number, len: number): SysRet {
  const ctx = rangeCtx(k, id, start, len);
  if (typeof ctx === 'number') return ctx;
  const end = start + len;
  const vmas = rangeVmas(ctx, start, end);
  if (typeof vmas === 'number') return vmas;
  // No end alignment check here (unlike registration): only another context's VMA, or one that cannot userfault.
  for (const cur of vmas) if ((cur.uffdCtx && cur.uffdCtx !== ctx) || !canUserfault(cur, cur.flags & VM_UFFD_FLAGS)) return neg('EINVAL');
  // Clearing a registered hugetlb VMA splits it at the range ends; a hugetlb VMA cannot split off a huge page.
  for (const cur of vmas) if (cur.uffdCtx === ctx && badHugetlbEnd(cur, end) && end < cur.end) return neg('EINVAL');
  // Under the copy proposals, huge pages still mapped in parts get their huge mapping back first.
  hgmCompleteRange(k, ctx.mm, start, end);
  // userfaultfd_clear_vma: a VMA leaving WP mode loses its uffd-wp bits and markers.
  for (const cur of vmas) if (cur.flags & VM.UFFD_WP) clearUffdWp(ctx.mm, Math.max(start, cur.start), Math.min(end, cur.end));
  modifyVmaUffd(k, ctx.mm, Math.max(start, vmas[0]!.start), end, null, 0, VM_UFFD_FLAGS);
  k.uffd.wake(ctx, start, len);
  return 0;
}

/** UFFDIO_WAKE. */
export function uffdioWake(k: Kernel, id: number, start: number, len: number): SysRet {
  const ctx = rangeCtx(k, id, start, len);
  if (typeof ctx === 'number') return ctx;
  k.uffd.wake(ctx, start, len);
  return 0;
}

/**
 * The source buffer of a UFFDIO_COPY as memtwin tracks contents: the byte
 * every 4K page of it holds first, or the first byte of the 4K page that
 * lands at each destination address (a buffer whose pages differ, such as
 * a huge page received from a migration source).
 */
export type UffdSource = number | ((dst: number) => number);

/**
 * UFFDIO_COPY (fill = the source buffer) or UFFDIO_ZEROPAGE
 * (fill null): `done` is what the kernel writes back in the structure
 * (bytes filled, or -errno; undefined when the call failed before it
 * writes it), ret is 0, -EAGAIN for a partial fill, or -errno.
 */
export function uffdioFill(
  k: Kernel,
  thread: Thread,
  id: number,
  dst: number,
  len: number,
  mode: number,
  fill: UffdSource | null,
): { ret: SysRet; done?: number } {
  const busy = changing(k, id);
  if (busy) return busy;
  const ctx = rangeCtx(k, id, dst, len);
  if (typeof ctx === 'number') return { ret: ctx };
  const dontwake = fill === null ? UFFDIO_MODE.UFFDIO_ZEROPAGE_MODE_DONTWAKE : UFFDIO_MODE.UFFDIO_COPY_MODE_DONTWAKE;
  const allowed = fill === null ? dontwake : dontwake | UFFDIO_MODE.UFFDIO_COPY_MODE_WP;
  if (mode & ~allowed) return { ret: neg('EINVAL') };
  const r = mfillAtomic(k, ctx, thread, dst, len, mode, fill);
  if (r < 0) return { ret: r, done: r };
  if (!(mode & dontwake)) k.uffd.wake(ctx, dst, r);
  return { ret: r === len ? 0 : neg('EAGAIN'), done: r };
}

/** The PTE table an mfill writes at `a` into, allocated if missing (mm_alloc_pmd, pte_alloc); null under a huge PMD (EEXIST). */
function mfillPteTable(k: Kernel, mm: MmStruct, a: number, nid: number): PteTable | null {
  const key = PageTable.pmdKey(a);
  const t = mm.pgtable.pmdEntry(key); // pmds.get(key), through the PMD table the last lookup used
  if (t instanceof HugeLeaf) return null;
  if (t) return t;
  const fresh = allocPteTable(k, mm, nid);
  mm.pgtable.pmds.set(key, fresh);
  return fresh;
}

/** The 4K pages of a huge page just filled take the bytes of a source buffer whose pages differ. */
function storeSubpages(k: Kernel, head: number, va: number, size: number, src: (dst: number) => number): void {
  for (let j = 1; j < size / PAGE_SIZE; j++) {
    k.writeSerial = (k.writeSerial + 1) & 0xffffff;
    k.mem.storeByte(head + j, k.writeSerial, src(va + j * PAGE_SIZE), true);
  }
}

/** mfill_atomic: bytes filled, or -errno if none was. */
function mfillAtomic(
  k: Kernel,
  ctx: UserfaultfdCtx,
  thread: Thread,
  dst: number,
  len: number,
  mode: number,
  src: UffdSource | null,
): number {
  const fill = typeof src === 'function' ? src(dst) : src;
  const mm = ctx.mm;
  const vma = mm.vmaAt(dst);
  if (!vma) return neg('ENOENT');
  // uffd_lock_vma: a private VMA gets its anon_vma first, even if the call then fails (a VMA
  // prepared this way may no longer merge with its neighbours).
  if (!(vma.flags & VM.SHARED)) anonVmaPrepare(k, mm, vma);
  // validate_dst_vma: the whole range in one VMA registered with a userfaultfd.
  if (dst + len > vma.end || !vma.uffdCtx) return neg('ENOENT');
  if (mode & UFFDIO_MODE.UFFDIO_COPY_MODE_WP && fill !== null && !(vma.flags & VM.UFFD_WP)) return neg('EINVAL');
  if (vma.isHugetlb()) {
    if (fill === null) return neg('EINVAL'); // no zeropage for hugetlb
    const hs = vma.hugePageSize();
    if (dst % hs || len % hs) {
      const parts = subpageCopyMode(ctx.features ?? 0);
      return parts ? hgmCopy(k, mm, vma, thread, dst, len, src!, parts) : neg('EINVAL');
    }
    const parts = subpageCopyMode(ctx.features ?? 0);
    let done = 0;
    for (let a = dst; a < dst + len; a += hs) {
      if (parts && mm.hgm.has(a)) {
        // A huge page already mapped in parts takes a whole-page copy as the proposal takes any other: its
        // unmapped parts up to the first mapped one, which stops the copy (EEXIST if it is the first).
        const r = hgmCopy(k, mm, vma, thread, a, hs, src!, parts);
        if (r < 0) return done || r;
        done += r;
        if (r < hs) return done;
        continue;
      }
      const r = hugetlbInstall(k, mm, vma, a, thread, typeof src === 'function' ? src(a) : fill);
      if (r < 0) return done || r;
      if (typeof src === 'function') storeSubpages(k, followPage(mm, a), a, hs, src);
      setUffdWp(mm, a, a + hs, (mode & UFFDIO_MODE.UFFDIO_COPY_MODE_WP) !== 0);
      clearMarkers(mm.uffdPoison, a, a + hs);
      chargeCopy(k, k.costs.ns('uffdio_copy_2m_hugetlb') * (hs / (2 << 20)), mm, a, hs, thread);
      done += hs;
    }
    return done;
  }
  let done = 0;
  // A private anonymous COPY places the none PTEs of a table in one go (mfillAnonRun) while the allocator can hand
  // out their frames at once; once it cannot, page by page.
  let bulk = fill !== null && !vma.file;
  for (let a = dst; a < dst + len; a += PAGE_SIZE) {
    const t = mfillPteTable(k, mm, a, k.cpuToNode(thread.cpu));
    if (!t) return done || neg('EEXIST');
    const i = Math.floor(a / PAGE_SIZE) & 511;
    if (bulk && t.ptes[i] === PTE_NONE) {
      const n = mfillAnonRun(k, mm, vma, t, a, Math.min(dst + len, a - (a % PMD_SIZE) + PMD_SIZE), mode, thread, src!);
      if (n > 0) {
        done += n * PAGE_SIZE;
        a += (n - 1) * PAGE_SIZE;
        continue;
      }
      bulk = false;
    }
    if (vma.file) {
      // shmem: a page in the file's page cache, zero-filled for ZEROPAGE (no zero page there).
      const r = installShmemPage(k, mm, vma, t, a, thread, typeof src === 'function' ? src(a) : (fill ?? 0));
      if (r < 0) return done || r;
      setUffdWp(mm, a, a + PAGE_SIZE, fill !== null && (mode & UFFDIO_MODE.UFFDIO_COPY_MODE_WP) !== 0);
      mm.uffdPoison.delete(a / PAGE_SIZE);
      chargeCopy(k, k.hot.uffdCopy4k, mm, a, PAGE_SIZE, thread, fill === null);
      done += PAGE_SIZE;
      continue;
    }
    if (t.ptes[i] !== PTE_NONE) return done || neg('EEXIST');
    // ZEROPAGE wants pte_none(); COPY also fills a uffd-wp or poison marker (pte_none_mostly).
    if (fill === null && (mm.uffdWp.has(a / PAGE_SIZE) || mm.uffdPoison.has(a / PAGE_SIZE))) return done || neg('EEXIST');
    mm.uffdPoison.delete(a / PAGE_SIZE);
    setUffdWp(mm, a, a + PAGE_SIZE, fill !== null && (mode & UFFDIO_MODE.UFFDIO_COPY_MODE_WP) !== 0);
    if (fill === null) {
      t.ptes[i] = PTE_ZERO;
      t.used++;
    } else if (installAnonPage(k, mm, vma, t, a, thread, typeof src === 'function' ? src(a) : fill) < 0) return done || neg('ENOMEM');
    if (fill === null) k.charge(k.hot.uffdCopy4k);
    else chargeCopy(k, k.hot.uffdCopy4k, mm, a, PAGE_SIZE, thread);
    done += PAGE_SIZE;
  }
  return done;
}

/**
 * mfill_atomic_pte_copy over the none PTEs of t from `a` up to `end` (one
 * PMD's range at most) of a private anonymous VMA: what the per-page loop
 * does for each of them, in the same order, with the frames allocated at
 * once (installAnonPages). Returns the pages placed, or 0 with nothing
 * done (the caller goes page by page).
 */
function mfillAnonRun(
  k: Kernel,
  mm: MmStruct,
  vma: Vma,
  t: PteTable,
  a: number,
  end: number,
  mode: number,
  thread: Thread,
  src: UffdSource,
): number {
  const i = Math.floor(a / PAGE_SIZE) & 511;
  const max = (end - a) / PAGE_SIZE;
  let n = 1;
  while (n < max && t.ptes[i + n] === PTE_NONE) n++;
  if (installAnonPages(k, mm, vma, t, a, n, thread, src) === 0) return 0;
  const e = a + n * PAGE_SIZE;
  clearMarkers(mm.uffdPoison, a, e);
  setUffdWp(mm, a, e, (mode & UFFDIO_MODE.UFFDIO_COPY_MODE_WP) !== 0);
  const ns = k.hot.uffdCopy4k;
  if (!k.membw) {
    for (let x = 0; x < n; x++) k.charge(ns);
    return n;
  }
  // chargeCopy of each page, a run of pages on one node at a time: the frames are t's PTEs just installed (what
  // followPage finds).
  const cpuNode = k.cpuToNode(thread.cpu);
  for (let x = 0; x < n;) {
    let pfn = pfnOfPte(t.ptes[i + x]!);
    const node = k.phys.nodeOfPfn(pfn);
    let y = x + 1;
    // A node holds whole MAX_PAGE_ORDER blocks (PhysMem.nodeOfPfn): a frame in the block of the one before is on its node.
    for (let block = pfn >>> MAX_PAGE_ORDER; y < n; y++) {
      pfn = pfnOfPte(t.ptes[i + y]!);
      if (pfn >>> MAX_PAGE_ORDER !== block) {
        if (k.phys.nodeOfPfn(pfn) !== node) break;
        block = pfn >>> MAX_PAGE_ORDER;
      }
    }
    k.chargeMemRun(y - x, ns, k.hot.copy4k, node, node, PAGE_SIZE, cpuNode);
    x = y;
  }
  return n;
}

/**
 * Charge a fill of `len` bytes at `a` (just installed) to the calling
 * thread: a copy from its buffer (taken to be on the page's node), or with
 * `clear` a zero fill. The DRAM-bound part is copy_page's or clear_page's
 * time per 4K page (Kernel.chargeMem).
 */
function chargeCopy(k: Kernel, ns: number, mm: MmStruct, a: number, len: number, thread: Thread, clear = false): void {
  if (!k.membw) {
    k.charge(ns);
    return;
  }
  const node = k.phys.nodeOfPfn(followPage(mm, a));
  const pages = len / PAGE_SIZE;
  k.chargeMem(ns, pages * (clear ? k.hot.zero4k : k.hot.copy4k), clear ? -1 : node, node, len, k.cpuToNode(thread.cpu));
}

/**
 * UFFDIO_CONTINUE (mfill_atomic_continue): map pages the VMA's shmem or
 * hugetlbfs file already holds, resolving minor faults. `done` is what
 * the kernel writes back in `mapped`.
 */
export function uffdioContinue(
  k: Kernel,
  thread: Thread,
  id: number,
  start: number,
  len: number,
  mode: number,
): { ret: SysRet; done?: number } {
  const busy = changing(k, id);
  if (busy) return busy;
  const ctx = rangeCtx(k, id, start, len);
  if (typeof ctx === 'number') return { ret: ctx };
  if (mode & ~(UFFDIO_MODE.UFFDIO_CONTINUE_MODE_DONTWAKE | UFFDIO_MODE.UFFDIO_CONTINUE_MODE_WP)) return { ret: neg('EINVAL') };
  const r = mfillContinue(k, ctx, thread, start, len, mode);
  if (r < 0) return { ret: r, done: r };
  if (!(mode & UFFDIO_MODE.UFFDIO_CONTINUE_MODE_DONTWAKE)) k.uffd.wake(ctx, start, r);
  return { ret: r === len ? 0 : neg('EAGAIN'), done: r };
}

/** mfill_atomic in MFILL_ATOMIC_CONTINUE mode: bytes mapped, or -errno if none were. */
function mfillContinue(k: Kernel, ctx: UserfaultfdCtx, thread: Thread, dst: number, len: number, mode: number): number {
  const mm = ctx.mm;
  const vma = mm.vmaAt(dst);
  if (!vma) return neg('ENOENT');
  if (!(vma.flags & VM.SHARED)) anonVmaPrepare(k, mm, vma);
  if (dst + len > vma.end || vma.uffdCtx !== ctx) return neg('ENOENT');
  if (mode & UFFDIO_MODE.UFFDIO_CONTINUE_MODE_WP && !(vma.flags & VM.UFFD_WP)) return neg('EINVAL');
  let done = 0;
  if (vma.isHugetlb()) {
    const hs = vma.hugePageSize();
    // hugetlb-hgm: a MADV_SPLIT VMA maps 4K-aligned parts, and pages already mapped in parts only that way.
    if (vma.hgm === 'hgm' && (dst % hs || len % hs || hasPartial(mm, dst, dst + len))) return hgmContinue(k, mm, vma, dst, len);
    if (dst % hs || len % hs) return neg('EINVAL');
    for (let a = dst; a < dst + len; a += hs) {
      const r = hugetlbContinue(k, mm, vma, a, thread);
      if (r < 0) return done || r;
      setUffdWp(mm, a, a + hs, (mode & UFFDIO_MODE.UFFDIO_CONTINUE_MODE_WP) !== 0);
      clearMarkers(mm.uffdPoison, a, a + hs);
      done += hs;
    }
    return done;
  }
  if (!vma.file) return neg('EINVAL'); // CONTINUE needs a page cache: shmem only
  for (let a = dst; a < dst + len; a += PAGE_SIZE) {
    const t = mfillPteTable(k, mm, a, k.cpuToNode(thread.cpu));
    if (!t) return done || neg('EEXIST');
    const pfn = vma.file.pages.get(vma.pgoff + (a - vma.start) / PAGE_SIZE);
    if (pfn === undefined) return done || neg('EFAULT'); // shmem_get_folio(SGP_NOALLOC) found nothing
    const i = Math.floor(a / PAGE_SIZE) & 511;
    if (t.ptes[i] !== PTE_NONE) return done || neg('EEXIST');
    mapShmemPage(k, mm, t, i, pfn);
    setUffdWp(mm, a, a + PAGE_SIZE, (mode & UFFDIO_MODE.UFFDIO_CONTINUE_MODE_WP) !== 0);
    mm.uffdPoison.delete(a / PAGE_SIZE);
    k.charge(k.costs.ns('fault_anon_4k_read_zeropage'));
    done += PAGE_SIZE;
  }
  return done;
}

/**
 * UFFDIO_WRITEPROTECT (userfaultfd_writeprotect, mwriteprotect_range):
 * set or clear the uffd-wp bit over a range; clearing wakes the range's
 * waiters unless DONTWAKE. No time is charged: the per-PTE work of
 * change_protection is not measured.
 */
export function uffdioWriteprotect(k: Kernel, id: number, start: number, len: number, mode: number): SysRet {
  const busy = changing(k, id);
  if (busy) return busy.ret;
  const ctx = rangeCtx(k, id, start, len);
  if (typeof ctx === 'number') return ctx;
  const WP = UFFDIO_MODE.UFFDIO_WRITEPROTECT_MODE_WP;
  const DONTWAKE = UFFDIO_MODE.UFFDIO_WRITEPROTECT_MODE_DONTWAKE;
  if (mode & ~(WP | DONTWAKE)) return neg('EINVAL');
  if (mode & WP && mode & DONTWAKE) return neg('EINVAL');
  const mm = ctx.mm;
  const end = start + len;
  let err = neg('ENOENT'); // no VMA in the range at all
  for (const v of mm.vmasIn(start, end)) {
    if (!(v.flags & VM.UFFD_WP)) return neg('ENOENT');
    if (v.isHugetlb() && (start % v.hugePageSize() || len % v.hugePageSize())) return neg('EINVAL');
    uffdWpRange(k, mm, v, Math.max(start, v.start), Math.min(end, v.end), (mode & WP) !== 0);
    err = 0;
  }
  if (err) return err;
  if (!(mode & WP) && !(mode & DONTWAKE)) k.uffd.wake(ctx, start, len);
  return 0;
}

/**
 * uffd_wp_range: change_protection with MM_CP_UFFD_WP(_RESOLVE). Present
 * pages get (or lose) the bit; a huge PMD the range covers in part is
 * split first; where nothing is mapped, a marker is installed only if the
 * VMA uses markers (files and hugetlb always, anonymous memory with
 * UFFD_FEATURE_WP_UNPOPULATED), in a PTE table allocated for it.
 */
function uffdWpRange(k: Kernel, mm: MmStruct, vma: Vma, start: number, end: number, enable: boolean): void {
  const markers = !vma.isAnonymous() || vma.isHugetlb() || ((vma.uffdCtx?.features ?? 0) & UFFD_FEATURE.UFFD_FEATURE_WP_UNPOPULATED) !== 0;
  const nid = k.cpuToNode(0);
  // change_huge_pmd: a huge PMD the range covers in part is split first, protecting or not.
  for (const edge of [start, end - 1]) {
    const pmdStart = edge - (edge % PMD_SIZE);
    if (
      !vma.isHugetlb() &&
      mm.pgtable.pmds.get(PageTable.pmdKey(edge)) instanceof HugeLeaf &&
      (start > pmdStart || end < pmdStart + PMD_SIZE)
    )
      splitHugePmd(k, mm, pmdStart, nid);
  }
  if (!enable) {
    clearUffdWp(mm, start, end);
    return;
  }
  // Without markers only present pages get the bit: PMD slots not in use are skipped.
  const pt = mm.pgtable;
  const first = markers ? start : pt.skipNone(start, end, PAGE_SIZE);
  for (let a = first; a < end; a = markers ? a + PAGE_SIZE : pt.walkNext(a, end, PAGE_SIZE)) {
    const key = PageTable.pmdKey(a);
    const e = mm.pgtable.pmds.get(key);
    if (followPage(mm, a) !== -2) mm.uffdWp.add(a / PAGE_SIZE);
    else if (markers) {
      if (!vma.isHugetlb() && !e) mm.pgtable.pmds.set(key, allocPteTable(k, mm, nid));
      mm.uffdWp.add(a / PAGE_SIZE);
    }
  }
}

/** Set or clear the uffd-wp bit of every 4K page in [start, end). */
function setUffdWp(mm: MmStruct, start: number, end: number, wp: boolean): void {
  if (wp) for (let a = start; a < end; a += PAGE_SIZE) mm.uffdWp.add(a / PAGE_SIZE);
  else clearUffdWp(mm, start, end);
}

/** Drop the uffd-wp bits and markers of [start, end). */
export function clearUffdWp(mm: MmStruct, start: number, end: number): void {
  clearMarkers(mm.uffdWp, start, end);
}

/** Remove the 4K page numbers of [start, end) from a set of per-page bits or markers. */
export function clearMarkers(set: Set<number>, start: number, end: number): void {
  if (!set.size) return;
  if ((end - start) / PAGE_SIZE > set.size) {
    for (const pg of [...set]) if (pg * PAGE_SIZE >= start && pg * PAGE_SIZE < end) set.delete(pg);
  } else for (let a = start; a < end; a += PAGE_SIZE) set.delete(a / PAGE_SIZE);
}

/**
 * UFFDIO_POISON (mfill_atomic_poison): install PTE_MARKER_POISONED markers
 * where nothing is mapped; touching one is SIGBUS. `done` is what the
 * kernel writes back in `updated`. No time is charged (not measured).
 */
export function uffdioPoison(k: Kernel, id: number, start: number, len: number, mode: number): { ret: SysRet; done?: number } {
  const busy = changing(k, id);
  if (busy) return busy;
  const ctx = rangeCtx(k, id, start, len);
  if (typeof ctx === 'number') return { ret: ctx };
  if (mode & ~UFFDIO_MODE.UFFDIO_POISON_MODE_DONTWAKE) return { ret: neg('EINVAL') };
  const r = mfillPoison(k, ctx, start, len);
  if (r < 0) return { ret: r, done: r };
  if (!(mode & UFFDIO_MODE.UFFDIO_POISON_MODE_DONTWAKE)) k.uffd.wake(ctx, start, r);
  return { ret: r === len ? 0 : neg('EAGAIN'), done: r };
}

/** mfill_atomic in MFILL_ATOMIC_POISON mode: bytes marked, or -errno if none were. */
function mfillPoison(k: Kernel, ctx: UserfaultfdCtx, dst: number, len: number): number {
  const mm = ctx.mm;
  const vma = mm.vmaAt(dst);
  if (!vma) return neg('ENOENT');
  if (!(vma.flags & VM.SHARED)) anonVmaPrepare(k, mm, vma);
  if (dst + len > vma.end || vma.uffdCtx !== ctx) return neg('ENOENT');
  const step = vma.isHugetlb() ? vma.hugePageSize() : PAGE_SIZE;
  if (dst % step || len % step) return neg('EINVAL');
  let done = 0;
  for (let a = dst; a < dst + len; a += step) {
    const key = PageTable.pmdKey(a);
    let t = mm.pgtable.pmds.get(key);
    if (t instanceof HugeLeaf) return done || neg('EEXIST');
    if (!vma.isHugetlb() && !t) {
      t = allocPteTable(k, mm, k.cpuToNode(0));
      mm.pgtable.pmds.set(key, t);
    }
    // pte_none(), strictly: a page, a uffd-wp marker or another poison marker is EEXIST.
    if (followPage(mm, a) !== -2 || mm.uffdWp.has(a / PAGE_SIZE) || mm.uffdPoison.has(a / PAGE_SIZE)) return done || neg('EEXIST');
    for (let b = a; b < a + step; b += PAGE_SIZE) mm.uffdPoison.add(b / PAGE_SIZE);
    done += step;
  }
  return done;
}

/** UFFD_FEATURE_WP_ASYNC: a write to a write-protected page clears the bit of the leaf mapping it, with no message. */
export function unprotectAsync(mm: MmStruct, vma: Vma, va: number): void {
  const size = vma.isHugetlb() ? vma.hugePageSize() : mm.pgtable.pmds.get(PageTable.pmdKey(va)) instanceof HugeLeaf ? PMD_SIZE : PAGE_SIZE;
  const base = va - (va % size);
  clearUffdWp(mm, base, base + size);
}

/** Whether a huge page in [start, end) is mapped in parts. */
function hasPartial(mm: MmStruct, start: number, end: number): boolean {
  for (const f of mm.hgm.values()) if (f.haddr < end && f.haddr + f.size > start) return true;
  return false;
}

/**
 * UFFDIO_MOVE (mm/userfaultfd.c move_pages): move anonymous pages from src
 * to dst inside the context's mm, remapping them without a copy. Returns
 * what the kernel writes back in `move` (bytes moved, or -errno; undefined
 * when the call failed before it writes it) and the ioctl's return.
 */
export function uffdioMove(k: Kernel, id: number, dst: number, src: number, len: number, mode: number): { ret: SysRet; done?: number } {
  const busy = changing(k, id);
  if (busy) return busy;
  const ctx = rangeCtx(k, id, src, len);
  if (typeof ctx === 'number') return { ret: ctx };
  const v = validateRange(dst, len);
  if (v) return { ret: v };
  if (mode & ~(UFFDIO_MODE.UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES | UFFDIO_MODE.UFFDIO_MOVE_MODE_DONTWAKE)) return { ret: neg('EINVAL') };
  const r = movePages(k, ctx, dst, src, len, mode);
  if (r < 0) return { ret: r, done: r };
  if (!(mode & UFFDIO_MODE.UFFDIO_MOVE_MODE_DONTWAKE)) k.uffd.wake(ctx, dst, r);
  return { ret: r === len ? 0 : neg('EAGAIN'), done: r };
}

const VM_ACCESS = VM.READ | VM.WRITE | VM.EXEC;

/** move_pages: bytes moved, or -errno if none were. */
function movePages(k: Kernel, ctx: UserfaultfdCtx, dst: number, src: number, len: number, mode: number): number {
  const mm = ctx.mm;
  const holes = (mode & UFFDIO_MODE.UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES) !== 0;
  // uffd_move_lock: both VMAs must exist; the destination gets its anon_vma first.
  const dvma = mm.vmaAt(dst);
  if (!dvma) return neg('ENOENT');
  if (!(dvma.flags & VM.SHARED)) anonVmaPrepare(k, mm, dvma);
  const svma = mm.vmaAt(src);
  if (!svma) return neg('ENOENT');
  if (src + len > svma.end || dst + len > dvma.end) return neg('EINVAL');
  // validate_move_areas
  if ((svma.flags & VM_ACCESS) !== (dvma.flags & VM_ACCESS) || (svma.flags & VM.LOCKED) !== (dvma.flags & VM.LOCKED)) return neg('EINVAL');
  if (!(svma.flags & VM.WRITE)) return neg('EINVAL');
  if (dvma.uffdCtx !== ctx || !svma.isAnonymous() || !dvma.isAnonymous() || svma.flags & VM.SHARED || dvma.flags & VM.SHARED)
    return neg('EINVAL');
  const nid = k.cpuToNode(0);
  let moved = 0;
  let err = 0;
  while (moved < len) {
    const s = src + moved;
    const d = dst + moved;
    const skey = PageTable.pmdKey(s);
    const dkey = PageTable.pmdKey(d);
    let se = mm.pgtable.pmds.get(skey);
    const de = mm.pgtable.pmds.get(dkey);
    // No PMD table for the source (mm_find_pmd NULL) is a hole before the destination is looked at;
    // an empty PMD in an existing table only after the destination's huge-PMD check.
    if (se === undefined && !holes && !hasPmdTable(mm, s)) {
      err = neg('ENOENT');
      break;
    }
    if (de instanceof HugeLeaf) {
      err = neg('EEXIST');
      break;
    }
    if (se === undefined && !holes) {
      err = neg('ENOENT');
      break;
    }
    if (se instanceof HugeLeaf) {
      // A whole PMD moves as one if aligned and covered; otherwise it is split first.
      if (s % PMD_SIZE === 0 && d % PMD_SIZE === 0 && s + PMD_SIZE <= src + len && !de) {
        mm.pgtable.pmds.delete(skey);
        mm.pgtable.pmds.set(dkey, se);
        if (!se.isZero) for (let j = 0; j < HPAGE_PMD_NR; j++) k.mem.setIndex(se.pfn + j, d / PAGE_SIZE + j);
        moved += PMD_SIZE;
        continue;
      }
      const head = se.pfn;
      se = splitHugePmd(k, mm, s - (s % PMD_SIZE), nid);
      if (head >= 0) splitAnonFolio(k, mm, head, s - (s % PMD_SIZE), nid);
      se = mm.pgtable.pmds.get(skey);
    }
    // Both page tables are allocated before the PTEs are looked at (__pte_alloc, pte_alloc), holes included.
    if (!(se instanceof PteTable)) {
      se = allocPteTable(k, mm, nid);
      mm.pgtable.pmds.set(skey, se);
    }
    let dt = mm.pgtable.pmds.get(dkey) as PteTable | undefined;
    if (!dt) {
      dt = allocPteTable(k, mm, nid);
      mm.pgtable.pmds.set(dkey, dt);
    }
    const st = se;
    const si = Math.floor(s / PAGE_SIZE) & 511;
    const spte = st.ptes[si]!;
    const di = Math.floor(d / PAGE_SIZE) & 511;
    if (dt.ptes[di] !== PTE_NONE || mm.uffdWp.has(d / PAGE_SIZE) || mm.uffdPoison.has(d / PAGE_SIZE)) {
      err = neg('EEXIST');
      break;
    }
    if (spte === PTE_NONE) {
      if (!holes) {
        err = neg('ENOENT');
        break;
      }
      moved += PAGE_SIZE; // a hole moves as nothing
      continue;
    }
    if (spte < PTE_ZERO) {
      // move_swap_pte: the entry moves; a folio in the swap cache for it follows to the new address.
      const cached = swapCacheGetFolio(k, swpEntryOfPte(spte));
      if (cached >= 0) k.mem.setIndex(cached, d / PAGE_SIZE);
    } else if (spte !== PTE_ZERO) {
      const pfn = pfnOfPte(spte);
      if (k.mem.flags(pfn) & (PG.head | PG.tail)) {
        // A PTE-mapped large folio is split before its pages move.
        splitAnonFolio(k, mm, pfn - (pfn % HPAGE_PMD_NR), s - (s % PMD_SIZE), nid);
        continue;
      }
      if (!(k.mem.flags(pfn) & PG.anonExclusive)) {
        err = neg('EBUSY'); // shared with a forked process: move_pages_pte needs PageAnonExclusive
        break;
      }
      k.mem.setIndex(pfn, d / PAGE_SIZE);
    }
    st.ptes[si] = PTE_NONE;
    st.used--;
    mm.uffdWp.delete(s / PAGE_SIZE); // the moved PTE does not carry the uffd-wp bit
    dt.ptes[di] = spte;
    dt.used++;
    moved += PAGE_SIZE;
  }
  return moved ? moved : err;
}

/** Names of the bits set in a mask, by a name -> mask table, in bit order. */
export function bitNames(value: number, table: Record<string, number>): string[] {
  return Object.entries(table)
    .filter(([, b]) => value & b)
    .sort(([, a], [, b]) => a - b)
    .map(([n]) => n);
}

/** Names of ioctl bit numbers, in bit order. */
export function ioctlNames(bits: number[]): string[] {
  return Object.entries(B)
    .filter(([, b]) => bits.includes(b))
    .sort(([, a], [, b]) => a - b)
    .map(([n]) => n);
}
