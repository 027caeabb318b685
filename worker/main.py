"""The worker process: an RQ SimpleWorker (no fork per job) that keeps its sandbox warm.

    python -m worker                       # one worker on the endpoints and default queues
    rq worker-pool -n 4 -w worker.main.ScriptWorker -u "$REDIS_URL" endpoints default

Every run (endpoint call, manual, cron or draft run) takes one of the worker's
WORKER_CONCURRENCY slots and a thread of its own, on a lean path that skips RQ's per-job
bookkeeping (webapp/endpoints/calls.py, worker/runs.py).

Besides jobs, every worker heartbeats (so its runs are known to be alive) and, under a Redis
lock, reaps runs lost with a dead worker, prunes old executions and audit entries, and keeps
tenants within their storage quota.
"""

import contextlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker, worker_registration
from rq.job import Job

from webapp.audit.log import prune_audit
from webapp.config import Settings
from webapp.endpoints import calls
from webapp.executions.maintenance import mark_alive, prune_executions, reap_lost
from webapp.executions.service import ENDPOINT_QUEUE, QUEUES
from webapp.fairness import tenant_slots
from webapp.metrics import RunCounts
from webapp.quotas import enforce_storage_quotas
from webapp.secret_store.key_check import check_app_keys
from worker.busy import BusyCount
from worker.host_api import prune_expired_storage
from worker.jobs import run_endpoint_call
from worker.runs import LEAN_JOBS, Runs
from worker.state import get_state

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 5
REAP_EVERY_SECONDS = 10
PRUNE_EVERY_SECONDS = 600


class ScriptWorker(SimpleWorker):
    # Redis gone: retry after 1 s, then 2 s at most (RQ's default backs off to a minute), so
    # the worker is back within seconds of Redis.
    max_connection_wait_time = 2.0

    def __init__(self, *args, **kwargs):
        state = get_state()
        # Here, not in main(): `rq worker -w` and `rq worker-pool -w` start this class without it.
        check_app_keys(state.app)  # a wrong SECRETS_KEY refuses to start (webapp/secret_store/key_check.py)
        super().__init__(*args, **kwargs)
        self.sandbox_state = state
        self.sandbox_state.name = self.name
        self.sandbox_state.busy = BusyCount(self.connection, self.name)
        self.endpoint_calls = calls.WorkerSide(self.sandbox_state.app, self.connection)
        # Runs in flight at once (endpoint calls, manual, cron and draft runs), each in a
        # thread of its own, all in one sandbox process (worker/runtime/sandbox.py): a run
        # waiting on the network holds no other.
        self.concurrency = self._settings().worker_concurrency
        self._run_slots = threading.BoundedSemaphore(self.concurrency)
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="run")
        self._slot_held = False
        self._stop = threading.Event()
        self._last_beat = self._beat_covers = self._last_suspension_check = 0.0
        self.slots = tenant_slots(self.connection)
        self.runs = Runs(self.connection, self.slots, self.name)

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None):
        """While endpoint calls wait, the next one comes in one round trip (RQ's dequeue takes
        several: worker state, pop, job fetch, each with its log line). With none waiting,
        RQ's own dequeue blocks on every queue as usual. Nothing is taken without a free slot
        for it: a worker with all its slots busy leaves the next run to another worker."""
        self._hold_a_slot()
        taken = self._take_endpoint_call()
        if taken is None:
            taken = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
        if taken is None:
            self._free_the_slot()
        return taken

    def _hold_a_slot(self) -> None:
        if self._slot_held:
            return
        while not self._run_slots.acquire(timeout=1):
            self.heartbeat()
        self._slot_held = True

    def _free_the_slot(self) -> None:
        if self._slot_held:
            self._slot_held = False
            self._run_slots.release()

    def _take_endpoint_call(self) -> tuple[Job, Queue] | None:
        queue = self.queues[0]
        if queue.name != ENDPOINT_QUEUE:  # a worker that serves other queues first keeps RQ's order
            return None
        taken = self.endpoint_calls.take_next(queue.key, self.job_class.redis_job_namespace_prefix)
        if taken is None:
            return None
        job_id, fields = taken
        job = self.job_class(job_id, connection=self.connection, serializer=self.serializer)
        try:
            job.restore(fields)
        except Exception:  # RQ's dequeue skips a job it cannot read; so do we, and go on serving
            log.exception("endpoint job %s could not be read; skipped", job.id)
            return None
        job.redis_server_version = self.get_redis_server_version()
        return job, queue

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Endpoint calls, manual, cron and draft runs each take a slot's thread, on the lean
        paths of webapp/endpoints/calls.py (the caller gets the answer first, the execution is
        recorded after) and worker/runs.py. Any other job runs RQ's way, in this thread."""
        if queue.name == ENDPOINT_QUEUE and job.func_name == calls.JOB_FUNCTION:
            self._slot_held = False  # the call's thread gives it back
            self._pool.submit(self._answer_call, job, queue)
        elif job.func_name in LEAN_JOBS:
            self._slot_held = False  # the run's thread gives it back
            self._pool.submit(self._perform_run, job, queue)
        else:
            self._free_the_slot()
            super().execute_job(job, queue)

    def _answer_call(self, job: Job, queue: Queue) -> None:
        try:
            counts = RunCounts()
            answer, row = run_endpoint_call(*job.args, counts=counts)
            # One queue: RQ dequeued with LMOVE into its intermediate list, which only its own
            # job bookkeeping (skipped here) would empty.
            intermediate = queue.intermediate_queue_key if len(self.queues) == 1 else None
            self.endpoint_calls.hand_back(job.args[0], answer, row, counts, intermediate)
        except Exception:  # the call stays in INFLIGHT: the reaper records it as lost
            log.exception("endpoint call %s: not answered", job.id)
        finally:
            self._run_slots.release()

    def _perform_run(self, job: Job, queue: Queue) -> None:
        """A manual, cron or draft run holds a slot of its tenant while it runs; at the
        tenant's cap the run is parked instead, and put back on its queue when a slot frees
        (webapp/fairness.py)."""
        try:
            tenant = job.meta.get("tenant_id")
            hold = self._settings().limits.overdue_after
            if self.runs.start(job, tenant, hold, self._tenant_cap(), queue.intermediate_queue_key):
                self.runs.perform(job, tenant)
            else:
                log.info("job %s parked: its tenant has as many runs in flight as it may", job.id)
        except Exception:  # a run claimed in the database is reaped as lost if it stays `running`
            log.exception("job %s: not run to its end", job.id)
        finally:
            self._run_slots.release()

    def _tenant_cap(self) -> int:
        return self._settings().tenants.max_runs

    def _settings(self) -> Settings:
        return self.sandbox_state.app.config["SETTINGS"]

    # RQ's work loop ends the worker on any error outside its dequeue. The bookkeeping below
    # may fail while Redis is away; the worker must outlive that, so these only log.

    def set_state(self, state: str, pipeline=None):
        """RQ sets the same state several times per job; write only a change."""
        if pipeline is None and state == getattr(self, "_state", None):
            return
        try:
            super().set_state(state, pipeline)
        except RedisError:
            log.warning("worker state not recorded: Redis is unavailable")

    def check_for_suspension(self, burst: bool):
        """`rq suspend` is checked once a second, not before every job."""
        if time.monotonic() - getattr(self, "_last_suspension_check", 0.0) < 1.0:
            return
        self._last_suspension_check = time.monotonic()
        try:
            super().check_for_suspension(burst)
        except RedisError:
            log.warning("suspension not checked: Redis is unavailable")

    def run_maintenance_tasks(self):
        try:
            super().run_maintenance_tasks()
        except RedisError:
            log.warning("RQ maintenance skipped: Redis is unavailable")

    def heartbeat(self, timeout: int | None = None, pipeline=None):
        """RQ beats several times per job; one beat a second keeps the worker visibly alive."""
        wanted = time.monotonic() + (timeout or self.worker_ttl + 60)
        last, covers = getattr(self, "_last_beat", 0.0), getattr(self, "_beat_covers", 0.0)
        if pipeline is None and time.monotonic() - last < 1.0 and wanted <= covers + 1.0:
            return
        try:
            super().heartbeat(timeout, pipeline)
        except RedisError:
            log.warning("heartbeat not sent: Redis is unavailable")
            return
        self._last_beat, self._beat_covers = time.monotonic(), wanted

    def work(self, *args, **kwargs):
        upkeep = threading.Thread(target=self._upkeep, name="upkeep", daemon=True)
        upkeep.start()
        try:
            return super().work(*args, **kwargs)
        finally:
            self._pool.shutdown(wait=True)  # the runs in flight are answered and recorded
            self._stop.set()
            with contextlib.suppress(RedisError):
                self.slots.gone(self.name)
            self.endpoint_calls.close()
            self.sandbox_state.busy.close()
            self.sandbox_state.sandbox.close()

    def _upkeep(self) -> None:
        redis: Redis = self.connection
        last_reap = last_prune = 0.0
        while not self._stop.is_set():
            try:
                mark_alive(redis, self.name)
                self.slots.beat(self.name, self.concurrency)
                self.slots.wake_parked(self._tenant_cap())
                self._registered_again(redis)
                now = time.monotonic()
                if now - last_reap >= REAP_EVERY_SECONDS and redis.set(
                    "sr:lock:reap", self.name, nx=True, ex=REAP_EVERY_SECONDS
                ):
                    last_reap = now
                    with self.sandbox_state.app.app_context():
                        reap_lost(redis)
                        calls.reap_unrecorded_calls(redis, older_than_seconds=self._settings().limits.overdue_after)
                if now - last_prune >= PRUNE_EVERY_SECONDS and redis.set(
                    "sr:lock:prune", self.name, nx=True, ex=PRUNE_EVERY_SECONDS
                ):
                    last_prune = now
                    with self.sandbox_state.app.app_context():
                        prune_executions()
                        prune_audit()
                        prune_expired_storage()
                        enforce_storage_quotas()  # recounts what the two above deleted
            except Exception:
                log.exception("worker upkeep failed; retrying")
            self._stop.wait(HEARTBEAT_SECONDS)

    def _registered_again(self, redis: Redis) -> None:
        """A Redis that restarted without its data has forgotten this worker: register it
        again (RQ registers only at start), so that it is counted and shown."""
        if self.birth_date is None or redis.sismember(self.redis_workers_keys, self.key):
            return  # not registered by RQ yet (the upkeep starts first), or still registered
        log.warning("worker %s was not registered in Redis (restarted?): registering again", self.name)
        with redis.pipeline() as pipe:
            pipe.hset(self.key, mapping=self.serialize())
            worker_registration.register(self, pipe)
            pipe.expire(self.key, self.worker_ttl + 60)
            pipe.execute()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    redis = Redis.from_url(get_state().app.config["SETTINGS"].redis_url)
    queues = [Queue(name, connection=redis) for name in QUEUES]
    ScriptWorker(queues, connection=redis).work(with_scheduler=False)
