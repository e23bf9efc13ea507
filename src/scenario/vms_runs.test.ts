/**
 * A guest_alloc's pages as runs (GuestPageAlloc.allocBlockPages, Vm.writePages,
 * memory.ts writeFaultAnonRun) against the page-by-page path they replace
 * (peekBlockPages finding no block every time): on random small scenarios (one or
 * two VMs and host nodes, THP modes, host memory policies, a memory cgroup,
 * hosts too small for their guests, page cache and anonymous allocations,
 * frees between them, a host process touching memory beside them) the run's
 * result and the whole state of the host kernel(s) and of each guest kernel
 * (frames, LRU order, page tables, EPT, vmstat, memcg and meminfo counters,
 * the buddy allocators, the clock) are identical.
 */
import { describe, expect, it, vi } from 'vitest';
import fc from 'fast-check';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fieldDigests, stateDigest } from '../testing/state_digest.ts';

const dir = mkdtempSync(join(tmpdir(), 'memtwin-vmruns-'));

interface Case {
  hostMiB: number;
  nodes: number;
  thp: 'never' | 'always' | 'madvise';
  vms: {
    ramMiB: number;
    vcpus: number;
    policy: 'none' | 'bind' | 'interleave';
    cgroup: boolean;
    events: { atMs: number; op: 'guest_alloc' | 'guest_free'; mib: number; vcpu: number; pageCache: boolean }[];
  }[];
  hostProcess: boolean;
}

function yaml(c: Case): string {
  const nodes = Array.from({ length: c.nodes }, (_, i) => `    - { id: ${i}, memory: ${c.hostMiB}M, cpus: ${2 * i}-${2 * i + 1} }`).join(
    '\n',
  );
  const vms = c.vms
    .map((v, i) => {
      const pol =
        v.policy === 'none' ? '' : `, policy: ${v.policy}, host-nodes: [${Array.from({ length: c.nodes }, (_, n) => n).join(', ')}]`;
      const events = v.events
        .map((e) =>
          e.op === 'guest_alloc'
            ? `      - { at: ${e.atMs}ms, op: guest_alloc, size: ${e.mib}M, vcpu: ${Math.min(e.vcpu, v.vcpus - 1)}${e.pageCache ? ', page_cache: true' : ''} }`
            : `      - { at: ${e.atMs}ms, op: guest_free, size: ${e.mib}M }`,
        )
        .join('\n');
      return `  - name: vm${i}
    memdevs:
      - { id: ram0, size: ${v.ramMiB}M${pol} }
    vcpus: [${Array.from({ length: v.vcpus }, (_, j) => (i + j) % (2 * c.nodes)).join(', ')}]${v.cgroup ? '\n    cgroup: capped' : ''}
    events:
${events}`;
    })
    .join('\n');
  const proc = c.hostProcess
    ? `processes:
  - name: toucher
    mappings:
      - { name: heap, size: 32M }
    threads:
      - { name: w, cpu: 1, workload: { pattern: first-touch, mapping: heap } }
`
    : '';
  return `name: vmruns
seed: 5
host:
  name: h
  nodes:
${nodes}
duration: 60ms
sample: { interval: 20ms }
kernel:
  /sys/kernel/mm/transparent_hugepage/enabled: ${c.thp}
${c.vms.some((v) => v.cgroup) ? 'cgroups:\n  - { name: capped, memory_max: 48M }\n' : ''}${proc}vms:
${vms}
`;
}

/**
 * Run the case in fresh module instances (vi.resetModules: module-level
 * counters such as MmStruct ids start again, so two runs are comparable),
 * with the page-by-page path (`runs` false: peekBlockPages finds no block
 * every time) or the run path. Returns the result, the digests of every host and
 * guest kernel it made, how many times Vm.writePages ran and how many
 * runs of pages the host faulted in at once.
 */
async function runCase(
  c: Case,
  runs: boolean,
): Promise<{ result: string; kernels: string[]; guests: string[]; writes: number; bulk: number }> {
  vi.resetModules();
  const { loadScenario } = await import('./load.ts');
  const { runScenario } = await import('./run.ts');
  const { Kernel } = await import('../kernel/kernel.ts');
  const { GuestKernel } = await import('../guest/kernel.ts');
  const { GuestPageAlloc } = await import('../guest/page_alloc.ts');
  const { Vm } = await import('../vmm/vm.ts');
  const kernels: InstanceType<typeof Kernel>[] = [];
  const guests = new Set<InstanceType<typeof GuestKernel>>();
  let writes = 0;
  let bulk = 0;
  const enable = Kernel.prototype.enableScheduler;
  Kernel.prototype.enableScheduler = function (this: InstanceType<typeof Kernel>) {
    kernels.push(this);
    return enable.call(this);
  };
  const faultInto = GuestKernel.prototype.faultInto;
  GuestKernel.prototype.faultInto = function (this: InstanceType<typeof GuestKernel>, ...args: Parameters<typeof faultInto>) {
    guests.add(this);
    return faultInto.apply(this, args);
  };
  const writePages = Vm.prototype.writePages;
  Vm.prototype.writePages = function (this: InstanceType<typeof Vm>, ...args: Parameters<typeof writePages>) {
    writes++;
    return writePages.apply(this, args);
  };
  // Runs the host faulted in at once (Vm's chargeRun follows each writeFaultAnonRun that did).
  const proto = Vm.prototype as unknown as { chargeRun: (...a: unknown[]) => unknown };
  const chargeRun = proto.chargeRun;
  proto.chargeRun = function (this: unknown, ...args: unknown[]) {
    bulk++;
    return chargeRun.apply(this, args);
  };
  if (!runs) GuestPageAlloc.prototype.peekBlockPages = () => -1;
  const f = join(dir, 'case.yaml');
  writeFileSync(f, yaml(c));
  let result: string;
  try {
    const l = loadScenario(f);
    result = JSON.stringify(runScenario(l.runs[0]!, { file: f }));
  } catch (e) {
    result = `threw: ${(e as Error).message}`;
  }
  return {
    result,
    kernels: kernels.map((k) => JSON.stringify(fieldDigests(k))),
    guests: [...guests].map((g) => stateDigest([g.pages, g.vmEvents, g.pageCachePages])),
    writes,
    bulk,
  };
}

const caseArb: fc.Arbitrary<Case> = fc.record({
  hostMiB: fc.constantFrom(192, 384, 1024),
  nodes: fc.integer({ min: 1, max: 2 }),
  thp: fc.constantFrom('never', 'never', 'always', 'madvise'),
  vms: fc.array(
    fc.record({
      ramMiB: fc.integer({ min: 8, max: 80 }).map((x) => 4 * x),
      vcpus: fc.integer({ min: 1, max: 2 }),
      policy: fc.constantFrom('none', 'none', 'bind', 'interleave'),
      cgroup: fc.boolean(),
      events: fc.array(
        fc.record({
          atMs: fc.integer({ min: 1, max: 40 }),
          op: fc.constantFrom('guest_alloc', 'guest_alloc', 'guest_free'),
          mib: fc.integer({ min: 1, max: 120 }),
          vcpu: fc.integer({ min: 0, max: 1 }),
          pageCache: fc.constantFrom(false, false, true),
        }),
        { minLength: 1, maxLength: 4 },
      ),
    }),
    { minLength: 1, maxLength: 2 },
  ),
  hostProcess: fc.boolean(),
});

describe('guest_alloc as runs of pages', () => {
  it('property: the same result and host and guest state as page by page', async () => {
    let exercised = 0;
    let bulk = 0;
    await fc.assert(
      fc.asyncProperty(caseArb, async (c) => {
        const fast = await runCase(c, true);
        const slow = await runCase(c, false);
        expect(slow.writes + slow.bulk).toBe(0);
        if (fast.writes > 0) exercised++;
        bulk += fast.bulk;
        if (fast.result !== slow.result) {
          let i = 0;
          while (fast.result[i] === slow.result[i]) i++;
          const lo = Math.max(0, i - 300);
          expect(fast.result.slice(lo, i + 200), JSON.stringify(c)).toBe(slow.result.slice(lo, i + 200));
        }
        for (let i = 0; i < fast.kernels.length; i++) {
          const a = JSON.parse(fast.kernels[i]!) as Record<string, string>;
          const b = JSON.parse(slow.kernels[i] ?? '{}') as Record<string, string>;
          const differ = Object.keys(a).filter((key) => a[key] !== b[key]);
          expect(differ, `kernel ${i}: fields that differ`).toEqual([]);
        }
        expect(fast.kernels.length).toBe(slow.kernels.length);
        expect(fast.guests).toEqual(slow.guests);
      }),
      {
        numRuns: 30,
        examples: [
          // A plain first touch, no cgroup: the host faults runs in at once (bulk), whatever the random cases do.
          [
            {
              hostMiB: 384,
              nodes: 1,
              thp: 'never',
              vms: [
                {
                  ramMiB: 64,
                  vcpus: 1,
                  policy: 'none',
                  cgroup: false,
                  events: [{ atMs: 1, op: 'guest_alloc', mib: 16, vcpu: 0, pageCache: false }],
                },
              ],
              hostProcess: false,
            },
          ],
          [
            {
              hostMiB: 192,
              nodes: 1,
              thp: 'never',
              vms: [
                {
                  ramMiB: 44,
                  vcpus: 1,
                  policy: 'none',
                  cgroup: true,
                  events: [{ atMs: 1, op: 'guest_alloc', mib: 44, vcpu: 0, pageCache: false }],
                },
                {
                  ramMiB: 32,
                  vcpus: 1,
                  policy: 'none',
                  cgroup: true,
                  events: [{ atMs: 1, op: 'guest_alloc', mib: 5, vcpu: 0, pageCache: false }],
                },
              ],
              hostProcess: false,
            },
          ],
          [
            {
              hostMiB: 192,
              nodes: 1,
              thp: 'never',
              vms: [
                {
                  ramMiB: 52,
                  vcpus: 1,
                  policy: 'none',
                  cgroup: true,
                  events: [
                    { atMs: 1, op: 'guest_alloc', mib: 52, vcpu: 0, pageCache: false },
                    { atMs: 1, op: 'guest_alloc', mib: 1, vcpu: 0, pageCache: false },
                  ],
                },
              ],
              hostProcess: false,
            },
          ],
        ],
      },
    );
    expect(exercised).toBeGreaterThan(0);
    expect(bulk).toBeGreaterThan(0);
  }, 600_000);
});
