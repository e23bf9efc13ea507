/*
 * memtwin-native: real-kernel executor for memtwin op-scripts.
 *
 * Reads a simple line protocol on stdin (see PROTOCOL.md), executes each op
 * against the running kernel and prints one JSON line per op on stdout.
 *
 * Process structure:
 *   guardian (top level)  -- forks -->  worker (executes ops, process index 0)
 *                                          -- fork+exec(/proc/self/exe --child) --> spawned children 1..N
 * Before the worker changes anything on the machine (a knob, a hugetlb pool)
 * it writes the original state to the run's journal on disk (journal.c); the
 * guardian undoes the journal after the worker and all children are gone,
 * however the worker ended. If the guardian itself is killed, the journal
 * stays, and the next executor (or `memtwin-native --restore`) replays it.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <linux/fs.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/swap.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <limits.h>
#include <linux/userfaultfd.h>

#include "journal.h"

/* ------------------------------------------------------------------ */
/* uapi constants newer than the installed 6.1 headers                 */

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif
#ifndef MPOL_F_NODE
#define MPOL_F_NODE (1 << 0)
#endif

struct mt_page_region {
	uint64_t start, end, categories;
};
struct mt_pm_scan_arg {
	uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
	uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
#define MT_PAGEMAP_SCAN _IOWR('f', 16, struct mt_pm_scan_arg)
#define PAGE_IS_WPALLOWED (1 << 0)
#define PAGE_IS_WRITTEN (1 << 1)
#define PAGE_IS_FILE (1 << 2)
#define PAGE_IS_PRESENT (1 << 3)
#define PAGE_IS_SWAPPED (1 << 4)
#define PAGE_IS_PFNZERO (1 << 5)
#define PAGE_IS_HUGE (1 << 6)

/* userfaultfd: the installed header predates these (values and layouts of 6.18) */
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON (1 << 14)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE (1 << 16)
#endif
#ifndef _UFFDIO_MOVE
#define _UFFDIO_MOVE (0x05)
#endif
#ifndef _UFFDIO_POISON
#define _UFFDIO_POISON (0x08)
#endif
#ifndef UFFDIO_POISON
struct uffdio_poison {
	struct uffdio_range range;
	__u64 mode;
	__s64 updated;
};
#define UFFDIO_POISON_MODE_DONTWAKE ((__u64)1 << 0)
#define UFFDIO_POISON _IOWR(UFFDIO, _UFFDIO_POISON, struct uffdio_poison)
#endif
#ifndef UFFDIO_MOVE
struct uffdio_move {
	__u64 dst;
	__u64 src;
	__u64 len;
	__u64 mode;
	__s64 move;
};
#define UFFDIO_MOVE_MODE_DONTWAKE ((__u64)1 << 0)
#define UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES ((__u64)1 << 1)
#define UFFDIO_MOVE _IOWR(UFFDIO, _UFFDIO_MOVE, struct uffdio_move)
#endif
#ifndef SYS_userfaultfd
#define SYS_userfaultfd 323
#endif

#define NR_pidfd_open 434
#define NR_process_madvise 440

/* ------------------------------------------------------------------ */
/* sizes / limits                                                      */

#define MAX_THREADS 16          /* per process, excluding the main thread */
#define STACK_SZ (1UL << 20)
#define ALT_SZ (64UL << 10)
#define MAX_TOK 64
#define MAX_HANDLES 65536
#define MAX_PROCS 64
#define MAXNODE 1025            /* bits passed to the NUMA syscalls */
#define MASK_LONGS ((MAXNODE + 63) / 64)
#define PM_VEC 4096             /* PAGEMAP_SCAN regions per ioctl */
#define MP_CHUNK 16384          /* move_pages pages per call */

/* ------------------------------------------------------------------ */
/* growable buffer (malloc'd from brk: mmap threshold is raised)       */

struct buf {
	char *p;
	size_t n, cap;
};

static void bgrow(struct buf *b, size_t need)
{
	if (b->n + need + 1 <= b->cap)
		return;
	size_t nc = b->cap ? b->cap : 256;
	while (nc < b->n + need + 1)
		nc *= 2;
	char *np = realloc(b->p, nc);
	if (!np) {
		fprintf(stderr, "memtwin-native: out of memory\n");
		_exit(3);
	}
	b->p = np;
	b->cap = nc;
}

static void bput(struct buf *b, const char *s, size_t n)
{
	bgrow(b, n);
	memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = 0;
}

static void bputs(struct buf *b, const char *s) { bput(b, s, strlen(s)); }

__attribute__((format(printf, 2, 3))) static void bprintf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	char tmp[512];
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n < sizeof tmp) {
		bput(b, tmp, n);
		return;
	}
	bgrow(b, n);
	va_start(ap, fmt);
	vsnprintf(b->p + b->n, n + 1, fmt, ap);
	va_end(ap);
	b->n += n;
}

static void bjson_str(struct buf *b, const char *s)
{
	bputs(b, "\"");
	for (; *s; s++) {
		unsigned char ch = *s;
		if (ch == '"' || ch == '\\')
			bprintf(b, "\\%c", ch);
		else if (ch == '\n')
			bputs(b, "\\n");
		else if (ch < 0x20 || ch >= 0x7f)
			bprintf(b, "\\u%04x", ch);
		else
			bput(b, (const char *)&ch, 1);
	}
	bputs(b, "\"");
}

static void bclear(struct buf *b)
{
	b->n = 0;
	if (b->p)
		b->p[0] = 0;
}

/* ------------------------------------------------------------------ */
/* small helpers                                                       */

static int write_all(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n) {
		ssize_t r = write(fd, c, n);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		c += r;
		n -= r;
	}
	return 0;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static const char *errname(int e, char *tmp)
{
	const char *s = strerrorname_np(e);
	if (s)
		return s;
	sprintf(tmp, "E%d", e);
	return tmp;
}

static void signame(int sig, char *out)
{
	const char *s = sigabbrev_np(sig);
	if (s)
		sprintf(out, "SIG%s", s);
	else
		sprintf(out, "SIG%d", sig);
}


static int write_file(const char *path, const char *val, size_t n)
{
	int fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t r;
	do
		r = write(fd, val, n);
	while (r < 0 && errno == EINTR);
	int e = errno;
	if (close(fd) < 0 && r >= 0) {
		return -1;
	}
	errno = e;
	return r < 0 ? -1 : 0;
}

/* ------------------------------------------------------------------ */
/* line reader                                                         */

struct lreader {
	int fd;
	char in[65536];
	size_t st, en;
};

/* returns 1 with the line (no newline) in *line, 0 on EOF */
static int lr_get(struct lreader *lr, struct buf *line)
{
	bclear(line);
	for (;;) {
		if (lr->st == lr->en) {
			ssize_t r = read(lr->fd, lr->in, sizeof lr->in);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				return line->n > 0;
			lr->st = 0;
			lr->en = r;
		}
		char *s = lr->in + lr->st;
		char *nl = memchr(s, '\n', lr->en - lr->st);
		if (nl) {
			bput(line, s, nl - s);
			lr->st += nl - s + 1;
			return 1;
		}
		bput(line, s, lr->en - lr->st);
		lr->st = lr->en;
	}
}

/* ------------------------------------------------------------------ */
/* global process state                                                */

static int g_is_main = 0;           /* worker process (index 0) */
static int g_out_fd = 1;            /* where result lines go */
static pid_t g_parent;              /* spawned child: the worker that forked it */
static int g_pagemap_fd = -1;       /* /proc/self/pagemap, opened once (see h_setuid) */
static char *g_arena;               /* stacks + altstacks */
static char *g_fence;
static uint64_t g_handles[MAX_HANDLES];
static unsigned char g_handle_ok[MAX_HANDLES];

struct child {
	pid_t pid;
	int wfd;
	struct lreader *rd;
	char name[64];
	int dead;   /* it has exited (reaped): */
	int status; /* its wait status */
};
static struct child g_children[MAX_PROCS]; /* index 0 unused */
static int g_nchildren = 0;

/* ------------------------------------------------------------------ */
/* op parsing                                                          */

struct op {
	char *name;
	int nk;
	char *k[MAX_TOK];
	char *v[MAX_TOK];
	uint64_t i;
};

__attribute__((noreturn)) static void die_invalid(uint64_t i, const char *msg)
{
	struct buf b = {0};
	bprintf(&b, "{\"i\":%" PRIu64 ",\"invalid\":", i);
	bjson_str(&b, msg);
	bputs(&b, "}\n");
	write_all(g_out_fd, b.p, b.n);
	_exit(2);
}

static int tokenize(char *line, struct op *op)
{
	memset(op, 0, sizeof *op);
	char *save = NULL;
	char *t = strtok_r(line, " \t\r", &save);
	if (!t)
		return -1;
	op->name = t;
	while ((t = strtok_r(NULL, " \t\r", &save))) {
		if (op->nk >= MAX_TOK)
			return -1;
		char *eq = strchr(t, '=');
		if (!eq)
			return -1;
		*eq = 0;
		op->k[op->nk] = t;
		op->v[op->nk] = eq + 1;
		op->nk++;
	}
	return 0;
}

static const char *sval(struct op *op, const char *key)
{
	for (int j = 0; j < op->nk; j++)
		if (!strcmp(op->k[j], key))
			return op->v[j];
	return NULL;
}

static int parse_u64(const char *s, uint64_t *out)
{
	if (!s || !*s || !isdigit((unsigned char)*s))
		return -1;
	char *e;
	errno = 0;
	unsigned long long v = strtoull(s, &e, 10);
	if (*e || errno)
		return -1;
	*out = v;
	return 0;
}

static int parse_i64(const char *s, int64_t *out)
{
	if (!s || !*s)
		return -1;
	char *e;
	errno = 0;
	long long v = strtoll(s, &e, 10);
	if (*e || errno || e == s)
		return -1;
	*out = v;
	return 0;
}

/* The value of `key` as a 64-bit integer (signed or unsigned text), or `def` when absent. */
static uint64_t num(struct op *op, const char *key, uint64_t def, int required)
{
	const char *s = sval(op, key);
	if (!s) {
		if (required) {
			char m[96];
			snprintf(m, sizeof m, "missing key %s", key);
			die_invalid(op->i, m);
		}
		return def;
	}
	uint64_t v;
	int64_t sv;
	if (parse_u64(s, &v) == 0)
		return v;
	if (parse_i64(s, &sv) == 0)
		return (uint64_t)sv;
	char m[96];
	snprintf(m, sizeof m, "bad number for %s", key);
	die_invalid(op->i, m);
	return def;
}

static uint64_t u64(struct op *op, const char *key, uint64_t def, int required)
{
	return num(op, key, def, required);
}

static int64_t i64(struct op *op, const char *key, int64_t def, int required)
{
	return (int64_t)num(op, key, (uint64_t)def, required);
}

/* parse one address at *pp (A<h>+<off> | R<n> | <n>); advances *pp */
static int parse_addr_at(const char **pp, uint64_t *out)
{
	const char *p = *pp;
	char *e;
	if (*p == 'A') {
		p++;
		if (!isdigit((unsigned char)*p))
			return -1;
		unsigned long long h = strtoull(p, &e, 10);
		p = e;
		int64_t off = 0;
		if (*p == '+') {
			p++;
			if (!(*p == '-' || isdigit((unsigned char)*p)))
				return -1;
			off = strtoll(p, &e, 10);
			p = e;
		}
		uint64_t base = 0;
		if (h < MAX_HANDLES && g_handle_ok[h])
			base = g_handles[h];
		else
			fprintf(stderr, "memtwin-native: warning: handle %llu has no base, using 0\n", h);
		*out = base + (uint64_t)off;
	} else {
		if (*p == 'R')
			p++;
		if (!isdigit((unsigned char)*p))
			return -1;
		*out = strtoull(p, &e, 10);
		p = e;
	}
	*pp = p;
	return 0;
}

static uint64_t addrv(struct op *op, const char *key)
{
	const char *s = sval(op, key);
	uint64_t a;
	if (!s) {
		char m[96];
		snprintf(m, sizeof m, "missing key %s", key);
		die_invalid(op->i, m);
	}
	const char *p = s;
	if (parse_addr_at(&p, &a) < 0 || *p) {
		char m[96];
		snprintf(m, sizeof m, "bad address for %s", key);
		die_invalid(op->i, m);
	}
	return a;
}

static int hexv(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* percent-decodes the value in place */
static char *pstr(struct op *op, const char *key, int required)
{
	char *s = (char *)sval(op, key);
	if (!s) {
		if (required) {
			char m[96];
			snprintf(m, sizeof m, "missing key %s", key);
			die_invalid(op->i, m);
		}
		return NULL;
	}
	char *r = s, *w = s;
	while (*r) {
		if (*r == '%' && hexv(r[1]) >= 0 && hexv(r[2]) >= 0) {
			*w++ = (char)(hexv(r[1]) * 16 + hexv(r[2]));
			r += 3;
		} else
			*w++ = *r++;
	}
	*w = 0;
	return s;
}

/* node list "0,1,3" / "" -> mask; returns 0 or -1 */
static int parse_nodes(const char *s, unsigned long *mask)
{
	memset(mask, 0, MASK_LONGS * sizeof(unsigned long));
	if (!s)
		return 0;
	while (*s) {
		char *e;
		if (!isdigit((unsigned char)*s))
			return -1;
		unsigned long n = strtoul(s, &e, 10);
		if (n >= MAXNODE)
			return -1;
		mask[n / 64] |= 1UL << (n % 64);
		s = e;
		if (*s == ',')
			s++;
		else if (*s)
			return -1;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* per-op context, signals                                             */

struct ctx {
	struct op *op;
	struct buf *x; /* extra output fields, each starting with ',' */
	int err;       /* errno when ret == -1 */
	int sig;       /* signal when a fault was caught */
	uint64_t at;
	int ret_null;
};

static __thread sigjmp_buf *tl_jb;
static __thread volatile int tl_sig;
static __thread volatile uint64_t tl_at;

static void fault_handler(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	if (tl_jb) {
		sigjmp_buf *jb = tl_jb;
		tl_jb = NULL;
		tl_sig = sig;
		tl_at = (uint64_t)(uintptr_t)si->si_addr;
		siglongjmp(*jb, 1);
	}
	signal(sig, SIG_DFL); /* genuine crash: re-fault with default action */
}

static void setup_altstack(int slot)
{
	stack_t ss = {.ss_sp = g_arena + MAX_THREADS * STACK_SZ + slot * ALT_SZ, .ss_size = ALT_SZ, .ss_flags = 0};
	sigaltstack(&ss, NULL);
}

#define SYSRET(c, expr)                                                                                                \
	({                                                                                                             \
		long _r = (long)(expr);                                                                                \
		if (_r == -1)                                                                                          \
			(c)->err = errno;                                                                              \
		_r;                                                                                                    \
	})

/* ------------------------------------------------------------------ */
/* knobs (sysfs / procfs) and hugetlb pools, journaled before the write */

static long h_sysfs(struct ctx *c)
{
	char *path = pstr(c->op, "path", 1);
	char *val = pstr(c->op, "value", 1);
	/* a pool's nr_hugepages is journaled as the pool (every node's count), not as a knob */
	uint64_t kb = hugetlb_knob_size(path);
	if ((kb ? journal_hugetlb(kb) : journal_knob(path)) < 0) {
		c->err = errno;
		return -1;
	}
	return SYSRET(c, write_file(path, val, strlen(val)));
}

static void size_name(uint64_t kb, char *out)
{
	if (kb % (1024 * 1024) == 0)
		sprintf(out, "%" PRIu64 "G", kb / (1024 * 1024));
	else if (kb % 1024 == 0)
		sprintf(out, "%" PRIu64 "M", kb / 1024);
	else
		sprintf(out, "%" PRIu64 "K", kb);
}

static long h_hugetlb_pool(struct ctx *c)
{
	uint64_t size = u64(c->op, "size", 0, 1), nr = u64(c->op, "nr", 0, 1);
	const char *node = sval(c->op, "node");
	char path[256], v[64];
	if (node)
		snprintf(path, sizeof path, "/sys/devices/system/node/node%" PRIu64 "/hugepages/hugepages-%" PRIu64
		         "kB/nr_hugepages", u64(c->op, "node", 0, 1), size / 1024);
	else
		snprintf(path, sizeof path, "/sys/kernel/mm/hugepages/hugepages-%" PRIu64 "kB/nr_hugepages", size / 1024);
	if (access(path, F_OK) < 0) {
		c->err = errno;
		bputs(c->x, ",\"nr\":null");
		return -1;
	}
	if (journal_hugetlb(size / 1024) < 0) {
		c->err = errno;
		bputs(c->x, ",\"nr\":null");
		return -1;
	}
	int n = snprintf(v, sizeof v, "%" PRIu64, nr);
	long r = SYSRET(c, write_file(path, v, n));
	char rb[64];
	if (read_small_file(path, rb, sizeof rb) >= 0)
		bprintf(c->x, ",\"nr\":%llu", strtoull(rb, NULL, 10));
	else
		bputs(c->x, ",\"nr\":null");
	return r;
}

/* ------------------------------------------------------------------ */
/* memory pressure: swap areas and memory cgroups, journaled            */

#define SWAP_DIR "/var/lib/memtwin/swap" /* MEMTWIN_SWAP_DIR overrides it */
#define SWAP_PRIO_TOP 32767              /* the highest priority swapon(2) takes (SWAP_FLAG_PRIO_MASK) */
#define MAX_CGROUPS 256
/*
 * Swap types are 5 bits (MAX_SWAPFILES_SHIFT); the top ones are taken by
 * PTE markers, migration, hwpoison and device entries. With every option
 * configured, MAX_SWAPFILES = 32 - 1 - 3 - 1 - 3 = 24: a type below it is a
 * swap area (more than 24 active areas are impossible or very rare).
 */
#define SWAP_TYPE_AREAS 24
#define PM_SWAP (1ULL << 62)
#define PM_MMAP_EXCLUSIVE (1ULL << 56)

static int g_nswaps; /* swap areas the run enabled */

/*
 * The header mkswap writes (union swap_header, include/linux/swap.h), in the
 * first page: 1024 bytes of boot block, then version 1, last_page (the last
 * usable page: the area has last_page slots, page 0 being the header),
 * nr_badpages, a uuid and a volume name; "SWAPSPACE2" in the page's last 10
 * bytes. x86-64: pages of 4 KiB.
 */
static int write_swap_header(int fd, uint64_t pages)
{
	static unsigned char pg[4096];
	memset(pg, 0, sizeof pg);
	uint32_t version = 1, last = (uint32_t)(pages - 1), nbad = 0;
	memcpy(pg + 1024, &version, 4);
	memcpy(pg + 1028, &last, 4);
	memcpy(pg + 1032, &nbad, 4);
	memcpy(pg + 1036 + 16, "memtwin", 7); /* volume_name, after the (zero) uuid */
	memcpy(pg + sizeof pg - 10, "SWAPSPACE2", 10);
	ssize_t w;
	do
		w = pwrite(fd, pg, sizeof pg, 0);
	while (w < 0 && errno == EINTR);
	if (w != (ssize_t)sizeof pg)
		return w < 0 ? -1 : (errno = EIO, -1);
	return fsync(fd);
}

static int swapon_prio(const char *path)
{
	int prio = SWAP_PRIO_TOP - g_nswaps;
	return swapon(path, SWAP_FLAG_PREFER | ((prio << SWAP_FLAG_PRIO_SHIFT) & SWAP_FLAG_PRIO_MASK));
}

/*
 * A swap area on the k-th of the block devices MEMTWIN_SWAP_DEVICES lists
 * (comma-separated; the oracle guest's disks, its root being a tmpfs that
 * cannot hold a swap file): the header says how much of it is used. No
 * device left, or one smaller than asked: -1/ENOSPC.
 */
static long swap_on_device(struct ctx *c, const char *list, uint64_t size)
{
	char dev[PATH_MAX] = "";
	const char *p = list;
	for (int k = 0; p && *p; k++) {
		size_t n = strcspn(p, ",");
		if (k == g_nswaps) {
			snprintf(dev, sizeof dev, "%.*s", (int)n, p);
			break;
		}
		p = p[n] ? p + n + 1 : NULL;
	}
	if (!dev[0]) {
		c->err = ENOSPC;
		return -1;
	}
	int fd = open(dev, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		c->err = errno;
		return -1;
	}
	uint64_t have = 0;
	int r = ioctl(fd, BLKGETSIZE64, &have);
	if (r == 0 && have < size) {
		errno = ENOSPC;
		r = -1;
	}
	if (r == 0)
		r = write_swap_header(fd, size / 4096);
	int e = errno;
	close(fd);
	if (r == 0 && journal_swapon(dev) < 0) {
		r = -1;
		e = errno;
	}
	if (r == 0 && swapon_prio(dev) < 0) {
		r = -1;
		e = errno;
	}
	if (r < 0) {
		c->err = e;
		return -1;
	}
	g_nswaps++;
	return 0;
}

/*
 * swap size=N: a swap file of N bytes in the machine's swap directory,
 * journaled (file, then area) before it is created and enabled; the k-th
 * area of the run gets priority 32767-k, so the script's areas are used
 * before any the machine has, the first one first. The guardian swapoffs and
 * deletes them when the run ends (or the next executor, from the journal).
 */
static long h_swap(struct ctx *c)
{
	uint64_t size = u64(c->op, "size", 0, 1);
	uint64_t pages = size / 4096;
	if (size % 4096 || pages < 2 || pages - 1 > UINT32_MAX) {
		c->err = EINVAL;
		return -1;
	}
	const char *devs = getenv("MEMTWIN_SWAP_DEVICES");
	if (devs && *devs)
		return swap_on_device(c, devs, size);
	const char *dir = getenv("MEMTWIN_SWAP_DIR");
	if (!dir || !*dir)
		dir = SWAP_DIR;
	if (mkdir_p(dir) < 0) {
		c->err = errno;
		return -1;
	}
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/%s-%d.swap", dir, journal_run_id(), g_nswaps);
	if (journal_swapfile(path) < 0) {
		c->err = errno;
		return -1;
	}
	/* 0600: swapon warns about a swap file others can read */
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		c->err = errno;
		return -1;
	}
	/* allocated, not sparse: swapon refuses a file with holes (unwritten extents are fine) */
	int r = fallocate(fd, 0, 0, (off_t)size);
	if (r == 0)
		r = write_swap_header(fd, pages);
	int e = errno;
	close(fd);
	if (r == 0 && journal_swapon(path) < 0) {
		r = -1;
		e = errno;
	}
	if (r == 0) {
		r = swapon_prio(path);
		e = errno;
	}
	if (r < 0) {
		unlink(path); /* the journal's entries then find nothing to undo */
		c->err = e;
		return -1;
	}
	g_nswaps++;
	return 0;
}

/* A memory cgroup the script made (index k = the runner's, in creation order). */
struct mcg {
	int used;
	char path[PATH_MAX];
	int oom_efd;  /* v1: an eventfd registered on memory.oom_control (one count per OOM) */
	uint64_t oom; /* v1: OOM notifications read from it so far */
};
static struct mcg g_cg[MAX_CGROUPS];
static int g_cgv;                 /* the memory controller's hierarchy: 0 not looked at yet, 1 v1, 2 v2, -1 none */
static char g_cg_base[PATH_MAX];  /* where the run's directory goes */
static char g_cg_run[3200];       /* the run's directory, once made (base, /memtwin-<run id>) */
static char g_cg_why[320];        /* why there is no usable memory cgroup hierarchy */

/* 1 if the comma- or space-separated list s contains the word w */
static int has_word(const char *s, const char *w)
{
	size_t n = strlen(w);
	for (const char *p = s; (p = strstr(p, w)); p += n)
		if ((p == s || p[-1] == ',' || p[-1] == ' ') && (!p[n] || p[n] == ',' || p[n] == ' ' || p[n] == '\n'))
			return 1;
	return 0;
}

/*
 * Where the memory controller is: a cgroup v1 hierarchy mounted with the
 * memory option (the run's groups go under the executor's own memory
 * cgroup, so whatever limits the machine puts on it still hold), else the
 * cgroup v2 hierarchy if the memory controller is enabled at its root (the
 * run's groups go under the root: a v2 cgroup with processes in it, such as
 * the executor's own, cannot have children with controllers).
 */
static int cg_probe(void)
{
	if (g_cgv)
		return g_cgv > 0 ? 0 : -1;
	g_cgv = -1;
	snprintf(g_cg_why, sizeof g_cg_why, "no memory cgroup controller is mounted");
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return -1;
	char *line = NULL, v1mnt[PATH_MAX] = "", v1root[PATH_MAX] = "", v2mnt[PATH_MAX] = "";
	size_t cap = 0;
	while (getline(&line, &cap, f) > 0) {
		char root[PATH_MAX], mnt[PATH_MAX];
		if (sscanf(line, "%*s %*s %*s %4095s %4095s", root, mnt) != 2)
			continue;
		char *dash = strstr(line, " - ");
		if (!dash)
			continue;
		char fstype[64], src[PATH_MAX], super[1024] = "";
		if (sscanf(dash + 3, "%63s %4095s %1023s", fstype, src, super) < 2)
			continue;
		if (!strcmp(fstype, "cgroup") && has_word(super, "memory") && !v1mnt[0]) {
			snprintf(v1mnt, sizeof v1mnt, "%s", mnt);
			snprintf(v1root, sizeof v1root, "%s", root);
		} else if (!strcmp(fstype, "cgroup2") && !v2mnt[0])
			snprintf(v2mnt, sizeof v2mnt, "%s", mnt);
	}
	free(line);
	fclose(f);
	if (v1mnt[0]) {
		/* our own memory cgroup: "N:controllers:/path" in /proc/self/cgroup */
		static char s[8192];
		char own[PATH_MAX] = "/";
		if (read_small_file("/proc/self/cgroup", s, sizeof s) >= 0)
			for (char *l = strtok(s, "\n"); l; l = strtok(NULL, "\n")) {
				char *c1 = strchr(l, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
				if (!c2)
					continue;
				*c2 = 0;
				if (has_word(c1 + 1, "memory")) {
					snprintf(own, sizeof own, "%s", c2 + 1);
					break;
				}
			}
		/* the mount may show a subtree (its root in mountinfo): paths are relative to it */
		const char *rel = own;
		size_t rl = strlen(v1root);
		if (strcmp(v1root, "/") && !strncmp(own, v1root, rl) && (own[rl] == '/' || !own[rl]))
			rel = own + rl;
		snprintf(g_cg_base, sizeof g_cg_base, "%s%s", v1mnt, strcmp(rel, "/") ? rel : "");
		g_cgv = 1;
		return 0;
	}
	if (v2mnt[0]) {
		char p[PATH_MAX + 32], s[1024];
		snprintf(p, sizeof p, "%s/cgroup.controllers", v2mnt);
		if (read_small_file(p, s, sizeof s) < 0 || !has_word(s, "memory")) {
			snprintf(g_cg_why, sizeof g_cg_why, "the cgroup v2 hierarchy at %.200s has no memory controller", v2mnt);
			return -1;
		}
		snprintf(p, sizeof p, "%s/cgroup.subtree_control", v2mnt);
		if (read_small_file(p, s, sizeof s) < 0 || !has_word(s, "memory")) {
			snprintf(g_cg_why, sizeof g_cg_why,
			         "the memory controller is not enabled in %.200s/cgroup.subtree_control (echo +memory > it)", v2mnt);
			return -1;
		}
		snprintf(g_cg_base, sizeof g_cg_base, "%s", v2mnt);
		g_cgv = 2;
		return 0;
	}
	return -1;
}

/* a cgroup file of group dir: write s; 0 or -1 (errno) */
static int cg_write(const char *dir, const char *file, const char *s)
{
	char p[PATH_MAX + 64];
	snprintf(p, sizeof p, "%s/%s", dir, file);
	return write_file(p, s, strlen(s));
}

static int cg_exists(const char *dir, const char *file)
{
	char p[PATH_MAX + 64];
	snprintf(p, sizeof p, "%s/%s", dir, file);
	return access(p, F_OK) == 0;
}

/* a limit argument: absent (0), "max" (1, *v = UINT64_MAX) or bytes (1); die_invalid otherwise */
static int limit_arg(struct op *op, const char *key, uint64_t *v)
{
	const char *s = sval(op, key);
	if (!s)
		return 0;
	if (!strcmp(s, "max")) {
		*v = UINT64_MAX;
		return 1;
	}
	if (parse_u64(s, v) < 0) {
		char m[96];
		snprintf(m, sizeof m, "bad value for %s (bytes or max)", key);
		die_invalid(op->i, m);
	}
	return 1;
}

static void limit_text(uint64_t v, int v2, char *out, size_t cap)
{
	if (v == UINT64_MAX)
		snprintf(out, cap, "%s", v2 ? "max" : "-1"); /* v1's "unlimited" is -1 */
	else
		snprintf(out, cap, "%" PRIu64, v);
}

static long unsupported(struct ctx *c, const char *why)
{
	bputs(c->x, ",\"unsupported\":");
	bjson_str(c->x, why);
	c->err = EOPNOTSUPP;
	return -1;
}

/* the run's own directory of groups, made (journaled) on its first group */
static int cg_run_dir(void)
{
	if (g_cg_run[0])
		return 0;
	char run[sizeof g_cg_run];
	snprintf(run, sizeof run, "%.3000s/memtwin-%.100s", g_cg_base, journal_run_id());
	if (journal_cgroup(run) < 0)
		return -1;
	if (mkdir(run, 0755) < 0 && errno != EEXIST)
		return -1;
	/* v2: its children get the memory controller only if it hands it down */
	if (g_cgv == 2 && cg_write(run, "cgroup.subtree_control", "+memory") < 0) {
		int e = errno;
		rmdir(run);
		errno = e;
		return -1;
	}
	snprintf(g_cg_run, sizeof g_cg_run, "%s", run);
	return 0;
}

/*
 * cgroup cg=k name=N [memory_max=B|max] [memory_high=B|max] [swap_max=B|max]:
 * a memory cgroup <run dir>/N. v2: memory.max, memory.high, memory.swap.max.
 * v1: memory.limit_in_bytes = memory_max, memory.memsw.limit_in_bytes =
 * memory_max + swap_max (v1 limits memory and memory+swap); memory_high has
 * no v1 counterpart: unsupported, as is a finite swap_max without a finite
 * memory_max. Checked before anything is made, so an unsupported op leaves
 * nothing.
 */
static long h_cgroup(struct ctx *c)
{
	uint64_t k = u64(c->op, "cg", 0, 1);
	char *name = pstr(c->op, "name", 1);
	if (k >= MAX_CGROUPS || g_cg[k].used)
		die_invalid(c->op->i, "cg: no such free cgroup index");
	if (!*name || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, ".."))
		die_invalid(c->op->i, "name: not a directory name");
	uint64_t max = UINT64_MAX, high = UINT64_MAX, swap = UINT64_MAX;
	int has_max = limit_arg(c->op, "memory_max", &max), has_high = limit_arg(c->op, "memory_high", &high),
	    has_swap = limit_arg(c->op, "swap_max", &swap);
	if (cg_probe() < 0)
		return unsupported(c, g_cg_why);
	if (g_cgv == 1 && has_high)
		return unsupported(c, "memory_high: cgroup v1 (the machine's memory controller) has no memory.high");
	if (g_cgv == 1 && has_swap && swap != UINT64_MAX && max == UINT64_MAX)
		return unsupported(c, "swap_max without a memory_max: cgroup v1 limits memory+swap "
		                      "(memory.memsw.limit_in_bytes = memory_max + swap_max)");
	if (g_cgv == 1 && has_swap && swap != UINT64_MAX && !cg_exists(g_cg_base, "memory.memsw.limit_in_bytes"))
		return unsupported(c, "swap_max: no swap accounting (memory.memsw.limit_in_bytes is missing)");
	if (cg_run_dir() < 0) {
		c->err = errno;
		return -1;
	}
	struct mcg *g = &g_cg[k];
	snprintf(g->path, sizeof g->path, "%s/%.255s", g_cg_run, name);
	if (journal_cgroup(g->path) < 0 || mkdir(g->path, 0755) < 0) {
		c->err = errno;
		return -1;
	}
	char v[64];
	int r = 0;
	const char *why = NULL;
	if (g_cgv == 2) {
		if (has_swap && !cg_exists(g->path, "memory.swap.max"))
			why = "swap_max: no swap accounting (memory.swap.max is missing)";
		if (!why && has_max && (limit_text(max, 1, v, sizeof v), r = cg_write(g->path, "memory.max", v)) < 0)
			goto fail;
		if (!why && has_high && (limit_text(high, 1, v, sizeof v), r = cg_write(g->path, "memory.high", v)) < 0)
			goto fail;
		if (!why && has_swap && (limit_text(swap, 1, v, sizeof v), r = cg_write(g->path, "memory.swap.max", v)) < 0)
			goto fail;
	} else {
		/* memory first: memory+swap may never be below it */
		if (has_max && (limit_text(max, 0, v, sizeof v), r = cg_write(g->path, "memory.limit_in_bytes", v)) < 0)
			goto fail;
		if (has_swap) {
			uint64_t memsw = swap == UINT64_MAX || max + swap < max ? UINT64_MAX : max + swap;
			limit_text(memsw, 0, v, sizeof v);
			if ((r = cg_write(g->path, "memory.memsw.limit_in_bytes", v)) < 0)
				goto fail;
		}
		/*
		 * v1 gives each group its own memory.swappiness, copied from its parent when it is made (here the
		 * parent is this process's own group, not the root), so vm.swappiness as the script set it would
		 * not reach the group. v2, which the simulator models, reclaims every group with vm.swappiness
		 * (mem_cgroup_swappiness): copy it in, as it is now.
		 */
		char sw[32];
		if (read_small_file("/proc/sys/vm/swappiness", sw, sizeof sw) < 0 ||
		    (sw[strcspn(sw, "\n")] = 0, r = cg_write(g->path, "memory.swappiness", sw)) < 0)
			goto fail;
		/* the OOM count v1 does not show: an eventfd notified at each OOM of the group */
		char p[PATH_MAX + 32];
		snprintf(p, sizeof p, "%s/memory.oom_control", g->path);
		int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), ofd = open(p, O_RDONLY | O_CLOEXEC);
		if (efd >= 0 && ofd >= 0) {
			snprintf(v, sizeof v, "%d %d", efd, ofd);
			if (cg_write(g->path, "cgroup.event_control", v) < 0) {
				close(efd);
				efd = -1;
			}
		}
		if (ofd >= 0)
			close(ofd);
		if (efd < 0) {
			r = -1;
			goto fail;
		}
		g->oom_efd = efd;
	}
	if (why) {
		rmdir(g->path);
		return unsupported(c, why);
	}
	g->used = 1;
	return 0;
fail:
	c->err = errno;
	rmdir(g->path); /* the journal's entry then finds nothing to undo */
	return -1;
}

static struct mcg *cg_arg(struct ctx *c)
{
	uint64_t k = u64(c->op, "cg", 0, 1);
	if (k >= MAX_CGROUPS || !g_cg[k].used)
		die_invalid(c->op->i, "cg: no such cgroup");
	return &g_cg[k];
}

/* cgroup_enter cg=k in=p: process p (0 = this worker) moves into the group (cgroup.procs) */
static long h_cgroup_enter(struct ctx *c)
{
	struct mcg *g = cg_arg(c);
	uint64_t p = u64(c->op, "in", 0, 0);
	if (p > (uint64_t)g_nchildren)
		die_invalid(c->op->i, "in: no such process");
	char v[32];
	snprintf(v, sizeof v, "%d", p ? (int)g_children[p].pid : (int)getpid());
	return SYSRET(c, cg_write(g->path, "cgroup.procs", v));
}

/* "key N" lines of a cgroup file: the value of key, or -1 */
static int64_t keyed(const char *text, const char *key)
{
	size_t n = strlen(key);
	for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
		if (!strncmp(l, key, n) && l[n] == ' ')
			return strtoll(l + n + 1, NULL, 10);
	return -1;
}

/*
 * cgroup_stat cg=k: "current" (bytes charged), "events": {oom, oom_kill} and
 * "workingset": {refault_anon, refault_file} (memory.stat).
 * v2: memory.current and memory.events. v1: memory.usage_in_bytes,
 * memory.oom_control's oom_kill, and for oom the notifications of the
 * eventfd registered on memory.oom_control (Linux counts v2's oom and sends
 * that notification at the same place, mem_cgroup_oom; only when two tasks
 * of the group reach it at once does v1 notify once).
 */
static long h_cgroup_stat(struct ctx *c)
{
	struct mcg *g = cg_arg(c);
	char p[PATH_MAX + 64], s[4096];
	int v2 = g_cgv == 2;
	snprintf(p, sizeof p, "%s/%s", g->path, v2 ? "memory.current" : "memory.usage_in_bytes");
	if (read_small_file(p, s, sizeof s) < 0) {
		c->err = errno;
		return -1;
	}
	uint64_t cur = strtoull(s, NULL, 10);
	int64_t oom, kills;
	snprintf(p, sizeof p, "%s/%s", g->path, v2 ? "memory.events" : "memory.oom_control");
	if (read_small_file(p, s, sizeof s) < 0) {
		c->err = errno;
		return -1;
	}
	kills = keyed(s, "oom_kill");
	if (v2)
		oom = keyed(s, "oom");
	else {
		uint64_t n;
		if (read(g->oom_efd, &n, sizeof n) == sizeof n)
			g->oom += n;
		oom = (int64_t)g->oom;
	}
	bprintf(c->x, ",\"current\":%" PRIu64 ",\"events\":{\"oom\":%" PRId64 ",\"oom_kill\":%" PRId64 "}", cur, oom,
	        kills);
	/* memory.stat's workingset refaults: both versions spell them the same (v1 lists the group's own, and the
	 * executor's groups have no children) */
	static char st[16384];
	snprintf(p, sizeof p, "%s/memory.stat", g->path);
	if (read_small_file(p, st, sizeof st) < 0) {
		c->err = errno;
		return -1;
	}
	bprintf(c->x, ",\"workingset\":{\"refault_anon\":%" PRId64 ",\"refault_file\":%" PRId64 "}",
	        keyed(st, "workingset_refault_anon"), keyed(st, "workingset_refault_file"));
	return 0;
}

/* ping: nothing; the worker's way to learn whether a spawned process still runs (see forward()) */
static long h_ping(struct ctx *c)
{
	(void)c;
	return 0;
}

/* ------------------------------------------------------------------ */
/* memory ops                                                          */

/* memfds by the runner's index: real fd + 1; 0 = none. A forked child inherits them. */
#define MAX_MFD 64
static int g_mfd[MAX_MFD];

/* File K is now fd (one the runner made again replaces the old). */
static void mfd_install(uint64_t k, int fd)
{
	if (g_mfd[k])
		close(g_mfd[k] - 1);
	g_mfd[k] = fd + 1;
}

/* memfd mfd=K name=N size=S flags=F: memfd_create(N, F), ftruncate(S). */
static long h_memfd(struct ctx *c)
{
	uint64_t k = u64(c->op, "mfd", 0, 1), size = u64(c->op, "size", 0, 1);
	char *name = pstr(c->op, "name", 1);
	unsigned flags = (unsigned)i64(c->op, "flags", 0, 0);
	if (k >= MAX_MFD) {
		c->err = EMFILE;
		return -1;
	}
	int fd = (int)syscall(SYS_memfd_create, name, flags);
	if (fd < 0) {
		c->err = errno;
		return -1;
	}
	if (ftruncate(fd, (off_t)size) < 0) {
		c->err = errno;
		close(fd);
		return -1;
	}
	mfd_install(k, fd);
	return 0;
}

/*
 * open mfd=K kind=0|1 size=S: a new file of S bytes in /dev/shm (kind 0,
 * tmpfs: sparse) or /var/tmp (kind 1, the disk: zeros written, fsync'd and
 * dropped from the page cache), unlinked as soon as it is open, so nothing
 * is left behind whatever ends the run; mapped with mmap mfd=K.
 */
static long h_open(struct ctx *c)
{
	uint64_t k = u64(c->op, "mfd", 0, 1), size = u64(c->op, "size", 0, 1);
	int disk = (int)u64(c->op, "kind", 0, 1) == 1;
	if (k >= MAX_MFD) {
		c->err = EMFILE;
		return -1;
	}
	char path[96];
	snprintf(path, sizeof path, "%s/memtwin-%d-%" PRIu64, disk ? "/var/tmp" : "/dev/shm", (int)getpid(), k);
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		c->err = errno;
		return -1;
	}
	unlink(path);
	int err = 0;
	if (ftruncate(fd, (off_t)size) < 0)
		err = errno;
	if (!err && disk) {
		static char zeros[1 << 16];
		for (uint64_t o = 0; o < size && !err; o += sizeof zeros) {
			size_t n = size - o < sizeof zeros ? size - o : sizeof zeros;
			if (pwrite(fd, zeros, n, (off_t)o) != (ssize_t)n)
				err = errno ? errno : EIO;
		}
		if (!err && fsync(fd) < 0)
			err = errno;
		if (!err)
			err = posix_fadvise(fd, 0, (off_t)size, POSIX_FADV_DONTNEED);
	}
	if (err) {
		close(fd);
		c->err = err;
		return -1;
	}
	mfd_install(k, fd);
	return 0;
}

static long h_mmap(struct ctx *c)
{
	uint64_t addr = addrv(c->op, "addr");
	uint64_t len = u64(c->op, "len", 0, 1);
	int prot = (int)i64(c->op, "prot", 0, 1);
	int flags = (int)i64(c->op, "flags", 0, 1);
	uint64_t align = u64(c->op, "align", 0, 0);
	/* mfd=K offset=O: a memfd of this process (or inherited through fork) */
	int fd = -1;
	off_t off = 0;
	if (sval(c->op, "mfd")) {
		uint64_t k = u64(c->op, "mfd", 0, 1);
		if (k >= MAX_MFD || !g_mfd[k]) {
			c->err = EBADF;
			return -1;
		}
		fd = g_mfd[k] - 1;
		off = (off_t)u64(c->op, "offset", 0, 0);
	}
	void *p;
	if (align) {
		if (len + align < len) {
			c->err = ENOMEM;
			return -1;
		}
		p = mmap(NULL, len + align, prot, flags, fd, off);
		if (p == MAP_FAILED) {
			c->err = errno;
			return -1;
		}
		uint64_t s = (uint64_t)(uintptr_t)p;
		uint64_t st = (s + align - 1) / align * align;
		if (st > s)
			munmap(p, st - s);
		if (s + len + align > st + len)
			munmap((void *)(uintptr_t)(st + len), s + len + align - (st + len));
		p = (void *)(uintptr_t)st;
	} else {
		p = mmap((void *)(uintptr_t)addr, len, prot, flags, fd, off);
		if (p == MAP_FAILED) {
			c->err = errno;
			return -1;
		}
	}
	bprintf(c->x, ",\"addr\":%" PRIu64, (uint64_t)(uintptr_t)p);
	return 0;
}

static long h_munmap(struct ctx *c)
{
	uint64_t a = addrv(c->op, "addr"), len = u64(c->op, "len", 0, 1);
	return SYSRET(c, munmap((void *)(uintptr_t)a, len));
}

static long h_mprotect(struct ctx *c)
{
	uint64_t a = addrv(c->op, "addr"), len = u64(c->op, "len", 0, 1);
	int prot = (int)i64(c->op, "prot", 0, 1);
	return SYSRET(c, mprotect((void *)(uintptr_t)a, len, prot));
}

static long h_madvise(struct ctx *c)
{
	uint64_t a = addrv(c->op, "addr"), len = u64(c->op, "len", 0, 1);
	int adv = (int)i64(c->op, "advice", 0, 1);
	return SYSRET(c, madvise((void *)(uintptr_t)a, len, adv));
}

static pid_t target_pid(struct ctx *c)
{
	const char *s = sval(c->op, "tpid");
	if (s)
		return (pid_t)u64(c->op, "tpid", 0, 1);
	uint64_t t = u64(c->op, "target", 0, 0);
	if (t == 0)
		return getpid();
	die_invalid(c->op->i, "target not resolvable in this process");
}

static long h_process_madvise(struct ctx *c)
{
	static struct iovec iov[1024];
	int n = 0;
	const char *s = sval(c->op, "iov");
	if (!s)
		die_invalid(c->op->i, "missing key iov");
	const char *p = s;
	while (*p) {
		uint64_t a, l;
		if (n >= 1024 || parse_addr_at(&p, &a) < 0 || *p != ':')
			die_invalid(c->op->i, "bad iov");
		p++;
		char *e;
		if (!isdigit((unsigned char)*p))
			die_invalid(c->op->i, "bad iov");
		l = strtoull(p, &e, 10);
		p = e;
		iov[n].iov_base = (void *)(uintptr_t)a;
		iov[n].iov_len = l;
		n++;
		if (*p == ',')
			p++;
		else if (*p)
			die_invalid(c->op->i, "bad iov");
	}
	int adv = (int)i64(c->op, "advice", 0, 1);
	unsigned flags = (unsigned)u64(c->op, "flags", 0, 0);
	pid_t pid = target_pid(c);
	int pfd = syscall(NR_pidfd_open, pid, 0);
	if (pfd < 0) {
		c->err = errno;
		return -1;
	}
	long r = syscall(NR_process_madvise, pfd, iov, (size_t)n, adv, flags);
	if (r < 0) {
		c->err = errno;
		r = -1;
	}
	close(pfd);
	return r;
}

static long h_touch(struct ctx *c)
{
	uint64_t a = addrv(c->op, "addr"), len = u64(c->op, "len", 0, 1);
	int wr = (int)u64(c->op, "write", 0, 0);
	uint64_t stride = u64(c->op, "stride", 4096, 0);
	unsigned char fill = (unsigned char)u64(c->op, "fill", 0, 0);
	if (!stride)
		stride = 4096;
	sigjmp_buf jb;
	if (sigsetjmp(jb, 1)) {
		c->sig = tl_sig;
		c->at = tl_at;
		return -1;
	}
	tl_jb = &jb;
	uint64_t end = a + len;
	if (end < a)
		end = UINT64_MAX;
	for (volatile uint64_t x = a; x < end; x += stride) {
		volatile unsigned char *p = (volatile unsigned char *)(uintptr_t)x;
		if (wr)
			*p = fill;
		else
			(void)*p;
		if (x + stride < x)
			break;
	}
	tl_jb = NULL;
	return 0;
}

static long h_peek(struct ctx *c)
{
	uint64_t a = addrv(c->op, "addr"), len = u64(c->op, "len", 0, 1);
	uint64_t start = a & ~4095ULL, end = a + len;
	volatile int have = 0;
	volatile unsigned cur = 0;
	volatile uint64_t cnt = 0;
	struct buf *x = c->x;
	size_t mark = x->n;
	sigjmp_buf jb;
	if (sigsetjmp(jb, 1)) {
		x->n = mark;
		x->p[mark] = 0;
		c->sig = tl_sig;
		c->at = tl_at;
		return -1;
	}
	tl_jb = &jb;
	bputs(x, ",\"bytes\":[");
	for (volatile uint64_t pg = start; pg < end; pg += 4096) {
		uint64_t rd = pg < a ? a : pg;
		unsigned v = *(volatile unsigned char *)(uintptr_t)rd;
		if (have && v == cur)
			cnt++;
		else {
			if (have)
				bprintf(x, "%s[%u,%" PRIu64 "]", have > 1 ? "," : "", cur, cnt);
			if (have)
				have = 2;
			else
				have = 1;
			cur = v;
			cnt = 1;
		}
	}
	tl_jb = NULL;
	if (have)
		bprintf(x, "%s[%u,%" PRIu64 "]", have > 1 ? "," : "", cur, cnt);
	bputs(x, "]");
	return 0;
}

/* ------------------------------------------------------------------ */
/* /proc parsing                                                       */

struct vma {
	uint64_t s, e, kps;
};
static struct vma *g_vmas;
static int g_nvmas, g_vcap;

static int is_vma_header(const char *l)
{
	const char *p = l;
	while (isxdigit((unsigned char)*p))
		p++;
	return p > l && *p == '-';
}

/* load VMAs from /proc/self/smaps (with KernelPageSize) */
static int load_vmas(void)
{
	FILE *f = fopen("/proc/self/smaps", "re");
	if (!f)
		return -1;
	char *line = NULL;
	size_t cap = 0;
	g_nvmas = 0;
	while (getline(&line, &cap, f) > 0) {
		if (is_vma_header(line)) {
			if (g_nvmas == g_vcap) {
				g_vcap = g_vcap ? g_vcap * 2 : 1024;
				g_vmas = realloc(g_vmas, g_vcap * sizeof *g_vmas);
			}
			char *e;
			g_vmas[g_nvmas].s = strtoull(line, &e, 16);
			g_vmas[g_nvmas].e = strtoull(e + 1, NULL, 16);
			g_vmas[g_nvmas].kps = 4;
			g_nvmas++;
		} else if (g_nvmas && !strncmp(line, "KernelPageSize:", 15)) {
			g_vmas[g_nvmas - 1].kps = strtoull(line + 15, NULL, 10);
		}
	}
	free(line);
	fclose(f);
	return 0;
}

static struct vma *find_vma(uint64_t a)
{
	int lo = 0, hi = g_nvmas - 1;
	while (lo <= hi) {
		int m = (lo + hi) / 2;
		if (a < g_vmas[m].s)
			hi = m - 1;
		else if (a >= g_vmas[m].e)
			lo = m + 1;
		else
			return &g_vmas[m];
	}
	return NULL;
}

/* run-length emitter for pagemap */
struct rle {
	struct buf *x;
	int have, first;
	int present, node, size; /* size: 0 null, else kB */
	int wp;                  /* uffd-wp bit (a present PTE's, or a PTE marker's) */
	int swapped;             /* not present: the page is in a swap area */
	int shared;              /* present, not the zero page, and without PM_MMAP_EXCLUSIVE: mapped more than once */
	uint64_t n;
};

static void rle_flush(struct rle *r)
{
	if (!r->have)
		return;
	struct buf *x = r->x;
	bprintf(x, "%s{\"n\":%" PRIu64 ",\"present\":%s,\"node\":", r->first ? "" : ",", r->n,
	        r->present ? "true" : "false");
	if (r->node < 0)
		bputs(x, "null");
	else
		bprintf(x, "%d", r->node);
	bputs(x, ",\"size\":");
	if (!r->size)
		bputs(x, "null");
	else {
		char sn[32];
		size_name(r->size, sn);
		bprintf(x, "\"%s\"", sn);
	}
	if (r->wp)
		bputs(x, ",\"uffd_wp\":true");
	if (r->swapped)
		bputs(x, ",\"swapped\":true");
	if (r->shared)
		bputs(x, ",\"shared\":true");
	bputs(x, "}");
	r->first = 0;
	r->have = 0;
}

static void rle_add_full(struct rle *r, int present, int node, int size, int wp, int swapped, int shared, uint64_t n)
{
	if (!n)
		return;
	if (r->have && r->present == present && r->node == node && r->size == size && r->wp == wp &&
	    r->swapped == swapped && r->shared == shared) {
		r->n += n;
		return;
	}
	rle_flush(r);
	r->have = 1;
	r->present = present;
	r->node = node;
	r->size = size;
	r->wp = wp;
	r->swapped = swapped;
	r->shared = shared;
	r->n = n;
}

static void rle_add_sw(struct rle *r, int present, int node, int size, int wp, int swapped, uint64_t n)
{
	rle_add_full(r, present, node, size, wp, swapped, 0, n);
}

static void rle_add_wp(struct rle *r, int present, int node, int size, int wp, uint64_t n)
{
	rle_add_sw(r, present, node, size, wp, 0, n);
}

static void rle_add(struct rle *r, int present, int node, int size, uint64_t n)
{
	rle_add_wp(r, present, node, size, 0, n);
}

static void *g_mp_pages[MP_CHUNK];
static int g_mp_status[MP_CHUNK];
static uint64_t g_pm_ent[MP_CHUNK];

/*
 * /proc/self/pagemap, opened on first use and kept open: once `setuid` has
 * made the process non-dumpable, /proc/self/ files belong to root and the
 * mode 0400 pagemap can no longer be opened by the process itself (other
 * /proc/self files the executor reads are 0444). An fd opened before keeps
 * working: PAGEMAP_SCAN checks nothing beyond the open.
 */
static int pagemap_fd(void)
{
	if (g_pagemap_fd < 0)
		g_pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	return g_pagemap_fd;
}

/*
 * Pages PAGEMAP_SCAN calls swapped hold a swap PTE: a swap entry, or a PTE
 * marker or migration entry, which are swap PTEs too. Which one the read
 * interface says: bit 62 (PM_SWAP) with the entry's type in bits 0-4 (shown
 * to CAP_SYS_ADMIN): a swap area's type is below the special types.
 */
static void swapped_run(int fd, struct rle *r, uint64_t rs, uint64_t re, int wp)
{
	static uint64_t pme[4096];
	for (uint64_t a = rs; a < re;) {
		uint64_t n = (re - a) / 4096;
		if (n > 4096)
			n = 4096;
		ssize_t got = pread(fd, pme, n * 8, (off_t)(a / 4096 * 8));
		uint64_t k = 0;
		for (; got > 0 && k < (uint64_t)got / 8; k++)
			rle_add_sw(r, 0, -1, 0, wp, (pme[k] & PM_SWAP) && (pme[k] & 31) < SWAP_TYPE_AREAS, 1);
		rle_add_wp(r, 0, -1, 0, wp, n - k); /* unreadable: reported as not swapped */
		a += n * 4096;
	}
}

static long h_pagemap(struct ctx *c)
{
	uint64_t a = addrv(c->op, "addr"), len = u64(c->op, "len", 0, 1);
	uint64_t start = a & ~4095ULL, end = (a + len + 4095) & ~4095ULL;
	static struct mt_page_region vec[PM_VEC];
	int fd = pagemap_fd();
	if (fd < 0) {
		c->err = errno;
		return -1;
	}
	int vmas_loaded = 0;
	struct rle r = {.x = c->x, .first = 1};
	size_t mark = c->x->n;
	bputs(c->x, ",\"pages\":[");
	uint64_t cur = start;
	while (cur < end) {
		struct mt_pm_scan_arg arg = {
		    .size = sizeof arg,
		    .start = cur,
		    .end = end,
		    .vec = (uint64_t)(uintptr_t)vec,
		    .vec_len = PM_VEC,
		    .return_mask = PAGE_IS_PRESENT | PAGE_IS_PFNZERO | PAGE_IS_HUGE | PAGE_IS_SWAPPED | PAGE_IS_FILE |
		                   PAGE_IS_WRITTEN,
		};
		int nr = ioctl(fd, MT_PAGEMAP_SCAN, &arg);
		if (nr < 0) {
			int e = errno;
			c->x->n = mark;
			c->x->p[mark] = 0;
			if (e == ENOTTY || e == EINVAL)
				bputs(c->x, ",\"unsupported\":\"PAGEMAP_SCAN ioctl not available\"");
			c->err = e;
			return -1;
		}
		for (int k = 0; k < nr; k++) {
			uint64_t rs = vec[k].start, re = vec[k].end, cat = vec[k].categories;
			if (rs > cur)
				rle_add(&r, 0, -1, 0, (rs - cur) / 4096);
			cur = re;
			/* uffd-wp: a present PTE or a PTE marker (reported as swapped) that is not "written" */
			int wp = (cat & (PAGE_IS_PRESENT | PAGE_IS_SWAPPED)) && !(cat & PAGE_IS_WRITTEN);
			if (!(cat & PAGE_IS_PRESENT)) {
				if (cat & PAGE_IS_SWAPPED)
					swapped_run(fd, &r, rs, re, wp);
				else
					rle_add_wp(&r, 0, -1, 0, wp, (re - rs) / 4096);
				continue;
			}
			/* split by VMA when the page size depends on the VMA */
			uint64_t s = rs;
			while (s < re) {
				uint64_t e = re;
				int size = 4;
				if (cat & PAGE_IS_HUGE) {
					if (!vmas_loaded) {
						load_vmas();
						vmas_loaded = 1;
					}
					struct vma *v = find_vma(s);
					size = 2048;
					if (v) {
						if (v->e < e)
							e = v->e;
						if (v->kps > 4)
							size = (int)v->kps;
					}
				}
				if (cat & PAGE_IS_PFNZERO) {
					rle_add_wp(&r, 1, -1, size, wp, (e - s) / 4096);
				} else {
					uint64_t p = s;
					while (p < e) {
						uint64_t n = (e - p) / 4096;
						if (n > MP_CHUNK)
							n = MP_CHUNK;
						for (uint64_t j = 0; j < n; j++)
							g_mp_pages[j] = (void *)(uintptr_t)(p + j * 4096);
						long mr = syscall(SYS_move_pages, 0, (unsigned long)n, g_mp_pages, NULL,
						                  g_mp_status, 0);
						/* PM_MMAP_EXCLUSIVE from the read interface: mapped once (no fork sharing) */
						ssize_t got = pread(fd, g_pm_ent, n * 8, (off_t)(p / 4096 * 8));
						for (uint64_t j = 0; j < n; j++) {
							int node = (mr < 0 || g_mp_status[j] < 0) ? -1 : g_mp_status[j];
							int shared = got >= (ssize_t)((j + 1) * 8) && !(g_pm_ent[j] & PM_MMAP_EXCLUSIVE);
							rle_add_full(&r, 1, node, size, wp, 0, shared, 1);
						}
						p += n * 4096;
					}
				}
				s = e;
			}
		}
		if (arg.walk_end > cur) {
			rle_add(&r, 0, -1, 0, (arg.walk_end - cur) / 4096);
			cur = arg.walk_end;
		}
		if (nr == 0 && arg.walk_end <= cur && cur < end) {
			/* nothing more interesting in range */
			rle_add(&r, 0, -1, 0, (end - cur) / 4096);
			cur = end;
		}
	}
	rle_flush(&r);
	bputs(c->x, "]");
	return 0;
}

static long h_smaps(struct ctx *c)
{
	uint64_t a = addrv(c->op, "addr");
	FILE *f = fopen("/proc/self/smaps", "re");
	if (!f) {
		c->err = errno;
		return -1;
	}
	char *line = NULL;
	size_t cap = 0;
	int in = 0, found = 0;
	while (getline(&line, &cap, f) > 0) {
		if (is_vma_header(line)) {
			if (in)
				break;
			char *e;
			uint64_t s = strtoull(line, &e, 16);
			uint64_t en = strtoull(e + 1, &e, 16);
			if (a >= s && a < en) {
				in = found = 1;
				char perms[8] = "";
				char name[512] = "";
				unsigned long long off;
				char dev[32];
				unsigned long ino;
				int nn = sscanf(e, " %7s %llx %31s %lu %511[^\n]", perms, &off, dev, &ino, name);
				(void)nn;
				bprintf(c->x, ",\"vma\":[%" PRIu64 ",%" PRIu64 "],\"perms\":\"%s\",\"name\":", s, en, perms);
				bjson_str(c->x, name);
			}
			continue;
		}
		if (!in)
			continue;
		char *colon = strchr(line, ':');
		if (!colon)
			continue;
		*colon = 0;
		char *val = colon + 1;
		while (*val == ' ' || *val == '\t')
			val++;
		val[strcspn(val, "\n")] = 0;
		if (!strcmp(line, "VmFlags")) {
			bputs(c->x, ",\"VmFlags\":[");
			char *save = NULL, *t;
			int first = 1;
			for (t = strtok_r(val, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
				bprintf(c->x, "%s\"%s\"", first ? "" : ",", t);
				first = 0;
			}
			bputs(c->x, "]");
		} else {
			char *e;
			unsigned long long v = strtoull(val, &e, 10);
			if (e != val && (*e == 0 || !strcmp(e, " kB")))
				bprintf(c->x, ",\"%s\":%llu", line, v);
			else {
				bprintf(c->x, ",\"%s\":", line);
				bjson_str(c->x, val);
			}
		}
	}
	free(line);
	fclose(f);
	if (!found) {
		c->err = ENOENT;
		return -1;
	}
	return 0;
}

static long h_numa_maps(struct ctx *c)
{
	uint64_t a = addrv(c->op, "addr");
	FILE *f = fopen("/proc/self/maps", "re");
	if (!f) {
		c->err = errno;
		return -1;
	}
	char *line = NULL;
	size_t cap = 0;
	uint64_t vs = 0;
	int found = 0;
	while (getline(&line, &cap, f) > 0) {
		char *e;
		uint64_t s = strtoull(line, &e, 16);
		uint64_t en = strtoull(e + 1, NULL, 16);
		if (a >= s && a < en) {
			vs = s;
			found = 1;
			break;
		}
	}
	fclose(f);
	if (!found) {
		free(line);
		c->err = ENOENT;
		return -1;
	}
	f = fopen("/proc/self/numa_maps", "re");
	if (!f) {
		free(line);
		c->err = errno;
		bputs(c->x, ",\"unsupported\":\"/proc/self/numa_maps not available\"");
		return -1;
	}
	found = 0;
	while (getline(&line, &cap, f) > 0) {
		char *e;
		uint64_t s = strtoull(line, &e, 16);
		if (s != vs || *e != ' ')
			continue;
		found = 1;
		line[strcspn(line, "\n")] = 0;
		bputs(c->x, ",\"raw\":");
		bjson_str(c->x, line);
		/* The policy may contain a space ("prefer (many):0-1", "weighted interleave:0"):
		 * those two mode names are matched whole, then the rest up to the next space. */
		while (*e == ' ')
			e++;
		char *pol = e;
		static const char *const multi[] = {"prefer (many)", "weighted interleave"};
		for (size_t m = 0; m < sizeof multi / sizeof multi[0]; m++)
			if (!strncmp(e, multi[m], strlen(multi[m])))
				e += strlen(multi[m]);
		e += strcspn(e, " ");
		if (*e)
			*e++ = 0;
		bputs(c->x, ",\"policy\":");
		bjson_str(c->x, pol);
		char *save = NULL;
		char *t;
		int huge = 0, firstn = 1;
		long kps = -1;
		bputs(c->x, ",\"nodes\":{");
		for (t = strtok_r(e, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
			if (!strcmp(t, "huge"))
				huge = 1;
			else if (t[0] == 'N' && isdigit((unsigned char)t[1]) && strchr(t, '=')) {
				char *eq = strchr(t, '=');
				*eq = 0;
				bprintf(c->x, "%s\"%s\":%s", firstn ? "" : ",", t + 1, eq + 1);
				firstn = 0;
			} else if (!strncmp(t, "kernelpagesize_kB=", 18))
				kps = strtol(t + 18, NULL, 10);
		}
		bprintf(c->x, "},\"huge\":%s,\"kernelpagesize_kB\":", huge ? "true" : "false");
		if (kps >= 0)
			bprintf(c->x, "%ld", kps);
		else
			bputs(c->x, "null");
		break;
	}
	fclose(f);
	free(line);
	if (!found) {
		c->err = ENOENT;
		return -1;
	}
	return 0;
}

static long h_meminfo(struct ctx *c)
{
	static char txt[65536];
	const char *node = sval(c->op, "node");
	char path[256];
	uint64_t nd = node ? u64(c->op, "node", 0, 1) : 0;
	if (node)
		snprintf(path, sizeof path, "/sys/devices/system/node/node%" PRIu64 "/meminfo", nd);
	else
		snprintf(path, sizeof path, "/proc/meminfo");
	if (read_small_file(path, txt, sizeof txt) < 0) {
		c->err = errno;
		return -1;
	}
	static const char *keys[] = {"HugePages_Total", "HugePages_Free", "HugePages_Rsvd", "HugePages_Surp"};
	for (int k = 0; k < 4; k++) {
		char pat[64];
		snprintf(pat, sizeof pat, "%s:", keys[k]);
		char *p = strstr(txt, pat);
		if (!p)
			continue;
		bprintf(c->x, ",\"%s\":%llu", keys[k], strtoull(p + strlen(pat), NULL, 10));
	}
	char dir[256];
	if (node)
		snprintf(dir, sizeof dir, "/sys/devices/system/node/node%" PRIu64 "/hugepages", nd);
	else
		snprintf(dir, sizeof dir, "/sys/kernel/mm/hugepages");
	DIR *d = opendir(dir);
	bputs(c->x, ",\"hugepages\":{");
	if (d) {
		struct dirent *de;
		int first = 1;
		while ((de = readdir(d))) {
			unsigned long long kb;
			if (sscanf(de->d_name, "hugepages-%llukB", &kb) != 1)
				continue;
			char sn[32];
			size_name(kb, sn);
			bprintf(c->x, "%s\"%s\":{", first ? "" : ",", sn);
			first = 0;
			static const char *f[] = {"nr_hugepages", "free_hugepages", "resv_hugepages", "surplus_hugepages"};
			static const char *o[] = {"nr", "free", "resv", "surplus"};
			int fi = 1;
			for (int k = 0; k < 4; k++) {
				char p[600], v[64];
				snprintf(p, sizeof p, "%s/%s/%s", dir, de->d_name, f[k]);
				if (read_small_file(p, v, sizeof v) < 0)
					continue;
				bprintf(c->x, "%s\"%s\":%llu", fi ? "" : ",", o[k], strtoull(v, NULL, 10));
				fi = 0;
			}
			bputs(c->x, "}");
		}
		closedir(d);
	}
	bputs(c->x, "}");
	return 0;
}

/* vmstat snapshot taken at worker start */
#define MAX_VMSTAT 1024
static char g_vs_name[MAX_VMSTAT][64];
static int64_t g_vs_val[MAX_VMSTAT];
static int g_nvs;

static int vmstat_read(char names[][64], int64_t *vals, int max)
{
	static char txt[65536];
	if (read_small_file("/proc/vmstat", txt, sizeof txt) < 0)
		return -1;
	int n = 0;
	char *save = NULL;
	for (char *l = strtok_r(txt, "\n", &save); l && n < max; l = strtok_r(NULL, "\n", &save)) {
		char *sp = strchr(l, ' ');
		if (!sp)
			continue;
		*sp = 0;
		snprintf(names[n], 64, "%s", l);
		vals[n] = strtoll(sp + 1, NULL, 10);
		n++;
	}
	return n;
}

static long h_vmstat(struct ctx *c)
{
	static char nm[MAX_VMSTAT][64];
	static int64_t vv[MAX_VMSTAT];
	int n = vmstat_read(nm, vv, MAX_VMSTAT);
	if (n < 0) {
		c->err = errno;
		return -1;
	}
	const char *keys = sval(c->op, "keys");
	bputs(c->x, ",\"vmstat\":{");
	int first = 1;
	if (keys && *keys) {
		char *dup = strdup(keys), *save = NULL;
		for (char *k = strtok_r(dup, ",", &save); k; k = strtok_r(NULL, ",", &save)) {
			int64_t now = 0, then = 0;
			int fn = 0, ft = 0;
			for (int j = 0; j < n; j++)
				if (!strcmp(nm[j], k)) {
					now = vv[j];
					fn = 1;
					break;
				}
			for (int j = 0; j < g_nvs; j++)
				if (!strcmp(g_vs_name[j], k)) {
					then = g_vs_val[j];
					ft = 1;
					break;
				}
			bprintf(c->x, "%s", first ? "" : ",");
			bjson_str(c->x, k);
			if (fn)
				bprintf(c->x, ":%" PRId64, now - (ft ? then : 0));
			else
				bputs(c->x, ":null");
			first = 0;
		}
		free(dup);
	}
	bputs(c->x, "}");
	return 0;
}

/* ------------------------------------------------------------------ */
/* NUMA                                                                */

static void out_mask(struct buf *x, const char *key, unsigned long *mask)
{
	bprintf(x, ",\"%s\":[", key);
	int first = 1;
	for (int n = 0; n < MAXNODE; n++)
		if (mask[n / 64] & (1UL << (n % 64))) {
			bprintf(x, "%s%d", first ? "" : ",", n);
			first = 0;
		}
	bputs(x, "]");
}

static void nodes_arg(struct ctx *c, const char *key, unsigned long *mask)
{
	if (parse_nodes(sval(c->op, key), mask) < 0)
		die_invalid(c->op->i, "bad node list");
}

/* A node list, or NULL for `nodes=null`: the NULL nodemask set_mempolicy and mbind take (an empty set to get_nodes). */
static unsigned long *nodes_arg_or_null(struct ctx *c, const char *key, unsigned long *mask)
{
	const char *s = sval(c->op, key);
	if (s && !strcmp(s, "null"))
		return NULL;
	nodes_arg(c, key, mask);
	return mask;
}

static long h_set_mempolicy(struct ctx *c)
{
	unsigned long mask[MASK_LONGS];
	int mode = (int)i64(c->op, "mode", 0, 1);
	unsigned long *nm = nodes_arg_or_null(c, "nodes", mask);
	return SYSRET(c, syscall(SYS_set_mempolicy, mode, nm, (unsigned long)MAXNODE));
}

static long h_get_mempolicy(struct ctx *c)
{
	unsigned long mask[MASK_LONGS];
	memset(mask, 0, sizeof mask);
	int flags = (int)i64(c->op, "flags", 0, 0);
	uint64_t a = sval(c->op, "addr") ? addrv(c->op, "addr") : 0;
	int mode = 0;
	long r = SYSRET(c, syscall(SYS_get_mempolicy, &mode, mask, (unsigned long)MAXNODE, (unsigned long)a,
	                           (unsigned long)flags));
	if (r == 0) {
		bprintf(c->x, ",\"mode\":%d", mode);
		out_mask(c->x, "nodes", mask);
		if (flags & MPOL_F_NODE)
			bprintf(c->x, ",\"node\":%d", mode);
	}
	return r;
}

static long h_mbind(struct ctx *c)
{
	unsigned long mask[MASK_LONGS];
	uint64_t a = addrv(c->op, "addr"), len = u64(c->op, "len", 0, 1);
	int mode = (int)i64(c->op, "mode", 0, 1);
	unsigned flags = (unsigned)u64(c->op, "flags", 0, 0);
	unsigned long *nm = nodes_arg_or_null(c, "nodes", mask);
	return SYSRET(c, syscall(SYS_mbind, (unsigned long)a, (unsigned long)len, mode, nm, (unsigned long)MAXNODE,
	                         flags));
}

static long h_migrate_pages(struct ctx *c)
{
	unsigned long o[MASK_LONGS], n[MASK_LONGS];
	nodes_arg(c, "old_nodes", o);
	nodes_arg(c, "new_nodes", n);
	pid_t pid = target_pid(c);
	return SYSRET(c, syscall(SYS_migrate_pages, pid, (unsigned long)MAXNODE, o, n));
}

static long h_move_pages(struct ctx *c)
{
	static void *pages[65536];
	static int nodes[65536], status[65536];
	unsigned long n = 0;
	const char *p = sval(c->op, "pages");
	if (!p)
		die_invalid(c->op->i, "missing key pages");
	while (*p) {
		uint64_t a;
		if (n >= 65536 || parse_addr_at(&p, &a) < 0)
			die_invalid(c->op->i, "bad pages");
		pages[n++] = (void *)(uintptr_t)a;
		if (*p == ',')
			p++;
		else if (*p)
			die_invalid(c->op->i, "bad pages");
	}
	const char *ns = sval(c->op, "nodes");
	int use_nodes = ns && strcmp(ns, "null");
	if (use_nodes) {
		unsigned long k = 0;
		while (*ns) {
			char *e;
			long v = strtol(ns, &e, 10);
			if (e == ns || k >= 65536)
				die_invalid(c->op->i, "bad nodes");
			nodes[k++] = (int)v;
			ns = e;
			if (*ns == ',')
				ns++;
		}
		if (k != n)
			die_invalid(c->op->i, "nodes count != pages count");
	}
	int flags = (int)i64(c->op, "flags", 0, 0);
	pid_t pid = sval(c->op, "tpid") || sval(c->op, "target") ? target_pid(c) : 0;
	for (unsigned long j = 0; j < n; j++)
		status[j] = -12345;
	long r = SYSRET(c, syscall(SYS_move_pages, pid, n, pages, use_nodes ? nodes : NULL, status, flags));
	if (r >= 0) {
		bputs(c->x, ",\"status\":[");
		for (unsigned long j = 0; j < n; j++) {
			char t[32];
			if (status[j] < 0)
				bprintf(c->x, "%s\"-%s\"", j ? "," : "", errname(-status[j], t));
			else
				bprintf(c->x, "%s%d", j ? "," : "", status[j]);
		}
		bputs(c->x, "]");
	}
	return r;
}

/* ------------------------------------------------------------------ */
/* credentials                                                         */

/*
 * setuid uid=U gid=G (G = -1: unchanged), spawned children only: drop
 * privileges as a daemon does: setgroups(0, NULL) (ignored if not allowed),
 * setresgid(G,G,G), setresuid(U,U,U). glibc applies them to every thread.
 * The kernel then (commit_creds) clears the capabilities, makes the mm
 * dumpable = fs.suid_dumpable, and clears the parent-death signal, which
 * is re-armed here so the child still dies with the worker and the
 * guardian can reap it.
 */
static long h_setuid(struct ctx *c)
{
	if (g_is_main)
		die_invalid(c->op->i, "setuid only in a spawned process");
	uint64_t uid = u64(c->op, "uid", 0, 1);
	int64_t gid = i64(c->op, "gid", -1, 0);
	if (pagemap_fd() < 0)
		fprintf(stderr, "memtwin-native: cannot open /proc/self/pagemap before setuid: %s\n", strerrorname_np(errno));
	(void)setgroups(0, NULL);
	long r = 0;
	if (gid >= 0)
		r = SYSRET(c, setresgid((gid_t)gid, (gid_t)gid, (gid_t)gid));
	if (r == 0)
		r = SYSRET(c, setresuid((uid_t)uid, (uid_t)uid, (uid_t)uid));
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != g_parent)
		_exit(1);
	return r;
}

static long h_set_dumpable(struct ctx *c)
{
	return SYSRET(c, prctl(PR_SET_DUMPABLE, (unsigned long)i64(c->op, "value", 0, 1), 0, 0, 0));
}

/* ------------------------------------------------------------------ */
/* userfaultfd                                                         */

/*
 * A userfaultfd is named in the protocol by its index `fd=k` (creation order
 * over the whole script). Each process keeps its own table index -> real fd,
 * shared by its threads; an index this process did not create is EBADF.
 */
#define MAX_UFFD 256
static int g_uffd[MAX_UFFD]; /* real fd + 1; 0 = none */

static int uffd_get(struct ctx *c)
{
	uint64_t k = u64(c->op, "fd", 0, 1);
	if (k >= MAX_UFFD || !g_uffd[k]) {
		c->err = EBADF;
		return -1;
	}
	return g_uffd[k] - 1;
}

static const char *const g_uffd_feature_names[] = {
    "UFFD_FEATURE_PAGEFAULT_FLAG_WP", "UFFD_FEATURE_EVENT_FORK",       "UFFD_FEATURE_EVENT_REMAP",
    "UFFD_FEATURE_EVENT_REMOVE",      "UFFD_FEATURE_MISSING_HUGETLBFS", "UFFD_FEATURE_MISSING_SHMEM",
    "UFFD_FEATURE_EVENT_UNMAP",       "UFFD_FEATURE_SIGBUS",            "UFFD_FEATURE_THREAD_ID",
    "UFFD_FEATURE_MINOR_HUGETLBFS",   "UFFD_FEATURE_MINOR_SHMEM",       "UFFD_FEATURE_EXACT_ADDRESS",
    "UFFD_FEATURE_WP_HUGETLBFS_SHMEM", "UFFD_FEATURE_WP_UNPOPULATED",   "UFFD_FEATURE_POISON",
    "UFFD_FEATURE_WP_ASYNC",          "UFFD_FEATURE_MOVE",
};

static const char *uffd_ioctl_name(int bit)
{
	switch (bit) {
	case _UFFDIO_REGISTER: return "UFFDIO_REGISTER";
	case _UFFDIO_UNREGISTER: return "UFFDIO_UNREGISTER";
	case _UFFDIO_WAKE: return "UFFDIO_WAKE";
	case _UFFDIO_COPY: return "UFFDIO_COPY";
	case _UFFDIO_ZEROPAGE: return "UFFDIO_ZEROPAGE";
	case _UFFDIO_MOVE: return "UFFDIO_MOVE";
	case _UFFDIO_WRITEPROTECT: return "UFFDIO_WRITEPROTECT";
	case _UFFDIO_CONTINUE: return "UFFDIO_CONTINUE";
	case _UFFDIO_POISON: return "UFFDIO_POISON";
	case _UFFDIO_API: return "UFFDIO_API";
	}
	return NULL;
}

/* ,"key":[names of the set bits, in bit order]; an unnamed bit is "BIT<n>" */
static void out_bits(struct buf *x, const char *key, uint64_t v, const char *(*name)(int))
{
	bprintf(x, ",\"%s\":[", key);
	int first = 1;
	for (int b = 0; b < 64; b++) {
		if (!(v >> b & 1))
			continue;
		const char *n = name(b);
		if (n)
			bprintf(x, "%s\"%s\"", first ? "" : ",", n);
		else
			bprintf(x, "%s\"BIT%d\"", first ? "" : ",", b);
		first = 0;
	}
	bputs(x, "]");
}

static const char *uffd_feature_name(int bit)
{
	return bit < (int)(sizeof g_uffd_feature_names / sizeof g_uffd_feature_names[0]) ? g_uffd_feature_names[bit]
	                                                                                  : NULL;
}

static const char *uffd_pf_flag_name(int bit)
{
	static const char *const n[] = {"UFFD_PAGEFAULT_FLAG_WRITE", "UFFD_PAGEFAULT_FLAG_WP",
	                                "UFFD_PAGEFAULT_FLAG_MINOR"};
	return bit < 3 ? n[bit] : NULL;
}

/* userfaultfd fd=k flags=F: the raw syscall in this process */
static long h_userfaultfd(struct ctx *c)
{
	uint64_t k = u64(c->op, "fd", 0, 1);
	int flags = (int)i64(c->op, "flags", 0, 0);
	if (k >= MAX_UFFD)
		die_invalid(c->op->i, "userfaultfd index too large");
	long fd = syscall(SYS_userfaultfd, flags);
	if (fd < 0) {
		c->err = errno;
		return -1;
	}
	if (g_uffd[k])
		close(g_uffd[k] - 1);
	g_uffd[k] = (int)fd + 1;
	return 0;
}

static long h_uffdio_api(struct ctx *c)
{
	int fd = uffd_get(c);
	if (fd < 0)
		return -1;
	struct uffdio_api a = {.api = UFFD_API, .features = u64(c->op, "features", 0, 0)};
	long r = SYSRET(c, ioctl(fd, UFFDIO_API, &a));
	if (r == 0) {
		out_bits(c->x, "features", a.features, uffd_feature_name);
		out_bits(c->x, "ioctls", a.ioctls, uffd_ioctl_name);
	}
	return r;
}

static long h_uffdio_register(struct ctx *c)
{
	int fd = uffd_get(c);
	if (fd < 0)
		return -1;
	struct uffdio_register a = {.range = {.start = addrv(c->op, "addr"), .len = u64(c->op, "len", 0, 1)},
	                            .mode = u64(c->op, "mode", 0, 1)};
	long r = SYSRET(c, ioctl(fd, UFFDIO_REGISTER, &a));
	if (r == 0)
		out_bits(c->x, "ioctls", a.ioctls, uffd_ioctl_name);
	return r;
}

/* UFFDIO_UNREGISTER / UFFDIO_WAKE: a bare uffdio_range */
static long uffd_range_ioctl(struct ctx *c, unsigned long req)
{
	int fd = uffd_get(c);
	if (fd < 0)
		return -1;
	struct uffdio_range a = {.start = addrv(c->op, "addr"), .len = u64(c->op, "len", 0, 1)};
	return SYSRET(c, ioctl(fd, req, &a));
}

static long h_uffdio_unregister(struct ctx *c) { return uffd_range_ioctl(c, UFFDIO_UNREGISTER); }
static long h_uffdio_wake(struct ctx *c) { return uffd_range_ioctl(c, UFFDIO_WAKE); }

/* The result field (copy, zeropage, ...) is preset to this; when the kernel
 * returns before writing it (argument validation) it is reported as null. */
#define UFFD_UNWRITTEN INT64_MIN

static void out_result(struct buf *x, const char *key, int64_t v)
{
	if (v == UFFD_UNWRITTEN)
		bprintf(x, ",\"%s\":null", key);
	else
		bprintf(x, ",\"%s\":%" PRId64, key, v);
}

static long h_uffdio_copy(struct ctx *c)
{
	int fd = uffd_get(c);
	if (fd < 0)
		return -1;
	uint64_t len = u64(c->op, "len", 0, 1);
	unsigned char fill = (unsigned char)u64(c->op, "fill", 1, 0);
	/* the source: page-aligned, from the brk heap (mmap threshold is 32 MiB),
	 * so no mapping appears in the script's part of the address space */
	void *src = NULL;
	size_t blen = len ? (len + 4095) & ~4095ULL : 4096;
	if (blen < len || posix_memalign(&src, 4096, blen)) {
		c->err = ENOMEM;
		return -1;
	}
	memset(src, fill, blen);
	struct uffdio_copy a = {.dst = addrv(c->op, "dst"),
	                        .src = (uint64_t)(uintptr_t)src,
	                        .len = len,
	                        .mode = u64(c->op, "mode", 0, 0),
	                        .copy = UFFD_UNWRITTEN};
	long r = SYSRET(c, ioctl(fd, UFFDIO_COPY, &a));
	free(src);
	out_result(c->x, "copy", a.copy);
	return r;
}

static long h_uffdio_zeropage(struct ctx *c)
{
	int fd = uffd_get(c);
	if (fd < 0)
		return -1;
	struct uffdio_zeropage a = {.range = {.start = addrv(c->op, "addr"), .len = u64(c->op, "len", 0, 1)},
	                            .mode = u64(c->op, "mode", 0, 0),
	                            .zeropage = UFFD_UNWRITTEN};
	long r = SYSRET(c, ioctl(fd, UFFDIO_ZEROPAGE, &a));
	out_result(c->x, "zeropage", a.zeropage);
	return r;
}

static long h_uffdio_writeprotect(struct ctx *c)
{
	int fd = uffd_get(c);
	if (fd < 0)
		return -1;
	struct uffdio_writeprotect a = {.range = {.start = addrv(c->op, "addr"), .len = u64(c->op, "len", 0, 1)},
	                                .mode = u64(c->op, "mode", 0, 0)};
	return SYSRET(c, ioctl(fd, UFFDIO_WRITEPROTECT, &a));
}

static long h_uffdio_continue(struct ctx *c)
{
	int fd = uffd_get(c);
	if (fd < 0)
		return -1;
	struct uffdio_continue a = {.range = {.start = addrv(c->op, "addr"), .len = u64(c->op, "len", 0, 1)},
	                            .mode = u64(c->op, "mode", 0, 0),
	                            .mapped = UFFD_UNWRITTEN};
	long r = SYSRET(c, ioctl(fd, UFFDIO_CONTINUE, &a));
	out_result(c->x, "mapped", a.mapped);
	return r;
}

static long h_uffdio_poison(struct ctx *c)
{
	int fd = uffd_get(c);
	if (fd < 0)
		return -1;
	struct uffdio_poison a = {.range = {.start = addrv(c->op, "addr"), .len = u64(c->op, "len", 0, 1)},
	                          .mode = u64(c->op, "mode", 0, 0),
	                          .updated = UFFD_UNWRITTEN};
	long r = SYSRET(c, ioctl(fd, UFFDIO_POISON, &a));
	out_result(c->x, "updated", a.updated);
	return r;
}

static long h_uffdio_move(struct ctx *c)
{
	int fd = uffd_get(c);
	if (fd < 0)
		return -1;
	struct uffdio_move a = {.dst = addrv(c->op, "dst"),
	                        .src = addrv(c->op, "src"),
	                        .len = u64(c->op, "len", 0, 1),
	                        .mode = u64(c->op, "mode", 0, 0),
	                        .move = UFFD_UNWRITTEN};
	long r = SYSRET(c, ioctl(fd, UFFDIO_MOVE, &a));
	out_result(c->x, "move", a.move);
	return r;
}

static void out_msg(struct buf *x, const struct uffd_msg *m, int first)
{
	bputs(x, first ? "{" : ",{");
	switch (m->event) {
	case UFFD_EVENT_PAGEFAULT:
		bprintf(x, "\"event\":\"UFFD_EVENT_PAGEFAULT\",\"address\":%" PRIu64, (uint64_t)m->arg.pagefault.address);
		out_bits(x, "flags", m->arg.pagefault.flags, uffd_pf_flag_name);
		break;
	case UFFD_EVENT_FORK:
		/* the new uffd (of the forked child) is now an fd of this process; it is left open */
		bputs(x, "\"event\":\"UFFD_EVENT_FORK\"");
		break;
	case UFFD_EVENT_REMAP:
		/* `to` is a raw address the runner does not render: left out */
		bprintf(x, "\"event\":\"UFFD_EVENT_REMAP\",\"address\":%" PRIu64 ",\"len\":%" PRIu64,
		        (uint64_t)m->arg.remap.from, (uint64_t)m->arg.remap.len);
		break;
	case UFFD_EVENT_REMOVE:
	case UFFD_EVENT_UNMAP:
		bprintf(x, "\"event\":\"%s\",\"address\":%" PRIu64 ",\"len\":%" PRIu64,
		        m->event == UFFD_EVENT_REMOVE ? "UFFD_EVENT_REMOVE" : "UFFD_EVENT_UNMAP",
		        (uint64_t)m->arg.remove.start, (uint64_t)(m->arg.remove.end - m->arg.remove.start));
		break;
	default:
		bprintf(x, "\"event\":\"0x%x\"", m->event);
	}
	bputs(x, "}");
}

/*
 * uffd_read fd=k max=N timeout_ms=T: read up to N messages, waiting at most
 * T ms in total. A blocking uffd cannot be polled (poll reports POLLERR), so
 * the fd is made O_NONBLOCK for the duration of the op and restored after.
 */
static long h_uffd_read(struct ctx *c)
{
	int fd = uffd_get(c);
	if (fd < 0)
		return -1;
	uint64_t max = u64(c->op, "max", 1, 0), tmo = u64(c->op, "timeout_ms", 1000, 0);
	if (max > 4096)
		max = 4096;
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)) {
		c->err = errno;
		return -1;
	}
	struct uffd_msg *msgs = calloc(max ? max : 1, sizeof *msgs);
	uint64_t got = 0, deadline = now_ns() + tmo * 1000000ull;
	long ret = 0;
	while (got < max) {
		ssize_t n = read(fd, msgs + got, (max - got) * sizeof *msgs);
		if (n > 0) {
			got += n / sizeof *msgs;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno != EAGAIN) {
			c->err = errno;
			ret = -1;
			break;
		}
		uint64_t t = now_ns();
		if (t >= deadline)
			break;
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int left = (int)((deadline - t + 999999) / 1000000);
		int pr = poll(&p, 1, left);
		if (pr < 0 && errno != EINTR) {
			c->err = errno;
			ret = -1;
			break;
		}
		if (pr > 0 && (p.revents & (POLLERR | POLLNVAL)) && !(p.revents & POLLIN)) {
			/* not initialized (no UFFDIO_API yet): read says why */
			n = read(fd, msgs + got, (max - got) * sizeof *msgs);
			if (n > 0) {
				got += n / sizeof *msgs;
				continue;
			}
			c->err = n < 0 && errno != EAGAIN ? errno : EIO;
			ret = -1;
			break;
		}
	}
	if (!(fl & O_NONBLOCK))
		fcntl(fd, F_SETFL, fl);
	if (ret == 0) {
		bputs(c->x, ",\"msgs\":[");
		for (uint64_t m = 0; m < got; m++)
			out_msg(c->x, &msgs[m], m == 0);
		bputs(c->x, "]");
	}
	free(msgs);
	return ret;
}

/* ------------------------------------------------------------------ */
/* debug ops                                                           */

static long h_info(struct ctx *c)
{
	bprintf(c->x, ",\"pid\":%d,\"fence\":%" PRIu64 ",\"arena\":%" PRIu64, getpid(), (uint64_t)(uintptr_t)g_fence,
	        (uint64_t)(uintptr_t)g_arena);
	return 0;
}

/* Whole contents of a file as a JSON string under `key`. */
static long read_file_json(struct ctx *c, const char *path, const char *key)
{
	struct buf b = {0};
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		c->err = errno;
		return -1;
	}
	char tmp[4096];
	ssize_t r;
	while ((r = read(fd, tmp, sizeof tmp)) > 0)
		bput(&b, tmp, r);
	close(fd);
	bprintf(c->x, ",\"%s\":", key);
	bjson_str(c->x, b.p ? b.p : "");
	free(b.p);
	return 0;
}

static long h_maps(struct ctx *c)
{
	return read_file_json(c, "/proc/self/maps", "maps");
}

/* read path=: any sysfs/procfs file as text (/proc/self/... of process `in`) */
static long h_read(struct ctx *c)
{
	return read_file_json(c, pstr(c->op, "path", 1), "text");
}

/* ------------------------------------------------------------------ */
/* threads                                                             */

struct job {
	struct job *next;
	struct buf line_store; /* owns the tokenized line */
	struct op op;
	long (*fn)(struct ctx *);
	int async;
	int done;
	struct buf out; /* full result line */
	int sig;
	uint64_t at;
};

struct fault_rec {
	uint64_t i;
	int sig;
	uint64_t at;
};

struct wthread {
	int used;
	pthread_t t;
	pthread_mutex_t mu;
	pthread_cond_t cv_work, cv_done;
	struct job *head, *tail;
	int busy;
	int cpu;
	int start_state; /* 0 pending, 1 ok, -errno failed */
	pid_t tid;
	uint64_t queued, finished; /* jobs given to the thread, jobs it has finished (under mu) */
	uint64_t running;	   /* 1 + the ordinal of the job in run_job, 0 between jobs (atomic) */
	uint64_t async_done;
	struct fault_rec faults[64];
	int nfaults;
};

static struct wthread g_thr[MAX_THREADS + 1];
static int g_nthr; /* threads created (excluding main) */

static void run_job(struct job *j)
{
	struct buf x = {0};
	struct ctx c = {.op = &j->op, .x = &x};
	bputs(&x, "");
	uint64_t t0 = now_ns();
	long r = j->fn(&c);
	uint64_t t1 = now_ns();
	struct buf *o = &j->out;
	bclear(o);
	bprintf(o, "{\"i\":%" PRIu64 ",\"ret\":%ld", j->op.i, r);
	if (r == -1 && c.sig) {
		char sn[32];
		signame(c.sig, sn);
		bprintf(o, ",\"signal\":\"%s\",\"at\":%" PRIu64, sn, c.at);
	} else if (r == -1) {
		char t[32];
		bprintf(o, ",\"errno\":\"%s\"", errname(c.err, t));
	}
	if (x.n)
		bput(o, x.p, x.n);
	bprintf(o, ",\"ns\":%" PRIu64 "}\n", t1 - t0);
	j->sig = c.sig;
	j->at = c.at;
	free(x.p);
}

static void free_job(struct job *j)
{
	free(j->line_store.p);
	free(j->out.p);
	free(j);
}

/* MEMTWIN_TEST_ASYNC_LATE_US: each async op's thread spins this long before running it, as a
 * thread the scheduler runs late would (src/opscript/async_settle_linux.test.ts) */
static uint64_t g_async_late_ns;

static void *thread_main(void *arg)
{
	struct wthread *w = arg;
	int slot = (int)(w - g_thr);
	setup_altstack(slot);
	int st = 1;
	if (w->cpu >= 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		if (w->cpu < CPU_SETSIZE)
			CPU_SET(w->cpu, &set);
		if (sched_setaffinity(0, sizeof set, &set) < 0)
			st = -errno;
	}
	pthread_mutex_lock(&w->mu);
	w->tid = (pid_t)syscall(SYS_gettid);
	w->start_state = st;
	pthread_cond_broadcast(&w->cv_done);
	pthread_mutex_unlock(&w->mu);
	if (st < 0)
		return NULL;
	for (;;) {
		pthread_mutex_lock(&w->mu);
		while (!w->head)
			pthread_cond_wait(&w->cv_work, &w->mu);
		struct job *j = w->head;
		w->head = j->next;
		if (!w->head)
			w->tail = NULL;
		w->busy = 1;
		uint64_t ord = w->finished;
		pthread_mutex_unlock(&w->mu);

		__atomic_store_n(&w->running, ord + 1, __ATOMIC_SEQ_CST);
		if (j->async && g_async_late_ns) /* a thread scheduled late (tests only): spin, not sleep */
			for (uint64_t until = now_ns() + g_async_late_ns; now_ns() < until;)
				;
		run_job(j);
		__atomic_store_n(&w->running, 0, __ATOMIC_SEQ_CST);

		pthread_mutex_lock(&w->mu);
		w->busy = 0;
		w->finished++;
		if (j->async) {
			w->async_done++;
			if (j->sig && w->nfaults < 64)
				w->faults[w->nfaults++] = (struct fault_rec){j->op.i, j->sig, j->at};
			free_job(j);
		} else
			j->done = 1;
		pthread_cond_broadcast(&w->cv_done);
		pthread_mutex_unlock(&w->mu);
	}
	return NULL;
}

/* Whether thread tid sleeps in the kernel (state S or D in /proc/self/task/<tid>/stat):
 * waiting in a userfault, for an event to be read, or on a lock. */
static int task_sleeping(pid_t tid)
{
	char path[64], st[512];
	snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)tid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, st, sizeof st - 1);
	close(fd);
	if (n <= 0)
		return 0;
	st[n] = 0;
	char *p = strrchr(st, ')');
	return p && p[1] == ' ' && (p[2] == 'S' || p[2] == 'D');
}

/* An async op is answered where the simulator answers it: once its thread has
 * finished it, or sleeps in the kernel with it (or with an op queued before it)
 * in progress. Answering at once let the next op of the main thread run before
 * the async one had got that far: a UFFDIO_COPY issued right after an async
 * MADV_DONTNEED then sometimes found mmap_changing still clear and copied, where
 * the script expects EAGAIN. An op that neither finishes nor sleeps within 2 s
 * (a long touch) is left running, as before. */
static void settle_async(struct wthread *w, uint64_t ord)
{
	uint64_t deadline = now_ns() + 2000000000ull;
	for (;;) {
		pthread_mutex_lock(&w->mu);
		int done = w->finished > ord;
		pthread_mutex_unlock(&w->mu);
		if (done)
			return;
		/* a job in run_job (this one, or one queued before it: jobs run in order) before and after
		 * reading the state: the sleep is that job's, not the worker's wait for its mutex between jobs */
		uint64_t r = __atomic_load_n(&w->running, __ATOMIC_SEQ_CST);
		if (r && task_sleeping(w->tid) && __atomic_load_n(&w->running, __ATOMIC_SEQ_CST) == r)
			return;
		if (now_ns() > deadline)
			return;
		struct timespec ts = {0, 20000};
		nanosleep(&ts, NULL);
	}
}

static struct buf *g_capture; /* main worker: collect local results here */

static void emit(const char *s, size_t n)
{
	if (g_capture)
		bput(g_capture, s, n);
	else
		write_all(g_out_fd, s, n);
}

static void emit_simple(uint64_t i, long ret, int err, const char *extra, uint64_t ns)
{
	struct buf b = {0};
	bprintf(&b, "{\"i\":%" PRIu64 ",\"ret\":%ld", i, ret);
	if (ret == -1) {
		char t[32];
		bprintf(&b, ",\"errno\":\"%s\"", errname(err, t));
	}
	if (extra)
		bputs(&b, extra);
	bprintf(&b, ",\"ns\":%" PRIu64 "}\n", ns);
	emit(b.p, b.n);
	free(b.p);
}

static void op_thread(struct op *op)
{
	uint64_t t0 = now_ns();
	int cpu = (int)i64(op, "cpu", -1, 0);
	if (g_nthr >= MAX_THREADS) {
		emit_simple(op->i, -1, EAGAIN, NULL, now_ns() - t0);
		return;
	}
	int slot = g_nthr + 1;
	struct wthread *w = &g_thr[slot];
	memset(w, 0, sizeof *w);
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv_work, NULL);
	pthread_cond_init(&w->cv_done, NULL);
	w->cpu = cpu;
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstack(&attr, g_arena + (slot - 1) * STACK_SZ, STACK_SZ);
	int e = pthread_create(&w->t, &attr, thread_main, w);
	pthread_attr_destroy(&attr);
	if (e) {
		emit_simple(op->i, -1, e, NULL, now_ns() - t0);
		return;
	}
	pthread_mutex_lock(&w->mu);
	while (w->start_state == 0)
		pthread_cond_wait(&w->cv_done, &w->mu);
	int st = w->start_state;
	pthread_mutex_unlock(&w->mu);
	if (st < 0) {
		pthread_join(w->t, NULL);
		emit_simple(op->i, -1, -st, NULL, now_ns() - t0);
		return;
	}
	w->used = 1;
	g_nthr++;
	char extra[64];
	snprintf(extra, sizeof extra, ",\"thread\":%d", slot);
	emit_simple(op->i, 0, 0, extra, now_ns() - t0);
}

static void op_join(struct op *op)
{
	uint64_t t0 = now_ns();
	uint64_t k = u64(op, "thread", 0, 0);
	uint64_t tmo = u64(op, "timeout_ms", 10000, 0);
	if (k == 0) {
		emit_simple(op->i, 0, 0, ",\"async_done\":0,\"async_faults\":[]", now_ns() - t0);
		return;
	}
	if (k > (uint64_t)g_nthr || !g_thr[k].used) {
		emit_simple(op->i, -1, ESRCH, NULL, now_ns() - t0);
		return;
	}
	struct wthread *w = &g_thr[k];
	struct timespec dl;
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += tmo / 1000;
	dl.tv_nsec += (tmo % 1000) * 1000000;
	if (dl.tv_nsec >= 1000000000) {
		dl.tv_sec++;
		dl.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&w->mu);
	int to = 0;
	while (w->head || w->busy) {
		if (pthread_cond_timedwait(&w->cv_done, &w->mu, &dl) == ETIMEDOUT && (w->head || w->busy)) {
			to = 1;
			break;
		}
	}
	struct buf x = {0};
	bprintf(&x, ",\"async_done\":%" PRIu64 ",\"async_faults\":[", w->async_done);
	for (int f = 0; f < w->nfaults; f++) {
		char sn[32];
		signame(w->faults[f].sig, sn);
		bprintf(&x, "%s{\"i\":%" PRIu64 ",\"signal\":\"%s\",\"at\":%" PRIu64 "}", f ? "," : "", w->faults[f].i,
		        sn, w->faults[f].at);
	}
	bputs(&x, "]");
	if (!to) {
		w->async_done = 0;
		w->nfaults = 0;
	}
	pthread_mutex_unlock(&w->mu);
	emit_simple(op->i, to ? -1 : 0, ETIMEDOUT, x.p, now_ns() - t0);
	free(x.p);
}

/* ------------------------------------------------------------------ */
/* damon: DAMON's virtual-address monitoring of this process through   */
/* /sys/kernel/mm/damon/admin (kdamond 0, made and removed by the op)  */

#define DAMON_ADMIN "/sys/kernel/mm/damon/admin/kdamonds"

struct damon_hot {
	const volatile char *addr;
	uint64_t len;
	volatile int stop;
};

/*
 * The hot range's thread: one load per 4K page, over and over, until told to stop. DAMON clears the accessed bit
 * of the page it samples without flushing the TLB (ptep_test_and_clear_young), so a page whose translation stays
 * cached would look idle however often it is read: after each pass the thread takes write permission away from 64
 * pages of its own (more than tlb_single_page_flush_ceiling, 33), which flushes the whole TLB of every CPU running
 * the process, and the next pass walks the page tables again, setting the bits.
 */
static void *damon_hot_main(void *arg)
{
	struct damon_hot *h = arg;
	unsigned long sum = 0;
	size_t flen = 64 * 4096;
	char *flush = mmap(NULL, flen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	while (!h->stop) {
		for (uint64_t o = 0; o < h->len && !h->stop; o += 4096)
			sum += h->addr[o];
		if (flush != MAP_FAILED) {
			mprotect(flush, flen, PROT_READ);
			mprotect(flush, flen, PROT_READ | PROT_WRITE);
			for (size_t o = 0; o < flen; o += 4096)
				flush[o] = 1; /* present and writable again, for the next downgrade to change */
		}
	}
	if (flush != MAP_FAILED)
		munmap(flush, flen);
	return (void *)sum;
}

/* write a file under kdamonds/0/contexts/0 (or any path), the value printed with fmt */
__attribute__((format(printf, 2, 3))) static int damon_put(const char *path, const char *fmt, ...)
{
	char v[64];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(v, sizeof v, fmt, ap);
	va_end(ap);
	return write_file(path, v, n);
}

/* the regions of the stat scheme's tried_regions, as JSON, into x; their count */
static int damon_read_regions(struct buf *x, const char *dir)
{
	bputs(x, ",\"regions\":[");
	int n = 0;
	for (;; n++) {
		char p[1024], v[64];
		uint64_t f[4];
		static const char *names[] = {"start", "end", "nr_accesses", "age"};
		int ok = 1;
		for (int k = 0; k < 4 && ok; k++) {
			snprintf(p, sizeof p, "%s/%d/%s", dir, n, names[k]);
			ok = read_small_file(p, v, sizeof v) > 0 && sscanf(v, "%" SCNu64, &f[k]) == 1;
		}
		if (!ok)
			break;
		bprintf(x, "%s{\"start\":%" PRIu64 ",\"end\":%" PRIu64 ",\"nr_accesses\":%" PRIu64 ",\"age\":%" PRIu64 "}",
		        n ? "," : "", f[0], f[1], f[2], f[3]);
	}
	bputs(x, "]");
	return n;
}

static long h_damon(struct ctx *c)
{
	struct op *op = c->op;
	uint64_t a = addrv(op, "addr"), len = u64(op, "len", 0, 1);
	uint64_t sample = u64(op, "sample_us", 0, 1), aggr = u64(op, "aggr_us", 0, 1), aggrs = u64(op, "aggrs", 0, 1);
	uint64_t minr = u64(op, "min_nr_regions", 0, 1), maxr = u64(op, "max_nr_regions", 0, 1);
	uint64_t hot = sval(op, "hot_addr") ? addrv(op, "hot_addr") : 0, hot_len = u64(op, "hot_len", 0, 0);
	char v[256], p[512];
	if (access(DAMON_ADMIN "/nr_kdamonds", W_OK) < 0)
		return unsupported(c, "no DAMON sysfs interface (/sys/kernel/mm/damon/admin: CONFIG_DAMON_SYSFS)");
	if (read_small_file(DAMON_ADMIN "/nr_kdamonds", v, sizeof v) < 0)
		return unsupported(c, "cannot read /sys/kernel/mm/damon/admin/kdamonds/nr_kdamonds");
	if (atoi(v) != 0) {
		/* another user's kdamond: nr_kdamonds cannot change while one runs, and it is not ours to stop */
		char st[32] = "?";
		read_small_file(DAMON_ADMIN "/0/state", st, sizeof st);
		st[strcspn(st, "\n")] = 0;
		snprintf(p, sizeof p,
		         "DAMON is in use on this machine (nr_kdamonds %d, kdamond 0 %s); memtwin does not take it over",
		         atoi(v), st);
		return unsupported(c, p);
	}
	if (journal_knob(DAMON_ADMIN "/nr_kdamonds") < 0 || write_file(DAMON_ADMIN "/nr_kdamonds", "1", 1) < 0) {
		c->err = errno;
		return -1;
	}
	const char *K = DAMON_ADMIN "/0", *C = DAMON_ADMIN "/0/contexts/0";
	long ret = -1;
	int on = 0;
	struct damon_hot h = {.addr = (const volatile char *)(uintptr_t)hot, .len = hot_len};
	pthread_t ht;
	int hot_started = 0;
	snprintf(p, sizeof p, "%s/contexts/nr_contexts", K);
	if (damon_put(p, "1") < 0)
		goto fail;
	snprintf(p, sizeof p, "%s/avail_operations", C);
	if (read_small_file(p, v, sizeof v) < 0)
		goto fail;
	if (!strstr(v, "vaddr")) {
		v[strcspn(v, "\n")] = 0;
		snprintf(p, sizeof p, "DAMON's virtual-address operations are not built in (CONFIG_DAMON_VADDR; avail_operations: %s)", v);
		unsupported(c, p);
		goto out;
	}
	/* ops updates (damon_va_update) would replace the range with the three regions of the whole process:
	 * none happens while the op runs */
	uint64_t update = (aggrs + 2) * aggr * 2 + 1000000;
	struct {
		const char *f;
		uint64_t v;
	} attrs[] = {{"operations", 0},
	             {"monitoring_attrs/intervals/sample_us", sample},
	             {"monitoring_attrs/intervals/aggr_us", aggr},
	             {"monitoring_attrs/intervals/update_us", update},
	             {"monitoring_attrs/nr_regions/max", maxr},
	             {"monitoring_attrs/nr_regions/min", minr},
	             {"targets/nr_targets", 1},
	             {"targets/0/pid_target", (uint64_t)getpid()},
	             {"targets/0/regions/nr_regions", 1},
	             {"targets/0/regions/0/start", a},
	             {"targets/0/regions/0/end", a + len},
	             {"schemes/nr_schemes", 1},
	             {"schemes/0/action", 0},
	             {"schemes/0/access_pattern/sz/min", 0},
	             {"schemes/0/access_pattern/sz/max", UINT64_MAX},
	             {"schemes/0/access_pattern/nr_accesses/min", 0},
	             {"schemes/0/access_pattern/nr_accesses/max", UINT32_MAX},
	             {"schemes/0/access_pattern/age/min", 0},
	             {"schemes/0/access_pattern/age/max", UINT32_MAX}};
	for (size_t k = 0; k < sizeof attrs / sizeof attrs[0]; k++) {
		snprintf(p, sizeof p, "%s/%s", C, attrs[k].f);
		int r = !strcmp(attrs[k].f, "operations")       ? damon_put(p, "vaddr")
		        : !strcmp(attrs[k].f, "schemes/0/action") ? damon_put(p, "stat")
		                                                   : damon_put(p, "%" PRIu64, attrs[k].v);
		if (r < 0)
			goto fail;
	}
	if (hot_len) {
		if (pthread_create(&ht, NULL, damon_hot_main, &h) != 0)
			goto fail;
		hot_started = 1;
	}
	snprintf(p, sizeof p, "%s/state", K);
	if (journal_knob(p) < 0 || damon_put(p, "on") < 0)
		goto fail;
	on = 1;
	/* aggrs aggregation intervals, then the regions of the next aggregation's end (update_schemes_tried_regions
	 * waits for the scheme to be applied there, after the merge and before the reset) */
	struct timespec ts = {(time_t)(aggrs * aggr / 1000000), (long)(aggrs * aggr % 1000000) * 1000};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
	/* A region list can come back empty when the request meets the scheme's apply in a state that records no
	 * region; every region of the target matches the scheme, so an empty list is never the answer: ask again. */
	struct buf rx = {0};
	int n = 0;
	for (int attempt = 0; attempt < 5 && n == 0; attempt++) {
		snprintf(p, sizeof p, "%s/state", K);
		if (damon_put(p, "update_schemes_tried_regions") < 0) {
			free(rx.p);
			goto fail;
		}
		snprintf(p, sizeof p, "%s/schemes/0/tried_regions", C);
		bclear(&rx);
		n = damon_read_regions(&rx, p);
	}
	bputs(c->x, rx.p);
	free(rx.p);
	bprintf(c->x, ",\"nr_regions\":%d", n);
	ret = 0;
	goto out;
fail:
	c->err = errno;
out:
	if (hot_started) {
		h.stop = 1;
		pthread_join(ht, NULL);
	}
	snprintf(p, sizeof p, "%s/state", K);
	if (on)
		damon_put(p, "off");
	/* the kdamond is gone once state reads off; then the directory can go */
	for (int k = 0; on && k < 1000; k++) {
		if (read_small_file(p, v, sizeof v) > 0 && !strncmp(v, "off", 3))
			break;
		struct timespec w = {0, 1000000};
		nanosleep(&w, NULL);
	}
	write_file(DAMON_ADMIN "/nr_kdamonds", "0", 1);
	return ret;
}

/* ------------------------------------------------------------------ */
/* op table                                                            */

enum { W_ANY, W_GLOBAL };

struct opdef {
	const char *name;
	long (*fn)(struct ctx *);
	int where;
};

static long h_spawn(struct ctx *c);
/* The worker's side of a new process (spawned or forked): its ends of the two pipes become the child's slot; the
 * result line gets its pid and index. */
static long add_child(struct ctx *c, pid_t pid, int in[2], int out[2], const char *name)
{
	close(in[0]);
	close(out[1]);
	int k = ++g_nchildren;
	struct child *ch = &g_children[k];
	ch->pid = pid;
	ch->wfd = in[1];
	ch->rd = calloc(1, sizeof *ch->rd);
	ch->rd->fd = out[0];
	snprintf(ch->name, sizeof ch->name, "%s", name ? name : "");
	bprintf(c->x, ",\"pid\":%d,\"index\":%d", pid, k);
	return 0;
}

static long h_fork(struct ctx *c);

static const struct opdef g_ops[] = {
    {"sysfs", h_sysfs, W_GLOBAL},
    {"hugetlb_pool", h_hugetlb_pool, W_GLOBAL},
    {"spawn", h_spawn, W_GLOBAL},
    {"fork", h_fork, W_ANY},
    {"meminfo", h_meminfo, W_GLOBAL},
    {"vmstat", h_vmstat, W_GLOBAL},
    {"swap", h_swap, W_GLOBAL},
    {"cgroup", h_cgroup, W_GLOBAL},
    {"cgroup_enter", h_cgroup_enter, W_GLOBAL},
    {"cgroup_stat", h_cgroup_stat, W_GLOBAL},
    {"damon", h_damon, W_GLOBAL},
    {"ping", h_ping, W_ANY},
    {"mmap", h_mmap, W_ANY},
    {"memfd", h_memfd, W_ANY},
    {"open", h_open, W_ANY},
    {"munmap", h_munmap, W_ANY},
    {"mprotect", h_mprotect, W_ANY},
    {"madvise", h_madvise, W_ANY},
    {"process_madvise", h_process_madvise, W_ANY},
    {"touch", h_touch, W_ANY},
    {"peek", h_peek, W_ANY},
    {"pagemap", h_pagemap, W_ANY},
    {"smaps", h_smaps, W_ANY},
    {"numa_maps", h_numa_maps, W_ANY},
    {"set_mempolicy", h_set_mempolicy, W_ANY},
    {"get_mempolicy", h_get_mempolicy, W_ANY},
    {"mbind", h_mbind, W_ANY},
    {"migrate_pages", h_migrate_pages, W_ANY},
    {"move_pages", h_move_pages, W_ANY},
    {"setuid", h_setuid, W_ANY},
    {"set_dumpable", h_set_dumpable, W_ANY},
    {"info", h_info, W_ANY},
    {"maps", h_maps, W_ANY},
    {"read", h_read, W_ANY},
    {"userfaultfd", h_userfaultfd, W_ANY},
    {"uffdio_api", h_uffdio_api, W_ANY},
    {"uffdio_register", h_uffdio_register, W_ANY},
    {"uffdio_unregister", h_uffdio_unregister, W_ANY},
    {"uffdio_copy", h_uffdio_copy, W_ANY},
    {"uffdio_zeropage", h_uffdio_zeropage, W_ANY},
    {"uffdio_wake", h_uffdio_wake, W_ANY},
    {"uffdio_writeprotect", h_uffdio_writeprotect, W_ANY},
    {"uffdio_continue", h_uffdio_continue, W_ANY},
    {"uffdio_poison", h_uffdio_poison, W_ANY},
    {"uffdio_move", h_uffdio_move, W_ANY},
    {"uffd_read", h_uffd_read, W_ANY},
    /* "thread" and "join" are handled by the dispatcher */
};

static const struct opdef *find_op(const char *name)
{
	for (size_t k = 0; k < sizeof g_ops / sizeof g_ops[0]; k++)
		if (!strcmp(g_ops[k].name, name))
			return &g_ops[k];
	return NULL;
}

/* execute an op inside this process. `line` is consumed (ownership taken). */
static void local_exec(struct buf *line)
{
	struct job *j = calloc(1, sizeof *j);
	j->line_store = *line;
	memset(line, 0, sizeof *line);
	if (tokenize(j->line_store.p, &j->op) < 0)
		die_invalid(0, "cannot tokenize line");
	struct op *op = &j->op;
	if (parse_u64(sval(op, "i"), &op->i) < 0)
		die_invalid(0, "missing i");
	if (!strcmp(op->name, "thread")) {
		op_thread(op);
		free_job(j);
		return;
	}
	if (!strcmp(op->name, "join")) {
		op_join(op);
		free_job(j);
		return;
	}
	const struct opdef *d = find_op(op->name);
	if (!d)
		die_invalid(op->i, "unknown op");
	j->fn = d->fn;
	uint64_t t = d->where == W_GLOBAL ? 0 : u64(op, "thread", 0, 0);
	if (t == 0) {
		run_job(j);
		emit(j->out.p, j->out.n);
		free_job(j);
		return;
	}
	if (t > (uint64_t)g_nthr || !g_thr[t].used) {
		emit_simple(op->i, -1, ESRCH, ",\"unsupported\":\"no such thread\"", 0);
		free_job(j);
		return;
	}
	struct wthread *w = &g_thr[t];
	/* async=1 (meant for touch; accepted for any op, e.g. an madvise that raises a
	 * UFFD_EVENT_REMOVE and blocks until the message is read): queued, answered
	 * once it has settled (settle_async); only a caught signal is kept (reported
	 * by join) */
	j->async = u64(op, "async", 0, 0) != 0;
	uint64_t i = op->i;
	pthread_mutex_lock(&w->mu);
	uint64_t ord = w->queued++;
	if (w->tail)
		w->tail->next = j;
	else
		w->head = j;
	w->tail = j;
	pthread_cond_signal(&w->cv_work);
	if (j->async) {
		pthread_mutex_unlock(&w->mu);
		char b[64];
		int n = snprintf(b, sizeof b, "{\"i\":%" PRIu64 ",\"ret\":0}\n", i);
		emit(b, n);
		/* answered first, so that a kill the op brings shows on the next op, as before */
		settle_async(w, ord);
		return;
	}
	while (!j->done)
		pthread_cond_wait(&w->cv_done, &w->mu);
	pthread_mutex_unlock(&w->mu);
	emit(j->out.p, j->out.n);
	free_job(j);
}

/* ------------------------------------------------------------------ */
/* spawn (worker only)                                                 */

/* What a new child process needs first (spawn, fork): to be made by the main
 * process, a free slot, and its two pipes. 0, or -1 with c->err set. */
static int child_pipes(struct ctx *c, const char *op, int in[2], int out[2])
{
	if (!g_is_main) {
		char why[64];
		snprintf(why, sizeof why, "%s only in the main process", op);
		die_invalid(c->op->i, why);
	}
	if (g_nchildren + 1 >= MAX_PROCS) {
		c->err = EAGAIN;
		return -1;
	}
	if (pipe2(in, O_CLOEXEC) < 0) {
		c->err = errno;
		return -1;
	}
	if (pipe2(out, O_CLOEXEC) < 0) {
		c->err = errno;
		close(in[0]), close(in[1]);
		return -1;
	}
	return 0;
}

static long h_spawn(struct ctx *c)
{
	char *name = pstr(c->op, "name", 0);
	int in[2], out[2];
	if (child_pipes(c, "spawn", in, out) < 0)
		return -1;
	pid_t parent = getpid();
	/* vfork, not fork: the worker's mm is never duplicated, so a spawn leaves
	 * its anonymous pages exclusive (fork would clear PageAnonExclusive, and
	 * UFFDIO_MOVE of them would then fail with EBUSY), and a userfaultfd with
	 * UFFD_FEATURE_EVENT_FORK sees no fork event (fork would block until
	 * it was read). The child only makes syscalls before execv. */
	pid_t pid = vfork();
	if (pid < 0) {
		c->err = errno;
		return -1;
	}
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
		dup2(in[0], 0);
		dup2(out[1], 1);
		/* no fd of the worker (e.g. a userfaultfd without O_CLOEXEC) survives into the child,
		 * but the machine lock's: the lock is free only when every process of the run is gone */
		if (g_lock_fd >= 3) {
			if (g_lock_fd > 3)
				syscall(SYS_close_range, 3U, (unsigned)g_lock_fd - 1, 0U);
			syscall(SYS_close_range, (unsigned)g_lock_fd + 1, ~0U, 0U);
			fcntl(g_lock_fd, F_SETFD, 0);
		} else
			syscall(SYS_close_range, 3U, ~0U, 0U);
		char *argv[] = {"memtwin-native", "--child", NULL};
		execv("/proc/self/exe", argv);
		_exit(127);
	}
	return add_child(c, pid, in, out, name);
}

/* ------------------------------------------------------------------ */
/* fork (worker only)                                                  */

static void serve_stdin(void) __attribute__((noreturn));

/*
 * fork: a child with a copy of the worker's address space (copy-on-write),
 * served like a spawned process. Only the worker forks: a spawned process
 * talks to the worker through its own two pipes, and a process it forked
 * would have none. The child keeps only the forking thread (threads made
 * with `thread` are the parent's), no userfaultfd handle of the parent's,
 * and none of the pipes to the other processes (each must see EOF when the
 * worker closes it).
 */
static long h_fork(struct ctx *c)
{
	char *name = pstr(c->op, "name", 0);
	int in[2], out[2];
	if (child_pipes(c, "fork", in, out) < 0)
		return -1;
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0) {
		c->err = errno;
		close(in[0]), close(in[1]), close(out[0]), close(out[1]);
		return -1;
	}
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
		dup2(in[0], 0);
		dup2(out[1], 1);
		close(in[0]), close(in[1]), close(out[0]), close(out[1]);
		for (int k = 1; k <= g_nchildren; k++)
			if (!g_children[k].dead) {
				close(g_children[k].wfd);
				close(g_children[k].rd->fd);
			}
		for (int k = 0; k < MAX_UFFD; k++)
			if (g_uffd[k]) {
				close(g_uffd[k] - 1);
				g_uffd[k] = 0;
			}
		if (g_pagemap_fd >= 0) {
			close(g_pagemap_fd); /* the parent's /proc/self/pagemap */
			g_pagemap_fd = -1;
		}
		memset(&g_thr[1], 0, sizeof g_thr[1] * MAX_THREADS);
		g_nthr = 0;
		g_nchildren = 0;
		g_is_main = 0;
		g_capture = NULL;
		g_out_fd = 1;
		g_parent = parent;
		serve_stdin();
	}
	return add_child(c, pid, in, out, name);
}

/* ------------------------------------------------------------------ */
/* startup layout                                                      */

static void fill_holes(int fd)
{
	static char txt[1 << 17];
	static uint64_t st[4096], en[4096];
	if (read_small_file("/proc/self/maps", txt, sizeof txt) < 0)
		return;
	if (getenv("MEMTWIN_DEBUG_LAYOUT"))
		fprintf(stderr, "maps before fill:\n%s", txt);
	int n = 0;
	/* the arena was the last big mapping, so it is the lowest one of the mmap area */
	uint64_t low_limit = (uint64_t)(uintptr_t)g_arena, stack = UINT64_MAX;
	char *save = NULL;
	for (char *l = strtok_r(txt, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		char *e;
		uint64_t s = strtoull(l, &e, 16), en_ = strtoull(e + 1, NULL, 16);
		if (strstr(l, "[stack]"))
			stack = s;
		if (n < 4096) {
			st[n] = s;
			en[n] = en_;
			n++;
		}
	}
	uint64_t prev_end = 0;
	int started = 0;
	for (int k = 0; k < n; k++) {
		if (st[k] < low_limit || st[k] >= stack)
			continue;
		if (started && st[k] > prev_end) {
			void *p = mmap((void *)(uintptr_t)prev_end, st[k] - prev_end, PROT_NONE,
			               fd >= 0 ? MAP_PRIVATE | MAP_FIXED_NOREPLACE
			                       : MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
			               fd, 0);
			if (p == MAP_FAILED)
				fprintf(stderr, "memtwin-native: cannot fill hole %" PRIx64 "-%" PRIx64 ": %s\n", prev_end,
				        st[k], strerrorname_np(errno));
		}
		started = 1;
		prev_end = en[k];
	}
}

static void startup_layout(void)
{
	mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024); /* maximum allowed on 64-bit */
	mallopt(M_ARENA_MAX, 1);
	mallopt(M_TOP_PAD, 4 * 1024 * 1024);
	/* warm up malloc (brk heap); volatile so the compiler keeps it */
	char *volatile warm = malloc(1 << 20);
	warm[0] = 1;
	free(warm);
	size_t asz = MAX_THREADS * STACK_SZ + (MAX_THREADS + 1) * ALT_SZ;
	g_arena = mmap(NULL, asz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (g_arena == MAP_FAILED) {
		perror("mmap arena");
		_exit(3);
	}
	madvise(g_arena, asz, MADV_NOHUGEPAGE);
	setup_altstack(0);
	/* Fill every hole between our mappings in the mmap area with file-backed
	 * PROT_NONE mappings, so the kernel's top-down allocator cannot place a
	 * script mapping above the fence; then map the fence: a file-backed
	 * PROT_NONE page (never merges with anonymous mappings) directly below
	 * the lowest mapping. */
	int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
	fill_holes(fd);
	g_fence = MAP_FAILED;
	if (fd >= 0) {
		g_fence = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE, fd, 0);
		close(fd);
	}
	if (g_fence == MAP_FAILED)
		g_fence = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = fault_handler;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, NULL);
	sigaction(SIGBUS, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	/* self-check: a probe mapping must land directly below the fence */
	void *probe = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (probe != MAP_FAILED) {
		if ((char *)probe + 4096 != g_fence)
			fprintf(stderr, "memtwin-native: warning: probe mapping %p not directly below fence %p\n", probe,
			        (void *)g_fence);
		munmap(probe, 4096);
	}
	g_thr[0].used = 1;
}

/* ------------------------------------------------------------------ */
/* serving loops                                                       */

static int child_main(void)
{
	g_out_fd = 1;
	g_parent = getppid();
	startup_layout();
	serve_stdin();
}

/* A spawned or forked process: run each line from the worker, acknowledged with "+" first. */
static void serve_stdin(void)
{
	static struct lreader lr = {.fd = 0};
	struct buf line = {0};
	while (lr_get(&lr, &line)) {
		if (!line.n)
			continue;
		/* read: the worker now knows the op started here (forward()) */
		write_all(g_out_fd, "+\n", 2);
		local_exec(&line);
	}
	_exit(0);
}

static int is_addr_key(const char *k)
{
	return !strcmp(k, "addr") || !strcmp(k, "hot_addr") || !strcmp(k, "pages") || !strcmp(k, "iov") || !strcmp(k, "dst") || !strcmp(k, "src");
}

/* rewrite A<h>+<off> to R<abs> and add tpid= for target=; returns 0 or -1 */
static int rewrite_line(const char *in, struct buf *out, uint64_t *i_out, uint64_t *proc, char *name, size_t nsz,
                        uint64_t *handle, int *has_handle)
{
	struct buf tmp = {0};
	bputs(&tmp, in);
	struct op op;
	if (tokenize(tmp.p, &op) < 0) {
		free(tmp.p);
		return -1;
	}
	snprintf(name, nsz, "%s", op.name);
	bclear(out);
	bputs(out, op.name);
	*i_out = 0;
	*proc = 0;
	*has_handle = 0;
	if (parse_u64(sval(&op, "i"), i_out) < 0) {
		free(tmp.p);
		return -1;
	}
	for (int j = 0; j < op.nk; j++) {
		bprintf(out, " %s=", op.k[j]);
		if (is_addr_key(op.k[j])) {
			const char *p = op.v[j];
			while (*p) {
				if (*p == 'A') {
					uint64_t a;
					if (parse_addr_at(&p, &a) < 0) {
						free(tmp.p);
						return -1;
					}
					bprintf(out, "R%" PRIu64, a);
				} else
					bput(out, p++, 1);
			}
		} else
			bputs(out, op.v[j]);
		if (!strcmp(op.k[j], "in") && parse_u64(op.v[j], proc) < 0) {
			free(tmp.p);
			return -1;
		}
		if (!strcmp(op.k[j], "h") && parse_u64(op.v[j], handle) == 0)
			*has_handle = 1;
		if (!strcmp(op.k[j], "target")) {
			uint64_t t;
			if (parse_u64(op.v[j], &t) < 0 || t > (uint64_t)g_nchildren) {
				free(tmp.p);
				return -1;
			}
			bprintf(out, " tpid=%d", t ? g_children[t].pid : getpid());
		}
	}
	free(tmp.p);
	return 0;
}

/* the decimal value of " key=" in a protocol line, or -1 */
static int64_t line_key(const char *line, const char *key)
{
	char k[64];
	snprintf(k, sizeof k, " %s=", key);
	const char *p = strstr(line, k);
	uint64_t v;
	if (!p)
		return -1;
	p += strlen(k);
	char d[32];
	size_t n = strcspn(p, " ");
	if (n >= sizeof d)
		return -1;
	memcpy(d, p, n);
	d[n] = 0;
	return parse_u64(d, &v) == 0 && v <= INT64_MAX ? (int64_t)v : -1;
}

/* a spawned process has exited: reap it and keep how it ended */
static void reap(struct child *ch)
{
	int st = 0;
	close(ch->wfd);
	while (waitpid(ch->pid, &st, 0) < 0 && errno == EINTR)
		;
	ch->status = st;
	ch->dead = 1;
}

/*
 * Send one line to spawned process k and read its answer (with its newline)
 * into res. The process first acknowledges that it has read the line ("+"),
 * so a death is placed exactly: 1 = it died before reading the line (e.g. an
 * OOM kill caused by an earlier op of another process: the kernel sends that
 * SIGKILL before the faulting op returns, and a process with SIGKILL pending
 * reads nothing more), 2 = it died while running it. 0 = answered.
 */
static int forward(int k, struct buf *line, struct buf *res)
{
	struct child *ch = &g_children[k];
	if (ch->dead)
		return 1;
	struct buf l = {0};
	int st = 0;
	if (write_all(ch->wfd, line->p, line->n) < 0 || !lr_get(ch->rd, &l))
		st = 1;
	else if (strcmp(l.p, "+") && (bput(res, l.p, l.n), bputs(res, "\n"), 1))
		; /* no acknowledgement: the answer itself */
	else if (!lr_get(ch->rd, &l))
		st = 2;
	else {
		bput(res, l.p, l.n);
		bputs(res, "\n");
	}
	free(l.p);
	if (st)
		reap(ch);
	return st;
}

/* whether spawned process k still runs (asked with a ping; op index i) */
static int child_alive(int k, uint64_t i)
{
	struct buf l = {0}, r = {0};
	bprintf(&l, "ping i=%" PRIu64 " in=%d thread=0\n", i, k);
	int st = forward(k, &l, &r);
	free(l.p);
	free(r.p);
	return st == 0;
}

/*
 * The answer for op i of spawned process k, which is gone: killed by SIGKILL
 * (the OOM killer's signal) while it ran this op (during) -> "signal", before
 * -> "killed"; any other end is the executor's own failure (ECHILD, "error").
 */
static void death_line(struct buf *res, uint64_t i, int k, int during)
{
	int st = g_children[k].status;
	if (WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) {
		bprintf(res, "{\"i\":%" PRIu64 ",\"ret\":-1,\"%s\":\"SIGKILL\",\"ns\":0}\n", i, during ? "signal" : "killed");
		return;
	}
	char how[32];
	if (WIFSIGNALED(st))
		signame(WTERMSIG(st), how);
	else
		snprintf(how, sizeof how, "status %d", WEXITSTATUS(st));
	bprintf(res, "{\"i\":%" PRIu64 ",\"ret\":-1,\"errno\":\"ECHILD\",\"error\":\"process %d died (%s)\",\"ns\":0}\n", i,
	        k, how);
}

/* The script's main thread runs where the simulator puts it: on node 0's first CPU (the lowest CPU this
 * process may use when node 0 has none it may use). Left to the scheduler, the worker moves between CPUs, and
 * what an op sees then depends on where the previous op ran: MADV_PAGEOUT, MADV_COLD and MADV_FREE drain only
 * their own CPU's LRU folio batches, so pages a touch left in another CPU's batch cannot be isolated and stay
 * mapped. Threads made by `thread` without a `cpu` and spawned processes inherit the mask, as the simulator's
 * threads and processes inherit their creator's CPU. */
static void pin_main_thread(void)
{
	cpu_set_t allowed, one;
	if (sched_getaffinity(0, sizeof allowed, &allowed) < 0)
		return;
	int cpu = -1;
	char list[4096] = "";
	FILE *f = fopen("/sys/devices/system/node/node0/cpulist", "r");
	if (f) {
		if (!fgets(list, sizeof list, f))
			list[0] = 0;
		fclose(f);
	}
	/* "0-3,8-11": the first listed CPU this process may use */
	for (char *p = list; cpu < 0 && *p >= '0' && *p <= '9';) {
		long a = strtol(p, &p, 10), b = a;
		if (*p == '-')
			b = strtol(p + 1, &p, 10);
		for (long c = a; c <= b && c < CPU_SETSIZE && cpu < 0; c++)
			if (CPU_ISSET(c, &allowed))
				cpu = (int)c;
		if (*p != ',')
			break;
		p++;
	}
	for (int c = 0; c < CPU_SETSIZE && cpu < 0; c++)
		if (CPU_ISSET(c, &allowed))
			cpu = c;
	if (cpu < 0)
		return;
	CPU_ZERO(&one);
	CPU_SET(cpu, &one);
	if (sched_setaffinity(0, sizeof one, &one) < 0)
		fprintf(stderr, "memtwin-native: warning: cannot pin the main thread to CPU %d: %s\n", cpu, strerror(errno));
}

static int worker_main(void)
{
	g_is_main = 1;
	g_out_fd = 1;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	pin_main_thread();
	startup_layout();
	g_nvs = vmstat_read(g_vs_name, g_vs_val, MAX_VMSTAT);
	if (g_nvs < 0)
		g_nvs = 0;
	static struct lreader lr = {.fd = 0};
	struct buf line = {0}, rw = {0}, res = {0};
	uint64_t nops = 0, nerr = 0;
	while (lr_get(&lr, &line)) {
		char *s = line.p;
		while (*s == ' ' || *s == '\t')
			s++;
		if (!*s || *s == '#')
			continue;
		uint64_t i, proc, handle;
		int has_handle;
		char name[64];
		if (rewrite_line(s, &rw, &i, &proc, name, sizeof name, &handle, &has_handle) < 0) {
			struct buf b = {0};
			bprintf(&b, "{\"i\":%" PRIu64 ",\"invalid\":", i);
			bjson_str(&b, s);
			bputs(&b, "}\n");
			write_all(1, b.p, b.n);
			_exit(2);
		}
		const struct opdef *d = find_op(name);
		int global = d && d->where == W_GLOBAL;
		int64_t target = line_key(rw.p, "target");
		bclear(&res);
		if (proc > 0 && proc <= (uint64_t)g_nchildren && global && !child_alive((int)proc, i))
			death_line(&res, i, (int)proc, 0); /* an op "in" a process that is gone */
		else if (target > 0 && target <= g_nchildren && !child_alive((int)target, i))
			bprintf(&res, "{\"i\":%" PRIu64 ",\"ret\":-1,\"errno\":\"ESRCH\",\"ns\":0}\n", i);
		else if (proc == 0 || global) {
			/* run locally, capturing the result line */
			g_capture = &res;
			local_exec(&rw);
			g_capture = NULL;
		} else {
			if (proc > (uint64_t)g_nchildren) {
				struct buf b = {0};
				bprintf(&b, "{\"i\":%" PRIu64 ",\"invalid\":\"no such process\"}\n", i);
				write_all(1, b.p, b.n);
				_exit(2);
			}
			bputs(&rw, "\n");
			int st = forward((int)proc, &rw, &res);
			/* a join runs nothing that could fault: a process that died meanwhile was killed before it */
			if (st)
				death_line(&res, i, (int)proc, st == 2 && strcmp(name, "join"));
		}
		write_all(1, res.p, res.n);
		nops++;
		if (strstr(res.p, "\"invalid\":"))
			_exit(2);
		if (!strncmp(res.p, "{\"i\":", 5)) {
			char *r = strstr(res.p, ",\"ret\":");
			if (r && !strncmp(r + 7, "-1", 2) && (r[9] == ',' || r[9] == '}'))
				nerr++;
		}
		if (!strcmp(name, "mmap") && has_handle && handle < MAX_HANDLES) {
			char *a = strstr(res.p, "\"addr\":");
			char *r = strstr(res.p, ",\"ret\":0");
			if (a && r) {
				g_handles[handle] = strtoull(a + 7, NULL, 10);
				g_handle_ok[handle] = 1;
			} else
				g_handle_ok[handle] = 0;
		}
	}
	/* end of script: shut down children */
	for (int k = 1; k <= g_nchildren; k++)
		if (!g_children[k].dead)
			close(g_children[k].wfd);
	for (int k = 1; k <= g_nchildren; k++)
		if (!g_children[k].dead)
			waitpid(g_children[k].pid, NULL, 0);
	char b[128];
	int n = snprintf(b, sizeof b, "{\"summary\":{\"ops\":%" PRIu64 ",\"errors\":%" PRIu64 "}}\n", nops, nerr);
	write_all(1, b, n);
	_exit(0);
}

/* ------------------------------------------------------------------ */
/* guardian                                                            */

static volatile sig_atomic_t g_stop;
static volatile pid_t g_worker;

static void guardian_sig(int sig)
{
	g_stop = sig;
	if (g_worker > 0)
		kill(g_worker, SIGKILL);
}

static int guardian_main(void)
{
	/* the guardian outlives memtwin if it must: a closed stderr must not kill it mid-restore */
	signal(SIGPIPE, SIG_IGN);
	machine_lock(-1);
	/* a run before this one may have been killed with its guardian: undo what it left */
	journal_replay_stale(stderr, "memtwin-native: restore: ", 0);
	journal_begin();
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	sigset_t all, old;
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, &old);
	pid_t w = fork();
	if (w < 0) {
		perror("fork");
		return 3;
	}
	if (w == 0) {
		sigprocmask(SIG_SETMASK, &old, NULL);
		worker_main();
		_exit(0);
	}
	g_worker = w;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = guardian_sig;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigprocmask(SIG_SETMASK, &old, NULL);

	int st = 0;
	while (waitpid(w, &st, 0) < 0 && errno == EINTR)
		;
	/* reap spawned children re-parented to us */
	for (;;) {
		pid_t r = waitpid(-1, NULL, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			break;
	}
	journal_restore_own();
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	if (WIFSIGNALED(st))
		return 128 + WTERMSIG(st);
	return 1;
}

/* memtwin-native --restore [--lock-timeout-ms=N]: replay what dead runs left */
static int restore_main(int argc, char **argv)
{
	int timeout = -1;
	for (int k = 2; k < argc; k++) {
		if (!strncmp(argv[k], "--lock-timeout-ms=", 18))
			timeout = atoi(argv[k] + 18);
		else {
			fprintf(stderr, "memtwin-native: --restore: unknown option %s\n", argv[k]);
			return 2;
		}
	}
	signal(SIGPIPE, SIG_IGN); /* finish the replay even if nobody reads the report */
	if (machine_lock(timeout) < 0) {
		fprintf(stderr, "memtwin-native: another executor still holds %s after %d ms; its journal is replayed "
		                "when it is done (or run memtwin restore again)\n", MACHINE_LOCK, timeout);
		return 3;
	}
	return journal_replay_stale(stdout, "", 1);
}

int main(int argc, char **argv)
{
	const char *late = getenv("MEMTWIN_TEST_ASYNC_LATE_US");
	if (late)
		g_async_late_ns = strtoull(late, NULL, 10) * 1000;
	if (argc > 1 && !strcmp(argv[1], "--child"))
		return child_main();
	if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		printf("usage: memtwin-native < ops   (line protocol, see native/PROTOCOL.md)\n"
		       "       memtwin-native --restore [--lock-timeout-ms=N]   (undo what killed runs left; PROTOCOL.md)\n");
		return 0;
	}
	if (argc > 1 && !strcmp(argv[1], "--restore"))
		return restore_main(argc, argv);
	return guardian_main();
}
