/**
 * Self-contained HTML reports of a scenario run and of a sweep: inline CSS,
 * inline SVG charts, no scripts, no external URLs or fonts, so a report opens
 * offline. Rendering is deterministic: the same result gives the same bytes.
 */
import type { PublishedFigure, RunResult, ScenarioInfo, SeriesData, SweepResult, ThreadResult } from '../scenario/result.ts';
import { barChartSVG, lineChartSVG, PALETTE, type LineSeries } from './charts.ts';
import { formatMetric, formatValue, groupThousands, unitOf, type Unit } from './units.ts';

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
  return cls === 'wide' ? `<div class="scroll">${t}</div>` : t;
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

function finalTable(final: Record<string, number>): string {
  const keys = Object.keys(final);
  if (keys.length === 0) return '<p class="muted">No final metrics in this result.</p>';
  return table(
    [txt('metric'), { html: 'value', num: true }, { html: 'raw', num: true }],
    keys.map((k) => [{ html: `<code>${esc(k)}</code>` }, num(formatMetric(k, final[k]!)), { html: esc(String(final[k])), cls: 'raw' }]),
  );
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
  runs: { id: string; params: Record<string, unknown>; final: Record<string, number> }[],
): string {
  const out: string[] = [];
  if (info.notes) out.push('<h2>Notes</h2>', `<p class="desc">${esc(info.notes)}</p>`);
  const figs = info.published ?? [];
  if (figs.length) {
    const rows: Cell[][] = [];
    for (const p of figs)
      for (const r of runs.filter((x) => figureMatches(p, x.id, x.params))) {
        const v = r.final[p.metric];
        const model = v === undefined ? undefined : inUnit(v, p.unit);
        rows.push([
          txt(p.label),
          txt(r.id),
          { html: `<code>${esc(p.metric)}</code>` },
          num(`${groupThousands(Math.round(p.value * 100) / 100)} ${p.unit}`),
          num(model === undefined ? '—' : `${groupThousands(Math.round(model * 100) / 100)} ${p.unit}`),
          num(model === undefined || !p.value ? '—' : `${(model / p.value).toFixed(2)}×`),
          { html: `<a href="${esc(p.source)}">${esc(p.source)}</a>` },
        ]);
      }
    out.push(
      '<h2>Published figures beside the results</h2>',
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
function figure(id: string, plan: ChartPlan): string {
  const present = plan.series;
  if (present.length === 0) {
    const what = plan.missing.length ? plan.missing.map((m) => `<code>${esc(m)}</code>`).join(', ') : 'the series';
    return `<p class="note">Skipped chart <b>${esc(plan.title)}</b>: ${what} not recorded in this result.</p>`;
  }
  if (present.every((s) => allZero(s.values))) {
    return `<p class="note">Skipped chart <b>${esc(plan.title)}</b>: ${present.map((s) => `<code>${esc(s.name)}</code>`).join(', ')} ${present.length === 1 ? 'is' : 'are'} zero throughout.</p>`;
  }
  const svg = lineChartSVG({ id, series: present, unit: plan.unit, label: plan.title, ...(plan.legend ? { legend: true } : {}) });
  const missing = plan.missing.length
    ? `<p class="note">Not recorded: ${plan.missing.map((m) => `<code>${esc(m)}</code>`).join(', ')}.</p>`
    : '';
  return `<figure>\n<h3>${esc(plan.title)}</h3>\n<figcaption>${esc(plan.caption)}</figcaption>\n${svg}\n</figure>${missing}`;
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
  return plans.map((p, i) => figure(`run-chart-${i}`, p)).join('\n');
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
    notesAndPublished(r.scenario, [{ id: r.run.id, params: r.run.params ?? {}, final: r.final ?? {} }]),
    '<h2>Host</h2>',
    hostTables(r.host),
    '<h2>Final metrics</h2>',
    finalTable(r.final ?? {}),
    '<h2>Threads</h2>',
    threadTable(r.threads ?? []),
    ...(r.events?.length ? ['<h2>Events</h2>', eventTable(r.events)] : []),
    '<h2>Over time</h2>',
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
 * One self-contained HTML page for a sweep. `runs` are the full results of
 * the sweep's runs, when available (matched by run id): they add over-time
 * overlays and per-thread comparisons.
 */
export function renderSweepReport(s: SweepResult, runs: RunResult[] = []): string {
  const title = `memtwin sweep report: ${s.scenario.name}`;
  const entries = s.runs ?? [];
  const ids = entries.map((e) => e.id);

  // The scenario's summary metrics first (table columns and comparison charts), then the others.
  const metricKeys: string[] = [...(s.scenario.summary ?? [])].filter((k) => entries.some((e) => e.final?.[k] !== undefined));
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

  const runTable = entries.length
    ? table(
        [
          { html: '#', num: true },
          txt('run'),
          ...paramKeys.map((k) => ({ html: breakable(k) })),
          ...metricKeys.map((k) => ({ html: breakable(k), num: true })),
        ],
        entries.map((e) => [
          num(String(e.index)),
          { html: `<a href="${esc(encodeURI(`${e.dir}/report.html`))}">${esc(e.id)}</a>` },
          ...paramKeys.map((k) => txt(showParam(e.params?.[k]))),
          ...metricKeys.map((k) => {
            const v = e.final?.[k];
            return v === undefined ? num('—') : num(formatMetric(k, v), String(v));
          }),
        ]),
        'wide',
      )
    : '<p class="muted">No runs in this sweep.</p>';

  // Comparison bars for every metric that differs between runs.
  const differing: string[] = [];
  const identical: string[] = [];
  for (const k of metricKeys) {
    const vs = entries.map((e) => e.final?.[k] ?? NaN);
    (entries.length > 1 && !sameValues(vs) ? differing : identical).push(k);
  }
  // Label bars by run id when the ids fit under them, else by run number (the # column of the table).
  const barWidth = 540 - 108;
  const byNumber = ids.some((id) => id.length * 7 > barWidth / Math.max(1, ids.length));
  const categories = byNumber ? entries.map((e) => `#${e.index}`) : ids;
  const bars = differing.map((k, i) => {
    const svg = barChartSVG({
      id: `sweep-bar-${i}`,
      categories,
      groups: [{ name: k, values: entries.map((e) => e.final?.[k] ?? NaN), color: PALETTE[0] }],
      unit: unitOf(k),
      label: k,
      width: 540,
      height: 260,
    });
    return `<figure>\n<h3><code>${esc(k)}</code></h3>\n${svg}\n</figure>`;
  });
  const compare = [
    bars.length && byNumber ? '<p class="muted">Bars are labelled by run number (the # column above).</p>' : '',
    bars.length ? `<div class="grid2">\n${bars.join('\n')}\n</div>` : '',
    identical.length && entries.length > 1
      ? `<p class="note">Same in every run (no chart): ${identical.map((k) => `<code>${esc(k)}</code>`).join(', ')}.</p>`
      : '',
    entries.length <= 1 ? '<p class="note">Only one run: nothing to compare.</p>' : '',
  ]
    .filter(Boolean)
    .join('\n');

  // Over-time overlays from the full results.
  const byId = new Map(runs.map((r) => [r.run.id, r]));
  const matched = entries.map((e) => byId.get(e.id)).filter((r): r is RunResult => r !== undefined);
  const overlays: string[] = [];
  if (runs.length === 0) {
    overlays.push('<p class="note">Full run results were not given: no over-time comparison.</p>');
  } else if (matched.length === 0) {
    overlays.push('<p class="note">None of the given run results match this sweep’s run ids: no over-time comparison.</p>');
  } else {
    const tp = matched.map((r, i) => ({
      name: r.run.id,
      t_ns: r.series.t_ns,
      values: sumThroughput(r),
      color: PALETTE[i % PALETTE.length],
    }));
    const tpPresent = tp.filter((x) => x.values.length > 0);
    if (tpPresent.length === 0 || tpPresent.every((x) => allZero(x.values))) {
      overlays.push(
        '<p class="note">Skipped chart <b>Total throughput over time</b>: no <code>throughput.*</code> series in the runs.</p>',
      );
    } else {
      overlays.push(
        `<figure>\n<h3>Total throughput over time</h3>\n<figcaption>Sum of all threads’ accesses per second, one line per run.</figcaption>\n${lineChartSVG({ id: 'sweep-tp', series: tpPresent, unit: 'rate', label: 'Total throughput over time' })}\n</figure>`,
      );
    }
    const rss = matched
      .map((r, i) => ({
        name: r.run.id,
        t_ns: r.series.t_ns,
        values: column(r.series, 'rss_bytes') ?? [],
        color: PALETTE[i % PALETTE.length],
      }))
      .filter((x) => x.values.length > 0);
    if (rss.length && !rss.every((x) => allZero(x.values))) {
      overlays.push(
        `<figure>\n<h3>RSS over time</h3>\n<figcaption>Resident memory of all scenario processes, one line per run.</figcaption>\n${lineChartSVG({ id: 'sweep-rss', series: rss, unit: 'bytes', label: 'RSS over time' })}\n</figure>`,
      );
    }
    const free = matched
      .map((r, i) => ({
        name: r.run.id,
        t_ns: r.series.t_ns,
        values: column(r.series, 'host.free_bytes') ?? [],
        color: PALETTE[i % PALETTE.length],
      }))
      .filter((x) => x.values.length > 0);
    if (free.length && !free.every((x) => allZero(x.values))) {
      overlays.push(
        `<figure>\n<h3>Free host memory over time</h3>\n<figcaption>Host memory free at each sample, one line per run.</figcaption>\n${lineChartSVG({ id: 'sweep-free', series: free, unit: 'bytes', label: 'Free host memory over time' })}\n</figure>`,
      );
    }
    // Memory pressure (scenarios with a swap file): swap traffic, PSI, the guests' OOM path, one line per run.
    for (const [key, title, caption] of PRESSURE_OVERLAYS) {
      const lines = matched
        .map((r, i) => ({ name: r.run.id, t_ns: r.series.t_ns, values: sumColumns(r.series, key), color: PALETTE[i % PALETTE.length] }))
        .filter((x) => x.values.length > 0);
      // OOM is drawn even when nothing was killed: a flat line at 0 is the answer.
      if (lines.length && (key.includes('oom') || !lines.every((x) => allZero(x.values))))
        overlays.push(
          `<figure>\n<h3>${esc(title)}</h3>\n<figcaption>${esc(caption)}</figcaption>\n${lineChartSVG({ id: `sweep-${key.replace(/[^a-z0-9]+/gi, '-')}`, series: lines, unit: unitOf(key.replace('*', 'x')), label: title })}\n</figure>`,
        );
    }
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
              name: r.run.id,
              values: threadKeys.map((k) => r.threads.find((t) => `${t.process}/${t.thread}` === k)?.throughput ?? NaN),
              color: PALETTE[i % PALETTE.length],
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

  const body = [
    `<h1>${esc(title)}</h1>`,
    s.scenario.description ? `<p class="desc">${esc(s.scenario.description)}</p>` : '',
    facts([
      ['Scenario', `<b>${esc(s.scenario.name)}</b> <span class="muted mono">${esc(s.scenario.file)}</span>`],
      ['Runs', String(entries.length)],
      ['memtwin', esc(s.memtwin.version)],
    ]),
    warningsList(runs.flatMap((r) => (r.warnings ?? []).map((text) => ({ runId: r.run.id, text })))),
    notesAndPublished(
      s.scenario,
      entries.map((e) => ({ id: e.id, params: e.params ?? {}, final: e.final ?? {} })),
    ),
    '<h2>Swept parameters</h2>',
    swept,
    '<h2>Runs</h2>',
    runTable,
    '<h2>Comparison</h2>',
    compare,
    '<h2>Over time</h2>',
    overlays.join('\n'),
    `<footer>Generated by memtwin ${esc(s.memtwin.version)}. Each run’s own report is linked from the table above.</footer>`,
  ]
    .filter(Boolean)
    .join('\n');
  return page(title, body);
}
