/**
 * A network link between two hosts, in virtual time: the migration
 * stream's TCP connection as the source sees it.
 *
 * - `bandwidth`: bytes per second the link carries (line rate after
 *   protocol overhead: the caller states the goodput it wants modelled).
 * - `latency`: one-way delay in ns; a byte written at t arrives at
 *   t + transfer time + latency. Connecting costs one round trip.
 * - `throttle` (optional): a shaper on the link (tc-like) in bytes per
 *   second, below the line rate. QEMU's own `max-bandwidth` is a migration
 *   parameter, applied by the migration (migration.ts) on top of this.
 * - `sndbuf` / `rcvbuf`: the sending and receiving sockets' buffers (default
 *   Linux's net.ipv4.tcp_wmem / tcp_rmem maxima, 4 MiB and 6 MiB): what a
 *   sender can write ahead of the wire, and what the receiver's kernel holds
 *   when its reader falls behind.
 *
 * Deterministic: times are integers (ns), rounded up. Stalls and drops
 * are injected through the migration using the link (MigrationState
 * linkStall/linkDrop), which knows what is in flight.
 */
import { NSEC_PER_SEC } from '../../sim/clock.ts';

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
}

/** Linux's default socket buffer limits (net.ipv4.tcp_wmem / tcp_rmem maximum, bytes). */
export const DEFAULT_SNDBUF = 4 * 2 ** 20;
export const DEFAULT_RCVBUF = 6 * 2 ** 20;

export class Link {
  readonly bandwidth: number;
  readonly latency: number;
  readonly throttle: number | undefined;
  readonly sndbuf: number;
  readonly rcvbuf: number;
  /** Bytes carried so far (all users). */
  bytesCarried = 0;

  constructor(cfg: LinkConfig) {
    if (!(cfg.bandwidth > 0 && Number.isFinite(cfg.bandwidth)))
      throw new RangeError(`link bandwidth ${cfg.bandwidth} must be a positive number of bytes/s`);
    if (!(cfg.latency >= 0 && Number.isFinite(cfg.latency)))
      throw new RangeError(`link latency ${cfg.latency} must be a non-negative number of ns`);
    if (cfg.throttle !== undefined && !(cfg.throttle > 0))
      throw new RangeError(`link throttle ${cfg.throttle} must be a positive number of bytes/s`);
    this.bandwidth = cfg.bandwidth;
    this.latency = cfg.latency;
    this.throttle = cfg.throttle;
    for (const k of ['sndbuf', 'rcvbuf'] as const)
      if (cfg[k] !== undefined && !(cfg[k] >= 0 && Number.isFinite(cfg[k])))
        throw new RangeError(`link ${k} ${cfg[k]} must be a non-negative number of bytes`);
    this.sndbuf = cfg.sndbuf ?? DEFAULT_SNDBUF;
    this.rcvbuf = cfg.rcvbuf ?? DEFAULT_RCVBUF;
  }

  /** Bytes per second available to a sender limited to `cap` bytes/s (0 or undefined: no cap). */
  rate(cap?: number): number {
    let r = this.bandwidth;
    if (this.throttle !== undefined) r = Math.min(r, this.throttle);
    if (cap) r = Math.min(r, cap);
    return r;
  }

  /** ns to push `bytes` onto the link at `rate(cap)` (serialization time, without latency). */
  transferNs(bytes: number, cap?: number): number {
    if (bytes <= 0) return 0;
    return Math.ceil((bytes * NSEC_PER_SEC) / this.rate(cap));
  }

  /** ns from the first byte written to the last byte received: transfer time + latency. */
  deliveryNs(bytes: number, cap?: number): number {
    return this.transferNs(bytes, cap) + this.latency;
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
