/** Small hosts and kernels for tests. */
import { Kernel } from '../kernel/kernel.ts';
import { CostProfile } from '../sim/cost_profile.ts';
import { hostFromFile } from '../sim/host.ts';
import { MADV, MAP, PAGE_SIZE, PROT } from '../kernel/uapi.ts';
import { followPage } from '../kernel/memory.ts';
import { LRU_INACTIVE_ANON } from '../kernel/swap.ts';
import type { MmStruct } from '../kernel/mm_types.ts';

export const MiB = 1 << 20;

/** A host of `nodes` nodes of `mib` MiB each, 2 CPUs per node, 2M and 1G hugepage sizes. */
export function smallKernel(opts: { nodes?: number; mib?: number; seed?: number } = {}): Kernel {
  const nodes = opts.nodes ?? 2;
  const mib = opts.mib ?? 64;
  const host = hostFromFile({
    name: 'test',
    nodes: Array.from({ length: nodes }, (_, i) => ({ id: i, memory: mib * MiB, cpus: [2 * i, 2 * i + 1] })),
    distances: Array.from({ length: nodes }, (_, i) => Array.from({ length: nodes }, (_, j) => (i === j ? 10 : 21))),
    hugepage_sizes: ['2M', '1G'],
  });
  return new Kernel({ host, costs: CostProfile.default(), seed: opts.seed ?? 1 });
}

export const RW = PROT.PROT_READ | PROT.PROT_WRITE;
export const ANON = MAP.MAP_PRIVATE | MAP.MAP_ANONYMOUS;
export const SHARED_ANON = MAP.MAP_SHARED | MAP.MAP_ANONYMOUS;

/** Fill one node with 4K pages (of a new process), then free every other one: no order-9 block is left. */
export function fragment(k: Kernel, mib: number): { p: ReturnType<Kernel['createProcess']>; a: number; len: number } {
  const p = k.createProcess('frag');
  const len = mib * 2 ** 20;
  const a = k.mmap(p, 0, len, RW, ANON);
  k.madvise(p, a, len, MADV.MADV_NOHUGEPAGE);
  k.access(p.mainThread, a, len, PAGE_SIZE, true, 0x5a);
  for (let off = 0; off < len; off += 2 * PAGE_SIZE) k.madvise(p, a + off, PAGE_SIZE, MADV.MADV_DONTNEED);
  return { p, a, len };
}

/**
 * What a run path and the page-by-page path must leave alike in a one-node
 * kernel after an anonymous mapping of `pages` pages at `a` was filled:
 * each page's frame and what `pageExtra` adds (content token and flags
 * always), the inactive anon LRU in order, vmstat, the clock, the mm's
 * anonymous RSS and the node's free blocks.
 */
export function anonStateOf(
  k: Kernel,
  mm: MmStruct,
  a: number,
  pages: number,
  pageExtra: (pfn: number, i: number) => string | number,
): { pages: string; lru: number[]; vmstat: Record<string, number>; clock: number; rssAnon: number; free: string } {
  const lru: number[] = [];
  for (let f = k.nodeLruvec[0]!.head[LRU_INACTIVE_ANON]!; f >= 0; f = k.mem.next(f)) lru.push(f);
  const list = Array.from({ length: pages }, (_, i) => {
    const pfn = followPage(mm, a + i * PAGE_SIZE);
    return pfn < 0 ? pfn : `${pfn}:${k.mem.token(pfn)}:${k.mem.flags(pfn)}:${pageExtra(pfn, i)}`;
  }).join(' ');
  return {
    pages: list,
    lru,
    vmstat: k.vmstat.snapshot(),
    clock: k.clock.now(),
    rssAnon: mm.rssAnon,
    free: [...k.phys.zones[0]!.freeBlocks()].join(' '),
  };
}
