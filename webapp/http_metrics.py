"""HTTP metrics of the web app (prometheus-flask-exporter), served with the script metrics.

Under gunicorn (the Procfile's `web`) every worker process writes its counts to files in
PROMETHEUS_MULTIPROC_DIR, which gunicorn.conf.py sets up before the workers fork; a scrape sums
the files of every worker, live or gone, whichever worker answers it. Without that variable
(tests, `flask run`) the one process counts in memory.
"""

import os

from flask import Flask
from prometheus_client import CollectorRegistry, disable_created_metrics
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from prometheus_flask_exporter import PrometheusMetrics
from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

_EXTENSION = "http_metrics"
_OPTIONS = {
    "path": None,  # GET /metrics is ours (webapp/metrics.py): one route, one token check
    "group_by": "url_rule",  # "/scripts/<script_id>", not one series per script id
    "excluded_paths": ["^/metrics$"],  # scrapes are Prometheus's business, not app traffic
}


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def init_app(app: Flask) -> None:
    # `*_created` series exist only in single-process mode; without them a test scrape and a
    # gunicorn scrape expose the same names.
    disable_created_metrics()
    directory = multiprocess_dir()
    if directory:
        # A worker or scheduler started with the variable exported too must not fail on it.
        os.makedirs(directory, exist_ok=True)
        metrics = GunicornInternalPrometheusMetrics.for_app_factory(**_OPTIONS)
        metrics.init_app(app)
    else:
        # A registry per app: tests build many apps in one process.
        metrics = PrometheusMetrics(app, registry=CollectorRegistry(), **_OPTIONS)
    app.extensions[_EXTENSION] = metrics


def collector(app: Flask) -> Collector:
    """The HTTP metrics to scrape now: every gunicorn worker's files, or this process's counts."""
    if multiprocess_dir():
        return MultiProcessCollector(None)
    return app.extensions[_EXTENSION].registry
