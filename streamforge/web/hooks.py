"""The store's bucket notifications (`POST /hooks/storage`) and `GET /healthz`.

Two formats arrive here: MinIO / AWS S3 event records and SeaweedFS filer events, and AWS S3's
records also inside Amazon SNS deliveries (`web/sns.py` verifies those). Each event is only a hint;
`intake.accept_upload` checks the store and starts at most one run.
"""
from __future__ import annotations

import hmac
import json
import logging
import re
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import unquote_plus

from flask import Blueprint
from peewee import InterfaceError, OperationalError

from streamforge.config import Config
from streamforge.errors import StorageError
from streamforge.instruments import WEBHOOK_SECONDS
from streamforge.jobs import intake
from streamforge.store import counters, videos
from streamforge.store import db as dbmod
from streamforge.store.objects import ObjectStore
from streamforge.web import sns
from streamforge.web.common import handle_errors, store

bp = Blueprint("hooks", __name__)
log = logging.getLogger("streamforge.hooks")
ORIGINAL_KEY = re.compile(r"^originals/([a-z0-9]{8,32})/[^/]+$")
MAX_EVENTS = 1000


class NotANotification(ValueError):
    """The body is not a bucket notification in a format we know.

    `recognised` is True when the body is one of the formats but a record in it is malformed: from
    an authenticated sender that is a notification we cannot act on (answered 200 and counted), not
    a body that is no notification at all (400)."""

    def __init__(self, message: str, recognised: bool = False):
        super().__init__(message)
        self.recognised = recognised


@dataclass(frozen=True)
class StoreEvent:
    bucket: str
    key: str
    created: bool
    is_directory: bool = False


def _depth(value, limit: int) -> int:
    """Nesting depth of parsed JSON, giving up past `limit`."""
    # only containers are walked (a scalar is one level below its container): notifications are
    # mostly strings and numbers, and this runs on every one of them
    stack, deepest = [(value, 1)], 1
    while stack:
        item, d = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        for child in children:
            if isinstance(child, (dict, list)):
                if d + 1 > limit:
                    return d + 1
                stack.append((child, d + 1))
            elif d + 1 > deepest:
                deepest = d + 1
        deepest = max(deepest, d)
    return deepest


def parse_notification(body: bytes) -> list[StoreEvent]:
    """The events of a MinIO/S3 or SeaweedFS notification body; NotANotification otherwise."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError, UnicodeDecodeError):
        raise NotANotification("the body is not JSON") from None
    if not isinstance(data, dict):
        raise NotANotification("the body is not a JSON object")
    if _depth(data, 16) > 16:
        raise NotANotification("the body is nested too deeply")
    if data.get("Event") == "s3:TestEvent":  # what S3 sends when a notification configuration is set
        return []
    if "Records" in data:
        records = data["Records"]
        if not isinstance(records, list):
            raise NotANotification("Records must be a list", recognised=True)
        events = []
        for rec in records[:MAX_EVENTS]:
            if not isinstance(rec, dict):
                raise NotANotification("each record must be an object", recognised=True)
            name = str(rec.get("eventName", ""))
            s3 = rec.get("s3") if isinstance(rec.get("s3"), dict) else {}
            bucket = (s3.get("bucket") or {}).get("name") if isinstance(s3.get("bucket"), dict) else None
            obj = s3.get("object") if isinstance(s3.get("object"), dict) else {}
            key = obj.get("key")
            if not isinstance(bucket, str) or not isinstance(key, str):
                raise NotANotification("a record lacks s3.bucket.name or s3.object.key", recognised=True)
            # S3 and MinIO URL-encode the key in records, with '+' for a space
            events.append(StoreEvent(bucket, unquote_plus(key), "ObjectCreated" in name, key.endswith("/")))
        return events
    if "event_type" in data or "eventType" in data:
        kind = str(data.get("event_type", data.get("eventType", "")))
        path = data.get("key")
        if not isinstance(path, str):
            raise NotANotification("a filer event needs a key", recognised=True)
        message = data.get("message") if isinstance(data.get("message"), dict) else {}
        entry = message.get("new_entry") if isinstance(message.get("new_entry"), dict) else {}
        parts = path.lstrip("/").split("/", 2)
        if len(parts) < 3 or parts[0] != "buckets":
            return [StoreEvent("", path, False)]
        is_dir = bool(entry.get("is_directory") or entry.get("isDirectory"))
        return [StoreEvent(parts[1], parts[2], kind in ("create", "update", "rename") and bool(entry), is_dir)]
    raise NotANotification("neither S3 event records nor a SeaweedFS filer event")


class StorageHook:
    """`POST /hooks/storage`, answered in front of Flask: 202 accepted, 200 ignored, 401 bad token,
    400 not a notification, 413 too large, 503 when the database cannot be reached (the store sends
    it again). Amazon SNS deliveries (header x-amz-sns-message-type) carry no token: their signature
    is verified instead (403 when it fails).

    An authenticated notification we cannot act on (a malformed record, an unknown upload, a bug
    raising inside) is answered 200, logged and counted (store/counters.py): MinIO's queue replays
    events in order and retries a failing one forever, so one non-2xx answer would hold back every
    later notification. The sweeper finds whatever such an event was about.

    A notification storm is the one request the app gets by the thousand and in bursts, and the
    handler's own work (parse, one lookup, a HEAD on the store for an upload) is a fraction of what
    Flask spends around it (request context, session, before/after hooks): this small WSGI app
    skips all that, and needs none of it (no cookies, no pages, its own bearer token)."""

    PATH = "/hooks/storage"

    def __init__(self, app, config: Config, store: ObjectStore):
        self.app, self.config, self.store = app, config, store
        self.token = config.webhook.token.encode()
        self.sns = sns.SnsEndpoint(config.webhook)

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") != self.PATH:
            return self.app(environ, start_response)
        with WEBHOOK_SECONDS.time():  # GET /metrics: streamforge_webhook_seconds
            return self._answer(environ, start_response)

    def _answer(self, environ, start_response):
        try:
            status, body = self.handle(environ)
        except (OperationalError, InterfaceError) as e:
            log.warning("notification not taken: database unavailable: %s", e)
            status, body = 503, _error_body("unavailable", "the database is unavailable; send it again")
        except Exception:  # an unexpected failure answers 500 (the store retries) and never kills the worker
            log.exception("notification handler failed")
            status, body = 500, _error_body("internal", "internal error")
        data = json.dumps(body).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                   ("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "same-origin")]
        if status == 405:
            headers.append(("Allow", "POST"))
        start_response(f"{status} {HTTPStatus(status).phrase}", headers)
        return [data]

    def handle(self, environ) -> tuple[int, dict]:
        if environ.get("REQUEST_METHOD") != "POST":
            return 405, _error_body("method_not_allowed", "POST a bucket notification here")
        sns_type = environ.get(sns.HEADER)
        header = environ.get("HTTP_AUTHORIZATION", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else ""
        if sns_type is None and not hmac.compare_digest(token.encode(), self.token):
            return 401, _error_body("unauthorized", "wrong or missing webhook token")
        if sns_type is not None:
            return self.read_and_take(environ, sns_type)
        try:
            return self.read_and_take(environ, None)
        except (OperationalError, InterfaceError):
            raise  # 503: the store sends it again once the database is back
        except Exception:  # a bug must not jam the store's queue: logged, counted, left to the sweeper
            log.exception("notification not acted on: the handler failed")
            return self.unprocessable("failed", "the handler failed; the sweeper will pick the upload up")

    def read_and_take(self, environ, sns_type: str | None) -> tuple[int, dict]:
        """Read the (authenticated, or SNS-signed) body and take its events."""
        limit = self.config.webhook.max_body_bytes
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return 400, _error_body("bad_request", "invalid Content-Length")
        if length > limit:
            return 413, _error_body("too_large", "notification body too large")
        # a chunked body has no Content-Length to check first: read at most one byte past the limit
        # (only where the server marks the input as terminated; otherwise a read could block)
        if length:
            body = _read(environ["wsgi.input"], length)
        elif environ.get("wsgi.input_terminated"):
            body = _read(environ["wsgi.input"], limit + 1)
        else:
            body = b""
        if len(body) > limit:
            return 413, _error_body("too_large", "notification body too large")
        if sns_type is not None:
            return self.handle_sns(sns_type, body, environ.get(sns.RAW_HEADER, "").lower() == "true")
        try:
            events = parse_notification(body)
        except NotANotification as e:
            if e.recognised:
                log.warning("notification not acted on: %s", e)
                return self.unprocessable("malformed", str(e))
            return 400, _error_body("not_a_notification", str(e))
        return self.take(events)

    def unprocessable(self, reason: str, message: str) -> tuple[int, dict]:
        """200 for an authenticated notification we cannot act on, counted under `reason`."""
        with dbmod.db.connection_context():
            counters.note_unprocessable(reason)
        return 200, {"events": 0, "outcomes": {reason: 1}, "message": message}

    def handle_sns(self, sns_type: str, body: bytes, raw: bool = False) -> tuple[int, dict]:
        """An Amazon SNS delivery: verified first, then confirmed, ignored or taken as S3 events."""
        try:
            msg = self.sns.open(sns_type, body, raw)
            if sns_type == sns.SUBSCRIBE:
                return 200, {"sns": sns_type, "confirmed": True, "already": not self.sns.confirm(msg)}
        except sns.SnsRefused as e:
            return e.status, _error_body(e.code, str(e))
        if sns_type == sns.UNSUBSCRIBE:
            return 200, {"sns": sns_type}
        if sns.is_test_event(msg["Message"]):
            return 200, {"sns": sns_type, "events": 0, "outcomes": {"s3:TestEvent": 1}}
        try:
            events = parse_notification(msg["Message"].encode())
        except NotANotification as e:
            if e.recognised:
                log.warning("SNS notification not acted on: %s", e)
                return self.unprocessable("malformed", str(e))
            return 400, _error_body("not_a_notification", f"the SNS message holds no S3 event: {e}")
        return self.take(events)

    def take(self, events: list[StoreEvent]) -> tuple[int, dict]:
        """Handle each event; 202 when one of them queued a run, else 200."""
        outcomes: dict[str, int] = {}
        if events:
            with dbmod.db.connection_context():
                for ev in events:
                    try:
                        outcome = self.handle_event(ev)
                    except (OperationalError, InterfaceError):
                        raise
                    except Exception:  # one bad event neither stops the others nor jams the store's queue
                        log.exception("notification for %s/%s not acted on: the handler failed", ev.bucket, ev.key)
                        counters.note_unprocessable("failed")
                        outcome = "failed"
                    outcomes[outcome] = outcomes.get(outcome, 0) + 1
        return (202 if outcomes.get("queued") else 200), {"events": len(events), "outcomes": outcomes}

    def handle_event(self, ev: StoreEvent) -> str:
        if not ev.created or ev.is_directory or ev.bucket != self.config.storage.bucket:
            return "ignored"
        m = ORIGINAL_KEY.match(ev.key)
        if not m:
            return "ignored"
        video = videos.get_upload_state(m.group(1))
        # under a deleted video's prefix any object is a late write (accept_upload removes it)
        if video is None or (video.original_key != ev.key and not intake.is_closed(video)):
            log.info("notification for %s: no upload of this instance has that key", ev.key)
            counters.note_unprocessable("unknown_key")
            return "unknown_key"
        if video.original_key == ev.key:
            counters.note_upload_notification()
        try:
            return intake.accept_upload(self.config, self.store, video)
        except StorageError as e:
            # the sweeper will find this upload later; the store's retry may also come back
            log.warning("notification for %s: store unavailable: %s", ev.key, e)
            return "deferred"


def _error_body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def _read(stream, size: int) -> bytes:
    """Up to `size` bytes of the request body (a stream may return less than asked per read)."""
    chunks, left = [], size
    while left > 0:
        chunk = stream.read(left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


@bp.route("/healthz")
def healthz():
    """200 when the web app, database, store and queue answer; 503 with the failing part otherwise.

    Anyone may ask (load balancers, compose healthchecks), so a failure says which part failed and
    nothing more; the reason (hosts, ports, driver messages) goes to the log."""
    from streamforge.jobs.tasks import huey
    from streamforge.store.db import db
    checks = {}
    for part, check in (("database", lambda: db.execute_sql("SELECT 1")), ("store", lambda: store().ping()),
                        ("queue", lambda: huey.storage.queue_size())):
        try:
            check()
            checks[part] = "ok"
        except Exception as e:  # any failure of a driver or client is a failed check
            log.warning("healthz: %s: %s", part, e)
            checks[part] = "error"
    ok = all(v == "ok" for v in checks.values())
    return {"ok": ok, "checks": checks}, 200 if ok else 503


def init_app(app) -> None:
    """Register /healthz, and the webhook in front of the Flask app."""
    app.register_blueprint(bp)
    app.wsgi_app = StorageHook(app.wsgi_app, app.extensions["streamforge"], app.extensions["streamforge.store"])


handle_errors(bp)
