"""Shared fixtures: a fresh app on a temporary SQLite database and queue, against a real SeaweedFS.

Store fixtures (the SeaweedFS process) live in store_fixtures.py.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import uuid
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from streamforge.jobs import tasks
from streamforge.store import db as dbmod
from streamforge.store import videos

pytest_plugins = ["store_fixtures"]

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"
if not MEDIA.exists():
    MEDIA = Path(os.environ.get("STREAMFORGE_TEST_MEDIA", "/work/shared/media"))
IN_CI = os.environ.get("CI", "").lower() == "true"
# auto captions transcribe every video a run completes: the tests about them turn them on (test_speech.py);
# the others keep the queue to the tasks they drain and the cores to what they measure
os.environ.setdefault("STREAMFORGE_CAPTIONS_AUTO", "false")


def require(condition: bool, reason: str) -> None:
    """Skip when a real service is missing on this machine; under CI=true it is a failure."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required under CI: {reason}")
    pytest.skip(reason)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts connections on host:port."""
    try:
        with socket.create_connection((host, port), 1):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def fresh_database_url(backend: str, tmp_path: Path, tag: str = "test"):
    """The URL of an empty database for a test: a SQLite file in tmp_path, or a new PostgreSQL
    database (named sf_<tag>_..., dropped afterwards; skipped where PostgreSQL is missing)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / (tag + '.db')}"
        return
    require(port_open(5432), "PostgreSQL is not running on 127.0.0.1:5432")
    name = f"sf_{tag}_{uuid.uuid4().hex[:10]}"
    psql = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc"]
    subprocess.run([*psql, f"CREATE DATABASE {name}"], check=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        if not dbmod.db.is_closed():
            dbmod.db.close()
        subprocess.run([*psql, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], check=False)


@pytest.fixture
def config(tmp_path, seaweed):
    """A Config on a temp SQLite database and queue, with the session's SeaweedFS as its store."""
    return seaweed.make_config(tmp_path, env={"STREAMFORGE_SERVER_BASE_URL": "http://127.0.0.1:5000"})


@pytest.fixture
def make_app(seaweed):
    """Build an app for a given Config (the store is the session's SeaweedFS)."""
    from streamforge.web import create_app

    def factory(cfg):
        app = create_app(cfg)
        app.testing = True
        return app
    return factory


@pytest.fixture
def app(config, make_app):
    """A fresh app for the test."""
    return make_app(config)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def token_for(app):
    """Create a user (by email) and return a fresh API token for them."""
    def make(email: str) -> str:
        with dbmod.db.connection_context():
            user = videos.get_or_create_user(email)
            _, plain = videos.create_token(user, "test")
        return plain
    return make


@pytest.fixture
def auth(token_for):
    """Authorization headers for a user, by email."""
    def make(email: str = "alice@example.com") -> dict:
        return {"Authorization": f"Bearer {token_for(email)}"}
    return make


class LiveServer:
    """The app on a real port in a thread, for a store's webhook or a browser to reach."""

    def __init__(self, app, port: int = 0):
        self.server = make_server("127.0.0.1", port, app, threaded=True)
        self.port = self.server.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def queued_video_ids() -> list[str]:
    """The video ids of the process_video tasks waiting in the queue."""
    out = []
    for task in tasks.huey.pending():
        out.append(task.args[0])
    return out


def drain_queue(limit: int = 50) -> list[str]:
    """Run the queued tasks in this process (as a worker would), scheduled ones as if their time had
    come; returns their results."""
    results = []
    for _ in range(limit):
        task = tasks.huey.dequeue()
        if task is None:
            break
        with dbmod.db.connection_context():
            results.append(tasks.huey._execute(task, tasks.huey._get_timestamp()))
    return results
