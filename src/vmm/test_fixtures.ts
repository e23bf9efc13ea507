/**
 * Hosts and kernels for VMM tests, with the shipped cost profile (its VM
 * entries, such as `kvm_ept_violation`, come from published measurements:
 * see their `derived` field).
 */
import { Kernel } from '../kernel/kernel.ts';
import { CostProfile } from '../sim/cost_profile.ts';
import { hostFromFile } from '../sim/host.ts';

const GiB = 2 ** 30;

/** The shipped profile (profiles/default.json). */
export function vmTestCosts(): CostProfile {
  return CostProfile.default();
}

/** A host of `nodes` nodes of `gib` GiB, `cpus` CPUs per node, 2M and 1G huge pages, with vmTestCosts. */
export function vmTestKernel(opts: { nodes?: number; gib?: number; cpus?: number; seed?: number } = {}): Kernel {
  const nodes = opts.nodes ?? 2;
  const mem = (opts.gib ?? 8) * GiB;
  const cpus = opts.cpus ?? 4;
  const host = hostFromFile({
    name: 'vmm-test',
    nodes: Array.from({ length: nodes }, (_, i) => ({ id: i, memory: mem, cpus: Array.from({ length: cpus }, (_, c) => i * cpus + c) })),
    distances: Array.from({ length: nodes }, (_, i) => Array.from({ length: nodes }, (_, j) => (i === j ? 10 : 21))),
    hugepage_sizes: ['2M', '1G'],
  });
  return new Kernel({ host, costs: vmTestCosts(), seed: opts.seed ?? 1 });
}
