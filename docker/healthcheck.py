"""The image's HEALTHCHECK, for whichever `streamforge` command the container runs.

`streamforge web` is healthy when its /healthz answers 200 (database, store and queue reachable); any
other command (a standalone `worker`, `storage`, ...) when `streamforge doctor` passes. compose.yml
gives each service its own check anyway; this one keeps `docker run IMAGE streamforge worker` from
being marked unhealthy for lacking a web port.
"""
from __future__ import annotations

import os
import subprocess
import sys
import urllib.request


def command_of(argv: list[str]) -> list[str]:
    """The arguments after `streamforge` in a process's argv, or [] when it is not streamforge."""
    for i, arg in enumerate(argv):
        if os.path.basename(arg) == "streamforge":
            return argv[i + 1:]
        if arg == "-m" and i + 1 < len(argv) and argv[i + 1] == "streamforge":
            return argv[i + 2:]
    return []


def running_command() -> list[str]:
    """The streamforge command this container runs (the first process that is one)."""
    for pid in sorted((p for p in os.listdir("/proc") if p.isdigit()), key=int):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        command = command_of(argv)
        if command:
            return command
    return []


def web_port(command: list[str]) -> int:
    """The port `streamforge web` listens on (its --port, else 8000)."""
    for i, arg in enumerate(command):
        if arg == "--port" and i + 1 < len(command):
            return int(command[i + 1])
        if arg.startswith("--port="):
            return int(arg.split("=", 1)[1])
    return 8000


def main() -> int:
    command = running_command()
    if command[:1] == ["web"]:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{web_port(command)}/healthz", timeout=4)
        except OSError as e:
            print(f"web: /healthz: {e}", file=sys.stderr)
            return 1
        return 0
    return subprocess.run(["streamforge", "doctor"], timeout=25).returncode


if __name__ == "__main__":
    sys.exit(main())
