/**
 * The KVM dirty ring (Linux virt/kvm/dirty_ring.c, QEMU accel/kvm's
 * kvm_dirty_ring_reap / kvm_dirty_ring_flush), the alternative to the
 * dirty bitmap that `-accel kvm,dirty-ring-size=N` selects.
 *
 * - Each vCPU has a ring of N entries (struct kvm_dirty_gfn). While dirty
 *   logging is on, the first write to a page since it was last harvested
 *   (the page is write-protected again only when its entry is reset) pushes
 *   one entry onto the ring of the vCPU that wrote it.
 * - A ring is soft-full at N - KVM_DIRTY_RING_RSVD_ENTRIES (64) entries
 *   (kvm_dirty_ring_soft_full; kvm_cpu_dirty_log_size() adds the PML
 *   buffer's 512 on Intel with PML, 0 on AMD, which this machine is): the
 *   vCPU exits to userspace with KVM_EXIT_DIRTY_RING_FULL, and QEMU's vCPU
 *   thread reaps under the BQL (kvm_dirty_ring_reap: every vCPU's ring
 *   without dirty-limit, its own with dirty-limit in service), then
 *   KVM_RESET_DIRTY_RINGS re-protects the pages, and the vCPU runs again.
 *   The vCPU loses the exit and the reap: kvm_exit_dirty_ring_full per
 *   exit plus kvm_dirty_ring_reap_per_entry per entry reaped.
 * - A migration bitmap sync (kvm_log_sync_global -> kvm_dirty_ring_flush)
 *   reaps every ring instead of KVM_GET_DIRTY_LOG over every memslot: its
 *   cost follows the pages dirtied, not the guest's size
 *   (kvm_dirty_ring_reap_per_entry per entry, one KVM_RESET_DIRTY_RINGS).
 * - QEMU's reaper thread, which also reaps once a second, is not modelled
 *   (its work falls to the next sync or ring-full exit).
 *
 * Which pages are dirty is still read by the migration from the host page
 * table (ram.ts): the ring decides costs and the vCPU's stalls, never what
 * is sent, so no write is lost whichever tracks it. Writes that no store
 * hook reports (the guest kernel's, a fault's) push no entry; a sync
 * charges the pages it finds dirty beyond those the rings held.
 */
/** KVM_DIRTY_RING_RSVD_ENTRIES (include/linux/kvm_dirty_ring.h). */
export const KVM_DIRTY_RING_RSVD_ENTRIES = 64;
/** KVM_DIRTY_RING_MAX_ENTRIES. */
export const KVM_DIRTY_RING_MAX_ENTRIES = 65536;
/** sizeof(struct kvm_dirty_gfn). */
export const KVM_DIRTY_GFN_BYTES = 16;

/**
 * QEMU's and KVM's checks of `dirty-ring-size` (entries): a power of two
 * (kvm_set_dirty_ring_size), at most KVM_DIRTY_RING_MAX_ENTRIES
 * (kvm_dirty_ring_init), and at least a page of entries and the reserved
 * ones (kvm_vm_ioctl_enable_dirty_log_ring's EINVAL, which QEMU reports).
 * QEMU's error, or undefined.
 */
export function dirtyRingSizeError(n: number): string | undefined {
  if (!Number.isInteger(n) || n < 0 || n > 2 ** 32 - 1) return "Parameter 'dirty-ring-size' expects uint32";
  if (n === 0) return undefined;
  if (n & (n - 1)) return 'dirty-ring-size must be a power of two.';
  if (n > KVM_DIRTY_RING_MAX_ENTRIES)
    return `KVM dirty ring size ${n} too big (maximum is ${KVM_DIRTY_RING_MAX_ENTRIES}).  Please use a smaller value.`;
  if (n * KVM_DIRTY_GFN_BYTES < 4096 || n < KVM_DIRTY_RING_RSVD_ENTRIES)
    return 'Enabling of KVM dirty ring failed: Invalid argument. Suggested minimum value is 1024.';
  return undefined;
}

export interface DirtyRingCosts {
  /** One KVM_EXIT_DIRTY_RING_FULL exit to QEMU and back into the guest. */
  exitNs: number;
  /** Reaping one entry (into the bitmap) and re-protecting its page at KVM_RESET_DIRTY_RINGS. */
  perEntryNs: number;
  /** One ioctl (KVM_RESET_DIRTY_RINGS). */
  ioctlNs: number;
}

export class KvmDirtyRing {
  readonly softLimit: number;
  /** Entries on each vCPU's ring (not reaped yet), and their pages. */
  private readonly used: number[];
  private readonly entries: Int32Array[];
  /** Per page (ram_addr page index): an entry for it is on some ring. */
  private readonly inRing: Uint8Array;
  /** KVM_EXIT_DIRTY_RING_FULL exits, per vCPU and in all. */
  readonly fullExitsPerVcpu: number[];
  fullExits = 0;
  /** vCPU time lost to ring-full exits (exit and reap), per vCPU. */
  readonly lostNsPerVcpu: number[];
  /** Entries pushed per vCPU since the caller last took them (dirtyPeriod). */
  private readonly pushed: number[];
  /** Entries reaped by ring-full exits since the last sync's flush. */
  private reapedSinceFlush = 0;
  entriesReaped = 0;

  constructor(
    readonly size: number,
    nrVcpus: number,
    totalPages: number,
    private readonly costs: DirtyRingCosts,
  ) {
    const e = dirtyRingSizeError(size);
    if (e || size === 0) throw new RangeError(e ?? 'memtwin: a dirty ring of 0 entries');
    this.softLimit = size - KVM_DIRTY_RING_RSVD_ENTRIES;
    this.used = new Array<number>(nrVcpus).fill(0);
    this.entries = Array.from({ length: nrVcpus }, () => new Int32Array(size));
    this.inRing = new Uint8Array(totalPages);
    this.fullExitsPerVcpu = new Array<number>(nrVcpus).fill(0);
    this.lostNsPerVcpu = new Array<number>(nrVcpus).fill(0);
    this.pushed = new Array<number>(nrVcpus).fill(0);
  }

  get nrVcpus(): number {
    return this.used.length;
  }

  /**
   * vCPU `vcpu` wrote page `page`: an entry if the page has none; at the
   * soft limit the vCPU exits and reaps (all rings, or only its own when
   * `ownOnly`, dirty-limit in service). Returns the ns the vCPU loses.
   */
  push(vcpu: number, page: number, ownOnly: boolean): number {
    if (this.inRing[page]) return 0;
    this.inRing[page] = 1;
    const ring = this.entries[vcpu]!;
    ring[this.used[vcpu]!++] = page;
    this.pushed[vcpu]!++;
    if (this.used[vcpu]! < this.softLimit) return 0;
    this.fullExits++;
    this.fullExitsPerVcpu[vcpu]!++;
    let n = 0;
    if (ownOnly) n = this.reapRing(vcpu);
    else for (let v = 0; v < this.used.length; v++) n += this.reapRing(v);
    this.reapedSinceFlush += n;
    const ns = this.costs.exitNs + n * this.costs.perEntryNs + this.costs.ioctlNs;
    this.lostNsPerVcpu[vcpu]! += ns;
    return ns;
  }

  /** Harvest one ring: its pages can push again. Returns the entries. */
  private reapRing(v: number): number {
    const n = this.used[v]!;
    const ring = this.entries[v]!;
    for (let i = 0; i < n; i++) this.inRing[ring[i]!] = 0;
    this.used[v] = 0;
    this.entriesReaped += n;
    return n;
  }

  /**
   * kvm_dirty_ring_flush for a bitmap sync that found `logged` pages
   * dirty since the last one: every ring reaped; the ns it costs.
   */
  flush(logged: number): number {
    let n = 0;
    for (let v = 0; v < this.used.length; v++) n += this.reapRing(v);
    // Pages dirtied by paths that push no entry are harvested at the same cost.
    const unreported = Math.max(0, logged - n - this.reapedSinceFlush);
    this.reapedSinceFlush = 0;
    return (n + unreported) * this.costs.perEntryNs + this.costs.ioctlNs;
  }

  /** Entries vCPU `vcpu` pushed since the last call (the dirty-limit's per-vCPU dirty rate). */
  takePushed(vcpu: number): number {
    const n = this.pushed[vcpu]!;
    this.pushed[vcpu] = 0;
    return n;
  }

  /** Entries on the rings now. */
  get pending(): number {
    return this.used.reduce((a, b) => a + b, 0);
  }
}
