"""GET /metrics: who may read it, the contract's metric names, values read from the database, and the
counts of several gunicorn processes added up (prometheus_client's multiprocess mode)."""
from __future__ import annotations

import os
import subprocess
import sys

import requests
from conftest import free_port
from prometheus_client.parser import text_string_to_metric_families

from streamforge.commands.local_serve import wait_healthy
from streamforge.store import db as dbmod
from streamforge.store import videos, workers
from streamforge.store.db import ProcessingStatus, Rendition, Video

NAMES = ("streamforge_queue_depth", "streamforge_runs", "streamforge_run_seconds", "streamforge_encode_speed",
         "streamforge_webhook_seconds", "streamforge_workers_alive", "streamforge_runners_alive",
         "streamforge_videos", "streamforge_store_errors", "streamforge_sweeper_takeovers",
         "streamforge_upload_bytes")


def samples(text: str) -> dict:
    """{(name, labels as sorted tuple): value} of a Prometheus text answer."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_loopback_or_the_token_may_read_it(seaweed, make_app, tmp_path):
    app = make_app(seaweed.make_config(tmp_path, env={"STREAMFORGE_METRICS_TOKEN": "scrape-me"}))
    client = app.test_client()
    away = {"REMOTE_ADDR": "203.0.113.9"}
    assert client.get("/metrics", environ_base=away).status_code == 401
    assert client.get("/metrics", environ_base=away, headers={"Authorization": "Bearer nope"}).status_code == 403
    r = client.get("/metrics", environ_base=away, headers={"Authorization": "Bearer scrape-me"})
    assert r.status_code == 200 and r.mimetype == "text/plain"
    assert client.get("/metrics").status_code == 200  # the test client asks from 127.0.0.1
    assert client.get("/metrics", headers={"Authorization": "Bearer some-api-token"}).status_code == 200
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200
    # forwarded by a proxy on this machine: not local
    assert client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 401
    names = {f.name for f in text_string_to_metric_families(r.get_data(as_text=True))}
    assert set(NAMES) <= names, set(NAMES) - names
    text = r.get_data(as_text=True)
    for line in ("# TYPE streamforge_runs_total counter", "# TYPE streamforge_run_seconds histogram",
                 "# TYPE streamforge_webhook_seconds histogram", "streamforge_runners_alive 0.0"):
        assert line in text, line


def test_values_come_from_the_database(app, client, auth):
    h = auth("metrics@example.com")
    made = [client.post("/api/videos", headers=h, json={"title": f"m{i}", "filename": "a.mp4", "size": 1000 + i,
                                                         "content_type": "video/mp4"}).get_json()["video"]["id"]
            for i in range(3)]
    with dbmod.db.connection_context():
        done = Video.get_by_id(made[0])
        Video.update(status=ProcessingStatus.COMPLETED, upload_status="UPLOADED", original_duration=30.0,
                     original_file_size=1000).where(Video.id == done.id).execute()
        Rendition.create(video=done, name="360p", width=640, height=360, bitrate="800k", bandwidth=900000,
                         playlist_url="", playlist_name="index.m3u8", codec="h264", s3_key="processed/x/360p/index.m3u8")
        for stage, took in (("download", 1.0), ("probe", 0.5), ("transcode", 10.0), ("database", 0.5)):
            videos.log_stage(done.id, 1, stage, "started")
            videos.log_stage(done.id, 1, stage, "completed", duration=took)
        videos.log_stage(made[1], 1, "download", "started")
        videos.log_stage(made[1], 1, "download", "failed", "no such object", 0.2)
        workers.beat("worker-a", 1)
    s = samples(client.get("/metrics").get_data(as_text=True))
    assert s[("streamforge_videos", (("status", "COMPLETED"),))] == 1
    assert s[("streamforge_videos", (("status", "PENDING"),))] == 2
    assert s[("streamforge_runs_total", (("outcome", "completed"),))] == 1
    assert s[("streamforge_runs_total", (("outcome", "failed"),))] == 1
    assert s[("streamforge_run_seconds_count", ())] == 1 and s[("streamforge_run_seconds_sum", ())] == 12.0
    assert s[("streamforge_run_seconds_bucket", (("le", "10.0"),))] == 0
    assert s[("streamforge_run_seconds_bucket", (("le", "30.0"),))] == 1
    assert s[("streamforge_encode_speed", (("codec", "h264"),))] == 3.0  # 30 s of video in 10 s
    assert s[("streamforge_workers_alive", ())] == 1
    assert s[("streamforge_upload_bytes_total", ())] == 1000


def webhook_pids(folder) -> set[str]:
    """The processes that timed at least one notification (their histogram_<pid>.db holds a sum above 0)."""
    import json

    from prometheus_client.mmap_dict import MmapedDict
    out = set()
    for path in folder.rglob("histogram_*.db"):
        for key, value, *_ in MmapedDict.read_all_values_from_file(str(path)):
            if json.loads(key)[1] == "streamforge_webhook_seconds_sum" and value > 0:
                out.add(path.stem.split("_")[-1])
    return out


def test_gunicorn_processes_add_up(seaweed, tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMFORGE_", "PROMETHEUS_"))}
    env.update({"STREAMFORGE_STORAGE_ENDPOINT": seaweed.endpoint, "STREAMFORGE_STORAGE_ACCESS_KEY": seaweed.access_key,
                "STREAMFORGE_STORAGE_SECRET_KEY": seaweed.secret_key, "STREAMFORGE_STORAGE_BUCKET": seaweed.bucket,
                "STREAMFORGE_WEBHOOK_TOKEN": "hook", "STREAMFORGE_SERVER_SECRET_KEY": "s" * 32,
                "STREAMFORGE_SERVER_WORKERS": "2", "STREAMFORGE_SERVER_THREADS": "2"})
    log = open(tmp_path / "web.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "streamforge.commands.main", "web", "--data-dir", str(tmp_path / "d"),
                             "--host", "127.0.0.1", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_healthy(url, 60) and proc.poll() is None, (tmp_path / "web.log").read_text()[-2000:]
        sent = 0
        while len(webhook_pids(tmp_path / "d" / "metrics")) < 2:  # fresh connections, until both processes took some
            assert sent < 400, "one gunicorn process took every request"
            assert requests.post(url + "/hooks/storage", data=b"{}", headers={"Connection": "close"},
                                 timeout=10).status_code == 401
            sent += 1
        for _ in range(10):  # whichever process answers adds up both
            r = requests.get(url + "/metrics", headers={"Connection": "close"}, timeout=10)
            assert samples(r.text)[("streamforge_webhook_seconds_count", ())] == sent, r.text[:3000]
    finally:
        proc.terminate()
        proc.wait(20)


def test_compose_prometheus_scrapes_it_and_the_dashboard_reads_only_served_metrics():
    import json
    import re
    from pathlib import Path

    import yaml
    docker = Path(__file__).resolve().parents[1] / "docker"
    compose = yaml.safe_load((docker / "compose.yml").read_text())
    services = compose["services"]
    scrape = yaml.safe_load((docker / "prometheus.yml").read_text())["scrape_configs"][0]
    assert scrape["metrics_path"] == "/metrics" and scrape["static_configs"][0]["targets"] == ["web:8000"]
    # the same Docker secret: Prometheus sends it, the web app expects it
    assert scrape["authorization"]["credentials_file"] == "/run/secrets/metrics_token"
    assert "metrics_token" in services["prometheus"]["secrets"] and "metrics_token" in services["web"]["secrets"]
    assert services["web"]["environment"]["STREAMFORGE_METRICS_TOKEN_FILE"] == "/run/secrets/metrics_token"
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in services["prometheus"]["volumes"]
    dashboard = json.loads((docker / "grafana" / "streamforge.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    named = {re.sub(r"_(total|bucket|count|sum)$", "", n) for e in exprs for n in re.findall(r"streamforge_\w+", e)}
    assert named == set(NAMES), named ^ set(NAMES)  # a panel for every metric, none for a metric not served
