/**
 * NUMA memory policies (mm/mempolicy.c): set_mempolicy, get_mempolicy and
 * mbind with their validation order and errnos, node masks with
 * MPOL_F_STATIC_NODES / MPOL_F_RELATIVE_NODES, and the node an allocation
 * goes to under each mode (interleave by the page's index in its VMA,
 * for VMA and task policies alike; round robin only without a VMA).
 */
import type { Kernel } from './kernel.ts';
import type { Process, Thread } from './sched.ts';
import type { Vma } from './mm_types.ts';
import { HPAGE_PMD_NR, MPOL, PAGE_SIZE, PMD_SIZE, alignDown, alignUp, neg, type SysRet } from './uapi.ts';
import { PG } from './page.ts';
import { followPage as followPageOf } from './memory.ts';
import {
  MigrateBatches,
  mappedShared as mappedSharedOf,
  migrateMappedPage as migrateMappedPageOf,
  migrateToNode as migrateToNodeOf,
} from './migrate.ts';
import { modifyVmaPolicy } from './mmap.ts';
import { capable, ptraceMayAccess } from './cred.ts';
import { vmaPolicy } from './shmem.ts';

export const MPOL_MAX = 7;
export const MAX_NUMNODES = 1024;
const MODE_FLAGS = MPOL.MPOL_F_STATIC_NODES | MPOL.MPOL_F_RELATIVE_NODES | MPOL.MPOL_F_NUMA_BALANCING;
const MF_VALID = MPOL.MPOL_MF_STRICT | MPOL.MPOL_MF_MOVE | MPOL.MPOL_MF_MOVE_ALL;

export interface Mempolicy {
  /** MPOL_PREFERRED, MPOL_BIND, MPOL_INTERLEAVE, MPOL_LOCAL, MPOL_PREFERRED_MANY, MPOL_WEIGHTED_INTERLEAVE */
  mode: number;
  /** MPOL_F_STATIC_NODES / MPOL_F_RELATIVE_NODES / MPOL_F_NUMA_BALANCING */
  flags: number;
  /** The effective nodes (sorted). */
  nodes: number[];
  /** The mask as the caller gave it (reported back for STATIC/RELATIVE policies). */
  userNodes: number[];
  /** The cpuset's mems when the nodes were last computed (w.cpuset_mems_allowed). */
  allowedAt?: number[];
}

/**
 * __mpol_equal: same mode and flags, the user's mask only for STATIC/RELATIVE
 * policies (mpol_store_user_nodemask), and the same effective nodes.
 */
export function policyEqual(a: Mempolicy | null, b: Mempolicy | null): boolean {
  if (a === b) return true;
  if (!a || !b || a.mode !== b.mode || a.flags !== b.flags) return false;
  if (a.flags & (MPOL.MPOL_F_STATIC_NODES | MPOL.MPOL_F_RELATIVE_NODES) && a.userNodes.join() !== b.userNodes.join()) return false;
  return a.nodes.join() === b.nodes.join();
}

/** sanitize_mpol_flags: split mode and flags; -EINVAL for a bad combination. */
function sanitize(modeIn: number): { mode: number; flags: number } | number {
  const flags = modeIn & MODE_FLAGS;
  const mode = modeIn & ~MODE_FLAGS;
  if (mode < 0 || mode >= MPOL_MAX) return neg('EINVAL');
  if (flags & MPOL.MPOL_F_STATIC_NODES && flags & MPOL.MPOL_F_RELATIVE_NODES) return neg('EINVAL');
  if (flags & MPOL.MPOL_F_NUMA_BALANCING && mode !== MPOL.MPOL_BIND && mode !== MPOL.MPOL_PREFERRED_MANY) return neg('EINVAL');
  return { mode, flags };
}

/** Nodes with memory the task may use (cpuset mems_allowed ∩ N_MEMORY). */
export function memsAllowed(k: Kernel, p: Process): number[] {
  const withMemory = k.host.nodes.filter((n) => n.memory > 0).map((n) => n.id);
  return p.memsAllowed ? withMemory.filter((n) => p.memsAllowed!.includes(n)) : withMemory;
}

/** bitmap_remap: node n, the i-th of `from`, becomes the (i mod |to|)-th of `to`; others stay. */
function nodesRemap(nodes: number[], from: number[], to: number[]): number[] {
  return [...new Set(nodes.map((n) => (from.includes(n) ? to[from.indexOf(n) % to.length]! : n)))].sort((a, b) => a - b);
}

/**
 * A policy after its cpuset's mems change (mpol_rebind_policy): STATIC
 * keeps the user's nodes that are allowed, RELATIVE folds the user's mask
 * onto the new set, the rest are remapped by position from the old set; an
 * empty result falls back to all the new nodes. PREFERRED keeps its node.
 */
function rebind(pol: Mempolicy, allowed: number[], old: number[]): void {
  if (pol.mode === MPOL.MPOL_LOCAL || pol.mode === MPOL.MPOL_PREFERRED) {
    pol.allowedAt = allowed;
    return;
  }
  let nodes: number[];
  if (pol.flags & MPOL.MPOL_F_STATIC_NODES) nodes = pol.userNodes.filter((n) => allowed.includes(n));
  else if (pol.flags & MPOL.MPOL_F_RELATIVE_NODES) nodes = relativeNodes(pol.userNodes, allowed);
  else {
    nodes = nodesRemap(pol.nodes, pol.allowedAt ?? old, allowed);
    pol.allowedAt = allowed;
  }
  pol.nodes = nodes.length ? nodes : [...allowed];
}

/**
 * Write a process's cpuset.mems (cpuset_update_task_memory_state): every
 * task and VMA policy of the process is rebound. Existing pages stay where
 * they are (cpuset.memory_migrate is 0 by default).
 */
export function setCpusetMems(k: Kernel, p: Process, mems: readonly number[]): SysRet {
  const valid = mems.filter((n) => k.host.nodes.some((x) => x.id === n && x.memory > 0));
  if (!valid.length || valid.length !== mems.length) return neg('EINVAL');
  const old = memsAllowed(k, p);
  p.memsAllowed = [...new Set(valid)].sort((a, b) => a - b);
  const allowed = memsAllowed(k, p);
  const seen = new Set<Mempolicy>();
  const each = (pol: Mempolicy | null): void => {
    if (pol && !seen.has(pol)) {
      seen.add(pol);
      rebind(pol, allowed, old);
    }
  };
  for (const t of p.threads) each(t.mempolicy);
  for (const v of p.mm.vmas) each(v.policy);
  return 0;
}

/** nodes_fold + nodes_onto: relative node i is the (i mod |allowed|)-th allowed node. */
function relativeNodes(user: number[], allowed: number[]): number[] {
  const w = allowed.length;
  return [...new Set(user.map((i) => allowed[i % w]!))].sort((a, b) => a - b);
}

/**
 * mpol_new + mpol_set_nodemask: the policy for (mode, flags, nodes), null for
 * MPOL_DEFAULT, or -errno.
 */
export function mpolNew(k: Kernel, p: Process, modeIn: number, nodesIn: readonly number[]): Mempolicy | null | number {
  const s = sanitize(modeIn);
  if (typeof s === 'number') return s;
  let { mode } = s;
  const { flags } = s;
  const user = [...new Set(nodesIn)].sort((a, b) => a - b);
  if (user.some((n) => n >= MAX_NUMNODES)) return neg('EINVAL');
  if (mode === MPOL.MPOL_DEFAULT) return user.length ? neg('EINVAL') : null;
  if (mode === MPOL.MPOL_PREFERRED) {
    if (!user.length) {
      if (flags & (MPOL.MPOL_F_STATIC_NODES | MPOL.MPOL_F_RELATIVE_NODES)) return neg('EINVAL');
      mode = MPOL.MPOL_LOCAL;
    }
  } else if (mode === MPOL.MPOL_LOCAL) {
    if (user.length || flags & (MPOL.MPOL_F_STATIC_NODES | MPOL.MPOL_F_RELATIVE_NODES)) return neg('EINVAL');
  } else if (!user.length) return neg('EINVAL');
  if (mode === MPOL.MPOL_LOCAL) return { mode, flags, nodes: [], userNodes: [] };
  const allowed = memsAllowed(k, p);
  const eff = flags & MPOL.MPOL_F_RELATIVE_NODES ? relativeNodes(user, allowed) : user.filter((n) => allowed.includes(n));
  if (!eff.length) return neg('EINVAL');
  const nodes = mode === MPOL.MPOL_PREFERRED ? [eff[0]!] : eff;
  return { mode, flags, nodes, userNodes: user, allowedAt: allowed };
}

export function sysSetMempolicy(k: Kernel, t: Thread, mode: number, nodes: readonly number[]): SysRet {
  const pol = mpolNew(k, t.process, mode, nodes);
  if (typeof pol === 'number') return pol;
  t.mempolicy = pol;
  t.ilPrev = -1;
  return 0;
}

export interface GetMempolicyResult {
  mode: number;
  nodes: number[];
}

/** do_get_mempolicy. Faults the page in (as a read) for MPOL_F_NODE|MPOL_F_ADDR. */
export function sysGetMempolicy(
  k: Kernel,
  t: Thread,
  flags: number,
  addr: number,
  pageNode: (va: number) => number | undefined,
): GetMempolicyResult | number {
  const F = MPOL.MPOL_F_NODE | MPOL.MPOL_F_ADDR | MPOL.MPOL_F_MEMS_ALLOWED;
  if (flags & ~F) return neg('EINVAL');
  if (flags & MPOL.MPOL_F_MEMS_ALLOWED) {
    if (flags & (MPOL.MPOL_F_NODE | MPOL.MPOL_F_ADDR)) return neg('EINVAL');
    return { mode: 0, nodes: memsAllowed(k, t.process) };
  }
  let pol: Mempolicy | null;
  if (flags & MPOL.MPOL_F_ADDR) {
    const vma = t.process.mm.vmaAt(addr);
    if (!vma) return neg('EFAULT');
    pol = vmaPolicy(vma, addr); // a shmem mapping's is its file's shared policy (vm_ops->get_policy)
  } else {
    if (addr) return neg('EINVAL');
    pol = t.mempolicy;
  }
  let mode: number;
  if (flags & MPOL.MPOL_F_NODE) {
    if (flags & MPOL.MPOL_F_ADDR) {
      const n = pageNode(addr);
      if (n === undefined) return neg('EFAULT');
      mode = n;
    } else if (pol && pol === t.mempolicy && (pol.mode === MPOL.MPOL_INTERLEAVE || pol.mode === MPOL.MPOL_WEIGHTED_INTERLEAVE)) {
      mode = nextNodeIn(t.ilPrev, pol.nodes);
    } else return neg('EINVAL');
  } else mode = pol ? pol.mode | (pol.flags & MODE_FLAGS) : MPOL.MPOL_DEFAULT;
  const nodes = !pol ? [] : pol.flags & (MPOL.MPOL_F_STATIC_NODES | MPOL.MPOL_F_RELATIVE_NODES) ? pol.userNodes : pol.nodes;
  return { mode, nodes: [...nodes] };
}

function nextNodeIn(prev: number, nodes: number[]): number {
  for (const n of nodes) if (n > prev) return n;
  return nodes[0]!;
}

/** policy_node / policy_nodemask: where an allocation of `order` at va in vma goes. */
export interface PolicyPlacement {
  /** Node whose zonelist is walked (the preferred node). */
  nid: number;
  /** Allowed nodes, or undefined for all. */
  nodemask?: number[];
  /** MPOL_PREFERRED_MANY: try the mask first, then any node. */
  fallbackAll?: boolean;
  /** Allocated by interleave (numa_interleave counts hits on this node). */
  interleave?: boolean;
}

export function policyPlacement(k: Kernel, t: Thread, vma: Vma | null, va: number, order: number): PolicyPlacement {
  const pl = placementByPolicy(k, t, vma, va, order);
  const cpuset = t.process.memsAllowed;
  if (!cpuset) return pl;
  // The cpuset limits every allocation (__cpuset_zone_allowed).
  const allowed = memsAllowed(k, t.process);
  const mask = (pl.nodemask ?? allowed).filter((n) => allowed.includes(n));
  return { ...pl, nodemask: mask.length ? mask : allowed, fallbackAll: false };
}

/** get_vma_policy's interleave index of the 2^order allocation at va: vm_pgoff + offset, in 2^order-page units. */
export function interleaveIndex(vma: Vma, va: number, order: number): number {
  return Math.floor(vma.pgoff / 2 ** order) + Math.floor((va - vma.start) / (PAGE_SIZE * 2 ** order));
}

/** interleave_nid: the (ilx mod n)-th of the policy's n nodes. */
function interleaveNid(pol: Mempolicy, ilx: number): number {
  return pol.nodes[ilx % pol.nodes.length]!;
}

/** interleave_nodes: the task's round robin (il_prev), for allocations with no interleave index. */
function interleaveNodes(t: Thread, pol: Mempolicy): number {
  const nid = nextNodeIn(t.ilPrev, pol.nodes);
  t.ilPrev = nid;
  return nid;
}

function placementByPolicy(k: Kernel, t: Thread, vma: Vma | null, va: number, order: number): PolicyPlacement {
  const local = k.cpuToNode(t.cpu);
  const pol = (vma && vmaPolicy(vma, va)) ?? t.mempolicy;
  if (!pol) return { nid: local };
  switch (pol.mode) {
    case MPOL.MPOL_LOCAL:
      return { nid: local };
    case MPOL.MPOL_PREFERRED:
      return { nid: pol.nodes[0]! };
    case MPOL.MPOL_BIND:
      return { nid: local, nodemask: pol.nodes };
    case MPOL.MPOL_PREFERRED_MANY:
      return { nid: local, nodemask: pol.nodes, fallbackAll: true };
    case MPOL.MPOL_INTERLEAVE:
    case MPOL.MPOL_WEIGHTED_INTERLEAVE: {
      // All weights are 1 (no HMAT data): weighted interleave places like interleave.
      // get_vma_policy gives an allocation in a VMA the interleave index vm_pgoff + offset (in units of the
      // allocation's order) whether the policy is the VMA's or the task's (Linux 6.7+), and policy_nodemask
      // places it by interleave_nid; only allocations without one (NO_INTERLEAVE_INDEX) go round robin from
      // the task's il_prev (interleave_nodes).
      const nid = vma ? interleaveNid(pol, interleaveIndex(vma, va, order)) : interleaveNodes(t, pol);
      return { nid, nodemask: [nid], interleave: true };
    }
  }
  return { nid: local };
}

/** Validation shared by mbind before it touches the address space; returns the policy or -errno. */
export function mbindPolicy(
  k: Kernel,
  p: Process,
  start: number,
  len: number,
  mode: number,
  nodes: readonly number[],
  flags: number,
): { pol: Mempolicy | null; end: number; flags: number } | number {
  const s = sanitize(mode);
  if (typeof s === 'number') return s;
  if (nodes.some((n) => n >= MAX_NUMNODES)) return neg('EINVAL');
  if (flags & ~MF_VALID) return neg('EINVAL');
  if (flags & MPOL.MPOL_MF_MOVE_ALL && !capable(p, 'CAP_SYS_NICE')) return neg('EPERM');
  if (start % PAGE_SIZE) return neg('EINVAL');
  if ((mode & ~MODE_FLAGS) === MPOL.MPOL_DEFAULT) flags &= ~MPOL.MPOL_MF_STRICT;
  const end = start + alignUp(len, PAGE_SIZE);
  if (end < start) return neg('EINVAL');
  if (end === start) return { pol: null, end, flags: -1 };
  const pol = mpolNew(k, p, mode, nodes);
  if (typeof pol === 'number') return pol;
  return { pol, end, flags };
}

/** The numa_maps name of a policy: "default", "bind:0-1", "interleave:0,2", "prefer:1", "local". */
export function policyString(pol: Mempolicy | null): string {
  if (!pol) return 'default';
  const name: Record<number, string> = {
    [MPOL.MPOL_PREFERRED]: 'prefer',
    [MPOL.MPOL_BIND]: 'bind',
    [MPOL.MPOL_INTERLEAVE]: 'interleave',
    [MPOL.MPOL_LOCAL]: 'local',
    [MPOL.MPOL_PREFERRED_MANY]: 'prefer (many)',
    [MPOL.MPOL_WEIGHTED_INTERLEAVE]: 'weighted interleave',
  };
  let s = name[pol.mode] ?? 'default';
  if (pol.flags & MODE_FLAGS) {
    s += '=';
    if (pol.flags & MPOL.MPOL_F_STATIC_NODES) s += 'static';
    else if (pol.flags & MPOL.MPOL_F_RELATIVE_NODES) s += 'relative';
    if (pol.flags & MPOL.MPOL_F_NUMA_BALANCING)
      s += `${pol.flags & (MPOL.MPOL_F_STATIC_NODES | MPOL.MPOL_F_RELATIVE_NODES) ? '|' : ''}balancing`;
  }
  if (pol.nodes.length) s += `:${nodeList(pol.nodes)}`;
  return s;
}

/** "0-2,5": a node list as the kernel prints it (%*pbl). */
export function nodeList(nodes: readonly number[]): string {
  const out: string[] = [];
  for (let i = 0; i < nodes.length;) {
    let j = i;
    while (j + 1 < nodes.length && nodes[j + 1] === nodes[j]! + 1) j++;
    out.push(j > i ? `${nodes[i]}-${nodes[j]}` : String(nodes[i]));
    i = j + 1;
  }
  return out.join(',');
}

/** The node zone_statistics() treats as preferred: the first allowed node of nid's zonelist. */
export function preferredNode(k: Kernel, pl: PolicyPlacement): number {
  if (!pl.nodemask) return pl.nid;
  return k.phys.zonelists[pl.nid]!.find((n) => pl.nodemask!.includes(n)) ?? pl.nid;
}

/**
 * Allocate 2^order pages as a policy places them: the preferred node's
 * zonelist filtered by the policy's nodes (then any node for
 * MPOL_PREFERRED_MANY), with NUMA statistics. -1 when no allowed node has
 * a free block.
 */
export function allocPolicyPages(k: Kernel, pl: PolicyPlacement, order: number, mt: 0 | 1, local: number): number {
  let pfn = k.phys.alloc({ order, mt, nid: pl.nid, nodemask: pl.nodemask });
  if (pfn < 0 && pl.fallbackAll) pfn = k.phys.alloc({ order, mt, nid: pl.nid });
  if (pfn >= 0) accountPolicyAlloc(k, pl, pfn, order, local);
  return pfn;
}

export function accountPolicyAlloc(k: Kernel, pl: PolicyPlacement, pfn: number, order: number, local: number): void {
  k.accountAlloc(pfn, preferredNode(k, pl), 2 ** order, local);
  if (pl.interleave && k.phys.nodeOfPfn(pfn) === pl.nid) k.vmstat.numa[pl.nid]!.numa_interleave++;
}

/**
 * mbind(2): validate, refuse holes (EFAULT), with MPOL_MF_STRICT refuse
 * misplaced pages (EIO) unless they can be moved, split the VMAs and set
 * their policy, then move misplaced pages for MPOL_MF_MOVE(_ALL) to where
 * the new policy places them.
 */
export function sysMbind(
  k: Kernel,
  t: Thread,
  start: number,
  len: number,
  mode: number,
  nodes: readonly number[],
  flagsIn: number,
): SysRet {
  const p = t.process;
  const v = mbindPolicy(k, p, start, len, mode, nodes, flagsIn);
  if (typeof v === 'number') return v;
  if (v.flags < 0) return 0;
  const { pol, end, flags } = v;
  const mm = p.mm;
  // queue_pages_range: a range with no VMA at all is EFAULT; holes are too,
  // except for MPOL_DEFAULT (MPOL_MF_DISCONTIG_OK). Nothing is changed then.
  const vmas = mm.vmasIn(start, end);
  if (!vmas.length) return neg('EFAULT');
  if (pol) {
    let covered = start;
    for (const vma of vmas) {
      if (vma.start > covered) return neg('EFAULT');
      covered = vma.end;
    }
    if (covered < end) return neg('EFAULT');
  }
  // Misplaced pages (queue_pages_range with MPOL_MF_INVERT): present pages
  // whose node is not in the caller's raw nodemask. MPOL_LOCAL and
  // MPOL_DEFAULT pass an empty mask, so every present page counts.
  const inPolicy = (nid: number): boolean => nodes.includes(nid);
  const misplaced: number[] = [];
  const move = (flags & (MPOL.MPOL_MF_MOVE | MPOL.MPOL_MF_MOVE_ALL)) !== 0;
  if (flags & (MPOL.MPOL_MF_STRICT | MPOL.MPOL_MF_MOVE | MPOL.MPOL_MF_MOVE_ALL))
    for (const vma of mm.vmasIn(start, end)) {
      const step = vma.isHugetlb() ? vma.hugePageSize() : PAGE_SIZE;
      const e = Math.min(end, vma.end);
      // queue_folios_pte_range per PMD slot in use (walk_page_range skips the others).
      for (let va = mm.pgtable.skipNone(Math.max(start, vma.start), e, step); va < e; va = mm.pgtable.walkNext(va, e, step)) {
        const pfn = followPageOf(mm, va);
        if (pfn >= 0 && !inPolicy(k.phys.nodeOfPfn(pfn))) misplaced.push(va);
      }
    }
  // STRICT without MOVE: queue_pages_range fails with EIO before
  // mbind_range, so the policy is not applied (Linux 6.18 here agrees).
  if (!move && flags & MPOL.MPOL_MF_STRICT && misplaced.length) return neg('EIO');
  const r = modifyVmaPolicy(k, mm, start, end, pol);
  if (r < 0) return r;
  let failed = 0;
  // Each folio is queued once: a THP's later subpages, and pages this call
  // already moved (an empty mask queues every page), are skipped.
  const moved = new Set<number>();
  const folioOf = (pfn: number): number => (k.mem.flags(pfn) & (PG.head | PG.tail) ? pfn - (pfn % HPAGE_PMD_NR) : pfn);
  // The queued folios go where the new policy places them (alloc_migration_target_by_mpol), MPOL_DEFAULT's
  // being the task's (get_task_policy). An interleave policy places each folio by ilx + (folio->index >> order),
  // ilx set so the first folio goes where get_vma_policy would place it.
  let ilxBase: number | undefined;
  // The queued folios are one migrate_pages() list (migrate_pages_batch's batches).
  const batches = new MigrateBatches(k);
  if (move)
    for (const va of misplaced) {
      const vma = mm.vmaAt(va)!;
      const pfn = followPageOf(mm, va);
      if (pfn < 0 || inPolicy(k.phys.nodeOfPfn(pfn)) || moved.has(folioOf(pfn))) continue;
      // migrate_folio_add: without MPOL_MF_MOVE_ALL a shared folio is left where it is, which is not a failure.
      if (mappedSharedOf(k, pfn) && !(flags & MPOL.MPOL_MF_MOVE_ALL)) continue;
      const huge = vma.isHugetlb() ? vma.hugePageSize() : k.mem.flags(pfn) & (PG.head | PG.tail) ? PMD_SIZE : PAGE_SIZE;
      const order = Math.log2(huge / PAGE_SIZE);
      const fva = alignDown(va, huge);
      const newPol = vmaPolicy(vma, fva) ?? t.mempolicy;
      let dest: number;
      if (newPol && (newPol.mode === MPOL.MPOL_INTERLEAVE || newPol.mode === MPOL.MPOL_WEIGHTED_INTERLEAVE)) {
        const index = Math.floor((vma.pgoff * PAGE_SIZE + (fva - vma.start)) / huge);
        ilxBase ??= interleaveIndex(vma, fva, order) - index;
        dest = interleaveNid(newPol, ilxBase + index);
      } else dest = preferredNode(k, policyPlacement(k, t, vma, fva, order));
      if (migrateMappedPageOf(k, mm, vma, va, dest, moved, batches) < 0) failed++;
    }
  return failed && flags & MPOL.MPOL_MF_STRICT ? neg('EIO') : 0;
}

/**
 * process_mbind(2): mbind on another process's address space, a proposal
 * never merged ("[RFC PATCH] mm/mbind: Introduce process_mbind() syscall
 * for external memory binding", Vinicius Petrucci, linux-mm, 2023-11-22,
 * <ZV5zGROLefrsEcHJ@r13-u19.micron.com>; after Zhongkun He's
 * pidfd_set_mempolicy() RFC of 2022-10). Behind the switchable feature
 * /sys/kernel/memtwin/features/process_mbind, off by default: ENOSYS then,
 * as an unimplemented syscall. Linux itself lets a tool outside a process
 * only move its pages (migrate_pages(2), move_pages(2)); the policy of
 * each range stays the process's own, so its later faults go where that
 * policy says.
 *
 * As the RFC: the target by pidfd (ESRCH once it exited), mm_access with
 * PTRACE_MODE_READ_FSCREDS and CAP_SYS_NICE (else EPERM), then do_mbind on
 * the target's mm for each range of the iovec, stopping at the first
 * error. The RFC's do_mbind still read the caller's cpuset and task policy
 * (Zhongkun He's review); here the nodes are resolved against the
 * target's cpuset and MPOL_DEFAULT's migration target is the target's
 * task policy, as a working version must. Its costs are mbind's: the VMA
 * splits, and for MPOL_MF_MOVE the page migrations, charged to the caller.
 */
export function sysProcessMbind(
  k: Kernel,
  caller: Process,
  target: Process | undefined,
  ranges: readonly { start: number; len: number }[],
  mode: number,
  nodes: readonly number[],
  flags: number,
): SysRet {
  if (!k.processMbind.enabled) return neg('ENOSYS');
  if (!target || target.exited) return neg('ESRCH');
  if (!ptraceMayAccess(caller, target, 'READ_FSCREDS')) return neg('EPERM');
  if (!capable(caller, 'CAP_SYS_NICE')) return neg('EPERM');
  for (const r of ranges) {
    const ret = sysMbind(k, target.mainThread, r.start, r.len, mode, nodes, flags);
    if (ret < 0) return ret;
  }
  return 0;
}

/**
 * migrate_pages(2): kernel_migrate_pages' checks, then do_migrate_pages'
 * order for overlapping node sets: repeatedly pick a source node whose
 * destination (node_remap) is not itself still to be vacated, so no page
 * moves twice. With nodes of different counts, sources that are also
 * destinations stay. Returns the pages that could not be moved.
 */
export function sysMigratePages(
  k: Kernel,
  caller: Process,
  target: Process | undefined,
  oldNodes: readonly number[],
  newNodes: readonly number[],
): SysRet {
  if ([...oldNodes, ...newNodes].some((n) => n >= MAX_NUMNODES)) return neg('EINVAL');
  if (!target || target.exited) return neg('ESRCH');
  // "Use the regular ptrace_may_access() checks", then: new nodes outside
  // the target's cpuset need CAP_SYS_NICE (even for the caller itself);
  // only then are they masked with the caller's own cpuset.
  if (!ptraceMayAccess(caller, target, 'READ_REALCREDS')) return neg('EPERM');
  const targetAllowed = memsAllowed(k, target);
  if (!newNodes.every((n) => targetAllowed.includes(n)) && !capable(caller, 'CAP_SYS_NICE')) return neg('EPERM');
  // nodes_and(*new, *new, cpuset_mems_allowed(current)): the remapping below uses the masked set.
  const allowed = memsAllowed(k, caller);
  const to = [...new Set(newNodes)].filter((n) => allowed.includes(n)).sort((a, b) => a - b);
  const from = [...new Set(oldNodes)].sort((a, b) => a - b);
  if (!to.length) return neg('EINVAL');
  const remap = (s: number): number => to[from.indexOf(s) % to.length]!;
  let tmp = [...from];
  let busy = 0;
  while (tmp.length) {
    let source = -1;
    let dest = 0;
    for (const s of tmp) {
      if (from.length !== to.length && to.includes(s)) continue;
      const d = remap(s);
      if (s === d) continue;
      source = s;
      dest = d;
      if (!tmp.includes(dest)) break;
    }
    if (source < 0) break;
    tmp = tmp.filter((n) => n !== source);
    // do_migrate_pages(mm, old, new, capable(CAP_SYS_NICE) ? MPOL_MF_MOVE_ALL : MPOL_MF_MOVE)
    busy += migrateToNodeOf(k, target.mm, source, dest, capable(caller, 'CAP_SYS_NICE'));
  }
  return busy;
}
