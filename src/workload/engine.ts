/**
 * The workload engine: threads touch memory over virtual time, driven by
 * the kernel's event queue. Each thread runs in steps of about QUANTUM_NS of
 * its own time; within a step every access translates its address (faulting
 * through the simulated kernel when needed), then costs what the access model
 * says for the page size, working set and NUMA distance. Kernel time of the
 * faults is charged to the thread (Kernel.taskTime), so threads on different
 * CPUs run in parallel in virtual time. When the kernel has a memory
 * bandwidth model (scenario runs: Kernel.membw), each step's accesses wait
 * for the load of the nodes they reach, read at the step's start, and the
 * step registers what it moved: per memory node, 64 bytes per random access
 * and the stride per sequential one (at most 4K), storeTraffic times for a store (2: read
 * for ownership and write-back), on the share of accesses that reach DRAM.
 */
import { killReason } from '../kernel/oom_kill.ts';
import { addFlowClass, type Kernel } from '../kernel/kernel.ts';
import type { Process, Thread } from '../kernel/sched.ts';
import { pteMkyoung, type Vma } from '../kernel/mm_types.ts';
import { FAULT_OK, FAULT_USERFAULT, handleMmFault, translate, vmaAllows } from '../kernel/memory.ts';
import * as memory from '../kernel/memory.ts';
import type { MigrationBatch } from '../kernel/migrate_entry.ts';
import { PAGE_SIZE, PMD_SIZE } from '../kernel/uapi.ts';
import { AccessModel } from './access_model.ts';
import { Copy, FirstTouch, Idle, LINE, Sequential, Uniform, Zipf, type AddressStream } from './patterns.ts';
import type { PhaseSpec } from '../scenario/schema.ts';
import { SCHED_QUANTUM_NS, type RunOutcome, type TaskClient } from '../kernel/sched/core.ts';

/** Virtual time a thread runs between two scheduling points: the scheduler's quantum. */
export const QUANTUM_NS = SCHED_QUANTUM_NS;

/** step()'s answer for a thread that cannot run until resume() or a userfault wake (see WorkloadThread.wake). */
export const WAIT = -1;
/** Answers of step()'s helpers (never a frame, the zero page -1 or "not mapped" -2): sleep, or stop the thread. */
const STEP_WAIT = -10;
const STEP_EXIT = -11;

export interface PhaseRuntime {
  spec: PhaseSpec;
  stream: AddressStream;
  /** Absolute virtual end time of the phase, or Infinity. */
  end: number;
}

export class WorkloadThread implements TaskClient {
  accesses = 0;
  reads = 0;
  writes = 0;
  faults = 0;
  faultNs = 0;
  local = 0;
  remote = 0;
  /** Per accessed node: local/remote counts are by the page's node. */
  readonly byNodeLocal: number[];
  readonly byNodeRemote: number[];
  /** Accesses per page size class [4K, 2M, 1G], decayed: the mapped fraction f_S. */
  private readonly sizeMix = [1, 0, 0];
  accessNs = 0;
  /** Time spent waiting for collapses (a region being copied, or its VMA write-locked at a fault). */
  stallNs = 0;
  stalls = 0;
  /** The part of stallNs spent waiting on migration entries (pages under migration, migration_entry_wait), and how often. */
  migrationWaitNs = 0;
  migrationWaits = 0;
  /** Accesses that went through a 2M or 1G mapping. */
  hugeAccesses = 0;
  /** Of accessNs, the TLB-reach term of accesses through 4K mappings (T_4K, or the page walk of a sequential access). */
  tlb4kNs = 0;
  /**
   * Accesses per 2M region (PMD index) of this thread's mm, when an agent
   * watches access recency (shared by the threads of a process).
   */
  heat: Map<number, number> | undefined;
  stopped: string | undefined;
  phaseIndex = 0;
  /**
   * For a guest workload on a vCPU thread: the guest's page size (the TLB
   * maps the smaller of it and the host's) and the EPT, which returns the
   * cost of the EPT violation an access takes (0 when the EPT maps it).
   */
  guest: { pageSize: number; ept: (va: number, pfn: number, write: boolean) => number } | undefined;
  eptViolations = 0;
  /** Virtual time the current userfault block began (undefined: not blocked). */
  private blockedAt: number | undefined;
  /** The guest is stopped (vm_stop for a migration's switchover): the thread does not run. */
  private vmStopped = false;
  /** An access that blocked in a userfault, retried first when the thread is woken (stream coordinates). */
  private retryVa: number | undefined;
  /**
   * Added to every address the phases' streams produce: a guest workload
   * whose VM moved to another VMM process (live migration) keeps its
   * streams over the source's HVAs and runs at the destination's.
   */
  private vaShift = 0;
  /** The share of time the thread may run (a vCPU throttled by migration's auto-converge), 1 when unset. */
  runFraction: (() => number) | undefined;
  /**
   * Told of every store, `bytes` (the phase's write_bytes) at `va`: a live
   * migration's dirty ring and xbzrle (vms.ts). Returns ns the thread loses
   * (a KVM_EXIT_DIRTY_RING_FULL exit), charged as kernel time.
   */
  storeHook: ((va: number, bytes: number) => number) | undefined;
  /** Set by the runner: schedule the thread's next step at virtual time `at` (after WAIT). */
  wake: ((at: number) => void) | undefined;
  /** The end of the run: no step goes past it. */
  until = Infinity;
  /** Set by a step that found an idle phase: when the phase ends. */
  private idleUntil: number | undefined;
  /**
   * Set by a step that met a page under migration: the thread sleeps until
   * its batch is remapped (migration_entry_wait sleeps on the folio, leaving
   * the CPU to others), then retries the access.
   */
  migrationWaitUntil: number | undefined;
  /**
   * The batch the thread last waited for: a batch whose migrating task got
   * less CPU than it planned ends later than the wait it first gave, and the
   * retried access waits again for the same migration entry (one wait).
   */
  private waitedBatch: MigrationBatch | undefined;
  private waitedVa = -1;
  /** Node of the CPU the thread runs on (NUMA balancing may move the thread). */
  private node: number;
  private cachedVma: Vma | undefined;
  readonly fill: number;
  /** Bytes registered with the bandwidth model per memory node (node ids of the host the thread ran on). */
  readonly membwBytes: number[];
  /** Per memory node during a step: multiplier, cost factor 1 + dramShare (m - 1), loads and stores. */
  private bwMult: Float64Array;
  private bwFactor: Float64Array;
  private bwReads: Float64Array;
  private bwWrites: Float64Array;
  /** The step's DRAM share of accesses and sequential costs (bwStart). */
  private readonly bwStep = { dramShare: 0, seqRead: 0, seqWrite: 0, seqWalk: 0 };
  /** What the kernel moves for the thread during a step (Kernel.membwTask), reused from step to step. */
  private readonly bwTask: NonNullable<Kernel['membwTask']>;

  constructor(
    public k: Kernel,
    public process: Process,
    public thread: Thread,
    readonly name: string,
    readonly phases: PhaseRuntime[],
    private readonly model: AccessModel,
    private readonly coin: () => number,
    /** Called for every store, to account the pages a workload really dirtied. */
    private readonly wrote: (va: number) => void,
    index: number,
  ) {
    this.node = k.cpuToNode(thread.cpu);
    this.byNodeLocal = new Array<number>(k.nrNodes).fill(0);
    this.byNodeRemote = new Array<number>(k.nrNodes).fill(0);
    this.membwBytes = new Array<number>(k.nrNodes).fill(0);
    this.bwMult = new Float64Array(k.nrNodes);
    this.bwFactor = new Float64Array(k.nrNodes);
    this.bwReads = new Float64Array(k.nrNodes);
    this.bwWrites = new Float64Array(k.nrNodes);
    this.bwTask = { cpu: this.node, mult: this.bwMult, classes: [] };
    this.fill = (index % 255) + 1;
  }

  get cpuNode(): number {
    return this.node;
  }

  /** Whether the thread waits in a userfault. */
  get blocked(): boolean {
    return this.blockedAt !== undefined;
  }

  /**
   * Run on the kernel's scheduler: allowed on `cpus` (null: every CPU),
   * first on `cpu` if given (else where fork balancing puts it), from
   * `start`, or asleep until woken.
   */
  attach(cpus: readonly number[] | null, o: { cpu?: number; start?: number; sleeping?: boolean } = {}): void {
    const sched = this.k.sched;
    if (!sched) throw new Error('memtwin internal error: a workload thread needs a scheduler');
    const se = sched.spawn(this.name, this, { allowed: cpus, ...o });
    this.thread.se = se;
    this.thread.cpu = se.cpu;
    this.wake = (at) => sched.wake(se, at);
  }

  /** vm_stop: the guest stops; the thread returns WAIT at its next step. */
  stop(): void {
    this.vmStopped = true;
  }

  /** vm_start: the guest runs again (on whichever VMM the thread was last moved to). */
  start(): void {
    if (!this.vmStopped) return;
    this.vmStopped = false;
    if (!this.blocked) this.wake?.(this.k.clock.now());
  }

  /**
   * The guest moved to another VMM (live migration's switchover), maybe on
   * another host: the thread runs as `thread` of `process` at `shift`
   * bytes from its old addresses, with that VM's EPT. Call while stopped.
   */
  moveTo(k: Kernel, process: Process, thread: Thread, shift: number, ept: (va: number, pfn: number, write: boolean) => number): void {
    const old = this.thread.se;
    if (old) this.k.sched?.kill(old);
    this.thread.se = null;
    this.k = k;
    // Per-node counters cover the nodes of both hosts (node ids are per host).
    while (this.byNodeLocal.length < k.nrNodes) {
      this.byNodeLocal.push(0);
      this.byNodeRemote.push(0);
      this.membwBytes.push(0);
    }
    if (this.bwMult.length < k.nrNodes) {
      this.bwMult = new Float64Array(k.nrNodes);
      this.bwFactor = new Float64Array(k.nrNodes);
      this.bwReads = new Float64Array(k.nrNodes);
      this.bwWrites = new Float64Array(k.nrNodes);
      this.bwTask.mult = this.bwMult;
    }
    this.process = process;
    this.thread = thread;
    this.vaShift += shift;
    this.cachedVma = undefined;
    if (this.guest) this.guest = { ...this.guest, ept };
    // The destination's vCPU thread, pinned where that VMM pins it, runs when the guest starts there.
    if (old) this.attach([thread.cpu], { cpu: thread.cpu, sleeping: true });
  }

  /** The kernel woke the thread from its userfault (UFFDIO_COPY, WAKE...): it runs again now. */
  userfaultWoken(): void {
    const at = this.blockedAt;
    if (at === undefined) return;
    this.blockedAt = undefined;
    // The fault was taken at a thread time (fractional ns): the wakeup is at a whole ns, not before it.
    if (!this.vmStopped) this.wake?.(Math.max(this.k.clock.now(), Math.ceil(at)));
  }

  /**
   * A step's access found no usable mapping: handle_mm_fault on the
   * thread's time. Returns the frame now mapped (translate()'s answer, its
   * size and table left in memory.translatedSize/Table), or STEP_WAIT (a
   * userfault: the thread sleeps until the page is provided) or STEP_EXIT
   * (a signal stops the thread).
   */
  private fault(mm: Process['mm'], vma: Vma, va: number, sva: number, write: boolean, at: number, ctx: { ns: number }): number {
    const k = this.k;
    const before = ctx.ns;
    const r = handleMmFault(k, mm, vma, va, write, this.thread);
    this.faults++;
    this.faultNs += ctx.ns - before;
    if (r === FAULT_USERFAULT) {
      // The vCPU waits for the page; the fault's reader is told at the thread's own time.
      this.retryVa = sva;
      this.blockedAt = at + ctx.ns;
      k.uffd.faulted(this.thread, this.blockedAt);
      return STEP_WAIT;
    }
    // The OOM killer chose this process during the fault: its threads run no more.
    if (this.thread.process.exited) {
      this.stopped = killReason(k, this.thread.process);
      return STEP_EXIT;
    }
    if (r !== FAULT_OK) {
      this.stopped = `${r === 2 ? 'SIGBUS' : r === 1 ? 'SIGSEGV' : 'OOM'} at 0x${va.toString(16)}`;
      return STEP_EXIT;
    }
    if (this.cachedVma !== vma) this.cachedVma = undefined;
    return translate(mm, va);
  }

  /**
   * migration_entry_wait: an access at `t` to a page in a batch under
   * migration sleeps until the batch's remap (returns STEP_WAIT, the access
   * retried when the thread runs again); else the node the access reaches
   * (the old one while the batch has not been remapped), or -1.
   */
  private migrationEntry(migrating: Process['mm']['migrating'], va: number, sva: number, pfn: number, t: number): number {
    const mig = migrating.at(va, pfn, t);
    if (mig.wait > 0) {
      this.stallNs += mig.wait;
      this.migrationWaitNs += mig.wait;
      if (mig.batch !== this.waitedBatch || sva !== this.waitedVa) {
        this.stalls++;
        this.migrationWaits++;
      }
      this.waitedBatch = mig.batch;
      this.waitedVa = sva;
      this.retryVa = sva;
      this.migrationWaitUntil = Math.ceil(t + mig.wait);
      return STEP_WAIT;
    }
    return mig.oldNode;
  }

  /** A NUMA hinting fault on the access, if the scanner armed one: its time, and the frame afterwards (the page may have moved). */
  private numaHint(numab: Kernel['numab'], mm: Process['mm'], va: number, pfn: number, size: number, ctx: { ns: number }): number {
    const before = ctx.ns; // a migration the fault makes charges itself
    const hint = numab.hintingFault(this.thread, va, pfn, size);
    if (!hint) return pfn;
    ctx.ns += hint;
    this.faultNs += ctx.ns - before;
    return translate(mm, va);
  }

  /**
   * Two-dimensional translation: a guest access the EPT does not map exits
   * first; the TLB holds the smaller of the guest's and the host's page
   * (returned).
   */
  private guestAccess(va: number, pfn: number, write: boolean, size: number, ctx: { ns: number }): number {
    const guest = this.guest!;
    const ept = guest.ept(va, pfn, write);
    if (ept) {
      ctx.ns += ept;
      this.faultNs += ept;
      this.eptViolations++;
    }
    return size > guest.pageSize ? guest.pageSize : size;
  }

  /**
   * An access at thread time `t` to a region being collapsed waits until the
   * copy is done (its PMD is cleared meanwhile); a fault anywhere in the VMA
   * waits too (collapse_huge_page holds the VMA write-locked). Background
   * collapses are applied when their pass or tick runs, so an access between
   * then and the collapse's own start already sees the huge mapping.
   */
  private waitForCollapse(mm: Process['mm'], vma: Vma, va: number, fault: boolean, t: number, ctx: { ns: number }): void {
    const key = Math.floor(va / PMD_SIZE);
    let until = 0;
    for (const c of mm.collapsing)
      if (c.unmapAt <= t && c.remapAt > t && (c.pmdKey === key || (fault && c.vma === vma))) until = Math.max(until, c.remapAt);
    if (until > t) {
      ctx.ns += until - t;
      this.stallNs += until - t;
      this.stalls++;
    }
    if (mm.collapsing.every((c) => c.remapAt <= this.k.clock.now())) mm.collapsing = [];
  }

  /**
   * The scheduler runs the thread on `cpu` (kernel/sched/core.ts): one step
   * of at most `budget` ns of CPU time. An idle phase sleeps until it ends;
   * a thread blocked in a userfault or stopped with its VM sleeps until
   * woken (userfaultWoken, start); a vCPU throttled by auto-converge sleeps
   * the rest of its period after each step (the same work in more time).
   */
  run(now: number, budget: number, cpu: number): RunOutcome {
    this.thread.cpu = cpu;
    const used = this.step(this.until, budget);
    if (used === Infinity) return { used: 0, next: 'exit' };
    if (used === WAIT) return { used: 0, next: 'sleep' };
    if (this.migrationWaitUntil !== undefined) {
      const until = this.migrationWaitUntil;
      this.migrationWaitUntil = undefined;
      return until < this.until ? { used, next: 'sleep', until } : { used, next: 'sleep' };
    }
    if (this.idleUntil !== undefined) {
      const until = this.idleUntil;
      this.idleUntil = undefined;
      // An idle phase to the end of the run (or past it) sleeps for good.
      return until < this.until ? { used: 0, next: 'sleep', until } : { used: 0, next: 'sleep' };
    }
    const f = this.runFraction?.() ?? 1;
    if (f < 1) return { used, next: 'sleep', until: now + Math.round(used / f) };
    // The common answer, in one object per thread (the scheduler reads it at once): not an allocation per step.
    const out = this.ranOutcome;
    out.used = used;
    return out;
  }
  private readonly ranOutcome: RunOutcome = { used: 0, next: 'run' };

  /**
   * Run one step starting at the current clock, of at most `budget` ns of
   * CPU time; returns the CPU time it used (whole ns, at least 1), WAIT, or
   * Infinity when the thread has nothing more to do. An idle phase returns
   * 0 with `idleUntil` set to when it ends; an access to a page under
   * migration ends the step with `migrationWaitUntil` set (the access is
   * retried when the thread runs again).
   */
  step(until: number, budget = QUANTUM_NS): number {
    const k = this.k;
    const mm = this.process.mm;
    const now = k.clock.now();
    while (this.phaseIndex < this.phases.length && now >= this.phases[this.phaseIndex]!.end) this.phaseIndex++;
    const ph = this.phases[this.phaseIndex];
    if (!ph) return Infinity;
    if (this.vmStopped || this.blocked) return WAIT;
    this.node = k.cpuToNode(this.thread.cpu);
    const numab = k.numab.enabled ? k.numab : undefined;
    const limit = Math.min(budget, until - now, ph.end - now);
    // Kernel work queued for the thread (task_numa_work) runs first, in its context, on its time.
    const ctx = { ns: this.thread.taskWorkNs };
    this.thread.taskWorkNs = 0;
    k.taskTime = ctx;
    const minGap = ph.spec.rate ? 1e9 / ph.spec.rate : 0;
    const think = ph.spec.think ?? 0;
    const heat = this.heat;
    // First touch initialises memory: it writes.
    const readRatio = ph.spec.pattern === 'first-touch' ? 0 : ph.spec.read_ratio;
    const stream = ph.stream;
    const ws = stream.workingSet;
    const dataNs = this.model.dataNs(ws);
    const copy = stream instanceof Copy ? stream : undefined;
    // The bandwidth model: multipliers per memory node for this step, and what the step moves (bwStart).
    const bw = k.membw;
    if (bw) this.bwStart(bw, stream, ws, now);
    const migrating = mm.migrating;
    migrating.prune(now);
    let spent = 0;
    try {
      // The OOM killer killed the process (a fault of this thread or another's): its threads run no more.
      if (this.thread.process.exited) {
        this.stopped = killReason(k, this.thread.process);
        return Infinity;
      }
      while (spent + ctx.ns < limit) {
        const sva = this.retryVa ?? stream.next();
        this.retryVa = undefined;
        if (sva === -2) {
          // idle: nothing to do until the phase ends (queued task work waits for the thread to run again)
          this.idleUntil = Number.isFinite(ph.end) ? Math.round(ph.end) : Infinity;
          this.thread.taskWorkNs += ctx.ns;
          return 0;
        }
        if (sva < 0) {
          // finished (first-touch): the next phase starts now
          ph.end = now + spent + ctx.ns;
          break;
        }
        const va = sva + this.vaShift;
        const write = copy ? copy.writing : readRatio < 1 && (readRatio === 0 || this.coin() >= readRatio);
        let vma = this.cachedVma;
        if (!vma || va < vma.start || va >= vma.end) vma = this.cachedVma = mm.vmaAt(va);
        if (!vma || !vmaAllows(vma, write)) {
          this.stopped = `SIGSEGV at 0x${va.toString(16)}`;
          return Infinity;
        }
        let pfn = translate(mm, va);
        let size = memory.translatedSize;
        let ptes = memory.translatedTable;
        if (mm.collapsing.length) this.waitForCollapse(mm, vma, va, size === 0 || (write && pfn === -1), now + spent + ctx.ns, ctx);
        if (size === 0 || (write && pfn === -1)) {
          pfn = this.fault(mm, vma, va, sva, write, now + spent, ctx);
          if (pfn === STEP_WAIT) return WAIT;
          if (pfn === STEP_EXIT) return Infinity;
          size = memory.translatedSize;
          ptes = memory.translatedTable;
        }
        // A page under migration holds a migration entry: the access sleeps until its batch's remap
        // (migration_entry_wait) and is then retried; a page the migration has not reached is still on its old node.
        let oldNode = -1;
        if (migrating.size && pfn >= 0) {
          oldNode = this.migrationEntry(migrating, va, sva, pfn, now + spent + ctx.ns);
          if (oldNode === STEP_WAIT) break;
        }
        if (numab && pfn >= 0) {
          const was = pfn;
          pfn = this.numaHint(numab, mm, va, pfn, size, ctx);
          if (pfn !== was) {
            ptes = memory.translatedTable;
            oldNode = -1;
          }
        }
        if (this.guest) size = this.guestAccess(va, pfn, write, size, ctx);
        if (write) {
          k.writeSerial = (k.writeSerial + 1) & 0xffffff;
          k.mem.storeByte(pfn, k.writeSerial, this.fill, va % PAGE_SIZE === 0);
          this.writes++;
          this.wrote(sva);
          if (this.storeHook !== undefined) ctx.ns += this.storeHook(va, ph.spec.write_bytes ?? LINE);
        } else {
          this.reads++;
          // The load sets the accessed bit reclaim reads: the PTE's, or the huge page's.
          if (ptes) pteMkyoung(ptes, (va / PAGE_SIZE) & 511);
          else if (pfn >= 0) k.mem.markYoung(pfn);
        }
        const pageNode = oldNode >= 0 ? oldNode : pfn >= 0 ? k.phys.nodeOfPfn(pfn) : this.node;
        if (pageNode === this.node) {
          this.local++;
          this.byNodeLocal[pageNode]!++;
        } else {
          this.remote++;
          this.byNodeRemote[pageNode]!++;
        }
        const cls = size === PAGE_SIZE ? 0 : size === PMD_SIZE ? 1 : 2;
        if (cls) this.hugeAccesses++;
        if (heat) {
          const key = Math.floor(va / PMD_SIZE);
          heat.set(key, (heat.get(key) ?? 0) + 1);
        }
        const mix = this.sizeMix;
        mix[0]! *= 0.999;
        mix[1]! *= 0.999;
        mix[2]! *= 0.999;
        mix[cls]! += 0.001;
        const frac = mix[cls]! / (mix[0]! + mix[1]! + mix[2]!);
        let cost: number;
        if (bw) cost = this.bwAccess(stream.random, write, pageNode, size, dataNs, ws * frac);
        else {
          const distance = k.host.distances[this.node]![pageNode]!;
          cost = stream.random
            ? dataNs * (distance / 10) + (size === PAGE_SIZE ? this.model.tlb4kNs(ws * frac) : 0)
            : this.model.sequentialNs(size || PAGE_SIZE, stream.stride, distance);
        }
        this.accessNs += cost;
        if (size === PAGE_SIZE)
          this.tlb4kNs += stream.random ? this.model.tlb4kNs(ws * frac) : this.model.seqWalkNs(PAGE_SIZE, stream.stride);
        spent += Math.max(cost + think, minGap);
        this.accesses++;
      }
    } finally {
      k.taskTime = null;
      // The step's bytes moved over the CPU time it ran (a throttled vCPU sleeps after it, moving nothing).
      if (bw) this.registerFlow(now, Math.max(1, spent + ctx.ns), stream, dataNs);
    }
    return Math.max(1, Math.round(spent + ctx.ns));
  }

  /**
   * A step's start with the bandwidth model: per memory node the
   * multiplier now and the cost factor of an access (the SLIT distance,
   * and the load on the share that reaches DRAM), the step's sequential
   * costs, counters reset, and the kernel told whose copies it charges.
   * (Kept out of step() so that step stays small enough for V8 to inline
   * what it calls per access.)
   */
  private bwStart(bw: NonNullable<Kernel['membw']>, stream: AddressStream, ws: number, now: number): void {
    const k = this.k;
    const model = this.model;
    const st = this.bwStep;
    st.dramShare = model.dramShare(ws, stream.random);
    const s = stream.random ? LINE : Math.min(stream.stride, PAGE_SIZE);
    st.seqRead = s * model.readNsPerByte;
    st.seqWrite = s * model.writeNsPerByte;
    st.seqWalk = stream.random ? 0 : model.seqWalkNs(PAGE_SIZE, stream.stride);
    const distances = k.host.distances[this.node]!;
    for (let b = 0; b < k.nrNodes; b++) {
      this.bwMult[b] = bw.multiplier(this.node, b, now);
      this.bwFactor[b] = (distances[b]! / 10) * (1 + st.dramShare * (this.bwMult[b]! - 1));
      this.bwReads[b] = 0;
      this.bwWrites[b] = 0;
    }
    this.bwTask.cpu = this.node;
    this.bwTask.classes.length = 0;
    k.membwTask = this.bwTask;
  }

  /** One access's cost with the bandwidth model (see bwStart), counted as a load or a store on its page's node. */
  private bwAccess(random: boolean, write: boolean, pageNode: number, size: number, dataNs: number, tlbWs: number): number {
    const st = this.bwStep;
    if (write) this.bwWrites[pageNode]!++;
    else this.bwReads[pageNode]!++;
    if (random) return dataNs * this.bwFactor[pageNode]! + (size === PAGE_SIZE ? this.model.tlb4kNs(tlbWs) : 0);
    return (write ? st.seqWrite : st.seqRead) * this.bwFactor[pageNode]! + (size <= PAGE_SIZE ? st.seqWalk : 0);
  }

  /**
   * What the step moved, as one flow of the bandwidth model: per memory
   * node its bytes and idle DRAM time (and the time they took at the
   * step's multipliers), with what the kernel moved for it (faults'
   * zeroing, migrations), over the step's time.
   */
  private registerFlow(at: number, elapsed: number, stream: AddressStream, dataNs: number): void {
    const k = this.k;
    const { dramShare, seqRead, seqWrite } = this.bwStep;
    const bw = k.membw!;
    const per = stream.random ? LINE : Math.min(stream.stride, PAGE_SIZE);
    const classes = this.bwTask.classes;
    k.membwTask = null;
    for (let b = 0; b < k.nrNodes; b++) {
      const r = this.bwReads[b]!;
      const w = this.bwWrites[b]!;
      if (!r && !w) continue;
      const bytes = Math.round((r + bw.storeTraffic * w) * per * dramShare);
      this.membwBytes[b]! += bytes;
      const d = (k.host.distances[this.node]![b]! / 10) * dramShare;
      const memNs = d * (stream.random ? dataNs * (r + w) : seqRead * r + seqWrite * w);
      addFlowClass(classes, b, bytes, memNs, memNs * this.bwMult[b]!);
    }
    if (classes.length) bw.flow(at, elapsed, this.node, classes);
  }
}

/** Build the address stream of a phase over a mapping at `base` of `mappingLen` bytes. */
export function streamFor(
  spec: PhaseSpec,
  base: number,
  mappingLen: number,
  rng: { float(): number; int(a: number, b: number): number },
  slice: { index: number; of: number },
  /** copy: the mapping written. */
  to?: { base: number; len: number },
): AddressStream {
  const off = spec.offset ?? 0;
  let len = Math.max(PAGE_SIZE, Math.min(spec.length ?? mappingLen - off, mappingLen - off));
  let start = base + off;
  if (spec.slice && spec.pattern !== 'first-touch' && slice.of > 1) {
    const per = Math.max(PAGE_SIZE, Math.floor(len / slice.of / PAGE_SIZE) * PAGE_SIZE);
    start += slice.index * per;
    len = slice.index === slice.of - 1 ? len - slice.index * per : per;
  }
  switch (spec.pattern) {
    case 'idle':
      return new Idle();
    case 'sequential':
      return new Sequential(start, len, spec.stride ?? 64);
    case 'uniform':
      return new Uniform(start, len, rng as never);
    case 'zipf':
      return new Zipf(start, len, spec.zipf_s, rng as never);
    case 'copy': {
      if (!to) throw new Error('memtwin: a copy pattern needs the mapping it writes');
      const off = start - base;
      return new Copy(start, to.base + off, Math.max(PAGE_SIZE, Math.min(len, to.len - off)), spec.stride ?? LINE);
    }
    case 'first-touch': {
      const per = Math.floor(len / slice.of / PAGE_SIZE) * PAGE_SIZE;
      const s0 = start + slice.index * per;
      const l = slice.index === slice.of - 1 ? start + len - s0 : per;
      return new FirstTouch(s0, l);
    }
  }
}
