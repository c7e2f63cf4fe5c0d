"""Accounts: quotas (parallel creates on SQLite and PostgreSQL cannot overshoot), usage in /api/me and the
library, viewers cannot upload, disabled users stop at their next request, the `user` command, the
worker registry behind the stats, migration 3 on an older database, and what `serve` says at start."""
import contextlib
import dataclasses
import os
import re
import subprocess
import sys
import threading
import time

import pytest
import requests
from conftest import LiveServer, free_port, fresh_database_url

from streamforge.commands import main as cli
from streamforge.jobs import heartbeats
from streamforge.store import db as dbmod
from streamforge.store import users, videos
from streamforge.store.db import SchemaVersion, User, Video, init_db

BODY = {"title": "t", "filename": "a.mp4", "content_type": "video/mp4"}


@contextlib.contextmanager
def live_app(seaweed, make_app, tmp_path, database_url: str | None = None, **env):
    """The app on a real port (a threaded server: requests really run at once)."""
    port = free_port()
    full = {"STREAMFORGE_SERVER_BASE_URL": f"http://127.0.0.1:{port}", **env}
    if database_url:
        full["STREAMFORGE_DATABASE_URL"] = database_url
    cfg = seaweed.make_config(tmp_path / "data", env=full)
    cfg = dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, port=port))
    with LiveServer(make_app(cfg), port=port) as live:
        yield live.url, cfg


def _token(email: str, role: str = users.UPLOADER, **quota) -> tuple[User, str]:
    with dbmod.db.connection_context():
        user = users.add_user(email, role)
        if quota:
            user = users.update_user(user, quota=quota)
        _, token = videos.create_token(user)
    return user, token


def _parallel_creates(url: str, token: str, n: int, size: int) -> list[requests.Response]:
    """`n` POST /api/videos at the same moment."""
    start = threading.Barrier(n)
    answers: list = [None] * n

    def one(i: int) -> None:
        start.wait()
        answers[i] = requests.post(f"{url}/api/videos", json={**BODY, "size": size},
                                   headers={"Authorization": f"Bearer {token}"}, timeout=60)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_parallel_creates_never_overshoot_the_quota(seaweed, make_app, tmp_path, backend):
    """Twelve creates at once against a quota of 5 uploads' bytes (and, for another user, 3 videos):
    exactly as many as fit are created, the rest are 403 quota_exceeded and leave no row."""
    with contextlib.ExitStack() as stack:
        url_db = stack.enter_context(fresh_database_url(backend, tmp_path, "i12")) if backend == "postgresql" else None
        url, _ = stack.enter_context(live_app(seaweed, make_app, tmp_path, url_db))
        bytes_user, bytes_token = _token("bytes-i12@example.com", max_bytes=550)
        count_user, count_token = _token("count-i12@example.com", max_videos=3)
        for user, token, size, fits in ((bytes_user, bytes_token, 100, 5), (count_user, count_token, 1, 3)):
            answers = _parallel_creates(url, token, 12, size)
            codes = sorted(r.status_code for r in answers)
            assert codes == [201] * fits + [403] * (12 - fits), [(r.status_code, r.text[:100]) for r in answers]
            refused = [r.json()["error"] for r in answers if r.status_code == 403]
            assert {e["code"] for e in refused} == {"quota_exceeded"} and all("quota" in e["message"] for e in refused)
            with dbmod.db.connection_context():
                assert Video.select().where(Video.user == user.id).count() == fits
            me = requests.get(f"{url}/api/me", headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
            assert me["usage"] == {"bytes": fits * size, "videos": fits}


def test_usage_quota_and_me(seaweed, make_app, tmp_path):
    """Uploads in flight count by their declared size; a deleted video frees its share; the config's
    defaults apply until an admin sets the user's own quota; the library page shows the usage."""
    with live_app(seaweed, make_app, tmp_path, STREAMFORGE_QUOTA_MAX_BYTES_PER_USER="1000",
                  STREAMFORGE_QUOTA_MAX_VIDEOS_PER_USER="2") as (url, _):
        _, token = _token("me-i12@example.com")
        h = {"Authorization": f"Bearer {token}"}
        me = requests.get(f"{url}/api/me", headers=h, timeout=10).json()
        assert set(me) == {"id", "email", "name", "role", "usage", "quota"}
        assert (me["role"], me["usage"], me["quota"]) == ("uploader", {"bytes": 0, "videos": 0},
                                                          {"max_bytes": 1000, "max_videos": 2})
        first = requests.post(f"{url}/api/videos", json={**BODY, "size": 600}, headers=h, timeout=10)
        assert first.status_code == 201
        over = requests.post(f"{url}/api/videos", json={**BODY, "size": 401}, headers=h, timeout=10)
        assert over.status_code == 403 and over.json()["error"]["code"] == "quota_exceeded"
        assert requests.post(f"{url}/api/videos", json={**BODY, "size": 400}, headers=h, timeout=10).status_code == 201
        third = requests.post(f"{url}/api/videos", json={**BODY, "size": 1}, headers=h, timeout=10)
        assert third.status_code == 403 and "2 videos" in third.json()["error"]["message"]
        assert requests.get(f"{url}/api/me", headers=h, timeout=10).json()["usage"] == {"bytes": 1000, "videos": 2}
        assert len(requests.get(f"{url}/api/videos", headers=h, timeout=10).json()["items"]) == 2  # nothing half-made
        # deleting frees the share
        vid = first.json()["video"]["id"]
        assert requests.delete(f"{url}/api/videos/{vid}", headers=h, timeout=10).status_code == 204
        assert requests.get(f"{url}/api/me", headers=h, timeout=10).json()["usage"] == {"bytes": 400, "videos": 1}
        # the user's own quota overrides the defaults (0 = unlimited)
        with dbmod.db.connection_context():
            users.update_user(users.find_user("me-i12@example.com"), quota={"max_bytes": 0, "max_videos": 0})
        assert requests.post(f"{url}/api/videos", json={**BODY, "size": 5000}, headers=h, timeout=10).status_code == 201
        assert requests.get(f"{url}/api/me", headers=h, timeout=10).json()["quota"] == {"max_bytes": 0, "max_videos": 0}
        s = requests.Session()
        s.get(f"{url}/login", params={"token": token}, timeout=10)
        usage = re.sub(r"\s+", " ", re.search(r'<p class="usage-line[^>]*>(.*?)</p>', s.get(url, timeout=10).text,
                                              re.S).group(1)).strip()
        assert usage == "You use 5.3 KiB and 2 videos.", usage


def test_viewers_watch_but_cannot_upload(seaweed, make_app, tmp_path):
    with live_app(seaweed, make_app, tmp_path) as (url, _):
        _, token = _token("viewer-i12@example.com", users.VIEWER)
        h = {"Authorization": f"Bearer {token}"}
        r = requests.post(f"{url}/api/videos", json={**BODY, "size": 10}, headers=h, timeout=10)
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        assert requests.get(f"{url}/api/videos", headers=h, timeout=10).json()["items"] == []
        assert requests.get(f"{url}/api/me", headers=h, timeout=10).json()["role"] == "viewer"
        s = requests.Session()
        s.get(f"{url}/login", params={"token": token}, timeout=10)
        page = s.get(f"{url}/upload", timeout=10)
        assert page.status_code == 403 and "may not do this" in page.text
        library = s.get(url, timeout=10).text
        assert 'href="/upload"' not in library  # no upload button for a viewer


def test_a_disabled_users_session_and_tokens_stop_at_the_next_request(seaweed, make_app, tmp_path):
    with live_app(seaweed, make_app, tmp_path) as (url, _):
        user, token = _token("off-i12@example.com")
        h = {"Authorization": f"Bearer {token}"}
        s = requests.Session()
        assert s.get(f"{url}/login", params={"token": token}, allow_redirects=False, timeout=10).status_code == 302
        assert s.get(f"{url}/api/me", timeout=10).status_code == 200
        assert requests.get(f"{url}/api/videos", headers=h, timeout=10).status_code == 200
        with dbmod.db.connection_context():
            users.update_user(user, disabled=True)
        assert s.get(f"{url}/api/me", timeout=10).status_code == 401
        r = s.get(f"{url}/", allow_redirects=False, timeout=10)
        assert r.status_code == 302 and "/login" in r.headers["Location"]
        assert requests.get(f"{url}/api/videos", headers=h, timeout=10).status_code == 401
        again = requests.get(f"{url}/login", params={"token": token}, allow_redirects=False, timeout=10)
        assert again.status_code == 401 and "is disabled" in again.text
        with dbmod.db.connection_context():
            users.update_user(user, disabled=False)
        # enabled again: the token works, but disabling ended the session for good (issue 20)
        assert s.get(f"{url}/api/me", timeout=10).status_code == 401
        assert requests.get(f"{url}/api/videos", headers=h, timeout=10).status_code == 200
        assert s.get(f"{url}/login", params={"token": token}, allow_redirects=False, timeout=10).status_code == 302
        assert s.get(f"{url}/api/me", timeout=10).status_code == 200


def test_logout_is_a_post_with_the_csrf_token(seaweed, make_app, tmp_path):
    with live_app(seaweed, make_app, tmp_path) as (url, _):
        _, token = _token("bye-i12@example.com")
        s = requests.Session()
        s.get(f"{url}/login", params={"token": token}, timeout=10)
        page = s.get(f"{url}/logout", timeout=10)
        assert page.status_code == 200 and 'id="logout-form"' in page.text and 'method="post"' in page.text
        assert s.get(f"{url}/api/me", timeout=10).status_code == 200  # a GET signs nobody out
        assert s.post(f"{url}/logout", allow_redirects=False, timeout=10).status_code == 400  # no CSRF token
        assert s.get(f"{url}/api/me", timeout=10).status_code == 200
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        r = s.post(f"{url}/logout", data={"csrf_token": csrf}, allow_redirects=False, timeout=10)
        assert r.status_code == 302 and s.get(f"{url}/api/me", timeout=10).status_code == 401


def test_the_user_command(tmp_path, capsys):
    data = str(tmp_path / "data")

    errors = []

    def run(*args) -> tuple[int, str]:
        code = cli.main(["user", *args, "--data-dir", data])
        captured = capsys.readouterr()
        errors.append(captured.err)
        return code, captured.out

    code, out = run("add", "Carol@Example.com", "--role", "viewer")
    assert code == 0 and out.startswith("carol@example.com\tviewer\t0 bytes of unlimited")
    code, out = run("set", "carol@example.com", "--role", "uploader", "--max-bytes", "1000", "--max-videos", "3",
                    "--disable")
    assert code == 0 and "uploader (disabled)" in out and "of 1000 bytes" in out and "0 videos of 3" in out
    code, out = run("set", "carol@example.com", "--enable", "--max-bytes", "default")
    assert code == 0 and "uploader\t0 bytes of unlimited" in out
    assert run("add", "dave@example.com")[0] == 0
    code, out = run("list")
    assert [line.split("\t")[0] for line in out.splitlines()] == ["carol@example.com", "dave@example.com"]
    code, out = run("invite", "erin@example.com", "--role", "viewer")
    assert code == 0 and re.fullmatch(r"http://127\.0\.0\.1:8000/login\?invite=inv_\S+\n", out)
    assert run("set", "nobody@example.com", "--role", "viewer")[0] == 1
    assert "no such user: nobody@example.com" in errors[-1]
    code, out = run("stats")
    assert code == 0 and "videos: PENDING 0" in out and "queue: 0 waiting" in out
    with pytest.raises(SystemExit):
        run("add", "x@example.com", "--role", "boss")


def test_workers_heartbeat_into_the_stats(seaweed, make_app, tmp_path):
    """A worker's registry thread beats into the database; the admin's stats list it with its last
    heartbeat and how many videos it runs; a worker that stops leaves the list."""
    with live_app(seaweed, make_app, tmp_path) as (url, _):
        _, admin = _token("ops-i12@example.com", users.ADMIN)
        h = {"Authorization": f"Bearer {admin}"}
        stop = threading.Event()
        with heartbeats.running():
            beat = heartbeats.start(stop, interval=0.2)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                workers = requests.get(f"{url}/api/admin/stats", headers=h, timeout=10).json()["workers"]
                if workers:
                    break
                time.sleep(0.1)
            assert len(workers) == 1, workers
            w = workers[0]
            assert w["name"] == heartbeats.worker_name() and w["running"] == 1 and w["alive"] is True
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", w["last_seen_at"])
        stop.set()
        beat.join(10)
        assert requests.get(f"{url}/api/admin/stats", headers=h, timeout=10).json()["workers"] == []


def test_serve_says_once_that_only_existing_users_sign_in_and_its_link_is_an_admin(seaweed, tmp_path):
    """With OIDC on and [auth] allow empty, `serve` says so once at start; its sign-in link's user is an admin.
    The link is a one-use ticket (issue 20): not an API token, not listed among the tokens, spent once used."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFORGE_")}
    env.update({"STREAMFORGE_STORAGE_ENDPOINT": seaweed.endpoint, "STREAMFORGE_STORAGE_ACCESS_KEY": seaweed.access_key,
                "STREAMFORGE_STORAGE_SECRET_KEY": seaweed.secret_key, "STREAMFORGE_STORAGE_BUCKET": seaweed.bucket,
                "STREAMFORGE_WEBHOOK_TOKEN": seaweed.webhook_token, "STREAMFORGE_SERVER_SECRET_KEY": "serve-i12-key",
                "STREAMFORGE_SERVER_WORKERS": "1", "STREAMFORGE_AUTH_OIDC_ISSUER": "http://127.0.0.1:9",
                "STREAMFORGE_AUTH_OIDC_CLIENT_ID": "streamforge"})
    log = tmp_path / "serve.log"
    with open(log, "w+") as out:
        proc = subprocess.Popen([sys.executable, "-m", "streamforge.commands.main", "serve", "--port", str(port), "--data-dir",
                                 str(tmp_path / "data")], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while "Sign in:" not in log.read_text() or "can sign in" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        link = re.search(r"Sign in: (\S+/login\?token=(\S+))", log.read_text())
        base, ticket = f"http://127.0.0.1:{port}", link.group(2)
        while True:
            try:
                bearer = requests.get(f"{base}/api/me", headers={"Authorization": f"Bearer {ticket}"}, timeout=5)
                break
            except requests.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
                time.sleep(0.2)
        assert bearer.status_code == 401  # not an API token
        s = requests.Session()
        assert s.get(link.group(1), allow_redirects=False, timeout=10).status_code == 302
        me = s.get(f"{base}/api/me", timeout=10)
        assert me.status_code == 200 and me.json()["role"] == "admin"
        assert s.get(f"{base}/api/tokens", timeout=10).json()["items"] == []  # not listed among the tokens
        again = requests.Session()
        r = again.get(link.group(1), allow_redirects=False, timeout=10)
        assert r.status_code == 401 and "already used" in r.text and again.get(f"{base}/api/me").status_code == 401
        text = log.read_text()
        assert text.count("only existing users") == 1, text
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(30)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    with fresh_database_url("postgresql", tmp_path, "i12") as url:
        yield url


def test_migration_3_keeps_todays_users(database_url):
    """A database from before accounts (version 2): its users keep their rows, become uploaders, are not
    bound to an identity yet (that happens at their next OIDC sign-in), and the new tables exist."""
    database = init_db(database_url)
    with database.connection_context():
        database.execute_sql('DROP INDEX IF EXISTS "user_oidc_issuer_oidc_sub"')
        for column in ("oidc_issuer", "role", "disabled", "max_bytes", "max_videos", "last_seen_at"):
            database.execute_sql(f'ALTER TABLE "users" DROP COLUMN "{column}"')
        database.execute_sql('DROP TABLE "invites"')
        database.execute_sql('DROP TABLE "workers"')
        SchemaVersion.delete().where(SchemaVersion.version > 2).execute()
        database.execute_sql("INSERT INTO users (id, email, oidc_sub, created_at, updated_at) VALUES "
                             "('old1', 'old@example.com', 'old-sub', '2026-01-01', '2026-01-01')")
    database.close()
    database = init_db(database_url)
    with database.connection_context():
        user = User.get_by_id("old1")
        assert (user.email, user.role, user.disabled, user.oidc_sub, user.oidc_issuer) == (
            "old@example.com", "uploader", False, "old-sub", None)
        assert users.quota(user, dataclasses.make_dataclass("Q", [("max_bytes_per_user", int),
                                                                  ("max_videos_per_user", int)])(7, 8)) == {
            "max_bytes": 7, "max_videos": 8}
        assert max(r.version for r in SchemaVersion.select()) == dbmod.SCHEMA_VERSION
        users.create_invite("new@example.com")
    database.close()
