/** `memtwin run`: run a scenario (or sweep) and write results and a report. */
import { basename, join, relative } from 'node:path';
import cliProgress from 'cli-progress';
import { runScenarioFile, defaultWorkers, Interrupted, type RunEvents } from '../scenario/sweep.ts';
import { mergeShards, readShardManifest, shardDirName, type ShardSpec } from '../scenario/merge.ts';
import { renderRunReport, renderSweepReport } from '../report/report.ts';
import type { RunResult } from '../scenario/result.ts';

export const RUN_HELP = `
A scenario file (YAML) describes a host, kernel knobs, processes with their
mappings and threads with their workloads, a duration, sampling, a seed, and
optionally a sweep of parameters. Complete example:

  name: thp-random
  description: THP always vs never on random access
  seed: 1
  host: default                 # hosts/default.yaml, a file, or an inline host
  duration: 500ms               # virtual time
  sample: { interval: 10ms }
  kernel:                       # sysfs/procfs knobs written before the run
    /sys/kernel/mm/transparent_hugepage/defrag: madvise
  processes:
    - name: app
      mappings:
        - name: heap
          size: 1G
          madvise: [MADV_HUGEPAGE]   # also: prot, flags, populate, populate_fill, fragment
      threads:
        - name: worker
          cpu: 0
          count: 4                   # worker-0..3 on CPUs 0..3
          workload:                  # or: phases: [ {pattern..., duration}, ... ]
            pattern: uniform         # sequential | uniform | zipf | first-touch | idle | copy (to: MAPPING)
            mapping: heap
            read_ratio: 0.7          # also: offset, length, rate, stride, zipf_s
  sweep:                             # one run per combination of values
    - path: [kernel, /sys/kernel/mm/transparent_hugepage/enabled]
      values: [always, never]
      label: enabled

Limits (every numeric field has a range, in its description in the JSON
Schema, and is checked):
  duration            1us to 3600s of virtual time; durations are whole
                      nanoseconds: a number, or 1.5ms, 500us, 2s, 100ns
  sample.interval     1us to 3600s, at most 10000 samples per run
  agents[].interval   1ms to 3600s, at most 100000 ticks per run
  sizes               bytes or 4K, 2M, 1G, 1T: mappings up to 1T, guest RAM
                      in whole 4K pages, a sequential stride of 64 or more
  CPUs, nodes         0 to 8191 and 0 to 1023, and they must exist on the host
  counts, seeds       integers only (safe integers: 1e308 is not one)
  sweep               at most 1000 runs (the product of its dimensions)
A scenario that breaks a rule is refused, exit status 2, with one line:
  FILE:LINE:COLUMN: FIELD: what is wrong; expected ALLOWED FORMS, got VALUE
(a long value is cut short). The cross-checks run at load too: names that
must exist, CPUs and nodes of the host, knob values the kernel accepts,
mmap/mbind/set_mempolicy and QEMU's VM setup on a probe kernel.

Outputs in --out DIR (default out/<scenario name>): result.json,
timeseries.csv (summary.csv for a sweep), report.html, snapshots.json (a
run's migrations; with --snapshots, or sample.snapshots: true, its memory
maps at the samples), and runs/<id>/ for each run of a sweep. memtwin view
DIR shows them in a browser. Rerunning a sweep into the same DIR keeps the runs that
already finished with the same inputs. JSON Schema for editors: memtwin schema.

--shard I/N runs shard I (0-based) of N of a sweep: runs I, I+N, I+2N, ...
into out/<name>-shard-I-of-N (or --out); memtwin merge joins the shards
into what one machine writes (memtwin merge --help).

--smoke runs the scenario's reduced form: the values listed under \`smoke:\`
(a shorter duration, less memory; same code paths) are set before the sweep
is expanded, and outputs go to out/<name>-smoke by default. A quick check
that a scenario runs end to end; its numbers are not the scenario's answer.
`;

export const MERGE_HELP = `
A sweep split into N shards, each run anywhere (a Kubernetes Indexed Job,
a Slurm array; examples/k8s-indexed-job.yaml, examples/slurm-array.sh):

  memtwin run S.yaml --shard 0/3     # out/S-shard-0-of-3: runs 0, 3, 6, ...
  memtwin run S.yaml --shard 1/3     # out/S-shard-1-of-3: runs 1, 4, 7, ...
  memtwin run S.yaml --shard 2/3     # out/S-shard-2-of-3: runs 2, 5, 8, ...
  memtwin merge out/S-shard-*-of-3 -o out/S

writes out/S exactly as \`memtwin run S.yaml\` on one machine would have:
runs/<id>/, result.json, summary.csv, report.html, byte for byte. Shard I
is 0-based (JOB_COMPLETION_INDEX; SLURM_ARRAY_TASK_ID of --array=0-(N-1)).
Each shard's shard.json names its sweep, its runs and their inputs' SHA-256
(scenario, host files, cost profile, memtwin's version); merge refuses,
exit status 2, shards of different sweeps or inputs, a run in two shards
or in none, and a run that did not finish, naming the directory. The
shards must have been given the scenario by the same path.
`;

const report = { run: renderRunReport, sweep: renderSweepReport };

/** Exit status after a signal: 128 + its number, as a shell reports a process the signal ended. */
const SIGNAL_EXIT = { SIGINT: 130, SIGTERM: 143 } as const;
type StopSignal = keyof typeof SIGNAL_EXIT;

export async function runCommand(
  file: string,
  o: { out?: string; workers: number; quiet?: boolean; smoke?: boolean; shard?: ShardSpec; snapshots?: boolean },
): Promise<void> {
  const whole = defaultOutDir(file, o.smoke);
  const outDir = o.out ?? (o.shard ? shardDirName(whole, o.shard) : whole);
  const rel = relative(process.cwd(), outDir) || '.';
  // SIGINT/SIGTERM stop the workers (sweep.ts) and end with what was kept; a second one ends at once.
  const progress = o.quiet ? undefined : process.stderr.isTTY ? new BarProgress() : new LineProgress();
  const ctl = new AbortController();
  let stopped: StopSignal | undefined;
  let finished = false;
  const onSignal = (sig: StopSignal): void => {
    // Every output is written: a signal now changes nothing, and the command ends as it would have.
    if (finished) return;
    if (stopped) {
      progress?.stop(); // gives the terminal its cursor back
      process.exit(SIGNAL_EXIT[stopped]);
    }
    stopped = sig;
    ctl.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const t0 = performance.now();
  let summary;
  try {
    summary = await runScenarioFile(file, outDir, o.workers, report, progress?.events ?? {}, {
      smoke: o.smoke,
      snapshots: o.snapshots,
      signal: ctl.signal,
      shard: o.shard,
    });
  } catch (e) {
    if (!(e instanceof Interrupted)) throw e;
    progress?.stop();
    process.stderr.write(
      e.sweep
        ? `interrupted: ${e.finished} of ${e.runs} runs finished and kept in ${rel}; rerun the same command to resume\n`
        : `interrupted: the run did not finish; nothing was written to ${rel}\n`,
    );
    process.exitCode = SIGNAL_EXIT[stopped ?? 'SIGINT'];
    return;
  } finally {
    progress?.stop();
  }
  finished = true;
  const secs = ((performance.now() - t0) / 1000).toFixed(1);
  const runs = summary.results.length;
  process.stdout.write(`${summaryTable(summary.results, summary.loaded.base.summary)}\n`);
  if (o.shard) {
    const { index, count } = o.shard;
    process.stdout.write(
      `${summary.loaded.base.name}: shard ${index}/${count}, ${runs} of ${summary.loaded.runs.length} runs` +
        `${summary.reused ? ` (${summary.reused} kept from before)` : ''} in ${secs} s, in ${rel}\n` +
        `when all ${count} shards are done: memtwin merge ${o.out ? `<the ${count} shard directories>` : `${relative(process.cwd(), whole)}-shard-*-of-${count}`} -o ${relative(process.cwd(), whole)}\n`,
    );
    return;
  }
  process.stdout.write(
    `${summary.loaded.base.name}: ${runs} run${runs > 1 ? 's' : ''}${summary.reused ? ` (${summary.reused} kept from before)` : ''} in ${secs} s\n` +
      `report: ${join(rel, 'report.html')}\nresults: ${join(rel, 'result.json')}\n`,
  );
}

/** Where `memtwin run FILE` writes unless --out says: out/<file's name>, out/<name>-smoke for --smoke. */
export const defaultOutDir = (file: string, smoke?: boolean): string =>
  join('out', basename(file).replace(/\.ya?ml$/, '') + (smoke ? '-smoke' : ''));

/** `memtwin merge DIR... [-o OUT]`: shards of one sweep into what one machine would have written (merge.ts). */
export function mergeCommand(dirs: string[], o: { out?: string }): void {
  const first = dirs.length ? readShardManifest(dirs[0]!) : undefined;
  const out = o.out ?? (first ? defaultOutDir(first.sweep.scenario.file, first.smoke) : '.');
  const m = mergeShards(dirs, out, report);
  const rel = relative(process.cwd(), out) || '.';
  const runs = m.results.length;
  process.stdout.write(`${summaryTable(m.results, m.sweep.scenario.summary)}\n`);
  process.stdout.write(
    `${m.sweep.scenario.name}: ${runs} run${runs > 1 ? 's' : ''} from ${dirs.length} shard${dirs.length > 1 ? 's' : ''}\n` +
      `report: ${join(rel, 'report.html')}\nresults: ${join(rel, 'result.json')}\n`,
  );
}

/** Simulated events per wall second, short: "850 k events/s". */
function eventRate(perSec: number): string {
  return perSec >= 1e6
    ? `${(perSec / 1e6).toFixed(1)} M events/s`
    : perSec >= 1e3
      ? `${Math.round(perSec / 1e3)} k events/s`
      : `${perSec} events/s`;
}

/** Virtual time done of a run, in the unit of its duration: "12.5 of 20 ms". */
function virtualTime(fraction: number, durationNs: number): string {
  const [unit, scale] = durationNs >= 1e9 ? ['s', 1e9] : durationNs >= 1e6 ? ['ms', 1e6] : durationNs >= 1e3 ? ['µs', 1e3] : ['ns', 1];
  const fmt = (ns: number): string => String(Math.round((ns / scale) * 10) / 10);
  return `${fmt(fraction * durationNs)} of ${fmt(durationNs)} ${unit}`;
}

type Plan = Parameters<NonNullable<RunEvents['onPlan']>>[0];

/**
 * The sweep's plan in one line: "6 runs (2 kept from an earlier attempt): running 4 on 2 workers";
 * a shard's starts with "shard 1/4, 2 of 6 runs".
 */
function planLine(p: Plan): string {
  if (!p.sweep) return '';
  if (p.shard) {
    const head = `shard ${p.shard.index}/${p.shard.count}, ${p.runs} of ${p.shard.of} runs`;
    if (!p.runs) return `${head}: nothing to run (more shards than runs)\n`;
    return `${head}${p.pending < p.runs ? ` (${p.runs - p.pending} kept from an earlier attempt)` : ''}${p.pending ? `: running ${p.pending} on ${p.workers} worker${p.workers > 1 ? 's' : ''}` : ', all kept from an earlier attempt'}\n`;
  }
  if (!p.pending) return `${p.runs} runs, all kept from an earlier attempt\n`;
  const kept = p.pending < p.runs ? ` (${p.runs - p.pending} kept from an earlier attempt)` : '';
  return `${p.runs} runs${kept}: running ${p.pending} on ${p.workers} worker${p.workers > 1 ? 's' : ''}\n`;
}

/** Why finished runs are run again, one line per reason: "rerun all 6 runs: cost profile changed (p.json)". */
function rerunLines(reruns: { id: string; reason: string }[], runs: number): string {
  const byReason = new Map<string, string[]>();
  for (const r of reruns) byReason.set(r.reason, [...(byReason.get(r.reason) ?? []), r.id]);
  return [...byReason]
    .map(([reason, ids]) => {
      const which =
        ids.length === runs && runs > 1
          ? `all ${runs} runs`
          : ids.length > 4
            ? `${ids.length} runs (${ids.slice(0, 3).join(', ')}, ...)`
            : ids.join(', ');
      return `  rerun ${which}: ${reason}\n`;
    })
    .join('');
}

/**
 * Progress on a terminal: one bar per running run, in virtual time, and
 * one for the sweep; finished runs and reruns are printed above them.
 */
class BarProgress {
  private readonly multi = new cliProgress.MultiBar(
    {
      format: '{id} {bar} {percentage}% | {what}',
      stream: process.stderr,
      hideCursor: true,
      clearOnComplete: true,
      autopadding: true,
      barsize: 24,
    },
    cliProgress.Presets.shades_classic,
  );
  private readonly bars = new Map<number, cliProgress.SingleBar>();
  private readonly reruns: { id: string; reason: string }[] = [];
  private sweepBar: cliProgress.SingleBar | undefined;
  private width = 0;
  private done = 0;
  private runs = 0;
  private stopped = false;

  readonly events: RunEvents = {
    onPlan: (p) => {
      this.width = Math.max(...p.ids.map((id) => id.length), 'all runs'.length);
      this.runs = p.runs;
      this.done = p.runs - p.pending;
      if (!p.sweep) return;
      this.multi.log(rerunLines(this.reruns, p.runs) + planLine(p));
      this.sweepBar = this.multi.create(p.runs, this.done, { id: 'all runs'.padEnd(this.width), what: this.sweepText() });
    },
    onRerun: (ev) => this.reruns.push(ev),
    onStart: (ev) =>
      this.bars.set(
        ev.index,
        this.multi.create(1000, 0, { id: ev.id.padEnd(this.width), what: `${virtualTime(0, ev.durationNs)} virtual` }),
      ),
    onProgress: (ev) =>
      this.bars.get(ev.index)?.update(Math.round(ev.fraction * 1000), {
        what: `${virtualTime(ev.fraction, ev.durationNs)} virtual${ev.eventsPerSec ? `, ${eventRate(ev.eventsPerSec)}` : ''}`,
      }),
    onRun: (ev) => {
      if (ev.state !== 'done') return;
      const bar = this.bars.get(ev.index);
      if (bar) this.multi.remove(bar);
      this.bars.delete(ev.index);
      this.done++;
      this.multi.log(`  run ${ev.id}: done in ${((ev.wallMs ?? 0) / 1000).toFixed(1)} s\n`);
      this.sweepBar?.update(this.done, { what: this.sweepText() });
    },
  };

  private sweepText(): string {
    return `${this.done} of ${this.runs} runs done`;
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.multi.update(); // flushes the lines logged since the last redraw; stop() would drop them
    this.multi.stop();
  }
}

/**
 * Progress as plain lines (stderr is not a terminal): the plan, each run
 * when it finishes, and every so often one line with the running runs'
 * virtual time: after 10 s, then at a sixth of the time elapsed, at most
 * a minute apart.
 */
class LineProgress {
  private readonly running = new Map<number, { id: string; fraction: number; durationNs: number; eventsPerSec: number }>();
  private readonly reruns: { id: string; reason: string }[] = [];
  private readonly t0 = performance.now();
  private done = 0;
  private runs = 0;
  private timer: NodeJS.Timeout | undefined;

  readonly events: RunEvents = {
    onPlan: (p) => {
      this.runs = p.runs;
      this.done = p.runs - p.pending;
      process.stderr.write(rerunLines(this.reruns, p.runs) + planLine(p));
      if (p.pending) this.schedule();
    },
    onRerun: (ev) => this.reruns.push(ev),
    onStart: (ev) => this.running.set(ev.index, { id: ev.id, fraction: 0, durationNs: ev.durationNs, eventsPerSec: 0 }),
    onProgress: (ev) => {
      const r = this.running.get(ev.index);
      if (r) [r.fraction, r.eventsPerSec] = [ev.fraction, ev.eventsPerSec];
    },
    onRun: (ev) => {
      if (ev.state !== 'done') return;
      this.running.delete(ev.index);
      this.done++;
      process.stderr.write(`  run ${ev.id}: done in ${((ev.wallMs ?? 0) / 1000).toFixed(1)} s\n`);
    },
  };

  private schedule(): void {
    const elapsed = performance.now() - this.t0;
    const next = Math.min(60_000, Math.max(10_000, elapsed / 6));
    this.timer = setTimeout(() => {
      this.status();
      this.schedule();
    }, next);
    this.timer.unref();
  }

  private status(): void {
    if (!this.running.size) return;
    const list = [...this.running.values()]
      .map(
        (r) =>
          `${r.id} ${Math.floor(r.fraction * 100)}% (${virtualTime(r.fraction, r.durationNs)}${r.eventsPerSec ? `, ${eventRate(r.eventsPerSec)}` : ''})`,
      )
      .join(', ');
    process.stderr.write(`  running: ${list}${this.runs > 1 ? `; ${this.done} of ${this.runs} runs done` : ''}\n`);
  }

  stop(): void {
    clearTimeout(this.timer);
  }
}

/** The per-run table the command prints: the scenario's `summary` metrics, or the default columns. */
function summaryTable(results: RunResult[], chosen?: string[]): string {
  const cols = chosen ?? [
    'throughput_per_s',
    'access_ns_mean',
    'faults',
    'fault_ns_mean',
    'rss_bytes',
    'anon_huge_bytes',
    'bloat_bytes',
    'remote_access_ratio',
  ];
  const fmt = (k: string, v: number): string =>
    k.endsWith('_bytes')
      ? `${(v / 2 ** 20).toFixed(0)} MiB`
      : k.endsWith('_ratio')
        ? `${(v * 100).toFixed(1)}%`
        : k.endsWith('_per_s')
          ? `${(v / 1e6).toFixed(2)} M/s`
          : k.endsWith('_ns') && !k.endsWith('access_ns_mean') && !k.endsWith('fault_ns_mean')
            ? `${(v / 1e6).toFixed(1)} ms`
            : String(Math.round(v * 1000) / 1000);
  const rows = [['run', ...cols], ...results.map((r) => [r.run.id, ...cols.map((c) => fmt(c, r.final[c] ?? 0))])];
  const w = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((x, i) => x.padEnd(w[i]!)).join('  ')).join('\n');
}

export { defaultWorkers };
