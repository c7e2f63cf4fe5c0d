"""`serve --host 0.0.0.0` on the embedded default: beyond loopback only the web port and one S3 port listen.

Every socket of the whole process tree (serve, web, worker, weed) is listed from /proc; anything
listening beyond 127.0.0.1 other than those two fails. Browsers on the LAN address upload (single
PUT and multipart parts) and play through that one S3 port, with signatures made for that host.
"""
from __future__ import annotations

import json
import os
import re
import socket
import time
from pathlib import Path
from urllib.parse import urljoin

import pytest
import requests
from test_serve import CLIP, children_of, start_serve, stop_serve

_LISTEN = "0A"


def lan_address() -> str | None:
    """A non-loopback IPv4 address of this machine (a UDP connect sends nothing), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def _decode(hex_address: str) -> tuple[str, int]:
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1]), int(port, 16)
    # /proc/net/tcp6 prints four little-endian 32-bit words
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words), int(port, 16)


def listening_sockets(pids: set[int]) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every listening TCP socket held by `pids`."""
    listening: dict[str, tuple[str, int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == _LISTEN:
                listening[fields[9]] = _decode(fields[1])
    found = []
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            inode = target[len("socket:["):-1] if target.startswith("socket:[") else None
            if inode in listening:
                found.append((pid, *listening[inode]))
    return sorted(set(found))


def _loopback(address: str) -> bool:
    return address.startswith("127.") or address in ("::1",) or address.startswith("::ffff:127.")


def _wait_status(url: str, headers: dict, want: str, timeout: float = 120) -> dict:
    deadline, video = time.time() + timeout, {}
    while time.time() < deadline:
        video = requests.get(url, headers=headers, timeout=10).json()
        if video["status"] in (want, "FAILED"):
            break
        time.sleep(0.5)
    return video


def _token(proc) -> str:
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "streamforge.commands.main", "token", "create", "--email", "lan@example.com",
                          "--data-dir", str(proc.data)], env=proc.env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_only_the_web_port_and_one_s3_port_listen_beyond_loopback(tmp_path):
    lan = lan_address()
    if lan is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    proc = start_serve(tmp_path, "--host", "0.0.0.0")
    try:
        ports = json.loads((proc.data / "seaweed" / "ports.json").read_text())
        tree = children_of(proc.pid) | {proc.pid}
        sockets = listening_sockets(tree)
        allowed = {proc.port, ports["s3"]}
        beyond = [(pid, a, p) for pid, a, p in sockets if not _loopback(a)]
        assert beyond and {p for _, _, p in beyond} == allowed, beyond
        # every one of weed's own ports is there, on loopback
        inside = {p for _, a, p in sockets if _loopback(a)}
        for name in ("master", "volume", "filer", "admin", "s3_store"):
            assert ports[name] in inside and ports[name] + 10000 in inside, (name, sockets)
        for name in ("master", "volume", "filer", "admin", "s3_store"):
            with pytest.raises(OSError):
                socket.create_connection((lan, ports[name]), timeout=2).close()
    finally:
        stop_serve(proc)


def test_browsers_on_the_lan_upload_and_play_through_the_one_s3_port(tmp_path):
    lan = lan_address()
    if lan is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    from conftest import free_port
    port = free_port()
    env = {"STREAMFORGE_SERVER_BASE_URL": f"http://{lan}:{port}",
           "STREAMFORGE_UPLOAD_MULTIPART_THRESHOLD": str(5 * 1024 * 1024),
           "STREAMFORGE_UPLOAD_PART_SIZE": str(5 * 1024 * 1024)}
    proc = start_serve(tmp_path, "--host", "0.0.0.0", env=env, port=port)
    try:
        ports = json.loads((proc.data / "seaweed" / "ports.json").read_text())
        h = {"Authorization": f"Bearer {_token(proc)}"}
        api = f"http://{lan}:{port}/api/videos"
        data = CLIP.read_bytes()
        assert len(data) < 5 * 1024 * 1024
        r = requests.post(api, json={"title": "lan", "filename": "bbb.mp4", "size": len(data),
                                     "content_type": "video/mp4"}, headers=h, timeout=10).json()
        assert r["upload"]["url"].startswith(f"http://{lan}:{ports['s3']}/")  # signed for the LAN host
        requests.put(r["upload"]["url"], data=data, headers=r["upload"].get("headers"), timeout=60).raise_for_status()
        video = _wait_status(f"{api}/{r['video']['id']}", h, "COMPLETED")
        assert video["status"] == "COMPLETED", video.get("error_message")
        # the player's fetches: master and media playlists (from the app), the segments from the store
        master = requests.get(video["master_playlist_url"], timeout=10)
        assert master.status_code == 200 and "#EXT-X-STREAM-INF" in master.text
        media_url = urljoin(master.url, next(x for x in master.text.splitlines() if x and not x.startswith("#")))
        media = requests.get(media_url, timeout=10)
        assert media.status_code == 200, media.text
        objects = [urljoin(media.url, u) for u in re.findall(r'URI="([^"]+)"', media.text)]
        objects += [urljoin(media.url, x) for x in media.text.splitlines() if x and not x.startswith("#")]
        # media files are app links (checked against the video's visibility) redirecting to the store
        store_urls = [requests.get(u, allow_redirects=False, timeout=10).headers.get("Location", "")
                      for u in objects[:4]]
        assert all(u.startswith(f"http://{lan}:{ports['s3']}/") for u in store_urls), (objects, store_urls)
        for url in store_urls[:3]:
            assert requests.get(url, timeout=10).status_code == 200, url
        # a multipart upload's parts go the same way
        big = os.urandom(6 * 1024 * 1024)
        r = requests.post(api, json={"title": "lan-mp", "filename": "big.mp4", "size": len(big),
                                     "content_type": "video/mp4"}, headers=h, timeout=10).json()
        vid = r["video"]["id"]
        urls = requests.post(f"{api}/{vid}/upload/parts", json={"part_numbers": [1, 2]}, headers=h,
                             timeout=10).json()["urls"]
        parts = []
        for n, chunk in ((1, big[:5 * 1024 * 1024]), (2, big[5 * 1024 * 1024:])):
            assert urls[str(n)].startswith(f"http://{lan}:{ports['s3']}/")
            put = requests.put(urls[str(n)], data=chunk, timeout=60)
            assert put.status_code == 200, put.text
            parts.append({"part_number": n, "etag": put.headers["ETag"]})
        done = requests.post(f"{api}/{vid}/upload/complete", json={"parts": parts}, headers=h, timeout=30)
        assert done.status_code == 200, done.text
        # a tampered signature is refused at that port: the forwarder passes bytes, weed checks them
        signed = next(u for u in store_urls if "X-Amz-Signature=" in u)
        assert requests.get(signed.replace("X-Amz-Signature=", "X-Amz-Signature=0"), timeout=10).status_code == 403
    finally:
        stop_serve(proc)
