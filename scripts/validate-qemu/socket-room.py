#!/usr/bin/env python3
# How many bytes a localhost TCP sender can write ahead of a receiver that has stopped reading,
# after a warm-up in which the receiver read everything (receive autotuning grows its buffer then):
# the room a migration's final stage finds in the socket buffers (docs/validate-qemu.md, downtime).
#
#   python3 scripts/validate-qemu/socket-room.py WARM_MIB RATE_MIB_S   # e.g. 64 32, then 128 128
import socket, threading, time, sys
warm_mb = int(sys.argv[1]); rate = float(sys.argv[2]) * 2**20  # warm-up bytes and its sending rate
for rep in range(3):
    srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen(1)
    c = socket.socket(); c.connect(srv.getsockname()); s, _ = srv.accept()
    stop = threading.Event(); got = [0]
    def rx():
        while not stop.is_set():
            d = s.recv(1 << 20)
            got[0] += len(d)
    s.settimeout(0.05)
    def rx2():
        while not stop.is_set():
            try: got[0] += len(s.recv(1 << 20))
            except socket.timeout: pass
    t = threading.Thread(target=rx2); t.start()
    buf = b'x' * 65536; sent = 0; t0 = time.time()
    while sent < warm_mb * 2**20:
        c.sendall(buf); sent += len(buf)
        ahead = sent / rate - (time.time() - t0)
        if ahead > 0: time.sleep(ahead)
    while got[0] < sent: time.sleep(0.001)
    stop.set(); t.join()
    c.setblocking(False); n = 0; last = time.time()
    while time.time() - last < 0.2:
        try: n += c.send(buf); last = time.time()
        except BlockingIOError: time.sleep(0.001)
    print(f'warm {warm_mb} MiB at {rate/2**20:.0f} MiB/s: room {n/2**20:.2f} MiB')
    c.close(); s.close(); srv.close()
