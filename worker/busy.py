"""How many runs this worker has in flight, published for `active_vms_gauge`.

Runs count themselves in memory; a thread publishes the count to Redis at most every
PUBLISH_SECONDS. A 1 ms endpoint run so costs no Redis round trip, while any run long enough
for a scrape to see is published within a tenth of a second.
"""

import logging
import threading

from redis import Redis
from redis.exceptions import RedisError

from webapp import metrics

log = logging.getLogger(__name__)
PUBLISH_SECONDS = 0.1


class BusyCount:
    def __init__(self, redis: Redis, worker_name: str):
        self.redis, self.worker_name = redis, worker_name
        self._busy = self._published = 0
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._publish_changes, name="busy-flag", daemon=True)
        self._thread.start()

    def add(self, runs: int) -> None:
        """+1 as a run starts, -1 as it ends."""
        with self._lock:
            self._busy += runs
        self._changed.set()

    def close(self) -> None:
        self._closed = True
        with self._lock:
            self._busy = 0
        self._changed.set()
        self._thread.join(timeout=2)

    def _publish_changes(self) -> None:
        while True:
            self._changed.wait()
            self._changed.clear()
            busy = self._busy
            if busy != self._published:
                try:
                    metrics.mark_busy(self.redis, self.worker_name, busy)
                    self._published = busy
                except RedisError:
                    log.warning("busy flag not published: Redis is unavailable")
                    self._changed.set()  # try again after the pause
            if self._closed and not self._busy and not self._published:
                return
            threading.Event().wait(PUBLISH_SECONDS)
