"""Pytest plugin: a real SeaweedFS for the tests (registered in conftest.py).

`seaweed` (session): one embedded store on free ports in a temp dir, shared by every test;
tests use their own key prefixes. Its `make_config(data_dir)` gives a Config in external-endpoint
mode pointing at it. `seaweed_factory(webhook_url, token)`: a separate store whose filer webhook
calls `webhook_url` with `token`, stopped when the test ends.
"""
from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from streamforge.config import Config, load_config
from streamforge.errors import StorageError
from streamforge.store.embedded import EmbeddedStore, weed_binary
from streamforge.store.objects import ObjectStore

TEST_BUCKET = "streamforge-test"


@dataclass
class Seaweed:
    """A running SeaweedFS and how to reach it."""

    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    data_dir: Path
    store: ObjectStore
    embedded: EmbeddedStore
    webhook_token: str

    def make_config(self, data_dir: str | os.PathLike, env: dict | None = None) -> Config:
        """A Config whose [storage] is this store as an external endpoint (extra env overrides)."""
        base = {
            "STREAMFORGE_STORAGE_ENDPOINT": self.endpoint,
            "STREAMFORGE_STORAGE_ACCESS_KEY": self.access_key,
            "STREAMFORGE_STORAGE_SECRET_KEY": self.secret_key,
            "STREAMFORGE_STORAGE_BUCKET": self.bucket,
            "STREAMFORGE_WEBHOOK_TOKEN": self.webhook_token,
            "STREAMFORGE_SERVER_SECRET_KEY": "test-" + secrets.token_hex(16),
            "STREAMFORGE_CAPTIONS_AUTO": os.environ.get("STREAMFORGE_CAPTIONS_AUTO", "false"),
        }
        return load_config(env={**base, **(env or {})}, data_dir=data_dir)


def _require_weed() -> None:
    try:
        weed_binary()
    except StorageError as e:
        if os.environ.get("CI", "").lower() == "true":
            raise
        pytest.skip(f"SeaweedFS not available: {e}")


def start_seaweed(data_dir: Path, webhook_url: str = "", token: str = "",
                  bucket: str = TEST_BUCKET, webhook_prefixes: list[str] | None = None) -> Seaweed:
    """Start an embedded SeaweedFS in `data_dir` on free ports and wait until it serves S3."""
    env = {
        "STREAMFORGE_STORAGE_ACCESS_KEY": "test" + secrets.token_hex(6),
        "STREAMFORGE_STORAGE_SECRET_KEY": secrets.token_urlsafe(24),
        "STREAMFORGE_STORAGE_BUCKET": bucket,
        "STREAMFORGE_WEBHOOK_TOKEN": token or secrets.token_urlsafe(16),
        "STREAMFORGE_SERVER_SECRET_KEY": "test-" + secrets.token_hex(16),
    }
    config = load_config(env=env, data_dir=data_dir)
    embedded = EmbeddedStore(config, webhook_url, webhook_prefixes=webhook_prefixes)
    embedded.start()
    ready = False
    try:
        embedded.wait_ready(timeout=60)
        store = embedded.object_store()
        store.ensure_bucket(cors_origins=[config.base_url])
        ready = True
    finally:
        if not ready:
            embedded.stop(timeout=5)
    return Seaweed(endpoint=embedded.endpoint, access_key=config.storage.access_key,
                   secret_key=config.storage.secret_key, bucket=bucket, data_dir=Path(data_dir),
                   store=store, embedded=embedded, webhook_token=config.webhook.token)


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    """One real SeaweedFS for the whole test session."""
    _require_weed()
    data_dir = tmp_path_factory.mktemp("seaweed")
    handle = start_seaweed(data_dir)
    try:
        yield handle
    finally:
        handle.embedded.stop(timeout=5)
        shutil.rmtree(data_dir / "seaweed" / "data", ignore_errors=True)


@pytest.fixture
def seaweed_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Seaweed]]:
    """Start extra stores whose filer webhook calls `webhook_url` with bearer `token`."""
    _require_weed()
    started: list[Seaweed] = []

    def factory(webhook_url: str, token: str, bucket: str = TEST_BUCKET,
                webhook_prefixes: list[str] | None = None) -> Seaweed:
        handle = start_seaweed(tmp_path_factory.mktemp("seaweed-hook"), webhook_url, token,
                               bucket=bucket, webhook_prefixes=webhook_prefixes)
        started.append(handle)
        return handle

    try:
        yield factory
    finally:
        for handle in started:
            handle.embedded.stop(timeout=5)
