/**
 * Sweeps that are interrupted and resumed: a sweep killed at any point
 * (SIGKILL, or SIGINT/SIGTERM which it handles) and rerun ends with outputs
 * byte-identical to an uninterrupted run's, nothing left behind (temporaries,
 * worker bundles); a rerun keeps exactly the runs whose inputs (scenario,
 * host file, cost profile, memtwin version) are unchanged, and says why it
 * redoes the others.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { runScenarioFile, removeStaleBundles, WORKER_BUNDLE_DIR, type RunEvents } from './sweep.ts';
import { finishedRun, procStartTime, removeStaleTemporaries, writeRun, RUN_FILES } from './output.ts';
import { firstDifference, staleReason } from './inputs.ts';
import { MEMTWIN_VERSION, runScenario } from './run.ts';
import { loadScenario } from './load.ts';
import { renderRunReport, renderSweepReport } from '../report/report.ts';

const bin = fileURLToPath(new URL('../../bin/memtwin.js', import.meta.url));
const report = { run: renderRunReport, sweep: renderSweepReport };
const dir = mkdtempSync(join(tmpdir(), 'memtwin-sweep-'));

/** Four short runs (about 0.3 s each), a host file and a profile of their own, so that tests can change them. */
const HOST = `name: tiny
nodes:
  - { id: 0, memory: 256M, cpus: 0-1 }
  - { id: 1, memory: 256M, cpus: 2-3 }
distances: [[10, 21], [21, 10]]
`;
const SCENARIO = (host: string, profile: string, seeds: string): string => `name: kills
seed: 3
host: ${host}
profile: ${profile}
duration: 12ms
sample: { interval: 1ms }
processes:
  - name: app
    mappings:
      - { name: heap, size: 32M, madvise: [MADV_HUGEPAGE] }
    threads:
      - { name: w, cpu: 0, count: 2, workload: { pattern: uniform, mapping: heap, read_ratio: 0.7 } }
sweep:
  - path: [kernel, /sys/kernel/mm/transparent_hugepage/enabled]
    values: [always, never]
    label: enabled
  - path: [seed]
    values: [${seeds}]
`;
const RUNS = 4;
const PROFILE_TEXT = readFileSync(fileURLToPath(new URL('../../profiles/default.json', import.meta.url)), 'utf8');

function scenario(name: string, seeds = '1, 2'): string {
  const d = join(dir, name);
  mkdirSync(d, { recursive: true });
  writeFileSync(join(d, 'host.yaml'), HOST);
  writeFileSync(join(d, 'profile.json'), PROFILE_TEXT);
  const f = join(d, 'kills.yaml');
  writeFileSync(f, SCENARIO(join(d, 'host.yaml'), join(d, 'profile.json'), seeds));
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
  try {
    walk('');
  } catch {
    // a directory that a running memtwin is creating: counted on the next look
  }
  return out.sort();
}

const finishedRuns = (out: string): number =>
  existsSync(join(out, 'runs')) ? readdirSync(join(out, 'runs')).filter((r) => existsSync(join(out, 'runs', r, 'result.json'))).length : 0;

const bundlesOf = (pid: number): string[] =>
  existsSync(WORKER_BUNDLE_DIR) ? readdirSync(WORKER_BUNDLE_DIR).filter((f) => f.startsWith(`sweep-worker-${pid}-`)) : [];

/**
 * Preloaded into a killed attempt (node --import): counts the files memtwin
 * writes or renames under the output directory and sends the signal to its
 * own process at the chosen one, before it happens. A kill then lands
 * exactly on an output boundary (between two renames of one run, say),
 * which polling from outside could not hit.
 */
const KILL_AT_OP = `import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
const under = process.env.KILL_UNDER + '/';
const at = Number(process.env.KILL_AT_OP);
let n = 0;
for (const name of ['writeFileSync', 'renameSync']) {
  const real = fs[name];
  fs[name] = function (path, ...rest) {
    if (String(path).startsWith(under) && ++n === at) process.kill(process.pid, process.env.KILL_SIGNAL);
    return real.call(this, path, ...rest);
  };
}
syncBuiltinESMExports();
`;

type Kill = { signal: 'SIGKILL' | 'SIGINT' | 'SIGTERM'; after: { op: number } | { ms: number } };

/** `memtwin run` into `out` (relative to dir), killed with `kill.signal` at its `op`-th file write or rename there, or after `ms`. */
function runKilled(
  file: string,
  out: string,
  kill: Kill,
): Promise<{ pid: number; code: number | null; signal: string | null; stderr: string; sent: boolean }> {
  const preload = join(dir, 'kill-at-op.mjs');
  if (!existsSync(preload)) writeFileSync(preload, KILL_AT_OP);
  return new Promise((resolve) => {
    const byOp = 'op' in kill.after;
    const child = spawn(
      process.execPath,
      [...(byOp ? ['--import', pathToFileURL(preload).href] : []), bin, 'run', file, '--out', out, '--workers', '2'],
      {
        cwd: dir,
        stdio: ['ignore', 'ignore', 'pipe'],
        env: { ...process.env, KILL_UNDER: out, KILL_AT_OP: String('op' in kill.after ? kill.after.op : 0), KILL_SIGNAL: kill.signal },
      },
    );
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    let sent = byOp;
    const timer =
      'ms' in kill.after
        ? setTimeout(() => {
            if (child.exitCode !== null) return;
            sent = true;
            child.kill(kill.signal);
          }, kill.after.ms)
        : undefined;
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ pid: child.pid!, code, signal, stderr, sent });
    });
  });
}

describe('a sweep killed at random points and rerun', () => {
  it('ends with every output byte-identical to an uninterrupted run, and leaves nothing behind', async () => {
    const file = scenario('kills');
    // The uninterrupted run, in this process (outputs do not depend on the output directory).
    const ref = join(dir, 'reference');
    await runScenarioFile(file, ref, 2, report);
    const refFiles = files(ref);
    expect(refFiles).toEqual(
      [
        'report.html',
        'result.json',
        'summary.csv',
        ...readdirSync(join(ref, 'runs')).flatMap((r) => RUN_FILES.map((f) => `runs/${r}/${f}`)),
      ].sort(),
    );
    expect(readdirSync(join(ref, 'runs'))).toHaveLength(RUNS);

    let trial = 0;
    // A kill: a signal, sent at one of the file writes and renames of an uninterrupted run
    // (each run's three temporaries and three renames, then the sweep's), or after a delay
    // (anywhere, startup and simulation included).
    const OUTPUT_OPS = 2 * refFiles.length;
    const kill: fc.Arbitrary<Kill> = fc.record({
      signal: fc.constantFrom('SIGKILL' as const, 'SIGINT' as const, 'SIGTERM' as const),
      after: fc.oneof(fc.record({ op: fc.integer({ min: 1, max: OUTPUT_OPS }) }), fc.record({ ms: fc.integer({ min: 0, max: 8000 }) })),
    });
    await fc.assert(
      // One or two attempts killed one after the other in the same directory, then one that finishes.
      fc.asyncProperty(fc.array(kill, { minLength: 1, maxLength: 2 }), async (kills) => {
        const name = `trial-${trial++}`; // relative to dir, the children's working directory
        const out = join(dir, name);
        const pids: number[] = [];
        let kept = 0;
        for (const k of kills) {
          const killed = await runKilled(file, name, k);
          pids.push(killed.pid);
          // Runs are never lost: what had finished is still there.
          expect(finishedRuns(out)).toBeGreaterThanOrEqual(kept);
          kept = finishedRuns(out);
          // A kill at an op past the last one, or a delay past the end: the attempt finished.
          if (!killed.sent || (killed.code === 0 && killed.signal === null)) {
            expect(kept).toBe(RUNS);
            continue;
          }
          if (k.signal === 'SIGKILL') continue;
          const temporaries = files(out).filter((f) => /\.tmp-[\d-]+$/.test(f));
          if (killed.signal === k.signal) {
            // The signal came before memtwin installed its handlers: nothing was planned, or written by this attempt
            // (an earlier attempt's SIGKILL may have left temporaries, which the next attempt that starts removes).
            expect(killed.stderr).not.toMatch(/runs/);
            expect(temporaries.filter((f) => f.includes(`.tmp-${killed.pid}`))).toEqual([]);
          } else {
            if (killed.code !== 0) {
              expect(killed.code).toBe(k.signal === 'SIGINT' ? 130 : 143);
              expect(killed.stderr).toContain(
                `interrupted: ${kept} of ${RUNS} runs finished and kept in ${name}; rerun the same command to resume`,
              );
            }
            // Stopped cleanly: no temporaries, its own or an earlier attempt's.
            expect(temporaries).toEqual([]);
          }
          // No worker bundle of its own.
          expect(bundlesOf(killed.pid)).toEqual([]);
        }
        const again = spawnSync(process.execPath, [bin, 'run', file, '--out', name, '--workers', '2'], { cwd: dir, encoding: 'utf8' });
        expect(again.status, again.stderr).toBe(0);
        // The kept runs are the finished ones, and none is redone for a changed input.
        if (kept)
          expect(again.stderr).toContain(kept === RUNS ? 'all kept from an earlier attempt' : `(${kept} kept from an earlier attempt)`);
        expect(again.stderr).not.toMatch(/rerun/);
        expect(files(out)).toEqual(refFiles);
        for (const f of refFiles) expect(readFileSync(join(out, f)).equals(readFileSync(join(ref, f))), f).toBe(true);
        // What a SIGKILL left behind is gone after the rerun, and the rerun removed its own bundle.
        for (const pid of [...pids, again.pid]) expect(bundlesOf(pid)).toEqual([]);
        rmSync(out, { recursive: true, force: true });
      }),
      // endOnFailure: report the first failing kill as found (shrinking would rerun memtwin for minutes).
      {
        numRuns: 3,
        endOnFailure: true,
        // CI's counterexample: a SIGKILL mid-write leaves temporaries; the next attempt, killed before its handlers,
        // cannot remove them (the one after does).
        examples: [
          [
            [
              { signal: 'SIGKILL', after: { op: 9 } },
              { signal: 'SIGINT', after: { ms: 0 } },
            ],
          ],
        ],
      },
    );
  }, 240_000);
});

describe('resuming a sweep', () => {
  it('keeps unchanged runs and reruns, saying why, those whose host file, profile or scenario changed', async () => {
    const file = scenario('inputs', '1');
    const out = join(dir, 'inputs-out');
    const reruns: string[] = [];
    const ev: RunEvents = { onRerun: (e) => reruns.push(`${e.id}: ${e.reason}`) };
    expect((await runScenarioFile(file, out, 2, report, ev)).reused).toBe(0);
    expect((await runScenarioFile(file, out, 2, report, ev)).reused).toBe(2);
    expect(reruns).toEqual([]);

    // The host file changes (a comment is enough: its bytes are what is hashed).
    writeFileSync(join(dir, 'inputs', 'host.yaml'), HOST + '# edited\n');
    expect((await runScenarioFile(file, out, 2, report, ev)).reused).toBe(0);
    expect(reruns).toHaveLength(2);
    expect(reruns[0]).toMatch(/^000-enabled=always,seed=1: host file changed \(.*inputs\/host\.yaml\)$/);

    reruns.length = 0;
    writeFileSync(join(dir, 'inputs', 'profile.json'), PROFILE_TEXT.replace('"source"', '"source" ').trimEnd() + '\n\n');
    expect((await runScenarioFile(file, out, 2, report, ev)).reused).toBe(0);
    expect(reruns[1]).toMatch(/^001-enabled=never,seed=1: cost profile changed \(.*inputs\/profile\.json\)$/);

    // The scenario changes: every run says which field.
    reruns.length = 0;
    writeFileSync(file, readFileSync(file, 'utf8').replace('duration: 12ms', 'duration: 11ms'));
    expect((await runScenarioFile(file, out, 2, report, ev)).reused).toBe(0);
    expect(reruns[1]).toBe('001-enabled=never,seed=1: scenario changed (duration)');

    // The recorded inputs carry a digest of each file, and the version is compared too.
    const dirOf = join(out, 'runs', readdirSync(join(out, 'runs')).sort()[0]!);
    const r = JSON.parse(readFileSync(join(dirOf, 'result.json'), 'utf8'));
    expect(Object.keys(r.inputs.digests)).toEqual(['host', 'profile']);
    expect(r.inputs.digests.host.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(finishedRun(dirOf, r.inputs, MEMTWIN_VERSION).result).toBeDefined();
    expect(finishedRun(dirOf, r.inputs, '9.9.9').reason).toBe(`memtwin version changed (${MEMTWIN_VERSION} -> 9.9.9)`);
    rmSync(join(dirOf, 'report.html'));
    expect(finishedRun(dirOf, r.inputs, MEMTWIN_VERSION).reason).toBe('report.html missing');
  }, 120_000);

  it('says which scenario field changed', () => {
    const prev = { memtwin: { version: '1' }, inputs: { seed: 1, kernel: { a: 'x' }, digests: { host: { source: 'h', sha256: '1' } } } };
    expect(staleReason(prev, prev.inputs, '1')).toBeUndefined();
    expect(staleReason(prev, { ...prev.inputs, kernel: { a: 'y' } }, '1')).toBe('scenario changed (kernel.a)');
    expect(staleReason(prev, { ...prev.inputs, digests: { host: { source: 'h', sha256: '2' } } }, '1')).toBe('host file changed (h)');
    expect(staleReason({ memtwin: { version: '1' }, inputs: { seed: 1, kernel: { a: 'x' } } }, prev.inputs, '1')).toBe(
      'host file not recorded by the earlier run',
    );
  });

  it('finds the first difference of any two JSON values, and none between equal ones', () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.jsonValue(), (a, b) => {
        const d = firstDifference(a, b);
        expect(d === undefined).toBe(JSON.stringify(a) === JSON.stringify(b));
        expect(firstDifference(a, structuredClone(a))).toBeUndefined();
      }),
      { numRuns: 300 },
    );
  });
});

describe('progress of a sweep', () => {
  it('each run reports its virtual time from start to end, and its simulation rate, between its start and its end', async () => {
    const file = scenario('progress');
    const log: { kind: string; id: string; fraction?: number; eventsPerSec?: number }[] = [];
    const ev: RunEvents = {
      onStart: (e) => log.push({ kind: 'start', id: e.id }),
      onProgress: (e) => log.push({ kind: 'progress', id: e.id, fraction: e.fraction, eventsPerSec: e.eventsPerSec }),
      onRun: (e) => log.push({ kind: e.state, id: e.id }),
    };
    await runScenarioFile(file, join(dir, 'progress-out'), 2, report, ev);
    const ids = [...new Set(log.map((l) => l.id))];
    expect(ids).toHaveLength(RUNS);
    for (const id of ids) {
      const mine = log.filter((l) => l.id === id);
      expect(mine[0]!.kind).toBe('start');
      expect(mine[mine.length - 1]!.kind).toBe('done');
      const steps = mine.filter((l) => l.kind === 'progress');
      expect(steps.length).toBeGreaterThanOrEqual(2); // the start (0) and the end (1) at least
      const fractions = steps.map((l) => l.fraction!);
      expect(fractions[0]).toBe(0);
      expect(fractions[fractions.length - 1]).toBe(1);
      expect(fractions).toEqual([...fractions].sort((a, b) => a - b));
      for (const l of steps) expect(Number.isInteger(l.eventsPerSec) && l.eventsPerSec! >= 0).toBe(true);
      // A run that simulated anything says how fast: its last report counts the events since the one before.
      expect(steps.some((l) => l.eventsPerSec! > 0)).toBe(true);
    }
  }, 120_000);
});

describe('what a killed attempt leaves behind', () => {
  it('temporaries of dead processes are removed, and a run is finished only when all its outputs are in place', () => {
    const out = join(dir, 'leftovers');
    const run = join(out, 'runs', '000-x');
    mkdirSync(run, { recursive: true });
    // A process that is surely gone: one that ran and exited.
    const dead = spawnSync(process.execPath, ['-e', '0']).pid!;
    writeFileSync(join(run, `result.json.tmp-${dead}`), '{');
    writeFileSync(join(out, `summary.csv.tmp-${dead}`), 'x');
    writeFileSync(join(run, `report.html.tmp-${process.ppid}`), 'alive'); // a live process's: kept
    // A live process's, named with its start time: kept; the same pid with another start time is a
    // dead process whose pid was reused (pid_max is 32768 here): removed.
    const start = procStartTime(process.ppid)!;
    expect(start).toMatch(/^\d+$/);
    writeFileSync(join(out, `summary.csv.tmp-${process.ppid}-${start}`), 'alive');
    writeFileSync(join(out, `report.html.tmp-${process.ppid}-${Number(start) + 1}`), 'reused pid');
    expect(removeStaleTemporaries(out)).toBe(3);
    expect(files(out)).toEqual([`runs/000-x/report.html.tmp-${process.ppid}`, `summary.csv.tmp-${process.ppid}-${start}`].sort());

    // writeRun puts result.json in place last; without it the run is not finished, whatever else is there.
    const l = loadScenario(scenario('leftovers-scenario', '1'));
    const fake = runScenario(l.runs[0]!, { file: l.file });
    writeRun(run, fake, report);
    expect(finishedRun(run, fake.inputs, MEMTWIN_VERSION).result).toBeDefined();
    rmSync(join(run, 'result.json'));
    expect(finishedRun(run, fake.inputs, MEMTWIN_VERSION)).toEqual({});
  });

  it('worker bundles of dead processes are removed at the next start', () => {
    mkdirSync(WORKER_BUNDLE_DIR, { recursive: true });
    const dead = spawnSync(process.execPath, ['-e', '0']).pid!;
    const stale = join(WORKER_BUNDLE_DIR, `sweep-worker-${dead}-1-0.mjs`);
    writeFileSync(stale, '');
    expect(removeStaleBundles()).toBeGreaterThanOrEqual(1);
    expect(existsSync(stale)).toBe(false);
  });
});
