/**
 * Running a scenario: one run, or every run of a sweep, in parallel on
 * worker threads. Results do not depend on the number of workers: every run
 * is a separate deterministic simulation, and outputs are assembled in run
 * order.
 *
 * Resuming: runs already finished in the output directory are kept when
 * everything they depend on is unchanged (the run's expanded scenario, the
 * digests of the host files and cost profile it reads, memtwin's version;
 * inputs.ts), so an interrupted sweep resumes where it stopped and a rerun
 * after a change redoes exactly the runs it affects, saying why.
 *
 * Stopping: with `opts.signal` aborted (the CLI aborts it on SIGINT/SIGTERM) the
 * workers are terminated, the worker bundle removed, and Interrupted thrown
 * with how many runs finished. Runs are written by the main thread between
 * awaits, so an abort never lands in the middle of one; a SIGKILL can, and
 * output.ts makes that leave the run unfinished rather than half-written.
 */
import { availableParallelism } from 'node:os';
import { join, dirname, sep } from 'node:path';
import { MessageChannel } from 'node:worker_threads';
import { setTimeout } from 'node:timers/promises';
import { Piscina } from 'piscina';
import { createRequire } from 'node:module';
import { mkdirSync, readdirSync, rmdirSync, rmSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { fromRoot } from '../util/paths.ts';
import { loadScenario, scenarioName, type LoadedScenario, type LoadOptions } from './load.ts';
import { inputsOf, scenarioInfo, MEMTWIN_VERSION } from './run.ts';
import {
  finishedRun,
  ownerAlive,
  SELF_TAG,
  removeStaleTemporaries,
  removeSweepOutputs,
  writeAtomic,
  writeRun,
  writeSweep,
  type ReportRenderer,
} from './output.ts';
import { SHARD_FILE, shardManifest, shardRuns, type ShardSpec, type SweepHeader } from './merge.ts';
import type { RunResult, SweepResult } from './result.ts';
import { PROGRESS_END, type ProgressMessage, type RunTask, type SweepReportTask, type WorkerReply } from './worker.ts';
import { renderRunReport, renderSweepReport } from '../report/report.ts';
import { InputError } from '../util/input_error.ts';

export interface RunEvents {
  /** What is about to happen: runs in all, how many to run (the others are kept), on how many workers. */
  onPlan?(ev: {
    runs: number;
    pending: number;
    workers: number;
    sweep: boolean;
    ids: string[];
    /** With --shard: which shard this is, and the sweep's whole run count (`runs` counts this shard's). */
    shard?: ShardSpec & { of: number };
  }): void;
  /** A finished run is there but is run again, and why ("host file changed (hosts/x.yaml)"). */
  onRerun?(ev: { index: number; id: string; reason: string }): void;
  /** A run left the queue: a worker started it. */
  onStart?(ev: { index: number; id: string; durationNs: number }): void;
  /** A running run's progress: the fraction of its virtual time simulated, and simulated events per wall second. */
  onProgress?(ev: { index: number; id: string; fraction: number; durationNs: number; eventsPerSec: number }): void;
  /** A run finished (its outputs are written; wallMs is its own time in its worker) or is kept from an earlier attempt. */
  onRun?(ev: { index: number; id: string; state: 'reused' | 'done'; wallMs?: number }): void;
}

export interface RunSummary {
  loaded: LoadedScenario;
  outDir: string;
  results: RunResult[];
  reused: number;
}

/** The runs were stopped (the abort signal) before all of them finished. */
export class Interrupted extends Error {
  constructor(
    /** Runs whose outputs are complete in outDir (kept from before or finished now). */
    readonly finished: number,
    readonly runs: number,
    readonly outDir: string,
    readonly sweep: boolean,
  ) {
    super(`interrupted: ${finished} of ${runs} runs finished`);
    this.name = 'Interrupted';
  }
}

export async function runScenarioFile(
  file: string,
  outDir: string,
  workers: number,
  report: ReportRenderer,
  ev: RunEvents = {},
  opts: LoadOptions & { signal?: AbortSignal; shard?: ShardSpec } = {},
): Promise<RunSummary> {
  const { signal, shard, ...load } = opts;
  removeStaleBundles();
  // The workers start first: the first one loads its code (~0.1 s) while this thread loads the scenario.
  const pool = startWorkers(Math.max(1, workers));
  try {
    return await runLoaded(file, outDir, workers, report, ev, load, signal, shard, pool);
  } finally {
    await pool.destroy();
  }
}

async function runLoaded(
  file: string,
  outDir: string,
  workers: number,
  report: ReportRenderer,
  ev: RunEvents,
  load: LoadOptions,
  signal: AbortSignal | undefined,
  shard: ShardSpec | undefined,
  pool: Workers,
): Promise<RunSummary> {
  const loaded = loadScenario(file, undefined, load);
  const sweep = loaded.swept.length > 0;
  if (shard && !sweep)
    throw new InputError('--shard', undefined, undefined, undefined, `${file} has no sweep: its one run cannot be split into shards`);
  // What killed attempts left: temporaries in outDir (worker bundles of processes that are gone: above).
  removeStaleTemporaries(outDir);
  const header = sweepHeader(loaded, file);
  const inputs = loaded.runs.map((r) => inputsOf(r.scenario));
  // A shard runs its share of the runs, and says so first (merge.ts), so that even an unfinished shard describes itself.
  const mine = shard ? shardRuns(loaded.runs.length, shard) : loaded.runs.map((r) => r.index);
  if (shard) {
    mkdirSync(outDir, { recursive: true });
    const m = shardManifest(
      header,
      loaded.runs.map((r, i) => ({ index: r.index, id: r.id, inputs: inputs[i] })),
      shard,
      !!load.smoke,
    );
    writeAtomic(join(outDir, SHARD_FILE), JSON.stringify(m, null, 1) + '\n');
  } else if (sweep) rmSync(join(outDir, SHARD_FILE), { force: true }); // the whole sweep here now: no shard of it
  const results: (RunResult | undefined)[] = new Array(loaded.runs.length);
  const pending: number[] = [];
  for (const run of mine.map((i) => loaded.runs[i]!)) {
    // A single run is always run again (it has no runs/ to resume from).
    const prev = sweep ? finishedRun(join(outDir, 'runs', run.id), inputs[run.index], MEMTWIN_VERSION) : {};
    if (prev.result) {
      results[run.index] = prev.result;
      ev.onRun?.({ index: run.index, id: run.id, state: 'reused' });
      continue;
    }
    if (prev.reason) ev.onRerun?.({ index: run.index, id: run.id, reason: prev.reason });
    pending.push(run.index);
  }
  const n = Math.max(1, Math.min(workers, pending.length));
  ev.onPlan?.({
    runs: mine.length,
    pending: pending.length,
    workers: n,
    sweep,
    ids: mine.map((i) => loaded.runs[i]!.id),
    ...(shard ? { shard: { ...shard, of: loaded.runs.length } } : {}),
  });
  const all = (): RunResult[] => mine.map((i) => results[i]!);
  const sweepResult = (): SweepResult => ({
    ...header,
    runs: all().map((r) => ({ index: r.run.index, id: r.run.id, params: r.run.params, dir: `runs/${r.run.id}`, final: r.final })),
  });
  // memtwin's own reports are rendered by the workers (worker.ts): each run's by the worker that ran it, the
  // sweep's by a worker whose ECharts is loaded and warm; the main thread only writes files. Other renderers
  // (tests' own) cannot cross the thread boundary and render here.
  const inWorkers = report.run === renderRunReport && report.sweep === renderSweepReport;
  // A shard's runs are only part of the sweep: its summary, report and result.json are merge's to write.
  const writesSweep = sweep && !shard;
  let sweepHtml: string | undefined;
  if (pending.length) {
    if (sweep) removeSweepOutputs(outDir);
    const dirOf = (r: RunResult): string => (sweep ? join(outDir, 'runs', r.run.id) : outDir);
    const renderSweep =
      writesSweep && inWorkers
        ? async (render: (t: SweepReportTask) => Promise<string>): Promise<void> => {
            sweepHtml = await render({ sweep: sweepResult(), runs: all() });
          }
        : undefined;
    await runOnWorkers(
      pool,
      loaded,
      pending,
      inWorkers,
      ev,
      signal,
      (r, html) => {
        writeRun(dirOf(r), r, report, html);
        results[r.run.index] = r;
      },
      renderSweep,
    ).catch((e: unknown) => {
      if (!(e instanceof Aborted)) throw e;
      removeStaleTemporaries(outDir); // none should be left (runs are written between awaits); make sure
      throw new Interrupted(results.filter(Boolean).length, mine.length, outDir, sweep);
    });
  }
  if (writesSweep) writeSweep(outDir, sweepResult(), all(), report, sweepHtml);
  return { loaded, outDir, results: all(), reused: mine.length - pending.length };
}

/** A sweep's result.json before its runs: the memtwin version, the scenario, the swept parameters. */
export function sweepHeader(loaded: LoadedScenario, file: string): SweepHeader {
  return {
    memtwin: { version: MEMTWIN_VERSION },
    scenario: { ...scenarioInfo(loaded.base, file), name: scenarioName(loaded) },
    swept: loaded.swept.map((x) => ({ path: x.path.map(String), label: x.label, values: x.values })),
  };
}

class Aborted extends Error {}

/** How long a finished run's progress port may take to deliver its last messages (normally under 1 ms, or until the main thread is done writing another run). */
const DRAIN_MS = 1000;

/**
 * Run `pending` on the pool's worker threads (as many at once as it has); `finish` is called (on the main
 * thread) with each result as it arrives, and its report.html when the
 * worker rendered it (`reports`). Then `epilogue`, if any, may render a
 * sweep's report on the same workers. Rejects with Aborted when `signal`
 * stops it, after the workers are gone.
 */
async function runOnWorkers(
  { pool, destroy }: Workers,
  loaded: LoadedScenario,
  pending: number[],
  reports: boolean,
  ev: RunEvents,
  signal: AbortSignal | undefined,
  finish: (r: RunResult, html?: string) => void,
  epilogue?: (render: (t: SweepReportTask) => Promise<string>) => Promise<void>,
): Promise<void> {
  if (signal?.aborted) throw new Aborted();
  const stop = (): void => void destroy();
  signal?.addEventListener('abort', stop, { once: true });
  try {
    await Promise.all(
      pending.map(async (i) => {
        const run = loaded.runs[i]!;
        const durationNs = run.scenario.duration;
        const { port1, port2 } = new MessageChannel();
        let started = false;
        let last: ProgressMessage = { fraction: 0, eventsPerSec: 0 };
        const progress = (m: ProgressMessage): void => {
          if (!started) {
            started = true;
            ev.onStart?.({ index: i, id: run.id, durationNs });
          }
          last = m;
          ev.onProgress?.({ index: i, id: run.id, fraction: m.fraction, durationNs, eventsPerSec: m.eventsPerSec });
        };
        // The worker's last message ends its run's progress; the reply, on another port, can overtake it.
        let drain = (): void => {};
        const drained = new Promise<void>((resolve) => (drain = resolve));
        port1.on('message', (m: ProgressMessage | typeof PROGRESS_END) => (m === PROGRESS_END ? drain() : progress(m)));
        let reply: WorkerReply;
        try {
          const task: RunTask = { file: loaded.file, run, report: reports, port: port2 };
          reply = (await pool.run(task, { transferList: [port2] })) as WorkerReply;
          await Promise.race([drained, setTimeout(DRAIN_MS, undefined, { ref: false })]);
        } finally {
          port1.close();
        }
        // Stopped while the port drained: the main thread is ending the attempt; this run is done again on resume.
        if (signal?.aborted) return;
        if ('inputError' in reply) {
          const e = reply.inputError;
          throw new InputError(e.file, e.line, e.column, e.field, e.expected);
        }
        if (!('result' in reply)) throw new Error('a worker answered a run with no result');
        // Should the port not have drained in time, the run did reach its end all the same.
        if (!started || last.fraction < 1) progress({ fraction: 1, eventsPerSec: last.eventsPerSec });
        finish(reply.result, reply.report);
        ev.onRun?.({ index: i, id: run.id, state: 'done', wallMs: reply.wallMs });
      }),
    );
    if (signal?.aborted) throw new Aborted(); // every task returned, some of them without their run
    await epilogue?.(async (t) => {
      const reply = (await pool.run(t)) as WorkerReply;
      if (!('sweepReport' in reply)) throw new Error("a worker answered a sweep's report with no report");
      return reply.sweepReport;
    });
  } catch (e) {
    if (signal?.aborted) throw new Aborted();
    throw e;
  } finally {
    signal?.removeEventListener('abort', stop);
    await destroy();
  }
}

/** A sweep's worker threads, and their one destroy (awaited by whoever comes last: a second pool.destroy() would return before the threads have exited). */
interface Workers {
  pool: Piscina;
  destroy(): Promise<void>;
}

/**
 * Worker threads for up to `max` runs at once. One starts now; the others
 * when runs are queued for them (piscina adds a thread while tasks wait,
 * up to maxThreads), so a sweep of fewer runs than `max` starts no more
 * than it uses, give or take one. None is ever retired for being idle: a
 * worker's code and ECharts, once loaded and compiled, serve its next run.
 */
function startWorkers(max: number): Workers {
  const worker = workerModule();
  const pool = new Piscina({ filename: worker.url, minThreads: 1, maxThreads: max, idleTimeout: Infinity });
  let destroyed: Promise<void> | undefined;
  return { pool, destroy: () => (destroyed ??= pool.destroy().finally(() => worker.dispose())) };
}

export const defaultWorkers = (): number => availableParallelism();

const BUNDLE_DIR = fromRoot('node_modules', '.cache', 'memtwin');
/** sweep-worker-PID-START-N.mjs (START: the process's start time, SELF_TAG). */
const BUNDLE_NAME = /^sweep-worker-(\d+)-(\d+)(?:-\d+)?\.mjs$/;
let bundles = 0;

/**
 * The worker threads' module. Compiled memtwin (bin/memtwin.js runs dist/
 * when it is built from the sources as they are) starts them from
 * dist/scenario/worker.js, built beside the command line's own bundle: a
 * worker thread then loads in ~0.1 s of CPU. Running from the TypeScript
 * sources (tsx, vitest, the bench), it is workerBundle's.
 */
function workerModule(): { url: string; dispose(): void } {
  const dist = fromRoot('dist');
  if (fileURLToPath(import.meta.url).startsWith(dist + sep))
    return { url: pathToFileURL(join(dist, 'scenario', 'worker.js')).href, dispose: () => {} };
  return workerBundle();
}

/**
 * The worker's code as one ES module bundled by esbuild (about 0.1 s): a
 * worker thread then starts in ~0.2 s instead of ~1.7 s of compiling every
 * source file through tsx. Falls back to the tsx entry if esbuild fails.
 * The bundle is named after this process (sweep-worker-PID-...), removed
 * when the pool is done, and, if a kill left it behind, by the next start
 * once its process is gone (removeStaleBundles).
 */
function workerBundle(): { url: string; dispose(): void } {
  const out = join(BUNDLE_DIR, `sweep-worker-${SELF_TAG}-${bundles++}.mjs`);
  try {
    mkdirSync(dirname(out), { recursive: true });
    // Loaded here, not at start: compiled memtwin never bundles.
    const { buildSync } = createRequire(import.meta.url)('esbuild') as typeof import('esbuild');
    buildSync({
      entryPoints: [fileURLToPath(new URL('./worker.ts', import.meta.url))],
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node20',
      packages: 'external',
      outfile: out,
      logLevel: 'silent',
    });
    return { url: pathToFileURL(out).href, dispose: () => removeBundle(out) };
  } catch {
    removeBundle(out);
    return { url: new URL('./worker-entry.mjs', import.meta.url).href, dispose: () => {} };
  }
}

/** Remove a bundle, and its directories when nothing else is left in them. */
function removeBundle(path: string): void {
  rmSync(path, { force: true });
  for (const d of [BUNDLE_DIR, dirname(BUNDLE_DIR)])
    try {
      rmdirSync(d);
    } catch {
      return; // not empty (another memtwin's bundle, another tool's cache) or already gone
    }
}

/** Bundles left by processes that no longer exist (killed before they could remove theirs). Returns how many were removed. */
export function removeStaleBundles(): number {
  let names: string[];
  try {
    names = readdirSync(BUNDLE_DIR);
  } catch {
    return 0;
  }
  let n = 0;
  for (const name of names) {
    const m = BUNDLE_NAME.exec(name);
    if (m && Number(m[1]) !== process.pid && !ownerAlive(Number(m[1]), m[2])) {
      rmSync(join(BUNDLE_DIR, name), { force: true });
      n++;
    }
  }
  if (n) removeBundle(join(BUNDLE_DIR, '.none'));
  return n;
}

/** Where worker bundles are built (for tests). */
export const WORKER_BUNDLE_DIR = BUNDLE_DIR;
