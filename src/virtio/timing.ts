/**
 * Virtual time and accounting shared by a virtio driver (guest) and its
 * device (VMM). Both sides charge their work here; neither imports the
 * other. Every duration comes from a cost table (a CostProfile satisfies
 * it); nothing here is a constant.
 */
import type { VirtualClock } from '../sim/clock.ts';

/** Where costs come from: CostProfile.nsOf, or any injected table. */
export interface CostTable {
  nsOf(name: string): number;
}

/** Throw one clear error naming every cost `who` needs and the table lacks. */
export function requireCosts(costs: CostTable, names: readonly string[], who: string): void {
  const missing = names.filter((n) => {
    try {
      const v = costs.nsOf(n);
      return !(typeof v === 'number' && v >= 0);
    } catch {
      return true;
    }
  });
  if (missing.length) throw new Error(`${who} needs cost profile entries it lacks: ${missing.join(', ')}`);
}

/**
 * Costs the virtio transport itself charges (see virtqueue.ts, transport.ts):
 * - vmexit_ioeventfd: a vCPU's queue notify (a write to the notify BAR),
 *   the VM exit, the ioeventfd signal in KVM and the re-entry.
 * - vmexit_mmio_user: a vCPU's read or write of the device config space,
 *   an exit all the way to QEMU in userspace and back.
 * - virtio_irq_inject: a used-buffer or config interrupt: irqfd injection
 *   plus the guest's interrupt handler and the wakeup of the waiting task.
 * - virtqueue_add_per_desc: the driver filling one descriptor
 *   (virtqueue_add_split) and publishing the chain in the avail ring.
 * - vmm_virtqueue_elem: QEMU's virtqueue_pop + virtqueue_push of one element
 *   (descriptor walk, address_space_map of its buffers, used ring update).
 * - memcpy_4k: bytes the driver writes into its buffers and the device
 *   copies out of them (iov_to_buf), charged per byte as memcpy_4k / 4096.
 * - eventfd_wakeup: a host thread blocked on an eventfd woken by another
 *   (measured here): the kick's ioeventfd waking QEMU's main loop, and the
 *   used-buffer irqfd waking the vCPU thread that halted while its driver
 *   slept in wait_event (see vcpuWait).
 */
export const TRANSPORT_COSTS = [
  'vmexit_ioeventfd',
  'vmexit_mmio_user',
  'virtio_irq_inject',
  'virtqueue_add_per_desc',
  'vmm_virtqueue_elem',
  'memcpy_4k',
  'eventfd_wakeup',
] as const;

export class VirtioTiming {
  /** Guest CPU time spent by drivers (allocation, encoding, ISRs). */
  guestCpuNs = 0;
  /** vCPU time lost to VM exits (kicks and config accesses). */
  exitNs = 0;
  /** VMM CPU time spent in device emulation (host syscalls included). */
  hostCpuNs = 0;
  /** Exits: queue notifications plus config-space accesses. */
  exits = 0;
  /** Of `exits`, those that were queue notifications (kicks). */
  kicks = 0;
  /** Of `exits`, those that were config-space reads or writes. */
  configExits = 0;
  /** Interrupts injected into the guest. */
  interrupts = 0;
  /** Time a driver's vCPU sat halted waiting for the host beyond the host's own work: thread wakeups. */
  waitNs = 0;
  /** Messages a driver waited for (tell_host, a free page report). */
  waits = 0;

  constructor(
    readonly clock: VirtualClock,
    readonly costs: CostTable,
  ) {
    requireCosts(costs, TRANSPORT_COSTS, 'virtio transport');
  }

  cost(name: string): number {
    return this.costs.nsOf(name);
  }

  /** Bytes copied by either side, priced from memcpy_4k. */
  copyNs(bytes: number): number {
    return (this.costs.nsOf('memcpy_4k') * bytes) / 4096;
  }

  /** The guest's CPU works for `ns`; in this sequential model time advances. */
  chargeGuest(ns: number): void {
    this.guestCpuNs += ns;
    this.clock.advance(ns);
  }

  /** The VMM's CPU works for `ns` (device emulation, host syscalls). */
  chargeHost(ns: number): void {
    this.hostCpuNs += ns;
    this.clock.advance(ns);
  }

  /** A queue notification: one VM exit through ioeventfd. */
  kickExit(): void {
    const ns = this.cost('vmexit_ioeventfd');
    this.exits++;
    this.kicks++;
    this.exitNs += ns;
    this.clock.advance(ns);
  }

  /** A config-space access: one VM exit to QEMU userspace. */
  configExit(): void {
    const ns = this.cost('vmexit_mmio_user');
    this.exits++;
    this.configExits++;
    this.exitNs += ns;
    this.clock.advance(ns);
  }

  /**
   * A driver that sleeps until the device has used its buffer (tell_host's
   * wait_event) halts its vCPU; the device's work is already charged (it
   * ran before the kick returned), so what the wait adds is two host
   * wakeups: the ioeventfd waking QEMU's main loop to handle the kick, and
   * the irqfd waking the halted vCPU's thread to take the interrupt. In
   * this sequential model both are charged once the buffer is back, which
   * changes no total.
   */
  vcpuWait(): void {
    const ns = 2 * this.cost('eventfd_wakeup');
    this.waits++;
    this.waitNs += ns;
    this.clock.advance(ns);
  }

  /** An interrupt into the guest (vring or config change). */
  interrupt(): void {
    this.interrupts++;
    this.chargeGuest(this.cost('virtio_irq_inject'));
  }
}
