/**
 * Values in op-scripts: sizes ("2M"), handle addresses ("$a+0x1000"),
 * flag names as the uapi headers spell them, and node sets.
 */
import {
  MADV,
  MADV_SPLIT,
  UFFD_FEATURE_PROPOSED,
  MAP,
  MPOL,
  OPEN,
  PROT,
  UFFD_FEATURE,
  UFFD_USER_MODE_ONLY,
  UFFDIO_MODE,
  UFFDIO_REGISTER_MODE,
} from '../kernel/uapi.ts';
import { parseSize } from '../util/input_error.ts';

export class BadValue extends Error {}

export function size(field: string, v: unknown): number {
  const r = parseSize(v);
  if (r === undefined) throw new BadValue(`${field}: expected a size (bytes, or a string like "4K", "2M", "1G"), got ${JSON.stringify(v)}`);
  return r;
}

export function int(field: string, v: unknown, min = -Infinity, max = Infinity): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)
    throw new BadValue(
      `${field}: expected an integer${min > -Infinity ? ` from ${min}` : ''}${max < Infinity ? ` to ${max}` : ''}, got ${JSON.stringify(v)}`,
    );
  return v;
}

export function bool(field: string, v: unknown): boolean {
  if (typeof v !== 'boolean') throw new BadValue(`${field}: expected true or false, got ${JSON.stringify(v)}`);
  return v;
}

export function str(field: string, v: unknown): string {
  if (typeof v !== 'string' || v === '') throw new BadValue(`${field}: expected a non-empty string, got ${JSON.stringify(v)}`);
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
  none: {},
} as const;
export type FlagSet = keyof typeof FLAG_SETS;

/** A flag field: a name, an array of names, or a number. */
export function flags(field: string, v: unknown, set: FlagSet): number {
  if (v === undefined) return 0;
  if (typeof v === 'number' && Number.isInteger(v)) return v;
  const names = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(names))
    throw new BadValue(`${field}: expected flag names (e.g. ${example(set)}) or a number, got ${JSON.stringify(v)}`);
  const table = FLAG_SETS[set] as Record<string, number>;
  let r = 0;
  for (const n of names) {
    if (typeof n === 'number' && Number.isInteger(n)) {
      r |= n;
      continue;
    }
    if (typeof n !== 'string' || !(n in table))
      throw new BadValue(`${field}: unknown flag name ${JSON.stringify(n)} (expected one of ${Object.keys(table).join(', ')})`);
    r |= table[n]!;
  }
  return r;
}

function example(set: FlagSet): string {
  return Object.keys(FLAG_SETS[set]).slice(0, 2).join(', ');
}

export function nodeSet(field: string, v: unknown): number[] {
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'number' && Number.isInteger(x) && x >= 0 && x < 1024))
    throw new BadValue(`${field}: expected an array of node ids such as [0,1], got ${JSON.stringify(v)}`);
  return v as number[];
}

/** An address: a handle expression or a raw number. */
export type Addr = { handle: string; offset: number } | { raw: number };

export function addr(field: string, v: unknown): Addr {
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return { raw: v };
  if (typeof v === 'string') {
    const m = /^\$([A-Za-z_][\w.]*)\s*(?:([+-])\s*(.+))?$/.exec(v.trim());
    if (m) {
      let off = 0;
      if (m[3] !== undefined) {
        const o = parseSize(m[3]);
        if (o === undefined) throw new BadValue(`${field}: bad offset ${JSON.stringify(m[3])} in ${JSON.stringify(v)}`);
        off = m[2] === '-' ? -o : o;
      }
      return { handle: m[1]!, offset: off };
    }
    if (/^0x[0-9a-fA-F]+$/.test(v.trim())) return { raw: parseInt(v, 16) };
  }
  throw new BadValue(`${field}: expected an address such as "$a", "$a+2M" or "$a+0x1000", got ${JSON.stringify(v)}`);
}
