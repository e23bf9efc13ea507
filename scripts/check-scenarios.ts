/**
 * The shipped scenarios in full, as a nightly check (the test suite runs
 * only their reduced forms):
 *
 *   npm run test:scenarios [-- NAME.yaml ...] [--workers N]
 *
 * Every run of each scenario must complete and do work, and the first run
 * of each, rerun in this process with the same seed, must give the
 * result.json it wrote byte for byte. Prints one line per scenario as it
 * finishes; exits 1 if any check failed.
 */
import { availableParallelism, tmpdir } from 'node:os';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { checkShipped, shippedScenarios } from '../src/scenario/shipped.ts';

const argv = process.argv.slice(2);
const wi = argv.indexOf('--workers');
const workers = wi >= 0 ? Number(argv[wi + 1]) : Math.max(2, availableParallelism());
const named = argv.filter((a, i) => a.endsWith('.yaml') && argv[i - 1] !== '--workers');
const files = named.length ? named : shippedScenarios();
const dir = mkdtempSync(join(tmpdir(), 'memtwin-check-scenarios-'));
let failed = 0;
const t0 = performance.now();
for (const f of files) {
  const t = performance.now();
  const c = await checkShipped(f, join(dir, f), { smoke: false, workers, determinism: true });
  const bad = [...c.problems, ...(c.identical ? [] : ['the rerun of the first run differs from what was written'])];
  if (bad.length) failed++;
  console.log(
    `${bad.length ? 'FAIL' : 'ok  '} ${f.padEnd(34)} ${String(c.runs).padStart(2)} runs  ${((performance.now() - t) / 1000).toFixed(1).padStart(6)} s` +
      bad.map((b) => `\n     ${b}`).join(''),
  );
}
rmSync(dir, { recursive: true, force: true });
console.log(`${files.length - failed} of ${files.length} scenarios passed in ${((performance.now() - t0) / 60000).toFixed(1)} min`);
process.exitCode = failed ? 1 : 0;
