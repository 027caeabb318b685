"""Fetch benchmark (issue 16): an endpoint script whose run fetches a loopback upstream, measured
beside the plain endpoint of bench/endpoints.py in the same run, on the same processes.

    .venv/bin/python bench/fetch.py [--calls 500] [--slow-calls 100] [--rounds 2] [--seconds 10]
                                    [--workers 2] [--concurrency 16] [--worker-concurrency 16]
                                    [--delay-ms 100]

The processes of bench/endpoints.py (gunicorn 2 × 16 threads, RQ workers, Redis, SQLite, all on
loopback), with FETCH_ALLOWED_NETWORKS=127.0.0.1/32 so that scripts may reach the upstream, and
WORKER_CONCURRENCY=--worker-concurrency (calls in flight per worker: 1 is the default): a
raw asyncio HTTP/1.1 responder in a process of its own, answering `/now` at once and `/slow`
after --delay-ms. Three endpoint scripts: `ping` (the plain one of bench/endpoints.py),
`fetchnow` and `fetchslow` (one fetch each, the upstream's JSON body returned).

The host is shared and noisy, so the routes are measured back to back in each of --rounds
rounds (their order rotating): sequential calls from a Python client (latency), then wrk with
--concurrency connections for --seconds per route (calls/s, errors, latency under load). The
table pools the sequential samples, averages the wrk figures over the rounds, and gives each
route's calls/s as a ratio to the plain endpoint's; CPU time per call is from /proc.
"""

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._stack import PING, Wrk, cpu_totals, latencies, pct, stack, throughput
from bench._upstream import FETCHING, upstream


@dataclass
class Route:
    label: str
    name: str  # the endpoint script, at /api/scripts/<name>
    calls: int  # sequential calls per round
    samples: list[float] = field(default_factory=list)  # sequential latencies, ms
    runs: list[Wrk] = field(default_factory=list)  # one wrk run per round
    cpu: dict[str, float] = field(default_factory=dict)  # seconds over its wrk runs, per kind of process

    @property
    def rate(self) -> float:
        return sum(run.rate for run in self.runs) / len(self.runs)

    def mean(self, attribute: str) -> float:
        return sum(getattr(run, attribute) for run in self.runs) / len(self.runs)

    def cpu_ms(self, kind: str | None = None) -> float:
        seconds = self.cpu[kind] if kind else sum(self.cpu.values())
        return seconds * 1000 / sum(run.calls for run in self.runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=500, help="sequential calls per route and round")
    parser.add_argument("--slow-calls", type=int, default=100, help="sequential calls per round to the slow route")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, every route measured in each")
    parser.add_argument("--seconds", type=int, default=10, help="wrk run per route and round")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--worker-concurrency", type=int, default=16, help="WORKER_CONCURRENCY of the workers (calls in flight each)"
    )
    parser.add_argument("--delay-ms", type=int, default=100, help="the slow upstream's delay")
    args = parser.parse_args()
    plain = Route("plain endpoint (`ping`)", "ping", args.calls)
    now = Route("endpoint + fetch, immediate upstream", "fetchnow", args.calls)
    slow = Route(f"endpoint + fetch, {args.delay_ms} ms upstream", "fetchslow", args.slow_calls)
    routes = [plain, now, slow]
    warmup = {"ping": 50, "fetchnow": 50, "fetchslow": 5}
    with upstream(args.delay_ms / 1000) as (origin, upstream_pid, served):
        scripts = {"ping": PING, "fetchnow": FETCHING % f"'{origin}/now'", "fetchslow": FETCHING % f"'{origin}/slow'"}
        env = {"FETCH_ALLOWED_NETWORKS": "127.0.0.1/32", "WORKER_CONCURRENCY": str(args.worker_concurrency)}
        with stack(scripts, args.workers, env) as served_by:
            url = {r.name: f"{served_by.base}/api/scripts/{r.name}" for r in routes}
            for name, calls in warmup.items():
                latencies(url[name], served_by.headers, calls)
            groups = {**served_by.process_groups(), "upstream": [upstream_pid]}
            for r in routes:
                r.cpu = dict.fromkeys(groups, 0.0)
            for round_ in range(args.rounds):
                order = routes[round_ % 3 :] + routes[: round_ % 3]
                for r in order:
                    r.samples += latencies(url[r.name], served_by.headers, r.calls)
                for r in order:
                    before = cpu_totals(groups)
                    r.runs.append(throughput(url[r.name], served_by.headers, args.seconds, args.concurrency))
                    for kind, seconds in cpu_totals(groups).items():
                        r.cpu[kind] += seconds - before[kind]
        answered = sum(warmup[r.name] + len(r.samples) + sum(run.calls for run in r.runs) for r in (now, slow))
        upstream_answers = served.value
    _report(args, routes, answered, upstream_answers)


def _report(args: argparse.Namespace, routes: list[Route], answered: int, upstream_answers: int) -> None:
    plain, now, slow = routes
    print(
        f"## Endpoint + fetch of a loopback upstream vs. the plain endpoint, gunicorn (2 processes × 16 threads), "
        f"{args.workers} workers\n"
    )
    print(
        f"{args.rounds} rounds, the routes back to back in each. Sequential: {args.calls} calls per route and round "
        f"({args.slow_calls} to the {args.delay_ms} ms route), pooled. Under load: wrk, 2 threads, "
        f"{args.concurrency} connections, {args.seconds} s per route and round, averaged over the rounds.\n"
    )
    print(
        "| route | sequential p50 ms | sequential p99 ms | under load p50 ms | under load p99 ms "
        f"| calls/s ({args.concurrency} conn.) | ratio vs plain | errors | CPU ms per call |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in routes:
        print(
            f"| {r.label} | {pct(r.samples, 50):.2f} | {pct(r.samples, 99):.2f} | {r.mean('p50_ms'):.1f} "
            f"| {r.mean('p99_ms'):.1f} | {r.rate:.0f} | {r.rate / plain.rate:.2f}× "
            f"| {sum(run.errors for run in r.runs)} | {r.cpu_ms():.2f} |"
        )
    added_now = pct(now.samples, 50) - pct(plain.samples, 50)
    beyond = pct(slow.samples, 50) - pct(plain.samples, 50) - args.delay_ms
    print(
        f"\nSequential p50 added by one fetch: {added_now:.2f} ms (immediate upstream); "
        f"{beyond:.2f} ms beyond the {args.delay_ms} ms delay (slow upstream).\n"
    )
    print("calls/s per round (ratio to the plain endpoint of the same round):\n")
    print("| round | " + " | ".join(r.label for r in routes) + " |")
    print("| ---: |" + " ---: |" * len(routes))
    for i in range(args.rounds):
        cells = [f"{r.runs[i].rate:.0f} ({r.runs[i].rate / plain.runs[i].rate:.2f}×)" for r in routes]
        print(f"| {i + 1} | " + " | ".join(cells) + " |")
    print("\nCPU time per call during the wrk runs, ms:\n")
    print("| processes | " + " | ".join(r.label for r in routes) + " |")
    print("| --- |" + " ---: |" * len(routes))
    for kind in plain.cpu:
        print(f"| {kind} | " + " | ".join(f"{r.cpu_ms(kind):.2f}" for r in routes) + " |")
    print("| all of them | " + " | ".join(f"{r.cpu_ms():.2f}" for r in routes) + " |")
    bound = args.concurrency * 1000 / args.delay_ms
    print(
        f"\nWith {args.concurrency} connections each waiting {args.delay_ms} ms for the upstream, at most "
        f"{args.concurrency} × {1000 / args.delay_ms:.0f} = {bound:.0f} calls/s; measured {slow.rate:.1f} "
        f"({slow.rate / bound:.0%} of that bound). Each worker keeps up to WORKER_CONCURRENCY calls in flight."
    )
    print(
        f"The upstream answered {upstream_answers} requests for {answered} answered fetch calls "
        "(wrk stops with calls in flight: their fetches are made too)."
    )


if __name__ == "__main__":
    main()
