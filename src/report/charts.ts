/**
 * Server-side ECharts rendering to inline SVG strings, for the HTML reports.
 *
 * Output is deterministic (same input, byte-identical SVG) and self-contained:
 * ZRender's per-instance id prefixes are replaced by the caller's chart id, the
 * hover-only <style> block and classes are dropped, and so are the xmlns
 * attributes (inline SVG in HTML does not need them), which leaves no URL at
 * all in the markup.
 */
import { createRequire } from 'node:module';
import type * as ECharts from 'echarts';
import { formatTick, formatValue, scaleFor, sentinelWord, wantsLogScale, type Scale, type Unit } from './units.ts';

export const CHART_WIDTH = 1100;
export const CHART_HEIGHT = 320;

/** Series colours: a palette with good contrast on white, in a fixed order. */
export const PALETTE = [
  '#4e79a7',
  '#f28e2b',
  '#59a14f',
  '#e15759',
  '#76b7b2',
  '#edc948',
  '#b07aa1',
  '#ff9da7',
  '#9c755f',
  '#bab0ac',
  '#1f77b4',
  '#8c564b',
];

// No double quotes: ZRender writes this into a double-quoted style attribute unescaped.
const FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', Arial, sans-serif";
const AXIS_COLOR = '#5a5f6b';
const GRID_COLOR = '#e3e6ec';

/** The value (y) axis both chart kinds use, labelled in the metric's scale. */
function valueAxis(ys: Scale) {
  return {
    type: 'value' as const,
    axisLine: { show: false },
    axisLabel: { color: AXIS_COLOR, fontSize: 11, formatter: (v: number) => formatTick(v, ys) },
    splitLine: { show: true, lineStyle: { color: GRID_COLOR } },
  };
}

/** The base of a log axis: powers of 1024 for sizes (1 KiB, 1 MiB, 1 GiB), of 10 otherwise (1 µs, 10 µs...). */
export function logBase(unit: Unit): number {
  return unit === 'bytes' || unit === 'bytes_per_s' ? 1024 : 10;
}

/** The range of whole powers of `base` a log axis spans for positive values from `min` to `max`. */
export function logBounds(min: number, max: number, base = 10): { min: number; max: number } {
  const log = (x: number): number => Math.log(x) / Math.log(base);
  // Rounded first: log(1000)/log(10) is 2.9999999999999996.
  const lo = base ** Math.floor(Number(log(min).toFixed(9)));
  const hi = base ** Math.ceil(Number(log(max).toFixed(9)));
  return { min: lo, max: hi > lo ? hi : lo * base };
}

/** A log value axis over raw values, each tick printed in its own human unit (100 µs, 1 ms, 10 ms). */
function logAxis(unit: Unit, bounds: { min: number; max: number }) {
  return {
    type: 'log' as const,
    logBase: logBase(unit),
    min: bounds.min,
    max: bounds.max,
    axisLine: { show: false },
    axisLabel: { color: AXIS_COLOR, fontSize: 11, formatter: (v: number) => formatValue(v, unit) },
    splitLine: { show: true, lineStyle: { color: GRID_COLOR } },
  };
}

function positiveRange(values: number[]): { min: number; max: number } {
  let min = Infinity;
  let max = 0;
  for (const v of values)
    if (Number.isFinite(v) && v > 0) {
      min = Math.min(min, v);
      max = Math.max(max, v);
    }
  return max > 0 ? { min, max } : { min: 1, max: 10 };
}

export interface LineSeries {
  name: string;
  /** Sample times, virtual ns. */
  t_ns: number[];
  /** Values in the chart's unit, same length as t_ns. */
  values: number[];
  color?: string;
  dashed?: boolean;
}

/** A vertical line at a moment of the run (migration start, switchover, a balloon command...). */
export interface TimeMarker {
  t_ns: number;
  label: string;
  color?: string;
}

export interface LineChartSpec {
  /** Unique within the page: prefixes the SVG's element ids. */
  id: string;
  series: LineSeries[];
  unit: Unit;
  /** Show the legend (default: when there is more than one series). */
  legend?: boolean;
  /** Accessible label of the chart. */
  label?: string;
  width?: number;
  height?: number;
  /** Event markers drawn as labelled vertical lines. */
  markers?: TimeMarker[];
  /** Log y axis: default by wantsLogScale (positive values spanning more than two decades); zeros are then not drawn. */
  log?: boolean;
}

export interface BarGroup {
  name: string;
  /** One value per category, in the chart's unit. */
  values: number[];
  color?: string;
}

export interface BarChartSpec {
  id: string;
  categories: string[];
  /** One bar per group within each category (e.g. one group per run). */
  groups: BarGroup[];
  unit: Unit;
  label?: string;
  width?: number;
  height?: number;
}

/** The time unit of an x axis spanning up to `maxNs`: s from 2 s, ms from 2 ms, µs below. */
export function timeScale(maxNs: number): Scale {
  if (maxNs >= 2e9) return { div: 1e9, suffix: ' s' };
  if (maxNs >= 2e6) return { div: 1e6, suffix: ' ms' };
  return { div: 1e3, suffix: ' µs' };
}

/**
 * Advance widths (em) of DejaVu Sans, the widest of the usual sans-serif
 * fonts and Debian's default: ZRender's own estimate, made for narrower
 * fonts, lets legend items overlap when the browser renders them in it.
 */
const EM: Record<string, number> = (() => {
  const w: Record<string, number> = {};
  const set = (chars: string, em: number): void => {
    for (const c of chars) w[c] = em;
  };
  set('0123456789', 0.636);
  set('abdgpqhnu', 0.635);
  set('ceosz', 0.6);
  set('fjilt', 0.4);
  set('r', 0.411);
  set('k', 0.579);
  set('vxy', 0.592);
  set('m', 0.974);
  set('w', 0.818);
  set('ABCKPRSTXYZ', 0.7);
  set('DGHNOQUV', 0.79);
  set('EFL', 0.632);
  set('IJ', 0.3);
  set('M', 0.863);
  set('W', 0.989);
  set(" .,:;'|!/", 0.34);
  set('-', 0.361);
  set('_*', 0.5);
  set('"()[]', 0.401);
  set('?', 0.531);
  set('{}$µ', 0.636);
  set('<>=+#~&', 0.838);
  set('%@', 1.0);
  return w;
})();

/** Text width in px for a CSS font string (size taken from it), a little generous. */
export function measureTextWidth(text: string, font?: string): number {
  const m = /(\d+(?:\.\d+)?)px/.exec(font ?? '');
  const px = m ? Number(m[1]) : 12;
  let em = 0;
  if (font && /mono/.test(font)) em = [...text].length * 0.602;
  else for (const ch of text) em += EM[ch] ?? (ch.charCodeAt(0) >= 0x2e80 ? 1 : 0.7);
  if (font && /bold|[6-9]00/.test(font)) em *= 1.1;
  return em * px * 1.03;
}

let loaded: typeof ECharts | undefined;
/**
 * ECharts, loaded at the first chart: a command that draws none (exec, --help) does not pay for it, and
 * `require` gives its single-file build (dist/echarts.js), which loads in ~0.1 s where the ES-module
 * tree that `import` resolves to (~700 files) takes ~0.5 s.
 */
function echarts(): typeof ECharts {
  if (!loaded) {
    loaded = createRequire(import.meta.url)('echarts') as typeof ECharts;
    loaded.setPlatformAPI({ measureText: (text: string, font?: string) => ({ width: measureTextWidth(text, font) }) });
  }
  return loaded;
}

const textWidth = (s: string, px = 12): number => measureTextWidth(s, `${px}px sans-serif`);

/** How many rows a horizontal legend of these names needs in `width` pixels. */
function legendRows(names: string[], width: number): number {
  if (names.length === 0) return 0;
  let rows = 1;
  let x = 0;
  for (const n of names) {
    const w = 25 + 5 + textWidth(n) + 14;
    if (x > 0 && x + w > width) {
      rows++;
      x = 0;
    }
    x += w;
  }
  return rows;
}

function maxAbs(values: Iterable<number>): number {
  let m = 0;
  for (const v of values) if (Number.isFinite(v) && Math.abs(v) > m) m = Math.abs(v);
  return m;
}

/** Render an option to an SVG string and make it deterministic and self-contained. */
function render(id: string, width: number, height: number, option: ECharts.EChartsCoreOption, label: string | undefined): string {
  const chart = echarts().init(null, null, { renderer: 'svg', ssr: true, width, height });
  let svg: string;
  try {
    chart.setOption(option);
    svg = chart.renderToSVGString();
  } finally {
    chart.dispose();
  }
  const safeId = id.replace(/[^A-Za-z0-9_-]/g, '_');
  svg = svg
    .replace(/<style\b[^>]*>[\s\S]*?<\/style>\s*/g, '')
    .replace(/ class="zr\d+-cls-\d+"/g, '')
    .replace(/ pointer-events="visible"/g, '')
    .replace(/ xmlns(:\w+)?="[^"]*"/g, '')
    .replace(/ version="1\.1" baseProfile="full"/, '')
    .replace(/\bzr\d+-/g, `${safeId}-`)
    .replace(/<defs >\s*<\/defs>\s*/g, '');
  const aria = label === undefined ? '' : ` role="img" aria-label="${escapeAttr(label)}"`;
  return svg.replace(/^<svg\b/, `<svg id="${safeId}"${aria}`).trimEnd();
}

function escapeAttr(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function baseOption(names: string[], width: number): { option: Record<string, unknown>; top: number } {
  // Estimate generously: ECharts packs a little less per row than the estimate.
  const rows = legendRows(names, (width - 40) * 0.9);
  // A legend row is its text line (~12.4px) plus itemGap, which ECharts applies vertically too.
  const top = rows === 0 ? 16 : 12 + rows * 27;
  return {
    top,
    option: {
      animation: false,
      backgroundColor: '#ffffff',
      textStyle: { fontFamily: FONT, fontSize: 12 },
      legend:
        rows === 0
          ? { show: false }
          : {
              show: true,
              type: 'plain',
              top: 6,
              left: 'center',
              width: width - 40,
              itemGap: 14,
              itemWidth: 25,
              itemHeight: 10,
              textStyle: { color: '#333a45', fontSize: 12 },
            },
    },
  };
}

/** A line chart of several series over virtual time; x in µs/ms/s chosen from the range. */
export function lineChartSVG(spec: LineChartSpec): string {
  const width = spec.width ?? CHART_WIDTH;
  const baseHeight = spec.height ?? CHART_HEIGHT;
  const names = spec.series.map((s) => s.name);
  const { option, top } = baseOption((spec.legend ?? names.length > 1) ? names : [], width);
  const height = baseHeight + Math.max(0, top - 40);
  const maxT = maxAbs(spec.series.flatMap((s) => [s.t_ns[0] ?? 0, s.t_ns[s.t_ns.length - 1] ?? 0]));
  const ts = timeScale(maxT);
  const all = spec.series.flatMap((s) => s.values);
  const log = spec.log ?? lineWantsLog(spec.series);
  // A log axis takes raw values (each tick in its own unit); a linear one values in one scale.
  const ys = log ? { div: 1, suffix: '' } : scaleFor(spec.unit, maxAbs(all));
  const series = spec.series.map((s, i) => {
    const color = s.color ?? PALETTE[i % PALETTE.length]!;
    const data: [number, number][] = [];
    const n = Math.min(s.t_ns.length, s.values.length);
    for (let k = 0; k < n; k++) {
      const v = s.values[k]!;
      data.push([s.t_ns[k]! / ts.div, Number.isFinite(v) && (!log || v > 0) ? v / ys.div : NaN]);
    }
    return {
      type: 'line',
      name: s.name,
      data,
      showSymbol: false,
      symbol: 'none',
      sampling: 'lttb',
      color,
      lineStyle: { width: 1.6, color, type: s.dashed ? 'dashed' : 'solid' },
      emphasis: { disabled: true },
      ...(i === 0 && spec.markers?.length ? { markLine: markLines(spec.markers, ts, maxT > 0 ? maxT / ts.div : 1) } : {}),
    };
  });
  return render(
    spec.id,
    width,
    height,
    {
      ...option,
      grid: { left: 84, right: 36, top, bottom: 44 },
      xAxis: {
        type: 'value',
        min: 0,
        max: maxT > 0 ? maxT / ts.div : 1,
        name: 'virtual time',
        nameLocation: 'middle',
        nameGap: 26,
        nameTextStyle: { color: AXIS_COLOR, fontSize: 12 },
        axisLine: { lineStyle: { color: '#9aa0ab' } },
        axisTick: { lineStyle: { color: '#9aa0ab' } },
        axisLabel: { color: AXIS_COLOR, fontSize: 11, hideOverlap: true, formatter: (v: number) => formatTick(v, ts) },
        splitLine: { show: true, lineStyle: { color: GRID_COLOR } },
      },
      yAxis: log ? logAxis(spec.unit, logBounds(positiveRange(all).min, positiveRange(all).max, logBase(spec.unit))) : valueAxis(ys),
      series,
    },
    spec.label,
  );
}

/**
 * The log rule for lines: the lines' peaks span more than two decades (one
 * run's line would lie flat on the axis beside another's). A single line
 * ramping up from near zero stays linear.
 */
export function lineWantsLog(series: { values: number[] }[]): boolean {
  return wantsLogScale(series.map((s) => maxAbs(s.values.filter((v) => v > 0))));
}

/**
 * One label for markers that fall together: `kind (who)` labels become the
 * kinds once each and who in brackets, at most two named:
 * "switchover / completed (vm0, vm1 +2)".
 */
export function markerLabel(labels: string[]): string {
  const kinds: string[] = [];
  const who: string[] = [];
  for (const l of labels) {
    const m = /^(.*) \((.*)\)$/.exec(l);
    const kind = m ? m[1]! : l;
    if (!kinds.includes(kind)) kinds.push(kind);
    if (m && !who.includes(m[2]!)) who.push(m[2]!);
  }
  // Two names at most: the label runs along a line about 250 px long.
  const named = who.length > 2 ? `${who.slice(0, 2).join(', ')} +${who.length - 2}` : who.join(', ');
  return `${kinds.join(' / ')}${who.length ? ` (${named})` : ''}`;
}

/**
 * Event markers as one markLine: a dashed line per moment (and colour),
 * labels written along the lines. Lines closer than 2 % of the time axis
 * share one label (markerLabel) on the first of them, so that close
 * moments (a switchover and its completion, the same event in several
 * runs) do not write over each other.
 */
function markLines(markers: TimeMarker[], ts: Scale, axisMax: number) {
  const sorted = [...markers].sort((a, b) => a.t_ns - b.t_ns || (a.label < b.label ? -1 : a.label > b.label ? 1 : 0));
  const lines = new Map<string, { x: number; labels: string[]; color: string }>();
  for (const m of sorted) {
    const color = m.color ?? '#6b7280';
    const key = `${m.t_ns} ${color}`;
    const e = lines.get(key);
    if (!e) lines.set(key, { x: m.t_ns / ts.div, labels: [m.label], color });
    else if (!e.labels.includes(m.label)) e.labels.push(m.label);
  }
  const clusters: { x: number; labels: string[]; color: string }[][] = [];
  for (const e of lines.values()) {
    const last = clusters[clusters.length - 1];
    if (last && e.x - last[0]!.x <= axisMax * 0.02) last.push(e);
    else clusters.push([e]);
  }
  return {
    silent: true,
    symbol: ['none', 'none'],
    animation: false,
    data: clusters.flatMap((c) =>
      c.map((e, i) => ({
        xAxis: e.x,
        lineStyle: { color: e.color, type: 'dashed', width: 1 },
        label: {
          show: i === 0,
          position: 'insideEndTop',
          formatter: i === 0 ? markerLabel(c.flatMap((x) => x.labels)) : '',
          color: '#333a45',
          fontSize: 10,
        },
      })),
    ),
  };
}

export interface RunBarsSpec {
  id: string;
  /** One row per run, top to bottom. */
  runs: string[];
  /** One value per run (one bar per row)... */
  values?: number[];
  /** ...or several bars per row, one per group (e.g. per VM), each a value per run, with a legend. */
  groups?: { name: string; values: number[] }[];
  /** A colour per run (the run's colour in the over-time charts), for a single bar per row. */
  colors?: string[];
  unit: Unit;
  label?: string;
  width?: number;
}

/** Colours of the groups within a row (VMs), apart from the runs' PALETTE colours. */
export const GROUP_PALETTE = ['#2f4b7c', '#a05195', '#ff7c43', '#665191', '#d45087', '#ffa600', '#003f5c', '#f95d6a'];

/**
 * One metric across a sweep's runs as horizontal bars, run names on the
 * left (they fit however long), each value printed at the end of its bar.
 * A sentinel (-1 as a time) is its word ("never") instead of a bar, a zero
 * is "0"; values spanning more than two decades get a log axis.
 */
export function runBarsSVG(spec: RunBarsSpec): string {
  const width = spec.width ?? 540;
  const groups = spec.groups ?? [{ name: '', values: spec.values ?? [] }];
  const several = groups.length > 1;
  const all = groups.flatMap((g) => g.values);
  const wordOf = (v: number): string | undefined => sentinelWord(spec.unit, v) ?? (Number.isFinite(v) ? undefined : 'n/a');
  const drawn = all.filter((v) => wordOf(v) === undefined);
  const log = wantsLogScale(drawn);
  const bounds = log ? logBounds(positiveRange(drawn).min, positiveRange(drawn).max, logBase(spec.unit)) : undefined;
  const ys = log ? { div: 1, suffix: '' } : scaleFor(spec.unit, maxAbs(drawn));
  const longest = Math.max(0, ...spec.runs.map((r) => textWidth(r, 11)));
  const left = Math.min(Math.round(width * 0.45), Math.ceil(longest) + 16);
  const valueWidth = Math.max(30, ...all.map((v) => textWidth(wordOf(v) ?? formatValue(v, spec.unit), 10)));
  const legend = several
    ? baseOption(
        groups.map((g) => g.name),
        width,
      )
    : undefined;
  const top = legend ? legend.top : 12;
  const barHeight = several ? 11 : 16;
  const rowHeight = several ? groups.length * (barHeight + 2) + 10 : 24;
  const height = top + spec.runs.length * rowHeight + 30;
  const series = groups.map((g, gi) => ({
    type: 'bar',
    name: g.name,
    barMaxWidth: barHeight,
    barGap: '15%',
    emphasis: { disabled: true },
    color: several ? GROUP_PALETTE[gi % GROUP_PALETTE.length]! : PALETTE[0]!,
    data: g.values.map((v, i) => {
      const word = wordOf(v);
      const color = several ? GROUP_PALETTE[gi % GROUP_PALETTE.length]! : (spec.colors?.[i] ?? PALETTE[0]!);
      // No bar (a word, or a zero on a log axis): an invisible bar at the axis' start carries the label.
      const bare = word !== undefined || (log && v <= 0);
      return {
        value: bare ? (bounds ? bounds.min : 0) : v / ys.div,
        itemStyle: { color: bare ? 'rgba(0,0,0,0)' : color },
        label: {
          show: true,
          position: 'right',
          formatter: word ?? formatValue(v, spec.unit),
          fontSize: several ? 9 : 10,
          color: word ? '#7a2a1a' : '#333a45',
        },
      };
    }),
  }));
  return render(
    spec.id,
    width,
    height,
    {
      animation: false,
      backgroundColor: '#ffffff',
      textStyle: { fontFamily: FONT, fontSize: 12 },
      ...(legend ? { legend: legend.option['legend'] } : {}),
      grid: { left, right: Math.ceil(valueWidth) + 12, top, bottom: 30 },
      yAxis: {
        type: 'category',
        inverse: true,
        data: spec.runs,
        axisLine: { lineStyle: { color: '#9aa0ab' } },
        axisTick: { show: false },
        axisLabel: { color: '#333a45', fontSize: 11, interval: 0 },
      },
      xAxis: {
        ...(bounds ? logAxis(spec.unit, bounds) : valueAxis(ys)),
        axisLabel: {
          color: AXIS_COLOR,
          fontSize: 10,
          hideOverlap: true,
          formatter: (v: number) => (bounds ? formatValue(v, spec.unit) : formatTick(v, ys)),
        },
      },
      series,
    },
    spec.label,
  );
}

/** A bar chart of values by category, one bar per group within each category. */
export function barChartSVG(spec: BarChartSpec): string {
  const width = spec.width ?? CHART_WIDTH;
  const baseHeight = spec.height ?? CHART_HEIGHT;
  const names = spec.groups.map((g) => g.name);
  const { option, top } = baseOption(names.length > 1 ? names : [], width);
  const all = spec.groups.flatMap((g) => g.values);
  const log = wantsLogScale(all);
  const ys = log ? { div: 1, suffix: '' } : scaleFor(spec.unit, maxAbs(all));
  const plotWidth = width - 108;
  const perCategory = plotWidth / Math.max(1, spec.categories.length);
  const longest = Math.max(0, ...spec.categories.map((c) => textWidth(c, 11)));
  const rotate = longest + 8 > perCategory ? 30 : 0;
  const labelDrop = rotate ? Math.min(120, Math.ceil(longest * 0.5 + 12)) : 0;
  const height = baseHeight + Math.max(0, top - 40) + labelDrop;
  // Value labels on the bars only where they fit across a bar.
  const barWidth = (perCategory * 0.7) / Math.max(1, spec.groups.length);
  const widest = Math.max(0, ...spec.groups.flatMap((g) => g.values.map((v) => textWidth(formatValue(v, spec.unit), 10))));
  const showValues = widest + 2 <= Math.max(barWidth, perCategory / Math.max(1, spec.groups.length));
  const series = spec.groups.map((g, i) => {
    const color = g.color ?? PALETTE[i % PALETTE.length]!;
    return {
      type: 'bar',
      name: g.name,
      data: g.values.map((v) => (Number.isFinite(v) && (!log || v > 0) ? v / ys.div : NaN)),
      color,
      itemStyle: { color },
      barMaxWidth: 48,
      emphasis: { disabled: true },
      label: {
        show: showValues,
        position: 'top',
        fontSize: 10,
        color: '#333a45',
        formatter: (p: { dataIndex: number }) => formatValue(g.values[p.dataIndex] ?? NaN, spec.unit),
      },
    };
  });
  return render(
    spec.id,
    width,
    height,
    {
      ...option,
      grid: { left: 84, right: 24, top: top + (showValues ? 10 : 0), bottom: 28 + labelDrop },
      xAxis: {
        type: 'category',
        data: spec.categories,
        axisLine: { lineStyle: { color: '#9aa0ab' } },
        axisTick: { alignWithLabel: true, lineStyle: { color: '#9aa0ab' } },
        axisLabel: { color: AXIS_COLOR, fontSize: 11, interval: 0, rotate },
      },
      yAxis: log ? logAxis(spec.unit, logBounds(positiveRange(all).min, positiveRange(all).max, logBase(spec.unit))) : valueAxis(ys),
      series,
    },
    spec.label,
  );
}
