/**
 * STREAM's copy on the simulator: `threads` threads, one per CPU of
 * hosts/this-machine.yaml, each copying its slice of a 512 MiB array into
 * another (the `copy` pattern, 64-byte elements, THP-backed and populated
 * as calibrate's arrays are), for 4 ms of virtual time. The bandwidth is
 * STREAM's count (2 x bytes copied per second) over the samples after the
 * first millisecond, when the bandwidth model has seen the load. Compared
 * with calibrate's membw_copy_<N>t by src/workload/engine.membw.test.ts and
 * scripts/stream-copy.ts.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadScenario } from '../scenario/load.ts';
import { runScenario } from '../scenario/run.ts';

/** Simulated copy bandwidth (bytes/s, STREAM's count) of `threads` threads; `profile`: a cost profile file (default: profiles/default.json). */
export function simulatedCopy(threads: number, profile?: string): number {
  const dir = mkdtempSync(join(tmpdir(), 'memtwin-stream-'));
  try {
    const f = join(dir, 'stream-copy.yaml');
    writeFileSync(
      f,
      `name: stream-copy
host: this-machine
${profile ? `profile: ${JSON.stringify(profile)}\n` : ''}duration: 4ms
sample: { interval: 1ms }
processes:
  - name: stream
    mappings:
      - { name: a, size: 512M, madvise: [MADV_HUGEPAGE], populate: true }
      - { name: b, size: 512M, madvise: [MADV_HUGEPAGE], populate: true }
    threads:
      - name: t
        cpu: 0
        count: ${threads}
        workload: { pattern: copy, mapping: a, to: b, slice: true }
`,
    );
    const r = runScenario(loadScenario(f).runs[0]!, { file: f });
    // Each access moves one 64-byte element: a load from a, or a store to b.
    const perSample = r.series.t_ns.map((_, i) =>
      r.threads.reduce((a, t) => a + r.series.metrics[`throughput.${t.process}/${t.thread}`]![i]!, 0),
    );
    const steady = perSample.slice(2); // samples at 2, 3 and 4 ms: the intervals after the first
    return (64 * steady.reduce((a, b) => a + b, 0)) / steady.length;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
