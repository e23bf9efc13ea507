/**
 * Loading scenarios: every input either loads into a run of bounded size or
 * is refused with an InputError that names the file, line, column, field
 * and the allowed forms. One regression test per problem a mutation
 * campaign found, and properties over the schema's ranges.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { loadScenario, locateRunError } from './load.ts';
import { LIMITS, parseDuration, scenarioJsonSchema } from './schema.ts';
import { InputError } from '../util/input_error.ts';
import { quote } from '../util/yaml_input.ts';
import { fromRoot } from '../util/paths.ts';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const BASE = `name: t
seed: 7
host:
  name: tiny
  nodes:
    - { id: 0, memory: 256M, cpus: 0-1 }
    - { id: 1, memory: 256M, cpus: 2-3 }
duration: 20ms
sample: { interval: 1ms }
processes:
  - name: app
    mappings:
      - { name: heap, size: 16M }
    threads:
      - name: w
        cpu: 0
        workload: { pattern: uniform, mapping: heap, read_ratio: 0.7 }
`;

const VM = `name: v
host: default
duration: 10ms
vms:
  - name: guest
    memory: 64M
    vcpus: [0, 1]
    events:
      - { at: 1ms, op: hmp, command: info ram }
`;

/** The InputError loading `text` raises (fails the test if it loads or throws anything else). */
function refusal(text: string): InputError {
  try {
    loadScenario('/scn/t.yaml', text);
  } catch (e) {
    if (e instanceof InputError) {
      // Every refusal is located and says what is wrong.
      expect(e.line).toBeGreaterThanOrEqual(1);
      expect(e.column).toBeGreaterThanOrEqual(1);
      expect(e.field).toBeTruthy();
      expect(e.expected.length).toBeGreaterThan(0);
      return e;
    }
    throw e;
  }
  throw new Error('expected the scenario to be refused');
}

describe('scenarios that would never finish are refused', () => {
  it('sample.interval: 0, a value that rounds to 0, or below 1us; and at most 10000 samples', () => {
    for (const v of ['0', '0.4', '1ns', '999ns', '0.5us'])
      expect(refusal(BASE.replace('interval: 1ms', `interval: ${v}`)).message).toMatch(
        /t\.yaml:9:21: sample\.interval: expected a duration from 1us to 3600s: whole nanoseconds or a string such as 500us, 10ms, 2s, got /,
      );
    expect(refusal(BASE.replace('interval: 1ms', 'interval: 1us')).message).toMatch(
      /sample\.interval: 1us gives 20000 samples over the duration 20ms: expected at most 10000 samples, an interval of at least 2us/,
    );
    expect(loadScenario('/scn/t.yaml', BASE.replace('interval: 1ms', 'interval: 2us')).base.sample.interval).toBe(2000);
  });

  it('a run lasts 1us to 3600s of virtual time, in whole nanoseconds', () => {
    expect(refusal(BASE.replace('duration: 20ms', 'duration: 3601s')).message).toMatch(/duration: expected a duration from 1us to 3600s/);
    expect(refusal(BASE.replace('duration: 20ms', 'duration: 1.5')).message).toMatch(/got 1\.5$/);
    expect(refusal(BASE.replace('duration: 20ms', 'duration: 1.0000001ms')).field).toBe('duration');
    expect(loadScenario('/scn/t.yaml', BASE.replace('duration: 20ms', 'duration: 1.5ms')).base.duration).toBe(1_500_000);
  });

  it('an agent interval of 0, or one that gives more than 100000 ticks', () => {
    const agent = (interval: string, duration = '20ms'): string =>
      `${BASE.replace('duration: 20ms', `duration: ${duration}`).replace('interval: 1ms', 'interval: 1s')}agents:\n  - { name: uh, kind: uhugepaged, interval: ${interval} }\n`;
    expect(refusal(agent('0')).message).toMatch(/:19:45: agents\[0\]\.interval: expected a duration from 1ms to 3600s/);
    expect(refusal(agent('1ms', '3600s')).message).toMatch(/agents\[0\]\.interval: 1ms gives 3600000 ticks: expected at most 100000 ticks/);
    expect(loadScenario('/scn/t.yaml', agent('1ms')).base.agents[0]!.interval).toBe(1e6);
  });

  it('a sequential workload with stride 0 (or less than a cache line)', () => {
    for (const stride of ['0', '1', '63'])
      expect(
        refusal(BASE.replace('pattern: uniform', 'pattern: sequential').replace('read_ratio: 0.7', `stride: ${stride}`)).message,
      ).toMatch(
        /processes\[0\]\.threads\[0\]\.workload\.stride: expected a size from 64 to 1T: a number of bytes or a string such as 4K, 2M, 1G, got \d+$/,
      );
  });

  it('a sweep of more than 1000 runs, before expanding it', () => {
    const dim = '  - { path: [seed], values: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11] }\n';
    expect(refusal(`${BASE}sweep:\n${dim}${dim}${dim}`).message).toMatch(
      /:19:3: sweep: the sweep makes 1331 runs \(11 x 11 x 11\): expected at most 1000 runs/,
    );
  });

  it('a CPU list such as 0-100000000 (it used to loop over every id)', () => {
    expect(refusal(BASE.replace('cpus: 2-3', 'cpus: 2-100000000')).message).toMatch(
      /host\.nodes\[1\]\.cpus: expected CPU ids from 0 to 8191: a list \[0, 1\], a CPU list string such as "0-3,8", or one id, got "2-100000000"/,
    );
  });
});

describe('YAML the parser refuses is an exit-2 error at its place, not a stack trace', () => {
  it('an alias to an anchor that does not exist', () => {
    expect(refusal(BASE.replace('cpu: 0', 'cpu: *zero')).message).toMatch(/t\.yaml:16:14: .*alias \*zero names no anchor &zero before it/);
  });

  it('an alias bomb (the yaml library guard, maxAliasCount)', () => {
    let bomb = 'x0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n';
    for (let i = 1; i < 9; i++)
      bomb += `x${i}: &a${i} [${Array(9)
        .fill(`*a${i - 1}`)
        .join(', ')}]\n`;
    const e = refusal(bomb + BASE);
    expect(e.message).toMatch(/t\.yaml:2:10: x1\[0\]: invalid YAML: aliases expand to too much data .*at most 100 alias expansions/);
  });

  it('an alias inside the node it names, a collection as a key, a custom tag, duplicate keys, two documents', () => {
    expect(refusal(`${BASE}notes: &n [*n]\n`).message).toMatch(
      /:18:12: notes\[0\]: invalid YAML: alias \*n is inside the node it names \(a cycle\)/,
    );
    expect(refusal(`${BASE}? [a, b]\n: 1\n`).message).toMatch(/:18:3: .*a key must be a plain scalar/);
    expect(refusal(BASE.replace('seed: 7', 'seed: !big 7')).message).toMatch(/:2:7: .*Unresolved tag: !big/);
    expect(refusal(BASE.replace('seed: 7', 'seed: 7\nseed: 8')).message).toMatch(/:3:1: .*Map keys must be unique/);
    expect(refusal(`${BASE}---\nname: u\n`).message).toMatch(/invalid YAML: Source contains multiple documents/);
  });

  it('an empty file and a document that is not a map name the top level', () => {
    expect(refusal('').message).toMatch(/t\.yaml:1:1: \(top level\): expected \{name, seed, host, kernel, duration, .*\}, got null/);
    expect(refusal('- a\n').field).toBe('(top level)');
  });
});

describe('every error names its place and the allowed forms', () => {
  it('host: "" and a host that does not exist: at the host field, with the hosts there are', () => {
    const noHost = BASE.replace(/host:\n {2}name: tiny\n {2}nodes:\n.*\n.*\n/, 'host: HOST\n');
    expect(refusal(noHost.replace('HOST', '""')).message).toMatch(
      /t\.yaml:3:7: host: expected auto, a shipped host name \(hosts\/NAME\.yaml: default, this-machine, two-node-guest\), a path to a host file, or an inline host \{name, nodes, …\}, got ""/,
    );
    expect(refusal(noHost.replace('HOST', 'nosuch')).message).toMatch(
      /t\.yaml:3:7: host: cannot load host "nosuch": cannot read file \(ENOENT\); expected auto, a shipped host name \(default, this-machine, two-node-guest\)/,
    );
  });

  it('a union names the forms it allows, and the branch that got furthest names the problem', () => {
    const w = (text: string): string => BASE.replace('{ pattern: uniform, mapping: heap, read_ratio: 0.7 }', text);
    expect(refusal(w('uniform')).message).toMatch(
      /workload: expected a pattern workload \{pattern, mapping, …\} or \{phases: \[\{pattern, mapping, duration, …\}, …\]\}, got "uniform"$/,
    );
    expect(refusal(w('{ mapping: heap }')).message).toMatch(
      /workload\.pattern: missing: expected one of sequential, uniform, zipf, first-touch, idle \(processes\[0\]\.threads\[0\]\.workload is a pattern workload/,
    );
    expect(refusal(w('{ pattern: uniform, mapping: heap, phases: [] }')).message).toMatch(
      /workload: unknown field 'phases'; the fields here are pattern, mapping, /,
    );
    expect(refusal(w('{ phases: [{ pattern: zipf, mapping: heap, zipf_s: 0 }] }')).message).toMatch(
      /workload\.phases\[0\]\.zipf_s: expected a number from more than 0 to 10, got 0$/,
    );
    expect(refusal(BASE.replace('size: 16M', 'size: [16M]')).message).toMatch(
      /mappings\[0\]\.size: expected a size from 1 to 1T: a number of bytes or a string such as 4K, 2M, 1G, got \["16M"\]$/,
    );
    expect(refusal(`${BASE}sweep:\n  - { path: [seed], label: s }\n`).message).toMatch(
      /sweep\[0\]\.values: missing: expected a list of at least 1 entry, each any value \(sweep\[0\] is a sweep dimension \{path, values, label\} or \{label, configs: /,
    );
  });

  it('a 4 MB value gives a short line: quoted values are cut, with their length', () => {
    const e = refusal(BASE.replace('pattern: uniform', `pattern: ${'x'.repeat(4_000_000)}`));
    expect(e.message.length).toBeLessThan(400);
    expect(e.message).toMatch(/got "x{70,80}… \(4000002 characters\)/);
    expect(refusal(BASE.replace('seed: 7', `${'k'.repeat(100_000)}: 1`)).message.length).toBeLessThan(400);
    expect(quote('y'.repeat(100))).toBe(`"${'y'.repeat(78)}… (102 characters)`);
    expect(quote({ a: 1 })).toBe('{"a":1}');
  });

  it('integers are safe integers: 1e308 is not a CPU, a seed or a count', () => {
    expect(refusal(BASE.replace('cpu: 0', 'cpu: 1e308')).message).toMatch(
      /threads\[0\]\.cpu: expected an integer from 0 to 8191, got 1e\+308$/,
    );
    expect(refusal(BASE.replace('seed: 7', 'seed: 9007199254740993')).message).toMatch(/seed: expected an integer from 0 to 4294967295/);
    expect(refusal(BASE.replace('cpu: 0', 'cpu: 0\n        count: 0.5')).message).toMatch(
      /count: expected an integer from 1 to 8192, got 0\.5$/,
    );
  });

  it('CPUs and nodes must exist on the host, checked where they are written', () => {
    expect(refusal(BASE.replace('cpu: 0', 'cpu: 0\n        count: 5')).message).toMatch(
      /:17:16: processes\[0\]\.threads\[0\]\.count: CPU 4 does not exist on host "tiny": expected one of its CPUs 0-3/,
    );
    expect(refusal(BASE.replace('size: 16M }', 'size: 16M, policy: { mode: MPOL_BIND, nodes: [0, 2] } }')).message).toMatch(
      /processes\[0\]\.mappings\[0\]\.policy\.nodes\[1\]: node 2 does not exist on host "tiny": expected a node from 0 to 1/,
    );
    // Relative node numbers may exceed the host's (MPOL_F_RELATIVE_NODES folds them).
    loadScenario(
      '/scn/t.yaml',
      BASE.replace('size: 16M }', 'size: 16M, policy: { mode: MPOL_BIND, nodes: [2], flags: [MPOL_F_RELATIVE_NODES] } }'),
    );
    expect(refusal(`${BASE}events:\n  - { at: 1ms, process: app, op: migrate_pages, old_nodes: [0], new_nodes: [7] }\n`).message).toMatch(
      /:19:\d+: events\[0\]\.new_nodes\[0\]: node 7 does not exist/,
    );
    expect(refusal(VM.replace('vcpus: [0, 1]', 'vcpus: [0, 9]')).message).toMatch(
      /:7:16: vms\[0\]\.vcpus\[1\]: CPU 9 does not exist on host "default": expected one of its CPUs 0-7/,
    );
  });

  it('what the kernel or QEMU would refuse at setup is refused at load, at the mapping or the VM', () => {
    expect(refusal(BASE.replace('size: 16M', 'size: 1T')).message).toMatch(
      /:13:29: processes\[0\]\.mappings\[0\]\.size: mmap of 1099511627776 bytes with flags MAP_PRIVATE\|MAP_ANONYMOUS fails with ENOMEM/,
    );
    expect(refusal(VM.replace('memory: 64M', 'memory: 64M\n    max-ram-below-4g: 5G')).message).toMatch(
      /max-ram-below-4g: expected a size from 0 to 4G/,
    );
    expect(refusal(VM.replace('memory: 64M', 'memory: 64M\n    emulator_cpu: 99')).message).toMatch(
      /vms\[0\]\.emulator_cpu: CPU 99 does not exist/,
    );
    expect(refusal(VM.replace('memory: 64M', 'memory: 64M\n    guest: { fragment: { size: 64M, keep_every: 2 } }')).message).toMatch(
      /vms\[0\]\.guest\.fragment\.size: 67108864 bytes: expected less than the guest's RAM \(67108864 bytes\)/,
    );
    expect(refusal(VM.replace('memory: 64M', 'memory: 1000')).message).toMatch(
      /vms\[0\]\.memory: expected a size from 4K to 1T: .*, got 1000$/,
    );
    expect(
      refusal(
        VM.replace('memory: 64M', 'memdevs: [{ id: m0, size: 64M }]\n    numa: [{ memdev: m0, cpus: [0] }, { memdev: m0, cpus: [1] }]'),
      ).message,
    ).toMatch(/:5:5: vms\[0\]: qemu-system-x86_64 refuses this VM: memory backend m0 can't be used multiple times\./);
  });

  it('a cost profile that cannot be read, or lacks what a VM needs, is refused at profile or at the VM', () => {
    const dir = mkdtempSync(join(tmpdir(), 'memtwin-load-'));
    const noEpt = JSON.parse(readFileSync(fromRoot('profiles', 'default.json'), 'utf8'));
    delete noEpt.costs.kvm_ept_violation;
    writeFileSync(join(dir, 'noept.json'), JSON.stringify(noEpt));
    expect(refusal(`${BASE}profile: ${join(dir, 'nosuch.json')}\n`).message).toMatch(
      /:18:10: profile: .*cannot read cost profile \(ENOENT\)/,
    );
    expect(refusal(VM.replace('duration: 10ms', `duration: 10ms\nprofile: ${join(dir, 'noept.json')}`)).message).toMatch(
      /vms\[0\]: .*cost profile has no entry 'kvm_ept_violation'.*\); expected a profile with the VM costs/,
    );
  });

  it('VM events: each op has what it needs, one migration, a fault after it', () => {
    const ev = (text: string): string => VM.replace('{ at: 1ms, op: hmp, command: info ram }', text);
    expect(refusal(ev('{ at: 1ms, op: hmp, command: { execute: x } }')).message).toMatch(
      /vms\[0\]\.events\[0\]\.command: expected an HMP command line \(a string\), got \{"execute":"x"\}/,
    );
    expect(refusal(ev('{ at: 1ms, op: migrate }')).message).toMatch(
      /vms\[0\]\.events\[0\]: migrate needs bandwidth: expected the link bandwidth/,
    );
    expect(refusal(ev('{ at: 1ms, op: migration_fault, fault: link-drop }')).message).toMatch(
      /needs a migrate event of this VM at the same time or before it/,
    );
    expect(refusal(ev('{ at: 1ms, op: migrate, bandwidth: 0 }')).message).toMatch(
      /bandwidth: expected a rate from 1 to 1T bytes per second/,
    );
    expect(refusal(ev('{ at: 1ms, op: migrate, bandwidth: 1G, destination: { vcpus: [0] } }')).message).toMatch(
      /events\[0\]\.destination\.vcpus: 1 vCPUs: expected as many as the source VM has \(2\)/,
    );
    expect(refusal(ev('{ at: 1ms, op: migrate, bandwidth: 1G, destination: { host: "" } }')).message).toMatch(
      /events\[0\]\.destination\.host: expected auto, a shipped host name/,
    );
  });

  it("the network: NICs, host names, traffic ends, evacuation targets, rates in people's units", () => {
    const net = (text: string): string => `${VM}${text}`;
    const ok = loadScenario(
      '/scn/t.yaml',
      net('nic: { bandwidth: 10Gbit/s, latency: 25us }\nhosts:\n  - { name: spare, nic: { bandwidth: 1250MB/s } }\n'),
    );
    expect(ok.base.nic).toEqual({ bandwidth: 1.25e9, latency: 25_000 });
    expect(ok.base.hosts![0]!.nic!.bandwidth).toBe(1.25e9);
    expect(refusal(net('hosts:\n  - { name: spare }\n')).message).toMatch(/hosts: needs the scenario host's NIC: expected nic:/);
    expect(refusal(net('nic: { bandwidth: 10G }\n')).message).toMatch(/nic\.bandwidth: expected a rate from 1 to .* 10Gbit\/s/);
    const two = 'nic: { bandwidth: 10Gbit/s }\nhosts:\n  - { name: spare }\n';
    expect(refusal(net(`${two}  - { name: spare }\n`)).message).toMatch(/hosts\[1\]\.name: host name "spare" is used twice/);
    expect(refusal(net(`${two}traffic:\n  - { from: spare, to: nowhere }\n`)).message).toMatch(
      /traffic\[0\]\.to: no host "nowhere": expected the scenario's host or one of `hosts`/,
    );
    expect(refusal(net(`${two}traffic:\n  - { from: spare, to: spare }\n`)).message).toMatch(
      /traffic\[0\]\.to: "spare" is the sending host/,
    );
    expect(refusal(net(`${two}evacuate: { at: 1ms, to: elsewhere }\n`)).message).toMatch(/evacuate\.to: no host "elsewhere" in `hosts`/);
    expect(refusal(net(`${two}evacuate: { at: 1ms, to: spare, vms: [guest, ghost] }\n`)).message).toMatch(
      /evacuate\.vms\[1\]: no VM "ghost": expected one of "guest"/,
    );
    expect(refusal(net(`${two}evacuate: { at: 1ms, to: spare, max_concurrent: 0 }\n`)).message).toMatch(/evacuate\.max_concurrent/);
    const mig = (e: string): string =>
      VM.replace('{ at: 1ms, op: hmp, command: info ram }', e) + two + (e.includes('evac') ? 'evacuate: { at: 1ms, to: spare }\n' : '');
    expect(refusal(mig('{ at: 1ms, op: migrate, bandwidth: 1G, destination: { host: spare } }')).message).toMatch(
      /events\[0\]\.bandwidth: has no effect: the destination is a host of `hosts`/,
    );
    expect(loadScenario('/scn/t.yaml', mig('{ at: 1ms, op: migrate, destination: { host: spare } }')).base.vms[0]!.events[0]!.op).toBe(
      'migrate',
    );
    expect(refusal(mig('{ at: 1ms, op: migrate, destination: { host: spare } } # evac')).message).toMatch(
      /events\[0\]\.op: VM "guest" leaves with `evacuate`: expected no migrate event of its own/,
    );
  });

  it('host events: the process, mapping and thread exist and each op has its arguments', () => {
    const ev = (text: string): string => `${BASE}events:\n  - ${text}\n`;
    expect(refusal(ev('{ at: 1ms, process: db, op: mbind, mapping: heap }')).message).toMatch(
      /events\[0\]\.process: no process "db": expected one of "app"/,
    );
    expect(refusal(ev('{ at: 1ms, process: app, op: mbind }')).message).toMatch(/events\[0\]: mbind needs mapping/);
    expect(refusal(ev('{ at: 1ms, process: app, op: madvise, mapping: heap }')).message).toMatch(
      /madvise needs advice: expected an MADV_\* name/,
    );
    // Names that identify things are used once.
    expect(refusal(BASE.replace(/threads:\n([\s\S]*)$/, 'threads:\n$1$1')).message).toMatch(
      /:18:15: processes\[0\]\.threads\[1\]\.name: thread name "w" is used twice: expected a name of its own/,
    );
    expect(
      refusal(BASE.replace('{ name: heap, size: 16M }', '{ name: heap, size: 16M }\n      - { name: heap, size: 4M }')).message,
    ).toMatch(/processes\[0\]\.mappings\[1\]\.name: mapping name "heap" is used twice in process "app"/);
  });

  it('sweep paths stay inside the scenario and inside its lists; a bad value names its run', () => {
    const sweep = (text: string): string => `${BASE}sweep:\n  - ${text}\n`;
    expect(refusal(sweep('{ path: [__proto__, polluted], values: [1] }')).message).toMatch(
      /sweep\[0\]\.path\[0\]: "__proto__" is not a scenario field/,
    );
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
    expect(refusal(sweep('{ path: [processes, 5, name], values: [a] }')).message).toMatch(
      /sweep\[0\]\.path\[1\]: index 5 is past the end of the list \(1 entries\)/,
    );
    expect(refusal(sweep('{ path: [processes, app], values: [a] }')).message).toMatch(
      /sweep\[0\]\.path\[1\]: "app" names a field, but this is a list/,
    );
    expect(refusal(sweep('{ path: [processes, 0, threads, 0, cpu], values: [1, 7] }')).message).toMatch(
      /:19:58: sweep\[0\]\.values\[1\]: CPU 7 does not exist on host "tiny": .* \(in sweep run 001-cpu=7\)/,
    );
  });

  it('an error a run raises (field without a line) is located by locateRunError', () => {
    const l = loadScenario('/scn/t.yaml', `${BASE}events:\n  - { at: 1ms, process: app, op: mbind, mapping: heap }\n`);
    const at = (field: string): string => locateRunError(l, new InputError('/scn/t.yaml', undefined, undefined, field, 'x')).message;
    expect(at('processes.app.mappings.heap')).toBe('/scn/t.yaml:13:9: processes[0].mappings[0]: x');
    // A field the file does not have is placed at the entry that would hold it.
    expect(at('processes.app.threads.w.mempolicy')).toBe('/scn/t.yaml:15:9: processes[0].threads[0].mempolicy: x');
    expect(at('events[0].mapping')).toBe('/scn/t.yaml:19:50: events[0].mapping: x');
    expect(at('kernel./sys/nosuch')).toBe('/scn/t.yaml:1:1: kernel: x');
  });
});

describe('the schema documents and enforces every numeric range', () => {
  it('every numeric field of the JSON Schema has a description that states its range', () => {
    const missing: string[] = [];
    const walk = (s: unknown, path: string): void => {
      if (!s || typeof s !== 'object') return;
      const o = s as Record<string, unknown>;
      const types = [o['type'], ...((o['anyOf'] as { type?: unknown }[] | undefined) ?? []).map((x) => x.type)].flat();
      const numeric = types.includes('number') || types.includes('integer');
      // A number nested in a list or a union is documented by the field that holds it.
      if (numeric && !path.endsWith('[]') && !path.endsWith('|')) {
        const d = String(o['description'] ?? '');
        if (!/\d[\w.]*( [a-z]+)?( \([^)]*\))? to (the |\d)|at most \d|any finite number|\d+ or \d+|the range the kernel accepts/.test(d))
          missing.push(`${path}: ${d || '(no description)'}`);
      }
      for (const [k, v] of Object.entries(o)) {
        if (k === 'properties') for (const [pk, pv] of Object.entries(v as object)) walk(pv, `${path}.${pk}`);
        else if (k === 'items') walk(v, `${path}[]`);
        else if (k === 'anyOf' || k === 'oneOf') (v as unknown[]).forEach((x) => walk(x, `${path}|`));
        else if (k === 'additionalProperties') walk(v, `${path}{}`);
      }
    };
    walk(scenarioJsonSchema(), '');
    expect(missing).toEqual([]);
  });

  it('durations: accepted exactly when they are whole nanoseconds from 1us to 3600s (property)', () => {
    const unit = fc.constantFrom('ns', 'us', 'µs', 'ms', 's');
    const text = fc.tuple(fc.nat({ max: 5000 }), fc.option(fc.stringMatching(/^[0-9]{1,10}$/), { nil: undefined }), unit);
    fc.assert(
      fc.property(text, ([whole, frac, u]) => {
        const v = `${whole}${frac !== undefined ? `.${frac}` : ''}${u}`;
        const ns = parseDuration(v);
        const scn = BASE.replace('duration: 20ms', `duration: ${v}`).replace('interval: 1ms', 'interval: 3600s');
        let got: number | InputError;
        try {
          got = loadScenario('/scn/t.yaml', scn).base.duration;
        } catch (e) {
          if (!(e instanceof InputError)) throw e;
          got = e;
        }
        if (ns !== undefined && ns >= 1000 && ns <= LIMITS.maxDurationNs) expect(got).toBe(ns);
        else expect((got as InputError).field).toBe('duration');
      }),
      { numRuns: 150 },
    );
  });

  it('read_ratio and zipf_s: in range or refused with the range (property)', () => {
    fc.assert(
      fc.property(fc.double({ noNaN: true, noDefaultInfinity: true }), (x) => {
        const scn = BASE.replace('read_ratio: 0.7', `read_ratio: ${JSON.stringify(x)}`);
        if (x >= 0 && x <= 1)
          expect(loadScenario('/scn/t.yaml', scn).base.processes[0]!.threads[0]!.workload).toMatchObject({ read_ratio: x + 0 });
        else expect(refusal(scn).message).toMatch(/read_ratio: expected a number from 0 to 1, got /);
      }),
      { numRuns: 100 },
    );
  });
});
