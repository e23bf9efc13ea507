/**
 * Scenario memory cgroups: a group over memory.max without swap loses its
 * process to the OOM killer (its thread stops, the kill is an event), a
 * group over memory.high is throttled, never killed; the series and final
 * metrics say so; a reference to an unknown group is a located error.
 */
import { describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadScenario } from './load.ts';
import { runScenario } from './run.ts';
import { InputError } from '../util/input_error.ts';

const dir = mkdtempSync(join(tmpdir(), 'memtwin-cg-'));
function file(name: string, text: string): string {
  const f = join(dir, name);
  writeFileSync(f, text);
  return f;
}

const SCENARIO = `name: memcg
seed: 3
host:
  name: tiny
  nodes:
    - { id: 0, memory: 512M, cpus: 0-1 }
  distances: [[10]]
duration: 100ms
sample: { interval: 10ms }
kernel:
  /sys/kernel/mm/transparent_hugepage/enabled: never
cgroups:
  - { name: capped, memory_max: 32M }
  - { name: throttled, memory_high: 32M }
processes:
  - name: victim
    cgroup: capped
    mappings:
      - { name: heap, size: 128M }
    threads:
      - { name: w, cpu: 0, workload: { pattern: first-touch, mapping: heap } }
  - name: slow
    cgroup: throttled
    mappings:
      - { name: heap, size: 128M }
    threads:
      - { name: w, cpu: 1, workload: { pattern: first-touch, mapping: heap } }
`;

describe('scenario memory cgroups', () => {
  it('OOM-kill the process over memory.max, throttle the one over memory.high; series, events and final metrics report it', () => {
    const l = loadScenario(file('cg.yaml', SCENARIO));
    const warnings: string[] = [];
    const r = runScenario(l.runs[0]!, { file: l.file, warn: (w) => warnings.push(w) });
    const f = r.final;
    expect(f.oom_kill).toBe(1);
    expect(f['cgroup.capped.events_oom_kill']).toBe(1);
    expect(f['cgroup.capped.events_oom']).toBe(1);
    expect(f['cgroup.capped.memory_current']).toBe(0); // the victim's memory went with it
    expect(f['cgroup.throttled.events_oom_kill']).toBe(0);
    expect(f['cgroup.throttled.events_high']).toBeGreaterThan(0);
    expect(f['cgroup.throttled.high_delay_ns']).toBeGreaterThan(0);
    expect(f['cgroup.throttled.memory_current']).toBeGreaterThan(32 << 20);
    const kill = r.events.find((e) => e.op === 'oom_kill')!;
    expect(kill).toMatchObject({ process: 'victim', memcg: '/capped' });
    expect(kill.anon_rss_bytes).toBeGreaterThan(30 << 20);
    expect(
      r.dmesg!.some((x) =>
        /^\[ *\d+\.\d{6}\] Memory cgroup out of memory: Killed process \d+ \(victim\) total-vm:131072kB, anon-rss:\d+kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:\d+kB oom_score_adj:0$/.test(
          x,
        ),
      ),
    ).toBe(true);
    expect(r.threads.find((t) => t.process === 'victim')?.stopped).toBe('SIGKILL (OOM killer: memory cgroup /capped at its memory.max)');
    expect(warnings.some((w) => w.includes('stopped early (SIGKILL (OOM killer: memory cgroup /capped at its memory.max))'))).toBe(true);
    const cur = r.series.metrics['cgroup.capped.memory_current']!;
    expect(Math.max(...cur)).toBeLessThanOrEqual(32 << 20);
    expect(cur.at(-1)).toBe(0);
    expect(r.series.metrics['cgroup.capped.oom_kill']!.at(-1)).toBe(1);
    // deterministic
    expect(JSON.stringify(runScenario(l.runs[0]!, { file: l.file, warn: () => {} }))).toBe(JSON.stringify(r));
  });

  it('a process naming a group that does not exist is an error at its line', () => {
    const text = SCENARIO.replace('cgroup: throttled', 'cgroup: nosuch');
    let err: unknown;
    try {
      const l = loadScenario(file('bad.yaml', text));
      runScenario(l.runs[0]!, { file: l.file, warn: () => {} });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InputError);
    expect((err as InputError).message).toMatch(
      /bad\.yaml:\d+:\d+: processes\[1\]\.cgroup: the name of a cgroup in `cgroups` \(capped, throttled\), got "nosuch"/,
    );
  });
});
