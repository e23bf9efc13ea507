/*
 * memtwin-calibrate: measure real-host costs of Linux memory-management
 * operations and print them as ONE JSON object on stdout (progress on stderr).
 *
 * Build: make -C native (builds native/build/memtwin-calibrate)
 * Run (needs root for sysfs knobs, hugetlb pools, compact_memory, pagemap PFNs):
 *   ./native/build/memtwin-calibrate > raw.json   (or: memtwin calibrate --out profile.json)
 *
 * Method common to all measurements: one warm-up run (discarded), then
 * REPEATS (>= 7) timed runs; each run times a batch of operations with
 * CLOCK_MONOTONIC and divides by the number of units in the batch; the JSON
 * gives min / median / max over the repeats of that per-unit cost.  See
 * native/calibrate.md for per-measurement method and caveats.
 *
 * Every sysfs knob changed (THP enabled/defrag, hugepages-2048kB enabled,
 * nr_hugepages 2M/1G, khugepaged max_ptes_none/pages_to_scan/
 * scan_sleep_millisecs) is restored at exit, on error exits and on
 * SIGINT/SIGTERM/SIGHUP/SIGQUIT and fatal signals.
 * Peak memory use stays below ~4.5 GiB.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <cpuid.h>
#include <dirent.h>
#include <dlfcn.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/file.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>
#include <linux/userfaultfd.h>
#include <sys/stat.h>
#include <sys/swap.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include "journal.h"

/* Constants missing from the 6.1 headers / older glibc. */
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif
#ifndef MAP_HUGE_SHIFT
#define MAP_HUGE_SHIFT 26
#endif
#ifndef MAP_HUGE_2MB
#define MAP_HUGE_2MB (21 << MAP_HUGE_SHIFT)
#endif
#ifndef MAP_HUGE_1GB
#define MAP_HUGE_1GB (30 << MAP_HUGE_SHIFT)
#endif
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

#define REPEATS 9
#define KB (1024UL)
#define MB (1024UL * KB)
#define GB (1024UL * MB)
#define PG 4096UL
#define HPG (2 * MB)

/* ------------------------------------------------------------------ */
/* utilities                                                           */
/* ------------------------------------------------------------------ */

static inline uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void progress(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "[calibrate] ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
}

static volatile uint64_t sink; /* defeats dead-code elimination */

static int read_file(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -1;
	buf[n] = 0;
	return (int)n;
}

static int write_file(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY);
	if (fd < 0)
		return -1;
	ssize_t n = write(fd, s, strlen(s));
	close(fd);
	return n == (ssize_t)strlen(s) ? 0 : -1;
}

static long read_long(const char *path)
{
	char b[64];
	if (read_file(path, b, sizeof b) < 0)
		return -1;
	return strtol(b, NULL, 10);
}

/* Selected value of a "[a] b c" sysfs file. */
static int read_bracket(const char *path, char *out, size_t len)
{
	char b[256];
	if (read_file(path, b, sizeof b) < 0)
		return -1;
	char *l = strchr(b, '['), *r = l ? strchr(l, ']') : NULL;
	if (!l || !r || (size_t)(r - l - 1) >= len)
		return -1;
	memcpy(out, l + 1, r - l - 1);
	out[r - l - 1] = 0;
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

typedef struct {
	double min, median, max;
} stats_t;

static stats_t stats_of(const double *v, int n)
{
	double s[64];
	memcpy(s, v, n * sizeof(double));
	qsort(s, n, sizeof(double), cmp_double);
	stats_t r = {s[0], n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2, s[n - 1]};
	return r;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;
static inline uint64_t rnd(void)
{
	uint64_t x = rng_state;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return rng_state = x;
}

/* ------------------------------------------------------------------ */
/* sysfs knob save / restore                                           */
/* ------------------------------------------------------------------ */

#define NKNOBS 8
static struct knob {
	const char *path;
	char orig[64];
	int saved;   /* orig holds a valid value */
	int changed; /* we wrote something */
} knobs[NKNOBS] = {
	{"/sys/kernel/mm/transparent_hugepage/enabled", "", 0, 0},
	{"/sys/kernel/mm/transparent_hugepage/defrag", "", 0, 0},
	{"/sys/kernel/mm/transparent_hugepage/hugepages-2048kB/enabled", "", 0, 0},
	{"/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", "", 0, 0},
	{"/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages", "", 0, 0},
	{"/sys/kernel/mm/transparent_hugepage/khugepaged/max_ptes_none", "", 0, 0},
	{"/sys/kernel/mm/transparent_hugepage/khugepaged/pages_to_scan", "", 0, 0},
	{"/sys/kernel/mm/transparent_hugepage/khugepaged/scan_sleep_millisecs", "", 0, 0},
};
enum { K_THP_EN, K_THP_DEFRAG, K_THP_2M_EN, K_NR_2M, K_NR_1G, K_KHP_MAX_NONE, K_KHP_PAGES, K_KHP_SLEEP };

static void save_knobs(void)
{
	for (int i = 0; i < NKNOBS; i++) {
		int ok;
		if (i <= K_THP_2M_EN) {
			ok = read_bracket(knobs[i].path, knobs[i].orig, sizeof knobs[i].orig) == 0;
		} else {
			ok = read_file(knobs[i].path, knobs[i].orig, sizeof knobs[i].orig) >= 0;
			char *nl = strchr(knobs[i].orig, '\n');
			if (nl)
				*nl = 0;
		}
		knobs[i].saved = ok;
	}
}

static int set_knob(int i, const char *val)
{
	if (!knobs[i].saved)
		return -1;
	knobs[i].changed = 1;
	return write_file(knobs[i].path, val);
}

/* async-signal-safe: only open/write/close on precomputed strings */
static void restore_knobs(void)
{
	for (int i = NKNOBS - 1; i >= 0; i--) {
		if (knobs[i].saved && knobs[i].changed) {
			int fd = open(knobs[i].path, O_WRONLY);
			if (fd >= 0) {
				ssize_t r = write(fd, knobs[i].orig, strlen(knobs[i].orig));
				(void)r;
				close(fd);
			}
			knobs[i].changed = 0;
		}
	}
}

static void on_signal(int sig)
{
	restore_knobs();
	signal(sig, SIG_DFL);
	raise(sig);
}

static void install_restore_handlers(void)
{
	atexit(restore_knobs);
	int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL};
	for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_handler = on_signal;
		sigemptyset(&sa.sa_mask);
		sigaction(sigs[i], &sa, NULL);
	}
}

/* Ask for `want` pages in a hugetlb pool (on top of what was there). */
static long hugetlb_reserve(int knob, long want)
{
	long orig = strtol(knobs[knob].orig, NULL, 10);
	char b[32];
	snprintf(b, sizeof b, "%ld", orig + want);
	if (set_knob(knob, b) < 0)
		return 0;
	long got = read_long(knobs[knob].path) - orig;
	return got < 0 ? 0 : got;
}

static void hugetlb_release(int knob)
{
	if (knobs[knob].changed) {
		write_file(knobs[knob].path, knobs[knob].orig);
		knobs[knob].changed = 0;
	}
}

/* ------------------------------------------------------------------ */
/* JSON output                                                         */
/* ------------------------------------------------------------------ */

static char *out;
static size_t out_len, out_cap;
static int n_costs;

static void outf(const char *fmt, ...)
{
	va_list ap;
	for (;;) {
		va_start(ap, fmt);
		int n = vsnprintf(out + out_len, out_cap - out_len, fmt, ap);
		va_end(ap);
		if (n >= 0 && (size_t)n < out_cap - out_len) {
			out_len += n;
			return;
		}
		out_cap = out_cap * 2 + 4096 + (n > 0 ? n : 0);
		out = realloc(out, out_cap);
		if (!out)
			abort();
	}
}

static void out_str(const char *s)
{
	outf("\"");
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			outf("\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			outf("\\u%04x", *s);
		else
			outf("%c", *s);
	}
	outf("\"");
}

static void begin_cost(const char *name)
{
	outf("%s\n  ", n_costs++ ? "," : "");
	out_str(name);
	outf(": {");
}

/* extra: already-formatted JSON members (",\"k\":v..."), or NULL */
static void add_cost(const char *name, const double *v, int n, const char *unit,
		     const char *method, const char *extra)
{
	stats_t s = stats_of(v, n);
	begin_cost(name);
	outf("\"min\": %.2f, \"median\": %.2f, \"max\": %.2f, \"repeats\": %d, \"unit\": ", s.min,
	     s.median, s.max, n);
	out_str(unit);
	outf(", \"method\": ");
	out_str(method);
	if (extra)
		outf("%s", extra);
	outf("}");
	progress("  %-28s median %10.2f %s (min %.2f max %.2f)", name, s.median, unit, s.min, s.max);
}

static void add_unavailable(const char *name, const char *why)
{
	begin_cost(name);
	outf("\"unavailable\": ");
	out_str(why);
	outf("}");
	progress("  %-28s UNAVAILABLE: %s", name, why);
}

/* ------------------------------------------------------------------ */
/* memory helpers                                                      */
/* ------------------------------------------------------------------ */

/* Anonymous private mapping, 2M-aligned, with the given madvise hint
 * (MADV_NOHUGEPAGE / MADV_HUGEPAGE / 0). Exact VMA = [ret, ret+len). */
static char *map_anon(size_t len, int advice)
{
	size_t big = len + HPG;
	char *p = mmap(NULL, big, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	uintptr_t a = ((uintptr_t)p + HPG - 1) & ~(HPG - 1);
	if (a > (uintptr_t)p)
		munmap(p, a - (uintptr_t)p);
	size_t tail = (uintptr_t)p + big - (a + len);
	if (tail)
		munmap((char *)a + len, tail);
	if (advice && madvise((char *)a, len, advice) != 0) {
		munmap((char *)a, len);
		return NULL;
	}
	return (char *)a;
}

static char *map_hugetlb(size_t len, int sizeflag)
{
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | sizeflag, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

static void touch_write(char *p, size_t len, size_t stride)
{
	for (size_t o = 0; o < len; o += stride)
		p[o] = 1;
}

/* AnonHugePages (bytes) summed over VMAs intersecting [a, a+len). */
static long anon_huge_bytes(const void *a, size_t len)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	if (!f)
		return -1;
	char line[512];
	uintptr_t lo = (uintptr_t)a, hi = lo + len;
	int in = 0;
	long total = 0;
	while (fgets(line, sizeof line, f)) {
		unsigned long s, e;
		if (sscanf(line, "%lx-%lx ", &s, &e) == 2 && strchr(line, '-') < strchr(line, ' ')) {
			in = s < hi && e > lo;
			continue;
		}
		long kb;
		if (in && sscanf(line, "AnonHugePages: %ld kB", &kb) == 1)
			total += kb * 1024;
	}
	fclose(f);
	return total;
}

static long vmstat(const char *key)
{
	FILE *f = fopen("/proc/vmstat", "r");
	if (!f)
		return -1;
	char k[128];
	long v, r = -1;
	while (fscanf(f, "%127s %ld", k, &v) == 2)
		if (!strcmp(k, key)) {
			r = v;
			break;
		}
	fclose(f);
	return r;
}

/* ------------------------------------------------------------------ */
/* measurements                                                        */
/* ------------------------------------------------------------------ */

#define FAULT_LEN (64 * MB)

static void m_fault_anon_4k(void)
{
	progress("fault_anon_4k_write / fault_anon_4k_read_zeropage");
	double w[REPEATS], r[REPEATS];
	size_t np = FAULT_LEN / PG;
	for (int rep = -1; rep < REPEATS; rep++) {
		char *p = map_anon(FAULT_LEN, MADV_NOHUGEPAGE);
		if (!p) {
			add_unavailable("fault_anon_4k_write", "mmap failed");
			return;
		}
		uint64_t t0 = now_ns();
		touch_write(p, FAULT_LEN, PG);
		uint64_t t1 = now_ns();
		munmap(p, FAULT_LEN);
		p = map_anon(FAULT_LEN, MADV_NOHUGEPAGE);
		volatile char *vp = p;
		uint64_t acc = 0, t2 = now_ns();
		for (size_t o = 0; o < FAULT_LEN; o += PG)
			acc += vp[o];
		uint64_t t3 = now_ns();
		sink += acc;
		munmap(p, FAULT_LEN);
		if (rep >= 0) {
			w[rep] = (double)(t1 - t0) / np;
			r[rep] = (double)(t3 - t2) / np;
		}
	}
	add_cost("fault_anon_4k_write", w, REPEATS, "ns per 4K page",
		 "Write one byte to each 4K page, in address order, of a fresh 64 MiB private anonymous "
		 "mapping marked MADV_NOHUGEPAGE; total time / 16384 pages (includes fault entry, page "
		 "allocation, zeroing, PTE install).",
		 NULL);
	add_cost("fault_anon_4k_read_zeropage", r, REPEATS, "ns per 4K page",
		 "Read one byte from each 4K page of a fresh 64 MiB MADV_NOHUGEPAGE anonymous mapping "
		 "(each fault maps the shared zero page read-only); total time / 16384 pages.",
		 NULL);
}

#define THP_LEN (512 * MB)

/* One touch of fresh THP memory: one byte per 2M of a new MADV_HUGEPAGE mapping of THP_LEN. Returns ns per 2M, or
 * -1 (name made unavailable) when the mapping fails; *frac, if given, gets the share AnonHugePages saw mapped. */
static double thp_touch(const char *name, double *frac)
{
	char *p = map_anon(THP_LEN, MADV_HUGEPAGE);
	if (!p) {
		add_unavailable(name, "mmap/madvise failed");
		return -1;
	}
	uint64_t t0 = now_ns();
	touch_write(p, THP_LEN, HPG);
	uint64_t t1 = now_ns();
	if (frac)
		*frac = (double)anon_huge_bytes(p, THP_LEN) / THP_LEN;
	munmap(p, THP_LEN);
	return (double)(t1 - t0) / (THP_LEN / HPG);
}

static void m_fault_thp(void)
{
	progress("fault_thp_2m_write");
	double v[REPEATS];
	double frac_min = 1.0;
	for (int rep = -1; rep < REPEATS; rep++) {
		double frac;
		double ns = thp_touch("fault_thp_2m_write", &frac);
		if (ns < 0)
			return;
		if (rep >= 0) {
			v[rep] = ns;
			if (frac < frac_min)
				frac_min = frac;
		}
	}
	char extra[128];
	snprintf(extra, sizeof extra, ", \"thp_fraction_min\": %.4f, \"verified\": %s", frac_min,
		 frac_min >= 0.99 ? "true" : "false");
	add_cost("fault_thp_2m_write", v, REPEATS, "ns per 2M page",
		 "Write one byte to each 2M region of a fresh 2M-aligned 512 MiB anonymous mapping "
		 "marked MADV_HUGEPAGE; total / 256; thp_fraction_min = lowest AnonHugePages/size seen "
		 "in /proc/self/smaps over the repeats.",
		 extra);
}

/* Whether this machine is a guest whose virtio-balloon reports free pages to its host (VIRTIO_BALLOON_F_REPORTING,
 * feature bit 5 of a virtio device of type 5): its free memory is then handed back a few seconds after it is freed. */
static int balloon_reports_free_pages(void)
{
	DIR *d = opendir("/sys/bus/virtio/devices");
	if (!d)
		return 0;
	int found = 0;
	struct dirent *e;
	while (!found && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char path[512], buf[256];
		snprintf(path, sizeof path, "/sys/bus/virtio/devices/%s/device", e->d_name);
		FILE *f = fopen(path, "r");
		if (!f)
			continue;
		int dev = fgets(buf, sizeof buf, f) ? (int)strtol(buf, NULL, 0) : -1;
		fclose(f);
		if (dev != 5)
			continue;
		snprintf(path, sizeof path, "/sys/bus/virtio/devices/%s/features", e->d_name);
		f = fopen(path, "r");
		if (f && fgets(buf, sizeof buf, f) && strlen(buf) > 5 && buf[5] == '1')
			found = 1;
		if (f)
			fclose(f);
	}
	closedir(d);
	return found;
}

#define REPORTED_REPEATS 3
#define REPORTED_WAIT_S 20

/* fault_thp_2m_write on memory free long enough for free page reporting to have handed it to the host below:
 * what a process that starts on such a guest (a migration's destination QEMU) pays for its first touches. */
static void m_fault_thp_reported(void)
{
	progress("fault_thp_2m_write_reported");
	double v[REPORTED_REPEATS];
	int reports = balloon_reports_free_pages();
	for (int rep = 0; rep < REPORTED_REPEATS; rep++) {
		if (reports)
			sleep(REPORTED_WAIT_S);
		if ((v[rep] = thp_touch("fault_thp_2m_write_reported", NULL)) < 0)
			return;
	}
	char extra[96];
	snprintf(extra, sizeof extra, ", \"free_page_reporting\": %s", reports ? "true" : "false");
	add_cost("fault_thp_2m_write_reported", v, REPORTED_REPEATS, "ns per 2M page",
		 "fault_thp_2m_write's touch (one byte per 2M of a fresh MADV_HUGEPAGE 512 MiB mapping; total / 256), "
		 "each repeat after 20 s with the memory free, on a guest whose virtio-balloon reports free pages "
		 "(free_page_reporting: VIRTIO_BALLOON_F_REPORTING seen in /sys/bus/virtio/devices): its free 2M blocks have "
		 "gone to the host below by then, whose fault and zeroing the touch pays. Without reporting, the same "
		 "touch without the waits.",
		 extra);
}

static int hugetlb2m_pages; /* pages obtained for the 2M pool */

static void m_fault_hugetlb(void)
{
	progress("fault_hugetlb_2m_write");
	const long want = 256;
	long got = hugetlb_reserve(K_NR_2M, want);
	hugetlb2m_pages = (int)got;
	if (got < 8) {
		char why[128];
		snprintf(why, sizeof why, "could only reserve %ld 2M hugetlb pages", got);
		add_unavailable("fault_hugetlb_2m_write", why);
	} else {
		double v[REPEATS];
		size_t len = got * HPG;
		int ok = 1;
		for (int rep = -1; rep < REPEATS && ok; rep++) {
			char *p = map_hugetlb(len, MAP_HUGE_2MB);
			if (!p) {
				ok = 0;
				break;
			}
			uint64_t t0 = now_ns();
			touch_write(p, len, HPG);
			uint64_t t1 = now_ns();
			munmap(p, len);
			if (rep >= 0)
				v[rep] = (double)(t1 - t0) / got;
		}
		if (ok) {
			char method[256], extra[96];
			snprintf(method, sizeof method,
				 "Write one byte to each page of a fresh MAP_HUGETLB|MAP_HUGE_2MB mapping "
				 "of %ld pages taken from a pre-reserved pool (fault + 2M zeroing); total / %ld.",
				 got, got);
			snprintf(extra, sizeof extra, ", \"pool_pages_obtained\": %ld, \"pool_pages_requested\": %ld",
				 got, want);
			add_cost("fault_hugetlb_2m_write", v, REPEATS, "ns per 2M page", method, extra);
		} else {
			add_unavailable("fault_hugetlb_2m_write", "MAP_HUGETLB mmap failed");
		}
	}
	/* pool is kept for uffdio_copy_2m_hugetlb and released there */

	progress("fault_hugetlb_1g_write");
	long g1 = hugetlb_reserve(K_NR_1G, 1);
	if (g1 < 1) {
		hugetlb_release(K_NR_1G);
		add_unavailable("fault_hugetlb_1g_write",
				"writing nr_hugepages=1 to hugepages-1048576kB did not yield a 1G page "
				"(no free 1G-contiguous physical range)");
		return;
	}
	double v[REPEATS];
	for (int rep = -1; rep < REPEATS; rep++) {
		char *p = map_hugetlb(GB, MAP_HUGE_1GB);
		if (!p) {
			hugetlb_release(K_NR_1G);
			add_unavailable("fault_hugetlb_1g_write", "MAP_HUGE_1GB mmap failed");
			return;
		}
		uint64_t t0 = now_ns();
		p[0] = 1;
		uint64_t t1 = now_ns();
		munmap(p, GB);
		if (rep >= 0)
			v[rep] = (double)(t1 - t0);
	}
	hugetlb_release(K_NR_1G);
	add_cost("fault_hugetlb_1g_write", v, REPEATS, "ns per 1G page",
		 "Write one byte to a fresh MAP_HUGETLB|MAP_HUGE_1GB 1 GiB mapping backed by a 1G page "
		 "reserved via hugepages-1048576kB/nr_hugepages (fault + 1 GiB zeroing); one fault per repeat.",
		 ", \"pool_pages_obtained\": 1");
}

#define BW_LEN (256 * MB)

/* Same instructions as the kernel's clear_page_erms / copy_page (REP_GOOD). */
static inline void clear_4k(void *p)
{
	size_t c = PG;
	__asm__ volatile("rep stosb" : "+D"(p), "+c"(c) : "a"(0) : "memory");
}

static inline void copy_4k(void *d, const void *s)
{
	size_t c = PG / 8;
	__asm__ volatile("rep movsq" : "+D"(d), "+S"(s), "+c"(c) : : "memory");
}

static void m_bandwidth(void)
{
	progress("zero_page_4k / memcpy_4k");
	char *a = map_anon(BW_LEN, MADV_HUGEPAGE), *b = map_anon(BW_LEN, MADV_HUGEPAGE);
	if (!a || !b) {
		add_unavailable("zero_page_4k", "mmap failed");
		add_unavailable("memcpy_4k", "mmap failed");
		return;
	}
	memset(a, 1, BW_LEN);
	memset(b, 2, BW_LEN);
	double z[REPEATS], c[REPEATS];
	size_t np = BW_LEN / PG;
	for (int rep = -1; rep < REPEATS; rep++) {
		memset(a, rep + 3, BW_LEN); /* make sure it is not already zero */
		uint64_t t0 = now_ns();
		for (size_t o = 0; o < BW_LEN; o += PG)
			clear_4k(a + o);
		uint64_t t1 = now_ns();
		memset(a, rep + 5, BW_LEN);
		uint64_t t2 = now_ns();
		for (size_t o = 0; o < BW_LEN; o += PG)
			copy_4k(b + o, a + o);
		uint64_t t3 = now_ns();
		sink += a[rep + 100] + b[rep + 200];
		if (rep >= 0) {
			z[rep] = (double)(t1 - t0) / np;
			c[rep] = (double)(t3 - t2) / np;
		}
	}
	munmap(a, BW_LEN);
	munmap(b, BW_LEN);
	add_cost("zero_page_4k", z, REPEATS, "ns per 4K page",
		 "Zero an already-faulted, non-zero 256 MiB THP-backed buffer (8x the 32 MiB LLC) one "
		 "4K page at a time with 'rep stosb' (the instruction of the kernel's clear_page_erms); "
		 "total / 65536 pages.",
		 NULL);
	add_cost("memcpy_4k", c, REPEATS, "ns per 4K page",
		 "Copy an already-faulted 256 MiB THP-backed buffer into another one 4K page at a time "
		 "with 'rep movsq' (the kernel's copy_page on REP_GOOD CPUs); total / 65536 pages.",
		 NULL);
}

/*
 * XBZRLE (QEMU's migration/xbzrle.c format, implemented here on its own):
 * old XOR new, as runs: a ULEB128 length of bytes that did not change,
 * then a ULEB128 length and the bytes of a run that did; the last unchanged
 * run is left out, an unchanged page encodes to nothing, and an encoding
 * longer than dlen is an overflow (-1).
 */
static int uleb_put(uint8_t *d, uint32_t v)
{
	if (v < 0x80) {
		d[0] = (uint8_t)v;
		return 1;
	}
	d[0] = (uint8_t)(v | 0x80);
	d[1] = (uint8_t)(v >> 7);
	return 2;
}

static int xbzrle_enc(const uint8_t *old, const uint8_t *new, int slen, uint8_t *dst, int dlen)
{
	int d = 0, i = 0;
	while (i < slen) {
		int z = i;
		/* unchanged bytes, 8 at a time where both words match */
		while (i + 8 <= slen && !memcmp(old + i, new + i, 8))
			i += 8;
		while (i < slen && old[i] == new[i])
			i++;
		if (i - z == slen)
			return 0;
		if (i == slen)
			return d;
		if (d + 2 > dlen)
			return -1;
		d += uleb_put(dst + d, (uint32_t)(i - z));
		int nz = i;
		while (i < slen && old[i] != new[i])
			i++;
		if (d + 2 > dlen)
			return -1;
		d += uleb_put(dst + d, (uint32_t)(i - nz));
		if (d + (i - nz) > dlen)
			return -1;
		memcpy(dst + d, new + nz, (size_t)(i - nz));
		d += i - nz;
	}
	return d;
}

static int uleb_get(const uint8_t *s, int n, int *at, uint32_t *v)
{
	if (*at >= n)
		return -1;
	uint8_t b = s[(*at)++];
	*v = b & 0x7f;
	if (b & 0x80) {
		if (*at >= n)
			return -1;
		*v |= (uint32_t)s[(*at)++] << 7;
	}
	return 0;
}

static int xbzrle_dec(const uint8_t *src, int slen, uint8_t *page, int plen)
{
	int i = 0, d = 0;
	while (i < slen) {
		uint32_t z, nz;
		if (uleb_get(src, slen, &i, &z) || (d += (int)z) > plen || uleb_get(src, slen, &i, &nz))
			return -1;
		if (d + (int)nz > plen || i + (int)nz > slen)
			return -1;
		memcpy(page + d, src + i, nz);
		i += (int)nz;
		d += (int)nz;
	}
	return d;
}

#define XB_PAGES 16384 /* 64 MiB: QEMU's default xbzrle-cache-size, well past the LLC */

/* Make page `p` of `cur` differ from `old` in `runs` runs of `len` bytes spread evenly over the page. */
static void xb_dirty(uint8_t *cur, const uint8_t *old, int runs, int len, int salt)
{
	memcpy(cur, old, PG);
	for (int r = 0; r < runs; r++) {
		int at = r * (PG / runs);
		for (int j = 0; j < len; j++)
			cur[at + j] = (uint8_t)(old[at + j] ^ (1 + ((salt + j) & 0x7f)));
	}
}

static void m_xbzrle(void)
{
	progress("xbzrle_encode_4k / xbzrle_encode_per_changed_byte / xbzrle_decode_per_changed_byte");
	size_t len = (size_t)XB_PAGES * PG;
	uint8_t *old = (uint8_t *)map_anon(len, MADV_HUGEPAGE), *cur = (uint8_t *)map_anon(len, MADV_HUGEPAGE);
	uint8_t *enc = malloc(PG), *dst = (uint8_t *)map_anon(len, MADV_HUGEPAGE);
	if (!old || !cur || !dst || !enc) {
		add_unavailable("xbzrle_encode_4k", "mmap failed");
		add_unavailable("xbzrle_encode_per_changed_byte", "mmap failed");
		add_unavailable("xbzrle_decode_per_changed_byte", "mmap failed");
		return;
	}
	for (size_t i = 0; i < len; i++)
		old[i] = (uint8_t)(i * 2654435761u >> 13);
	/* k = 0 (the whole page compared, nothing changed) and k = 2048 (32 runs of 64 bytes: cache lines rewritten) */
	const int K = 2048, RUNS = 32;
	double e0[REPEATS], ek[REPEATS], dk[REPEATS];
	for (int rep = -1; rep < REPEATS; rep++) {
		memcpy(cur, old, len);
		uint64_t t0 = now_ns();
		for (size_t p = 0; p < XB_PAGES; p++)
			sink += (uint64_t)xbzrle_enc(old + p * PG, cur + p * PG, PG, enc, PG);
		uint64_t t1 = now_ns();
		for (size_t p = 0; p < XB_PAGES; p++)
			xb_dirty(cur + p * PG, old + p * PG, RUNS, K / RUNS, (int)p + rep);
		memcpy(dst, old, len);
		uint64_t te = 0, td = 0;
		for (size_t p = 0; p < XB_PAGES; p++) {
			uint64_t a = now_ns();
			int n = xbzrle_enc(old + p * PG, cur + p * PG, PG, enc, PG);
			uint64_t b = now_ns();
			int r = xbzrle_dec(enc, n, dst + p * PG, PG);
			uint64_t c = now_ns();
			if (n <= 0 || r < 0 || memcmp(dst + p * PG, cur + p * PG, PG)) {
				add_unavailable("xbzrle_encode_4k", "round trip failed");
				return;
			}
			te += b - a;
			td += c - b;
		}
		if (rep >= 0) {
			e0[rep] = (double)(t1 - t0) / XB_PAGES;
			ek[rep] = ((double)te / XB_PAGES - e0[rep]) / K;
			dk[rep] = (double)td / XB_PAGES / K;
		}
	}
	munmap(old, len);
	munmap(cur, len);
	munmap(dst, len);
	free(enc);
	add_cost("xbzrle_encode_4k", e0, REPEATS, "ns per 4K page compared against its cached copy",
		 "XBZRLE encode (QEMU's format: XOR runs as ULEB128 zero-run and literal-run lengths, "
		 "memtwin's own implementation comparing 8 bytes at a time) of 16384 unchanged 4K pages "
		 "(64 MiB, QEMU's default xbzrle-cache-size) against their cached copies; total / 16384.",
		 NULL);
	add_cost("xbzrle_encode_per_changed_byte", ek, REPEATS, "ns per changed byte, beyond xbzrle_encode_4k",
		 "Same encoder over the same 16384 pages with 2048 bytes changed in each (32 runs of 64 "
		 "bytes, cache lines rewritten, evenly spread), each page timed alone: (mean per page - "
		 "xbzrle_encode_4k) / 2048.",
		 NULL);
	add_cost("xbzrle_decode_per_changed_byte", dk, REPEATS, "ns per changed byte decoded into the page",
		 "Decode of each of those encodings into a copy of the old page (as QEMU's load_xbzrle "
		 "does into guest RAM), checked equal to the new page; mean per page / 2048.",
		 NULL);
}

static void m_dontneed_munmap(void)
{
	progress("madv_dontneed_4k / munmap_populated_4k / madv_dontneed_2m_thp");
	double d[REPEATS], u[REPEATS], h[REPEATS];
	size_t np = FAULT_LEN / PG, nh = THP_LEN / HPG;
	double frac_min = 1.0;
	for (int rep = -1; rep < REPEATS; rep++) {
		char *p = map_anon(FAULT_LEN, MADV_NOHUGEPAGE);
		if (!p)
			goto fail;
		touch_write(p, FAULT_LEN, PG);
		uint64_t t0 = now_ns();
		madvise(p, FAULT_LEN, MADV_DONTNEED);
		uint64_t t1 = now_ns();
		munmap(p, FAULT_LEN);

		p = map_anon(FAULT_LEN, MADV_NOHUGEPAGE);
		if (!p)
			goto fail;
		touch_write(p, FAULT_LEN, PG);
		uint64_t t2 = now_ns();
		munmap(p, FAULT_LEN);
		uint64_t t3 = now_ns();

		p = map_anon(THP_LEN, MADV_HUGEPAGE);
		if (!p)
			goto fail;
		touch_write(p, THP_LEN, HPG);
		double frac = (double)anon_huge_bytes(p, THP_LEN) / THP_LEN;
		uint64_t t4 = now_ns();
		madvise(p, THP_LEN, MADV_DONTNEED);
		uint64_t t5 = now_ns();
		munmap(p, THP_LEN);
		if (rep >= 0) {
			d[rep] = (double)(t1 - t0) / np;
			u[rep] = (double)(t3 - t2) / np;
			h[rep] = (double)(t5 - t4) / nh;
			if (frac < frac_min)
				frac_min = frac;
		}
	}
	add_cost("madv_dontneed_4k", d, REPEATS, "ns per 4K page",
		 "One madvise(MADV_DONTNEED) over a 64 MiB MADV_NOHUGEPAGE mapping whose 16384 pages "
		 "were all written (PTE zap + page free + TLB flush, batched); total / 16384.",
		 NULL);
	add_cost("munmap_populated_4k", u, REPEATS, "ns per 4K page",
		 "One munmap of a 64 MiB MADV_NOHUGEPAGE mapping whose 16384 pages were all written "
		 "(zap + free + page-table free + VMA removal); total / 16384.",
		 NULL);
	char extra[128];
	snprintf(extra, sizeof extra, ", \"thp_fraction_min\": %.4f, \"verified\": %s", frac_min,
		 frac_min >= 0.99 ? "true" : "false");
	add_cost("madv_dontneed_2m_thp", h, REPEATS, "ns per 2M page",
		 "One madvise(MADV_DONTNEED) over a 512 MiB MADV_HUGEPAGE mapping populated with 256 "
		 "PMD-mapped THPs (PMD zap + THP free); total / 256.",
		 extra);
	return;
fail:
	add_unavailable("madv_dontneed_4k", "mmap failed");
}

static void m_mmap_mprotect(void)
{
	progress("mmap_munmap_pair / mprotect_split / change_prot_numa_per_pte / syscall_null");
	const int iters = 100000;
	double v[REPEATS];
	for (int rep = -1; rep < REPEATS; rep++) {
		uint64_t t0 = now_ns();
		for (int i = 0; i < iters; i++) {
			void *p = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			munmap(p, PG);
		}
		uint64_t t1 = now_ns();
		if (rep >= 0)
			v[rep] = (double)(t1 - t0) / iters;
	}
	add_cost("mmap_munmap_pair", v, REPEATS, "ns per mmap+munmap pair",
		 "Loop of 100000 x { mmap(4 KiB, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS); "
		 "munmap } with no touch; total / 100000.",
		 NULL);

	char *p = map_anon(64 * PG, MADV_NOHUGEPAGE);
	touch_write(p, 64 * PG, PG);
	char *mid = p + 32 * PG;
	for (int rep = -1; rep < REPEATS; rep++) {
		uint64_t t0 = now_ns();
		for (int i = 0; i < iters; i++) {
			mprotect(mid, PG, PROT_READ);
			mprotect(mid, PG, PROT_READ | PROT_WRITE);
		}
		uint64_t t1 = now_ns();
		if (rep >= 0)
			v[rep] = (double)(t1 - t0) / (2.0 * iters);
	}
	munmap(p, 64 * PG);
	add_cost("mprotect_split", v, REPEATS, "ns per mprotect call",
		 "Loop of 100000 x { mprotect(page 32 of a populated 64-page MADV_NOHUGEPAGE mapping, "
		 "PROT_READ) (VMA split in 3 + PTE change + 1-page TLB flush); mprotect(same, "
		 "PROT_READ|PROT_WRITE) (VMA merge back) }; total / 200000 calls (a split+restore pair "
		 "costs 2x).",
		 NULL);

	/* change_prot_numa's walk (NUMA balancing's scanner, task_numa_work): change_protection over
	 * present PTEs. This machine has one node, where NUMA balancing never scans, so the same
	 * loop is timed through mprotect of a populated 4K mapping, to PROT_NONE and back. */
	const size_t cp_len = 64 * MB, cp_pages = cp_len / PG;
	char *cp = map_anon(cp_len, MADV_NOHUGEPAGE);
	if (!cp) {
		add_unavailable("change_prot_numa_per_pte", "mmap failed");
	} else {
		touch_write(cp, cp_len, PG);
		for (int rep = -1; rep < REPEATS; rep++) {
			uint64_t t0 = now_ns();
			for (int i = 0; i < 8; i++) {
				mprotect(cp, cp_len, PROT_NONE);
				mprotect(cp, cp_len, PROT_READ | PROT_WRITE);
			}
			uint64_t t1 = now_ns();
			if (rep >= 0)
				v[rep] = (double)(t1 - t0) / (16.0 * cp_pages);
		}
		munmap(cp, cp_len);
		add_cost("change_prot_numa_per_pte", v, REPEATS, "ns per present PTE",
			 "Proxy for change_prot_numa (task_numa_work's scan; this one-node machine never "
			 "scans): 8 x { mprotect(a populated 64 MiB MADV_NOHUGEPAGE mapping, PROT_NONE); "
			 "mprotect(same, PROT_READ|PROT_WRITE) } (change_protection over 16384 present PTEs "
			 "and one range TLB flush per call); total / (16 x 16384) PTEs.",
			 NULL);
	}

	const int sn = 1000000;
	for (int rep = -1; rep < REPEATS; rep++) {
		uint64_t t0 = now_ns();
		for (int i = 0; i < sn; i++)
			sink += syscall(SYS_getppid);
		uint64_t t1 = now_ns();
		if (rep >= 0)
			v[rep] = (double)(t1 - t0) / sn;
	}
	add_cost("syscall_null", v, REPEATS, "ns per call",
		 "Loop of 1000000 x syscall(SYS_getppid); total / 1000000 (kernel entry/exit incl. "
		 "this guest's speculative-execution mitigations).",
		 NULL);
}

#define COLLAPSE_LEN (64 * MB)

static void m_collapse(void)
{
	progress("madv_collapse_2m");
	size_t nh = COLLAPSE_LEN / HPG;
	double v[REPEATS];
	int fails = 0;
	double frac_min = 1.0;
	long pre_huge_max = 0;
	for (int rep = -1; rep < REPEATS; rep++) {
		char *p = map_anon(COLLAPSE_LEN, MADV_NOHUGEPAGE);
		if (!p) {
			add_unavailable("madv_collapse_2m", "mmap failed");
			return;
		}
		for (size_t o = 0; o < COLLAPSE_LEN; o += PG)
			p[o] = (char)(o >> 12) | 1;
		madvise(p, COLLAPSE_LEN, MADV_HUGEPAGE);
		long pre = anon_huge_bytes(p, COLLAPSE_LEN);
		uint64_t t0 = now_ns();
		for (size_t i = 0; i < nh; i++)
			if (madvise(p + i * HPG, HPG, MADV_COLLAPSE) != 0)
				fails++;
		uint64_t t1 = now_ns();
		double frac = (double)anon_huge_bytes(p, COLLAPSE_LEN) / COLLAPSE_LEN;
		/* content check */
		for (size_t o = 0; o < COLLAPSE_LEN; o += PG)
			if (p[o] != ((char)(o >> 12) | 1))
				fails++;
		munmap(p, COLLAPSE_LEN);
		if (rep >= 0) {
			v[rep] = (double)(t1 - t0) / nh;
			if (frac < frac_min)
				frac_min = frac;
			if (pre > pre_huge_max)
				pre_huge_max = pre;
		}
	}
	char extra[200];
	snprintf(extra, sizeof extra,
		 ", \"failed_calls\": %d, \"thp_fraction_after_min\": %.4f, \"anon_huge_bytes_before_max\": %ld, \"verified\": %s",
		 fails, frac_min, pre_huge_max, (!fails && frac_min >= 0.99 && !pre_huge_max) ? "true" : "false");
	add_cost("madv_collapse_2m", v, REPEATS, "ns per 2M collapse",
		 "64 MiB 2M-aligned mapping: MADV_NOHUGEPAGE, write every 4K page, MADV_HUGEPAGE, then "
		 "time 32 x madvise(2M region, MADV_COLLAPSE) (alloc THP + copy 512 pages + free them); "
		 "total / 32; success = every call returned 0, smaps AnonHugePages == size afterwards "
		 "(0 before), data intact.",
		 extra);
}

/* ---------------- khugepaged scan cost ---------------- */

#define KHP_LEN (1 * GB)
#define KHP_DIR "/sys/kernel/mm/transparent_hugepage/khugepaged/"

/* pid of the khugepaged kernel thread (comm "khugepaged", parent kthreadd), or -1 */
static int khugepaged_pid(void)
{
	DIR *d = opendir("/proc");
	struct dirent *de;
	int found = -1;
	while (d && found < 0 && (de = readdir(d))) {
		int pid = atoi(de->d_name);
		if (pid <= 2)
			continue;
		char path[64], b[64];
		snprintf(path, sizeof path, "/proc/%d/comm", pid);
		if (read_file(path, b, sizeof b) < 0)
			continue;
		if (strcmp(b, "khugepaged\n"))
			continue;
		snprintf(path, sizeof path, "/proc/%d/stat", pid);
		char st[512];
		if (read_file(path, st, sizeof st) < 0)
			continue;
		char *rp = strrchr(st, ')');
		int ppid = -1;
		if (rp && sscanf(rp + 2, "%*c %d", &ppid) == 1 && ppid == 2)
			found = pid;
	}
	if (d)
		closedir(d);
	return found;
}

static void khp_restore_knobs(void)
{
	for (int k = K_KHP_SLEEP; k >= K_KHP_MAX_NONE; k--)
		if (knobs[k].changed) {
			write_file(knobs[k].path, knobs[k].orig);
			knobs[k].changed = 0;
		}
}

/* CPU time (ns) of a thread-group leader: its process CPU clock (exact, includes
 * the running slice); fallback /proc/<pid>/schedstat field 1. -1 on error. */
static int64_t task_cpu_ns(int pid)
{
	clockid_t id;
	struct timespec ts;
	if (clock_getcpuclockid(pid, &id) == 0 && clock_gettime(id, &ts) == 0)
		return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
	char path[64], b[128];
	snprintf(path, sizeof path, "/proc/%d/schedstat", pid);
	if (read_file(path, b, sizeof b) < 0)
		return -1;
	return strtoll(b, NULL, 10);
}

typedef struct {
	int64_t cpu_ns;  /* khugepaged CPU time in the window */
	long scans;      /* full_scans delta */
	long exceed_none;/* thp_scan_exceed_none_pte delta */
	long collapsed;  /* pages_collapsed delta */
	uint64_t wall_ns;
} khp_win_t;

/* One measurement window delimited by full_scans increments (so it holds
 * whole passes): at least min_scans passes and min_ns of wall time.
 * Returns 0, or -1 if khugepaged stopped scanning / changed. */
static int khp_window(int pid, long min_scans, uint64_t min_ns, khp_win_t *w)
{
	const char *fsp = KHP_DIR "full_scans";
	uint64_t t = now_ns(), limit = t + 3000000000ULL;
	long f0 = read_long(fsp), f;
	while ((f = read_long(fsp)) == f0) {
		if (now_ns() > limit)
			return -1;
		usleep(50);
	}
	int64_t c0 = task_cpu_ns(pid);
	uint64_t t0 = now_ns();
	long e0 = vmstat("thp_scan_exceed_none_pte"), p0 = read_long(KHP_DIR "pages_collapsed");
	f0 = f;
	limit = t0 + 20 * min_ns + 5000000000ULL;
	for (;;) {
		usleep(2000);
		f = read_long(fsp);
		uint64_t t1 = now_ns();
		if (f - f0 >= min_scans && t1 - t0 >= min_ns)
			break;
		if (t1 > limit)
			return -1;
	}
	long fe = f;
	while ((f = read_long(fsp)) == fe) {
		if (now_ns() > limit)
			return -1;
		usleep(50);
	}
	int64_t c1 = task_cpu_ns(pid);
	w->wall_ns = now_ns() - t0;
	w->cpu_ns = c1 - c0;
	w->scans = f - f0;
	w->exceed_none = vmstat("thp_scan_exceed_none_pte") - e0;
	w->collapsed = read_long(KHP_DIR "pages_collapsed") - p0;
	return (c0 < 0 || c1 < 0 || khugepaged_pid() != pid) ? -1 : 0;
}

static void m_khugepaged_scan(void)
{
	const char *name = "khugepaged_scan_per_pte";
	progress("%s", name);
	if (!knobs[K_KHP_MAX_NONE].saved || !knobs[K_KHP_PAGES].saved || !knobs[K_KHP_SLEEP].saved) {
		add_unavailable(name, "cannot read the khugepaged sysfs knobs");
		return;
	}
	if (!knobs[K_THP_EN].saved || !strcmp(knobs[K_THP_EN].orig, "never")) {
		char cur[32];
		if (read_bracket(knobs[K_THP_EN].path, cur, sizeof cur) || !strcmp(cur, "never")) {
			add_unavailable(name, "THP disabled (khugepaged not running)");
			return;
		}
	}
	/* max_ptes_none=0 first: regions with one none PTE can then never be collapsed. */
	if (set_knob(K_KHP_MAX_NONE, "0") || set_knob(K_KHP_PAGES, "1073741824")) {
		add_unavailable(name, "cannot write khugepaged knobs");
		khp_restore_knobs();
		return;
	}
	/* A 2M MADV_HUGEPAGE anchor with one 4K page keeps this mm registered
	 * with khugepaged (so khugepaged keeps scanning) in both the baseline and
	 * the measured windows; it costs the same in both. (An unpopulated VMA has
	 * no anon_vma and does not register the mm.) */
	char *anchor = map_anon(HPG, MADV_NOHUGEPAGE);
	if (anchor) {
		anchor[0] = 1;
		madvise(anchor, HPG, MADV_HUGEPAGE);
	}
	if (!anchor || set_knob(K_KHP_SLEEP, "0")) {
		add_unavailable(name, anchor ? "cannot write scan_sleep_millisecs" : "mmap failed");
		if (anchor)
			munmap(anchor, HPG);
		khp_restore_knobs();
		return;
	}
	int pid = khugepaged_pid();
	size_t npmd = KHP_LEN / HPG;
	double per_pte[REPEATS], per_pmd[REPEATS], base_scan[REPEATS], map_scan[REPEATS],
		scans_map[REPEATS], en_per_scan[REPEATS];
	long collapsed = 0, huge_max = 0;
	int nok = 0;
	const char *fail = pid < 0 ? "no khugepaged thread" : NULL;
	for (int rep = -1; rep < REPEATS && !fail; rep++) {
		khp_win_t b, m;
		if (khp_window(pid, 20, 300000000ULL, &b)) {
			fail = "khugepaged did not complete full scans (baseline)";
			break;
		}
		char *p = map_anon(KHP_LEN, MADV_NOHUGEPAGE);
		if (!p) {
			fail = "mmap failed";
			break;
		}
		/* every 4K page except the last of each 2M: 511 present PTEs, then one none PTE */
		for (size_t o = 0; o < KHP_LEN; o += PG)
			if ((o & (HPG - 1)) != HPG - PG)
				p[o] = 1;
		madvise(p, KHP_LEN, MADV_HUGEPAGE);
		khp_win_t settle;
		int r = khp_window(pid, 2, 0, &settle); /* let khugepaged see the VMA and drain LRU batches */
		/* Another process's region collapsed by khugepaged in the window
		 * (max_ptes_none=0 still collapses fully populated PMDs) adds
		 * alloc+copy time that is not scanning: retry such windows. */
		for (int t = 0; !r && t < 3; t++) {
			r = khp_window(pid, 20, 1000000000ULL, &m);
			if (!r && m.collapsed == 0)
				break;
		}
		long huge = anon_huge_bytes(p, KHP_LEN);
		munmap(p, KHP_LEN);
		if (r) {
			fail = "khugepaged did not complete full scans (measured)";
			break;
		}
		progress("    rep %d: baseline %.1f us/scan (%ld scans); with 1 GiB %.1f us/scan (%ld scans, %.1f exceed_none/scan, %ld other collapses, region AnonHugePages %ld)",
			 rep, (double)b.cpu_ns / b.scans / 1e3, b.scans, (double)m.cpu_ns / m.scans / 1e3, m.scans,
			 (double)m.exceed_none / m.scans, m.collapsed, huge);
		if (rep < 0)
			continue;
		collapsed += m.collapsed;
		if (huge > huge_max)
			huge_max = huge;
		base_scan[rep] = (double)b.cpu_ns / b.scans;
		map_scan[rep] = (double)m.cpu_ns / m.scans;
		per_pmd[rep] = (map_scan[rep] - base_scan[rep]) / npmd;
		per_pte[rep] = per_pmd[rep] / 512;
		scans_map[rep] = m.scans;
		en_per_scan[rep] = (double)m.exceed_none / m.scans;
		nok = rep + 1;
	}
	munmap(anchor, HPG);
	khp_restore_knobs();
	if (fail || nok < REPEATS) {
		add_unavailable(name, fail ? fail : "too few repeats");
		return;
	}
	stats_t sb = stats_of(base_scan, nok), sm = stats_of(map_scan, nok), sp = stats_of(per_pmd, nok),
		sn = stats_of(scans_map, nok), se = stats_of(en_per_scan, nok);
	/* ours never collapsed, and every pass ended our 512 PMD scans on the none PTE */
	int verified = huge_max == 0 && se.min >= (double)npmd;
	char extra[640];
	snprintf(extra, sizeof extra,
		 ", \"ns_per_pmd_median\": %.1f, \"baseline_ns_per_full_scan_median\": %.0f, "
		 "\"baseline_ns_per_full_scan_max\": %.0f, \"measured_ns_per_full_scan_median\": %.0f, "
		 "\"full_scans_per_window_min\": %.0f, \"scan_exceed_none_pte_per_full_scan_min\": %.1f, "
		 "\"pmds_in_region\": %zu, \"other_collapses_in_windows\": %ld, \"anon_huge_bytes_max\": %ld, "
		 "\"verified\": %s",
		 sp.median, sb.median, sb.max, sm.median, sn.min, se.min, npmd, collapsed, huge_max,
		 verified ? "true" : "false");
	add_cost(name, per_pte, nok, "ns of khugepaged CPU per PTE scanned (no collapse)",
		 "khugepaged max_ptes_none=0, pages_to_scan=2^30 (one do_scan = one full pass over all "
		 "registered mms), scan_sleep_millisecs=0 (khugepaged rescans back to back). A 1 GiB "
		 "2M-aligned anon mapping is faulted under MADV_NOHUGEPAGE writing every 4K page except "
		 "the last of each 2M, then set MADV_HUGEPAGE: hpage_collapse_scan_pmd checks 511 present "
		 "PTEs (vm_normal_page, anon/shared/LRU/refcount/young tests) and stops at the 512th, "
		 "none, with SCAN_EXCEED_NONE_PTE, so nothing is collapsed. khugepaged CPU time "
		 "(clock_getcpuclockid on its pid) / full_scans delta, over windows of >= 20 passes and "
		 ">= 1 s aligned on full_scans increments; minus the same per-pass figure measured just "
		 "before without the mapping (other registered mms, per-pass lru_add_drain_all and "
		 "wakeup); / (512 PMDs x 512 PTEs). Includes per-PMD overhead (PMD lookup, PTE map+lock, "
		 "cond_resched) amortized over 512. Windows in which khugepaged collapsed some other "
		 "process's memory (pages_collapsed grew) are retried up to 3 times. verified = "
		 "AnonHugePages of the region stayed 0 and thp_scan_exceed_none_pte grew by >= 512 per "
		 "pass. Knobs restored right after.",
		 extra);
}

static void m_thp_split(void)
{
	progress("thp_split_pmd");
	size_t nh = THP_LEN / HPG;
	double base[REPEATS], thp[REPEATS], diff[REPEATS];
	double frac_min = 1.0;
	long splits_min = -1;
	for (int rep = -1; rep < REPEATS; rep++) {
		/* baseline: same pattern on 4K-populated memory */
		char *p = map_anon(THP_LEN, MADV_NOHUGEPAGE);
		char *q = NULL;
		if (!p)
			goto fail;
		touch_write(p, THP_LEN, PG);
		uint64_t t0 = now_ns();
		for (size_t i = 0; i < nh; i++)
			mprotect(p + i * HPG + 256 * PG, PG, PROT_READ);
		uint64_t t1 = now_ns();
		munmap(p, THP_LEN);

		q = map_anon(THP_LEN, MADV_HUGEPAGE);
		if (!q)
			goto fail;
		touch_write(q, THP_LEN, HPG);
		double frac = (double)anon_huge_bytes(q, THP_LEN) / THP_LEN;
		long s0 = vmstat("thp_split_pmd");
		uint64_t t2 = now_ns();
		for (size_t i = 0; i < nh; i++)
			mprotect(q + i * HPG + 256 * PG, PG, PROT_READ);
		uint64_t t3 = now_ns();
		long s1 = vmstat("thp_split_pmd");
		munmap(q, THP_LEN);
		if (rep >= 0) {
			base[rep] = (double)(t1 - t0) / nh;
			thp[rep] = (double)(t3 - t2) / nh;
			if (frac < frac_min)
				frac_min = frac;
			if (splits_min < 0 || s1 - s0 < splits_min)
				splits_min = s1 - s0;
		}
	}
	stats_t b = stats_of(base, REPEATS), t = stats_of(thp, REPEATS);
	for (int i = 0; i < REPEATS; i++)
		diff[i] = thp[i] - b.median;
	char extra[300];
	snprintf(extra, sizeof extra,
		 ", \"mprotect_on_thp_median\": %.2f, \"mprotect_on_4k_baseline_median\": %.2f, "
		 "\"thp_split_pmd_vmstat_delta_min\": %ld, \"thp_fraction_min\": %.4f, \"verified\": %s",
		 t.median, b.median, splits_min, frac_min,
		 (frac_min >= 0.99 && splits_min >= (long)nh) ? "true" : "false");
	add_cost("thp_split_pmd", diff, REPEATS, "ns per PMD split",
		 "For each of 256 PMD-mapped THPs of a 512 MiB MADV_HUGEPAGE mapping, time "
		 "mprotect(one 4K page in its middle, PROT_READ) (splits the PMD and the VMA); the same "
		 "loop is timed on a 4K-populated MADV_NOHUGEPAGE mapping and its median per call is "
		 "subtracted from each THP repeat (result = PMD-split cost only); splits checked via "
		 "/proc/vmstat thp_split_pmd.",
		 extra);
	return;
fail:
	add_unavailable("thp_split_pmd", "mmap failed");
}

/* ---------------- userfaultfd ---------------- */

static int uffd_open(void)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return -1;
	struct uffdio_api api = {.api = UFFD_API, .features = 0};
	if (ioctl(fd, UFFDIO_API, &api) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static int uffd_register(int fd, void *p, size_t len)
{
	struct uffdio_register r = {.range = {(uintptr_t)p, len}, .mode = UFFDIO_REGISTER_MODE_MISSING};
	return ioctl(fd, UFFDIO_REGISTER, &r);
}

static int uffd_copy(int fd, void *dst, void *src, size_t len, uint64_t mode)
{
	struct uffdio_copy c = {.dst = (uintptr_t)dst, .src = (uintptr_t)src, .len = len, .mode = mode};
	if (ioctl(fd, UFFDIO_COPY, &c) != 0 || c.copy != (int64_t)len)
		return -1;
	return 0;
}

static char *uffd_src;

static void m_uffd_copy(void)
{
	progress("uffdio_copy_4k / uffdio_copy_2m_anon_per_4k / uffdio_copy_2m_hugetlb");
	uffd_src = map_anon(HPG, MADV_HUGEPAGE);
	memset(uffd_src, 0x5a, HPG);
	double v[REPEATS], w[REPEATS];
	size_t np = FAULT_LEN / PG, nh = FAULT_LEN / HPG;
	const char *err = NULL;
	for (int rep = -1; rep < REPEATS && !err; rep++) {
		int fd = uffd_open();
		if (fd < 0) {
			err = "userfaultfd()/UFFDIO_API failed";
			break;
		}
		char *p = map_anon(FAULT_LEN, MADV_NOHUGEPAGE);
		char *q = map_anon(FAULT_LEN, MADV_NOHUGEPAGE);
		if (!p || !q || uffd_register(fd, p, FAULT_LEN) || uffd_register(fd, q, FAULT_LEN)) {
			err = "UFFDIO_REGISTER failed";
			close(fd);
			break;
		}
		uint64_t t0 = now_ns();
		for (size_t i = 0; i < np; i++)
			if (uffd_copy(fd, p + i * PG, uffd_src, PG, UFFDIO_COPY_MODE_DONTWAKE))
				err = "UFFDIO_COPY 4K failed";
		uint64_t t1 = now_ns();
		for (size_t i = 0; i < nh; i++)
			if (uffd_copy(fd, q + i * HPG, uffd_src, HPG, UFFDIO_COPY_MODE_DONTWAKE))
				err = "UFFDIO_COPY 2M anon failed";
		uint64_t t2 = now_ns();
		if (p[12345] != 0x5a || q[FAULT_LEN - 1] != 0x5a)
			err = "UFFDIO_COPY content check failed";
		close(fd);
		munmap(p, FAULT_LEN);
		munmap(q, FAULT_LEN);
		if (rep >= 0) {
			v[rep] = (double)(t1 - t0) / np;
			w[rep] = (double)(t2 - t1) / np;
		}
	}
	if (err) {
		add_unavailable("uffdio_copy_4k", err);
		add_unavailable("uffdio_copy_2m_anon_per_4k", err);
	} else {
		add_cost("uffdio_copy_4k", v, REPEATS, "ns per 4K copy",
			 "userfaultfd(O_CLOEXEC|O_NONBLOCK)+UFFDIO_API, 64 MiB MADV_NOHUGEPAGE anon range "
			 "registered MISSING; time 16384 x UFFDIO_COPY(4K, MODE_DONTWAKE) into unpopulated "
			 "pages, no faulting thread; total / 16384.",
			 NULL);
		add_cost("uffdio_copy_2m_anon_per_4k", w, REPEATS, "ns per 4K page",
			 "Same setup; time 32 x UFFDIO_COPY(len 2M, MODE_DONTWAKE) into an unpopulated "
			 "MADV_NOHUGEPAGE anon range (kernel installs 512 4K pages per call); total / 16384 pages.",
			 NULL);
	}

	/* hugetlb */
	int nhp = hugetlb2m_pages < 64 ? hugetlb2m_pages : 64;
	if (nhp < 4) {
		add_unavailable("uffdio_copy_2m_hugetlb", "2M hugetlb pool could not be reserved");
		hugetlb_release(K_NR_2M);
		return;
	}
	err = NULL;
	for (int rep = -1; rep < REPEATS && !err; rep++) {
		int fd = uffd_open();
		char *p = map_hugetlb(nhp * HPG, MAP_HUGE_2MB);
		if (fd < 0 || !p || uffd_register(fd, p, nhp * HPG)) {
			err = "userfaultfd / hugetlb mmap / UFFDIO_REGISTER failed";
			if (fd >= 0)
				close(fd);
			break;
		}
		uint64_t t0 = now_ns();
		for (int i = 0; i < nhp; i++)
			if (uffd_copy(fd, p + i * HPG, uffd_src, HPG, UFFDIO_COPY_MODE_DONTWAKE))
				err = "UFFDIO_COPY 2M hugetlb failed";
		uint64_t t1 = now_ns();
		if (!err && p[HPG + 77] != 0x5a)
			err = "content check failed";
		close(fd);
		munmap(p, nhp * HPG);
		if (rep >= 0)
			v[rep] = (double)(t1 - t0) / nhp;
	}
	hugetlb_release(K_NR_2M);
	if (err)
		add_unavailable("uffdio_copy_2m_hugetlb", err);
	else {
		char method[300];
		snprintf(method, sizeof method,
			 "MAP_HUGETLB|MAP_HUGE_2MB mapping of %d pages registered MISSING; time %d x "
			 "UFFDIO_COPY(len 2M, MODE_DONTWAKE) into unpopulated hugetlb pages; total / %d.",
			 nhp, nhp, nhp);
		add_cost("uffdio_copy_2m_hugetlb", v, REPEATS, "ns per 2M copy", method, NULL);
	}
}

struct rt_ctx {
	int uffd, stop_pipe;
	long handled;
	int error;
};

static void *uffd_handler(void *arg)
{
	struct rt_ctx *c = arg;
	struct pollfd pf[2] = {{c->uffd, POLLIN, 0}, {c->stop_pipe, POLLIN, 0}};
	for (;;) {
		if (poll(pf, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			c->error = 1;
			return NULL;
		}
		if (pf[1].revents)
			return NULL;
		if (!(pf[0].revents & POLLIN))
			continue;
		struct uffd_msg msg;
		ssize_t n = read(c->uffd, &msg, sizeof msg);
		if (n != sizeof msg) {
			if (n < 0 && errno == EAGAIN)
				continue;
			c->error = 1;
			return NULL;
		}
		if (msg.event != UFFD_EVENT_PAGEFAULT)
			continue;
		uintptr_t a = msg.arg.pagefault.address & ~(PG - 1);
		struct uffdio_copy cp = {.dst = a, .src = (uintptr_t)uffd_src, .len = PG, .mode = 0};
		if (ioctl(c->uffd, UFFDIO_COPY, &cp) != 0 && errno != EEXIST)
			c->error = 1;
		c->handled++;
	}
}

/* pin < 0: threads free to run on any vCPU; pin >= 0: both threads on that CPU */
static const char *uffd_roundtrip_runs(int pin, double *v)
{
	const size_t np = 8192, len = np * PG;
	const char *err = NULL;
	cpu_set_t old, one;
	sched_getaffinity(0, sizeof old, &old);
	CPU_ZERO(&one);
	CPU_SET(pin < 0 ? 0 : pin, &one);
	if (pin >= 0)
		sched_setaffinity(0, sizeof one, &one);
	for (int rep = -1; rep < REPEATS && !err; rep++) {
		int fd = uffd_open();
		char *p = map_anon(len, MADV_NOHUGEPAGE);
		int pp[2];
		if (fd < 0 || !p || uffd_register(fd, p, len) || pipe(pp)) {
			err = "userfaultfd setup failed";
			break;
		}
		struct rt_ctx c = {fd, pp[0], 0, 0};
		pthread_t th;
		pthread_attr_t at;
		pthread_attr_init(&at);
		if (pin >= 0)
			pthread_attr_setaffinity_np(&at, sizeof one, &one);
		pthread_create(&th, &at, uffd_handler, &c);
		pthread_attr_destroy(&at);
		usleep(1000);
		volatile char *vp = p;
		uint64_t acc = 0;
		uint64_t t0 = now_ns();
		for (size_t i = 0; i < np; i++)
			acc += vp[i * PG];
		uint64_t t1 = now_ns();
		sink += acc;
		if (write(pp[1], "x", 1) != 1)
			err = "pipe write";
		pthread_join(th, NULL);
		if (c.error || c.handled != (long)np || acc != 0x5aUL * np)
			err = "handler error / wrong fault count";
		close(pp[0]);
		close(pp[1]);
		close(fd);
		munmap(p, len);
		if (rep >= 0)
			v[rep] = (double)(t1 - t0) / np;
	}
	if (pin >= 0)
		sched_setaffinity(0, sizeof old, &old);
	return err;
}

static void m_uffd_roundtrip(void)
{
	progress("uffd_fault_roundtrip_4k");
	double v[REPEATS], w[REPEATS];
	const char *err = uffd_roundtrip_runs(-1, v);
	const char *err2 = err ? err : uffd_roundtrip_runs(0, w);
	if (err || err2) {
		add_unavailable("uffd_fault_roundtrip_4k", err ? err : err2);
	} else {
		stats_t sw = stats_of(w, REPEATS);
		char extra[160];
		snprintf(extra, sizeof extra,
			 ", \"same_cpu_pinned_min\": %.2f, \"same_cpu_pinned_median\": %.2f, "
			 "\"same_cpu_pinned_max\": %.2f", sw.min, sw.median, sw.max);
		add_cost("uffd_fault_roundtrip_4k", v, REPEATS, "ns per fault",
			 "Main thread reads one byte from each of 8192 missing pages of a MISSING-registered "
			 "anon range; a handler thread poll()s the uffd, read()s the uffd_msg and does "
			 "UFFDIO_COPY(4K, wake); time of the read loop as seen by the faulting thread / 8192. "
			 "Headline: threads unpinned on 2 vCPUs (cross-vCPU wakeups); same_cpu_pinned_*: both "
			 "threads pinned to CPU 0 (plain context switches, no IPI).",
			 extra);
	}
	munmap(uffd_src, HPG);
}

/* ---------------- move_pages / pagemap ---------------- */

static void m_move_pages_pagemap(void)
{
	progress("move_pages_query / move_pages_same_node / pagemap_read_per_page");
	size_t np = FAULT_LEN / PG;
	char *p = map_anon(FAULT_LEN, MADV_NOHUGEPAGE);
	touch_write(p, FAULT_LEN, PG);
	void **pages = malloc(np * sizeof(void *));
	int *nodes = calloc(np, sizeof(int)), *status = malloc(np * sizeof(int));
	for (size_t i = 0; i < np; i++)
		pages[i] = p + i * PG;
	double q[REPEATS], s[REPEATS], pm[REPEATS];
	int bad = 0;
	for (int rep = -1; rep < REPEATS; rep++) {
		uint64_t t0 = now_ns();
		long r1 = syscall(SYS_move_pages, 0, np, pages, NULL, status, 0);
		uint64_t t1 = now_ns();
		for (size_t i = 0; i < np; i++)
			if (status[i] != 0)
				bad++;
		long r2 = syscall(SYS_move_pages, 0, np, pages, nodes, status, 0);
		uint64_t t2 = now_ns();
		if (r1 != 0 || r2 != 0)
			bad++;
		for (size_t i = 0; i < np; i++)
			if (status[i] != 0)
				bad++;
		if (rep >= 0) {
			q[rep] = (double)(t1 - t0) / np;
			s[rep] = (double)(t2 - t1) / np;
		}
	}
	char extra[64];
	snprintf(extra, sizeof extra, ", \"bad_status_count\": %d", bad);
	add_cost("move_pages_query", q, REPEATS, "ns per page",
		 "move_pages(0, 16384, pages, NULL, status, 0) on a populated 64 MiB MADV_NOHUGEPAGE "
		 "mapping (node query only); total / 16384.",
		 extra);
	add_cost("move_pages_same_node", s, REPEATS, "ns per page",
		 "move_pages(0, 16384, pages, nodes={0...}, status, 0) on the same populated mapping; "
		 "all pages already on node 0 so nothing is migrated (lookup + isolation attempt only); "
		 "total / 16384. Cross-node migration is not measurable: this host has one NUMA node.",
		 extra);

	int fd = open("/proc/self/pagemap", O_RDONLY);
	uint64_t *ent = malloc(np * 8);
	int ok = fd >= 0;
	for (int rep = -1; rep < REPEATS && ok; rep++) {
		uint64_t t0 = now_ns();
		ssize_t n = pread(fd, ent, np * 8, ((uintptr_t)p / PG) * 8);
		uint64_t t1 = now_ns();
		if (n != (ssize_t)(np * 8) || !(ent[7] >> 63))
			ok = 0;
		if (rep >= 0)
			pm[rep] = (double)(t1 - t0) / np;
	}
	if (fd >= 0)
		close(fd);
	if (ok)
		add_cost("pagemap_read_per_page", pm, REPEATS, "ns per page",
			 "One pread of 16384 8-byte entries from /proc/self/pagemap covering a populated "
			 "64 MiB 4K-mapped region (as root, PFNs visible); total / 16384.",
			 NULL);
	else
		add_unavailable("pagemap_read_per_page", "pagemap read failed");
	free(ent);
	free(pages);
	free(nodes);
	free(status);
	munmap(p, FAULT_LEN);
}

/* ---------------- compaction / migration ---------------- */

#define FRAG_LEN (2 * GB)

#define MAX_ATT 16
#define MIN_MIGRATED 8192

static void m_compaction(void)
{
	progress("page_migrate_4k / compact_scan_per_page (compaction, %d..%d attempts)", REPEATS, MAX_ATT);
	double per_mig[MAX_ATT], net[MAX_ATT], valid_per_mig[MAX_ATT];
	long mig[MAX_ATT], msc[MAX_ATT], fsc[MAX_ATT], imig[MAX_ATT], iscan[MAX_ATT];
	double T[MAX_ATT], Ti[MAX_ATT];
	int natt = 0, nvalid = 0;
	uint64_t cstart = now_ns();
	size_t np = FRAG_LEN / PG;
	const char *cm = "/proc/sys/vm/compact_memory";
	if (write_file(cm, "1") != 0) {
		add_unavailable("page_migrate_4k", "cannot write /proc/sys/vm/compact_memory");
		add_unavailable("compact_scan_per_page", "cannot write /proc/sys/vm/compact_memory");
		return;
	}
	for (int rep = -1; rep < MAX_ATT && nvalid < REPEATS; rep++) {
		if (rep >= REPEATS && now_ns() - cstart > 45000000000ULL)
			break; /* time budget */
		/* idle compaction: nothing fragmented by us -> mostly scanning */
		long a0 = vmstat("pgmigrate_success"), b0 = vmstat("compact_migrate_scanned"),
		     c0 = vmstat("compact_free_scanned");
		uint64_t t0 = now_ns();
		write_file(cm, "1");
		uint64_t t1 = now_ns();
		long a1 = vmstat("pgmigrate_success"), b1 = vmstat("compact_migrate_scanned"),
		     c1 = vmstat("compact_free_scanned");

		char *p = map_anon(FRAG_LEN, MADV_NOHUGEPAGE);
		if (!p) {
			add_unavailable("page_migrate_4k", "mmap failed");
			return;
		}
		touch_write(p, FRAG_LEN, PG);
		for (size_t i = 0; i < np; i += 2)
			madvise(p + i * PG, PG, MADV_DONTNEED);
		long a2 = vmstat("pgmigrate_success"), b2 = vmstat("compact_migrate_scanned"),
		     c2 = vmstat("compact_free_scanned");
		uint64_t t2 = now_ns();
		write_file(cm, "1");
		uint64_t t3 = now_ns();
		long a3 = vmstat("pgmigrate_success"), b3 = vmstat("compact_migrate_scanned"),
		     c3 = vmstat("compact_free_scanned");
		/* content check of a few surviving pages */
		for (size_t i = 1; i < np; i += 4099 * 2)
			if (p[i * PG] != 1)
				progress("WARNING: data corrupted after compaction?!");
		munmap(p, FRAG_LEN);
		if (rep < 0)
			continue;
		long scanned_idle = (b1 - b0) + (c1 - c0);
		imig[rep] = a1 - a0;
		iscan[rep] = scanned_idle;
		Ti[rep] = (double)(t1 - t0);
		mig[rep] = a3 - a2;
		msc[rep] = b3 - b2;
		fsc[rep] = c3 - c2;
		T[rep] = (double)(t3 - t2);
		per_mig[rep] = mig[rep] > 0 ? T[rep] / mig[rep] : 0;
		natt = rep + 1;
		if (mig[rep] >= MIN_MIGRATED)
			valid_per_mig[nvalid++] = per_mig[rep];
		progress("    compaction rep %d: %.1f ms, migrated %ld, migrate_scanned %ld, free_scanned %ld; idle run %.1f ms, migrated %ld, scanned %ld",
			 rep, T[rep] / 1e6, mig[rep], msc[rep], fsc[rep], (t1 - t0) / 1e6, a1 - a0, scanned_idle);
	}
	/* Model: elapsed = a * migrated + b * scanned  (scanned = migrate+free scanner pages).
	 * Global least squares over all 2*REPEATS runs (idle + fragmented) gives a, b;
	 * each repeat's pair of runs also gives its own 2x2 solution for b. */
	double Saa = 0, Sab = 0, Sbb = 0, Sat = 0, Sbt = 0;
	double bi[MAX_ATT];
	int nbi = 0;
	for (int i = 0; i < natt; i++) {
		double rows[2][3] = {{(double)mig[i], (double)(msc[i] + fsc[i]), T[i]},
				     {(double)imig[i], (double)iscan[i], Ti[i]}};
		for (int k = 0; k < 2; k++) {
			Saa += rows[k][0] * rows[k][0];
			Sab += rows[k][0] * rows[k][1];
			Sbb += rows[k][1] * rows[k][1];
			Sat += rows[k][0] * rows[k][2];
			Sbt += rows[k][1] * rows[k][2];
		}
		double det = rows[0][0] * rows[1][1] - rows[0][1] * rows[1][0];
		if (det != 0) {
			double b = (rows[0][0] * rows[1][2] - rows[1][0] * rows[0][2]) / det;
			if (b > 0)
				bi[nbi++] = b;
		}
	}
	double det = Saa * Sbb - Sab * Sab;
	double fit_a = det ? (Sat * Sbb - Sbt * Sab) / det : 0, fit_b = det ? (Saa * Sbt - Sab * Sat) / det : 0;
	for (int i = 0; i < natt; i++)
		net[i] = mig[i] > 0 ? (T[i] - fit_b * (double)(msc[i] + fsc[i])) / mig[i] : 0;
	double dm[MAX_ATT], dms[MAX_ATT], dfs[MAX_ATT];
	for (int i = 0; i < natt; i++) {
		dm[i] = mig[i];
		dms[i] = msc[i];
		dfs[i] = fsc[i];
	}
	stats_t sm = stats_of(dm, natt), sms = stats_of(dms, natt), sfs = stats_of(dfs, natt),
		snet = stats_of(net, natt);
	char extra[600];
	snprintf(extra, sizeof extra,
		 ", \"pgmigrate_success_median\": %.0f, \"pgmigrate_success_min\": %.0f, "
		 "\"pgmigrate_success_max\": %.0f, "
		 "\"compact_migrate_scanned_median\": %.0f, \"compact_free_scanned_median\": %.0f, "
		 "\"fit_ns_per_migrated_page\": %.2f, \"fit_ns_per_scanned_page\": %.3f, "
		 "\"net_of_scan_median\": %.2f, \"net_of_scan_min\": %.2f, \"net_of_scan_max\": %.2f, "
		 "\"attempts\": %d, \"attempts_discarded_few_migrations\": %d",
		 sm.median, sm.min, sm.max, sms.median, sfs.median, fit_a, fit_b, snet.median, snet.min,
		 snet.max, natt, natt - nvalid);
	if (nvalid < 3)
		add_unavailable("page_migrate_4k", "compaction rarely migrated our fragmented pages");
	else
		add_cost("page_migrate_4k", valid_per_mig, nvalid, "ns per migrated 4K page",
			 "Fault a 2 GiB MADV_NOHUGEPAGE mapping with 4K pages, MADV_DONTNEED every other "
			 "page (1 GiB left, fragmenting pageblocks), then time one write of 1 to "
			 "/proc/sys/vm/compact_memory; value = elapsed / pgmigrate_success delta from "
			 "/proc/vmstat (gross: includes scanning); attempts migrating < 8192 pages (our pages "
			 "above the scanners' meeting point) are discarded and retried. Stats over "
			 "all attempts: pgmigrate_*, fit_* = least squares of elapsed = "
			 "a*migrated + b*(migrate_scanned+free_scanned) over all fragmented and idle runs; "
			 "net_of_scan_* = (elapsed - b*scanned)/migrated per repeat.",
			 extra);
	if (nbi >= 3) {
		char ex2[96];
		snprintf(ex2, sizeof ex2, ", \"fit_ns_per_scanned_page\": %.3f, \"pair_solutions\": %d", fit_b, nbi);
		add_cost("compact_scan_per_page", bi, nbi, "ns per scanned page",
			 "Derived: per repeat, solve elapsed = a*pgmigrate_success + b*(compact_migrate_scanned"
			 "+compact_free_scanned) from the fragmented run and an idle compact_memory run (no "
			 "fragmenting workload) and report b; only positive solutions kept.",
			 ex2);
	} else {
		add_unavailable("compact_scan_per_page", "scan cost not separable from migration cost");
	}
}

/* ---------------- TLB / DRAM ---------------- */

/* Build a random cyclic pointer chase with one node per `stride` bytes of
 * buf (node at a random cache line inside its stride block); returns head. */
static void **build_chase(char *buf, size_t len, size_t stride)
{
	size_t n = len / stride;
	uint32_t *perm = malloc(n * sizeof(uint32_t));
	for (size_t i = 0; i < n; i++)
		perm[i] = (uint32_t)i;
	for (size_t i = n - 1; i > 0; i--) {
		size_t j = rnd() % (i + 1);
		uint32_t t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
	}
	size_t lines = stride / 64;
#define NODE(k) ((void **)(buf + (size_t)perm[k] * stride + (lines > 1 ? ((perm[k] * 2654435761u) % lines) * 64 : 0)))
	for (size_t i = 0; i < n; i++)
		*NODE(i) = (void *)NODE((i + 1) % n);
	void **head = NODE(0);
#undef NODE
	free(perm);
	return head;
}

static double chase(void **head, size_t steps)
{
	void **p = head;
	uint64_t t0 = now_ns();
	for (size_t i = 0; i < steps; i += 8) {
		p = *p; p = *p; p = *p; p = *p;
		p = *p; p = *p; p = *p; p = *p;
	}
	uint64_t t1 = now_ns();
	sink += (uintptr_t)p;
	return (double)(t1 - t0) / steps;
}

#define TLB_LEN (4 * GB)
#define DRAM_LEN (1 * GB)

/*
 * Latency of a dependent random load as a function of the working set, with
 * 4K pages and with THPs: one cache line per 4K page, a random cyclic
 * permutation over W bytes. memtwin's access model interpolates these
 * curves (in log W) and splits the 4K-vs-2M difference into a TLB-reach term.
 */
static void m_access_curve(void)
{
	static const size_t ws[] = {16 * MB, 64 * MB, 256 * MB, 1 * GB, 4 * GB};
	static const char *wname[] = {"16M", "64M", "256M", "1G", "4G"};
	for (int huge = 0; huge <= 1; huge++) {
		for (size_t w = 0; w < sizeof ws / sizeof ws[0]; w++) {
			char name[64], method[512];
			snprintf(name, sizeof name, "access_random_%s_ws%s", huge ? "2m" : "4k", wname[w]);
			progress("%s", name);
			char *b = map_anon(ws[w], huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
			if (!b) {
				add_unavailable(name, "mmap failed");
				continue;
			}
			touch_write(b, ws[w], huge ? HPG : PG);
			double frac = huge ? (double)anon_huge_bytes(b, ws[w]) / ws[w] : 0;
			void **h = build_chase(b, ws[w], PG);
			size_t steps = ws[w] / PG;
			if (steps < (4u << 20))
				steps = 4u << 20;
			chase(h, steps);
			double v[REPEATS];
			for (int rep = 0; rep < REPEATS; rep++)
				v[rep] = chase(h, steps);
			munmap(b, ws[w]);
			snprintf(method, sizeof method,
				 "Dependent-load pointer chase, random cyclic permutation with one cache line per 4K page "
				 "over a %s working set mapped with %s; %zu loads per repeat; per load.",
				 wname[w], huge ? "THPs (MADV_HUGEPAGE)" : "4K pages (MADV_NOHUGEPAGE)", steps);
			char extra[96];
			snprintf(extra, sizeof extra, ", \"working_set_bytes\": %zu, \"thp_fraction\": %.4f", ws[w], frac);
			add_cost(name, v, REPEATS, "ns per access", method, extra);
		}
	}
}

/*
 * Data TLB sizes from CPUID (AMD 0x80000006 L2 dTLB; Intel leaf 0x18), as
 * "costs" with unit "entries": the reach terms of the access model.
 */
static void m_tlb_entries(void)
{
	unsigned a, b, c, d;
	double e4 = 0, e2 = 0, e1 = 0;
	const char *how = "unavailable";
	if (__get_cpuid(0x80000006, &a, &b, &c, &d) && ((b >> 16) & 0xfff)) {
		e4 = (b >> 16) & 0xfff;
		e2 = (a >> 16) & 0xfff;
		if (__get_cpuid(0x80000019, &a, &b, &c, &d))
			e1 = (b >> 16) & 0xfff;
		how = "CPUID 0x80000006 (L2 data TLB entries for 4K and 2M pages) and 0x80000019 (1G)";
	} else if (__get_cpuid_count(0x18, 0, &a, &b, &c, &d)) {
		unsigned max = a;
		for (unsigned sub = 0; sub <= max; sub++) {
			if (!__get_cpuid_count(0x18, sub, &a, &b, &c, &d))
				break;
			unsigned type = d & 0x1f; /* 1 data, 3 unified */
			if (type != 1 && type != 3)
				continue;
			unsigned ways = b >> 16, sets = c;
			double n = (double)ways * sets;
			if (b & 1) e4 = n > e4 ? n : e4;
			if (b & 2) e2 = n > e2 ? n : e2;
			if (b & 8) e1 = n > e1 ? n : e1;
		}
		how = "CPUID leaf 0x18 (largest data/unified TLB level per page size)";
	}
	double v4[1] = {e4}, v2[1] = {e2}, v1[1] = {e1};
	char m[256];
	snprintf(m, sizeof m, "Entries of the data TLB for this page size, from %s.", how);
	add_cost("tlb_entries_4k", v4, 1, "entries", m, NULL);
	add_cost("tlb_entries_2m", v2, 1, "entries", m, NULL);
	add_cost("tlb_entries_1g", v1, 1, "entries", m, NULL);
}

static void m_tlb(void)
{
	progress("access_tlb_hit / access_4k_random_large / access_2m_random_large / dram");
	double hit[REPEATS], a4[REPEATS], a2[REPEATS], dr[REPEATS], sq[REPEATS];
	double d4[REPEATS], d2[REPEATS];

	/* small: 64 pages, one line per page, TLB- and L1-resident */
	char *s = map_anon(64 * PG, MADV_NOHUGEPAGE);
	touch_write(s, 64 * PG, PG);
	void **h = build_chase(s, 64 * PG, PG);
	chase(h, 1 << 20);
	for (int rep = 0; rep < REPEATS; rep++)
		hit[rep] = chase(h, 20u << 20);
	munmap(s, 64 * PG);

	/* DRAM latency with (mostly) TLB hits: 1 GiB THP, random cache line anywhere */
	char *d = map_anon(DRAM_LEN, MADV_HUGEPAGE);
	touch_write(d, DRAM_LEN, PG);
	double dfrac = (double)anon_huge_bytes(d, DRAM_LEN) / DRAM_LEN;
	h = build_chase(d, DRAM_LEN, 64);
	chase(h, 1 << 20);
	for (int rep = 0; rep < REPEATS; rep++)
		dr[rep] = chase(h, 2u << 20);
	/* sequential streaming read, same buffer */
	for (int rep = -1; rep < REPEATS; rep++) {
		const uint64_t *u = (const uint64_t *)d;
		size_t n = DRAM_LEN / 8;
		uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
		uint64_t t0 = now_ns();
		for (size_t i = 0; i < n; i += 4) {
			s0 += u[i];
			s1 += u[i + 1];
			s2 += u[i + 2];
			s3 += u[i + 3];
		}
		uint64_t t1 = now_ns();
		sink += s0 + s1 + s2 + s3;
		if (rep >= 0)
			sq[rep] = (double)(t1 - t0) / (DRAM_LEN / PG);
	}
	munmap(d, DRAM_LEN);

	/* 4 GiB with 4K pages */
	progress("  faulting 4 GiB of 4K pages");
	size_t steps = TLB_LEN / PG; /* = 1M: one full cycle */
	char *b = map_anon(TLB_LEN, MADV_NOHUGEPAGE);
	if (!b) {
		add_unavailable("access_4k_random_large", "mmap 4 GiB failed");
		return;
	}
	touch_write(b, TLB_LEN, PG);
	h = build_chase(b, TLB_LEN, PG);
	chase(h, steps);
	for (int rep = 0; rep < REPEATS; rep++)
		a4[rep] = chase(h, steps);
	munmap(b, TLB_LEN);

	progress("  faulting 4 GiB of THPs");
	b = map_anon(TLB_LEN, MADV_HUGEPAGE);
	if (!b) {
		add_unavailable("access_2m_random_large", "mmap 4 GiB failed");
		return;
	}
	touch_write(b, TLB_LEN, HPG);
	double frac = (double)anon_huge_bytes(b, TLB_LEN) / TLB_LEN;
	h = build_chase(b, TLB_LEN, PG);
	chase(h, steps);
	for (int rep = 0; rep < REPEATS; rep++)
		a2[rep] = chase(h, steps);
	munmap(b, TLB_LEN);

	for (int i = 0; i < REPEATS; i++) {
		d4[i] = a4[i] - dr[i];
		d2[i] = a2[i] - dr[i];
	}
	add_cost("access_tlb_hit", hit, REPEATS, "ns per access",
		 "Dependent-load pointer chase, random cyclic permutation, one cache line per page over "
		 "64 4K pages (L1-cache and L1-TLB resident); 20M loads / repeat; per load.",
		 NULL);
	char extra[128];
	snprintf(extra, sizeof extra, ", \"thp_fraction\": %.4f", dfrac);
	add_cost("access_dram_tlb_hit", dr, REPEATS, "ns per access",
		 "Dependent-load pointer chase over a random cyclic permutation of ALL cache lines of a "
		 "1 GiB THP-backed buffer (512 2M pages: fits the L2 TLB, 32x the LLC): DRAM latency "
		 "without guest page walks; 2M loads / repeat; per load.",
		 extra);
	add_cost("access_4k_random_large", a4, REPEATS, "ns per access",
		 "Dependent-load pointer chase, random cyclic permutation of the 1M 4K pages of a 4 GiB "
		 "MADV_NOHUGEPAGE buffer, one (pseudo-randomly placed) cache line per page; one full "
		 "cycle (1M loads) / repeat; per load (DRAM miss + TLB miss + 4K page walk).",
		 NULL);
	snprintf(extra, sizeof extra, ", \"thp_fraction\": %.4f, \"verified\": %s", frac,
		 frac >= 0.99 ? "true" : "false");
	add_cost("access_2m_random_large", a2, REPEATS, "ns per access",
		 "Same chase (one line per 4K page, 1M loads) over a 4 GiB MADV_HUGEPAGE buffer backed by "
		 "2048 PMD-mapped THPs; per load.",
		 extra);
	add_cost("tlb_miss_4k", d4, REPEATS, "ns per access",
		 "Derived: access_4k_random_large - access_dram_tlb_hit, paired per repeat = extra "
		 "latency of a dependent load whose 4K translation misses the TLBs (guest 4-level walk, "
		 "nested under the host's EPT/NPT walk in this VM).",
		 NULL);
	add_cost("tlb_miss_2m", d2, REPEATS, "ns per access",
		 "Derived: access_2m_random_large - access_dram_tlb_hit, paired per repeat = extra "
		 "latency of a load over 4 GiB of 2M guest pages (2048 PMD entries; may be ~0 if the "
		 "L2 TLB covers them; host backing page size is unknown).",
		 NULL);
	add_cost("dram_access_seq_per_4k", sq, REPEATS, "ns per 4K page",
		 "Sequential streaming read (4 independent uint64 sums) of an already-faulted 1 GiB "
		 "THP-backed buffer; total / 262144 pages.",
		 NULL);
}

/* ---------------- memory bandwidth and loaded latency ---------------- */

/*
 * What the simulator's bandwidth model (src/sim/membw.ts) reads: read, write
 * and copy bandwidth with 1..N threads (N = the CPUs this process may run
 * on; thread i pinned to the i-th of them, each thread on arrays of its own),
 * and the latency of a dependent load on the first CPU while the others
 * stream reads with an inject delay (Intel MLC's --loaded_latency, with as
 * many loading CPUs as this machine has).
 *
 * Bandwidth follows STREAM's conventions: the bytes counted are those the
 * program asks for (read: bytes read; write: bytes written; copy: 2 x bytes
 * copied), not the DRAM traffic (a store's read-for-ownership is not
 * counted). The loops are plain 8-byte loads and stores (gcc may vectorize
 * them): no memcpy/memset, whose large-size paths use non-temporal stores,
 * and no string instructions: what a program's loop does, as the workload
 * engine's patterns model it.
 */

#define MBW_LEN (512 * MB)             /* per array: 16x the 32 MiB LLC of the reference VM */
#define MBW_WINDOW_NS 200000000ULL     /* each repeat: the threads stream together for 200 ms */
#define MBW_CHUNK (64 * KB)            /* the stop flag is checked between chunks */
#define MBW_MAXT 64
#define LOADED_LEN (1 * GB)
#define LOADED_HOPS (1u << 20)

enum { MBW_IDLE, MBW_READ, MBW_WRITE, MBW_COPY, MBW_LOADER };
static const char *const mbw_kind_name[] = {"", "read", "write", "copy", "loader"};

struct mbw_worker {
	pthread_t th;
	int cpu;
	char *a, *b;    /* its own arrays (b: the copy's source) */
	int role;       /* this round: MBW_IDLE (sit out) or a kind */
	unsigned delay; /* MBW_LOADER: empty loop iterations after each 64-byte line */
	uint64_t bytes, wall_ns, cpu_ns;
	int failed;
};

static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	unsigned gen; /* a new round */
	int quit, active, done;
	int ready, stop; /* atomics */
	int nw;
	struct mbw_worker w[MBW_MAXT];
} mbw = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, 0, 0, 0, {{0}}};

static uint64_t thread_cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* One chunk; returns the bytes STREAM counts for it. The attribute keeps
 * gcc from turning the loops into memcpy/memset calls. */
__attribute__((optimize("no-tree-loop-distribute-patterns"))) static uint64_t
mbw_chunk(int kind, char *a, const char *b, size_t off, unsigned delay)
{
	uint64_t *d = (uint64_t *)(a + off);
	const uint64_t *s = (const uint64_t *)(b + off);
	const size_t n = MBW_CHUNK / 8;
	uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
	switch (kind) {
	case MBW_READ:
		for (size_t i = 0; i < n; i += 4) {
			s0 += d[i];
			s1 += d[i + 1];
			s2 += d[i + 2];
			s3 += d[i + 3];
		}
		sink += s0 + s1 + s2 + s3;
		return MBW_CHUNK;
	case MBW_WRITE:
		for (size_t i = 0; i < n; i++)
			d[i] = off + i;
		__asm__ volatile("" : : "r"(d) : "memory");
		return MBW_CHUNK;
	case MBW_COPY:
		for (size_t i = 0; i < n; i++)
			d[i] = s[i];
		__asm__ volatile("" : : "r"(d) : "memory");
		return 2 * MBW_CHUNK;
	default: /* MBW_LOADER: reads, a line at a time, with a delay after each */
		for (size_t i = 0; i < n; i += 8) {
			s0 += d[i] + d[i + 1] + d[i + 2] + d[i + 3] + d[i + 4] + d[i + 5] + d[i + 6] + d[i + 7];
			for (unsigned k = 0; k < delay; k++)
				__asm__ volatile("");
		}
		sink += s0;
		return MBW_CHUNK;
	}
}

static void *mbw_worker_main(void *arg)
{
	struct mbw_worker *me = arg;
	/* First touch by the worker on its own CPU: its node's memory, in THPs. */
	me->a = map_anon(MBW_LEN, MADV_HUGEPAGE);
	me->b = map_anon(MBW_LEN, MADV_HUGEPAGE);
	if (!me->a || !me->b)
		me->failed = 1;
	else {
		memset(me->a, 1, MBW_LEN);
		memset(me->b, 2, MBW_LEN);
	}
	unsigned seen = 0;
	for (;;) {
		pthread_mutex_lock(&mbw.mu);
		while (mbw.gen == seen && !mbw.quit)
			pthread_cond_wait(&mbw.cv, &mbw.mu);
		seen = mbw.gen;
		int role = me->role, quit = mbw.quit, active = mbw.active;
		pthread_mutex_unlock(&mbw.mu);
		if (quit)
			break;
		if (role == MBW_IDLE)
			continue;
		me->bytes = 0;
		if (!me->failed) {
			/* start together: no thread streams alone at the start of a window */
			__atomic_add_fetch(&mbw.ready, 1, __ATOMIC_SEQ_CST);
			while (__atomic_load_n(&mbw.ready, __ATOMIC_SEQ_CST) < active)
				sched_yield();
			uint64_t t0 = now_ns(), c0 = thread_cpu_ns();
			size_t off = 0;
			while (!__atomic_load_n(&mbw.stop, __ATOMIC_RELAXED)) {
				me->bytes += mbw_chunk(role, me->a, me->b, off, me->delay);
				off = off + MBW_CHUNK >= MBW_LEN ? 0 : off + MBW_CHUNK;
			}
			me->wall_ns = now_ns() - t0;
			me->cpu_ns = thread_cpu_ns() - c0;
		} else
			__atomic_add_fetch(&mbw.ready, 1, __ATOMIC_SEQ_CST);
		pthread_mutex_lock(&mbw.mu);
		mbw.done++;
		pthread_cond_broadcast(&mbw.cv);
		pthread_mutex_unlock(&mbw.mu);
	}
	if (me->a)
		munmap(me->a, MBW_LEN);
	if (me->b)
		munmap(me->b, MBW_LEN);
	return NULL;
}

/*
 * One round: workers with a role stream together; `during` runs on the
 * calling thread once they all stream (the chaser), else they stream for
 * MBW_WINDOW_NS. Returns the summed bandwidth (bytes/s) of the workers, the
 * lowest share of its wall time a worker was on its CPU in *oncpu, the sum
 * of bytes / CPU time (what they moved while they ran) in *per_cpu, adds
 * the workers' CPU time (s) to *cpu_s; or -1 if a worker could not map its
 * arrays.
 */
static double mbw_round(void (*during)(void *), void *arg, double *oncpu, double *per_cpu, double *cpu_s)
{
	pthread_mutex_lock(&mbw.mu);
	int active = 0;
	for (int i = 0; i < mbw.nw; i++)
		active += mbw.w[i].role != MBW_IDLE;
	mbw.active = active;
	__atomic_store_n(&mbw.ready, 0, __ATOMIC_SEQ_CST);
	__atomic_store_n(&mbw.stop, 0, __ATOMIC_SEQ_CST);
	mbw.done = 0;
	mbw.gen++;
	pthread_cond_broadcast(&mbw.cv);
	pthread_mutex_unlock(&mbw.mu);
	while (__atomic_load_n(&mbw.ready, __ATOMIC_SEQ_CST) < active)
		sched_yield();
	if (during)
		during(arg);
	else {
		struct timespec ts = {MBW_WINDOW_NS / 1000000000ULL, MBW_WINDOW_NS % 1000000000ULL};
		nanosleep(&ts, NULL);
	}
	__atomic_store_n(&mbw.stop, 1, __ATOMIC_SEQ_CST);
	pthread_mutex_lock(&mbw.mu);
	while (mbw.done < active)
		pthread_cond_wait(&mbw.cv, &mbw.mu);
	pthread_mutex_unlock(&mbw.mu);
	double bw = 0, low = 1;
	*per_cpu = 0;
	for (int i = 0; i < mbw.nw; i++) {
		struct mbw_worker *w = &mbw.w[i];
		if (w->role == MBW_IDLE)
			continue;
		if (w->failed || !w->wall_ns)
			return -1;
		bw += (double)w->bytes * 1e9 / w->wall_ns;
		*per_cpu += w->cpu_ns ? (double)w->bytes * 1e9 / w->cpu_ns : 0;
		*cpu_s += w->cpu_ns / 1e9;
		double f = (double)w->cpu_ns / w->wall_ns;
		if (f < low)
			low = f;
	}
	*oncpu = low;
	return bw;
}

static void mbw_roles(int role, int from, int to, unsigned delay)
{
	for (int i = 0; i < mbw.nw; i++) {
		mbw.w[i].role = i >= from && i < to ? role : MBW_IDLE;
		mbw.w[i].delay = delay;
	}
}

/* Sum of the non-idle jiffies and of steal over all CPUs, from /proc/stat. */
static void cpu_stat(long long *busy, long long *steal)
{
	long long v[10] = {0};
	FILE *f = fopen("/proc/stat", "r");
	if (f) {
		if (fscanf(f, "cpu %lld %lld %lld %lld %lld %lld %lld %lld", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6],
			   &v[7]) != 8)
			memset(v, 0, sizeof v);
		fclose(f);
	}
	*busy = v[0] + v[1] + v[2] + v[5] + v[6];
	*steal = v[7];
}

static double loadavg1(void)
{
	char b[64];
	return read_file("/proc/loadavg", b, sizeof b) < 0 ? -1 : strtod(b, NULL);
}

struct chase_arg {
	void **head;
	double ns;
};

static void chase_during(void *arg)
{
	struct chase_arg *c = arg;
	c->ns = chase(c->head, LOADED_HOPS);
}

static const unsigned loaded_delays[] = {0, 50, 200, 1000};

static void m_membw(void)
{
	progress("membw_{read,write,copy}_Nt / access_random_loaded_* / llc_bytes");
	/* the LLC size, which decides what share of a working set reaches DRAM */
	char sz[64];
	double llc[1] = {0};
	if (read_file("/sys/devices/system/cpu/cpu0/cache/index3/size", sz, sizeof sz) > 0) {
		char *e;
		llc[0] = strtod(sz, &e);
		llc[0] *= *e == 'K' ? KB : *e == 'M' ? MB : 1;
	}
	if (llc[0] > 0)
		add_cost("llc_bytes", llc, 1, "bytes",
			 "Size of the last-level cache of CPU 0, from /sys/devices/system/cpu/cpu0/cache/index3/size.",
			 NULL);
	else
		add_unavailable("llc_bytes", "no /sys/devices/system/cpu/cpu0/cache/index3/size");

	cpu_set_t allowed, one;
	sched_getaffinity(0, sizeof allowed, &allowed);
	int cpus[MBW_MAXT], n = 0;
	for (int c = 0; c < CPU_SETSIZE && n < MBW_MAXT; c++)
		if (CPU_ISSET(c, &allowed))
			cpus[n++] = c;
	mbw.nw = n;
	for (int i = 0; i < n; i++) {
		mbw.w[i].cpu = cpus[i];
		pthread_attr_t at;
		pthread_attr_init(&at);
		CPU_ZERO(&one);
		CPU_SET(cpus[i], &one);
		pthread_attr_setaffinity_np(&at, sizeof one, &one);
		pthread_create(&mbw.w[i].th, &at, mbw_worker_main, &mbw.w[i]);
		pthread_attr_destroy(&at);
	}
	/* the chaser (this thread) runs on the first CPU */
	CPU_ZERO(&one);
	CPU_SET(cpus[0], &one);
	sched_setaffinity(0, sizeof one, &one);

	double oncpu, ours = 0, percpu;
	long long busy0, steal0, busy1, steal1;
	for (int kind = MBW_READ; kind <= MBW_COPY; kind++) {
		for (int t = 1; t <= n; t++) {
			char name[64], method[1024], extra[384];
			snprintf(name, sizeof name, "membw_%s_%dt", mbw_kind_name[kind], t);
			double v[REPEATS], vc[REPEATS], low = 1, la0 = loadavg1();
			ours = 0;
			cpu_stat(&busy0, &steal0);
			uint64_t w0 = now_ns();
			int bad = 0;
			mbw_roles(kind, 0, t, 0);
			for (int rep = -1; rep < REPEATS && !bad; rep++) {
				double bw = mbw_round(NULL, NULL, &oncpu, &percpu, &ours);
				if (bw < 0)
					bad = 1;
				else if (rep >= 0) {
					v[rep] = bw;
					vc[rep] = percpu;
					if (oncpu < low)
						low = oncpu;
				}
			}
			if (bad) {
				add_unavailable(name, "a thread could not map its arrays");
				continue;
			}
			cpu_stat(&busy1, &steal1);
			double secs = (now_ns() - w0) / 1e9, hz = sysconf(_SC_CLK_TCK);
			snprintf(method, sizeof method,
				 "%d thread%s pinned one per CPU (CPUs %d..%d of the allowed set), each on its own "
				 "already-faulted 512 MiB THP-backed array%s (16x the reference VM's 32 MiB LLC); "
				 "%s; the threads start together and stream for 200 ms; per repeat the sum over "
				 "threads of bytes / the thread's wall time, STREAM's byte counting (%s).",
				 t, t > 1 ? "s" : "", cpus[0], cpus[t - 1], kind == MBW_COPY ? "s" : "",
				 kind == MBW_READ	? "plain 8-byte loads summed into 4 accumulators"
				 : kind == MBW_WRITE ? "plain 8-byte stores of a counter (write-allocate, not non-temporal)"
						     : "a[i] = b[i] with plain 8-byte loads and stores",
				 kind == MBW_COPY ? "2 x bytes copied" : kind == MBW_READ ? "bytes read" : "bytes written");
			stats_t sc = stats_of(vc, REPEATS);
			snprintf(extra, sizeof extra,
				 ", \"threads\": %d, \"oncpu_min\": %.3f, \"per_cpu_time_median\": %.0f, "
				 "\"loadavg_1m_before\": %.2f, \"loadavg_1m_after\": %.2f, \"other_busy_cpus\": %.2f, "
				 "\"steal_cpus\": %.3f",
				 t, low, sc.median, la0, loadavg1(),
				 /* CPUs busy besides our threads, averaged over the measurement */
				 (busy1 - busy0) / hz / secs - ours / secs, (steal1 - steal0) / hz / secs);
			add_cost(name, v, REPEATS, "bytes per second", method, extra);
		}
	}

	/* loaded latency: the chaser on cpus[0], loaders streaming on the others */
	progress("  access_random_loaded_* (1 GiB chase on CPU %d, %d loading CPU%s)", cpus[0], n - 1, n > 2 ? "s" : "");
	char *d = map_anon(LOADED_LEN, MADV_HUGEPAGE);
	if (!d) {
		add_unavailable("access_random_loaded_idle", "mmap failed");
	} else {
		touch_write(d, LOADED_LEN, PG);
		void **h = build_chase(d, LOADED_LEN, 64);
		struct chase_arg c = {h, 0};
		chase(h, LOADED_HOPS);
		int ndel = sizeof loaded_delays / sizeof loaded_delays[0];
		for (int k = -1; k < ndel; k++) {
			char name[64], bwname[64], method[768];
			double v[REPEATS], bwv[REPEATS];
			if (k >= 0 && n < 2) {
				snprintf(name, sizeof name, "access_random_loaded_d%u", loaded_delays[k]);
				add_unavailable(name, "one CPU: nothing can load memory while the chaser runs");
				continue;
			}
			if (k < 0)
				mbw_roles(MBW_IDLE, 0, 0, 0);
			else
				mbw_roles(MBW_LOADER, 1, n, loaded_delays[k]);
			for (int rep = -1; rep < REPEATS; rep++) {
				double bw = k < 0 ? (chase_during(&c), 0) : mbw_round(chase_during, &c, &oncpu, &percpu, &ours);
				if (rep >= 0) {
					v[rep] = c.ns;
					bwv[rep] = bw;
				}
			}
			if (k < 0) {
				add_cost("access_random_loaded_idle", v, REPEATS, "ns per access",
					 "Dependent-load pointer chase over a random cyclic permutation of all cache lines of "
					 "a 1 GiB THP-backed buffer on the first CPU, nothing else of ours running: the "
					 "idle point of the loaded-latency curve; 1M loads per repeat; per load.",
					 NULL);
				continue;
			}
			snprintf(name, sizeof name, "access_random_loaded_d%u", loaded_delays[k]);
			snprintf(bwname, sizeof bwname, "membw_loader_read_d%u", loaded_delays[k]);
			snprintf(method, sizeof method,
				 "The chase of access_random_loaded_idle on CPU %d while %d other CPU%s stream reads "
				 "over 512 MiB arrays of their own with an inject delay of %u empty loop iterations "
				 "after each 64-byte line (Intel MLC --loaded_latency); per load. The loaders' "
				 "bandwidth in the same repeats is %s.",
				 cpus[0], n - 1, n > 2 ? "s" : "", loaded_delays[k], bwname);
			add_cost(name, v, REPEATS, "ns per access", method, NULL);
			snprintf(method, sizeof method,
				 "Read bandwidth (bytes/s) of the loading CPUs while %s was measured: sum over "
				 "loaders of bytes read / wall time.",
				 name);
			add_cost(bwname, bwv, REPEATS, "bytes per second", method, NULL);
		}
		munmap(d, LOADED_LEN);
	}
	pthread_mutex_lock(&mbw.mu);
	mbw.quit = 1;
	pthread_cond_broadcast(&mbw.cv);
	pthread_mutex_unlock(&mbw.mu);
	for (int i = 0; i < n; i++)
		pthread_join(mbw.w[i].th, NULL);
	sched_setaffinity(0, sizeof allowed, &allowed);
}

/* ------------------------------------------------------------------ */

/* ------------------------------------------------------------------ */
/* swap to a file                                                      */
/* ------------------------------------------------------------------ */

#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif
#define SWAP_FILE_LEN (256 * MB)
#define SWAP_LEN (64 * MB)

static long vmstat_of(const char *key)
{
	FILE *f = fopen("/proc/vmstat", "r");
	char name[128];
	long v, r = -1;
	while (f && fscanf(f, "%127s %ld", name, &v) == 2)
		if (!strcmp(name, key))
			r = v;
	if (f)
		fclose(f);
	return r;
}

static long meminfo_kb(const char *key)
{
	FILE *f = fopen("/proc/meminfo", "r");
	char line[256];
	long r = -1;
	size_t n = strlen(key);
	while (f && fgets(line, sizeof line, f))
		if (!strncmp(line, key, n) && line[n] == ':')
			r = atol(line + n + 1);
	if (f)
		fclose(f);
	return r;
}

/* A swap file of SWAP_FILE_LEN: allocated (swapon refuses holes), the
 * version-1 header mkswap writes (last_page, "SWAPSPACE2"), fsync'd. */
static int make_swapfile(const char *path)
{
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return -1;
	char hdr[PG];
	memset(hdr, 0, sizeof hdr);
	uint32_t v[2] = {1, SWAP_FILE_LEN / PG - 1}; /* version, last_page (after bootbits[1024]) */
	memcpy(hdr + 1024, v, sizeof v);
	memcpy(hdr + PG - 10, "SWAPSPACE2", 10);
	int r = fallocate(fd, 0, 0, SWAP_FILE_LEN);
	if (r == 0 && pwrite(fd, hdr, PG, 0) != PG)
		r = -1;
	if (r == 0)
		r = fsync(fd);
	close(fd);
	return r;
}

/* Wait (at most 10 s) for the writeback MADV_PAGEOUT started to finish. */
static void wait_writeback(void)
{
	for (int i = 0; i < 200 && meminfo_kb("Writeback") > 0; i++)
		usleep(50000);
}

static void swap_unavailable(const char *why)
{
	add_unavailable("swapout_4k", why);
	add_unavailable("swapin_4k", why);
	add_unavailable("swapin_4k_ra", why);
	add_unavailable("swapin_swapcache_4k", why);
}

/*
 * swapout_4k, swapin_4k (readahead off), swapin_4k_ra (page-cluster 3),
 * swapin_swapcache_4k, on a swap file on this machine's root filesystem.
 * The swap file, swapon, vm.page-cluster and a cgroup-v1 memory group are
 * journaled (native/journal.c) before each change, as the executor does, so
 * a kill leaves a journal the next executor or calibrator run replays.
 * The pages are written in a memory cgroup of our own so that
 * memory.force_empty can push the swap cache out before a swap-in is timed
 * (MADV_PAGEOUT to a swap file leaves each page in the swap cache until
 * reclaim comes back for it).
 */
static void m_swap(void)
{
	progress("swapout_4k / swapin_4k / swapin_4k_ra / swapin_swapcache_4k");
	if (geteuid() != 0) {
		swap_unavailable("needs root (swapon)");
		return;
	}
	journal_replay_stale(stderr, "memtwin-calibrate: restore: ", 0);
	journal_begin();
	char path[256], cg[256], f[320], pid[32];
	mkdir("/var/lib/memtwin", 0755);
	mkdir("/var/lib/memtwin/swap", 0755);
	snprintf(path, sizeof path, "/var/lib/memtwin/swap/calibrate-%d.swap", (int)getpid());
	snprintf(cg, sizeof cg, "/sys/fs/cgroup/memory/memtwin-calibrate-%d", (int)getpid());
	snprintf(pid, sizeof pid, "%d", (int)getpid());
	if (journal_swapfile(path) < 0 || make_swapfile(path) < 0) {
		unlink(path);
		journal_restore_own();
		swap_unavailable("cannot create a swap file in /var/lib/memtwin/swap");
		return;
	}
	if (journal_swapon(path) < 0 || swapon(path, SWAP_FLAG_PREFER | 32767) < 0) {
		journal_restore_own();
		swap_unavailable("swapon failed");
		return;
	}
	if (journal_knob("/proc/sys/vm/page-cluster") < 0 || journal_cgroup(cg) < 0 || mkdir(cg, 0755) < 0) {
		journal_restore_own();
		swap_unavailable("needs a cgroup-v1 memory controller at /sys/fs/cgroup/memory");
		return;
	}
	snprintf(f, sizeof f, "%s/cgroup.procs", cg);
	write_file(f, pid);
	snprintf(f, sizeof f, "%s/memory.force_empty", cg);
	double out[REPEATS], in0[REPEATS], in3[REPEATS], cached[REPEATS];
	size_t np = SWAP_LEN / PG, quarter = np / 4;
	long bad = 0, short_out = 0, short_in = 0;
	for (int rep = -1; rep < REPEATS; rep++) {
		for (int ra = 0; ra < 2; ra++) {
			write_file("/proc/sys/vm/page-cluster", ra ? "3" : "0");
			char *p = map_anon(SWAP_LEN, MADV_NOHUGEPAGE);
			if (!p) {
				bad = -1;
				break;
			}
			for (size_t i = 0; i < np; i++)
				p[i * PG] = (char)(1 + i % 251); /* not zero-filled: written, not just marked in the zeromap */
			long so = vmstat_of("pswpout");
			uint64_t t0 = now_ns();
			madvise(p, SWAP_LEN, MADV_PAGEOUT);
			uint64_t t1 = now_ns();
			if (vmstat_of("pswpout") - so < (long)np)
				short_out++;
			wait_writeback();
			/* a quarter read back from the swap cache (minor faults) */
			volatile char *vp = p;
			uint64_t acc = 0, t2 = now_ns();
			for (size_t i = 0; i < quarter; i++)
				acc += vp[i * PG];
			uint64_t t3 = now_ns();
			/* the rest read from the file (major faults), after the swap cache is emptied */
			write_file(f, "0");
			long si = vmstat_of("pswpin");
			uint64_t t4 = now_ns();
			for (size_t i = quarter; i < np; i++)
				acc += vp[i * PG];
			uint64_t t5 = now_ns();
			if (vmstat_of("pswpin") - si < (long)(np - quarter) * 9 / 10)
				short_in++;
			sink += acc;
			for (size_t i = 0; i < np; i++)
				if (p[i * PG] != (char)(1 + i % 251))
					bad++;
			munmap(p, SWAP_LEN);
			if (rep < 0)
				continue;
			if (!ra) {
				out[rep] = (double)(t1 - t0) / np;
				cached[rep] = (double)(t3 - t2) / quarter;
				in0[rep] = (double)(t5 - t4) / (np - quarter);
			} else
				in3[rep] = (double)(t5 - t4) / (np - quarter);
		}
		if (bad < 0)
			break;
	}
	write_file("/sys/fs/cgroup/memory/cgroup.procs", pid);
	journal_restore_own(); /* cgroup, page-cluster, swapoff, the file */
	if (bad) {
		swap_unavailable(bad < 0 ? "mmap failed" : "pages read back from swap differ");
		return;
	}
	char extra[160];
	snprintf(extra, sizeof extra, ",\"short_repeats\": %ld", short_out);
	add_cost("swapout_4k", out, REPEATS, "ns per 4K page",
		 "MADV_PAGEOUT of a 64 MiB private anonymous MADV_NOHUGEPAGE mapping, each page written "
		 "(non-zero), with a 256 MiB swap file on the root filesystem (ext4 on a rotational virtio "
		 "disk) at priority 32767 as the only swap; time of the madvise call / 16384 pages (each "
		 "page added to the swap cache, unmapped and its write submitted; the write completes "
		 "asynchronously). short_repeats: repeats where pswpout grew less than 16384.",
		 extra);
	add_cost("swapin_swapcache_4k", cached, REPEATS, "ns per 4K page",
		 "After swapout_4k's MADV_PAGEOUT and its writeback, read one byte of each page of the "
		 "first quarter (4096 pages): each is still in the swap cache, so a minor fault maps it "
		 "(do_swap_page without I/O); total / 4096.",
		 NULL);
	snprintf(extra, sizeof extra, ",\"short_repeats\": %ld", short_in);
	add_cost("swapin_4k", in0, REPEATS, "ns per 4K page",
		 "vm.page-cluster 0 (no readahead): after swapout_4k, memory.force_empty of the process's "
		 "own cgroup-v1 memory group drops the swap cache, then one byte of each of the last "
		 "12288 pages is read in address order: a major fault each that waits for its 4K read "
		 "from the swap file; total / 12288. short_repeats: repeats (of both this and "
		 "swapin_4k_ra) where pswpin grew by less than 90% of the pages.",
		 extra);
	add_cost("swapin_4k_ra", in3, REPEATS, "ns per 4K page",
		 "As swapin_4k with vm.page-cluster 3 (swap_cluster_readahead of up to 8 slots, the "
		 "default, as the swap file is on a rotational disk): per page read, the major faults' "
		 "waits amortized over the pages read ahead with them; total / 12288. Not read by the "
		 "simulator: it checks the readahead model (swapin_4k per major fault, "
		 "swapin_swapcache_4k per page found read ahead).",
		 NULL);
}

/* ------------------------------------------------------------------ */
/* fork and copy-on-write; file pages                                  */
/* ------------------------------------------------------------------ */

#define FORK_LEN (64 * MB)

/* fork(): the parent's time in fork() itself; the child waits on `hold`
 * (if given: it keeps its mappings until the pipe closes) and exits. */
static pid_t fork_held(int hold_rd, int hold_wr, uint64_t *ns)
{
	uint64_t t0 = now_ns();
	pid_t pid = fork();
	uint64_t t1 = now_ns();
	if (pid == 0) {
		if (hold_rd >= 0) {
			char c;
			close(hold_wr);
			while (read(hold_rd, &c, 1) < 0 && errno == EINTR)
				;
		}
		_exit(0);
	}
	*ns = t1 - t0;
	return pid;
}

static void m_fork(void)
{
	progress("fork_mm / fork_copy_pte / fault_cow_4k / fault_wp_reuse_4k");
	double base[REPEATS], pte[REPEATS], cow[REPEATS], reuse[REPEATS];
	size_t np = FORK_LEN / PG;
	for (int rep = -1; rep < REPEATS; rep++) {
		uint64_t t_empty, t_full;
		pid_t pid = fork_held(-1, -1, &t_empty);
		if (pid < 0) {
			add_unavailable("fork_mm", "fork failed");
			return;
		}
		waitpid(pid, NULL, 0);
		char *p = map_anon(FORK_LEN, MADV_NOHUGEPAGE);
		int fds[2];
		if (!p || pipe(fds) < 0) {
			add_unavailable("fork_mm", "mmap or pipe failed");
			return;
		}
		touch_write(p, FORK_LEN, PG);
		/* The child holds its copy of the mapping: every parent write copies (wp_page_copy). */
		pid = fork_held(fds[0], fds[1], &t_full);
		close(fds[0]);
		uint64_t t0 = now_ns();
		for (size_t o = 0; o < FORK_LEN; o += PG)
			p[o] = 2;
		uint64_t t1 = now_ns();
		close(fds[1]);
		waitpid(pid, NULL, 0);
		munmap(p, FORK_LEN);
		/* The child exits at once: every parent write finds the page its own (wp_page_reuse). */
		p = map_anon(FORK_LEN, MADV_NOHUGEPAGE);
		if (!p) {
			add_unavailable("fork_mm", "mmap failed");
			return;
		}
		touch_write(p, FORK_LEN, PG);
		uint64_t t_unused;
		pid = fork_held(-1, -1, &t_unused);
		waitpid(pid, NULL, 0);
		uint64_t t2 = now_ns();
		for (size_t o = 0; o < FORK_LEN; o += PG)
			p[o] = 2;
		uint64_t t3 = now_ns();
		munmap(p, FORK_LEN);
		if (rep >= 0) {
			base[rep] = (double)t_empty;
			pte[rep] = t_full > t_empty ? (double)(t_full - t_empty) / np : 0;
			cow[rep] = (double)(t1 - t0) / np;
			reuse[rep] = (double)(t3 - t2) / np;
		}
	}
	add_cost("fork_mm", base, REPEATS, "ns per fork",
		 "fork() of the calibrator (no populated mapping of its own), timed in the parent from the "
		 "call to its return; the child exits at once.",
		 NULL);
	add_cost("fork_copy_pte", pte, REPEATS, "ns per 4K page",
		 "fork() with a 64 MiB MADV_NOHUGEPAGE private anonymous mapping written in full, minus "
		 "fork_mm, / 16384 pages: copy_page_range's work per present PTE (mapcount up, "
		 "write-protect both).",
		 NULL);
	add_cost("fault_cow_4k", cow, REPEATS, "ns per 4K page",
		 "After fork, with the child alive and still mapping them, the parent writes one byte to "
		 "each 4K page of that 64 MiB mapping: a write fault that copies the page (wp_page_copy); "
		 "total / 16384.",
		 NULL);
	add_cost("fault_wp_reuse_4k", reuse, REPEATS, "ns per 4K page",
		 "After fork and the child's exit, the parent writes one byte to each 4K page of the "
		 "64 MiB mapping: a write fault that finds the page its own again and reuses it "
		 "(wp_page_reuse); total / 16384.",
		 NULL);
}

#define FILE_LEN (64 * MB)

static long minflt(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_minflt + ru.ru_majflt;
}

/* Read one byte per 4K page of a MAP_SHARED mapping of fd: ns, and the faults taken. */
static uint64_t read_mapped(int fd, size_t len, long *faults)
{
	char *p = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return 0;
	volatile char *vp = p;
	uint64_t acc = 0;
	long f0 = minflt();
	uint64_t t0 = now_ns();
	for (size_t o = 0; o < len; o += PG)
		acc += vp[o];
	uint64_t t1 = now_ns();
	*faults = minflt() - f0;
	sink += acc;
	munmap(p, len);
	return t1 - t0;
}

static void m_filemap(void)
{
	progress("fault_file_4k_read / filemap_read_4k");
	/* A file on the disk of /var/tmp, unlinked at once: nothing is left if the calibrator dies. */
	char path[64];
	snprintf(path, sizeof path, "/var/tmp/memtwin-calibrate-%d", (int)getpid());
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		add_unavailable("fault_file_4k_read", "cannot create a file in /var/tmp");
		add_unavailable("filemap_read_4k", "cannot create a file in /var/tmp");
		return;
	}
	unlink(path);
	char *buf = malloc(MB);
	for (size_t i = 0; i < MB; i++)
		buf[i] = (char)(1 + i % 251);
	for (size_t o = 0; o < FILE_LEN; o += MB)
		if (write(fd, buf, MB) != (ssize_t)MB) {
			free(buf);
			close(fd);
			add_unavailable("fault_file_4k_read", "short write to /var/tmp");
			add_unavailable("filemap_read_4k", "short write to /var/tmp");
			return;
		}
	free(buf);
	fsync(fd);
	double warm[REPEATS], cold[REPEATS];
	size_t np = FILE_LEN / PG;
	for (int rep = -1; rep < REPEATS; rep++) {
		long fc, fw;
		posix_fadvise(fd, 0, FILE_LEN, POSIX_FADV_DONTNEED);
		uint64_t tc = read_mapped(fd, FILE_LEN, &fc);
		uint64_t tw = read_mapped(fd, FILE_LEN, &fw);
		if (!tc || !tw || fw <= 0) {
			close(fd);
			add_unavailable("fault_file_4k_read", "mmap of the file failed");
			add_unavailable("filemap_read_4k", "mmap of the file failed");
			return;
		}
		if (rep >= 0) {
			warm[rep] = (double)tw / fw;
			cold[rep] = tc > tw ? (double)(tc - tw) / np : 0;
		}
	}
	close(fd);
	add_cost("fault_file_4k_read", warm, REPEATS, "ns per fault",
		 "Read one byte per 4K page of a 64 MiB file on /var/tmp's disk mapped MAP_SHARED, all of "
		 "it in the page cache: time / faults taken (getrusage; each fault maps its 64K "
		 "fault-around window, filemap_map_pages).",
		 NULL);
	add_cost("filemap_read_4k", cold, REPEATS, "ns per 4K page",
		 "The same read right after POSIX_FADV_DONTNEED dropped the file's page cache (every page "
		 "read from the disk by mmap read-around with the disk's read_ahead_kb), minus the "
		 "cached read, / 16384 pages: a page-cache miss's I/O per page.",
		 NULL);
}

/* ------------------------------------------------------------------ */
/* multifd compression and the TCP socket (QEMU's multifd channels)    */
/* ------------------------------------------------------------------ */

/* zlib and zstd are opened at run time (dlopen of libz.so.1 and
 * libzstd.so.1) with the few prototypes below, so that the calibrator
 * builds without their development headers; a library that is missing
 * makes its costs "unavailable". The z_stream layout is zlib's public ABI
 * (unchanged since 1.0); deflateInit_ checks it against sizeof. */
typedef struct {
	const unsigned char *next_in;
	unsigned avail_in;
	unsigned long total_in;
	unsigned char *next_out;
	unsigned avail_out;
	unsigned long total_out;
	const char *msg;
	void *state;
	void *zalloc, *zfree, *opaque;
	int data_type;
	unsigned long adler, reserved;
} mt_z_stream;
#define MT_Z_NO_FLUSH 0
#define MT_Z_SYNC_FLUSH 2
static struct {
	const char *(*zlibVersion)(void);
	int (*deflateInit_)(mt_z_stream *, int, const char *, int);
	int (*deflate)(mt_z_stream *, int);
	int (*deflateEnd)(mt_z_stream *);
	int (*inflateInit_)(mt_z_stream *, const char *, int);
	int (*inflate)(mt_z_stream *, int);
	int (*inflateEnd)(mt_z_stream *);
} zl;
typedef struct {
	const void *src;
	size_t size, pos;
} mt_zstd_in;
typedef struct {
	void *dst;
	size_t size, pos;
} mt_zstd_out;
#define MT_ZSTD_c_compressionLevel 100
#define MT_ZSTD_e_continue 0
#define MT_ZSTD_e_flush 1
static struct {
	void *(*createCCtx)(void);
	size_t (*CCtx_setParameter)(void *, int, int);
	size_t (*compressStream2)(void *, mt_zstd_out *, mt_zstd_in *, int);
	size_t (*freeCCtx)(void *);
	void *(*createDCtx)(void);
	size_t (*decompressStream)(void *, mt_zstd_out *, mt_zstd_in *);
	size_t (*freeDCtx)(void *);
	unsigned (*isError)(size_t);
} zs;

static int load_sym(void *h, void *dst, const char *name)
{
	void *f = dlsym(h, name);
	if (!f)
		return -1;
	memcpy(dst, &f, sizeof f);
	return 0;
}

static const char *load_zlib(void)
{
	void *h = dlopen("libz.so.1", RTLD_NOW);
	if (!h)
		return "libz.so.1 not found (dlopen)";
	if (load_sym(h, &zl.zlibVersion, "zlibVersion") || load_sym(h, &zl.deflateInit_, "deflateInit_") ||
	    load_sym(h, &zl.deflate, "deflate") || load_sym(h, &zl.deflateEnd, "deflateEnd") ||
	    load_sym(h, &zl.inflateInit_, "inflateInit_") || load_sym(h, &zl.inflate, "inflate") ||
	    load_sym(h, &zl.inflateEnd, "inflateEnd"))
		return "libz.so.1 lacks a deflate/inflate symbol";
	return NULL;
}

static const char *load_zstd(void)
{
	void *h = dlopen("libzstd.so.1", RTLD_NOW);
	if (!h)
		return "libzstd.so.1 not found (dlopen)";
	if (load_sym(h, &zs.createCCtx, "ZSTD_createCCtx") || load_sym(h, &zs.CCtx_setParameter, "ZSTD_CCtx_setParameter") ||
	    load_sym(h, &zs.compressStream2, "ZSTD_compressStream2") || load_sym(h, &zs.freeCCtx, "ZSTD_freeCCtx") ||
	    load_sym(h, &zs.createDCtx, "ZSTD_createDCtx") || load_sym(h, &zs.decompressStream, "ZSTD_decompressStream") ||
	    load_sym(h, &zs.freeDCtx, "ZSTD_freeDCtx") || load_sym(h, &zs.isError, "ZSTD_isError"))
		return "libzstd.so.1 lacks a streaming symbol";
	return NULL;
}

#define MF_PAGES 16384 /* 64 MiB: 128 packets of 128 pages (MULTIFD_PACKET_SIZE 512 KiB) */
#define MF_PACKET 128
#define MF_CLASSES 4
static const char *const mf_class[MF_CLASSES] = {"zero", "same_filled", "text", "random"};
static const char *const mf_class_text[MF_CLASSES] = {
	"all zero bytes", "one non-zero byte value repeated (0x5a)",
	"English-like text: words drawn at random (xorshift64, fixed seed) from a list of 64 common words, "
	"separated by spaces, a newline after about 70 characters",
	"bytes from xorshift64 (incompressible)"};

static uint64_t mf_rng = 0x9e3779b97f4a7c15ULL;
static uint64_t xorshift64(void)
{
	mf_rng ^= mf_rng << 13;
	mf_rng ^= mf_rng >> 7;
	mf_rng ^= mf_rng << 17;
	return mf_rng;
}

static void mf_fill(unsigned char *buf, size_t len, int cls)
{
	static const char *const words[64] = {
	    "the",   "of",    "and",   "to",    "in",     "is",    "that",  "for",   "it",    "as",    "was",
	    "with",  "be",    "by",    "on",    "not",    "he",    "this",  "are",   "or",    "his",   "from",
	    "at",    "which", "but",   "have",  "an",     "had",   "they",  "you",   "were",  "their", "one",
	    "all",   "we",    "can",   "her",   "has",    "there", "been",  "if",    "more",  "when",  "will",
	    "would", "who",   "so",    "no",    "memory", "page",  "kernel", "guest", "time", "data",  "other",
	    "into",  "could", "than",  "first", "new",    "some",  "these", "may",   "system"};
	if (cls == 0) {
		memset(buf, 0, len);
	} else if (cls == 1) {
		memset(buf, 0x5a, len);
	} else if (cls == 3) {
		for (size_t i = 0; i + 8 <= len; i += 8) {
			uint64_t r = xorshift64();
			memcpy(buf + i, &r, 8);
		}
	} else {
		size_t i = 0, col = 0;
		while (i < len) {
			const char *w = words[xorshift64() & 63];
			for (const char *c = w; *c && i < len; c++, col++)
				buf[i++] = (unsigned char)*c;
			if (i < len)
				buf[i++] = col > 70 ? '\n' : ' ';
			col = col > 70 ? 0 : col + 1;
		}
	}
}

/* Compress MF_PAGES pages of one class as a multifd channel does: one
 * stream, each packet's pages fed one at a time, flushed at the packet's
 * last page (zlib: Z_SYNC_FLUSH; zstd: ZSTD_e_flush), then decompress the
 * packets in order with one stream. Thread CPU time per page each way and
 * the compressed bytes per page. Returns an error text or NULL. */
static const char *mf_run(int zstd, const unsigned char *in, unsigned char *out, size_t outcap, unsigned char *back,
			  double *c_ns, double *d_ns, double *bytes)
{
	size_t *plen = calloc(MF_PAGES / MF_PACKET, sizeof *plen);
	size_t total = 0;
	uint64_t t0 = thread_cpu_ns();
	if (!zstd) {
		mt_z_stream z;
		memset(&z, 0, sizeof z);
		if (zl.deflateInit_(&z, 1, zl.zlibVersion(), (int)sizeof z) != 0)
			return free(plen), "deflateInit failed";
		for (int k = 0; k < MF_PAGES / MF_PACKET; k++) {
			size_t start = total;
			for (int i = 0; i < MF_PACKET; i++) {
				z.next_in = in + ((size_t)k * MF_PACKET + i) * PG;
				z.avail_in = PG;
				do {
					z.next_out = out + total;
					z.avail_out = (unsigned)(outcap - total < 65536 ? outcap - total : 65536);
					unsigned before = z.avail_out;
					if (zl.deflate(&z, i == MF_PACKET - 1 ? MT_Z_SYNC_FLUSH : MT_Z_NO_FLUSH) < 0)
						return free(plen), "deflate failed";
					total += before - z.avail_out;
				} while (z.avail_in || z.avail_out == 0);
			}
			plen[k] = total - start;
		}
		zl.deflateEnd(&z);
	} else {
		void *cc = zs.createCCtx();
		zs.CCtx_setParameter(cc, MT_ZSTD_c_compressionLevel, 1);
		for (int k = 0; k < MF_PAGES / MF_PACKET; k++) {
			size_t start = total;
			for (int i = 0; i < MF_PACKET; i++) {
				mt_zstd_in zi = {in + ((size_t)k * MF_PACKET + i) * PG, PG, 0};
				int last = i == MF_PACKET - 1;
				size_t r;
				do {
					mt_zstd_out zo = {out + total, outcap - total, 0};
					r = zs.compressStream2(cc, &zo, &zi, last ? MT_ZSTD_e_flush : MT_ZSTD_e_continue);
					if (zs.isError(r))
						return free(plen), zs.freeCCtx(cc), "ZSTD_compressStream2 failed";
					total += zo.pos;
				} while (zi.pos < zi.size || (last && r != 0));
			}
			plen[k] = total - start;
		}
		zs.freeCCtx(cc);
	}
	uint64_t t1 = thread_cpu_ns();
	size_t off = 0;
	if (!zstd) {
		mt_z_stream z;
		memset(&z, 0, sizeof z);
		if (zl.inflateInit_(&z, zl.zlibVersion(), (int)sizeof z) != 0)
			return free(plen), "inflateInit failed";
		for (int k = 0; k < MF_PAGES / MF_PACKET; k++) {
			z.next_in = out + off;
			z.avail_in = (unsigned)plen[k];
			z.next_out = back + (size_t)k * MF_PACKET * PG;
			z.avail_out = MF_PACKET * PG;
			if (zl.inflate(&z, MT_Z_SYNC_FLUSH) < 0 || z.avail_out != 0)
				return free(plen), "inflate failed";
			off += plen[k];
		}
		zl.inflateEnd(&z);
	} else {
		void *dc = zs.createDCtx();
		for (int k = 0; k < MF_PAGES / MF_PACKET; k++) {
			mt_zstd_in zi = {out + off, plen[k], 0};
			mt_zstd_out zo = {back + (size_t)k * MF_PACKET * PG, MF_PACKET * PG, 0};
			while (zo.pos < zo.size) {
				size_t r = zs.decompressStream(dc, &zo, &zi);
				if (zs.isError(r) || (zi.pos == zi.size && zo.pos < zo.size && r == 0))
					return free(plen), zs.freeDCtx(dc), "ZSTD_decompressStream failed";
				if (zi.pos == zi.size && zo.pos < zo.size)
					break;
			}
			if (zo.pos != zo.size)
				return free(plen), zs.freeDCtx(dc), "ZSTD_decompressStream returned short";
			off += plen[k];
		}
		zs.freeDCtx(dc);
	}
	uint64_t t2 = thread_cpu_ns();
	free(plen);
	if (memcmp(in, back, (size_t)MF_PAGES * PG))
		return "the decompressed pages differ from the originals";
	*c_ns = (double)(t1 - t0) / MF_PAGES;
	*d_ns = (double)(t2 - t1) / MF_PAGES;
	*bytes = (double)total / MF_PAGES;
	return NULL;
}

static void m_multifd_compress(void)
{
	progress("multifd_zlib_* / multifd_zstd_* (compress, decompress, bytes per 4K page by content)");
	size_t len = (size_t)MF_PAGES * PG, outcap = len + len / 8 + 65536;
	unsigned char *in = malloc(len), *out = malloc(outcap), *back = malloc(len);
	const char *why[2] = {load_zlib(), load_zstd()};
	static const char *const alg[2] = {"zlib", "zstd"};
	for (int a = 0; a < 2; a++)
		for (int cls = 0; cls < MF_CLASSES; cls++) {
			char cn[64], dn[64], bn[64];
			snprintf(cn, sizeof cn, "multifd_%s_compress_4k_%s", alg[a], mf_class[cls]);
			snprintf(dn, sizeof dn, "multifd_%s_decompress_4k_%s", alg[a], mf_class[cls]);
			snprintf(bn, sizeof bn, "multifd_%s_bytes_4k_%s", alg[a], mf_class[cls]);
			const char *err = !in || !out || !back ? "malloc failed" : why[a];
			double c[REPEATS], d[REPEATS], b[REPEATS];
			mf_rng = 0x9e3779b97f4a7c15ULL;
			if (!err)
				mf_fill(in, len, cls);
			for (int rep = -1; rep < REPEATS && !err; rep++) {
				double cv, dv, bv;
				memset(back, 0xff, len);
				err = mf_run(a, in, out, outcap, back, &cv, &dv, &bv);
				if (!err && rep >= 0) {
					c[rep] = cv;
					d[rep] = dv;
					b[rep] = bv;
				}
			}
			if (err) {
				add_unavailable(cn, err);
				add_unavailable(dn, err);
				add_unavailable(bn, err);
				continue;
			}
			char m[1024];
			snprintf(m, sizeof m,
				 "%s at level 1 (QEMU's multifd-%s-level default), one stream as a multifd channel keeps: "
				 "64 MiB of pages holding %s, fed 4K at a time in packets of 128 pages (MULTIFD_PACKET_SIZE), "
				 "flushed at each packet's last page (%s); thread CPU time (CLOCK_THREAD_CPUTIME_ID) / 16384 pages. "
				 "libz.so.1 / libzstd.so.1 opened with dlopen.",
				 a ? "ZSTD_compressStream2" : "deflate", alg[a], mf_class_text[cls],
				 a ? "ZSTD_e_flush" : "Z_SYNC_FLUSH");
			add_cost(cn, c, REPEATS, "ns per 4K page", m, NULL);
			snprintf(m, sizeof m,
				 "%s of the packets compressed as multifd_%s_compress_4k_%s (one stream, a packet at a time into "
				 "its 128 pages, checked equal to the originals); thread CPU time / 16384 pages.",
				 a ? "ZSTD_decompressStream" : "inflate with Z_SYNC_FLUSH", alg[a], mf_class[cls]);
			add_cost(dn, d, REPEATS, "ns per 4K page", m, NULL);
			snprintf(m, sizeof m,
				 "Compressed bytes per 4K page (total output / 16384 pages, flush markers included) of "
				 "multifd_%s_compress_4k_%s: what a multifd channel sends for a page of this content.",
				 alg[a], mf_class[cls]);
			add_cost(bn, b, REPEATS, "bytes per 4K page", m, NULL);
		}
	free(in);
	free(out);
	free(back);
}

/* A stream socket between two threads on two CPUs: one writes 512 KiB at a
 * time (a multifd packet's pages) from an already-faulted buffer, the other
 * reads them into one; each thread's CPU time per 4K page. Over TCP on
 * loopback (what a migration channel is) and over an AF_UNIX socketpair (the
 * same copies in and out of socket buffers without TCP/IP), so that the
 * protocol's share of each side is the difference. */
#define TCP_BYTES (256 * MB)
#define TCP_CHUNK (512 * KB)
struct tcp_side {
	int fd;
	unsigned char *buf;
	uint64_t cpu;
	int err;
	int pin;
};

/* Run the calling thread on CPU `cpu` (< 0: leave it). */
static void pin_self(int cpu)
{
	if (cpu < 0)
		return;
	cpu_set_t one;
	CPU_ZERO(&one);
	CPU_SET(cpu, &one);
	sched_setaffinity(0, sizeof one, &one);
}

static void *tcp_reader(void *arg)
{
	struct tcp_side *s = arg;
	pin_self(s->pin);
	uint64_t c0 = thread_cpu_ns();
	size_t got = 0;
	while (got < TCP_BYTES) {
		ssize_t n = recv(s->fd, s->buf + (got % (64 * MB)), TCP_CHUNK - (got % TCP_CHUNK), MSG_WAITALL);
		if (n <= 0) {
			s->err = 1;
			break;
		}
		got += (size_t)n;
	}
	s->cpu = thread_cpu_ns() - c0;
	return NULL;
}

/* A connected pair of stream sockets: TCP over loopback (tcp != 0) or an AF_UNIX socketpair. 0 on success. */
static int stream_pair(int tcp, int *snd, int *rcv)
{
	if (!tcp) {
		int sv[2];
		if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
			return -1;
		*snd = sv[0];
		*rcv = sv[1];
		return 0;
	}
	int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof a;
	if (l < 0)
		return -1;
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 1) || getsockname(l, (struct sockaddr *)&a, &al)) {
		close(l);
		return -1;
	}
	int c = socket(AF_INET, SOCK_STREAM, 0);
	if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof a)) {
		close(l);
		return -1;
	}
	*snd = c;
	*rcv = accept(l, NULL, NULL);
	close(l);
	return *rcv < 0 ? -1 : 0;
}

/* REPEATS runs of 256 MiB through a stream pair, the writer on CPU cpus[0] and the reader on cpus[1]. */
static const char *stream_runs(int tcp, const int cpus[2], unsigned char *src, unsigned char *dst, double *snd, double *rcv)
{
	cpu_set_t old;
	sched_getaffinity(0, sizeof old, &old);
	pin_self(cpus[0]);
	const char *err = NULL;
	for (int rep = -1; rep < REPEATS && !err; rep++) {
		int c, r;
		if (stream_pair(tcp, &c, &r)) {
			err = tcp ? "loopback connection failed" : "socketpair failed";
			break;
		}
		struct tcp_side rd = {r, dst, 0, 0, cpus[1]};
		pthread_t t;
		pthread_create(&t, NULL, tcp_reader, &rd);
		uint64_t c0 = thread_cpu_ns();
		for (size_t sent = 0; sent < TCP_BYTES;) {
			ssize_t n = send(c, src + (sent % (64 * MB)), TCP_CHUNK - (sent % TCP_CHUNK), 0);
			if (n <= 0)
				break;
			sent += (size_t)n;
		}
		uint64_t cs = thread_cpu_ns() - c0;
		pthread_join(t, NULL);
		close(c);
		close(r);
		if (rd.err)
			err = "the reader got less than it was sent";
		else if (rep >= 0) {
			snd[rep] = (double)cs / (TCP_BYTES / PG);
			rcv[rep] = (double)rd.cpu / (TCP_BYTES / PG);
		}
	}
	sched_setaffinity(0, sizeof old, &old);
	return err;
}

static void m_tcp_socket(void)
{
	static const char *names[] = {"tcp_send_4k", "tcp_recv_4k", "unix_send_4k", "unix_recv_4k"};
	progress("tcp_send_4k / tcp_recv_4k (loopback), unix_send_4k / unix_recv_4k (socketpair)");
	/* The two threads on two CPUs of the allowed set, as a channel's sender and receiver are (on two hosts,
	 * or QEMU threads on different CPUs): the reader copies out what the writer's CPU put in the socket. */
	cpu_set_t allowed;
	int cpus[2] = {-1, -1}, n = 0;
	sched_getaffinity(0, sizeof allowed, &allowed);
	for (int c = 0; c < CPU_SETSIZE && n < 2; c++)
		if (CPU_ISSET(c, &allowed))
			cpus[n++] = c;
	if (n < 2) {
		for (int i = 0; i < 4; i++)
			add_unavailable(names[i], "needs two CPUs (the writer and the reader on different ones)");
		return;
	}
	double v[4][REPEATS];
	unsigned char *src = malloc(64 * MB), *dst = malloc(64 * MB);
	if (!src || !dst) {
		for (int i = 0; i < 4; i++)
			add_unavailable(names[i], "malloc failed");
		return;
	}
	memset(src, 0x5a, 64 * MB);
	memset(dst, 0, 64 * MB);
	const char *terr = stream_runs(1, cpus, src, dst, v[0], v[1]);
	const char *uerr = stream_runs(0, cpus, src, dst, v[2], v[3]);
	free(src);
	free(dst);
	char where[160];
	snprintf(where, sizeof where, "the writer pinned on CPU %d, the reader on CPU %d", cpus[0], cpus[1]);
	char m[4][1024];
	snprintf(m[0], sizeof m[0],
		 "send() of 256 MiB in 512 KiB calls (a multifd packet's pages) on a TCP connection over loopback "
		 "(default buffers, autotuned), from an already-faulted 64 MiB buffer (2x the LLC: read from DRAM, as a "
		 "guest page is), %s: the sending thread's CPU time (CLOCK_THREAD_CPUTIME_ID) / 65536 pages. The copy "
		 "into the socket and TCP's transmit path; on loopback the receive path's protocol processing runs in "
		 "the sender's softirq, and this kernel (no CONFIG_IRQ_TIME_ACCOUNTING) counts it in the sender's time. "
		 "tcp_send_4k - unix_send_4k is TCP/IP's share (transmit, and receive on loopback).",
		 where);
	snprintf(m[1], sizeof m[1],
		 "recv(MSG_WAITALL) of the same 256 MiB in 512 KiB calls into an already-faulted 64 MiB buffer by the "
		 "reading thread (%s): its CPU time / 65536 pages: the copy out of the socket (its data last written by "
		 "the other CPU) and the socket's bookkeeping, ACKs included. tcp_recv_4k - unix_recv_4k is TCP's share.",
		 where);
	snprintf(m[2], sizeof m[2],
		 "As tcp_send_4k on an AF_UNIX stream socketpair (%s): the copy into the socket's buffers without TCP/IP.",
		 where);
	snprintf(m[3], sizeof m[3], "As tcp_recv_4k on the AF_UNIX socketpair (%s): the copy out without TCP/IP.",
		 where);
	for (int i = 0; i < 4; i++) {
		const char *err = i < 2 ? terr : uerr;
		if (err)
			add_unavailable(names[i], err);
		else
			add_cost(names[i], v[i], REPEATS, "ns per 4K page", m[i], NULL);
	}
}

static void machine_info(void)
{
	struct utsname u;
	uname(&u);
	char model[256] = "unknown", line[4096];
	int hyper = 0, have_model = 0;
	FILE *f = fopen("/proc/cpuinfo", "r");
	while (f && fgets(line, sizeof line, f)) {
		if (!strncmp(line, "flags", 5) && strstr(line, " hypervisor"))
			hyper = 1;
		if (!have_model && !strncmp(line, "model name", 10)) {
			have_model = 1;
			char *c = strchr(line, ':');
			if (c) {
				c++;
				while (*c == ' ' || *c == '\t')
					c++;
				snprintf(model, sizeof model, "%s", c);
				char *nl = strchr(model, '\n');
				if (nl)
					*nl = 0;
			}
		}
		if (!strncmp(line, "flags", 5) && have_model)
			break;
	}
	int nodes = 0;
	char np[64];
	for (int i = 0; i < 1024; i++) {
		snprintf(np, sizeof np, "/sys/devices/system/node/node%d", i);
		if (access(np, F_OK) == 0)
			nodes++;
	}
	if (f)
		fclose(f);
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	long mem = sysconf(_SC_PHYS_PAGES) * sysconf(_SC_PAGESIZE);
	outf("{\"machine\": {\"kernel\": ");
	out_str(u.release);
	outf(", \"cpu_model\": ");
	out_str(model);
	outf(", \"cores\": %ld, \"mem_bytes\": %ld, \"virtualized\": %s, \"numa_nodes\": %d, "
	     "\"page_size\": %ld},\n \"costs\": {",
	     cores, mem, hyper ? "true" : "false", nodes, sysconf(_SC_PAGESIZE));
}


/* ---------------- virtio-balloon: host wakeups and message decoding ---------------- */

struct wake_ctx {
	int to_peer, from_peer; /* eventfds */
	long rounds;
};

static void *wake_peer(void *arg)
{
	struct wake_ctx *c = arg;
	uint64_t one = 1, got;
	for (long i = 0; i < c->rounds; i++) {
		if (read(c->to_peer, &got, sizeof got) != sizeof got ||
		    write(c->from_peer, &one, sizeof one) != sizeof one)
			return (void *)1;
	}
	return NULL;
}

/* One wakeup through an eventfd of a thread blocked in read(): what a kick's
 * ioeventfd does to QEMU's main loop, and an irqfd to a halted vCPU thread. */
static const char *eventfd_wakeup_runs(double *v)
{
	const long rounds = 20000;
	for (int rep = -1; rep < REPEATS; rep++) {
		struct wake_ctx c = {eventfd(0, 0), eventfd(0, 0), rounds};
		if (c.to_peer < 0 || c.from_peer < 0)
			return "eventfd failed";
		pthread_t th;
		pthread_create(&th, NULL, wake_peer, &c);
		uint64_t one = 1, got;
		uint64_t t0 = now_ns();
		for (long i = 0; i < rounds; i++) {
			if (write(c.to_peer, &one, sizeof one) != sizeof one ||
			    read(c.from_peer, &got, sizeof got) != sizeof got)
				return "eventfd ping-pong failed";
		}
		uint64_t t1 = now_ns();
		void *ret;
		pthread_join(th, &ret);
		close(c.to_peer);
		close(c.from_peer);
		if (ret)
			return "eventfd peer failed";
		if (rep >= 0)
			v[rep] = (double)(t1 - t0) / (2.0 * rounds);
	}
	return NULL;
}

/* Decode 4-byte PFN arrays (256 per message, as QEMU's handle_output reads
 * them) into (gpa, len) ranges; and scan u64 bitmap words for set bits. */
static void m_balloon(void)
{
	progress("eventfd_wakeup");
	double v[REPEATS];
	const char *err = eventfd_wakeup_runs(v);
	if (err)
		add_unavailable("eventfd_wakeup", err);
	else
		add_cost("eventfd_wakeup", v, REPEATS, "ns per wakeup of a thread blocked on an eventfd",
			 "Two threads, unpinned (so on different CPUs when free), ping-pong through two "
			 "eventfds: write(8 bytes) wakes the peer blocked in read(), which writes back; "
			 "20000 round trips, total / 40000 (write syscall, wakeup and IPI, context switch, "
			 "read return).",
			 NULL);

	progress("vmm_balloon_decode_entry");
	const size_t n = 1 << 21; /* 8 GiB of 4 KiB PFNs */
	uint32_t *pfns = malloc(n * sizeof *pfns);
	uint64_t *ranges = malloc(2 * n * sizeof *ranges);
	for (size_t i = 0; i < n; i++)
		pfns[i] = (uint32_t)(rnd() & 0x1fffff);
	for (int rep = -1; rep < REPEATS; rep++) {
		uint64_t t0 = now_ns();
		for (size_t m = 0; m < n; m += 256) {
			const volatile uint32_t *msg = pfns + m; /* read from the message buffer */
			for (size_t i = 0; i < 256; i++) {
				ranges[2 * (m + i)] = (uint64_t)msg[i] << 12;
				ranges[2 * (m + i) + 1] = 4096;
			}
		}
		uint64_t t1 = now_ns();
		sink += ranges[2 * (rnd() % n)];
		if (rep >= 0)
			v[rep] = (double)(t1 - t0) / n;
	}
	add_cost("vmm_balloon_decode_entry", v, REPEATS, "ns per message entry decoded into a range",
		 "8 GiB worth of random 4-byte PFNs (2^21) read 256 per message from a volatile buffer "
		 "and written out as (gpa u64, len u64) ranges; total / 2^21. Charged per list entry "
		 "(PFN, chunk, pfn+order) and per run of set bits of a bitmap.",
		 NULL);

	progress("vmm_balloon_decode_bitmap_word");
	const size_t words = n / 64;
	uint64_t *bm = calloc(words, sizeof *bm);
	for (size_t i = 0; i < words; i += 97) /* sparse: a set bit every 97 words */
		bm[i] = 1ULL << (i & 63);
	for (int rep = -1; rep < REPEATS; rep++) {
		uint64_t runs = 0;
		uint64_t t0 = now_ns();
		for (int pass = 0; pass < 64; pass++) {
			const volatile uint64_t *w = bm;
			for (size_t i = 0; i < words; i++) {
				uint64_t x = w[i];
				while (x) { /* find_next_bit: one run per set bit here */
					runs += __builtin_ctzll(x);
					x &= x - 1;
				}
			}
		}
		uint64_t t1 = now_ns();
		sink += runs;
		if (rep >= 0)
			v[rep] = (double)(t1 - t0) / (64.0 * words);
	}
	add_cost("vmm_balloon_decode_bitmap_word", v, REPEATS, "ns per 64-bit bitmap word scanned",
		 "A 2^21-bit bitmap (8 GiB of 4 KiB pages) with one set bit every 97 words, scanned word "
		 "by word for set bits (find_next_bit's loop: load, test, count trailing zeros) 64 times; "
		 "total / (64 * 32768 words). The runs found are charged as vmm_balloon_decode_entry.",
		 NULL);
	free(bm);
	free(ranges);
	free(pfns);
}

/* Measurement groups in run order: the cost names each one outputs (a
 * trailing '*' is a prefix) and the group it needs to have run first. */
static const struct group {
	const char *id;
	void (*fn)(void);
	const char *names;
	int needs; /* index of a prerequisite group, or -1 */
} groups[] = {
	{"mmap_mprotect", m_mmap_mprotect, "mmap_munmap_pair,mprotect_split,change_prot_numa_per_pte,syscall_null", -1},
	{"fault_anon_4k", m_fault_anon_4k, "fault_anon_4k_write,fault_anon_4k_read_zeropage", -1},
	{"fault_thp", m_fault_thp, "fault_thp_2m_write", -1},
	{"fault_hugetlb", m_fault_hugetlb, "fault_hugetlb_2m_write,fault_hugetlb_1g_write", -1}, /* keeps 2M pool for uffd */
	{"uffd_copy", m_uffd_copy, "uffdio_copy_4k,uffdio_copy_2m_anon_per_4k,uffdio_copy_2m_hugetlb", 3}, /* releases 2M pool */
	{"uffd_roundtrip", m_uffd_roundtrip, "uffd_fault_roundtrip_4k", 4},
	{"bandwidth", m_bandwidth, "zero_page_4k,memcpy_4k", -1},
	{"xbzrle", m_xbzrle, "xbzrle_encode_4k,xbzrle_encode_per_changed_byte,xbzrle_decode_per_changed_byte", -1},
	{"dontneed_munmap", m_dontneed_munmap, "madv_dontneed_4k,munmap_populated_4k,madv_dontneed_2m_thp", -1},
	{"collapse", m_collapse, "madv_collapse_2m", -1},
	{"khugepaged_scan", m_khugepaged_scan, "khugepaged_scan_per_pte", -1},
	{"thp_split", m_thp_split, "thp_split_pmd", -1},
	{"move_pages_pagemap", m_move_pages_pagemap, "move_pages_query,move_pages_same_node,pagemap_read_per_page", -1},
	{"tlb", m_tlb, "access_tlb_hit,access_dram_tlb_hit,access_4k_random_large,access_2m_random_large,tlb_miss_4k,tlb_miss_2m,dram_access_seq_per_4k", -1},
	{"access_curve", m_access_curve, "access_random_4k_ws*,access_random_2m_ws*", -1},
	{"tlb_entries", m_tlb_entries, "tlb_entries_4k,tlb_entries_2m,tlb_entries_1g", -1},
	{"compaction", m_compaction, "page_migrate_4k,compact_scan_per_page", -1},
	{"membw", m_membw, "llc_bytes,membw_read_*,membw_write_*,membw_copy_*,access_random_loaded_*,membw_loader_read_*", -1},
	{"swap", m_swap, "swapout_4k,swapin_4k,swapin_4k_ra,swapin_swapcache_4k", -1},
	{"fork", m_fork, "fork_mm,fork_copy_pte,fault_cow_4k,fault_wp_reuse_4k", -1},
	{"filemap", m_filemap, "fault_file_4k_read,filemap_read_4k", -1},
	{"balloon", m_balloon, "eventfd_wakeup,vmm_balloon_decode_entry,vmm_balloon_decode_bitmap_word", -1},
	{"multifd_compress", m_multifd_compress, "multifd_zlib_*,multifd_zstd_*", -1},
	{"tcp_socket", m_tcp_socket, "tcp_send_4k,tcp_recv_4k,unix_send_4k,unix_recv_4k", -1},
	/* last: its waits (60 s on a guest with free page reporting) keep nothing else waiting */
	{"fault_thp_reported", m_fault_thp_reported, "fault_thp_2m_write_reported", -1},
};
#define NGROUPS ((int)(sizeof groups / sizeof groups[0]))

/* Does group g output cost `name`? */
static int group_has(int g, const char *name)
{
	const char *s = groups[g].names;
	while (*s) {
		size_t n = strcspn(s, ",");
		if (n && s[n - 1] == '*' ? !strncmp(name, s, n - 1) && strlen(name) > n - 1
					 : strlen(name) == n && !strncmp(name, s, n))
			return 1;
		s += n + (s[n] == ',');
	}
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: memtwin-calibrate [--only NAME[,NAME...]] [--list] [--machine]\n"
		   "  --only     run only the measurements that output these costs (or group ids);\n"
		   "             the JSON then holds just those groups' costs\n"
		   "  --list     print the groups and the cost names they output, then exit\n"
		   "  --machine  print {\"machine\": ...} as the measurement would, measure nothing\n");
}

int main(int argc, char **argv)
{
	int run[NGROUPS];
	int selective = 0;
	for (int g = 0; g < NGROUPS; g++)
		run[g] = 1;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--list")) {
			for (int g = 0; g < NGROUPS; g++)
				printf("%-20s %s\n", groups[g].id, groups[g].names);
			return 0;
		} else if (!strcmp(argv[i], "--machine")) {
			/* The machine a measurement would be recorded for, so that the
			 * caller can refuse a merge into another machine's profile
			 * before measuring anything. No lock, no knob touched. */
			machine_info();
			outf("}}\n");
			fwrite(out, 1, out_len, stdout);
			return 0;
		} else if (!strcmp(argv[i], "--only") && i + 1 < argc) {
			if (!selective)
				for (int g = 0; g < NGROUPS; g++)
					run[g] = 0;
			selective = 1;
			char *list = strdup(argv[++i]), *save = NULL;
			for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
				int hit = 0;
				for (int g = 0; g < NGROUPS; g++)
					if (!strcmp(tok, groups[g].id) || group_has(g, tok))
						run[g] = hit = 1;
				if (!hit) {
					fprintf(stderr, "memtwin-calibrate: unknown measurement '%s' (see --list)\n", tok);
					return 2;
				}
			}
			free(list);
		} else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			usage(stdout);
			return 0;
		} else {
			usage(stderr);
			return 2;
		}
	}
	/* prerequisites (groups are listed after the ones they need) */
	for (int g = NGROUPS - 1; g >= 0; g--)
		if (run[g] && groups[g].needs >= 0)
			run[groups[g].needs] = 1;
	uint64_t start = now_ns();
	setvbuf(stderr, NULL, _IONBF, 0);
	/* Same machine-wide lock as memtwin-native: the knobs written here are global. */
	int lockfd = open("/tmp/memtwin-native.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0666);
	if (lockfd >= 0 && flock(lockfd, LOCK_EX | LOCK_NB) < 0) {
		fprintf(stderr, "memtwin-calibrate: waiting for a running memtwin executor to finish\n");
		flock(lockfd, LOCK_EX);
	}
	save_knobs();
	install_restore_handlers();
	if (geteuid() != 0)
		progress("WARNING: not root; sysfs knobs, hugetlb pools and compaction will be unavailable");

	/* Make sure MADV_HUGEPAGE regions get PMD THPs. */
	if (knobs[K_THP_EN].saved && !strcmp(knobs[K_THP_EN].orig, "never"))
		set_knob(K_THP_EN, "madvise");
	if (knobs[K_THP_DEFRAG].saved && !strcmp(knobs[K_THP_DEFRAG].orig, "never"))
		set_knob(K_THP_DEFRAG, "madvise");
	if (knobs[K_THP_2M_EN].saved && !strcmp(knobs[K_THP_2M_EN].orig, "never"))
		set_knob(K_THP_2M_EN, "inherit");
	progress("THP enabled=%s defrag=%s 2M=%s; nr_hugepages 2M=%s 1G=%s", knobs[0].orig,
		 knobs[1].orig, knobs[2].orig, knobs[3].orig, knobs[4].orig);

	machine_info();

	for (int g = 0; g < NGROUPS; g++)
		if (run[g])
			groups[g].fn();

	outf("\n }\n}\n");
	restore_knobs();
	fwrite(out, 1, out_len, stdout);
	fflush(stdout);
	progress("done in %.1f s", (now_ns() - start) / 1e9);
	return 0;
}
