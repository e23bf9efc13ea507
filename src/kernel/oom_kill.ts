/**
 * The OOM killer (mm/oom_kill.c): when an allocation cannot be satisfied
 * even after reclaim (global OOM, from __alloc_pages_slowpath) or a memory
 * cgroup cannot be brought back under memory.max (memcg OOM, from
 * try_charge), it picks the process with the highest badness among the
 * candidates (every process, or the group's) and kills it with SIGKILL.
 *
 * - oom_badness: rss + swap entries + page-table pages, plus oom_score_adj
 *   scaled to the candidates' total pages (adj * totalpages / 1000);
 *   oom_score_adj -1000 (OOM_SCORE_ADJ_MIN) is never chosen.
 * - select_bad_process: the highest badness; of equal ones, the last
 *   looked at (oom_evaluate_task replaces the choice unless points are
 *   lower), processes in pid order.
 * - the kill: the victim is marked dead at once (fatal signal), the
 *   oom_reaper frees its private anonymous memory (zapping, as
 *   __oom_reap_task_mm does: page tables stay), and exit_mmap tears the rest
 *   down when the kernel next runs its due events.
 * - the kernel log (dmesg) gets the lines Linux 6.18 prints, timestamped in
 *   virtual time.
 *
 * The caller of the allocation sees the kill through Process.exited: an
 * allocation made for a killed process fails, and its access ends in
 * SIGKILL (memory.ts).
 */
import type { Kernel } from './kernel.ts';
import type { Process } from './sched.ts';
import type { MemCgroup } from './memcontrol.ts';
import { memcgMemoryEvent } from './memcontrol.ts';
import { zapRange } from './memory.ts';
import { doMunmap } from './mmap.ts';
import { exitFiles } from './shmem.ts';
import { PAGE_SIZE } from './uapi.ts';

/** OOM_SCORE_ADJ_MIN / MAX (include/uapi/linux/oom.h). */
export const OOM_SCORE_ADJ_MIN = -1000;
export const OOM_SCORE_ADJ_MAX = 1000;

/** struct oom_control, the part memtwin uses. */
export interface OomControl {
  /** The group whose memory.max was hit; null: a global OOM. */
  memcg: MemCgroup | null;
  order: number;
  /** The task whose allocation failed (for the log's "invoked oom-killer"), when known. */
  current: Process | null;
}

/** One OOM kill, as scenario results report it. */
export interface OomKill {
  /** Virtual time (ns). */
  t: number;
  pid: number;
  comm: string;
  /** The memory cgroup whose limit was hit ("/g"), or null for a global OOM. */
  memcg: string | null;
  /** Badness points the victim had. */
  points: number;
  anonRssKb: number;
}

/** The OOM killer's state: oom_score_adj per process, the kills, and the kernel log. */
export class OomState {
  /** signal->oom_score_adj by pid (absent: 0). */
  readonly scoreAdj = new Map<number, number>();
  readonly kills: OomKill[] = [];
  /** The kernel's log lines (dmesg), "[    s.uuuuuu] text". */
  readonly dmesg: string[] = [];

  constructor(private readonly k: Kernel) {}

  adj(p: Process): number {
    return this.scoreAdj.get(p.pid) ?? 0;
  }

  /** printk at the current virtual time. */
  log(text: string): void {
    const ns = this.k.clock.now();
    const s = Math.floor(ns / 1e9);
    const us = Math.floor((ns % 1e9) / 1e3);
    this.dmesg.push(`[${String(s).padStart(5)}.${String(us).padStart(6, '0')}] ${text}`);
  }
}

/** The pages an OOM kill weighs the candidates against: RAM + swap, or the group's limit + its swap. */
export function oomTotalPages(k: Kernel, memcg: MemCgroup | null): number {
  const totalSwap = k.swap.totalSwapPages;
  if (!memcg) return k.phys.totalPages() + totalSwap;
  // mem_cgroup_get_max: memory.max plus the swap the group may use.
  let max = memcg.max;
  let swapMax = memcg.swapMax;
  for (let c = memcg.parent; c && c.parent; c = c.parent) {
    max = Math.min(max, c.max);
    swapMax = Math.min(swapMax, c.swapMax);
  }
  if (max === Infinity) max = k.phys.totalPages();
  return max + Math.min(swapMax, totalSwap);
}

/** oom_badness: the points of a process, or null (LONG_MIN: never chosen). */
export function oomBadness(k: Kernel, p: Process, totalPages: number): number | null {
  if (p.exited) return null;
  const adj = k.oom.adj(p);
  if (adj === OOM_SCORE_ADJ_MIN) return null;
  const mm = p.mm;
  let points = mm.rssAnon + mm.rssShmem + mm.swapents + Math.floor(mm.pgtablesBytes / PAGE_SIZE);
  points += adj * Math.floor(totalPages / 1000);
  return points;
}

/** /proc/<pid>/oom_score: badness scaled to 0..2000 against RAM + swap (proc_oom_score). */
export function oomScore(k: Kernel, p: Process): number {
  const total = k.phys.totalPages() + k.swap.totalSwapPages;
  const b = oomBadness(k, p, total);
  if (b === null) return 0;
  return Math.max(0, Math.trunc(((1000 + Math.trunc((b * 1000) / total)) * 2) / 3));
}

/**
 * A write to /proc/<pid>/oom_score_adj (oom_score_adj_write): an integer
 * from -1000 to 1000, else -EINVAL. (Lowering it below its lowest value
 * needs CAP_SYS_RESOURCE, which memtwin's processes have.)
 */
export function writeOomScoreAdj(k: Kernel, p: Process, value: string): number {
  const t = value.trim();
  if (!/^[+-]?\d+$/.test(t)) return -22;
  const v = Number(t);
  if (v < OOM_SCORE_ADJ_MIN || v > OOM_SCORE_ADJ_MAX) return -22;
  if (v) k.oom.scoreAdj.set(p.pid, v);
  else k.oom.scoreAdj.delete(p.pid);
  return 0;
}

/** select_bad_process over the candidates (the group's tasks, or every process). */
function selectBadProcess(k: Kernel, oc: OomControl, totalPages: number): { p: Process; points: number } | null {
  const candidates = oc.memcg ? k.memcg.tasks(oc.memcg) : [...k.processes.values()];
  let chosen: { p: Process; points: number } | null = null;
  for (const p of candidates) {
    const points = oomBadness(k, p, totalPages);
    if (points === null || (chosen && points < chosen.points)) continue;
    chosen = { p, points };
  }
  return chosen;
}

/**
 * out_of_memory: choose a victim and kill it. True if one was killed
 * (the caller retries), false when no process can be killed.
 */
export function outOfMemory(k: Kernel, oc: OomControl): boolean {
  const total = oomTotalPages(k, oc.memcg);
  const chosen = selectBadProcess(k, oc, total);
  dumpHeader(k, oc);
  if (!chosen) {
    k.oom.log('Out of memory and no killable processes...');
    return false;
  }
  oomKillProcess(k, oc, chosen.p, chosen.points);
  return true;
}

/** dump_header's first line (and, for a group, its usage). */
function dumpHeader(k: Kernel, oc: OomControl): void {
  const cur = oc.current;
  // A user page fault allocates GFP_HIGHUSER_MOVABLE | __GFP_ZERO; the memcg charge of it passes GFP_KERNEL.
  const gfp = oc.memcg ? '0xcc0(GFP_KERNEL)' : '0x140dca(GFP_HIGHUSER_MOVABLE|__GFP_COMP|__GFP_ZERO)';
  k.oom.log(`${cur?.name ?? 'kworker'} invoked oom-killer: gfp_mask=${gfp}, order=${oc.order}, oom_score_adj=${cur ? k.oom.adj(cur) : 0}`);
  if (oc.memcg) {
    const g = oc.memcg;
    const kb = (pages: number): string => (pages === Infinity ? '9007199254740988' : String((pages * PAGE_SIZE) / 1024));
    k.oom.log(`memory: usage ${kb(g.usage)}kB, limit ${kb(g.max)}kB, failcnt ${g.events.max}`);
    k.oom.log(`swap: usage ${kb(g.swapUsage)}kB, limit ${kb(g.swapMax)}kB, failcnt 0`);
  }
}

/**
 * oom_kill_process / __oom_kill_process: SIGKILL to the victim, the log
 * lines, oom_kill counted (vmstat and the victim's group), then the
 * oom_reaper's work and the exit.
 */
export function oomKillProcess(k: Kernel, oc: OomControl, victim: Process, points: number): void {
  const mm = victim.mm;
  const cg = k.memcg.ofMm(mm);
  const constraint = oc.memcg ? 'CONSTRAINT_MEMCG' : 'CONSTRAINT_NONE';
  const memcgPart = oc.memcg ? `,oom_memcg=${oc.memcg.path()}` : '';
  k.oom.log(
    `oom-kill:constraint=${constraint},nodemask=(null),cpuset=/,mems_allowed=0${k.nrNodes > 1 ? `-${k.nrNodes - 1}` : ''}` +
      `${memcgPart},task_memcg=${cg.path()},task=${victim.name},pid=${victim.pid},uid=${victim.cred.uid}`,
  );
  const totalVmKb = mm.vmas.reduce((s, v) => s + v.size, 0) / 1024;
  const anonKb = (mm.rssAnon * PAGE_SIZE) / 1024;
  const shmemKb = (mm.rssShmem * PAGE_SIZE) / 1024;
  k.oom.log(
    `${oc.memcg ? 'Memory cgroup out of memory' : 'Out of memory'}: Killed process ${victim.pid} (${victim.name}) ` +
      `total-vm:${totalVmKb}kB, anon-rss:${anonKb}kB, file-rss:0kB, shmem-rss:${shmemKb}kB, UID:${victim.cred.uid} ` +
      `pgtables:${mm.pgtablesBytes / 1024}kB oom_score_adj:${k.oom.adj(victim)}`,
  );
  victim.exited = true; // SIGKILL: the task never returns to user space
  k.vmstat.count('oom_kill');
  if (cg.parent) memcgMemoryEvent(cg, 'oom_kill');
  k.oom.kills.push({
    t: k.clock.now(),
    pid: victim.pid,
    comm: victim.name,
    memcg: oc.memcg ? oc.memcg.path() : null,
    points,
    anonRssKb: anonKb,
  });
  oomReap(k, victim);
  // exit_mmap, then exit_files: the rest goes when the victim's exit runs, after the current work; a memfd only
  // it held open is freed (and uncharged) as its last descriptor closes.
  k.events.after(0, 'oom-exit', () => {
    exitMmap(k, victim);
    exitFiles(k, victim);
  });
}

/**
 * __oom_reap_task_mm: zap the victim's private memory (not hugetlb, not
 * shared), leaving its page tables for exit_mmap. Logs what is left.
 */
function oomReap(k: Kernel, victim: Process): void {
  const mm = victim.mm;
  for (const vma of mm.vmas) {
    if (vma.isHugetlb() || !vma.isAnonymous()) continue;
    zapRange(k, mm, vma, vma.start, vma.end, false, 0);
  }
  k.oom.log(
    `oom_reaper: reaped process ${victim.pid} (${victim.name}), now anon-rss:${(mm.rssAnon * PAGE_SIZE) / 1024}kB, ` +
      `file-rss:0kB, shmem-rss:${(mm.rssShmem * PAGE_SIZE) / 1024}kB`,
  );
}

/** Why a killed process died, for results: "SIGKILL (OOM killer: ...)" naming the group whose limit was hit, or the host. */
export function killReason(k: Kernel, p: Process): string {
  const kill = k.oom.kills.findLast((x) => x.pid === p.pid);
  if (!kill) return 'SIGKILL';
  return kill.memcg
    ? `SIGKILL (OOM killer: memory cgroup ${kill.memcg} at its memory.max)`
    : 'SIGKILL (OOM killer: the host out of memory)';
}

/** exit_mmap: every mapping of the dead process goes, with its page tables and swap entries. */
export function exitMmap(k: Kernel, p: Process): void {
  for (const vma of [...p.mm.vmas]) doMunmap(k, p.mm, vma.start, vma.size);
}
