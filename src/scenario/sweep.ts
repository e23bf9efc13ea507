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
  writeRun,
  writeSweep,
  type ReportRenderer,
} from './output.ts';
import type { RunResult, SweepResult } from './result.ts';
import type { ProgressMessage, WorkerReply, WorkerTask } from './worker.ts';
import { InputError } from '../util/input_error.ts';

export interface RunEvents {
  /** What is about to happen: runs in all, how many to run (the others are kept), on how many workers. */
  onPlan?(ev: { runs: number; pending: number; workers: number; sweep: boolean; ids: string[] }): void;
  /** A finished run is there but is run again, and why ("host file changed (hosts/x.yaml)"). */
  onRerun?(ev: { index: number; id: string; reason: string }): void;
  /** A run left the queue: a worker started it. */
  onStart?(ev: { index: number; id: string; durationNs: number }): void;
  /** A running run's progress, as the fraction of its virtual time simulated. */
  onProgress?(ev: { index: number; id: string; fraction: number; durationNs: number }): void;
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
  opts: LoadOptions & { signal?: AbortSignal } = {},
): Promise<RunSummary> {
  const { signal, ...load } = opts;
  const loaded = loadScenario(file, undefined, load);
  const sweep = loaded.swept.length > 0;
  // What killed attempts left: temporaries in outDir, worker bundles of processes that are gone.
  removeStaleTemporaries(outDir);
  removeStaleBundles();
  const results: (RunResult | undefined)[] = new Array(loaded.runs.length);
  const pending: number[] = [];
  for (const run of loaded.runs) {
    // A single run is always run again (it has no runs/ to resume from).
    const prev = sweep ? finishedRun(join(outDir, 'runs', run.id), inputsOf(run.scenario), MEMTWIN_VERSION) : {};
    if (prev.result) {
      results[run.index] = prev.result;
      ev.onRun?.({ index: run.index, id: run.id, state: 'reused' });
      continue;
    }
    if (prev.reason) ev.onRerun?.({ index: run.index, id: run.id, reason: prev.reason });
    pending.push(run.index);
  }
  const n = Math.max(1, Math.min(workers, pending.length));
  ev.onPlan?.({ runs: loaded.runs.length, pending: pending.length, workers: n, sweep, ids: loaded.runs.map((r) => r.id) });
  if (pending.length) {
    if (sweep) removeSweepOutputs(outDir);
    const dirOf = (r: RunResult): string => (sweep ? join(outDir, 'runs', r.run.id) : outDir);
    await runOnWorkers(loaded, load, pending, n, ev, signal, (r) => {
      writeRun(dirOf(r), r, report);
      results[r.run.index] = r;
    }).catch((e: unknown) => {
      if (!(e instanceof Aborted)) throw e;
      removeStaleTemporaries(outDir); // none should be left (runs are written between awaits); make sure
      throw new Interrupted(results.filter(Boolean).length, loaded.runs.length, outDir, sweep);
    });
  }
  const all = results as RunResult[];
  if (sweep) {
    const s: SweepResult = {
      memtwin: { version: MEMTWIN_VERSION },
      scenario: { ...scenarioInfo(loaded.base, file), name: scenarioName(loaded) },
      swept: loaded.swept.map((x) => ({ path: x.path.map(String), label: x.label, values: x.values })),
      runs: all.map((r) => ({ index: r.run.index, id: r.run.id, params: r.run.params, dir: `runs/${r.run.id}`, final: r.final })),
    };
    writeSweep(outDir, s, all, report);
  }
  return { loaded, outDir, results: all, reused: loaded.runs.length - pending.length };
}

class Aborted extends Error {}

/**
 * Run `pending` on `n` worker threads; `finish` is called (on the main
 * thread) with each result as it arrives. Rejects with Aborted when
 * `signal` stops it, after the workers are gone.
 */
async function runOnWorkers(
  loaded: LoadedScenario,
  load: LoadOptions,
  pending: number[],
  n: number,
  ev: RunEvents,
  signal: AbortSignal | undefined,
  finish: (r: RunResult) => void,
): Promise<void> {
  if (signal?.aborted) throw new Aborted();
  const worker = workerModule();
  const pool = new Piscina({ filename: worker.url, minThreads: n, maxThreads: n });
  // One destroy, awaited by whoever comes last (a second call would return before the threads have exited).
  let destroyed: Promise<void> | undefined;
  const stop = (): void => void (destroyed ??= pool.destroy());
  signal?.addEventListener('abort', stop, { once: true });
  try {
    await Promise.all(
      pending.map(async (i) => {
        const run = loaded.runs[i]!;
        const durationNs = run.scenario.duration;
        const { port1, port2 } = new MessageChannel();
        let started = false;
        port1.on('message', (m: ProgressMessage) => {
          if (!started) {
            started = true;
            ev.onStart?.({ index: i, id: run.id, durationNs });
          }
          ev.onProgress?.({ index: i, id: run.id, fraction: m.fraction, durationNs });
        });
        let reply: WorkerReply;
        try {
          const task: WorkerTask = { file: loaded.file, index: i, smoke: load.smoke, port: port2 };
          reply = (await pool.run(task, { transferList: [port2] })) as WorkerReply;
        } finally {
          port1.close();
        }
        if ('inputError' in reply) {
          const e = reply.inputError;
          throw new InputError(e.file, e.line, e.column, e.field, e.expected);
        }
        finish(reply.result);
        ev.onRun?.({ index: i, id: run.id, state: 'done', wallMs: reply.wallMs });
      }),
    );
  } catch (e) {
    if (signal?.aborted) throw new Aborted();
    throw e;
  } finally {
    signal?.removeEventListener('abort', stop);
    await (destroyed ??= pool.destroy());
    worker.dispose();
  }
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
