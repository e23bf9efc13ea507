/**
 * `memtwin calibrate`: measure this host's costs with native/calibrate.c
 * and write a cost profile the simulator can use (--profile).
 *
 * `--only a,b` runs only the measurements that produce those costs (cost
 * names or the calibrator's group ids, see `memtwin-calibrate --list`);
 * `--merge profile.json` starts from an existing profile and replaces or adds
 * just the freshly measured costs, leaving every other entry as it was.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { fromRoot } from '../util/paths.ts';
import { costProfileSchema, profileFromCalibration, type CostProfileData } from '../sim/cost_profile.ts';
import { fmtNs } from './format.ts';

export const CALIBRATE_BIN = fromRoot('native', 'build', 'memtwin-calibrate');

export class CalibrateError extends Error {}

export interface CalibrateOptions {
  /** Cost names or group ids to measure (default: everything). */
  only?: string[];
  /** Existing profile to merge the measured costs into. */
  merge?: string;
}

type RawCalibration = Parameters<typeof profileFromCalibration>[0];

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

/**
 * Add `fresh` costs to the profile `base` (raw JSON of an existing profile).
 * Existing entries keep their position and content unless re-measured;
 * top-level fields stay as they are. The machines must match.
 */
export function mergeProfile(base: unknown, fresh: CostProfileData, baseName = 'the merged profile'): CostProfileData {
  const parsed = costProfileSchema.safeParse(base);
  if (!parsed.success) {
    const i = parsed.error.issues[0]!;
    throw new CalibrateError(`${baseName}: field ${i.path.join('.') || '(root)'}: ${i.message}`);
  }
  const b = base as CostProfileData;
  const m = parsed.data.machine,
    f = fresh.machine;
  const diff = (['kernel', 'cpu_model', 'cores', 'mem_bytes'] as const).filter((k) => m[k] !== f[k]);
  if (diff.length)
    throw new CalibrateError(
      `${baseName} was measured on another machine (${diff.map((k) => `${k}: ${m[k]} there, ${f[k]} here`).join('; ')}); not merging`,
    );
  const costs = { ...b.costs };
  for (const [name, c] of Object.entries(fresh.costs))
    costs[name] = { ...c, method: `${c.method} [Measured ${fresh.date} with \`memtwin calibrate --only\` and merged into this profile.]` };
  return { ...b, costs };
}

export function calibrate(opts: CalibrateOptions = {}): CostProfileData {
  ensureBinary();
  if (typeof process.getuid === 'function' && process.getuid() !== 0)
    throw new CalibrateError('calibrate needs root (hugetlb pools, THP knobs, /proc/sys/vm/compact_memory)');
  let base: unknown;
  if (opts.merge !== undefined) {
    try {
      base = JSON.parse(readFileSync(opts.merge, 'utf8'));
    } catch (e) {
      throw new CalibrateError(`${opts.merge}: cannot read the profile to merge into: ${(e as Error).message}`);
    }
  }
  if (opts.only !== undefined && opts.only.length === 0) throw new CalibrateError('--only needs at least one cost name or group');
  const only = opts.only;
  if (only && base === undefined)
    console.error('memtwin calibrate: --only without --merge writes a partial profile (the simulator needs every required cost)');
  const raw = runCalibrator(only);
  const date = new Date().toISOString().slice(0, 10);
  const fresh = profileFromCalibration(
    raw,
    date,
    `memtwin calibrate on ${hostname()} (native/calibrate.c; methods in native/calibrate.md)`,
  );
  if (only) {
    const list = spawnSync(CALIBRATE_BIN, ['--list'], { encoding: 'utf8' });
    const wanted = selectCosts(only, parseGroupList(list.stdout ?? ''), Object.keys(raw.costs));
    const missing = wanted.filter((n) => !(n in fresh.costs));
    if (missing.length)
      throw new CalibrateError(
        `not measured: ${missing.map((n) => `${n} (${raw.costs[n]?.unavailable ?? 'no value'})`).join(', ')}; nothing written`,
      );
    fresh.costs = Object.fromEntries(wanted.map((n) => [n, fresh.costs[n]!]));
  }
  return base === undefined ? fresh : mergeProfile(base, fresh, opts.merge);
}

export function writeProfile(p: CostProfileData, out: string): string {
  writeFileSync(out, JSON.stringify(p, null, 2) + '\n');
  const rows = Object.entries(p.costs).map(([k, c]) => `  ${k.padEnd(32)} ${fmtNs(Math.round(c.median)).padStart(10)}  ${c.unit}`);
  return `${rows.join('\n')}\nwrote ${out} (${Object.keys(p.costs).length} costs, ${p.machine.cpu_model}, ${p.machine.kernel}, ${p.date})`;
}
