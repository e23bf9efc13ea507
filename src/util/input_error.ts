import { readFileSync } from 'node:fs';
/**
 * Bad input is reported, never thrown at the user as a stack trace:
 * file, line, column, field and what was expected.
 */
export class InputError extends Error {
  constructor(
    readonly file: string,
    readonly line: number | undefined,
    readonly column: number | undefined,
    readonly field: string | undefined,
    readonly expected: string,
  ) {
    super(
      `${file}${line !== undefined ? `:${line}` : ''}${column !== undefined ? `:${column}` : ''}: ` +
        `${field ? `${field}: ` : ''}${expected}`,
    );
    this.name = 'InputError';
  }
}

/** Parse "4K", "2M", "1G", "1536K", "0x1000" or a number into bytes. */
export function parseSize(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isSafeInteger(v) && v >= 0 ? v : undefined;
  if (typeof v !== 'string') return undefined;
  const m = /^\s*(0x[0-9a-fA-F]+|\d+)\s*([KMGT]i?B?|[kmgt])?\s*$/.exec(v);
  if (!m) return undefined;
  const base = m[1]!.startsWith('0x') ? parseInt(m[1]!, 16) : parseInt(m[1]!, 10);
  const unit = (m[2] ?? '').charAt(0).toUpperCase();
  const mult = unit === '' ? 1 : 1024 ** ' KMGT'.indexOf(unit);
  const r = base * mult;
  return Number.isSafeInteger(r) ? r : undefined;
}

/**
 * Parse a rate into bytes per second: a number of bytes/s, or a string in
 * bytes, "20GB/s", "12.5 GB/s", "800MB/s", "10GiB/s" (kB/MB/GB/TB decimal,
 * 1000^n, as bandwidths are quoted; KiB/MiB/GiB/TiB binary), or in bits,
 * "10Gbit/s", "100 Mbit/s", "25Gb/s", "10Gbps" (k/M/G/T decimal, 8 bits a
 * byte), as NICs are sold. Undefined if it is none of these or not positive.
 */
export function parseRate(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isFinite(v) && v > 0 ? v : undefined;
  if (typeof v !== 'string') return undefined;
  const bytes = /^\s*(\d+(?:\.\d+)?)\s*(?:([kKMGT])(i?)B|B)\/s\s*$/.exec(v);
  const bits = /^\s*(\d+(?:\.\d+)?)\s*([kKMGT]?)(?:bit\/s|b\/s|bps)\s*$/.exec(v);
  let r: number;
  if (bytes) r = Number(bytes[1]) * (bytes[3] ? 1024 : 1000) ** (bytes[2] ? 'KMGT'.indexOf(bytes[2].toUpperCase()) + 1 : 0);
  else if (bits) r = (Number(bits[1]) * 1000 ** (bits[2] ? 'KMGT'.indexOf(bits[2].toUpperCase()) + 1 : 0)) / 8;
  else return undefined;
  return r > 0 && Number.isFinite(r) ? r : undefined;
}

/** Render bytes/s for people: 1250000000 -> "10 Gbit/s (1.25 GB/s)". */
export function formatRate(bps: number): string {
  const bits = bps * 8;
  const [div, unit] = bits >= 1e9 ? [1e9, 'Gbit/s'] : bits >= 1e6 ? [1e6, 'Mbit/s'] : bits >= 1e3 ? [1e3, 'kbit/s'] : [1, 'bit/s'];
  const [bdiv, bunit] = bps >= 1e9 ? [1e9, 'GB/s'] : bps >= 1e6 ? [1e6, 'MB/s'] : bps >= 1e3 ? [1e3, 'kB/s'] : [1, 'B/s'];
  const n = (x: number): string => String(Math.round(x * 1000) / 1000);
  return `${n(bits / div)} ${unit} (${n(bps / bdiv)} ${bunit})`;
}

/** Render bytes with the largest exact binary suffix: 2097152 -> "2M". */
export function formatSize(b: number): string {
  for (const [s, m] of [
    ['T', 2 ** 40],
    ['G', 2 ** 30],
    ['M', 2 ** 20],
    ['K', 2 ** 10],
  ] as const)
    if (b >= m && b % m === 0) return `${b / m}${s}`;
  return String(b);
}

/** Read an input file (0: standard input); a missing or unreadable file is an InputError naming it (as `shownAs`). */
export function readInput(file: string | 0, what = 'file', shownAs = String(file)): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    throw new InputError(
      shownAs,
      undefined,
      undefined,
      undefined,
      `cannot read ${what} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
    );
  }
}

/** How long a quoted bad value may be in an error message, ellipsis included. */
export const QUOTE_MAX = 80;

/**
 * A bad input value as an error message shows it: its JSON text, cut to
 * `max` characters with an ellipsis and the full length when longer, so a
 * 4 MB value never makes a 4 MB message. Walks the value without
 * recursion, so no nesting depth makes it throw.
 */
export function quote(v: unknown, max = QUOTE_MAX): string {
  let head = '';
  let total = 0;
  const out = (s: string): void => {
    total += s.length;
    if (head.length <= max) head += s.slice(0, max + 1 - head.length);
  };
  // An explicit stack of what remains to be written: a value, or literal text (brackets, commas, keys).
  const todo: ({ v: unknown } | string)[] = [{ v }];
  const open = new Set<object>();
  const done: object[] = [];
  while (todo.length) {
    const t = todo.pop()!;
    if (typeof t === 'string') {
      if (t === '\0close') open.delete(done.pop()!);
      else out(t);
      continue;
    }
    const x = t.v;
    if (typeof x === 'string') out(JSON.stringify(x));
    else if (x === null || typeof x !== 'object') out(String(x));
    else if (open.has(x)) out('[circular]');
    else {
      open.add(x);
      done.push(x);
      const entries: [string | undefined, unknown][] = Array.isArray(x)
        ? x.map((e) => [undefined, e])
        : Object.keys(x).map((k) => [k, (x as Record<string, unknown>)[k]]);
      const [l, r] = Array.isArray(x) ? ['[', ']'] : ['{', '}'];
      out(l);
      todo.push('\0close', r);
      for (let j = entries.length - 1; j >= 0; j--) {
        const [k, e] = entries[j]!;
        todo.push({ v: e });
        if (k !== undefined) todo.push(`${JSON.stringify(k)}:`);
        if (j > 0) todo.push(',');
      }
    }
  }
  return total <= max ? head : `${head.slice(0, max - 1)}… (${total} chars)`;
}
