/**
 * uhugepaged: a userspace replacement for khugepaged's policy, as proposed
 * upstream alongside MADV_COLLAPSE and process_madvise. khugepaged walks
 * every registered mm in address order at a fixed rate; uhugepaged instead
 * asks which memory is hot and spends a CPU budget collapsing the regions
 * that gain most first.
 *
 * The agent sees the system only through AgentSys, the calls a real agent
 * makes: /proc/PID/smaps (which VMAs may be collapsed and how much of them is
 * already huge), /proc/PID/pagemap with /proc/kpageflags (which 2M regions
 * are 4K-mapped and how full they are), an access-recency source (DAMON or
 * idle page tracking on Linux; the workload's own counts in memtwin) and
 * process_madvise(pidfd, iovec, MADV_COLLAPSE). memtwin binds AgentSys to the
 * simulated kernel (sim_sys.ts); a binding to the real kernel needs only
 * those calls, so the policy code runs unchanged against either.
 *
 * Each tick (every `interval`):
 * 1. heat of each 2M region = accesses since the last tick, folded into an
 *    exponentially decayed score (half-life one tick);
 * 2. regions whose score is below `min_heat` are left alone (no gain); the
 *    others, if inside a VMA that smaps (re-read every `retry_after` ticks,
 *    since it walks every page table) shows as anonymous, without
 *    VM_NOHUGEPAGE (`nh`) and not yet fully huge, are looked up in pagemap:
 *    4K-mapped ones with present pages are candidates;
 * 3. ranked by score (ties: more present pages first, then lower address);
 * 4. collapsed one process_madvise each, until the tick's CPU budget
 *    (`cpu_budget` × interval) is spent. A region just collapsed, found
 *    huge or empty, or whose collapse failed, is not looked at again for
 *    `retry_after` ticks.
 */
import { MADV, PMD_SIZE } from '../kernel/uapi.ts';

/** One 2M region as pagemap and kpageflags show it. */
export interface RegionState {
  addr: number;
  /** 4K pages present (not counting a huge mapping). */
  present: number;
  /** Mapped by a PMD (KPF_THP on a PMD-mapped head). */
  huge: boolean;
}

/** What the agent may ask of the system (see the file comment). */
export interface AgentSys {
  processes(): { pid: number; name: string }[];
  /** The text of /proc/PID/smaps. */
  readSmaps(pid: number): string;
  /** pagemap + kpageflags over [start, end), per 2M-aligned region inside it. */
  regions(pid: number, start: number, end: number): RegionState[];
  /** Accesses per 2M region (by its address) since the previous call. */
  takeHeat(pid: number): Map<number, number>;
  /** process_madvise(pidfd_open(pid), iov, advice, 0): bytes advised or -errno. */
  processMadvise(pid: number, iov: [number, number][], advice: number): number;
  /** CPU time the agent has used so far, ns. */
  cpuNs(): number;
}

export interface UhugepagedConfig {
  /** Virtual time between ticks, ns. */
  interval: number;
  /** Fraction of one CPU the agent may use (0.01 = 1%). */
  cpu_budget: number;
  /** Minimum decayed accesses per tick for a region to be worth collapsing. */
  min_heat: number;
  /** Ticks before a region just collapsed, or whose collapse failed, is looked at again. */
  retry_after: number;
  /** Only these processes (by name); all when empty. */
  targets: string[];
}

export interface UhugepagedStats {
  ticks: number;
  collapses: number;
  failures: number;
  /** Candidates left because the tick's budget ran out. */
  deferred: number;
  /** Candidates left because they were too cold. */
  cold: number;
  /** Region-ticks at or above min_heat (looked at further). */
  hot: number;
  /** The highest decayed score any region reached: with hot at 0, how far below min_heat the workload stayed. */
  maxHeat: number;
}

/** A VMA of /proc/PID/smaps, as far as the agent needs it. */
export interface SmapsVma {
  start: number;
  end: number;
  path: string;
  anonymous: number;
  anonHugePages: number;
  flags: string[];
}

/** Parse /proc/PID/smaps text: one entry per VMA, sizes in bytes. */
export function parseSmaps(text: string): SmapsVma[] {
  const out: SmapsVma[] = [];
  let cur: SmapsVma | undefined;
  for (const line of text.split('\n')) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      cur = {
        start: parseInt(head[1]!, 16),
        end: parseInt(head[2]!, 16),
        path: head[3]!.trim(),
        anonymous: 0,
        anonHugePages: 0,
        flags: [],
      };
      out.push(cur);
      continue;
    }
    if (!cur) continue;
    const kv = /^(\w+):\s+(.*)$/.exec(line);
    if (!kv) continue;
    if (kv[1] === 'Anonymous') cur.anonymous = parseInt(kv[2]!, 10) * 1024;
    else if (kv[1] === 'AnonHugePages') cur.anonHugePages = parseInt(kv[2]!, 10) * 1024;
    else if (kv[1] === 'VmFlags') cur.flags = kv[2]!.trim().split(/\s+/);
  }
  return out;
}

export class Uhugepaged {
  readonly stats: UhugepagedStats = { ticks: 0, collapses: 0, failures: 0, deferred: 0, cold: 0, hot: 0, maxHeat: 0 };
  /** Decayed heat per process and region. */
  private readonly score = new Map<number, Map<number, number>>();
  /** smaps of each process as last read (it walks every page table: read every `retry_after` ticks). */
  private readonly vmas = new Map<number, { tick: number; vmas: SmapsVma[] }>();
  /** Region -> tick before which it is not retried. */
  private readonly backoff = new Map<string, number>();

  constructor(
    private readonly sys: AgentSys,
    readonly config: UhugepagedConfig,
  ) {}

  /** One tick: observe, rank, collapse within budget. */
  tick(): void {
    const sys = this.sys;
    const cfg = this.config;
    this.stats.ticks++;
    const budget = cfg.cpu_budget * cfg.interval;
    const cpu0 = sys.cpuNs();
    const cands: { pid: number; addr: number; score: number; present: number }[] = [];
    for (const { pid, name } of sys.processes()) {
      if (cfg.targets.length && !cfg.targets.includes(name)) continue;
      const heat = sys.takeHeat(pid);
      let sc = this.score.get(pid);
      if (!sc) this.score.set(pid, (sc = new Map()));
      for (const [a, v] of sc) sc.set(a, v / 2);
      for (const [a, n] of heat) sc.set(a, (sc.get(a) ?? 0) + n);
      for (const v of sc.values()) if (v > this.stats.maxHeat) this.stats.maxHeat = v;
      // Only hot regions are worth a look: pagemap is read for them alone.
      const hot = [...sc].filter(([a, v]) => v >= cfg.min_heat && (this.backoff.get(`${pid}:${a}`) ?? 0) <= this.stats.ticks);
      this.stats.cold += sc.size - hot.length;
      this.stats.hot += hot.length;
      if (!hot.length) continue;
      let cached = this.vmas.get(pid);
      if (!cached || this.stats.ticks - cached.tick >= cfg.retry_after) {
        cached = { tick: this.stats.ticks, vmas: parseSmaps(sys.readSmaps(pid)) };
        this.vmas.set(pid, cached);
      }
      for (const vma of cached.vmas) {
        if (vma.path !== '' || vma.flags.includes('nh') || vma.anonymous === 0 || vma.anonHugePages >= vma.anonymous) continue;
        for (const [addr, score] of hot) {
          if (addr < vma.start || addr + PMD_SIZE > vma.end) continue;
          const r = sys.regions(pid, addr, addr + PMD_SIZE)[0];
          if (!r || r.huge || r.present === 0) {
            this.backoff.set(`${pid}:${addr}`, this.stats.ticks + cfg.retry_after); // nothing to do there for a while
            continue;
          }
          cands.push({ pid, addr, score, present: r.present });
        }
      }
    }
    cands.sort((a, b) => b.score - a.score || b.present - a.present || a.pid - b.pid || a.addr - b.addr);
    let i = 0;
    for (; i < cands.length && sys.cpuNs() - cpu0 < budget; i++) {
      const c = cands[i]!;
      const r = sys.processMadvise(c.pid, [[c.addr, PMD_SIZE]], MADV.MADV_COLLAPSE);
      if (r === PMD_SIZE) {
        this.stats.collapses++;
        // Huge now: not a candidate again until `retry_after` ticks have passed.
        this.backoff.set(`${c.pid}:${c.addr}`, this.stats.ticks + cfg.retry_after);
      } else {
        this.stats.failures++;
        this.backoff.set(`${c.pid}:${c.addr}`, this.stats.ticks + cfg.retry_after);
      }
    }
    this.stats.deferred += cands.length - i;
  }
}
