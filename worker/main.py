"""The worker process: an RQ SimpleWorker (no fork per job) that keeps its sandbox warm.

    python -m worker                       # one worker on the endpoints and default queues
    rq worker-pool -n 4 -w worker.main.ScriptWorker -u "$REDIS_URL" endpoints default

Besides jobs, every worker heartbeats (so its runs are known to be alive) and, under a Redis
lock, reaps runs lost with a dead worker and prunes old executions.
"""

import logging
import threading
import time

from redis import Redis
from rq import Queue, SimpleWorker

from webapp.executions.maintenance import mark_alive, prune_executions, reap_lost
from webapp.executions.service import QUEUES
from worker.host_api import prune_expired_storage
from worker.state import get_state

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 5
REAP_EVERY_SECONDS = 10
PRUNE_EVERY_SECONDS = 600


class ScriptWorker(SimpleWorker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sandbox_state = get_state()
        self.sandbox_state.name = self.name
        self._stop = threading.Event()
        self._last_beat = self._beat_covers = 0.0

    def heartbeat(self, timeout: int | None = None, pipeline=None):
        """RQ beats several times per job; one beat a second keeps the worker visibly alive."""
        wanted = time.monotonic() + (timeout or self.worker_ttl + 60)
        last, covers = getattr(self, "_last_beat", 0.0), getattr(self, "_beat_covers", 0.0)
        if pipeline is None and time.monotonic() - last < 1.0 and wanted <= covers + 1.0:
            return
        super().heartbeat(timeout, pipeline)
        self._last_beat, self._beat_covers = time.monotonic(), wanted

    def work(self, *args, **kwargs):
        upkeep = threading.Thread(target=self._upkeep, name="upkeep", daemon=True)
        upkeep.start()
        try:
            return super().work(*args, **kwargs)
        finally:
            self._stop.set()
            self.sandbox_state.sandbox.close()

    def _upkeep(self) -> None:
        redis: Redis = self.connection
        last_reap = last_prune = 0.0
        while not self._stop.is_set():
            try:
                mark_alive(redis, self.name)
                now = time.monotonic()
                if now - last_reap >= REAP_EVERY_SECONDS and redis.set(
                    "sr:lock:reap", self.name, nx=True, ex=REAP_EVERY_SECONDS
                ):
                    last_reap = now
                    with self.sandbox_state.app.app_context():
                        reap_lost(redis)
                if now - last_prune >= PRUNE_EVERY_SECONDS and redis.set(
                    "sr:lock:prune", self.name, nx=True, ex=PRUNE_EVERY_SECONDS
                ):
                    last_prune = now
                    with self.sandbox_state.app.app_context():
                        prune_executions()
                        prune_expired_storage()
            except Exception:
                log.exception("worker upkeep failed; retrying")
            self._stop.wait(HEARTBEAT_SECONDS)

    def _lock(self, redis: Redis, task: str, seconds: int) -> bool:
        """One worker at a time does a periodic task."""
        return bool(redis.set(f"sr:lock:{task}", self.name, nx=True, ex=seconds))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    state = get_state()
    redis = Redis.from_url(state.app.config["SETTINGS"].redis_url)
    queues = [Queue(name, connection=redis) for name in QUEUES]
    ScriptWorker(queues, connection=redis).work(with_scheduler=False)
