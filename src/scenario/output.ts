/**
 * Writing run outputs: result.json, timeseries.csv, report.html.
 *
 * A run counts as finished only when all of its outputs are written, and a
 * kill at any point leaves either a finished run or none (what a resumed
 * sweep keeps, finishedRun): writeRun removes the old result.json first,
 * writes every output to a temporary name (`NAME.tmp-PID-START`), renames the
 * others into place and result.json last. result.json is the completion
 * marker. A sweep's own outputs follow the same order (writeSweep).
 * Temporaries left by a killed process are removed by the next attempt
 * (removeStaleTemporaries).
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RunResult, SweepResult } from './result.ts';
import { staleReason } from './inputs.ts';
import { procStatFields } from '../util/proc_stat.ts';

/**
 * A process's start time, in clock ticks after boot (/proc/PID/stat field
 * 22), or null when it does not exist (or there is no /proc). With its pid
 * it names a process for good: pids are reused, soon where pid_max is
 * 32768, and a new process with a dead one's pid must not keep the dead
 * one's leftovers alive.
 */
export function procStartTime(pid: number): string | null {
  return procStatFields(pid)?.[22 - 3] ?? null;
}

/** This process, as temporaries and worker bundles name it: PID-START (START 0 without /proc). */
export const SELF_TAG = `${process.pid}-${procStartTime(process.pid) ?? 0}`;

/**
 * Is the process that wrote a leftover named `pid` (and `start`, when the
 * name has one) still alive? With a start time, only the same process
 * counts; without /proc or a start time, any process with that pid.
 */
export function ownerAlive(pid: number, start?: string): boolean {
  if (start !== undefined && start !== '0' && existsSync('/proc/self/stat')) return procStartTime(pid) === start;
  return pidAlive(pid);
}

/** The temporary `path` is written to before it is renamed into place (removeStaleTemporaries knows the form). */
export const tmpName = (path: string): string => `${path}.tmp-${SELF_TAG}`;

/** Write `text` to `path` through a temporary file, so `path` is either absent, the old content, or all of the new. */
export function writeAtomic(path: string, text: string): void {
  const tmp = tmpName(path);
  writeFileSync(tmp, text);
  renameSync(tmp, path);
}

/**
 * Write several files of one directory as a unit: all go to temporaries,
 * then they are renamed in the order given. The last one is the marker
 * that the set is complete; it is removed before anything is written, so
 * that it never stands beside outputs of another attempt.
 */
function writeSet(dir: string, files: [name: string, text: string][]): void {
  mkdirSync(dir, { recursive: true });
  const marker = join(dir, files[files.length - 1]![0]);
  rmSync(marker, { force: true });
  for (const [name, text] of files) writeFileSync(tmpName(join(dir, name)), text);
  for (const [name] of files) renameSync(tmpName(join(dir, name)), join(dir, name));
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

/** A run's outputs, in the order they are put in place: result.json, the completion marker, last. */
export const RUN_FILES = ['timeseries.csv', 'report.html', 'result.json'] as const;
/** A sweep's own outputs, same rule. */
export const SWEEP_FILES = ['summary.csv', 'report.html', 'result.json'] as const;

/**
 * A run's snapshots (`memtwin view`'s maps and migrations) go to
 * snapshots.json, not result.json, and are dropped from `r` once written:
 * a sweep keeps every run's result in memory for its report.
 */
export const SNAPSHOTS_FILE = 'snapshots.json';

/** `html`: the run's report.html when it is already rendered (a sweep's worker renders it: worker.ts), else `report` renders it. */
export function writeRun(dir: string, r: RunResult, report: ReportRenderer, html?: string): void {
  const { snapshots, ...result } = r;
  if (!snapshots) rmSync(join(dir, SNAPSHOTS_FILE), { force: true });
  writeSet(dir, [
    ['timeseries.csv', seriesCsv(result)],
    ['report.html', html ?? report.run(result)],
    ...(snapshots ? [[SNAPSHOTS_FILE, JSON.stringify(snapshots) + '\n'] as [string, string]] : []),
    ['result.json', JSON.stringify(result, null, 1) + '\n'],
  ]);
  delete r.snapshots;
}

/** `html`: the sweep's report.html when it is already rendered (by a worker), else `report` renders it. */
export function writeSweep(dir: string, s: SweepResult, runs: RunResult[], report: ReportRenderer, html?: string): void {
  writeSet(dir, [
    ['summary.csv', sweepCsv(s)],
    ['report.html', html ?? report.sweep(s, runs)],
    ['result.json', JSON.stringify(s, null, 1) + '\n'],
  ]);
}

/** A sweep about to run again: its own outputs would describe runs that are about to change, so they go. */
export function removeSweepOutputs(dir: string): void {
  for (const f of [...SWEEP_FILES].reverse()) rmSync(join(dir, f), { force: true });
}

/**
 * The finished run in `dir`, or why there is none to keep: `reason` is
 * undefined when the run never finished there (nothing to say), else why a
 * result that is there is not kept ("host file changed (hosts/x.yaml)").
 */
export function finishedRun(
  dir: string,
  inputs: unknown,
  version: string,
): { result: RunResult; reason?: undefined } | { result?: undefined; reason?: string } {
  const f = join(dir, 'result.json');
  if (!existsSync(f)) return {};
  let r: RunResult;
  try {
    r = JSON.parse(readFileSync(f, 'utf8')) as RunResult;
  } catch {
    return { reason: 'its result.json cannot be read' };
  }
  const missing = RUN_FILES.filter((n) => !existsSync(join(dir, n)));
  if (missing.length) return { reason: `${missing.join(', ')} missing` };
  const why = staleReason(r, inputs, version);
  return why ? { reason: why } : { result: r };
}

/** Is process `pid` alive (signal 0: EPERM means it exists but is not ours)? */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Remove the temporaries (`NAME.tmp-PID-START`, or an older `NAME.tmp-PID`) that a killed attempt left in
 * `dir` and its runs' directories: those of dead processes, and this
 * process's own (it writes none between runs). Returns how many.
 */
export function removeStaleTemporaries(dir: string): number {
  let n = 0;
  const sweepDir = (d: string): void => {
    let names: string[];
    try {
      names = readdirSync(d);
    } catch {
      return;
    }
    for (const name of names) {
      const m = /\.tmp-(\d+)(?:-(\d+))?$/.exec(name);
      if (m && (Number(m[1]) === process.pid || !ownerAlive(Number(m[1]), m[2]))) {
        rmSync(join(d, name), { force: true });
        n++;
      }
    }
  };
  sweepDir(dir);
  let runs: string[] = [];
  try {
    runs = readdirSync(join(dir, 'runs'));
  } catch {
    /* no runs yet */
  }
  for (const r of runs) sweepDir(join(dir, 'runs', r));
  return n;
}
