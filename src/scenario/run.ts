/**
 * One scenario run: build the host kernel, write the knobs, create the
 * processes and their mappings, start the workload threads, sample metrics
 * at a fixed virtual interval, and return everything as a RunResult.
 */
import { Kernel } from '../kernel/kernel.ts';
import { CostProfile } from '../sim/cost_profile.ts';
import { flags as flagValue } from '../opscript/values.ts';
import { MADV, MADV_F_PROPOSED, MPOL, PAGE_SIZE, PMD_SIZE, errnoName } from '../kernel/uapi.ts';
import { sysMbind, sysMigratePages, sysSetMempolicy } from '../kernel/mempolicy.ts';
import { UnmodelledError } from '../kernel/madvise.ts';
import { HugeLeaf } from '../kernel/mm_types.ts';
import { NUMA_MEM, taskFaultsIdx } from '../kernel/numa_balancing.ts';
import { PG } from '../kernel/page.ts';
import { populateRange } from '../kernel/mmap.ts';
import { AccessModel } from '../workload/access_model.ts';
import { MemBandwidth, membwParams, membwSpec, type MemBwParams } from '../sim/membw.ts';
import { WorkloadThread, streamFor, type PhaseRuntime } from '../workload/engine.ts';
import { Uhugepaged } from '../agents/uhugepaged.ts';
import { SimAgentSys, type HeatMap } from '../agents/sim_sys.ts';
import { DamonHeat } from '../agents/damon_heat.ts';
import type { YamlPath } from '../util/yaml_input.ts';
import { hostOf, type RunSpec } from './load.ts';
import { runLocator } from './locate.ts';
import type { Process } from '../kernel/sched.ts';
import type { Host } from '../sim/host.ts';
import type { RunEventLog, RunResult, ScenarioInfo, SeriesData, ThreadNumaResult, ThreadResult } from './result.ts';
import type { EventSpec, Scenario } from './schema.ts';
import { cgroupFinal, cgroupSample, enterCgroup, oomEvents, startCgroups } from './cgroups.ts';
import type { MemCgroup } from '../kernel/memcontrol.ts';
import {
  claimGuestRange,
  hostMemoryNote,
  scheduleVmEvents,
  startVms,
  vmFinal,
  vmSeries,
  vmWarnings,
  type RunReport,
  type VmRt,
} from './vms.ts';
import { inputDigests } from './inputs.ts';
import { addVmPsiGroup, pressureFinal, pressureSampler, startSwap } from './pressure.ts';
import { SnapshotRecorder, expectedSamples } from './snapshots.ts';
import { SparseBitmap } from '../util/sparse_bitmap.ts';

export const MEMTWIN_VERSION = '0.1.0';

interface MappingRt {
  base: number;
  len: number;
  /** Pages written at least once (what the workload really needed in memory). */
  written: SparseBitmap;
}

export interface RunOptions {
  file: string;
  /**
   * Called now and then (at each sample, and every few thousand events in
   * between) with the fraction of the run's virtual time done (0 while it
   * is being set up) and the events simulated so far. Only reads state.
   */
  progress?: (fraction: number, events: number) => void;
  /**
   * Told each warning as one line when the run ends (default: stderr,
   * "memtwin: warning: ..."); the run's result lists them too.
   */
  warn?: (line: string) => void;
}

export function runScenario(spec: RunSpec, opts: RunOptions): RunResult {
  const s = spec.scenario;
  // Before the host and the profile are read: the digests are of what this run reads.
  const inputs = inputsOf(s);
  const at = runLocator(opts.file, spec);
  const warnings: string[] = [];
  const rep: RunReport = { at, warn: (path, text) => warnings.push(at.warning(path, text)) };
  /** A setup step the kernel refused: the scenario asked for something impossible. */
  const fail = (path: YamlPath, expected: string): never => {
    throw at.error(path, expected);
  };
  const host = hostOf(s, opts.file);
  const costs = s.profile ? CostProfile.load(s.profile) : CostProfile.default();
  const k = new Kernel({ host, costs, seed: s.seed });
  // Progress between samples too (a long setup, a sample interval that takes minutes to simulate): 0 until t0 is known.
  const span = { t0: NaN, end: NaN };
  const progress = opts.progress;
  if (progress)
    k.events.poll = () =>
      progress(Number.isNaN(span.t0) ? 0 : Math.max(0, (k.clock.now() - span.t0) / (span.end - span.t0)), k.events.executed);
  // Threads, kernel threads and the VMM's threads share the host's CPUs.
  k.enableScheduler();
  const bw = bandwidthOf(costs, s.profile, fail);
  const model = new AccessModel(costs, bw);
  for (const [path, value] of Object.entries(s.kernel)) {
    const r = k.sysfs.write(path, String(value));
    if (r < 0) fail(['kernel', path], `the kernel rejects ${JSON.stringify(value)} (${errnoName(r)})`);
  }
  startSwap(k, s, fail);

  const cgroups = startCgroups(k, s, fail);
  const procs: { p: Process; maps: Map<string, MappingRt> }[] = [];
  const threads: WorkloadThread[] = [];
  /** Where each workload thread comes from in the scenario, for warnings about it. */
  const threadPaths = new Map<WorkloadThread, YamlPath>();
  s.processes.forEach((ps, pi) => {
    const firstCpu = ps.threads[0]?.cpu ?? host.nodes[0]!.cpus[0] ?? 0;
    const p = k.createProcess(ps.name, firstCpu);
    enterCgroup(k, cgroups, p, ps.cgroup);
    const maps = new Map<string, MappingRt>();
    ps.mappings.forEach((m, mi) => {
      const mpath: YamlPath = ['processes', pi, 'mappings', mi];
      const prot = flagValue('prot', m.prot, 'prot');
      const fl = flagValue('flags', m.flags, 'mmap');
      const addr = k.mmap(p, 0, m.size, prot, fl);
      if (addr < 0) fail(mpath, `mmap failed with ${errnoName(addr)}`);
      if (m.memsched_group !== undefined) {
        const r = k.memsched.mbind(p, addr, m.size, m.memsched_group);
        if (r < 0) fail([...mpath, 'memsched_group'], `ms_mbind failed with ${errnoName(r)} (is /sys/kernel/memtwin/features/memsched 1?)`);
      }
      if (m.policy) {
        const r = sysMbind(k, p.mainThread, addr, m.size, policyMode(m.policy), m.policy.nodes, 0);
        if (r < 0) fail([...mpath, 'policy'], `mbind failed with ${errnoName(r)}`);
      }
      m.madvise.forEach((a, ai) => {
        const r = unmodelled(
          () => k.madvise(p, addr, m.size, MADV[a]),
          (msg) => fail([...mpath, 'madvise', ai], msg),
        );
        if (r < 0) fail([...mpath, 'madvise', ai], `${a} failed with ${errnoName(r)}`);
      });
      const written = new SparseBitmap(Math.ceil(m.size / PAGE_SIZE));
      // populate_fill: data, not zero pages (reclaim drops zero-filled pages without a swap write)
      const populate = (): void => {
        if (m.populate_fill !== undefined) k.access(p.mainThread, addr, m.size, PAGE_SIZE, true, m.populate_fill);
        else populateRange(k, p, addr, addr + m.size, true);
      };
      if (m.fragment) {
        populate();
        for (let i = 0; i < written.length; i++) {
          if (i % m.fragment !== 0) k.madvise(p, addr + i * PAGE_SIZE, PAGE_SIZE, MADV.MADV_DONTNEED);
          else written.set(i);
        }
      } else if (m.populate) {
        populate();
        written.fill();
      }
      maps.set(m.name, { base: addr, len: m.size, written });
    });
    procs.push({ p, maps });

    // first-touch slices: threads of this process doing first-touch on the same mapping, in order
    const sliceCount = new Map<string, number>();
    for (const t of ps.threads)
      for (const ph of 'phases' in t.workload ? t.workload.phases : [t.workload])
        if (ph.pattern === 'first-touch') sliceCount.set(ph.mapping, (sliceCount.get(ph.mapping) ?? 0) + t.count);
    const sliceNext = new Map<string, number>();

    ps.threads.forEach((t, ti) => {
      const tpath: YamlPath = ['processes', pi, 'threads', ti];
      for (let r = 0; r < t.count; r++) {
        const name = t.count > 1 ? `${t.name}-${r}` : t.name;
        // Pinned to cpu+r, or allowed on the set `cpus` (placed by fork balancing when the threads start).
        const pinned = t.cpu !== undefined ? t.cpu + r : undefined;
        const mask = pinned !== undefined ? [pinned] : t.cpus!;
        const kt = r === 0 && t === ps.threads[0] ? p.mainThread : k.createThread(p, mask[0]!);
        if (typeof kt === 'number') return fail([...tpath, pinned !== undefined ? 'cpu' : 'cpus'], `no CPU ${mask[0]}`);
        if (kt === p.mainThread) kt.cpu = mask[0]!;
        if (t.mempolicy) {
          const e = sysSetMempolicy(k, kt, policyMode(t.mempolicy), t.mempolicy.nodes);
          if (e < 0) fail([...tpath, 'mempolicy'], `set_mempolicy failed with ${errnoName(e)}`);
        }
        const rng = k.random.stream(`${ps.name}/${name}`);
        let at = 0;
        const phases: PhaseRuntime[] = ('phases' in t.workload ? t.workload.phases : [{ ...t.workload, duration: undefined }]).map((ph) => {
          const m = maps.get(ph.mapping)!;
          let slice = { index: r, of: t.count };
          if (ph.pattern === 'first-touch') {
            const i = sliceNext.get(ph.mapping) ?? 0;
            sliceNext.set(ph.mapping, i + 1);
            slice = { index: i, of: sliceCount.get(ph.mapping)! };
          }
          const end = ph.duration === undefined ? Infinity : (at += ph.duration);
          const to = ph.to === undefined ? undefined : maps.get(ph.to);
          return { spec: ph, stream: streamFor(ph, m.base, m.len, rng, slice, to), end };
        });
        const touch = writtenMarker(maps);
        const wt = new WorkloadThread(k, p, kt, `${ps.name}/${name}`, phases, model, () => rng.float(), touch, threads.length);
        wt.attach(mask, { cpu: pinned, sleeping: true });
        if (t.memsched_group !== undefined) {
          const e = k.memsched.tbind(kt, t.memsched_group);
          if (e < 0)
            fail([...tpath, 'memsched_group'], `ms_tbind failed with ${errnoName(e)} (is /sys/kernel/memtwin/features/memsched 1?)`);
        }
        threads.push(wt);
        threadPaths.set(wt, tpath);
      }
    });
  });

  const vms = startVms(k, s, rep);
  // With a swap file, the run reports memory pressure: PSI of the host and of each VM's tasks, swap, reclaim, OOM.
  const psiGroups = new Map(s.swap ? vms.map((rt) => [rt, addVmPsiGroup(k, rt)]) : []);
  const pressure = s.swap ? pressureSampler(k, vms, psiGroups) : undefined;
  for (const rt of vms) {
    const maps = new Map<string, MappingRt>();
    rt.nodeRam.forEach((r, node) =>
      maps.set(`ram.${node}`, { base: r.hva, len: r.size, written: new SparseBitmap(Math.ceil(r.size / PAGE_SIZE)) }),
    );
    procs.push({ p: rt.vm.process, maps });
    startGuestWorkloads(k, rt, maps, threads, model, threadPaths);
  }

  // Memory bandwidth is shared from the start of the workloads (setup ran alone).
  k.membw = new MemBandwidth(membwSpec(host, bw));
  // Phase ends were relative to the start of the workloads.
  const t0 = k.clock.now();
  for (const wt of threads) for (const ph of wt.phases) ph.end += t0;
  const end = t0 + s.duration;
  [span.t0, span.end] = [t0, end];

  const eventLog = scheduleEvents(k, s, procs, threads, t0, rep);
  const vmEvents = scheduleVmEvents(k, s, vms, t0, rep);
  k.numab.start(procs.map((x) => x.p));
  const agents = startAgents(k, s, procs, threads, vms, t0, end, rep);

  // The sampler is scheduled first, so its sample at t0 is the baseline before any access.
  if (s.swap) k.psi.startAvgsWork();
  const sampled = progress && ((f: number) => progress(f, k.events.executed));
  // What `memtwin view` draws (snapshots.ts): memory maps at the samples when asked, and migrations.
  const snap = new SnapshotRecorder(k, { procs, vms }, t0, expectedSamples(s.duration, s.sample.interval), s.sample.snapshots === true);
  const series = sampler(k, s, procs, threads, agents, t0, end, sampled, vms, cgroups, pressure, snap);
  // The threads start together; from then on the scheduler runs each on a CPU of its mask (kernel/sched).
  for (const wt of threads) {
    wt.until = end;
    wt.wake!(t0);
  }
  // A vCPU blocked in a userfault (postcopy) runs again when the kernel wakes it.
  k.uffd.wakeListeners.push((t) => threads.find((wt) => wt.thread === t)?.userfaultWoken());

  k.events.runUntil(end);
  series.sample();
  snap.sample(true);
  const snapshots = snap.finish();
  vmEvents.close();
  const events = [...eventLog, ...vmEvents.log, ...oomEvents(k, t0)].sort((a, b) => a.at_ns - b.at_ns);
  threadWarnings(k, threads, threadPaths, rep);
  vmWarnings(vms, rep);
  agentWarnings(s, agents, rep);
  const warn = opts.warn ?? ((line: string) => process.stderr.write(`${line}\n`));
  for (const w of warnings) warn(`memtwin: warning: ${w}${spec.id === 'base' ? '' : ` (run ${spec.id})`}`);
  return {
    memtwin: { version: MEMTWIN_VERSION },
    scenario: scenarioInfo(s, opts.file),
    run: { index: spec.index, id: spec.id, params: spec.params },
    seed: s.seed,
    duration_ns: s.duration,
    host: { name: host.name, nodes: host.nodes, distances: host.distances },
    profile: {
      date: costs.data.date,
      machine: `${costs.data.machine.cpu_model}, ${costs.data.machine.kernel}`,
      ...notMeasuredUsed(costs, host, vms.length > 0),
    },
    inputs,
    final: {
      ...finalMetrics(k, s, procs, threads, agents, series.data),
      ...(vms.length ? vmFinal(vms, vmEvents.log) : {}),
      ...(s.swap ? pressureFinal(k, vms, psiGroups) : {}),
      ...(cgroups.size ? cgroupFinal(k, cgroups) : {}),
      // the time the scenario's own calls (events) took, e.g. a MADV_COLLAPSE's compaction and reclaim
      ...(eventLog.length ? { events_ns_total: eventLog.reduce((a, e) => a + e.ns, 0) } : {}),
    },
    threads: threads.map((wt) => threadResult(wt, s.duration)),
    events,
    series: series.data,
    ...(warnings.length ? { warnings } : {}),
    ...(k.oom.dmesg.length ? { dmesg: [...k.oom.dmesg] } : {}),
    ...(snapshots.maps || snapshots.migrations.length ? { snapshots } : {}),
  };
}

/** Threads that stopped early (a signal: OOM, SIGBUS, SIGSEGV) did less work than asked: say so, and why. */
function threadWarnings(k: Kernel, threads: WorkloadThread[], paths: Map<WorkloadThread, YamlPath>, rep: RunReport): void {
  for (const wt of threads)
    if (wt.stopped) {
      const note = /^(OOM|SIGKILL)/.test(wt.stopped) ? hostMemoryNote(wt.k) || hostMemoryNote(k) : '';
      rep.warn(paths.get(wt) ?? [], `thread ${wt.name} stopped early (${wt.stopped})${note}; its numbers cover only the time before`);
    }
}

/** An agent that never found a region hot enough did nothing: say so, with the heat it saw. */
function agentWarnings(s: Scenario, agents: AgentRt[], rep: RunReport): void {
  agents.forEach((a, i) => {
    if (!a.agent) {
      rep.warn(
        ['agents', i, 'targets'],
        `agent ${a.name} never started: VM ${a.dstOf!.spec.name}'s migration never started its destination VMM`,
      );
      return;
    }
    const st = a.agent.stats;
    if (st.collapses || st.failures || st.hot) return;
    const min = s.agents[i]!.min_heat;
    rep.warn(
      ['agents', i, 'min_heat'],
      st.maxHeat > 0
        ? `agent ${a.name} collapsed nothing in ${st.ticks} ticks: no 2M region reached min_heat ${min} (the hottest scored ${Math.round(st.maxHeat * 100) / 100} decayed accesses per tick)`
        : `agent ${a.name} collapsed nothing in ${st.ticks} ticks: it saw no accesses in the processes it watches`,
    );
  });
}

/** The bandwidth model's parameters from the profile; a profile without them is the scenario's input error. */
function bandwidthOf(costs: CostProfile, profile: string | undefined, fail: (path: YamlPath, expected: string) => never): MemBwParams {
  try {
    return membwParams(costs);
  } catch (e) {
    return fail(['profile'], `${profile ?? 'profiles/default.json'}: ${(e as Error).message}`);
  }
}

/** The scenario's identity, notes and published figures, as results carry them. */
export function scenarioInfo(s: Scenario, file: string): ScenarioInfo {
  return {
    name: s.name,
    ...(s.description ? { description: s.description } : {}),
    file,
    ...(s.notes ? { notes: s.notes } : {}),
    ...(s.published.length ? { published: s.published } : {}),
    ...(s.summary ? { summary: s.summary } : {}),
  };
}

/**
 * The unmeasured entries a run used: the VM costs when it has VMs, and the
 * interconnect share when a host of several nodes does not give its
 * interconnect bandwidth.
 */
function notMeasuredUsed(costs: CostProfile, host: Host, vms: boolean): { not_measured?: Record<string, string> } {
  const all = notMeasured(costs);
  const used: Record<string, string> = vms ? { ...all } : {};
  const share = all['membw_interconnect_share'];
  if (!vms) delete used['membw_interconnect_share'];
  if (share && host.nodes.length > 1 && !host.interconnect) used['membw_interconnect_share'] = share;
  return Object.keys(used).length ? { not_measured: used } : {};
}

/** Profile entries with a `derived` field that says they were not measured on the profile's machine. */
function notMeasured(costs: CostProfile): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, c] of Object.entries(costs.data.costs)) if (c.derived && !c.derived.startsWith('net of')) out[name] = c.derived;
  return out;
}

/**
 * A VM's guest workloads: host workload threads on the vCPUs' host threads
 * over the HVA range of their guest node's RAM (see vms.ts).
 */
function startGuestWorkloads(
  k: Kernel,
  rt: VmRt,
  maps: Map<string, MappingRt>,
  threads: WorkloadThread[],
  model: AccessModel,
  paths: Map<WorkloadThread, YamlPath>,
): void {
  rt.spec.workloads.forEach((w, wi) => {
    const m = maps.get(`ram.${w.guest_node}`)!;
    for (let r = 0; r < w.count; r++) {
      const vcpu = rt.vm.vcpus[w.vcpu + r]!;
      const name = w.count > 1 ? `${w.name}-${r}` : w.name;
      const rng = k.random.stream(`${rt.spec.name}/${name}`);
      let at = 0;
      const phases: PhaseRuntime[] = ('phases' in w.workload ? w.workload.phases : [{ ...w.workload, duration: undefined }]).map((ph) => {
        const end = ph.duration === undefined ? Infinity : (at += ph.duration);
        // The guest task holds the memory it accesses (guest pages in use, not free to the balloon or guest_alloc).
        if (ph.pattern !== 'idle') claimGuestRange(rt, w.guest_node, ph.offset ?? 0, ph.length ?? m.len - (ph.offset ?? 0));
        return { spec: ph, stream: streamFor(ph, m.base, m.len, rng, { index: r, of: w.count }), end };
      });
      const touch = writtenMarker(maps);
      const wt = new WorkloadThread(
        k,
        rt.vm.process,
        vcpu.thread,
        `${rt.spec.name}/${name}`,
        phases,
        model,
        () => rng.float(),
        touch,
        threads.length,
      );
      wt.guest = { pageSize: w.guest_page_size === '4K' ? PAGE_SIZE : PMD_SIZE, ept: (va, pfn, write) => rt.vm.eptAccess(va, pfn, write) };
      // The vCPU thread runs on the host CPU its VM pins it to.
      wt.attach([vcpu.thread.cpu], { cpu: vcpu.thread.cpu, sleeping: true });
      threads.push(wt);
      paths.set(wt, ['vms', rt.vi, 'workloads', wi]);
      rt.guestThreads.push({ wt, vcpu: w.vcpu + r, node: w.guest_node });
    }
  });
}

interface AgentRt {
  name: string;
  /** Unset until the agent starts: at once, or (on a VM's destination VMM) when the migration starts that VMM. */
  agent?: Uhugepaged;
  sys?: SimAgentSys;
  /** Virtual time it started at, since t0; -1 while it has not. */
  attachedAt: number;
  /** `<vm>-dst` it waits for, if it targets a destination VMM. */
  dstOf?: VmRt;
}

/**
 * Userspace agents: each is a process of its own that ticks every interval,
 * its work charged to its own CPU time. Threads of the processes it watches
 * count their accesses per 2M region for it (access recency).
 *
 * An agent whose target is `<vm>-dst` (a VM with a migrate event) acts on
 * that VM's destination VMM: it starts when the migration starts that VMM,
 * as a process of the destination's host (its calls and CPU time on that
 * kernel), and sees the guest's accesses once the guest runs there.
 */
function startAgents(
  k: Kernel,
  s: Scenario,
  procs: { p: Process }[],
  threads: WorkloadThread[],
  vms: VmRt[],
  t0: number,
  end: number,
  rep: RunReport,
): AgentRt[] {
  return s.agents.map((a, idx) => {
    const dstOf = agentDestination(s, procs, vms, idx, rep);
    const rt: AgentRt = { name: a.name, attachedAt: -1, ...(dstOf ? { dstOf } : {}) };
    if (!dstOf) {
      const watched = procs.map((x) => x.p).filter((p) => !a.targets.length || a.targets.includes(p.name));
      attachAgent(k, a, idx, watched, threads, t0, t0 + a.start, end, rt, rep);
      rt.attachedAt = 0;
      return rt;
    }
    dstOf.onIncoming.push((dst) => {
      // The first destination VMM only: a later migration's (after a failed one) starts no second agent.
      if (rt.agent) return;
      if (a.hotness === 'exact') dstOf.dstHeat = new Map();
      const now = k.clock.now();
      attachAgent(dst.k, a, idx, [dst.process], [], now, Math.max(now, t0 + a.start), end, rt, rep, dstOf.dstHeat);
      rt.attachedAt = now - t0;
    });
    return rt;
  });
}

/**
 * The VM whose destination VMM an agent targets (`<vm>-dst`), or undefined
 * when its targets are scenario processes; a target that is neither is the
 * scenario's error.
 */
function agentDestination(s: Scenario, procs: { p: Process }[], vms: VmRt[], idx: number, rep: RunReport): VmRt | undefined {
  const targets = s.agents[idx]!.targets;
  let dstOf: VmRt | undefined;
  targets.forEach((t, ti) => {
    if (procs.some((x) => x.p.name === t)) return;
    const path = ['agents', idx, 'targets', ti];
    const vm = t.endsWith('-dst') ? vms.find((rt) => `${rt.spec.name}-dst` === t) : undefined;
    if (!vm) {
      const names = [...procs.map((x) => x.p.name), ...vms.map((rt) => `${rt.spec.name}-dst`)];
      throw rep.at.error(path, `no process "${t}" (there are ${names.join(', ')}; VM-dst is a VM's migration destination)`);
    }
    if (!vm.migrates) throw rep.at.error(path, `VM ${vm.spec.name} has no migrate event: "${t}" (its destination VMM) never starts`);
    if (targets.length > 1)
      throw rep.at.error(path, `an agent on a destination VMM runs on that VMM's host: "${t}" must be its only target`);
    dstOf = vm;
  });
  return dstOf;
}

/** Start agent `idx` on kernel `k`, watching `watched`: its process, its hotness source (from `from`), its ticks from `firstTick`. */
function attachAgent(
  k: Kernel,
  a: Scenario['agents'][number],
  idx: number,
  watched: Process[],
  threads: WorkloadThread[],
  from: number,
  firstTick: number,
  end: number,
  rt: AgentRt,
  rep: RunReport,
  heatMap?: HeatMap,
): void {
  const heat = new Map<Process, HeatMap>();
  for (const p of watched) heat.set(p, heatMap ?? new Map());
  // hotness: exact counts every access per 2M region in the workload engine; damon pays a kdamond to sample them.
  let damon: DamonHeat | undefined;
  if (a.hotness === 'damon') {
    if (a.damon.min_nr_regions > a.damon.max_nr_regions)
      throw rep.at.error(
        ['agents', idx, 'damon', 'min_nr_regions'],
        `exceeds max_nr_regions (${a.damon.max_nr_regions}): DAMON refuses it`,
      );
    if (a.damon.sample_us > a.damon.aggr_us)
      throw rep.at.error(['agents', idx, 'damon', 'sample_us'], `exceeds aggr_us (${a.damon.aggr_us}): DAMON refuses it`);
    damon = new DamonHeat(k, watched, a.damon, `kdamond.${idx}`);
    damon.start(from, end);
  } else for (const wt of threads) if (heat.has(wt.process)) wt.heat = heat.get(wt.process);
  const sys = new SimAgentSys(k, a.name, watched, heat, damon);
  const agent = new Uhugepaged(sys, {
    interval: a.interval,
    cpu_budget: a.cpu_budget,
    min_heat: a.min_heat,
    retry_after: a.retry_after,
    targets: a.targets,
  });
  const tick = (): void => {
    sys.run(() => agent.tick());
    if (k.clock.now() + a.interval < end) k.events.schedule(k.clock.now() + a.interval, a.name, tick);
  };
  k.events.schedule(firstTick, a.name, tick);
  rt.agent = agent;
  rt.sys = sys;
}

/** Run a kernel call; advice memtwin does not model yet becomes a clear input error. */
function unmodelled(call: () => number, fail: (msg: string) => never): number {
  try {
    return call();
  } catch (e) {
    if (e instanceof UnmodelledError) return fail(e.message);
    throw e;
  }
}

/** The numeric mode (with mode flags) of a scenario policy. */
function policyMode(pol: { mode: keyof typeof MPOL; flags: (keyof typeof MPOL)[] }): number {
  return pol.flags.reduce((m, f) => m | MPOL[f], MPOL[pol.mode]);
}

/**
 * The fields each process event reads (besides at, process and op) and the
 * ones it needs among them. A field another op reads would be ignored
 * (`flags`, defaulted to [], counts when not empty): an error, as is a
 * needed field left out.
 */
const EVENT_FIELDS: Record<EventSpec['op'], { reads: readonly (keyof EventSpec)[]; needs: readonly (keyof EventSpec)[] }> = {
  migrate_pages: { reads: ['old_nodes', 'new_nodes'], needs: ['old_nodes', 'new_nodes'] },
  mbind: { reads: ['mapping', 'policy', 'flags'], needs: ['mapping', 'policy'] },
  madvise: { reads: ['mapping', 'advice'], needs: ['mapping', 'advice'] },
  process_madvise: { reads: ['mapping', 'advice', 'madvise_flags'], needs: ['mapping', 'advice'] },
  set_mempolicy: { reads: ['policy'], needs: ['policy'] },
  sched_setaffinity: { reads: ['thread', 'cpu'], needs: ['thread', 'cpu'] },
  ms_move: { reads: ['group', 'node'], needs: ['group', 'node'] },
};

/** What a process event's fields mean, for the error naming a missing one. */
const EVENT_FIELD_MEANING: Partial<Record<keyof EventSpec, string>> = {
  mapping: 'the mapping it applies to',
  policy: 'the memory policy, e.g. { mode: MPOL_BIND, nodes: [0] }',
  advice: 'the MADV_* advice',
  old_nodes: 'the nodes to move from',
  new_nodes: 'the nodes to move to',
  thread: 'the thread, by its name in the results',
  cpu: 'the CPU it moves to',
  group: 'the memsched group',
  node: 'the node it moves to',
};

/** Checks of a process event the schema cannot make (see EVENT_FIELDS), and the names it refers to. */
function checkEvent(
  ev: EventSpec,
  path: YamlPath,
  procs: { p: Process; maps: Map<string, MappingRt> }[],
  threads: WorkloadThread[],
  rep: RunReport,
): { target: { p: Process; maps: Map<string, MappingRt> }; m: MappingRt | undefined; wt: WorkloadThread | undefined } {
  const { reads, needs } = EVENT_FIELDS[ev.op];
  for (const key of Object.keys(ev) as (keyof EventSpec)[]) {
    if (key === 'at' || key === 'process' || key === 'op' || reads.includes(key)) continue;
    if (ev[key] === undefined || (key === 'flags' && ev.flags.length === 0)) continue;
    throw rep.at.error([...path, key], `has no effect on a ${ev.op} event (it reads ${reads.join(', ')})`);
  }
  for (const key of needs)
    if (ev[key] === undefined) throw rep.at.error(path, `${ev.op} needs ${key} (${EVENT_FIELD_MEANING[key] ?? key})`);
  const target = procs.find((x) => x.p.name === ev.process);
  if (!target) throw rep.at.error([...path, 'process'], `no process "${ev.process}" (there are ${procs.map((x) => x.p.name).join(', ')})`);
  const m = ev.mapping ? target.maps.get(ev.mapping) : undefined;
  if (ev.mapping && !m)
    throw rep.at.error([...path, 'mapping'], `no mapping "${ev.mapping}" in ${ev.process} (it has ${[...target.maps.keys()].join(', ')})`);
  const wt = ev.thread === undefined ? undefined : threads.find((x) => x.name === `${ev.process}/${ev.thread}`);
  if (ev.thread !== undefined && !wt) throw rep.at.error([...path, 'thread'], `no thread "${ev.thread}" in ${ev.process}`);
  return { target, m, wt };
}

/**
 * Scenario events: syscalls made at a virtual time by a tool acting on a
 * process (migratepages, numactl). Their kernel time is charged to the tool,
 * not to the workload threads; the log records what each returned and cost.
 * Every event is checked before the run starts.
 */
function scheduleEvents(
  k: Kernel,
  s: Scenario,
  procs: { p: Process; maps: Map<string, MappingRt> }[],
  threads: WorkloadThread[],
  t0: number,
  rep: RunReport,
): RunEventLog[] {
  const log: RunEventLog[] = [];
  s.events.forEach((ev, idx) => {
    const { target, m, wt } = checkEvent(ev, ['events', idx], procs, threads, rep);
    k.events.schedule(t0 + ev.at, `event ${ev.op}`, () => {
      const ctx = { ns: 0 };
      const moved0 = k.vmstat.events.pgmigrate_success;
      // The call runs as the tool's task: its kernel time is the tool's, not a workload thread's, on any CPU.
      const ret = k.runAsTask(
        ctx,
        (): number => {
          switch (ev.op) {
            case 'migrate_pages':
              return sysMigratePages(k, target.p, target.p, ev.old_nodes!, ev.new_nodes!);
            case 'mbind':
              return sysMbind(
                k,
                target.p.mainThread,
                m!.base,
                m!.len,
                policyMode(ev.policy!),
                ev.policy!.nodes,
                ev.flags.reduce((f, x) => f | MPOL[x], 0),
              );
            case 'madvise':
              return unmodelled(
                () => k.madvise(target.p, m!.base, m!.len, MADV[ev.advice!]),
                (msg) => {
                  throw rep.at.error(['events', idx, 'advice'], msg);
                },
              );
            case 'process_madvise':
              return unmodelled(
                () =>
                  k.processMadvise(
                    target.p,
                    target.p,
                    [[m!.base, m!.len]],
                    MADV[ev.advice!],
                    (ev.madvise_flags ?? []).reduce((f, x) => f | MADV_F_PROPOSED[x], 0),
                  ),
                (msg) => {
                  throw rep.at.error(['events', idx, 'advice'], msg);
                },
              );
            case 'ms_move':
              return k.memsched.move(ev.group!, ev.node!);
            case 'set_mempolicy':
              return sysSetMempolicy(k, target.p.mainThread, policyMode(ev.policy!), ev.policy!.nodes);
            case 'sched_setaffinity':
              // A mask of one CPU: the thread runs there from now on (EINVAL: no such CPU).
              return k.setAffinity(wt!.thread, [ev.cpu!]);
          }
        },
        { name: `tool ${ev.op}` },
      );
      log.push({
        at_ns: ev.at,
        op: ev.op,
        process: ev.process,
        ...(ev.thread !== undefined ? { thread: ev.thread } : {}),
        ret,
        ...(ret < 0 ? { errno: errnoName(ret) } : {}),
        ns: Math.round(ctx.ns),
        pages_migrated: k.vmstat.events.pgmigrate_success - moved0,
      });
    });
  });
  return log;
}

function writtenMarker(maps: Map<string, MappingRt>): (va: number) => void {
  const list = [...maps.values()];
  let last = list[0]!;
  return (va) => {
    if (va < last.base || va >= last.base + last.len) {
      const m = list.find((x) => va >= x.base && va < x.base + x.len);
      if (!m) return;
      last = m;
    }
    last.written.set(Math.floor((va - last.base) / PAGE_SIZE));
  };
}

/**
 * The scenario as run, without the sweep section (a run has its values in
 * place), and the digests of the files it reads (inputs.ts): what decides
 * whether a finished run can be kept.
 */
export function inputsOf(s: Scenario): unknown {
  const { sweep: _sweep, ...rest } = s;
  return { ...rest, digests: inputDigests(s) };
}

function memoryOf(k: Kernel, procs: { p: Process }[]): { rss: number; anonHuge: number } {
  let rss = 0;
  let anonHuge = 0;
  for (const { p } of procs) {
    rss += (p.mm.rssAnon + p.mm.rssShmem) * PAGE_SIZE;
    for (const e of p.mm.pgtable.pmds.values())
      if (e instanceof HugeLeaf && !e.isZero && !(k.mem.flags(e.pfn) & PG.hugetlb)) anonHuge += PMD_SIZE;
  }
  return { rss, anonHuge };
}

function sampler(
  k: Kernel,
  s: Scenario,
  procs: { p: Process }[],
  threads: WorkloadThread[],
  agents: AgentRt[],
  t0: number,
  end: number,
  progress?: (f: number) => void,
  vms: VmRt[] = [],
  cgroups: Map<string, MemCgroup> = new Map(),
  pressure?: (col: (name: string) => number[]) => void,
  snap?: SnapshotRecorder,
) {
  const data: SeriesData = { t_ns: [], metrics: {} };
  const col = (name: string): number[] => (data.metrics[name] ??= []);
  let lastT = t0;
  let lastFaults = k.vmstat.events.pgfault;
  let lastFaultNs = 0;
  const lastAcc = threads.map(() => 0);
  let lastHuge = 0;
  let lastAll = 0;
  let lastStall = 0;
  let lastMigWait = 0;
  let lastBusy = 0;
  let lastDelay = 0;
  let lastAccessNs = 0;
  const nodes = k.nrNodes;
  let lastLocal = new Array<number>(nodes).fill(0);
  let lastRemote = new Array<number>(nodes).fill(0);
  let lastAllLocal = 0;
  let lastAllRemote = 0;
  const lastBw = new Array<number>(nodes).fill(0);
  const lastVmHuge = vms.map(() => ({ all: 0, huge: 0 }));
  const sample = (): void => {
    const now = k.clock.now();
    if (data.t_ns.length && now === data.t_ns[data.t_ns.length - 1]! + t0) return;
    // Seconds since the last sample: 0 at the first one (at the start), whose rates are all 0, though threads
    // may already have run a quantum at that instant.
    const dt = (now - lastT) / 1e9;
    data.t_ns.push(now - t0);
    const mem = memoryOf(k, procs);
    col('rss_bytes').push(mem.rss);
    col('anon_huge_bytes').push(mem.anonHuge);
    const faults = k.vmstat.events.pgfault;
    const faultNs = threads.reduce((a, t) => a + t.faultNs, 0);
    col('faults').push(faults - lastFaults);
    col('fault_ns_mean').push(faults > lastFaults ? Math.round((faultNs - lastFaultNs) / (faults - lastFaults)) : 0);
    lastFaults = faults;
    lastFaultNs = faultNs;
    threads.forEach((t, i) => {
      col(`throughput.${t.name}`).push(dt > 0 ? Math.round((t.accesses - lastAcc[i]!) / dt) : 0);
      lastAcc[i] = t.accesses;
    });
    const local = new Array<number>(nodes).fill(0);
    const remote = new Array<number>(nodes).fill(0);
    for (const t of threads)
      for (let n = 0; n < nodes; n++) {
        local[n]! += t.byNodeLocal[n]!;
        remote[n]! += t.byNodeRemote[n]!;
      }
    for (let n = 0; n < nodes; n++) {
      col(`local.${n}`).push(local[n]! - lastLocal[n]!);
      col(`remote.${n}`).push(remote[n]! - lastRemote[n]!);
    }
    // Remote share of the accesses in the interval, whatever host a thread runs on (a migrated guest's node ids
    // belong to its destination host, so local.N/remote.N above count the source host's nodes only).
    const allLocal = threads.reduce((a, t) => a + t.local, 0);
    const allRemote = threads.reduce((a, t) => a + t.remote, 0);
    const dAll = allLocal + allRemote - lastAllLocal - lastAllRemote;
    col('remote_access_ratio').push(dAll > 0 ? Math.round(((allRemote - lastAllRemote) / dAll) * 1e4) / 1e4 : 0);
    lastAllLocal = allLocal;
    lastAllRemote = allRemote;
    lastLocal = local;
    lastRemote = remote;
    const ev = k.vmstat.events;
    const all = threads.reduce((a, t) => a + t.accesses, 0);
    const huge = threads.reduce((a, t) => a + t.hugeAccesses, 0);
    const stall = threads.reduce((a, t) => a + t.stallNs, 0);
    const accessNs = threads.reduce((a, t) => a + t.accessNs, 0);
    col('huge_access_ratio').push(all > lastAll ? Math.round(((huge - lastHuge) / (all - lastAll)) * 1e4) / 1e4 : 0);
    col('access_ns_mean').push(all > lastAll ? Math.round(((accessNs - lastAccessNs) / (all - lastAll)) * 10) / 10 : 0);
    col('stall_ns').push(Math.round(stall - lastStall));
    const migWait = threads.reduce((a, t) => a + t.migrationWaitNs, 0);
    col('migration_wait_ns').push(Math.round(migWait - lastMigWait));
    [lastAll, lastHuge, lastStall, lastAccessNs, lastMigWait] = [all, huge, stall, accessNs, migWait];
    const busy = cpuBusyNs(k);
    const delay = threads.reduce((a, t) => a + (t.thread.se?.waitNs ?? 0), 0);
    col('cpu_util').push(now > lastT ? Math.round(((busy - lastBusy) / ((now - lastT) * k.host.cpuNode.size)) * 1e4) / 1e4 : 0);
    col('run_delay_ns').push(delay - lastDelay);
    [lastBusy, lastDelay] = [busy, delay];
    col('khugepaged_cpu_ns').push(Math.round(k.khugepaged.stats.cpuNs));
    col('thp_collapse_alloc').push(ev.thp_collapse_alloc);
    if (agents.length) col('agent_cpu_ns').push(Math.round(agents.reduce((a, x) => a + (x.sys?.cpuNs() ?? 0), 0)));
    col('thp_fault_alloc').push(ev.thp_fault_alloc);
    col('thp_fault_fallback').push(ev.thp_fault_fallback);
    col('compact_stall').push(ev.compact_stall);
    membwSample(k, col, lastBw, dt);
    // numastat's view: host memory in use on each node (frames not free), on hosts of more than one node.
    if (k.nrNodes > 1) for (const z of k.phys.zones) col(`node${z.nid}.used_bytes`).push((z.spannedPages - z.freePages) * PAGE_SIZE);
    cgroupSample(cgroups, col);
    if (vms.length) {
      col('host.free_bytes').push(k.phys.freePages() * PAGE_SIZE);
      vmHugeSample(vms, col, lastVmHuge);
      for (const [name, v] of Object.entries(vmSeries(vms))) col(name).push(v);
    }
    pressure?.(col);
    lastT = now;
    snap?.sample();
    progress?.((now - t0) / (end - t0));
  };
  const interval = Math.max(1, s.sample.interval);
  const tick = (): void => {
    sample();
    if (k.clock.now() + interval < end) k.events.schedule(k.clock.now() + interval, 'sampler', tick);
  };
  k.events.schedule(t0, 'sampler', tick);
  return { data, sample };
}

/**
 * node<N>.membw_util: the share of the node's bandwidth that the bytes
 * registered in the interval used; node<N>.membw_latency_x: the latency
 * multiplier its accesses saw at the sample (src/sim/membw.ts).
 */
function membwSample(k: Kernel, col: (name: string) => number[], last: number[], dt: number): void {
  const bw = k.membw;
  if (!bw) return;
  for (let n = 0; n < k.nrNodes; n++) {
    const b = bw.bytesOnNode(n);
    col(`node${n}.membw_util`).push(dt > 0 ? Math.round(((b - last[n]!) / (bw.nodeCapacity(n) * dt)) * 1e4) / 1e4 : 0);
    col(`node${n}.membw_latency_x`).push(Math.round(bw.resourceMultiplier(n, k.clock.now()) * 1e4) / 1e4);
    last[n] = b;
  }
}

/** node<N>.membw_util_mean and _max, node<N>.membw_latency_x_mean (over the samples), and path<I>-<J>.membw_util_mean for an interconnect path that carried traffic. */
function membwFinal(k: Kernel, durationNs: number, series: SeriesData): Record<string, number> {
  const bw = k.membw;
  if (!bw) return {};
  const out: Record<string, number> = {};
  const r4 = (x: number): number => Math.round(x * 1e4) / 1e4;
  for (let n = 0; n < k.nrNodes; n++) {
    out[`node${n}.membw_util_mean`] = r4(bw.bytesOnNode(n) / (bw.nodeCapacity(n) * (durationNs / 1e9)));
    out[`node${n}.membw_util_max`] = Math.max(0, ...(series.metrics[`node${n}.membw_util`] ?? []));
    out[`node${n}.membw_bytes`] = bw.bytesOnNode(n);
    const lat = series.metrics[`node${n}.membw_latency_x`] ?? [];
    out[`node${n}.membw_latency_x_mean`] = lat.length ? r4(lat.reduce((a, b) => a + b, 0) / lat.length) : 1;
  }
  for (let i = 0; i < k.nrNodes; i++)
    for (let j = 0; j < k.nrNodes; j++)
      if (i !== j && bw.bytesOnPath(i, j) > 0)
        out[`path${i}-${j}.membw_util_mean`] = r4(bw.bytesOnPath(i, j) / (bw.pathCapacity(i, j) * (durationNs / 1e9)));
  return out;
}

function finalMetrics(
  k: Kernel,
  s: Scenario,
  procs: { p: Process; maps: Map<string, MappingRt> }[],
  threads: WorkloadThread[],
  agents: AgentRt[],
  series: SeriesData,
): Record<string, number> {
  const mem = memoryOf(k, procs);
  let written = 0;
  for (const { maps } of procs) for (const m of maps.values()) written += m.written.count;
  const acc = threads.reduce((a, t) => a + t.accesses, 0);
  const faults = threads.reduce((a, t) => a + t.faults, 0);
  const faultNs = threads.reduce((a, t) => a + t.faultNs, 0);
  const remote = threads.reduce((a, t) => a + t.remote, 0);
  const accessNs = threads.reduce((a, t) => a + t.accessNs, 0);
  const ev = k.vmstat.events;
  const anon = procs.reduce((a, { p }) => a + p.mm.rssAnon * PAGE_SIZE, 0);
  return {
    accesses: acc,
    throughput_per_s: Math.round(acc / (s.duration / 1e9)),
    access_ns_mean: acc ? Math.round((accessNs / acc) * 10) / 10 : 0,
    faults,
    fault_ns_total: Math.round(faultNs),
    fault_ns_mean: faults ? Math.round(faultNs / faults) : 0,
    rss_bytes: mem.rss,
    anon_huge_bytes: mem.anonHuge,
    anon_huge_fraction: anon ? Math.round((mem.anonHuge / anon) * 1e4) / 1e4 : 0,
    written_bytes: written * PAGE_SIZE,
    bloat_bytes: Math.max(0, mem.rss - written * PAGE_SIZE),
    remote_access_ratio: acc ? Math.round((remote / acc) * 1e4) / 1e4 : 0,
    thp_fault_alloc: ev.thp_fault_alloc,
    thp_fault_fallback: ev.thp_fault_fallback,
    compact_stall: ev.compact_stall,
    numa_pte_updates: ev.numa_pte_updates,
    numa_hint_faults: ev.numa_hint_faults,
    numa_hint_faults_local: ev.numa_hint_faults_local,
    numa_pages_migrated: ev.numa_pages_migrated,
    compact_success: ev.compact_success,
    compact_fail: ev.compact_fail,
    pgmigrate_success: ev.pgmigrate_success,
    threads_stopped: threads.filter((t) => t.stopped).length,
    huge_access_ratio: acc ? Math.round((threads.reduce((a, t) => a + t.hugeAccesses, 0) / acc) * 1e4) / 1e4 : 0,
    time_to_huge90_ns: timeToHuge90(series),
    stall_ns_total: Math.round(threads.reduce((a, t) => a + t.stallNs, 0)),
    cpu_util_mean: Math.round((cpuBusyNs(k) / (s.duration * k.host.cpuNode.size)) * 1e4) / 1e4,
    run_delay_ns_total: threads.reduce((a, t) => a + (t.thread.se?.waitNs ?? 0), 0),
    stalls: threads.reduce((a, t) => a + t.stalls, 0),
    migration_wait_ns_total: Math.round(threads.reduce((a, t) => a + t.migrationWaitNs, 0)),
    migration_waits: threads.reduce((a, t) => a + t.migrationWaits, 0),
    thp_collapse_alloc: ev.thp_collapse_alloc,
    thp_collapse_alloc_failed: ev.thp_collapse_alloc_failed,
    khugepaged_pages_collapsed: k.thp.khugepaged.pages_collapsed,
    khugepaged_cpu_ns: Math.round(k.khugepaged.stats.cpuNs),
    numa_scan_cpu_ns: Math.round(k.numab.scanCpuNs),
    ...(agents.length
      ? {
          agent_cpu_ns: Math.round(agents.reduce((a, x) => a + (x.sys?.cpuNs() ?? 0), 0)),
          agent_collapses: agents.reduce((a, x) => a + (x.agent?.stats.collapses ?? 0), 0),
          kdamond_cpu_ns: Math.round(agents.reduce((a, x) => a + (x.sys?.damon?.cpuNs ?? 0), 0)),
          ...destinationAgents(agents),
        }
      : {}),
    ...perProcess(threads, s.duration),
    ...membwFinal(k, s.duration, series),
  };
}

/**
 * agent.NAME.*: of each agent on a destination VMM (another host's process, maybe), when it started (ns since
 * the workloads' start; -1 if the migration never started that VMM), its CPU time and its collapses.
 */
function destinationAgents(agents: AgentRt[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const a of agents)
    if (a.dstOf) {
      out[`agent.${a.name}.attached_ns`] = a.attachedAt;
      out[`agent.${a.name}.cpu_ns`] = Math.round(a.sys?.cpuNs() ?? 0);
      out[`agent.${a.name}.collapses`] = a.agent?.stats.collapses ?? 0;
    }
  return out;
}

/** vm.NAME.huge_access_ratio per sample: the share of the guest's accesses in the interval through huge host mappings. */
function vmHugeSample(vms: VmRt[], col: (name: string) => number[], last: { all: number; huge: number }[]): void {
  vms.forEach((rt, i) => {
    if (!rt.guestThreads.length) return;
    const all = rt.guestThreads.reduce((a, g) => a + g.wt.accesses, 0);
    const huge = rt.guestThreads.reduce((a, g) => a + g.wt.hugeAccesses, 0);
    const l = last[i]!;
    col(`vm.${rt.spec.name}.huge_access_ratio`).push(all > l.all ? Math.round(((huge - l.huge) / (all - l.all)) * 1e4) / 1e4 : 0);
    [l.all, l.huge] = [all, huge];
  });
}

/** CPU time run on the host's CPUs so far, by every task of its scheduler. */
function cpuBusyNs(k: Kernel): number {
  return k.sched ? k.sched.busyNsNow() : 0;
}

/**
 * When the share of accesses served by huge mappings first reached 90% in a
 * sample interval (ns since the start), or -1 if it never did.
 */
function timeToHuge90(series: SeriesData): number {
  const r = series.metrics['huge_access_ratio'] ?? [];
  const i = r.findIndex((x) => x >= 0.9);
  return i < 0 ? -1 : series.t_ns[i]!;
}

/**
 * Per process: process.<name>.remote_access_ratio, the share of its accesses that went to another
 * node, and process.<name>.throughput_per_s, its threads' accesses per second of the run.
 */
function perProcess(threads: WorkloadThread[], durationNs: number): Record<string, number> {
  const by = new Map<string, { acc: number; remote: number }>();
  for (const t of threads) {
    const name = t.process.name;
    const e = by.get(name) ?? { acc: 0, remote: 0 };
    e.acc += t.accesses;
    e.remote += t.remote;
    by.set(name, e);
  }
  const out: Record<string, number> = {};
  for (const [name, e] of by) {
    out[`process.${name}.remote_access_ratio`] = e.acc ? Math.round((e.remote / e.acc) * 1e4) / 1e4 : 0;
    out[`process.${name}.throughput_per_s`] = Math.round(e.acc / (durationNs / 1e9));
  }
  return out;
}

function threadResult(wt: WorkloadThread, durationNs: number): ThreadResult {
  const [process, thread] = wt.name.split('/') as [string, string];
  return {
    process,
    thread,
    cpu: wt.thread.cpu,
    node: wt.cpuNode,
    accesses: wt.accesses,
    reads: wt.reads,
    writes: wt.writes,
    faults: wt.faults,
    fault_ns: Math.round(wt.faultNs),
    local_accesses: wt.local,
    remote_accesses: wt.remote,
    throughput: Math.round(wt.accesses / (durationNs / 1e9)),
    remote_access_ratio: wt.accesses ? Math.round((wt.remote / wt.accesses) * 1e4) / 1e4 : 0,
    huge_access_ratio: wt.accesses ? Math.round((wt.hugeAccesses / wt.accesses) * 1e4) / 1e4 : 0,
    stall_ns: Math.round(wt.stallNs),
    stalls: wt.stalls,
    migration_wait_ns: Math.round(wt.migrationWaitNs),
    migration_waits: wt.migrationWaits,
    cpu_ns: wt.thread.se?.sumExecNs ?? 0,
    run_delay_ns: wt.thread.se?.waitNs ?? 0,
    nr_migrations: wt.thread.se?.nrMigrations ?? 0,
    membw_bytes: wt.membwBytes.reduce((a, b) => a + b, 0),
    ...(wt.stopped ? { stopped: wt.stopped } : {}),
    ...numaResult(wt),
  };
}

/** The thread's NUMA balancing state (task_struct numa_faults and numa_group), if it has any. */
function numaResult(wt: WorkloadThread): { numa?: ThreadNumaResult } {
  const ts = wt.k.numab.tasks.get(wt.thread);
  if (!ts) return {};
  const nodes = wt.k.nrNodes;
  const g = ts.group;
  const at = (f: Float64Array, nid: number, priv: number): number => Math.round(f[taskFaultsIdx(nodes, NUMA_MEM, nid, priv)]!);
  return {
    numa: {
      numa_preferred_nid: ts.preferred,
      numa_group_id: g ? g.gid : 0,
      numa_group_nr_tasks: g ? g.nrTasks : 0,
      numa_pages_migrated: ts.numaPagesMigrated,
      hint_faults_private: ts.hintFaultsPrivate,
      hint_faults_shared: ts.hintFaultsShared,
      faults: Array.from({ length: nodes }, (_, node) => ({
        node,
        task_private: at(ts.numaFaults, node, 1),
        task_shared: at(ts.numaFaults, node, 0),
        group_private: g ? at(g.faults, node, 1) : 0,
        group_shared: g ? at(g.faults, node, 0) : 0,
      })),
    },
  };
}
