/**
 * Loading a scenario: YAML, schema, sweep expansion, and the checks a
 * schema cannot express (names that must exist, CPUs and nodes of the host,
 * knobs the simulator models, what the kernel and QEMU would refuse at
 * setup, how many samples and runs), every error located in the file with
 * its field and what is allowed.
 */
import { basename } from 'node:path';
import { YamlSource, fieldName, quote, type YamlPath } from '../util/yaml_input.ts';
import { InputError } from '../util/input_error.ts';
import { LIMITS, formatDuration, scenarioSchema, type ProcessSpec, type Scenario, type VmSpec } from './schema.ts';
import { hostFromFile, resolveHost, shippedHosts, type Host } from '../sim/host.ts';
import { Kernel } from '../kernel/kernel.ts';
import { CostProfile } from '../sim/cost_profile.ts';
import { MAP, MPOL, PAGE_SIZE, errnoName } from '../kernel/uapi.ts';
import { flags as flagValue } from '../opscript/values.ts';
import { sysMbind, sysSetMempolicy } from '../kernel/mempolicy.ts';
import { Vm } from '../vmm/vm.ts';
import { QemuError } from '../vmm/memory_backend.ts';
import { qemuErrorField, vmConfigOf } from './vms.ts';

export interface RunSpec {
  index: number;
  id: string;
  params: Record<string, unknown>;
  scenario: Scenario;
}

export interface LoadedScenario {
  file: string;
  base: Scenario;
  runs: RunSpec[];
  swept: { path: (string | number)[]; label: string; values: unknown[]; sets: { path: (string | number)[]; value: unknown }[][] }[];
  /** The parsed file, to locate errors found later (see locateRunError). */
  source: YamlSource;
}

const clone = <T>(x: T): T => structuredClone(x);

/** Keys a sweep path may not name: they reach the object prototype, not the scenario. */
const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

/**
 * Set a value deep in plain data, creating missing maps and lists. `bad(i,
 * msg)` reports a path element `i` that cannot be followed: a name into a
 * list, or a list index past its end (an index may append one entry).
 */
function setPath(obj: unknown, path: (string | number)[], value: unknown, bad: (i: number, msg: string) => never): void {
  let cur = obj as Record<string | number, unknown>;
  for (let i = 0; i < path.length; i++) {
    const k = path[i]!;
    if (Array.isArray(cur)) {
      if (typeof k !== 'number') bad(i, `${quote(k)} names a field, but this is a list: expected an index from 0 to ${cur.length}`);
      if (k > cur.length)
        bad(i, `index ${k} is past the end of the list (${cur.length} entries): expected an index from 0 to ${cur.length}`);
    }
    if (i === path.length - 1) break;
    const next = Object.prototype.hasOwnProperty.call(cur, k) ? cur[k] : undefined;
    if (next === undefined || next === null || typeof next !== 'object') cur[k] = typeof path[i + 1] === 'number' ? [] : {};
    cur = cur[k] as Record<string | number, unknown>;
  }
  const last = path[path.length - 1]!;
  // null removes the field (no scenario field takes null): a configuration can unset what the base sets,
  // such as a thread's cpus where it pins the thread with cpu instead.
  if (value === null && !Array.isArray(cur)) delete cur[last];
  else cur[last] = value;
}

/** Whether a value set at `set` contains the place `p`. */
function covers(set: (string | number)[], p: YamlPath): boolean {
  return set.length <= p.length && set.every((x, i) => String(x) === String(p[i]));
}

function slug(v: unknown): string {
  return String(typeof v === 'object' ? JSON.stringify(v) : v)
    .replace(/^\/sys\/kernel\/mm\/transparent_hugepage\//, 'thp-')
    .replace(/[^A-Za-z0-9._+-]+/g, '-')
    .replace(/^-|-$/g, '')
    .slice(0, 40);
}

export interface LoadOptions {
  /** Run the scenario's reduced form: its `smoke` values are set over every run, after the sweep's. */
  smoke?: boolean;
  /** Record memory maps for `memtwin view` in every run (`sample.snapshots: true`). */
  snapshots?: boolean;
}

export function loadScenario(file: string, text?: string, opts: LoadOptions = {}): LoadedScenario {
  const src = YamlSource.read(file, text);
  let base = src.validate(scenarioSchema);
  check(src, base, (p) => p);
  const data = clone(src.data) as Record<string, unknown>;
  delete data.smoke;
  // The reduced form: each smoke value is set last, over the sweep's values; a bad one is reported at its entry.
  const smoke = opts.smoke ? (base.smoke ?? []) : [];
  const smokeWhere = (p: YamlPath): YamlPath => {
    for (let k = smoke.length - 1; k >= 0; k--) if (covers(smoke[k]!.path, p)) return ['smoke', k];
    return p;
  };
  // A smoke path element that cannot be followed is reported at that element. A smoke value inside `sweep`
  // reduces a sweep value or configuration: it is set once, in the scenario before the sweep is expanded.
  const setSmoke = (into: unknown, inRun = false): void =>
    smoke.forEach((set, k) => {
      if (inRun && set.path[0] === 'sweep') return;
      set.path.forEach((x, i) => {
        if (typeof x === 'string' && FORBIDDEN_KEYS.has(x)) throw src.error(['smoke', k, 'path', i], `${quote(x)} is not a scenario field`);
      });
      setPath(into, set.path, set.value, (i, msg) => {
        throw src.error(['smoke', k, 'path', i], msg);
      });
    });
  if (smoke.length) {
    const reduced = clone(data);
    setSmoke(reduced);
    base = src.validate(scenarioSchema, reduced, smokeWhere);
    check(src, base, smokeWhere);
  }
  // A sweep dimension: its label, its values (shown in reports), and how each value is applied.
  const swept = (base.sweep ?? []).map((s) =>
    'configs' in s
      ? { path: ['(configs)'], label: s.label, values: s.configs.map((c) => c.name), sets: s.configs.map((c) => c.set) }
      : {
          path: s.path,
          label: s.label ?? String(s.path[s.path.length - 1]),
          values: s.values,
          sets: s.values.map((v) => [{ path: s.path, value: v }]),
        },
  );
  checkSweep(src, base, swept);
  const runs: RunSpec[] = [];
  if (!swept.length) runs.push({ index: 0, id: 'base', params: {}, scenario: base });
  else {
    // Cartesian product, first sweep entry varying slowest.
    const combos: number[][] = [[]];
    for (const s of swept) {
      const next: number[][] = [];
      for (const c of combos) for (let v = 0; v < s.values.length; v++) next.push([...c, v]);
      combos.splice(0, combos.length, ...next);
    }
    combos.forEach((combo, index) => {
      const raw = clone(data);
      delete raw.sweep;
      const params: Record<string, unknown> = {};
      combo.forEach((v, j) => {
        swept[j]!.sets[v]!.forEach((set, si) =>
          setPath(raw, set.path, set.value, (i, msg) => {
            throw src.error(setPathAt(base, j, v, si, i), msg);
          }),
        );
        params[swept[j]!.label] = swept[j]!.values[v];
      });
      setSmoke(raw, true);
      // A bad value is reported where it was set: a smoke entry, or the value (or configuration) in the sweep list.
      const where = (p: YamlPath): YamlPath => {
        const w = smokeWhere(p);
        if (w !== p) return w;
        for (let j = 0; j < swept.length; j++)
          for (const set of swept[j]!.sets[combo[j]!]!)
            if (covers(set.path, p))
              return swept[j]!.path[0] === '(configs)' ? ['sweep', j, 'configs', combo[j]!] : ['sweep', j, 'values', combo[j]!];
        return p;
      };
      const id = `${String(index).padStart(3, '0')}-${combo.map((v, j) => `${slug(swept[j]!.label)}=${slug(swept[j]!.values[v])}`).join(',')}`;
      try {
        const scenario = src.validate(scenarioSchema, raw, where);
        check(src, scenario, where);
        runs.push({ index, id, params, scenario });
      } catch (e) {
        // Name the run: the value at fault may be this combination, not the place the error points at.
        if (e instanceof InputError) throw new InputError(e.file, e.line, e.column, e.field, `${e.expected} (in sweep run ${id})`);
        throw e;
      }
    });
  }
  if (opts.snapshots) for (const r of runs) r.scenario = { ...r.scenario, sample: { ...r.scenario.sample, snapshots: true } };
  return { file, base, runs, swept, source: src };
}

/** Where a sweep set's path element is in the file. */
function setPathAt(base: Scenario, dim: number, value: number, set: number, elem: number): YamlPath {
  const s = base.sweep![dim]!;
  return 'configs' in s ? ['sweep', dim, 'configs', value, 'set', set, 'path', elem] : ['sweep', dim, 'path', elem];
}

/** A sweep's size and paths: at most LIMITS.maxRuns runs, and paths that stay inside the scenario. */
function checkSweep(src: YamlSource, base: Scenario, swept: LoadedScenario['swept']): void {
  let runs = 1;
  for (const s of swept) runs *= s.values.length;
  if (runs > LIMITS.maxRuns)
    throw src.error(
      ['sweep'],
      `the sweep makes ${runs} runs (${swept.map((s) => s.values.length).join(' x ')}): expected at most ${LIMITS.maxRuns} runs; split it into several scenarios`,
    );
  swept.forEach((s, j) =>
    s.sets.forEach((sets, v) =>
      sets.forEach((set, si) =>
        set.path.forEach((k, i) => {
          const at = setPathAt(base, j, v, si, i);
          if (typeof k === 'string' && FORBIDDEN_KEYS.has(k)) throw src.error(at, `${quote(k)} is not a scenario field`);
          if (i === 0 && k === 'sweep')
            throw src.error(at, 'a sweep cannot set the sweep itself: expected a scenario field such as kernel');
        }),
      ),
    ),
  );
}

/** Allowed forms of `host`, for errors. */
function hostForms(): string {
  return `expected auto, a shipped host name (${shippedHosts().join(', ')}), a path to a host file, or an inline host {name, nodes, …}`;
}

/**
 * The scenario's host. `at` locates errors at the scenario's `host` field;
 * an error inside a host file keeps its own place and names the scenario.
 */
export function hostOf(s: Scenario, file: string, at?: (expected: string) => InputError): Host {
  if (typeof s.host !== 'string') return hostFromFile(s.host);
  const located = at ?? ((expected: string) => new InputError(file, undefined, undefined, 'host', expected));
  try {
    return resolveHost(s.host);
  } catch (e) {
    if (e instanceof InputError && e.line !== undefined)
      throw new InputError(e.file, e.line, e.column, e.field, `${e.expected} (the host of ${file})`);
    const why = e instanceof InputError ? e.expected : (e as Error).message;
    throw located(`cannot load host ${quote(s.host)}: ${why}; ${hostForms()}`);
  }
}

/** The cost profile a run uses, its errors located at `profile`. */
function profileOf(src: YamlSource, s: Scenario, where: (p: YamlPath) => YamlPath): CostProfile {
  if (!s.profile) return CostProfile.default();
  try {
    return CostProfile.load(s.profile);
  } catch (e) {
    throw src.error(where(['profile']), `${(e as Error).message.split('\n')[0]}; expected a cost profile written by memtwin calibrate`);
  }
}

type Where = (p: YamlPath) => YamlPath;

/** Checks beyond the schema, located through `where`. */
function check(src: YamlSource, s: Scenario, where: Where): void {
  const host = hostOf(s, src.file, (msg) => src.error(where(['host']), msg));
  const costs = profileOf(src, s, where);
  // A sweep run whose host, knobs, mappings, policies and VMs an earlier run already tried on a probe kernel is not tried again.
  const key = JSON.stringify([
    s.host,
    s.kernel,
    s.profile ?? null,
    s.processes.map((p) => [p.name, firstCpu(p) ?? null, p.mappings, p.threads.map((t) => t.mempolicy ?? null)]),
    s.vms.map(vmShape),
  ]);
  const tried = probeCache(src);
  const known = tried.get(key);
  const probe = known ? undefined : new Kernel({ host, costs });
  const err = (p: YamlPath, msg: string, atKey = false): InputError => src.error(where(p), msg, atKey);
  checkBudget(s, err);
  if (probe) writeKnobs(probe, s.kernel, 'the kernel', (knob, msg, atKey) => err(['kernel', knob], msg, atKey));
  const hostCpu = (c: number, at: YamlPath, h: Host = host): void => {
    if (!h.cpuNode.has(c)) throw err(at, `CPU ${c} does not exist on host ${quote(h.name)}: expected one of its CPUs ${cpuRanges(h)}`);
  };
  const hostNode = (n: number, at: YamlPath, h: Host = host): void => {
    if (!h.nodes.some((x) => x.id === n))
      throw err(at, `node ${n} does not exist on host ${quote(h.name)}: expected a node from 0 to ${h.nodes.length - 1}`);
  };
  const policyNodes = (pol: { nodes: number[]; flags: string[] } | undefined, at: YamlPath): void => {
    // With MPOL_F_STATIC_NODES or MPOL_F_RELATIVE_NODES, node numbers may name nodes the host does not have (mempolicy.c).
    if (!pol || pol.flags.some((f) => f === 'MPOL_F_STATIC_NODES' || f === 'MPOL_F_RELATIVE_NODES')) return;
    pol.nodes.forEach((n, i) => hostNode(n, [...at, 'nodes', i]));
  };
  const names = new Set<string>();
  /** Process (and VM) name -> mapping names and thread names, for events. */
  const procs = new Map<string, { maps: Map<string, number>; threads: Set<string> }>();
  s.processes.forEach((p, pi) => {
    const at = (...q: (string | number)[]): YamlPath => ['processes', pi, ...q];
    if (names.has(p.name)) throw err(at('name'), `process name ${quote(p.name)} is used twice: expected a name of its own`);
    names.add(p.name);
    const maps = new Map<string, number>();
    const proc = probe?.createProcess(p.name, firstCpu(p) ?? host.nodes[0]!.cpus[0] ?? 0);
    p.mappings.forEach((m, mi) => {
      if (maps.has(m.name))
        throw err(
          at('mappings', mi, 'name'),
          `mapping name ${quote(m.name)} is used twice in process ${quote(p.name)}: expected a name of its own`,
        );
      maps.set(m.name, m.size);
      policyNodes(m.policy, at('mappings', mi, 'policy'));
      if (probe && proc) probeMapping(probe, proc, m, (q, msg) => err(at('mappings', mi, ...q), msg));
    });
    const threads = new Set<string>();
    const bases = new Set<string>();
    p.threads.forEach((t, ti) => {
      if (bases.has(t.name)) throw err(at('threads', ti, 'name'), `thread name ${quote(t.name)} is used twice: expected a name of its own`);
      bases.add(t.name);
      // As results name them: the name, or name-0.. for replicas.
      if (t.count === 1) threads.add(t.name);
      else for (let r = 0; r < t.count; r++) threads.add(`${t.name}-${r}`);
      if ((t.cpu === undefined) === (t.cpus === undefined))
        throw err(
          at('threads', ti),
          `thread ${quote(t.name)}: expected either cpu (pinned to one CPU) or cpus (a set the scheduler places it on)`,
        );
      if (t.cpu !== undefined)
        for (let c = t.cpu; c < t.cpu + t.count; c++) hostCpu(c, at('threads', ti, t.count > 1 && c > t.cpu ? 'count' : 'cpu'));
      else t.cpus!.forEach((c, ci) => hostCpu(c, at('threads', ti, 'cpus', ci)));
      policyNodes(t.mempolicy, at('threads', ti, 'mempolicy'));
      if (t.mempolicy && probe && proc) {
        const mode = t.mempolicy.flags.reduce<number>((x, f) => x | MPOL[f], MPOL[t.mempolicy.mode]);
        const r = sysSetMempolicy(probe, proc.mainThread, mode, t.mempolicy.nodes);
        if (r < 0)
          throw err(
            at('threads', ti, 'mempolicy'),
            `set_mempolicy(${t.mempolicy.mode}, nodes [${t.mempolicy.nodes.join(',')}]) fails with ${errnoName(r)}: expected a mode, nodes and flags set_mempolicy accepts`,
          );
      }
      checkWorkload(t.workload, at('threads', ti, 'workload'), (ph) => maps.get(ph), `in process ${quote(p.name)}`, [...maps.keys()], err);
    });
    procs.set(p.name, { maps, threads });
  });
  const vmSizes = checkVms(src, s, where, host, names, procs, probe ?? known!, hostCpu, hostNode);
  checkEvents(s, procs, hostCpu, hostNode, policyNodes, err);
  checkNetwork(s, host, err);
  s.agents.forEach((a, ai) =>
    a.targets.forEach((t, ti) => {
      if (procs.has(t)) return;
      const at = ['agents', ai, 'targets', ti];
      // `<vm>-dst`: the destination VMM a VM's migration starts.
      const vm = s.vms.find((v) => `${v.name}-dst` === t);
      if (!vm)
        throw err(
          at,
          `no process ${quote(t)}: expected one of ${listNames([...procs.keys(), ...s.vms.map((v) => `${v.name}-dst`)])} (VM-dst: a VM's migration destination)`,
        );
      if (!s.evacuate && !vm.events.some((e) => e.op === 'migrate'))
        throw err(at, `VM ${quote(vm.name)} has no migrate event: its destination VMM ${quote(t)} never starts`);
      if (a.targets.length > 1) throw err(at, `an agent on a destination VMM runs on that VMM's host: ${quote(t)} must be its only target`);
    }),
  );
  tried.set(key, vmSizes);
}

/**
 * The network: host names unique and known where flows and evacuations
 * name them, a NIC for the scenario's host when anything crosses the
 * network, VMs to move.
 */
function checkNetwork(s: Scenario, host: Host, err: (p: YamlPath, msg: string) => InputError): void {
  const hosts = s.hosts ?? [];
  const traffic = s.traffic ?? [];
  const uses = hosts.length ? 'hosts' : traffic.length ? 'traffic' : s.evacuate ? 'evacuate' : s.fabric ? 'fabric' : undefined;
  if (!uses) return;
  if (!s.nic) throw err([uses], `needs the scenario host's NIC: expected nic: { bandwidth: 10Gbit/s, latency: 25us } beside it`);
  if (!s.vms.length) throw err([uses], 'the network is for migrations and the traffic beside them: expected at least one VM in `vms`');
  const names = [host.name];
  hosts.forEach((h, i) => {
    if (names.includes(h.name))
      throw err(
        ['hosts', i, 'name'],
        `host name ${quote(h.name)} is used twice (the scenario's host is ${quote(host.name)}): expected a name of its own`,
      );
    names.push(h.name);
  });
  const known = (n: string, at: YamlPath): void => {
    if (!names.includes(n)) throw err(at, `no host ${quote(n)}: expected the scenario's host or one of \`hosts\`: ${listNames(names)}`);
  };
  traffic.forEach((t, i) => {
    known(t.from, ['traffic', i, 'from']);
    known(t.to, ['traffic', i, 'to']);
    if (t.from === t.to) throw err(['traffic', i, 'to'], `${quote(t.to)} is the sending host: expected another host`);
    if (t.stop !== undefined && t.stop <= t.start) throw err(['traffic', i, 'stop'], 'expected a time after start');
  });
  const e = s.evacuate;
  if (!e) return;
  if (!hosts.some((h) => h.name === e.to))
    throw err(
      ['evacuate', 'to'],
      `no host ${quote(e.to)} in \`hosts\`: expected one of ${listNames(hosts.map((h) => h.name)) || '(none: add hosts:)'}`,
    );
  const vmNames = s.vms.map((v) => v.name);
  (e.vms ?? []).forEach((n, i) => {
    if (!vmNames.includes(n)) throw err(['evacuate', 'vms', i], `no VM ${quote(n)}: expected one of ${listNames(vmNames)}`);
    if (e.vms!.indexOf(n) !== i) throw err(['evacuate', 'vms', i], `VM ${quote(n)} is listed twice: expected each VM once`);
  });
  if (e.migrate['start-postcopy'] !== undefined && !e.migrate.capabilities.includes('postcopy-ram'))
    throw err(['evacuate', 'migrate', 'start-postcopy'], 'start-postcopy needs postcopy-ram: expected capabilities: [postcopy-ram, …]');
}

/** How much a run may do: samples and agent ticks. */
function checkBudget(s: Scenario, err: (p: YamlPath, msg: string) => InputError): void {
  const samples = Math.floor(s.duration / s.sample.interval);
  if (samples > LIMITS.maxSamples)
    throw err(
      ['sample', 'interval'],
      `${formatDuration(s.sample.interval)} gives ${samples} samples over the duration ${formatDuration(s.duration)}: ` +
        `expected at most ${LIMITS.maxSamples} samples, an interval of at least ${formatDuration(Math.ceil(s.duration / LIMITS.maxSamples))}`,
    );
  s.agents.forEach((a, ai) => {
    const ticks = Math.floor(Math.max(0, s.duration - a.start) / a.interval);
    if (ticks > LIMITS.maxAgentTicks)
      throw err(
        ['agents', ai, 'interval'],
        `${formatDuration(a.interval)} gives ${ticks} ticks: expected at most ${LIMITS.maxAgentTicks} ticks in a run, ` +
          `an interval of at least ${formatDuration(Math.ceil(s.duration / LIMITS.maxAgentTicks))}`,
      );
  });
}

type Phase = { pattern: string; mapping: string; to?: string | undefined; offset?: number | undefined; length?: number | undefined };

/** A workload's phases: their mapping (and a copy's `to`) exists, the region starts inside it, a zipf region is not too large. */
function checkWorkload(
  w: Phase | { phases: Phase[] },
  at: YamlPath,
  sizeOf: (mapping: string) => number | undefined,
  inWhat: string,
  have: string[],
  err: (p: YamlPath, msg: string) => InputError,
): void {
  const phases = 'phases' in w ? w.phases : [w];
  phases.forEach((ph, phi) => {
    const pat = 'phases' in w ? [...at, 'phases', phi] : at;
    const size = sizeOf(ph.mapping);
    if (size === undefined) throw err([...pat, 'mapping'], `no mapping ${quote(ph.mapping)} ${inWhat}: expected one of ${listNames(have)}`);
    if (ph.pattern === 'copy') {
      if (ph.to === undefined) throw err(pat, 'a copy writes another mapping: expected `to`, the mapping it writes');
      if (sizeOf(ph.to) === undefined)
        throw err([...pat, 'to'], `no mapping ${quote(ph.to)} ${inWhat}: expected one of ${listNames(have)}`);
      if (ph.to === ph.mapping) throw err([...pat, 'to'], `a copy of ${quote(ph.mapping)} onto itself: expected another mapping`);
    } else if (ph.to !== undefined) throw err([...pat, 'to'], '`to` is for the copy pattern: expected no `to` here');
    const off = ph.offset ?? 0;
    if (off >= size) throw err([...pat, 'offset'], `offset ${off} is not inside the mapping (${size} bytes): expected 0 to ${size - 1}`);
    const len = Math.min(ph.length ?? size - off, size - off);
    const toSize = ph.pattern === 'copy' ? sizeOf(ph.to!)! : Infinity;
    if (toSize < off + len)
      throw err(
        [...pat, 'to'],
        `${quote(ph.to)} is ${toSize} bytes, smaller than the region copied (offset + length = ${off + len} bytes): expected a mapping of at least ${off + len} bytes`,
      );
    // patterns.ts's Zipf ranks pages below 2^26.
    if (ph.pattern === 'zipf' && len / PAGE_SIZE >= 2 ** 26)
      throw err([...pat, ph.length !== undefined ? 'length' : 'mapping'], `a zipf region of ${len} bytes: expected at most 256G`);
  });
}

/** mmap and mbind of a mapping on the probe kernel (no population): what the kernel would refuse at setup. */
function probeMapping(
  k: Kernel,
  p: ReturnType<Kernel['createProcess']>,
  m: Scenario['processes'][number]['mappings'][number],
  err: (q: YamlPath, msg: string) => InputError,
): void {
  const prot = flagValue('prot', m.prot, 'prot');
  const fl = flagValue('flags', m.flags, 'mmap') & ~MAP.MAP_POPULATE;
  const addr = k.mmap(p, 0, m.size, prot, fl);
  if (addr < 0)
    throw err(
      ['size'],
      `mmap of ${m.size} bytes with flags ${m.flags.join('|')} fails with ${errnoName(addr)}: expected a size and flags the kernel maps on this host (without MAP_NORESERVE, at most about its memory)`,
    );
  if (m.policy) {
    const mode = m.policy.flags.reduce<number>((x, f) => x | MPOL[f], MPOL[m.policy.mode]);
    const r = sysMbind(k, p.mainThread, addr, m.size, mode, m.policy.nodes, 0);
    if (r < 0)
      throw err(
        ['policy'],
        `mbind(${m.policy.mode}, nodes [${m.policy.nodes.join(',')}]) fails with ${errnoName(r)}: expected a mode, nodes and flags mbind accepts`,
      );
  }
}

/** Host events: their process, mapping, thread, CPU and nodes exist, and each op has what it needs. */
function checkEvents(
  s: Scenario,
  procs: Map<string, { maps: Map<string, number>; threads: Set<string> }>,
  hostCpu: (c: number, at: YamlPath) => void,
  hostNode: (n: number, at: YamlPath) => void,
  policyNodes: (pol: { nodes: number[]; flags: string[] } | undefined, at: YamlPath) => void,
  err: (p: YamlPath, msg: string) => InputError,
): void {
  s.events.forEach((ev, ei) => {
    const at = (...q: (string | number)[]): YamlPath => ['events', ei, ...q];
    const need = (field: keyof typeof ev, what: string): void => {
      if (ev[field] === undefined) throw err(at(), `${ev.op} needs ${String(field)}: expected ${what}`);
    };
    const target = procs.get(ev.process);
    if (!target) throw err(at('process'), `no process ${quote(ev.process)}: expected one of ${listNames([...procs.keys()])}`);
    if (ev.mapping !== undefined && !target.maps.has(ev.mapping))
      throw err(
        at('mapping'),
        `no mapping ${quote(ev.mapping)} in ${quote(ev.process)}: expected one of ${listNames([...target.maps.keys()])}`,
      );
    if (ev.cpu !== undefined) hostCpu(ev.cpu, at('cpu'));
    if (ev.node !== undefined) hostNode(ev.node, at('node'));
    ev.old_nodes?.forEach((n, i) => hostNode(n, at('old_nodes', i)));
    ev.new_nodes?.forEach((n, i) => hostNode(n, at('new_nodes', i)));
    policyNodes(ev.policy, at('policy'));
    switch (ev.op) {
      case 'migrate_pages':
        need('old_nodes', 'a list of host nodes');
        need('new_nodes', 'a list of host nodes');
        break;
      case 'mbind':
        need('mapping', 'the mapping it applies to');
        break;
      case 'madvise':
        need('mapping', 'the mapping it applies to');
        need('advice', 'an MADV_* name');
        break;
      case 'sched_setaffinity':
        need('thread', 'a thread of the process, by its name in the results');
        need('cpu', 'a CPU of the host');
        if (!target.threads.has(ev.thread!))
          throw err(
            at('thread'),
            `no thread ${quote(ev.thread)} in ${quote(ev.process)}: expected one of ${listNames([...target.threads])}`,
          );
        break;
      case 'ms_move':
        need('group', 'a memsched group');
        need('node', 'a node of the host');
        break;
    }
  });
}

/** The `vms` section: names, host CPUs, memdev references, guest nodes, event arguments, what QEMU refuses. */
function checkVms(
  src: YamlSource,
  s: Scenario,
  where: Where,
  host: Host,
  names: Set<string>,
  procs: Map<string, { maps: Map<string, number>; threads: Set<string> }>,
  probe: Kernel | number[][],
  hostCpu: (c: number, at: YamlPath, h?: Host) => void,
  hostNode: (n: number, at: YamlPath, h?: Host) => void,
): number[][] {
  const err = (p: YamlPath, msg: string): InputError => src.error(where(p), msg);
  const vmSizes: number[][] = [];
  if (!s.processes.length && !s.vms.length)
    throw err(['processes'], 'a scenario needs at least one process or VM: expected processes: [{name, mappings, …}] or vms: [{name, …}]');
  s.vms.forEach((vm, vi) => {
    const at = (...p: (string | number)[]): YamlPath => ['vms', vi, ...p];
    if (names.has(vm.name)) throw err(at('name'), `name ${quote(vm.name)} is already used by a process or VM: expected a name of its own`);
    names.add(vm.name);
    vm.vcpus.forEach((c, i) => hostCpu(c, at('vcpus', i)));
    if (vm.emulator_cpu !== undefined) hostCpu(vm.emulator_cpu, at('emulator_cpu'));
    const ids = new Set<string>();
    vm.memdevs.forEach((m, mi) => {
      if (ids.has(m.id))
        throw err(at('memdevs', mi, 'id'), `memdev id ${quote(m.id)} is used twice in VM ${quote(vm.name)}: expected an id of its own`);
      ids.add(m.id);
      m['host-nodes']?.forEach((n, hi) => hostNode(n, at('memdevs', mi, 'host-nodes', hi)));
    });
    if (!vm.memdevs.length && vm.memory === undefined)
      throw err(at(), `VM ${quote(vm.name)} needs memdevs or memory: expected memory: 2G or memdevs: [{id, size, …}]`);
    vm.numa.forEach((n, ni) => {
      if (!ids.has(n.memdev))
        throw err(at('numa', ni, 'memdev'), `no memdev ${quote(n.memdev)} in VM ${quote(vm.name)}: expected one of ${listNames([...ids])}`);
      n.cpus.forEach((c, ci) => {
        if (c >= vm.vcpus.length) throw err(at('numa', ni, 'cpus', ci), `vCPU ${c} does not exist: expected 0 to ${vm.vcpus.length - 1}`);
      });
    });
    // The sizes an earlier run's probe found (same VMs), or this probe's.
    const sizes = Array.isArray(probe) ? probe[vi]! : probeVm(probe, vm, (msg, field) => err(at(...field), msg));
    vmSizes.push(sizes);
    const ramOf = (g: number): number => sizes[g] ?? 0;
    const guestNodes = Math.max(1, vm.numa.length);
    const vcpu = (c: number, p: YamlPath): void => {
      if (c >= vm.vcpus.length)
        throw err(p, `vCPU ${c} does not exist: expected 0 to ${vm.vcpus.length - 1} (the VM has ${vm.vcpus.length})`);
    };
    const guestNode = (g: number, p: YamlPath): void => {
      if (g >= guestNodes) throw err(p, `guest node ${g} does not exist: expected 0 to ${guestNodes - 1} (the VM has ${guestNodes})`);
    };
    if (vm.guest.fragment) {
      vcpu(vm.guest.fragment.vcpu, at('guest', 'fragment', 'vcpu'));
      const ram = sizes.reduce((a, b) => a + b, 0);
      if (vm.guest.fragment.size >= ram)
        throw err(
          at('guest', 'fragment', 'size'),
          `${vm.guest.fragment.size} bytes: expected less than the guest's RAM (${ram} bytes), which its kernel and drivers need some of`,
        );
    }
    const wnames = new Set<string>();
    const threads = new Set<string>();
    vm.workloads.forEach((w, wi) => {
      if (wnames.has(w.name))
        throw err(at('workloads', wi, 'name'), `workload name ${quote(w.name)} is used twice: expected a name of its own`);
      wnames.add(w.name);
      if (w.count === 1) threads.add(w.name);
      else for (let r = 0; r < w.count; r++) threads.add(`${w.name}-${r}`);
      vcpu(w.vcpu, at('workloads', wi, 'vcpu'));
      vcpu(w.vcpu + w.count - 1, at('workloads', wi, 'count'));
      guestNode(w.guest_node, at('workloads', wi, 'guest_node'));
      checkWorkload(
        w.workload,
        at('workloads', wi, 'workload'),
        (m) => (m === 'ram' ? ramOf(w.guest_node) : undefined),
        '(a guest workload accesses its guest node\'s RAM: mapping must be "ram")',
        ['ram'],
        err,
      );
    });
    // Host events may act on the VMM process: its guest nodes' RAM is mapping ram.N.
    procs.set(vm.name, { maps: new Map(Array.from({ length: guestNodes }, (_, g) => [`ram.${g}`, ramOf(g)])), threads });
    const b = vm.balloon;
    if (b && b['hint-encoding'] === 'bitmap' && b['hint-batch'] % 64)
      throw err(at('balloon', 'hint-batch'), `a bitmap hint batch of ${b['hint-batch']} bits: expected a multiple of 64`);
    checkVmEvents(src, s, where, vm, vi, host, hostCpu, hostNode, vcpu, guestNode);
  });
  return vmSizes;
}

/**
 * The VM started on the probe kernel as QEMU would start it, without
 * preallocation: QEMU's refusals (sizes, memdevs, NUMA, CPUs) become errors
 * at the VM. Returns each guest node's RAM size.
 */
/** Per file: the probe inputs (host, knobs, mappings, VMs) a run passed with, and the guest node RAM sizes found. */
const PROBES = new WeakMap<YamlSource, Map<string, number[][]>>();

function probeCache(src: YamlSource): Map<string, number[][]> {
  let m = PROBES.get(src);
  if (!m) PROBES.set(src, (m = new Map()));
  return m;
}

/** What of a VM its start depends on (not its events, workloads, balloon or guest). */
function vmShape(vm: VmSpec): unknown {
  const { events: _e, workloads: _w, balloon: _b, guest: _g, ...shape } = vm;
  return shape;
}

/** Start a VM on the probe kernel (without preallocation); QEMU's refusal is reported at the memdev it names, else the VM. */
function probeVm(probe: Kernel, vm: VmSpec, err: (msg: string, field: YamlPath) => InputError): number[] {
  const spec: VmSpec = { ...vm, memdevs: vm.memdevs.map((m) => ({ ...m, prealloc: false })) };
  let v: Vm;
  try {
    v = new Vm(probe, { ...vmConfigOf(spec), name: `${vm.name}-probe` });
  } catch (e) {
    if (e instanceof QemuError) {
      const field = qemuErrorField(vm, e);
      throw err(field.length ? `qemu-system-x86_64: ${e.message}` : `qemu-system-x86_64 refuses this VM: ${e.message}`, field);
    }
    // A cost profile without the VM entries (kvm_ept_violation, ...): the VM cannot be timed.
    if (e instanceof Error && /cost profile/.test(e.message))
      throw err(
        `${e.message.split('\n')[0]!.replace(/\.$/, '')}; expected a profile with the VM costs (profiles/default.json has them)`,
        [],
      );
    throw e;
  }
  return vm.numa.length ? v.numaNodes.map((n) => n.size) : [v.ramSize];
}

function checkVmEvents(
  src: YamlSource,
  s: Scenario,
  where: Where,
  vm: VmSpec,
  vi: number,
  host: Host,
  hostCpu: (c: number, at: YamlPath, h?: Host) => void,
  hostNode: (n: number, at: YamlPath, h?: Host) => void,
  vcpu: (c: number, p: YamlPath) => void,
  guestNode: (g: number, p: YamlPath) => void,
): void {
  const err = (p: YamlPath, msg: string): InputError => src.error(where(p), msg);
  const b = vm.balloon;
  // Events run in time order (list order at equal times): a migration_fault needs a migrate before it.
  const order = vm.events.map((ev, ei) => ({ ev, ei })).sort((x, y) => x.ev.at - y.ev.at || x.ei - y.ei);
  let migrateAt: number | undefined;
  for (const { ev, ei } of order) {
    const at = (...p: (string | number)[]): YamlPath => ['vms', vi, 'events', ei, ...p];
    const need = (field: keyof typeof ev, what: string): void => {
      if (ev[field] === undefined) throw err(at(), `${ev.op} needs ${String(field)}: expected ${what}`);
    };
    ev.nodes?.forEach((n, i) => hostNode(n, at('nodes', i)));
    ev.old_nodes?.forEach((n, i) => hostNode(n, at('old_nodes', i)));
    ev.new_nodes?.forEach((n, i) => hostNode(n, at('new_nodes', i)));
    switch (ev.op) {
      case 'balloon':
        if (!b) throw err(at('op'), `VM ${quote(vm.name)} has no balloon device: expected balloon: {} in the VM`);
        need('target', 'the guest RAM wanted, a size');
        break;
      case 'free_page_hint':
        if (!b?.['free-page-hint'])
          throw err(at('op'), `VM ${quote(vm.name)} has no balloon with free-page-hint: expected balloon: {free-page-hint: true}`);
        need('action', 'start, stop or done');
        break;
      case 'guest_alloc':
      case 'guest_free':
        need('size', 'a size in bytes');
        vcpu(ev.vcpu, at('vcpu'));
        break;
      case 'qmp':
        need('command', '{execute, arguments} or its JSON text');
        break;
      case 'hmp':
        need('command', 'a command line such as "info ram"');
        if (typeof ev.command !== 'string') throw err(at('command'), `expected an HMP command line (a string), got ${quote(ev.command)}`);
        break;
      case 'migrate_pages':
        need('old_nodes', 'a list of host nodes');
        need('new_nodes', 'a list of host nodes');
        break;
      case 'move_pages':
      case 'mbind':
        need('guest_node', 'the guest node whose RAM is acted on');
        // MPOL_DEFAULT and MPOL_LOCAL take no nodes (an empty nodemask); every other mode and move_pages need them.
        if (ev.op === 'move_pages' || (ev.policy !== 'MPOL_DEFAULT' && ev.policy !== 'MPOL_LOCAL')) need('nodes', 'a list of host nodes');
        guestNode(ev.guest_node!, at('guest_node'));
        if (ev.op === 'move_pages' && !ev.nodes!.length)
          throw err(at('nodes'), 'expected the destination host node as the first entry, got an empty list');
        if (ev.op === 'mbind') need('policy', 'the MPOL_* mode');
        break;
      case 'migrate': {
        if (migrateAt !== undefined) throw err(at('op'), `VM ${quote(vm.name)} already migrates: expected one migrate event per VM`);
        migrateAt = ev.at;
        const toHost = typeof ev.destination?.host === 'string' && (s.hosts ?? []).some((h) => h.name === ev.destination!.host);
        if (toHost && ev.bandwidth !== undefined)
          throw err(at('bandwidth'), 'has no effect: the destination is a host of `hosts`, reached over the NICs (`nic`, hosts[].nic)');
        if (!toHost) need('bandwidth', 'the link bandwidth in bytes per second (e.g. 1250M), or destination: { host: NAME } of `hosts`');
        if ((s.evacuate?.vms ?? (s.evacuate ? s.vms.map((v) => v.name) : [])).includes(vm.name))
          throw err(at('op'), `VM ${quote(vm.name)} leaves with \`evacuate\`: expected no migrate event of its own`);
        if (ev['start-postcopy'] !== undefined && !ev.capabilities.includes('postcopy-ram'))
          throw err(at('start-postcopy'), 'start-postcopy needs postcopy-ram: expected capabilities: [postcopy-ram, …]');
        if (ev.destination) checkDestination(src, s, where, vm, ev.destination, at('destination'), host, hostCpu, hostNode);
        break;
      }
      case 'migration_fault':
        if (migrateAt === undefined)
          throw err(at('op'), 'a migration_fault needs a migrate event of this VM at the same time or before it');
        need('fault', 'one of link-stall, link-drop, source-loss');
        if (ev.fault === 'link-stall') need('duration', 'how long the link stalls, a duration');
        break;
    }
  }
}

/** A migration's destination: its host loads, its knobs are accepted, its vCPUs and memdevs match the source VM. */
function checkDestination(
  src: YamlSource,
  s: Scenario,
  where: Where,
  vm: VmSpec,
  d: NonNullable<VmSpec['events'][number]['destination']>,
  at: YamlPath,
  host: Host,
  hostCpu: (c: number, at: YamlPath, h?: Host) => void,
  hostNode: (n: number, at: YamlPath, h?: Host) => void,
): void {
  const err = (p: YamlPath, msg: string, atKey = false): InputError => src.error(where([...at, ...p]), msg, atKey);
  // A host of `hosts` by name: its machine (default the scenario's).
  const entry = typeof d.host === 'string' ? (s.hosts ?? []).find((h) => h.name === d.host) : undefined;
  const dh = entry
    ? entry.host === undefined
      ? host
      : hostOf({ ...s, host: entry.host }, src.file, (msg) => src.error(where(['hosts', s.hosts!.indexOf(entry), 'host']), msg))
    : d.host === undefined
      ? host
      : hostOf({ ...s, host: d.host }, src.file, (msg) => err(['host'], msg));
  const dk = new Kernel({ host: dh, costs: CostProfile.default() });
  // The scenario's knobs (checked already), then the destination's own, located there.
  writeKnobs(dk, s.kernel, 'the destination kernel', (knob, msg) => err([], `${quote(knob)}: ${msg}`));
  writeKnobs(dk, d.kernel, 'the destination kernel', (knob, msg, atKey) => err(['kernel', knob], msg, atKey));
  const vcpus = d.vcpus ?? vm.vcpus;
  if (d.vcpus && d.vcpus.length !== vm.vcpus.length)
    throw err(['vcpus'], `${d.vcpus.length} vCPUs: expected as many as the source VM has (${vm.vcpus.length})`);
  vcpus.forEach((c, i) => hostCpu(c, [...at, ...(d.vcpus ? ['vcpus', i] : ['host'])], dh));
  if (d.memdevs) {
    const mine = new Map(vm.memdevs.map((m) => [m.id, m.size]));
    if (d.memdevs.length !== mine.size)
      throw err(['memdevs'], `${d.memdevs.length} memdevs: expected the source VM's ${mine.size} (${listNames([...mine.keys()])})`);
    d.memdevs.forEach((m, mi) => {
      if (mine.get(m.id) !== m.size)
        throw err(['memdevs', mi], `memdev ${quote(m.id)} of ${m.size} bytes: expected the source's memdevs, same ids and sizes`);
      m['host-nodes']?.forEach((n, hi) => hostNode(n, [...at, 'memdevs', mi, 'host-nodes', hi], dh));
    });
  }
  if (dh !== host || d.memdevs) probeVm(dk, { ...vm, ...(d.memdevs ? { memdevs: d.memdevs } : {}), vcpus }, (msg) => err([], msg));
}

/**
 * An InputError a run raised without a line (run.ts and vms.ts name the
 * field as `processes.app.mappings.heap` or `vms[0].events[1].bandwidth`),
 * located in the scenario file when its field can be found there.
 */
export function locateRunError(l: LoadedScenario, e: InputError): InputError {
  if (e.line !== undefined || e.file !== l.file || !e.field) return e;
  const path: YamlPath = [];
  let list: unknown = l.source.data;
  for (const tok of e.field.replace(/ \(.*\)$/, '').match(/[^.[\]]+|\[\d+\]/g) ?? []) {
    const m = /^\[(\d+)\]$/.exec(tok);
    let key: string | number = m ? Number(m[1]) : tok;
    // A name where the file has a list: the index of the entry of that name (a thread replica's base name too).
    if (Array.isArray(list) && typeof key === 'string') {
      const name = key;
      const i = list.findIndex((x) => {
        const n = (x as { name?: unknown; id?: unknown } | null)?.name ?? (x as { id?: unknown } | null)?.id;
        return n === name || (typeof n === 'string' && new RegExp(`^${n.replace(/[^\w]/g, '\\$&')}-\\d+$`).test(name));
      });
      if (i < 0) break;
      key = i;
    }
    path.push(key);
    list = (list as Record<string | number, unknown> | null)?.[key];
    if (list === undefined) break;
  }
  const pos = l.source.position(path);
  return new InputError(e.file, pos.line, pos.col, path.length ? fieldName(path) : e.field, e.expected);
}

/** Write knobs on a probe kernel: an unknown knob or a value the kernel refuses is an error (at the key, or at the value). */
function writeKnobs(
  k: Kernel,
  knobs: Record<string, string | number>,
  who: string,
  err: (knob: string, msg: string, atKey?: boolean) => InputError,
): void {
  for (const [knob, value] of Object.entries(knobs)) {
    if (!k.sysfs.has(knob))
      throw err(knob, `unknown knob ${quote(knob)}: expected one of the knobs memtwin models: ${shortList(k.sysfs.paths())}`, true);
    const r = k.sysfs.write(knob, String(value));
    if (r < 0) throw err(knob, knobRefusal(k, knob, value, r, who));
  }
}

/** A knob write the kernel refused, with what the knob reads now (for a choice knob, the choices: "[always] madvise never"). */
function knobRefusal(k: Kernel, knob: string, value: unknown, r: number, who: string): string {
  const now = k.sysfs.read(knob)?.trim();
  return `${who} rejects ${quote(value)} for ${quote(knob)} (${errnoName(r)}): expected a value that knob accepts${now !== undefined ? ` (it reads ${quote(now)})` : ''}`;
}

function cpuRanges(h: Host): string {
  const cpus = [...h.cpuNode.keys()].sort((a, b) => a - b);
  const out: string[] = [];
  for (let i = 0; i < cpus.length;) {
    let j = i;
    while (j + 1 < cpus.length && cpus[j + 1] === cpus[j]! + 1) j++;
    out.push(i === j ? `${cpus[i]}` : `${cpus[i]}-${cpus[j]}`);
    i = j + 1;
  }
  return out.join(',');
}

function listNames(xs: string[]): string {
  if (!xs.length) return 'none (there are none)';
  const q = xs.map((x) => quote(x, 40));
  return q.length > 8 ? `${q.slice(0, 8).join(', ')}, … (${q.length} in all)` : q.join(', ');
}

function shortList(xs: string[]): string {
  return xs.length > 8 ? `${xs.slice(0, 8).join(', ')}, ... (${xs.length} knobs)` : xs.join(', ');
}

export function scenarioName(l: LoadedScenario): string {
  return l.base.name || basename(l.file).replace(/\.ya?ml$/, '');
}

/** The CPU a process's first thread starts on: its pinned CPU, or the first of its set. */
export function firstCpu(p: ProcessSpec): number | undefined {
  const t = p.threads[0];
  return t?.cpu ?? t?.cpus?.[0];
}
