/**
 * Automatic NUMA balancing (kernel/sched/fair.c task_numa_work,
 * task_numa_fault, task_numa_group, task_numa_placement and
 * should_numa_migrate_memory; mm/memory.c do_numa_page; mm/mempolicy.c
 * mpol_misplaced; mm/migrate.c migrate_misplaced_folio).
 *
 * Every scan period a process's next `scan_size_mb` of memory (anonymous
 * and shmem) is made PROT_NONE for NUMA (change_prot_numa, counted in
 * numa_pte_updates); a pass over the whole mm bumps its numa_scan_seq. The
 * next access to such a page is a NUMA hinting fault (numa_hint_faults,
 * _local when the page is on the faulting CPU's node):
 * - mpol_misplaced decides whether the page should move to the faulting
 *   node. For the default policy (preferred_node_policy: MPOL_PREFERRED of
 *   the local node, MOF|MORON) a local page stays and is not looked at
 *   further; otherwise should_numa_migrate_memory swaps the page's
 *   last_cpupid (cpu + low 8 pid bits of the last faulting task, kept per
 *   frame in MemMap) for this task's, and applies Linux 6.18's filter:
 *   first or private faults migrate at once early in a task's life (no
 *   preferred node yet, or numa_scan_seq <= 4); otherwise the previous fault
 *   must have come from this node (the two-stage filter); then private
 *   faults migrate, shared ones migrate when the task has no numa group yet,
 *   or when the group's CPU faults on the destination exceed 3x the source
 *   (ACTIVE_NODE_FRACTION), or by the 3/4-hysteresis ratio of CPU to memory
 *   faults. Migration counts numa_pages_migrated.
 * - task_numa_fault records the fault per task in numa_faults (NUMA_MEM
 *   buffers by the page's node, NUMA_CPU by the task's node) split into
 *   private (the last faulting task was this one, or nobody) and shared.
 *   A shared fault calls task_numa_group: the task gets a numa group of its
 *   own if it had none, and joins the group of the page's last faulting task
 *   (the task with those pid bits on that CPU) when that group is at least
 *   as large (ties broken by group id), always for a thread of the same
 *   process, for another process only when the page is in a VM_SHARED
 *   mapping mapped by several mms (TNF_SHARED); a fault that could join but
 *   may not is private (false sharing). Read-only mappings never group
 *   (TNF_NO_GROUP). Shared faults between two nodes a group actively uses
 *   count as local.
 * After each scan, every thread of the process with fault statistics goes
 * through task_numa_placement: buffered faults are added to decayed
 * (halved) totals, and to its group's; the preferred node is where the
 * group's memory faults are (a task without a group: its own); the group's
 * active nodes are those with more than a third of its busiest node's CPU
 * faults. A task not on its preferred node moves to a free CPU there, or
 * swaps with the task on that node whose exchange improves the fault
 * weights most (task_numa_compare: task weights within one group or
 * between ungrouped tasks, group weights between groups). The scan period
 * adapts between its minimum and maximum with the share of local faults.
 *
 * Simplifications, and why they do not change what memtwin reports:
 * - placement runs after every scan of the process, not once per pass of
 *   the scanner (numa_scan_seq) and at numa_migrate_retry: it sees the same
 *   faults, decays them more often and may move a task a few scans sooner
 *   than Linux in an mm larger than scan_size_mb;
 * - tasks are always running (no scheduler): the CPU-fault weight of
 *   task_numa_placement uses runtime/period = 1, "the task on the CPU" of a
 *   cpupid is any thread on that CPU with those pid bits, and moving or
 *   swapping a task ignores load (one busy thread per CPU is the intended
 *   setup);
 * - two groups of equal size are ordered by id (Linux: by address, i.e.
 *   arbitrarily) to decide which one joins the other: deterministic runs;
 * - preferred_group_nid is the node with most group faults: Linux's answer
 *   when all nodes are directly connected (NUMA_DIRECT, as on the shipped
 *   two-node hosts), not its search on meshes and backplanes;
 * - the scan period is per process and adapts to local vs remote faults
 *   only (update_task_scan_period also weighs private vs shared);
 * - there is no migration rate limit: Linux 6.18 limits migration only for
 *   memory tiering (numa_balancing mode 2); mode 1 is limited by the scan;
 * - a THP is migrated whole on its hinting fault, as Linux does for a
 *   PMD-mapped THP; a THP split keeps last_cpupid in the head only (Linux
 *   copies it to the tails).
 *
 * Memory policies (vma_policy_mof, mpol_misplaced): only memory whose
 * policy allows migrate-on-fault is scanned: the default policy does, an
 * explicit VMA or task policy only with MPOL_F_NUMA_BALANCING (MPOL_BIND or
 * MPOL_PREFERRED_MANY). Such memory moves to the faulting node only when that
 * node is in the policy's nodes. task_numa_work runs in one of the process's
 * threads; the task policy checked is the first thread's, and that thread
 * runs the walk (change_prot_numa_per_pte per PTE or huge PMD it changes,
 * measured by calibrate through mprotect's change_protection) on its own
 * CPU time, as task_work when it next returns to user space.
 */
import type { Kernel } from './kernel.ts';
import type { Process, Thread } from './sched.ts';
import { PageTable, PteTable, HugeLeaf, VM, type Vma } from './mm_types.ts';
import { MPOL, PAGE_SIZE, PMD_SIZE } from './uapi.ts';
import { MigrateBatches, mappedShared, migrateMappedPage } from './migrate.ts';
import { WMARK_HIGH } from './page_alloc.ts';
import type { Mempolicy } from './mempolicy.ts';

/** MPOL_F_MOF: the default policy, or an explicit one set with MPOL_F_NUMA_BALANCING. */
function migrateOnFault(pol: Mempolicy | null | undefined): boolean {
  return !pol || (pol.flags & MPOL.MPOL_F_NUMA_BALANCING) !== 0;
}

// --- cpupid (include/linux/mm.h) --------------------------------------------
/** Bits of the pid kept in a cpupid (LAST__PID_SHIFT); the CPU is above them. */
export const LAST__PID_SHIFT = 8;
export const LAST__PID_MASK = (1 << LAST__PID_SHIFT) - 1;
/** A page no hinting fault has touched yet (-1 & LAST_CPUPID_MASK). */
export const CPUPID_UNSET = -1;

export function cpuPidToCpupid(cpu: number, pid: number): number {
  return (cpu << LAST__PID_SHIFT) | (pid & LAST__PID_MASK);
}
export function cpupidToCpu(cpupid: number): number {
  return cpupid >> LAST__PID_SHIFT;
}
export function cpupidToPid(cpupid: number): number {
  return cpupid & LAST__PID_MASK;
}
/** cpupid_pid_unset: the pid bits are all ones (as in the reset value). */
export function cpupidPidUnset(cpupid: number): boolean {
  return cpupidToPid(cpupid) === (CPUPID_UNSET & LAST__PID_MASK);
}
/** cpupid_match_pid: the pid bits are the task's (Linux compares task->pid, the thread id). */
export function cpupidMatchPid(t: Thread, cpupid: number): boolean {
  return (t.tid & LAST__PID_MASK) === cpupidToPid(cpupid);
}

// --- numa_faults layout (kernel/sched/fair.c) --------------------------------
/** enum numa_faults_stats: memory node, CPU node, and their buffers since the last placement. */
export const NUMA_MEM = 0;
export const NUMA_CPU = 1;
export const NUMA_MEMBUF = 2;
export const NUMA_CPUBUF = 3;
/** Shared (0) and private (1) faults: NR_NUMA_HINT_FAULT_TYPES. */
const NR_NUMA_HINT_FAULT_TYPES = 2;
/** NUMA_MEM and NUMA_CPU: what a numa group keeps (NR_NUMA_HINT_FAULT_STATS). */
const NR_NUMA_HINT_FAULT_STATS = NR_NUMA_HINT_FAULT_TYPES * 2;
/** A node is active for a group when its CPU faults exceed 1/3 of the busiest node's. */
const ACTIVE_NODE_FRACTION = 3;

/** task_faults_idx: the slot of (stat, node, priv) in a numa_faults array. */
export function taskFaultsIdx(nodes: number, stat: number, nid: number, priv: number): number {
  return NR_NUMA_HINT_FAULT_TYPES * (stat * nodes + nid) + priv;
}

/** Flags of a hinting fault passed to task_numa_fault (TNF_*). */
const TNF_MIGRATED = 0x01;
const TNF_NO_GROUP = 0x02;
const TNF_SHARED = 0x04;
const TNF_FAULT_LOCAL = 0x08;
const TNF_MIGRATE_FAIL = 0x10;

export const DEBUGFS = '/sys/kernel/debug/sched/numa_balancing';

export class NumaBalancingSettings {
  scan_delay_ms = 1000;
  scan_period_min_ms = 1000;
  scan_period_max_ms = 60000;
  scan_size_mb = 256;
}

/** Per-process scanner state (mm->numa_next_scan, numa_scan_offset, numa_scan_seq, and the marks). */
class MmNumaState {
  scanOffset = 0;
  /** mm->numa_scan_seq: completed passes of the scanner over the address space. */
  scanSeq = 0;
  periodMs: number;
  /** PROT_NONE-for-NUMA marks: per PMD slot, one flag per 4K page (or index 0 for a huge PMD). */
  readonly marks = new Map<number, Uint8Array>();
  constructor(period: number) {
    this.periodMs = period;
  }
}

/** struct numa_group: tasks that share memory, placed together. */
export class NumaGroup {
  nrTasks = 0;
  /** NUMA_MEM and NUMA_CPU faults of all members, by task_faults_idx (faults, faults_cpu). */
  readonly faults: Float64Array;
  totalFaults = 0;
  /** Nodes with CPU faults above 1/ACTIVE_NODE_FRACTION of the busiest one. */
  activeNodes = 1;
  maxFaultsCpu = 0;
  constructor(
    /** gid: the pid of the task that created the group. */
    readonly gid: number,
    nodes: number,
  ) {
    this.faults = new Float64Array(NR_NUMA_HINT_FAULT_STATS * nodes);
  }
}

/** Per-thread NUMA state (task_struct numa_faults, numa_group, numa_preferred_nid ...). */
export class TaskNumaState {
  /** numa_faults: NUMA_MEM, NUMA_CPU, NUMA_MEMBUF, NUMA_CPUBUF x node x (shared, private). */
  readonly numaFaults: Float64Array;
  totalNumaFaults = 0;
  /** numa_faults_locality: remote, local, failed migrations since the last placement. */
  readonly faultsLocality = [0, 0, 0];
  preferred = -1;
  group: NumaGroup | null = null;
  /** p->numa_scan_seq: the mm's scan sequence at the last placement. */
  numaScanSeq = 0;
  numaPagesMigrated = 0;
  /** Every hinting fault since the start, by kind (memtwin's counters, for results). */
  hintFaultsPrivate = 0;
  hintFaultsShared = 0;
  constructor(nodes: number) {
    this.numaFaults = new Float64Array(4 * NR_NUMA_HINT_FAULT_TYPES * nodes);
  }
}

export class NumaBalancing {
  readonly settings = new NumaBalancingSettings();
  private readonly mms = new Map<Process, MmNumaState>();
  readonly tasks = new Map<Thread, TaskNumaState>();
  /** CPU time the scanner's walks cost (task_numa_work, charged on the scanning thread's CPU). */
  scanCpuNs = 0;

  constructor(private readonly k: Kernel) {}

  get enabled(): boolean {
    return (this.k.sysctl.numa_balancing & 1) !== 0;
  }

  /**
   * Start scanning processes (when balancing is enabled): every process at
   * the start of a run, and a process that arrives later (a VMM migrating
   * in) when it arrives. Each mm's scanner starts scan_delay after its
   * start (task_numa_work runs for every mm once numa_next_scan is due).
   */
  start(procs: Process[]): void {
    if (!this.enabled) return;
    for (const p of procs) {
      if (this.mms.has(p)) continue; // already scanned
      const st = new MmNumaState(this.settings.scan_period_min_ms);
      this.mms.set(p, st);
      this.k.events.after(this.settings.scan_delay_ms * 1e6, `numa_scan ${p.name}`, () => this.scan(p, st));
    }
  }

  /** The thread's NUMA state (its numa_faults are allocated on its first hinting fault). */
  task(t: Thread): TaskNumaState {
    let s = this.tasks.get(t);
    if (!s) this.tasks.set(t, (s = new TaskNumaState(this.k.nrNodes)));
    return s;
  }

  /** Every numa group some task belongs to. */
  groups(): Set<NumaGroup> {
    const g = new Set<NumaGroup>();
    for (const ts of this.tasks.values()) if (ts.group) g.add(ts.group);
    return g;
  }

  /** task_numa_work: mark the next scan_size_mb of the process's anonymous and shmem memory. */
  private scan(p: Process, st: MmNumaState): void {
    const k = this.k;
    let budget = (this.settings.scan_size_mb << 20) / PAGE_SIZE;
    const taskPolicy = p.threads[0]?.mempolicy;
    const vmas = p.mm.vmas.filter(
      (v) =>
        !v.isHugetlb() &&
        (!v.file || v.file.kind === 'shmem') &&
        v.flags & (VM.READ | VM.WRITE | VM.EXEC) &&
        migrateOnFault(v.policy ?? taskPolicy),
    );
    const total = vmas.reduce((s, v) => s + v.size, 0);
    let marked = 0;
    let entries = 0; // PTEs and huge PMDs change_prot_numa changed
    if (total > 0) {
      let off = st.scanOffset % total;
      let pos = 0;
      for (const v of vmas) {
        if (off >= pos + v.size) {
          pos += v.size;
          continue;
        }
        for (let va = v.start + Math.max(0, off - pos); va < v.end && budget > 0;) {
          const key = PageTable.pmdKey(va);
          const e = p.mm.pgtable.pmds.get(key);
          const pmdEnd = Math.min(v.end, (key + 1) * PMD_SIZE);
          if (e instanceof HugeLeaf) {
            if (!e.isZero) {
              let m = st.marks.get(key);
              if (!m) st.marks.set(key, (m = new Uint8Array(512)));
              m[0] = 2; // whole PMD
              marked += 512;
              entries++;
              k.vmstat.count('numa_huge_pte_updates');
            }
          } else if (e instanceof PteTable) {
            let m = st.marks.get(key);
            for (let a = va; a < pmdEnd; a += PAGE_SIZE) {
              const i = (a / PAGE_SIZE) & 511;
              if (e.ptes[i]! > 0) {
                if (!m) st.marks.set(key, (m = new Uint8Array(512)));
                m[i] = 1;
                marked++;
                entries++;
              }
            }
          }
          budget -= (pmdEnd - va) / PAGE_SIZE;
          off += pmdEnd - va;
          va = pmdEnd;
        }
        pos += v.size;
        if (budget <= 0) break;
      }
      if (off >= total) {
        st.scanOffset = 0;
        st.scanSeq++; // reset_ptenuma_scan
      } else st.scanOffset = off;
    }
    k.vmstat.count('numa_pte_updates', marked);
    // The walk is task_work of one of the process's threads (task_tick_numa queues it on the running task):
    // that thread runs it, on its own CPU time, when it next returns to user space.
    const runner = p.threads[0];
    if (entries && runner) {
      const ns =
        entries * k.costs.nsOf('change_prot_numa_per_pte', "NUMA balancing's scanner charges its walk (memtwin calibrate measures it)");
      this.scanCpuNs += ns;
      runner.taskWorkNs += ns;
    }
    // Placement, then adapt the scan period to locality (update_task_scan_period): mostly local -> slower.
    let local = 0;
    let remote = 0;
    for (const t of p.threads) {
      const ts = this.tasks.get(t);
      if (ts) {
        local += ts.faultsLocality[1]!;
        remote += ts.faultsLocality[0]!;
        this.placement(ts, st);
        ts.faultsLocality.fill(0);
        this.migratePreferred(t, ts);
      }
    }
    if (local + remote > 0) {
      const s = this.settings;
      st.periodMs =
        local / (local + remote) > 0.7 ? Math.min(s.scan_period_max_ms, st.periodMs * 2) : Math.max(s.scan_period_min_ms, st.periodMs / 2);
    }
    if (this.enabled) k.events.after(st.periodMs * 1e6, `numa_scan ${p.name}`, () => this.scan(p, st));
  }

  /**
   * An access at va by thread t: if the page is marked, take the NUMA
   * hinting fault (do_numa_page). Returns the kernel time of the fault
   * itself (0 when not marked); a migration it makes is charged by
   * migrate.ts to the running task as it happens.
   */
  hintingFault(t: Thread, va: number, pfn: number, pageSize: number): number {
    const st = this.mms.get(t.process);
    if (!st) return 0;
    const key = PageTable.pmdKey(va);
    const m = st.marks.get(key);
    if (!m) return 0;
    const huge = pageSize === PMD_SIZE;
    const i = huge ? 0 : (va / PAGE_SIZE) & 511;
    if (!m[i] || (huge && m[0] !== 2)) return 0;
    m[i] = 0;
    const k = this.k;
    const vma = t.process.mm.vmaAt(va);
    if (!vma) return 0;
    const node = k.cpuToNode(t.cpu);
    let memNode = k.phys.nodeOfPfn(pfn);
    const pages = huge ? 512 : 1;
    const head = huge ? pfn - (pfn % 512) : pfn;
    const ns = k.costs.ns('fault_anon_4k_read_zeropage');
    // numa_migrate_check
    let flags = 0;
    k.vmstat.count('numa_hint_faults');
    if (memNode === node) {
      k.vmstat.count('numa_hint_faults_local');
      flags |= TNF_FAULT_LOCAL;
    }
    if (!(vma.flags & VM.WRITE)) flags |= TNF_NO_GROUP; // no grouping on read-only memory
    if (vma.flags & VM.SHARED && mappedShared(k, pfn)) flags |= TNF_SHARED;
    const lastCpupid = k.mem.lastCpupid(head);
    const target = this.mpolMisplaced(t, vma, head, memNode);
    if (target >= 0 && !migrateBalancedPgdat(k, target, pages)) {
      // migrate_misplaced_folio_prepare: the target node would fall toward kswapd's wake-up; the folio stays
      // (-EAGAIN without memory tiering, which memtwin does not model).
      flags |= TNF_MIGRATE_FAIL;
    } else if (target >= 0) {
      // migrate_misplaced_folio: a batch of one folio; other threads touching it meanwhile wait on its migration entry.
      // Its window starts at the clock plus the task's kernel time in this step (not its access time in the step,
      // which the engine keeps apart): up to one step early. Its memory is allocated without reclaim.
      if (migrateMappedPage(k, t.process.mm, vma, va, target, undefined, new MigrateBatches(k), true) === 0) {
        k.vmstat.count('numa_pages_migrated', pages);
        memNode = target;
        flags |= TNF_MIGRATED;
      } else flags |= TNF_MIGRATE_FAIL;
    }
    this.taskNumaFault(t, lastCpupid, memNode, pages, flags);
    return ns;
  }

  /**
   * mpol_misplaced: the node the folio should move to, or -1. Only policies
   * with MPOL_F_MORON get here (the default one, or MPOL_F_NUMA_BALANCING).
   */
  private mpolMisplaced(t: Thread, vma: Vma, head: number, curnid: number): number {
    const pol = vma.policy ?? t.mempolicy;
    const thisnid = this.k.cpuToNode(t.cpu);
    if (!pol) {
      // preferred_node_policy[thisnid]: MPOL_PREFERRED of the local node
      if (curnid === thisnid) return -1;
    } else {
      if (!migrateOnFault(pol)) return -1;
      if (!pol.nodes.includes(thisnid)) return -1; // MPOL_BIND / PREFERRED_MANY: only within the policy's nodes
    }
    if (!this.shouldNumaMigrateMemory(t, head, curnid, t.cpu)) return -1;
    return curnid !== thisnid ? thisnid : -1;
  }

  /** should_numa_migrate_memory (Linux 6.18, without the memory-tiering branch). */
  private shouldNumaMigrateMemory(t: Thread, head: number, srcNid: number, dstCpu: number): boolean {
    const k = this.k;
    const ts = this.task(t);
    const ng = ts.group;
    const dstNid = k.cpuToNode(dstCpu);
    const last = k.mem.xchgLastCpupid(head, cpuPidToCpupid(dstCpu, t.tid));
    // First faults or private faults migrate at once early in a task's life.
    if ((ts.preferred === -1 || ts.numaScanSeq <= 4) && (cpupidPidUnset(last) || cpupidMatchPid(t, last))) return true;
    // Two-stage filter: the previous fault must have come from this node too.
    if (!cpupidPidUnset(last) && k.cpuToNode(cpupidToCpu(last)) !== dstNid) return false;
    if (cpupidMatchPid(t, last)) return true; // private
    if (!ng) return true; // shared, but no group yet
    const cpuDst = groupFaultsCpu(ng, k.nrNodes, dstNid);
    const cpuSrc = groupFaultsCpu(ng, k.nrNodes, srcNid);
    if (cpuDst > cpuSrc * ACTIVE_NODE_FRACTION) return true;
    // Memory follows CPU use, with 3/4 hysteresis.
    return cpuDst * groupFaults(ng, k.nrNodes, srcNid) * 3 > cpuSrc * groupFaults(ng, k.nrNodes, dstNid) * 4;
  }

  /** task_numa_fault: account a hinting fault on `pages` pages now on memNode. */
  private taskNumaFault(t: Thread, lastCpupid: number, memNode: number, pages: number, flags: number): void {
    const k = this.k;
    const nodes = k.nrNodes;
    const ts = this.task(t);
    const cpuNode = k.cpuToNode(t.cpu);
    let local = flags & TNF_FAULT_LOCAL ? 1 : 0;
    let priv: number;
    if (lastCpupid === CPUPID_UNSET) priv = 1;
    else {
      priv = cpupidMatchPid(t, lastCpupid) ? 1 : 0;
      if (!priv && !(flags & TNF_NO_GROUP)) priv = this.taskNumaGroup(t, ts, lastCpupid, flags);
    }
    // A shared fault wholly within the nodes a group actively uses counts as local.
    const ng = ts.group;
    if (!priv && !local && ng && ng.activeNodes > 1 && isActiveNode(ng, nodes, cpuNode) && isActiveNode(ng, nodes, memNode)) local = 1;
    if (flags & TNF_MIGRATED) ts.numaPagesMigrated += pages;
    if (flags & TNF_MIGRATE_FAIL) ts.faultsLocality[2]! += pages;
    ts.numaFaults[taskFaultsIdx(nodes, NUMA_MEMBUF, memNode, priv)]! += pages;
    ts.numaFaults[taskFaultsIdx(nodes, NUMA_CPUBUF, cpuNode, priv)]! += pages;
    ts.faultsLocality[local]! += pages;
    if (priv) ts.hintFaultsPrivate += pages;
    else ts.hintFaultsShared += pages;
  }

  /**
   * task_numa_group: after a shared fault, join the group of the page's
   * last faulting task if it is the larger one. Returns priv: 1 when the
   * fault turns out to be false sharing (another process, page not shared).
   */
  private taskNumaGroup(t: Thread, ts: TaskNumaState, cpupid: number, flags: number): number {
    const nodes = this.k.nrNodes;
    if (!ts.group) {
      const g = new NumaGroup(t.tid, nodes);
      g.faults.set(ts.numaFaults.subarray(0, NR_NUMA_HINT_FAULT_STATS * nodes));
      g.totalFaults = ts.totalNumaFaults;
      g.nrTasks = 1;
      ts.group = g;
    }
    const tsk = this.taskOnCpu(cpupidToCpu(cpupid), cpupid);
    if (!tsk) return 0;
    const grp = this.tasks.get(tsk)?.group;
    const my = ts.group;
    if (!grp || grp === my) return 0;
    // Only join a group at least as large; the other task joins us otherwise. Linux breaks
    // ties by the groups' addresses, memtwin by their ids: the older group joins the newer.
    if (my.nrTasks > grp.nrTasks) return 0;
    if (my.nrTasks === grp.nrTasks && my.gid > grp.gid) return 0;
    // Threads of one process always join; other processes only over a shared page.
    const join = tsk.process === t.process || (flags & TNF_SHARED) !== 0;
    if (!join) return 1;
    const n = NR_NUMA_HINT_FAULT_STATS * nodes;
    for (let i = 0; i < n; i++) {
      my.faults[i]! -= ts.numaFaults[i]!;
      grp.faults[i]! += ts.numaFaults[i]!;
    }
    my.totalFaults -= ts.totalNumaFaults;
    grp.totalFaults += ts.totalNumaFaults;
    my.nrTasks--;
    grp.nrTasks++;
    ts.group = grp;
    return 0;
  }

  /** cpu_rq(cpu)->curr, if its pid bits are the cpupid's: memtwin runs every thread on its CPU at once. */
  private taskOnCpu(cpu: number, cpupid: number): Thread | undefined {
    for (const p of this.k.processes.values())
      if (!p.exited) for (const th of p.threads) if (th.cpu === cpu && cpupidMatchPid(th, cpupid)) return th;
    return undefined;
  }

  /** task_numa_placement: fold the buffered faults into decayed totals; pick the preferred node. */
  private placement(ts: TaskNumaState, st: MmNumaState): void {
    const nodes = this.k.nrNodes;
    const f = ts.numaFaults;
    const ng = ts.group;
    ts.numaScanSeq = st.scanSeq;
    const totalFaults = ts.faultsLocality[0]! + ts.faultsLocality[1]!;
    let maxNid = -1;
    let maxFaults = 0;
    for (let nid = 0; nid < nodes; nid++) {
      let faults = 0;
      let groupFaults = 0;
      for (let priv = 0; priv < NR_NUMA_HINT_FAULT_TYPES; priv++) {
        const mem = taskFaultsIdx(nodes, NUMA_MEM, nid, priv);
        const membuf = taskFaultsIdx(nodes, NUMA_MEMBUF, nid, priv);
        const cpu = taskFaultsIdx(nodes, NUMA_CPU, nid, priv);
        const cpubuf = taskFaultsIdx(nodes, NUMA_CPUBUF, nid, priv);
        // Decay the window by half, add the faults since the last placement.
        const diff = f[membuf]! - Math.floor(f[mem]! / 2);
        f[membuf] = 0;
        // CPU faults normalised by the task's share of CPU time (always all of it here).
        const fWeight = Math.floor((65536 * f[cpubuf]!) / (totalFaults + 1));
        const fDiff = fWeight - Math.floor(f[cpu]! / 2);
        f[cpubuf] = 0;
        f[mem]! += diff;
        f[cpu]! += fDiff;
        faults += f[mem]!;
        ts.totalNumaFaults += diff;
        if (ng) {
          ng.faults[mem]! += diff;
          ng.faults[cpu]! += fDiff;
          ng.totalFaults += diff;
          groupFaults += ng.faults[mem]!;
        }
      }
      const score = ng ? groupFaults : faults;
      if (score > maxFaults) {
        maxFaults = score;
        maxNid = nid;
      }
    }
    if (ng) countActiveNodes(ng, nodes);
    if (maxFaults) ts.preferred = maxNid; // sched_setnuma
  }

  /**
   * numa_migrate_preferred / task_numa_migrate: a task away from its
   * preferred node moves to a free CPU there, or swaps with the task there
   * whose exchange improves the fault weights most (task_numa_compare).
   */
  private migratePreferred(t: Thread, ts: TaskNumaState): void {
    const k = this.k;
    const best = ts.preferred;
    if (best < 0) return;
    const src = k.cpuToNode(t.cpu);
    if (src === best) return;
    // Only CPUs of the preferred node its affinity allows (task_numa_find_cpu checks cpus_ptr).
    const allowed = k.allowedCpus(t);
    const cpus = k.host.nodes[best]!.cpus.filter((c) => allowed.includes(c));
    if (!cpus.length) return;
    const busy = new Set<number>();
    for (const p of k.processes.values()) for (const th of p.threads) if (this.tasks.has(th)) busy.add(th.cpu);
    const free = cpus.find((c) => !busy.has(c));
    if (free !== undefined) {
      k.moveTask(t, free);
      return;
    }
    const taskimp = this.taskWeight(ts, best) - this.taskWeight(ts, src);
    const groupimp = this.groupWeight(ts, best) - this.groupWeight(ts, src);
    let bestImp = 0;
    let swapWith: Thread | undefined;
    for (const [cur, cs] of this.tasks) {
      if (cur === t || cur.process.exited || !cpus.includes(cur.cpu) || !k.allowedCpus(cur).includes(t.cpu)) continue;
      let imp: number;
      if (cs.group === ts.group) {
        imp = taskimp + this.taskWeight(cs, src) - this.taskWeight(cs, best);
        if (cs.group) imp -= Math.trunc(imp / 16);
      } else if (cs.group && ts.group) imp = groupimp + this.groupWeight(cs, src) - this.groupWeight(cs, best);
      else imp = (ts.group ? groupimp : taskimp) + this.taskWeight(cs, src) - this.taskWeight(cs, best);
      if (imp > bestImp) {
        bestImp = imp;
        swapWith = cur;
      }
    }
    if (swapWith) {
      // migrate_swap: the two tasks exchange CPUs.
      const c = swapWith.cpu;
      k.moveTask(swapWith, t.cpu);
      k.moveTask(t, c);
    }
  }

  /** task_weight: the task's share of its memory faults on nid, in 1/1000. */
  private taskWeight(ts: TaskNumaState, nid: number): number {
    if (ts.totalNumaFaults <= 0) return 0;
    const nodes = this.k.nrNodes;
    const f = ts.numaFaults[taskFaultsIdx(nodes, NUMA_MEM, nid, 0)]! + ts.numaFaults[taskFaultsIdx(nodes, NUMA_MEM, nid, 1)]!;
    return Math.floor((1000 * f) / ts.totalNumaFaults);
  }

  /** group_weight: the group's share of its memory faults on nid, in 1/1000 (0 without a group). */
  private groupWeight(ts: TaskNumaState, nid: number): number {
    const ng = ts.group;
    if (!ng || ng.totalFaults <= 0) return 0;
    return Math.floor((1000 * groupFaults(ng, this.k.nrNodes, nid)) / ng.totalFaults);
  }
}

/** group_faults: the group's memory faults on nid (shared + private). */
function groupFaults(ng: NumaGroup, nodes: number, nid: number): number {
  return ng.faults[taskFaultsIdx(nodes, NUMA_MEM, nid, 0)]! + ng.faults[taskFaultsIdx(nodes, NUMA_MEM, nid, 1)]!;
}

/** group_faults_cpu: the group's faults from CPUs of nid. */
function groupFaultsCpu(ng: NumaGroup, nodes: number, nid: number): number {
  return ng.faults[taskFaultsIdx(nodes, NUMA_CPU, nid, 0)]! + ng.faults[taskFaultsIdx(nodes, NUMA_CPU, nid, 1)]!;
}

/** numa_group_count_active_nodes */
function countActiveNodes(ng: NumaGroup, nodes: number): void {
  let max = 0;
  for (let nid = 0; nid < nodes; nid++) max = Math.max(max, groupFaultsCpu(ng, nodes, nid));
  let active = 0;
  for (let nid = 0; nid < nodes; nid++) if (groupFaultsCpu(ng, nodes, nid) * ACTIVE_NODE_FRACTION > max) active++;
  ng.maxFaultsCpu = max;
  ng.activeNodes = active;
}

/** numa_is_active_node */
function isActiveNode(ng: NumaGroup, nodes: number, nid: number): boolean {
  return groupFaultsCpu(ng, nodes, nid) * ACTIVE_NODE_FRACTION > ng.maxFaultsCpu;
}

/**
 * migrate_balanced_pgdat: NUMA balancing migrates `nr` pages to node nid
 * only while the node stays above its high watermark plus those pages
 * (zone_watermark_ok at order 0), so that a hinting fault never wakes the
 * target's kswapd or reclaims there.
 */
export function migrateBalancedPgdat(k: Kernel, nid: number, nr: number): boolean {
  const z = k.phys.zones[nid];
  return z !== undefined && z.watermarkOk(0, z.wmark[WMARK_HIGH]! + nr);
}
