/**
 * The op-script catalogue (../shared/spec/op-script.md plus memtwin's
 * documented extensions) and the parser that turns one JSON line into a
 * checked op, or a one-line reason why it is bad input.
 */
import { BadValue, addr, bool, flags, int, nodeSet, size, str, type Addr, type FlagSet } from './values.ts';

type Kind =
  | 'size'
  | 'addr'
  | 'int'
  | 'bool'
  | 'str'
  | 'byte'
  | 'id'
  | 'nodes'
  | 'nodesOrNull'
  | 'iovec'
  | 'addrs'
  | 'strs'
  | 'value'
  | `flags:${FlagSet}`;

interface OpSpec {
  req: Record<string, Kind>;
  opt?: Record<string, Kind>;
  /** What the op is about, for `memtwin exec --help`. */
  doc: string;
}

export const OPS: Record<string, OpSpec> = {
  sysfs: { req: { path: 'str', value: 'value' }, doc: 'write a sysfs/procfs knob (restored at the end on linux)' },
  read: { req: { path: 'str' }, doc: 'read a sysfs/procfs file as text (memtwin extension; not compared)' },
  hugetlb_pool: { req: { size: 'size', nr: 'int' }, opt: { node: 'int' }, doc: 'set nr_hugepages of a size, globally or on a node' },
  spawn: { req: { name: 'str' }, doc: 'start a new process' },
  thread: { req: { name: 'str' }, opt: { cpu: 'int' }, doc: 'start a thread, pinned to cpu' },
  setuid: {
    req: { uid: 'id' },
    opt: { gid: 'id' },
    doc: 'a spawned process drops privileges: setgroups([]), setresgid(gid) if given, setresuid(uid); capabilities go, the mm becomes non-dumpable',
  },
  set_dumpable: { req: { value: 'int' }, doc: "prctl(PR_SET_DUMPABLE, value) in the op's process" },
  mmap: {
    req: { len: 'size', prot: 'flags:prot', flags: 'flags:mmap' },
    opt: { addr: 'addr', align: 'size', name: 'str' },
    doc: 'map anonymous memory; ret is "$name"',
  },
  munmap: {
    req: { addr: 'addr', len: 'size' },
    opt: { async: 'bool' },
    doc: 'unmap a range (async: on another thread, e.g. to wait for a UFFD_EVENT_UNMAP to be read)',
  },
  mprotect: { req: { addr: 'addr', len: 'size', prot: 'flags:prot' }, doc: 'change protection' },
  madvise: {
    req: { addr: 'addr', len: 'size', advice: 'flags:advice' },
    opt: { async: 'bool' },
    doc: 'give advice (async: on another thread, e.g. to wait for a UFFD_EVENT_REMOVE to be read)',
  },
  process_madvise: {
    req: { target: 'str', iovec: 'iovec', advice: 'flags:advice' },
    opt: { flags: 'int' },
    doc: 'advise another process (or self) over an iovec list; ret is bytes advised',
  },
  touch: {
    req: { addr: 'addr', len: 'size' },
    opt: { write: 'bool', stride: 'size', fill: 'byte', async: 'bool' },
    doc: 'load (or store fill) one byte every stride bytes',
  },
  peek: { req: { addr: 'addr', len: 'size' }, doc: 'first byte of each 4K page, run-length encoded' },
  join: { req: { thread: 'str' }, opt: { timeout_ms: 'int' }, doc: 'wait for a thread’s async work' },
  set_mempolicy: { req: { mode: 'flags:mode' }, opt: { nodes: 'nodes', flags: 'flags:mode' }, doc: 'set the thread memory policy' },
  get_mempolicy: { req: {}, opt: { addr: 'addr', flags: 'flags:getmempolicy' }, doc: 'read a memory policy' },
  mbind: {
    req: { addr: 'addr', len: 'size', mode: 'flags:mode' },
    opt: { nodes: 'nodes', flags: 'flags:mbind' },
    doc: 'set a range’s memory policy',
  },
  migrate_pages: { req: { target: 'str', old_nodes: 'nodes', new_nodes: 'nodes' }, doc: 'move a process’s pages between node sets' },
  move_pages: { req: { target: 'str', pages: 'addrs', nodes: 'nodesOrNull' }, opt: { flags: 'flags:mbind' }, doc: 'move or query pages' },
  cpuset_mems: { req: { mems: 'nodes' }, doc: "set the process's cpuset.mems (simulator only): policies are rebound" },
  ms_tbind: { req: { group: 'int' }, doc: "memsched proposal: bind the op's thread to a group (simulator only; feature memsched)" },
  ms_mbind: { req: { addr: 'addr', len: 'size', group: 'int' }, doc: 'memsched proposal: bind a range to a group (simulator only)' },
  ms_move: { req: { group: 'int', node: 'int' }, doc: 'memsched proposal: move a group, threads and memory, to a node (simulator only)' },
  userfaultfd: { req: { name: 'str' }, opt: { flags: 'flags:uffd' }, doc: 'userfaultfd(flags) in the op\'s process; ret is "$name"' },
  uffdio_api: {
    req: { fd: 'str' },
    opt: { features: 'flags:uffd_features' },
    doc: 'UFFDIO_API handshake: features granted, ioctls offered',
  },
  uffdio_register: {
    req: { fd: 'str', addr: 'addr', len: 'size', mode: 'flags:uffd_register' },
    doc: 'UFFDIO_REGISTER a range: ioctls offered for it',
  },
  uffdio_unregister: { req: { fd: 'str', addr: 'addr', len: 'size' }, doc: 'UFFDIO_UNREGISTER a range' },
  uffdio_copy: {
    req: { fd: 'str', dst: 'addr', len: 'size' },
    opt: { fill: 'byte', mode: 'flags:uffd_mode' },
    doc: 'UFFDIO_COPY len bytes filled with `fill`; copy = bytes copied or -errno',
  },
  uffdio_zeropage: { req: { fd: 'str', addr: 'addr', len: 'size' }, opt: { mode: 'flags:uffd_mode' }, doc: 'UFFDIO_ZEROPAGE' },
  uffdio_wake: { req: { fd: 'str', addr: 'addr', len: 'size' }, doc: 'UFFDIO_WAKE the threads blocked on a range' },
  uffdio_writeprotect: { req: { fd: 'str', addr: 'addr', len: 'size' }, opt: { mode: 'flags:uffd_mode' }, doc: 'UFFDIO_WRITEPROTECT' },
  uffdio_continue: {
    req: { fd: 'str', addr: 'addr', len: 'size' },
    opt: { mode: 'flags:uffd_mode' },
    doc: 'UFFDIO_CONTINUE (minor faults)',
  },
  uffdio_poison: { req: { fd: 'str', addr: 'addr', len: 'size' }, opt: { mode: 'flags:uffd_mode' }, doc: 'UFFDIO_POISON' },
  uffdio_move: {
    req: { fd: 'str', dst: 'addr', src: 'addr', len: 'size' },
    opt: { mode: 'flags:uffd_mode' },
    doc: 'UFFDIO_MOVE pages from src to dst',
  },
  uffd_read: {
    req: { fd: 'str' },
    opt: { max: 'int', timeout_ms: 'int' },
    doc: 'read up to max (1) messages, waiting up to timeout_ms (1000) for them',
  },
  khugepaged_wait: {
    req: {},
    opt: { full_scans: 'int', timeout_ms: 'int' },
    doc: 'wait until khugepaged completes full_scans (default 2) more full scans; -1/ETIMEDOUT after timeout_ms (default 10000)',
  },
  pagemap: { req: { addr: 'addr', len: 'size' }, doc: '/proc/PID/pagemap over a range' },
  smaps: { req: { addr: 'addr' }, doc: '/proc/PID/smaps of the mapping containing addr' },
  numa_maps: { req: { addr: 'addr' }, doc: '/proc/PID/numa_maps of the mapping containing addr' },
  meminfo: { req: {}, opt: { node: 'int' }, doc: 'hugetlb counters of /proc/meminfo or a node' },
  vmstat: { req: { keys: 'strs' }, doc: 'change of /proc/vmstat counters since the script began' },
};

/** Ops of the spec that memtwin parses but has not implemented yet on any backend. */
export const PLANNED_OPS = new Set<string>([]);

export interface Op {
  i: number;
  op: string;
  in: string;
  thread: string | undefined;
  /** Checked arguments, by field name. */
  a: Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
}

export class BadOp extends Error {
  constructor(
    readonly i: number,
    readonly op: string,
    msg: string,
  ) {
    super(msg);
  }
}

function parseField(field: string, kind: Kind, v: unknown): unknown {
  switch (kind) {
    case 'size':
      return size(field, v);
    case 'addr':
      return addr(field, v);
    case 'int':
      return int(field, v);
    case 'byte':
      return int(field, v, 0, 255);
    case 'id':
      return int(field, v, 0, 0xfffffffe); // (uid_t)-1 means "unchanged" to setresuid: not an id
    case 'bool':
      return bool(field, v);
    case 'str':
      return str(field, v);
    case 'value':
      if (typeof v === 'number') return String(v);
      if (typeof v === 'string') return v;
      throw new BadValue(`${field}: expected a string or a number, got ${JSON.stringify(v)}`);
    case 'nodes':
      return nodeSet(field, v);
    case 'nodesOrNull':
      return v === null ? null : nodeSet(field, v);
    case 'strs':
      if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw new BadValue(`${field}: expected an array of strings`);
      return v;
    case 'addrs':
      if (!Array.isArray(v)) throw new BadValue(`${field}: expected an array of addresses`);
      return v.map((x, j) => addr(`${field}[${j}]`, x));
    case 'iovec':
      if (!Array.isArray(v)) throw new BadValue(`${field}: expected a list of [addr, len] pairs`);
      return v.map((x, j) => {
        if (!Array.isArray(x) || x.length !== 2) throw new BadValue(`${field}[${j}]: expected [addr, len]`);
        return [addr(`${field}[${j}][0]`, x[0]), size(`${field}[${j}][1]`, x[1])] as [Addr, number];
      });
    default:
      return flags(field, v, kind.slice(6) as FlagSet);
  }
}

/** Parse one script line. Throws BadOp with a clear reason. */
export function parseOp(line: string, i: number): Op {
  let obj: unknown;
  try {
    obj = JSON.parse(line);
  } catch (e) {
    throw new BadOp(i, '?', `not valid JSON: ${(e as Error).message}`);
  }
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) throw new BadOp(i, '?', 'expected a JSON object');
  const o = obj as Record<string, unknown>;
  const name = o.op;
  if (typeof name !== 'string') throw new BadOp(i, '?', 'missing "op" field');
  if (PLANNED_OPS.has(name)) throw new BadOp(i, name, `op "${name}" is in the spec but not implemented by memtwin yet`);
  const spec = OPS[name];
  if (!spec) throw new BadOp(i, name, `unknown op "${name}" (known: ${Object.keys(OPS).join(', ')})`);
  const a: Record<string, unknown> = {};
  try {
    for (const [f, kind] of Object.entries(spec.req)) {
      if (!(f in o)) throw new BadValue(`${f}: required field missing`);
      a[f] = parseField(f, kind, o[f]);
    }
    for (const [f, kind] of Object.entries(spec.opt ?? {})) if (f in o && o[f] !== undefined) a[f] = parseField(f, kind, o[f]);
    const common = new Set(['op', 'in', 'thread', 'comment']);
    for (const f of Object.keys(o))
      if (!common.has(f) && !(f in spec.req) && !(spec.opt && f in spec.opt) && !(name === 'join' && f === 'thread'))
        throw new BadValue(`unknown field "${f}" for op ${name}`);
    if (o.in !== undefined && typeof o.in !== 'string') throw new BadValue('in: expected a process name');
    if (o.thread !== undefined && typeof o.thread !== 'string') throw new BadValue('thread: expected a thread name');
  } catch (e) {
    if (e instanceof BadValue) throw new BadOp(i, name, e.message);
    throw e;
  }
  return {
    i,
    op: name,
    in: (o.in as string | undefined) ?? 'self',
    thread: name === 'join' ? undefined : (o.thread as string | undefined),
    a,
  };
}
