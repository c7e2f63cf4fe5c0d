"""Private and unlisted outputs are never readable by someone who should not read them, CDN or not.

On the real SeaweedFS store with `[cdn] base_url` set: the store serves nothing without a signature
(an open policy left by an older version is removed at start), the CDN's origin (`/processed/...` on
the app) serves public videos only, and making a video private kills every signed playback and
caption link handed out before, at once (docs/stores.md, "Behind a CDN").
"""
from __future__ import annotations

import dataclasses
import json
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests
from conftest import LiveServer, drain_queue, free_port
from media_factory import make_video

from streamforge.commands.main import _prepare_bucket
from streamforge.store import db as dbmod
from streamforge.store import videos

VTT = "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nA caption only its viewers may read\n"


@pytest.fixture(scope="module")
def cdn(seaweed, tmp_path_factory):
    """The app on a real port with `[cdn] base_url` set to the address a CDN in front of it has (a CDN
    forwards to its origin unchanged, so here the CDN is the app's own address under another name)."""
    from streamforge.web import create_app
    tmp = tmp_path_factory.mktemp("cdn")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cfg = seaweed.make_config(tmp / "data", env={
        "STREAMFORGE_SERVER_BASE_URL": base, "STREAMFORGE_CDN_BASE_URL": f"http://localhost:{port}",
        "STREAMFORGE_PIPELINE_HEIGHTS": "240", "STREAMFORGE_PLAYBACK_SIGNED_URL_TTL": "3600"})
    cfg = dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, port=port))
    # an older version opened processed/ to everyone when a CDN was set: start-up must close it again
    policy = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": ["*"]}, "Action": ["s3:GetObject"],
        "Resource": [f"arn:aws:s3:::{cfg.storage.bucket}/processed/*"]}]}
    seaweed.store._client.set_bucket_policy(bucket_name=cfg.storage.bucket, policy=json.dumps(policy))
    _prepare_bucket(cfg, seaweed.store)
    app = create_app(cfg)
    clip = make_video(tmp / "clip.mp4", width=320, height=240, seconds=1)
    with LiveServer(app, port=port) as live:
        dbmod.init_db(cfg.database_url)
        with dbmod.db.connection_context():
            _, token = videos.create_token(videos.get_or_create_user("cdn-owner@example.com"), "main")
        live.cfg, live.store, live.h = cfg, seaweed.store, {"Authorization": f"Bearer {token}"}
        ids = []
        for title in ("stays private", "unlisted", "public", "made private"):
            data = clip.read_bytes()
            r = requests.post(f"{live.url}/api/videos", json={"title": title, "filename": "c.mp4", "size": len(data),
                                                              "content_type": "video/mp4"}, headers=live.h, timeout=10)
            made = r.json()
            requests.put(made["upload"]["url"], data=data, headers=made["upload"].get("headers"),
                         timeout=30).raise_for_status()
            vid = made["video"]["id"]
            assert requests.post(f"{live.url}/api/videos/{vid}/upload/complete", json={}, headers=live.h,
                                 timeout=30).status_code == 200
            ids.append(vid)
        assert drain_queue() == ["completed"] * 4
        for vid in ids:
            r = requests.post(f"{live.url}/api/videos/{vid}/captions", json={"language": "en", "content": VTT},
                              headers=live.h, timeout=10)
            assert r.status_code == 201, r.text
        live.ids = dict(zip(("private", "unlisted", "public", "made_private"), ids, strict=True))
        for name, visibility in (("unlisted", "unlisted"), ("public", "public"), ("made_private", "unlisted")):
            set_visibility(live, live.ids[name], visibility)
        yield live


def set_visibility(live, vid: str, visibility: str) -> None:
    r = requests.patch(f"{live.url}/api/videos/{vid}", json={"visibility": visibility}, headers=live.h, timeout=10)
    assert r.status_code == 200 and r.json()["visibility"] == visibility, r.text


def owner_view(live, vid: str) -> dict:
    return requests.get(f"{live.url}/api/videos/{vid}", headers=live.h, timeout=10).json()


def output_keys(live, vid: str) -> list[str]:
    """Every object of the video's output, one of each kind (playlists, init, segment, picture, captions)."""
    keys = [o.key for o in live.store.list(f"processed/{vid}/")]
    picks = {k.rsplit(".", 1)[-1]: k for k in keys}
    assert {"m3u8", "m4s", "mp4", "jpg", "vtt"} <= set(picks), sorted(picks)
    return sorted(set(picks.values()) | {k for k in keys if k.endswith("master.m3u8")})


def anonymous_status(url: str) -> int:
    return requests.get(url, timeout=10, allow_redirects=False).status_code


def refs(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def every_link(live, video: dict) -> list[str]:
    """What a viewer holds: the master, a variant, a media file, a thumbnail and a caption link."""
    master = requests.get(video["master_playlist_url"], timeout=10)
    assert master.status_code == 200, master.text
    variant_url = urljoin(video["master_playlist_url"], refs(master.text)[0])
    variant = requests.get(variant_url, timeout=10)
    assert variant.status_code == 200
    segment_url = urljoin(variant_url, refs(variant.text)[0])
    return [video["master_playlist_url"], variant_url, segment_url, video["cover_url"], video["captions"][0]["url"]]


def test_start_up_leaves_nothing_of_the_store_anonymously_readable(cdn):
    for name, vid in cdn.ids.items():
        for key in output_keys(cdn, vid):
            assert anonymous_status(cdn.store.public_url(key)) == 403, (name, key)


def test_private_and_unlisted_outputs_are_not_served_through_the_cdn(cdn):
    for name in ("private", "unlisted"):
        vid = cdn.ids[name]
        video = owner_view(cdn, vid)
        # their links are the app's signed ones, never the CDN's
        for url in (video["master_playlist_url"], video["cover_url"], video["captions"][0]["url"]):
            assert url.startswith(f"{cdn.url}/play/{vid}/") and "sig=" in url, url
            assert anonymous_status(url.split("?")[0]) == 403, url
        # and the CDN's origin serves none of their files, whatever path is guessed
        for key in output_keys(cdn, vid):
            assert anonymous_status(f"{cdn.cfg.cdn.base_url}/{key}") == 404, (name, key)


def test_public_video_plays_through_the_cdn(cdn):
    vid = cdn.ids["public"]
    video = owner_view(cdn, vid)
    assert video["master_playlist_url"] == f"{cdn.cfg.cdn.base_url}/processed/{vid}/" + \
        video["master_playlist_url"].split(f"/processed/{vid}/", 1)[1]
    links = every_link(cdn, video)
    assert all(link.startswith(cdn.cfg.cdn.base_url) and "sig=" not in link for link in links), links
    for link in links:
        r = requests.get(link, timeout=10)
        assert r.status_code == 200, (link, r.status_code)
        assert r.headers["Cache-Control"].startswith("public"), link
    assert requests.get(links[2], timeout=10).content[4:8] in (b"styp", b"moof")
    # a download stays behind the API's own check even for a public video
    assert anonymous_status(f"{cdn.cfg.cdn.base_url}/processed/{vid}/downloads/240p.mp4") == 404


def test_making_a_video_private_kills_every_link_handed_out_before(cdn):
    vid = cdn.ids["made_private"]
    handed_out = every_link(cdn, owner_view(cdn, vid))          # unlisted: signed /play links
    for link in handed_out:
        assert anonymous_status(link) in (200, 302), link
    redirect = requests.get(handed_out[2], timeout=10, allow_redirects=False).headers["Location"]
    assert int(parse_qs(urlsplit(redirect).query)["X-Amz-Expires"][0]) <= 120  # what a copied store URL lives
    set_visibility(cdn, vid, "public")
    public_links = every_link(cdn, owner_view(cdn, vid))        # public: the CDN's links
    set_visibility(cdn, vid, "private")
    for link in handed_out + public_links:
        assert anonymous_status(link) in (403, 404), link
    for key in output_keys(cdn, vid):
        assert anonymous_status(cdn.store.public_url(key)) == 403, key
    # the owner gets fresh links that work
    for link in every_link(cdn, owner_view(cdn, vid)):
        assert anonymous_status(link) in (200, 302), link
