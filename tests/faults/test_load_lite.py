"""Load, small enough for every test run: the checks of bench/load.py (the full run) on
rounds of 800 calls over 16 connections, with two cron scripts firing every second."""

from tests.conftest import bearer
from tests.load import run_load
from tests.services import SINGLE_TENANT_LOAD

CALLS = 800  # a round lasts a few seconds: the cron scripts fire several times meanwhile
CONCURRENCY = 16
CRONS = 2
# A smoke check: the real flatness figure comes from bench/load.py's 2,000-call rounds.
MAX_GROWTH_PCT = 25.0


def test_concurrent_calls_and_every_second_fires_are_all_answered_and_recorded_once(
    app, settings, make_user, make_token, start_web, start_worker, start_scheduler
):
    make_user("ed@acme.io", "acme", "editor")
    headers = bearer(make_token("ed@acme.io"))
    web = start_web(**SINGLE_TENANT_LOAD)
    try:
        # Retention keeps 1,000 executions per script, pruned by a worker soon after it starts:
        # every call of this run must stay countable.
        workers = [start_worker(EXECUTION_RETENTION_COUNT="100000") for _ in range(2)]
        scheduler = start_scheduler()
        report = run_load(
            app,
            settings.redis_url,
            web,
            workers,
            scheduler,
            headers,
            calls=CALLS,
            warmup=200,
            concurrency=CONCURRENCY,
            crons=CRONS,
            max_growth_pct=MAX_GROWTH_PCT,
        )
    finally:
        web.stop()
    print("\n" + report.markdown())  # pytest -s shows the figures
    assert not report.problems, "\n".join(report.problems)
