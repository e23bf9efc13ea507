/**
 * memtwin's command line.
 */
import { Command, Option } from '@commander-js/extra-typings';
import { Kernel } from '../kernel/kernel.ts';
import { CostProfile } from '../sim/cost_profile.ts';
import { resolveHost } from '../sim/host.ts';
import { InputError, readInput } from '../util/input_error.ts';
import { ScriptRunner, type ResultLine } from '../opscript/runner.ts';
import { SimBackend } from '../opscript/sim_backend.ts';
import { ExecutorError, LinuxBackend } from '../opscript/linux_backend.ts';
import { GuestBackend } from '../opscript/guest_backend.ts';
import { OPS } from '../opscript/ops.ts';
import { diffRuns } from '../opscript/diff.ts';
import { jsonLine, table } from './format.ts';
import type { Backend } from '../opscript/backend.ts';
import { calibrate, CalibrateError, writeProfile } from './calibrate.ts';
import { runCommand, mergeCommand, RUN_HELP, MERGE_HELP, defaultWorkers } from './run.ts';
import { parseShard } from '../scenario/merge.ts';
import { scenarioJsonSchema } from '../scenario/schema.ts';

const program = new Command()
  .name('memtwin')
  .description('An executable twin of the Linux/KVM/QEMU memory-management stack')
  .version('0.1.0');

/** An op-script's text: the file, or standard input for `-` (errors then name `-`). */
const readScript = (file: string): string => readInput(file === '-' ? 0 : file, 'script', file);

function seedOf(v: string): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0)
    throw new InputError('--seed', undefined, undefined, undefined, `expected a non-negative integer, got "${v}"`);
  return n;
}

function simBackend(host: string, seed: number, profile?: string): SimBackend {
  const costs = profile ? CostProfile.load(profile) : CostProfile.default();
  return new SimBackend(new Kernel({ host: resolveHost(host), costs, seed }));
}

/** Run a script on one backend; lines go to `emit` as they are produced (returning false stops the run). */
export async function runScript(backend: Backend, text: string, emit?: (r: ResultLine) => void | boolean): Promise<ScriptRunner> {
  const runner = new ScriptRunner(backend, emit);
  try {
    await runner.run(text);
  } finally {
    await backend.close();
  }
  return runner;
}

/**
 * stdout for exec and diff. When its reader goes away (`memtwin exec S | head -1`) writes fail with EPIPE: the
 * run stops after the current op, the backend closes (the linux backend's knobs are restored), and the exit
 * status is 141, a program killed by SIGPIPE, without a stack trace. Any other write error ends the run too,
 * with one line on stderr and status 1. SIGINT keeps Node's default: the process ends at once (status 130 in a
 * shell), quietly, and the executor's guardian restores the knobs when its input closes.
 */
function scriptStdout(): { write(s: string): boolean; readonly closed: boolean } {
  let failure: NodeJS.ErrnoException | undefined;
  const stop = (e: NodeJS.ErrnoException): void => {
    if (failure) return;
    failure = e;
    if (e.code === 'EPIPE') process.exitCode = 141;
    else {
      console.error(`memtwin: cannot write the results: ${e.code ?? e.message}`);
      process.exitCode = 1;
    }
  };
  process.stdout.on('error', stop);
  return {
    write(s) {
      if (!failure && process.stdout.errored) stop(process.stdout.errored as NodeJS.ErrnoException);
      if (failure) return false;
      process.stdout.write(s);
      return true;
    },
    get closed() {
      return failure !== undefined;
    },
  };
}

/** Where a script stopped at bad input, as `FILE:LINE: why` on stderr. */
function reportBadLine(script: string, runner: ScriptRunner, what = ''): void {
  if (runner.badLine) console.error(`memtwin: ${script}:${runner.badLine.line}: ${what}${runner.badLine.message}`);
}

const opList = Object.entries(OPS)
  .map(([n, s]) => `  ${n.padEnd(16)}${s.doc}`)
  .join('\n');

program
  .command('exec')
  .description('run an op-script (JSON Lines, docs/op-script.md) on the simulator or the real kernel')
  .argument('<script>', 'op-script file (.jsonl), or - for standard input')
  .addOption(
    new Option('--backend <backend>', "sim, linux (this machine), or guest (a QEMU guest of the host file's shape, docs/oracle-guest.md)")
      .choices(['sim', 'linux', 'guest'] as const)
      .default('sim' as const),
  )
  .option(
    '--host <host>',
    'host file, a shipped host name (default, this-machine, two-node-guest), or auto (this machine); guest: two-node-guest unless given',
    'default',
  )
  .option('--seed <n>', 'seed of all randomness', '1')
  .option('--profile <file>', 'cost profile (default: profiles/default.json)')
  .addOption(new Option('--format <format>', 'output format').choices(['json', 'table'] as const).default('json' as const))
  .addHelpText(
    'after',
    `\nOps:\n${opList}\n\nArguments, outputs and what diff compares, per op: docs/op-script.md, "Ops reference"; ranges: "Argument ranges".\n` +
      'Exit status: 0 ran, 1 the real-kernel executor failed, 2 bad input (FILE:LINE on stderr), 141 stdout was closed.',
  )
  .action(async (script, o, cmd) => {
    const text = readScript(script);
    const backend =
      o.backend === 'linux'
        ? new LinuxBackend()
        : o.backend === 'guest'
          ? await GuestBackend.boot(resolveHost(cmd.getOptionValueSource('host') === 'default' ? GUEST_HOST : o.host))
          : simBackend(o.host, seedOf(o.seed), o.profile);
    const streaming = o.format === 'json';
    const out = scriptStdout();
    const runner = await runScript(backend, text, streaming ? (r) => out.write(jsonLine(r) + '\n') : undefined);
    if (out.closed) return; // exit status already set
    if (streaming) out.write(jsonLine(runner.summary()) + '\n');
    else out.write(table(runner.results) + '\n' + summaryText(runner) + '\n');
    reportBadLine(script, runner);
    if (out.closed) return;
    process.exitCode = runner.invalid ? 2 : runner.failed ? 1 : 0;
  });

function summaryText(r: ScriptRunner): string {
  const s = r.summary().summary as { ops: number; errors: number; backend: string };
  return `${s.ops} ops on ${s.backend}, ${s.errors} returned -1${r.invalid ? '; stopped at invalid input' : ''}${r.failed ? `; executor failed: ${r.failed}` : ''}`;
}

/** The host file the guest backend boots when none is given. */
const GUEST_HOST = 'two-node-guest';

program
  .command('diff')
  .description('run an op-script on the simulator and on the real kernel and list every disagreement')
  .argument('<script>', 'op-script file (.jsonl), or - for standard input')
  .addOption(
    new Option('--against <kernel>', 'linux (this machine) or guest (a QEMU guest of the --host shape)')
      .choices(['linux', 'guest'] as const)
      .default('linux' as const),
  )
  .option('--host <host>', 'host for the simulator side (auto: detected from this machine; with --against guest: two-node-guest)', 'auto')
  .option('--seed <n>', 'seed', '1')
  .option('--profile <file>', 'cost profile')
  .action(async (script, o, cmd) => {
    const text = readScript(script);
    const host = o.against === 'guest' && cmd.getOptionValueSource('host') === 'default' ? GUEST_HOST : o.host;
    if (o.against === 'guest' && host === 'auto')
      throw new InputError(
        '--host',
        undefined,
        undefined,
        undefined,
        'auto is this machine; the guest needs a host file (e.g. two-node-guest)',
      );
    const sim = await runScript(simBackend(host, seedOf(o.seed), o.profile), text);
    // Bad input stops the simulator's run where it stops the kernel's: no need to start the real side.
    if (sim.invalid) {
      reportBadLine(script, sim);
      process.exitCode = 2;
      return;
    }
    const lin = await runScript(o.against === 'guest' ? await GuestBackend.boot(resolveHost(host)) : new LinuxBackend(), text);
    const d = diffRuns(sim.results, lin.results);
    const out = scriptStdout();
    for (const s of d.skipped) out.write(`skip  #${s.i} ${s.op}: ${s.why}\n`);
    for (const x of d.disagreements)
      out.write(`DIFF  #${x.i} ${x.op} ${x.field}: sim=${JSON.stringify(x.a)} ${o.against}=${JSON.stringify(x.b)}\n`);
    out.write(`${d.compared} ops compared, ${d.disagreements.length} disagreements, ${d.skipped.length} skipped\n`);
    reportBadLine(script, lin, `${o.against}: `);
    if (out.closed) return;
    process.exitCode = lin.invalid ? 2 : d.disagreements.length ? 1 : 0;
  });

program
  .command('run')
  .description('run a scenario file (YAML): workloads in virtual time, results, and an HTML report')
  .argument('<scenario>', 'scenario file (.yaml)')
  .option('--out <dir>', 'output directory (default: out/<scenario name>)')
  .option('--workers <n>', 'worker threads for sweeps (default: the number of cores)', String(defaultWorkers()))
  .option('--quiet', 'no progress output')
  .option('--smoke', "run the scenario's reduced form (its `smoke` values): a quick end-to-end check, not its answer")
  .option(
    '--shard <I/N>',
    'run only shard I (0-based) of N of the sweep, into out/<scenario>-shard-I-of-N unless --out; memtwin merge joins them',
  )
  .option('--snapshots', 'record memory maps for `memtwin view` (snapshots.json; sample.snapshots: true in every run)')
  .addHelpText('after', RUN_HELP)
  .action(async (file, o) => {
    const workers = Number(o.workers);
    if (!Number.isInteger(workers) || workers < 1)
      throw new InputError('--workers', undefined, undefined, undefined, `expected a positive integer, got "${o.workers}"`);
    const shard = o.shard === undefined ? undefined : parseShard(o.shard);
    await runCommand(file, { out: o.out, workers, quiet: o.quiet, smoke: o.smoke, shard, snapshots: o.snapshots });
  });

program
  .command('merge')
  .description('join the shards of a sweep (memtwin run --shard I/N) into the outputs one machine would have written')
  .argument('<dir...>', 'shard directories, together holding every run of the sweep exactly once')
  .option('-o, --out <dir>', 'output directory (default: out/<scenario>, as memtwin run would write)')
  .addHelpText('after', MERGE_HELP)
  .action((dirs, o) => mergeCommand(dirs, { out: o.out }));

program
  .command('schema')
  .description('print the JSON Schema of scenario files (for editors)')
  .action(() => {
    console.log(JSON.stringify(scenarioJsonSchema(), null, 2));
  });

program
  .command('calibrate')
  .description('measure what memory operations cost on this host (root) and write a cost profile for --profile')
  .option('--out <file>', 'where to write the profile', 'profile.json')
  .option('--only <names>', 'measure only these costs (comma-separated cost names or groups; native/build/memtwin-calibrate --list)')
  .option('--merge <profile>', 'start from this profile: replace or add only the measured costs, keep every other entry as is')
  .option(
    '--other-machine',
    "with --merge: merge even though this host differs from the profile's machine record (a newer kernel build, say); each merged entry records where it was measured (measured_on)",
  )
  .action((o) => {
    const only =
      o.only === undefined
        ? undefined
        : String(o.only)
            .split(',')
            .map((s) => s.trim())
            .filter(Boolean);
    if (o.otherMachine && o.merge === undefined)
      throw new InputError('--other-machine', undefined, undefined, undefined, 'only means something with --merge');
    console.log(writeProfile(calibrate({ only, merge: o.merge, out: o.out, otherMachine: o.otherMachine }), o.out));
  });

program
  .command('restore')
  .description(
    'undo what killed real-kernel runs left changed on this machine: replay their journals (/var/lib/memtwin/journal, native/PROTOCOL.md); root',
  )
  .addHelpText('after', '\nExit status: 0 restored (or nothing to restore), 1 something could not be restored (named in the report).')
  .action(async () => {
    const { restoreMachine } = await import('../opscript/linux_backend.ts');
    const r = await restoreMachine({ echo: true });
    process.exitCode = r.status === 0 ? 0 : 1;
  });

program
  .command('validate')
  .description('compare memtwin with real systems (docs/validate-qemu.md)')
  .command('qemu')
  .description(
    "memtwin against real QEMU migrations: redraws validation/qemu/report.md from validation/qemu/results.json and the results-<batch>.json beside it; --real reruns a batch's real side first",
  )
  .option(
    '--real',
    'rerun the real migrations first (root, QEMU: bash scripts/oracle-guest/build.sh && bash scripts/validate-qemu/build.sh)',
  )
  .option('--only <ids>', 'with --real: rerun only these runs (comma-separated ids), keep the others recorded')
  .option('--batch <name>', 'with --real: the batch to record (main: results.json; 1g: results-1g.json)', 'main')
  .option(
    '--results <file>',
    "the main batch's recorded real runs (the other batches are the results-<name>.json beside it)",
    'validation/qemu/results.json',
  )
  .option('--report <file>', 'where to write the report', 'validation/qemu/report.md')
  .action(async (o) => {
    const { writeReport } = await import('../validate/qemu.ts');
    if (o.real) {
      const { runReal } = await import('../validate/real.ts');
      try {
        const { batchByName } = await import('../validate/real.ts');
        const b = batchByName(o.batch);
        const { dirname, join } = await import('node:path');
        const out = b.name === 'main' ? o.results : join(dirname(o.results), b.file);
        await runReal({ batch: b.name, out, only: o.only?.split(','), log: (s) => console.error(s) });
      } catch (e) {
        console.error(`memtwin: validate qemu --real: ${(e as Error).message}`);
        process.exitCode = 1;
        return;
      }
    }
    let batches;
    try {
      batches = writeReport({ results: o.results, report: o.report, explanations: 'validation/qemu/explanations.json' });
    } catch (e) {
      console.error(`memtwin: validate qemu: ${(e as Error).message}`);
      process.exitCode = 1;
      return;
    }
    for (const r of batches.flatMap((b) => b.runs)) {
      const e = (m: string): string => {
        const v = r.rows.find((x) => x.metric === m)?.errorPct;
        return v === undefined || v === null ? '—' : `${v >= 0 ? '+' : ''}${v.toFixed(1)}%`;
      };
      console.log(
        `${r.id.padEnd(40)} ${r.status.padEnd(10)} total-time ${e('total-time').padStart(7)}  transferred ${e('ram.transferred').padStart(7)}`,
      );
    }
    console.log(`wrote ${o.report}`);
  });

program
  .command('view')
  .description('a local web view of result directories: runs, charts, memory maps, migrations (serves until Ctrl-C)')
  .argument('[dirs...]', 'result directories to look in (default: out)')
  .option('--port <n>', 'port to listen on (0: any free one)', '8080')
  .option('--host <addr>', 'address to listen on; anything but loopback exposes the results to the network', '127.0.0.1')
  .action(async (dirs, o) => {
    const { viewCommand } = await import('../view/command.ts');
    await viewCommand(dirs.length ? dirs : ['out'], o);
  });

try {
  await program.parseAsync();
} catch (e) {
  if (e instanceof InputError) {
    console.error(`memtwin: ${e.message}`);
    process.exitCode = 2;
  } else if (e instanceof ExecutorError || e instanceof CalibrateError) {
    console.error(`memtwin: ${e.message}`);
    process.exitCode = 1;
  } else throw e;
}
