// What every page of `memtwin view` shares: the API, the navigation bar,
// units (the static report's, src/report/units.ts), charts and the time cursor.
import * as echarts from '/vendor/echarts.js';
import { formatValue, scaleFor, formatTick, sentinelWord, unitOf } from '/static/units.js';

export { echarts };

export async function api(path) {
  const r = await fetch(path);
  if (!r.ok) {
    let msg = `${r.status}`;
    try {
      msg = (await r.json()).error ?? msg;
    } catch {
      /* not JSON */
    }
    throw new Error(msg);
  }
  return r.json();
}

export const params = new URLSearchParams(location.search);

export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'html') e.innerHTML = v;
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) if (c !== undefined && c !== null && c !== false) e.append(c instanceof Node ? c : String(c));
  return e;
}

export const main = () => document.getElementById('main');

/** replaceChildren without the nulls and falses of conditional children. */
export function fill(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== undefined && c !== null && c !== false));
  return node;
}

export function fail(e) {
  fill(main(), el('p', { class: 'callout' }, `Cannot show this page: ${e.message}`));
}

/** The navigation bar; with a run, the links to its pages. */
export function nav(active, run) {
  const n = document.getElementById('nav');
  const q = run ? `?id=${encodeURIComponent(run.id)}${params.get('t') ? `&t=${params.get('t')}` : ''}` : '';
  const link = (href, text, key) => el('a', { href, class: active === key ? 'active' : undefined }, text);
  fill(
    n,
    el('span', { class: 'brand' }, 'memtwin view'),
    link('/', 'Runs', 'runs'),
    run ? link(`/run${q}`, 'Charts', 'run') : null,
    run ? link(`/phys${q}`, 'Physical memory', 'phys') : null,
    run ? link(`/space${q}`, 'Address spaces', 'space') : null,
    run ? link(`/migration${q}`, 'Migration', 'migration') : null,
    run ? el('span', { class: 'where' }, `${run.scenario} · ${run.run}`) : null,
  );
}

/** A run's name: its sweep parameters, or its id. */
export function runLabel(r) {
  const p = Object.entries(r.params ?? {});
  return p.length ? p.map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : v}`).join(', ') : r.run;
}

/** How to show a metric: its unit from the static report's table (units.ts: QEMU's ms, bytes, pages/s and Mbit/s too). */
export function metricUnit(name) {
  return { unit: unitOf(name), mult: 1 };
}

/** A metric's value with its unit; a word for a sentinel ("never" for the -1 of a time that did not happen). */
export function fmt(name, v) {
  if (v === undefined || v === null) return '—';
  const unit = unitOf(name);
  return sentinelWord(unit, v) ?? formatValue(v, unit);
}

export const fmtNs = (ns) => formatValue(ns, 'ns');
export const fmtBytes = (b) => formatValue(b, 'bytes');
export const hex = (n) => '0x' + Math.round(n).toString(16);

/** Do the positive values span `ratio` (two decades) or more? A log axis shows them better: 4K's ms beside 1G's s. */
export function spansDecades(values, ratio = 100) {
  const pos = values.filter((v) => v > 0);
  if (pos.length < 2) return false;
  return Math.max(...pos) / Math.min(...pos) >= ratio;
}

/** An axis label formatter in one scale for values up to `max`. */
export function axisFormatter(unit, max) {
  const s = scaleFor(unit, max);
  return (v) => formatTick(v / s.div, s);
}

/**
 * The shared time cursor: every chart of a page shows it as a vertical
 * line; clicking a chart moves it; pages listen to follow it (the maps pick
 * their snapshot). Kept in the URL (t, ns) so links carry it.
 */
export const cursor = {
  t: params.has('t') ? Number(params.get('t')) : null,
  listeners: [],
  set(t, from) {
    this.t = t;
    const u = new URL(location.href);
    u.searchParams.set('t', String(Math.round(t)));
    history.replaceState(null, '', u);
    for (const f of this.listeners) if (f !== from) f(t);
  },
  on(f) {
    this.listeners.push(f);
  },
};

/** Charts of a page: zoom and hover are shared through one ECharts group. */
const GROUP = 'memtwin';
const charts = [];
window.__charts = charts; // for the browser tests

/**
 * A time-series chart: x in ms of virtual time, one line per series, hover
 * values with units, legend toggles, zoom (wheel, drag, slider), the time
 * cursor. `series`: [{name, t_ns, values}]; `metric`: the name whose unit applies.
 */
export function timeChart(container, { title, metric, series, log, height, type = 'line', markers = [], xmax }) {
  const { unit, mult } = metricUnit(metric);
  const all = series.flatMap((s) => s.values.map((v) => v * mult));
  const max = Math.max(0, ...all.map(Math.abs));
  // Values are drawn in one display unit, so the axis's nice steps are nice in that unit (1, 2, 5 MiB, not 2^20).
  const sc = unit === 'ratio' ? { div: 0.01, suffix: ' %' } : scaleFor(unit, max);
  // Series get a log axis only at three decades: zeros (gaps on a log axis) are common in them.
  let useLog = log ?? (spansDecades(all, 1000) && all.every((v) => v >= 0));
  const card = el('div', { class: 'card', 'data-chart': title });
  const logBtn = el('button', { class: 'small', title: 'logarithmic y axis' }, 'log');
  const head = el('div', { class: 'title' }, el('b', {}, title), el('span', {}, logBtn));
  const div = el('div', { class: 'chart', style: height ? `height:${height}px` : undefined });
  card.append(head, div);
  container.append(card);
  const chart = echarts.init(div, null, { renderer: 'canvas' });
  chart.group = GROUP;
  const fmtV = (v) => (v === null || v === undefined ? '—' : formatValue(v * sc.div, unit));
  const tmax = xmax ?? Math.max(0, ...series.map((s) => s.t_ns[s.t_ns.length - 1] ?? 0));
  const option = () => ({
    animation: false,
    grid: { left: 70, right: 16, top: 28, bottom: 52 },
    legend: { type: 'scroll', top: 0, textStyle: { fontSize: 11 } },
    tooltip: {
      trigger: 'axis',
      axisPointer: { type: 'line' },
      formatter: (items) => {
        const arr = Array.isArray(items) ? items : [items];
        const t = arr[0]?.value?.[0] ?? arr[0]?.axisValue;
        return (
          `t = ${formatValue(Number(t) * 1e6, 'ns')}<br>` +
          arr.map((i) => `${i.marker}${i.seriesName}: <b>${fmtV(Array.isArray(i.value) ? i.value[1] : i.value)}</b>`).join('<br>')
        );
      },
    },
    xAxis: { type: 'value', name: 'ms', nameGap: 4, min: 0, max: tmax / 1e6, axisLabel: { hideOverlap: true } },
    yAxis: {
      type: useLog ? 'log' : 'value',
      // A log axis spans several units: each tick in its own (1 ms, 10 ms, 1 s); a linear one in one unit.
      axisLabel: {
        formatter: (v) => (useLog ? formatValue(v * sc.div, unit) : unit === 'ratio' ? `${Number(v.toPrecision(6))} %` : formatTick(v, sc)),
      },
    },
    dataZoom: [
      { type: 'inside', xAxisIndex: 0, filterMode: 'none' },
      { type: 'slider', xAxisIndex: 0, height: 16, bottom: 4, filterMode: 'none' },
    ],
    series: series.map((s, i) => ({
      name: s.name,
      type,
      showSymbol: s.t_ns.length < 40,
      sampling: 'lttb',
      step: s.step,
      data: s.t_ns.map((t, j) => {
        const v = s.values[j];
        return [t / 1e6, v === null || (useLog && v <= 0) ? null : (v * mult) / sc.div];
      }),
      markLine:
        i === 0
          ? {
              symbol: 'none',
              silent: true,
              data: [
                ...markers.map((m) => ({
                  xAxis: m.t_ns / 1e6,
                  name: m.name,
                  label: { formatter: m.name, fontSize: 10 },
                  lineStyle: { color: '#888', type: 'dashed' },
                })),
                ...(cursor.t === null ? [] : [cursorMark(cursor.t)]),
              ],
            }
          : undefined,
    })),
  });
  chart.setOption(option());
  chart.__markers = markers;
  logBtn.addEventListener('click', () => {
    useLog = !useLog;
    chart.setOption(option(), { replaceMerge: ['series', 'yAxis'] });
  });
  chart.getZr().on('click', (e) => {
    const p = chart.convertFromPixel({ gridIndex: 0 }, [e.offsetX, e.offsetY]);
    if (p && Number.isFinite(p[0])) cursor.set(p[0] * 1e6);
  });
  charts.push(chart);
  echarts.connect(GROUP);
  return chart;
}

const cursorMark = (t) => ({
  xAxis: t / 1e6,
  name: 'cursor',
  label: { show: false },
  lineStyle: { color: '#c62828', width: 1.5, type: 'solid' },
});

/** Move every time chart's cursor line (kept beside its event markers). */
export function drawCursor(t) {
  for (const c of charts) {
    if (!c.__markers) continue;
    const data = [
      ...c.__markers.map((m) => ({
        xAxis: m.t_ns / 1e6,
        name: m.name,
        label: { formatter: m.name, fontSize: 10 },
        lineStyle: { color: '#888', type: 'dashed' },
      })),
      cursorMark(t),
    ];
    c.setOption({ series: [{ markLine: { symbol: 'none', silent: true, data } }] });
  }
}
cursor.on(drawCursor);

/** Drop the charts drawn inside `container` (before it is drawn again). */
export function disposeIn(container) {
  for (let i = charts.length - 1; i >= 0; i--)
    if (container.contains(charts[i].getDom())) {
      charts[i].dispose();
      charts.splice(i, 1);
    }
  container.replaceChildren();
}

/** Resize charts with the window. */
window.addEventListener('resize', () => charts.forEach((c) => c.resize()));

/** A floating tooltip for canvas maps. */
export function tip() {
  let t = document.getElementById('tip');
  if (!t) {
    t = el('div', { id: 'tip' });
    document.body.append(t);
  }
  return {
    show(x, y, text) {
      t.textContent = text;
      t.style.display = 'block';
      t.style.left = `${x + 14}px`;
      t.style.top = `${y + 10}px`;
    },
    hide() {
      t.style.display = 'none';
    },
  };
}

/** The snapshot index for time t: the last snapshot at or before it (the first when before all). */
export function snapshotAt(tns, t) {
  if (t === null || t === undefined) return tns.length - 1;
  let i = 0;
  while (i + 1 < tns.length && tns[i + 1] <= t) i++;
  return i;
}

/**
 * The time slider of the map pages: one position per snapshot; moving it
 * moves the shared cursor (and the URL's t).
 */
export function snapshotSlider(tns, onPick) {
  let idx = snapshotAt(tns, cursor.t);
  const label = el('b', { 'data-testid': 'snapshot-time' });
  const input = el('input', { type: 'range', min: 0, max: tns.length - 1, value: idx, 'aria-label': 'snapshot time' });
  const show = () => {
    label.textContent = `t = ${fmtNs(tns[idx])} (${idx + 1} of ${tns.length})`;
  };
  input.addEventListener('input', () => {
    idx = Number(input.value);
    show();
    cursor.set(tns[idx], follow);
    onPick(idx);
  });
  const follow = (t) => {
    idx = snapshotAt(tns, t);
    input.value = String(idx);
    show();
    onPick(idx);
  };
  cursor.on(follow);
  show();
  return { bar: el('div', { class: 'cursorbar' }, el('span', {}, 'Snapshot'), input, label), index: () => idx };
}

export async function runOf(id) {
  const ix = await api('/api/index');
  const run = ix.runs.find((r) => r.id === id);
  if (!run) throw new Error(`no run ${id} under ${ix.roots.join(', ')}`);
  return { ix, run };
}

export function table(headers, rows, opts = {}) {
  return el(
    'table',
    opts.attrs ?? {},
    el(
      'thead',
      {},
      el(
        'tr',
        {},
        headers.map((h) => el('th', { class: h.num ? 'num' : undefined }, h.text ?? h)),
      ),
    ),
    el('tbody', {}, rows),
  );
}

/**
 * The start of a page over one run's memory maps (phys, space): its title, and its snapshots.json; null (and a
 * note saying how to record them) when the run has no maps.
 */
export async function mapsPage(page, title) {
  const id = params.get('id');
  const { run } = await runOf(id);
  nav(page, run);
  const m = main();
  fill(m, el('h1', {}, `${title} · ${run.scenario} · ${runLabel(run)}`));
  const s = run.snapshots ? await api(`/api/snapshots?id=${encodeURIComponent(id)}`) : null;
  if (!s?.maps) {
    m.append(
      el(
        'p',
        { class: 'callout info' },
        'No memory maps in this run: record them with memtwin run --snapshots (or sample: { snapshots: true } in the scenario).',
      ),
    );
    return null;
  }
  return { id, run, m, s };
}
