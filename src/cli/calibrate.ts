/**
 * `memtwin calibrate`: measure this host's costs with native/calibrate.c
 * and write a cost profile the simulator can use (--profile).
 *
 * `--only a,b` runs only the measurements that produce those costs (cost
 * names or the calibrator's group ids, see `memtwin-calibrate --list`);
 * `--merge profile.json` starts from an existing profile and replaces or adds
 * just the freshly measured costs, leaving every other entry as it was. The
 * profile must describe this host, unless `--other-machine` says to merge
 * anyway (a newer kernel build of the same machine, say): then each merged
 * entry records the machine it was measured on (`measured_on`).
 *
 * Every mistake in the arguments (an unknown --only name, a --merge profile
 * of another machine or not a profile at all, an --out that cannot be
 * written) is found before measuring (checkCalibrateArgs) and reported as
 * bad input (exit 2).
 */
import { spawnSync } from 'node:child_process';
import { accessSync, constants, existsSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, resolve } from 'node:path';
import { fromRoot } from '../util/paths.ts';
import { InputError } from '../util/input_error.ts';
import { costProfileSchema, profileFromCalibration, type CostProfileData } from '../sim/cost_profile.ts';
import { fmtNs } from './format.ts';

export const CALIBRATE_BIN = fromRoot('native', 'build', 'memtwin-calibrate');

export class CalibrateError extends Error {}

export interface CalibrateOptions {
  /** Cost names or group ids to measure (default: everything). */
  only?: string[];
  /** Existing profile to merge the measured costs into. */
  merge?: string;
  /** Where the profile will be written (checked before measuring). */
  out?: string;
  /** Merge even when this host differs from the --merge profile's machine; each merged entry records its own. */
  otherMachine?: boolean;
}

type RawCalibration = Parameters<typeof profileFromCalibration>[0];
type Machine = CostProfileData['machine'];

function ensureBinary(): void {
  if (!existsSync(CALIBRATE_BIN)) {
    const r = spawnSync('make', ['-s', '-C', fromRoot('native')], { stdio: 'inherit' });
    if (r.status !== 0 || !existsSync(CALIBRATE_BIN))
      throw new CalibrateError('cannot build native/build/memtwin-calibrate (needs gcc and make)');
  }
}

/** The calibrator's groups: id -> cost-name patterns (a trailing '*' is a prefix). */
export function parseGroupList(text: string): Map<string, string[]> {
  const groups = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const m = /^(\S+)\s+(\S+)$/.exec(line.trim());
    if (m) groups.set(m[1]!, m[2]!.split(','));
  }
  return groups;
}

function matches(pattern: string, name: string): boolean {
  return pattern.endsWith('*') ? name.startsWith(pattern.slice(0, -1)) && name.length >= pattern.length : name === pattern;
}

/**
 * Which of the measured costs the selection asked for: a group id selects
 * all of its costs, a cost name (or pattern) selects just that cost, even
 * though the calibrator runs its whole group.
 */
export function selectCosts(only: string[], groups: Map<string, string[]>, measured: string[]): string[] {
  const patterns = only.flatMap((o) => groups.get(o) ?? [o]);
  return measured.filter((n) => patterns.some((p) => matches(p, n)));
}

/** The `--only` entries that are neither a group id nor a cost some group outputs. */
export function unknownNames(only: string[], groups: Map<string, string[]>): string[] {
  const patterns = [...groups.values()].flat();
  return only.filter((o) => !groups.has(o) && !patterns.some((p) => matches(p, o)));
}

/** Run the calibrator (all or `only` measurements) and return its raw JSON. */
function runCalibrator(only: string[] | undefined): RawCalibration {
  const args = only?.length ? ['--only', only.join(',')] : [];
  console.error(
    only?.length
      ? `memtwin calibrate: measuring ${only.join(', ')} on this host...`
      : 'memtwin calibrate: measuring this host (about 2 minutes)...',
  );
  const r = spawnSync(CALIBRATE_BIN, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 16 << 20 });
  if (r.status === 2)
    throw new CalibrateError(`the calibrator rejected --only ${only?.join(',')} (list the names with ${CALIBRATE_BIN} --list)`);
  if (r.status !== 0) throw new CalibrateError(`the calibrator failed (status ${r.status ?? r.signal})`);
  return JSON.parse(r.stdout) as RawCalibration;
}

/** Ask the calibrator for its groups (`--list`) or this host's machine record (`--machine`): instant, measures nothing. */
function askCalibrator(arg: '--list' | '--machine'): string {
  const r = spawnSync(CALIBRATE_BIN, [arg], { encoding: 'utf8' });
  if (r.status !== 0) throw new CalibrateError(`${CALIBRATE_BIN} ${arg} failed (status ${r.status ?? r.signal}): ${r.stderr?.trim()}`);
  return r.stdout;
}

/** The machine fields two profiles must share to be merged, as "field: X there, Y here" phrases. */
export function machineDifferences(there: Machine, here: Machine): string[] {
  return (['kernel', 'cpu_model', 'cores', 'mem_bytes'] as const)
    .filter((k) => there[k] !== here[k])
    .map((k) => `${k}: ${there[k]} there, ${here[k]} here`);
}

function otherMachine(baseName: string, diff: string[]): InputError {
  return new InputError(
    baseName,
    undefined,
    undefined,
    'machine',
    `measured on another machine (${diff.join('; ')}); not merging. Write the measurement to a profile of its own (--out NEW.json without --merge), or merge with --other-machine and each merged entry records where it was measured`,
  );
}

/** `base` (raw JSON of an existing profile) as a profile, or an InputError naming the field that is wrong. */
export function mergeBase(base: unknown, baseName = 'the merged profile'): CostProfileData {
  const parsed = costProfileSchema.safeParse(base);
  if (!parsed.success) {
    const i = parsed.error.issues[0]!;
    throw new InputError(baseName, undefined, undefined, i.path.join('.') || undefined, `not a cost profile (${i.message})`);
  }
  return parsed.data;
}

/**
 * Add `fresh` costs to the profile `base` (raw JSON of an existing profile).
 * Existing entries keep their position and content unless re-measured;
 * top-level fields stay as they are. The machines must match, unless
 * `otherMachine`: then each merged entry carries `measured_on` (the machine
 * and date it was measured on) and its method says how it differs.
 */
export function mergeProfile(
  base: unknown,
  fresh: CostProfileData,
  baseName = 'the merged profile',
  otherMachine_ = false,
): CostProfileData {
  const m = mergeBase(base, baseName).machine;
  const b = base as CostProfileData;
  const diff = machineDifferences(m, fresh.machine);
  if (diff.length && !otherMachine_) throw otherMachine(baseName, diff);
  const costs = { ...b.costs };
  const where = diff.length ? ` on ${fresh.machine.kernel}, not this profile's machine (${diff.join('; ')})` : '';
  for (const [name, c] of Object.entries(fresh.costs))
    costs[name] = {
      ...c,
      method: `${c.method} [Measured ${fresh.date}${where} with \`memtwin calibrate --only\` and merged into this profile.]`,
      ...(diff.length ? { measured_on: { ...fresh.machine, date: fresh.date } } : {}),
    };
  return { ...b, costs };
}

/** `--out`'s directory exists and can be written, checked before two minutes of measuring. */
function checkOut(out: string): void {
  if (existsSync(out) && statSync(out).isDirectory())
    throw new InputError('--out', undefined, undefined, undefined, `${out} is a directory; give the profile's file name`);
  const dir = dirname(resolve(out));
  try {
    accessSync(dir, constants.W_OK);
  } catch (e) {
    throw new InputError('--out', undefined, undefined, undefined, `cannot write ${out}: ${dir} (${(e as NodeJS.ErrnoException).code})`);
  }
}

/**
 * Everything that can be wrong with the arguments, found before measuring:
 * an empty or unknown --only, an --out that cannot be written, a --merge
 * profile that cannot be read, is not a profile, or was measured on another
 * machine. Returns the merge base (raw JSON), if any.
 */
export function checkCalibrateArgs(opts: CalibrateOptions, here?: () => Machine, groupList?: () => string): unknown {
  if (opts.only !== undefined && opts.only.length === 0)
    throw new InputError('--only', undefined, undefined, undefined, 'needs at least one cost name or group');
  if (opts.out !== undefined) checkOut(opts.out);
  let base: unknown;
  if (opts.merge !== undefined) {
    let text: string;
    try {
      text = readFileSync(opts.merge, 'utf8');
    } catch (e) {
      throw new InputError(
        opts.merge,
        undefined,
        undefined,
        undefined,
        `cannot read the profile to merge into (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
      );
    }
    try {
      base = JSON.parse(text);
    } catch (e) {
      throw new InputError(opts.merge, undefined, undefined, undefined, `not a cost profile: ${(e as Error).message}`);
    }
    const m = mergeBase(base, opts.merge).machine;
    const diff = machineDifferences(m, (here ?? thisMachine)());
    if (diff.length && !opts.otherMachine) throw otherMachine(opts.merge, diff);
  }
  if (opts.only) {
    const unknown = unknownNames(opts.only, parseGroupList((groupList ?? (() => askCalibrator('--list')))()));
    if (unknown.length)
      throw new InputError(
        '--only',
        undefined,
        undefined,
        undefined,
        `unknown cost or group ${unknown.map((u) => `'${u}'`).join(', ')} (the names: ${CALIBRATE_BIN} --list)`,
      );
  }
  return base;
}

/** This host as the calibrator records it (`memtwin-calibrate --machine`). */
function thisMachine(): Machine {
  return (JSON.parse(askCalibrator('--machine')) as { machine: Machine }).machine;
}

export function calibrate(opts: CalibrateOptions = {}): CostProfileData {
  ensureBinary();
  const base = checkCalibrateArgs(opts);
  if (typeof process.getuid === 'function' && process.getuid() !== 0)
    throw new CalibrateError('calibrate needs root (hugetlb pools, THP knobs, /proc/sys/vm/compact_memory)');
  const only = opts.only;
  if (only && base === undefined)
    console.error(
      'memtwin calibrate: --only without --merge writes a partial profile: --profile refuses it (it needs every cost); merge it into a complete profile of this machine with --merge',
    );
  const raw = runCalibrator(only);
  warnIfBusy(raw);
  const date = new Date().toISOString().slice(0, 10);
  const fresh = profileFromCalibration(
    raw,
    date,
    `memtwin calibrate on ${hostname()} (native/calibrate.c; methods in native/calibrate.md)`,
  );
  if (only) {
    const wanted = selectCosts(only, parseGroupList(askCalibrator('--list')), Object.keys(raw.costs));
    const missing = wanted.filter((n) => !(n in fresh.costs));
    if (missing.length)
      throw new CalibrateError(
        `not measured: ${missing.map((n) => `${n} (${raw.costs[n]?.unavailable ?? 'no value'})`).join(', ')}; nothing written`,
      );
    fresh.costs = Object.fromEntries(wanted.map((n) => [n, fresh.costs[n]!]));
  }
  return base === undefined ? fresh : mergeProfile(base, fresh, opts.merge, opts.otherMachine);
}

/**
 * Bandwidth shared with other work is not this host's bandwidth: say so when
 * the bandwidth measurements (membw_*) saw other CPUs busy (their
 * `other_busy_cpus`, from /proc/stat) or a high load average.
 */
function warnIfBusy(raw: RawCalibration): void {
  const cores = raw.machine.cores;
  const busy = Object.entries(raw.costs).filter(([name, c]) => {
    const other = c['other_busy_cpus'];
    const load = c['loadavg_1m_before'];
    return name.startsWith('membw_') && ((typeof other === 'number' && other > 0.25) || (typeof load === 'number' && load > 0.75 * cores));
  });
  if (busy.length)
    console.error(
      `memtwin calibrate: warning: ${busy.map(([n]) => n).join(', ')} measured while other work was running ` +
        `(load average up to ${Math.max(...busy.map(([, c]) => Number(c['loadavg_1m_before'] ?? 0))).toFixed(1)} on ${cores} CPUs): ` +
        'bandwidth and loaded latency are disturbed; measure again when the machine is quiet',
    );
}

/** A profile entry's median for people: bandwidths in GB/s, byte sizes in MiB, the rest as durations. */
function fmtCost(median: number, unit: string): string {
  if (unit.startsWith('bytes per second')) return `${(median / 1e9).toFixed(2)} GB/s`;
  if (unit === 'bytes') return `${(median / 2 ** 20).toFixed(0)} MiB`;
  return fmtNs(Math.round(median));
}

/** Write the profile (whole or not at all: a temporary file renamed) and describe it. */
export function writeProfile(p: CostProfileData, out: string): string {
  const tmp = `${out}.tmp-${process.pid}`;
  try {
    writeFileSync(tmp, JSON.stringify(p, null, 2) + '\n');
    renameSync(tmp, out);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw new CalibrateError(`cannot write ${out}: ${(e as Error).message}`);
  }
  const rows = Object.entries(p.costs).map(([k, c]) => `  ${k.padEnd(32)} ${fmtCost(c.median, c.unit).padStart(10)}  ${c.unit}`);
  return `${rows.join('\n')}\nwrote ${out} (${Object.keys(p.costs).length} costs, ${p.machine.cpu_model}, ${p.machine.kernel}, ${p.date})`;
}
