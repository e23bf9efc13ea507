/**
 * The `vms` section of a scenario: each VM is started as QEMU would be
 * (src/vmm/vm.ts: the VMM process, memory backends, PC layout, pinned
 * vCPU threads, vNUMA), its guest kernel (src/guest/) is booted over its
 * guest-physical memory, and an optional virtio-balloon device is plugged
 * in and probed by the guest driver. The runner then schedules the VM's
 * events (QMP `balloon`, free page hint start/stop/done as migration would
 * drive them, guest allocations, monitor commands, host tools acting on
 * the VMM process), runs its guest workloads and samples its memory.
 *
 * Guest workloads (documented simplification): a guest process's memory is
 * taken to be first-touched on its guest node, i.e. a GPA range of that
 * node, so its accesses are the host workload engine's over the HVA range
 * backing the node's RAM, on the vCPU's host thread. They see the host's
 * page table (faults, THP, NUMA placement and balancing of the VMM's
 * memory) and the VM's EPT (Vm.eptAccess: a violation where it does not map
 * the host frame yet), and the TLB maps the smaller of the guest's page
 * size (guest_page_size) and the host's; the guest page table itself is not
 * modelled.
 */
import { MemBandwidth, membwParams, membwSpec } from '../sim/membw.ts';
import { Kernel, type CpuWork } from '../kernel/kernel.ts';
import type { Process } from '../kernel/sched.ts';
import { hostFromFile, resolveHost } from '../sim/host.ts';
import { followPmdRange, pmdRangeResident, PMD_RANGE_PAGES } from '../kernel/memory.ts';
import { MPOL, PMD_SIZE, alignDown, errnoName } from '../kernel/uapi.ts';
import { HugeLeaf, type MmStruct } from '../kernel/mm_types.ts';
import { PG } from '../kernel/page.ts';
import { WMARK_HIGH } from '../kernel/page_alloc.ts';
import { HGM_PROPOSALS } from '../kernel/hugetlb_hgm.ts';
import { DEVMEM_REMAP } from '../kernel/hugetlb_devmem.ts';
import { sysMigratePages, sysProcessMbind } from '../kernel/mempolicy.ts';
import { exitProcess } from '../kernel/fork.ts';
import { sysMovePages } from '../kernel/migrate.ts';
import type { GuestMemory } from '../hw/guest_memory.ts';
import { Vm, type VmConfig } from '../vmm/vm.ts';
import { QemuError, type MemoryBackendProps } from '../vmm/memory_backend.ts';
import { QmpError, type QmpResponse } from '../vmm/monitor.ts';
import { MigrationState } from '../vmm/migration/migration.ts';
import { dirtyRingSizeError } from '../vmm/migration/dirty_ring.ts';
import { Link } from '../vmm/migration/link.ts';
import { startNetwork, type ScenarioNetwork } from './network.ts';
import { VmBalloonHost } from '../vmm/balloon_host.ts';
import { VirtioBalloonDevice, type VirtioBalloonMetrics } from '../vmm/virtio_balloon.ts';
import { GuestKernel } from '../guest/kernel.ts';
import { PfnRuns } from '../guest/pfn_runs.ts';
import { PAGE_SIZE, PageUse } from '../guest/page_alloc.ts';
import { VirtioBalloonDriver } from '../guest/virtio_balloon.ts';
import { VirtioTiming } from '../virtio/timing.ts';
import { GuestBuffers } from '../virtio/virtqueue.ts';
import * as vb from '../virtio/virtio_balloon.ts';
import { formatSize } from '../util/input_error.ts';
import type { YamlPath } from '../util/yaml_input.ts';
import type { WorkloadThread } from '../workload/engine.ts';
import type { Locator } from './locate.ts';
import type { RunEventLog } from './result.ts';
import type { Scenario, VmEventSpec, VmSpec } from './schema.ts';

/**
 * What VM code reports through: errors located in the scenario file, and
 * warnings (located text) the run collects for the console and its result.
 */
export interface RunReport {
  at: Locator;
  warn(path: YamlPath, text: string): void;
}

/** A running VM of the scenario. */
export interface VmRt {
  spec: VmSpec;
  /** Its index in the scenario's `vms`. */
  vi: number;
  vm: Vm;
  guest: GuestKernel;
  /** Run guest kernel work (faulting pages in) with its vCPU time spent in one piece at the end. */
  guestBatch<T>(f: () => T): T;
  dev: VirtioBalloonDevice | null;
  drv: VirtioBalloonDriver | null;
  /** Pages guest_alloc faulted in and guest_free has not freed, oldest first. */
  guestPages: PfnRuns;
  /** Virtual time of the last free page hint message the device handled. */
  lastHintAt: number;
  /** HVA and size of each guest node's RAM (the memdev's block, or the machine RAM). */
  nodeRam: { hva: number; size: number }[];
  /** The outgoing live migration, once a `migrate` event started it, and that event's index. */
  mig?: MigrationState;
  migEvent?: number;
  /** A migration_fault event was injected (a failed migration is then expected). */
  faultInjected?: boolean;
  /** The destination VM of that migration (maybe on a host of its own), and its configuration. */
  dst?: Vm;
  /** The guest threads' 4K TLB-reach ns (WorkloadThread.tlb4kNs) when the guest started on the destination. */
  tlb4kAtSwitch?: number;
  dstSpec?: VmSpec;
  /** Where its migration was asked for (a migrate event, or `evacuate`), for warnings. */
  migPath?: YamlPath;
  /** The scenario's network (`nic`, `hosts`), shared by every VM. */
  net?: ScenarioNetwork;
  /** The guest workloads' threads (run.ts fills this), with their vCPU and guest node. */
  guestThreads: { wt: WorkloadThread; vcpu: number; node: number }[];
  /** Called when a migration starts its destination VMM (agents targeting `<vm>-dst` attach then: run.ts). */
  onIncoming: ((dst: Vm) => void)[];
  /** It has a migrate event, or `evacuate` moves it: it may get a destination VMM (`<vm>-dst`). */
  migrates: boolean;
  /** vm.NAME.guest_node<g>.host_node<h>_bytes when the VM quit (QMP quit), its final placement then. */
  placementAtQuit?: Record<string, number>;
  /** Per-2M access counts the guest threads keep once they run on the destination (an agent's exact hotness). */
  dstHeat?: Map<number, number>;
}

/** QEMU's -object argument for a scenario memdev. */
function backendProps(m: VmSpec['memdevs'][number]): MemoryBackendProps {
  const { type, ...rest } = m;
  const props: MemoryBackendProps = { 'qom-type': type, id: m.id };
  for (const [key, v] of Object.entries(rest)) if (v !== undefined) (props as unknown as Record<string, unknown>)[key] = v;
  return props;
}

/** The VmConfig (QEMU command line) of a scenario VM. */
export function vmConfigOf(spec: VmSpec): VmConfig {
  const cfg: VmConfig = {
    name: spec.name,
    machine: spec.machine,
    smp: spec.vcpus.length,
    vcpuPin: [...spec.vcpus],
    objects: spec.memdevs.map(backendProps),
  };
  if (spec['max-ram-below-4g'] !== undefined) cfg['max-ram-below-4g'] = spec['max-ram-below-4g'];
  if (spec.emulator_cpu !== undefined) cfg.emulatorCpu = spec.emulator_cpu;
  if (spec.numa.length) cfg.numa = spec.numa.map((n, i) => ({ nodeid: i, memdev: n.memdev, cpus: [...n.cpus] }));
  else if (spec.memdevs.length) cfg['memory-backend'] = spec.memdevs[0]!.id;
  // -m with memdevs too: QEMU checks it against them.
  if (spec.memory !== undefined) cfg.m = spec.memory;
  if (spec.maxmem !== undefined) cfg.maxmem = spec.maxmem;
  if (spec.slots !== undefined) cfg.slots = spec.slots;
  return cfg;
}

/**
 * GuestMemory for the guest kernel: the VM's accesses, timed as the calling
 * guest code's task (the caller charges the returned time itself).
 */
/** Guest RAM as the guest kernel sees it, and `batch`: run guest kernel work whose CPU time is spent at once at its end. */
type ScenarioGuestMemory = GuestMemory & { batch<T>(f: () => T): T };

function guestMemoryOf(k: Kernel, vm: Vm): ScenarioGuestMemory {
  // The guest kernel's work on a vCPU runs on the host CPU that vCPU's thread is on: a work item per call, or,
  // inside `batch` (a guest_alloc faults in one page per call), one per vCPU at the batch's end: the same CPU
  // time without a scheduler task per page.
  let pending: Map<number, number> | null = null;
  // Inside `batch`, per vCPU, what the host moved for it (the faults' zeroing: Kernel.chargeMem), registered
  // with the bandwidth model as one flow at the batch's end, as a workload thread's step is: the pages are
  // faulted one after the other by one vCPU, not each a task of its own starting at the same instant.
  let bwTasks: Map<number, NonNullable<Kernel['membwTask']>> | null = null;
  const onVcpu = (vcpu: number, f: () => unknown): number => {
    const t = { ns: 0 };
    if (!pending) {
      k.runAsTask(t, f, vcpuWork(vm, vcpu));
      return t.ns;
    }
    const saved = k.membwTask;
    k.membwTask = bwTasks ? batchBwTask(k, vm, vcpu, bwTasks) : saved;
    try {
      k.runAsTask(t, f);
    } finally {
      k.membwTask = saved;
    }
    pending.set(vcpu, (pending.get(vcpu) ?? 0) + t.ns);
    return t.ns;
  };
  return {
    get ramSize() {
      return vm.ramSize;
    },
    ramRanges: () => vm.ramRanges(),
    peek: (gpa) => vm.peek(gpa),
    clear: (vcpu, gpa, len) => onVcpu(vcpu, () => vm.clear(vcpu, gpa, len)),
    access: (vcpu, gpa, len, stride, write, fill) => onVcpu(vcpu, () => vm.access(vcpu, gpa, len, stride, write, fill)),
    writePages(vcpu, gpa, n, fill, ns) {
      // Only in a batch (the clock stands still, the time is the vCPU's, spent at the batch's end) with nothing due.
      if (!pending || !vm.nothingDue()) return false;
      // Vm.writePages gives what each page's access would have returned; the vCPU's pending time grows by each of
      // them in turn, as onVcpu's page-by-page sums do.
      // If a page's access throws (the VMM killed), the pages before it still count, as page by page they would.
      const saved = k.membwTask;
      k.membwTask = bwTasks ? batchBwTask(k, vm, vcpu, bwTasks) : saved;
      ns.fill(NaN, 0, n);
      let wrote = false;
      try {
        wrote = k.runAsTask({ ns: 0 }, () => vm.writePages(vcpu, gpa, n, fill, ns));
      } finally {
        k.membwTask = saved;
        let sum = pending.get(vcpu) ?? 0;
        let j = 0;
        for (; j < n && !Number.isNaN(ns[j]!); j++) sum += ns[j]!;
        if (j > 0) pending.set(vcpu, sum);
      }
      return wrote;
    },
    batch<T>(f: () => T): T {
      if (pending) return f();
      const mine = (pending = new Map());
      const tasks = (bwTasks = k.membw && !k.membwTask ? new Map() : null);
      const at = k.clock.now();
      try {
        return f();
      } finally {
        pending = null;
        bwTasks = null;
        for (const [v, n] of mine) {
          const bt = tasks?.get(v);
          if (bt?.classes.length) k.membw!.flow(at, n, bt.cpu, bt.classes);
          k.spend(vcpuWork(vm, v), n);
        }
      }
    },
  };
}

/**
 * The bandwidth task of vCPU `vcpu` in a guest batch: its thread's node, the
 * multipliers now (what chargeMem reads for a task of its own: the clock
 * does not move inside the batch), and the bytes moved so far.
 */
function batchBwTask(
  k: Kernel,
  vm: Vm,
  vcpu: number,
  tasks: Map<number, NonNullable<Kernel['membwTask']>>,
): NonNullable<Kernel['membwTask']> {
  let bt = tasks.get(vcpu);
  if (bt) return bt;
  const cpu = k.cpuToNode(vm.vcpus[vcpu]!.thread.cpu);
  const mult = new Float64Array(k.nrNodes);
  const now = k.clock.now();
  for (let b = 0; b < k.nrNodes; b++) mult[b] = k.membw!.multiplier(cpu, b, now);
  bt = { cpu, mult, classes: [] };
  tasks.set(vcpu, bt);
  return bt;
}

/** CPU time a vCPU spends, on its thread's host CPU. */
function vcpuWork(vm: Vm, vcpu: number): CpuWork {
  const t = vm.vcpus[vcpu]?.thread;
  return { name: `${vm.name}/vcpu${vcpu}`, cpus: t ? [t.cpu] : null };
}

/** CPU time of QEMU's main loop (monitor commands, the balloon device). */
function mainLoopWork(vm: Vm): CpuWork {
  return vm.qemuThread('main');
}

/** Start every VM of the scenario (before the workloads start). */
export function startVms(k: Kernel, s: Scenario, rep: RunReport): VmRt[] {
  const net = startNetwork(k, s, rep);
  return s.vms.map((spec, vi) => {
    checkVmSpec(spec, vi, rep);
    let vm: Vm;
    try {
      vm = new Vm(k, vmConfigOf(spec));
    } catch (e) {
      if (e instanceof QemuError) throw rep.at.error(qemuErrorPath(spec, vi, e), `qemu-system-x86_64: ${e.message}`);
      throw e;
    }
    // QEMU's warn_report lines about the configuration.
    for (const w of vm.warnings) rep.warn(['vms', vi], `qemu-system-x86_64: warning: ${w}`);
    // -name NAME,process=NAME: the VMM's process name (prctl PR_SET_NAME), so results name it.
    (vm.process as { name: string }).name = spec.name;
    if (spec.cgroup !== undefined) k.memcg.attach(vm.process, k.memcg.byName(spec.cgroup)!); // before the guest runs
    const memory = guestMemoryOf(k, vm);
    const guest = new GuestKernel(memory, k.costs, { cpuNode: vm.vcpus.map((c) => c.node) });
    const rt: VmRt = {
      spec,
      vi,
      vm,
      guest,
      guestBatch: (f) => memory.batch(f),
      dev: null,
      drv: null,
      guestPages: new PfnRuns(),
      lastHintAt: -1,
      nodeRam: nodeRamOf(spec, vm),
      guestThreads: [],
      onIncoming: [],
      migrates: !!s.evacuate || spec.events.some((e) => e.op === 'migrate'),
      ...(net ? { net } : {}),
    };
    const ringError = dirtyRingSizeError(spec.accel['dirty-ring-size']);
    if (ringError) throw rep.at.error(['vms', vi, 'accel', 'dirty-ring-size'], `qemu-system-x86_64: ${ringError}`);
    connectGuest(rt);
    if (spec.guest.fragment) fragmentGuest(k, rt, spec.guest.fragment, rep);
    if (spec.balloon) guestAccess(k, ['vms', vi, 'balloon'], rep, () => plugBalloon(k, rt, spec.balloon!));
    return rt;
  });
}

/**
 * What the guest does about the VMM's hotplug and run state: a DIMM is
 * onlined by the guest's ACPI memory hotplug driver (add_memory, auto
 * online into the DIMM's node) and acknowledged with _OST (QEMU sends
 * ACPI_DEVICE_OST); `stop` stops the guest workloads' vCPUs, `cont` runs
 * them again, `quit` stops them for good.
 */
function connectGuest(rt: VmRt): void {
  rt.vm.onMemoryPlug.push((d) => {
    rt.guest.pages.addMemory({ gpa: d.addr, size: d.size, node: d.node });
    rt.vm.acpiOst(d, ACPI_NOTIFY_DEVICE_CHECK, 0);
  });
  rt.vm.onRunState.push((state) => {
    for (const g of rt.guestThreads)
      if (state === 'running') g.wt.start();
      else g.wt.stop();
    // Where guest RAM was when the VM quit (its final placement metrics; the memory goes back to the host next).
    if (state === 'shutdown') placement(rt.vm, rt.nodeRam, `vm.${rt.spec.name}.`, (rt.placementAtQuit = {}));
  });
}

/** ACPI's Device Check notification (_OST source code 1): a device was inserted. */
const ACPI_NOTIFY_DEVICE_CHECK = 1;

/** Where a QEMU configuration error points: the memdev it is about (`memory` for the default pc.ram), or the VM. */
function qemuErrorPath(spec: VmSpec, vi: number, e: QemuError): YamlPath {
  return ['vms', vi, ...qemuErrorField(spec, e)];
}

/** The field of a VM a QEMU configuration error is about: its memdev, `memory` for the default pc.ram, or none. */
export function qemuErrorField(spec: Pick<VmSpec, 'memdevs' | 'memory'>, e: QemuError): YamlPath {
  const mi = spec.memdevs.findIndex((m) => m.id === e.object);
  if (mi >= 0) return ['memdevs', mi];
  return e.object === 'pc.ram' && spec.memory !== undefined ? ['memory'] : [];
}

/**
 * Run guest or VMM work that touches guest RAM. A guest access the host
 * cannot back stops QEMU (KVM_RUN fails with EFAULT: "kvm run failed Bad
 * address"); it becomes an error at `path`, with the host's memory state
 * when that is the cause.
 */
function guestAccess<T>(k: Kernel, path: YamlPath, rep: RunReport, f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof QemuError) throw rep.at.error(path, `qemu-system-x86_64: ${e.message}${hostMemoryNote(k)}`);
    throw e;
  }
}

/**
 * "; the host is out of memory: ..." when free host memory is nearly gone (the usual cause of a failed guest
 * access): every node at or below its high watermark (the allocator keeps about its min watermark free even
 * when it OOM-kills), or little free memory left at all.
 */
export function hostMemoryNote(k: Kernel): string {
  const free = k.phys.freePages() * PAGE_SIZE;
  const total = k.host.nodes.reduce((a, n) => a + n.memory, 0);
  const atWatermarks = k.phys.zones.every((z) => z.freePages <= z.wmark[WMARK_HIGH]!);
  if (!atWatermarks && free > Math.min(64 * MiB, total / 100)) return '';
  const pools = k.hugetlb.hstates.filter((h) => h.nr > 0).map((h) => `${h.nr} x ${formatSize(h.size)} (${formatSize(h.nr * h.size)})`);
  return (
    `; the host is out of memory: ${mib(free)} MiB free of ${mib(total)} MiB` +
    (pools.length ? `, the hugetlb pool holds ${pools.join(' and ')} (nr_hugepages)` : '')
  );
}

const MiB = 2 ** 20;
const mib = (b: number): string => String(Math.round((b / MiB) * 10) / 10);

/** HVA and size of each guest node's RAM in a VMM of this spec (whole pages: what KVM maps of it). */
function nodeRamOf(spec: VmSpec, vm: Vm): { hva: number; size: number }[] {
  return spec.numa.length
    ? vm.numaNodes.map((n) => ({ hva: n.memdev!.block!.host, size: alignDown(n.memdev!.size, PAGE_SIZE) }))
    : [{ hva: vm.backends.get(spec.memdevs[0]?.id ?? 'pc.ram')!.block!.host, size: alignDown(vm.ramSize, PAGE_SIZE) }];
}

/**
 * A long-lived guest: a task faulted `size` in and freed all but every
 * N-th page (keep_every), or only every N-th page (free_every: what is free
 * is sparse, the case where free page hints and reporting find little at
 * high orders). The guest must have that much free memory: a fragmentation
 * smaller than asked would be a silent wrong answer.
 */
function fragmentGuest(k: Kernel, rt: VmRt, f: NonNullable<VmSpec['guest']['fragment']>, rep: RunReport): void {
  const path: YamlPath = ['vms', rt.vi, 'guest', 'fragment'];
  if ((f.keep_every === undefined) === (f.free_every === undefined))
    throw rep.at.error(path, 'one of keep_every (keep one page in N) and free_every (free one page in N)');
  if (f.vcpu >= rt.vm.vcpus.length)
    throw rep.at.error([...path, 'vcpu'], `vCPU ${f.vcpu} does not exist (the VM has ${rt.vm.vcpus.length} vCPUs)`);
  const want = Math.floor(f.size / PAGE_SIZE);
  const free = rt.guest.pages.freePageCount;
  if (want > free)
    throw rep.at.error(
      [...path, 'size'],
      `${formatSize(f.size)} is more than the guest's free memory (${mib(free * PAGE_SIZE)} MiB of ${mib(rt.vm.ramSize)} MiB of RAM)`,
    );
  const { pfns } = guestAccess(k, path, rep, () => rt.guestBatch(() => rt.guest.faultIn(f.vcpu, PageUse.Anon, want)));
  const keep: number[] = [];
  const free_: number[] = [];
  pfns.forEach((pfn, i) => {
    const kept = f.keep_every !== undefined ? i % f.keep_every === 0 : i % f.free_every! !== 0;
    (kept ? keep : free_).push(pfn);
  });
  rt.guest.release(free_);
  for (const pfn of keep) rt.guestPages.push(pfn);
}

/**
 * A guest workload's memory: its guest node's RAM at [offset, offset +
 * length) of the node's backing (the workload's region), as guest-physical
 * ranges (the node's RAM ranges in address order, as QEMU's ram-below-4g and
 * ram-above-4g aliases lay the backing out), taken in the guest's allocator:
 * the task holds it, so neither the balloon nor guest_alloc gets it.
 */
export function claimGuestRange(rt: VmRt, node: number, offset: number, length: number): void {
  let o = 0;
  for (const r of rt.vm.ramRanges().filter((x) => x.node === node)) {
    const from = Math.max(offset, o);
    const to = Math.min(offset + length, o + r.size);
    if (to > from) rt.guest.claimRange(r.gpa + (from - o), to - from);
    o += r.size;
  }
}

/**
 * Fields of a VM that have no effect where they are set: an error, as a
 * silently ignored setting gives a wrong answer without a word.
 */
function checkVmSpec(spec: VmSpec, vi: number, rep: RunReport): void {
  const at = (...p: (string | number)[]): YamlPath => ['vms', vi, ...p];
  spec.memdevs.forEach((m, mi) => {
    // QEMU accepts these and ignores them.
    if (m.hugetlbsize !== undefined && !m.hugetlb)
      throw rep.at.error(at('memdevs', mi, 'hugetlbsize'), 'has no effect without hugetlb: true (QEMU ignores it)');
    if (m['prealloc-threads'] !== undefined && !m.prealloc)
      throw rep.at.error(at('memdevs', mi, 'prealloc-threads'), 'has no effect without prealloc: true (QEMU ignores it)');
  });
  const b = spec.balloon;
  if (b) {
    // Defaults of the hint settings: anything else only matters with free-page-hint.
    const hintDefaults: [keyof typeof b, unknown][] = [
      ['hint-encoding', 'ranges'],
      ['hint-pfn-bytes', 4],
      ['hint-batch', 1],
      ['hint-min-order', 0],
      ['hint-bitmap-order', 0],
      ['hint-discard', false],
    ];
    if (!b['free-page-hint'])
      for (const [key, def] of hintDefaults)
        if (b[key] !== def) throw rep.at.error(at('balloon', key), 'has no effect without free-page-hint: true');
    if (b['hint-pfn-bytes'] !== 4 && b['hint-encoding'] !== 'pfn-list')
      throw rep.at.error(at('balloon', 'hint-pfn-bytes'), 'has no effect unless hint-encoding is pfn-list');
    if (b['hint-bitmap-order'] !== 0 && b['hint-encoding'] !== 'bitmap')
      throw rep.at.error(at('balloon', 'hint-bitmap-order'), 'has no effect unless hint-encoding is bitmap');
    if (b['virtio-balloon-chunks'] && b['inflate-encoding'] !== 'pfns' && b['inflate-encoding'] !== 'chunks')
      throw rep.at.error(at('balloon', 'inflate-encoding'), `${b['inflate-encoding']} and virtio-balloon-chunks: true exclude each other`);
    if (b['inflate-alloc'] !== 'high-order' && b['inflate-encoding'] === 'pfns' && !b['virtio-balloon-chunks'])
      throw rep.at.error(at('balloon', 'inflate-alloc'), 'has no effect with PFN arrays (inflate-encoding pfns allocates 4K pages)');
    if (b.page_reporting_order !== undefined && !b['free-page-reporting'])
      throw rep.at.error(at('balloon', 'page_reporting_order'), 'has no effect without free-page-reporting: true');
  }
}

/** -device virtio-balloon-pci: the device, its QMP/HMP commands, and the guest driver's probe. */
function plugBalloon(k: Kernel, rt: VmRt, b: NonNullable<VmSpec['balloon']>): void {
  // The balloon's kthread / workqueue runs on vCPU 0 (the driver's `cpu`); with a scheduler its work is that vCPU
  // thread's CPU time and the device's QEMU's (src/virtio/timing.ts), without one it advances the clock.
  const driverCpu = 0;
  const timing = new VirtioTiming(
    k.clock,
    k.costs,
    k.sched
      ? {
          spend: (on, ns) => k.spend(on, ns),
          events: k.events,
          // Read at each spend: the vCPU's thread may have been moved (vcpu pinning) since.
          get guest() {
            return vcpuWork(rt.vm, driverCpu);
          },
          host: mainLoopWork(rt.vm),
          iothread: rt.vm.qemuThread('iothread'),
        }
      : undefined,
  );
  const host = new VmBalloonHost(rt.vm);
  const dev = new VirtioBalloonDevice(timing, new GuestBuffers(), k.events, host, {
    ramSize: rt.vm.ramSize,
    deflateOnOom: b['deflate-on-oom'],
    freePageHint: b['free-page-hint'],
    freePageReporting: b['free-page-reporting'],
    chunks: b['virtio-balloon-chunks'],
    inflateEncoding: b['virtio-balloon-chunks'] ? 'chunks' : b['inflate-encoding'],
    hintBitmapOrder: b['hint-bitmap-order'],
    hintEncoding: b['hint-encoding'],
    hintPfnBytes: b['hint-pfn-bytes'],
    hintBatch: b['hint-batch'],
    hintMinOrder: b['hint-min-order'],
    hintDiscard: b['hint-discard'],
    discardBatched: b['discard-batched'],
    statsPollIntervalS: b['guest-stats-polling-interval'],
  });
  const fpv = dev.transport.queues[vb.VIRTIO_BALLOON_VQ_FREE_PAGE];
  if (fpv) {
    const handle = fpv.onNotify!;
    fpv.onNotify = (vq) => {
      handle(vq);
      timing.atCompletion((at) => (rt.lastHintAt = Math.max(rt.lastHintAt, at)));
    };
  }
  // qemu_add_balloon_handler: the monitor's balloon commands reach the device.
  const mon = rt.vm.monitor;
  mon.registerCommand(
    'balloon',
    (a) => {
      const v = a['value'];
      if (typeof v !== 'number') throw new QmpError('GenericError', "Parameter 'value' is missing");
      if (v <= 0) throw new QmpError('GenericError', "Parameter 'value' expects a size");
      dev.balloon(v);
      return {};
    },
    ['value'],
  );
  mon.registerCommand('query-balloon', () => dev.queryBalloon(), []);
  mon.registerHmp('info balloon', () => `balloon: actual=${Math.floor(dev.queryBalloon().actual / 2 ** 20)}\n`);
  // The driver charges the time of its buffer writes itself (to its step): the guest memory it gets returns that
  // time without spending it on the vCPU as the guest kernel's own accesses do.
  const memory: GuestMemory = {
    get ramSize() {
      return rt.vm.ramSize;
    },
    ramRanges: () => rt.vm.ramRanges(),
    peek: (gpa) => rt.vm.peek(gpa),
    clear: (vcpu, gpa, len) => timed(k, () => rt.vm.clear(vcpu, gpa, len)),
    access: (vcpu, gpa, len, stride, write, fill) => timed(k, () => rt.vm.access(vcpu, gpa, len, stride, write, fill)),
  };
  const drv = new VirtioBalloonDriver({ pages: rt.guest.pages, memory }, dev.transport, k.events, {
    cpu: driverCpu,
    ...(b.page_reporting_order !== undefined ? { pageReportingOrder: b.page_reporting_order } : {}),
    vmEvents: () => rt.guest.vmEvents,
    initOnAlloc: rt.spec.guest.init_on_alloc,
    inflateAlloc: b['inflate-alloc'],
  });
  drv.probe();
  rt.dev = dev;
  rt.drv = drv;
}

/** The time `f` charges, as a task of its own, not spent on any CPU (the caller charges it). */
function timed(k: Kernel, f: () => unknown): number {
  const t = { ns: 0 };
  k.runAsTask(t, f);
  return t.ns;
}

/** `info ram` parsed as a tool would: GPA, HVA and guest node of each range. */
export function parseInfoRam(text: string): { gpa: number; size: number; hva: number; block: string; node: number }[] {
  const out: { gpa: number; size: number; hva: number; block: string; node: number }[] = [];
  for (const line of text.split('\n').slice(1)) {
    const m = /^(0x[0-9a-f]+)-(0x[0-9a-f]+)\s+(\S+)\s+\S+ \S+\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)-(0x[0-9a-f]+)\s+(\d+)\s*$/.exec(line.trim());
    if (!m) continue;
    const gpa = Number(m[1]);
    out.push({ gpa, size: Number(m[2]) - gpa + 1, block: m[3]!, hva: Number(m[5]), node: Number(m[7]) });
  }
  return out;
}

const METRIC_NAMES: [keyof VirtioBalloonMetrics, string][] = [
  ['messages', 'messages'],
  ['exits', 'exits'],
  ['kicks', 'kicks'],
  ['configExits', 'config_exits'],
  ['interrupts', 'interrupts'],
  ['bytesRead', 'bytes_read'],
  ['bufferBytes', 'buffer_bytes'],
  ['ringBytes', 'ring_bytes'],
  ['guestCpuNs', 'guest_cpu_ns'],
  ['exitNs', 'exit_ns'],
  ['waitNs', 'wait_ns'],
  ['hostCpuNs', 'host_cpu_ns'],
  ['decodeNs', 'decode_ns'],
  ['hostSyscalls', 'host_syscalls'],
  ['hostBytesReturned', 'host_returned_bytes'],
  ['pfnsInflated', 'pfns_inflated'],
  ['pfnsDeflated', 'pfns_deflated'],
  ['pagesHinted', 'pages_hinted'],
  ['bytesReported', 'reported_bytes'],
];

/** The device's counters as flat metrics. */
function balloonCounters(dev: VirtioBalloonDevice): Record<string, number> {
  const m = dev.metrics();
  const out: Record<string, number> = {};
  for (const [key, name] of METRIC_NAMES) out[name] = Math.round(m[key] as number);
  return out;
}

interface OpenWindow {
  log: RunEventLog;
  rt: VmRt;
  at: number;
  before: Record<string, number>;
  changes: number;
}

/**
 * Schedule every VM event at t0 + at, after checking them all (so that a
 * mistake is reported before the run, not minutes into it). Each balloon
 * and hint event's log entry gets the device's counters over its window
 * (until the VM's next event or the end of the run) and the time the device
 * took: for `balloon` until the guest's last update of `actual`, for a hint
 * start until the last hint message.
 */
export function scheduleVmEvents(
  k: Kernel,
  s: Scenario,
  vms: VmRt[],
  t0: number,
  rep: RunReport,
): { log: RunEventLog[]; close: () => void } {
  for (const rt of vms) rt.spec.events.forEach((ev, ei) => checkVmEvent(rt, ev, ['vms', rt.vi, 'events', ei], rep));
  const log: RunEventLog[] = [];
  const open = new Map<VmRt, OpenWindow>();
  const closeWindow = (w: OpenWindow): void => {
    if (!w.rt.dev) return;
    const after = balloonCounters(w.rt.dev);
    const detail: Record<string, number> = {};
    for (const key of Object.keys(after)) detail[key] = after[key]! - w.before[key]!;
    if (w.log.op === 'balloon') {
      const changes = w.rt.dev.events.slice(w.changes);
      detail['elapsed_ns'] = changes.length ? changes[changes.length - 1]!.at - w.at : 0;
      detail['actual_bytes'] = w.rt.dev.queryBalloon().actual;
    }
    if (w.log.op === 'free_page_hint' && w.log.action === 'start')
      detail['elapsed_ns'] = w.rt.lastHintAt >= w.at ? w.rt.lastHintAt - w.at : 0;
    w.log.detail = detail;
  };
  const busy = new Set<VmRt>();
  /** Events waiting for a QMP event that has not come (a warning at the end). */
  const unanswered = new Set<YamlPath>();
  const waiting = new Map<VmRt, (() => void)[]>(vms.map((rt) => [rt, []]));
  // The QMP events each VM's monitor sends (and its migration destination's), in the log as `qmp_event` entries
  // (action: the event's name; process: the VMM that sent it).
  const logQmpEvents = (rt: VmRt, vm: Vm, process: string): void =>
    void vm.monitor.onEvent.push((e) =>
      log.push({
        at_ns: k.clock.now() - t0,
        op: 'qmp_event',
        process,
        vm: rt.spec.name,
        ret: 0,
        ns: 0,
        pages_migrated: 0,
        action: e.event,
        reply: JSON.stringify(e),
      }),
    );
  for (const rt of vms) {
    logQmpEvents(rt, rt.vm, rt.spec.name);
    rt.onIncoming.push((dst) => logQmpEvents(rt, dst, `${rt.spec.name}-dst`));
  }
  // Events that wait for a QMP event are armed first, so one armed at `at` sees what the monitor sends at that instant.
  const ordered = vms.flatMap((rt) => rt.spec.events.map((ev, ei) => ({ rt, ev, ei })));
  ordered.sort((a, b) => Number(b.ev.on_qmp_event !== undefined) - Number(a.ev.on_qmp_event !== undefined));
  ordered.forEach(({ rt, ev, ei }) => {
    const run = (): void => {
      // QEMU's main loop runs one monitor command at a time: an event due while another of this VM is still in
      // progress (a preallocating object-add lets virtual time pass) waits for it.
      if (busy.has(rt)) return void waiting.get(rt)!.push(run);
      busy.add(rt);
      try {
        runNow();
      } finally {
        busy.delete(rt);
        const next = waiting.get(rt)!.shift();
        if (next) k.events.schedule(k.clock.now(), `vm ${rt.spec.name} next event`, next);
      }
    };
    const runNow = (): void => {
      const prev = open.get(rt);
      if (prev) closeWindow(prev);
      const at = ev.on_qmp_event === undefined ? ev.at : k.clock.now() - t0;
      const entry: RunEventLog = { at_ns: at, op: ev.op, process: rt.spec.name, vm: rt.spec.name, ret: 0, ns: 0, pages_migrated: 0 };
      if (ev.action) entry.action = ev.action;
      const moved0 = k.vmstat.events.pgmigrate_success;
      const ctx = { ns: 0 };
      const start = k.clock.now();
      open.delete(rt);
      if (rt.dev && (ev.op === 'balloon' || ev.op === 'free_page_hint'))
        open.set(rt, { log: entry, rt, at: start, before: balloonCounters(rt.dev), changes: rt.dev.events.length });
      const path: YamlPath = ['vms', rt.vi, 'events', ei];
      const mon = new EventMonitor(rt, ev, path, rep);
      // A host tool's CPU time is its own, not QEMU's main loop's.
      const work = TOOL_OPS.has(ev.op) ? { name: `numatool(${rt.spec.name})`, cpus: null } : mainLoopWork(rt.vm);
      guestAccess(k, path, rep, () => k.runAsTask(ctx, () => runVmEvent(k, s, rt, ev, ei, entry, mon, rep), work));
      mon.settle();
      entry.ns = Math.round(ctx.ns);
      entry.pages_migrated = k.vmstat.events.pgmigrate_success - moved0;
      // A syscall's -errno (a refusal QEMU was expected to make is in `reply`, not an errno).
      if (entry.ret < 0 && !(ev.expect_error !== undefined && entry.reply !== undefined)) entry.errno = errnoName(entry.ret);
      log.push(entry);
    };
    const name = `vm ${rt.spec.name} ${ev.op}`;
    const qmpEvent = ev.on_qmp_event;
    if (qmpEvent === undefined) return void k.events.schedule(t0 + ev.at, name, run);
    // A client reacting to a QMP event: armed at `at`, run (once) at the first such event after it, as an event of its own.
    const path: YamlPath = ['vms', rt.vi, 'events', ei, 'on_qmp_event'];
    unanswered.add(path);
    k.events.schedule(t0 + ev.at, `${name} armed`, () => {
      const listeners = rt.vm.monitor.onEvent;
      const on = (e: { event: string }): void => {
        if (e.event !== qmpEvent) return;
        listeners.splice(listeners.indexOf(on), 1);
        unanswered.delete(path);
        k.events.schedule(k.clock.now(), name, run);
      };
      listeners.push(on);
    });
  });
  const net = vms[0]?.net;
  if (net) net.startTraffic(t0, t0 + s.duration);
  if (s.evacuate) scheduleEvacuation(k, s, vms, t0, log, rep);
  return {
    log,
    close: () => {
      for (const w of open.values()) closeWindow(w);
      open.clear();
      for (const p of unanswered) rep.warn(p, 'the VM never sent this QMP event after `at`: the event did not run');
    },
  };
}

/**
 * The fields each VM event reads, besides `at` and `op`. Another field set
 * on the event would be ignored: an error (checkVmEvent).
 */
const VM_EVENT_FIELDS: Record<VmEventSpec['op'], readonly (keyof VmEventSpec)[]> = {
  balloon: ['target', 'expect_error'],
  free_page_hint: ['action'],
  guest_alloc: ['size', 'vcpu', 'page_cache'],
  guest_free: ['size'],
  qmp: ['command', 'expect_error'],
  hmp: ['command', 'expect_error'],
  migrate_pages: ['old_nodes', 'new_nodes'],
  move_pages: ['guest_node', 'nodes', 'flags'],
  mbind: ['guest_node', 'nodes', 'policy', 'mode_flags', 'flags'],
  migrate: [
    'bandwidth',
    'latency',
    'max-bandwidth',
    'downtime-limit',
    'capabilities',
    'start-postcopy',
    'max-postcopy-bandwidth',
    'xbzrle-cache-size',
    'vcpu-dirty-limit',
    'x-vcpu-dirty-limit-period',
    'multifd-channels',
    'multifd-compression',
    'page-content',
    'sndbuf',
    'rcvbuf',
    'hugetlb-request-size',
    'destination',
    'expect_error',
  ],
  migration_fault: ['fault', 'duration'],
};

/** Whether an event field is set: fields the schema fills with a default count only when they differ from it. */
function isSet(ev: VmEventSpec, key: keyof VmEventSpec): boolean {
  const v = ev[key];
  if (v === undefined) return false;
  if (key === 'vcpu' || key === 'latency') return v !== 0;
  if (Array.isArray(v)) return v.length > 0;
  return true;
}

/** Migration fields that only postcopy reads. */
const POSTCOPY_FIELDS = ['start-postcopy', 'max-postcopy-bandwidth', 'rcvbuf', 'hugetlb-request-size'] as const;

/**
 * Checks of a VM event the schema cannot make: what each op needs, and
 * fields that would have no effect where they are (another op's field, a
 * postcopy setting without postcopy-ram, a link-stall's duration on
 * another fault).
 */
function checkVmEvent(rt: VmRt, ev: VmEventSpec, path: YamlPath, rep: RunReport): void {
  const fields = VM_EVENT_FIELDS[ev.op];
  for (const key of Object.keys(ev) as (keyof VmEventSpec)[])
    if (key !== 'at' && key !== 'op' && key !== 'on_qmp_event' && !fields.includes(key) && isSet(ev, key))
      throw rep.at.error([...path, key], `has no effect on a ${ev.op} event (it reads ${fields.join(', ')})`);
  switch (ev.op) {
    case 'hmp':
      if (typeof ev.command !== 'string') throw rep.at.error([...path, 'command'], 'an HMP command line (a string)');
      return;
    case 'migrate': {
      if (networkDestination(rt, ev)) {
        // Over the network: its NICs (and the flows sharing them) decide the rate, not a link of its own.
        for (const key of ['bandwidth', 'latency'] as const)
          if (isSet(ev, key))
            throw rep.at.error(
              [...path, key],
              `has no effect: the migration goes to host ${ev.destination!.host as string} of \`hosts\` over the NICs (\`nic\`, hosts[].nic)`,
            );
      } else if (ev.bandwidth === undefined)
        throw rep.at.error([...path, 'bandwidth'], 'the link bandwidth in bytes per second (e.g. 1250M)', false);
      else if (ev.bandwidth <= 0)
        throw rep.at.error([...path, 'bandwidth'], 'the link bandwidth must be positive (bytes per second, e.g. 1250M)');
      if (rt.spec.events.some((e, i) => e.op === 'migrate' && e !== ev && i < rt.spec.events.indexOf(ev)))
        throw rep.at.error(path, 'one migration per VM');
      if (!ev.capabilities.includes('postcopy-ram')) {
        for (const key of POSTCOPY_FIELDS)
          if (ev[key] !== undefined)
            throw rep.at.error(
              [...path, key],
              key === 'start-postcopy' ? 'needs postcopy-ram in capabilities' : 'has no effect without postcopy-ram in capabilities',
            );
        const bt = ev.capabilities.indexOf('postcopy-blocktime');
        if (bt >= 0) throw rep.at.error([...path, 'capabilities', bt], 'postcopy-blocktime has no effect without postcopy-ram');
      }
      return;
    }
    case 'migration_fault':
      if (ev.fault === undefined) throw rep.at.error(path, 'a migration_fault needs fault (one of link-stall, link-drop, source-loss)');
      if (ev.fault === 'link-stall' && ev.duration === undefined)
        throw rep.at.error(path, 'a link-stall needs duration (how long the link stalls)');
      if (ev.fault !== 'link-stall' && ev.duration !== undefined)
        throw rep.at.error([...path, 'duration'], `has no effect on a ${ev.fault} fault (only a link-stall lasts)`);
      return;
    case 'mbind':
      if (!rt.vm.k.processMbind.enabled) throw rep.at.error(path, MBIND_NEEDS_PROPOSAL);
      return;
    default:
      return;
  }
}

/**
 * Why a host tool's `mbind` on the VMM needs the process_mbind proposal:
 * Linux has no call that sets another process's memory policy.
 */
const MBIND_NEEDS_PROPOSAL =
  "mbind from a host tool needs the process_mbind proposal, off by default (/sys/kernel/memtwin/features/process_mbind: 1 in `kernel`): Linux's mbind(2) acts only on the caller's own memory, and a tool outside the VMM can only move its pages (a migrate_pages or move_pages event), which leaves the policy the VMM set (QEMU's host-nodes and policy, fixed once the backend is created) for later faults";

/** The host tools of events (numactl, migratepages...): ops that act on the VMM process from outside it. */
const TOOL_OPS: ReadonlySet<VmEventSpec['op']> = new Set(['migrate_pages', 'move_pages', 'mbind']);

/**
 * The monitor as an event uses it: a command QEMU refuses stops the run
 * with QEMU's error, located at the event, unless the event says the
 * refusal is expected (`expect_error`: the error class, or part of its
 * text); then the run fails if QEMU accepts instead.
 */
class EventMonitor {
  private readonly refusals: { command: string; cls: string; desc: string; field?: string }[] = [];
  private readonly issued: string[] = [];

  constructor(
    private readonly rt: VmRt,
    private readonly ev: VmEventSpec,
    private readonly path: YamlPath,
    private readonly rep: RunReport,
  ) {}

  /** A QMP command (object or JSON text); a refusal is noted against `field` of the event. */
  qmp(req: string | Record<string, unknown>, field?: string): QmpResponse {
    const r = this.rt.vm.monitor.execute(req);
    const name = typeof req === 'string' ? req : String(req['execute']);
    this.issued.push(name);
    if ('error' in r)
      this.refusals.push({ command: name, cls: r.error.class, desc: r.error.desc, field: field ?? paramField(this.ev, r.error.desc) });
    return r;
  }

  /** An HMP command line; QEMU's monitor answers an unknown one (or a failed one) with its error text. */
  hmp(line: string): string {
    const out = this.rt.vm.monitor.hmp(line);
    this.issued.push(line);
    const m = /^(unknown command: .*|Error: .*)$/m.exec(out);
    if (m) this.refusals.push({ command: line, cls: 'HMP', desc: m[1]!.replace(/^Error: /, '') });
    return out;
  }

  /** After the event: a refusal not expected, or an expected one that did not come, stops the run. */
  settle(): void {
    const expect = this.ev.expect_error;
    const first = this.refusals[0];
    if (expect === undefined) {
      if (first)
        throw this.rep.at.error(
          first.field ? [...this.path, first.field] : this.path,
          `QEMU refused ${first.command}: ${first.desc} (${first.cls}); if showing this refusal is the point, add expect_error: ${JSON.stringify(first.desc)} to the event`,
        );
      return;
    }
    if (!first)
      throw this.rep.at.error(
        [...this.path, 'expect_error'],
        `QEMU was expected to refuse with ${JSON.stringify(expect)}, but it accepted ${this.issued.join(', ') || 'the event'}`,
      );
    const other = this.refusals.find((r) => r.cls !== expect && !r.desc.includes(expect));
    if (other)
      throw this.rep.at.error(
        [...this.path, 'expect_error'],
        `QEMU refused ${other.command} with ${JSON.stringify(other.desc)} (${other.cls}), not ${JSON.stringify(expect)}`,
      );
  }
}

/** The event field a QEMU parameter error names ("Parameter 'downtime_limit' ..."), if the event has it. */
function paramField(ev: VmEventSpec, desc: string): string | undefined {
  const m = /Parameter '([a-z_-]+)'/.exec(desc);
  if (!m) return undefined;
  const name = m[1]!.replace(/_/g, '-');
  if (name === 'capability') return 'capabilities';
  return name in ev ? name : undefined;
}

/** One VM event; its kernel time goes to the caller's task (a host tool, the guest or the VMM). */
function runVmEvent(
  k: Kernel,
  s: Scenario,
  rt: VmRt,
  ev: VmEventSpec,
  ei: number,
  entry: RunEventLog,
  mon: EventMonitor,
  rep: RunReport,
): void {
  const p = rt.vm.process;
  const path: YamlPath = ['vms', rt.vi, 'events', ei];
  const ranges = (): { hva: number; size: number }[] => parseInfoRam(rt.vm.monitor.hmp('info ram')).filter((r) => r.node === ev.guest_node);
  switch (ev.op) {
    case 'balloon': {
      const r = mon.qmp({ execute: 'balloon', arguments: { value: ev.target } }, 'target');
      entry.reply = JSON.stringify(r);
      if ('error' in r) entry.ret = -1;
      return;
    }
    case 'free_page_hint': {
      const d = rt.dev!;
      if (ev.action === 'start') {
        d.clearHints();
        d.freePageStart();
      } else if (ev.action === 'stop') d.freePageStop();
      else d.freePageDone();
      return;
    }
    case 'guest_alloc': {
      const want = Math.floor(ev.size! / PAGE_SIZE);
      // Page cache stays with the guest kernel (its reclaim drops it); anonymous memory is the task's until guest_free.
      const held = rt.guestPages;
      const take = ev.page_cache ? (): void => {} : (pfn: number): void => held.push(pfn);
      const { n, ns } = rt.guestBatch(() => rt.guest.faultInto(ev.vcpu, ev.page_cache ? PageUse.File : PageUse.Anon, want, take));
      k.charge(ns);
      entry.ret = n;
      if (n < want)
        rep.warn(
          path,
          `guest_alloc faulted in ${mib(n * PAGE_SIZE)} MiB of the ${mib(want * PAGE_SIZE)} MiB asked: the guest ran out of free memory (after its reclaim and OOM notifiers: its OOM killer's place, ${rt.guest.pages.oomKills} so far)`,
        );
      return;
    }
    case 'guest_free': {
      const want = Math.floor(ev.size! / PAGE_SIZE);
      const n = Math.min(rt.guestPages.length, want);
      rt.guest.release(rt.guestPages.popNewest(n));
      entry.ret = n;
      if (n < want)
        rep.warn(
          path,
          `guest_free freed ${mib(n * PAGE_SIZE)} MiB of the ${mib(want * PAGE_SIZE)} MiB asked: guest_alloc had faulted in no more`,
        );
      return;
    }
    case 'qmp': {
      const r = mon.qmp(ev.command as string | Record<string, unknown>, 'command');
      entry.reply = JSON.stringify(r);
      if ('error' in r) entry.ret = -1;
      return;
    }
    case 'hmp': {
      entry.reply = mon.hmp(ev.command as string);
      return;
    }
    case 'migrate_pages':
      entry.ret = asHostTool(k, (tool) => sysMigratePages(k, tool, p, ev.old_nodes!, ev.new_nodes!));
      return;
    case 'migrate':
      startMigration(k, s, rt, ev, ei, entry, mon, rep);
      return;
    case 'migration_fault':
      if (!rt.mig) throw rep.at.error(path, 'a migration_fault needs a migrate event before it');
      rt.faultInjected = true;
      if (ev.fault === 'link-stall') rt.mig.linkStall(ev.duration!);
      else if (ev.fault === 'link-drop') rt.mig.linkDrop();
      else rt.mig.sourceLost();
      entry.reply = JSON.stringify(rt.mig.query());
      return;
    case 'move_pages': {
      // A tool reads info ram, then moves every page of the guest node's HVA ranges.
      const pages: number[] = [];
      for (const r of ranges()) for (let a = r.hva; a < r.hva + r.size; a += PAGE_SIZE) pages.push(a);
      const flags = ev.flags.reduce((f, x) => f | MPOL[x], 0) || MPOL.MPOL_MF_MOVE;
      entry.ret = asHostTool(k, (tool) => sysMovePages(k, tool, p, pages, new Array<number>(pages.length).fill(ev.nodes![0]!), flags).ret);
      return;
    }
    case 'mbind': {
      // process_mbind(pidfd of the VMM, the node's ranges as an iovec, ...): the proposal (checkVmEvent).
      const iov = ranges().map((r) => ({ start: r.hva, len: r.size }));
      const mode = ev.mode_flags.reduce<number>((m, f) => m | MPOL[f], MPOL[ev.policy!]);
      entry.ret = asHostTool(k, (tool) =>
        sysProcessMbind(
          k,
          tool,
          p,
          iov,
          mode,
          ev.nodes ?? [],
          ev.flags.reduce((f, y) => f | MPOL[y], 0),
        ),
      );
      return;
    }
  }
}

/**
 * A host tool (root, as numactl or migratepages run by the operator): a
 * process of its own that makes one call on the VMM and exits.
 */
function asHostTool(k: Kernel, call: (tool: Process) => number): number {
  const tool = k.createProcess('numatool');
  try {
    return call(tool);
  } finally {
    exitProcess(k, tool);
  }
}

/**
 * A `migrate` event: the destination VMM (same configuration, `-incoming`)
 * starts on this host, the source's monitor gets QEMU's migration commands,
 * the parameters and capabilities are set through them, and `migrate`
 * starts precopy over a link of the event's bandwidth and latency. A
 * balloon with free-page-hint starts hinting at once (QEMU starts it from
 * the migration's precopy notifier), so pages hinted before they are sent
 * are skipped.
 */
function startMigration(
  k: Kernel,
  s: Scenario,
  rt: VmRt,
  ev: VmEventSpec,
  ei: number,
  entry: RunEventLog,
  mon: EventMonitor,
  rep: RunReport,
  path: YamlPath = ['vms', rt.vi, 'events', ei],
  onEnd?: () => void,
): void {
  const d = ev.destination;
  const shared = networkDestination(rt, ev);
  const dk = shared ? rt.net!.kernel(shared) : d ? destinationKernel(k, s, d, [...path, 'destination'], rep) : k;
  const dspec: VmSpec = { ...rt.spec, ...(d?.memdevs ? { memdevs: d.memdevs } : {}), ...(d?.vcpus ? { vcpus: d.vcpus } : {}) };
  let dst: Vm;
  try {
    dst = new Vm(dk, { ...vmConfigOf(dspec), name: `${rt.spec.name}-dst` });
  } catch (e) {
    if (e instanceof QemuError) {
      const mi = d?.memdevs?.findIndex((m) => m.id === e.object) ?? -1;
      throw rep.at.error(mi >= 0 ? [...path, 'destination', 'memdevs', mi] : path, `destination: qemu-system-x86_64: ${e.message}`);
    }
    throw e;
  }
  (dst.process as { name: string }).name = `${rt.spec.name}-dst`;
  dst.runState = 'inmigrate'; // -incoming: the guest runs there only after the switchover
  const requestSize = ev['hugetlb-request-size'] === undefined ? undefined : ev['hugetlb-request-size'] === '4K' ? PAGE_SIZE : 2 * MiB;
  if (requestSize !== undefined) checkRequestSize(rt.vm, dk, requestSize, [...path, 'hugetlb-request-size'], rep);
  // The destination's kernel balances the arriving VMM's memory if it says so (each VMM that arrives on a host is
  // scanned from its arrival, as every mm is; on the scenario's own host too).
  dk.numab.start([dst.process]);
  const hints = rt.dev && rt.spec.balloon?.['free-page-hint'] ? rt.dev : undefined;
  const mig = new MigrationState(rt.vm, {
    ...(hints ? { hints } : {}),
    postcopy: requestSize !== undefined ? { hugetlbRequestSize: requestSize } : {},
    onGuest: (w) => guestMoves(rt, dst, dspec, w),
    flowName: rt.spec.name,
    ...(ev['page-content'] ? { pageContent: ev['page-content'] } : {}),
    ...(onEnd ? { onEnd } : {}),
    dirtyRingSize: rt.spec.accel['dirty-ring-size'],
  }).register();
  rt.mig = mig;
  rt.migEvent = ei;
  rt.migPath = path;
  rt.dst = dst;
  for (const f of rt.onIncoming) f(dst);
  // auto-converge throttles the guest's vCPUs (cpu_throttle_set), dirty-limit each vCPU: its workloads run that much
  // slower. Stores feed the dirty ring (ring-full exits cost the vCPU) and xbzrle (what changed in a page).
  for (const g of rt.guestThreads) {
    g.wt.runFraction = () => mig.vcpuRunFraction(g.vcpu);
    g.wt.storeHook = (va, n) => mig.onGuestStore(g.vcpu, va, n);
  }
  rt.dstSpec = dspec;
  const params: Record<string, unknown> = {};
  if (ev['max-bandwidth'] !== undefined) params['max-bandwidth'] = ev['max-bandwidth'];
  if (ev['downtime-limit'] !== undefined) params['downtime-limit'] = ev['downtime-limit'];
  if (ev['max-postcopy-bandwidth'] !== undefined) params['max-postcopy-bandwidth'] = ev['max-postcopy-bandwidth'];
  for (const name of ['xbzrle-cache-size', 'vcpu-dirty-limit', 'x-vcpu-dirty-limit-period'] as const)
    if (ev[name] !== undefined) params[name] = ev[name];
  if (ev['multifd-channels'] !== undefined) params['multifd-channels'] = ev['multifd-channels'];
  if (ev['multifd-compression'] !== undefined) params['multifd-compression'] = ev['multifd-compression'];
  const replies = [
    mon.qmp({ execute: 'migrate-set-parameters', arguments: params }),
    mon.qmp(
      { execute: 'migrate-set-capabilities', arguments: { capabilities: ev.capabilities.map((c) => ({ capability: c, state: true })) } },
      'capabilities',
    ),
  ];
  const bufs = { ...(ev.sndbuf !== undefined ? { sndbuf: ev.sndbuf } : {}), ...(ev.rcvbuf !== undefined ? { rcvbuf: ev.rcvbuf } : {}) };
  // To a host of `hosts`: the path out of this host's NIC into that one's, shared with every other flow on them.
  const link = shared
    ? new Link({ network: rt.net!.net, path: rt.net!.net.path(rt.net!.source, shared), ...bufs })
    : new Link({ bandwidth: ev.bandwidth!, latency: ev.latency, ...bufs });
  mig.incoming('tcp:0:4444', dst, link);
  // Hints of an earlier migration are gone with its bitmap; this one's start after its first bitmap sync (the precopy notifier).
  hints?.clearHints();
  replies.push(mon.qmp({ execute: 'migrate', arguments: { uri: 'tcp:0:4444' } }));
  if (ev['start-postcopy'] !== undefined)
    k.events.after(ev['start-postcopy'], `vm ${rt.spec.name} migrate-start-postcopy`, () => {
      const r = rt.vm.monitor.execute({ execute: 'migrate-start-postcopy' });
      const expect = ev.expect_error;
      if ('error' in r && (expect === undefined || (r.error.class !== expect && !r.error.desc.includes(expect))))
        throw rep.at.error([...path, 'start-postcopy'], `QEMU refused migrate-start-postcopy: ${r.error.desc} (${r.error.class})`);
    });
  entry.reply = JSON.stringify(replies);
  if (replies.some((r) => 'error' in r)) entry.ret = -1;
}

/** The host of `hosts` a migrate event's destination names, if it names one (then it goes over the network). */
function networkDestination(rt: VmRt, ev: VmEventSpec): string | undefined {
  const h = ev.destination?.host;
  return typeof h === 'string' && rt.net?.isHost(h) ? h : undefined;
}

/**
 * `evacuate`: the VMs leave the scenario's host for one of `hosts`, at most
 * max_concurrent at a time, in their order; each next one starts when one
 * before it ends (completed, failed or cancelled), as Nova's
 * max_concurrent_live_migrations or host-evacuate-live --max-servers do.
 * Each migration is a migrate event of the VM with the evacuation's QEMU
 * settings; the run logs it as one.
 */
function scheduleEvacuation(k: Kernel, s: Scenario, vms: VmRt[], t0: number, log: RunEventLog[], rep: RunReport): void {
  const e = s.evacuate!;
  const order = (e.vms ?? s.vms.map((v) => v.name)).map((n) => vms.find((rt) => rt.spec.name === n)!);
  const limit = e.max_concurrent ?? order.length;
  const path: YamlPath = ['evacuate'];
  let next = 0;
  const ev: VmEventSpec = {
    ...e.migrate,
    at: e.at,
    op: 'migrate',
    latency: 0,
    destination: { host: e.to, kernel: {} },
  } as VmEventSpec;
  const start = (): void => {
    const rt = order[next++];
    if (!rt) return;
    const at = k.clock.now();
    const entry: RunEventLog = { at_ns: at - t0, op: 'migrate', process: rt.spec.name, vm: rt.spec.name, ret: 0, ns: 0, pages_migrated: 0 };
    const mon = new EventMonitor(rt, ev, path, rep);
    const ctx = { ns: 0 };
    // The next one starts when this one ends, as an event of its own (an end can come from inside another event's task).
    const onEnd = (): void => void k.events.schedule(k.clock.now(), 'evacuate next', start);
    guestAccess(k, path, rep, () => k.runAsTask(ctx, () => startMigration(k, s, rt, ev, -1, entry, mon, rep, path, onEnd)));
    mon.settle();
    entry.ns = Math.round(ctx.ns);
    log.push(entry);
  };
  k.events.schedule(t0 + e.at, 'evacuate', () => {
    for (let i = 0; i < limit; i++) start();
  });
}

/**
 * hugetlb-request-size works only where a proposal places hugetlb RAM in
 * parts (uffd-hugetlb-subpage-copy, uffd-hugetlb-vma-split or hugetlb-hgm
 * on the destination's kernel) and on guest RAM in huge pages larger than
 * the unit; anywhere else it would be ignored.
 */
function checkRequestSize(src: Vm, dk: Kernel, size: number, path: YamlPath, rep: RunReport): void {
  const on = HGM_PROPOSALS.filter((p) => dk.hgm.enabled[p]);
  if (!on.length && !dk.devmem.enabled)
    throw rep.at.error(
      path,
      `has no effect: none of ${[...HGM_PROPOSALS, DEVMEM_REMAP].join(', ')} is enabled on the destination's kernel (/sys/kernel/memtwin/features/...)`,
    );
  // The /dev/mem remap alone: its aliases map 4K pages only.
  if (!on.some((p) => p !== 'hugetlb-hgm') && dk.devmem.enabled && size !== PAGE_SIZE)
    throw rep.at.error(path, `must be 4K with ${DEVMEM_REMAP} (a /dev/mem alias maps 4K pages only)`);
  if (!src.ramList.blocks.some((b) => b.pageSize > size))
    throw rep.at.error(
      path,
      `has no effect: no guest RAM is on huge pages larger than ${formatSize(size)} (the RAM blocks' page sizes: ${[...new Set(src.ramList.blocks.map((b) => formatSize(b.pageSize)))].join(', ')})`,
    );
}

/**
 * The destination host of a migration, when the event gives one: a kernel
 * of its own on the same virtual timeline, with the scenario's knobs and
 * then the destination's.
 */
function destinationKernel(k: Kernel, s: Scenario, d: NonNullable<VmEventSpec['destination']>, path: YamlPath, rep: RunReport): Kernel {
  let host;
  try {
    host = d.host === undefined ? k.host : typeof d.host === 'string' ? resolveHost(d.host) : hostFromFile(d.host);
  } catch (e) {
    throw rep.at.error([...path, 'host'], `cannot load host: ${(e as Error).message}`);
  }
  const dk = new Kernel({ host, costs: k.costs, seed: s.seed + 1, sameTimeAs: k });
  if (k.membw) dk.membw = new MemBandwidth(membwSpec(host, membwParams(k.costs)));
  if (k.sched) dk.enableScheduler();
  for (const [knob, value] of Object.entries(s.kernel)) {
    const r = dk.sysfs.write(knob, String(value));
    if (r < 0) throw rep.at.error(['kernel', knob], `the destination kernel rejects ${JSON.stringify(value)} (${errnoName(r)})`);
  }
  for (const [knob, value] of Object.entries(d.kernel)) {
    const r = dk.sysfs.write(knob, String(value));
    if (r < 0) throw rep.at.error([...path, 'kernel', knob], `the destination kernel rejects ${JSON.stringify(value)} (${errnoName(r)})`);
  }
  return dk;
}

/**
 * The guest's vCPUs around a switchover: stopped while the source stops
 * the guest, running again on the source if the switchover fails, or
 * moved to the destination VMM (its process, the same vCPU's thread, the
 * same guest node's RAM there) when the guest runs there.
 */
function guestMoves(rt: VmRt, dst: Vm, dspec: VmSpec, what: 'stop' | 'start-source' | 'start-destination'): void {
  migrationRunState(rt.vm, dst, what);
  if (what === 'stop') for (const g of rt.guestThreads) g.wt.stop();
  else if (what === 'start-source') for (const g of rt.guestThreads) g.wt.start();
  else {
    const dstRam = nodeRamOf(dspec, dst);
    rt.tlb4kAtSwitch = rt.guestThreads.reduce((a, g) => a + g.wt.tlb4kNs, 0);
    // A vCPU blocked in a userfault on the destination host runs again when that kernel wakes it.
    if (dst.k !== rt.vm.k) dst.k.uffd.wakeListeners.push((t) => rt.guestThreads.find((g) => g.wt.thread === t)?.wt.userfaultWoken());
    for (const g of rt.guestThreads) {
      g.wt.moveTo(dst.k, dst.process, dst.vcpus[g.vcpu]!.thread, dstRam[g.node]!.hva - rt.nodeRam[g.node]!.hva, (va, pfn, write) =>
        dst.eptAccess(va, pfn, write),
      );
      // Its accesses now count for an agent watching the destination, no longer for one watching the source.
      g.wt.heat = rt.dstHeat;
      g.wt.start();
    }
  }
}

/**
 * The run states and QMP events of a migration, as QEMU's: the source stops
 * the guest for the switchover (STOP, then `postmigrate` once the
 * destination runs it, or RESUME if it runs on the source again); the
 * destination waits in `inmigrate` and sends RESUME when the guest starts
 * there. (The guest's threads are moved by guestMoves itself, not through
 * onRunState.)
 */
function migrationRunState(src: Vm, dst: Vm, what: 'stop' | 'start-source' | 'start-destination'): void {
  if (what === 'stop') {
    src.runState = 'paused';
    src.monitor.emit('STOP');
  } else if (what === 'start-source') {
    src.runState = 'running';
    src.monitor.emit('RESUME');
  } else {
    src.runState = 'postmigrate';
    dst.runState = 'running';
    dst.monitor.emit('RESUME');
  }
}

/** query-migrate's numbers, flattened under vm.<name>.migration. (status: completed 1, else 0). */
function migrationFinal(rt: VmRt, out: Record<string, number>): void {
  if (!rt.mig) return;
  const q = rt.mig.query();
  const pre = `vm.${rt.spec.name}.migration.`;
  out[`${pre}completed`] = q['status'] === 'completed' ? 1 : 0;
  out[`${pre}vm_lost`] = rt.mig.vmLost ? 1 : 0;
  const pc = rt.mig.postcopy;
  if (pc) {
    const lat = [...pc.stats.latencies].sort((a, b) => a - b);
    const pct = (f: number): number => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(f * lat.length))]! : 0);
    out[`${pre}postcopy.faults`] = lat.length;
    out[`${pre}postcopy.latency_mean_ns`] = lat.length ? Math.round(lat.reduce((a, b) => a + b, 0) / lat.length) : 0;
    out[`${pre}postcopy.latency_p50_ns`] = pct(0.5);
    out[`${pre}postcopy.latency_p99_ns`] = pct(0.99);
    out[`${pre}postcopy.latency_max_ns`] = lat.length ? lat[lat.length - 1]! : 0;
    out[`${pre}postcopy.blocktime_ns`] = pc.stats.vcpuBlocktime.reduce((a, b) => a + b, 0);
    out[`${pre}postcopy.all_vcpus_blocked_ns`] = pc.stats.totalBlocktime;
    out[`${pre}postcopy.resume_ns`] = pc.resumedAt - rt.mig.startTime;
    // Guest RAM the destination maps with huge (2M/1G) leaves at the end: the TLB reach postcopy left.
    let huge = 0;
    for (const r of rt.dst ? rt.dst.ramRanges() : [])
      for (let g = r.gpa; g < r.gpa + r.size; g += 2 * 2 ** 20) if (rt.dst!.hostMappingSize(g) > PAGE_SIZE) huge += 2 * 2 ** 20;
    out[`${pre}postcopy.dst_huge_mapped_bytes`] = huge;
    // What 4K mappings cost the guest on the destination (the TLB-reach term of its accesses), from the switchover on.
    const tlb4k = rt.guestThreads.reduce((a, g) => a + g.wt.tlb4kNs, 0);
    out[`${pre}postcopy.dst_tlb4k_ns`] = Math.round(tlb4k - (rt.tlb4kAtSwitch ?? tlb4k));
    // The page tables postcopy added on the destination at most (PTE tables of huge pages mapped in parts, aliases).
    out[`${pre}postcopy.dst_pgtables_peak_bytes`] = pc.stats.pgtablesPeak - pc.stats.pgtablesAtStart;
  }
  // No data lost: pages that did not carry the source's content when the destination took them over (hinted free pages aside).
  if (q['status'] === 'completed') {
    out[`${pre}pages_differing`] = rt.mig.contentCheck!.pagesDiffering;
    // query-migrate's times are whole ms; in ns too, for comparisons.
    out[`${pre}total_time_ns`] = rt.mig.endTime - rt.mig.startTime;
    out[`${pre}downtime_ns`] = rt.mig.downtime;
    // The pause the guest saw: from the stop on the source until it ran on the destination.
    if (rt.mig.guestResumedAt) out[`${pre}guest_paused_ns`] = rt.mig.guestResumedAt - rt.mig.downtimeStart;
  }
  // The KVM dirty ring: ring-full exits and the vCPU time they took; what the bitmap syncs cost (either tracking).
  const ring = rt.mig.dirtyRing;
  if (ring) {
    out[`${pre}dirty_ring.full_exits`] = ring.fullExits;
    out[`${pre}dirty_ring.vcpu_lost_ns`] = Math.round(ring.lostNsPerVcpu.reduce((a, b) => a + b, 0));
  }
  if (rt.mig.ram) out[`${pre}dirty_sync_ns`] = Math.round(rt.mig.ram.syncNsTotal);
  const xb = rt.mig.xbzrle;
  if (xb) {
    out[`${pre}xbzrle.src_cpu_ns`] = Math.round(xb.srcNs);
    out[`${pre}xbzrle.dst_cpu_ns`] = Math.round(xb.dstNs);
  }
  const dl = rt.mig.dirtyLimit;
  if (dl) {
    out[`${pre}dirty_limit.peak_throttle_per_round_us`] = dl.peakThrottleUs;
    out[`${pre}dirty_limit.min_run_fraction`] = dl.minFraction;
  }
  for (const [key, v] of Object.entries(q)) {
    if (typeof v === 'number') out[pre + key] = v;
    else if ((key === 'ram' || key === 'xbzrle-cache') && v && typeof v === 'object')
      for (const [rk, rv] of Object.entries(v as Record<string, unknown>)) if (typeof rv === 'number') out[`${pre}${key}.${rk}`] = rv;
  }
}

/**
 * The VMM's resident memory and the guest's free memory, into `out`; and
 * the anonymous huge pages (smaps AnonHugePages) of the source VMM and of
 * the destination's once a migration started it, so that huge-page
 * numbers of the two (maybe on one host) are told apart.
 */
function vmMemory(rt: VmRt, out: Record<string, number>): void {
  const mm = rt.vm.process.mm;
  out[`vm.${rt.spec.name}.rss_bytes`] = (mm.rssAnon + mm.rssShmem) * PAGE_SIZE;
  out[`vm.${rt.spec.name}.guest_free_bytes`] = rt.guest.pages.freePageCount * PAGE_SIZE;
  out[`vm.${rt.spec.name}.anon_huge_bytes`] = anonHugeBytes(rt.vm.k, mm);
  if (rt.migrates) out[`vm.${rt.spec.name}.dst.anon_huge_bytes`] = rt.dst ? anonHugeBytes(rt.dst.k, rt.dst.process.mm) : 0;
}

/** Bytes of an mm mapped by anonymous (THP, not hugetlb) PMD leaves: its smaps AnonHugePages. */
export function anonHugeBytes(k: Kernel, mm: MmStruct): number {
  let n = 0;
  for (const e of mm.pgtable.pmds.values()) if (e instanceof HugeLeaf && !e.isZero && !(k.mem.flags(e.pfn) & PG.hugetlb)) n += PMD_SIZE;
  return n;
}

/** The share of the guest's accesses (wherever it ran) that went through huge host mappings: vm.NAME.huge_access_ratio. */
function guestHugeRatio(rt: VmRt): number {
  const acc = rt.guestThreads.reduce((a, g) => a + g.wt.accesses, 0);
  const huge = rt.guestThreads.reduce((a, g) => a + g.wt.hugeAccesses, 0);
  return acc ? Math.round((huge / acc) * 1e4) / 1e4 : 0;
}

/** Per-sample series of the VMs: the VMM's RSS, the balloon size, the guest's free memory. */
export function vmSeries(vms: VmRt[]): Record<string, number> {
  const out: Record<string, number> = {};
  vms[0]?.net?.series(
    out,
    vms.map((rt) => [rt.spec.name, rt.mig?.flow]),
  );
  for (const rt of vms) {
    const n = rt.spec.name;
    vmMemory(rt, out);
    if (rt.dev) {
      out[`vm.${n}.balloon_actual_bytes`] = rt.dev.queryBalloon().actual;
      out[`vm.${n}.reported_bytes`] = rt.dev.metrics().bytesReported;
    }
  }
  return out;
}

/** `<prefix>guest_node<g>.host_node<h>_bytes`: resident 4K pages of each guest node's RAM, by host node. */
function placement(vm: Vm, nodeRam: { hva: number; size: number }[], prefix: string, out: Record<string, number>): void {
  const pfns = new Int32Array(PMD_SIZE / PAGE_SIZE);
  const mm = vm.process.mm;
  const one = vm.k.host.nodes.length === 1;
  nodeRam.forEach((boot, g) => {
    const by: number[] = vm.k.host.nodes.map(() => 0);
    // The node's boot RAM and the DIMMs plugged into it.
    const ranges = [boot, ...vm.memoryDevices.filter((d) => d.node === g).map((d) => ({ hva: d.memdev.block!.host, size: d.size }))];
    for (const r of ranges) {
      const end = r.hva + r.size;
      // One page-table lookup per 2M: untouched RAM and the huge zero page cost no walk per page.
      for (let a = r.hva, n = 0; a < end; a += n * PAGE_SIZE) {
        n = Math.min((PMD_SIZE - (a % PMD_SIZE)) / PAGE_SIZE, (end - a) / PAGE_SIZE);
        if (one) {
          // One node: every resident page is on it (counted in the page table, no frame per page).
          by[vm.k.host.nodes[0]!.id]! += pmdRangeResident(mm, a, n);
          continue;
        }
        if (followPmdRange(mm, a, n, pfns) !== PMD_RANGE_PAGES) continue;
        for (let i = 0; i < n; i++) {
          const pfn = pfns[i]!;
          if (pfn < 0) continue;
          by[vm.k.phys.nodeOfPfn(pfn)]!++;
        }
      }
    }
    for (const h of vm.k.host.nodes) out[`${prefix}guest_node${g}.host_node${h.id}_bytes`] = by[h.id]! * PAGE_SIZE;
  });
}

/** Final metrics of the VMs: memory, translation counters, and the balloon device's totals. */
export function vmFinal(vms: VmRt[], log: RunEventLog[]): Record<string, number> {
  const out: Record<string, number> = {};
  vms[0]?.net?.final(out);
  evacuationFinal(vms, out);
  for (const rt of vms) {
    const n = rt.spec.name;
    vmMemory(rt, out);
    if (rt.guestThreads.length) out[`vm.${n}.huge_access_ratio`] = guestHugeRatio(rt);
    migrationFinal(rt, out);
    out[`vm.${n}.ept_violations`] = rt.vm.stats.eptViolations;
    // Memory hotplug: the DIMMs' bytes plugged (query-memory-devices), and whether QEMU still runs (0 after quit).
    if (rt.vm.deviceMemory) out[`vm.${n}.plugged_bytes`] = rt.vm.memoryDevices.reduce((a, d) => a + d.size, 0);
    out[`vm.${n}.running`] = rt.vm.runState === 'shutdown' ? 0 : 1;
    // Where each guest node's RAM lives on the host (resident 4K pages by host node), and on the destination's.
    if (rt.spec.numa.length > 1 || rt.spec.workloads.length) {
      if (rt.placementAtQuit) Object.assign(out, rt.placementAtQuit);
      else placement(rt.vm, rt.nodeRam, `vm.${n}.`, out);
      if (rt.dst && rt.dstSpec) placement(rt.dst, nodeRamOf(rt.dstSpec, rt.dst), `vm.${n}.dst.`, out);
      // A destination host of its own: its NUMA balancing counters (the run's own are the source host's).
      if (rt.dst && rt.dst.k !== rt.vm.k)
        for (const key of ['numa_hint_faults', 'numa_pages_migrated', 'pgmigrate_success'] as const)
          out[`vm.${n}.dst.${key}`] = rt.dst.k.vmstat.events[key];
    }
    if (!rt.dev) continue;
    for (const [key, v] of Object.entries(balloonCounters(rt.dev))) out[`vm.${n}.balloon.${key}`] = v;
    const mine = log.filter((e) => e.vm === n);
    const lastBalloon = mine.filter((e) => e.op === 'balloon').pop();
    if (lastBalloon?.detail) out[`vm.${n}.balloon.inflate_ns`] = lastBalloon.detail['elapsed_ns']!;
    const lastHint = mine.filter((e) => e.op === 'free_page_hint' && e.action === 'start').pop();
    if (lastHint?.detail) out[`vm.${n}.hint.elapsed_ns`] = lastHint.detail['elapsed_ns']!;
    const st = rt.drv!.stats();
    out[`vm.${n}.guest.hint_messages`] = st.hintMessages;
    out[`vm.${n}.guest.hinted_pages`] = st.hintedPages;
    out[`vm.${n}.guest.reports`] = st.reports;
    out[`vm.${n}.guest.reported_pages`] = st.reportedPages;
  }
  return out;
}

/**
 * `evacuate.*`: the evacuation's total time (from its start until the last
 * VM's migration completed; -1 if one did not), how many completed, and
 * the longest downtime among them.
 */
function evacuationFinal(vms: VmRt[], out: Record<string, number>): void {
  const migs = vms.filter((rt) => rt.migPath?.[0] === 'evacuate').map((rt) => rt.mig!);
  if (!migs.length) return;
  const done = migs.filter((m) => m.status === 'completed');
  const start = Math.min(...migs.map((m) => m.startTime));
  out['evacuate.migrations'] = migs.length;
  out['evacuate.completed'] = done.length;
  out['evacuate.total_time_ns'] = done.length === migs.length ? Math.max(...done.map((m) => m.endTime)) - start : -1;
  out['evacuate.max_downtime_ns'] = done.length ? Math.max(...done.map((m) => m.downtime)) : 0;
  out['evacuate.pages_differing'] = done.reduce((a, m) => a + m.contentCheck!.pagesDiffering, 0);
}

/**
 * Warnings about the VMs at the end of a run: a migration still running
 * (its `completed` metric is 0) with the likely cause, or one that failed
 * without an injected fault.
 */
export function vmWarnings(vms: VmRt[], rep: RunReport): void {
  for (const rt of vms) {
    const mig = rt.mig;
    // A migration QEMU refused to start (expect_error said so) has nothing to report.
    if (!mig || rt.migPath === undefined || mig.status === 'none') continue;
    const path = rt.migPath;
    const status = String(mig.query()['status']);
    if (status === 'failed' && !rt.faultInjected)
      rep.warn(path, `the migration of ${rt.spec.name} failed: ${mig.errorDesc ?? 'no error given'}`);
    else if (!['completed', 'failed', 'cancelled'].includes(status)) rep.warn(path, unfinishedMigration(rt, mig, status));
  }
}

/** Why a migration has not finished: what is left, the rate limit in force against the link, the dirty rate. */
function unfinishedMigration(rt: VmRt, mig: MigrationState, status: string): string {
  const k = rt.vm.k;
  const secs = (ns: number): string => `${Math.round(ns / 1e7) / 100} s`;
  let text = `the migration of ${rt.spec.name} is still ${status} at the end of the run, ${secs(k.clock.now() - mig.startTime)} after migrate (its completed metric is 0)`;
  const pc = mig.postcopy;
  if (pc) return `${text}: postcopy has ${pc.missingUnits} units of guest RAM still to place on the destination`;
  const ram = mig.ram;
  if (!ram) return text;
  const its = mig.iterations;
  const link = mig.link!.rate();
  const max = mig.parameters['max-bandwidth'];
  const cap = Math.floor(max / 10) === 0 ? link : Math.min(max, link);
  text += `: ${mib(ram.remainingBytes)} MiB of ${mib(ram.totalBytes)} MiB remain to send`;
  if (its.length >= 2)
    text += ` (precopy stops the guest once they fit in downtime-limit ${mig.parameters['downtime-limit']} ms at the measured rate: ${mib(mig.thresholdSize)} MiB)`;
  if (cap < link)
    text += `; max-bandwidth ${mib(max)} MiB/s${max === 128 * MiB ? " (QEMU's default)" : ''} caps the stream below the link's ${mib(link)} MiB/s`;
  else text += `; the stream runs at the link's ${mib(link)} MiB/s`;
  // The guest's dirty rate since the bulk stage ended, from the syncs (QEMU's dirty-pages-rate needs a 1 s period):
  // pages dirtied again after they were sent, what precopy must send once more.
  if (its.length >= 3) {
    const first = its[1]!;
    const last = its[its.length - 1]!;
    const pages = its.slice(2).reduce((a, x) => a + x.newDirtyPages, 0);
    if (last.at > first.at) {
      const rate = (pages * PAGE_SIZE * 1e9) / (last.at - first.at);
      text += `; the guest dirties about ${mib(rate)} MiB/s of sent pages again`;
      if (rate >= cap * 0.9) text += ', as fast as the stream sends: precopy cannot converge (auto-converge or postcopy-ram would help)';
    }
  } else text += '; the first pass over guest RAM has not ended';
  const need = ram.remainingBytes / cap;
  return `${text}; sending what remains alone takes ${secs(need * 1e9)} more`;
}
