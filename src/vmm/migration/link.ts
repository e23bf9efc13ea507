/**
 * The migration stream's connection between two hosts, in virtual time, as
 * the source sees it: a path of the network (src/sim/network.ts) that its
 * channels' flows share with whatever else crosses those links, its latency,
 * and the sockets' buffers.
 *
 * - A dedicated link (`{ bandwidth, latency }`: a `migrate` event without a
 *   destination host, and the tests) is a path of its own, on a network of
 *   its own created when the first channel opens. A path of a shared
 *   network (`{ path, network }`) is what migrations between hosts of a
 *   scenario's `hosts:` use.
 * - `bandwidth`: bytes per second the link carries (line rate after
 *   protocol overhead: the caller states the goodput it wants modelled).
 * - `latency`: one-way delay in ns; a byte written at t arrives at
 *   t + transfer time + latency. Connecting costs one round trip.
 * - `throttle` (optional, dedicated links): a shaper on the link (tc-like)
 *   in bytes per second, below the line rate. QEMU's own `max-bandwidth` is
 *   a migration parameter, applied by the migration (migration.ts).
 * - `sndbuf` / `rcvbuf`: the sending and receiving sockets' buffers (default
 *   Linux's net.ipv4.tcp_wmem / tcp_rmem maxima, 4 MiB and 6 MiB): what a
 *   sender can write ahead of the wire, and what the receiver's kernel holds
 *   when its reader falls behind. The smaller bounds a channel's rate to
 *   window / RTT (network.ts).
 * - Channels (`openFlow`): each TCP connection of the migration (the main
 *   channel, postcopy's preempt channel) is a flow on the path; its rate is
 *   its fair share of the path's links, which a dedicated link gives whole
 *   to a channel alone.
 *
 * Deterministic: times are integers (ns), rounded up. Stalls and drops
 * are injected through the migration using the link (MigrationState
 * linkStall/linkDrop), which knows what is in flight.
 */
import { NSEC_PER_SEC } from '../../sim/clock.ts';
import type { EventQueue } from '../../sim/event_queue.ts';
import { Network, type Flow, type NetPath } from '../../sim/network.ts';

export interface LinkConfig {
  /** Bytes per second. */
  bandwidth: number;
  /** One-way latency in ns. */
  latency: number;
  /** Optional shaper below the line rate, bytes per second. */
  throttle?: number;
  /** Socket send and receive buffers, bytes (defaults: DEFAULT_SNDBUF, DEFAULT_RCVBUF). */
  sndbuf?: number;
  rcvbuf?: number;
  /**
   * The rate is the receiving application's, not the wire's (a destination
   * on the same host whose load thread sets it): what lands in the
   * receiver's socket buffer is acknowledged at once, so a sender may run
   * ahead by its rcvbuf as well as its sndbuf (see aheadRoom).
   */
  receiverLimited?: boolean;
}

/** A path of a shared network, with the sockets' buffers. */
export interface NetworkLinkConfig {
  network: Network;
  path: NetPath;
  sndbuf?: number;
  rcvbuf?: number;
}

/** Linux's default socket buffer limits (net.ipv4.tcp_wmem / tcp_rmem maximum, bytes). */
export const DEFAULT_SNDBUF = 4 * 2 ** 20;
export const DEFAULT_RCVBUF = 6 * 2 ** 20;

export class Link {
  readonly latency: number;
  readonly sndbuf: number;
  readonly rcvbuf: number;
  readonly receiverLimited: boolean;
  /** Bytes carried so far (all users). */
  bytesCarried = 0;
  private net: Network | undefined;
  private pathOf: NetPath | undefined;
  private readonly dedicated: LinkConfig | undefined;

  constructor(cfg: LinkConfig | NetworkLinkConfig) {
    if ('path' in cfg) {
      this.net = cfg.network;
      this.pathOf = cfg.path;
      this.latency = cfg.path.latency;
    } else {
      if (!(cfg.bandwidth > 0 && Number.isFinite(cfg.bandwidth)))
        throw new RangeError(`link bandwidth ${cfg.bandwidth} must be a positive number of bytes/s`);
      if (!(cfg.latency >= 0 && Number.isFinite(cfg.latency)))
        throw new RangeError(`link latency ${cfg.latency} must be a non-negative number of ns`);
      if (cfg.throttle !== undefined && !(cfg.throttle > 0))
        throw new RangeError(`link throttle ${cfg.throttle} must be a positive number of bytes/s`);
      this.dedicated = cfg;
      this.latency = cfg.latency;
    }
    for (const k of ['sndbuf', 'rcvbuf'] as const)
      if (cfg[k] !== undefined && !(cfg[k] >= 0 && Number.isFinite(cfg[k])))
        throw new RangeError(`link ${k} ${cfg[k]} must be a non-negative number of bytes`);
    this.sndbuf = cfg.sndbuf ?? DEFAULT_SNDBUF;
    this.rcvbuf = cfg.rcvbuf ?? DEFAULT_RCVBUF;
    this.receiverLimited = 'receiverLimited' in cfg && cfg.receiverLimited === true;
  }

  /**
   * Bytes a sender's writes may be ahead of what the rate has carried: its
   * socket send buffer; on a receiver-limited link also the receiver's
   * buffer, which on a wire-limited one holds only bytes already across.
   */
  get aheadRoom(): number {
    return this.sndbuf + (this.receiverLimited ? this.rcvbuf : 0);
  }

  /** The network the link is a path of (a dedicated link's own is created here, on `events`). */
  network(events: EventQueue): Network {
    if (!this.net) {
      const d = this.dedicated!;
      this.net = new Network(events);
      this.pathOf = this.net.privatePath('link', d.bandwidth, d.latency, d.throttle);
    }
    return this.net;
  }

  /** The links a channel's bytes cross (undefined for a dedicated link not opened yet). */
  get path(): NetPath | undefined {
    return this.pathOf;
  }

  /** A channel of the migration (one TCP connection): a flow on the path, idle until it sends. */
  openFlow(events: EventQueue, name: string): Flow {
    const net = this.network(events);
    return net.flow(name, this.pathOf!, { window: Math.min(this.sndbuf, this.rcvbuf) });
  }

  /** The path's rate for a sender alone on it: its narrowest link (bytes/s). */
  get bandwidth(): number {
    if (this.dedicated) return Math.min(this.dedicated.bandwidth, this.dedicated.throttle ?? Infinity);
    return Math.min(...this.pathOf!.links.map((l) => l.capacity));
  }

  /** Bytes per second available to a sender alone on the path, limited to `cap` bytes/s (0 or undefined: no cap). */
  rate(cap?: number): number {
    let r = this.bandwidth;
    if (cap) r = Math.min(r, cap);
    return r;
  }

  /** ns to push `bytes` onto the link at `rate` (default: the path's rate alone), without latency. */
  transferNs(bytes: number, rate = this.rate()): number {
    if (bytes <= 0) return 0;
    return Math.ceil((bytes * NSEC_PER_SEC) / rate);
  }

  /** ns from the first byte written to the last byte received: transfer time + latency. */
  deliveryNs(bytes: number, rate = this.rate()): number {
    return this.transferNs(bytes, rate) + this.latency;
  }

  /** A round trip (TCP connect, a request and its answer). */
  get rttNs(): number {
    return 2 * this.latency;
  }

  /** Account bytes carried. */
  carry(bytes: number): void {
    this.bytesCarried += bytes;
  }
}
