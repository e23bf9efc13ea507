/**
 * Regenerate test/op-scripts/*.expected.jsonl from the simulator. Run it
 * only after `npm test` shows the script agrees with the real kernel
 * (the differential test), so every expectation is one Linux confirmed.
 *
 *   npx tsx scripts/update-goldens.ts [NAME...]
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { goldenDir, runGoldenSim } from '../test/golden.ts';

const only = process.argv.slice(2);
for (const f of readdirSync(goldenDir).filter((f) => f.endsWith('.jsonl') && !f.endsWith('.expected.jsonl'))) {
  const name = f.replace(/\.jsonl$/, '');
  if (only.length && !only.includes(name)) continue;
  const out = await runGoldenSim(readFileSync(`${goldenDir}/${f}`, 'utf8'));
  writeFileSync(`${goldenDir}/${name}.expected.jsonl`, out);
  console.log(`wrote ${name}.expected.jsonl`);
}
