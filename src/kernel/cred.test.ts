import { describe, expect, it } from 'vitest';
import { smallKernel, RW, ANON } from '../testing/fixtures.ts';
import { PAGE_SIZE, MPOL, MADV } from './uapi.ts';
import { followPage } from './memory.ts';
import { ptraceMayAccess, sysSetDumpable, sysSetresgid, sysSetresuid, capable } from './cred.ts';
import { setCpusetMems, sysMigratePages } from './mempolicy.ts';
import { sysMovePages } from './migrate.ts';

const EPERM = -1;
const EINVAL = -22;
const EACCES = -13;

describe('credentials and permission checks on another process', () => {
  it('drops every capability when root becomes another uid, and makes the mm non-dumpable', () => {
    const k = smallKernel();
    const p = k.createProcess('u');
    expect(capable(p, 'CAP_SYS_NICE')).toBe(true);
    expect(sysSetresgid(k, p, 1000)).toBe(0);
    expect(sysSetresuid(k, p, 1000)).toBe(0);
    expect(capable(p, 'CAP_SYS_NICE')).toBe(false);
    expect(p.dumpable).toBe(0);
    expect(sysSetresuid(k, p, 0)).toBe(EPERM);
    expect(sysSetresgid(k, p, 0)).toBe(EPERM);
    expect(sysSetresuid(k, p, 1000)).toBe(0);
    expect(sysSetDumpable(p, 2)).toBe(EINVAL);
  });

  it('implements ptrace_may_access: ids, dumpable, CAP_SYS_PTRACE, capability subset', () => {
    const k = smallKernel();
    const root = k.createProcess('root');
    const mk = (uid: number, gid: number, dumpable: number) => {
      const p = k.createProcess(`p${uid}.${gid}`);
      sysSetresgid(k, p, gid);
      sysSetresuid(k, p, uid);
      sysSetDumpable(p, dumpable);
      return p;
    };
    const a = mk(1000, 1000, 1);
    const same = mk(1000, 1000, 1);
    const nodump = mk(1000, 1000, 0);
    const gid = mk(1000, 1001, 1);
    expect(ptraceMayAccess(a, a, 'READ_REALCREDS')).toBe(true);
    expect(ptraceMayAccess(a, same, 'READ_REALCREDS')).toBe(true);
    expect(ptraceMayAccess(a, nodump, 'READ_REALCREDS')).toBe(false);
    expect(ptraceMayAccess(a, gid, 'READ_REALCREDS')).toBe(false);
    expect(ptraceMayAccess(a, root, 'READ_FSCREDS')).toBe(false);
    expect(ptraceMayAccess(root, nodump, 'READ_FSCREDS')).toBe(true);
    // Same uid but the target kept a capability the caller lacks (cap_ptrace_access_check).
    const capped = k.createProcess('capped');
    capped.cred.uid = 1000;
    capped.cred.gid = 1000;
    capped.cred.caps = new Set(['CAP_SYS_NICE']);
    expect(ptraceMayAccess(a, capped, 'READ_REALCREDS')).toBe(false);
  });

  it('lets an unprivileged process migrate its own pages within its cpuset, not outside it', () => {
    const k = smallKernel({ nodes: 2 });
    const p = k.createProcess('u');
    const va = k.mmap(p, 0, 8 * PAGE_SIZE, RW, ANON);
    k.access(p.mainThread, va, 8 * PAGE_SIZE, PAGE_SIZE, true, 1);
    const nodeOf = (x: number): number => k.phys.nodeOfPfn(followPage(p.mm, x));
    expect(nodeOf(va)).toBe(0);
    sysSetresuid(k, p, 1000);
    expect(sysMigratePages(k, p, p, [0], [1])).toBe(0);
    expect(nodeOf(va)).toBe(1);
    expect(sysMovePages(k, p, p, [va], [0], MPOL.MPOL_MF_MOVE).ret).toBe(0);
    expect(nodeOf(va)).toBe(0);
    expect(sysMovePages(k, p, p, [va], [1], MPOL.MPOL_MF_MOVE_ALL).ret).toBe(EPERM);
    expect(setCpusetMems(k, p, [1])).toBe(0);
    expect(sysMigratePages(k, p, p, [1], [0])).toBe(EPERM); // node 0 is outside its cpuset: needs CAP_SYS_NICE
    const root = k.createProcess('root');
    expect(sysMigratePages(k, root, p, [1], [0])).toBe(0); // root may, and root's cpuset allows node 0
    expect(nodeOf(va + PAGE_SIZE)).toBe(0);
  });

  it('process_madvise: EACCES from mm_access, EPERM without CAP_SYS_NICE, none needed on itself', () => {
    const k = smallKernel();
    const root = k.createProcess('root');
    const u = k.createProcess('u');
    const va = k.mmap(u, 0, 4 * PAGE_SIZE, RW, ANON);
    sysSetresuid(k, u, 1000);
    const rva = k.mmap(root, 0, 4 * PAGE_SIZE, RW, ANON);
    expect(k.processMadvise(u, root, [[rva, PAGE_SIZE]], MADV.MADV_COLD, 0)).toBe(EACCES);
    expect(k.processMadvise(u, u, [[va, PAGE_SIZE]], MADV.MADV_DONTNEED, 0)).toBe(PAGE_SIZE);
    expect(k.processMadvise(root, u, [[va, PAGE_SIZE]], MADV.MADV_COLD, 0)).toBe(PAGE_SIZE);
    const v = k.createProcess('v');
    sysSetresuid(k, v, 1000);
    sysSetDumpable(u, 1);
    expect(k.processMadvise(v, u, [[va, PAGE_SIZE]], MADV.MADV_COLD, 0)).toBe(EPERM);
    expect(k.processMadvise(v, u, [[va, PAGE_SIZE]], MADV.MADV_DONTNEED, 0)).toBe(EINVAL);
  });
});
