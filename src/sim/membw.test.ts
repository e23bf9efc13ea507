import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CURVE,
  MemBandwidth,
  WINDOW_NS,
  fitNodeCapacity,
  fitStoreTraffic,
  latencyMultiplier,
  membwSpec,
  type FlowClass,
  type MemBwParams,
} from './membw.ts';
import { loadHost, resolveHost } from './host.ts';
import { InputError, parseRate } from '../util/input_error.ts';

const GB = 1e9;

/**
 * A closed loop as the workload engine runs one: each thread steps ~100 µs
 * of its own time; at the step's start it reads the multiplier of the
 * memory it streams from, does as many accesses as fit (each `lineNs` at
 * idle, all of it DRAM time), registers the step and runs again when it
 * ends. Returns the bytes/s each thread moved over [from, until).
 */
function closedLoop(
  bw: MemBandwidth,
  threads: { cpu: number; mem: number; lineNs: number; bytes?: number }[],
  until: number,
  from: number,
): number[] {
  const next = threads.map(() => 0);
  const moved = threads.map(() => 0);
  for (;;) {
    let i = -1;
    for (let j = 0; j < threads.length; j++) if (next[j]! < until && (i < 0 || next[j]! < next[i]!)) i = j;
    if (i < 0) break;
    const t = threads[i]!;
    const at = next[i]!;
    const m = bw.multiplier(t.cpu, t.mem, at);
    const n = Math.max(1, Math.ceil(100_000 / (t.lineNs * m)));
    const elapsed = n * t.lineNs * m;
    const bytes = n * (t.bytes ?? 64);
    bw.flow(at, elapsed, t.cpu, [{ node: t.mem, bytes, memNs: n * t.lineNs }]);
    if (at >= from) moved[i]! += bytes;
    next[i] = at + Math.max(1, Math.round(elapsed));
  }
  return moved.map((b) => (b / (until - from)) * 1e9);
}

const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);

describe('the loaded-latency curve m(u)', () => {
  it('is 1 at idle, nearly linear to the knee, then a wall', () => {
    expect(latencyMultiplier(0)).toBe(1);
    expect(latencyMultiplier(0.5)).toBeCloseTo(1 + CURVE.A * 0.5, 12);
    expect(latencyMultiplier(CURVE.U_K)).toBeCloseTo(1 + CURVE.A * CURVE.U_K, 12);
    // continuous, with a continuous slope, at the knee
    const e = 1e-7;
    expect(latencyMultiplier(CURVE.U_K + e) - latencyMultiplier(CURVE.U_K)).toBeLessThan(CURVE.A * e * 1.01);
    // the published curves (research memo 17, 4.1): within ~10% up to 0.97, and ~3.6 at 0.997
    expect(latencyMultiplier(0.315)).toBeCloseTo(1.154, 1);
    expect(latencyMultiplier(0.643)).toBeCloseTo(1.344, 1);
    expect(latencyMultiplier(0.9975)).toBeGreaterThan(3.3);
    expect(latencyMultiplier(0.9975)).toBeLessThan(3.9);
    expect(latencyMultiplier(2)).toBeGreaterThan(100); // capped just below u = 1
  });

  it('is monotone and at least 1', () => {
    fc.assert(
      fc.property(fc.double({ min: 0, max: 1.5, noNaN: true }), fc.double({ min: 0, max: 1.5, noNaN: true }), (a, b) => {
        const [lo, hi] = a < b ? [a, b] : [b, a];
        expect(latencyMultiplier(lo)).toBeGreaterThanOrEqual(1);
        expect(latencyMultiplier(hi)).toBeGreaterThanOrEqual(latencyMultiplier(lo));
      }),
    );
  });
});

describe('MemBandwidth in a closed loop', () => {
  it('throttles oversubscribed demand to the node capacity', () => {
    // ten threads that could each drive 20 GB/s, on a 40 GB/s node: five times oversubscribed
    const bw = new MemBandwidth({ nodes: [40 * GB], interconnect: [[0]] });
    const threads = Array.from({ length: 10 }, () => ({ cpu: 0, mem: 0, lineNs: 64 / 20 }));
    const rates = closedLoop(bw, threads, 30e6, 10e6);
    expect(sum(rates) / (40 * GB)).toBeGreaterThan(0.97);
    expect(sum(rates) / (40 * GB)).toBeLessThanOrEqual(1.0001);
    // shared evenly
    for (const r of rates) expect(r / (sum(rates) / 10)).toBeCloseTo(1, 1);
    // and the latency multiplier is what Little's law says: five times oversubscribed, about 5x
    expect(bw.multiplier(0, 0, 30e6)).toBeGreaterThan(4.5);
    expect(bw.multiplier(0, 0, 30e6)).toBeLessThan(5.5);
  });

  it('converges instead of oscillating: the multiplier settles within a few windows', () => {
    const bw = new MemBandwidth({ nodes: [40 * GB], interconnect: [[0]] });
    const threads = Array.from({ length: 4 }, () => ({ cpu: 0, mem: 0, lineNs: 64 / 20 }));
    const seen: number[] = [];
    const next = threads.map(() => 0);
    for (let step = 0; step < 400; step++) {
      const i = next.indexOf(Math.min(...next));
      const at = next[i]!;
      const m = bw.multiplier(0, 0, at);
      if (i === 0) seen.push(m);
      const n = Math.ceil(100_000 / (threads[i]!.lineNs * m));
      bw.flow(at, n * threads[i]!.lineNs * m, 0, [{ node: 0, bytes: n * 64, memNs: n * threads[i]!.lineNs }]);
      next[i] = at + Math.round(n * threads[i]!.lineNs * m);
    }
    const tail = seen.slice(20);
    expect(Math.max(...tail) - Math.min(...tail)).toBeLessThan(0.02 * Math.min(...tail));
  });

  it('limits a single thread by what one core drives, not by the node', () => {
    // one core drives 12 GB/s at idle; the node could take 80
    const bw = new MemBandwidth({ nodes: [80 * GB], interconnect: [[0]] });
    const [r] = closedLoop(bw, [{ cpu: 0, mem: 0, lineNs: 64 / 12 }], 20e6, 5e6);
    expect(r!).toBeLessThanOrEqual(12 * GB);
    // a single thread loads the node a little (u ~ 0.14): ~7% slower than idle
    expect(r! / (12 * GB)).toBeGreaterThan(0.9);
  });

  it('limits remote traffic by the interconnect', () => {
    // threads on node 1 streaming from node 0 over a 10 GB/s path; node 0 itself could take 100
    const bw = new MemBandwidth({
      nodes: [100 * GB, 100 * GB],
      interconnect: [
        [0, 10 * GB],
        [10 * GB, 0],
      ],
    });
    const threads = Array.from({ length: 4 }, () => ({ cpu: 1, mem: 0, lineNs: 64 / 15 }));
    const rates = closedLoop(bw, threads, 30e6, 10e6);
    expect(sum(rates) / (10 * GB)).toBeGreaterThan(0.97);
    expect(sum(rates) / (10 * GB)).toBeLessThanOrEqual(1.0001);
    expect(bw.bytesOnPath(1, 0)).toBe(bw.bytesOnNode(0));
    // the node is barely loaded; its own multiplier stays low
    expect(bw.resourceMultiplier(0, 30e6)).toBeLessThan(1.1);
  });

  it('gives two nodes twice the bandwidth of one (interleaving beats binding when one node is saturated)', () => {
    const spec = {
      nodes: [40 * GB, 40 * GB],
      interconnect: [
        [0, 20 * GB],
        [20 * GB, 0],
      ],
    };
    const bound = new MemBandwidth(spec);
    const t = (mem: number, cpu: number): { cpu: number; mem: number; lineNs: number } => ({ cpu, mem, lineNs: 64 / 15 });
    const all = [0, 1, 2, 3, 4, 5, 6, 7];
    const one = sum(
      closedLoop(
        bound,
        all.map((i) => t(0, i < 4 ? 0 : 1)),
        20e6,
        5e6,
      ),
    );
    const both = sum(
      closedLoop(
        new MemBandwidth(spec),
        all.map((i) => t(i % 2, i < 4 ? 0 : 1)),
        20e6,
        5e6,
      ),
    );
    expect(one).toBeLessThan(41 * GB);
    expect(both).toBeGreaterThan(1.4 * one);
  });

  it('counts exactly the bytes registered, and utilisations are never negative', () => {
    const flowArb = fc.record({
      at: fc.integer({ min: 0, max: 2_000_000 }),
      elapsed: fc.integer({ min: 1, max: 400_000 }),
      cpu: fc.integer({ min: -1, max: 1 }),
      classes: fc.array(
        fc.record({
          node: fc.integer({ min: 0, max: 1 }),
          bytes: fc.integer({ min: 0, max: 1 << 24 }),
          memNs: fc.integer({ min: 0, max: 300_000 }),
        }),
        { minLength: 1, maxLength: 3 },
      ),
      extend: fc.boolean(),
    });
    fc.assert(
      fc.property(fc.array(flowArb, { maxLength: 60 }), (flows) => {
        const bw = new MemBandwidth({
          nodes: [30 * GB, 50 * GB],
          interconnect: [
            [0, 8 * GB],
            [12 * GB, 0],
          ],
        });
        const want = [0, 0];
        const path = [
          [0, 0],
          [0, 0],
        ];
        flows.sort((a, b) => a.at - b.at);
        for (const f of flows) {
          const classes: FlowClass[] = f.classes;
          bw.flow(f.at, f.elapsed, f.cpu, classes, f.extend);
          for (const c of classes)
            if (c.bytes > 0 || c.memNs > 0) {
              want[c.node]! += c.bytes;
              if (f.cpu >= 0 && f.cpu !== c.node) path[f.cpu]![c.node]! += c.bytes;
            }
          for (let r = 0; r < 2 + 4; r++) {
            expect(bw.utilisation(r, f.at)).toBeGreaterThanOrEqual(0);
            const m = bw.resourceMultiplier(r, f.at);
            expect(m).toBeGreaterThanOrEqual(1);
            expect(Number.isFinite(m)).toBe(true);
          }
        }
        expect([bw.bytesOnNode(0), bw.bytesOnNode(1)]).toEqual(want);
        expect(bw.bytesOnPath(0, 1)).toBe(path[0]![1]);
        expect(bw.bytesOnPath(1, 0)).toBe(path[1]![0]);
        expect(bw.utilisation(0, 10_000_000)).toBe(0); // every window solved, nothing left
      }),
      { numRuns: 150 },
    );
  });

  it('is deterministic', () => {
    const run = (): number[] => {
      const bw = new MemBandwidth({ nodes: [40 * GB], interconnect: [[0]] });
      const r = closedLoop(
        bw,
        [1, 2, 3].map(() => ({ cpu: 0, mem: 0, lineNs: 3 })),
        5e6,
        0,
      );
      return [...r, bw.multiplier(0, 0, 5e6)];
    };
    expect(run()).toEqual(run());
  });

  it('decays to idle when nothing moves', () => {
    const bw = new MemBandwidth({ nodes: [10 * GB], interconnect: [[0]] });
    closedLoop(
      bw,
      [0, 1, 2].map(() => ({ cpu: 0, mem: 0, lineNs: 2 })),
      2e6,
      0,
    );
    expect(bw.multiplier(0, 0, 2e6)).toBeGreaterThan(2);
    expect(bw.multiplier(0, 0, 2e6 + 40 * WINDOW_NS)).toBeCloseTo(1, 6);
  });
});

describe('flows of a task copying page after page (flow() with extend)', () => {
  /** Flows still to be solved (a private count, read for this test). */
  const flows = (bw: MemBandwidth): number => (bw as unknown as { nflows: number }).nflows;
  const copy = (bytes: number, memNs: number, seenNs: number): FlowClass[] => [
    { node: 0, bytes, memNs, seenNs },
    { node: 0, bytes: bytes / 2, memNs: memNs / 2, seenNs: seenNs / 2 },
  ];

  it('one flow for pages of one cost whose starts are rounded from a fractional clock (up to 1 ns from the last end)', () => {
    const bw = new MemBandwidth({ nodes: [10 * GB], interconnect: [[0]] });
    // 1000.3 ns a page from 0.6 ns: each start rounded to whole ns lands up to 1 ns from the flow's summed end.
    let t = 0.6;
    for (let i = 0; i < 200; i++, t += 1000.3) bw.flow(Math.round(t), 1000.3, 0, copy(4096, 300, 300), true);
    expect(flows(bw)).toBe(1);
    // The same as one series.
    const series = new MemBandwidth({ nodes: [10 * GB], interconnect: [[0]] });
    series.flowSeries(200, 0, 0.6, 1000.3, 0, copy(4096, 300, 300));
    expect(flows(series)).toBe(1);
    expect(series.bytesOnNode(0)).toBe(bw.bytesOnNode(0));
  });

  it('a registration at another cost continues the flow only within half a ns', () => {
    const bw = new MemBandwidth({ nodes: [10 * GB], interconnect: [[0]] });
    bw.flow(0, 1000.3, 0, copy(4096, 300, 300), true); // ends at 1000.3
    bw.flow(1001, 2000, 0, copy(8192, 600, 600), true); // 0.7 ns away, another cost: a flow of its own
    expect(flows(bw)).toBe(2);
    bw.flow(3001, 500, 0, copy(4096, 100, 100), true); // ends at 3001 exactly: continues it
    expect(flows(bw)).toBe(2);
  });
});

describe('fitNodeCapacity', () => {
  it('finds the C that makes the curve give both measured bandwidths', () => {
    const C = 60 * GB;
    const b0 = 20 * GB; // one core at idle
    // what one and two threads would measure on that node: solve u m(u) = k b0 / C
    const measured = (k: number): number => {
      let lo = 0;
      let hi = 1;
      for (let i = 0; i < 100; i++) {
        const u = (lo + hi) / 2;
        if (u * latencyMultiplier(u) < (k * b0) / C) lo = u;
        else hi = u;
      }
      return lo * C;
    };
    const c = fitNodeCapacity(measured(1), measured(2), 2)!;
    expect(c / C).toBeCloseTo(1, 3);
  });

  it('gives up when N threads show no shared limit', () => {
    expect(fitNodeCapacity(10 * GB, 20 * GB, 2)).toBeUndefined();
    expect(fitNodeCapacity(10 * GB, 21 * GB, 2)).toBeUndefined();
    expect(fitNodeCapacity(10 * GB, 9 * GB, 2)).toBeUndefined();
  });
});

describe('fitStoreTraffic', () => {
  // What k threads copying on a node of capacity C would measure (STREAM bytes), with s bytes of traffic per byte stored.
  const copied = (k: number, b0: number, C: number, s: number): number => {
    const t = (1 + s) / 2;
    let lo = 0;
    let hi = 1;
    for (let i = 0; i < 100; i++) {
      const u = (lo + hi) / 2;
      if (u * latencyMultiplier(u) < (k * t * b0) / C) lo = u;
      else hi = u;
    }
    return (lo * C) / t;
  };

  it('finds the store traffic that makes the curve give both measured copy bandwidths', () => {
    fc.assert(
      fc.property(fc.integer({ min: 100, max: 200 }), fc.integer({ min: 10, max: 40 }), (s100, b0) => {
        const s = s100 / 100;
        const C = 60 * GB;
        const got = fitStoreTraffic(copied(1, b0 * GB, C, s), copied(2, b0 * GB, C, s), 2, C);
        expect(Math.abs(got - s)).toBeLessThanOrEqual(0.011);
      }),
      { numRuns: 30 },
    );
  });

  it('keeps to 1..2: copies that need less than one byte of traffic per byte stored get 1, more than two get 2', () => {
    const C = 60 * GB;
    expect(fitStoreTraffic(copied(1, 20 * GB, C, 0.7), copied(2, 20 * GB, C, 0.7), 2, C)).toBe(1);
    expect(fitStoreTraffic(copied(1, 20 * GB, C, 2.5), copied(2, 20 * GB, C, 2.5), 2, C)).toBe(2);
  });
});

describe('host files: node bandwidth and interconnect', () => {
  const dir = mkdtempSync(join(tmpdir(), 'memtwin-host-'));
  const host = (text: string): string => {
    const f = join(dir, `h${Math.random().toString(36).slice(2)}.yaml`);
    writeFileSync(f, text);
    return f;
  };
  const params: MemBwParams = {
    nodeCapacity: 50 * GB,
    nodeCapacitySource: 'test',
    coreRead: 20 * GB,
    coreWrite: 10 * GB,
    coreCopy: 15 * GB,
    llcBytes: 32 << 20,
    interconnectShare: 0.3,
    storeTraffic: 2,
  };

  it('parses rates: decimal GB/s as bandwidths are quoted, GiB/s binary', () => {
    expect(parseRate('20GB/s')).toBe(20e9);
    expect(parseRate('12.5 GB/s')).toBe(12.5e9);
    expect(parseRate('800MB/s')).toBe(800e6);
    expect(parseRate('1GiB/s')).toBe(2 ** 30);
    expect(parseRate('64kB/s')).toBe(64e3);
    expect(parseRate('100B/s')).toBe(100);
    expect(parseRate(3e9)).toBe(3e9);
    for (const bad of ['20G', 'fast', '0GB/s', '-1GB/s', 0, -5, Infinity, '20 GB', null]) expect(parseRate(bad)).toBeUndefined();
  });

  it('takes the nodes and paths a host file gives, and the profile for the rest', () => {
    const h = loadHost(
      host(`name: t
nodes:
  - { id: 0, memory: 1G, cpus: 0, bandwidth: 80GB/s }
  - { id: 1, memory: 1G, cpus: 1 }
distances: [[10, 21], [21, 10]]
interconnect: [[0, 30GB/s], [25GB/s, 0]]
`),
    );
    expect(membwSpec(h, params)).toEqual({
      nodes: [80e9, 50e9],
      interconnect: [
        [0, 30e9],
        [25e9, 0],
      ],
      storeTraffic: 2,
    });
    const d = resolveHost('default');
    expect(membwSpec(d, params)).toEqual({
      nodes: [50e9, 50e9],
      interconnect: [
        [0, 15e9],
        [15e9, 0],
      ],
      storeTraffic: 2,
    });
  });

  it('refuses bad bandwidths with the file, line and field', () => {
    const cases: [string, RegExp][] = [
      [
        '  - { id: 0, memory: 1G, cpus: 0, bandwidth: fast }\n',
        /:3:.*bandwidth: expected a bandwidth from 1e6 to 1e13 bytes per second.*20GB\/s.*got "fast"/,
      ],
      ['  - { id: 0, memory: 1G, cpus: 0, bandwidth: 1kB/s }\n', /:3:.*bandwidth: expected a bandwidth from 1e6 to 1e13.*got "1kB\/s"/],
      ['  - { id: 0, memory: 1G, cpus: 0 }\ninterconnect: [[5GB/s]]\n', /interconnect.*expected 0 on the diagonal/],
      ['  - { id: 0, memory: 1G, cpus: 0 }\ninterconnect: [[0, 1GB/s]]\n', /interconnect.*expected 1 entries/],
    ];
    for (const [nodes, msg] of cases) {
      const f = host(`name: bad\nnodes:\n${nodes}`);
      expect(() => loadHost(f)).toThrow(InputError);
      expect(() => loadHost(f)).toThrow(msg);
    }
  });
});
