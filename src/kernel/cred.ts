/**
 * Credentials and the permission checks memory-management syscalls make
 * when one process acts on another: capable(), ptrace_may_access() and
 * setresuid()/setresgid() with the side effects that matter here
 * (capabilities dropped, the mm made non-dumpable).
 *
 * Linux: include/linux/cred.h, kernel/cred.c commit_creds, kernel/sys.c
 * __sys_setresuid/__sys_setresgid and PR_SET_DUMPABLE, kernel/ptrace.c
 * __ptrace_may_access, security/commoncap.c cap_emulate_setxuid and
 * cap_ptrace_access_check.
 *
 * Simplified: real, effective, saved and filesystem ids are always equal
 * (the op-script `setuid` sets all of them), so PTRACE_MODE_REALCREDS and
 * PTRACE_MODE_FSCREDS give the same answer; permitted and effective
 * capability sets are one set; one user namespace; no LSM beyond
 * capabilities (Yama restricts only PTRACE_MODE_ATTACH, which these
 * syscalls never ask for).
 */
import type { Kernel } from './kernel.ts';
import type { Process } from './sched.ts';
import { neg, type SysRet } from './uapi.ts';

/** The capabilities memtwin's checks consult (include/uapi/linux/capability.h). */
export const CAPABILITIES = ['CAP_SETGID', 'CAP_SETUID', 'CAP_IPC_LOCK', 'CAP_SYS_PTRACE', 'CAP_SYS_ADMIN', 'CAP_SYS_NICE'] as const;
export type Capability = (typeof CAPABILITIES)[number];

/** get_dumpable() values (include/linux/sched/coredump.h). */
export const SUID_DUMP_DISABLE = 0;
export const SUID_DUMP_USER = 1;
export const SUID_DUMP_ROOT = 2;

export type PtraceMode = 'READ_REALCREDS' | 'READ_FSCREDS';

/** struct cred, as far as memtwin checks it. A new process is root with every capability, as the executor runs. */
export class Cred {
  uid = 0;
  gid = 0;
  caps = new Set<Capability>(CAPABILITIES);
}

/** capable(cap) for the calling process (init user namespace). */
export function capable(p: Process, cap: Capability): boolean {
  return p.cred.caps.has(cap);
}

/**
 * __ptrace_may_access(task, mode) for `caller` looking at `target`: the
 * same thread group always may; otherwise the caller's uid and gid must
 * equal the target's real, effective and saved ids, or the caller holds
 * CAP_SYS_PTRACE; a target whose mm is not SUID_DUMP_USER needs
 * CAP_SYS_PTRACE too; and cap_ptrace_access_check wants the target's
 * permitted capabilities to be a subset of the caller's (or CAP_SYS_PTRACE).
 */
export function ptraceMayAccess(caller: Process, target: Process, _mode: PtraceMode): boolean {
  if (caller === target) return true;
  const c = caller.cred;
  const t = target.cred;
  const ptraceCap = capable(caller, 'CAP_SYS_PTRACE');
  if (!(c.uid === t.uid && c.gid === t.gid) && !ptraceCap) return false;
  if (target.dumpable !== SUID_DUMP_USER && !ptraceCap) return false;
  if (![...t.caps].every((x) => c.caps.has(x)) && !ptraceCap) return false;
  return true;
}

/**
 * commit_creds() side effect: when the effective (or fs) uid or gid changes,
 * the mm's dumpable flag becomes fs.suid_dumpable.
 */
function credsChanged(k: Kernel, p: Process): void {
  p.dumpable = k.sysctl.suid_dumpable;
}

/**
 * setresgid(gid, gid, gid): without CAP_SETGID a process may only switch to
 * one of its current gids (-EPERM otherwise).
 */
export function sysSetresgid(k: Kernel, p: Process, gid: number): SysRet {
  if (!Number.isInteger(gid) || gid < 0 || gid > 0xfffffffe) return neg('EINVAL');
  if (gid === p.cred.gid) return 0;
  if (!capable(p, 'CAP_SETGID')) return neg('EPERM');
  p.cred.gid = gid;
  credsChanged(k, p);
  return 0;
}

/**
 * setresuid(uid, uid, uid): without CAP_SETUID only to the current uid
 * (-EPERM). Leaving uid 0 for a non-zero uid in all three ids clears every
 * capability (cap_emulate_setxuid; no SECBIT_KEEP_CAPS here).
 */
export function sysSetresuid(k: Kernel, p: Process, uid: number): SysRet {
  if (!Number.isInteger(uid) || uid < 0 || uid > 0xfffffffe) return neg('EINVAL');
  if (uid === p.cred.uid) return 0;
  if (!capable(p, 'CAP_SETUID')) return neg('EPERM');
  const wasRoot = p.cred.uid === 0;
  p.cred.uid = uid;
  if (wasRoot && uid !== 0) p.cred.caps.clear();
  credsChanged(k, p);
  return 0;
}

/** prctl(PR_SET_DUMPABLE, value): 0 (SUID_DUMP_DISABLE) or 1 (SUID_DUMP_USER), else -EINVAL. */
export function sysSetDumpable(p: Process, value: number): SysRet {
  if (value !== SUID_DUMP_DISABLE && value !== SUID_DUMP_USER) return neg('EINVAL');
  p.dumpable = value;
  return 0;
}
