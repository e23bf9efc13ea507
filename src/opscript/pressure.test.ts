/**
 * The memory-pressure ops on the shared side (ops.ts parsing, runner.ts
 * shaping, diff.ts comparison, the native encoding): swap, cgroup,
 * cgroup_enter, cgroup_stat, and the results of OOM-killed processes. The
 * real kernel's side is in pressure_linux.test.ts.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { BadOp, CGROUP_NAME_MAX, SWAP_MAX, SWAP_MIN, parseOp, rangeTable } from './ops.ts';
import { ScriptRunner } from './runner.ts';
import { SimBackend } from './sim_backend.ts';
import { encodeOp } from './linux_backend.ts';
import { diffRuns } from './diff.ts';
import type { Backend, RawResult, ResolvedOp } from './backend.ts';
import { smallKernel } from '../testing/fixtures.ts';

const bad = (o: Record<string, unknown>): string => {
  try {
    parseOp(JSON.stringify(o), 0);
  } catch (e) {
    expect(e).toBeInstanceOf(BadOp);
    return (e as Error).message;
  }
  throw new Error(`expected bad input: ${JSON.stringify(o)}`);
};
const args = (o: Record<string, unknown>): Record<string, unknown> => parseOp(JSON.stringify(o), 0).a;

describe('parsing the memory-pressure ops', () => {
  it('swap: a multiple of 4K from 8K (a header and one slot) to 64G', () => {
    expect(args({ op: 'swap', size: '64M' })).toEqual({ size: 64 << 20 });
    expect(args({ op: 'swap', size: 8192 })).toEqual({ size: 8192 });
    expect(args({ op: 'swap', size: '64G' })).toEqual({ size: SWAP_MAX });
    expect(bad({ op: 'swap', size: '4K' })).toBe(
      'size: expected a size from 8K to 64G (a number, or a string like "4K", "2M", "1G"), got "4K"',
    );
    expect(bad({ op: 'swap', size: 0 })).toMatch(/^size: expected a size from 8K to 64G/);
    expect(bad({ op: 'swap', size: '65G' })).toMatch(/^size: expected a size from 8K to 64G/);
    expect(bad({ op: 'swap', size: 12289 })).toBe('size: expected a multiple of 4K (a swap area is made of 4K slots), got 12289');
    expect(bad({ op: 'swap' })).toBe('size: required field missing');
    expect(bad({ op: 'swap', size: '1M', prio: 1 })).toBe('unknown field "prio" for op swap');
  });

  it('swap: every size in range parses to itself, every other is refused', () => {
    fc.assert(
      fc.property(fc.integer({ min: -1, max: SWAP_MAX + 8192 }), (n) => {
        const ok = n >= SWAP_MIN && n <= SWAP_MAX && n % 4096 === 0;
        if (ok) expect(args({ op: 'swap', size: n }).size).toBe(n);
        else expect(() => parseOp(JSON.stringify({ op: 'swap', size: n }), 0)).toThrow(BadOp);
      }),
    );
  });

  it('cgroup: a directory name and optional limits in bytes or "max"', () => {
    expect(args({ op: 'cgroup', name: 'g-1_x', memory_max: '16M', memory_high: 'max', swap_max: 0 })).toEqual({
      name: 'g-1_x',
      memory_max: 16 << 20,
      memory_high: 'max',
      swap_max: 0,
    });
    expect(args({ op: 'cgroup', name: 'g' })).toEqual({ name: 'g' });
    expect(args({ op: 'cgroup', name: 'g', memory_max: 2 ** 52 }).memory_max).toBe(2 ** 52);
    for (const name of ['', '.', '..', 'a/b', 'memory.max', 'cgroup.procs', 'a b', 'x'.repeat(CGROUP_NAME_MAX + 1), 7])
      expect(bad({ op: 'cgroup', name })).toMatch(/^name: expected a cgroup name of 1 to 64 letters, digits, "_" and "-"/);
    expect(args({ op: 'cgroup', name: 'x'.repeat(CGROUP_NAME_MAX) }).name).toHaveLength(CGROUP_NAME_MAX);
    expect(bad({ op: 'cgroup', name: 'g', memory_max: 'MAX' })).toMatch(/^memory_max: expected a size from 0 to 2\^52/);
    expect(bad({ op: 'cgroup', name: 'g', swap_max: -1 })).toMatch(/^swap_max: expected a size from 0 to 2\^52/);
    expect(bad({ op: 'cgroup', name: 'g', memory_max: 2 ** 52 + 1 })).toMatch(/^memory_max: expected a size from 0 to 2\^52/);
    expect(bad({ op: 'cgroup', name: 'g', memory_low: '1M' })).toBe('unknown field "memory_low" for op cgroup');
  });

  it('cgroup_enter and cgroup_stat name a group', () => {
    expect(args({ op: 'cgroup_enter', name: 'g', in: 'p' })).toEqual({ name: 'g' });
    expect(args({ op: 'cgroup_stat', name: 'g' })).toEqual({ name: 'g' });
    expect(bad({ op: 'cgroup_stat' })).toBe('name: required field missing');
    expect(bad({ op: 'cgroup_enter', name: '../x' })).toMatch(/^name: expected a cgroup name/);
  });

  it('documents the ranges in the table docs/op-script.md carries', () => {
    expect(rangeTable()).toContain('| `swap` | `size`: a multiple of 4K from 8K to 64G |');
    expect(rangeTable()).toContain(
      '| `cgroup` | `memory_max`: 0 to 2^52 bytes, or "max"; `memory_high`: 0 to 2^52 bytes, or "max"; `swap_max`: 0 to 2^52 bytes, or "max" |',
    );
  });
});

/**
 * A backend that answers from a table (op index -> raw result; ret 0 by
 * default) and records what reached it: the runner's own answers (killed
 * processes, groups never made) must not.
 */
class Scripted implements Backend {
  readonly name = 'linux' as const;
  readonly seen: ResolvedOp[] = [];
  constructor(private readonly answers: Record<number, RawResult> = {}) {}
  async exec(op: ResolvedOp): Promise<RawResult> {
    this.seen.push(op);
    if (op.op === 'mmap') return { ret: 0, addr: 0x7f0000000000 + op.i * 0x10000000 };
    return { ret: 0, ...this.answers[op.i] };
  }
  async close(): Promise<void> {}
}

const lines = (ops: Record<string, unknown>[]): string => ops.map((o) => JSON.stringify(o)).join('\n');
const RW = ['PROT_READ', 'PROT_WRITE'];
const ANON = ['MAP_PRIVATE', 'MAP_ANONYMOUS'];

describe('OOM-killed processes', () => {
  const script = lines([
    { op: 'spawn', name: 'p' }, // 0
    { op: 'spawn', name: 'q' }, // 1
    { op: 'cgroup', name: 'g', memory_max: '16M', swap_max: 0 }, // 2
    { op: 'cgroup_enter', name: 'g', in: 'p' }, // 3
    { op: 'mmap', len: '64M', prot: RW, flags: ANON, name: 'h', in: 'p' }, // 4
    { op: 'touch', addr: '$h', len: '64M', write: true, in: 'p' }, // 5: the kill
    { op: 'touch', addr: '$h', len: '4K', write: true, in: 'p' }, // 6
    { op: 'peek', addr: '$h', len: '4K', in: 'p' }, // 7
    { op: 'mmap', len: '4K', prot: RW, flags: ANON, name: 'o', in: 'q' }, // 8
    { op: 'touch', addr: '$o', len: '4K', write: true, in: 'q' }, // 9
    { op: 'cgroup_stat', name: 'g' }, // 10
    { op: 'cgroup_enter', name: 'g', in: 'p' }, // 11
  ]);

  it('the op whose fault killed answers signal SIGKILL; later ops in that process answer killed without running', async () => {
    const be = new Scripted({
      5: { ret: -1, signal: 'SIGKILL', ns: 0 },
      10: { ret: 0, current: 12345, events: { oom: 1, oom_kill: 1 } },
    });
    const r = new ScriptRunner(be);
    await r.run(script);
    expect(r.results[5]).toEqual({ i: 5, op: 'touch', ret: -1, signal: 'SIGKILL', ns: 0 });
    expect(Object.keys(r.results[5]!)).toEqual(['i', 'op', 'ret', 'signal', 'ns']);
    for (const i of [6, 7, 11]) expect(r.results[i]).toEqual({ i, op: r.results[i]!.op, ret: -1, killed: 'SIGKILL' });
    // the other process goes on
    expect(r.results[9]).toEqual({ i: 9, op: 'touch', ret: 0 });
    expect(r.results[10]).toEqual({ i: 10, op: 'cgroup_stat', ret: 0, current: 12345, events: { oom: 1, oom_kill: 1 } });
    expect(be.seen.map((o) => o.i)).toEqual([0, 1, 2, 3, 4, 5, 8, 9, 10]);
    expect(r.errors).toBe(4);
  });

  it('a process the OOM killer chose while another ran: the backend says killed, and the runner keeps saying it', async () => {
    const be = new Scripted({ 6: { ret: -1, killed: 'SIGKILL', ns: 0 } });
    const r = new ScriptRunner(be);
    await r.run(script);
    expect(r.results[5]).toEqual({ i: 5, op: 'touch', ret: 0 });
    expect(r.results[6]).toEqual({ i: 6, op: 'touch', ret: -1, killed: 'SIGKILL', ns: 0 });
    expect(r.results[7]).toEqual({ i: 7, op: 'peek', ret: -1, killed: 'SIGKILL' });
    expect(be.seen.map((o) => o.i)).not.toContain(7);
  });

  it('a fault signal other than the OOM kill keeps its address and kills nothing', async () => {
    const be = new Scripted({ 6: { ret: -1, signal: 'SIGSEGV', at: 0x7f0040000000 + 0x1000 } });
    const r = new ScriptRunner(be);
    await r.run(script);
    expect(r.results[6]).toEqual({ i: 6, op: 'touch', ret: -1, signal: 'SIGSEGV', at: '$h+0x1000' });
    expect(r.results[7]).toEqual({ i: 7, op: 'peek', ret: 0 });
  });
});

describe('memory cgroups in the runner', () => {
  it('numbers the groups the backend made in creation order; a failed one takes no number', async () => {
    const be = new Scripted({ 2: { ret: -1, errno: 'ENOMEM' } });
    const r = new ScriptRunner(be);
    await r.run(
      lines([
        { op: 'spawn', name: 'p' },
        { op: 'cgroup', name: 'a' },
        { op: 'cgroup', name: 'b' },
        { op: 'cgroup', name: 'c' },
        { op: 'cgroup_enter', name: 'c', in: 'p' },
        { op: 'cgroup_stat', name: 'a' },
      ]),
    );
    expect(be.seen.map((o) => [o.op, o.cg])).toEqual([
      ['spawn', undefined],
      ['cgroup', 0],
      ['cgroup', 1],
      ['cgroup', 1],
      ['cgroup_enter', 1],
      ['cgroup_stat', 0],
    ]);
    expect(encodeOp(be.seen[4]!)).toBe('cgroup_enter i=4 in=1 thread=0 cg=1');
  });

  const invalid = async (ops: Record<string, unknown>[], answers: Record<number, RawResult> = {}): Promise<string> => {
    const r = new ScriptRunner(new Scripted(answers));
    await r.run(lines(ops));
    expect(r.invalid).toBe(true);
    return String(r.results.at(-1)!.invalid);
  };

  it('refuses a group named twice, an unknown group, a group whose cgroup op failed, and cgroup_enter in the main process', async () => {
    expect(
      await invalid([
        { op: 'cgroup', name: 'g' },
        { op: 'cgroup', name: 'g' },
      ]),
    ).toBe('name: cgroup "g" already exists');
    expect(await invalid([{ op: 'cgroup_stat', name: 'g' }])).toBe('name: unknown cgroup "g" (make it with a cgroup op first)');
    expect(
      await invalid(
        [
          { op: 'cgroup', name: 'g' },
          { op: 'cgroup_stat', name: 'g' },
        ],
        { 0: { ret: -1, errno: 'ENOSPC' } },
      ),
    ).toBe('name: cgroup "g" does not exist (its cgroup op, i=0, failed)');
    expect(
      await invalid([
        { op: 'cgroup', name: 'g' },
        { op: 'cgroup_enter', name: 'g' },
      ]),
    ).toMatch(/^in: cgroup_enter only in a spawned process/);
  });

  it('answers ops on a group the backend could not make as unsupported, with the reason', async () => {
    const be = new Scripted({ 1: { ret: -1, errno: 'EOPNOTSUPP', unsupported: 'memory_high: cgroup v1 has no memory.high' } });
    const r = new ScriptRunner(be);
    await r.run(
      lines([
        { op: 'spawn', name: 'p' },
        { op: 'cgroup', name: 'g', memory_high: '1M' },
        { op: 'cgroup_enter', name: 'g', in: 'p' },
        { op: 'cgroup_stat', name: 'g' },
      ]),
    );
    expect(r.results[1]).toEqual({ i: 1, op: 'cgroup', unsupported: 'memory_high: cgroup v1 has no memory.high', ret: -1 });
    expect(r.results[3]).toEqual({
      i: 3,
      op: 'cgroup_stat',
      unsupported: 'cgroup "g" was not made (i=1: memory_high: cgroup v1 has no memory.high)',
    });
    expect(be.seen).toHaveLength(2);
  });

  it('encodes cgroup limits for the executor: bytes or max', () => {
    const op = parseOp(JSON.stringify({ op: 'cgroup', name: 'g', memory_max: '16M', swap_max: 'max' }), 7);
    expect(encodeOp({ ...op, proc: 0, thr: 0, cg: 2 })).toBe('cgroup i=7 in=0 thread=0 cg=2 name=g memory_max=16777216 swap_max=max');
    const sw = parseOp('{"op":"swap","size":"64M"}', 3);
    expect(encodeOp({ ...sw, proc: 0, thr: 0 })).toBe('swap i=3 in=0 thread=0 size=67108864');
  });
});

describe('the simulator runs the memory-pressure ops', () => {
  it('makes the swap area and the group; a process over memory.max without swap is OOM-killed, as the contract shapes it', async () => {
    const r = new ScriptRunner(new SimBackend(smallKernel()));
    await r.run(
      lines([
        { op: 'sysfs', path: '/sys/kernel/mm/transparent_hugepage/enabled', value: 'never' },
        { op: 'spawn', name: 'p' },
        { op: 'spawn', name: 'q' },
        { op: 'cgroup', name: 'g', memory_max: '16M', swap_max: 0 },
        { op: 'cgroup_enter', name: 'g', in: 'p' },
        { op: 'mmap', len: '64M', prot: ['PROT_READ', 'PROT_WRITE'], flags: ['MAP_PRIVATE', 'MAP_ANONYMOUS'], name: 'h', in: 'p' },
        { op: 'mmap', len: '4M', prot: ['PROT_READ', 'PROT_WRITE'], flags: ['MAP_PRIVATE', 'MAP_ANONYMOUS'], name: 'o', in: 'q' },
        { op: 'touch', addr: '$h', len: '8M', write: true, in: 'p' },
        { op: 'cgroup_stat', name: 'g' },
        { op: 'touch', addr: '$h', len: '64M', write: true, in: 'p' },
        { op: 'peek', addr: '$h', len: '4K', in: 'p' },
        { op: 'touch', addr: '$o', len: '4M', write: true, in: 'q' },
        { op: 'cgroup_stat', name: 'g' },
      ]),
    );
    expect(r.invalid).toBe(false);
    expect(r.results[3]).toMatchObject({ op: 'cgroup', ret: 0 });
    expect(r.results[8]).toMatchObject({ ret: 0, current: 8 << 20, events: { oom: 0, oom_kill: 0 } });
    expect(r.results[9]).toEqual({ i: 9, op: 'touch', ret: -1, signal: 'SIGKILL', ns: expect.any(Number) });
    expect(r.results[10]).toEqual({ i: 10, op: 'peek', ret: -1, killed: 'SIGKILL' });
    expect(r.results[11]).toMatchObject({ op: 'touch', ret: 0 }); // q, outside the group, goes on
    // the victim's memory was freed: nothing is charged to the group any more
    expect(r.results[12]).toMatchObject({ ret: 0, current: 0, events: { oom: 1, oom_kill: 1 } });
  });

  it('a process killed while another one ran answers killed from its next op; ops aimed at it answer ESRCH', async () => {
    const r = new ScriptRunner(new SimBackend(smallKernel()));
    await r.run(
      lines([
        { op: 'sysfs', path: '/sys/kernel/mm/transparent_hugepage/enabled', value: 'never' },
        { op: 'spawn', name: 'big' },
        { op: 'spawn', name: 'small' },
        { op: 'cgroup', name: 'g', memory_max: '16M' },
        { op: 'cgroup_enter', name: 'g', in: 'big' },
        { op: 'cgroup_enter', name: 'g', in: 'small' },
        { op: 'mmap', len: '12M', prot: ['PROT_READ', 'PROT_WRITE'], flags: ['MAP_PRIVATE', 'MAP_ANONYMOUS'], name: 'b', in: 'big' },
        { op: 'mmap', len: '8M', prot: ['PROT_READ', 'PROT_WRITE'], flags: ['MAP_PRIVATE', 'MAP_ANONYMOUS'], name: 's', in: 'small' },
        { op: 'touch', addr: '$b', len: '12M', write: true, in: 'big' },
        { op: 'touch', addr: '$s', len: '8M', write: true, in: 'small', comment: 'over the limit: the largest (big) is killed' },
        { op: 'touch', addr: '$b', len: '4K', write: true, in: 'big' },
        { op: 'process_madvise', target: 'big', iovec: [['$s', '4K']], advice: 'MADV_COLD', in: 'small' },
        { op: 'cgroup_stat', name: 'g' },
      ]),
    );
    expect(r.invalid).toBe(false);
    expect(r.results[9]).toMatchObject({ op: 'touch', ret: 0 });
    expect(r.results[10]).toMatchObject({ i: 10, op: 'touch', ret: -1, killed: 'SIGKILL' });
    expect(r.results[10]!.signal).toBeUndefined();
    expect(r.results[11]).toMatchObject({ ret: -1, errno: 'ESRCH' });
    expect(r.results[12]).toMatchObject({ ret: 0, current: 8 << 20, events: { oom: 1, oom_kill: 1 } });
  });
});

describe('oom_score_adj and oom_score on the simulator', () => {
  it('the main process writes its own oom_score_adj (as the executor writes knobs); any process reads its own', async () => {
    const r = new ScriptRunner(new SimBackend(smallKernel()));
    await r.run(
      lines([
        { op: 'spawn', name: 'q' },
        { op: 'sysfs', path: '/proc/self/oom_score_adj', value: '1000', in: 'q' },
        { op: 'read', path: '/proc/self/oom_score_adj', in: 'q' },
        { op: 'read', path: '/proc/self/oom_score_adj' },
        { op: 'read', path: '/proc/self/oom_score' },
        { op: 'sysfs', path: '/proc/self/oom_score_adj', value: '1001' },
        { op: 'sysfs', path: '/proc/self/oom_score_adj', value: 'x' },
      ]),
    );
    expect(r.results.map((l) => l.text ?? l.errno ?? l.ret)).toEqual([0, 0, '0\n', '1000\n', expect.any(String), 'EINVAL', 'EINVAL']);
    // adj 1000 puts the score near the top of its 0..1333 range (1332 for the executor on this machine's 24 GiB)
    const score = Number(r.results[4]!.text);
    expect(score).toBeGreaterThan(1300);
    expect(score).toBeLessThanOrEqual(1333);
  });
});

describe('what diff compares', () => {
  it('compares cgroup_stat workingset counters as zero or not, and current only within current_within', () => {
    const ws = (refault_anon: number, refault_file: number, current = 0, within?: number) => ({
      i: 0,
      op: 'cgroup_stat',
      ret: 0,
      current,
      ...(within === undefined ? {} : { current_within: within }),
      events: { oom: 0, oom_kill: 0 },
      workingset: { refault_anon, refault_file },
    });
    expect(diffRuns([ws(5120, 0)], [ws(3151, 0)]).disagreements).toEqual([]);
    expect(diffRuns([ws(5120, 0)], [ws(0, 0)]).disagreements.map((d) => d.field)).toEqual(['workingset']);
    expect(diffRuns([ws(0, 3072)], [ws(0, 0)]).disagreements.map((d) => d.field)).toEqual(['workingset']);
    // File refaults Linux counts and the simulator does not (the executor's own file pages) are not a disagreement.
    expect(diffRuns([ws(0, 0)], [ws(0, 12)]).disagreements).toEqual([]);
    expect(diffRuns([ws(0, 0)], [ws(7, 0)]).disagreements.map((d) => d.field)).toEqual(['workingset']);
    expect(diffRuns([ws(0, 0, 0, 1 << 20)], [ws(0, 0, 77 << 10, 1 << 20)]).disagreements).toEqual([]);
    expect(diffRuns([ws(0, 0, 16 << 20, 1 << 20)], [ws(0, 0, 77 << 10, 1 << 20)]).disagreements.map((d) => d.field)).toEqual(['current']);
  });
  it('compares cgroup_stat events and killed, not the bytes charged', () => {
    const stat = (current: number, oom_kill: number) => ({ i: 0, op: 'cgroup_stat', ret: 0, current, events: { oom: 1, oom_kill } });
    expect(diffRuns([stat(16 << 20, 1)], [stat(17 << 20, 1)]).disagreements).toEqual([]);
    expect(diffRuns([stat(16 << 20, 1)], [stat(16 << 20, 0)]).disagreements.map((d) => d.field)).toEqual(['events']);
    const a = [{ i: 1, op: 'peek', ret: -1, killed: 'SIGKILL' }];
    expect(diffRuns(a, [{ i: 1, op: 'peek', ret: 0, bytes: [[0, 1]] }]).disagreements.map((d) => d.field)).toEqual([
      'ret',
      'killed',
      'bytes',
    ]);
    const s = [{ i: 1, op: 'touch', ret: -1, signal: 'SIGKILL' }];
    expect(diffRuns(s, [{ i: 1, op: 'touch', ret: -1, killed: 'SIGKILL' }]).disagreements.map((d) => d.field)).toEqual([
      'signal',
      'killed',
    ]);
  });

  it('compares pagemap runs with their swapped mark', () => {
    const pm = (pages: unknown) => [{ i: 0, op: 'pagemap', ret: 0, pages }];
    const swapped = [{ n: 4, present: false, node: null, size: null, swapped: true }];
    const absent = [{ n: 4, present: false, node: null, size: null }];
    expect(diffRuns(pm(swapped), pm(absent)).disagreements.map((d) => d.field)).toEqual(['pages']);
    expect(diffRuns(pm(swapped), pm(swapped)).disagreements).toEqual([]);
  });
});
