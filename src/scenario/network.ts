/**
 * The network of a scenario (src/sim/network.ts): the scenario's own host
 * and the hosts of `hosts:` with their NICs, the fabric between them if one
 * is given, the background flows of `traffic:`, and the kernels of the
 * hosts that migrations arrive on (one per host, shared by every VM that
 * migrates there, as its memory and NIC are).
 *
 * Series (per sample): each link's utilisation over the interval
 * (`net.LINK.utilisation`, 0 to 1; links are `HOST.tx`, `HOST.rx` and
 * `fabric`), each traffic flow's rate (`net.flow.NAME.bytes_per_s`) and
 * each VM's migration main channel's (`vm.VM.migration.main_bytes_per_s`).
 * Final: bytes each link and each flow on the network carried (a
 * migration's main channel is the flow `VM.main`).
 */
import { Kernel } from '../kernel/kernel.ts';
import { errnoName } from '../kernel/uapi.ts';
import { hostFromFile, resolveHost } from '../sim/host.ts';
import { Network, type Flow } from '../sim/network.ts';
import { MemBandwidth, membwParams, membwSpec } from '../sim/membw.ts';
import type { YamlPath } from '../util/yaml_input.ts';
import type { Scenario } from './schema.ts';
import type { RunReport } from './vms.ts';

export class ScenarioNetwork {
  readonly net: Network;
  /** The scenario host's name on the network (its `host`'s name). */
  readonly source: string;
  private readonly kernels = new Map<string, Kernel>();
  private readonly lastBytes = new Map<object, number>();
  /** Per link, over the samples in which it carried traffic: the sum and number of their utilisations, and the largest. */
  private readonly busy = new Map<object, { sum: number; n: number; max: number }>();
  private lastT: number;
  /** The flows of `traffic:`. */
  private readonly traffic: Flow[] = [];

  constructor(
    private readonly k: Kernel,
    private readonly s: Scenario,
    private readonly rep: RunReport,
  ) {
    this.net = new Network(k.events);
    this.source = k.host.name;
    const nic = s.nic!;
    this.net.addHost(this.source, nic);
    (s.hosts ?? []).forEach((h) => this.net.addHost(h.name, h.nic ?? nic));
    if (s.fabric) this.net.setFabric(s.fabric);
    this.lastT = k.clock.now();
  }

  /** Whether `name` is a host of `hosts:` (a destination that migrations share). */
  isHost(name: string): boolean {
    return (this.s.hosts ?? []).some((h) => h.name === name);
  }

  /**
   * The kernel of host `name` of `hosts:`, created when the first VM
   * migrates there: its machine, the scenario's knobs, then its own.
   */
  kernel(name: string): Kernel {
    const have = this.kernels.get(name);
    if (have) return have;
    const hi = this.s.hosts!.findIndex((h) => h.name === name);
    const h = this.s.hosts![hi]!;
    const path: YamlPath = ['hosts', hi];
    let host;
    try {
      host = h.host === undefined ? this.k.host : typeof h.host === 'string' ? resolveHost(h.host) : hostFromFile(h.host);
    } catch (e) {
      throw this.rep.at.error([...path, 'host'], `cannot load host: ${(e as Error).message}`);
    }
    // Seeds after the scenario's (seed + 1 is a destination of its own).
    const dk = new Kernel({ host, costs: this.k.costs, seed: this.s.seed + 2 + hi, sameTimeAs: this.k });
    // Its CPUs are shared through a scheduler of its own, and its memory bandwidth through a model of its own, as the
    // scenario host's are (what arriving VMMs load and copy there loads its nodes, not the scenario host's).
    if (this.k.sched) dk.enableScheduler();
    if (this.k.membw) dk.membw = new MemBandwidth(membwSpec(host, membwParams(this.k.costs)));
    for (const [knob, value] of Object.entries(this.s.kernel)) {
      const r = dk.sysfs.write(knob, String(value));
      if (r < 0) throw this.rep.at.error(['kernel', knob], `host ${name}'s kernel rejects ${JSON.stringify(value)} (${errnoName(r)})`);
    }
    for (const [knob, value] of Object.entries(h.kernel)) {
      const r = dk.sysfs.write(knob, String(value));
      if (r < 0)
        throw this.rep.at.error([...path, 'kernel', knob], `host ${name}'s kernel rejects ${JSON.stringify(value)} (${errnoName(r)})`);
    }
    this.kernels.set(name, dk);
    return dk;
  }

  /** The background flows of `traffic:`, started and stopped at their times (after the workloads start at t0). */
  startTraffic(t0: number, end: number): void {
    (this.s.traffic ?? []).forEach((t, i) => {
      const name = t.name ?? `${t.from}-${t.to}-${i}`;
      const f = this.net.flow(name, this.net.path(t.from, t.to), t.rate === 'greedy' ? {} : { cap: t.rate });
      this.traffic.push(f);
      this.k.events.schedule(t0 + t.start, `traffic ${name} start`, () => f.start());
      if (t.stop !== undefined && t0 + t.stop < end) this.k.events.schedule(t0 + t.stop, `traffic ${name} stop`, () => f.stop());
    });
  }

  /**
   * Per-sample series: each link's utilisation and each flow's mean rate
   * over the interval just ended; `channels` are the VMs' migration
   * channels by VM name (none before its migration starts: 0).
   */
  series(out: Record<string, number>, channels: [string, Flow | null | undefined][]): void {
    const now = this.k.clock.now();
    const dt = now - this.lastT;
    const delta = (o: object, bytes: number): number => {
      const d = bytes - (this.lastBytes.get(o) ?? 0);
      this.lastBytes.set(o, bytes);
      return d;
    };
    const rate = (o: object, bytes: number): number => {
      const d = delta(o, bytes);
      return dt > 0 ? Math.round((d * 1e9) / dt) : 0;
    };
    this.net.settle();
    for (const l of this.net.links) {
      const d = delta(l, l.bytes);
      const u = dt > 0 ? Math.round((d / ((l.capacity * dt) / 1e9)) * 1e4) / 1e4 : 0;
      out[`net.${l.name}.utilisation`] = u;
      if (d > 0) {
        const b = this.busy.get(l) ?? { sum: 0, n: 0, max: 0 };
        b.sum += u;
        b.n++;
        b.max = Math.max(b.max, u);
        this.busy.set(l, b);
      }
    }
    for (const f of this.traffic) out[`net.flow.${f.name}.bytes_per_s`] = rate(f, f.bytes);
    for (const [vm, f] of channels) {
      f?.net.settle();
      out[`vm.${vm}.migration.main_bytes_per_s`] = f ? rate(f, f.bytes) : 0;
    }
    this.lastT = now;
  }

  /**
   * Final metrics: bytes each link and each flow carried; for a link that
   * carried traffic, its utilisation over the samples in which it did (mean
   * and largest: how full it was while in use, the reason a transfer over
   * it took as long as it did); the bytes each node of each host of
   * `hosts` moved.
   */
  final(out: Record<string, number>): void {
    this.net.settle();
    for (const l of this.net.links) {
      out[`net.${l.name}.bytes`] = Math.round(l.bytes);
      const b = this.busy.get(l);
      if (!b) continue;
      out[`net.${l.name}.utilisation_mean`] = Math.round((b.sum / b.n) * 1e4) / 1e4;
      out[`net.${l.name}.utilisation_max`] = b.max;
    }
    // What moved through each other host's memory (its VMMs' faults, copies and guests), as node<N>.membw_bytes is
    // for the scenario's host.
    for (const [name, k] of this.kernels)
      if (k.membw) for (let n = 0; n < k.nrNodes; n++) out[`hosts.${name}.node${n}.membw_bytes`] = k.membw.bytesOnNode(n);
    for (const f of this.net.flows) out[`net.flow.${f.name}.bytes`] = Math.round(f.bytes);
  }
}

/**
 * The scenario's network, if it has one (`nic`, with `hosts`, `traffic`
 * or `evacuate`): load.ts has checked the names.
 */
export function startNetwork(k: Kernel, s: Scenario, rep: RunReport): ScenarioNetwork | undefined {
  if (!s.nic) return undefined;
  return new ScenarioNetwork(k, s, rep);
}
