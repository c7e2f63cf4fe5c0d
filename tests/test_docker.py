"""docker/ and the deployment docs: the checks that run without a container engine.

Docker cannot run on the machines this is developed on; Debian's docker-compose (1.29) validates a
compose file without one. Everything else here reads the files: compose.yml against the CLI and the
config keys, the MinIO notification wiring, the secrets policy, the Dockerfile, nginx.conf (with
`nginx -t` where nginx is installed) and docs/configuration.md against config.example.toml.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from conftest import require

from streamforge.commands.main import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yml"
DOCKERFILE = DOCKER / "Dockerfile"
ENV_EXAMPLE = DOCKER / ".env.example"
NGINX_CONF = DOCKER / "nginx.conf"
DOCS = ROOT / "docs"

# Secrets compose needs: files in docker/secrets/ (docker/init-secrets.sh), mounted as Docker secrets;
# never an environment variable, never a default (a service refuses to start while one is empty).
REQUIRED_SECRETS = ("minio_root_password", "storage_secret_key", "postgres_password", "database_url",
                    "server_secret_key", "webhook_token", "metrics_token", "grafana_admin_password")
OPTIONAL_SECRETS = ("oidc_client_secret", "notify_secret")
INIT_SECRETS = DOCKER / "init-secrets.sh"
HEALTHCHECK = DOCKER / "healthcheck.py"
DOCKERIGNORE = ROOT / ".dockerignore"
# What StreamForge reads from the environment besides STREAMFORGE_<SECTION>_<KEY>.
NOT_KEYS = {"STREAMFORGE_CONFIG", "STREAMFORGE_DATA_DIR"}
# production.py's docker_check looks for these words in docker/.
PRODUCTION_WORDS = ("minio", "postgres", "redis", "MINIO_NOTIFY_WEBHOOK_ENABLE", "MINIO_NOTIFY_WEBHOOK_ENDPOINT",
                    "MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN", "MINIO_NOTIFY_WEBHOOK_QUEUE_DIR", "streamforge")
HAND_BACK_SECONDS = 30  # the worker's shutdown timeout (cli.cmd_worker)


def config_keys() -> dict[str, tuple[str, str]]:
    """STREAMFORGE_<SECTION>_<KEY> -> (section, key) for every key of config.example.toml."""
    with open(ROOT / "config.example.toml", "rb") as f:
        example = tomllib.load(f)
    return {f"STREAMFORGE_{s.upper()}_{k.upper()}": (s, k) for s, keys in example.items() for k in keys}


def docker_compose() -> str:
    exe = shutil.which("docker-compose")
    require(exe is not None, "docker-compose is not installed (Debian: apt-get install docker-compose)")
    return exe


def load_yaml(path: Path) -> dict:
    """Parse YAML with PyYAML, or with the interpreter of docker-compose (which depends on it)."""
    try:
        import yaml
    except ImportError:
        yaml = None
    if yaml is not None:
        return yaml.safe_load(path.read_text())
    exe = shutil.which("docker-compose")
    if exe:
        shebang = Path(exe).read_bytes()[:200].split(b"\n")[0].decode(errors="replace")
        if shebang.startswith("#!") and "python" in shebang:
            code = "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))"
            r = subprocess.run([*shlex.split(shebang[2:]), "-c", code, str(path)], capture_output=True,
                               text=True, timeout=30)
            if r.returncode == 0:
                return json.loads(r.stdout)
    require(False, "reading compose.yml needs PyYAML or docker-compose")
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_yaml(COMPOSE)


def clean_env() -> dict:
    """This environment without anything compose.yml interpolates."""
    names = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", COMPOSE.read_text()))
    return {k: v for k, v in os.environ.items() if k not in names and not k.startswith("COMPOSE_")}


def example_env() -> str:
    """docker/.env.example as an operator copies it (it holds no secret)."""
    return ENV_EXAMPLE.read_text()


def copy_docker_dir(tmp_path: Path, env_text: str | None) -> Path:
    """docker/ copied to tmp_path (without any local .env), optionally with a .env."""
    dest = tmp_path / "docker"
    shutil.copytree(DOCKER, dest, ignore=shutil.ignore_patterns(".env"))
    if env_text is not None:
        (dest / ".env").write_text(env_text)
    return dest


def compose_config(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([docker_compose(), "-f", str(folder / "compose.yml"), "config", *args],
                          cwd=str(folder), env=clean_env(), capture_output=True, text=True, timeout=60)


def script_of(service: dict) -> str:
    """The shell script of a service run as `/bin/sh -c SCRIPT`, with compose's `$$` unescaped."""
    assert service["entrypoint"] == ["/bin/sh", "-c"], service["entrypoint"]
    command = service["command"]
    return (command[0] if isinstance(command, list) else command).replace("$$", "$")


def parse_cli(argv: list[str]) -> None:
    """Fail unless `streamforge ARGV...` is a valid command line."""
    assert argv and argv[0] == "streamforge", argv
    try:
        build_parser().parse_args(argv[1:])
    except SystemExit as e:
        pytest.fail(f"`{shlex.join(argv)}` is not a valid streamforge command (exit {e.code})")


def seconds(duration: str | int) -> float:
    """A compose duration (`60s`, `1m30s`, `90`) in seconds."""
    if isinstance(duration, int | float):
        return float(duration)
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"unreadable duration {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


# ---- compose validates --------------------------------------------------------------------------

def test_compose_validates_without_any_settings(tmp_path):
    """What production.py's docker_check runs: `docker-compose config -q`, no .env, no variables set."""
    folder = copy_docker_dir(tmp_path, None)
    r = compose_config(folder, "-q")
    assert r.returncode == 0, r.stderr


def test_compose_validates_with_the_example_env_and_needs_nothing_else(tmp_path):
    folder = copy_docker_dir(tmp_path, example_env())
    r = compose_config(folder)
    assert r.returncode == 0, r.stderr
    assert "is not set" not in r.stderr, f"compose.yml uses a variable docker/.env.example lacks:\n{r.stderr}"
    rendered = tmp_path / "rendered.yml"
    rendered.write_text(r.stdout)
    services = load_yaml(rendered)["services"]
    assert {"minio", "minio-init", "postgres", "redis", "web", "worker", "cdn"} <= set(services)
    # the app and MinIO read the same webhook token: one secret file
    assert services["web"]["environment"]["STREAMFORGE_WEBHOOK_TOKEN_FILE"] == "/run/secrets/webhook_token"
    assert "/run/secrets/webhook_token" in script_of(services["minio"])
    for name in ("web", "minio"):
        assert "webhook_token" in [x if isinstance(x, str) else x["source"] for x in services[name]["secrets"]]
    assert services["worker"]["environment"] == services["web"]["environment"]


# ---- what production.py requires, and names that must exist ----------------------------------------

def test_docker_dir_has_what_the_production_check_looks_for():
    text = "\n".join(p.read_text(errors="ignore") for p in DOCKER.rglob("*") if p.is_file())
    for word in PRODUCTION_WORDS:
        assert word.lower() in text.lower(), f"docker/ never mentions {word}"
    assert re.search(r"event add", text), "nothing in docker/ runs `mc event add`"
    assert DOCKERFILE.is_file()


def test_every_streamforge_variable_is_a_config_key():
    keys = config_keys()
    files = [COMPOSE, ENV_EXAMPLE, DOCKERFILE, NGINX_CONF, *sorted(DOCS.glob("*.md"))]
    bad = []
    for path in files:
        for name in set(re.findall(r"\bSTREAMFORGE_[A-Z0-9_]+", path.read_text())):
            name = name[:-len("_FILE")] if name.endswith("_FILE") and name[:-len("_FILE")] in keys else name
            if name in keys or name in NOT_KEYS:
                continue
            if name.endswith("_") and any(k.startswith(name) for k in keys):  # a family: STREAMFORGE_AUTH_OIDC_*
                continue
            bad.append(f"{path.relative_to(ROOT)}: {name}")
    assert not bad, "not config keys (config.example.toml): " + ", ".join(sorted(bad))


def test_env_example_lists_every_variable_compose_uses():
    used = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", COMPOSE.read_text()))
    listed = set(re.findall(r"^#?\s*([A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.MULTILINE))
    assert not used - listed, f"missing from docker/.env.example: {sorted(used - listed)}"


def test_image_and_compose_commands_exist_in_the_cli(compose):
    cmd = re.search(r"^CMD\s+(\[.*\])\s*$", DOCKERFILE.read_text(), re.MULTILINE)
    assert cmd, "the Dockerfile has no exec-form CMD"
    default = json.loads(cmd.group(1))
    assert default == ["streamforge", "web", "--host", "0.0.0.0", "--port", "8000"]
    parse_cli(default)
    services = compose["services"]
    for name in ("web", "worker"):
        parse_cli(services[name]["command"])
    parse_cli(services["worker"]["healthcheck"]["test"][1:])


def test_streamforge_commands_in_the_docs_are_valid():
    found = 0
    for path in sorted(DOCS.glob("*.md")):
        for block in re.findall(r"```[a-z]*\n(.*?)```", path.read_text(), re.DOTALL):
            for line in block.splitlines():
                m = re.search(r"\bstreamforge ((?:serve|web|worker|storage|token|transcode|doctor)\b.*)$", line)
                if m:
                    parse_cli(["streamforge", *shlex.split(m.group(1).rstrip("\\ "))])
                    found += 1
    assert found >= 3


# ---- services ---------------------------------------------------------------------------------------

def test_worker_scales_and_has_time_to_hand_back(compose):
    worker = compose["services"]["worker"]
    assert "ports" not in worker and "container_name" not in worker, "`--scale worker=N` needs neither"
    assert worker.get("stop_signal", "SIGTERM") == "SIGTERM"
    assert seconds(worker["stop_grace_period"]) > HAND_BACK_SECONDS
    assert worker["command"][:2] == ["streamforge", "worker"]


def test_web_runs_the_app_and_checks_healthz(compose):
    web = compose["services"]["web"]
    assert web["command"][:2] == ["streamforge", "web"]
    assert any("/healthz" in part for part in web["healthcheck"]["test"])
    conditions = {name: dep["condition"] for name, dep in web["depends_on"].items()}
    assert conditions["postgres"] == conditions["redis"] == conditions["minio"] == "service_healthy"
    assert conditions["minio-init"] == "service_completed_successfully"
    for name in ("postgres", "redis", "minio"):
        assert "healthcheck" in compose["services"][name], name
    assert "pg_isready" in " ".join(compose["services"]["postgres"]["healthcheck"]["test"])


SECRET_WORDS = re.compile(r"PASSWORD|SECRET|TOKEN", re.IGNORECASE)


def test_no_secret_has_a_default_or_an_environment_variable(compose):
    """Secrets are files mounted as Docker secrets: none is a variable compose interpolates (so none
    has a default), none is set in a service's environment, and each *_FILE points at a secret the
    service mounts."""
    text = COMPOSE.read_text()
    interpolated = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", text))
    assert not [v for v in interpolated if SECRET_WORDS.search(v)], "a secret is interpolated from .env"
    declared = compose["secrets"]
    assert set(declared) == set(REQUIRED_SECRETS) | set(OPTIONAL_SECRETS)
    for name, spec in declared.items():
        assert spec == {"file": f"./secrets/{name}"}, (name, spec)
    for service_name, service in compose["services"].items():
        mounted = {x if isinstance(x, str) else x["source"] for x in service.get("secrets", [])}
        for var, value in (service.get("environment") or {}).items():
            if var.endswith("_FILE"):
                assert str(value).startswith("/run/secrets/"), (service_name, var, value)
                assert str(value)[len("/run/secrets/"):] in mounted, (service_name, var, "not mounted")
            else:
                assert not SECRET_WORDS.search(var), f"{service_name}: {var} holds a secret in the environment"
    example = ENV_EXAMPLE.read_text()
    assert not [line for line in example.splitlines()
                if not line.startswith("#") and SECRET_WORDS.search(line.split("=", 1)[0])]
    assert not re.search(r"^\s*ENV\s.*(SECRET|TOKEN|PASSWORD)", DOCKERFILE.read_text(), re.MULTILINE)


def test_init_secrets_makes_every_secret_once(tmp_path):
    run = {"env": {**os.environ, "SECRETS_DIR": str(tmp_path / "s")}, "capture_output": True, "text": True,
           "timeout": 30}
    r = subprocess.run(["sh", str(INIT_SECRETS)], **run)
    assert r.returncode == 0, r.stderr
    folder = tmp_path / "s"
    assert folder.stat().st_mode & 0o777 == 0o700
    values = {name: (folder / name).read_text() for name in REQUIRED_SECRETS + OPTIONAL_SECRETS}
    for name in REQUIRED_SECRETS:
        assert re.fullmatch(r"[0-9a-f]{64}", values[name]) or name == "database_url", name
        assert (folder / name).stat().st_mode & 0o777 == 0o644  # the app's uid reads its mounted copy
    assert values["oidc_client_secret"] == values["notify_secret"] == ""
    assert values["database_url"] == f"postgresql://streamforge:{values['postgres_password']}@postgres:5432/streamforge"
    # a rerun keeps them; a changed PostgreSQL password is carried into the URL
    (folder / "postgres_password").write_text("b" * 64)
    assert subprocess.run(["sh", str(INIT_SECRETS)], **run).returncode == 0
    assert (folder / "webhook_token").read_text() == values["webhook_token"]
    assert (folder / "database_url").read_text().endswith(f":{'b' * 64}@postgres:5432/streamforge")
    # and the app reads them through STREAMFORGE_..._FILE
    from streamforge.config import load_config
    cfg = load_config(env={"STREAMFORGE_WEBHOOK_TOKEN_FILE": str(folder / "webhook_token"),
                           "STREAMFORGE_DATABASE_URL_FILE": str(folder / "database_url")},
                      data_dir=tmp_path / "d", fill_secrets=False)
    assert cfg.webhook.token == values["webhook_token"] and cfg.database.url.startswith("postgresql://")


def test_healthchecks_use_tcp(compose):
    """Every healthcheck reaches its server over TCP on 127.0.0.1 (a Unix socket answers while
    PostgreSQL's init-time server has no TCP listener yet: docker-library/postgres#880)."""
    services = compose["services"]
    pg = " ".join(services["postgres"]["healthcheck"]["test"])
    assert re.search(r"pg_isready\b.*\s-h\s+127\.0\.0\.1\b", pg) and "-p 5432" in pg, pg
    assert re.search(r"redis-cli\s+-h\s+127\.0\.0\.1\b", " ".join(services["redis"]["healthcheck"]["test"]))
    assert services["minio"]["healthcheck"]["test"] == ["CMD", "mc", "ready", "local"]  # http://localhost:9000
    for name in ("web", "cdn"):
        assert "http://127.0.0.1" in " ".join(services[name]["healthcheck"]["test"]), name
    for name, service in services.items():
        if name != "minio-init":
            assert "healthcheck" in service, f"{name} has no healthcheck"


def test_every_named_volume_has_a_fixed_name(compose):
    """Named volumes do not depend on docker/.env or the project name (a missing .env once meant new,
    empty volumes); the names are the ones COMPOSE_PROJECT_NAME=streamforge gave before."""
    declared = compose["volumes"]
    used = set()
    for service in compose["services"].values():
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0] if isinstance(mount, str) else mount["source"]
            if not source.startswith((".", "/")):
                used.add(source)
    assert used == set(declared), (used, set(declared))
    for name, spec in declared.items():
        assert spec and spec.get("name") == f"streamforge_{name}", (name, spec)
        assert "$" not in spec["name"]


def test_worker_has_a_temp_volume(compose):
    worker = compose["services"]["worker"]
    temp = worker["environment"]["STREAMFORGE_PIPELINE_TEMP_DIR"]
    assert worker["environment"]["TMPDIR"] == temp
    mounts = {m.split(":")[1]: m.split(":")[0] for m in worker["volumes"]}
    assert temp in mounts and mounts[temp] in compose["volumes"], "the worker's temp dir is not a volume"
    assert re.search(rf"mkdir -p [^\n]*{temp}\b", DOCKERFILE.read_text()), "the image must own the mount point"


def test_postgres_data_mount_follows_the_image(compose, tmp_path):
    pg = compose["services"]["postgres"]
    assert pg["image"] == "${POSTGRES_IMAGE:-postgres:18-alpine}"
    assert pg["volumes"] == ["postgres-data:${POSTGRES_DATA_MOUNT:-/var/lib/postgresql}"]
    assert pg["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    # a volume with pre-18 data at its root is never initialised over
    script = script_of(pg).replace("/var/lib/postgresql", str(tmp_path)).replace(
        "exec docker-entrypoint.sh postgres", "exit 0")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "POSTGRES_DATA_MOUNT": str(tmp_path)}
    assert subprocess.run(["sh", "-c", script], env=env, timeout=10).returncode == 0
    (tmp_path / "PG_VERSION").write_text("16\n")
    r = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "POSTGRES_IMAGE=postgres:16-alpine" in r.stderr, r.stderr
    env["POSTGRES_DATA_MOUNT"] = str(tmp_path / "data")
    assert subprocess.run(["sh", "-c", script], env=env, timeout=10).returncode == 0


def test_minio_init_hides_no_error_and_grants_least_privilege(compose):
    init = script_of(compose["services"]["minio-init"])
    assert init.lstrip().startswith("set -eu")
    for line in init.splitlines():
        assert not re.search(r"\bmc\b.*\|\|\s*true", line), f"an mc error is hidden: {line.strip()}"
    policy = json.loads(re.search(r"printf '%s' '(\{.*?\})' > /tmp/app-policy.json", init).group(1)
                        .replace("'\"$BUCKET\"'", "streamforge"))
    actions = {a for st in policy["Statement"] for a in st["Action"]}
    assert not [a for a in actions if a.endswith("*")], actions
    assert not actions & {"s3:DeleteBucket", "s3:PutBucketNotification", "s3:PutBucketPolicy",
                          "s3:DeleteBucketPolicy", "s3:CreateBucket", "s3:PutBucketVersioning"}
    assert {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket", "s3:AbortMultipartUpload"} <= actions
    assert "mc anonymous set none" in init
    env = compose["services"]["minio"]["environment"]
    assert "MINIO_SITE_REGION" in env and "MINIO_REGION" not in env
    assert env["MINIO_ROOT_PASSWORD_FILE"] == "/run/secrets/minio_root_password"


def test_dockerignore_keeps_secrets_and_data_out_but_not_what_the_image_needs():
    patterns = [p for p in DOCKERIGNORE.read_text().splitlines() if p and not p.startswith("#")]
    for needed in ("**/.env", "docker/secrets", "streamforge-data", ".venv", ".git"):
        assert needed in patterns, needed
    import fnmatch
    for line in re.findall(r"^COPY\s+(?!--from)(.+)$", DOCKERFILE.read_text(), re.MULTILINE):
        for source in line.split()[:-1]:
            for pattern in patterns:
                if not pattern.startswith("!"):
                    assert not fnmatch.fnmatch(source, pattern.replace("**/", "")), (source, pattern)


def test_image_healthcheck_fits_every_command():
    """The image's HEALTHCHECK asks /healthz of `streamforge web` only: a standalone worker has no web
    port and is checked with doctor instead."""
    text = DOCKERFILE.read_text()
    assert re.search(r"^HEALTHCHECK .*\n?.*healthcheck\.py", text, re.MULTILINE)
    import importlib.util
    spec = importlib.util.spec_from_file_location("sf_healthcheck", HEALTHCHECK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.command_of(["/opt/venv/bin/python", "/opt/venv/bin/streamforge", "worker"]) == ["worker"]
    assert module.command_of(["python", "-m", "streamforge", "web", "--port", "9000"]) == ["web", "--port", "9000"]
    assert module.command_of(["/sbin/docker-init", "--", "redis-server"]) == []
    assert module.web_port(["web", "--host", "0.0.0.0", "--port", "8000"]) == 8000
    assert module.web_port(["web", "--port=8123"]) == 8123


def test_minio_notifications_reach_the_web_app(compose):
    services = compose["services"]
    env = services["minio"]["environment"]
    ids = {k[len("MINIO_NOTIFY_WEBHOOK_ENABLE_"):] for k in env if k.startswith("MINIO_NOTIFY_WEBHOOK_ENABLE_")}
    assert len(ids) == 1, ids
    target = ids.pop()
    assert env[f"MINIO_NOTIFY_WEBHOOK_ENABLE_{target}"] == "on"
    web_cmd = services["web"]["command"]
    port = web_cmd[web_cmd.index("--port") + 1]
    assert env[f"MINIO_NOTIFY_WEBHOOK_ENDPOINT_{target}"] == f"http://web:{port}/hooks/storage"
    # MinIO sends the token as `Authorization: Bearer <token>`; the app checks [webhook] token: both
    # read it from the same secret file
    assert re.search(rf'MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_{target}="\$\(cat /run/secrets/webhook_token',
                     script_of(services["minio"]))
    assert f"export MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_{target}" in script_of(services["minio"])
    assert services["web"]["environment"]["STREAMFORGE_WEBHOOK_TOKEN_FILE"] == "/run/secrets/webhook_token"
    # the queue dir keeps events while web is down: an absolute path on a volume of its own
    queue_dir = env[f"MINIO_NOTIFY_WEBHOOK_QUEUE_DIR_{target}"]
    mounts = [v.split(":")[1] for v in services["minio"]["volumes"]]
    assert queue_dir.startswith("/") and any(queue_dir == m or queue_dir.startswith(m + "/") for m in mounts)
    assert "minio-events" in compose["volumes"]
    # minio-init subscribes the bucket to that target, for new originals only
    init = script_of(services["minio-init"])
    add = re.search(r"^\s*mc event add .*$", init, re.MULTILINE)
    assert add, "minio-init never runs `mc event add`"
    assert '"$arn"' in add.group(0)  # the target's ARN, read from MinIO (it carries the site region)
    assert f"grep -o 'arn:minio:sqs:[^\"]*:{target}:webhook'" in init
    assert re.search(r"--event put\b", add.group(0)) and "--prefix originals/" in add.group(0)
    assert '"sf/$BUCKET"' in add.group(0)
    bucket = services["minio-init"]["environment"]["BUCKET"]
    assert bucket == services["web"]["environment"]["STREAMFORGE_STORAGE_BUCKET"]


def test_service_scripts_are_valid_shell(compose):
    for name in ("minio", "minio-init", "postgres"):
        script = script_of(compose["services"][name])
        r = subprocess.run(["sh", "-n"], input=script, capture_output=True, text=True, timeout=10)
        assert r.returncode == 0, f"{name}: {r.stderr}"
        shellcheck = shutil.which("shellcheck")
        if shellcheck:
            r = subprocess.run([shellcheck, "-s", "sh", "-"], input=script, capture_output=True, text=True,
                               timeout=30)
            assert r.returncode == 0, f"{name}:\n{r.stdout}"


def test_minio_refuses_to_start_without_its_secrets(compose, tmp_path):
    """The wrappers around `minio server` and minio-init exit 1 and name what is missing."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    script = (script_of(compose["services"]["minio"]).replace("exec minio server", "exit 0 #")
              .replace("/run/secrets/", f"{secrets}/"))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "MINIO_ROOT_USER": "admin"}
    r = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=10)
    assert r.returncode == 1
    assert "minio_root_password" in r.stderr and "webhook_token" in r.stderr
    (secrets / "minio_root_password").write_text("a-long-password")
    (secrets / "webhook_token").write_text("token")
    r = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    init = (script_of(compose["services"]["minio-init"]).replace("/run/secrets/", f"{secrets}/")
            .replace("tries=0", "exit 0"))
    env.update(APP_ACCESS_KEY="app", BUCKET="b", REGION="us-east-1")
    r = subprocess.run(["sh", "-c", init], env=env, capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "storage_secret_key" in r.stderr, r.stderr
    (secrets / "storage_secret_key").write_text("another-long-secret")
    r = subprocess.run(["sh", "-c", init], env=env, capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr


# ---- the image ---------------------------------------------------------------------------------------

def test_dockerfile_builds_from_files_that_exist():
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim(\s|$)", text, re.MULTILINE)
    assert "npm ci" in text and "node scripts/vendor.mjs" in text
    assert re.search(r"pip install (--[a-z-]+ )*\.", text)
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"
    assert re.search(r"^HEALTHCHECK\s", text, re.MULTILINE)
    for line in re.findall(r"^COPY\s+(?!--from)(.+)$", text, re.MULTILINE):
        *sources, _dest = line.split()
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"


def test_nginx_conf_is_accepted_by_nginx(tmp_path):
    nginx = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
    if nginx is None:
        pytest.skip("nginx is not installed (optional: apt-get install nginx-light)")
    text = NGINX_CONF.read_text()
    assert "server web:8000" in text and "minio" not in text.split("upstream", 1)[1]  # the origin is the app
    conf = (text.replace("server web:8000", "server 127.0.0.1:9")
            .replace("/var/cache/nginx/streamforge", str(tmp_path / "cache")))
    (tmp_path / "default.conf").write_text(conf)
    temp = " ".join(f"{k}_temp_path {tmp_path / k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path / 'nginx.pid'};\nerror_log {tmp_path / 'error.log'};\nevents {{}}\n"
        f"http {{ access_log off; {temp} include {tmp_path / 'default.conf'}; }}\n")
    r = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


# ---- docs ---------------------------------------------------------------------------------------------

def test_configuration_doc_lists_every_key_with_its_default():
    doc = (DOCS / "configuration.md").read_text()
    with open(ROOT / "config.example.toml", "rb") as f:
        example = tomllib.load(f)
    missing = []
    for var, (section, key) in config_keys().items():
        row = re.search(rf"^\| `{key}` \| `{var}` \| `([^`]*)` \|", doc, re.MULTILINE)
        if row is None or f"### [{section}]" not in doc:
            missing.append(var)
            continue
        default = example[section][key]
        if isinstance(default, bool | int | float | str) and not isinstance(default, dict):
            shown = json.dumps(default) if isinstance(default, str) else str(default).lower()
            assert row.group(1) == shown, f"{var}: docs say {row.group(1)}, config.example.toml {shown}"
    assert not missing, f"docs/configuration.md lacks {missing}"


def test_deployment_docs_say_what_was_and_was_not_run():
    for name in ("homelab.md", "on-prem.md", "scale-out.md", "configuration.md"):
        assert (DOCS / name).is_file(), name
    onprem = (DOCS / "on-prem.md").read_text()
    assert "docker compose -f docker/compose.yml up -d" in onprem
    assert "exec web streamforge token create --email" in onprem
    assert "was **not** run" in onprem and "docker-compose config" in onprem
    assert "make run" in (DOCS / "homelab.md").read_text()
