import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { anonStateOf, smallKernel, RW, ANON } from '../testing/fixtures.ts';
import { verifyKernel } from './debug_vm.ts';
import { MADV, MAP, PAGE_SIZE, PMD_SIZE, UFFD_API, UFFD_FEATURE, UFFDIO_MODE, UFFDIO_REGISTER_MODE } from './uapi.ts';
import { uffdioApi, uffdioFill, uffdioMove, uffdioRegister, uffdioUnregister, uffdioWake } from './userfaultfd.ts';
import { sysSwapon } from './swapfile.ts';

const MISSING = UFFDIO_REGISTER_MODE.UFFDIO_REGISTER_MODE_MISSING;

function setup(pages: number) {
  const k = smallKernel({ nodes: 1, mib: 64 });
  k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'never');
  const p = k.createProcess('vm');
  const a = k.mmap(p, 0, pages * PAGE_SIZE, RW, ANON);
  const fd = k.uffd.create(p, 0);
  expect(uffdioApi(k, p, fd, UFFD_API, 0).ret).toBe(0);
  expect(uffdioRegister(k, fd, a, pages * PAGE_SIZE, MISSING).ret).toBe(0);
  return { k, p, a, fd, ctx: k.uffd.ctxs.get(fd)! };
}

describe('userfaultfd', () => {
  it('a missing fault in a registered range blocks the thread and queues one message; UFFDIO_COPY resolves and wakes it', () => {
    const { k, p, a, fd, ctx } = setup(4);
    const t = k.createThread(p, 1);
    if (typeof t === 'number') throw new Error('thread');
    const r = k.access(t, a + PAGE_SIZE + 5, 1, PAGE_SIZE, true, 3);
    expect(r.blocked).toBe(a + PAGE_SIZE + 5);
    expect(ctx.pending).toEqual([
      { event: 'UFFD_EVENT_PAGEFAULT', address: a + PAGE_SIZE, flags: ['UFFD_PAGEFAULT_FLAG_WRITE'], tid: t.tid },
    ]);
    expect(k.uffd.isBlocked(t)).toBe(true);
    // A copy with DONTWAKE fills the page but leaves the thread blocked.
    expect(uffdioFill(k, p.mainThread, fd, a + PAGE_SIZE, PAGE_SIZE, UFFDIO_MODE.UFFDIO_COPY_MODE_DONTWAKE, 9)).toEqual({
      ret: 0,
      done: PAGE_SIZE,
    });
    expect(k.uffd.isBlocked(t)).toBe(true);
    expect(uffdioWake(k, fd, a + PAGE_SIZE, PAGE_SIZE)).toBe(0);
    expect(k.uffd.isBlocked(t)).toBe(false);
    // A second copy onto the page: EEXIST, written back in `copy` too.
    expect(uffdioFill(k, p.mainThread, fd, a + PAGE_SIZE, PAGE_SIZE, 0, 9)).toEqual({ ret: -17, done: -17 });
    // A copy over [filled, missing): nothing is filled past the existing page.
    expect(uffdioFill(k, p.mainThread, fd, a + PAGE_SIZE, 2 * PAGE_SIZE, 0, 9)).toEqual({ ret: -17, done: -17 });
    // A copy over [missing, filled): the first page is filled, then EAGAIN with the partial count.
    expect(uffdioFill(k, p.mainThread, fd, a, 2 * PAGE_SIZE, 0, 9)).toEqual({ ret: -11, done: PAGE_SIZE });
    expect(verifyKernel(k)).toEqual([]);
  });

  it('UFFD_FEATURE_SIGBUS turns a missing fault into SIGBUS instead of a message', () => {
    const k = smallKernel({ nodes: 1, mib: 64 });
    const p = k.createProcess('vm');
    const a = k.mmap(p, 0, 4 * PAGE_SIZE, RW, ANON);
    const fd = k.uffd.create(p, 0);
    uffdioApi(k, p, fd, UFFD_API, UFFD_FEATURE.UFFD_FEATURE_SIGBUS);
    uffdioRegister(k, fd, a, 4 * PAGE_SIZE, MISSING);
    expect(k.access(p.mainThread, a, 1, PAGE_SIZE, false, 0).signal).toBe('SIGBUS');
    expect(k.uffd.ctxs.get(fd)!.pending).toEqual([]);
  });

  it('unregistering wakes the waiters, and the retried access then faults normally', () => {
    const { k, p, a, fd } = setup(4);
    const t = k.createThread(p, 1);
    if (typeof t === 'number') throw new Error('thread');
    expect(k.access(t, a, 1, PAGE_SIZE, false, 0).blocked).toBe(a);
    expect(uffdioUnregister(k, fd, a, 4 * PAGE_SIZE)).toBe(0);
    expect(k.uffd.isBlocked(t)).toBe(false);
    expect(k.access(t, a, 1, PAGE_SIZE, false, 0).blocked).toBeUndefined();
    expect(p.mm.vmaAt(a)!.uffdCtx).toBeNull();
  });

  it('registration checks: hugetlb alignment, one context per VMA, VM_MAYWRITE', () => {
    const k = smallKernel({ nodes: 1, mib: 64 });
    k.hugetlb.setNrHugepages(k.hugetlb.bySize(PMD_SIZE)!, 4);
    const p = k.createProcess('vm');
    const h = k.mmap(p, 0, 2 * PMD_SIZE, RW, ANON | MAP.MAP_HUGETLB | MAP.MAP_HUGE_2MB);
    const fd = k.uffd.create(p, 0);
    uffdioApi(k, p, fd, UFFD_API, 0);
    expect(uffdioRegister(k, fd, h + PAGE_SIZE, PMD_SIZE, MISSING).ret).toBe(-22);
    expect(uffdioRegister(k, fd, h, PMD_SIZE / 2, MISSING).ret).toBe(-22);
    expect(uffdioRegister(k, fd, h, 2 * PMD_SIZE, MISSING)).toEqual({ ret: 0, ioctls: [2, 3, 8] }); // WAKE, COPY, POISON
    const fd2 = k.uffd.create(p, 0);
    uffdioApi(k, p, fd2, UFFD_API, 0);
    expect(uffdioRegister(k, fd2, h, PMD_SIZE, MISSING).ret).toBe(-16); // EBUSY
    // hugetlb: whole huge pages only, no zeropage
    expect(uffdioFill(k, p.mainThread, fd, h, PAGE_SIZE, 0, 1).ret).toBe(-22);
    expect(uffdioFill(k, p.mainThread, fd, h, PMD_SIZE, 0, null).ret).toBe(-22);
    expect(uffdioFill(k, p.mainThread, fd, h, PMD_SIZE, 0, 4)).toEqual({ ret: 0, done: PMD_SIZE });
  });

  it('whatever the order of copies, zeropages and wakes, each page is filled once, waiters wake only when their page is there, and no data is lost', () => {
    const PAGES = 16;
    const step = fc.oneof(
      fc.record({ k: fc.constant('touch' as const), page: fc.nat(PAGES - 1), thread: fc.nat(2), write: fc.boolean() }),
      fc.record({
        k: fc.constant('copy' as const),
        page: fc.nat(PAGES - 1),
        n: fc.integer({ min: 1, max: 4 }),
        fill: fc.integer({ min: 1, max: 255 }),
        dontwake: fc.boolean(),
      }),
      fc.record({ k: fc.constant('zero' as const), page: fc.nat(PAGES - 1), dontwake: fc.boolean() }),
      fc.record({ k: fc.constant('wake' as const), page: fc.nat(PAGES - 1) }),
    );
    fc.assert(
      fc.property(fc.array(step, { maxLength: 40 }), (steps) => {
        const { k, p, a, fd } = setup(PAGES);
        const threads = [0, 1, 2].map(() => {
          const t = k.createThread(p, 1);
          if (typeof t === 'number') throw new Error('thread');
          return t;
        });
        const content: (number | undefined)[] = new Array(PAGES).fill(undefined); // undefined: missing
        const waiting = new Map<number, number>(); // thread index -> page it waits on
        for (const s of steps) {
          if (s.k === 'touch') {
            if (waiting.has(s.thread)) continue; // a blocked thread does nothing
            const r = k.access(threads[s.thread]!, a + s.page * PAGE_SIZE, 1, PAGE_SIZE, s.write, 77);
            if (content[s.page] === undefined) {
              expect(r.blocked).toBe(a + s.page * PAGE_SIZE);
              waiting.set(s.thread, s.page);
            } else {
              expect(r.blocked).toBeUndefined();
              if (s.write) content[s.page] = 77;
            }
            continue;
          }
          const n = s.k === 'copy' ? Math.min(s.n, PAGES - s.page) : 1;
          const mode = s.k === 'wake' ? 0 : s.dontwake ? UFFDIO_MODE.UFFDIO_COPY_MODE_DONTWAKE : 0;
          let filled = 0;
          if (s.k === 'wake') uffdioWake(k, fd, a + s.page * PAGE_SIZE, PAGE_SIZE);
          else {
            const r = uffdioFill(k, p.mainThread, fd, a + s.page * PAGE_SIZE, n * PAGE_SIZE, mode, s.k === 'copy' ? s.fill : null);
            while (filled < n && content[s.page + filled] === undefined) filled++;
            expect(r.done).toBe(filled ? filled * PAGE_SIZE : -17);
            for (let j = 0; j < filled; j++) content[s.page + j] = s.k === 'copy' ? s.fill : 0;
          }
          // Who is woken: waiters in the range (for a fill, the filled part) unless DONTWAKE.
          const lo = s.page;
          const hi = s.k === 'wake' ? s.page + 1 : s.dontwake ? lo : lo + filled;
          for (const [ti, pg] of [...waiting]) {
            const woken = pg >= lo && pg < hi;
            expect(k.uffd.isBlocked(threads[ti]!)).toBe(!woken);
            if (woken) waiting.delete(ti);
          }
        }
        // Every filled page holds what was copied there; missing ones are still missing.
        for (let i = 0; i < PAGES; i++) {
          if (content[i] === undefined) continue;
          let got = -1;
          k.access(p.mainThread, a + i * PAGE_SIZE, 1, PAGE_SIZE, false, 0, (_va, b) => (got = b));
          expect(got).toBe(content[i]);
        }
        expect(verifyKernel(k)).toEqual([]);
      }),
      { numRuns: 200 },
    );
  });

  // Overlapping ranges were checked on the real kernel: moving [+44K, +52K) to [+48K, +56K) moves the page at
  // +44K to +48K, then on to +52K.
  it('UFFDIO_MOVE never loses, duplicates or alters a page: every byte written is found at exactly one address', () => {
    const PAGES = 32;
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(PAGES - 1), fc.nat(PAGES - 1), fc.integer({ min: 1, max: 3 }), fc.boolean()), { maxLength: 30 }),
        fc.array(fc.boolean(), { minLength: PAGES, maxLength: PAGES }),
        (moves, present) => {
          const k = smallKernel({ nodes: 1, mib: 64 });
          k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'never');
          const p = k.createProcess('vm');
          const a = k.mmap(p, 0, PAGES * PAGE_SIZE, RW, ANON);
          const fd = k.uffd.create(p, 0);
          uffdioApi(k, p, fd, UFFD_API, 0);
          // Pages written before registering hold distinct bytes 1..PAGES; the others are holes.
          present.forEach((on, i) => on && k.access(p.mainThread, a + i * PAGE_SIZE, 1, PAGE_SIZE, true, i + 1));
          uffdioRegister(k, fd, a, PAGES * PAGE_SIZE, MISSING);
          const where: (number | undefined)[] = present.map((on, i) => (on ? i + 1 : undefined));
          for (const [d, s, n0, holes] of moves) {
            const n = Math.min(n0, PAGES - d, PAGES - s);
            const mode = holes ? UFFDIO_MODE.UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES : 0;
            const r = uffdioMove(k, fd, a + d * PAGE_SIZE, a + s * PAGE_SIZE, n * PAGE_SIZE, mode);
            const moved = r.done !== undefined && r.done > 0 ? r.done / PAGE_SIZE : 0;
            // The model: pages move one by one, in address order, until the first that cannot; with
            // overlapping ranges a page can move again (Linux 6.18 does the same: see the note above).
            for (let j = 0; j < moved; j++) {
              const v = where[s + j];
              if (v === undefined) continue; // a hole (ALLOW_SRC_HOLES)
              where[s + j] = undefined;
              where[d + j] = v;
            }
          }
          // Each byte value lives at exactly the addresses the model says, and nowhere else.
          for (let i = 0; i < PAGES; i++) {
            if (where[i] === undefined) continue;
            let got = -1;
            k.access(p.mainThread, a + i * PAGE_SIZE, 1, PAGE_SIZE, false, 0, (_va, b) => (got = b));
            expect(got).toBe(where[i]);
          }
          const values = where.filter((x) => x !== undefined);
          expect(new Set(values).size).toBe(values.length);
          expect(values.length).toBe(present.filter(Boolean).length);
          expect(verifyKernel(k)).toEqual([]);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('property: one UFFDIO_COPY over a range places what one call per page places (frames, contents, LRU order, counters, time)', () => {
    // The anonymous COPY takes a table's worth of frames at once (installAnonPages); a call per page takes
    // them one at a time (that the bulk allocation hands out what single allocations would is
    // page_alloc.test.ts's property). Random ranges, some pages filled before (EEXIST stops a call), some zapped
    // between calls (their frames go back to the buddy lists), WP mode, a fill byte or a byte per page,
    // on a node small enough to reach its low watermark.
    const PAGES = 3950;
    const op = fc.oneof(
      fc.record({
        kind: fc.constant('copy' as const),
        at: fc.nat(PAGES - 1),
        n: fc.integer({ min: 1, max: 1200 }),
        wp: fc.boolean(),
        perPage: fc.boolean(),
      }),
      fc.record({ kind: fc.constant('zap' as const), at: fc.nat(PAGES - 1), n: fc.integer({ min: 1, max: 600 }) }),
    );
    const run = (ops: { kind: 'copy' | 'zap'; at: number; n: number; wp?: boolean; perPage?: boolean }[], split: boolean) => {
      const k = smallKernel({ nodes: 1, mib: 16 });
      k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'never');
      expect(sysSwapon(k, { path: '/swap', size: 64 << 20, kind: 'file' })).toBe(0); // so that the low watermark wakes kswapd
      const p = k.createProcess('vm');
      const a = k.mmap(p, 0, PAGES * PAGE_SIZE, RW, ANON);
      const fd = k.uffd.create(p, 0);
      uffdioApi(k, p, fd, UFFD_API, 0);
      expect(uffdioRegister(k, fd, a, PAGES * PAGE_SIZE, MISSING | UFFDIO_REGISTER_MODE.UFFDIO_REGISTER_MODE_WP).ret).toBe(0);
      const rets: (number | undefined)[] = [];
      for (const o of ops) {
        const n = Math.min(o.n, PAGES - o.at);
        const start = a + o.at * PAGE_SIZE;
        if (o.kind === 'zap') {
          expect(k.madvise(p, start, n * PAGE_SIZE, MADV.MADV_DONTNEED)).toBe(0);
          continue;
        }
        const mode = UFFDIO_MODE.UFFDIO_COPY_MODE_DONTWAKE | (o.wp ? UFFDIO_MODE.UFFDIO_COPY_MODE_WP : 0);
        const src = o.perPage ? (va: number) => ((va / PAGE_SIZE) % 251) + 1 : 0x5a;
        if (!split) {
          rets.push(uffdioFill(k, p.mainThread, fd, start, n * PAGE_SIZE, mode, src).done, k.events.size);
          continue;
        }
        // What the kernel writes back for the whole range, from the per-page calls: bytes up to the first failure.
        let done = 0;
        for (let i = 0; i < n; i++) {
          const r = uffdioFill(k, p.mainThread, fd, start + i * PAGE_SIZE, PAGE_SIZE, mode, src).done!;
          if (r < 0) {
            if (!done) done = r;
            break;
          }
          done += r;
        }
        rets.push(done, k.events.size); // and kswapd woken (an event pending) at the same points
      }
      expect(verifyKernel(k)).toEqual([]);
      return { k, p, a, rets };
    };
    fc.assert(
      fc.property(fc.array(op, { minLength: 1, maxLength: 12 }), (ops) => {
        const x = run(ops, false);
        const y = run(ops, true);
        expect(x.rets).toEqual(y.rets);
        // Frames, contents and flags of every page, LRU order, vmstat, clock, RSS and free lists alike.
        const state = (r: typeof x) => anonStateOf(r.k, r.p.mm, r.a, PAGES, (_pfn, i) => String(r.p.mm.uffdWp.has(r.a / PAGE_SIZE + i)));
        expect(state(x)).toEqual(state(y));
      }),
      {
        numRuns: 40,
        // Filled up to past the low watermark: the last call is placed page by page, waking kswapd.
        examples: [[[0, 1200, 2400, 3600].map((at) => ({ kind: 'copy' as const, at, n: 1200, wp: false, perPage: true }))]],
      },
    );
  });

  it('property: a COPY whose source answers one byte for every page places what a COPY of that byte places', () => {
    // Postcopy's placement passes the byte itself when every page of a run was sent holding it (postcopy.ts
    // uniformByte) and a function of the address otherwise: the two forms of UffdSource must agree.
    const PAGES = 1500;
    const op = fc.oneof(
      fc.record({ kind: fc.constant('copy' as const), at: fc.nat(PAGES - 1), n: fc.integer({ min: 1, max: 700 }), byte: fc.nat(255) }),
      fc.record({ kind: fc.constant('zap' as const), at: fc.nat(PAGES - 1), n: fc.integer({ min: 1, max: 300 }), byte: fc.constant(0) }),
    );
    const run = (ops: { kind: 'copy' | 'zap'; at: number; n: number; byte: number }[], asFunction: boolean) => {
      const k = smallKernel({ nodes: 1, mib: 16 });
      k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'never');
      const p = k.createProcess('vm');
      const a = k.mmap(p, 0, PAGES * PAGE_SIZE, RW, ANON);
      const fd = k.uffd.create(p, 0);
      uffdioApi(k, p, fd, UFFD_API, 0);
      expect(uffdioRegister(k, fd, a, PAGES * PAGE_SIZE, MISSING).ret).toBe(0);
      const rets: (number | undefined)[] = [];
      for (const o of ops) {
        const n = Math.min(o.n, PAGES - o.at);
        const start = a + o.at * PAGE_SIZE;
        if (o.kind === 'zap') expect(k.madvise(p, start, n * PAGE_SIZE, MADV.MADV_DONTNEED)).toBe(0);
        else
          rets.push(
            uffdioFill(k, p.mainThread, fd, start, n * PAGE_SIZE, UFFDIO_MODE.UFFDIO_COPY_MODE_DONTWAKE, asFunction ? () => o.byte : o.byte)
              .done,
          );
      }
      expect(verifyKernel(k)).toEqual([]);
      return { k, p, a, rets };
    };
    fc.assert(
      fc.property(fc.array(op, { minLength: 1, maxLength: 10 }), (ops) => {
        const x = run(ops, false);
        const y = run(ops, true);
        expect(x.rets).toEqual(y.rets);
        expect(anonStateOf(x.k, x.p.mm, x.a, PAGES, () => 0)).toEqual(anonStateOf(y.k, y.p.mm, y.a, PAGES, () => 0));
      }),
      { numRuns: 40 },
    );
  });
});
