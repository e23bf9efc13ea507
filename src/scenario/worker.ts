/** A sweep worker (piscina): loads the scenario and runs one of its runs. */
import { loadScenario } from './load.ts';
import { runScenario } from './run.ts';
import { InputError } from '../util/input_error.ts';
import type { RunResult } from './result.ts';

/** What crosses the thread boundary: a result, or a bad-input report (classes do not survive it). */
export type WorkerReply =
  { result: RunResult } | { inputError: { file: string; line?: number; column?: number; field?: string; expected: string } };

export default function run(task: { file: string; index: number; smoke?: boolean }): WorkerReply {
  try {
    const l = loadScenario(task.file, undefined, { smoke: task.smoke });
    return { result: runScenario(l.runs[task.index]!, { file: task.file }) };
  } catch (e) {
    if (e instanceof InputError)
      return { inputError: { file: e.file, line: e.line, column: e.column, field: e.field, expected: e.expected } };
    throw e;
  }
}
