/**
 * Differential testing: one script on both backends, compared.
 */
import { Kernel } from '../kernel/kernel.ts';
import { CostProfile } from '../sim/cost_profile.ts';
import { resolveHost } from '../sim/host.ts';
import { ScriptRunner } from './runner.ts';
import { SimBackend } from './sim_backend.ts';
import { LinuxBackend } from './linux_backend.ts';
import { diffRuns, type DiffResult } from './diff.ts';

export async function runSim(text: string, host = 'this-machine'): Promise<ScriptRunner> {
  const r = new ScriptRunner(new SimBackend(new Kernel({ host: resolveHost(host), costs: CostProfile.default(), seed: 1 })));
  await r.run(text);
  return r;
}

export async function runLinux(text: string): Promise<ScriptRunner> {
  const backend = new LinuxBackend();
  const r = new ScriptRunner(backend);
  try {
    await r.run(text);
  } finally {
    await backend.close();
  }
  return r;
}

/**
 * After an op the simulator does not model (skipped), the two kernels'
 * states may differ for that reason alone: later disagreements are not
 * findings, and are dropped.
 */
export function findings(d: DiffResult): DiffResult {
  const first = d.skipped[0]?.i ?? Infinity;
  return { ...d, disagreements: d.disagreements.filter((x) => x.i < first) };
}

export async function diffScript(text: string): Promise<DiffResult> {
  const sim = await runSim(text);
  const lin = await runLinux(text);
  return findings(diffRuns(sim.results, lin.results));
}
