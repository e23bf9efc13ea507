/**
 * The migration matrix of `memtwin validate qemu` (docs/validate-qemu.md):
 * what each run's guest does and how it is migrated. The real side
 * (src/validate/real.ts) runs it under QEMU; the model side
 * (src/validate/qemu.ts) runs memtwin on the same configuration.
 */

export const MiB = 2 ** 20;

export interface RunConfig {
  id: string;
  /** What the run checks, one line. */
  what: string;
  /** Guest RAM (MiB): -m and the memory backend's size. */
  memMiB: number;
  /** memory-backend-ram, or memory-backend-file on a host hugetlbfs of 2M pages. */
  backend: 'ram' | 'hugetlb-2M';
  /** memtwin-dirty's arguments (native/guest/memtwin-dirty.c); null: no program (an idle guest). */
  program: { touchMiB: number; wsMiB: number; rate: number; freeMiB: number } | null;
  /** migrate-set-parameters max-bandwidth (bytes/s). */
  maxBandwidth: number;
  /** migrate-set-parameters downtime-limit (ms). */
  downtimeLimitMs: number;
  /** virtio-balloon-pci free-page-hint. */
  freePageHint: boolean;
  /** postcopy-ram, and migrate-start-postcopy this long after migrate (ms). */
  postcopyAfterMs: number | null;
}

const base = {
  memMiB: 256,
  backend: 'ram',
  downtimeLimitMs: 300,
  freePageHint: false,
  postcopyAfterMs: null,
} as const;

function dirty(ws: number, rate: number, bw: number): RunConfig {
  return {
    ...base,
    id: `precopy-dirty-ws${ws}M-r${rate}-bw${bw}M`,
    what: `precopy, 64 MiB touched, ${ws} MiB dirtied at ${rate} pages/s, ${bw} MiB/s`,
    program: { touchMiB: 64, wsMiB: ws, rate, freeMiB: 0 },
    maxBandwidth: bw * MiB,
  };
}

export const MATRIX: RunConfig[] = [
  {
    ...base,
    id: 'ceiling',
    what: 'precopy, 128 MiB touched, no bandwidth cap: the link rate under TCG (an input of every prediction)',
    program: { touchMiB: 128, wsMiB: 0, rate: 0, freeMiB: 0 },
    maxBandwidth: 16384 * MiB,
  },
  { ...base, id: 'precopy-idle-bw32M', what: 'precopy of an idle guest, 32 MiB/s', program: null, maxBandwidth: 32 * MiB },
  { ...base, id: 'precopy-idle-bw128M', what: 'precopy of an idle guest, 128 MiB/s', program: null, maxBandwidth: 128 * MiB },
  dirty(8, 1000, 32),
  dirty(8, 4000, 32),
  dirty(32, 1000, 32),
  dirty(32, 4000, 32),
  dirty(8, 1000, 128),
  dirty(8, 4000, 128),
  dirty(32, 1000, 128),
  dirty(32, 4000, 128),
  {
    ...base,
    id: 'postcopy-anon',
    what: 'postcopy after 1 s, anonymous RAM, 128 MiB touched, 64 MiB dirtied at 4000 pages/s, 32 MiB/s',
    program: { touchMiB: 128, wsMiB: 64, rate: 4000, freeMiB: 0 },
    maxBandwidth: 32 * MiB,
    postcopyAfterMs: 1000,
  },
  {
    ...base,
    id: 'postcopy-hugetlb-2M',
    what: 'postcopy after 1 s, 2M hugetlbfs RAM, 128 MiB touched, 64 MiB dirtied at 4000 pages/s, 32 MiB/s',
    backend: 'hugetlb-2M',
    program: { touchMiB: 128, wsMiB: 64, rate: 4000, freeMiB: 0 },
    maxBandwidth: 32 * MiB,
    postcopyAfterMs: 1000,
  },
  {
    ...base,
    id: 'precopy-idle-512M-bw128M',
    what: 'precopy of an idle 512 MiB guest, 128 MiB/s (the boot footprint of the hint runs)',
    memMiB: 512,
    program: null,
    maxBandwidth: 128 * MiB,
  },
  {
    ...base,
    id: 'hints-off',
    what: '512 MiB guest that wrote and freed 384 MiB, free page hints off, 128 MiB/s',
    memMiB: 512,
    program: { touchMiB: 16, wsMiB: 0, rate: 0, freeMiB: 384 },
    maxBandwidth: 128 * MiB,
  },
  {
    ...base,
    id: 'hints-on',
    what: '512 MiB guest that wrote and freed 384 MiB, free page hints on, 128 MiB/s',
    memMiB: 512,
    program: { touchMiB: 16, wsMiB: 0, rate: 0, freeMiB: 384 },
    maxBandwidth: 128 * MiB,
    freePageHint: true,
  },
];

/** One line of the guest's console, with when the host read it (ms after migrate). */
export interface GuestLine {
  atMs: number;
  line: string;
}

export interface RealRun {
  config: RunConfig;
  /** completed, or what failed (after the retry). */
  status: string;
  attempts: number;
  /** Why earlier attempts failed. */
  failures: string[];
  /** The source's query-migrate when it reported completed (or the last one). */
  queryMigrate: Record<string, unknown> | null;
  /** The destination's last query-migrate, when it answered. */
  dstQueryMigrate: Record<string, unknown> | null;
  /** Host wall time of the migration: migrate until query-migrate said completed (ms, polled every 50 ms). */
  wallMs: number | null;
  guest: {
    /** memtwin-dirty's READY line: MemTotal and MemFree (kB) once it had touched its memory. */
    memTotalKiB: number | null;
    memFreeKiB: number | null;
    /** Mean of the per-second rates the guest printed while migration ran on the source (pages/s). */
    dirtyRateDuring: number | null;
    /** The same over the seconds before migrate. */
    dirtyRateBefore: number | null;
    lines: GuestLine[];
  };
}

export interface RealResults {
  qemu: string;
  guestKernel: string;
  host: string;
  date: string;
  runs: RealRun[];
}
