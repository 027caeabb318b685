"""Fairness between tenants: a cap on each tenant's runs in flight across all workers, and a
rate limit on each tenant's endpoint calls (docs/architecture.md, "Fairness").

A run holds a slot of its tenant from the moment it is admitted (an endpoint call, by the web
process before it is queued) or taken (a manual or cron run, by the worker that dequeued it)
until it ends. A tenant at its cap gets 429 for endpoint calls; its manual and cron runs are
parked and put back at the head of their queue as soon as one of its slots frees, so they wait
their turn and still run once. Everything lives in Redis, decided by Lua scripts (atomic) on
Redis's own clock, so every web process, worker and host agrees. A slot whose holder died
lapses after the longest time a run can take; a parked run whose wake-up was lost is put back
by the workers' upkeep within seconds.
"""

from dataclasses import dataclass
from functools import cache

from redis import Redis
from redis.client import Pipeline
from rq import Queue

from webapp.executions.service import DEFAULT_QUEUE

RUNS = "sr:tenant:runs:{}"  # sorted set: run id -> the time its slot lapses
PARKED = "sr:tenant:parked:{}"  # list: ids of the tenant's runs waiting for a slot, newest first
PARKED_TENANTS = "sr:tenant:parked"  # set: tenants with parked runs
RATE = "sr:tenant:rate:{}:"  # + minute number: the tenant's endpoint calls in that minute
WORKERS = "sr:workers:alive"  # sorted set: worker name -> the time of its last beat
WORKER_SLOTS = "sr:workers:slots"  # hash: worker name -> the runs it may have in flight
WORKER_ALIVE_SECONDS = 20  # a worker that has not beaten for this long is not counted
QUEUE_KEY = Queue.redis_queue_namespace_prefix + DEFAULT_QUEUE  # where parked runs come from and go back to

# The cap, from the live workers when no fixed one is set: half the platform's run slots, a
# worker's being the runs of any kind it keeps in flight (WORKER_CONCURRENCY).
_CAP = f"""
local function cap(fixed, now)
  if fixed > 0 then return fixed end
  local slots = 0
  for _, name in ipairs(redis.call('ZRANGEBYSCORE', '{WORKERS}', now - {WORKER_ALIVE_SECONDS}, '+inf')) do
    slots = slots + (tonumber(redis.call('HGET', '{WORKER_SLOTS}', name)) or 1)
  end
  return math.max(1, math.floor(slots / 2))
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

# KEYS: runs, rate key prefix. ARGV: run id, hold seconds, fixed cap, calls per minute.
# Returns {'ok', 0, 0}, {'rate', seconds to wait, 0} or {'runs', seconds to wait, cap}.
_ADMIT_CALL = (
    _CAP
    + """
local rate = tonumber(ARGV[4])
local minute = math.floor(now / 60)
local current = KEYS[2] .. minute
if rate > 0 then
  -- a sliding minute: this minute's calls plus the share of the last minute's still in it
  local this = tonumber(redis.call('GET', current) or '0')
  local last = tonumber(redis.call('GET', KEYS[2] .. (minute - 1)) or '0')
  if this + last * (1 - (now % 60) / 60) >= rate then
    return {'rate', math.max(1, math.ceil(60 - now % 60)), 0}
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local most = cap(tonumber(ARGV[3]), now)
if redis.call('ZCARD', KEYS[1]) >= most then return {'runs', 1, most} end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])) + 60)
if rate > 0 then
  redis.call('INCR', current)
  redis.call('EXPIRE', current, 120)
end
return {'ok', 0, 0}
"""
)

# KEYS: runs, parked, parked tenants, the queue's intermediate list, the run's job. ARGV: run
# id, hold seconds, fixed cap, tenant, worker. Returns 1 with the slot taken (the job then says
# `started` by that worker: the reaper fails the run if the worker dies before recording it
# running), 0 with the run parked.
_TAKE_OR_PARK = (
    _CAP
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZCARD', KEYS[1]) < cap(tonumber(ARGV[3]), now) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])) + 60)
  if redis.call('EXISTS', KEYS[5]) == 1 then
    redis.call('HSET', KEYS[5], 'status', 'started', 'worker_name', ARGV[5])
  end
  return 1
end
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('LREM', KEYS[4], 1, ARGV[1])
return 0
"""
)

# KEYS: runs, parked, queue. ARGV: run id. The slot goes back; the oldest parked run, if any,
# goes to the head of the queue to take it.
_RELEASE = """
redis.call('ZREM', KEYS[1], ARGV[1])
local waiting = redis.call('RPOP', KEYS[2])
if waiting then redis.call('LPUSH', KEYS[3], waiting) end
return waiting and 1 or 0
"""

# KEYS: runs, parked, parked tenants, queue. ARGV: fixed cap, tenant. Puts back as many
# parked runs as the tenant has free slots (a wake-up lost with a worker that died).
_WAKE = (
    _CAP
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local free = cap(tonumber(ARGV[1]), now) - redis.call('ZCARD', KEYS[1])
local moved = 0
while moved < free do
  local waiting = redis.call('RPOP', KEYS[2])
  if not waiting then break end
  redis.call('LPUSH', KEYS[4], waiting)
  moved = moved + 1
end
if redis.call('LLEN', KEYS[2]) == 0 then redis.call('SREM', KEYS[3], ARGV[2]) end
return moved
"""
)

_BEAT = """
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], t[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
for _, name in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', tonumber(t[1]) - 3600)) do
  redis.call('ZREM', KEYS[1], name)
  redis.call('HDEL', KEYS[2], name)
end
"""


@dataclass(frozen=True)
class Refusal:
    reason: str  # rate | runs
    retry_after: int
    cap: int  # the tenant's cap of runs in flight, when that is the reason

    def message(self, rate_per_minute: int) -> str:
        if self.reason == "rate":
            return (
                f"this tenant's endpoint calls are over {rate_per_minute} a minute; try again in {self.retry_after} s"
            )
        runs = "run" if self.cap == 1 else "runs"
        return f"this tenant already has {self.cap} {runs} in flight, as many as it may; try again in a moment"


class TenantSlots:
    """The Lua scripts above, registered on one Redis client."""

    def __init__(self, redis: Redis):
        self.redis = redis
        self._admit = redis.register_script(_ADMIT_CALL)
        self._release = redis.register_script(_RELEASE)
        self._wake = redis.register_script(_WAKE)
        self._beat = redis.register_script(_BEAT)

    def admit_call(self, tenant: int, call_id: str, hold_seconds: float, cap: int, rate: int) -> Refusal | None:
        """Admit an endpoint call (None), or say why not."""
        keys = [RUNS.format(tenant), RATE.format(tenant)]
        verdict, wait, most = self._admit(keys=keys, args=[call_id, hold_seconds, cap, rate])
        return None if verdict == b"ok" else Refusal(verdict.decode(), int(wait), int(most))

    def take_or_park(
        self,
        tenant: int,
        run_id: str,
        hold_seconds: float,
        cap: int,
        intermediate_key: str,
        pipe: Pipeline,
        job_key: str,
        worker: str,
    ) -> None:
        """Take a slot for a dequeued run, or park the run until one frees: the pipeline's
        answer is 1 if taken, 0 if parked. The script goes whole (EVAL), as in `release`."""
        keys = [RUNS.format(tenant), PARKED.format(tenant), PARKED_TENANTS, intermediate_key, job_key]
        pipe.eval(_TAKE_OR_PARK, len(keys), *keys, run_id, hold_seconds, cap, tenant, worker)

    def release(self, tenant: int, run_id: str, pipe: Pipeline | None = None) -> None:
        """Give the slot back (and wake one parked run). In a pipeline, the script goes whole
        (EVAL): a pipeline would otherwise ask Redis whether it knows the script every time."""
        keys = [RUNS.format(tenant), PARKED.format(tenant), QUEUE_KEY]
        if pipe is None:
            self._release(keys=keys, args=[run_id])
        else:
            pipe.eval(_RELEASE, len(keys), *keys, run_id)

    def wake_parked(self, cap: int) -> int:
        """Put back parked runs of tenants with free slots; returns how many."""
        moved = 0
        for raw in self.redis.smembers(PARKED_TENANTS):
            tenant = raw.decode()
            keys = [RUNS.format(tenant), PARKED.format(tenant), PARKED_TENANTS, QUEUE_KEY]
            moved += int(self._wake(keys=keys, args=[cap, tenant]))
        return moved

    def beat(self, worker_name: str, slots: int = 1) -> None:
        """Count this worker, and the runs it may have in flight, among the live ones (their
        slots set the default cap)."""
        self._beat(keys=[WORKERS, WORKER_SLOTS], args=[worker_name, slots])

    def gone(self, worker_name: str) -> None:
        with self.redis.pipeline() as pipe:
            pipe.zrem(WORKERS, worker_name)
            pipe.hdel(WORKER_SLOTS, worker_name)
            pipe.execute()


@cache
def tenant_slots(redis: Redis) -> TenantSlots:
    """The scripts registered once per Redis client."""
    return TenantSlots(redis)
