/** Synthetic run and sweep results for the report tests and for looking at reports by hand. */
import type { RunResult, SweepResult, ThreadResult } from '../scenario/result.ts';

const GiB = 1024 ** 3;

export interface FakeRunOptions {
  id?: string;
  index?: number;
  params?: Record<string, unknown>;
  /** Sample count (default 300). */
  samples?: number;
  /** Virtual duration, ns (default 30 s). */
  duration_ns?: number;
  /** Scales throughput and THP use, so that sweep runs differ. */
  thp?: number;
  /** Series to leave out of `series.metrics`. */
  omit?: string[];
  /** Series to zero. */
  zero?: string[];
  seed?: number;
}

/** A small deterministic PRNG (mulberry32). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export const THREADS: { process: string; thread: string; cpu: number; node: number }[] = [
  { process: 'db', thread: 'w0', cpu: 0, node: 0 },
  { process: 'db', thread: 'w1', cpu: 1, node: 0 },
  { process: 'vm<&>"x"', thread: 'vcpu<0>', cpu: 2, node: 1 },
  { process: 'vm<&>"x"', thread: 'vcpu<1>', cpu: 3, node: 1 },
];

export function fakeRun(o: FakeRunOptions = {}): RunResult {
  const n = o.samples ?? 300;
  const dur = o.duration_ns ?? 30e9;
  const thp = o.thp ?? 1;
  const rand = rng(o.seed ?? 42);
  const t_ns = Array.from({ length: n }, (_, i) => Math.round(((i + 1) * dur) / n));
  const dt = dur / n / 1e9;
  const m: Record<string, number[]> = {};
  const col = (name: string, f: (i: number, x: number) => number): void => {
    m[name] = t_ns.map((_, i) => f(i, i / Math.max(1, n - 1)));
  };
  col('rss_bytes', (_, x) => Math.round(6 * GiB * Math.min(1, x * 3) + 200e6 * rand()));
  col('anon_huge_bytes', (_, x) => Math.round(0.8 * thp * 6 * GiB * Math.min(1, x * 2.5) * (x > 0.05 ? 1 : 0)));
  col('faults', (_, x) => Math.round((x < 0.35 ? 40000 / (1 + 3 * thp) : 300) * (0.8 + 0.4 * rand())));
  col('fault_ns_mean', (_, x) => (x < 0.35 ? 2500 + 60000 * thp : 1800) * (0.8 + 0.4 * rand()));
  for (const t of THREADS) {
    const base = (t.node === 0 ? 42e6 : 30e6) * (1 + 0.25 * thp);
    col(`throughput.${t.process}/${t.thread}`, (_, x) => base * (x < 0.3 ? 0.3 + x * 2 : 1) * (0.93 + 0.14 * rand()));
  }
  for (const node of [0, 1]) {
    col(`local.${node}`, () => Math.round(dt * 60e6 * (0.9 + 0.2 * rand())));
    col(`remote.${node}`, (_, x) => Math.round(dt * (node === 0 ? 12e6 : 4e6) * (0.5 + x) * (0.9 + 0.2 * rand())));
  }
  let alloc = 0;
  let fallback = 0;
  let stall = 0;
  let kcpu = 0;
  col('huge_access_ratio', (_, x) => Math.min(1, thp * x * 1.5));
  col('khugepaged_cpu_ns', (_, x) => (kcpu += x < 0.6 ? Math.round(2e6 * thp * rand()) : 0));
  col('agent_cpu_ns', (_, x) => Math.round(1e6 * x * 30));
  col('stall_ns', (_, x) => (x < 0.6 && rand() < 0.2 ? Math.round(800e3 * thp) : 0));
  col('thp_fault_alloc', (_, x) => (alloc += x < 0.35 ? Math.round(90 * thp * rand()) : 0));
  col('thp_fault_fallback', (_, x) => (fallback += x < 0.35 ? Math.round(10 * rand()) : 0));
  col('compact_stall', (_, x) => (stall += x < 0.35 && rand() < 0.3 * thp ? 1 : 0));
  col('migration_wait_ns', (_, x) => (x > 0.5 && x < 0.6 ? 300e3 : 0));
  for (const k of o.omit ?? []) delete m[k];
  for (const k of o.zero ?? []) if (m[k]) m[k] = m[k].map(() => 0);

  const threads: ThreadResult[] = THREADS.map((t, i) => {
    const accesses = Math.round((t.node === 0 ? 1.2e9 : 0.85e9) * (1 + 0.25 * thp) * (1 + i * 0.01));
    const reads = Math.round(accesses * 0.7);
    const faults = Math.round(400_000 / (1 + 3 * thp)) + i;
    const remote = Math.round(accesses * (t.node === 0 ? 0.18 : 0.07));
    return {
      ...t,
      remote_access_ratio: remote / accesses,
      accesses,
      reads,
      writes: accesses - reads,
      faults,
      fault_ns: faults * (2500 + 60000 * thp),
      local_accesses: accesses - remote,
      remote_accesses: remote,
      throughput: accesses / (dur / 1e9),
      huge_access_ratio: thp * 0.8,
      stall_ns: 0,
      stalls: 0,
      cpu_ns: dur,
      run_delay_ns: 0,
      nr_migrations: 0,
    };
  });
  const sum = (f: (t: ThreadResult) => number): number => threads.reduce((a, t) => a + f(t), 0);
  const final: Record<string, number> = {
    throughput_per_s: sum((t) => t.throughput),
    accesses: sum((t) => t.accesses),
    faults: sum((t) => t.faults),
    fault_ns_total: sum((t) => t.fault_ns),
    fault_ns_mean: sum((t) => t.fault_ns) / sum((t) => t.faults),
    rss_bytes: m.rss_bytes?.at(-1) ?? 0,
    anon_huge_bytes: m.anon_huge_bytes?.at(-1) ?? 0,
    remote_fraction: sum((t) => t.remote_accesses) / sum((t) => t.accesses),
    thp_fault_alloc: alloc,
    compact_stall: stall,
    page_size_bytes: 4096,
  };
  return {
    memtwin: { version: '0.1.0' },
    events: [],
    scenario: {
      name: 'thp-db-vm',
      description: 'A database and a 2-vCPU guest <sharing> two NUMA nodes, with THP "always" & defrag on.',
      file: 'examples/thp-db-vm.yaml',
    },
    run: { index: o.index ?? 0, id: o.id ?? 'base', params: o.params ?? {} },
    seed: o.seed ?? 42,
    duration_ns: dur,
    host: {
      name: 'two-socket',
      nodes: [
        { id: 0, memory: 16 * GiB, cpus: [0, 1, 4, 5] },
        { id: 1, memory: 16 * GiB, cpus: [2, 3, 6, 7] },
      ],
      distances: [
        [10, 21],
        [21, 10],
      ],
    },
    profile: { date: '2025-01-15', machine: 'Xeon Gold 6338 (synthetic)' },
    inputs: { processes: [{ name: 'db' }], thp: thp > 0 ? 'always' : 'never' },
    final,
    threads,
    series: { t_ns, metrics: m },
  };
}

/** A sweep over THP settings, with its runs' full results. */
export function fakeSweep(): { sweep: SweepResult; runs: RunResult[] } {
  const values = ['never', 'madvise', 'always'];
  const runs = values.map((v, i) =>
    fakeRun({ id: `thp=${v}`, index: i, params: { thp: v, 'numa<bal>': i % 2 === 0 }, thp: i / 2, seed: 7 + i }),
  );
  return {
    sweep: {
      memtwin: { version: '0.1.0' },
      scenario: runs[0]!.scenario,
      swept: [
        { path: ['sysfs', 'transparent_hugepage', 'enabled'], label: 'thp', values },
        { path: ['sysctl', 'numa_balancing'], label: 'numa<bal>', values: [true, false] },
      ],
      runs: runs.map((r) => ({ index: r.run.index, id: r.run.id, params: r.run.params, dir: `runs/${r.run.id}`, final: r.final })),
    },
    runs,
  };
}
