/**
 * VMs on the simulated host: GPA -> HVA -> host frame for every backend and
 * both sides of the PCI hole, the EPT (violations, host faults, mapping
 * sizes), vCPU placement, vNUMA, and QEMU's configuration errors.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { vmTestKernel } from './test_fixtures.ts';
import { Vm, type VmConfig } from './vm.ts';
import { QemuError, type MemoryBackendProps } from './memory_backend.ts';
import { MADV, PAGE_SIZE, PMD_SIZE, PUD_SIZE } from '../kernel/uapi.ts';
import { followPage } from '../kernel/memory.ts';
import { sysMigratePages } from '../kernel/mempolicy.ts';
import { verifyKernel } from '../kernel/debug_vm.ts';
import type { Kernel } from '../kernel/kernel.ts';

const MiB = 2 ** 20;
const GiB = 2 ** 30;

function pool(k: Kernel, kb: 2048 | 1048576, n: number, node?: number): void {
  const dir = node === undefined ? '/sys/kernel/mm' : `/sys/devices/system/node/node${node}`;
  expect(k.sysfs.write(`${dir}/hugepages/hugepages-${kb}kB/nr_hugepages`, String(n))).toBe(0);
}

/** The expected block offset of a GPA in a q35 guest whose RAM is split at `below`. */
const offsetOf = (gpa: number, below: number): number => (gpa < below ? gpa : gpa - 4 * GiB + below);

describe('GPA -> HVA -> host frame', () => {
  const backends: [string, MemoryBackendProps, number, (k: Kernel) => void][] = [
    ['anonymous (THP)', { 'qom-type': 'memory-backend-ram', id: 'mem', size: 3 * GiB }, PMD_SIZE, () => {}],
    ['memfd (shmem)', { 'qom-type': 'memory-backend-memfd', id: 'mem', size: 3 * GiB }, PAGE_SIZE, () => {}],
    [
      'hugetlbfs 2M',
      { 'qom-type': 'memory-backend-file', id: 'mem', size: 3 * GiB, 'mem-path': '/dev/hugepages', share: true },
      PMD_SIZE,
      (k) => pool(k, 2048, 1536),
    ],
    [
      'hugetlbfs 1G',
      { 'qom-type': 'memory-backend-file', id: 'mem', size: 3 * GiB, 'mem-path': '/dev/hugepages1G', share: true },
      PUD_SIZE,
      (k) => pool(k, 1048576, 3),
    ],
  ];
  for (const [what, props, pageSize, setup] of backends)
    it(`${what}: below and above the PCI hole`, () => {
      const k = vmTestKernel();
      setup(k);
      const vm = new Vm(k, { m: 3 * GiB, 'memory-backend': 'mem', objects: [props], smp: 2 });
      expect(vm.split).toMatchObject({ below4g: 2 * GiB, above4g: GiB });
      const gpas = [0, 0x5000, 2 * GiB - PAGE_SIZE, 4 * GiB, 4 * GiB + 0x123000, 5 * GiB - PAGE_SIZE];
      gpas.forEach((gpa, i) => {
        const fill = 0x10 + i;
        vm.access(i % 2, gpa, 1, 1, true, fill);
        const t = vm.translate(gpa)!;
        expect(t.block.idstr).toBe('mem');
        expect(t.offset).toBe(offsetOf(gpa, 2 * GiB));
        expect(t.hva).toBe(t.block.host + t.offset);
        expect(vm.gpaOfHva(t.hva)).toBe(gpa);
        const frame = vm.hostFrame(gpa);
        expect(frame).toMatchObject({ pfn: followPage(vm.process.mm, t.hva) });
        expect(k.mem.token((frame as { pfn: number }).pfn) & 0xff).toBe(fill);
        expect(vm.peek(gpa)).toBe(fill);
        expect(vm.hostMappingSize(gpa)).toBe(pageSize);
        expect(vm.eptMappingSize(gpa)).toBe(pageSize);
      });
      expect(vm.translate(3 * GiB)).toBeUndefined(); // the PCI hole
      expect(() => vm.access(0, 3 * GiB, 1, 1, false)).toThrow('GPA 0xc0000000 is not guest RAM');
      expect(() => vm.access(0, 2 * GiB - PAGE_SIZE, 2 * PAGE_SIZE, PAGE_SIZE, false)).toThrow('is not guest RAM');
    });

  it('pc (i440fx): 3.5 GiB splits at 3 GiB', () => {
    const k = vmTestKernel();
    const vm = new Vm(k, { machine: 'pc', m: 3.5 * GiB });
    expect(vm.ramRanges()).toEqual([
      { gpa: 0, size: 3 * GiB, node: 0 },
      { gpa: 4 * GiB, size: GiB / 2, node: 0 },
    ]);
    vm.access(0, 4 * GiB, PAGE_SIZE, PAGE_SIZE, true, 9);
    expect(vm.translate(4 * GiB)!.offset).toBe(3 * GiB);
    expect(vm.peek(4 * GiB)).toBe(9);
    expect(vm.ramList.blocks.map((b) => b.idstr)).toEqual(['pc.ram']);
  });
});

describe('the EPT', () => {
  function anonVm(cfg: Partial<VmConfig> = {}): { k: Kernel; vm: Vm } {
    const k = vmTestKernel();
    return { k, vm: new Vm(k, { m: 64 * MiB, smp: 2, ...cfg }) };
  }

  it('exits once per EPT leaf; the host faults only what it has not backed', () => {
    const { k, vm } = anonVm();
    const ept = k.costs.nsOf('kvm_ept_violation');
    const t0 = k.clock.now();
    const ns = vm.access(0, 0, 4 * MiB, PAGE_SIZE, true, 1);
    expect(vm.stats).toEqual({ eptViolations: 2, hostFaults: 2 }); // two THPs
    expect(ns).toBeCloseTo(2 * ept + 2 * k.costs.ns('fault_thp_2m_write'), 3);
    expect(k.clock.now() - t0).toBe(Math.round(ns));
    expect(vm.access(1, 0, 4 * MiB, PAGE_SIZE, false)).toBe(0); // mapped: no exit, no cost here
    expect(vm.stats.eptViolations).toBe(2);
  });

  it('an access inside a page builds the entry of the page it falls in: later accesses anywhere in the page do not exit', () => {
    for (const thp of ['never', 'always']) {
      const { k, vm } = anonVm();
      k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', thp);
      vm.access(0, 12 * MiB + 3 * PAGE_SIZE + 1000, 8, 8, true, 7); // a cache line mid-page, in the 4th page of a 2M
      expect(vm.stats.eptViolations).toBe(1);
      vm.access(0, 12 * MiB + 3 * PAGE_SIZE + 1000, 8, 8, false);
      vm.access(0, 12 * MiB + 3 * PAGE_SIZE, 8, 8, true, 7);
      vm.access(0, 12 * MiB + 4 * PAGE_SIZE - 64, 8, 8, false);
      expect(vm.stats.eptViolations).toBe(1);
      // With a THP the one entry maps the whole 2M; without, the next page is a page of its own.
      vm.access(0, 12 * MiB + 5 * PAGE_SIZE + 8, 8, 8, true, 7);
      expect(vm.stats.eptViolations).toBe(thp === 'always' ? 1 : 2);
      expect(vm.peek(12 * MiB + 3 * PAGE_SIZE + 1000)).toBe(7);
    }
  });

  it('a read maps the zero page read-only; the first write exits again', () => {
    const { k, vm } = anonVm();
    k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'never');
    vm.access(0, 8 * MiB, PAGE_SIZE, PAGE_SIZE, false);
    expect(vm.hostFrame(8 * MiB)).toBe('zero');
    vm.access(0, 8 * MiB, PAGE_SIZE, PAGE_SIZE, false);
    expect(vm.stats.eptViolations).toBe(1);
    vm.access(0, 8 * MiB, PAGE_SIZE, PAGE_SIZE, true, 3);
    expect(vm.stats).toEqual({ eptViolations: 2, hostFaults: 2 });
    expect(vm.peek(8 * MiB)).toBe(3);
  });

  it('host changes invalidate EPT entries: MADV_DONTNEED refaults, migration only exits', () => {
    const { k, vm } = anonVm({ vcpuPin: [0, 1] });
    vm.access(0, 0, 2 * MiB, PAGE_SIZE, true, 5);
    const hva = vm.translate(0)!.hva;
    expect(k.madvise(vm.process, hva, PMD_SIZE, MADV.MADV_DONTNEED)).toBe(0); // as a balloon discard
    vm.access(0, 0, PAGE_SIZE, PAGE_SIZE, false);
    expect(vm.stats).toEqual({ eptViolations: 2, hostFaults: 2 });
    expect(vm.peek(0)).toBe(0);
    vm.access(0, 0, PAGE_SIZE, PAGE_SIZE, true, 6);
    expect(vm.stats.eptViolations).toBe(3);
    expect(sysMigratePages(k, vm.process, vm.process, [0], [1])).toBe(0);
    expect(vm.hostFrame(0)).toMatchObject({ node: 1 });
    const faults = vm.stats.hostFaults;
    vm.access(0, 0, PAGE_SIZE, PAGE_SIZE, false);
    expect(vm.stats.eptViolations).toBe(4);
    expect(vm.stats.hostFaults).toBe(faults);
    expect(vm.peek(0)).toBe(6);
  });

  it('EPT mapping size: the host leaf, limited by memslot bounds and GPA/HVA congruence; TLB size is the smaller with the guest', () => {
    const k = vmTestKernel();
    pool(k, 1048576, 2);
    const vm = new Vm(k, {
      m: 2 * GiB,
      'max-ram-below-4g': 2 * GiB - 2 * MiB,
      'memory-backend': 'mem',
      objects: [{ 'qom-type': 'memory-backend-file', id: 'mem', size: 2 * GiB, 'mem-path': '/dev/hugepages1G', share: true }],
    });
    expect(vm.slots.map((s) => [s.gpa, s.size])).toEqual([
      [0, 2 * GiB - 2 * MiB],
      [4 * GiB, 2 * MiB],
    ]);
    for (const gpa of [0, GiB, 4 * GiB]) vm.access(0, gpa, 1, 1, true, 1);
    expect([0, GiB, 4 * GiB].map((g) => vm.hostMappingSize(g))).toEqual([PUD_SIZE, PUD_SIZE, PUD_SIZE]);
    expect([0, GiB, 4 * GiB].map((g) => vm.eptMappingSize(g))).toEqual([PUD_SIZE, PMD_SIZE, PMD_SIZE]);
    expect(vm.tlbMappingSize(0, PAGE_SIZE)).toBe(PAGE_SIZE);
    expect(vm.tlbMappingSize(0, PMD_SIZE)).toBe(PMD_SIZE);
    expect(vm.tlbMappingSize(4 * GiB, PUD_SIZE)).toBe(PMD_SIZE);
    expect(vm.warnings).toEqual([]);
  });
});

describe('discarding guest RAM (ram_block_discard_range)', () => {
  const cases: [string, MemoryBackendProps, number][] = [
    ['anonymous', { 'qom-type': 'memory-backend-ram', id: 'mem', size: 64 * MiB }, 0],
    ['shared anonymous', { 'qom-type': 'memory-backend-ram', id: 'mem', size: 64 * MiB, share: true }, 0],
    ['memfd', { 'qom-type': 'memory-backend-memfd', id: 'mem', size: 64 * MiB }, 0],
    [
      'hugetlbfs 2M shared',
      { 'qom-type': 'memory-backend-file', id: 'mem', size: 64 * MiB, 'mem-path': '/dev/hugepages', share: true },
      32,
    ],
    ['hugetlbfs 2M private', { 'qom-type': 'memory-backend-file', id: 'mem', size: 64 * MiB, 'mem-path': '/dev/hugepages' }, 32],
  ];
  for (const [what, props, hugepages] of cases)
    it(`${what}: the host frees the range and the guest reads zeros after`, () => {
      const k = vmTestKernel({ gib: 1 });
      if (hugepages) pool(k, 2048, hugepages);
      const vm = new Vm(k, { 'memory-backend': 'mem', objects: [props] });
      const free0 = k.phys.freePages();
      const hfree0 = k.hugetlb.bySize(PMD_SIZE)!.free;
      vm.access(0, 0, 4 * MiB, PAGE_SIZE, true, 7);
      expect(vm.discardGpaRange(0, 4 * MiB)).toBe(0);
      expect(vm.hostFrame(0)).toBeUndefined();
      expect(vm.hostFrame(4 * MiB - PAGE_SIZE)).toBeUndefined();
      expect(k.phys.freePages() - free0).toBeGreaterThanOrEqual(-8); // page-table pages may stay
      expect(k.hugetlb.bySize(PMD_SIZE)!.free).toBe(hfree0);
      vm.access(0, 0, PAGE_SIZE, PAGE_SIZE, false);
      expect(vm.peek(0)).toBe(0);
      expect(verifyKernel(k)).toEqual([]);
    });

  it('refuses ranges that are not host pages', () => {
    const k = vmTestKernel({ gib: 1 });
    pool(k, 2048, 2);
    const vm = new Vm(k, {
      'memory-backend': 'mem',
      objects: [{ 'qom-type': 'memory-backend-file', id: 'mem', size: 4 * MiB, 'mem-path': '/dev/hugepages', share: true }],
    });
    expect(() => vm.discardGpaRange(PAGE_SIZE, PMD_SIZE)).toThrow('ram_block_discard_range: Unaligned start address');
    expect(() => vm.discardGpaRange(0, PAGE_SIZE)).toThrow('ram_block_discard_range: Unaligned length: 1000');
  });
});

describe('vCPUs and vNUMA', () => {
  it('vCPU threads are pinned host threads; first touch lands on the vCPU thread node', () => {
    const k = vmTestKernel();
    const vm = new Vm(k, { m: 64 * MiB, smp: 2, vcpuPin: [1, 5] });
    expect(vm.vcpus.map((v) => v.thread.cpu)).toEqual([1, 5]);
    expect(vm.vcpus.every((v) => v.thread.process === vm.process)).toBe(true);
    vm.access(0, 0, PAGE_SIZE, PAGE_SIZE, true, 1);
    vm.access(1, 32 * MiB, PAGE_SIZE, PAGE_SIZE, true, 1);
    expect(vm.hostFrame(0)).toMatchObject({ node: 0 });
    expect(vm.hostFrame(32 * MiB)).toMatchObject({ node: 1 });
    expect(vm.setVcpuAffinity(0, 6)).toBe(0);
    vm.access(0, 16 * MiB, PAGE_SIZE, PAGE_SIZE, true, 1);
    expect(vm.hostFrame(16 * MiB)).toMatchObject({ node: 1 });
    expect(vm.setVcpuAffinity(0, 99)).toBe(-22);
  });

  it('guest nodes map to memdevs bound to host nodes, whatever vCPU touches them', () => {
    const k = vmTestKernel();
    const vm = new Vm(k, {
      smp: 4,
      objects: [
        { 'qom-type': 'memory-backend-ram', id: 'ram-node0', size: 2560 * MiB, 'host-nodes': [1], policy: 'bind' },
        { 'qom-type': 'memory-backend-ram', id: 'ram-node1', size: 2560 * MiB, 'host-nodes': [0], policy: 'bind' },
      ],
      numa: [
        { nodeid: 0, cpus: [0, 1], memdev: 'ram-node0' },
        { nodeid: 1, cpus: [2, 3], memdev: 'ram-node1' },
      ],
    });
    expect(vm.ramSize).toBe(5 * GiB);
    expect(vm.ramRanges()).toEqual([
      { gpa: 0, size: 2 * GiB, node: 0 },
      { gpa: 4 * GiB, size: GiB / 2, node: 0 },
      { gpa: 4.5 * GiB, size: 2.5 * GiB, node: 1 },
    ]);
    expect(vm.vcpus.map((v) => v.node)).toEqual([0, 0, 1, 1]);
    for (const gpa of [0, 4 * GiB, 4.5 * GiB, 7 * GiB - PAGE_SIZE]) vm.access(0, gpa, 1, 1, true, 1);
    expect([0, 4 * GiB, 4.5 * GiB, 7 * GiB - PAGE_SIZE].map((g) => (vm.hostFrame(g) as { node: number }).node)).toEqual([1, 1, 0, 0]);
    expect(vm.translate(4.5 * GiB)).toMatchObject({ offset: 0 });
    expect(vm.translate(4.5 * GiB)!.block.idstr).toBe('ram-node1');
  });

  it('CPUs default to node socket % nodes; unlisted CPUs go to node 0 with a warning', () => {
    const k = vmTestKernel();
    const objects: MemoryBackendProps[] = [
      { 'qom-type': 'memory-backend-ram', id: 'a', size: 32 * MiB },
      { 'qom-type': 'memory-backend-ram', id: 'b', size: 32 * MiB },
    ];
    const bySocket = new Vm(k, { smp: { cpus: 4, sockets: 2 }, objects, numa: [{ memdev: 'a' }, { memdev: 'b' }] });
    expect(bySocket.numaNodes.map((n) => n.cpus)).toEqual([
      [0, 1],
      [2, 3],
    ]);
    const partial = new Vm(k, {
      smp: 4,
      objects,
      numa: [
        { memdev: 'a', cpus: [1] },
        { memdev: 'b', cpus: [2] },
      ],
    });
    expect(partial.numaNodes.map((n) => n.cpus)).toEqual([[0, 1, 3], [2]]);
    expect(partial.warnings[0]).toMatch(/^CPU\(s\) not present in any NUMA nodes: CPU 0 CPU 3/);
  });

  it("refuses what QEMU refuses, with QEMU's messages", () => {
    const k = vmTestKernel();
    const ram = (id: string, size = 32 * MiB): MemoryBackendProps => ({ 'qom-type': 'memory-backend-ram', id, size });
    const msg = (cfg: VmConfig): string => {
      try {
        new Vm(k, cfg);
      } catch (e) {
        expect(e).toBeInstanceOf(QemuError);
        return (e as Error).message;
      }
      return 'no error';
    };
    expect(msg({ m: 128 * MiB, objects: [ram('a')], numa: [{ memdev: 'a' }] })).toBe(
      'total memory for NUMA nodes (0x2000000) should equal RAM size (0x8000000)',
    );
    expect(msg({ objects: [ram('a')], numa: [{ memdev: 'x' }] })).toBe('memdev=x is ambiguous');
    expect(msg({ objects: [ram('a')], numa: [{ memdev: 'a' }, { memdev: 'a' }] })).toBe("memory backend a can't be used multiple times.");
    expect(msg({ m: 64 * MiB, objects: [ram('a'), ram('b')], numa: [{ memdev: 'a' }, { memdev: 'a', nodeid: 1 }] })).toBe(
      "memory backend a can't be used multiple times.",
    );
    expect(msg({ objects: [ram('a')], numa: [{ memdev: 'a', nodeid: 1 }] })).toBe('numa: Node ID missing: 0');
    expect(msg({ objects: [ram('a')], numa: [{ memdev: 'a' }, { memdev: 'a', nodeid: 0 }] })).toBe('Duplicate NUMA nodeid: 0');
    expect(msg({ 'memory-backend': 'nope' })).toBe("Memory backend 'nope' not found");
    expect(msg({ m: GiB, objects: [ram('a')], 'memory-backend': 'a' })).toBe(
      "Size specified by -m option must match size of explicitly specified 'memory-backend' property",
    );
    expect(msg({ objects: [ram('a')], numa: [{ memdev: 'a', cpus: [4] }], smp: 2 })).toBe(
      'CPU index (4) should be smaller than maxcpus (2)',
    );
    expect(msg({ objects: [ram('a'), ram('a')] })).toBe("attempt to add duplicate property 'a' to object (type 'container')");
    expect(msg({ numa: [{ cpus: [0] }] })).toContain('Default splitting of RAM between nodes is no longer supported');
    // QEMU exits: nothing of the failed VMs stays mapped on the host
    expect([...k.processes.values()].every((p) => p.exited && p.mm.vmas.length === 0)).toBe(true);
    expect(verifyKernel(k)).toEqual([]);
    expect(() => new Vm(vmTestKernel(), { costs: { eptViolation: 'kvm_exit_nothing' } })).toThrow(
      "cost profile has no entry 'kvm_exit_nothing'",
    );
  });

  it('sizes that are not whole pages: -m rounds up to 8 KiB; KVM maps whole pages of a memory-backend-ram; a vNUMA node after one cannot be mapped', () => {
    const k = vmTestKernel();
    const odd = 64 * MiB + 1024; // 65537K
    // -m: QEMU_ALIGN_UP(size, 8192).
    expect(new Vm(k, { m: odd }).ramSize).toBe(64 * MiB + 8192);
    // memory-backend-ram takes any size (QEMU rounds its RAM block up to a page); KVM maps only whole pages of
    // it (kvm_align_section), so the guest's RAM is the 64 MiB before the partial page.
    const vm = new Vm(k, { 'memory-backend': 'a', objects: [{ 'qom-type': 'memory-backend-ram', id: 'a', size: odd }] });
    expect(vm.ramSize).toBe(odd);
    expect(vm.backends.get('a')!.block!.usedLength).toBe(64 * MiB + PAGE_SIZE);
    expect(vm.slots.map((x) => [x.gpa, x.size])).toEqual([[0, 64 * MiB]]);
    expect(vm.ramRanges()).toEqual([{ gpa: 0, size: 64 * MiB, node: 0 }]);
    // Node 1 placed right after it starts mid-page: its padded start's HVA is not page aligned; KVM refuses the slot
    // (EINVAL) and QEMU aborts. The error names the backend.
    let err: QemuError | undefined;
    try {
      new Vm(k, {
        objects: [
          { 'qom-type': 'memory-backend-ram', id: 'a', size: odd },
          { 'qom-type': 'memory-backend-ram', id: 'b', size: 64 * MiB },
        ],
        numa: [{ memdev: 'a' }, { memdev: 'b' }],
      });
    } catch (e) {
      err = e as QemuError;
    }
    expect(err).toBeInstanceOf(QemuError);
    expect(err!.message).toBe('kvm_set_phys_mem: error registering slot: Invalid argument');
    expect(err!.object).toBe('b');
    // A backend's own error names it too.
    try {
      new Vm(k, { 'memory-backend': 'f', objects: [{ 'qom-type': 'memory-backend-memfd', id: 'f', size: odd }] });
    } catch (e) {
      err = e as QemuError;
    }
    expect([err!.object, err!.message]).toEqual([
      'f',
      "f backing store size 0x4000400 is too small for 'size' option 0x4001000 plus 'offset' option 0x0",
    ]);
    expect(verifyKernel(k)).toEqual([]);
  });

  it('destroy unmaps guest RAM and gives every frame back', () => {
    const k = vmTestKernel({ gib: 1 });
    const free0 = k.phys.freePages();
    const vm = new Vm(k, { m: 64 * MiB, objects: [], smp: 1 });
    vm.access(0, 0, 64 * MiB, PAGE_SIZE, true, 2);
    vm.destroy();
    expect(vm.process.mm.vmas).toEqual([]);
    expect(k.phys.freePages()).toBe(free0);
    expect(verifyKernel(k)).toEqual([]);
  });
});

describe('properties', () => {
  const layout = fc.record({
    machine: fc.constantFrom<'q35' | 'pc'>('q35', 'pc'),
    /** RAM of each guest node in 2M units (one node: no vNUMA). */
    nodes: fc.array(fc.integer({ min: 1, max: 12 }), { minLength: 1, maxLength: 3 }),
    numa: fc.boolean(),
    /** max-ram-below-4g in 2M units, to put the split inside small guests. */
    below: fc.integer({ min: 1, max: 24 }),
    backend: fc.constantFrom('memory-backend-ram', 'memory-backend-memfd'),
  });

  type Layout = { machine: 'q35' | 'pc'; nodes: number[]; numa: boolean; below: number; backend: string };
  function build(l: Layout): Vm {
    const k = vmTestKernel({ gib: 1 });
    const mb = (n: number): number => n * 2 * MiB;
    const objects: MemoryBackendProps[] = l.nodes.map((n, i) => ({ 'qom-type': l.backend as never, id: `m${i}`, size: mb(n) }));
    const total = l.nodes.reduce((a, b) => a + mb(b), 0);
    const cfg: VmConfig = { machine: l.machine, 'max-ram-below-4g': mb(l.below), smp: 2 };
    if (l.numa) return new Vm(k, { ...cfg, objects, numa: objects.map((o) => ({ memdev: o.id })) });
    return new Vm(k, { ...cfg, objects: [{ ...objects[0]!, size: total }], 'memory-backend': 'm0', m: total });
  }

  it('translate() is a bijection between guest RAM and the RAM blocks, and every access lands on its byte', () => {
    fc.assert(
      fc.property(layout, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 12 }), (l, writes) => {
        const vm = build(l);
        // The slots tile every block's used range exactly once.
        for (const b of vm.ramList.blocks) {
          const pieces = vm.slots.filter((s) => s.block === b).sort((x, y) => x.blockOffset - y.blockOffset);
          let off = 0;
          for (const p of pieces) {
            expect(p.blockOffset).toBe(off);
            off += p.size;
          }
          expect(off).toBe(b.usedLength);
        }
        expect(vm.ramRanges().reduce((s, r) => s + r.size, 0)).toBe(vm.ramSize);
        // Page by page both ways: GPA -> HVA -> GPA, and distinct GPAs give distinct HVAs.
        const seen = new Set<number>();
        const bad: number[] = [];
        for (const r of vm.ramRanges())
          for (let gpa = r.gpa; gpa < r.gpa + r.size; gpa += PAGE_SIZE) {
            const t = vm.translate(gpa)!;
            if (vm.gpaOfHva(t.hva) !== gpa || !t.block.containsHost(t.hva)) bad.push(gpa);
            seen.add(t.hva);
          }
        expect(bad).toEqual([]);
        expect(seen.size).toBe(vm.ramSize / PAGE_SIZE);
        // Writes through the guest are what the VMM reads at the HVA, and what the frame holds.
        const pages = vm.ramRanges().flatMap((r) => Array.from({ length: r.size / PAGE_SIZE }, (_, i) => r.gpa + i * PAGE_SIZE));
        const expected = new Map<number, number>();
        for (const [i, fill] of writes) {
          const gpa = pages[i % pages.length]!;
          vm.access(i % 2, gpa, 1, 1, true, fill);
          expected.set(gpa, fill);
        }
        for (const [gpa, fill] of expected) {
          expect(vm.peek(gpa)).toBe(fill);
          const bytes: number[] = [];
          vm.k.access(vm.process.mainThread, vm.translate(gpa)!.hva, 1, 1, false, 0, (_va, b) => bytes.push(b));
          expect(bytes).toEqual([fill]);
        }
      }),
      { numRuns: 60, seed: 8 },
    );
  });
});
