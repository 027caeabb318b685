"""Execution engine benchmark: compile cache, end-to-end run rate, memory over many runs.

    .venv/bin/python bench/execution.py [--e2e-runs 1000] [--rss-runs 100000]

Every figure is measured in this one run, each against its baseline, because the machine is
shared and noisy: compare the ratios, not the absolute numbers, across runs.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import quickjs
from redis import Redis

from bench._stack import cpu_seconds
from tests.load import children
from tests.services import WorkerProcess, redis_server
from webapp.limits import DefaultLimits, effective_limits
from worker.runtime.engine import RunLimits, Runtime
from worker.runtime.sandbox import Sandbox
from worker.runtime.source import function_body

SMALL = """
async function main(event) {
  const items = (event.items || [1, 2, 3]).map((x) => x * 2);
  console.log("doubled", items.length);
  return { total: items.reduce((a, b) => a + b, 0), items };
}
"""


def large_source(lines: int = 500) -> str:
    helpers = []
    for i in range(lines // 5):
        helpers.append(
            f"function helper{i}(x) {{\n  const y = x * {i + 1} + {i};\n"
            f"  if (y % 3 === 0) return y / 3;\n  return y;\n}}"
        )
    body = "\n".join(helpers)
    return (
        body
        + "\nfunction main(event) {\n  let s = 0;\n  for (let i = 0; i < 20; i++) s += helper"
        + str(lines // 5 - 1)
        + "(i);\n  return { s };\n}\n"
    )


LIMITS = RunLimits(cpu_seconds=5, memory_bytes=64 << 20, log_bytes=256 << 10, result_bytes=1 << 20)
SANDBOX_LIMITS = effective_limits(DefaultLimits(), None)  # the same, and 30 s of wall time


def per_run_ms(fn, runs: int) -> float:
    fn()  # warm up
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def no_host(calls: list[dict]) -> list[dict]:
    return [{"id": c["id"], "ok": True, "value": "null"} for c in calls]


def cache_figures(runs: int) -> list[tuple[str, float, float, float]]:
    rows = []
    for label, source in (("small (5 lines)", SMALL), ("large (~500 lines)", large_source())):
        runtime = Runtime(1 << 20, cache_size=64)
        request = {"tenant_id": 1, "script_id": "s", "version": 1, "source": source, "event_json": "{}", "context": {}}

        def warm() -> None:
            outcome = runtime.run(request, LIMITS, no_host)
            assert outcome.status == "succeeded", outcome
            runtime.runs = 0

        def fresh() -> None:
            ctx = quickjs.Context()  # a bare runtime, no host API, no freezing: the cheapest cold path
            factory = ctx.eval(f"new Function({json.dumps(function_body(source))})")
            result = factory()(ctx.parse_json("{}"))
            if hasattr(result, "json"):
                while ctx.execute_pending_job():
                    pass

        def fresh_sandbox() -> None:
            outcome = Runtime(1 << 20).run(request, LIMITS, no_host)  # host API + frozen globals
            assert outcome.status == "succeeded", outcome

        rows.append((label, per_run_ms(warm, runs), per_run_ms(fresh, runs), per_run_ms(fresh_sandbox, runs // 4)))
    return rows


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def sandbox_rss(total: int) -> list[tuple[int, int]]:
    sandbox = Sandbox(1 << 20, 500, 48 << 20)
    sandbox.start()
    checkpoints, points = {1000, 10_000, total}, []
    sources = [SMALL, large_source(), "function main(e){ const o = {}; o.self = o; return Object.keys(e).length }"]
    for i in range(1, total + 1):
        source = sources[i % len(sources)]
        request = {
            "tenant_id": 1,
            "script_id": f"s{i % 3}",
            "version": 1 + (i // 5000),
            "source": source,
            "event_json": json.dumps({"i": i}),
            "context": {"n": i},
        }
        outcome = sandbox.run(request, SANDBOX_LIMITS, no_host)
        assert outcome["status"] == "succeeded", outcome
        if i in checkpoints:
            points.append((i, rss_kb(sandbox.pid)))
    sandbox.close()
    return points


def tenant_figures(runs: int) -> list[tuple[str, float, float]]:
    """Runs through one sandbox process, each tenant in a runtime of its own: one tenant, as
    many tenants as it keeps warm (round robin), and more than that (every run a cold one)."""
    tenants_kept = 64
    rows = []
    for label, tenants in (
        ("1 tenant", 1),
        (f"{tenants_kept} tenants, round robin (all kept warm)", tenants_kept),
        (f"{tenants_kept * 2} tenants, round robin (each run a new runtime)", tenants_kept * 2),
    ):
        sandbox = Sandbox(1 << 20, 10**9, 48 << 20, tenants_kept)
        sandbox.start()
        cpu_before, _ = sandbox._cpu_and_rss()
        samples = []
        for i in range(runs + tenants):
            tenant = i % tenants
            request = {
                "tenant_id": tenant,
                "script_id": f"s{tenant}",
                "version": 1,
                "source": SMALL,
                "event_json": "{}",
                "context": {},
            }
            started = time.perf_counter()
            outcome = sandbox.run(request, SANDBOX_LIMITS, no_host)
            assert outcome["status"] == "succeeded", outcome
            if i >= tenants:  # the first round warms up
                samples.append((time.perf_counter() - started) * 1000)
            if i == tenants - 1:
                time.sleep(0.05)  # let the last spare be built
                cpu_before, _ = sandbox._cpu_and_rss()
        cpu, _ = sandbox._cpu_and_rss()
        sandbox.close()
        rows.append((label, statistics.median(samples), (cpu - cpu_before) * 1000 / runs))
    return rows


def end_to_end(total: int, batch: int = 1000) -> tuple[dict[str, float], list[tuple[int, int, int]]]:
    """Runs through Redis and one real worker process, in batches; RSS of worker and sandbox."""
    from webapp.app import create_app
    from webapp.config import Settings
    from webapp.executions import service
    from webapp.extensions import db
    from webapp.models import Execution, Membership, Script, Tenant, User
    from webapp.scripts.service import _snapshot

    with redis_server() as redis_url, tempfile.TemporaryDirectory() as tmp:
        database_url = f"sqlite:///{tmp}/bench.db"
        settings = replace(Settings.from_env(), database_url=database_url, redis_url=redis_url, retention_count=10**9)
        app = create_app(settings)
        with app.app_context():
            db.create_all()
            tenant, user = Tenant(name="bench"), User(email="b@bench.io", password_hash="x")
            script = Script(tenant=tenant, name="s", type="manual", source=SMALL, version=1)
            script.versions.append(_snapshot(script, user))
            db.session.add_all([tenant, user, Membership(user=user, tenant=tenant, role="admin"), script])
            db.session.commit()
        worker = WorkerProcess(database_url, redis_url, EXECUTION_RETENTION_COUNT=str(10**9)).start()
        points: list[tuple[int, int, int]] = []
        try:
            with app.test_request_context():
                script = db.session.scalar(db.select(Script))
                service.wait_for(service.start_run(script, "manual", {}), 10)  # warm the worker
                done, first = 0, {}
                redis_pid = Redis.from_url(redis_url).info()["process_id"]
                while done < total:
                    started = time.perf_counter()
                    cpu = {"worker": cpu_seconds(worker.proc.pid), "redis": cpu_seconds(redis_pid)}
                    for _ in range(min(batch, total - done)):
                        service.start_run(script, "manual", {"items": [1, 2, 3]})
                    enqueued = time.perf_counter()
                    done += min(batch, total - done)
                    count = db.select(db.func.count()).select_from(Execution).where(Execution.status == "succeeded")
                    while db.session.scalar(count) < done + 1:
                        time.sleep(0.05)
                        db.session.commit()
                    if not first:
                        finished = time.perf_counter()
                        first = {
                            "runs": done,
                            "seconds": finished - started,
                            "runs_per_s": done / (finished - started),
                            "enqueue_ms": (enqueued - started) * 1000 / done,
                            "worker_cpu_ms": (cpu_seconds(worker.proc.pid) - cpu["worker"]) * 1000 / done,
                            "redis_cpu_ms": (cpu_seconds(redis_pid) - cpu["redis"]) * 1000 / done,
                        }
                    if done in (1000, 10_000) or done == total or done % 50_000 == 0:
                        sandbox_pid = next(iter(children(worker.proc.pid)), None)
                        points.append((done, rss_kb(worker.proc.pid), rss_kb(sandbox_pid) if sandbox_pid else 0))
        finally:
            worker.stop()
    return first, points


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache-runs", type=int, default=300)
    parser.add_argument("--e2e-runs", type=int, default=100_000)
    parser.add_argument("--rss-runs", type=int, default=100_000)
    args = parser.parse_args()

    print("## Compile cache: per-run cost (median ms)\n")
    print(
        "| script | warm runtime, cached compile | fresh bare context + compile | ratio "
        "| fresh sandbox runtime + compile | ratio |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, warm, fresh, fresh_sandbox in cache_figures(args.cache_runs):
        print(
            f"| {label} | {warm:.3f} | {fresh:.3f} | {fresh / warm:.1f}× | {fresh_sandbox:.3f} "
            f"| {fresh_sandbox / warm:.1f}× |"
        )

    print("\n## Runtimes per tenant: a run through the sandbox process (median ms, CPU ms per run)\n")
    rows = tenant_figures(args.cache_runs * 4)
    print("| tenants | wall per run | ratio | sandbox CPU per run | ratio |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, wall, cpu in rows:
        print(f"| {label} | {wall:.3f} | {wall / rows[0][1]:.1f}× | {cpu:.3f} | {cpu / rows[0][2]:.1f}× |")

    print("\n## End to end through one worker (enqueue → recorded), first batch\n")
    e2e, rss_points = end_to_end(args.e2e_runs)
    print("| runs | seconds | runs/s | enqueue ms/run | worker CPU ms/run | Redis CPU ms/run |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    print(
        f"| {e2e['runs']} | {e2e['seconds']:.1f} | {e2e['runs_per_s']:.0f} | {e2e['enqueue_ms']:.2f} "
        f"| {e2e['worker_cpu_ms']:.2f} | {e2e['redis_cpu_ms']:.2f} |"
    )
    print("\n## Worker and sandbox process memory over the end-to-end runs\n")
    print("| runs | worker RSS | vs. after 1k | sandbox RSS | vs. after 1k |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    w0, s0 = rss_points[0][1], rss_points[0][2] or 1
    for runs, w, sb in rss_points:
        print(
            f"| {runs:,} | {w / 1024:.1f} MiB | {(w - w0) / w0 * 100:+.1f}% | {sb / 1024:.1f} MiB "
            f"| {(sb - s0) / s0 * 100:+.1f}% |"
        )

    print("\n## Sandbox process alone over many runs (3 scripts, new versions every 5k runs, no RQ)\n")
    points = sandbox_rss(args.rss_runs)
    base = points[0][1]
    print("| runs | RSS | vs. after 1k |")
    print("| ---: | ---: | ---: |")
    for runs, kb in points:
        print(f"| {runs:,} | {kb / 1024:.1f} MiB | {(kb - base) / base * 100:+.1f}% |")


if __name__ == "__main__":
    main()
