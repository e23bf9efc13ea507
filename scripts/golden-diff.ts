/** Show how the simulator's output of golden scripts differs from their expectation: npx tsx scripts/golden-diff.ts NAME... */
import { readFileSync } from 'node:fs';
import { goldenDir, runGoldenSim } from '../test/golden.ts';

for (const name of process.argv.slice(2)) {
  const base = name.includes('/') ? name.replace(/\.jsonl$/, '') : `${goldenDir}/${name}`;
  const got = (await runGoldenSim(readFileSync(`${base}.jsonl`, 'utf8'))).split('\n');
  const exp = readFileSync(`${base}.expected.jsonl`, 'utf8').split('\n');
  got.forEach((l, i) => {
    if (l !== exp[i]) console.log(`${name} line ${i + 1}\n  now:      ${l}\n  expected: ${exp[i]}`);
  });
}
