/**
 * The op-script catalogue (docs/op-script.md, with memtwin's
 * documented extensions) and the parser that turns one JSON line into a
 * checked op, or a one-line reason why it is bad input. Every field has a
 * kind, and every numeric kind a range (RANGES, documented in
 * docs/op-script.md): nothing outside it reaches a backend.
 */
import {
  BadValue,
  CPU_SETSIZE,
  MAX_NUMNODES,
  SIZE_MAX,
  addr,
  bool,
  flags,
  fmtBytes,
  fmtNum,
  int,
  nodeSet,
  pow2,
  size,
  str,
  type Addr,
  type FlagSet,
} from './values.ts';
import { quote } from '../util/input_error.ts';

/** Integer fields: name -> [min, max, what it is]. */
export const INT_RANGES = {
  byte: [0, 255, 'a byte value'],
  id: [0, 0xfffffffe, 'a uid/gid; (uid_t)-1 means "unchanged" to setresuid, so it is not an id'],
  cpu: [0, CPU_SETSIZE - 1, 'a CPU number (the executor pins with a cpu_set_t of CPU_SETSIZE)'],
  node: [0, MAX_NUMNODES - 1, 'a node id (MAX_NUMNODES)'],
  nr: [0, 2 ** 32 - 1, 'a page count; more than any machine holds, the kernel allocates what it can'],
  int: [-(2 ** 31), 2 ** 31 - 1, 'a C int'],
  uint: [0, 2 ** 32 - 1, 'a C unsigned int'],
  timeout_ms: [0, 60_000, 'a wait in the executor, below its 120 s answer timeout'],
  wait_ms: [0, 600_000, 'up to 10 minutes of virtual (sim) or real (linux) time'],
  scans: [0, 1000, 'khugepaged full scans'],
  msgs: [0, 4096, 'userfaultfd messages (the executor reads at most 4096)'],
  interval_us: [1, 10_000_000, 'a DAMON interval, 1 µs to 10 s'],
  nr_regions: [3, 100_000, 'a DAMON region count (DAMON refuses a minimum below 3)'],
  aggrs: [1, 1000, 'DAMON aggregation intervals'],
} as const satisfies Record<string, readonly [number, number, string]>;
type IntKind = keyof typeof INT_RANGES;

/** The most pages one `peek` or `pagemap` reports, and the most accesses one `touch` makes: 2^24. */
export const MAX_PAGES_PER_OP = 2 ** 24;
/** The longest range `peek` and `pagemap` read: 2^24 pages of 4K (64 GiB). */
export const SPAN_MAX = MAX_PAGES_PER_OP * 4096;
/** Deepest nesting of arrays and objects in one line (an op needs 3: iovec pairs). */
export const MAX_DEPTH = 32;
/** Longest name (handle, process, thread, userfaultfd): NAME_MAX. */
export const NAME_MAX = 255;
/** Longest sysfs/procfs path: PATH_MAX - 1. */
export const PATH_MAX = 4095;
/** Longest knob value: one page, as much as a sysfs store receives. */
export const VALUE_MAX = 4096;
/**
 * The largest swap area a `swap` op makes: 2^24 slots of 4K (64 GiB), as
 * many pages as one op may touch. The linux backend allocates the whole
 * file on disk (swapon refuses holes), so a larger area is a disk, not a
 * test; a smaller disk answers -1/ENOSPC.
 */
export const SWAP_MAX = MAX_PAGES_PER_OP * 4096;
/** The smallest: two pages, the header and one slot (swapon refuses an area with no slot: EINVAL). */
export const SWAP_MIN = 2 * 4096;
/** Longest memory cgroup name (a directory in the cgroup hierarchy). */
export const CGROUP_NAME_MAX = 64;

type Kind =
  | 'size'
  | 'span'
  | 'stride'
  | 'align'
  | 'hpsize'
  | 'addr'
  | IntKind
  | 'bool'
  | 'name'
  | 'path'
  | 'value'
  | 'nodes'
  | 'nodesOrNull'
  | 'iovec'
  | 'addrs'
  | 'vmstat_keys'
  | 'swapsize'
  | 'limit'
  | 'cgname'
  | 'fskind'
  | `flags:${FlagSet}`;

interface OpSpec {
  req: Record<string, Kind>;
  opt?: Record<string, Kind>;
  /** What the op is about, for `memtwin exec --help`. */
  doc: string;
  /** A check across fields, after each field passed its own: the reason the op is bad, or undefined. */
  check?: (a: Record<string, any>) => string | undefined; // eslint-disable-line @typescript-eslint/no-explicit-any
  /** What `check` requires, for the docs. */
  limit?: string;
}

export const OPS: Record<string, OpSpec> = {
  sysfs: { req: { path: 'path', value: 'value' }, doc: 'write a sysfs/procfs knob (restored at the end on linux)' },
  read: { req: { path: 'path' }, doc: 'read a sysfs/procfs file as text (memtwin extension; not compared)' },
  hugetlb_pool: { req: { size: 'hpsize', nr: 'nr' }, opt: { node: 'node' }, doc: 'set nr_hugepages of a size, globally or on a node' },
  spawn: { req: { name: 'name' }, doc: 'start a new process' },
  fork: {
    req: { name: 'name' },
    doc: 'fork() of the main process: a child with a copy-on-write copy of its address space (later ops run in it with "in": name)',
  },
  thread: { req: { name: 'name' }, opt: { cpu: 'cpu' }, doc: 'start a thread, pinned to cpu' },
  setuid: {
    req: { uid: 'id' },
    opt: { gid: 'id' },
    doc: 'a spawned process drops privileges: setgroups([]), setresgid(gid) if given, setresuid(uid); capabilities go, the mm becomes non-dumpable',
  },
  set_dumpable: { req: { value: 'int' }, doc: "prctl(PR_SET_DUMPABLE, value) in the op's process" },
  mmap: {
    req: { len: 'size', prot: 'flags:prot', flags: 'flags:mmap' },
    opt: { addr: 'addr', align: 'align', name: 'name', fd: 'name', offset: 'size' },
    doc: 'map anonymous memory, or (fd: a memfd handle, without MAP_ANONYMOUS) a memfd from offset; ret is "$name"',
  },
  open: {
    req: { name: 'name', kind: 'fskind', size: 'size' },
    doc: 'create and open a file of size bytes on tmpfs (sparse) or on the disk (zeros written, not cached), removed at the end; ret is "$name", mapped with mmap fd',
  },
  memfd: {
    req: { name: 'name', size: 'size' },
    opt: { flags: 'flags:memfd' },
    doc: 'memfd_create(name, flags) and ftruncate to size in the op\'s process (a forked child inherits it); ret is "$name"',
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
    req: { target: 'name', iovec: 'iovec', advice: 'flags:advice' },
    opt: { flags: 'flags:process_madvise' },
    doc: 'advise another process (or self) over an iovec list; ret is bytes advised',
  },
  touch: {
    req: { addr: 'addr', len: 'size' },
    opt: { write: 'bool', stride: 'stride', fill: 'byte', async: 'bool' },
    doc: 'load (or store fill) one byte every stride bytes',
    limit: 'at most 2^24 accesses (len / stride, rounded up)',
    check: (a) => {
      const n = Math.ceil(a.len / (a.stride ?? 4096));
      return n > MAX_PAGES_PER_OP
        ? `len: ${fmtBytes(a.len)} at a stride of ${fmtBytes(a.stride ?? 4096)} is ${n} accesses; a touch makes at most 2^24`
        : undefined;
    },
  },
  peek: { req: { addr: 'addr', len: 'span' }, doc: 'first byte of each 4K page, run-length encoded' },
  join: { req: { thread: 'name' }, opt: { timeout_ms: 'timeout_ms' }, doc: 'wait for a thread’s async work' },
  set_mempolicy: { req: { mode: 'flags:mode' }, opt: { nodes: 'nodesOrNull', flags: 'flags:mode' }, doc: 'set the thread memory policy' },
  get_mempolicy: { req: {}, opt: { addr: 'addr', flags: 'flags:getmempolicy' }, doc: 'read a memory policy' },
  mbind: {
    req: { addr: 'addr', len: 'size', mode: 'flags:mode' },
    opt: { nodes: 'nodesOrNull', flags: 'flags:mbind' },
    doc: 'set a range’s memory policy',
  },
  migrate_pages: { req: { target: 'name', old_nodes: 'nodes', new_nodes: 'nodes' }, doc: 'move a process’s pages between node sets' },
  move_pages: {
    req: { target: 'name', pages: 'addrs', nodes: 'nodesOrNull' },
    opt: { flags: 'flags:mbind' },
    doc: 'move or query pages',
    limit: '`nodes` as long as `pages`, or null',
    check: (a) =>
      a.nodes !== null && a.nodes.length !== a.pages.length
        ? `nodes: expected one node per page (${a.pages.length}), got ${a.nodes.length}`
        : undefined,
  },
  cpuset_mems: { req: { mems: 'nodes' }, doc: "set the process's cpuset.mems (simulator only): policies are rebound" },
  process_mbind: {
    req: { target: 'name', addr: 'addr', len: 'size', mode: 'flags:mode' },
    opt: { nodes: 'nodesOrNull', flags: 'flags:mbind' },
    doc: 'process_mbind proposal: mbind a range of another process (simulator only; feature process_mbind)',
  },
  ms_tbind: { req: { group: 'int' }, doc: "memsched proposal: bind the op's thread to a group (simulator only; feature memsched)" },
  ms_mbind: { req: { addr: 'addr', len: 'size', group: 'int' }, doc: 'memsched proposal: bind a range to a group (simulator only)' },
  ms_move: { req: { group: 'int', node: 'node' }, doc: 'memsched proposal: move a group, threads and memory, to a node (simulator only)' },
  userfaultfd: { req: { name: 'name' }, opt: { flags: 'flags:uffd' }, doc: 'userfaultfd(flags) in the op\'s process; ret is "$name"' },
  uffdio_api: {
    req: { fd: 'name' },
    opt: { features: 'flags:uffd_features' },
    doc: 'UFFDIO_API handshake: features granted, ioctls offered',
  },
  uffdio_register: {
    req: { fd: 'name', addr: 'addr', len: 'size', mode: 'flags:uffd_register' },
    doc: 'UFFDIO_REGISTER a range: ioctls offered for it',
  },
  uffdio_unregister: { req: { fd: 'name', addr: 'addr', len: 'size' }, doc: 'UFFDIO_UNREGISTER a range' },
  uffdio_copy: {
    req: { fd: 'name', dst: 'addr', len: 'size' },
    opt: { fill: 'byte', mode: 'flags:uffd_mode' },
    doc: 'UFFDIO_COPY len bytes filled with `fill`; copy = bytes copied or -errno',
  },
  uffdio_zeropage: { req: { fd: 'name', addr: 'addr', len: 'size' }, opt: { mode: 'flags:uffd_mode' }, doc: 'UFFDIO_ZEROPAGE' },
  uffdio_wake: { req: { fd: 'name', addr: 'addr', len: 'size' }, doc: 'UFFDIO_WAKE the threads blocked on a range' },
  uffdio_writeprotect: { req: { fd: 'name', addr: 'addr', len: 'size' }, opt: { mode: 'flags:uffd_mode' }, doc: 'UFFDIO_WRITEPROTECT' },
  uffdio_continue: {
    req: { fd: 'name', addr: 'addr', len: 'size' },
    opt: { mode: 'flags:uffd_mode' },
    doc: 'UFFDIO_CONTINUE (minor faults)',
  },
  uffdio_poison: { req: { fd: 'name', addr: 'addr', len: 'size' }, opt: { mode: 'flags:uffd_mode' }, doc: 'UFFDIO_POISON' },
  uffdio_move: {
    req: { fd: 'name', dst: 'addr', src: 'addr', len: 'size' },
    opt: { mode: 'flags:uffd_mode' },
    doc: 'UFFDIO_MOVE pages from src to dst',
  },
  uffd_read: {
    req: { fd: 'name' },
    opt: { max: 'msgs', timeout_ms: 'timeout_ms' },
    doc: 'read up to max (1) messages, waiting up to timeout_ms (1000) for them',
  },
  khugepaged_wait: {
    req: {},
    opt: { full_scans: 'scans', timeout_ms: 'wait_ms' },
    doc: 'wait until khugepaged completes full_scans (default 2) more full scans; -1/ETIMEDOUT after timeout_ms (default 10000)',
  },
  pagemap: { req: { addr: 'addr', len: 'span' }, doc: '/proc/PID/pagemap over a range' },
  smaps: { req: { addr: 'addr' }, doc: '/proc/PID/smaps of the mapping containing addr' },
  numa_maps: { req: { addr: 'addr' }, doc: '/proc/PID/numa_maps of the mapping containing addr' },
  meminfo: { req: {}, opt: { node: 'node' }, doc: 'hugetlb counters of /proc/meminfo or a node' },
  vmstat: { req: { keys: 'vmstat_keys' }, doc: 'change of /proc/vmstat counters since the script began' },
  swap: {
    req: { size: 'swapsize' },
    doc: 'a swap area of size bytes for the rest of the script (linux: a swap file, swapped off and deleted at the end)',
  },
  cgroup: {
    req: { name: 'cgname' },
    opt: { memory_max: 'limit', memory_high: 'limit', swap_max: 'limit' },
    doc: 'a memory cgroup with these limits (bytes, or "max"), removed at the end; cgroup v1 has no memory_high',
  },
  cgroup_enter: { req: { name: 'cgname' }, doc: "move the op's process (a spawned one) into the memory cgroup" },
  cgroup_stat: {
    req: { name: 'cgname' },
    opt: { current_within: 'size' },
    doc:
      "a memory cgroup's charge (current: compared only with current_within, to within that many bytes), events " +
      '{oom, oom_kill} (compared) and workingset {refault_anon, refault_file} (memory.stat; compared as zero or not)',
  },
  damon: {
    req: { addr: 'addr', len: 'size', aggrs: 'aggrs' },
    opt: {
      sample_us: 'interval_us',
      aggr_us: 'interval_us',
      min_nr_regions: 'nr_regions',
      max_nr_regions: 'nr_regions',
      hot_addr: 'addr',
      hot_len: 'size',
    },
    doc: "DAMON (vaddr) monitors [addr, addr+len) of the script's main process for aggrs aggregation intervals while a thread keeps loading every page of [hot_addr, hot_addr+hot_len); the regions then",
    limit:
      'min_nr_regions <= max_nr_regions; sample_us <= aggr_us; aggrs × aggr_us at most 60 s; aggrs × (aggr_us / sample_us) × max_nr_regions at most 10^8; hot_addr and hot_len together',
    check: (a) => {
      const d = damonArgs(a);
      if (d.min_nr_regions > d.max_nr_regions) return `min_nr_regions (${d.min_nr_regions}) exceeds max_nr_regions (${d.max_nr_regions})`;
      if (d.sample_us > d.aggr_us) return `sample_us (${d.sample_us}) exceeds aggr_us (${d.aggr_us})`;
      if (a.aggrs * d.aggr_us > 60_000_000) return `aggrs × aggr_us is ${fmtNum((a.aggrs * d.aggr_us) / 1e6)} s; at most 60 s`;
      const checks = a.aggrs * Math.floor(d.aggr_us / d.sample_us) * d.max_nr_regions;
      if (checks > DAMON_MAX_CHECKS)
        return `aggrs × (aggr_us / sample_us) × max_nr_regions is ${fmtNum(checks)} region checks; at most ${fmtNum(DAMON_MAX_CHECKS)}`;
      if ((a.hot_addr === undefined) !== (a.hot_len === undefined)) return 'hot_addr and hot_len: give both or neither';
      if (a.len < 3 * 4096) return 'len: DAMON needs at least 3 pages to monitor';
      return undefined;
    },
  },
};

/** The most region checks one `damon` op may ask for (samples × max_nr_regions): it bounds the simulator's work. */
export const DAMON_MAX_CHECKS = 1e8;

/** The `damon` op's attributes with DAMON's defaults (sample 5 ms, aggregation 100 ms, 10 to 1000 regions). */
export function damonArgs(a: Record<string, unknown>): {
  sample_us: number;
  aggr_us: number;
  min_nr_regions: number;
  max_nr_regions: number;
} {
  const n = (f: string, def: number): number => (a[f] as number | undefined) ?? def;
  return {
    sample_us: n('sample_us', 5000),
    aggr_us: n('aggr_us', 100_000),
    min_nr_regions: n('min_nr_regions', 10),
    max_nr_regions: n('max_nr_regions', 1000),
  };
}

/** Ops of the spec that memtwin parses but has not implemented yet on any backend. */
export const PLANNED_OPS = new Set<string>([]);

/**
 * Ops of proposals Linux never merged, by the proposal (feature) they
 * belong to: the simulator has them; a real kernel (the linux and guest
 * backends) answers `unsupported`, so a diff lists them as skipped.
 */
export const PROPOSAL_OPS: ReadonlyMap<string, string> = new Map([
  ['ms_tbind', 'memsched'],
  ['ms_mbind', 'memsched'],
  ['ms_move', 'memsched'],
  ['process_mbind', 'process_mbind'],
]);

/** A real kernel's answer to a proposal's op, or undefined for any other op. */
export function proposalUnsupported(op: string): { unsupported: string } | undefined {
  const proposal = PROPOSAL_OPS.get(op);
  return proposal === undefined ? undefined : { unsupported: `${op} belongs to a proposal Linux never merged (${proposal})` };
}

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
  if (Object.hasOwn(INT_RANGES, kind)) {
    const [min, max] = INT_RANGES[kind as IntKind];
    return int(field, v, min, max);
  }
  switch (kind) {
    case 'size':
      return size(field, v);
    case 'span':
      return size(field, v, 0, SPAN_MAX);
    case 'stride':
      return size(field, v, 1);
    case 'align':
      return pow2(field, v, 4096, 2 ** 46);
    case 'hpsize':
      return pow2(field, v, 4096, 2 ** 40);
    case 'addr':
      return addr(field, v);
    case 'bool':
      return bool(field, v);
    case 'name':
      return str(field, v, NAME_MAX);
    case 'path':
      return str(field, v, PATH_MAX);
    case 'value':
      // A number is written as its decimal text; one JSON cannot hold exactly (above 2^53) must be a string.
      if (typeof v === 'number' && Number.isSafeInteger(v)) return Object.is(v, -0) ? '-0' : String(v);
      if (typeof v === 'string' && v.length <= VALUE_MAX) return v;
      throw new BadValue(
        `${field}: expected a string of at most ${VALUE_MAX} characters or an integer from -2^53+1 to 2^53-1 ` +
          `(write larger numbers as strings, e.g. "18446744073709551616"), got ${quote(v)}`,
      );
    case 'nodes':
      return nodeSet(field, v);
    case 'swapsize': {
      const n = size(field, v, SWAP_MIN, SWAP_MAX);
      if (n % 4096) throw new BadValue(`${field}: expected a multiple of 4K (a swap area is made of 4K slots), got ${quote(v)}`);
      return n;
    }
    case 'limit':
      // a cgroup limit: bytes (the kernel rounds down to pages) or "max", as memory.max reads it
      return v === 'max' ? 'max' : size(field, v);
    case 'fskind':
      if (v !== 'tmpfs' && v !== 'disk') throw new BadValue(`${field}: expected "tmpfs" or "disk", got ${quote(v)}`);
      return v;
    case 'cgname':
      if (typeof v !== 'string' || !/^[A-Za-z0-9_-]+$/.test(v) || v.length > CGROUP_NAME_MAX)
        throw new BadValue(
          `${field}: expected a cgroup name of 1 to ${CGROUP_NAME_MAX} letters, digits, "_" and "-" (a directory of the ` +
            `cgroup hierarchy: no "/", no "." that could name a control file), got ${quote(v)}`,
        );
      return v;
    case 'nodesOrNull':
      return v === null ? null : nodeSet(field, v);
    case 'vmstat_keys':
      if (!Array.isArray(v) || v.length > 256 || !v.every((x) => typeof x === 'string' && /^[a-z0-9_]{1,64}$/.test(x)))
        throw new BadValue(`${field}: expected up to 256 /proc/vmstat counter names such as ["thp_fault_alloc"], got ${quote(v)}`);
      return v;
    case 'addrs':
      if (!Array.isArray(v) || v.length > 65536)
        throw new BadValue(`${field}: expected an array of up to 65536 addresses, got ${quote(v)}`);
      return v.map((x, j) => addr(`${field}[${j}]`, x));
    case 'iovec':
      if (!Array.isArray(v) || v.length > 1024)
        throw new BadValue(`${field}: expected a list of up to 1024 (UIO_MAXIOV) [addr, len] pairs, got ${quote(v)}`);
      return v.map((x, j) => {
        if (!Array.isArray(x) || x.length !== 2) throw new BadValue(`${field}[${j}]: expected [addr, len], got ${quote(x)}`);
        return [addr(`${field}[${j}][0]`, x[0]), size(`${field}[${j}][1]`, x[1])] as [Addr, number];
      });
    default:
      return flags(field, v, kind.slice(6) as FlagSet);
  }
}

/**
 * What JSON.parse lets through but a script must not contain: a key given
 * twice in one object (JSON.parse silently keeps the last; scenario YAML
 * refuses it too), and nesting deeper than MAX_DEPTH (later walks may
 * recurse). One pass over text JSON.parse already accepted.
 */
function checkStructure(text: string): string | undefined {
  const stack: (Set<string> | null)[] = []; // a Set of the keys seen for an object, null for an array
  let expectKey = false;
  for (let p = 0; p < text.length; p++) {
    const c = text[p];
    if (c === '"') {
      let q = p + 1;
      while (text[q] !== '"') q += text[q] === '\\' ? 2 : 1;
      const keys = stack[stack.length - 1];
      if (expectKey && keys) {
        const key = JSON.parse(text.slice(p, q + 1)) as string;
        if (keys.has(key)) return `duplicate key ${quote(key)}${stack.length > 1 ? ' in a nested object' : ''}`;
        keys.add(key);
        expectKey = false;
      }
      p = q;
    } else if (c === '{' || c === '[') {
      stack.push(c === '{' ? new Set() : null);
      if (stack.length > MAX_DEPTH) return `values nested deeper than ${MAX_DEPTH} levels`;
      expectKey = c === '{';
    } else if (c === '}' || c === ']') stack.pop();
    else if (c === ',') expectKey = stack[stack.length - 1] !== null;
  }
  return undefined;
}

const COMMON_FIELDS = new Set(['op', 'in', 'thread', 'comment']);

/** Parse one script line. Throws BadOp with a clear reason. */
export function parseOp(line: string, i: number): Op {
  let obj: unknown;
  try {
    obj = JSON.parse(line);
  } catch (e) {
    throw new BadOp(i, '?', `not valid JSON: ${(e as Error).message.slice(0, 200)}`);
  }
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) throw new BadOp(i, '?', `expected a JSON object, got ${quote(obj)}`);
  const o = obj as Record<string, unknown>;
  const has = (f: string): boolean => Object.hasOwn(o, f);
  const name = has('op') ? o.op : undefined;
  const bad = checkStructure(line);
  if (bad) throw new BadOp(i, typeof name === 'string' && Object.hasOwn(OPS, name) ? name : '?', bad);
  if (typeof name !== 'string') throw new BadOp(i, '?', has('op') ? `op: expected an op name, got ${quote(name)}` : 'missing "op" field');
  if (PLANNED_OPS.has(name)) throw new BadOp(i, name, `op "${name}" is in the spec but not implemented by memtwin yet`);
  // Own properties only: "constructor" or "__proto__" is an unknown op, not Object's.
  if (!Object.hasOwn(OPS, name))
    throw new BadOp(
      i,
      name.length > 40 ? `${name.slice(0, 39)}…` : name,
      `unknown op ${quote(name)} (known: ${Object.keys(OPS).join(', ')})`,
    );
  const spec = OPS[name]!;
  const opt = spec.opt ?? {};
  const a: Record<string, unknown> = {};
  try {
    for (const [f, kind] of Object.entries(spec.req)) {
      if (!has(f)) throw new BadValue(`${f}: required field missing`);
      a[f] = parseField(f, kind, o[f]);
    }
    for (const [f, kind] of Object.entries(opt)) if (has(f) && o[f] !== undefined) a[f] = parseField(f, kind, o[f]);
    for (const f of Object.keys(o))
      if (!COMMON_FIELDS.has(f) && !Object.hasOwn(spec.req, f) && !Object.hasOwn(opt, f))
        throw new BadValue(`unknown field ${quote(f)} for op ${name}`);
    if (o.in !== undefined) str('in', o.in, NAME_MAX);
    if (o.thread !== undefined && name !== 'join') str('thread', o.thread, NAME_MAX);
    const why = spec.check?.(a);
    if (why) throw new BadValue(why);
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

/** A numeric field's documented range, for docs/op-script.md and --help. */
export function rangeOf(kind: Kind): string | undefined {
  if (Object.hasOwn(INT_RANGES, kind)) {
    const [min, max] = INT_RANGES[kind as IntKind];
    return `${fmtNum(min)} to ${fmtNum(max)}`;
  }
  switch (kind) {
    case 'size':
      return `0 to ${fmtNum(SIZE_MAX)} bytes`;
    case 'span':
      return `0 to ${fmtBytes(SPAN_MAX)}`;
    case 'stride':
      return `1 to ${fmtNum(SIZE_MAX)} bytes`;
    case 'align':
      return 'a power of two, 4K to 2^46';
    case 'hpsize':
      return 'a power of two, 4K to 2^40';
    case 'addr':
      return `0 to ${fmtNum(SIZE_MAX)}`;
    case 'nodes':
    case 'nodesOrNull':
      return `node ids 0 to ${MAX_NUMNODES - 1}`;
    case 'iovec':
      return `up to 1024 pairs; len 0 to ${fmtNum(SIZE_MAX)}`;
    case 'addrs':
      return 'up to 65536 addresses';
    case 'swapsize':
      return `a multiple of 4K from ${fmtBytes(SWAP_MIN)} to ${fmtBytes(SWAP_MAX)}`;
    case 'limit':
      return `0 to ${fmtNum(SIZE_MAX)} bytes, or "max"`;
  }
  return undefined;
}

/** The "Argument ranges" table of docs/op-script.md: every op's numeric fields. */
export function rangeTable(): string {
  const rows = ['| op | field: range |', '| --- | --- |'];
  for (const [name, spec] of Object.entries(OPS)) {
    const cells = Object.entries({ ...spec.req, ...spec.opt })
      .map(([f, k]) => [f, rangeOf(k)])
      .filter(([, r]) => r !== undefined)
      .map(([f, r]) => `\`${f}\`: ${r}`);
    if (spec.limit) cells.push(spec.limit);
    if (cells.length) rows.push(`| \`${name}\` | ${cells.join('; ')} |`);
  }
  return rows.join('\n');
}
