/**
 * Postcopy live migration: the switchover to the destination, vCPU faults
 * served as page requests at the RAM block's page size, postcopy-preempt,
 * blocktime, the hugetlb copy proposals, injected faults (link stall and
 * drop with recovery, loss of the source, a drop during precopy), and the
 * content check after all of them.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { vmTestKernel } from '../test_fixtures.ts';
import { Vm, type VmConfig } from '../vm.ts';
import type { Kernel } from '../../kernel/kernel.ts';
import { verifyKernel } from '../../kernel/debug_vm.ts';
import { PAGE_SIZE, PMD_SIZE, UFFD_FEATURE } from '../../kernel/uapi.ts';
import { NSEC_PER_MSEC, NSEC_PER_SEC } from '../../sim/clock.ts';
import { Link } from './link.ts';
import { MigrationState, type MigrationOptions } from './migration.ts';
import { ramRuns } from './ram.ts';
import { MemBandwidth } from '../../sim/membw.ts';

const MiB = 2 ** 20;
const URI = 'tcp:dest:4444';

interface Setup {
  k: Kernel;
  src: Vm;
  dst: Vm;
  mig: MigrationState;
  /** The destination vCPU's touches: index into `touches` reached so far. */
  touched: () => number;
  /** Times the vCPU blocked in a userfault. */
  faults: () => number;
}

/**
 * A guest of `m` bytes whose every page holds a byte of its own, migrated
 * with postcopy-ram over 10 Gbit/s (50 µs one way). Once the guest runs on
 * the destination, vCPU 0 reads `touches` (page numbers), one every 20 µs,
 * blocking in userfaults on pages that have not arrived.
 */
function setup(
  opts: {
    m?: number;
    caps?: string[];
    backend?: VmConfig['objects'];
    touches?: number[];
    mig?: Omit<MigrationOptions, 'onGuest'>;
    written?: number;
  } = {},
): Setup {
  const m = opts.m ?? 64 * MiB;
  const k = vmTestKernel({ nodes: 1, gib: 2, cpus: 4 });
  if (opts.backend) expect(k.sysfs.write('/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages', String((2 * m) / PMD_SIZE))).toBe(0);
  const cfg = (name: string): VmConfig =>
    opts.backend ? { name, smp: 1, objects: opts.backend, 'memory-backend': 'mem' } : { name, m, smp: 1 };
  const src = new Vm(k, cfg('src'));
  const dst = new Vm(k, cfg('dst'));
  const written = opts.written ?? m / PAGE_SIZE;
  for (let p = 0; p < written; p++) k.runAsTask({ ns: 0 }, () => src.access(0, p * PAGE_SIZE, 1, 1, true, (p % 251) + 1));
  const touches = opts.touches ?? [];
  let i = 0;
  const vcpu = dst.vcpus[0]!.thread;
  const base = dst.ramList.blocks[0]!.host;
  let blocked = false;
  let faults = 0;
  const step = (): void => {
    if (i >= touches.length) return;
    const r = k.runAsTask({ ns: 0 }, () => k.access(vcpu, base + touches[i]! * PAGE_SIZE, 1, 1, false, 0));
    if (r.blocked !== undefined) {
      blocked = true;
      faults++;
      k.uffd.faulted(vcpu, k.clock.now());
      return;
    }
    i++;
    k.events.after(20_000, 'vcpu', step);
  };
  k.uffd.wakeListeners.push((t) => {
    if (t === vcpu && blocked) {
      blocked = false;
      k.events.after(0, 'vcpu', step);
    }
  });
  const mig = new MigrationState(src, {
    ...opts.mig,
    onGuest: (w) => w === 'start-destination' && k.events.after(0, 'vcpu', step),
  }).register();
  mig.incoming(URI, dst, new Link({ bandwidth: 1.25e9, latency: 50_000 }));
  const caps = opts.caps ?? ['postcopy-ram', 'postcopy-blocktime'];
  qmp(src, 'migrate-set-capabilities', { capabilities: caps.map((capability) => ({ capability, state: true })) });
  return { k, src, dst, mig, touched: () => i, faults: () => faults };
}

const qmp = (vm: Vm, execute: string, args?: Record<string, unknown>): Record<string, unknown> =>
  vm.monitor.execute(args ? { execute, arguments: args } : { execute }) as Record<string, unknown>;

/** Run until the migration ends, then 10 ms more: the vCPU finishes its touches once every page is in place. */
function runUntilDone(k: Kernel, mig: MigrationState, limitNs: number): void {
  const end = k.clock.now() + limitNs;
  while (k.clock.now() < end && mig.status !== 'completed' && mig.status !== 'failed')
    k.events.runUntil(Math.min(end, k.clock.now() + 10 * NSEC_PER_MSEC));
  k.events.runUntil(k.clock.now() + 10 * NSEC_PER_MSEC);
}

/** Start migrating and switch to postcopy right away (after setup, before the bulk stage gets far). */
function startPostcopy(s: Setup): void {
  expect(qmp(s.src, 'migrate', { uri: URI })).toEqual({ return: {} });
  expect(qmp(s.src, 'migrate-start-postcopy')).toEqual({ return: {} });
}

const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;

describe('postcopy on anonymous 4K RAM', () => {
  it('switches over, serves each vCPU fault as a request, completes with every page in place', () => {
    const touches = Array.from({ length: 200 }, (_, j) => (j * 37) % 16384);
    const s = setup({ touches });
    startPostcopy(s);
    const seen = new Set<string>();
    const end = s.k.clock.now() + 5 * NSEC_PER_SEC;
    while (s.k.clock.now() < end && s.mig.status !== 'completed') {
      s.k.events.runUntil(s.k.clock.now() + NSEC_PER_MSEC);
      seen.add(String(s.mig.query()['status']));
    }
    expect(s.mig.status).toBe('completed');
    expect(seen.has('postcopy-active')).toBe(true);
    expect(s.touched()).toBe(touches.length);
    const q = s.mig.query() as { ram: Record<string, number>; downtime: number };
    expect(q.ram['postcopy-requests']).toBeGreaterThan(0);
    expect(q.ram['postcopy-requests']).toBeLessThanOrEqual(touches.length);
    expect(q.ram['postcopy-bytes']).toBeGreaterThan(60 * MiB);
    // No data lost: every destination page carries the source's byte, checked as each page arrived.
    expect(s.mig.verify()).toEqual([]);
    expect(s.mig.contentCheck).toEqual({ pagesDiffering: 0, differing: [] });
    // The destination's query-migrate reports blocktime (postcopy-blocktime).
    const d = qmp(s.dst, 'query-migrate')['return'] as Record<string, unknown>;
    expect(d['status']).toBe('completed');
    const pc = s.mig.postcopy!;
    expect(pc.stats.latencies.length).toBe(q.ram['postcopy-requests']);
    expect(d['postcopy-vcpu-blocktime']).toEqual([Math.floor(pc.stats.vcpuBlocktime[0]! / NSEC_PER_MSEC)]);
    // One vCPU: whenever it is blocked, all are.
    expect(pc.stats.totalBlocktime).toBe(pc.stats.vcpuBlocktime[0]);
    // The destination unregistered guest RAM at the end.
    expect(s.dst.process.mm.vmas.every((v) => v.uffdCtx === null)).toBe(true);
  });

  it("postcopy-preempt's channel is a flow of the network: active while an urgent page is on its wire, the two never above the link", () => {
    // Pages the bulk stage sends last: each touch faults and is requested.
    const touches = Array.from({ length: 100 }, (_, j) => 16383 - j * 97);
    const s = setup({ touches, caps: ['postcopy-ram', 'postcopy-preempt'] });
    startPostcopy(s);
    const net = s.mig.flow!.net;
    let peak = 0;
    let both = 0;
    const end = s.k.clock.now() + 5 * NSEC_PER_SEC;
    while (s.k.clock.now() < end && s.mig.status !== 'completed') {
      s.k.events.runUntil(s.k.clock.now() + 50_000);
      const on = net.flows.filter((f) => f.active);
      peak = Math.max(
        peak,
        on.reduce((a, f) => a + f.rate, 0),
      );
      if (on.length === 2) both++;
    }
    expect(s.mig.status).toBe('completed');
    expect(s.mig.contentCheck).toEqual({ pagesDiffering: 0, differing: [] });
    expect(net.flows.map((f) => f.name)).toEqual(['src.main', 'src.preempt']);
    net.settle();
    const [main, preempt] = net.flows;
    // Urgent pages went on the preempt channel (a 4K page and its header each), and both channels are idle at the end.
    expect(preempt!.bytes).toBeGreaterThanOrEqual(PAGE_SIZE);
    expect([main!.active, preempt!.active]).toEqual([false, false]);
    expect(both).toBeGreaterThan(0);
    expect(peak).toBeGreaterThan(0);
    expect(peak).toBeLessThanOrEqual(1.25e9 * (1 + 1e-9));
  });

  it('without preempt a request waits behind the socket buffer; postcopy-preempt sends it on its own channel', () => {
    const touches = Array.from({ length: 100 }, (_, j) => 16383 - j * 97);
    const lat = (caps: string[]): number => {
      const s = setup({ touches, caps });
      startPostcopy(s);
      runUntilDone(s.k, s.mig, 5 * NSEC_PER_SEC);
      expect(s.mig.status).toBe('completed');
      expect(s.mig.verify()).toEqual([]);
      const st = s.mig.postcopy!.stats;
      // the preempt channel carries the requested pages (each 4K + its header), the main channel the rest
      if (caps.includes('postcopy-preempt')) {
        expect(st.preemptBytes).toBeGreaterThanOrEqual(st.requests * PAGE_SIZE);
        expect(st.preemptBytes).toBeLessThan(st.bytes);
      } else expect(st.preemptBytes).toBe(0);
      return mean(st.latencies);
    };
    const plain = lat(['postcopy-ram']);
    const preempt = lat(['postcopy-ram', 'postcopy-preempt']);
    // 4 MiB of send buffer at 1.25 GB/s is 3.4 ms ahead of a request.
    expect(plain).toBeGreaterThan(3 * NSEC_PER_MSEC);
    expect(preempt).toBeLessThan(NSEC_PER_MSEC);
  });

  it('the background stream goes on after a requested page (get_queued_page): a sequential reader faults once or twice, not on every page', () => {
    // 200 pages read in order from page 12000, far ahead of the bulk stage (it starts at page 0).
    const touches = Array.from({ length: 200 }, (_, j) => 12000 + j);
    const run = (caps: string[]): { requests: number; faults: number; first: number[] } => {
      const s = setup({ touches, caps });
      startPostcopy(s);
      runUntilDone(s.k, s.mig, 5 * NSEC_PER_SEC);
      expect(s.mig.status).toBe('completed');
      expect(s.touched()).toBe(touches.length);
      expect(s.mig.contentCheck).toEqual({ pagesDiffering: 0, differing: [] });
      const st = s.mig.postcopy!.stats;
      // Every fault was answered: one wake (and latency) per block.
      expect(st.latencies.length).toBe(s.faults());
      return { requests: st.requests, faults: s.faults(), first: st.latencies };
    };
    // Without preempt the requested page waits behind the socket buffer (4 MiB at 1.25 GB/s: 3.4 ms) and the pages
    // after it follow it on the main channel. The vCPU may fault once more on the next page: memtwin writes the
    // background in 256 KiB pieces, each placed when its last byte is in (200 µs here, a read every 20 µs).
    const plain = run(['postcopy-ram']);
    expect(plain.faults).toBeLessThanOrEqual(2);
    expect(plain.requests).toBeLessThanOrEqual(2);
    expect(plain.first[0]).toBeGreaterThan(3 * NSEC_PER_MSEC);
    // With preempt the requested page comes at once on its own channel; the next page is already in the main
    // thread's QEMUFile (not dirty any more: QEMU drops that request), so the vCPU waits for it on the main
    // channel, behind the socket buffer, and the rest follow it there: two requests, not one per page.
    const pre = run(['postcopy-ram', 'postcopy-preempt']);
    expect(pre.faults).toBe(2);
    expect(pre.requests).toBe(2);
    expect(pre.first[0]).toBeLessThan(NSEC_PER_MSEC);
    expect(pre.first[1]).toBeGreaterThan(3 * NSEC_PER_MSEC);
  });

  it('refuses preempt without postcopy-ram, and migrate-start-postcopy without the capability', () => {
    const s = setup({ caps: ['postcopy-preempt'] });
    expect(qmp(s.src, 'migrate', { uri: URI })).toEqual({
      error: { class: 'GenericError', desc: 'Postcopy preempt requires postcopy-ram' },
    });
    const t = setup({ caps: [] });
    expect(qmp(t.src, 'migrate-start-postcopy')).toEqual({
      error: { class: 'GenericError', desc: 'Enable postcopy with migrate_set_capability before the start of migration' },
    });
  });
});

describe('postcopy between RAM blocks of different page sizes', () => {
  /** A 32M guest backed by 2M hugetlbfs on the source and by anonymous 4K pages on the destination. */
  function mismatched(caps: string[]): { k: Kernel; src: Vm; dst: Vm; mig: MigrationState } {
    const k = vmTestKernel({ nodes: 1, gib: 2, cpus: 4 });
    expect(k.sysfs.write('/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages', '32')).toBe(0);
    const objects: VmConfig['objects'] = [
      { 'qom-type': 'memory-backend-file', id: 'mem', size: 32 * MiB, 'mem-path': '/dev/hugepages', share: true },
    ];
    const src = new Vm(k, { name: 'src', smp: 1, objects, 'memory-backend': 'mem' });
    const dst = new Vm(k, {
      name: 'dst',
      smp: 1,
      objects: [{ 'qom-type': 'memory-backend-ram', id: 'mem', size: 32 * MiB }],
      'memory-backend': 'mem',
    });
    const mig = new MigrationState(src, {}).register();
    mig.incoming(URI, dst, new Link({ bandwidth: 1.25e9, latency: 50_000 }));
    qmp(src, 'migrate-set-capabilities', { capabilities: caps.map((capability) => ({ capability, state: true })) });
    return { k, src, dst, mig };
  }

  it("fails at once with postcopy-ram, with QEMU's error (loadvm_postcopy_handle_advise), before any RAM is sent", () => {
    const s = mismatched(['postcopy-ram']);
    expect(qmp(s.src, 'migrate', { uri: URI })).toEqual({ return: {} });
    expect(s.mig.query()).toEqual({ status: 'failed', 'error-desc': 'Postcopy needs matching RAM page sizes (s=200000 d=1000)' });
    expect(s.src.ramList.blocks[0]!.pageSize).toBe(PMD_SIZE);
    expect(s.dst.ramList.blocks[0]!.pageSize).toBe(PAGE_SIZE);
  });

  it('still migrates by precopy alone: only postcopy needs the page sizes to match', () => {
    const s = mismatched([]);
    expect(qmp(s.src, 'migrate', { uri: URI })).toEqual({ return: {} });
    runUntilDone(s.k, s.mig, 5 * NSEC_PER_SEC);
    expect(s.mig.status).toBe('completed');
    expect(s.mig.verify()).toEqual([]);
  });
});

describe('postcopy on hugetlbfs', () => {
  const backend: VmConfig['objects'] = [
    { 'qom-type': 'memory-backend-file', id: 'mem', size: 32 * MiB, 'mem-path': '/dev/hugepages', share: true },
  ];

  it('requests and places whole 2M pages', () => {
    const touches = [0, 1, 600, 4095, 2048];
    const s = setup({ m: 32 * MiB, backend, touches });
    startPostcopy(s);
    runUntilDone(s.k, s.mig, 5 * NSEC_PER_SEC);
    expect(s.mig.status).toBe('completed');
    expect(s.mig.verify()).toEqual([]);
    const pc = s.mig.postcopy!;
    // Page 1 shares page 0's 2M page; at most one request per huge page touched.
    expect(pc.stats.requests).toBeLessThanOrEqual(4);
    expect(s.dst.hostMappingSize(0)).toBe(PMD_SIZE);
  });

  it('with uffd-hugetlb-subpage-copy, requests 4K pieces and ends with huge mappings', () => {
    const touches = [0, 1, 600, 4095, 2048];
    const s = setup({ m: 32 * MiB, backend, touches, mig: { postcopy: { hugetlbRequestSize: PAGE_SIZE } } });
    expect(s.k.sysfs.write('/sys/kernel/memtwin/features/uffd-hugetlb-subpage-copy', '1')).toBe(0);
    startPostcopy(s);
    runUntilDone(s.k, s.mig, 5 * NSEC_PER_SEC);
    expect(s.mig.status).toBe('completed');
    expect(s.mig.verify()).toEqual([]);
    // Pages 0 and 1 are separate 4K requests now.
    expect(s.mig.postcopy!.stats.requests).toBeGreaterThanOrEqual(2);
    for (let g = 0; g < 32 * MiB; g += PMD_SIZE) expect(s.dst.hostMappingSize(g)).toBe(PMD_SIZE);
    expect(s.k.hgm.stats.collapses).toBeGreaterThan(0);
  });
});

describe('postcopy on hugetlbfs with hugetlb-hgm', () => {
  it('resolves 4K minor faults with alias writes and UFFDIO_CONTINUE, and collapses the pages at the end', () => {
    const backend: VmConfig['objects'] = [
      { 'qom-type': 'memory-backend-file', id: 'mem', size: 32 * MiB, 'mem-path': '/dev/hugepages', share: true },
    ];
    const touches = [0, 1, 600, 4095, 2048];
    const s = setup({ m: 32 * MiB, backend, touches, mig: { postcopy: { hugetlbRequestSize: PAGE_SIZE } } });
    expect(s.k.sysfs.write('/sys/kernel/memtwin/features/hugetlb-hgm', '1')).toBe(0);
    startPostcopy(s);
    runUntilDone(s.k, s.mig, 5 * NSEC_PER_SEC);
    expect(s.mig.status).toBe('completed');
    expect(s.touched()).toBe(touches.length);
    expect(s.mig.verify()).toEqual([]);
    expect(s.mig.contentCheck).toEqual({ pagesDiffering: 0, differing: [] });
    // Pages 0 and 1 are separate 4K minor faults; every 2M page is mapped huge again after MADV_COLLAPSE.
    expect(s.mig.postcopy!.stats.requests).toBeGreaterThanOrEqual(2);
    for (let g = 0; g < 32 * MiB; g += PMD_SIZE) expect(s.dst.hostMappingSize(g)).toBe(PMD_SIZE);
    expect(s.dst.process.mm.hgm.size).toBe(0);
  });
});

describe('postcopy on hugetlbfs with hugetlb-devmem-remap', () => {
  const backend: VmConfig['objects'] = [
    { 'qom-type': 'memory-backend-file', id: 'mem', size: 32 * MiB, 'mem-path': '/dev/hugepages', share: true },
  ];
  const touches = [0, 1, 600, 4095, 2048];

  it('resolves 4K faults through /dev/mem aliases, remaps every page at 2M when complete, loses nothing', () => {
    const s = setup({ m: 32 * MiB, backend, touches, mig: { postcopy: { hugetlbRequestSize: PAGE_SIZE } } });
    expect(s.k.sysfs.write('/sys/kernel/memtwin/features/hugetlb-devmem-remap', '1')).toBe(0);
    expect(s.k.sysfs.write('/sys/kernel/memtwin/config/CONFIG_STRICT_DEVMEM', '0')).toBe(0);
    startPostcopy(s);
    runUntilDone(s.k, s.mig, 5 * NSEC_PER_SEC);
    expect(s.mig.status).toBe('completed');
    expect(s.touched()).toBe(touches.length);
    expect(s.mig.verify()).toEqual([]);
    expect(s.mig.contentCheck).toEqual({ pagesDiffering: 0, differing: [] });
    const pc = s.mig.postcopy!;
    // Pages 0 and 1 share a 2M page but are separate 4K requests; the destination asked with exact fault addresses.
    expect(pc.stats.requests).toBeGreaterThanOrEqual(2);
    expect([...s.k.uffd.ctxs.values()].some((c) => (c.features ?? 0) & UFFD_FEATURE.UFFD_FEATURE_EXACT_ADDRESS)).toBe(true);
    // Every huge page discarded at the switchover went through an alias and was remapped at 2M: none left open.
    expect(s.k.devmem.stats.aliases).toBeGreaterThan(0);
    expect(s.k.devmem.stats.remaps).toBe(s.k.devmem.stats.aliases);
    expect(s.k.devmem.openAliases).toBe(0);
    for (let g = 0; g < 32 * MiB; g += PMD_SIZE) expect(s.dst.hostMappingSize(g)).toBe(PMD_SIZE);
    // While aliased, the destination had a PTE table per 2M page filling: page-table memory the remap then freed.
    expect(pc.stats.pgtablesPeak).toBeGreaterThan(pc.stats.pgtablesAtStart);
    expect(s.dst.process.mm.pgtablesBytes).toBe(pc.stats.pgtablesAtStart);
  });

  it('with CONFIG_STRICT_DEVMEM (the default) the migration fails when postcopy is advised: /dev/mem over RAM is EPERM', () => {
    const s = setup({ m: 32 * MiB, backend, touches, mig: { postcopy: { hugetlbRequestSize: PAGE_SIZE } } });
    expect(s.k.sysfs.write('/sys/kernel/memtwin/features/hugetlb-devmem-remap', '1')).toBe(0);
    expect(qmp(s.src, 'migrate', { uri: URI })).toEqual({ return: {} });
    expect(s.mig.query()).toEqual({
      status: 'failed',
      'error-desc': 'hugetlb-devmem-remap: mmap of /dev/mem over guest RAM: Operation not permitted (CONFIG_STRICT_DEVMEM=y)',
    });
    expect(s.k.devmem.stats).toMatchObject({ aliases: 0, refused: 1 });
  });

  it('places 4K units only: a 2M request size is refused', () => {
    const s = setup({ m: 32 * MiB, backend, touches, mig: { postcopy: { hugetlbRequestSize: PMD_SIZE } } });
    expect(s.k.sysfs.write('/sys/kernel/memtwin/features/hugetlb-devmem-remap', '1')).toBe(0);
    expect(s.k.sysfs.write('/sys/kernel/memtwin/config/CONFIG_STRICT_DEVMEM', '0')).toBe(0);
    startPostcopy(s);
    runUntilDone(s.k, s.mig, 5 * NSEC_PER_SEC);
    expect(s.mig.query()['error-desc']).toBe(
      'postcopy: hugetlb-devmem-remap maps its aliases by 4K pages: the hugetlb request size must be 4K, not 2097152',
    );
  });
});

describe('faults injected', () => {
  it('a link drop during postcopy pauses it; resume recovers and nothing is lost', () => {
    const touches = Array.from({ length: 300 }, (_, j) => (j * 53) % 16384);
    const s = setup({ touches });
    startPostcopy(s);
    s.k.events.runUntil(s.k.clock.now() + 20 * NSEC_PER_MSEC);
    expect(s.mig.query()['status']).toBe('postcopy-active');
    s.mig.linkDrop();
    expect(s.mig.query()['status']).toBe('postcopy-paused');
    s.k.events.runUntil(s.k.clock.now() + 50 * NSEC_PER_MSEC);
    expect(s.mig.query()['status']).toBe('postcopy-paused');
    expect(qmp(s.src, 'migrate', { uri: URI, resume: true })).toEqual({ return: {} });
    expect(s.mig.query()['status']).toBe('postcopy-recover');
    runUntilDone(s.k, s.mig, 5 * NSEC_PER_SEC);
    expect(s.mig.status).toBe('completed');
    expect(s.touched()).toBe(touches.length);
    expect(s.mig.verify()).toEqual([]);
  });

  it('a vCPU that faults while postcopy is paused gets its page after recovery', () => {
    const s = setup({ touches: [5, 4000, 9000] });
    startPostcopy(s);
    while (!s.mig.postcopy?.resumedAt) s.k.events.runUntil(s.k.clock.now() + 100_000);
    s.mig.linkDrop();
    s.k.events.runUntil(s.k.clock.now() + 10 * NSEC_PER_MSEC);
    // The vCPU blocked on its first page during the pause; nothing was asked for.
    expect(s.touched()).toBe(0);
    expect(s.mig.postcopy!.stats.requests).toBe(0);
    expect(qmp(s.src, 'migrate', { uri: URI, resume: true })).toEqual({ return: {} });
    runUntilDone(s.k, s.mig, 5 * NSEC_PER_SEC);
    expect(s.touched()).toBe(3);
    expect(s.mig.postcopy!.stats.requests).toBeGreaterThan(0);
    expect(s.mig.verify()).toEqual([]);
  });

  it('a link stall delays postcopy by its length', () => {
    const total = (stallMs: number): number => {
      const s = setup({ written: 4096 });
      startPostcopy(s);
      s.k.events.runUntil(s.k.clock.now() + 5 * NSEC_PER_MSEC);
      if (stallMs) s.mig.linkStall(stallMs * NSEC_PER_MSEC);
      runUntilDone(s.k, s.mig, 5 * NSEC_PER_SEC);
      expect(s.mig.verify()).toEqual([]);
      return s.mig.endTime - s.mig.startTime;
    };
    const d = total(30) - total(0);
    expect(d).toBeGreaterThanOrEqual(29 * NSEC_PER_MSEC);
    expect(d).toBeLessThanOrEqual(31 * NSEC_PER_MSEC);
  });

  it('losing the source during postcopy loses the VM, and the run says so', () => {
    const s = setup({ touches: Array.from({ length: 100 }, (_, j) => j * 160) });
    startPostcopy(s);
    s.k.events.runUntil(s.k.clock.now() + 10 * NSEC_PER_MSEC);
    s.mig.sourceLost();
    expect(s.mig.vmLost).toBe(true);
    expect(s.mig.query()).toEqual({
      status: 'failed',
      'error-desc': 'memtwin: the source was lost during postcopy; the destination lacks pages and the VM is lost',
    });
    expect(s.mig.postcopy!.missingUnits).toBeGreaterThan(0);
  });

  it('a link drop during precopy fails the migration and the guest keeps running on the source', () => {
    const events: string[] = [];
    const k = vmTestKernel({ nodes: 1, gib: 2, cpus: 4 });
    const src = new Vm(k, { name: 'src', m: 64 * MiB, smp: 1 });
    const dst = new Vm(k, { name: 'dst', m: 64 * MiB, smp: 1 });
    for (let p = 0; p < 16384; p++) k.runAsTask({ ns: 0 }, () => src.access(0, p * PAGE_SIZE, 1, 1, true, 7));
    const mig = new MigrationState(src, { onGuest: (w) => events.push(w) }).register();
    mig.incoming(URI, dst, new Link({ bandwidth: 1.25e9, latency: 50_000 }));
    qmp(src, 'migrate', { uri: URI });
    k.events.runUntil(k.clock.now() + 200 * NSEC_PER_MSEC);
    expect(mig.status).toBe('active');
    mig.linkDrop();
    expect(mig.query()).toEqual({ status: 'failed', 'error-desc': 'Unable to write to socket: Broken pipe' });
    expect(mig.guestRunning).toBe(true);
    expect(events).toEqual([]);
  });
});

describe('property: postcopy loses no data', () => {
  it('under any touch order, write pattern, and a drop with recovery', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 4095 }), { minLength: 1, maxLength: 40 }),
        fc.integer({ min: 0, max: 4096 }),
        fc.boolean(),
        fc.option(fc.integer({ min: 1, max: 30 }), { nil: undefined }),
        (touches, written, preempt, dropAtMs) => {
          const s = setup({ m: 16 * MiB, touches, written, caps: preempt ? ['postcopy-ram', 'postcopy-preempt'] : ['postcopy-ram'] });
          startPostcopy(s);
          if (dropAtMs !== undefined) {
            s.k.events.runUntil(s.k.clock.now() + dropAtMs * NSEC_PER_MSEC);
            s.mig.linkDrop();
            s.k.events.runUntil(s.k.clock.now() + 5 * NSEC_PER_MSEC);
            if (s.mig.status !== 'completed') qmp(s.src, 'migrate', { uri: URI, resume: true });
          }
          runUntilDone(s.k, s.mig, 10 * NSEC_PER_SEC);
          expect(s.mig.status).toBe('completed');
          expect(s.touched()).toBe(touches.length);
          expect(s.mig.verify(5)).toEqual([]);
          expect(s.mig.contentCheck).toEqual({ pagesDiffering: 0, differing: [] });
        },
      ),
      { numRuns: 40 },
    );
  });
});

describe('property: the stream following requests loses no data and answers every fault', () => {
  it('under runs of sequential reads from random places, with or without preempt, on 4K or 2M pages', () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ start: fc.integer({ min: 0, max: 4095 }), len: fc.integer({ min: 1, max: 80 }) }), {
          minLength: 1,
          maxLength: 6,
        }),
        fc.integer({ min: 0, max: 4096 }),
        fc.boolean(),
        fc.boolean(),
        (runs, written, preempt, huge) => {
          const touches = runs.flatMap(({ start, len }) => Array.from({ length: len }, (_, j) => (start + j) % 4096));
          const m = 16 * MiB;
          const backend: VmConfig['objects'] | undefined = huge
            ? [{ 'qom-type': 'memory-backend-file', id: 'mem', size: m, 'mem-path': '/dev/hugepages', share: true }]
            : undefined;
          const caps = preempt ? ['postcopy-ram', 'postcopy-preempt'] : ['postcopy-ram'];
          const s = setup({ m, touches, written, caps, ...(backend ? { backend } : {}) });
          startPostcopy(s);
          runUntilDone(s.k, s.mig, 10 * NSEC_PER_SEC);
          expect(s.mig.status).toBe('completed');
          // Every fault answered: the vCPU read every page, and woke once per block.
          expect(s.touched()).toBe(touches.length);
          const st = s.mig.postcopy!.stats;
          expect(st.latencies.length).toBe(s.faults());
          // The destination's fault thread asks at most once per block (one vCPU: one fault outstanding at a time).
          expect(st.requests).toBeLessThanOrEqual(s.faults());
          // No data lost.
          expect(s.mig.verify(5)).toEqual([]);
          expect(s.mig.contentCheck).toEqual({ pagesDiffering: 0, differing: [] });
          expect(s.mig.postcopy!.missingUnits).toBe(0);
        },
      ),
      { numRuns: 30 },
    );
  });
});

describe('property: hugetlb-devmem-remap loses no data', () => {
  it('under any touch order over 2M hugetlbfs, with or without a drop and recovery: every alias remapped, no frame owned twice', () => {
    const backend: VmConfig['objects'] = [
      { 'qom-type': 'memory-backend-file', id: 'mem', size: 16 * MiB, 'mem-path': '/dev/hugepages', share: true },
    ];
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 4095 }), { minLength: 1, maxLength: 30 }),
        fc.boolean(),
        fc.option(fc.integer({ min: 1, max: 20 }), { nil: undefined }),
        (touches, preempt, dropAtMs) => {
          const caps = preempt ? ['postcopy-ram', 'postcopy-preempt'] : ['postcopy-ram'];
          const s = setup({ m: 16 * MiB, backend, touches, caps, mig: { postcopy: { hugetlbRequestSize: PAGE_SIZE } } });
          expect(s.k.sysfs.write('/sys/kernel/memtwin/features/hugetlb-devmem-remap', '1')).toBe(0);
          expect(s.k.sysfs.write('/sys/kernel/memtwin/config/CONFIG_STRICT_DEVMEM', '0')).toBe(0);
          startPostcopy(s);
          if (dropAtMs !== undefined) {
            s.k.events.runUntil(s.k.clock.now() + dropAtMs * NSEC_PER_MSEC);
            s.mig.linkDrop();
            s.k.events.runUntil(s.k.clock.now() + 5 * NSEC_PER_MSEC);
            if (s.mig.status !== 'completed') qmp(s.src, 'migrate', { uri: URI, resume: true });
          }
          runUntilDone(s.k, s.mig, 10 * NSEC_PER_SEC);
          expect(s.mig.status).toBe('completed');
          expect(s.touched()).toBe(touches.length);
          expect(s.mig.verify(5)).toEqual([]);
          expect(s.mig.contentCheck).toEqual({ pagesDiffering: 0, differing: [] });
          expect(s.k.devmem.openAliases).toBe(0);
          expect(s.k.devmem.stats.remaps).toBe(s.k.devmem.stats.aliases);
          for (let g = 0; g < 16 * MiB; g += PMD_SIZE) expect(s.dst.hostMappingSize(g)).toBe(PMD_SIZE);
          expect(verifyKernel(s.k)).toEqual([]);
        },
      ),
      { numRuns: 25 },
    );
  });
});

describe('the switch waits for ram_save_iterate to return', () => {
  /**
   * migrate-start-postcopy 100 ms into a migration limited to 32 MiB/s of a
   * 256 MiB guest whose pages are all written, and what the precopy sent
   * before the switch. On 4K pages ram_save_iterate returns at each window's
   * budget. On 2M hugetlbfs each call sends a whole host page and sleeps
   * inside it at the rate limit (migration_rate_limit), and the iteration
   * looks at the clock (MAX_WAIT) only after its 1st, 65th, 129th... host
   * page: the switch waits for the 65th, 130 MiB, about 4 s at the limit
   * (QEMU 7.2's postcopy-hugetlb-2M run in validate qemu: 114 MB of precopy
   * before a switch asked for at 1 s).
   */
  function precopyBeforeSwitch(backend?: VmConfig['objects']): number {
    const m = 256 * MiB;
    const s = setup({ m, ...(backend ? { backend } : {}), caps: ['postcopy-ram'] });
    qmp(s.src, 'migrate-set-parameters', { 'max-bandwidth': 32 * MiB });
    qmp(s.src, 'migrate', { uri: URI });
    s.k.events.after(100 * NSEC_PER_MSEC, 'start-postcopy', () => qmp(s.src, 'migrate-start-postcopy'));
    runUntilDone(s.k, s.mig, 30 * NSEC_PER_SEC);
    expect(s.mig.status).toBe('completed');
    expect(s.mig.contentCheck?.pagesDiffering).toBe(0);
    return (s.mig.query() as { ram: Record<string, number> }).ram['precopy-bytes']!;
  }

  it('on 4K pages within a rate window; on 2M hugetlbfs after 65 host pages', () => {
    const small = precopyBeforeSwitch();
    // 100 ms and at most one more window at 32 MiB/s.
    expect(small).toBeLessThan(0.25 * 32 * MiB);
    const huge = precopyBeforeSwitch([
      { 'qom-type': 'memory-backend-file', id: 'mem', size: 256 * MiB, 'mem-path': '/dev/hugepages', share: true },
    ]);
    expect(huge).toBeGreaterThan(65 * 2 * MiB);
    expect(huge).toBeLessThan(66 * 2 * MiB);
  });
});

describe('property: runs of pages (ramRuns) give the same postcopy as page by page', () => {
  /** One postcopy with runs on or off: everything query-migrate and the postcopy's stats say, its times, the content check. */
  function postcopy(
    writes: { page: number; fill: number }[],
    reads: number[],
    touches: number[],
    preempt: boolean,
    dropAtMs: number | undefined,
    membw: boolean,
    runs: boolean,
  ): unknown {
    ramRuns.enabled = runs;
    try {
      const s = setup({ m: 8 * MiB, touches, written: 0, caps: preempt ? ['postcopy-ram', 'postcopy-preempt'] : ['postcopy-ram'] });
      if (membw) s.k.membw = new MemBandwidth({ nodes: [2e9], interconnect: [[0]] });
      // Pages written (a fill of 0 leaves a zero frame), pages only read (the zero page), and the rest never touched.
      for (const w of writes) s.k.runAsTask({ ns: 0 }, () => s.src.access(0, w.page * PAGE_SIZE, 1, 1, true, w.fill));
      for (const p of reads) s.k.runAsTask({ ns: 0 }, () => s.src.access(0, p * PAGE_SIZE, 1, 1, false, 0));
      startPostcopy(s);
      if (dropAtMs !== undefined) {
        s.k.events.runUntil(s.k.clock.now() + dropAtMs * NSEC_PER_MSEC);
        s.mig.linkDrop();
        s.k.events.runUntil(s.k.clock.now() + 5 * NSEC_PER_MSEC);
        if (s.mig.status !== 'completed') qmp(s.src, 'migrate', { uri: URI, resume: true });
      }
      runUntilDone(s.k, s.mig, 10 * NSEC_PER_SEC);
      const st = s.mig.postcopy!.stats;
      return {
        query: s.mig.query(),
        ns: { start: s.mig.startTime, end: s.mig.endTime, now: s.k.clock.now() },
        stats: { ...st },
        touched: s.touched(),
        differing: s.mig.verify(),
        membw: membw ? [s.k.membw!.bytesOnNode(0), s.k.membw!.utilisation(0, s.k.clock.now())] : null,
      };
    } finally {
      ramRuns.enabled = true;
    }
  }

  it('the same placements, times, bytes and content check, nanosecond for nanosecond, with and without a bandwidth model', () => {
    const page = fc.integer({ min: 0, max: 2047 });
    fc.assert(
      fc.property(
        fc.array(fc.record({ page, fill: fc.integer({ min: 0, max: 255 }) }), { maxLength: 400 }),
        fc.array(page, { maxLength: 100 }),
        fc.array(page, { maxLength: 30 }),
        fc.boolean(),
        fc.option(fc.integer({ min: 1, max: 10 }), { nil: undefined }),
        fc.boolean(),
        (writes, reads, touches, preempt, dropAtMs, membw) => {
          const paged = postcopy(writes, reads, touches, preempt, dropAtMs, membw, false);
          const batched = postcopy(writes, reads, touches, preempt, dropAtMs, membw, true);
          expect(batched).toEqual(paged);
          expect((paged as { differing: unknown[] }).differing).toEqual([]);
        },
      ),
      { numRuns: 40 },
    );
  });
});
