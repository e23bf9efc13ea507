/*
 * The executor's journal (see journal.h and PROTOCOL.md, "Journal").
 *
 * One file per run, <dir>/<boot>-<pid>-<starttime>.journal, owned by the
 * run's guardian. The worker rewrites it whole (temp file, fsync, rename,
 * fsync of the directory) before each change it makes, so a kill at any
 * point leaves either the previous or the new journal, both readable. The
 * machine lock is held by every process of a run (guardian, worker, spawned
 * children inherit it), so whoever holds it knows that every journal in the
 * directory but its own belongs to a run that is gone.
 */
#define _GNU_SOURCE
#include "journal.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/swap.h>
#include <time.h>
#include <unistd.h>

int g_lock_fd = -1;

struct journal {
	char file[PATH_MAX];
	pid_t pid;
	uint64_t start;  /* the owner's starttime (/proc/PID/stat field 22) */
	char boot[64];   /* /proc/sys/kernel/random/boot_id when it was written */
	uint64_t created; /* CLOCK_REALTIME ns: replay order, newest first */
	struct jentry *e;
	unsigned char *done;
	int n;
};

static struct journal g_own; /* this run's journal (worker: the entries written so far) */

/* ------------------------------------------------------------------ */
/* small helpers                                                       */

struct sb {
	char *p;
	size_t n, cap;
};

static void sb_put(struct sb *b, const char *s, size_t n)
{
	if (b->n + n + 1 > b->cap) {
		size_t c = b->cap ? b->cap : 512;
		while (c < b->n + n + 1)
			c *= 2;
		char *q = realloc(b->p, c);
		if (!q) {
			fprintf(stderr, "memtwin-native: out of memory\n");
			_exit(3);
		}
		b->p = q;
		b->cap = c;
	}
	memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = 0;
}

__attribute__((format(printf, 2, 3))) static void sb_printf(struct sb *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *s = NULL;
	int n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n >= 0)
		sb_put(b, s, n);
	free(s);
}

/* a whole small file, NUL-terminated; length or -1 (errno) (journal.h) */
ssize_t read_small_file(const char *path, char *out, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	size_t n = 0;
	for (;;) {
		if (n + 1 >= cap)
			break;
		ssize_t r = read(fd, out + n, cap - 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = errno;
			close(fd);
			errno = e;
			return -1;
		}
		if (r == 0)
			break;
		n += r;
	}
	out[n] = 0;
	close(fd);
	return n;
}

static int put_file(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t r;
	size_t n = strlen(s);
	do
		r = write(fd, s, n);
	while (r < 0 && errno == EINTR);
	int e = errno;
	if (close(fd) < 0 && r >= 0)
		return -1;
	errno = e;
	return r < 0 ? -1 : 0;
}

static int write_all_fd(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t r = write(fd, p, n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		p += r;
		n -= r;
	}
	return 0;
}

static const char *ename(int e)
{
	const char *s = strerrorname_np(e);
	return s ? s : "EUNKNOWN";
}

static const char *journal_dir(void)
{
	const char *d = getenv("MEMTWIN_JOURNAL_DIR");
	return d && *d ? d : JOURNAL_DIR;
}

int mkdir_p(const char *dir)
{
	char p[PATH_MAX];
	snprintf(p, sizeof p, "%s", dir);
	for (char *s = p + 1; *s; s++)
		if (*s == '/') {
			*s = 0;
			if (mkdir(p, 0755) < 0 && errno != EEXIST)
				return -1;
			*s = '/';
		}
	if (mkdir(p, 0755) < 0 && errno != EEXIST)
		return -1;
	return 0;
}

static int fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int r = fsync(fd);
	int e = errno;
	close(fd);
	errno = e;
	return r;
}

/*
 * /proc/PID/stat field 22 (starttime, clock ticks since boot), or 0 if there
 * is no such process or it has exited: a zombie (state Z, or X) whose parent
 * died too waits for init to reap it, and holds nothing any more.
 */
static uint64_t proc_starttime(pid_t pid)
{
	char path[64], s[1024];
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	if (read_small_file(path, s, sizeof s) < 0)
		return 0;
	char *p = strrchr(s, ')'); /* comm may contain spaces and parentheses */
	if (!p || p[1] != ' ' || p[2] == 'Z' || p[2] == 'X')
		return 0;
	p++;
	/* fields 3.. follow; starttime is the 20th of them */
	for (int f = 3; f < 22 && p; f++)
		p = strchr(p + 1, ' ');
	return p ? strtoull(p + 1, NULL, 10) : 0;
}

static void boot_id(char *out, size_t cap)
{
	if (read_small_file("/proc/sys/kernel/random/boot_id", out, cap) < 0)
		snprintf(out, cap, "unknown");
	size_t n = strlen(out);
	while (n && isspace((unsigned char)out[n - 1]))
		out[--n] = 0;
}

/* ------------------------------------------------------------------ */
/* encoding: bytes outside [A-Za-z0-9._/-] as %XX (as the protocol does) */

static void enc(struct sb *b, const char *s)
{
	for (const unsigned char *c = (const unsigned char *)s; *c; c++)
		if (isalnum(*c) || *c == '.' || *c == '_' || *c == '/' || *c == '-')
			sb_put(b, (const char *)c, 1);
		else
			sb_printf(b, "%%%02X", *c);
}

static int hexd(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* strict percent-decoding into a new string; NULL if malformed */
static char *dec(const char *s)
{
	char *out = malloc(strlen(s) + 1), *w = out;
	for (; *s; s++) {
		if (*s == '%') {
			if (hexd(s[1]) < 0 || hexd(s[2]) < 0 || (s[1] == '0' && s[2] == '0')) {
				free(out);
				return NULL;
			}
			*w++ = (char)(hexd(s[1]) * 16 + hexd(s[2]));
			s += 2;
		} else if (isalnum((unsigned char)*s) || strchr("._/-", *s))
			*w++ = *s;
		else {
			free(out);
			return NULL;
		}
	}
	*w = 0;
	return out;
}

/* ------------------------------------------------------------------ */
/* the file                                                            */

static void journal_text(const struct journal *j, struct sb *b)
{
	sb_printf(b, "memtwin-journal %d\n", JOURNAL_VERSION);
	sb_printf(b, "owner %d %" PRIu64 " %s %" PRIu64 "\n", (int)j->pid, j->start, j->boot, j->created);
	int n = 0;
	for (int k = 0; k < j->n; k++) {
		if (j->done && j->done[k])
			continue;
		const struct jentry *e = &j->e[k];
		n++;
		switch (e->kind) {
		case J_KNOB:
			sb_put(b, "knob ", 5);
			enc(b, e->path);
			sb_put(b, " ", 1);
			enc(b, e->val);
			break;
		case J_HUGETLB:
			if (e->node >= 0)
				sb_printf(b, "hugetlb %" PRIu64 " %d %" PRIu64, e->kb, e->node, e->nr);
			else
				sb_printf(b, "hugetlb %" PRIu64 " - %" PRIu64, e->kb, e->nr);
			break;
		case J_SWAPON:
		case J_SWAPFILE:
		case J_CGROUP:
			sb_printf(b, "%s ", e->kind == J_SWAPON ? "swapon" : e->kind == J_SWAPFILE ? "swapfile" : "cgroup");
			enc(b, e->path);
			break;
		}
		sb_put(b, "\n", 1);
	}
	sb_printf(b, "end %d\n", n);
}

/* Write j (its entries not done) atomically: a kill at any point leaves the
 * old or the new file, never a partial one. An empty journal is removed
 * when remove_empty is set. 0 or -1 (errno). */
static int journal_save(const struct journal *j, int remove_empty)
{
	const char *dir = journal_dir();
	int left = 0;
	for (int k = 0; k < j->n; k++)
		left += !(j->done && j->done[k]);
	if (!left && remove_empty) {
		if (unlink(j->file) < 0 && errno != ENOENT)
			return -1;
		return fsync_dir(dir);
	}
	if (mkdir_p(dir) < 0)
		return -1;
	const char *base = strrchr(j->file, '/') + 1;
	char tmp[PATH_MAX + 16];
	snprintf(tmp, sizeof tmp, "%s/.%s.tmp", dir, base);
	struct sb b = {0};
	journal_text(j, &b);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		free(b.p);
		return -1;
	}
	int r = write_all_fd(fd, b.p, b.n);
	if (r == 0)
		r = fsync(fd);
	int e = errno;
	close(fd);
	free(b.p);
	if (r == 0)
		r = rename(tmp, j->file);
	if (r == 0)
		r = fsync_dir(dir);
	else {
		e = errno;
		unlink(tmp);
		errno = e;
	}
	return r;
}

static void journal_free(struct journal *j)
{
	for (int k = 0; k < j->n; k++) {
		free(j->e[k].path);
		free(j->e[k].val);
	}
	free(j->e);
	free(j->done);
	memset(j, 0, sizeof *j);
}

static void add_entry(struct journal *j, struct jentry e)
{
	j->e = realloc(j->e, (j->n + 1) * sizeof *j->e);
	j->done = realloc(j->done, j->n + 1);
	j->e[j->n] = e;
	j->done[j->n] = 0;
	j->n++;
}

enum { LOAD_OK, LOAD_CORRUPT, LOAD_VERSION, LOAD_IO };

static int parse_u64s(const char *s, uint64_t *v)
{
	if (!*s || !isdigit((unsigned char)*s))
		return -1;
	char *end;
	errno = 0;
	*v = strtoull(s, &end, 10);
	return *end || errno ? -1 : 0;
}

/* split line into exactly want space-separated fields (empty fields kept) */
static int fields(char *line, char **f, int want)
{
	int n = 0;
	char *s = line;
	while (s && n < want)
		f[n++] = strsep(&s, " ");
	return n == want && !s ? 0 : -1;
}

static char *decoded_path(const char *s)
{
	char *p = dec(s);
	if (p && p[0] != '/') {
		free(p);
		return NULL;
	}
	return p;
}

/* Load a journal file. LOAD_CORRUPT / LOAD_VERSION put the reason in why. */
static int journal_load(const char *file, struct journal *j, char *why, size_t wcap)
{
	memset(j, 0, sizeof *j);
	snprintf(j->file, sizeof j->file, "%s", file);
	FILE *f = fopen(file, "re");
	if (!f) {
		snprintf(why, wcap, "cannot read it (%s)", ename(errno));
		return LOAD_IO;
	}
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	int ln = 0, st = LOAD_OK, ended = 0;
	while ((len = getline(&line, &cap, f)) >= 0) {
		ln++;
		if (len == 0 || line[len - 1] != '\n') {
			snprintf(why, wcap, "line %d: incomplete (no newline)", ln);
			st = LOAD_CORRUPT;
			break;
		}
		line[len - 1] = 0;
		char *fl[6] = {0};
		if (ended) {
			snprintf(why, wcap, "line %d: text after the end line", ln);
			st = LOAD_CORRUPT;
			break;
		}
		if (ln == 1) {
			uint64_t v;
			if (strncmp(line, "memtwin-journal ", 16) || parse_u64s(line + 16, &v) < 0) {
				snprintf(why, wcap, "line 1: expected 'memtwin-journal <version>': not a memtwin journal");
				st = LOAD_CORRUPT;
				break;
			}
			if (v != JOURNAL_VERSION) {
				snprintf(why, wcap, "journal version %" PRIu64 ", this executor reads version %d%s", v,
				         JOURNAL_VERSION, v > JOURNAL_VERSION ? " (written by a newer executor)" : "");
				st = LOAD_VERSION;
				break;
			}
			continue;
		}
		if (ln == 2) {
			uint64_t pid, created;
			if (strncmp(line, "owner ", 6) || fields(line + 6, fl, 4) < 0 || parse_u64s(fl[0], &pid) < 0 ||
			    parse_u64s(fl[1], &j->start) < 0 || parse_u64s(fl[3], &created) < 0 || !*fl[2] ||
			    strlen(fl[2]) >= sizeof j->boot) {
				snprintf(why, wcap, "line 2: expected 'owner <pid> <starttime> <boot_id> <created>'");
				st = LOAD_CORRUPT;
				break;
			}
			j->pid = (pid_t)pid;
			j->created = created;
			snprintf(j->boot, sizeof j->boot, "%s", fl[2]);
			continue;
		}
		char *sp = strchr(line, ' ');
		if (!sp) {
			snprintf(why, wcap, "line %d: expected an entry (knob, hugetlb, swapon, swapfile, cgroup) or 'end <n>'",
			         ln);
			st = LOAD_CORRUPT;
			break;
		}
		*sp = 0;
		char *kw = line, *rest = sp + 1;
		struct jentry e = {0};
		int bad = 0;
		if (!strcmp(kw, "end")) {
			uint64_t n;
			if (parse_u64s(rest, &n) < 0 || n != (uint64_t)j->n) {
				snprintf(why, wcap, "line %d: 'end %s' but %d entries", ln, rest, j->n);
				st = LOAD_CORRUPT;
				break;
			}
			ended = 1;
			continue;
		} else if (!strcmp(kw, "knob")) {
			e.kind = J_KNOB;
			bad = fields(rest, fl, 2) < 0 || !(e.path = decoded_path(fl[0])) || !(e.val = dec(fl[1]));
		} else if (!strcmp(kw, "hugetlb")) {
			uint64_t node = 0;
			e.kind = J_HUGETLB;
			bad = fields(rest, fl, 3) < 0 || parse_u64s(fl[0], &e.kb) < 0 || !e.kb ||
			      (strcmp(fl[1], "-") && (parse_u64s(fl[1], &node) < 0 || node > 4096)) ||
			      parse_u64s(fl[2], &e.nr) < 0;
			e.node = fl[1] && strcmp(fl[1], "-") ? (int)node : -1;
		} else if (!strcmp(kw, "swapon") || !strcmp(kw, "swapfile") || !strcmp(kw, "cgroup")) {
			e.kind = kw[0] == 'c' ? J_CGROUP : !strcmp(kw, "swapon") ? J_SWAPON : J_SWAPFILE;
			bad = fields(rest, fl, 1) < 0 || !(e.path = decoded_path(fl[0]));
		} else {
			snprintf(why, wcap, "line %d: unknown entry '%.40s'", ln, kw);
			st = LOAD_CORRUPT;
			break;
		}
		if (bad) {
			free(e.path);
			free(e.val);
			snprintf(why, wcap, "line %d: malformed %s entry", ln, kw);
			st = LOAD_CORRUPT;
			break;
		}
		add_entry(j, e);
	}
	if (st == LOAD_OK && ferror(f)) {
		snprintf(why, wcap, "cannot read it (%s)", ename(errno));
		st = LOAD_IO;
	} else if (st == LOAD_OK && ln < 2) {
		snprintf(why, wcap, ln ? "no owner line" : "empty file");
		st = LOAD_CORRUPT;
	} else if (st == LOAD_OK && !ended) {
		snprintf(why, wcap, "no end line (truncated)");
		st = LOAD_CORRUPT;
	}
	free(line);
	fclose(f);
	return st;
}

/* ------------------------------------------------------------------ */
/* the run's identity and its journal (guardian, then worker)           */

void journal_begin(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	g_own.pid = getpid();
	g_own.start = proc_starttime(g_own.pid);
	boot_id(g_own.boot, sizeof g_own.boot);
	g_own.created = (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
	/* the boot id's first 8 characters: pid and starttime are unique within a boot */
	snprintf(g_own.file, sizeof g_own.file, "%s/%.8s-%d-%" PRIu64 ".journal", journal_dir(), g_own.boot,
	         (int)g_own.pid, g_own.start);
}

const char *journal_run_id(void)
{
	static char id[PATH_MAX];
	const char *base = strrchr(g_own.file, '/');
	if (!base)
		return "memtwin";
	snprintf(id, sizeof id, "%s", base + 1);
	char *dot = strrchr(id, '.');
	if (dot)
		*dot = 0;
	return id;
}

static int append(struct jentry e)
{
	if (!g_own.file[0]) {
		free(e.path);
		free(e.val);
		errno = ENOENT;
		return -1;
	}
	add_entry(&g_own, e);
	if (journal_save(&g_own, 0) < 0) {
		int err = errno;
		fprintf(stderr, "memtwin-native: cannot write the journal %s (%s); the change is not made\n", g_own.file,
		        ename(err));
		g_own.n--; /* not on disk: forget it */
		free(e.path);
		free(e.val);
		errno = err;
		return -1;
	}
	return 0;
}

static int journaled(enum jkind kind, const char *path, uint64_t kb)
{
	for (int k = 0; k < g_own.n; k++)
		if (g_own.e[k].kind == kind && (kind == J_HUGETLB ? g_own.e[k].kb == kb : !strcmp(g_own.e[k].path, path)))
			return 1;
	return 0;
}

/* a file nobody may write (no write bit: sysfs/procfs refuse even root, EACCES) cannot be changed */
static int read_only(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode) && !(st.st_mode & 0222);
}

int journal_knob(const char *path)
{
	if (journaled(J_KNOB, path, 0) || read_only(path))
		return 0;
	static char val[4000];
	if (read_small_file(path, val, sizeof val) < 0) {
		/* write-only or missing: nothing to restore it to (the write then fails or is an action) */
		fprintf(stderr, "memtwin-native: cannot read %s for saving (%s); not restored\n", path, ename(errno));
		return 0;
	}
	return append((struct jentry){.kind = J_KNOB, .path = strdup(path), .val = strdup(val)});
}

static void pool_path(char *out, size_t cap, uint64_t kb, int node, const char *file)
{
	if (node >= 0)
		snprintf(out, cap, "/sys/devices/system/node/node%d/hugepages/hugepages-%" PRIu64 "kB/%s", node, kb, file);
	else
		snprintf(out, cap, "/sys/kernel/mm/hugepages/hugepages-%" PRIu64 "kB/%s", kb, file);
}

static int read_u64_file(const char *path, uint64_t *v)
{
	char s[64];
	if (read_small_file(path, s, sizeof s) < 0)
		return -1;
	char *end;
	*v = strtoull(s, &end, 10);
	return end == s ? (errno = EINVAL, -1) : 0;
}

static int cmp_int(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

/* nodes with a pool of this size, sorted; their number */
static int pool_nodes(uint64_t kb, int *nodes, int max)
{
	int n = 0;
	DIR *d = opendir("/sys/devices/system/node");
	if (!d)
		return 0;
	struct dirent *de;
	while ((de = readdir(d)) && n < max) {
		int id, len = 0;
		if (sscanf(de->d_name, "node%d%n", &id, &len) != 1 || de->d_name[len] || id < 0)
			continue;
		char p[PATH_MAX];
		pool_path(p, sizeof p, kb, id, "nr_hugepages");
		if (access(p, F_OK) == 0)
			nodes[n++] = id;
	}
	closedir(d);
	qsort(nodes, n, sizeof *nodes, cmp_int);
	return n;
}

/* A pool is journaled per node (the global count is their sum): restoring
 * every node's count restores the global one too, on any node layout. */
int journal_hugetlb(uint64_t kb)
{
	if (journaled(J_HUGETLB, NULL, kb))
		return 0;
	char p[PATH_MAX];
	pool_path(p, sizeof p, kb, -1, "nr_hugepages");
	if (access(p, F_OK) < 0)
		return 0; /* no such page size: the write fails, nothing changes */
	int nodes[1024];
	int nn = pool_nodes(kb, nodes, 1024);
	uint64_t nr;
	if (!nn) {
		if (read_u64_file(p, &nr) < 0)
			return 0;
		return append((struct jentry){.kind = J_HUGETLB, .kb = kb, .node = -1, .nr = nr});
	}
	/* all nodes in one journal write */
	int before = g_own.n;
	for (int k = 0; k < nn; k++) {
		pool_path(p, sizeof p, kb, nodes[k], "nr_hugepages");
		if (read_u64_file(p, &nr) == 0)
			add_entry(&g_own, (struct jentry){.kind = J_HUGETLB, .kb = kb, .node = nodes[k], .nr = nr});
	}
	if (journal_save(&g_own, 0) < 0) {
		int err = errno;
		fprintf(stderr, "memtwin-native: cannot write the journal %s (%s); the change is not made\n", g_own.file,
		        ename(err));
		g_own.n = before;
		errno = err;
		return -1;
	}
	return 0;
}

int journal_swapon(const char *path)
{
	return journaled(J_SWAPON, path, 0) ? 0 : append((struct jentry){.kind = J_SWAPON, .path = strdup(path)});
}

int journal_swapfile(const char *path)
{
	return journaled(J_SWAPFILE, path, 0) ? 0 : append((struct jentry){.kind = J_SWAPFILE, .path = strdup(path)});
}

int journal_cgroup(const char *path)
{
	return journaled(J_CGROUP, path, 0) ? 0 : append((struct jentry){.kind = J_CGROUP, .path = strdup(path)});
}

static uint64_t default_hugepage_kb(void)
{
	char s[8192];
	if (read_small_file("/proc/meminfo", s, sizeof s) < 0)
		return 0;
	char *p = strstr(s, "\nHugepagesize:");
	return p ? strtoull(p + 14, NULL, 10) : 0;
}

uint64_t hugetlb_knob_size(const char *path)
{
	char rp[PATH_MAX];
	if (!realpath(path, rp))
		snprintf(rp, sizeof rp, "%s", path);
	uint64_t kb;
	int node, len = 0;
	if (!strcmp(rp, "/proc/sys/vm/nr_hugepages") || !strcmp(rp, "/proc/sys/vm/nr_hugepages_mempolicy"))
		return default_hugepage_kb();
	if (sscanf(rp, "/sys/kernel/mm/hugepages/hugepages-%" SCNu64 "kB/nr_hugepages%n", &kb, &len) == 1 && len &&
	    (!rp[len] || !strcmp(rp + len, "_mempolicy")))
		return kb;
	len = 0;
	if (sscanf(rp, "/sys/devices/system/node/node%d/hugepages/hugepages-%" SCNu64 "kB/nr_hugepages%n", &node, &kb,
	           &len) == 2 &&
	    len && !rp[len])
		return kb;
	return 0;
}

/* ------------------------------------------------------------------ */
/* undoing                                                             */

/* the value to write back: the bracketed word of "always [madvise] never", else the text without trailing space */
static void restore_value(const char *saved, char *out, size_t cap)
{
	const char *lb = strchr(saved, '[');
	const char *rb = lb ? strchr(lb, ']') : NULL;
	if (lb && rb) {
		size_t n = rb - lb - 1;
		if (n >= cap)
			n = cap - 1;
		memcpy(out, lb + 1, n);
		out[n] = 0;
		return;
	}
	snprintf(out, cap, "%s", saved);
	size_t n = strlen(out);
	while (n && isspace((unsigned char)out[n - 1]))
		out[--n] = 0;
}

static void describe(const struct jentry *e, char *out, size_t cap)
{
	switch (e->kind) {
	case J_KNOB:
		snprintf(out, cap, "%s", e->path);
		break;
	case J_HUGETLB:
		if (e->node >= 0)
			snprintf(out, cap, "hugepages-%" PRIu64 "kB nr_hugepages on node%d", e->kb, e->node);
		else
			snprintf(out, cap, "hugepages-%" PRIu64 "kB nr_hugepages", e->kb);
		break;
	case J_SWAPON:
		snprintf(out, cap, "swap area %s", e->path);
		break;
	case J_SWAPFILE:
		snprintf(out, cap, "swap file %s", e->path);
		break;
	case J_CGROUP:
		snprintf(out, cap, "cgroup %s", e->path);
		break;
	}
}

/* persistent pages of a pool: nr_hugepages minus surplus_hugepages (in-use pages left over a shrink) */
static int pool_read(const struct jentry *e, uint64_t *persistent, uint64_t *surplus)
{
	char p[PATH_MAX];
	uint64_t nr;
	pool_path(p, sizeof p, e->kb, e->node, "nr_hugepages");
	if (read_u64_file(p, &nr) < 0)
		return -1;
	pool_path(p, sizeof p, e->kb, e->node, "surplus_hugepages");
	if (read_u64_file(p, surplus) < 0)
		*surplus = 0;
	*persistent = nr > *surplus ? nr - *surplus : 0;
	return 0;
}

/* 1 done, 0 failed (note says why) */
static int undo_hugetlb(const struct jentry *e, struct sb *note)
{
	uint64_t cur, surp;
	if (pool_read(e, &cur, &surp) < 0) {
		sb_printf(note, "cannot read it (%s)", ename(errno));
		return 0;
	}
	if (cur == e->nr) {
		sb_printf(note, "%" PRIu64 " (unchanged)", cur);
		return 1;
	}
	char p[PATH_MAX], v[32];
	pool_path(p, sizeof p, e->kb, e->node, "nr_hugepages");
	snprintf(v, sizeof v, "%" PRIu64, e->nr);
	if (put_file(p, v) < 0 && errno != ENOMEM) {
		sb_printf(note, "%" PRIu64 " -> %" PRIu64 ": writing it failed (%s)", cur, e->nr, ename(errno));
		return 0;
	}
	uint64_t now;
	if (pool_read(e, &now, &surp) < 0) {
		sb_printf(note, "%" PRIu64 " -> %" PRIu64 ": cannot read it back (%s)", cur, e->nr, ename(errno));
		return 0;
	}
	if (now != e->nr) {
		sb_printf(note, "%" PRIu64 " -> %" PRIu64 ": the kernel gave %" PRIu64 "%s", cur, e->nr, now,
		          now < e->nr ? " (not enough free contiguous memory)" : "");
		return 0;
	}
	sb_printf(note, "%" PRIu64 " -> %" PRIu64, cur, e->nr);
	if (surp)
		sb_printf(note, " (%" PRIu64 " pages still in use stay surplus until freed)", surp);
	return 1;
}

static int undo_knob(const struct jentry *e, struct sb *note)
{
	char v[4096], cur[4096], curv[4096];
	restore_value(e->val, v, sizeof v);
	if (read_small_file(e->path, cur, sizeof cur) < 0)
		snprintf(curv, sizeof curv, "?");
	else
		restore_value(cur, curv, sizeof curv);
	if (!strcmp(curv, v)) {
		sb_printf(note, "%s (unchanged)", v);
		return 1;
	}
	if (read_only(e->path)) { /* a counter, never changed by the run: its write failed */
		sb_printf(note, "read-only; nothing to restore");
		return 1;
	}
	if (put_file(e->path, v) < 0) {
		sb_printf(note, "%s -> %s: writing it failed (%s)", curv, v, ename(errno));
		return 0;
	}
	sb_printf(note, "%s -> %s", curv, v);
	return 1;
}

/* 1 if path is an active swap area (/proc/swaps; spaces there are octal \040) */
static int swap_active(const char *path)
{
	char s[16384];
	if (read_small_file("/proc/swaps", s, sizeof s) < 0)
		return 0;
	for (char *l = strchr(s, '\n'); l && l[1]; l = strchr(l + 1, '\n')) {
		char name[PATH_MAX];
		size_t n = 0;
		for (char *c = l + 1; *c && *c != ' ' && *c != '\t' && *c != '\n' && n + 1 < sizeof name; c++) {
			if (c[0] == '\\' && isdigit((unsigned char)c[1]) && isdigit((unsigned char)c[2]) &&
			    isdigit((unsigned char)c[3])) {
				name[n++] = (char)((c[1] - '0') * 64 + (c[2] - '0') * 8 + (c[3] - '0'));
				c += 3;
			} else
				name[n++] = *c;
		}
		name[n] = 0;
		if (!strcmp(name, path))
			return 1;
	}
	return 0;
}

static int undo_swapon(const struct jentry *e, struct sb *note)
{
	if (!swap_active(e->path)) {
		sb_printf(note, "not in use");
		return 1;
	}
	/* swapoff reads every page back in: it needs free memory (pool shrinks ran first) */
	if (swapoff(e->path) < 0) {
		sb_printf(note, "swapoff failed (%s)", ename(errno));
		return 0;
	}
	sb_printf(note, "swapoff");
	return 1;
}

static int undo_swapfile(const struct jentry *e, struct sb *note)
{
	if (swap_active(e->path)) {
		sb_printf(note, "still an active swap area; not deleted");
		return 0;
	}
	if (unlink(e->path) < 0) {
		if (errno == ENOENT) {
			sb_printf(note, "already gone");
			return 1;
		}
		sb_printf(note, "unlink failed (%s)", ename(errno));
		return 0;
	}
	sb_printf(note, "deleted");
	return 1;
}

/* Move every task of cgroup dir to `to` (a cgroup.procs file); number moved, -1 on a failed move. */
static int move_tasks(const char *dir, const char *to, int *failed_errno)
{
	char procs[PATH_MAX + 16];
	snprintf(procs, sizeof procs, "%s/cgroup.procs", dir);
	static char s[1 << 16];
	if (read_small_file(procs, s, sizeof s) < 0)
		return 0;
	int moved = 0;
	for (char *t = strtok(s, "\n"); t; t = strtok(NULL, "\n")) {
		if (put_file(to, t) < 0) {
			if (errno == ESRCH) /* exited meanwhile */
				continue;
			*failed_errno = errno;
			return -1;
		}
		moved++;
	}
	return moved;
}

/*
 * A cgroup with tasks cannot be removed (rmdir: EBUSY), so its tasks go to
 * the parent first, or to the hierarchy's root when the parent cannot take
 * processes (cgroup v2's no-internal-process rule: EBUSY/EOPNOTSUPP). Tasks
 * that have exited but are not yet reaped keep it busy a little longer, so
 * rmdir is retried for up to a second. Children are removed before parents
 * because entries are undone in reverse order of creation.
 */
static int undo_cgroup(const struct jentry *e, struct sb *note)
{
	struct stat st;
	if (stat(e->path, &st) < 0) {
		sb_printf(note, "already gone");
		return 1;
	}
	char parent[PATH_MAX], root[PATH_MAX], to[PATH_MAX + 16];
	snprintf(parent, sizeof parent, "%s", e->path);
	char *sl = strrchr(parent, '/');
	if (sl && sl != parent)
		*sl = 0;
	/* the hierarchy's root: the topmost ancestor that still has cgroup.procs */
	snprintf(root, sizeof root, "%s", parent);
	for (;;) {
		char up[PATH_MAX];
		snprintf(up, sizeof up, "%s", root);
		char *u = strrchr(up, '/');
		if (!u || u == up)
			break;
		*u = 0;
		snprintf(to, sizeof to, "%s/cgroup.procs", up);
		if (access(to, F_OK) < 0)
			break;
		snprintf(root, sizeof root, "%s", up);
	}
	int moved = 0;
	for (int attempt = 0; attempt < 100; attempt++) {
		int err = 0;
		snprintf(to, sizeof to, "%s/cgroup.procs", parent);
		int m = move_tasks(e->path, to, &err);
		if (m < 0 && (err == EBUSY || err == EOPNOTSUPP)) {
			snprintf(to, sizeof to, "%s/cgroup.procs", root);
			m = move_tasks(e->path, to, &err);
		}
		if (m < 0) {
			sb_printf(note, "moving its tasks to %s failed (%s)", to, ename(err));
			return 0;
		}
		moved += m;
		if (rmdir(e->path) == 0 || errno == ENOENT) {
			sb_printf(note, "removed");
			if (moved)
				sb_printf(note, " (%d task%s moved to %.*s)", moved, moved > 1 ? "s" : "",
				          (int)(strlen(to) - strlen("/cgroup.procs")), to);
			return 1;
		}
		if (errno != EBUSY) {
			sb_printf(note, "rmdir failed (%s)", ename(errno));
			return 0;
		}
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	sb_printf(note, "rmdir failed (EBUSY: tasks or child cgroups remain)");
	return 0;
}

static int same_boot(const struct journal *j)
{
	char b[64];
	boot_id(b, sizeof b);
	return !strcmp(b, j->boot);
}

/*
 * Undo the entries of j, in an order Linux allows, removing each from the
 * file once undone (entries that fail stay in it):
 *   1. hugetlb pools that must shrink: frees memory for what follows;
 *   2. cgroups: tasks moved out, then rmdir, newest first (children first);
 *   3. swap areas: swapoff (needs free memory to read the pages back);
 *   4. swap files: unlink, once no longer active;
 *   5. knobs, newest first (e.g. min_free_kbytes back down);
 *   6. hugetlb pools that must grow: last, when the most memory is free.
 * After a reboot the knobs, pools, swap areas and cgroups are already back
 * to what the boot set, so only the files are removed.
 * Report lines go to out (when given); failures always. Returns failures.
 */
static int replay(struct journal *j, FILE *out, const char *prefix, int verbose, int *undone)
{
	int boot = same_boot(j), failed = 0;
	unsigned char *tried = calloc(j->n + 1, 1);
	static const struct {
		enum jkind kind;
		int grow;
	} phases[] = {{J_HUGETLB, 0}, {J_CGROUP, 0}, {J_SWAPON, 0}, {J_SWAPFILE, 0}, {J_KNOB, 0}, {J_HUGETLB, 1}};
	for (size_t ph = 0; ph < sizeof phases / sizeof phases[0]; ph++)
		for (int k = j->n - 1; k >= 0; k--) {
			struct jentry *e = &j->e[k];
			if (j->done[k] || tried[k] || e->kind != phases[ph].kind)
				continue;
			struct sb note = {0};
			int ok;
			if (!boot && e->kind != J_SWAPFILE) {
				sb_printf(&note, "reset by the reboot since the run; left as it is");
				ok = 1;
			} else if (e->kind == J_HUGETLB) {
				uint64_t cur, surp;
				if (pool_read(e, &cur, &surp) == 0 && (cur < e->nr) != phases[ph].grow) {
					free(note.p);
					continue; /* the other phase does it */
				}
				ok = undo_hugetlb(e, &note);
			} else if (e->kind == J_KNOB)
				ok = undo_knob(e, &note);
			else if (e->kind == J_SWAPON)
				ok = undo_swapon(e, &note);
			else if (e->kind == J_SWAPFILE)
				ok = undo_swapfile(e, &note);
			else
				ok = undo_cgroup(e, &note);
			tried[k] = 1;
			char d[PATH_MAX + 64];
			describe(e, d, sizeof d);
			if (ok) {
				j->done[k] = 1;
				(*undone)++;
				if (journal_save(j, 1) < 0)
					fprintf(stderr, "memtwin-native: cannot update the journal %s (%s)\n", j->file,
					        ename(errno));
			} else
				failed++;
			if (out && (verbose || !ok))
				fprintf(out, "%s  %s%s: %s\n", prefix, ok ? "" : "FAILED ", d, note.p ? note.p : "");
			free(note.p);
		}
	free(tried);
	if (!failed && journal_save(j, 1) < 0) /* nothing left: the file goes */
		fprintf(stderr, "memtwin-native: cannot remove the journal %s (%s)\n", j->file, ename(errno));
	if (failed && out)
		fprintf(out, "%s  %d change%s could not be undone; %s keeps %s\n", prefix, failed, failed > 1 ? "s" : "",
		        j->file, failed > 1 ? "them" : "it");
	return failed;
}

int journal_restore_own(void)
{
	char why[256];
	struct journal j;
	/* the worker may have died between writing a temp file and renaming it */
	char tmp[PATH_MAX + 16];
	const char *base = strrchr(g_own.file, '/');
	if (!base)
		return 0;
	snprintf(tmp, sizeof tmp, "%s/.%s.tmp", journal_dir(), base + 1);
	unlink(tmp);
	if (access(g_own.file, F_OK) < 0 && errno == ENOENT)
		return 0; /* the run changed nothing */
	int st = journal_load(g_own.file, &j, why, sizeof why);
	if (st != LOAD_OK) {
		fprintf(stderr, "memtwin-native: guardian: cannot restore from %s: %s\n", g_own.file, why);
		journal_free(&j);
		return 1;
	}
	int undone = 0;
	int failed = replay(&j, stderr, "memtwin-native: guardian:", 0, &undone);
	journal_free(&j);
	return failed ? 1 : 0;
}

static int by_created_desc(const void *a, const void *b)
{
	const struct journal *x = a, *y = b;
	return x->created < y->created ? 1 : x->created > y->created ? -1 : strcmp(x->file, y->file);
}

int journal_replay_stale(FILE *out, const char *prefix, int say_nothing)
{
	const char *dir = journal_dir();
	DIR *d = opendir(dir);
	if (!d) {
		if (errno == ENOENT) {
			if (say_nothing)
				fprintf(out, "%snothing to restore\n", prefix);
			return 0;
		}
		fprintf(out, "%scannot read the journal directory %s (%s)\n", prefix, dir, ename(errno));
		return 3;
	}
	const char *own = strrchr(g_own.file, '/');
	own = own ? own + 1 : "";
	struct journal *js = NULL;
	int nj = 0, status = 0, refused = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		const char *nm = de->d_name;
		size_t len = strlen(nm);
		char path[PATH_MAX + 256];
		snprintf(path, sizeof path, "%s/%s", dir, nm);
		if (nm[0] == '.' && len > 12 && !strcmp(nm + len - 12, ".journal.tmp")) {
			/* a writer died between writing it and renaming it: its journal is the previous version */
			int mine = *own && strlen(own) == len - 5 && !strncmp(nm + 1, own, len - 5);
			if (!mine)
				unlink(path);
			continue;
		}
		if (nm[0] == '.' || len <= 8 || strcmp(nm + len - 8, ".journal") || !strcmp(nm, own))
			continue;
		char why[256];
		struct journal j;
		int st = journal_load(path, &j, why, sizeof why);
		if (st != LOAD_OK) {
			fprintf(out, "%sjournal %s: %s; refused, not deleted (restore by hand, then remove it)\n", prefix, path,
			        why);
			journal_free(&j);
			refused++;
			continue;
		}
		js = realloc(js, (nj + 1) * sizeof *js);
		js[nj++] = j;
	}
	closedir(d);
	qsort(js, nj, sizeof *js, by_created_desc); /* the newest first: it was made on top of the older ones */
	int undone = 0, failed = 0, replayed = 0;
	for (int k = 0; k < nj; k++) {
		struct journal *j = &js[k];
		if (same_boot(j) && j->start && proc_starttime(j->pid) == j->start) {
			fprintf(out, "%sjournal %s: its executor (pid %d) is still running; not touched\n", prefix, j->file,
			        (int)j->pid);
			refused++;
			continue;
		}
		fprintf(out, "%sjournal %s (executor pid %d, gone):\n", prefix, j->file, (int)j->pid);
		replayed++;
		failed += replay(j, out, prefix, 1, &undone);
	}
	for (int k = 0; k < nj; k++)
		journal_free(&js[k]);
	free(js);
	if (failed || refused)
		status = 1;
	if (replayed)
		fprintf(out, "%srestored %d change%s from %d journal%s%s\n", prefix, undone, undone == 1 ? "" : "s", replayed,
		        replayed == 1 ? "" : "s", failed ? "; some could not be undone (FAILED above)" : "");
	else if (!refused && say_nothing)
		fprintf(out, "%snothing to restore\n", prefix);
	return status;
}

/* ------------------------------------------------------------------ */
/* the machine lock                                                    */

/*
 * One executor at a time per machine: the knobs an executor writes are
 * global (THP mode, hugetlb pools), so two concurrent runs would save and
 * restore each other's values. flock's lock belongs to the open file
 * description, which the worker inherits by fork and spawned children keep
 * across exec, so the lock is free only when every process of the run has
 * exited, after the guardian has restored everything.
 */
int machine_lock(int timeout_ms)
{
	int fd = open(MACHINE_LOCK, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
	if (fd < 0)
		return 0; /* best effort */
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		fprintf(stderr, "memtwin-native: waiting for another executor to finish\n");
		if (timeout_ms < 0) {
			while (flock(fd, LOCK_EX) < 0 && errno == EINTR)
				;
		} else {
			int waited = 0;
			while (flock(fd, LOCK_EX | LOCK_NB) < 0) {
				if (waited >= timeout_ms) {
					close(fd);
					return -1;
				}
				struct timespec ts = {0, 10 * 1000 * 1000};
				nanosleep(&ts, NULL);
				waited += 10;
			}
		}
	}
	g_lock_fd = fd;
	return 0;
}
