/**
 * A scenario worker (piscina): runs one run of a scenario, posting its
 * progress in virtual time on the task's port, and renders the run's
 * report.html when asked; or renders a sweep's report.html. Every run, a
 * sweep's or a single one, runs on a worker thread, so the main thread stays
 * free to show progress and to stop the workers on SIGINT/SIGTERM.
 *
 * The run comes as the main thread loaded it (RunSpec is plain data: it
 * crosses the thread boundary as a structured clone), so a worker neither
 * reads nor checks the scenario file again, and the run is the very one
 * whose inputs the main thread compared to a finished run's (resume).
 */
import type { MessagePort } from 'node:worker_threads';
import type { RunSpec } from './load.ts';
import { runScenario } from './run.ts';
import { InputError } from '../util/input_error.ts';
import { renderRunReport, renderSweepReport } from '../report/report.ts';
import type { RunResult, SweepResult } from './result.ts';

export interface RunTask {
  /** The scenario file, to locate problems found while the run runs (locate.ts reads it then). */
  file: string;
  /** The run, as loadScenario gave it to the main thread. */
  run: RunSpec;
  /**
   * Render the run's report.html here, with memtwin's report (renderRunReport), so
   * that the main thread does not take a core from the simulations to do it.
   */
  report?: boolean;
  /** Where progress goes: ProgressMessages, at most one every PROGRESS_MS of wall time. */
  port?: MessagePort;
}

/** A sweep's report.html (renderSweepReport), rendered where ECharts is already loaded and warm. */
export interface SweepReportTask {
  sweep: SweepResult;
  runs: RunResult[];
}

export type WorkerTask = RunTask | SweepReportTask;

/**
 * What crosses the thread boundary: a result, the run's own wall time and,
 * when asked, its report.html (rendered from the result without its
 * snapshots, as writeRun would); a sweep's report.html; or a bad-input
 * report (classes do not survive it).
 */
export type WorkerReply =
  | { result: RunResult; wallMs: number; report?: string }
  | { sweepReport: string }
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
  if ('sweep' in task) return { sweepReport: renderSweepReport(task.sweep, task.runs) };
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
    const result = runScenario(task.run, { file: task.file, progress });
    if (!task.report) return { result, wallMs: performance.now() - t0 };
    // writeRun's report.html is of the result without its snapshots (they go to snapshots.json).
    const { snapshots: _snapshots, ...reported } = result;
    const report = renderRunReport(reported);
    return { result, wallMs: performance.now() - t0, report };
  } catch (e) {
    if (e instanceof InputError)
      return { inputError: { file: e.file, line: e.line, column: e.column, field: e.field, expected: e.expected } };
    throw e;
  } finally {
    task.port?.postMessage(PROGRESS_END);
    task.port?.close();
  }
}
