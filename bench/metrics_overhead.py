"""CPU time the metrics add to one charge, measured apart from any network or database.

    python bench/metrics_overhead.py [--rounds 200000]

A charge request costs the metrics one ``observe_request`` (a counter and a histogram) and one
``observe_decision`` (two counters). This times both, in the multiprocess mode ``serve`` runs
them in (values in memory-mapped files, in a fresh temporary directory), and prints the
microseconds per charge. Unlike the throughput benchmark (``bench/charges/run.py --compare
LEDGER_METRICS_ENABLED=false``) it does not move with the load of a shared machine, so it
says what the metrics cost even where a 5% difference in requests/s drowns in noise.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="metrics-overhead-") as directory:
        # Before prometheus_client is imported: it picks its storage once, on import.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from agent_ledger.ledger.decisions import Decision, Request
        from agent_ledger.metrics.instruments import Instruments

        instruments = Instruments()
        instruments.learn_models(["gpt-4o"])
        request = Request(action="charge", key_hash=b"k", model="gpt-4o", amount=None)
        entry = {"kind": "charge", "amount": 17_500_000, "currency": "USD", "model": "gpt-4o"}
        decision = Decision(201, False, None, entry, None, None, "key", "agent", None)  # type: ignore[arg-type]
        started = time.process_time()  # CPU time: the load of other processes is not ours
        for _ in range(args.rounds):
            instruments.observe_request("/v1/charges", "POST", 201, 0.004)
            instruments.observe_decision(request, decision)
        elapsed = time.process_time() - started
    per_charge = elapsed / args.rounds * 1e6
    print(f"{per_charge:.1f} µs of CPU per charge for its metrics ({args.rounds} rounds)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
