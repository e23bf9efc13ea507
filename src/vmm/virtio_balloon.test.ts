/**
 * virtio-balloon end to end: the guest driver (src/guest) and the device
 * (this directory) wired through one transport, over a fake GuestMemory
 * and a fake BalloonHost. Only tests see both sides.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import type { GuestMemory, GuestRamRange } from '../hw/guest_memory.ts';
import { VirtualClock } from '../sim/clock.ts';
import { EventQueue } from '../sim/event_queue.ts';
import { SeededRandom } from '../sim/random.ts';
import { GuestKernel } from '../guest/kernel.ts';
import { PageUse, type GuestPageAlloc } from '../guest/page_alloc.ts';
import { VirtioBalloonDriver, type VirtioBalloonDriverOptions } from '../guest/virtio_balloon.ts';
import { INFLATE_ENCODINGS, type InflateEncodingName } from '../virtio/virtio_balloon.ts';
import { VirtioTiming, type CostTable, type VirtioCpus } from '../virtio/timing.ts';
import { Scheduler } from '../kernel/sched/core.ts';
import { GuestBuffers } from '../virtio/virtqueue.ts';
import type { PrecopyNotifyReason } from './migration/ram.ts';
import {
  FREE_PAGE_HINT_S_DONE,
  VirtioBalloonDevice,
  type BalloonHost,
  type GpaRange,
  type HostCallResult,
  type VirtioBalloonDeviceOptions,
} from './virtio_balloon.ts';

const MiB = 2 ** 20;
const PAGE = 4096;

/** Round numbers, so expected times can be worked out by hand. */
const COSTS: Record<string, number> = {
  vmexit_ioeventfd: 1000,
  vmexit_mmio_user: 5000,
  virtio_irq_inject: 2000,
  virtqueue_add_per_desc: 50,
  vmm_virtqueue_elem: 300,
  memcpy_4k: 4096,
  guest_page_alloc: 100,
  guest_page_free: 80,
  guest_balloon_stats_update: 1500,
  vmm_gpa_lookup: 60,
  vmm_balloon_decode_entry: 2,
  vmm_balloon_decode_bitmap_word: 1,
  eventfd_wakeup: 700,
  fault_anon_4k_write: 1900,
};
const costs: CostTable = {
  nsOf: (n) => {
    const v = COSTS[n];
    if (v === undefined) throw new Error(`cost profile has no entry '${n}'`);
    return v;
  },
};

/** Guest RAM as the host sees it: which pages are backed, and one content byte per page. */
class FakeGuestMemory implements GuestMemory {
  readonly backed: Uint8Array;
  readonly content: Uint8Array;
  onWrite: ((gpa: number, len: number) => void) | null = null;
  constructor(private readonly ranges: GuestRamRange[]) {
    const end = Math.max(...ranges.map((r) => r.gpa + r.size)) / PAGE;
    this.backed = new Uint8Array(end);
    this.content = new Uint8Array(end);
  }
  get ramSize(): number {
    return this.ranges.reduce((s, r) => s + r.size, 0);
  }
  ramRanges(): readonly GuestRamRange[] {
    return this.ranges;
  }
  isRam(gpa: number): boolean {
    return this.ranges.some((r) => gpa >= r.gpa && gpa < r.gpa + r.size);
  }
  access(_vcpu: number, gpa: number, len: number, _stride: number, write: boolean, fill = 0): number {
    let ns = 0;
    for (let p = gpa / PAGE; p < (gpa + len) / PAGE; p++) {
      if (!this.isRam(p * PAGE)) throw new RangeError(`GPA 0x${(p * PAGE).toString(16)} is not RAM`);
      if (!this.backed[p]) ns += 3000; // EPT violation + host fault, a test number
      this.backed[p] = 1;
      if (write) this.content[p] = fill;
    }
    if (write) this.onWrite?.(gpa, len);
    return ns;
  }
  clear(vcpu: number, gpa: number, len: number): number {
    return this.access(vcpu, gpa, len, PAGE, true, 0);
  }
  peek(gpa: number): number {
    return this.content[Math.floor(gpa / PAGE)]!;
  }
}

/** The VMM's discard, checking it never drops a page the guest uses. */
class FakeHost implements BalloonHost {
  calls: { ranges: GpaRange[]; batched: boolean }[] = [];
  willNeedCalls = 0;
  violations: string[] = [];
  constructor(
    private readonly mem: FakeGuestMemory,
    private readonly guest: () => GuestPageAlloc,
    private readonly hostPage = PAGE,
  ) {}
  pageSize(gpa: number): number {
    return this.mem.isRam(gpa) ? this.hostPage : 0;
  }
  discard(ranges: readonly GpaRange[], batched: boolean): HostCallResult {
    this.calls.push({ ranges: [...ranges], batched });
    let returned = 0;
    for (const r of ranges)
      for (let p = r.gpa / PAGE; p < (r.gpa + r.len) / PAGE; p++) {
        const use = this.guest().pageUse(p);
        if (use === PageUse.Anon || use === PageUse.File || use === PageUse.Kernel) this.violations.push(`pfn ${p} (use ${use})`);
        if (this.mem.backed[p]) returned += PAGE;
        this.mem.backed[p] = 0;
        this.mem.content[p] = 0;
      }
    const syscalls = batched ? 1 : ranges.length;
    return { ns: syscalls * 200 + (returned / PAGE) * 300, syscalls, bytesReturned: returned };
  }
  willNeed(ranges: readonly GpaRange[]): HostCallResult {
    this.willNeedCalls += ranges.length;
    return { ns: ranges.length * 200, syscalls: ranges.length, bytesReturned: 0 };
  }
}

interface RigOptions {
  mib?: number;
  device?: Partial<VirtioBalloonDeviceOptions>;
  hostPage?: number;
  pageReportingOrder?: number;
  driver?: Partial<VirtioBalloonDriverOptions>;
  /**
   * Scheduled mode: three host CPUs with a scheduler; the driver's vCPU
   * thread on CPU 0, QEMU's main loop and iothread on CPU 1.
   */
  scheduled?: boolean;
}

const VCPU = { name: 'g/vcpu0', cpus: [0] };
const MAIN = { name: 'g/main', cpus: [1] };
const IOTHREAD = { name: 'g/iothread', cpus: [1] };

function rig(o: RigOptions = {}) {
  const clock = new VirtualClock();
  const events = new EventQueue(clock);
  const sched = o.scheduled
    ? new Scheduler(events, clock, {
        cpuNode: new Map([
          [0, 0],
          [1, 0],
          [2, 0],
        ]),
      })
    : null;
  // Kernel.spend's contract: a work item on the scheduler, onDone at once for no time.
  const cpus: VirtioCpus | undefined = sched
    ? {
        spend: (on, ns) => (ns > 0 ? sched.work(on.name, ns, { allowed: on.cpus, onDone: on.onDone }) : on.onDone?.(clock.now())),
        events,
        guest: VCPU,
        host: MAIN,
        iothread: IOTHREAD,
      }
    : undefined;
  const timing = new VirtioTiming(clock, costs, cpus);
  const buffers = new GuestBuffers();
  const mem = new FakeGuestMemory([{ gpa: 0, size: (o.mib ?? 64) * MiB, node: 0 }]);
  const guest = new GuestKernel(mem, costs);
  const host = new FakeHost(mem, () => guest.pages, o.hostPage);
  const dev = new VirtioBalloonDevice(timing, buffers, events, host, { ramSize: mem.ramSize, ...o.device });
  mem.onWrite = (gpa, len) => dev.markDirty(gpa, len);
  const drv = new VirtioBalloonDriver(guest, dev.transport, events, {
    vmEvents: () => guest.vmEvents,
    pageReportingOrder: o.pageReportingOrder,
    ...o.driver,
  });
  drv.probe();
  /** Run the guest's and the device's events until nothing is due before `ns` from now. */
  const settle = (ns = 10_000_000_000): void => {
    const until = clock.now() + ns;
    for (let t = events.peekTime(); t !== undefined && t <= until; t = events.peekTime()) events.runUntil(t);
    if (clock.now() < until) events.runUntil(until);
  };
  settle(0);
  /** CPU time the scheduler ran for tasks named `name` (se.sum_exec_runtime). */
  const cpuNs = (name: string): number => (sched?.tasks ?? []).filter((t) => t.name === name).reduce((a, t) => a + t.sumExecNs, 0);
  return { clock, events, timing, mem, guest, pages: guest.pages, host, dev, drv, settle, sched, cpuNs };
}

function usesSum(g: GuestPageAlloc): number {
  const uses: PageUse[] = [PageUse.Free, PageUse.Anon, PageUse.File, PageUse.Kernel, PageUse.Balloon, PageUse.Hinted, PageUse.Isolated];
  return uses.reduce<number>((s, u) => s + g.pagesOf(u), 0);
}

describe('virtio-balloon inflate and deflate', () => {
  it('inflates N pages in ceil(N/256) messages of 4-byte PFNs, one kick each, and discards each page', () => {
    const r = rig();
    r.dev.resetMetrics();
    const t0 = r.clock.now();
    const n = 1000;
    r.dev.balloon(64 * MiB - n * PAGE);
    r.settle();
    const m = r.dev.metrics();
    const q = m.perQueue['inflate']!;
    expect(q.messages).toBe(Math.ceil(n / 256));
    expect(q.outBytes).toBe(n * 4); // 256 * 4 * 3 + 232 * 4
    expect(q.bytesRead).toBe(4000);
    expect(q.kicks).toBe(4);
    // each work pass reads num_pages and writes actual: 8 config exits
    expect(m.configExits).toBe(8);
    expect(m.exits).toBe(12);
    expect(m.pfnsInflated).toBe(n);
    expect(r.host.calls.length).toBe(n); // QEMU: one ram_block_discard_range per page
    expect(m.hostSyscalls).toBe(n);
    expect(m.hostBytesReturned).toBe(0); // never-touched guest pages: nothing backed on the host
    expect(r.dev.queryBalloon().actual).toBe(64 * MiB - n * PAGE);
    expect(r.pages.pagesOf(PageUse.Balloon)).toBe(n);
    expect(r.pages.meminfo().MemTotal).toBe(64 * MiB - n * PAGE);
    expect(r.dev.events.at(-1)!.actual).toBe(64 * MiB - n * PAGE);
    // guest CPU: 1000 allocations, 4000 bytes written, 4 descriptors, 4 interrupts, 1 config interrupt
    expect(m.guestCpuNs).toBe(n * 100 + 4000 + 4 * 50 + 4 * 2000 + 2000);
    // the vCPU waits for each of the 4 messages: two host wakeups (ioeventfd, irqfd) of 700 ns
    expect(m.waitNs).toBe(4 * 2 * 700);
    // the host decodes 1000 PFNs at 2 ns each
    expect(m.decodeNs).toBe(n * 2);
    // the work runs back to back: the last write of `actual` ends it
    expect(r.dev.events.at(-1)!.at - t0).toBe(m.guestCpuNs + m.exitNs + m.waitNs + m.hostCpuNs);
  });

  it('deflates in the same messages, telling the host before freeing, and conserves memory', () => {
    const r = rig();
    const free0 = r.pages.freePageCount;
    r.dev.balloon(32 * MiB);
    r.settle();
    expect(r.pages.freePageCount).toBe(free0 - 8192);
    expect(usesSum(r.pages)).toBe(r.pages.totalPages);
    r.dev.resetMetrics();
    r.dev.balloon(64 * MiB);
    r.settle();
    const m = r.dev.metrics();
    expect(m.perQueue['deflate']!.messages).toBe(32);
    expect(m.pfnsDeflated).toBe(8192);
    expect(r.host.willNeedCalls).toBe(8192);
    expect(r.pages.freePageCount).toBe(free0);
    expect(r.pages.nrFreeByOrder(0)).toEqual(rig().pages.nrFreeByOrder(0));
    expect(r.dev.queryBalloon().actual).toBe(64 * MiB);
  });

  it('returns touched memory to the host when it is ballooned', () => {
    const r = rig();
    const { pfns } = r.guest.faultIn(0, PageUse.Anon, r.pages.freePageCount);
    r.guest.release(pfns);
    r.dev.resetMetrics();
    r.dev.balloon(64 * MiB - 4096 * PAGE);
    r.settle();
    expect(r.dev.metrics().hostBytesReturned).toBe(4096 * PAGE);
    expect(r.host.violations).toEqual([]);
  });

  it('with virtio-balloon-chunks inflates high orders first and sends (addr, len) chunks', () => {
    const r = rig({ device: { chunks: true } });
    r.dev.resetMetrics();
    // 7/8 of an idle guest, as in the published experiment (8 GiB there, 64 MiB here)
    r.dev.balloon(8 * MiB);
    r.settle();
    const m = r.dev.metrics();
    expect(r.pages.pagesOf(PageUse.Balloon)).toBe(14336);
    const q = m.perQueue['inflate']!;
    expect(q.messages).toBe(1);
    // the driver's struct took pfn 0 and its chunk buffer pfn 1; the blocks 2..(+14336) are
    // allocated from order 10 down and coalesce into chunks: 13 order-10 blocks [1024, 14336),
    // then order 9 at 512 ... order 1 at 2, which are contiguous with each other: [2, 1024),
    // and the last 2 pages from a split of block 14336
    expect(q.bytesRead % 16).toBe(0);
    const chunks = q.bytesRead / 16;
    expect(chunks).toBeLessThanOrEqual(3);
    expect(m.pfnsInflated).toBe(14336);
    expect(m.configExits).toBe(2);
    expect(r.host.violations).toEqual([]);
    r.dev.balloon(64 * MiB);
    r.settle();
    expect(r.pages.pagesOf(PageUse.Balloon)).toBe(0);
    expect(usesSum(r.pages)).toBe(r.pages.totalPages);
  });

  it('on 2 MiB host pages discards nothing from 256-PFN messages (partial host pages are dropped per message), but whole pages from chunks', () => {
    const pfn = rig({ hostPage: 2 * MiB });
    pfn.guest.release(pfn.guest.faultIn(0, PageUse.Anon, 16000).pfns);
    pfn.dev.resetMetrics();
    pfn.dev.balloon(16 * MiB);
    pfn.settle();
    expect(pfn.dev.metrics().hostSyscalls).toBe(0);
    const ch = rig({ hostPage: 2 * MiB, device: { chunks: true } });
    ch.guest.release(ch.guest.faultIn(0, PageUse.Anon, 16000).pfns);
    ch.dev.resetMetrics();
    ch.dev.balloon(16 * MiB);
    ch.settle();
    const ranges = ch.host.calls.flatMap((c) => c.ranges);
    for (const x of ranges) expect([x.gpa % (2 * MiB), x.len % (2 * MiB)]).toEqual([0, 0]);
    expect(ranges.reduce((a, x) => a + x.len, 0)).toBeGreaterThanOrEqual(46 * MiB);
    expect(ch.host.violations).toEqual([]);
  });

  it('property: with every inflate encoding and allocation, the host discards exactly the pages the guest ballooned, and deflate gives them all back', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...INFLATE_ENCODINGS),
        fc.constantFrom('4k' as const, 'high-order' as const),
        fc.integer({ min: 0, max: 12000 }),
        fc.integer({ min: 2, max: 9 }),
        fc.integer({ min: 1, max: 60 }),
        (enc: InflateEncodingName, alloc, faulted, every, targetMib) => {
          const r = rig({ device: { inflateEncoding: enc }, driver: { inflateAlloc: alloc } });
          // a fragmented guest: `faulted` pages in, every `every`-th one freed again
          const { pfns } = r.guest.faultIn(0, PageUse.Anon, Math.min(faulted, r.pages.freePageCount));
          r.guest.release(pfns.filter((_, i) => i % every === 0));
          r.dev.resetMetrics();
          r.dev.balloon(targetMib * MiB);
          r.settle();
          const discarded: number[] = [];
          for (const c of r.host.calls)
            for (const g of c.ranges) for (let a = g.gpa; a < g.gpa + g.len; a += PAGE) discarded.push(a / PAGE);
          const ballooned: number[] = [];
          for (const b of r.drv.balloonBlocks()) for (let p = b.pfn; p < b.pfn + (1 << b.order); p++) ballooned.push(p);
          expect(discarded.sort((a, b) => a - b)).toEqual(ballooned.sort((a, b) => a - b));
          expect(r.host.violations).toEqual([]);
          const m = r.dev.metrics();
          expect(m.pfnsInflated).toBe(ballooned.length);
          // one vcpuWait per inflate message: two 700 ns wakeups each
          expect(m.waitNs).toBe(2 * 700 * m.perQueue['inflate']!.messages);
          if (enc !== 'pfns' && alloc === 'high-order') expect(r.pages.pagesOf(PageUse.Balloon)).toBe(ballooned.length);
          r.dev.balloon(64 * MiB);
          r.settle();
          expect(r.pages.pagesOf(PageUse.Balloon)).toBe(0);
          expect(usesSum(r.pages)).toBe(r.pages.totalPages);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('charges the host a decode cost per entry and per bitmap word: bitmap inflate of 7/8 of an idle guest', () => {
    const r = rig({ device: { inflateEncoding: 'bitmap' }, driver: { inflateAlloc: '4k' } });
    r.dev.resetMetrics();
    r.dev.balloon(8 * MiB);
    r.settle();
    const m = r.dev.metrics();
    // 14336 pages allocated 4K at a time, contiguous: one 32768-bit window of a 16384-page guest
    // (bits = 16384: 256 words) in one message; runs: the ballooned pages are one or two runs
    const q = m.perQueue['inflate']!;
    expect(q.messages).toBe(1);
    expect(q.bytesRead).toBe(16 + 16384 / 8);
    const runs = (m.decodeNs - 256 * 1) / 2;
    expect(Number.isInteger(runs) && runs >= 1 && runs <= 2).toBe(true);
    expect(m.pfnsInflated).toBe(14336);
    // 4K allocation: 14336 guest allocations at 100 ns
    expect(m.guestCpuNs).toBeGreaterThanOrEqual(14336 * 100);
  });

  it('deflate-on-oom gives pages back when the guest runs out', () => {
    const r = rig({ device: { deflateOnOom: true } });
    r.dev.balloon(4 * MiB);
    r.settle();
    expect(r.pages.meminfo().MemTotal).toBe(64 * MiB); // deflate-on-oom: balloon pages stay in totalram
    const free = r.pages.freePageCount;
    const { pfns } = r.guest.faultIn(0, PageUse.Anon, free + 600);
    expect(pfns.length).toBe(free + 600);
    expect(r.drv.stats().oomDeflates).toBe(3); // 256 pages each
    expect(r.dev.queryBalloon().actual).toBe(4 * MiB + 768 * PAGE);
  });
});

describe('virtio-balloon statistics', () => {
  it('polls the guest and exposes its stats as guest-stats', () => {
    const r = rig({ device: { statsPollIntervalS: 2 } });
    r.guest.faultIn(0, PageUse.Anon, 100);
    r.settle(2_500_000_000);
    const s = r.dev.guestStats();
    expect(s.stats['stat-free-memory']).toBe(r.pages.meminfo().MemFree);
    expect(s.stats['stat-total-memory']).toBe(64 * MiB);
    expect(s.stats['stat-minor-faults']).toBe(100);
    expect(s['last-update']).toBe(2);
    const q = r.dev.metrics().perQueue['stats']!;
    expect(q.messages).toBe(2); // primed at probe, refilled once
    expect(q.bytesRead).toBe(2 * 16 * 10);
  });
});

describe('free page hints', () => {
  /**
   * A 64 MiB guest after probe: the driver's struct at pfn 0 and its hint
   * buffer (one page) at pfn 1. Free: pfn 2 (order 1), 4 (2), ..., 512 (9)
   * and 15 blocks of order 10: 9 + 15 = 24 blocks, 16382 pages.
   */
  const IDLE = { blocks: 24, pages: 16382 };
  const cases = [
    { enc: 'ranges', batch: 256, bytes: IDLE.blocks * 16, msgs: 1 },
    { enc: 'pfn-order', batch: 256, bytes: IDLE.blocks * 8, msgs: 1 },
    { enc: 'pfn-list', pfnBytes: 4, batch: 256, bytes: IDLE.pages * 4, msgs: Math.ceil(IDLE.pages / 256) },
    { enc: 'pfn-list', pfnBytes: 8, batch: 256, bytes: IDLE.pages * 8, msgs: Math.ceil(IDLE.pages / 256) },
    // windows of 4096 pages: all 4 windows of the 16384-page guest have free pages
    { enc: 'bitmap', batch: 4096, bytes: 4 * (16 + 512), msgs: 4 },
  ] as const;

  for (const c of cases)
    it(`${c.enc}${'pfnBytes' in c ? `/${c.pfnBytes}` : ''} on an idle guest: ${c.bytes} bytes in ${c.msgs} messages`, () => {
      const r = rig({
        device: { freePageHint: true, hintEncoding: c.enc, hintPfnBytes: 'pfnBytes' in c ? c.pfnBytes : 4, hintBatch: c.batch },
      });
      expect(r.pages.freePageCount).toBe(IDLE.pages);
      r.dev.resetMetrics();
      r.dev.freePageStart();
      r.settle();
      const q = r.dev.metrics().perQueue['free_page_vq']!;
      expect(q.bytesRead).toBe(c.bytes + 8); // + start and stop command ids
      expect(q.messages).toBe(c.msgs + 2);
      expect(q.kicks).toBe(c.msgs + 2);
      expect(r.dev.hintedPages).toBe(IDLE.pages);
      expect(r.pages.pagesOf(PageUse.Hinted)).toBe(IDLE.pages);
      expect(r.dev.freePageHintStatus).toBe(0); // the guest's stop id ended the round
      expect(r.dev.hintedRanges()).toEqual([{ gpa: 2 * PAGE, len: IDLE.pages * PAGE }]);
    });

  /**
   * Fragmented: every page faulted in, then the even pfns of [1024, 2048)
   * released: 512 free order-0 blocks whose buddies are in use.
   */
  const FRAG = 512;
  const fragCases = [
    { enc: 'ranges', batch: 256, bytes: FRAG * 16, msgs: 2 },
    { enc: 'pfn-order', batch: 256, bytes: FRAG * 8, msgs: 2 },
    { enc: 'pfn-list', pfnBytes: 4, batch: 256, bytes: FRAG * 4, msgs: 2 },
    { enc: 'pfn-list', pfnBytes: 8, batch: 256, bytes: FRAG * 8, msgs: 2 },
    { enc: 'bitmap', batch: 4096, bytes: 16 + 512, msgs: 1 },
  ] as const;

  for (const c of fragCases)
    it(`${c.enc}${'pfnBytes' in c ? `/${c.pfnBytes}` : ''} on a fragmented guest: ${c.bytes} bytes in ${c.msgs} messages`, () => {
      const r = rig({
        device: { freePageHint: true, hintEncoding: c.enc, hintPfnBytes: 'pfnBytes' in c ? c.pfnBytes : 4, hintBatch: c.batch },
      });
      const { pfns } = r.guest.faultIn(0, PageUse.Anon, r.pages.freePageCount);
      r.guest.release(pfns.filter((p) => p >= 1024 && p < 2048 && p % 2 === 0));
      r.dev.resetMetrics();
      r.dev.freePageStart();
      r.settle();
      const q = r.dev.metrics().perQueue['free_page_vq']!;
      expect(q.bytesRead).toBe(c.bytes + 8);
      expect(q.messages).toBe(c.msgs + 2);
      expect(r.dev.hintedPages).toBe(FRAG);
    });

  it('a 2 MiB bitmap hints only whole free 2 MiB units: 512 times fewer bits, sub-2M free memory left out', () => {
    const run = (order: number) => {
      const r = rig({ device: { freePageHint: true, hintEncoding: 'bitmap', hintBatch: 4096, hintBitmapOrder: order, hintDiscard: true } });
      // fragmented below 8 MiB: every page faulted in, the even pfns of [1024, 2048) released
      const { pfns } = r.guest.faultIn(0, PageUse.Anon, 2048 - 2);
      r.guest.release(pfns.filter((p) => p >= 1024 && p < 2048 && p % 2 === 0));
      r.dev.resetMetrics();
      r.dev.freePageStart();
      r.settle();
      return { r, m: r.dev.metrics(), q: r.dev.metrics().perQueue['free_page_vq']! };
    };
    const k4 = run(0);
    const m2 = run(9);
    // the first 8 MiB (four 2 MiB units) is in use but for 512 scattered pages; the 28 units above it are free:
    // 4K hints those 512 pages and the 28 units, 2M only the units
    expect(k4.r.dev.hintedPages).toBe(28 * 512 + 512);
    expect(m2.r.dev.hintedPages).toBe(28 * 512);
    for (const h of m2.r.dev.hintedRanges()) expect((h.gpa % (2 * MiB)) + (h.len % (2 * MiB))).toBe(0);
    // one window of 32 bits (64 MiB at 2 MiB) against four of 4096 bits
    expect(m2.q.bytesRead).toBe(16 + 8 + 8);
    expect(k4.q.bytesRead).toBe(4 * (16 + 512) + 8);
    // the host frees what was hinted
    expect(m2.r.host.violations).toEqual([]);
    expect(m2.m.decodeNs).toBeLessThan(k4.m.decodeNs);
  });

  it('holds hinted pages until DONE, then the guest reuses them and its writes make them dirty again', () => {
    const r = rig({ device: { freePageHint: true, hintEncoding: 'pfn-order', hintBatch: 64 } });
    r.dev.freePageStart();
    r.settle();
    expect(r.pages.freePageCount).toBe(0);
    r.dev.freePageStop();
    r.settle();
    expect(r.pages.pagesOf(PageUse.Hinted)).toBe(16382); // still held after STOP
    r.dev.freePageDone();
    r.settle();
    expect(r.pages.pagesOf(PageUse.Hinted)).toBe(0);
    const { pfns } = r.guest.faultIn(0, PageUse.Anon, 100);
    for (const p of pfns) expect(r.dev.isSkippable(p * PAGE)).toBe(false);
    expect(r.dev.hintedPages).toBe(16382 - 100);
  });

  it('gives held hints back through the shrinker when the guest needs memory mid-migration', () => {
    const r = rig({ device: { freePageHint: true } });
    r.dev.freePageStart();
    r.settle();
    const { pfns } = r.guest.faultIn(0, PageUse.Anon, 10);
    expect(pfns.length).toBe(10);
    for (const p of pfns) expect(r.dev.isSkippable(p * PAGE)).toBe(false);
  });

  it("follows QEMU's precopy notifier: a round after each bitmap sync while the VM runs, DONE after the final one and at cleanup, never with postcopy-ram", () => {
    const r = rig({ device: { freePageHint: true } });
    const notify = (reason: PrecopyNotifyReason, running = true, postcopyRam = false): void => {
      r.dev.precopyNotify(reason, running, postcopyRam);
      r.settle();
    };
    notify('setup');
    expect(r.dev.hintedPages).toBe(0); // nothing before the first sync
    notify('before-bitmap-sync');
    notify('after-bitmap-sync');
    const first = r.dev.freePageHintCmdId;
    expect(r.dev.hintedPages).toBe(16382);
    expect(r.pages.freePageCount).toBe(0); // held by the driver
    notify('before-bitmap-sync');
    notify('after-bitmap-sync');
    expect(r.dev.freePageHintCmdId).toBe(first + 1); // a new round per sync
    notify('complete', false);
    notify('before-bitmap-sync', false);
    notify('after-bitmap-sync', false); // the VM is stopped: DONE
    expect(r.dev.freePageHintStatus).toBe(FREE_PAGE_HINT_S_DONE);
    expect(r.pages.pagesOf(PageUse.Hinted)).toBe(0);
    expect(r.pages.freePageCount).toBe(16382);
    notify('cleanup', false);
    expect(r.dev.freePageHintStatus).toBe(FREE_PAGE_HINT_S_DONE);

    const pc = rig({ device: { freePageHint: true } });
    for (const reason of ['setup', 'before-bitmap-sync', 'after-bitmap-sync'] as const) pc.dev.precopyNotify(reason, true, true);
    pc.settle();
    expect(pc.dev.hintedPages).toBe(0);
  });

  it('ignores hints outside a round and a stale stop', () => {
    const r = rig({ device: { freePageHint: true } });
    r.dev.freePageStart();
    r.dev.freePageStop(); // the host stops before the guest's work ran
    r.settle();
    expect(r.dev.hintedPages).toBe(0);
  });
});

describe('free page reporting', () => {
  it('reports an idle guest after the 2-second delay and discards it on the host', () => {
    // 128 MiB: a zone needs PAGE_REPORTING_CAPACITY << page_reporting_order (64 MiB) free to be reported
    const r = rig({ mib: 128, device: { freePageReporting: true } });
    const { pfns } = r.guest.faultIn(0, PageUse.Anon, r.pages.freePageCount);
    r.guest.release(pfns);
    r.dev.resetMetrics();
    r.settle(1_900_000_000);
    expect(r.drv.stats().reports).toBe(0);
    r.settle(200_000_000);
    // order 9: the block at 512; order 10: 31 blocks: 32 blocks, one (leftover) report
    const s = r.drv.stats();
    expect(s.reports).toBe(1);
    expect(s.reportedPages).toBe(512 + 31 * 1024);
    const m = r.dev.metrics();
    expect(m.perQueue['reporting_vq']!.descriptors).toBe(32);
    expect(m.perQueue['reporting_vq']!.kicks).toBe(1);
    expect(m.hostSyscalls).toBe(32);
    expect(m.hostBytesReturned).toBe((512 + 31 * 1024) * PAGE);
    expect(r.host.violations).toEqual([]);
    // reported blocks are not reported again
    r.settle(10_000_000_000);
    expect(r.drv.stats().reports).toBe(1);
  });

  it('reports a share of each free list per pass: 2 reports of 32 per list while budget lasts', () => {
    const r = rig({ mib: 1024, device: { freePageReporting: true } });
    // 255 order-10 blocks (one was split for the driver's page) and one order-9 block at 512:
    // budget ceil(255/512) = 1, so two reports of 32 per pass before the budget runs out:
    // pass 1: [512 + 31 order-10] then [32 order-10]; later passes 64 order-10 blocks each
    r.settle(2_000_000_001);
    expect(r.drv.reporting!.passes).toBe(1);
    expect(r.drv.stats().reports).toBe(2);
    expect(r.drv.stats().reportedPages).toBe(512 + 63 * 1024);
    r.settle(2_000_000_000);
    expect(r.drv.stats().reportedPages).toBe(512 + 127 * 1024);
    r.settle(30_000_000_000);
    expect(r.drv.stats().reportedPages).toBe(255 * 1024 + 512);
  });

  it('a reported block that is allocated and freed again is reported again', () => {
    const r = rig({ mib: 128, device: { freePageReporting: true } });
    r.settle(3_000_000_000);
    const before = r.drv.stats().reportedPages;
    const p = r.pages.allocPages({ order: 10, use: PageUse.Anon });
    r.pages.freePages(p, 10);
    r.settle(3_000_000_000);
    expect(r.drv.stats().reportedPages).toBe(before + 1024);
  });
});

describe('virtio-balloon properties', () => {
  type Op =
    | { k: 'target'; mib: number }
    | { k: 'fault'; n: number; fill: number }
    | { k: 'release'; frac: number }
    | { k: 'write'; frac: number; fill: number }
    | { k: 'hint'; what: 'start' | 'stop' | 'done' }
    | { k: 'wait'; ms: number };
  const op: fc.Arbitrary<Op> = fc.oneof(
    fc.record({ k: fc.constant('target' as const), mib: fc.integer({ min: 1, max: 32 }) }),
    fc.record({ k: fc.constant('fault' as const), n: fc.integer({ min: 1, max: 3000 }), fill: fc.integer({ min: 1, max: 255 }) }),
    fc.record({ k: fc.constant('release' as const), frac: fc.double({ min: 0, max: 1, noNaN: true }) }),
    fc.record({
      k: fc.constant('write' as const),
      frac: fc.double({ min: 0, max: 1, noNaN: true }),
      fill: fc.integer({ min: 1, max: 255 }),
    }),
    fc.record({ k: fc.constant('hint' as const), what: fc.constantFrom('start' as const, 'stop' as const, 'done' as const) }),
    fc.record({ k: fc.constant('wait' as const), ms: fc.integer({ min: 1, max: 5000 }) }),
  );

  function runOps(
    ops: Op[],
    seed: number,
    device: Partial<VirtioBalloonDeviceOptions>,
    check: (r: ReturnType<typeof rig>, live: Map<number, number>) => void,
  ): void {
    const r = rig({ mib: 32, device: { freePageHint: true, freePageReporting: true, hintDiscard: true, ...device } });
    const rnd = new SeededRandom(seed).stream('balloon-ops');
    const live = new Map<number, number>(); // pfn -> the byte the guest last wrote
    for (const o of ops) {
      if (o.k === 'target') r.dev.balloon(o.mib * MiB);
      else if (o.k === 'fault') {
        for (const p of r.guest.faultIn(rnd.int(0, 1), PageUse.Anon, o.n, o.fill).pfns) live.set(p, o.fill);
      } else if (o.k === 'release') {
        const gone = [...live.keys()].filter(() => rnd.float() < o.frac);
        r.guest.release(gone);
        for (const p of gone) live.delete(p);
      } else if (o.k === 'write') {
        const some = [...live.keys()].filter(() => rnd.float() < o.frac);
        r.guest.write(0, some, o.fill);
        for (const p of some) live.set(p, o.fill);
      } else if (o.k === 'hint') {
        if (o.what === 'start') r.dev.freePageStart();
        else if (o.what === 'stop') r.dev.freePageStop();
        else r.dev.freePageDone();
      } else r.settle(o.ms * 1_000_000);
      r.settle(0);
      check(r, live);
    }
  }

  it('property: the balloon never hands the host a page the guest still uses', () => {
    fc.assert(
      fc.property(
        fc.array(op, { minLength: 1, maxLength: 25 }),
        fc.integer({ min: 1, max: 1000 }),
        fc.constantFrom(...INFLATE_ENCODINGS),
        (ops, seed, enc) => {
          runOps(ops, seed, { inflateEncoding: enc }, (r, live) => {
            expect(r.host.violations).toEqual([]);
            for (const [p, fill] of live) expect(r.mem.peek(p * PAGE)).toBe(fill);
          });
        },
      ),
      { numRuns: 60 },
    );
  });

  it('property: a hinted page the guest writes afterwards is dirty again, never skipped', () => {
    fc.assert(
      fc.property(fc.array(op, { minLength: 1, maxLength: 25 }), fc.integer({ min: 1, max: 1000 }), (ops, seed) => {
        runOps(ops, seed, {}, (r, live) => {
          for (const p of live.keys()) expect(r.dev.isSkippable(p * PAGE)).toBe(false);
          for (const { gpa, len } of r.dev.hintedRanges())
            for (let p = gpa / PAGE; p < (gpa + len) / PAGE; p++) expect(live.has(p)).toBe(false);
        });
      }),
      { numRuns: 60 },
    );
  });

  it('property: memory is conserved across inflate and deflate', () => {
    fc.assert(
      fc.property(fc.array(op, { minLength: 1, maxLength: 25 }), fc.integer({ min: 1, max: 1000 }), fc.boolean(), (ops, seed, chunks) => {
        let r0: ReturnType<typeof rig> | null = null;
        runOps(ops, seed, { chunks }, (r) => {
          r0 = r;
          expect(usesSum(r.pages)).toBe(r.pages.totalPages);
          expect(r.drv.stats().numPages).toBe(r.pages.pagesOf(PageUse.Balloon));
          expect(r.dev.actual).toBe(r.drv.stats().numPages);
        });
        const r = r0!;
        r.dev.freePageDone();
        r.dev.balloon(32 * MiB);
        r.settle(1_000_000_000);
        expect(r.pages.pagesOf(PageUse.Balloon)).toBe(0);
        expect(r.pages.pagesOf(PageUse.Hinted)).toBe(0);
        expect(
          r.pages.freePageCount + r.pages.pagesOf(PageUse.Anon) + r.pages.pagesOf(PageUse.Kernel) + r.pages.pagesOf(PageUse.Isolated),
        ).toBe(r.pages.totalPages);
      }),
      { numRuns: 40 },
    );
  });
});

describe('virtio-balloon on a scheduler (a scenario): the work is CPU time of the vCPU and of QEMU', () => {
  /** Inflate 4000 pages; the time from the command to the guest's last `actual` update. */
  const inflate = (r: ReturnType<typeof rig>): number => {
    r.settle(1e6); // the probe's work done (on a scheduler it is CPU time too, spent from time 0)
    const t0 = r.clock.now();
    r.dev.balloon(64 * MiB - 4000 * PAGE);
    r.settle();
    expect(r.dev.queryBalloon().actual).toBe(64 * MiB - 4000 * PAGE);
    return r.dev.events[r.dev.events.length - 1]!.at - t0;
  };

  it("an inflate's guest work runs on the vCPU's thread and its device work on the main loop's, as long as sequentially on idle CPUs", () => {
    const seq = rig();
    const tSeq = inflate(seq);
    const r = rig({ scheduled: true });
    const t = inflate(r);
    // Every nanosecond charged is CPU time of a thread: the driver's and its exits' on the vCPU, the device's on QEMU's.
    expect(r.cpuNs(VCPU.name)).toBe(r.timing.guestCpuNs + r.timing.exitNs);
    expect(r.cpuNs(MAIN.name)).toBe(r.timing.hostCpuNs);
    expect(r.timing.hostCpuNs).toBeGreaterThan(0);
    // The same work, the same counters; with nothing else on the CPUs, the same time (guest, then host, then wakeups).
    expect(r.dev.metrics().pfnsInflated).toBe(seq.dev.metrics().pfnsInflated);
    expect(r.timing.guestCpuNs).toBe(seq.timing.guestCpuNs);
    expect(r.timing.hostCpuNs).toBe(seq.timing.hostCpuNs);
    expect(t).toBe(tSeq);
  });

  it("a CPU-bound thread on the main loop's CPU stretches the inflate; one on another CPU does not, and both run meanwhile", () => {
    const idle = rig({ scheduled: true });
    const tIdle = inflate(idle);
    const hostNs = idle.timing.hostCpuNs;
    const busy = rig({ scheduled: true });
    const hog = busy.sched!.work('hog', 1e12, { allowed: [1] });
    const away = busy.sched!.work('away', 1e12, { allowed: [2] });
    const t0 = busy.clock.now();
    const hog0 = hog.sumExecNs;
    const away0 = away.sumExecNs;
    const tBusy = inflate(busy);
    // QEMU's thread gets a share of CPU 1: its part of every message takes longer, and so does the inflate.
    expect(tBusy).toBeGreaterThan(tIdle + hostNs / 4);
    // The world did not stop: the thread beside QEMU and the one on the free CPU ran through the inflate.
    const window = busy.clock.now() - t0;
    expect(away.sumExecNs - away0).toBeGreaterThan(0.9 * window);
    expect(hog.sumExecNs - hog0).toBeGreaterThan(0.25 * window);
  });

  it('a message goes out only after the previous one is done: one step of guest work, then host work, then the wakeups', () => {
    const r = rig({ scheduled: true });
    const starts: number[] = [];
    const q = r.dev.transport.queues[0]!;
    const handle = q.onNotify!;
    q.onNotify = (vq) => {
      starts.push(r.clock.now());
      handle(vq);
    };
    inflate(r);
    expect(starts.length).toBe(Math.ceil(4000 / 256));
    // Between two kicks: at least the previous message's host work and its two wakeups (no overlap).
    const perMsgHost = r.timing.hostCpuNs / starts.length;
    for (let i = 1; i < starts.length; i++)
      expect(starts[i]! - starts[i - 1]!).toBeGreaterThan(perMsgHost / 2 + 2 * COSTS['eventfd_wakeup']!);
  });

  it('property: on a scheduler any inflate/deflate sequence ends as sequentially, and every charged ns is CPU time of the vCPU or of QEMU', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...INFLATE_ENCODINGS),
        fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 4 }),
        fc.integer({ min: 0, max: 2_000_000 }),
        fc.boolean(),
        (enc: InflateEncodingName, targets, gapNs, hog) => {
          const go = (scheduled: boolean) => {
            const r = rig({ scheduled, device: { inflateEncoding: enc } });
            if (hog) r.sched?.work('hog', 1e12, { allowed: [1] });
            // Targets given `gapNs` apart: a new one may come while the driver still works towards the last.
            for (const mib of targets) {
              r.dev.balloon(mib * MiB);
              r.settle(gapNs);
            }
            r.settle();
            return r;
          };
          const seq = go(false);
          const sch = go(true);
          expect(sch.dev.actual).toBe(seq.dev.actual);
          expect(sch.dev.actual).toBe(sch.dev.numPages);
          expect(sch.drv.stats().numPages).toBe(sch.dev.numPages);
          expect(sch.dev.queryBalloon().actual).toBe(targets[targets.length - 1]! * MiB);
          expect(sch.host.violations).toEqual([]);
          expect(usesSum(sch.pages)).toBe(sch.pages.totalPages);
          expect(sch.cpuNs(VCPU.name)).toBe(sch.timing.guestCpuNs + sch.timing.exitNs);
          expect(sch.cpuNs(MAIN.name)).toBe(sch.timing.hostCpuNs);
          // BALLOON_CHANGE times never go backwards.
          const at = sch.dev.events.map((e) => e.at);
          expect(at).toEqual([...at].sort((a, b) => a - b));
        },
      ),
      { numRuns: 40 },
    );
  });

  it("free page hints and reports count the same as sequentially; hints are the iothread's CPU, reports the main loop's", () => {
    const run = (scheduled: boolean) => {
      // 256 MiB: a zone needs PAGE_REPORTING_CAPACITY << pageblock_order (64 MiB) free to be reported
      const r = rig({ scheduled, mib: 256, device: { freePageHint: true, freePageReporting: true, hintBatch: 16, hintMinOrder: 0 } });
      r.settle(3e9); // the first reporting pass, 2 s after probe
      const reportHost = r.timing.hostCpuNs;
      r.dev.freePageStart();
      r.settle(1e6);
      const hintHost = r.timing.hostCpuNs - reportHost;
      r.dev.freePageDone();
      r.settle(1e6);
      return { r, reportHost, hintHost, hinted: r.dev.metrics().pagesHinted, reported: r.dev.metrics().bytesReported };
    };
    const seq = run(false);
    const sch = run(true);
    expect(sch.hinted).toBe(seq.hinted);
    expect(sch.hinted).toBeGreaterThan(0);
    expect(sch.reported).toBe(seq.reported);
    expect(sch.reported).toBeGreaterThan(0);
    expect(sch.r.cpuNs(IOTHREAD.name)).toBe(sch.hintHost);
    expect(sch.r.cpuNs(MAIN.name)).toBe(sch.r.timing.hostCpuNs - sch.hintHost);
    expect(sch.r.cpuNs(VCPU.name)).toBe(sch.r.timing.guestCpuNs + sch.r.timing.exitNs);
  });
});
