/** Shared by the golden tests and scripts/update-goldens.ts. */
import { fileURLToPath } from 'node:url';
import { Kernel } from '../src/kernel/kernel.ts';
import { CostProfile } from '../src/sim/cost_profile.ts';
import { resolveHost } from '../src/sim/host.ts';
import { ScriptRunner } from '../src/opscript/runner.ts';
import { SimBackend } from '../src/opscript/sim_backend.ts';
import { jsonLine } from '../src/cli/format.ts';

export const goldenDir = fileURLToPath(new URL('./op-scripts', import.meta.url));

/**
 * Goldens use their own frozen copy of the cost profile, so recalibrating
 * profiles/default.json (on this host or another) does not change the
 * simulated times (`ns`) their expectations contain.
 */
const goldenProfile = CostProfile.load(`${goldenDir}/profile.json`);

/** A golden script may name its host in a "# host: NAME" line; the default is this machine's shape. */
export function hostOf(text: string): string {
  return /^# host: (\S+)/m.exec(text)?.[1] ?? 'this-machine';
}

/** The exact text `memtwin exec SCRIPT --host HOST` prints for a script. */
export async function runGoldenSim(text: string): Promise<string> {
  const runner = new ScriptRunner(new SimBackend(new Kernel({ host: resolveHost(hostOf(text)), costs: goldenProfile, seed: 1 })));
  await runner.run(text);
  return [...runner.results, runner.summary()].map(jsonLine).join('\n') + '\n';
}
