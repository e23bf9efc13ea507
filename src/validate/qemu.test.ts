/**
 * `memtwin validate qemu` without QEMU: the report is redrawn from the
 * committed validation/qemu/results.json, every recorded run gets a
 * prediction, the errors are finite, and every run outside the bound has
 * an explanation (validation/qemu/explanations.json).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeReport, BOUND_PCT, DOWNTIME_BOUND_MS, DOWNTIME_BOUND_PCT, POSTCOPY_BOUND_PCT, SYNC_BOUND } from './qemu.ts';
import type { RealResults } from './matrix.ts';

const RESULTS = 'validation/qemu/results.json';
const EXPLANATIONS = 'validation/qemu/explanations.json';

describe('validate qemu (from the recorded results)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'memtwin-vq-test-'));
  const report = join(dir, 'report.md');
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const cmp = writeReport({ results: RESULTS, report, explanations: EXPLANATIONS });
  const recorded = JSON.parse(readFileSync(RESULTS, 'utf8')) as RealResults;
  const explanations = JSON.parse(readFileSync(EXPLANATIONS, 'utf8')) as Record<string, string>;

  it('predicts every completed run, with finite errors where the real value is not zero', () => {
    expect(cmp.runs.map((r) => r.id)).toEqual(recorded.runs.map((r) => r.config.id));
    for (const r of cmp.runs.filter((x) => x.status === 'completed')) {
      expect(r.predicted?.status, r.id).toBe('completed');
      for (const row of r.rows) {
        expect(row.real, `${r.id} ${row.metric}`).not.toBeNull();
        expect(row.predicted, `${r.id} ${row.metric}`).not.toBeNull();
        if (row.real !== 0) expect(Number.isFinite(row.errorPct), `${r.id} ${row.metric}`).toBe(true);
      }
    }
  });

  it('the idle precopy runs send the real bytes, and every run out of the bound is explained', () => {
    for (const r of cmp.runs.filter((x) => x.id.startsWith('precopy-idle')))
      expect(Math.abs(r.rows.find((x) => x.metric === 'ram.transferred')!.errorPct!), r.id).toBeLessThan(1);
    for (const r of cmp.runs)
      if (r.withinBound === false || r.downtimeWithin === false || r.syncsWithin === false || r.status !== 'completed')
        expect(explanations[r.id], r.id).toBeTruthy();
  });

  it('writes a table per run and metric', () => {
    const md = readFileSync(report, 'utf8');
    expect(md).toContain(`within ${BOUND_PCT}%`);
    for (const r of cmp.runs) expect(md).toContain(`### ${r.id}`);
    expect(md).toContain('| ram.transferred |');
    expect(md).toContain('| downtime err |');
    expect(md).toContain('dirty-syncs real / memtwin');
  });

  it('bounds downtime (25% or 10 ms) and dirty-sync-count (±1) on the precopy and hint runs, total time (15%) on postcopy', () => {
    for (const r of cmp.runs.filter((x) => x.status === 'completed')) {
      const row = (m: string) => r.rows.find((x) => x.metric === m)!;
      if (r.id === 'ceiling') expect([r.withinBound, r.downtimeWithin, r.syncsWithin]).toEqual([null, null, null]);
      else if (r.inputs!.postcopyAfterMs !== null) {
        expect(r.withinBound, r.id).toBe(Math.abs(row('total-time').errorPct!) <= POSTCOPY_BOUND_PCT);
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
