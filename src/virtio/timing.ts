/**
 * Virtual time and accounting shared by a virtio driver (guest) and its
 * device (VMM). Both sides charge their work here; neither imports the
 * other. Every duration comes from a cost table (a CostProfile satisfies
 * it); nothing here is a constant.
 *
 * Two modes:
 * - sequential (no `cpus`: unit tests, op-scripts, any caller without a
 *   scheduler): each charge advances the clock at once, so a message's
 *   guest work, the device's work and the wakeups follow one another on
 *   the one timeline and nothing else runs meanwhile.
 * - scheduled (`cpus` given: a scenario, whose Kernel has a scheduler):
 *   the guest's work (driver CPU, the vCPU time of its VM exits, interrupt
 *   handling) is CPU time of the driver's vCPU thread, and the device's
 *   work (virtqueue handling, iov copies, the host syscalls of its
 *   discards) CPU time of QEMU's main-loop thread (free page hints: its
 *   iothread), each competing for a host CPU with whatever runs there.
 *   The driver runs a work item in steps (runSteps), one message each: a
 *   step's effects happen when it starts, as a workload step's do
 *   (Kernel.runAsTask's rule), while its charges only add up; then it
 *   settles. Its guest part is spent on the vCPU, then its host part on
 *   QEMU's thread. A driver that waited for the host (tell_host's
 *   wait_event, a free page report: the vCPU halts while QEMU works) goes
 *   on after the host part and the two wakeups (eventfd_wakeup x2:
 *   latency, no CPU); one that did not (hints, stats) goes on once its own
 *   part is done while QEMU works on. Going on is the next step, or, after
 *   the last, the work item's continuation (a requeue, the next reporting
 *   pass). What a step reports (atCompletion: an `actual` change, the last
 *   hint handled) is stamped with the time all of its work is done, not
 *   the time it started. Each thread does one part at a time, in order.
 *   A charge outside any step (the probe, a config interrupt raised by a
 *   QMP command or the migration thread, the OOM notifier's deflate) is
 *   spent on its own thread's CPU, the vCPU's or QEMU's, whoever runs at
 *   the time, with no one waiting for it.
 */
import type { CpuWork } from '../kernel/kernel.ts';
import type { VirtualClock } from '../sim/clock.ts';
import type { EventQueue } from '../sim/event_queue.ts';

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

/** Where a scheduled VirtioTiming's work runs (see the header). */
export interface VirtioCpus {
  /** Kernel.spend: `ns` of CPU time on a CPU `on` allows, onDone when done. */
  spend(on: CpuWork, ns: number): unknown;
  /** Timers: the wakeups' latency. */
  events: EventQueue;
  /** The driver's vCPU thread (its workqueue's kworker runs there). */
  guest: CpuWork;
  /** QEMU's main-loop thread: the device's queue handlers and host syscalls. */
  host: CpuWork;
  /** QEMU's iothread, for device work QEMU runs there (free page hints); default: `host`. */
  iothread?: CpuWork;
}

/** The charges of one step, not yet spent. */
interface PendingStep {
  guestNs: number;
  /** Host parts in the order their threads work: [thread, ns]. */
  host: [CpuWork, number][];
  waitNs: number;
  /** The driver waited for the host (vcpuWait) in this step. */
  waited: boolean;
  /** Called when all of the step's work is done. */
  done: ((at: number) => void)[];
}

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
  /** Scheduled mode: the step running now (its charges add up here). */
  private step: PendingStep | null = null;
  /** Scheduled mode: the QEMU thread the device's work runs on now. */
  private hostThread: CpuWork | null = null;
  /** Scheduled mode: per thread (by name), whether a step's part runs on it and the parts waiting for it. */
  private readonly threads = new Map<string, { busy: boolean; waiting: (() => void)[] }>();
  /** Scheduled mode: work charged outside a step at this instant, by thread, not yet spent. */
  private loose: Map<string, [CpuWork, number]> | null = null;

  constructor(
    readonly clock: VirtualClock,
    readonly costs: CostTable,
    /** Scheduled mode (see the header); sequential without. */
    readonly cpus?: VirtioCpus,
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

  /** The guest's CPU works for `ns`. */
  chargeGuest(ns: number): void {
    this.guestCpuNs += ns;
    this.onGuest(ns);
  }

  /** The VMM's CPU works for `ns` (device emulation, host syscalls). */
  chargeHost(ns: number): void {
    this.hostCpuNs += ns;
    const c = this.cpus;
    if (!c) return void this.clock.advance(ns);
    const on = this.hostThread ?? c.host;
    const s = this.step;
    if (!s) return this.outsideStep(on, ns);
    const last = s.host[s.host.length - 1];
    if (last && last[0] === on) last[1] += ns;
    else s.host.push([on, ns]);
  }

  /** A queue notification: one VM exit through ioeventfd. */
  kickExit(): void {
    const ns = this.cost('vmexit_ioeventfd');
    this.exits++;
    this.kicks++;
    this.exitNs += ns;
    this.onGuest(ns);
  }

  /** A config-space access: one VM exit to QEMU userspace. */
  configExit(): void {
    const ns = this.cost('vmexit_mmio_user');
    this.exits++;
    this.configExits++;
    this.exitNs += ns;
    this.onGuest(ns);
  }

  /**
   * A driver that sleeps until the device has used its buffer (tell_host's
   * wait_event) halts its vCPU; the device's work is already charged (it
   * ran before the kick returned), so what the wait adds is two host
   * wakeups: the ioeventfd waking QEMU's main loop to handle the kick, and
   * the irqfd waking the halted vCPU's thread to take the interrupt.
   * Sequentially both are charged once the buffer is back, which changes no
   * total; in a step they pass after its host part (latency, no CPU).
   */
  vcpuWait(): void {
    const ns = 2 * this.cost('eventfd_wakeup');
    this.waits++;
    this.waitNs += ns;
    if (!this.cpus) return void this.clock.advance(ns);
    if (this.step) {
      this.step.waitNs += ns;
      this.step.waited = true;
    }
  }

  /**
   * An interrupt into the guest (vring or config change): the vCPU's work
   * whoever raised it (a QMP command on QEMU's main loop, the migration
   * thread's hint request).
   */
  interrupt(): void {
    this.interrupts++;
    this.chargeGuest(this.cost('virtio_irq_inject'));
  }

  /** Guest (vCPU) time: the clock sequentially, the step's guest part, or the vCPU at once outside a step. */
  private onGuest(ns: number): void {
    const c = this.cpus;
    if (!c) return void this.clock.advance(ns);
    if (this.step) this.step.guestNs += ns;
    else this.outsideStep(c.guest, ns);
  }

  /**
   * Work charged outside a step: spent on `on`'s thread, after what this
   * timing gave that thread before; charges of one instant are spent
   * together (an event at that instant), not as a scheduler task each.
   */
  private outsideStep(on: CpuWork, ns: number): void {
    const c = this.cpus!;
    if (!this.loose) {
      const loose = (this.loose = new Map());
      c.events.schedule(this.clock.now(), 'virtio: cpu', () => {
        this.loose = null;
        for (const [w, n] of loose.values()) this.spendInOrder(w, n, () => {});
      });
    }
    const e = this.loose.get(on.name);
    if (e) e[1] += ns;
    else this.loose.set(on.name, [on, ns]);
  }

  /** Run `f` as device work of QEMU's iothread (free page hints) instead of its main loop. */
  onIothread<T>(f: () => T): T {
    const saved = this.hostThread;
    this.hostThread = this.cpus?.iothread ?? this.cpus?.host ?? null;
    try {
      return f();
    } finally {
      this.hostThread = saved;
    }
  }

  /**
   * A driver's work item run in steps: each `steps.next()` is one step (a
   * message's worth: the generator yields once it has sent one), and
   * `then` continues when the last is complete, with that time. Without a
   * scheduler, or inside another step, every step runs now, one after the
   * other, as the sequential model always did; scheduled, each step's CPU
   * is spent before the next starts (see settle).
   */
  runSteps(steps: Iterator<unknown>, then?: (at: number) => void): void {
    if (!this.cpus || this.step) {
      while (!steps.next().done);
      if (then) this.atCompletion(then);
      return;
    }
    const one = (): void => {
      const s: PendingStep = { guestNs: 0, host: [], waitNs: 0, waited: false, done: [] };
      this.step = s;
      let last = true;
      try {
        last = !!steps.next().done;
      } finally {
        this.step = null;
      }
      this.settle(s, (at) => (last ? then?.(at) : one()));
    };
    one();
  }

  /**
   * Call `f` with the time the work being charged now is done: at once
   * (the clock's time) sequentially or outside a step, when all of the
   * step's work is done inside one. Results' times (an `actual` update,
   * the last hint handled) come from here.
   */
  atCompletion(f: (at: number) => void): void {
    if (this.step) this.step.done.push(f);
    else f(this.clock.now());
  }

  /**
   * Spend a step: its guest part on the vCPU, then its host parts on
   * QEMU's threads in order. A driver that waited for the host (tell_host,
   * a report: vcpuWait) continues after the host part and the wakeups; one
   * that did not (free page hints, stats: the driver kicks and goes on)
   * continues once its own part is done, while QEMU works on. The step's
   * atCompletion callbacks run when all of it is done.
   */
  private settle(s: PendingStep, cont: (at: number) => void): void {
    const c = this.cpus!;
    const complete = (at: number): void => {
      for (const f of s.done) f(at);
    };
    const host = (i: number, end: (at: number) => void): void => {
      if (i === s.host.length) return end(this.clock.now());
      const [on, ns] = s.host[i]!;
      this.spendInOrder(on, ns, () => host(i + 1, end));
    };
    this.spendInOrder(c.guest, s.guestNs, (at) => {
      if (!s.waited) {
        // The kick is out: QEMU's thread takes the message while the driver goes on.
        host(0, complete);
        return cont(at);
      }
      host(0, () => {
        const wake = (): void => {
          const t = this.clock.now();
          cont(t);
          complete(t);
        };
        if (s.waitNs > 0) c.events.after(s.waitNs, 'virtio: eventfd wakeups', wake);
        else wake();
      });
    });
  }

  /**
   * Spend `ns` on `on`'s thread after what this timing gave that thread
   * before: one thread does one thing at a time (a vCPU, QEMU's main loop).
   */
  private spendInOrder(on: CpuWork, ns: number, onDone: (at: number) => void): void {
    let q = this.threads.get(on.name);
    if (!q) this.threads.set(on.name, (q = { busy: false, waiting: [] }));
    const start = (): void => {
      q.busy = true;
      this.cpus!.spend(
        {
          ...on,
          onDone: (at) => {
            // The thread takes the next waiting part before this one's continuation queues more.
            const next = q.waiting.shift();
            if (next) next();
            else q.busy = false;
            onDone(at);
          },
        },
        ns,
      );
    };
    if (q.busy) q.waiting.push(start);
    else start();
  }
}
