/**
 * What a scenario run produces (DIR/result.json). The report renderer and
 * the sweep summary read only this; nothing here depends on how it was
 * computed.
 */
import type { RunSnapshots } from './snapshots.ts';

export interface SeriesData {
  /** Sample times, virtual nanoseconds since the start of the run. */
  t_ns: number[];
  /**
   * One column per metric, same length as t_ns. Names:
   * - rss_bytes, anon_huge_bytes: memory of all scenario processes at the sample
   * - faults: page faults during the interval; fault_ns_mean: mean fault cost in it
   * - throughput.<process>/<thread>: accesses per second during the interval
   * - local.<node>, remote.<node>: accesses to pages on <node> from a CPU on the
   *   same node / another node, during the interval
   * - huge_access_ratio: share of the interval's accesses served by 2M/1G mappings;
   *   access_ns_mean: their mean memory time; stall_ns: time threads waited for collapses and
   *   for pages under migration; migration_wait_ns: the part spent on pages under migration
   * - cpu_util: the host's CPUs' mean busy share in the interval (the scheduler's
   *   run queues: workload threads, vCPUs, kernel threads, tools, QEMU threads);
   *   run_delay_ns: time workload threads spent runnable but waiting for a CPU
   * - khugepaged_cpu_ns, agent_cpu_ns (with agents), thp_collapse_alloc: cumulative
   * - thp_fault_alloc, thp_fault_fallback, compact_stall: cumulative counters
   * - with VMs: host.free_bytes (free host memory), vm.<name>.rss_bytes (the
   *   VMM's resident memory), vm.<name>.guest_free_bytes (free guest memory),
   *   vm.<name>.balloon_actual_bytes (query-balloon), vm.<name>.reported_bytes
   *   (free page reporting, cumulative)
   */
  metrics: Record<string, number[]>;
}

export interface ThreadResult {
  process: string;
  thread: string;
  cpu: number;
  node: number;
  accesses: number;
  reads: number;
  writes: number;
  faults: number;
  /** Simulated time spent in page faults, ns. */
  fault_ns: number;
  local_accesses: number;
  remote_accesses: number;
  /** Accesses per second of virtual time over the whole run. */
  throughput: number;
  /** Why the thread stopped early (a signal), if it did. */
  stopped?: string;
  /** Share of the thread's accesses that went to a page on another node. */
  remote_access_ratio: number;
  /** Share of the thread's accesses served by a 2M or 1G mapping. */
  huge_access_ratio: number;
  /**
   * Time the thread waited for collapses (a region being copied, or its VMA
   * write-locked at a fault) and for pages under migration, and how often.
   */
  stall_ns: number;
  stalls: number;
  /**
   * The part of stall_ns spent on migration entries (a page being migrated:
   * migration_entry_wait), and how often (absent in results of earlier versions).
   */
  migration_wait_ns?: number;
  migration_waits?: number;
  /** CPU time the thread ran (se.sum_exec_runtime), ns. */
  cpu_ns: number;
  /** Time it was runnable but waited for its CPU (schedstat run_delay), ns. */
  run_delay_ns: number;
  /** How often the scheduler moved it to another CPU (se.nr_migrations). */
  nr_migrations: number;
  /** Bytes of DRAM traffic the thread's accesses moved (src/sim/membw.ts; the kernel's copies for it are the kernel's). */
  membw_bytes?: number;
  /** NUMA balancing state at the end, when kernel.numa_balancing is on and the thread took hinting faults. */
  numa?: ThreadNumaResult;
}

/** A thread's NUMA balancing state, as /proc/PID/sched shows it (sched_show_numa, show_numa_stats). */
export interface ThreadNumaResult {
  numa_preferred_nid: number;
  /** The numa group's id (the tid of the thread that created it), 0 when in no group. */
  numa_group_id: number;
  numa_group_nr_tasks: number;
  numa_pages_migrated: number;
  /** Hinting faults over the run: private (the page's last hinting fault was this thread's, or nobody's) and shared. */
  hint_faults_private: number;
  hint_faults_shared: number;
  /** numa_faults lines: per node, the decayed memory-node faults of the thread and of its group. */
  faults: { node: number; task_private: number; task_shared: number; group_private: number; group_shared: number }[];
}

/** A scenario event as it happened. */
export interface RunEventLog {
  at_ns: number;
  op: string;
  process: string;
  /** sched_setaffinity: the thread moved. */
  thread?: string;
  ret: number;
  errno?: string;
  /** Kernel time the call took (charged to the calling tool). */
  ns: number;
  pages_migrated: number;
  /** A VM event: the VM (its VMM process is `process`). */
  vm?: string;
  /** oom_kill: the memory cgroup whose memory.max was hit ("/g"; absent for a global OOM), the victim's anon RSS. */
  memcg?: string;
  anon_rss_bytes?: number;
  /** free_page_hint: start, stop or done. */
  action?: string;
  /** qmp/hmp/balloon: the monitor's reply (QMP JSON, or HMP text). */
  reply?: string;
  /**
   * balloon/free_page_hint: the virtio-balloon device's counters over the
   * event's window (until the VM's next event or the end): messages, exits,
   * bytes, guest/exit/host CPU ns, host syscalls, host_returned_bytes, pages
   * hinted, and elapsed_ns (until the guest's last `actual` update, or the
   * last hint message).
   */
  detail?: Record<string, number>;
}

/** A published figure set beside a run's metric (scenario `published`). */
export interface PublishedFigure {
  label: string;
  value: number;
  unit: string;
  metric: string;
  run?: string;
  source: string;
}

export interface ScenarioInfo {
  name: string;
  description?: string;
  file: string;
  /** The scenario's notes: what the results mean. */
  notes?: string;
  published?: PublishedFigure[];
  /** The metrics the scenario puts first (its `summary`). */
  summary?: string[];
}

export interface RunResult {
  memtwin: { version: string };
  scenario: ScenarioInfo;
  /** Which run of a sweep this is (index 0, id "base" when there is no sweep). */
  run: { index: number; id: string; params: Record<string, unknown> };
  seed: number;
  duration_ns: number;
  host: { name: string; nodes: { id: number; memory: number; cpus: number[] }[]; distances: number[][] };
  profile: {
    date: string;
    machine: string;
    /** Costs of the profile the run used that were not measured on the profile's machine: name -> where they come from (`derived`). */
    not_measured?: Record<string, string>;
  };
  /**
   * The scenario as run: sweep values substituted, defaults filled in; and
   * `digests`: the SHA-256 of each file it read (host files, cost profile),
   * by where the scenario names it (inputs.ts). A resumed sweep keeps the
   * run only if all of it, and memtwin.version, are unchanged.
   */
  inputs: unknown;
  /** Final metrics, flat: name -> value (units in the name: _bytes, _ns, _per_s). */
  final: Record<string, number>;
  threads: ThreadResult[];
  /** Scenario events (syscalls at given times) with their results. */
  events: RunEventLog[];
  series: SeriesData;
  /**
   * What the run could not do as asked, located in the scenario file (also
   * printed on stderr): a migration still running at the end (and why), a
   * thread stopped early, an agent that never acted, QEMU's warnings.
   * Absent when there are none.
   */
  warnings?: string[];
  /** The host kernel's log lines of the run (the OOM killer's, as Linux 6.18 prints them), when there are any. */
  dmesg?: string[];
  /**
   * What `memtwin view` draws (snapshots.ts), with `sample.snapshots`:
   * written to snapshots.json beside result.json, never into it.
   */
  snapshots?: RunSnapshots;
}

/** DIR/result.json of a sweep: every run's identity and final metrics. */
export interface SweepResult {
  memtwin: { version: string };
  scenario: ScenarioInfo;
  /** The swept parameters, as paths into the scenario. */
  swept: { path: string[]; label: string; values: unknown[] }[];
  runs: { index: number; id: string; params: Record<string, unknown>; dir: string; final: Record<string, number> }[];
}
