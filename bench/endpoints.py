"""Endpoint benchmark: the real processes (gunicorn web, RQ workers, Redis) on loopback.

    .venv/bin/python bench/endpoints.py [--calls 2000] [--workers 2] [--concurrency 16]

Prints, from one run: latency of sequential calls to a trivial endpoint script and to a
bare route on the same server (the overhead ratio and the added milliseconds), and the
throughput with concurrent connections measured by wrk (as the peers in FIELD-NOTES were:
a Python client would take a core of the two for itself), with errors and recorded
executions counted, and the CPU time each kind of process spent per call meanwhile (from
/proc/<pid>/stat): on a CPU-bound machine, calls/s is the cores over the sum.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._stack import PING, cpu_totals, latencies, pct, stack, throughput
from webapp.extensions import db
from webapp.models import Execution


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000, help="sequential calls per route")
    parser.add_argument("--seconds", type=int, default=10, help="wrk run per route")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    with stack({"ping": PING}, args.workers) as served:
        base, headers = served.base, served.headers
        latencies(f"{base}/api/scripts/ping", headers, 50)  # warm up
        bare = latencies(f"{base}/healthz", {}, args.calls)
        endpoint = latencies(f"{base}/api/scripts/ping", headers, args.calls)
        groups = served.process_groups()
        before = cpu_totals(groups)
        wrk = throughput(f"{base}/api/scripts/ping", headers, args.seconds, args.concurrency)
        rate, calls, errors = wrk.rate, wrk.calls, wrk.errors
        cpu = {name: (seconds - before[name]) / calls for name, seconds in cpu_totals(groups).items()}
        bare_wrk = throughput(f"{base}/healthz", {}, args.seconds, args.concurrency)
        bare_rate, bare_errors = bare_wrk.rate, bare_wrk.errors
        expected = 50 + args.calls + calls
        with served.app().app_context():
            deadline = time.monotonic() + 10  # successful calls are recorded just after their answer
            while True:
                recorded = db.session.scalar(
                    db.select(db.func.count()).select_from(Execution).where(Execution.status == "succeeded")
                )
                db.session.rollback()
                if recorded >= expected or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
    print(f"## Trivial endpoint vs. a bare route, gunicorn (2 processes × 16 threads), {args.workers} workers\n")
    print(f"Sequential calls ({args.calls} each), latency in ms:\n")
    print("| route | p50 | p99 |")
    print("| --- | ---: | ---: |")
    print(f"| bare route (`/healthz`: one DB and one Redis query) | {pct(bare, 50):.2f} | {pct(bare, 99):.2f} |")
    print(f"| endpoint script (`/api/scripts/ping`) | {pct(endpoint, 50):.2f} | {pct(endpoint, 99):.2f} |")
    print(f"\nAdded p50 {pct(endpoint, 50) - pct(bare, 50):.2f} ms, ratio {pct(endpoint, 50) / pct(bare, 50):.1f}×.\n")
    print(f"wrk, 2 threads, {args.concurrency} connections, {args.seconds} s per route:\n")
    print("| route | calls/s | errors |")
    print("| --- | ---: | ---: |")
    print(f"| bare route | {bare_rate:.0f} | {bare_errors} |")
    print(f"| endpoint script | {rate:.0f} | {errors} |")
    print(
        f"\nEndpoint executions recorded as succeeded: {recorded}, for {expected} answered calls "
        f"(wrk stops with up to {args.concurrency} calls in flight: they run and are recorded too)."
    )
    print("\nCPU time per endpoint call during its wrk run:\n")
    print("| processes | ms per call |")
    print("| --- | ---: |")
    for name, seconds in cpu.items():
        print(f"| {name} | {seconds * 1000:.2f} |")
    print(f"| all of them | {sum(cpu.values()) * 1000:.2f} |")


if __name__ == "__main__":
    main()
