/*
 * memtwin-guest-agent: runs inside the oracle guest (see docs/oracle-guest.md)
 * and lets the host run many op-scripts, one native executor each, over one
 * virtio-serial port.
 *
 * Lines from the host:
 *   @start          run a fresh memtwin-native (guardian + worker) on CPU 0; answer @started PID
 *   @end            close the executor's stdin (EOF: it finishes and exits)
 *   @kill           SIGTERM the executor's guardian (it kills the worker and restores knobs)
 *   @ping           answer @pong
 *   anything else   forwarded to the running executor's stdin (an op line)
 * Lines to the host:
 *   @ready RELEASE  once, when the agent starts
 *   {...}           the executor's stdout, line by line, unchanged
 *   @stderr TEXT    each line the executor wrote on stderr
 *   @exit STATUS    the executor exited (after all its output); STATUS as a shell gives it
 *   @error TEXT     a line the agent could not act on
 *
 * usage: memtwin-guest-agent PORT-DEVICE EXECUTOR
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAXLINE (1 << 24)

struct buf {
	char *p;
	size_t n, cap;
};

static int port = -1;
static const char *executor;
static pid_t child = -1;
static int child_status = -1; /* set once the executor is reaped */
static int cin = -1, cout = -1, cerr = -1;
static struct buf pin, cob, ceb;

static void put(const char *s, size_t n)
{
	while (n) {
		ssize_t w = write(port, s, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				struct pollfd p = {port, POLLOUT, 0};
				poll(&p, 1, 100);
				continue;
			}
			return; /* host gone: output is lost, as it would be on a broken pipe */
		}
		s += w;
		n -= (size_t)w;
	}
}

static void say(const char *fmt, ...)
{
	char line[4096];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof line - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof line - 2)
		n = sizeof line - 2;
	line[n++] = '\n';
	put(line, (size_t)n);
}

static void append(struct buf *b, const char *s, size_t n)
{
	if (b->n + n > b->cap) {
		size_t c = b->cap ? b->cap : 65536;
		while (c < b->n + n)
			c *= 2;
		b->p = realloc(b->p, c);
		if (!b->p)
			abort();
		b->cap = c;
	}
	memcpy(b->p + b->n, s, n);
	b->n += n;
}

/* Calls f on each complete line of b (without its newline), keeps the rest. */
static void lines(struct buf *b, void (*f)(char *, size_t))
{
	size_t start = 0;
	for (size_t i = 0; i < b->n; i++)
		if (b->p[i] == '\n') {
			b->p[i] = 0;
			f(b->p + start, i - start);
			start = i + 1;
		}
	memmove(b->p, b->p + start, b->n - start);
	b->n -= start;
	if (b->n > MAXLINE) /* a runaway line: drop it rather than grow without bound */
		b->n = 0;
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static void start_executor(void)
{
	if (child > 0) {
		say("@error an executor is already running (pid %d)", (int)child);
		return;
	}
	int i[2], o[2], e[2];
	if (pipe2(i, O_CLOEXEC) || pipe2(o, O_CLOEXEC) || pipe2(e, O_CLOEXEC)) {
		say("@error pipe: %s", strerror(errno));
		return;
	}
	pid_t p = fork();
	if (p < 0) {
		say("@error fork: %s", strerror(errno));
		return;
	}
	if (p == 0) {
		setsid();
		/* On CPU 0 (node 0), where the simulator starts a script's processes; threads and
		 * spawned processes inherit it unless an op pins them elsewhere. */
		cpu_set_t cpus;
		CPU_ZERO(&cpus);
		CPU_SET(0, &cpus);
		sched_setaffinity(0, sizeof cpus, &cpus);
		dup2(i[0], 0);
		dup2(o[1], 1);
		dup2(e[1], 2);
		signal(SIGPIPE, SIG_DFL);
		execl(executor, executor, (char *)NULL);
		dprintf(2, "exec %s: %s\n", executor, strerror(errno));
		_exit(127);
	}
	close(i[0]);
	close(o[1]);
	close(e[1]);
	child = p;
	cin = i[1];
	cout = o[0];
	cerr = e[0];
	cob.n = ceb.n = 0;
	child_status = -1;
	say("@started %d", (int)p);
}

static void forward_out(char *s, size_t n)
{
	s[n] = '\n';
	put(s, n + 1);
}

static void forward_err(char *s, size_t n)
{
	(void)n;
	say("@stderr %.4000s", s);
}

static void to_executor(const char *s, size_t n)
{
	if (cin < 0) {
		say("@error no executor running for: %.200s", s);
		return;
	}
	/* the executor reads everything it is sent; a full pipe only waits */
	const char nl = '\n';
	while (n) {
		ssize_t w = write(cin, s, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			close_fd(&cin);
			return;
		}
		s += w;
		n -= (size_t)w;
	}
	while (write(cin, &nl, 1) < 0 && errno == EINTR)
		;
}

static void from_host(char *s, size_t n)
{
	if (n && s[n - 1] == '\r')
		s[--n] = 0;
	if (!strcmp(s, "@start"))
		start_executor();
	else if (!strcmp(s, "@end"))
		close_fd(&cin);
	else if (!strcmp(s, "@kill")) {
		if (child > 0)
			kill(child, SIGTERM);
		close_fd(&cin);
	} else if (!strcmp(s, "@ping"))
		say("@pong");
	else if (s[0] == '@')
		say("@error unknown control line: %.200s", s);
	else
		to_executor(s, n);
}

/* Drain a pipe of the executor into b; returns 0 at EOF. */
static int drain(int fd, struct buf *b, void (*f)(char *, size_t))
{
	char tmp[65536];
	ssize_t r = read(fd, tmp, sizeof tmp);
	if (r < 0)
		return errno == EINTR || errno == EAGAIN ? 1 : 0;
	if (r == 0)
		return 0;
	append(b, tmp, (size_t)r);
	lines(b, f);
	return 1;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s PORT-DEVICE EXECUTOR\n", argv[0]);
		return 2;
	}
	executor = argv[2];
	signal(SIGPIPE, SIG_IGN);
	port = open(argv[1], O_RDWR | O_CLOEXEC);
	if (port < 0) {
		fprintf(stderr, "memtwin-guest-agent: open %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	struct utsname u;
	uname(&u);
	say("@ready %s", u.release);
	for (;;) {
		struct pollfd p[3] = {{port, POLLIN, 0}, {cout, POLLIN, 0}, {cerr, POLLIN, 0}};
		int r = poll(p, 3, child > 0 ? 50 : 1000);
		if (r < 0 && errno != EINTR)
			return 1;
		if (p[0].revents & POLLIN) {
			char tmp[65536];
			ssize_t k = read(port, tmp, sizeof tmp);
			if (k > 0) {
				append(&pin, tmp, (size_t)k);
				lines(&pin, from_host);
			}
		} else if (p[0].revents & (POLLHUP | POLLERR)) {
			/* the host closed its end: stop any executor and wait for the next connection */
			if (child > 0)
				kill(child, SIGTERM);
			close_fd(&cin);
			pin.n = 0;
			struct timespec ts = {0, 100 * 1000 * 1000};
			nanosleep(&ts, NULL);
		}
		if (cout >= 0 && (p[1].revents & (POLLIN | POLLHUP)) && !drain(cout, &cob, forward_out))
			close_fd(&cout);
		if (cerr >= 0 && (p[2].revents & (POLLIN | POLLHUP)) && !drain(cerr, &ceb, forward_err))
			close_fd(&cerr);
		/* As PID 1 the agent also reaps every orphan (spawned children outliving their guardian). */
		int st;
		pid_t w;
		while ((w = waitpid(-1, &st, WNOHANG)) > 0)
			if (w == child)
				child_status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		if (child > 0 && cout < 0 && cerr < 0 && child_status >= 0) {
			close_fd(&cin);
			child = -1;
			say("@exit %d", child_status);
		}
	}
}
