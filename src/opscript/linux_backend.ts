/**
 * The real-kernel backend: drives native/build/memtwin-native (see
 * native/PROTOCOL.md) one op at a time over a pipe. The executor runs in
 * its own process group, so a crash or hang on the real kernel never takes
 * memtwin down: a hang is reported as a timeout on that op, a death as an
 * executor error, after which the journal of what it changed on the machine
 * is replayed (`memtwin-native --restore`, native/PROTOCOL.md "Journal").
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { createInterface } from 'node:readline';
import { fromRoot } from '../util/paths.ts';
import type { Backend, RawResult, ResolvedOp } from './backend.ts';
import { damonArgs, proposalUnsupported } from './ops.ts';

export const NATIVE_BIN = fromRoot('native', 'build', 'memtwin-native');
/** Where executors journal their changes to the machine (MEMTWIN_JOURNAL_DIR overrides it). */
export const JOURNAL_DIR = '/var/lib/memtwin/journal';

/** What `memtwin-native --restore` did: its exit status (0 all restored, 1 something not, 3 lock busy) and report. */
export interface RestoreResult {
  status: number;
  stdout: string;
  stderr: string;
}

/**
 * Replay the journals that killed executor runs left on this machine, under
 * the machine lock (waited for at most lockTimeoutMs, forever if undefined).
 */
export function restoreMachine(opts: { lockTimeoutMs?: number; env?: NodeJS.ProcessEnv; echo?: boolean } = {}): Promise<RestoreResult> {
  const why = linuxBackendUnavailable();
  if (why) return Promise.reject(new ExecutorError(`cannot restore: ${why}`));
  const args = ['--restore', ...(opts.lockTimeoutMs === undefined ? [] : [`--lock-timeout-ms=${opts.lockTimeoutMs}`])];
  return new Promise((res, rej) => {
    const p = spawn(NATIVE_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env });
    let stdout = '';
    let stderr = '';
    // echo: pass the report on as it comes (a wait for the lock is said at once)
    p.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      if (opts.echo) process.stdout.write(d);
    });
    p.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (opts.echo) process.stderr.write(d);
    });
    p.on('error', (e) => rej(new ExecutorError(`cannot run ${NATIVE_BIN}: ${e.message}`)));
    p.on('close', (code, sig) => res({ status: code ?? 128 + (sig ? osConstants.signals[sig] : 0), stdout, stderr }));
  });
}

export class ExecutorError extends Error {}

/** Why the linux backend cannot run here, or undefined if it can. */
export function linuxBackendUnavailable(): string | undefined {
  if (process.platform !== 'linux') return 'not running on Linux';
  if (!existsSync(NATIVE_BIN)) return `native executor not built (${NATIVE_BIN}); run: make -C native`;
  if (typeof process.getuid === 'function' && process.getuid() !== 0)
    return 'not root (pagemap node/PFN data, hugetlb pools and sysfs knobs need root)';
  return undefined;
}

const enc = (s: string): string =>
  s.replace(/[^A-Za-z0-9._/-]/g, (c) => [...Buffer.from(c)].map((b) => `%${b.toString(16).padStart(2, '0')}`).join(''));
const R = (n: number): string => `R${n}`;

/**
 * khugepaged_wait on a real kernel: poll khugepaged's full_scans counter
 * through the executor's `read` op (sent by `send`, which returns its text)
 * until it has grown by the op's `full_scans`, or the timeout passes.
 */
export async function khugepagedWait(op: ResolvedOp, send: (op: ResolvedOp) => Promise<string>): Promise<RawResult> {
  const path = '/sys/kernel/mm/transparent_hugepage/khugepaged/full_scans';
  const scans = async (): Promise<number> => Number((await send({ ...op, op: 'read', a: { path } })).trim());
  const t0 = Date.now();
  const target = (await scans()) + (op.a.full_scans ?? 2);
  const timeout = op.a.timeout_ms ?? 10000;
  for (;;) {
    if ((await scans()) >= target) return { ret: 0, ns: (Date.now() - t0) * 1e6 };
    if (Date.now() - t0 >= timeout) return { ret: -1, errno: 'ETIMEDOUT', ns: (Date.now() - t0) * 1e6 };
    await new Promise((res) => setTimeout(res, 10));
  }
}

/** The protocol line for one resolved op. */
export function encodeOp(op: ResolvedOp): string {
  const a = op.a;
  const kv: string[] = [op.op, `i=${op.i}`, `in=${op.proc}`];
  if (op.op !== 'join') kv.push(`thread=${op.thr}`);
  const add = (k: string, v: string | number): void => void kv.push(`${k}=${v}`);
  switch (op.op) {
    case 'sysfs':
      add('path', enc(a.path));
      add('value', enc(a.value));
      break;
    case 'read':
      add('path', enc(a.path));
      break;
    case 'hugetlb_pool':
      add('size', a.size);
      add('nr', a.nr);
      if (a.node !== undefined) add('node', a.node);
      break;
    case 'spawn':
    case 'fork':
      add('name', enc(a.name));
      break;
    case 'thread':
      add('cpu', a.cpu ?? -1);
      break;
    case 'setuid':
      add('uid', a.uid);
      add('gid', a.gid ?? -1);
      break;
    case 'set_dumpable':
      add('value', a.value);
      break;
    case 'mmap':
      add('h', op.h!);
      add('len', a.len);
      add('prot', a.prot);
      add('flags', a.flags);
      add('addr', a.addr !== undefined ? R(a.addr) : 0);
      add('align', a.align ?? 0);
      if (op.mfd !== undefined) {
        add('mfd', op.mfd);
        add('offset', a.offset ?? 0);
      }
      break;
    case 'open':
      add('mfd', op.mfd!);
      add('kind', a.kind === 'disk' ? 1 : 0);
      add('size', a.size);
      break;
    case 'memfd':
      add('mfd', op.mfd!);
      add('name', enc(a.name));
      add('size', a.size);
      add('flags', a.flags ?? 0);
      break;
    case 'munmap':
    case 'pagemap':
    case 'peek':
      add('addr', R(a.addr));
      add('len', a.len);
      if (op.op === 'munmap' && a.async) add('async', 1);
      break;
    case 'mprotect':
      add('addr', R(a.addr));
      add('len', a.len);
      add('prot', a.prot);
      break;
    case 'madvise':
      add('addr', R(a.addr));
      add('len', a.len);
      add('advice', a.advice);
      if (a.async) add('async', 1);
      break;
    case 'process_madvise':
      add('target', op.targetProc!);
      add('iov', (a.iovec as [number, number][]).map(([x, l]) => `${R(x)}:${l}`).join(','));
      add('advice', a.advice);
      add('flags', a.flags ?? 0);
      break;
    case 'touch':
      add('addr', R(a.addr));
      add('len', a.len);
      add('write', a.write ? 1 : 0);
      add('stride', a.stride ?? 4096);
      add('fill', a.fill ?? 1);
      add('async', a.async ? 1 : 0);
      break;
    case 'join':
      add('thread', op.joinThr!);
      add('timeout_ms', a.timeout_ms ?? 10000);
      break;
    case 'smaps':
    case 'numa_maps':
      add('addr', R(a.addr));
      break;
    case 'meminfo':
      if (a.node !== undefined) add('node', a.node);
      break;
    case 'vmstat':
      add('keys', (a.keys as string[]).map(enc).join(','));
      break;
    case 'set_mempolicy':
      add('mode', a.mode | (a.flags ?? 0));
      add('nodes', a.nodes === null ? 'null' : (a.nodes ?? []).join(','));
      break;
    case 'get_mempolicy':
      add('flags', a.flags ?? 0);
      add('addr', a.addr !== undefined ? R(a.addr) : 0);
      break;
    case 'mbind':
      add('addr', R(a.addr));
      add('len', a.len);
      add('mode', a.mode);
      add('nodes', a.nodes === null ? 'null' : (a.nodes ?? []).join(','));
      add('flags', a.flags ?? 0);
      break;
    case 'migrate_pages':
      add('target', op.targetProc!);
      add('old_nodes', a.old_nodes.join(','));
      add('new_nodes', a.new_nodes.join(','));
      break;
    case 'move_pages':
      add('target', op.targetProc!);
      add('pages', (a.pages as number[]).map(R).join(','));
      add('nodes', a.nodes === null ? 'null' : a.nodes.join(','));
      add('flags', a.flags ?? 0);
      break;
    case 'userfaultfd':
      add('fd', op.fd!);
      add('flags', a.flags ?? 0);
      break;
    case 'uffdio_api':
      add('fd', op.fd!);
      add('features', a.features ?? 0);
      break;
    case 'uffdio_register':
      add('fd', op.fd!);
      add('addr', R(a.addr));
      add('len', a.len);
      add('mode', a.mode);
      break;
    case 'uffdio_unregister':
    case 'uffdio_wake':
      add('fd', op.fd!);
      add('addr', R(a.addr));
      add('len', a.len);
      break;
    case 'uffdio_copy':
      add('fd', op.fd!);
      add('dst', R(a.dst));
      add('len', a.len);
      add('fill', a.fill ?? 1);
      add('mode', a.mode ?? 0);
      break;
    case 'uffdio_zeropage':
    case 'uffdio_writeprotect':
    case 'uffdio_continue':
    case 'uffdio_poison':
      add('fd', op.fd!);
      add('addr', R(a.addr));
      add('len', a.len);
      add('mode', a.mode ?? 0);
      break;
    case 'uffdio_move':
      add('fd', op.fd!);
      add('dst', R(a.dst));
      add('src', R(a.src));
      add('len', a.len);
      add('mode', a.mode ?? 0);
      break;
    case 'uffd_read':
      add('fd', op.fd!);
      add('max', a.max ?? 1);
      add('timeout_ms', a.timeout_ms ?? 1000);
      break;
    case 'swap':
      add('size', a.size);
      break;
    case 'cgroup':
      add('cg', op.cg!);
      add('name', enc(a.name));
      for (const f of ['memory_max', 'memory_high', 'swap_max']) if (a[f] !== undefined) add(f, a[f]);
      break;
    case 'cgroup_enter':
    case 'cgroup_stat':
      add('cg', op.cg!);
      break;
    case 'damon': {
      const d = damonArgs(a);
      add('addr', R(a.addr));
      add('len', a.len);
      add('aggrs', a.aggrs);
      add('sample_us', d.sample_us);
      add('aggr_us', d.aggr_us);
      add('min_nr_regions', d.min_nr_regions);
      add('max_nr_regions', d.max_nr_regions);
      if (a.hot_addr !== undefined) {
        add('hot_addr', R(a.hot_addr));
        add('hot_len', a.hot_len);
      }
      break;
    }
    default:
      throw new ExecutorError(`op ${op.op} has no native encoding`);
  }
  return kv.join(' ');
}

/** The executor's stderr lines that report a journal replay (passed on to memtwin's stderr). */
const RESTORE_PREFIX = 'memtwin-native: restore: ';

export class LinuxBackend implements Backend {
  readonly name = 'linux' as const;
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly lines: AsyncIterator<string>;
  private readonly exited: Promise<void>;
  private stderr = '';
  private partial = '';
  private dead: string | undefined;
  private closing = false;

  constructor(readonly timeoutMs = 120_000) {
    const why = linuxBackendUnavailable();
    if (why) throw new ExecutorError(`linux backend unavailable: ${why}`);
    this.child = spawn(NATIVE_BIN, [], { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    this.child.stderr.on('data', (d: Buffer) => this.onStderr(d.toString()));
    // A write to an executor that has died fails with EPIPE; the death itself
    // is reported by the next read (and the exit status by 'exit').
    this.child.stdin.on('error', () => {});
    this.exited = new Promise((res) =>
      this.child.on('exit', (code, sig) => {
        const last = this.stderr.trim().split('\n').pop();
        this.dead = `native executor exited (${sig ?? `status ${code}`})${last ? `: ${last}` : ''}`;
        res();
      }),
    );
    this.lines = createInterface({ input: this.child.stdout })[Symbol.asyncIterator]();
  }

  /** The executor's guardian process (its journal is <boot>-<pid>-<starttime>.journal). */
  get executorPid(): number | undefined {
    return this.child.pid;
  }

  /** Keep the tail of stderr for error messages; pass journal replay reports on. */
  private onStderr(text: string): void {
    const lines = (this.partial + text).split('\n');
    this.partial = lines.pop()!;
    for (const l of lines) {
      if (l.startsWith(RESTORE_PREFIX)) process.stderr.write(`memtwin: restore: ${l.slice(RESTORE_PREFIX.length)}\n`);
      else this.stderr = (this.stderr + l + '\n').slice(-4000);
    }
  }

  async exec(op: ResolvedOp): Promise<RawResult> {
    if (this.dead) throw new ExecutorError(this.dead);
    const proposal = proposalUnsupported(op.op);
    if (proposal) return proposal;
    if (op.op === 'cpuset_mems')
      return { unsupported: 'cpuset_mems needs a cpuset cgroup of its own; the native executor does not create one' };
    if (op.op === 'khugepaged_wait') return this.khugepagedWait(op);
    return this.request(encodeOp(op));
  }

  /** khugepaged_wait on the real kernel (khugepagedWait below). */
  private khugepagedWait(op: ResolvedOp): Promise<RawResult> {
    return khugepagedWait(op, async (o) => String((await this.request(encodeOp(o))).text ?? ''));
  }

  /** Send one protocol line and wait for its result line. */
  private async request(line: string): Promise<RawResult> {
    if (this.dead) throw new ExecutorError(this.dead);
    this.child.stdin.write(line + '\n');
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((res) => (timer = setTimeout(() => res('timeout'), this.timeoutMs)));
    const next = await Promise.race([this.lines.next(), timeout]);
    clearTimeout(timer);
    if (next === 'timeout') {
      this.kill();
      throw new ExecutorError(`no answer from the real kernel within ${this.timeoutMs} ms; executor stopped`);
    }
    if (next.done) {
      // Its output closed: the executor is gone or going; say how it ended.
      await Promise.race([this.exited, new Promise((res) => setTimeout(res, 2000))]);
      throw new ExecutorError(this.dead ?? 'native executor closed its output');
    }
    const r = JSON.parse(next.value) as RawResult;
    return r;
  }

  private kill(): void {
    // The guardian restores knobs when it gets SIGTERM.
    try {
      if (this.child.pid) process.kill(this.child.pid, 'SIGTERM');
    } catch {
      /* already gone */
    }
  }

  async close(): Promise<void> {
    if (this.closing) return this.exited;
    this.closing = true;
    if (this.dead || this.child.stdout.readableEnded) {
      // It died mid-script: if its guardian died too, its journal is still on
      // the machine. Replay it now rather than leave it to the next run.
      await this.exited;
      await restoreAfterDeath();
      return;
    }
    this.child.stdin.end();
    const t = setTimeout(() => this.kill(), 30_000);
    await this.exited;
    clearTimeout(t);
    await this.stderrDrained();
  }

  /** Its last stderr lines (a replay report) may still be in the pipe at exit: read them (1 s at most). */
  private async stderrDrained(): Promise<void> {
    if (this.child.stderr.readableEnded) return;
    let t: NodeJS.Timeout | undefined;
    await Promise.race([new Promise((res) => this.child.stderr.once('end', res)), new Promise((res) => (t = setTimeout(res, 1000)))]);
    clearTimeout(t);
  }
}

/** After an executor died: replay its journal (if it left one) and say what was restored on stderr. */
async function restoreAfterDeath(): Promise<void> {
  let r: RestoreResult;
  try {
    r = await restoreMachine({ lockTimeoutMs: 10_000 });
  } catch (e) {
    process.stderr.write(`memtwin: ${(e as Error).message}; run memtwin restore\n`);
    return;
  }
  const text = r.stdout.trim();
  if (r.status === 3)
    process.stderr.write('memtwin: the executor died and another one holds the machine lock: run memtwin restore when it is done\n');
  else if (text && text !== 'nothing to restore')
    process.stderr.write(
      text
        .split('\n')
        .map((l) => `memtwin: restore: ${l}\n`)
        .join(''),
    );
}
