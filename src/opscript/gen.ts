/**
 * Random op-scripts for differential testing (fast-check arbitraries).
 *
 * Every script first reserves a 4M-aligned 16 MiB arena and then works only
 * inside it with MAP_FIXED mappings and arena-relative addresses, so where
 * the real kernel's ASLR puts things never matters (4M, not just 2M: an
 * interleave policy places a page or THP by its absolute index, vm_pgoff,
 * so on two nodes the first node depends on the arena's 4M alignment). The THP mode is set
 * explicitly, the 2M hugetlb pool is pinned to a small size, and khugepaged is slowed to a crawl (max_ptes_none 0,
 * pages_to_scan 1): its passes on the real kernel are timed by the whole
 * machine's history, so scripts must not depend on them (the simulator's
 * khugepaged does not run within a script's few milliseconds of virtual time).
 * MADV_COLLAPSE, synchronous, is among the advice, on its own and through
 * process_madvise. A userfaultfd with UFFD_FEATURE_SIGBUS registers, copies
 * into and unregisters random ranges of the arena.
 */
import fc from 'fast-check';
import { MPOL_MODE_NAMES } from '../kernel/uapi.ts';

export const ARENA = 16 * 1024 * 1024;
const PAGES = ARENA / 4096;

const RW = ['PROT_READ', 'PROT_WRITE'];
const prot = fc.constantFrom(['PROT_NONE'], ['PROT_READ'], RW, RW, RW);
/** Page offsets in the arena, often on a 2M boundary. */
const pageOff = fc.oneof(
  fc.integer({ min: 0, max: PAGES - 1 }),
  fc.integer({ min: 0, max: PAGES / 512 - 1 }).map((x) => x * 512),
);
const pageLen = fc.oneof(
  fc.integer({ min: 1, max: 1024 }),
  fc.integer({ min: 1, max: 4 }).map((x) => x * 512),
);

const at = (page: number): string => (page ? `$r+0x${(page * 4096).toString(16)}` : '$r');
const clip = (page: number, len: number): number => Math.max(1, Math.min(len, PAGES - page));
const sz = (pages: number): string => `${pages * 4}K`;

type OpJson = Record<string, unknown>;

const ranged = <T extends OpJson>(f: (addr: string, len: string, page: number, pages: number) => T) =>
  fc.tuple(pageOff, pageLen).map(([p, l]) => f(at(p), sz(clip(p, l)), p, clip(p, l)));

/** hugetlb mappings: 2M-aligned inside the arena, whole huge pages, private or shared, sometimes MAP_NORESERVE. */
const hugeMmap = fc
  .tuple(fc.integer({ min: 0, max: PAGES / 512 - 1 }), fc.integer({ min: 1, max: 3 }), fc.boolean(), fc.boolean())
  .map(([pmd, n, shared, noreserve]) => ({
    op: 'mmap',
    len: `${Math.min(n, PAGES / 512 - pmd) * 2}M`,
    prot: RW,
    flags: [
      shared ? 'MAP_SHARED' : 'MAP_PRIVATE',
      'MAP_ANONYMOUS',
      'MAP_FIXED',
      'MAP_HUGETLB',
      'MAP_HUGE_2MB',
      ...(noreserve ? ['MAP_NORESERVE'] : []),
    ],
    addr: at(pmd * 512),
  }));

/** NUMA ops: on a one-node machine they check errnos, policies reported back, and statuses. */
const modeArb = fc.constantFrom(...MPOL_MODE_NAMES);
const nodesArb = fc.constantFrom([], [0], [0, 1], [1], [3], null); // null: a NULL nodemask
const numaOp: fc.Arbitrary<OpJson> = fc.oneof(
  fc
    .tuple(modeArb, nodesArb, fc.constantFrom([], ['MPOL_F_STATIC_NODES'], ['MPOL_F_RELATIVE_NODES'], ['MPOL_F_NUMA_BALANCING']))
    .map(([mode, nodes, flags]) => ({
      op: 'set_mempolicy',
      mode,
      nodes,
      flags,
    })),
  fc
    .tuple(pageOff, fc.constantFrom([], ['MPOL_F_ADDR'], ['MPOL_F_NODE', 'MPOL_F_ADDR'], ['MPOL_F_MEMS_ALLOWED']))
    .map(([pg, flags]) =>
      (flags as readonly string[]).includes('MPOL_F_ADDR') ? { op: 'get_mempolicy', addr: at(pg), flags } : { op: 'get_mempolicy', flags },
    ),
  fc
    .tuple(
      pageOff,
      pageLen,
      modeArb,
      nodesArb,
      fc.constantFrom([], ['MPOL_MF_STRICT'], ['MPOL_MF_MOVE'], ['MPOL_MF_MOVE', 'MPOL_MF_STRICT'], ['MPOL_MF_MOVE_ALL']),
    )
    .map(([pg, l, mode, nodes, flags]) => ({ op: 'mbind', addr: at(pg), len: sz(clip(pg, l)), mode, nodes, flags })),
  fc.tuple(fc.array(pageOff, { minLength: 1, maxLength: 6 }), fc.boolean()).map(([pgs, query]) => ({
    op: 'move_pages',
    target: 'self',
    pages: pgs.map(at),
    nodes: query ? null : pgs.map(() => 0),
    flags: ['MPOL_MF_MOVE'],
  })),
  fc.constantFrom(
    { op: 'migrate_pages', target: 'self', old_nodes: [0], new_nodes: [0] },
    { op: 'migrate_pages', target: 'self', old_nodes: [0], new_nodes: [1] },
  ),
);

const opArb: fc.Arbitrary<OpJson> = fc.oneof(
  { weight: 2, arbitrary: numaOp },
  { weight: 1, arbitrary: hugeMmap },
  { weight: 1, arbitrary: fc.constant({ op: 'meminfo' }) },
  {
    weight: 1,
    arbitrary: fc.tuple(pageOff, pageLen).map(([p, l]) => ({
      op: 'mmap',
      len: sz(clip(p, l)),
      prot: RW,
      flags: ['MAP_PRIVATE', 'MAP_ANONYMOUS', 'MAP_FIXED', 'MAP_POPULATE'],
      addr: at(p),
    })),
  },
  {
    weight: 3,
    arbitrary: fc.tuple(pageOff, pageLen, prot, fc.boolean()).map(([p, l, pr, shared]) => ({
      op: 'mmap',
      len: sz(clip(p, l)),
      prot: pr,
      flags: [shared ? 'MAP_SHARED' : 'MAP_PRIVATE', 'MAP_ANONYMOUS', 'MAP_FIXED'],
      addr: at(p),
    })),
  },
  { weight: 2, arbitrary: ranged((addr, len) => ({ op: 'munmap', addr, len })) },
  {
    weight: 2,
    arbitrary: fc.tuple(pageOff, pageLen, prot).map(([p, l, pr]) => ({ op: 'mprotect', addr: at(p), len: sz(clip(p, l)), prot: pr })),
  },
  {
    weight: 4,
    arbitrary: fc
      .tuple(
        pageOff,
        pageLen,
        fc.constantFrom(
          'MADV_DONTNEED',
          'MADV_FREE',
          'MADV_HUGEPAGE',
          'MADV_HUGEPAGE',
          'MADV_NOHUGEPAGE',
          'MADV_POPULATE_READ',
          'MADV_POPULATE_WRITE',
          'MADV_WILLNEED',
          'MADV_COLD',
          'MADV_REMOVE',
          'MADV_DONTFORK',
          'MADV_RANDOM',
          'MADV_NORMAL',
          'MADV_PAGEOUT',
          'MADV_WIPEONFORK',
          'MADV_DONTDUMP',
          'MADV_COLLAPSE',
          'MADV_COLLAPSE',
        ),
      )
      .map(([p, l, advice]) => ({ op: 'madvise', addr: at(p), len: sz(clip(p, l)), advice })),
  },
  {
    weight: 5,
    arbitrary: fc
      .tuple(pageOff, pageLen, fc.boolean(), fc.integer({ min: 1, max: 255 }), fc.constantFrom('4K', '4K', '64K', '2M'))
      .map(([p, l, write, fill, stride]) => ({ op: 'touch', addr: at(p), len: sz(clip(p, l)), write, fill, stride })),
  },
  {
    weight: 1,
    arbitrary: fc.array(fc.tuple(pageOff, pageLen), { minLength: 1, maxLength: 3 }).map((iov) => ({
      op: 'process_madvise',
      target: 'self',
      iovec: iov.map(([p, l]) => [at(p), sz(clip(p, l))]),
      advice: 'MADV_COLLAPSE',
      flags: 0,
    })),
  },
  // userfaultfd on the arena. The script's uffd has UFFD_FEATURE_SIGBUS: a missing fault in a registered
  // range is a SIGBUS, never a blocked thread, so every other op stays synchronous on both backends.
  {
    weight: 2,
    arbitrary: ranged((addr, len) => ({ op: 'uffdio_register', fd: '$u', addr, len, mode: ['UFFDIO_REGISTER_MODE_MISSING'] })),
  },
  { weight: 1, arbitrary: ranged((addr, len) => ({ op: 'uffdio_unregister', fd: '$u', addr, len })) },
  {
    weight: 2,
    arbitrary: fc
      .tuple(pageOff, fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 255 }), fc.boolean())
      .map(([p, n, fill, dontwake]) => ({
        op: 'uffdio_copy',
        fd: '$u',
        dst: at(p),
        len: sz(clip(p, n)),
        fill,
        mode: dontwake ? ['UFFDIO_COPY_MODE_DONTWAKE'] : [],
      })),
  },
  { weight: 1, arbitrary: ranged((addr) => ({ op: 'uffdio_zeropage', fd: '$u', addr, len: '4K' })) },
  { weight: 1, arbitrary: ranged((addr, len) => ({ op: 'uffdio_wake', fd: '$u', addr, len })) },
  {
    weight: 1,
    arbitrary: fc.tuple(pageOff, pageOff, fc.integer({ min: 1, max: 4 }), fc.boolean()).map(([d, src, n, holes]) => ({
      op: 'uffdio_move',
      fd: '$u',
      dst: at(d),
      src: at(src),
      len: sz(Math.min(clip(d, n), clip(src, n))),
      mode: holes ? ['UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES'] : [],
    })),
  },
  { weight: 2, arbitrary: ranged((addr, len) => ({ op: 'peek', addr, len })) },
  { weight: 2, arbitrary: ranged((addr, len) => ({ op: 'pagemap', addr, len })) },
  { weight: 1, arbitrary: pageOff.map((p) => ({ op: 'smaps', addr: at(p) })) },
  { weight: 1, arbitrary: pageOff.map((p) => ({ op: 'numa_maps', addr: at(p) })) },
  {
    weight: 1,
    arbitrary: fc.constant({ op: 'vmstat', keys: ['thp_fault_alloc', 'thp_split_pmd', 'thp_fault_fallback', 'thp_collapse_alloc'] }),
  },
);

const THP = '/sys/kernel/mm/transparent_hugepage';

/** A whole random script, as JSON Lines text. */
export const scriptArb: fc.Arbitrary<string> = fc
  .tuple(
    fc.constantFrom('always', 'madvise', 'madvise', 'never'),
    fc.integer({ min: 0, max: 6 }),
    fc.constantFrom('always', 'defer', 'madvise', 'never'),
    fc.array(opArb, { minLength: 1, maxLength: 25 }),
  )
  .map(
    ([enabled, pool, defrag, ops]) =>
      [
        { op: 'hugetlb_pool', size: '2M', nr: pool },
        { op: 'sysfs', path: `${THP}/enabled`, value: enabled },
        { op: 'sysfs', path: `${THP}/defrag`, value: defrag },
        { op: 'sysfs', path: `${THP}/khugepaged/max_ptes_none`, value: '0' },
        { op: 'sysfs', path: `${THP}/khugepaged/pages_to_scan`, value: '1' },
        { op: 'mmap', len: '16M', prot: RW, flags: ['MAP_PRIVATE', 'MAP_ANONYMOUS'], align: '4M', name: 'r' },
        { op: 'userfaultfd', flags: ['O_CLOEXEC', 'O_NONBLOCK'], name: 'u' },
        { op: 'uffdio_api', fd: '$u', features: ['UFFD_FEATURE_SIGBUS'] },
        ...ops,
      ]
        .map((o) => JSON.stringify(o))
        .join('\n') + '\n',
  );

/** The op name of each line of a script (for per-op statistics). */
export function opsOf(text: string): string[] {
  return text
    .trim()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => (JSON.parse(l) as { op: string }).op);
}

/**
 * Random postcopy-like scripts: a userfaultfd without UFFD_FEATURE_SIGBUS
 * registers 1 MiB of anonymous memory or 8 MiB of 2M hugetlb pages
 * (MISSING). Each round another thread touches a page and blocks in its
 * userfault; the main thread reads the fault and resolves it one of several
 * ways (a copy of that page, a copy of a range around it that may stop at a
 * page filled before, a zeropage, a copy with DONTWAKE and a wake, or
 * unregistering everything and registering again); then a copy and a wake
 * of the touched page (harmless if already filled) guarantee the join
 * succeeds. At the end everything is unregistered and inspected.
 */
const POSTCOPY_LEN = { anon: 1 << 20, hugetlb: 8 << 20 };
const round = fc.record({
  thread: fc.constantFrom('t1', 't2'),
  page: fc.nat(2047),
  write: fc.boolean(),
  fill: fc.integer({ min: 1, max: 255 }),
  how: fc.constantFrom('copy', 'range', 'zeropage', 'dontwake', 'reregister'),
  before: fc.nat(3),
  after: fc.nat(3),
});

export const postcopyScriptArb: fc.Arbitrary<string> = fc
  .tuple(fc.constantFrom<'anon' | 'hugetlb'>('anon', 'hugetlb'), fc.array(round, { minLength: 1, maxLength: 10 }))
  .map(([kind, rounds]) => {
    const len = POSTCOPY_LEN[kind];
    const unit = kind === 'hugetlb' ? 2 << 20 : 4096;
    const units = len / unit;
    const addr = (off: number): string => (off ? `$g+0x${off.toString(16)}` : '$g');
    const size = (n: number): string => `${(n * unit) / 1024}K`;
    const ops: OpJson[] = [
      { op: 'hugetlb_pool', size: '2M', nr: kind === 'hugetlb' ? units : 0 },
      {
        op: 'mmap',
        len: `${len / 1024}K`,
        prot: RW,
        flags: kind === 'hugetlb' ? ['MAP_PRIVATE', 'MAP_ANONYMOUS', 'MAP_HUGETLB', 'MAP_HUGE_2MB'] : ['MAP_PRIVATE', 'MAP_ANONYMOUS'],
        name: 'g',
      },
      { op: 'userfaultfd', flags: ['O_CLOEXEC', 'O_NONBLOCK'], name: 'u' },
      { op: 'uffdio_api', fd: '$u', features: kind === 'hugetlb' ? ['UFFD_FEATURE_MISSING_HUGETLBFS'] : [] },
      { op: 'uffdio_register', fd: '$u', addr: '$g', len: `${len / 1024}K`, mode: ['UFFDIO_REGISTER_MODE_MISSING'] },
      { op: 'thread', name: 't1' },
      { op: 'thread', name: 't2' },
    ];
    for (const r of rounds) {
      const u = Math.floor((r.page * 4096) / unit) % units; // the unit (4K page or huge page) touched
      const touchAt = kind === 'hugetlb' ? u * unit + ((r.page * 4096) % unit) : u * unit;
      ops.push({ op: 'touch', thread: r.thread, addr: addr(touchAt), len: '1', write: r.write, fill: r.fill, async: true });
      ops.push({ op: 'uffd_read', fd: '$u', timeout_ms: 200 });
      const first = Math.max(0, u - r.before);
      const n = Math.min(units - first, u - first + 1 + r.after);
      switch (r.how) {
        case 'copy':
          ops.push({ op: 'uffdio_copy', fd: '$u', dst: addr(u * unit), len: size(1), fill: r.fill });
          break;
        case 'range':
          ops.push({ op: 'uffdio_copy', fd: '$u', dst: addr(first * unit), len: size(n), fill: r.fill });
          break;
        case 'zeropage':
          ops.push({ op: 'uffdio_zeropage', fd: '$u', addr: addr(u * unit), len: size(1) });
          break;
        case 'dontwake':
          ops.push({ op: 'uffdio_copy', fd: '$u', dst: addr(u * unit), len: size(1), fill: r.fill, mode: ['UFFDIO_COPY_MODE_DONTWAKE'] });
          ops.push({ op: 'join', thread: r.thread, timeout_ms: 50 });
          break;
        case 'reregister':
          ops.push({ op: 'uffdio_unregister', fd: '$u', addr: '$g', len: `${len / 1024}K` });
          ops.push({ op: 'join', thread: r.thread, timeout_ms: 1000 });
          ops.push({ op: 'uffdio_register', fd: '$u', addr: '$g', len: `${len / 1024}K`, mode: ['UFFDIO_REGISTER_MODE_MISSING'] });
          break;
      }
      ops.push({ op: 'uffdio_copy', fd: '$u', dst: addr(u * unit), len: size(1), fill: r.fill });
      ops.push({ op: 'uffdio_wake', fd: '$u', addr: addr(u * unit), len: size(1) });
      ops.push({ op: 'join', thread: r.thread, timeout_ms: 1000 });
    }
    ops.push({ op: 'uffdio_unregister', fd: '$u', addr: '$g', len: `${len / 1024}K` });
    ops.push({ op: 'pagemap', addr: '$g', len: `${len / 1024}K` });
    ops.push({ op: 'peek', addr: '$g', len: `${len / 1024}K` });
    if (kind === 'hugetlb')
      ops.push({ op: 'meminfo' }, { op: 'munmap', addr: '$g', len: `${len / 1024}K` }, { op: 'hugetlb_pool', size: '2M', nr: 0 });
    return ops.map((o) => JSON.stringify(o)).join('\n') + '\n';
  });

/**
 * Random memory-pressure scripts (`npm run difftest -- --kind pressure`),
 * of two kinds:
 *
 * - swap: a swap area, then the 16 MiB arena of scriptArb's kind written
 *   with fills and pushed out with MADV_PAGEOUT over random ranges, read
 *   back with touch and peek (swap-in keeps the contents), zapped with
 *   MADV_DONTNEED or MADV_FREE, and observed with pagemap (its `swapped`
 *   runs), smaps and peek; THP mode random, so large folios go to swap
 *   whole or split, as Linux decides.
 * - oom: THP off; a spawned process in a memory cgroup without swap (memory_max
 *   8M to 32M, swap_max 0) touches distinct 1 MiB chunks of its 64 MiB
 *   mapping, DONTNEEDs some, and is looked at (peek, pagemap, cgroup_stat),
 *   always at least 3 MiB below the limit: the kernel also charges the
 *   process's page tables and the executor's own heap and stacks, which the
 *   simulator does not model, so only a clear excess is compared. Then,
 *   half the time, one touch of the whole mapping goes far over the limit:
 *   the OOM killer kills the process (that touch answers signal SIGKILL,
 *   every later op in it killed, events {oom 1, oom_kill 1}) while another
 *   process outside the group goes on.
 * - memcg-swap: THP off, a swap area, and a spawned process in a memory
 *   cgroup (memory_max 8M or 16M, swap unlimited) writing 1 MiB chunks of
 *   its 32 MiB mapping with fills, up to twice its limit and more: charges
 *   over the limit reclaim the group's coldest pages into swap, and every
 *   read (peek) gives back what was written; no oom event. Which pages are
 *   in swap at a given moment is not compared (no pagemap): the real
 *   group also holds the executor's own pages.
 */
const CHUNK = 1 << 20;
const pressureSwapArb: fc.Arbitrary<OpJson[]> = fc
  .tuple(
    fc.constantFrom('always', 'madvise', 'never'),
    fc.constantFrom('32M', '64M'),
    fc.array(
      fc.oneof(
        {
          weight: 4,
          arbitrary: fc
            .tuple(pageOff, pageLen, fc.integer({ min: 1, max: 255 }))
            .map(([p, l, fill]) => ({ op: 'touch', addr: at(p), len: sz(clip(p, l)), write: true, fill })),
        },
        { weight: 4, arbitrary: ranged((addr, len) => ({ op: 'madvise', addr, len, advice: 'MADV_PAGEOUT' })) },
        { weight: 1, arbitrary: ranged((addr, len) => ({ op: 'madvise', addr, len, advice: 'MADV_COLD' })) },
        { weight: 1, arbitrary: ranged((addr, len) => ({ op: 'madvise', addr, len, advice: 'MADV_DONTNEED' })) },
        { weight: 1, arbitrary: ranged((addr, len) => ({ op: 'madvise', addr, len, advice: 'MADV_FREE' })) },
        { weight: 1, arbitrary: ranged((addr, len) => ({ op: 'madvise', addr, len, advice: 'MADV_HUGEPAGE' })) },
        { weight: 2, arbitrary: ranged((addr, len) => ({ op: 'touch', addr, len, write: false })) },
        { weight: 3, arbitrary: ranged((addr, len) => ({ op: 'peek', addr, len })) },
        { weight: 3, arbitrary: ranged((addr, len) => ({ op: 'pagemap', addr, len })) },
        { weight: 1, arbitrary: pageOff.map((p) => ({ op: 'smaps', addr: at(p) })) },
      ),
      { minLength: 1, maxLength: 25 },
    ),
  )
  .map(([enabled, size, ops]) => [
    { op: 'sysfs', path: `${THP}/enabled`, value: enabled },
    { op: 'sysfs', path: `${THP}/defrag`, value: 'madvise' },
    { op: 'sysfs', path: `${THP}/khugepaged/max_ptes_none`, value: '0' },
    { op: 'sysfs', path: `${THP}/khugepaged/pages_to_scan`, value: '1' },
    { op: 'swap', size },
    { op: 'mmap', len: '16M', prot: RW, flags: ['MAP_PRIVATE', 'MAP_ANONYMOUS'], align: '4M', name: 'r' },
    ...ops,
    { op: 'pagemap', addr: '$r', len: '16M' },
    { op: 'peek', addr: '$r', len: '16M' },
  ]);

const pressureOomArb: fc.Arbitrary<OpJson[]> = fc
  .tuple(
    fc.constantFrom(8, 16, 32),
    fc.array(
      fc.record({
        what: fc.constantFrom('touch', 'touch', 'touch', 'dontneed', 'peek', 'pagemap', 'stat', 'other'),
        chunk: fc.nat(63),
        fill: fc.integer({ min: 1, max: 255 }),
      }),
      { minLength: 1, maxLength: 30 },
    ),
    fc.boolean(),
    fc.array(fc.constantFrom('touch', 'peek', 'pagemap', 'stat', 'other', 'mmap'), { maxLength: 4 }),
  )
  .map(([limitMiB, steps, oom, after]) => {
    const chunkAt = (c: number): string => (c ? `$h+0x${(c * CHUNK).toString(16)}` : '$h');
    const ops: OpJson[] = [
      // no THP: a 1 MiB touch charges 1 MiB (a THP fault would charge 2M, or fall back when the charge fails)
      { op: 'sysfs', path: `${THP}/enabled`, value: 'never' },
      { op: 'spawn', name: 'p' },
      { op: 'spawn', name: 'q' },
      { op: 'cgroup', name: 'g', memory_max: `${limitMiB}M`, swap_max: 0 },
      { op: 'cgroup_enter', name: 'g', in: 'p' },
      { op: 'mmap', len: '64M', prot: RW, flags: ['MAP_PRIVATE', 'MAP_ANONYMOUS'], name: 'h', in: 'p' },
      { op: 'mmap', len: '4M', prot: RW, flags: ['MAP_PRIVATE', 'MAP_ANONYMOUS'], name: 'o', in: 'q' },
    ];
    const resident = new Set<number>();
    for (const s of steps) {
      switch (s.what) {
        case 'touch':
          // 3 MiB of margin below the limit (page tables, the executor's own pages)
          if (!resident.has(s.chunk) && resident.size + 1 > limitMiB - 3) break;
          resident.add(s.chunk);
          ops.push({ op: 'touch', addr: chunkAt(s.chunk), len: '1M', write: true, fill: s.fill, in: 'p' });
          break;
        case 'dontneed':
          resident.delete(s.chunk);
          ops.push({ op: 'madvise', addr: chunkAt(s.chunk), len: '1M', advice: 'MADV_DONTNEED', in: 'p' });
          break;
        case 'peek':
          // a read of untouched memory maps the zero page: no charge
          ops.push({ op: 'peek', addr: chunkAt(s.chunk), len: '1M', in: 'p' });
          break;
        case 'pagemap':
          ops.push({ op: 'pagemap', addr: '$h', len: '64M', in: 'p' });
          break;
        case 'stat':
          ops.push({ op: 'cgroup_stat', name: 'g' });
          break;
        case 'other':
          ops.push({ op: 'touch', addr: '$o', len: '4M', write: true, fill: s.fill, in: 'q' });
          break;
      }
    }
    if (oom) ops.push({ op: 'touch', addr: '$h', len: '64M', write: true, fill: 7, in: 'p' });
    for (const [k, w] of after.entries()) {
      if (w === 'touch') ops.push({ op: 'touch', addr: '$h', len: '4K', write: true, in: 'p' });
      else if (w === 'peek') ops.push({ op: 'peek', addr: '$h', len: '64K', in: 'p' });
      else if (w === 'pagemap') ops.push({ op: 'pagemap', addr: '$h', len: '64M', in: 'p' });
      else if (w === 'mmap') ops.push({ op: 'mmap', len: '4K', prot: RW, flags: ['MAP_PRIVATE', 'MAP_ANONYMOUS'], name: `a${k}`, in: 'p' });
      else if (w === 'other') ops.push({ op: 'peek', addr: '$o', len: '4M', in: 'q' });
      else ops.push({ op: 'cgroup_stat', name: 'g' });
    }
    ops.push({ op: 'cgroup_stat', name: 'g' }, { op: 'peek', addr: '$o', len: '4M', in: 'q' });
    return ops;
  });

const pressureMemcgSwapArb: fc.Arbitrary<OpJson[]> = fc
  .tuple(
    fc.constantFrom(8, 16),
    fc.array(
      fc.record({
        what: fc.constantFrom('touch', 'touch', 'touch', 'read', 'peek', 'dontneed', 'stat'),
        chunk: fc.nat(31),
        fill: fc.integer({ min: 1, max: 255 }),
      }),
      { minLength: 1, maxLength: 40 },
    ),
  )
  .map(([limitMiB, steps]) => {
    const chunkAt = (c: number): string => (c ? `$m+0x${(c * CHUNK).toString(16)}` : '$m');
    const ops: OpJson[] = [
      { op: 'sysfs', path: `${THP}/enabled`, value: 'never' },
      { op: 'swap', size: '64M' },
      { op: 'spawn', name: 'p' },
      { op: 'cgroup', name: 'g', memory_max: `${limitMiB}M` },
      { op: 'cgroup_enter', name: 'g', in: 'p' },
      { op: 'mmap', len: '32M', prot: RW, flags: ['MAP_PRIVATE', 'MAP_ANONYMOUS'], name: 'm', in: 'p' },
    ];
    for (const s of steps) {
      const addr = chunkAt(s.chunk);
      if (s.what === 'touch') ops.push({ op: 'touch', addr, len: '1M', write: true, fill: s.fill, in: 'p' });
      else if (s.what === 'read') ops.push({ op: 'touch', addr, len: '1M', write: false, in: 'p' });
      else if (s.what === 'peek') ops.push({ op: 'peek', addr, len: '1M', in: 'p' });
      else if (s.what === 'dontneed') ops.push({ op: 'madvise', addr, len: '1M', advice: 'MADV_DONTNEED', in: 'p' });
      else ops.push({ op: 'cgroup_stat', name: 'g' });
    }
    ops.push({ op: 'peek', addr: '$m', len: '32M', in: 'p' }, { op: 'cgroup_stat', name: 'g' });
    return ops;
  });

export const pressureScriptArb: fc.Arbitrary<string> = fc
  .oneof(pressureSwapArb, pressureOomArb, pressureMemcgSwapArb)
  .map((ops) => ops.map((o) => JSON.stringify(o)).join('\n') + '\n');
