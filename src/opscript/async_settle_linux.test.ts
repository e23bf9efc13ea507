/**
 * An async op on the real kernel is settled before the next op runs
 * (native/PROTOCOL.md, `touch`): the executor reads the next op only once
 * the async one has finished or its thread sleeps in the kernel, which is
 * where the simulator answers it. A thread the scheduler runs late is
 * stood in for by MEMTWIN_TEST_ASYNC_LATE_US, which makes each async op's
 * thread spin 5 ms before it runs the op: without the settling, the
 * userfaultfd-events script's UFFDIO_COPY then overtakes the async
 * MADV_DONTNEED and copies instead of answering EAGAIN (the failure a
 * loaded CI machine met). Skipped, with a notice, where the linux backend
 * cannot run.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { linuxBackendUnavailable } from './linux_backend.ts';
import { runLinux } from './difftest.ts';
import { diffRuns } from './diff.ts';
import { goldenDir } from '../../test/golden.ts';

const noLinux = linuxBackendUnavailable();
if (noLinux) console.warn(`\n*** async settling tests SKIPPED: ${noLinux} ***\n`);

describe.skipIf(noLinux !== undefined)('an async op is settled before the next op runs on the real kernel', () => {
  const saved = process.env.MEMTWIN_TEST_ASYNC_LATE_US;
  beforeAll(() => {
    process.env.MEMTWIN_TEST_ASYNC_LATE_US = '5000';
  });
  afterAll(() => {
    if (saved === undefined) delete process.env.MEMTWIN_TEST_ASYNC_LATE_US;
    else process.env.MEMTWIN_TEST_ASYNC_LATE_US = saved;
  });
  for (const name of ['userfaultfd-events', 'userfaultfd-wp-queued-touch', 'userfaultfd-anon']) {
    it(`${name}: every async thread 5 ms late, the real kernel still agrees with the expected output`, async () => {
      const text = readFileSync(`${goldenDir}/${name}.jsonl`, 'utf8');
      const expected = readFileSync(`${goldenDir}/${name}.expected.jsonl`, 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as Record<string, unknown>);
      const d = diffRuns(expected, (await runLinux(text)).results);
      expect(d.disagreements).toEqual([]);
      expect(d.compared).toBeGreaterThan(20);
    });
  }
});
