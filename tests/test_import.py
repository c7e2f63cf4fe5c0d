"""`streamforge import` against a real app on a live port and the real SeaweedFS: folders walked,
uploads through the browser's API (presigned PUT and multipart), reruns skipped by name and size or
by content, failures one line each, and the local `serve` found from its data dir."""
from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from conftest import LiveServer, free_port, queued_video_ids
from media_factory import make_audio_only, make_image, make_video, write_text

from streamforge.commands import importer, local_serve
from streamforge.store import db as dbmod
from streamforge.store import videos
from streamforge.store.db import ApiToken

MiB = 1 << 20


@pytest.fixture
def server(seaweed, make_app, tmp_path):
    """The app on a live port: uploads over 1 MiB are multipart with 5 MiB parts (the S3 minimum,
    which SeaweedFS enforces: a smaller part that is not the last fails the complete)."""
    def start(**env):
        cfg = seaweed.make_config(tmp_path / "data", env={
            "STREAMFORGE_UPLOAD_MULTIPART_THRESHOLD": str(MiB), "STREAMFORGE_UPLOAD_PART_SIZE": str(5 * MiB),
            **env})
        app = make_app(cfg)
        live = LiveServer(app).__enter__()
        live.cfg = cfg
        started.append(live)
        return live
    started: list[LiveServer] = []
    yield start
    for live in started:
        live.__exit__(None, None, None)


def token(email: str) -> str:
    with dbmod.db.connection_context():
        return videos.create_token(videos.get_or_create_user(email), "test")[1]


def cli(*args: str, **kw) -> subprocess.CompletedProcess:
    """`streamforge ...` as a user runs it, with no STREAMFORGE_ variables around."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFORGE_")}
    return subprocess.run([sys.executable, "-m", "streamforge.commands.main", *args], env=env, capture_output=True,
                          text=True, timeout=120, **kw)


def listed(live, tok: str, **params) -> list[dict]:
    r = requests.get(f"{live.url}/api/videos", params={"per_page": 100, **params},
                     headers={"Authorization": f"Bearer {tok}"}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def library(root):
    """A folder as people have them: videos, audio, nested folders, a copy, and things that are not media."""
    root.mkdir()
    clip = make_video(root / "Holiday 2024.mp4", width=64, height=48, seconds=0.4)
    sub = root / "trips"
    sub.mkdir()
    make_video(sub / "boat.mkv", width=64, height=48, seconds=0.4, codec="libx264")
    deeper = sub / "2023" / "june"
    deeper.mkdir(parents=True)
    make_audio_only(deeper / "song.m4a", seconds=0.4)
    # over the multipart threshold and over one 5 MiB part: two parts
    big = make_video(deeper / "long take.mp4", width=64, height=48, seconds=0.4)
    with open(big, "ab") as f:
        f.write(b"\0" * (5 * MiB + 4096))
    shutil.copyfile(clip, sub / "holiday copy.mp4")   # same content, another name
    write_text(root / "notes.txt", "not a video")
    make_image(sub / "cover.jpg", codec="mjpeg")
    return {"clip": clip, "big": big, "boat": sub / "boat.mkv", "song": deeper / "song.m4a",
            "copy": sub / "holiday copy.mp4"}


def test_import_folder_then_rerun_skips_everything(server, seaweed, tmp_path):
    live = server()
    tok = token("importer@example.com")
    files = library(tmp_path / "lib")
    r = cli("import", str(tmp_path / "lib"), "--url", live.url, "--token", tok, "--tags", "family,summer",
            "--visibility", "unlisted", "--data-dir", str(tmp_path / "client"))
    assert r.returncode == 0, r.stdout + r.stderr
    summary = r.stdout.strip().splitlines()[-1]
    assert re.match(r"4 imported \(.*\), 1 skipped \(already imported\), 2 not media, 0 failed, in ", summary), summary
    # the two copies: whichever was hashed first went up, the other is skipped as the same content
    assert re.search(r"skipped .*(holiday copy|Holiday 2024)\.mp4: same content as .* in this import", r.stdout)
    items = listed(live, tok)
    assert len(items) == 4
    by_name = {v["original"]["filename"]: v for v in items}
    copy_name = ({"Holiday 2024.mp4", "holiday copy.mp4"} & set(by_name)).pop()
    assert set(by_name) == {copy_name, "boat.mkv", "song.m4a", "long take.mp4"}
    for v in items:
        path = next(p for p in files.values() if p.name == v["original"]["filename"])
        assert v["upload_status"] == "UPLOADED" and v["status"] in ("PENDING", "PROCESSING", "COMPLETED", "FAILED")
        assert v["original"]["size"] == path.stat().st_size and v["original"]["sha256"] == sha(path)
        assert v["title"] == path.stem and v["tags"] == ["family", "summer"] and v["visibility"] == "unlisted"
        assert v["watch_url"] in r.stdout
        # the bytes are in the store as they are on disk, and the complete call enqueued one run
        assert seaweed.store.stat(v["original"]["key"]).size == path.stat().st_size
        assert queued_video_ids().count(v["id"]) == 1
    assert by_name["song.m4a"]["original"]["content_type"] == "audio/mp4"
    assert by_name["boat.mkv"]["original"]["content_type"] == "video/x-matroska"
    # the big one was assembled from two parts (an S3 multipart ETag ends in -<parts>)
    assert seaweed.store.stat(by_name["long take.mp4"]["original"]["key"]).etag.endswith("-2")
    body = seaweed.store._client.get_object(bucket_name=seaweed.bucket,
                                            object_name=by_name["long take.mp4"]["original"]["key"])
    assert hashlib.sha256(body.read()).hexdigest() == sha(files["big"])
    body.close()

    # the same import again: nothing is sent, every file is said to be there already
    again = cli("import", str(tmp_path / "lib"), "--url", live.url, "--token", tok)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.strip().splitlines()[-1].startswith("0 imported (0 bytes), 5 skipped (already imported), "
                                                            "2 not media, 0 failed")
    assert again.stdout.count("already imported (same name and size)") == 4
    assert len(listed(live, tok)) == 4

    # a renamed copy elsewhere is found by its content
    moved = tmp_path / "elsewhere" / "renamed take.mp4"
    moved.parent.mkdir()
    shutil.copyfile(files["big"], moved)
    third = cli("import", str(moved), "--url", live.url, "--token", tok)
    assert third.returncode == 0, third.stdout + third.stderr
    assert "already imported (same content as 'long take.mp4')" in third.stdout
    assert len(listed(live, tok)) == 4

    # another user imports the same files: what alice has is not bob's
    other = token("someone-else@example.com")
    assert listed(live, other, sha256=sha(files["big"])) == []
    fourth = cli("import", str(files["boat"]), "--url", live.url, "--token", other)
    assert fourth.returncode == 0 and fourth.stdout.strip().splitlines()[-1].startswith("1 imported")


def test_failed_files_are_one_line_each_and_the_rest_go_on(server, tmp_path):
    live = server(STREAMFORGE_UPLOAD_MAX_SIZE=str(200_000))
    tok = token("failing@example.com")
    root = tmp_path / "lib"
    root.mkdir()
    make_video(root / "fine.mp4", width=64, height=48, seconds=0.4)
    too_big = make_video(root / "too big.mp4", width=64, height=48, seconds=0.4)
    with open(too_big, "ab") as f:
        f.write(b"\0" * 250_000)
    (root / "broken.mp4").symlink_to(root / "gone.mp4")  # a link to nothing: cannot be read
    r = cli("import", str(root), str(tmp_path / "no such folder"), "--url", live.url, "--token", tok)
    assert r.returncode == 1, r.stdout + r.stderr
    failed = [line for line in r.stderr.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 3, r.stderr
    assert any("broken.mp4: cannot read it" in line for line in failed)
    assert any("too big.mp4" in line and "HTTP 413" in line for line in failed)
    assert any("no such folder: no such file or folder" in line for line in failed)
    assert "Traceback" not in r.stderr
    assert r.stdout.strip().splitlines()[-1].startswith("1 imported")
    assert [v["original"]["filename"] for v in listed(live, tok)] == ["fine.mp4"]


def test_a_file_that_fails_mid_upload_leaves_nothing_behind(server, tmp_path):
    live = server()
    tok = token("midway@example.com")
    path = make_video(tmp_path / "shrinks.mp4", width=64, height=48, seconds=0.4)
    run = importer._Run(importer.Api(live.url, tok), importer.Options(url=live.url, token=tok), io.StringIO(),
                        io.StringIO())
    # the file is shorter than when it was measured (written to, or truncated, while importing)
    for size in (path.stat().st_size + 10, 2 * MiB):  # a presigned PUT, and a multipart upload
        outcome = importer.import_one(run, importer.Candidate(path, tmp_path, size))
        assert outcome.state == "failed" and "shorter" in outcome.message, outcome
    assert listed(live, tok) == []
    assert len(listed(live, tok, status="ARCHIVED")) == 2


def test_bad_token_and_api_extension_validation(server, tmp_path):
    live = server()
    clip = make_video(tmp_path / "a.mp4", width=64, height=48, seconds=0.4)
    r = cli("import", str(clip), "--url", live.url, "--token", "sf_wrong")
    assert r.returncode == 1 and "HTTP 401" in r.stderr and "Traceback" not in r.stderr
    assert cli("import", str(clip), "--url", live.url).returncode == 2  # --url without --token
    h = {"Authorization": f"Bearer {token('api@example.com')}"}
    body = {"title": "t", "filename": "a.mp4", "size": 10, "content_type": "video/mp4"}
    for bad in ("abc", "g" * 64, 12):
        resp = requests.post(f"{live.url}/api/videos", json={**body, "sha256": bad}, headers=h, timeout=10)
        assert resp.status_code == 400 and resp.json()["error"]["code"], bad
    for query in ({"sha256": "xyz"}, {"size": "-1"}, {"size": "1.5"}):
        assert requests.get(f"{live.url}/api/videos", params=query, headers=h, timeout=10).status_code == 400
    made = requests.post(f"{live.url}/api/videos", json={**body, "sha256": "AB" * 32, "filename": "x/../My clip?.mp4"},
                         headers=h, timeout=10).json()["video"]
    assert made["original"]["sha256"] == "ab" * 32
    # the filters compare names as the server stores them, and every given filter must match
    assert [v["id"] for v in listed(live, h["Authorization"][7:], filename="My clip?.mp4", size=10)] == [made["id"]]
    assert listed(live, h["Authorization"][7:], filename="My clip.mp4", size=11) == []
    assert [v["id"] for v in listed(live, h["Authorization"][7:], sha256="ab" * 32)] == [made["id"]]


def test_progress_bars_and_title_from_path(server, tmp_path):
    live = server()
    tok = token("bars@example.com")
    (tmp_path / "lib" / "a").mkdir(parents=True)
    make_video(tmp_path / "lib" / "a" / "clip one.webm", width=64, height=48, seconds=0.4, codec="libvpx-vp9",
               audio="stereo", audio_codec="libopus")
    out, err = io.StringIO(), io.StringIO()
    options = importer.Options(url=live.url, token=tok, title_from="path", progress=True)
    assert importer.run_import([str(tmp_path / "lib")], options, out=out, err=err) == 0
    assert "clip one.webm" in err.getvalue() and "B/s" in err.getvalue()  # the file's bar
    assert listed(live, tok)[0]["title"] == "a/clip one"


def test_local_serve_is_found_from_the_data_dir(server, tmp_path):
    live = server()
    cfg = live.cfg
    clip = make_video(tmp_path / "mine.mp4", width=64, height=48, seconds=0.4)
    data = str(cfg.data_dir)
    r = cli("import", str(clip), "--data-dir", data)
    assert r.returncode == 1 and "no `streamforge serve` is running on data dir" in r.stderr
    local_serve.write_run_file(cfg, url=live.url)  # as serve does, with this process as its pid
    try:
        r = cli("import", str(clip), "--data-dir", data)
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        local_serve.remove_run_file(cfg)
    assert not local_serve.run_file(cfg).exists()
    dbmod.init_db(cfg.database_url)
    with dbmod.db.connection_context():
        admin = videos.get_or_create_user(local_serve.SIGN_IN_EMAIL)
        owned = [v.original_file_name for v in admin.videos]
        minted = list(ApiToken.select().where(ApiToken.name == "streamforge import"))
    assert owned == ["mine.mp4"]  # the sign-in link's user: the library that link opens
    assert len(minted) == 1 and minted[0].revoked_at is not None  # made for the run, revoked after it
    # a run file left by a serve that died is not followed
    local_serve.write_run_file(cfg, url=live.url, pid=_dead_pid())
    r = cli("import", str(clip), "--data-dir", data)
    assert r.returncode == 1 and "no `streamforge serve` is running" in r.stderr


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_real_serve_then_import_without_flags(tmp_path):
    """As a new user does it: `streamforge serve`, then `streamforge import FOLDER` beside it."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFORGE_")}
    env["STREAMFORGE_PIPELINE_HEIGHTS"] = "48"
    data = tmp_path / "data"
    log = open(tmp_path / "serve.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "streamforge.commands.main", "serve", "--port", str(port), "--data-dir",
                             str(data)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 90
        while not (data / "serve.json").exists():
            assert proc.poll() is None and time.time() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(0.2)
        (tmp_path / "lib").mkdir()
        make_video(tmp_path / "lib" / "first.mp4", width=64, height=48, seconds=0.5)
        r = cli("import", str(tmp_path / "lib"), "--data-dir", str(data))
        assert r.returncode == 0, r.stdout + r.stderr + (tmp_path / "serve.log").read_text()[-3000:]
        watch = re.search(r"(http://\S+/watch/\S+)", r.stdout).group(1)
        tok = subprocess.run([sys.executable, "-m", "streamforge.commands.main", "token", "create", "--email",
                              local_serve.SIGN_IN_EMAIL, "--data-dir", str(data)], env=env, capture_output=True,
                             text=True, timeout=60).stdout.strip()
        h = {"Authorization": f"Bearer {tok}"}
        deadline, v = time.time() + 120, {}
        while time.time() < deadline:
            v = requests.get(f"http://127.0.0.1:{port}/api/videos", headers=h, timeout=10).json()["items"][0]
            if v["status"] in ("COMPLETED", "FAILED"):
                break
            time.sleep(0.5)
        assert v["status"] == "COMPLETED" and v["watch_url"] == watch, v
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(30) == 0
        assert not (data / "serve.json").exists()  # a stopped serve is not found any more
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migration_6_adds_the_hash_to_a_version_5_database(backend, tmp_path):
    """A database from before migration 6 gains videos.original_sha256 and its index, data kept."""
    from conftest import fresh_database_url

    from streamforge.store.db import SchemaVersion, Video
    with fresh_database_url(backend, tmp_path, "i11b") as url:
        database = dbmod.init_db(url)
        with database.connection_context():
            for index in database.get_indexes("videos"):
                if index.columns == ["original_sha256"]:
                    database.execute_sql(f'DROP INDEX "{index.name}"')
            database.execute_sql("ALTER TABLE videos DROP COLUMN original_sha256")
            SchemaVersion.delete().where(SchemaVersion.version > 5).execute()
            user = videos.get_or_create_user("old@example.com")
            old = "cold6"
            Video.insert(id=old, title="t", slug="s", user=user, original_file_name="a.mp4", s3_bucket="b").execute()
        database = dbmod.init_db(url)
        with database.connection_context():
            assert any(i.columns == ["original_sha256"] for i in database.get_indexes("videos"))
            assert max(r.version for r in SchemaVersion.select()) == dbmod.SCHEMA_VERSION
            assert Video.get_by_id(old).original_sha256 is None
            Video.update(original_sha256="ab" * 32).where(Video.id == old).execute()
            rows, _ = videos.list_videos(user, None, 1, 10, match={"sha256": "ab" * 32})
            assert [v.id for v in rows] == [old]
        dbmod.migrate(database)  # again: nothing to do
        database.close()


class _SlowStore(BaseHTTPRequestHandler):
    """Takes a PUT's body at about 1 MB/s, then answers 200 with an ETag, as a store does for a part."""

    protocol_version = "HTTP/1.1"

    def do_PUT(self) -> None:  # noqa: N802 - http.server's name
        left = int(self.headers.get("Content-Length", 0))
        while left > 0:
            chunk = self.rfile.read(min(left, 16384))
            if not chunk:
                return
            left -= len(chunk)
            time.sleep(0.015)
        self.send_response(200)
        self.send_header("ETag", '"slow"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def slow_store():
    """A store endpoint that takes uploads slowly: an upload there is still on its way when the test
    interrupts it, however fast the machine (the real store took 300 MiB in under 3 s, before the Ctrl-C),
    and every part is answered, so the importer is never left waiting on a reply that does not come."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _SlowStore)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("started_ignoring", [False, True], ids=["foreground", "sigint-ignored-by-parent"])
def test_ctrl_c_stops_and_takes_back_what_it_started(server, tmp_path, slow_store, started_ignoring):
    live = server(STREAMFORGE_STORAGE_PUBLIC_URL=slow_store)  # the upload URLs point at the slow port
    tok = token("impatient@example.com")
    big = tmp_path / "lib" / "long.mp4"
    big.parent.mkdir()
    with open(big, "wb") as f:
        f.truncate(300 * MiB)  # sparse: no disk written here
    command = [sys.executable, "-m", "streamforge.commands.main", "import", str(big.parent), "--url", live.url,
               "--token", tok]
    if started_ignoring:  # as a shell starts a background job (`cmd &`): SIGINT ignored across the exec
        command = [sys.executable, "-c", "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                   "os.execv(sys.executable, sys.argv[1:])", *command]
    proc = subprocess.Popen(command, env={k: v for k, v in os.environ.items() if not k.startswith("STREAMFORGE_")},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not listed(live, tok):  # the video is created: the bytes are on their way
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"the import went on 60 s after Ctrl-C:\n{out}\n{err}") from None
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out + err
    assert "(interrupted)" in out and "Traceback" not in err
    assert listed(live, tok) == []  # deleted again: no upload left waiting
    assert len(listed(live, tok, status="ARCHIVED")) == 1


def test_a_browser_upload_gets_its_hash_from_the_worker(server, tmp_path):
    """The upload page sends no sha256: the run that downloads the original records it, so a
    renamed copy on disk is still found (and a wrong declared hash gives way to the bytes)."""
    from conftest import drain_queue
    live = server(STREAMFORGE_PIPELINE_HEIGHTS="48")
    tok = token("browser@example.com")
    h = {"Authorization": f"Bearer {tok}"}
    clip = make_video(tmp_path / "from the browser.mp4", width=64, height=48, seconds=0.5)
    for declared in (None, "00" * 32):
        data = clip.read_bytes() + (b"" if declared is None else b"\0")
        body = {"title": "b", "filename": "from the browser.mp4", "size": len(data), "content_type": "video/mp4"}
        made = requests.post(f"{live.url}/api/videos", json={**body, **({"sha256": declared} if declared else {})},
                             headers=h, timeout=10).json()
        requests.put(made["upload"]["url"], data=data, headers=made["upload"]["headers"], timeout=30).raise_for_status()
        vid = made["video"]["id"]
        assert requests.post(f"{live.url}/api/videos/{vid}/upload/complete", json={}, headers=h,
                             timeout=30).status_code == 200
        assert drain_queue() == ["completed"]
        v = requests.get(f"{live.url}/api/videos/{vid}", headers=h, timeout=10).json()
        assert v["original"]["sha256"] == hashlib.sha256(data).hexdigest()
    renamed = tmp_path / "copy" / "renamed.mp4"
    renamed.parent.mkdir()
    shutil.copyfile(clip, renamed)
    r = cli("import", str(renamed), "--url", live.url, "--token", tok)
    assert r.returncode == 0 and "already imported (same content as 'from the browser.mp4')" in r.stdout, r.stdout
