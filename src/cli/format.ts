/** Output formats for op-script results: JSON Lines (the spec) and a table for people. */
import type { ResultLine } from '../opscript/runner.ts';

export function jsonLine(r: ResultLine): string {
  return JSON.stringify(r);
}

function brief(v: unknown): string {
  if (Array.isArray(v) && v.length && typeof v[0] === 'object' && v[0] !== null && 'n' in v[0]) {
    // pagemap runs
    return (v as { n: number; present: boolean; node: number | null; size: string | null }[])
      .map((r) => `${r.n}×${r.present ? `${r.size}${r.node === null ? '(zero)' : `@N${r.node}`}` : '-'}`)
      .join(' ');
  }
  if (Array.isArray(v) && v.every((x) => Array.isArray(x) && x.length === 2))
    return (v as [number, number][]).map(([b, n]) => `${b}×${n}`).join(' ');
  if (Array.isArray(v)) return v.join(' ');
  if (typeof v === 'object' && v !== null)
    return Object.entries(v)
      .map(([k, x]) => `${k}=${typeof x === 'object' ? `{${brief(x)}}` : String(x)}`)
      .join(' ');
  return String(v);
}

const HIDE = new Set(['i', 'op', 'ret', 'errno', 'ns', 'addr', 'pid', 'text']);

/** One row per op: index, op, result, details, simulated or measured time. */
export function table(results: ResultLine[]): string {
  const rows: string[][] = [['#', 'op', 'result', 'details', 'time']];
  for (const r of results) {
    if ('summary' in r) continue;
    const result = 'invalid' in r ? 'INVALID' : 'error' in r ? 'ERROR' : r.errno ? `-1 ${r.errno}` : String(r.ret ?? '');
    const details = Object.entries(r)
      .filter(([k]) => !HIDE.has(k))
      .map(([k, v]) => `${k}: ${brief(v)}`)
      .join('; ');
    const ns = typeof r.ns === 'number' ? fmtNs(r.ns) : '';
    rows.push([String(r.i ?? ''), String(r.op ?? ''), result, details, ns]);
    if (typeof r.text === 'string') for (const l of r.text.trimEnd().split('\n')) rows.push(['', '', '', `  ${l}`, '']);
  }
  const width = rows[0]!.map((_, c) => Math.min(c === 3 ? 100 : 40, Math.max(...rows.map((r) => r[c]!.length))));
  return rows
    .map((r) =>
      r
        .map((x, c) => (c === 3 && x.length > 100 ? x.slice(0, 97) + '...' : x).padEnd(width[c]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

export function fmtNs(ns: number): string {
  if (ns < 1e3) return `${ns} ns`;
  if (ns < 1e6) return `${(ns / 1e3).toFixed(1)} µs`;
  if (ns < 1e9) return `${(ns / 1e6).toFixed(2)} ms`;
  return `${(ns / 1e9).toFixed(3)} s`;
}
