/**
 * Values in op-scripts: sizes ("2M"), handle addresses ("$a+0x1000"),
 * flag names as the uapi headers spell them, and node sets. Every number
 * has a range (docs/op-script.md, "Argument ranges"): a value outside it is
 * bad input naming the field, never a hang or a silently rounded number.
 */
import {
  MADV,
  MADV_SPLIT,
  UFFD_FEATURE_PROPOSED,
  MADV_F_PROPOSED,
  MAP,
  MPOL,
  MPOL_MODE_NAMES,
  OPEN,
  PROT,
  UFFD_FEATURE,
  UFFD_USER_MODE_ONLY,
  UFFDIO_MODE,
  UFFDIO_REGISTER_MODE,
  MFD,
} from '../kernel/uapi.ts';
import { formatSize, parseSize, quote } from '../util/input_error.ts';

export class BadValue extends Error {}

/**
 * The largest size or address a script may write: 4 PiB (2^52). Above any
 * x86-64 address space (128 TiB with 4-level page tables, 64 PiB with 5),
 * and small enough that an address plus a length stays an exact integer.
 */
export const SIZE_MAX = 2 ** 52;
/** Node ids: MAX_NUMNODES with the largest NODES_SHIFT (10). */
export const MAX_NUMNODES = 1024;
/** CPU numbers: CPU_SETSIZE, the cpu_set_t the executor pins threads with. */
export const CPU_SETSIZE = 1024;

/** "2^52" rather than 4503599627370496 in messages. */
export function fmtNum(n: number): string {
  for (const e of [52, 46, 40, 36, 32, 31, 24]) {
    if (n === 2 ** e) return `2^${e}`;
    if (n === 2 ** e - 1) return `2^${e}-1`;
    if (n === -(2 ** e)) return `-2^${e}`;
  }
  return String(n);
}

/** Bytes for messages: "4K", "64G", "2^52". */
export function fmtBytes(n: number): string {
  return n >= 2 ** 40 ? fmtNum(n) : formatSize(n);
}

export function size(field: string, v: unknown, min = 0, max = SIZE_MAX): number {
  const r = parseSize(v);
  if (r === undefined || r < min || r > max)
    throw new BadValue(
      `${field}: expected a size from ${fmtBytes(min)} to ${fmtBytes(max)} (a number, or a string like "4K", "2M", "1G"), got ${quote(v)}`,
    );
  return r;
}

/** A size that is a power of two from `min` to `max` (alignments, huge page sizes). */
export function pow2(field: string, v: unknown, min: number, max: number): number {
  const r = parseSize(v);
  if (r === undefined || r < min || r > max || 2 ** Math.round(Math.log2(r)) !== r)
    throw new BadValue(`${field}: expected a power of two from ${fmtBytes(min)} to ${fmtBytes(max)} (e.g. "2M"), got ${quote(v)}`);
  return r;
}

/** An integer from min to max; never a float, a non-safe integer or a number written as a string. */
export function int(field: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max)
    throw new BadValue(`${field}: expected an integer from ${fmtNum(min)} to ${fmtNum(max)}, got ${quote(v)}`);
  return v;
}

export function bool(field: string, v: unknown): boolean {
  if (typeof v !== 'boolean') throw new BadValue(`${field}: expected true or false, got ${quote(v)}`);
  return v;
}

/** A non-empty string of at most `max` characters. */
export function str(field: string, v: unknown, max: number): string {
  if (typeof v !== 'string' || v === '' || v.length > max)
    throw new BadValue(`${field}: expected a non-empty string of at most ${max} characters, got ${quote(v)}`);
  return v;
}

export const FLAG_SETS = {
  prot: PROT,
  mmap: MAP,
  advice: { ...MADV, MADV_SPLIT },
  mode: {
    MPOL_DEFAULT: MPOL.MPOL_DEFAULT,
    MPOL_PREFERRED: MPOL.MPOL_PREFERRED,
    MPOL_BIND: MPOL.MPOL_BIND,
    MPOL_INTERLEAVE: MPOL.MPOL_INTERLEAVE,
    MPOL_LOCAL: MPOL.MPOL_LOCAL,
    MPOL_PREFERRED_MANY: MPOL.MPOL_PREFERRED_MANY,
    MPOL_WEIGHTED_INTERLEAVE: MPOL.MPOL_WEIGHTED_INTERLEAVE,
    MPOL_F_STATIC_NODES: MPOL.MPOL_F_STATIC_NODES,
    MPOL_F_RELATIVE_NODES: MPOL.MPOL_F_RELATIVE_NODES,
    MPOL_F_NUMA_BALANCING: MPOL.MPOL_F_NUMA_BALANCING,
  },
  mbind: { MPOL_MF_STRICT: MPOL.MPOL_MF_STRICT, MPOL_MF_MOVE: MPOL.MPOL_MF_MOVE, MPOL_MF_MOVE_ALL: MPOL.MPOL_MF_MOVE_ALL },
  getmempolicy: { MPOL_F_NODE: MPOL.MPOL_F_NODE, MPOL_F_ADDR: MPOL.MPOL_F_ADDR, MPOL_F_MEMS_ALLOWED: MPOL.MPOL_F_MEMS_ALLOWED },
  uffd: { O_CLOEXEC: OPEN.O_CLOEXEC, O_NONBLOCK: OPEN.O_NONBLOCK, UFFD_USER_MODE_ONLY },
  uffd_features: { ...UFFD_FEATURE, ...UFFD_FEATURE_PROPOSED },
  uffd_register: UFFDIO_REGISTER_MODE,
  uffd_mode: UFFDIO_MODE,
  memfd: MFD,
  /**
   * process_madvise(2): Linux 6.18 defines no flag and answers EINVAL to any bit; the names are the
   * madv-collapse-flags proposal's, which only the simulator with that feature enabled accepts.
   */
  process_madvise: MADV_F_PROPOSED,
} as const;
export type FlagSet = keyof typeof FLAG_SETS;

/** A flag number: 32 bits, read as a C int or unsigned int. */
export const FLAG_MIN = -(2 ** 31);
export const FLAG_MAX = 2 ** 32 - 1;
const isFlagNumber = (n: unknown): n is number => typeof n === 'number' && Number.isSafeInteger(n) && n >= FLAG_MIN && n <= FLAG_MAX;

/** A flag field: a name, an array of names, or a number (32 bits; the result is the C int with those bits). */
export function flags(field: string, v: unknown, set: FlagSet): number {
  if (v === undefined) return 0;
  if (isFlagNumber(v)) return v | 0;
  const names = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(names) || names.length > 64)
    throw new BadValue(
      `${field}: expected flag names (e.g. ${example(set)}) or a number from ${fmtNum(FLAG_MIN)} to ${fmtNum(FLAG_MAX)}, got ${quote(v)}`,
    );
  const table = FLAG_SETS[set] as Record<string, number>;
  let r = 0;
  for (const n of names) {
    if (isFlagNumber(n)) {
      r |= n;
      continue;
    }
    if (typeof n !== 'string' || !Object.hasOwn(table, n))
      throw new BadValue(`${field}: unknown flag name ${quote(n)} (expected one of ${Object.keys(table).join(', ')})`);
    r |= table[n]!;
  }
  return r;
}

function example(set: FlagSet): string {
  return Object.keys(FLAG_SETS[set]).slice(0, 2).join(', ') || '[]';
}

export function nodeSet(field: string, v: unknown): number[] {
  if (
    !Array.isArray(v) ||
    v.length > MAX_NUMNODES ||
    !v.every((x) => typeof x === 'number' && Number.isInteger(x) && x >= 0 && x < MAX_NUMNODES)
  )
    throw new BadValue(`${field}: expected an array of node ids from 0 to ${MAX_NUMNODES - 1} such as [0,1], got ${quote(v)}`);
  return v as number[];
}

/** An address: a handle expression or a raw number. */
export type Addr = { handle: string; offset: number } | { raw: number };

export function addr(field: string, v: unknown): Addr {
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 && v <= SIZE_MAX) return { raw: v };
  if (typeof v === 'string' && v.length <= 256) {
    const m = /^\$([A-Za-z_][\w.]*)\s*(?:([+-])\s*(.+))?$/.exec(v.trim());
    if (m) {
      let off = 0;
      if (m[3] !== undefined) {
        const o = parseSize(m[3]);
        if (o === undefined || o > SIZE_MAX)
          throw new BadValue(`${field}: bad offset ${quote(m[3])} in ${quote(v)} (a size up to ${fmtNum(SIZE_MAX)})`);
        off = m[2] === '-' ? -o : o;
      }
      return { handle: m[1]!, offset: off };
    }
    if (/^0x[0-9a-fA-F]+$/.test(v.trim())) {
      const raw = parseInt(v, 16);
      if (raw <= SIZE_MAX) return { raw };
    }
  }
  throw new BadValue(
    `${field}: expected an address from 0 to ${fmtNum(SIZE_MAX)}, such as "$a", "$a+2M", "$a+0x1000" or "0x7f0000000000", got ${quote(v)}`,
  );
}

/** The mode flags get_mempolicy ORs into the mode it writes (MPOL_MODE_FLAGS), in the uapi header's order. */
const MPOL_MODE_FLAG_NAMES = ['MPOL_F_STATIC_NODES', 'MPOL_F_RELATIVE_NODES', 'MPOL_F_NUMA_BALANCING'] as const;

/**
 * get_mempolicy's `mode` as scripts write it: the mode's name
 * ("MPOL_BIND"), or, when mode flags are set, the names of the mode and its
 * flags (["MPOL_BIND","MPOL_F_STATIC_NODES"]), the form set_mempolicy's and
 * mbind's `mode` accept. A bit no name covers stays a number in the list.
 */
export function mempolicyModeNames(v: number): string | (string | number)[] {
  const flagBits = MPOL_MODE_FLAG_NAMES.reduce((m, n) => m | MPOL[n], 0);
  const mode = v & ~flagBits;
  const names: (string | number)[] = [MPOL_MODE_NAMES[mode] ?? mode];
  for (const n of MPOL_MODE_FLAG_NAMES) if (v & MPOL[n]) names.push(n);
  return names.length === 1 && typeof names[0] === 'string' ? names[0] : names;
}
