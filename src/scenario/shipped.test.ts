/**
 * Every shipped scenario, in its reduced form (`smoke`: same code paths,
 * less memory and virtual time), runs to the end and does work. The full
 * runs and the determinism check are `npm run test:scenarios`
 * (scripts/check-scenarios.ts).
 */
import { describe, expect, it } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadScenario } from './load.ts';
import { SCENARIO_DIR, checkShipped, shippedScenarios } from './shipped.ts';

const dir = mkdtempSync(join(tmpdir(), 'memtwin-shipped-'));

describe('shipped scenarios (reduced form)', () => {
  it('each has a reduced form for the test suite', () => {
    const files = shippedScenarios();
    expect(files.length).toBeGreaterThanOrEqual(3);
    expect(files.filter((f) => loadScenario(join(SCENARIO_DIR, f)).base.smoke === undefined)).toEqual([]);
  });

  for (const f of shippedScenarios())
    it(`${f}: every run of the reduced form completes and does work`, async () => {
      const c = await checkShipped(f, join(dir, f), { smoke: true, workers: 2 });
      expect(c.runs).toBeGreaterThan(0);
      expect(c.problems).toEqual([]);
    }, 300_000);
});
