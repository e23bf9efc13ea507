/**
 * Issue 17's scenario (a) for a guest (scenarios/membw-guest-placement.yaml,
 * reduced form): a two-node guest whose vCPUs stream through its RAM runs
 * faster spread over both host nodes than pinned to one, because one node's
 * memory saturates (its utilisation near 1, its loaded latency up, the other
 * node idle); bound guest node by guest node it is faster still (every byte
 * local and two controllers). A guest that chases pointers one miss at a
 * time runs faster pinned than interleaved, because half of the interleaved
 * misses are remote and neither node is loaded.
 */
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { loadScenario } from './load.ts';
import { runScenario } from './run.ts';
import { SCENARIO_DIR } from './shipped.ts';

const path = join(SCENARIO_DIR, 'membw-guest-placement.yaml');

/** The final metrics of each placement of one workload of the reduced form. */
function finals(workload: string): Record<string, Record<string, number>> {
  const out: Record<string, Record<string, number>> = {};
  for (const run of loadScenario(path, undefined, { smoke: true }).runs) {
    if (run.params['workload'] !== workload) continue;
    const placement = String(run.params['placement']);
    if (placement === 'balancing') continue; // the reduced form is too short for balancing to finish
    out[placement] = runScenario(run, { file: path, warn: () => {} }).final;
  }
  expect(Object.keys(out).sort()).toEqual(['interleave', 'pinned', 'vnuma-bind']);
  return out;
}

describe('scenario (a) with a guest: membw-guest-placement.yaml (reduced form)', () => {
  it('bandwidth-bound: vnuma-bind > interleave > pinned, and pinned saturates node 0 while node 1 idles', () => {
    const f = finals('bandwidth');
    const t = (p: string) => f[p]!['throughput_per_s']!;
    expect(t('interleave')).toBeGreaterThan(1.2 * t('pinned'));
    expect(t('vnuma-bind')).toBeGreaterThan(t('interleave'));
    // The reason, as the report shows it: node 0's memory is the bottleneck when pinned.
    expect(f['pinned']!['node0.membw_util_mean']).toBeGreaterThan(0.9);
    expect(f['pinned']!['node1.membw_util_mean']).toBe(0);
    expect(f['pinned']!['node0.membw_latency_x_mean']).toBeGreaterThan(2);
    expect(f['interleave']!['node0.membw_util_mean']).toBeLessThan(0.9);
    expect(f['interleave']!['remote_access_ratio']).toBeGreaterThan(0.45);
    expect(f['vnuma-bind']!['remote_access_ratio']).toBe(0);
    // Each binding put the RAM where it said.
    expect(f['pinned']!['vm.vm0.guest_node1.host_node1_bytes']).toBe(0);
    expect(f['vnuma-bind']!['vm.vm0.guest_node1.host_node0_bytes']).toBe(0);
  }, 120_000);

  it('latency-bound: pinned > interleave, with half the interleaved misses remote and no node loaded', () => {
    const f = finals('latency');
    const t = (p: string) => f[p]!['throughput_per_s']!;
    expect(t('pinned')).toBeGreaterThan(1.2 * t('interleave'));
    expect(t('vnuma-bind')).toBe(t('pinned'));
    expect(f['interleave']!['access_ns_mean']).toBeGreaterThan(f['pinned']!['access_ns_mean']!);
    expect(f['interleave']!['remote_access_ratio']).toBeGreaterThan(0.45);
    expect(f['pinned']!['node0.membw_util_mean']).toBeLessThan(0.05);
  }, 120_000);
});
