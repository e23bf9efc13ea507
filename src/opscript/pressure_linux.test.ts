/**
 * The memory-pressure ops on this machine's real kernel (the linux
 * backend): a swap area made and removed, a memory cgroup made and
 * removed, and the shape of an OOM kill. Everything here touches the real
 * machine: skipped, with a notice, where the linux backend cannot run. The
 * kill tests (a run killed with a swap area or a cgroup on) are in
 * journal.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { LinuxBackend, linuxBackendUnavailable } from './linux_backend.ts';
import { ScriptRunner, type ResultLine } from './runner.ts';

const noLinux = linuxBackendUnavailable();
if (noLinux) console.warn(`\n*** memory-pressure real-kernel tests SKIPPED: ${noLinux} ***\n`);

const SWAP_DIR = '/var/lib/memtwin/swap';
const RW = ['PROT_READ', 'PROT_WRITE'];
const ANON = ['MAP_PRIVATE', 'MAP_ANONYMOUS'];
const lines = (ops: Record<string, unknown>[]): string => ops.map((o) => JSON.stringify(o)).join('\n') + '\n';

/** The swap areas /proc/swaps lists in memtwin's swap directory. */
const runSwapAreas = (): string[] =>
  readFileSync('/proc/swaps', 'utf8')
    .split('\n')
    .slice(1)
    .map((l) => l.split(/\s+/)[0]!)
    .filter((f) => f.startsWith(`${SWAP_DIR}/`));
const swapFiles = (): string[] => (existsSync(SWAP_DIR) ? readdirSync(SWAP_DIR) : []);

/** memtwin's run directories of memory cgroups (memtwin-<run id>), wherever the memory controller is. */
function runCgroupDirs(): string[] {
  const out: string[] = [];
  const walk = (dir: string, depth: number): void => {
    let entries: string[];
    try {
      entries = readdirSync(dir, { withFileTypes: true })
        .filter((d) => d.isDirectory())
        .map((d) => d.name);
    } catch {
      return;
    }
    for (const e of entries) {
      if (/^memtwin-.*-\d+-\d+$/.test(e)) out.push(`${dir}/${e}`);
      else if (depth > 0) walk(`${dir}/${e}`, depth - 1);
    }
  };
  for (const root of ['/sys/fs/cgroup/memory', '/sys/fs/cgroup/unified', '/sys/fs/cgroup']) walk(root, 4);
  return [...new Set(out)];
}

/** Run a script on the linux backend; `during` sees each result line as it comes (the run is still on). */
async function runLinux(text: string, during: (line: ResultLine) => void = () => {}): Promise<ResultLine[]> {
  const b = new LinuxBackend();
  const r = new ScriptRunner(b, during);
  try {
    await r.run(text);
  } finally {
    await b.close();
  }
  expect(r.failed).toBeUndefined();
  expect(r.invalid).toBe(false);
  return r.results;
}

describe.skipIf(noLinux !== undefined)('memory pressure on the real kernel', () => {
  it('swap: a swap file is made and enabled for the run, pages go out and come back with their contents, and it is gone after', async () => {
    const before = { areas: runSwapAreas(), files: swapFiles() };
    let during: { areas: string[]; files: string[] } | undefined;
    const res = await runLinux(
      lines([
        { op: 'swap', size: '32M' },
        { op: 'mmap', len: '4M', prot: RW, flags: ANON, name: 'a' },
        { op: 'madvise', addr: '$a', len: '4M', advice: 'MADV_NOHUGEPAGE' },
        { op: 'touch', addr: '$a', len: '4M', write: true, fill: 9 },
        { op: 'madvise', addr: '$a', len: '2M', advice: 'MADV_PAGEOUT' },
        { op: 'pagemap', addr: '$a', len: '4M' },
        { op: 'peek', addr: '$a', len: '4M' },
        { op: 'pagemap', addr: '$a', len: '4M' },
      ]),
      (l) => {
        if (l.i === 0) during = { areas: runSwapAreas(), files: swapFiles() };
      },
    );
    expect(res[0]).toMatchObject({ i: 0, op: 'swap', ret: 0 });
    // one new area, one new file, named after the run: <run id>-0.swap
    expect(during!.areas.filter((f) => !before.areas.includes(f))).toHaveLength(1);
    const made = during!.files.filter((f) => !before.files.includes(f));
    expect(made).toHaveLength(1);
    expect(made[0]).toMatch(/^.+-\d+-\d+-0\.swap$/);
    expect(res[5]!.pages).toEqual([
      { n: 512, present: false, node: null, size: null, swapped: true },
      { n: 512, present: true, node: 0, size: '4K' },
    ]);
    expect(res[6]!.bytes).toEqual([[9, 1024]]); // swapped back in with what was written
    expect(JSON.stringify(res[7]!.pages)).not.toContain('swapped');
    expect({ areas: runSwapAreas(), files: swapFiles() }).toEqual(before);
  });

  it('cgroup: a memory cgroup is made with its limits for the run, and removed after', async () => {
    const before = runCgroupDirs();
    let group: string | undefined;
    let limits: Record<string, string> = {};
    const res = await runLinux(
      lines([
        { op: 'spawn', name: 'p' },
        { op: 'cgroup', name: 'g', memory_max: '32M', swap_max: '8M' },
        { op: 'cgroup_enter', name: 'g', in: 'p' },
        { op: 'mmap', len: '4M', prot: RW, flags: ANON, name: 'a', in: 'p' },
        { op: 'touch', addr: '$a', len: '4M', write: true, in: 'p' },
        { op: 'cgroup_stat', name: 'g' },
        { op: 'cgroup', name: 'h', memory_high: '1M' },
      ]),
      (l) => {
        if (l.i !== 2) return;
        const run = runCgroupDirs().filter((d) => !before.includes(d));
        expect(run).toHaveLength(1);
        group = `${run[0]}/g`;
        const v1 = existsSync(`${group}/memory.limit_in_bytes`);
        const read = (f: string): string => readFileSync(`${group}/${f}`, 'utf8').trim();
        limits = v1
          ? { max: read('memory.limit_in_bytes'), memsw: read('memory.memsw.limit_in_bytes'), procs: read('cgroup.procs') }
          : { max: read('memory.max'), swap: read('memory.swap.max'), procs: read('cgroup.procs') };
      },
    );
    expect(res.slice(0, 3).map((l) => l.ret)).toEqual([0, 0, 0]);
    expect(group).toBeDefined();
    if ('memsw' in limits) expect(limits).toMatchObject({ max: String(32 << 20), memsw: String(40 << 20) });
    else expect(limits).toMatchObject({ max: String(32 << 20), swap: String(8 << 20) });
    expect(limits.procs).toMatch(/^\d+$/); // the spawned process, alone
    // 4M touched in the group: charged (and more: page tables, the executor's own pages)
    expect(res[5]!.current as number).toBeGreaterThanOrEqual(4 << 20);
    expect(res[5]!.events).toEqual({ oom: 0, oom_kill: 0 });
    // memory_high: v1 has none; nothing made
    if ('memsw' in limits) expect(res[6]!.unsupported).toBe("memory_high: cgroup v1 (the machine's memory controller) has no memory.high");
    else expect(res[6]!.ret).toBe(0);
    expect(existsSync(group!)).toBe(false);
    expect(runCgroupDirs()).toEqual(before);
  });

  it('OOM kill: a process in a 16M group without swap that touches 64M is killed; its later ops answer killed; the other process goes on', async () => {
    const before = runCgroupDirs();
    const res = await runLinux(
      lines([
        { op: 'spawn', name: 'p' }, // 0
        { op: 'spawn', name: 'q' }, // 1
        { op: 'cgroup', name: 'g', memory_max: '16M', swap_max: 0 }, // 2
        { op: 'cgroup_enter', name: 'g', in: 'p' }, // 3
        { op: 'mmap', len: '64M', prot: RW, flags: ANON, name: 'h', in: 'p' }, // 4
        { op: 'mmap', len: '4M', prot: RW, flags: ANON, name: 'o', in: 'q' }, // 5
        { op: 'touch', addr: '$h', len: '64M', write: true, fill: 7, in: 'p' }, // 6: killed here
        { op: 'touch', addr: '$h', len: '4K', write: true, in: 'p' }, // 7
        { op: 'peek', addr: '$h', len: '4K', in: 'p' }, // 8
        { op: 'touch', addr: '$o', len: '4M', write: true, fill: 3, in: 'q' }, // 9
        { op: 'peek', addr: '$o', len: '4M', in: 'q' }, // 10
        { op: 'cgroup_stat', name: 'g' }, // 11
        { op: 'migrate_pages', target: 'p', old_nodes: [0], new_nodes: [0] }, // 12
      ]),
    );
    expect(res.slice(0, 6).map((l) => l.ret)).toEqual([0, 0, 0, 0, '$h', '$o']);
    expect(res[6]).toEqual({ i: 6, op: 'touch', ret: -1, signal: 'SIGKILL', ns: 0 });
    expect(res[7]).toEqual({ i: 7, op: 'touch', ret: -1, killed: 'SIGKILL' });
    expect(res[8]).toEqual({ i: 8, op: 'peek', ret: -1, killed: 'SIGKILL' });
    expect(res[9]).toMatchObject({ i: 9, op: 'touch', ret: 0 });
    expect(res[10]).toMatchObject({ i: 10, op: 'peek', ret: 0, bytes: [[3, 1024]] });
    expect(res[11]).toMatchObject({ i: 11, op: 'cgroup_stat', ret: 0, events: { oom: 1, oom_kill: 1 } });
    expect(res[12]).toMatchObject({ i: 12, op: 'migrate_pages', ret: -1, errno: 'ESRCH' });
    expect(runCgroupDirs()).toEqual(before);
  });
});
