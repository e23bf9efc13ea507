/**
 * Network links that flows share, in virtual time: hosts with NICs, the
 * path between two hosts, and each flow's share of every link on its path.
 *
 * - Links: each host's NIC is two links, `HOST.tx` and `HOST.rx` (full
 *   duplex: what a host sends does not take from what it receives), each of
 *   the NIC's bandwidth. An optional fabric (the switch between the hosts,
 *   when it is oversubscribed) is one more link every path crosses. A path
 *   from A to B is [A.tx, fabric, B.rx]; its one-way latency is the two
 *   NICs' latencies and the fabric's. A private link (`privatePath`: a migration's own
 *   wire, as `migrate` events without a destination host have) is a path of
 *   its own, with that wire's latency.
 * - Bandwidths are goodput: the bytes/s TCP payload can use (a 10 Gbit/s NIC
 *   with 1500-byte frames carries about 9.4 Gbit/s of payload; the caller
 *   states which it models). No SimGrid-style bandwidth factor (LV08's 0.97)
 *   is applied on top.
 * - Flows: a flow crosses the links of its path and, optionally, extra
 *   links of its own (a per-migration rate limiter its channels share). It
 *   is active while it has bytes to send; its rate is its max-min fair share
 *   (progressive filling: every active flow's rate rises together until a
 *   link on its path is full or it reaches its own bound; flows held by a
 *   full link are fixed, the others go on), as long-lived TCP flows with
 *   similar round-trip times roughly share a bottleneck. Equal weights: on a
 *   LAN every path has about the same RTT, so SimGrid's RTT-weighted shares
 *   (LV08 weight-S) would change nothing. A flow's own bound is the least of
 *   its cap (an application rate, or QEMU's rate limit) and its TCP window
 *   over the round trip, window / (2 x latency), the bound SimGrid applies
 *   as TCP-gamma / (2 x latency) (window 4 MiB: Linux's tcp_wmem maximum,
 *   SimGrid's default gamma); on a LAN it is far above any NIC. Not
 *   modelled: slow start (LV08's 13.01 x latency; it does not matter for
 *   multi-GiB transfers) and ACK cross-traffic on the reverse path.
 * - Shares are recomputed whenever a flow starts, stops or changes its
 *   cap; each flow's listeners hear of a new rate at once, so a sender can
 *   re-plan what it has on the wire (Transfer does that for one transfer).
 * - Bytes carried are integrated over time (rate x time), per flow and per
 *   link: the utilisation series and per-flow rates come from them.
 *
 * Deterministic: flows and links are kept in creation order, and shares
 * are computed in that order; times handed to the event queue are whole ns.
 */
import type { EventHandle, EventQueue } from './event_queue.ts';
import { NSEC_PER_SEC } from './clock.ts';

/** A NIC (or any link): bytes per second each way, one-way latency in ns. */
export interface NicConfig {
  bandwidth: number;
  latency: number;
}

/** Linux's default TCP send buffer maximum (net.ipv4.tcp_wmem), the window a flow keeps in flight at most. */
export const DEFAULT_TCP_WINDOW = 4 * 2 ** 20;

export class NetLink {
  /** Bytes carried so far (integrated up to the network's last update). */
  bytes = 0;
  /** Sum of the rates of the flows crossing it now. */
  load = 0;
  constructor(
    readonly name: string,
    /** Bytes per second. */
    readonly capacity: number,
    /** One-way latency in ns. */
    readonly latency: number,
  ) {
    if (!(capacity > 0 && Number.isFinite(capacity)))
      throw new RangeError(`link ${name}: bandwidth ${capacity} must be a positive number of bytes/s`);
    if (!(latency >= 0 && Number.isFinite(latency)))
      throw new RangeError(`link ${name}: latency ${latency} must be a non-negative number of ns`);
  }
}

/** The links a flow's bytes cross between two ends, and their one-way latency. */
export interface NetPath {
  from: string;
  to: string;
  links: readonly NetLink[];
  /** One-way latency, ns. */
  latency: number;
}

export interface FlowOptions {
  /** Bytes per second the sender never exceeds (an application rate, a rate limit); default none. */
  cap?: number;
  /** The TCP window (bytes) that bounds the rate to window / RTT; default DEFAULT_TCP_WINDOW; 0: no bound. */
  window?: number;
  /** Links of its own it crosses besides the path's (e.g. a limiter several flows share). */
  extra?: readonly NetLink[];
}

/** Told a flow's new rate and its previous one. */
export type RateListener = (flow: Flow, previous: number) => void;

export class Flow {
  /** Whether it has bytes to send (only active flows take a share). */
  active = false;
  /** Its share now, bytes/s (0 while idle). */
  rate = 0;
  /** Bytes carried so far (integrated up to the network's last update). */
  bytes = 0;
  /** Closed: it takes no share any more and cannot start again. */
  closed = false;
  readonly links: NetLink[];
  private capBps: number;
  private readonly windowBound: number;
  private readonly listeners: RateListener[] = [];

  constructor(
    readonly net: Network,
    readonly name: string,
    readonly path: NetPath,
    opts: FlowOptions,
  ) {
    this.links = [...path.links, ...(opts.extra ?? [])];
    this.capBps = checkCap(name, opts.cap);
    const window = opts.window ?? DEFAULT_TCP_WINDOW;
    this.windowBound = window > 0 && path.latency > 0 ? (window * NSEC_PER_SEC) / (2 * path.latency) : Infinity;
  }

  /** The most this flow may get whatever the links: min(cap, window / RTT). */
  get bound(): number {
    return Math.min(this.capBps, this.windowBound);
  }

  get cap(): number {
    return this.capBps;
  }

  /** It has bytes to send from now on. */
  start(): void {
    if (this.closed) throw new Error(`memtwin internal error: flow ${this.name} is closed`);
    if (this.active) return;
    this.active = true;
    this.net.changed();
  }

  /** It has nothing to send from now on. */
  stop(): void {
    if (!this.active) return;
    this.active = false;
    this.net.changed();
  }

  /** A new cap (bytes/s; Infinity or undefined: none). */
  setCap(cap: number | undefined): void {
    const c = checkCap(this.name, cap);
    if (c === this.capBps) return;
    this.capBps = c;
    if (this.active) this.net.changed();
  }

  /** Called with the flow and its previous rate whenever its rate changes. */
  onRate(l: RateListener): void {
    this.listeners.push(l);
  }

  /** No longer called. */
  offRate(l: RateListener): void {
    const i = this.listeners.indexOf(l);
    if (i >= 0) this.listeners.splice(i, 1);
  }

  /** Stop and leave the network (its bytes stay counted). */
  close(): void {
    this.stop();
    this.closed = true;
  }

  /** The network's notification (internal). */
  notify(previous: number): void {
    for (const l of this.listeners) l(this, previous);
  }
}

function checkCap(name: string, cap: number | undefined): number {
  if (cap === undefined || cap === Infinity) return Infinity;
  if (!(cap > 0 && Number.isFinite(cap))) throw new RangeError(`flow ${name}: cap ${cap} must be a positive number of bytes/s`);
  return cap;
}

/** A host's NIC as two links (each of the NIC's bandwidth and latency). */
export interface NetHost {
  name: string;
  tx: NetLink;
  rx: NetLink;
  /** One-way latency the NIC adds, ns. */
  latency: number;
}

/**
 * Max-min fair shares by progressive filling: every unfixed flow's rate
 * rises together; a link whose remaining capacity divided among its unfixed
 * flows is the smallest (or a flow's own bound, if smaller) fixes those
 * flows at that level; repeat. Returns each flow's rate, in `flows` order.
 * Pure: exported for the property tests.
 */
export function maxMinShares(flows: readonly { links: readonly NetLink[]; bound: number }[]): number[] {
  const rate = new Array<number>(flows.length).fill(0);
  const fixed = new Array<boolean>(flows.length).fill(false);
  const residual = new Map<NetLink, number>();
  const unfixedOn = new Map<NetLink, number>();
  for (const f of flows)
    for (const l of f.links) {
      residual.set(l, l.capacity);
      unfixedOn.set(l, (unfixedOn.get(l) ?? 0) + 1);
    }
  const levelOf = (l: NetLink): number => Math.max(0, residual.get(l)!) / unfixedOn.get(l)!;
  let left = flows.length;
  while (left > 0) {
    let level = Infinity;
    for (const [l, n] of unfixedOn) if (n > 0) level = Math.min(level, levelOf(l));
    flows.forEach((f, i) => {
      if (!fixed[i]) level = Math.min(level, f.bound);
    });
    // Fix every flow held at this level: by its own bound, or by a link now full.
    const now: number[] = [];
    flows.forEach((f, i) => {
      if (fixed[i]) return;
      if (f.bound <= level || f.links.some((l) => unfixedOn.get(l)! > 0 && levelOf(l) <= level)) now.push(i);
    });
    for (const i of now) {
      fixed[i] = true;
      rate[i] = level;
      for (const l of flows[i]!.links) {
        residual.set(l, residual.get(l)! - level);
        unfixedOn.set(l, unfixedOn.get(l)! - 1);
      }
    }
    if (!now.length) throw new Error('memtwin internal error: max-min fair share made no progress');
    left -= now.length;
  }
  return rate;
}

export class Network {
  readonly links: NetLink[] = [];
  readonly flows: Flow[] = [];
  private readonly hosts = new Map<string, NetHost>();
  private fabric: NetLink | undefined;
  /** Virtual time up to which bytes are integrated. */
  private lastUpdate = 0;
  private solving = false;
  private again = false;

  constructor(readonly events: EventQueue) {
    this.lastUpdate = events.clock.now();
  }

  /** A host with a NIC of `nic.bandwidth` each way. */
  addHost(name: string, nic: NicConfig): NetHost {
    if (this.hosts.has(name)) throw new Error(`memtwin internal error: host ${name} is already on the network`);
    const h: NetHost = {
      name,
      tx: this.addLink(`${name}.tx`, nic.bandwidth, nic.latency),
      rx: this.addLink(`${name}.rx`, nic.bandwidth, nic.latency),
      latency: nic.latency,
    };
    this.hosts.set(name, h);
    return h;
  }

  /** The switch between hosts, if it is a bottleneck: one link every path between two hosts crosses. */
  setFabric(cfg: NicConfig): void {
    this.fabric = this.addLink('fabric', cfg.bandwidth, cfg.latency);
  }

  host(name: string): NetHost | undefined {
    return this.hosts.get(name);
  }

  addLink(name: string, bandwidth: number, latency: number): NetLink {
    const l = new NetLink(name, bandwidth, latency);
    this.links.push(l);
    return l;
  }

  /**
   * The path from host `from` to host `to`: out of from's NIC, across the
   * fabric if there is one, into to's NIC. Its one-way latency is the two
   * NICs' and the fabric's.
   */
  path(from: string, to: string): NetPath {
    const a = this.hosts.get(from);
    const b = this.hosts.get(to);
    if (!a || !b) throw new Error(`memtwin internal error: no host ${!a ? from : to} on the network`);
    if (a === b) throw new Error(`memtwin internal error: a path from ${from} to itself does not cross the network`);
    const links = [a.tx, ...(this.fabric ? [this.fabric] : []), b.rx];
    return { from, to, links, latency: a.latency + (this.fabric?.latency ?? 0) + b.latency };
  }

  /** A path over links of its own (a dedicated wire, and a shaper below it if `throttle` is given). */
  privatePath(name: string, bandwidth: number, latency: number, throttle?: number): NetPath {
    const links = [this.addLink(name, bandwidth, latency)];
    if (throttle !== undefined) links.push(this.addLink(`${name}.throttle`, throttle, 0));
    return { from: name, to: name, links, latency };
  }

  /** A flow over `path`, idle until it starts. */
  flow(name: string, path: NetPath, opts: FlowOptions = {}): Flow {
    const f = new Flow(this, name, path, opts);
    this.flows.push(f);
    return f;
  }

  /**
   * The rate `flow` would get if it started now (others unchanged), without
   * starting it: for a short message that is not worth a flow of its own.
   */
  rateIfActive(flow: Flow): number {
    const act = this.flows.filter((f) => f.active || f === flow);
    return maxMinShares(act)[act.indexOf(flow)]!;
  }

  /** Integrate bytes up to now (the sampler calls it before reading counters). */
  settle(): void {
    const now = this.events.clock.now();
    const dt = now - this.lastUpdate;
    if (dt <= 0) return;
    for (const f of this.flows) if (f.rate > 0) f.bytes += (f.rate * dt) / NSEC_PER_SEC;
    for (const l of this.links) if (l.load > 0) l.bytes += (l.load * dt) / NSEC_PER_SEC;
    this.lastUpdate = now;
  }

  /** A flow started, stopped or changed its cap: new shares now, and listeners told. */
  changed(): void {
    if (this.solving) {
      // A listener changed a flow while hearing of a new rate: solve again once it is done.
      this.again = true;
      return;
    }
    this.settle();
    this.solving = true;
    try {
      do {
        this.again = false;
        this.solve();
      } while (this.again);
    } finally {
      this.solving = false;
    }
  }

  private solve(): void {
    const act = this.flows.filter((f) => f.active);
    const rates = maxMinShares(act);
    const before = this.flows.map((f) => f.rate);
    for (const f of this.flows) f.rate = 0;
    act.forEach((f, i) => (f.rate = rates[i]!));
    for (const l of this.links) l.load = 0;
    for (const f of act) for (const l of f.links) l.load += f.rate;
    this.flows.forEach((f, i) => {
      if (f.rate !== before[i]) f.notify(before[i]!);
    });
  }
}

/**
 * One transfer of `bytes` on a flow, starting at `start` (whole ns, now or
 * later): when its first `mark` bytes have left, at the flow's rate as it
 * changes. Until the rate changes, at(mark) is start + ceil(mark / rate),
 * the time a link of that rate takes; on a change, the bytes sent so far
 * are kept and the rest goes at the new rate, and `replan` is called so the
 * sender can move the events it planned from at(). One transfer at a time
 * per flow (the flow's rate is all its own).
 */
export class Transfer {
  private sent = 0;
  private segStart: number;
  private segRate: number;
  private done = false;
  private readonly listener: RateListener;

  constructor(
    readonly flow: Flow,
    readonly bytes: number,
    start: number,
    private readonly replan: () => void,
  ) {
    if (!flow.active) throw new Error(`memtwin internal error: a transfer on idle flow ${flow.name}`);
    this.segStart = start;
    this.segRate = flow.rate;
    this.listener = () => this.rateChanged();
    flow.onRate(this.listener);
  }

  /**
   * When the first `mark` bytes have left (whole ns; Infinity while the flow
   * gets nothing, or when it is beyond what virtual time can reach: 2^53 ns,
   * 104 days).
   */
  at(mark: number): number {
    if (mark <= this.sent) return this.segStart;
    if (!(this.segRate > 0)) return Infinity;
    const t = this.segStart + Math.ceil(((mark - this.sent) * NSEC_PER_SEC) / this.segRate);
    return Number.isSafeInteger(t) ? t : Infinity;
  }

  /** The transfer is over (or abandoned): rate changes no longer concern it. */
  finish(): void {
    if (this.done) return;
    this.done = true;
    this.flow.offRate(this.listener);
  }

  private rateChanged(): void {
    if (this.done) return;
    const now = this.flow.net.events.clock.now();
    if (this.at(this.bytes) <= now) return; // all on the wire already: nothing to move
    if (now > this.segStart) this.sent = Math.min(this.bytes, this.sent + ((now - this.segStart) * this.segRate) / NSEC_PER_SEC);
    this.segStart = Math.max(now, this.segStart);
    this.segRate = this.flow.rate;
    this.replan();
  }
}

/** Schedule `run` at `at` and keep the handle, so that a re-plan can move it (cancel and schedule again). */
export class MovableEvent {
  private ev: EventHandle | null = null;
  constructor(
    private readonly events: EventQueue,
    readonly name: string,
    private readonly run: () => void,
  ) {}

  /** (Re)schedule at `at` (whole ns; Infinity: not until re-planned). */
  set(at: number): void {
    this.ev?.cancel();
    this.ev = null;
    if (at === Infinity) return;
    this.ev = this.events.schedule(at, this.name, () => {
      this.ev = null;
      this.run();
    });
  }

  get pending(): boolean {
    return this.ev !== null;
  }

  get at(): number | undefined {
    return this.ev?.at;
  }

  cancel(): void {
    this.ev?.cancel();
    this.ev = null;
  }
}
