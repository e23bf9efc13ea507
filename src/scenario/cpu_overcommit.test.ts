/**
 * Scenario (c), scenarios/cpu-overcommit.yaml in its reduced form: sixteen
 * vCPU threads on eight host CPUs. Alone, one guest's eight threads have a
 * CPU each; beside the second guest, floating over the CPUs or pinned two
 * to a CPU, each guest gets half the CPU time and so does about half the
 * work, and each thread spends about half its time runnable but waiting
 * (run delay), the CPUs busy throughout.
 */
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { loadScenario } from './load.ts';
import { runScenario } from './run.ts';
import { SCENARIO_DIR } from './shipped.ts';
import type { RunResult } from './result.ts';

describe('scenario (c): cpu-overcommit.yaml (reduced form)', () => {
  it('two guests of eight vCPUs on eight CPUs: each does about half of what one alone does, waiting half the time', () => {
    const path = join(SCENARIO_DIR, 'cpu-overcommit.yaml');
    const loaded = loadScenario(path, undefined, { smoke: true });
    const runs = new Map<string, RunResult>();
    for (const run of loaded.runs) runs.set(String(run.params['placement']), runScenario(run, { file: path, warn: () => {} }));
    const alone = runs.get('alone')!;
    const duration = loaded.runs[0]!.scenario.duration;
    for (const placement of ['floating', 'pinned-shared']) {
      const r = runs.get(placement)!;
      for (const vm of ['vm1', 'vm2']) {
        const share = r.final[`process.${vm}.throughput_per_s`]! / alone.final['process.vm1.throughput_per_s']!;
        expect(share).toBeGreaterThan(0.4);
        expect(share).toBeLessThan(0.6);
      }
      expect(r.final.cpu_util_mean).toBeGreaterThan(0.99);
      // Sixteen threads, each runnable all along and running half of it.
      const waited = r.final.run_delay_ns_total! / (16 * duration);
      expect(waited).toBeGreaterThan(0.4);
      expect(waited).toBeLessThan(0.6);
    }
    // Alone: eight threads, eight CPUs, little waiting.
    expect(alone.final.run_delay_ns_total! / (8 * duration)).toBeLessThan(0.15);
  }, 120_000);
});
