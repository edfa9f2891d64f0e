#!/usr/bin/env python3
"""Failover probe and responder for bench/failover/run.sh.

probe VIP PORT INTERVAL_MS: send a datagram to VIP:PORT every INTERVAL_MS on a
connected socket (so only answers from the VIP count) and print
"<epoch_ns> <name>" for every answer.
respond VIP PORT NAME: answer every datagram sent to VIP:PORT with NAME; the
socket is bound to the VIP itself (IP_FREEBIND), so a node answers only while
the VIP routes to it, and replies leave from the VIP.
"""
import select
import socket
import sys
import time

IP_FREEBIND = 15


def probe(vip, port, interval_ms):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((vip, port))
    sock.setblocking(False)
    step = interval_ms / 1000.0
    due = time.monotonic()
    seq = 0
    out = sys.stdout
    while True:
        now = time.monotonic()
        if now >= due:
            seq += 1
            try:
                sock.send(str(seq).encode())
            except OSError:
                pass
            due += step
            if due < now:
                due = now + step
        ready, _, _ = select.select([sock], [], [], max(0.0, due - time.monotonic()))
        if ready:
            while True:
                try:
                    data = sock.recv(256)
                except (BlockingIOError, ConnectionRefusedError, OSError):
                    break
                out.write(f"{time.time_ns()} {data.decode(errors='replace')}\n")
            out.flush()


def respond(vip, port, name):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
    sock.bind((vip, port))
    while True:
        _, peer = sock.recvfrom(256)
        try:
            sock.sendto(name.encode(), peer)
        except OSError:
            pass


if __name__ == "__main__":
    if sys.argv[1] == "probe":
        probe(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        respond(sys.argv[2], int(sys.argv[3]), sys.argv[4])
