import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { smallKernel, RW, ANON, MiB } from '../testing/fixtures.ts';
import { MADV, PAGE_SIZE, PMD_SIZE } from '../kernel/uapi.ts';
import { mappingSize } from '../kernel/memory.ts';
import { DamonHeat, credit } from './damon_heat.ts';
import { SimAgentSys, type HeatMap } from './sim_sys.ts';
import { Uhugepaged } from './uhugepaged.ts';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadScenario } from '../scenario/load.ts';
import { runScenario } from '../scenario/run.ts';

const ATTRS = { sample_us: 5000, aggr_us: 100_000, update_us: 1_000_000, min_nr_regions: 10, max_nr_regions: 1000 };

describe('DAMON-learned heat', () => {
  it('credits each 2M block with the nr_accesses of the regions over it, in proportion to their cover', () => {
    const h: HeatMap = new Map();
    credit(h, [
      { start: 0, end: PMD_SIZE + PMD_SIZE / 2, nr_accesses: 4, age: 0 },
      { start: PMD_SIZE + PMD_SIZE / 2, end: 3 * PMD_SIZE, nr_accesses: 8, age: 0 },
      { start: 3 * PMD_SIZE, end: 4 * PMD_SIZE, nr_accesses: 0, age: 0 },
    ]);
    expect([...h]).toEqual([
      [0, 4],
      [1, 2 + 4],
      [2, 8],
    ]);
  });

  it('property: the heat credited is the sum of nr_accesses × region size / 2M', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.integer({ min: 1, max: 2000 }), fc.integer({ min: 0, max: 20 })), { minLength: 1, maxLength: 30 }),
        (rs) => {
          const regions = [];
          let at = 7 * PAGE_SIZE;
          for (const [pages, n] of rs) {
            regions.push({ start: at, end: at + pages * PAGE_SIZE, nr_accesses: n, age: 0 });
            at += pages * PAGE_SIZE;
          }
          const h: HeatMap = new Map();
          credit(h, regions);
          const total = [...h.values()].reduce((a, b) => a + b, 0);
          const want = regions.reduce((a, r) => a + (r.nr_accesses * (r.end - r.start)) / PMD_SIZE, 0);
          expect(total).toBeCloseTo(want, 6);
        },
      ),
    );
  });

  it('lets uhugepaged find and collapse the hot regions it samples, at kdamond CPU cost', () => {
    const k = smallKernel({ nodes: 1, mib: 128 });
    k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'never');
    const p = k.createProcess('vm');
    const len = 32 * MiB;
    const raw = k.mmap(p, 0, len + PMD_SIZE, RW, ANON);
    const a = Math.ceil(raw / PMD_SIZE) * PMD_SIZE;
    k.access(p.mainThread, raw, len + PMD_SIZE, PAGE_SIZE, true, 7);
    k.madvise(p, raw, len + PMD_SIZE, MADV.MADV_HUGEPAGE);
    const damon = new DamonHeat(k, [p], ATTRS);
    const sys = new SimAgentSys(k, 'uhugepaged', [p], new Map(), damon);
    const agent = new Uhugepaged(sys, { interval: 1e9, cpu_budget: 0.5, min_heat: 10, retry_after: 10, targets: [] });
    const t0 = k.clock.now();
    damon.start(t0, t0 + 10e9);
    // The first 8 MiB are loaded all through, every millisecond; the rest never.
    for (let ms = 1; ms <= 2000; ms++) {
      k.access(p.mainThread, a, 8 * MiB, PAGE_SIZE, false, 0);
      const at = t0 + ms * 1e6;
      if (k.clock.now() < at) k.clock.advance(at - k.clock.now());
      k.runDueEvents();
      if (ms % 1000 === 0) sys.run(() => agent.tick());
    }
    const huge = (i: number): boolean => mappingSize(p.mm, a + i * PMD_SIZE) === PMD_SIZE;
    for (let i = 0; i < 4; i++) expect(huge(i), `hot block ${i}`).toBe(true);
    // A region straddling the end of the hot range spreads its heat over the block after it (DAMON's
    // approximation): at most that one; the cold memory further on is left alone.
    for (let i = 5; i < 16; i++) expect(huge(i), `cold block ${i}`).toBe(false);
    // kdamond ran 400 samples over its regions, and that was charged.
    const ctx = damon.ctxs.get(p)!;
    expect(ctx.stats.samples).toBe(400);
    expect(damon.cpuNs).toBeGreaterThan(0);
    expect(damon.cpuNs).toBe(ctx.stats.cpu_ns);
  });
});

describe('a scenario agent with hotness: damon', () => {
  const scenario = (agent: string): string => `name: agent-damon
host:
  name: tiny
  nodes: [{ id: 0, memory: 256M, cpus: 0-1 }]
duration: 3s
sample: { interval: 500ms }
kernel:
  /sys/kernel/mm/transparent_hugepage/enabled: never
processes:
  - name: vm
    mappings:
      - { name: ram, size: 32M, madvise: [MADV_NOHUGEPAGE], populate: true }
    threads:
      - { name: hot, cpu: 0, workload: { pattern: uniform, mapping: ram, length: 8M, think: 2us } }
events:
  - { at: 0s, process: vm, op: madvise, mapping: ram, advice: MADV_HUGEPAGE }
agents:
  - ${agent}
`;
  const load = (text: string) => {
    const dir = mkdtempSync(join(tmpdir(), 'memtwin-damon-'));
    const f = join(dir, 'agent.yaml');
    writeFileSync(f, text);
    return loadScenario(f);
  };

  it("collapses the hot set it learns through DAMON, and reports kdamond's CPU time", () => {
    const l = load(scenario('{ name: uh, kind: uhugepaged, interval: 1s, cpu_budget: 0.5, min_heat: 5, hotness: damon }'));
    const r = runScenario(l.runs[0]!, { file: l.file });
    // The 8 MiB hot set is 4 or 5 regions; DAMON's regions may carry heat a block or two into the cold rest.
    expect(r.final.agent_collapses).toBeGreaterThanOrEqual(4);
    expect(r.final.agent_collapses).toBeLessThanOrEqual(8);
    // 3 s of 5 ms samples over at least 10 regions, two page walks each.
    expect(r.final.kdamond_cpu_ns).toBeGreaterThan(600 * 10 * 2 * 20);
  });

  it('refuses DAMON attributes DAMON refuses, naming the field', () => {
    const l = load(scenario('{ name: uh, kind: uhugepaged, hotness: damon, damon: { min_nr_regions: 20, max_nr_regions: 10 } }'));
    expect(() => runScenario(l.runs[0]!, { file: l.file })).toThrow(/agents\[0\]\.damon\.min_nr_regions: exceeds max_nr_regions \(10\)/);
  });
});
