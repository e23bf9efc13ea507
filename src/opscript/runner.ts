/**
 * Runs an op-script on a backend: parses each line, resolves handles,
 * processes and threads, executes, and renders results the same way for
 * every backend (handle-relative addresses, canonical field order).
 * Results are streamed as they are produced, so a run that stops half-way
 * keeps everything it computed.
 */
import { BadOp, damonArgs, parseOp, type Op } from './ops.ts';
import { SIZE_MAX, mempolicyModeNames, type Addr } from './values.ts';
import { MPOL } from '../kernel/uapi.ts';
import type { Backend, RawResult, ResolvedOp } from './backend.ts';
import { parseSize, quote } from '../util/input_error.ts';
import { ExecutorError } from './linux_backend.ts';

export type ResultLine = Record<string, unknown>;

interface Handle {
  name: string;
  proc: number;
  base: number;
  len: number;
  seq: number;
}

/** Compared output fields per op, in output order (after i, op, ret, errno, signal, at). */
export const OUTPUT_FIELDS: Record<string, readonly string[]> = {
  hugetlb_pool: ['nr'],
  peek: ['bytes'],
  join: ['async_faults'],
  pagemap: ['pages'],
  smaps: ['Size', 'KernelPageSize', 'Rss', 'Anonymous', 'AnonHugePages', 'Shared_Hugetlb', 'Private_Hugetlb', 'THPeligible', 'VmFlags'],
  numa_maps: ['policy', 'nodes', 'huge', 'kernelpagesize_kB'],
  meminfo: ['HugePages_Total', 'HugePages_Free', 'HugePages_Rsvd', 'HugePages_Surp', 'hugepages'],
  vmstat: ['vmstat'],
  get_mempolicy: ['mode', 'nodes', 'node'],
  move_pages: ['status'],
  read: ['text'],
  uffdio_api: ['features', 'ioctls'],
  uffdio_register: ['ioctls'],
  uffdio_copy: ['copy'],
  uffdio_zeropage: ['zeropage'],
  uffdio_continue: ['mapped'],
  uffdio_poison: ['updated'],
  uffdio_move: ['move'],
  uffd_read: ['msgs'],
  cgroup_stat: ['current', 'current_within', 'events', 'workingset'],
  damon: ['nr_regions', 'within_limits', 'hot_all_max', 'cold_all_zero', 'hot_nr_accesses', 'cold_nr_accesses', 'regions'],
};
/** The longest `invalid` message (a safety net: quoted values are already cut by quote()). */
const MESSAGE_MAX = 1000;

/** Backend-specific fields kept in the output (never compared). */
export const BACKEND_FIELDS = ['addr', 'pid', 'ns'] as const;

export class ScriptRunner {
  private readonly handles = new Map<string, Handle>();
  /** A forked process -> its parent and the last handle made before the fork (the child maps those too). */
  private readonly forkedFrom = new Map<number, { proc: number; seq: number; i: number }>();
  private readonly failedHandles = new Set<string>();
  private readonly procs = new Map<string, number>([['self', 0]]);
  /** userfaultfd handles: name -> creation index and owning process. */
  private readonly fds = new Map<string, { index: number; proc: number }>();
  private fdSeq = 0;
  /** memfd handles: name -> creation index, the process that made it and its op index (children forked later have it). */
  private readonly memfds = new Map<string, { index: number; proc: number; i: number }>();
  private mfdSeq = 0;
  /**
   * Memory cgroups by name: the creation index the backends know them by
   * (assigned, like userfaultfds', only to groups that were made), or why
   * the `cgroup` op did not make one.
   */
  private readonly cgroups = new Map<string, { index: number } | { i: number; unsupported?: string }>();
  private cgSeq = 0;
  /**
   * Processes the OOM killer killed (an op in them answered `signal` or
   * `killed` SIGKILL): every later op in them answers `killed` without
   * reaching the backend, the same on every backend.
   */
  private readonly killedProcs = new Set<number>();
  private readonly threads: Map<string, number>[] = [new Map()];
  private seq = 0;
  readonly results: ResultLine[] = [];
  errors = 0;
  invalid = false;
  /** Set when the backend itself failed (executor crashed or hung). */
  failed: string | undefined;
  /** Where the script stopped at bad input: the file's line (1-based) and why. */
  badLine: { line: number; message: string } | undefined;
  /** Set when `emit` returned false (nobody reads the results any more): the run ends after the current op. */
  stopped = false;

  /** `emit` gets each result line as it is produced; returning false stops the run (e.g. stdout was closed). */
  constructor(
    private readonly backend: Backend,
    private readonly emit: (line: ResultLine) => void | boolean = () => {},
  ) {}

  /**
   * Run every line of a script; stops at the first invalid line. Result
   * lines that end the run (invalid, error) carry the file's `line`
   * (1-based, comments and blank lines counted) beside the op index `i`.
   */
  async run(text: string): Promise<void> {
    const lines = text.split('\n');
    let i = 0;
    for (let n = 0; n < lines.length && !this.stopped; n++) {
      const line = lines[n]!.trim();
      if (!line || line.startsWith('//') || line.startsWith('#')) continue;
      let op: Op | undefined;
      try {
        op = parseOp(line, i);
        const r = this.resolve(op);
        const res = this.answeredHere(r) ?? (await this.backend.exec(r));
        if (res.invalid) throw new BadOp(i, op.op, res.invalid);
        this.record(r, res);
      } catch (e) {
        if (e instanceof ExecutorError) {
          this.push({ i, op: op?.op ?? '?', line: n + 1, error: e.message });
          this.failed = e.message;
          return;
        }
        if (!(e instanceof BadOp)) throw e;
        const message = e.message.length > MESSAGE_MAX ? `${e.message.slice(0, MESSAGE_MAX - 1)}…` : e.message;
        this.push({ i, op: e.op, line: n + 1, invalid: message });
        this.invalid = true;
        this.badLine = { line: n + 1, message };
        return;
      }
      i++;
    }
  }

  /**
   * `ops` counts the ops that got an answer (a result, or `unsupported`);
   * the line that stops a run, `invalid` (bad input, never run) or `error`
   * (the executor died or hung: no answer), is not one. `errors` counts the
   * answers with ret -1.
   */
  summary(): ResultLine {
    const answered = this.results.filter((r) => !('invalid' in r) && !('error' in r)).length;
    return { summary: { ops: answered, errors: this.errors, backend: this.backend.name } };
  }

  private push(line: ResultLine): void {
    this.results.push(line);
    if (this.emit(line) === false) this.stopped = true;
  }

  private procIndex(op: Op, name: string, field: string): number {
    const p = this.procs.get(name);
    if (p === undefined) throw new BadOp(op.i, op.op, `${field}: unknown process ${quote(name)} (spawn it first)`);
    return p;
  }

  private addr(op: Op, field: string, a: Addr): number {
    if ('raw' in a) return a.raw;
    const h = this.handles.get(a.handle);
    const name = handleName(a.handle);
    if (!h) {
      if (this.failedHandles.has(a.handle)) throw new BadOp(op.i, op.op, `${field}: handle ${name} does not exist (its mmap failed)`);
      throw new BadOp(op.i, op.op, `${field}: unknown handle ${name}`);
    }
    const x = h.base + a.offset;
    if (x < 0 || x > SIZE_MAX)
      throw new BadOp(op.i, op.op, `${field}: ${name}${a.offset < 0 ? '-' : '+'}0x${Math.abs(a.offset).toString(16)} is outside 0 to 2^52`);
    return x;
  }

  private resolve(op: Op): ResolvedOp {
    const proc = this.procIndex(op, op.in, 'in');
    let thr = 0;
    if (op.thread !== undefined) {
      const t = this.threads[proc]!.get(op.thread);
      if (t === undefined) throw new BadOp(op.i, op.op, `thread: unknown thread ${quote(op.thread)} in process ${quote(op.in)}`);
      thr = t;
    }
    const a = { ...op.a };
    for (const f of ['addr', 'dst', 'src', 'hot_addr']) if (a[f] !== undefined) a[f] = this.addr(op, f, a[f] as Addr);
    if (a.pages) a.pages = (a.pages as Addr[]).map((x, j) => this.addr(op, `pages[${j}]`, x));
    const r: ResolvedOp = { ...op, a, proc, thr };
    if (op.op === 'mmap') {
      const name = (a.name as string | undefined) ?? `m${op.i}`;
      if (this.handles.has(name)) throw new BadOp(op.i, op.op, `name: handle ${handleName(name)} already exists`);
      r.h = this.seq + 1;
    }
    if (a.target !== undefined) r.targetProc = this.procIndex(op, a.target as string, 'target');
    if (a.iovec) {
      a.iovec = (a.iovec as [Addr, number][]).map(([x, l], j) => [this.addr(op, `iovec[${j}]`, x), l]);
    }
    if (op.op === 'memfd' || op.op === 'open') {
      if (this.memfds.has(a.name as string)) throw new BadOp(op.i, op.op, `name: handle ${handleName(a.name)} already exists`);
      r.mfd = this.mfdSeq;
    } else if (op.op === 'mmap' && a.fd !== undefined) {
      const name = (a.fd as string).replace(/^\$/, '');
      const mfd = this.memfds.get(name);
      if (!mfd) throw new BadOp(op.i, op.op, `fd: unknown file handle ${handleName(name)} (make it with memfd or open)`);
      if (!this.inheritedBy(mfd.proc, mfd.i, proc)) throw new BadOp(op.i, op.op, `fd: ${handleName(name)} belongs to another process`);
      r.mfd = mfd.index;
    } else if (op.op === 'userfaultfd') {
      if (this.fds.has(a.name as string)) throw new BadOp(op.i, op.op, `name: handle ${handleName(a.name)} already exists`);
      r.fd = this.fdSeq;
    } else if (a.fd !== undefined) {
      const name = (a.fd as string).replace(/^\$/, '');
      const fd = this.fds.get(name);
      if (!fd) throw new BadOp(op.i, op.op, `fd: unknown userfaultfd handle ${handleName(name)}`);
      if (fd.proc !== proc) throw new BadOp(op.i, op.op, `fd: ${handleName(name)} belongs to another process`);
      r.fd = fd.index;
    }
    if (op.op === 'join') {
      const t = this.threads[proc]!.get(a.thread as string);
      if (t === undefined) throw new BadOp(op.i, op.op, `thread: unknown thread ${quote(a.thread)}`);
      r.joinThr = t;
    }
    if (op.op === 'setuid' && proc === 0)
      throw new BadOp(op.i, op.op, 'in: setuid only in a spawned process (the main process writes knobs and spawns processes as root)');
    if (op.op === 'fork' && proc !== 0)
      throw new BadOp(op.i, op.op, 'in: fork only in the main process (a spawned process has no channel for a child of its own)');
    if ((op.op === 'spawn' || op.op === 'fork') && this.procs.has(a.name as string))
      throw new BadOp(op.i, op.op, `name: process ${quote(a.name)} already exists`);
    if (op.op === 'thread' && this.threads[proc]!.has(a.name as string))
      throw new BadOp(op.i, op.op, `name: thread ${quote(a.name)} already exists`);
    if (op.op === 'cgroup') {
      if (this.cgroups.has(a.name as string)) throw new BadOp(op.i, op.op, `name: cgroup ${quote(a.name)} already exists`);
      r.cg = this.cgSeq;
    } else if (op.op === 'cgroup_enter' || op.op === 'cgroup_stat') {
      const g = this.cgroups.get(a.name as string);
      if (!g) throw new BadOp(op.i, op.op, `name: unknown cgroup ${quote(a.name)} (make it with a cgroup op first)`);
      if ('i' in g && g.unsupported === undefined)
        throw new BadOp(op.i, op.op, `name: cgroup ${quote(a.name)} does not exist (its cgroup op, i=${g.i}, failed)`);
      if ('index' in g) r.cg = g.index;
    }
    if (op.op === 'damon' && proc !== 0)
      throw new BadOp(
        op.i,
        op.op,
        "in: damon only in the main process (its thread touches the hot range while the executor drives DAMON's sysfs)",
      );
    if (op.op === 'cgroup_enter' && proc === 0)
      throw new BadOp(
        op.i,
        op.op,
        'in: cgroup_enter only in a spawned process (the main process runs the script; an OOM kill of it would end the run)',
      );
    return r;
  }

  /**
   * An answer that does not need the backend: an op in a process the OOM
   * killer killed, or an op naming a memory cgroup the backend could not
   * make (unsupported: the reason is the cgroup op's).
   */
  private answeredHere(op: ResolvedOp): RawResult | undefined {
    if (this.killedProcs.has(op.proc)) return { ret: -1, killed: 'SIGKILL' };
    if (op.op === 'cgroup_enter' || op.op === 'cgroup_stat') {
      const g = this.cgroups.get(op.a.name as string)!;
      if ('unsupported' in g && g.unsupported !== undefined)
        return { unsupported: `cgroup ${quote(op.a.name)} was not made (i=${g.i}: ${g.unsupported})` };
    }
    return undefined;
  }

  private record(op: ResolvedOp, raw: RawResult): void {
    if (op.op === 'mmap') {
      const name = (op.a.name as string | undefined) ?? `m${op.i}`;
      if (raw.ret === -1) this.failedHandles.add(name);
      else {
        this.handles.set(name, { name, proc: op.proc, base: raw.addr as number, len: op.a.len + 0, seq: ++this.seq });
        raw.ret = `$${name}`;
      }
    }
    if ((op.op === 'memfd' || op.op === 'open') && raw.ret !== -1 && raw.unsupported === undefined) {
      this.memfds.set(op.a.name as string, { index: this.mfdSeq++, proc: op.proc, i: op.i });
      raw.ret = `$${op.a.name}`;
    }
    if (op.op === 'userfaultfd' && raw.ret !== -1 && raw.unsupported === undefined) {
      this.fds.set(op.a.name as string, { index: this.fdSeq++, proc: op.proc });
      raw.ret = `$${op.a.name}`;
    }
    if (op.op === 'fork' && raw.ret === 0) this.forkedFrom.set(this.procs.size, { proc: op.proc, seq: this.seq, i: op.i });
    if ((op.op === 'spawn' || op.op === 'fork') && raw.ret === 0) {
      this.procs.set(op.a.name as string, this.procs.size);
      this.threads.push(new Map());
    }
    if (op.op === 'thread' && raw.ret === 0) this.threads[op.proc]!.set(op.a.name as string, this.threads[op.proc]!.size + 1);
    if (op.op === 'cgroup') {
      const name = op.a.name as string;
      if (raw.unsupported === undefined && raw.ret === 0) this.cgroups.set(name, { index: this.cgSeq++ });
      else this.cgroups.set(name, { i: op.i, unsupported: raw.unsupported });
    }
    if (raw.signal === 'SIGKILL' || raw.killed !== undefined) this.killedProcs.add(op.proc);
    // The bound a script asked `current` to be compared within travels with the result (diff.ts reads it there).
    if (op.op === 'cgroup_stat' && raw.current !== undefined && op.a.current_within !== undefined) raw.current_within = op.a.current_within;
    if (raw.ret === -1) this.errors++;
    this.push(this.shape(op, raw));
  }

  /** Canonical result line: fixed field order, addresses relative to handles. */
  private shape(op: ResolvedOp, raw: RawResult): ResultLine {
    const out: ResultLine = { i: op.i, op: op.op };
    if (raw.unsupported !== undefined) {
      out.unsupported = raw.unsupported;
      if (raw.ret !== undefined) out.ret = raw.ret;
      return out;
    }
    out.ret = raw.ret;
    if (raw.errno !== undefined) out.errno = raw.errno;
    if (raw.signal !== undefined) {
      out.signal = raw.signal;
      // a fault's address; an OOM kill (SIGKILL) has none
      if (raw.at !== undefined) out.at = this.render(op.proc, raw.at as number);
    }
    if (raw.killed !== undefined) out.killed = raw.killed;
    if (op.op === 'damon' && Array.isArray(raw.regions)) Object.assign(raw, damonSummary(op, raw.regions as DamonRawRegion[]));
    for (const f of OUTPUT_FIELDS[op.op] ?? []) {
      if (raw[f] === undefined) continue;
      let v = raw[f];
      if (f === 'async_faults')
        v = (v as { i: number; signal: string; at: number }[]).map((x) => ({ i: x.i, signal: x.signal, at: this.render(op.proc, x.at) }));
      if (f === 'hugepages') v = sortBySize(v as Record<string, unknown>);
      if (op.op === 'damon' && f === 'regions')
        v = (v as DamonRawRegion[]).map((r) => ({
          start: this.render(op.proc, r.start),
          size: r.end - r.start,
          nr_accesses: r.nr_accesses,
          age: r.age,
        }));
      if (f === 'msgs')
        v = (v as { event: string; address?: number; flags?: string[] }[]).map((m) =>
          m.address === undefined ? m : { ...m, address: this.render(op.proc, m.address) },
        );
      if (op.op === 'get_mempolicy' && f === 'mode') {
        // with MPOL_F_NODE the kernel writes a node id where the mode goes: it is `node`, not a mode
        if ((op.a.flags ?? 0) & MPOL.MPOL_F_NODE) continue;
        v = mempolicyModeNames(v as number);
      }
      out[f] = v;
    }
    for (const f of BACKEND_FIELDS) if (raw[f] !== undefined) out[f] = raw[f];
    return out;
  }

  /** Whether process proc maps handle h: it made it, or forked from a process that had it. */
  private handleIn(h: Handle, proc: number): boolean {
    for (let p: number | undefined = proc, seq = Infinity; p !== undefined;) {
      if (h.proc === p) return h.seq <= seq;
      const f = this.forkedFrom.get(p);
      p = f?.proc;
      seq = Math.min(seq, f?.seq ?? seq);
    }
    return false;
  }

  /** Whether process proc has the fd that process `owner` made at op i: it made it, or forked from it later. */
  private inheritedBy(owner: number, i: number, proc: number): boolean {
    for (let p: number | undefined = proc, at = Infinity; p !== undefined;) {
      if (p === owner) return i < at;
      const f = this.forkedFrom.get(p);
      p = f?.proc;
      at = Math.min(at, f?.i ?? at);
    }
    return false;
  }

  /** "$a+0x201000" relative to the latest handle of the process containing x. */
  render(proc: number, x: number): string {
    let best: Handle | undefined;
    for (const h of this.handles.values())
      if (this.handleIn(h, proc) && x >= h.base && x < h.base + h.len && (!best || h.seq > best.seq)) best = h;
    if (!best) return `0x${x.toString(16)}`;
    const off = x - best.base;
    return off ? `$${best.name}+0x${off.toString(16)}` : `$${best.name}`;
  }
}

/** A handle as messages name it, "$a", cut like quote() when it is long. */
function handleName(name: string): string {
  return name.length < 64 ? `$${name}` : `$${name.slice(0, 62)}… (${name.length + 1} chars)`;
}

/** A region as both backends report it (absolute addresses). */
interface DamonRawRegion {
  start: number;
  end: number;
  nr_accesses: number;
  age: number;
}

/**
 * What a `damon` op's result compares, derived the same way from either
 * backend's regions: whether their count is within [min_nr_regions,
 * max_nr_regions], whether every region wholly inside the hot range was
 * found accessed in every sample (nr_accesses = aggr/sample), and whether
 * every region wholly outside it in none. The distinct nr_accesses of both
 * sets are shown too; whether a region lies wholly inside the hot range
 * depends on random split points, so they are not compared.
 */
function damonSummary(op: ResolvedOp, regions: DamonRawRegion[]): Record<string, unknown> {
  const d = damonArgs(op.a);
  const max = Math.floor(d.aggr_us / d.sample_us);
  const hs = op.a.hot_addr as number | undefined;
  const he = hs === undefined ? undefined : hs + (op.a.hot_len as number);
  const distinct = (rs: DamonRawRegion[]): number[] => [...new Set(rs.map((r) => r.nr_accesses))].sort((x, y) => x - y);
  const inside = he === undefined ? [] : regions.filter((r) => r.start >= hs! && r.end <= he);
  const outside = he === undefined ? regions : regions.filter((r) => r.end <= hs! || r.start >= he);
  return {
    nr_regions: regions.length,
    within_limits: regions.length >= d.min_nr_regions && regions.length <= d.max_nr_regions,
    hot_all_max: inside.every((r) => r.nr_accesses === max),
    cold_all_zero: outside.every((r) => r.nr_accesses === 0),
    hot_nr_accesses: distinct(inside),
    cold_nr_accesses: distinct(outside),
  };
}

function sortBySize(o: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(o).sort((a, b) => (parseSize(a) ?? 0) - (parseSize(b) ?? 0))) out[k] = o[k];
  return out;
}
