// Compare: two or more runs side by side: their inputs (differences marked),
// final metrics, migrations (the longest vCPU stall of each), and every series
// overlaid, one line per run.
import {
  api,
  echarts,
  el,
  fail,
  fmt,
  fmtNs,
  main,
  nav,
  params,
  runLabel,
  spansDecades,
  table,
  timeChart,
  axisFormatter,
  fill,
} from './common.js';
import { chartKey, groupOf } from './groups.js';

function flatten(o, prefix = '', out = {}) {
  // Arrays by index too, so a difference is named down to its field (vms.0.memdevs.0.type).
  if (o && typeof o === 'object' && Object.keys(o).length) {
    for (const [k, v] of Object.entries(o)) flatten(v, prefix ? `${prefix}.${k}` : k, out);
  } else out[prefix] = JSON.stringify(o);
  return out;
}

async function draw() {
  const ids = params.getAll('id');
  const ix = await api('/api/index');
  nav('compare');
  const runs = ids.map((id) => ix.runs.find((r) => r.id === id));
  if (runs.length < 2 || runs.some((r) => !r)) throw new Error(`pick two or more runs on the Runs page (got ${ids.join(', ') || 'none'})`);
  const results = await Promise.all(ids.map((id) => api(`/api/result?id=${encodeURIComponent(id)}`)));
  const snaps = await Promise.all(
    runs.map((r) => (r.snapshots ? api(`/api/snapshots?id=${encodeURIComponent(r.id)}`).catch(() => null) : null)),
  );
  const names = runs.map((r) => runLabel(r));
  const m = main();
  fill(
    m,
    el('h1', {}, `Compare ${runs.length} runs`),
    el('p', { class: 'params' }, names.map((n, i) => `${i + 1}: ${runs[i].scenario} · ${n}`).join('  ·  ')),
  );

  // Migrations first: the question people compare runs for most.
  const migs = snaps.map((s) => s?.migrations ?? []);
  if (migs.some((x) => x.length)) {
    m.append(el('h2', {}, 'Migrations: the longest vCPU stall of each run'));
    const longest = migs.map(
      (ms) => ms.flatMap((mg) => (mg.postcopy?.longest?.[0] ? [{ mg, l: mg.postcopy.longest[0] }] : [])).sort((a, b) => b.l.ns - a.l.ns)[0],
    );
    const worst = Math.max(...longest.map((x) => x?.l.ns ?? 0));
    const rows = runs.map((r, i) => {
      const x = longest[i];
      const mg = migs[i][0];
      const q = `?id=${encodeURIComponent(r.id)}${x ? `&t=${Math.round(x.l.at_ns)}` : ''}`;
      return el(
        'tr',
        { class: x && x.l.ns === worst ? 'hot' : undefined, 'data-compare-run': r.id },
        el('td', {}, el('a', { href: `/migration${q}` }, names[i])),
        el('td', {}, mg ? mg.status : '—'),
        el('td', { class: 'num', 'data-testid': 'longest-stall' }, x ? fmtNs(x.l.ns) : '—'),
        el('td', { class: 'num' }, x ? `vCPU ${x.l.vcpu}` : '—'),
        el('td', { class: 'num' }, x ? fmtNs(x.l.at_ns) : '—'),
        el('td', { class: 'num' }, mg?.postcopy ? fmtNs(mg.postcopy.latency.mean_ns) : '—'),
        el('td', { class: 'num' }, mg?.postcopy ? String(mg.postcopy.faults) : '—'),
        el('td', { class: 'num' }, mg?.total_time_ns !== undefined ? fmtNs(mg.total_time_ns) : '—'),
        el('td', { class: 'num' }, mg?.downtime_ns !== undefined ? fmtNs(mg.downtime_ns) : '—'),
      );
    });
    m.append(
      table(
        [
          'run',
          'status',
          { text: 'longest stall', num: true },
          { text: 'on', num: true },
          { text: 'blocked at', num: true },
          { text: 'mean fault', num: true },
          { text: 'faults', num: true },
          { text: 'total time', num: true },
          { text: 'downtime', num: true },
        ],
        rows,
      ),
    );
    // Each run's longest stall per vCPU, side by side (log axis when they span decades).
    const vcpus = Math.max(0, ...migs.map((ms) => ms[0]?.postcopy?.longest_by_vcpu?.length ?? 0));
    if (vcpus) {
      const vals = migs.map((ms) =>
        Array.from({ length: vcpus }, (_, v) => ms[0]?.postcopy?.longest_by_vcpu?.find((x) => x.vcpu === v)?.ns ?? 0),
      );
      const log = spansDecades(vals.flat());
      const div = el('div', { class: 'chart', style: 'height:260px;max-width:900px', 'data-chart': 'longest-by-vcpu' });
      m.append(el('h3', {}, 'Longest stall per vCPU'), div);
      const c = echarts.init(div);
      c.setOption({
        animation: false,
        legend: { top: 0 },
        grid: { left: 80, right: 20, top: 30, bottom: 30 },
        tooltip: { trigger: 'axis', valueFormatter: (v) => fmtNs(v) },
        xAxis: { type: 'category', data: Array.from({ length: vcpus }, (_, v) => `vCPU ${v}`) },
        yAxis: {
          type: log ? 'log' : 'value',
          axisLabel: { formatter: log ? (v) => fmtNs(v) : axisFormatter('ns', Math.max(...vals.flat())) },
        },
        series: vals.map((v, i) => ({
          name: names[i],
          type: 'bar',
          data: v.map((x) => (log && x <= 0 ? null : x)),
          label: { show: true, position: 'top', formatter: (p) => fmtNs(p.value), fontSize: 10 },
        })),
      });
      window.__charts.push(c);
    }
  }

  // Inputs: every field of the scenario as run, rows that differ first.
  const flat = results.map((r) => flatten(r.inputs ?? {}));
  const keys = [...new Set(flat.flatMap((f) => Object.keys(f)))].filter((k) => !k.startsWith('digests'));
  const differ = keys.filter((k) => new Set(flat.map((f) => f[k])).size > 1);
  const same = keys.filter((k) => !differ.includes(k));
  const inRow = (k, d) =>
    el(
      'tr',
      { class: d ? 'diff' : undefined },
      el('td', { class: 'params' }, k),
      flat.map((f) => el('td', { class: 'params' }, f[k] ?? '—')),
    );
  m.append(
    el('h2', {}, 'Inputs'),
    el(
      'div',
      { class: 'scroll' },
      table(
        ['field', ...names],
        [
          ...differ.map((k) => inRow(k, true)),
          el('tr', {}, el('td', { colspan: runs.length + 1, class: 'muted' }, `${same.length} fields the same in every run`)),
        ],
      ),
    ),
    el(
      'details',
      {},
      el('summary', {}, 'fields that are the same'),
      el(
        'div',
        { class: 'scroll' },
        table(
          ['field', ...names],
          same.map((k) => inRow(k, false)),
        ),
      ),
    ),
  );

  // Final metrics: summary first, then those that differ; relative change against the first run.
  const summary = results[0].scenario.summary ?? [];
  const mkeys = [...new Set(results.flatMap((r) => Object.keys(r.final)))];
  const diffM = mkeys.filter((k) => new Set(results.map((r) => r.final[k])).size > 1);
  const ordered = [...summary.filter((k) => mkeys.includes(k)), ...diffM.filter((k) => !summary.includes(k))];
  const rel = (a, b) =>
    a === undefined || b === undefined || a === 0 ? '' : ` (${b >= a ? '+' : ''}${Math.round(((b - a) / Math.abs(a)) * 1000) / 10}%)`;
  m.append(
    el('h2', {}, 'Final metrics'),
    el(
      'div',
      { class: 'scroll' },
      table(
        ['metric', ...names.map((n) => ({ text: n, num: true }))],
        ordered.map((k) =>
          el(
            'tr',
            { class: summary.includes(k) ? 'diff' : undefined },
            el('td', { class: 'params' }, k),
            results.map((r, i) => el('td', { class: 'num' }, fmt(k, r.final[k]) + (i ? rel(results[0].final[k], r.final[k]) : ''))),
          ),
        ),
      ),
    ),
  );

  // Series, one chart per series name, one line per run; grouped by question.
  const snames = [...new Set(results.flatMap((r) => Object.keys(r.series.metrics)))];
  const groups = new Map();
  for (const n of snames) {
    const g = groupOf(chartKey(n));
    groups.set(g, [...(groups.get(g) ?? []), n]);
  }
  m.append(el('h2', {}, 'Series over time'));
  for (const [g, list] of [...groups].sort((a, b) => a[0].localeCompare(b[0]))) {
    const box = el('div', { class: 'charts' });
    const d = el(
      'details',
      { open: g.startsWith('Migration') || groups.size === 1 ? true : undefined },
      el('summary', {}, `${g} (${list.length})`),
      box,
    );
    m.append(d);
    const drawCharts = () => {
      if (box.childElementCount) return;
      for (const n of list)
        timeChart(box, {
          title: n,
          metric: n,
          series: results.flatMap((r, i) =>
            r.series.metrics[n] ? [{ name: names[i], t_ns: r.series.t_ns, values: r.series.metrics[n] }] : [],
          ),
        });
    };
    if (d.open) drawCharts();
    d.addEventListener('toggle', () => d.open && drawCharts());
  }
}

draw().catch(fail);
