// Run: inputs, summary metrics and every series of one run, as interactive
// charts grouped by question, with zoom, hover, toggles and a shared time cursor.
import { api, cursor, el, fail, fmt, fmtNs, main, nav, params, runOf, runLabel, table, timeChart, fill } from './common.js';
import { GROUP_ORDER, chartKey, groupOf } from './groups.js';

/** Event markers: the scenario's events (migrate, mbind, ...) at their times. */
function markersOf(r) {
  return (r.events ?? []).slice(0, 40).map((e) => ({ t_ns: e.at_ns, name: e.op }));
}

async function draw() {
  const id = params.get('id');
  const { run } = await runOf(id);
  nav('run', run);
  const r = await api(`/api/result?id=${encodeURIComponent(id)}`);
  const m = main();
  const sum = (r.scenario.summary ?? []).filter((k) => r.final[k] !== undefined);
  const finalRows = Object.keys(r.final)
    .sort((a, b) => (sum.includes(b) ? 1 : 0) - (sum.includes(a) ? 1 : 0))
    .map((k) =>
      el(
        'tr',
        { class: sum.includes(k) ? 'diff' : undefined },
        el('td', { class: 'params' }, k),
        el('td', { class: 'num' }, fmt(k, r.final[k])),
      ),
    );
  const inputs = r.inputs ?? {};
  fill(
    m,
    el('h1', {}, `${r.scenario.name} · ${runLabel(run)}`),
    r.scenario.description ? el('p', { class: 'muted' }, r.scenario.description) : null,
    el(
      'p',
      { class: 'params' },
      `run ${r.run.id} · seed ${r.seed} · ${fmtNs(r.duration_ns)} of virtual time · host ${r.host.name} (${r.host.nodes.length} nodes) · memtwin ${r.memtwin.version} · ${run.dir}`,
    ),
    r.warnings?.length
      ? el(
          'div',
          { class: 'callout' },
          el('b', {}, 'Warnings'),
          el(
            'ul',
            {},
            r.warnings.map((w) => el('li', {}, w)),
          ),
        )
      : null,
    el(
      'div',
      { class: 'row' },
      el('div', {}, el('h3', {}, 'Summary'), table(['metric', { text: 'value', num: true }], finalRows.slice(0, Math.max(sum.length, 12)))),
      el(
        'details',
        {},
        el('summary', {}, `All ${finalRows.length} final metrics`),
        el(
          'div',
          { class: 'scroll', style: 'max-height:420px;overflow:auto' },
          table(
            ['metric', { text: 'value', num: true }],
            finalRows.map((tr) => tr.cloneNode(true)),
          ),
        ),
      ),
      el(
        'details',
        {},
        el('summary', {}, 'Inputs (the scenario as run)'),
        el('pre', { class: 'params', style: 'max-height:420px;overflow:auto' }, JSON.stringify(inputs, null, 1)),
      ),
    ),
  );
  const series = r.series;
  const t = series.t_ns;
  const cursorLabel = el('b', { 'data-testid': 'cursor-time' }, cursor.t === null ? 'click a chart' : fmtNs(cursor.t));
  cursor.on((x) => (cursorLabel.textContent = fmtNs(x)));
  const slider = el('input', { type: 'range', min: 0, max: Math.max(0, t.length - 1), value: 0, 'aria-label': 'time cursor' });
  slider.addEventListener('input', () => cursor.set(t[Number(slider.value)]));
  cursor.on((x) => {
    let i = 0;
    while (i + 1 < t.length && t[i + 1] <= x) i++;
    slider.value = String(i);
  });
  m.append(
    el(
      'div',
      { class: 'cursorbar' },
      el('span', {}, 'Time cursor'),
      slider,
      cursorLabel,
      el('span', { class: 'muted' }, 'wheel or drag to zoom · click to place the cursor'),
    ),
  );
  const byKey = new Map();
  for (const name of Object.keys(series.metrics)) {
    const k = chartKey(name);
    byKey.set(k, [...(byKey.get(k) ?? []), name]);
  }
  const groups = new Map();
  for (const [k, names] of byKey) {
    const g = groupOf(k);
    groups.set(g, [...(groups.get(g) ?? []), [k, names]]);
  }
  const markers = markersOf(r);
  for (const g of GROUP_ORDER) {
    const list = groups.get(g);
    if (!list) continue;
    const box = el('div', { class: 'charts' });
    m.append(el('h2', {}, g, el('span', { class: 'muted' }, ` (${list.length} charts)`)), box);
    for (const [k, names] of list)
      timeChart(box, {
        title: k,
        metric: names[0],
        series: names.map((n) => ({ name: n, t_ns: t, values: series.metrics[n] })),
        markers,
      });
  }
}

draw().catch(fail);
