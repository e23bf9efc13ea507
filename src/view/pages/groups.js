// How series are put on charts and charts into groups, by the question they answer.

/**
 * Which chart a series goes on: instances of one quantity (threads, nodes,
 * VMs, cgroups, flows) share a chart, one line each.
 */
export function chartKey(name) {
  let m;
  if (name.startsWith('throughput.')) return 'throughput (accesses/s)';
  if ((m = /^(local|remote)\.\d+$/.exec(name))) return 'accesses by node (local, remote)';
  if ((m = /^node\d+\.(.+)$/.exec(name))) return `node*.${m[1]}`;
  if ((m = /^path\d+-\d+\.(.+)$/.exec(name))) return `path*.${m[1]}`;
  if ((m = /^vm\.[^.]+\.(.+)$/.exec(name))) return `vm.*.${m[1]}`;
  if ((m = /^cgroup\.[^.]+\.(.+)$/.exec(name))) return `cgroup.*.${m[1]}`;
  if ((m = /^net\.flow\.[^.]+\.(.+)$/.exec(name))) return `net.flow.*.${m[1]}`;
  if ((m = /^net\.[^.]+\.(.+)$/.exec(name))) return `net.*.${m[1]}`;
  return name;
}

/** The question a chart answers (the report's groups). */
export function groupOf(key) {
  if (/(^|\.)migration\.|^net\./.test(key)) return 'Migration and network';
  if (/balloon|reported|hint/.test(key)) return 'Balloon and free page reporting';
  if (/^accesses by node|remote|node\*|path\*|numa|membw/.test(key)) return 'Placement (NUMA, memory bandwidth)';
  if (/thp|huge|khugepaged|compact|agent|collapse|fault|stall|migration_wait/.test(key)) return 'THP, faults and stalls';
  if (/throughput|cpu_util|run_delay|access_ns/.test(key)) return 'Throughput and CPU';
  if (/psi|swap|pgsteal|pgscan|oom|cgroup|memory_|events_/.test(key)) return 'Memory pressure and cgroups';
  if (/bytes|rss|free/.test(key)) return 'Memory';
  return 'Other';
}

export const GROUP_ORDER = [
  'Migration and network',
  'Placement (NUMA, memory bandwidth)',
  'THP, faults and stalls',
  'Memory',
  'Throughput and CPU',
  'Balloon and free page reporting',
  'Memory pressure and cgroups',
  'Other',
];
