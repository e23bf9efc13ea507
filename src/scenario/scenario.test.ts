/**
 * The scenario path end to end: loading with located errors, determinism,
 * worker-count independence, resuming a sweep, and a real run's report in
 * a browser.
 */
import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { loadScenario, type LoadOptions } from './load.ts';
import { runScenario } from './run.ts';
import { runScenarioFile } from './sweep.ts';
import { renderRunReport, renderSweepReport } from '../report/report.ts';
import { InputError } from '../util/input_error.ts';
import { scenarioJsonSchema } from './schema.ts';
import { CHROMIUM, chromium, pageErrors } from '../testing/chromium.ts';

const report = { run: renderRunReport, sweep: renderSweepReport };
const dir = mkdtempSync(join(tmpdir(), 'memtwin-scn-'));

const SMALL = `# a small scenario for tests
name: small
seed: 7
host:
  name: tiny
  nodes:
    - { id: 0, memory: 256M, cpus: 0-1 }
    - { id: 1, memory: 256M, cpus: 2-3 }
  distances: [[10, 21], [21, 10]]
duration: 20ms
sample: { interval: 1ms }
kernel:
  /sys/kernel/mm/transparent_hugepage/enabled: madvise
processes:
  - name: app
    mappings:
      - name: heap
        size: 64M
        madvise: [MADV_HUGEPAGE]
      - name: side
        size: 16M
    threads:
      - name: w
        cpu: 0
        count: 2
        workload: { pattern: uniform, mapping: heap, read_ratio: 0.7 }
      - name: z
        cpu: 2
        workload:
          phases:
            - { pattern: first-touch, mapping: side }
            - { pattern: zipf, mapping: side, zipf_s: 1.1 }
sweep:
  - path: [kernel, /sys/kernel/mm/transparent_hugepage/enabled]
    values: [always, never]
    label: enabled
`;

function file(name: string, text: string): string {
  const f = join(dir, name);
  writeFileSync(f, text);
  return f;
}

function loadError(text: string, opts?: LoadOptions): InputError {
  try {
    loadScenario(file('bad.yaml', text), undefined, opts);
  } catch (e) {
    if (e instanceof InputError) return e;
    throw e;
  }
  throw new Error('expected an error');
}

describe('scenario files', () => {
  it('expand a sweep into runs with ids and parameters', () => {
    const l = loadScenario(file('small.yaml', SMALL));
    expect(l.runs.map((r) => r.id)).toEqual(['000-enabled=always', '001-enabled=never']);
    expect(l.runs[1]!.scenario.kernel['/sys/kernel/mm/transparent_hugepage/enabled']).toBe('never');
  });

  it('report bad input with file, line, column and what was expected', () => {
    let e = loadError(SMALL.replace('duration: 20ms', 'duration: soon'));
    expect(e.message).toMatch(/bad\.yaml:10:11: duration: expected a duration from 1us to 3600s: .*, got "soon"/);
    e = loadError(
      SMALL.replace('/sys/kernel/mm/transparent_hugepage/enabled: madvise', '/sys/kernel/mm/transparent_hugepage/enabld: madvise'),
    );
    expect(e.message).toMatch(/bad\.yaml:13:3: kernel: unknown knob/);
    e = loadError(SMALL.replace('        size: 64M', '        size: 64M\n        colour: red'));
    expect(e.message).toMatch(
      /bad\.yaml:19:9: processes\[0\]\.mappings\[0\]: unknown field 'colour'; the fields here are name, size, prot, /,
    );
    e = loadError(SMALL.replace('cpu: 2', 'cpu: 9'));
    expect(e.message).toMatch(/bad\.yaml:\d+:\d+: processes\[0\]\.threads\[1\]\.cpu: CPU 9 does not exist/);
    e = loadError(SMALL.replace('mapping: heap, read_ratio', 'mapping: hep, read_ratio'));
    expect(e.message).toMatch(
      /bad\.yaml:26:48: processes\[0\]\.threads\[0\]\.workload\.mapping: no mapping "hep" in process "app": expected one of "heap", "side"/,
    );
    e = loadError(SMALL.replace('values: [always, never]', 'values: [always, sometimes]'));
    expect(e.message).toMatch(
      /bad\.yaml:35:22: sweep\[0\]\.values\[1\]: the kernel rejects "sometimes" for .*\(EINVAL\): expected a value that knob accepts \(it reads "always \[madvise\] never"\) \(in sweep run 001-enabled=sometimes\)/,
    );
  });

  it('--smoke sets the reduced form over every run, after the sweep, and locates a bad smoke value', () => {
    const smoke = `${SMALL}smoke:\n  - { path: [duration], value: 5ms }\n  - { path: [kernel, /sys/kernel/mm/transparent_hugepage/enabled], value: madvise }\n`;
    const full = loadScenario(file('smoke.yaml', smoke));
    expect(full.runs.map((r) => r.scenario.duration)).toEqual([20_000_000, 20_000_000]);
    const reduced = loadScenario(file('smoke.yaml', smoke), undefined, { smoke: true });
    expect(reduced.runs.map((r) => r.id)).toEqual(['000-enabled=always', '001-enabled=never']);
    expect(reduced.runs.map((r) => r.scenario.duration)).toEqual([5_000_000, 5_000_000]);
    // Set last: the smoke value wins over the sweep's.
    expect(reduced.runs.map((r) => r.scenario.kernel['/sys/kernel/mm/transparent_hugepage/enabled'])).toEqual(['madvise', 'madvise']);
    const e = loadError(smoke.replace('value: 5ms', 'value: soon'), { smoke: true });
    expect(e.message).toMatch(/bad\.yaml:\d+:\d+: smoke\[0\]: expected a duration/);
    // A smoke value inside `sweep` reduces that sweep value, once, before the sweep is expanded.
    const inSweep = `${SMALL}smoke:\n  - { path: [sweep, 0, values, 1], value: madvise }\n`;
    const r = loadScenario(file('smoke-sweep.yaml', inSweep), undefined, { smoke: true });
    expect(r.runs.map((x) => x.id)).toEqual(['000-enabled=always', '001-enabled=madvise']);
    expect(r.runs.map((x) => x.scenario.kernel['/sys/kernel/mm/transparent_hugepage/enabled'])).toEqual(['always', 'madvise']);
  });

  it('has a JSON Schema for editors', () => {
    const s = scenarioJsonSchema() as { properties: Record<string, unknown>; required: string[] };
    expect(Object.keys(s.properties)).toEqual(expect.arrayContaining(['host', 'kernel', 'processes', 'vms', 'sweep', 'duration', 'seed']));
    // processes or vms: at least one of them, checked by the loader
    expect(s.required).toEqual(expect.arrayContaining(['name', 'duration']));
  });
});

describe('scenario runs', () => {
  it('are deterministic: the same seed gives byte-identical results', () => {
    const l = loadScenario(file('small.yaml', SMALL));
    const a = JSON.stringify(runScenario(l.runs[0]!, { file: l.file }));
    const b = JSON.stringify(runScenario(l.runs[0]!, { file: l.file }));
    expect(a).toBe(b);
    const r = JSON.parse(a);
    expect(r.final.accesses).toBeGreaterThan(10_000);
    expect(r.series.t_ns.length).toBeGreaterThanOrEqual(20);
    expect(r.threads.map((t: { thread: string }) => t.thread)).toEqual(['w-0', 'w-1', 'z']);
    // THP always: the advised heap is huge
    expect(r.final.anon_huge_bytes).toBeGreaterThan(0);
  });

  it('move a thread with a sched_setaffinity event: it runs on the new CPU from then on', () => {
    const moved =
      SMALL.replace(/sweep:[\s\S]*$/, '').replace('duration: 20ms', 'duration: 40ms') +
      'events:\n  - { at: 20ms, process: app, op: sched_setaffinity, thread: z, cpu: 0 }\n';
    const l = loadScenario(file('moved.yaml', moved));
    const r = runScenario(l.runs[0]!, { file: l.file });
    expect(r.events).toEqual([{ at_ns: 20e6, op: 'sched_setaffinity', process: 'app', thread: 'z', ret: 0, ns: 0, pages_migrated: 0 }]);
    const z = r.threads.find((t) => t.thread === 'z')!;
    expect([z.cpu, z.node]).toEqual([0, 0]);
    // z first-touched its mapping on node 1 (CPU 2); on node 0 its accesses are remote
    expect(z.remote_accesses).toBeGreaterThan(0);
    expect(z.local_accesses).toBeGreaterThan(0);
    // A thread or CPU that does not exist is refused when the file is loaded, at its place.
    expect(() => loadScenario(file('bad-thread.yaml', moved.replace('thread: z', 'thread: y')))).toThrow(
      /bad-thread\.yaml:34:\d+: events\[0\]\.thread: no thread "y" in "app": expected one of "w-0", "w-1", "z"/,
    );
    expect(() => loadScenario(file('bad-cpu.yaml', moved.replace('cpu: 0 }', 'cpu: 9 }')))).toThrow(
      /bad-cpu\.yaml:34:\d+: events\[0\]\.cpu: CPU 9 does not exist on host "tiny": expected one of its CPUs 0-3/,
    );
  });

  it('populate_fill writes data, not zero pages: MADV_PAGEOUT then writes them to swap', () => {
    const text = (fill: string): string => `name: fill
host:
  name: tiny
  nodes: [{ id: 0, memory: 64M, cpus: 0-1 }]
swap: { size: 32M }
duration: 5ms
sample: { interval: 1ms }
processes:
  - name: app
    mappings:
      - { name: data, size: 8M, madvise: [MADV_NOHUGEPAGE], populate: true${fill} }
      - { name: work, size: 1M }
    threads:
      - { name: w, cpu: 0, workload: { pattern: uniform, mapping: work } }
events:
  - { at: 1ms, process: app, op: madvise, mapping: data, advice: MADV_PAGEOUT }
`;
    const run = (name: string, fill: string) => {
      const l = loadScenario(file(name, text(fill)));
      return runScenario(l.runs[0]!, { file: l.file, warn: () => {} }).final;
    };
    expect(run('fill-zero.yaml', '').pswpout).toBe(0); // zero-filled pages go to the zeromap
    expect(run('fill-data.yaml', ', populate_fill: 7').pswpout).toBe(2048);
  });

  it("run process_madvise events with the madv-collapse-flags proposal's flags: EINVAL unless the feature is on", () => {
    const base = SMALL.replace(/sweep:[\s\S]*$/, '').replace('count: 2', 'count: 1');
    const ev =
      '  - { at: 10ms, process: app, op: process_madvise, mapping: heap, advice: MADV_COLLAPSE, madvise_flags: [MADV_F_COLLAPSE_DEFRAG] }\n';
    const run = (feature: boolean) => {
      const text = `${base}events:\n${ev}`.replace(
        'kernel:\n',
        `kernel:\n  /sys/kernel/memtwin/features/madv-collapse-flags: ${feature ? 1 : 0}\n`,
      );
      const l = loadScenario(file(`pm-${feature}.yaml`, text));
      return runScenario(l.runs[0]!, { file: l.file, warn: () => {} });
    };
    const off = run(false);
    expect(off.events[0]).toMatchObject({ op: 'process_madvise', ret: -22, errno: 'EINVAL' });
    const on = run(true);
    expect(on.events[0]).toMatchObject({ op: 'process_madvise', ret: 64 * 2 ** 20 });
    expect(on.final.events_ns_total).toBe(on.events[0]!.ns);
    expect(on.final.events_ns_total).toBeGreaterThan(0);
  });

  it('refuse process events that would crash or be ignored: a field the op needs, a field it does not read', () => {
    const base = SMALL.replace(/sweep:[\s\S]*$/, '');
    const runError = (name: string, events: string): string => {
      const text = `${base}events:\n${events}`;
      try {
        const l = loadScenario(file(name, text));
        runScenario(l.runs[0]!, { file: l.file, warn: () => {} });
      } catch (e) {
        if (e instanceof InputError) return e.message;
        throw e;
      }
      throw new Error('expected an input error');
    };
    const line = base.split('\n').length + 1; // the first event's line
    // mbind without a mapping used to stop with a TypeError.
    expect(runError('mbind.yaml', '  - { at: 1ms, process: app, op: mbind, policy: { mode: MPOL_BIND, nodes: [0] } }\n')).toMatch(
      new RegExp(`mbind\\.yaml:${line}:\\d+: events\\[0\\]: mbind needs mapping: expected the mapping it applies to`),
    );
    expect(runError('madvise.yaml', '  - { at: 1ms, process: app, op: madvise, mapping: heap }\n')).toMatch(
      /events\[0\]: madvise needs advice/,
    );
    expect(runError('mbind-pol.yaml', '  - { at: 1ms, process: app, op: mbind, mapping: heap }\n')).toMatch(
      /events\[0\]: mbind needs policy/,
    );
    expect(runError('affinity.yaml', '  - { at: 1ms, process: app, op: sched_setaffinity, thread: z }\n')).toMatch(
      /sched_setaffinity needs cpu/,
    );
    expect(runError('extra.yaml', '  - { at: 1ms, process: app, op: madvise, mapping: heap, advice: MADV_HUGEPAGE, cpu: 3 }\n')).toMatch(
      new RegExp(`extra\\.yaml:${line}:\\d+: events\\[0\\]\\.cpu: has no effect on a madvise event \\(it reads mapping, advice\\)`),
    );
    expect(
      runError(
        'mflags.yaml',
        '  - { at: 1ms, process: app, op: madvise, mapping: heap, advice: MADV_COLLAPSE, madvise_flags: [MADV_F_COLLAPSE_DEFRAG] }\n',
      ),
    ).toMatch(/events\[0\]\.madvise_flags: has no effect on a madvise event \(it reads mapping, advice\)/);
    expect(runError('proc.yaml', '  - { at: 1ms, process: db, op: migrate_pages, old_nodes: [0], new_nodes: [1] }\n')).toMatch(
      /events\[0\]\.process: no process "db": expected one of "app"/,
    );
    expect(runError('map.yaml', '  - { at: 1ms, process: app, op: madvise, mapping: stack, advice: MADV_HUGEPAGE }\n')).toMatch(
      /events\[0\]\.mapping: no mapping "stack" in "app": expected one of "heap", "side"/,
    );
  });

  it('say so when a thread stops early or an agent never acts (stderr and result warnings)', () => {
    const text = `name: warned
host:
  name: tiny
  nodes: [{ id: 0, memory: 64M, cpus: 0-1 }]
duration: 50ms
sample: { interval: 10ms }
kernel:
  /proc/sys/vm/nr_hugepages: 16
processes:
  - name: app
    mappings:
      - { name: heap, size: 48M }
    threads:
      - { name: w, cpu: 0, workload: { pattern: first-touch, mapping: heap } }
agents:
  - { name: uh, kind: uhugepaged, interval: 10ms, min_heat: 1000000000 }
`;
    const lines: string[] = [];
    const l = loadScenario(file('warned.yaml', text));
    const r = runScenario(l.runs[0]!, { file: l.file, warn: (x) => lines.push(x) });
    expect(r.final.threads_stopped).toBe(1);
    expect(r.warnings).toHaveLength(2);
    expect(r.warnings![0]).toMatch(
      // the OOM killer killed it (and freed its memory, so the host is no longer out of it)
      /warned\.yaml:14:\d+: processes\[0\]\.threads\[0\]: thread app\/w stopped early \(SIGKILL \(OOM killer: the host out of memory\)\); its numbers cover only the time before/,
    );
    expect(r.warnings![1]).toMatch(
      /warned\.yaml:16:\d+: agents\[0\]\.min_heat: agent uh collapsed nothing in 5 ticks: no 2M region reached min_heat 1000000000 \(the hottest scored [\d.]+ decayed accesses per tick\)/,
    );
    expect(lines).toEqual(r.warnings!.map((w) => `memtwin: warning: ${w}`));
    expect(renderRunReport(r)).toContain('<ul class="warn">');
  });

  it('run a uhugepaged agent: hot 4K regions become huge, its CPU time and the stalls it causes are reported', () => {
    const text = `name: agent
host:
  name: tiny
  nodes: [{ id: 0, memory: 256M, cpus: 0-1 }]
duration: 4s
sample: { interval: 500ms }
kernel:
  /sys/kernel/mm/transparent_hugepage/enabled: never
processes:
  - name: vm
    mappings:
      - { name: ram, size: 32M, madvise: [MADV_NOHUGEPAGE], populate: true }
    threads:
      - { name: hot, cpu: 0, workload: { pattern: uniform, mapping: ram, length: 8M, think: 5us } }
events:
  - { at: 0s, process: vm, op: madvise, mapping: ram, advice: MADV_HUGEPAGE }
agents:
  - { name: uh, kind: uhugepaged, interval: 1s, cpu_budget: 0.5, min_heat: 100 }
`;
    const l = loadScenario(file('agent.yaml', text));
    const r = runScenario(l.runs[0]!, { file: l.file });
    // The 8 MiB hot set is 4 regions (or 5 if the mapping is not 2M-aligned); the cold rest is left alone.
    expect(r.final.agent_collapses).toBeGreaterThanOrEqual(4);
    expect(r.final.agent_collapses).toBeLessThanOrEqual(5);
    expect(r.final.anon_huge_bytes).toBe(r.final.agent_collapses! * 2 ** 21);
    expect(r.final.agent_cpu_ns).toBeGreaterThanOrEqual(r.final.agent_collapses! * 833_000);
    expect(r.final.khugepaged_cpu_ns).toBe(0); // enabled=never: no khugepaged
    expect(r.final.time_to_huge90_ns).toBeGreaterThan(0);
    expect(r.series.metrics['huge_access_ratio']!.at(-1)).toBeGreaterThan(0.9);
    expect(r.threads[0]!.stall_ns).toBe(r.final.stall_ns_total);
    expect(() => loadScenario(file('agent-bad.yaml', text.replace('cpu_budget: 0.5,', 'cpu_budget: 0.5, targets: [db],')))).toThrow(
      /agent-bad\.yaml:18:\d+: agents\[0\]\.targets\[0\]: no process "db": expected one of "vm"/,
    );
  });

  it('give the same sweep results with 1 or 2 workers, and resume without redoing finished runs', async () => {
    const f = file('small.yaml', SMALL);
    // Output directory names that cannot occur in the random temp directory's name (the comparison swaps them).
    const d1 = join(dir, 'sweep-one-worker');
    const d2 = join(dir, 'sweep-two-workers');
    await runScenarioFile(f, d1, 1, report);
    const s2 = await runScenarioFile(f, d2, 2, report);
    expect(s2.reused).toBe(0);
    for (const id of ['000-enabled=always', '001-enabled=never'])
      expect(readFileSync(join(d2, 'runs', id, 'result.json'), 'utf8')).toBe(readFileSync(join(d1, 'runs', id, 'result.json'), 'utf8'));
    expect(readFileSync(join(d2, 'result.json'), 'utf8').replaceAll('sweep-two-workers', 'sweep-one-worker')).toBe(
      readFileSync(join(d1, 'result.json'), 'utf8'),
    );
    // Interrupted: one run's result is missing. The rerun keeps the other.
    const keep = join(d1, 'runs', '000-enabled=always', 'result.json');
    const before = statSync(keep).mtimeMs;
    rmSync(join(d1, 'runs', '001-enabled=never', 'result.json'));
    const again = await runScenarioFile(f, d1, 2, report);
    expect(again.reused).toBe(1);
    expect(statSync(keep).mtimeMs).toBe(before);
    expect(readdirSync(join(d1, 'runs'))).toHaveLength(2);
    expect(readFileSync(join(d1, 'summary.csv'), 'utf8').split('\n')[0]).toMatch(/^run,enabled,accesses,/);
  });

  it.skipIf(!CHROMIUM)('writes a report.html that opens in headless Chromium and shows its charts', async () => {
    const f = file('small.yaml', SMALL);
    const out = join(dir, 'browser');
    await runScenarioFile(f, out, 1, report);
    for (const page of [join(out, 'report.html'), join(out, 'runs', '000-enabled=always', 'report.html')]) {
      const r = await chromium(['--dump-dom', pathToFileURL(page).href]);
      expect(pageErrors(r.stderr)).toEqual([]);
      expect(r.stdout.split('<svg').length - 1).toBeGreaterThanOrEqual(4);
      expect(r.stdout).toMatch(/<path d="M[^"]{50,}"/);
    }
  });
});

describe('the JSON Schema shipped for editors', () => {
  it('is up to date with the zod schema (regenerate: memtwin schema > scenarios/scenario.schema.json)', () => {
    const shipped = JSON.parse(readFileSync(new URL('../../scenarios/scenario.schema.json', import.meta.url), 'utf8'));
    expect(shipped).toEqual(JSON.parse(JSON.stringify(scenarioJsonSchema())));
  });

  it('every shipped scenario loads', () => {
    const dirUrl = new URL('../../scenarios/', import.meta.url);
    const files = readdirSync(dirUrl).filter((f) => f.endsWith('.yaml'));
    expect(files.length).toBeGreaterThanOrEqual(3);
    for (const f of files) expect(loadScenario(new URL(f, dirUrl).pathname).runs.length).toBeGreaterThan(0);
  });
});
