"""What one run may still fetch: requests per run, and requests in flight together."""

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from worker.fetch.errors import FetchError


class RunBudget:
    """Counts a run's fetches. Past `max_requests` a fetch is refused; past `max_in_flight` a
    fetch waits for one of the others to end (as a browser queues its connections), at most
    until its deadline."""

    def __init__(self, max_requests: int, max_in_flight: int):
        self.max_requests = max_requests
        self.max_in_flight = max_in_flight
        self.started = 0
        self.in_flight = 0
        self._lock = threading.Lock()
        self._slots = threading.Semaphore(max_in_flight)

    @contextmanager
    def request(self, deadline: float) -> Iterator[None]:
        with self._lock:
            if self.started >= self.max_requests:
                raise FetchError("too_many_requests", f"fetch: too many requests: a run may make {self.max_requests}")
            self.started += 1
        if not self._slots.acquire(timeout=max(deadline - time.monotonic(), 0)):
            raise FetchError(
                "timeout", f"fetch: timed out waiting for one of the run's {self.max_in_flight} requests in flight"
            )
        with self._lock:
            self.in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self.in_flight -= 1
            self._slots.release()
