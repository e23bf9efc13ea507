/**
 * Field-by-field comparison of two runs of one script, on the fields the
 * spec marks as compared. Everything not compared is listed here with the
 * reason, so a difference is always either a finding or documented.
 */
import { OUTPUT_FIELDS, type ResultLine } from './runner.ts';

/**
 * vmstat counters that only the script moves on an otherwise idle host.
 * pgfault, pgalloc_*, numa_* and compaction counters move with every
 * process on the machine and are not compared; neither is
 * thp_zero_page_alloc (the huge zero page is allocated once per boot).
 */
export const COMPARED_VMSTAT = new Set([
  'thp_fault_alloc',
  'thp_fault_fallback',
  'thp_split_pmd',
  'thp_collapse_alloc',
  'thp_collapse_alloc_failed',
]);

/** Output fields never compared, and why. */
export const NOT_COMPARED: Record<string, string> = {
  'read.text': 'raw file text: layout and unmodelled fields differ by design',
  'smaps.Shared_Hugetlb/Private_Hugetlb (1G pages)':
    'Linux 6.18 here sometimes counts a 1G page mapped once as Shared_Hugetlb (folio_maybe_mapped_shared depends on the ' +
    'history of the pool page); for 1G mappings only their sum is compared',
};

export interface Disagreement {
  i: number;
  op: string;
  field: string;
  a: unknown;
  b: unknown;
}

export interface DiffResult {
  disagreements: Disagreement[];
  /** Ops one side could not run (unsupported), with the reason. */
  skipped: { i: number; op: string; why: string }[];
  compared: number;
}

const sum = (r: ResultLine): number => Number(r.Private_Hugetlb ?? 0) + Number(r.Shared_Hugetlb ?? 0);

function eq(a: unknown, b: unknown): boolean {
  return JSON.stringify(canon(a)) === JSON.stringify(canon(b));
}
function canon(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(canon);
  if (v && typeof v === 'object')
    return Object.fromEntries(
      Object.keys(v)
        .sort()
        .map((k) => [k, canon((v as Record<string, unknown>)[k])]),
    );
  return v;
}

export function diffRuns(a: ResultLine[], b: ResultLine[], requested?: (i: number) => Record<string, unknown> | undefined): DiffResult {
  const out: DiffResult = { disagreements: [], skipped: [], compared: 0 };
  const n = Math.max(a.length, b.length);
  for (let k = 0; k < n; k++) {
    const x = a[k];
    const y = b[k];
    if (!x || !y || 'summary' in x || 'summary' in y) continue;
    const i = (x.i ?? y.i) as number;
    const op = String(x.op ?? y.op);
    if (x.unsupported !== undefined || y.unsupported !== undefined) {
      out.skipped.push({ i, op, why: String(x.unsupported ?? y.unsupported) });
      continue;
    }
    out.compared++;
    const d = (field: string, p: unknown, q: unknown): void => {
      if (!eq(p, q)) out.disagreements.push({ i, op, field, a: p, b: q });
    };
    d('op', x.op, y.op);
    for (const f of ['ret', 'errno', 'signal', 'at', 'invalid', 'error']) d(f, x[f], y[f]);
    for (const f of OUTPUT_FIELDS[op] ?? []) {
      if (`${op}.${f}` in NOT_COMPARED) continue;
      if (op === 'vmstat' && f === 'vmstat') {
        const p = (x.vmstat ?? {}) as Record<string, unknown>;
        const q = (y.vmstat ?? {}) as Record<string, unknown>;
        for (const key of Object.keys({ ...p, ...q })) if (COMPARED_VMSTAT.has(key)) d(`vmstat.${key}`, p[key], q[key]);
        continue;
      }
      if (op === 'smaps' && (f === 'Shared_Hugetlb' || f === 'Private_Hugetlb') && x.KernelPageSize === 1048576) {
        if (f === 'Private_Hugetlb') d('Private_Hugetlb+Shared_Hugetlb', sum(x), sum(y));
        continue;
      }
      if (op === 'hugetlb_pool' && f === 'nr') {
        const want = requested?.(i)?.nr;
        if (want !== undefined && (x.nr !== want || y.nr !== want) && !(x.nr === want && y.nr === want)) {
          // compared only when the pool could be filled on both sides
          if (x.nr !== want && y.nr !== want) continue;
          if (y.nr !== want) continue; // the real machine could not fill it: machine state, not script
        }
      }
      d(f, x[f], y[f]);
    }
  }
  return out;
}
