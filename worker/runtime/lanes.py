"""Several sandbox processes per worker ("lanes"): runs that compute at the same time use the
machine's cores, and a run's long slice of JS holds up only the runs of its own lane.

One sandbox process computes one slice at a time (quickjs-ng cannot pause a slice), so where
a run goes decides whom its computing delays. A tenant's runs go to the lane where it already
has runs in flight, while that lane has room: a tenant whose scripts compute for long slows
its own runs first, not another tenant's, and a lane killed for one of its runs (a backstop,
worker/runtime/sandbox.py) takes the fewest other tenants' runs with it. A tenant with nothing
in flight goes to the lane with the fewest runs in flight; lanes start as they are first
needed, up to `count`.
"""

import math
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from webapp.limits import EffectiveLimits
from worker.runtime.sandbox import HostHandler, Sandbox


class Lanes:
    def __init__(self, count: int, concurrency: int, make: Callable[[], Sandbox]):
        self.count = max(1, count)
        self.per_lane = max(1, math.ceil(concurrency / self.count))  # a tenant's room in its lane
        self._make = make
        self._lanes: list[Sandbox] = []
        self._load: list[int] = []  # runs in flight in each lane
        self._tenants: dict[Any, Counter[int]] = {}  # tenant -> its runs in flight per lane
        self._lock = threading.Lock()

    def run(self, request: dict[str, Any], limits: EffectiveLimits, host: HostHandler) -> dict[str, Any]:
        tenant = request["tenant_id"]
        lane = self._place(tenant)
        try:
            return self._lanes[lane].run(request, limits, host)
        finally:
            self._leave(tenant, lane)

    def _place(self, tenant: Any) -> int:
        with self._lock:
            mine = self._tenants.setdefault(tenant, Counter())
            home = [lane for lane, _ in mine.most_common() if self._load[lane] < self.per_lane]
            if home:
                lane = home[0]
            else:
                lane = min(range(len(self._lanes)), key=self._load.__getitem__, default=None)
                if lane is None or (self._load[lane] > 0 and len(self._lanes) < self.count):
                    self._lanes.append(self._make())
                    self._load.append(0)
                    lane = len(self._lanes) - 1
            self._load[lane] += 1
            mine[lane] += 1
            return lane

    def _leave(self, tenant: Any, lane: int) -> None:
        with self._lock:
            self._load[lane] -= 1
            mine = self._tenants[tenant]
            mine[lane] -= 1
            if mine[lane] <= 0:
                del mine[lane]
            if not mine:
                del self._tenants[tenant]

    @property
    def restarts(self) -> int:
        return sum(lane.restarts for lane in self._lanes)

    @property
    def pids(self) -> list[int]:
        return [lane.pid for lane in self._lanes if lane.pid is not None]

    def close(self) -> None:
        with self._lock:
            lanes = list(self._lanes)
        for lane in lanes:
            lane.close()
