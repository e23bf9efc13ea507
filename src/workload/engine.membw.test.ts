/**
 * The workload engine with the memory bandwidth model (src/sim/membw.ts):
 * bytes conserved between what the engine and the kernel register and what
 * the model counts, the simulated STREAM copy against this machine's
 * measured copy bandwidth, and scenario (a): bandwidth-bound threads faster
 * spread over two nodes than pinned to one, a latency-bound one faster pinned.
 */
import { afterAll, describe, expect, it, vi } from 'vitest';
import fc from 'fast-check';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadScenario } from '../scenario/load.ts';
import { runScenario } from '../scenario/run.ts';
import { Kernel } from '../kernel/kernel.ts';
import { CostProfile } from '../sim/cost_profile.ts';
import { fromRoot } from '../util/paths.ts';
import type { RunResult } from '../scenario/result.ts';
import { simulatedCopy } from './stream_copy.ts';
import { smallKernel, RW, ANON } from '../testing/fixtures.ts';
import { MemBandwidth, membwParams, membwSpec } from '../sim/membw.ts';
import { MADV, PAGE_SIZE } from '../kernel/uapi.ts';
import { followPage } from '../kernel/memory.ts';

const dir = mkdtempSync(join(tmpdir(), 'memtwin-membw-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
function run(yaml: string, index = 0): RunResult {
  const f = join(dir, `s${n++}.yaml`);
  writeFileSync(f, yaml);
  return runScenario(loadScenario(f).runs[index]!, { file: f });
}

const TWO_NODES = `
host:
  name: two
  nodes:
    - { id: 0, memory: 1G, cpus: 0-1 }
    - { id: 1, memory: 1G, cpus: 2-3 }
  distances: [[10, 21], [21, 10]]`;

describe('bytes moved', () => {
  it('what the engine and the kernel register is what the bandwidth model counts', () => {
    const spec = fc.record({
      pattern: fc.constantFrom('sequential', 'uniform', 'zipf', 'first-touch', 'copy'),
      readRatio: fc.constantFrom(0, 0.5, 1),
      count: fc.integer({ min: 1, max: 2 }),
      cpu: fc.constantFrom(0, 2),
      size: fc.constantFrom('16M', '96M'),
      policy: fc.constantFrom('', 'MPOL_BIND, nodes: [1]', 'MPOL_INTERLEAVE, nodes: [0, 1]'),
      thp: fc.constantFrom('always', 'never'),
      populate: fc.boolean(),
    });
    fc.assert(
      fc.property(spec, (c) => {
        // Everything the kernel registers goes through chargeMem: a read on one node, a store (storeTraffic x its bytes) on another.
        const kernelBytes = [0, 0];
        const orig = Kernel.prototype.chargeMem;
        const spy = vi.spyOn(Kernel.prototype, 'chargeMem').mockImplementation(function (this: Kernel, ns, memNs, r, w, bytes, cpu) {
          if (this.membw) {
            kernelBytes[w]! += Math.round(this.membw.storeTraffic * bytes);
            if (r >= 0) kernelBytes[r]! += bytes;
          }
          return orig.call(this, ns, memNs, r, w, bytes, cpu);
        });
        try {
          const pol = c.policy ? `, policy: { mode: ${c.policy} }` : '';
          const to = c.pattern === 'copy' ? ', to: dst' : '';
          const r = run(`name: conserve
${TWO_NODES}
duration: 3ms
sample: { interval: 1ms }
kernel:
  /sys/kernel/mm/transparent_hugepage/enabled: ${c.thp}
processes:
  - name: p
    mappings:
      - { name: src, size: ${c.size}, populate: ${c.populate}${pol} }
      - { name: dst, size: ${c.size}${pol} }
    threads:
      - name: t
        cpu: ${c.cpu}
        count: ${c.count}
        workload: { pattern: ${c.pattern}, mapping: src${to}, read_ratio: ${c.readRatio}, slice: true }
`);
          const engine = r.threads.reduce((a, t) => a + t.membw_bytes!, 0);
          const counted = [r.final['node0.membw_bytes']!, r.final['node1.membw_bytes']!];
          expect(engine + kernelBytes[0]! + kernelBytes[1]!).toBe(counted[0]! + counted[1]!);
          for (const x of counted) expect(x).toBeGreaterThanOrEqual(0);
          for (const name of ['node0.membw_util', 'node1.membw_util'])
            for (const u of r.series.metrics[name]!) expect(u).toBeGreaterThanOrEqual(0);
          // a working set that fits in the LLC does not reach DRAM
          if (c.size === '16M' && c.pattern !== 'copy') expect(engine).toBe(0);
        } finally {
          spy.mockRestore();
        }
      }),
      { numRuns: 12 },
    );
  }, 120_000);

  it('a first touch through Kernel.access (a guest kernel, ram_load, prealloc) registers each clear_page on its node', () => {
    const k = smallKernel({ nodes: 2, mib: 64 });
    k.membw = new MemBandwidth(membwSpec(k.host, membwParams(k.costs)));
    const p = k.createProcess('toucher', 2); // CPU 2: node 1
    const pages = 64;
    const a = k.mmap(p, 0, pages * PAGE_SIZE, RW, ANON);
    k.madvise(p, a, pages * PAGE_SIZE, MADV.MADV_NOHUGEPAGE);
    const t = { ns: 0 };
    // The first page's fault builds the PTE table (handleMmFault); the other 63 take userAccess's fast path.
    k.runAsTask(t, () => k.access(p.mainThread, a, pages * PAGE_SIZE, PAGE_SIZE, true, 1));
    const node = k.phys.nodeOfPfn(followPage(p.mm, a));
    expect(k.membw.bytesOnNode(node)).toBe(pages * Math.round(k.membw.storeTraffic * PAGE_SIZE));
    expect(k.membw.bytesOnNode(1 - node)).toBe(0);
    // ... and costs what it costs on an idle node: the profile's fault figure per page.
    expect(t.ns).toBeCloseTo(pages * k.hot.faultWrite, 0);
  });
});

describe('STREAM copy', () => {
  const costs = CostProfile.load(fromRoot('profiles', 'default.json'));
  for (const t of [1, 2])
    it(`with ${t} thread${t > 1 ? 's' : ''} runs within 10% of the copy bandwidth measured here (membw_copy_${t}t)`, () => {
      const measured = costs.nsOf(`membw_copy_${t}t`);
      const sim = simulatedCopy(t);
      expect(Math.abs(sim / measured - 1)).toBeLessThan(0.1);
    }, 60_000);
});

describe('scenario (a): scenarios/membw-placement.yaml', () => {
  const runOf = (config: number): RunResult => {
    const f = fromRoot('scenarios', 'membw-placement.yaml');
    const spec = loadScenario(f).runs[config]!;
    spec.scenario.duration = 3_000_000;
    spec.scenario.sample = { interval: 1_000_000 };
    return runScenario(spec, { file: f });
  };

  it('eight streaming threads pinned to one node saturate it and run slower than spread with interleave', () => {
    const pinned = runOf(0);
    const interleaved = runOf(1);
    expect(pinned.run.id).toBe('000-workload=bandwidth,placement=pinned');
    expect(interleaved.run.id).toBe('001-workload=bandwidth,placement=interleave');
    // pinned: node 0 at its bandwidth, node 1 idle; interleaved: both busy, neither saturated
    expect(pinned.final['node0.membw_util_mean']).toBeGreaterThan(0.9);
    expect(pinned.final['node1.membw_util_mean']).toBe(0);
    for (const n of [0, 1]) {
      expect(interleaved.final[`node${n}.membw_util_mean`]).toBeGreaterThan(0.3);
      expect(interleaved.final[`node${n}.membw_util_mean`]).toBeLessThan(0.9);
    }
    expect(interleaved.final.throughput_per_s! / pinned.final.throughput_per_s!).toBeGreaterThan(1.1);
    // the latency the pinned threads saw: the node is at its wall
    expect(Math.max(...pinned.series.metrics['node0.membw_latency_x']!)).toBeGreaterThan(2);
  }, 60_000);

  it('one random reader runs faster pinned than interleaved: its misses are local, and bandwidth is not its limit', () => {
    const pinned = runOf(3);
    const interleaved = runOf(4);
    expect(pinned.run.id).toBe('003-workload=latency,placement=pinned');
    expect(interleaved.run.id).toBe('004-workload=latency,placement=interleave');
    expect(pinned.final.throughput_per_s!).toBeGreaterThan(interleaved.final.throughput_per_s! * 1.2);
    expect(pinned.final.access_ns_mean!).toBeLessThan(interleaved.final.access_ns_mean!);
    expect(interleaved.final.remote_access_ratio).toBeCloseTo(0.5, 1);
    for (const r of [pinned, interleaved]) expect(r.final['node0.membw_util_mean']).toBeLessThan(0.05);
  }, 60_000);
});
