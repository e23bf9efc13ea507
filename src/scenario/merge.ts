/**
 * A sweep split across machines: `memtwin run --shard I/N` runs one share of
 * a sweep's runs into a directory of its own, and `memtwin merge DIR...`
 * puts the shares back together into exactly what one machine would have
 * written (runs/<id>/, result.json, summary.csv, report.html, byte for byte).
 *
 * The split: run i belongs to shard i mod N (I is 0-based, as Kubernetes'
 * JOB_COMPLETION_INDEX and a Slurm `--array=0-(N-1)` give it). Striding
 * rather than cutting the run list in blocks spreads a costly value of the
 * sweep's last dimension over all shards; either way every shard holds
 * floor(R/N) or ceil(R/N) of the R runs.
 *
 * A shard's directory describes itself in shard.json (written before any of
 * its runs): which sweep (its scenario, its swept dimensions, memtwin's
 * version, and every run's id with the SHA-256 of the inputs it is computed
 * from: the expanded scenario and the digests of the host files and profile
 * it reads, as the resume check compares them), and which runs are this
 * shard's. Its runs are written and resumed exactly as a whole sweep's are.
 * merge checks the shards against each other and every run against the
 * plan before writing anything.
 */
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readFileSync, realpathSync, renameSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { InputError } from '../util/input_error.ts';
import { removeStaleTemporaries, removeSweepOutputs, RUN_FILES, writeSweep, tmpName, type ReportRenderer } from './output.ts';
import { firstDifference, staleReason, type InputDigest } from './inputs.ts';
import type { RunResult, ScenarioInfo, SweepResult } from './result.ts';

/** Shard `index` (0-based) of `count`. */
export interface ShardSpec {
  index: number;
  count: number;
}

/** A sweep's own description, as its result.json starts: what a merge needs to write it without the scenario. */
export type SweepHeader = Pick<SweepResult, 'memtwin' | 'scenario' | 'swept'>;

/** DIR/shard.json. */
export interface ShardManifest {
  /** This directory's share: shard `index` of `count`, and its runs' ids in run order. */
  shard: ShardSpec & { runs: string[] };
  /** The scenario's reduced form (--smoke) was run. */
  smoke?: boolean;
  /** The whole sweep, the same in every shard of it: header, and every run with the fingerprint of its inputs. */
  sweep: SweepHeader & { runs: ShardPlanRun[] };
  /** SHA-256 of the scenario file's bytes, to say why two shards differ (a comment changes it, not the runs). */
  scenario_sha256?: string;
}

/** A run of the sweep as every shard records it: the fingerprint of its inputs, and the files among them. */
export interface ShardPlanRun {
  index: number;
  id: string;
  inputs_sha256: string;
  /** The host files' and cost profile's digests (inputs.ts), to name the one that differs. */
  digests: Record<string, InputDigest>;
}

export const SHARD_FILE = 'shard.json';

const SHARD_FORM = 'I/N with 0 <= I < N (I is 0-based, as JOB_COMPLETION_INDEX and SLURM_ARRAY_TASK_ID of --array=0-(N-1) are)';

/** "2/4" -> shard 2 of 4; anything else is the command line's input error. */
export function parseShard(text: string, field = '--shard'): ShardSpec {
  const m = /^\s*(\d+)\s*\/\s*(\d+)\s*$/.exec(text);
  const index = m ? Number(m[1]) : NaN;
  const count = m ? Number(m[2]) : NaN;
  if (!m || !Number.isSafeInteger(count) || count < 1 || index >= count)
    throw new InputError(field, undefined, undefined, undefined, `expected ${SHARD_FORM}, got "${text}"`);
  return { index, count };
}

/** Which shard of `count` run `i` belongs to. */
export const shardOf = (i: number, count: number): number => i % count;

/** The run indices of shard `s` of a sweep of `runs` runs, in run order. */
export function shardRuns(runs: number, s: ShardSpec): number[] {
  const out: number[] = [];
  for (let i = s.index; i < runs; i += s.count) out.push(i);
  return out;
}

/** Where a shard goes unless --out says: beside the whole sweep's default directory. */
export const shardDirName = (base: string, s: ShardSpec): string => `${base}-shard-${s.index}-of-${s.count}`;

/** The fingerprint of a run's inputs (inputsOf: scenario and digests): what two machines must agree on. */
export const inputsSha256 = (inputs: unknown): string => createHash('sha256').update(JSON.stringify(inputs)).digest('hex');

export function shardManifest(
  header: SweepHeader,
  runs: { index: number; id: string; inputs: unknown }[],
  s: ShardSpec,
  smoke: boolean,
): ShardManifest {
  const digests = (inputs: unknown): Record<string, InputDigest> => (inputs as { digests?: Record<string, InputDigest> }).digests ?? {};
  let scenarioSha: string | undefined;
  try {
    scenarioSha = createHash('sha256').update(readFileSync(header.scenario.file)).digest('hex');
  } catch {
    scenarioSha = undefined; // read by the loader a moment ago; only the explanation of a mismatch would miss it
  }
  return {
    shard: { ...s, runs: shardRuns(runs.length, s).map((i) => runs[i]!.id) },
    ...(smoke ? { smoke } : {}),
    sweep: {
      ...header,
      runs: runs.map((r) => ({ index: r.index, id: r.id, inputs_sha256: inputsSha256(r.inputs), digests: digests(r.inputs) })),
    },
    ...(scenarioSha ? { scenario_sha256: scenarioSha } : {}),
  };
}

/** The command that (re)makes shard `m` into `dir`. */
export function shardCommand(m: ShardManifest, dir: string): string {
  return `memtwin run ${m.sweep.scenario.file} --shard ${m.shard.index}/${m.shard.count}${m.smoke ? ' --smoke' : ''} --out ${dir}`;
}

/** A merge that cannot be done: one line naming the directory (or `merge`) and what is wrong. */
const refuse = (where: string, what: string): never => {
  throw new InputError(where, undefined, undefined, undefined, what);
};

/** DIR/shard.json, checked for the fields merge reads; refuses (naming the file) otherwise. */
export function readShardManifest(dir: string): ShardManifest {
  const f = join(dir, SHARD_FILE);
  if (!existsSync(dir)) refuse(dir, 'no such directory');
  if (!existsSync(f))
    refuse(
      dir,
      existsSync(join(dir, 'runs'))
        ? `not a shard directory: no ${SHARD_FILE} (a whole sweep's directory needs no merge)`
        : `not a shard directory: no ${SHARD_FILE} (memtwin run SCENARIO --shard I/N --out DIR makes one)`,
    );
  let m: ShardManifest;
  try {
    m = JSON.parse(readFileSync(f, 'utf8')) as ShardManifest;
  } catch (e) {
    return refuse(f, `cannot be read as JSON (${(e as Error).message})`);
  }
  const ok =
    m &&
    typeof m === 'object' &&
    Number.isSafeInteger(m.shard?.index) &&
    Number.isSafeInteger(m.shard?.count) &&
    Array.isArray(m.shard?.runs) &&
    Array.isArray(m.sweep?.runs) &&
    typeof m.sweep?.scenario?.file === 'string' &&
    typeof m.sweep?.memtwin?.version === 'string';
  if (!ok) refuse(f, 'expected a shard description written by memtwin run --shard (shard, sweep.runs, sweep.scenario, sweep.memtwin)');
  return m;
}

/** Why shard manifest `b` is not of the same sweep as `a` (in `dirA`); undefined when it is. */
function sweepDifference(a: ShardManifest, dirA: string, b: ShardManifest): string | undefined {
  if (a.sweep.memtwin.version !== b.sweep.memtwin.version)
    return `memtwin version ${b.sweep.memtwin.version}, ${dirA} has ${a.sweep.memtwin.version}`;
  if (Boolean(a.smoke) !== Boolean(b.smoke)) return `${b.smoke ? '' : 'not '}the --smoke form, ${dirA} is${a.smoke ? '' : ' not'}`;
  const scen = firstDifference(a.sweep.scenario, b.sweep.scenario);
  if (scen !== undefined)
    return `another scenario than ${dirA}'s (${scen || 'scenario'}${scen ? ` ${JSON.stringify(at(b.sweep.scenario, scen))}` : ''})`;
  const swept = firstDifference(a.sweep.swept, b.sweep.swept);
  if (swept !== undefined) return `another sweep than ${dirA}'s (swept${swept})`;
  const ids = (m: ShardManifest): string => m.sweep.runs.map((r) => r.id).join('\n');
  if (ids(a) !== ids(b)) return `other runs than ${dirA}'s (${b.sweep.runs.length} vs ${a.sweep.runs.length})`;
  for (let i = 0; i < a.sweep.runs.length; i++) {
    const ra = a.sweep.runs[i]!,
      rb = b.sweep.runs[i]!;
    if (ra.inputs_sha256 === rb.inputs_sha256) continue;
    return `run ${rb.id} has other inputs than in ${dirA}: ${inputsDifference(ra, a.scenario_sha256, rb, b.scenario_sha256)}`;
  }
  return undefined;
}

/** Why the same run has other inputs in two shards: a file it reads, else the scenario (in the resume check's words). */
function inputsDifference(a: ShardPlanRun, aScenario: string | undefined, b: ShardPlanRun, bScenario: string | undefined): string {
  const why = staleReason({ memtwin: { version: '' }, inputs: { digests: a.digests } }, { digests: b.digests }, '');
  if (why) return why;
  if (aScenario && bScenario && aScenario !== bScenario) return 'the scenario file differs';
  return 'the scenario as expanded differs';
}

/** A field of plain data at a path as firstDifference names it ("file", "published[0].value"). */
function at(x: unknown, path: string): unknown {
  let v: unknown = x;
  for (const k of path.split(/\.|\[(\d+)\]/).filter(Boolean))
    v = v && typeof v === 'object' ? (v as Record<string, unknown>)[k] : undefined;
  return v;
}

function readResult(dir: string): RunResult | undefined {
  try {
    return JSON.parse(readFileSync(join(dir, 'result.json'), 'utf8')) as RunResult;
  } catch {
    return undefined;
  }
}

/**
 * The finished run `id` of shard `m` in `dir`, checked against the sweep's
 * plan; refuses (naming the directory and the command that finishes it)
 * when it is not there, not whole, or computed from other inputs.
 */
function shardRun(dir: string, m: ShardManifest, id: string): RunResult {
  const plan = m.sweep.runs.find((r) => r.id === id)!;
  const runDir = join(dir, 'runs', id);
  const again = `; rerun ${shardCommand(m, dir)}`;
  if (!existsSync(join(runDir, 'result.json'))) return refuse(dir, `run ${id} has not finished${again}`);
  const missing = RUN_FILES.filter((f) => !existsSync(join(runDir, f)));
  if (missing.length) return refuse(dir, `run ${id}: ${missing.join(', ')} missing${again}`);
  const r = readResult(runDir);
  if (!r) return refuse(join(runDir, 'result.json'), `cannot be read as JSON${again}`);
  if (r.memtwin?.version !== m.sweep.memtwin.version)
    return refuse(
      dir,
      `run ${id} was computed by memtwin ${r.memtwin?.version ?? 'unknown'}, the sweep by ${m.sweep.memtwin.version}${again}`,
    );
  if (inputsSha256(r.inputs) !== plan.inputs_sha256 || r.run?.id !== id)
    return refuse(dir, `run ${id} was computed from other inputs than the shard's plan (${SHARD_FILE})${again}`);
  return r;
}

/** Is `a` the same directory as `b` (both may not exist yet)? */
function sameDir(a: string, b: string): boolean {
  const real = (p: string): string => {
    try {
      return realpathSync(p);
    } catch {
      return resolve(p);
    }
  };
  return real(a) === real(b);
}

export interface MergeSummary {
  sweep: SweepResult;
  results: RunResult[];
  shards: { dir: string; shard: ShardSpec; runs: number }[];
  /** The scenario file the shards ran (its path as they were given it). */
  file: string;
}

/**
 * Check that `dirs` are shards of one sweep that together hold each of its
 * runs exactly once, finished, then write into `out` what a one-machine run
 * of the sweep writes: each run's directory (copied byte for byte) and the
 * sweep's summary.csv, report.html and result.json. Refuses with an
 * InputError (exit status 2) naming the directory and the problem, before
 * writing anything.
 */
export function mergeShards(dirs: string[], out: string, report: ReportRenderer): MergeSummary {
  if (!dirs.length) refuse('merge', 'expected one or more shard directories (made by memtwin run --shard I/N)');
  const manifests = dirs.map((d) => readShardManifest(d));
  for (let i = 0; i < dirs.length; i++) {
    if (sameDir(dirs[i]!, out))
      refuse(dirs[i]!, 'is a shard given to merge and the output directory (-o); merge into a directory of its own');
    for (let j = 0; j < i; j++) {
      if (sameDir(dirs[i]!, dirs[j]!)) refuse(dirs[i]!, 'given twice');
      const why = sweepDifference(manifests[j]!, dirs[j]!, manifests[i]!);
      if (why) refuse(dirs[i]!, `not a shard of the same sweep: ${why}`);
    }
  }
  const first = manifests[0]!;
  const all = first.sweep.runs;
  // Every run exactly once: which shard holds it.
  const holder = new Map<string, number>();
  manifests.forEach((m, i) => {
    for (const id of m.shard.runs) {
      if (!all.some((r) => r.id === id)) refuse(join(dirs[i]!, SHARD_FILE), `lists run ${id}, which the sweep does not have`);
      const j = holder.get(id);
      if (j !== undefined)
        refuse(
          dirs[i]!,
          `run ${id} is also in ${dirs[j]!} (shard ${m.shard.index} of ${m.shard.count} and shard ${manifests[j]!.shard.index} of ${manifests[j]!.shard.count}); each run must be in exactly one shard given`,
        );
      holder.set(id, i);
    }
  });
  const missing = all.filter((r) => !holder.has(r.id));
  if (missing.length) refuse('merge', missingRuns(missing, all.length, manifests, dirs));
  // Every run finished, from the plan's inputs; read in run order, as a one-machine run assembles them.
  const results = all.map((r) => shardRun(dirs[holder.get(r.id)!]!, manifests[holder.get(r.id)!]!, r.id));

  const sweep: SweepResult = {
    memtwin: first.sweep.memtwin,
    scenario: first.sweep.scenario as ScenarioInfo,
    swept: first.sweep.swept,
    runs: results.map((r) => ({ index: r.run.index, id: r.run.id, params: r.run.params, dir: `runs/${r.run.id}`, final: r.final })),
  };
  removeStaleTemporaries(out);
  removeSweepOutputs(out);
  for (const r of all) copyRun(join(dirs[holder.get(r.id)!]!, 'runs', r.id), join(out, 'runs', r.id));
  writeSweep(out, sweep, results, report);
  return {
    sweep,
    results,
    shards: manifests.map((m, i) => ({ dir: dirs[i]!, shard: { index: m.shard.index, count: m.shard.count }, runs: m.shard.runs.length })),
    file: first.sweep.scenario.file,
  };
}

/** "2 of 6 runs are in none of the shards given: a, b; shard 2 of 3 is missing (memtwin run ... --shard 2/3)". */
function missingRuns(missing: { index: number; id: string }[], total: number, manifests: ShardManifest[], dirs: string[]): string {
  const ids =
    missing.length > 6
      ? `${missing
          .slice(0, 5)
          .map((r) => r.id)
          .join(', ')}, ...`
      : missing.map((r) => r.id).join(', ');
  let which = '';
  const counts = new Set(manifests.map((m) => m.shard.count));
  if (counts.size === 1) {
    const n = manifests[0]!.shard.count;
    const absent = [...new Set(missing.map((r) => shardOf(r.index, n)))].sort((a, b) => a - b);
    const m = manifests[0]!;
    which =
      `; ${absent.length === 1 ? 'shard' : 'shards'} ${absent.join(', ')} of ${n} ${absent.length === 1 ? 'is' : 'are'} missing ` +
      `(${shardCommand({ ...m, shard: { index: absent[0]!, count: n, runs: [] } }, siblingDir(dirs[0]!, { index: absent[0]!, count: n }))}${absent.length > 1 ? ', ...' : ''})`;
  }
  return `${missing.length} of ${total} runs ${missing.length === 1 ? 'is' : 'are'} in none of the shards given (${dirs.join(', ')}): ${ids}${which}`;
}

/** Shard `s`'s directory named as `dir` is (`out/x-shard-0-of-3` -> `out/x-shard-2-of-3`), or DIR. */
function siblingDir(dir: string, s: ShardSpec): string {
  const m = /^(.*)-shard-\d+-of-\d+\/?$/.exec(dir);
  return m ? shardDirName(m[1]!, s) : 'DIR';
}

/**
 * Copy a finished run's directory: every file to a temporary, renamed into
 * place with result.json (the run's completion marker) last and removed
 * first, as writeRun does, so a kill leaves the run whole or absent.
 */
function copyRun(from: string, to: string): void {
  mkdirSync(to, { recursive: true });
  const marker = join(to, RUN_FILES[RUN_FILES.length - 1]!);
  rmSync(marker, { force: true });
  for (const f of RUN_FILES) copyFileSync(join(from, f), tmpName(join(to, f)));
  for (const f of RUN_FILES) renameSync(tmpName(join(to, f)), join(to, f));
}
