"""The bridge's nonce cache under steady load: prints numbers, asserts nothing.

    python bench/nonces.py [--rate 20000] [--ttl 10] [--requests 400000]

Each signed request is checked against the nonces of the last ``ttl`` seconds and then
recorded, as :class:`broadgauge.bridge.auth.Verifier` does, at ``--rate`` requests per second
of a simulated clock.  Once the first nonces expire, every request also purges one: the
cost per request must stay flat however many nonces have been purged.  Prints µs per
request for each block of 100,000 requests.
"""

from __future__ import annotations

import argparse
import time
import uuid

from broadgauge.bridge.auth import NonceCache

BLOCK = 100_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20_000, help="requests per second")
    parser.add_argument("--ttl", type=float, default=10.0, help="seconds a nonce is kept")
    parser.add_argument("--requests", type=int, default=400_000, help="requests in all")
    args = parser.parse_args()
    print(
        f"command: python bench/nonces.py --rate {args.rate:g} --ttl {args.ttl:g}"
        f" --requests {args.requests}"
    )
    print(f"nonces in the window once full: {args.rate * args.ttl:,.0f}")
    cache = NonceCache(ttl=args.ttl)
    nonces = [str(uuid.uuid4()) for _ in range(args.requests)]
    started = time.perf_counter()
    for index, nonce in enumerate(nonces):
        now = index / args.rate
        cache.seen(nonce, now)
        cache.record(nonce, now)
        if index % BLOCK == BLOCK - 1:
            elapsed, started = time.perf_counter() - started, time.perf_counter()
            print(
                f"  requests {index + 2 - BLOCK:>9,} to {index + 1:>9,}:"
                f" {elapsed / BLOCK * 1e6:6.2f} µs per request, {len(cache):,} nonces kept"
            )


if __name__ == "__main__":
    main()
