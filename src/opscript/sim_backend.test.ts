import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { ScriptRunner } from './runner.ts';
import { SimBackend } from './sim_backend.ts';
import { smallKernel } from '../testing/fixtures.ts';

async function run(lines: object[]): Promise<Record<string, unknown>[]> {
  const r = new ScriptRunner(new SimBackend(smallKernel()));
  await r.run(lines.map((l) => JSON.stringify(l)).join('\n'));
  return r.results;
}

const setup = [
  { op: 'mmap', len: '4M', prot: ['PROT_READ', 'PROT_WRITE'], flags: ['MAP_PRIVATE', 'MAP_ANONYMOUS'], name: 'a' },
  { op: 'userfaultfd', flags: ['O_CLOEXEC', 'O_NONBLOCK'], name: 'u' },
  { op: 'uffdio_api', fd: '$u', features: ['UFFD_FEATURE_PAGEFAULT_FLAG_WP'] },
  { op: 'uffdio_register', fd: '$u', addr: '$a', len: '4M', mode: ['UFFDIO_REGISTER_MODE_MISSING', 'UFFDIO_REGISTER_MODE_WP'] },
  { op: 'thread', name: 't1', cpu: 1 },
];
const touch = (at: string, fill: number) => ({ op: 'touch', thread: 't1', addr: at, len: '4K', write: true, fill, async: true });
const msgs = (r: Record<string, unknown>) => (r.msgs as { address: string }[]).map((m) => m.address);

describe('async work on a thread blocked in a userfault', () => {
  it('raises one fault message, not one per touch queued behind it (issue 22)', async () => {
    const r = await run([
      ...setup,
      touch('$a+8K', 1),
      { op: 'uffd_read', fd: '$u', max: 4 },
      { op: 'uffdio_copy', fd: '$u', dst: '$a+8K', len: '4K', mode: ['UFFDIO_COPY_MODE_WP'] },
      touch('$a+8K', 7),
      { op: 'uffd_read', fd: '$u', max: 4, timeout_ms: 100 },
      { op: 'uffdio_writeprotect', fd: '$u', addr: '$a+8K', len: '4K', mode: [] },
      { op: 'join', thread: 't1', timeout_ms: 100 },
      { op: 'uffd_read', fd: '$u' },
      { op: 'peek', addr: '$a+8K', len: '4K' },
    ]);
    expect(msgs(r[6]!)).toEqual(['$a+0x2000']);
    expect(msgs(r[9]!)).toEqual(['$a+0x2000']);
    expect(r[11]).toMatchObject({ ret: 0, async_faults: [] });
    expect(msgs(r[12]!)).toEqual([]);
    expect(r[13]!.bytes).toEqual([[7, 1]]); // the queued touch ran after the blocked one
  });

  it('refuses a synchronous op on the blocked thread as bad input (the executor would wait for it forever)', async () => {
    const r = await run([...setup, touch('$a+8K', 1), { op: 'get_mempolicy', thread: 't1' }]);
    expect(r[6]).toMatchObject({ i: 6, op: 'get_mempolicy', invalid: expect.stringMatching(/^thread: the thread is still blocked/) });
  });

  it('runs queued touches in order once the thread is woken, each faulting at most once', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.integer({ min: 1, max: 6 }), { minLength: 1, maxLength: 5 }), async (pages) => {
        // touch 0 blocks at $a (MISSING); the others queue; each copy resolves the page the thread waits on
        const ts = [0, ...pages].map((p, j) => touch(`$a+${p * 4}K`, j + 1));
        const script: object[] = [...setup, ...ts];
        const faulted = new Set<number>();
        for (const p of [0, ...pages]) {
          if (faulted.has(p)) continue;
          faulted.add(p);
          script.push({ op: 'uffd_read', fd: '$u', max: 8, timeout_ms: 100 });
          script.push({ op: 'uffdio_copy', fd: '$u', dst: `$a+${p * 4}K`, len: '4K', fill: 0 });
        }
        script.push({ op: 'join', thread: 't1', timeout_ms: 100 });
        for (const p of new Set([0, ...pages])) script.push({ op: 'peek', addr: `$a+${p * 4}K`, len: '4K' });
        const r = await run(script);
        const reads = r.filter((x) => x.op === 'uffd_read');
        // one message per distinct page, in the order the thread reaches them
        expect(reads.map(msgs)).toEqual([...faulted].map((p) => [p ? `$a+0x${(p * 4096).toString(16)}` : '$a']));
        expect(r.find((x) => x.op === 'join')).toMatchObject({ ret: 0 });
        // each page holds the fill of the last touch of it
        const last = new Map<number, number>();
        [0, ...pages].forEach((p, j) => last.set(p, j + 1));
        const peeks = r.filter((x) => x.op === 'peek');
        expect(peeks.map((x) => x.bytes)).toEqual([...new Set([0, ...pages])].map((p) => [[last.get(p), 1]]));
      }),
      { numRuns: 30 },
    );
  });
});

describe('process_mbind (proposal, simulator only)', () => {
  const RW = ['PROT_READ', 'PROT_WRITE'];
  const ANON = ['MAP_PRIVATE', 'MAP_ANONYMOUS'];
  const script = (feature: string) => [
    { op: 'sysfs', path: '/sys/kernel/memtwin/features/process_mbind', value: feature },
    { op: 'spawn', name: 'p' },
    { op: 'mmap', len: '2M', prot: RW, flags: ANON, name: 'h', in: 'p' },
    { op: 'madvise', addr: '$h', len: '2M', advice: 'MADV_NOHUGEPAGE', in: 'p' },
    { op: 'process_mbind', target: 'p', addr: '$h', len: '2M', mode: 'MPOL_BIND', nodes: [1], flags: ['MPOL_MF_MOVE'] },
    { op: 'touch', addr: '$h', len: '2M', write: true, in: 'p' },
    { op: 'get_mempolicy', addr: '$h', flags: ['MPOL_F_ADDR'], in: 'p' },
    { op: 'numa_maps', addr: '$h', in: 'p' },
  ];

  it("binds another process's range when the feature is on, and is ENOSYS while it is off", async () => {
    const on = await run(script('1'));
    expect(on[4]).toMatchObject({ op: 'process_mbind', ret: 0 });
    expect(on[6]).toMatchObject({ mode: 'MPOL_BIND', nodes: [1] });
    const off = await run(script('0'));
    expect(off[4]).toMatchObject({ ret: -1, errno: 'ENOSYS' });
    expect(off[6]).toMatchObject({ mode: 'MPOL_DEFAULT' });
  });
});
