"""What a running `streamforge serve` leaves in its data dir for commands on the same machine.

`serve` writes `<data_dir>/serve.json` (`{"url", "pid", "started_at"}`, mode 0600) once it has
started its parts and removes it when it stops; `streamforge import` without `--url` reads it to
find the local app. `SIGN_IN_EMAIL` is the user of the sign-in link `serve` prints.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from streamforge.config import Config, write_private_json

SIGN_IN_EMAIL = "admin@localhost"
RUN_FILE = "serve.json"


def local_url(cfg: Config) -> str:
    """The URL a process on this machine reaches the web app at (loopback for a wildcard bind)."""
    host = cfg.server.host if cfg.server.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{cfg.server.port}"


def run_file(cfg: Config) -> Path:
    """Where `serve` records itself in the data dir."""
    return cfg.data_dir / RUN_FILE


def write_run_file(cfg: Config, url: str | None = None, pid: int | None = None) -> Path:
    """Record the running `serve` (its local URL and pid); replaced atomically."""
    path = run_file(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private_json(path, {"url": url or local_url(cfg), "pid": pid or os.getpid(),
                              "started_at": int(time.time())})
    return path


def remove_run_file(cfg: Config) -> None:
    """Forget the record at stop, when it is this process's own."""
    path = run_file(cfg)
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def find_local_serve(cfg: Config) -> str | None:
    """The URL of the `serve` running on this data dir, or None when none is (or it died)."""
    try:
        body = json.loads(run_file(cfg).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(body, dict) or not isinstance(body.get("url"), str) or not isinstance(body.get("pid"), int):
        return None
    return body["url"].rstrip("/") if _alive(body["pid"]) else None


def mint_token(cfg: Config) -> tuple[str, Callable[[], None]]:
    """A new API token for the sign-in user of this data dir's database, and how to revoke it
    (what `streamforge token create` does, for a command that runs beside `serve`)."""
    from streamforge.store import db as dbmod
    from streamforge.store import videos
    dbmod.init_db(cfg.database_url)
    with dbmod.db.connection_context():
        user = videos.get_or_create_user(SIGN_IN_EMAIL, "Admin")
        row, plain = videos.create_token(user, "streamforge import")

    def revoke() -> None:
        with dbmod.db.connection_context():
            videos.revoke_token(user, row.id)
    return plain, revoke


def wait_healthy(url: str, timeout: float = 90.0) -> bool:
    """Wait for a serve that is still starting: True once its /healthz answers 200."""
    import requests
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(f"{url}/healthz", timeout=5).status_code == 200:
                return True
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.25)
