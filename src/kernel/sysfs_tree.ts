/**
 * Which sysfs/procfs paths exist, for the paths the simulator has no knob
 * for. The model owns a few directories: for each it knows every entry
 * Linux 6.18 lists there on this machine, modelled or not. A path that
 * walks into an owned directory and names an entry it does not have does
 * not exist (ENOENT, as open(2) answers); a file used as a directory is
 * ENOTDIR; a directory opened for writing is EISDIR. A real entry the model
 * has no knob for, or a path outside every owned directory, is what the
 * simulator cannot answer (unmodelled), never a guessed errno.
 */
import type { Kernel } from './kernel.ts';
import { HPAGE_PMD_ORDER, PAGE_SIZE } from './uapi.ts';

type Entry = 'file' | 'dir';
type Listing = Record<string, Entry>;

const files = (...names: string[]): Listing => Object.fromEntries(names.map((n) => [n, 'file' as const]));
const dirs = (...names: string[]): Listing => Object.fromEntries(names.map((n) => [n, 'dir' as const]));

/** /proc/sys/vm as this machine's 6.18 kernel lists it. */
const PROC_SYS_VM = files(
  ...'admin_reserve_kbytes compact_memory compact_unevictable_allowed compaction_proactiveness defrag_mode dirty_background_bytes dirty_background_ratio dirty_bytes dirty_expire_centisecs dirty_ratio dirty_writeback_centisecs dirtytime_expire_seconds drop_caches extfrag_threshold hugetlb_optimize_vmemmap hugetlb_shm_group laptop_mode legacy_va_layout lowmem_reserve_ratio max_map_count memfd_noexec min_free_kbytes min_slab_ratio min_unmapped_ratio mmap_min_addr mmap_rnd_bits mmap_rnd_compat_bits nr_hugepages nr_hugepages_mempolicy nr_overcommit_hugepages numa_stat numa_zonelist_order oom_dump_tasks oom_kill_allocating_task oom_kill_now overcommit_kbytes overcommit_memory overcommit_ratio page-cluster page_lock_unfairness panic_on_oom percpu_pagelist_high_fraction read_ahead_most_kb shrink_inodes_with_pagecache stat_interval stat_refresh swappiness unprivileged_userfaultfd user_reserve_kbytes vfs_cache_pressure vfs_cache_pressure_denom watermark_boost_factor watermark_scale_factor zone_reclaim_mode'.split(
    ' ',
  ),
);

/** The directories the model owns, with their entries, for this kernel's host shape. */
export function ownedDirs(k: Kernel): Map<string, Listing> {
  const out = new Map<string, Listing>();
  const THP = '/sys/kernel/mm/transparent_hugepage';
  out.set('/sys/kernel/mm', dirs('damon', 'hugepages', 'ksm', 'mempolicy', 'numa', 'swap', 'transparent_hugepage'));
  // mTHP: one directory per THP order, 1 to PMD order (8kB to 2048kB on x86-64)
  const mthp = Array.from({ length: HPAGE_PMD_ORDER }, (_, o) => `hugepages-${(PAGE_SIZE << (o + 1)) / 1024}kB`);
  out.set(THP, {
    ...files('anon_beside_full', 'defrag', 'enabled', 'hpage_pmd_size', 'shmem_enabled', 'shrink_underused', 'use_zero_page'),
    ...dirs('khugepaged', ...mthp),
  });
  // order 1 is a shmem order only (THP_ORDERS_ALL_ANON leaves out orders 0 and 1): no anonymous `enabled` there
  mthp.forEach((d, o) => out.set(`${THP}/${d}`, { ...files(...(o === 0 ? [] : ['enabled']), 'shmem_enabled'), ...dirs('stats') }));
  out.set(
    `${THP}/khugepaged`,
    files(
      'alloc_sleep_millisecs',
      'defrag',
      'full_scans',
      'max_ptes_none',
      'max_ptes_shared',
      'max_ptes_swap',
      'pages_collapsed',
      'pages_to_scan',
      'scan_sleep_millisecs',
    ),
  );
  const hs = k.hugetlb.hstates;
  const hsDirs = dirs(...hs.map((h) => h.dirName));
  out.set('/sys/kernel/mm/hugepages', hsDirs);
  const hsFiles = [
    'free_hugepages',
    'nr_hugepages',
    'nr_hugepages_mempolicy',
    'nr_overcommit_hugepages',
    'resv_hugepages',
    'surplus_hugepages',
  ];
  // demote and demote_size exist, globally and per node, where a smaller huge page size exists to demote to
  const demote = (h: (typeof hs)[number]): string[] => (hs.some((o) => o.order < h.order) ? ['demote', 'demote_size'] : []);
  for (const h of hs) out.set(`/sys/kernel/mm/hugepages/${h.dirName}`, files(...hsFiles, ...demote(h)));
  out.set('/sys/devices/system/node', {
    ...files('has_cpu', 'has_generic_initiator', 'has_memory', 'has_normal_memory', 'online', 'possible', 'uevent'),
    ...dirs('power', ...k.host.nodes.map((n) => `node${n.id}`)),
  });
  for (const n of k.host.nodes) {
    out.set(`/sys/devices/system/node/node${n.id}/hugepages`, hsDirs);
    for (const h of hs)
      out.set(
        `/sys/devices/system/node/node${n.id}/hugepages/${h.dirName}`,
        files('free_hugepages', 'nr_hugepages', 'surplus_hugepages', ...demote(h)),
      );
  }
  out.set('/sys/kernel/mm/swap', files('vma_ra_enabled'));
  out.set('/proc/sys/vm', PROC_SYS_VM);
  return out;
}

export type PathLookup = { exists: true; dir: boolean } | { exists: false; errno: 'ENOENT' | 'ENOTDIR' } | { unmodelled: true };

/**
 * What open(2) of `path` meets, as far as the owned directories tell: an
 * existing file or directory, a missing entry (ENOENT, or ENOTDIR past a
 * file), or unmodelled (outside them, or inside an entry the model does not
 * own). memtwin's own /sys/kernel/memtwin/features is owned too: its entries
 * are the features `modelled` knows.
 */
export function lookupPath(k: Kernel, path: string, modelled: (p: string) => boolean): PathLookup {
  if (!path.startsWith('/')) return { unmodelled: true };
  const parts = path.split('/').filter((c) => c !== '' && c !== '.');
  if (parts.includes('..')) return { unmodelled: true };
  const owned = ownedDirs(k);
  let dir = '';
  for (let j = 0; j < parts.length; j++) {
    const listing = owned.get(dir || '/');
    const name = parts[j]!;
    const next = `${dir}/${name}`;
    const last = j === parts.length - 1;
    if (listing === undefined) {
      // memtwin's feature switches: the directory holds exactly the modelled features
      if (dir === '/sys/kernel/memtwin/features')
        return modelled(next) && last ? { exists: true, dir: false } : { exists: false, errno: 'ENOENT' };
      dir = next;
      continue;
    }
    const e = listing[name];
    if (e === undefined) return { exists: false, errno: 'ENOENT' };
    if (e === 'file') return last ? { exists: true, dir: false } : { exists: false, errno: 'ENOTDIR' };
    if (last) return { exists: true, dir: true };
    dir = next;
  }
  return { unmodelled: true };
}
