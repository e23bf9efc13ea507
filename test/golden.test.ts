/**
 * Golden op-scripts (test/op-scripts/): the simulator must print exactly
 * the expected output, and the same script on the real kernel of this
 * machine must agree with it on every compared field. The second part is
 * what confirms each expectation; it is skipped, with a notice, where the
 * real-kernel backend cannot run (not root, not Linux, executor not built).
 */
import { describe, expect, it } from 'vitest';
import { readdirSync, readFileSync, existsSync } from 'node:fs';
import { goldenDir, runGoldenSim } from './golden.ts';
import { linuxBackendUnavailable } from '../src/opscript/linux_backend.ts';
import { runLinux } from '../src/opscript/difftest.ts';
import { diffRuns } from '../src/opscript/diff.ts';

const dirs = [goldenDir, `${goldenDir}/found`].filter((d) => existsSync(d));
const scripts = dirs.flatMap((d) =>
  readdirSync(d)
    .filter((f) => f.endsWith('.jsonl') && !f.endsWith('.expected.jsonl') && !f.startsWith('pending-'))
    .map((f) => `${d}/${f}`),
);
const noLinux = linuxBackendUnavailable();
if (noLinux) console.warn(`\n*** golden differential tests SKIPPED: ${noLinux} ***\n`);

describe('golden op-scripts on the simulator', () => {
  it('has golden scripts', () => expect(scripts.length).toBeGreaterThan(10));
  for (const path of scripts) {
    const name = path.slice(goldenDir.length + 1);
    it(`${name} prints exactly its expected output`, async () => {
      const text = readFileSync(path, 'utf8');
      const expected = readFileSync(path.replace(/\.jsonl$/, '.expected.jsonl'), 'utf8');
      expect(await runGoldenSim(text)).toBe(expected);
    });
  }
});

describe.skipIf(noLinux !== undefined)('golden op-scripts agree with the real kernel', () => {
  for (const path of scripts) {
    const name = path.slice(goldenDir.length + 1);
    it(`${name}: simulator and Linux agree on every compared field`, async () => {
      const text = readFileSync(path, 'utf8');
      const expected = readFileSync(path.replace(/\.jsonl$/, '.expected.jsonl'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as Record<string, unknown>);
      // A script whose outcome on Linux depends on I/O timing says so in a `# timing:` line: it gets up to three
      // runs, one of which must agree (a model that is wrong never does); every other script gets one.
      const runs = /^# timing: /m.test(text) ? 3 : 1;
      let d = diffRuns(expected, (await runLinux(text)).results);
      for (let r = 1; r < runs && d.disagreements.length; r++) d = diffRuns(expected, (await runLinux(text)).results);
      expect(d.disagreements).toEqual([]);
      expect(d.compared).toBeGreaterThan(0);
    });
  }
});
