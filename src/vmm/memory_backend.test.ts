/**
 * QEMU's memory backends on the simulated host: the mappings they make,
 * the advice QEMU gives, NUMA policies, preallocation and QEMU's errors.
 */
import { describe, expect, it } from 'vitest';
import { vmTestKernel } from './test_fixtures.ts';
import { HostMemoryBackend, QemuError, sizeToStr, type MemoryBackendProps, type VmmHost } from './memory_backend.ts';
import { RamList } from './ram_block.ts';
import { MAP, MPOL, PAGE_SIZE, PMD_SIZE, PUD_SIZE } from '../kernel/uapi.ts';
import { VM } from '../kernel/mm_types.ts';
import { followPage, mappingSize } from '../kernel/memory.ts';
import { verifyKernel } from '../kernel/debug_vm.ts';
import type { Kernel } from '../kernel/kernel.ts';

const MiB = 2 ** 20;
const GiB = 2 ** 30;

function vmmOf(k: Kernel): VmmHost {
  const process = k.createProcess('qemu-system-x86');
  const threads = new Map<number, ReturnType<typeof k.createThread>>();
  return {
    k,
    process,
    memMerge: true,
    dumpGuestCore: true,
    preallocThread(cpu) {
      if (!threads.has(cpu)) threads.set(cpu, k.createThread(process, cpu));
      return threads.get(cpu) as never;
    },
  };
}

function create(k: Kernel, props: MemoryBackendProps, vmm = vmmOf(k)): { b: HostMemoryBackend; vmm: VmmHost } {
  const b = new HostMemoryBackend(props, vmm);
  b.complete(vmm, new RamList());
  return { b, vmm };
}

/** Nodes of the frames behind [hva, hva + len), one per `step`. */
function nodesOf(k: Kernel, vmm: VmmHost, hva: number, len: number, step: number): number[] {
  const out: number[] = [];
  for (let a = hva; a < hva + len; a += step) {
    const pfn = followPage(vmm.process.mm, a);
    out.push(pfn >= 0 ? k.phys.nodeOfPfn(pfn) : -1);
  }
  return out;
}

function reservePool(k: Kernel, size: '2048kB' | '1048576kB', n: number, node?: number): void {
  const path =
    node === undefined
      ? `/sys/kernel/mm/hugepages/hugepages-${size}/nr_hugepages`
      : `/sys/devices/system/node/node${node}/hugepages/hugepages-${size}/nr_hugepages`;
  expect(k.sysfs.write(path, String(n))).toBe(0);
}

describe('memory backends', () => {
  it('memory-backend-ram: private anonymous, 2M aligned, with the advice ram_block_add and the settings give', () => {
    const k = vmTestKernel();
    const { b, vmm } = create(k, { 'qom-type': 'memory-backend-ram', id: 'mem0', size: 64 * MiB });
    expect(b.host % PMD_SIZE).toBe(0);
    expect(b.mmapFlags).toBe(MAP.MAP_PRIVATE | MAP.MAP_ANONYMOUS);
    expect(b.block!.pageSize).toBe(PAGE_SIZE);
    const vma = vmm.process.mm.vmaAt(b.host)!;
    expect([vma.start, vma.end]).toEqual([b.host, b.host + 64 * MiB]);
    for (const f of [VM.HUGEPAGE, VM.DONTCOPY, VM.MERGEABLE]) expect((vma.flags & f) !== 0).toBe(true);
    expect(vma.flags & VM.DONTDUMP).toBe(0);
    // qemu_ram_mmap leaves one PROT_NONE guard page after the block
    const guard = vmm.process.mm.vmaAt(b.host + 64 * MiB)!;
    expect(guard.end - guard.start).toBe(PAGE_SIZE);
    expect(guard.flags & (VM.READ | VM.WRITE)).toBe(0);
    expect(followPage(vmm.process.mm, b.host)).toBe(-2); // nothing allocated without prealloc
  });

  it('dump=off and merge=off advise as QEMU does; share=on makes anonymous RAM shared', () => {
    const k = vmTestKernel();
    const { b, vmm } = create(k, { 'qom-type': 'memory-backend-ram', id: 'm', size: 8 * MiB, dump: false, merge: false, share: true });
    const vma = vmm.process.mm.vmaAt(b.host)!;
    expect(vma.flags & VM.DONTDUMP).toBe(VM.DONTDUMP);
    expect(vma.flags & VM.SHARED).toBe(VM.SHARED);
    expect(vma.file?.kind).toBe('shmem');
    expect((vma.flags & VM.MERGEABLE) !== 0).toBe(false); // KSM never merges shared memory
  });

  it('memory-backend-memfd: shared (shmem) by default; hugetlb=on maps hugetlb pages', () => {
    const k = vmTestKernel();
    const { b } = create(k, { 'qom-type': 'memory-backend-memfd', id: 'fd', size: 16 * MiB });
    expect(b.share).toBe(true);
    expect(b.mmapFlags).toBe(MAP.MAP_SHARED | MAP.MAP_ANONYMOUS);
    reservePool(k, '2048kB', 8);
    const { b: h, vmm } = create(k, { 'qom-type': 'memory-backend-memfd', id: 'fdh', size: 16 * MiB, hugetlb: true, prealloc: true });
    expect(h.mmapFlags).toBe(MAP.MAP_SHARED | MAP.MAP_ANONYMOUS | MAP.MAP_HUGETLB | MAP.MAP_HUGE_2MB);
    expect(h.block!.pageSize).toBe(PMD_SIZE);
    expect(mappingSize(vmm.process.mm, h.host)).toBe(PMD_SIZE);
    expect(k.hugetlb.bySize(PMD_SIZE)!.free).toBe(0);
  });

  it('memory-backend-file on hugetlbfs: 2M and 1G pages, shared with share=on, private by default', () => {
    const k = vmTestKernel();
    reservePool(k, '2048kB', 4);
    reservePool(k, '1048576kB', 1, 1);
    const { b: f2 } = create(k, { 'qom-type': 'memory-backend-file', id: 'f2', size: 8 * MiB, 'mem-path': '/dev/hugepages', share: true });
    expect(f2.mmapFlags).toBe(MAP.MAP_SHARED | MAP.MAP_ANONYMOUS | MAP.MAP_HUGETLB | MAP.MAP_HUGE_2MB);
    expect(f2.host % PMD_SIZE).toBe(0);
    const { b: f1, vmm } = create(k, { 'qom-type': 'memory-backend-file', id: 'f1', size: GiB, 'mem-path': '/dev/hugepages1G/vm1' });
    expect(f1.mmapFlags).toBe(MAP.MAP_PRIVATE | MAP.MAP_ANONYMOUS | MAP.MAP_HUGETLB | MAP.MAP_HUGE_1GB);
    expect(f1.host % PUD_SIZE).toBe(0);
    expect(f1.block!.pageSize).toBe(PUD_SIZE);
    expect(k.hugetlb.bySize(PUD_SIZE)!.resv).toBe(1); // reserved at mmap
    expect(vmm.process.mm.vmaAt(f1.host)!.isHugetlb()).toBe(true);
  });

  it('prealloc touches every page, charged in virtual time, on the prealloc context CPUs', () => {
    const k = vmTestKernel();
    const t0 = k.clock.now();
    const { b, vmm } = create(k, {
      'qom-type': 'memory-backend-ram',
      id: 'pre',
      size: 256 * MiB,
      prealloc: true,
      'prealloc-threads': 4,
      'prealloc-context': { 'node-affinity': [1] },
    });
    expect(nodesOf(k, vmm, b.host, 256 * MiB, PMD_SIZE).every((n) => n === 1)).toBe(true); // first touch by threads on node 1
    expect(mappingSize(vmm.process.mm, b.host)).toBe(PMD_SIZE); // THP: MADV_HUGEPAGE was applied before
    // four threads on four CPUs in parallel: about a quarter of 128 THP faults
    const thp = k.costs.ns('fault_thp_2m_write');
    const elapsed = k.clock.now() - t0;
    expect(elapsed).toBeGreaterThanOrEqual(32 * thp);
    expect(elapsed).toBeLessThan(64 * thp);
    expect(vmm.process.threads.map((t) => t.cpu).slice(1)).toEqual([4, 5, 6, 7]);
  });

  it('host-nodes + policy=bind places every frame on the bound nodes; interleave alternates; preferred is MPOL_PREFERRED_MANY', () => {
    const k = vmTestKernel({ nodes: 3, gib: 1 });
    const { b, vmm } = create(k, {
      'qom-type': 'memory-backend-ram',
      id: 'b',
      size: 64 * MiB,
      'host-nodes': [2],
      policy: 'bind',
      prealloc: true,
    });
    expect(new Set(nodesOf(k, vmm, b.host, 64 * MiB, PAGE_SIZE))).toEqual(new Set([2]));
    const pol = vmm.process.mm.vmaAt(b.host)!.policy!;
    expect([pol.mode, pol.nodes]).toEqual([MPOL.MPOL_BIND, [2]]);
    const { b: il } = create(
      k,
      { 'qom-type': 'memory-backend-memfd', id: 'il', size: 16 * PAGE_SIZE, 'host-nodes': [0, 1], policy: 'interleave', prealloc: true },
      vmm,
    );
    expect(nodesOf(k, vmm, il.host, 16 * PAGE_SIZE, PAGE_SIZE)).toEqual([0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1]);
    const { b: pr } = create(
      k,
      { 'qom-type': 'memory-backend-ram', id: 'pr', size: 4 * MiB, 'host-nodes': [1, 2], policy: 'preferred' },
      vmm,
    );
    const pp = vmm.process.mm.vmaAt(pr.host)!.policy!;
    expect([pp.mode, pp.nodes]).toEqual([MPOL.MPOL_PREFERRED_MANY, [1, 2]]);
  });

  it('hugetlb pages follow the bind policy too', () => {
    const k = vmTestKernel();
    reservePool(k, '2048kB', 4, 0);
    reservePool(k, '2048kB', 4, 1);
    const { b, vmm } = create(k, {
      'qom-type': 'memory-backend-file',
      id: 'h',
      size: 8 * MiB,
      'mem-path': '/dev/hugepages',
      share: true,
      'host-nodes': [1],
      policy: 'bind',
      prealloc: true,
    });
    expect(nodesOf(k, vmm, b.host, 8 * MiB, PMD_SIZE)).toEqual([1, 1, 1, 1]);
  });

  it("fails with QEMU's messages and leaves the host as it was", () => {
    const k = vmTestKernel({ gib: 2 });
    const err = (props: Partial<MemoryBackendProps>): string => {
      try {
        create(k, { 'qom-type': 'memory-backend-file', id: 'x', size: 4 * MiB, 'mem-path': '/dev/hugepages', share: true, ...props });
      } catch (e) {
        expect(e).toBeInstanceOf(QemuError);
        return (e as Error).message;
      }
      return 'no error';
    };
    expect(err({})).toBe('unable to map backing store for guest RAM: Cannot allocate memory'); // empty pool
    reservePool(k, '2048kB', 2);
    expect(err({ size: 3 * MiB })).toBe("backend 'memory-backend-file' memory size must be multiple of 2 MiB");
    expect(err({ size: 8 * MiB })).toBe('unable to map backing store for guest RAM: Cannot allocate memory'); // pool of 2 pages
    expect(err({ size: 8 * MiB, reserve: false, prealloc: true })).toBe('qemu_prealloc_mem: preallocating memory failed: Bad address');
    expect(err({ 'mem-path': undefined })).toBe('mem-path property not set');
    expect(err({ 'mem-path': '/mnt/nowhere' })).toBe("can't open backing store /mnt/nowhere for guest RAM: No such file or directory");
    expect(err({ 'qom-type': 'memory-backend-memfd', 'mem-path': undefined, hugetlb: true, size: 3 * MiB })).toBe(
      'failed to resize memfd to 3145728: Invalid argument',
    );
    expect(err({ 'host-nodes': [1] })).toBe(
      'host-nodes must be empty for policy default, or you should explicitly specify a policy other than default',
    );
    expect(err({ policy: 'bind' })).toBe('host-nodes must be set for policy bind');
    expect(err({ policy: 'bind', 'host-nodes': [5] })).toBe('cannot bind memory to host NUMA nodes: Invalid argument');
    expect(err({ size: 0 })).toBe("Property 'memory-backend-file.size' doesn't take value '0'");
    expect(err({ size: undefined })).toBe("can't create backend with size 0");
    expect(k.hugetlb.bySize(PMD_SIZE)!.resv).toBe(0);
    expect(verifyKernel(k)).toEqual([]);
  });

  it('size_to_str prints sizes as QEMU does', () => {
    expect([PAGE_SIZE, PMD_SIZE, PUD_SIZE, 2.5 * GiB, 1000].map(sizeToStr)).toEqual(['4 KiB', '2 MiB', '1 GiB', '2.5 GiB', '0.977 KiB']);
  });
});
