/**
 * Event counters as /proc/vmstat names them (include/linux/vm_event_item.h,
 * mm/vmstat.c). NUMA counters are kept per node, as Linux does, and summed
 * for /proc/vmstat.
 */

/** The workingset counters (workingset.ts): in /proc/vmstat and, per memory cgroup, in memory.stat. */
export const WORKINGSET_STATS = [
  'workingset_refault_anon',
  'workingset_refault_file',
  'workingset_activate_anon',
  'workingset_activate_file',
  'workingset_restore_anon',
  'workingset_restore_file',
  'workingset_nodereclaim',
] as const;

/** Every event counter memtwin keeps. */
export const VM_EVENT_NAMES = [
  'pswpin',
  'pswpout',
  'pgalloc_normal',
  'allocstall_normal',
  'pgfree',
  'pgactivate',
  'pgdeactivate',
  'pgfault',
  'pgmajfault',
  'pglazyfree',
  'pglazyfreed',
  'pgrefill',
  'pgsteal_kswapd',
  'pgsteal_direct',
  'pgscan_kswapd',
  'pgscan_direct',
  'pgscan_anon',
  'pgscan_file',
  'pgsteal_anon',
  'pgsteal_file',
  'pgrotated',
  'pageoutrun',
  'oom_kill',
  'thp_fault_alloc',
  'thp_fault_fallback',
  'thp_fault_fallback_charge',
  'thp_split_pmd',
  'thp_split_pud',
  'thp_split_page',
  'thp_deferred_split_page',
  'thp_zero_page_alloc',
  'thp_zero_page_alloc_failed',
  'thp_swpout',
  'thp_swpout_fallback',
  'thp_collapse_alloc',
  'thp_collapse_alloc_failed',
  'thp_scan_exceed_none_pte',
  'thp_scan_exceed_swap_pte',
  'thp_scan_exceed_share_pte',
  'compact_stall',
  'compact_success',
  'compact_fail',
  'compact_migrate_scanned',
  'compact_free_scanned',
  'compact_isolated',
  'compact_daemon_wake',
  'pgmigrate_success',
  'pgmigrate_fail',
  'thp_migration_success',
  'thp_migration_fail',
  'thp_migration_split',
  'htlb_buddy_alloc_success',
  'htlb_buddy_alloc_fail',
  'numa_pte_updates',
  'numa_huge_pte_updates',
  'numa_hint_faults',
  'numa_hint_faults_local',
  'numa_pages_migrated',
  'swap_ra',
  'swap_ra_hit',
  'swpin_zero',
  'swpout_zero',
  ...WORKINGSET_STATS,
] as const;
export type VmEventName = (typeof VM_EVENT_NAMES)[number];

export const NUMA_STAT_NAMES = ['numa_hit', 'numa_miss', 'numa_foreign', 'numa_interleave', 'numa_local', 'numa_other'] as const;
export type NumaStatName = (typeof NUMA_STAT_NAMES)[number];

/** The event counters, as fields of one fixed-shape object (hot paths increment them directly). */
export type VmEvents = Record<VmEventName, number>;
function newEvents(): VmEvents {
  // Built in one go (not key by key, which leaves V8 a dictionary-mode object): the fault path increments these.
  return Object.fromEntries(VM_EVENT_NAMES.map((n) => [n, 0])) as VmEvents;
}

export class VmStat {
  readonly events: VmEvents;
  readonly numa: Record<NumaStatName, number>[];

  constructor(nrNodes: number) {
    this.events = newEvents();
    this.numa = Array.from(
      { length: nrNodes },
      () => Object.fromEntries(NUMA_STAT_NAMES.map((n) => [n, 0])) as Record<NumaStatName, number>,
    );
  }

  count(name: VmEventName, n = 1): void {
    this.events[name] += n;
  }

  /** zone_statistics(): account an allocation of `pages` on node `z`. */
  numaAlloc(z: number, preferred: number, local: number, pages: number): void {
    const s = this.numa[z]!;
    if (z === preferred) s.numa_hit += pages;
    else {
      s.numa_miss += pages;
      this.numa[preferred]!.numa_foreign += pages;
    }
    if (z === local) s.numa_local += pages;
    else s.numa_other += pages;
  }

  /** Every counter by its /proc/vmstat name (NUMA ones summed over nodes). */
  snapshot(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const n of NUMA_STAT_NAMES) out[n] = this.numa.reduce((s, x) => s + x[n], 0);
    for (const n of VM_EVENT_NAMES) out[n] = this.events[n];
    return out;
  }
}
