/**
 * Tasks as far as memory management cares: a process owns an mm, its
 * threads run on CPUs, and the CPU decides the local node.
 */
import type { MmStruct } from './mm_types.ts';
import type { Mempolicy } from './mempolicy.ts';

export class Thread {
  constructor(
    readonly tid: number,
    readonly process: Process,
    /** CPU the thread runs on (sched_setaffinity to one CPU). */
    public cpu: number,
  ) {}
  /** The task memory policy (set_mempolicy); null = default (local). */
  mempolicy: Mempolicy | null = null;
  /** Last node used by task interleaving (current->il_prev). */
  ilPrev = -1;
}

export class Process {
  readonly threads: Thread[] = [];
  /** CAP_SYS_NICE, CAP_SYS_ADMIN, CAP_IPC_LOCK ...: the executor runs as root. */
  readonly privileged = true;
  exited = false;
  /** cpuset.mems of the process's cpuset; null = every node with memory. */
  memsAllowed: number[] | null = null;
  constructor(
    readonly pid: number,
    readonly name: string,
    readonly mm: MmStruct,
  ) {}
  get mainThread(): Thread {
    return this.threads[0]!;
  }
}
