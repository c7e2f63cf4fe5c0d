"""AWS S3 notifications through Amazon SNS on `POST /hooks/storage`: signatures (v1 and v2) against a
certificate made here and served by a local server, the host rule, topics, confirmations, replays, and
an SNS Notification wrapping an AWS S3 event for an object really uploaded to SeaweedFS."""
from __future__ import annotations

import base64
import datetime
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote_plus

import pytest
import requests
from conftest import (
    MEDIA,
    LiveServer,
    drain_queue,
    free_port,
    fresh_database_url,
    port_open,
    queued_video_ids,
    require,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from streamforge.commands.local_serve import wait_healthy
from streamforge.store import db as dbmod
from streamforge.store import videos
from streamforge.web import sns

TOPIC = "arn:aws:sns:eu-west-1:123456789012:streamforge-uploads"
OTHER_TOPIC = "arn:aws:sns:eu-west-1:123456789012:someone-else"
CLIP = MEDIA / "bigbuckbunny-720p-5s.mp4"
HASH = {"1": hashes.SHA1, "2": hashes.SHA256}


def make_cert(key, days_from: float, days_to: float, signer=None) -> bytes:
    """A self-signed PEM certificate for `key`, valid from/to these many days from now."""
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.test.invalid")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + datetime.timedelta(days=days_from))
            .not_valid_after(now + datetime.timedelta(days=days_to))
            .sign(signer or key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


class Server:
    """A local HTTP server answering fixed paths (a certificate, a SubscribeURL) and counting its hits."""

    def __init__(self):
        self.pages: dict[str, tuple[int, bytes]] = {}
        self.hits: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                outer.hits.append(self.path)
                status, body = outer.pages.get(self.path.split("?")[0], (404, b"not here"))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.hostport = f"127.0.0.1:{self.server.server_port}"
        self.url = f"http://{self.hostport}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self, path: str) -> int:
        return sum(1 for p in self.hits if p.split("?")[0] == path)


@pytest.fixture(scope="module")
def keys():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {"key": key, "other": other, "cert": make_cert(key, -1, 30), "expired": make_cert(key, -30, -1),
            "future": make_cert(key, 2, 30)}


@pytest.fixture
def servers(keys):
    """The trusted server (in [webhook] sns_hosts) and an untrusted one that must never be hit."""
    trusted, evil = Server(), Server()
    trusted.pages.update({"/SimpleNotificationService-test.pem": (200, keys["cert"]),
                          "/expired.pem": (200, keys["expired"]), "/future.pem": (200, keys["future"]),
                          "/garbage.pem": (200, b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"),
                          "/confirm": (200, b"<ConfirmSubscriptionResponse/>")})
    evil.pages.update({"/SimpleNotificationService-test.pem": (200, keys["cert"]), "/confirm": (200, b"ok")})
    yield trusted, evil
    trusted.server.shutdown()
    evil.server.shutdown()


def sign(msg: dict, key, version: str = "2") -> dict:
    """The message with SignatureVersion and Signature as SNS computes them."""
    msg = dict(msg, SignatureVersion=version)
    canonical = "".join(f"{k}\n{msg[k]}\n" for k in sns.SIGNED_FIELDS[msg["Type"]] if k in msg).encode()
    msg["Signature"] = base64.b64encode(key.sign(canonical, padding.PKCS1v15(), HASH[version]())).decode()
    return msg


def message(server, kind: str, topic: str = TOPIC, cert: str = "/SimpleNotificationService-test.pem", **fields):
    """An unsigned SNS message of this type, its URLs on `server`."""
    msg = {"Type": kind, "MessageId": str(uuid.uuid4()), "TopicArn": topic,
           "Timestamp": "2026-12-01T10:00:00.000Z", "SigningCertURL": server.url + cert}
    if kind == sns.NOTIFY:
        msg.update(Message="{}", UnsubscribeURL=server.url + "/unsubscribe")
    else:
        token = uuid.uuid4().hex * 2
        msg.update(Token=token, Message=f"You have chosen to subscribe to the topic {topic}.\nTo confirm the "
                                        f"subscription, visit the SubscribeURL included in this message.",
                   SubscribeURL=f"{server.url}/confirm?Action=ConfirmSubscription&TopicArn={topic}&Token={token}")
    msg.update(fields)
    return msg


def aws_s3_event(bucket: str, key: str, size: int, etag: str = "d41d8cd98f00b204e9800998ecf8427e") -> str:
    """An S3 event as AWS S3 publishes it to SNS (eventName without the 's3:' prefix; key URL-encoded)."""
    return json.dumps({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "eu-west-1",
        "eventTime": "2026-12-01T10:00:00.000Z", "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"}, "requestParameters": {"sourceIPAddress": "192.0.2.1"},
        "responseElements": {"x-amz-request-id": "C3D13FE58DE4C810", "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD"},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "streamforge-originals",
               "bucket": {"name": bucket, "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                          "arn": f"arn:aws:s3:::{bucket}"},
               "object": {"key": quote_plus(key, safe="/"), "size": size, "eTag": etag,
                          "sequencer": "0055AED6DCD90281E5"}}}]})


TEST_EVENT = json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-12-01T10:00:00.000Z",
                         "Bucket": "streamforge", "RequestId": "5582815E1AEA5ADF", "HostId": "8cLeGAmw098X5c"})


def deliver(client, msg: dict, header: str | None = None):
    """POST a message the way SNS does: its type in x-amz-sns-message-type, text/plain, no token."""
    return client.post("/hooks/storage", data=json.dumps(msg), content_type="text/plain; charset=UTF-8",
                       headers={"x-amz-sns-message-type": header or msg["Type"],
                                "x-amz-sns-message-id": msg.get("MessageId", ""),
                                "x-amz-sns-topic-arn": msg.get("TopicArn", ""), "User-Agent": "Amazon Simple "
                                "Notification Service Agent"})


@pytest.fixture
def sns_app(seaweed, make_app, tmp_path, servers):
    trusted, _ = servers
    cfg = seaweed.make_config(tmp_path, env={"STREAMFORGE_WEBHOOK_SNS_HOSTS": trusted.hostport,
                                             "STREAMFORGE_WEBHOOK_SNS_TOPICS": TOPIC,
                                             "STREAMFORGE_PIPELINE_HEIGHTS": "240"})
    app = make_app(cfg)
    app.cfg = cfg
    return app


# ---------------------------------------------------------------------------------------------
# The pieces


def test_canonical_strings_are_awss():
    note = {"Type": "Notification", "MessageId": "m", "TopicArn": "t", "Message": "a\nb", "Timestamp": "ts",
            "Subject": "s", "SignatureVersion": "1", "Signature": "x", "SigningCertURL": "u", "UnsubscribeURL": "v"}
    assert sns.canonical_string(note) == b"Message\na\nb\nMessageId\nm\nSubject\ns\nTimestamp\nts\nTopicArn\nt\nType\nNotification\n"
    del note["Subject"]
    assert sns.canonical_string(note) == b"Message\na\nb\nMessageId\nm\nTimestamp\nts\nTopicArn\nt\nType\nNotification\n"
    conf = {"Type": "SubscriptionConfirmation", "MessageId": "m", "Token": "k", "TopicArn": "t", "Message": "hi",
            "SubscribeURL": "https://x", "Timestamp": "ts"}
    assert sns.canonical_string(conf) == (b"Message\nhi\nMessageId\nm\nSubscribeURL\nhttps://x\nTimestamp\nts\n"
                                          b"Token\nk\nTopicArn\nt\nType\nSubscriptionConfirmation\n")


@pytest.mark.parametrize("url", [
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
    "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=1",
    "https://sns.us-gov-west-1.amazonaws.com:443/x.pem",
    "http://127.0.0.1:8123/cert.pem", "https://127.0.0.1:8123/cert.pem", "http://LOCALHOST:80/c",
])
def test_trusted_urls(url):
    assert sns.trusted_url(url, ["127.0.0.1:8123", "localhost:80"]) == url


@pytest.mark.parametrize("url", [
    "http://sns.us-east-1.amazonaws.com/cert.pem",  # SNS's own hosts only over https
    "https://sns.us-east-1.amazonaws.com:8443/cert.pem",
    "https://sns.us-east-1.amazonaws.com.evil.example/cert.pem",
    "https://evil.example/sns.us-east-1.amazonaws.com/cert.pem",
    "https://sns.amazonaws.com/cert.pem", "https://s3.us-east-1.amazonaws.com/cert.pem",
    "https://sns.us-east-1.amazonaws.com@evil.example/cert.pem",
    "http://127.0.0.1:8123@evil.example:8123/cert.pem", "http://127.0.0.1:9999/cert.pem",
    "ftp://127.0.0.1:8123/cert.pem", "file:///etc/passwd", "//127.0.0.1:8123/x", "", None, 42,
    "http://127.0.0.1:notaport/x",
])
def test_untrusted_urls(url):
    with pytest.raises(sns.SnsRefused) as e:
        sns.trusted_url(url, ["127.0.0.1:8123"])
    assert e.value.status == 400


def test_a_cached_certificate_is_checked_for_its_validity_at_every_use(keys):
    cert = x509.load_pem_x509_certificate(keys["cert"])
    msg = sign({"Type": sns.NOTIFY, "MessageId": "m", "TopicArn": TOPIC, "Message": "{}",
                "Timestamp": "2026-12-01T10:00:00.000Z"}, keys["key"], "2")
    sns.verify_signature(msg, cert)
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=31)
    with pytest.raises(sns.SnsRefused) as e:
        sns.verify_signature(msg, cert, now=later)
    assert e.value.status == 403 and "expired" in str(e.value)


@pytest.mark.parametrize("env", [{"STREAMFORGE_WEBHOOK_SNS_HOSTS": "127.0.0.1"},
                                 {"STREAMFORGE_WEBHOOK_SNS_HOSTS": "[\"host:port\"]"},
                                 {"STREAMFORGE_WEBHOOK_SNS_TOPICS": "streamforge-uploads"}])
def test_bad_sns_settings_are_config_errors(env, tmp_path):
    from streamforge.config import load_config
    from streamforge.errors import ConfigError
    with pytest.raises(ConfigError, match=r"\[webhook\] sns_"):
        load_config(env=env, data_dir=tmp_path)


# ---------------------------------------------------------------------------------------------
# Subscription confirmations


@pytest.mark.parametrize("version", ["1", "2"])
def test_subscription_is_confirmed_by_one_get(sns_app, servers, keys, version):
    trusted, evil = servers
    client = sns_app.test_client()
    msg = sign(message(trusted, sns.SUBSCRIBE), keys["key"], version)
    r = deliver(client, msg)
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["confirmed"] is True
    assert trusted.count("/confirm") == 1 and trusted.count("/SimpleNotificationService-test.pem") == 1
    assert any(f"Token={msg['Token']}" in p for p in trusted.hits)
    # SNS sends it again (a replay): no second GET, no second certificate fetch
    r = deliver(client, msg)
    assert r.status_code == 200 and r.get_json()["already"] is True
    assert trusted.count("/confirm") == 1 and trusted.count("/SimpleNotificationService-test.pem") == 1
    assert evil.hits == []


def test_subscribe_url_on_another_host_is_refused_and_never_fetched(sns_app, servers, keys):
    trusted, evil = servers
    client = sns_app.test_client()
    for url in (evil.url + "/confirm", "http://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription",
                f"http://{trusted.hostport}@{evil.hostport}/confirm"):
        msg = sign(message(trusted, sns.SUBSCRIBE, SubscribeURL=url), keys["key"])
        r = deliver(client, msg)
        assert r.status_code == 400 and r.get_json()["error"]["code"] == "untrusted_url", url
    assert evil.hits == [] and trusted.hits == []  # not even the certificate: the host rule comes first


def test_signing_cert_on_another_host_is_refused_and_never_fetched(sns_app, servers, keys):
    trusted, evil = servers
    client = sns_app.test_client()
    for kind in (sns.SUBSCRIBE, sns.NOTIFY, sns.UNSUBSCRIBE):
        msg = message(trusted, kind)
        msg["SigningCertURL"] = evil.url + "/SimpleNotificationService-test.pem"
        r = deliver(client, sign(msg, keys["key"]))
        assert r.status_code == 400 and r.get_json()["error"]["code"] == "untrusted_url"
    msg = message(trusted, sns.NOTIFY)
    msg["SigningCertURL"] = "http://sns.eu-west-1.amazonaws.com/SimpleNotificationService-x.pem"
    assert deliver(client, sign(msg, keys["key"])).status_code == 400
    assert evil.hits == [] and trusted.hits == []


def test_another_topic_is_refused(sns_app, servers, keys):
    trusted, _ = servers
    client = sns_app.test_client()
    for kind in (sns.SUBSCRIBE, sns.NOTIFY):
        r = deliver(client, sign(message(trusted, kind, topic=OTHER_TOPIC), keys["key"]))
        assert r.status_code == 403 and r.get_json()["error"]["code"] == "unknown_topic"
    assert trusted.count("/confirm") == 0


def test_unsubscribe_confirmation_does_nothing(sns_app, servers, keys):
    trusted, _ = servers
    r = deliver(sns_app.test_client(), sign(message(trusted, sns.UNSUBSCRIBE), keys["key"], "1"))
    assert r.status_code == 200 and r.get_json() == {"sns": "UnsubscribeConfirmation"}
    assert trusted.count("/confirm") == 0


def test_a_failing_subscribe_url_is_a_502_and_is_tried_again(sns_app, servers, keys):
    trusted, _ = servers
    client = sns_app.test_client()
    trusted.pages["/confirm"] = (500, b"oops")
    msg = sign(message(trusted, sns.SUBSCRIBE), keys["key"])
    assert deliver(client, msg).status_code == 502
    trusted.pages["/confirm"] = (200, b"<ok/>")
    assert deliver(client, msg).status_code == 200
    assert trusted.count("/confirm") == 2


# ---------------------------------------------------------------------------------------------
# Signatures


def tampered_cases(trusted, keys):
    key = keys["key"]
    good = sign(message(trusted, sns.NOTIFY, Message=TEST_EVENT), key)
    yield "message changed", dict(good, Message=TEST_EVENT.replace("Amazon S3", "Amazon S4"))
    yield "timestamp changed", dict(good, Timestamp="2026-12-02T10:00:00.000Z")
    yield "type changed", dict(sign(message(trusted, sns.SUBSCRIBE), key), Type=sns.UNSUBSCRIBE)
    yield "subject added", dict(good, Subject="Amazon S3 Notification")
    yield "no signature", {k: v for k, v in good.items() if k != "Signature"}
    yield "empty signature", dict(good, Signature="")
    yield "not base64", dict(good, Signature="!!!" + good["Signature"][3:])
    yield "signature version 3", dict(good, SignatureVersion="3")
    yield "no signature version", {k: v for k, v in good.items() if k != "SignatureVersion"}
    yield "v1 signature sent as v2", dict(sign(message(trusted, sns.NOTIFY, Message=TEST_EVENT), key, "1"),
                                          SignatureVersion="2")
    yield "another key", sign(message(trusted, sns.NOTIFY, Message=TEST_EVENT), keys["other"])
    yield "expired certificate", sign(message(trusted, sns.NOTIFY, cert="/expired.pem", Message=TEST_EVENT), key)
    yield "certificate not yet valid", sign(message(trusted, sns.NOTIFY, cert="/future.pem", Message=TEST_EVENT), key)
    yield "certificate not PEM", sign(message(trusted, sns.NOTIFY, cert="/garbage.pem", Message=TEST_EVENT), key)
    yield "no certificate there", sign(message(trusted, sns.NOTIFY, cert="/missing.pem", Message=TEST_EVENT), key)


def test_bad_signatures_are_403_and_change_nothing(sns_app, servers, keys, uploaded_object):
    trusted, _ = servers
    client = sns_app.test_client()
    vid, key, size = uploaded_object(sns_app)
    for name, msg in tampered_cases(trusted, keys):
        if msg["Type"] == sns.NOTIFY and "Amazon S3" in msg["Message"]:
            # the same tampering on a real upload's event: nothing may be queued
            msg = dict(msg, Message=aws_s3_event(sns_app.cfg.storage.bucket, key, size))
        r = deliver(client, msg)
        assert r.status_code == 403, (name, r.status_code, r.get_json())
        assert r.get_json()["error"]["code"] == "bad_signature", name
    assert trusted.count("/confirm") == 0
    assert queued_video_ids() == []
    with dbmod.db.connection_context():
        assert videos.get_video_by_id(vid).upload_status == "UPLOADING"


@pytest.mark.parametrize("version", ["1", "2"])
def test_test_event_is_ignored_and_the_certificate_fetched_once(sns_app, servers, keys, version):
    trusted, _ = servers
    client = sns_app.test_client()
    for _ in range(3):
        r = deliver(client, sign(message(trusted, sns.NOTIFY, Message=TEST_EVENT, Subject="Amazon S3 Notification"),
                                 keys["key"], version))
        assert r.status_code == 200 and r.get_json()["outcomes"] == {"s3:TestEvent": 1}, r.get_json()
    assert trusted.count("/SimpleNotificationService-test.pem") == 1
    assert queued_video_ids() == []


# ---------------------------------------------------------------------------------------------
# Bad input and the token


def test_bad_input_is_a_clear_400(sns_app, servers, keys):
    trusted, _ = servers
    client = sns_app.test_client()
    good = sign(message(trusted, sns.NOTIFY, Message=TEST_EVENT), keys["key"])
    cases = [
        ("not json", b"{nope", sns.NOTIFY),
        ("a list", b"[1, 2]", sns.NOTIFY),
        ("unknown type", json.dumps(dict(good, Type="Surprise")).encode(), "Surprise"),
        ("header and Type differ", json.dumps(good).encode(), sns.SUBSCRIBE),
        ("no MessageId", json.dumps({k: v for k, v in good.items() if k != "MessageId"}).encode(), sns.NOTIFY),
        ("Message not a string", json.dumps(dict(good, Message={"Records": []})).encode(), sns.NOTIFY),
        ("no SubscribeURL", json.dumps({k: v for k, v in sign(message(trusted, sns.SUBSCRIBE), keys["key"]).items()
                                        if k != "SubscribeURL"}).encode(), sns.SUBSCRIBE),
    ]
    for name, body, header in cases:
        r = client.post("/hooks/storage", data=body, content_type="text/plain",
                        headers={"x-amz-sns-message-type": header})
        assert r.status_code == 400, (name, r.status_code)
        assert r.get_json()["error"]["code"] == "not_an_sns_message", name
    # a verified Notification whose Message is no S3 event
    r = deliver(client, sign(message(trusted, sns.NOTIFY, Message="hello"), keys["key"]))
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "not_a_notification"
    assert trusted.count("/confirm") == 0 and queued_video_ids() == []


def test_only_sns_deliveries_go_without_the_token(sns_app, seaweed):
    client = sns_app.test_client()
    body = aws_s3_event(sns_app.cfg.storage.bucket, "originals/abcdefgh12/a.mp4", 3)
    # an S3 body without the token (SNS's raw message delivery, or anyone): still 401
    r = client.post("/hooks/storage", data=body, content_type="application/json")
    assert r.status_code == 401
    # the same body claiming to be SNS: it is no SNS message (and carries no signature)
    r = client.post("/hooks/storage", data=body, headers={"x-amz-sns-message-type": sns.NOTIFY})
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "not_an_sns_message"
    # SNS's raw message delivery: the S3 body alone, unsigned
    r = client.post("/hooks/storage", data=body, headers={"x-amz-sns-message-type": sns.NOTIFY,
                                                          "x-amz-sns-rawdelivery": "true"})
    assert r.status_code == 403 and "RawMessageDelivery" in r.get_json()["error"]["message"]
    r = client.post("/hooks/storage", data=body, content_type="application/json",
                    headers={"Authorization": f"Bearer {seaweed.webhook_token}"})
    assert r.status_code == 200  # with the token the MinIO/AWS path takes it (no such video: ignored)


def test_no_sns_hosts_means_only_amazons(seaweed, make_app, tmp_path, servers, keys):
    trusted, _ = servers
    client = make_app(seaweed.make_config(tmp_path, env={"STREAMFORGE_WEBHOOK_SNS_TOPICS": TOPIC})).test_client()
    r = deliver(client, sign(message(trusted, sns.SUBSCRIBE), keys["key"]))
    assert r.status_code == 400 and trusted.hits == []


def test_sns_is_off_until_sns_topics_names_a_topic(seaweed, make_app, tmp_path, servers, keys, caplog):
    """Issue 20, hole 8: with sns_topics empty any AWS account's topic was accepted."""
    trusted, _ = servers
    cfg = seaweed.make_config(tmp_path, env={"STREAMFORGE_WEBHOOK_SNS_HOSTS": trusted.hostport})
    client = make_app(cfg).test_client()
    for kind in (sns.SUBSCRIBE, sns.NOTIFY, sns.UNSUBSCRIBE):
        r = deliver(client, sign(message(trusted, kind, topic=OTHER_TOPIC), keys["key"]))
        assert r.status_code == 403 and r.get_json()["error"]["code"] == "sns_disabled", kind
        assert "sns_topics" in r.get_json()["error"]["message"]
    assert trusted.hits == []  # nothing fetched, nothing confirmed
    assert any("sns_topics" in rec.getMessage() for rec in caplog.records if rec.name == "streamforge.sns")


# ---------------------------------------------------------------------------------------------
# End to end: a real upload in SeaweedFS, an SNS Notification wrapping AWS's S3 event for it


@pytest.fixture
def uploaded_object(seaweed):
    """Create a video through the API and PUT its bytes to the store; (video id, key, size)."""
    def make(app, data: bytes = b"0123456789", filename: str = "my clip.mp4"):
        client = app.test_client()
        with dbmod.db.connection_context():
            _, tok = videos.create_token(videos.get_or_create_user("sns@example.com"))
        r = client.post("/api/videos", json={"title": "sns", "filename": filename, "size": len(data),
                                             "content_type": "video/mp4"},
                        headers={"Authorization": f"Bearer {tok}"}).get_json()
        requests.put(r["upload"]["url"], headers=r["upload"]["headers"], data=data, timeout=30).raise_for_status()
        app.token = tok
        return r["video"]["id"], r["video"]["original"]["key"], len(data)
    return make


def run_end_to_end(app, servers, keys, uploaded_object):
    """Upload, deliver the SNS Notification over HTTP (twice), and process the video to COMPLETED."""
    trusted, _ = servers
    data = CLIP.read_bytes()
    vid, key, size = uploaded_object(app, data)
    assert " " in key  # AWS URL-encodes it ('+' for the space): the event must still find the video
    msg = sign(message(trusted, sns.NOTIFY, Message=aws_s3_event(app.cfg.storage.bucket, key, size),
                       Subject="Amazon S3 Notification"), keys["key"], "1")
    port = free_port()
    with LiveServer(app, port=port) as live:
        post = lambda m: requests.post(f"{live.url}/hooks/storage", data=json.dumps(m), timeout=30,  # noqa: E731
                                       headers={"x-amz-sns-message-type": m["Type"],
                                                "Content-Type": "text/plain; charset=UTF-8"})
        r = post(msg)
        assert r.status_code == 202, r.text
        assert r.json()["outcomes"] == {"queued": 1}
        # SNS retries and duplicates: the same message again, and the same event re-signed with v2
        assert post(msg).status_code == 200
        again = sign(message(trusted, sns.NOTIFY, Message=msg["Message"]), keys["key"], "2")
        r = post(again)
        assert r.status_code == 200 and r.json()["outcomes"] == {"already": 1}
        assert queued_video_ids() == [vid]
        assert drain_queue() == ["completed"]
        v = requests.get(f"{live.url}/api/videos/{vid}", headers={"Authorization": f"Bearer {app.token}"}).json()
    assert v["status"] == "COMPLETED", v["error_message"]
    assert v["upload_status"] == "UPLOADED" and v["master_playlist_url"]
    assert queued_video_ids() == []
    assert trusted.count("/SimpleNotificationService-test.pem") == 1


def test_sns_notification_processes_a_real_upload(sns_app, servers, keys, uploaded_object):
    run_end_to_end(sns_app, servers, keys, uploaded_object)


@pytest.fixture
def postgres_redis(seaweed, make_app, tmp_path, servers):
    """The app on PostgreSQL (a fresh database) and Redis db 7, as a production deployment runs."""
    import subprocess
    require(port_open(6379), "Redis is not running on 127.0.0.1:6379")
    trusted, _ = servers
    with fresh_database_url("postgresql", tmp_path, "sns") as url:
        subprocess.run(["redis-cli", "-n", "7", "FLUSHDB"], check=True, capture_output=True)
        cfg = seaweed.make_config(tmp_path, env={
            "STREAMFORGE_WEBHOOK_SNS_HOSTS": trusted.hostport, "STREAMFORGE_WEBHOOK_SNS_TOPICS": TOPIC,
            "STREAMFORGE_PIPELINE_HEIGHTS": "240", "STREAMFORGE_QUEUE_URL": "redis://127.0.0.1:6379/7",
            "STREAMFORGE_DATABASE_URL": url})
        app = make_app(cfg)
        app.cfg = cfg
        try:
            yield app
        finally:
            subprocess.run(["redis-cli", "-n", "7", "FLUSHDB"], capture_output=True)


def test_sns_notification_on_postgres_and_redis(postgres_redis, servers, keys, uploaded_object):
    run_end_to_end(postgres_redis, servers, keys, uploaded_object)


# ---------------------------------------------------------------------------------------------
# A slow certificate host against the real web server (gunicorn, a few threads)


class Tarpit:
    """A TCP server that accepts connections and never answers (a slow SigningCertURL host)."""

    def __init__(self):
        import socket
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.hostport = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: list = []
        self.open = self.most_open = 0  # connections the client has not closed yet; the most at once
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.held.append(conn)
                self.open += 1
                self.most_open = max(self.most_open, self.open)
            threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    def _hold(self, conn):
        try:
            while conn.recv(4096):  # read the request, answer nothing, until the client gives up
                pass
        except OSError:
            pass
        with self.lock:
            self.open -= 1

    def close(self):
        self.sock.close()
        for conn in self.held:
            conn.close()


def test_a_slow_certificate_host_holds_back_nothing_else(seaweed, tmp_path, keys):
    """Issue 20, hole 8: certificate fetches ran one at a time under one lock from unauthenticated
    requests, 10 s each: 12 of them to a slow host held every web thread, and /healthz, for a minute."""
    import os
    import subprocess
    import sys
    import time
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path
    tarpit, port = Tarpit(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFORGE_")}
    env.update({"STREAMFORGE_STORAGE_ENDPOINT": seaweed.endpoint, "STREAMFORGE_STORAGE_ACCESS_KEY": seaweed.access_key,
                "STREAMFORGE_STORAGE_SECRET_KEY": seaweed.secret_key, "STREAMFORGE_STORAGE_BUCKET": seaweed.bucket,
                "STREAMFORGE_WEBHOOK_TOKEN": seaweed.webhook_token, "STREAMFORGE_SERVER_SECRET_KEY": "sns-" + "x" * 32,
                "STREAMFORGE_SERVER_WORKERS": "1", "STREAMFORGE_SERVER_THREADS": "4",
                "STREAMFORGE_WEBHOOK_SNS_HOSTS": tarpit.hostport, "STREAMFORGE_WEBHOOK_SNS_TOPICS": TOPIC})
    root = Path(__file__).resolve().parent.parent
    with open(tmp_path / "web.log", "wb") as out:
        web = subprocess.Popen([sys.executable, "-m", "streamforge.commands.main", "web", "--host", "127.0.0.1",
                                "--port", str(port), "--data-dir", str(tmp_path / "data")],
                               env={**env, "PYTHONPATH": str(root)}, stdout=out, stderr=subprocess.STDOUT, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_healthy(url, 60), (tmp_path / "web.log").read_text()[-2000:]

        def deliver_slow(i: int):
            msg = sign({"Type": sns.NOTIFY, "MessageId": str(uuid.uuid4()), "TopicArn": TOPIC, "Message": "{}",
                        "Timestamp": "2026-12-01T10:00:00.000Z",
                        "SigningCertURL": f"http://{tarpit.hostport}/cert-{i}.pem"}, keys["key"])
            t0 = time.monotonic()
            r = requests.post(url + "/hooks/storage", data=json.dumps(msg), timeout=120,
                              headers={"x-amz-sns-message-type": sns.NOTIFY, "Content-Type": "text/plain"})
            return r.status_code, time.monotonic() - t0

        with ThreadPoolExecutor(12) as pool:
            t0 = time.monotonic()
            hanging = [pool.submit(deliver_slow, i) for i in range(12)]
            time.sleep(0.5)  # the deliveries are in (or waiting for a thread)
            health = []
            for _ in range(3):
                h0 = time.monotonic()
                assert requests.get(url + "/healthz", timeout=30).status_code == 200
                health.append(time.monotonic() - h0)
            answers = [f.result() for f in hanging]
            wall = time.monotonic() - t0
        assert max(health) < 3, health  # /healthz answers while the certificate host hangs (it hung 30 s+)
        assert all(status == 503 for status, _ in answers), answers  # "send it again": SNS retries
        assert wall < sns.FETCH_TIMEOUT + 6, (wall, answers)  # fetched at once, not one after another
        # bounded: a few fetches at once, not one per request (the tarpit may see a fetch's close a moment
        # after the next one's connect, hence the slack)
        assert tarpit.most_open <= 2 * sns.FETCH_WORKERS < 12
        # each URL was fetched at most once; a failed one is not fetched again for a while: 503 at once
        deadline = time.monotonic() + 60
        while tarpit.open or len(tarpit.held) < 12:  # every fetch made and given up
            assert time.monotonic() < deadline, (tarpit.open, len(tarpit.held))
            time.sleep(0.1)
        fetched = len(tarpit.held)
        assert fetched == 12
        with ThreadPoolExecutor(12) as pool:
            again = list(pool.map(deliver_slow, range(12)))
        assert all(status == 503 and took < 2.5 for status, took in again), again
        assert len(tarpit.held) == fetched
    finally:
        web.terminate()
        web.wait(timeout=20)
        tarpit.close()
