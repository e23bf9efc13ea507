/**
 * Guest-physical memory: the one place, besides virtqueues (src/virtio/),
 * where the guest kernel (src/guest/) and the VMM (src/vmm/) meet. The VMM
 * implements it over its RAM blocks (QEMU's system memory AddressSpace);
 * the guest kernel and guest workloads use it to touch guest-physical
 * addresses (GPAs). Neither side imports the other.
 */
export interface GuestRamRange {
  /** First guest-physical address of the range. */
  readonly gpa: number;
  readonly size: number;
  /** The guest NUMA node the range belongs to (0 without vNUMA). */
  readonly node: number;
}

export interface GuestMemory {
  /** Bytes of guest RAM (the PCI hole not counted). */
  readonly ramSize: number;
  /** The RAM ranges the firmware reports to the guest (e820), ascending, with their guest node. */
  ramRanges(): readonly GuestRamRange[];
  /**
   * vCPU `vcpu` loads (or stores `fill` to) every `stride` bytes of
   * [gpa, gpa + len). Returns the virtual nanoseconds the accesses took,
   * EPT violations and host faults included. Throws on a GPA outside RAM.
   */
  access(vcpu: number, gpa: number, len: number, stride: number, write: boolean, fill?: number): number;
  /**
   * vCPU `vcpu` zeroes whole pages [gpa, gpa + len) (clear_page, as
   * init_on_alloc does for every allocation). Returns the virtual ns.
   */
  clear(vcpu: number, gpa: number, len: number): number;
  /**
   * Optional: `n` calls access(vcpu, gpa + j * 4K, 4K, 4K, true, fill), j
   * ascending, as one call: the same effects, what call j would have
   * returned in ns[j]. An implementation handles a run of never-touched
   * pages at once and each other page as access does. It returns false,
   * having done nothing, when it cannot promise that nothing else runs
   * meanwhile (background work falling due, or no batch to charge the
   * time to): the caller then goes page by page, whose state in between
   * something else might read.
   */
  writePages?(vcpu: number, gpa: number, n: number, fill: number, ns: Float64Array): boolean;
  /** The byte at `gpa` (0 for memory the host has not backed). */
  peek(gpa: number): number;
}
