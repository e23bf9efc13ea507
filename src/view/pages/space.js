// Address-space map: per process or VM, at any snapshot: each VMA with its
// flags and policy, and each range's mapping size (4K/2M/1G), node and
// presence; for a VM, `info ram`: guest-physical ranges against host-virtual ones.
import { el, fail, fill, fmtBytes, hex, mapsPage, params, snapshotSlider, table, tip } from './common.js';

export const SIZE_NAMES = ['none', '4K', '2M', '1G', 'swap'];
const SIZE_COLORS = { none: '#eef1f5', '4K': '#4f7bd9', '2M': '#2e9e5b', '1G': '#8e44ad', swap: '#e69500' };
const NODE_COLORS = ['#1b9e77', '#d95f02', '#7570b3', '#e7298a', '#66a61e', '#e6ab02', '#a6761d', '#666666'];
/** Runs narrower than this many pixels are drawn that wide, so a lone 2M THP in 1 GiB still shows. */
const MIN_PX = 1;

/** A VMA's runs as objects with their addresses. */
export function runsOf(v) {
  const out = [];
  let a = v.start;
  for (let i = 0; i < v.runs.length; i += 4) {
    const [pages, present, size, node] = v.runs.slice(i, i + 4);
    out.push({ start: a, end: a + pages * 4096, pages, present, size: SIZE_NAMES[size], node });
    a += pages * 4096;
  }
  return out;
}

function strip(v, runs) {
  const c = el('canvas', { class: 'strip', height: 26 });
  requestAnimationFrame(() => {
    const w = (c.width = c.clientWidth || 1000);
    const g = c.getContext('2d');
    const span = v.end - v.start;
    for (const r of runs) {
      const x = Math.floor(((r.start - v.start) / span) * w);
      const x2 = Math.max(x + MIN_PX, Math.ceil(((r.end - v.start) / span) * w));
      const frac = r.pages ? r.present / r.pages : 0;
      g.globalAlpha = r.size === 'none' ? 1 : 0.35 + 0.65 * frac;
      g.fillStyle = SIZE_COLORS[r.size];
      g.fillRect(x, 0, x2 - x, 17);
      g.globalAlpha = 1;
      if (r.node >= 0) {
        g.fillStyle = NODE_COLORS[r.node % NODE_COLORS.length];
        g.fillRect(x, 19, x2 - x, 7);
      }
    }
  });
  const t = tip();
  c.onmousemove = (e) => {
    const rect = c.getBoundingClientRect();
    const a = v.start + ((e.clientX - rect.left) / rect.width) * (v.end - v.start);
    const r = runs.find((x) => a >= x.start && a < x.end);
    if (!r) return t.hide();
    t.show(
      e.clientX,
      e.clientY,
      `${hex(r.start)}–${hex(r.end)} (${fmtBytes(r.end - r.start)})\n${r.size === 'none' ? 'not mapped' : `${r.size} pages, ${r.present} of ${r.pages} 4K present`}` +
        `${r.node >= 0 ? `\nnode ${r.node}` : r.size !== 'none' && r.size !== 'swap' ? '\nzero page' : ''}`,
    );
  };
  c.onmouseleave = () => t.hide();
  return c;
}

function vmaBlock(v) {
  const runs = runsOf(v);
  const mapped = runs.filter((r) => r.size !== 'none');
  const head = el(
    'div',
    { class: 'head' },
    el('b', {}, `${hex(v.start)}-${hex(v.end)}`),
    ` ${fmtBytes(v.end - v.start)} · ${v.kind}${v.name ? ` "${v.name}"` : ''} · ${v.flags.join(' ')} · policy ${v.policy}`,
    v.aggregated ? el('span', { class: 'warn' }, ' · aggregated to 1024 buckets') : null,
  );
  const rows = mapped.map((r) =>
    el(
      'tr',
      { 'data-start': hex(r.start), 'data-size': r.size, 'data-node': r.node },
      el('td', { class: 'params' }, `${hex(r.start)}-${hex(r.end)}`),
      el('td', { class: 'num' }, fmtBytes(r.end - r.start)),
      el('td', {}, r.size),
      el('td', { class: 'num' }, r.node >= 0 ? String(r.node) : r.size === 'swap' ? '—' : 'zero page'),
      el('td', { class: 'num' }, `${r.present} / ${r.pages}`),
    ),
  );
  return el(
    'div',
    { class: 'vma', 'data-vma': hex(v.start) },
    head,
    strip(v, runs),
    el(
      'details',
      {},
      el('summary', {}, `${mapped.length} mapped ranges`),
      table(
        ['range', { text: 'size', num: true }, 'page size', { text: 'node', num: true }, { text: '4K present', num: true }],
        rows.slice(0, 500),
        {
          attrs: { 'data-testid': 'ranges' },
        },
      ),
      rows.length > 500 ? el('p', { class: 'muted' }, `${rows.length - 500} more`) : null,
    ),
  );
}

function infoRam(sp) {
  if (!sp.ram) return null;
  return el(
    'div',
    {},
    el('h3', {}, 'info ram: guest-physical against host-virtual'),
    table(
      ['GPA', 'block', 'page size', 'HVA', 'guest node'],
      sp.ram.map((r) =>
        el(
          'tr',
          {},
          el('td', { class: 'params' }, `${hex(r.gpa)}-${hex(r.gpa + r.size - 1)}`),
          el('td', {}, r.block),
          el('td', {}, fmtBytes(r.page_size)),
          el('td', { class: 'params' }, el('a', { href: `#vma-${hex(r.hva)}` }, `${hex(r.hva)}-${hex(r.hva + r.size - 1)}`)),
          el('td', { class: 'num' }, String(r.node)),
        ),
      ),
      { attrs: { 'data-testid': 'info-ram' } },
    ),
  );
}

async function draw() {
  const page = await mapsPage('space', 'Address spaces');
  if (!page) return;
  const { m, s } = page;
  const key = (sp) => `${sp.process}${sp.side ? ` (${sp.side})` : ''}`;
  let pick = params.get('p');
  const sel = el('select', { 'aria-label': 'process' });
  const body = el('div', {});
  const { bar, index } = snapshotSlider(s.t_ns, () => render());
  const legend = el(
    'div',
    { class: 'legend' },
    Object.entries(SIZE_COLORS).map(([k, c]) =>
      el('span', {}, el('i', { style: `background:${c}` }), k === 'none' ? 'not mapped' : k === 'swap' ? 'swapped out' : `${k} mapping`),
    ),
    el('span', { class: 'muted' }, 'lower band: node'),
    NODE_COLORS.slice(0, s.nodes.length).map((c, n) => el('span', {}, el('i', { style: `background:${c}` }), `node ${n}`)),
  );
  m.append(el('div', { class: 'row' }, el('label', {}, 'Process ', sel)), bar, legend, body);
  sel.addEventListener('change', () => {
    pick = sel.value;
    render();
  });
  function render() {
    const spaces = s.spaces[index()];
    const names = spaces.map(key);
    if (!pick || !names.includes(pick)) pick = names[0];
    sel.replaceChildren(...names.map((n) => el('option', { value: n, selected: n === pick || undefined }, n)));
    const sp = spaces[names.indexOf(pick)];
    if (!sp) return fill(body, el('p', { class: 'muted' }, 'no process at this time'));
    const rss = fmtBytes(sp.rss_pages * 4096);
    fill(
      body,
      el(
        'p',
        { class: 'params' },
        `pid ${sp.pid}${sp.vm ? ` · VM ${sp.vm}${sp.side ? ` (${sp.side})` : ''} on ${sp.host}` : ''} · RSS ${rss} · ${sp.vmas.length} VMAs`,
      ),
      infoRam(sp),
      el('h3', {}, 'VMAs'),
      sp.vmas.map((v) => {
        const b = vmaBlock(v);
        b.id = `vma-${hex(v.start)}`;
        return b;
      }),
    );
  }
  render();
}

draw().catch(fail);
