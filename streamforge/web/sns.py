"""Amazon SNS HTTP(S) deliveries: how AWS S3's bucket notifications reach `POST /hooks/storage`.

AWS S3 cannot call a webhook itself; it publishes to an SNS topic whose HTTPS subscription POSTs here,
with no bearer token. So a message is trusted only once its signature (SignatureVersion 1:
SHA1withRSA, 2: SHA256withRSA, over AWS's canonical string) verifies against the certificate at its
`SigningCertURL`. That URL and a confirmation's `SubscribeURL` must be `https://sns.<region>.amazonaws.com`
(TLS vouches for the certificate) or on a `host:port` of `[webhook] sns_hosts`: nothing is fetched
from anywhere else, and nothing at all before that rule passed. SNS is off (every delivery 403) until
`[webhook] sns_topics` names the topics to accept. Certificates are fetched in the background, a few at
once, each within FETCH_TIMEOUT, and only a couple of requests ever wait for one (CertificateCache).
"""
from __future__ import annotations

import base64
import binascii
import datetime
import json
import logging
import re
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from urllib.parse import urlsplit

import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from streamforge.config import WebhookConfig

log = logging.getLogger("streamforge.sns")

HEADER = "HTTP_X_AMZ_SNS_MESSAGE_TYPE"  # the WSGI name of x-amz-sns-message-type
RAW_HEADER = "HTTP_X_AMZ_SNS_RAWDELIVERY"  # "true" on a subscription with raw message delivery
SUBSCRIBE, NOTIFY, UNSUBSCRIBE = "SubscriptionConfirmation", "Notification", "UnsubscribeConfirmation"
# the fields of the canonical string, in AWS's (byte) order; Subject only when the message has one
_CONFIRM_FIELDS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
SIGNED_FIELDS = {NOTIFY: ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
                 SUBSCRIBE: _CONFIRM_FIELDS, UNSUBSCRIBE: _CONFIRM_FIELDS}
HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}
AWS_HOST = re.compile(r"^sns\.[a-z]{2}(-[a-z]+)+-\d+\.amazonaws\.com$")
MAX_CERT_BYTES = 64 * 1024
FETCH_TIMEOUT = 3  # seconds for a whole certificate fetch or confirmation GET (AWS answers in well under one)
FETCH_WORKERS = 4  # certificate fetches running at once, per process
MAX_PENDING = 16  # distinct certificate URLs being fetched or queued at once; more: 503 at once
MAX_WAITING = 2  # requests of one process waiting for a fetch; more: 503 at once (SNS sends again)
FAILURE_SECONDS = 30  # a URL whose fetch failed is not fetched again for this long


class SnsRefused(Exception):
    """An SNS message that is not taken: the HTTP status, an error code and a reason."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code = status, code


def trusted_url(url: object, sns_hosts: list[str]) -> str:
    """`url` when it may be fetched (https on SNS's own hosts, or http(s) on [webhook] sns_hosts);
    SnsRefused(400) otherwise."""
    try:
        parts = urlsplit(url) if isinstance(url, str) else None
        port = parts.port if parts else None
    except ValueError:
        parts = None
    if parts is None or parts.username is not None or parts.password is not None or not parts.hostname:
        raise SnsRefused(400, "untrusted_url", f"{str(url)[:200]!r} is not a URL StreamForge fetches")
    host = parts.hostname.lower()
    if parts.scheme == "https" and AWS_HOST.match(host) and port in (None, 443):
        return url
    if parts.scheme in ("http", "https"):
        hostport = f"{host}:{port or (443 if parts.scheme == 'https' else 80)}"
        if hostport in {h.lower() for h in sns_hosts}:
            return url
    raise SnsRefused(400, "untrusted_url", f"{url[:200]!r} is neither https://sns.<region>.amazonaws.com "
                                           f"nor on a host of [webhook] sns_hosts; it was not fetched")


def parse_message(header_type: str, body: bytes) -> dict:
    """The SNS message of a delivery, its fields checked for shape (not yet for its signature)."""
    if header_type not in SIGNED_FIELDS:
        raise SnsRefused(400, "not_an_sns_message", f"unknown x-amz-sns-message-type {header_type[:60]!r}")
    try:
        msg = json.loads(body)
    except (ValueError, RecursionError, UnicodeDecodeError):
        raise SnsRefused(400, "not_an_sns_message", "the body is not JSON") from None
    if not isinstance(msg, dict):
        raise SnsRefused(400, "not_an_sns_message", "the body is not a JSON object")
    if msg.get("Type") != header_type:
        raise SnsRefused(400, "not_an_sns_message",
                         f"the message's Type {str(msg.get('Type'))[:60]!r} is not its header's {header_type!r}")
    for name in SIGNED_FIELDS[header_type]:
        if name == "Subject" and msg.get(name) is None:
            continue
        if not isinstance(msg.get(name), str):
            raise SnsRefused(400, "not_an_sns_message", f"a {header_type} message needs a string {name}")
    return msg


def canonical_string(msg: dict) -> bytes:
    """What SNS signed: each field's name and value, one per line, in AWS's order."""
    return "".join(f"{name}\n{msg[name]}\n" for name in SIGNED_FIELDS[msg["Type"]]
                   if msg.get(name) is not None).encode()


class CertificateCache:
    """Signing certificates by URL, each fetched once, concurrently and bounded (thread-safe).

    A request never waits behind another URL's fetch: each URL has its own fetch (requests for it
    share the one in flight), at most FETCH_WORKERS run at once, at most MAX_WAITING requests of this
    process wait for one (the rest answer 503 at once, so the web's threads stay free for everything
    else), and a URL that failed is not fetched again for FAILURE_SECONDS."""

    def __init__(self, size: int = 32):
        self.size = size
        self.certs: OrderedDict[str, x509.Certificate] = OrderedDict()
        self.pending: dict[str, Future] = {}
        self.failed: dict[str, tuple[float, SnsRefused]] = {}
        self.lock = threading.Lock()
        self.waiting = threading.BoundedSemaphore(MAX_WAITING)
        self.pool = ThreadPoolExecutor(max_workers=FETCH_WORKERS, thread_name_prefix="sns-cert")

    def get(self, url: str) -> x509.Certificate:
        """The certificate at `url` (already checked against the host rule); SnsRefused when it cannot be had."""
        with self.lock:
            cert = self.certs.get(url)
            if cert is not None:
                return cert
            failed = self.failed.get(url)
            if failed and time.monotonic() - failed[0] < FAILURE_SECONDS:
                raise failed[1]
            future = self.pending.get(url)
            if future is None:
                if len(self.pending) >= MAX_PENDING:
                    raise _busy()
                future = self.pending[url] = self.pool.submit(self._fetch, url)
        if not self.waiting.acquire(blocking=False):
            raise _busy()
        try:
            return future.result(timeout=FETCH_TIMEOUT + 1)
        except FutureTimeout:
            raise _busy() from None
        finally:
            self.waiting.release()

    def _fetch(self, url: str) -> x509.Certificate:
        """Pool thread: fetch, then cache the certificate (or the refusal, for a while)."""
        try:
            cert = fetch_certificate(url)
        except Exception as e:  # noqa: BLE001 - whatever went wrong, the waiters get an SnsRefused
            refused = e if isinstance(e, SnsRefused) else _busy()
            with self.lock:
                self.failed[url] = (time.monotonic(), refused)
                while len(self.failed) > self.size:
                    self.failed.pop(next(iter(self.failed)))
            raise refused from None
        else:
            with self.lock:
                self.certs[url] = cert
                self.failed.pop(url, None)
                while len(self.certs) > self.size:
                    self.certs.popitem(last=False)
            return cert
        finally:
            with self.lock:
                self.pending.pop(url, None)


def _busy() -> SnsRefused:
    return SnsRefused(503, "certificate_unavailable", "the signing certificate is being fetched or could not "
                                                      "be; send the message again")


def fetch_certificate(url: str) -> x509.Certificate:
    """Download and parse a PEM certificate within FETCH_TIMEOUT seconds in all; SnsRefused when it cannot be had."""
    deadline = time.monotonic() + FETCH_TIMEOUT
    try:
        with requests.get(url, timeout=FETCH_TIMEOUT, allow_redirects=False, stream=True) as resp:
            data = b""
            for chunk in resp.iter_content(4096):  # a host that drips bytes is cut off at the deadline
                data += chunk
                if len(data) > MAX_CERT_BYTES or time.monotonic() > deadline:
                    break
    except requests.RequestException as e:
        log.warning("SNS signing certificate %s: %s", url, e)
        raise SnsRefused(503, "certificate_unavailable", "the signing certificate could not be fetched; "
                                                         "send the message again") from None
    if time.monotonic() > deadline:
        log.warning("SNS signing certificate %s: not fetched within %s s", url, FETCH_TIMEOUT)
        raise SnsRefused(503, "certificate_unavailable", "the signing certificate's host is too slow; "
                                                         "send the message again")
    if resp.status_code >= 500:
        raise SnsRefused(503, "certificate_unavailable", f"the signing certificate's host answered "
                                                         f"{resp.status_code}; send the message again")
    if resp.status_code != 200 or len(data) > MAX_CERT_BYTES:
        raise SnsRefused(403, "bad_signature", f"no signing certificate at SigningCertURL ({resp.status_code})")
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise SnsRefused(403, "bad_signature", "SigningCertURL does not hold a PEM certificate") from None


def verify_signature(msg: dict, cert: x509.Certificate, now: datetime.datetime | None = None) -> None:
    """Check the message's Signature with the certificate's RSA key; SnsRefused(403) when it fails."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise SnsRefused(403, "bad_signature", "the signing certificate has expired or is not yet valid")
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise SnsRefused(403, "bad_signature", "the signing certificate holds no RSA key")
    try:
        signature = base64.b64decode(msg["Signature"], validate=True)
        key.verify(signature, canonical_string(msg), padding.PKCS1v15(), HASHES[msg["SignatureVersion"]]())
    except (InvalidSignature, binascii.Error, ValueError):
        raise SnsRefused(403, "bad_signature", "the message's signature does not verify") from None


class SnsEndpoint:
    """The SNS side of the webhook: opens verified messages and confirms subscriptions."""

    def __init__(self, config: WebhookConfig):
        self.hosts, self.topics = list(config.sns_hosts), set(config.sns_topics)
        self.certs = CertificateCache()
        self.confirmed: OrderedDict[str, None] = OrderedDict()  # MessageIds of confirmations done
        self.lock = threading.Lock()
        self.disabled_logged = -1e9

    def open(self, header_type: str, body: bytes, raw: bool = False) -> dict:
        """The message of a delivery once its URLs, topic and signature passed; SnsRefused otherwise."""
        if not self.topics:
            self._log_disabled()
            raise SnsRefused(403, "sns_disabled", "Amazon SNS deliveries are off here: [webhook] sns_topics "
                                                  "names no topic")
        if raw:
            raise SnsRefused(403, "bad_signature", "raw message delivery carries no signature: turn "
                                                   "RawMessageDelivery off on the subscription")
        msg = parse_message(header_type, body)
        if not isinstance(msg.get("Signature"), str) or msg.get("SignatureVersion") not in HASHES:
            raise SnsRefused(403, "bad_signature", "the message carries no Signature of SignatureVersion 1 or 2")
        cert_url = trusted_url(msg.get("SigningCertURL"), self.hosts)
        if header_type == SUBSCRIBE:
            trusted_url(msg["SubscribeURL"], self.hosts)
        if msg["TopicArn"] not in self.topics:
            raise SnsRefused(403, "unknown_topic", f"topic {msg['TopicArn'][:200]!r} is not in [webhook] sns_topics")
        verify_signature(msg, self.certs.get(cert_url))
        return msg

    def _log_disabled(self) -> None:
        """Say why an SNS delivery was refused (at most once a minute: anyone can send them)."""
        now = time.monotonic()
        with self.lock:
            if now - self.disabled_logged < 60:
                return
            self.disabled_logged = now
        log.warning("an Amazon SNS delivery was refused: SNS is off until [webhook] sns_topics names the topics "
                    "to accept (and sns_hosts any host besides sns.<region>.amazonaws.com)")

    def confirm(self, msg: dict) -> bool:
        """Confirm a verified subscription by one GET of its SubscribeURL; False when it was already."""
        with self.lock:
            if msg["MessageId"] in self.confirmed:
                return False
        try:
            resp = requests.get(msg["SubscribeURL"], timeout=FETCH_TIMEOUT, allow_redirects=False)
        except requests.RequestException as e:
            log.warning("SNS subscription to %s not confirmed: %s", msg["TopicArn"], e)
            raise SnsRefused(502, "confirm_failed", "the SubscribeURL could not be reached") from None
        if not 200 <= resp.status_code < 300:
            raise SnsRefused(502, "confirm_failed", f"the SubscribeURL answered {resp.status_code}")
        with self.lock:
            self.confirmed[msg["MessageId"]] = None
            while len(self.confirmed) > 256:
                self.confirmed.popitem(last=False)
        log.info("SNS subscription to %s confirmed", msg["TopicArn"])
        return True


def is_test_event(message: str) -> bool:
    """True for the `s3:TestEvent` S3 publishes when a bucket notification is set up."""
    try:
        data = json.loads(message)
    except (ValueError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("Event") == "s3:TestEvent"
