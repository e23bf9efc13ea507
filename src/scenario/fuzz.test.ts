/**
 * A bounded fuzz of the scenario loader and runner: a few hundred mutated
 * scenarios (fuzz.ts). Loading either succeeds or throws an InputError that
 * names the file, line, column and field and says what is wrong; nothing
 * else. A scenario that loads runs (its first run, cut to 1 ms of virtual
 * time) and throws nothing but InputError, which locateRunError places in
 * the file. FUZZ_SEED=N explores other cases.
 */
import { describe, expect, it } from 'vitest';
import { fuzzBases, generateScenarioCases, generateScenarioTexts } from './fuzz.ts';
import { loadScenario, locateRunError } from './load.ts';
import { runScenario } from './run.ts';
import { InputError } from '../util/input_error.ts';
import { stringify } from 'yaml';

const SEED = Number(process.env['FUZZ_SEED'] ?? 20261206);
const CASES = 200;
const CAP_NS = 1e6;

describe('scenario fuzz generator', () => {
  it('is deterministic, and its bases (made small) all load', () => {
    expect(generateScenarioTexts(5, 20, { longString: 1000 })).toEqual(generateScenarioTexts(5, 20, { longString: 1000 }));
    expect(generateScenarioTexts(5, 20, { longString: 1000 })).not.toEqual(generateScenarioTexts(6, 20, { longString: 1000 }));
    const bases = fuzzBases();
    expect(bases.length).toBeGreaterThanOrEqual(20);
    for (const b of bases) {
      const l = loadScenario(`/fuzz/${b.name}`, stringify(b.data));
      expect(l.base.duration).toBeLessThanOrEqual(20e6);
      expect(l.runs.length).toBeLessThanOrEqual(4);
    }
  });
});

describe('mutated scenarios', () => {
  it(`load or are refused with a located InputError, and run or raise only InputError (${CASES} cases, seed ${SEED})`, () => {
    const cases = generateScenarioCases(SEED, CASES, { longString: 20_000 });
    const counts = { accepted: 0, refused: 0, refusedAtRun: 0 };
    for (const [i, c] of cases.entries()) {
      const file = `/fuzz/case-${i}.yaml`;
      const what = `case ${i} (${c.base}: ${c.mutations.join('; ')})`;
      let loaded;
      try {
        loaded = loadScenario(file, c.text);
      } catch (e) {
        if (!(e instanceof InputError)) throw new Error(`${what}: loading threw ${(e as Error).stack}`);
        expect(e.file, what).toBe(file);
        expect(e.line, `${what}: ${e.message}`).toBeGreaterThanOrEqual(1);
        expect(e.column, `${what}: ${e.message}`).toBeGreaterThanOrEqual(1);
        expect(e.field, `${what}: ${e.message}`).toBeTruthy();
        expect(e.expected.trim().length, what).toBeGreaterThan(0);
        expect(e.message.length, `${what}: a quoted value is cut`).toBeLessThan(2000);
        counts.refused++;
        continue;
      }
      counts.accepted++;
      const spec = structuredClone(loaded.runs[0]!);
      spec.scenario.duration = Math.min(spec.scenario.duration, CAP_NS);
      try {
        runScenario(spec, { file });
      } catch (e) {
        if (!(e instanceof InputError)) throw new Error(`${what}: the run threw ${(e as Error).stack}`);
        // A run's own refusals name a field; placed in the file, they have a line.
        expect(locateRunError(loaded, e).line, `${what}: ${e.message}`).toBeGreaterThanOrEqual(1);
        counts.refusedAtRun++;
      }
    }
    // The campaign exercises both sides: refusals and runs.
    expect(counts.accepted).toBeGreaterThan(CASES / 10);
    expect(counts.refused).toBeGreaterThan(CASES / 2);
  }, 240_000);
});
