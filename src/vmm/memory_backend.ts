/**
 * QEMU's host memory backends (backends/hostmem*.c): the objects a VM's
 * guest RAM is made of, created in the VMM process of the simulated host.
 *
 * - `memory-backend-ram`: anonymous memory (MAP_PRIVATE|MAP_ANONYMOUS, or
 *   MAP_SHARED|MAP_ANONYMOUS with share=on).
 * - `memory-backend-memfd`: a memfd, mapped MAP_SHARED: memtwin's shmem
 *   (MAP_SHARED|MAP_ANONYMOUS); with hugetlb=on a hugetlb memfd
 *   (MAP_HUGETLB with MAP_HUGE_2MB/1GB).
 * - `memory-backend-file`: a file under `mem-path`; on a hugetlbfs mount
 *   the mapping is hugetlb of the mount's page size (MAP_HUGETLB with
 *   MAP_HUGE_2MB/1GB), MAP_SHARED with share=on, MAP_PRIVATE otherwise (a
 *   private mapping of a new, empty file behaves as private hugetlb
 *   memory); on tmpfs (/dev/shm) it is shmem.
 *
 * Creation follows host_memory_backend_memory_complete: the backend's
 * alloc maps the memory as qemu_ram_mmap does (a PROT_NONE reservation of
 * size + align, the memory MAP_FIXED at the aligned address inside it, and
 * one guard page left after it), ram_block_add registers the RAMBlock and
 * advises the whole block (MADV_DONTDUMP without dump-guest-core,
 * QEMU_MADV_HUGEPAGE, MADV_DONTFORK; MADV_MERGEABLE for anonymous RAM with
 * mem-merge); then host_memory_backend_apply_settings applies `merge`,
 * `dump`, the NUMA policy (mbind with MPOL_MF_STRICT|MPOL_MF_MOVE, `preferred`
 * as MPOL_PREFERRED_MANY) and finally `prealloc` (qemu_prealloc_mem: every
 * page touched by up to 16 threads, each on a CPU of the prealloc context).
 * Every step is a syscall of the simulated kernel, charged in virtual time.
 * Errors are QemuError with QEMU's messages.
 */
import type { Kernel } from '../kernel/kernel.ts';
import type { Process, Thread } from '../kernel/sched.ts';
import { ERRNO, MADV, MAP, MPOL, PAGE_SIZE, PMD_SIZE, PROT, PUD_SIZE, alignUp, type SysRet } from '../kernel/uapi.ts';
import { sysMbind } from '../kernel/mempolicy.ts';
import { RAMBlock, type RamList } from './ram_block.ts';

/** An error as QEMU reports it (error_setg): the message without the program-name prefix. */
export class QemuError extends Error {
  override readonly name = 'QemuError';
  /** The -object (its id) whose creation failed, when the error is one's. */
  object: string | undefined;
}

/** strerror(3) for the errnos the backends can meet. */
const STRERROR: Record<number, string> = {
  [ERRNO.EPERM]: 'Operation not permitted',
  [ERRNO.ENOENT]: 'No such file or directory',
  [ERRNO.EIO]: 'Input/output error',
  [ERRNO.ENOMEM]: 'Cannot allocate memory',
  [ERRNO.EFAULT]: 'Bad address',
  [ERRNO.EBUSY]: 'Device or resource busy',
  [ERRNO.EEXIST]: 'File exists',
  [ERRNO.EINVAL]: 'Invalid argument',
  [ERRNO.ENOSPC]: 'No space left on device',
};

export function strerror(ret: number): string {
  return STRERROR[Math.abs(ret)] ?? `Unknown error ${Math.abs(ret)}`;
}

/** error_setg_errno: "<message>: <strerror>". */
function errorWithErrno(ret: number, msg: string): QemuError {
  return new QemuError(`${msg}: ${strerror(ret)}`);
}

/** size_to_str: "2 MiB", "1 GiB", "2.5 GiB" (three significant digits, binary units). */
export function sizeToStr(val: number): string {
  const suffixes = ['', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei'];
  const i = val === 0 ? 0 : Math.max(0, Math.floor((Math.floor(Math.log2(val / (1000 / 1024))) + 1 - 1) / 10));
  const v = val / 2 ** (i * 10);
  return `${Number(v.toPrecision(3))} ${suffixes[i]}B`;
}

export const BACKEND_TYPES = ['memory-backend-ram', 'memory-backend-memfd', 'memory-backend-file'] as const;
export type BackendType = (typeof BACKEND_TYPES)[number];

/** QEMU's HostMemPolicy (qapi/machine.json), in MPOL_* order. */
export const HOST_MEM_POLICIES = ['default', 'preferred', 'bind', 'interleave'] as const;
export type HostMemPolicy = (typeof HOST_MEM_POLICIES)[number];

/** A thread-context object as `prealloc-context` links it: where the prealloc threads run. */
export interface ThreadContextProps {
  'cpu-affinity'?: number[];
  'node-affinity'?: number[];
}

/** `-object memory-backend-*,...` with QEMU's property names. */
export interface MemoryBackendProps {
  'qom-type': BackendType;
  id: string;
  size?: number;
  prealloc?: boolean;
  'prealloc-threads'?: number;
  'prealloc-context'?: ThreadContextProps;
  'host-nodes'?: number[];
  policy?: HostMemPolicy;
  merge?: boolean;
  dump?: boolean;
  share?: boolean;
  reserve?: boolean;
  /** memory-backend-file: a file or directory on a mount the VMM knows (see DEFAULT_MOUNTS). */
  'mem-path'?: string;
  /** memory-backend-memfd: a hugetlb memfd of `hugetlbsize` (default: the default huge page size). */
  hugetlb?: boolean;
  hugetlbsize?: number;
}

/** A filesystem the VMM can put a memory-backend-file on. */
export interface Mount {
  fstype: 'hugetlbfs' | 'tmpfs';
  /** statfs f_bsize: the huge page size of a hugetlbfs mount, 4 KiB for tmpfs. */
  pagesize: number;
}

/** The usual mounts: systemd's /dev/hugepages (default 2M pages), a 1G hugetlbfs, and /dev/shm. */
export const DEFAULT_MOUNTS: Readonly<Record<string, Mount>> = {
  '/dev/hugepages': { fstype: 'hugetlbfs', pagesize: PMD_SIZE },
  '/dev/hugepages1G': { fstype: 'hugetlbfs', pagesize: PUD_SIZE },
  '/dev/shm': { fstype: 'tmpfs', pagesize: PAGE_SIZE },
};

/** QEMU_VMALLOC_ALIGN on x86-64 Linux: anonymous guest RAM is 2 MiB aligned for THP. */
export const QEMU_VMALLOC_ALIGN = PMD_SIZE;
/** MAX_NODES in QEMU (sysemu/numa.h). */
export const MAX_NODES = 128;
/** MAX_MEM_PREALLOC_THREAD_COUNT (util/oslib-posix.c). */
export const MAX_MEM_PREALLOC_THREAD_COUNT = 16;
const MiB = 2 ** 20;

/** What a backend needs from the VMM process it is created in. */
export interface VmmHost {
  readonly k: Kernel;
  readonly process: Process;
  /** The machine's mem-merge and dump-guest-core options (defaults of `merge` and `dump`). */
  readonly memMerge: boolean;
  readonly dumpGuestCore: boolean;
  /** A VMM thread on `cpu` for preallocation (qemu_thread_create in the prealloc context). */
  preallocThread(cpu: number): Thread;
}

/** How the backend's memory is mapped (what file_ram_alloc / qemu_anon_ram_alloc pass to mmap). */
interface MappingPlan {
  flags: number;
  pageSize: number;
  align: number;
  /** Backends whose size must be a multiple of the page size (backend->aligned). */
  aligned: boolean;
}

/** An unsigned property must fit in QEMU's type; sizes are byte counts. */
function checkNonNegativeInt(typename: string, name: string, v: number | undefined): void {
  if (v !== undefined && (!Number.isSafeInteger(v) || v < 0))
    throw new QemuError(`Property '${typename}.${name}' doesn't take value '${v}'`);
}

export class HostMemoryBackend {
  readonly type: BackendType;
  readonly id: string;
  readonly size: number;
  readonly merge: boolean;
  readonly dump: boolean;
  readonly prealloc: boolean;
  readonly preallocThreads: number;
  readonly preallocContext: ThreadContextProps | undefined;
  readonly share: boolean;
  readonly reserve: boolean;
  readonly hostNodes: number[];
  readonly policy: HostMemPolicy;
  readonly memPath: string | undefined;
  readonly hugetlb: boolean;
  readonly hugetlbsize: number;
  /** After complete(): the HVA, the page size and the RAMBlock. */
  host = 0;
  pageSize = PAGE_SIZE;
  block: RAMBlock | null = null;
  /** backend->is_mapped: consumed by the machine (a NUMA node or the machine's RAM). */
  isMapped = false;
  /** The mmap flags used, for tests and reports. */
  mmapFlags = 0;

  /**
   * The object with its properties set (object_new + property setters +
   * memfd/file instance_init defaults): validates values as the setters do.
   * `machine` gives mem-merge and dump-guest-core, the defaults of merge and dump.
   */
  constructor(props: MemoryBackendProps, machine: { memMerge: boolean; dumpGuestCore: boolean }) {
    const t = props['qom-type'];
    if (!BACKEND_TYPES.includes(t)) throw new QemuError(`Invalid parameter type for 'qom-type', expected: memory backend`);
    this.type = t;
    if (!props.id || !/^[A-Za-z][A-Za-z0-9.\-_]*$/.test(props.id)) throw new QemuError(`Parameter 'id' expects an identifier`);
    this.id = props.id;
    checkNonNegativeInt(t, 'size', props.size);
    if (props.size === 0) throw new QemuError(`Property '${t}.size' doesn't take value '0'`);
    this.size = props.size ?? 0;
    if (props['prealloc-threads'] !== undefined && !(Number.isSafeInteger(props['prealloc-threads']) && props['prealloc-threads'] > 0))
      throw new QemuError(`property 'prealloc-threads' of ${t} doesn't take value '${props['prealloc-threads']}'`);
    this.preallocThreads = props['prealloc-threads'] ?? 1;
    this.preallocContext = props['prealloc-context'];
    this.prealloc = props.prealloc ?? false;
    this.merge = props.merge ?? machine.memMerge;
    this.dump = props.dump ?? machine.dumpGuestCore;
    // memfd_backend_instance_init: share defaults to on for memfd only.
    this.share = props.share ?? t === 'memory-backend-memfd';
    this.reserve = props.reserve ?? true;
    const policy = props.policy ?? 'default';
    if (!HOST_MEM_POLICIES.includes(policy)) throw new QemuError(`Parameter 'policy' does not accept value '${String(policy)}'`);
    this.policy = policy;
    for (const n of props['host-nodes'] ?? [])
      if (!Number.isInteger(n) || n < 0 || n >= MAX_NODES) throw new QemuError(`Invalid host-nodes value: ${n}`);
    this.hostNodes = [...new Set(props['host-nodes'] ?? [])].sort((a, b) => a - b);
    this.memPath = props['mem-path'];
    this.hugetlb = props.hugetlb ?? false;
    checkNonNegativeInt(t, 'hugetlbsize', props.hugetlbsize);
    this.hugetlbsize = props.hugetlbsize ?? 0;
    if (this.type !== 'memory-backend-file' && this.memPath !== undefined) throw new QemuError(`Property '${t}.mem-path' not found`);
    if (this.type !== 'memory-backend-memfd' && (props.hugetlb !== undefined || props.hugetlbsize !== undefined))
      throw new QemuError(`Property '${t}.${props.hugetlb !== undefined ? 'hugetlb' : 'hugetlbsize'}' not found`);
  }

  /** The QMP Memdev record (query-memdev). */
  toMemdev(): Record<string, unknown> {
    return {
      id: this.id,
      size: this.size,
      merge: this.merge,
      dump: this.dump,
      prealloc: this.prealloc,
      share: this.share,
      reserve: this.reserve,
      'host-nodes': [...this.hostNodes],
      policy: this.policy,
    };
  }

  /**
   * user_creatable_complete -> host_memory_backend_memory_complete: map the
   * memory, register its RAMBlock, apply the settings, preallocate.
   */
  complete(vmm: VmmHost, ramList: RamList, mounts: Readonly<Record<string, Mount>> = DEFAULT_MOUNTS): void {
    if (this.block) throw new QemuError(`backend '${this.id}' is already complete`);
    if (!this.size) throw new QemuError(`can't create backend with size 0`);
    const plan = this.plan(vmm.k, mounts);
    const mappedSize = alignUp(this.size, plan.pageSize);
    const r = qemuRamMmap(vmm, mappedSize, plan.align, plan.flags);
    if (r < 0) {
      if (this.type === 'memory-backend-ram') throw errorWithErrno(r, `cannot set up guest memory '${this.id}'`);
      throw errorWithErrno(r, 'unable to map backing store for guest RAM');
    }
    this.host = r;
    this.pageSize = plan.pageSize;
    this.mmapFlags = plan.flags;
    const usedLength = this.type === 'memory-backend-ram' ? alignUp(this.size, PAGE_SIZE) : this.size;
    try {
      this.block = new RAMBlock(this.id, ramList.findRamOffset(usedLength), usedLength, usedLength, r, plan.pageSize, this);
      ramList.add(this.block);
      this.ramBlockAddAdvice(vmm, mappedSize);
      if (plan.aligned && this.size % plan.pageSize !== 0)
        throw new QemuError(`backend '${this.type}' memory size must be multiple of ${sizeToStr(plan.pageSize)}`);
      this.applySettings(vmm);
    } catch (e) {
      if (this.block) ramList.blocks.splice(ramList.blocks.indexOf(this.block), 1);
      this.block = null;
      vmm.k.munmap(vmm.process, r, mappedSize);
      throw e;
    }
  }

  /** The backend's alloc hook: how its memory is mapped. */
  private plan(k: Kernel, mounts: Readonly<Record<string, Mount>>): MappingPlan {
    const noreserve = this.reserve ? 0 : MAP.MAP_NORESERVE;
    const shareFlag = this.share ? MAP.MAP_SHARED : MAP.MAP_PRIVATE;
    switch (this.type) {
      case 'memory-backend-ram':
        // qemu_anon_ram_alloc: QEMU_VMALLOC_ALIGN so THPs can back guest RAM.
        return { flags: shareFlag | MAP.MAP_ANONYMOUS | noreserve, pageSize: PAGE_SIZE, align: QEMU_VMALLOC_ALIGN, aligned: false };
      case 'memory-backend-memfd': {
        if (!this.hugetlb) {
          // qemu_memfd_create truncates the memfd to `size`; qemu_ram_alloc_from_fd then wants size rounded up to
          // a page, and a file shorter than that is refused before the backend's own alignment check.
          if (this.size % PAGE_SIZE)
            throw new QemuError(
              `${this.id} backing store size 0x${this.size.toString(16)} is too small for 'size' option 0x${alignUp(this.size, PAGE_SIZE).toString(16)} plus 'offset' option 0x0`,
            );
          return { flags: shareFlag | MAP.MAP_ANONYMOUS | noreserve, pageSize: PAGE_SIZE, align: PAGE_SIZE, aligned: true };
        }
        const hs = this.hugetlbsize || (k.hugetlb.defaultHstate?.size ?? 0);
        if (!k.hugetlb.bySize(hs)) throw new QemuError(`failed to create memfd: ${strerror(-ERRNO.EINVAL)}`);
        // ftruncate of a hugetlb memfd to a size that is not a multiple of its page size.
        if (this.size % hs) throw new QemuError(`failed to resize memfd to ${this.size}: ${strerror(-ERRNO.EINVAL)}`);
        return { flags: shareFlag | MAP.MAP_ANONYMOUS | noreserve | hugeFlags(hs), pageSize: hs, align: hs, aligned: true };
      }
      case 'memory-backend-file': {
        if (this.memPath === undefined) throw new QemuError('mem-path property not set');
        const mount = findMount(mounts, this.memPath);
        if (!mount) throw new QemuError(`can't open backing store ${this.memPath} for guest RAM: ${strerror(-ERRNO.ENOENT)}`);
        if (mount.fstype === 'tmpfs')
          return { flags: shareFlag | MAP.MAP_ANONYMOUS | noreserve, pageSize: PAGE_SIZE, align: PAGE_SIZE, aligned: true };
        if (!k.hugetlb.bySize(mount.pagesize))
          throw new QemuError(`can't open backing store ${this.memPath} for guest RAM: ${strerror(-ERRNO.EINVAL)}`);
        return {
          flags: shareFlag | MAP.MAP_ANONYMOUS | noreserve | hugeFlags(mount.pagesize),
          pageSize: mount.pagesize,
          align: mount.pagesize,
          aligned: true,
        };
      }
    }
  }

  /**
   * ram_block_add's advice over the whole block: memory_try_enable_merging
   * (anonymous RAM, machine mem-merge), qemu_ram_setup_dump,
   * QEMU_MADV_HUGEPAGE and MADV_DONTFORK. Failures are ignored, as QEMU does.
   */
  private ramBlockAddAdvice(vmm: VmmHost, len: number): void {
    const { k, process: p } = vmm;
    if (this.type === 'memory-backend-ram' && vmm.memMerge) k.madvise(p, this.host, len, MADV.MADV_MERGEABLE);
    if (!vmm.dumpGuestCore) k.madvise(p, this.host, len, MADV.MADV_DONTDUMP);
    k.madvise(p, this.host, len, MADV.MADV_HUGEPAGE);
    k.madvise(p, this.host, len, MADV.MADV_DONTFORK);
  }

  /** host_memory_backend_apply_settings: merge, dump, the NUMA policy, prealloc. */
  private applySettings(vmm: VmmHost): void {
    const { k, process: p } = vmm;
    if (this.merge) k.madvise(p, this.host, this.size, MADV.MADV_MERGEABLE);
    if (!this.dump) k.madvise(p, this.host, this.size, MADV.MADV_DONTDUMP);
    this.applyPolicy(vmm);
    if (this.prealloc) this.preallocate(vmm);
  }

  /**
   * The NUMA policy: QEMU's own checks, then mbind over the backend with
   * MPOL_MF_STRICT|MPOL_MF_MOVE (so memory already there moves or the call
   * fails), `preferred` as MPOL_PREFERRED_MANY (numa_has_preferred_many).
   */
  private applyPolicy(vmm: VmmHost): void {
    const n = this.hostNodes.length;
    if (n && this.policy === 'default')
      throw new QemuError('host-nodes must be empty for policy default, or you should explicitly specify a policy other than default');
    if (!n && this.policy !== 'default') throw new QemuError(`host-nodes must be set for policy ${this.policy}`);
    if (!n) return;
    const mode = this.policy === 'preferred' ? MPOL.MPOL_PREFERRED_MANY : HOST_MEM_POLICIES.indexOf(this.policy);
    const r = sysMbind(vmm.k, vmm.process.mainThread, this.host, this.size, mode, this.hostNodes, MPOL.MPOL_MF_STRICT | MPOL.MPOL_MF_MOVE);
    if (r < 0) throw errorWithErrno(r, 'cannot bind memory to host NUMA nodes');
  }

  /**
   * qemu_prealloc_mem / touch_all_pages: get_memset_num_threads threads
   * (at most prealloc-threads, 16, the host's CPUs, the pages, and one per
   * 64 MiB), each touching its share of pages, one write per page, on a
   * CPU of the prealloc context (thread i on the i-th CPU of the context's
   * affinity, all host CPUs without one). Threads on different CPUs run in
   * parallel: the caller is charged the busiest CPU's time.
   */
  private preallocate(vmm: VmmHost): void {
    const k = vmm.k;
    const hpagesize = this.pageSize;
    const numpages = Math.ceil(this.size / hpagesize);
    const cpus = preallocCpus(k, this.preallocContext);
    const threads = Math.max(
      1,
      Math.min(
        this.preallocThreads,
        MAX_MEM_PREALLOC_THREAD_COUNT,
        k.host.cpuNode.size,
        numpages,
        Math.max(1, Math.floor((hpagesize * numpages) / (64 * MiB))),
      ),
    );
    const perThread = Math.floor(numpages / threads);
    const leftover = numpages % threads;
    const busy = new Map<number, number>();
    let addr = this.host;
    for (let i = 0; i < threads; i++) {
      const pages = perThread + (i < leftover ? 1 : 0);
      const cpu = cpus[i % cpus.length]!;
      const t = vmm.preallocThread(cpu);
      const time = { ns: 0 };
      const res = k.runAsTask(time, () => k.access(t, addr, pages * hpagesize, hpagesize, true, 0));
      busy.set(cpu, (busy.get(cpu) ?? 0) + time.ns);
      if (res.signal || res.blocked !== undefined)
        throw new QemuError(`qemu_prealloc_mem: preallocating memory failed: ${strerror(-ERRNO.EFAULT)}`);
      addr += pages * hpagesize;
    }
    k.charge(Math.max(...busy.values()));
  }
}

/** MAP_HUGE_2MB / MAP_HUGE_1GB for a huge page size. */
function hugeFlags(size: number): number {
  return MAP.MAP_HUGETLB | (size === PUD_SIZE ? MAP.MAP_HUGE_1GB : MAP.MAP_HUGE_2MB);
}

/** The mount holding `path`: the longest mount point that is a prefix of it. */
function findMount(mounts: Readonly<Record<string, Mount>>, path: string): Mount | undefined {
  let best: string | undefined;
  for (const m of Object.keys(mounts))
    if ((path === m || path.startsWith(m.endsWith('/') ? m : `${m}/`)) && (!best || m.length > best.length)) best = m;
  return best === undefined ? undefined : mounts[best];
}

/** The CPUs prealloc threads may run on: the thread context's affinity, or every host CPU. */
function preallocCpus(k: Kernel, ctx: ThreadContextProps | undefined): number[] {
  const all = [...k.host.cpuNode.keys()].sort((a, b) => a - b);
  if (ctx?.['cpu-affinity']?.length) {
    const bad = ctx['cpu-affinity'].find((c) => !k.host.cpuNode.has(c));
    if (bad !== undefined) throw new QemuError(`Setting CPU affinity failed: ${strerror(-ERRNO.EINVAL)}`);
    return [...ctx['cpu-affinity']];
  }
  if (ctx?.['node-affinity']?.length) {
    const cpus = all.filter((c) => ctx['node-affinity']!.includes(k.host.cpuNode.get(c)!));
    if (!cpus.length) throw new QemuError(`Setting CPU affinity failed: ${strerror(-ERRNO.EINVAL)}`);
    return cpus;
  }
  return all;
}

/**
 * qemu_ram_mmap: reserve size + align bytes PROT_NONE (MAP_PRIVATE|
 * MAP_ANONYMOUS|MAP_NORESERVE), map the memory MAP_FIXED at the first
 * `align`-aligned address inside, give back the part before it, and keep
 * one PROT_NONE guard page after it. Returns the address, or -errno.
 */
export function qemuRamMmap(vmm: VmmHost, size: number, align: number, flags: number): SysRet {
  const { k, process: p } = vmm;
  const total = size + align;
  const guardptr = k.mmap(p, 0, total, PROT.PROT_NONE, MAP.MAP_PRIVATE | MAP.MAP_ANONYMOUS | MAP.MAP_NORESERVE);
  if (guardptr < 0) return guardptr;
  const ptr = alignUp(guardptr, align);
  const offset = ptr - guardptr;
  const r = k.mmap(p, ptr, size, PROT.PROT_READ | PROT.PROT_WRITE, flags | MAP.MAP_FIXED);
  if (r < 0) {
    k.munmap(p, guardptr, total);
    return r;
  }
  if (offset > 0) k.munmap(p, guardptr, offset);
  const rest = total - offset;
  if (rest > size + PAGE_SIZE) k.munmap(p, ptr + size + PAGE_SIZE, rest - size - PAGE_SIZE);
  return ptr;
}
