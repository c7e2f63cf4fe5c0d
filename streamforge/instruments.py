"""The Prometheus instruments counted where things happen (the web app's webhook, the store client, the
sweeper); `GET /metrics` adds what it reads from the database at scrape time (web/metrics.py).

With PROMETHEUS_MULTIPROC_DIR set (`streamforge web` sets it for its gunicorn processes, `serve` for
its web and worker), each process writes its values there and a scrape adds them all up; it must be
set before prometheus_client is first imported (commands/main.py does it first thing).
"""
from __future__ import annotations

from prometheus_client import Counter, Histogram

WEBHOOK_SECONDS = Histogram("streamforge_webhook_seconds", "Time to answer one store notification (POST /hooks/storage)",
                            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
STORE_ERRORS = Counter("streamforge_store_errors", "Object store operations that failed, by operation", ["op"])
SWEEPER_TAKEOVERS = Counter("streamforge_sweeper_takeovers",
                            "What the sweeper finished for lost notifications and dead workers, by kind", ["kind"])

