"""Resume positions, the history and playlists through the API (a fresh app on SQLite, no browser)."""
from __future__ import annotations

import pytest


def make(client, h, title, visibility="public") -> dict:
    r = client.post("/api/videos", json={"title": title, "filename": f"{title}.mp4", "size": 1000,
                                         "content_type": "video/mp4", "visibility": visibility}, headers=h)
    assert r.status_code == 201, r.get_json()
    return r.get_json()["video"]


@pytest.fixture
def people(client, auth):
    ana, ben = auth("ana@example.com"), auth("ben@example.com")
    return ana, ben


def test_positions_make_a_history_newest_first_and_near_the_end_is_watched(client, people):
    ana, ben = people
    one, two = make(client, ana, "one"), make(client, ben, "two")
    priv = make(client, ben, "hidden", "private")
    assert client.post("/api/me/history", json={"video_id": one["id"], "position": 7.5, "duration": 60},
                       headers=ana).status_code == 204
    assert client.post("/api/me/history", json={"video_id": two["id"], "position": 58, "duration": 60},
                       headers=ana).status_code == 204
    # another's private video is not there to watch: 404, nothing recorded
    assert client.post("/api/me/history", json={"video_id": priv["id"], "position": 3}, headers=ana).status_code == 404
    items = client.get("/api/me/history", headers=ana).get_json()["items"]
    assert [i["video"]["id"] for i in items] == [two["id"], one["id"]]
    assert items[1]["position"] == 7.5 and items[1]["watched"] is False and items[1]["watched_at"].endswith("Z")
    assert items[0]["watched"] is True  # 2 s before the end of a minute
    assert items[0]["video"]["title"] == "two" and "status" in items[0]["video"]
    # a new report moves the video to the top and replaces the position
    client.post("/api/me/history", json={"video_id": one["id"], "position": 9}, headers=ana)
    items = client.get("/api/me/history", headers=ana).get_json()["items"]
    assert [(i["video"]["id"], i["position"]) for i in items][0] == (one["id"], 9)
    # each viewer has their own
    assert client.get("/api/me/history", headers=ben).get_json()["items"] == []
    # a video made private by its owner leaves others' histories
    client.patch(f"/api/videos/{two['id']}", json={"visibility": "private"}, headers=ben)
    assert [i["video"]["id"] for i in client.get("/api/me/history", headers=ana).get_json()["items"]] == [one["id"]]
    assert client.delete("/api/me/history", headers=ana).status_code == 204
    assert client.get("/api/me/history", headers=ana).get_json()["items"] == []


@pytest.mark.parametrize("body", [{}, {"video_id": "x"}, {"video_id": "x", "position": -1},
                                  {"video_id": "x", "position": "soon"}, {"video_id": "x", "position": True}])
def test_bad_position_reports_are_refused(client, people, body):
    ana, _ = people
    r = client.post("/api/me/history", json=body, headers=ana)
    assert r.status_code == 400 and r.get_json()["error"]["message"]


def test_history_needs_a_sign_in(client):
    assert client.get("/api/me/history").status_code == 401
    assert client.delete("/api/me/history").status_code == 401


def test_playlists_create_add_reorder_remove_and_delete(client, people):
    ana, ben = people
    a, b, c = (make(client, ana, t) for t in ("a", "b", "c"))
    r = client.post("/api/playlists", json={"title": "Road trip", "description": "Summer"}, headers=ana)
    assert r.status_code == 201
    pl = r.get_json()
    assert {k: pl[k] for k in ("title", "description", "visibility", "items")} == {
        "title": "Road trip", "description": "Summer", "visibility": "private", "items": []}
    assert pl["id"] and pl["slug"].startswith("road-trip")
    for v in (a, b):
        assert client.post(f"/api/playlists/{pl['id']}/items", json={"video_id": v["id"]}, headers=ana).status_code == 201
    r = client.post(f"/api/playlists/{pl['id']}/items", json={"video_id": c["id"], "position": 0}, headers=ana)
    assert [v["id"] for v in r.get_json()["items"]] == [c["id"], a["id"], b["id"]]
    # moving: the same video again at another place
    r = client.post(f"/api/playlists/{pl['id']}/items", json={"video_id": c["id"], "position": 2}, headers=ana)
    assert r.status_code == 200 and [v["id"] for v in r.get_json()["items"]] == [a["id"], b["id"], c["id"]]
    assert client.delete(f"/api/playlists/{pl['id']}/items/{b['id']}", headers=ana).status_code == 204
    got = client.get(f"/api/playlists/{pl['id']}", headers=ana).get_json()
    assert [v["id"] for v in got["items"]] == [a["id"], c["id"]] and got["items"][0]["title"] == "a"
    assert client.delete(f"/api/playlists/{pl['id']}/items/{b['id']}", headers=ana).status_code == 404
    r = client.patch(f"/api/playlists/{pl['id']}", json={"title": "Trip", "visibility": "unlisted"}, headers=ana)
    assert r.status_code == 200 and r.get_json()["title"] == "Trip" and r.get_json()["visibility"] == "unlisted"
    assert [p["id"] for p in client.get("/api/playlists", headers=ana).get_json()["items"]] == [pl["id"]]
    assert client.get("/api/playlists", headers=ben).get_json()["items"] == []
    assert client.delete(f"/api/playlists/{pl['id']}", headers=ana).status_code == 204
    assert client.get(f"/api/playlists/{pl['id']}", headers=ana).status_code == 404
    assert client.get(f"/api/videos/{a['id']}", headers=ana).status_code == 200  # the videos stay


def test_a_playlist_shows_each_viewer_only_what_they_may_watch(client, people):
    ana, ben = people
    pub, priv = make(client, ana, "pub"), make(client, ana, "priv", "private")
    unl = make(client, ana, "unl", "unlisted")
    pl = client.post("/api/playlists", json={"title": "Mixed", "visibility": "public"}, headers=ana).get_json()
    for v in (pub, priv, unl):
        client.post(f"/api/playlists/{pl['id']}/items", json={"video_id": v["id"]}, headers=ana)
    assert len(client.get(f"/api/playlists/{pl['id']}", headers=ana).get_json()["items"]) == 3
    seen = client.get(f"/api/playlists/{pl['id']}", headers=ben).get_json()
    assert [v["id"] for v in seen["items"]] == [pub["id"], unl["id"]]
    assert [v["id"] for v in client.get(f"/api/playlists/{pl['id']}").get_json()["items"]] == [pub["id"], unl["id"]]
    # ben may neither change ana's playlist nor see her private one, nor add a video he may not watch
    assert client.patch(f"/api/playlists/{pl['id']}", json={"title": "x"}, headers=ben).status_code == 404
    assert client.post(f"/api/playlists/{pl['id']}/items", json={"video_id": pub["id"]}, headers=ben).status_code == 404
    mine = client.post("/api/playlists", json={"title": "Ben's"}, headers=ben).get_json()
    assert client.post(f"/api/playlists/{mine['id']}/items", json={"video_id": priv["id"]},
                       headers=ben).status_code == 404
    assert client.post(f"/api/playlists/{mine['id']}/items", json={"video_id": pub["id"]},
                       headers=ben).status_code == 201
    client.patch(f"/api/playlists/{pl['id']}", json={"visibility": "private"}, headers=ana)
    assert client.get(f"/api/playlists/{pl['id']}", headers=ben).status_code == 404
    # a deleted video leaves every playlist
    client.delete(f"/api/videos/{pub['id']}", headers=ana)
    assert [v["id"] for v in client.get(f"/api/playlists/{mine['id']}", headers=ben).get_json()["items"]] == []


@pytest.mark.parametrize("body", [{}, {"title": ""}, {"title": "x", "visibility": "secret"}, {"title": 5}])
def test_bad_playlists_are_refused(client, people, body):
    ana, _ = people
    r = client.post("/api/playlists", json=body, headers=ana)
    assert r.status_code == 400 and r.get_json()["error"]["message"]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migration_13_adds_history_and_playlists_and_is_safe_twice(backend, tmp_path):
    from conftest import fresh_database_url

    from streamforge.store import db as dbmod
    from streamforge.store.db import Playlist, PlaylistItem, SchemaVersion, WatchHistory
    number = dbmod.MIGRATIONS.index(dbmod._migration_13) + 1  # 13 unless renumbered at a merge
    with fresh_database_url(backend, tmp_path, "m13") as url:
        database = dbmod.init_db(url)
        with database.connection_context():
            database.drop_tables([PlaylistItem, Playlist, WatchHistory])
            SchemaVersion.delete().where(SchemaVersion.version >= number).execute()
            assert "playlists" not in database.get_tables()
            assert dbmod.migrate(database) == dbmod.SCHEMA_VERSION
            assert {"watch_history", "playlists", "playlist_items"} <= set(database.get_tables())
            SchemaVersion.delete().where(SchemaVersion.version >= number).execute()
            assert dbmod.migrate(database) == dbmod.SCHEMA_VERSION  # the tables are there already
