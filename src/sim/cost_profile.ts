/**
 * The cost profile: every duration the simulator charges comes from here,
 * and every number here was measured on a real host by `memtwin calibrate`
 * (native/calibrate.c). Nothing in the model hard-codes a cost.
 *
 * A profile must hold every cost the simulator reads that the calibrator
 * measures (PROFILE_COSTS); one that lacks some (what `calibrate --only`
 * writes without `--merge`) is refused when loaded, naming them. memtwin does
 * not fill the gaps from profiles/default.json: a profile describes one
 * machine, and the model combines its entries (the 4K TLB term is
 * access_random_4k_ws* minus access_random_2m_ws* at the same working set;
 * page_migrate_4k is net of the compact_scan_per_page fit), so entries of
 * two machines would make costs that belong to neither. Costs the calibrator
 * cannot measure here (the published VM costs) are looked up when a VM needs
 * them (nsOf), with the same kind of error. The one exception is an entry
 * measured on a newer build of the same machine and merged on purpose
 * (`calibrate --merge --other-machine`): it records where it was measured
 * (`measured_on`), so the mix is visible rather than hidden.
 */
import { readFileSync } from 'node:fs';
import { fromRoot } from '../util/paths.ts';
import { InputError } from '../util/input_error.ts';
import { z } from 'zod';

const machine = z.object({
  kernel: z.string(),
  cpu_model: z.string(),
  cores: z.number(),
  mem_bytes: z.number(),
});

const measured = z.object({
  min: z.number().nonnegative(),
  median: z.number().nonnegative(),
  max: z.number().nonnegative(),
  unit: z.string(),
  method: z.string(),
  derived: z.string().optional(),
  /** Where this entry was measured, when that is not the profile's `machine` (`calibrate --merge --other-machine`). */
  measured_on: machine.extend({ date: z.string() }).optional(),
});

export const costProfileSchema = z.object({
  machine,
  date: z.string(),
  source: z.string(),
  costs: z.record(z.string(), measured),
});
export type CostProfileData = z.infer<typeof costProfileSchema>;

/** Costs the model reads; a profile must provide every one of them. */
export const REQUIRED_COSTS = [
  'syscall_null',
  'fault_anon_4k_write',
  'fault_anon_4k_read_zeropage',
  'fault_thp_2m_write',
  'fault_hugetlb_2m_write',
  'fault_hugetlb_1g_write',
  'zero_page_4k',
  'memcpy_4k',
  'madv_dontneed_4k',
  'madv_dontneed_2m_thp',
  'munmap_populated_4k',
  'mmap_munmap_pair',
  'mprotect_split',
  'thp_split_pmd',
  'page_migrate_4k',
  'compact_scan_per_page',
  'pagemap_read_per_page',
  'madv_collapse_2m',
  'khugepaged_scan_per_pte',
  'uffdio_copy_4k',
  'uffdio_copy_2m_hugetlb',
  'fork_mm',
  'fork_copy_pte',
  'fault_cow_4k',
  'fault_wp_reuse_4k',
  'fault_file_4k_read',
  'filemap_read_4k',
] as const;
export type CostName = (typeof REQUIRED_COSTS)[number];

/**
 * Every cost a profile must hold: the kernel's (REQUIRED_COSTS), the access
 * model's latency curves and TLB reach (src/workload/access_model.ts) and
 * move_pages' (src/kernel/migrate.ts). All are measured by a full
 * `memtwin calibrate`.
 */
export const PROFILE_COSTS: readonly string[] = [
  ...REQUIRED_COSTS,
  ...['16M', '64M', '256M', '1G', '4G'].flatMap((w) => [`access_random_4k_ws${w}`, `access_random_2m_ws${w}`]),
  'tlb_entries_4k',
  'tlb_entries_2m',
  'dram_access_seq_per_4k',
  'move_pages_query',
  'move_pages_same_node',
];

export class CostProfile {
  private readonly medians: Map<string, number>;
  /**
   * @param source where the profile comes from (its file), named in errors
   */
  constructor(
    readonly data: CostProfileData,
    readonly source = 'cost profile',
  ) {
    this.medians = new Map(Object.entries(data.costs).map(([k, v]) => [k, v.median]));
    const missing = PROFILE_COSTS.filter((c) => !this.medians.has(c));
    if (missing.length)
      throw new InputError(
        source,
        undefined,
        undefined,
        'costs',
        `the profile lacks ${missing.length} cost${missing.length > 1 ? 's' : ''} the simulator needs: ${missing.join(', ')}. ` +
          "A profile is one machine's measurements and memtwin does not fill gaps from another: " +
          'measure them all (memtwin calibrate), or merge a partial measurement into a complete profile of the same machine ' +
          '(memtwin calibrate --only NAMES --merge FULL.json)',
      );
  }

  /** Median ns of a measured cost. */
  ns(name: CostName): number {
    return this.medians.get(name)!;
  }

  /**
   * Any cost, including ones added by later layers; throws a clear error if
   * absent, saying `why` the caller needs it when given.
   */
  nsOf(name: string, why?: string): number {
    const v = this.medians.get(name);
    if (v === undefined)
      throw new InputError(this.source, undefined, undefined, 'costs', `cost profile has no entry '${name}'${why ? `: ${why}` : ''}`);
    return v;
  }

  /** A profile file; anything wrong with it is an InputError naming the file (and field). */
  static load(path: string): CostProfile {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (e) {
      throw new InputError(
        path,
        undefined,
        undefined,
        undefined,
        `cannot read cost profile (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
      );
    }
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (e) {
      throw new InputError(path, undefined, undefined, undefined, `not a cost profile: ${(e as Error).message}`);
    }
    const r = costProfileSchema.safeParse(raw);
    if (!r.success) {
      const i = r.error.issues[0]!;
      throw new InputError(path, undefined, undefined, i.path.join('.') || undefined, i.message);
    }
    return new CostProfile(r.data, path);
  }

  static default(): CostProfile {
    return CostProfile.load(fromRoot('profiles', 'default.json'));
  }
}

interface RawCost {
  min: number;
  median: number;
  max: number;
  unit: string;
  method: string;
  net_of_scan_min?: number;
  net_of_scan_median?: number;
  net_of_scan_max?: number;
  unavailable?: string;
  [k: string]: unknown;
}

/**
 * Turn the calibrator's output (native/calibrate.c) into a profile. The
 * migration cost is taken net of compaction scanning, because the model
 * charges scanning separately (compact_scan_per_page).
 */
export function profileFromCalibration(
  raw: { machine: CostProfileData['machine'] & Record<string, unknown>; costs: Record<string, RawCost> },
  date: string,
  source: string,
): CostProfileData {
  const costs: CostProfileData['costs'] = {};
  for (const [name, c] of Object.entries(raw.costs)) {
    if (c.unavailable !== undefined || typeof c.median !== 'number') continue;
    if (name === 'page_migrate_4k' && c.net_of_scan_median !== undefined) {
      costs[name] = {
        min: c.net_of_scan_min!,
        median: c.net_of_scan_median,
        max: c.net_of_scan_max!,
        unit: c.unit,
        method: c.method,
        derived: 'net of scanning: (elapsed - fit_ns_per_scanned_page * scanned) / migrated, per repeat',
      };
      continue;
    }
    costs[name] = { min: c.min, median: c.median, max: c.max, unit: c.unit, method: c.method };
  }
  const m = raw.machine;
  return {
    machine: { kernel: m.kernel, cpu_model: m.cpu_model, cores: m.cores, mem_bytes: m.mem_bytes },
    date,
    source,
    costs,
  };
}
