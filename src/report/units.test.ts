import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { lineWantsLog, logBounds, runBarsSVG } from './charts.ts';
import { groupMetrics, groupOf } from './groups.ts';
import { formatMetric, formatValue, metricUnit, sentinelWord, UNIT_NAMES, unitOf, wantsLogScale } from './units.ts';

/**
 * Every metric name the shipped scenarios emitted (final metrics and series,
 * full and reduced runs, VM/process/thread names made generic), when the
 * table was written. New names are checked as they appear by the shipped
 * scenarios' check (src/scenario/shipped.ts runProblems).
 */
const SHIPPED = `access_ns_mean accesses agent_collapses agent_cpu_ns allocstall_normal anon_huge_bytes anon_huge_fraction bloat_bytes
compact_fail compact_stall compact_success cpu_util cpu_util_mean evacuate.completed evacuate.max_downtime_ns evacuate.migrations
evacuate.pages_differing evacuate.total_time_ns fault_ns_mean fault_ns_total faults host.free_bytes host.oom_kill host.pgsteal_per_s
host.psi.full_avg10 host.psi.full_pct host.psi.full_total_us host.psi.some_avg10 host.psi.some_pct host.psi.some_total_us
host.pswpin_per_s host.pswpout_per_s host.swap_used_bytes huge_access_ratio khugepaged_cpu_ns khugepaged_pages_collapsed local.0
local.1 migration_wait_ns migration_wait_ns_total migration_waits net.flow.vm0.main.bytes net.source.rx.bytes
net.source.rx.utilisation net.spare.tx.bytes node0.membw_bytes node0.membw_latency_x node0.membw_latency_x_mean node0.membw_util
node0.membw_util_max node0.membw_util_mean numa_hint_faults numa_hint_faults_local numa_pages_migrated numa_pte_updates
numa_scan_cpu_ns oom_kill path0-1.membw_util_mean pgmajfault pgmigrate_success pgsteal_direct pgsteal_kswapd
process.p.remote_access_ratio process.p.throughput_per_s pswpin pswpout remote.0 remote.1 remote_access_ratio rss_bytes run_delay_ns
run_delay_ns_total stall_ns stall_ns_total stalls thp_collapse_alloc thp_collapse_alloc_failed thp_fault_alloc thp_fault_fallback
threads_stopped throughput.p/t-0 throughput_per_s time_to_huge90_ns vm.v.balloon.buffer_bytes vm.v.balloon.bytes_read
vm.v.balloon.config_exits vm.v.balloon.exit_ns vm.v.balloon.exits vm.v.balloon.guest_cpu_ns vm.v.balloon.host_cpu_ns
vm.v.balloon.host_returned_bytes vm.v.balloon.host_syscalls vm.v.balloon.inflate_ns vm.v.balloon.interrupts vm.v.balloon.kicks
vm.v.balloon.messages vm.v.balloon.pages_hinted vm.v.balloon.pfns_deflated vm.v.balloon.pfns_inflated vm.v.balloon.reported_bytes
vm.v.balloon.ring_bytes vm.v.balloon_actual_bytes vm.v.dst.guest_node0.host_node0_bytes vm.v.dst.numa_hint_faults
vm.v.dst.numa_pages_migrated vm.v.dst.pgmigrate_success vm.v.ept_violations vm.v.guest.alloc_stalls vm.v.guest.cached_bytes
vm.v.guest.hint_messages vm.v.guest.hinted_pages vm.v.guest.oom_deflates vm.v.guest.oom_kills vm.v.guest.pgsteal_direct
vm.v.guest.reported_pages vm.v.guest.reports vm.v.guest_free_bytes vm.v.guest_node0.host_node0_bytes vm.v.hint.elapsed_ns
vm.v.migration.completed vm.v.migration.downtime vm.v.migration.downtime_ns vm.v.migration.expected-downtime
vm.v.migration.guest_paused_ns vm.v.migration.main_bytes_per_s vm.v.migration.pages_differing
vm.v.migration.postcopy.all_vcpus_blocked_ns vm.v.migration.postcopy.blocktime_ns vm.v.migration.postcopy.dst_huge_mapped_bytes
vm.v.migration.postcopy.faults vm.v.migration.postcopy.latency_max_ns vm.v.migration.postcopy.latency_mean_ns
vm.v.migration.postcopy.latency_p50_ns vm.v.migration.postcopy.latency_p99_ns vm.v.migration.postcopy.resume_ns
vm.v.migration.ram.dirty-pages-rate vm.v.migration.ram.dirty-sync-count vm.v.migration.ram.dirty-sync-missed-zero-copy
vm.v.migration.ram.downtime-bytes vm.v.migration.ram.duplicate vm.v.migration.ram.mbps vm.v.migration.ram.multifd-bytes
vm.v.migration.ram.normal vm.v.migration.ram.normal-bytes vm.v.migration.ram.page-size vm.v.migration.ram.pages-per-second
vm.v.migration.ram.postcopy-bytes vm.v.migration.ram.postcopy-requests vm.v.migration.ram.precopy-bytes
vm.v.migration.ram.remaining vm.v.migration.ram.total vm.v.migration.ram.transferred vm.v.migration.setup-time
vm.v.migration.total-time vm.v.migration.total_time_ns vm.v.migration.vm_lost vm.v.psi.full_avg10 vm.v.psi.some_pct
vm.v.psi.some_total_us vm.v.reported_bytes vm.v.rss_bytes written_bytes`.split(/\s+/);

describe('the table of units', () => {
  it('knows every metric the shipped scenarios emit, and files each under a question', () => {
    expect(SHIPPED.filter((k) => metricUnit(k) === undefined)).toEqual([]);
    expect(SHIPPED.filter((k) => groupOf(k) === 'other')).toEqual([]);
    expect(metricUnit('no_such_thing')).toBeUndefined();
    expect(unitOf('no_such_thing')).toBe('count');
  });

  it("gives QEMU's query-migrate fields their units as qapi/migration.json documents them", () => {
    const m = (k: string): string => `vm.guest.migration.${k}`;
    // MigrationInfo: times in milliseconds.
    expect(formatMetric(m('total-time'), 3521)).toBe('3.52 s');
    expect(formatMetric(m('downtime'), 25)).toBe('25 ms');
    expect(formatMetric(m('setup-time'), 0.5)).toBe('500 µs');
    expect(unitOf(m('expected-downtime'))).toBe('ms');
    // MigrationStats: bytes, pages, pages per second, megabits per second, counters.
    expect(formatMetric(m('ram.transferred'), 3_776_077_618)).toBe('3.52 GiB');
    expect(formatMetric(m('ram.page-size'), 4096)).toBe('4 KiB');
    expect(formatMetric(m('ram.duplicate'), 7)).toBe('7 pages');
    expect(formatMetric(m('ram.normal'), 1_048_576)).toBe('1.05M pages');
    expect(formatMetric(m('ram.dirty-pages-rate'), 12_000)).toBe('12k pages/s');
    expect(formatMetric(m('ram.mbps'), 9400.5)).toBe('9.4 Gbit/s');
    expect(formatMetric(m('ram.mbps'), 0)).toBe('0 Mbit/s');
    expect(formatMetric(m('ram.dirty-sync-count'), 3)).toBe('3');
    expect(UNIT_NAMES[unitOf(m('ram.mbps'))]).toBe('Mbit/s');
  });

  it("gives Linux's counters and memtwin's metrics theirs", () => {
    expect(formatMetric('host.psi.some_total_us', 1500)).toBe('1.5 ms');
    expect(formatMetric('host.psi.some_pct', 12.5)).toBe('12.5 %');
    expect(formatMetric('host.pswpout_per_s', 2500)).toBe('2.5k pages/s');
    expect(formatMetric('pswpout', 1)).toBe('1 page');
    expect(formatMetric('vm.a.migration.main_bytes_per_s', 1024 ** 3)).toBe('1 GiB/s');
    expect(formatMetric('net.source.tx.utilisation', 0.5)).toBe('50 %');
    expect(formatMetric('node0.membw_latency_x_mean', 1.02)).toBe('1.02×');
    expect(formatMetric('node0.membw_util_max', 0.484)).toBe('48.4 %');
  });

  it('shows -1 as a time as "never", and nothing else', () => {
    expect(formatMetric('evacuate.total_time_ns', -1)).toBe('never');
    expect(formatMetric('time_to_huge90_ns', -1)).toBe('never');
    expect(formatMetric('vm.v.migration.total-time', -1)).toBe('never');
    expect(formatMetric('time_to_huge90_ns', 0)).toBe('0 ns');
    expect(formatMetric('faults', -1)).toBe('-1');
    fc.assert(
      fc.property(fc.double({ noNaN: true }), (v) => {
        expect(sentinelWord('ns', v) === 'never').toBe(v === -1);
        expect(sentinelWord('bytes', v)).toBeUndefined();
        expect(formatValue(v, 'ns') === 'never').toBe(v === -1);
      }),
    );
  });
});

describe('the log-scale rule', () => {
  it('is log exactly when positive values span more than two decades', () => {
    expect(wantsLogScale([1, 100])).toBe(false);
    expect(wantsLogScale([1, 100.5])).toBe(true);
    expect(wantsLogScale([117e3, 1.41e9])).toBe(true); // 117 µs beside 1.41 s
    expect(wantsLogScale([0, -1, NaN, 5, 50])).toBe(false); // zeros, sentinels, n/a do not count
    expect(wantsLogScale([])).toBe(false);
  });

  it('does not depend on the unit the values are in, nor on their order', () => {
    const pos = fc.double({ min: 1e-6, max: 1e12, noNaN: true });
    fc.assert(
      fc.property(fc.array(pos, { minLength: 1, maxLength: 20 }), fc.constantFrom(1e-3, 1e3, 1e6, 1024), (vs, k) => {
        const scaled = vs.map((v) => v * k);
        // A ratio exactly at 100 may round either way when scaled: stay away from it.
        const ratio = Math.max(...vs) / Math.min(...vs);
        fc.pre(Math.abs(ratio - 100) > 1e-6);
        expect(wantsLogScale(scaled)).toBe(wantsLogScale(vs));
        expect(wantsLogScale([...vs].reverse())).toBe(wantsLogScale(vs));
        expect(wantsLogScale(vs)).toBe(ratio > 100);
      }),
    );
  });

  it('for lines, compares their peaks: one line ramping up from near zero stays linear', () => {
    expect(lineWantsLog([{ values: [1, 1e3, 1e9, 4e9] }])).toBe(false);
    expect(lineWantsLog([{ values: [0, 5e3, 4e3] }, { values: [1e9, 2e9] }])).toBe(true);
  });

  it('log axes span whole powers of their base', () => {
    expect(logBounds(117e3, 1.41e9)).toEqual({ min: 1e5, max: 1e10 });
    expect(logBounds(1000, 1000)).toEqual({ min: 1000, max: 10000 });
    expect(logBounds(3 * 1024 ** 2, 5 * 1024 ** 3, 1024)).toEqual({ min: 1024 ** 2, max: 1024 ** 4 });
  });
});

describe('run bars', () => {
  const bars = (svg: string): number => [...svg.matchAll(/<path d="M[^"]*Z" fill="#4e79a7"/g)].length;
  it('draws a sentinel as its word with no bar, and decades on a log axis with ticks in their own units', () => {
    const svg = runBarsSVG({ id: 'b', runs: ['page=4K', 'page=2M', 'page=1G'], values: [117e3, -1, 1.41e9], unit: 'ns' });
    expect(svg).toContain('>never<');
    expect(svg).not.toContain('-1 ns');
    expect(bars(svg)).toBe(2);
    for (const tick of ['>100 µs<', '>1 ms<', '>1 s<', '>117 µs<', '>1.41 s<']) expect(svg).toContain(tick);
    for (const name of ['>page=4K<', '>page=2M<', '>page=1G<']) expect(svg).toContain(name);
  });

  it('stays linear for values within two decades, with zero as a labelled empty bar', () => {
    const svg = runBarsSVG({ id: 'b', runs: ['a', 'b'], values: [0, 3521], unit: 'ms' });
    expect(svg).toContain('>3.52 s<');
    expect(svg).toContain('>0<');
    expect(svg).not.toContain('>100 µs<');
  });
});

describe('metric groups', () => {
  it('files metrics under their question, summary sections first', () => {
    expect(groupOf('vm.g.migration.total-time')).toBe('migration');
    expect(groupOf('vm.g.balloon.messages')).toBe('balloon');
    expect(groupOf('host.psi.some_pct')).toBe('pressure');
    expect(groupOf('remote_access_ratio')).toBe('placement');
    expect(groupOf('anon_huge_bytes')).toBe('thp');
    expect(groupOf('cpu_util_mean')).toBe('cpu');
    const names = ['faults', 'anon_huge_bytes', 'vm.g.migration.downtime'];
    expect(groupMetrics(names).map((g) => g.group.id)).toEqual(['workload', 'thp', 'migration']);
    expect(groupMetrics(names, ['vm.g.migration.downtime']).map((g) => g.group.id)).toEqual(['migration', 'workload', 'thp']);
  });
});
