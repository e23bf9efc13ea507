/** A sweep worker (piscina): loads the scenario and runs one of its runs. */
import { loadScenario } from './load.ts';
import { runScenario } from './run.ts';
import type { RunResult } from './result.ts';

export default function run(task: { file: string; index: number }): RunResult {
  const l = loadScenario(task.file);
  return runScenario(l.runs[task.index]!, { file: task.file });
}
