/**
 * A virtual machine as QEMU/KVM runs it on the simulated host: the VMM is
 * a host process; guest RAM is RAM blocks mapped in its address space from
 * memory backends (memory_backend.ts), laid out in guest-physical memory by
 * the PC machine (pc.ts); vCPUs are host threads of that process with a CPU
 * affinity; vNUMA nodes map guest nodes to memdevs and vCPUs.
 *
 * Guest accesses go through two translations. GPA -> HVA is the memslot
 * (a piece of a RAM block mapped at a GPA). HVA -> host frame is the VMM's
 * page table. KVM's EPT caches the composition: a guest access to a GPA the
 * EPT does not map exits with an EPT violation, which KVM resolves by
 * faulting the HVA in on the vCPU's host thread (GUP: a host page fault if
 * the host has not backed it) and mapping the frame in the EPT at the
 * largest size both the host mapping and the memslot allow
 * (kvm_mmu_max_mapping_level). The EPT is modelled as a per-memslot cache
 * of the host frame behind each guest page; an entry is valid while the
 * host still maps that frame there (MMU notifiers invalidate it when the
 * host unmaps, migrates, collapses or splits), so an access after a host
 * change exits again. A read of memory the host never backed maps the
 * (huge) zero page read-only; the first write exits again and the host
 * fault copies it.
 *
 * Costs: an EPT violation costs the profile's `kvm_ept_violation` (name
 * configurable), plus whatever host fault it causes (charged by the
 * kernel). The data access itself is not charged here: its latency depends
 * on the working set, which the guest workload engine knows (see
 * src/workload/access_model.ts); it can use the effective mapping size for
 * TLB reach, min(guest page size, EPT mapping size) (tlbMappingSize).
 */
import { killReason } from '../kernel/oom_kill.ts';
import { exitProcess } from '../kernel/fork.ts';
import type { CpuWork, Kernel } from '../kernel/kernel.ts';
import type { Process, Thread } from '../kernel/sched.ts';
import { ERRNO, PAGE_SIZE, PMD_SIZE, PUD_SIZE, alignDown, alignUp } from '../kernel/uapi.ts';
import { followPage, mappingSize } from '../kernel/memory.ts';
// translate() leaves the leaf size in the live binding translatedSize, as the workload engine reads it.
import * as hostMemory from '../kernel/memory.ts';
import type { GuestMemory, GuestRamRange } from '../hw/guest_memory.ts';
import {
  DEFAULT_MOUNTS,
  HostMemoryBackend,
  QemuError,
  strerror,
  type MemoryBackendProps,
  type Mount,
  type VmmHost,
} from './memory_backend.ts';
import { RamList, type RAMBlock } from './ram_block.ts';
import { Monitor } from './monitor.ts';
import { Ept, EPT_NONE, EPT_ZERO } from './ept.ts';
import {
  MemoryRegion,
  flatRam,
  pcDeviceMemoryRange,
  pcE820,
  pcMemoryInit,
  pcRamSplit,
  type E820Entry,
  type PcMachineType,
  type PcRamSplit,
} from './pc.ts';

/** `-numa node,nodeid=N,cpus=...,memdev=ID`. A node without memdev is memoryless. */
export interface NumaNodeConfig {
  nodeid?: number;
  cpus?: number[];
  memdev?: string;
}

/** `-smp`: the vCPU count and topology (QEMU >= 6.2 prefers cores over sockets). */
export interface SmpConfig {
  cpus: number;
  sockets?: number;
  cores?: number;
  threads?: number;
}

/** A VM as QEMU's command line describes it (names as QEMU spells them). */
export interface VmConfig {
  /** -name */
  name?: string;
  /** -machine type: q35 (default) or pc (i440fx). */
  machine?: PcMachineType;
  /** -machine max-ram-below-4g= */
  'max-ram-below-4g'?: number;
  /** -machine mem-merge= (default on): the default of every backend's `merge`. */
  'mem-merge'?: boolean;
  /** -machine dump-guest-core= (default on): the default of every backend's `dump`. */
  'dump-guest-core'?: boolean;
  /** -machine memory-backend=ID: the machine's RAM is this memdev (instead of the default "pc.ram"). */
  'memory-backend'?: string;
  /**
   * -m: guest RAM size. Default: 128 MiB (QEMU's), or with NUMA memdevs
   * their total (QEMU needs -m to match them; here it is implied).
   */
  m?: number;
  /** -m ...,slots=N: memory device slots (pc-dimm); needs maxmem. */
  slots?: number;
  /** -m ...,maxmem=SIZE: the most RAM with memory devices plugged (the device-memory region). */
  maxmem?: number;
  /** -smp (default 1). */
  smp?: number | SmpConfig;
  /** -object memory-backend-*: created in order, before the machine. */
  objects?: MemoryBackendProps[];
  /** -numa node,... in order (nodeid defaults to the position). */
  numa?: NumaNodeConfig[];
  /** Host CPU of each vCPU thread (as libvirt's vcpupin); default: vCPU i on the i-th host CPU, round-robin. */
  vcpuPin?: number[];
  /** Host CPU of the VMM's main thread (libvirt's emulatorpin); default: the first CPU of host node 0. */
  emulatorCpu?: number;
  /** Filesystems memory-backend-file can use (default: DEFAULT_MOUNTS). */
  mounts?: Record<string, Mount>;
  /** Cost-profile entry names the VMM charges. */
  costs?: { eptViolation?: string };
}

/** A vCPU: a host thread of the VMM, in a guest NUMA node. */
export interface VCpu {
  index: number;
  thread: Thread;
  /** Guest NUMA node (0 without vNUMA). */
  node: number;
  socketId: number;
  coreId: number;
  threadId: number;
  qomPath: string;
}

/** A guest NUMA node: its memdev (if any), vCPUs and size. */
export interface GuestNumaNode {
  nodeid: number;
  memdev: HostMemoryBackend | null;
  cpus: number[];
  size: number;
}

/**
 * A KVM memslot: one RAM section (a piece of a RAM block mapped at a GPA),
 * with the EPT entries KVM built for it: per guest page, the host frame + 1
 * it maps (0: none, -1: the zero page, read-only), kept per 2M as a run of
 * frames where it is one (ept.ts).
 */
export interface MemSlot {
  gpa: number;
  size: number;
  hva: number;
  block: RAMBlock;
  blockOffset: number;
  /** Guest NUMA node of the memory. */
  node: number;
  /** The alias the section comes from (ram-below-4g / ram-above-4g). */
  via: string;
  ept: Ept | null;
}

/** A memory device plugged with device_add: a pc-dimm (PCDIMMDevice), its memdev mapped in device memory. */
export interface MemoryDevice {
  type: 'dimm';
  id: string;
  /** GPA of its first byte (the "addr" property). */
  addr: number;
  size: number;
  slot: number;
  /** Guest NUMA node (the "node" property). */
  node: number;
  memdev: HostMemoryBackend;
}

/** ACPI_MAX_RAM_SLOTS: the most memory slots the PC machines' ACPI tables describe. */
const ACPI_MAX_RAM_SLOTS = 256;

/** QEMU's run states as query-status names them (the ones modelled). */
export type RunState = 'running' | 'paused' | 'shutdown' | 'inmigrate' | 'postmigrate';

const DEFAULT_RAM_SIZE = 128 * 2 ** 20;

/** Counters of the two-dimensional translation. */
export interface VmStats {
  eptViolations: number;
  /** Host page faults taken while resolving EPT violations. */
  hostFaults: number;
}

export class Vm implements GuestMemory {
  readonly name: string | undefined;
  readonly machineType: PcMachineType;
  readonly process: Process;
  readonly ramList = new RamList();
  readonly backends = new Map<string, HostMemoryBackend>();
  readonly split: PcRamSplit;
  /** The machine's RAM region (pc.ram, or the memory-backend memdev's). */
  readonly ram: MemoryRegion;
  /** The system address space's root region. */
  readonly system: MemoryRegion;
  readonly slots: MemSlot[];
  readonly vcpus: VCpu[] = [];
  /**
   * Where QEMU's own threads run (main loop, migration, postcopy fault
   * thread): the emulator CPU when one is set (as libvirt's emulatorpin
   * pins them), else any CPU the scheduler picks.
   */
  readonly emulatorCpus: readonly number[] | null;

  /** CPU time one of QEMU's own threads spends (named `thread`), where those threads run. */
  qemuThread(thread: string): CpuWork {
    return { name: `${this.name}/${thread}`, cpus: this.emulatorCpus };
  }
  readonly numaNodes: GuestNumaNode[];
  /** warn_report messages of the configuration. */
  readonly warnings: string[] = [];
  readonly stats: VmStats = { eptViolations: 0, hostFaults: 0 };
  /** Cost of one EPT violation (ns), from the cost profile. */
  readonly eptViolationNs: number;
  private readonly ramBytes: number;
  private readonly preallocThreads = new Map<number, Thread>();
  private qmp: Monitor | null = null;
  /** The -m slots (memory device slots) and maxmem (ram_size when not given). */
  readonly ramSlots: number;
  readonly maxramSize: number;
  /** The device-memory region (pc-dimm's address space), when maxmem is above the RAM size. */
  readonly deviceMemory: { base: number; size: number; region: MemoryRegion } | null = null;
  /** Memory devices plugged (device_add), in plug order. */
  readonly memoryDevices: MemoryDevice[] = [];
  /**
   * Called once a memory device is plugged and its memslot exists: the
   * ACPI memory hotplug notification the guest handles (run.ts connects
   * the guest kernel; VMM and guest do not import each other).
   */
  readonly onMemoryPlug: ((d: MemoryDevice) => void)[] = [];
  /** query-status: running until `stop`, `quit` or the OOM killer. */
  runState: RunState = 'running';
  /** Called on stop/cont (the guest's vCPUs stop or run again: run.ts stops or starts guest workloads). */
  readonly onRunState: ((s: RunState) => void)[] = [];
  private vmm: VmmHost | null = null;
  private mounts: Readonly<Record<string, Mount>> = DEFAULT_MOUNTS;

  /**
   * Start a VM: the VMM process, the backends (-object, then the default
   * memdev), the machine's RAM and layout, the vCPU threads. Throws
   * QemuError with QEMU's message for a configuration QEMU refuses.
   */
  constructor(
    readonly k: Kernel,
    cfg: VmConfig = {},
  ) {
    this.eptViolationNs = k.costs.nsOf(
      cfg.costs?.eptViolation ?? 'kvm_ept_violation',
      'the VMM charges it for every EPT violation (a guest access KVM must resolve). Add it to the profile (or name another entry with VmConfig.costs.eptViolation).',
    );
    this.name = cfg.name;
    this.machineType = cfg.machine ?? 'q35';
    const smp = normalizeSmp(cfg.smp);
    const emulatorCpu = cfg.emulatorCpu ?? k.host.nodes[0]!.cpus[0] ?? 0;
    if (!k.host.cpuNode.has(emulatorCpu)) throw new QemuError(`emulator CPU ${emulatorCpu} does not exist on the host`);
    this.emulatorCpus = cfg.emulatorCpu !== undefined ? [cfg.emulatorCpu] : null;
    this.process = k.createProcess('qemu-system-x86', emulatorCpu);
    // QEMU exits on a configuration error: the VMM's memory goes with it.
    try {
      const mounts = cfg.mounts ?? DEFAULT_MOUNTS;
      const vmm = this.vmmHost(cfg);
      this.vmm = vmm;
      this.mounts = mounts;
      for (const o of cfg.objects ?? []) this.createBackend(o, vmm, mounts);
      const nodesCfg = cfg.numa ?? [];
      const nodeMemdevs = this.resolveNumaMemdevs(nodesCfg);
      this.ramBytes = this.resolveRamSize(cfg, nodeMemdevs);
      [this.maxramSize, this.ramSlots] = memoryOptions(cfg, this.ramBytes);
      this.split = pcRamSplit(this.machineType, this.ramBytes, cfg['max-ram-below-4g']);
      this.warnings.push(...this.split.warnings);
      this.ram = this.machineRam(cfg, nodeMemdevs, vmm, mounts);
      this.system = pcMemoryInit(this.ram, this.split);
      this.deviceMemory = this.deviceMemoryInit();
      this.numaNodes = this.buildNumaNodes(nodesCfg, nodeMemdevs, smp);
      this.slots = this.buildSlots();
      this.createVcpus(smp, cfg.vcpuPin);
    } catch (e) {
      this.destroy();
      throw e;
    }
  }

  // --- construction ---------------------------------------------------------------

  private vmmHost(cfg: VmConfig): VmmHost {
    const k = this.k;
    return {
      k,
      process: this.process,
      memMerge: cfg['mem-merge'] ?? true,
      dumpGuestCore: cfg['dump-guest-core'] ?? true,
      preallocThread: (cpu) => {
        let t = this.preallocThreads.get(cpu);
        if (!t) {
          const r = k.createThread(this.process, cpu);
          if (typeof r === 'number') throw new QemuError(`cannot create prealloc thread on CPU ${cpu}`);
          t = r;
          this.preallocThreads.set(cpu, t);
        }
        return t;
      },
    };
  }

  private createBackend(props: MemoryBackendProps, vmm: VmmHost, mounts: Readonly<Record<string, Mount>>): HostMemoryBackend {
    try {
      if (this.backends.has(props.id)) throw new QemuError(`attempt to add duplicate property '${props.id}' to object (type 'container')`);
      const b = new HostMemoryBackend(props, vmm);
      b.complete(vmm, this.ramList, mounts);
      this.backends.set(b.id, b);
      return b;
    } catch (e) {
      // The object whose creation failed, so that callers can point at its configuration.
      if (e instanceof QemuError) e.object ??= props.id;
      throw e;
    }
  }

  /**
   * pc_memory_init's memory devices part: with maxmem above the RAM size, a
   * "device-memory" container in the system address space
   * (machine_memory_devices_init).
   */
  private deviceMemoryInit(): { base: number; size: number; region: MemoryRegion } | null {
    if (this.maxramSize <= this.ramBytes) return null;
    if (this.ramSlots > ACPI_MAX_RAM_SLOTS) throw new QemuError(`unsupported amount of memory slots: ${this.ramSlots}`);
    if (this.maxramSize % PAGE_SIZE) throw new QemuError(`maximum memory size must by aligned to multiple of ${PAGE_SIZE} bytes`);
    const r = pcDeviceMemoryRange(this.split, this.ramBytes, this.maxramSize, this.ramSlots);
    const region = MemoryRegion.container('device-memory', BigInt(r.size));
    this.system.addSubregion(r.base, region);
    return { ...r, region };
  }

  /** parse_numa_node: each node's memdev, checked. */
  private resolveNumaMemdevs(nodes: NumaNodeConfig[]): (HostMemoryBackend | null)[] {
    const seen = new Set<number>();
    return nodes.map((n, i) => {
      const id = n.nodeid ?? i;
      if (id >= 128) throw new QemuError(`Max number of NUMA nodes reached: ${id}`);
      if (seen.has(id)) throw new QemuError(`Duplicate NUMA nodeid: ${id}`);
      seen.add(id);
      if (n.memdev === undefined) return null;
      const b = this.backends.get(n.memdev);
      if (!b) throw new QemuError(`memdev=${n.memdev} is ambiguous`);
      return b;
    });
  }

  /** The RAM size: -m, checked against the NUMA memdevs (numa_complete_configuration) and memory-backend. */
  private resolveRamSize(cfg: VmConfig, memdevs: (HostMemoryBackend | null)[]): number {
    const numaTotal = memdevs.reduce((s, b) => s + (b?.size ?? 0), 0);
    if (cfg['memory-backend'] !== undefined) {
      if (memdevs.some((b) => b)) throw new QemuError("'-machine memory-backend' and '-numa memdev' properties are mutually exclusive");
      const b = this.backends.get(cfg['memory-backend']);
      if (!b) throw new QemuError(`Memory backend '${cfg['memory-backend']}' not found`);
      if (cfg.m !== undefined && alignUp(cfg.m, 8192) !== b.size)
        throw new QemuError("Size specified by -m option must match size of explicitly specified 'memory-backend' property");
      return b.size;
    }
    // -m is rounded up to 8 KiB (machine_set_mem: QEMU_ALIGN_UP(size, 8192)).
    const size = cfg.m !== undefined ? alignUp(cfg.m, 8192) : numaTotal || DEFAULT_RAM_SIZE;
    if (memdevs.length && !memdevs.some((b) => b))
      throw new QemuError(
        'Default splitting of RAM between nodes is no longer supported, Use explicit RAM allocation per node, if any node does not have RAM, specify it explicitly',
      );
    if (memdevs.length && size !== numaTotal)
      throw new QemuError(`total memory for NUMA nodes (0x${numaTotal.toString(16)}) should equal RAM size (0x${size.toString(16)})`);
    return size;
  }

  /** machine->ram: the memory-backend memdev, the NUMA memdevs in a "pc.ram" container, or a default "pc.ram" memdev. */
  private machineRam(
    cfg: VmConfig,
    memdevs: (HostMemoryBackend | null)[],
    vmm: VmmHost,
    mounts: Readonly<Record<string, Mount>>,
  ): MemoryRegion {
    const consume = (b: HostMemoryBackend): MemoryRegion => {
      if (b.isMapped) throw new QemuError(`memory backend ${b.id} can't be used multiple times.`);
      b.isMapped = true;
      return MemoryRegion.ram(b.id, b.block!);
    };
    if (cfg['memory-backend'] !== undefined) return consume(this.backends.get(cfg['memory-backend'])!);
    if (memdevs.some((b) => b)) {
      // numa_init_memdev_container: the node memdevs back to back in the "pc.ram" container.
      const container = MemoryRegion.container('pc.ram', BigInt(this.ramBytes));
      let addr = 0;
      for (const b of memdevs) {
        if (!b) continue;
        container.addSubregion(addr, consume(b));
        addr += b.size;
      }
      return container;
    }
    // create_default_memdev: memory-backend-ram "pc.ram" of -m's size.
    return consume(this.createBackend({ 'qom-type': 'memory-backend-ram', id: 'pc.ram', size: this.ramBytes }, vmm, mounts));
  }

  /** The guest NUMA nodes with their CPUs (unlisted CPUs: node of socket % nodes, as x86_get_default_cpu_node_id). */
  private buildNumaNodes(nodes: NumaNodeConfig[], memdevs: (HostMemoryBackend | null)[], smp: Required<SmpConfig>): GuestNumaNode[] {
    const out: GuestNumaNode[] = nodes.map((n, i) => ({
      nodeid: n.nodeid ?? i,
      memdev: memdevs[i] ?? null,
      cpus: [],
      size: memdevs[i]?.size ?? 0,
    }));
    if (!out.length) return out;
    out.sort((a, b) => a.nodeid - b.nodeid);
    out.forEach((n, i) => {
      if (n.nodeid !== i) throw new QemuError(`numa: Node ID missing: ${i}`);
    });
    const explicit = nodes.some((n) => n.cpus?.length);
    const assigned = new Map<number, number>();
    nodes.forEach((n, i) => {
      for (const c of n.cpus ?? []) {
        if (c >= smp.cpus) throw new QemuError(`CPU index (${c}) should be smaller than maxcpus (${smp.cpus})`);
        assigned.set(c, n.nodeid ?? i);
      }
    });
    const missing: number[] = [];
    for (let c = 0; c < smp.cpus; c++) {
      if (assigned.has(c)) continue;
      if (explicit) missing.push(c);
      const socket = Math.floor(c / (smp.cores * smp.threads));
      assigned.set(c, explicit ? out[0]!.nodeid : out[socket % out.length]!.nodeid);
    }
    if (missing.length)
      this.warnings.push(
        `CPU(s) not present in any NUMA nodes: CPU ${missing.join(' CPU ')}; All CPU(s) up to maxcpus should be described in NUMA config, ability to start up with partial NUMA mappings is obsoleted and will be removed in future`,
      );
    for (const [c, id] of [...assigned].sort((a, b) => a[0] - b[0])) out.find((n) => n.nodeid === id)!.cpus.push(c);
    return out;
  }

  /**
   * The memslots: the flat RAM view, each section tagged with its guest
   * node. KVM maps whole pages (kvm_align_section): a section that does not
   * start on a page boundary starts at the next one, and its size is
   * truncated to whole pages, so a backend whose size is not a multiple of
   * 4 KiB (memory-backend-ram accepts one) leaves its last partial page out
   * of guest RAM. If the padded start's HVA is not page aligned either (a
   * vNUMA node placed after such a backend), KVM_SET_USER_MEMORY_REGION
   * fails with EINVAL and QEMU aborts.
   */
  private buildSlots(): MemSlot[] {
    const slots: MemSlot[] = [];
    for (const s of flatRam(this.system)) {
      const gpa = alignUp(s.gpa, PAGE_SIZE);
      const delta = gpa - s.gpa;
      const size = delta < s.size ? alignDown(s.size - delta, PAGE_SIZE) : 0;
      if (!size) continue;
      const hva = s.block.host + s.blockOffset + delta;
      if (hva % PAGE_SIZE) {
        const e = new QemuError(`kvm_set_phys_mem: error registering slot: ${strerror(-ERRNO.EINVAL)}`);
        e.object = s.block.idstr;
        throw e;
      }
      slots.push({
        gpa,
        size,
        hva,
        block: s.block,
        blockOffset: s.blockOffset + delta,
        node: this.numaNodes.find((n) => n.memdev?.block === s.block)?.nodeid ?? 0,
        via: s.via,
        ept: null,
      });
    }
    return slots;
  }

  /** The vCPU threads (qemu_init_vcpu): one host thread each, pinned as configured. */
  private createVcpus(smp: Required<SmpConfig>, pin: number[] | undefined): void {
    const hostCpus = [...this.k.host.cpuNode.keys()].sort((a, b) => a - b);
    for (let i = 0; i < smp.cpus; i++) {
      const cpu = pin?.[i] ?? hostCpus[i % hostCpus.length]!;
      const t = this.k.createThread(this.process, cpu);
      if (typeof t === 'number') throw new QemuError(`vCPU ${i}: host CPU ${cpu} does not exist`);
      const perSocket = smp.cores * smp.threads;
      this.vcpus.push({
        index: i,
        thread: t,
        node: this.numaNodes.find((n) => n.cpus.includes(i))?.nodeid ?? 0,
        socketId: Math.floor(i / perSocket),
        coreId: Math.floor((i % perSocket) / smp.threads),
        threadId: i % smp.threads,
        qomPath: `/machine/unattached/device[${i}]`,
      });
    }
  }

  // --- GuestMemory -----------------------------------------------------------------

  /** Bytes of guest RAM (ram_size). */
  get ramSize(): number {
    return this.ramBytes;
  }

  /** The e820 RAM ranges, split where the guest node changes (as SRAT describes them), in GPA order. */
  ramRanges(): readonly GuestRamRange[] {
    const out: GuestRamRange[] = [];
    for (const s of this.slots) {
      const last = out[out.length - 1];
      if (last && last.node === s.node && last.gpa + last.size === s.gpa) out[out.length - 1] = { ...last, size: last.size + s.size };
      else out.push({ gpa: s.gpa, size: s.size, node: s.node });
    }
    return out;
  }

  /** QEMU's e820 table (etc/e820). */
  e820(): E820Entry[] {
    return pcE820(this.split);
  }

  /**
   * vCPU `vcpu` accesses every `stride` bytes of [gpa, gpa + len): through
   * the EPT, exiting on EPT violations that the host resolves on the
   * vCPU's thread. Returns the virtual ns spent in EPT violations and host
   * faults (also charged to the running task, or the clock).
   */
  access(vcpu: number, gpa: number, len: number, stride: number, write: boolean, fill = 1): number {
    const cpu = this.vcpus[vcpu];
    if (!cpu) throw new RangeError(`no vCPU ${vcpu}`);
    if (!(stride > 0)) throw new RangeError(`stride must be positive`);
    const k = this.k;
    const time = { ns: 0 };
    const slot = this.slotOf(gpa);
    k.runAsTask(time, () => {
      // Within one memslot (a guest fault's page, most accesses): no list of segments.
      if (slot && gpa + len <= slot.gpa + slot.size) {
        if (len > 0) this.accessSlot(cpu.thread, slot, gpa, gpa + len, stride, write, fill);
        return;
      }
      for (const seg of this.segments(gpa, len)) {
        const first = seg.gpa + ((stride - ((seg.gpa - gpa) % stride)) % stride);
        if (first < seg.gpa + seg.size) this.accessSlot(cpu.thread, seg.slot, first, seg.gpa + seg.size, stride, write, fill);
      }
    });
    k.charge(time.ns);
    return time.ns;
  }

  /**
   * GuestMemory.writePages: n one-page stores of `fill` by vCPU `vcpu` from
   * gpa (page aligned), as n calls of access(vcpu, gpa + j * 4K, 4K, 4K,
   * true, fill) would make them, ns[j] what call j would return. A run of
   * pages inside one host PTE table that the EPT does not map and the host
   * has not backed (a plain anonymous first touch: memory.ts
   * writeFaultAnonRun) is faulted in at once: one EPT violation per page
   * counted and charged, the host's faults, then the EPT entries a run of
   * frames at a time; each charge is the one the page's call would make,
   * in the same order, so the sums are the same. Any other page goes
   * through access. Returns false, having done nothing, outside a task or
   * when background work falls due (GuestMemory.writePages).
   */
  writePages(vcpu: number, gpa: number, n: number, fill: number, ns: Float64Array): boolean {
    const k = this.k;
    if (k.taskTime === null || !this.nothingDue()) return false;
    const cpu = this.vcpus[vcpu];
    const slot = this.slotOf(gpa);
    for (let j = 0; j < n;) {
      const g = gpa + j * PAGE_SIZE;
      let done = 0;
      if (cpu && slot && g % PAGE_SIZE === 0 && g + PAGE_SIZE <= slot.gpa + slot.size) {
        const hva = slot.hva + (g - slot.gpa);
        const i0 = (g - slot.gpa) / PAGE_SIZE;
        const m = Math.min(n - j, (PMD_SIZE - (hva % PMD_SIZE)) / PAGE_SIZE, slot.size / PAGE_SIZE - i0);
        const none = !slot.ept || slot.ept.noneIn(i0, m);
        if (none) done = hostMemory.writeFaultAnonRun(k, cpu.thread, hva, m, fill, runFrames);
        if (done) this.chargeRun(slot, cpu.thread, i0, done, ns, j);
      }
      if (!done) {
        ns[j] = this.access(vcpu, g, PAGE_SIZE, PAGE_SIZE, true, fill);
        done = 1;
      }
      j += done;
    }
    return true;
  }

  /**
   * Whether no background work (the sampler, kernel threads) falls due
   * within a fault now: inside a task, where the clock stands still,
   * nothing else then runs during writePages to see the state between two
   * of its pages.
   */
  nothingDue(): boolean {
    const k = this.k;
    return !k.events.size || (k.events.peekTime() ?? Infinity) > k.clock.now() + k.hot.faultWrite;
  }

  /**
   * After writeFaultAnonRun faulted in the m pages of slot entries i0...
   * (frames in runFrames): what each page's access would have counted and
   * charged (its EPT violation, then its host fault), into ns[at + q], and
   * the EPT entries, a run of consecutive frames at a time.
   */
  private chargeRun(slot: MemSlot, t: Thread, i0: number, m: number, ns: Float64Array, at: number): void {
    const k = this.k;
    this.stats.eptViolations += m;
    this.stats.hostFaults += m;
    const nid = k.cpuToNode(t.cpu);
    // Each page's own task time (access's): its EPT violation, then the host's fault (memory.ts
    // chargeAnonWriteFault: the fault, a 4K clear on the frame's node), charged to the caller's; a stretch of
    // frames on one node at a time.
    for (let q = 0; q < m;) {
      const node = k.phys.nodeOfPfn(runFrames[q]!);
      let e = q + 1;
      while (e < m && k.phys.nodeOfPfn(runFrames[e]!) === node) e++;
      k.chargeClearEach(e - q, this.eptViolationNs, k.hot.faultWrite, k.hot.zero4k, node, PAGE_SIZE, nid, ns, at + q);
      q = e;
    }
    slot.ept ??= new Ept(slot.size / PAGE_SIZE);
    for (let q = 0; q < m;) {
      let r = 1;
      while (q + r < m && runFrames[q + r] === runFrames[q]! + r) r++;
      slot.ept.setRun(i0 + q, r, runFrames[q]! + 1);
      q += r;
    }
  }

  /**
   * vCPU `vcpu` zeroes the whole pages of [gpa, gpa + len): a store to each
   * (faulting the host page in, through the EPT), then the page holds no
   * non-zero byte. The copy's cost is `memcpy_4k` per page (a proxy: the
   * profile has no clear_page entry). Returns the virtual ns.
   */
  clear(vcpu: number, gpa: number, len: number): number {
    const first = gpa - (gpa % PAGE_SIZE);
    let ns = this.access(vcpu, first, gpa + len - first, PAGE_SIZE, true, 0);
    for (let a = first; a < gpa + len; a += PAGE_SIZE) {
      const f = this.hostFrame(a);
      if (f && f !== 'zero') {
        this.k.writeSerial = (this.k.writeSerial + 1) & 0xffffff;
        this.k.mem.clearPage(f.pfn, this.k.writeSerial);
      }
    }
    const copy = ((gpa + len - first) / PAGE_SIZE) * this.k.costs.nsOf('memcpy_4k', 'a guest clear_page is charged as one 4K copy');
    this.k.charge(copy);
    ns += copy;
    return ns;
  }

  /** The byte at gpa as the host holds it (memtwin tracks each page's first byte); 0 if never backed. */
  peek(gpa: number): number {
    const t = this.translate(gpa);
    if (!t) throw new RangeError(`GPA 0x${gpa.toString(16)} is not guest RAM`);
    const pfn = followPage(this.process.mm, t.hva);
    return pfn < 0 ? 0 : this.k.mem.token(pfn) & 0xff;
  }

  // --- translation ---------------------------------------------------------------------

  /** The memslot holding a GPA. */
  slotOf(gpa: number): MemSlot | undefined {
    for (const s of this.slots) if (gpa >= s.gpa && gpa < s.gpa + s.size) return s;
    return undefined;
  }

  /** GPA -> HVA (address_space_translate + qemu_map_ram_ptr), with the RAM block; undefined outside RAM. */
  translate(gpa: number): { hva: number; block: RAMBlock; offset: number } | undefined {
    const s = this.slotOf(gpa);
    if (!s) return undefined;
    const offset = s.blockOffset + (gpa - s.gpa);
    return { hva: s.block.host + offset, block: s.block, offset };
  }

  /** HVA -> GPA (the inverse of translate over guest RAM). */
  gpaOfHva(hva: number): number | undefined {
    for (const s of this.slots) if (hva >= s.hva && hva < s.hva + s.size) return s.gpa + (hva - s.hva);
    return undefined;
  }

  /**
   * The host frame behind a GPA through the VMM's page table: its pfn and
   * host node, `zero` for the zero page, undefined when the host has not
   * backed it (or the GPA is not RAM).
   */
  hostFrame(gpa: number): { pfn: number; node: number } | 'zero' | undefined {
    const t = this.translate(gpa);
    if (!t) return undefined;
    const pfn = followPage(this.process.mm, t.hva);
    if (pfn === -1) return 'zero';
    if (pfn < 0) return undefined;
    return { pfn, node: this.k.phys.nodeOfPfn(pfn) };
  }

  /** Size of the host page-table leaf mapping a GPA's HVA: 4K, 2M or 1G; 0 if not mapped. */
  hostMappingSize(gpa: number): number {
    const t = this.translate(gpa);
    return t ? mappingSize(this.process.mm, t.hva) : 0;
  }

  /**
   * The size KVM can map a GPA with in the EPT (kvm_mmu_max_mapping_level):
   * the host mapping size, limited to sizes whose aligned GPA frame lies in
   * the memslot and at which the slot's GPA and HVA are congruent. 0 if the
   * host does not map it.
   */
  eptMappingSize(gpa: number): number {
    const s = this.slotOf(gpa);
    if (!s) return 0;
    const host = mappingSize(this.process.mm, s.hva + (gpa - s.gpa));
    return host ? Math.min(host, slotLevelLimit(s, gpa)) : 0;
  }

  /** The page size the TLB caches a guest access with: min(guest page size, EPT mapping size). */
  tlbMappingSize(gpa: number, guestPageSize: number): number {
    return Math.min(guestPageSize, this.eptMappingSize(gpa) || PAGE_SIZE);
  }

  // --- the access path -----------------------------------------------------------------

  /** [gpa, gpa + len) cut at memslot boundaries; throws if any part is not RAM. */
  private segments(gpa: number, len: number): { slot: MemSlot; gpa: number; size: number }[] {
    const out: { slot: MemSlot; gpa: number; size: number }[] = [];
    for (let a = gpa; a < gpa + len;) {
      const slot = this.slotOf(a);
      if (!slot) throw new RangeError(`GPA 0x${a.toString(16)} is not guest RAM`);
      const end = Math.min(gpa + len, slot.gpa + slot.size);
      out.push({ slot, gpa: a, size: end - a });
      a = end;
    }
    return out;
  }

  /**
   * Accesses at first, first + stride, ... < end inside one slot: runs of
   * pages the EPT maps go to the host in one call; a page it does not map
   * is an EPT violation, resolved by the access itself (the host fault on
   * the vCPU thread), after which its EPT entry is built.
   */
  private accessSlot(t: Thread, slot: MemSlot, first: number, end: number, stride: number, write: boolean, fill: number): void {
    const nextTouch = (from: number, x: number): number => from + Math.ceil((x - from) / stride) * stride;
    let a = first;
    while (a < end) {
      let run = a;
      while (run < end && this.eptHit(slot, run, write)) run = nextTouch(run, alignDown(run, PAGE_SIZE) + PAGE_SIZE);
      if (run > a) {
        this.hostAccess(t, slot, a, Math.min(run, end), stride, write, fill);
        a = run;
        continue;
      }
      this.stats.eptViolations++;
      this.k.charge(this.eptViolationNs);
      const pageEnd = Math.min(end, alignDown(a, PAGE_SIZE) + PAGE_SIZE);
      this.hostAccess(t, slot, a, pageEnd, stride, write, fill);
      this.eptMap(slot, a);
      a = nextTouch(a, pageEnd);
    }
  }

  /** The host side of accesses [from, to) of a slot (GPAs), on the vCPU's thread. */
  private hostAccess(t: Thread, slot: MemSlot, from: number, to: number, stride: number, write: boolean, fill: number): void {
    const hva = slot.hva + (from - slot.gpa);
    const res = this.k.access(t, hva, to - from, stride, write, fill);
    this.stats.hostFaults += res.faults;
    if (res.blocked !== undefined)
      throw new QemuError(
        `vCPU blocked in a userfault at HVA 0x${res.blocked.toString(16)}: a synchronous guest access cannot wait for a page (guest workloads can)`,
      );
    // The OOM killer chose the VMM process (while this access faulted, or before): QEMU is gone.
    if (res.signal === 'SIGKILL') throw new QemuError(`terminated: ${killReason(this.k, t.process)}`);
    // KVM cannot map the page (hva_to_pfn fails): KVM_RUN returns -EFAULT and QEMU stops.
    if (res.signal) throw new QemuError(`error: kvm run failed Bad address (GPA 0x${(slot.gpa + (res.at! - slot.hva)).toString(16)})`);
  }

  /**
   * A guest access that the workload engine made directly at `hva` (see
   * src/scenario/vms.ts), which the host maps to `pfn` (-1: the zero page):
   * the cost of the EPT violation it takes when the EPT does not map that
   * frame there yet (the entry is built), else 0.
   */
  eptAccess(hva: number, pfn: number, write: boolean): number {
    let slot: MemSlot | undefined;
    for (const s of this.slots) if (hva >= s.hva && hva < s.hva + s.size) slot = s;
    if (!slot) return 0;
    const gpa = slot.gpa + (hva - slot.hva);
    const e = slot.ept ? slot.ept.get(Math.floor((gpa - slot.gpa) / PAGE_SIZE)) : EPT_NONE;
    if (e !== EPT_NONE && (e === EPT_ZERO ? !write && pfn === -1 : pfn + 1 === e)) return 0;
    this.stats.eptViolations++;
    this.eptMap(slot, gpa);
    return this.eptViolationNs;
  }

  /** Whether the EPT maps the guest page of gpa for this access (the host still maps the frame the entry holds). */
  private eptHit(slot: MemSlot, gpa: number, write: boolean): boolean {
    const ept = slot.ept;
    if (!ept) return false;
    const e = ept.get(Math.floor((gpa - slot.gpa) / PAGE_SIZE));
    if (e === EPT_NONE || (e === EPT_ZERO && write)) return false;
    const pfn = hostMemory.translate(this.process.mm, slot.hva + (gpa - slot.gpa));
    return e === EPT_ZERO ? pfn === -1 : pfn + 1 === e;
  }

  /** Build the EPT entry for gpa after its violation: the host frame(s), at the largest size allowed. */
  private eptMap(slot: MemSlot, gpa: number): void {
    const hva = slot.hva + (gpa - slot.gpa);
    const pfn = hostMemory.translate(this.process.mm, hva);
    const hostSize = hostMemory.translatedSize;
    if (pfn === -2) return; // not mapped (the access did not fault it in)
    const size = Math.min(hostSize || PAGE_SIZE, slotLevelLimit(slot, gpa));
    slot.ept ??= new Ept(slot.size / PAGE_SIZE);
    const g0 = alignDown(gpa, size);
    const i0 = (g0 - slot.gpa) / PAGE_SIZE;
    const n = size / PAGE_SIZE;
    if (pfn === -1) {
      slot.ept.fillZero(i0, n);
      return;
    }
    // pfn is the 4K frame holding gpa, which need not be page-aligned (a workload touches cache lines).
    const base = pfn - Math.floor((gpa - g0) / PAGE_SIZE);
    slot.ept.setRun(i0, n, base + 1);
  }

  /** The VM's monitor (one, as QEMU's -qmp/-monitor); devices register their commands on it. */
  get monitor(): Monitor {
    this.qmp ??= new Monitor(this);
    return this.qmp;
  }

  /** ram_block_discard_range over the guest RAM [gpa, gpa + len) (one memslot). */
  discardGpaRange(gpa: number, len: number): number {
    const s = this.slotOf(gpa);
    if (!s || gpa + len > s.gpa + s.size)
      throw new RangeError(`GPA range 0x${gpa.toString(16)}+0x${len.toString(16)} is not in one RAM range`);
    return s.block.discardRange(this.k, this.process, s.blockOffset + (gpa - s.gpa), len);
  }

  // --- hotplug (QMP object-add, device_add) ---------------------------------------------

  /** object-add of a memory backend: created and allocated as at startup (prealloc included). */
  objectAdd(props: MemoryBackendProps): HostMemoryBackend {
    return this.createBackend(props, this.vmm!, this.mounts);
  }

  /**
   * device_add driver=pc-dimm: qdev_device_add's checks, pc_dimm_pre_plug
   * (a free slot, a free aligned address in device memory:
   * memory_device_get_free_addr, lowest first), pc_dimm_realize (the
   * memdev, not in use elsewhere; the node), then the plug: the memdev's
   * region in device memory and a KVM memslot for it. The guest learns of
   * it through onMemoryPlug. Throws QemuError with QEMU's message.
   */
  deviceAdd(args: { driver: string; id?: string; memdev?: string; node?: number; addr?: number; slot?: number }): MemoryDevice {
    if (args.driver !== 'pc-dimm') throw new QemuError(`'${args.driver}' is not a valid device model name`);
    if (args.id !== undefined && this.memoryDevices.some((d) => d.id === args.id)) throw new QemuError(`Duplicate device ID '${args.id}'`);
    if (args.memdev === undefined) throw new QemuError("'memdev' property is not set");
    const b = this.backends.get(args.memdev);
    if (!b) throw new QemuError(`Property 'pc-dimm.memdev' can't find value '${args.memdev}'`);
    if (b.isMapped) throw new QemuError(`can't use already busy memdev: ${args.memdev}`);
    const slot = this.dimmSlot(args.slot);
    const dm = this.deviceMemory;
    if (!dm)
      throw new QemuError(
        'the configuration is not prepared for memory devices (e.g., for memory hotplug), consider specifying the maxmem option',
      );
    const size = b.block!.usedLength;
    const used = this.memoryDevices.reduce((a, d) => a + d.size, 0);
    if (used + size > this.maxramSize - this.ramBytes)
      throw new QemuError(
        `not enough space, currently 0x${used.toString(16)} in use of total space for memory devices 0x${(this.maxramSize - this.ramBytes).toString(16)}`,
      );
    // memory_region_get_alignment: the RAM block's (QEMU_VMALLOC_ALIGN for anonymous memory, the huge page size for hugetlbfs).
    const align = Math.max(PMD_SIZE, b.pageSize);
    if (size % align) throw new QemuError(`backend memory size must be multiple of 0x${align.toString(16)}`);
    const addr = this.freeDeviceAddr(dm, size, align, args.addr);
    const nodes = this.numaNodes.length;
    const node = args.node ?? 0;
    if ((nodes > 0 && node >= nodes) || (nodes === 0 && node > 0))
      throw new QemuError(`'DIMM property node has value ${node}' which exceeds the number of numa nodes: ${nodes || 1}`);
    b.isMapped = true;
    const id = args.id ?? `dimm${slot}`;
    dm.region.addSubregion(addr - dm.base, MemoryRegion.ram(b.id, b.block!));
    const d: MemoryDevice = { type: 'dimm', id, addr, size, slot, node, memdev: b };
    this.memoryDevices.push(d);
    (this.slots as MemSlot[]).push({
      gpa: addr,
      size,
      hva: b.block!.host,
      block: b.block!,
      blockOffset: 0,
      node,
      via: 'device-memory',
      ept: null,
    });
    for (const f of this.onMemoryPlug) f(d);
    return d;
  }

  /** pc_dimm_get_free_slot: the asked slot if free, else the lowest free one. */
  private dimmSlot(asked: number | undefined): number {
    const max = this.ramSlots;
    if (!max) throw new QemuError("no slots where allocated, please specify the 'slots' option");
    const busy = new Set(this.memoryDevices.map((d) => d.slot));
    if (asked !== undefined) {
      if (asked >= max) throw new QemuError(`invalid slot number ${asked}, valid range is [0-${max - 1}]`);
      if (busy.has(asked)) throw new QemuError(`slot ${asked} is busy`);
      return asked;
    }
    for (let s = 0; s < max; s++) if (!busy.has(s)) return s;
    throw new QemuError('no free slots available');
  }

  /** memory_device_get_free_addr: the hint if it fits, else the lowest aligned gap in device memory. */
  private freeDeviceAddr(dm: { base: number; size: number }, size: number, align: number, hint: number | undefined): number {
    const end = dm.base + dm.size;
    if (hint !== undefined) {
      if (hint % align) throw new QemuError(`address must be aligned to 0x${align.toString(16)} bytes`);
      if (hint < dm.base)
        throw new QemuError(`can't add memory device [0x${hint.toString(16)}:0x${size.toString(16)}] before 0x${dm.base.toString(16)}`);
      if (hint + size > end)
        throw new QemuError(`can't add memory device [0x${hint.toString(16)}:0x${size.toString(16)}] beyond 0x${end.toString(16)}`);
    }
    let addr = hint ?? dm.base;
    for (const d of [...this.memoryDevices].sort((a, b) => a.addr - b.addr))
      if (d.addr < addr + size && addr < d.addr + d.size) {
        if (hint !== undefined) throw new QemuError(`address range conflicts with memory device id='${d.id}'`);
        addr = alignUp(d.addr + d.size, align);
      }
    if (addr + size > end)
      throw new QemuError('could not find position in guest address space for memory device - memory fragmented due to alignments');
    return addr;
  }

  // --- vCPUs and lifetime --------------------------------------------------------------

  /** sched_setaffinity of a vCPU thread to one host CPU; -EINVAL if it does not exist. */
  setVcpuAffinity(vcpu: number, cpu: number): number {
    const v = this.vcpus[vcpu];
    if (!v || !this.k.host.cpuNode.has(cpu)) return -22;
    v.thread.cpu = cpu;
    return 0;
  }

  /** The last _OST each DIMM slot's device reported (query-acpi-ospm-status). */
  readonly ospmStatus = new Map<number, { source: number; status: number }>();

  /**
   * The guest evaluated _OST for a memory device (acpi_memory_ost: the
   * ACPI memory hotplug driver reports the result of a device check):
   * recorded and sent as ACPI_DEVICE_OST. source 1 is
   * ACPI_NOTIFY_DEVICE_CHECK (insertion), status 0 success.
   */
  acpiOst(d: MemoryDevice, source: number, status: number): void {
    this.ospmStatus.set(d.slot, { source, status });
    this.monitor.emit('ACPI_DEVICE_OST', { info: { device: d.id, slot: String(d.slot), 'slot-type': 'DIMM', source, status } });
  }

  /** vm_stop / vm_start: the run state, told to the listeners (the guest's vCPUs stop or run). */
  setRunState(state: RunState): void {
    this.runState = state;
    for (const f of this.onRunState) f(state);
  }

  /** QMP quit: the run state becomes shutdown (the vCPUs stop), then QEMU exits and its memory goes back to the host. */
  quit(): void {
    this.setRunState('shutdown');
    // do_exit: exit_mmap unmaps guest RAM (anonymous memory and the last mapping of a memfd go back to the host), and
    // the process leaves the kernel's tables.
    exitProcess(this.k, this.process);
  }

  /** `quit`: the VMM exits and its address space goes. */
  destroy(): void {
    const p = this.process;
    for (const v of [...p.mm.vmas]) this.k.munmap(p, v.start, v.end - v.start);
    p.exited = true;
  }
}

/**
 * machine_set_mem: -m's maxmem and slots, checked against the RAM size.
 * Returns [maxram_size, ram_slots].
 */
function memoryOptions(cfg: VmConfig, ramSize: number): [number, number] {
  const hex = (v: number): string => `0x${v.toString(16)}`;
  if (cfg.maxmem === undefined) {
    if (cfg.slots !== undefined) throw new QemuError('slots specified but no max-size');
    return [ramSize, 0];
  }
  if (cfg.maxmem < ramSize)
    throw new QemuError(
      `invalid value of maxmem: maximum memory size (${hex(cfg.maxmem)}) must be at least the initial memory size (${hex(ramSize)})`,
    );
  if (cfg.slots && cfg.maxmem === ramSize)
    throw new QemuError(
      `invalid value of maxmem: memory slots were specified but maximum memory size (${hex(cfg.maxmem)}) is equal to the initial memory size (${hex(ramSize)})`,
    );
  return [cfg.maxmem, cfg.slots ?? 0];
}

/** Frames of one Vm.writePages run (at most a PTE table's worth). */
const runFrames = new Int32Array(512);

/** The largest EPT page size (1G, 2M, 4K) whose aligned GPA frame fits in the slot with GPA and HVA congruent. */
function slotLevelLimit(s: MemSlot, gpa: number): number {
  // Called per EPT violation: the two sizes unrolled rather than a loop over an array made per call.
  if (slotLevelFits(s, gpa, PUD_SIZE)) return PUD_SIZE;
  if (slotLevelFits(s, gpa, PMD_SIZE)) return PMD_SIZE;
  return PAGE_SIZE;
}

/** Whether the EPT can map gpa at `size` in slot s: GPA and HVA congruent, the aligned frame inside the slot. */
function slotLevelFits(s: MemSlot, gpa: number, size: number): boolean {
  if ((s.gpa - s.hva) % size !== 0) return false;
  const g0 = alignDown(gpa, size);
  return g0 >= s.gpa && g0 + size <= s.gpa + s.size;
}

function normalizeSmp(smp: VmConfig['smp']): Required<SmpConfig> {
  const c = typeof smp === 'number' ? { cpus: smp } : (smp ?? { cpus: 1 });
  const threads = c.threads ?? 1;
  const sockets = c.sockets ?? 1;
  const cores = c.cores ?? Math.max(1, Math.ceil(c.cpus / (sockets * threads)));
  if (!(c.cpus >= 1)) throw new QemuError(`Invalid SMP CPUs ${c.cpus}`);
  if (sockets * cores * threads < c.cpus)
    throw new QemuError(`cpu topology: sockets (${sockets}) * cores (${cores}) * threads (${threads}) < smp_cpus (${c.cpus})`);
  return { cpus: c.cpus, sockets, cores, threads };
}
