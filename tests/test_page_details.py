"""The pages' smaller parts without a browser: the app's own 404 and 500 answers (HTML for pages, JSON for
the API), the linkified description, and what the admin page shows of quotas."""
from __future__ import annotations

import pytest


def test_unknown_pages_get_the_apps_404_page_and_the_api_json(client):
    r = client.get("/no/such/page")
    assert r.status_code == 404 and r.mimetype == "text/html"
    body = r.get_data(as_text=True)
    assert "Page not found" in body and 'class="site-header"' in body and "Werkzeug" not in body
    r = client.get("/api/no/such/thing")
    assert r.status_code == 404 and r.get_json()["error"]["code"] == "not_found"
    r = client.post("/healthz")
    assert r.status_code == 405 and "Not allowed here" in r.get_data(as_text=True)


def test_an_unexpected_error_is_the_apps_500_page_or_json(app, caplog):
    def boom():
        raise RuntimeError("kaput")
    app.add_url_rule("/boom", "boom", boom)
    app.add_url_rule("/api/boom", "api_boom", boom)
    client = app.test_client()
    r = client.get("/boom")
    assert r.status_code == 500 and r.mimetype == "text/html"
    assert "Something went wrong" in r.get_data(as_text=True) and "kaput" not in r.get_data(as_text=True)
    r = client.get("/api/boom")
    assert r.status_code == 500 and r.get_json()["error"]["code"] == "internal_server_error"
    assert "kaput" in caplog.text  # logged for the operator, not shown to the visitor


@pytest.mark.parametrize("text, html", [
    ("see https://example.org/a?b=1&c=2.", 'see <a href="https://example.org/a?b=1&amp;c=2" rel="nofollow noopener '
     'noreferrer" target="_blank">https://example.org/a?b=1&amp;c=2</a>.'),
    ("<script>alert(1)</script> http://x.test/<img>", '&lt;script&gt;alert(1)&lt;/script&gt; <a href="http://x.test/" '
     'rel="nofollow noopener noreferrer" target="_blank">http://x.test/</a>&lt;img&gt;'),
    ('javascript:alert(1) "https://q.test/"onmouseover="x"', 'javascript:alert(1) &#34;<a href="https://q.test/" rel='
     '"nofollow noopener noreferrer" target="_blank">https://q.test/</a>&#34;onmouseover=&#34;x&#34;'),
    ("(at https://w.test/page)", '(at <a href="https://w.test/page" rel="nofollow noopener noreferrer" '
     'target="_blank">https://w.test/page</a>)'),
    (None, ""),
])
def test_descriptions_get_safe_links(text, html):
    from streamforge.web.text import linkify
    assert str(linkify(text)) == html


def test_relative_dates():
    import datetime

    from streamforge.web.text import ago
    now = datetime.datetime(2026, 12, 5, 12, 0, 0)
    assert ago("2026-12-05T11:59:30Z", now) == "just now"
    assert ago("2026-12-05T11:55:00Z", now) == "5 minutes ago"
    assert ago("2026-12-04T11:00:00Z", now) == "1 day ago"
    assert ago("2026-11-20T12:00:00Z", now) == "2 weeks ago"
    assert ago("2024-12-01T12:00:00Z", now) == "2 years ago"
    assert ago(None) == ""


def test_the_watch_page_links_its_description_safely(client, auth):
    h = auth("desc@example.com")
    r = client.post("/api/videos", json={"title": "t", "filename": "a.mp4", "size": 10, "content_type": "video/mp4",
                                         "description": "More: https://example.org/x <img src=x onerror=alert(1)>"},
                    headers=h)
    slug = r.get_json()["video"]["slug"]
    page = client.get(f"/watch/{slug}", headers=h).get_data(as_text=True)
    assert '<a href="https://example.org/x" rel="nofollow noopener noreferrer" target="_blank">' in page
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
