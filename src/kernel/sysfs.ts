/**
 * The sysfs and procfs knobs memtwin models, by their real paths, with the
 * values and parse errors Linux gives: sysfs_streq for mode words, kstrtoul
 * or kstrtouint for sysfs numbers (decimal only; -ERANGE or -EINVAL above
 * the type, as each store passes it on), proc_dointvec_minmax and
 * proc_doulongvec_minmax for /proc/sys (whitespace, base 0, -EINVAL), and
 * an empty write that changes nothing. Confirmed on this machine's kernel by
 * test/op-scripts/sysfs-numbers.jsonl. A path memtwin does not model is
 * reported as such, never silently accepted.
 */
import { HGM_PROPOSALS } from './hugetlb_hgm.ts';
import { DEVMEM_REMAP } from './hugetlb_devmem.ts';
import type { Kernel } from './kernel.ts';
import { setupPerZoneWmarks } from './page_alloc.ts';
import { MADV_COLLAPSE_PROPOSALS, THP_DEFRAG, THP_ENABLED } from './huge_memory.ts';
import { HPAGE_PMD_NR, MAX_PAGE_ORDER, neg } from './uapi.ts';
import { chargeCompaction, compactZone } from './compaction.ts';
import type { Hstate } from './hugetlb.ts';
import { DEBUGFS } from './numa_balancing.ts';

interface Knob {
  read(): string;
  /** 0, or -errno; undefined when the file is read-only. */
  write?(v: string): number;
}

const THP = '/sys/kernel/mm/transparent_hugepage';

/** sysfs_streq-like: the value with one trailing newline removed. */
const word = (v: string): string => v.replace(/\n$/, '');

const ULONG_MAX = 2n ** 64n - 1n;
const UINT_MAX = 2n ** 32n - 1n;
const INT_MAX = 2n ** 31n - 1n;

/**
 * kstrtoul/kstrtouint(s, 10, &res) as sysfs stores call them
 * (lib/kstrtox.c): an optional '+', decimal digits, at most one trailing
 * newline. The value, or -ERANGE when it does not fit `max`, -EINVAL for
 * anything else ("0x10", " 1", "-1", "1\n\n"). Values above 2^53 come back
 * rounded: every knob that accepts them clamps to what the machine has.
 */
function kstrtoul(v: string, max = ULONG_MAX): number {
  const m = /^\+?(\d+)\n?$/.exec(v);
  if (!m) return neg('EINVAL');
  const n = BigInt(m[1]!);
  return n > max ? neg('ERANGE') : Number(n);
}

/**
 * proc_dointvec_minmax / proc_doulongvec_minmax (kernel/sysctl.c) on a
 * one-value table: leading whitespace skipped, an optional '-' (never for
 * ulong, not even "-0"), base 0 (0x hex, 0 octal), then whitespace or the
 * end; what follows is ignored. Overflow, a number of 21 characters or
 * more (TMPBUFLEN), or a value outside [min, max] is -EINVAL. An empty
 * write changes nothing and succeeds (undefined here).
 */
function procDoVec(v: string, kind: 'int' | 'ulong', min = 0n, max = kind === 'int' ? INT_MAX : ULONG_MAX): number | undefined {
  // min >= 0 for every modelled sysctl, so a negative result is always -errno.
  if (v === '') return undefined;
  const m = /^[ \t\n]*(-?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9]\d*)([ \t\n].*)?$/s.exec(v);
  if (!m || m[1]!.length + m[2]!.length >= 21) return neg('EINVAL');
  const digits = m[2]!;
  const abs = /^0[xX]/.test(digits)
    ? BigInt(digits)
    : digits.length > 1 && digits[0] === '0'
      ? BigInt(`0o${digits.slice(1)}`)
      : BigInt(digits);
  if (abs > ULONG_MAX) return neg('EINVAL');
  if (m[1] && kind === 'ulong') return neg('EINVAL');
  const n = m[1] ? -abs : abs;
  if ((kind === 'int' && (n > INT_MAX || n < -INT_MAX - 1n)) || n < min || n > max) return neg('EINVAL');
  return Number(n);
}

/** kstrtobool: y/Y/t/T/1 or n/N/f/F/0 by the first character, on/off by the first two; undefined otherwise. */
function kstrtobool(v: string): boolean | undefined {
  const c = v[0];
  if (c && 'yYtT1'.includes(c)) return true;
  if (c && 'nNfF0'.includes(c)) return false;
  if (c === 'o' || c === 'O') {
    const d = v[1];
    if (d === 'n' || d === 'N') return true;
    if (d === 'f' || d === 'F') return false;
  }
  return undefined;
}

function choice<T extends string>(options: readonly T[], get: () => string, set: (v: T) => void): Knob {
  return {
    read: () => options.map((o) => (o === get() ? `[${o}]` : o)).join(' '),
    write: (v) => {
      const w = word(v) as T;
      if (!options.includes(w)) return neg('EINVAL');
      set(w);
      return 0;
    },
  };
}

/** How a sysfs store parses its number: kstrtoul or kstrtouint, and whether it returns their -ERANGE or -EINVAL for any error. */
interface Parse {
  max?: bigint;
  /** The store returns kstrtoul's error as is (-ERANGE on overflow); otherwise any parse error is -EINVAL. */
  passError?: boolean;
}

function number(
  get: () => number,
  set?: (n: number) => number | void,
  valid: (n: number) => boolean = () => true,
  parse: Parse = {},
): Knob {
  const knob: Knob = { read: () => String(get()) };
  if (set)
    knob.write = (v) => {
      const n = kstrtoul(v, parse.max);
      if (n < 0) return parse.passError ? n : neg('EINVAL');
      if (!valid(n)) return neg('EINVAL');
      const r = set(n);
      return typeof r === 'number' ? r : 0;
    };
  return knob;
}

/** A read-write number knob backed by a numeric field of a settings object. */
function numberField<T extends object, K extends { [P in keyof T]: T[P] extends number ? P : never }[keyof T]>(
  obj: T,
  key: K,
  valid?: (n: number) => boolean,
  parse?: Parse,
): Knob {
  const o = obj as Record<K, number>;
  return number(
    () => o[key],
    (n) => void (o[key] = n),
    valid,
    parse,
  );
}

/** A /proc/sys knob (procDoVec). */
function sysctl(get: () => number, set: (n: number) => number | void, kind: 'int' | 'ulong', min?: bigint, max?: bigint): Knob {
  return {
    read: () => String(get()),
    write: (v) => {
      const n = procDoVec(v, kind, min, max);
      if (n === undefined) return 0;
      if (n < 0) return n;
      const r = set(n);
      return typeof r === 'number' ? r : 0;
    },
  };
}

/** A /proc/sys int knob backed by a numeric field (proc_dointvec_minmax). */
function sysctlField<T extends object, K extends { [P in keyof T]: T[P] extends number ? P : never }[keyof T]>(
  obj: T,
  key: K,
  min?: bigint,
  max?: bigint,
): Knob {
  const o = obj as Record<K, number>;
  return sysctl(
    () => o[key],
    (n) => void (o[key] = n),
    'int',
    min,
    max,
  );
}

/** single_hugepage_flag_store: kstrtoul's error as is, then a value above 1 is -EINVAL. */
const FLAG: Parse = { passError: true };
/** kstrtouint into an unsigned int; the store answers -EINVAL for every error (khugepaged's sleep and pages_to_scan). */
const UINT: Parse = { max: UINT_MAX };

function hstateKnobs(k: Kernel, dir: string, h: Hstate, node?: number): [string, Knob][] {
  // nr_hugepages_store_common: kstrtoul's error as is (-ERANGE above ULONG_MAX).
  const nr = number(
    () => (node === undefined ? h.nr : h.nrNode[node]!),
    (n) => k.hugetlb.setNrHugepages(h, n, node),
    undefined,
    { passError: true },
  );
  const out: [string, Knob][] = [
    [`${dir}/nr_hugepages`, nr],
    [`${dir}/free_hugepages`, number(() => (node === undefined ? h.free : h.freeNode[node]!))],
    [`${dir}/surplus_hugepages`, number(() => (node === undefined ? h.surplus : h.surplusNode[node]!))],
  ];
  if (node === undefined) {
    out.push([`${dir}/resv_hugepages`, number(() => h.resv)]);
    const overcommit = number(
      () => h.overcommit,
      (n) => void (h.overcommit = n),
      undefined,
      { passError: true },
    );
    out.push([
      `${dir}/nr_overcommit_hugepages`,
      {
        read: overcommit.read,
        // nr_overcommit_hugepages_store: gigantic pages cannot be overcommitted, whatever was written.
        write: (v) => (h.order > MAX_PAGE_ORDER ? neg('EINVAL') : overcommit.write!(v)),
      },
    ]);
  }
  return out;
}

export class Sysfs {
  private readonly knobs = new Map<string, Knob>();

  constructor(k: Kernel) {
    const t = k.thp;
    const kh = t.khugepaged;
    const add = (p: string, knob: Knob): void => void this.knobs.set(p, knob);
    add(
      `${THP}/enabled`,
      choice(
        THP_ENABLED,
        () => t.enabled,
        (v) => {
          t.enabled = v;
          k.khugepaged.startStop();
        },
      ),
    );
    add(
      `${THP}/defrag`,
      choice(
        THP_DEFRAG,
        () => t.defrag,
        (v) => (t.defrag = v),
      ),
    );
    add(
      `${THP}/use_zero_page`,
      numberField(t, 'useZeroPage', (n) => n <= 1, FLAG),
    );
    add(
      `${THP}/hpage_pmd_size`,
      number(() => HPAGE_PMD_NR * 4096),
    );
    add(
      `${THP}/hugepages-2048kB/enabled`,
      choice(
        ['always', 'inherit', 'madvise', 'never'] as const,
        () => t.pmdEnabled,
        (v) => {
          t.pmdEnabled = v;
          k.khugepaged.startStop();
        },
      ),
    );
    const KH = `${THP}/khugepaged`;
    add(
      `${KH}/defrag`,
      numberField(kh, 'defrag', (n) => n <= 1, FLAG),
    );
    add(
      `${KH}/pages_to_scan`,
      numberField(kh, 'pages_to_scan', (n) => n > 0, UINT),
    );
    // Writing either sleep ends khugepaged's current sleep (khugepaged_sleep_expire = 0).
    for (const f of ['scan_sleep_millisecs', 'alloc_sleep_millisecs'] as const)
      add(
        `${KH}/${f}`,
        number(
          () => kh[f],
          (n) => {
            kh[f] = n;
            k.khugepaged.wake();
          },
          undefined,
          UINT,
        ),
      );
    add(
      `${KH}/max_ptes_none`,
      numberField(kh, 'max_ptes_none', (n) => n <= HPAGE_PMD_NR - 1),
    );
    add(
      `${KH}/max_ptes_swap`,
      numberField(kh, 'max_ptes_swap', (n) => n <= HPAGE_PMD_NR - 1),
    );
    add(
      `${KH}/max_ptes_shared`,
      numberField(kh, 'max_ptes_shared', (n) => n <= HPAGE_PMD_NR - 1),
    );
    add(
      `${KH}/pages_collapsed`,
      number(() => kh.pages_collapsed),
    );
    add(
      `${KH}/full_scans`,
      number(() => kh.full_scans),
    );

    for (const h of k.hugetlb.hstates) {
      for (const [p, knob] of hstateKnobs(k, `/sys/kernel/mm/hugepages/${h.dirName}`, h)) add(p, knob);
      for (const n of k.host.nodes)
        for (const [p, knob] of hstateKnobs(k, `/sys/devices/system/node/node${n.id}/hugepages/${h.dirName}`, h, n.id)) add(p, knob);
    }
    const dh = k.hugetlb.defaultHstate;
    if (dh) {
      // hugetlb_sysctl_handler / hugetlb_overcommit_handler: proc_doulongvec_minmax on the default size.
      add(
        '/proc/sys/vm/nr_hugepages',
        sysctl(
          () => dh.nr,
          (n) => k.hugetlb.setNrHugepages(dh, n),
          'ulong',
        ),
      );
      add('/proc/sys/vm/nr_overcommit_hugepages', {
        read: () => String(dh.overcommit),
        write: (v) =>
          dh.order > MAX_PAGE_ORDER
            ? neg('EINVAL')
            : sysctl(
                () => dh.overcommit,
                (n) => void (dh.overcommit = n),
                'ulong',
              ).write!(v),
      });
    }
    // Swap (mm/swap.c page_cluster, at most page_cluster_max = 31; mm/swap_state.c enable_vma_readahead).
    add('/proc/sys/vm/page-cluster', sysctlField(k.swap, 'pageCluster', 0n, 31n));
    // Watermarks (mm/page_alloc.c): a write recomputes every zone's (min_free_kbytes_sysctl_handler).
    add(
      '/proc/sys/vm/min_free_kbytes',
      sysctl(
        () => k.phys.minFreeKbytes,
        (n) => {
          k.phys.minFreeKbytes = k.phys.userMinFreeKbytes = n;
          setupPerZoneWmarks(k.phys);
        },
        'int',
        0n,
      ),
    );
    add(
      '/proc/sys/vm/watermark_scale_factor',
      sysctl(
        () => k.phys.watermarkScaleFactor,
        (n) => {
          k.phys.watermarkScaleFactor = n;
          setupPerZoneWmarks(k.phys);
        },
        'int',
        1n,
        3000n,
      ),
    );
    // vm.swappiness: 0..200 (MAX_SWAPPINESS). Without a file page cache reclaim scans anon only (SCAN_ANON) whatever it is.
    add('/proc/sys/vm/swappiness', sysctlField(k, 'swappiness', 0n, 200n));
    add('/sys/kernel/mm/swap/vma_ra_enabled', {
      read: () => (k.swap.vmaRaEnabled ? 'true' : 'false'),
      write: (v) => {
        const b = kstrtobool(v);
        if (b === undefined) return neg('EINVAL');
        k.swap.vmaRaEnabled = b;
        return 0;
      },
    });
    const sc = k.sysctl;
    add('/proc/sys/vm/overcommit_memory', sysctlField(sc, 'overcommit_memory', 0n, 2n));
    add('/proc/sys/vm/max_map_count', sysctlField(sc, 'max_map_count', 0n));
    // extra2 is SYSCTL_FOUR on 6.18; the simulator reads only bit 0 (NUMA_BALANCING_NORMAL).
    add('/proc/sys/kernel/numa_balancing', sysctlField(sc, 'numa_balancing', 0n, 4n));
    // What a credential change (setuid) makes the mm's dumpable flag (commit_creds): 0, 1 or 2.
    add('/proc/sys/fs/suid_dumpable', sysctlField(sc, 'suid_dumpable', 0n, 2n));
    const nb = k.numab.settings;
    for (const key of ['scan_delay_ms', 'scan_period_min_ms', 'scan_period_max_ms', 'scan_size_mb'] as const)
      add(
        `${DEBUGFS}/${key}`,
        number(
          () => nb[key],
          (n) => void (nb[key] = n),
          (n) => n > 0,
        ),
      );
    // memtwin's switchable features for proposals Linux never merged (not Linux paths): parsed as THP's flag knobs.
    add(
      '/sys/kernel/memtwin/features/memsched',
      numberField(k.memsched, 'enabled', (n) => n <= 1, FLAG),
    );
    add(
      '/sys/kernel/memtwin/features/process_mbind',
      numberField(k.processMbind, 'enabled', (n) => n <= 1, FLAG),
    );
    for (const name of HGM_PROPOSALS)
      add(
        `/sys/kernel/memtwin/features/${name}`,
        numberField(k.hgm.enabled, name, (n) => n <= 1, FLAG),
      );
    for (const name of MADV_COLLAPSE_PROPOSALS)
      add(
        `/sys/kernel/memtwin/features/${name}`,
        numberField(k.thp.collapseProposals, name, (n) => n <= 1, FLAG),
      );
    add(
      `/sys/kernel/memtwin/features/${DEVMEM_REMAP}`,
      numberField(k.devmem, 'enabled', (n) => n <= 1, FLAG),
    );
    // The build option the /dev/mem remap depends on (not a Linux path: Linux shows it in /proc/config.gz).
    add(
      '/sys/kernel/memtwin/config/CONFIG_STRICT_DEVMEM',
      numberField(k.devmem, 'strictDevmem', (n) => n <= 1, FLAG),
    );
    // drop_caches: 1 (page cache), 2 (slab), 3 (both), 4 (quiet); nothing to drop in the simulator. This kernel
    // accepts 5 too, though the table says SYSCTL_FOUR: only the minimum is modelled.
    let dropCaches = 0;
    add(
      '/proc/sys/vm/drop_caches',
      sysctl(
        () => dropCaches,
        (n) => void (dropCaches = n),
        'int',
        1n,
      ),
    );
    // sysctl_compaction_handler: proc_dointvec into sysctl_compact_memory, then anything but 1 is -EINVAL. An
    // empty write leaves the last value: on Linux that is whatever anyone wrote since boot, so a script cannot
    // rely on it.
    let compactMemory = 0;
    add('/proc/sys/vm/compact_memory', {
      read: () => '',
      write: (v) => {
        // Any negative or malformed value leaves something other than 1: -EINVAL, as the check after the parse.
        const n = procDoVec(v, 'int');
        if (n !== undefined) compactMemory = n < 0 ? 0 : n;
        if (compactMemory !== 1) return neg('EINVAL');
        for (const z of k.phys.zones) {
          const r = compactZone(k, z.nid, MAX_PAGE_ORDER + 1);
          chargeCompaction(k, z.nid, r);
        }
        return 0;
      },
    });
  }

  has(path: string): boolean {
    return this.knobs.has(path);
  }
  paths(): string[] {
    return [...this.knobs.keys()];
  }
  read(path: string): string | undefined {
    return this.knobs.get(path)?.read();
  }
  /** 0 or -errno; -EACCES for a read-only file. Throws for an unknown path. */
  write(path: string, value: string): number {
    const knob = this.knobs.get(path);
    if (!knob) throw new Error(`unknown knob ${path}`);
    if (!knob.write) return neg('EACCES');
    // sysfs_kf_write: a write of no bytes reaches no store and succeeds (debugfs is not sysfs).
    if (value === '' && path.startsWith('/sys/') && !path.startsWith(DEBUGFS)) return 0;
    return knob.write(value);
  }
}
