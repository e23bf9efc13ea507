/**
 * What one memory access costs, in virtual time: a documented model whose
 * every parameter comes from the cost profile (native/calibrate.c).
 *
 * Random dependent load to a page of size S, working set W bytes of which a
 * fraction f_S is mapped at size S, page on a node at SLIT distance d from
 * the CPU:
 *
 *     latency = D(W) * d/10 + T_S(W * f_S)
 *
 * - D(W), the data latency, is the measured THP curve `access_random_2m_ws*`
 *   (pointer chase, one line per page) interpolated in log2 W. It includes
 *   cache effects and what page walks cost with 2M pages.
 * - T_4K(x) = access_random_4k_ws(x) - access_random_2m_ws(x): the measured
 *   extra cost of 4K pages, i.e. the TLB-reach term. Below the smallest
 *   measured set it scales with the miss ratio 1 - reach/x, where reach =
 *   tlb_entries_4k * 4K; above the largest it stays at the largest value.
 * - T_2M and T_1G are 0: their reach (tlb_entries_2m * 2M, 6 GiB on the
 *   calibration host) exceeds the largest working set the calibrator maps,
 *   so their misses are already inside D.
 * - Remote accesses scale the data part by the SLIT ratio d/10: SLIT
 *   distances are relative memory latencies by definition (ACPI).
 *
 * Sequential access with stride s: dram_access_seq_per_4k * s/4K * d/10,
 * plus one page walk per page crossed (walk = T_4K at 4 GiB divided by its
 * miss ratio there), for 4K pages only.
 *
 * With a memory bandwidth model (scenario runs, src/sim/membw.ts), the data
 * part waits for the load of the page's node (and of the interconnect when
 * remote) on the share of accesses that reach DRAM (missRatio below):
 *
 *     latency = data * (1 - p) + data * p * m + TLB/walk terms
 *
 * where m is the node's loaded-latency multiplier, and a sequential access
 * of s bytes (s = min(stride, 4K)) costs s/b0_read for a load and
 * s x (2/b0_copy - 1/b0_read) for a store, b0 being one core's idle
 * bandwidths (membwParams): a copy, a load and a store per element, runs
 * at the measured copy bandwidth and a read stream at the read bandwidth.
 */
import type { CostProfile } from '../sim/cost_profile.ts';
import type { MemBwParams } from '../sim/membw.ts';
import { PAGE_SIZE } from '../kernel/uapi.ts';

const WS = ['16M', '64M', '256M', '1G', '4G'] as const;
const WS_BYTES = [16, 64, 256, 1024, 4096].map((m) => m * 2 ** 20);

export class AccessModel {
  private readonly logW: number[];
  private readonly d2m: number[];
  private readonly t4k: number[];
  readonly reach4k: number;
  readonly reach2m: number;
  readonly walk4k: number;
  readonly seqPer4k: number;
  /** With a bandwidth model: ns per byte of a sequential load and store (one core, idle node), and the LLC size. */
  readonly readNsPerByte: number = 0;
  readonly writeNsPerByte: number = 0;
  readonly llcBytes: number = 0;

  constructor(costs: CostProfile, bw?: MemBwParams) {
    this.logW = WS_BYTES.map((b) => Math.log2(b));
    this.d2m = WS.map((w) => costs.nsOf(`access_random_2m_ws${w}`));
    const c4k = WS.map((w) => costs.nsOf(`access_random_4k_ws${w}`));
    this.t4k = c4k.map((v, i) => Math.max(0, v - this.d2m[i]!));
    this.reach4k = costs.nsOf('tlb_entries_4k') * PAGE_SIZE;
    this.reach2m = costs.nsOf('tlb_entries_2m') * 2 ** 21;
    const last = WS_BYTES.length - 1;
    this.walk4k = this.t4k[last]! / this.missRatio(WS_BYTES[last]!, this.reach4k);
    this.seqPer4k = costs.nsOf('dram_access_seq_per_4k');
    if (bw) {
      this.readNsPerByte = 1e9 / bw.coreRead;
      this.writeNsPerByte = Math.max(0, 2e9 / bw.coreCopy - this.readNsPerByte);
      this.llcBytes = bw.llcBytes;
    }
  }

  /**
   * The share of a stream's accesses that reach DRAM: a random stream over
   * W bytes hits the LLC with probability LLC/W; a sequential sweep misses
   * on every line once W exceeds the LLC (it evicts what it will need next)
   * and on none when it fits. The LLC is taken as the thread's alone.
   */
  dramShare(ws: number, random: boolean): number {
    if (ws <= this.llcBytes) return 0;
    return random ? 1 - this.llcBytes / ws : 1;
  }

  /** The page-walk term of a sequential access with `stride` (4K pages only). */
  seqWalkNs(pageSize: number, stride: number): number {
    return pageSize === PAGE_SIZE ? this.walk4k * Math.min(1, stride / PAGE_SIZE) : 0;
  }

  private missRatio(ws: number, reach: number): number {
    return ws <= reach ? 0 : 1 - reach / ws;
  }

  private interp(ys: number[], w: number): number {
    const x = Math.log2(Math.max(1, w));
    const xs = this.logW;
    if (x <= xs[0]!) return ys[0]!;
    for (let i = 1; i < xs.length; i++)
      if (x <= xs[i]!) return ys[i - 1]! + ((ys[i]! - ys[i - 1]!) * (x - xs[i - 1]!)) / (xs[i]! - xs[i - 1]!);
    return ys[ys.length - 1]!;
  }

  /** D(W): data latency of a random load with a working set of `ws` bytes. */
  dataNs(ws: number): number {
    return this.interp(this.d2m, ws);
  }

  /** T_4K(x): the extra cost of a 4K-mapped page when x bytes of the working set are 4K-mapped. */
  tlb4kNs(x: number): number {
    // The engine asks this for every access, mostly with the same x (a steady mix of page sizes): keep the last answer.
    if (x === this.lastTlbX) return this.lastTlbNs;
    let ns: number;
    if (x <= WS_BYTES[0]!) {
      const m0 = this.missRatio(WS_BYTES[0]!, this.reach4k);
      ns = m0 > 0 ? (this.t4k[0]! * this.missRatio(x, this.reach4k)) / m0 : 0;
    } else ns = this.interp(this.t4k, x);
    this.lastTlbX = x;
    this.lastTlbNs = ns;
    return ns;
  }
  private lastTlbX = NaN;
  private lastTlbNs = 0;

  /** A random load: see the formula at the top of this file. */
  randomNs(pageSize: number, ws: number, frac: number, distance: number): number {
    const data = this.dataNs(ws) * (distance / 10);
    return pageSize === PAGE_SIZE ? data + this.tlb4kNs(ws * frac) : data;
  }

  /** A sequential access with `stride` bytes between accesses. */
  sequentialNs(pageSize: number, stride: number, distance: number): number {
    const data = ((this.seqPer4k * Math.min(stride, PAGE_SIZE)) / PAGE_SIZE) * (distance / 10);
    return pageSize === PAGE_SIZE ? data + this.walk4k * Math.min(1, stride / PAGE_SIZE) : data;
  }
}
