/**
 * Memory bandwidth as a shared resource, and the latency it costs.
 *
 * The hardware: per node a DRAM capacity C (bytes/s of DRAM traffic), per
 * directed pair of nodes (i, j) an interconnect capacity for the traffic of
 * CPUs of node i to memory of node j, and per CPU what one core can drive
 * (its idle limit: Little's law, misses in flight x 64 B / latency, so one
 * core cannot use a whole node; those limits are the workload engine's
 * access costs, see membwParams). Everything that moves bytes registers them
 * here as a *flow*: the workload engine once per thread step, the kernel's
 * copies and clears (migration, compaction, collapse, zeroing at faults,
 * UFFDIO_COPY) and the migration stream's reads as they are charged.
 *
 * The answer is a latency multiplier per resource, m(u) at utilisation u:
 *
 *     m(u) = 1 + A u                                  u <= U_K
 *     m(u) = 1 + A u + W (u - U_K)^2 / (1 - u)        U_K < u < 1
 *
 * with A = 0.5, U_K = 0.85, W = 0.24: continuous with a continuous slope,
 * 1 at idle, nearly linear to 85% and then a wall at u = 1. The shape is the
 * published loaded-latency curves' (research memo 17, 4.1-4.2): Intel MLC
 * --loaded_latency on a Xeon Silver 4110 (latency/idle 1.15 at u = 0.32,
 * 1.21 at 0.50, 1.51 at 0.97; https://community.intel.com/t5/Software-Tuning-Performance/Intel-Memory-Latency-Checker-v3-5-test/m-p/1126268)
 * and on a 2-node machine (1.11 at 0.27, 1.23 at 0.52, 1.56 at 0.84, 3.58
 * at 0.997: the wall); the rule of thumb in Gregory Price's
 * weighted-interleave cover letter (flat, then linear to about 80%, then
 * steep). m(u) here gives 1.16, 1.25, 1.59 (curve 1) and 1.14, 1.26, 1.42,
 * 3.59 (curve 2). Past the knee, latency grows as Little's law says it must
 * when a fixed number of misses in flight meets a bandwidth that stops
 * growing: oversubscribed demand is throttled to capacity (ten-fold demand
 * runs at 99.9% of C, with latency ~10x idle).
 *
 * What a resource's u is: each window of WINDOW_NS of absolute virtual time,
 * the model finds the multipliers at which the flows present in that window
 * would be in equilibrium: u_r = (bytes/s the flows would move through r at
 * multipliers m) / C_r, and m_r = m(u_r) for every resource r at once (a
 * flow that crosses two resources, a remote access through its memory node
 * and the interconnect, waits for both: its multiplier is 1 + sum of the
 * excesses m_r - 1). A flow that ran E ns with a memory-bound part S (its
 * idle time on DRAM) and the rest T (compute, caches, kernel overhead) would
 * take T + S x m at multiplier m. Solving for the equilibrium instead of
 * feeding the measured utilisation back (the simple loop, u measured in one
 * window sets m for the next) matters: with a wall this steep that loop
 * oscillates unless damped to a gain below about 2 / (1 + u m'/m), under
 * 0.01 at ten-fold oversubscription, which then takes hundreds of windows
 * to settle. The equilibrium of each window is smoothed with an EWMA
 * (weight LAMBDA) so that a window that happened to hold more step starts
 * does not jerk the threads, and it applies from the next window on (the
 * flows of a window are known once virtual time has passed it).
 *
 * Deterministic: the same flows give the same multipliers (no randomness,
 * fixed iteration counts and order). Bytes are counted exactly (integers)
 * per resource; the multiplier applies to time, which the callers round to
 * whole ns when they charge it.
 */
import type { CostProfile } from './cost_profile.ts';
import type { Host } from './host.ts';

/** Window of the utilisation, aligned to absolute virtual time: the workload quantum. */
export const WINDOW_NS = 100_000;
/** EWMA weight of a window's equilibrium. */
export const LAMBDA = 0.5;

/**
 * How far a registration may start from the last flow's end and still
 * continue it (flow()'s `extend`, flowSeries): half a ns, the rounding of
 * its start to whole ns.
 */
const CONTIGUOUS_NS = 0.5;

/**
 * The same for a registration that repeats the last one (the same time,
 * bytes and DRAM time per class: a task copying page after page at one
 * cost). Registrations start at whole ns (the caller rounds its task's
 * fractional clock) while a flow's end sums the unrounded times, so such
 * a task starts each page up to 1 ns (two roundings of half a ns) from
 * where the last one ended: within 1 ns it is the same flow. (At half a ns
 * the copies broke into a new flow every few pages: a postcopy
 * destination's UFFDIO_COPY of 1 M pages made about 1 M flows.) A
 * registration at another rate keeps the half ns, so that copies of
 * different speeds are not averaged by the rounding of a clock.
 */
const REPEAT_CONTIGUOUS_NS = 1;

/** Slope of the linear part, knee and wall of m(u) (see the top of the file). */
export const CURVE = { A: 0.5, U_K: 0.85, W: 0.24 } as const;
/** Utilisations are solved below this (m(U_MAX) is about 3000). */
const U_MAX = 1 - 1e-5;

/** The loaded-latency multiplier at utilisation u (>= 0): see the top of the file. */
export function latencyMultiplier(u: number): number {
  const { A, U_K, W } = CURVE;
  if (u <= U_K) return 1 + A * Math.max(0, u);
  const x = Math.min(u, U_MAX);
  return 1 + A * x + (W * (x - U_K) ** 2) / (1 - x);
}

/**
 * The multiplier m = m(u) at which a resource whose flows give it
 * utilisation util(m) at multiplier m is in equilibrium: u = util(m(u)).
 * util decreases with m, so g(u) = util(m(u)) - u decreases: regula falsi
 * with the Illinois modification on [0, U_MAX] (superlinear, and the
 * bracket always holds the root). 1 when nothing flows; m(U_MAX) when the
 * flows cannot be slowed below capacity.
 */
function solveUtilisation(util: (m: number) => number): number {
  // g(u) = util(m(u)) - u, written out (no closure per call: a window solves several).
  let lo = 0;
  let hi = U_MAX;
  let glo = util(latencyMultiplier(lo)) - lo;
  if (glo <= 0) return 1;
  let ghi = util(latencyMultiplier(hi)) - hi;
  if (ghi >= 0) return latencyMultiplier(hi);
  let side = 0;
  let u = lo;
  for (let i = 0; i < 100 && hi - lo > 1e-10; i++) {
    u = (lo * ghi - hi * glo) / (ghi - glo);
    if (!(u > lo && u < hi)) u = (lo + hi) / 2;
    const gu = util(latencyMultiplier(u)) - u;
    if (gu === 0 || Math.abs(gu) < 1e-10) break;
    if (gu > 0) {
      lo = u;
      glo = gu;
      if (side === 1) ghi /= 2;
      side = 1;
    } else {
      hi = u;
      ghi = gu;
      if (side === -1) glo /= 2;
      side = -1;
    }
  }
  return latencyMultiplier(u);
}

/** A flow's bytes and idle DRAM time on one class (CPU node -> memory node). */
export interface FlowClass {
  /** Memory node. */
  node: number;
  bytes: number;
  /** Idle time bound on DRAM (scales with the multiplier). */
  memNs: number;
  /** That time as it ran, at the multiplier the caller applied; default memNs x the current multiplier. */
  seenNs?: number;
}

interface Flow {
  at: number;
  end: number;
  cpu: number;
  /** Still in the list of flows to solve (a flow that can be extended, see flow()'s `extend`). */
  live: boolean;
  /** Classes (the arrays below may hold stale entries past them: a flow is reused without shrinking them). */
  nc: number;
  /** Per class: the resources it crosses (node, and the path if remote), bytes, idle DRAM time, that time as it ran. */
  res: number[];
  bytes: number[];
  memNs: number[];
  seenNs: number[];
  /** Offsets into res per class (res[cls[i]..cls[i+1]) are class i's resources; cls[nc] is where they end). */
  cls: number[];
}

export interface MemBwSpec {
  /** DRAM capacity per node, bytes/s of traffic. */
  nodes: number[];
  /** interconnect[i][j]: bytes/s of the path for CPUs of node i to memory of node j (i != j; the diagonal is unused). */
  interconnect: number[][];
  /** Bytes of DRAM traffic per byte stored (MemBwParams.storeTraffic); default 2. */
  storeTraffic?: number;
}

export class MemBandwidth {
  readonly nrNodes: number;
  /** Bytes of DRAM traffic per byte a store writes (see MemBwParams.storeTraffic). */
  readonly storeTraffic: number;
  /** Capacity per resource, bytes/ns: nodes 0..n-1, then the path i->j at n + i*n + j. */
  private readonly cap: Float64Array;
  /** Smoothed multiplier per resource. */
  private readonly mult: Float64Array;
  /** Equilibrium of the last solved window, per resource (warm start). */
  private readonly solved: Float64Array;
  /** Bytes counted per resource (exact). */
  private readonly counted: Float64Array;
  /** First window not solved yet. */
  private next = 0;
  private readonly flows: Flow[] = [];
  /** Flows in `flows` (written by index and not shrunk, so that its backing store is not made again each window). */
  private nflows = 0;
  /** Flows no window needs any more, for flow() to reuse. */
  private readonly spare: Flow[] = [];
  /** Utilisation of the last solved window per resource (what the threads of that window drove). */
  private readonly lastUtil: Float64Array;
  /** The last flow registered, which an `extend` registration may continue. */
  private last: Flow | undefined;
  /** Scratch of solveWindow (reused: a window is solved every 100 µs of virtual time). */
  private readonly present: Flow[] = [];
  private readonly weight: number[] = [];
  /** Flows in `present` and `weight` (written by index and not shrunk: entries past it are stale). */
  private np = 0;
  private readonly seen: Uint8Array;
  /** One-resource flows of a window, per flow: resource, K = bytes x weight x actual, B = time not scaling, S = idle DRAM time. */
  private simple = { n: 0, r: new Int32Array(64), k: new Float64Array(64), b: new Float64Array(64), s: new Float64Array(64) };

  constructor(readonly spec: MemBwSpec) {
    const n = (this.nrNodes = spec.nodes.length);
    this.storeTraffic = spec.storeTraffic ?? TRAFFIC.write;
    const nr = n + n * n;
    this.cap = new Float64Array(nr);
    spec.nodes.forEach((c, i) => (this.cap[i] = c / 1e9));
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) if (i !== j) this.cap[n + i * n + j] = spec.interconnect[i]![j]! / 1e9;
    this.mult = new Float64Array(nr).fill(1);
    this.solved = new Float64Array(nr).fill(1);
    this.counted = new Float64Array(nr);
    this.lastUtil = new Float64Array(nr);
    this.seen = new Uint8Array(nr);
  }

  /** Resource index of the path for CPUs of node `cpu` to memory of node `mem`. */
  path(cpu: number, mem: number): number {
    return this.nrNodes + cpu * this.nrNodes + mem;
  }

  /**
   * The multiplier of an access by a CPU of node `cpu` to memory of node
   * `mem` at virtual time `at`: the node's, plus the interconnect's excess
   * when remote.
   */
  multiplier(cpu: number, mem: number, at: number): number {
    this.advance(at);
    return this.current(cpu, mem);
  }

  /** multiplier() as of the last window solved (no solving: for registrations). */
  private current(cpu: number, mem: number): number {
    const m = this.mult[mem]!;
    return cpu === mem || cpu < 0 ? m : m + this.mult[this.path(cpu, mem)]! - 1;
  }

  /** The smoothed multiplier of node `node` (r < nrNodes) or of a path (see path()) now. */
  resourceMultiplier(r: number, at: number): number {
    this.advance(at);
    return this.mult[r]!;
  }

  /**
   * Register a flow: from `at`, for `elapsedNs` (> 0), a task on a CPU of
   * node `cpu` (-1: the copy runs beside its memory, no interconnect) moved
   * the classes' bytes, spending their memNs on DRAM at idle, which took
   * seenNs as it ran (by default memNs x the multiplier now: the caller
   * read it just before); the rest of elapsedNs does not depend on the
   * load. `at` must not lie in a window already solved (a window is solved
   * when a query's time has passed it: query at the clock's time, register
   * at or after it).
   * With `extend`, a registration that starts where the last one ended
   * (within CONTIGUOUS_NS, or REPEAT_CONTIGUOUS_NS when it repeats it), from the same CPU node on the same memory
   * nodes, continues it (a task copying page after page: one flow, not one
   * per page).
   */
  flow(at: number, elapsedNs: number, cpu: number, classes: readonly FlowClass[], extend = false): void {
    let live = 0;
    for (const c of classes) if (c.bytes > 0 || c.memNs > 0) live++;
    if (!live) return;
    const repeat = this.repeats(elapsedNs, cpu, classes);
    if (!repeat) this.noteSegment(elapsedNs, cpu, classes);
    if (extend && this.extend(at, elapsedNs, cpu, classes, live, repeat)) return;
    // A flow solved for the last time is reused (a workload registers one per step: tens of thousands a run).
    // Its arrays are written in place, by index, and not shrunk (nc and cls[nc] say where they end).
    const f: Flow = this.spare.pop() ?? { at: 0, end: 0, cpu: 0, live: true, nc: 0, res: [], bytes: [], memNs: [], seenNs: [], cls: [] };
    f.at = at;
    f.end = at + Math.max(1, elapsedNs);
    f.cpu = cpu;
    f.live = true;
    let nc = 0;
    let nres = 0;
    for (const c of classes) {
      if (c.bytes <= 0 && c.memNs <= 0) continue;
      f.cls[nc] = nres;
      f.res[nres++] = c.node;
      this.counted[c.node]! += c.bytes;
      if (cpu >= 0 && cpu !== c.node) {
        const p = this.path(cpu, c.node);
        f.res[nres++] = p;
        this.counted[p]! += c.bytes;
      }
      f.bytes[nc] = c.bytes;
      f.memNs[nc] = c.memNs;
      f.seenNs[nc] = c.seenNs ?? c.memNs * this.current(cpu, c.node);
      nc++;
    }
    f.cls[nc] = nres;
    f.nc = nc;
    this.flows[this.nflows++] = f;
    this.last = f;
  }

  /**
   * `n` registrations of the same classes, each `elapsedNs` long, the i-th
   * at base + round(t0 + i x elapsedNs) (the sum taken one term at a time,
   * as a task's clock adds each charge), each with `extend`: exactly what n
   * flow(..., true) calls would register, with the checks of a continuation
   * made once where they cannot change (same CPU node, same classes: only
   * contiguity is checked per registration). A task copying n pages one by
   * one (Kernel.chargeMemRun). Returns t0 + n x elapsedNs summed the same way.
   */
  flowSeries(n: number, base: number, t0: number, elapsedNs: number, cpu: number, classes: readonly FlowClass[]): number {
    let t = t0;
    if (n <= 0) return t;
    this.flow(base + Math.round(t), elapsedNs, cpu, classes, true);
    t += elapsedNs;
    const f = this.last;
    // Nothing registered (no bytes, no DRAM time), or the classes are not one flow's: one call each.
    if (!f || !f.live || f.nc > 2) {
      for (let i = 1; i < n; i++, t += elapsedNs) this.flow(base + Math.round(t), elapsedNs, cpu, classes, true);
      return t;
    }
    // The live classes in f's order (flow() and extend() skip the others), at most two.
    let c0: FlowClass | undefined;
    let c1: FlowClass | undefined;
    for (const c of classes) {
      if (c.bytes <= 0 && c.memNs <= 0) continue;
      if (!c0) c0 = c;
      else c1 = c;
    }
    const s0 = c0!.seenNs ?? c0!.memNs * this.current(cpu, c0!.node);
    const s1 = c1 ? (c1.seenNs ?? c1.memNs * this.current(cpu, c1.node)) : 0;
    const step = Math.max(1, elapsedNs);
    // The continuation's sums in locals, added in the same order as extend() adds them (so bit for bit the same),
    // written back once; the pages continued are counted, and their bytes added per resource at the end (whole
    // numbers: exact in any order).
    const b0 = c0!.bytes;
    const m0 = c0!.memNs;
    const b1 = c1 ? c1.bytes : 0;
    const m1 = c1 ? c1.memNs : 0;
    let fb0 = f.bytes[0]!;
    let fm0 = f.memNs[0]!;
    let fs0 = f.seenNs[0]!;
    let fb1 = c1 ? f.bytes[1]! : 0;
    let fm1 = c1 ? f.memNs[1]! : 0;
    let fs1 = c1 ? f.seenNs[1]! : 0;
    let end = f.end;
    let i = 1;
    for (; i < n; i++, t += elapsedNs) {
      const at = base + Math.round(t);
      if (Math.abs(end - at) > REPEAT_CONTIGUOUS_NS) break; // each page repeats the first (noted by flow())
      fb0 += b0;
      fm0 += m0;
      fs0 += s0;
      if (c1) {
        fb1 += b1;
        fm1 += m1;
        fs1 += s1;
      }
      end += step;
    }
    const more = i - 1;
    f.bytes[0] = fb0;
    f.memNs[0] = fm0;
    f.seenNs[0] = fs0;
    if (c1) {
      f.bytes[1] = fb1;
      f.memNs[1] = fm1;
      f.seenNs[1] = fs1;
    }
    f.end = end;
    if (Number.isSafeInteger(more * b0) && Number.isSafeInteger(more * b1)) {
      for (let k = f.cls[0]!; k < f.cls[1]!; k++) this.counted[f.res[k]!]! += more * b0;
      if (c1) for (let k = f.cls[1]!; k < f.cls[2]!; k++) this.counted[f.res[k]!]! += more * b1;
    } else
      for (let j = 0; j < more; j++) {
        for (let k = f.cls[0]!; k < f.cls[1]!; k++) this.counted[f.res[k]!]! += b0;
        if (c1) for (let k = f.cls[1]!; k < f.cls[2]!; k++) this.counted[f.res[k]!]! += b1;
      }
    // Not contiguous (the rounding of a fractional clock): a flow of its own, as flow() would make; the rest of
    // the series continues that one.
    for (; i < n; i++, t += elapsedNs) this.flow(base + Math.round(t), elapsedNs, cpu, classes, true);
    return t;
  }

  /**
   * The last registration's time, CPU node and live classes (node, bytes, DRAM time, that time as it ran), for
   * repeats(): flow() notes each registration that is not a repeat.
   */
  private readonly seg = { ns: NaN, cpu: 0, n: 0, v: [] as number[] };

  /** Whether a registration of `elapsedNs` on `classes` from CPU node `cpu` repeats the last one exactly. */
  private repeats(elapsedNs: number, cpu: number, classes: readonly FlowClass[]): boolean {
    const seg = this.seg;
    if (elapsedNs !== seg.ns || cpu !== seg.cpu) return false;
    const v = seg.v;
    let i = 0;
    for (const c of classes) {
      if (c.bytes <= 0 && c.memNs <= 0) continue;
      if (i >= seg.n) return false;
      const seen = c.seenNs ?? c.memNs * this.current(cpu, c.node);
      if (v[4 * i] !== c.node || v[4 * i + 1] !== c.bytes || v[4 * i + 2] !== c.memNs || v[4 * i + 3] !== seen) return false;
      i++;
    }
    return i === seg.n;
  }

  /** Note a registration for repeats(). */
  private noteSegment(elapsedNs: number, cpu: number, classes: readonly FlowClass[]): void {
    const seg = this.seg;
    seg.ns = elapsedNs;
    seg.cpu = cpu;
    let i = 0;
    for (const c of classes) {
      if (c.bytes <= 0 && c.memNs <= 0) continue;
      seg.v[4 * i] = c.node;
      seg.v[4 * i + 1] = c.bytes;
      seg.v[4 * i + 2] = c.memNs;
      seg.v[4 * i + 3] = c.seenNs ?? c.memNs * this.current(cpu, c.node);
      i++;
    }
    seg.n = i;
  }

  /**
   * Continue the last flow if it is still to be solved, contiguous (within REPEAT_CONTIGUOUS_NS for a
   * `repeat` of the last registration), and on the same classes.
   */
  private extend(at: number, elapsedNs: number, cpu: number, classes: readonly FlowClass[], live: number, repeat: boolean): boolean {
    const f = this.last;
    const gap = repeat ? REPEAT_CONTIGUOUS_NS : CONTIGUOUS_NS;
    if (!f || !f.live || f.cpu !== cpu || Math.abs(f.end - at) > gap || f.nc !== live) return false;
    let i = 0;
    for (const c of classes) {
      if (c.bytes <= 0 && c.memNs <= 0) continue;
      if (f.res[f.cls[i]!] !== c.node) return false;
      i++;
    }
    i = 0;
    for (const c of classes) {
      if (c.bytes <= 0 && c.memNs <= 0) continue;
      f.bytes[i]! += c.bytes;
      f.memNs[i]! += c.memNs;
      f.seenNs[i]! += c.seenNs ?? c.memNs * this.current(cpu, c.node);
      for (let k = f.cls[i]!; k < f.cls[i + 1]!; k++) this.counted[f.res[k]!]! += c.bytes;
      i++;
    }
    f.end += Math.max(1, elapsedNs);
    return true;
  }

  /** Bytes registered on node `node` so far (exact). */
  bytesOnNode(node: number): number {
    return this.counted[node]!;
  }

  /** Bytes registered on the path for CPUs of node `cpu` to memory of node `mem`. */
  bytesOnPath(cpu: number, mem: number): number {
    return this.counted[this.path(cpu, mem)]!;
  }

  /** Capacity of node `node`, bytes/s. */
  nodeCapacity(node: number): number {
    return this.cap[node]! * 1e9;
  }

  /** Capacity of the path, bytes/s (0 on the diagonal). */
  pathCapacity(cpu: number, mem: number): number {
    return cpu === mem ? 0 : this.cap[this.path(cpu, mem)]! * 1e9;
  }

  /** Utilisation of resource r at the equilibrium of the last window solved (>= 0). */
  utilisation(r: number, at: number): number {
    this.advance(at);
    return this.lastUtil[r]!;
  }

  /**
   * Solve every window that ended by `at` (its flows are all known: a flow
   * starts no later than the event that registers it).
   */
  private advance(at: number): void {
    const upTo = Math.floor(at / WINDOW_NS); // windows < upTo are complete
    while (this.next < upTo) {
      if (!this.nflows) {
        // Idle from here: the multipliers decay towards 1 without a flow to solve.
        const k = upTo - this.next;
        const keep = (1 - LAMBDA) ** k;
        for (let r = 0; r < this.mult.length; r++) {
          this.mult[r] = 1 + (this.mult[r]! - 1) * keep;
          this.solved[r] = 1;
          this.lastUtil[r] = 0;
        }
        this.next = upTo;
        return;
      }
      this.solveWindow(this.next);
      this.next++;
    }
  }

  /** Flows present in window w, with their weight (overlap / W), and the ones that end in it dropped afterwards. */
  private solveWindow(w: number): void {
    const ws = w * WINDOW_NS;
    const we = ws + WINDOW_NS;
    const present = this.present;
    const weight = this.weight;
    let np = 0;
    const flows = this.flows;
    let kept = 0;
    for (let i = 0; i < this.nflows; i++) {
      const f = flows[i]!;
      const o = Math.min(f.end, we) - Math.max(f.at, ws);
      if (o > 0) {
        present[np] = f;
        weight[np++] = o / WINDOW_NS / (f.end - f.at); // share of the flow's bytes in this window, per ns of window
      }
      if (f.end > we) flows[kept++] = f;
      else {
        // Solved for the last time in this window: flow() may reuse it once this solve is over.
        f.live = false;
        this.spare.push(f);
      }
    }
    this.nflows = kept;
    const nr = this.mult.length;
    const m = this.solved; // warm start from the last window
    this.np = np;
    if (!np) {
      for (let r = 0; r < nr; r++) {
        m[r] = 1;
        this.lastUtil[r] = 0;
        this.mult[r] = this.mult[r]! + LAMBDA * (1 - this.mult[r]!);
      }
      return;
    }
    // Resources the window's flows cross (`seen`; solved in ascending order below); whether any flow crosses
    // two (then they depend on each other).
    const seen = this.seen;
    seen.fill(0);
    let coupled = false;
    // Whether a flow crosses two different resources (a copy between nodes, a remote access): only then does one
    // resource's multiplier depend on another's. A flow with several classes on one node (a copy within it) is
    // solved by the general solve below, but in one sweep.
    let linked = false;
    for (let i = 0; i < np; i++) {
      const f = present[i]!;
      const nres = f.cls[f.nc]!;
      if (nres > 1) coupled = true;
      const r0 = f.res[0]!;
      for (let k = 0; k < nres; k++) {
        const r = f.res[k]!;
        seen[r] = 1;
        if (r !== r0) linked = true;
      }
    }
    for (let r = 0; r < nr; r++) if (!seen[r]) m[r] = 1;
    if (!coupled) {
      this.solveSimple(m);
      return;
    }
    // Gauss-Seidel over resources: each one's multiplier solved with the others fixed. Unlinked, each resource's
    // solve reads no other resource's multiplier (rate(r) sums only flows on r alone, and solveResource sets m[r]
    // itself), so a second sweep would give the same values bit for bit and stop: one sweep is that answer.
    const sweeps = linked ? 12 : 1;
    for (let sweep = 0; sweep < sweeps; sweep++) {
      let delta = 0;
      for (let r = 0; r < nr; r++) {
        if (!seen[r]) continue;
        const before = m[r]!;
        m[r] = this.solveResource(r, m);
        delta = Math.max(delta, Math.abs(m[r]! - before));
      }
      if (delta < 1e-9) break;
    }
    for (let r = 0; r < nr; r++) {
      this.lastUtil[r] = seen[r] ? this.rate(r, present, weight, m) / this.cap[r]! : 0;
      this.mult[r] = this.mult[r]! + LAMBDA * (m[r]! - this.mult[r]!);
    }
  }

  /**
   * A window whose flows each cross one resource: resources are independent,
   * and a flow's rate at multiplier m is K / (B + S m) (K its bytes in the
   * window x its actual time, B the time that does not scale, S its idle
   * DRAM time). The same equilibrium as the general solve, computed cheaply.
   */
  private solveSimple(m: Float64Array): void {
    const present = this.present;
    const np = this.np;
    if (this.simple.r.length < np) {
      const len = 2 * np;
      this.simple = { n: 0, r: new Int32Array(len), k: new Float64Array(len), b: new Float64Array(len), s: new Float64Array(len) };
    }
    const sp = this.simple;
    sp.n = np;
    for (let i = 0; i < np; i++) {
      const f = present[i]!;
      const actual = f.end - f.at;
      sp.r[i] = f.res[0]!;
      sp.k[i] = f.bytes[0]! * this.weight[i]! * actual;
      sp.b[i] = actual - f.seenNs[0]!;
      sp.s[i] = f.memNs[0]!;
    }
    for (let r = 0; r < this.mult.length; r++) {
      if (!this.seen[r]) continue;
      const cap = this.cap[r]!;
      this.utilR = r;
      m[r] = cap > 0 ? solveUtilisation(this.simpleUtil) : 1;
    }
    for (let r = 0; r < this.mult.length; r++) {
      this.lastUtil[r] = this.seen[r] && this.cap[r]! > 0 ? this.simpleRate(r, m[r]!) / this.cap[r]! : 0;
      this.mult[r] = this.mult[r]! + LAMBDA * (m[r]! - this.mult[r]!);
    }
  }

  /** Bytes/ns the one-resource flows of the window (solveSimple's `simple`) move through resource r at multiplier mr. */
  private simpleRate(r: number, mr: number): number {
    const sp = this.simple;
    let sum = 0;
    for (let i = 0; i < sp.n; i++) if (sp.r[i] === r) sum += sp.k[i]! / Math.max(sp.b[i]! + sp.s[i]! * mr, 1e-3); // a flow never takes no time
    return sum;
  }

  /** The resource solveSimple or solveResource is solving, and the multipliers solveResource solves it among. */
  private utilR = 0;
  private utilM: Float64Array | null = null;
  /** Its utilisation at multiplier mr, for solveUtilisation: made once, not per resource per window. */
  private readonly simpleUtil = (mr: number): number => this.simpleRate(this.utilR, mr) / this.cap[this.utilR]!;
  private readonly resourceUtil = (mr: number): number => {
    const m = this.utilM!;
    m[this.utilR] = mr;
    return this.rate(this.utilR, this.present, this.weight, m) / this.cap[this.utilR]!;
  };

  /** Bytes/ns the window's flows would move through resource r at multipliers m. */
  private rate(r: number, present: Flow[], weight: number[], m: Float64Array): number {
    let sum = 0;
    for (let i = 0; i < this.np; i++) {
      const f = present[i]!;
      const actual = f.end - f.at;
      let through = 0;
      let atM = actual; // the flow's time at multipliers m: its DRAM time rescaled, the rest as it was
      const nc = f.nc;
      for (let c = 0; c < nc; c++) {
        let excess = 0;
        let crosses = false;
        for (let k = f.cls[c]!; k < f.cls[c + 1]!; k++) {
          const x = f.res[k]!;
          excess += m[x]! - 1;
          if (x === r) crosses = true;
        }
        if (crosses) through += f.bytes[c]!;
        atM += f.memNs[c]! * (1 + excess) - f.seenNs[c]!;
      }
      if (!through) continue;
      // The flow's bytes were moved over its actual elapsed time; at multipliers m it would take atM
      // instead. Its bytes per ns of window at m: (bytes in the window) x (actual / atM).
      sum += (through * weight[i]! * actual) / Math.max(atM, 1e-3); // a flow never takes no time
    }
    return sum;
  }

  /** m_r solving m_r = m(u_r(m)) with the other resources' multipliers fixed: bisection on u. */
  private solveResource(r: number, m: Float64Array): number {
    const cap = this.cap[r]!;
    if (!(cap > 0)) return 1;
    const saved = m[r]!;
    this.utilR = r;
    this.utilM = m;
    const x = solveUtilisation(this.resourceUtil);
    m[r] = saved;
    return x;
  }
}

/**
 * What the model reads from a cost profile, and what it derives (all
 * bytes/s unless said otherwise):
 *
 * - read/write/copy bandwidth with 1 and N threads (`membw_{read,write,copy}_{1,N}t`,
 *   STREAM's byte counting; N = the calibration host's CPUs).
 * - node capacity C, in DRAM traffic: a read moves its bytes, a store
 *   moves its line twice (the read for ownership and the write-back), so
 *   copy traffic is 1.5 x STREAM's copy bytes and write traffic 2 x the
 *   bytes written. C is what makes this file's curve give the measured read
 *   bandwidths: B_N m(B_N/C) = N B_1 m(B_1/C) (one core's idle limit is
 *   the same in both). When N threads read N times what one does (no
 *   sign of a shared limit), C cannot be told from these measurements, and
 *   is taken as B_1 / ONE_CORE_SHARE (a published share).
 * - the DRAM traffic of a store (storeTraffic): a line read for ownership
 *   and written back (2 bytes per byte stored, the textbook count), or
 *   written without being read first (1), as some CPUs do for streams of
 *   whole lines. With C fitted, it is the value in [1, 2] at which the
 *   N-thread copy gives the measured copy bandwidths as the reads do
 *   (copy traffic per STREAM byte (1 + storeTraffic) / 2); on this
 *   machine 2 threads copy 35.3 GB/s and read 35.3 GB/s, so a store moves
 *   its line once. Without a fitted C, 2.
 * - per-core idle limits b0 = B_1 m(traffic_1/C): what one core drives on
 *   an idle node (a single thread already loads the node a little). The
 *   engine charges a sequential read of s bytes s/b0_read and a sequential
 *   store s x (2/b0_copy - 1/b0_read): a copy of a line is a load plus a
 *   store, so copies run at the measured copy bandwidth.
 * - the LLC size (`llc_bytes`): a working set of W bytes reaches DRAM on a
 *   share 1 - LLC/W of its accesses (uniform over W), and only that share
 *   moves bytes or waits for a loaded node.
 * - the interconnect: `membw_interconnect_share` x C (a published figure,
 *   `derived` in the profile) unless the host file gives it.
 */
export interface MemBwParams {
  /** Node capacity, bytes/s of traffic. */
  nodeCapacity: number;
  /** How C was obtained (for reports). */
  nodeCapacitySource: string;
  /** Per-core idle limits, bytes/s (STREAM bytes). */
  coreRead: number;
  coreWrite: number;
  coreCopy: number;
  llcBytes: number;
  interconnectShare: number;
  /** Bytes of DRAM traffic per byte stored: 1 to 2 (see above). */
  storeTraffic: number;
}

/**
 * One core's share of a node's bandwidth when it cannot be measured: 15%,
 * from the 2-node MLC figures in research memo 17 4.2 (12.2 GB/s from one
 * core against 79.7 GB/s from the node).
 */
export const ONE_CORE_SHARE = 0.15;

/** Traffic per STREAM byte: a read moves its bytes; a write moves its line twice; a copy is half of each. */
export const TRAFFIC = { read: 1, write: 2, copy: 1.5 } as const;

/**
 * Node capacity from one- and N-thread bandwidths (STREAM bytes) of a kind
 * with `traffic` bytes of DRAM traffic per STREAM byte: the C at which
 * B_N m(t B_N / C) = N B_1 m(t B_1 / C), or undefined when the N threads
 * show no shared limit.
 */
export function fitNodeCapacity(b1: number, bn: number, n: number, traffic = 1): number | undefined {
  if (n < 2 || !(bn > b1) || bn >= n * b1 * (1 - 1e-9)) return undefined;
  const h = (x: number): number => bn * latencyMultiplier(traffic * bn * x) - n * b1 * latencyMultiplier(traffic * b1 * x);
  let lo = 0;
  let hi = U_MAX / (traffic * bn);
  if (h(hi) <= 0) return (traffic * bn) / U_MAX;
  for (let i = 0; i < 80; i++) {
    const mid = (lo + hi) / 2;
    if (h(mid) < 0) lo = mid;
    else hi = mid;
  }
  return 1 / ((lo + hi) / 2);
}

/** The largest N with a `membw_read_<N>t` entry in the profile. */
function maxThreads(costs: CostProfile): number {
  let n = 0;
  for (const name of Object.keys(costs.data.costs)) {
    const m = /^membw_read_(\d+)t$/.exec(name);
    if (m) n = Math.max(n, Number(m[1]));
  }
  return n;
}

/** See MemBwParams. Throws naming the missing entry when the profile has no bandwidth measurements. */
export function membwParams(costs: CostProfile): MemBwParams {
  const why = 'the memory bandwidth model needs it (memtwin calibrate --only membw)';
  const bw = (kind: string, t: number): number => costs.nsOf(`membw_${kind}_${t}t`, why);
  const n = maxThreads(costs);
  if (!n) costs.nsOf('membw_read_1t', why);
  const r1 = bw('read', 1);
  const fitted = fitNodeCapacity(r1, bw('read', n), n, TRAFFIC.read);
  const nodeCapacity = fitted ?? r1 / ONE_CORE_SHARE;
  const c1 = bw('copy', 1);
  const storeTraffic = fitted ? fitStoreTraffic(c1, bw('copy', n), n, nodeCapacity) : TRAFFIC.write;
  const core = (b1: number, traffic: number): number => b1 * latencyMultiplier((traffic * b1) / nodeCapacity);
  return {
    nodeCapacity,
    nodeCapacitySource: fitted
      ? `fitted to membw_read_1t and membw_read_${n}t`
      : `membw_read_1t / ${ONE_CORE_SHARE} (${n} threads read ${n}x what one does: no shared limit measurable here)`,
    coreRead: core(r1, TRAFFIC.read),
    coreWrite: core(bw('write', 1), storeTraffic),
    coreCopy: core(c1, (1 + storeTraffic) / 2),
    llcBytes: costs.nsOf('llc_bytes', why),
    interconnectShare: costs.nsOf('membw_interconnect_share', why),
    storeTraffic,
  };
}

/**
 * The store traffic (1 to 2 bytes per byte stored, to 0.01) at which N
 * threads copying at b1 each alone would copy bn together on a node of
 * capacity c: the copy's traffic per STREAM byte t = (1 + s) / 2 solves
 * bn m(t bn / c) = n b1 m(t b1 / c), as fitNodeCapacity's reads do; the
 * nearer end of [1, 2] when no s in it does.
 */
export function fitStoreTraffic(b1: number, bn: number, n: number, c: number): number {
  const h = (s: number): number => {
    const t = (1 + s) / 2;
    return bn * latencyMultiplier((t * bn) / c) - n * b1 * latencyMultiplier((t * b1) / c);
  };
  if (h(1) >= 0) return 1;
  if (h(2) <= 0) return 2;
  let lo = 1;
  let hi = 2;
  for (let i = 0; i < 40; i++) {
    const mid = (lo + hi) / 2;
    if (h(mid) < 0) lo = mid;
    else hi = mid;
  }
  return Math.round(((lo + hi) / 2) * 100) / 100;
}

/**
 * The bandwidth of a host: its nodes' `bandwidth` and `interconnect` where
 * the host file gives them, else the profile's (a node's capacity C;
 * CPUs of node i reaching memory of node j through an interconnect of
 * membw_interconnect_share x C_j).
 */
export function membwSpec(host: Host, p: MemBwParams): MemBwSpec {
  const storeTraffic = p.storeTraffic;
  const nodes = host.nodes.map((n) => n.bandwidth ?? p.nodeCapacity);
  const interconnect = host.nodes.map((_, i) =>
    host.nodes.map((__, j) => (i === j ? 0 : (host.interconnect?.[i]?.[j] ?? p.interconnectShare * nodes[j]!))),
  );
  return { nodes, interconnect, storeTraffic };
}
