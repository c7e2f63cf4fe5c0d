"""GET /api/openapi.json: a valid OpenAPI 3.1 document describing every route the app serves (and nothing
else), and the API driven from it by schemathesis without a single 500."""
from __future__ import annotations

import itertools
import os
import re

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from openapi_spec_validator import validate

from streamforge.store import captions, users, videos
from streamforge.store import db as dbmod
from streamforge.store.db import Video

# cases per operation: bounded for the suite; SF_FUZZ_EXAMPLES=200 for a deeper hunt by hand
EXAMPLES = int(os.environ.get("SF_FUZZ_EXAMPLES", "10"))
HTTP_METHODS = {"get", "put", "post", "delete", "patch"}
# answered in front of Flask (web/hooks.py StorageHook), so absent from the url_map
MIDDLEWARE_ROUTES = {("POST", "/hooks/storage")}


def app_routes(app) -> set[tuple[str, str]]:
    """(METHOD, /path/{param}) of every route the app serves."""
    out = set(MIDDLEWARE_ROUTES)
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        out |= {(m, path) for m in rule.methods - {"HEAD", "OPTIONS"}}
    return out


def described_routes(doc: dict) -> set[tuple[str, str]]:
    """(METHOD, /path/{param}) of every operation the document describes."""
    return {(m.upper(), path) for path, item in doc["paths"].items() for m in item if m in HTTP_METHODS}


def test_the_document_is_valid_openapi_3_1_and_served(client):
    r = client.get("/api/openapi.json")
    assert r.status_code == 200 and r.is_json
    doc = r.get_json()
    assert doc["openapi"].startswith("3.1")
    validate(doc)
    assert doc["servers"][0]["url"] == "http://127.0.0.1:5000"


def test_every_route_is_described_and_nothing_else(app, client):
    doc = client.get("/api/openapi.json").get_json()
    served, described = app_routes(app), described_routes(doc)
    missing = sorted(served - described)
    extra = sorted(described - served)
    assert not missing, ("routes the app serves that streamforge/web/openapi.yaml does not describe (add them "
                         "under `paths`):\n" + "\n".join(f"  {m} {p}" for m, p in missing))
    assert not extra, ("operations streamforge/web/openapi.yaml describes that the app does not serve:\n"
                       + "\n".join(f"  {m} {p}" for m, p in extra))


@pytest.fixture
def admin_headers(app):
    with dbmod.db.connection_context():
        user = users.add_user("fuzz-admin@example.com", users.ADMIN, "Fuzz")
        _, token = videos.create_token(user, "schemathesis")
    return {"Authorization": f"Bearer {token}"}


def no_server_error(ctx, response, case) -> None:
    """No 500, ever; a 5xx the description documents for the operation (503: the store or the database is
    unavailable; oEmbed's 501 for a format other than json) is an answer, not a failure."""
    documented = case.operation.definition.raw.get("responses", {})
    if response.status_code >= 500 and str(response.status_code) not in documented:
        raise AssertionError(f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}")


def test_schemathesis_finds_no_server_error(app, admin_headers):
    import schemathesis
    from schemathesis.generation.modes import GenerationMode
    from schemathesis.specs.openapi.checks import response_schema_conformance
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    # the API (not pages, playback redirects or the store's webhook, whose own tests cover them)
    schema = schema.include(path_regex=os.environ.get("SF_FUZZ_PATHS", r"^/(api|oembed|healthz|metrics)"))
    failures, calls, turn = [], [], itertools.count()
    r = app.test_client().post("/api/videos", headers=admin_headers, json={
        "title": "fuzzed", "filename": "a.mp4", "size": 1000, "content_type": "video/mp4"})
    assert r.status_code == 201
    real_id = r.get_json()["video"]["id"]
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(GenerationMode.NEGATIVE))
        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
        def run(case):
            if "video_id" in (case.path_parameters or {}) and next(turn) % 2:
                case.path_parameters["video_id"] = real_id  # every other case on a real video
            calls.append((case.method, case.formatted_path))
            case.call_and_validate(headers=admin_headers, checks=[no_server_error, response_schema_conformance])

        try:
            run()
        except (Exception, BaseExceptionGroup) as e:  # every operation's first failure, reported together
            failures.append(f"{operation.method.upper()} {operation.path}: {str(e)[:1500]}")
    assert len(calls) > 150 and sum(real_id in p for _, p in calls) > 40
    assert not failures, "\n\n".join(failures)


def test_a_token_request_whose_body_is_not_an_object_is_a_400(client, admin_headers):
    """Found by schemathesis: a JSON number as the body of POST /api/tokens was a 500."""
    for body in (5, [1], "x"):
        r = client.post("/api/tokens", json=body, headers=admin_headers)
        assert r.status_code == 400 and r.get_json()["error"]["code"] == "invalid", body


def test_a_passkey_request_whose_body_is_not_an_object_is_a_400(client):
    """POST /api/me/passkeys and POST /login/passkey with a JSON number, list or string as the body, or a
    malformed credential, were 500s; from a signed-in browser session, which the fuzzing's token never is."""
    password = "tangerine quartz orbit 42"
    with dbmod.db.connection_context():
        users.set_password(users.add_user("keys@example.com", users.UPLOADER), password)
    page = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    for body in (5, [1], "x"):
        r = client.post("/login/passkey", json=body, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 400 and r.get_json()["error"]["code"] == "invalid", body
    r = client.post("/login", data={"csrf_token": csrf, "email": "keys@example.com", "password": password})
    assert r.status_code == 302
    page = client.get("/account").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    # and a credential that is an object but not a PublicKeyCredential (py_webauthn's InvalidJSONStructure)
    for body in (5, [1], "x", {"credential": {"id": 5, "rawId": 1.5}}, {"credential": {"response": "x"}}):
        assert client.post("/api/me/passkeys/options", headers={"X-CSRF-Token": csrf}).status_code == 200
        r = client.post("/api/me/passkeys", json=body, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 400 and r.get_json()["error"]["code"] == "invalid", body


def test_a_completed_video_with_audio_tracks_chapters_and_auto_captions_matches_the_schema(client, admin_headers):
    """The fuzzing only meets videos still uploading: VIDEO of a COMPLETED one (two audio tracks, chapters
    from its description, an auto caption track) and the 202 of captions/auto match the description."""
    from jsonschema import Draft202012Validator
    doc = client.get("/api/openapi.json").get_json()

    def check(name: str, instance) -> None:  # a schema of the document, its $refs resolved in it
        Draft202012Validator({**doc, "$ref": name}).validate(instance)
    r = client.post("/api/videos", headers=admin_headers, json={
        "title": "talk", "filename": "talk.mp4", "size": 1000, "content_type": "video/mp4",
        "description": "0:00 Intro\n1:05 Demo"})
    vid = r.get_json()["video"]["id"]
    with dbmod.db.connection_context():
        Video.update(status="COMPLETED", upload_status="UPLOADED", progress=1, master_playlist_url="master.m3u8",
                     original_duration=120.0, audio_tracks=[
                         {"language": "en", "label": "English", "default": True},
                         {"language": "fr", "label": "Commentaire", "default": False}]).where(Video.id == vid).execute()
        captions.save_track(vid, "en", "English (auto)", "WEBVTT\n\n00:00.000 --> 00:01.000\nhello\n",
                            source=captions.AUTO)
    video = client.get(f"/api/videos/{vid}", headers=admin_headers).get_json()
    assert [a["default"] for a in video["audio_tracks"]] == [True, False]
    assert video["chapters"] == [{"start": 0.0, "title": "Intro"}, {"start": 65.0, "title": "Demo"}]
    assert video["chapters_url"].split("?")[0].endswith(".vtt") and video["captions"][0]["source"] == "auto"
    check("#/components/schemas/Video", video)
    check("#/components/schemas/VideoPage", client.get("/api/videos", headers=admin_headers).get_json())
    r = client.post(f"/api/videos/{vid}/captions/auto", headers=admin_headers)
    assert r.status_code == 202
    check("#/paths/~1api~1videos~1{video_id}~1captions~1auto/post/responses/202/content/application~1json/schema",
          r.get_json())
    video["audio_tracks"][0]["default"] = "yes"  # and the check can fail
    with pytest.raises(Exception, match="is not of type 'boolean'"):
        check("#/components/schemas/Video", video)
