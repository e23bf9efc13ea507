/**
 * The `vms` section of scenarios: loading with located errors, and one
 * small run per kind of VM scenario (balloon inflate, free page hints, free
 * page reporting, guest NUMA binding) with the numbers they must give.
 */
import { describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadScenario } from './load.ts';
import { runScenario } from './run.ts';
import { parseInfoRam } from './vms.ts';
import { InputError } from '../util/input_error.ts';
import type { RunResult } from './result.ts';

const dir = mkdtempSync(join(tmpdir(), 'memtwin-vms-'));
const MiB = 2 ** 20;
const PAGE = 4096;

function file(name: string, text: string): string {
  const f = join(dir, name);
  writeFileSync(f, text);
  return f;
}

function run(name: string, text: string, index = 0): RunResult {
  const l = loadScenario(file(name, text));
  return runScenario(l.runs[index]!, { file: l.file });
}

function loadError(text: string): string {
  try {
    loadScenario(file('bad.yaml', text));
  } catch (e) {
    if (e instanceof InputError) return e.message;
    throw e;
  }
  throw new Error('expected an error');
}

const INFLATE = `name: inflate
host:
  name: h
  nodes: [{ id: 0, memory: 1G, cpus: 0-1 }]
duration: 1s
sample: { interval: 100ms }
kernel:
  /sys/kernel/mm/transparent_hugepage/enabled: never
vms:
  - name: g
    memdevs:
      - { id: ram0, size: 64M, prealloc: true }
    vcpus: [0, 1]
    balloon: { virtio-balloon-chunks: false }
    events:
      - { at: 10ms, op: balloon, target: 32M }
      - { at: 900ms, op: qmp, command: { execute: query-balloon } }
`;

describe('scenario VMs: loading', () => {
  it('accepts a VM with memdevs, vNUMA, a balloon, workloads and events', () => {
    const l = loadScenario(file('ok.yaml', INFLATE));
    const vm = l.base.vms[0]!;
    expect(vm.machine).toBe('q35');
    expect(vm.memdevs[0]).toMatchObject({ id: 'ram0', type: 'memory-backend-ram', size: 64 * MiB, prealloc: true });
    expect(vm.balloon!['hint-encoding']).toBe('ranges');
    expect(l.base.processes).toEqual([]);
  });

  it('reports bad VM input with file, line, field and what was expected', () => {
    expect(loadError(INFLATE.replace('vcpus: [0, 1]', 'vcpus: [0, 7]'))).toMatch(
      /bad\.yaml:13:\d+: vms\[0\]\.vcpus\[1\]: CPU 7 does not exist/,
    );
    expect(loadError(INFLATE.replace('size: 64M, prealloc', 'size: 64Q, prealloc'))).toMatch(
      /bad\.yaml:12:\d+: vms\[0\]\.memdevs\[0\]\.size: expected a size/,
    );
    expect(
      loadError(INFLATE.replace('type: memory-backend-ram', '').replace('{ id: ram0,', '{ id: ram0, type: memory-backend-rom,')),
    ).toMatch(/bad\.yaml:12:\d+: vms\[0\]\.memdevs\[0\]\.type/);
    expect(loadError(INFLATE.replace('    balloon: { virtio-balloon-chunks: false }\n', ''))).toMatch(
      /bad\.yaml:15:\d+: vms\[0\]\.events\[0\]\.op: VM "g" has no balloon device/,
    );
    expect(loadError(INFLATE.replace('op: balloon, target: 32M', 'op: balloon'))).toMatch(/vms\[0\]\.events\[0\]: balloon needs target/);
    expect(loadError(INFLATE.replace('    vcpus: [0, 1]\n', '    vcpus: [0, 1]\n    numa: [{ memdev: ram1 }]\n'))).toMatch(
      /bad\.yaml:14:\d+: vms\[0\]\.numa\[0\]\.memdev: no memdev "ram1" in VM "g"/,
    );
    expect(loadError(INFLATE.replace('balloon: { virtio-balloon-chunks: false }', 'balloon: { colour: red }'))).toMatch(
      /vms\[0\]\.balloon: unknown field 'colour'/,
    );
    expect(loadError(INFLATE.replace(/vms:[\s\S]*$/, 'vms: []\n'))).toMatch(/at least one process or VM/);
  });

  it('refuses migration events that cannot run, naming the event and what it needs', () => {
    // Refused when the file is loaded, at the event.
    const runOf = (name: string, text: string): (() => unknown) => {
      return () => {
        const l = loadScenario(file(name, text));
        return runScenario(l.runs[0]!, { file: l.file });
      };
    };
    expect(runOf('fault.yaml', INFLATE.replace('op: balloon, target: 32M', 'op: migration_fault, fault: link-drop'))).toThrow(
      /fault\.yaml:\d+:\d+: vms\[0\]\.events\[0\]\.op: a migration_fault needs a migrate event of this VM at the same time or before it/,
    );
    expect(runOf('postcopy.yaml', INFLATE.replace('op: balloon, target: 32M', 'op: migrate, bandwidth: 125M, start-postcopy: 0s'))).toThrow(
      /postcopy\.yaml:\d+:\d+: vms\[0\]\.events\[0\]\.start-postcopy: start-postcopy needs postcopy-ram/,
    );
    expect(
      runOf('dst.yaml', INFLATE.replace('op: balloon, target: 32M', 'op: migrate, bandwidth: 125M, destination: { host: no-such-host }')),
    ).toThrow(/dst\.yaml:\d+:\d+: vms\[0\]\.events\[0\]\.destination\.host: cannot load host "no-such-host"/);
  });

  it('turns a configuration QEMU refuses into an input error naming the VM', () => {
    const bad = INFLATE.replace('{ id: ram0, size: 64M, prealloc: true }', '{ id: ram0, size: 3M, mem-path: /dev/hugepages }').replace(
      'type: memory-backend-ram',
      '',
    );
    // The VM is started on a probe kernel when the file is loaded: refused then, at the VM.
    expect(() => loadScenario(file('qemu.yaml', bad.replace('{ id: ram0,', '{ id: ram0, type: memory-backend-file,')))).toThrow(
      /qemu\.yaml:\d+:\d+: vms\[0\]: qemu-system-x86_64 refuses this VM: unable to map backing store for guest RAM: Cannot allocate memory/,
    ); // no 2M pages reserved in the host's hugetlb pool
  });
});

describe('scenario VMs: runs', () => {
  it('inflate with PFN arrays: ceil(pages/256) messages, one discard per page, all host memory returned', () => {
    const r = run('inflate.yaml', INFLATE);
    const pages = (32 * MiB) / PAGE;
    const f = r.final;
    expect(f['vm.g.balloon.pfns_inflated']).toBe(pages);
    expect(f['vm.g.balloon.messages']).toBe(Math.ceil(pages / 256) + 1); // + the stats buffer primed at probe
    expect(f['vm.g.balloon.kicks']).toBe(Math.ceil(pages / 256) + 1);
    expect(f['vm.g.balloon.host_syscalls']).toBe(pages); // one madvise per page, as QEMU
    expect(f['vm.g.balloon.host_returned_bytes']).toBe(32 * MiB); // anonymous RAM, preallocated: all of it comes back
    expect(f['vm.g.rss_bytes']).toBe(32 * MiB);
    expect(f['vm.g.balloon.inflate_ns']).toBeGreaterThan(0);
    const q = r.events.find((e) => e.op === 'qmp')!;
    expect(JSON.parse(q.reply!)).toEqual({ return: { actual: 32 * MiB } });
    expect(r.profile.not_measured!['vmexit_ioeventfd']).toMatch(/^published: https:/);
    const chunked = run('inflate-chunks.yaml', INFLATE.replace('virtio-balloon-chunks: false', 'virtio-balloon-chunks: true'));
    expect(chunked.final['vm.g.balloon.messages']).toBeLessThan(5);
    expect(chunked.final['vm.g.balloon.host_returned_bytes']).toBe(32 * MiB);
    expect(chunked.final['vm.g.balloon.inflate_ns']).toBeLessThan(f['vm.g.balloon.inflate_ns']!);
  });

  it('free page hints: fewer bytes and exits with ranges than with a PFN list, same pages hinted', () => {
    const text = INFLATE.replace(
      'balloon: { virtio-balloon-chunks: false }',
      'balloon: { free-page-hint: true, hint-encoding: pfn-list, hint-batch: 256 }',
    )
      .replace('{ at: 10ms, op: balloon, target: 32M }', '{ at: 10ms, op: free_page_hint, action: start }')
      .replace('{ at: 900ms, op: qmp, command: { execute: query-balloon } }', '{ at: 500ms, op: free_page_hint, action: done }');
    const list = run('hints-list.yaml', text).final;
    const ranges = run('hints-ranges.yaml', text.replace('pfn-list', 'ranges')).final;
    expect(list['vm.g.balloon.pages_hinted']).toBeGreaterThan((60 * MiB) / PAGE);
    expect(ranges['vm.g.balloon.pages_hinted']).toBe(list['vm.g.balloon.pages_hinted']);
    // 4 bytes per hinted page, 256 per message
    expect(list['vm.g.balloon.bytes_read']).toBeGreaterThanOrEqual(list['vm.g.balloon.pages_hinted']! * 4);
    expect(list['vm.g.guest.hint_messages']).toBe(Math.ceil(list['vm.g.balloon.pages_hinted']! / 256));
    expect(ranges['vm.g.balloon.bytes_read']).toBeLessThan(list['vm.g.balloon.bytes_read']! / 100);
    expect(ranges['vm.g.balloon.exits']).toBeLessThan(list['vm.g.balloon.exits']! / 4);
    // after `done` the guest has its memory back
    expect(list['vm.g.guest_free_bytes']).toBeGreaterThan(60 * MiB);
  });

  it('free page reporting returns freed guest memory to the host', () => {
    const text = INFLATE.replace('{ id: ram0, size: 64M, prealloc: true }', '{ id: ram0, size: 256M }')
      .replace('duration: 1s', 'duration: 40s')
      .replace('balloon: { virtio-balloon-chunks: false }', 'balloon: { free-page-reporting: true }')
      .replace('{ at: 10ms, op: balloon, target: 32M }', '{ at: 10ms, op: guest_alloc, size: 192M }')
      .replace('{ at: 900ms, op: qmp, command: { execute: query-balloon } }', '{ at: 100ms, op: guest_free, size: 192M }');
    const r = run('report.yaml', text);
    const rss = r.series.metrics['vm.g.rss_bytes']!;
    expect(Math.max(...rss)).toBeGreaterThanOrEqual(192 * MiB);
    // Reporting keeps 32 << page_reporting_order pages (64 MiB) unreported as its watermark.
    expect(r.final['vm.g.balloon.host_returned_bytes']).toBeGreaterThanOrEqual(128 * MiB);
    expect(r.final['vm.g.rss_bytes']).toBeLessThanOrEqual(192 * MiB - r.final['vm.g.balloon.host_returned_bytes']! + 4 * MiB);
    expect(r.final['vm.g.balloon.reported_bytes']).toBeGreaterThan(0);
  });

  it('guest NUMA binding from outside: info ram ranges, move_pages, the guest node ends on the chosen host node', () => {
    const text = `name: numa
host:
  name: h2
  nodes:
    - { id: 0, memory: 512M, cpus: 0-1 }
    - { id: 1, memory: 512M, cpus: 2-3 }
  distances: [[10, 21], [21, 10]]
duration: 200ms
sample: { interval: 20ms }
kernel:
  /sys/kernel/mm/transparent_hugepage/enabled: never
vms:
  - name: v
    memdevs:
      - { id: m0, size: 64M, prealloc: true }
      - { id: m1, size: 64M, prealloc: true }
    vcpus: [0, 2]
    numa:
      - { memdev: m0, cpus: [0] }
      - { memdev: m1, cpus: [1] }
    workloads:
      - { name: t1, vcpu: 1, guest_node: 1, workload: { pattern: uniform, mapping: ram } }
    events:
      - { at: 10ms, op: hmp, command: info ram }
      - { at: 50ms, op: move_pages, guest_node: 1, nodes: [1] }
`;
    const r = run('numa.yaml', text);
    const f = r.final;
    expect(f['vm.v.guest_node1.host_node1_bytes']).toBe(64 * MiB);
    expect(f['vm.v.guest_node1.host_node0_bytes']).toBe(0);
    expect(f['vm.v.guest_node0.host_node0_bytes']).toBe(64 * MiB);
    const info = parseInfoRam(r.events[0]!.reply!);
    expect(info.map((x) => [x.block, x.size, x.node])).toEqual([
      ['m0', 64 * MiB, 0],
      ['m1', 64 * MiB, 1],
    ]);
    const mv = r.events[1]!;
    expect([mv.op, mv.ret, mv.pages_migrated]).toEqual(['move_pages', 0, (64 * MiB) / PAGE]);
    // before the move every access of t1 was remote; afterwards local
    const t = r.threads.find((x) => x.thread === 't1')!;
    expect(t.process).toBe('v');
    expect(t.remote_accesses).toBeGreaterThan(0);
    expect(t.local_accesses).toBeGreaterThan(t.remote_accesses);
    // vmm-bind: host-nodes + policy bind place it at creation
    const bound = run(
      'numa-bind.yaml',
      text
        .replace('{ id: m1, size: 64M, prealloc: true }', '{ id: m1, size: 64M, prealloc: true, host-nodes: [1], policy: bind }')
        .replace(/      - \{ at: 50ms.*\n/, ''),
    );
    expect(bound.final['vm.v.guest_node1.host_node1_bytes']).toBe(64 * MiB);
    expect(bound.threads[0]!.remote_accesses).toBe(0);
  });

  it('guest workloads take an EPT violation per host page the EPT does not map yet, and the TLB maps the smaller page', () => {
    const text = (guestPage: string) => `name: ept
host:
  name: h
  nodes: [{ id: 0, memory: 512M, cpus: 0-1 }]
duration: 100ms
sample: { interval: 20ms }
kernel:
  /sys/kernel/mm/transparent_hugepage/enabled: always
vms:
  - name: v
    memdevs:
      - { id: m0, size: 64M, prealloc: true }
    vcpus: [0]
    workloads:
      - { name: t, vcpu: 0, guest_page_size: ${guestPage}, workload: { pattern: first-touch, mapping: ram } }
`;
    const huge = run('ept-2m.yaml', text('2M'));
    // Preallocated on 2M host pages: no host fault, one EPT violation per 2M page the task touches.
    expect(huge.final['vm.v.ept_violations']).toBe((64 * MiB) / (2 * MiB));
    expect(huge.final['huge_access_ratio']).toBe(1);
    const small = run('ept-4k.yaml', text('4K'));
    // The EPT still maps 2M (the host's page); the guest's 4K pages cap the TLB's reach.
    expect(small.final['vm.v.ept_violations']).toBe(32);
    expect(small.final['huge_access_ratio']).toBe(0);
  });

  it('migrate: precopy to a destination VM completes with the same content; free page hints skip the free memory', () => {
    const text = (hints: boolean) => `name: mig
host:
  name: h
  nodes: [{ id: 0, memory: 1G, cpus: 0-1 }]
duration: 1s
sample: { interval: 100ms }
kernel:
  /sys/kernel/mm/transparent_hugepage/enabled: never
vms:
  - name: g
    memdevs:
      - { id: ram0, size: 64M }
    vcpus: [0]
    balloon: { free-page-hint: ${hints} }
    events:
      - { at: 10ms, op: guest_alloc, size: 48M }
      - { at: 20ms, op: guest_free, size: 32M }
      - { at: 50ms, op: migrate, bandwidth: 125M, max-bandwidth: 125M }
`;
    const plain = run('mig-plain.yaml', text(false)).final;
    const hinted = run('mig-hints.yaml', text(true)).final;
    for (const f of [plain, hinted]) expect([f['vm.g.migration.completed'], f['vm.g.migration.pages_differing']]).toEqual([1, 0]);
    // Without hints the 48 MiB the guest touched go with their contents, the 16 MiB it never touched as zero pages.
    expect(plain['vm.g.migration.ram.normal']).toBe((48 * MiB) / PAGE);
    expect(plain['vm.g.migration.ram.duplicate']).toBe((16 * MiB) / PAGE);
    // With hints the free memory is skipped: what the guest still uses (16 MiB) is sent, little else.
    expect(hinted['vm.g.migration.ram.normal']).toBe((16 * MiB) / PAGE);
    expect(hinted['vm.g.migration.ram.transferred']).toBeLessThan(plain['vm.g.migration.ram.transferred']! / 2);
    expect(hinted['vm.g.migration.total-time']).toBeLessThan(plain['vm.g.migration.total-time']!);
    // With init_on_alloc the hinting zeroes every page it hints: they are written, so they go as zero pages, not skipped.
    const zeroed = run('mig-ioa.yaml', text(true).replace('    events:', '    guest: { init_on_alloc: true }\n    events:')).final;
    expect([zeroed['vm.g.migration.completed'], zeroed['vm.g.migration.pages_differing']]).toEqual([1, 0]);
    expect(zeroed['vm.g.migration.ram.normal']).toBe((16 * MiB) / PAGE);
    expect(zeroed['vm.g.migration.ram.duplicate']).toBe((48 * MiB) / PAGE);
    expect(zeroed['vm.g.balloon.pages_hinted']).toBeGreaterThan((47 * MiB) / PAGE);
  });

  it('migrate with postcopy: the guest workload moves to the destination, blocks on pages, and nothing is lost', () => {
    const text = (preempt: boolean) => `name: pc
host:
  name: h
  nodes: [{ id: 0, memory: 2G, cpus: 0-3 }]
duration: 1500ms
sample: { interval: 100ms }
vms:
  - name: g
    memdevs:
      - { id: ram0, size: 256M }
    vcpus: [0, 1]
    workloads:
      - name: w
        vcpu: 0
        count: 2
        guest_node: 0
        guest_page_size: 4K
        workload:
          phases:
            - { pattern: first-touch, mapping: ram }
            - { pattern: uniform, mapping: ram, read_ratio: 0.5 }
    events:
      - { at: 300ms, op: migrate, bandwidth: 1250M, latency: 50us, capabilities: [postcopy-ram${preempt ? ', postcopy-preempt' : ''}], start-postcopy: 0s }
`;
    const plain = run('pc-plain.yaml', text(false)).final;
    const pre = run('pc-preempt.yaml', text(true)).final;
    for (const f of [plain, pre]) {
      expect([
        f['vm.g.migration.completed'],
        f['vm.g.migration.pages_differing'],
        f['vm.g.migration.vm_lost'],
        f['threads_stopped'],
      ]).toEqual([1, 0, 0, 0]);
      expect(f['vm.g.migration.ram.postcopy-requests']).toBeGreaterThan(10);
      expect(f['vm.g.migration.postcopy.faults']).toBeGreaterThanOrEqual(f['vm.g.migration.ram.postcopy-requests']!);
    }
    // Requests wait behind 4 MiB of socket buffer without preempt (3.4 ms at 1250 MB/s), not with it.
    expect(plain['vm.g.migration.postcopy.latency_p50_ns']).toBeGreaterThan(3_000_000);
    expect(pre['vm.g.migration.postcopy.latency_p50_ns']).toBeLessThan(500_000);
  });

  it('migrate to another host: a destination with its own NUMA topology and placement', () => {
    const f = run(
      'dst-host.yaml',
      `name: dsthost
host:
  name: src
  nodes: [{ id: 0, memory: 1G, cpus: 0-1 }]
duration: 1s
sample: { interval: 100ms }
vms:
  - name: g
    memdevs:
      - { id: ram0, size: 64M }
    vcpus: [0]
    workloads:
      - { name: w, vcpu: 0, guest_node: 0, guest_page_size: 4K, workload: { pattern: uniform, mapping: ram, read_ratio: 0.5, think: 10us } }
    events:
      - at: 100ms
        op: migrate
        bandwidth: 1250M
        max-bandwidth: 1250M
        destination:
          host:
            name: dst
            nodes: [{ id: 0, memory: 1G, cpus: 0-1 }, { id: 1, memory: 1G, cpus: 2-3 }]
            distances: [[10, 21], [21, 10]]
          memdevs: [{ id: ram0, size: 64M, host-nodes: [1], policy: bind }]
          vcpus: [0]
`,
    ).final;
    expect([f['vm.g.migration.completed'], f['vm.g.migration.pages_differing']]).toEqual([1, 0]);
    // On the destination the guest's RAM is on node 1 (bound) while its vCPU runs on node 0: its accesses there are remote.
    expect(f['vm.g.dst.guest_node0.host_node1_bytes']).toBe(64 * MiB);
    expect(f['vm.g.dst.guest_node0.host_node0_bytes']).toBe(0);
    expect(f['remote_access_ratio']).toBeGreaterThan(0.3);
    expect(f['threads_stopped']).toBe(0);
  });
});
