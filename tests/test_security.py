"""Hostile use on a real server and a real SeaweedFS: who may read and change what, CSRF, upload
scope, guessed media URLs, request size limits and the webhook's token.

The authorisation matrix has one row per route and method of the app; `test_every_route_is_in_the_matrix`
fails for a route added without a row, so a new route cannot be forgotten.
"""
from __future__ import annotations

import dataclasses
import hmac
import inspect
import json
import re
import select
import socket
import time
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

import pytest
import requests
from conftest import LiveServer, drain_queue, free_port, queued_video_ids
from media_factory import make_video

from streamforge import playback
from streamforge.jobs import tasks
from streamforge.store import db as dbmod
from streamforge.store import runners, users, videos
from streamforge.store.db import ApiToken

ANON, OTHER, OTHER_BEARER, OWNER = "anonymous", "other user", "other user (bearer)", "owner"
# roles (issue 12): a viewer, an admin, and a disabled uploader whose session and token were made before
VIEWER, ADMIN, DISABLED, DISABLED_BEARER = "viewer", "admin", "disabled (session)", "disabled (bearer)"
# the owner goes last: its changes (delete, reprocess) come after everyone else tried
IDENTITIES = (ANON, VIEWER, OTHER, OTHER_BEARER, ADMIN, DISABLED, DISABLED_BEARER, OWNER)
MiB = 1 << 20


# ---------------------------------------------------------------------------------------------
# The world: alice owns a processed private video and a few others, bob owns one; the app listens
# on a real port so that signed links, redirects and the store's presigned URLs are fetched for real.


@dataclasses.dataclass
class World:
    cfg: object
    app: object
    url: str
    store: object
    alice: str = ""           # alice's API token
    bob: str = ""             # bob's API token
    a: dict = None            # alice's processed private video (VIDEO as the owner sees it)
    a2: dict = None           # a second processed video of alice's, deleted by a test
    m: dict = None            # alice's multipart upload in progress
    d: dict = None            # alice's video that the matrix deletes
    b: dict = None            # bob's video
    t2_id: str = ""           # an extra token of alice's, revoked by the matrix
    t2: str = ""
    alice_prefix: str = ""    # the visible prefix of alice's first token
    marker: str = ""          # a title only alice's video has
    vera: str = ""            # a viewer's token
    adam: str = ""            # an admin's token
    dan: str = ""             # a disabled uploader's token
    dan_session: dict = None  # the disabled uploader's browser, signed in before the account was disabled
    runner_id: str = ""      # a runner the admin's DELETE row revokes
    sam_id: str = ""          # a user the admin's PATCH row changes

    def activate(self) -> None:
        """Point the process-wide database and queue at this world (other tests re-point them)."""
        dbmod.init_db(self.cfg.database_url)
        tasks.configure(self.cfg)

    def h(self, token: str) -> dict:
        return {"Authorization": f"Bearer {token}"}

    def owner_get(self, vid: str) -> requests.Response:
        return requests.get(f"{self.url}/api/videos/{vid}", headers=self.h(self.alice), timeout=10)

    def sig(self, video_id: str, visibility: str = "private") -> str:
        """The query string the app hands out for `video_id`'s output while it has `visibility`."""
        exp = playback.expiry(600)
        return f"exp={exp}&sig={playback.sign(self.cfg.server.secret_key, video_id, exp, visibility)}"

    def session(self, who: str) -> requests.Session:
        """A browser: anonymous, or signed in by the login link with its CSRF token at hand."""
        s = requests.Session()
        if who == ANON:
            return s
        if who in (OTHER_BEARER, DISABLED_BEARER):
            s.headers["Authorization"] = f"Bearer {self.bob if who == OTHER_BEARER else self.dan}"
            return s
        if who == DISABLED:
            s.cookies.update(self.dan_session["cookies"])
            s.headers["X-CSRF-Token"] = self.dan_session["csrf"]
            return s
        token = {OWNER: self.alice, OTHER: self.bob, VIEWER: self.vera, ADMIN: self.adam}[who]
        r = s.get(f"{self.url}/login", params={"token": token}, allow_redirects=False, timeout=10)
        assert r.status_code == 302, r.text
        page = s.get(f"{self.url}/upload", timeout=10).text
        s.headers["X-CSRF-Token"] = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
        return s


def _create(url: str, token: str, **body) -> dict:
    body = {"title": "t", "filename": "clip.mp4", "size": 10, "content_type": "video/mp4", **body}
    r = requests.post(f"{url}/api/videos", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 201, r.text
    return r.json()


def _upload_and_process(world: World, data: bytes, title: str) -> dict:
    made = _create(world.url, world.alice, title=title, size=len(data))
    requests.put(made["upload"]["url"], data=data, headers=made["upload"]["headers"], timeout=30).raise_for_status()
    vid = made["video"]["id"]
    r = requests.post(f"{world.url}/api/videos/{vid}/upload/complete", json={}, headers=world.h(world.alice),
                      timeout=30)
    assert r.status_code == 200, r.text
    assert drain_queue() == ["completed"]
    v = world.owner_get(vid).json()
    assert v["status"] == "COMPLETED", v["error_message"]
    return v


@pytest.fixture(scope="module")
def world(seaweed, tmp_path_factory):
    from streamforge.web import create_app
    tmp = tmp_path_factory.mktemp("security")
    port = free_port()
    cfg = seaweed.make_config(tmp / "data", env={
        "STREAMFORGE_SERVER_BASE_URL": f"http://127.0.0.1:{port}", "STREAMFORGE_PIPELINE_HEIGHTS": "240",
        "STREAMFORGE_UPLOAD_MULTIPART_THRESHOLD": str(5 * MiB), "STREAMFORGE_UPLOAD_PART_SIZE": str(5 * MiB),
        "STREAMFORGE_PLAYBACK_SIGNED_URL_TTL": "600"})
    cfg = dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, port=port))
    seaweed.store.prepare([cfg.base_url])  # as `streamforge web` does at start
    app = create_app(cfg)
    clip = make_video(tmp / "clip.mp4", width=320, height=240, seconds=1)
    with LiveServer(app, port=port) as live:
        w = World(cfg=cfg, app=app, url=live.url, store=seaweed.store)
        w.activate()
        with dbmod.db.connection_context():
            alice = videos.get_or_create_user("alice-sec@example.com")
            _, w.alice = videos.create_token(alice, "main")
            row, w.t2 = videos.create_token(alice, "spare")
            w.t2_id = row.id
            _, w.bob = videos.create_token(videos.get_or_create_user("bob-sec@example.com"), "main")
            _, w.vera = videos.create_token(users.add_user("vera-sec@example.com", users.VIEWER), "main")
            _, w.adam = videos.create_token(users.add_user("adam-sec@example.com", users.ADMIN), "main")
            dan = users.add_user("dan-sec@example.com")
            _, w.dan = videos.create_token(dan, "main")
            w.sam_id = users.add_user("sam-sec@example.com").id
            w.runner_id = runners.create_runner("sec-runner")[0].id
        w.alice_prefix = w.alice[:10]
        w.marker = "alice-private-" + w.alice[3:11]
        w.a = _upload_and_process(w, clip.read_bytes(), w.marker)
        w.a2 = _upload_and_process(w, clip.read_bytes(), "to be deleted")
        w.m = _create(w.url, w.alice, size=6 * MiB)["video"]
        w.d = _create(w.url, w.alice, title="doomed")["video"]
        w.b = _create(w.url, w.bob, title="bob's")["video"]
        browser = requests.Session()
        assert browser.get(f"{w.url}/login", params={"token": w.dan}, allow_redirects=False, timeout=10).status_code == 302
        page = browser.get(f"{w.url}/", timeout=10).text
        w.dan_session = {"cookies": browser.cookies.get_dict(),
                         "csrf": re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)}
        with dbmod.db.connection_context():
            users.update_user(dan, disabled=True)  # the session and token made above stop at their next request
        yield w


# ---------------------------------------------------------------------------------------------
# The authorisation matrix


@dataclasses.dataclass
class Row:
    method: str
    rule: str                                   # the url_map rule this row covers
    path: Callable[[World], str]
    expect: dict                                # identity -> status (or a tuple of allowed statuses)
    body: Callable[[World], object] | None = None
    unchanged: Callable[[World], None] | None = None   # after the others tried: nothing of alice's changed
    owner_check: Callable[[World, requests.Response], None] | None = None
    leak_check: bool = True                     # others' 2xx answers must not mention alice's things


_SAME = object()


def who(anon, other, owner, *, viewer=_SAME, admin=_SAME, disabled=_SAME) -> dict:
    """Expected statuses per identity. Roles a row does not name expect what their kind does elsewhere:
    a viewer and an admin are other users to alice's things (viewer: 403 on uploading routes, which name
    it), a disabled user is anonymous (their session and token load no user)."""
    viewer = other if viewer is _SAME else viewer
    admin = other if admin is _SAME else admin
    disabled = anon if disabled is _SAME else disabled
    return {ANON: anon, OTHER: other, OTHER_BEARER: other, OWNER: owner, VIEWER: viewer, ADMIN: admin,
            DISABLED: disabled, DISABLED_BEARER: disabled}


def admin_only(anon_page: bool = False, ok: int = 200) -> dict:
    """An admin route: 401 (a page: 302 to sign in) signed out or disabled, 403 for other roles."""
    out = 302 if anon_page else 401
    return who(out, 403, 403, viewer=403, admin=ok)


def _me_is_alice(w: World, r) -> None:
    got = r.json()
    assert got["email"] == "alice-sec@example.com" and got["role"] == "uploader", got
    assert got["usage"]["videos"] >= 4 and got["usage"]["bytes"] > 6 * MiB and got["quota"] == {
        "max_bytes": 0, "max_videos": 0}, got


def _sam_untouched(w: World) -> None:
    with dbmod.db.connection_context():
        assert users.find_user(w.sam_id).max_videos is None


def _untouched(w: World) -> None:
    v = w.owner_get(w.a["id"]).json()
    assert (v["title"], v["description"]) == (w.marker, None)


def _d_kept(w: World) -> None:
    assert w.owner_get(w.d["id"]).json()["status"] == "PENDING"


def _a_not_requeued(w: World) -> None:
    assert w.owner_get(w.a["id"]).json()["status"] == "COMPLETED" and w.a["id"] not in queued_video_ids()


def _m_still_uploading(w: World) -> None:
    v = w.owner_get(w.m["id"]).json()
    assert v["upload_status"] == "UPLOADING" and v["status"] == "PENDING"


def _t2_still_works(w: World) -> None:
    assert requests.get(f"{w.url}/api/videos", headers=w.h(w.t2), timeout=10).status_code == 200


def _t2_revoked(w: World, r) -> None:
    assert requests.get(f"{w.url}/api/videos", headers=w.h(w.t2), timeout=10).status_code == 401


def _lists_a(w: World, r) -> None:
    assert w.a["id"] in r.text


def _has_logs(w: World, r) -> None:
    stages = {i["stage"] for i in r.json()["items"]}
    assert {"download", "transcode", "upload", "database"} <= stages


def _a_has_no_captions(w: World) -> None:
    assert w.owner_get(w.a["id"]).json()["captions"] == []


def _thumb_path(w: World) -> str:
    cover = w.a["cover_url"]
    return urlsplit(cover).path.split(f"/play/{w.a['id']}/", 1)[1]


def _follow_to_image(w: World, r) -> None:
    store = requests.get(r.headers["Location"], timeout=10)
    assert store.status_code == 200 and store.content[:3] == b"\xff\xd8\xff"


def _playlist(w: World, name: str = "kept") -> dict:
    """Alice's private playlist `name` (made on first use) holding her private video A."""
    made = w.__dict__.setdefault("playlists", {})
    if name not in made:
        h = w.h(w.alice)
        pl = requests.post(f"{w.url}/api/playlists", json={"title": f"{w.marker} {name}"}, headers=h, timeout=10).json()
        requests.post(f"{w.url}/api/playlists/{pl['id']}/items", json={"video_id": w.a["id"]}, headers=h,
                      timeout=10).raise_for_status()
        made[name] = pl
    return made[name]


def _playlist_kept(w: World, name: str = "kept") -> None:
    r = requests.get(f"{w.url}/api/playlists/{_playlist(w, name)['id']}", headers=w.h(w.alice), timeout=10)
    assert r.status_code == 200 and r.json()["title"] == f"{w.marker} {name}" and r.json()["items"], r.text


MATRIX = [
    Row("GET", "/static/<path:filename>", lambda w: "/static/app.css", who(200, 200, 200)),
    Row("GET", "/login", lambda w: "/login", who(200, 200, 200)),
    Row("GET", "/login/callback", lambda w: "/login/callback", who(404, 404, 404)),  # no OIDC configured
    Row("GET", "/logout", lambda w: "/logout", who(200, 200, 200)),  # a page with the sign-out button
    # a disabled user's stale session carries its CSRF token: signing it out is harmless
    Row("POST", "/logout", lambda w: "/logout", who(400, 302, 302, disabled=302)),
    # sign-in (issue 20): a password POST needs the login page's CSRF token (anonymous here has none); the
    # empty forms below are refused whoever sends them
    # (five such failures from one address close it to that address for 15 minutes: 429)
    Row("POST", "/login", lambda w: "/login", who(400, (401, 429), (401, 429), disabled=(401, 429)),
        leak_check=False),
    Row("POST", "/login/invite", lambda w: "/login/invite", who(400, 403, 403, disabled=403)),
    Row("POST", "/login/switch", lambda w: "/login/switch", who(400, 401, 401, disabled=401)),
    Row("GET", "/account", lambda w: "/account", who(302, 200, 200)),
    # nobody here has a password yet: an empty new one is refused; an API token sets none
    Row("POST", "/account", lambda w: "/account", {**who(302, 400, 400), OTHER_BEARER: 403}),
    # passkeys: registered from a signed-in browser (a token registers none); a sign-in ceremony needs the
    # login page's CSRF token, and its challenge first
    Row("GET", "/api/me/passkeys", lambda w: "/api/me/passkeys", who(401, 200, 200)),
    Row("POST", "/api/me/passkeys/options", lambda w: "/api/me/passkeys/options",
        {**who(401, 200, 200), OTHER_BEARER: 403}, leak_check=False),
    Row("POST", "/api/me/passkeys", lambda w: "/api/me/passkeys", {**who(401, 400, 400), OTHER_BEARER: 403},
        body=lambda w: {}),
    Row("DELETE", "/api/me/passkeys/<passkey_id>", lambda w: "/api/me/passkeys/nope", who(401, 404, 404)),
    Row("POST", "/login/passkey/options", lambda w: "/login/passkey/options", who(400, 200, 200, disabled=200),
        leak_check=False),
    Row("POST", "/login/passkey", lambda w: "/login/passkey", who(400, 400, 400, disabled=400), body=lambda w: {}),
    Row("GET", "/healthz", lambda w: "/healthz", who(200, 200, 200)),
    Row("GET", "/api/openapi.json", lambda w: "/api/openapi.json", who(200, 200, 200)),
    # the live server is on this machine, whose requests may read the metrics whatever Authorization they carry
    Row("GET", "/metrics", lambda w: "/metrics", who(200, 200, 200)),
    # a user's API token or session is not the webhook's token
    Row("POST", "/hooks/storage", lambda w: "/hooks/storage", who(401, 401, 401), body=lambda w: {"Records": []}),
    # pages
    Row("GET", "/", lambda w: "/", who(302, 200, 200), owner_check=_lists_a),
    Row("GET", "/upload", lambda w: "/upload", who(302, 200, 200, viewer=403)),
    Row("GET", "/tokens", lambda w: "/tokens", who(302, 200, 200)),
    Row("GET", "/watch/<slug>", lambda w: f"/watch/{w.a['slug']}", who(404, 404, 200)),  # private
    # tokens
    Row("GET", "/api/tokens", lambda w: "/api/tokens", who(401, 200, 200)),
    Row("POST", "/api/tokens", lambda w: "/api/tokens", who(401, 201, 201), body=lambda w: {"name": "x"}),
    Row("DELETE", "/api/tokens/<token_id>", lambda w: f"/api/tokens/{w.t2_id}", who(401, 404, 204),
        unchanged=_t2_still_works, owner_check=_t2_revoked),
    # videos
    Row("GET", "/api/videos", lambda w: "/api/videos", who(401, 200, 200), owner_check=_lists_a),
    # `streamforge import`'s lookup: another user asking for alice's original by name and size finds nothing
    Row("GET", "/api/videos", lambda w: f"/api/videos?filename={w.a['original']['filename']}"
        f"&size={w.a['original']['size']}", who(401, 200, 200), owner_check=_lists_a),
    Row("POST", "/api/videos", lambda w: "/api/videos", who(401, 201, 201, viewer=403),
        body=lambda w: {"title": "mine", "filename": "a.mp4", "size": 10, "content_type": "video/mp4"}),
    Row("GET", "/api/videos/<video_id>", lambda w: f"/api/videos/{w.a['id']}", who(401, 404, 200)),
    Row("PATCH", "/api/videos/<video_id>", lambda w: f"/api/videos/{w.a['id']}", who(401, 404, 200),
        body=lambda w: {"description": "edited"}, unchanged=_untouched),
    Row("DELETE", "/api/videos/<video_id>", lambda w: f"/api/videos/{w.d['id']}", who(401, 404, 204),
        unchanged=_d_kept),
    Row("GET", "/api/videos/<video_id>/logs", lambda w: f"/api/videos/{w.a['id']}/logs", who(401, 404, 200),
        owner_check=_has_logs),
    Row("POST", "/api/videos/<video_id>/upload/parts", lambda w: f"/api/videos/{w.m['id']}/upload/parts",
        who(401, 404, 200, viewer=403), body=lambda w: {"part_numbers": [1, 2]}, unchanged=_m_still_uploading),
    Row("GET", "/api/videos/<video_id>/upload/parts", lambda w: f"/api/videos/{w.m['id']}/upload/parts",
        who(401, 404, 200, viewer=403)),
    # the owner sends no parts: refused as invalid, which is not a 404
    Row("POST", "/api/videos/<video_id>/upload/complete", lambda w: f"/api/videos/{w.m['id']}/upload/complete",
        who(401, 404, 400, viewer=403), body=lambda w: {}, unchanged=_m_still_uploading),
    # playback links: the signature is the capability, whoever holds it (embeds, unlisted shares)
    Row("GET", "/play/<video_id>/<path:relpath>", lambda w: f"/play/{w.a['id']}/master.m3u8?{w.sig(w.a['id'])}",
        who(200, 200, 200), leak_check=False),
    Row("HEAD", "/play/<video_id>/<path:relpath>", lambda w: f"/play/{w.a['id']}/master.m3u8?{w.sig(w.a['id'])}",
        who(200, 200, 200), leak_check=False),
    Row("GET", "/play/<video_id>/<path:relpath>", lambda w: f"/play/{w.a['id']}/master.m3u8", who(403, 403, 403)),
    Row("GET", "/play/<video_id>/<path:relpath>",
        lambda w: f"/play/{w.a['id']}/master.m3u8?{w.sig(w.b['id'])}", who(403, 403, 403)),
    Row("GET", "/play/<video_id>/<path:relpath>", lambda w: f"/play/{w.a['id']}/{_thumb_path(w)}?{w.sig(w.a['id'])}",
        who(302, 302, 302), owner_check=_follow_to_image, leak_check=False),
    Row("GET", "/play/<video_id>/<path:relpath>", lambda w: f"/play/{w.a['id']}/{_thumb_path(w)}",
        who(403, 403, 403)),
    Row("GET", "/play/<video_id>/<path:relpath>",
        lambda w: f"/play/{w.a['id']}/{_thumb_path(w)}?{w.sig(w.b['id'])}", who(403, 403, 403)),
    # the CDN's origin: public videos only, and only with [cdn] base_url set (not in this world)
    Row("GET", "/processed/<video_id>/<path:relpath>", lambda w: f"/processed/{w.a['id']}/master.m3u8",
        who(404, 404, 404)),
    # bob's signature, walking out of bob's folder into alice's
    Row("GET", "/play/<video_id>/<path:relpath>",
        lambda w: f"/play/{w.b['id']}/..%2F..%2F{w.a['id']}%2Fmaster.m3u8?{w.sig(w.b['id'])}",
        who(404, 404, 404)),
    # sharing (issue 14): alice's video is private, so it is never embeddable or listed; a moment's picture and
    # view reports are for whoever may watch it (its owner)
    Row("GET", "/embed/<slug>", lambda w: f"/embed/{w.a['slug']}", who(404, 404, 404)),
    Row("GET", "/oembed", lambda w: f"/oembed?format=json&url={w.url}/watch/{w.a['slug']}", who(404, 404, 404)),
    Row("GET", "/explore", lambda w: "/explore", who(200, 200, 200)),
    Row("GET", "/api/public/videos", lambda w: "/api/public/videos?q=alice", who(200, 200, 200)),
    Row("GET", "/api/videos/<video_id>/thumbnail.jpg", lambda w: f"/api/videos/{w.a['id']}/thumbnail.jpg?time=0&width=64",
        who(404, 404, 302), owner_check=_follow_to_image),
    Row("POST", "/api/videos/<video_id>/views", lambda w: f"/api/videos/{w.a['id']}/views", who(404, 404, 204),
        body=lambda w: {"session": "matrix-session-1", "watched_seconds": 1}),
    # captions and downloads (issue 13): the owner changes tracks; whoever may watch (the owner: A is private)
    # lists them; downloads are the owner's by default ([playback] downloads = "owner")
    Row("POST", "/api/videos/<video_id>/captions", lambda w: f"/api/videos/{w.a['id']}/captions", who(401, 404, 201),
        body=lambda w: {"language": "en", "content": "WEBVTT\n\n00:00.000 --> 00:00.500\nmatrix cue\n"},
        unchanged=_a_has_no_captions),
    Row("GET", "/api/videos/<video_id>/captions", lambda w: f"/api/videos/{w.a['id']}/captions", who(404, 404, 200)),
    Row("DELETE", "/api/videos/<video_id>/captions/<language>", lambda w: f"/api/videos/{w.a['id']}/captions/en",
        who(401, 404, 204)),
    Row("GET", "/api/videos/<video_id>/download", lambda w: f"/api/videos/{w.a['id']}/download?rendition=original",
        who(404, 404, 302)),
    # the cover (issue 22): a frame of alice's video, chosen by her alone
    Row("PUT", "/api/videos/<video_id>/cover", lambda w: f"/api/videos/{w.a['id']}/cover", who(401, 404, 200, viewer=403),
        body=lambda w: {"time": 0}),
    # the reprocess row goes last among alice's video rows: it sends video A back to PENDING
    Row("POST", "/api/videos/<video_id>/reprocess", lambda w: f"/api/videos/{w.a['id']}/reprocess",
        who(401, 404, 202, viewer=403), unchanged=_a_not_requeued),
    # auto captions (the owner's): after the reprocess above, A is PENDING again, so the owner's call gets past
    # sign-in and ownership to the state check (409) and queues nothing
    Row("POST", "/api/videos/<video_id>/captions/auto", lambda w: f"/api/videos/{w.a['id']}/captions/auto",
        who(401, 404, 409)),
    # accounts (issue 12): every signed-in user sees their own account; the admin's routes are the admin's
    Row("GET", "/api/me", lambda w: "/api/me", who(401, 200, 200), owner_check=_me_is_alice),
    Row("GET", "/admin", lambda w: "/admin", admin_only(anon_page=True), leak_check=False),
    Row("GET", "/api/admin/users", lambda w: "/api/admin/users", admin_only(), leak_check=False),
    Row("PATCH", "/api/admin/users/<user_id>", lambda w: f"/api/admin/users/{w.sam_id}", admin_only(),
        body=lambda w: {"quota": {"max_videos": None}}, unchanged=_sam_untouched, leak_check=False),
    Row("POST", "/api/admin/invites", lambda w: "/api/admin/invites", admin_only(ok=201),
        body=lambda w: {"email": "invited-sec@example.com"}, leak_check=False),
    Row("GET", "/api/admin/stats", lambda w: "/api/admin/stats", admin_only(), leak_check=False),
    # watching (issue 22): each signed-in viewer's own history; alice's private playlist is hers alone
    Row("GET", "/api/me/history", lambda w: "/api/me/history", who(401, 200, 200)),
    Row("POST", "/api/me/history", lambda w: "/api/me/history", who(401, 404, 204),
        body=lambda w: {"video_id": w.a["id"], "position": 1}),
    Row("DELETE", "/api/me/history", lambda w: "/api/me/history", who(401, 204, 204)),
    Row("GET", "/api/playlists", lambda w: "/api/playlists", who(401, 200, 200)),
    Row("POST", "/api/playlists", lambda w: "/api/playlists", who(401, 201, 201), body=lambda w: {"title": "mine"}),
    Row("GET", "/api/playlists/<playlist_id>", lambda w: f"/api/playlists/{_playlist(w)['id']}", who(404, 404, 200)),
    Row("PATCH", "/api/playlists/<playlist_id>", lambda w: f"/api/playlists/{_playlist(w)['id']}",
        who(401, 404, 200), body=lambda w: {"description": "edited"}, unchanged=_playlist_kept),
    Row("POST", "/api/playlists/<playlist_id>/items", lambda w: f"/api/playlists/{_playlist(w)['id']}/items",
        who(401, 404, (200, 201)), body=lambda w: {"video_id": w.a["id"], "position": 0}, unchanged=_playlist_kept),
    Row("DELETE", "/api/playlists/<playlist_id>/items/<video_id>",
        lambda w: f"/api/playlists/{_playlist(w, 'emptied')['id']}/items/{w.a['id']}", who(401, 404, (204, 404)),
        unchanged=lambda w: None),
    Row("DELETE", "/api/playlists/<playlist_id>", lambda w: f"/api/playlists/{_playlist(w, 'doomed')['id']}",
        who(401, 404, 204)),
    Row("GET", "/playlists", lambda w: "/playlists", who(302, 200, 200)),
    Row("GET", "/playlists/<slug>", lambda w: f"/playlists/{_playlist(w)['slug']}", who(404, 404, 200)),
    # remote runners (issue 24): the admin manages them; the runners' API takes runner tokens only
    Row("GET", "/api/admin/runners", lambda w: "/api/admin/runners", admin_only(), leak_check=False),
    Row("POST", "/api/admin/runners", lambda w: "/api/admin/runners", admin_only(ok=201),
        body=lambda w: {"name": "sec-made"}, leak_check=False),
    Row("DELETE", "/api/admin/runners/<runner_id>", lambda w: f"/api/admin/runners/{w.runner_id}",
        admin_only(ok=204), leak_check=False),
    *[Row("POST", f"/api/runners/jobs/<job_id>/{action}", lambda w, a=action: f"/api/runners/jobs/{w.a['id']}/{a}",
          who(401, 401, 401, viewer=401, admin=401), body=lambda w: {"token": "x"})
      for action in ("uploads", "update", "success", "error", "abort", "chunks", "chunks/claim")],
    Row("POST", "/api/runners/jobs/request", lambda w: "/api/runners/jobs/request",
        who(401, 401, 401, viewer=401, admin=401), body=lambda w: {"wait": 0}),
]


def test_every_route_is_in_the_matrix(world):
    """A route (and method) added to the app without a row in MATRIX fails here."""
    from streamforge.web.hooks import StorageHook
    routes = {(rule.rule, m) for rule in world.app.url_map.iter_rules() for m in rule.methods - {"HEAD", "OPTIONS"}}
    routes.add((StorageHook.PATH, "POST"))  # answered in front of Flask (see web/hooks.py)
    covered = {(row.rule, row.method) for row in MATRIX}
    missing = sorted(routes - covered)
    assert not missing, f"routes without a row in the authorisation matrix: {missing}"
    stale = sorted((r, m) for r, m in covered - routes if m != "HEAD")
    assert not stale, f"matrix rows for routes that no longer exist: {stale}"
    # and every row's path really goes to the rule it claims to cover
    adapter = world.app.url_map.bind("127.0.0.1")
    for row in MATRIX:
        if row.rule == StorageHook.PATH:
            continue
        path = unquote(urlsplit(row.path(world)).path)
        rule, _ = adapter.match(path, method=row.method, return_rule=True)
        assert rule.rule == row.rule, (row.method, path, rule.rule)


def _leaks(w: World, text: str) -> list[str]:
    secrets = {"alice's video id": w.a["id"], "alice's title": w.marker, "alice's email": "alice-sec@",
               "alice's token prefix": w.alice_prefix, "alice's second video": w.a2["id"]}
    return [name for name, value in secrets.items() if value in text]


def test_authorisation_matrix(world):
    """Anonymous, another user (cookie and bearer) and the owner on every route: nothing of alice's
    is readable or changeable by anyone else."""
    world.activate()
    failures = []
    for row in MATRIX:
        path = row.path(world)
        for ident in IDENTITIES:
            s = world.session(ident)
            body = row.body(world) if row.body else None
            r = s.request(row.method, world.url + path, json=body, allow_redirects=False, timeout=30)
            want = row.expect[ident]
            allowed = want if isinstance(want, tuple) else (want,)
            label = f"{row.method} {path.split('?')[0]} as {ident}"
            if r.status_code not in allowed:
                failures.append(f"{label}: {r.status_code}, expected {want}: {r.text[:120]}")
                continue
            if r.status_code == 302 and ident in (ANON, DISABLED, DISABLED_BEARER) and row.rule in (
                    "/", "/upload", "/tokens", "/admin"):
                if not urlsplit(r.headers["Location"]).path == "/login":
                    failures.append(f"{label}: redirected to {r.headers['Location']}, not to /login")
            if ident != OWNER and row.leak_check and r.status_code < 400:
                leaked = _leaks(world, r.text + r.headers.get("Location", ""))
                if leaked:
                    failures.append(f"{label}: the answer shows {', '.join(leaked)}")
            if ident != OWNER and row.unchanged:
                try:
                    row.unchanged(world)
                except AssertionError as e:
                    failures.append(f"{label}: changed alice's data ({e})")
            if ident == OWNER and row.owner_check:
                try:
                    row.owner_check(world, r)
                except AssertionError as e:
                    failures.append(f"{label}: owner check failed ({e})")
    assert not failures, "\n".join(failures)


def test_watch_page_visibility(world):
    """A private video's page is its owner's alone; unlisted and public ones are anyone's."""
    world.activate()
    vid, slug = world.a2["id"], world.a2["slug"]
    anon, bob = world.session(ANON), world.session(OTHER)
    owner = requests.Session()
    owner.headers.update(world.h(world.alice))
    for visibility, others in (("private", 404), ("unlisted", 200), ("public", 200), ("private", 404)):
        r = requests.patch(f"{world.url}/api/videos/{vid}", json={"visibility": visibility},
                           headers=world.h(world.alice), timeout=10)
        assert r.status_code == 200
        for s, want in ((anon, others), (bob, others)):
            page = s.get(f"{world.url}/watch/{slug}", timeout=10)
            assert page.status_code == want, (visibility, page.status_code)
            if want == 404:
                assert f"/play/{vid}/" not in page.text  # no signed link leaks through the error page
            else:
                # the page's signed master link plays for a stranger
                data = re.search(r'<script type="application/json" id="video-data">(.*?)</script>', page.text, re.S)
                url = json.loads(data.group(1))["video"]["master_playlist_url"]
                assert url.startswith(f"{world.url}/play/{vid}/master.m3u8?")
                assert requests.get(url, timeout=10).status_code == 200
        assert owner.get(f"{world.url}/watch/{slug}", timeout=10).status_code == 200
    # a guessed slug (the readable part right, the random part not) is a 404 like a missing video
    base = slug.rsplit("-", 1)[0]
    assert requests.get(f"{world.url}/watch/{base}-aaaaaaaaaa", timeout=10).status_code == 404


# ---------------------------------------------------------------------------------------------
# Guessed playlist and segment URLs


def test_guessed_media_urls_are_refused(world):
    """The store serves nothing of a video without a signature, whatever its visibility; /play wants
    this video's own unexpired signature; a deleted video's links stop working."""
    world.activate()
    world.store.prepare([world.cfg.base_url])
    vid = world.a2["id"]
    keys = [o.key for o in world.store.list(f"processed/{vid}/")]
    picks = {"master": f"processed/{vid}/master.m3u8",
             "variant playlist": next(k for k in keys if k.endswith("/index.m3u8") or
                                      (k.endswith(".m3u8") and not k.endswith("master.m3u8"))),
             "segment": next(k for k in keys if k.endswith(".m4s")),
             "init": next(k for k in keys if k.endswith(".mp4")),
             "thumbnail": next(k for k in keys if k.endswith(".jpg")),
             "original": world.a2["original"]["key"]}
    for visibility in ("private", "unlisted", "public"):
        requests.patch(f"{world.url}/api/videos/{vid}", json={"visibility": visibility},
                       headers=world.h(world.alice), timeout=10).raise_for_status()
        for name, key in picks.items():
            r = requests.get(world.store.public_url(key), timeout=10)
            assert r.status_code == 403, (visibility, name, r.status_code)
    seg_rel = picks["segment"][len(f"processed/{vid}/"):]
    for query in ("", "exp=9999999999&sig=" + "A" * 24, world.sig(world.b["id"]), world.sig(world.a["id"])):
        for rel in ("master.m3u8", seg_rel):
            r = requests.get(f"{world.url}/play/{vid}/{rel}?{query}", allow_redirects=False, timeout=10)
            assert r.status_code == 403, (query[:20], rel, r.status_code)
    # the presigned segment URL a player gets covers that key alone (the video is public now)
    r = requests.get(f"{world.url}/play/{vid}/{seg_rel}?{world.sig(vid, 'public')}", allow_redirects=False,
                     timeout=10)
    assert r.status_code == 302
    signed = r.headers["Location"]
    assert requests.get(signed, timeout=10).status_code == 200
    other_key = next(k for k in keys if k.endswith(".m4s") and k != picks["segment"])
    forged = signed.replace(picks["segment"], other_key)
    assert forged != signed and requests.get(forged, timeout=10).status_code == 403
    # deleting the video kills its links at once, although their signatures have not expired
    master_link = f"{world.url}/play/{vid}/master.m3u8?{world.sig(vid, 'public')}"
    assert requests.get(master_link, timeout=10).status_code == 200
    assert requests.delete(f"{world.url}/api/videos/{vid}", headers=world.h(world.alice), timeout=10).status_code == 204
    assert requests.get(master_link, timeout=10).status_code == 404
    assert requests.get(signed, timeout=10).status_code in (403, 404)


# ---------------------------------------------------------------------------------------------
# CSRF


def _login(client, token: str) -> str:
    assert client.get(f"/login?token={token}").status_code == 302
    page = client.get("/upload").get_data(as_text=True)
    return re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)


@pytest.fixture
def csrf_app(seaweed, make_app, tmp_path):
    cfg = seaweed.make_config(tmp_path, env={"STREAMFORGE_UPLOAD_MULTIPART_THRESHOLD": str(5 * MiB),
                                             "STREAMFORGE_UPLOAD_PART_SIZE": str(5 * MiB)})
    return make_app(cfg)


def test_every_cookie_authenticated_change_needs_the_csrf_token(csrf_app, seaweed):
    """Each state-changing route, from a signed-in browser: refused without X-CSRF-Token (and nothing
    changes), accepted with it. The list of routes comes from the app, so none is forgotten."""
    app = csrf_app
    client = app.test_client()
    with dbmod.db.connection_context():
        user = users.add_user("csrf@example.com", users.ADMIN)  # for the admin's routes too
        other = users.add_user("csrf-other@example.com")
        _, tok = videos.create_token(user, "browser")
        spare, _ = videos.create_token(user, "spare")
        spare_runner, _ = runners.create_runner("csrf-runner")
    h = {"Authorization": f"Bearer {tok}"}
    csrf = _login(client, tok)

    def make(size=10, data=None, process=False):
        api = app.test_client()
        r = api.post("/api/videos", json={"title": "t", "filename": "a.mp4", "size": size,
                                          "content_type": "video/mp4"}, headers=h).get_json()
        if data is not None:
            requests.put(r["upload"]["url"], headers=r["upload"]["headers"], data=data, timeout=30).raise_for_status()
        if process:
            assert api.post(f"/api/videos/{r['video']['id']}/upload/complete", json={}, headers=h).status_code == 200
            assert drain_queue() == ["failed"]  # not a video: FAILED quickly, and then reprocessable
        return r["video"]["id"]

    put_video = make(data=b"0123456789")
    failed_video = make(data=b"not a video", size=11, process=True)
    multipart = make(size=6 * MiB)
    doomed = make()
    video_state = lambda vid: app.test_client().get(f"/api/videos/{vid}", headers=h).get_json()  # noqa: E731
    kept, doomed_list = (app.test_client().post("/api/playlists", json={"title": t}, headers=h).get_json()["id"]
                         for t in ("kept", "doomed"))
    cases = {
        ("POST", "/api/videos"): ("/api/videos", {"title": "t", "filename": "a.mp4", "size": 10,
                                                  "content_type": "video/mp4"}, 201),
        ("POST", "/api/videos/<video_id>/upload/parts"): (f"/api/videos/{multipart}/upload/parts",
                                                          {"part_numbers": [1]}, 200),
        ("POST", "/api/videos/<video_id>/upload/complete"): (f"/api/videos/{put_video}/upload/complete", {}, 200),
        ("PATCH", "/api/videos/<video_id>"): (f"/api/videos/{put_video}", {"title": "changed"}, 200),
        ("DELETE", "/api/videos/<video_id>"): (f"/api/videos/{doomed}", None, 204),
        ("POST", "/api/videos/<video_id>/reprocess"): (f"/api/videos/{failed_video}/reprocess", None, 202),
        ("POST", "/api/videos/<video_id>/views"): (f"/api/videos/{put_video}/views",
                                                   {"session": "csrf-session-1", "watched_seconds": 1}, 204),
        ("POST", "/api/videos/<video_id>/captions"): (f"/api/videos/{put_video}/captions",
                                                      {"language": "en", "content": "WEBVTT\n\n00:01.000 --> 00:02.000\nx\n"},
                                                      201),
        ("DELETE", "/api/videos/<video_id>/captions/<language>"): (f"/api/videos/{put_video}/captions/en", None, 204),
        # past the CSRF check: the video is not COMPLETED, so nothing is transcribed
        ("POST", "/api/videos/<video_id>/captions/auto"): (f"/api/videos/{put_video}/captions/auto", None, 409),
        ("POST", "/api/tokens"): ("/api/tokens", {"name": "new"}, 201),
        ("DELETE", "/api/tokens/<token_id>"): (f"/api/tokens/{spare.id}", None, 204),
        ("PATCH", "/api/admin/users/<user_id>"): (f"/api/admin/users/{other.id}", {"role": "viewer"}, 200),
        ("POST", "/api/admin/invites"): ("/api/admin/invites", {"email": "csrf-invite@example.com"}, 201),
        ("POST", "/api/me/history"): ("/api/me/history", {"video_id": put_video, "position": 1}, 204),
        ("DELETE", "/api/me/history"): ("/api/me/history", None, 204),
        ("POST", "/api/playlists"): ("/api/playlists", {"title": "new"}, 201),
        ("PATCH", "/api/playlists/<playlist_id>"): (f"/api/playlists/{kept}", {"title": "changed"}, 200),
        ("POST", "/api/playlists/<playlist_id>/items"): (f"/api/playlists/{kept}/items", {"video_id": put_video}, 201),
        ("DELETE", "/api/playlists/<playlist_id>/items/<video_id>"): (f"/api/playlists/{kept}/items/{put_video}",
                                                                      None, 204),
        ("DELETE", "/api/playlists/<playlist_id>"): (f"/api/playlists/{doomed_list}", None, 204),
        ("PUT", "/api/videos/<video_id>/cover"): (f"/api/videos/{put_video}/cover", {"time": 0}, 409),
        ("POST", "/api/admin/runners"): ("/api/admin/runners", {"name": "csrf-made"}, 201),
        ("DELETE", "/api/admin/runners/<runner_id>"): (f"/api/admin/runners/{spare_runner.id}", None, 204),
        ("POST", "/api/runners/jobs/request"): ("/api/runners/jobs/request", {"wait": 0}, 401),  # runner tokens only
        **{("POST", f"/api/runners/jobs/<job_id>/{a}"): (f"/api/runners/jobs/{put_video}/{a}", {"token": "x"}, 401)
           for a in ("uploads", "update", "success", "error", "abort", "chunks", "chunks/claim")},
        ("POST", "/api/me/passkeys/options"): ("/api/me/passkeys/options", None, 200),
        ("POST", "/api/me/passkeys"): ("/api/me/passkeys", {}, 400),  # no credential
        ("DELETE", "/api/me/passkeys/<passkey_id>"): ("/api/me/passkeys/nope", None, 404),
        ("POST", "/login/passkey/options"): ("/login/passkey/options", None, 200),
        ("POST", "/login/passkey"): ("/login/passkey", {}, 400),  # no assertion
        ("POST", "/login"): ("/login", None, 401),  # no email: refused, still signed in
        ("POST", "/login/invite"): ("/login/invite", None, 403),  # no invite
        ("POST", "/account"): ("/account", None, 400),  # no new password
        ("POST", "/login/switch"): ("/login/switch", None, 401),  # no link: refused, and signed out
        ("POST", "/logout"): ("/logout", None, 302),
    }
    changing = {(rule.rule, m) for rule in app.url_map.iter_rules()
                for m in rule.methods & {"POST", "PUT", "PATCH", "DELETE"} if not rule.rule.startswith("/hooks/")}
    assert changing == {(rule, m) for m, rule in cases}, "a state-changing route is missing from this test"
    before = {vid: video_state(vid) for vid in (put_video, failed_video, multipart, doomed)}
    with dbmod.db.connection_context():
        tokens_before = ApiToken.select().where(ApiToken.revoked_at.is_null()).count()
    for (method, rule), (path, body, _) in cases.items():
        for header in ({}, {"X-CSRF-Token": ""}, {"X-CSRF-Token": csrf[:-1]}):
            r = client.open(path, method=method, json=body, headers=header)
            # logout answers a refused POST with 400 (it is exempt from the JSON 403 so a stale page can sign out)
            assert r.status_code == (400 if rule == "/logout" else 403), (method, rule, header, r.status_code)
    # nothing changed
    assert {vid: video_state(vid) for vid in before} == before
    with dbmod.db.connection_context():
        assert ApiToken.select().where(ApiToken.revoked_at.is_null()).count() == tokens_before
    assert client.get("/api/videos").status_code == 200  # still signed in
    for (method, rule), (path, body, ok) in cases.items():
        # the session's token as it is now (a refused sign-in link ends the session and starts another)
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/login").get_data(as_text=True)).group(1)
        r = client.open(path, method=method, json=body, headers={"X-CSRF-Token": csrf})
        assert r.status_code == ok, (method, rule, r.status_code, r.get_data(as_text=True)[:200])


def test_a_bogus_bearer_header_does_not_waive_csrf_for_a_cookie_session(client, token_for):
    tok = token_for("csrf-bearer@example.com")
    assert client.get(f"/login?token={tok}").status_code == 302
    body = {"title": "t", "filename": "a.mp4", "size": 10, "content_type": "video/mp4"}
    r = client.post("/api/videos", json=body, headers={"Authorization": "Bearer not-a-token"})
    assert r.status_code in (401, 403), r.status_code


# ---------------------------------------------------------------------------------------------
# Upload scope


def test_presigned_urls_write_only_their_own_key(client, auth, seaweed, config):
    """Changing the key, bucket, expiry or part of a presigned upload URL breaks its signature."""
    h = auth("scope@example.com")
    r = client.post("/api/videos", json={"title": "t", "filename": "a.mp4", "size": 5,
                                         "content_type": "video/mp4"}, headers=h).get_json()
    url, key = r["upload"]["url"], r["video"]["original"]["key"]
    other = client.post("/api/videos", json={"title": "t", "filename": "b.mp4", "size": 5,
                                             "content_type": "video/mp4"}, headers=h).get_json()["video"]
    victim = other["original"]["key"]
    bucket = seaweed.bucket
    assert "X-Amz-Signature=" in url and f"/{bucket}/{key}?" in url
    tampered = {
        "another video's original": url.replace(key, victim),
        "a processed output": url.replace(key, f"processed/{r['video']['id']}/master.m3u8"),
        "a sibling key": url.replace(key, key + ".extra"),
        "another bucket": url.replace(f"/{bucket}/", "/another-bucket/"),
        "a longer expiry": re.sub(r"X-Amz-Expires=\d+", "X-Amz-Expires=604800", url),
    }
    sent = r["upload"]["headers"]
    for name, bad in tampered.items():
        assert bad != url, name
        assert requests.put(bad, data=b"hello", headers=sent, timeout=10).status_code == 403, name
    # the signature is for a PUT: another method with it is refused too
    assert requests.post(url, data=b"hello", headers=sent, timeout=10).status_code >= 400
    assert seaweed.store.stat(victim) is None and seaweed.store.stat(key + ".extra") is None
    assert seaweed.store.list(f"processed/{r['video']['id']}/") == []
    assert requests.put(url, data=b"hello", headers=sent, timeout=10).status_code == 200
    assert seaweed.store.stat(key).size == 5


def test_multipart_part_urls_are_bound_to_their_upload_and_part(make_app, seaweed, tmp_path):
    cfg = seaweed.make_config(tmp_path, env={"STREAMFORGE_UPLOAD_MULTIPART_THRESHOLD": str(5 * MiB),
                                             "STREAMFORGE_UPLOAD_PART_SIZE": str(5 * MiB)})
    client = make_app(cfg).test_client()
    with dbmod.db.connection_context():
        _, tok = videos.create_token(videos.get_or_create_user("parts@example.com"))
    h = {"Authorization": f"Bearer {tok}"}
    made = [client.post("/api/videos", json={"title": "t", "filename": "a.mp4", "size": 11 * MiB,
                                              "content_type": "video/mp4"}, headers=h).get_json() for _ in range(2)]
    mine, theirs = made
    url = client.post(f"/api/videos/{mine['video']['id']}/upload/parts", json={"part_numbers": [1]},
                      headers=h).get_json()["urls"]["1"]
    chunk = b"p" * (5 * MiB)
    for bad in (url.replace(mine["upload"]["upload_id"], theirs["upload"]["upload_id"]),
                url.replace("partNumber=1", "partNumber=2"),
                url.replace(mine["video"]["original"]["key"], theirs["video"]["original"]["key"])):
        assert bad != url
        assert requests.put(bad, data=chunk, timeout=30).status_code == 403
    for m in made:
        assert seaweed.store.list_parts(m["video"]["original"]["key"], m["upload"]["upload_id"]) == []
    assert requests.put(url, data=chunk, timeout=30).status_code == 200


def test_expired_upload_urls_are_refused(make_app, seaweed, tmp_path):
    """The API presigns for [upload] url_ttl; the store refuses a URL once it has expired."""
    cfg = seaweed.make_config(tmp_path, env={"STREAMFORGE_UPLOAD_URL_TTL": "60"})
    client = make_app(cfg).test_client()
    with dbmod.db.connection_context():
        _, tok = videos.create_token(videos.get_or_create_user("ttl@example.com"))
    r = client.post("/api/videos", json={"title": "t", "filename": "a.mp4", "size": 5, "content_type": "video/mp4"},
                    headers={"Authorization": f"Bearer {tok}"}).get_json()
    assert "X-Amz-Expires=60&" in r["upload"]["url"] or r["upload"]["url"].endswith("X-Amz-Expires=60")
    key = r["video"]["original"]["key"]
    # the same signature with a 1 s life, made by the store the way the API makes it
    short = seaweed.store.presign_put(key, "video/mp4", 1)["url"]
    time.sleep(2.5)
    assert requests.put(short, data=b"hello", timeout=10).status_code == 403
    assert seaweed.store.stat(key) is None


def _notify(client, config, key: str):
    """The SeaweedFS filer's notification for `key`, as the store sends it."""
    body = {"event_type": "create", "key": f"/buckets/{config.storage.bucket}/{key}",
            "message": {"new_entry": {"name": key.rsplit("/", 1)[1], "attributes": {"file_size": 1}}}}
    return client.post("/hooks/storage", json=body, headers={"Authorization": f"Bearer {config.webhook.token}"})


def test_uploads_over_the_limit_or_the_declared_size_are_rejected(make_app, seaweed, tmp_path):
    """413 at create over [upload] max_size; the presigned PUT takes only the declared size; bytes that
    reach the store anyway (a store that ignores the signed length) are rejected when the notification
    comes: object deleted, video FAILED, nothing queued."""
    cfg = seaweed.make_config(tmp_path, env={"STREAMFORGE_UPLOAD_MAX_SIZE": "100000"})
    client = make_app(cfg).test_client()
    with dbmod.db.connection_context():
        _, tok = videos.create_token(videos.get_or_create_user("size@example.com"))
    h = {"Authorization": f"Bearer {tok}"}

    def create(size):
        return client.post("/api/videos", json={"title": "t", "filename": "a.mp4", "size": size,
                                                "content_type": "video/mp4"}, headers=h)

    r = create(100001)
    assert r.status_code == 413 and r.get_json()["error"]["code"] == "too_large"
    cases = {"over the limit": (100000, 150000, "over the 100000 byte limit"),
             "over the declared size": (50000, 60000, "but 50000 were declared")}
    for name, (declared, sent, reason) in cases.items():
        made = create(declared).get_json()
        vid, key = made["video"]["id"], made["video"]["original"]["key"]
        up = made["upload"]
        assert requests.put(up["url"], headers=up["headers"], data=b"z" * sent, timeout=30).status_code == 403
        assert seaweed.store.stat(key) is None
        seaweed.store.put_bytes(key, b"z" * sent)
        hook = _notify(client, cfg, key)
        assert hook.status_code == 200 and hook.get_json()["outcomes"] == {"rejected": 1}, (name, hook.get_json())
        v = client.get(f"/api/videos/{vid}", headers=h).get_json()
        assert v["status"] == "FAILED" and reason in v["error_message"], (name, v["error_message"])
        assert seaweed.store.stat(key) is None, name
        assert vid not in queued_video_ids()
        # a replay of the notification changes nothing (the object is gone)
        assert _notify(client, cfg, key).get_json()["outcomes"] in ({"already": 1}, {"missing": 1})
        assert client.get(f"/api/videos/{vid}", headers=h).get_json() == v


def test_an_original_replaced_after_acceptance_is_not_processed(make_app, seaweed, tmp_path):
    """Issue 20, hole 1: the same URL, after acceptance, stored other bytes (any size) over the original."""
    cfg = seaweed.make_config(tmp_path, env={"STREAMFORGE_PIPELINE_HEIGHTS": "240"})
    client = make_app(cfg).test_client()
    with dbmod.db.connection_context():
        _, tok = videos.create_token(videos.get_or_create_user("swap@example.com"))
    h = {"Authorization": f"Bearer {tok}"}
    clip = make_video(tmp_path / "c.mp4", width=320, height=240, seconds=1).read_bytes()
    made = client.post("/api/videos", json={"title": "t", "filename": "a.mp4", "size": len(clip),
                                            "content_type": "video/mp4"}, headers=h).get_json()
    vid, url, sent = made["video"]["id"], made["upload"]["url"], made["upload"]["headers"]
    key = made["video"]["original"]["key"]
    assert requests.put(url, data=clip, headers=sent, timeout=30).status_code == 200
    assert client.post(f"/api/videos/{vid}/upload/complete", json={}, headers=h).get_json()["upload_status"] == "UPLOADED"
    before = seaweed.store.stat(key)
    # the same URL, again: more bytes than declared, or as many other bytes: refused, the original unchanged
    assert requests.put(url, data=clip + b"\0" * 1_000_000, headers=sent, timeout=30).status_code == 403
    assert requests.put(url, data=bytes(len(clip)), headers=sent, timeout=30).status_code in (403, 412)
    assert seaweed.store.stat(key).etag == before.etag
    assert drain_queue() == ["completed"]
    v = client.get(f"/api/videos/{vid}", headers=h).get_json()
    assert v["status"] == "COMPLETED" and v["original"]["size"] == len(clip)


# ---------------------------------------------------------------------------------------------
# Request bodies, the webhook's token and parser limits


def _raw_post(port: int, path: str, headers: dict, total: int, chunked: bool, send: int) -> bytes:
    """Announce a `total`-byte body (or stream one) and send up to `send` bytes of it, watching for an
    answer; returns the answer that came while the body was still arriving (b"" if none). The body is
    then finished, so the server's thread ends its request cleanly either way."""
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nConnection: close\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head += "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {total}\r\n"
    piece = b"x" * (256 * 1024)

    def frame(data: bytes) -> bytes:
        return b"%x\r\n%s\r\n" % (len(data), data) if chunked else data

    sock = socket.create_connection(("127.0.0.1", port), 5)
    try:
        sock.sendall((head + "\r\n").encode())
        sent, early = 0, b""
        sock.settimeout(2)
        while sent < send and not early:
            try:
                sock.sendall(frame(piece))
            except OSError:  # a send that blocks for 2 s: the server stopped reading
                break
            sent += len(piece)
            if select.select([sock], [], [], 0)[0]:
                early = sock.recv(200)
        if not early:
            sock.settimeout(3)
            try:
                early = sock.recv(200)
            except OSError:
                early = b""
        if early:
            return early
        try:  # nobody answered: finish the body and let the server answer it
            sock.settimeout(30)
            while sent < total:
                sock.sendall(frame(piece[:min(len(piece), total - sent)]))
                sent += len(piece)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
            sock.recv(200)
        except OSError:
            pass
        return b""
    finally:
        sock.close()


@pytest.mark.parametrize("route,chunked,statuses", [
    ("/hooks/storage", False, (413,)),
    ("/hooks/storage", True, (413,)),
    ("/api/videos", False, (413,)),
    # (werkzeug cuts a chunked body at MAX_CONTENT_LENGTH: what is left is not JSON, a 400)
    ("/api/videos", True, (400, 413)),
], ids=["webhook-length", "webhook-chunked", "api-length", "api-chunked"])
def test_oversized_bodies_are_refused_without_being_read(world, route, chunked, statuses):
    """A body far over the limit (64 MiB announced or streamed) is refused before 8 MiB of it arrived,
    instead of being read into the web app's memory whatever its size."""
    world.activate()
    token = world.cfg.webhook.token if route.startswith("/hooks") else world.alice
    answer = _raw_post(int(world.url.rsplit(":", 1)[1]), route, {"Authorization": f"Bearer {token}"},
                       total=64 * MiB, chunked=chunked, send=8 * MiB)
    assert answer, "no answer: the server is still reading the body"
    assert int(answer.split()[1]) in statuses, answer[:60]


def test_webhook_token_nesting_and_size(world):
    world.activate()
    tok = world.cfg.webhook.token
    url = f"{world.url}/hooks/storage"

    def post(body, token=tok, **kw):
        data = body if isinstance(body, bytes) or hasattr(body, "__next__") else json.dumps(body).encode()
        return requests.post(url, data=data, headers={"Authorization": f"Bearer {token}",
                                                      "Content-Type": "application/json"}, timeout=30, **kw)

    # wrong tokens: same length, a prefix, the token with extra, another scheme, none
    flipped = tok[:-1] + ("A" if tok[-1] != "A" else "B")
    for bad in (flipped, tok[:-1], tok + "x", "", world.alice):
        assert post({"Records": []}, token=bad).status_code == 401
    assert requests.post(url, json={"Records": []}, headers={"Authorization": f"Basic {tok}"}, timeout=10).status_code == 401
    assert post({"Records": []}).status_code == 200
    # nesting: 16 levels pass the limit, 17 do not
    def nested(depth):
        value = 1
        for _ in range(depth - 1):
            value = [value]
        return value
    ok = post({"Records": [], "x": nested(15)})
    deep = post({"Records": [], "x": nested(16)})
    assert ok.status_code == 200, ok.text
    assert deep.status_code == 400 and "nested" in deep.json()["error"]["message"]
    # a body too deep for Python's own JSON parser is a 400 too, not a crash
    assert post(b"[" * 100000 + b"]" * 100000).status_code in (400, 413)
    # size: exactly at the limit is read; one byte more is refused (announced or chunked)
    limit = world.cfg.webhook.max_body_bytes
    body = b'{"Records": [], "pad": "' + b"x" * (limit - 26) + b'"}'
    assert len(body) == limit and post(body).status_code == 200
    assert post(body[:-2] + b'x"}').status_code == 413
    chunked = post(iter([body[:-2], b'x"}']))  # a generator body goes out chunked
    assert chunked.status_code == 413


def test_webhook_token_is_compared_in_constant_time(client, config, monkeypatch):
    """Read the code: the bearer token is compared with hmac.compare_digest, and nothing else."""
    from streamforge.web import hooks
    source = inspect.getsource(hooks.StorageHook)
    assert "hmac.compare_digest(" in source
    assert not re.search(r"token\s*(==|!=)|(==|!=)\s*(c\.webhook|self)\.token", source)
    calls = []
    real = hmac.compare_digest

    class Spy:
        @staticmethod
        def compare_digest(a, b):
            calls.append((a, b))
            return real(a, b)

    monkeypatch.setattr(hooks, "hmac", Spy)
    r = client.post("/hooks/storage", json={"Records": []}, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and calls == [(b"nope", config.webhook.token.encode())]


# ---------------------------------------------------------------------------------------------
# Login redirects


@pytest.mark.parametrize("target", [
    "//evil.example/", "/\\evil.example/", "https://evil.example/",
    "/\t/evil.example/", "/\n/evil.example/",
])
def test_sign_in_never_redirects_off_site(client, token_for, target):
    tok = token_for("next@example.com")
    r = client.get("/login", query_string={"token": tok, "next": target})
    assert r.status_code == 302
    location = r.headers["Location"]
    parts = urlsplit(location)
    assert not parts.netloc or parts.netloc == "localhost", location
    assert not location.startswith("//") and "evil" not in parts.netloc, location
