/**
 * The cost profile: every duration the simulator charges comes from here,
 * and every number here was measured on a real host by `memtwin calibrate`
 * (native/calibrate.c). Nothing in the model hard-codes a cost.
 */
import { readFileSync } from 'node:fs';
import { fromRoot } from '../util/paths.ts';
import { z } from 'zod';

const measured = z.object({
  min: z.number().nonnegative(),
  median: z.number().nonnegative(),
  max: z.number().nonnegative(),
  unit: z.string(),
  method: z.string(),
  derived: z.string().optional(),
});

export const costProfileSchema = z.object({
  machine: z.object({
    kernel: z.string(),
    cpu_model: z.string(),
    cores: z.number(),
    mem_bytes: z.number(),
  }),
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
] as const;
export type CostName = (typeof REQUIRED_COSTS)[number];

export class CostProfile {
  private readonly medians: Map<string, number>;
  constructor(readonly data: CostProfileData) {
    this.medians = new Map(Object.entries(data.costs).map(([k, v]) => [k, v.median]));
    const missing = REQUIRED_COSTS.filter((c) => !this.medians.has(c));
    if (missing.length) throw new Error(`cost profile lacks ${missing.join(', ')}`);
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
    if (v === undefined) throw new Error(`cost profile has no entry '${name}'${why ? `: ${why}` : ''}`);
    return v;
  }

  static load(path: string): CostProfile {
    let raw: unknown;
    try {
      raw = JSON.parse(readFileSync(path, 'utf8'));
    } catch (e) {
      throw new Error(`${path}: cannot read cost profile: ${(e as Error).message}`);
    }
    const r = costProfileSchema.safeParse(raw);
    if (!r.success) {
      const i = r.error.issues[0]!;
      throw new Error(`${path}: field ${i.path.join('.') || '(root)'}: ${i.message}`);
    }
    return new CostProfile(r.data);
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
