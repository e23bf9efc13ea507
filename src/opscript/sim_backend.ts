/**
 * The simulator backend: runs resolved ops against a simulated Kernel.
 */
import { Kernel } from '../kernel/kernel.ts';
import type { Process, Thread } from '../kernel/sched.ts';
import { errnoName, MAP, MPOL, PAGE_SIZE, UFFD_API, UFFD_FEATURE, alignDown, neg } from '../kernel/uapi.ts';
import {
  pagemap,
  smaps,
  numaMaps,
  meminfo,
  renderMeminfo,
  renderVmstat,
  renderBuddyinfo,
  renderSwaps,
  renderPressureMemory,
  renderMaps,
  renderSmaps,
  renderNumaMaps,
} from '../kernel/procfs.ts';
import { UnmodelledError, sysMadvise } from '../kernel/madvise.ts';
import { sysMunmap } from '../kernel/mmap.ts';
import { setCpusetMems, sysGetMempolicy, sysMbind, sysMigratePages, sysProcessMbind, sysSetMempolicy } from '../kernel/mempolicy.ts';
import { sysMovePages } from '../kernel/migrate.ts';
import { followPage } from '../kernel/memory.ts';
import { sysSwapon } from '../kernel/swapfile.ts';
import { sysFork } from '../kernel/fork.ts';
import { sysFtruncate, sysMemfdCreate } from '../kernel/shmem.ts';
import { sysOpen } from '../kernel/filemap.ts';
import type { MappedFile } from '../kernel/mm_types.ts';
import { sysSetDumpable, sysSetresgid, sysSetresuid } from '../kernel/cred.ts';
import {
  bitNames,
  uffdioMove,
  ioctlNames,
  uffdioApi,
  uffdioFill,
  uffdioRegister,
  uffdioUnregister,
  uffdioWake,
  uffdioContinue,
  uffdioWriteprotect,
  uffdioPoison,
} from '../kernel/userfaultfd.ts';
import type { Backend, RawResult, ResolvedOp } from './backend.ts';
import { memcgStat, readCgroupFile, type MemCgroup } from '../kernel/memcontrol.ts';
import { oomScore, writeOomScoreAdj } from '../kernel/oom_kill.ts';
import { lookupPath } from '../kernel/sysfs_tree.ts';
import { DamonCtx, type DamonSnapshotRegion } from '../kernel/damon.ts';
import { damonArgs } from './ops.ts';

/**
 * The `damon` op: a DAMON context on [addr, addr+len) of the process, run
 * for `aggrs` aggregation intervals of virtual time; before each sampling
 * interval ends, the main thread loads every page of the hot range (the
 * linux backend's thread loads them over and over). The regions are those
 * of the last aggregation, as tried_regions shows them.
 */
function damonOp(k: Kernel, p: Process, op: ResolvedOp): RawResult {
  const a = op.a;
  const d = damonArgs(a);
  // No ops update while the op runs: it would replace the range with the process's three regions (as on linux).
  const attrs = { ...d, update_us: (a.aggrs + 2) * d.aggr_us * 2 + 1_000_000 };
  const ctx = new DamonCtx(k, p.mm, attrs, k.random.stream(`damon:${op.i}`), [[a.addr, a.addr + a.len]]);
  let last: readonly DamonSnapshotRegion[] = [];
  ctx.onAggregate = (rs) => (last = rs);
  const t0 = k.clock.now();
  ctx.prepareAccessChecks();
  for (let n = 1; ctx.stats.aggregations < a.aggrs; n++) {
    if (a.hot_len) k.access(p.mainThread, a.hot_addr, a.hot_len, PAGE_SIZE, false, 0);
    const due = t0 + n * ctx.sampleNs;
    if (k.clock.now() < due) k.clock.advance(due - k.clock.now());
    ctx.sample();
  }
  return { ret: 0, regions: last.map((r) => ({ start: r.start, end: r.end, nr_accesses: r.nr_accesses, age: r.age })) };
}

/** A syscall return turned into the result fields. */
function sys(r: number): RawResult {
  return r < 0 ? { ret: -1, errno: errnoName(r) } : { ret: r };
}

/** Run-length encoding built as the bytes come (a peek of 64 GiB reads 2^24 pages: no array of them all). */
function rlePush(out: [number, number][], b: number): void {
  const last = out[out.length - 1];
  if (last && last[0] === b) last[1]++;
  else out.push([b, 1]);
}

export class SimBackend implements Backend {
  readonly name = 'sim' as const;
  readonly procs: Process[] = [];
  private readonly vmstatBase: Record<string, number>;
  private readonly pendingAsync = new Map<Thread, { i: number; signal: string; at: number }[]>();
  /** Async touches blocked in a userfault: where each resumes when its thread is woken. */
  private readonly blockedTouch = new Map<Thread, { i: number; from: number; end: number; stride: number; write: boolean; fill: number }>();
  /**
   * Async ops given to a thread that is still blocked (in a userfault, or
   * delivering an event): the executor's thread runs its work in order, so
   * each waits until the ones before it finished. Run by runDeferred.
   */
  private readonly deferred = new Map<Thread, ResolvedOp[]>();
  /** Swap files made by `swap` ops. */
  private swapFiles = 0;
  /** memfds (runner's index) -> their files. */
  private readonly memfds = new Map<number, MappedFile>();
  /** userfaultfd handles (runner's index) -> context ids. */
  private readonly uffds = new Map<number, number>();
  /** Memory cgroups by the runner's index. */
  private readonly cgroups: MemCgroup[] = [];

  constructor(readonly k: Kernel) {
    this.procs.push(k.createProcess('self'));
    this.vmstatBase = k.vmstat.snapshot();
  }

  private proc(op: ResolvedOp): Process {
    return this.procs[op.proc]!;
  }
  private thread(op: ResolvedOp): Thread {
    return this.proc(op).threads[op.thr]!;
  }

  async exec(op: ResolvedOp): Promise<RawResult> {
    const k = this.k;
    const t0 = k.clock.now();
    let r: RawResult;
    try {
      r = this.deferIfBusy(op) ?? this.run(op);
    } catch (e) {
      if (e instanceof UnmodelledError) r = { unsupported: e.message };
      else throw e;
    }
    this.runDeferred();
    k.runDueEvents();
    r.ns = k.clock.now() - t0;
    return r;
  }

  private run(op: ResolvedOp): RawResult {
    const k = this.k;
    const a = op.a;
    const p = this.proc(op);
    // A process the OOM killer killed while another process's op ran: its ops do not run; a target that is gone is ESRCH.
    if (p.exited) return { ret: -1, killed: 'SIGKILL' };
    if (op.targetProc !== undefined && this.procs[op.targetProc]!.exited) return { ret: -1, errno: 'ESRCH' };
    switch (op.op) {
      case 'sysfs': {
        // The executor writes knobs from its main process, whatever `in` says: /proc/self is the main process's.
        if (a.path === '/proc/self/oom_score_adj') return sys(writeOomScoreAdj(k, this.procs[0]!, a.value));
        if (!k.sysfs.has(a.path)) return this.noKnob(a.path, 'EISDIR');
        return sys(k.sysfs.write(a.path, a.value));
      }
      case 'read': {
        const text = this.readFile(a.path, p);
        return text === undefined ? this.noKnob(a.path, undefined) : { ret: 0, text };
      }
      case 'hugetlb_pool': {
        const h = k.hugetlb.bySize(a.size);
        if (!h) return { ret: -1, errno: 'ENOENT' };
        if (a.node !== undefined && (a.node < 0 || a.node >= k.nrNodes)) return { ret: -1, errno: 'ENOENT' };
        k.hugetlb.setNrHugepages(h, a.nr, a.node);
        return { ret: 0, nr: a.node === undefined ? h.nr : h.nrNode[a.node] };
      }
      case 'swap': {
        // The linux backend's swap file: the k-th of the run, at priority 32767 - k, on this machine's rotational disk.
        const nth = this.swapFiles++;
        const r = sysSwapon(k, { path: `/var/lib/memtwin/swap/sim-${nth}.swap`, size: a.size, kind: 'file', prio: 32767 - nth });
        return sys(r < 0 ? r : 0);
      }
      case 'spawn': {
        const np = k.createProcess(a.name, p.mainThread.cpu);
        this.procs.push(np);
        return { ret: 0, pid: np.pid };
      }
      case 'open': {
        const f = sysOpen(k, p, `${a.kind}/${op.mfd}`, a.size);
        if (typeof f === 'number') return sys(f);
        this.memfds.set(op.mfd!, f);
        return { ret: 0 };
      }
      case 'memfd': {
        const f = sysMemfdCreate(k, p, a.name, a.flags ?? 0);
        if (typeof f === 'number') return sys(f);
        const r = sysFtruncate(k, f, a.size);
        if (r < 0) return sys(r);
        this.memfds.set(op.mfd!, f);
        return { ret: 0 };
      }
      case 'fork': {
        const child = sysFork(k, this.thread(op), a.name);
        if (typeof child === 'number') return sys(child);
        this.procs.push(child);
        return { ret: 0, pid: child.pid };
      }
      case 'thread': {
        const t = k.createThread(p, a.cpu ?? p.mainThread.cpu);
        return typeof t === 'number' ? sys(t) : { ret: 0 };
      }
      case 'setuid': {
        // setgroups([]) is not modelled: supplementary groups take part in no check memtwin makes.
        if (a.gid !== undefined) {
          const r = sysSetresgid(k, p, a.gid);
          if (r < 0) return sys(r);
        }
        return sys(sysSetresuid(k, p, a.uid));
      }
      case 'set_dumpable':
        return sys(sysSetDumpable(p, a.value));
      case 'mmap':
        return this.mmap(op, p);
      case 'munmap':
        return this.mayBlock(op, () => sysMunmap(k, p, a.addr, a.len, this.thread(op)));
      case 'mprotect':
        return sys(k.mprotect(p, a.addr, a.len, a.prot));
      case 'madvise':
        return this.mayBlock(op, () => sysMadvise(k, p, a.addr, a.len, a.advice, this.thread(op)));
      case 'process_madvise': {
        const target = this.procs[op.targetProc!];
        return sys(k.processMadvise(p, target, a.iovec, a.advice, a.flags ?? 0));
      }
      case 'touch': {
        const t = this.thread(op);
        const stride = a.stride ?? PAGE_SIZE;
        const res = k.access(t, a.addr, a.len, stride, a.write ?? false, a.fill ?? 1);
        if (res.blocked !== undefined) {
          if (!a.async || op.thr === 0)
            return { invalid: 'the touch blocks in a userfault: only an async touch on another thread can wait for one to be resolved' };
          this.blockedTouch.set(t, { i: op.i, from: res.blocked, end: a.addr + a.len, stride, write: a.write ?? false, fill: a.fill ?? 1 });
          return { ret: 0 };
        }
        if (a.async && op.thr !== 0) {
          if (res.signal) {
            const l = this.pendingAsync.get(t) ?? [];
            l.push({ i: op.i, signal: res.signal, at: res.at! });
            this.pendingAsync.set(t, l);
          }
          return { ret: 0 };
        }
        return res.signal ? { ret: -1, signal: res.signal, at: res.at } : { ret: 0 };
      }
      case 'peek': {
        const bytes: [number, number][] = [];
        const start = alignDown(a.addr, PAGE_SIZE);
        const t = this.thread(op);
        const res = k.access(t, Math.max(start, a.addr), a.addr + a.len - Math.max(start, a.addr), PAGE_SIZE, false, 0, (_va, b) =>
          rlePush(bytes, b),
        );
        if (res.blocked !== undefined) return { invalid: 'the peek blocks in a userfault (the main thread cannot resolve it)' };
        if (res.signal) return { ret: -1, signal: res.signal, at: res.at };
        return { ret: 0, bytes };
      }
      case 'join': {
        const t = this.proc(op).threads[op.joinThr!];
        if (!t) return { ret: -1, errno: 'ESRCH' };
        // still in its userfault, or delivering an event
        if (this.busy(t)) return { ret: -1, errno: 'ETIMEDOUT', async_faults: [] };
        const faults = this.pendingAsync.get(t) ?? [];
        this.pendingAsync.delete(t);
        return { ret: 0, async_faults: faults };
      }
      case 'set_mempolicy':
        return sys(sysSetMempolicy(k, this.thread(op), a.mode | (a.flags ?? 0), a.nodes ?? []));
      case 'get_mempolicy': {
        const flags = a.flags ?? 0;
        const t = this.thread(op);
        const r = sysGetMempolicy(k, t, flags, a.addr ?? 0, (va) => {
          // lookup_node: get_user_pages(va) faults the page in as a read
          const res = k.access(t, alignDown(va, PAGE_SIZE), 1, PAGE_SIZE, false, 0);
          if (res.signal) return undefined;
          const pfn = followPage(p.mm, va);
          return pfn >= 0 ? k.phys.nodeOfPfn(pfn) : 0; // the zero page lives on node 0
        });
        if (typeof r === 'number') return sys(r);
        return flags & MPOL.MPOL_F_NODE ? { ret: 0, mode: r.mode, nodes: r.nodes, node: r.mode } : { ret: 0, mode: r.mode, nodes: r.nodes };
      }
      case 'mbind':
        return sys(sysMbind(k, this.thread(op), a.addr, a.len, a.mode, a.nodes ?? [], a.flags ?? 0));
      case 'migrate_pages':
        return sys(sysMigratePages(k, p, this.procs[op.targetProc!], a.old_nodes, a.new_nodes));
      case 'move_pages': {
        const r = sysMovePages(k, p, this.procs[op.targetProc!], a.pages, a.nodes, a.flags ?? 0);
        return r.ret < 0 ? sys(r.ret) : { ret: r.ret, status: r.status };
      }
      case 'cpuset_mems':
        return sys(setCpusetMems(k, p, a.mems));
      case 'process_mbind':
        // One range (an iovec of one entry) of the target's address space.
        return sys(sysProcessMbind(k, p, this.procs[op.targetProc!], [{ start: a.addr, len: a.len }], a.mode, a.nodes ?? [], a.flags ?? 0));
      case 'ms_tbind':
        return sys(k.memsched.tbind(this.thread(op), a.group));
      case 'ms_mbind':
        return sys(k.memsched.mbind(p, a.addr, a.len, a.group));
      case 'ms_move':
        return sys(k.memsched.move(a.group, a.node));
      case 'userfaultfd': {
        const r = k.uffd.create(p, a.flags ?? 0);
        if (r < 0) return sys(r);
        this.uffds.set(op.fd!, r);
        return { ret: 0 };
      }
      case 'uffdio_api': {
        const r = uffdioApi(k, p, this.uffd(op), UFFD_API, a.features ?? 0);
        if (r.ret < 0) return sys(r.ret); // the kernel zeroes the structure: nothing to report
        return { ret: 0, features: bitNames(r.features, UFFD_FEATURE), ioctls: ioctlNames(r.ioctls) };
      }
      case 'uffdio_register': {
        const r = uffdioRegister(k, this.uffd(op), a.addr, a.len, a.mode);
        return r.ret < 0 ? sys(r.ret) : { ret: 0, ioctls: ioctlNames(r.ioctls!) };
      }
      case 'uffdio_unregister':
        return this.thenResume(sys(uffdioUnregister(k, this.uffd(op), a.addr, a.len)));
      case 'uffdio_wake':
        return this.thenResume(sys(uffdioWake(k, this.uffd(op), a.addr, a.len)));
      case 'uffdio_copy':
      case 'uffdio_zeropage': {
        const zero = op.op === 'uffdio_zeropage';
        const r = uffdioFill(k, this.thread(op), this.uffd(op), zero ? a.addr : a.dst, a.len, a.mode ?? 0, zero ? null : (a.fill ?? 1));
        // null: the call failed before the kernel wrote the field back.
        return this.thenResume({ ...sys(r.ret), [zero ? 'zeropage' : 'copy']: r.done ?? null });
      }
      case 'uffdio_writeprotect':
        return this.thenResume(sys(uffdioWriteprotect(k, this.uffd(op), a.addr, a.len, a.mode ?? 0)));
      case 'uffdio_continue': {
        const r = uffdioContinue(k, this.thread(op), this.uffd(op), a.addr, a.len, a.mode ?? 0);
        return this.thenResume({ ...sys(r.ret), mapped: r.done ?? null });
      }
      case 'uffdio_poison': {
        const r = uffdioPoison(k, this.uffd(op), a.addr, a.len, a.mode ?? 0);
        return this.thenResume({ ...sys(r.ret), updated: r.done ?? null });
      }
      case 'uffdio_move': {
        const r = uffdioMove(k, this.uffd(op), a.dst, a.src, a.len, a.mode ?? 0);
        return this.thenResume({ ...sys(r.ret), move: r.done ?? null });
      }
      case 'uffd_read': {
        const ctx = k.uffd.ctxs.get(this.uffd(op))!;
        if (ctx.features === null) return sys(neg('EINVAL')); // userfaultfd_read before UFFDIO_API
        const msgs = k.uffd
          .read(ctx, a.max ?? 1)
          .map((m) =>
            m.len === undefined
              ? { event: m.event, address: m.address, flags: m.flags }
              : { event: m.event, address: m.address, len: m.len },
          );
        return { ret: 0, msgs };
      }
      case 'khugepaged_wait': {
        const ok = k.khugepaged.waitFullScans(a.full_scans ?? 2, (a.timeout_ms ?? 10000) * 1e6);
        return ok ? { ret: 0 } : { ret: -1, errno: 'ETIMEDOUT' };
      }
      case 'pagemap':
        return { ret: 0, pages: pagemap(k, p.mm, a.addr, a.len) };
      case 'damon':
        return damonOp(k, p, op);
      case 'smaps': {
        const s = smaps(k, p.mm, a.addr);
        return s ? { ret: 0, ...s } : { ret: -1, errno: 'ENOENT' };
      }
      case 'numa_maps': {
        const s = numaMaps(k, p.mm, a.addr, p.mainThread.mempolicy);
        return s ? { ret: 0, ...s } : { ret: -1, errno: 'ENOENT' };
      }
      case 'meminfo':
        if (a.node !== undefined && (a.node < 0 || a.node >= k.nrNodes)) return { ret: -1, errno: 'ENOENT' };
        return { ret: 0, ...meminfo(k, a.node) };
      case 'vmstat': {
        const now = k.vmstat.snapshot();
        // Keys are the script's: own properties only, and no prototype for "__proto__" to set.
        const out: Record<string, number | null> = Object.create(null);
        for (const key of a.keys as string[]) out[key] = Object.hasOwn(now, key) ? now[key]! - this.vmstatBase[key]! : null;
        return { ret: 0, vmstat: out };
      }
      // The memory cgroups (memcontrol.ts), cgroup v2's controller, under one group of the run as the executor makes them.
      case 'cgroup': {
        const cg = k.memcg.create(a.name);
        const pages = (v: number | 'max' | undefined): number => (v === undefined || v === 'max' ? Infinity : Math.floor(v / PAGE_SIZE));
        cg.max = pages(a.memory_max);
        cg.high = pages(a.memory_high);
        cg.swapMax = pages(a.swap_max);
        this.cgroups[op.cg!] = cg;
        return { ret: 0 };
      }
      case 'cgroup_enter':
        k.memcg.attach(p, this.cgroups[op.cg!]!);
        return { ret: 0 };
      case 'cgroup_stat': {
        const cg = this.cgroups[op.cg!]!;
        const stat = memcgStat(k, cg);
        return {
          ret: 0,
          current: cg.usage * PAGE_SIZE,
          events: { oom: cg.events.oom, oom_kill: cg.events.oom_kill },
          workingset: { refault_anon: stat.workingset_refault_anon, refault_file: stat.workingset_refault_file },
        };
      }
      default:
        return { unsupported: `op ${op.op} is not implemented by the simulator yet` };
    }
  }

  /**
   * A call that may wait for a userfaultfd event to be read: on another
   * thread with `async` it answers ret 0 at once, as the executor does (the
   * rest of the call runs when the event is read); a call that would wait
   * otherwise could never finish.
   */
  private mayBlock(op: ResolvedOp, call: () => number): RawResult {
    const t = this.thread(op);
    const r = call();
    if (this.k.uffd.isBlocked(t) && (!op.a.async || op.thr === 0))
      return { invalid: 'the call waits for a userfaultfd event to be read: only an async op on another thread can wait' };
    return op.a.async && op.thr !== 0 ? { ret: 0 } : sys(r);
  }

  /** The thread is still in an earlier op: blocked in a userfault, delivering an event, or with work queued. */
  private busy(t: Thread): boolean {
    return this.blockedTouch.has(t) || this.k.uffd.isBlocked(t) || (this.deferred.get(t)?.length ?? 0) > 0;
  }

  /**
   * An async op for a busy thread waits for the thread (ret 0 now, as the
   * executor answers): running it at once would fault a second time on the
   * thread already blocked and raise a message Linux never sends.
   */
  private deferIfBusy(op: ResolvedOp): RawResult | undefined {
    if (op.thr === 0) return undefined;
    const t = this.thread(op);
    if (!this.busy(t)) return undefined;
    // The executor would wait for the thread's answer, which only a later op could bring: it hangs.
    if (!op.a.async)
      return {
        invalid:
          'thread: the thread is still blocked in an earlier op (a userfault, or an event not read yet), so it cannot answer ' +
          'this op; give it async ops only, or resolve the fault first',
      };
    const q = this.deferred.get(t) ?? [];
    q.push(op);
    this.deferred.set(t, q);
    return { ret: 0 };
  }

  /** Run the queued ops of every thread no longer blocked, in order, until one blocks again. */
  private runDeferred(): void {
    for (const [t, q] of [...this.deferred]) {
      while (q.length && !this.blockedTouch.has(t) && !this.k.uffd.isBlocked(t)) {
        const op = q.shift()!;
        try {
          this.run(op); // async: its answer (ret 0) was given; a signal goes to pendingAsync, a block to blockedTouch
        } catch (e) {
          if (!(e instanceof UnmodelledError)) throw e;
        }
      }
      if (!q.length) this.deferred.delete(t);
    }
  }

  private uffd(op: ResolvedOp): number {
    return this.uffds.get(op.fd!)!;
  }

  /**
   * After a call that may wake userfaults: every blocked touch whose thread
   * was woken retries from the address it blocked on (it may block again).
   */
  private thenResume(r: RawResult): RawResult {
    for (const [t, b] of [...this.blockedTouch]) {
      if (this.k.uffd.isBlocked(t)) continue;
      this.blockedTouch.delete(t);
      const res = this.k.access(t, b.from, b.end - b.from, b.stride, b.write, b.fill);
      if (res.blocked !== undefined) this.blockedTouch.set(t, { ...b, from: res.blocked });
      else if (res.signal) {
        const l = this.pendingAsync.get(t) ?? [];
        l.push({ i: b.i, signal: res.signal, at: res.at! });
        this.pendingAsync.set(t, l);
      }
    }
    return r;
  }

  private mmap(op: ResolvedOp, p: Process): RawResult {
    const k = this.k;
    const a = op.a;
    const fd = op.mfd !== undefined ? { file: this.memfds.get(op.mfd)!, offset: a.offset ?? 0 } : undefined;
    if (!a.align) {
      const r = k.mmap(p, a.addr ?? 0, a.len, a.prot, a.flags, fd);
      return r < 0 ? sys(r) : { ret: 0, addr: r };
    }
    // Over-map by `align`, keep the first aligned `len` bytes, unmap the rest (as the native executor does).
    const r = k.mmap(p, 0, a.len + a.align, a.prot, a.flags & ~(MAP.MAP_FIXED | MAP.MAP_FIXED_NOREPLACE), fd);
    if (r < 0) return sys(r);
    const start = Math.ceil(r / a.align) * a.align;
    if (start > r) k.munmap(p, r, start - r);
    const tail = r + a.len + a.align - (start + a.len);
    if (tail > 0) k.munmap(p, start + a.len, tail);
    return { ret: 0, addr: start };
  }

  /**
   * A path the simulator has no file for: the errno open(2) gives where the
   * owned directories say it does not exist (sysfs_tree.ts), `unsupported`
   * for a real file the model lacks. `dirErrno` is what opening an existing
   * directory gives (EISDIR for a write; undefined: unsupported).
   */
  private noKnob(path: string, dirErrno: 'EISDIR' | undefined): RawResult {
    const r = lookupPath(this.k, path, (q) => this.k.sysfs.has(q));
    if ('errno' in r) return { ret: -1, errno: r.errno };
    if ('exists' in r && r.dir && dirErrno) return { ret: -1, errno: dirErrno };
    return {
      unsupported:
        'exists' in r ? `${path} exists on Linux but is not modelled by the simulator` : `${path} is not modelled by the simulator`,
    };
  }

  private readFile(path: string, p: Process): string | undefined {
    const k = this.k;
    if (k.sysfs.has(path)) return k.sysfs.read(path);
    if (path.startsWith('/sys/fs/cgroup/')) return readCgroupFile(k, path);
    if (path === '/proc/self/oom_score') return `${oomScore(k, p)}\n`;
    if (path === '/proc/self/oom_score_adj') return `${k.oom.adj(p)}\n`;
    const m = /^\/proc\/self\/(maps|smaps|numa_maps)$/.exec(path);
    if (m)
      return m[1] === 'maps' ? renderMaps(p.mm) : m[1] === 'smaps' ? renderSmaps(k, p.mm) : renderNumaMaps(k, p.mm, p.mainThread.mempolicy);
    switch (path) {
      case '/proc/meminfo':
        return renderMeminfo(k);
      case '/proc/vmstat':
        return renderVmstat(k);
      case '/proc/buddyinfo':
        return renderBuddyinfo(k);
      case '/proc/swaps':
        return renderSwaps(k);
      case '/proc/pressure/memory':
        return renderPressureMemory(k);
    }
    return undefined;
  }

  async close(): Promise<void> {}
}
