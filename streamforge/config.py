"""Configuration: one TOML file into frozen dataclasses, every key overridable from the environment.

`load_config(path, data_dir)` reads `path` (or `STREAMFORGE_CONFIG`), applies
`STREAMFORGE_<SECTION>_<KEY>` overrides, checks types and names, and fills in the secrets of the
embedded default (generated once into the data dir, mode 0600). External services with a missing
secret are a `ConfigError` naming the key.
"""
from __future__ import annotations

import dataclasses
import json
import os
import secrets
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from streamforge.errors import ConfigError

MiB = 1024 * 1024


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    base_url: str = ""
    secret_key: str = ""
    data_dir: str = ""
    # gunicorn worker threads of the web app, per process
    threads: int = 8
    # gunicorn processes of the web app; 0 = one per CPU core (at most 4)
    workers: int = 0
    # with base_url empty, the Host names absolute URLs may be built on; [] = the listening address,
    # this machine's names and addresses, localhost
    allowed_hosts: list = field(default_factory=list)


@dataclass(frozen=True)
class StorageConfig:
    endpoint: str = ""
    access_key: str = ""
    secret_key: str = ""
    bucket: str = "streamforge"
    region: str = "us-east-1"
    secure: bool = False
    public_url: str = ""
    # embedded SeaweedFS ports; 0 picks free ports once and remembers them in the data dir
    s3_port: int = 0
    master_port: int = 0
    volume_port: int = 0
    filer_port: int = 0


@dataclass(frozen=True)
class WebhookConfig:
    token: str = ""
    max_body_bytes: int = 1 * MiB
    # Amazon SNS deliveries: extra "host:port" endpoints trusted besides https://sns.<region>.amazonaws.com
    # (for the SubscribeURL and SigningCertURL), and the topic ARNs accepted (empty: any topic)
    sns_hosts: list = field(default_factory=list)
    sns_topics: list = field(default_factory=list)


@dataclass(frozen=True)
class UploadConfig:
    multipart_threshold: int = 64 * MiB
    part_size: int = 16 * MiB
    max_size: int = 20 * 1024 * MiB
    url_ttl: int = 3600
    content_types: list = field(default_factory=lambda: ["video/*", "audio/*"])


@dataclass(frozen=True)
class PipelineConfig:
    codecs: list = field(default_factory=lambda: ["h264"])
    heights: list = field(default_factory=lambda: [1080, 720, 480, 360])
    # encoder speed; empty: the measured default of each codec and rate control (pipeline/ladder.py)
    preset: str = ""
    segment_seconds: int = 4
    max_duration: float = 6 * 3600.0
    max_width: int = 8192
    max_height: int = 8192
    max_streams: int = 32
    max_fps: int = 60
    # seconds one processing run may take before it is abandoned
    run_timeout: int = 4 * 3600
    # where runs keep the original and the output while they work; empty: the system's temp dir
    temp_dir: str = ""
    # the first segment of every rung, short so a video becomes playable within seconds
    first_segment_seconds: float = 0.5
    audio_bitrate: str = "128k"
    preview_count: int = 5
    # extra encoder options per codec, e.g. {h264 = {tune = "film"}, av1 = {preset = "10"}}
    encoder_options: dict = field(default_factory=dict)
    # "crf": constant quality capped at each rung's peak; "abr": the target bitrates
    rate_control: str = "crf"
    # constant-quality level per codec (each encoder's own CRF scale); empty: the measured defaults
    quality: dict = field(default_factory=dict)
    # an H.264 upload that fits the top rung keeps its own pictures for that rung (no re-encode)
    passthrough: bool = True
    # a video longer than twice this is cut into chunks of about this many seconds that several workers
    # and runners encode at once (issue 24); 0: never
    chunk_seconds: float = 60.0
    # crf mode: the VMAF a title's probe encode aims at when choosing its levels (pipeline/pertitle.py);
    # 0: the fixed levels of `quality`
    target_quality: float = 100.0


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = ""


@dataclass(frozen=True)
class QueueConfig:
    url: str = ""
    workers: int = 1


@dataclass(frozen=True)
class CdnConfig:
    base_url: str = ""


@dataclass(frozen=True)
class SweeperConfig:
    interval_seconds: int = 60
    lease_seconds: int = 300
    max_attempts: int = 3


@dataclass(frozen=True)
class AuthConfig:
    oidc_issuer: str = ""
    oidc_metadata_url: str = ""
    oidc_client_id: str = ""
    oidc_client_secret: str = ""
    oidc_scopes: str = "openid email profile"
    oidc_name: str = "Single sign-on"
    # who may sign in through OIDC: exact emails and "*@domain" patterns; [] = existing users only
    allow: list = field(default_factory=list)
    # emails that hold the admin role
    admins: list = field(default_factory=list)
    require_verified_email: bool = True
    # the role of a user created at first sign-in: uploader or viewer
    default_role: str = "uploader"
    # local accounts: email and password sign-in (argon2id hashes)
    passwords: bool = True
    # how long a "stay signed in" session lasts (without it: until the browser closes)
    session_days: int = 30


@dataclass(frozen=True)
class QuotaConfig:
    # 0 = unlimited; a user's own quota (set by an admin) overrides these
    max_bytes_per_user: int = 0
    max_videos_per_user: int = 0


@dataclass(frozen=True)
class PlaybackConfig:
    default_visibility: str = "private"
    signed_url_ttl: int = 4 * 3600
    # origins that may frame /embed/{slug} (CSP frame-ancestors); "*" = any site
    embed_origins: list = field(default_factory=lambda: ["*"])
    # view sessions one client address may start an hour (more are not counted); raise it behind a proxy
    views_per_address_hour: int = 60
    # who may download a rendition as MP4 or the original: "owner", "viewers" (anyone who may watch), "off"
    downloads: str = "owner"


@dataclass(frozen=True)
class NotifyConfig:
    urls: list = field(default_factory=list)
    secret: str = ""
    max_attempts: int = 8


@dataclass(frozen=True)
class MetricsConfig:
    # the bearer token Prometheus sends to GET /metrics; empty: only requests from this machine
    token: str = ""


@dataclass(frozen=True)
class CaptionsConfig:
    # transcribe the default audio track into an `auto` caption track after the ladder
    auto: bool = True
    # empty: the packaged default (faster-whisper tiny.en); else a model name or a local model directory
    model: str = ""
    # empty: detected (an English-only model always says "en"); else a language such as "en" or "de"
    language: str = ""
    # CPU threads one transcription uses
    threads: int = 2


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    webhook: WebhookConfig = field(default_factory=WebhookConfig)
    upload: UploadConfig = field(default_factory=UploadConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    cdn: CdnConfig = field(default_factory=CdnConfig)
    sweeper: SweeperConfig = field(default_factory=SweeperConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    quota: QuotaConfig = field(default_factory=QuotaConfig)
    playback: PlaybackConfig = field(default_factory=PlaybackConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    captions: CaptionsConfig = field(default_factory=CaptionsConfig)

    @property
    def data_dir(self) -> Path:
        """The directory holding the embedded default's database, queue, store and secrets."""
        return Path(self.server.data_dir)

    @property
    def embedded_storage(self) -> bool:
        """True when no external S3 endpoint is configured."""
        return not self.storage.endpoint

    @property
    def base_url(self) -> str:
        """The absolute URL the web app is reached at, without a trailing slash."""
        if self.server.base_url:
            return self.server.base_url.rstrip("/")
        host = "127.0.0.1" if self.server.host in ("0.0.0.0", "::", "") else self.server.host
        return f"http://{host}:{self.server.port}"

    @property
    def database_url(self) -> str:
        """The database URL, defaulting to SQLite in the data dir."""
        return self.database.url or f"sqlite:///{self.data_dir / 'streamforge.db'}"

    @property
    def queue_url(self) -> str:
        """The queue URL, defaulting to a SQLite Huey queue in the data dir."""
        return self.queue.url or f"sqlite:///{self.data_dir / 'queue.db'}"


SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}
SECRETS = {("server", "secret_key"), ("webhook", "token"), ("storage", "access_key"), ("storage", "secret_key")}
VISIBILITIES = ("private", "unlisted", "public")
CODECS = ("h264", "hevc", "av1", "vp9")


def _section_class(name: str) -> type:
    hints = typing.get_type_hints(Config)
    return hints[name]


def _coerce(section: str, key: str, value, want: type, from_env: bool):
    """Return `value` as type `want`, or raise a ConfigError naming the key."""
    where = f"[{section}] {key}"
    if from_env and isinstance(value, str):
        try:
            if want is bool:
                low = value.strip().lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off", ""):
                    return False
                raise ValueError(value)
            if want is int:
                return int(value)
            if want is float:
                return float(value)
            if want is dict:
                parsed = json.loads(value)
                if not isinstance(parsed, dict):
                    raise ValueError(value)
                return parsed
            if want is list:
                text = value.strip()
                if text.startswith("["):
                    parsed = json.loads(text)
                else:
                    parsed = [p.strip() for p in text.split(",") if p.strip()]
                return [int(p) if isinstance(p, str) and p.lstrip("-").isdigit() else p for p in parsed]
            return value
        except (ValueError, json.JSONDecodeError):
            raise ConfigError(f"{where}: expected {want.__name__}, got {value!r} "
                              f"(from STREAMFORGE_{section.upper()}_{key.upper()})") from None
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if want is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if want is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if not isinstance(value, want):
        raise ConfigError(f"{where}: expected {want.__name__}, got {type(value).__name__} {value!r}")
    return value


def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None


def _build(raw: dict, env: dict) -> Config:
    sections = {}
    for name, value in raw.items():
        if name not in SECTIONS:
            raise ConfigError(f"unknown config section [{name}] (known: {', '.join(SECTIONS)})")
        if not isinstance(value, dict):
            raise ConfigError(f"[{name}] must be a table")
    for name in SECTIONS:
        cls = _section_class(name)
        hints = typing.get_type_hints(cls)
        section = dict(raw.get(name, {}))
        given = _with_files(name, section, hints, f"[{name}] {{key}}")
        for key in given:
            if key not in hints:
                raise ConfigError(f"unknown config key [{name}] {key}")
        # a value read from a file (`<key>_file`) is text, taken as the environment's is
        values = {k: _coerce(name, k, v, hints[k], k not in section) for k, v in given.items()}
        prefix = f"STREAMFORGE_{name.upper()}_"
        from_env = _with_files(name, {var[len(prefix):].lower(): text for var, text in env.items()
                                      if var.startswith(prefix)}, hints, prefix + "{KEY}")
        for key, text in from_env.items():
            if key not in hints:
                raise ConfigError(f"unknown config key [{name}] {key} (from {prefix}{key.upper()})")
            values[key] = _coerce(name, key, text, hints[key], True)
        sections[name] = cls(**values)
    return Config(**sections)


def _with_files(section: str, values: dict, hints: dict, where: str) -> dict:
    """`values` with every `<key>_file` (a path) replaced by `<key>` = that file's text, for secrets
    kept in files (Docker secrets, STREAMFORGE_SERVER_SECRET_KEY_FILE=/run/secrets/...); giving
    both `<key>` and `<key>_file` is an error."""
    out = dict(values)
    for name, path in values.items():
        key = name[:-len("_file")]
        if not name.endswith("_file") or name in hints or key not in hints:
            continue
        label = where.replace("{key}", name).replace("{KEY}", name.upper())
        if key in values:
            raise ConfigError(f"[{section}] {key} is given twice: by value and by {label}; keep one")
        if not isinstance(path, str) or not path:
            raise ConfigError(f"{label}: expected the path of a file holding [{section}] {key}")
        try:
            out[key] = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as e:
            raise ConfigError(f"{label}: cannot read {path}: {e.strerror or e}") from None
        del out[name]
    return out


def web_processes(server: ServerConfig) -> int:
    """How many gunicorn processes the web app runs: [server] workers, or one per core up to 4."""
    if server.workers:
        return server.workers
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def _validate(cfg: Config) -> None:
    u, p = cfg.upload, cfg.pipeline
    if cfg.server.threads < 1 or cfg.server.workers < 0:
        raise ConfigError("[server] threads: at least 1; workers: 0 (one per core) or more")
    if cfg.captions.threads < 1:
        raise ConfigError("[captions] threads: at least 1")
    language = cfg.captions.language
    if language and not (2 <= len(language) <= 3 and language.isascii() and language.isalpha()):
        raise ConfigError(f"[captions] language: a language code such as en, de or yue, got {language!r}")
    if u.part_size < 5 * MiB:
        raise ConfigError("[upload] part_size: must be at least 5 MiB (5242880), the S3 minimum")
    if u.multipart_threshold < 1:
        raise ConfigError("[upload] multipart_threshold: must be positive")
    if u.max_size < 1:
        raise ConfigError("[upload] max_size: must be positive")
    if u.url_ttl < 60 or u.url_ttl > 7 * 24 * 3600:
        raise ConfigError("[upload] url_ttl: must be between 60 and 604800 seconds")
    bad = [c for c in p.codecs if c not in CODECS]
    if bad or not p.codecs:
        raise ConfigError(f"[pipeline] codecs: unknown {bad or 'empty list'}; choose from {', '.join(CODECS)}")
    if not p.heights or any(not isinstance(h, int) or h < 16 or h > 4320 for h in p.heights):
        raise ConfigError("[pipeline] heights: a list of integers between 16 and 4320")
    if p.segment_seconds < 1 or p.segment_seconds > 30:
        raise ConfigError("[pipeline] segment_seconds: between 1 and 30")
    _validate_quality(p)
    if cfg.playback.default_visibility not in VISIBILITIES:
        raise ConfigError(f"[playback] default_visibility: one of {', '.join(VISIBILITIES)}")
    if not all(o == "'self'" or isinstance(o, str) and o and not any(ch in o for ch in " ;,\t\n\r'\"")
               for o in cfg.playback.embed_origins):
        raise ConfigError('[playback] embed_origins: a list of origins such as "https://blog.example.com", or ["*"]')
    if cfg.playback.views_per_address_hour < 1:
        raise ConfigError("[playback] views_per_address_hour: at least 1")
    if cfg.playback.downloads not in ("owner", "viewers", "off"):
        raise ConfigError('[playback] downloads: "owner", "viewers" or "off"')
    if cfg.auth.default_role not in ("uploader", "viewer"):
        raise ConfigError("[auth] default_role: uploader or viewer")
    if cfg.quota.max_bytes_per_user < 0 or cfg.quota.max_videos_per_user < 0:
        raise ConfigError("[quota] max_bytes_per_user and max_videos_per_user: 0 (unlimited) or more")
    if not all(isinstance(h, str) and h.rpartition(":")[0] and h.rpartition(":")[2].isdigit()
               for h in cfg.webhook.sns_hosts):
        raise ConfigError('[webhook] sns_hosts: a list of "host:port" strings, e.g. ["sns.internal.example:443"]')
    if not all(isinstance(t, str) and t.startswith("arn:") for t in cfg.webhook.sns_topics):
        raise ConfigError('[webhook] sns_topics: a list of topic ARNs, e.g. ["arn:aws:sns:eu-west-1:123456789012:uploads"]')
    if not 1 <= cfg.auth.session_days <= 3650:
        raise ConfigError("[auth] session_days: between 1 and 3650")
    if not all(isinstance(h, str) and h and not any(ch in h for ch in " /\t\r\n") for h in cfg.server.allowed_hosts):
        raise ConfigError('[server] allowed_hosts: a list of host names or addresses, e.g. ["videos.home.arpa"]')
    if cfg.sweeper.interval_seconds < 1 or cfg.sweeper.lease_seconds < 5:
        raise ConfigError("[sweeper] interval_seconds >= 1 and lease_seconds >= 5")
    for key, url, schemes in (("[database] url", cfg.database.url, ("sqlite", "postgresql", "postgres")),
                              ("[queue] url", cfg.queue.url, ("sqlite", "redis", "rediss"))):
        if url and urlsplit(url).scheme not in schemes:
            raise ConfigError(f"{key}: scheme must be one of {', '.join(schemes)}, got {url.split(':')[0]!r}")


def _validate_quality(p: PipelineConfig) -> None:
    if not isinstance(p.target_quality, (int, float)) or not 0 <= p.target_quality <= 100:
        raise ConfigError(f"[pipeline] target_quality: a VMAF from 0 to 100 (0: off), got {p.target_quality!r}")
    if p.rate_control not in ("crf", "abr"):
        raise ConfigError(f"[pipeline] rate_control: \"crf\" or \"abr\", got {p.rate_control!r}")
    for codec, level in p.quality.items():
        top = 51 if codec in ("h264", "hevc") else 63
        if codec not in CODECS:
            raise ConfigError(f"[pipeline] quality: unknown codec {codec!r}; choose from {', '.join(CODECS)}")
        if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 <= level <= top:
            raise ConfigError(f"[pipeline] quality: {codec} takes a number from 0 to {top}, got {level!r}")


def _secrets_file(data_dir: Path) -> Path:
    return data_dir / "secrets.json"


def generated_secrets(data_dir: Path) -> dict:
    """The embedded default's secrets, generated on first use into the data dir with mode 0600."""
    path = _secrets_file(data_dir)
    if path.exists():
        return json.loads(path.read_text())
    data_dir.mkdir(parents=True, exist_ok=True)
    values = {
        "server_secret_key": secrets.token_urlsafe(32),
        "webhook_token": secrets.token_urlsafe(32),
        "storage_access_key": "sf" + secrets.token_hex(8),
        "storage_secret_key": secrets.token_urlsafe(30),
    }
    write_private_json(path, values)
    return values


def write_private_json(path: Path, values: dict) -> None:
    """Write `values` as JSON readable by this user only (0600), replacing `path` atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(values, f)
    os.replace(tmp, path)


def _fill_secrets(cfg: Config) -> Config:
    missing = [(s, k) for s, k in sorted(SECRETS) if not getattr(getattr(cfg, s), k)]
    if not missing:
        return cfg
    external = [(s, k) for s, k in missing if s == "storage" and not cfg.embedded_storage]
    if external:
        s, k = external[0]
        raise ConfigError(f"[{s}] {k} is required with an external store ([storage] endpoint = "
                          f"{cfg.storage.endpoint!r}); set it or STREAMFORGE_{s.upper()}_{k.upper()}")
    if not cfg.embedded_storage:
        s, k = missing[0]
        raise ConfigError(f"[{s}] {k} is required when StreamForge uses external services; set it or "
                          f"STREAMFORGE_{s.upper()}_{k.upper()}")
    gen = generated_secrets(cfg.data_dir)
    changes: dict[str, dict] = {}
    for s, k in missing:
        changes.setdefault(s, {})[k] = gen[f"{s}_{k}"]
    return dataclasses.replace(cfg, **{s: dataclasses.replace(getattr(cfg, s), **v) for s, v in changes.items()})


def load_config(path: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None,
                env: dict | None = None, fill_secrets: bool = True) -> Config:
    """Load the configuration from TOML and the environment; raise ConfigError on any problem."""
    env = dict(os.environ if env is None else env)
    path = path or env.get("STREAMFORGE_CONFIG")
    raw = _read_toml(Path(path)) if path else {}
    if env.get("STREAMFORGE_DATA_DIR") and "STREAMFORGE_SERVER_DATA_DIR" not in env:
        env["STREAMFORGE_SERVER_DATA_DIR"] = env["STREAMFORGE_DATA_DIR"]
    env.pop("STREAMFORGE_DATA_DIR", None)
    env.pop("STREAMFORGE_CONFIG", None)
    cfg = _build(raw, env)
    if data_dir:
        cfg = dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, data_dir=str(data_dir)))
    if not cfg.server.data_dir:
        cfg = dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, data_dir="streamforge-data"))
    cfg = dataclasses.replace(cfg, server=dataclasses.replace(
        cfg.server, data_dir=str(Path(cfg.server.data_dir).expanduser().resolve())))
    _validate(cfg)
    return _fill_secrets(cfg) if fill_secrets else cfg
