"""What the single-file release (PyInstaller --onefile) needs at run time, and nothing otherwise.

A frozen `streamforge` has no `python -m`: its parts are started as the executable itself with
the subcommand. Such a child inherits the bootloader's environment (PyInstaller 6 sets
`_PYI_ARCHIVE_FILE` and friends; `PYINSTALLER_RESET_ENVIRONMENT` must stay unset) and so reuses the
parent's unpacked `_MEI*` directory instead of unpacking the bundle a second time.
"""
from __future__ import annotations

import os
import ssl
import stat
import sys
from pathlib import Path


def is_frozen() -> bool:
    """True inside the PyInstaller bundle."""
    return bool(getattr(sys, "frozen", False)) and hasattr(sys, "_MEIPASS")


def bundle_dir() -> Path:
    """The unpacked bundle (`_MEI*`), or this package's parent when not frozen."""
    return Path(getattr(sys, "_MEIPASS", Path(__file__).resolve().parent.parent))


def self_command(*args: str) -> list[str]:
    """The argv that runs `streamforge ARGS...` with this same program."""
    if is_frozen():
        return [sys.executable, *args]
    return [sys.executable, "-m", "streamforge.commands.main", *args]


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """An environment for a child part: frozen, it must find and reuse this bundle's unpacked dir."""
    out = dict(os.environ if env is None else env)
    if is_frozen():
        out.pop("PYINSTALLER_RESET_ENVIRONMENT", None)
    return out


def bundled_binary(name: str) -> str | None:
    """Path of an executable shipped in the bundle (`weed`), made executable; None when not frozen."""
    if not is_frozen():
        return None
    path = bundle_dir() / name
    if not path.is_file():
        return None
    if not os.access(path, os.X_OK):
        # data files are unpacked without their run bit; the _MEI dir is ours alone
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def use_bundled_certificates() -> None:
    """Where the host has no CA bundle, point OpenSSL and requests at certifi's (in the bundle)."""
    if os.environ.get("SSL_CERT_FILE") or os.environ.get("SSL_CERT_DIR"):
        return
    paths = ssl.get_default_verify_paths()
    if (paths.cafile and os.path.isfile(paths.cafile)) or (paths.capath and os.path.isdir(paths.capath)
                                                           and any(os.scandir(paths.capath))):
        return
    try:
        import certifi
    except ImportError:
        return
    os.environ["SSL_CERT_FILE"] = certifi.where()
    os.environ.setdefault("REQUESTS_CA_BUNDLE", certifi.where())


def fix_reexec(arbiter) -> None:
    """gunicorn's USR2 re-exec runs `sys.executable + sys.argv`: frozen, argv[0] is already the program."""
    if is_frozen():
        arbiter.START_CTX["args"] = list(sys.argv)
        arbiter.START_CTX[0] = sys.executable


def setup() -> None:
    """Run-time fixes for the frozen program; a no-op from a normal install."""
    if not is_frozen():
        return
    use_bundled_certificates()
