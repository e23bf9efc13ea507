/**
 * The sysfs and procfs knobs memtwin models, by their real paths, with the
 * values and parse errors Linux gives (sysfs_streq for mode words,
 * kstrtoul for numbers). A path memtwin does not model is reported as such,
 * never silently accepted.
 */
import { HGM_PROPOSALS } from './hugetlb_hgm.ts';
import type { Kernel } from './kernel.ts';
import { THP_DEFRAG, THP_ENABLED } from './huge_memory.ts';
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

/** kstrtoul: a decimal (or 0x hex) unsigned integer, optional trailing newline. */
function kstrtoul(v: string): number | undefined {
  const s = word(v);
  if (/^\d+$/.test(s)) return Number(s);
  if (/^0x[0-9a-fA-F]+$/.test(s)) return parseInt(s, 16);
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

function number(get: () => number, set?: (n: number) => number | void, valid: (n: number) => boolean = () => true): Knob {
  const knob: Knob = { read: () => String(get()) };
  if (set)
    knob.write = (v) => {
      const n = kstrtoul(v);
      if (n === undefined || !valid(n)) return neg('EINVAL');
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
): Knob {
  const o = obj as Record<K, number>;
  return number(
    () => o[key],
    (n) => void (o[key] = n),
    valid,
  );
}

function hstateKnobs(k: Kernel, dir: string, h: Hstate, node?: number): [string, Knob][] {
  const nr = number(
    () => (node === undefined ? h.nr : h.nrNode[node]!),
    (n) => k.hugetlb.setNrHugepages(h, n, node),
  );
  const out: [string, Knob][] = [
    [`${dir}/nr_hugepages`, nr],
    [`${dir}/free_hugepages`, number(() => (node === undefined ? h.free : h.freeNode[node]!))],
    [`${dir}/surplus_hugepages`, number(() => (node === undefined ? h.surplus : h.surplusNode[node]!))],
  ];
  if (node === undefined) {
    out.push([`${dir}/resv_hugepages`, number(() => h.resv)]);
    out.push([
      `${dir}/nr_overcommit_hugepages`,
      number(
        () => h.overcommit,
        (n) => {
          if (h.order > MAX_PAGE_ORDER) return neg('EINVAL'); // gigantic pages cannot be overcommitted
          h.overcommit = n;
        },
      ),
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
      numberField(t, 'useZeroPage', (n) => n <= 1),
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
      numberField(kh, 'defrag', (n) => n <= 1),
    );
    add(
      `${KH}/pages_to_scan`,
      numberField(kh, 'pages_to_scan', (n) => n > 0),
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
      add('/proc/sys/vm/nr_hugepages', this.knobs.get(`/sys/kernel/mm/hugepages/${dh.dirName}/nr_hugepages`)!);
      add('/proc/sys/vm/nr_overcommit_hugepages', this.knobs.get(`/sys/kernel/mm/hugepages/${dh.dirName}/nr_overcommit_hugepages`)!);
    }
    const sc = k.sysctl;
    add(
      '/proc/sys/vm/overcommit_memory',
      numberField(sc, 'overcommit_memory', (n) => n <= 2),
    );
    add('/proc/sys/vm/max_map_count', numberField(sc, 'max_map_count'));
    add(
      '/proc/sys/kernel/numa_balancing',
      numberField(sc, 'numa_balancing', (n) => n <= 3),
    );
    // What a credential change (setuid) makes the mm's dumpable flag (commit_creds): 0, 1 or 2.
    add(
      '/proc/sys/fs/suid_dumpable',
      numberField(sc, 'suid_dumpable', (n) => n <= 2),
    );
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
    // memtwin's switchable features for proposals Linux never merged (not Linux paths).
    add(
      '/sys/kernel/memtwin/features/memsched',
      numberField(k.memsched, 'enabled', (n) => n <= 1),
    );
    for (const name of HGM_PROPOSALS)
      add(
        `/sys/kernel/memtwin/features/${name}`,
        numberField(k.hgm.enabled, name, (n) => n <= 1),
      );
    add('/proc/sys/vm/drop_caches', { read: () => '0', write: (v) => (kstrtoul(v) !== undefined ? 0 : neg('EINVAL')) });
    add('/proc/sys/vm/compact_memory', {
      read: () => '',
      write: (v) => {
        if (kstrtoul(v) !== 1) return neg('EINVAL');
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
    return knob.write(value);
  }
}
