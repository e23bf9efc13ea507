/**
 * Human units for metric values: one table (METRIC_UNITS) says what unit each
 * metric a run emits is in, as memtwin, Linux and QEMU give it; the report
 * (and the live view) format and draw values through it. Bytes print in
 * KiB/MiB/GiB, times in ns/µs/ms/s, rates per second, shares as
 * percentages, counts with thousands separators. Everything here is
 * locale-independent so that reports are byte-identical wherever they are
 * rendered.
 */

/**
 * - bytes; ns, us, ms (a time in that unit: QEMU's query-migrate times are ms, PSI totals µs);
 * - rate: events (accesses) per second; bytes_per_s; pages, pages_per_s (4 KiB pages, QEMU's target pages);
 * - mbps: QEMU's megabits per second (10^6 bit/s);
 * - ratio: a share 0..1, shown as %; percent: already in percent (PSI, cpu-throttle-percentage);
 * - factor: a multiplier (×), e.g. memory latency over its unloaded value; count: events or objects.
 */
export type Unit =
  'bytes' | 'ns' | 'us' | 'ms' | 'rate' | 'bytes_per_s' | 'pages' | 'pages_per_s' | 'mbps' | 'ratio' | 'percent' | 'factor' | 'count';

/** How each unit is named in tables (the "unit" column). */
export const UNIT_NAMES: Record<Unit, string> = {
  bytes: 'bytes',
  ns: 'ns',
  us: 'µs',
  ms: 'ms',
  rate: 'per second',
  bytes_per_s: 'bytes/s',
  pages: 'pages',
  pages_per_s: 'pages/s',
  mbps: 'Mbit/s',
  ratio: 'share (%)',
  percent: '%',
  factor: '×',
  count: 'count',
};

/**
 * The unit of every metric name memtwin emits (final metrics and series),
 * first match wins. `vm.NAME.migration.*` are QEMU's query-migrate fields
 * (qapi/migration.json: MigrationInfo's times in milliseconds; MigrationStats:
 * bytes, pages, pages per second, mbps in megabits per second, counters).
 * A name no rule matches has no unit: the shipped-scenario check reports it.
 */
export const METRIC_UNITS: readonly (readonly [RegExp, Unit])[] = [
  // QEMU query-migrate, flattened under vm.NAME.migration. (src/scenario/vms.ts migrationFinal).
  [/\.migration\.(total-time|downtime|setup-time|expected-downtime|postcopy-blocktime)$/, 'ms'],
  [/\.migration\.cpu-throttle-percentage$/, 'percent'],
  [
    /\.migration\.ram\.(transferred|remaining|total|normal-bytes|page-size|multifd-bytes|precopy-bytes|downtime-bytes|postcopy-bytes)$/,
    'bytes',
  ],
  [/\.migration\.ram\.(duplicate|skipped|normal)$/, 'pages'],
  [/\.migration\.ram\.(dirty-pages-rate|pages-per-second)$/, 'pages_per_s'],
  [/\.migration\.ram\.mbps$/, 'mbps'],
  [/\.migration\.ram\.(dirty-sync-count|postcopy-requests|dirty-sync-missed-zero-copy)$/, 'count'],
  // XBZRLECacheStats (query-migrate's xbzrle-cache) and the dirty-limit times (microseconds).
  [/\.migration\.xbzrle-cache\.(cache-size|bytes)$/, 'bytes'],
  [/\.migration\.xbzrle-cache\.(pages|cache-miss|overflow)$/, 'pages'],
  [/\.migration\.xbzrle-cache\.cache-miss-rate$/, 'ratio'],
  [/\.migration\.xbzrle-cache\.encoding-rate$/, 'factor'],
  [/\.migration\.dirty-limit-(throttle-time-per-round|ring-full-time)$/, 'us'],
  // Rates.
  [/(^|[._])bytes_per_s$/, 'bytes_per_s'],
  [/(^|\.)(pswpin|pswpout|pgsteal|pgscan)_per_s$/, 'pages_per_s'],
  [/(^|[._])throughput(_per_s)?$|^throughput\./, 'rate'],
  [/_per_s$/, 'rate'],
  // Sizes.
  [/(^|[._])bytes($|[._])/, 'bytes'],
  [/^cgroup\..+\.(memory|swap)_current$/, 'bytes'],
  // Times.
  [/(^|[._])ns($|_)/, 'ns'],
  [/_us$/, 'us'],
  // Shares and factors.
  [/_pct$|\.(some|full)_avg(10|60|300)$/, 'percent'],
  [/(^|[._])(ratio|fraction)$/, 'ratio'],
  [/(^|[._])(util|utilisation)(_mean|_max)?$/, 'ratio'],
  [/_x(_mean)?$/, 'factor'],
  // 4 KiB pages counted by Linux (vmstat, virtio-balloon pfns) and by memtwin's content check.
  [
    /(^|[._])(pages_differing|hinted_pages|reported_pages|pages_hinted|pfns_inflated|pfns_deflated|numa_pages_migrated|pgmigrate_success|pgsteal_kswapd|pgsteal_direct|pgsteal|pswpin|pswpout)$/,
    'pages',
  ],
  // Event and object counters.
  [
    /(^|[._])(faults|accesses|stalls|migration_waits|threads_stopped|thp_[a-z_]+|compact_(stall|success|fail)|numa_pte_updates|numa_hint_faults(_local)?|khugepaged_pages_collapsed|agent_collapses|collapses|ept_violations|completed|vm_lost|running|migrations|messages|exits|kicks|config_exits|interrupts|host_syscalls|hint_messages|reports|oom_kills?|oom_deflates|alloc_stalls|allocstall_normal|pgmajfault|events_(low|high|max|oom|oom_kill))$/,
    'count',
  ],
  [/^(local|remote)\.\d+$/, 'count'],
];

/** The metric's unit from METRIC_UNITS, or undefined when no rule knows it. */
export function metricUnit(name: string): Unit | undefined {
  for (const [re, unit] of METRIC_UNITS) if (re.test(name)) return unit;
  return undefined;
}

/** The unit a metric or series name implies; a count when no rule knows the name. */
export function unitOf(name: string): Unit {
  return metricUnit(name) ?? 'count';
}

/**
 * The word a sentinel value stands for: -1 as a time is "never" (a
 * migration or evacuation that did not complete, huge pages that never
 * reached 90 %); undefined for an ordinary value.
 */
export function sentinelWord(unit: Unit, v: number): string | undefined {
  if (v === -1 && (unit === 'ns' || unit === 'us' || unit === 'ms')) return 'never';
  return undefined;
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
const PAGE_SCALES: Scale[] = COUNT_SCALES.map((s) => ({ div: s.div, suffix: `${s.suffix} pages` }));
const PAGE_RATE_SCALES: Scale[] = COUNT_SCALES.map((s) => ({ div: s.div, suffix: `${s.suffix} pages/s` }));
const BYTE_RATE_SCALES: Scale[] = BYTE_SCALES.map((s) => ({ div: s.div, suffix: `${s.suffix}/s` }));
const MBPS_SCALES: Scale[] = [
  { div: 1, suffix: ' Mbit/s' },
  { div: 1e3, suffix: ' Gbit/s' },
];
/** Times given in µs or ms: the ns scales, divided to their unit. */
const TIME_IN: Partial<Record<Unit, number>> = { ns: 1, us: 1e3, ms: 1e6 };

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
    case 'us':
    case 'ms': {
      const f = TIME_IN[unit]!;
      const s = pick(NS_SCALES, magnitude * f);
      return { div: s.div / f, suffix: s.suffix };
    }
    case 'rate':
      return pick(RATE_SCALES, magnitude);
    case 'bytes_per_s':
      return pick(BYTE_RATE_SCALES, magnitude);
    case 'pages':
      return pick(PAGE_SCALES, magnitude);
    case 'pages_per_s':
      return pick(PAGE_RATE_SCALES, magnitude);
    case 'mbps':
      return pick(MBPS_SCALES, magnitude);
    case 'ratio':
      return { div: 0.01, suffix: ' %' };
    case 'percent':
      return { div: 1, suffix: ' %' };
    case 'factor':
      return { div: 1, suffix: '×' };
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

/** A value in a unit, scaled to a human unit of its own magnitude; a sentinel (-1 as a time) as its word. */
export function formatValue(v: number, unit: Unit): string {
  if (!Number.isFinite(v)) return nonFinite(v);
  const word = sentinelWord(unit, v);
  if (word !== undefined) return word;
  switch (unit) {
    case 'ratio':
      return `${sig3(v * 100)} %`;
    case 'count':
      if (Number.isInteger(v)) return groupThousands(v);
      return Math.abs(v) >= 1000 ? groupThousands(Math.round(v)) : sig3(v);
    case 'pages':
      // Below a thousand, the exact number of pages.
      if (Number.isInteger(v) && Math.abs(v) < 1000) return `${v} page${v === 1 ? '' : 's'}`;
      break;
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
 * A final metric's value in human units, its unit from METRIC_UNITS
 * (`_bytes` in KiB/MiB/GiB, `_ns` in µs/ms/s, QEMU's total-time in ms shown
 * as a time, `_ratio` as %, ...); -1 as a time prints "never".
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

/**
 * Whether a chart of these values wants a logarithmic axis: its positive
 * values span more than two decades (max / min > 100), so that on a linear
 * axis the small ones would be invisible (117 µs beside 1.41 s). Zeros,
 * negatives and non-finite values (drawn as words or not at all) do not count.
 */
export function wantsLogScale(values: Iterable<number>): boolean {
  let min = Infinity;
  let max = 0;
  for (const v of values) {
    if (!Number.isFinite(v) || v <= 0) continue;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  return max > 0 && max / min > 100;
}
