/**
 * Field-by-field comparison of two runs of one script, on the fields the
 * spec marks as compared. Everything not compared is listed here with the
 * reason, so a difference is always either a finding or documented.
 */
import { OUTPUT_FIELDS, type ResultLine } from './runner.ts';

/**
 * vmstat counters the script moves in a way the simulator predicts.
 * pgfault, pgalloc_*, numa_* and compaction counters move with every
 * process on the machine and are not compared; neither is
 * thp_zero_page_alloc (the huge zero page is allocated once per boot).
 * These are system-wide too: another process that faults or splits a THP
 * while the script runs (any process, once a script sets THP `enabled` to
 * always) moves them as well, so the real kernel's change is compared as at
 * least the simulator's. Counters only ever grow, so that bound holds
 * whatever else the machine does.
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
  'cgroup_stat.current':
    'bytes charged to the group: the kernel charges its own allocations for the process too (page tables, kernel stacks, ' +
    "the executor's own heap and stacks as it touches them), which the simulator does not model; compared to within " +
    'current_within bytes where the script gives that bound',
  'read.text': 'raw file text: layout and unmodelled fields differ by design',
  'damon.nr_regions':
    'DAMON splits regions at random points: the count moves within [min_nr_regions, max_nr_regions] (within_limits is compared)',
  'damon.regions': 'random split points and sampled addresses; hot_all_max and cold_all_zero are compared',
  'damon.hot_nr_accesses': 'which regions lie wholly inside the hot range depends on random split points (hot_all_max is compared)',
  'damon.cold_nr_accesses': 'which regions lie wholly outside the hot range depends on random split points (cold_all_zero is compared)',
  'pagemap.shared (1G pages)':
    'the same folio_maybe_mapped_shared answer as smaps below: Linux 6.18 here sometimes reports a 1G page mapped once ' +
    'as shared (PM_MMAP_EXCLUSIVE clear); the rest of a 1G run is compared',
  'smaps.Shared_Hugetlb/Private_Hugetlb (1G pages)':
    'Linux 6.18 here sometimes counts a 1G page mapped once as Shared_Hugetlb (folio_maybe_mapped_shared depends on the ' +
    'history of the pool page); for 1G mappings only their sum is compared',
};

/**
 * uffd_read's messages in the order Linux fixes. A thread blocked in a
 * userfault or a blocking event (REMOVE, UNMAP) has one message pending at a
 * time, and a read returns every pending fault before any event
 * (userfaultfd_ctx_read), so the order between two faults, or two events,
 * comes from different threads racing and is not compared: within each run
 * of faults or of events the messages are sorted. A fault after an event is
 * still a difference.
 */
export function canonMsgs(msgs: unknown): unknown {
  if (!Array.isArray(msgs)) return msgs;
  const isFault = (m: unknown): boolean => (m as { event?: string } | null)?.event === 'UFFD_EVENT_PAGEFAULT';
  const out: unknown[] = [];
  let run: unknown[] = [];
  const flush = (): void => {
    out.push(
      ...run
        .map((m) => JSON.stringify(canon(m)))
        .sort()
        .map((t) => JSON.parse(t) as unknown),
    );
    run = [];
  };
  msgs.forEach((m, k) => {
    if (k > 0 && isFault(m) !== isFault(msgs[k - 1])) flush();
    run.push(m);
  });
  flush();
  return out;
}

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

/** cgroup_stat's workingset counters as whether each is nonzero. */
function refaulted(w: unknown): unknown {
  if (!w || typeof w !== 'object') return w;
  return Object.fromEntries(Object.entries(w as Record<string, unknown>).map(([key, n]) => [key, Number(n) > 0]));
}

const isFlags = (v: unknown): v is Record<string, boolean> => !!v && typeof v === 'object';

/** pagemap's runs without `shared` on 1G pages (NOT_COMPARED), adjacent runs that then read the same merged again. */
function without1gShared(pages: unknown): unknown {
  if (!Array.isArray(pages)) return pages;
  const out: Record<string, unknown>[] = [];
  for (const run of pages as Record<string, unknown>[]) {
    const r = { ...run };
    if (r.size === '1G') delete r.shared;
    const last = out[out.length - 1];
    if (last && eq({ ...last, n: 0 }, { ...r, n: 0 })) last.n = Number(last.n) + Number(r.n);
    else out.push(r);
  }
  return out;
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
    for (const f of ['ret', 'errno', 'signal', 'at', 'killed', 'invalid', 'error']) d(f, x[f], y[f]);
    for (const f of OUTPUT_FIELDS[op] ?? []) {
      if (op === 'cgroup_stat' && f === 'current' && x.current_within !== undefined) {
        // Asked for by the script: the kernel's own charges for the group (NOT_COMPARED) stay under that bound there.
        const within = Number(x.current_within);
        if (!(Math.abs(Number(x.current) - Number(y.current)) <= within))
          out.disagreements.push({ i, op, field: 'current', a: x.current, b: y.current });
        continue;
      }
      if (`${op}.${f}` in NOT_COMPARED) continue;
      if (op === 'vmstat' && f === 'vmstat') {
        const p = (x.vmstat ?? {}) as Record<string, unknown>;
        const q = (y.vmstat ?? {}) as Record<string, unknown>;
        for (const key of Object.keys({ ...p, ...q }))
          if (COMPARED_VMSTAT.has(key) && !(Number(q[key]) >= Number(p[key])))
            out.disagreements.push({ i, op, field: `vmstat.${key}`, a: p[key], b: q[key] });
        continue;
      }
      if (op === 'cgroup_stat' && f === 'workingset') {
        // Whether the group refaulted, not how often: which pages an anonymous working set refaults depends on
        // reclaim racing the faults on Linux (docs/op-script.md). File refaults the simulator does not count may be
        // Linux's own: the executor's text and libraries, charged to the group when its process faults them in
        // there, reclaimed by the group's reclaim and faulted again.
        const a = refaulted(x.workingset);
        const b = refaulted(y.workingset);
        if (isFlags(a) && isFlags(b) && a.refault_file === false) b.refault_file = false;
        d(f, a, b);
        continue;
      }
      if (op === 'uffd_read' && f === 'msgs') {
        d(f, canonMsgs(x.msgs), canonMsgs(y.msgs));
        continue;
      }
      if (op === 'pagemap' && f === 'pages') {
        d(f, without1gShared(x.pages), without1gShared(y.pages));
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
