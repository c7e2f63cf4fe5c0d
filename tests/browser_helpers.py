"""Helpers for the browser tests: `streamforge serve` as a child process, JSON calls with a token,
and a Chromium page that records every page error and console error."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--autoplay-policy=no-user-gesture-required"]

# Counts every visible <progress>/role=progressbar value above 0, as the acceptance driver does,
# and keeps the values the upload rows' bars took (to see a bar move, not just end full).
PROGRESS_WATCH = """
window.__progress = {seen: 0, values: []};
new MutationObserver(() => {
  for (const el of document.querySelectorAll('progress, [role=progressbar]')) {
    const v = Number(el.value || el.getAttribute('aria-valuenow') || 0);
    if (v > 0 && el.getClientRects().length) {
      window.__progress.seen += 1;
      if (el.closest('.upload-item')) {
        const last = window.__progress.values[window.__progress.values.length - 1];
        if (last !== v) window.__progress.values.push(v);
      }
    }
  }
}).observe(document, {subtree: true, childList: true, attributes: true, characterData: true});
"""


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """`streamforge serve` (web, worker and embedded store) on a free port in a temp data dir."""

    def __init__(self, env: dict | None = None, wait_s: float = 120):
        self.port = free_port()
        self.tmp = Path(tempfile.mkdtemp(prefix="sf-browser-"))
        self.data = self.tmp / "data"
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFORGE_")}
        self.env.update({"STREAMFORGE_WEBHOOK_TOKEN": "browser-test-webhook",
                         "STREAMFORGE_SERVER_BASE_URL": self.url, **(env or {})})
        self.bin = Path(sys.executable).parent / "streamforge"
        self.wait_s = wait_s
        self.proc: subprocess.Popen | None = None
        self.log_path = self.tmp / "serve.log"

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """Run a `streamforge` command against this service's data dir."""
        return subprocess.run([str(self.bin), *args, "--data-dir", str(self.data)], env=self.env,
                              capture_output=True, text=True, timeout=120)

    def token(self, email: str) -> str:
        """A new API token for `email` (the user is created if needed)."""
        r = self.cli("token", "create", "--email", email)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip().splitlines()[-1]

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def start(self) -> Service:
        log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [str(self.bin), "serve", "--host", "127.0.0.1", "--port", str(self.port), "--data-dir", str(self.data)],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.time() + self.wait_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamforge serve exited with {self.proc.returncode}:\n{self.tail()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.url + "/healthz", timeout=3).status_code == 200:
                    return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"streamforge serve not healthy after {self.wait_s} s:\n{self.tail()}")

    def stop(self) -> None:
        """Stop the service and everything it started (it runs in its own process group)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


class Api:
    """JSON calls to the service with a bearer token."""

    def __init__(self, url: str, token: str):
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"}

    def call(self, method: str, path: str, body=None, ok=(200, 201, 202, 204)):
        r = requests.request(method, self.url + path, json=body, headers=self.headers, timeout=30)
        assert r.status_code in ok, (method, path, r.status_code, r.text[:300])
        return r.json() if r.content and r.headers.get("Content-Type", "").startswith("application/json") else None

    def videos(self) -> list[dict]:
        return self.call("GET", "/api/videos?per_page=100")["items"]

    def video(self, vid: str) -> dict:
        return self.call("GET", f"/api/videos/{vid}")

    def wait(self, vid: str, until, timeout: float = 120, what: str = "", page=None) -> dict:
        """Poll the video until `until(video)`; fail with its last state after `timeout`.

        With `page`, wait through Playwright so the page's events keep arriving meanwhile."""
        deadline = time.time() + timeout
        v = {}
        while time.time() < deadline:
            v = self.video(vid)
            if until(v):
                if page is not None:
                    page.wait_for_timeout(100)
                return v
            if page is not None:
                page.wait_for_timeout(400)
            else:
                time.sleep(0.4)
        raise AssertionError(f"video {vid} never became {what or until}: last {v.get('upload_status')}/"
                             f"{v.get('status')} {v.get('error_message')}")

    def upload_bytes(self, data: bytes, filename: str, title: str, content_type: str = "video/mp4",
                     **fields) -> dict:
        """Create a video and send its bytes in one PUT, as a script would."""
        answer = self.call("POST", "/api/videos", {"title": title, "filename": filename, "size": len(data),
                                                   "content_type": content_type, **fields})
        assert answer["upload"]["method"] == "PUT"
        r = requests.put(answer["upload"]["url"], data=data, headers=answer["upload"].get("headers") or {},
                         timeout=60)
        assert r.status_code in (200, 204), r.text[:200]
        self.call("POST", f"/api/videos/{answer['video']['id']}/upload/complete", {})
        return answer["video"]


def watch_page(page) -> dict:
    """Listen to a page's troubles: {'errors': [page errors], 'console': [console errors]}."""
    seen = {"errors": [], "console": []}
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.on("console", lambda m: seen["console"].append(m.text) if m.type == "error" else None)
    return seen


@contextlib.contextmanager
def signed_in_page(playwright, base_url: str, token: str):
    """A Chromium page signed in through the token link; yields (page, errors), the page errors seen."""
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    try:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{base_url}/login?token={token}")
        yield page, errors
    finally:
        browser.close()


def poll(page, script: str, until, timeout: float = 30, step_ms: int = 250):
    """Evaluate `script` in the page until `until(value)`; return the last value (check it)."""
    deadline = time.time() + timeout
    value = page.evaluate(script)
    while not until(value) and time.time() < deadline:
        page.wait_for_timeout(step_ms)
        value = page.evaluate(script)
    return value


def shot(page, name: str, full_page: bool = False) -> Path:
    """Save a screenshot under artifacts/screenshots/ (look at them)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=str(path), full_page=full_page)
    return path


def play_to_the_end(base_url: str, token: str, watch_url: str, longer_than: float) -> list[float]:
    """Play a watch page's video in Chromium (muted, at 2x) to its end, with no page error; returns the
    currentTime of every timeupdate (to see it went through every seam, never back). Skips where Chromium or
    Playwright is missing."""
    import pytest
    from conftest import require
    require(os.path.exists(CHROMIUM), f"no {CHROMIUM} (apt-get install chromium)")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p, signed_in_page(p, base_url, token) as (page, errors):
        page.goto(watch_url)
        page.wait_for_function("() => document.querySelector('video') && "
                               f"document.querySelector('video').duration > {longer_than}", timeout=45000)
        page.evaluate("() => { const v = document.querySelector('video'); v.muted = true; v.playbackRate = 2; "
                      "window.__seen = []; v.addEventListener('timeupdate', () => window.__seen.push(v.currentTime)); "
                      "v.play() }")
        state = poll(page, "() => { const v = document.querySelector('video'); return {ended: v.ended, t: v.currentTime,"
                     " err: v.error && v.error.code} }", lambda s: s["ended"] or s["err"], timeout=60)
        assert state["ended"] and not state["err"] and state["t"] > longer_than + 0.5, state
        seen = page.evaluate("() => window.__seen")
        assert errors == []
    return seen
