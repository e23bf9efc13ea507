/**
 * Human units for metric values: bytes in KiB/MiB/GiB, nanoseconds in µs/ms/s,
 * rates in k/s and M/s, ratios as percentages, counts with thousands
 * separators. Everything here is locale-independent so that reports are
 * byte-identical wherever they are rendered.
 */

export type Unit = 'bytes' | 'ns' | 'rate' | 'ratio' | 'count';

/** The unit a metric or series name implies (see SeriesData and RunResult.final). */
export function unitOf(name: string): Unit {
  if (/(^|_)bytes($|_)/.test(name)) return 'bytes';
  if (/(^|_)ns($|_)/.test(name)) return 'ns';
  if (/_per_s$/.test(name) || name.startsWith('throughput')) return 'rate';
  if (/_(ratio|fraction)$/.test(name) || /(^|_)util(_mean)?$/.test(name)) return 'ratio';
  return 'count';
}

/** A scale: divide raw values by `div`, then append `suffix`. */
export interface Scale {
  div: number;
  suffix: string;
}

const BYTE_SCALES: Scale[] = [
  { div: 1, suffix: ' B' },
  { div: 1024, suffix: ' KiB' },
  { div: 1024 ** 2, suffix: ' MiB' },
  { div: 1024 ** 3, suffix: ' GiB' },
  { div: 1024 ** 4, suffix: ' TiB' },
  { div: 1024 ** 5, suffix: ' PiB' },
];
const NS_SCALES: Scale[] = [
  { div: 1, suffix: ' ns' },
  { div: 1e3, suffix: ' µs' },
  { div: 1e6, suffix: ' ms' },
  { div: 1e9, suffix: ' s' },
];
const RATE_SCALES: Scale[] = [
  { div: 1, suffix: '/s' },
  { div: 1e3, suffix: ' k/s' },
  { div: 1e6, suffix: ' M/s' },
  { div: 1e9, suffix: ' G/s' },
];
const COUNT_SCALES: Scale[] = [
  { div: 1, suffix: '' },
  { div: 1e3, suffix: 'k' },
  { div: 1e6, suffix: 'M' },
  { div: 1e9, suffix: 'G' },
];

function pick(scales: Scale[], magnitude: number): Scale {
  const m = Math.abs(magnitude);
  let s = scales[0]!;
  for (const c of scales) if (m >= c.div) s = c;
  return s;
}

/**
 * The scale to use for values up to `magnitude` (e.g. the largest value on a
 * chart axis), so that one axis shows a single unit.
 */
export function scaleFor(unit: Unit, magnitude: number): Scale {
  switch (unit) {
    case 'bytes':
      return pick(BYTE_SCALES, magnitude);
    case 'ns':
      return pick(NS_SCALES, magnitude);
    case 'rate':
      return pick(RATE_SCALES, magnitude);
    case 'ratio':
      return { div: 0.01, suffix: ' %' };
    case 'count':
      return pick(COUNT_SCALES, magnitude);
  }
}

/** Thousands separators, locale-independent: 1234567 -> "1,234,567". */
export function groupThousands(n: number): string {
  if (!Number.isFinite(n)) return nonFinite(n);
  const sign = n < 0 ? '-' : '';
  const [int, frac] = Math.abs(n).toString().split('.') as [string, string | undefined];
  if (int.includes('e')) return sign + int + (frac === undefined ? '' : `.${frac}`); // huge values: leave as is
  const grouped = int.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  return sign + grouped + (frac === undefined ? '' : `.${frac}`);
}

function nonFinite(n: number): string {
  if (Number.isNaN(n)) return 'n/a';
  return n > 0 ? '∞' : '-∞';
}

/** A number with about three significant digits, trailing zeros dropped: 1.50 -> "1.5", 123.4 -> "123". */
export function sig3(x: number): string {
  if (x === 0) return '0';
  const a = Math.abs(x);
  const decimals = a >= 100 ? 0 : a >= 10 ? 1 : a >= 1 ? 2 : 3;
  let s = x.toFixed(decimals);
  if (s.includes('.')) s = s.replace(/\.?0+$/, '');
  if (s === '-0') s = '0';
  return s;
}

/** A value in a unit, scaled to a human unit of its own magnitude. */
export function formatValue(v: number, unit: Unit): string {
  if (!Number.isFinite(v)) return nonFinite(v);
  switch (unit) {
    case 'ratio':
      return `${sig3(v * 100)} %`;
    case 'count':
      if (Number.isInteger(v)) return groupThousands(v);
      return Math.abs(v) >= 1000 ? groupThousands(Math.round(v)) : sig3(v);
    case 'bytes':
      if (Math.abs(v) < 1024) return `${groupThousands(Math.round(v))} B`;
      break;
    default:
      break;
  }
  const s = scaleFor(unit, v);
  return `${sig3(v / s.div)}${s.suffix}`;
}

/**
 * A final metric's value in human units, the unit taken from the name's
 * suffix: `_bytes` (KiB/MiB/GiB), `_ns` (µs/ms/s), `_per_s` (k/s, M/s),
 * `_ratio` / `_fraction` (%), anything else a count with thousands separators.
 */
export function formatMetric(name: string, v: number): string {
  return formatValue(v, unitOf(name));
}

/** An axis tick label in a fixed scale: tick values are already divided by `scale.div`. */
export function formatTick(v: number, scale: Scale): string {
  // Tick values come from ECharts' nice-number steps; print them plainly but without float noise.
  if (v === 0) return '0';
  const r = Number(v.toPrecision(6));
  const s = Math.abs(r) >= 1000 && Number.isInteger(r) ? groupThousands(r) : String(r);
  return s + scale.suffix;
}
