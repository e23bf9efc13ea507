/**
 * `memtwin validate qemu` without QEMU: the report is redrawn from the
 * committed batches (validation/qemu/results.json and the
 * results-<name>.json beside it), every recorded configuration gets a
 * prediction or a "not modelled" row, the errors are finite, and every run
 * outside the bound has an explanation (validation/qemu/explanations.json).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { readFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import {
  writeReport,
  batchFiles,
  compareBatches,
  medianRun,
  metricOf,
  calibrate,
  inputsOf,
  orderWorkingSet,
  predict,
  NOT_MODELLED,
  BOUND_PCT,
  DOWNTIME_BOUND_MS,
  DOWNTIME_BOUND_PCT,
  POSTCOPY_BOUND_PCT,
  SYNC_BOUND,
  measuredLayout,
  writerStartOf,
} from './qemu.ts';
import { BATCHES, type RealResults, type RealRun } from './matrix.ts';

const RESULTS = 'validation/qemu/results.json';
const EXPLANATIONS = 'validation/qemu/explanations.json';

describe('validate qemu (from the recorded results)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'memtwin-vq-test-'));
  const report = join(dir, 'report.md');
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const batches = writeReport({ results: RESULTS, report, explanations: EXPLANATIONS });
  const explanations = JSON.parse(readFileSync(EXPLANATIONS, 'utf8')) as Record<string, string>;
  const all = batches.flatMap((b) => b.runs);

  it('reads every batch file, each calibrated by its own ceiling', () => {
    expect(batches.map((b) => b.file)).toEqual(batchFiles(RESULTS).map((f) => f.split('/').pop()));
    expect(batches[0]!.name).toBe('main');
    for (const b of batches) {
      expect(
        BATCHES.map((x) => x.name),
        b.file,
      ).toContain(b.name);
      const ceilingId = BATCHES.find((x) => x.name === b.name)!.ceilingId;
      const ceiling = medianRun(b.results.runs.filter((r) => r.config.id === ceilingId))!;
      const q = ceiling.queryMigrate;
      expect(b.calibration.linkBps).toBeCloseTo((metricOf(q, 'ram.transferred')! * 1000) / metricOf(q, 'total-time')!, 6);
      // A batch with a postcopy ceiling: its postcopy link rate makes memtwin reproduce that run's total time.
      const pcId = BATCHES.find((x) => x.name === b.name)!.postcopyCeilingId;
      const pc = b.runs.find((r) => r.id === pcId);
      if (pc) {
        expect(b.calibration.postcopyBps, b.name).toBeGreaterThan(0);
        expect(pc.inputs!.postcopyLinkBps).toBe(Math.round(b.calibration.postcopyBps!));
        expect(Math.abs(pc.rows.find((x) => x.metric === 'total-time')!.errorPct!), pcId).toBeLessThan(2);
        expect(pc.withinBound).toBeNull();
      }
    }
    // A batch without one takes the postcopy-to-precopy ratio of the first batch that measured it.
    const ref = batches.find((b) => b.runs.some((r) => r.id === BATCHES.find((x) => x.name === b.name)!.postcopyCeilingId));
    for (const b of batches.filter((x) => x !== ref))
      if (ref && !BATCHES.find((x) => x.name === b.name)!.postcopyCeilingId)
        expect(b.calibration.postcopyBps! / b.calibration.linkBps).toBeCloseTo(ref.calibration.postcopyBps! / ref.calibration.linkBps, 9);
  });

  it('compares every recorded configuration once, with finite errors where memtwin models it', () => {
    for (const b of batches) expect(b.runs.map((r) => r.id)).toEqual([...new Set(b.results.runs.map((r) => r.config.id))]);
    for (const r of all.filter((x) => x.status === 'completed')) {
      expect(r.predicted?.status, r.id).toBe('completed');
      for (const row of r.rows) {
        expect(row.real, `${r.id} ${row.metric}`).not.toBeNull();
        expect(row.predicted, `${r.id} ${row.metric}`).not.toBeNull();
        if (row.real !== 0) expect(Number.isFinite(row.errorPct), `${r.id} ${row.metric}`).toBe(true);
      }
    }
    // A run is either compared, failed on the real side, or refused by memtwin's monitor (not modelled yet).
    for (const r of all) if (r.status !== 'completed' && r.inputs) expect(r.status.startsWith(`${NOT_MODELLED}: `), r.id).toBe(true);
  });

  it('the idle precopy runs send the real bytes, and every run out of the bound is explained', () => {
    for (const r of all.filter((x) => x.id.startsWith('precopy-idle')))
      expect(Math.abs(r.rows.find((x) => x.metric === 'ram.transferred')!.errorPct!), r.id).toBeLessThan(1);
    for (const r of all)
      if (r.withinBound === false || r.downtimeWithin === false || r.syncsWithin === false || r.status !== 'completed')
        expect(explanations[r.id], r.id).toBeTruthy();
  });

  it('writes a section per batch, a table per run and metric, and the spread of repeated runs', () => {
    const md = readFileSync(report, 'utf8');
    expect(md).toContain(`within ${BOUND_PCT}%`);
    for (const b of batches) expect(md).toContain(`## Batch \`${b.name}\` (validation/qemu/${b.file})`);
    for (const r of all) expect(md).toContain(`#### ${r.id}`);
    expect(md).toContain('| ram.transferred |');
    expect(md).toContain('| downtime err |');
    expect(md).toContain('dirty-syncs real / memtwin');
    for (const r of all.filter((x) => x.repeats)) {
      const s = r.repeats!.spread['total-time']!;
      expect(md).toContain(`| ${r.id} | ${r.repeats!.completed}/${r.repeats!.runs} |`);
      expect(s[0]).toBeLessThanOrEqual(s[1]);
      expect(s[1]).toBeLessThanOrEqual(s[2]);
      // The compared run is the median one: its total-time is the spread's median.
      expect(r.rows.find((x) => x.metric === 'total-time')!.real).toBe(s[1]);
    }
  });

  it('bounds downtime (25% or 10 ms) and dirty-sync-count (±1) on the precopy and hint runs, total time (15%) on postcopy', () => {
    for (const b of batches)
      for (const r of b.runs.filter((x) => x.status === 'completed')) {
        const row = (m: string) => r.rows.find((x) => x.metric === m)!;
        if (r.id === BATCHES.find((x) => x.name === b.name)!.ceilingId)
          expect([r.withinBound, r.downtimeWithin, r.syncsWithin]).toEqual([null, null, null]);
        else if (r.inputs!.postcopyAfterMs !== null) {
          if (r.withinBound !== null) expect(r.withinBound, r.id).toBe(Math.abs(row('total-time').errorPct!) <= POSTCOPY_BOUND_PCT);
          expect(r.downtimeWithin).toBeNull();
        } else {
          const dt = row('downtime');
          const ok = Math.abs(dt.errorPct ?? Infinity) <= DOWNTIME_BOUND_PCT || Math.abs(dt.predicted! - dt.real!) <= DOWNTIME_BOUND_MS;
          expect(r.downtimeWithin, r.id).toBe(ok);
          const sy = row('dirty-sync-count');
          expect(r.syncsWithin, r.id).toBe(Math.abs(sy.predicted! - sy.real!) <= SYNC_BOUND);
        }
      }
  });
});

describe("the dirty-sync count follows where the program's working set lies against the migration's scan (its order not measured)", () => {
  it('orderWorkingSet permutes only the working set: scan keeps it, reverse reverses it, random shuffles it deterministically', () => {
    const base = Array.from({ length: 20 }, (_, i) => i * 3);
    for (const order of ['scan', 'reverse', 'random'] as const) {
      const p = [...base];
      orderWorkingSet(p, 8, order);
      expect(p.slice(8)).toEqual(base.slice(8));
      expect([...p.slice(0, 8)].sort((a, b) => a - b)).toEqual(base.slice(0, 8));
      const again = [...base];
      orderWorkingSet(again, 8, order);
      expect(again).toEqual(p);
    }
    const r = [...base];
    orderWorkingSet(r, 8, 'reverse');
    expect(r.slice(0, 8)).toEqual(base.slice(0, 8).reverse());
  });

  it('multifd4-1g: in scan order memtwin syncs 8 times as QEMU 7.2; rewrites behind the scan (reverse) take more passes, more syncs and more normal pages', () => {
    const file = 'validation/qemu/results-1g.json';
    const res = JSON.parse(readFileSync(file, 'utf8')) as RealResults;
    const cal = calibrate(res, file);
    const run = medianRun(res.runs.filter((r) => r.config.id === 'multifd4-1g-ws128M-r20000-bw128M'))!;
    const at = (wsOrder: 'scan' | 'reverse'): { syncs: number; normal: number } => {
      const q = predict({ ...inputsOf(run, cal), wsOrder }) as { ram: Record<string, number> };
      return { syncs: q.ram['dirty-sync-count']!, normal: q.ram.normal! };
    };
    const scan = at('scan');
    const reverse = at('reverse');
    expect(scan.syncs).toBe(metricOf(run.queryMigrate, 'dirty-sync-count')!);
    expect(reverse.syncs).toBeGreaterThan(scan.syncs);
    expect(reverse.normal).toBeGreaterThan(scan.normal);
  }, 120_000);
});

describe("the program's place in its round robin at `migrate` (writerStartOf)", () => {
  it('is read from its console lines: every 1g run of the 128 MiB working set started migrating at about 27,000-29,200 of 32,768, whatever its dirty-sync-count', () => {
    const res = JSON.parse(readFileSync('validation/qemu/results-1g.json', 'utf8')) as RealResults;
    const runs = res.runs.filter((r) => r.config.program?.wsMiB === 128);
    expect(runs.length).toBe(21); // 7 configurations x 3 repeats
    const starts = runs.map((r) => writerStartOf(r, 32768)!);
    for (const s of starts) {
      expect(s).toBeGreaterThanOrEqual(27000);
      expect(s).toBeLessThanOrEqual(29200);
    }
    // The same start, yet the precopy runs' counts spread: the start does not decide them.
    const syncs = new Set(runs.filter((r) => r.config.postcopyAfterMs === null).map((r) => metricOf(r.queryMigrate, 'dirty-sync-count')));
    expect(syncs.size).toBeGreaterThanOrEqual(5);
    // memtwin started there (inputsOf's wsStart): once the dirty log keeps writes made before a page's send, the
    // start decides how many rewritten pages are still dirty (not new) at each sync: from index 0 memtwin sends
    // less than from the measured start, the real runs' 7-9 syncs and 547.7-586.7 MiB.
    const file = 'validation/qemu/results-1g.json';
    const run = medianRun(runs.filter((r) => r.config.id === 'precopy-dirty-1g-ws128M-r20000-bw128M'))!;
    const at = (wsStart: number): Record<string, number> =>
      (predict({ ...inputsOf(run, calibrate(res, file)), wsStart }) as { ram: Record<string, number> }).ram;
    const [zero, measured] = [at(0), at(writerStartOf(run, 32768)!)];
    expect(zero['dirty-sync-count']).toBe(8);
    expect(measured['dirty-sync-count']).toBe(8);
    expect(measured.normal).toBeGreaterThan(zero.normal!);
    expect(inputsOf(run, calibrate(res, file)).wsStart).toBe(writerStartOf(run, 32768));
    // A run without a writing program has none.
    expect(
      writerStartOf(
        res.runs.find((r) => r.config.id === 'ceiling-1g')!,
        0,
      ),
    ).toBeNull();
  });
});

describe("the guest's measured layout (predict()'s default)", () => {
  const res = JSON.parse(readFileSync(RESULTS, 'utf8')) as RealResults;
  const cal = calibrate(res, RESULTS);
  const inputs = (id: string): ReturnType<typeof inputsOf> => inputsOf(medianRun(res.runs.filter((r) => r.config.id === id))!, cal);
  const ram = (q: Record<string, unknown>): Record<string, number> => q.ram as Record<string, number>;

  it('is measured for every guest size the batches use', () => {
    for (const mem of [256, 512, 1024]) {
      const L = measuredLayout(mem)!;
      expect(L, `${mem} MiB`).not.toBeNull();
      const pages = (mem * 2 ** 20) / 4096;
      for (const [first, n] of [...L.boot, ...L.workingSet, ...L.rest]) expect(first >= 0 && n > 0 && first + n <= pages).toBe(true);
    }
  });

  it("leaves the top of RAM non-zero at the end of the pass: precopy-idle-bw32M's final stage holds megabytes (the real 7.4 MB), the even spread almost nothing; the bytes are the same", () => {
    const measured = ram(predict(inputs('precopy-idle-bw32M')));
    const even = ram(predict({ ...inputs('precopy-idle-bw32M'), layout: 'even' }));
    expect(measured['downtime-bytes']).toBeGreaterThan(3e6);
    expect(even['downtime-bytes']).toBeLessThan(1e6);
    expect(measured.normal).toBe(even.normal);
    expect(Math.abs(measured.transferred! - even.transferred!)).toBeLessThan(64); // the same pages; the streams differ by a few bytes of framing
    // Deterministic: the same inputs give the same answer.
    expect(ram(predict(inputs('precopy-idle-bw32M')))).toEqual(measured);
  }, 60_000);
});

describe('validate qemu batches (synthetic results)', () => {
  const main = JSON.parse(readFileSync(RESULTS, 'utf8')) as RealResults;
  const ceiling = main.runs.find((r) => r.config.id === 'ceiling')!;
  const idle = main.runs.find((r) => r.config.id === 'precopy-idle-bw128M')!;
  /** A main batch of its ceiling and one idle run (what calibrates it), so the synthetic tests predict little. */
  const writeMain = (dir: string): void =>
    writeFileSync(join(dir, 'results.json'), JSON.stringify({ ...main, runs: [ceiling, idle] } satisfies RealResults));
  const withTime = (r: RealRun, rep: number, ms: number): RealRun => ({
    ...structuredClone(r),
    rep,
    queryMigrate: { ...r.queryMigrate, 'total-time': ms },
  });

  it('the median run is the middle one by total-time, whatever the order', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 100_000 }), { minLength: 1, maxLength: 9 }), (times) => {
        const runs = times.map((t, i) => withTime(ceiling, i + 1, t));
        const m = medianRun(runs)!;
        const sorted = [...times].sort((a, b) => a - b);
        expect(metricOf(m.queryMigrate, 'total-time')).toBe(sorted[Math.floor((times.length - 1) / 2)]);
      }),
    );
    expect(medianRun([{ ...ceiling, status: 'failed' }])).toBeUndefined();
  });

  it('a second batch is calibrated by its own ceiling and shows a refused capability as not modelled', () => {
    const dir = mkdtempSync(join(tmpdir(), 'memtwin-vq-batch-'));
    try {
      writeMain(dir);
      // The 1g batch's ceiling recorded 3 times, twice as slow as the main one's; an idle run; and a run with a
      // capability memtwin's monitor refuses (a made-up parameter stands for one not modelled yet).
      const slow = (rep: number, f: number): RealRun => ({
        ...withTime(ceiling, rep, Math.round(880 * f)),
        config: { ...ceiling.config, id: 'ceiling-1g' },
      });
      const refused: RealRun = {
        ...structuredClone(idle),
        config: { ...idle.config, id: 'refused-1g', parameters: { 'x-not-a-parameter': 1 } },
      };
      const batch: RealResults = { ...main, batch: '1g', runs: [slow(1, 2.5), slow(2, 2), slow(3, 1.9), idle, refused] };
      writeFileSync(join(dir, 'results-1g.json'), JSON.stringify(batch));
      const [a, b] = compareBatches(join(dir, 'results.json'));
      expect(b!.name).toBe('1g');
      expect(b!.calibration.linkBps).toBeCloseTo(a!.calibration.linkBps / 2, 0);
      const r = b!.runs.find((x) => x.id === 'refused-1g')!;
      expect(r.status).toBe(`${NOT_MODELLED}: Parameter 'x-not-a-parameter' is unexpected`);
      expect(r.rows.every((x) => x.predicted === null && x.errorPct === null)).toBe(true);
      expect(r.rows.find((x) => x.metric === 'total-time')!.real).toBe(metricOf(idle.queryMigrate, 'total-time'));
      expect([r.withinBound, r.downtimeWithin, r.syncsWithin]).toEqual([null, null, null]);
      const c = b!.runs.find((x) => x.id === 'ceiling-1g')!;
      expect(c.repeats).toMatchObject({ runs: 3, completed: 3, comparedRep: 2 });
      expect(c.repeats!.spread['total-time']).toEqual([Math.round(880 * 1.9), 1760, 2200]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a batch file that is not JSON is an error naming the file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'memtwin-vq-bad-'));
    try {
      writeMain(dir);
      writeFileSync(join(dir, 'results-bad.json'), '{"runs": [');
      expect(() => compareBatches(join(dir, 'results.json'))).toThrow(/results-bad\.json: /);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
