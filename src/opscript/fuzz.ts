/**
 * Malformed and extreme op-scripts (fast-check arbitraries), and the check
 * every one of them must pass: the script runs to its end or stops at one
 * `invalid` line that names the op and the file's line, nothing throws, and
 * the simulator's work stays bounded, counted in backend steps and virtual
 * time, never wall-clock time.
 *
 * Scripts are mutations of valid ones: the golden scripts of
 * test/op-scripts/ and the random scripts of gen.ts. A mutation changes a
 * field to a wrong type or an extreme number (huge, negative, -0, 1e308,
 * 2^64), renames an op (unknown, or a name Object.prototype has), drops a
 * required field, repeats a key, nests a value deeply, writes a long string,
 * breaks a line into random bytes, inserts extreme but valid ops (zero and
 * tiny strides over huge ranges, the longest waits, knob writes of numbers
 * beyond 2^64), or moves lines around. Used by fuzz.test.ts (a few hundred
 * small cases on every `npm test`) and by scripts/fuzz.ts (a campaign of
 * thousands through the real command line).
 */
import fc from 'fast-check';
import { readdirSync, readFileSync } from 'node:fs';
import { OPS } from './ops.ts';
import { scriptArb, postcopyScriptArb } from './gen.ts';
import { ScriptRunner, type ResultLine } from './runner.ts';
import { SimBackend } from './sim_backend.ts';
import type { Backend, RawResult, ResolvedOp } from './backend.ts';
import type { Kernel } from '../kernel/kernel.ts';

/** How big the extreme values get: `small` for the in-process suite, `large` (4 MB strings, 20,000 levels) for campaigns. */
export type FuzzScale = 'small' | 'large';

/** A line as entries whose values are raw JSON text, so any key (even "__proto__") and any depth can be written. */
type Entries = [string, string][];

const render = (e: Entries): string => `{${e.map(([k, v]) => `${JSON.stringify(k)}:${v}`).join(',')}}`;

function entriesOf(line: string): Entries | undefined {
  try {
    const o = JSON.parse(line) as unknown;
    if (typeof o !== 'object' || o === null || Array.isArray(o)) return undefined;
    return Object.entries(o).map(([k, v]) => [k, JSON.stringify(v)]);
  } catch {
    return undefined;
  }
}

const PROTO_NAMES = ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf', 'isPrototypeOf', '__defineGetter__'];
const THP = '/sys/kernel/mm/transparent_hugepage';
const KNOBS = [
  `${THP}/enabled`,
  `${THP}/defrag`,
  `${THP}/use_zero_page`,
  `${THP}/khugepaged/pages_to_scan`,
  `${THP}/khugepaged/scan_sleep_millisecs`,
  `${THP}/khugepaged/alloc_sleep_millisecs`,
  `${THP}/khugepaged/max_ptes_none`,
  `${THP}/khugepaged/defrag`,
  '/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages',
  '/sys/kernel/mm/hugepages/hugepages-2048kB/nr_overcommit_hugepages',
  '/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages',
  '/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages',
  '/sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages',
  '/proc/sys/vm/nr_hugepages',
  '/proc/sys/vm/overcommit_memory',
  '/proc/sys/vm/max_map_count',
  '/proc/sys/kernel/numa_balancing',
  '/proc/sys/vm/compact_memory',
  '/proc/sys/vm/drop_caches',
  '/sys/kernel/debug/sched/numa_balancing/scan_period_min_ms',
  '/sys/kernel/memtwin/features/memsched',
];

/** Numbers and number-like strings at and beyond every edge, as raw JSON text. */
const EXTREME_NUMBERS = [
  '0',
  '-0',
  '1',
  '-1',
  '0.5',
  '1e-300',
  '1e308',
  '-1e308',
  '1e400',
  '4095',
  '4097',
  '255',
  '256',
  '1023',
  '1024',
  '65536',
  '2147483647',
  '2147483648',
  '-2147483649',
  '4294967295',
  '4294967296',
  '4503599627370496',
  '9007199254740991',
  '9007199254740993',
  '18446744073709551615',
  '18446744073709551616',
  '340282366920938463463374607431768211456',
  '"0"',
  '"-1"',
  '"1e308"',
  '"0x"',
  '"0x10000000000000000"',
  '"18446744073709551616"',
  '"99999999999999999999K"',
  '"4096T"',
  '"200T"',
  '"1P"',
  '"2M "',
  '" 4K"',
  '"-4K"',
  '"$"',
  '"$a-1T"',
  '"$a+1P"',
  '"$a+0x7fffffffffff"',
  '"$r-0x1000"',
  '"0xffffffffffffffff"',
  '"0x7ffffffff000"',
];

const WRONG_TYPES = ['null', 'true', 'false', '""', '[]', '{}', '[[]]', '[null]', '{"a":1}', '"🙂"', '"\\u0000"', '"a\\nb"', '["x",1]'];

function nested(depth: number, kind: 'array' | 'object' | 'mixed'): string {
  const open = kind === 'array' ? '[' : kind === 'object' ? '{"a":' : '[{"a":';
  const close = kind === 'array' ? ']' : kind === 'object' ? '}' : '}]';
  const n = kind === 'mixed' ? Math.ceil(depth / 2) : depth;
  return open.repeat(n) + '1' + close.repeat(n);
}

const valueArb = (scale: FuzzScale): fc.Arbitrary<string> =>
  fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom(...EXTREME_NUMBERS) },
    { weight: 3, arbitrary: fc.constantFrom(...WRONG_TYPES) },
    { weight: 1, arbitrary: fc.constantFrom(...PROTO_NAMES).map((s) => JSON.stringify(s)) },
    { weight: 2, arbitrary: fc.double({ noNaN: true }).map((x) => JSON.stringify(x)) },
    { weight: 2, arbitrary: fc.integer().map(String) },
    { weight: 2, arbitrary: fc.string({ unit: 'grapheme', maxLength: 40 }).map((s) => JSON.stringify(s)) },
    {
      weight: 1,
      arbitrary: fc
        .tuple(
          fc.integer({ min: 20, max: scale === 'large' ? 20_000 : 3_000 }),
          fc.constantFrom('array', 'object', 'mixed') as fc.Arbitrary<'array'>,
        )
        .map(([d, k]) => nested(d, k)),
    },
    {
      weight: 1,
      arbitrary: fc
        .tuple(fc.integer({ min: 100, max: scale === 'large' ? 4_000_000 : 100_000 }), fc.constantFrom('x', '9', '$', 'é'))
        .map(([n, c]) => JSON.stringify(c.repeat(n))),
    },
    {
      weight: 1,
      arbitrary: fc
        .integer({ min: 100, max: scale === 'large' ? 500_000 : 20_000 })
        .map((n) => `[${Array.from({ length: n }, (_, j) => j % 2).join(',')}]`),
    },
  );

/** Field names worth touching for an op: its own, those of other ops, and prototype names. */
function fieldArb(op: string | undefined): fc.Arbitrary<string> {
  const spec = op !== undefined && Object.hasOwn(OPS, op) ? OPS[op] : undefined;
  const own = spec ? [...Object.keys(spec.req), ...Object.keys(spec.opt ?? {})] : [];
  const others = [...new Set(Object.values(OPS).flatMap((s) => [...Object.keys(s.req), ...Object.keys(s.opt ?? {})]))];
  return fc.oneof(
    { weight: own.length ? 6 : 0, arbitrary: fc.constantFrom(...(own.length ? own : ['op'])) },
    { weight: 2, arbitrary: fc.constantFrom('op', 'in', 'thread', 'comment') },
    { weight: 1, arbitrary: fc.constantFrom(...others) },
    { weight: 1, arbitrary: fc.constantFrom(...PROTO_NAMES) },
  );
}

/**
 * The costliest valid ops: each takes seconds of the simulator's time (a page-table walk over 100 TiB, 2^24
 * accesses), so only campaigns use them.
 */
const COSTLY_OPS = [
  '{"op":"mmap","len":"100T","prot":["PROT_READ"],"flags":["MAP_PRIVATE","MAP_ANONYMOUS","MAP_NORESERVE"],"name":"huge"}',
  '{"op":"touch","addr":"$big","len":"64M","stride":4,"write":true}',
  '{"op":"madvise","addr":"$huge","len":"100T","advice":"MADV_HUGEPAGE"}',
  '{"op":"mprotect","addr":"$huge","len":"100T","prot":["PROT_NONE"]}',
  '{"op":"mbind","addr":"$huge","len":"100T","mode":"MPOL_BIND","nodes":[0],"flags":["MPOL_MF_MOVE","MPOL_MF_STRICT"]}',
  '{"op":"munmap","addr":"$huge","len":"100T"}',
  '{"op":"munmap","addr":0,"len":"0x7ffffffff000"}',
];

/** Extreme ops that are valid, or nearly: the bounded-work cases. */
const extremeOpArb = (scale: FuzzScale): fc.Arbitrary<string> =>
  fc.oneof(
    fc.constantFrom(
      ...(scale === 'large' ? COSTLY_OPS : []),
      '{"op":"mmap","len":"1T","prot":["PROT_READ","PROT_WRITE"],"flags":["MAP_PRIVATE","MAP_ANONYMOUS","MAP_NORESERVE"],"name":"big"}',
      '{"op":"mmap","len":"1T","prot":["PROT_READ"],"flags":["MAP_PRIVATE","MAP_ANONYMOUS","MAP_NORESERVE"],"name":"huge"}',
      '{"op":"touch","addr":"$big","len":"1T","stride":1}',
      '{"op":"touch","addr":"$big","len":"64M","stride":64,"write":true}',
      '{"op":"touch","addr":"$big","len":"64G","write":false}',
      '{"op":"touch","addr":"$big","len":"1T","stride":"64K"}',
      '{"op":"touch","addr":"$big","len":"16M","stride":0}',
      '{"op":"touch","addr":"$big","len":"16M","stride":-4096}',
      '{"op":"peek","addr":"$big","len":"64G"}',
      '{"op":"pagemap","addr":"$big","len":"64G"}',
      '{"op":"pagemap","addr":"$huge","len":"1T"}',
      '{"op":"madvise","addr":"$big","len":"1T","advice":"MADV_DONTNEED"}',
      '{"op":"madvise","addr":"$huge","len":"1T","advice":"MADV_HUGEPAGE"}',
      '{"op":"madvise","addr":"$big","len":"1T","advice":"MADV_POPULATE_READ"}',
      '{"op":"madvise","addr":"$big","len":"1T","advice":"MADV_COLLAPSE"}',
      '{"op":"mprotect","addr":"$huge","len":"1T","prot":["PROT_NONE"]}',
      '{"op":"mbind","addr":"$huge","len":"1T","mode":"MPOL_BIND","nodes":[0],"flags":["MPOL_MF_MOVE","MPOL_MF_STRICT"]}',
      '{"op":"munmap","addr":"$huge","len":"1T"}',
      '{"op":"khugepaged_wait","full_scans":1000,"timeout_ms":600000}',
      '{"op":"khugepaged_wait","full_scans":1e308}',
      '{"op":"khugepaged_wait","timeout_ms":1e308}',
      '{"op":"sysfs","path":"/sys/kernel/mm/transparent_hugepage/khugepaged/scan_sleep_millisecs","value":"0"}',
      '{"op":"sysfs","path":"/sys/kernel/mm/transparent_hugepage/khugepaged/alloc_sleep_millisecs","value":"0"}',
      '{"op":"sysfs","path":"/sys/kernel/mm/transparent_hugepage/khugepaged/pages_to_scan","value":"4294967295"}',
      '{"op":"sysfs","path":"/proc/sys/vm/nr_hugepages","value":"18446744073709551615"}',
      '{"op":"hugetlb_pool","size":"2M","nr":4294967295}',
      '{"op":"hugetlb_pool","size":"1G","nr":4294967295,"node":1}',
      '{"op":"hugetlb_pool","size":"2M","nr":1e308}',
      '{"op":"uffd_read","fd":"$u","max":4096,"timeout_ms":60000}',
      '{"op":"join","thread":"t1","timeout_ms":60000}',
      '{"op":"thread","name":"tx","cpu":1023}',
      '{"op":"thread","name":"ty","cpu":1e308}',
      '{"op":"sysfs","path":"/sys/kernel/debug/sched/numa_balancing/scan_period_min_ms","value":"0"}',
      '{"op":"sysfs","path":"/proc/sys/kernel/numa_balancing","value":"1"}',
      '{"op":"sysfs","path":"/sys/kernel/mm/transparent_hugepage/enabled","value":"always"}',
    ),
    fc
      .tuple(fc.constantFrom(...KNOBS), fc.constantFrom(...EXTREME_NUMBERS, '"0x10"', '" 1"', '"-0"', '"1 2"', '""', '"\\n"', '"always"'))
      .map(([path, value]) => `{"op":"sysfs","path":${JSON.stringify(path)},"value":${value}}`),
  );

type Mutation = (lines: string[]) => string[];

/** Index of a random op line (not a comment), or undefined. */
const opLines = (lines: string[]): number[] => lines.flatMap((l, j) => (l.trim().startsWith('{') ? [j] : []));

function mutationArb(scale: FuzzScale): fc.Arbitrary<Mutation> {
  const at = fc.nat();
  const onEntries =
    (f: (e: Entries, op: string | undefined) => Entries) =>
    (pick: number): Mutation =>
    (lines) => {
      const idx = opLines(lines);
      if (!idx.length) return lines;
      const j = idx[pick % idx.length]!;
      const e = entriesOf(lines[j]!);
      if (!e) return lines;
      const op = e.find(([k]) => k === 'op')?.[1];
      const out = [...lines];
      out[j] = render(f(e, op && op.startsWith('"') ? (JSON.parse(op) as string) : undefined));
      return out;
    };
  const setField = fc.tuple(at, fc.nat(), valueArb(scale), fc.constantFrom(...Object.keys(OPS))).chain(([pick, fpick, value, anyOp]) =>
    fieldArb(anyOp).map((fallback) =>
      onEntries((e, op) => {
        const own = op && Object.hasOwn(OPS, op) ? [...Object.keys(OPS[op]!.req), ...Object.keys(OPS[op]!.opt ?? {})] : [];
        const field = own.length && fpick % 3 !== 0 ? own[fpick % own.length]! : fallback;
        const rest = e.filter(([k]) => k !== field);
        return [...rest.slice(0, fpick % (rest.length + 1)), [field, value], ...rest.slice(fpick % (rest.length + 1))];
      })(pick),
    ),
  );
  const renameOp = fc
    .tuple(
      at,
      fc.oneof(
        fc.constantFrom(...PROTO_NAMES),
        fc.constantFrom(...Object.keys(OPS)),
        fc.string({ maxLength: 12 }),
        fc.constantFrom('MMAP', 'mmap ', 'swap', 'cgroup'),
      ),
    )
    .map(([pick, name]) => onEntries((e) => e.map(([k, v]) => [k, k === 'op' ? JSON.stringify(name) : v]))(pick));
  const dropField = fc.tuple(at, fc.nat()).map(([pick, f]) => onEntries((e) => e.filter((_, j) => j !== f % Math.max(1, e.length)))(pick));
  const duplicateKey = fc
    .tuple(at, fc.nat(), fc.option(valueArb(scale), { nil: undefined }))
    .map(([pick, f, v]) => onEntries((e) => (e.length ? [...e, [e[f % e.length]![0], v ?? e[f % e.length]![1]]] : e))(pick));
  const garbleLine = fc
    .tuple(
      at,
      fc.oneof(
        fc.string({ unit: 'binary', maxLength: 60 }),
        fc.uint8Array({ maxLength: 60 }).map((b) => Buffer.from(b).toString('latin1')),
        fc.constantFrom(
          '{',
          '}',
          '[]',
          'null',
          '"op"',
          '{"op":NaN}',
          '{"op":"meminfo",}',
          '{"op":"meminfo"}}',
          '\uFEFF{"op":"meminfo"}',
          '{"op":"meminfo"} x',
        ),
      ),
      fc.nat(),
      fc.constantFrom('replace', 'truncate', 'insert', 'splice'),
    )
    .map(([pick, junk, cut, how]): Mutation => (lines) => {
      const out = [...lines];
      const j = out.length ? pick % out.length : 0;
      const l = out[j] ?? '';
      if (how === 'replace') out[j] = junk;
      else if (how === 'truncate') out[j] = l.slice(0, cut % (l.length + 1));
      else if (how === 'insert') out.splice(j, 0, junk);
      else out[j] = l.slice(0, cut % (l.length + 1)) + junk + l.slice(cut % (l.length + 1));
      return out;
    });
  const insertExtreme = fc
    .tuple(at, fc.array(extremeOpArb(scale), { minLength: 1, maxLength: 4 }))
    .map(([pick, ops]): Mutation => (lines) => {
      const out = [...lines];
      out.splice(lines.length ? pick % (lines.length + 1) : 0, 0, ...ops);
      return out;
    });
  const shuffle = fc
    .tuple(at, at, fc.constantFrom('swap', 'delete', 'repeat', 'comment', 'crlf', 'blank'))
    .map(([a, b, how]): Mutation => (lines) => {
      if (!lines.length) return lines;
      const out = [...lines];
      const x = a % out.length;
      const y = b % out.length;
      if (how === 'swap') [out[x], out[y]] = [out[y]!, out[x]!];
      else if (how === 'delete') out.splice(x, 1);
      else if (how === 'repeat') out.splice(y, 0, out[x]!);
      else if (how === 'comment') out.splice(x, 0, '# a comment', '// another', '   ');
      else if (how === 'crlf') return out.map((l) => `${l}\r`);
      else out.splice(x, 0, '', '');
      return out;
    });
  return fc.oneof(
    { weight: 8, arbitrary: setField },
    { weight: 2, arbitrary: renameOp },
    { weight: 2, arbitrary: dropField },
    { weight: 2, arbitrary: duplicateKey },
    { weight: 2, arbitrary: garbleLine },
    { weight: 3, arbitrary: insertExtreme },
    { weight: 1, arbitrary: shuffle },
  );
}

/** The golden scripts of a directory (test/op-scripts), as texts. */
export function goldenScripts(dir: string): string[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.jsonl') && !f.endsWith('.expected.jsonl'))
    .sort()
    .map((f) => readFileSync(`${dir}/${f}`, 'utf8'));
}

/**
 * A malformed or extreme script: a base (a golden script or a random one
 * from gen.ts) with 1 to 3 mutations. `tail` keeps at most that many lines
 * after the last line a mutation touched, so small runs stay small.
 */
export function malformedScriptArb(goldens: readonly string[], scale: FuzzScale = 'small', tail = Infinity): fc.Arbitrary<string> {
  const base = fc.oneof(
    { weight: goldens.length ? 4 : 0, arbitrary: goldens.length ? fc.constantFrom(...goldens) : fc.constant('') },
    { weight: 2, arbitrary: scriptArb },
    { weight: 1, arbitrary: postcopyScriptArb },
    { weight: 1, arbitrary: fc.constant('') },
  );
  return fc.tuple(base, fc.array(mutationArb(scale), { minLength: 1, maxLength: 3 })).map(([text, ms]) => {
    let lines = text.split('\n');
    const before = lines.length;
    for (const m of ms) lines = m(lines);
    if (Number.isFinite(tail)) {
      // The first line that differs from the base, and a few after it.
      let d = 0;
      const orig = text.split('\n');
      while (d < lines.length && d < before && lines[d] === orig[d]) d++;
      lines = lines.slice(0, d + 1 + tail);
    }
    return lines.join('\n');
  });
}

/** Thrown when a script exceeds its work budget: the property's "did not finish". */
export class BudgetExceeded extends Error {}

/** How much simulated work one fuzzed script may do. Generous for any valid script; an unbounded loop exceeds it. */
export interface Budget {
  /** Backend ops (each op line is at most one). */
  ops: number;
  /** Kernel events run (khugepaged passes, kcompactd, NUMA scans...). */
  events: number;
  /** Events run at one instant of virtual time: more means a loop that does not advance time. */
  eventsAtOneInstant: number;
  /** Virtual time one op may take (the longest wait is khugepaged_wait's 10 minutes). */
  opNs: number;
}

export const DEFAULT_BUDGET: Budget = { ops: 100_000, events: 3_000_000, eventsAtOneInstant: 10_000, opNs: 11 * 60e9 };

/**
 * A backend that counts the simulator's steps: every op, every kernel
 * event (through the event queue), the virtual time each op takes, and
 * events that run without time moving. Exceeding the budget throws
 * BudgetExceeded out of the kernel, so a runaway loop ends the run.
 */
export class GuardedBackend implements Backend {
  readonly name = 'sim' as const;
  ops = 0;
  events = 0;
  private sameInstant = 0;
  private lastInstant = -1;

  constructor(
    readonly inner: SimBackend,
    readonly budget: Budget = DEFAULT_BUDGET,
  ) {
    const k = inner.k;
    const schedule = k.events.schedule.bind(k.events);
    k.events.schedule = (at, name, run) => schedule(at, name, () => (this.onEvent(k), run()));
  }

  private onEvent(k: Kernel): void {
    const now = k.clock.now();
    this.sameInstant = now === this.lastInstant ? this.sameInstant + 1 : 0;
    this.lastInstant = now;
    if (++this.events > this.budget.events) throw new BudgetExceeded(`more than ${this.budget.events} kernel events`);
    if (this.sameInstant > this.budget.eventsAtOneInstant)
      throw new BudgetExceeded(
        `more than ${this.budget.eventsAtOneInstant} kernel events at virtual time ${now} ns: time does not advance`,
      );
  }

  async exec(op: ResolvedOp): Promise<RawResult> {
    if (++this.ops > this.budget.ops) throw new BudgetExceeded(`more than ${this.budget.ops} ops`);
    const t0 = this.inner.k.clock.now();
    const r = await this.inner.exec(op);
    const dt = this.inner.k.clock.now() - t0;
    if (dt > this.budget.opNs) throw new BudgetExceeded(`op ${op.i} (${op.op}) took ${dt} ns of virtual time`);
    return r;
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

/** What a fuzzed script did. */
export interface FuzzOutcome {
  results: ResultLine[];
  invalid: boolean;
  ops: number;
  events: number;
}

/** The longest message an invalid line may carry (quoted values are cut to about 80 characters). */
export const INVALID_MESSAGE_MAX = 1000;

/**
 * Run one script on a guarded simulator and check the contract; throws
 * (with the reason) when it is broken. A result line is an op result
 * (`ret`), an `unsupported` one, or, last and only once, an `invalid`
 * line with `i`, `op`, the file's `line` and a bounded message.
 */
export async function checkScript(text: string, kernel: () => Kernel, budget: Budget = DEFAULT_BUDGET): Promise<FuzzOutcome> {
  const backend = new GuardedBackend(new SimBackend(kernel()), budget);
  const runner = new ScriptRunner(backend);
  await runner.run(text);
  const rs = runner.results;
  const lines = text.split('\n');
  const isOp = (l: string | undefined): boolean => {
    const t = (l ?? '').trim();
    return t !== '' && !t.startsWith('#') && !t.startsWith('//');
  };
  rs.forEach((r, j) => {
    const where = `result ${j} ${JSON.stringify(r).slice(0, 300)}`;
    if (typeof r.i !== 'number' || typeof r.op !== 'string') throw new Error(`${where}: no i or op`);
    if ('invalid' in r) {
      if (j !== rs.length - 1) throw new Error(`${where}: an invalid line that is not the last`);
      if (typeof r.invalid !== 'string' || r.invalid.length === 0 || r.invalid.length > INVALID_MESSAGE_MAX)
        throw new Error(`${where}: invalid message missing or longer than ${INVALID_MESSAGE_MAX}`);
      if (typeof r.line !== 'number' || !Number.isInteger(r.line) || r.line < 1 || r.line > lines.length)
        throw new Error(`${where}: no line number within the file`);
      // The line is the op's own: an op line, with exactly `i` op lines before it.
      if (!isOp(lines[r.line - 1]) || lines.slice(0, r.line - 1).filter(isOp).length !== r.i)
        throw new Error(`${where}: line ${r.line} is not op ${r.i}`);
      if (!runner.invalid) throw new Error(`${where}: runner not marked invalid`);
    } else if (!('ret' in r) && !('unsupported' in r)) throw new Error(`${where}: neither ret, unsupported nor invalid`);
    if (JSON.stringify(r).length > 1_000_000) throw new Error(`${where}: a result line over 1 MB`);
  });
  if (runner.invalid !== rs.some((r) => 'invalid' in r)) throw new Error('invalid flag and results disagree');
  return { results: rs, invalid: runner.invalid, ops: backend.ops, events: backend.events };
}
