/**
 * Live migration's state machine and QMP interface (QEMU migration/migration.c,
 * migration/options.c, qapi/migration.json), precopy and the switch to
 * postcopy (postcopy.ts), in virtual time on the kernel's event queue.
 *
 * - States (MigrationStatus): none -> setup -> active -> completed, or
 *   failed, or cancelling -> cancelled. With the pause-before-switchover
 *   capability (migration_maybe_pause) the migration stops the guest, then
 *   waits in `pre-switchover` for `migrate-continue` (state
 *   `pre-switchover`) and sends the rest in `device` (or switches to
 *   postcopy); the wait is part of the downtime. Without it the stop-and-copy
 *   phase keeps status `active`, as in QEMU. With postcopy-ram, migrate-start-postcopy switches at the
 *   next iteration: postcopy-active, postcopy-paused after a link drop,
 *   postcopy-recover while `migrate` resume=true reconnects.
 * - The migration thread (migration_iteration_run): while the remaining
 *   dirty bytes exceed threshold_size = bandwidth x downtime-limit, it sends
 *   pages (ram_save_iterate), at most max-bandwidth / 10 bytes per 100 ms
 *   window (BUFFER_DELAY); one ram_save_iterate sends until that budget is
 *   spent, no dirty page is left, or it has run MAX_WAIT (50 ms), and only
 *   then is the remainder checked again. When it is at most threshold_size,
 *   the thread syncs the dirty bitmap and checks again; below, it stops the
 *   guest (downtime starts), syncs, sends
 *   everything left at the link's full rate (no rate limit during
 *   completion) and completes, as QEMU reports it, when its last byte is
 *   in the socket: when what was queued plus the final stage, less the
 *   send buffer, is on the wire (what was queued: the channel's last busy
 *   stretch, full when it was busy up to the switchover, empty after a
 *   rate window's idle end; completeStage): downtime and total-time end
 *   there. The guest runs on the destination when the
 *   last byte has arrived (guestResumedAt). Device state is not sent (no
 *   device models).
 * - Counters per window (migration_update_counters): bandwidth (bytes/ms
 *   over the window), threshold_size, mbps, pages-per-second,
 *   expected-downtime = remaining / bandwidth.
 * - Per sync period of at least 1 s (migration_bitmap_sync):
 *   dirty-pages-rate, and auto-converge (migration_trigger_throttle): when
 *   the bytes dirtied in the period exceed throttle-trigger-threshold % of
 *   the bytes sent, twice, the guest is throttled (mig_throttle_guest_down):
 *   cpu-throttle-initial, then + cpu-throttle-increment (or the tailslow
 *   rule), at most max-cpu-throttle. The caller that drives guest work reads
 *   `guestRunFraction` (1 - throttle %) and scales it.
 * - Guest writes: the caller calls onGuestWrite(gpa, len) (KVM's dirty log);
 *   writes it makes through the host page table are found at the next sync
 *   anyway (ram.ts). While the guest is stopped it must not write.
 * - The destination: a second Vm, on the same kernel or on another host's
 *   kernel sharing the virtual time, announced with `incoming(uri, vm,
 *   link)` as `-incoming tcp:...` would, or passed to `migrate`
 *   programmatically (`destination`).
 * - Faults: linkStall, linkDrop (precopy fails and the guest stays on the
 *   source; postcopy pauses), sourceLost (during postcopy the VM is lost).
 *
 * - The main channel is a flow on the link's network path (link.ts): it
 *   sends at its fair share of the path, which changes when other flows
 *   (other migrations, background traffic) start or stop; what is on the
 *   wire then goes on at the new rate (a Transfer re-plans the step's end).
 *   QEMU's rate limit is not a pacer: once a window's budget is spent the
 *   thread sleeps until the window ends (migration_rate_exceeded), so the
 *   flow sends at its share and then is idle, leaving the link to others.
 *   The bandwidth QEMU measures per window, and with it threshold_size, is
 *   what the flow got.
 *
 * vm_stop and vm_start cost nothing here: timed under TCG on this machine
 * (scripts/validate-qemu/vm-stop-cost.ts, an idle vCPU), QMP `stop` and
 * `cont` take no longer than a `query-status` round trip (medians 216 and
 * 197 us against 222 us over 500 repeats).
 *
 * - xbzrle (xbzrle.ts): the `xbzrle` capability and `xbzrle-cache-size`;
 *   query-migrate's `xbzrle-cache`.
 * - The KVM dirty ring (dirty_ring.ts, `dirtyRingSize`: -accel
 *   kvm,dirty-ring-size): syncs reap rings; guest stores reported through
 *   onGuestStore fill them and stall their vCPU at ring-full exits.
 * - dirty-limit (dirtylimit.ts): the `dirty-limit` capability with
 *   `vcpu-dirty-limit` and `x-vcpu-dirty-limit-period`, and the
 *   set-vcpu-dirty-limit / cancel-vcpu-dirty-limit / query-vcpu-dirty-limit
 *   commands; the caller scales each vCPU's work by vcpuRunFraction.
 * - multifd (the `multifd` capability; multifd-channels, multifd-compression,
 *   multifd-zlib-level, multifd-zstd-level): the pages go in packets over
 *   channels of their own, each a flow on the link with a sender and a
 *   receiver thread whose CPU the scheduler gives (multifd.ts); the main
 *   channel carries the stream's markers (and zero pages with
 *   zero-page-detection legacy). A step ends when every channel's bytes are
 *   on the wire and its threads' CPU work is done.
 *
 * Not modelled: device state
 * (the `device` stage sends RAM only).
 */
import type { CpuWork, Kernel } from '../../kernel/kernel.ts';
import type { EventHandle } from '../../sim/event_queue.ts';
import { Transfer, type Flow } from '../../sim/network.ts';
import { NSEC_PER_MSEC, NSEC_PER_SEC } from '../../sim/clock.ts';
import { PAGE_SIZE } from '../../kernel/uapi.ts';
import { QmpError, type QmpArgs } from '../monitor.ts';
import type { Vm } from '../vm.ts';
import { Link } from './link.ts';
import {
  CLEAR_BITMAP_SHIFT_DEFAULT,
  RamMigration,
  STREAM_MARKER_BYTES,
  type FreePageHints,
  type PrecopyNotifyReason,
  type RamMigrationCostNames,
  type SendResult,
} from './ram.ts';
import { Postcopy, postcopyDevmemRefusal, type PageDiff, type PostcopyOptions } from './postcopy.ts';
import { DEFAULT_XBZRLE_CACHE_SIZE, Xbzrle } from './xbzrle.ts';
import { KvmDirtyRing } from './dirty_ring.ts';
import { DIRTYLIMIT_CALC_TIME_MS, DirtyLimit } from './dirtylimit.ts';
import {
  CALIBRATED_LEVEL,
  MULTIFD_COMPRESSIONS,
  Multifd,
  PacedThread,
  WireGroup,
  type MultiFDCompression,
  type MultifdStep,
  type OnWire,
  type PageContent,
} from './multifd.ts';

/** MigrationStatus (qapi/migration.json). */
export const MIGRATION_STATUSES = [
  'none',
  'setup',
  'cancelling',
  'cancelled',
  'active',
  'postcopy-active',
  'postcopy-paused',
  'postcopy-recover-setup',
  'postcopy-recover',
  'completed',
  'failed',
  'colo',
  'pre-switchover',
  'device',
  'wait-unplug',
] as const;
export type MigrationStatus = (typeof MIGRATION_STATUSES)[number];

/** MigrationCapability (qapi/migration.json). */
export const MIGRATION_CAPABILITIES = [
  'xbzrle',
  'rdma-pin-all',
  'auto-converge',
  'events',
  'postcopy-ram',
  'x-colo',
  'release-ram',
  'return-path',
  'pause-before-switchover',
  'multifd',
  'dirty-bitmaps',
  'postcopy-blocktime',
  'late-block-activate',
  'x-ignore-shared',
  'validate-uuid',
  'background-snapshot',
  'zero-copy-send',
  'postcopy-preempt',
  'switchover-ack',
  'dirty-limit',
  'mapped-ram',
] as const;
export type MigrationCapability = (typeof MIGRATION_CAPABILITIES)[number];
/** Capabilities that change nothing memtwin models (accepted and ignored). */
const HARMLESS_CAPABILITIES: readonly MigrationCapability[] = [
  'events',
  'return-path',
  'dirty-bitmaps',
  'late-block-activate',
  'validate-uuid',
];

/** Capabilities memtwin models. */
const MODELLED_CAPABILITIES: readonly MigrationCapability[] = [
  'xbzrle',
  'dirty-limit',
  'auto-converge',
  'postcopy-ram',
  'postcopy-preempt',
  'postcopy-blocktime',
  'pause-before-switchover',
  'multifd',
];

/** The MigrationParameters memtwin models, by QEMU's names, with QEMU's defaults (migration/options.c). */
export interface MigrationParameters {
  /** bytes/s; MAX_THROTTLE = 128 MiB/s. */
  'max-bandwidth': number;
  /** ms; DEFAULT_MIGRATE_SET_DOWNTIME. */
  'downtime-limit': number;
  'throttle-trigger-threshold': number;
  'cpu-throttle-initial': number;
  'cpu-throttle-increment': number;
  'cpu-throttle-tailslow': boolean;
  'max-cpu-throttle': number;
  'zero-page-detection': 'none' | 'legacy' | 'multifd';
  /** bytes/s during postcopy; 0: unlimited (the link's rate). */
  'max-postcopy-bandwidth': number;
  /** bytes; a power of two of at least a page (DEFAULT_MIGRATE_XBZRLE_CACHE_SIZE 64 MiB). */
  'xbzrle-cache-size': number;
  /** ms, 1 to 1000: the dirty-limit throttle thread's period (DEFAULT_MIGRATE_VCPU_DIRTY_LIMIT_PERIOD). */
  'x-vcpu-dirty-limit-period': number;
  /** MB/s, at least 1: each vCPU's quota once dirty-limit throttles (DEFAULT_MIGRATE_VCPU_DIRTY_LIMIT). */
  'vcpu-dirty-limit': number;
  /** multifd: channels (1 to 255), the compression and its levels. */
  'multifd-channels': number;
  'multifd-compression': MultiFDCompression;
  'multifd-zlib-level': number;
  'multifd-zstd-level': number;
}

const DEFAULT_PARAMETERS: MigrationParameters = {
  'max-bandwidth': 128 * 2 ** 20,
  'downtime-limit': 300,
  'throttle-trigger-threshold': 50,
  'cpu-throttle-initial': 20,
  'cpu-throttle-increment': 10,
  'cpu-throttle-tailslow': false,
  'max-cpu-throttle': 99,
  'zero-page-detection': 'multifd',
  'max-postcopy-bandwidth': 0,
  'xbzrle-cache-size': DEFAULT_XBZRLE_CACHE_SIZE,
  'x-vcpu-dirty-limit-period': 1000,
  'vcpu-dirty-limit': 1,
  'multifd-channels': 2,
  'multifd-compression': 'none',
  'multifd-zlib-level': 1,
  'multifd-zstd-level': 1,
};

/**
 * A cost charged to virtual time, in whole ns: the migration computes its
 * steps' ends from fractional costs (syncs, copies) and rounds them where
 * it charges them, so the times it compares (rate windows) are the times
 * its events run at.
 */
const wholeNs = (ns: number): number => Math.round(ns);

/** BUFFER_DELAY: the rate-limit window (ms). */
export const BUFFER_DELAY_MS = 100;
const MAX_MIGRATE_DOWNTIME_SECONDS = 2000;
/** MAX_WAIT (migration/ram.c): the longest one ram_save_iterate runs before the thread checks the pending size again. */
const MAX_WAIT_NS = 50 * NSEC_PER_MSEC;
/** Longest sending step between two events (ns): lets guest writes interleave finely. */
const STEP_NS = NSEC_PER_MSEC;

export interface MigrationOptions {
  /** The balloon device's free page hints (VirtioBalloonDevice), if the VM has one with free-page-hint. */
  hints?: FreePageHints;
  costs?: RamMigrationCostNames;
  /** Postcopy details QEMU has no parameter for: the request unit under a hugetlb proposal. */
  postcopy?: Pick<PostcopyOptions, 'hugetlbRequestSize'>;
  /**
   * Told when the guest stops (switchover), runs again on the source (a
   * failed or cancelled switchover), or runs on the destination (the
   * caller moves its vCPU work there).
   */
  onGuest?: (what: 'stop' | 'start-source' | 'start-destination') => void;
  /** Told once when the migration ends: completed, failed or cancelled (an orchestrator starts the next). */
  onEnd?: (status: MigrationStatus) => void;
  /** Name of its channels' flows on the network (`NAME.main`, `NAME.preempt`, `NAME.multifdN`); default the VM's name. */
  flowName?: string;
  /** -accel kvm,dirty-ring-size=N: per-vCPU KVM dirty rings of N entries instead of the dirty bitmap (0 or unset: the bitmap). */
  dirtyRingSize?: number;
  /**
   * The source's accelerator (default kvm). It decides when the dirty log forgets a write (ram.ts
   * clearBitmapShift): KVM's bitmap is cleared per 1 GiB chunk when the chunk's first page is sent; TCG's dirty
   * memory bitmap, and KVM's dirty ring, at the sync.
   */
  accel?: 'kvm' | 'tcg';
  /** -global migration.x-clear-bitmap-shift=N: KVM's clear chunks are 2^N pages (default CLEAR_BITMAP_SHIFT_DEFAULT, 1 GiB). */
  clearBitmapShift?: number;
  /**
   * What the guest's non-zero pages hold, for multifd compression (memtwin
   * tracks one byte of a page): same-filled, text or random (default).
   */
  pageContent?: PageContent;
}

/** Profile entries xbzrle and the dirty ring charge. */
const XBZRLE_COSTS = {
  encode4k: 'xbzrle_encode_4k',
  encodePerByte: 'xbzrle_encode_per_changed_byte',
  decodePerByte: 'xbzrle_decode_per_changed_byte',
  pageCopy: 'memcpy_4k',
} as const;
const DIRTY_RING_COSTS = {
  exitNs: 'kvm_exit_dirty_ring_full',
  perEntryNs: 'kvm_dirty_ring_reap_per_entry',
  ioctlNs: 'syscall_null',
} as const;

/** Virtual-time record of one bitmap sync (an iteration boundary). */
export interface MigrationIteration {
  syncCount: number;
  at: number;
  newDirtyPages: number;
  remainingBytes: number;
}

export class MigrationState {
  status: MigrationStatus = 'none';
  readonly capabilities = new Map<MigrationCapability, boolean>(MIGRATION_CAPABILITIES.map((c) => [c, false]));
  readonly parameters: MigrationParameters = { ...DEFAULT_PARAMETERS };
  /** Throttle applied to the vCPUs by auto-converge (%, 0: none). */
  throttlePercentage = 0;
  readonly iterations: MigrationIteration[] = [];
  ram: RamMigration | null = null;
  /** The last migration's xbzrle state (its counters stay for query-migrate after postcopy or the end). */
  xbzrle: Xbzrle | null = null;
  /** The VM's KVM dirty rings (-accel kvm,dirty-ring-size), null with the bitmap. */
  readonly dirtyRing: KvmDirtyRing | null;
  /** The dirty page rate limit (needs the dirty ring). */
  readonly dirtyLimit: DirtyLimit | null;
  private dirtyLimitTick: EventHandle | null = null;
  /** The postcopy phase, once migrate-start-postcopy switched over. */
  postcopy: Postcopy | null = null;
  link: Link | null = null;
  /** The main channel: a flow on the link's path (opened by migrate). */
  flow: Flow | null = null;
  /** The multifd channels, with the multifd capability. */
  multifd: Multifd | null = null;
  /** The VM was lost (its source died during postcopy). */
  vmLost = false;
  /**
   * The content check of a completed migration, made when the destination
   * takes over each page (before the guest writes there): pages that did
   * not carry the source's content, and the first few.
   */
  contentCheck: { pagesDiffering: number; differing: PageDiff[] } | undefined;
  dest: Vm | null = null;
  errorDesc: string | undefined;
  /** Times in ns (virtual). */
  startTime = 0;
  setupTime = 0;
  endTime = 0;
  downtimeStart = 0;
  downtime = 0;
  /** When the guest ran again on the destination (the pause it saw: guestResumedAt - downtimeStart). */
  guestResumedAt = 0;
  expectedDowntimeMs = 0;
  private readonly incomingByUri = new Map<string, { vm: Vm; link: Link }>();
  private readonly k: Kernel;
  /** The migration thread's next step (kept whole so that a link stall can move it). */
  private event: { ev: EventHandle; name: string; run: () => void } | null = null;
  /**
   * What is on the wire for the current step (or the completion): its
   * transfer on the main flow, and how to re-plan the step's events when
   * the flow's rate changes. `stall` is what injected link stalls added.
   */
  private wire: { tx: OnWire; replan: () => void; stall: number } | null = null;
  private ended = false;
  private guestStopped = false;
  /** When the ram_save_iterate in progress started (null: the next step starts an iteration). */
  private iterStart: number | null = null;
  /** Host pages the iteration has sent (ram_find_and_save_block calls), and whether it looks at the clock next. */
  private iterCalls = 0;
  private iterMid = false;
  private iterCheckDue = false;
  /** What a migration paused in `pre-switchover` does on migrate-continue. */
  private pausedFor: (() => void) | null = null;
  /** migrate-start-postcopy was issued (MigrationState->start_postcopy). */
  private startPostcopy = false;
  // migration_update_counters
  private windowStart = 0;
  private windowBytes = 0;
  private windowPages = 0;
  private bandwidthBytesPerMs = 0;
  private thresholdBytes = 0;
  private mbps = 0;
  private pagesPerSecond = 0;
  private precopyBytes = 0;
  private downtimeBytes = 0;
  private setupBytes = 0;
  /**
   * The main channel's last busy stretch (see completeStage): when its last
   * byte went on the wire and how many bytes it carried without going idle.
   */
  private lastWireEnd = 0;
  private busyBytes = 0;
  /** The last sending step's threads waited for a CPU (stepNs). */
  private cpuWaited = false;
  /** The migration's QEMU threads on the scheduler (the migration thread, the incoming side, multifd's). */
  private readonly threads = new Map<string, PacedThread>();
  /** Main-channel bytes a multifd sync queued (RAM_SAVE_FLAG_MULTIFD_FLUSH), sent with the next step or stage. */
  private mainPending = 0;
  // migration_bitmap_sync rate period
  private periodStart = 0;
  private periodBytesStart = 0;
  private dirtyPagesRate = 0;
  private dirtyRateHighCnt = 0;

  constructor(
    readonly vm: Vm,
    readonly opts: MigrationOptions = {},
  ) {
    this.k = vm.k;
    const size = opts.dirtyRingSize ?? 0;
    if (size) {
      const pages = vm.ramList.blocks.reduce((m, b) => Math.max(m, (b.offset + b.usedLength) / PAGE_SIZE), 0);
      const costs = Object.fromEntries(
        Object.entries(DIRTY_RING_COSTS).map(([k, name]) => [
          k,
          this.k.costs.nsOf(name, 'the KVM dirty ring charges it. Add it to the profile (profiles/default.json has it).'),
        ]),
      ) as Record<keyof typeof DIRTY_RING_COSTS, number>;
      this.dirtyRing = new KvmDirtyRing(size, vm.vcpus.length, pages, costs);
      this.dirtyLimit = new DirtyLimit(this.dirtyRing, vm.vcpus.length);
    } else {
      this.dirtyRing = null;
      this.dirtyLimit = null;
    }
  }

  /** Register the migration QMP commands on the VM's monitor. */
  register(): this {
    const m = this.vm.monitor;
    m.registerCommand('migrate', (a) => this.qmpMigrate(a), ['uri', 'channels', 'detach', 'resume', 'destination']);
    m.registerCommand('migrate_cancel', () => this.cancel(), []);
    m.registerCommand('migrate-start-postcopy', () => this.qmpStartPostcopy(), []);
    m.registerCommand('migrate-continue', (a) => this.qmpContinue(a), ['state']);
    m.registerCommand('migrate-set-capabilities', (a) => this.setCapabilities(a), ['capabilities']);
    m.registerCommand('migrate-set-parameters', (a) => this.setParameters(a), null);
    m.registerCommand('query-migrate', () => this.query(), []);
    m.registerCommand('query-migrate-capabilities', () => [...this.capabilities].map(([capability, state]) => ({ capability, state })), []);
    m.registerCommand('query-migrate-parameters', () => ({ ...this.parameters }), []);
    m.registerCommand('set-vcpu-dirty-limit', (a) => this.qmpSetVcpuDirtyLimit(a), ['cpu-index', 'dirty-rate']);
    m.registerCommand('cancel-vcpu-dirty-limit', (a) => this.qmpCancelVcpuDirtyLimit(a), ['cpu-index']);
    m.registerCommand('query-vcpu-dirty-limit', () => this.qmpQueryVcpuDirtyLimit(), []);
    return this;
  }

  /** The destination listens on `uri` (`-incoming tcp:0:4444`), reached over `link`. */
  incoming(uri: string, dest: Vm, link: Link): void {
    this.incomingByUri.set(uri, { vm: dest, link });
  }

  /** Whether the guest runs on the source (not stopped for switchover, not moved). */
  get guestRunning(): boolean {
    return !this.guestStopped && this.status !== 'completed';
  }

  /**
   * threshold_size: the bytes the last rate window's bandwidth sends within
   * downtime-limit; precopy stops the guest once what remains fits in it.
   */
  get thresholdSize(): number {
    return this.thresholdBytes;
  }

  /** The share of time the vCPUs may run under auto-converge throttling (1: unthrottled). */
  get guestRunFraction(): number {
    return 1 - this.throttlePercentage / 100;
  }

  /**
   * The share of time vCPU `vcpu` may run: auto-converge's throttle and
   * the dirty-limit's per-vCPU fraction (1: unthrottled).
   */
  vcpuRunFraction(vcpu: number): number {
    const dl = this.dirtyLimit;
    return this.guestRunFraction * (dl && vcpu < dl.fraction.length ? dl.fraction[vcpu]! : 1);
  }

  /**
   * A guest store the workload made: `len` bytes at `hva` of the source
   * VMM, by vCPU `vcpu` (the store hook). With dirty logging on it feeds
   * the dirty ring and xbzrle (RamMigration.onGuestStore); with only a
   * dirty-limit in service (QEMU logs dirty pages for it too) the ring.
   * Returns the ns the vCPU loses to a ring-full exit.
   */
  onGuestStore(vcpu: number, hva: number, len: number): number {
    if (this.postcopy || this.status === 'completed') return 0; // the guest runs on the destination
    if (this.ram?.dirtyLogging) return this.ram.onGuestStore(vcpu, hva, len);
    const ring = this.dirtyRing;
    if (!ring || !this.dirtyLimit?.inService || vcpu >= ring.nrVcpus) return 0;
    const b = this.vm.ramList.blocks.find((x) => hva >= x.host && hva < x.host + x.usedLength);
    return b ? ring.push(vcpu, (b.offset + hva - b.host - ((hva - b.host) % PAGE_SIZE)) / PAGE_SIZE, true) : 0;
  }

  /** The guest wrote [gpa, gpa + len) on the source (KVM's dirty log). */
  onGuestWrite(gpa: number, len: number): void {
    if (this.guestStopped) throw new Error('memtwin: the guest is stopped for switchover and cannot write');
    if (this.ram && this.isActive()) this.ram.logWrite(gpa, len);
  }

  private isActive(): boolean {
    return this.status === 'setup' || this.status === 'active' || this.status === 'pre-switchover' || this.status === 'device';
  }

  /**
   * The content check: pages whose first byte differs between source and
   * destination (free-page-hinted pages not sent are left out). Meaningful
   * once completed; empty means no data was lost.
   */
  verify(limit = 10): ReturnType<RamMigration['verify']> {
    if (!this.ram) throw new Error('memtwin: no migration has run');
    return this.ram.verify(limit);
  }

  // --- QMP ----------------------------------------------------------------------------

  private qmpMigrate(a: QmpArgs): Record<string, never> {
    const uri = a.uri;
    if (a.channels !== undefined) throw new QmpError('GenericError', "memtwin: 'channels' is not modelled; use 'uri'");
    if (uri === undefined) throw new QmpError('GenericError', "Parameter 'uri' is missing");
    if (typeof uri !== 'string') throw new QmpError('GenericError', "Invalid parameter type for 'uri', expected: string");
    if (a.resume === true) {
      if (this.postcopy?.status !== 'postcopy-paused') throw new QmpError('GenericError', 'Cannot resume if there is no paused migration');
      this.postcopy.recover();
      return {};
    }
    const dest = a.destination as { vm: Vm; link: Link } | undefined;
    this.migrate(uri, dest);
    return {};
  }

  /** qmp_migrate: start a precopy migration to the destination at `uri`. */
  migrate(uri: string, destination?: { vm: Vm; link: Link }): void {
    if (this.isActive() || this.status === 'cancelling') throw new QmpError('GenericError', "There's a migration process in progress");
    if (!/^(tcp|unix|exec|fd|file|rdma):/.test(uri)) throw new QmpError('GenericError', `unknown migration protocol: ${uri}`);
    for (const [c, on] of this.capabilities)
      if (on && !MODELLED_CAPABILITIES.includes(c) && !HARMLESS_CAPABILITIES.includes(c))
        throw new QmpError('GenericError', `memtwin: capability '${c}' is not modelled yet`);
    // migrate_caps_check
    if (this.capabilities.get('postcopy-preempt') && !this.capabilities.get('postcopy-ram'))
      throw new QmpError('GenericError', 'Postcopy preempt requires postcopy-ram');
    const comp = this.parameters['multifd-compression'];
    if (this.capabilities.get('multifd') && comp !== 'none') {
      const level = this.parameters[`multifd-${comp}-level`];
      if (level !== CALIBRATED_LEVEL)
        throw new QmpError(
          'GenericError',
          `memtwin: multifd-${comp}-level ${level} is not modelled: the cost profile's ${comp} figures are measured at level ${CALIBRATED_LEVEL}, QEMU's default`,
        );
    }
    this.reset();
    this.status = 'setup';
    this.startTime = this.k.clock.now();
    const d = destination ?? this.incomingByUri.get(uri);
    if (!d) return this.fail(`Failed to connect to '${uri.replace(/^[a-z]+:/, '')}': Connection refused`);
    let ram: RamMigration;
    try {
      this.precopyNotify('setup');
      ram = new RamMigration(this.vm, d.vm, {
        zeroPageDetection: this.parameters['zero-page-detection'] !== 'none',
        hints: this.opts.hints,
        costs: this.opts.costs,
        precopyNotify: (reason) => this.precopyNotify(reason),
        clearBitmapShift: this.opts.accel === 'tcg' || this.dirtyRing ? null : (this.opts.clearBitmapShift ?? CLEAR_BITMAP_SHIFT_DEFAULT),
      });
    } catch (e) {
      return this.fail((e as Error).message);
    }
    const pageSizes = postcopyPageSizeMismatch(this.vm, d.vm);
    if (this.capabilities.get('postcopy-ram') && pageSizes) return this.fail(pageSizes);
    const devmem = postcopyDevmemRefusal(d.vm);
    if (this.capabilities.get('postcopy-ram') && devmem) return this.fail(devmem);
    this.ram = ram;
    if (this.capabilities.get('xbzrle')) {
      const costs = Object.fromEntries(
        Object.entries(XBZRLE_COSTS).map(([k, name]) => [
          k,
          this.k.costs.nsOf(name, 'xbzrle charges it. Measure it with `memtwin calibrate --only xbzrle` or take profiles/default.json.'),
        ]),
      ) as Record<keyof typeof XBZRLE_COSTS, number>;
      ram.xbzrle = this.xbzrle = new Xbzrle(this.parameters['xbzrle-cache-size'], ram.ramPages, costs);
    } else this.xbzrle = null;
    ram.dirtyRing = this.dirtyRing;
    ram.dirtyRingOwnOnly = this.dirtyLimit?.inService ?? false;
    this.link = d.link;
    this.dest = d.vm;
    const flowName = this.opts.flowName ?? this.vm.name ?? 'vm';
    this.flow = d.link.openFlow(this.k.events, `${flowName}.main`);
    let multifdSetup = 0;
    if (this.capabilities.get('multifd')) {
      try {
        this.multifd = new Multifd(ram, this.vm, d.vm, d.link, this.k.events, {
          channels: this.parameters['multifd-channels'],
          compression: comp,
          level: comp === 'none' ? 0 : this.parameters[`multifd-${comp}-level`],
          zeroPageDetection: this.parameters['zero-page-detection'],
          ...(this.opts.pageContent ? { pageContent: this.opts.pageContent } : {}),
          flowName,
        });
      } catch (e) {
        return this.fail((e as Error).message);
      }
      // Each channel's MultiFDInit_t; ram_save_setup's multifd_send_sync_main and RAM_SAVE_FLAG_MULTIFD_FLUSH.
      multifdSetup = this.multifd.initialPackets() + this.multifd.sync();
    }
    if (!d.vm.monitor.hasCommand('query-migrate')) d.vm.monitor.registerCommand('query-migrate', () => this.incomingQuery(), []);
    // The setup's few hundred bytes go at the share the channel would get now (not worth a flow's start and stop).
    const setupNs =
      d.link.rttNs + wholeNs(ram.setup()) + d.link.transferNs(ram.setupBytes() + multifdSetup, this.flow.net.rateIfActive(this.flow));
    this.setupBytes = ram.bytes;
    this.arm(this.k.clock.now() + setupNs, 'migration-setup-done', () => {
      this.status = 'active';
      const now = this.k.clock.now();
      this.setupTime = now - this.startTime;
      this.windowStart = now;
      this.periodStart = now;
      this.periodBytesStart = this.ram!.bytes;
      this.recordIteration(this.ram!.dirtyPages);
      this.step();
    });
  }

  /** migrate_cancel: stop at once; the guest keeps running on the source. */
  cancel(): Record<string, never> {
    if (this.postcopy && this.postcopy.status !== 'completed')
      throw new QmpError('GenericError', 'Postcopy is not cancellable: the guest runs on the destination');
    if (!this.isActive()) return {};
    this.status = 'cancelling';
    this.event?.ev.cancel();
    this.event = null;
    this.pausedFor = null; // migrate_fd_cancel wakes a paused thread, which then gives up
    this.quietWire();
    this.ram?.stopDirtyLog();
    if (this.guestStopped) this.opts.onGuest?.('start-source');
    this.guestStopped = false;
    this.throttlePercentage = 0;
    this.endTime = this.k.clock.now();
    this.status = 'cancelled';
    this.end();
    return {};
  }

  private setCapabilities(a: QmpArgs): Record<string, never> {
    const caps = a.capabilities;
    if (caps === undefined) throw new QmpError('GenericError', "Parameter 'capabilities' is missing");
    if (!Array.isArray(caps)) throw new QmpError('GenericError', "Invalid parameter type for 'capabilities', expected: array");
    if (this.isActive() || this.status === 'cancelling') throw new QmpError('GenericError', "There's a migration process in progress");
    const next = new Map(this.capabilities);
    for (const c of caps as unknown[]) {
      const e = c as { capability?: unknown; state?: unknown };
      if (typeof e !== 'object' || e === null)
        throw new QmpError('GenericError', "Invalid parameter type for 'capabilities[0]', expected: object");
      if (e.capability === undefined) throw new QmpError('GenericError', "Parameter 'capability' is missing");
      if (typeof e.capability !== 'string' || !(MIGRATION_CAPABILITIES as readonly string[]).includes(e.capability))
        throw new QmpError('GenericError', `Parameter 'capability' does not accept value '${String(e.capability)}'`);
      if (typeof e.state !== 'boolean') throw new QmpError('GenericError', "Invalid parameter type for 'state', expected: boolean");
      next.set(e.capability as MigrationCapability, e.state);
    }
    // migrate_caps_check
    if (next.get('dirty-limit')) {
      if (next.get('auto-converge'))
        throw new QmpError('GenericError', 'dirty-limit conflicts with auto-converge either of then available currently');
      if (!this.dirtyRing) throw new QmpError('GenericError', "dirty-limit requires KVM with accelerator property 'dirty-ring-size' set");
    }
    if (next.get('multifd') && next.get('xbzrle')) throw new QmpError('GenericError', 'Multifd is not compatible with xbzrle');
    for (const [c, v] of next) this.capabilities.set(c, v);
    return {};
  }

  /** migrate_params_check / migrate_params_apply for the parameters memtwin models. */
  private setParameters(a: QmpArgs): Record<string, never> {
    const p = { ...this.parameters };
    const int = (name: string, type: string): number => {
      const v = a[name];
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0)
        throw new QmpError('GenericError', `Invalid parameter type for '${name}', expected: ${type}`);
      return v;
    };
    const range = (name: string, v: number, lo: number, hi: number): void => {
      if (v < lo || v > hi)
        throw new QmpError('GenericError', `Parameter '${name.replace(/-/g, '_')}' expects an integer in the range of ${lo} to ${hi}`);
    };
    for (const name of Object.keys(a)) {
      switch (name) {
        case 'max-bandwidth':
        case 'max-postcopy-bandwidth':
          p[name] = int(name, 'uint64');
          break;
        case 'downtime-limit': {
          const v = int(name, 'uint64');
          if (v > MAX_MIGRATE_DOWNTIME_SECONDS * 1000)
            throw new QmpError(
              'GenericError',
              `Parameter 'downtime_limit' expects an integer in the range of 0 to ${MAX_MIGRATE_DOWNTIME_SECONDS} seconds`,
            );
          p[name] = v;
          break;
        }
        case 'throttle-trigger-threshold':
          range(name, (p[name] = int(name, 'uint8')), 1, 100);
          break;
        case 'cpu-throttle-initial':
        case 'cpu-throttle-increment':
        case 'max-cpu-throttle':
          range(name, (p[name] = int(name, 'uint8')), 1, 99);
          break;
        case 'cpu-throttle-tailslow':
          if (typeof a[name] !== 'boolean') throw new QmpError('GenericError', `Invalid parameter type for '${name}', expected: boolean`);
          p[name] = a[name];
          break;
        case 'xbzrle-cache-size': {
          const v = int(name, 'size');
          if (v < PAGE_SIZE || (v & (v - 1)) !== 0 || v > 2 ** 50)
            throw new QmpError('GenericError', "Parameter 'xbzrle_cache_size' expects a power of two no less than the target page size");
          p[name] = v;
          break;
        }
        case 'x-vcpu-dirty-limit-period': {
          const v = int(name, 'uint64');
          if (v < 1 || v > 1000)
            throw new QmpError('GenericError', "Parameter 'x-vcpu-dirty-limit-period' expects a value between 1 and 1000");
          p[name] = v;
          break;
        }
        case 'vcpu-dirty-limit': {
          const v = int(name, 'uint64');
          if (v < 1) throw new QmpError('GenericError', "Parameter 'vcpu_dirty_limit' expects is invalid, it must greater then 1 MB/s");
          p[name] = v;
          break;
        }
        case 'multifd-channels': {
          // uint8 in the QAPI schema: the visitor refuses what does not fit, migrate_params_check refuses 0.
          const v = a[name];
          if (typeof v !== 'number' || !Number.isInteger(v))
            throw new QmpError('GenericError', `Invalid parameter type for '${name}', expected: uint8`);
          if (v < 0 || v > 255) throw new QmpError('GenericError', `Parameter '${name}' expects uint8`);
          if (v < 1) throw new QmpError('GenericError', "Parameter 'multifd_channels' expects a value between 1 and 255");
          p[name] = v;
          break;
        }
        case 'multifd-zlib-level':
        case 'multifd-zstd-level': {
          const v = a[name];
          if (typeof v !== 'number' || !Number.isInteger(v))
            throw new QmpError('GenericError', `Invalid parameter type for '${name}', expected: uint8`);
          if (v < 0 || v > 255) throw new QmpError('GenericError', `Parameter '${name}' expects uint8`);
          const max = name === 'multifd-zlib-level' ? 9 : 20;
          if (v > max) throw new QmpError('GenericError', `Parameter '${name.replace(/-/g, '_')}' expects a value between 0 and ${max}`);
          p[name] = v;
          break;
        }
        case 'multifd-compression': {
          const v = a[name];
          if (typeof v !== 'string' || !(MULTIFD_COMPRESSIONS as readonly string[]).includes(v))
            throw new QmpError('GenericError', `Parameter 'multifd-compression' does not accept value '${String(v)}'`);
          p[name] = v as MultiFDCompression;
          break;
        }
        case 'zero-page-detection': {
          const v = a[name];
          if (v !== 'none' && v !== 'legacy' && v !== 'multifd')
            throw new QmpError('GenericError', `Parameter 'zero-page-detection' does not accept value '${String(v)}'`);
          p[name] = v;
          break;
        }
        default:
          throw new QmpError('GenericError', `Parameter '${name}' is unexpected`);
      }
    }
    Object.assign(this.parameters, p);
    return {};
  }

  /** query-migrate (fill_source_migration_info), times in ms as QEMU gives them. */
  query(): Record<string, unknown> {
    const ms = (ns: number): number => Math.floor(ns / NSEC_PER_MSEC);
    const now = this.k.clock.now();
    const pc = this.postcopy;
    const status = pc && this.status === 'postcopy-active' && pc.status !== 'lost' && pc.status !== 'completed' ? pc.status : this.status;
    switch (status) {
      case 'none':
        return {};
      case 'setup':
        return { status: 'setup' };
      case 'failed':
        return { status: 'failed', ...(this.errorDesc ? { 'error-desc': this.errorDesc } : {}) };
      case 'cancelled':
      case 'cancelling':
        return { status: this.status };
      case 'completed':
        return {
          status: 'completed',
          'total-time': ms(this.endTime - this.startTime),
          downtime: ms(this.downtime),
          'setup-time': ms(this.setupTime),
          ram: this.ramInfo(),
          ...this.xbzrleInfo(),
        };
      default:
        return {
          status,
          'total-time': ms(now - this.startTime),
          'expected-downtime': Math.floor(this.expectedDowntimeMs),
          'setup-time': ms(this.setupTime),
          ram: this.ramInfo(),
          ...this.xbzrleInfo(),
          ...(this.throttlePercentage ? { 'cpu-throttle-percentage': this.throttlePercentage } : {}),
          ...this.dirtyLimitInfo(),
        };
    }
  }

  /** populate_ram_info's xbzrle-cache (XBZRLECacheStats), with the capability. */
  private xbzrleInfo(): { 'xbzrle-cache'?: Record<string, number> } {
    if (!this.capabilities.get('xbzrle') || !this.xbzrle) return {};
    const k = this.xbzrle.counters;
    return {
      'xbzrle-cache': {
        'cache-size': this.xbzrle.cache.size,
        bytes: k.bytes,
        pages: k.pages,
        'cache-miss': k.cacheMiss,
        'cache-miss-rate': k.cacheMissRate,
        'encoding-rate': k.encodingRate,
        overflow: k.overflow,
      },
    };
  }

  /** populate_time_info's dirty-limit fields (us), with the capability and a limit in service. */
  private dirtyLimitInfo(): Record<string, number> {
    const dl = this.dirtyLimit;
    if (!this.capabilities.get('dirty-limit') || !dl?.inService) return {};
    return { 'dirty-limit-throttle-time-per-round': dl.throttleTimePerRound(), 'dirty-limit-ring-full-time': dl.ringFullTime() };
  }

  // --- dirty page rate limit (system/dirtylimit.c) ---------------------------------

  /** qmp_set_vcpu_dirty_limit. */
  private qmpSetVcpuDirtyLimit(a: QmpArgs): Record<string, never> {
    const dl = this.dirtyLimit;
    if (!dl) throw new QmpError('GenericError', "dirty page limit feature requires KVM with accelerator property 'dirty-ring-size' set'");
    const rate = a['dirty-rate'];
    if (rate === undefined) throw new QmpError('GenericError', "Parameter 'dirty-rate' is missing");
    if (typeof rate !== 'number' || !Number.isInteger(rate) || rate < 0)
      throw new QmpError('GenericError', "Invalid parameter type for 'dirty-rate', expected: uint64");
    const cpu = this.cpuIndex(a['cpu-index']);
    if (!rate) return this.qmpCancelVcpuDirtyLimit(a);
    dl.set(cpu, rate);
    this.dirtyLimitChanged();
    return {};
  }

  /** qmp_cancel_vcpu_dirty_limit. */
  private qmpCancelVcpuDirtyLimit(a: QmpArgs): Record<string, never> {
    const dl = this.dirtyLimit;
    if (!dl) return {};
    const cpu = this.cpuIndex(a['cpu-index']);
    if (this.isActive() && this.capabilities.get('dirty-limit'))
      throw new QmpError('GenericError', "can't cancel dirty page rate limit while migration is running");
    dl.cancel(cpu);
    this.dirtyLimitChanged();
    return {};
  }

  /** qmp_query_vcpu_dirty_limit: the limited vCPUs. */
  private qmpQueryVcpuDirtyLimit(): { 'cpu-index': number; 'limit-rate': number; 'current-rate': number }[] {
    const dl = this.dirtyLimit;
    if (!dl?.inService) throw new QmpError('GenericError', 'dirty page limit not enabled');
    const out: { 'cpu-index': number; 'limit-rate': number; 'current-rate': number }[] = [];
    dl.quota.forEach((q, i) => {
      if (q !== undefined) out.push({ 'cpu-index': i, 'limit-rate': q, 'current-rate': Math.round(dl.rate[i]!) });
    });
    return out;
  }

  private cpuIndex(v: unknown): number | undefined {
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isInteger(v))
      throw new QmpError('GenericError', "Invalid parameter type for 'cpu-index', expected: int");
    if (v < 0 || v >= this.vm.vcpus.length) throw new QmpError('GenericError', 'incorrect cpu index specified');
    return v;
  }

  /** The throttle thread runs while a limit is in service, every period; ring-full exits then reap only their own ring. */
  private dirtyLimitChanged(): void {
    const dl = this.dirtyLimit!;
    if (this.ram) this.ram.dirtyRingOwnOnly = dl.inService;
    if (!dl.inService) {
      this.dirtyLimitTick?.cancel();
      this.dirtyLimitTick = null;
      return;
    }
    if (this.dirtyLimitTick) return;
    const tick = (): void => {
      const periodMs = this.capabilities.get('dirty-limit') ? this.parameters['x-vcpu-dirty-limit-period'] : DIRTYLIMIT_CALC_TIME_MS;
      this.dirtyLimitTick = this.k.events.after(periodMs * NSEC_PER_MSEC, 'dirtylimit-period', () => {
        if (!dl.inService) {
          this.dirtyLimitTick = null;
          return;
        }
        dl.period(periodMs * NSEC_PER_MSEC);
        tick();
      });
    };
    // Entries taken before the limit count for nothing: the first period starts now.
    for (let v = 0; v < dl.fraction.length; v++) this.dirtyRing!.takePushed(v);
    tick();
  }

  /** migration_dirty_limit_guest: every vCPU limited to vcpu-dirty-limit (once, unless the parameter changed). */
  private dirtyLimitGuest(): void {
    const dl = this.dirtyLimit!;
    const q = this.parameters['vcpu-dirty-limit'];
    if (dl.inService && dl.quota.every((x) => x === q)) return;
    dl.set(undefined, q);
    this.dirtyLimitChanged();
  }

  private ramInfo(): Record<string, number> {
    const r = this.ram!;
    return {
      transferred: r.bytes,
      remaining: r.remainingBytes,
      total: r.totalBytes,
      duplicate: r.duplicate,
      normal: r.normal,
      'normal-bytes': r.normal * PAGE_SIZE,
      'dirty-pages-rate': this.dirtyPagesRate,
      mbps: this.mbps,
      'dirty-sync-count': r.dirtySyncCount,
      'postcopy-requests': this.postcopy?.stats.requests ?? 0,
      'page-size': PAGE_SIZE,
      'multifd-bytes': this.multifd?.bytes ?? 0,
      'pages-per-second': this.pagesPerSecond,
      'precopy-bytes': this.precopyBytes + this.setupBytes,
      'downtime-bytes': this.downtimeBytes,
      'postcopy-bytes': this.postcopy?.stats.bytes ?? 0,
      'dirty-sync-missed-zero-copy': 0,
    };
  }

  // --- the migration thread --------------------------------------------------------

  private reset(): void {
    this.exitThreads();
    this.ram = null;
    this.multifd?.close();
    this.multifd = null;
    this.postcopy = null;
    this.contentCheck = undefined;
    this.startPostcopy = false;
    this.vmLost = false;
    this.errorDesc = undefined;
    this.iterations.length = 0;
    this.throttlePercentage = 0;
    this.guestStopped = false;
    this.windowBytes = this.windowPages = this.bandwidthBytesPerMs = this.thresholdBytes = 0;
    this.mbps = this.pagesPerSecond = this.precopyBytes = this.downtimeBytes = this.setupBytes = 0;
    this.lastWireEnd = this.busyBytes = this.mainPending = 0;
    this.cpuWaited = false;
    this.dirtyPagesRate = this.dirtyRateHighCnt = 0;
    this.expectedDowntimeMs = this.downtime = this.setupTime = this.guestResumedAt = 0;
    this.wire = null;
    this.iterStart = null;
    this.iterCalls = 0;
    this.iterMid = false;
    this.iterCheckDue = false;
    this.pausedFor = null;
    this.ended = false;
  }

  private fail(desc: string): void {
    this.pausedFor = null;
    this.errorDesc = desc;
    this.status = 'failed';
    this.endTime = this.k.clock.now();
    this.quietWire();
    this.ram?.stopDirtyLog();
    this.throttlePercentage = 0;
    this.end();
  }

  /**
   * The CPU the migration uses: the source's migration thread (bitmap syncs,
   * reading and sending pages) and the destination's incoming thread
   * (loading them), each on its host's CPUs where QEMU's threads run,
   * without waiting for it: used where nothing is paced (no scheduler, a
   * step that sends nothing, the stop-and-copy with the vCPUs stopped). A
   * sending step with a scheduler runs the threads' work as PacedThreads and
   * waits for it (step).
   */
  private spendCpu(srcNs: number, dstNs: number): void {
    this.k.spend(this.vm.qemuThread('live_migration'), srcNs);
    // The incoming side loads pages in QEMU's main loop (process_incoming_migration_co).
    if (this.dest) this.dest.k.spend(this.dest.qemuThread('main'), dstNs);
  }

  /** Nothing more goes on the main channel: its transfer is abandoned and its flow idle. */
  private quietWire(): void {
    this.wire?.tx.finish();
    this.wire = null;
    this.flow?.stop();
    this.multifd?.close();
  }

  /**
   * precopy_notify: the precopy notifiers, here the balloon's free page
   * hinting (virtio_balloon_free_page_hint_notify), told the source VM's
   * state and whether postcopy-ram is on.
   */
  private precopyNotify(reason: PrecopyNotifyReason): void {
    this.opts.hints?.precopyNotify?.(reason, !this.guestStopped, this.capabilities.get('postcopy-ram') === true);
  }

  /** The migration's threads exit. */
  private exitThreads(): void {
    for (const t of this.threads.values()) t.exit();
    this.threads.clear();
  }

  /** The migration is over (completed, failed, cancelled): tell the caller once. */
  private end(): void {
    if (this.ended) return;
    this.ended = true;
    this.exitThreads();
    this.precopyNotify('cleanup'); // migrate_fd_cleanup
    // migration_cancel_dirty_limit: the limits the migration set go with it.
    if (this.capabilities.get('dirty-limit') && this.dirtyLimit?.inService) {
      this.dirtyLimit.cancel(undefined);
      this.dirtyLimitChanged();
    }
    // A completed precopy's channel goes idle when its last byte is on the wire (completion plans it).
    if (this.status !== 'completed' || this.postcopy) {
      this.flow?.stop();
      this.multifd?.close();
    }
    this.opts.onEnd?.(this.status);
  }

  /**
   * One step of the migration thread: at an iteration's start,
   * migration_iteration_run (sync if what remains is below threshold_size,
   * complete if it still is, switch to postcopy if asked), then a step's
   * worth of ram_save_iterate (at most the window's budget, about STEP_NS of
   * wire or CPU time) on the main channel at its share of the path. The
   * step ends when its bytes are on the wire and its CPU work is done; when
   * the window's budget is spent the thread sleeps until the window ends and
   * the channel is idle meanwhile.
   *
   * An iteration (one ram_save_iterate) runs several steps: QEMU checks the
   * pending size only between them, and ram_save_iterate sends until the
   * rate limit is reached, no dirty page is left, or it has run MAX_WAIT
   * (50 ms). Checking after every 1 ms step instead synced again each time
   * what remained dipped below threshold_size (issue 20 reports 13-18 syncs
   * where QEMU 7.2 did 4-7 on a 1 GiB guest; validate qemu's
   * ws32M-r4000-bw32M run went from 9 to QEMU's 7).
   */
  private step(): void {
    this.event = null;
    this.wire = null;
    if (this.status !== 'active') return;
    const ram = this.ram!;
    const link = this.link!;
    const flow = this.flow!;
    const now = this.k.clock.now();
    let syncNs = 0;
    // ram_save_iterate's own end: more than MAX_WAIT since it started, looked at after the 1st, 65th, 129th...
    // host page it sent (its RAM_SAVE_FLAG_EOS goes now).
    let eos = 0;
    const checkTime = this.iterCheckDue;
    this.iterCheckDue = false;
    if (this.iterStart !== null && checkTime && now - this.iterStart > MAX_WAIT_NS) {
      this.iterStart = null;
      eos = ram.sendEos();
    }
    if (this.iterStart === null) {
      // migration_iteration_run: the estimate, then the exact pass (a bitmap sync) when what remains is at most
      // threshold_size (QEMU 8.0's pending_estimate/exact; 7.2's ram_save_pending compared `<`, which differs
      // only while both are 0, before the first rate window has closed).
      if (ram.remainingBytes <= this.thresholdBytes) syncNs = this.bitmapSync(now);
      const pending = ram.remainingBytes;
      if (!pending || pending < this.thresholdBytes) {
        this.precopyBytes += eos;
        link.carry(eos);
        flow.stop();
        this.arm(this.k.clock.now() + wholeNs(syncNs), 'migration-completion', () => this.completion());
        return;
      }
      if (this.startPostcopy) {
        this.precopyBytes += eos;
        link.carry(eos);
        return this.postcopyStart();
      }
      this.iterStart = now + wholeNs(syncNs);
      this.iterCalls = 0;
      this.iterMid = false;
    }
    const windowEnd = this.windowStart + BUFFER_DELAY_MS * NSEC_PER_MSEC;
    const limit = this.rateLimitMax();
    const budget = limit - this.windowBytes;
    const mf = this.multifd;
    // The main channel's bytes (`bytes`) and the multifd channels' (`chBytes`, in `mfStep`).
    let bytes = eos + this.takeMainPending();
    let mfStep: MultifdStep | null = null;
    // The migration thread's CPU in the step (the sync, reading pages) and the destination's incoming thread's.
    let mainSrcNs = syncNs;
    let mainDstNs = 0;
    let cpuNs = 0;
    let midHostPage = false;
    let hugeHostPage = false;
    if (budget > 0) {
      flow.start();
      let res: SendResult;
      if (mf) {
        for (const c of mf.channels) c.flow.start();
        mfStep = mf.send(budget - bytes, this.stepNs());
        res = mfStep.main;
      } else res = ram.send(budget, this.stepNs(), flow.rate);
      mainSrcNs += res.srcNs;
      mainDstNs = res.dstNs;
      bytes += res.bytes;
      cpuNs = Math.max(res.srcNs, res.dstNs);
      this.windowPages += res.pages;
      // ram_save_iterate reads the clock after its 1st ram_find_and_save_block call and every 64th after it.
      const checkpoints = (calls: number): number => (calls === 0 ? 0 : Math.floor((calls - 1) / 64) + 1);
      // A call returns once its host page is sent: one still half sent has not.
      midHostPage = res.midHostPage === true;
      const before = this.iterCalls;
      this.iterCalls += res.hostPages ?? 0;
      this.iterCheckDue = checkpoints(this.iterCalls - (midHostPage ? 1 : 0)) > checkpoints(before - (this.iterMid ? 1 : 0));
      this.iterMid = midHostPage;
      hugeHostPage = (res.hostPageSize ?? PAGE_SIZE) > PAGE_SIZE;
    }
    const chBytes = mfStep?.bytes ?? 0;
    const rateLimited = this.windowBytes + bytes + chBytes >= limit;
    // ram_save_iterate ends at the rate limit, or with no dirty page left. On huge host pages the rate limit does
    // not end it: ram_save_host_page sleeps until the window ends after each 4K page past the limit
    // (migration_rate_limit, which opens the next window) and goes on, so ram_save_iterate never sees it exceeded.
    if (this.iterStart !== null && ((rateLimited && !hugeHostPage) || ram.dirtyPages === 0)) {
      this.iterStart = null;
      bytes += ram.sendEos();
    }
    if (!bytes) flow.stop();
    else flow.start();
    if (mf) mf.channels.forEach((c, i) => (mfStep?.channels[i]!.bytes ? c.flow.start() : c.flow.stop()));
    const allBytes = bytes + chBytes;
    // With a scheduler, the threads' CPU work of a step that sends runs on it (competing with the vCPUs and
    // everything else) and the step waits for it; without one (op-scripts) each thread has a CPU of its own.
    const paced = this.k.sched !== null && allBytes > 0;
    if (!paced) this.spendCpu(mainSrcNs, mainDstNs);
    link.carry(allBytes);
    this.windowBytes += allBytes;
    this.precopyBytes += allBytes;
    // The step's costs end on a whole ns: the window starts, ends and is compared at the times events run. The
    // wire starts after the sync; the step ends when its CPU work is done and its last byte is on the wire.
    const cpuEnd = paced ? now : now + wholeNs(syncNs + cpuNs);
    const wireStart = now + wholeNs(syncNs);
    // When the step's work ends (as planned; re-plans move it): the iteration's end, where
    // migration_update_counters closes the window once it has run its 100 ms. A thread that slept until the
    // window's end closes it when it wakes.
    let stepEnd = cpuEnd;
    const iterate = (): void => {
      this.wire?.tx.finish();
      const windowNs = BUFFER_DELAY_MS * NSEC_PER_MSEC;
      if (stepEnd - this.windowStart >= windowNs) this.updateCounters(stepEnd);
      else if (rateLimited && this.k.clock.now() - this.windowStart >= windowNs) this.updateCounters(this.k.clock.now());
      this.step();
    };
    if (!allBytes) {
      this.arm(rateLimited ? Math.max(cpuEnd, windowEnd) : cpuEnd, 'migration-iterate', iterate);
      return;
    }
    // A sleeping thread sends nothing: the channel is idle from its last byte on the wire until the next step.
    const idle = { ev: null as EventHandle | null };
    // The stretch the channel was busy for, as a leaky bucket of the send buffer's size: the bytes a sender
    // ahead of the wire would have queued (completeStage), drained at the channel's rate while it was idle.
    this.busyBytes = this.queuedAt(wireStart, this.aheadRoomTotal) + allBytes;
    // The multifd threads' CPU work, done when the scheduler has run it (each channel's sender and receiver).
    let threadsEnd = cpuEnd;
    let threadsWaiting = 0;
    const plan = (): void => {
      const w = this.wire!;
      const wireEnd = w.tx.at(allBytes);
      this.lastWireEnd = wireEnd + w.stall;
      const t = Math.max(cpuEnd, threadsWaiting ? Infinity : threadsEnd, wireEnd) + w.stall;
      stepEnd = t;
      this.event?.ev.cancel();
      this.event = null;
      // A flow always gets a share while it sends; Infinity would mean it got none (planned again when it does).
      if (t !== Infinity) this.arm(rateLimited ? Math.max(t, windowEnd) : t, 'migration-iterate', iterate);
      idle.ev?.cancel();
      idle.ev = null;
      if (rateLimited && wireEnd + w.stall < windowEnd && wireEnd !== Infinity)
        idle.ev = this.k.events.schedule(wireEnd + w.stall, 'migration-channel-idle', () => {
          this.wire?.tx.finish();
          flow.stop();
          mf?.close();
        });
    };
    const tx: OnWire = mfStep
      ? new WireGroup(
          [{ flow, bytes }, ...mf!.channels.map((c, i) => ({ flow: c.flow, bytes: mfStep.channels[i]!.bytes }))],
          wireStart,
          () => plan(),
        )
      : new Transfer(flow, bytes, wireStart, () => plan());
    const w = { tx, replan: plan, stall: 0 };
    this.wire = w;
    // Each thread's work of the step (the migration thread's, the incoming side's, each multifd sender's and
    // receiver's) goes to the scheduler; the step waits for the last one. Without a scheduler onDone is immediate.
    const works: [CpuWork, Kernel, number][] = [];
    if (paced)
      works.push([this.vm.qemuThread('live_migration'), this.k, mainSrcNs], [this.dest!.qemuThread('main'), this.dest!.k, mainDstNs]);
    if (mfStep)
      mf!.channels.forEach((c, i) => {
        const l = mfStep.channels[i]!;
        works.push([c.send, this.k, l.srcNs], [c.recv, this.dest!.k, l.dstNs]);
      });
    const todo = works.filter(([, , ns]) => ns > 0);
    threadsWaiting = todo.length;
    // Whether a thread had to wait for a CPU (it finished later than its work alone takes): see stepNs.
    const alone = now + Math.max(0, ...todo.map(([, , ns]) => Math.round(ns)));
    const done = (at: number): void => {
      threadsEnd = Math.max(threadsEnd, at);
      if (--threadsWaiting > 0) return;
      this.cpuWaited = threadsEnd > alone + NSEC_PER_MSEC / 10;
      if (this.wire === w) plan();
    };
    if (!todo.length) this.cpuWaited = false;
    for (const [work, k, ns] of todo) this.thread(work, k).run(ns, done);
    plan();
  }

  /**
   * How much a step sends (its wire or CPU time): STEP_NS, so that guest
   * writes interleave finely. A thread that had to wait for a CPU in the
   * last step (its CPUs taken by vCPUs or others) fills its socket buffer
   * before it waits again, as a real one blocked on a full socket does: the
   * step is then the time the link takes to drain the buffer. (With 1 ms
   * steps a wait for a vCPU's slice at every step held a 1 Gbit/s precopy
   * to 32 MB/s.)
   */
  private stepNs(): number {
    if (!this.cpuWaited) return STEP_NS;
    const link = this.link!;
    return Math.max(STEP_NS, (Math.min(link.sndbuf, link.rcvbuf) * NSEC_PER_SEC) / link.bandwidth);
  }

  /** The QEMU thread named by `work` on kernel `k`, for this migration (created at its first work). */
  private thread(work: CpuWork, k: Kernel): PacedThread {
    const key = `${k === this.k ? 'src' : 'dst'}:${work.name}`;
    let t = this.threads.get(key);
    if (!t) this.threads.set(key, (t = new PacedThread(k, work)));
    return t;
  }

  /** The bytes every channel's socket can hold ahead of the wire (the main channel's and each multifd channel's). */
  /** The room a sender may run ahead by: each channel's (the main one and multifd's) Link.aheadRoom. */
  private get aheadRoomTotal(): number {
    return this.link!.aheadRoom * (1 + (this.multifd?.channels.length ?? 0));
  }

  /** Bytes queued for the main channel by a multifd sync (RAM_SAVE_FLAG_MULTIFD_FLUSH), taken by what sends next. */
  private takeMainPending(): number {
    const n = this.mainPending;
    this.mainPending = 0;
    return n;
  }

  /**
   * migration_rate_set: the bytes one BUFFER_DELAY window may carry,
   * max-bandwidth / XFER_LIMIT_RATIO. QEMU divides in integers, and a
   * result of 0 is RATE_LIMIT_DISABLED (max-bandwidth 0, or below 10
   * bytes/s): no limit at all. (The limit itself is kept unrounded here,
   * less than a byte per window from QEMU's.)
   */
  private rateLimitMax(): number {
    const perWindow = (this.parameters['max-bandwidth'] * BUFFER_DELAY_MS) / 1000;
    return Math.floor(perWindow) === 0 ? Infinity : perWindow;
  }

  /** migration_update_counters: bandwidth and the convergence threshold over the window just ended. */
  private updateCounters(t: number): void {
    const spentNs = t - this.windowStart;
    if (spentNs <= 0) return;
    const spentMs = spentNs / NSEC_PER_MSEC;
    this.bandwidthBytesPerMs = this.windowBytes / spentMs;
    this.thresholdBytes = this.bandwidthBytesPerMs * this.parameters['downtime-limit'];
    this.mbps = (this.windowBytes * 8) / (spentNs / NSEC_PER_SEC) / 1e6;
    this.pagesPerSecond = Math.floor(this.windowPages / (spentNs / NSEC_PER_SEC));
    if (this.dirtyPagesRate && this.windowBytes > 10000 && this.bandwidthBytesPerMs > 0)
      this.expectedDowntimeMs = this.ram!.remainingBytes / this.bandwidthBytesPerMs;
    this.windowStart = t;
    this.windowBytes = 0;
    this.windowPages = 0;
  }

  /** migration_bitmap_sync with its rate period and auto-converge trigger. Returns its ns. */
  private bitmapSync(now: number): number {
    const ram = this.ram!;
    const r = ram.sync();
    // multifd_send_sync_main at every bitmap sync (QEMU 8.0+): a sync packet on each channel, a flush on the main.
    if (this.multifd) this.mainPending += this.multifd.sync();
    this.recordIteration(r.newDirty);
    if (now - this.periodStart > NSEC_PER_SEC) {
      const bytesXfer = ram.bytes - this.periodBytesStart;
      const bytesDirty = ram.dirtyPagesPeriod * PAGE_SIZE;
      // migration_trigger_throttle: auto-converge throttles the guest, or dirty-limit limits each vCPU.
      const throttling = this.capabilities.get('auto-converge') || this.capabilities.get('dirty-limit');
      if (throttling && bytesDirty > (bytesXfer * this.parameters['throttle-trigger-threshold']) / 100) {
        if (++this.dirtyRateHighCnt >= 2) {
          this.dirtyRateHighCnt = 0;
          if (this.capabilities.get('auto-converge'))
            this.throttleGuestDown(bytesDirty, (bytesXfer * this.parameters['throttle-trigger-threshold']) / 100);
          else this.dirtyLimitGuest();
        }
      }
      this.xbzrle?.updateRates(ram.normal + ram.duplicate + ram.xbzrlePages);
      this.dirtyPagesRate = Math.floor((ram.dirtyPagesPeriod * NSEC_PER_SEC) / (now - this.periodStart));
      ram.dirtyPagesPeriod = 0;
      this.periodStart = now;
      this.periodBytesStart = ram.bytes;
    }
    return r.ns;
  }

  /** mig_throttle_guest_down. */
  private throttleGuestDown(bytesDirty: number, bytesThreshold: number): void {
    const p = this.parameters;
    let next: number;
    if (!this.throttlePercentage) next = p['cpu-throttle-initial'];
    else if (!p['cpu-throttle-tailslow']) next = this.throttlePercentage + p['cpu-throttle-increment'];
    else {
      // Tailslow: just enough to bring the dirty rate under the threshold, at most one increment.
      const ratio = 1 - bytesThreshold / bytesDirty;
      const needed = Math.ceil(100 - (100 - this.throttlePercentage) * (1 - ratio));
      next = Math.min(this.throttlePercentage + p['cpu-throttle-increment'], Math.max(needed, this.throttlePercentage + 1));
    }
    this.throttlePercentage = Math.min(next, p['max-cpu-throttle']);
  }

  private recordIteration(newDirty: number): void {
    const ram = this.ram!;
    this.iterations.push({
      syncCount: ram.dirtySyncCount,
      at: this.k.clock.now(),
      newDirtyPages: newDirty,
      remainingBytes: ram.remainingBytes,
    });
  }

  /** vm_stop for the switchover: the guest stops and downtime starts. */
  private stopGuest(): void {
    this.guestStopped = true;
    this.opts.onGuest?.('stop');
    this.downtimeStart = this.k.clock.now();
  }

  /**
   * migration_maybe_pause: with pause-before-switchover, the guest stopped,
   * the migration waits in `pre-switchover` until migrate-continue (the
   * management moves its devices meanwhile), then goes on in `next`
   * (`device`, or `postcopy-active`); the wait is downtime. Without the
   * capability it goes on at once. A cancel or a link drop while it waits
   * ends it (the guest runs on the source again).
   */
  private maybePause(next: MigrationStatus, go: () => void): void {
    if (!this.capabilities.get('pause-before-switchover')) {
      go();
      return;
    }
    this.status = 'pre-switchover';
    this.pausedFor = () => {
      this.status = next;
      go();
    };
  }

  /** qmp_migrate_continue: a migration paused in `state` goes on. */
  private qmpContinue(a: QmpArgs): Record<string, never> {
    if (a.state === undefined) throw new QmpError('GenericError', "Parameter 'state' is missing");
    if (typeof a.state !== 'string' || !(MIGRATION_STATUSES as readonly string[]).includes(a.state))
      throw new QmpError('GenericError', `Parameter 'state' does not accept value '${String(a.state)}'`);
    if (this.status !== a.state) throw new QmpError('GenericError', `Migration not in expected state: ${this.status}`);
    const go = this.pausedFor;
    this.pausedFor = null;
    // The migration thread wakes (qemu_sem_post) and goes on from the monitor's instant.
    if (go)
      this.arm(this.k.clock.now(), 'migration-continue', () => {
        this.event = null;
        go();
      });
    return {};
  }

  /** The stop-and-copy's bitmap sync, the guest stopped (its ns). */
  private finalSync(): number {
    this.precopyNotify('complete'); // migration_switchover_start, before the final sync
    const r = this.ram!.sync();
    this.recordIteration(r.newDirty);
    return r.ns;
  }

  /**
   * migration_completion: stop the guest, sync, send the rest with no rate
   * limit (at the main channel's share, as it changes), complete.
   */
  private completion(): void {
    this.event = null;
    if (this.status !== 'active') return;
    this.stopGuest();
    this.maybePause('device', () => this.completeStage());
  }

  /** qemu_savevm_state_complete_precopy, the guest stopped: the final sync, everything left without the rate limit. */
  private completeStage(): void {
    const ram = this.ram!;
    const link = this.link!;
    const flow = this.flow!;
    const syncNs = this.finalSync();
    ram.lastStage = true;
    flow.start();
    const mf = this.multifd;
    let res: SendResult;
    // With multifd: the rest goes in packets, then ram_save_complete's multifd_send_sync_main and flush. The
    // channels' threads run while the guest is stopped, its vCPUs idle: each is taken to have a CPU (their work
    // is still spent on the scheduler).
    let chLoads: { flow: Flow; bytes: number }[] = [];
    let chSrcNs = 0;
    let chDstNs = 0;
    if (mf) {
      for (const c of mf.channels) c.flow.start();
      const st = mf.send(Infinity, Infinity);
      this.mainPending += mf.sync();
      mf.drainPending(st.channels);
      res = st.main;
      chLoads = mf.channels.map((c, i) => {
        const l = st.channels[i]!;
        this.k.spend(c.send, l.srcNs);
        this.dest!.k.spend(c.recv, l.dstNs);
        chSrcNs = Math.max(chSrcNs, l.srcNs);
        chDstNs = Math.max(chDstNs, l.dstNs);
        if (!l.bytes) c.flow.stop();
        return { flow: c.flow, bytes: l.bytes };
      });
    } else res = ram.send(Infinity, Infinity, flow.rate);
    this.spendCpu(syncNs + res.srcNs, res.dstNs);
    const mainBytes = res.bytes + this.takeMainPending() + ram.sendEos();
    const bytes = mainBytes + chLoads.reduce((n, l) => n + l.bytes, 0);
    link.carry(bytes);
    this.downtimeBytes = bytes;
    // What query-migrate's downtime measures (QEMU 7.2, source side): migration_completion stops the guest
    // (vm_stop_force_state, downtime_start), qemu_savevm_state_complete_precopy writes the rest into the
    // channel's socket, and migration_calculate_complete takes downtime = end_time - downtime_start once those
    // writes (qemu_fflush) have returned; precopy waits for nothing from the destination. A write returns once
    // its bytes fit in the socket's buffer, so the last one returns when all but the buffer's room (sndbuf)
    // of what was queued plus the final stage has left on the wire. What was queued depends on how busy the
    // channel was: a sender that keeps its channel busy (no max-bandwidth) runs ahead of the wire by its
    // buffer, which is full at the switchover, and the final stage goes at the link rate (validate qemu's
    // `ceiling`: 25 MB in 111 ms, 226 MB/s); a rate-capped sender sleeps at the end of each window
    // (migration_rate_exceeded) while the wire drains its buffer, so the final stage first fills empty room
    // (the capped runs: 329-1294 MB/s). memtwin's steps end when their bytes are on the wire, so the queue at
    // the switchover is what a sender ahead by its buffer would still have had in it: the last busy stretch's
    // bytes, at most sndbuf, less what the wire carried while idle since. The guest runs on the destination
    // once the last byte has arrived and been loaded.
    const now = this.k.clock.now();
    const wireStart = now + wholeNs(syncNs);
    // (aheadRoom: the send buffer, and the receiver's too when the receiver, not the wire, sets the rate.)
    const room = this.aheadRoomTotal - this.queuedAt(wireStart, this.aheadRoomTotal);
    const srcCpu = now + wholeNs(syncNs + Math.max(res.srcNs, chSrcNs));
    const dstCpu = now + wholeNs(syncNs + Math.max(res.srcNs, res.dstNs, chSrcNs, chDstNs));
    const srcDone = (w: { tx: OnWire; stall: number }): number => Math.max(srcCpu, w.tx.at(Math.max(0, bytes - room))) + w.stall;
    const dstDone = (w: { tx: OnWire; stall: number }): number => Math.max(dstCpu, w.tx.at(bytes)) + w.stall + link.latency;
    let running: EventHandle | null = null;
    let idle: EventHandle | null = null;
    const completed = (): void => {
      this.event = null;
      this.endTime = this.k.clock.now();
      this.downtime = this.endTime - this.downtimeStart;
      ram.stopDirtyLog();
      this.throttlePercentage = 0;
      this.status = 'completed';
      const differing = ram.verify(Number.MAX_SAFE_INTEGER);
      this.contentCheck = { pagesDiffering: differing.length, differing: differing.slice(0, 10) };
      planRunning();
      this.end();
    };
    const planRunning = (): void => {
      running?.cancel();
      const at = dstDone(w);
      if (at === Infinity) return;
      running = this.k.events.schedule(Math.max(at, this.endTime), 'migration-dest-running', () => {
        this.guestStopped = false;
        this.guestResumedAt = this.k.clock.now();
        this.opts.onGuest?.('start-destination');
      });
    };
    const plan = (): void => {
      if (this.status === 'completed') planRunning();
      else {
        this.event?.ev.cancel();
        const at = srcDone(w);
        if (at !== Infinity) this.arm(at, 'migration-completed', completed);
      }
      // The channel is idle once the last byte is on the wire.
      idle?.cancel();
      const last = w.tx.at(bytes) + w.stall;
      if (last !== Infinity)
        idle = this.k.events.schedule(last, 'migration-channel-idle', () => {
          w.tx.finish();
          if (this.wire === w) this.wire = null;
          flow.stop();
          mf?.close();
        });
    };
    const tx: OnWire = mf
      ? new WireGroup([{ flow, bytes: mainBytes }, ...chLoads], wireStart, () => w.replan())
      : new Transfer(flow, bytes, wireStart, () => w.replan());
    const w = { tx, replan: plan, stall: 0 };
    this.wire = w;
    plan();
  }

  /**
   * What a sender ahead of the wire by its socket buffer (`sndbuf` bytes)
   * would still have queued at `t`: its last busy stretch, at most the
   * buffer, less what the channel carried since its last byte went on the
   * wire (at its rate now).
   */
  private queuedAt(t: number, sndbuf: number): number {
    const idleNs = Math.max(0, t - this.lastWireEnd);
    const rate = this.flow!.rate + (this.multifd?.channels.reduce((r, c) => r + c.flow.rate, 0) ?? 0);
    return Math.max(0, Math.min(sndbuf, this.busyBytes) - (rate * idleNs) / NSEC_PER_SEC);
  }

  /** Schedule the migration thread's next step. */
  private arm(at: number, name: string, run: () => void): void {
    this.event = { ev: this.k.events.schedule(at, name, run), name, run };
  }

  // --- postcopy ---------------------------------------------------------------------

  /** qmp_migrate_start_postcopy. */
  private qmpStartPostcopy(): Record<string, never> {
    if (!this.capabilities.get('postcopy-ram'))
      throw new QmpError('GenericError', 'Enable postcopy with migrate_set_capability before the start of migration');
    if (this.status === 'none') throw new QmpError('GenericError', 'Postcopy must be started after migration has been started');
    this.startPostcopy = true;
    return {};
  }

  /**
   * postcopy_start, at the migration thread's next iteration: stop the
   * guest, sync once more, let the destination discard what is dirty and
   * register guest RAM with userfaultfd, send the package; the guest runs
   * on the destination once it has arrived (downtime ends there).
   */
  private postcopyStart(): void {
    this.stopGuest();
    this.maybePause('postcopy-active', () => this.postcopySwitch());
  }

  private postcopySwitch(): void {
    const ram = this.ram!;
    const link = this.link!;
    const now = this.k.clock.now();
    const paused = now - this.downtimeStart; // pre-switchover's wait
    this.status = 'postcopy-active';
    const syncNs = this.finalSync();
    ram.stopDirtyLog();
    ram.xbzrle = null; // never in postcopy
    let pc: Postcopy;
    try {
      pc = new Postcopy(ram, this.vm, this.dest!, link, this.flow!, {
        preempt: this.capabilities.get('postcopy-preempt') === true,
        maxBandwidth: this.parameters['max-postcopy-bandwidth'],
        ...this.opts.postcopy,
      });
    } catch (e) {
      this.guestStopped = false;
      this.opts.onGuest?.('start-source');
      return this.fail((e as Error).message);
    }
    this.postcopy = pc;
    const listen = pc.listen();
    // POSTCOPY_ADVISE/LISTEN/RUN commands and the discard ranges, in one package; no device state is modelled.
    // multifd carries precopy only: its channels go idle (nothing is in flight between steps).
    this.multifd?.close();
    const bytes = listen.bytes + 3 * STREAM_MARKER_BYTES + this.takeMainPending() + ram.sendEos();
    link.carry(bytes);
    this.downtimeBytes = bytes;
    pc.onDone = () => this.postcopyDone();
    // The package's few KiB go at the main channel's share now.
    const rate = this.flow!.net.rateIfActive(this.flow!);
    const resumeAt = now + wholeNs(syncNs + listen.ns) + link.deliveryNs(bytes, rate);
    this.arm(resumeAt, 'postcopy-run', () => {
      this.event = null;
      const t = this.k.clock.now();
      // As QEMU reports it: until the source has written the package (the guest resumes later, once it has arrived).
      this.downtime = paused + wholeNs(syncNs) + link.transferNs(Math.max(0, bytes - link.sndbuf), rate);
      this.guestResumedAt = t;
      this.guestStopped = false;
      pc.run(t);
      this.opts.onGuest?.('start-destination');
    });
  }

  private postcopyDone(): void {
    const pc = this.postcopy!;
    this.endTime = this.k.clock.now();
    if (pc.status === 'lost') {
      this.vmLost = true;
      this.errorDesc = 'memtwin: the source was lost during postcopy; the destination lacks pages and the VM is lost';
      this.status = 'failed';
      this.end();
      return;
    }
    this.status = 'completed';
    this.contentCheck = { pagesDiffering: pc.stats.pagesDiffering, differing: pc.stats.differing };
    this.end();
  }

  /** query-migrate on the destination (fill_destination_migration_info), with postcopy-blocktime. */
  private incomingQuery(): Record<string, unknown> {
    const pc = this.postcopy;
    const status = pc ? (pc.status === 'lost' ? 'postcopy-paused' : pc.status) : this.status === 'completed' ? 'completed' : 'active';
    if (!pc || !this.capabilities.get('postcopy-blocktime')) return { status };
    const ms = (ns: number): number => Math.floor(ns / NSEC_PER_MSEC);
    return {
      status,
      'postcopy-blocktime': ms(pc.stats.totalBlocktime),
      'postcopy-vcpu-blocktime': pc.stats.vcpuBlocktime.map(ms),
    };
  }

  // --- faults injected --------------------------------------------------------------

  /** The link carries nothing for `ns` from now (a stall TCP survives). */
  linkStall(ns: number): void {
    if (this.postcopy && (this.postcopy.status === 'postcopy-active' || this.postcopy.status === 'postcopy-recover')) {
      this.postcopy.stall(ns);
      return;
    }
    if (!this.isActive() || !this.event) return;
    // Bytes on the wire arrive that much later (the step or the completion ends later); a thread asleep until
    // its rate window ends, with nothing in flight, wakes as it would have.
    if (this.wire && this.wire.tx.at(this.wire.tx.bytes) + this.wire.stall > this.k.clock.now()) {
      this.wire.stall += ns;
      this.wire.replan();
      return;
    }
    const { ev, name, run } = this.event;
    ev.cancel();
    this.arm(Math.max(ev.at, this.k.clock.now()) + ns, name, run);
  }

  /**
   * The link drops. Precopy fails and the guest goes on (or resumes) on the
   * source; postcopy pauses until `migrate` with resume=true.
   */
  linkDrop(): void {
    if (this.postcopy) {
      this.postcopy.drop();
      return;
    }
    if (!this.isActive()) return;
    this.event?.ev.cancel();
    this.event = null;
    this.fail('Unable to write to socket: Broken pipe');
    if (this.guestStopped) {
      this.guestStopped = false;
      this.opts.onGuest?.('start-source');
    }
  }

  /** The source host is lost. During postcopy the VM is lost with it. */
  sourceLost(): void {
    if (this.postcopy) {
      this.postcopy.loseSource();
      return;
    }
    if (this.status === 'completed') return;
    this.event?.ev.cancel();
    this.event = null;
    this.vmLost = true;
    this.fail('memtwin: the source was lost; the VM is lost with it');
  }
}

/**
 * ram_pagesize_summary: the OR of every RAM block's page size. With
 * postcopy-ram the source sends its summary in POSTCOPY_ADVISE, before any
 * RAM, and the destination refuses a different one
 * (loadvm_postcopy_handle_advise): postcopy places whole host pages with
 * userfaultfd and discards whole host pages on the source, so each block's
 * page size must be the same on both sides. QEMU's error, or undefined when
 * they match. (QEMU's summary also ORs in its 4K ROM and device blocks,
 * which memtwin's VMs do not have: 2M guest RAM reads s=201000 there, 200000
 * here.)
 */
export function postcopyPageSizeMismatch(src: Vm, dst: Vm): string | undefined {
  const summary = (vm: Vm): number => vm.ramList.blocks.reduce((s, b) => s | b.pageSize, 0);
  const s = summary(src);
  const d = summary(dst);
  return s === d ? undefined : `Postcopy needs matching RAM page sizes (s=${s.toString(16)} d=${d.toString(16)})`;
}
