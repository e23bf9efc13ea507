/**
 * Loading a scenario: YAML, schema, sweep expansion, and the checks a
 * schema cannot express (names that must exist, CPUs of the host, knobs
 * the simulator models), every error located in the file.
 */
import { basename } from 'node:path';
import { YamlSource, type YamlPath } from '../util/yaml_input.ts';
import { InputError } from '../util/input_error.ts';
import { scenarioSchema, type Scenario } from './schema.ts';
import { hostFromFile, resolveHost, type Host } from '../sim/host.ts';
import { Kernel } from '../kernel/kernel.ts';
import { CostProfile } from '../sim/cost_profile.ts';
import { errnoName } from '../kernel/uapi.ts';

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
}

const clone = <T>(x: T): T => structuredClone(x);

function setPath(obj: unknown, path: (string | number)[], value: unknown): void {
  let cur = obj as Record<string | number, unknown>;
  for (let i = 0; i < path.length - 1; i++) {
    const k = path[i]!;
    if (cur[k] === undefined || cur[k] === null || typeof cur[k] !== 'object') cur[k] = typeof path[i + 1] === 'number' ? [] : {};
    cur = cur[k] as Record<string | number, unknown>;
  }
  cur[path[path.length - 1]!] = value;
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
  if (smoke.length) {
    const reduced = clone(data);
    for (const set of smoke) setPath(reduced, set.path, set.value);
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
        for (const set of swept[j]!.sets[v]!) setPath(raw, set.path, set.value);
        params[swept[j]!.label] = swept[j]!.values[v];
      });
      for (const set of smoke) setPath(raw, set.path, set.value);
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
      const scenario = src.validate(scenarioSchema, raw, where);
      check(src, scenario, where);
      const id = `${String(index).padStart(3, '0')}-${combo.map((v, j) => `${slug(swept[j]!.label)}=${slug(swept[j]!.values[v])}`).join(',')}`;
      runs.push({ index, id, params, scenario });
    });
  }
  return { file, base, runs, swept };
}

export function hostOf(s: Scenario, file: string): Host {
  if (typeof s.host === 'string') {
    try {
      return resolveHost(s.host);
    } catch (e) {
      if (e instanceof InputError) throw e;
      throw new InputError(file, undefined, undefined, 'host', `cannot load host "${s.host}": ${(e as Error).message}`);
    }
  }
  return hostFromFile(s.host);
}

/** Checks beyond the schema, located through `where`. */
function check(src: YamlSource, s: Scenario, where: (p: YamlPath) => YamlPath): void {
  const host = hostOf(s, src.file);
  const probe = new Kernel({ host, costs: CostProfile.default() });
  for (const [knob, value] of Object.entries(s.kernel)) {
    if (!probe.sysfs.has(knob))
      throw src.error(where(['kernel', knob]), `unknown knob: memtwin models ${shortList(probe.sysfs.paths())}`, true);
    const r = probe.sysfs.write(knob, String(value));
    if (r < 0) throw src.error(where(['kernel', knob]), `the kernel rejects ${JSON.stringify(value)} for ${knob} (${errnoName(r)})`);
  }
  const names = new Set<string>();
  s.processes.forEach((p, pi) => {
    if (names.has(p.name)) throw src.error(where(['processes', pi, 'name']), `process name "${p.name}" is used twice`);
    names.add(p.name);
    const maps = new Set<string>();
    p.mappings.forEach((m, mi) => {
      if (maps.has(m.name))
        throw src.error(where(['processes', pi, 'mappings', mi, 'name']), `mapping name "${m.name}" is used twice in process ${p.name}`);
      maps.add(m.name);
    });
    const threads = new Set<string>();
    p.threads.forEach((t, ti) => {
      if (threads.has(t.name)) throw src.error(where(['processes', pi, 'threads', ti, 'name']), `thread name "${t.name}" is used twice`);
      threads.add(t.name);
      for (let c = t.cpu; c < t.cpu + t.count; c++)
        if (!host.cpuNode.has(c))
          throw src.error(
            where(['processes', pi, 'threads', ti, 'cpu']),
            `CPU ${c} does not exist on host ${host.name} (CPUs ${[...host.cpuNode.keys()].join(',')})`,
          );
      const phases = 'phases' in t.workload ? t.workload.phases : [t.workload];
      phases.forEach((ph, phi) => {
        const at: YamlPath =
          'phases' in t.workload
            ? ['processes', pi, 'threads', ti, 'workload', 'phases', phi, 'mapping']
            : ['processes', pi, 'threads', ti, 'workload', 'mapping'];
        if (!maps.has(ph.mapping))
          throw src.error(where(at), `no mapping "${ph.mapping}" in process ${p.name} (it has ${[...maps].join(', ')})`);
      });
    });
  });
  checkVms(src, s, where, host, names);
}

/** The `vms` section: names, host CPUs, memdev references, guest nodes, event arguments. */
function checkVms(src: YamlSource, s: Scenario, where: (p: YamlPath) => YamlPath, host: Host, names: Set<string>): void {
  if (!s.processes.length && !s.vms.length) throw src.error(where(['processes']), 'a scenario needs at least one process or VM');
  const cpuCheck = (c: number, at: YamlPath): void => {
    if (!host.cpuNode.has(c))
      throw src.error(where(at), `CPU ${c} does not exist on host ${host.name} (CPUs ${[...host.cpuNode.keys()].join(',')})`);
  };
  s.vms.forEach((vm, vi) => {
    const at = (...p: (string | number)[]): YamlPath => ['vms', vi, ...p];
    if (names.has(vm.name)) throw src.error(where(at('name')), `name "${vm.name}" is already used by a process or VM`);
    names.add(vm.name);
    vm.vcpus.forEach((c, i) => cpuCheck(c, at('vcpus', i)));
    if (vm.emulator_cpu !== undefined) cpuCheck(vm.emulator_cpu, at('emulator_cpu'));
    const ids = new Set<string>();
    vm.memdevs.forEach((m, mi) => {
      if (ids.has(m.id)) throw src.error(where(at('memdevs', mi, 'id')), `memdev id "${m.id}" is used twice in VM ${vm.name}`);
      ids.add(m.id);
      for (const [hi, n] of (m['host-nodes'] ?? []).entries())
        if (!host.nodes.some((x) => x.id === n))
          throw src.error(where(at('memdevs', mi, 'host-nodes', hi)), `host node ${n} does not exist on host ${host.name}`);
    });
    if (!vm.memdevs.length && vm.memory === undefined) throw src.error(where(at()), `VM ${vm.name} needs memdevs or memory`);
    vm.numa.forEach((n, ni) => {
      if (!ids.has(n.memdev))
        throw src.error(
          where(at('numa', ni, 'memdev')),
          `no memdev "${n.memdev}" in VM ${vm.name} (it has ${[...ids].join(', ') || 'none'})`,
        );
      n.cpus.forEach((c, ci) => {
        if (c >= vm.vcpus.length)
          throw src.error(where(at('numa', ni, 'cpus', ci)), `vCPU ${c} does not exist (the VM has ${vm.vcpus.length} vCPUs)`);
      });
    });
    const guestNodes = Math.max(1, vm.numa.length);
    const wnames = new Set<string>();
    vm.workloads.forEach((w, wi) => {
      if (wnames.has(w.name)) throw src.error(where(at('workloads', wi, 'name')), `workload name "${w.name}" is used twice`);
      wnames.add(w.name);
      if (w.vcpu + w.count > vm.vcpus.length)
        throw src.error(
          where(at('workloads', wi, 'vcpu')),
          `vCPU ${w.vcpu + w.count - 1} does not exist (the VM has ${vm.vcpus.length} vCPUs)`,
        );
      if (w.guest_node >= guestNodes)
        throw src.error(where(at('workloads', wi, 'guest_node')), `guest node ${w.guest_node} does not exist (the VM has ${guestNodes})`);
      const phases = 'phases' in w.workload ? w.workload.phases : [w.workload];
      phases.forEach((ph, phi) => {
        if (ph.mapping !== 'ram')
          throw src.error(
            where(
              'phases' in w.workload
                ? at('workloads', wi, 'workload', 'phases', phi, 'mapping')
                : at('workloads', wi, 'workload', 'mapping'),
            ),
            `a guest workload accesses its guest node's RAM: mapping must be "ram"`,
          );
      });
    });
    const b = vm.balloon;
    if (b && b['hint-encoding'] === 'bitmap' && b['hint-batch'] % 64)
      throw src.error(where(at('balloon', 'hint-batch')), `a bitmap hint batch (${b['hint-batch']} bits) must be a multiple of 64`);
    vm.events.forEach((ev, ei) => {
      const need = (field: keyof typeof ev, what: string): void => {
        if (ev[field] === undefined) throw src.error(where(at('events', ei)), `${ev.op} needs ${String(field)} (${what})`);
      };
      switch (ev.op) {
        case 'balloon':
          if (!b) throw src.error(where(at('events', ei, 'op')), `VM ${vm.name} has no balloon device`);
          need('target', 'the guest RAM wanted');
          break;
        case 'free_page_hint':
          if (!b?.['free-page-hint'])
            throw src.error(where(at('events', ei, 'op')), `VM ${vm.name} has no balloon with free-page-hint: true`);
          need('action', 'start, stop or done');
          break;
        case 'guest_alloc':
        case 'guest_free':
          need('size', 'bytes');
          if (ev.vcpu >= vm.vcpus.length)
            throw src.error(where(at('events', ei, 'vcpu')), `vCPU ${ev.vcpu} does not exist (the VM has ${vm.vcpus.length} vCPUs)`);
          break;
        case 'qmp':
        case 'hmp':
          need('command', ev.op === 'qmp' ? '{execute, arguments}' : 'a command line');
          break;
        case 'migrate_pages':
          need('old_nodes', 'host nodes');
          need('new_nodes', 'host nodes');
          break;
        case 'move_pages':
        case 'mbind':
          need('guest_node', 'the guest node whose RAM is acted on');
          need('nodes', 'host nodes');
          if (ev.guest_node! >= guestNodes)
            throw src.error(where(at('events', ei, 'guest_node')), `guest node ${ev.guest_node} does not exist (the VM has ${guestNodes})`);
          if (ev.op === 'mbind') need('policy', 'the MPOL_* mode');
          break;
      }
    });
  });
}

function shortList(xs: string[]): string {
  return xs.length > 8 ? `${xs.slice(0, 8).join(', ')}, ... (${xs.length} knobs)` : xs.join(', ');
}

export function scenarioName(l: LoadedScenario): string {
  return l.base.name || basename(l.file).replace(/\.ya?ml$/, '');
}
