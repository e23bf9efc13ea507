/**
 * The VMA tree against the sorted array it replaced. A reference model
 * keeps the VMAs in a sorted array and places, splits and merges them with
 * the algorithms memtwin used before the tree (a linear top-down gap scan,
 * a merge scan over every VMA); random mmap (hinted, MAP_FIXED, shared,
 * MAP_GROWSDOWN, PMD multiples), munmap, mprotect and page writes (which
 * give VMAs their anon_vma, and so decide merges) must give exactly the
 * same addresses, errors and VMA layout on the kernel, and leave it
 * consistent (verifyKernel). A second property grows stacks and checks every
 * placement against the old search run on the kernel's own layout.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { smallKernel } from '../testing/fixtures.ts';
import { verifyKernel } from './debug_vm.ts';
import { STACK_GUARD_GAP, VM, type Vma } from './mm_types.ts';
import { MAP, MAP_TYPE, MMAP_MIN_ADDR, PAGE_SIZE, PMD_SIZE, PROT, TASK_SIZE, alignDown, alignUp, isAligned } from './uapi.ts';

// --- the reference model: memtwin's VMA layer as it was, over a sorted array ----------------------------

interface RefVma {
  start: number;
  end: number;
  flags: number;
  pgoff: number;
  /** 0 for private anonymous memory, else the shmem file's number. */
  file: number;
  anonVma: number;
}

const startGap = (v: { start: number; flags: number }): number =>
  v.flags & VM.GROWSDOWN ? Math.max(0, v.start - STACK_GUARD_GAP) : v.start;

/** The old unmappedAreaTopdown: every VMA from the highest down, the gap above each. */
function refTopdown(vmas: readonly { start: number; end: number; flags: number }[], mmapBase: number, len: number, align: number): number {
  const low = Math.max(PAGE_SIZE, MMAP_MIN_ADDR);
  let gapEnd = mmapBase;
  for (let i = vmas.length - 1; i >= -1; i--) {
    const v = i >= 0 ? vmas[i]! : undefined;
    if (v && v.start >= mmapBase) continue;
    const gapStart = Math.max(v ? v.end : low, low);
    const top = Math.min(gapEnd, mmapBase);
    if (top - gapStart >= len) {
      const a = alignDown(top - len, align);
      if (a >= gapStart) return a;
    }
    if (v) gapEnd = startGap(v);
  }
  return -12;
}

/** The old getUnmappedArea for anonymous (not hugetlb) mappings, over a sorted array. */
function refGetUnmappedArea(
  vmas: readonly { start: number; end: number; flags: number }[],
  mmapBase: number,
  hint: number,
  len: number,
  flags: number,
): number {
  if (len > TASK_SIZE - MMAP_MIN_ADDR) return -12;
  if (flags & MAP.MAP_FIXED) {
    if (hint > TASK_SIZE - len) return -12;
    if (hint % PAGE_SIZE) return -22;
    return hint;
  }
  if (hint) {
    const a = alignDown(hint, PAGE_SIZE);
    const v = vmas.find((x) => x.end > a);
    if (TASK_SIZE - len >= a && a >= MMAP_MIN_ADDR && (!v || a + len <= startGap(v))) return a;
  }
  if (!(flags & MAP.MAP_SHARED && (flags & MAP_TYPE) !== MAP.MAP_PRIVATE) && !hint && isAligned(len, PMD_SIZE)) {
    const ret = refTopdown(vmas, mmapBase, len + PMD_SIZE, PAGE_SIZE);
    if (ret >= 0) {
      const off = (PMD_SIZE - (ret % PMD_SIZE)) % PMD_SIZE;
      return off === 0 ? ret + PMD_SIZE : ret + off;
    }
  }
  return refTopdown(vmas, mmapBase, len, PAGE_SIZE);
}

class RefMm {
  vmas: RefVma[] = [];
  private files = 0;
  private anonVmas = 0;
  constructor(readonly mmapBase: number) {}

  private vmasIn(start: number, end: number): RefVma[] {
    return this.vmas.filter((v) => v.end > start && v.start < end);
  }

  private canMerge(a: RefVma, b: RefVma): boolean {
    if (a.end !== b.start || a.flags !== b.flags || a.file !== b.file) return false;
    if (a.anonVma && b.anonVma && a.anonVma !== b.anonVma) return false;
    return b.pgoff === a.pgoff + (a.end - a.start) / PAGE_SIZE;
  }

  /** The old mergeAround: scan every adjacent pair from the bottom, merging where either side changed. */
  private mergeAround(changed: Set<RefVma>): void {
    for (let i = 0; i + 1 < this.vmas.length;) {
      const a = this.vmas[i]!;
      const b = this.vmas[i + 1]!;
      if ((changed.has(a) || changed.has(b)) && this.canMerge(a, b)) {
        a.end = b.end;
        if (!a.anonVma) a.anonVma = b.anonVma;
        this.vmas.splice(i + 1, 1);
        changed.add(a);
      } else i++;
    }
  }

  private split(v: RefVma, addr: number): RefVma {
    const upper = { ...v, start: addr, pgoff: v.pgoff + (addr - v.start) / PAGE_SIZE };
    v.end = addr;
    this.vmas.splice(this.vmas.indexOf(v) + 1, 0, upper);
    return upper;
  }

  private unmap(start: number, end: number): void {
    const first = this.vmasIn(start, end)[0];
    if (!first) return;
    if (first.start < start) this.split(first, start);
    const tail = this.vmasIn(start, end).at(-1)!;
    if (tail.end > end) this.split(tail, end);
    this.vmas = this.vmas.filter((v) => v.end <= start || v.start >= end);
  }

  mmap(addr: number, len: number, prot: number, flags: number): number {
    if (!(flags & MAP.MAP_FIXED) && addr && addr < MMAP_MIN_ADDR) addr = alignUp(MMAP_MIN_ADDR, PAGE_SIZE);
    len = alignUp(len, PAGE_SIZE);
    const start = refGetUnmappedArea(this.vmas, this.mmapBase, addr, len, flags);
    if (start < 0) return start;
    let vf = VM.MAYREAD | VM.MAYWRITE | VM.MAYEXEC;
    if (prot & PROT.PROT_READ) vf |= VM.READ;
    if (prot & PROT.PROT_WRITE) vf |= VM.WRITE;
    if (flags & MAP.MAP_GROWSDOWN) vf |= VM.GROWSDOWN;
    const shared = (flags & MAP_TYPE) === MAP.MAP_SHARED;
    if (shared) {
      if (vf & VM.GROWSDOWN) return -22;
      vf |= VM.SHARED | VM.MAYSHARE;
    } else if (vf & VM.WRITE) vf |= VM.ACCOUNT;
    if (flags & MAP.MAP_FIXED) this.unmap(start, start + len);
    const v: RefVma = {
      start,
      end: start + len,
      flags: vf,
      pgoff: shared ? 0 : start / PAGE_SIZE,
      file: shared ? ++this.files : 0,
      anonVma: 0,
    };
    const i = this.vmas.findIndex((x) => x.start > start);
    this.vmas.splice(i < 0 ? this.vmas.length : i, 0, v);
    this.mergeAround(new Set([v]));
    return start;
  }

  munmap(start: number, len: number): number {
    this.unmap(start, start + alignUp(len, PAGE_SIZE));
    return 0;
  }

  /** The old sysMprotect, as far as anonymous memory with every VM_MAY* bit goes. */
  mprotect(start: number, len: number, prot: number): number {
    const end = start + alignUp(len, PAGE_SIZE);
    const first = this.vmas.find((v) => v.end > start);
    if (!first || first.start > start) return -12;
    let covered = start;
    for (const v of this.vmasIn(start, end)) {
      if (v.start > covered) break;
      covered = v.end;
    }
    const stop = Math.min(end, covered);
    const want = (prot & PROT.PROT_READ ? VM.READ : 0) | (prot & PROT.PROT_WRITE ? VM.WRITE : 0);
    const changed = new Set<RefVma>();
    for (const v0 of this.vmasIn(start, stop)) {
      let nf = (v0.flags & ~(VM.READ | VM.WRITE | VM.EXEC)) | want;
      if (nf === v0.flags) continue;
      if (nf & VM.WRITE) {
        if (!(v0.flags & (VM.ACCOUNT | VM.WRITE | VM.SHARED))) nf |= VM.ACCOUNT;
      } else if (v0.flags & VM.ACCOUNT && !v0.file && !v0.anonVma) nf &= ~VM.ACCOUNT;
      let v = v0;
      if (v.start < start) v = this.split(v, start);
      if (v.end > stop) this.split(v, stop);
      v.flags = nf;
      changed.add(v);
    }
    this.mergeAround(changed);
    return covered < end ? -12 : 0;
  }

  /** A write to a page of a writable private VMA: its first anonymous page gives it an anon_vma (anon_vma_prepare). */
  write(v: RefVma): void {
    if (v.file || v.anonVma) return;
    const i = this.vmas.indexOf(v);
    const compatible = (a: RefVma, b: RefVma): boolean =>
      a.end === b.start &&
      a.file === b.file &&
      ((a.flags ^ b.flags) & ~(VM.READ | VM.WRITE | VM.EXEC)) === 0 &&
      b.pgoff === a.pgoff + (a.end - a.start) / PAGE_SIZE;
    const next = this.vmas[i + 1];
    const prev = this.vmas[i - 1];
    if (next?.anonVma && compatible(v, next)) v.anonVma = next.anonVma;
    else if (prev?.anonVma && compatible(prev, v)) v.anonVma = prev.anonVma;
    else v.anonVma = ++this.anonVmas;
  }
}

/** A layout with file and anon_vma identities renumbered by first appearance, to compare two layouts. */
function layout(vmas: readonly { start: number; end: number; flags: number; pgoff: number; file: unknown; anonVma: unknown }[]): string[] {
  const ids = new Map<unknown, number>();
  const id = (x: unknown): number => {
    if (!x) return 0;
    if (!ids.has(x)) ids.set(x, ids.size + 1);
    return ids.get(x)!;
  };
  return vmas.map(
    (v) =>
      `${v.start.toString(16)}-${v.end.toString(16)} flags=${v.flags.toString(16)} pgoff=${v.pgoff} file=${id(v.file)} anon=${id(`a${String(v.anonVma)}`)}`,
  );
}

const kernelLayout = (vmas: readonly Vma[]): string[] =>
  layout(vmas.map((v) => ({ start: v.start, end: v.end, flags: v.flags, pgoff: v.pgoff, file: v.file, anonVma: v.anonVma || 0 })));
const refLayout = (vmas: readonly RefVma[]): string[] => layout(vmas);

// --- the random steps ---------------------------------------------------------------------------------

/** Addresses are pages around mmap_base: most below it, some above (which the search ignores). */
const ARENA_BELOW = 16384; // 64 MiB
const ARENA_ABOVE = 2048; // 8 MiB

type Step =
  | { k: 'mmap'; hint: number | null; fixed: boolean; pages: number; prot: number; shared: boolean; grows: boolean }
  | { k: 'munmap'; page: number; pages: number }
  | { k: 'mprotect'; page: number; pages: number; prot: number }
  | { k: 'write'; vma: number; at: number };

/** A page offset from mmap_base; often right at it, where VMAs begin to be ignored by the search. */
const arenaPage = fc.oneof(fc.integer({ min: -ARENA_BELOW, max: ARENA_ABOVE - 1 }), fc.constantFrom(0, -1, 1, -256, -257, -512));
const pagesArb = fc.oneof(
  fc.integer({ min: 1, max: 64 }),
  fc.integer({ min: 1, max: 4 }).map((n) => n * 512),
  fc.integer({ min: 1, max: 2048 }),
);
const protArb = fc.constantFrom(PROT.PROT_NONE, PROT.PROT_READ, PROT.PROT_READ | PROT.PROT_WRITE);
const stepArb: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      k: fc.constant('mmap' as const),
      hint: fc.option(arenaPage, { nil: null }),
      fixed: fc.boolean(),
      pages: pagesArb,
      prot: protArb,
      shared: fc.boolean(),
      grows: fc.boolean(),
    }),
  },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('munmap' as const), page: arenaPage, pages: pagesArb }) },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('mprotect' as const), page: arenaPage, pages: pagesArb, prot: protArb }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('write' as const), vma: fc.nat(), at: fc.nat() }) },
);

function mmapArgs(s: Extract<Step, { k: 'mmap' }>, base: number): { addr: number; len: number; flags: number } {
  let flags = MAP.MAP_ANONYMOUS | (s.shared ? MAP.MAP_SHARED : MAP.MAP_PRIVATE);
  if (s.grows && !s.shared) flags |= MAP.MAP_GROWSDOWN;
  const addr = s.hint === null ? 0 : base + s.hint * PAGE_SIZE;
  if (s.fixed && addr) flags |= MAP.MAP_FIXED;
  return { addr, len: s.pages * PAGE_SIZE, flags };
}

describe('VMA tree against the sorted-array VMA layer it replaced', () => {
  it('merges from the lowest address up: a VMA between two anon_vmas joins the one below it', () => {
    // A (anon_vma 1) | B (none, PROT_READ) | C (anon_vma 2); making B writable again can merge it with A or
    // with C, not both: the merge scan, from the bottom, gives it to A.
    const k = smallKernel({ nodes: 1 });
    const p = k.createProcess('t');
    const RWp = PROT.PROT_READ | PROT.PROT_WRITE;
    const a = k.mmap(p, 0, 3 * PAGE_SIZE, RWp, MAP.MAP_PRIVATE | MAP.MAP_ANONYMOUS);
    expect(k.mprotect(p, a + PAGE_SIZE, PAGE_SIZE, PROT.PROT_READ)).toBe(0);
    k.access(p.mainThread, a, 1, PAGE_SIZE, true, 1);
    k.access(p.mainThread, a + 2 * PAGE_SIZE, 1, PAGE_SIZE, true, 1);
    const [va, , vc] = p.mm.vmas;
    expect(va!.anonVma && vc!.anonVma && va!.anonVma !== vc!.anonVma).toBeTruthy();
    expect(k.mprotect(p, a, 3 * PAGE_SIZE, RWp)).toBe(0);
    expect(p.mm.vmas.map((v) => [(v.start - a) / PAGE_SIZE, (v.end - a) / PAGE_SIZE, v.anonVma])).toEqual([
      [0, 2, va!.anonVma],
      [2, 3, vc!.anonVma],
    ]);
  });

  it('places, splits and merges exactly as before, and keeps the kernel consistent', () => {
    fc.assert(
      fc.property(fc.array(stepArb, { minLength: 1, maxLength: 60, size: 'max' }), (steps) => {
        const k = smallKernel({ nodes: 1, mib: 512 });
        const p = k.createProcess('t');
        const mm = p.mm;
        const ref = new RefMm(mm.mmapBase);
        const base = mm.mmapBase;
        for (const [i, s] of steps.entries()) {
          const at = `step ${i} ${JSON.stringify(s)}`;
          if (s.k === 'mmap') {
            const { addr, len, flags } = mmapArgs(s, base);
            expect(k.mmap(p, addr, len, s.prot, flags), at).toBe(ref.mmap(addr, len, s.prot, flags));
          } else if (s.k === 'munmap') {
            expect(k.munmap(p, base + s.page * PAGE_SIZE, s.pages * PAGE_SIZE), at).toBe(
              ref.munmap(base + s.page * PAGE_SIZE, s.pages * PAGE_SIZE),
            );
          } else if (s.k === 'mprotect') {
            const a = base + s.page * PAGE_SIZE;
            expect(k.mprotect(p, a, s.pages * PAGE_SIZE, s.prot), at).toBe(ref.mprotect(a, s.pages * PAGE_SIZE, s.prot));
          } else {
            // A write to one page of a writable VMA (chosen by index), so no stack grows and nothing faults.
            const writable = ref.vmas.filter((v) => v.flags & VM.WRITE);
            if (!writable.length) continue;
            const v = writable[s.vma % writable.length]!;
            const va = v.start + (s.at % ((v.end - v.start) / PAGE_SIZE)) * PAGE_SIZE;
            expect(k.access(p.mainThread, va, 1, PAGE_SIZE, true, 7).signal, at).toBeUndefined();
            ref.write(v);
          }
          expect(kernelLayout(mm.vmas), at).toEqual(refLayout(ref.vmas));
          expect(mm.mapCount, at).toBe(ref.vmas.length);
          expect(mm.verifyStructures(), at).toEqual([]);
        }
        expect(verifyKernel(k)).toEqual([]);
      }),
      { numRuns: 150 },
    );
  });

  it('places every mapping where the old top-down search over the same layout would, also after stacks grew', () => {
    type GrowStep =
      | { k: 'mmap'; pages: number; grows: boolean; hint: number | null }
      | { k: 'grow'; vma: number; pages: number }
      | { k: 'munmap'; vma: number };
    const growArb: fc.Arbitrary<GrowStep> = fc.oneof(
      {
        weight: 3,
        arbitrary: fc.record({
          k: fc.constant('mmap' as const),
          pages: pagesArb,
          grows: fc.boolean(),
          hint: fc.option(arenaPage, { nil: null }),
        }),
      },
      { weight: 2, arbitrary: fc.record({ k: fc.constant('grow' as const), vma: fc.nat(), pages: fc.integer({ min: 1, max: 600 }) }) },
      { weight: 1, arbitrary: fc.record({ k: fc.constant('munmap' as const), vma: fc.nat() }) },
    );
    fc.assert(
      fc.property(fc.array(growArb, { minLength: 1, maxLength: 60, size: 'max' }), (steps) => {
        const k = smallKernel({ nodes: 1, mib: 256 });
        k.sysfs.write('/sys/kernel/mm/transparent_hugepage/enabled', 'never');
        const p = k.createProcess('t');
        const mm = p.mm;
        for (const [i, s] of steps.entries()) {
          const at = `step ${i} ${JSON.stringify(s)}`;
          if (s.k === 'mmap') {
            const flags = MAP.MAP_PRIVATE | MAP.MAP_ANONYMOUS | (s.grows ? MAP.MAP_GROWSDOWN : 0);
            const addr = s.hint === null ? 0 : mm.mmapBase + s.hint * PAGE_SIZE;
            const want = refGetUnmappedArea(mm.vmas, mm.mmapBase, addr, s.pages * PAGE_SIZE, flags);
            expect(k.mmap(p, addr, s.pages * PAGE_SIZE, PROT.PROT_READ | PROT.PROT_WRITE, flags), at).toBe(want);
          } else if (s.k === 'grow') {
            // A write below a stack: expand_downwards moves its start (and the gap below it shrinks), or SIGSEGV.
            const stacks = mm.vmas.filter((v) => v.flags & VM.GROWSDOWN);
            if (!stacks.length) continue;
            const v = stacks[s.vma % stacks.length]!;
            const va = v.start - s.pages * PAGE_SIZE;
            if (va >= MMAP_MIN_ADDR) k.access(p.mainThread, va, 1, PAGE_SIZE, true, 3);
          } else if (mm.mapCount) {
            const v = mm.vmas[s.vma % mm.mapCount]!;
            expect(k.munmap(p, v.start, v.end - v.start), at).toBe(0);
          }
          expect(mm.verifyStructures(), at).toEqual([]);
        }
        expect(verifyKernel(k)).toEqual([]);
      }),
      { numRuns: 150 },
    );
  });
});
