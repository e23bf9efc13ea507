// Physical memory map: per node, at any snapshot: every pageblock (2 MiB) by
// what it holds and its migratetype, free memory by order (buddyinfo), the
// fragmentation index, THPs, hugetlb pools, zero and kernel pages; over time.
import { cursor, disposeIn, echarts, el, fail, fill, fmtBytes, mapsPage, params, snapshotSlider, table, timeChart, tip } from './common.js';

export const KIND_COLORS = {
  pristine: '#eef1f5',
  free: '#cfe8cf',
  '4k': '#4f7bd9',
  thp: '#2e9e5b',
  hugetlb: '#8e44ad',
  'hugetlb-free': '#d7bde2',
  kernel: '#c62828',
};
const KIND_TEXT = {
  pristine: 'never used (free)',
  free: 'free',
  '4k': '4K pages (shade: share in use)',
  thp: 'THP (2M)',
  hugetlb: 'hugetlb page in use',
  'hugetlb-free': 'hugetlb page free in its pool',
  kernel: 'kernel memory (page tables)',
};
const KINDS = Object.keys(KIND_COLORS);
const MT = ['Unmovable', 'Movable'];
/** The map is at most this many cells wide; more pageblocks than cells are aggregated (the most common kind). */
const COLS = 256;
const MAX_CELLS = COLS * 192;

/** The node's pageblocks from the run-length map: kind, migratetype, used frames. */
function expand(map) {
  const kind = [];
  const mt = [];
  const used = [];
  for (let i = 0; i < map.length; i += 4)
    for (let j = 0; j < map[i]; j++) {
      kind.push(map[i + 1]);
      mt.push(map[i + 2]);
      used.push(map[i + 3]);
    }
  return { kind, mt, used };
}

function shade(hex, f) {
  const n = parseInt(hex.slice(1), 16);
  const mix = (c) => Math.round(255 - (255 - c) * (0.35 + 0.65 * f));
  return `rgb(${mix(n >> 16)},${mix((n >> 8) & 255)},${mix(n & 255)})`;
}

function drawMap(canvas, snap, node, nodeInfo) {
  const { kind, mt, used } = expand(snap.map);
  const per = Math.max(1, Math.ceil(kind.length / MAX_CELLS));
  const cells = Math.ceil(kind.length / per);
  const rows = Math.ceil(cells / COLS);
  const px = 5;
  canvas.width = COLS * px;
  canvas.height = rows * px;
  const g = canvas.getContext('2d');
  const cellKinds = [];
  const counts = new Int32Array(KINDS.length);
  for (let c = 0; c < cells; c++) {
    counts.fill(0);
    let u = 0;
    let movable = 0;
    const hi = Math.min(kind.length, (c + 1) * per);
    for (let i = c * per; i < hi; i++) {
      counts[kind[i]]++;
      u += used[i];
      movable += mt[i];
    }
    let best = 0;
    for (let k = 1; k < counts.length; k++) if (counts[k] >= counts[best]) best = k;
    const name = KINDS[best];
    const frac = u / (per * 512);
    g.fillStyle = name === '4k' ? shade(KIND_COLORS['4k'], frac) : KIND_COLORS[name];
    g.fillRect((c % COLS) * px, Math.floor(c / COLS) * px, px, px);
    // Unmovable pageblocks get a dark corner, as /proc/pagetypeinfo would tell them apart.
    if (movable < (hi - c * per) / 2) {
      g.fillStyle = '#000';
      g.fillRect((c % COLS) * px, Math.floor(c / COLS) * px, Math.max(1, px / 3), Math.max(1, px / 3));
    }
    cellKinds.push({ name, u, per, movable });
  }
  const t = tip();
  canvas.onmousemove = (e) => {
    const r = canvas.getBoundingClientRect();
    const c = Math.floor((e.clientY - r.top) / px) * COLS + Math.floor((e.clientX - r.left) / px);
    const k = cellKinds[c];
    if (!k) return t.hide();
    const pfn = nodeInfo.start_pfn + c * per * 512;
    t.show(
      e.clientX,
      e.clientY,
      `node ${node} pfn 0x${pfn.toString(16)}–0x${(pfn + per * 512 - 1).toString(16)} (${fmtBytes(per * 2 ** 21)})\n` +
        `${KIND_TEXT[k.name]}\n${k.u} of ${per * 512} frames in use\n${per === 1 ? `pageblock ${MT[k.movable ? 1 : 0]}` : `${k.movable} of ${per} pageblocks Movable`}`,
    );
  };
  canvas.onmouseleave = () => t.hide();
  canvas.dataset.pageblocks = String(kind.length);
  canvas.dataset.perCell = String(per);
  canvas.dataset.kinds = JSON.stringify(Object.fromEntries(KINDS.map((k, i) => [k, kind.filter((x) => x === i).length])));
  return per;
}

/** A chart by order (0..MAX_PAGE_ORDER), made once; update(snap) redraws it for another snapshot. */
function orderChart(container, title, key) {
  const card = el('div', { class: 'card', 'data-chart': title }, el('div', { class: 'title' }, el('b', {}, title)));
  const d = el('div', { class: 'chart' });
  card.append(d);
  container.append(card);
  const c = echarts.init(d);
  window.__charts.push(c);
  const axis = (snap) => ({
    type: 'category',
    data: snap.buddyinfo.map((_, o) => `${o} (${fmtBytes(4096 * 2 ** o)})`),
    axisLabel: { rotate: 30, fontSize: 10 },
  });
  return {
    update(snap) {
      if (key === 'buddy')
        c.setOption({
          animation: false,
          legend: { top: 0 },
          grid: { left: 60, right: 10, top: 28, bottom: 50 },
          tooltip: { trigger: 'axis' },
          xAxis: axis(snap),
          yAxis: { type: 'value', name: 'free blocks' },
          series: [
            ...MT.map((m) => ({ name: m, type: 'bar', stack: 'f', data: snap.free_by_migratetype[m] })),
            {
              name: 'never used',
              type: 'bar',
              stack: 'f',
              data: snap.buddyinfo.map((n, o) => n - MT.reduce((a, m) => a + snap.free_by_migratetype[m][o], 0)),
            },
          ],
        });
      else
        c.setOption({
          animation: false,
          legend: { top: 0 },
          grid: { left: 60, right: 10, top: 28, bottom: 50 },
          tooltip: { trigger: 'axis', valueFormatter: (v) => (v / 1000).toFixed(3) },
          xAxis: axis(snap),
          yAxis: { type: 'value', min: -1000, max: 1000, axisLabel: { formatter: (v) => (v / 1000).toFixed(1) } },
          series: [
            { name: 'extfrag_index', type: 'line', data: snap.extfrag_index },
            { name: 'unusable_index', type: 'line', data: snap.unusable_index },
          ],
        });
    },
  };
}

async function draw() {
  const page = await mapsPage('phys', 'Physical memory');
  if (!page) return;
  const { m, s } = page;
  let node = Number(params.get('node') ?? s.nodes[0].id);
  const nodeSel = el(
    'select',
    { 'aria-label': 'node' },
    s.nodes.map((n) => el('option', { value: n.id, selected: n.id === node || undefined }, `node ${n.id} (${fmtBytes(n.pages * 4096)})`)),
  );
  const { bar, index } = snapshotSlider(s.t_ns, () => render());
  const canvas = el('canvas', { class: 'map', 'data-testid': 'phys-map' });
  const legend = el(
    'div',
    { class: 'legend' },
    KINDS.map((k) => el('span', {}, el('i', { style: `background:${KIND_COLORS[k]}` }), KIND_TEXT[k])),
    el('span', {}, el('i', { style: 'background:#000' }), 'corner: Unmovable pageblock'),
  );
  const info = el('div', {});
  const mapNote = el('p', { class: 'muted' });
  const at = el('div', { class: 'charts' });
  m.append(el('div', { class: 'row' }, el('label', {}, 'Node ', nodeSel)), bar, legend, mapNote, canvas, info, at);
  nodeSel.addEventListener('change', () => {
    node = Number(nodeSel.value);
    render();
  });
  const over = el('div', { class: 'charts' });
  m.append(el('h2', {}, 'Over time'), over);
  const drawOver = () => {
    disposeIn(over);
    const ni = s.nodes.findIndex((n) => n.id === node);
    const per = (f) => s.phys.map((p) => f(p[ni]));
    timeChart(over, {
      title: `node ${node}: free memory by order (buddyinfo, bytes)`,
      metric: 'free_bytes',
      series: s.phys[0][ni].buddyinfo.map((_, o) => ({
        name: `order ${o}`,
        t_ns: s.t_ns,
        values: per((n) => n.buddyinfo[o] * 4096 * 2 ** o),
      })),
    });
    timeChart(over, {
      title: `node ${node}: fragmentation index, order 9 (extfrag -1: a 2 MiB block is free; towards 1: fragmented)`,
      metric: 'index',
      series: [
        { name: 'extfrag_index order 9', t_ns: s.t_ns, values: per((n) => n.extfrag_index[9] / 1000) },
        { name: 'unusable_index order 9', t_ns: s.t_ns, values: per((n) => n.unusable_index[9] / 1000) },
      ],
      log: false,
    });
    timeChart(over, {
      title: `node ${node}: what the frames hold (bytes)`,
      metric: 'x_bytes',
      series: [
        { name: 'in use', t_ns: s.t_ns, values: per((n) => n.used_pages * 4096) },
        { name: 'THP', t_ns: s.t_ns, values: per((n) => n.thp * 2 ** 21) },
        { name: 'zero pages', t_ns: s.t_ns, values: per((n) => n.zero_pages * 4096) },
        { name: 'kernel', t_ns: s.t_ns, values: per((n) => n.kernel_pages * 4096) },
        ...s.hugepage_sizes.map((hs, i) => ({
          name: `hugetlb ${hs} in use`,
          t_ns: s.t_ns,
          values: per((n) => (n.hugetlb[i].nr - n.hugetlb[i].free) * (hs.endsWith('G') ? 2 ** 30 : 2 ** 20) * Number.parseInt(hs)),
        })),
      ],
    });
  };
  function render() {
    const t0 = performance.now();
    const i = index();
    const ni = s.nodes.findIndex((n) => n.id === node);
    const snap = s.phys[i][ni];
    const per = drawMap(canvas, snap, node, s.nodes[ni]);
    mapNote.textContent = `${snap.map.length / 4} runs of pageblocks; one cell = ${per === 1 ? 'one pageblock (2 MiB)' : `${per} pageblocks (${fmtBytes(per * 2 ** 21)}), the most common kind`}; ${COLS} cells a row, pfn order. Hover for details.`;
    const pb = Object.entries(snap.pageblocks)
      .map(([k, v]) => `${v} ${k}`)
      .join(', ');
    fill(
      info,
      table(
        ['node ' + node + ' at this time', { text: '', num: true }],
        [
          ['free', fmtBytes(snap.free_pages * 4096)],
          ['in use', fmtBytes(snap.used_pages * 4096)],
          ['THPs', `${snap.thp} (${fmtBytes(snap.thp * 2 ** 21)})`],
          ...snap.hugetlb.map((h) => [
            `hugetlb ${h.size}`,
            `${h.nr} pages, ${h.free} free, ${h.surplus} surplus; ${h.resv} reserved (whole pool)`,
          ]),
          ['zero pages (all-zero user pages)', String(snap.zero_pages)],
          ['kernel memory', fmtBytes(snap.kernel_pages * 4096)],
          ['pageblocks', pb],
          ['buddyinfo', snap.buddyinfo.join(' ')],
        ].map(([k, v]) => el('tr', {}, el('td', {}, k), el('td', { class: 'num', 'data-field': k }, v))),
        { attrs: { 'data-testid': 'phys-counts' } },
      ),
    );
    buddy.update(snap);
    frag.update(snap);
    window.__renderMs = performance.now() - t0; // for the browser tests and people measuring
  }
  const buddy = orderChart(at, 'free blocks by order and migratetype (buddyinfo, pagetypeinfo)', 'buddy');
  const frag = orderChart(at, 'fragmentation index by order (extfrag_index, unusable_index)', 'frag');
  render();
  drawOver();
  nodeSel.addEventListener('change', drawOver);
  cursor.on(() => {});
}

draw().catch(fail);
