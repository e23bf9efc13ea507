#!/usr/bin/env python3
# The cost of a THP fault (fault + 2 MiB zeroing) on this machine, 256 MiB at a time: write one byte to each
# 2 MiB region of a fresh MADV_HUGEPAGE anonymous mapping of GIB GiB and print the mean time per region of each
# 256 MiB. On a VM whose own memory its hypervisor backs lazily (this machine is one), memory the VM has not
# touched since it booted costs far more than memory it has touched and freed: run it twice and compare
# (docs/validate-qemu.md, "the destination's first load"; validation/qemu/evidence/cold-thp.txt).
#
#   python3 scripts/validate-qemu/thp-touch.py [GIB]
import mmap, sys, time

gib = int(sys.argv[1]) if len(sys.argv) > 1 else 4
n = gib << 30
m = mmap.mmap(-1, n + (2 << 20), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
m.madvise(mmap.MADV_HUGEPAGE)
chunk = 256 << 20
for c in range(0, n, chunk):
    t = time.perf_counter()
    for off in range(c, c + chunk, 2 << 20):
        m[off] = 1
    dt = time.perf_counter() - t
    print(f"{c >> 20:6d} MiB: {dt / (chunk >> 21) * 1e6:8.1f} us per 2M", flush=True)
