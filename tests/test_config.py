"""Config: the example loads, env overrides, one-line errors, generated secrets."""
import os
import stat
from pathlib import Path

import pytest

from streamforge.config import load_config, web_processes
from streamforge.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CONTRACT_KEYS = {
    "server": {"host", "port", "base_url", "secret_key"},
    "storage": {"endpoint", "access_key", "secret_key", "bucket", "region", "secure", "public_url"},
    "webhook": {"token"},
    "upload": {"multipart_threshold", "part_size", "max_size", "url_ttl"},
    "pipeline": {"codecs", "heights", "preset", "segment_seconds"},
    "database": {"url"},
    "queue": {"url"},
    "cdn": {"base_url"},
    "sweeper": {"interval_seconds", "lease_seconds"},
}


def test_example_documents_every_key_and_loads(tmp_path):
    import tomllib
    raw = tomllib.loads((ROOT / "config.example.toml").read_text())
    cfg = load_config(ROOT / "config.example.toml", data_dir=tmp_path, env={})
    import dataclasses
    for section in dataclasses.fields(cfg):
        keys = {f.name for f in dataclasses.fields(getattr(cfg, section.name))}
        assert set(raw[section.name]) == keys, f"[{section.name}] in the example differs from the code"
    for section, keys in CONTRACT_KEYS.items():
        assert keys <= set(raw[section])
    assert cfg.pipeline.heights == [1080, 720, 480, 360]
    assert cfg.upload.multipart_threshold == 64 * 1024 * 1024


def test_env_overrides_every_type(tmp_path):
    cfg = load_config(data_dir=tmp_path, env={
        "STREAMFORGE_WEBHOOK_TOKEN": "tok", "STREAMFORGE_SERVER_PORT": "9001",
        "STREAMFORGE_STORAGE_SECURE": "true", "STREAMFORGE_PIPELINE_HEIGHTS": "720, 360",
        "STREAMFORGE_PIPELINE_CODECS": '["h264", "av1"]', "STREAMFORGE_PIPELINE_MAX_DURATION": "60"})
    assert cfg.webhook.token == "tok"
    assert cfg.server.port == 9001
    assert cfg.storage.secure is True
    assert cfg.pipeline.heights == [720, 360]
    assert cfg.pipeline.codecs == ["h264", "av1"]
    assert cfg.pipeline.max_duration == 60.0


def test_env_beats_file(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[server]\nport = 7000\n[pipeline]\npreset = "fast"\n')
    cfg = load_config(f, data_dir=tmp_path, env={"STREAMFORGE_SERVER_PORT": "7001"})
    assert cfg.server.port == 7001 and cfg.pipeline.preset == "fast"
    cfg = load_config(data_dir=tmp_path, env={"STREAMFORGE_CONFIG": str(f)})
    assert cfg.server.port == 7000


@pytest.mark.parametrize("text, env, message", [
    ("[server]\nprot = 1\n", {}, "unknown config key [server] prot"),
    ("[severs]\nport = 1\n", {}, "unknown config section [severs]"),
    ('[server]\nport = "eighty"\n', {}, "[server] port: expected an integer"),
    ("[storage]\nsecure = 1\n", {}, "[storage] secure: expected true or false"),
    ("", {"STREAMFORGE_SERVER_PORT": "x"}, "[server] port: expected int"),
    ("", {"STREAMFORGE_UPLOAD_NOPE": "1"}, "unknown config key [upload] nope"),
    ("[upload]\npart_size = 1024\n", {}, "[upload] part_size"),
    ('[pipeline]\ncodecs = ["mpeg2"]\n', {}, "[pipeline] codecs"),
    ("[server\n", {}, "is not valid TOML"),
    ("[server]\nworkers = -1\n", {}, "[server] threads: at least 1; workers"),
    ("", {"STREAMFORGE_SERVER_THREADS": "0"}, "[server] threads: at least 1"),
])
def test_bad_config_is_one_clear_line(tmp_path, text, env, message):
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(f, data_dir=tmp_path, env=env)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_external_store_without_secrets_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"\[storage\] access_key is required"):
        load_config(data_dir=tmp_path, env={"STREAMFORGE_STORAGE_ENDPOINT": "minio:9000"})
    with pytest.raises(ConfigError, match=r"\[server\] secret_key is required"):
        load_config(data_dir=tmp_path, env={"STREAMFORGE_STORAGE_ENDPOINT": "minio:9000",
                                            "STREAMFORGE_STORAGE_ACCESS_KEY": "a",
                                            "STREAMFORGE_STORAGE_SECRET_KEY": "b",
                                            "STREAMFORGE_WEBHOOK_TOKEN": "c"})


def test_embedded_secrets_generated_once_with_mode_0600(tmp_path):
    a = load_config(data_dir=tmp_path, env={})
    b = load_config(data_dir=tmp_path, env={})
    assert a.server.secret_key and a.server.secret_key == b.server.secret_key
    assert a.webhook.token and a.storage.access_key and a.storage.secret_key
    mode = stat.S_IMODE(os.stat(tmp_path / "secrets.json").st_mode)
    assert mode == 0o600
    c = load_config(data_dir=tmp_path, env={"STREAMFORGE_WEBHOOK_TOKEN": "given"})
    assert c.webhook.token == "given"


def test_web_processes_one_per_core_unless_set(tmp_path):
    cores = len(os.sched_getaffinity(0))
    assert web_processes(load_config(data_dir=tmp_path, env={}).server) == max(1, min(4, cores))
    cfg = load_config(data_dir=tmp_path, env={"STREAMFORGE_SERVER_WORKERS": "3"})
    assert cfg.server.workers == 3 and web_processes(cfg.server) == 3
