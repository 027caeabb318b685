"""The peers a benchmark measures beside our processes in the same run (FIELD-NOTES.md): a bare
Flask route on gunicorn sync workers, and Node-RED 4 with an `http in → http request → http
response` flow. Both are started on a free loopback port and stopped at the end.

Node-RED is installed with npm into a cache outside the checkout (NODE_RED_CACHE), once, and
reused by later runs. Not a benchmark itself: `make bench` runs bench/*.py but bench/_*.py.
"""

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from bench._stack import with_children
from tests.services import eventually, free_port, wait_for_port

NODE_RED_CACHE = Path.home() / ".cache" / "script-runner-bench" / "node-red"
_RED_JS = NODE_RED_CACHE / "node_modules" / "node-red" / "red.js"
_BARE_FLASK = """from flask import Flask

app = Flask(__name__)


@app.get("/")
def ping():
    return {"ok": True}
"""


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def bare_flask(workers: int) -> Iterator[tuple[str, list[int]]]:
    """A one-route Flask app on gunicorn with `workers` sync workers: (its URL, its pids)."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "bare.py").write_text(_BARE_FLASK)
        port = free_port()
        command = [sys.executable, "-m", "gunicorn", "--chdir", tmp, "bare:app", "--bind", f"127.0.0.1:{port}"]
        command += ["--worker-class", "sync", "--workers", str(workers), "--log-level", "warning"]
        process = subprocess.Popen(command, cwd=tmp)
        try:
            wait_for_port(port)
            url = f"http://127.0.0.1:{port}/"
            requests.get(url, timeout=10).raise_for_status()
            yield url, with_children(process.pid)
        finally:
            _stop(process)


def install_node_red() -> str | None:
    """Node-RED 4 in the cache (npm, once): None when it is there, else why it is not."""
    if _RED_JS.exists():
        return None
    if not shutil.which("npm") or not shutil.which("node"):
        return "node or npm is not installed"
    NODE_RED_CACHE.mkdir(parents=True, exist_ok=True)
    command = ["npm", "install", "--prefix", str(NODE_RED_CACHE), "--no-audit", "--no-fund", "node-red@4"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return "npm install node-red@4 took over 10 minutes"
    if done.returncode or not _RED_JS.exists():
        return f"npm install node-red@4 failed: {(done.stderr or done.stdout).strip()[-300:]}"
    return None


def _flow(upstream_url: str) -> list[dict]:
    return [
        {"id": "bench", "type": "tab", "label": "bench"},
        {"id": "in", "type": "http in", "z": "bench", "url": "/slow", "method": "get", "wires": [["call"]]},
        {
            "id": "call",
            "type": "http request",
            "z": "bench",
            "method": "GET",
            "ret": "obj",
            "url": upstream_url,
            "wires": [["out"]],
        },
        {"id": "out", "type": "http response", "z": "bench", "statusCode": "", "headers": {}, "wires": []},
    ]


@contextmanager
def node_red(upstream_url: str) -> Iterator[tuple[str, int]]:
    """Node-RED with its own user dir, serving GET /slow by fetching `upstream_url`: (its URL,
    its pid). Call install_node_red() first."""
    with tempfile.TemporaryDirectory() as user_dir:
        port = free_port()
        settings = {
            "uiHost": "127.0.0.1",
            "uiPort": port,
            "flowFile": "flows.json",
            "httpAdminRoot": False,  # no editor: only the flow's route
            "credentialSecret": False,
            "diagnostics": {"enabled": False},
            "telemetry": {"enabled": False, "updateNotification": False},
            "logging": {"console": {"level": "warn"}},
        }
        (Path(user_dir) / "settings.js").write_text(f"module.exports = {json.dumps(settings)};\n")
        (Path(user_dir) / "flows.json").write_text(json.dumps(_flow(upstream_url)))
        command = ["node", str(_RED_JS), "--userDir", user_dir, "--settings", f"{user_dir}/settings.js"]
        process = subprocess.Popen(command, cwd=user_dir, stdout=subprocess.DEVNULL)
        try:
            wait_for_port(port, timeout=60)
            url = f"http://127.0.0.1:{port}/slow"
            # The port opens a moment before the flow's route is there.
            eventually(lambda: requests.get(url, timeout=10).status_code == 200, 30, "Node-RED's flow answering")
            yield url, process.pid
        finally:
            _stop(process)
