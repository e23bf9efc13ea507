/**
 * Guests under memory pressure in scenario runs: host swap reaching the
 * guests (major faults, throughput, PSI), the guest's reclaim and the
 * balloon's deflate-on-oom, and what the run reports.
 */
import { describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadScenario } from './load.ts';
import { runScenario } from './run.ts';
import type { RunResult } from './result.ts';

const dir = mkdtempSync(join(tmpdir(), 'memtwin-pressure-'));
const MiB = 2 ** 20;

function run(name: string, text: string, index = 0): RunResult {
  const f = join(dir, name);
  writeFileSync(f, text);
  const l = loadScenario(f);
  return runScenario(l.runs[index]!, { file: l.file, warn: () => {} });
}

/** Two 512 MiB VMs, each with a workload that writes 448 MiB of its RAM, then reads and writes it at random, on a host of `hostMem`. */
function twoVms(hostMem: string, swap: string): string {
  return `
name: p
host: { name: h, nodes: [{ id: 0, memory: ${hostMem}, cpus: 0-3 }] }
${swap}
duration: 1500ms
sample: { interval: 250ms }
kernel: { /sys/kernel/mm/transparent_hugepage/enabled: never }
vms:
  - name: a
    memdevs: [{ id: ram0, size: 512M }]
    vcpus: [0, 1]
    workloads:
      - name: w
        vcpu: 0
        guest_page_size: 4K
        workload: { phases: [{ pattern: first-touch, mapping: ram, length: 448M, duration: 300ms }, { pattern: uniform, mapping: ram, length: 448M, think: 10us }] }
  - name: b
    memdevs: [{ id: ram0, size: 512M }]
    vcpus: [2, 3]
    workloads:
      - name: w
        vcpu: 0
        guest_page_size: 4K
        workload: { phases: [{ pattern: first-touch, mapping: ram, length: 448M, duration: 300ms }, { pattern: uniform, mapping: ram, length: 448M, think: 10us }] }
`;
}

describe('host memory pressure reaching the guests', () => {
  const roomy = run('roomy.yaml', twoVms('2G', 'swap: { size: 512M }'));
  const tight = run('tight.yaml', twoVms('640M', 'swap: { size: 768M }'));

  it('swaps the VMMs out and back in: the guests take host major faults, their throughput drops, and PSI shows it', () => {
    expect(roomy.final['pswpout']).toBe(0);
    expect(roomy.final['host.psi.some_total_us']).toBe(0);
    expect(tight.final['pswpout']).toBeGreaterThan(0);
    expect(tight.final['pswpin']).toBeGreaterThan(0);
    expect(tight.final['pgmajfault']).toBeGreaterThan(0);
    expect(tight.final['threads_stopped']).toBe(0);
    for (const vm of ['a', 'b']) {
      const t = (r: RunResult): number =>
        r.threads.find((x) => x.thread === `${vm}/w` || (x.process === vm && x.thread === 'w'))!.throughput;
      expect(t(tight)).toBeLessThan(t(roomy));
    }
    const some = tight.final['host.psi.some_total_us']!;
    expect(some).toBeGreaterThan(0);
    expect(tight.final['host.psi.full_total_us']).toBeLessThanOrEqual(some);
    for (const vm of ['a', 'b'])
      expect(tight.final[`vm.${vm}.psi.full_total_us`]).toBeLessThanOrEqual(tight.final[`vm.${vm}.psi.some_total_us`]!);
  });

  it('samples swap traffic, swap in use and PSI over time, per host and per VM', () => {
    const m = tight.series.metrics;
    for (const k of [
      'host.pswpout_per_s',
      'host.pswpin_per_s',
      'host.pgsteal_per_s',
      'host.swap_used_bytes',
      'host.oom_kill',
      'host.psi.some_avg10',
      'host.psi.full_avg10',
      'host.psi.some_pct',
      'host.psi.full_pct',
      'vm.a.psi.some_pct',
      'vm.b.guest.oom_kills',
    ])
      expect(m[k], k).toHaveLength(tight.series.t_ns.length);
    expect(Math.max(...m['host.pswpout_per_s']!)).toBeGreaterThan(0);
    expect(Math.max(...m['host.swap_used_bytes']!)).toBeGreaterThan(0);
    // Shares of an interval, in percent.
    for (const v of m['host.psi.some_pct']!) expect(v).toBeLessThanOrEqual(100);
    m['host.psi.full_pct']!.forEach((v, i) => expect(v).toBeLessThanOrEqual(m['host.psi.some_pct']![i]!));
  });

  it('reports no pressure series without a swap file (scenarios as before)', () => {
    const none = run('noswap.yaml', twoVms('2G', ''));
    expect(none.series.metrics['host.pswpout_per_s']).toBeUndefined();
    expect(none.final['host.psi.some_total_us']).toBeUndefined();
  });
});

describe('the guest under its own pressure: page cache reclaim, deflate-on-oom, the OOM killer’s place', () => {
  /** A 256 MiB guest whose balloon takes 128 MiB, then reads 64 MiB of files and allocates 160 MiB. */
  const guest = (deflateOnOom: boolean): string => `
name: g
host: { name: h, nodes: [{ id: 0, memory: 1G, cpus: 0-1 }] }
swap: { size: 64M }
duration: 1s
sample: { interval: 100ms }
vms:
  - name: v
    memdevs: [{ id: ram0, size: 256M }]
    vcpus: [0, 1]
    balloon: { deflate-on-oom: ${deflateOnOom} }
    events:
      - { at: 10ms, op: balloon, target: 128M }
      - { at: 200ms, op: guest_alloc, size: 64M, vcpu: 0, page_cache: true }
      - { at: 300ms, op: guest_alloc, size: 160M, vcpu: 1 }
`;
  const allocated = (r: RunResult): number => r.events.find((e) => e.vm === 'v' && e.op === 'guest_alloc' && e.ret > 16384)?.ret ?? -1;

  it('drops all the page cache first, then deflates the balloon 256 pages a notification: no OOM', () => {
    const r = run('doom.yaml', guest(true));
    // 128 MiB free after the balloon but one page (the driver's own buffer); 64 MiB of it page cache; the other
    // 32 MiB and a page of the 160 come from the balloon, 1 MiB (256 pages) a notification.
    expect(r.final['vm.v.guest.pgsteal_direct']).toBe((64 * MiB) / 4096);
    expect(r.final['vm.v.guest.oom_deflates']).toBe(33);
    expect(r.final['vm.v.guest.oom_kills']).toBe(0);
    expect(allocated(r)).toBe((160 * MiB) / 4096);
    expect(r.warnings ?? []).toEqual([]);
  });

  it('without deflate-on-oom the balloon keeps its pages: the allocation reaches the OOM killer’s place, and the run says so', () => {
    const r = run('nodoom.yaml', guest(false));
    expect(r.final['vm.v.guest.pgsteal_direct']).toBe((64 * MiB) / 4096);
    expect(r.final['vm.v.guest.oom_deflates']).toBe(0);
    expect(r.final['vm.v.guest.oom_kills']).toBe(1);
    expect(allocated(r)).toBe((128 * MiB) / 4096 - 1);
    expect((r.warnings ?? []).join('\n')).toMatch(/guest_alloc faulted in 128 MiB of the 160 MiB asked: the guest ran out of free memory/);
  });
});
