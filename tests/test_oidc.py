"""OIDC login against a real OIDC provider running locally (oidc-provider-mock), not a mocked authlib."""
import dataclasses
import re

import pytest
import requests
from conftest import LiveServer, free_port

oidc_mock = pytest.importorskip("oidc_provider_mock")


def test_oidc_login_round_trip(seaweed, make_app, tmp_path):
    from streamforge.store import db as dbmod
    from streamforge.store.db import User
    claims = {"email": "Olivia@Example.com", "name": "Olivia Example", "picture": "https://example.com/o.png"}
    with oidc_mock.run_server_in_thread(user_claims=[oidc_mock.User(sub="olivia-sub", claims=claims)]) as idp:
        issuer = f"http://localhost:{idp.server_port}"
        port = free_port()
        cfg = seaweed.make_config(tmp_path, env={
            "STREAMFORGE_AUTH_OIDC_ISSUER": issuer, "STREAMFORGE_AUTH_OIDC_CLIENT_ID": "streamforge",
            "STREAMFORGE_AUTH_OIDC_CLIENT_SECRET": "client-secret", "STREAMFORGE_AUTH_OIDC_NAME": "Mock IdP",
            "STREAMFORGE_SERVER_BASE_URL": f"http://127.0.0.1:{port}"})
        cfg = dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, port=port))
        with LiveServer(make_app(cfg), port=port) as live:
            s = requests.Session()
            page = s.get(f"{live.url}/login").text
            assert "Sign in with Mock IdP" in page
            # the app sends the browser to the provider's authorization page
            r = s.get(f"{live.url}/login?start=1&next=/upload", allow_redirects=False)
            assert r.status_code == 302 and r.headers["Location"].startswith(issuer)
            form = s.get(r.headers["Location"])
            assert form.status_code == 200
            # the person picks the account on the provider's page and approves
            r = s.post(r.headers["Location"], data={"sub": "olivia-sub", "action": "approve"},
                       allow_redirects=False)
            assert r.status_code == 302 and "/login/callback?" in r.headers["Location"]
            r = s.get(r.headers["Location"], allow_redirects=False)
            assert r.status_code == 302 and r.headers["Location"].endswith("/upload")
            assert s.get(f"{live.url}/api/videos").status_code == 200
            html = s.get(f"{live.url}/upload").text
            assert re.search(r'name="csrf-token" content="[^"]+"', html)
            # a forged callback without the provider's code is refused
            bad = requests.get(f"{live.url}/login/callback?code=forged&state=nope", allow_redirects=False)
            assert bad.status_code == 400
        with dbmod.db.connection_context():
            user = User.get(User.email == "olivia@example.com")
            assert (user.name, user.picture, user.oidc_sub) == ("Olivia Example", claims["picture"], "olivia-sub")


def test_login_page_without_oidc_explains_the_link(client):
    page = client.get("/login").get_data(as_text=True)
    assert "/login?token=" in page
