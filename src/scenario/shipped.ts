/**
 * The shipped scenarios (scenarios/*.yaml) as a check: every run completes
 * and does work. The test suite runs each one's reduced form (`smoke`);
 * scripts/check-scenarios.ts runs them in full and reruns one run of each to
 * check that the same seed gives byte-identical results.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fromRoot } from '../util/paths.ts';
import { runScenarioFile } from './sweep.ts';
import { runScenario } from './run.ts';
import { renderRunReport, renderSweepReport } from '../report/report.ts';
import { metricUnit } from '../report/units.ts';
import type { RunResult } from './result.ts';

export const SCENARIO_DIR = fromRoot('scenarios');

export function shippedScenarios(): string[] {
  return readdirSync(SCENARIO_DIR)
    .filter((f) => f.endsWith('.yaml'))
    .sort();
}

/** What a run of a shipped scenario must show: it did work, no thread stopped on a signal, no migration lost data. */
export function runProblems(r: RunResult): string[] {
  const out: string[] = [];
  // Every run does work: workload accesses, or (VM scenarios without guest workloads) device messages or guest faults.
  const busy =
    (r.final.accesses ?? 0) > 0 ||
    Object.entries(r.final).some(([k, v]) => /^vm\..*\.(balloon\.messages|ept_violations)$/.test(k) && v > 0);
  if (!busy) out.push(`${r.run.id}: no accesses, balloon messages or EPT violations`);
  if (r.final.threads_stopped) out.push(`${r.run.id}: ${r.final.threads_stopped} thread(s) stopped`);
  // No migration loses data: every page the destination took over has the source's content.
  for (const [k, v] of Object.entries(r.final))
    if (/\.migration\.pages_differing$/.test(k) && v !== 0) out.push(`${r.run.id}: ${k} = ${v}`);
  // Every metric has its unit in the reports' table (src/report/units.ts), so none is printed or drawn bare.
  for (const k of [...Object.keys(r.final), ...Object.keys(r.series?.metrics ?? {})])
    if (metricUnit(k) === undefined) out.push(`${r.run.id}: metric ${k} has no unit in src/report/units.ts METRIC_UNITS`);
  // An evacuation moves every VM it names (so each has a content check above).
  if (r.final['evacuate.completed'] !== r.final['evacuate.migrations'])
    out.push(`${r.run.id}: evacuate.completed ${r.final['evacuate.completed']} of ${r.final['evacuate.migrations']}`);
  return out;
}

export interface ShippedCheck {
  runs: number;
  problems: string[];
  /** With `determinism`: whether the first run, rerun in this thread, gave the bytes written. */
  identical?: boolean;
}

/** Run one shipped scenario (its reduced form with `smoke`) into `out` and check it. */
export async function checkShipped(
  file: string,
  out: string,
  o: { smoke: boolean; workers: number; determinism?: boolean },
): Promise<ShippedCheck> {
  const path = join(SCENARIO_DIR, file);
  const report = { run: renderRunReport, sweep: renderSweepReport };
  const s = await runScenarioFile(path, out, o.workers, report, {}, { smoke: o.smoke });
  const check: ShippedCheck = { runs: s.results.length, problems: s.results.flatMap(runProblems) };
  if (o.determinism) {
    const first = s.loaded.runs[0]!;
    const again = runScenario(first, { file: path });
    const written = readFileSync(s.loaded.runs.length > 1 ? join(out, 'runs', first.id, 'result.json') : join(out, 'result.json'), 'utf8');
    check.identical = JSON.stringify(again, null, 1) + '\n' === written;
  }
  return check;
}
