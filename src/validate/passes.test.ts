/**
 * passesOf: a precopy's bitmap syncs read from query-migrate polls, checked
 * on memtwin's own polls against the syncs it recorded, and on the 1g
 * batch's real polls (what issue 20's dirty-sync counts turn on).
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { passesOf } from './passes.ts';
import { calibrate, inputsOf, medianRun, predict, type PredictTrace } from './qemu.ts';
import type { QuerySample, RealResults } from './matrix.ts';

const s = (atMs: number, sync: number, remainingPages: number, normal: number, duplicate = 0): QuerySample => ({
  atMs,
  status: 'active',
  transferred: normal * 4104,
  normal,
  duplicate,
  dirtySyncCount: sync,
  remaining: remainingPages * 4096,
});

describe('passesOf', () => {
  it("a sync's new pages are remaining's rise plus the pages sent between the polls", () => {
    const p = passesOf([
      s(50, 1, 1000, 0),
      s(100, 1, 400, 600),
      s(150, 2, 900, 800, 100),
      s(200, 2, 300, 1400, 100),
      s(250, 4, 350, 1500, 100),
    ]);
    expect(p).toEqual([
      { sync: 2, syncsInPoll: 1, atMs: 150, prevAtMs: 100, newDirtyPages: 500 + 300, transferred: 800 * 4104, remainingPages: 900 },
      { sync: 4, syncsInPoll: 2, atMs: 250, prevAtMs: 200, newDirtyPages: 50 + 100, transferred: 1500 * 4104, remainingPages: 350 },
    ]);
  });

  const file = 'validation/qemu/results-1g.json';
  const res = JSON.parse(readFileSync(file, 'utf8')) as RealResults;

  it("reads memtwin's own syncs back from its 50 ms polls (predict's trace)", () => {
    const run = medianRun(res.runs.filter((r) => r.config.id === 'precopy-dirty-1g-ws32M-r50000-bw128M'))!;
    const tr: PredictTrace = { samples: [], iterations: [] };
    predict(inputsOf(run, calibrate(res, file)), tr);
    // Every sync after the setup's is read back: the syncs between two polls summed on the later one.
    const passes = passesOf(tr.samples);
    expect(passes.length).toBeGreaterThan(0);
    const seen = passes.flatMap((p) => {
      const inPoll = tr.iterations.filter((i) => i.at / 1e6 > p.prevAtMs && i.at / 1e6 <= p.atMs);
      expect(inPoll.length, `poll at ${p.atMs} ms`).toBe(p.syncsInPoll);
      expect(inPoll[inPoll.length - 1]!.syncCount).toBe(p.sync);
      expect(p.newDirtyPages).toBe(inPoll.reduce((n, i) => n + i.newDirtyPages, 0));
      return inPoll;
    });
    expect(seen.length).toBe(tr.iterations.length - 1);
  }, 120_000);

  it('on the real 1g runs the second sync finds the whole 128 MiB working set dirty, pages sent since they were written included', () => {
    // The program rewrote its 32,768 pages about 1.6 times between the setup's sync and the second: QEMU's dirty
    // log keeps every write since the last sync, whether the page was sent after it or not (TCG clears its dirty
    // memory only at the sync's harvest), so the sync finds nearly all of them (those still dirty from the first
    // pass are not new).
    const runs = res.runs.filter((r) => r.config.program?.wsMiB === 128 && r.config.postcopyAfterMs === null && r.samples?.length);
    expect(runs.length).toBe(15); // 5 precopy configurations x 3 repeats
    for (const r of runs) {
      const second = passesOf(r.samples!)[0]!;
      expect(second.sync, r.config.id).toBe(2);
      expect(second.newDirtyPages, r.config.id).toBeGreaterThan(32_500);
      expect(second.newDirtyPages, r.config.id).toBeLessThanOrEqual(32_768);
    }
  });
});
