/**
 * Scenario files (YAML). The zod schema here is the single definition:
 * validation, defaults, and the JSON Schema editors use
 * (`memtwin schema > scenario.schema.json`) all come from it.
 */
import { z } from 'zod';
import { hostSchema } from '../sim/host.ts';
import { parseSize } from '../util/input_error.ts';
import { MADV, MPOL_MODE_NAMES } from '../kernel/uapi.ts';

export const size = z
  .union([z.number().int().nonnegative(), z.string()])
  .describe('bytes, or a size such as "4K", "2M", "1G"')
  .transform((v, ctx) => {
    const b = parseSize(v);
    if (b === undefined) {
      ctx.addIssue({ code: 'custom', message: `expected a size such as 2M or 1G, got ${JSON.stringify(v)}` });
      return z.NEVER;
    }
    return b;
  });

const UNITS: Record<string, number> = { ns: 1, us: 1e3, µs: 1e3, ms: 1e6, s: 1e9 };
/** Durations: "2s", "10ms", "500us", "100ns", or a number of nanoseconds. */
export const duration = z
  .union([z.number().nonnegative(), z.string()])
  .describe('virtual time: "2s", "10ms", "500us", or nanoseconds')
  .transform((v, ctx) => {
    if (typeof v === 'number') return Math.round(v);
    const m = /^\s*(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s)\s*$/.exec(v);
    if (!m) {
      ctx.addIssue({ code: 'custom', message: `expected a duration such as 2s, 10ms or 500us, got ${JSON.stringify(v)}` });
      return z.NEVER;
    }
    return Math.round(Number(m[1]) * UNITS[m[2]!]!);
  });

const advice = z.enum(Object.keys(MADV) as [keyof typeof MADV, ...(keyof typeof MADV)[]]);

export const PATTERNS = ['sequential', 'uniform', 'zipf', 'first-touch', 'idle'] as const;

const patternFields = {
  pattern: z
    .enum(PATTERNS)
    .describe(
      'sequential sweep, uniform random, zipf (hot set), first-touch initialisation of a slice, or idle (no accesses, for a phase)',
    ),
  mapping: z.string().describe('name of a mapping of the same process'),
  offset: size.optional().describe('start of the accessed region inside the mapping (default 0)'),
  length: size.optional().describe('length of the accessed region (default: to the end of the mapping)'),
  read_ratio: z.number().min(0).max(1).default(0.5).describe('fraction of accesses that are loads (first-touch always writes)'),
  rate: z.number().positive().optional().describe('accesses per second of virtual time; default: as fast as the accesses cost'),
  think: duration.optional().describe('CPU time between two accesses (compute that is not memory time), added to every access; default 0'),
  stride: size.optional().describe('sequential: bytes between accesses (default 64)'),
  zipf_s: z.number().positive().default(0.99).describe('zipf: exponent of the page popularity law'),
  slice: z
    .boolean()
    .default(false)
    .describe('split the region among the replicas of this thread (count): replica i works on slice i (first-touch always slices)'),
};

export const phaseSchema = z.strictObject({
  ...patternFields,
  duration: duration.optional().describe('how long the phase lasts (default: the rest of the run)'),
});
export type PhaseSpec = z.infer<typeof phaseSchema>;

export const workloadSchema = z.union([
  z.strictObject(patternFields),
  z.strictObject({ phases: z.array(phaseSchema).min(1).describe('patterns run one after the other') }),
]);

const mpolMode = z.enum(MPOL_MODE_NAMES);
export const policySchema = z.strictObject({
  mode: mpolMode,
  nodes: z.array(z.number().int().nonnegative()).default([]),
  flags: z.array(z.enum(['MPOL_F_STATIC_NODES', 'MPOL_F_RELATIVE_NODES', 'MPOL_F_NUMA_BALANCING'])).default([]),
});

export const mappingSchema = z.strictObject({
  name: z.string(),
  size,
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
  fragment: z
    .number()
    .int()
    .min(2)
    .optional()
    .describe('populate with 4K pages, then MADV_DONTNEED all but every N-th page: pins scattered pages, fragmenting memory'),
  policy: policySchema.optional().describe('memory policy of the mapping, applied with mbind before it is populated'),
  memsched_group: z
    .number()
    .int()
    .nonnegative()
    .optional()
    .describe('memsched proposal: ms_mbind the mapping to this group (needs the memsched feature)'),
});

export const threadSchema = z.strictObject({
  name: z.string(),
  cpu: z.number().int().nonnegative(),
  count: z.number().int().min(1).default(1).describe('replicate: threads name-0..name-(count-1) on CPUs cpu..cpu+count-1'),
  mempolicy: policySchema.optional().describe('task memory policy (set_mempolicy) of the thread'),
  memsched_group: z.number().int().nonnegative().optional().describe('memsched proposal: ms_tbind the thread(s) to this group'),
  workload: workloadSchema,
});

export const processSchema = z.strictObject({
  name: z.string(),
  mappings: z.array(mappingSchema).min(1),
  threads: z.array(threadSchema).default([]),
});

export const eventSchema = z.strictObject({
  at: duration.describe('virtual time after the workloads start'),
  process: z.string().describe('the process the call acts on'),
  op: z
    .enum(['migrate_pages', 'mbind', 'madvise', 'set_mempolicy', 'sched_setaffinity', 'ms_move'])
    .describe(
      'a syscall made at that time, as a tool such as migratepages, numactl or taskset would (sched_setaffinity: move one thread to one CPU, as the load balancer might; ms_move: memsched proposal)',
    ),
  thread: z.string().optional().describe('sched_setaffinity: the thread, by its name in the results (e.g. worker-2)'),
  cpu: z.number().int().nonnegative().optional().describe('sched_setaffinity: the CPU it moves to'),
  group: z.number().int().nonnegative().optional().describe('ms_move: the memsched group'),
  node: z.number().int().nonnegative().optional().describe('ms_move: the node it moves to'),
  mapping: z.string().optional().describe('mbind/madvise: the mapping (whole) it applies to'),
  old_nodes: z.array(z.number().int().nonnegative()).optional(),
  new_nodes: z.array(z.number().int().nonnegative()).optional(),
  policy: policySchema.optional().describe('mbind/set_mempolicy'),
  flags: z
    .array(z.enum(['MPOL_MF_STRICT', 'MPOL_MF_MOVE', 'MPOL_MF_MOVE_ALL']))
    .default([])
    .describe('mbind'),
  advice: advice.optional(),
});
export type EventSpec = z.infer<typeof eventSchema>;

export const sweepSchema = z.union([
  z.strictObject({
    path: z
      .array(z.union([z.string(), z.number().int()]))
      .min(1)
      .describe('where in the scenario the value goes, e.g. [kernel, /sys/kernel/mm/transparent_hugepage/enabled]'),
    values: z.array(z.unknown()).min(1),
    label: z.string().optional().describe('short name for reports (default: the last path element)'),
  }),
  z.strictObject({
    label: z.string().describe('name of this dimension in reports, e.g. placement'),
    configs: z
      .array(
        z.strictObject({
          name: z.string(),
          set: z.array(z.strictObject({ path: z.array(z.union([z.string(), z.number().int()])).min(1), value: z.unknown() })).default([]),
        }),
      )
      .min(1)
      .describe('named configurations, each setting several paths at once'),
  }),
]);

export const agentSchema = z.strictObject({
  name: z.string().describe('name of the agent process'),
  kind: z.literal('uhugepaged').describe('uhugepaged: collapses hot 4K-mapped regions with process_madvise(MADV_COLLAPSE)'),
  interval: duration.default(1_000_000_000).describe('time between two ticks of the agent'),
  cpu_budget: z.number().positive().max(1).default(0.01).describe('fraction of one CPU the agent may spend (0.01 = 1%)'),
  min_heat: z.number().nonnegative().default(1).describe('decayed accesses per tick below which a region is left alone'),
  retry_after: z.number().int().nonnegative().default(10).describe('ticks before a region whose collapse failed is retried'),
  targets: z.array(z.string()).default([]).describe('process names it acts on (default: all scenario processes)'),
  start: duration.default(0).describe('time of the first tick'),
});
export type AgentSpec = z.infer<typeof agentSchema>;

// ---------------------------------------------------------------- VMs

const nodeList = z.array(z.number().int().nonnegative());

/** `-object memory-backend-*` with QEMU's property names. */
export const memdevSchema = z.strictObject({
  id: z.string().describe('the object id (memdev=ID in -numa, the RAM block name in info ram)'),
  type: z.enum(['memory-backend-ram', 'memory-backend-memfd', 'memory-backend-file']).default('memory-backend-ram').describe('qom-type'),
  size,
  share: z.boolean().optional().describe('map MAP_SHARED (default: on for memfd, off otherwise)'),
  prealloc: z.boolean().default(false).describe('touch every page at creation (qemu_prealloc_mem)'),
  'prealloc-threads': z.number().int().min(1).optional(),
  'host-nodes': nodeList.optional().describe('host NUMA nodes of the policy (applied with mbind)'),
  policy: z.enum(['default', 'preferred', 'bind', 'interleave']).optional().describe('HostMemPolicy, applied with mbind'),
  merge: z.boolean().optional(),
  dump: z.boolean().optional(),
  reserve: z.boolean().optional(),
  'mem-path': z.string().optional().describe('memory-backend-file: a path on /dev/hugepages (2M), /dev/hugepages1G or /dev/shm'),
  hugetlb: z.boolean().optional().describe('memory-backend-memfd: a hugetlb memfd'),
  hugetlbsize: size.optional().describe('memory-backend-memfd: its huge page size'),
});
export type MemdevSpec = z.infer<typeof memdevSchema>;

export const HINT_ENCODINGS = ['pfn-list', 'bitmap', 'pfn-order', 'ranges'] as const;

/** `-device virtio-balloon-pci,...` and the guest driver's module parameters. */
export const balloonSchema = z.strictObject({
  'deflate-on-oom': z.boolean().default(false),
  'free-page-hint': z.boolean().default(false),
  'free-page-reporting': z.boolean().default(false),
  'virtio-balloon-chunks': z
    .boolean()
    .default(false)
    .describe('memtwin proposal feature: inflate/deflate with (addr, len) chunks instead of 4-byte PFN arrays'),
  'hint-encoding': z.enum(HINT_ENCODINGS).default('ranges').describe('memtwin: how free page hints are encoded'),
  'hint-pfn-bytes': z
    .union([z.literal(4), z.literal(8)])
    .default(4)
    .describe('pfn-list: bytes per PFN'),
  'hint-batch': z.number().int().min(1).default(1).describe('entries per hint message (bitmap: bits per window, a multiple of 64)'),
  'hint-min-order': z.number().int().min(0).max(10).default(0).describe('lowest order hinted'),
  'hint-discard': z.boolean().default(false).describe('memtwin: the host also discards hinted memory'),
  'discard-batched': z.boolean().default(false).describe('memtwin: one process_madvise per message instead of one madvise per range'),
  page_reporting_order: z
    .number()
    .int()
    .min(0)
    .max(10)
    .optional()
    .describe('guest module parameter page_reporting.page_reporting_order (default pageblock_order, 9)'),
  'guest-stats-polling-interval': z.number().int().nonnegative().default(0).describe('seconds; 0: off'),
});
export type BalloonSpec = z.infer<typeof balloonSchema>;

/**
 * A guest workload: a host workload pattern run on a vCPU's host thread over
 * the HVA range backing one guest node's RAM (memtwin's simplification: a
 * guest process's memory is first-touched on its guest node, so it is taken
 * to be a GPA range of that node).
 */
export const guestWorkloadSchema = z.strictObject({
  name: z.string(),
  vcpu: z.number().int().nonnegative().describe('the vCPU (index) whose host thread runs it'),
  count: z.number().int().min(1).default(1).describe('replicate on vCPUs vcpu..vcpu+count-1, named name-0..'),
  guest_node: z.number().int().nonnegative().default(0).describe('the guest NUMA node whose RAM it accesses'),
  guest_page_size: z
    .enum(['4K', '2M'])
    .default('2M')
    .describe("the guest's page size for this task (2M: guest THP, the default; 4K: none): the TLB maps the smaller of it and the host's"),
  workload: workloadSchema.describe('pattern over the node\'s RAM; `mapping` must be "ram"'),
});

export const vmEventSchema = z.strictObject({
  at: duration.describe('virtual time after the workloads start'),
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
      'balloon: QMP balloon to `target`; free_page_hint: `action` start/stop/done (what migration does); guest_alloc/guest_free: a guest task faults in / frees `size`; qmp/hmp: a monitor command, its reply recorded; migrate_pages/move_pages/mbind: a host tool acting on the VMM process (move_pages/mbind on the HVA ranges `info ram` gives for `guest_node`); migrate: precopy live migration to a destination VM of the same shape on this host, over a link of `bandwidth` and `latency`, with `max-bandwidth`, `downtime-limit` and `capabilities` set first (a balloon with free-page-hint hints at the start), and with postcopy-ram, migrate-start-postcopy after `start-postcopy`; migration_fault: `fault` injected into the running migration (recover a paused postcopy with qmp migrate resume=true)',
    ),
  target: size.optional().describe('balloon: the guest RAM wanted (QMP balloon value)'),
  action: z.enum(['start', 'stop', 'done']).optional().describe('free_page_hint'),
  size: size.optional().describe('guest_alloc/guest_free: bytes'),
  vcpu: z.number().int().nonnegative().default(0).describe('guest_alloc: the vCPU the task runs on (first touch on its guest node)'),
  command: z
    .union([z.string(), z.record(z.string(), z.unknown())])
    .optional()
    .describe('qmp: {execute, arguments} (or JSON text); hmp: a command line such as "info ram"'),
  expect_error: z
    .string()
    .optional()
    .describe(
      'qmp/hmp/balloon/migrate: QEMU is expected to refuse the command, with this error class (e.g. GenericError) or a part of its text; the run fails if it does not. Without it, a refused command stops the run with its error',
    ),
  guest_node: z
    .number()
    .int()
    .nonnegative()
    .optional()
    .describe('move_pages/mbind: the guest node whose RAM ranges (from info ram) are acted on'),
  nodes: nodeList.optional().describe('move_pages: the destination host node (first entry); mbind: the policy nodes'),
  old_nodes: nodeList.optional().describe('migrate_pages'),
  new_nodes: nodeList.optional().describe('migrate_pages'),
  bandwidth: size.optional().describe('migrate: the link, bytes per second (e.g. 1250M for 10 Gbit/s)'),
  latency: duration.default(0).describe('migrate: the link one-way latency'),
  'max-bandwidth': size.optional().describe('migrate: the QEMU parameter, bytes per second (QEMU default 128M)'),
  'downtime-limit': z.number().int().nonnegative().optional().describe('migrate: the QEMU parameter, ms (QEMU default 300)'),
  capabilities: z
    .array(z.string())
    .default([])
    .describe('migrate: QEMU migration capabilities to turn on (auto-converge, postcopy-ram, postcopy-preempt, postcopy-blocktime)'),
  'start-postcopy': duration.optional().describe('migrate: issue migrate-start-postcopy this long after migrate (needs postcopy-ram)'),
  'max-postcopy-bandwidth': size.optional().describe('migrate: the QEMU parameter, bytes per second during postcopy (0: the link)'),
  sndbuf: size.optional().describe("migrate: the main channel's socket send buffer (default 4M, Linux's tcp_wmem maximum)"),
  rcvbuf: size.optional().describe("migrate: the destination's socket receive buffer (default 6M, Linux's tcp_rmem maximum)"),
  'hugetlb-request-size': z
    .enum(['4K', '2M'])
    .optional()
    .describe('migrate: with uffd-hugetlb-subpage-copy or uffd-hugetlb-vma-split on, the unit hugetlb RAM is requested and placed in'),
  fault: z
    .enum(['link-stall', 'link-drop', 'source-loss'])
    .optional()
    .describe('migration_fault: the link carries nothing for `duration`; the link drops; the source host is lost'),
  duration: duration.optional().describe('migration_fault link-stall: how long'),
  destination: z
    .strictObject({
      host: z
        .union([z.string(), hostSchema])
        .optional()
        .describe("migrate: the destination host (a host file, a shipped name, or inline); default: the source's host"),
      kernel: z
        .record(z.string(), z.union([z.string(), z.number()]))
        .default({})
        .describe("knobs of the destination host's kernel, written after the scenario's own `kernel` knobs"),
      memdevs: z
        .array(memdevSchema)
        .optional()
        .describe("the destination VMM's memory backends (same ids and sizes; e.g. other host-nodes)"),
      vcpus: z.array(z.number().int().nonnegative()).optional().describe("host CPU of each destination vCPU (default: the source's)"),
    })
    .optional()
    .describe('migrate: a destination on another host of its own (separate kernel, same virtual time); default: a VMM on the same host'),
  policy: z.enum(['MPOL_DEFAULT', 'MPOL_PREFERRED', 'MPOL_BIND', 'MPOL_INTERLEAVE']).optional().describe('mbind'),
  flags: z
    .array(z.enum(['MPOL_MF_STRICT', 'MPOL_MF_MOVE', 'MPOL_MF_MOVE_ALL']))
    .default([])
    .describe('mbind/move_pages'),
});
export type VmEventSpec = z.infer<typeof vmEventSchema>;

export const vmSchema = z.strictObject({
  name: z.string().describe('-name; also the VMM process name (-name ...,process=)'),
  machine: z.enum(['q35', 'pc']).default('q35'),
  'max-ram-below-4g': size.optional(),
  memdevs: z
    .array(memdevSchema)
    .default([])
    .describe('-object memory-backend-*; without vNUMA the first is the machine RAM (-machine memory-backend)'),
  memory: size.optional().describe('-m, when there are no memdevs: a default memory-backend-ram "pc.ram"'),
  vcpus: z
    .array(z.number().int().nonnegative())
    .min(1)
    .default([0])
    .describe('host CPU of each vCPU thread (vcpupin); their count is -smp'),
  emulator_cpu: z.number().int().nonnegative().optional().describe("host CPU of the VMM's main thread (emulatorpin)"),
  numa: z
    .array(z.strictObject({ memdev: z.string(), cpus: z.array(z.number().int().nonnegative()).default([]) }))
    .default([])
    .describe('-numa node,nodeid=i,memdev=...,cpus=... (guest node i is the i-th entry)'),
  balloon: balloonSchema.optional().describe('-device virtio-balloon, probed by the guest at the start'),
  guest: z
    .strictObject({
      fragment: z
        .strictObject({
          size: size.describe('guest memory a task faults in (4K pages) before the run'),
          keep_every: z.number().int().min(2).describe('then frees all but every N-th page'),
          vcpu: z.number().int().nonnegative().default(0),
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

/** A published figure the report sets beside a run's result. */
export const publishedSchema = z.strictObject({
  label: z.string().describe('what was measured, e.g. "inflate 7 GiB with PFN arrays"'),
  value: z.number().describe('the published value, in `unit`'),
  unit: z.enum(['ns', 'us', 'ms', 's', 'bytes', 'count']),
  metric: z.string().describe('the final metric of this scenario to compare it with'),
  run: z.string().optional().describe('the run (id, or a swept value) it corresponds to'),
  source: z.string().describe('where the figure comes from (URL)'),
});

export const scenarioSchema = z.strictObject({
  name: z.string(),
  description: z.string().optional(),
  seed: z.number().int().nonnegative().default(1),
  host: z.union([z.string(), hostSchema]).default('default').describe('a host file, a shipped host name, or an inline host'),
  profile: z.string().optional().describe('cost profile file (default: profiles/default.json)'),
  kernel: z
    .record(z.string(), z.union([z.string(), z.number()]))
    .default({})
    .describe('sysfs/procfs knob path -> value, written before the run'),
  duration,
  sample: z.strictObject({ interval: duration.default(10_000_000) }).default({ interval: 10_000_000 }),
  processes: z.array(processSchema).default([]).describe('host processes (at least one process or VM)'),
  vms: z.array(vmSchema).default([]).describe('virtual machines: a VMM process each, with its guest'),
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
