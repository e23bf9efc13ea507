import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { barChartSVG, lineChartSVG, markerLabel } from './charts.ts';
import {
  escapeHtml as esc,
  formatMetric,
  nearlySame,
  perVmCharts,
  renderRunReport,
  renderSweepReport,
  runMarkers,
  runNames,
} from './report.ts';
import { UNIT_NAMES, unitOf } from './units.ts';
import { fakeRun, fakeSweep } from './test_fixtures.ts';
import { CHROMIUM, chromium, pageErrors } from '../testing/chromium.ts';

const svgs = (html: string): string[] => html.split('<svg').slice(1);

function expectSelfContained(html: string): void {
  expect(html.startsWith('<!DOCTYPE html>')).toBe(true);
  expect(html).toContain('<meta charset="utf-8">');
  expect(html).not.toMatch(/<script/i);
  expect(html).not.toMatch(/https?:\/\//i);
  expect(html).not.toMatch(/\b(src|srcset)\s*=/i);
  expect(html).not.toMatch(/@import|@font-face/i);
  // The only url() references are to ids inside the page (chart clip paths).
  for (const m of html.matchAll(/url\(([^)]*)\)/g)) expect(m[1]).toMatch(/^#/);
  // Every chart id is unique in the page, and every url(#id) resolves.
  const ids = [...html.matchAll(/\sid="([^"]+)"/g)].map((m) => m[1]);
  expect(new Set(ids).size).toBe(ids.length);
  for (const m of html.matchAll(/url\(#([^)]*)\)/g)) expect(ids).toContain(m[1]);
}

/** Each chart has drawn data: a line with many segments, or bars (closed paths), beyond the grid lines. */
function expectDrawn(svg: string): void {
  const paths = [...svg.matchAll(/<path d="([^"]*)"/g)].map((m) => m[1]!);
  expect(paths.some((d) => d.length > 100 || /Z$/.test(d))).toBe(true);
}

describe('formatMetric', () => {
  it('uses the unit in the name', () => {
    expect(formatMetric('rss_bytes', 512)).toBe('512 B');
    expect(formatMetric('rss_bytes', 4096)).toBe('4 KiB');
    expect(formatMetric('rss_bytes', 1.5 * 1024 ** 3)).toBe('1.5 GiB');
    expect(formatMetric('anon_huge_bytes', 300 * 1024 ** 2)).toBe('300 MiB');
    expect(formatMetric('fault_ns', 850)).toBe('850 ns');
    expect(formatMetric('fault_ns_total', 12_345)).toBe('12.3 µs');
    expect(formatMetric('fault_ns_mean', 2.5e6)).toBe('2.5 ms');
    expect(formatMetric('duration_ns', 30e9)).toBe('30 s');
    expect(formatMetric('throughput_per_s', 1_234_567)).toBe('1.23 M/s');
    expect(formatMetric('throughput_per_s', 45_600)).toBe('45.6 k/s');
    expect(formatMetric('throughput_per_s', 12)).toBe('12/s');
    expect(formatMetric('remote_ratio', 0.1234)).toBe('12.3 %');
    expect(formatMetric('cpu_util_mean', 0.5)).toBe('50 %');
    expect(formatMetric('remote_fraction', 1)).toBe('100 %');
    expect(formatMetric('faults', 1_234_567)).toBe('1,234,567');
    expect(formatMetric('faults', -1234)).toBe('-1,234');
    expect(formatMetric('faults', 0)).toBe('0');
    expect(formatMetric('mean_accesses', 2.345)).toBe('2.35');
    expect(formatMetric('faults', NaN)).toBe('n/a');
  });
});

describe('charts', () => {
  const series = [{ name: 'a<&>b', t_ns: [1e6, 2e6, 3e6], values: [1, 5, 2] }];
  it('renders deterministic, self-contained SVG whatever was rendered before', () => {
    const one = lineChartSVG({ id: 'c', series, unit: 'count' });
    barChartSVG({ id: 'other', categories: ['x'], groups: [{ name: 'g', values: [1] }], unit: 'bytes' });
    const two = lineChartSVG({ id: 'c', series, unit: 'count' });
    expect(two).toBe(one);
    expect(one).toMatch(/^<svg id="c" width="1100" height="320"/);
    expect(one).not.toContain('http');
    expect(one).not.toMatch(/zr\d+-/);
  });
  it('escapes names inside the SVG', () => {
    const svg = lineChartSVG({ id: 'c', series, unit: 'count', legend: true });
    expect(svg).toContain('a&lt;&amp;&gt;b');
    expect(svg).not.toContain('a<&>b');
  });
});

describe('renderRunReport', () => {
  const run = fakeRun();
  const html = renderRunReport(run);

  it('is a self-contained page', () => {
    expectSelfContained(html);
    expect(html.length).toBeLessThan(1_000_000);
  });

  it('has all nine charts with drawn data', () => {
    const charts = svgs(html);
    expect(charts).toHaveLength(9);
    charts.forEach(expectDrawn);
    for (const title of [
      'Memory: RSS and AnonHugePages',
      'Page faults per interval',
      'Mean fault latency',
      'Throughput per thread',
      'Local vs remote accesses per node',
      'THP and compaction counters',
      'Accesses through huge mappings',
      'Collapse CPU time',
      'Stalls behind collapses and migrations',
    ])
      expect(html).toContain(`<h3>${title}</h3>`);
    expect(html).not.toContain('Skipped chart');
  });

  it('shows the run facts, final metrics and threads in human units', () => {
    expect(html).toContain('<title>memtwin run report: thp-db-vm</title>');
    expect(html).toContain('30 s of virtual time');
    expect(html).toContain('two-socket: 2 NUMA nodes, 32 GiB, 8 CPUs');
    expect(html).toContain('Xeon Gold 6338 (synthetic), measured 2025-01-15');
    for (const [k, v] of Object.entries(run.final))
      expect(html).toContain(
        `<code>${k}</code></td><td class="unit">${UNIT_NAMES[unitOf(k)]}</td><td class="n">${formatMetric(k, v)}</td>`,
      );
    expect(html).toContain('<td class="n">4 KiB</td>'); // page_size_bytes
    const threadRows = html
      .slice(html.indexOf('<h2 id="threads">Threads</h2>'), html.indexOf('<h2 id="over-time">Over time</h2>'))
      .match(/<tr>/g);
    expect(threadRows).toHaveLength(1 + 4); // header + 4 threads (the total row has its own class)
    expect(html).toContain('<tr class="total">');
    expect(html).toContain('1,500,000,000');
  });

  it('files the final metrics under their question, each with its unit, and marks the events on the charts', () => {
    expect(html).toContain('<nav class="toc">');
    expect(html).toContain('<h3 id="g-thp" class="group">Huge pages (THP)</h3>');
    expect(html).toContain('<a href="#g-placement">NUMA placement</a>');
    const thp = html.slice(html.indexOf('id="g-thp"'), html.indexOf('</table>', html.indexOf('id="g-thp"')));
    expect(thp).toContain('<code>anon_huge_bytes</code></td><td class="unit">bytes</td>');
    expect(thp).not.toContain('<code>faults</code>');
    const withEvents = fakeRun();
    withEvents.events = [{ at_ns: 12e9, op: 'madvise', process: 'db', ret: 0, ns: 1000, pages_migrated: 0 }];
    const out = renderRunReport(withEvents);
    expect(svgs(out).every((svg) => svg.includes('>madvise<'))).toBe(true);
    expect(out).toContain('Dashed vertical lines mark the run’s events');
    expect(html).not.toContain('Dashed vertical lines');
  });

  it('escapes names with <&>', () => {
    expect(html).not.toContain('vm<&>');
    expect(html).not.toContain('<sharing>');
    expect(html).toContain('vm&lt;&amp;&gt;&quot;x&quot;');
    expect(html).toContain('&lt;sharing&gt;');
    // inside the throughput chart's legend too
    expect(html).toContain('vm&lt;&amp;&gt;&quot;x&quot;/vcpu&lt;0&gt;');
  });

  it('is deterministic', () => {
    expect(renderRunReport(fakeRun())).toBe(html);
  });

  it('skips charts whose series are missing or all zero, with a note', () => {
    const partial = renderRunReport(
      fakeRun({ omit: ['fault_ns_mean', 'thp_fault_alloc', 'thp_fault_fallback', 'compact_stall', 'anon_huge_bytes'], zero: ['faults'] }),
    );
    expectSelfContained(partial);
    expect(svgs(partial)).toHaveLength(6);
    svgs(partial).forEach(expectDrawn);
    expect(partial).toContain('Skipped chart <b>Mean fault latency</b>: <code>fault_ns_mean</code> not recorded');
    expect(partial).toContain('Skipped chart <b>Page faults per interval</b>: <code>faults</code> is zero throughout');
    expect(partial).toMatch(/Skipped chart <b>THP and compaction counters<\/b>: <code>thp_fault_alloc<\/code>, .*not recorded/);
    expect(partial).toContain('Not recorded: <code>anon_huge_bytes</code>');

    const noNuma = renderRunReport(fakeRun({ omit: ['local.0', 'local.1', 'remote.0', 'remote.1'] }));
    expect(svgs(noNuma)).toHaveLength(8);
    expect(noNuma).toContain('Skipped chart <b>Local vs remote accesses per node</b>');

    const empty = fakeRun();
    empty.series = { t_ns: [], metrics: {} };
    const none = renderRunReport(empty);
    expect(svgs(none)).toHaveLength(0);
    expect(none).toContain('No time series in this result');
  });
});

describe('renderSweepReport', () => {
  const { sweep, runs } = fakeSweep();
  const html = renderSweepReport(sweep, runs);
  const differing = Object.keys(sweep.runs[0]!.final).filter((k) => new Set(sweep.runs.map((r) => r.final[k])).size > 1);

  it('draws each node’s memory in use over time (numastat) when the runs recorded it, and says so when they did not', () => {
    const two = fakeSweep();
    for (const r of two.runs) r.host = { ...r.host, nodes: [r.host.nodes[0]!, { ...r.host.nodes[0]!, id: 1 }] };
    const before = renderSweepReport(two.sweep, two.runs);
    expect(before).not.toContain('Memory in use on node 0 over time');
    expect(before).toContain('memory per NUMA node over time (numastat)');
    two.runs.forEach((r, i) => {
      r.series.metrics['node0.used_bytes'] = r.series.t_ns.map((_, j) => (j + 1) * 4096 * (i + 1));
      r.series.metrics['node1.used_bytes'] = r.series.t_ns.map(() => 2 ** 20 * (i + 1));
    });
    const after = renderSweepReport(two.sweep, two.runs);
    expect(after).toContain('<h3>Memory in use on node 0 over time</h3>');
    expect(after).toContain('<h3>Memory in use on node 1 over time</h3>');
    expect(after).not.toContain('memory per NUMA node over time (numastat)');
  });

  it('is a self-contained page with a bar chart per differing metric and the overlays', () => {
    expectSelfContained(html);
    expect(differing).toEqual(expect.arrayContaining(['throughput_per_s', 'fault_ns_total', 'anon_huge_bytes', 'rss_bytes']));
    // one bar chart per differing metric + throughput, huge-mapping share and RSS overlays + per-thread bars
    expect(svgs(html)).toHaveLength(differing.length + 4);
    svgs(html).forEach(expectDrawn);
    expect(html).toContain('<h3>Total throughput over time</h3>');
    expect(html).toContain('<h3>Accesses through huge mappings over time</h3>');
    // Metrics the same in every run are tabled with a grey name, not charted.
    expect(html).toContain('<td class="same"><code>remote_<wbr>fraction</code>');
    expect(html).not.toContain('<h3><code>remote_fraction</code></h3>');
  });

  it('names runs by their swept values, never by number', () => {
    const names = sweep.runs.map((r) => `thp=${r.params.thp}, numa&lt;bal&gt;=${r.params['numa<bal>']}`);
    for (const n of names) expect(html).toContain(n);
    expect(html).not.toMatch(/>#\d+</);
    expect(
      runNames([
        { id: 'a', params: {} },
        { id: 'b', params: { x: 1 } },
        { id: 'c', params: { x: 1 } },
      ]),
    ).toEqual(['a', 'x=1 (b)', 'x=1 (c)']);
  });

  it('groups metrics by question, with headings, a unit column and a table of contents', () => {
    expect(html).toContain('<nav class="toc">');
    for (const [id, title] of [
      ['g-workload', 'Workload'],
      ['g-thp', 'Huge pages (THP)'],
      ['g-placement', 'NUMA placement'],
    ]) {
      expect(html).toContain(`<a href="#${id}">${esc(title)}</a>`);
      expect(html).toContain(`<section id="${id}">\n<h2>${esc(title)}</h2>`);
    }
    const thp = html.slice(html.indexOf('<section id="g-thp">'), html.indexOf('</section>', html.indexOf('<section id="g-thp">')));
    expect(thp).toContain('<h3><code>anon_huge_bytes</code></h3>');
    expect(thp).not.toContain('<code>throughput_per_s</code>');
    // The Runs table holds the runs and their swept values (metrics are in the sections): it fits, and scrolls if not.
    const runs = html.slice(html.indexOf('<h2 id="runs">'), html.indexOf('<section'));
    expect(runs).toContain('<div class="scroll"><table class="wide">');
    expect(runs.match(/<th[ >]/g)).toHaveLength(4); // #, run, thp, numa<bal>
  });

  it('draws the same metric of several VMs in one chart, a bar per VM, and no chart for values within 1 %', () => {
    expect(perVmCharts(['faults', 'vm.a.migration.ram.mbps', 'vm.b.migration.ram.mbps', 'vm.a.downtime_ns'])).toEqual([
      { title: 'faults', keys: ['faults'] },
      { title: 'vm.*.migration.ram.mbps', keys: ['vm.a.migration.ram.mbps', 'vm.b.migration.ram.mbps'] },
      { title: 'vm.a.downtime_ns', keys: ['vm.a.downtime_ns'] },
    ]);
    expect(nearlySame([58_900, 58_901, 58_950])).toBe(true);
    expect(nearlySame([100, 102])).toBe(false);
    expect(nearlySame([0, 0])).toBe(true);
    expect(nearlySame([5, -1])).toBe(false); // a sentinel is a difference worth showing
    const p = fakeSweep();
    p.sweep.runs.forEach((r, i) =>
      Object.assign(r.final, { 'vm.a.migration.ram.mbps': 1000 * (i + 1), 'vm.b.migration.ram.mbps': 500 * (i + 1) }),
    );
    const out = renderSweepReport(p.sweep, p.runs);
    const chart = out.slice(out.indexOf('<h3><code>vm.*.migration.ram.mbps</code></h3>'));
    expect(chart.length).toBeLessThan(out.length);
    const svg = chart.slice(0, chart.indexOf('</svg>'));
    for (const t of ['>a<', '>b<', '>1 Gbit/s<', '>500 Mbit/s<', '>3 Gbit/s<']) expect(svg).toContain(t);
    expect(out).not.toContain('<h3><code>vm.a.migration.ram.mbps</code></h3>');
  });

  it('marks events on the over-time charts: shared ones once in grey, a run’s own in its colour', () => {
    const p = fakeSweep();
    p.runs.forEach((r, i) => {
      r.events = [
        { at_ns: 5e9, op: 'migrate', process: 'qemu', vm: 'g', ret: 0, ns: 0, pages_migrated: 0 },
        { at_ns: 9e9 + i * 1e9, op: 'balloon', process: 'qemu', vm: 'g', ret: 0, ns: 0, pages_migrated: 0 },
      ];
      Object.assign(r.final, { 'vm.g.migration.total_time_ns': 4e9 + i * 1e9, 'vm.g.migration.downtime_ns': 3e8 });
    });
    const out = renderSweepReport(p.sweep, p.runs);
    const tp = svgs(out).find((x) => x.includes('aria-label="Total throughput over time"'))!;
    // migrate (shared, grey), then per run: a switchover, a completion and a balloon in its colour.
    expect(tp).toContain('>migrate (g)<');
    // A run's switchover, completion and balloon 0.3 s apart on a 30 s axis share one label.
    expect(tp).toContain('>switchover / balloon / completed (g)<');
    expect(markerLabel(['switchover (vm0)', 'completed (vm0)', 'switchover (vm1)', 'completed (vm2)', 'migrate (vm3)', 'mbind'])).toBe(
      'switchover / completed / migrate / mbind (vm0, vm1 +2)',
    );
    expect(runMarkers(p.runs[1]!).map((m) => [m.t_ns, m.label])).toEqual([
      [5e9, 'migrate (g)'],
      [5e9 + 5e9 - 3e8, 'switchover (g)'],
      [10e9, 'completed (g)'],
      [10e9, 'balloon (g)'],
    ]);
    expect(out).toContain('Dashed vertical lines mark events');
  });

  it('lists the swept parameters and one row per run with formatted metrics and links', () => {
    expect(html).toContain('<code>sysfs.transparent_hugepage.enabled</code>');
    expect(html).toContain('never, madvise, always');
    for (const r of sweep.runs) {
      expect(html).toContain(`<a href="${r.dir}/report.html">thp=${r.params.thp}, numa&lt;bal&gt;=${r.params['numa<bal>']}</a>`);
      expect(html).toContain(formatMetric('throughput_per_s', r.final.throughput_per_s!));
    }
    expect(html).toContain('runs/thp=never/report.html');
    expect(html).toContain('numa&lt;bal&gt;');
    expect(html).not.toContain('numa<bal>');
  });

  it('is deterministic', () => {
    const again = fakeSweep();
    expect(renderSweepReport(again.sweep, again.runs)).toBe(html);
  });

  it("overlays memory pressure when the runs have it: swap traffic, PSI, the VMs' OOM deflations summed; all-zero series are left out, but OOM's", () => {
    const p = fakeSweep();
    p.runs.forEach((r, i) => {
      const n = r.series.t_ns.length;
      r.series.metrics['host.pswpout_per_s'] = r.series.t_ns.map((_, j) => (j * (i + 1)) % 7);
      r.series.metrics['host.psi.some_pct'] = r.series.t_ns.map((_, j) => (j === 1 ? 12.5 : 0));
      r.series.metrics['vm.a.guest.oom_deflates'] = r.series.t_ns.map((_, j) => j);
      r.series.metrics['vm.b.guest.oom_deflates'] = r.series.t_ns.map((_, j) => 2 * j);
      r.series.metrics['vm.a.guest.oom_kills'] = new Array<number>(n).fill(0);
    });
    const out = renderSweepReport(p.sweep, p.runs);
    expect(out).toContain('<h3>Swap-out over time</h3>');
    expect(out).toContain('<h3>Memory pressure (some) over time</h3>');
    expect(out).toContain('<h3>Balloon deflations on OOM over time</h3>');
    // No OOM kill is still drawn (a line at 0); another all-zero series is not.
    expect(out).toContain('<h3>Guest OOM over time</h3>');
    expect(out).not.toContain('<h3>Swap-in over time</h3>');
    expect(svgs(out)).toHaveLength(svgs(html).length + 4);
    svgs(out).forEach(expectDrawn);
  });

  it('works without the full run results', () => {
    const bare = renderSweepReport(sweep, []);
    expectSelfContained(bare);
    expect(svgs(bare)).toHaveLength(differing.length);
    svgs(bare).forEach(expectDrawn);
    expect(bare).toContain('Full run results were not given');
  });
});

// ---------------------------------------------------------------- in a real browser

if (!CHROMIUM) console.warn('report.test: chromium not found (run scripts/install-chromium.sh): skipping the browser test');

function expectNoPageErrors(stderr: string): void {
  expect(pageErrors(stderr)).toEqual([]);
}

describe('reports in headless chromium', () => {
  const dir = mkdtempSync(join(tmpdir(), 'memtwin-report-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it.skipIf(!CHROMIUM)('renders the run and sweep reports with their charts', async () => {
    const runFile = join(dir, 'run.html');
    const sweepFile = join(dir, 'sweep.html');
    const runHtml = renderRunReport(fakeRun());
    const { sweep, runs } = fakeSweep();
    const sweepHtml = renderSweepReport(sweep, runs);
    writeFileSync(runFile, runHtml);
    writeFileSync(sweepFile, sweepHtml);
    const png = join(dir, 'run.png');

    const [runDom, sweepDom, shot] = await Promise.all([
      chromium(['--dump-dom', pathToFileURL(runFile).href]),
      chromium(['--dump-dom', pathToFileURL(sweepFile).href]),
      chromium([`--screenshot=${png}`, '--window-size=1280,2400', '--hide-scrollbars', pathToFileURL(runFile).href]),
    ]);

    for (const [dom, html] of [
      [runDom, runHtml],
      [sweepDom, sweepHtml],
    ] as const) {
      expect(dom.stdout).toContain('</html>');
      expect(svgs(dom.stdout)).toHaveLength(svgs(html).length);
      expect(dom.stdout).toMatch(/<path d="M[^"]{100,}"/);
      expectNoPageErrors(dom.stderr);
    }
    expect(svgs(runDom.stdout)).toHaveLength(9);
    expectNoPageErrors(shot.stderr);

    expect(statSync(png).size).toBeGreaterThan(20_000);
    const head = readFileSync(png).subarray(0, 8);
    expect(head.equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))).toBe(true);
  });
});
