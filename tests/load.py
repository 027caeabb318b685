"""The load check of issue 7, shared by bench/load.py (full size) and tests/faults/test_load_lite.py.

Against running processes (the Procfile's web under gunicorn, RQ workers, one scheduler):
an endpoint script is called a set number of times over concurrent connections, in rounds,
while cron scripts fire every second. Then, as a user would see it in the executions list:
every call answered 200 with its own body, exactly one execution per call, every cron fire
recorded once with no second missing, nothing left queued or running; and the memory of
every process after each round, so that a process that keeps growing shows.
"""

from __future__ import annotations

import contextlib
import itertools
import statistics
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests
from redis import Redis

from tests.services import eventually
from webapp.cron_registry import DUE_KEY, from_ms
from webapp.endpoints.calls import INFLIGHT
from webapp.executions.service import QUEUES
from webapp.extensions import db
from webapp.models import Execution, utcnow

if TYPE_CHECKING:
    from flask import Flask

    from tests.services import SchedulerProcess, WorkerProcess
    from tests.web_process import WebProcess

# Each answer carries the call's own number back: an answer delivered to the wrong caller shows.
ENDPOINT = {
    "name": "echo",
    "type": "endpoint",
    "endpoint_method": "GET",
    "endpoint_path": "/echo",
    "source": "function main(req) { return { body: { n: req.query.n } } }",
    "limits": {"wall_seconds": 5},  # the slowest possible answer (503 or 504) comes within 5 + 5 + 2 s
}
CRON_SOURCE = "function main(event) { return event.scheduled_at }"
CALL_TIMEOUT_SECONDS = 20
# Off the fires' schedule: a fire may be queued a few hundred ms late on a loaded machine.
FIRE_SLACK = timedelta(seconds=2)


@dataclass
class Round:
    name: str
    calls: int
    concurrency: int
    seconds: float
    latencies_ms: list[float]
    failures: list[str]  # one line per call that was not a 200 with its own body
    expected_total: int = 0  # endpoint executions that should exist after this round
    recorded: Counter[str] = field(default_factory=Counter)  # endpoint executions by status

    @property
    def rate(self) -> float:
        return self.calls / self.seconds

    def pct(self, q: int) -> float:
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[q - 1]


@dataclass
class CronScript:
    script_id: str
    fires: list[datetime]  # scheduled_at of every recorded fire, in order
    statuses: Counter[str]
    missing: list[datetime]
    doubled: int


@dataclass
class LoadReport:
    rounds: list[Round] = field(default_factory=list)
    crons: list[CronScript] = field(default_factory=list)
    memory: dict[str, dict[str, tuple[int, int | None]]] = field(default_factory=dict)  # stage -> label -> pid, KiB
    leftovers: dict[str, int] = field(default_factory=dict)
    max_growth_pct: float = 10.0
    problems: list[str] = field(default_factory=list)

    # -- memory ------------------------------------------------------------------------------
    def growth_pct(self, label: str, before: str, after: str) -> float | None:
        first, last = self.memory[before].get(label), self.memory[after].get(label)
        if not first or not last or not first[1] or last[1] is None:
            return None
        return (last[1] - first[1]) / first[1] * 100

    def markdown(self) -> str:
        lines = ["Endpoint calls (each must answer 200 with its own body):", ""]
        lines += ["| round | calls | connections | seconds | calls/s | p50 ms | p99 ms | errors | recorded |"]
        lines += ["| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in self.rounds:
            recorded = f"{sum(r.recorded.values()):,} of {r.expected_total:,}"
            lines.append(
                f"| {r.name} | {r.calls:,} | {r.concurrency} | {r.seconds:.1f} | {r.rate:.0f} | "
                f"{r.pct(50):.1f} | {r.pct(99):.1f} | {len(r.failures)} | {recorded} |"
            )
        lines += ["", '"recorded": endpoint executions in the database after the round, all rounds so far.', ""]
        lines += ["Cron scripts firing every second during all rounds:", ""]
        lines += ["| script | fires recorded | succeeded | skipped | other | missing seconds | doubled | span |"]
        lines += ["| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for i, c in enumerate(self.crons, 1):
            other = sum(n for s, n in c.statuses.items() if s not in ("succeeded", "skipped"))
            span = f"{c.fires[0]:%H:%M:%S}–{c.fires[-1]:%H:%M:%S}" if c.fires else "none"
            lines.append(
                f"| cron {i} | {len(c.fires)} | {c.statuses['succeeded']} | {c.statuses['skipped']} | {other} | "
                f"{len(c.missing)} | {c.doubled} | {span} |"
            )
        lines += ["", "Left over after the scheduler stopped and the queues drained:", ""]
        lines += ["| what | count |", "| --- | ---: |"]
        lines += [f"| {what} | {count} |" for what, count in self.leftovers.items()]
        stages = list(self.memory)
        if stages:
            lines += ["", "Resident memory (VmRSS, MiB) after each round:", ""]
            growths = f"growth {stages[-2]} → {stages[-1]} | growth {stages[0]} → {stages[-1]}"
            lines.append("| process | " + " | ".join(stages) + f" | {growths} |")
            lines.append("| --- |" + " ---: |" * (len(stages) + 2))
            for label in self.memory[stages[0]]:
                cells = []
                for stage in stages:
                    kib = self.memory[stage].get(label, (0, None))[1]
                    cells.append("gone" if kib is None else f"{kib / 1024:.1f}")
                growth = [self.growth_pct(label, stages[a], stages[-1]) for a in (-2, 0)]
                shown = ["n/a" if g is None else f"{g:+.1f}%" for g in growth]
                lines.append(f"| {label} | " + " | ".join(cells) + f" | {shown[0]} | {shown[1]} |")
        lines += ["", f"Checks: {'all passed' if not self.problems else f'{len(self.problems)} FAILED'}."]
        lines += [f"- {problem}" for problem in self.problems]
        return "\n".join(lines)


# -- calls ---------------------------------------------------------------------------------------
def send_calls(base_url: str, headers: dict[str, str], calls: int, concurrency: int, name: str) -> Round:
    """Exactly `calls` calls over `concurrency` connections (one keep-alive session each)."""
    numbers = iter(range(calls))
    lock = threading.Lock()
    latencies: list[float] = []
    failures: list[str] = []

    def caller() -> None:
        session = requests.Session()
        session.headers.update(headers)
        while True:
            with lock:
                n = next(numbers, None)
            if n is None:
                return
            sent = time.perf_counter()
            try:
                response = session.get(f"{base_url}/api/scripts/echo", params={"n": n}, timeout=CALL_TIMEOUT_SECONDS)
                took = (time.perf_counter() - sent) * 1000
                ok = response.status_code == 200 and _json(response) == {"n": str(n)}
                problem = None if ok else f"call {n}: {response.status_code} {response.text[:300]}"
            except requests.RequestException as exc:
                took, problem = (time.perf_counter() - sent) * 1000, f"call {n}: {type(exc).__name__}: {exc}"
            with lock:
                latencies.append(took)
                if problem:
                    failures.append(problem)

    threads = [threading.Thread(target=caller, name=f"caller-{i}") for i in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()  # every call is bounded by CALL_TIMEOUT_SECONDS
    return Round(name, calls, concurrency, time.perf_counter() - started, latencies, failures)


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def create_scripts(base_url: str, headers: dict[str, str], crons: int) -> tuple[str, list[str]]:
    """The echo endpoint and `crons` every-second cron scripts, through the REST API."""
    ids = []
    for body in [ENDPOINT] + [
        {"name": f"tick-{i}", "type": "cron", "cron_expression": "* * * * * *", "source": CRON_SOURCE}
        for i in range(crons)
    ]:
        response = requests.post(f"{base_url}/api/v1/scripts", json=body, headers=headers, timeout=30)
        response.raise_for_status()
        ids.append(response.json()["id"])
    return ids[0], ids[1:]


# -- what the database recorded --------------------------------------------------------------------
def endpoint_statuses(app: Flask, script_id: str) -> Counter[str]:
    with app.app_context():
        rows = db.session.execute(
            db.select(Execution.status, db.func.count())
            .where(Execution.script_id == uuid.UUID(script_id), Execution.trigger == "endpoint")
            .group_by(Execution.status)
        ).all()
        db.session.remove()
    return Counter({status: count for status, count in rows})


def wait_for_endpoint_records(app: Flask, script_id: str, expected: int, timeout: float) -> Counter[str]:
    """The endpoint executions once `expected` are there (or the timeout passed)."""

    def enough() -> Counter[str] | None:
        found = endpoint_statuses(app, script_id)
        return found if sum(found.values()) >= expected else None

    with contextlib.suppress(TimeoutError):
        return eventually(enough, timeout, f"{expected} endpoint executions recorded")
    return endpoint_statuses(app, script_id)


def cron_fires(app: Flask, script_id: str) -> list[tuple[datetime, str]]:
    with app.app_context():
        rows = db.session.execute(
            db.select(Execution.scheduled_at, Execution.status)
            .where(Execution.script_id == uuid.UUID(script_id), Execution.trigger == "cron")
            .order_by(Execution.scheduled_at)
        ).all()
        db.session.remove()
    return [(at, status) for at, status in rows]


def check_cron(app: Flask, redis: Redis, script_id: str) -> CronScript:
    rows = cron_fires(app, script_id)
    fires = [at for at, _ in rows]
    distinct = sorted(set(fires))
    missing = [
        a + timedelta(seconds=s)
        for a, b in itertools.pairwise(distinct)
        for s in range(1, int((b - a).total_seconds()))
    ]
    # The scheduler's next fire must follow the last recorded one: a fire it took on (moved its
    # schedule past) but never recorded would be lost without a gap between recorded fires.
    due = redis.zscore(DUE_KEY, script_id)
    if distinct and due is not None and from_ms(due) - distinct[-1] > timedelta(seconds=1):
        next_fire = from_ms(due)
        missing += [
            distinct[-1] + timedelta(seconds=s) for s in range(1, int((next_fire - distinct[-1]).total_seconds()))
        ]
    return CronScript(script_id, fires, Counter(s for _, s in rows), missing, len(fires) - len(distinct))


def unfinished(app: Flask) -> int:
    with app.app_context():
        count = db.session.scalar(
            db.select(db.func.count()).select_from(Execution).where(Execution.status.in_(("queued", "running")))
        )
        db.session.remove()
    return count


# -- memory ----------------------------------------------------------------------------------------
def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return None


def children(pid: int) -> list[int]:
    """The process's children, whichever of its threads started them (a worker's sandbox is
    started by the thread of its first run)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # the thread or process ended
            found += [int(p) for p in (task / "children").read_text().split()]
    return found


def process_pids(web: WebProcess, workers: list[WorkerProcess], scheduler: SchedulerProcess) -> dict[str, int]:
    """Every process that serves the load, by a label that stays the same across samples."""
    pids = {f"web: gunicorn worker {i}": pid for i, pid in enumerate(sorted(web.worker_pids()), 1)}
    for i, worker in enumerate(workers, 1):
        pids[f"worker {i}"] = worker.proc.pid
        for j, child in enumerate(children(worker.proc.pid), 1):
            pids[f"worker {i}: sandbox" + (f" {j}" if j > 1 else "")] = child
    pids["scheduler"] = scheduler.proc.pid
    return pids


# -- the whole run -------------------------------------------------------------------------------
def run_load(
    app: Flask,
    redis_url: str,
    web: WebProcess,
    workers: list[WorkerProcess],
    scheduler: SchedulerProcess,
    headers: dict[str, str],
    *,
    calls: int,
    warmup: int,
    concurrency: int,
    crons: int,
    rounds: int = 2,
    max_growth_pct: float = 10.0,
    record_timeout: float = 30.0,
    drain_timeout: float = 60.0,
) -> LoadReport:
    """Warm-up, then `rounds` rounds of `calls` calls, cron scripts firing all along; then the
    scheduler is stopped (the caller stops web and workers) and everything is checked."""
    report = LoadReport(max_growth_pct=max_growth_pct)
    redis = Redis.from_url(redis_url)
    endpoint_id, cron_ids = create_scripts(web.url, headers, crons)
    created_at = utcnow()
    eventually(lambda: all(cron_fires(app, sid) for sid in cron_ids), 20, "a first fire recorded for every cron script")
    expected = 0
    for name, count in [("warm-up", warmup)] + [(f"round {i}", calls) for i in range(1, rounds + 1)]:
        done = send_calls(web.url, headers, count, concurrency, name)
        expected += count
        done.expected_total = expected
        done.recorded = wait_for_endpoint_records(app, endpoint_id, expected, record_timeout)
        report.rounds.append(done)
        report.memory[name] = {
            label: (pid, rss_kib(pid)) for label, pid in process_pids(web, workers, scheduler).items()
        }
        for failure in done.failures[:10]:
            report.problems.append(f"{name}: {failure}")
        if len(done.failures) > 10:
            report.problems.append(f"{name}: … {len(done.failures) - 10} more failed calls")
        total = sum(done.recorded.values())
        if total != expected or done.recorded["succeeded"] != expected:
            report.problems.append(
                f"{name}: {total} endpoint executions recorded ({dict(done.recorded)}), "
                f"expected exactly {expected} succeeded"
            )
    # Stop between two fires: the scheduler ends after its current pass, so a fire due in the
    # very instant it stops is left for the next scheduler (which collapses it by policy), and
    # the checks below, which expect every second up to the stop, would count it missing.
    time.sleep((0.5 - time.time()) % 1)
    stopped_at = utcnow()  # asked to stop: no fire is due after this; stop() may take a while to return
    scheduler.stop()

    with contextlib.suppress(TimeoutError):
        eventually(lambda: unfinished(app) == 0, drain_timeout, "no execution queued or running")
    report.leftovers = {
        "executions queued or running": unfinished(app),
        "endpoint calls not yet recorded (`sr:endpoint:inflight`)": redis.hlen(INFLIGHT),
        **{f"jobs in RQ queue `{q}`": redis.llen(f"rq:queue:{q}") for q in QUEUES},
    }
    for what, count in report.leftovers.items():
        if count:
            report.problems.append(f"left over: {count} {what}")
    final = endpoint_statuses(app, endpoint_id)
    if sum(final.values()) != expected:
        report.problems.append(f"after the drain, {sum(final.values())} endpoint executions for {expected} calls")

    for script_id in cron_ids:
        cron = check_cron(app, redis, script_id)
        report.crons.append(cron)
        label = f"cron script {script_id}"
        if not cron.fires:
            report.problems.append(f"{label}: no fire recorded")
            continue
        if cron.doubled:
            report.problems.append(f"{label}: {cron.doubled} fire(s) recorded twice")
        if cron.missing:
            shown = ", ".join(f"{at:%H:%M:%S}" for at in cron.missing[:10])
            report.problems.append(f"{label}: {len(cron.missing)} second(s) with no fire recorded: {shown}")
        odd = {s: n for s, n in cron.statuses.items() if s not in ("succeeded", "skipped")}
        if odd:
            report.problems.append(f"{label}: fires ended {odd} (only succeeded or skipped expected)")
        if cron.fires[0] > created_at + FIRE_SLACK:
            report.problems.append(f"{label}: first fire {cron.fires[0]}, but the script was saved by {created_at}")
        if cron.fires[-1] < stopped_at - FIRE_SLACK:
            report.problems.append(f"{label}: last fire {cron.fires[-1]}, but the scheduler ran until {stopped_at}")

    stages = list(report.memory)
    for label, (pid, _) in report.memory[stages[0]].items():
        for stage in stages[1:]:
            now = report.memory[stage].get(label)
            if now is None or now[0] != pid:
                report.problems.append(f"{label}: process {pid} replaced by {now and now[0]} by the end of {stage}")
                break
        growth = report.growth_pct(label, stages[-2], stages[-1])
        if growth is not None and growth > max_growth_pct:
            report.problems.append(
                f"{label}: RSS grew {growth:+.1f}% from {stages[-2]} to {stages[-1]} (bound {max_growth_pct:+.0f}%)"
            )
    return report
