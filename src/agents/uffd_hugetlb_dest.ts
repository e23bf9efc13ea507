/**
 * The destination side of postcopy on hugetlb guest RAM, as a userspace
 * agent: a VMM (QEMU's postcopy fault thread) that registers guest RAM
 * with a userfaultfd and resolves each vCPU fault, under Linux 6.18 (whole
 * huge pages), one of the three unmerged proposals of
 * src/kernel/hugetlb_hgm.ts, or the /dev/mem remap of
 * src/kernel/hugetlb_devmem.ts. Used by the proposal tests and by
 * scripts/postcopy-hugetlb-table.ts, which prints what each proposal
 * implies for fault count and latency.
 *
 * The network is not modelled here (live migration is a later layer): a
 * fault's latency is the destination kernel's time to resolve it once the
 * bytes are there.
 */
import { Kernel } from '../kernel/kernel.ts';
import type { Process, Thread } from '../kernel/sched.ts';
import { hugetlbAllocPage, hugetlbIndex } from '../kernel/memory.ts';
import { uffdioApi, uffdioContinue, uffdioFill, uffdioRegister } from '../kernel/userfaultfd.ts';
import type { HgmProposal } from '../kernel/hugetlb_hgm.ts';
import { DEVMEM_REMAP, devmemAliasCopy } from '../kernel/hugetlb_devmem.ts';
import {
  MAP,
  MADV,
  MADV_SPLIT,
  PAGE_SIZE,
  PROT,
  PUD_SIZE,
  UFFD_API,
  UFFD_FEATURE,
  UFFD_FEATURE_PROPOSED as P,
  UFFDIO_REGISTER_MODE,
} from '../kernel/uapi.ts';
import { CostProfile } from '../sim/cost_profile.ts';
import { hostFromFile } from '../sim/host.ts';

/** The byte the migration source holds in the 4K page at offset `off` of guest RAM. */
export const srcByte = (off: number): number => ((off / PAGE_SIZE) % 251) + 1;

export interface Destination {
  k: Kernel;
  /** The VMM process. */
  p: Process;
  /** A vCPU thread. */
  vcpu: Thread;
  /** Guest RAM's address in the VMM. */
  a: number;
  /** The userfaultfd. */
  fd: number;
  proposal: Design | null;
}

/** What fills a huge page in parts: a proposal of src/kernel/hugetlb_hgm.ts, or the /dev/mem remap. */
export type Design = HgmProposal | typeof DEVMEM_REMAP;

function check(ok: boolean, what: string): void {
  if (!ok) throw new Error(`postcopy destination setup: ${what}`);
}

/**
 * A destination VMM with `pages` huge pages of guest RAM (1G or 2M) on a
 * one-node host, registered with a userfaultfd that negotiated `proposal`
 * (null: Linux 6.18). Under hugetlb-hgm the RAM is a shared hugetlbfs
 * mapping, fallocated first as the HGM postcopy design does (so every
 * vCPU fault is minor), marked with MADV_SPLIT and registered MINOR. Under
 * hugetlb-devmem-remap the kernel is built without CONFIG_STRICT_DEVMEM
 * (unless `strictDevmem`) and the userfaultfd reports exact addresses.
 */
export function destination(
  proposal: Design | null,
  hugeSize = PUD_SIZE,
  pages = 2,
  costs = CostProfile.default(),
  strictDevmem = false,
): Destination {
  const mib = Math.ceil((pages * hugeSize) / 2 ** 26) * 64 + 256;
  const host = hostFromFile({
    name: 'postcopy-destination',
    nodes: [{ id: 0, memory: mib * 2 ** 20, cpus: [0, 1] }],
    distances: [[10]],
    hugepage_sizes: ['2M', '1G'],
  });
  const k = new Kernel({ host, costs, seed: 1 });
  const dir = hugeSize === PUD_SIZE ? 'hugepages-1048576kB' : 'hugepages-2048kB';
  check(k.sysfs.write(`/sys/kernel/mm/hugepages/${dir}/nr_hugepages`, String(pages)) >= 0, 'hugetlb pool');
  if (proposal) check(k.sysfs.write(`/sys/kernel/memtwin/features/${proposal}`, '1') >= 0, `feature ${proposal}`);
  if (proposal === DEVMEM_REMAP && !strictDevmem)
    check(k.sysfs.write('/sys/kernel/memtwin/config/CONFIG_STRICT_DEVMEM', '0') >= 0, 'CONFIG_STRICT_DEVMEM');
  const p = k.createProcess('qemu');
  const shared = proposal === 'hugetlb-hgm';
  const huge = MAP.MAP_ANONYMOUS | MAP.MAP_HUGETLB | (hugeSize === PUD_SIZE ? MAP.MAP_HUGE_1GB : MAP.MAP_HUGE_2MB);
  const a = k.mmap(p, 0, pages * hugeSize, PROT.PROT_READ | PROT.PROT_WRITE, (shared ? MAP.MAP_SHARED : MAP.MAP_PRIVATE) | huge);
  check(a > 0, 'guest RAM mmap');
  const fd = k.uffd.create(p, 0);
  const features = shared
    ? UFFD_FEATURE.UFFD_FEATURE_MINOR_HUGETLBFS | P.UFFD_FEATURE_MINOR_HUGETLBFS_HGM
    : UFFD_FEATURE.UFFD_FEATURE_MISSING_HUGETLBFS |
      (proposal === 'uffd-hugetlb-subpage-copy' ? P.UFFD_FEATURE_HUGETLB_SUBPAGE_COPY : 0) |
      (proposal === 'uffd-hugetlb-vma-split' ? P.UFFD_FEATURE_HUGETLB_VMA_SPLIT : 0) |
      (proposal === DEVMEM_REMAP ? UFFD_FEATURE.UFFD_FEATURE_EXACT_ADDRESS : 0);
  check(uffdioApi(k, p, fd, UFFD_API, features).ret === 0, 'UFFDIO_API');
  if (shared) {
    const vma = p.mm.vmaAt(a)!;
    for (let h = a; h < a + pages * hugeSize; h += hugeSize) check(hugetlbAllocPage(k, p.mm, vma, h, p.mainThread, null) >= 0, 'fallocate');
    check(k.madvise(p, a, pages * hugeSize, MADV_SPLIT) === 0, 'MADV_SPLIT');
    check(uffdioRegister(k, fd, a, pages * hugeSize, UFFDIO_REGISTER_MODE.UFFDIO_REGISTER_MODE_MINOR).ret === 0, 'register MINOR');
  } else check(uffdioRegister(k, fd, a, pages * hugeSize, UFFDIO_REGISTER_MODE.UFFDIO_REGISTER_MODE_MISSING).ret === 0, 'register MISSING');
  const vcpu = k.createThread(p, 1);
  if (typeof vcpu === 'number') throw new Error('postcopy destination setup: vCPU thread');
  return { k, p, vcpu, a, fd, proposal };
}

/**
 * hugetlb-hgm's data path: the VMM writes received bytes into the huge
 * page through a second, unregistered mapping of the hugetlbfs file (the
 * alias allocates the page at its first write): memcpy_4k per 4K.
 */
export function aliasWrite(d: Destination, va: number, len: number): void {
  const { k, p } = d;
  const vma = p.mm.vmaAt(va)!;
  const hs = vma.hugePageSize();
  for (let off = va; off < va + len; off += PAGE_SIZE) {
    const haddr = off - (off % hs);
    let pfn = vma.file!.pages.get(hugetlbIndex(vma, haddr));
    if (pfn === undefined) pfn = hugetlbAllocPage(k, p.mm, vma, haddr, p.mainThread, null);
    k.writeSerial = (k.writeSerial + 1) & 0xffffff;
    k.mem.storeByte(pfn + (off - haddr) / PAGE_SIZE, k.writeSerial, srcByte(off - d.a), true);
  }
  k.charge((len / PAGE_SIZE) * k.costs.ns('memcpy_4k'));
}

/**
 * Place the 4K page at `va` (received from the source) the way the
 * proposal does: a 4K UFFDIO_COPY (into the /dev/mem alias under the
 * remap), or an alias write and a 4K UFFDIO_CONTINUE; under Linux 6.18, a
 * copy of its whole huge page. Returns
 * the ioctl's result and the virtual ns it took.
 */
export function place4k(d: Destination, va: number): { ret: number; ns: number } {
  const { k, p, fd, a, proposal } = d;
  const t0 = k.clock.now();
  let ret: number;
  if (proposal === 'hugetlb-hgm') {
    aliasWrite(d, va, PAGE_SIZE);
    ret = uffdioContinue(k, p.mainThread, fd, va, PAGE_SIZE, 0).ret;
  } else if (proposal === DEVMEM_REMAP) {
    const r = devmemAliasCopy(k, p.mm, p.mainThread, va - (va % PAGE_SIZE), PAGE_SIZE, srcByte(va - (va % PAGE_SIZE) - a));
    ret = r < 0 ? r : 0;
  } else if (proposal) ret = uffdioFill(k, p.mainThread, fd, va, PAGE_SIZE, 0, srcByte(va - a)).ret;
  else {
    const hs = p.mm.vmaAt(va)!.hugePageSize();
    ret = uffdioFill(k, p.mainThread, fd, va - (va % hs), hs, 0, srcByte(va - (va % hs) - a)).ret;
  }
  return { ret, ns: k.clock.now() - t0 };
}

/**
 * The vCPU touches each of `offsets` (bytes into guest RAM); every touch
 * that blocks is read from the userfaultfd and resolved with place4k at
 * the reported address. Returns the number of faults and each one's
 * resolution time.
 */
export function vcpuFaults(d: Destination, offsets: number[]): { faults: number; latency: number[] } {
  const { k, vcpu, fd, a } = d;
  const ctx = k.uffd.ctxs.get(fd)!;
  const latency: number[] = [];
  for (const off of offsets) {
    if (k.access(vcpu, a + off, 1, PAGE_SIZE, false, 0).blocked === undefined) continue;
    const msg = ctx.pending.shift()!;
    const r = place4k(d, msg.address);
    if (r.ret !== 0) throw new Error(`resolving the fault at +0x${(msg.address - a).toString(16)}: ${r.ret}`);
    latency.push(r.ns);
    if (k.access(vcpu, a + off, 1, PAGE_SIZE, false, 0).blocked !== undefined) throw new Error('the vCPU is still blocked');
  }
  return { faults: latency.length, latency };
}

/**
 * The background stream: every 4K page of the huge page at `haddr` not
 * placed yet, in order (Linux 6.18: the huge page once, if missing). Under
 * hugetlb-hgm the huge mapping is then restored with MADV_COLLAPSE, as
 * the VMM must ask for it. Returns the virtual ns spent.
 */
export function fillHugePage(d: Destination, haddr: number): number {
  const { k, p, proposal } = d;
  const t0 = k.clock.now();
  const hs = p.mm.vmaAt(haddr)!.hugePageSize();
  if (!proposal) {
    place4k(d, haddr);
    return k.clock.now() - t0;
  }
  const part = p.mm.hgm.get(haddr);
  for (let off = 0; off < hs; off += PAGE_SIZE) if (!part?.mapped[off / PAGE_SIZE]) place4k(d, haddr + off);
  if (proposal === 'hugetlb-hgm') k.madvise(p, haddr, hs, MADV.MADV_COLLAPSE);
  return k.clock.now() - t0;
}
