/**
 * The simulated STREAM copy against the copy bandwidth calibrate measured
 * (virtual time, so the same on every machine):
 *
 *   npx tsx scripts/stream-copy.ts [PROFILE.json]
 *
 * Prints, for 1 and 2 threads, the profile's membw_copy_<N>t, the
 * simulator's copy bandwidth on hosts/this-machine.yaml and their ratio
 * (src/workload/stream_copy.ts; engine.membw.test.ts asserts they agree within 10%).
 */
import { resolve } from 'node:path';
import { CostProfile } from '../src/sim/cost_profile.ts';
import { fromRoot } from '../src/util/paths.ts';
import { simulatedCopy } from '../src/workload/stream_copy.ts';

const profile = process.argv[2] ? resolve(process.argv[2]) : undefined;
const costs = CostProfile.load(profile ?? fromRoot('profiles', 'default.json'));
console.log('| threads | measured (calibrate) | simulated | simulated / measured |\n| --- | --- | --- | --- |');
for (const t of [1, 2]) {
  const measured = costs.nsOf(`membw_copy_${t}t`);
  const sim = simulatedCopy(t, profile);
  console.log(`| ${t} | ${(measured / 1e9).toFixed(2)} GB/s | ${(sim / 1e9).toFixed(2)} GB/s | ${(sim / measured).toFixed(3)} |`);
}
