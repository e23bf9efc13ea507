/**
 * Tasks as far as memory management cares: a process owns an mm, its
 * threads run on CPUs, and the CPU decides the local node.
 */
import type { MappedFile, MmStruct } from './mm_types.ts';
import type { Mempolicy } from './mempolicy.ts';
import { Cred, SUID_DUMP_USER } from './cred.ts';
import type { SchedTask } from './sched/core.ts';

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
  /** Its sched entity when the kernel has a scheduler (scenario runs); null: it runs on `cpu` alone. */
  se: SchedTask | null = null;
  /**
   * Kernel work queued for the thread (task_work_add: task_numa_work), run
   * in its own context when it next returns to user space: a workload
   * thread's next step starts with it, on its CPU time.
   */
  taskWorkNs = 0;
}

export class Process {
  readonly threads: Thread[] = [];
  /** Credentials (cred.ts): root with every capability, as the executor runs, until `setuid`. */
  readonly cred = new Cred();
  /** get_dumpable(mm): SUID_DUMP_USER, or fs.suid_dumpable after a credential change, or prctl(PR_SET_DUMPABLE). */
  dumpable = SUID_DUMP_USER;
  exited = false;
  /** cpuset.mems of the process's cpuset; null = every node with memory. */
  memsAllowed: number[] | null = null;
  /** The files its descriptors hold open (files_struct), one entry per descriptor: memfds and opened files. */
  readonly files: MappedFile[] = [];
  constructor(
    readonly pid: number,
    readonly name: string,
    readonly mm: MmStruct,
  ) {}
  get mainThread(): Thread {
    return this.threads[0]!;
  }
}
