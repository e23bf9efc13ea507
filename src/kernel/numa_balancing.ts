/**
 * Automatic NUMA balancing (kernel/sched/fair.c task_numa_work and
 * task_numa_fault, mm/memory.c do_numa_page, mm/migrate.c
 * migrate_misplaced_folio).
 *
 * Every scan period a process's next `scan_size_mb` of memory is made
 * PROT_NONE for NUMA (change_prot_numa, counted in numa_pte_updates). The
 * next access to such a page is a NUMA hinting fault (numa_hint_faults,
 * _local when the page is on the faulting CPU's node): the mark is removed,
 * the fault is recorded per task and node, and the page migrates to the
 * faulting node if the two-stage filter agrees (the previous hinting fault
 * on it came from the same node: should_numa_migrate_memory), counting
 * numa_pages_migrated. A task's preferred node is where most of its faults
 * were (decayed by half every placement); a task not on its preferred node
 * moves to a free CPU there, or swaps with a task that prefers the node it
 * leaves (task_numa_migrate). The scan period adapts between its minimum
 * and maximum with the share of local faults.
 *
 * Simplifications, and why they do not change what memtwin reports:
 * - numa groups are the threads of one process (Linux groups tasks that
 *   share pages; the benchmarks here share memory only within a process,
 *   or between processes that the group logic would join);
 * - there is no migration rate limit: Linux 6.18 limits migration only for
 *   memory tiering (numa_balancing mode 2); mode 1 is limited by the scan;
 * - a THP is migrated whole on its hinting fault, as Linux does for a
 *   PMD-mapped THP.
 *
 * Memory policies (vma_policy_mof, mpol_misplaced): only memory whose
 * policy allows migrate-on-fault is scanned: the default policy does, an
 * explicit VMA or task policy only with MPOL_F_NUMA_BALANCING (MPOL_BIND or
 * MPOL_PREFERRED_MANY). Such memory moves to the faulting node only when that
 * node is in the policy's nodes. task_numa_work runs in one of the process's
 * threads; the task policy checked is the first thread's.
 */
import type { Kernel } from './kernel.ts';
import type { Process, Thread } from './sched.ts';
import { PageTable, PteTable, HugeLeaf } from './mm_types.ts';
import { MPOL, PAGE_SIZE, PMD_SIZE } from './uapi.ts';
import { migrateMappedPage } from './migrate.ts';
import type { Mempolicy } from './mempolicy.ts';

/** MPOL_F_MOF: the default policy, or an explicit one set with MPOL_F_NUMA_BALANCING. */
function migrateOnFault(pol: Mempolicy | null | undefined): boolean {
  return !pol || (pol.flags & MPOL.MPOL_F_NUMA_BALANCING) !== 0;
}

export const DEBUGFS = '/sys/kernel/debug/sched/numa_balancing';

export class NumaBalancingSettings {
  scan_delay_ms = 1000;
  scan_period_min_ms = 1000;
  scan_period_max_ms = 60000;
  scan_size_mb = 256;
}

/** Per-process scanner state (mm->numa_next_scan, numa_scan_offset, and the marks). */
class MmNumaState {
  scanOffset = 0;
  periodMs: number;
  /** PROT_NONE-for-NUMA marks: per PMD slot, one flag per 4K page (or index 0 for a huge PMD). */
  readonly marks = new Map<number, Uint8Array>();
  /** Node of the last hinting fault on a page (last_cpupid's node), by pfn. */
  readonly lastNid = new Map<number, number>();
  constructor(period: number) {
    this.periodMs = period;
  }
}

/** Per-thread fault statistics (task_struct numa_faults, numa_preferred_nid). */
export class TaskNumaState {
  readonly faults: number[];
  local = 0;
  remote = 0;
  preferred = -1;
  constructor(nodes: number) {
    this.faults = new Array<number>(nodes).fill(0);
  }
}

export class NumaBalancing {
  readonly settings = new NumaBalancingSettings();
  private readonly mms = new Map<Process, MmNumaState>();
  readonly tasks = new Map<Thread, TaskNumaState>();
  private started = false;

  constructor(private readonly k: Kernel) {}

  get enabled(): boolean {
    return (this.k.sysctl.numa_balancing & 1) !== 0;
  }

  /** Start scanning every process (when balancing is enabled at the start of a run). */
  start(procs: Process[]): void {
    if (!this.enabled || this.started) return;
    this.started = true;
    for (const p of procs) {
      const st = new MmNumaState(this.settings.scan_period_min_ms);
      this.mms.set(p, st);
      this.k.events.after(this.settings.scan_delay_ms * 1e6, `numa_scan ${p.name}`, () => this.scan(p, st));
    }
  }

  private task(t: Thread): TaskNumaState {
    let s = this.tasks.get(t);
    if (!s) this.tasks.set(t, (s = new TaskNumaState(this.k.nrNodes)));
    return s;
  }

  /** task_numa_work: mark the next scan_size_mb of the process's anonymous memory. */
  private scan(p: Process, st: MmNumaState): void {
    const k = this.k;
    let budget = (this.settings.scan_size_mb << 20) / PAGE_SIZE;
    const taskPolicy = p.threads[0]?.mempolicy;
    const vmas = p.mm.vmas.filter((v) => !v.isHugetlb() && !v.file && v.flags & 0x3 && migrateOnFault(v.policy ?? taskPolicy));
    const total = vmas.reduce((s, v) => s + v.size, 0);
    let marked = 0;
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
      st.scanOffset = off >= total ? 0 : off;
    }
    k.vmstat.count('numa_pte_updates', marked);
    // Adapt the scan period to locality (update_task_scan_period): mostly local -> slower.
    let local = 0;
    let remote = 0;
    for (const t of p.threads) {
      const ts = this.tasks.get(t);
      if (ts) {
        local += ts.local;
        remote += ts.remote;
        ts.local = ts.remote = 0;
        this.placement(t, ts);
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
   * hinting fault. Returns the kernel time it cost (0 when not marked).
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
    const node = k.cpuToNode(t.cpu);
    const pageNode = k.phys.nodeOfPfn(pfn);
    const ts = this.task(t);
    const pages = huge ? 512 : 1;
    k.vmstat.count('numa_hint_faults');
    if (pageNode === node) {
      k.vmstat.count('numa_hint_faults_local');
      ts.local += pages;
    } else ts.remote += pages;
    ts.faults[pageNode]! += pages; // numa_faults by memory node: placement follows the memory
    let ns = k.costs.ns('fault_anon_4k_read_zeropage');
    // Two-stage filter: migrate only on the second fault from the same node in a row.
    const head = huge ? pfn - (pfn % 512) : pfn;
    const last = st.lastNid.get(head);
    st.lastNid.set(head, node);
    const vma = t.process.mm.vmaAt(va);
    const pol = vma ? (vma.policy ?? t.mempolicy) : null;
    const allowed = migrateOnFault(pol) && (!pol || pol.nodes.includes(node)); // mpol_misplaced with MPOL_F_MORON
    if (pageNode !== node && last === node && allowed) {
      if (vma && migrateMappedPage(k, t.process.mm, vma, va, node) === 0) {
        k.vmstat.count('numa_pages_migrated', pages);
        st.lastNid.delete(head);
        ns += pages * k.costs.ns('page_migrate_4k');
      }
    }
    return ns;
  }

  /** task_numa_placement + task_numa_migrate: prefer the node with most faults; go there. */
  private placement(t: Thread, ts: TaskNumaState): void {
    const k = this.k;
    let best = -1;
    let bestFaults = 0;
    ts.faults.forEach((f, n) => {
      if (f > bestFaults) {
        best = n;
        bestFaults = f;
      }
    });
    for (let n = 0; n < ts.faults.length; n++) ts.faults[n] = Math.floor(ts.faults[n]! / 2);
    if (best < 0) return;
    ts.preferred = best;
    if (k.cpuToNode(t.cpu) === best) return;
    const cpus = k.host.nodes[best]!.cpus;
    const busy = new Set<number>();
    for (const p of k.processes.values()) for (const th of p.threads) if (this.tasks.has(th)) busy.add(th.cpu);
    const free = cpus.find((c) => !busy.has(c));
    if (free !== undefined) {
      t.cpu = free;
      return;
    }
    // Swap with a task on the preferred node that would rather be where we are.
    const here = k.cpuToNode(t.cpu);
    for (const [other, os] of this.tasks)
      if (other !== t && cpus.includes(other.cpu) && os.preferred !== best && (os.preferred === here || os.preferred < 0)) {
        const c = other.cpu;
        other.cpu = t.cpu;
        t.cpu = c;
        return;
      }
  }
}
