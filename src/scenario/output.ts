/**
 * Writing run outputs: result.json, timeseries.csv, report.html. Files are
 * written to a temporary name and renamed, so an interrupted run never
 * leaves a half-written result that a resumed sweep would trust.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import type { RunResult, SweepResult } from './result.ts';

export function writeAtomic(path: string, text: string): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, text);
  renameSync(tmp, path);
}

const csvCell = (v: unknown): string => {
  const s = String(v);
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
};

export function seriesCsv(r: RunResult): string {
  const names = Object.keys(r.series.metrics);
  const lines = [['t_ns', ...names].map(csvCell).join(',')];
  r.series.t_ns.forEach((t, i) => lines.push([t, ...names.map((n) => r.series.metrics[n]![i])].join(',')));
  return lines.join('\n') + '\n';
}

export function sweepCsv(s: SweepResult): string {
  const params = s.swept.map((x) => x.label);
  const metrics = [...new Set(s.runs.flatMap((r) => Object.keys(r.final)))];
  const lines = [['run', ...params, ...metrics].map(csvCell).join(',')];
  for (const r of s.runs)
    lines.push([r.id, ...params.map((p) => r.params[p]), ...metrics.map((m) => r.final[m] ?? '')].map(csvCell).join(','));
  return lines.join('\n') + '\n';
}

export type ReportRenderer = {
  run(r: RunResult): string;
  sweep(s: SweepResult, runs: RunResult[]): string;
};

export function writeRun(dir: string, r: RunResult, report: ReportRenderer): void {
  mkdirSync(dir, { recursive: true });
  writeAtomic(join(dir, 'result.json'), JSON.stringify(r, null, 1) + '\n');
  writeAtomic(join(dir, 'timeseries.csv'), seriesCsv(r));
  writeAtomic(join(dir, 'report.html'), report.run(r));
}

export function writeSweep(dir: string, s: SweepResult, runs: RunResult[], report: ReportRenderer): void {
  mkdirSync(dir, { recursive: true });
  writeAtomic(join(dir, 'result.json'), JSON.stringify(s, null, 1) + '\n');
  writeAtomic(join(dir, 'summary.csv'), sweepCsv(s));
  writeAtomic(join(dir, 'report.html'), report.sweep(s, runs));
}

/** A finished run's result in `dir`, if it exists and was made from the same inputs. */
export function finishedRun(dir: string, inputs: unknown): RunResult | undefined {
  const f = join(dir, 'result.json');
  if (!existsSync(f)) return undefined;
  try {
    const r = JSON.parse(readFileSync(f, 'utf8')) as RunResult;
    return JSON.stringify(r.inputs) === JSON.stringify(inputs) ? r : undefined;
  } catch {
    return undefined;
  }
}
