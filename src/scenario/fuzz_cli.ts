/**
 * A fuzz campaign through the real command line: mutated scenarios
 * (fuzz.ts) each run as `memtwin run FILE --out DIR --quiet --workers 1`
 * with a time limit, counting what a user must never see: stack traces
 * (stderr with "    at "), hangs (the time limit), exit statuses other than
 * 0, 1 and 2, and exit-2 errors without a line.
 *
 *   npx tsx src/scenario/fuzz_cli.ts [--seed S] [--n N] [--jobs J] [--timeout SECONDS]
 *                                    [--cli bin|bundle] [--keep DIR]
 *
 * --cli bin runs bin/memtwin.js (the TypeScript sources through tsx, about
 * 2 s of start-up per case); --cli bundle runs the same sources bundled by
 * esbuild once (about 0.8 s). --keep DIR keeps every case whose result is
 * one of the above, with its stderr.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildSync } from 'esbuild';
import { fromRoot } from '../util/paths.ts';
import { generateScenarioCases, type FuzzCase } from './fuzz.ts';

interface Outcome {
  i: number;
  status: number | null;
  signal: string | null;
  timedOut: boolean;
  ms: number;
  stderr: string;
}

/** What is wrong with an outcome, or undefined if it is one a user may see. */
export function verdict(o: Outcome): string | undefined {
  if (o.timedOut) return 'hang';
  if (/\n {4}at |^ {4}at /m.test(o.stderr)) return 'stack trace';
  if (o.signal) return `signal ${o.signal}`;
  if (o.status !== 0 && o.status !== 1 && o.status !== 2) return `exit ${o.status}`;
  if (o.status === 2 && !/^memtwin: .*?:\d+:\d+: \S/m.test(o.stderr)) return 'exit 2 without a line';
  if (o.status === 1) return 'exit 1';
  return undefined;
}

function args(): { seed: number; n: number; jobs: number; timeout: number; cli: 'bin' | 'bundle'; keep?: string } {
  const a = process.argv.slice(2);
  const get = (name: string): string | undefined => {
    const i = a.indexOf(`--${name}`);
    return i >= 0 ? a[i + 1] : undefined;
  };
  return {
    seed: Number(get('seed') ?? 1),
    n: Number(get('n') ?? 200),
    jobs: Number(get('jobs') ?? 2),
    timeout: Number(get('timeout') ?? 60),
    cli: get('cli') === 'bundle' ? 'bundle' : 'bin',
    ...(get('keep') ? { keep: get('keep')! } : {}),
  };
}

function cliEntry(kind: 'bin' | 'bundle'): string {
  if (kind === 'bin') return fromRoot('bin', 'memtwin.js');
  const out = fromRoot('node_modules', '.cache', 'memtwin', `fuzz-cli-${process.pid}.mjs`);
  buildSync({
    entryPoints: [fromRoot('src', 'cli', 'main.ts')],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    packages: 'external',
    outfile: out,
    logLevel: 'silent',
  });
  return out;
}

function runOne(entry: string, dir: string, c: FuzzCase, i: number, timeoutS: number): Promise<Outcome> {
  const file = join(dir, `case-${i}.yaml`);
  writeFileSync(file, c.text);
  const out = join(dir, `out-${i}`);
  const t0 = performance.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [entry, 'run', file, '--out', out, '--quiet', '--workers', '1'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => {
      if (stderr.length < 64_000) stderr += d.toString();
    });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutS * 1000);
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      rmSync(out, { recursive: true, force: true });
      resolve({ i, status, signal: timedOut ? null : signal, timedOut, ms: performance.now() - t0, stderr });
    });
  });
}

async function main(): Promise<void> {
  const o = args();
  const cases = generateScenarioCases(o.seed, o.n);
  const dir = mkdtempSync(join(tmpdir(), 'memtwin-fuzz-'));
  const entry = cliEntry(o.cli);
  const outcomes: Outcome[] = [];
  let next = 0;
  const t0 = performance.now();
  const worker = async (): Promise<void> => {
    while (next < cases.length) {
      const i = next++;
      const r = await runOne(entry, dir, cases[i]!, i, o.timeout);
      outcomes.push(r);
      if (outcomes.length % 100 === 0)
        process.stdout.write(
          `${outcomes.length} done: exit 0 ${outcomes.filter((x) => x.status === 0).length}, exit 2 ${outcomes.filter((x) => x.status === 2).length}, ` +
            `flagged ${outcomes.filter((x) => verdict(x)).length}\n`,
        );
      const v = verdict(r);
      if (v) {
        const c = cases[i]!;
        process.stdout.write(`#${i} ${v} (${c.base}: ${c.mutations.join('; ')})\n  ${r.stderr.split('\n').slice(0, 3).join('\n  ')}\n`);
        if (o.keep) {
          mkdirSync(o.keep, { recursive: true });
          writeFileSync(join(o.keep, `case-${o.seed}-${i}.yaml`), c.text);
          writeFileSync(join(o.keep, `case-${o.seed}-${i}.stderr`), r.stderr);
        }
      }
      rmSync(join(dir, `case-${i}.yaml`), { force: true });
    }
  };
  await Promise.all(Array.from({ length: o.jobs }, worker));
  if (o.cli === 'bundle') rmSync(entry, { force: true });
  rmSync(dir, { recursive: true, force: true });
  const count = (f: (x: Outcome) => boolean): number => outcomes.filter(f).length;
  const byVerdict = new Map<string, number>();
  for (const x of outcomes) {
    const v = verdict(x) ?? `ok (exit ${x.status})`;
    byVerdict.set(v, (byVerdict.get(v) ?? 0) + 1);
  }
  const slowest = Math.max(...outcomes.map((x) => x.ms));
  process.stdout.write(
    `${outcomes.length} cases (seed ${o.seed}, --cli ${o.cli}) in ${((performance.now() - t0) / 1000).toFixed(0)} s; ` +
      `exit 0: ${count((x) => x.status === 0)}, exit 2: ${count((x) => x.status === 2)}, slowest ${(slowest / 1000).toFixed(1)} s\n` +
      [...byVerdict].map(([k, v]) => `  ${k}: ${v}`).join('\n') +
      '\n',
  );
  process.exitCode = outcomes.some((x) => verdict(x)) ? 1 : 0;
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
