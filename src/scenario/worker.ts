/**
 * A scenario worker (piscina): loads the scenario and runs one of its runs,
 * posting its progress in virtual time on the task's port. Every run, a
 * sweep's or a single one, runs on a worker thread, so the main thread stays
 * free to show progress and to stop the workers on SIGINT/SIGTERM.
 */
import type { MessagePort } from 'node:worker_threads';
import { loadScenario } from './load.ts';
import { runScenario } from './run.ts';
import { InputError } from '../util/input_error.ts';
import type { RunResult } from './result.ts';

export interface WorkerTask {
  file: string;
  index: number;
  /** The scenario's reduced form (LoadOptions.smoke). */
  smoke?: boolean;
  /** Record memory maps (LoadOptions.snapshots). */
  snapshots?: boolean;
  /** Where progress goes: ProgressMessages, at most one every PROGRESS_MS of wall time. */
  port?: MessagePort;
}

/** What crosses the thread boundary: a result and the run's own wall time, or a bad-input report (classes do not survive it). */
export type WorkerReply =
  | { result: RunResult; wallMs: number }
  | { inputError: { file: string; line?: number; column?: number; field?: string; expected: string } };

export interface ProgressMessage {
  /** The share of the run's virtual time simulated (0 while the run is set up). */
  fraction: number;
  /** Simulated events per second of wall time since the previous message (0 in the first). */
  eventsPerSec: number;
}

/** The last message on a run's port: everything before it has been delivered. */
export const PROGRESS_END = 'end';

/** Wall time between two progress messages of a run (the last one, at fraction 1, always goes). */
export const PROGRESS_MS = 500;

export default function run(task: WorkerTask): WorkerReply {
  // The run's own time: from when this worker takes the task, not from when it was queued.
  const t0 = performance.now();
  let last = t0;
  let lastEvents = 0;
  const progress = task.port
    ? (fraction: number, events: number): void => {
        const now = performance.now();
        if (now - last < PROGRESS_MS && fraction < 1) return;
        const eventsPerSec = now > last ? Math.round(((events - lastEvents) * 1000) / (now - last)) : 0;
        [last, lastEvents] = [now, events];
        task.port!.postMessage({ fraction, eventsPerSec } satisfies ProgressMessage);
      }
    : undefined;
  task.port?.postMessage({ fraction: 0, eventsPerSec: 0 } satisfies ProgressMessage); // started: the run leaves the queue
  try {
    const l = loadScenario(task.file, undefined, { smoke: task.smoke, snapshots: task.snapshots });
    const result = runScenario(l.runs[task.index]!, { file: task.file, progress });
    return { result, wallMs: performance.now() - t0 };
  } catch (e) {
    if (e instanceof InputError)
      return { inputError: { file: e.file, line: e.line, column: e.column, field: e.field, expected: e.expected } };
    throw e;
  } finally {
    task.port?.postMessage(PROGRESS_END);
    task.port?.close();
  }
}
