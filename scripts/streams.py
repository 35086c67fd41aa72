#!/usr/bin/env python3
"""Concurrent streams through the daemon: starts mistrald on MODEL with --parallel P, then for each N in
--streams sends N greedy generations at once (distinct prompts) and prints the aggregate tok/s, --rounds
times, alternating the stream counts so that a change in the machine's load hits every count alike.
Each decode line is followed by the decode alone: tokens a second while every stream was past its
prompt (the aggregate holds the prompts, which N streams evaluate N times over).
With --prompt N every request is instead N distinct token ids (no two streams share a prefix) and one
generated token, and the figure is prompt tokens per second: N prompts evaluated together against one.
Usage: scripts/streams.py MISTRALD MODEL [--parallel 4] [--streams 1,4] [--tokens 48] [--rounds 3]
                          [--prompt N] [--batch B] [--context C]"""

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


def cpu_seconds(pid):
    """User + system CPU time of the daemon so far: on a shared machine the CPU time per token says
    what a step costs when the wall clock says mostly how busy the neighbours were."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one(sock, i, tokens, prompt, out, times):
    with mdclient.Client(sock, timeout=1800) as c:
        # distinct prompts, the prompt cache off: every round measures the same work
        if prompt:
            # ids from 1000 up, a different stride per stream: no shared prefix, no special tokens
            ids = [1000 + (k * (7 + 2 * i) + 131 * i) % 30000 for k in range(prompt)]
            _, res = mdclient.collect(c.generate(tokens=ids, max_tokens=1, temperature=0,
                                                 cache_prompt=False, timeout=1800))
            out[i] = res["usage"]["prompt_tokens"]
            return
        marks = []
        for kind, value in c.generate(prompt="Story %d: once upon a time" % i, max_tokens=tokens,
                                      temperature=0, cache_prompt=False, timeout=1800):
            if kind == "chunk":
                marks.append((time.monotonic(), len(value.get("tokens") or [])))
            else:
                res = value
        out[i] = res["usage"]["completion_tokens"]
        times[i] = marks


def concurrent_decode(times):
    """Tokens a second while every stream was decoding: from the last stream's first chunk (every
    prompt evaluated) to the first stream's last chunk, the tokens of the chunks in between. The
    aggregate figure above also holds the prompts, which N streams evaluate N times over; this one is
    the decode steps alone, what mistral-bench --streams measures in-process."""
    if any(len(m) < 2 for m in times):
        return None
    start = max(m[0][0] for m in times)
    end = min(m[-1][0] for m in times)
    n = sum(k for m in times for t, k in m if start < t <= end)
    return (n, end - start) if end > start and n else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mistrald")
    ap.add_argument("model")
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--streams", default="1,4")
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompt", type=int, default=0, help="prompt tokens per request (0: decode figures)")
    ap.add_argument("--batch", type=int, default=0, help="mistrald --batch (0: its default)")
    ap.add_argument("--context", type=int, default=1024)
    a = ap.parse_args()
    counts = [int(x) for x in a.streams.split(",")]
    tmp = tempfile.mkdtemp(prefix="mistrald-streams.")
    sock, logpath = os.path.join(tmp, "s.sock"), os.path.join(tmp, "log")
    with open(logpath, "w") as log:
        proc = subprocess.Popen([a.mistrald, "--config", "/dev/null", "--model", a.model, "--socket", sock,
                                 "--parallel", str(a.parallel), "--context", str(a.context)] +
                                (["--batch", str(a.batch)] if a.batch else []), stderr=log)
    try:
        print("ready after %.1f s" % wait_ready(sock, proc, logpath), flush=True)
        for rnd in range(a.rounds):
            for n in counts:
                out, times = [0] * n, [[] for _ in range(n)]
                ths = [threading.Thread(target=one, args=(sock, i, a.tokens, a.prompt, out, times))
                       for i in range(n)]
                t, cpu = time.monotonic(), cpu_seconds(proc.pid)
                for th in ths:
                    th.start()
                for th in ths:
                    th.join()
                dt, cpu = time.monotonic() - t, cpu_seconds(proc.pid) - cpu
                with open("/proc/loadavg") as f:
                    load = f.read().split()[0]
                print("round %d: %d stream(s): %d %stokens in %.2f s = %.2f tok/s aggregate, %.2f ms CPU a token "
                      "(load %s)" % (rnd, n, sum(out), "prompt " if a.prompt else "", dt, sum(out) / dt,
                                     1e3 * cpu / sum(out), load), flush=True)
                dec = None if a.prompt else concurrent_decode(times)
                if dec:
                    print("round %d: %d stream(s): decode alone, every stream past its prompt: %d tokens in "
                          "%.2f s = %.2f tok/s aggregate" % (rnd, n, dec[0], dec[1], dec[0] / dec[1]), flush=True)
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
