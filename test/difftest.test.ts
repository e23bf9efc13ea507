/**
 * Random op-scripts (src/opscript/gen.ts): on the simulator they never
 * crash or produce invalid lines and leave the kernel consistent; on the
 * real kernel they agree with the simulator. `npm run difftest -- --runs N`
 * runs the same property at scale and saves shrunk counterexamples under
 * test/op-scripts/found/.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { postcopyScriptArb, scriptArb } from '../src/opscript/gen.ts';
import { runLinux, runSim } from '../src/opscript/difftest.ts';
import { diffRuns } from '../src/opscript/diff.ts';
import { linuxBackendUnavailable } from '../src/opscript/linux_backend.ts';
import { SimBackend } from '../src/opscript/sim_backend.ts';
import { ScriptRunner } from '../src/opscript/runner.ts';
import { verifyKernel } from '../src/kernel/debug_vm.ts';
import { smallKernel } from '../src/testing/fixtures.ts';

describe('random op-scripts', () => {
  it('run on the simulator without invalid lines and leave the kernel consistent', async () => {
    await fc.assert(
      fc.asyncProperty(scriptArb, async (text) => {
        const backend = new SimBackend(smallKernel({ nodes: 2, mib: 256 }));
        const r = new ScriptRunner(backend);
        await r.run(text);
        expect(r.invalid).toBe(false);
        expect(verifyKernel(backend.k)).toEqual([]);
      }),
      { numRuns: 150, seed: 20261122 },
    );
  });

  it.skipIf(linuxBackendUnavailable() !== undefined)('agree with the real kernel (25 scripts, fixed seed)', async () => {
    await fc.assert(
      fc.asyncProperty(scriptArb, async (text) => {
        const d = diffRuns((await runSim(text)).results, (await runLinux(text)).results);
        expect(d.disagreements).toEqual([]);
      }),
      { numRuns: 25, seed: 20261122 },
    );
  });

  it('postcopy-like scripts (threads blocked in userfaults, anonymous and 2M hugetlb) run on the simulator consistently', async () => {
    await fc.assert(
      fc.asyncProperty(postcopyScriptArb, async (text) => {
        const backend = new SimBackend(smallKernel({ nodes: 2, mib: 256 }));
        const r = new ScriptRunner(backend);
        await r.run(text);
        expect(r.invalid).toBe(false);
        expect(verifyKernel(backend.k)).toEqual([]);
      }),
      { numRuns: 60, seed: 20261122 },
    );
  });

  it.skipIf(linuxBackendUnavailable() !== undefined)(
    'postcopy-like scripts agree with the real kernel (8 scripts, fixed seed)',
    async () => {
      await fc.assert(
        fc.asyncProperty(postcopyScriptArb, async (text) => {
          const d = diffRuns((await runSim(text)).results, (await runLinux(text)).results);
          expect(d.disagreements).toEqual([]);
        }),
        { numRuns: 8, seed: 20261122 },
      );
    },
  );
});
