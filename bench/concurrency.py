"""Concurrency benchmark (issue 17): runs that wait, side by side with their baselines, one run.

    .venv/bin/python bench/concurrency.py [--seconds 10] [--connections 64] [--workers 2]
                                          [--crons 500] [--delay-ms 100] [--quick]

Our processes as bench/endpoints.py starts them (gunicorn 2 × 16 threads as the Procfile, RQ
workers, Redis, SQLite, all on loopback) with the defaults of the README's table — whatever
WORKER_CONCURRENCY's default is, printed — except what a benchmark of one tenant needs: the
per-tenant caps off, retention high enough to count every run, and `fetch` allowed to reach
the loopback upstream of bench/_upstream.py (`/slow` answered after --delay-ms). Measured with
wrk (2 threads, --connections, --seconds each), back to back with the baseline beside it:

1. an endpoint script awaiting one fetch of the upstream, then Node-RED 4 (`http in → http
   request → http response`, the anchor; installed with npm into a cache outside git);
2. the trivial endpoint of bench/endpoints.py, then a bare Flask route on gunicorn sync workers
   (as many as our web's gunicorn workers): goal ≥ 0.3×;
3. manual runs through the REST API, `POST /api/v1/scripts/<id>/run {"wait": 10}` (an answer
   other than 200, such as 202 for a run not finished in time, is an error);
4. cron fires: --crons scripts firing every second (SPEC §6's 6 fields) for --seconds, a
   scheduler started for it; runs/s is the fires of that window that ran, end to end.

For each: calls (runs)/s, latency, errors, executions recorded against what was answered, CPU
ms per call (per kind of process, from /proc/<pid>/stat) and machine-wide context switches per
call (`ctxt` in /proc/stat). Then the total RSS of our processes. The host is shared and noisy:
read the ratios within a run; goals are printed beside the figures, never asserted.
"""

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._peers import bare_flask, install_node_red, node_red
from bench._stack import (
    PING,
    context_switches,
    cpu_totals,
    create_cron_scripts,
    rss_mib,
    stack,
    throughput,
)
from bench._upstream import FETCHING, upstream
from tests.services import SINGLE_TENANT_LOAD, SchedulerProcess
from webapp.config import Settings
from webapp.extensions import db
from webapp.models import Execution, utcnow

GUNICORN_WORKERS = 2  # the Procfile's `web`, as bench/_stack.py starts it
RUN = '{"wait": 10}'  # the body of a manual run through the REST API
WARMUP = 20  # calls of each of our routes before it is measured
NODE_RED = "Node-RED 4, http in → http request → http response"


@dataclass
class Row:
    label: str
    rate: float  # calls or runs per second
    p50_ms: float
    errors: int | None
    calls: int  # what the CPU and the context switches are divided by
    cpu: dict[str, float]  # seconds per kind of process over the measure
    switches: int  # machine-wide, over the measure
    recorded: str = ""
    versus: str = ""  # the ratio to the baseline beside it
    goal: str = ""

    def cpu_ms(self, kind: str | None = None) -> float:
        seconds = self.cpu[kind] if kind else sum(v for k, v in self.cpu.items() if k != "upstream")
        return seconds * 1000 / max(self.calls, 1)


def under_load(label: str, url: str, headers: dict, args, groups: dict[str, list[int]], post: str | None = None) -> Row:
    """wrk on `url`, with the CPU of `groups` and the machine's context switches meanwhile."""
    before, switches = cpu_totals(groups), context_switches()
    wrk = throughput(url, headers, args.seconds, args.connections, post)
    switches = context_switches() - switches
    cpu = {kind: seconds - before[kind] for kind, seconds in cpu_totals(groups).items()}
    return Row(label, wrk.rate, wrk.p50_ms, wrk.errors, wrk.calls, cpu, switches)


def recorded(app, where, at_least: int, timeout: float = 60) -> int:
    """Executions matching `where` once at least `at_least` are there and none came for 1 s
    (calls still in flight when wrk stopped are recorded after it), or at the timeout."""
    deadline, last, steady_since = time.monotonic() + timeout, -1, time.monotonic()
    with app.app_context():
        while True:
            count = db.session.scalar(db.select(db.func.count()).select_from(Execution).where(*where))
            db.session.rollback()
            if count != last:
                last, steady_since = count, time.monotonic()
            if (count >= at_least and time.monotonic() - steady_since >= 1) or time.monotonic() > deadline:
                return count
            time.sleep(0.2)


def counted(app, where, answered: int) -> str:
    """The executions of a route against its answered calls (warm-up and wrk's): calls that wrk
    left in flight or gave up on (its 2 s timeout) run and are recorded too, so more is fine."""
    count = recorded(app, where, answered)
    verdict = "every one" if count >= answered else f"{answered - count:,} MISSING"
    return f"{count:,} for {answered:,} answered: {verdict}"


def memory(groups: dict[str, list[int]]) -> dict[str, float]:
    return {kind: sum(map(rss_mib, pids)) for kind, pids in groups.items() if kind != "upstream"}


def wait_until(instant) -> None:
    time.sleep(max(0.0, (instant - utcnow()).total_seconds()))


def cron_fires(served, args, env: dict[str, str], groups: Callable[[], dict[str, list[int]]]) -> tuple[Row, dict]:
    """--crons every-second scripts for --seconds with a scheduler: the window's fires that ran."""
    app = served.app()
    create_cron_scripts(app, args.crons, "* * * * * *", "cron")
    scheduler = SchedulerProcess(served.database_url, served.redis.url, **env).start()
    try:
        start = utcnow().replace(microsecond=0) + timedelta(seconds=3)  # past the first reconcile
        end = start + timedelta(seconds=args.seconds)
        wait_until(start)
        measured = {**groups(), "scheduler": [scheduler.proc.pid]}
        before, switches = cpu_totals(measured), context_switches()
        wait_until(end)
        switches = context_switches() - switches
        cpu = {kind: seconds - before[kind] for kind, seconds in cpu_totals(measured).items()}
        rss = memory({**groups(), "scheduler": [scheduler.proc.pid]})
    finally:
        scheduler.stop()
    unfinished = [Execution.trigger == "cron", Execution.status.in_(["queued", "running"])]
    with app.app_context():
        deadline = time.monotonic() + 120
        while db.session.scalar(db.select(db.func.count()).select_from(Execution).where(*unfinished)):
            db.session.rollback()
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        window = (Execution.trigger == "cron", Execution.scheduled_at >= start, Execution.scheduled_at < end)
        rows = db.session.execute(
            db.select(Execution.script_id, Execution.scheduled_at, Execution.status, Execution.finished_at).where(
                *window
            )
        ).all()
    ran = [r for r in rows if r.status not in ("skipped", "queued", "running")]
    fires, expected = len({(r.script_id, r.scheduled_at) for r in rows}), args.crons * args.seconds
    skipped = sum(r.status == "skipped" for r in rows)
    latency = [(r.finished_at - r.scheduled_at).total_seconds() * 1000 for r in ran if r.finished_at]
    failed = sum(r.status != "succeeded" for r in ran)
    verdict = "every one" if fires == expected and len(rows) == fires else "NOT every one once"
    note = f"{fires:,} fires of {expected:,}: {verdict}; {skipped:,} skipped behind their previous run"
    label = f"cron fires, {args.crons} scripts every second"
    p50 = statistics.median(latency) if latency else float("nan")
    return Row(label, len(ran) / args.seconds, p50, failed, len(ran), cpu, switches, note), rss


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="each wrk run, and the cron window")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections, every route")
    parser.add_argument("--workers", type=int, default=2, help="RQ worker processes")
    parser.add_argument("--crons", type=int, default=500, help="cron scripts firing every second")
    parser.add_argument("--delay-ms", type=int, default=100, help="the upstream's delay")
    parser.add_argument("--quick", action="store_true", help="a smoke test: 3 s runs, 100 cron scripts")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.crons = 3, 100
    load_before = os.getloadavg()
    skipped_node_red = install_node_red()
    # One tenant drives every connection (its caps off); every run must stay countable.
    env = {**SINGLE_TENANT_LOAD, "EXECUTION_RETENTION_COUNT": "10000000", "FETCH_ALLOWED_NETWORKS": "127.0.0.1/32"}
    rows, samples = [], []
    with upstream(args.delay_ms / 1000) as (origin, upstream_pid, _served):
        endpoints = {"ping": PING, "fetchslow": FETCHING % f"'{origin}/slow'"}
        with stack(endpoints, args.workers, env, manual={"manual": PING}) as served:
            base, headers, ids = served.base, served.headers, served.script_ids

            def groups() -> dict[str, list[int]]:
                return {**served.process_groups(), "upstream": [upstream_pid]}

            def ours(label: str, url: str, name: str, post: str | None = None) -> Row:
                """Our `url` under load, after WARMUP calls of it; the runs of script `name` counted."""
                json = {"Content-Type": "application/json"} if post else {}
                for _ in range(WARMUP):
                    answer = requests.request(
                        "POST" if post else "GET", url, data=post, headers=headers | json, timeout=30
                    )
                    assert answer.status_code == 200, answer.text
                row = under_load(label, url, headers, args, groups(), post)
                where = [Execution.script_id == ids[name]]
                row.recorded = counted(served.app(), where, WARMUP + row.calls)
                samples.append(memory(groups()))
                return row

            fetch = ours(f"endpoint + fetch, {args.delay_ms} ms upstream", f"{base}/api/scripts/fetchslow", "fetchslow")
            ok = fetch.rate >= 400 and fetch.p50_ms < 130 and fetch.errors == 0
            fetch.goal = f"≥ 400/s, p50 < 130 ms, 0 errors: {met(ok)}"
            rows.append(fetch)
            if skipped_node_red is None:
                with node_red(f"{origin}/slow") as (url, pid):
                    anchor = under_load(NODE_RED, url, {}, args, {"node": [pid]})
                anchor.versus = "the anchor"
                fetch.versus = f"{fetch.rate / anchor.rate:.2f}× Node-RED"
                rows.append(anchor)

            ping = ours("trivial endpoint (`ping`)", f"{base}/api/scripts/ping", "ping")
            with bare_flask(GUNICORN_WORKERS) as (url, pids):
                bare = under_load(f"bare Flask route, gunicorn sync × {GUNICORN_WORKERS}", url, {}, args, {"web": pids})
            ping.versus, bare.versus = f"{ping.rate / bare.rate:.2f}× bare Flask", "the baseline"
            ping.goal = f"≥ 0.3× bare Flask: {met(ping.rate >= 0.3 * bare.rate)}"
            rows += [ping, bare]

            runs = ours(
                "manual runs, REST API with `wait`", f"{base}/api/v1/scripts/{ids['manual']}/run", "manual", RUN
            )
            runs.goal = f"≥ 400 runs/s: {met(runs.rate >= 400)}"
            cron, rss = cron_fires(served, args, env, groups)
            cron.goal = f"≥ 400 runs/s: {met(cron.rate >= 400)}"
            rows += [runs, cron]
            samples.append(rss)
    report(args, rows, samples, skipped_node_red, load_before)


def report(args, rows: list[Row], samples: list[dict], skipped_node_red: str | None, load_before) -> None:
    concurrency = Settings.from_env().worker_concurrency
    source = "from the environment" if "WORKER_CONCURRENCY" in os.environ else "the default"
    print("## Runs that wait, side by side (issue 17)\n")
    print(
        f"Ours: gunicorn {GUNICORN_WORKERS} × 16 threads, {args.workers} RQ workers, WORKER_CONCURRENCY "
        f"{concurrency} ({source}), Redis, SQLite, on loopback. wrk -t2 -c{args.connections} -d{args.seconds}s "
        f"per route; upstream answers after {args.delay_ms} ms. Load average {load_before[0]:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after (2 cores).\n"
    )
    if skipped_node_red:
        print(f"Node-RED not measured: {skipped_node_red}\n")
    print("| measured | calls/s | p50 ms | errors | CPU ms per call | ctxt per call | ratio | goal | recorded |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r.label} | {r.rate:.0f} | {r.p50_ms:.1f} | {r.errors} | {r.cpu_ms():.2f} "
            f"| {r.switches / max(r.calls, 1):.0f} | {r.versus} | {r.goal} | {r.recorded} |"
        )
    ours = [r for r in rows if "upstream" in r.cpu or "scheduler" in r.cpu]
    kinds = list(dict.fromkeys(kind for r in ours for kind in r.cpu))
    print("\nCPU ms per call (run) of each kind of process, during each measure:\n")
    print("| processes | " + " | ".join(r.label.split(",")[0] for r in ours) + " |")
    print("| --- |" + " ---: |" * len(ours))
    for kind in kinds:
        print(f"| {kind} | " + " | ".join(f"{r.cpu_ms(kind):.2f}" if kind in r.cpu else "" for r in ours) + " |")
    print(
        "\nerrors: wrk's (4xx and 5xx answers, socket errors, calls unanswered after its 2 s timeout). "
        "recorded: executions of the route after its load (warm-up included). Manual runs: an answer other "
        f"than 200 (202: not finished within `wait`) is an error. Cron: the fires of a {args.seconds} s window; "
        "p50 from the fire's scheduled time to its run's end, CPU and ctxt per run that ran."
    )
    largest = max(samples, key=lambda s: sum(s.values()))
    total = sum(largest.values())
    print("\nResident memory (VmRSS) of our processes, MiB, at the largest of the samples after each measure:\n")
    print("| processes | MiB |")
    print("| --- | ---: |")
    for kind, mib in largest.items():
        print(f"| {kind} | {mib:.0f} |")
    print(f"| all of them | {total:.0f} ({met(total < 1024)}: < 1 GiB) |")


if __name__ == "__main__":
    main()
