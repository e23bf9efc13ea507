/**
 * A workload thread meeting pages under migration (migration_entry_wait)
 * while the task migrating them competes for its CPU: the windows follow
 * the migrating task's CPU time (migrate_entry.ts followCpu), so the
 * thread waits longer when that task shares a CPU with a busy thread.
 */
import { describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadScenario } from '../scenario/load.ts';
import { runScenario } from '../scenario/run.ts';
import type { RunResult } from '../scenario/result.ts';

const dir = mkdtempSync(join(tmpdir(), 'memtwin-migwait-'));

/**
 * Two nodes of one CPU each: a thread streaming through 16 MiB on CPU 0 (sharing it with a busy thread), and
 * migrate_pages of its memory to node 1 at 40 ms by a tool, which the scheduler places on CPU 1 (the idler one);
 * `busyOnCpu1`: a busy thread there too, so that the tool gets half of CPU 1.
 */
function run(busyOnCpu1: boolean): RunResult {
  const busy = (name: string, cpu: number): string => `      - name: ${name}
        cpu: ${cpu}
        workload:
          phases:
            - { pattern: uniform, mapping: small, read_ratio: 1 }
`;
  const yaml = `name: migwait
seed: 3
host:
  name: two-cpus
  nodes:
    - { id: 0, memory: 256M, cpus: [0] }
    - { id: 1, memory: 256M, cpus: [1] }
  distances: [[10, 21], [21, 10]]
duration: 75ms
sample: { interval: 5ms }
kernel:
  /sys/kernel/mm/transparent_hugepage/enabled: never
processes:
  - name: app
    mappings:
      - { name: data, size: 16M }
      - { name: small, size: 64K }
    threads:
      - name: stream
        cpu: 0
        workload:
          phases:
            - { pattern: first-touch, mapping: data }
            - { pattern: sequential, mapping: data, stride: 4K, read_ratio: 1 }
${busy('busy0', 0)}${busyOnCpu1 ? busy('busy1', 1) : ''}events:
  - { at: 40ms, process: app, op: migrate_pages, old_nodes: [0], new_nodes: [1] }
`;
  const f = join(dir, `migwait-${busyOnCpu1}.yaml`);
  writeFileSync(f, yaml);
  const l = loadScenario(f);
  return runScenario(l.runs[0]!, { file: l.file });
}

describe('migration entries and the CPUs', () => {
  it('a thread waits longer on pages under migration when the migrating task shares its CPU with a busy thread', () => {
    const alone = run(false);
    const shared = run(true);
    for (const r of [alone, shared]) expect(r.events[0]!.pages_migrated).toBe(4096);
    const stream = (r: RunResult) => r.threads.find((t) => t.thread === 'stream')!;
    const wait = (r: RunResult): number => stream(r).migration_wait_ns as number;
    const waits = (r: RunResult): number => stream(r).migration_waits as number;
    expect(wait(alone)).toBeGreaterThan(0);
    // The tool has half of CPU 1: each batch takes about twice as long, and so does each wait for one.
    expect(wait(shared)).toBeGreaterThan(1.5 * wait(alone));
    expect(wait(shared) / waits(shared)).toBeGreaterThan(1.5 * (wait(alone) / waits(alone)));
  }, 60_000);
});
