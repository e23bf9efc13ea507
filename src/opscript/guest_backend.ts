/**
 * The oracle-guest backend: a real Linux kernel with several NUMA nodes,
 * booted under QEMU (TCG) with the nodes, memory and CPUs of a host file, so
 * NUMA op-scripts can be checked against Linux on a one-node machine.
 *
 * The guest (built by scripts/oracle-guest/build.sh into .cache/oracle-guest/)
 * runs memtwin-guest-agent as PID 1 on a virtio-serial port; the host side of
 * that port is a unix socket. Each script gets a fresh native executor in the
 * guest (`@start` ... `@end`, see native/guest/memtwin-guest-agent.c), and
 * speaks the executor's line protocol (native/PROTOCOL.md) unchanged. One
 * booted guest (GuestVM) serves many scripts one after another.
 *
 * QEMU runs in its own process group with a parent-death signal; close(),
 * process exit and SIGINT/SIGTERM/SIGHUP kill that group, so nothing is left
 * running.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Host } from '../sim/host.ts';
import { fromRoot } from '../util/paths.ts';
import type { Backend, RawResult, ResolvedOp } from './backend.ts';
import { encodeOp, ExecutorError, khugepagedWait } from './linux_backend.ts';
import { proposalUnsupported } from './ops.ts';

export const GUEST_CACHE = fromRoot('.cache', 'oracle-guest');
export const GUEST_KERNEL = join(GUEST_CACHE, 'vmlinuz');
export const GUEST_INITRD = join(GUEST_CACHE, 'initramfs.cpio.gz');
const BUILD_CMD = 'bash scripts/oracle-guest/build.sh';
/** What the initramfs is built from: newer sources mean a stale guest. */
const GUEST_SOURCES = [
  fromRoot('native', 'memtwin-native.c'),
  fromRoot('native', 'guest', 'memtwin-guest-agent.c'),
  fromRoot('native', 'guest', 'init'),
];

const QEMU = 'qemu-system-x86_64';

function onPath(cmd: string): boolean {
  return (process.env.PATH ?? '').split(':').some((d) => d && existsSync(join(d, cmd)));
}

/** Why the guest backend cannot run here, or undefined if it can. */
export function guestBackendUnavailable(): string | undefined {
  if (process.platform !== 'linux' || process.arch !== 'x64') return 'needs an x86-64 Linux machine';
  if (!onPath(QEMU))
    return `${QEMU} not found; install it: apt-get install -y --no-install-recommends qemu-system-x86 (or run ${BUILD_CMD})`;
  for (const f of [GUEST_KERNEL, GUEST_INITRD]) if (!existsSync(f)) return `guest not built (${f} missing); run: ${BUILD_CMD}`;
  const built = statSync(GUEST_INITRD).mtimeMs;
  const stale = GUEST_SOURCES.find((s) => existsSync(s) && statSync(s).mtimeMs > built);
  if (stale) return `guest is older than ${stale}; rebuild it: ${BUILD_CMD}`;
  return undefined;
}

/**
 * The guest's swap disks: its root file system is a tmpfs, which cannot hold
 * a swap file, so the `swap` op puts its k-th area on the k-th of these
 * virtio-blk disks (native/guest/init passes them to the executor in
 * MEMTWIN_SWAP_DEVICES). Sparse files: they take host disk space only for
 * what the guest swaps out.
 */
export const GUEST_SWAP_DISKS = 4;
export const GUEST_SWAP_DISK_SIZE = 4 * 2 ** 30;

/** The QEMU command line for a guest of the host's shape (swapDisks: raw image files, GUEST_SWAP_DISKS above). */
export function qemuArgs(host: Host, socketPath: string, swapDisks: string[] = []): string[] {
  const cpus = host.nodes.flatMap((n) => n.cpus).sort((a, b) => a - b);
  if (cpus.some((c, i) => c !== i))
    throw new ExecutorError(`host ${host.name}: the guest needs CPUs numbered 0..N-1 without gaps, got ${cpus.join(',')}`);
  const mib = host.nodes.map((n) => Math.floor(n.memory / (1 << 20)));
  if (mib.some((m) => m < 256)) throw new ExecutorError(`host ${host.name}: each guest node needs at least 256M of memory`);
  const total = mib.reduce((a, b) => a + b, 0);
  if (total > 16 * 1024) throw new ExecutorError(`host ${host.name}: ${total} MiB is too large for a TCG guest (at most 16G)`);
  const oneG = host.hugepageSizes.includes(1 << 30);
  const ranges = (l: number[]): string =>
    l
      .reduce<[number, number][]>((acc, c) => {
        const last = acc.at(-1);
        if (last && last[1] === c - 1) last[1] = c;
        else acc.push([c, c]);
        return acc;
      }, [])
      .map(([a, b]) => (a === b ? `cpus=${a}` : `cpus=${a}-${b}`))
      .join(',');
  const args = [
    '-accel',
    'tcg',
    // no 5-level paging (same address-space limits as the host), 1G pages only if the host file has them
    '-cpu',
    `max,la57=off,pdpe1gb=${oneG ? 'on' : 'off'}`,
    '-m',
    `${total}M`,
    '-smp',
    String(cpus.length),
    '-nodefaults',
    '-no-reboot',
    '-display',
    'none',
    '-monitor',
    'none',
    '-serial',
    'stdio',
    '-kernel',
    GUEST_KERNEL,
    '-initrd',
    GUEST_INITRD,
    '-append',
    'console=ttyS0 panic=-1 quiet mitigations=off nokaslr numa_balancing=disable transparent_hugepage=madvise',
  ];
  host.nodes.forEach((n, i) => {
    args.push('-object', `memory-backend-ram,id=m${i},size=${mib[i]}M`);
    args.push('-numa', `node,nodeid=${i},${ranges([...n.cpus].sort((a, b) => a - b))},memdev=m${i}`);
  });
  host.distances.forEach((row, i) =>
    row.forEach((d, j) => {
      if (i !== j) args.push('-numa', `dist,src=${i},dst=${j},val=${d}`);
    }),
  );
  args.push(
    '-device',
    'virtio-serial-pci',
    '-chardev',
    `socket,id=ex,path=${socketPath},server=on,wait=off`,
    '-device',
    'virtserialport,chardev=ex,name=memtwin.exec',
  );
  swapDisks.forEach((f, k) =>
    args.push('-drive', `file=${f},format=raw,if=none,id=swap${k},cache=unsafe,discard=unmap`, '-device', `virtio-blk-pci,drive=swap${k}`),
  );
  return args;
}

const live = new Set<GuestVM>();
let handlersInstalled = false;
function installExitHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', () => {
    for (const vm of live) vm.kill();
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const h = (): void => {
      for (const vm of live) vm.kill();
      process.removeListener(sig, h);
      // Default action of the signal, unless someone else handles it.
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
    };
    process.on(sig, h);
  }
}

interface Waiter {
  match: (line: string) => boolean;
  resolve: (line: string) => void;
}

/** One booted guest: QEMU, its console, and the agent's port. */
export class GuestVM {
  /** The guest kernel's release (uname -r). */
  release = '';
  /** Milliseconds from QEMU's start to the agent's @ready. */
  bootMs = 0;
  private qemu!: ChildProcess;
  private sock!: Socket;
  private dir = '';
  private console = '';
  private dead: string | undefined;
  private results: string[] = [];
  private stderr: string[] = [];
  private waiters: Waiter[] = [];
  private busy = false;
  /** An @exit nobody waited for: the executor died between two ops. */
  private exited: string | undefined;

  private constructor(readonly host: Host) {}

  /** QEMU's pid (the leader of its process group). */
  get pid(): number | undefined {
    return this.qemu?.pid;
  }

  /** Boot a guest of the host's shape; resolves once the agent answers. */
  static async boot(host: Host, bootTimeoutMs = 120_000): Promise<GuestVM> {
    const why = guestBackendUnavailable();
    if (why) throw new ExecutorError(`guest backend unavailable: ${why}`);
    const vm = new GuestVM(host);
    await vm.start(bootTimeoutMs);
    return vm;
  }

  private async start(bootTimeoutMs: number): Promise<void> {
    this.dir = mkdtempSync(join(tmpdir(), 'memtwin-guest-'));
    const sockPath = join(this.dir, 'exec.sock');
    const disks = Array.from({ length: GUEST_SWAP_DISKS }, (_, k) => join(this.dir, `swap${k}.img`));
    for (const f of disks) {
      writeFileSync(f, '');
      truncateSync(f, GUEST_SWAP_DISK_SIZE); // sparse
    }
    const args = qemuArgs(this.host, sockPath, disks);
    const t0 = Date.now();
    // setpriv --pdeathsig: QEMU dies with the thread that started it, even if node is SIGKILLed.
    const wrap = onPath('setpriv');
    this.qemu = spawn(wrap ? 'setpriv' : QEMU, wrap ? ['--pdeathsig', 'KILL', '--', QEMU, ...args] : args, {
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true,
    });
    live.add(this);
    installExitHandlers();
    const keep = (d: Buffer): void => void (this.console = (this.console + d.toString()).slice(-4000));
    this.qemu.stdout!.on('data', keep);
    this.qemu.stderr!.on('data', keep);
    this.qemu.on('error', (e) => (this.dead = `could not start ${QEMU}: ${e.message}`));
    this.qemu.on('exit', (code, sig) => {
      this.dead ??= `QEMU exited (${sig ?? `status ${code}`})${this.tail()}`;
      live.delete(this);
      this.failWaiters();
    });
    try {
      this.sock = await this.connect(sockPath, t0 + bootTimeoutMs);
      this.sock.on('error', (e) => (this.dead ??= `the guest's port failed: ${e.message}${this.tail()}`));
      this.sock.on('close', () => {
        this.dead ??= `the guest closed its port${this.tail()}`;
        this.failWaiters();
      });
      createInterface({ input: this.sock, crlfDelay: Infinity }).on('line', (l) => this.onLine(l));
      const ready = await this.wait((l) => l.startsWith('@ready'), t0 + bootTimeoutMs - Date.now(), 'booting the guest');
      this.release = ready.slice(7).trim();
      this.bootMs = Date.now() - t0;
    } catch (e) {
      await this.close();
      throw e;
    }
  }

  private tail(): string {
    const t = this.console.trim().split('\n').slice(-3).join(' | ');
    return t ? `: ${t}` : '';
  }

  private async connect(path: string, deadline: number): Promise<Socket> {
    for (;;) {
      if (this.dead) throw new ExecutorError(this.dead);
      if (existsSync(path)) {
        const s = await new Promise<Socket | undefined>((res) => {
          const c = connect(path);
          c.once('connect', () => res(c));
          c.once('error', () => res(undefined));
        });
        if (s) return s;
      }
      if (Date.now() > deadline) throw new ExecutorError(`QEMU did not open its port in time${this.tail()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  private onLine(l: string): void {
    const w = this.waiters.find((x) => x.match(l));
    if (w) {
      this.waiters.splice(this.waiters.indexOf(w), 1);
      w.resolve(l);
    } else if (l.startsWith('@stderr ')) this.stderr = [...this.stderr, l.slice(8)].slice(-20);
    else if (l.startsWith('{')) this.results.push(l);
    else if (l.startsWith('@error ')) this.stderr = [...this.stderr, `agent: ${l.slice(7)}`].slice(-20);
    else if (l.startsWith('@exit')) this.exited = l;
  }

  private failWaiters(): void {
    for (const w of this.waiters.splice(0)) w.resolve('@dead');
  }

  /** The next line matching, or an ExecutorError after timeoutMs. */
  private async wait(match: (l: string) => boolean, timeoutMs: number, what: string): Promise<string> {
    if (this.dead) throw new ExecutorError(this.dead);
    let timer: NodeJS.Timeout | undefined;
    const line = await new Promise<string>((resolve) => {
      const w: Waiter = { match, resolve };
      this.waiters.push(w);
      timer = setTimeout(
        () => {
          this.waiters.splice(this.waiters.indexOf(w), 1);
          resolve('@timeout');
        },
        Math.max(0, timeoutMs),
      );
    });
    clearTimeout(timer);
    if (line === '@dead') throw new ExecutorError(this.dead ?? 'guest gone');
    if (line === '@timeout') throw new ExecutorError(`guest: no answer within ${timeoutMs} ms while ${what}${this.tail()}`);
    return line;
  }

  private send(line: string): void {
    if (this.dead) throw new ExecutorError(this.dead);
    this.sock.write(line + '\n');
  }

  /** Start a fresh executor in the guest (one at a time). */
  async startExecutor(): Promise<void> {
    if (this.busy) throw new ExecutorError('guest: another script is still running in this guest');
    this.busy = true;
    this.results = [];
    this.stderr = [];
    this.exited = undefined;
    this.send('@start');
    const l = await this.wait((x) => x.startsWith('@started') || x.startsWith('@error'), 30_000, 'starting the executor');
    if (l.startsWith('@error')) {
      this.busy = false;
      throw new ExecutorError(`guest agent: ${l.slice(7)}`);
    }
  }

  /** Send one op line and wait for its result line. */
  async request(line: string, timeoutMs: number): Promise<RawResult> {
    const gone = (l: string): ExecutorError => {
      this.busy = false;
      return new ExecutorError(
        `native executor in the guest exited (status ${l.slice(6)})${this.stderr.length ? `: ${this.stderr.at(-1)}` : ''}`,
      );
    };
    if (this.exited) throw gone(this.exited);
    this.send(line);
    const r = this.results.shift();
    if (r !== undefined) return JSON.parse(r) as RawResult;
    // Wait for a result line, or the executor's exit.
    const l = await this.wait((x) => x.startsWith('{') || x.startsWith('@exit'), timeoutMs, `running: ${line.slice(0, 80)}`).catch(
      async (e: unknown) => {
        if (!this.dead) await this.stopExecutor(true);
        throw e;
      },
    );
    if (l.startsWith('@exit')) throw gone(l);
    return JSON.parse(l) as RawResult;
  }

  /** End the executor (EOF, or SIGTERM when kill) and wait until it has exited and restored its knobs. */
  async stopExecutor(kill = false): Promise<void> {
    if (!this.busy || this.dead || this.exited) return void (this.busy = false);
    const exited = this.wait((x) => x.startsWith('@exit'), 30_000, 'waiting for the executor to exit');
    this.send(kill ? '@kill' : '@end');
    try {
      await exited;
    } catch (e) {
      if (!kill) {
        this.send('@kill');
        await this.wait((x) => x.startsWith('@exit'), 10_000, 'killing the executor');
      } else throw e;
    } finally {
      this.busy = false;
    }
  }

  /** SIGKILL QEMU's process group (synchronous: safe in exit handlers). */
  kill(): void {
    const pid = this.qemu?.pid;
    if (pid && this.qemu.exitCode === null && this.qemu.signalCode === null) {
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    live.delete(this);
  }

  async close(): Promise<void> {
    this.dead ??= 'guest closed';
    this.sock?.destroy();
    if (this.qemu && this.qemu.exitCode === null && this.qemu.signalCode === null) {
      const exited = new Promise<void>((res) => this.qemu.once('exit', () => res()));
      this.kill();
      await exited;
    }
    live.delete(this);
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * A Backend on a GuestVM: one fresh executor in the guest per backend (per
 * script): the real kernel, in a guest.
 */
export class GuestBackend implements Backend {
  readonly name = 'guest' as const;
  private started: Promise<void> | undefined;

  /** ownVm: close the guest too when the backend closes (the CLI's one-script case). */
  constructor(
    readonly vm: GuestVM,
    private readonly ownVm = false,
    readonly timeoutMs = 120_000,
  ) {}

  /** Boot a guest of the host's shape for one script. */
  static async boot(host: Host): Promise<GuestBackend> {
    return new GuestBackend(await GuestVM.boot(host), true);
  }

  async exec(op: ResolvedOp): Promise<RawResult> {
    const proposal = proposalUnsupported(op.op);
    if (proposal) return proposal;
    if (op.op === 'cpuset_mems')
      return { unsupported: 'cpuset_mems needs a cpuset cgroup of its own; the native executor does not create one' };
    this.started ??= this.vm.startExecutor();
    await this.started;
    if (op.op === 'khugepaged_wait') return this.khugepagedWait(op);
    const r = await this.vm.request(encodeOp(op), this.timeoutMs);
    // Debian's kernel has CONFIG_MEM_SOFT_DIRTY: every VMA shows "sd". The reference kernel
    // (Linux 6.18 on hosts/this-machine.yaml) does not, nor does the simulator: drop it.
    if (op.op === 'smaps' && Array.isArray(r.VmFlags)) r.VmFlags = (r.VmFlags as unknown[]).filter((f) => f !== 'sd');
    return r;
  }

  /** As on the linux backend (khugepagedWait there). */
  private khugepagedWait(op: ResolvedOp): Promise<RawResult> {
    return khugepagedWait(op, async (o) => String((await this.vm.request(encodeOp(o), this.timeoutMs)).text ?? ''));
  }

  async close(): Promise<void> {
    try {
      if (this.started) {
        await this.started.catch(() => undefined);
        await this.vm.stopExecutor();
      }
    } finally {
      if (this.ownVm) await this.vm.close();
    }
  }
}
