/**
 * Sweeps split into shards and merged: the split puts every run in exactly
 * one shard, shards balanced within one run; shards run as separate
 * `memtwin run --shard I/N` processes and merged with `memtwin merge` give
 * every file of a one-machine run byte for byte; merge refuses, naming the
 * directory, shards of other sweeps or inputs, runs missing, given twice or
 * unfinished.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { spawn } from 'node:child_process';
import { chmodSync, cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { runScenarioFile } from './sweep.ts';
import { mergeShards, parseShard, readShardManifest, shardOf, shardRuns, SHARD_FILE } from './merge.ts';
import { renderRunReport, renderSweepReport } from '../report/report.ts';
import { InputError } from '../util/input_error.ts';

const bin = fileURLToPath(new URL('../../bin/memtwin.js', import.meta.url));
const report = { run: renderRunReport, sweep: renderSweepReport };
const dir = mkdtempSync(join(tmpdir(), 'memtwin-merge-'));

const HOST = `name: tiny
nodes:
  - { id: 0, memory: 256M, cpus: 0-1 }
  - { id: 1, memory: 256M, cpus: 2-3 }
distances: [[10, 21], [21, 10]]
`;
/** Six short runs (about 0.3 s each): six do not split evenly into 4 shards. */
const SCENARIO = (host: string): string => `name: shards
seed: 3
host: ${host}
duration: 8ms
sample: { interval: 1ms }
processes:
  - name: app
    mappings:
      - { name: heap, size: 32M, madvise: [MADV_HUGEPAGE] }
    threads:
      - { name: w, cpu: 0, count: 2, workload: { pattern: uniform, mapping: heap, read_ratio: 0.7 } }
sweep:
  - path: [kernel, /sys/kernel/mm/transparent_hugepage/enabled]
    values: [always, madvise, never]
    label: enabled
  - path: [seed]
    values: [1, 2]
`;
const RUNS = 6;

function scenario(name: string): string {
  const d = join(dir, name);
  mkdirSync(d, { recursive: true });
  writeFileSync(join(d, 'host.yaml'), HOST);
  const f = join(d, 'shards.yaml');
  writeFileSync(f, SCENARIO(join(d, 'host.yaml')));
  return f;
}

/** Every file under `root`, relative, sorted. */
function files(root: string): string[] {
  const out: string[] = [];
  const walk = (rel: string): void => {
    for (const e of readdirSync(join(root, rel), { withFileTypes: true })) {
      const p = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(p);
      else out.push(p);
    }
  };
  walk('');
  return out.sort();
}

/** `memtwin ARGS` as a separate process; its exit status and output. */
function memtwin(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [bin, ...args], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '',
      stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

const refusal = (f: () => unknown): string => {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(InputError);
    return (e as Error).message;
  }
  throw new Error('expected merge to refuse');
};

describe('the split of a sweep into shards', () => {
  it('puts every run in exactly one shard, shards within one run of each other, in run order', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 1000 }), fc.integer({ min: 1, max: 64 }), (runs, count) => {
        const shards = Array.from({ length: count }, (_, index) => shardRuns(runs, { index, count }));
        const seen = shards.flat().sort((a, b) => a - b);
        expect(seen).toEqual(Array.from({ length: runs }, (_, i) => i));
        const sizes = shards.map((s) => s.length);
        expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(1);
        shards.forEach((s, index) => {
          expect(s).toEqual([...s].sort((a, b) => a - b));
          for (const i of s) expect(shardOf(i, count)).toBe(index);
        });
      }),
    );
  });

  it.each([
    ['0/1', { index: 0, count: 1 }],
    ['3/4', { index: 3, count: 4 }],
    [' 2 / 10 ', { index: 2, count: 10 }],
  ])('reads --shard %j', (text, spec) => expect(parseShard(text)).toEqual(spec));

  it.each(['4/4', '1/0', '-1/4', '1', '1/4/2', 'a/b', '', '1.5/4'])('refuses --shard %j, saying I is 0-based', (text) =>
    expect(refusal(() => parseShard(text))).toMatch(/^--shard: expected I\/N with 0 <= I < N \(I is 0-based/),
  );
});

/** One sweep for every test below, its one-machine run and its two shards run as separate processes, each made once. */
const SHARED = scenario('shared');
let wholeRun: Promise<string> | undefined;
const whole = (): Promise<string> => (wholeRun ??= runScenarioFile(SHARED, join(dir, 'whole'), 2, report).then(() => join(dir, 'whole')));
let spawned: Promise<string[]> | undefined;
const twoShards = (): Promise<string[]> =>
  (spawned ??= (async () => {
    const dirs = [0, 1].map((i) => join(dir, `shared-shard-${i}-of-2`));
    const done = await Promise.all(dirs.map((d, i) => memtwin(['run', SHARED, '--shard', `${i}/2`, '--out', d, '--workers', '1'])));
    for (const r of done) {
      expect(r.stderr).not.toMatch(/Error|warning/);
      expect(r.code).toBe(0);
    }
    return dirs;
  })());

const sameTree = (a: string, b: string): void => {
  expect(files(a)).toEqual(files(b));
  for (const f of files(b)) expect(readFileSync(join(a, f)), f).toEqual(readFileSync(join(b, f)));
};

describe('memtwin run --shard and memtwin merge', () => {
  it('shards run as separate processes merge into every file of a one-machine run, byte for byte', async () => {
    const shardDirs = await twoShards(); // six runs: shards of 3 (the examples below split them 2, 2, 1, 1 and 2, 2, 2)
    // Each shard holds its share, describes itself, and has no sweep outputs of its own.
    shardDirs.forEach((d, i) => {
      const m = readShardManifest(d);
      expect(m.shard).toMatchObject({ index: i, count: 2 });
      expect(m.shard.runs).toEqual(shardRuns(RUNS, { index: i, count: 2 }).map((r) => m.sweep.runs[r]!.id));
      expect(files(d)).toEqual(
        [
          SHARD_FILE,
          ...m.shard.runs.flatMap((id) => ['report.html', 'result.json', 'timeseries.csv'].map((f) => `runs/${id}/${f}`)),
        ].sort(),
      );
    });
    const merged = join(dir, 'merged');
    const r = await memtwin(['merge', ...shardDirs, '-o', merged]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/shards: 6 runs from 2 shards/);
    sameTree(merged, await whole());
    expect(files(merged)).toHaveLength(3 + 3 * RUNS);
  }, 240_000);

  it('refuses, naming the directory, runs missing, given twice, unfinished, or of other inputs; status 2 from the command', async () => {
    const made = await twoShards();
    const d = (i: number): string => join(dir, `bad-shard-${i}-of-2`);
    const copy = (i: number): void => {
      rmSync(d(i), { recursive: true, force: true });
      cpSync(made[i]!, d(i), { recursive: true });
    };
    copy(0);
    copy(1);
    const out = join(dir, 'bad-merged');
    const merge = (dirs: string[]) => () => mergeShards(dirs, out, report);

    // A shard missing: which runs, which shard, and the command that makes it.
    expect(refusal(merge([d(0)]))).toMatch(
      new RegExp(
        `^merge: 3 of 6 runs are in none of the shards given .*; shard 1 of 2 is missing \\(memtwin run ${SHARED} --shard 1/2 --out .*bad-shard-1-of-2\\)$`,
      ),
    );
    // A run in two shards.
    cpSync(d(1), join(dir, 'bad-copy'), { recursive: true });
    expect(refusal(merge([d(0), d(1), join(dir, 'bad-copy')]))).toMatch(/bad-copy: run \S+ is also in .*bad-shard-1-of-2/);
    expect(refusal(merge([d(0), d(1), d(1)]))).toMatch(/bad-shard-1-of-2: given twice$/);
    // Not a shard, or the output directory is one.
    expect(refusal(merge([join(dir, 'nowhere')]))).toMatch(/nowhere: no such directory$/);
    expect(refusal(() => mergeShards([d(0), d(1)], d(1), report))).toMatch(/bad-shard-1-of-2: is a shard given to merge and the output/);
    // An unfinished run: the command that finishes it.
    const m1 = readShardManifest(d(1));
    rmSync(join(d(1), 'runs', m1.shard.runs[0]!, 'result.json'));
    expect(refusal(merge([d(0), d(1)]))).toMatch(
      new RegExp(`bad-shard-1-of-2: run ${m1.shard.runs[0]!} has not finished; rerun memtwin run .* --shard 1/2`),
    );
    // A shard made from another host file: named, as the resume check names it.
    const host = join(dir, 'shared', 'host.yaml');
    try {
      writeFileSync(host, HOST.replace('[[10, 21], [21, 10]]', '[[10, 20], [20, 10]]'));
      await runScenarioFile(SHARED, d(1), 2, report, {}, { shard: { index: 1, count: 2 } });
    } finally {
      writeFileSync(host, HOST);
    }
    expect(refusal(merge([d(0), d(1)]))).toMatch(
      /bad-shard-1-of-2: not a shard of the same sweep: run \S+ has other inputs than in .*bad-shard-0-of-2: host file changed \(.*host\.yaml\)$/,
    );
    // Nothing was written by a refused merge.
    expect(() => readdirSync(out)).toThrow();
    // The command: one line, exit status 2.
    const r = await memtwin(['merge', d(0), '-o', out]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^memtwin: merge: 3 of 6 runs are in none of the shards given/);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  }, 240_000);
});

/** `sh -c`/`bash` SCRIPT as a separate process in `cwd`, with `env` added; its exit status and output. */
function shell(cmd: string[], cwd: string, env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd[0]!, cmd.slice(1), { cwd, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    let stdout = '',
      stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

/** A directory holding a `memtwin` command (this checkout's) and a `sbatch` that runs each job at once, array tasks in order. */
function fakeTools(): string {
  const d = join(dir, 'bin');
  mkdirSync(d, { recursive: true });
  writeFileSync(join(d, 'memtwin'), `#!/bin/sh\nexec "${process.execPath}" "${bin}" "$@"\n`);
  writeFileSync(
    join(d, 'sbatch'),
    `#!/bin/bash
array=''
while [ $# -gt 0 ]; do
  case "$1" in
    --array=*) array=\${1#--array=} ;;
    --*) ;;
    *) break ;;
  esac
  shift
done
script=$1
shift
if [ -n "$array" ]; then
  for ((i = \${array%-*}; i <= \${array#*-}; i++)); do SLURM_JOB_ID=7 SLURM_ARRAY_TASK_ID=$i bash "$script" "$@" >&2 || exit 1; done
else
  SLURM_JOB_ID=8 bash "$script" "$@" >&2 || exit 1
fi
echo 7
`,
  );
  for (const f of ['memtwin', 'sbatch']) chmodSync(join(d, f), 0o755);
  return d;
}

describe('the batch-engine examples', () => {
  const examples = fileURLToPath(new URL('../../examples/', import.meta.url));

  it("examples/k8s-indexed-job.yaml: its pods' commands, each with its JOB_COMPLETION_INDEX, then the merge Job's, give a one-machine run", async () => {
    const docs = parseAllDocuments(readFileSync(join(examples, 'k8s-indexed-job.yaml'), 'utf8')).map((d) => d.toJS());
    const job = (step: string) => docs.find((d) => d.kind === 'Job' && d.metadata.labels['memtwin-step'] === step);
    const shards = job('shards'),
      merge = job('merge');
    expect(shards.spec.completionMode).toBe('Indexed');
    const n: number = shards.spec.completions;
    const command = (j: typeof shards): string[] => j.spec.template.spec.containers[0].command;
    const shipped = '/usr/local/lib/node_modules/memtwin/scenarios/free-page-hints.yaml';
    expect(command(shards).join(' ')).toContain(shipped);
    expect(command(shards).join(' ')).toContain(`--shard "$JOB_COMPLETION_INDEX/${n}"`);
    // The same commands, on this checkout's memtwin and a small scenario, in a directory standing for the volume.
    const file = SHARED;
    const volume = join(dir, 'k8s-volume');
    mkdirSync(volume);
    const env = { PATH: `${fakeTools()}:${process.env.PATH}` };
    const sh = (j: typeof shards, more: Record<string, string> = {}) =>
      shell(
        command(j).map((a) => a.replace(shipped, file)),
        volume,
        { ...env, ...more },
      );
    for (let i = 0; i < n; i += 2) {
      const done = await Promise.all([i, i + 1].filter((x) => x < n).map((x) => sh(shards, { JOB_COMPLETION_INDEX: String(x) })));
      for (const r of done) expect(r.code, r.stderr).toBe(0);
    }
    const m = await sh(merge);
    expect(m.code, m.stderr).toBe(0);
    sameTree(join(volume, 'free-page-hints'), await whole());
  }, 240_000);

  it('examples/slurm-array.sh: submitted (sbatch running each job at once), its array tasks and merge job give a one-machine run', async () => {
    const file = SHARED;
    const work = join(dir, 'slurm-work');
    mkdirSync(work);
    const env = { PATH: `${fakeTools()}:${process.env.PATH}`, MEMTWIN: 'memtwin' };
    const r = await shell(['bash', join(examples, 'slurm-array.sh'), file, '3'], work, env);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^shards: job 7 \(tasks 0-2\)\nmerge: job 7; results in out\/shards\//);
    expect(readdirSync(join(work, 'out')).sort()).toEqual(['shards', 'shards-shard-0-of-3', 'shards-shard-1-of-3', 'shards-shard-2-of-3']);
    sameTree(join(work, 'out', 'shards'), await whole());
  }, 240_000);
});
