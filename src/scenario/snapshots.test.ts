import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { fileURLToPath } from 'node:url';
import { Kernel } from '../kernel/kernel.ts';
import { CostProfile } from '../sim/cost_profile.ts';
import { resolveHost } from '../sim/host.ts';
import { populateRange } from '../kernel/mmap.ts';
import { MAP, PAGE_SIZE, PMD_SIZE, PROT } from '../kernel/uapi.ts';
import { loadScenario } from './load.ts';
import { runScenario } from './run.ts';
import { MAX_RUNS_PER_VMA, PAGEBLOCK_KINDS, fragmentationIndex, unusableIndex, vmaRuns } from './snapshots.ts';

const THP_SMALL = fileURLToPath(new URL('../../test/view/thp-small.yaml', import.meta.url));

describe('fragmentation indexes (mm/vmstat.c)', () => {
  it('follow __fragmentation_index and unusable_free_index', () => {
    const none = new Array<number>(11).fill(0);
    expect(fragmentationIndex(none, 9)).toBe(0);
    expect(unusableIndex(none, 9)).toBe(0);
    const top = [...none];
    top[10] = 1;
    expect(fragmentationIndex(top, 9)).toBe(-1000); // a block of the order is free
    expect(unusableIndex(top, 9)).toBe(0);
    const small = [...none];
    small[0] = 1000; // 1000 free 4K pages, nothing larger
    // 1000 - (1000 + 1000 * 1000 / 512) / 1000 = 1000 - 2 (integer division, as div_u64)
    expect(fragmentationIndex(small, 9)).toBe(998);
    expect(unusableIndex(small, 9)).toBe(1000);
    expect(unusableIndex(small, 0)).toBe(0);
  });
});

describe('vmaRuns', () => {
  it('covers the VMA exactly, counts its present pages, and stays within MAX_RUNS_PER_VMA runs', () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.integer({ min: 0, max: 4095 }), { maxLength: 300 }), fc.boolean(), (units, dense) => {
        const k = new Kernel({ host: resolveHost('default'), costs: CostProfile.default(), seed: 1 });
        const p = k.createProcess('t', 0);
        const len = 4096 * PMD_SIZE; // 8 GiB of address space: 4096 PMD slots
        const addr = k.mmap(p, 0, len, PROT.PROT_READ | PROT.PROT_WRITE, MAP.MAP_PRIVATE | MAP.MAP_ANONYMOUS | MAP.MAP_NORESERVE);
        expect(addr).toBeGreaterThan(0);
        // One 4K page in each chosen 2M unit; `dense` fills every other unit too, to force the bucketing.
        const chosen = dense ? [...new Set([...units, ...Array.from({ length: 2048 }, (_, i) => 2 * i)])] : units;
        for (const u of chosen) populateRange(k, p, addr + u * PMD_SIZE, addr + u * PMD_SIZE + PAGE_SIZE, true);
        const vma = p.mm.vmaAt(addr)!;
        const { runs, aggregated } = vmaRuns(k, p.mm, vma);
        let pages = 0;
        let present = 0;
        for (let i = 0; i < runs.length; i += 4) {
          expect(runs[i + 1]!).toBeLessThanOrEqual(runs[i]!);
          pages += runs[i]!;
          present += runs[i + 1]!;
        }
        expect(pages).toBe(len / PAGE_SIZE);
        expect(present).toBe(chosen.length);
        expect(runs.length / 4).toBeLessThanOrEqual(MAX_RUNS_PER_VMA);
        expect(aggregated === true).toBe(dense);
      }),
      { numRuns: 12 },
    );
  });
});

describe('a run with snapshots', () => {
  const spec = () => loadScenario(THP_SMALL).runs[0]!;
  const quiet = { file: THP_SMALL, warn: () => {} };

  it('shows the heap as two THPs on node 0, in both maps', () => {
    const s = runScenario(spec(), quiet).snapshots!;
    expect(s.maps).toBe(true);
    expect(s.t_ns).toEqual([0, 5e6, 10e6, 15e6, 20e6]);
    const last = s.spaces.at(-1)!;
    const heap = last[0]!.vmas.find((v) => v.name === 'heap')!;
    expect(heap.start % PMD_SIZE).toBe(0);
    // 1024 4K pages, all present, mapped 2M (size code 2), node 0
    expect(heap.runs).toEqual([1024, 1024, 2, 0]);
    const node0 = s.phys.at(-1)![0]!;
    expect(node0.thp).toBe(2);
    let thpBlocks = 0;
    for (let i = 0; i < node0.map.length; i += 4) if (PAGEBLOCK_KINDS[node0.map[i + 1]!] === 'thp') thpBlocks += node0.map[i]!;
    expect(thpBlocks).toBe(2);
    // The map covers every pageblock of the node.
    let blocks = 0;
    for (let i = 0; i < node0.map.length; i += 4) blocks += node0.map[i]!;
    expect(blocks).toBe(s.nodes[0]!.pages / 512);
  });

  it('is deterministic, and does not change the run it watches', () => {
    const a = runScenario(spec(), quiet);
    const b = runScenario(spec(), quiet);
    expect(JSON.stringify(a.snapshots)).toBe(JSON.stringify(b.snapshots));
    const off = spec();
    off.scenario = { ...off.scenario, sample: { ...off.scenario.sample, snapshots: false } };
    const c = runScenario(off, quiet);
    expect(c.snapshots).toBeUndefined();
    for (const key of ['final', 'series', 'threads', 'events'] as const) expect(c[key]).toEqual(a[key]);
  });
});
