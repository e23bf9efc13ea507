/**
 * What a backend executes: an op whose addresses are already raw numbers
 * in the backend's own address space, and the raw result it returns.
 */
import type { Op } from './ops.ts';

export interface ResolvedOp extends Op {
  /** Handle number for mmap (the native protocol's h=). */
  h?: number;
  /** Process index (0 = the script's first process, then spawn order). */
  proc: number;
  /** Thread index in that process (0 = main thread). */
  thr: number;
  /** For ops with a target process: its index. */
  targetProc?: number;
  /** For join: the index of the thread joined. */
  joinThr?: number;
  /** For userfaultfd ops: the index of the userfaultfd (in creation order over the script). */
  fd?: number;
  /** memfd handle index (memfd: the new one; mmap with fd: the one mapped). */
  mfd?: number;
  /** For cgroup ops: the index of the memory cgroup (in creation order over the script). */
  cg?: number;
}

export type RawResult = Record<string, unknown> & {
  ret?: number | string;
  errno?: string;
  signal?: string;
  at?: number;
  /** The op's process was killed (OOM) before the op: it did not run. */
  killed?: string;
  unsupported?: string;
  invalid?: string;
};

export interface Backend {
  readonly name: 'sim' | 'linux' | 'guest';
  exec(op: ResolvedOp): Promise<RawResult>;
  close(): Promise<void>;
}
