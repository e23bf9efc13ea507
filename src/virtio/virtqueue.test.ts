import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { VirtualClock } from '../sim/clock.ts';
import { VirtioTiming, type CostTable } from './timing.ts';
import { GuestBuffers, SplitVirtqueue, VRING_AVAIL_ELEM_BYTES, VRING_DESC_BYTES, VRING_USED_ELEM_BYTES } from './virtqueue.ts';

const COSTS: Record<string, number> = {
  vmexit_ioeventfd: 1000,
  vmexit_mmio_user: 5000,
  virtio_irq_inject: 2000,
  virtqueue_add_per_desc: 50,
  vmm_virtqueue_elem: 300,
  memcpy_4k: 4096,
  eventfd_wakeup: 700,
};
const table: CostTable = {
  nsOf: (n) => {
    const v = COSTS[n];
    if (v === undefined) throw new Error(`no cost ${n}`);
    return v;
  },
};

function setup(num = 8) {
  const timing = new VirtioTiming(new VirtualClock(), table);
  const buffers = new GuestBuffers();
  const vq = new SplitVirtqueue('q', num, timing, buffers);
  return { timing, buffers, vq };
}

describe('split virtqueue', () => {
  it('carries a chain of readable and writable buffers and counts descriptors, bytes and ring bytes exactly', () => {
    const { timing, buffers, vq } = setup();
    const a = buffers.map(0x1000, 4096);
    a.set([1, 2, 3, 4], 0);
    const b = buffers.map(0x3000, 4096);
    b.set([9, 8], 100);
    let seen: Uint8Array | null = null;
    vq.onNotify = (q) => {
      const e = q.pop()!;
      expect(e.outSg).toEqual([
        { addr: 0x1000, len: 4 },
        { addr: 0x3064, len: 2 },
      ]);
      expect(e.inSg).toEqual([{ addr: 0x5000, len: 4096 }]);
      seen = q.readOut(e);
      q.push(e, 7);
      q.notify();
    };
    let acked = 0;
    vq.setDriverCallback(() => acked++);
    expect(
      vq.addBuf(
        [
          { addr: 0x1000, len: 4 },
          { addr: 0x3064, len: 2 },
        ],
        [{ addr: 0x5000, len: 4096 }],
        'tok',
      ),
    ).toBe(true);
    expect(vq.numFree).toBe(5);
    expect(vq.kick()).toBe(true);
    expect(Array.from(seen!)).toEqual([1, 2, 3, 4, 9, 8]);
    expect(acked).toBe(1);
    expect(vq.getBuf()).toEqual({ token: 'tok', len: 7 });
    expect(vq.getBuf()).toBeNull();
    expect(vq.numFree).toBe(8);
    expect(vq.stats).toEqual({
      messages: 1,
      descriptors: 3,
      outBytes: 6,
      inBytes: 4096,
      bytesRead: 6,
      ringBytes: 3 * VRING_DESC_BYTES + VRING_AVAIL_ELEM_BYTES + VRING_USED_ELEM_BYTES,
      kicks: 1,
      kicksSuppressed: 0,
      used: 1,
      interrupts: 1,
    });
    // guest: 3 descriptors + the interrupt; exit: one kick; host: pop + 6 bytes copied at 1 ns/byte
    expect(timing.guestCpuNs).toBe(3 * 50 + 2000);
    expect(timing.exitNs).toBe(1000);
    expect(timing.hostCpuNs).toBe(300 + 6);
    expect(timing.clock.now()).toBe(3 * 50 + 2000 + 1000 + 306);
  });

  it('refuses a chain longer than the free descriptors (-ENOSPC)', () => {
    const { vq } = setup(4);
    const sg = { addr: 0, len: 1 };
    expect(vq.addBuf([sg, sg, sg], [], 1)).toBe(true);
    expect(vq.addBuf([sg, sg], [], 2)).toBe(false);
    expect(vq.addBuf([sg], [], 3)).toBe(true);
    expect(vq.numFree).toBe(0);
  });

  it('does not exit when the device polls, nor interrupt a driver that wants none', () => {
    const { timing, vq } = setup();
    let handled = 0;
    vq.onNotify = () => handled++;
    vq.setDriverCallback(null);
    vq.setNotification(false);
    vq.addBuf([{ addr: 0, len: 1 }], [], 1);
    expect(vq.kick()).toBe(false);
    expect(handled).toBe(0);
    expect(vq.stats.kicksSuppressed).toBe(1);
    const e = vq.pop()!;
    vq.push(e, 0);
    vq.notify();
    expect(vq.stats.interrupts).toBe(0);
    expect(timing.exits).toBe(0);
  });

  it('property: any sequence of chains round-trips in order, indices wrapping past 65535', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 3 })), { minLength: 1, maxLength: 40 }),
        (chains) => {
          const { vq, buffers } = setup(8);
          buffers.map(0, 65536);
          let descs = 0;
          let n = 0;
          // push the 16-bit indices close to wrapping first
          for (let i = 0; i < 65530; i++) {
            vq.addBuf([{ addr: 0, len: 1 }], [], -1);
            vq.push(vq.pop()!, 0);
            vq.getBuf();
          }
          for (const [o, i] of chains) {
            if (o + i === 0) continue;
            const out = Array.from({ length: o }, (_, k) => ({ addr: k * 16, len: 16 }));
            const inb = Array.from({ length: i }, (_, k) => ({ addr: 4096 + k * 16, len: 16 }));
            expect(vq.addBuf(out, inb, n)).toBe(true);
            const e = vq.pop()!;
            expect(e.outSg.length).toBe(o);
            expect(e.inSg.length).toBe(i);
            expect(vq.readOut(e).length).toBe(o * 16);
            vq.push(e, i * 16);
            expect(vq.getBuf()).toEqual({ token: n, len: i * 16 });
            expect(vq.numFree).toBe(8);
            descs += o + i;
            n++;
          }
          expect(vq.stats.descriptors).toBe(65530 + descs);
        },
      ),
      { numRuns: 20 },
    );
  });
});
