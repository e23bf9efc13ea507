/**
 * Kernel.chargeMemRun and MemBandwidth.flowSeries: n charges of a task
 * copying page after page, registered at once, must leave exactly what n
 * chargeMem calls leave (the task's time, the bytes counted, and the
 * multipliers every later window solves to, compared bit for bit).
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { MemBandwidth, WINDOW_NS } from './membw.ts';
import { smallKernel } from '../testing/fixtures.ts';
import type { Kernel } from '../kernel/kernel.ts';
import type { FlowClass } from './membw.ts';

const GB = 1e9;

interface Call {
  n: number;
  ns: number;
  memNs: number;
  readNode: number;
  writeNode: number;
  cpuNode: number;
}

/** The kernel's bandwidth state after `calls` (each inside a task, after `pre` ns of it), one by one or in runs. */
function run(calls: Call[], pre: number, step: boolean, background: { at: number; ns: number; node: number }[]): unknown {
  const k: Kernel = smallKernel({ nodes: 2, mib: 64 });
  k.membw = new MemBandwidth({
    nodes: [3 * GB, 5 * GB],
    interconnect: [
      [0, 1 * GB],
      [2 * GB, 0],
    ],
  });
  const bw = k.membw;
  // Load beforehand, so the multipliers the calls read are not all 1.
  for (const b of background) bw.flow(b.at, b.ns, -1, [{ node: b.node, bytes: b.ns * 4, memNs: b.ns * 0.8 } satisfies FlowClass], false);
  k.clock.advance(Math.max(0, ...background.map((b) => b.at + b.ns)));
  const t = { ns: pre };
  k.runAsTask(t, () => {
    for (const c of calls)
      if (step) for (let i = 0; i < c.n; i++) k.chargeMem(c.ns, c.memNs, c.readNode, c.writeNode, 4096, c.cpuNode);
      else k.chargeMemRun(c.n, c.ns, c.memNs, c.readNode, c.writeNode, 4096, c.cpuNode);
  });
  const later = k.clock.now() + Math.ceil(t.ns) + 3 * WINDOW_NS;
  const mult: number[] = [];
  for (let at = k.clock.now(); at <= later; at += WINDOW_NS / 2)
    for (let r = 0; r < 6; r++) mult.push(bw.resourceMultiplier(r, at), bw.utilisation(r, at));
  return { t: t.ns, nodes: [bw.bytesOnNode(0), bw.bytesOnNode(1)], paths: [bw.bytesOnPath(0, 1), bw.bytesOnPath(1, 0)], mult };
}

describe('chargeMemRun: n chargeMem calls at once', () => {
  it('leaves the same task time, bytes and later multipliers, bit for bit', () => {
    const call = fc.record({
      n: fc.integer({ min: 0, max: 600 }),
      ns: fc.double({ min: 0.5, max: 5000, noNaN: true }),
      memNs: fc.double({ min: 0, max: 2000, noNaN: true }),
      readNode: fc.integer({ min: -1, max: 1 }),
      writeNode: fc.integer({ min: 0, max: 1 }),
      cpuNode: fc.integer({ min: -1, max: 1 }),
    });
    const bg = fc.record({
      at: fc.integer({ min: 0, max: 400_000 }),
      ns: fc.integer({ min: 1, max: 300_000 }),
      node: fc.integer({ min: 0, max: 1 }),
    });
    fc.assert(
      fc.property(
        fc.array(call, { minLength: 1, maxLength: 6 }),
        fc.double({ min: 0, max: 1e6, noNaN: true }),
        fc.array(bg, { maxLength: 8 }),
        (calls, pre, background) => {
          expect(run(calls, pre, false, background)).toStrictEqual(run(calls, pre, true, background));
        },
      ),
      { numRuns: 200 },
    );
  });
});
