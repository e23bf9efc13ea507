import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { smallKernel, RW, ANON, SHARED_ANON } from '../testing/fixtures.ts';
import { verifyKernel } from './debug_vm.ts';
import { pagemap } from './procfs.ts';
import { sysSwapon } from './swapfile.ts';
import { exitProcess, sysFork } from './fork.ts';
import { followPage } from './memory.ts';
import { PG } from './page.ts';
import { MADV, MPOL, PAGE_SIZE, PMD_SIZE } from './uapi.ts';
import { sysMovePages } from './migrate.ts';
import { sysMbind } from './mempolicy.ts';
import { PTE_ZERO, PteTable, pfnOfPte, type MmStruct } from './mm_types.ts';
import type { Kernel } from './kernel.ts';
import type { Process } from './sched.ts';

const MiB = 1 << 20;

function setup(opts: { swap?: boolean; thp?: string } = {}): { k: Kernel; p: Process } {
  const k = smallKernel({ nodes: 1, mib: 64 });
  k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', opts.thp ?? 'never');
  if (opts.swap) expect(sysSwapon(k, { path: '/swapfile', size: 16 * MiB, kind: 'file', prio: 32767 })).toBe(0);
  return { k, p: k.createProcess('parent') };
}

function fork(k: Kernel, p: Process, name = 'child'): Process {
  const c = sysFork(k, p.mainThread, name);
  if (typeof c === 'number') throw new Error(`fork failed: ${c}`);
  return c;
}

/** First byte of each page of [a, a + n pages). */
function peek(k: Kernel, p: Process, a: number, n: number): number[] {
  const out: number[] = [];
  const r = k.access(p.mainThread, a, n * PAGE_SIZE, PAGE_SIZE, false, 0, (_va, b) => out.push(b));
  expect(r.signal).toBeUndefined();
  return out;
}

function write(k: Kernel, p: Process, a: number, n: number, fill: number): void {
  const r = k.access(p.mainThread, a, n * PAGE_SIZE, PAGE_SIZE, true, fill);
  expect(r.signal).toBeUndefined();
}

/** MM_ANONPAGES as the page tables say: present PTEs of anonymous pages plus 512 per PMD-mapped THP. */
function anonPtes(k: Kernel, mm: MmStruct): number {
  let n = 0;
  for (const e of mm.pgtable.pmds.values()) {
    if (e instanceof PteTable) {
      for (const pte of e.ptes) if (pte > 0 && k.mem.flags(pfnOfPte(pte)) & PG.anon) n++;
    } else if (!e.isZero && !(k.mem.flags(e.pfn) & PG.hugetlb)) n += 512;
  }
  return n;
}

describe('fork with copy-on-write (fork.ts, do_wp_page in memory.ts)', () => {
  it('shares every present page, copies on the first write on either side, reuses a page left to one process', () => {
    const { k, p } = setup();
    const a = k.mmap(p, 0, 16 * PAGE_SIZE, RW, ANON);
    write(k, p, a, 8, 7);
    peek(k, p, a + 8 * PAGE_SIZE, 4); // zero-page PTEs
    const c = fork(k, p);
    const frames = Array.from({ length: 8 }, (_, i) => followPage(p.mm, a + i * PAGE_SIZE));
    expect(Array.from({ length: 8 }, (_, i) => followPage(c.mm, a + i * PAGE_SIZE))).toEqual(frames);
    expect(pagemap(k, c.mm, a, 16 * PAGE_SIZE)).toEqual([
      { n: 8, present: true, node: 0, size: '4K', shared: true },
      { n: 4, present: true, node: null, size: '4K' },
      { n: 4, present: false, node: null, size: null },
    ]);
    for (const f of frames) expect(k.mem.flags(f) & PG.anonExclusive).toBe(0);
    expect(c.mm.rssAnon).toBe(8);
    expect(verifyKernel(k)).toEqual([]);

    write(k, c, a, 2, 9); // wp_page_copy in the child
    expect(followPage(c.mm, a)).not.toBe(frames[0]);
    expect(followPage(p.mm, a)).toBe(frames[0]);
    expect(k.mem.mapcount(frames[0]!)).toBe(1);
    expect(peek(k, c, a, 4)).toEqual([9, 9, 7, 7]);
    expect(peek(k, p, a, 4)).toEqual([7, 7, 7, 7]);
    // The parent's page is its alone now: a write reuses it (wp_page_reuse), no new frame.
    write(k, p, a, 1, 3);
    expect(followPage(p.mm, a)).toBe(frames[0]);
    expect(k.mem.flags(frames[0]!) & PG.anonExclusive).toBeTruthy();
    // A write to a zero-page PTE in the child allocates there only.
    write(k, c, a + 8 * PAGE_SIZE, 1, 5);
    expect(peek(k, p, a + 8 * PAGE_SIZE, 1)).toEqual([0]);
    expect(p.mm.rssAnon).toBe(anonPtes(k, p.mm));
    expect(c.mm.rssAnon).toBe(anonPtes(k, c.mm));
    expect(verifyKernel(k)).toEqual([]);

    // The child exits: its copies are freed, the shared pages are the parent's alone again.
    const free = k.phys.freePages();
    exitProcess(k, c);
    expect(k.phys.freePages()).toBeGreaterThan(free);
    expect(pagemap(k, p.mm, a, 8 * PAGE_SIZE)).toEqual([{ n: 8, present: true, node: 0, size: '4K' }]);
    expect(verifyKernel(k)).toEqual([]);
  });

  it('MADV_DONTFORK leaves the VMA out of the child, MADV_WIPEONFORK gives it empty, MAP_SHARED stays shared', () => {
    const { k, p } = setup();
    const d = k.mmap(p, 0, 4 * PAGE_SIZE, RW, ANON);
    const w = k.mmap(p, 0, 4 * PAGE_SIZE, RW, ANON);
    const s = k.mmap(p, 0, 4 * PAGE_SIZE, RW, SHARED_ANON);
    for (const x of [d, w, s]) write(k, p, x, 4, 6);
    expect(k.madvise(p, d, 4 * PAGE_SIZE, MADV.MADV_DONTFORK)).toBe(0);
    expect(k.madvise(p, w, 4 * PAGE_SIZE, MADV.MADV_WIPEONFORK)).toBe(0);
    const c = fork(k, p);
    expect(c.mm.vmaAt(d)).toBeUndefined();
    expect(peek(k, c, w, 4)).toEqual([0, 0, 0, 0]);
    write(k, c, s, 1, 8);
    expect(peek(k, p, s, 2)).toEqual([8, 6]);
    expect(verifyKernel(k)).toEqual([]);
  });

  it('a PMD-mapped THP is shared whole; a write splits the writer PMD and copies one 4K page', () => {
    const { k, p } = setup({ thp: 'always' });
    const a = k.mmap(p, 0, 4 * MiB, RW, ANON);
    const t = a + ((PMD_SIZE - (a % PMD_SIZE)) % PMD_SIZE);
    write(k, p, t, 512, 4);
    const head = followPage(p.mm, t);
    expect(k.mem.flags(head) & PG.head).toBeTruthy();
    const c = fork(k, p);
    expect(k.mem.entireMapcount(head)).toBe(2);
    write(k, c, t + PAGE_SIZE, 1, 5);
    expect(c.mm.pgtable.pmds.get(t / PMD_SIZE)).toBeInstanceOf(PteTable);
    expect(followPage(p.mm, t + PAGE_SIZE)).toBe(head + 1);
    expect(followPage(c.mm, t + PAGE_SIZE)).not.toBe(head + 1);
    expect(followPage(c.mm, t + 2 * PAGE_SIZE)).toBe(head + 2);
    expect(peek(k, c, t, 3)).toEqual([4, 5, 4]);
    expect(peek(k, p, t, 3)).toEqual([4, 4, 4]);
    expect(c.mm.rssAnon).toBe(anonPtes(k, c.mm));
    expect(verifyKernel(k)).toEqual([]);
  });

  it('swap: the child holds the swap entries too; reclaim unmaps a page from both processes', () => {
    const { k, p } = setup({ swap: true });
    const a = k.mmap(p, 0, 8 * PAGE_SIZE, RW, ANON);
    write(k, p, a, 8, 11);
    expect(k.madvise(p, a, 4 * PAGE_SIZE, MADV.MADV_PAGEOUT)).toBe(0);
    const c = fork(k, p);
    expect(c.mm.swapents).toBe(4);
    expect(verifyKernel(k)).toEqual([]);
    // A read in the child maps the swap-cache page not exclusive (the parent's PTE still holds the entry); a write copies.
    expect(peek(k, c, a, 1)).toEqual([11]);
    const shared = followPage(c.mm, a);
    expect(k.mem.flags(shared) & PG.anonExclusive).toBe(0);
    write(k, c, a, 1, 12);
    expect(followPage(c.mm, a)).not.toBe(shared);
    expect(peek(k, p, a, 2)).toEqual([11, 11]);
    expect(verifyKernel(k)).toEqual([]);
  });

  it('exit of the parent leaves the child its pages, contents intact', () => {
    const { k, p } = setup();
    const a = k.mmap(p, 0, 4 * PAGE_SIZE, RW, ANON);
    write(k, p, a, 4, 21);
    const c = fork(k, p);
    exitProcess(k, p);
    expect(peek(k, c, a, 4)).toEqual([21, 21, 21, 21]);
    const f = followPage(c.mm, a);
    write(k, c, a, 1, 22); // the only mapping left: reused
    expect(followPage(c.mm, a)).toBe(f);
    expect(verifyKernel(k)).toEqual([]);
  });
});

/** One step of the property test: a write, a read, a fork, an exit or a pageout, by process `who` (index mod alive). */
type Step =
  | { kind: 'write'; who: number; page: number; fill: number }
  | { kind: 'read'; who: number; page: number }
  | { kind: 'fork'; who: number }
  | { kind: 'exit'; who: number }
  | { kind: 'pageout'; who: number; page: number; n: number };

const PAGES = 24;
const stepArb: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      kind: fc.constant('write' as const),
      who: fc.nat(7),
      page: fc.nat(PAGES - 1),
      fill: fc.integer({ min: 1, max: 255 }),
    }),
  },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('read' as const), who: fc.nat(7), page: fc.nat(PAGES - 1) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('fork' as const), who: fc.nat(7) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('exit' as const), who: fc.nat(7) }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('pageout' as const),
      who: fc.nat(7),
      page: fc.nat(PAGES - 1),
      n: fc.integer({ min: 1, max: 8 }),
    }),
  },
);

describe('fork property: every process sees its own writes and the content at its fork otherwise', () => {
  it('holds through random writes, reads, forks, exits and pageouts; frames and mapcounts stay consistent', () => {
    fc.assert(
      fc.property(fc.array(stepArb, { minLength: 1, maxLength: 40 }), fc.boolean(), (steps, thp) => {
        const { k, p } = setup({ swap: true, thp: thp ? 'always' : 'never' });
        const a = k.mmap(p, 0, 4 * MiB, RW, ANON);
        const base = a + ((PMD_SIZE - (a % PMD_SIZE)) % PMD_SIZE);
        // The model: each live process's bytes, page by page.
        const alive: { p: Process; bytes: number[] }[] = [{ p, bytes: new Array<number>(PAGES).fill(0) }];
        let n = 0;
        for (const s of steps) {
          const x = alive[s.who % alive.length]!;
          const va = base + ('page' in s ? s.page : 0) * PAGE_SIZE;
          if (s.kind === 'write') {
            write(k, x.p, va, 1, s.fill);
            x.bytes[s.page] = s.fill;
          } else if (s.kind === 'read') expect(peek(k, x.p, va, 1)).toEqual([x.bytes[s.page]]);
          else if (s.kind === 'fork') {
            if (alive.length >= 4) continue;
            alive.push({ p: fork(k, x.p, `c${n++}`), bytes: [...x.bytes] });
          } else if (s.kind === 'exit') {
            if (alive.length === 1) continue;
            exitProcess(k, x.p);
            alive.splice(alive.indexOf(x), 1);
          } else expect(k.madvise(x.p, va, Math.min(s.n, PAGES - s.page) * PAGE_SIZE, MADV.MADV_PAGEOUT)).toBe(0);
          expect(verifyKernel(k)).toEqual([]);
          for (const y of alive) expect(y.p.mm.rssAnon).toBe(anonPtes(k, y.p.mm));
        }
        for (const y of alive) expect(peek(k, y.p, base, PAGES)).toEqual(y.bytes);
        // No two processes may write one frame in place: an exclusive page is mapped once.
        for (const y of alive)
          for (let i = 0; i < PAGES; i++) {
            const f = followPage(y.p.mm, base + i * PAGE_SIZE);
            if (f >= 0 && k.mem.flags(f) & PG.anonExclusive && !(k.mem.flags(f) & (PG.head | PG.tail))) expect(k.mem.mapcount(f)).toBe(1);
          }
        expect(verifyKernel(k)).toEqual([]);
      }),
      { numRuns: 60 },
    );
  });
});

// PTE_ZERO is what a read of a never-written page maps: the child's copy of such a PTE must be the zero page too.
it('a zero-page PTE is copied as a zero-page PTE', () => {
  const { k, p } = setup();
  const a = k.mmap(p, 0, 2 * PAGE_SIZE, RW, ANON);
  write(k, p, a + PAGE_SIZE, 1, 1); // an anon_vma: the VMA's page table is copied (vma_needs_copy)
  peek(k, p, a, 1);
  const c = fork(k, p);
  const t = c.mm.pgtable.pmds.get(Math.floor(a / PMD_SIZE)) as PteTable;
  expect(t.ptes[(a / PAGE_SIZE) & 511]).toBe(PTE_ZERO);
});

describe('page migration of pages a fork shared (MPOL_MF_MOVE vs MPOL_MF_MOVE_ALL)', () => {
  function twoNodes(): { k: Kernel; p: Process; c: Process; a: number } {
    const k = smallKernel({ nodes: 2, mib: 64 });
    k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'never');
    const p = k.createProcess('parent');
    const a = k.mmap(p, 0, 4 * PAGE_SIZE, RW, ANON);
    write(k, p, a, 4, 51);
    const c = fork(k, p);
    write(k, c, a + 3 * PAGE_SIZE, 1, 52); // page 3 is the child's own copy now
    return { k, p, c, a };
  }
  const pages = (a: number): number[] => [0, 1, 2, 3].map((i) => a + i * PAGE_SIZE);
  const node = (k: Kernel, mm: MmStruct, va: number): number => k.phys.nodeOfPfn(followPage(mm, va));

  it('move_pages answers -EACCES for a page another process maps, unless MPOL_MF_MOVE_ALL; a moved page moves for both', () => {
    const { k, p, c, a } = twoNodes();
    const r = sysMovePages(k, c, c, pages(a), [1, 1, 1, 1], MPOL.MPOL_MF_MOVE);
    expect(r).toEqual({ ret: 0, status: ['-EACCES', '-EACCES', '-EACCES', 1] });
    expect(sysMovePages(k, c, c, pages(a), [1, 1, 1, 1], MPOL.MPOL_MF_MOVE_ALL)).toEqual({ ret: 0, status: [1, 1, 1, 1] });
    for (const va of pages(a).slice(0, 3)) {
      expect(followPage(p.mm, va)).toBe(followPage(c.mm, va));
      expect(node(k, p.mm, va)).toBe(1);
    }
    expect(node(k, p.mm, a + 3 * PAGE_SIZE)).toBe(0); // the parent's own page was not the child's to move
    expect(peek(k, p, a, 4)).toEqual([51, 51, 51, 51]);
    expect(peek(k, c, a, 4)).toEqual([51, 51, 51, 52]);
    expect(verifyKernel(k)).toEqual([]);
  });

  it('mbind MPOL_MF_MOVE leaves shared pages (no failure, even with MPOL_MF_STRICT), MPOL_MF_MOVE_ALL moves them', () => {
    const { k, p, c, a } = twoNodes();
    expect(sysMbind(k, c.mainThread, a, 4 * PAGE_SIZE, MPOL.MPOL_BIND, [1], MPOL.MPOL_MF_MOVE | MPOL.MPOL_MF_STRICT)).toBe(0);
    expect(pages(a).map((va) => node(k, c.mm, va))).toEqual([0, 0, 0, 1]);
    expect(sysMbind(k, c.mainThread, a, 4 * PAGE_SIZE, MPOL.MPOL_BIND, [1], MPOL.MPOL_MF_MOVE_ALL)).toBe(0);
    expect(pages(a).map((va) => node(k, c.mm, va))).toEqual([1, 1, 1, 1]);
    expect(pages(a).map((va) => node(k, p.mm, va))).toEqual([1, 1, 1, 0]);
    expect(verifyKernel(k)).toEqual([]);
  });
});
