/**
 * The VMM's side of balloon discards over a real Vm (QEMU's
 * ram_block_discard_range as virtio-balloon, free page hints and free page
 * reporting call it): every range is cut at memslot boundaries and
 * discarded in its RAM block, anonymous RAM with MADV_DONTNEED, shared and
 * hugetlb backends with MADV_REMOVE (see ram_block.ts). Each call runs as
 * the VMM's task in the simulated kernel, which charges the syscall entry
 * and the zap; the time is returned, not advanced, so the device can charge
 * it to the VMM's CPU (VirtioTiming.chargeHost): in a scenario, CPU time of
 * the QEMU thread that handles the queue (main loop, or the iothread for
 * free page hints), after the guest's part of the message.
 *
 * Batched discards (memtwin option) are one process_madvise(MADV_DONTNEED)
 * of an iovec per range on the VMM's own pidfd; the simulated kernel
 * charges one syscall entry for all the iovecs (madvise.ts
 * sysProcessMadvise), so batching saves an entry per range after the first.
 */
import { MADV, PAGE_SIZE } from '../kernel/uapi.ts';
import type { BalloonHost, GpaRange, HostCallResult } from './virtio_balloon.ts';
import type { Vm } from './vm.ts';

export class VmBalloonHost implements BalloonHost {
  /** virtio_balloon_inhibited (VFIO, postcopy, background snapshot): none modelled, so never. */
  inhibited = false;

  constructor(private readonly vm: Vm) {}

  pageSize(gpa: number): number {
    return this.vm.slotOf(gpa)?.block.pageSize ?? 0;
  }

  discardInhibited(): boolean {
    return this.inhibited;
  }

  /** [gpa, gpa + len) cut at memslot boundaries. */
  private pieces(ranges: readonly GpaRange[]): GpaRange[] {
    const out: GpaRange[] = [];
    for (const r of ranges)
      for (let a = r.gpa; a < r.gpa + r.len;) {
        const s = this.vm.slotOf(a);
        if (!s) throw new RangeError(`GPA 0x${a.toString(16)} is not guest RAM`);
        const end = Math.min(r.gpa + r.len, s.gpa + s.size);
        out.push({ gpa: a, len: end - a });
        a = end;
      }
    return out;
  }

  /** Host memory of the VMM in [gpa, gpa + len): resident 4K pages through its page table. */
  private resident(r: GpaRange): number {
    let n = 0;
    const ps = this.pageSize(r.gpa) || PAGE_SIZE;
    for (let a = r.gpa; a < r.gpa + r.len; a += ps) if (typeof this.vm.hostFrame(a) === 'object') n += ps;
    return n;
  }

  discard(ranges: readonly GpaRange[], batched: boolean): HostCallResult {
    const k = this.vm.k;
    const p = this.vm.process;
    const pieces = this.pieces(ranges);
    const time = { ns: 0 };
    let returned = 0;
    let syscalls = 0;
    k.runAsTask(time, () => {
      for (const r of pieces) returned += this.resident(r);
      const anon4k = pieces.every((r) => {
        const s = this.vm.slotOf(r.gpa)!;
        return s.block.pageSize === PAGE_SIZE && !s.block.shared && !s.block.hasFd;
      });
      if (batched && anon4k) {
        // One process_madvise on our own pidfd, UIO_MAXIOV iovecs at a time.
        for (let i = 0; i < pieces.length; i += 1024) {
          const iov = pieces.slice(i, i + 1024).map((r) => [this.vm.translate(r.gpa)!.hva, r.len] as [number, number]);
          k.processMadvise(p, p, iov, MADV.MADV_DONTNEED, 0);
          syscalls++;
        }
        return;
      }
      for (const r of pieces) {
        this.vm.discardGpaRange(r.gpa, r.len);
        syscalls++;
      }
    });
    return { ns: time.ns, syscalls, bytesReturned: returned };
  }

  willNeed(ranges: readonly GpaRange[]): HostCallResult {
    const k = this.vm.k;
    const time = { ns: 0 };
    const pieces = this.pieces(ranges);
    k.runAsTask(time, () => {
      for (const r of pieces) k.madvise(this.vm.process, this.vm.translate(r.gpa)!.hva, r.len, MADV.MADV_WILLNEED);
    });
    return { ns: time.ns, syscalls: pieces.length, bytesReturned: 0 };
  }
}
