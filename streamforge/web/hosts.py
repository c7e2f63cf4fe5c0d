"""Which request `Host` names absolute URLs may be built on when `[server] base_url` is empty.

Absolute URLs (oEmbed, OpenGraph, invites, `watch_url`, playback) that followed any Host header would
let a request with a forged Host plant links to another site in answers (and in caches). Without
`base_url`, a Host is trusted only when `[server] allowed_hosts` names it; by default that is the
address the app listens on, this machine's names and addresses, and localhost.
"""
from __future__ import annotations

import contextlib
import socket
from functools import lru_cache
from urllib.parse import urlsplit

from streamforge.config import Config

LOOPBACK = ("localhost", "127.0.0.1", "::1")
WILDCARD = ("0.0.0.0", "::", "")


def host_name(host: str) -> str:
    """The name or address part of a Host header (no port, no brackets), lower case; "" when malformed."""
    try:
        return (urlsplit("//" + host).hostname or "").rstrip(".")
    except ValueError:
        return ""


@lru_cache(maxsize=8)
def _machine_names(listen: str) -> frozenset[str]:
    names = {socket.gethostname(), socket.getfqdn()}
    addresses: set[str] = set()
    for name in list(names) + ([listen] if listen not in WILDCARD else []):
        with contextlib.suppress(OSError, UnicodeError):
            addresses.update(info[4][0] for info in socket.getaddrinfo(name, None))
    if listen in WILDCARD:
        # every interface: the address this machine's LAN reaches it at (a UDP connect sends nothing)
        for family, probe in ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1")):
            with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_DGRAM) as s:
                s.connect((probe, 9))
                addresses.add(s.getsockname()[0])
    return frozenset(x.lower().split("%")[0] for x in names | addresses if x)


def allowed_hosts(config: Config) -> frozenset[str]:
    """The host names a request may name when base_url is empty: `[server] allowed_hosts`, else the defaults;
    loopback names always (commands on this machine, such as `streamforge import`, use them)."""
    if config.server.allowed_hosts:
        return frozenset({host_name(h) or h.lower() for h in config.server.allowed_hosts} | set(LOOPBACK))
    listen = config.server.host.strip("[]").lower()
    own = {listen} if listen not in WILDCARD else set()
    return frozenset(own | set(LOOPBACK) | _machine_names(listen))


def host_allowed(host: str, config: Config) -> bool:
    """True when a request's Host header may be the base of absolute URLs."""
    name = host_name(host)
    return bool(name) and name in allowed_hosts(config)


def init_app(app, config: Config) -> None:
    """With `base_url` empty, answer 400 to a request naming a host outside allowed_hosts before it does
    anything (so no answer is half made: a video created, then no URL to show it at). The store's
    webhook and /healthz are exempt: they build no URLs, and a store or probe may name the app as it likes."""
    if config.server.base_url:
        return
    from flask import request

    from streamforge.web.common import error

    @app.before_request
    def _trusted_host():
        if request.path.startswith("/hooks/") or request.path == "/healthz" or host_allowed(request.host, config):
            return None
        return error(400, "bad_host", f"the Host {request.host[:100]!r} is not one this server answers for; use "
                                      f"its address, or name the host in [server] allowed_hosts (or set "
                                      f"[server] base_url)")
