"""The endpoint call protocol: a call's trip through Redis, queued by the web process and
answered by a worker. Both processes import this module (docs/architecture.md).

The call is hot, so its path is lean: the request travels inside the RQ job on the `endpoints`
queue; the worker runs it, pushes the answer onto a reply list the caller is blocked on, and
only then records the execution. The web process writes to the database only when the call
went wrong on its side (no worker took it, or no answer came in time).

Until an execution row exists, the call is listed in the INFLIGHT hash (written in the same
round trip as the job). Whoever records the row removes the entry; the reaper records any
entry left behind by a worker and a web process that both died as `lost`, so no call goes
unrecorded.

The record says what the caller saw. An answer may come in the instant its caller stops
waiting: the web process's give-up and the worker's hand-back are each one Lua step on the
call's keys in Redis, so exactly one of them is first. If the answer is first, the caller gets
it; if the give-up is, the caller gets 503 and the worker records the call as such (with the
run's logs), in place of the row the web process wrote.

In the order a call travels:

    web     start_call              admits the call for its tenant and queues it
    worker  WorkerSide.take_next    the next call's job, in one round trip
            (worker/jobs.py run_endpoint_call runs it; execution_row is its row)
            WorkerSide.hand_back    the answer to the caller (unless it gave up) and the slot
                                    back, in one pipeline
    web     wait_for_answer         the answer, or a give-up recorded as `lost`
    worker  RecordWriter            the rows, in batches off the callers' path
    worker  reap_unrecorded_calls   calls whose worker and caller both died
"""

import contextlib
import json
import logging
import math
import threading
import uuid
from datetime import datetime
from typing import Any

from flask import Flask, current_app
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.job import Job
from rq.utils import now as rq_now
from sqlalchemy import delete, insert
from sqlalchemy.exc import IntegrityError

from webapp import quotas
from webapp.auth.principal import Caller
from webapp.endpoints.http import request_summary
from webapp.endpoints.router import ServedScript
from webapp.executions.service import ENDPOINT_QUEUE, QueueUnavailable, insert_ignoring_duplicates, run_context
from webapp.extensions import db
from webapp.fairness import Refusal, tenant_slots
from webapp.limits import ANSWER_MARGIN_SECONDS, QUEUE_WAIT_SECONDS, effective_limits
from webapp.metrics import RunCounts
from webapp.models import Execution, utcnow
from webapp.redis_client import get_blocking_redis, get_redis

log = logging.getLogger(__name__)
JOB_FUNCTION = "worker.jobs.run_endpoint_call"
REPLY = "sr:endpoint:reply:"  # + call id: a list holding the worker's answer
REPLY_TTL_SECONDS = 60
GAVE_UP = "sr:endpoint:gave-up:"  # + call id: set when the caller was answered 503 without it
INFLIGHT = "sr:endpoint:inflight"  # hash call id -> call (JSON), until its row is recorded
# The next endpoint call in one round trip: its id off the queue and its job's hash.
_TAKE_CALL = """
local id = redis.call('LPOP', KEYS[1])
if not id then return false end
return {id, redis.call('HGETALL', ARGV[1] .. id)}
"""
# The worker's answer goes to the caller unless the caller gave up first: 1 if it went.
_HAND_BACK = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""
# The caller gives up unless the answer came first: the answer if it did.
_GIVE_UP = """
local answer = redis.call('LPOP', KEYS[1])
if answer then return answer end
redis.call('SET', KEYS[2], '1', 'EX', ARGV[1])
return false
"""
# Why an answer missed its caller, who got 503 instead: the error kind and message it is recorded with.
LATE = ("timeout", "the answer came after its caller had stopped waiting (5 s + the wall-time limit + 2 s)")
NOT_HANDED_BACK = ("lost", "the answer could not be handed back (Redis was unavailable)")
GATHER_SECONDS = 0.1  # how long rows collect before a write
RETRY_SECONDS = 1.0
BATCH_ROWS = 200


# -- the web process queues the call ------------------------------------------------------


class TenantBusy(Exception):
    """The caller's tenant is at its cap of runs in flight or over its rate of calls."""

    def __init__(self, refusal: Refusal, message: str):
        super().__init__(message)
        self.refusal = refusal


def start_call(script: ServedScript, event: dict[str, Any], caller: Caller) -> dict[str, Any]:
    """Admit the call for its tenant and queue it; returns it (the job's first argument, the
    event being the second). Raises TenantBusy or QueueUnavailable."""
    call_id = str(uuid.uuid4())
    call = {
        "id": call_id,
        "tenant_id": script.tenant_id,
        "script_id": str(script.id),
        "script_version": script.version,
        "user_id": caller.user.id,
        "queued_at": utcnow().isoformat(),
        "summary": request_summary(event),
        # The caller and script are known here already: the worker needs no query for them.
        "context": run_context(call_id, "endpoint", script, caller.tenant, caller.user, "endpoint"),
        "fetch_allowed_hosts": caller.tenant.fetch_allowed_hosts,
    }
    settings = current_app.config["SETTINGS"]
    limits, tenants = settings.limits, settings.tenants
    redis = get_redis()
    try:
        refusal = tenant_slots(redis).admit_call(
            script.tenant_id, call_id, limits.call_hold, tenants.max_runs, tenants.endpoint_rate
        )
    except RedisError as exc:
        raise QueueUnavailable(f"the call could not be queued: Redis is unavailable ({type(exc).__name__})") from exc
    if refusal is not None:
        raise TenantBusy(refusal, refusal.message(tenants.endpoint_rate))
    queue = Queue(ENDPOINT_QUEUE, connection=redis)
    job = queue.create_job(
        JOB_FUNCTION,
        args=(call, event),
        job_id=call_id,
        description=f"endpoint call {call_id}",  # RQ logs this: never the arguments
        timeout=limits.job_timeout,
        ttl=limits.overdue_after,  # the request leaves Redis even if no one ran it
        result_ttl=0,  # the answer goes to the reply list, not to RQ's result stream
        failure_ttl=300,
    )
    job.enqueued_at = rq_now()
    try:
        # What Queue.enqueue writes (the job's hash, then its id on the queue) in one round
        # trip without MULTI: the hash is written before the id that leads a worker to it.
        pipe = redis.pipeline(transaction=False)
        pipe.hset(INFLIGHT, call_id, json.dumps({k: v for k, v in call.items() if k != "context"}))
        pipe.hset(job.key, mapping=job.to_dict())
        pipe.expire(job.key, job.ttl)
        pipe.rpush(queue.key, call_id)
        pipe.sadd(queue.redis_queues_keys, queue.key)
        pipe.execute()
    except RedisError as exc:
        raise QueueUnavailable(f"the call could not be queued: Redis is unavailable ({type(exc).__name__})") from exc
    return call


# -- a worker takes it, runs it (worker/jobs.py) and answers ------------------------------


class WorkerSide:
    """A worker's side of the protocol. RQ's dequeue takes several round trips and its job
    bookkeeping dozens of commands, which would double a call's cost: here a call is taken in
    one round trip and answered in one pipeline (no started/finished registries, status writes
    or result stream)."""

    def __init__(self, app: Flask, redis: Redis):
        self.redis = redis
        self.records = RecordWriter(app, redis)
        self._take = redis.register_script(_TAKE_CALL)

    def take_next(self, queue_key: str, job_prefix: str) -> tuple[str, dict[bytes, bytes]] | None:
        """The next call's job id and hash; None when none waits, its job expired unrun (RQ
        skips those too), or Redis is unavailable (RQ's dequeue then waits for it)."""
        try:
            taken = self._take(keys=[queue_key], args=[job_prefix])
        except RedisError:
            return None
        if not taken or not taken[1]:
            return None
        job_id, fields = taken
        return job_id.decode(), dict(zip(fields[::2], fields[1::2], strict=True))

    def hand_back(
        self,
        call: dict[str, Any],
        answer: dict[str, Any],
        row: dict[str, Any] | None,
        counts: RunCounts,
        intermediate_key: str | None = None,
    ) -> None:
        """The answer goes onto the caller's reply list (unless the caller gave up waiting),
        with the tenant's slot given back and the call's id off RQ's `intermediate_key` list,
        in one round trip. The row is recorded after, in a batch; a failed call's before, so
        that the execution id in its error answer can be looked up at once. An answer that did
        not reach its caller is recorded as the 503 the caller got instead. `row` None: its
        script is gone, nothing to record it against."""
        call_id = call["id"]
        pipe = self.redis.pipeline(transaction=False)
        release_slot(self.redis, call, pipe)
        if row is None:
            pipe.hdel(INFLIGHT, call_id)
        elif answer["status"] != "succeeded":
            self.records.write_now(row)
        handed = len(pipe)
        # Whole (EVAL): a pipeline would otherwise ask Redis whether it knows the script every time.
        pipe.eval(_HAND_BACK, 2, REPLY + call_id, GAVE_UP + call_id, json.dumps(answer), REPLY_TTL_SECONDS)
        if intermediate_key is not None:
            pipe.lrem(intermediate_key, 1, call_id)
        try:
            missed = None if pipe.execute()[handed] else LATE
        except RedisError:
            log.warning("endpoint call %s: the answer could not be handed back (Redis is unavailable)", call_id)
            missed = NOT_HANDED_BACK
        replaces = row is not None and missed is not None
        if replaces:
            row = unanswered_row(call, row, *missed)
        elif answer["status"] != "succeeded":
            row = None  # written already
        self.records.add(row, counts, Job.key_for(call_id), replaces)  # recorded, counted, its job removed, just after

    def close(self) -> None:
        self.records.close()


def release_slot(redis: Redis, call: dict[str, Any], pipe: Any = None) -> None:
    """The call's slot of its tenant goes back (webapp/fairness.py)."""
    tenant_slots(redis).release(call["tenant_id"], call["id"], pipe)


def execution_row(
    call: dict[str, Any], http_status: int, response: dict[str, Any] | None = None, **fields: Any
) -> dict:
    """The execution row of a call: every column, so rows can be inserted in one batch.
    `response` is http.response_summary's, for a run that made one."""
    summary = {**call["summary"], "status": http_status, **(response or {})}
    return {
        "id": uuid.UUID(call["id"]),
        "tenant_id": call["tenant_id"],
        "script_id": uuid.UUID(call["script_id"]),
        "script_version": call["script_version"],
        "trigger": "endpoint",
        "scheduled_at": None,
        "status": fields["status"],
        "error_kind": fields.get("error_kind"),
        "error_message": fields.get("error_message"),
        "params": None,  # the request is not stored, only its summary
        "result": None,  # nor the response
        "logs": fields.get("logs"),
        "http_summary": summary,
        "queued_at": datetime.fromisoformat(call["queued_at"]),
        "started_at": fields.get("started_at"),
        "finished_at": fields["finished_at"],
        "duration_ms": fields.get("duration_ms"),
        "worker": fields.get("worker"),
        "runtime_info": fields.get("runtime_info"),
        "secrets_read": fields.get("secrets_read"),
        "http_calls": fields.get("http_calls"),
        "user_id": call["user_id"],
    }


def unanswered_row(call: dict[str, Any], row: dict[str, Any], kind: str, why: str) -> dict[str, Any]:
    """The row of a call whose answer did not reach its caller, who got 503 instead: the run's
    logs and timings as they were, its outcome told in the message."""
    ran = "succeeded" if row["status"] == "succeeded" else f"failed ({row['error_kind']}: {row['error_message']})"
    message = f"{why}: the caller was answered 503; the run itself {ran}"
    summary = {**call["summary"], "status": 503}  # the script's response was never sent
    return {**row, "status": "failed", "error_kind": kind, "error_message": message[:2000], "http_summary": summary}


# -- the web process waits for the answer, or gives up -----------------------------------


def wait_for_answer(call: dict[str, Any], script: ServedScript) -> dict[str, Any]:
    """The worker's answer to the call, or an answer saying why there is none (`lost`).

    A call no worker took within QUEUE_WAIT_SECONDS is taken back from the queue (so it never
    runs) and answered 503; a call taken by a worker gets its wall-time limit plus a margin.
    """
    defaults = current_app.config["SETTINGS"].limits
    wall_seconds = math.ceil(effective_limits(defaults, {"wall_seconds": script.wall_seconds}).wall_seconds)
    if db.session().in_transaction():
        db.session.commit()  # no database connection is held while we block
    blocking, reply = get_blocking_redis(), REPLY + call["id"]
    try:
        answer = blocking.blpop([reply], timeout=QUEUE_WAIT_SECONDS)
        if answer is None:
            redis = get_redis()
            if redis.lrem(Queue(ENDPOINT_QUEUE, connection=redis).key, 1, call["id"]):
                redis.delete(Job.key_for(call["id"]))
                return _give_up(call, 503, f"no worker took the call within {QUEUE_WAIT_SECONDS} s")
            answer = blocking.blpop([reply], timeout=wall_seconds + ANSWER_MARGIN_SECONDS)
        if answer is None:
            # The answer may be landing now: whichever of this and the worker's hand-back is
            # first wins, and the worker records a call that lost it as answered 503.
            late = get_redis().eval(_GIVE_UP, 2, reply, GAVE_UP + call["id"], defaults.overdue_after)
            if late is not None:
                return json.loads(late)
            # No worker answered in time (docs/endpoints.md): it may have run the script in part.
            message = f"the worker stopped without answering (none within {wall_seconds:g} s of taking the call)"
            return _give_up(call, 503, message + "; the script may have run in part")
        return json.loads(answer[1])
    except RedisError as exc:
        return _give_up(call, 503, f"Redis became unavailable during the call ({type(exc).__name__})")


def _give_up(call: dict[str, Any], status: int, message: str) -> dict[str, Any]:
    """Record the call as lost (unless recorded already) and say so. A worker that answers
    after all records the call in its place, with the run's logs."""
    row = execution_row(
        call,
        status="failed",
        error_kind="lost",
        error_message=message,
        finished_at=utcnow(),
        http_status=status,
    )
    with contextlib.suppress(RedisError):
        release_slot(get_redis(), call)
    with contextlib.suppress(Exception):  # the caller gets its answer even with the database down
        record_lost(row)
        with contextlib.suppress(RedisError):
            redis = get_redis()
            redis.pipeline().hdel(INFLIGHT, call["id"]).delete(Job.key_for(call["id"])).execute()
    db.session.rollback()
    return {"id": call["id"], "status": "failed", "error_kind": "lost", "error_message": message, "http": status}


def record_lost(row: dict[str, Any]) -> bool:
    """Insert a lost call's row unless it exists; True if inserted. A call whose user is gone
    keeps its row without the link; one whose script is gone has nothing to belong to."""
    for attempt in (row, {**row, "user_id": None}):
        try:
            inserted = insert_ignoring_duplicates(Execution, ["id"]).values(attempt).returning(Execution.id)
            found = db.session.execute(inserted).all()
            db.session.commit()
            return bool(found)
        except IntegrityError:
            db.session.rollback()
    return False


# -- the worker records the calls it answered --------------------------------------------


class RecordWriter:
    """What a worker does for endpoint calls after answering them, in batches off the callers'
    path. Every GATHER_SECONDS: the calls' metrics (summed per field) and the removal of their
    RQ jobs go to Redis in one round trip, then their execution rows go to the database in one
    INSERT. A row that cannot be written stays queued and is retried; the call stays in
    INFLIGHT until its row is in, so even a worker that dies with rows in hand leaves them for
    the reaper to record as lost. Such a worker loses the last GATHER_SECONDS of counts.

    A row meets one written already when the caller gave up first: the row of a call whose
    answer missed its caller takes the place of the one there (its caller's, or this worker's
    own written before the hand-back); any other yields to it, the record of what the caller got."""

    def __init__(self, app: Flask, redis: Redis):
        self.app, self.redis = app, redis
        self._rows: list[dict[str, Any]] = []
        self._replacing: dict[uuid.UUID, dict[str, Any]] = {}  # execution id -> the row to put in place
        self._counts = RunCounts()
        self._done_jobs: list[str] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._write_batches, name="records", daemon=True)
        self._thread.start()

    def add(
        self,
        row: dict[str, Any] | None,
        counts: RunCounts | None = None,
        job_key: str | None = None,
        replaces: bool = False,
    ) -> None:
        """An answered call: its row to record (None if recorded already or not to be), its
        metrics, and its RQ job's key to delete. `replaces`: the row takes the place of one
        written already."""
        with self._lock:
            if row is not None:
                self._rows.append(row)
                if replaces:
                    self._replacing[row["id"]] = row
            if counts:
                self._counts.ints.update(counts.ints)
                self._counts.sums.update(counts.sums)
            if job_key is not None:
                self._done_jobs.append(job_key)
        self._wake.set()

    def write_now(self, row: dict[str, Any]) -> None:
        """Write one row before going on (a failed call: its caller may look the id up at once)."""
        try:
            self._write([row])
        except Exception:
            log.exception("execution %s not recorded yet; retrying in the background", row["id"])
            self.add(row)

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        self._thread.join(timeout=10)
        self._flush_redis()
        while self._rows and self.flush():
            pass

    def flush(self) -> bool:
        """Write what has collected; False if it must be retried."""
        with self._lock:
            rows, self._rows = self._rows[:BATCH_ROWS], self._rows[BATCH_ROWS:]
        if not rows:
            return True
        try:
            self._write(rows)
            return True
        except Exception:
            log.exception("%d execution(s) not recorded yet; retrying", len(rows))
            with self._lock:
                self._rows[:0] = rows
            return False

    def _write_batches(self) -> None:
        while not self._closed.is_set():
            self._wake.wait()
            self._closed.wait(GATHER_SECONDS)
            self._wake.clear()
            self._flush_redis()
            while self._rows and not self._closed.is_set():
                if not self.flush():  # the database is away: try again in a second, calls or not
                    self._closed.wait(RETRY_SECONDS)
                    self._flush_redis()  # metrics and job removals need no database
                elif len(self._rows) < BATCH_ROWS:
                    break  # rows added during the write gather for the next one (tiny batches cost)

    def _flush_redis(self) -> None:
        with self._lock:
            counts, self._counts = self._counts, RunCounts()
            done_jobs, self._done_jobs = self._done_jobs, []
        if not counts and not done_jobs:
            return
        pipe = self.redis.pipeline(transaction=False)
        counts.write(pipe)
        if done_jobs:
            pipe.unlink(*done_jobs)
        try:
            pipe.execute()
        except RedisError:  # written again, some counts could count twice: they are dropped
            log.warning("metrics of %d call(s) not recorded: Redis is unavailable", len(done_jobs))

    def _write(self, rows: list[dict[str, Any]]) -> None:
        with self.app.app_context():
            try:
                # A plain INSERT of the table: SQLAlchemy caches its compiled form (not so with
                # ON CONFLICT), and skips the ORM's bulk machinery.
                # Counted first: what each row keeps is charged to its tenant's storage quota.
                db.session.execute(insert(Execution.__table__), quotas.count_outcomes(rows))
                db.session.commit()
            except IntegrityError:  # rare: a caller gave up and recorded one, or a script went
                db.session.rollback()
                self._write_one_by_one(rows)
            finally:
                db.session.remove()
        with self._lock:
            for row in rows:
                if self._replacing.get(row["id"]) is row:
                    del self._replacing[row["id"]]
        with contextlib.suppress(RedisError):
            self.redis.hdel(INFLIGHT, *[str(row["id"]) for row in rows])

    def _write_one_by_one(self, rows: list[dict[str, Any]]) -> None:
        """A batch failed on a constraint. A row recorded already is replaced or kept (see the
        class); a call of a script deleted meanwhile has nothing left to belong to; the others
        are written."""
        for row in rows:
            replaces = self._replacing.get(row["id"]) is row
            for attempt in (row, {**row, "user_id": None}):  # a deleted user only loses the link
                try:
                    if replaces:
                        _delete_recorded(row)
                    stmt = insert_ignoring_duplicates(Execution, ["id"]).values(quotas.count_outcomes([attempt])[0])
                    if db.session.execute(stmt.returning(Execution.id)).first() is None:
                        db.session.rollback()  # recorded already: its counting is undone
                    else:
                        db.session.commit()
                    break
                except IntegrityError:
                    db.session.rollback()
            else:
                log.warning("execution %s not recorded: its script was deleted", row["id"])


def _delete_recorded(row: dict[str, Any]) -> None:
    """The execution written with the row's id, if any, deleted and its size uncounted (in the
    caller's transaction)."""
    size = db.session.scalar(delete(Execution).where(Execution.id == row["id"]).returning(Execution.stored_bytes))
    if size:
        quotas.add(row["tenant_id"], executions=-size, written=True)


# -- the reaper: calls whose worker and caller both died ----------------------------------


def reap_unrecorded_calls(redis: Redis, older_than_seconds: float) -> int:
    """Record calls left in INFLIGHT by a worker and a web process that both died."""
    reaped = 0
    now = utcnow()
    for call_id, raw in redis.hgetall(INFLIGHT).items():
        call = json.loads(raw)
        if (now - datetime.fromisoformat(call["queued_at"])).total_seconds() < older_than_seconds:
            continue
        row = execution_row(
            call,
            status="failed",
            error_kind="lost",
            error_message="the call was not recorded by its worker (it stopped) and its caller had gone",
            finished_at=now,
            http_status=503,
        )
        reaped += record_lost(row)
        redis.hdel(INFLIGHT, call_id)  # recorded, or its script is gone: either way, done
    return reaped
