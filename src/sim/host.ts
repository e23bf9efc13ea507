/**
 * A host: NUMA nodes with their memory and CPUs, and the SLIT distance
 * matrix (as /sys/devices/system/node/nodeN/distance reports it).
 */
import { z } from 'zod';
import { fromRoot } from '../util/paths.ts';
import { existsSync, readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { loadYaml, quote, withForm } from '../util/yaml_input.ts';
import { InputError, parseRate, parseSize } from '../util/input_error.ts';

/** Highest CPU id: NR_CPUS is 8192 in Debian's x86_64 kernels (CONFIG_NR_CPUS, MAXSMP). */
export const MAX_CPU_ID = 8191;
/** Highest node id: MAX_NUMNODES is 1024 (CONFIG_NODES_SHIFT=10). */
export const MAX_NODE_ID = 1023;
/** Nodes of a simulated host, and memory per node (4 MiB to 1 TiB: frame metadata is ~10 MB per GiB in use). */
export const MAX_HOST_NODES = 64;
export const MAX_NODE_MEMORY = 2 ** 40;

const memoryForm = 'a size, a multiple of 4M from 4M to 1T: a number of bytes or a string such as 512M, 8G';
const size = withForm(z.union([z.number(), z.string()]), memoryForm).transform((v, ctx) => {
  const b = parseSize(v);
  if (b === undefined || b === 0 || b > MAX_NODE_MEMORY || b % (4 << 20) !== 0) {
    ctx.addIssue({ code: 'custom', message: `expected ${memoryForm} (the largest buddy block is 4M), got ${quote(v)}` });
    return z.NEVER;
  }
  return b;
});

/** Bandwidths from 1 MB/s to 10 TB/s (a 12-channel DDR5 socket gives under 1 TB/s). */
export const MIN_BANDWIDTH = 1e6;
export const MAX_BANDWIDTH = 1e13;
const rateForm = 'a bandwidth from 1e6 to 1e13 bytes per second: a number, or a string such as 20GB/s or 800MB/s (GB decimal, GiB binary)';
const rate = withForm(z.union([z.number(), z.string()]), rateForm).transform((v, ctx) => {
  const r = parseRate(v);
  if (r === undefined || r < MIN_BANDWIDTH || r > MAX_BANDWIDTH) {
    ctx.addIssue({ code: 'custom', message: `expected ${rateForm}, got ${quote(v)}` });
    return z.NEVER;
  }
  return r;
});

const cpuForm = `CPU ids from 0 to ${MAX_CPU_ID}: a list [0, 1], a CPU list string such as "0-3,8", or one id`;
/** A CPU list: [0, 1], "0-3,8" (Linux's cpulist format) or one id. */
export const cpuList = withForm(
  z.union([z.array(z.number().int().min(0).max(MAX_CPU_ID)), z.string(), z.number().int()]),
  cpuForm,
).transform((v, ctx) => {
  const out = Array.isArray(v) ? v : parseCpuList(String(v));
  if (!out) {
    ctx.addIssue({ code: 'custom', message: `expected ${cpuForm}, got ${quote(v)}` });
    return z.NEVER;
  }
  return out;
});

export const hostSchema = z
  .strictObject({
    name: z.string().min(1).describe('the host name results show'),
    description: z.string().optional(),
    nodes: z
      .array(
        z.strictObject({
          id: z
            .number()
            .int()
            .min(0)
            .max(MAX_HOST_NODES - 1)
            .describe('the node id, 0 to 63: the i-th node has id i'),
          memory: size.describe('memory of the node, a multiple of 4M from 4M to 1T'),
          cpus: cpuList.describe(`its CPUs, ids 0 to ${MAX_CPU_ID} (Linux's cpulist format, e.g. "0-3,8")`),
          bandwidth: rate
            .optional()
            .describe(
              "DRAM bandwidth of the node, 1e6 to 1e13 bytes per second of traffic (e.g. 80GB/s); default: the cost profile's (src/sim/membw.ts)",
            ),
        }),
      )
      .min(1)
      .max(MAX_HOST_NODES)
      .describe('NUMA nodes, 1 to 64'),
    distances: z
      .array(z.array(z.number().int().min(10).max(255)))
      .optional()
      .describe('SLIT distances, an N x N matrix of 10 (local, on the diagonal) to 255; default 20 between nodes'),
    interconnect: z
      .array(z.array(z.union([z.literal(0), rate])))
      .optional()
      .describe(
        "row i, column j: bandwidth for CPUs of node i to memory of node j, 1e6 to 1e13 bytes per second (e.g. 30GB/s; 0 on the diagonal); default: the profile's membw_interconnect_share of node j's bandwidth",
      ),
    hugepage_sizes: z.array(z.enum(['2M', '1G'])).optional(),
    disk: z
      .strictObject({
        read_ahead_kb: z
          .number()
          .int()
          .min(0)
          .max(1 << 20)
          .describe(
            "the disk's /sys/block/<dev>/queue/read_ahead_kb, 0 to 1048576 (default 128): the mmap read-around window of files on it",
          ),
      })
      .optional()
      .describe('the disk holding the files op-scripts open (`open` with kind disk)'),
  })
  .superRefine((h, ctx) => {
    // zod runs refinements after issues that do not abort (a bad CPU list): check only what parsed.
    if (!h.nodes.every((n) => Array.isArray(n.cpus) && typeof n.id === 'number')) return;
    h.nodes.forEach((n, i) => {
      if (n.id !== i)
        ctx.addIssue({
          code: 'custom',
          path: ['nodes', i, 'id'],
          message: `expected node ids 0..${h.nodes.length - 1} in order, got ${n.id}`,
        });
    });
    const seen = new Set<number>();
    h.nodes.forEach((n, i) =>
      n.cpus.forEach((c) => {
        if (seen.has(c))
          ctx.addIssue({ code: 'custom', path: ['nodes', i, 'cpus'], message: `CPU ${c} is listed twice: expected each CPU in one node` });
        seen.add(c);
      }),
    );
    if (h.interconnect?.every((row) => Array.isArray(row))) {
      const n = h.nodes.length;
      if (h.interconnect.length !== n) ctx.addIssue({ code: 'custom', path: ['interconnect'], message: `expected a ${n}x${n} matrix` });
      h.interconnect.forEach((row, i) => {
        if (row.length !== n) ctx.addIssue({ code: 'custom', path: ['interconnect', i], message: `expected ${n} entries` });
        row.forEach((b, j) => {
          if (i === j && b !== 0) ctx.addIssue({ code: 'custom', path: ['interconnect', i, j], message: 'expected 0 on the diagonal' });
          if (i !== j && b === 0)
            ctx.addIssue({ code: 'custom', path: ['interconnect', i, j], message: 'expected a bandwidth (bytes/s) > 0' });
        });
      });
    }
    if (h.distances?.every((row) => Array.isArray(row))) {
      const n = h.nodes.length;
      if (h.distances.length !== n)
        ctx.addIssue({
          code: 'custom',
          path: ['distances'],
          message: `expected a ${n}x${n} matrix (one row per node), got ${h.distances.length} rows`,
        });
      h.distances.forEach((row, i) => {
        if (row.length !== n)
          ctx.addIssue({ code: 'custom', path: ['distances', i], message: `expected ${n} entries (one per node), got ${row.length}` });
        if (row[i] !== 10)
          ctx.addIssue({ code: 'custom', path: ['distances', i, i], message: 'expected 10 (LOCAL_DISTANCE) on the diagonal' });
        row.forEach((d, j) => {
          if (i !== j && d <= 10)
            ctx.addIssue({ code: 'custom', path: ['distances', i, j], message: `expected a remote distance from 11 to 255, got ${d}` });
        });
      });
    }
  });

export type HostFile = z.infer<typeof hostSchema>;

export interface Host {
  name: string;
  nodes: { id: number; memory: number; cpus: number[]; bandwidth?: number }[];
  distances: number[][];
  /** bytes/s for CPUs of node i to memory of node j; unset: the cost profile's default (src/sim/membw.ts). */
  interconnect?: number[][];
  hugepageSizes: number[];
  /** read_ahead_kb of the disk files are opened on (filemap.ts); Linux's default, 128, when absent. */
  diskReadAheadKb?: number;
  /** CPU id -> node id */
  cpuNode: Map<number, number>;
}

/** Linux's cpulist format ("0-3,8"); undefined if malformed or an id is above MAX_CPU_ID. */
export function parseCpuList(s: string): number[] | undefined {
  const out: number[] = [];
  for (const part of s.split(',')) {
    const m = /^\s*(\d{1,6})(?:-(\d{1,6}))?\s*$/.exec(part);
    if (!m) return undefined;
    const a = +m[1]!;
    const b = m[2] !== undefined ? +m[2] : a;
    if (b < a || b > MAX_CPU_ID) return undefined;
    for (let c = a; c <= b; c++) out.push(c);
  }
  return out;
}

export function hostFromFile(h: HostFile): Host {
  const n = h.nodes.length;
  const distances = h.distances ?? Array.from({ length: n }, (_, i) => Array.from({ length: n }, (_, j) => (i === j ? 10 : 20)));
  const cpuNode = new Map<number, number>();
  for (const node of h.nodes) for (const c of node.cpus) cpuNode.set(c, node.id);
  return {
    name: h.name,
    nodes: h.nodes.map((x) => ({ id: x.id, memory: x.memory, cpus: [...x.cpus], ...(x.bandwidth ? { bandwidth: x.bandwidth } : {}) })),
    distances,
    ...(h.interconnect ? { interconnect: h.interconnect.map((r) => [...r]) } : {}),
    hugepageSizes: (h.hugepage_sizes ?? ['2M', '1G']).map((s) => (s === '2M' ? 2 << 20 : 1 << 30)),
    ...(h.disk ? { diskReadAheadKb: h.disk.read_ahead_kb } : {}),
    cpuNode,
  };
}

export function loadHost(file: string): Host {
  return hostFromFile(loadYaml(file, hostSchema));
}

/**
 * The host this process runs on, read from /sys and /proc: nodes with their
 * CPUs and distances, memory rounded down to 4 MiB, the hugepage sizes the
 * kernel offers. On a one-node machine MemTotal of /proc/meminfo is used
 * (node meminfo can under-report hotplugged memory in VMs, as on the
 * machine memtwin is developed on).
 */
export function detectHost(): Host {
  const base = '/sys/devices/system/node';
  const ids = readdirSync(base)
    .map((d) => /^node(\d+)$/.exec(d)?.[1])
    .filter((x): x is string => x !== undefined)
    .map(Number)
    .sort((a, b) => a - b);
  const kb = (text: string): number => Number(/MemTotal:\s+(\d+) kB/.exec(text)?.[1] ?? 0);
  const round4M = (bytes: number): number => Math.floor(bytes / (4 << 20)) * (4 << 20);
  const nodes = ids.map((id, i) => ({
    id: i,
    memory: round4M(
      (ids.length === 1 ? kb(readFileSync('/proc/meminfo', 'utf8')) : kb(readFileSync(`${base}/node${id}/meminfo`, 'utf8'))) * 1024,
    ),
    cpus: parseCpuList(readFileSync(`${base}/node${id}/cpulist`, 'utf8').trim()) ?? [],
  }));
  const distances = ids.map((id) => readFileSync(`${base}/node${id}/distance`, 'utf8').trim().split(/\s+/).map(Number));
  const sizes = readdirSync('/sys/kernel/mm/hugepages')
    .map((d) => Number(/^hugepages-(\d+)kB$/.exec(d)?.[1] ?? 0) * 1024)
    .filter((b) => b === 2 << 20 || b === 1 << 30)
    .sort((a, b) => a - b);
  const cpuNode = new Map<number, number>();
  for (const n of nodes) for (const c of n.cpus) cpuNode.set(c, n.id);
  const ra = diskReadAheadKb('/var/tmp');
  return { name: 'auto', nodes, distances, hugepageSizes: sizes, ...(ra === undefined ? {} : { diskReadAheadKb: ra }), cpuNode };
}

/**
 * read_ahead_kb of the block device holding `dir` (where the executor makes
 * an op-script's disk files): /sys/dev/block/MAJ:MIN, or its parent disk for
 * a partition. undefined if it cannot be read (not a block device).
 */
export function diskReadAheadKb(dir: string): number | undefined {
  try {
    const dev = statSync(dir).dev;
    const major = Math.floor(dev / 256) & 0xfff;
    const minor = (dev & 0xff) | ((Math.floor(dev / 1048576) & 0xfff) << 8);
    let sys = realpathSync(`/sys/dev/block/${major}:${minor}`);
    if (existsSync(`${sys}/partition`)) sys = dirname(sys);
    const kb = Number(readFileSync(`${sys}/queue/read_ahead_kb`, 'utf8').trim());
    return Number.isInteger(kb) ? kb : undefined;
  } catch {
    return undefined;
  }
}

export const HOSTS_DIR = fromRoot('hosts') + '/';

/** The names of the shipped host files (hosts/NAME.yaml). */
export function shippedHosts(): string[] {
  return readdirSync(HOSTS_DIR)
    .filter((f) => f.endsWith('.yaml'))
    .map((f) => f.slice(0, -5))
    .sort();
}

/** A host by path, by the name of a shipped host file (`default`, `this-machine`), or `auto` (this machine, detected). */
export function resolveHost(nameOrPath: string): Host {
  if (nameOrPath === 'auto') return detectHost();
  if (/^[a-z0-9-]+$/.test(nameOrPath)) return loadHost(`${HOSTS_DIR}${nameOrPath}.yaml`);
  return loadHost(nameOrPath);
}

export { InputError };
