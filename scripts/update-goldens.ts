/**
 * Regenerate the expected output of golden op-scripts from the simulator
 * (test/op-scripts/*.jsonl and test/op-scripts/found/*.jsonl). Run it only
 * after `memtwin diff` or `npm test` shows the script agrees with the real
 * kernel, so every expectation is one Linux confirmed.
 *
 *   npx tsx scripts/update-goldens.ts [NAME...]
 */
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { goldenDir, runGoldenSim } from '../test/golden.ts';

const only = process.argv.slice(2);
for (const dir of [goldenDir, `${goldenDir}/found`].filter((d) => existsSync(d))) {
  for (const f of readdirSync(dir).filter((f) => f.endsWith('.jsonl') && !f.endsWith('.expected.jsonl') && !f.startsWith('pending-'))) {
    const name = f.replace(/\.jsonl$/, '');
    if (only.length && !only.includes(name)) continue;
    const out = await runGoldenSim(readFileSync(`${dir}/${f}`, 'utf8'));
    writeFileSync(`${dir}/${name}.expected.jsonl`, out);
    console.log(`wrote ${dir.slice(goldenDir.length) || '.'}/${name}.expected.jsonl`);
  }
}
