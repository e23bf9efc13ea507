/*
 * The executor's journal: every change a run makes to the machine is written
 * (and fsync'd) to a file in a machine-wide directory before the change is
 * made, and removed from it when the change is undone. Whoever takes the
 * machine lock next replays what a dead run left. Format and rules:
 * native/PROTOCOL.md, "Journal".
 */
#ifndef MEMTWIN_JOURNAL_H
#define MEMTWIN_JOURNAL_H

#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#define JOURNAL_VERSION 1
#define JOURNAL_DIR "/var/lib/memtwin/journal" /* MEMTWIN_JOURNAL_DIR overrides it */
#define MACHINE_LOCK "/tmp/memtwin-native.lock"

enum jkind {
	J_KNOB,     /* a sysfs/procfs file and its original contents */
	J_HUGETLB,  /* one hugetlb pool (page size in kB, node or -1 = global) and its original nr_hugepages */
	J_SWAPON,   /* a swap area the run may have enabled: swapoff */
	J_SWAPFILE, /* a file the run may have created for swap: unlink (after swapoff) */
	J_CGROUP,   /* a cgroup directory the run may have created: move its tasks out, rmdir */
};

struct jentry {
	enum jkind kind;
	char *path; /* knob, swap area/file or cgroup path; NULL for hugetlb */
	char *val;  /* knob: original contents */
	uint64_t kb, nr;
	int node;
};

/* The machine lock's fd once taken (inherited by the worker and spawned children). */
extern int g_lock_fd;

/* Take the machine lock: wait forever (timeout_ms < 0) or at most timeout_ms.
 * 0 on success, -1 if it could not be taken in time. */
/* A whole small file, NUL-terminated, into out[cap]: its length, or -1 with errno set. */
ssize_t read_small_file(const char *path, char *out, size_t cap);

int machine_lock(int timeout_ms);

/* Guardian, before forking the worker: this run's identity and journal file
 * (the file itself is only created by the first change). */
void journal_begin(void);

/* Worker, before each change: journal the original state. 0, or -1 with errno
 * set when the journal could not be written (the change must not be made). */
int journal_knob(const char *path);
int journal_hugetlb(uint64_t kb);
int journal_swapon(const char *path);
int journal_swapfile(const char *path);
int journal_cgroup(const char *path);

/* The run's identity, "<boot>-<pid>-<starttime>" (its journal's name without
 * .journal): swap files and cgroup directories the run makes carry it. */
const char *journal_run_id(void);

/* mkdir -p (mode 0755); 0 or -1 (errno). */
int mkdir_p(const char *dir);

/* If path is one of a hugetlb pool's nr_hugepages files (sysfs or
 * /proc/sys/vm), its page size in kB, else 0. */
uint64_t hugetlb_knob_size(const char *path);

/* Guardian, after the worker and every child are gone: undo this run's
 * journal; failures go to stderr and stay in the journal. */
int journal_restore_own(void);

/* Replay every journal a dead run left (the caller holds the machine lock).
 * Each line of the report goes to out after prefix. Returns 0 when everything
 * was restored (or there was nothing: said when say_nothing), 1 when a change could not be undone
 * or a journal was refused (it is kept), 3 when the directory cannot be read. */
int journal_replay_stale(FILE *out, const char *prefix, int say_nothing);

#endif
