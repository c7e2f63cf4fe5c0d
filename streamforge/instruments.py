"""The Prometheus instruments counted where things happen (the web app's webhook, the store client, the
sweeper); `GET /metrics` adds what it reads from the database at scrape time (web/metrics.py).

With PROMETHEUS_MULTIPROC_DIR set (`streamforge web` sets it for its gunicorn processes, `serve` for
its web and worker), each process writes its values there and a scrape adds them all up; it must be
set before prometheus_client is first imported, which is why this module is imported lazily.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from prometheus_client import Counter, Histogram

ENV = "PROMETHEUS_MULTIPROC_DIR"

WEBHOOK_SECONDS = Histogram("streamforge_webhook_seconds", "Time to answer one store notification (POST /hooks/storage)",
                            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
STORE_ERRORS = Counter("streamforge_store_errors", "Object store operations that failed, by operation", ["op"])
SWEEPER_TAKEOVERS = Counter("streamforge_sweeper_takeovers",
                            "What the sweeper finished for lost notifications and dead workers, by kind", ["kind"])


def prepare_multiprocess_dir(path: Path) -> Path:
    """Point PROMETHEUS_MULTIPROC_DIR at an emptied `path` (a stale dir would add dead processes' counts),
    unless the operator set it already; returns the directory used. Call before importing prometheus_client."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    os.environ[ENV] = str(path)
    return path
