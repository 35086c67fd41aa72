#!/usr/bin/env python3
"""Concurrent streams through the daemon: starts mistrald on MODEL with --parallel P, then for each N in
--streams sends N greedy generations at once (distinct prompts) and prints the aggregate tok/s, --rounds
times, alternating the stream counts so that a change in the machine's load hits every count alike.
Usage: scripts/streams.py MISTRALD MODEL [--parallel 4] [--streams 1,4] [--tokens 48] [--rounds 3]"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import mdclient  # noqa: E402


def wait_ready(sock, proc, logpath, limit=900):
    t0 = time.time()
    while True:
        try:
            with mdclient.Client(sock) as c:
                if c.call("status").get("state") == "ready":
                    return time.time() - t0
        except (OSError, EOFError, mdclient.RpcError):
            pass
        if proc.poll() is not None or time.time() - t0 > limit:
            with open(logpath) as f:
                sys.exit("mistrald did not start:\n" + f.read())
        time.sleep(0.5)


def one(sock, i, tokens, out):
    with mdclient.Client(sock, timeout=1800) as c:
        # distinct prompts, the prompt cache off: every round measures the same work
        _, res = mdclient.collect(c.generate(prompt="Story %d: once upon a time" % i, max_tokens=tokens,
                                             temperature=0, cache_prompt=False, timeout=1800))
        out[i] = res["usage"]["completion_tokens"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mistrald")
    ap.add_argument("model")
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--streams", default="1,4")
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    counts = [int(x) for x in a.streams.split(",")]
    tmp = tempfile.mkdtemp(prefix="mistrald-streams.")
    sock, logpath = os.path.join(tmp, "s.sock"), os.path.join(tmp, "log")
    with open(logpath, "w") as log:
        proc = subprocess.Popen([a.mistrald, "--config", "/dev/null", "--model", a.model, "--socket", sock,
                                 "--parallel", str(a.parallel), "--context", "1024"], stderr=log)
    try:
        print("ready after %.1f s" % wait_ready(sock, proc, logpath), flush=True)
        for rnd in range(a.rounds):
            for n in counts:
                out = [0] * n
                ths = [threading.Thread(target=one, args=(sock, i, a.tokens, out)) for i in range(n)]
                t = time.monotonic()
                for th in ths:
                    th.start()
                for th in ths:
                    th.join()
                dt = time.monotonic() - t
                with open("/proc/loadavg") as f:
                    load = f.read().split()[0]
                print("round %d: %d stream(s): %d tokens in %.2f s = %.2f tok/s aggregate (load %s)" %
                      (rnd, n, sum(out), dt, sum(out) / dt, load), flush=True)
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
