/**
 * The VMAs of one mm in address order, as a balanced search tree augmented
 * with free-gap sizes: Linux before 6.1 kept them in an rbtree (mm->mm_rb)
 * whose nodes carried rb_subtree_gap, the largest gap below any VMA of the
 * subtree (mm/mmap.c vma_compute_gap, vma_gap_callbacks); since 6.1 the
 * maple tree tracks gaps per node the same way. Here it is an AVL tree of
 * VmaNodes, each holding one VMA and
 *
 *   gap    = startGap(vma) - max(prev.end, floor)   (the free space just below it),
 *   maxGap = the largest gap in its subtree,
 *
 * so that find_vma, the neighbours of a VMA, insertion and removal are
 * O(log n), and the top-down search for an unmapped area visits only
 * subtrees that hold a large enough gap (unmapped_area_topdown).
 *
 * The tree is keyed by vm_start. VMAs may change in place as long as their
 * order does not (a split shortens one before its upper part is inserted,
 * a merge extends one before its neighbour is erased, a stack grows down
 * into free space); whoever moves a VMA's start or end, or its
 * VM_GROWSDOWN flag, calls adjusted() so the gaps follow.
 */
import type { Vma } from './mm_types.ts';
import { alignDown } from './uapi.ts';

class VmaNode {
  left: VmaNode | null = null;
  right: VmaNode | null = null;
  height = 1;
  maxGap: number;
  constructor(
    public vma: Vma,
    public gap: number,
  ) {
    this.maxGap = gap;
  }
}

const heightOf = (n: VmaNode | null): number => (n ? n.height : 0);
const maxGapOf = (n: VmaNode | null): number => (n ? n.maxGap : -Infinity);

/** Recompute a node's height and subtree gap from its children. */
function pull(n: VmaNode): void {
  n.height = 1 + Math.max(heightOf(n.left), heightOf(n.right));
  n.maxGap = Math.max(n.gap, maxGapOf(n.left), maxGapOf(n.right));
}

function rotateRight(n: VmaNode): VmaNode {
  const l = n.left!;
  n.left = l.right;
  l.right = n;
  pull(n);
  pull(l);
  return l;
}

function rotateLeft(n: VmaNode): VmaNode {
  const r = n.right!;
  n.right = r.left;
  r.left = n;
  pull(n);
  pull(r);
  return r;
}

/** Restore the AVL balance at n after one of its subtrees changed height by at most one. */
function balance(n: VmaNode): VmaNode {
  pull(n);
  const bf = heightOf(n.left) - heightOf(n.right);
  if (bf > 1) {
    if (heightOf(n.left!.left) < heightOf(n.left!.right)) n.left = rotateLeft(n.left!);
    return rotateRight(n);
  }
  if (bf < -1) {
    if (heightOf(n.right!.right) < heightOf(n.right!.left)) n.right = rotateRight(n.right!);
    return rotateLeft(n);
  }
  return n;
}

function eraseMin(n: VmaNode): VmaNode | null {
  if (!n.left) return n.right;
  n.left = eraseMin(n.left);
  return balance(n);
}

/** In-order, the VMAs of n's subtree that intersect [start, end). */
function collectRange(n: VmaNode | null, start: number, end: number, out: Vma[]): void {
  if (!n) return;
  const v = n.vma;
  // Ends increase with starts (VMAs do not overlap): nothing left of a VMA ending by start reaches past start.
  if (v.end > start) collectRange(n.left, start, end, out);
  if (v.end > start && v.start < end) out.push(v);
  if (v.start < end) collectRange(n.right, start, end, out);
}

/**
 * The check vm_unmapped_area makes of one gap [gapStart, gapEnd): the
 * highest A aligned to `align` with A >= gapStart and A + len <= gapEnd,
 * or -1.
 */
export function alignedAreaTopdown(gapStart: number, gapEnd: number, len: number, align: number): number {
  if (gapEnd - gapStart < len) return -1;
  const a = alignDown(gapEnd - len, align);
  return a >= gapStart ? a : -1;
}

export class VmaTree {
  private root: VmaNode | null = null;
  private count = 0;

  /**
   * @param floor the lowest address a gap may start at (mmap_min_addr)
   * @param startGap vm_start_gap(): where the gap below a VMA ends
   */
  constructor(
    private readonly floor: number,
    private readonly startGap: (v: Vma) => number,
  ) {}

  /** map_count. */
  get size(): number {
    return this.count;
  }

  /** The free space below v when prev is the VMA before it (negative when a guard gap overlaps prev). */
  private gapBelow(v: Vma, prev: Vma | undefined): number {
    return this.startGap(v) - Math.max(prev ? prev.end : this.floor, this.floor);
  }

  /** find_vma: the first VMA with end > addr. */
  findVma(addr: number): Vma | undefined {
    let n = this.root;
    let found: VmaNode | null = null;
    while (n) {
      if (n.vma.end > addr) {
        found = n;
        n = n.left;
      } else n = n.right;
    }
    return found?.vma;
  }

  /** The last VMA starting below addr. */
  lastBelow(addr: number): Vma | undefined {
    let n = this.root;
    let found: VmaNode | null = null;
    while (n) {
      if (n.vma.start < addr) {
        found = n;
        n = n.right;
      } else n = n.left;
    }
    return found?.vma;
  }

  /** The first VMA starting above addr. */
  firstAbove(addr: number): Vma | undefined {
    let n = this.root;
    let found: VmaNode | null = null;
    while (n) {
      if (n.vma.start > addr) {
        found = n;
        n = n.left;
      } else n = n.right;
    }
    return found?.vma;
  }

  /** Whether v itself is in the tree. */
  has(v: Vma): boolean {
    let n = this.root;
    while (n) {
      if (n.vma === v) return true;
      n = v.start < n.vma.start ? n.left : n.right;
    }
    return false;
  }

  /** Add v, which overlaps no VMA in the tree. */
  insert(v: Vma): void {
    const prev = this.lastBelow(v.start);
    const next = this.firstAbove(v.start);
    this.root = this.insertAt(this.root, new VmaNode(v, this.gapBelow(v, prev)));
    this.count++;
    if (next) this.setGap(next, this.gapBelow(next, v));
  }

  private insertAt(n: VmaNode | null, x: VmaNode): VmaNode {
    if (!n) return x;
    if (x.vma.start < n.vma.start) n.left = this.insertAt(n.left, x);
    else n.right = this.insertAt(n.right, x);
    return balance(n);
  }

  /** Remove v. */
  erase(v: Vma): void {
    if (!this.has(v)) throw new Error(`VmaTree.erase: VMA ${v.start.toString(16)}-${v.end.toString(16)} is not in the tree`);
    const prev = this.lastBelow(v.start);
    const next = this.firstAbove(v.start);
    this.root = this.eraseAt(this.root!, v);
    this.count--;
    if (next) this.setGap(next, this.gapBelow(next, prev));
  }

  private eraseAt(n: VmaNode, v: Vma): VmaNode | null {
    if (n.vma !== v) {
      if (v.start < n.vma.start) n.left = this.eraseAt(n.left!, v);
      else n.right = this.eraseAt(n.right!, v);
      return balance(n);
    }
    if (!n.left) return n.right;
    if (!n.right) return n.left;
    // Two children: this node takes its successor's VMA, and the successor's node goes.
    let s = n.right;
    while (s.left) s = s.left;
    n.vma = s.vma;
    n.gap = s.gap;
    n.right = eraseMin(n.right);
    return balance(n);
  }

  /** v's start, end or VM_GROWSDOWN changed in place (its order did not): the gaps below it and above it follow. */
  adjusted(v: Vma): void {
    this.setGap(v, this.gapBelow(v, this.lastBelow(v.start)));
    const next = this.firstAbove(v.start);
    if (next) this.setGap(next, this.gapBelow(next, v));
  }

  /** Set the gap of v's node and the subtree gaps on the path down to it. */
  private setGap(v: Vma, gap: number): void {
    const path: VmaNode[] = [];
    let n = this.root;
    while (n && n.vma !== v) {
      path.push(n);
      n = v.start < n.vma.start ? n.left : n.right;
    }
    if (!n) throw new Error(`VmaTree: VMA ${v.start.toString(16)} is not in the tree`);
    n.gap = gap;
    pull(n);
    for (let i = path.length - 1; i >= 0; i--) pull(path[i]!);
  }

  /** The VMAs intersecting [start, end), in address order. */
  range(start: number, end: number): Vma[] {
    const out: Vma[] = [];
    collectRange(this.root, start, end, out);
    return out;
  }

  /** Every VMA in address order. */
  toArray(): Vma[] {
    const out: Vma[] = [];
    const stack: VmaNode[] = [];
    let n = this.root;
    while (n || stack.length) {
      while (n) {
        stack.push(n);
        n = n.left;
      }
      n = stack.pop()!;
      out.push(n.vma);
      n = n.right;
    }
    return out;
  }

  /**
   * unmapped_area_topdown over the gaps below the VMAs that start under
   * `limit`: the highest address A, aligned to `align`, with [A, A + len)
   * inside one gap, in the highest gap holding such an A. The gaps are
   * tried from the top down; subtrees whose largest gap is under len are
   * not visited. -1 if there is none.
   */
  gapTopdown(limit: number, len: number, align: number): number {
    return this.gapTopdownAt(this.root, limit, len, align);
  }

  private gapTopdownAt(n: VmaNode | null, limit: number, len: number, align: number): number {
    if (!n || n.maxGap < len) return -1;
    if (n.vma.start < limit) {
      const r = this.gapTopdownAt(n.right, limit, len, align);
      if (r >= 0) return r;
      if (n.gap >= len) {
        const gapEnd = this.startGap(n.vma);
        const a = alignedAreaTopdown(gapEnd - n.gap, gapEnd, len, align);
        if (a >= 0) return a;
      }
    }
    return this.gapTopdownAt(n.left, limit, len, align);
  }

  /** The tree's own invariants (order, balance, heights, gaps, count), as error strings; for verifyKernel. */
  verify(): string[] {
    const errs: string[] = [];
    let prev: Vma | undefined;
    let seen = 0;
    const check = (n: VmaNode | null): { h: number; g: number } => {
      if (!n) return { h: 0, g: -Infinity };
      const l = check(n.left);
      const v = n.vma;
      seen++;
      if (prev && prev.start >= v.start) errs.push(`VMA tree out of order at ${v.start.toString(16)}`);
      const gap = this.gapBelow(v, prev);
      if (n.gap !== gap) errs.push(`VMA tree: gap below ${v.start.toString(16)} is ${n.gap}, should be ${gap}`);
      prev = v;
      const r = check(n.right);
      if (Math.abs(l.h - r.h) > 1) errs.push(`VMA tree unbalanced at ${v.start.toString(16)}`);
      const h = 1 + Math.max(l.h, r.h);
      const g = Math.max(n.gap, l.g, r.g);
      if (n.height !== h) errs.push(`VMA tree: height at ${v.start.toString(16)} is ${n.height}, should be ${h}`);
      if (n.maxGap !== g) errs.push(`VMA tree: subtree gap at ${v.start.toString(16)} is ${n.maxGap}, should be ${g}`);
      return { h, g };
    };
    check(this.root);
    if (seen !== this.count) errs.push(`VMA tree holds ${seen} VMAs, counts ${this.count}`);
    return errs;
  }
}
