"""`streamforge serve|web|worker|storage|token|transcode|doctor`."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from streamforge.config import Config, load_config
from streamforge.errors import StreamForgeError
from streamforge.frozen import child_env, self_command
from streamforge.frozen import setup as frozen_setup

log = logging.getLogger("streamforge")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML config file (default: $STREAMFORGE_CONFIG)")
    p.add_argument("--data-dir", help="where the embedded default keeps its database, queue, store and secrets")


def _listen(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="address to listen on ([server] host)")
    p.add_argument("--port", type=int, help="port to listen on ([server] port)")


def _part_logging(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-file", help="also log to this file (serve gives its parts DATA_DIR/logs/PART.log)")
    p.add_argument("--terminal-level", choices=["debug", "info", "warning", "error"], default="info",
                   help="the least level logged to the terminal (default info)")


def _setup_part_logging(args) -> None:
    from pathlib import Path

    from streamforge import logs
    logs.setup(logs.LEVELS[args.terminal_level], Path(args.log_file) if args.log_file else None)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("streamforge")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="streamforge", description="Self-hosted video platform.")
    parser.add_argument("--version", action="version", version=f"streamforge {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = sub.add_parser("serve", help="web app, worker and (unless [storage] endpoint is set) the embedded store")
    _common(p)
    _listen(p)
    p.add_argument("--verbose", action="store_true",
                   help="the parts' logs on the terminal too (they always go to DATA_DIR/logs/)")
    p = sub.add_parser("web", help="the web app alone, under gunicorn")
    _common(p)
    _listen(p)
    _part_logging(p)
    p = sub.add_parser("worker", help="a queue consumer that processes videos, plus the sweeper")
    _common(p)
    _part_logging(p)
    p.add_argument("--concurrency", type=int, help="videos processed at once ([queue] workers)")
    p = sub.add_parser("storage", help="the embedded SeaweedFS store alone")
    _common(p)
    p = sub.add_parser("token", help="API tokens")
    tsub = p.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    t = tsub.add_parser("create", help="create the user if needed and print a new API token")
    _common(t)
    t.add_argument("--email", required=True)
    t.add_argument("--name", help="the user's display name")
    p = sub.add_parser("transcode", help="run the pipeline offline: INPUT -> HLS tree in OUTDIR")
    _common(p)
    p.add_argument("input")
    p.add_argument("outdir")
    p.add_argument("--codecs", help="comma-separated: h264,hevc,av1,vp9")
    p.add_argument("--heights", help="comma-separated ladder heights, e.g. 1080,720,480,360")
    p.add_argument("--preset", help="encoder preset, e.g. veryfast")
    p = sub.add_parser("doctor", help="check config, database, store, queue and codecs")
    _common(p)
    from streamforge.commands import users
    users.add_parser(sub, _common)
    from streamforge.commands import importer
    p = sub.add_parser("import", help="upload video and audio files and folders through the API",
                       description=importer.HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p)
    importer.add_arguments(p)
    from streamforge.commands import runner  # issue 24: remote runners
    runner.add_parser(sub, _common)
    from streamforge.commands import backup, migrate
    migrate.add_parser(sub, _common)
    backup.add_parsers(sub, _common)
    return parser


def _load(args, fill_secrets: bool = True, **server) -> Config:
    import dataclasses
    cfg = load_config(args.config, getattr(args, "data_dir", None), fill_secrets=fill_secrets)
    overrides = {k: v for k, v in server.items() if v is not None}
    if overrides:
        cfg = dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, **overrides))
    return cfg


def _child_args(args) -> list[str]:
    out = []
    if args.config:
        out += ["--config", args.config]
    if args.data_dir:
        out += ["--data-dir", args.data_dir]
    return out


def _local_host(cfg: Config) -> str:
    """Where this machine reaches the web app."""
    host = cfg.server.host if cfg.server.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _webhook_url(cfg: Config) -> str:
    return f"http://{_local_host(cfg)}:{cfg.server.port}/hooks/storage"


def _prepare_bucket(cfg: Config, store) -> None:
    """Create the bucket with CORS for the app's origin; nothing in it is readable without a signature.

    Behind a CDN, public videos' outputs come from the app's `/processed/...` route (which checks
    visibility on every request), never from an open prefix on the store."""
    store.prepare([cfg.base_url])


# ---------- serve ----------

def _parts(args, cfg: Config) -> tuple[dict[str, list[str]], dict[str, str]]:
    """The command lines of serve's children (this same program) and their environment."""
    from streamforge import logs
    env = child_env()
    env["STREAMFORGE_SERVER_HOST"] = cfg.server.host
    env["STREAMFORGE_SERVER_PORT"] = str(cfg.server.port)
    terminal = "info" if args.verbose else "warning"
    # the web app's /metrics adds up what the web and worker processes counted
    env[METRICS_ENV] = str(_fresh_metrics_dir(cfg.data_dir / "metrics"))
    spawn = {name: self_command(name, *_child_args(args), "--log-file", str(logs.log_dir(cfg.data_dir) / f"{name}.log"),
                                "--terminal-level", terminal)
             for name in ("web", "worker")}
    return spawn, env


def _wait_until_answering(cfg: Config, procs: dict[str, subprocess.Popen], stop: threading.Event,
                          timeout: float = 120.0) -> None:
    """Wait until the web app's /healthz answers 200 (database, store, queue) with every part running."""
    import requests
    url = f"http://{_local_host(cfg)}:{cfg.server.port}/healthz"
    deadline = time.monotonic() + timeout
    while not stop.is_set() and time.monotonic() < deadline:
        if all(p.poll() is None for p in procs.values()):
            try:
                if requests.get(url, timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
        stop.wait(0.2)
    if not stop.is_set():
        log.warning("StreamForge does not answer at %s after %.0f s; see %s", url, timeout,
                    cfg.data_dir / "logs")


def _supervise(procs: dict[str, subprocess.Popen], spawn: dict[str, list[str]], env: dict[str, str],
               stop: threading.Event, children: list[subprocess.Popen]) -> None:
    """Until `stop`: restart a part that exited, with a backoff that doubles up to a minute."""
    backoff = {name: 1.0 for name in procs}
    while not stop.wait(1.0):
        for name, proc in list(procs.items()):
            if proc.poll() is not None:
                log.warning("%s exited with %s; restarting in %.0f s", name, proc.returncode, backoff[name])
                if stop.wait(backoff[name]):
                    break
                backoff[name] = min(60.0, backoff[name] * 2)
                procs[name] = subprocess.Popen(spawn[name], env=env)
                children.append(procs[name])


def _banner(cfg: Config, ticket: str) -> None:
    """The first screen: where to go, how to sign in, where the data is, how to stop."""
    from streamforge.commands.local_serve import SIGN_IN_EMAIL
    from streamforge.store.sessions import TICKET_MINUTES
    print(f"\nStreamForge is running at {cfg.base_url}/\n"
          f"Sign in: {cfg.base_url}/login?token={ticket}\n"
          f"  (works once, for {TICKET_MINUTES} minutes; a password for later: "
          f"streamforge user set {SIGN_IN_EMAIL} --password)\n"
          f"Data: {cfg.data_dir.resolve()} (logs in {(cfg.data_dir / 'logs').resolve()})\n"
          "Stop: press Ctrl-C\n", flush=True)


def cmd_serve(args) -> int:
    """Everything in one process tree: embedded store, web app, worker."""
    cfg = _load(args, host=args.host, port=args.port)
    from streamforge import logs
    logs.setup(logging.INFO if args.verbose else logging.WARNING, logs.log_dir(cfg.data_dir) / "serve.log")
    from streamforge.commands import local_serve
    from streamforge.store import db as dbmod
    from streamforge.store import sessions, users
    dbmod.init_db(cfg.database_url)
    stop = threading.Event()
    children: list[subprocess.Popen] = []
    store_thread = None
    embedded = None

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        if cfg.embedded_storage:
            from streamforge.store.embedded import EmbeddedStore
            embedded = EmbeddedStore(cfg, _webhook_url(cfg))
            embedded.start()
            embedded.wait_ready(90)
            _prepare_bucket(cfg, embedded.object_store())
            store_thread = threading.Thread(target=embedded.run_forever, args=(stop,), daemon=True,
                                            name="sf-storage")
            store_thread.start()
        spawn, env = _parts(args, cfg)
        procs = {name: subprocess.Popen(cmd, env=env) for name, cmd in spawn.items()}
        children.extend(procs.values())
        with dbmod.db.connection_context():
            user = users.add_user(local_serve.SIGN_IN_EMAIL, users.ADMIN, "Admin")  # the sign-in link's user is an admin
            ticket = sessions.create_ticket(user)  # one use, 15 minutes: not an API token
        _wait_until_answering(cfg, procs, stop)
        if _oidc_on(cfg) and not cfg.auth.allow:
            print("OIDC sign-in is on and [auth] allow is empty: only existing users (streamforge user add, "
                  "invites) can sign in", flush=True)
        _banner(cfg, ticket)
        local_serve.write_run_file(cfg)  # for `streamforge import` on this data dir
        _supervise(procs, spawn, env, stop, children)
        return 0
    except StreamForgeError as e:
        print(f"streamforge serve: error: {e}", file=sys.stderr)
        return 1
    finally:
        for proc in children:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in children:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
        stop.set()
        local_serve.remove_run_file(cfg)
        if embedded is not None:
            embedded.stop()


# ---------- web ----------

METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _fresh_metrics_dir(path: Path) -> Path:
    """An emptied directory for prometheus_client's multiprocess mode (a stale one would add dead
    processes' counts to a new run's)."""
    import shutil
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    return path


def cmd_web(args) -> int:
    """The web app under gunicorn: [server] workers processes of [server] threads threads each."""
    _setup_part_logging(args)
    cfg = _load(args, host=args.host, port=args.port)
    if not os.environ.get(METRICS_ENV):
        # before prometheus_client is imported: each gunicorn process writes its counts there and
        # /metrics in any of them adds them all up (serve sets it for its web and worker alike)
        os.environ[METRICS_ENV] = str(_fresh_metrics_dir(cfg.data_dir / "metrics" / f"web-{cfg.server.port}"))
    from streamforge.config import web_processes
    from streamforge.store import db as dbmod
    from streamforge.store.connect import object_store
    dbmod.init_db(cfg.database_url)  # migrate once, before the processes start
    try:
        _prepare_bucket(cfg, object_store(cfg))
    except StreamForgeError as e:
        log.warning("could not prepare the bucket yet (%s); /healthz will say when the store answers", e)
    from gunicorn.app.base import BaseApplication

    from streamforge import frozen, logs
    from streamforge.web import create_app

    class App(BaseApplication):
        def load_config(self):
            self.cfg.set("bind", f"{cfg.server.host}:{cfg.server.port}")
            self.cfg.set("worker_class", "gthread")
            # each process is a Python interpreter with its own GIL: one per core lets the requests
            # of a busy webhook use every core
            self.cfg.set("workers", web_processes(cfg.server))
            self.cfg.set("threads", cfg.server.threads)
            self.cfg.set("timeout", 120)
            self.cfg.set("graceful_timeout", 10)
            self.cfg.set("accesslog", None)
            self.cfg.set("errorlog", args.log_file or "-")
            # the class itself, not its name: the frozen release has no import-by-name surprises
            self.cfg.set("logger_class", logs.GunicornLogger)
            self.cfg.set("on_starting", frozen.fix_reexec)

        def load(self):
            # called in each worker process after the fork: its own store client, database
            # connections and queue, none shared with a sibling
            return create_app(cfg)

    App().run()
    return 0


# ---------- worker ----------

def cmd_worker(args) -> int:
    """A Huey consumer plus the sweeper; SIGTERM or SIGINT hands running videos back to the queue."""
    _setup_part_logging(args)
    cfg = _load(args)
    from huey.consumer import Consumer

    from streamforge.jobs import heartbeats, intake, processing, tasks
    from streamforge.store import db as dbmod
    from streamforge.store.connect import object_store
    dbmod.init_db(cfg.database_url)
    tasks.configure(cfg)
    store = object_store(cfg)
    stop = threading.Event()

    def sweeper():
        while not stop.wait(cfg.sweeper.interval_seconds):
            try:
                with dbmod.db.connection_context():
                    counts = intake.sweep(cfg, store)
                if any(counts.values()):
                    log.info("sweeper: %s", counts)
                    from streamforge.instruments import SWEEPER_TAKEOVERS
                    for kind, n in counts.items():
                        if n:
                            SWEEPER_TAKEOVERS.labels(kind).inc(n)
            except Exception:  # the sweeper must outlive any one failure
                log.exception("sweeper pass failed")

    class HandBackConsumer(Consumer):
        def _handle_signal(self, signum, frame):
            processing.SHUTDOWN.set()
            stop.set()
            self._signum = signum
            self._restart, self._graceful = False, True

    threading.Thread(target=sweeper, name="sf-sweeper", daemon=True).start()
    workers = args.concurrency or cfg.queue.workers
    if workers == 0:  # [queue] workers = 0: runners do all the work; this process only sweeps (and is no worker)
        log.info("worker: [queue] workers = 0, leaving the work to remote runners; sweeping only")
        signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
        signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
        while not stop.wait(1.0):
            pass
        return 0
    beat = heartbeats.start(stop)  # the admin's stats list this worker and its last heartbeat
    consumer = HandBackConsumer(tasks.huey, workers=workers, worker_type="thread", periodic=False,
                                initial_delay=0.05, backoff=1.15, max_delay=0.25, check_worker_health=True)
    consumer.shutdown_timeout = 30
    log.info("worker: %d at a time, queue %s", workers, cfg.queue_url.split("@")[-1])
    consumer.run()
    stop.set()
    beat.join(5)  # leaves the registry
    return 0


# ---------- storage, token, transcode, doctor ----------

def cmd_storage(args) -> int:
    """The embedded SeaweedFS alone."""
    cfg = _load(args)
    from streamforge.store.embedded import run_storage
    return run_storage(cfg, _webhook_url(cfg))


def cmd_token(args) -> int:
    """Create the user if needed and print a new API token alone on stdout."""
    cfg = _load(args)
    from streamforge.store import db as dbmod
    from streamforge.store import videos
    dbmod.init_db(cfg.database_url)
    with dbmod.db.connection_context():
        user = videos.get_or_create_user(args.email, args.name)
        if args.name and user.name != args.name:
            user.name = args.name
            user.save()
        _, token = videos.create_token(user, "cli")
    print(token)
    return 0


def cmd_transcode(args) -> int:
    """The pipeline offline, no server."""
    try:
        cfg = _load(args, fill_secrets=False)
    except StreamForgeError as e:
        print(f"streamforge transcode: error: {e}", file=sys.stderr)
        return 2
    from streamforge.pipeline.command import transcode_command

    def split(text: str) -> list[str]:
        return [x.strip() for x in text.split(",") if x.strip()]

    try:
        heights = [int(h) for h in split(args.heights)] if args.heights else None
    except ValueError:
        print("streamforge transcode: error: --heights must be comma-separated integers", file=sys.stderr)
        return 2
    return transcode_command(args.input, args.outdir, cfg.pipeline,
                             codecs=split(args.codecs) if args.codecs else None, heights=heights,
                             preset=args.preset)


def cmd_doctor(args) -> int:
    """One line per check; non-zero when any fails. Never prints a secret."""
    results: list[tuple[bool, str, str]] = []
    try:
        cfg = _load(args)
        results.append((True, "config", f"loaded ({args.config or os.environ.get('STREAMFORGE_CONFIG') or 'defaults'}"
                                        f"), data dir {cfg.data_dir}"))
    except StreamForgeError as e:
        print(f"FAIL config: {e}")
        return 1
    from streamforge.store import db as dbmod
    try:
        dbmod.init_db(cfg.database_url)
        dbmod.db.connect(reuse_if_open=True)
        dbmod.db.execute_sql("SELECT 1")
        dbmod.db.close()
        results.append((True, "database", cfg.database_url.split("@")[-1].split("?")[0]))
    except Exception as e:  # any driver error is a failed check
        results.append((False, "database", str(e).splitlines()[0] if str(e) else type(e).__name__))
    try:
        from streamforge.store.connect import object_store
        store = object_store(cfg)
        store.ping()
        ok = store.bucket_exists()
        results.append((ok, "store", f"{store.endpoint} bucket {cfg.storage.bucket}"
                                     f"{'' if ok else ' does not exist'}"))
    except StreamForgeError as e:
        hint = " (is `streamforge serve` or `streamforge storage` running?)" if cfg.embedded_storage else ""
        results.append((False, "store", f"{e}{hint}"))
    try:
        from streamforge.jobs import tasks
        tasks.configure(cfg)
        n = tasks.huey.storage.queue_size()
        results.append((True, "queue", f"{cfg.queue_url.split('@')[-1]} ({n} waiting)"))
    except Exception as e:  # Redis or SQLite errors vary by backend
        results.append((False, "queue", str(e).splitlines()[0] if str(e) else type(e).__name__))
    try:
        import av
        missing = []
        for name in ("libx264", "libx265", "libsvtav1", "libvpx-vp9", "aac"):
            try:
                av.codec.Codec(name, "w")
            except Exception:  # PyAV raises different errors for unknown codecs across versions
                missing.append(name)
        results.append((not missing, "codecs", f"PyAV {av.__version__}: " + (
            "libx264, libx265, libsvtav1, libvpx-vp9, aac" if not missing else f"missing {', '.join(missing)}")))
    except ImportError as e:
        results.append((False, "codecs", str(e)))
    if cfg.captions.auto:
        results.append(_speech_check(cfg))
    for ok, name, detail in results:
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
    if results[1][0]:  # the database answered: what its counters say about the store's notifications
        print(_notifications_line(cfg))
    return 0 if all(ok for ok, _, _ in results) else 1


def _speech_check(cfg: Config) -> tuple[bool, str, str]:
    """Doctor's check that the auto captions' model is there (not loaded: the worker's healthcheck runs doctor)."""
    from streamforge.pipeline import speech
    try:
        return True, "speech", speech.check_model(cfg.captions.model)
    except StreamForgeError as e:
        return False, "speech", str(e)


def _notifications_line(cfg: Config) -> str:
    """`WARN notifications: ...` when the sweeper does the webhook's job, else an `ok` line (never a FAIL:
    the worker's healthcheck runs doctor, and a worker is fine while notifications are not)."""
    from streamforge.jobs import intake
    from streamforge.store import counters
    from streamforge.store import db as dbmod
    try:
        with dbmod.db.connection_context():
            health = counters.notification_health()
    except Exception as e:  # any driver error: the database check above already says what is wrong
        return f"WARN notifications: cannot read the counters: {str(e).splitlines()[0] if str(e) else e}"
    warning = intake.notification_warning(health)
    if warning:
        return f"WARN notifications: {warning}"
    last = f"last at {health.last_notification_at:%Y-%m-%d %H:%M} UTC" if health.last_notification_at else "none yet"
    bad = sum(health.unprocessable.values())
    return (f"ok   notifications: {health.notifications} received ({last}), {health.recovered_uploads} uploads "
            f"recovered by the sweeper, {bad} not acted on")


def cmd_import(args) -> int:
    """Upload files and folders through the HTTP API, as a browser does (streamforge/commands/importer.py)."""
    from streamforge.commands.importer import import_command
    return import_command(args, _load(args, fill_secrets=False))


def _oidc_on(cfg: Config) -> bool:
    return bool(cfg.auth.oidc_client_id and (cfg.auth.oidc_issuer or cfg.auth.oidc_metadata_url))


def cmd_user(args) -> int:
    """`streamforge user add|list|set|invite|stats` (streamforge/commands/users.py)."""
    from streamforge.commands.users import cmd_user as run
    return run(args, _load(args))


def cmd_migrate(args) -> int:
    """`streamforge migrate --to CONFIG` (streamforge/commands/migrate.py)."""
    from streamforge.commands.migrate import cmd_migrate as run
    return run(args, _load(args))


def cmd_backup(args) -> int:
    """`streamforge backup DIR` (streamforge/commands/backup.py)."""
    from streamforge.commands.backup import cmd_backup as run
    return run(args, _load(args))


def cmd_restore(args) -> int:
    """`streamforge restore DIR` (streamforge/commands/backup.py)."""
    from streamforge.commands.backup import cmd_restore as run
    return run(args, _load(args))


COMMANDS = {"import": cmd_import, "serve": cmd_serve, "web": cmd_web, "worker": cmd_worker, "storage": cmd_storage,
            "token": cmd_token, "transcode": cmd_transcode, "doctor": cmd_doctor, "user": cmd_user,
            "migrate": cmd_migrate, "backup": cmd_backup, "restore": cmd_restore}


def cmd_runner(args) -> int:
    """A remote runner (streamforge/commands/runner.py): HTTP only, no database, queue or store."""
    from streamforge.commands import runner
    return runner.cmd_runner(args)


def cmd_runner_token(args) -> int:
    """Create a runner and print its token alone on stdout."""
    cfg = _load(args)
    from streamforge.store import db as dbmod
    from streamforge.store import runners
    dbmod.init_db(cfg.database_url)
    with dbmod.db.connection_context():
        _, token = runners.create_runner(args.name)
    print(token)
    return 0


COMMANDS.update({"runner": cmd_runner, "runner-token": cmd_runner_token})


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `streamforge` command."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    frozen_setup()
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except StreamForgeError as e:
        print(f"streamforge {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
