"""`GET /metrics`: Prometheus text format, for `Authorization: Bearer <[metrics] token>` or loopback.

Most values are read from the database at scrape time (queue depth from the queue), so every web
process answers alike, whichever process or machine did the work; the instruments counted in a
process (webhook latency, store errors, sweeper takeovers) are summed across processes through
PROMETHEUS_MULTIPROC_DIR (streamforge/instruments.py)."""
from __future__ import annotations

import hmac
import ipaddress
import logging
import os

from flask import Blueprint, Response, current_app, request

from streamforge.web.common import error

log = logging.getLogger(__name__)
bp = Blueprint("metrics", __name__)
RUN_BUCKETS = (5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)


def _loopback(addr: str | None) -> bool:
    try:
        return ipaddress.ip_address((addr or "").split("%")[0]).is_loopback
    except ValueError:
        return False


def _refusal():
    """None when the request may read the metrics (from this machine, or with the token), else 401/403."""
    # a request a reverse proxy on this machine forwarded comes from loopback too: not local
    forwarded = any(h in request.headers for h in ("X-Forwarded-For", "Forwarded", "X-Real-IP"))
    if _loopback(request.remote_addr) and not forwarded:
        return None
    token = current_app.extensions["streamforge"].metrics.token
    header = request.headers.get("Authorization", "")
    given = header[7:].strip() if header[:7].lower() == "bearer " else ""
    if not given:
        return error(401, "unauthorized", "send Authorization: Bearer <[metrics] token> (or ask from this machine)")
    if token and hmac.compare_digest(given.encode(), token.encode()):
        return None
    return error(403, "forbidden", "wrong metrics token")


class DatabaseCollector:
    """The metrics read from the database and the queue when Prometheus scrapes."""

    def collect(self):
        """Yield the metric families of this scrape."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        from streamforge.jobs.tasks import huey
        from streamforge.store import metrics as m
        try:
            depth = huey.storage.queue_size()
        except Exception as e:  # Redis or SQLite errors vary by backend: the other metrics still answer
            log.warning("metrics: the queue does not answer: %s", e)
        else:
            yield GaugeMetricFamily("streamforge_queue_depth", "Tasks waiting in the queue", value=depth)
        runs = CounterMetricFamily("streamforge_runs", "Processing runs finished, by outcome", labels=["outcome"])
        for outcome, n in m.runs_by_outcome().items():
            runs.add_metric([outcome], n)
        yield runs
        durations = m.run_durations()
        buckets = [(str(float(b)), sum(1 for d in durations if d <= b)) for b in RUN_BUCKETS] + [("+Inf", len(durations))]
        yield HistogramMetricFamily("streamforge_run_seconds", "Seconds a completed processing run took",
                                    buckets=buckets, sum_value=sum(durations))
        speed = GaugeMetricFamily("streamforge_encode_speed", "Seconds of video encoded per second (x realtime) "
                                  "over the latest runs, by codec", labels=["codec"])
        for codec, value in m.encode_speeds().items():
            speed.add_metric([codec], value)
        yield speed
        yield GaugeMetricFamily("streamforge_workers_alive", "Worker processes with a recent heartbeat",
                                value=m.workers_alive())
        yield GaugeMetricFamily("streamforge_runners_alive", "Remote runners seen lately", value=m.runners_alive())
        videos = GaugeMetricFamily("streamforge_videos", "Videos by processing status", labels=["status"])
        for status, n in m.video_counts().items():
            videos.add_metric([status], n)
        yield videos
        yield CounterMetricFamily("streamforge_upload_bytes", "Bytes of uploads received", value=m.upload_bytes())


def registry():
    """The registry a scrape reads: the database's metrics plus this process's (or every process's) instruments."""
    from prometheus_client import REGISTRY, CollectorRegistry, multiprocess

    from streamforge import instruments  # noqa: F401  (registers the instruments before the first scrape)
    reg = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(reg)
    else:
        reg.register(_Default(REGISTRY))
    reg.register(DatabaseCollector())
    return reg


class _Default:
    """The process's default registry (its instruments, process and platform) inside another registry."""

    def __init__(self, inner):
        self.inner = inner

    def collect(self):
        """Yield the inner registry's families."""
        yield from self.inner.collect()


@bp.route("/metrics")
def metrics():
    """Prometheus text format."""
    refused = _refusal()
    if refused is not None:
        return refused
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    return Response(generate_latest(current_app.extensions["streamforge.metrics"]), mimetype=CONTENT_TYPE_LATEST)


def init_app(app) -> None:
    """Register /metrics with its registry."""
    app.extensions["streamforge.metrics"] = registry()
    app.register_blueprint(bp)
