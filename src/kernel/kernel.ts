/**
 * The simulated host kernel: physical memory, processes, the mechanisms
 * in the other files of this directory, and the syscall entry points the
 * op-script layer (and later the VMM and workloads) call.
 *
 * Syscalls return Linux-style values: >= 0 on success, -errno on failure.
 */
import { VirtualClock } from '../sim/clock.ts';
import { EventQueue } from '../sim/event_queue.ts';
import { SeededRandom } from '../sim/random.ts';
import type { CostProfile } from '../sim/cost_profile.ts';
import type { Host } from '../sim/host.ts';
import type { FlowClass, MemBandwidth } from '../sim/membw.ts';
import { MemMap, PG } from './page.ts';
import { PhysMem, initPerZoneWmarkMin, setRecommendedMinFreeKbytes } from './page_alloc.ts';
import { MmStruct, type MappedFile } from './mm_types.ts';
import { Process, Thread } from './sched.ts';
import { VmStat } from './vmstat.ts';
import { ThpSettings } from './huge_memory.ts';
import { HugetlbState } from './hugetlb.ts';
import { CompactionState } from './compaction.ts';
import { PAGE_SIZE, type SysRet } from './uapi.ts';
import { Sysfs } from './sysfs.ts';
import { NumaBalancing } from './numa_balancing.ts';
import { Memsched } from './memsched.ts';
import { Khugepaged } from './khugepaged.ts';
import { Userfaultfd } from './userfaultfd.ts';
import { HugetlbHgm } from './hugetlb_hgm.ts';
import { DevmemRemap } from './hugetlb_devmem.ts';
import { doMmap, sysMunmap, sysMprotect } from './mmap.ts';
import { sysMadvise, sysProcessMadvise } from './madvise.ts';
import { userAccess, type AccessResult } from './memory.ts';
import { SwapState } from './swapfile.ts';
import { swapCacheDelFolio } from './swap_state.ts';
import { Lruvec, lruDel, lruDelPage } from './swap.ts';
import { Kswapd, tryToFreePages, zoneReclaimablePages } from './vmscan.ts';
import { Psi } from './psi.ts';
import { Scheduler, type SchedTask } from './sched/core.ts';
import { MemcgState } from './memcontrol.ts';
import { OomState, outOfMemory } from './oom_kill.ts';
import { followCpu, type MigrationBatch } from './migrate_entry.ts';

/** Where mmap's top-down search starts (mm->mmap_base without ASLR). */
export const MMAP_BASE = 0x7f0000000000;

export interface KernelOptions {
  host: Host;
  costs: CostProfile;
  seed?: number;
  /**
   * Another host's kernel whose virtual time this one shares (its clock
   * and event queue): two hosts of one scenario, such as the source and
   * destination of a live migration, run in one timeline.
   */
  sameTimeAs?: Kernel;
}

/** Where CPU time a task spends runs: its name, the CPUs it may use (null: any), its nice value. */
export interface CpuWork {
  name: string;
  cpus?: readonly number[] | null;
  nice?: number;
  /** When the CPU has done the work. */
  onDone?: (at: number) => void;
}

export class Kernel {
  readonly host: Host;
  readonly costs: CostProfile;
  readonly clock: VirtualClock;
  readonly events: EventQueue;
  readonly random: SeededRandom;
  readonly mem: MemMap;
  readonly phys: PhysMem;
  readonly vmstat: VmStat;
  readonly thp = new ThpSettings();
  readonly hugetlb: HugetlbState;
  readonly compaction: CompactionState;
  readonly sysfs: Sysfs;
  readonly numab: NumaBalancing;
  /** The memsched groups proposal (feature, off by default). */
  readonly memsched: Memsched;
  readonly khugepaged: Khugepaged;
  readonly uffd: Userfaultfd;
  /** The postcopy-on-hugetlbfs proposals (features, off by default). */
  readonly hgm = new HugetlbHgm();
  /** The process_mbind proposal (feature, off by default: mempolicy.ts sysProcessMbind). */
  readonly processMbind = { enabled: 0 };
  /** The /dev/mem remap proposal for postcopy on hugetlb (feature, off by default) and CONFIG_STRICT_DEVMEM. */
  readonly devmem = new DevmemRemap();
  /** cpu -> node, as an array for the fault path. */
  private readonly cpuNodes: number[] = [];
  /** Costs read on the hottest paths, looked up once. */
  readonly hot: { faultWrite: number; faultRead: number; zero4k: number; copy4k: number; uffdCopy4k: number };
  readonly processes = new Map<number, Process>();
  readonly files = new Map<number, MappedFile>();
  /** vm.overcommit_memory (0 = heuristic), vm.max_map_count. */
  readonly sysctl = { overcommit_memory: 0, max_map_count: 65530, numa_balancing: 0, suid_dumpable: 0 };
  private nextPid = 1000;
  private nextTid = 1;
  private nextFileId = 1_000_000;
  private nextAnonVma = 1;
  /** Serial of content writes, folded into page tokens. */
  writeSerial = 0;
  /**
   * Memory bandwidth shared by everything that moves bytes (src/sim/membw.ts):
   * scenario runs have one, op-scripts do not (null: copies cost their
   * profile figures, as measured alone).
   */
  membw: MemBandwidth | null = null;
  /**
   * While the workload engine runs a thread's step: what the kernel's
   * copies and clears for that thread moved (chargeMem), which the engine
   * registers with its own accesses as the step's flow.
   */
  membwTask: { cpu: number; mult: Float64Array; classes: FlowClass[] } | null = null;
  /** Pages committed by VM_ACCOUNT mappings (Committed_AS). */
  committedPages = 0;
  /** Swap areas, the swap cache and the swap knobs (swapfile.ts, swap_state.ts). */
  readonly swap = new SwapState();
  /** Pages in the swap cache (SwapCached). */
  swapCachePages = 0;
  /** Each node's own lruvec (pglist_data's __lruvec: the root memory cgroup's). */
  readonly nodeLruvec: Lruvec[];
  /**
   * The lruvec a folio belongs to when a memory cgroup owns it (set by the
   * memory cgroup layer; undefined or a null answer: the node's own).
   */
  lruvecOf?: (head: number, nid: number) => Lruvec | undefined;
  /** vm.swappiness. */
  swappiness = 60;
  /** The per-node kswapd threads (vmscan.ts). */
  readonly kswapd: Kswapd;
  /** Pressure stall information (psi.ts): memory stalls of the tasks, /proc/pressure/memory. */
  readonly psi: Psi;
  /** The task whose fault the kernel is handling (current), for PSI; null in a kernel thread or tool's task. */
  current: Thread | null = null;
  /** Memory cgroups (memcontrol.ts). */
  readonly memcg: MemcgState;
  /** The OOM killer: oom_score_adj, kills, the kernel log (oom_kill.ts). */
  readonly oom: OomState;

  constructor(opts: KernelOptions) {
    this.host = opts.host;
    this.costs = opts.costs;
    this.clock = opts.sameTimeAs?.clock ?? new VirtualClock();
    this.events = opts.sameTimeAs?.events ?? new EventQueue(this.clock);
    this.random = new SeededRandom(opts.seed ?? 1);
    const nodePages = opts.host.nodes.map((n) => n.memory / PAGE_SIZE);
    this.mem = new MemMap(nodePages.reduce((a, b) => a + b, 0));
    this.phys = new PhysMem(nodePages, opts.host.distances, this.mem);
    this.vmstat = new VmStat(nodePages.length);
    this.hugetlb = new HugetlbState(this);
    this.compaction = new CompactionState(this);
    this.numab = new NumaBalancing(this);
    this.memsched = new Memsched(this);
    this.khugepaged = new Khugepaged(this);
    this.uffd = new Userfaultfd();
    this.nodeLruvec = nodePages.map((_, nid) => new Lruvec(nid));
    this.memcg = new MemcgState(this);
    this.oom = new OomState(this);
    // __alloc_pages_slowpath's helpers (page_alloc.ts): direct reclaim is a memory stall of the allocating task (psi.ts).
    this.phys.directReclaim = (req) => this.psi.memstall(() => tryToFreePages(this, req));
    this.phys.reclaimablePages = (nid) => zoneReclaimablePages(this, nid);
    this.phys.outOfMemory = (req) => outOfMemory(this, { memcg: null, order: req.order, current: null });
    initPerZoneWmarkMin(this.phys);
    if (this.thp.enabled !== 'never') setRecommendedMinFreeKbytes(this.phys); // khugepaged starts at boot
    this.kswapd = new Kswapd(this);
    this.psi = new Psi(this);
    this.phys.wakeKswapd = (nid) => this.kswapd.wake(nid);
    this.sysfs = new Sysfs(this);
    for (const [cpu, nid] of opts.host.cpuNode) this.cpuNodes[cpu] = nid;
    this.hot = {
      faultWrite: opts.costs.ns('fault_anon_4k_write'),
      faultRead: opts.costs.ns('fault_anon_4k_read_zeropage'),
      // The DRAM-bound parts of copies and clears (chargeMem): clear_page and copy_page of one 4K page.
      zero4k: opts.costs.ns('zero_page_4k'),
      copy4k: opts.costs.ns('memcpy_4k'),
      // UFFDIO_COPY/ZEROPAGE of one 4K page (mfill_atomic's per-page loop).
      uffdCopy4k: opts.costs.ns('uffdio_copy_4k'),
    };
  }

  // --- syscalls ---------------------------------------------------------------

  mmap(p: Process, addr: number, len: number, prot: number, flags: number, fd?: { file: MappedFile; offset: number }): SysRet {
    return doMmap(this, p, addr, len, prot, flags, fd);
  }
  munmap(p: Process, addr: number, len: number): SysRet {
    return sysMunmap(this, p, addr, len);
  }
  mprotect(p: Process, addr: number, len: number, prot: number): SysRet {
    return sysMprotect(this, p, addr, len, prot);
  }
  madvise(p: Process, addr: number, len: number, advice: number): SysRet {
    return sysMadvise(this, p, addr, len, advice);
  }
  processMadvise(caller: Process, target: Process | undefined, iov: readonly [number, number][], advice: number, flags: number): SysRet {
    return sysProcessMadvise(this, caller, target, iov, advice, flags);
  }
  /** Loads/stores by a thread: see userAccess. */
  access(
    t: Thread,
    start: number,
    len: number,
    stride: number,
    write: boolean,
    fill: number,
    read?: (va: number, byte: number) => void,
  ): AccessResult {
    return userAccess(this, t, start, len, stride, write, fill, read);
  }

  get nrNodes(): number {
    return this.host.nodes.length;
  }

  /** numa_node_id() for a CPU. */
  cpuToNode(cpu: number): number {
    return this.cpuNodes[cpu] ?? 0;
  }

  // --- tasks ----------------------------------------------------------------

  createProcess(name: string, cpu = this.host.nodes[0]!.cpus[0] ?? 0): Process {
    const p = new Process(this.nextPid++, name, new MmStruct(MMAP_BASE));
    this.processes.set(p.pid, p);
    p.threads.push(new Thread(this.nextTid++, p, cpu));
    return p;
  }

  /** clone(CLONE_VM): a new thread on `cpu`; -EINVAL if the CPU does not exist. */
  createThread(p: Process, cpu: number): Thread | number {
    if (!this.host.cpuNode.has(cpu)) return -22;
    const t = new Thread(this.nextTid++, p, cpu);
    p.threads.push(t);
    return t;
  }

  newFile(kind: MappedFile['kind']): MappedFile {
    const f: MappedFile = {
      id: this.nextFileId++,
      kind,
      pages: new Map(),
      mapCount: 0,
      reserved: new Set(),
      hugeShift: 0,
      opens: 0,
      size: null,
      name: null,
      policy: [],
    };
    this.files.set(f.id, f);
    return f;
  }

  newAnonVma(): number {
    return this.nextAnonVma++;
  }

  mmById(id: number): MmStruct | undefined {
    for (const p of this.processes.values()) if (p.mm.id === id) return p.mm;
    return undefined;
  }

  /** zone_statistics() for `pages` pages just allocated at pfn for a task on `localNid`. */
  accountAlloc(pfn: number, preferredNid: number, pages: number, localNid = preferredNid): void {
    this.vmstat.numaAlloc(this.phys.nodeOfPfn(pfn), preferredNid, localNid, pages);
    this.vmstat.events.pgalloc_normal += pages;
  }

  // --- CPUs -----------------------------------------------------------------

  /**
   * The scheduler: CPUs shared by tasks. Scenario runs have one; op-scripts
   * do not (one op at a time, charged to the clock), and then a thread runs
   * on its `cpu` alone.
   */
  sched: Scheduler | null = null;

  /** Give this host's CPUs a scheduler (a scenario run). */
  enableScheduler(): Scheduler {
    this.sched ??= new Scheduler(this.events, this.clock, { cpuNode: this.host.cpuNode });
    return this.sched;
  }

  /**
   * migrate_task_to: put a thread on `cpu` (NUMA balancing's placement,
   * memsched). False when its affinity mask does not allow that CPU.
   */
  moveTask(t: Thread, cpu: number): boolean {
    if (!t.se || !this.sched) {
      t.cpu = cpu;
      return true;
    }
    if (!t.se.allowed.includes(cpu)) return false;
    this.sched.moveTo(t.se, cpu);
    t.cpu = cpu;
    return true;
  }

  /** The CPUs a thread may run on (its affinity mask; every CPU without a scheduler). */
  allowedCpus(t: Thread): readonly number[] {
    return t.se ? t.se.allowed : [...this.host.cpuNode.keys()];
  }

  /** sched_setaffinity: the thread may run only on `cpus` from now on (-EINVAL if none exists). */
  setAffinity(t: Thread, cpus: readonly number[]): number {
    const ok = cpus.filter((c) => this.host.cpuNode.has(c));
    if (!ok.length) return -22;
    if (t.se && this.sched) {
      this.sched.setAffinity(t.se, ok);
      t.cpu = t.se.cpu;
    } else if (!ok.includes(t.cpu)) t.cpu = ok[0]!;
    return 0;
  }

  /** Free user pages (anon or shmem) to the buddy allocator. */
  freeUserPages(pfn: number, order: number): void {
    const f = this.mem.flags(pfn);
    // Off its LRU list; free_swap_cache: an unmapped folio still in the swap cache leaves it (its slot is
    // freed if no PTE holds it).
    if (f & PG.lru) {
      if (order) lruDel(this, pfn);
      else lruDelPage(this, pfn);
    }
    if (f & PG.swapcache) swapCacheDelFolio(this, pfn, 0);
    this.phys.free(pfn, order);
    this.vmstat.count('pgfree', 1 << order);
  }

  /**
   * Time charged to the running task instead of the global clock. The
   * op-script runner executes one op at a time, so its charges advance the
   * clock; the workload engine runs threads in parallel and collects each
   * thread's kernel time here, then schedules the thread's next step.
   */
  taskTime: { ns: number } | null = null;

  /**
   * Run `f` as a task of its own (a kernel thread, an agent, a tool making
   * a syscall): what it charges goes to `time`, not to the clock or to the
   * task that was running. With `on`, and a scheduler, that CPU time is
   * then spent on a CPU `on` allows, competing with whatever runs there
   * (the work's effects have happened already, as a workload step's do).
   */
  runAsTask<T>(time: { ns: number }, f: () => T, on?: CpuWork): T {
    const saved = this.taskTime;
    const savedCurrent = this.current;
    const savedBatches = this.taskBatches;
    const before = time.ns;
    this.taskTime = time;
    this.current = null;
    this.taskBatches = null;
    this.taskDepth++;
    try {
      return f();
    } finally {
      const batches = this.taskBatches;
      this.taskDepth--;
      this.taskTime = saved;
      this.current = savedCurrent;
      this.taskBatches = savedBatches;
      if (on) this.spend(on, time.ns - before, batches, this.clock.now() + before);
    }
  }

  /**
   * The migration batches the running task has made so far (migrate.ts
   * MigrateBatches, compaction's clusters), their windows in its own time:
   * when its CPU time is spent, they follow it (spend).
   */
  taskBatches: MigrationBatch[] | null = null;
  /** runAsTask calls under way (a workload thread's step is not one: its batches run in its own quantum). */
  private taskDepth = 0;

  /** A migration batch the running task starts (see taskBatches). */
  noteBatch(b: MigrationBatch): void {
    if (this.sched && this.taskDepth > 0) (this.taskBatches ??= []).push(b);
  }

  /**
   * `ns` of CPU time spent by a kernel thread, a tool or a VMM thread: a
   * work item on the scheduler (nothing without one: op-scripts charge the
   * clock instead). `onDone` is called when the CPU has done it (at once
   * without a scheduler). `batches`, migration batches the work made with
   * its CPU time counted from `base`, move to when the CPU really does
   * that work (migrate_entry.ts followCpu): an access to a page under
   * migration waits for the migrating task's CPU as well.
   */
  spend(on: CpuWork, ns: number, batches?: readonly MigrationBatch[] | null, base = this.clock.now()): SchedTask | null {
    if (this.sched && ns > 0) {
      const onRun = batches?.length ? followCpu(batches, base) : undefined;
      return this.sched.work(on.name, ns, { allowed: on.cpus, nice: on.nice, onDone: on.onDone, onRun });
    }
    on.onDone?.(this.clock.now() + Math.round(Math.max(0, ns)));
    return null;
  }

  /** Charge simulated time for work done by the calling thread. */
  charge(ns: number): void {
    if (this.taskTime) this.taskTime.ns += ns;
    else this.clock.advance(ns);
  }

  /**
   * Charge kernel work of `ns` that moves memory: `memNs` of it is a copy or
   * clear bound on DRAM (what it costs on an idle machine) of `bytes` read
   * on node `readNode` (-1: nothing read, a clear) and written on node
   * `writeNode`. Without a bandwidth model this is charge(ns). With one, the
   * bytes are registered (a store moves its line storeTraffic times: twice with a read for ownership
   * and write-back) and the DRAM-bound part waits for the nodes' load.
   * `cpuNode` is where the copying task runs (default: the node written,
   * as for a migration into the migrating task's node): traffic to the
   * other nodes crosses the interconnect. Returns the time charged.
   */
  chargeMem(ns: number, memNs: number, readNode: number, writeNode: number, bytes: number, cpuNode = writeNode): number {
    const bw = this.membw;
    if (!bw) {
      this.charge(ns);
      return ns;
    }
    const f = this.memFigures(bw, ns, memNs, readNode, writeNode, bytes, cpuNode);
    const task = this.membwTask;
    if (task) this.addMemClasses(task.classes, f, readNode, writeNode, bytes);
    else {
      // A task of its own (a tool's syscall, kcompactd): its copies page after page are one flow.
      const now = this.clock.now();
      bw.flow(now + Math.round(this.taskTime?.ns ?? 0), f.total, cpuNode, ownClasses(f, readNode, writeNode, bytes), true);
    }
    this.charge(f.total);
    return f.total;
  }

  /**
   * `n` chargeMem(ns, memNs, readNode, writeNode, bytes, cpuNode) calls in a
   * row, with the same effect (the same charges summed one at a time, the
   * same flows) and the work that cannot change between them done once: a
   * task copying n pages (UFFDIO_COPY of a run). Outside a task (the clock
   * advances between the calls) it makes the n calls.
   */
  chargeMemRun(n: number, ns: number, memNs: number, readNode: number, writeNode: number, bytes: number, cpuNode = writeNode): void {
    const bw = this.membw;
    const tt = this.taskTime;
    if (!bw || !tt) {
      for (let i = 0; i < n; i++) this.chargeMem(ns, memNs, readNode, writeNode, bytes, cpuNode);
      return;
    }
    // chargeMem's figures, the same for each call (the clock does not move inside a task).
    const f = this.memFigures(bw, ns, memNs, readNode, writeNode, bytes, cpuNode);
    const task = this.membwTask;
    if (task) {
      for (let i = 0; i < n; i++) {
        this.addMemClasses(task.classes, f, readNode, writeNode, bytes);
        tt.ns += f.total;
      }
      return;
    }
    tt.ns = bw.flowSeries(n, this.clock.now(), tt.ns, f.total, cpuNode, ownClasses(f, readNode, writeNode, bytes));
  }

  /**
   * `n` times, each in a task time of its own that starts at 0: charge(pre),
   * then chargeMem(ns, memNs, -1, writeNode, bytes, cpuNode) (a clear);
   * each sum goes into out[at + i] and is then charged to the caller's task
   * (Vm.writePages' pages: an EPT violation, then the host's first-touch
   * fault). The same sums and flow classes as doing it page by page, with
   * chargeMem's figures worked out once (the clock does not move inside a
   * task). Page by page outside a workload step's task, and outside a task.
   */
  chargeClearEach(
    n: number,
    pre: number,
    ns: number,
    memNs: number,
    writeNode: number,
    bytes: number,
    cpuNode: number,
    out: Float64Array,
    at: number,
  ): void {
    const outer = this.taskTime;
    const bw = this.membw;
    const task = this.membwTask;
    if (!outer || (bw && !task)) {
      const time = { ns: 0 };
      try {
        for (let i = 0; i < n; i++) {
          time.ns = 0;
          this.taskTime = time;
          this.charge(pre);
          this.chargeMem(ns, memNs, -1, writeNode, bytes, cpuNode);
          this.taskTime = outer;
          out[at + i] = time.ns;
          this.charge(time.ns);
        }
      } finally {
        this.taskTime = outer;
      }
      return;
    }
    const f = bw ? this.memFigures(bw, ns, memNs, -1, writeNode, bytes, cpuNode) : null;
    const total = f ? f.total : ns;
    for (let i = 0; i < n; i++) {
      let t = 0;
      t += pre;
      if (f) this.addMemClasses(task!.classes, f, -1, writeNode, bytes);
      t += total;
      out[at + i] = t;
      outer.ns += t;
    }
  }

  /**
   * chargeMem's figures for one copy or clear (into one reused object: the
   * hot path allocates nothing). The load is the one as of now (the task's
   * later time within its step is not known to other tasks yet); a workload
   * step has already read it for its CPU's node. The DRAM time splits by
   * traffic: a read moves its bytes once, a store storeTraffic times (2
   * with a read for ownership).
   */
  private memFigures(
    bw: MemBandwidth,
    ns: number,
    memNs: number,
    readNode: number,
    writeNode: number,
    bytes: number,
    cpuNode: number,
  ): MemFigures {
    const now = this.clock.now();
    const task = this.membwTask;
    const cached = task !== null && task.cpu === cpuNode;
    const st = bw.storeTraffic;
    const f = MEM_FIGURES;
    f.stored = Math.round(st * bytes);
    f.rNs = readNode >= 0 ? memNs / (1 + st) : 0;
    f.wNs = memNs - f.rNs;
    f.mr = readNode < 0 ? 1 : cached ? task.mult[readNode]! : bw.multiplier(cpuNode, readNode, now);
    f.mw = cached ? task.mult[writeNode]! : bw.multiplier(cpuNode, writeNode, now);
    f.total = ns + Math.round(f.rNs * (f.mr - 1) + f.wNs * (f.mw - 1));
    return f;
  }

  /** A workload step's or task's classes get one copy's bytes. */
  private addMemClasses(classes: FlowClass[], f: MemFigures, readNode: number, writeNode: number, bytes: number): void {
    addFlowClass(classes, writeNode, f.stored, f.wNs, f.wNs * f.mw);
    if (readNode >= 0) addFlowClass(classes, readNode, bytes, f.rNs, f.rNs * f.mr);
  }

  /** Run background work (kcompactd, ...) that is due by now. */
  runDueEvents(): void {
    this.events.runUntil(this.clock.now());
  }
}

/**
 * chargeMem's classes for a task of its own, refilled call after call
 * instead of made per page: MemBw.flow copies what it keeps.
 */
const OWN_WRITE: FlowClass = { node: 0, bytes: 0, memNs: 0, seenNs: 0 };
const OWN_READ: FlowClass = { node: 0, bytes: 0, memNs: 0, seenNs: 0 };
const OWN_WRITE_ONLY: readonly FlowClass[] = [OWN_WRITE];
const OWN_BOTH: readonly FlowClass[] = [OWN_WRITE, OWN_READ];

/** Kernel.memFigures: a copy's stored bytes, its read and write DRAM time, their load multipliers, the time charged. */
interface MemFigures {
  stored: number;
  rNs: number;
  wNs: number;
  mr: number;
  mw: number;
  total: number;
}
const MEM_FIGURES: MemFigures = { stored: 0, rNs: 0, wNs: 0, mr: 1, mw: 1, total: 0 };

/** The flow classes of a copy made by a task of its own (OWN_WRITE, OWN_READ, reused). */
function ownClasses(f: MemFigures, readNode: number, writeNode: number, bytes: number): readonly FlowClass[] {
  OWN_WRITE.node = writeNode;
  OWN_WRITE.bytes = f.stored;
  OWN_WRITE.memNs = f.wNs;
  OWN_WRITE.seenNs = f.wNs * f.mw;
  if (readNode < 0) return OWN_WRITE_ONLY;
  OWN_READ.node = readNode;
  OWN_READ.bytes = bytes;
  OWN_READ.memNs = f.rNs;
  OWN_READ.seenNs = f.rNs * f.mr;
  return OWN_BOTH;
}

/** Add bytes moved on `node` to a step's classes (one class per memory node). */
export function addFlowClass(classes: FlowClass[], node: number, bytes: number, memNs: number, seenNs: number): void {
  for (const c of classes)
    if (c.node === node) {
      c.bytes += bytes;
      c.memNs += memNs;
      c.seenNs = (c.seenNs ?? 0) + seenNs;
      return;
    }
  classes.push({ node, bytes, memNs, seenNs });
}
