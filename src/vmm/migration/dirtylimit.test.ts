/**
 * Live migration with xbzrle, the KVM dirty ring and dirty-limit, end to
 * end on a VM: what each sends and costs, that dirty-limit holds a vCPU to
 * its quota, that ring-full exits are counted, QEMU's errors, and no data
 * lost (the destination's content check) whichever is on.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { vmTestKernel } from '../test_fixtures.ts';
import { Vm } from '../vm.ts';
import type { Kernel } from '../../kernel/kernel.ts';
import { PAGE_SIZE } from '../../kernel/uapi.ts';
import { NSEC_PER_MSEC, NSEC_PER_SEC } from '../../sim/clock.ts';
import { Link } from './link.ts';
import { MigrationState } from './migration.ts';

const MiB = 2 ** 20;
const URI = 'tcp:dest:4444';

function pair(m: number, dirtyRingSize?: number): { k: Kernel; src: Vm; mig: MigrationState } {
  const k = vmTestKernel({ nodes: 1, gib: 2, cpus: 4 });
  const src = new Vm(k, { name: 'src', m, smp: 1 });
  const dst = new Vm(k, { name: 'dst', m, smp: 1 });
  const mig = new MigrationState(src, dirtyRingSize ? { dirtyRingSize } : {}).register();
  // 1 Gbit/s: a 32 MiB guest's bulk pass takes about 0.27 s.
  mig.incoming(URI, dst, new Link({ bandwidth: 1.25e8, latency: 50_000 }));
  return { k, src, mig };
}

const qmp = (vm: Vm, execute: string, args?: Record<string, unknown>): Record<string, unknown> =>
  vm.monitor.execute(args ? { execute, arguments: args } : { execute }) as Record<string, unknown>;

/**
 * vCPU 0 storing `bytes` bytes at a random line of a random page of the
 * first `hot` pages, `perSec` stores a second scaled by its run fraction,
 * in 1 ms ticks: through the EPT (the content the migration checks) and
 * the store hook (the dirty ring, xbzrle). Returns the stores made.
 */
function storer(k: Kernel, vm: Vm, mig: MigrationState, hot: number, perSec: number, bytes: number): { stores: number } {
  const host = vm.ramList.blocks[0]!.host;
  const out = { stores: 0 };
  let x = 12345;
  let carry = 0;
  const rnd = (n: number): number => {
    // xorshift32: an LCG's low bits would cycle over a few pages.
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x % n;
  };
  const tick = (): void => {
    if (mig.status === 'completed' || mig.status === 'failed' || mig.status === 'cancelled') return;
    if (mig.guestRunning) {
      carry += (perSec * mig.vcpuRunFraction(0)) / 1000;
      for (; carry >= 1; carry--) {
        const gpa = rnd(hot) * PAGE_SIZE + rnd(PAGE_SIZE / 64) * 64;
        k.runAsTask({ ns: 0 }, () => vm.access(0, gpa, 1, 1, true, 1 + rnd(255)));
        mig.onGuestStore(0, host + gpa, bytes);
        out.stores++;
      }
    }
    k.events.after(NSEC_PER_MSEC, 'storer', tick);
  };
  k.events.after(0, 'storer', tick);
  return out;
}

function run(k: Kernel, mig: MigrationState, limitNs: number): void {
  const end = k.clock.now() + limitNs;
  while (k.clock.now() < end && mig.status !== 'completed' && mig.status !== 'failed')
    k.events.runUntil(Math.min(end, k.clock.now() + 100 * NSEC_PER_MSEC));
}

/** Every page written once first (so that pages go normal, not as zero pages). */
function fill(k: Kernel, vm: Vm, pages: number): void {
  for (let p = 0; p < pages; p++) k.runAsTask({ ns: 0 }, () => vm.access(0, p * PAGE_SIZE, 1, 1, true, 1 + (p % 250)));
}

describe('xbzrle in a migration', () => {
  /** A 32 MiB guest rewriting 8 bytes at a time in a 16 MiB hot set, faster than 1 Gbit/s can resend it whole. */
  const hotRun = (caps: string[]): { mig: MigrationState; q: Record<string, unknown> } => {
    const { k, src, mig } = pair(32 * MiB);
    fill(k, src, (32 * MiB) / PAGE_SIZE);
    qmp(src, 'migrate-set-parameters', { 'max-bandwidth': 1.25e8, 'downtime-limit': 30 });
    qmp(src, 'migrate-set-capabilities', { capabilities: caps.map((capability) => ({ capability, state: true })) });
    storer(k, src, mig, 4096, 100_000, 8);
    qmp(src, 'migrate', { uri: URI });
    run(k, mig, 8 * NSEC_PER_SEC);
    return { mig, q: mig.query() };
  };

  it('pays on a guest that rewrites a few bytes of the same pages: encoded pages, fewer bytes, converges; no data lost', () => {
    const off = hotRun([]);
    const on = hotRun(['xbzrle']);
    expect(on.q.status).toBe('completed');
    expect(on.mig.verify()).toEqual([]);
    const xc = on.q['xbzrle-cache'] as Record<string, number>;
    expect(xc['cache-size']).toBe(64 * MiB);
    expect(xc.pages).toBeGreaterThan(300);
    expect(xc['cache-miss']).toBeGreaterThan(0);
    // An encoded page of a few 8-byte runs is tens of bytes, not 4 KiB.
    expect(xc.bytes / xc.pages).toBeLessThan(200);
    const sent = (q: Record<string, unknown>): number => (q.ram as Record<string, number>).transferred;
    if (off.q.status === 'completed') expect(sent(on.q)).toBeLessThan(sent(off.q));
    else expect(off.q.status).toBe('active'); // without xbzrle it does not converge in 8 s
    expect(off.q['xbzrle-cache']).toBeUndefined();
  });

  it('a cache smaller than the hot set misses more (direct-mapped entries refused while young)', () => {
    const big = hotRun(['xbzrle']).q['xbzrle-cache'] as Record<string, number>;
    const { k, src, mig } = pair(32 * MiB);
    fill(k, src, (32 * MiB) / PAGE_SIZE);
    qmp(src, 'migrate-set-parameters', { 'max-bandwidth': 1.25e8, 'downtime-limit': 30, 'xbzrle-cache-size': MiB });
    qmp(src, 'migrate-set-capabilities', { capabilities: [{ capability: 'xbzrle', state: true }] });
    storer(k, src, mig, 4096, 100_000, 8);
    qmp(src, 'migrate', { uri: URI });
    run(k, mig, 8 * NSEC_PER_SEC);
    const small = mig.query()['xbzrle-cache'] as Record<string, number>;
    expect(small['cache-size']).toBe(MiB);
    expect(small['cache-miss'] / (small.pages + small['cache-miss'])).toBeGreaterThan(big['cache-miss'] / (big.pages + big['cache-miss']));
  });

  it("QEMU's check of xbzrle-cache-size", () => {
    const { src } = pair(16 * MiB);
    expect(qmp(src, 'migrate-set-parameters', { 'xbzrle-cache-size': 3 * MiB })).toEqual({
      error: { class: 'GenericError', desc: "Parameter 'xbzrle_cache_size' expects a power of two no less than the target page size" },
    });
    expect(qmp(src, 'migrate-set-parameters', { 'xbzrle-cache-size': 128 * MiB })).toEqual({ return: {} });
    expect((qmp(src, 'query-migrate-parameters').return as Record<string, number>)['xbzrle-cache-size']).toBe(128 * MiB);
  });
});

describe('the KVM dirty ring in a migration', () => {
  it('a sync reaps the rings: an idle guest syncs for the ioctls, not per page of RAM as the bitmap does', () => {
    const cost = (ring?: number): number => {
      const { k, src, mig } = pair(512 * MiB, ring);
      qmp(src, 'migrate', { uri: URI });
      run(k, mig, 60 * NSEC_PER_SEC);
      expect(mig.query().status).toBe('completed');
      return mig.ram!.syncNsTotal;
    };
    const bitmap = cost();
    const ring = cost(4096);
    expect(ring).toBeLessThan(bitmap);
  });

  it('ring-full exits are counted and cost the vCPU; no data lost', () => {
    const { k, src, mig } = pair(32 * MiB, 256);
    fill(k, src, (32 * MiB) / PAGE_SIZE);
    const s = storer(k, src, mig, 8192, 50_000, 64);
    qmp(src, 'migrate', { uri: URI });
    run(k, mig, 8 * NSEC_PER_SEC);
    expect(mig.query().status).toBe('completed');
    expect(mig.verify()).toEqual([]);
    const ring = mig.dirtyRing!;
    expect(s.stores).toBeGreaterThan(0);
    // 192 entries (256 - 64 reserved) per exit: at most one exit per 192 stores.
    expect(ring.fullExits).toBeGreaterThan(0);
    expect(ring.fullExits).toBeLessThanOrEqual(Math.floor(s.stores / ring.softLimit));
    expect(ring.lostNsPerVcpu[0]).toBeGreaterThanOrEqual(ring.fullExits * k.costs.nsOf('kvm_exit_dirty_ring_full'));
  });
});

describe('dirty-limit', () => {
  it("needs the dirty ring and conflicts with auto-converge (QEMU's errors)", () => {
    const { src } = pair(16 * MiB);
    expect(qmp(src, 'migrate-set-capabilities', { capabilities: [{ capability: 'dirty-limit', state: true }] })).toEqual({
      error: { class: 'GenericError', desc: "dirty-limit requires KVM with accelerator property 'dirty-ring-size' set" },
    });
    expect(qmp(src, 'set-vcpu-dirty-limit', { 'dirty-rate': 10 })).toMatchObject({ error: { class: 'GenericError' } });
    const ring = pair(16 * MiB, 1024).src;
    expect(
      qmp(ring, 'migrate-set-capabilities', {
        capabilities: [
          { capability: 'dirty-limit', state: true },
          { capability: 'auto-converge', state: true },
        ],
      }),
    ).toEqual({ error: { class: 'GenericError', desc: 'dirty-limit conflicts with auto-converge either of then available currently' } });
    expect(qmp(ring, 'migrate-set-parameters', { 'x-vcpu-dirty-limit-period': 0 })).toMatchObject({ error: { class: 'GenericError' } });
    expect(qmp(ring, 'set-vcpu-dirty-limit', { 'cpu-index': 3, 'dirty-rate': 10 })).toEqual({
      error: { class: 'GenericError', desc: 'incorrect cpu index specified' },
    });
    expect(qmp(ring, 'query-vcpu-dirty-limit')).toEqual({ error: { class: 'GenericError', desc: 'dirty page limit not enabled' } });
  });

  it("set-vcpu-dirty-limit holds the vCPU's dirty rate to its quota", () => {
    const { k, src, mig } = pair(256 * MiB, 4096);
    // 20,000 new pages a second = 78 MiB/s; the quota 20 MB/s.
    const host = src.ramList.blocks[0]!.host;
    let page = 0;
    let carry = 0;
    let stores = 0;
    const tick = (): void => {
      carry += (20_000 * mig.vcpuRunFraction(0)) / 1000;
      for (; carry >= 1; carry--, stores++) mig.onGuestStore(0, host + (page++ % 65536) * PAGE_SIZE, 8);
      if (k.clock.now() < 6 * NSEC_PER_SEC) k.events.after(NSEC_PER_MSEC, 'storer', tick);
    };
    expect(qmp(src, 'set-vcpu-dirty-limit', { 'dirty-rate': 20 })).toEqual({ return: {} });
    k.events.after(0, 'storer', tick);
    k.events.runUntil(3 * NSEC_PER_SEC);
    const before = stores;
    k.events.runUntil(6 * NSEC_PER_SEC);
    const mbps = ((stores - before) * PAGE_SIZE) / MiB / 3;
    expect(mbps).toBeGreaterThan(18);
    expect(mbps).toBeLessThan(22);
    const q = qmp(src, 'query-vcpu-dirty-limit').return as { 'cpu-index': number; 'limit-rate': number; 'current-rate': number }[];
    expect(q).toEqual([{ 'cpu-index': 0, 'limit-rate': 20, 'current-rate': 20 }]);
    expect(mig.dirtyRing!.fullExits).toBeGreaterThan(0);
    expect(qmp(src, 'cancel-vcpu-dirty-limit')).toEqual({ return: {} });
    expect(mig.vcpuRunFraction(0)).toBe(1);
  });

  it('the capability limits every vCPU where auto-converge would throttle, reports its times, and ends with the migration', () => {
    const { k, src, mig } = pair(32 * MiB, 4096);
    fill(k, src, (32 * MiB) / PAGE_SIZE);
    qmp(src, 'migrate-set-parameters', {
      'max-bandwidth': 1.25e8,
      'downtime-limit': 30,
      'vcpu-dirty-limit': 5,
      'x-vcpu-dirty-limit-period': 200,
    });
    qmp(src, 'migrate-set-capabilities', { capabilities: [{ capability: 'dirty-limit', state: true }] });
    // Whole pages of all of RAM, 40,000 a second (156 MiB/s against a 119 MiB/s link): no convergence unthrottled.
    storer(k, src, mig, 8192, 40_000, 4096);
    qmp(src, 'migrate', { uri: URI });
    let seen: Record<string, unknown> | undefined;
    const end = k.clock.now() + 20 * NSEC_PER_SEC;
    while (k.clock.now() < end && mig.status !== 'completed') {
      k.events.runUntil(k.clock.now() + 100 * NSEC_PER_MSEC);
      const q = mig.query();
      if (q['dirty-limit-throttle-time-per-round'] !== undefined) seen = q;
    }
    expect(mig.query().status).toBe('completed');
    expect(mig.verify()).toEqual([]);
    // While the limit was in service query-migrate had its two fields; the throttle the vCPU took to meet 5 MB/s.
    expect(seen?.['dirty-limit-throttle-time-per-round']).toBeGreaterThanOrEqual(0);
    expect(seen?.['dirty-limit-ring-full-time']).toBeGreaterThanOrEqual(0);
    expect(mig.dirtyLimit!.peakThrottleUs).toBeGreaterThan(0);
    expect(mig.dirtyLimit!.minFraction).toBeLessThan(0.2);
    expect(mig.dirtyLimit!.inService).toBe(false);
    expect(mig.vcpuRunFraction(0)).toBe(1);
  });

  it('property: whichever of xbzrle, the dirty ring and dirty-limit is on, a completed migration lost no data', () => {
    fc.assert(
      fc.property(
        fc.boolean(),
        fc.constantFrom(0, 256, 4096),
        fc.boolean(),
        fc.integer({ min: 1, max: 4096 }),
        fc.integer({ min: 1000, max: 40_000 }),
        (xbzrle, ring, limit, bytes, rate) => {
          const { k, src, mig } = pair(16 * MiB, ring || undefined);
          fill(k, src, 2048);
          const caps = [...(xbzrle ? ['xbzrle'] : []), ...(limit && ring ? ['dirty-limit'] : [])];
          qmp(src, 'migrate-set-parameters', { 'max-bandwidth': 1.25e8, 'downtime-limit': 50, 'vcpu-dirty-limit': 10 });
          expect(qmp(src, 'migrate-set-capabilities', { capabilities: caps.map((capability) => ({ capability, state: true })) })).toEqual({
            return: {},
          });
          storer(k, src, mig, 1024, rate, bytes);
          qmp(src, 'migrate', { uri: URI });
          run(k, mig, 30 * NSEC_PER_SEC);
          if (mig.query().status === 'completed') expect(mig.verify()).toEqual([]);
        },
      ),
      { numRuns: 8 },
    );
  });
});
