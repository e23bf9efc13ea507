// Migration timeline: QEMU's states in time, the syncs, the main channel's
// bytes/s, the dirty rate, the stop-and-copy, and postcopy's faults: where each
// vCPU waited, for how long, the longest stall first; beside other runs of the sweep.
import {
  api,
  axisFormatter,
  cursor,
  echarts,
  el,
  fail,
  fill,
  fmtNs,
  fmtBytes,
  main,
  nav,
  params,
  runOf,
  runLabel,
  table,
  timeChart,
} from './common.js';

const PHASE_COLORS = { setup: '#9e9e9e', active: '#4f7bd9', device: '#c62828', 'postcopy-active': '#e69500' };

/** The timeline: one row for the states, one per vCPU with its faults (buckets shaded by their longest, the longest faults as bars). */
function timeline(container, mig, durationNs) {
  const pc = mig.postcopy;
  const vcpus = pc ? pc.vcpu_blocktime_ns.length : 0;
  const rows = ['state', ...Array.from({ length: vcpus }, (_, v) => `vCPU ${v}`)];
  const items = mig.phases.map((p) => ({
    name: p.name,
    value: [0, p.from_ns / 1e6, p.to_ns / 1e6, p.to_ns - p.from_ns],
    itemStyle: { color: PHASE_COLORS[p.name] ?? '#777' },
  }));
  const maxBucket = pc ? Math.max(1, ...pc.buckets.filter((_, i) => i % 5 === 4)) : 1;
  if (pc)
    for (let i = 0; i < pc.buckets.length; i += 5) {
      const [b, v, count, sum, max] = pc.buckets.slice(i, i + 5);
      if (v < 0) continue;
      const shade = Math.log1p(max) / Math.log1p(maxBucket);
      items.push({
        name: `${count} faults woken, longest ${fmtNs(max)}, mean ${fmtNs(sum / count)}`,
        value: [v + 1, (b * pc.bucket_ns) / 1e6, ((b + 1) * pc.bucket_ns) / 1e6, max],
        itemStyle: { color: `rgba(230,149,0,${0.15 + 0.6 * shade})` },
      });
    }
  const longest = pc?.longest?.[0];
  if (pc)
    for (const f of pc.longest) {
      const top = f === longest;
      items.push({
        name: `${top ? 'LONGEST STALL: ' : ''}vCPU ${f.vcpu} blocked ${fmtNs(f.ns)} from ${fmtNs(f.at_ns)}`,
        value: [f.vcpu + 1, f.at_ns / 1e6, (f.at_ns + f.ns) / 1e6, f.ns],
        itemStyle: { color: top ? '#c62828' : '#8d5a00', borderColor: top ? '#000' : undefined, borderWidth: top ? 1 : 0 },
        stall: top,
      });
    }
  const height = 60 + rows.length * 34;
  const card = el('div', { class: 'card', 'data-chart': 'migration-timeline' });
  const div = el('div', { class: 'chart', style: `height:${height}px` });
  card.append(el('div', { class: 'title' }, el('b', {}, `Timeline: states, syncs and each vCPU's postcopy faults`)), div);
  container.append(card);
  const chart = echarts.init(div);
  chart.group = 'memtwin';
  const renderItem = (params, api) => {
    const row = api.value(0);
    const a = api.coord([api.value(1), row]);
    const b = api.coord([api.value(2), row]);
    const h = api.size([0, 1])[1] * (row === 0 ? 0.7 : 0.6);
    const w = Math.max(2, b[0] - a[0]);
    return { type: 'rect', shape: { x: a[0], y: a[1] - h / 2, width: w, height: h }, style: api.style() };
  };
  chart.setOption({
    animation: false,
    grid: { left: 80, right: 20, top: 24, bottom: 52 },
    tooltip: { formatter: (p) => `${p.name}<br>${fmtNs(p.value[1] * 1e6)} → ${fmtNs(p.value[2] * 1e6)}` },
    xAxis: { type: 'value', name: 'ms', min: 0, max: durationNs / 1e6 },
    yAxis: { type: 'category', data: rows, inverse: true },
    dataZoom: [
      { type: 'inside', xAxisIndex: 0, filterMode: 'none' },
      { type: 'slider', xAxisIndex: 0, height: 16, bottom: 4, filterMode: 'none' },
    ],
    series: [
      {
        type: 'custom',
        renderItem,
        encode: { x: [1, 2], y: 0 },
        data: items,
        markLine: {
          symbol: 'none',
          data: mig.syncs.map((s) => ({
            xAxis: s.at_ns / 1e6,
            name: `sync ${s.sync}`,
            lineStyle: { color: '#555', type: 'dotted' },
            label: { formatter: `sync ${s.sync}`, fontSize: 9 },
          })),
        },
      },
    ],
  });
  chart.getZr().on('click', (e) => {
    const p = chart.convertFromPixel({ gridIndex: 0 }, [e.offsetX, e.offsetY]);
    if (p && Number.isFinite(p[0])) cursor.set(p[0] * 1e6);
  });
  window.__charts.push(chart);
  echarts.connect('memtwin');
  return chart;
}

function longestCallout(r, mig) {
  const pc = mig.postcopy;
  const l = pc?.longest?.[0];
  if (!l)
    return el(
      'div',
      { class: 'callout info' },
      `No postcopy faults: the migration ${mig.status === 'completed' ? 'completed in precopy' : `ended ${mig.status}`}.`,
    );
  return el(
    'div',
    { class: 'callout', 'data-testid': 'longest-stall' },
    el('b', {}, `Longest vCPU stall: vCPU ${l.vcpu} waited ${fmtNs(l.ns)}`),
    ` (blocked at t = ${fmtNs(l.at_ns)}, ${fmtNs(l.at_ns - pc.start_ns)} after the guest resumed on the destination). `,
    `${pc.faults} faults, mean ${fmtNs(pc.latency.mean_ns)}, p99 ${fmtNs(pc.latency.p99_ns)}; ${pc.requests} page requests. `,
    el('a', { href: `?id=${encodeURIComponent(r.id)}&t=${Math.round(l.at_ns)}` }, 'put the cursor there'),
  );
}

/** The same migration in the other runs of the sweep: longest stall beside this one's. */
async function siblings(container, ix, run, mig) {
  const sweep = ix.sweeps.find((s) => s.id === run.sweep);
  if (!sweep) return;
  const others = sweep.runs.map((id) => ix.runs.find((r) => r.id === id)).filter((r) => r && r.snapshots);
  const snaps = await Promise.all(others.map((r) => api(`/api/snapshots?id=${encodeURIComponent(r.id)}`).catch(() => null)));
  const rows = others.map((r, i) => {
    const m = snaps[i]?.migrations?.find((x) => x.vm === mig.vm);
    const l = m?.postcopy?.longest?.[0];
    const self = r.id === run.id;
    const box = el('input', { type: 'checkbox', 'data-run': r.id, checked: self || undefined, 'aria-label': `compare ${runLabel(r)}` });
    return el(
      'tr',
      { class: self ? 'diff' : undefined },
      el('td', {}, box),
      el('td', {}, self ? el('b', {}, runLabel(r)) : el('a', { href: `/migration?id=${encodeURIComponent(r.id)}` }, runLabel(r))),
      el('td', { class: 'num' }, l ? fmtNs(l.ns) : '—'),
      el('td', { class: 'num' }, l ? `vCPU ${l.vcpu}` : '—'),
      el('td', { class: 'num' }, m?.postcopy ? fmtNs(m.postcopy.latency.mean_ns) : '—'),
      el('td', { class: 'num' }, m?.postcopy ? fmtNs(m.postcopy.vcpu_blocktime_ns.reduce((a, b) => a + b, 0)) : '—'),
      el('td', { class: 'num' }, m?.total_time_ns !== undefined ? fmtNs(m.total_time_ns) : '—'),
    );
  });
  const go = el('button', {}, 'Compare checked side by side');
  go.addEventListener('click', () => {
    const ids = [...container.querySelectorAll('input[data-run]')].filter((b) => b.checked).map((b) => b.dataset.run);
    if (ids.length >= 2) location.href = `/compare?${ids.map((id) => `id=${encodeURIComponent(id)}`).join('&')}`;
  });
  container.append(
    el('h2', {}, `The same migration in the other runs of the sweep`),
    table(
      [
        '',
        'run',
        { text: 'longest stall', num: true },
        { text: 'on', num: true },
        { text: 'mean fault', num: true },
        { text: 'vCPU blocktime', num: true },
        { text: 'total time', num: true },
      ],
      rows,
      { attrs: { 'data-testid': 'siblings' } },
    ),
    el('p', {}, go),
  );
}

async function draw() {
  const id = params.get('id');
  const { ix, run } = await runOf(id);
  nav('migration', run);
  const [r, snaps] = await Promise.all([
    api(`/api/result?id=${encodeURIComponent(id)}`),
    run.snapshots ? api(`/api/snapshots?id=${encodeURIComponent(id)}`) : null,
  ]);
  const m = main();
  fill(m, el('h1', {}, `Migration · ${r.scenario.name} · ${runLabel(run)}`));
  const migs = snaps?.migrations ?? [];
  if (!migs.length) {
    m.append(el('p', { class: 'callout info' }, 'This run has no live migration (or was recorded before memtwin kept migration records).'));
    return;
  }
  for (const mig of migs) {
    const pc = mig.postcopy;
    m.append(
      el('h2', {}, `VM ${mig.vm}: ${mig.status}`),
      el(
        'p',
        { class: 'params' },
        `started ${fmtNs(mig.start_ns)}` +
          (mig.total_time_ns !== undefined ? ` · total time ${fmtNs(mig.total_time_ns)}` : '') +
          (mig.downtime_ns !== undefined ? ` · downtime ${fmtNs(mig.downtime_ns)}` : '') +
          ` · ${mig.syncs.length} syncs` +
          (pc ? ` · postcopy from ${fmtNs(pc.start_ns)}, ${fmtBytes(pc.bytes)} after the switchover` : ''),
      ),
      longestCallout(run, mig),
    );
    const box = el('div', {});
    m.append(box);
    timeline(box, mig, r.duration_ns);
    const legend = el(
      'div',
      { class: 'legend' },
      Object.entries(PHASE_COLORS).map(([k, c]) =>
        el('span', {}, el('i', { style: `background:${c}` }), k === 'device' ? 'device (stop-and-copy, guest stopped)' : k),
      ),
      el('span', {}, el('i', { style: 'background:rgba(230,149,0,.6)' }), 'faults woken in a bucket (darker: longer)'),
      el('span', {}, el('i', { style: 'background:#8d5a00' }), 'one of the longest faults'),
      el('span', {}, el('i', { style: 'background:#c62828' }), 'the longest'),
    );
    m.append(legend);
    // Rates over time: the main channel (series), the dirty rate and what remained at each sync.
    const charts = el('div', { class: 'charts' });
    m.append(charts);
    const main_ = r.series.metrics[`vm.${mig.vm}.migration.main_bytes_per_s`];
    if (main_)
      timeChart(charts, {
        title: 'main channel (bytes/s)',
        metric: 'x_bytes_per_s',
        xmax: r.duration_ns,
        series: [{ name: 'main channel', t_ns: r.series.t_ns, values: main_ }],
      });
    // Progress read at the run's samples: bytes/s of each stream, what remained dirty, page requests/s.
    const pr = mig.progress;
    const markers = mig.phases.map((p) => ({ t_ns: p.from_ns, name: p.name }));
    const st = mig.syncs.map((s) => s.at_ns);
    if (pr && pr.t_ns.length > 1) {
      const rate = (arr) => arr.map((v, i) => (i === 0 ? null : ((v - arr[i - 1]) * 1e9) / Math.max(1, pr.t_ns[i] - pr.t_ns[i - 1])));
      // Per channel after the switchover: the preempt channel carries requested pages, the main one the rest.
      const preempt = pr.preempt_bytes ?? [];
      const channels = preempt.some((v) => v > 0)
        ? [
            {
              name: 'after the switchover: main channel',
              t_ns: pr.t_ns,
              values: rate(pr.postcopy_bytes.map((v, i) => v - (preempt[i] ?? 0))),
            },
            { name: 'after the switchover: preempt channel', t_ns: pr.t_ns, values: rate(preempt) },
          ]
        : [{ name: 'after the switchover', t_ns: pr.t_ns, values: rate(pr.postcopy_bytes) }];
      timeChart(charts, {
        title: 'RAM sent, bytes/s (all; after the switchover, per channel)',
        metric: 'x_bytes_per_s',
        xmax: r.duration_ns,
        markers,
        series: [{ name: 'RAM sent', t_ns: pr.t_ns, values: rate(pr.ram_bytes) }, ...channels],
      });
      timeChart(charts, {
        title: 'remaining dirty (at the samples; points: at the syncs)',
        metric: 'remaining_bytes',
        xmax: r.duration_ns,
        markers,
        series: [
          { name: 'remaining', t_ns: pr.t_ns, values: pr.remaining_bytes },
          { name: 'at syncs', t_ns: st, values: mig.syncs.map((s) => s.remaining_bytes) },
        ],
      });
      if (pc)
        timeChart(charts, {
          title: 'postcopy page requests per second',
          metric: 'requests_per_s',
          xmax: r.duration_ns,
          markers,
          series: [{ name: 'requests', t_ns: pr.t_ns, values: rate(pr.postcopy_requests) }],
        });
    }
    if (mig.syncs.length > 1) {
      // Pages a sync found dirty over the time since the previous sync (none for syncs at the same instant).
      const rate = mig.syncs.map((s, i) => {
        const dt = i === 0 ? 0 : s.at_ns - mig.syncs[i - 1].at_ns;
        return dt > 0 ? (s.new_dirty_pages * 4096 * 1e9) / dt : null;
      });
      if (rate.some((x) => x !== null))
        timeChart(charts, {
          title: 'dirty rate between syncs',
          metric: 'dirty_bytes_per_s',
          xmax: r.duration_ns,
          markers,
          series: [{ name: 'dirty rate', t_ns: st, values: rate }],
        });
    }
    if (pc) {
      // Fault latencies: histogram and each vCPU's blocktime.
      const h = el(
        'div',
        { class: 'card', 'data-chart': 'latency-histogram' },
        el('div', { class: 'title' }, el('b', {}, 'fault latency (block to wake), faults per bucket')),
      );
      const hd = el('div', { class: 'chart' });
      h.append(hd);
      charts.append(h);
      const hc = echarts.init(hd);
      hc.setOption({
        animation: false,
        grid: { left: 60, right: 16, top: 20, bottom: 40 },
        tooltip: { trigger: 'axis' },
        xAxis: { type: 'category', data: pc.histogram.map(([le]) => `≤ ${fmtNs(le)}`), axisLabel: { fontSize: 10, rotate: 30 } },
        yAxis: { type: 'log', name: 'faults' },
        series: [{ type: 'bar', data: pc.histogram.map(([, n]) => n), itemStyle: { color: '#e69500' } }],
      });
      window.__charts.push(hc);
      const b = el(
        'div',
        { class: 'card', 'data-chart': 'vcpu-blocktime' },
        el('div', { class: 'title' }, el('b', {}, 'per vCPU: blocktime (postcopy-vcpu-blocktime) and longest fault')),
      );
      const bd = el('div', { class: 'chart' });
      b.append(bd);
      charts.append(b);
      const bc = echarts.init(bd);
      const lb = pc.vcpu_blocktime_ns.map((_, v) => pc.longest_by_vcpu.find((x) => x.vcpu === v)?.ns ?? 0);
      bc.setOption({
        animation: false,
        legend: { top: 0 },
        grid: { left: 70, right: 16, top: 28, bottom: 30 },
        tooltip: { trigger: 'axis', valueFormatter: (v) => fmtNs(v) },
        xAxis: { type: 'category', data: pc.vcpu_blocktime_ns.map((_, v) => `vCPU ${v}`) },
        yAxis: { type: 'value', axisLabel: { formatter: axisFormatter('ns', Math.max(...pc.vcpu_blocktime_ns)) } },
        series: [
          { name: 'blocktime', type: 'bar', data: pc.vcpu_blocktime_ns },
          { name: 'longest fault', type: 'bar', data: lb, itemStyle: { color: '#c62828' } },
        ],
      });
      window.__charts.push(bc);
      m.append(
        el('h3', {}, `The ${pc.longest.length} longest faults`),
        table(
          [{ text: 'latency', num: true }, 'vCPU', { text: 'blocked at', num: true }, { text: 'woken at', num: true }],
          pc.longest.map((f, i) =>
            el(
              'tr',
              { class: i === 0 ? 'hot' : undefined, 'data-fault': i },
              el('td', { class: 'num' }, fmtNs(f.ns)),
              el('td', {}, `vCPU ${f.vcpu}`),
              el('td', { class: 'num' }, el('a', { href: `?id=${encodeURIComponent(run.id)}&t=${Math.round(f.at_ns)}` }, fmtNs(f.at_ns))),
              el('td', { class: 'num' }, fmtNs(f.at_ns + f.ns)),
            ),
          ),
        ),
      );
    }
    const cc = mig.content_check;
    if (cc)
      m.append(
        el(
          'p',
          { class: cc.pages_differing ? 'callout' : 'callout info', 'data-testid': 'content-check' },
          cc.pages_differing
            ? `Content check: ${cc.pages_differing} pages did not arrive with the source's content (first: ${cc.differing.map((d) => `${d.block}+0x${d.offset.toString(16)}`).join(', ')})`
            : "Content check: every page arrived with the source's content.",
        ),
      );
    await siblings(m, ix, run, mig);
  }
}

draw().catch(fail);
