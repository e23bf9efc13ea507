/*
 * memtwin-dirty: the guest program of `memtwin validate qemu`
 * (scripts/validate-qemu/, docs/validate-qemu.md). Runs in the validation
 * initramfs under QEMU and prints what it did to the console:
 *
 *   memtwin-dirty TOUCH_MIB WS_MIB RATE FREE_MIB [word|page]
 *
 * 1. FREE_MIB: maps that much anonymous memory, writes every page
 *    (non-zero), and unmaps it: the guest kernel's free lists then hold pages
 *    whose content is not zero (what free page hints let migration skip).
 * 2. TOUCH_MIB: maps and writes that much (non-zero), and keeps it.
 * 3. Prints "MTD READY" with /proc/meminfo's MemTotal and MemFree (kB).
 * 4. WS_MIB > 0 and RATE > 0: writes one 8-byte word in each page of the
 *    first WS_MIB of the touched memory (with `page`: rewrites the whole
 *    page with a new byte, what xbzrle cannot encode), round robin, RATE pages per second
 *    (in 10 ms steps), forever, and prints "MTD RATE <t_ms> <pages> <pages/s>"
 *    each second: the dirty rate measured in the guest (CLOCK_MONOTONIC).
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#define MiB (1024UL * 1024UL)

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static long meminfo(const char *key) {
  FILE *f = fopen("/proc/meminfo", "r");
  char line[256];
  long v = -1;
  size_t n = strlen(key);
  if (!f) return -1;
  while (fgets(line, sizeof line, f))
    if (!strncmp(line, key, n) && line[n] == ':') {
      v = strtol(line + n + 1, NULL, 10);
      break;
    }
  fclose(f);
  return v;
}

static unsigned char *map_and_fill(unsigned long bytes, unsigned char fill) {
  unsigned char *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    perror("memtwin-dirty: mmap");
    exit(1);
  }
  madvise(p, bytes, MADV_NOHUGEPAGE);
  for (unsigned long off = 0; off < bytes; off += PAGE) memset(p + off, fill, PAGE);
  return p;
}

int main(int argc, char **argv) {
  if (argc != 5 && !(argc == 6 && (!strcmp(argv[5], "word") || !strcmp(argv[5], "page")))) {
    fprintf(stderr, "usage: memtwin-dirty TOUCH_MIB WS_MIB RATE FREE_MIB [word|page]\n");
    return 2;
  }
  int whole_page = argc == 6 && !strcmp(argv[5], "page");
  unsigned long touch = strtoul(argv[1], NULL, 0) * MiB;
  unsigned long ws = strtoul(argv[2], NULL, 0) * MiB;
  double rate = strtod(argv[3], NULL);
  unsigned long freeb = strtoul(argv[4], NULL, 0) * MiB;
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (ws > touch) ws = touch;
  if (freeb) {
    unsigned char *f = map_and_fill(freeb, 0x5a);
    munmap(f, freeb);
  }
  unsigned char *p = touch ? map_and_fill(touch, 0xa5) : NULL;
  printf("MTD READY touch_mib=%lu ws_mib=%lu rate=%.0f free_mib=%lu write=%s MemTotal=%ld MemFree=%ld\n", touch / MiB, ws / MiB,
         rate, freeb / MiB, whole_page ? "page" : "word", meminfo("MemTotal"), meminfo("MemFree"));
  if (!ws || rate <= 0)
    for (;;) pause();
  unsigned long pages = ws / PAGE, cursor = 0;
  uint64_t counter = 1;
  double t0 = now_s(), last = t0, due = 0;
  unsigned long written = 0, since = 0;
  for (;;) {
    double t = now_s();
    due += (t - last) * rate;
    if (due > rate) due = rate; /* do not catch up more than one second after a stall */
    last = t;
    while (due >= 1) {
      if (whole_page)
        memset(p + cursor * PAGE, (int)(counter++ % 255) + 1, PAGE); /* never zero */
      else
        *(volatile uint64_t *)(p + cursor * PAGE) = counter++;
      cursor = (cursor + 1) % pages;
      due -= 1;
      written++;
      since++;
    }
    static double report = 0;
    if (report == 0) report = t0 + 1;
    if (t >= report) {
      printf("MTD RATE %.0f %lu %.1f\n", (t - t0) * 1000, written, since / (t - report + 1));
      since = 0;
      report = t + 1;
    }
    usleep(10000);
  }
}
