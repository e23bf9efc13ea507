/**
 * The real side of `memtwin validate qemu`: each run of MATRIX between two
 * QEMU processes on this machine (-accel tcg; a source, and a destination
 * started with -incoming defer), driven over QMP, with the guest program
 * memtwin-dirty (native/guest/memtwin-dirty.c) reporting on the source's
 * serial console. Writes validation/qemu/results.json. A failed run is
 * retried once; both QEMUs are always killed.
 */
import { spawn, execFile, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync, statSync } from 'node:fs';
import { createConnection, createServer, type Socket } from 'node:net';
import { tmpdir, hostname } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  BATCHES,
  sampleOfQuery,
  socketSamplesOf,
  type Batch,
  type GuestLine,
  type QuerySample,
  type RealResults,
  type RealRun,
  type RunConfig,
  type SocketSample,
} from './matrix.ts';
import { procStatFields } from '../util/proc_stat.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const RESULTS_DIR = join(ROOT, 'validation/qemu');
export const RESULTS_FILE = join(RESULTS_DIR, 'results.json');
/** QEMU runs at this nice level: TCG is CPU-bound and the machine is shared (nice -n -10, as root). */
const QEMU_NICE = -10;
const KERNEL = join(ROOT, '.cache/oracle-guest/vmlinuz');
const INITRD = join(ROOT, '.cache/validate-qemu/initramfs.cpio.gz');
const QEMU = 'qemu-system-x86_64';
const BOOT_TIMEOUT_MS = 45_000;
/** QEMUs alive, killed on SIGINT/SIGTERM/SIGHUP too. */
const live = new Set<ChildProcess>();
let signalsHooked = false;
function hookSignals(onExit: () => void): void {
  if (signalsHooked) return;
  signalsHooked = true;
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const)
    process.once(sig, () => {
      for (const p of live) p.kill('SIGKILL');
      onExit();
      process.exit(130);
    });
}
const MIGRATE_TIMEOUT_MS = 90_000;
/** Time the guest program runs before migrate, so its dirty rate is measured before too. */
const SETTLE_MS = 3000;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A QMP client over a unix socket (one command at a time; events are ignored). */
export class Qmp {
  private buf = '';
  private waiters: ((v: Record<string, unknown>) => void)[] = [];
  private constructor(private readonly sock: Socket) {
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      this.buf += d;
      let i;
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, i).trim();
        this.buf = this.buf.slice(i + 1);
        if (!line) continue;
        const msg = JSON.parse(line) as Record<string, unknown>;
        if ('event' in msg) continue;
        this.waiters.shift()?.(msg);
      }
    });
    sock.on('error', () => {});
  }

  static async connect(path: string, timeoutMs = 20_000): Promise<Qmp> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      try {
        const sock = await new Promise<Socket>((res, rej) => {
          const s = createConnection(path, () => res(s));
          s.once('error', rej);
        });
        const q = new Qmp(sock);
        await q.next(); // greeting
        await q.cmd('qmp_capabilities');
        return q;
      } catch (e) {
        if (Date.now() > end) throw new Error(`QMP socket ${path}: ${(e as Error).message}`);
        await sleep(100);
      }
    }
  }

  private next(): Promise<Record<string, unknown>> {
    return new Promise((res, rej) => {
      const t = setTimeout(() => rej(new Error('QMP: no answer in 10 s')), 10_000);
      this.waiters.push((v) => {
        clearTimeout(t);
        res(v);
      });
    });
  }

  async cmd(execute: string, args?: Record<string, unknown>): Promise<Record<string, unknown>> {
    const p = this.next();
    this.sock.write(JSON.stringify(args ? { execute, arguments: args } : { execute }) + '\n');
    const r = await p;
    if ('error' in r) throw new Error(`QMP ${execute}: ${JSON.stringify(r.error)}`);
    return r.return as Record<string, unknown>;
  }

  close(): void {
    this.sock.destroy();
  }
}

async function freePort(): Promise<number> {
  return new Promise((res) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => res(p));
    });
  });
}

function qemuArgs(c: RunConfig, dir: string, side: 'src' | 'dst'): string[] {
  const mem = `${c.memMiB}M`;
  const backend =
    c.backend === 'ram'
      ? `memory-backend-ram,id=ram0,size=${mem}`
      : `memory-backend-file,id=ram0,size=${mem},mem-path=/dev/hugepages,share=on`;
  const p = c.program;
  const append = ['console=ttyS0', 'quiet', 'nokaslr'];
  if (p) append.push(`mtd=${p.touchMiB},${p.wsMiB},${p.rate},${p.freeMiB}${p.write ? `,${p.write}` : ''}`);
  const a = [
    '-accel',
    'tcg',
    '-machine',
    'q35,memory-backend=ram0',
    '-m',
    mem,
    '-smp',
    '1',
    '-object',
    backend,
    '-object',
    'iothread,id=io0',
    '-device',
    `virtio-balloon-pci,id=balloon0,iothread=io0,free-page-hint=${c.freePageHint ? 'on' : 'off'}`,
    '-kernel',
    KERNEL,
    '-initrd',
    INITRD,
    '-append',
    append.join(' '),
    '-nodefaults',
    '-vga',
    'none',
    '-display',
    'none',
    '-no-reboot',
    '-monitor',
    'none',
    '-serial',
    `file:${join(dir, side + '.serial')}`,
    '-qmp',
    `unix:${join(dir, side + '.qmp')},server=on,wait=off`,
  ];
  if (side === 'dst') a.push('-incoming', 'defer');
  return a;
}

function checkSetup(needHugetlb: boolean): void {
  try {
    execFileSync(QEMU, ['--version'], { stdio: 'ignore' });
  } catch {
    throw new Error(`${QEMU} is missing; run: bash scripts/oracle-guest/build.sh`);
  }
  if (!existsSync(KERNEL)) throw new Error('no guest kernel; run: bash scripts/oracle-guest/build.sh');
  if (!existsSync(INITRD) || statSync(INITRD).mtimeMs < statSync(join(ROOT, 'native/guest/memtwin-dirty.c')).mtimeMs)
    throw new Error('the validation initramfs is missing or older than memtwin-dirty.c; run: bash scripts/validate-qemu/build.sh');
  if (needHugetlb && process.getuid?.() !== 0) throw new Error('the hugetlbfs run needs root (a hugetlbfs mount and nr_hugepages)');
}

const NR_HUGE = '/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages';

/** Mount hugetlbfs on /dev/hugepages and reserve enough 2M pages for both QEMUs; returns the undo. */
function setupHugetlb(memMiB: number): () => void {
  let mounted = false;
  const mounts = readFileSync('/proc/mounts', 'utf8');
  if (!/ \/dev\/hugepages hugetlbfs /.test(mounts)) {
    mkdirSync('/dev/hugepages', { recursive: true });
    execFileSync('mount', ['-t', 'hugetlbfs', '-o', 'pagesize=2M', 'hugetlbfs', '/dev/hugepages']);
    mounted = true;
  }
  const before = Number(readFileSync(NR_HUGE, 'utf8'));
  const need = before + (2 * memMiB) / 2 + 8;
  writeFileSync(NR_HUGE, String(need));
  const got = Number(readFileSync(NR_HUGE, 'utf8'));
  if (got < need) {
    writeFileSync(NR_HUGE, String(before));
    throw new Error(`could reserve only ${got} of ${need} 2M huge pages`);
  }
  return () => {
    writeFileSync(NR_HUGE, String(before));
    if (mounted) execFileSync('umount', ['/dev/hugepages']);
  };
}

/** THP faults so far (/proc/vmstat) and each process's CPU time in ms (/proc/PID/stat); null where unreadable. */
function hostCounters(procs: ChildProcess[]): { thp: number; cpuMs: number[] } | null {
  try {
    const thp = /^thp_fault_alloc (\d+)$/m.exec(readFileSync('/proc/vmstat', 'utf8'));
    const cpuMs: number[] = [];
    for (const p of procs) {
      const f = p.pid === undefined ? null : procStatFields(p.pid);
      if (!f) return null;
      // utime and stime (fields 14 and 15), in clock ticks of 10 ms (USER_HZ 100).
      cpuMs.push((Number(f[14 - 3]) + Number(f[15 - 3])) * 10);
    }
    return thp ? { thp: Number(thp[1]), cpuMs } : null;
  } catch {
    return null;
  }
}

function hostDelta(a: ReturnType<typeof hostCounters>, b: ReturnType<typeof hostCounters>): RealRun['host'] | undefined {
  if (!a || !b || a.cpuMs.length < 2) return undefined;
  return { thpFaultAlloc: b.thp - a.thp, srcCpuMs: b.cpuMs[0]! - a.cpuMs[0]!, dstCpuMs: b.cpuMs[1]! - a.cpuMs[1]! };
}

/** The migration's connections now (`ss -tmiHn`); none where ss is missing or fails. */
function socketsNow(atMs: number, port: number): Promise<SocketSample[]> {
  return new Promise((done) => {
    execFile('ss', ['-tmiHn', 'state', 'established'], { encoding: 'utf8', timeout: 2000 }, (err, stdout) =>
      done(err ? [] : socketSamplesOf(atMs, stdout, port)),
    );
  });
}

function meanRate(lines: GuestLine[], from: number, to: number): number | null {
  const r = lines
    .filter((l) => l.atMs >= from && l.atMs <= to)
    .map((l) => /^MTD RATE \S+ \S+ (\S+)/.exec(l.line))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]));
  return r.length ? r.reduce((a, b) => a + b, 0) / r.length : null;
}

/** One attempt of one run; throws with what failed. */
async function attempt(c: RunConfig, log: (s: string) => void): Promise<RealRun> {
  const dir = mkdtempSync(join(tmpdir(), 'memtwin-vq-'));
  const procs: ChildProcess[] = [];
  const qmps: Qmp[] = [];
  const stderr: Record<string, string> = { src: '', dst: '' };
  const lines: GuestLine[] = [];
  let consumed = 0;
  let t0 = 0;
  const readSerial = (): void => {
    const f = join(dir, 'src.serial');
    if (!existsSync(f)) return;
    const text = readFileSync(f, 'utf8');
    const fresh = text.slice(consumed);
    const end = fresh.lastIndexOf('\n');
    if (end < 0) return;
    consumed += end + 1;
    const rel = t0;
    for (const l of fresh.slice(0, end).split('\n'))
      if (l.startsWith('MTD ') || /Out of memory|Kernel panic/.test(l))
        lines.push({ atMs: rel ? Date.now() - rel : Date.now(), line: l.trim() }); // before migrate: host time, made relative below
  };
  const bootAt = Date.now();
  try {
    for (const side of ['src', 'dst'] as const) {
      // nice execs QEMU, so the pid is QEMU's; as root it raises the priority, else it is refused and QEMU runs at 0.
      const p =
        process.getuid?.() === 0
          ? spawn('nice', ['-n', String(QEMU_NICE), QEMU, ...qemuArgs(c, dir, side)], { stdio: ['ignore', 'ignore', 'pipe'] })
          : spawn(QEMU, qemuArgs(c, dir, side), { stdio: ['ignore', 'ignore', 'pipe'] });
      p.stderr!.on('data', (d: Buffer) => (stderr[side] += d.toString()));
      procs.push(p);
      live.add(p);
      p.once('exit', () => live.delete(p));
    }
    const [src, dst] = [await Qmp.connect(join(dir, 'src.qmp')), await Qmp.connect(join(dir, 'dst.qmp'))];
    qmps.push(src, dst);
    const ready = c.program ? 'MTD READY' : 'MTD BOOT';
    while (!lines.some((l) => l.line.startsWith(ready))) {
      if (Date.now() - bootAt > BOOT_TIMEOUT_MS) throw new Error(`no "${ready}" from the guest in ${BOOT_TIMEOUT_MS / 1000} s`);
      const oom = lines.find((l) => /Out of memory|Kernel panic/.test(l.line));
      if (oom) throw new Error(`guest: ${oom.line}`);
      if (procs.some((p) => p.exitCode !== null)) throw new Error(`QEMU exited: ${stderr.src}${stderr.dst}`.trim());
      await sleep(100);
      readSerial();
    }
    await sleep(SETTLE_MS);
    readSerial();
    const port = await freePort();
    const caps = [
      { capability: 'postcopy-ram', state: c.postcopyAfterMs !== null },
      ...Object.entries(c.capabilities ?? {}).map(([capability, state]) => ({ capability, state })),
    ];
    await dst.cmd('migrate-set-capabilities', { capabilities: caps });
    await src.cmd('migrate-set-capabilities', { capabilities: caps });
    if (c.parameters) await dst.cmd('migrate-set-parameters', c.parameters);
    await src.cmd('migrate-set-parameters', { 'max-bandwidth': c.maxBandwidth, 'downtime-limit': c.downtimeLimitMs, ...c.parameters });
    await dst.cmd('migrate-incoming', { uri: `tcp:127.0.0.1:${port}` });
    const hostBefore = hostCounters(procs);
    t0 = Date.now();
    await src.cmd('migrate', { uri: `tcp:127.0.0.1:${port}` });
    for (const l of lines) l.atMs -= t0;
    let q: Record<string, unknown> = {};
    let postcopyStarted = false;
    let wallMs: number | null = null;
    let postcopySwitch: RealRun['postcopySwitch'];
    const samples: QuerySample[] = [];
    const sockets: SocketSample[] = [];
    let hostDuring: RealRun['host'];
    if (c.postcopyAfterMs === 0) {
      await src.cmd('migrate-start-postcopy');
      postcopyStarted = true;
    }
    for (;;) {
      await sleep(50);
      readSerial();
      q = await src.cmd('query-migrate');
      const st = q.status as string;
      samples.push(sampleOfQuery(Date.now() - t0, q));
      sockets.push(...(await socketsNow(Date.now() - t0, port)));
      if (st === 'postcopy-active' && !postcopySwitch) postcopySwitch = { atMs: Date.now() - t0, queryMigrate: q };
      if (st === 'completed') {
        wallMs = Date.now() - t0;
        hostDuring = hostDelta(hostBefore, hostCounters(procs));
        break;
      }
      if (st === 'failed' || st === 'cancelled') throw new Error(`migration ${st}: ${String(q['error-desc'] ?? '')}`);
      if (c.postcopyAfterMs !== null && !postcopyStarted && Date.now() - t0 >= c.postcopyAfterMs) {
        await src.cmd('migrate-start-postcopy');
        postcopyStarted = true;
      }
      if (Date.now() - t0 > MIGRATE_TIMEOUT_MS) {
        await src.cmd('migrate_cancel').catch(() => {});
        throw new Error(`not completed in ${MIGRATE_TIMEOUT_MS / 1000} s: ${JSON.stringify(q)}`);
      }
    }
    let dq: Record<string, unknown> | null = null;
    try {
      dq = await dst.cmd('query-migrate');
    } catch {
      dq = null;
    }
    readSerial();
    const readyLine = lines.find((l) => l.line.startsWith('MTD READY'))?.line ?? '';
    const kib = (k: string): number | null => {
      const m = new RegExp(`${k}=(\\d+)`).exec(readyLine);
      return m ? Number(m[1]) : null;
    };
    const totalMs = Number(q['total-time']);
    const downMs = Number(q.downtime ?? 0);
    return {
      config: c,
      status: 'completed',
      attempts: 1,
      failures: [],
      queryMigrate: q,
      dstQueryMigrate: dq,
      wallMs,
      ...(postcopySwitch ? { postcopySwitch } : {}),
      samples,
      ...(sockets.length ? { sockets } : {}),
      ...(hostDuring ? { host: hostDuring } : {}),
      guest: {
        memTotalKiB: kib('MemTotal'),
        memFreeKiB: kib('MemFree'),
        dirtyRateDuring: meanRate(lines, 0, totalMs - downMs),
        dirtyRateBefore: meanRate(lines, -SETTLE_MS - 1000, 0),
        lines: lines.filter((l) => !l.line.startsWith('MTD RATE') || l.atMs >= -SETTLE_MS - 1000),
      },
    };
  } finally {
    for (const q of qmps) q.close();
    for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
    await Promise.all(procs.map((p) => (p.exitCode !== null || p.signalCode !== null ? null : new Promise((r) => p.once('exit', r)))));
    rmSync(dir, { recursive: true, force: true });
    log(`  ${c.id}: wall ${((Date.now() - bootAt) / 1000).toFixed(1)} s`);
  }
}

export interface RunRealOptions {
  /** The batch to record (src/validate/matrix.ts BATCHES); default `main`. */
  batch?: string;
  /** Rerun only these configurations (all their repeats), keep the batch's other recorded runs. */
  only?: string[];
  out?: string;
  /** Record each configuration this many times (interleaved) instead of the batch's own count: evidence beside a batch. */
  repeats?: number;
  log?: (s: string) => void;
}

export function batchByName(name: string): Batch {
  const b = BATCHES.find((x) => x.name === name);
  if (!b) throw new Error(`unknown batch '${name}'; batches: ${BATCHES.map((x) => x.name).join(', ')}`);
  return b;
}

/**
 * Run a batch's matrix (or the configurations named in `only`, merged into
 * the existing file) and write its results. A batch recorded several times
 * runs its configurations interleaved (1..n, then 1..n again), so a slow
 * stretch of a shared machine spreads over configurations instead of
 * landing on one.
 */
export async function runReal(o: RunRealOptions = {}): Promise<RealResults> {
  const log = o.log ?? (() => {});
  const batch = batchByName(o.batch ?? 'main');
  const out = o.out ?? join(RESULTS_DIR, batch.file);
  const matrix = batch.matrix;
  const configs = o.only ? matrix.filter((c) => o.only!.includes(c.id)) : matrix;
  if (o.only && configs.length !== o.only.length) throw new Error(`unknown run id in --only; ids: ${matrix.map((c) => c.id).join(', ')}`);
  checkSetup(configs.some((c) => c.backend === 'hugetlb-2M'));
  const prev: RealResults | null = o.only && existsSync(out) ? (JSON.parse(readFileSync(out, 'utf8')) as RealResults) : null;
  const runs: RealRun[] = [];
  let undoHuge: (() => void) | null = null;
  const cleanup = (): void => {
    undoHuge?.();
    undoHuge = null;
  };
  process.once('exit', cleanup);
  hookSignals(cleanup);
  try {
    const repeats = o.repeats ?? batch.repeats;
    for (let rep = 1; rep <= repeats; rep++)
      for (const c of configs) {
        log(`validate-qemu: ${c.id}${repeats > 1 ? ` (${rep}/${repeats})` : ''}: ${c.what}`);
        if (c.backend === 'hugetlb-2M' && !undoHuge) undoHuge = setupHugetlb(c.memMiB);
        const failures: string[] = [];
        let run: RealRun | null = null;
        for (let i = 1; i <= 2 && !run; i++) {
          try {
            run = await attempt(c, log);
            run.attempts = i;
            run.failures = failures;
          } catch (e) {
            failures.push((e as Error).message.slice(0, 2000));
            log(`  ${c.id}: attempt ${i} failed: ${failures.at(-1)!.slice(0, 300)}`);
          }
        }
        run ??= {
          config: c,
          status: 'failed',
          attempts: 2,
          failures,
          queryMigrate: null,
          dstQueryMigrate: null,
          wallMs: null,
          guest: { memTotalKiB: null, memFreeKiB: null, dirtyRateDuring: null, dirtyRateBefore: null, lines: [] },
        };
        if (repeats > 1) run = { rep, ...run };
        runs.push(run);
        // Written after every run: a long batch interrupted keeps what it recorded.
        writeResults(out, batch, runs, prev, matrix);
      }
  } finally {
    cleanup();
  }
  const results = writeResults(out, batch, runs, prev, matrix);
  log(`validate-qemu: wrote ${out}`);
  return results;
}

/** The batch's results file: the runs just recorded, and the earlier ones of the configurations not rerun; in matrix order. */
function writeResults(out: string, batch: Batch, runs: RealRun[], prev: RealResults | null, matrix: RunConfig[]): RealResults {
  const rerun = new Set(runs.map((r) => r.config.id));
  const all = [...runs, ...(prev?.runs ?? []).filter((r) => !rerun.has(r.config.id))];
  const order = (r: RealRun): number => matrix.findIndex((c) => c.id === r.config.id);
  const merged = all.sort((a, b) => (a.rep ?? 1) - (b.rep ?? 1) || order(a) - order(b));
  const results: RealResults = {
    ...(batch.name === 'main' ? {} : { batch: batch.name }),
    qemu: execFileSync(QEMU, ['--version'], { encoding: 'utf8' }).split('\n')[0]!,
    guestKernel: readFileSync(join(ROOT, '.cache/oracle-guest/kernel-package'), 'utf8').trim(),
    host: `${hostname()}: ${execFileSync('uname', ['-sr'], { encoding: 'utf8' }).trim()}, ${
      readFileSync('/proc/cpuinfo', 'utf8').match(/model name\s*:\s*(.*)/)?.[1] ?? 'unknown CPU'
    }, -accel tcg`,
    date: new Date().toISOString(),
    runs: merged,
  };
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify(results, null, 1) + '\n');
  return results;
}
