"""Manual, cron and draft runs on a lean path, like endpoint calls (docs/architecture.md, "The
lean run path").

RQ's own way of running a job writes dozens of commands in several round trips (worker state,
execution records, the started and finished registries, heartbeats, status, result, counters).
Of all that, the web reads only:

- a job's result stream: `wait` on a run (webapp/executions/service.py `wait_for`) and a
  draft's outcome (webapp/executions/drafts.py `ephemeral_outcome`) block on it;
- an unsaved draft's job hash, until its outcome expires: whose draft it is, and `started`
  while it runs;
- the status of a job that failed without recording its run, for the reaper
  (webapp/executions/maintenance.py `reap_lost`).

A run's record, and its `lost` detection, are the database's: `running` with its worker's name,
which beats while it lives. So a run costs one round trip as it starts (its tenant's slot, and
its id off RQ's intermediate list) and one pipeline as it ends (result, job, slot, metrics).
"""

import logging
import traceback
from collections.abc import Callable
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq.defaults import DEFAULT_FAILURE_TTL, DEFAULT_RESULT_TTL
from rq.job import Job, JobStatus
from rq.results import Result

from webapp.executions.drafts import EPHEMERAL_JOB
from webapp.executions.service import JOB_FUNCTION
from webapp.fairness import TenantSlots
from webapp.metrics import RunCounts
from worker.jobs import run_draft, run_execution

log = logging.getLogger(__name__)
LEAN_JOBS = (JOB_FUNCTION, EPHEMERAL_JOB)


class Runs:
    """One worker's side of the lean path: `start` takes a run, `perform` runs it and ends it."""

    def __init__(self, redis: Redis, slots: TenantSlots, worker_name: str):
        self.redis, self.slots, self.worker_name = redis, slots, worker_name

    def start(self, job: Job, tenant: int | None, hold: float, cap: int, intermediate: str) -> bool:
        """Take a slot of the run's tenant (True), or park the run until one frees (False,
        webapp/fairness.py); either way its id leaves RQ's `intermediate` list, whose upkeep
        would otherwise fail a run in flight for a minute as stuck there."""
        pipe = self.redis.pipeline(transaction=False)
        if tenant is not None:
            self.slots.take_or_park(tenant, job.id, hold, cap, intermediate, pipe, job.key, self.worker_name)
        else:  # a job queued by an older web process: no tenant to count it against
            pipe.hset(job.key, mapping={"status": JobStatus.STARTED.value, "worker_name": self.worker_name})
        pipe.lrem(intermediate, 1, job.id)  # RQ put it there only when the worker serves one queue
        try:
            answered = pipe.execute()
            taken = answered[0] if tenant is not None else 1
        except RedisError:
            log.warning("job %s: run without its tenant's slot (Redis is unavailable)", job.id)
            return True  # the run goes ahead: fairness is not worth losing it
        return bool(taken)

    def perform(self, job: Job, tenant: int | None) -> None:
        """Run the job's function, then end it in one pipeline."""
        counts = RunCounts()
        run: Callable[..., Any] = run_draft if job.func_name == EPHEMERAL_JOB else run_execution
        try:
            kwargs = {} if run is run_draft else {"counts": counts}
            value, failure = run(*job.args, **kwargs), None
        except Exception:
            log.exception("job %s failed in the worker", job.id)
            value, failure = None, traceback.format_exc()
        pipe = self.redis.pipeline(transaction=False)
        self._end_job(job, value, failure, pipe)
        if tenant is not None:
            self.slots.release(tenant, job.id, pipe)
        counts.write(pipe)
        try:
            pipe.execute()
        except RedisError:  # the run is recorded in the database; its slot lapses on its own
            log.warning("job %s: its end not written to Redis (Redis is unavailable)", job.id)

    def _end_job(self, job: Job, value: Any, failure: str | None, pipe: Any) -> None:
        """What RQ's `handle_job_success`/`handle_job_failure` leave that the web reads: the
        result, and the job while something may still read it (a draft's until its outcome
        expires, a failure's for the reaper). A run's job is deleted: its row is its record."""
        if failure is not None:
            ttl = job.failure_ttl or DEFAULT_FAILURE_TTL
            Result.create_failure(job, ttl, failure, worker_name=self.worker_name, pipeline=pipe)
            status = JobStatus.FAILED
        else:
            ttl = job.get_result_ttl(DEFAULT_RESULT_TTL)
            if ttl != 0:
                Result.create(job, Result.Type.SUCCESSFUL, ttl, value, worker_name=self.worker_name, pipeline=pipe)
            status = JobStatus.FINISHED
        if status == JobStatus.FINISHED and (job.func_name != EPHEMERAL_JOB or ttl == 0):
            pipe.unlink(job.key)
            return
        pipe.hset(job.key, "status", status.value)
        if ttl > 0:
            pipe.expire(job.key, ttl)
