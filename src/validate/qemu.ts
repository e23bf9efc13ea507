/**
 * `memtwin validate qemu`: memtwin's migration model (src/vmm/migration)
 * against real QEMU migrations recorded in validation/qemu/results.json
 * (src/validate/real.ts). For each recorded run, memtwin runs the same
 * configuration (guest size, backend, non-zero memory, dirtied working set
 * and the dirty rate measured in the guest, max-bandwidth, downtime-limit,
 * postcopy, free page hints) and the report compares query-migrate's
 * numbers. Deterministic: no clock, no randomness.
 *
 * Inputs memtwin takes from the measurements (said in the report):
 * - the link rate: the `ceiling` run's ram.transferred / total-time (no
 *   max-bandwidth cap; under TCG the migration thread, not the socket, sets it);
 * - the guest's non-zero memory at boot: the idle run of the same guest size
 *   (ram.normal pages), since memtwin's guest starts with all RAM zero;
 * - where that memory lies (the guest layout scripts/validate-qemu/guest-layout.ts
 *   measured) and the guest kernel's own writes;
 * - the dirty rate the guest program measured while migration ran.
 */
import { readFileSync, writeFileSync, mkdirSync, readdirSync, existsSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { vmTestKernel } from '../vmm/test_fixtures.ts';
import { Vm, type VmConfig } from '../vmm/vm.ts';
import { Link } from '../vmm/migration/link.ts';
import { MigrationState, type MigrationIteration } from '../vmm/migration/migration.ts';
import type { FreePageHints } from '../vmm/migration/ram.ts';
import type { Kernel } from '../kernel/kernel.ts';
import { PAGE_SIZE, PMD_SIZE } from '../kernel/uapi.ts';
import { NSEC_PER_MSEC, NSEC_PER_SEC } from '../sim/clock.ts';
import { BATCHES, MiB, sampleOfQuery, type QuerySample, type RealResults, type RealRun } from './matrix.ts';
import { passesOf, type Pass } from './passes.ts';

export const METRICS = [
  'total-time',
  'downtime',
  'ram.transferred',
  'ram.normal',
  'ram.duplicate',
  'dirty-sync-count',
  'postcopy-requests',
] as const;
export type Metric = (typeof METRICS)[number];
/** The bound the issue sets for total time and bytes on precopy and free-page-hint runs. */
export const BOUND_PCT = 10;
const BOUNDED: readonly Metric[] = ['total-time', 'ram.transferred'];
/** Downtime on those runs: within 25%, or within 10 ms (a few ms of downtime cannot be 25%-exact). */
export const DOWNTIME_BOUND_PCT = 25;
export const DOWNTIME_BOUND_MS = 10;
/** dirty-sync-count on those runs: within one sync. */
export const SYNC_BOUND = 1;
/** Total time on postcopy runs. */
export const POSTCOPY_BOUND_PCT = 15;
const LINK_LATENCY_NS = 20_000;
/** The validation's link is receiver-limited (Link.receiverLimited; r6-qemuval: 10 of 13 downtimes within the bound, 8 wire-limited). */
const RECEIVER_LIMITED = true;
const LIMIT_NS = 300 * NSEC_PER_SEC;

export interface Calibration {
  /** bytes/s of the link (the ceiling run). */
  linkBps: number;
  /**
   * bytes/s after a postcopy switchover, from the batch's postcopy ceiling
   * run (postcopy at once, no cap; postcopyLinkFor): under TCG postcopy
   * moves pages faster than precopy's ceiling (the `1g` batch: 381 MB/s of
   * bytes over its postcopy time, against 288), so the postcopy runs of a
   * batch that has this run use it as their link rate. Null: none recorded.
   */
  postcopyBps: number | null;
  /** Where postcopyBps comes from (this batch's postcopy ceiling, or another batch's ratio to its precopy ceiling). */
  postcopySource: string | null;
  /** Non-zero pages of an idle guest, by guest size (MiB). */
  bootNonZeroPages: Record<number, number>;
}

export interface ModelInputs {
  memMiB: number;
  backend: string;
  /** Non-zero pages before migration: the boot's, the program's touched and freed memory. */
  nonZeroPages: number;
  /** The boot's non-zero pages (the program's memory follows them). */
  bootPages: number;
  wsPages: number;
  /** The order the program's writes visit its working set in guest-physical memory (orderWorkingSet); default scan. */
  wsOrder?: 'scan' | 'reverse' | 'random';
  /**
   * Index into the working set (in the program's write order) of its next
   * write when `migrate` is issued; default 0. inputsOf takes the real
   * run's, measured from its console lines (writerStartOf: 27,331-28,726 of
   * 32,768 on the 1g batch, the program having written for 3 s).
   */
  wsStart?: number;
  /**
   * Where the boot footprint and the program's pages lie in guest-physical
   * memory: `measured` (the default; validation/qemu/evidence/guest-layout-<MiB>.json,
   * scripts/validate-qemu/guest-layout.ts, with the guest kernel's own
   * writes it measured) or `even` (the boot footprint spread evenly, no
   * kernel writes). A guest size without a measurement is placed evenly.
   */
  layout?: 'measured' | 'even';
  /** Bytes one dirtying write stores (the program's write mode: 8 for 'word', 4096 for 'page'): what xbzrle sees change. */
  writeBytes: number;
  /** Pages/s the guest dirties (measured in the guest while migration ran). */
  dirtyRate: number;
  /** Where the dirty rate came from. */
  dirtyRateSource: string;
  /** Pages the guest's free page hints cover (MemFree at READY), 0 without hints. */
  hintedPages: number;
  linkBps: number;
  /** The link rate of a postcopy run when the batch measured postcopy's own (Calibration.postcopyBps); else null. */
  postcopyLinkBps: number | null;
  maxBandwidth: number;
  downtimeLimitMs: number;
  postcopyAfterMs: number | null;
  /** Further capabilities and parameters of the run, by QEMU's names, passed to memtwin's monitor as they are. */
  capabilities: Record<string, boolean>;
  parameters: Record<string, number | string>;
}

export interface Row {
  metric: Metric;
  real: number | null;
  predicted: number | null;
  /** (predicted - real) / real, %; null when real is 0 or either side is missing. */
  errorPct: number | null;
}

export interface RunComparison {
  id: string;
  what: string;
  status: string;
  inputs: ModelInputs | null;
  predicted: Record<string, unknown> | null;
  rows: Row[];
  /**
   * Whether total-time and ram.transferred are within BOUND_PCT (precopy and
   * hint runs), or total-time within POSTCOPY_BOUND_PCT (postcopy runs).
   */
  withinBound: boolean | null;
  /** Downtime within DOWNTIME_BOUND_PCT or DOWNTIME_BOUND_MS (precopy and hint runs). */
  downtimeWithin: boolean | null;
  /** dirty-sync-count within SYNC_BOUND (precopy and hint runs). */
  syncsWithin: boolean | null;
  notes: string[];
  /**
   * A configuration recorded several times: how many runs, how many
   * completed, which one is compared (the median by total-time) and the
   * spread of the completed runs (min, median, max) per metric.
   */
  repeats: { runs: number; completed: number; comparedRep: number; spread: Partial<Record<Metric, [number, number, number]>> } | null;
  /**
   * A run recorded with query-migrate samples: its passes (passesOf: each
   * bitmap sync after the setup's, when the polls saw it and the pages it
   * found dirty) beside memtwin's, read the same way from its own polls.
   */
  passes?: { real: Pass[]; memtwin: Pass[] };
}

/** The metrics whose spread over a batch's repeats the report gives. */
export const SPREAD_METRICS: readonly Metric[] = ['total-time', 'downtime', 'ram.transferred', 'dirty-sync-count'];

/** Status of a run memtwin refuses to model: QEMU's refusal text, as memtwin's monitor gives it. */
export const NOT_MODELLED = 'not modelled';

/** memtwin's monitor refused the run's configuration (a capability or parameter it does not model yet). */
export class NotModelled extends Error {
  constructor(readonly desc: string) {
    super(`${NOT_MODELLED}: ${desc}`);
  }
}

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

/** A query-migrate metric by this report's name. */
export function metricOf(q: Record<string, unknown> | null, m: Metric): number | null {
  if (!q) return null;
  const ram = (q.ram ?? {}) as Record<string, unknown>;
  switch (m) {
    case 'total-time':
    case 'downtime':
      return num(q[m]);
    case 'ram.transferred':
      return num(ram.transferred);
    case 'ram.normal':
      return num(ram.normal);
    case 'ram.duplicate':
      return num(ram.duplicate);
    case 'dirty-sync-count':
      return num(ram['dirty-sync-count']);
    case 'postcopy-requests':
      return num(ram['postcopy-requests']);
  }
}

/**
 * The run a configuration is compared by: of its completed runs, the median
 * by total-time (the lower middle one of an even count; ties by repeat), or
 * undefined when none completed.
 */
export function medianRun(runs: readonly RealRun[]): RealRun | undefined {
  const done = runs
    .filter((r) => r.status === 'completed')
    .sort((a, b) => metricOf(a.queryMigrate, 'total-time')! - metricOf(b.queryMigrate, 'total-time')! || (a.rep ?? 1) - (b.rep ?? 1));
  return done[Math.floor((done.length - 1) / 2)];
}

/** The batch a results file holds (absent: `main`), and the run that is its ceiling. */
export function batchOf(results: RealResults): { name: string; ceilingId: string; postcopyCeilingId: string | null } {
  const name = results.batch ?? 'main';
  const b = BATCHES.find((x) => x.name === name);
  return { name, ceilingId: b?.ceilingId ?? 'ceiling', postcopyCeilingId: b?.postcopyCeilingId ?? null };
}

/** A postcopy run's page rate after the switchover (bytes/s), from its first postcopy-active query-migrate; null without one. */
export function postcopyRate(run: RealRun): number | null {
  const sw = run.postcopySwitch?.queryMigrate;
  if (!sw) return null;
  const bytes = metricOf(run.queryMigrate, 'ram.transferred')! - metricOf(sw, 'ram.transferred')!;
  const ms = metricOf(run.queryMigrate, 'total-time')! - metricOf(sw, 'total-time')!;
  return ms > 0 ? (bytes * 1000) / ms : null;
}

export function calibrate(results: RealResults, file = 'validation/qemu/results.json'): Calibration {
  const { ceilingId } = batchOf(results);
  const ceiling = medianRun(results.runs.filter((r) => r.config.id === ceilingId));
  if (!ceiling) throw new Error(`${file} has no completed \`${ceilingId}\` run: the link rate is unknown`);
  const linkBps = (metricOf(ceiling.queryMigrate, 'ram.transferred')! * 1000) / metricOf(ceiling.queryMigrate, 'total-time')!;
  const bootNonZeroPages: Record<number, number> = {};
  for (const id of new Set(results.runs.filter((r) => r.config.program === null).map((r) => r.config.id))) {
    const idle = medianRun(results.runs.filter((r) => r.config.id === id));
    if (idle && bootNonZeroPages[idle.config.memMiB] === undefined)
      bootNonZeroPages[idle.config.memMiB] = metricOf(idle.queryMigrate, 'ram.normal')!;
  }
  const { postcopyCeilingId } = batchOf(results);
  const pcRun = postcopyCeilingId ? medianRun(results.runs.filter((r) => r.config.id === postcopyCeilingId)) : undefined;
  const cal: Calibration = { linkBps, bootNonZeroPages, postcopyBps: null, postcopySource: null };
  const raw = pcRun ? postcopyRate(pcRun) : null;
  if (pcRun && raw !== null) {
    cal.postcopyBps = postcopyLinkFor(pcRun, cal, raw);
    cal.postcopySource = `the rate at which memtwin reproduces the \`${postcopyCeilingId}\` run's total time (postcopy at once, no cap; its raw rate, bytes after the switch over the time since, ${(raw / MiB).toFixed(1)} MiB/s, also holds the destination's zero-page placement, which memtwin charges itself)`;
  }
  return cal;
}

/**
 * The link rate at which memtwin's postcopy reproduces the postcopy ceiling
 * run's total time. The raw rate (bytes after the switch over the time
 * since) folds in the time the destination spent placing the zero pages
 * at the end of RAM, which memtwin charges itself (UFFDIO_ZEROPAGE at the
 * host's measured costs): used as the link rate it counts that time twice
 * (1g: 1213 ms against 885). memtwin's time is about a + B / rate (a: what
 * does not go at the link rate); two predictions, at the raw rate and at
 * twice it, give a and B, and the rate solves a + B / rate = the real
 * total time. The raw rate when that has no solution.
 */
function postcopyLinkFor(run: RealRun, cal: Calibration, raw: number): number {
  const at = (bps: number): number => {
    const inp = { ...inputsOf(run, cal), postcopyLinkBps: Math.round(bps) };
    return metricOf(predict(inp), 'total-time')!;
  };
  const [t1, t2] = [at(raw), at(2 * raw)];
  const b = (t1 - t2) / (1 / raw - 1 / (2 * raw));
  const a = t1 - b / raw;
  const real = metricOf(run.queryMigrate, 'total-time')!;
  return b > 0 && real > a ? b / (real - a) : raw;
}

export function inputsOf(run: RealRun, cal: Calibration): ModelInputs {
  const c = run.config;
  const boot = cal.bootNonZeroPages[c.memMiB];
  if (boot === undefined) throw new Error(`no completed idle run of a ${c.memMiB} MiB guest: its boot footprint is unknown`);
  const p = c.program;
  const nonZeroPages = boot + ((p?.touchMiB ?? 0) + (p?.freeMiB ?? 0)) * (MiB / PAGE_SIZE);
  let dirtyRate = 0;
  let dirtyRateSource = 'no dirtying';
  if (p && p.wsMiB > 0 && p.rate > 0) {
    if (run.guest.dirtyRateDuring !== null) [dirtyRate, dirtyRateSource] = [run.guest.dirtyRateDuring, 'measured during migration'];
    else if (run.guest.dirtyRateBefore !== null) [dirtyRate, dirtyRateSource] = [run.guest.dirtyRateBefore, 'measured before migration'];
    else [dirtyRate, dirtyRateSource] = [p.rate, 'nominal (no measurement)'];
  }
  return {
    memMiB: c.memMiB,
    backend: c.backend,
    nonZeroPages: Math.min(nonZeroPages, (c.memMiB * MiB) / PAGE_SIZE),
    bootPages: boot,
    wsPages: p ? (p.wsMiB * MiB) / PAGE_SIZE : 0,
    writeBytes: p?.write === 'page' ? PAGE_SIZE : 8,
    dirtyRate,
    dirtyRateSource,
    hintedPages: c.freePageHint && run.guest.memFreeKiB !== null ? Math.floor((run.guest.memFreeKiB * 1024) / PAGE_SIZE) : 0,
    linkBps: Math.round(cal.linkBps),
    postcopyLinkBps: c.postcopyAfterMs !== null && cal.postcopyBps !== null ? Math.round(cal.postcopyBps) : null,
    maxBandwidth: c.maxBandwidth,
    downtimeLimitMs: c.downtimeLimitMs,
    postcopyAfterMs: c.postcopyAfterMs,
    // Where the program's round robin stood at `migrate`, measured from its console lines.
    ...(p && p.wsMiB > 0 && p.rate > 0 ? { wsStart: writerStartOf(run, (p.wsMiB * MiB) / PAGE_SIZE) ?? 0 } : {}),
    capabilities: { ...c.capabilities },
    // QEMU 7.2 (every batch's real side) has no zero-page-detection: its ram_save_target_page tries
    // save_zero_page before ram_save_multifd_page, so the migration thread finds zero pages and sends them on
    // the main channel, memtwin's `legacy` (its default follows QEMU 9.0: the multifd senders find them).
    parameters:
      c.capabilities?.multifd && !('zero-page-detection' in (c.parameters ?? {}))
        ? { ...c.parameters, 'zero-page-detection': 'legacy' }
        : { ...c.parameters },
  };
}

/**
 * Where the guest program's round robin stood when `migrate` was issued: the
 * index (in its write order) of its next write, from its console lines, or
 * null without them. native/guest/memtwin-dirty.c prints READY just before
 * its first write and then `MTD RATE <t_ms> <written> <pages/s>` each second
 * of its own clock; a line is read no earlier than it was printed, so the
 * program started at or before atMs - t_ms of every RATE line and at or
 * after READY's atMs. The count at `migrate` is then the RATE line nearest
 * that instant, moved on at the run's nominal rate.
 */
export function writerStartOf(run: RealRun, wsPages: number): number | null {
  const rate = run.config.program?.rate ?? 0;
  if (!wsPages || rate <= 0) return null;
  const ready = run.guest.lines.find((l) => l.line.startsWith('MTD READY'));
  const rates = run.guest.lines
    .map((l) => ({ atMs: l.atMs, m: /^MTD RATE (\d+) (\d+) /.exec(l.line) }))
    .filter((x): x is { atMs: number; m: RegExpExecArray } => x.m !== null)
    .map((x) => ({ atMs: x.atMs, t: Number(x.m[1]), written: Number(x.m[2]) }));
  if (!ready || !rates.length) return null;
  const start = Math.max(ready.atMs, Math.min(...rates.map((r) => r.atMs - r.t)));
  const at = -start; // the program's clock at `migrate` (ms)
  const near = rates.reduce((a, b) => (Math.abs(b.t - at) < Math.abs(a.t - at) ? b : a));
  return Math.round(near.written + (rate * (at - near.t)) / 1000) % wsPages;
}

/**
 * Free page hints as the guest would give them: its free pages are the top
 * `pages` of guest RAM (the layout predict() builds), all hinted when
 * migration starts; a page written since is no longer skippable.
 */
class TopHints implements FreePageHints {
  private readonly stale = new Set<number>();
  constructor(private readonly fromGpa: number) {}
  isSkippable(gpa: number): boolean {
    return gpa >= this.fromGpa && !this.stale.has(Math.floor(gpa / PAGE_SIZE));
  }
  markDirty(gpa: number, len: number): void {
    for (let a = gpa - (gpa % PAGE_SIZE); a < gpa + len; a += PAGE_SIZE) this.stale.add(a / PAGE_SIZE);
  }
}

/**
 * Put the working set's pages (the first `ws` of `program`, in guest-physical
 * order) in the order the program's round robin visits them: `scan`, the
 * migration's own order (the default); `reverse`; or `random` (a fixed
 * xorshift32 shuffle). Where the guest's allocator put the program's pages
 * is not measured; the order decides how many of the pages it rewrites
 * were already sent in the pass, so how many passes and syncs precopy takes.
 */
export function orderWorkingSet(program: number[], ws: number, order: 'scan' | 'reverse' | 'random'): void {
  const n = Math.min(ws, program.length);
  if (order === 'reverse') {
    const head = program.slice(0, n).reverse();
    for (let i = 0; i < n; i++) program[i] = head[i]!;
  } else if (order === 'random') {
    let x = 0x9e3779b9;
    for (let i = n - 1; i > 0; i--) {
      x ^= x << 13;
      x >>>= 0;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
      const j = x % (i + 1);
      [program[i], program[j]] = [program[j]!, program[i]!];
    }
  }
}

/** A guest's measured memory layout (scripts/validate-qemu/guest-layout.ts): runs of [first page, pages]. */
interface GuestLayout {
  boot: [number, number][];
  workingSet: [number, number][];
  rest: [number, number][];
}

/** Where the measured layouts are (validation/qemu/evidence/guest-layout-<MiB>.json). */
const LAYOUT_DIR = join(dirname(fileURLToPath(import.meta.url)), '../../validation/qemu/evidence');

/** The layout measured for a guest of `memMiB`, or null if none was (then predict() spreads the boot footprint evenly). */
export function measuredLayout(memMiB: number): GuestLayout | null {
  const f = join(LAYOUT_DIR, `guest-layout-${memMiB}.json`);
  return existsSync(f) ? (JSON.parse(readFileSync(f, 'utf8')) as GuestLayout) : null;
}

const expandRuns = (runs: [number, number][]): number[] => runs.flatMap(([a, n]) => Array.from({ length: n }, (_, j) => a + j));

/**
 * The boot's non-zero pages spread evenly over guest RAM; the program's
 * pages fill the rest from the bottom, the working set first. (What
 * predict() did before the layout was measured, and still does for a
 * guest size without a measurement.)
 */
function placeEvenly(inp: ModelInputs, totalPages: number): { nonZero: Uint8Array; program: number[] } {
  const nonZero = new Uint8Array(totalPages);
  const program: number[] = [];
  for (let i = 0; i < inp.bootPages; i++) nonZero[Math.floor((i * totalPages) / inp.bootPages)] = 1;
  for (let p = 0; p < totalPages && program.length < inp.nonZeroPages - inp.bootPages; p++) if (!nonZero[p]) program.push(p);
  return { nonZero, program };
}

/**
 * The measured layout: the calibrated boot footprint (the idle runs'
 * ram.normal) at the measured boot pages (spread over them if fewer, the
 * excess in the lowest pages nothing measured holds if more); the
 * program's pages where the guest put them, in the order it touches them
 * (its working set first), then the lowest free pages for what the
 * measurement had fewer of.
 */
function placeMeasured(inp: ModelInputs, totalPages: number, L: GuestLayout): { nonZero: Uint8Array; program: number[] } {
  const nonZero = new Uint8Array(totalPages);
  const program: number[] = [];
  const [boot, ws, rest] = [expandRuns(L.boot), expandRuns(L.workingSet), expandRuns(L.rest)];
  const taken = new Uint8Array(totalPages);
  for (const p of [...boot, ...ws, ...rest]) taken[p] = 1;
  if (inp.bootPages <= boot.length)
    for (let i = 0; i < inp.bootPages; i++) nonZero[boot[Math.floor((i * boot.length) / inp.bootPages)]!] = 1;
  else {
    for (const p of boot) nonZero[p] = 1;
    for (let p = 0, extra = inp.bootPages - boot.length; p < totalPages && extra > 0; p++)
      if (!taken[p]) [nonZero[p], taken[p], extra] = [1, 1, extra - 1];
  }
  const want = inp.nonZeroPages - inp.bootPages;
  for (const p of [...ws.slice(0, inp.wsPages), ...rest, ...ws.slice(inp.wsPages)])
    if (program.length < want && !nonZero[p]) program.push(p);
  for (let p = 0; p < totalPages && program.length < want; p++) if (!nonZero[p] && !taken[p]) program.push(p);
  return { nonZero, program };
}

/**
 * Pages the guest kernel rewrites while the program sleeps between its 10 ms
 * bursts, per 1/64 of guest RAM: what scripts/validate-qemu/guest-layout.ts
 * found changed besides the program's pages in a 100 ms window (1 GiB: 28
 * pages, between 32 and 96 MiB and near the top; 256 MiB: 25). predict()
 * rewrites them every 10 ms, on boot-footprint pages of the same slices.
 */
const KERNEL_SLICES: Record<number, Record<number, number>> = {
  1024: { 2: 9, 3: 4, 4: 2, 5: 2, 62: 11 },
  256: { 10: 1, 11: 5, 12: 1, 13: 2, 14: 1, 18: 1, 20: 3, 62: 11 },
};

function kernelWritePages(memMiB: number, totalPages: number, nonZero: Uint8Array, program: number[]): number[] {
  const prog = new Set(program);
  const boot: number[] = [];
  for (let p = 0; p < totalPages; p++) if (nonZero[p] && !prog.has(p)) boot.push(p);
  return Object.entries(KERNEL_SLICES[memMiB] ?? {}).flatMap(([slice, n]) => {
    const c = boot.filter((p) => Math.floor((p * 64) / totalPages) === Number(slice));
    return Array.from({ length: n }, (_, i) => c[Math.floor((i * c.length) / n)]!);
  });
}

/** The interval of the real recorder's query-migrate polls (src/validate/real.ts), used for memtwin's own. */
export const SAMPLE_MS = 50;

/** What predict() records besides its final query-migrate, when asked: its polls and its bitmap syncs (ns after migrate). */
export interface PredictTrace {
  samples: QuerySample[];
  iterations: MigrationIteration[];
}

/**
 * memtwin on one run's configuration: a source and a destination VMM on one
 * simulated host, the boot's non-zero pages and the program's touched
 * memory (the working set first) and freed memory where the guest put them
 * (`layout`); the working set written round robin at the measured rate
 * (1 ms steps), and the guest kernel's measured pages every 10 ms, while
 * the guest runs, on the source or, after a postcopy switchover, on the
 * destination.
 */
export function predict(inp: ModelInputs, trace?: PredictTrace): Record<string, unknown> {
  const k: Kernel = vmTestKernel({ nodes: 1, gib: 2, cpus: 4 });
  const m = inp.memMiB * MiB;
  if (inp.backend === 'hugetlb-2M') {
    const r = k.sysfs.write('/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages', String((2 * m) / PMD_SIZE));
    if (r !== 0) throw new Error(`memtwin: cannot reserve ${(2 * m) / PMD_SIZE} huge pages (${r})`);
  }
  const cfg = (name: string): VmConfig =>
    inp.backend === 'hugetlb-2M'
      ? {
          name,
          smp: 1,
          objects: [{ 'qom-type': 'memory-backend-file', id: 'mem', size: m, 'mem-path': '/dev/hugepages', share: true }],
          'memory-backend': 'mem',
        }
      : { name, m, smp: 1 };
  const src = new Vm(k, cfg('src'));
  const dst = new Vm(k, cfg('dst'));
  const totalPages = m / PAGE_SIZE;
  const layout = inp.layout === 'even' ? null : measuredLayout(inp.memMiB);
  const { nonZero, program } = layout ? placeMeasured(inp, totalPages, layout) : placeEvenly(inp, totalPages);
  for (const p of program) nonZero[p] = 1;
  orderWorkingSet(program, inp.wsPages, inp.wsOrder ?? 'scan');
  for (let p = 0; p < totalPages; p++)
    if (nonZero[p]) k.runAsTask({ ns: 0 }, () => src.access(0, p * PAGE_SIZE, 1, 1, true, (p % 251) + 1));
  const hints = inp.hintedPages > 0 ? new TopHints((totalPages - inp.hintedPages) * PAGE_SIZE) : undefined;
  let where: 'src' | 'stopped' | 'dst' = 'src';
  let done = false;
  const mig = new MigrationState(src, {
    ...(hints ? { hints } : {}),
    // The real runs are TCG's: its dirty memory bitmap keeps every write made after a sync.
    accel: 'tcg',
    onGuest: (w) => {
      where = w === 'stop' ? 'stopped' : w === 'start-source' ? 'src' : 'dst';
      if (w === 'start-destination' && mig.status === 'completed') done = true;
      if (w === 'start-destination') resume();
    },
  }).register();
  // A postcopy run's precopy is capped well below either rate; what the link decides is how fast postcopy moves pages.
  // Receiver-limited: on localhost the destination's load thread, not the wire, sets the ceiling (see
  // docs/validate-qemu.md), so the final stage may fill the receiver's socket buffer ahead as well.
  const link = new Link({ bandwidth: inp.postcopyLinkBps ?? inp.linkBps, latency: LINK_LATENCY_NS, receiverLimited: RECEIVER_LIMITED });
  mig.incoming('tcp:dst:4444', dst, link);
  const qmp = (execute: string, args?: Record<string, unknown>): void => {
    const r = src.monitor.execute(args ? { execute, arguments: args } : { execute }) as Record<string, unknown>;
    if ('error' in r) throw new Error(`memtwin: ${execute}: ${JSON.stringify(r.error)}`);
  };
  /** The run's own capabilities and parameters (multifd, xbzrle, postcopy-preempt): refused means not modelled yet. */
  const qmpOrNotModelled = (execute: string, args: Record<string, unknown>): void => {
    const r = src.monitor.execute({ execute, arguments: args }) as { error?: { desc?: string } };
    if (r.error) throw new NotModelled(r.error.desc ?? JSON.stringify(r.error));
  };
  qmp('migrate-set-parameters', { 'max-bandwidth': inp.maxBandwidth, 'downtime-limit': inp.downtimeLimitMs });
  const caps = [
    ...(inp.postcopyAfterMs !== null ? [{ capability: 'postcopy-ram', state: true }] : []),
    ...Object.entries(inp.capabilities).map(([capability, state]) => ({ capability, state })),
  ];
  if (caps.length) qmpOrNotModelled('migrate-set-capabilities', { capabilities: caps });
  if (Object.keys(inp.parameters).length) qmpOrNotModelled('migrate-set-parameters', inp.parameters);

  // The guest program's writes.
  let cursor = inp.wsPages > 0 ? (inp.wsStart ?? 0) % inp.wsPages : 0;
  let carry = 0;
  let fill = 2;
  let blocked = false;
  const vcpu = dst.vcpus[0]!.thread;
  const dstBase = dst.ramList.blocks[0]!.host;
  const srcBase = src.ramList.blocks[0]!.host;
  const writeOne = (): boolean => {
    const page = program[cursor]!;
    if (where === 'src') {
      k.runAsTask({ ns: 0 }, () => src.access(0, page * PAGE_SIZE, 1, 1, true, fill));
      mig.onGuestWrite(page * PAGE_SIZE, 1);
      // The store's size, as the workload engine's store hook reports it (xbzrle encodes what changed).
      mig.onGuestStore(0, srcBase + page * PAGE_SIZE, inp.writeBytes);
    } else {
      const r = k.runAsTask({ ns: 0 }, () => k.access(vcpu, dstBase + page * PAGE_SIZE, 1, 1, true, fill));
      if (r.blocked !== undefined) {
        blocked = true;
        k.uffd.faulted(vcpu, k.clock.now());
        return false;
      }
    }
    cursor = (cursor + 1) % inp.wsPages;
    if (cursor === 0) fill = (fill % 250) + 2;
    return true;
  };
  // The guest kernel's own writes while the program runs (its 10 ms sleeps: timers, the scheduler), measured
  // with the layout; none in memtwin's even spread, which has no measured places for them.
  const kernelPages = layout && inp.wsPages > 0 ? kernelWritePages(inp.memMiB, totalPages, nonZero, program) : [];
  let kIdx = kernelPages.length;
  let ticks = 0;
  const kernelWrites = (): boolean => {
    for (; kIdx < kernelPages.length; kIdx++) {
      const page = kernelPages[kIdx]!;
      if (where === 'src') {
        k.runAsTask({ ns: 0 }, () => src.access(0, page * PAGE_SIZE, 1, 1, true, fill));
        mig.onGuestWrite(page * PAGE_SIZE, 1);
      } else if (k.runAsTask({ ns: 0 }, () => k.access(vcpu, dstBase + page * PAGE_SIZE, 1, 1, true, fill)).blocked !== undefined) {
        blocked = true;
        k.uffd.faulted(vcpu, k.clock.now());
        return false;
      }
    }
    return true;
  };
  const tick = (): void => {
    if (done || mig.status === 'failed' || mig.status === 'cancelled') return;
    if (where === 'stopped' || blocked) return; // resumed by onGuest / the userfault wake
    if (ticks++ % 10 === 0 && kIdx >= kernelPages.length) kIdx = 0;
    if (!kernelWrites()) return;
    carry += (inp.dirtyRate * (where === 'src' ? mig.guestRunFraction : 1)) / 1000;
    while (carry >= 1) {
      if (!writeOne()) return;
      carry -= 1;
    }
    k.events.after(NSEC_PER_MSEC, 'guest-dirtier', tick);
  };
  function resume(): void {
    if (inp.wsPages > 0 && inp.dirtyRate > 0 && !done) k.events.after(0, 'guest-dirtier', tick);
  }
  k.uffd.wakeListeners.push((t) => {
    if (t === vcpu && blocked) {
      blocked = false;
      k.events.after(0, 'guest-dirtier', tick);
    }
  });

  qmpOrNotModelled('migrate', { uri: 'tcp:dst:4444' });
  // The validation guest (Debian 6.12) runs with init_on_alloc (its boot log: "mem auto-init: ... heap alloc:on"):
  // the hinting driver's allocations zero every page it hints, after the setup's bitmap sync, so those pages are
  // written (zero) since the migration first looked at them and go as zero pages rather than being skipped.
  if (hints) k.runAsTask({ ns: 0 }, () => src.clear(0, (totalPages - inp.hintedPages) * PAGE_SIZE, inp.hintedPages * PAGE_SIZE));
  resume();
  if (inp.postcopyAfterMs !== null)
    k.events.after(inp.postcopyAfterMs * NSEC_PER_MSEC, 'migrate-start-postcopy', () => qmp('migrate-start-postcopy'));
  const end = k.clock.now() + LIMIT_NS;
  const t0 = k.clock.now();
  // With a trace, query-migrate every SAMPLE_MS of virtual time, as the recorder polls the real source (read only).
  const chunk = (trace ? SAMPLE_MS : 100) * NSEC_PER_MSEC;
  while (k.clock.now() < end && mig.status !== 'completed' && mig.status !== 'failed') {
    k.events.runUntil(Math.min(end, k.clock.now() + chunk));
    if (trace && mig.query().status !== 'completed') trace.samples.push(sampleOfQuery((k.clock.now() - t0) / NSEC_PER_MSEC, mig.query()));
  }
  if (trace) trace.iterations.push(...mig.iterations.map((it) => ({ ...it, at: it.at - t0 })));
  done = true;
  const q = mig.query();
  return mig.status === 'completed' ? q : { ...q, status: `not completed in ${LIMIT_NS / NSEC_PER_SEC} s (virtual)` };
}

/** One batch compared: its file, its recorded results, its calibration and a comparison per configuration. */
export interface BatchComparison {
  name: string;
  file: string;
  results: RealResults;
  calibration: Calibration;
  runs: RunComparison[];
}

/** Compare every recorded configuration of one batch with memtwin's prediction (of its median run, when recorded several times). */
export function compare(
  results: RealResults,
  file = 'validation/qemu/results.json',
  cal: Calibration = calibrate(results, file),
): { calibration: Calibration; runs: RunComparison[] } {
  const { ceilingId, postcopyCeilingId } = batchOf(results);
  const ids = [...new Set(results.runs.map((r) => r.config.id))];
  const runs = ids.map((id) =>
    compareConfig(
      results.runs.filter((r) => r.config.id === id),
      cal,
      ceilingId,
      postcopyCeilingId,
    ),
  );
  return { calibration: cal, runs };
}

function spreadOf(runs: readonly RealRun[]): Partial<Record<Metric, [number, number, number]>> {
  const out: Partial<Record<Metric, [number, number, number]>> = {};
  for (const m of SPREAD_METRICS) {
    const v = runs
      .map((r) => metricOf(r.queryMigrate, m))
      .filter((x): x is number => x !== null)
      .sort((x, y) => x - y);
    if (v.length) out[m] = [v[0]!, v[Math.floor((v.length - 1) / 2)]!, v[v.length - 1]!];
  }
  return out;
}

/** One configuration's runs (one, or a batch's repeats) against memtwin. */
function compareConfig(group: RealRun[], cal: Calibration, ceilingId: string, postcopyCeilingId: string | null): RunComparison {
  const done = group.filter((r) => r.status === 'completed');
  const run = medianRun(group);
  const c = (run ?? group[group.length - 1]!).config;
  const repeats =
    group.length > 1 || group[0]!.rep !== undefined
      ? { runs: group.length, completed: done.length, comparedRep: run?.rep ?? 0, spread: spreadOf(done) }
      : null;
  const base = { id: c.id, what: c.what, withinBound: null, downtimeWithin: null, syncsWithin: null, repeats };
  if (!run) {
    const last = group[group.length - 1]!;
    return { ...base, status: last.status, inputs: null, predicted: null, rows: [], notes: group.flatMap((r) => r.failures) };
  }
  const inputs = inputsOf(run, cal);
  let predicted: Record<string, unknown>;
  const trace: PredictTrace | undefined = run.samples?.length ? { samples: [], iterations: [] } : undefined;
  try {
    predicted = predict(inputs, trace);
  } catch (e) {
    if (!(e instanceof NotModelled)) throw e;
    // The real side stays in the report; memtwin's side becomes a comparison once it models the feature.
    const rows = METRICS.map((metric): Row => ({ metric, real: metricOf(run.queryMigrate, metric), predicted: null, errorPct: null }));
    return { ...base, status: e.message, inputs, predicted: null, rows, notes: [] };
  }
  const rows = METRICS.map((metric): Row => {
    const real = metricOf(run.queryMigrate, metric);
    const pred = metricOf(predicted, metric);
    const errorPct = real !== null && pred !== null && real !== 0 ? ((pred - real) / real) * 100 : real === 0 && pred === 0 ? 0 : null;
    return { metric, real, predicted: pred, errorPct };
  });
  const row = (m: Metric): Row => rows.find((r) => r.metric === m)!;
  const within = (r: Row, pct: number): boolean => r.errorPct !== null && Math.abs(r.errorPct) <= pct;
  const postcopy = c.postcopyAfterMs !== null;
  // The ceiling run sets the link rate (its total time is an input), so it checks nothing but the composition.
  const bounded = !postcopy && c.id !== ceilingId;
  const withinBound = postcopy
    ? c.id === postcopyCeilingId
      ? null // calibration: its rate is the batch's postcopy link rate
      : within(row('total-time'), POSTCOPY_BOUND_PCT)
    : bounded
      ? BOUNDED.every((m) => within(row(m), BOUND_PCT))
      : null;
  const dt = row('downtime');
  const syncs = row('dirty-sync-count');
  const downtimeWithin = bounded
    ? dt.real !== null && dt.predicted !== null && (within(dt, DOWNTIME_BOUND_PCT) || Math.abs(dt.predicted - dt.real) <= DOWNTIME_BOUND_MS)
    : null;
  const syncsWithin = bounded
    ? syncs.real !== null && syncs.predicted !== null && Math.abs(syncs.predicted - syncs.real) <= SYNC_BOUND
    : null;
  const passes = trace && c.postcopyAfterMs === null ? { real: passesOf(run.samples!), memtwin: passesOf(trace.samples) } : undefined;
  return {
    ...base,
    status: run.status,
    inputs,
    predicted,
    rows,
    withinBound,
    downtimeWithin,
    syncsWithin,
    notes: [],
    ...(passes ? { passes } : {}),
  };
}

const fmt = (v: number | null, metric?: Metric): string => {
  if (v === null) return '—';
  if (metric === 'ram.transferred') return `${(v / MiB).toFixed(1)} MiB`;
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
};
const pct = (v: number | null): string => (v === null ? '—' : `${v >= 0 ? '+' : ''}${v.toFixed(1)}%`);

/** The report, Markdown: a section per batch. `explanations`: what explains each run's gap (validation/qemu/explanations.json). */
export function renderReport(batches: BatchComparison[], explanations: Record<string, string>): string {
  const L: string[] = [];
  L.push('# memtwin against real QEMU migrations');
  L.push('');
  L.push(
    `Generated by \`./bin/memtwin.js validate qemu\` from ${batches.map((b) => `\`validation/qemu/${b.file}\``).join(', ')} (do not edit;`,
  );
  L.push('`validate qemu --real [--batch NAME]` reruns the real side first). See docs/validate-qemu.md.');
  L.push('');
  L.push(
    'Each batch was recorded in one session of the machine and is calibrated by its own `ceiling` and idle runs; a batch recorded several times interleaved gives the spread (min / median / max) of its runs, and memtwin is compared with the median run (by total-time).',
  );
  L.push('');
  L.push(
    `Bounds: on the precopy and free-page-hint runs, total-time and ram.transferred within ${BOUND_PCT}%, downtime within ${DOWNTIME_BOUND_PCT}% or ${DOWNTIME_BOUND_MS} ms, dirty-sync-count within ±${SYNC_BOUND}; on the postcopy runs, total-time within ${POSTCOPY_BOUND_PCT}%. A batch's ceiling run is calibration (its total time is the link rate). A run whose configuration memtwin's monitor refuses is shown as \`${NOT_MODELLED}: <the refusal>\`.`,
  );
  for (const b of batches) renderBatch(L, b, explanations);
  L.push('');
  return L.join('\n');
}

function renderBatch(L: string[], b: BatchComparison, explanations: Record<string, string>): void {
  const { results, calibration: cal } = b;
  const ceilingId = batchOf(results).ceilingId;
  L.push('');
  L.push(`## Batch \`${b.name}\` (validation/qemu/${b.file})`);
  L.push('');
  L.push(`Real side: ${results.qemu}, guest ${results.guestKernel}, host ${results.host}, recorded ${results.date}.`);
  L.push('');
  L.push('Inputs memtwin takes from the measurements:');
  L.push(
    `- link rate ${(cal.linkBps / MiB).toFixed(1)} MiB/s: the \`${ceilingId}\` run's ram.transferred / total-time (no max-bandwidth; the TCG migration thread's ceiling);`,
  );
  L.push(
    `- the guest's non-zero memory at boot: ${Object.entries(cal.bootNonZeroPages)
      .map(([m, p]) => `${p} pages (${((p * PAGE_SIZE) / MiB).toFixed(1)} MiB) for ${m} MiB`)
      .join(', ')} (the idle runs' ram.normal), plus what the guest program wrote;`,
  );
  if (cal.postcopyBps !== null)
    L.push(
      `- postcopy link rate ${(cal.postcopyBps / MiB).toFixed(1)} MiB/s, the link rate of this batch's postcopy runs: ${cal.postcopySource};`,
    );
  L.push(
    "- where the guest's memory lies in guest-physical pages: the boot footprint and the program's pages where scripts/validate-qemu/guest-layout.ts found them (validation/qemu/evidence/guest-layout-<MiB>.json), and the pages the guest kernel rewrites while the program runs;",
  );
  L.push('- the dirty rate the guest program measured while migration ran on the source.');
  L.push('');
  L.push('### Summary');
  L.push('');
  L.push(
    '| run | status | total-time err | transferred err | downtime real / memtwin (ms) | downtime err | dirty-syncs real / memtwin | time and bytes | downtime | syncs |',
  );
  L.push('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  const yes = (v: boolean | null): string => (v === null ? 'n/a' : v ? 'yes' : 'no');
  for (const r of b.runs) {
    const g = (m: Metric): Row | undefined => r.rows.find((x) => x.metric === m);
    const dt = g('downtime');
    const sy = g('dirty-sync-count');
    const syncDiff = sy?.real != null && sy.predicted != null ? `${sy.predicted - sy.real >= 0 ? '+' : ''}${sy.predicted - sy.real}` : '—';
    L.push(
      `| ${r.id} | ${r.status} | ${pct(g('total-time')?.errorPct ?? null)} | ${pct(g('ram.transferred')?.errorPct ?? null)} | ${fmt(dt?.real ?? null)} / ${fmt(dt?.predicted ?? null)} | ${pct(dt?.errorPct ?? null)} | ${fmt(sy?.real ?? null)} / ${fmt(sy?.predicted ?? null)} (${syncDiff}) | ${yes(r.withinBound)} | ${yes(r.downtimeWithin)} | ${yes(r.syncsWithin)} |`,
    );
  }
  const bounded = b.runs.filter((r) => r.downtimeWithin !== null);
  const count = (f: (r: RunComparison) => boolean | null): string => `${bounded.filter((r) => f(r) === true).length}/${bounded.length}`;
  L.push('');
  L.push(
    `Precopy and free-page-hint runs within the bounds: time and bytes ${count((r) => r.withinBound)}, downtime ${count((r) => r.downtimeWithin)}, dirty-sync-count ${count((r) => r.syncsWithin)}.`,
  );
  const notModelled = b.runs.filter((r) => r.status.startsWith(NOT_MODELLED));
  if (notModelled.length) L.push('', `Not modelled by memtwin yet: ${notModelled.map((r) => r.id).join(', ')}.`);
  const repeated = b.runs.filter((r) => r.repeats);
  if (repeated.length) {
    L.push('');
    L.push('### Spread of the real runs');
    L.push('');
    L.push('min / median / max over the completed repeats; memtwin is compared with the run whose total-time is the median.');
    L.push('');
    L.push(`| run | completed | compared | ${SPREAD_METRICS.join(' | ')} |`);
    L.push(`| --- | --- | --- | ${SPREAD_METRICS.map(() => '---').join(' | ')} |`);
    for (const r of repeated) {
      const rp = r.repeats!;
      const cells = SPREAD_METRICS.map((m) => {
        const v = rp.spread[m];
        return v ? v.map((x) => fmt(x, m)).join(' / ') : '—';
      });
      L.push(`| ${r.id} | ${rp.completed}/${rp.runs} | ${rp.comparedRep ? `#${rp.comparedRep}` : '—'} | ${cells.join(' | ')} |`);
    }
  }
  L.push('');
  L.push('### Runs');
  for (const r of b.runs) {
    L.push('');
    L.push(`#### ${r.id}`);
    L.push('');
    L.push(`${r.what}. Status: ${r.status}.`);
    if (r.inputs) {
      const i = r.inputs;
      const extra = [
        ...Object.entries(i.capabilities).map(([c, on]) => `${c} ${on ? 'on' : 'off'}`),
        ...Object.entries(i.parameters).map(([p, v]) => `${p} ${v}`),
      ];
      L.push('');
      L.push(
        `memtwin inputs: ${i.memMiB} MiB ${i.backend}, ${i.nonZeroPages} non-zero pages, working set ${i.wsPages} pages at ${i.dirtyRate.toFixed(0)} pages/s (${i.dirtyRateSource}), ${i.postcopyLinkBps !== null ? `link ${(i.postcopyLinkBps / MiB).toFixed(1)} MiB/s (the postcopy page rate), ` : ''}max-bandwidth ${(i.maxBandwidth / MiB).toFixed(0)} MiB/s, downtime-limit ${i.downtimeLimitMs} ms${i.hintedPages ? `, ${i.hintedPages} pages hinted free` : ''}${i.postcopyAfterMs !== null ? `, migrate-start-postcopy after ${i.postcopyAfterMs} ms` : ''}${extra.length ? `, ${extra.join(', ')}` : ''}.`,
      );
      L.push('');
      L.push('| metric | real | memtwin | error |');
      L.push('| --- | --- | --- | --- |');
      for (const row of r.rows)
        L.push(`| ${row.metric} | ${fmt(row.real, row.metric)} | ${fmt(row.predicted, row.metric)} | ${pct(row.errorPct)} |`);
    }
    if (r.passes && (r.passes.real.length || r.passes.memtwin.length)) renderPasses(L, r.passes);
    for (const n of r.notes) L.push('', `Failure: ${n.slice(0, 400)}`);
    L.push('');
    L.push(`What explains the gap: ${explanations[`${b.name}/${r.id}`] ?? explanations[r.id] ?? '(not analysed yet)'}`);
  }
}

/**
 * The compared run's passes beside memtwin's: per bitmap sync after the
 * setup's, the polls it fell between (ms after migrate), the pages it found
 * dirty and ram.transferred at the poll (src/validate/passes.ts). Two syncs
 * between one pair of polls are shown as one row (its count `xN`).
 */
function renderPasses(L: string[], p: { real: Pass[]; memtwin: Pass[] }): void {
  const cell = (x: Pass | undefined): string[] =>
    x
      ? [
          `${x.sync}${x.syncsInPoll > 1 ? ` (x${x.syncsInPoll})` : ''}`,
          `${x.prevAtMs}-${x.atMs}`,
          String(x.newDirtyPages),
          `${(x.transferred / MiB).toFixed(1)} MiB`,
        ]
      : ['', '', '', ''];
  L.push('');
  L.push(
    "Passes (query-migrate polled every 50 ms on both sides; a sync's new pages: remaining's rise plus the pages sent between the two polls):",
  );
  L.push('');
  L.push('| real sync | at (ms) | new dirty pages | transferred | memtwin sync | at (ms) | new dirty pages | transferred |');
  L.push('| --- | --- | --- | --- | --- | --- | --- | --- |');
  for (let i = 0; i < Math.max(p.real.length, p.memtwin.length); i++)
    L.push(`| ${[...cell(p.real[i]), ...cell(p.memtwin[i])].join(' | ')} |`);
}

export interface ValidateOptions {
  /** The main batch's file (validation/qemu/results.json); the other batches are the results-<name>.json beside it. */
  results: string;
  report: string;
  explanations: string;
}

/** The batch files: the main one, then every results-<name>.json in its directory, by name. */
export function batchFiles(main: string): string[] {
  const dir = dirname(main);
  const others = readdirSync(dir)
    .filter((f) => /^results-[A-Za-z0-9_.-]+\.json$/.test(f))
    .sort();
  return [main, ...others.map((f) => join(dir, f))];
}

function readResults(file: string): RealResults {
  let v: unknown;
  try {
    v = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`${file}: ${(e as Error).message}`);
  }
  const r = v as RealResults;
  if (typeof v !== 'object' || v === null || !Array.isArray(r.runs)) throw new Error(`${file}: expected an object with a "runs" array`);
  return r;
}

/** Compare every batch (the main results file and the results-<name>.json beside it). */
export function compareBatches(main: string): BatchComparison[] {
  const batches = batchFiles(main).map((file) => {
    const results = readResults(file);
    return { file, results, cal: calibrate(results, file) };
  });
  // A batch without a postcopy ceiling run takes the ratio of postcopy's link rate to the precopy ceiling's
  // measured in the first batch that has one (both rates come from one session of the machine).
  const ref = batches.find((b) => b.cal.postcopyBps !== null);
  for (const b of batches)
    if (ref && b.cal.postcopyBps === null) {
      const ratio = ref.cal.postcopyBps! / ref.cal.linkBps;
      b.cal.postcopyBps = b.cal.linkBps * ratio;
      b.cal.postcopySource = `this batch's link rate times ${ratio.toFixed(2)}, the ratio of the postcopy link rate to the precopy ceiling's in batch \`${batchOf(ref.results).name}\` (which measured both)`;
    }
  return batches.map(({ file, results, cal }) => ({
    name: batchOf(results).name,
    file: basename(file),
    results,
    ...compare(results, file, cal),
  }));
}

export function writeReport(o: ValidateOptions): BatchComparison[] {
  let explanations: Record<string, string> = {};
  try {
    explanations = JSON.parse(readFileSync(o.explanations, 'utf8')) as Record<string, string>;
  } catch {
    explanations = {};
  }
  const batches = compareBatches(o.results);
  mkdirSync(dirname(o.report), { recursive: true });
  writeFileSync(o.report, renderReport(batches, explanations));
  return batches;
}
