/**
 * Mutated scenario files, for fuzzing the scenario loader and runner.
 *
 *   generateScenarioTexts(seed: number, n: number, opts?): string[]
 *   generateScenarioCases(seed: number, n: number, opts?): FuzzCase[]   (the same, with what was done to each)
 *
 * Deterministic: the same seed and n give the same texts. Each text starts
 * from a base, one of the shipped scenarios (scenarios/*.yaml) or a small
 * scenario of this file, made small first (virtual time cut to 20 ms,
 * mappings to at most 64 MiB, VM memory to at most 512 MiB, sweeps to two
 * values per dimension) so that a text that is accepted runs in a second or
 * two. Then 1 to 3 mutations, drawn from: drop a field or list entry,
 * duplicate one, change its type, an extreme number (0, 0.4, -1, 1e308,
 * 2^53, ...), an extreme size or duration string, an empty string, a long
 * string, an unknown key, a name or reference swapped for another, a
 * mutated sweep (bad paths, huge products, odd values), a new or mutated
 * event, VM event, agent or VM, and text-level damage: broken YAML,
 * duplicate keys, tabs, truncation, anchors and aliases (undefined ones,
 * cycles, an alias bomb).
 *
 * scripts/fuzz.ts (`--scenarios N`) and src/scenario/fuzz.test.ts use it.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { SeededRandom, type RandomStream } from '../sim/random.ts';
import { fromRoot } from '../util/paths.ts';
import { parseSize } from '../util/input_error.ts';
import { parseDuration } from './schema.ts';

export interface FuzzCase {
  /** The base it started from (a shipped scenario's file name, or small-*). */
  base: string;
  /** What was done to it, in order. */
  mutations: string[];
  text: string;
}

export interface FuzzOptions {
  /** Length of the long strings a mutation may write (default 100000). */
  longString?: number;
  /** Leave the shipped scenarios out (only the small ones of this file). */
  smallOnly?: boolean;
}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type Obj = { [k: string]: Json };
type Path = (string | number)[];

/** Small scenarios covering what the shipped ones use little: events, agents, VM events, sweeps of several kinds. */
const SMALL_BASES: Record<string, string> = {
  'small-sweep': `name: small
seed: 7
host:
  name: tiny
  nodes:
    - { id: 0, memory: 256M, cpus: 0-1 }
    - { id: 1, memory: 256M, cpus: 2-3 }
  distances: [[10, 21], [21, 10]]
duration: 5ms
sample: { interval: 1ms }
kernel:
  /sys/kernel/mm/transparent_hugepage/enabled: madvise
processes:
  - name: app
    mappings:
      - { name: heap, size: 16M, madvise: [MADV_HUGEPAGE] }
      - { name: side, size: 4M, policy: { mode: MPOL_BIND, nodes: [1] } }
    threads:
      - { name: w, cpu: 0, count: 2, workload: { pattern: uniform, mapping: heap, read_ratio: 0.7 } }
      - name: z
        cpu: 2
        workload:
          phases:
            - { pattern: first-touch, mapping: side, duration: 1ms }
            - { pattern: zipf, mapping: side, zipf_s: 1.1 }
            - { pattern: sequential, mapping: heap, stride: 128, think: 1us, rate: 100000 }
sweep:
  - path: [kernel, /sys/kernel/mm/transparent_hugepage/enabled]
    values: [always, never]
    label: enabled
`,
  'small-events': `name: events
host: default
duration: 4ms
sample: { interval: 1ms }
processes:
  - name: app
    mappings:
      - { name: heap, size: 8M, populate: true }
      - { name: frag, size: 4M, fragment: 4 }
    threads:
      - { name: t, cpu: 0, mempolicy: { mode: MPOL_PREFERRED, nodes: [1] }, workload: { pattern: uniform, mapping: heap } }
      - { name: u, cpu: 4, workload: { pattern: idle, mapping: heap } }
events:
  - { at: 1ms, process: app, op: migrate_pages, old_nodes: [0], new_nodes: [1] }
  - { at: 1ms, process: app, op: mbind, mapping: heap, policy: { mode: MPOL_BIND, nodes: [0] }, flags: [MPOL_MF_MOVE] }
  - { at: 2ms, process: app, op: madvise, mapping: heap, advice: MADV_HUGEPAGE }
  - { at: 2ms, process: app, op: sched_setaffinity, thread: t, cpu: 5 }
  - { at: 3ms, process: app, op: set_mempolicy, policy: { mode: MPOL_INTERLEAVE, nodes: [0, 1] } }
agents:
  - { name: uh, kind: uhugepaged, interval: 1ms, cpu_budget: 0.5, min_heat: 1, targets: [app] }
sweep:
  - label: placement
    configs:
      - name: plain
      - name: bound
        set:
          - { path: [processes, 0, mappings, 0, policy], value: { mode: MPOL_BIND, nodes: [0] } }
          - { path: [kernel, /proc/sys/kernel/numa_balancing], value: 1 }
`,
  'small-vm': `name: vm
host:
  name: two
  nodes:
    - { id: 0, memory: 512M, cpus: 0-1 }
    - { id: 1, memory: 512M, cpus: 2-3 }
duration: 5ms
sample: { interval: 1ms }
kernel:
  /sys/kernel/memtwin/features/process_mbind: 1
vms:
  - name: guest
    memdevs:
      - { id: m0, size: 128M, host-nodes: [0], policy: bind }
      - { id: m1, size: 128M, prealloc: true }
    numa:
      - { memdev: m0, cpus: [0] }
      - { memdev: m1, cpus: [1] }
    vcpus: [0, 2]
    emulator_cpu: 1
    balloon: { free-page-hint: true, free-page-reporting: true, hint-batch: 64, hint-encoding: bitmap }
    guest:
      fragment: { size: 16M, keep_every: 8 }
    workloads:
      - { name: w, vcpu: 0, guest_node: 0, workload: { pattern: uniform, mapping: ram } }
    events:
      - { at: 1ms, op: balloon, target: 192M }
      - { at: 1ms, op: free_page_hint, action: start }
      - { at: 2ms, op: guest_alloc, size: 8M, vcpu: 1 }
      - { at: 2ms, op: guest_free, size: 4M }
      - { at: 3ms, op: hmp, command: info ram }
      - { at: 3ms, op: qmp, command: { execute: query-balloon } }
      - { at: 3ms, op: move_pages, guest_node: 0, nodes: [1] }
      - { at: 4ms, op: mbind, guest_node: 1, nodes: [0], policy: MPOL_BIND, flags: [MPOL_MF_MOVE] }
      - { at: 4ms, op: migrate_pages, old_nodes: [0], new_nodes: [1] }
`,
  'small-migrate': `name: migrate
host: default
duration: 8ms
sample: { interval: 1ms }
vms:
  - name: src
    memory: 64M
    vcpus: [0]
    workloads:
      - { name: w, vcpu: 0, workload: { pattern: uniform, mapping: ram, read_ratio: 0.5 } }
    events:
      - at: 1ms
        op: migrate
        bandwidth: 1250M
        latency: 100us
        max-bandwidth: 1G
        downtime-limit: 300
        capabilities: [postcopy-ram]
        start-postcopy: 2ms
        destination:
          host:
            name: dst
            nodes: [{ id: 0, memory: 256M, cpus: 0-3 }]
          vcpus: [1]
      - { at: 3ms, op: migration_fault, fault: link-stall, duration: 1ms }
`,
};

/** The bases, made small, by name. */
export function fuzzBases(opts: FuzzOptions = {}): { name: string; data: Obj }[] {
  const out: { name: string; data: Obj }[] = [];
  for (const [name, text] of Object.entries(SMALL_BASES)) out.push({ name, data: shrink(parse(text) as Obj) });
  if (!opts.smallOnly) {
    const dir = fromRoot('scenarios');
    for (const f of readdirSync(dir)
      .filter((x) => x.endsWith('.yaml'))
      .sort())
      out.push({ name: f, data: shrink(parse(readFileSync(join(dir, f), 'utf8')) as Obj) });
  }
  return out;
}

export function generateScenarioTexts(seed: number, n: number, opts: FuzzOptions = {}): string[] {
  return generateScenarioCases(seed, n, opts).map((c) => c.text);
}

export function generateScenarioCases(seed: number, n: number, opts: FuzzOptions = {}): FuzzCase[] {
  const bases = fuzzBases(opts);
  const out: FuzzCase[] = [];
  for (let i = 0; i < n; i++) {
    // One stream per case: case i does not depend on how many draws earlier cases made.
    const r = new SeededRandom(seed).stream(`scenario-fuzz-${i}`);
    const base = bases[r.int(0, bases.length - 1)]!;
    const m = new Mutator(r, structuredClone(base.data), opts.longString ?? 100_000);
    // A third of the cases get one tweak only, so that more of them are accepted and run.
    if (r.int(0, 2) === 0) m.tweakOnly();
    else for (let j = r.int(1, 3); j > 0; j--) m.mutate();
    out.push({ base: base.name, mutations: m.log, text: m.text() });
  }
  return out;
}

// ------------------------------------------------------------------ making bases small

const MAX_RUN_NS = 20e6;
const MAX_MAPPING = 64 * 2 ** 20;
const MAX_VM_RAM = 512 * 2 ** 20;

const isObj = (x: unknown): x is Obj => typeof x === 'object' && x !== null && !Array.isArray(x);

/** Durations scaled so the run lasts at most 20 ms; sizes cut down; sweeps to two values per dimension. */
function shrink(s: Obj): Obj {
  const dur = typeof s['duration'] === 'string' || typeof s['duration'] === 'number' ? toNs(s['duration']) : undefined;
  const f = dur && dur > MAX_RUN_NS ? MAX_RUN_NS / dur : 1;
  if (dur !== undefined) {
    s['duration'] = Math.round(dur * f);
    s['sample'] = { interval: Math.max(1000, Math.round((dur * f) / 20)) };
  }
  scaleDurations(s, f);
  for (const p of asList(s['processes'])) shrinkProcess(p);
  const cuts = asList(s['vms']).map(shrinkVm);
  const sweep = s['sweep'];
  if (Array.isArray(sweep))
    for (const d of sweep) {
      if (!isObj(d)) continue;
      if (Array.isArray(d['values'])) d['values'] = d['values'].slice(0, 2);
      if (Array.isArray(d['configs'])) d['configs'] = d['configs'].slice(0, 2);
      // Sizes a configuration sets in a VM shrink with that VM.
      for (const c of asList(d['configs']))
        for (const set of asList(c['set'])) {
          const p = set['path'];
          const cut = Array.isArray(p) && p[0] === 'vms' && typeof p[1] === 'number' ? cuts[p[1]] : undefined;
          if (cut) set['value'] = cutSizes(set['value'] ?? null, cut);
        }
    }
  return s;
}

const SIZE_KEYS = new Set(['size', 'memory', 'target']);

function cutSizes(x: Json, cut: (v: Json | undefined) => Json | undefined): Json {
  if (Array.isArray(x)) return x.map((y) => cutSizes(y, cut));
  if (!isObj(x)) return x;
  const out: Obj = {};
  for (const [k, v] of Object.entries(x)) out[k] = SIZE_KEYS.has(k) ? (cut(v) ?? v) : cutSizes(v, cut);
  return out;
}

function asList(x: Json | undefined): Obj[] {
  return Array.isArray(x) ? x.filter(isObj) : [];
}

function toNs(v: Json | undefined): number | undefined {
  if (typeof v === 'number') return v;
  return typeof v === 'string' ? parseDuration(v) : undefined;
}

const DURATION_KEYS = new Set(['at', 'duration', 'interval', 'start', 'start-postcopy']);

/** Every duration below the top level (events' at, phases, agents, VM events) scaled by f, at least 1 ms for agents. */
function scaleDurations(x: Json, f: number, key = ''): void {
  if (f === 1) return;
  if (Array.isArray(x)) x.forEach((y) => scaleDurations(y, f, key));
  else if (isObj(x))
    for (const [k, v] of Object.entries(x)) {
      if (k === 'sample' || k === 'sweep') continue;
      const ns = DURATION_KEYS.has(k) && key !== '' ? toNs(v) : undefined;
      if (ns !== undefined) x[k] = Math.max(k === 'interval' ? 1e6 : 0, Math.round(ns * f));
      else scaleDurations(v, f, k);
    }
}

/** A process's mappings to at most 64M (1G hugetlb ones left as they are), its threads' offsets and lengths with them. */
function shrinkProcess(p: Obj): void {
  const maps = asList(p['mappings']);
  const sizes = maps.map((m) => parseSize(m['size']) ?? 0);
  const biggest = Math.max(0, ...sizes);
  if (biggest <= MAX_MAPPING || maps.some((m) => JSON.stringify(m['flags'] ?? '').includes('HUGE_1GB'))) return;
  let g = 1;
  while (biggest / g > MAX_MAPPING) g *= 2;
  maps.forEach((m, i) => (m['size'] = Math.max(4096, Math.floor(sizes[i]! / g / 4096) * 4096)));
  for (const t of asList(p['threads'])) {
    const w = t['workload'];
    for (const ph of isObj(w) ? (Array.isArray(w['phases']) ? w['phases'].filter(isObj) : [w]) : [])
      for (const k of ['offset', 'length']) if (ph[k] !== undefined) ph[k] = Math.floor((parseSize(ph[k]) ?? 0) / g / 4096) * 4096 || 4096;
  }
}

/**
 * A VM's RAM to at most 512M by one power-of-two factor for all its sizes
 * (1G hugetlb backends left as they are); returns the cut, for the sweep.
 */
function shrinkVm(vm: Obj): ((v: Json | undefined) => Json | undefined) | undefined {
  const devs = asList(vm['memdevs']);
  const total = devs.reduce((a, m) => a + (parseSize(m['size']) ?? 0), 0) || (parseSize(vm['memory']) ?? 0);
  if (total <= MAX_VM_RAM || JSON.stringify(vm).includes('1G')) return undefined;
  let g = 1;
  while (total / g > MAX_VM_RAM) g *= 2;
  const cut = (v: Json | undefined): Json | undefined => {
    const b = parseSize(v);
    return b === undefined ? v : Math.max(2 ** 21, Math.floor(b / g / 2 ** 21) * 2 ** 21);
  };
  for (const m of devs) m['size'] = cut(m['size'])!;
  if (vm['memory'] !== undefined) vm['memory'] = cut(vm['memory'])!;
  const guest = vm['guest'];
  if (isObj(guest) && isObj(guest['fragment'])) guest['fragment']['size'] = cut(guest['fragment']['size'])!;
  for (const ev of asList(vm['events'])) {
    for (const k of ['target', 'size']) if (ev[k] !== undefined) ev[k] = cut(ev[k])!;
    const d = ev['destination'];
    if (isObj(d)) for (const m of asList(d['memdevs'])) m['size'] = cut(m['size'])!;
  }
  return cut;
}

// ------------------------------------------------------------------ mutations

const EXTREME_NUMBERS: Json[] = [0, -1, 0.4, 1.5, 1e308, -1e308, 2 ** 53, 2 ** 53 + 2, 2 ** 32, 8191, 8192, 1023, 1024, 1e-300, 63, 64, 65];
const EXTREME_STRINGS: Json[] = [
  '0',
  '0ns',
  '1ns',
  '0.4ns',
  '1.5ns',
  '1us',
  '3600s',
  '3601s',
  '99999999999s',
  '1T',
  '2T',
  '0x0',
  '99999999T',
  '4K',
  '1G',
  '-1',
  '.inf',
  'NaN',
  '1e308',
  '0-100000000',
  '0-3,8',
];
const UNKNOWN_KEYS = ['colour', 'durration', 'Name', '__proto__', 'constructor', 'x-extra', ''];
const OPS = ['migrate_pages', 'mbind', 'madvise', 'set_mempolicy', 'sched_setaffinity', 'ms_move', 'bogus'];
const VM_OPS = [
  'balloon',
  'free_page_hint',
  'guest_alloc',
  'guest_free',
  'qmp',
  'hmp',
  'migrate_pages',
  'move_pages',
  'mbind',
  'migrate',
  'migration_fault',
];
const PATTERNS = ['sequential', 'uniform', 'zipf', 'first-touch', 'idle'];
const KNOBS = [
  '/sys/kernel/mm/transparent_hugepage/enabled',
  '/sys/kernel/mm/transparent_hugepage/defrag',
  '/sys/kernel/mm/transparent_hugepage/khugepaged/scan_sleep_millisecs',
  '/sys/kernel/mm/transparent_hugepage/khugepaged/alloc_sleep_millisecs',
  '/sys/kernel/mm/transparent_hugepage/khugepaged/pages_to_scan',
  '/proc/sys/kernel/numa_balancing',
  '/sys/kernel/debug/sched/numa_balancing/scan_delay_ms',
  '/sys/kernel/debug/sched/numa_balancing/scan_period_min_ms',
  '/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages',
  '/sys/kernel/memtwin/features/memsched',
  '/sys/kernel/mm/nosuch',
];
const KNOB_VALUES: Json[] = ['always', 'madvise', 'never', 'defer', 0, 1, 2, 4096, -1, 1e308, '', 'x'];

class Mutator {
  readonly log: string[] = [];
  /** Text-level damage, applied after stringifying. */
  private textOps: ((t: string) => string)[] = [];

  constructor(
    private readonly r: RandomStream,
    private readonly data: Obj,
    private readonly longLen: number,
  ) {}

  private pick<T>(xs: readonly T[]): T {
    return xs[this.r.int(0, xs.length - 1)]!;
  }

  private chance(p: number): boolean {
    return this.r.float() < p;
  }

  text(): string {
    let t = stringify(this.data, { lineWidth: 0, aliasDuplicateObjects: false });
    for (const op of this.textOps) t = op(t);
    return t;
  }

  /** Every path to a value in the data (maps and lists included). */
  private paths(): Path[] {
    const out: Path[] = [];
    const walk = (x: Json, p: Path): void => {
      out.push(p);
      if (Array.isArray(x)) x.forEach((y, i) => walk(y, [...p, i]));
      else if (isObj(x)) for (const [k, v] of Object.entries(x)) walk(v, [...p, k]);
    };
    walk(this.data, []);
    return out;
  }

  private get(p: Path): Json | undefined {
    let cur: Json | undefined = this.data;
    for (const k of p) cur = Array.isArray(cur) ? cur[k as number] : isObj(cur) ? cur[k as string] : undefined;
    return cur;
  }

  private set(p: Path, v: Json): void {
    if (!p.length) return;
    const parent = this.get(p.slice(0, -1));
    const k = p[p.length - 1]!;
    if (Array.isArray(parent)) parent[k as number] = v;
    else if (isObj(parent)) parent[k as string] = v;
  }

  /** A random path below the top, preferring leaves. */
  private somePath(leaf = false): Path | undefined {
    const ps = this.paths().filter((p) => p.length > 0 && (!leaf || !this.isCollection(this.get(p))));
    return ps.length ? this.pick(ps) : undefined;
  }

  private isCollection(x: Json | undefined): boolean {
    return Array.isArray(x) || isObj(x);
  }

  private otherValue(): Json {
    switch (this.r.int(0, 9)) {
      case 0:
        return this.pick(EXTREME_NUMBERS);
      case 1:
        return this.pick(EXTREME_STRINGS);
      case 2:
        return '';
      case 3:
        return this.longString();
      case 4:
        return this.r.int(0, 1) === 1;
      case 5:
        return null;
      case 6:
        return [];
      case 7:
        return {};
      case 8:
        return [this.pick(EXTREME_NUMBERS), this.pick(EXTREME_STRINGS)];
      default:
        return { [this.pick(UNKNOWN_KEYS)]: this.pick(EXTREME_NUMBERS) };
    }
  }

  private longString(): string {
    const n = this.chance(0.1) ? this.longLen * 10 : this.longLen;
    return this.pick(['x', 'ab', '9', 'é', '0-']).repeat(Math.ceil(n / 2));
  }

  tweakOnly(): void {
    this.tweak();
  }

  mutate(): void {
    const ops: [string, () => void][] = [
      ['tweak', () => this.tweak()],
      ['tweak', () => this.tweak()],
      ['tweak', () => this.tweak()],
      ['drop', () => this.drop()],
      ['duplicate', () => this.duplicate()],
      ['retype', () => this.retype()],
      ['extreme', () => this.extreme()],
      ['unknown-key', () => this.unknownKey()],
      ['swap-name', () => this.swapName()],
      ['sweep', () => this.sweep()],
      ['event', () => this.event()],
      ['vm-event', () => this.vmEvent()],
      ['agent', () => this.agent()],
      ['vm', () => this.vm()],
      ['kernel', () => this.kernel()],
      ['yaml', () => this.yaml()],
      ['alias', () => this.alias()],
    ];
    const [, op] = this.pick(ops);
    op();
  }

  /**
   * A change that often stays valid, so runs get exercised too: a number
   * halved, doubled or set to a small value, a pattern, knob value or
   * policy mode swapped for another, a boolean flipped.
   */
  private tweak(): void {
    const p = this.somePath(true);
    if (!p) return;
    const cur = this.get(p);
    const key = String(p[p.length - 1]);
    let v: Json | undefined;
    if (typeof cur === 'number') v = this.pick([Math.floor(cur / 2), cur * 2, 1, 2, 0]);
    else if (typeof cur === 'boolean') v = !cur;
    else if (key === 'pattern') v = this.pick(PATTERNS);
    else if (key === 'mode')
      v = this.pick([
        'MPOL_DEFAULT',
        'MPOL_BIND',
        'MPOL_INTERLEAVE',
        'MPOL_PREFERRED',
        'MPOL_LOCAL',
        'MPOL_PREFERRED_MANY',
        'MPOL_WEIGHTED_INTERLEAVE',
      ]);
    else if (p[0] === 'kernel') v = this.pick(KNOB_VALUES);
    else if (typeof cur === 'string' && parseSize(cur) !== undefined) v = this.pick(['4K', '2M', '8M', '64M', '1G']);
    else if (typeof cur === 'string' && parseDuration(cur) !== undefined) v = this.pick(['0', '1us', '100us', '1ms', '5ms']);
    if (v === undefined) return this.extreme();
    this.set(p, v);
    this.log.push(`tweak ${p.join('.')}`);
  }

  private drop(): void {
    const p = this.somePath();
    if (!p) return;
    const parent = this.get(p.slice(0, -1));
    const k = p[p.length - 1]!;
    if (Array.isArray(parent)) parent.splice(k as number, 1);
    else if (isObj(parent)) delete parent[k as string];
    this.log.push(`drop ${p.join('.')}`);
  }

  private duplicate(): void {
    const lists = this.paths().filter((p) => Array.isArray(this.get(p)) && (this.get(p) as Json[]).length);
    if (!lists.length || this.chance(0.2)) {
      // A key written twice: a YAML error.
      this.textOps.push((t) => {
        const lines = t.split('\n');
        const i = this.r.int(0, Math.max(0, lines.length - 2));
        lines.splice(i, 0, lines[i]!);
        return lines.join('\n');
      });
      this.log.push('duplicate a line');
      return;
    }
    const p = this.pick(lists);
    const l = this.get(p) as Json[];
    l.push(structuredClone(l[this.r.int(0, l.length - 1)]!));
    this.log.push(`duplicate an entry of ${p.join('.')}`);
  }

  private retype(): void {
    const p = this.somePath();
    if (!p) return;
    this.set(p, this.otherValue());
    this.log.push(`retype ${p.join('.')}`);
  }

  private extreme(): void {
    const p = this.somePath(true);
    if (!p) return;
    const cur = this.get(p);
    this.set(p, typeof cur === 'number' || this.chance(0.5) ? this.pick(EXTREME_NUMBERS) : this.pick(EXTREME_STRINGS));
    this.log.push(`extreme ${p.join('.')}`);
  }

  private unknownKey(): void {
    const maps = this.paths().filter((p) => isObj(this.get(p)));
    const p = this.pick(maps);
    const m = this.get(p) as Obj;
    const k = this.chance(0.1) ? this.longString() : this.pick(UNKNOWN_KEYS);
    Object.defineProperty(m, k, { value: this.otherValue(), enumerable: true, writable: true, configurable: true });
    this.log.push(`unknown key in ${p.join('.') || '(top)'}`);
  }

  /** A name or reference replaced by another name of the scenario, or by one that does not exist. */
  private swapName(): void {
    const names = this.paths().filter((p) =>
      ['name', 'mapping', 'process', 'memdev', 'thread', 'id', 'targets'].includes(String(p.at(-1))),
    );
    if (!names.length) return this.retype();
    const p = this.pick(names);
    const pool = names.map((q) => this.get(q)).filter((v): v is string => typeof v === 'string');
    this.set(p, this.chance(0.5) && pool.length ? this.pick(pool) : this.pick(['nosuch', 'ram', 'heap', 'app', '']));
    this.log.push(`swap name ${p.join('.')}`);
  }

  private sweep(): void {
    const leafPaths = this.paths().filter((p) => p.length > 0 && p[0] !== 'sweep');
    const path: Json[] =
      this.chance(0.7) && leafPaths.length
        ? [...this.pick(leafPaths)]
        : this.pick<Json[]>([
            ['__proto__', 'x'],
            ['sweep'],
            ['processes', 99, 'name'],
            ['processes', 'app'],
            ['kernel', this.pick(KNOBS)],
            [],
            ['duration'],
            ['sample', 'interval'],
            ['constructor', 'prototype'],
          ]);
    const values: Json[] = [];
    for (let i = this.r.int(0, 4); i > 0; i--)
      values.push(this.chance(0.5) ? this.otherValue() : structuredClone(this.get(path as Path) ?? 1));
    let dim: Obj;
    switch (this.r.int(0, 3)) {
      case 0:
        dim = { path, values };
        break;
      case 1:
        dim = { label: 'cfg', configs: values.map((v, i) => ({ name: `c${i}`, set: [{ path, value: v }] })) };
        break;
      case 2:
        // A product past the limit (accepted sweeps stay small: a few values per dimension).
        dim = { path, values: Array.from({ length: 1001 }, (_, i) => i) };
        break;
      default:
        dim = { path, values, label: this.pick(['', 'x', this.longString()]) };
    }
    const sweep = Array.isArray(this.data['sweep']) ? this.data['sweep'] : (this.data['sweep'] = []);
    sweep.push(dim);
    if (this.chance(0.3)) sweep.push(structuredClone(dim));
    this.log.push(`sweep ${JSON.stringify(path).slice(0, 60)}`);
  }

  private randomFields(keys: string[], n: number): Obj {
    const o: Obj = {};
    for (let i = 0; i < n; i++) o[this.pick(keys)] = this.otherValue();
    return o;
  }

  private event(): void {
    const procs = asList(this.data['processes']).map((p) => p['name']);
    const ev: Obj = {
      at: this.pick<Json>(['0', '1ms', 0, '3600s', -1]),
      process: this.pick<Json>([...procs, 'nosuch']),
      op: this.pick(OPS),
      ...(this.chance(0.5) ? { mapping: this.pick<Json>(['heap', 'ram', 'side', 'nosuch']) } : {}),
      ...(this.chance(0.3) ? { thread: this.pick<Json>(['t', 'w-0', 'z', 'nosuch']) } : {}),
      ...(this.chance(0.3) ? { cpu: this.pick<Json>([0, 1, 7, 8191, 9999]) } : {}),
      ...(this.chance(0.3) ? { old_nodes: [0], new_nodes: this.pick<Json>([[1], [5], []]) } : {}),
      ...(this.chance(0.3) ? { policy: { mode: 'MPOL_BIND', nodes: this.pick<Json>([[0], [3], []]) } } : {}),
      ...(this.chance(0.2) ? { advice: this.pick<Json>(['MADV_HUGEPAGE', 'MADV_COLLAPSE', 'MADV_PAGEOUT', 'MADV_BOGUS']) } : {}),
      ...(this.chance(0.2) ? { group: 1, node: this.pick<Json>([0, 1, 9]) } : {}),
      ...(this.chance(0.2) ? this.randomFields(['at', 'op', 'flags', 'cpu', 'advice', 'node'], 1) : {}),
    };
    const evs = Array.isArray(this.data['events']) ? this.data['events'] : (this.data['events'] = []);
    evs.push(ev);
    this.log.push(`event ${String(ev['op'])}`);
  }

  private vmEvent(): void {
    const vms = asList(this.data['vms']);
    if (!vms.length) return this.vm();
    const vm = this.pick(vms);
    const ev: Obj = {
      at: this.pick<Json>(['0', '1ms', 2e6, '3600s']),
      op: this.pick(VM_OPS),
      ...(this.chance(0.5) ? { target: this.pick<Json>(['64M', 0, '1T', 1]) } : {}),
      ...(this.chance(0.4) ? { size: this.pick<Json>(['4M', 0, '1T', 4095]) } : {}),
      ...(this.chance(0.4) ? { action: this.pick<Json>(['start', 'stop', 'done', 'go']) } : {}),
      ...(this.chance(0.3)
        ? { command: this.pick<Json>(['info ram', 'info numa', '', '{"execute":"nosuch"}', { execute: 'query-migrate' }, { nope: 1 }, 7]) }
        : {}),
      ...(this.chance(0.3) ? { guest_node: this.pick<Json>([0, 1, 127]), nodes: this.pick<Json>([[0], [1], [], [63]]) } : {}),
      ...(this.chance(0.3) ? { bandwidth: this.pick<Json>(['1250M', 0, 1, '1T']), latency: this.pick<Json>([0, '1ms', '3600s']) } : {}),
      ...(this.chance(0.2) ? { capabilities: this.pick<Json>([['postcopy-ram'], ['auto-converge'], ['nosuch'], []]) } : {}),
      ...(this.chance(0.2) ? { 'start-postcopy': this.pick<Json>([0, '1ms']) } : {}),
      ...(this.chance(0.2)
        ? { fault: this.pick<Json>(['link-stall', 'link-drop', 'source-loss']), duration: this.pick<Json>([0, '1ms']) }
        : {}),
      ...(this.chance(0.2) ? { 'downtime-limit': this.pick<Json>([0, 300, 2000001]), 'max-bandwidth': this.pick<Json>([0, '1G']) } : {}),
      ...(this.chance(0.1) ? { sndbuf: this.pick<Json>([0, '4K', '1G']), rcvbuf: this.pick<Json>([4096, '6M']) } : {}),
      ...(this.chance(0.1)
        ? {
            destination: this.pick<Json>([
              { host: 'default' },
              { host: '' },
              { vcpus: [0, 1, 2] },
              { kernel: { '/sys/kernel/mm/nosuch': 1 } },
            ]),
          }
        : {}),
    };
    const evs = Array.isArray(vm['events']) ? vm['events'] : (vm['events'] = []);
    evs.push(ev);
    this.log.push(`vm event ${String(ev['op'])}`);
  }

  private agent(): void {
    const a: Obj = {
      name: this.pick<Json>(['uh', '', 'x'.repeat(70)]),
      kind: this.pick<Json>(['uhugepaged', 'khugepaged']),
      ...(this.chance(0.6) ? { interval: this.pick<Json>([0, '1ms', '1us', '0.4ns', 1e6, '1s']) } : {}),
      ...(this.chance(0.4) ? { cpu_budget: this.pick<Json>([0, 0.01, 1, 2, -1]) } : {}),
      ...(this.chance(0.3) ? { min_heat: this.pick<Json>([0, 1e308, -1]) } : {}),
      ...(this.chance(0.3) ? { retry_after: this.pick<Json>([0, 1.5, 1e9]) } : {}),
      ...(this.chance(0.3) ? { targets: this.pick<Json>([[], ['app'], ['nosuch']]) } : {}),
      ...(this.chance(0.3) ? { start: this.pick<Json>([0, '1ms', '3600s']) } : {}),
    };
    const agents = Array.isArray(this.data['agents']) ? this.data['agents'] : (this.data['agents'] = []);
    agents.push(a);
    this.log.push('agent');
  }

  private vm(): void {
    const vm: Obj = {
      name: this.pick<Json>(['v', 'app', '']),
      ...(this.chance(0.7) ? { memory: this.pick<Json>(['64M', 0, '1T', 4097, '3G']) } : {}),
      ...(this.chance(0.3) ? { memdevs: [{ id: this.pick<Json>(['m0', '0bad', '']), size: this.pick<Json>(['32M', 0, '1000']) }] } : {}),
      ...(this.chance(0.3) ? { numa: [{ memdev: this.pick<Json>(['m0', 'nosuch']), cpus: this.pick<Json>([[0], [5]]) }] } : {}),
      ...(this.chance(0.5) ? { vcpus: this.pick<Json>([[0], [0, 1], [99], [], Array.from({ length: 1025 }, () => 0)]) } : {}),
      ...(this.chance(0.3)
        ? {
            balloon: this.pick<Json>([
              {},
              { 'free-page-hint': true, 'hint-batch': 1 },
              { 'hint-batch': 65536, 'hint-encoding': 'bitmap' },
              { 'free-page-hint': true, 'hint-encoding': 'bitmap', 'hint-batch': 64, 'hint-bitmap-order': this.pick<Json>([9, 3]) },
              { 'inflate-encoding': this.pick<Json>(['bitmap', 'per-order', 'bits']), 'inflate-alloc': this.pick<Json>(['4k', 'all']) },
            ]),
          }
        : {}),
      ...(this.chance(0.3)
        ? {
            workloads: [
              {
                name: 'w',
                vcpu: this.pick<Json>([0, 3]),
                workload: { pattern: this.pick(PATTERNS), mapping: this.pick<Json>(['ram', 'heap']) },
              },
            ],
          }
        : {}),
      ...(this.chance(0.2) ? { 'max-ram-below-4g': this.pick<Json>(['1G', '5G', 0]) } : {}),
      ...(this.chance(0.2) ? { emulator_cpu: this.pick<Json>([0, 99]) } : {}),
      ...(this.chance(0.2) ? { guest: { fragment: { size: this.pick<Json>(['8M', 0]), keep_every: this.pick<Json>([2, 1, 1e9]) } } } : {}),
    };
    const vms = Array.isArray(this.data['vms']) ? this.data['vms'] : (this.data['vms'] = []);
    vms.push(vm);
    this.log.push('vm');
  }

  private kernel(): void {
    const k = isObj(this.data['kernel']) ? this.data['kernel'] : (this.data['kernel'] = {});
    k[this.pick(KNOBS)] = this.pick(KNOB_VALUES);
    this.log.push('kernel knob');
  }

  private yaml(): void {
    const damage: [string, (t: string) => string][] = [
      ['truncate', (t) => t.slice(0, this.r.int(0, t.length))],
      ['unbalanced bracket', (t) => t.replace('{', '{ [')],
      ['tab indent', (t) => t.replace('\n  ', '\n\t')],
      ['stray colon', (t) => t.replace('\n', '\n: :\n')],
      ['second document', (t) => `${t}\n---\nname: two\n`],
      ['flip a character', (t) => this.flip(t)],
      [
        'delete a line',
        (t) =>
          t
            .split('\n')
            .filter((_, i, all) => i !== this.r.int(0, all.length - 1))
            .join('\n'),
      ],
      ['custom tag', (t) => t.replace(/^(\w+): /m, '$1: !custom ')],
      ['empty', () => ''],
      ['null document', () => '~\n'],
      ['a list document', (t) => `- ${t.split('\n')[0]}\n`],
      ['deep nesting', (t) => `${t}\nnotes: ${'['.repeat(5000)}${']'.repeat(5000)}\n`],
      ['nul byte', (t) => t.replace('name:', 'name:\u0000')],
    ];
    const [name, fn] = this.pick(damage);
    this.textOps.push(fn);
    this.log.push(`yaml: ${name}`);
  }

  private flip(t: string): string {
    if (!t.length) return t;
    const i = this.r.int(0, t.length - 1);
    return t.slice(0, i) + this.pick(['{', '}', '[', ']', ':', '-', '&', '*', '!', '|', '>', '"', "'", '#', ' ', '\n']) + t.slice(i + 1);
  }

  private alias(): void {
    const kinds: [string, (t: string) => string][] = [
      ['undefined alias', (t) => t.replace(/^(\w+): .*$/m, '$1: *nowhere')],
      ['alias bomb', (t) => `${bomb()}${t}`],
      ['cycle', (t) => `${t}\nnotes: &c [*c]\n`],
      ['self-referencing map', (t) => `${t}\npublished: &p { label: *p }\n`],
    ];
    // A value written once and aliased elsewhere (legal YAML).
    const p = this.somePath(true);
    if (p && this.chance(0.3)) {
      this.textOps.push((t) => t.replace(/^(duration): (.*)$/m, '$1: &d $2').replace(/^(\s+interval): .*$/m, '$1: *d'));
      this.log.push('alias a duration');
      return;
    }
    const [name, fn] = this.pick(kinds);
    this.textOps.push(fn);
    this.log.push(`alias: ${name}`);
  }
}

/** Nine levels of nine aliases: 9^9 values if expanded. */
function bomb(): string {
  let s = 'x-a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n';
  for (let i = 1; i < 9; i++) s += `x-a${i}: &a${i} [${Array.from({ length: 9 }, () => `*a${i - 1}`).join(', ')}]\n`;
  return s;
}
