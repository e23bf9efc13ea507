/** `memtwin run`: run a scenario (or sweep) and write results and a report. */
import { basename, join, relative } from 'node:path';
import cliProgress from 'cli-progress';
import { runScenarioFile, defaultWorkers } from '../scenario/sweep.ts';
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
          madvise: [MADV_HUGEPAGE]   # also: prot, flags, populate, fragment
      threads:
        - name: worker
          cpu: 0
          count: 4                   # worker-0..3 on CPUs 0..3
          workload:                  # or: phases: [ {pattern..., duration}, ... ]
            pattern: uniform         # sequential | uniform | zipf | first-touch
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
timeseries.csv (summary.csv for a sweep), report.html, and runs/<id>/ for
each run of a sweep. Rerunning a sweep into the same DIR keeps the runs that
already finished with the same inputs. JSON Schema for editors: memtwin schema.

--smoke runs the scenario's reduced form: the values listed under \`smoke:\`
(a shorter duration, less memory; same code paths) are set before the sweep
is expanded, and outputs go to out/<name>-smoke by default. A quick check
that a scenario runs end to end; its numbers are not the scenario's answer.
`;

const report = { run: renderRunReport, sweep: renderSweepReport };

export async function runCommand(file: string, o: { out?: string; workers: number; quiet?: boolean; smoke?: boolean }): Promise<void> {
  const outDir = o.out ?? join('out', basename(file).replace(/\.ya?ml$/, '') + (o.smoke ? '-smoke' : ''));
  const tty = process.stderr.isTTY && !o.quiet;
  let bar: cliProgress.SingleBar | undefined;
  let total = 0;
  let done = 0;
  const startBar = (n: number, unit: string): void => {
    if (!tty) return;
    bar = new cliProgress.SingleBar(
      { format: `{bar} {percentage}% | {value}/{total} ${unit}`, stream: process.stderr, hideCursor: true },
      cliProgress.Presets.shades_classic,
    );
    bar.start(n, 0);
  };
  const t0 = performance.now();
  let lastPct = -1;
  const summary = await runScenarioFile(
    file,
    outDir,
    o.workers,
    report,
    {
      onProgress: (f) => {
        const pct = Math.floor(f * 100);
        if (!bar && tty && total === 0) startBar(100, '% of virtual time');
        if (bar) bar.update(pct);
        else if (!o.quiet && pct >= lastPct + 25) {
          process.stderr.write(`  ${pct}% of virtual time\n`);
          lastPct = pct;
        }
      },
      onRun: (ev) => {
        if (total === 0) total = -1;
        done++;
        if (bar) bar.increment();
        else if (!o.quiet)
          process.stderr.write(
            `  run ${ev.id}: ${ev.state === 'reused' ? 'kept from an earlier run' : `done in ${((ev.wallMs ?? 0) / 1000).toFixed(1)} s`}\n`,
          );
      },
    },
    { smoke: o.smoke },
  );
  bar?.stop();
  void done;
  const secs = ((performance.now() - t0) / 1000).toFixed(1);
  const rel = relative(process.cwd(), outDir) || '.';
  const runs = summary.results.length;
  process.stdout.write(`${summaryTable(summary.results, summary.loaded.base.summary)}\n`);
  process.stdout.write(
    `${summary.loaded.base.name}: ${runs} run${runs > 1 ? 's' : ''}${summary.reused ? ` (${summary.reused} kept from before)` : ''} in ${secs} s\n` +
      `report: ${join(rel, 'report.html')}\nresults: ${join(rel, 'result.json')}\n`,
  );
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
