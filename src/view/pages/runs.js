// Runs: every run and sweep under the directories, their inputs and summary
// metrics; pick two or more to compare them side by side.
import { api, el, fail, fmt, main, nav, runLabel, table, fill } from './common.js';

const picked = new Set();

function compareButton() {
  const b = el('button', { id: 'compare', disabled: picked.size < 2 }, `Compare selected (${picked.size})`);
  b.addEventListener('click', () => {
    location.href = `/compare?${[...picked].map((id) => `id=${encodeURIComponent(id)}`).join('&')}`;
  });
  return b;
}

function refreshButton() {
  const b = document.getElementById('compare');
  b.disabled = picked.size < 2;
  b.textContent = `Compare selected (${picked.size})`;
}

function runTable(runs, summary) {
  const headers = [
    '',
    'run',
    'seed',
    'duration',
    'host',
    ...summary.map((m) => ({ text: m.replace(/^vm\.[^.]+\./, ''), num: true })),
    'pages',
  ];
  const rows = runs.map((r) => {
    const box = el('input', { type: 'checkbox', 'aria-label': `select ${r.run}`, 'data-run': r.id });
    box.checked = picked.has(r.id);
    box.addEventListener('change', () => {
      if (box.checked) picked.add(r.id);
      else picked.delete(r.id);
      refreshButton();
    });
    const q = `?id=${encodeURIComponent(r.id)}`;
    const hasMig = Object.keys(r.final).some((k) => k.includes('.migration.'));
    return el(
      'tr',
      { 'data-run-row': r.id },
      el('td', {}, box),
      el(
        'td',
        {},
        el('a', { href: `/run${q}` }, runLabel(r)),
        r.warnings ? el('span', { class: 'warn', title: 'warnings' }, ` ⚠${r.warnings}`) : null,
      ),
      el('td', { class: 'num' }, r.seed),
      el('td', { class: 'num' }, fmt('duration_ns', r.duration_ns)),
      el('td', {}, r.host),
      summary.map((m) => el('td', { class: 'num' }, fmt(m, r.final[m]))),
      el(
        'td',
        {},
        el('a', { href: `/run${q}` }, 'charts'),
        ' · ',
        hasMig ? el('a', { href: `/migration${q}` }, 'migration') : el('span', { class: 'muted' }, 'migration'),
        ' · ',
        r.snapshots
          ? el('a', { href: `/phys${q}` }, 'maps')
          : el('span', { class: 'muted', title: 'record with memtwin run --snapshots' }, 'maps'),
      ),
    );
  });
  return el('div', { class: 'scroll' }, table(headers, rows));
}

function summaryOf(runs) {
  const s = runs[0]?.summary?.length ? runs[0].summary : ['throughput_per_s', 'fault_ns_mean', 'rss_bytes', 'remote_access_ratio'];
  return s.filter((m) => runs.some((r) => r.final[m] !== undefined));
}

async function draw() {
  const ix = await api('/api/index');
  nav('runs');
  const m = main();
  const filter = el('input', { type: 'search', placeholder: 'filter runs', 'aria-label': 'filter runs' });
  fill(
    m,
    el('h1', {}, 'Runs'),
    el('p', { class: 'muted' }, `${ix.runs.length} runs and ${ix.sweeps.length} sweeps under ${ix.roots.join(', ')}`),
    el('div', { class: 'row' }, compareButton(), filter),
  );
  if (!ix.runs.length) m.append(el('p', { class: 'callout info' }, 'No results here yet: memtwin run SCENARIO --out DIR writes them.'));
  const inSweep = new Set();
  for (const s of ix.sweeps) {
    const runs = s.runs.map((id) => ix.runs.find((r) => r.id === id)).filter(Boolean);
    runs.forEach((r) => inSweep.add(r.id));
    const dims = s.swept.map(
      (d) => `${d.label}: ${d.values.map((v) => (typeof v === 'object' ? (v?.name ?? JSON.stringify(v)) : v)).join(' | ')}`,
    );
    const sel = el('button', { class: 'small' }, 'select all');
    sel.addEventListener('click', () => {
      runs.forEach((r) => picked.add(r.id));
      document.querySelectorAll(`input[data-run]`).forEach((b) => (b.checked = picked.has(b.dataset.run)));
      refreshButton();
    });
    m.append(
      el(
        'section',
        { 'data-sweep': s.id },
        el('h2', {}, `Sweep ${s.scenario} `, el('span', { class: 'muted params' }, s.id)),
        el('p', { class: 'params' }, dims.join(' · '), ' ', sel),
        runTable(runs, summaryOf(runs)),
      ),
    );
  }
  const alone = ix.runs.filter((r) => !inSweep.has(r.id));
  if (alone.length) {
    const byScenario = new Map();
    for (const r of alone) byScenario.set(r.scenario, [...(byScenario.get(r.scenario) ?? []), r]);
    for (const [name, runs] of byScenario)
      m.append(
        el(
          'section',
          {},
          el('h2', {}, `Scenario ${name}`),
          el('p', { class: 'params muted' }, runs.map((r) => r.id).join(' · ')),
          runTable(runs, summaryOf(runs)),
        ),
      );
  }
  filter.addEventListener('input', () => {
    const q = filter.value.toLowerCase();
    document
      .querySelectorAll('tr[data-run-row]')
      .forEach((tr) => (tr.style.display = tr.textContent.toLowerCase().includes(q) ? '' : 'none'));
  });
}

draw().catch(fail);
