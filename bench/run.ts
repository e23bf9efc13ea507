/**
 * memtwin benchmarks (`npm run bench`). Prints a Markdown table with the
 * machine and date, for BENCHMARKS.md. Wall-clock time is measured here and
 * only here; it never enters a simulation result.
 *
 *   npm run bench            all benchmarks
 *   npm run bench -- --quick smaller sizes (used to check the script itself)
 *   npm run bench -- --compare-with DIR
 *                            only the 4K fault rate and the scenario engine's
 *                            accesses per second, here and in the checkout DIR
 *                            (e.g. a worktree of main), alternated in one run
 *   npm run bench -- --only faults,cliffs   only these groups: faults, mmap, big, postcopy, precopy, host,
 *                                           vms, scenario, linux, cliffs, startup
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { cpus, totalmem, release } from 'node:os';
import { Bench } from 'tinybench';
import { Kernel } from '../src/kernel/kernel.ts';
import { CostProfile } from '../src/sim/cost_profile.ts';
import { hostFromFile } from '../src/sim/host.ts';
import { MADV, MAP, PROT } from '../src/kernel/uapi.ts';
import { sysMigratePages } from '../src/kernel/mempolicy.ts';
import { ScriptRunner } from '../src/opscript/runner.ts';
import { SimBackend } from '../src/opscript/sim_backend.ts';
import { LinuxBackend, linuxBackendUnavailable } from '../src/opscript/linux_backend.ts';
import { resolveHost } from '../src/sim/host.ts';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadScenario } from '../src/scenario/load.ts';
import { runScenario } from '../src/scenario/run.ts';
import { runScenarioFile } from '../src/scenario/sweep.ts';
import { renderRunReport, renderSweepReport } from '../src/report/report.ts';
import { fromRoot } from '../src/util/paths.ts';
import { build, distState } from '../bin/build.mjs';

const quick = process.argv.includes('--quick');
const onlyAt = process.argv.indexOf('--only');
const only = onlyAt >= 0 ? new Set((process.argv[onlyAt + 1] ?? '').split(',')) : null;
const GiB = 2 ** 30;
const RW = PROT.PROT_READ | PROT.PROT_WRITE;
const ANON = MAP.MAP_PRIVATE | MAP.MAP_ANONYMOUS;
const rows: [string, string, string][] = [];
const row = (what: string, value: string, note = ''): void => {
  rows.push([what, value, note]);
  console.error(`  ${what}: ${value} ${note}`);
};

function kernelOf(gib: number): Kernel {
  const host = hostFromFile({ name: 'bench', nodes: [{ id: 0, memory: gib * GiB, cpus: [0, 1] }] });
  return new Kernel({ host, costs: CostProfile.default() });
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** Steady-state fault rate: fault a mapping in, drop it with MADV_DONTNEED, repeat. */
function faultRate(hugepage: boolean): { perSec: number; faultsPerRound: number } {
  const k = kernelOf(4);
  k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'madvise');
  const p = k.createProcess('b');
  const len = (quick ? 0.25 : 1) * GiB;
  const a = k.mmap(p, 0, len, RW, ANON);
  k.madvise(p, a, len, hugepage ? MADV.MADV_HUGEPAGE : MADV.MADV_NOHUGEPAGE);
  const stride = hugepage ? 2 ** 21 : 4096;
  const rates: number[] = [];
  let faults = 0;
  for (let r = 0; r < (quick ? 3 : 9); r++) {
    const t = performance.now();
    faults = k.access(p.mainThread, a, len, stride, true, 1).faults;
    rates.push(faults / ((performance.now() - t) / 1000));
    k.madvise(p, a, len, MADV.MADV_DONTNEED);
  }
  return { perSec: median(rates.slice(1)), faultsPerRound: faults };
}

/** The 64 GiB run, in a child process so its memory is measured alone. */
function bigRun(): void {
  const gib = quick ? 4 : 64;
  const code = `
    import { Kernel } from './src/kernel/kernel.ts';
    import { CostProfile } from './src/sim/cost_profile.ts';
    import { hostFromFile } from './src/sim/host.ts';
    const before = process.memoryUsage().rss;
    const k = new Kernel({ host: hostFromFile({ name: 'b', nodes: [{ id: 0, memory: ${gib + 16} * 2 ** 30, cpus: [0] }] }), costs: CostProfile.default() });
    const p = k.createProcess('x');
    const len = ${gib} * 2 ** 30;
    const a = k.mmap(p, 0, len, 3, 0x22 | 0x4000);
    k.madvise(p, a, len, 15);
    const t = performance.now();
    const r = k.access(p.mainThread, a, len, 4096, true, 1);
    const secs = (performance.now() - t) / 1000;
    console.log(JSON.stringify({ faults: r.faults, secs, rssMiB: process.memoryUsage().rss / 2 ** 20, baseMiB: before / 2 ** 20, simSecs: k.clock.now() / 1e9 }));`;
  const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
    encoding: 'utf8',
    maxBuffer: 1 << 20,
  });
  const r = JSON.parse(out.trim().split('\n').pop()!) as { faults: number; secs: number; rssMiB: number; baseMiB: number; simSecs: number };
  row(
    `${gib} GiB anonymous mapping fully faulted with 4K pages`,
    `${r.secs.toFixed(2)} s wall`,
    `${(r.faults / r.secs / 1e6).toFixed(2)} M faults/s; simulated ${r.simSecs.toFixed(1)} s of kernel time`,
  );
  row(
    `memtwin memory for that run (RSS)`,
    `${r.rssMiB.toFixed(0)} MiB`,
    `${((r.rssMiB - r.baseMiB) / gib).toFixed(1)} MiB per simulated GiB (RSS before: ${r.baseMiB.toFixed(0)} MiB)`,
  );
}

/**
 * Issue 9's postcopy bench: a guest with all of its RAM written on the
 * source host migrates by postcopy (preempt on, 10 Gbit/s, switchover right
 * after setup, so every page moves after it) to a destination host of its
 * own, 4K pages. Timed from `migrate` to completion, in a child process so
 * its memory is measured alone (both hosts' frame metadata included);
 * three runs. Then issue 19's scenario-level measure: the same migration
 * through the scenario engine (a vCPU first-touches all of RAM, then idles;
 * the migration starts once it is written), against the same run without
 * the migration; the migration's share is the difference.
 */
function postcopyRun(): void {
  const gib = quick ? 2 : 64;
  const code = `
    import { Kernel } from './src/kernel/kernel.ts';
    import { CostProfile } from './src/sim/cost_profile.ts';
    import { hostFromFile } from './src/sim/host.ts';
    import { Vm } from './src/vmm/vm.ts';
    import { Link } from './src/vmm/migration/link.ts';
    import { MigrationState } from './src/vmm/migration/migration.ts';
    const before = process.memoryUsage().rss;
    const host = (name) => hostFromFile({ name, nodes: [{ id: 0, memory: ${gib + 4} * 2 ** 30, cpus: [0, 1] }] });
    const sk = new Kernel({ host: host('src'), costs: CostProfile.default(), seed: 1 });
    const dk = new Kernel({ host: host('dst'), costs: CostProfile.default(), seed: 2, sameTimeAs: sk });
    for (const k of [sk, dk]) k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'never');
    const src = new Vm(sk, { name: 'src', m: ${gib} * 2 ** 30, smp: 1 });
    const dst = new Vm(dk, { name: 'dst', m: ${gib} * 2 ** 30, smp: 1 });
    for (const r of src.ramRanges()) sk.runAsTask({ ns: 0 }, () => src.access(0, r.gpa, r.size, 4096, true, 7));
    const mig = new MigrationState(src).register();
    mig.incoming('tcp:dst:4444', dst, new Link({ bandwidth: 1.25e9, latency: 50000 }));
    src.monitor.execute({ execute: 'migrate-set-capabilities', arguments: { capabilities: [
      { capability: 'postcopy-ram', state: true }, { capability: 'postcopy-preempt', state: true }] } });
    const t = performance.now();
    const c = process.cpuUsage();
    src.monitor.execute({ execute: 'migrate', arguments: { uri: 'tcp:dst:4444' } });
    src.monitor.execute({ execute: 'migrate-start-postcopy' });
    while (mig.status !== 'completed' && mig.status !== 'failed') sk.events.runUntil(sk.clock.now() + 1e9);
    const secs = (performance.now() - t) / 1000;
    const cu = process.cpuUsage(c);
    console.log(JSON.stringify({ status: mig.status, secs, cpuSecs: (cu.user + cu.system) / 1e6, simSecs: (mig.endTime - mig.startTime) / 1e9,
      rssMiB: process.memoryUsage().rss / 2 ** 20, baseMiB: before / 2 ** 20, differing: mig.contentCheck?.pagesDiffering }));`;
  type Run = { status: string; secs: number; cpuSecs: number; simSecs: number; rssMiB: number; baseMiB: number; differing: number };
  const runs = [childJson<Run>(code), childJson<Run>(code), childJson<Run>(code)];
  const r = runs[0]!;
  row(
    `postcopy of a ${gib} GiB guest at 4K (all RAM written; preempt; 10 Gbit/s; destination on its own host)`,
    medianSpread(
      runs.map((x) => x.secs),
      (x) => `${x.toFixed(1)} s`,
    ) + ' wall',
    `CPU ${medianSpread(
      runs.map((x) => x.cpuSecs),
      (x) => `${x.toFixed(1)} s`,
    )}; ${r.status}, simulated ${r.simSecs.toFixed(1)} s; ${((gib * 2 ** 18) / median(runs.map((x) => x.secs)) / 1e6).toFixed(2)} M pages/s; pages differing ${r.differing}`,
  );
  row(
    'memtwin memory for that run (RSS, both hosts)',
    medianSpread(
      runs.map((x) => x.rssMiB),
      (x) => `${x.toFixed(0)} MiB`,
    ),
    `${((median(runs.map((x) => x.rssMiB)) - r.baseMiB) / gib).toFixed(1)} MiB per simulated guest GiB (RSS before: ${r.baseMiB.toFixed(0)} MiB)`,
  );
  postcopyScenario(gib);
}

/**
 * The bench's postcopy through the scenario engine: one vCPU first-touches
 * all of a `gib` GiB guest's RAM at 4K (2.7 µs of simulated time a page
 * here, so the migration starts at 0.75 s per GiB, once it is written), then
 * idles; postcopy with preempt to a host of its own over 10 Gbit/s, started
 * at once. Three runs with the migration and three without, alternated.
 */
function postcopyScenario(gib: number): void {
  const at = Math.ceil(gib * 0.75) + 1;
  const yaml = (migrate: boolean): string => `name: postcopy-all-written
seed: 1
host:
  name: src
  nodes:
    - { id: 0, memory: ${gib + 4}G, cpus: 0-3 }
duration: ${at + gib + 2}s
sample: { interval: 1s }
kernel:
  /sys/kernel/mm/transparent_hugepage/enabled: never
nic: { bandwidth: 10Gbit/s, latency: 50us }
hosts:
  - name: dst
vms:
  - name: guest
    memdevs:
      - { id: ram0, size: ${gib}G }
    vcpus: [0]
    workloads:
      - name: w
        vcpu: 0
        guest_node: 0
        guest_page_size: 4K
        workload:
          phases:
            - { pattern: first-touch, mapping: ram }
            - { pattern: idle, mapping: ram }
${migrate ? `    events:\n      - { at: ${at}s, op: migrate, destination: { host: dst }, max-bandwidth: 1250000000, capabilities: [postcopy-ram, postcopy-preempt], start-postcopy: 0s }\n` : ''}`;
  const { withMig, without } = withAndWithoutMigration('postcopy', yaml);
  const f = withMig[0]!.final;
  const secs = (xs: number[]): string => medianSpread(xs, (x) => `${x.toFixed(1)} s`);
  row(
    `postcopy of a ${gib} GiB guest at 4K through the scenario engine (a vCPU writes all of RAM, then idles; preempt; 10 Gbit/s; destination on its own host)`,
    secs(withMig.map((r) => r.secs)) + ' wall',
    `the same run without the migration ${secs(without.map((r) => r.secs))}, so the migration's share ${secs(withMig.map((r, i) => r.secs - without[i]!.secs))} (CPU ${secs(withMig.map((r, i) => r.cpuSecs - without[i]!.cpuSecs))}); completed ${f['vm.guest.migration.completed']}, total-time ${f['vm.guest.migration.total-time']} ms, pages differing ${f['vm.guest.migration.pages_differing']}; RSS ${medianSpread(
      withMig.map((r) => r.rssMiB),
      (x) => `${x.toFixed(0)} MiB`,
    )} with, ${medianSpread(
      without.map((r) => r.rssMiB),
      (x) => `${x.toFixed(0)} MiB`,
    )} without`,
  );
}

/**
 * Issue 19's many-VM host: 16 VMs of 60 GiB on a host of two 512 GiB nodes,
 * each guest allocating half of its RAM (guest_alloc, so the guest's own
 * allocator, the EPT and the host's faults all take part), through the
 * scenario engine, in a child process so its memory is measured alone.
 * --quick: 1 GiB each.
 */
function manyVms(): void {
  const each = quick ? '1G' : '30G';
  const vms = Array.from(
    { length: 16 },
    (_, i) => `  - name: vm${i}
    memdevs:
      - { id: ram0, size: 60G }
    vcpus: [${i % 2}]
    events:
      - { at: 1ms, op: guest_alloc, size: ${each}, vcpu: 0 }`,
  ).join('\n');
  const dir = mkdtempSync(join(tmpdir(), 'memtwin-bench-vms-'));
  const file = join(dir, 'vms16.yaml');
  writeFileSync(
    file,
    `name: vms16
seed: 1
host:
  name: big
  nodes:
    - { id: 0, memory: 512G, cpus: 0-1 }
    - { id: 1, memory: 512G, cpus: 2-3 }
duration: 100ms
sample: { interval: 50ms }
kernel:
  /sys/kernel/mm/transparent_hugepage/enabled: never
vms:
${vms}
`,
  );
  const code = `
    import { loadScenario } from './src/scenario/load.ts';
    import { runScenario } from './src/scenario/run.ts';
    const l = loadScenario(${JSON.stringify(file)});
    const before = process.memoryUsage().rss;
    const t = performance.now();
    const c = process.cpuUsage();
    runScenario(l.runs[0], { file: ${JSON.stringify(file)} });
    const cu = process.cpuUsage(c);
    const rss = process.memoryUsage().rss;
    console.log(JSON.stringify({ secs: (performance.now() - t) / 1000, cpuSecs: (cu.user + cu.system) / 1e6, rssMiB: rss / 2 ** 20, grewMiB: (rss - before) / 2 ** 20 }));`;
  try {
    const out = execFileSync(process.execPath, ['--max-old-space-size=8192', '--import', 'tsx', '--input-type=module', '-e', code], {
      encoding: 'utf8',
      maxBuffer: 1 << 20,
    });
    const r = JSON.parse(out.trim().split('\n').pop()!) as { secs: number; cpuSecs: number; rssMiB: number; grewMiB: number };
    const pages = (16 * parseInt(each) * GiB) / 4096;
    row(
      `1 TiB host, 16 VMs of 60 GiB, each guest allocating ${each} (scenario engine)`,
      `${r.secs.toFixed(1)} s wall`,
      `CPU ${r.cpuSecs.toFixed(1)} s; ${((r.secs * 1e9) / pages).toFixed(0)} ns (CPU ${((r.cpuSecs * 1e9) / pages).toFixed(0)} ns) per guest page allocated; RSS ${r.rssMiB.toFixed(0)} MiB, of which the run added ${r.grewMiB.toFixed(0)} MiB (${((r.grewMiB * 2 ** 20) / pages).toFixed(1)} B per page)`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Run `code` (an ES module using ./src) in a child process and parse the JSON line it prints last. */
function childJson<T>(code: string, heapMiB = 8192): T {
  const out = execFileSync(process.execPath, [`--max-old-space-size=${heapMiB}`, '--import', 'tsx', '--input-type=module', '-e', code], {
    encoding: 'utf8',
    maxBuffer: 1 << 20,
  });
  return JSON.parse(out.trim().split('\n').pop()!) as T;
}

/** A migration's measures from one scenario run in a child process. */
interface ScenarioChildResult {
  secs: number;
  cpuSecs: number;
  rssMiB: number;
  final: Record<string, number>;
}

/** Run the scenario `file`'s first run in a child process: wall and CPU seconds, RSS, and its vm.guest.migration.* finals. */
function migrationScenarioChild(file: string): ScenarioChildResult {
  return childJson(`
      import { loadScenario } from './src/scenario/load.ts';
      import { runScenario } from './src/scenario/run.ts';
      const l = loadScenario(${JSON.stringify(file)});
      const t = performance.now();
      const c = process.cpuUsage();
      const r = runScenario(l.runs[0], { file: ${JSON.stringify(file)} });
      const cu = process.cpuUsage(c);
      const keys = Object.keys(r.final).filter((k) => k.startsWith('vm.guest.migration.'));
      console.log(JSON.stringify({ secs: (performance.now() - t) / 1000, cpuSecs: (cu.user + cu.system) / 1e6, rssMiB: process.memoryUsage().rss / 2 ** 20,
        final: Object.fromEntries(keys.map((k) => [k, r.final[k]])) }));`);
}

/**
 * A scenario written by `yaml(migrate)` run `rounds` times with the
 * migration and as many without it, alternated (so both see the same
 * machine load), each in a child process: the migration's share is the
 * difference.
 */
function withAndWithoutMigration(
  name: string,
  yaml: (migrate: boolean) => string,
  rounds = 3,
): { withMig: ScenarioChildResult[]; without: ScenarioChildResult[] } {
  const dir = mkdtempSync(join(tmpdir(), `memtwin-bench-${name}-`));
  const run = (migrate: boolean): ScenarioChildResult => {
    const file = join(dir, `${name}-${migrate}.yaml`);
    writeFileSync(file, yaml(migrate));
    return migrationScenarioChild(file);
  };
  try {
    const withMig: ScenarioChildResult[] = [];
    const without: ScenarioChildResult[] = [];
    for (let i = 0; i < rounds; i++) {
      withMig.push(run(true));
      without.push(run(false));
    }
    return { withMig, without };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** "median (min-max over N runs)" of values formatted by `f`. */
function medianSpread(xs: number[], f: (x: number) => string): string {
  return `${f(median(xs))} (${xs.length} runs: ${spread(xs, f)})`;
}

/**
 * Issue 19's precopy cases, each in a child process (timed from `migrate`
 * to completion inside it, CPU time beside wall time, RSS of the process):
 * an idle guest of 1 TiB (nothing ever written; 10 Gbit/s; a destination
 * host of its own), and a 64 GiB guest dirtying 50,000 random 4K pages a
 * second through the scenario engine, migrated to a host of its own, with
 * the same run without the migration beside it. --quick: 4 GiB and 2 GiB.
 */
function precopyRuns(): void {
  const idleGiB = quick ? 4 : 1024;
  const idle = `
    import { Kernel } from './src/kernel/kernel.ts';
    import { CostProfile } from './src/sim/cost_profile.ts';
    import { hostFromFile } from './src/sim/host.ts';
    import { Vm } from './src/vmm/vm.ts';
    import { Link } from './src/vmm/migration/link.ts';
    import { MigrationState } from './src/vmm/migration/migration.ts';
    const host = (name) => hostFromFile({ name, nodes: [{ id: 0, memory: ${idleGiB + 4} * 2 ** 30, cpus: [0, 1] }] });
    const sk = new Kernel({ host: host('src'), costs: CostProfile.default(), seed: 1 });
    const dk = new Kernel({ host: host('dst'), costs: CostProfile.default(), seed: 2, sameTimeAs: sk });
    const src = new Vm(sk, { name: 'src', m: ${idleGiB} * 2 ** 30, smp: 1 });
    const dst = new Vm(dk, { name: 'dst', m: ${idleGiB} * 2 ** 30, smp: 1 });
    const mig = new MigrationState(src).register();
    mig.incoming('tcp:dst:4444', dst, new Link({ bandwidth: 1.25e9, latency: 50000 }));
    const t = performance.now();
    const c = process.cpuUsage();
    src.monitor.execute({ execute: 'migrate', arguments: { uri: 'tcp:dst:4444' } });
    while (mig.status !== 'completed' && mig.status !== 'failed') sk.events.runUntil(sk.clock.now() + 1e9);
    const cu = process.cpuUsage(c);
    console.log(JSON.stringify({ status: mig.status, secs: (performance.now() - t) / 1000, cpuSecs: (cu.user + cu.system) / 1e6,
      simSecs: (mig.endTime - mig.startTime) / 1e9, rssMiB: process.memoryUsage().rss / 2 ** 20, differing: mig.contentCheck?.pagesDiffering }));`;
  type Idle = { status: string; secs: number; cpuSecs: number; simSecs: number; rssMiB: number; differing: number };
  const idles = [childJson<Idle>(idle), childJson<Idle>(idle), childJson<Idle>(idle)];
  const i0 = idles[0]!;
  row(
    `precopy of an idle ${idleGiB} GiB guest (nothing written; 10 Gbit/s; destination on its own host)`,
    medianSpread(
      idles.map((r) => r.secs),
      (x) => `${x.toFixed(1)} s`,
    ) + ' wall',
    `CPU ${medianSpread(
      idles.map((r) => r.cpuSecs),
      (x) => `${x.toFixed(1)} s`,
    )}; ${i0.status}, simulated ${i0.simSecs.toFixed(1)} s; RSS ${i0.rssMiB.toFixed(0)} MiB; pages differing ${i0.differing}`,
  );

  const gib = quick ? 2 : 64;
  const yaml = (migrate: boolean): string => `name: precopy-dirty
seed: 1
host:
  name: src
  nodes:
    - { id: 0, memory: ${gib + 8}G, cpus: 0-3 }
duration: 12s
sample: { interval: 1s }
kernel:
  /sys/kernel/mm/transparent_hugepage/enabled: madvise
nic: { bandwidth: 10Gbit/s, latency: 25us }
hosts:
  - name: dst
vms:
  - name: guest
    memdevs:
      - { id: ram0, size: ${gib}G }
    vcpus: [0]
    workloads:
      - name: dirty
        vcpu: 0
        guest_node: 0
        guest_page_size: 4K
        workload:
          phases:
            - { pattern: uniform, mapping: ram, read_ratio: 0, rate: 50000 }
${migrate ? '    events:\n      - { at: 100ms, op: migrate, destination: { host: dst }, max-bandwidth: 1250000000, downtime-limit: 300 }\n' : ''}`;
  const { withMig, without } = withAndWithoutMigration('precopy', yaml);
  const f = withMig[0]!.final;
  const share = withMig.map((r, i) => r.secs - without[i]!.secs);
  row(
    `precopy of a ${gib} GiB guest writing 50,000 random 4K pages/s (scenario engine, 12 s run; destination on its own host)`,
    medianSpread(
      withMig.map((r) => r.secs),
      (x) => `${x.toFixed(1)} s`,
    ) + ' wall',
    `the same run without the migration ${medianSpread(
      without.map((r) => r.secs),
      (x) => `${x.toFixed(1)} s`,
    )}, so the migration's share ${medianSpread(share, (x) => `${x.toFixed(1)} s`)}; CPU with it ${medianSpread(
      withMig.map((r) => r.cpuSecs),
      (x) => `${x.toFixed(1)} s`,
    )}; completed ${f['vm.guest.migration.completed']}, total-time ${f['vm.guest.migration.total-time']} ms, ${f['vm.guest.migration.ram.dirty-sync-count']} syncs, pages differing ${f['vm.guest.migration.pages_differing']}; RSS ${withMig[0]!.rssMiB.toFixed(0)} MiB`,
  );
}

function hostOf1TiB(): void {
  const t = performance.now();
  const k = kernelOf(1024);
  const ms = performance.now() - t;
  const p = k.createProcess('x');
  const a = k.mmap(p, 0, GiB, RW, ANON);
  k.access(p.mainThread, a, GiB, 4096, true, 1);
  const meta = k.mem.metadataBytes() / 2 ** 20;
  row(
    '1 TiB host: create, then fault 1 GiB',
    `${ms.toFixed(1)} ms to create`,
    `${k.phys.totalPages()} frames; frame metadata allocated after faulting 1 GiB: ${meta.toFixed(0)} MiB`,
  );
}

async function mmapPairs(): Promise<void> {
  const k = kernelOf(4);
  const p = k.createProcess('b');
  const b = new Bench({ time: quick ? 200 : 1000 });
  b.add('mmap+munmap 4K', () => {
    const a = k.mmap(p, 0, 4096, RW, ANON);
    k.munmap(p, a, 4096);
  });
  b.add('mmap+touch+munmap 2M THP', () => {
    const a = k.mmap(p, 0, 2 ** 21, RW, ANON);
    k.madvise(p, a, 2 ** 21, MADV.MADV_HUGEPAGE);
    k.access(p.mainThread, a, 1, 4096, true, 1);
    k.munmap(p, a, 2 ** 21);
  });
  await b.run();
  for (const t of b.tasks) {
    const hz = t.result && 'throughput' in t.result ? (t.result as { throughput: { mean: number } }).throughput.mean : 0;
    row(`${t.name} pairs per second`, `${(hz / 1e6).toFixed(2)} M/s`);
  }
}

/**
 * One op-script on both backends: the wall time of op `opIndex` on the
 * simulator (timed around that op alone) and on the real kernel (the
 * executor's own measurement of it), as a rate of `units` per second.
 */
async function scriptVersusLinux(what: string, script: string, opIndex: number, units: number, unitName: string): Promise<void> {
  const why = linuxBackendUnavailable();
  const simTimes: number[] = [];
  const realTimes: number[] = [];
  // One warm-up round on each side, not counted (the simulator's code is not yet compiled by the JIT in the first,
  // and the real kernel's first run of the executor pays its own start), then the measured rounds.
  const rounds = quick ? 2 : 7;
  for (let r = -1; r < rounds; r++) {
    // The op's own time, measured in the run: from the result of the op before it to its own result.
    const stamps: number[] = [];
    const runner = new ScriptRunner(new SimBackend(new Kernel({ host: resolveHost('this-machine'), costs: CostProfile.default() })), () => {
      stamps.push(performance.now());
    });
    const t0 = performance.now();
    await runner.run(script);
    if (runner.results.length <= opIndex || 'error' in runner.results[opIndex]! || 'invalid' in runner.results[opIndex]!)
      throw new Error(`bench script for ${what}: op ${opIndex} did not run (${JSON.stringify(runner.results[opIndex])})`);
    if (r >= 0) simTimes.push(stamps[opIndex]! - (opIndex ? stamps[opIndex - 1]! : t0));
    if (!why) {
      const backend = new LinuxBackend();
      const lin = new ScriptRunner(backend);
      await lin.run(script);
      await backend.close();
      if (r >= 0) realTimes.push((lin.results[opIndex]!.ns as number) / 1e6);
    }
  }
  const fmt = (rate: number): string => (rate >= 1e6 ? `${(rate / 1e6).toFixed(2)} M` : `${(rate / 1e3).toFixed(1)} k`);
  const simRate = units / (median(simTimes) / 1000);
  const rates = (ms: number[]): string =>
    spread(
      ms.map((m) => units / (m / 1000)),
      fmt,
    );
  row(
    `${what}, simulator (wall)`,
    `${fmt(simRate)} ${unitName}/s`,
    `median of ${simTimes.length} after a warm-up round; spread ${rates(simTimes)}`,
  );
  if (why) row('same script on the real kernel', 'not run', why);
  else {
    const realRate = units / (median(realTimes) / 1000);
    row(
      'same script on the real kernel (measured by the executor)',
      `${fmt(realRate)} ${unitName}/s`,
      `ratio sim/real = ${(simRate / realRate).toFixed(1)}x; spread ${rates(realTimes)}`,
    );
  }
}

const RW_ANON = `"prot":["PROT_READ","PROT_WRITE"],"flags":["MAP_PRIVATE","MAP_ANONYMOUS"]`;

/** 4K write faults: the fault path. */
async function faultsVersusLinux(): Promise<void> {
  const mib = quick ? 64 : 1024;
  const script = [
    `{"op":"sysfs","path":"/sys/kernel/mm/transparent_hugepage/enabled","value":"never"}`,
    `{"op":"mmap","len":"${mib}M",${RW_ANON},"name":"a"}`,
    `{"op":"touch","addr":"$a","len":"${mib}M","write":true}`,
    `{"op":"munmap","addr":"$a","len":"${mib}M"}`,
  ].join('\n');
  await scriptVersusLinux(`op-script: ${mib} MiB of 4K write faults`, script, 2, (mib * 2 ** 20) / 4096, 'faults');
}

/** MADV_COLLAPSE of 4K-populated memory: scan, allocate, copy 512 pages, free them. */
async function collapseVersusLinux(): Promise<void> {
  const mib = quick ? 32 : 256;
  const script = [
    `{"op":"sysfs","path":"/sys/kernel/mm/transparent_hugepage/enabled","value":"never"}`,
    `{"op":"mmap","len":"${mib}M",${RW_ANON},"align":"2M","name":"a"}`,
    `{"op":"touch","addr":"$a","len":"${mib}M","write":true}`,
    `{"op":"madvise","addr":"$a","len":"${mib}M","advice":"MADV_COLLAPSE"}`,
    `{"op":"munmap","addr":"$a","len":"${mib}M"}`,
  ].join('\n');
  await scriptVersusLinux(`op-script: MADV_COLLAPSE of ${mib} MiB of 4K pages`, script, 3, mib / 2, 'collapses');
}

/** UFFDIO_COPY into a registered range: one ioctl over many 4K pages (anonymous), or many 2M pages (hugetlb). */
async function uffdCopyVersusLinux(): Promise<void> {
  const mib = quick ? 16 : 64;
  const uffd = [`{"op":"userfaultfd","flags":["O_CLOEXEC","O_NONBLOCK"],"name":"u"}`, `{"op":"uffdio_api","fd":"$u"}`];
  const anon = [
    ...uffd,
    `{"op":"mmap","len":"${mib}M",${RW_ANON},"name":"a"}`,
    `{"op":"uffdio_register","fd":"$u","addr":"$a","len":"${mib}M","mode":["UFFDIO_REGISTER_MODE_MISSING"]}`,
    `{"op":"uffdio_copy","fd":"$u","dst":"$a","len":"${mib}M","fill":7,"mode":["UFFDIO_COPY_MODE_DONTWAKE"]}`,
  ].join('\n');
  await scriptVersusLinux(`op-script: UFFDIO_COPY of ${mib} MiB in 4K pages`, anon, 4, (mib * 2 ** 20) / 4096, '4K copies');
  const huge = [
    `{"op":"hugetlb_pool","size":"2M","nr":${mib / 2}}`,
    ...uffd,
    `{"op":"mmap","len":"${mib}M","prot":["PROT_READ","PROT_WRITE"],"flags":["MAP_PRIVATE","MAP_ANONYMOUS","MAP_HUGETLB","MAP_HUGE_2MB"],"name":"h"}`,
    `{"op":"uffdio_register","fd":"$u","addr":"$h","len":"${mib}M","mode":["UFFDIO_REGISTER_MODE_MISSING"]}`,
    `{"op":"uffdio_copy","fd":"$u","dst":"$h","len":"${mib}M","fill":7,"mode":["UFFDIO_COPY_MODE_DONTWAKE"]}`,
    `{"op":"munmap","addr":"$h","len":"${mib}M"}`,
    `{"op":"hugetlb_pool","size":"2M","nr":0}`,
  ].join('\n');
  await scriptVersusLinux(`op-script: UFFDIO_COPY of ${mib} MiB in 2M hugetlb pages`, huge, 5, mib / 2, '2M copies');
}

const SCENARIO = (duration: string, sweep: boolean): string => `
name: bench-random
host: default
duration: ${duration}
kernel:
  /sys/kernel/mm/transparent_hugepage/enabled: never
processes:
  - name: app
    mappings:
      - { name: heap, size: 1G }
    threads:
      - name: w
        cpu: 0
        count: 4
        workload: { pattern: uniform, mapping: heap, read_ratio: 0.7 }
${sweep ? 'sweep:\n  - path: [seed]\n    values: [1, 2, 3, 4]\n' : ''}`;

/** Simulated accesses per second of wall time, 4 threads at random over 1 GiB. */
async function scenarioSpeed(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'memtwin-bench-'));
  try {
    const f = join(dir, 'bench.yaml');
    writeFileSync(f, SCENARIO(quick ? '50ms' : '500ms', false));
    const l = loadScenario(f);
    const t = performance.now();
    const r = runScenario(l.runs[0]!, { file: f });
    const secs = (performance.now() - t) / 1000;
    row(
      '4-thread random-access scenario: simulated accesses per wall second',
      `${(r.final.accesses! / secs / 1e6).toFixed(2)} M/s`,
      `${r.final.accesses} accesses and ${r.final.faults} faults in ${(r.duration_ns / 1e6).toFixed(0)} ms of virtual time, ${secs.toFixed(2)} s wall`,
    );
    // Sweep of 4 runs with 1 and with 2 workers.
    writeFileSync(f, SCENARIO(quick ? '20ms' : '1s', true));
    const report = { run: renderRunReport, sweep: renderSweepReport };
    const wall: number[] = [];
    for (const workers of [1, 2]) {
      const out = join(dir, `w${workers}`);
      const t1 = performance.now();
      await runScenarioFile(f, out, workers, report);
      wall.push((performance.now() - t1) / 1000);
    }
    row(
      'sweep of 4 runs: 1 worker vs 2 workers',
      `${wall[0]!.toFixed(2)} s vs ${wall[1]!.toFixed(2)} s`,
      `speed-up ${(wall[0]! / wall[1]!).toFixed(2)}x on ${cpus().length} cores`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * One measurement in a child process of the checkout at `root` (its own
 * sources and node_modules): the steady-state 4K fault rate (faults/s), or
 * the 4-thread random-access scenario's simulated accesses per second, per
 * second of wall time and per second of the process's CPU time (which a
 * busy machine disturbs less).
 */
function measureIn(root: string, what: 'faults' | 'scenario'): { wall: number; cpu: number } {
  const faults = `
    import { Kernel } from './src/kernel/kernel.ts';
    import { CostProfile } from './src/sim/cost_profile.ts';
    import { hostFromFile } from './src/sim/host.ts';
    const k = new Kernel({ host: hostFromFile({ name: 'bench', nodes: [{ id: 0, memory: 4 * 2 ** 30, cpus: [0, 1] }] }), costs: CostProfile.default() });
    k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'madvise');
    const p = k.createProcess('b');
    const len = ${quick ? 0.25 : 1} * 2 ** 30;
    const a = k.mmap(p, 0, len, 3, 0x22);
    k.madvise(p, a, len, 15);
    const rates = [];
    const cpus = [];
    for (let r = 0; r < ${quick ? 3 : 7}; r++) {
      const t = performance.now();
      const c = process.cpuUsage();
      const n = k.access(p.mainThread, a, len, 4096, true, 1).faults;
      const u = process.cpuUsage(c);
      rates.push(n / ((performance.now() - t) / 1000));
      cpus.push(n / ((u.user + u.system) / 1e6));
      k.madvise(p, a, len, 4);
    }
    const med = (xs) => (xs.shift(), xs.sort((x, y) => x - y), xs[Math.floor(xs.length / 2)]);
    console.log(JSON.stringify({ wall: med(rates), cpu: med(cpus) }));`;
  const scenario = `
    import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
    import { tmpdir } from 'node:os';
    import { join } from 'node:path';
    import { loadScenario } from './src/scenario/load.ts';
    import { runScenario } from './src/scenario/run.ts';
    const dir = mkdtempSync(join(tmpdir(), 'memtwin-bench-'));
    const f = join(dir, 'bench.yaml');
    writeFileSync(f, ${JSON.stringify(SCENARIO(quick ? '50ms' : '500ms', false))});
    const l = loadScenario(f);
    const t = performance.now();
    const c = process.cpuUsage();
    const r = runScenario(l.runs[0], { file: f });
    const u = process.cpuUsage(c);
    console.log(JSON.stringify({ wall: r.final.accesses / ((performance.now() - t) / 1000), cpu: r.final.accesses / ((u.user + u.system) / 1e6) }));
    rmSync(dir, { recursive: true, force: true });`;
  const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', what === 'faults' ? faults : scenario], {
    cwd: root,
    encoding: 'utf8',
    maxBuffer: 1 << 20,
  });
  return JSON.parse(out.trim().split('\n').pop()!) as { wall: number; cpu: number };
}

/** --compare-with: both measurements here and in `other`, alternated, medians and the ratio here/other. */
function compareWith(other: string): void {
  const here = fromRoot();
  const rounds = quick ? 2 : 5;
  for (const what of ['faults', 'scenario'] as const) {
    const a: { wall: number; cpu: number }[] = [];
    const b: { wall: number; cpu: number }[] = [];
    for (let r = 0; r < rounds; r++) {
      // Alternate which goes first, so a drift in the machine's load does not favour one.
      if (r % 2) {
        a.push(measureIn(here, what));
        b.push(measureIn(other, what));
      } else {
        b.push(measureIn(other, what));
        a.push(measureIn(here, what));
      }
    }
    const name =
      what === 'faults'
        ? 'simulated 4K faults per second (steady state)'
        : '4-thread random-access scenario: simulated accesses per second';
    for (const per of ['wall', 'cpu'] as const) {
      const x = median(a.map((m) => m[per]));
      const y = median(b.map((m) => m[per]));
      row(
        `${name} of ${per === 'wall' ? 'wall' : 'CPU'} time`,
        `${(x / 1e6).toFixed(2)} M/s here, ${(y / 1e6).toFixed(2)} M/s in ${other}`,
        `ratio ${(x / y).toFixed(3)} (medians of ${rounds} alternated runs each; here ${a.map((m) => (m[per] / 1e6).toFixed(2)).join(', ')}; there ${b.map((m) => (m[per] / 1e6).toFixed(2)).join(', ')})`,
      );
    }
  }
}

/** CPU time (user + system, seconds) of this process's waited-for children so far: /proc/self/stat's cutime and cstime, in USER_HZ (100) ticks. */
function childrenCpu(): number {
  const f = readFileSync('/proc/self/stat', 'utf8');
  const after = f.slice(f.lastIndexOf(')') + 2).split(' '); // fields from the 3rd (state) on
  return (Number(after[13]) + Number(after[14])) / 100; // fields 16 and 17
}

/** One command run to its end: its wall time and its CPU time (children's, so at a 10 ms resolution), in seconds. */
function timed(args: string[], check: (stdout: string, stderr: string) => void): { wall: number; cpu: number } {
  const c = childrenCpu();
  const t = performance.now();
  const r = spawnSync(process.execPath, args, { cwd: fromRoot(), encoding: 'utf8', maxBuffer: 64 << 20 });
  const wall = (performance.now() - t) / 1000;
  if (r.status !== 0) throw new Error(`node ${args.join(' ')}: exit ${r.status}: ${r.stderr}`);
  check(r.stdout, r.stderr);
  return { wall, cpu: childrenCpu() - c };
}

/** CPU seconds of each thread of process `pid` (/proc/PID/task/TID/stat utime + stime), by thread id. */
function threadsCpu(pid: number, into: Map<number, number>): void {
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const f = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const after = f.slice(f.lastIndexOf(')') + 2).split(' ');
      into.set(Number(tid), (Number(after[11]) + Number(after[12])) / 100);
    }
  } catch {
    /* the process or a thread ended between the listing and the read */
  }
}

/**
 * timed(), and where the command's CPU time went, from its threads' times
 * sampled every 20 ms until it exits: its main thread, its `workers`
 * busiest other threads (the scenario workers), and the rest (V8's
 * garbage-collection and compiler threads, libuv's pool).
 */
async function timedThreads(
  args: string[],
  workers: number,
  check: (stderr: string) => void,
): Promise<{ wall: number; cpu: number; main: number; workers: number; rest: number }> {
  const c = childrenCpu();
  const t = performance.now();
  const child = spawn(process.execPath, args, { cwd: fromRoot(), stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const threads = new Map<number, number>();
  const poll = setInterval(() => threadsCpu(child.pid!, threads), 20);
  const status = await new Promise<number | null>((res) => child.on('close', res));
  clearInterval(poll);
  const wall = (performance.now() - t) / 1000;
  if (status !== 0) throw new Error(`node ${args.join(' ')}: exit ${status}: ${err}`);
  check(err);
  const others = [...threads].filter(([tid]) => tid !== child.pid).map(([, s]) => s);
  others.sort((x, y) => y - x);
  const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);
  return {
    wall,
    cpu: childrenCpu() - c,
    main: threads.get(child.pid!) ?? 0,
    workers: sum(others.slice(0, workers)),
    rest: sum(others.slice(workers)),
  };
}

/** A row of repeated command timings: median wall time, its spread, and the median CPU time. */
function timedRow(what: string, runs: { wall: number; cpu: number }[], note = ''): void {
  const s = (x: number): string => x.toFixed(2);
  row(
    what,
    `${s(median(runs.map((r) => r.wall)))} s wall (median)`,
    `${runs.length} repeats: ${spread(
      runs.map((r) => r.wall),
      s,
    )} s wall; ${s(median(runs.map((r) => r.cpu)))} s CPU (median)${note ? `; ${note}` : ''}`,
  );
}

/**
 * Issue 19's start-up: `memtwin` as installed (bin/memtwin.js running the
 * compiled dist/, built first if it is not current), each command a fresh
 * process timed from spawn to exit. For comparison, --help from the
 * TypeScript sources through tsx (what every command paid before dist/).
 * Then a sweep of four runs of ~1 s each (SCENARIO at 700 ms of virtual
 * time: ~1 s of CPU per run on this machine) with `memtwin run
 * --workers 1` and `--workers 2`, alternated, and the sweeps' results
 * checked byte-identical.
 */
async function startup(): Promise<void> {
  if (distState().state !== 'current') {
    console.error('  building dist/ (npm run build)');
    const errors = await build();
    if (errors.length) throw new Error(`build failed: ${errors.map((e) => e.text).join('; ')}`);
  }
  const bin = fromRoot('bin', 'memtwin.js');
  const repeats = quick ? 2 : 10;
  const help = (out: string): void => {
    if (!out.startsWith('Usage: memtwin')) throw new Error(`--help printed ${out.slice(0, 80)}`);
  };
  const runs = (n: number, f: () => { wall: number; cpu: number }): { wall: number; cpu: number }[] => Array.from({ length: n }, f);
  timedRow(
    '`memtwin --help`',
    runs(repeats, () => timed([bin, '--help'], help)),
    'bin/memtwin.js running dist/',
  );
  const dir = mkdtempSync(join(tmpdir(), 'memtwin-bench-'));
  try {
    // Ten ops of the THP demo: sysfs knobs, two mmaps, madvise, touches, pagemap.
    const ops = readFileSync(fromRoot('examples', 'thp-demo.jsonl'), 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .slice(0, 10);
    const script = join(dir, 'ten.jsonl');
    writeFileSync(script, ops.join('\n') + '\n');
    const ten = (out: string): void => {
      if (!out.includes('{"summary":{"ops":10,"errors":0,"backend":"sim"}}')) throw new Error(`exec: ${out.slice(-200)}`);
    };
    timedRow(
      '`memtwin exec` of a ten-line op-script (sim backend)',
      runs(repeats, () => timed([bin, 'exec', script], ten)),
    );
    timedRow(
      '`memtwin --help` from the TypeScript sources (tsx)',
      runs(quick ? 1 : 5, () => timed(['--import', 'tsx', fromRoot('src', 'cli', 'main.ts'), '--help'], help)),
      'what every command paid before dist/',
    );
    const sweep = join(dir, 'sweep.yaml');
    writeFileSync(sweep, SCENARIO(quick ? '20ms' : '700ms', true));
    let reference = '';
    /** `cmd run` of the sweep on 1 and 2 workers, alternated: a row of wall times, and with `breakdown` where the CPU went. */
    const pair = async (tag: string, cmd: string[], label: string, breakdown: boolean): Promise<void> => {
      const walls: Record<1 | 2, number[]> = { 1: [], 2: [] };
      const cpu: Record<1 | 2, { cpu: number; main: number; workers: number; rest: number }[]> = { 1: [], 2: [] };
      const perRun: number[] = [];
      const results: Record<1 | 2, string> = { 1: '', 2: '' };
      for (let r = 0; r < (quick ? 1 : 3); r++)
        // Alternate which goes first, so a drift in the machine's load does not favour one.
        for (const workers of r % 2 ? ([2, 1] as const) : ([1, 2] as const)) {
          const out = join(dir, `${tag}-w${workers}-${r}`);
          const t = await timedThreads([...cmd, 'run', sweep, '--out', out, '--workers', String(workers)], workers, (err) => {
            for (const m of err.matchAll(/: done in ([\d.]+) s/g)) perRun.push(Number(m[1]));
          });
          walls[workers].push(t.wall);
          cpu[workers].push(t);
          const res = readFileSync(join(out, 'result.json'), 'utf8');
          if (results[workers] && results[workers] !== res) throw new Error(`sweep results differ between repeats on ${workers} workers`);
          results[workers] = res;
        }
      if (results[1] !== results[2]) throw new Error('sweep results differ between 1 and 2 workers');
      if (reference && reference !== results[1]) throw new Error(`${label}: sweep results differ from the compiled memtwin's`);
      reference = results[1];
      const s = (x: number): string => x.toFixed(2);
      const [a, b] = [median(walls[1]), median(walls[2])];
      row(
        `${label} of a sweep of 4 runs of ~1 s (0.7 s virtual): 1 worker vs 2 workers`,
        `${s(a)} s vs ${s(b)} s (medians): ${(a / b).toFixed(2)}x`,
        `${walls[1].length} alternated repeats: ${spread(walls[1], s)} s vs ${spread(walls[2], s)} s; speed-ups ${walls[1]
          .map((w, i) => (w / walls[2][i]!).toFixed(2))
          .join(', ')}; each run ${spread(perRun, (x) => x.toFixed(1))} s in its worker; results byte-identical; ${cpus().length} cores`,
      );
      if (breakdown)
        for (const workers of [1, 2] as const) {
          const m = (k: 'cpu' | 'main' | 'workers' | 'rest'): string => s(median(cpu[workers].map((x) => x[k])));
          row(
            `where that sweep's CPU time goes, ${workers} worker${workers > 1 ? 's' : ''}`,
            `${m('cpu')} s CPU (median)`,
            `main thread ${m('main')} s (start, scenario, reports), worker threads ${m('workers')} s, other threads ${m('rest')} s (V8's GC and compiler, libuv); medians of ${cpu[workers].length}, threads sampled every 20 ms`,
          );
        }
    };
    await pair('dist', [bin], '`memtwin run`', true);
    await ceiling(bin, dir, quick ? '20ms' : '700ms', quick ? 1 : 3);
    await pair(
      'tsx',
      ['--import', 'tsx', fromRoot('src', 'cli', 'main.ts')],
      '`memtwin run` from the TypeScript sources (tsx, a worker bundle made per sweep)',
      false,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The most any sweep engine could gain from two workers here: one run of
 * the sweep (seed 1) in a `memtwin run` process of its own, two such
 * processes one after the other against two at once (nothing shared: no
 * worker pool, no sweep report), alternated. What two at once lose is the
 * machine's (two isolates on two cores contend for memory bandwidth and
 * caches, V8's helper threads take the cores too), not memtwin's.
 */
async function ceiling(bin: string, dir: string, duration: string, repeats: number): Promise<void> {
  const file = join(dir, 'one.yaml');
  writeFileSync(file, SCENARIO(duration, false));
  const one = (out: string): Promise<number | null> =>
    new Promise((res) =>
      spawn(process.execPath, [bin, 'run', file, '--out', join(dir, out), '--workers', '1', '--quiet'], { stdio: 'ignore' }).on(
        'close',
        res,
      ),
    );
  const walls: Record<'seq' | 'par', number[]> = { seq: [], par: [] };
  for (let r = 0; r < repeats; r++)
    for (const how of r % 2 ? (['par', 'seq'] as const) : (['seq', 'par'] as const)) {
      const t = performance.now();
      const codes = how === 'seq' ? [await one('c-a'), await one('c-b')] : await Promise.all([one('c-a'), one('c-b')]);
      walls[how].push((performance.now() - t) / 1000);
      if (codes.some((c) => c !== 0)) throw new Error(`memtwin run ${file}: exit ${codes.join(', ')}`);
    }
  const s = (x: number): string => x.toFixed(2);
  const [a, b] = [median(walls.seq), median(walls.par)];
  row(
    'the ceiling: two runs of that sweep, each a `memtwin run` process of its own, one after the other vs both at once',
    `${s(a)} s vs ${s(b)} s (medians): ${(a / b).toFixed(2)}x`,
    `${repeats} alternated repeats: ${spread(walls.seq, s)} s vs ${spread(walls.par, s)} s; speed-ups ${walls.seq
      .map((w, i) => (w / walls.par[i]!).toFixed(2))
      .join(', ')}; the most a sweep engine could reach on this machine`,
  );
}

/** min-max of a list of values, formatted by `f`. */
function spread(xs: number[], f: (x: number) => string): string {
  return `${f(Math.min(...xs))}-${f(Math.max(...xs))}`;
}

/**
 * n anonymous 4K mmaps into one address space, alternating PROT_READ and
 * PROT_READ|PROT_WRITE so that no two merge: n VMAs, each placed by the
 * top-down unmapped-area search below the previous one. Timed in-process,
 * once per repeat, each repeat on a fresh kernel.
 */
function manyMmaps(n: number, repeats: number): void {
  const secs: number[] = [];
  for (let r = 0; r < repeats; r++) {
    const k = kernelOf(1);
    const p = k.createProcess('b');
    const t = performance.now();
    for (let i = 0; i < n; i++) if (k.mmap(p, 0, 4096, i % 2 ? PROT.PROT_READ : RW, ANON) < 0) throw new Error(`mmap ${i} failed`);
    secs.push((performance.now() - t) / 1000);
    if (p.mm.vmas.length !== n) throw new Error(`expected ${n} VMAs, got ${p.mm.vmas.length}`);
  }
  row(
    `${n.toLocaleString('en-US')} mmaps of 4K (no two merge)`,
    `${(median(secs) * 1000).toFixed(1)} ms (median)`,
    `${repeats} repeats: ${spread(secs, (x) => (x * 1000).toFixed(1))} ms`,
  );
}

/**
 * migrate_pages(2) from node 0 to node 1 of a process whose only mapping
 * is 1 TiB (MAP_NORESERVE) with one page written: the walk must skip the
 * empty page tables. Each repeat on a fresh kernel; the page is checked
 * to have moved.
 */
function sparseMigratePages(repeats: number): void {
  const ms: number[] = [];
  for (let r = 0; r < repeats; r++) {
    const host = hostFromFile({
      name: 'bench',
      nodes: [
        { id: 0, memory: GiB, cpus: [0] },
        { id: 1, memory: GiB, cpus: [1] },
      ],
    });
    const k = new Kernel({ host, costs: CostProfile.default() });
    const p = k.createProcess('b', 0);
    const len = 1024 * GiB;
    const a = k.mmap(p, 0, len, RW, ANON | MAP.MAP_NORESERVE);
    if (a < 0) throw new Error(`mmap of 1 TiB failed: ${a}`);
    k.access(p.mainThread, a + len / 2, 1, 4096, true, 1);
    const t = performance.now();
    const ret = sysMigratePages(k, p, p, [0], [1]);
    ms.push(performance.now() - t);
    if (ret !== 0 || k.vmstat.events.pgmigrate_success !== 1)
      throw new Error(`migrate_pages moved ${k.vmstat.events.pgmigrate_success} pages (ret ${ret})`);
  }
  row(
    'migrate_pages over a 1 TiB mapping holding one page',
    `${median(ms).toFixed(2)} ms (median)`,
    `${repeats} repeats: ${spread(ms, (x) => x.toFixed(2))} ms`,
  );
}

function cliffs(): void {
  manyMmaps(2000, quick ? 1 : 3);
  manyMmaps(8000, quick ? 1 : 3);
  if (!quick) manyMmaps(32000, 3);
  sparseMigratePages(quick ? 1 : 5);
}

async function main(): Promise<void> {
  const date = new Date().toISOString().slice(0, 10);
  const cmp = process.argv.indexOf('--compare-with');
  if (cmp > 0) {
    compareWith(process.argv[cmp + 1] ?? '');
    console.log('| benchmark | result | notes |\n| --- | --- | --- |');
    for (const [w, v, n] of rows) console.log(`| ${w} | ${v} | ${n} |`);
    return;
  }
  console.error(`memtwin bench${quick ? ' (quick)' : ''}`);
  const groups: [string, () => void | Promise<void>][] = [
    [
      'faults',
      () => {
        const f4 = faultRate(false);
        row(
          'simulated 4K faults per second (steady state, 1 GiB refaulted)',
          `${(f4.perSec / 1e6).toFixed(2)} M/s`,
          `${f4.faultsPerRound} faults per round`,
        );
        const f2 = faultRate(true);
        row('simulated THP faults per second (2M each)', `${(f2.perSec / 1e3).toFixed(1)} k/s`, `${f2.faultsPerRound} faults per round`);
      },
    ],
    ['mmap', mmapPairs],
    ['big', bigRun],
    ['postcopy', postcopyRun],
    ['precopy', precopyRuns],
    ['host', hostOf1TiB],
    ['vms', manyVms],
    ['scenario', scenarioSpeed],
    [
      'linux',
      async () => {
        await faultsVersusLinux();
        await collapseVersusLinux();
        await uffdCopyVersusLinux();
      },
    ],
    ['cliffs', cliffs],
    ['startup', startup],
  ];
  for (const [name, run] of groups) if (!only || only.has(name)) await run();
  const machine = `${cpus()[0]?.model ?? 'unknown CPU'}, ${cpus().length} cores, ${(totalmem() / GiB).toFixed(0)} GiB, Linux ${release()}, Node ${process.version}`;
  console.log(`\n### ${date}: ${machine}\n`);
  console.log('| benchmark | result | notes |\n| --- | --- | --- |');
  for (const [w, v, n] of rows) console.log(`| ${w} | ${v} | ${n} |`);
}

await main();
