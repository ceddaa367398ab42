#!/usr/bin/env python3
"""Flower's FedAvg weighted average, timed on the same workload as amble's `aggregate` bench.

Times `flwr.server.strategy.aggregate.aggregate` (a list of (NDArrays, num_examples) -> the
weighted mean) on N updates of P float32 parameters and prints GB/s of update data and peak RSS
(resource.getrusage ru_maxrss). Run one size per process so each peak is its own:

    python learn/benches/flwr_fedavg.py 100 1000000
    python learn/benches/flwr_fedavg.py 100 10000000
    python learn/benches/flwr_fedavg.py 100 10000000 --shared

Flower's API takes every update at once, as a server holds them after a round. By default each
update is its own array (what a server has after deserialising N client messages);
--shared reuses 4 arrays, as amble's bench does, to show the cost of the call itself.
"""
import argparse
import resource
import time

import numpy as np
from flwr.server.strategy.aggregate import aggregate

DISTINCT = 4


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("updates", type=int, nargs="?", default=100)
    ap.add_argument("params", type=int, nargs="?", default=10_000_000)
    ap.add_argument("--shared", action="store_true", help="reuse 4 update arrays")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()

    rng = np.random.default_rng(7)
    n_arrays = DISTINCT if a.shared else a.updates
    arrays = [
        ((rng.random(a.params, dtype=np.float32) - 0.5) * 0.02).astype(np.float32)
        for _ in range(n_arrays)
    ]
    results = [([arrays[u % n_arrays]], 100 + u) for u in range(a.updates)]
    rss_inputs = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    times = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        out = aggregate(results)
        times.append(time.perf_counter() - t0)
        del out
    data = a.updates * a.params * 4
    best, median = min(times), sorted(times)[len(times) // 2]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"flwr aggregate: {a.updates} updates x {a.params} f32 ({'shared' if a.shared else 'distinct'}) "
        f"= {data / 1e9:.2f} GB; best {best:.3f} s = {data / 1e9 / best:.2f} GB/s, "
        f"median {median:.3f} s = {data / 1e9 / median:.2f} GB/s; "
        f"peak RSS {peak:.1f} MiB (after building inputs: {rss_inputs:.1f} MiB)"
    )


if __name__ == "__main__":
    main()
