#!/usr/bin/env python3
"""N requests sharing one long prompt prefix sent to a running mistrald at once: prints how many prompt
tokens were evaluated in all and how long it took, with the prompt cache or without it (--no-cache).
Usage: scripts/shared-prefix.py SOCKET [--requests 8] [--shared 1000] [--tail 16] [--no-cache]"""

import argparse
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from mdclient import Client  # noqa: E402


def tokens(seed, n, vocab):
    x, out = seed * 2654435761 + 12345, []
    for _ in range(n):
        x = (x * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        out.append(3 + (x >> 33) % (vocab - 3))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("socket")
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--shared", type=int, default=1000)
    ap.add_argument("--tail", type=int, default=16)
    ap.add_argument("--no-cache", action="store_true")
    a = ap.parse_args()
    with Client(a.socket, 60) as c:
        vocab = c.call("info")["hparams"]["vocab"]
    shared = [1] + tokens(1, a.shared - 1, vocab)
    results = [None] * a.requests
    barrier = threading.Barrier(a.requests)

    def one(i):
        with Client(a.socket, 3600) as cl:
            barrier.wait()
            t0 = time.monotonic()
            r = cl.call("generate", {"tokens": shared + tokens(100 + i, a.tail, vocab), "max_tokens": 1,
                                     "temperature": 0, "stream": False, "cache_prompt": not a.no_cache})
            results[i] = (time.monotonic() - t0, r)

    t0 = time.monotonic()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(a.requests)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    for i, (s, r) in enumerate(results):
        u = r["usage"]
        print("request %d: prompt %d, cached %d, evaluated %d, %.1f s to its answer"
              % (i, u["prompt_tokens"], u["cached_tokens"], u["prompt_tokens"] - u["cached_tokens"], s))
    print("%d requests, %d-token shared prefix + %d each: %d prompt tokens evaluated in all, %.1f s wall"
          % (a.requests, a.shared, a.tail, sum(r["usage"]["prompt_tokens"] - r["usage"]["cached_tokens"]
                                                 for _, r in results), wall))


if __name__ == "__main__":
    main()
