"""gunicorn settings for the Procfile's `web` process: HTTP metrics across its worker processes.

Every gunicorn worker writes its HTTP metrics to files in PROMETHEUS_MULTIPROC_DIR, and GET
/metrics sums them whichever worker answers (webapp/http_metrics.py). prometheus_client picks
its multi-process mode when it is first imported, so the variable is set here, in the master,
before any worker forks, and prometheus_client is imported only inside the hooks. Without
PROMETHEUS_MULTIPROC_DIR in the environment a private directory is made and removed at exit.
Several web processes on one host need one directory each.

Without METRICS_TOKEN the master logs a warning at start: /metrics is then open to anyone.
`make run` always sets one; `flask run`, the CLI and in-process tests never come here.

gunicorn takes every global named like one of its settings as that setting; ours start with "_".
"""

from __future__ import annotations

import os as _os
import shutil as _shutil
import tempfile as _tempfile
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gunicorn.arbiter import Arbiter as _Arbiter
    from gunicorn.workers.base import Worker as _Worker

# The control socket has one path per user: several web processes on one host (and test runs
# next to them) would take it from each other. Nothing here uses gunicornc.
control_socket_disable = True

_OPEN_METRICS_WARNING = (
    "METRICS_TOKEN is not set: GET /metrics answers anyone, and its series name every tenant's "
    "script ids. Set METRICS_TOKEN and give Prometheus the same token (docs/monitoring.md)."
)

_made_dir: str | None = None
if not _os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _made_dir = _tempfile.mkdtemp(prefix="script-runner-web-metrics-")
    _os.environ["PROMETHEUS_MULTIPROC_DIR"] = _made_dir


def on_starting(server: _Arbiter) -> None:
    """Refuse to start when SECRETS_KEY lacks a key the stored secrets need (before listening;
    the error is gunicorn's "Error: …" and exit 1). Warn when /metrics is open
    (docs/monitoring.md, "The endpoint"). Start the HTTP metrics from zero: files of an earlier
    run would be summed into this one's counts."""
    from webapp.config import Settings
    from webapp.secret_store.key_check import check_settings_keys

    check_settings_keys(Settings.from_env())
    if not _os.environ.get("METRICS_TOKEN"):
        server.log.warning(_OPEN_METRICS_WARNING)
    directory = _os.environ["PROMETHEUS_MULTIPROC_DIR"]
    _os.makedirs(directory, exist_ok=True)
    for name in _os.listdir(directory):
        if name.endswith(".db"):
            _os.remove(_os.path.join(directory, name))


def child_exit(server: _Arbiter, worker: _Worker) -> None:
    """A worker that exits keeps its counts (its files stay); its live gauges go."""
    from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

    GunicornInternalPrometheusMetrics.mark_process_dead_on_child_exit(worker.pid)


def on_exit(server: _Arbiter) -> None:
    if _made_dir:
        _shutil.rmtree(_made_dir, ignore_errors=True)
