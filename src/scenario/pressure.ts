/**
 * Memory pressure in a scenario run: the host's swap file (the scenario's
 * `swap`), PSI groups (the system's and one per VM: its VMM's tasks, what a
 * per-VM cgroup would hold), and the series and final metrics of reclaim,
 * swap traffic, pressure and OOM.
 */
import type { Kernel } from '../kernel/kernel.ts';
import { errnoName } from '../kernel/uapi.ts';
import { sysSwapon } from '../kernel/swapfile.ts';
import { PSI_MEM_FULL, PSI_MEM_SOME, formatAvg, type PsiGroup } from '../kernel/psi.ts';
import type { YamlPath } from '../util/yaml_input.ts';
import type { Scenario } from './schema.ts';
import type { VmRt } from './vms.ts';

/** swapon of the scenario's swap file (before the processes and VMs start). */
export function startSwap(k: Kernel, s: Scenario, fail: (path: YamlPath, expected: string) => never): void {
  if (!s.swap) return;
  const r = sysSwapon(k, { path: '/swapfile', size: s.swap.size, kind: 'file', prio: s.swap.priority });
  if (r < 0) fail(['swap'], `swapon refused the swap file (${errnoName(r)})`);
}

/** A VM's PSI group: the VMM process's threads (vCPUs, workloads on them) and the work items named after the VM. */
export function addVmPsiGroup(k: Kernel, rt: VmRt): PsiGroup {
  const p = rt.vm.process;
  const prefix = `${rt.vm.name}/`;
  return k.psi.addGroup(rt.spec.name, {
    thread: (t) => t !== null && t.process === p,
    task: (se) => se.name.startsWith(prefix) || p.threads.some((t) => t.se === se),
  });
}

/** An average as /proc/pressure/memory prints it, as a number (percent, two decimals). */
function pct(avg: number): number {
  return Number(formatAvg(avg));
}

/**
 * The per-sample series: PSI memory (avg10 as the kernel prints it, and
 * the share of the sample interval stalled, from the totals), swap traffic
 * (pswpin/pswpout per second), pages reclaimed per second, swap in use, and
 * the host's OOM kills (cumulative), and per VM its group's pressure and
 * its guest's reclaim and OOM kills.
 */
export function pressureSampler(k: Kernel, vms: VmRt[], groups: Map<VmRt, PsiGroup>) {
  const ev = k.vmstat.events;
  const last = { t: k.clock.now(), pswpin: ev.pswpin, pswpout: ev.pswpout, steal: ev.pgsteal_kswapd + ev.pgsteal_direct };
  const lastTotals = new Map<PsiGroup, number[]>();
  const psi = (g: PsiGroup, prefix: string, col: (name: string) => number[], dtNs: number): void => {
    k.psi.update(g);
    const before = lastTotals.get(g) ?? [0, 0];
    col(`${prefix}psi.some_avg10`).push(pct(g.avg[PSI_MEM_SOME]![0]!));
    col(`${prefix}psi.full_avg10`).push(pct(g.avg[PSI_MEM_FULL]![0]!));
    const share = (s: number): number => (dtNs > 0 ? Math.round(((g.total[s]! - before[s]!) / dtNs) * 1e4) / 100 : 0);
    col(`${prefix}psi.some_pct`).push(share(PSI_MEM_SOME));
    col(`${prefix}psi.full_pct`).push(share(PSI_MEM_FULL));
    lastTotals.set(g, [...g.total]);
  };
  return (col: (name: string) => number[]): void => {
    const now = k.clock.now();
    const dtNs = now - last.t;
    const rate = (n: number): number => (dtNs > 0 ? Math.round((n * 1e9) / dtNs) : 0);
    const steal = ev.pgsteal_kswapd + ev.pgsteal_direct;
    col('host.pswpin_per_s').push(rate(ev.pswpin - last.pswpin));
    col('host.pswpout_per_s').push(rate(ev.pswpout - last.pswpout));
    col('host.pgsteal_per_s').push(rate(steal - last.steal));
    col('host.swap_used_bytes').push((k.swap.totalSwapPages - k.swap.nrSwapPages) * 4096);
    col('host.oom_kill').push(ev.oom_kill);
    psi(k.psi.system, 'host.', col, dtNs);
    for (const rt of vms) {
      const g = groups.get(rt);
      if (g) psi(g, `vm.${rt.spec.name}.`, col, dtNs);
      col(`vm.${rt.spec.name}.guest.oom_kills`).push(rt.guest.pages.oomKills);
      if (rt.drv) col(`vm.${rt.spec.name}.guest.oom_deflates`).push(rt.drv.stats().oomDeflates);
      col(`vm.${rt.spec.name}.guest.cached_bytes`).push(rt.guest.pageCachePages * 4096);
    }
    Object.assign(last, { t: now, pswpin: ev.pswpin, pswpout: ev.pswpout, steal });
  };
}

/** Final metrics: swap and reclaim counters, PSI totals (us, as the file prints them), the guests' reclaim and OOM. */
export function pressureFinal(k: Kernel, vms: VmRt[], groups: Map<VmRt, PsiGroup>): Record<string, number> {
  const ev = k.vmstat.events;
  const out: Record<string, number> = {
    pswpin: ev.pswpin,
    pswpout: ev.pswpout,
    pgmajfault: ev.pgmajfault,
    pgsteal_kswapd: ev.pgsteal_kswapd,
    pgsteal_direct: ev.pgsteal_direct,
    allocstall_normal: ev.allocstall_normal,
    oom_kill: ev.oom_kill,
  };
  const totals = (g: PsiGroup, prefix: string): void => {
    k.psi.update(g);
    out[`${prefix}psi.some_total_us`] = Math.floor(g.total[PSI_MEM_SOME]! / 1000);
    out[`${prefix}psi.full_total_us`] = Math.floor(g.total[PSI_MEM_FULL]! / 1000);
  };
  totals(k.psi.system, 'host.');
  for (const rt of vms) {
    const g = groups.get(rt);
    if (g) totals(g, `vm.${rt.spec.name}.`);
    out[`vm.${rt.spec.name}.guest.oom_kills`] = rt.guest.pages.oomKills;
    out[`vm.${rt.spec.name}.guest.pgsteal_direct`] = rt.guest.vmEvents.pgsteal_direct;
    out[`vm.${rt.spec.name}.guest.alloc_stalls`] = rt.guest.pages.allocStalls;
    if (rt.drv) out[`vm.${rt.spec.name}.guest.oom_deflates`] = rt.drv.stats().oomDeflates;
  }
  return out;
}
