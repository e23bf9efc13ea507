/**
 * A scenario's memory cgroups (`cgroups:`, and `cgroup:` on processes and
 * VMs): made before the processes, sampled as series, summed up in the
 * final metrics; the OOM killer's kills become run events.
 */
import type { Kernel } from '../kernel/kernel.ts';
import type { Process } from '../kernel/sched.ts';
import type { MemCgroup } from '../kernel/memcontrol.ts';
import { PAGE_SIZE } from '../kernel/uapi.ts';
import type { YamlPath } from '../util/yaml_input.ts';
import type { RunEventLog } from './result.ts';
import type { Scenario } from './schema.ts';

/** A limit as the schema gives it: "max" or bytes, in pages (rounded down). */
function pages(v: number | 'max'): number {
  return v === 'max' ? Infinity : Math.floor(v / PAGE_SIZE);
}

/** Make the scenario's groups, with their limits. A name given twice is an error. */
export function startCgroups(k: Kernel, s: Scenario, fail: (path: YamlPath, expected: string) => never): Map<string, MemCgroup> {
  const out = new Map<string, MemCgroup>();
  s.cgroups.forEach((c, i) => {
    if (out.has(c.name)) fail(['cgroups', i, 'name'], `a name no other cgroup has (${JSON.stringify(c.name)} is given twice)`);
    const cg = k.memcg.create(c.name);
    cg.max = pages(c.memory_max);
    cg.high = pages(c.memory_high);
    cg.low = pages(c.memory_low);
    cg.min = pages(c.memory_min);
    cg.swapMax = pages(c.swap_max);
    out.set(c.name, cg);
  });
  // Every reference names a group.
  const known = (name: string, path: YamlPath): void => {
    if (!out.has(name))
      fail(
        path,
        `the name of a cgroup in \`cgroups\` (${out.size ? [...out.keys()].join(', ') : 'none is defined'}), got ${JSON.stringify(name)}`,
      );
  };
  s.processes.forEach((p, i) => p.cgroup !== undefined && known(p.cgroup, ['processes', i, 'cgroup']));
  s.vms.forEach((v, i) => v.cgroup !== undefined && known(v.cgroup, ['vms', i, 'cgroup']));
  return out;
}

/** cgroup.procs: the process (a scenario process, or a VM's VMM) runs in the named group from now on. */
export function enterCgroup(k: Kernel, groups: Map<string, MemCgroup>, p: Process, name: string | undefined): void {
  if (name !== undefined) k.memcg.attach(p, groups.get(name)!);
}

/** One sample of every group: memory.current and memory.swap.current (bytes), memory.events so far. */
export function cgroupSample(groups: Map<string, MemCgroup>, col: (name: string) => number[]): void {
  for (const [name, cg] of groups) {
    col(`cgroup.${name}.memory_current`).push(cg.usage * PAGE_SIZE);
    col(`cgroup.${name}.swap_current`).push(cg.swapUsage * PAGE_SIZE);
    col(`cgroup.${name}.events_high`).push(cg.events.high);
    col(`cgroup.${name}.events_max`).push(cg.events.max);
    col(`cgroup.${name}.oom_kill`).push(cg.events.oom_kill);
  }
}

/** Final metrics: each group's charge and events, its tasks' over-high delay; the kills of the whole run. */
export function cgroupFinal(k: Kernel, groups: Map<string, MemCgroup>): Record<string, number> {
  const out: Record<string, number> = { oom_kill: k.vmstat.events.oom_kill };
  for (const [name, cg] of groups) {
    out[`cgroup.${name}.memory_current`] = cg.usage * PAGE_SIZE;
    out[`cgroup.${name}.swap_current`] = cg.swapUsage * PAGE_SIZE;
    for (const ev of ['low', 'high', 'max', 'oom', 'oom_kill'] as const) out[`cgroup.${name}.events_${ev}`] = cg.events[ev];
    out[`cgroup.${name}.high_delay_ns`] = Math.round(cg.highDelayNs);
    out[`cgroup.${name}.pgsteal`] = cg.subtree().reduce((a, c) => a + (c.stat.pgsteal ?? 0), 0);
  }
  return out;
}

/** Each OOM kill of the run as an event: op oom_kill, the victim, the group whose limit was hit (none: a global OOM). */
export function oomEvents(k: Kernel, t0: number): RunEventLog[] {
  return k.oom.kills.map((x) => ({
    at_ns: x.t - t0,
    op: 'oom_kill',
    process: x.comm,
    ret: 0,
    ns: 0,
    pages_migrated: 0,
    ...(x.memcg !== null ? { memcg: x.memcg } : {}),
    anon_rss_bytes: x.anonRssKb * 1024,
  }));
}
