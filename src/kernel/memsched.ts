/**
 * memsched groups: a proposal discussed upstream, never merged, behind the
 * switchable feature `/sys/kernel/memtwin/features/memsched` (off by
 * default; the calls fail with ENOSYS while it is off, as an unmerged
 * syscall would).
 *
 * ms_tbind(thread, group) and ms_mbind(addr, len, group) put threads and
 * address ranges into a group that the kernel keeps on one node: the group
 * gets a home node when it is first used (where it fits, the node with the
 * fewest groups per CPU, then the most free memory: homeNode), its threads run on the home node's CPUs, and its ranges prefer
 * the home node (they spill to the nearest other node when it is full, so a
 * group larger than a node still runs). ms_move(group, node) moves the group
 * as a whole: threads to the new node's CPUs, memory migrated.
 */
import type { Kernel } from './kernel.ts';
import type { Process, Thread } from './sched.ts';
import { MPOL, PAGE_SIZE, alignUp, neg, type SysRet } from './uapi.ts';
import { modifyVmaPolicy } from './mmap.ts';
import { migrateMappedPage } from './migrate.ts';
import { followPage } from './memory.ts';

interface Group {
  node: number;
  threads: Set<Thread>;
  ranges: { p: Process; start: number; end: number }[];
}

export class Memsched {
  enabled = 0;
  private readonly groups = new Map<number, Group>();
  constructor(private readonly k: Kernel) {}

  /**
   * The group, created on first use; `need` is the memory it is about to
   * bind (0 when a thread is bound first). Its home is chosen once, by
   * homeNode.
   */
  private group(id: number, need = 0): Group {
    let g = this.groups.get(id);
    if (!g) this.groups.set(id, (g = { node: -1, threads: new Set(), ranges: [] }));
    if (g.node < 0) g.node = this.homeNode(g, need);
    return g;
  }

  /** Memory left on a node once what the groups homed there have bound is counted. */
  private room(nid: number): number {
    let bytes = this.k.phys.zones[nid]!.freePages * PAGE_SIZE;
    for (const o of this.groups.values()) if (o.node === nid) for (const r of o.ranges) bytes -= r.end - r.start;
    return bytes;
  }

  /**
   * A new group's home, weighed as Linux's NUMA placement weighs a node
   * (task_numa_find_cpu compares load per CPU capacity, then memory):
   * among the nodes where `need` fits in room(), the one with the fewest
   * groups already homed there per CPU, then the most room, then the
   * lowest id. So groups spread over nodes when they fit, even before their
   * memory is touched or bound (a group bound by a thread first would
   * otherwise see equal free memory everywhere and land on node 0 with the
   * others). When it fits nowhere, the node with the most room (its ranges
   * spill to the nearest node with free memory).
   */
  private homeNode(g: Group, need: number): number {
    const nodes = this.k.phys.zones.map((z) => z.nid);
    const groupsOn = (nid: number): number => {
      let n = 0;
      for (const o of this.groups.values()) if (o !== g && o.node === nid) n++;
      return n / Math.max(1, this.k.host.nodes[nid]!.cpus.length);
    };
    const fit = nodes.filter((nid) => this.room(nid) >= need);
    const byRoom = (a: number, b: number): number => this.room(b) - this.room(a) || a - b;
    if (!fit.length) return nodes.sort(byRoom)[0]!;
    return fit.sort((a, b) => groupsOn(a) - groupsOn(b) || byRoom(a, b))[0]!;
  }

  /** The CPU of `node` with the fewest group threads on it. */
  private cpuOn(node: number, except?: Thread): number {
    const cpus = this.k.host.nodes[node]!.cpus;
    const load = new Map<number, number>(cpus.map((c) => [c, 0]));
    for (const g of this.groups.values())
      for (const t of g.threads) if (t !== except && load.has(t.cpu)) load.set(t.cpu, load.get(t.cpu)! + 1);
    return [...load.entries()].sort((a, b) => a[1] - b[1] || a[0] - b[0])[0]![0];
  }

  /**
   * A group's thread runs on its node: its affinity becomes the node's CPUs
   * (with a scheduler; the proposal binds threads as cpuset would), and it
   * moves to the least loaded of them if it is elsewhere.
   */
  private bindThread(t: Thread, node: number): void {
    if (t.se) this.k.setAffinity(t, this.k.host.nodes[node]!.cpus);
    if (this.k.cpuToNode(t.cpu) !== node) this.k.moveTask(t, this.cpuOn(node, t));
  }

  tbind(t: Thread, id: number): SysRet {
    if (!this.enabled) return neg('ENOSYS');
    if (id < 0) return neg('EINVAL');
    const g = this.group(id);
    for (const other of this.groups.values()) other.threads.delete(t);
    g.threads.add(t);
    this.bindThread(t, g.node);
    return 0;
  }

  mbind(p: Process, start: number, len: number, id: number): SysRet {
    if (!this.enabled) return neg('ENOSYS');
    if (id < 0 || start % PAGE_SIZE) return neg('EINVAL');
    const end = start + alignUp(len, PAGE_SIZE);
    if (!p.mm.vmasIn(start, end).length) return neg('EFAULT');
    const g = this.group(id, end - start);
    g.ranges.push({ p, start, end });
    return this.place(g, p, start, end);
  }

  /** ms_move: the group, threads and memory, to another node. */
  move(id: number, node: number): SysRet {
    if (!this.enabled) return neg('ENOSYS');
    const g = this.groups.get(id);
    if (!g) return neg('ESRCH');
    if (!this.k.host.nodes[node]) return neg('ENODEV');
    g.node = node;
    for (const t of g.threads) this.bindThread(t, node);
    for (const r of g.ranges) {
      const e = this.place(g, r.p, r.start, r.end);
      if (e < 0) return e;
    }
    return 0;
  }

  /** Prefer the home node for the range (VMAs split on demand) and bring its pages there. */
  private place(g: Group, p: Process, start: number, end: number): SysRet {
    const k = this.k;
    const pol = { mode: MPOL.MPOL_PREFERRED, flags: 0, nodes: [g.node], userNodes: [g.node] };
    const r = modifyVmaPolicy(k, p.mm, start, end, pol);
    if (r < 0) return r;
    for (const vma of p.mm.vmasIn(start, end)) {
      const step = vma.isHugetlb() ? vma.hugePageSize() : PAGE_SIZE;
      const e = Math.min(end, vma.end);
      const pt = p.mm.pgtable;
      for (let va = pt.skipNone(Math.max(start, vma.start), e, step); va < e; va = pt.walkNext(va, e, step)) {
        const pfn = followPage(p.mm, va);
        if (pfn >= 0 && k.phys.nodeOfPfn(pfn) !== g.node) migrateMappedPage(k, p.mm, vma, va, g.node);
      }
    }
    return 0;
  }
}
