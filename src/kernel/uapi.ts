/**
 * Constants as the x86-64 uapi headers spell them (asm-generic/mman-common.h,
 * asm/mman.h, linux/mempolicy.h, asm-generic/errno-base.h, ...). Op-scripts
 * name flags by these names; the numeric values are the ones the real
 * kernel takes, so the native executor can pass them straight through.
 */

export const PAGE_SHIFT = 12;
export const PAGE_SIZE = 4096;
export const PMD_SHIFT = 21;
export const PMD_SIZE = 2 * 1024 * 1024;
export const PUD_SHIFT = 30;
export const PUD_SIZE = 1024 * 1024 * 1024;
export const HPAGE_PMD_NR = PMD_SIZE / PAGE_SIZE; // 512
export const HPAGE_PMD_ORDER = 9;
export const PUD_ORDER = 18;
export const MAX_PAGE_ORDER = 10; // x86-64: orders 0..10 (4 MiB blocks)
export const TASK_SIZE = 0x7ffffffff000; // 47-bit user address space
export const MMAP_MIN_ADDR = 0x10000; // vm.mmap_min_addr default (65536)

export const PROT = {
  PROT_NONE: 0x0,
  PROT_READ: 0x1,
  PROT_WRITE: 0x2,
  PROT_EXEC: 0x4,
  PROT_SEM: 0x8,
  PROT_GROWSDOWN: 0x01000000,
  PROT_GROWSUP: 0x02000000,
} as const;

export const MAP_HUGE_SHIFT = 26;
export const MAP_HUGE_MASK = 0x3f;

export const MAP = {
  MAP_SHARED: 0x01,
  MAP_PRIVATE: 0x02,
  MAP_SHARED_VALIDATE: 0x03,
  MAP_FIXED: 0x10,
  MAP_ANONYMOUS: 0x20,
  MAP_ANON: 0x20,
  MAP_32BIT: 0x40,
  MAP_GROWSDOWN: 0x0100,
  MAP_DENYWRITE: 0x0800,
  MAP_EXECUTABLE: 0x1000,
  MAP_LOCKED: 0x2000,
  MAP_NORESERVE: 0x4000,
  MAP_POPULATE: 0x8000,
  MAP_NONBLOCK: 0x10000,
  MAP_STACK: 0x20000,
  MAP_HUGETLB: 0x40000,
  MAP_SYNC: 0x80000,
  MAP_FIXED_NOREPLACE: 0x100000,
  MAP_UNINITIALIZED: 0x4000000,
  MAP_HUGE_2MB: 21 << MAP_HUGE_SHIFT,
  MAP_HUGE_1GB: 30 << MAP_HUGE_SHIFT,
} as const;

export const MAP_TYPE = 0x0f;

export const MADV = {
  MADV_NORMAL: 0,
  MADV_RANDOM: 1,
  MADV_SEQUENTIAL: 2,
  MADV_WILLNEED: 3,
  MADV_DONTNEED: 4,
  MADV_FREE: 8,
  MADV_REMOVE: 9,
  MADV_DONTFORK: 10,
  MADV_DOFORK: 11,
  MADV_MERGEABLE: 12,
  MADV_UNMERGEABLE: 13,
  MADV_HUGEPAGE: 14,
  MADV_NOHUGEPAGE: 15,
  MADV_DONTDUMP: 16,
  MADV_DODUMP: 17,
  MADV_WIPEONFORK: 18,
  MADV_KEEPONFORK: 19,
  MADV_COLD: 20,
  MADV_PAGEOUT: 21,
  MADV_POPULATE_READ: 22,
  MADV_POPULATE_WRITE: 23,
  MADV_DONTNEED_LOCKED: 24,
  MADV_COLLAPSE: 25,
  MADV_GUARD_INSTALL: 102,
  MADV_GUARD_REMOVE: 103,
  MADV_HWPOISON: 100,
  MADV_SOFT_OFFLINE: 101,
} as const;

export const MPOL = {
  MPOL_DEFAULT: 0,
  MPOL_PREFERRED: 1,
  MPOL_BIND: 2,
  MPOL_INTERLEAVE: 3,
  MPOL_LOCAL: 4,
  MPOL_PREFERRED_MANY: 5,
  MPOL_WEIGHTED_INTERLEAVE: 6,
  MPOL_F_STATIC_NODES: 1 << 15,
  MPOL_F_RELATIVE_NODES: 1 << 14,
  MPOL_F_NUMA_BALANCING: 1 << 13,
  MPOL_F_NODE: 1 << 0,
  MPOL_F_ADDR: 1 << 1,
  MPOL_F_MEMS_ALLOWED: 1 << 2,
  MPOL_MF_STRICT: 1 << 0,
  MPOL_MF_MOVE: 1 << 1,
  MPOL_MF_MOVE_ALL: 1 << 2,
} as const;

/** The memory policy modes, by name, in MPOL_* order. */
export const MPOL_MODE_NAMES = [
  'MPOL_DEFAULT',
  'MPOL_PREFERRED',
  'MPOL_BIND',
  'MPOL_INTERLEAVE',
  'MPOL_LOCAL',
  'MPOL_PREFERRED_MANY',
  'MPOL_WEIGHTED_INTERLEAVE',
] as const;

export const OPEN = {
  O_NONBLOCK: 0o4000,
  O_CLOEXEC: 0o2000000,
} as const;

/** memfd_create(2) flags (linux/memfd.h); a huge page size is encoded as in MAP_HUGE_*. */
export const MFD = {
  MFD_CLOEXEC: 0x0001,
  MFD_ALLOW_SEALING: 0x0002,
  MFD_HUGETLB: 0x0004,
  MFD_NOEXEC_SEAL: 0x0008,
  MFD_EXEC: 0x0010,
  MFD_HUGE_2MB: 21 << 26,
  MFD_HUGE_1GB: 30 << 26,
} as const;
export const MFD_HUGE_SHIFT = 26;
export const MFD_HUGE_MASK = 0x3f;

/** errno values (asm-generic/errno-base.h, errno.h). */
export const ERRNO = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  EINVAL: 22,
  ENOSPC: 28,
  ERANGE: 34,
  ENOSYS: 38,
  EOPNOTSUPP: 95,
  ETIMEDOUT: 110,
  EHWPOISON: 133,
} as const;

export type ErrnoName = keyof typeof ERRNO;
const ERRNO_BY_NUMBER = new Map<number, ErrnoName>(Object.entries(ERRNO).map(([k, v]) => [v, k as ErrnoName]));

export function errnoName(e: number): ErrnoName {
  const n = ERRNO_BY_NUMBER.get(Math.abs(e));
  if (!n) throw new Error(`unknown errno ${e}`);
  return n;
}

/** A syscall's return in kernel style: >= 0 success, < 0 is -errno. */
export type SysRet = number;
export const neg = (e: ErrnoName): number => -ERRNO[e];

export const isAligned = (x: number, a: number): boolean => x % a === 0;
export const alignDown = (x: number, a: number): number => Math.floor(x / a) * a;
export const alignUp = (x: number, a: number): number => Math.ceil(x / a) * a;

/** linux/userfaultfd.h (6.18). */
export const UFFD_API = 0xaa;
export const UFFD_FEATURE = {
  UFFD_FEATURE_PAGEFAULT_FLAG_WP: 1 << 0,
  UFFD_FEATURE_EVENT_FORK: 1 << 1,
  UFFD_FEATURE_EVENT_REMAP: 1 << 2,
  UFFD_FEATURE_EVENT_REMOVE: 1 << 3,
  UFFD_FEATURE_MISSING_HUGETLBFS: 1 << 4,
  UFFD_FEATURE_MISSING_SHMEM: 1 << 5,
  UFFD_FEATURE_EVENT_UNMAP: 1 << 6,
  UFFD_FEATURE_SIGBUS: 1 << 7,
  UFFD_FEATURE_THREAD_ID: 1 << 8,
  UFFD_FEATURE_MINOR_HUGETLBFS: 1 << 9,
  UFFD_FEATURE_MINOR_SHMEM: 1 << 10,
  UFFD_FEATURE_EXACT_ADDRESS: 1 << 11,
  UFFD_FEATURE_WP_HUGETLBFS_SHMEM: 1 << 12,
  UFFD_FEATURE_WP_UNPOPULATED: 1 << 13,
  UFFD_FEATURE_POISON: 1 << 14,
  UFFD_FEATURE_WP_ASYNC: 1 << 15,
  UFFD_FEATURE_MOVE: 1 << 16,
} as const;
/**
 * Feature bits of the unmerged proposals memtwin models (hugetlb_hgm.ts),
 * above every bit Linux 6.18 uses. UFFDIO_API offers each only while the
 * proposal's feature is enabled (/sys/kernel/memtwin/features/<name>).
 */
export const UFFD_FEATURE_PROPOSED = {
  UFFD_FEATURE_HUGETLB_SUBPAGE_COPY: 1 << 28,
  UFFD_FEATURE_HUGETLB_VMA_SPLIT: 1 << 29,
  UFFD_FEATURE_MINOR_HUGETLBFS_HGM: 1 << 30,
} as const;
/**
 * process_madvise(2) flags of the MADV_COLLAPSE RFC (Zach O'Keefe, "mm:
 * userspace hugepage collapse", March 2022), accepted only while the
 * madv-collapse-flags feature is enabled: Linux 6.18 defines no
 * process_madvise flag and answers EINVAL to any.
 */
export const MADV_F_PROPOSED = {
  MADV_F_COLLAPSE_LIMITS: 0x1,
  MADV_F_COLLAPSE_DEFRAG: 0x2,
} as const;
/** MADV_SPLIT of the hugetlb-hgm series (its value there; not a Linux 6.18 advice). */
export const MADV_SPLIT = 26;
/** Bits of uffdio_api.ioctls / uffdio_register.ioctls: 1 << _UFFDIO_*. */
export const UFFDIO_IOCTL_BITS = {
  UFFDIO_REGISTER: 0x00,
  UFFDIO_UNREGISTER: 0x01,
  UFFDIO_WAKE: 0x02,
  UFFDIO_COPY: 0x03,
  UFFDIO_ZEROPAGE: 0x04,
  UFFDIO_MOVE: 0x05,
  UFFDIO_WRITEPROTECT: 0x06,
  UFFDIO_CONTINUE: 0x07,
  UFFDIO_POISON: 0x08,
  UFFDIO_API: 0x3f,
} as const;
export const UFFDIO_REGISTER_MODE = {
  UFFDIO_REGISTER_MODE_MISSING: 1 << 0,
  UFFDIO_REGISTER_MODE_WP: 1 << 1,
  UFFDIO_REGISTER_MODE_MINOR: 1 << 2,
} as const;
/** Mode bits of the resolving ioctls (each ioctl accepts its own subset). */
export const UFFDIO_MODE = {
  UFFDIO_COPY_MODE_DONTWAKE: 1 << 0,
  UFFDIO_COPY_MODE_WP: 1 << 1,
  UFFDIO_ZEROPAGE_MODE_DONTWAKE: 1 << 0,
  UFFDIO_WRITEPROTECT_MODE_WP: 1 << 0,
  UFFDIO_WRITEPROTECT_MODE_DONTWAKE: 1 << 1,
  UFFDIO_CONTINUE_MODE_DONTWAKE: 1 << 0,
  UFFDIO_CONTINUE_MODE_WP: 1 << 1,
  UFFDIO_POISON_MODE_DONTWAKE: 1 << 0,
  UFFDIO_MOVE_MODE_DONTWAKE: 1 << 0,
  UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES: 1 << 1,
} as const;
export const UFFD_EVENT = {
  UFFD_EVENT_PAGEFAULT: 0x12,
  UFFD_EVENT_FORK: 0x13,
  UFFD_EVENT_REMAP: 0x14,
  UFFD_EVENT_REMOVE: 0x15,
  UFFD_EVENT_UNMAP: 0x16,
} as const;
export const UFFD_PAGEFAULT_FLAG = {
  UFFD_PAGEFAULT_FLAG_WRITE: 1 << 0,
  UFFD_PAGEFAULT_FLAG_WP: 1 << 1,
  UFFD_PAGEFAULT_FLAG_MINOR: 1 << 2,
} as const;
export const UFFD_USER_MODE_ONLY = 1;
