/**
 * Self-contained HTML reports of a scenario run and of a sweep: inline CSS,
 * inline SVG charts, no scripts, no external URLs or fonts, so a report opens
 * offline. Rendering is deterministic: the same result gives the same bytes.
 */
import type { PublishedFigure, RunResult, ScenarioInfo, SeriesData, SweepResult, ThreadResult } from '../scenario/result.ts';
import { barChartSVG, lineChartSVG, lineWantsLog, PALETTE, runBarsSVG, type LineSeries, type TimeMarker } from './charts.ts';
import { groupMetrics } from './groups.ts';
import { formatMetric, formatValue, groupThousands, unitOf, UNIT_NAMES, type Unit } from './units.ts';

export { formatMetric } from './units.ts';

/** Escape text for HTML element content and double-quoted attributes. */
export function escapeHtml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');
}

const esc = escapeHtml;

const CSS = `
*{box-sizing:border-box}
body{margin:0;background:#f4f5f7;color:#1f2430;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif}
main{max-width:1200px;margin:0 auto;padding:24px 32px 48px;background:#fff;min-height:100vh}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:18px;margin:32px 0 10px;padding-bottom:4px;border-bottom:1px solid #e3e6ec}
h3{font-size:15px;margin:0 0 2px}
h3.group{margin:18px 0 2px}
p{margin:6px 0}
.sub{color:#5a5f6b;margin:0 0 12px}
.desc{max-width:900px}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:4px 18px;margin:12px 0}
dl.facts dt{color:#5a5f6b}
dl.facts dd{margin:0}
table{border-collapse:collapse;font-variant-numeric:tabular-nums;margin:6px 0 4px}
th,td{padding:4px 10px;border-bottom:1px solid #e3e6ec;text-align:left;vertical-align:baseline}
th{background:#f3f5f8;font-weight:600;color:#333a45;font-size:13px}
td.n,th.n{text-align:right;white-space:nowrap}
td.raw{color:#7a808c;font-size:12px;text-align:right;font-family:ui-monospace,"DejaVu Sans Mono",monospace}
tr.total td{font-weight:600;border-top:2px solid #c9ced8}
table.wide{width:100%;font-size:12.5px}
.scroll{overflow-x:auto}
table.wide th,table.wide td{padding:4px 6px}
table.wide th{vertical-align:bottom}
.row{display:flex;gap:40px;flex-wrap:wrap;align-items:flex-start}
nav.toc{background:#f6f7f9;border:1px solid #e3e6ec;padding:8px 12px;margin:14px 0;line-height:1.9}
nav.toc b{margin-right:6px}
p.question{color:#5a5f6b;font-style:italic;margin:0 0 8px}
table.metrics td:first-child,table.metrics th:first-child{position:sticky;left:0;background:#fff;z-index:1;min-width:240px}
table.metrics th:first-child{background:#f3f5f8}
table.metrics th.n{white-space:normal;min-width:90px}
td.same code{color:#8a909c}
td.unit{color:#5a5f6b;white-space:nowrap}
td a.src,td.src a{word-break:break-all}
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px;vertical-align:baseline}
code,.mono{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12.5px}
figure{margin:18px 0 8px}
figure svg{display:block;max-width:100%;height:auto}
figcaption{color:#5a5f6b;font-size:12.5px;margin:0 0 4px}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:8px 24px}
.grid2 figure{margin:12px 0 4px}
.warn{color:#7a2a1a;background:#fcefeb;border-left:3px solid #d0674f;padding:5px 10px 5px 28px;margin:8px 0;font-size:13px}
.note{color:#6b5d2e;background:#fbf7e9;border-left:3px solid #e0c35a;padding:5px 10px;margin:8px 0;font-size:13px}
.muted{color:#7a808c}
details{margin:8px 0}
summary{cursor:pointer;color:#333a45}
pre{background:#f6f7f9;border:1px solid #e3e6ec;padding:10px;overflow:auto;font-size:12px;max-height:600px}
a{color:#2c5fa8}
footer{margin-top:36px;color:#8a909c;font-size:12px}
`;

function page(title: string, body: string): string {
  return [
    '<!DOCTYPE html>',
    '<html lang="en">',
    '<head>',
    '<meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    `<title>${esc(title)}</title>`,
    `<style>${CSS}</style>`,
    '</head>',
    '<body>',
    '<main>',
    body,
    '</main>',
    '</body>',
    '</html>',
    '',
  ].join('\n');
}

/** Let long snake_case / dotted names break at their separators in table headers. */
function breakable(name: string): string {
  return esc(name).replace(/([_./])/g, '$1<wbr>');
}

type Cell = { html: string; num?: boolean; cls?: string; title?: string };

function table(head: Cell[], rows: Cell[][], cls = ''): string {
  const th = head.map((h) => `<th${h.num ? ' class="n"' : ''}>${h.html}</th>`).join('');
  const body = rows
    .map((r) => {
      const rowCls = r[0]?.cls === 'total' ? ' class="total"' : '';
      const tds = r
        .map((c) => {
          const classes = [c.num ? 'n' : '', c.cls && c.cls !== 'total' ? c.cls : ''].filter(Boolean).join(' ');
          const title = c.title === undefined ? '' : ` title="${esc(c.title)}"`;
          return `<td${classes ? ` class="${classes}"` : ''}${title}>${c.html}</td>`;
        })
        .join('');
      return `<tr${rowCls}>${tds}</tr>`;
    })
    .join('\n');
  const t = `<table${cls ? ` class="${cls}"` : ''}>\n<thead><tr>${th}</tr></thead>\n<tbody>\n${body}\n</tbody>\n</table>`;
  // A wide table scrolls on its own rather than widening the page.
  return cls.split(' ').includes('wide') ? `<div class="scroll">${t}</div>` : t;
}

const txt = (s: string): Cell => ({ html: esc(s) });
const num = (s: string, title?: string): Cell => ({ html: esc(s), num: true, ...(title === undefined ? {} : { title }) });

/** A parameter value for display. */
function showParam(v: unknown): string {
  if (typeof v === 'string') return v;
  if (typeof v === 'number') return Number.isInteger(v) ? groupThousands(v) : String(v);
  if (v === undefined) return '—';
  return JSON.stringify(v) ?? String(v);
}

/** "0-3,8,10-11" for a CPU list. */
function cpuList(cpus: number[]): string {
  const s = [...cpus].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < s.length;) {
    let j = i;
    while (j + 1 < s.length && s[j + 1] === s[j]! + 1) j++;
    parts.push(i === j ? `${s[i]}` : `${s[i]}-${s[j]}`);
    i = j + 1;
  }
  return parts.join(',');
}

function fmtDuration(ns: number): string {
  return formatValue(ns, 'ns');
}

function pct(part: number, whole: number): string {
  return whole > 0 ? formatValue(part / whole, 'ratio') : '—';
}

function hostSummary(h: RunResult['host']): string {
  const mem = h.nodes.reduce((a, n) => a + n.memory, 0);
  const cpus = h.nodes.reduce((a, n) => a + n.cpus.length, 0);
  const nodes = h.nodes.length;
  return `${h.name}: ${nodes} NUMA node${nodes === 1 ? '' : 's'}, ${formatValue(mem, 'bytes')}, ${cpus} CPU${cpus === 1 ? '' : 's'}`;
}

function hostTables(h: RunResult['host']): string {
  const nodes = table(
    [txt('node'), { html: 'memory', num: true }, { html: 'CPUs', num: true }, txt('CPU list')],
    h.nodes.map((n) => [
      num(String(n.id)),
      num(formatValue(n.memory, 'bytes'), `${n.memory} bytes`),
      num(String(n.cpus.length)),
      txt(cpuList(n.cpus)),
    ]),
  );
  let dist = '';
  if (h.distances.length > 0) {
    const ids = h.nodes.map((n) => n.id);
    dist = table(
      [txt('distance'), ...h.distances.map((_, j) => ({ html: `node ${esc(String(ids[j] ?? j))}`, num: true }))],
      h.distances.map((row, i) => [txt(`node ${ids[i] ?? i}`), ...row.map((d) => num(String(d)))]),
    );
  }
  return `<div class="row">${nodes}${dist}</div>`;
}

function facts(items: [string, string][]): string {
  return `<dl class="facts">\n${items.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${v}</dd>`).join('\n')}\n</dl>`;
}

/** The final metrics, a table per question (placement, migration, THP...), each metric with its unit. */
function finalTables(final: Record<string, number>, summary: string[]): { html: string; toc: [string, string][] } {
  const keys = Object.keys(final);
  if (keys.length === 0) return { html: '<p class="muted">No final metrics in this result.</p>', toc: [] };
  const out: string[] = [];
  const contents: [string, string][] = [];
  for (const { group, names } of groupMetrics(keys, summary)) {
    const id = `g-${group.id}`;
    contents.push([id, group.title]);
    out.push(
      `<h3 id="${id}" class="group">${esc(group.title)}</h3>`,
      `<p class="question">${esc(group.question)}</p>`,
      table(
        [txt('metric'), txt('unit'), { html: 'value', num: true }, { html: 'raw', num: true }],
        names.map((k) => [
          { html: `<code>${esc(k)}</code>` },
          { html: esc(UNIT_NAMES[unitOf(k)]), cls: 'unit' },
          num(formatMetric(k, final[k]!)),
          { html: esc(String(final[k])), cls: 'raw' },
        ]),
      ),
    );
  }
  return { html: out.join('\n'), toc: contents };
}

/** Scenario events (syscalls at given times) and what they did. */
function eventTable(events: NonNullable<RunResult['events']>): string {
  const head: Cell[] = [
    { html: 'at' },
    { html: 'process' },
    { html: 'call' },
    { html: 'result' },
    { html: 'kernel time', num: true },
    { html: 'pages migrated', num: true },
    { html: 'reply / device counters' },
  ];
  const rows = events.map((e) => [
    { html: esc(formatMetric('at_ns', e.at_ns)) },
    { html: esc(e.process) },
    { html: esc(e.op) },
    { html: esc(e.errno ? `-1 ${e.errno}` : String(e.ret)) },
    { html: esc(formatMetric('call_ns', e.ns)), num: true },
    { html: esc(formatMetric('pages', e.pages_migrated)), num: true },
    { html: eventExtra(e) },
  ]);
  return table(head, rows);
}

const UNIT_NS: Record<string, number> = { ns: 1, us: 1e3, ms: 1e6, s: 1e9 };

/** A run's metric in the unit of a published figure (metrics in ns or bytes or counts). */
function inUnit(v: number, unit: string): number {
  return UNIT_NS[unit] ? v / UNIT_NS[unit] : v;
}

/** Whether a published figure belongs to a run: its id, or one of its swept values, equals `run`. */
function figureMatches(p: PublishedFigure, id: string, params: Record<string, unknown>): boolean {
  if (p.run === undefined) return true;
  return p.run === id || Object.values(params).some((v) => String(v) === p.run);
}

/** The scenario's notes and its published figures beside the runs' results. */
function notesAndPublished(
  info: ScenarioInfo,
  runs: { id: string; name?: string; params: Record<string, unknown>; final: Record<string, number> }[],
): string {
  const out: string[] = [];
  if (info.notes) out.push('<h2 id="notes">Notes</h2>', `<p class="desc">${esc(info.notes)}</p>`);
  const figs = info.published ?? [];
  if (figs.length) {
    const rows: Cell[][] = [];
    for (const p of figs)
      for (const r of runs.filter((x) => figureMatches(p, x.id, x.params))) {
        const v = r.final[p.metric];
        const model = v === undefined ? undefined : inUnit(v, p.unit);
        rows.push([
          txt(p.label),
          txt(r.name ?? r.id),
          { html: `<code>${esc(p.metric)}</code>` },
          num(`${groupThousands(Math.round(p.value * 100) / 100)} ${p.unit}`),
          num(model === undefined ? '—' : `${groupThousands(Math.round(model * 100) / 100)} ${p.unit}`),
          num(model === undefined || !p.value ? '—' : `${(model / p.value).toFixed(2)}×`),
          { html: `<a href="${esc(p.source)}">${esc(p.source)}</a>`, cls: 'src' },
        ]);
      }
    out.push(
      `<h2${info.notes ? '' : ' id="notes"'}>Published figures beside the results</h2>`,
      table(
        [
          txt('published'),
          txt('run'),
          txt('metric'),
          { html: 'published', num: true },
          { html: 'memtwin', num: true },
          { html: 'memtwin / published', num: true },
          txt('source'),
        ],
        rows,
        'wide',
      ),
    );
  }
  return out.join('\n');
}

/** Costs of the profile that were not measured on its machine (VM costs on a host without KVM). */
function notMeasuredNote(nm: Record<string, string> | undefined): string {
  if (!nm || !Object.keys(nm).length) return '';
  return `<p class="note">Costs not measured on the profile's machine (from publications, or derived from measured costs; see <code>profiles/default.json</code>): ${Object.entries(
    nm,
  )
    .map(([k, v]) => `<code>${esc(k)}</code> (${esc(v)})`)
    .join('; ')}.</p>`;
}

/** A VM event's monitor reply and device counters. */
function eventExtra(e: NonNullable<RunResult['events']>[number]): string {
  const parts: string[] = [];
  if (e.vm) parts.push(`<span class="muted">VM ${esc(e.vm)}${e.action ? `, ${esc(e.action)}` : ''}</span>`);
  if (e.reply !== undefined) parts.push(`<pre>${esc(e.reply)}</pre>`);
  if (e.detail) {
    const nz = Object.entries(e.detail).filter(([, v]) => v !== 0);
    if (nz.length) parts.push(nz.map(([k, v]) => `<code>${esc(k)}</code>=${esc(formatMetric(k, v))}`).join(', '));
  }
  return parts.join('<br>');
}

function threadTable(threads: ThreadResult[]): string {
  if (threads.length === 0) return '<p class="muted">No threads in this result.</p>';
  const head: Cell[] = [
    txt('process'),
    txt('thread'),
    { html: 'CPU', num: true },
    { html: 'node', num: true },
    { html: 'accesses', num: true },
    { html: 'reads', num: true },
    { html: 'writes', num: true },
    { html: 'faults', num: true },
    { html: 'fault time', num: true },
    { html: 'local', num: true },
    { html: 'remote', num: true },
    { html: 'remote %', num: true },
    { html: 'throughput', num: true },
    { html: 'huge %', num: true },
    { html: 'stall time', num: true },
    { html: 'CPU time', num: true },
    { html: 'run delay', num: true },
  ];
  const row = (t: Omit<ThreadResult, 'process' | 'thread' | 'cpu' | 'node'>, first: Cell[]): Cell[] => [
    ...first,
    num(formatValue(t.accesses, 'count')),
    num(formatValue(t.reads, 'count')),
    num(formatValue(t.writes, 'count')),
    num(formatValue(t.faults, 'count')),
    num(formatValue(t.fault_ns, 'ns'), `${t.fault_ns} ns`),
    num(formatValue(t.local_accesses, 'count')),
    num(formatValue(t.remote_accesses, 'count')),
    num(pct(t.remote_accesses, t.local_accesses + t.remote_accesses)),
    num(formatValue(t.throughput, 'rate'), `${t.throughput} accesses/s`),
    num(formatValue(t.huge_access_ratio, 'ratio')),
    num(
      formatValue(t.stall_ns, 'ns'),
      `${t.stalls} stalls, ${t.stall_ns} ns; on pages under migration: ${t.migration_waits ?? 0}, ${t.migration_wait_ns ?? 0} ns`,
    ),
    num(formatValue(t.cpu_ns, 'ns'), `${t.cpu_ns} ns on a CPU, ${t.nr_migrations} moves between CPUs`),
    num(formatValue(t.run_delay_ns, 'ns'), `${t.run_delay_ns} ns runnable, waiting for a CPU`),
  ];
  const rows = threads.map((t) => row(t, [txt(t.process), txt(t.thread), num(String(t.cpu)), num(String(t.node))]));
  if (threads.length > 1) {
    const sum = (f: (t: ThreadResult) => number): number => threads.reduce((a, t) => a + f(t), 0);
    const total = {
      accesses: sum((t) => t.accesses),
      reads: sum((t) => t.reads),
      writes: sum((t) => t.writes),
      faults: sum((t) => t.faults),
      fault_ns: sum((t) => t.fault_ns),
      local_accesses: sum((t) => t.local_accesses),
      remote_accesses: sum((t) => t.remote_accesses),
      throughput: sum((t) => t.throughput),
      huge_access_ratio:
        sum((t) => t.huge_access_ratio * t.accesses) /
        Math.max(
          1,
          sum((t) => t.accesses),
        ),
      stall_ns: sum((t) => t.stall_ns),
      stalls: sum((t) => t.stalls),
      migration_wait_ns: sum((t) => t.migration_wait_ns ?? 0),
      migration_waits: sum((t) => t.migration_waits ?? 0),
      cpu_ns: sum((t) => t.cpu_ns),
      run_delay_ns: sum((t) => t.run_delay_ns),
      nr_migrations: sum((t) => t.nr_migrations),
      remote_access_ratio:
        sum((t) => t.remote_accesses) /
        Math.max(
          1,
          sum((t) => t.accesses),
        ),
    };
    rows.push(row(total, [{ html: 'total', cls: 'total' }, { html: `${threads.length}&nbsp;threads` }, txt(''), txt('')]));
  }
  return table(head, rows, 'wide');
}

// ---------------------------------------------------------------- charts

interface ChartPlan {
  title: string;
  caption: string;
  unit: Unit;
  series: LineSeries[];
  /** Names looked for but absent. */
  missing: string[];
  legend?: boolean;
}

const allZero = (v: number[]): boolean => v.every((x) => x === 0 || !Number.isFinite(x));

/** Over-time overlays of memory pressure in a sweep: series (a `*` sums the VMs'), title, caption; all-zero series are left out, but OOM's. */
const PRESSURE_OVERLAYS: [string, string, string][] = [
  ['host.pgsteal_per_s', 'Reclaim over time', 'Pages the host reclaimed per second (pgsteal_kswapd + pgsteal_direct), one line per run.'],
  ['host.pswpout_per_s', 'Swap-out over time', 'Pages written to swap per second (pswpout), one line per run.'],
  ['host.pswpin_per_s', 'Swap-in over time', 'Pages read from swap per second (pswpin), one line per run.'],
  ['host.swap_used_bytes', 'Swap in use over time', 'Swap space in use on the host, one line per run.'],
  [
    'host.psi.some_pct',
    'Memory pressure (some) over time',
    'Share of each sample interval some task was stalled on memory, in percent (the host’s PSI, SOME).',
  ],
  [
    'host.psi.full_pct',
    'Memory pressure (full) over time',
    'Share of each sample interval all non-idle tasks were stalled on memory, in percent (the host’s PSI, FULL).',
  ],
  [
    'host.psi.some_avg10',
    'PSI memory some avg10 over time',
    'avg10 of /proc/pressure/memory’s some line, as the kernel prints it every 2 s.',
  ],
  [
    'host.oom_kill',
    'Host OOM kills over time',
    'Processes the host’s OOM killer killed (vmstat oom_kill), cumulative: a VMM killed is its whole VM.',
  ],
  [
    'vm.*.guest.oom_deflates',
    'Balloon deflations on OOM over time',
    'deflate-on-oom notifications (256 pages each), all VMs summed, cumulative.',
  ],
  [
    'vm.*.guest.oom_kills',
    'Guest OOM over time',
    'Guest allocations that failed after reclaim and the OOM notifiers (the OOM killer’s place), all VMs summed, cumulative.',
  ],
];

/** A series, or the sum of the series matching a `vm.*.` pattern. */
function sumColumns(series: SeriesData, key: string): number[] {
  if (!key.includes('*')) return column(series, key) ?? [];
  const re = new RegExp(`^${key.replace(/\./g, '\\.').replace('*', '[^.]+')}$`);
  const cols = Object.keys(series.metrics)
    .filter((k) => re.test(k))
    .map((k) => series.metrics[k]!);
  if (!cols.length) return [];
  return cols[0]!.map((_, i) => cols.reduce((a, c) => a + (c[i] ?? 0), 0));
}

function column(series: SeriesData, name: string): number[] | undefined {
  const v = series.metrics[name];
  return Array.isArray(v) && v.length > 0 ? v : undefined;
}

/** The chart's figure, or a note saying why it was skipped. */
function figure(id: string, plan: ChartPlan, markers: TimeMarker[] = []): string {
  const present = plan.series;
  if (present.length === 0) {
    const what = plan.missing.length ? plan.missing.map((m) => `<code>${esc(m)}</code>`).join(', ') : 'the series';
    return `<p class="note">Skipped chart <b>${esc(plan.title)}</b>: ${what} not recorded in this result.</p>`;
  }
  if (present.every((s) => allZero(s.values))) {
    return `<p class="note">Skipped chart <b>${esc(plan.title)}</b>: ${present.map((s) => `<code>${esc(s.name)}</code>`).join(', ')} ${present.length === 1 ? 'is' : 'are'} zero throughout.</p>`;
  }
  const log = lineWantsLog(present);
  const svg = lineChartSVG({
    id,
    series: present,
    unit: plan.unit,
    label: plan.title,
    markers,
    log,
    ...(plan.legend ? { legend: true } : {}),
  });
  const caption = `${plan.caption}${log ? ' Log scale: the lines span more than two decades (zeros not drawn).' : ''}`;
  const missing = plan.missing.length
    ? `<p class="note">Not recorded: ${plan.missing.map((m) => `<code>${esc(m)}</code>`).join(', ')}.</p>`
    : '';
  return `<figure>\n<h3>${esc(plan.title)}</h3>\n<figcaption>${esc(caption)}</figcaption>\n${svg}\n</figure>${missing}`;
}

function named(series: SeriesData, specs: [string, string][]): { series: LineSeries[]; missing: string[] } {
  const out: LineSeries[] = [];
  const missing: string[] = [];
  for (const [key, label] of specs) {
    const v = column(series, key);
    if (v) out.push({ name: label, t_ns: series.t_ns, values: v });
    else missing.push(key);
  }
  return { series: out, missing };
}

function runCharts(r: RunResult): string {
  const s = r.series ?? { t_ns: [], metrics: {} };
  const keys = Object.keys(s.metrics ?? {});
  const plans: ChartPlan[] = [];

  plans.push({
    title: 'Memory: RSS and AnonHugePages',
    caption: 'Resident memory of all scenario processes at each sample, and the part of it in transparent huge pages.',
    unit: 'bytes',
    legend: true,
    ...named(s, [
      ['rss_bytes', 'RSS'],
      ['anon_huge_bytes', 'AnonHugePages'],
    ]),
  });
  plans.push({
    title: 'Page faults per interval',
    caption: 'Page faults taken by all threads during each sample interval.',
    unit: 'count',
    ...named(s, [['faults', 'faults']]),
  });
  plans.push({
    title: 'Mean fault latency',
    caption: 'Mean simulated cost of a page fault during each sample interval.',
    unit: 'ns',
    ...named(s, [['fault_ns_mean', 'mean fault latency']]),
  });

  const tp = keys.filter((k) => k.startsWith('throughput.'));
  plans.push({
    title: 'Throughput per thread',
    caption: 'Memory accesses per second of virtual time, per thread (process/thread), during each interval.',
    unit: 'rate',
    series: tp.map((k) => ({ name: k.slice('throughput.'.length), t_ns: s.t_ns, values: s.metrics[k]! })),
    missing: tp.length ? [] : ['throughput.*'],
  });

  const nodeOf = (k: string): string => k.slice(k.indexOf('.') + 1);
  const nodes = [...new Set(keys.filter((k) => /^(local|remote)\./.test(k)).map(nodeOf))].sort((a, b) => {
    const na = Number(a);
    const nb = Number(b);
    return Number.isFinite(na) && Number.isFinite(nb) ? na - nb : a < b ? -1 : a > b ? 1 : 0;
  });
  const numa: LineSeries[] = [];
  const numaMissing: string[] = [];
  nodes.forEach((n, i) => {
    const color = PALETTE[i % PALETTE.length]!;
    for (const kind of ['local', 'remote'] as const) {
      const v = column(s, `${kind}.${n}`);
      if (v) numa.push({ name: `node ${n} ${kind}`, t_ns: s.t_ns, values: v, color, dashed: kind === 'remote' });
      else numaMissing.push(`${kind}.${n}`);
    }
  });
  plans.push({
    title: 'Local vs remote accesses per node',
    caption: 'Accesses during each interval to pages on each node, from a CPU on the same node (solid) or another node (dashed).',
    unit: 'count',
    series: numa,
    missing: nodes.length ? numaMissing : ['local.*', 'remote.*'],
  });

  const counters = named(s, [
    ['thp_fault_alloc', 'thp_fault_alloc'],
    ['thp_fault_fallback', 'thp_fault_fallback'],
    ['compact_stall', 'compact_stall'],
  ]);
  plans.push({
    title: 'THP and compaction counters',
    caption: 'Cumulative vmstat counters: huge pages allocated at fault, fallbacks to small pages, direct compaction stalls.',
    unit: 'count',
    legend: true,
    ...counters,
  });

  plans.push({
    title: 'Accesses through huge mappings',
    caption: 'Share of the accesses during each interval that a 2M or 1G mapping served (TLB reach).',
    unit: 'ratio',
    ...named(s, [['huge_access_ratio', 'huge mappings']]),
  });
  plans.push({
    title: 'Collapse CPU time',
    caption: 'Cumulative CPU time of khugepaged and of userspace collapse agents (scanning, copying, compacting).',
    unit: 'ns',
    legend: true,
    ...named(s, [
      ['khugepaged_cpu_ns', 'khugepaged'],
      ['agent_cpu_ns', 'agents'],
    ]),
  });
  plans.push({
    title: 'Stalls behind collapses and migrations',
    caption:
      'Time threads waited during each interval: for a collapse (touching a region being copied, or faulting in its VMA) or for a page under migration (its migration entry); the second line is the migration part.',
    unit: 'ns',
    ...named(s, [
      ['stall_ns', 'stall time'],
      ['migration_wait_ns', 'on pages under migration'],
    ]),
  });
  if (s.metrics['cpu_util'])
    plans.push({
      title: 'CPU use',
      caption:
        'Busy share of the host’s CPUs in each interval (workload threads, vCPUs, kernel threads, tools, QEMU’s threads). Each thread’s CPU time and run delay (runnable, waiting for a CPU) are in the threads table.',
      unit: 'ratio',
      ...named(s, [['cpu_util', 'CPU busy share']]),
    });

  const vmKeys = keys.filter((k) => k === 'host.free_bytes' || /^vm\..*_bytes$/.test(k));
  if (vmKeys.length)
    plans.push({
      title: 'VM and host memory',
      caption:
        'Free host memory, each VMM’s resident memory, the guest’s free memory, the balloon’s query-balloon size and the memory reported free (cumulative), at each sample.',
      unit: 'bytes',
      legend: true,
      series: vmKeys.map((k) => ({ name: k, t_ns: s.t_ns, values: s.metrics[k]! })),
      missing: [],
    });

  if (s.t_ns.length === 0) return '<p class="note">No time series in this result: all charts skipped.</p>';
  const markers = runMarkers(r);
  const charts = plans.map((p, i) => figure(`run-chart-${i}`, p, markers)).join('\n');
  return markers.length ? `${charts}\n<p class="muted">Dashed vertical lines mark the run’s events (see Events above).</p>` : charts;
}

// ---------------------------------------------------------------- run report

/** The run's warnings (what it could not do as asked, and why), first thing after its facts; `runId` labels a sweep's. */
function warningsList(warnings: { runId?: string; text: string }[]): string {
  if (!warnings.length) return '';
  const items = warnings.map((w) => `<li>${w.runId ? `<b>${esc(w.runId)}</b>: ` : ''}${esc(w.text)}</li>`);
  return `<h2>Warnings</h2>\n<ul class="warn">\n${items.join('\n')}\n</ul>`;
}

/** One self-contained HTML page for a scenario run. */
export function renderRunReport(r: RunResult): string {
  const title = `memtwin run report: ${r.scenario.name}${r.run.id && r.run.id !== 'base' ? ` [${r.run.id}]` : ''}`;
  const params = Object.entries(r.run.params ?? {});
  const finals = finalTables(r.final ?? {}, r.scenario.summary ?? []);
  const factRows: [string, string][] = [
    ['Scenario', `<b>${esc(r.scenario.name)}</b> <span class="muted mono">${esc(r.scenario.file)}</span>`],
    ['Run', `${esc(r.run.id)} (index ${r.run.index})`],
  ];
  if (params.length) factRows.push(['Parameters', params.map(([k, v]) => `<code>${esc(k)}</code> = ${esc(showParam(v))}`).join(', ')]);
  factRows.push(
    ['Seed', esc(String(r.seed))],
    ['Duration', `${esc(fmtDuration(r.duration_ns))} of virtual time`],
    ['Host', esc(hostSummary(r.host))],
    ['Cost profile', `${esc(r.profile.machine)}, measured ${esc(r.profile.date)}`],
    ['memtwin', esc(r.memtwin.version)],
  );

  const body = [
    `<h1>${esc(title)}</h1>`,
    r.scenario.description ? `<p class="desc">${esc(r.scenario.description)}</p>` : '',
    facts(factRows),
    warningsList((r.warnings ?? []).map((text) => ({ text }))),
    notMeasuredNote(r.profile.not_measured),
    toc([
      ...(r.scenario.notes || r.scenario.published?.length ? ([['notes', 'Notes']] as [string, string][]) : []),
      ['host', 'Host'],
      ['final', 'Final metrics'],
      ...finals.toc,
      ['threads', 'Threads'],
      ...(r.events?.length ? ([['events', 'Events']] as [string, string][]) : []),
      ['over-time', 'Over time'],
    ]),
    notesAndPublished(r.scenario, [{ id: r.run.id, params: r.run.params ?? {}, final: r.final ?? {} }]),
    '<h2 id="host">Host</h2>',
    hostTables(r.host),
    '<h2 id="final">Final metrics</h2>',
    finals.html,
    '<h2 id="threads">Threads</h2>',
    threadTable(r.threads ?? []),
    ...(r.events?.length ? ['<h2 id="events">Events</h2>', eventTable(r.events)] : []),
    '<h2 id="over-time">Over time</h2>',
    runCharts(r),
    '<h2>Scenario as run</h2>',
    `<details><summary>Inputs (sweep values substituted, defaults filled in)</summary>\n<pre>${esc(JSON.stringify(r.inputs, null, 2) ?? 'undefined')}</pre>\n</details>`,
    `<footer>Generated by memtwin ${esc(r.memtwin.version)}. All times are virtual (simulated) time.</footer>`,
  ]
    .filter(Boolean)
    .join('\n');
  return page(title, body);
}

// ---------------------------------------------------------------- sweep report

function sameValues(vs: number[]): boolean {
  return vs.every((v) => Object.is(v, vs[0]));
}

function sumThroughput(r: RunResult): number[] {
  const keys = Object.keys(r.series?.metrics ?? {}).filter((k) => k.startsWith('throughput.'));
  const n = r.series?.t_ns.length ?? 0;
  const out = new Array<number>(n).fill(0);
  for (const k of keys) {
    const col = r.series.metrics[k]!;
    for (let i = 0; i < n; i++) out[i]! += Number.isFinite(col[i]) ? col[i]! : 0;
  }
  return keys.length ? out : [];
}

/**
 * A run's name from its swept values (`pages=1G, preempt=on`), the run id
 * when it has none; names that would repeat get the run id after them.
 */
export function runNames(entries: { id: string; params?: Record<string, unknown> }[]): string[] {
  const names = entries.map((e) => {
    const params = Object.entries(e.params ?? {});
    return params.length ? params.map(([k, v]) => `${k}=${showParam(v)}`).join(', ') : e.id;
  });
  return names.map((n, i) => (names.indexOf(n) !== names.lastIndexOf(n) ? `${n} (${entries[i]!.id})` : n));
}

/** QEMU's query-migrate times in ms beside memtwin's in ns: the ns twin is charted, the ms one only tabled. */
function chartedTwin(name: string, all: Set<string>): boolean {
  const m = /^(.*\.migration\.)(total-time|downtime)$/.exec(name);
  return m !== null && all.has(`${m[1]}${m[2] === 'total-time' ? 'total_time_ns' : 'downtime_ns'}`);
}

/** The table of contents: links to the report's sections. */
function toc(items: [string, string][]): string {
  return `<nav class="toc"><b>Contents</b> ${items.map(([id, title]) => `<a href="#${esc(id)}">${esc(title)}</a>`).join(' · ')}</nav>`;
}

const VM_METRIC = /^(vm|process)\.([^.]+)\.(.+)$/;
const vmOf = (k: string): string => VM_METRIC.exec(k)?.[2] ?? k;

/** Values within 1 % of each other (a sentinel apart): worth a table row, not a chart. */
export function nearlySame(vs: number[]): boolean {
  const xs = vs.filter((v) => Number.isFinite(v));
  if (xs.length !== vs.length || xs.some((v) => v === -1)) return false;
  const max = Math.max(...xs.map(Math.abs));
  return max === 0 || (Math.max(...xs) - Math.min(...xs)) / max < 0.01;
}

/**
 * Charts for these metrics: one per metric, but the same metric of several
 * VMs (`vm.NAME.migration.ram.mbps`) in one chart (`vm.*.migration.ram.mbps`)
 * with a bar per VM in each run's row.
 */
export function perVmCharts(keys: string[]): { title: string; keys: string[] }[] {
  const out: { title: string; keys: string[] }[] = [];
  const byPattern = new Map<string, { title: string; keys: string[] }>();
  for (const k of keys) {
    const m = VM_METRIC.exec(k);
    if (!m) {
      out.push({ title: k, keys: [k] });
      continue;
    }
    const title = `${m[1]}.*.${m[3]}`;
    const c = byPattern.get(title);
    if (c) c.keys.push(k);
    else {
      const chart = { title, keys: [k] };
      byPattern.set(title, chart);
      out.push(chart);
    }
  }
  // A metric of a single VM keeps its own name.
  return out.map((c) => (c.keys.length === 1 ? { title: c.keys[0]!, keys: c.keys } : c));
}

/** Metrics (rows, each with its unit) across the runs (columns); a metric the same in every run has a grey name. */
function metricsTable(entries: SweepResult['runs'], names: string[], keys: string[]): string {
  const rows = keys.map((k) => {
    const vs = entries.map((e) => e.final?.[k] ?? NaN);
    const same = entries.length > 1 && sameValues(vs);
    return [
      { html: `<code>${breakable(k)}</code>`, cls: same ? 'same' : '' },
      { html: esc(UNIT_NAMES[unitOf(k)]), cls: 'unit' },
      ...vs.map((v) => (Number.isNaN(v) ? num('—') : num(formatMetric(k, v), String(v)))),
    ];
  });
  const head: Cell[] = [txt('metric'), txt('unit'), ...names.map((n) => ({ html: breakable(n), num: true }))];
  return table(head, rows, 'wide metrics');
}

/**
 * A section per question (placement, migration, THP...): every metric of
 * it across the runs with its unit, and a bar chart per metric that differs
 * between runs.
 */
function sweepGroups(
  entries: SweepResult['runs'],
  names: string[],
  colors: string[],
  metricKeys: string[],
  summary: string[],
): { html: string; toc: [string, string][] } {
  const all = new Set(metricKeys);
  const out: string[] = [];
  const contents: [string, string][] = [];
  let chart = 0;
  for (const { group, names: keys } of groupMetrics(metricKeys, summary)) {
    const id = `g-${group.id}`;
    contents.push([id, group.title]);
    const differing = entries.length > 1 ? keys.filter((k) => !sameValues(entries.map((e) => e.final?.[k] ?? NaN))) : keys;
    const same = keys.filter((k) => !differing.includes(k));
    const charted = differing.filter((k) => !chartedTwin(k, all) && !nearlySame(entries.map((e) => e.final?.[k] ?? NaN)));
    const bars = perVmCharts(charted).map(({ title, keys: ks }) => {
      const values = (k: string): number[] => entries.map((e) => e.final?.[k] ?? NaN);
      const svg = runBarsSVG({
        id: `sweep-bar-${chart++}`,
        runs: names,
        colors,
        ...(ks.length > 1 ? { groups: ks.map((k) => ({ name: vmOf(k), values: values(k) })) } : { values: values(ks[0]!) }),
        unit: unitOf(ks[0]!),
        label: title,
      });
      return `<figure>\n<h3><code>${esc(title)}</code></h3>\n${svg}\n</figure>`;
    });
    // The metrics that differ, then (folded) those the same in every run: no chart for them.
    const folded = same.length
      ? `<details><summary>${same.length === keys.length ? 'All' : same.length} metric${same.length === 1 ? '' : 's'} of this section ${same.length === 1 ? 'is' : 'are'} the same in every run (no chart)</summary>\n${metricsTable(entries, names, same)}\n</details>`
      : '';
    out.push(
      `<section id="${id}">`,
      `<h2>${esc(group.title)}</h2>`,
      `<p class="question">${esc(group.question)}</p>`,
      differing.length ? metricsTable(entries, names, differing) : '',
      folded,
      differing.length > charted.length
        ? `<p class="muted">No chart for ${differing.length - charted.length} metric${differing.length - charted.length === 1 ? '' : 's'} above: QEMU’s ms twin of a ns metric, or values within 1 % of each other.</p>`
        : '',
      bars.length ? `<div class="grid2">\n${bars.join('\n')}\n</div>` : '',
      '</section>',
    );
  }
  return { html: out.filter(Boolean).join('\n'), toc: contents };
}

/** A run's moments worth marking on its over-time charts: its events, and its migrations' switchover and completion. */
export function runMarkers(r: RunResult): { t_ns: number; label: string }[] {
  const out: { t_ns: number; label: string }[] = [];
  const f = r.final ?? {};
  for (const e of r.events ?? []) {
    out.push({ t_ns: e.at_ns, label: [e.op, e.action, e.vm ? `(${e.vm})` : ''].filter(Boolean).join(' ') });
    if (e.op !== 'migrate' || !e.vm) continue;
    const pre = `vm.${e.vm}.migration.`;
    const total = f[`${pre}total_time_ns`];
    const resume = f[`${pre}postcopy.resume_ns`];
    const downtime = f[`${pre}downtime_ns`];
    // Postcopy: the guest runs on the destination from resume_ns; precopy: it stops for the downtime before completion.
    if (resume !== undefined && resume > 0) out.push({ t_ns: e.at_ns + resume, label: `switchover (${e.vm})` });
    else if (total !== undefined && downtime !== undefined) out.push({ t_ns: e.at_ns + total - downtime, label: `switchover (${e.vm})` });
    if (total !== undefined && total >= 0) out.push({ t_ns: e.at_ns + total, label: `completed (${e.vm})` });
  }
  return out.filter((m) => Number.isFinite(m.t_ns) && m.t_ns >= 0 && m.t_ns <= r.duration_ns);
}

/** The markers of several runs: a moment all runs share in grey, a run's own in its colour. */
function sweepMarkers(runs: RunResult[], colors: string[]): TimeMarker[] {
  const per = runs.map(runMarkers);
  const key = (m: { t_ns: number; label: string }): string => `${m.t_ns}\u0000${m.label}`;
  const shared = new Set(per[0]?.map(key).filter((k) => per.every((ms) => ms.some((m) => key(m) === k))));
  const out: TimeMarker[] = [...(per[0] ?? [])].filter((m) => shared.has(key(m)));
  per.forEach((ms, i) => {
    for (const m of ms) if (!shared.has(key(m))) out.push({ ...m, color: colors[i] });
  });
  return out;
}

/** Over-time overlays of a sweep: one line per run, with the runs' event markers. */
function sweepOverTime(matched: RunResult[], names: string[], colors: string[], hostNodes: number): string {
  const out: string[] = [];
  const markers = sweepMarkers(matched, colors);
  const lines = (values: (r: RunResult) => number[]): LineSeries[] =>
    matched
      .map((r, i) => ({ name: names[i]!, t_ns: r.series.t_ns, values: values(r), color: colors[i] }))
      .filter((x) => x.values.length > 0);
  const overlay = (id: string, title: string, caption: string, unit: Unit, series: LineSeries[], keepZero = false): void => {
    if (!series.length || (!keepZero && series.every((x) => allZero(x.values)))) return;
    const log = lineWantsLog(series);
    const cap = `${caption}${log ? ' Log scale: the values span more than two decades (zeros not drawn).' : ''}`;
    out.push(
      `<figure>\n<h3>${esc(title)}</h3>\n<figcaption>${esc(cap)}</figcaption>\n${lineChartSVG({ id, series, unit, label: title, markers, log })}\n</figure>`,
    );
  };
  const tp = lines(sumThroughput);
  if (!tp.length || tp.every((x) => allZero(x.values)))
    out.push('<p class="note">Skipped chart <b>Total throughput over time</b>: no <code>throughput.*</code> series in the runs.</p>');
  overlay('sweep-tp', 'Total throughput over time', 'Sum of all threads’ accesses per second, one line per run.', 'rate', tp);
  overlay(
    'sweep-remote',
    'Remote share over time',
    'Share of each interval’s accesses that went to a page on another NUMA node, one line per run.',
    'ratio',
    lines((r) => column(r.series, 'remote_access_ratio') ?? []),
  );
  overlay(
    'sweep-huge',
    'Accesses through huge mappings over time',
    'Share of each interval’s accesses a 2M or 1G mapping served (TLB reach), one line per run.',
    'ratio',
    lines((r) => column(r.series, 'huge_access_ratio') ?? []),
  );
  overlay(
    'sweep-mig',
    'Migration stream over time',
    'Bytes per second the VMs’ migration streams carried in each interval (all VMs summed), one line per run.',
    'bytes_per_s',
    lines((r) => sumColumns(r.series, 'vm.*.migration.main_bytes_per_s')),
  );
  overlay(
    'sweep-rss',
    'RSS over time',
    'Resident memory of all scenario processes, one line per run.',
    'bytes',
    lines((r) => column(r.series, 'rss_bytes') ?? []),
  );
  overlay(
    'sweep-vmrss',
    'VMM resident memory over time',
    'Resident memory of the VMMs (all VMs summed), one line per run.',
    'bytes',
    lines((r) => sumColumns(r.series, 'vm.*.rss_bytes')),
  );
  overlay(
    'sweep-balloon',
    'Balloon size over time',
    'query-balloon’s actual (guest memory the guests keep, all VMs summed), one line per run.',
    'bytes',
    lines((r) => sumColumns(r.series, 'vm.*.balloon_actual_bytes')),
  );
  overlay(
    'sweep-free',
    'Free host memory over time',
    'Host memory free at each sample, one line per run.',
    'bytes',
    lines((r) => column(r.series, 'host.free_bytes') ?? []),
  );
  // Memory pressure (scenarios with a swap file): swap traffic, PSI, the guests' OOM path; OOM drawn even at 0 (the answer).
  for (const [key, title, caption] of PRESSURE_OVERLAYS)
    overlay(
      `sweep-${key.replace(/[^a-z0-9]+/gi, '-')}`,
      title,
      caption,
      unitOf(key.replace('*', 'x')),
      lines((r) => sumColumns(r.series, key)),
      key.includes('oom'),
    );

  // numastat over time: each node's memory in use, one line per run (runs record it on hosts of two or more nodes).
  for (let n = 0; n < hostNodes; n++)
    overlay(
      `sweep-node${n}-used`,
      `Memory in use on node ${n} over time`,
      `Host frames not free on NUMA node ${n} at each sample (numastat's MemUsed), one line per run.`,
      'bytes',
      lines((r) => column(r.series, `node${n}.used_bytes`) ?? []),
    );

  // What the runs' data does not have, said rather than left out silently.
  const missing: string[] = [];
  if (hostNodes > 1 && !matched.some((r) => column(r.series, 'node0.used_bytes')))
    missing.push(
      'memory per NUMA node over time (numastat): these runs were made before memtwin recorded <code>node<i>N</i>.used_bytes</code>',
    );
  if (matched.some((r) => Object.keys(r.final ?? {}).some((k) => /\.migration\.ram\.remaining$/.test(k))))
    missing.push(
      'migration progress over time (query-migrate’s <code>ram.remaining</code> and <code>ram.transferred</code> at each sample): runs record them at the end only',
    );
  if (missing.length) out.push(`<p class="note">Not in the runs’ data, so not drawn: ${missing.join('; ')}.</p>`);
  if (markers.length)
    out.push(
      '<p class="muted">Dashed vertical lines mark events: grey where every run has it at the same moment, in the run’s colour otherwise.</p>',
    );
  return out.join('\n');
}

/**
 * One self-contained HTML page for a sweep. `runs` are the full results of
 * the sweep's runs, when available (matched by run id): they add over-time
 * overlays and per-thread comparisons.
 */
export function renderSweepReport(s: SweepResult, runs: RunResult[] = []): string {
  const title = `memtwin sweep report: ${s.scenario.name}`;
  const entries = s.runs ?? [];
  const names = runNames(entries);
  const colors = entries.map((_, i) => PALETTE[i % PALETTE.length]!);

  // The scenario's summary metrics first (Runs table and sections), then the others.
  const summary: string[] = [...(s.scenario.summary ?? [])].filter((k) => entries.some((e) => e.final?.[k] !== undefined));
  const metricKeys = [...summary];
  for (const e of entries) for (const k of Object.keys(e.final ?? {})) if (!metricKeys.includes(k)) metricKeys.push(k);
  const paramKeys: string[] = [];
  for (const e of entries) for (const k of Object.keys(e.params ?? {})) if (!paramKeys.includes(k)) paramKeys.push(k);

  const swept = s.swept.length
    ? table(
        [txt('parameter'), txt('path'), txt('values')],
        s.swept.map((p) => [
          { html: `<b>${esc(p.label)}</b>` },
          { html: `<code>${esc(p.path.join('.'))}</code>` },
          txt(p.values.map(showParam).join(', ')),
        ]),
      )
    : '<p class="muted">No swept parameters.</p>';

  // Runs by name, their swept values and the scenario's summary metrics; every metric is in the sections below.
  // A summary too wide for the table's columns (more than 8 with the parameters) becomes a table of its own, a row per metric.
  const summaryApart = paramKeys.length + summary.length > 8 && entries.length <= 10;
  const inline = summaryApart ? [] : summary;
  const runTable = entries.length
    ? table(
        [
          { html: '#', num: true },
          txt('run'),
          ...paramKeys.map((k) => ({ html: breakable(k) })),
          ...inline.map((k) => ({ html: `${breakable(k)}<br><span class="muted">${esc(UNIT_NAMES[unitOf(k)])}</span>`, num: true })),
        ],
        entries.map((e, i) => [
          num(String(e.index)),
          {
            html: `<span class="swatch" style="background:${colors[i]}"></span><a href="${esc(encodeURI(`${e.dir}/report.html`))}">${esc(names[i]!)}</a>`,
          },
          ...paramKeys.map((k) => txt(showParam(e.params?.[k]))),
          ...inline.map((k) => {
            const v = e.final?.[k];
            return v === undefined ? num('—') : num(formatMetric(k, v), String(v));
          }),
        ]),
        'wide',
      )
    : '<p class="muted">No runs in this sweep.</p>';

  const groups = sweepGroups(entries, names, colors, metricKeys, summary);

  // Over-time overlays from the full results.
  const byId = new Map(runs.map((r) => [r.run.id, r]));
  const present = entries.map((e, i) => ({ r: byId.get(e.id), name: names[i]!, color: colors[i]! })).filter((x) => x.r !== undefined);
  const matched = present.map((x) => x.r!);
  const overlays: string[] = [];
  if (runs.length === 0) {
    overlays.push('<p class="note">Full run results were not given: no over-time comparison.</p>');
  } else if (matched.length === 0) {
    overlays.push('<p class="note">None of the given run results match this sweep’s run ids: no over-time comparison.</p>');
  } else {
    overlays.push(
      sweepOverTime(
        matched,
        present.map((x) => x.name),
        present.map((x) => x.color),
        Math.max(...matched.map((r) => r.host.nodes.length)),
      ),
    );
    // Per-thread throughput, grouped by run.
    const threadKeys: string[] = [];
    for (const r of matched)
      for (const t of r.threads ?? []) if (!threadKeys.includes(`${t.process}/${t.thread}`)) threadKeys.push(`${t.process}/${t.thread}`);
    if (threadKeys.length && matched.length > 1) {
      overlays.push(
        `<figure>\n<h3>Throughput per thread, by run</h3>\n<figcaption>Accesses per second of virtual time over the whole run.</figcaption>\n${barChartSVG(
          {
            id: 'sweep-threads',
            categories: threadKeys,
            groups: matched.map((r, i) => ({
              name: present[i]!.name,
              values: threadKeys.map((k) => r.threads.find((t) => `${t.process}/${t.thread}` === k)?.throughput ?? NaN),
              color: present[i]!.color,
            })),
            unit: 'rate',
            label: 'Throughput per thread, by run',
          },
        )}\n</figure>`,
      );
    }
    const unmatched = entries.filter((e) => !byId.has(e.id)).map((e) => e.id);
    if (unmatched.length)
      overlays.push(`<p class="note">No full result for run${unmatched.length === 1 ? '' : 's'} ${esc(unmatched.join(', '))}.</p>`);
  }

  const notes = notesAndPublished(
    s.scenario,
    entries.map((e, i) => ({ id: e.id, name: names[i], params: e.params ?? {}, final: e.final ?? {} })),
  );
  const contents: [string, string][] = [
    ...(notes ? ([['notes', 'Notes']] as [string, string][]) : []),
    ['runs', 'Runs'],
    ...groups.toc,
    ['over-time', 'Over time'],
  ];
  const body = [
    `<h1>${esc(title)}</h1>`,
    s.scenario.description ? `<p class="desc">${esc(s.scenario.description)}</p>` : '',
    facts([
      ['Scenario', `<b>${esc(s.scenario.name)}</b> <span class="muted mono">${esc(s.scenario.file)}</span>`],
      ['Runs', String(entries.length)],
      ['memtwin', esc(s.memtwin.version)],
    ]),
    toc(contents),
    warningsList(runs.flatMap((r) => (r.warnings ?? []).map((text) => ({ runId: r.run.id, text })))),
    notes,
    '<h2>Swept parameters</h2>',
    swept,
    '<h2 id="runs">Runs</h2>',
    runTable,
    summaryApart ? `<h3 class="group">The scenario’s summary metrics</h3>\n${metricsTable(entries, names, summary)}` : '',
    entries.length <= 1 ? '<p class="note">Only one run: nothing to compare.</p>' : '',
    groups.html,
    '<h2 id="over-time">Over time</h2>',
    overlays.join('\n'),
    `<footer>Generated by memtwin ${esc(s.memtwin.version)}. Each run’s own report is linked from the Runs table. All times are virtual (simulated) time.</footer>`,
  ]
    .filter(Boolean)
    .join('\n');
  return page(title, body);
}
