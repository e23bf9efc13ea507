/**
 * Hosts and kernels for VMM tests. The shipped profile has no measured
 * `kvm_ept_violation` yet (this development VM cannot run KVM guests), so
 * tests use a copy of it with a placeholder entry that says so.
 */
import { Kernel } from '../kernel/kernel.ts';
import { CostProfile } from '../sim/cost_profile.ts';
import { hostFromFile } from '../sim/host.ts';

const GiB = 2 ** 30;

/**
 * The default profile plus `kvm_ept_violation`, a placeholder for tests:
 * the null-syscall time (a lower bound of a VM exit round trip), marked
 * as not measured.
 */
let cached: CostProfile | undefined;
export function vmTestCosts(): CostProfile {
  if (cached) return cached;
  const base = CostProfile.default();
  const stand = base.data.costs['syscall_null']!;
  cached = new CostProfile({
    ...base.data,
    costs: {
      ...base.data.costs,
      kvm_ept_violation: { ...stand, method: 'placeholder for tests: syscall_null, not measured (needs a KVM host)' },
    },
  });
  return cached;
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
