/**
 * Random op-scripts (src/opscript/gen.ts): on the simulator they never
 * crash or produce invalid lines and leave the kernel consistent; on the
 * real kernel they agree with the simulator. `npm run difftest -- --runs N`
 * runs the same property at scale and saves shrunk counterexamples under
 * test/op-scripts/found/.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { postcopyScriptArb, pressureScriptArb, scriptArb } from '../src/opscript/gen.ts';
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

  it('memory-pressure scripts are valid and run on the simulator consistently (swap, memory cgroups, OOM kills)', async () => {
    await fc.assert(
      fc.asyncProperty(pressureScriptArb, async (text) => {
        const backend = new SimBackend(smallKernel({ nodes: 2, mib: 256 }));
        const r = new ScriptRunner(backend);
        await r.run(text);
        expect(r.invalid).toBe(false);
        expect(verifyKernel(backend.k)).toEqual([]);
      }),
      { numRuns: 60, seed: 20261207 },
    );
  });

  it.skipIf(linuxBackendUnavailable() !== undefined)(
    'memory-pressure scripts do on the real kernel what the generator means (12 scripts, fixed seed): no kill below the limit, the OOM shape above it',
    async () => {
      const seen = { swap: 0, oom: 0, kill: 0 };
      await fc.assert(
        fc.asyncProperty(pressureScriptArb, async (text) => {
          const lin = await runLinux(text);
          expect(lin.failed).toBeUndefined();
          expect(lin.invalid).toBe(false);
          const res = lin.results.filter((l) => !('summary' in l));
          const ops = text
            .trim()
            .split('\n')
            .map((l) => JSON.parse(l) as Record<string, unknown>);
          if (ops[0]!.op === 'sysfs' && ops.some((o) => o.op === 'swap')) {
            // swap: the area is made; nothing is killed
            seen.swap++;
            expect(res.find((l) => l.op === 'swap')).toMatchObject({ ret: 0 });
            expect(res.filter((l) => l.signal !== undefined || l.killed !== undefined)).toEqual([]);
            return;
          }
          // oom: the one touch of the whole mapping is the only op that may kill
          const big = ops.findIndex((o) => o.op === 'touch' && o.len === '64M');
          const killedAt = res.findIndex((l) => l.signal !== undefined || l.killed !== undefined);
          const stats = res.filter((l) => l.op === 'cgroup_stat');
          seen.oom++;
          if (big < 0) {
            expect(killedAt).toBe(-1);
            for (const st of stats) expect(st.events).toEqual({ oom: 0, oom_kill: 0 });
            return;
          }
          seen.kill++;
          expect(killedAt).toBe(big);
          expect(res[big]).toMatchObject({ ret: -1, signal: 'SIGKILL' });
          for (const [i, o] of ops.entries())
            if (i > big && o.in === 'p') expect(res[i]).toEqual({ i, op: o.op, ret: -1, killed: 'SIGKILL' });
            else if (i > big && o.in === 'q') expect(res[i]!.ret).not.toBe(-1);
          expect(stats.at(-1)!.events).toEqual({ oom: 1, oom_kill: 1 });
        }),
        { numRuns: 12, seed: 20261207 },
      );
      // both kinds ran, and at least one kill
      expect(seen.swap).toBeGreaterThan(0);
      expect(seen.kill).toBeGreaterThan(0);
      expect(seen.oom).toBeGreaterThan(seen.kill);
    },
  );
});
