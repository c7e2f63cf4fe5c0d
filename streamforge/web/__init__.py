"""The Flask application factory: one blueprint per area (api, hooks, auth, pages)."""
from __future__ import annotations

import logging
from urllib.parse import urlsplit

from flask import Flask, g, request

from streamforge.config import Config, load_config
from streamforge.store import db as dbmod
from streamforge.store.connect import object_store
from streamforge.store.objects import ObjectStore

# powerful browser features no page of ours uses are off; the player may go fullscreen, passkeys may run
PERMISSIONS_POLICY = ("camera=(), microphone=(), geolocation=(), payment=(), usb=(), serial=(), midi=(), "
                      "display-capture=(), fullscreen=(self), publickey-credentials-get=(self), "
                      "publickey-credentials-create=(self)")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def create_app(config: Config | None = None, store: ObjectStore | None = None) -> Flask:
    """Build the web app for `config` (loaded from the environment when omitted)."""
    config = config or load_config()
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=config.server.secret_key,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=config.base_url.startswith("https://"),
        SESSION_COOKIE_NAME="streamforge_session",
        # bodies are small JSON (the bytes of videos go to the store); werkzeug refuses a larger
        # one with 413 before reading it, chunked or not
        MAX_CONTENT_LENGTH=max(config.webhook.max_body_bytes, 256 * 1024) + 1,
        JSON_SORT_KEYS=False,
    )
    app.extensions["streamforge"] = config
    app.extensions["streamforge.store"] = store or object_store(config)
    dbmod.init_db(config.database_url, pooled=True)

    from streamforge.jobs import tasks
    tasks.configure(config)

    @app.before_request
    def _connect():
        dbmod.db.connect(reuse_if_open=True)
        g.config = config

    @app.teardown_request
    def _close(exc):
        if not dbmod.db.is_closed():
            dbmod.db.close()

    _add_security_headers(app, config)
    from streamforge.web import hosts
    hosts.init_app(app, config)  # with base_url empty, only trusted Host headers (issue 20)
    _register_blueprints(app)

    if not app.debug:
        logging.getLogger("streamforge").setLevel(logging.INFO)
    _ = request  # the factory registers everything; no work happens at import time
    return app


def _add_security_headers(app: Flask, config: Config) -> None:
    """Every answer's security headers; pages get a CSP naming the store (and CDN) as media origins."""
    @app.after_request
    def _security_headers(resp):
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "same-origin")
        resp.headers.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
        if config.base_url.startswith("https://"):  # reached over TLS: browsers never try plain HTTP again
            resp.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        if resp.mimetype == "text/html":
            # pages meant for other sites' <iframe>s (the embed page) name who may frame them
            framing = g.get("frame_ancestors") or "'none'"
            store_origin = _origin(app.extensions["streamforge.store"].public_url("x"))
            cdn = _origin(config.cdn.base_url) if config.cdn.base_url else ""
            media = " ".join(x for x in ("'self'", "blob:", store_origin, cdn) if x)
            resp.headers.setdefault(
                "Content-Security-Policy",
                f"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                f"img-src 'self' data: blob: {store_origin} {cdn}; media-src {media}; "
                f"connect-src {media}; worker-src 'self' blob:; frame-ancestors {framing}; base-uri 'self'; "
                f"form-action 'self'")
            if framing == "'none'":
                resp.headers.setdefault("X-Frame-Options", "DENY")
        return resp


def _register_blueprints(app: Flask) -> None:
    """One blueprint per area."""
    from streamforge.web import admin, api, auth, hooks, media_api, pages, play, share, viewing
    for area in (auth, admin, api, hooks, pages, play, share, viewing, media_api):
        area.init_app(app)
    from streamforge.web import runners_api  # issue 24: remote runners
    runners_api.init_app(app)
    from streamforge.web import metrics, openapi
    metrics.init_app(app)
    openapi.init_app(app)
    from streamforge.web import covers, error_pages, playlist_pages, playlists, text, watching  # issue 22
    for area in (watching, playlists, playlist_pages, covers, error_pages, text):
        area.init_app(app)
