/**
 * Scenario files (YAML). The zod schema here is the single definition:
 * validation, defaults, and the JSON Schema editors use
 * (`memtwin schema > scenario.schema.json`) all come from it.
 */
import { z } from 'zod';
import { cpuList, hostSchema, MAX_CPU_ID, MAX_NODE_ID } from '../sim/host.ts';
import { formatSize, parseRate, parseSize } from '../util/input_error.ts';
import { quote, withForm } from '../util/yaml_input.ts';
import { MADV, MPOL_MODE_NAMES } from '../kernel/uapi.ts';

/**
 * What memtwin simulates in bounded time and memory. Every numeric field has
 * a range, given in its description and enforced; these are the shared ones
 * (RUN_HELP lists them for users).
 */
export const LIMITS = {
  /** Virtual time of a run, and any duration in a scenario: 1 hour. */
  maxDurationNs: 3600 * 1e9,
  /** Shortest sample interval: 1 µs. */
  minSampleIntervalNs: 1_000,
  /** Samples per run (duration / sample.interval). */
  maxSamples: 10_000,
  /** Shortest agent interval (1 ms) and most agent ticks per run. */
  minAgentIntervalNs: 1e6,
  maxAgentTicks: 100_000,
  /** Largest mapping, memory backend or guest size: 1 TiB. */
  maxSize: 2 ** 40,
  /** Runs of one sweep (the product of its dimensions). */
  maxRuns: 1000,
  /** vCPUs of one VM (KVM_MAX_VCPUS on x86 is larger; memtwin runs a host thread per vCPU). */
  maxVcpus: 1024,
  /** Guest NUMA nodes of one VM (QEMU's MAX_NODES). */
  maxGuestNodes: 128,
};

const UNITS: Record<string, number> = { ns: 1, us: 1e3, µs: 1e3, ms: 1e6, s: 1e9 };
const UNIT_DIGITS: Record<string, number> = { ns: 0, us: 3, µs: 3, ms: 6, s: 9 };

/** Nanoseconds in the largest unit that keeps them whole: 3600000000000 -> "3600s". */
export function formatDuration(ns: number): string {
  for (const u of ['s', 'ms', 'us'] as const) if (ns >= UNITS[u]! && ns % UNITS[u]! === 0) return `${ns / UNITS[u]!}${u}`;
  return `${ns}ns`;
}

/** A safe integer from `min` to `max` (JSON Schema minimum/maximum). */
const int = (min: number, max: number) => z.number().int().min(min).max(max);

/**
 * Sizes: a number of bytes or "4K", "2M", "1G" (parseSize), from `min` to
 * `max` bytes. The range is checked after parsing, with the form in the message.
 */
export function sizeIn(min: number, max: number) {
  const form = `a size from ${formatSize(min)} to ${formatSize(max)}: a number of bytes or a string such as 4K, 2M, 1G`;
  // The form is on the union (the pipe's input), which clones made by describe() share.
  return withForm(z.union([z.number().int().nonnegative(), z.string()]), form).transform((v, ctx) => {
    const b = parseSize(v);
    if (b === undefined || b < min || b > max) {
      ctx.addIssue({ code: 'custom', message: `expected ${form}, got ${quote(v)}` });
      return z.NEVER;
    }
    return b;
  });
}

/** Sizes that are whole 4K pages (guest RAM), from `min` to `max` bytes. */
export function pagesIn(min: number, max: number) {
  const form = `a size, a multiple of 4K from ${formatSize(min)} to ${formatSize(max)}: a number of bytes or a string such as 512M, 2G`;
  return withForm(z.union([z.number().int().nonnegative(), z.string()]), form).transform((v, ctx) => {
    const b = parseSize(v);
    if (b === undefined || b < min || b > max || b % 4096) {
      ctx.addIssue({ code: 'custom', message: `expected ${form}, got ${quote(v)}` });
      return z.NEVER;
    }
    return b;
  });
}

/**
 * Rates in bytes per second, from `min` to `max`: a number, or a string in
 * bytes or bits (parseRate: 1250MB/s, 1.25GB/s, 10Gbit/s); with `sizes`,
 * also a size string read as bytes per second (1250M: 1250 MiB/s), as the
 * migrate event's bandwidth fields have always taken.
 */
export function rateIn(min: number, max: number, sizes = false) {
  const bound = (n: number): string =>
    /^\d{1,4}[KMGT]$/.test(formatSize(n)) ? formatSize(n) : n < 1e6 ? String(n) : n.toExponential().replace('+', '');
  const form = `a rate from ${bound(min)} to ${bound(max)} bytes per second: a number or a string such as 10Gbit/s, 1250MB/s, 1.25GB/s${sizes ? ' (or a size per second, 1250M: MiB/s)' : ''}`;
  return withForm(z.union([z.number(), z.string()]), form).transform((v, ctx) => {
    const r = parseRate(v) ?? (sizes ? parseSize(v) : undefined);
    if (r === undefined || r < min || r > max) {
      ctx.addIssue({ code: 'custom', message: `expected ${form}, got ${quote(v)}` });
      return z.NEVER;
    }
    return r;
  });
}

/** Parse "1.5ms" into whole nanoseconds; undefined if not a duration or not whole ns. */
export function parseDuration(v: string): number | undefined {
  const m = /^\s*(\d{1,16})(?:\.(\d{1,16}))?\s*(ns|us|µs|ms|s)\s*$/.exec(v);
  if (!m) return undefined;
  const digits = UNIT_DIGITS[m[3]!]!;
  const frac = m[2] ?? '';
  // Digits below a nanosecond must be zeros: durations are whole nanoseconds.
  if (/[1-9]/.test(frac.slice(digits))) return undefined;
  const ns = Number(m[1]!) * UNITS[m[3]!]! + (digits ? Number(frac.slice(0, digits).padEnd(digits, '0')) : 0);
  return Number.isSafeInteger(ns) ? ns : undefined;
}

/**
 * Durations in virtual time: whole nanoseconds (a number) or "2s", "10ms",
 * "500us", "1.5ms", from `min` to `max` ns.
 */
export function durationIn(min: number, max: number) {
  const form = `a duration from ${formatDuration(min)} to ${formatDuration(max)}: whole nanoseconds or a string such as 500us, 10ms, 2s`;
  return withForm(z.union([z.number(), z.string()]), form).transform((v, ctx) => {
    const ns = typeof v === 'number' ? v : parseDuration(v);
    if (ns === undefined || !Number.isSafeInteger(ns) || ns < min || ns > max) {
      ctx.addIssue({ code: 'custom', message: `expected ${form}, got ${quote(v)}` });
      return z.NEVER;
    }
    return ns;
  });
}

/** Bytes, 0 to 1T. */
export const size = sizeIn(0, LIMITS.maxSize);
/** Any duration a scenario gives: 0 to 1h of virtual time. */
export const duration = durationIn(0, LIMITS.maxDurationNs);
/** A host CPU (checked against the host once it is loaded). */
const cpuId = int(0, MAX_CPU_ID);
/** A host NUMA node (checked against the host once it is loaded). */
const nodeId = int(0, MAX_NODE_ID);
/** Names that identify things (processes, mappings, threads, VMs, memdevs, agents): 1 to 64 characters. */
const ident = z.string().min(1).max(64);
const HOST_FORM =
  'auto, a shipped host name (hosts/NAME.yaml: default, this-machine, two-node-guest), a path to a host file, or an inline host {name, nodes, …}';
/** A sysfs/procfs knob value: its range is the knob's own, checked by the kernel when it is written (EINVAL otherwise). */
const knobValue = z
  .union([z.string(), z.number()])
  .describe(
    'a knob value, in the range the kernel accepts for that knob (checked when the scenario is loaded, as a write to the file would be)',
  );
/** A host by name or path (an inline host is a hostSchema). */
const hostName = z
  .string()
  .min(1)
  .describe('auto (this machine), a shipped host name (hosts/NAME.yaml: default, this-machine, two-node-guest), or a path to a host file');

const advice = z.enum(Object.keys(MADV) as [keyof typeof MADV, ...(keyof typeof MADV)[]]);

export const PATTERNS = ['sequential', 'uniform', 'zipf', 'first-touch', 'idle', 'copy'] as const;

const patternFields = {
  pattern: z
    .enum(PATTERNS)
    .describe(
      'sequential sweep, uniform random, zipf (hot set), first-touch initialisation of a slice, idle (no accesses, for a phase), or copy (STREAM copy: a load from `mapping`, then a store to `to` at the same offset, `stride` bytes on)',
    ),
  mapping: z.string().describe('name of a mapping of the same process'),
  to: z.string().optional().describe('copy: the mapping written (the region read is copied to the same offset in it)'),
  offset: size.optional().describe('start of the accessed region inside the mapping, 0 to the mapping size (exclusive); default 0'),
  length: sizeIn(1, LIMITS.maxSize)
    .optional()
    .describe('length of the accessed region, 1 byte to 1T (a page at least is accessed); default: to the end of the mapping'),
  read_ratio: z.number().min(0).max(1).default(0.5).describe('fraction of accesses that are loads, 0 to 1 (first-touch always writes)'),
  rate: z
    .number()
    .min(0.001)
    .max(1e12)
    .optional()
    .describe('accesses per second of virtual time, 0.001 to 1e12; default: as fast as the accesses cost'),
  think: duration
    .optional()
    .describe('CPU time between two accesses (compute that is not memory time), added to every access, 0 to 3600s; default 0'),
  stride: sizeIn(64, LIMITS.maxSize)
    .optional()
    .describe('sequential: bytes between accesses, 64 (a cache line: accesses within one line are one access) to 1T; default 64'),
  write_bytes: z
    .number()
    .int()
    .min(1)
    .max(4096)
    .optional()
    .describe(
      'bytes each store changes from its address, 1 to 4096 (what a live migration with xbzrle encodes: a page whose stores changed few bytes encodes small); default 64, the whole cache line',
    ),
  zipf_s: z.number().gt(0).max(10).default(0.99).describe('zipf: exponent of the page popularity law, more than 0 and at most 10'),
  slice: z
    .boolean()
    .default(false)
    .describe('split the region among the replicas of this thread (count): replica i works on slice i (first-touch always slices)'),
};

export const phaseSchema = z.strictObject({
  ...patternFields,
  duration: duration.optional().describe('how long the phase lasts, 0 to 3600s (default: the rest of the run)'),
});
export type PhaseSpec = z.infer<typeof phaseSchema>;

export const workloadSchema = withForm(
  z.union([
    z.strictObject(patternFields),
    z.strictObject({ phases: z.array(phaseSchema).min(1).describe('patterns run one after the other') }),
  ]),
  'a pattern workload {pattern, mapping, …} or {phases: [{pattern, mapping, duration, …}, …]}',
);

const mpolMode = z.enum(MPOL_MODE_NAMES);
export const policySchema = z.strictObject({
  mode: mpolMode,
  nodes: z
    .array(nodeId)
    .default([])
    .describe('NUMA nodes of the policy, each 0 to 1023 and a node of the host (unless MPOL_F_STATIC_NODES or MPOL_F_RELATIVE_NODES)'),
  flags: z.array(z.enum(['MPOL_F_STATIC_NODES', 'MPOL_F_RELATIVE_NODES', 'MPOL_F_NUMA_BALANCING'])).default([]),
});

export const mappingSchema = z.strictObject({
  name: ident.describe("the mapping's name in its process, 1 to 64 characters"),
  size: sizeIn(1, LIMITS.maxSize).describe('length of the mapping, 1 byte to 1T (mmap rounds it up to pages)'),
  prot: z.array(z.enum(['PROT_NONE', 'PROT_READ', 'PROT_WRITE', 'PROT_EXEC'])).default(['PROT_READ', 'PROT_WRITE']),
  flags: z
    .array(
      z.enum([
        'MAP_PRIVATE',
        'MAP_SHARED',
        'MAP_ANONYMOUS',
        'MAP_NORESERVE',
        'MAP_POPULATE',
        'MAP_HUGETLB',
        'MAP_HUGE_2MB',
        'MAP_HUGE_1GB',
        'MAP_STACK',
      ]),
    )
    .default(['MAP_PRIVATE', 'MAP_ANONYMOUS']),
  madvise: z.array(advice).default([]).describe('advice applied to the whole mapping after mmap, in order'),
  populate: z.boolean().default(false).describe('fault everything in with writes before the run (MADV_POPULATE_WRITE)'),
  populate_fill: int(1, 255)
    .optional()
    .describe(
      "populate and fragment: write this byte (1 to 255) to every page instead of MADV_POPULATE_WRITE's zeros, so that reclaim has data to write to swap",
    ),
  fragment: int(2, 2 ** 20)
    .optional()
    .describe(
      'populate with 4K pages, then MADV_DONTNEED all but every N-th page (N from 2 to 2^20): pins scattered pages, fragmenting memory',
    ),
  policy: policySchema.optional().describe('memory policy of the mapping, applied with mbind before it is populated'),
  memsched_group: int(0, 2 ** 31 - 1)
    .optional()
    .describe('memsched proposal: ms_mbind the mapping to this group, 0 to 2^31-1 (needs the memsched feature)'),
});

export const threadSchema = z.strictObject({
  name: ident.describe("the thread's name (replicas: name-0, name-1, …), 1 to 64 characters"),
  cpu: cpuId
    .optional()
    .describe('the host CPU it is pinned to (sched_setaffinity to that one CPU), 0 to 8191 and a CPU of the host; or give cpus'),
  cpus: cpuList
    .optional()
    .describe(
      'the host CPUs it may run on (its affinity mask, e.g. "0-7"): the scheduler places it and the load balancer and NUMA balancing may move it; each 0 to 8191 and a CPU of the host; or give cpu',
    ),
  count: int(1, MAX_CPU_ID + 1)
    .default(1)
    .describe(
      'replicate, 1 to 8192: threads name-0..name-(count-1), pinned to CPUs cpu..cpu+count-1 (all CPUs of the host), or each allowed on cpus',
    ),
  mempolicy: policySchema.optional().describe('task memory policy (set_mempolicy) of the thread'),
  memsched_group: int(0, 2 ** 31 - 1)
    .optional()
    .describe('memsched proposal: ms_tbind the thread(s) to this group, 0 to 2^31-1'),
  workload: workloadSchema,
});

export const processSchema = z.strictObject({
  name: ident.describe('the process name, 1 to 64 characters'),
  mappings: z.array(mappingSchema).min(1),
  threads: z.array(threadSchema).default([]),
  cgroup: z
    .string()
    .optional()
    .describe('the memory cgroup (a name in `cgroups`) the process runs in, from before its mappings are made; default: the root'),
});

/** A memory cgroup limit: bytes (rounded down to pages), or "max" (none). */
const cgroupLimit = z.union([z.literal('max'), size]);
export const cgroupSchema = z.strictObject({
  name: z
    .string()
    .regex(/^[A-Za-z0-9_-]{1,64}$/)
    .describe('the group (a directory under the root of the cgroup v2 hierarchy): 1 to 64 letters, digits, "_" and "-"'),
  memory_max: cgroupLimit
    .default('max')
    .describe('memory.max: the hard limit, 0 to 1T bytes or max; above it the group reclaims (into swap) and then the OOM killer kills'),
  memory_high: cgroupLimit
    .default('max')
    .describe(
      "memory.high: the throttling limit, 0 to 1T bytes or max; above it the group's allocating tasks reclaim and are delayed, never killed",
    ),
  memory_low: size.default(0).describe('memory.low: best-effort protection from reclaim, 0 to 1T bytes'),
  memory_min: size.default(0).describe('memory.min: hard protection from reclaim, 0 to 1T bytes'),
  swap_max: cgroupLimit.default('max').describe("memory.swap.max: the limit on the group's swap use, 0 to 1T bytes or max"),
});

export const eventSchema = z.strictObject({
  at: duration.describe('virtual time after the workloads start, 0 to 3600s'),
  process: z.string().describe('the process the call acts on'),
  op: z
    .enum(['migrate_pages', 'mbind', 'madvise', 'process_madvise', 'set_mempolicy', 'sched_setaffinity', 'ms_move'])
    .describe(
      'a syscall made at that time, as a tool such as migratepages, numactl or taskset would (sched_setaffinity: move one thread to one CPU, as the load balancer might; process_madvise: the process on its own memory, one iovec; ms_move: memsched proposal)',
    ),
  thread: z.string().optional().describe('sched_setaffinity: the thread, by its name in the results (e.g. worker-2)'),
  cpu: cpuId.optional().describe('sched_setaffinity: the CPU it moves to, 0 to 8191 and a CPU of the host'),
  group: int(0, 2 ** 31 - 1)
    .optional()
    .describe('ms_move: the memsched group, 0 to 2^31-1'),
  node: nodeId.optional().describe('ms_move: the node it moves to, 0 to 1023 and a node of the host'),
  mapping: z.string().optional().describe('mbind/madvise: the mapping (whole) it applies to'),
  old_nodes: z.array(nodeId).optional().describe('migrate_pages: nodes of the host, each 0 to 1023'),
  new_nodes: z.array(nodeId).optional().describe('migrate_pages: nodes of the host, each 0 to 1023'),
  policy: policySchema.optional().describe('mbind/set_mempolicy'),
  flags: z
    .array(z.enum(['MPOL_MF_STRICT', 'MPOL_MF_MOVE', 'MPOL_MF_MOVE_ALL']))
    .default([])
    .describe('mbind'),
  advice: advice.optional(),
  madvise_flags: z
    .array(z.enum(['MADV_F_COLLAPSE_LIMITS', 'MADV_F_COLLAPSE_DEFRAG']))
    .optional()
    .describe(
      "process_madvise: its flags, the madv-collapse-flags proposal's (kernel /sys/kernel/memtwin/features/madv-collapse-flags: 1; Linux 6.18 defines none)",
    ),
});
export type EventSpec = z.infer<typeof eventSchema>;

/** A path into the scenario: field names, and list indices from 0 to 9999. */
const sweepPath = z
  .array(z.union([z.string().min(1), int(0, 9999)]))
  .min(1)
  .max(16)
  .describe(
    'where in the scenario the value goes, 1 to 16 elements (field names, list indices 0 to 9999), e.g. [kernel, /sys/kernel/mm/transparent_hugepage/enabled]',
  );

/** One value put at one place in the scenario (a sweep configuration's `set`, or `smoke`). */
const setSchema = z.strictObject({
  path: sweepPath,
  value: z.unknown().describe("the value put there; null removes the field (e.g. a thread's cpus, where a configuration pins it with cpu)"),
});

export const sweepSchema = withForm(
  z.union([
    z.strictObject({
      path: sweepPath,
      values: z.array(z.unknown()).min(1).describe('the values, one run each (with the other dimensions: at most 1000 runs in all)'),
      label: z.string().optional().describe('short name for reports (default: the last path element)'),
    }),
    z.strictObject({
      label: z.string().describe('name of this dimension in reports, e.g. placement'),
      configs: z
        .array(
          z.strictObject({
            name: z.string(),
            set: z.array(setSchema).default([]),
          }),
        )
        .min(1)
        .describe('named configurations, each setting several paths at once'),
    }),
  ]),
  'a sweep dimension {path, values, label} or {label, configs: [{name, set: [{path, value}, …]}, …]}',
);

export const agentSchema = z.strictObject({
  name: ident.describe('name of the agent process'),
  kind: z.literal('uhugepaged').describe('uhugepaged: collapses hot 4K-mapped regions with process_madvise(MADV_COLLAPSE)'),
  interval: durationIn(LIMITS.minAgentIntervalNs, LIMITS.maxDurationNs)
    .default(1_000_000_000)
    .describe('time between two ticks of the agent, 1ms to 3600s (at most 100000 ticks in a run)'),
  cpu_budget: z
    .number()
    .gt(0)
    .max(1)
    .default(0.01)
    .describe('fraction of one CPU the agent may spend, more than 0 and at most 1 (0.01 = 1%)'),
  min_heat: z.number().min(0).max(1e12).default(1).describe('decayed accesses per tick below which a region is left alone, 0 to 1e12'),
  retry_after: int(0, 1_000_000).default(10).describe('ticks before a region whose collapse failed is retried, 0 to 1000000'),
  targets: z
    .array(z.string())
    .default([])
    .describe(
      "process names it acts on (default: all scenario processes); or `VM-dst` alone: that VM's destination VMM (the VM needs a migrate event), the agent then starting when the migration starts that VMM, on the destination's host",
    ),
  start: duration.default(0).describe('time of the first tick, 0 to 3600s'),
  hotness: z
    .enum(['exact', 'damon'])
    .default('exact')
    .describe(
      "where the agent learns which 2M regions are hot: exact (the workload's own per-2M access counts, free) or damon (DAMON's regions and nr_accesses, kdamond's CPU time paid; min_heat then counts samples that found a region accessed)",
    ),
  damon: z
    .strictObject({
      sample_us: int(1, 10_000_000).default(5000).describe('sampling interval, µs (monitoring_attrs/intervals/sample_us), 1 to 10000000'),
      aggr_us: int(1, 60_000_000).default(100_000).describe('aggregation interval, µs (intervals/aggr_us), 1 to 60000000'),
      update_us: int(1, 3_600_000_000).default(1_000_000).describe('ops update interval, µs (intervals/update_us), 1 to 3600000000'),
      min_nr_regions: int(3, 100_000).default(10).describe('nr_regions/min, 3 to 100000'),
      max_nr_regions: int(3, 100_000).default(1000).describe('nr_regions/max, 3 to 100000'),
    })
    .default({ sample_us: 5000, aggr_us: 100_000, update_us: 1_000_000, min_nr_regions: 10, max_nr_regions: 1000 })
    .describe("DAMON's monitoring attributes with hotness: damon (DAMON's defaults)"),
});
export type AgentSpec = z.infer<typeof agentSchema>;

// ---------------------------------------------------------------- VMs

const nodeList = z.array(nodeId);

/** `-object memory-backend-*` with QEMU's property names. */
export const memdevSchema = z.strictObject({
  id: ident.describe('the object id (memdev=ID in -numa, the RAM block name in info ram)'),
  type: z.enum(['memory-backend-ram', 'memory-backend-memfd', 'memory-backend-file']).default('memory-backend-ram').describe('qom-type'),
  size: sizeIn(4096, LIMITS.maxSize).describe(
    'the backend size, 4K to 1T (QEMU refuses a memfd or file backend that is not whole pages; memory-backend-ram is rounded up and KVM maps its whole pages)',
  ),
  share: z.boolean().optional().describe('map MAP_SHARED (default: on for memfd, off otherwise)'),
  prealloc: z.boolean().default(false).describe('touch every page at creation (qemu_prealloc_mem)'),
  'prealloc-threads': int(1, 1024).optional().describe('threads that preallocate, 1 to 1024'),
  'host-nodes': nodeList.optional().describe('host NUMA nodes of the policy (applied with mbind), each 0 to 1023 and a node of the host'),
  policy: z.enum(['default', 'preferred', 'bind', 'interleave']).optional().describe('HostMemPolicy, applied with mbind'),
  merge: z.boolean().optional(),
  dump: z.boolean().optional(),
  reserve: z.boolean().optional(),
  'mem-path': z.string().optional().describe('memory-backend-file: a path on /dev/hugepages (2M), /dev/hugepages1G or /dev/shm'),
  hugetlb: z.boolean().optional().describe('memory-backend-memfd: a hugetlb memfd'),
  hugetlbsize: sizeIn(4096, 2 ** 30)
    .optional()
    .describe('memory-backend-memfd: its huge page size, 4K to 1G'),
});
export type MemdevSpec = z.infer<typeof memdevSchema>;

export const HINT_ENCODINGS = ['pfn-list', 'bitmap', 'pfn-order', 'ranges'] as const;
export const INFLATE_ENCODINGS = ['pfns', 'chunks', 'bitmap', 'pfn-order', 'per-order'] as const;

/** `-device virtio-balloon-pci,...` and the guest driver's module parameters. */
export const balloonSchema = z.strictObject({
  'deflate-on-oom': z.boolean().default(false),
  'free-page-hint': z.boolean().default(false),
  'free-page-reporting': z.boolean().default(false),
  'virtio-balloon-chunks': z
    .boolean()
    .default(false)
    .describe('memtwin proposal feature: inflate/deflate with (addr, len) chunks instead of 4-byte PFN arrays'),
  'inflate-encoding': z
    .enum(INFLATE_ENCODINGS)
    .default('pfns')
    .describe(
      'memtwin proposal feature: how inflate/deflate messages name pages: pfns (upstream, off), chunks (= virtio-balloon-chunks), bitmap (Liang Li 2016), pfn-order, per-order',
    ),
  'inflate-alloc': z
    .enum(['4k', 'high-order'])
    .default('high-order')
    .describe(
      'memtwin: with a proposal inflate-encoding, allocate 4 KiB pages one at a time (the 2017 patches) or the largest blocks first',
    ),
  'hint-encoding': z.enum(HINT_ENCODINGS).default('ranges').describe('memtwin: how free page hints are encoded'),
  'hint-pfn-bytes': z
    .union([z.literal(4), z.literal(8)])
    .default(4)
    .describe('pfn-list: bytes per PFN, 4 or 8'),
  'hint-batch': int(1, 65536).default(1).describe('entries per hint message, 1 to 65536 (bitmap: bits per window, a multiple of 64)'),
  'hint-min-order': int(0, 10).default(0).describe('lowest order hinted, 0 to 10 (MAX_PAGE_ORDER)'),
  'hint-bitmap-order': z
    .union([z.literal(0), z.literal(9)])
    .default(0)
    .describe(
      'bitmap hints: the order of the pages one bit covers, 0 or 9 (0: 4 KiB; 9: 2 MiB, smaller messages, sub-2M free memory not hinted)',
    ),
  'hint-discard': z.boolean().default(false).describe('memtwin: the host also discards hinted memory'),
  'discard-batched': z.boolean().default(false).describe('memtwin: one process_madvise per message instead of one madvise per range'),
  page_reporting_order: int(0, 10)
    .optional()
    .describe('guest module parameter page_reporting.page_reporting_order, 0 to 10 (default pageblock_order, 9)'),
  'guest-stats-polling-interval': int(0, 2 ** 32 - 1)
    .default(0)
    .describe("seconds, 0 to 4294967295 (QEMU's limit, UINT32_MAX); 0: off"),
});
export type BalloonSpec = z.infer<typeof balloonSchema>;

/**
 * A guest workload: a host workload pattern run on a vCPU's host thread over
 * the HVA range backing one guest node's RAM (memtwin's simplification: a
 * guest process's memory is first-touched on its guest node, so it is taken
 * to be a GPA range of that node).
 */
export const guestWorkloadSchema = z.strictObject({
  name: ident.describe("the workload's name (replicas: name-0, …), 1 to 64 characters"),
  vcpu: int(0, LIMITS.maxVcpus - 1).describe('the vCPU (index) whose host thread runs it, 0 to 1023 and a vCPU of the VM'),
  count: int(1, LIMITS.maxVcpus)
    .default(1)
    .describe('replicate on vCPUs vcpu..vcpu+count-1, named name-0..; 1 to 1024, all vCPUs of the VM'),
  guest_node: int(0, LIMITS.maxGuestNodes - 1)
    .default(0)
    .describe('the guest NUMA node whose RAM it accesses, 0 to 127 and a node of the VM'),
  guest_page_size: z
    .enum(['4K', '2M'])
    .default('2M')
    .describe("the guest's page size for this task (2M: guest THP, the default; 4K: none): the TLB maps the smaller of it and the host's"),
  workload: workloadSchema.describe('pattern over the node\'s RAM; `mapping` must be "ram"'),
});

export const vmEventSchema = z.strictObject({
  at: duration.describe('virtual time after the workloads start, 0 to 3600s'),
  op: z
    .enum([
      'balloon',
      'free_page_hint',
      'guest_alloc',
      'guest_free',
      'qmp',
      'hmp',
      'migrate_pages',
      'move_pages',
      'mbind',
      'migrate',
      'migration_fault',
    ])
    .describe(
      'balloon: QMP balloon to `target`; free_page_hint: `action` start/stop/done (what migration does); guest_alloc/guest_free: a guest task faults in / frees `size`; qmp/hmp: a monitor command, its reply recorded; migrate_pages/move_pages/mbind: a host tool acting on the VMM process (move_pages/mbind on the HVA ranges `info ram` gives for `guest_node`; mbind is the process_mbind proposal and needs /sys/kernel/memtwin/features/process_mbind); migrate: precopy live migration to a destination VM of the same shape on this host, over a link of `bandwidth` and `latency`, with `max-bandwidth`, `downtime-limit` and `capabilities` set first (a balloon with free-page-hint hints at the start), and with postcopy-ram, migrate-start-postcopy after `start-postcopy`; migration_fault: `fault` injected into the running migration (recover a paused postcopy with qmp migrate resume=true)',
    ),
  target: size.optional().describe('balloon: the guest RAM wanted (QMP balloon value), 0 to 1T'),
  action: z.enum(['start', 'stop', 'done']).optional().describe('free_page_hint'),
  size: size.optional().describe('guest_alloc/guest_free: bytes, 0 to 1T'),
  page_cache: z
    .boolean()
    .optional()
    .describe(
      "guest_alloc: the pages are page cache (a guest task reading files: clean, dropped by the guest's reclaim when an allocation finds nothing free; guest_free does not free them) instead of anonymous memory (default false)",
    ),
  vcpu: int(0, LIMITS.maxVcpus - 1)
    .default(0)
    .describe('guest_alloc: the vCPU the task runs on (first touch on its guest node), 0 to 1023 and a vCPU of the VM'),
  command: z
    .union([z.string(), z.record(z.string(), z.unknown())])
    .optional()
    .describe('qmp: {execute, arguments} (or JSON text); hmp: a command line such as "info ram"'),
  on_qmp_event: z
    .string()
    .regex(/^[A-Z][A-Z0-9_]*$/)
    .optional()
    .describe(
      "run the event when the VM's monitor next sends this QMP event (e.g. ACPI_DEVICE_OST once the guest onlined a hotplugged DIMM, SHUTDOWN) at or after `at`, instead of at `at`: a client reacting to the event (e.g. a host tool rebinding the new memory)",
    ),
  expect_error: z
    .string()
    .optional()
    .describe(
      'qmp/hmp/balloon/migrate: QEMU is expected to refuse the command, with this error class (e.g. GenericError) or a part of its text; the run fails if it does not. Without it, a refused command stops the run with its error',
    ),
  guest_node: int(0, LIMITS.maxGuestNodes - 1)
    .optional()
    .describe('move_pages/mbind: the guest node whose RAM ranges (from info ram) are acted on, 0 to 127 and a node of the VM'),
  nodes: nodeList
    .optional()
    .describe('move_pages: the destination host node (first entry); mbind: the policy nodes; each 0 to 1023 and a node of the host'),
  old_nodes: nodeList.optional().describe('migrate_pages: host nodes, each 0 to 1023 and a node of the host'),
  new_nodes: nodeList.optional().describe('migrate_pages: host nodes, each 0 to 1023 and a node of the host'),
  bandwidth: rateIn(1, LIMITS.maxSize, true)
    .optional()
    .describe(
      'migrate to a destination that is not one of `hosts`: a link of its own, bytes per second, 1 to 1T (e.g. 10Gbit/s, 1250MB/s; 1250M is 1250 MiB/s)',
    ),
  latency: duration.default(0).describe('migrate: the link of its own, one-way latency, 0 to 3600s'),
  'max-bandwidth': size.optional().describe('migrate: the QEMU parameter, bytes per second, 0 to 1T (QEMU default 128M)'),
  'downtime-limit': int(0, 2_000_000)
    .optional()
    .describe("migrate: the QEMU parameter, ms, 0 to 2000000 (QEMU's MAX_MIGRATE_DOWNTIME_SECONDS; default 300)"),
  capabilities: z
    .array(z.string())
    .default([])
    .describe(
      "migrate: QEMU migration capabilities to turn on (auto-converge, postcopy-ram, postcopy-preempt, postcopy-blocktime, pause-before-switchover: continue with a qmp event, migrate-continue; xbzrle; dirty-limit, which needs the VM's accel dirty-ring-size; multifd)",
    ),
  'xbzrle-cache-size': sizeIn(4096, 2 ** 40)
    .optional()
    .describe('migrate: the QEMU parameter, bytes, a power of two from 4K to 1T (QEMU default 64M)'),
  'vcpu-dirty-limit': int(1, 2 ** 32)
    .optional()
    .describe("migrate: the QEMU parameter, each vCPU's dirty rate once dirty-limit throttles, MB/s, 1 to 2^32 (QEMU default 1)"),
  'x-vcpu-dirty-limit-period': int(1, 1000)
    .optional()
    .describe("migrate: the QEMU parameter, the dirty-limit throttle's period, ms, 1 to 1000 (QEMU default 1000)"),
  'start-postcopy': duration
    .optional()
    .describe('migrate: issue migrate-start-postcopy this long after migrate, 0 to 3600s (needs postcopy-ram)'),
  'multifd-channels': int(1, 255)
    .optional()
    .describe(
      'migrate: the QEMU parameter, 1 to 255 (default 2): the channels, each a TCP connection with a sender and a receiver thread (needs multifd)',
    ),
  'multifd-compression': z
    .enum(['none', 'zlib', 'zstd'])
    .optional()
    .describe('migrate: the QEMU parameter, none (default), zlib or zstd at level 1 (needs multifd)'),
  'page-content': z
    .enum(['same-filled', 'text', 'random'])
    .optional()
    .describe(
      "migrate: what the guest's non-zero pages hold, for multifd compression's cost and size (memtwin tracks one byte of a page): same-filled, text or random (default: random, incompressible)",
    ),
  'max-postcopy-bandwidth': size
    .optional()
    .describe('migrate: the QEMU parameter, bytes per second during postcopy, 0 to 1T (0: the link)'),
  sndbuf: sizeIn(4096, 2 ** 30)
    .optional()
    .describe("migrate: the main channel's socket send buffer, 4K to 1G (default 4M, Linux's tcp_wmem maximum)"),
  rcvbuf: sizeIn(4096, 2 ** 30)
    .optional()
    .describe("migrate: the destination's socket receive buffer, 4K to 1G (default 6M, Linux's tcp_rmem maximum)"),
  'hugetlb-request-size': z
    .enum(['4K', '2M'])
    .optional()
    .describe('migrate: with uffd-hugetlb-subpage-copy or uffd-hugetlb-vma-split on, the unit hugetlb RAM is requested and placed in'),
  fault: z
    .enum(['link-stall', 'link-drop', 'source-loss'])
    .optional()
    .describe('migration_fault: the link carries nothing for `duration`; the link drops; the source host is lost'),
  duration: duration.optional().describe('migration_fault link-stall: how long, 0 to 3600s'),
  destination: z
    .strictObject({
      host: withForm(z.union([hostName, hostSchema]), HOST_FORM)
        .optional()
        .describe(
          "migrate: the destination host: the name of an entry of `hosts` (shared with other migrations, reached over the network), or a host of its own (a host file, a shipped name, or inline); default: the source's host",
        ),
      kernel: z
        .record(z.string(), knobValue)
        .default({})
        .describe("knobs of the destination host's kernel, written after the scenario's own `kernel` knobs"),
      memdevs: z
        .array(memdevSchema)
        .optional()
        .describe("the destination VMM's memory backends (same ids and sizes; e.g. other host-nodes)"),
      vcpus: z
        .array(cpuId)
        .optional()
        .describe("host CPU of each destination vCPU, one per source vCPU, each 0 to 8191 and a CPU of that host (default: the source's)"),
    })
    .optional()
    .describe('migrate: a destination on another host of its own (separate kernel, same virtual time); default: a VMM on the same host'),
  policy: z.enum(MPOL_MODE_NAMES).optional().describe('mbind: the mode'),
  mode_flags: z
    .array(z.enum(['MPOL_F_STATIC_NODES', 'MPOL_F_RELATIVE_NODES', 'MPOL_F_NUMA_BALANCING']))
    .default([])
    .describe("mbind: flags or'ed into the mode"),
  flags: z
    .array(z.enum(['MPOL_MF_STRICT', 'MPOL_MF_MOVE', 'MPOL_MF_MOVE_ALL']))
    .default([])
    .describe('mbind/move_pages'),
});
export type VmEventSpec = z.infer<typeof vmEventSchema>;

export const vmSchema = z.strictObject({
  name: ident.describe('-name; also the VMM process name (-name ...,process=)'),
  cgroup: z
    .string()
    .optional()
    .describe(
      "the memory cgroup (a name in `cgroups`) the VMM process runs in: its guest RAM is charged there (memory prealloc'd at startup stays with the root)",
    ),
  machine: z.enum(['q35', 'pc']).default('q35'),
  'max-ram-below-4g': sizeIn(0, 2 ** 32)
    .optional()
    .describe('the machine property, 0 to 4G'),
  memdevs: z
    .array(memdevSchema)
    .default([])
    .describe('-object memory-backend-*; without vNUMA the first is the machine RAM (-machine memory-backend)'),
  memory: sizeIn(4096, LIMITS.maxSize)
    .optional()
    .describe('-m: without memdevs a default memory-backend-ram "pc.ram", 4K to 1T (QEMU rounds it up to 8K)'),
  maxmem: sizeIn(4096, LIMITS.maxSize)
    .optional()
    .describe('-m ...,maxmem=: the most RAM with memory devices plugged (pc-dimm via qmp object-add + device_add), 4K to 1T'),
  slots: int(0, 1024).optional().describe('-m ...,slots=: memory device (pc-dimm) slots, 0 to 1024 (QEMU takes at most 256); needs maxmem'),
  vcpus: z
    .array(cpuId)
    .min(1)
    .max(LIMITS.maxVcpus)
    .default([0])
    .describe('host CPU of each vCPU thread (vcpupin), each 0 to 8191 and a CPU of the host; their count (1 to 1024) is -smp'),
  emulator_cpu: cpuId.optional().describe("host CPU of the VMM's main thread (emulatorpin), 0 to 8191 and a CPU of the host"),
  accel: z
    .strictObject({
      'dirty-ring-size': int(0, 65536)
        .default(0)
        .describe(
          "-accel kvm,dirty-ring-size=N: each vCPU's KVM dirty ring, N entries, a power of two from 256 to 65536; 0 (default): the dirty bitmap",
        ),
    })
    .default({ 'dirty-ring-size': 0 })
    .describe('-accel kvm: its properties'),
  numa: z
    .array(
      z.strictObject({
        memdev: z.string(),
        cpus: z
          .array(int(0, LIMITS.maxVcpus - 1))
          .default([])
          .describe('vCPUs of the node, each 0 to 1023 and a vCPU of the VM'),
      }),
    )
    .max(LIMITS.maxGuestNodes)
    .default([])
    .describe('-numa node,nodeid=i,memdev=...,cpus=... (guest node i is the i-th entry; at most 128)'),
  balloon: balloonSchema.optional().describe('-device virtio-balloon, probed by the guest at the start'),
  guest: z
    .strictObject({
      fragment: z
        .strictObject({
          size: size.describe('guest memory a task faults in (4K pages) before the run, 0 to 1T'),
          keep_every: int(2, 2 ** 20)
            .optional()
            .describe('then frees all but every N-th page, N from 2 to 2^20 (at least half of it free again)'),
          free_every: int(2, 2 ** 20)
            .optional()
            .describe(
              'or frees only every N-th page, N from 2 to 2^20 (free memory sparse: one page in N); one of keep_every and free_every',
            ),
          vcpu: int(0, LIMITS.maxVcpus - 1)
            .default(0)
            .describe('the vCPU the task runs on, 0 to 1023 and a vCPU of the VM'),
        })
        .optional()
        .describe('fragment the guest before the run, as a long-lived guest is'),
      init_on_alloc: z
        .boolean()
        .default(false)
        .describe(
          'the guest kernel zeroes every page it allocates (init_on_alloc=1, CONFIG_INIT_ON_ALLOC_DEFAULT_ON in Debian and Fedora kernels): free page hinting then writes every page it hints',
        ),
    })
    .default({ init_on_alloc: false }),
  workloads: z.array(guestWorkloadSchema).default([]),
  events: z.array(vmEventSchema).default([]),
});
export type VmSpec = z.infer<typeof vmSchema>;

// ---------------------------------------------------------------- network

/** A NIC: its bandwidth each way (full duplex) and the one-way latency it adds. */
export const nicSchema = z.strictObject({
  bandwidth: rateIn(1, 1e13).describe(
    'bytes per second each way, 1 to 1e13 (e.g. 10Gbit/s, 1250MB/s, 1.25GB/s): the goodput TCP gets (a 10 Gbit/s NIC carries about 9.4 Gbit/s of payload with 1500-byte frames)',
  ),
  latency: duration.default(0).describe('one-way latency it adds, 0 to 3600s (a path between two hosts crosses two NICs)'),
});

/** The migrate event's QEMU settings, as an evacuation gives them to each of its migrations. */
export const migrateSettingsSchema = vmEventSchema.pick({
  'max-bandwidth': true,
  'downtime-limit': true,
  capabilities: true,
  'xbzrle-cache-size': true,
  'vcpu-dirty-limit': true,
  'x-vcpu-dirty-limit-period': true,
  'start-postcopy': true,
  'max-postcopy-bandwidth': true,
  'multifd-channels': true,
  'multifd-compression': true,
  'page-content': true,
  sndbuf: true,
  rcvbuf: true,
});

export const networkHostSchema = z.strictObject({
  name: ident.describe("the host's name (in `traffic`, `evacuate.to` and a migration's destination host), 1 to 64 characters"),
  host: withForm(z.union([hostName, hostSchema]), HOST_FORM)
    .optional()
    .describe("its machine: a host file, a shipped host name, or inline; default: the scenario's host"),
  kernel: z.record(z.string(), knobValue).default({}).describe("knobs of its kernel, written after the scenario's own `kernel` knobs"),
  nic: nicSchema.optional().describe("its NIC; default: the scenario's `nic`"),
});

export const trafficSchema = z.strictObject({
  name: ident.optional().describe('name of the flow in the results (default: FROM-TO-i)'),
  from: z.string().describe("the sending host: the scenario host's name or a name from `hosts`"),
  to: z.string().describe('the receiving host, another one'),
  rate: withForm(z.union([z.literal('greedy'), rateIn(1, 1e13)]), 'greedy, or a rate such as 2Gbit/s or 250MB/s')
    .default('greedy')
    .describe('greedy (a bulk transfer: as fast as its share allows), or an application rate it never exceeds, 1 to 1e13 bytes per second'),
  start: duration.default(0).describe('when it starts, after the workloads start, 0 to 3600s'),
  stop: duration.optional().describe('when it stops, 0 to 3600s (default: the end of the run)'),
});

export const evacuateSchema = z.strictObject({
  at: duration.describe('when the evacuation starts, after the workloads start, 0 to 3600s'),
  to: z.string().describe('the destination: a name from `hosts`'),
  vms: z.array(z.string()).optional().describe('the VMs to move, in the order they leave (default: every VM, in the order of `vms`)'),
  max_concurrent: int(1, LIMITS.maxVcpus)
    .optional()
    .describe(
      "migrations at once, 1 to 1024: 1 is one after another (OpenStack Nova's max_concurrent_live_migrations default), 2 two at a time (KubeVirt's parallelOutboundMigrationsPerNode default); default: all at once",
    ),
  migrate: migrateSettingsSchema.default({ capabilities: [] }).describe("each migration's QEMU settings (as a migrate event's)"),
});

/** A published figure the report sets beside a run's result. */
export const publishedSchema = z.strictObject({
  label: z.string().describe('what was measured, e.g. "inflate 7 GiB with PFN arrays"'),
  value: z.number().describe('the published value, in `unit` (any finite number)'),
  unit: z.enum(['ns', 'us', 'ms', 's', 'bytes', 'count']),
  metric: z.string().describe('the final metric of this scenario to compare it with'),
  run: z.string().optional().describe('the run (id, or a swept value) it corresponds to'),
  source: z.string().describe('where the figure comes from (URL)'),
});

export const scenarioSchema = z.strictObject({
  name: z.string(),
  description: z.string().optional(),
  seed: int(0, 2 ** 32 - 1)
    .default(1)
    .describe('the seed every random stream of the run derives from, 0 to 4294967295'),
  host: withForm(z.union([hostName, hostSchema]), HOST_FORM)
    .default('default')
    .describe('a host file, a shipped host name, auto, or an inline host'),
  profile: z.string().min(1).optional().describe('cost profile file (default: profiles/default.json)'),
  kernel: z.record(z.string(), knobValue).default({}).describe('sysfs/procfs knob path -> value, written before the run'),
  swap: z
    .strictObject({
      size: sizeIn(2 * 4096, LIMITS.maxSize).describe('bytes, 8K (two pages: the header and a slot) to 1T'),
      priority: int(0, 32767).optional().describe('swapon -p, 0 to 32767 (default: the next negative priority, -2)'),
    })
    .optional()
    .describe(
      "a swap file on the host, swapon'd before the run, on a rotational disk as the profile's swap costs were measured (swapout_4k, swapin_4k, swapin_swapcache_4k); default: no swap",
    ),
  duration: durationIn(1000, LIMITS.maxDurationNs).describe('virtual time the workloads run, 1us to 3600s'),
  sample: z
    .strictObject({
      interval: durationIn(LIMITS.minSampleIntervalNs, LIMITS.maxDurationNs)
        .default(10_000_000)
        .describe('virtual time between two samples, 1us to 3600s, and at most 10000 samples in a run (duration / interval)'),
      snapshots: z
        .boolean()
        .optional()
        .describe(
          'record memory maps for `memtwin view` in snapshots.json (per node and per address space, at the samples, at most 120 a run; they cost CPU time); default false (`memtwin run --snapshots` sets it)',
        ),
    })
    .default({ interval: 10_000_000 }),
  processes: z.array(processSchema).default([]).describe('host processes (at least one process or VM)'),
  vms: z.array(vmSchema).default([]).describe('virtual machines: a VMM process each, with its guest'),
  cgroups: z
    .array(cgroupSchema)
    .default([])
    .describe(
      'memory cgroups (cgroup v2 memory controller, under the root) that processes and VMs run in: per-group series cgroup.NAME.memory_current, .events_high, .events_max, .oom_kill, and final metrics',
    ),
  nic: nicSchema
    .optional()
    .describe("the scenario host's NIC: needed for migrations to `hosts`, `traffic` and `evacuate`; the default NIC of `hosts`"),
  fabric: nicSchema.optional().describe('the switch between the hosts, when it is a bottleneck: every flow between two hosts crosses it'),
  hosts: z
    .array(networkHostSchema)
    .optional()
    .describe("hosts besides the scenario's own, reached over the network: destinations several migrations can share"),
  traffic: z.array(trafficSchema).optional().describe('background flows between hosts, sharing the NICs with migrations'),
  evacuate: evacuateSchema
    .optional()
    .describe('migrate VMs of the scenario host to one of `hosts`: all at once, one after another, or a few at a time'),
  notes: z.string().optional().describe('text the report prints (what the results mean)'),
  published: z.array(publishedSchema).default([]).describe('published figures the report sets beside the results'),
  summary: z
    .array(z.string())
    .optional()
    .describe('final metrics the command line prints per run (default: throughput, access and fault times, memory, remote share)'),
  events: z
    .array(eventSchema)
    .default([])
    .describe('syscalls made at given times during the run (migrate_pages, mbind, madvise, set_mempolicy, sched_setaffinity)'),
  agents: z.array(agentSchema).default([]).describe('userspace memory-management agents running beside the workloads'),
  sweep: z.array(sweepSchema).optional(),
  smoke: z
    .array(setSchema)
    .optional()
    .describe(
      "a reduced form of the scenario for `memtwin run --smoke`: values set over every run, after the sweep's (shorter duration, smaller memory), so every run takes the same code paths in seconds; a path into `sweep` reduces that sweep value or configuration, before the sweep is expanded",
    ),
});

export type Scenario = z.infer<typeof scenarioSchema>;
export type ProcessSpec = z.infer<typeof processSchema>;
export type MappingSpec = z.infer<typeof mappingSchema>;
export type ThreadSpec = z.infer<typeof threadSchema>;
export type WorkloadSpec = z.infer<typeof workloadSchema>;

/** JSON Schema for editors. */
export function scenarioJsonSchema(): unknown {
  return z.toJSONSchema(scenarioSchema, { io: 'input', unrepresentable: 'any' });
}
