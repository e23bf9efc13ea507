/**
 * The question each metric answers, so that a report shows a handful of
 * sections (placement, migration, THP, balloon, pressure, CPU...) instead of
 * one long list. First matching rule wins; a name no rule matches goes to
 * "Other metrics".
 */

export type GroupId = 'workload' | 'placement' | 'thp' | 'migration' | 'balloon' | 'pressure' | 'memory' | 'cpu' | 'other';

export interface MetricGroup {
  id: GroupId;
  title: string;
  /** The question the section answers, one line under its heading. */
  question: string;
}

/** Sections in the order a report shows them. */
export const GROUPS: readonly MetricGroup[] = [
  { id: 'workload', title: 'Workload', question: 'How fast did the workloads run, and what did their faults and stalls cost?' },
  {
    id: 'placement',
    title: 'NUMA placement',
    question: 'Where does memory live, how much of it do threads reach remotely, and what did moving it cost?',
  },
  {
    id: 'thp',
    title: 'Huge pages (THP)',
    question: 'How much memory got huge pages, how fast, and what did faults, collapse and compaction cost?',
  },
  {
    id: 'migration',
    title: 'Live migration',
    question: 'How long did migration take, how much did it send, and what did the guest feel (downtime, postcopy faults)?',
  },
  {
    id: 'balloon',
    title: 'Balloon and free page hints',
    question: 'How much memory did the guests give back through virtio-balloon, and at what cost?',
  },
  {
    id: 'pressure',
    title: 'Memory pressure',
    question: 'How hard did the host and guests reclaim and swap, how long did tasks stall, who was OOM-killed?',
  },
  { id: 'memory', title: 'Memory use', question: 'How much memory did processes and VMs hold, and how much was left free?' },
  { id: 'cpu', title: 'CPU', question: 'How busy were the CPUs, and how long did runnable threads wait for one?' },
  { id: 'other', title: 'Other metrics', question: 'Metrics no section above claims.' },
];

const RULES: readonly (readonly [RegExp, GroupId])[] = [
  // VM-specific first: their names reuse host words (rss, oom, huge, host_node).
  // Huge pages of a VM's source and destination VMMs, and agents on a destination VMM: with the host's THP numbers.
  [/^vm\.[^.]+\.(dst\.)?(anon_huge_bytes|huge_access_ratio)$|^agent\./, 'thp'],
  [/\.migration\.|^evacuate\.|^net\.|\.dst\./, 'migration'],
  [/\.guest\.(oom_kills|oom_deflates|pgsteal_direct|alloc_stalls|cached_bytes)$|\.psi\./, 'pressure'],
  [/\.balloon[._]|\.hint\.|\.guest\.(hint_messages|hinted_pages|reports|reported_pages)$|\.reported_bytes$/, 'balloon'],
  [/guest_node\d+\.host_node\d+_bytes$/, 'placement'],
  [/^node\d+\.used_bytes$/, 'placement'],
  [/^vm\.[^.]+\.(rss_bytes|guest_free_bytes|ept_violations)$|^host\.free_bytes$/, 'memory'],
  [/^host\.|^cgroup\.|^(pswpin|pswpout|pgmajfault|pgsteal_kswapd|pgsteal_direct|allocstall_normal|oom_kill)$/, 'pressure'],
  [/remote|^local\.|numa_|pgmigrate|membw|^path\d|migration_wait/, 'placement'],
  [/thp_|huge|khugepaged|compact_|collapse|agent_cpu|bloat_bytes/, 'thp'],
  [/cpu_util|run_delay/, 'cpu'],
  [/^rss_bytes$|written_bytes/, 'memory'],
  [/throughput|accesses|fault|access_ns|stall|threads_stopped/, 'workload'],
];

/** The section a metric belongs in. */
export function groupOf(name: string): GroupId {
  for (const [re, g] of RULES) if (re.test(name)) return g;
  return 'other';
}

/**
 * Names by section, names in their given order, empty sections left out.
 * Sections holding the scenario's summary metrics come first, in the order
 * of the summary (what the scenario is about); then the rest in GROUPS order.
 */
export function groupMetrics(names: readonly string[], summary: readonly string[] = []): { group: MetricGroup; names: string[] }[] {
  const first = (id: GroupId): number => {
    const i = summary.findIndex((n) => groupOf(n) === id);
    return i < 0 ? summary.length : i;
  };
  return GROUPS.map((group, order) => ({ group, order, names: names.filter((n) => groupOf(n) === group.id) }))
    .filter((g) => g.names.length > 0)
    .sort((a, b) => first(a.group.id) - first(b.group.id) || a.order - b.order)
    .map(({ group, names: ns }) => ({ group, names: ns }));
}
