"""`streamforge user add|list|set|invite|stats`: the admin API's work from the command line."""
from __future__ import annotations

import argparse

from streamforge.config import Config
from streamforge.errors import ValidationError


def add_parser(sub, common) -> None:
    """The `user` command and its actions."""
    p = sub.add_parser("user", help="users: add, list, set role/quota/disabled, invite, stats")
    usub = p.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    a = usub.add_parser("add", help="create a user (or give an existing one the role)")
    common(a)
    a.add_argument("email")
    a.add_argument("--role", default="uploader", choices=("admin", "uploader", "viewer"))
    a.add_argument("--name")
    a = usub.add_parser("list", help="every user with role, usage and quota")
    common(a)
    a = usub.add_parser("set", help="change a user's role, quota or disabled flag")
    common(a)
    a.add_argument("email")
    a.add_argument("--role", choices=("admin", "uploader", "viewer"))
    state = a.add_mutually_exclusive_group()
    state.add_argument("--disable", dest="disabled", action="store_const", const=True)
    state.add_argument("--enable", dest="disabled", action="store_const", const=False)
    a.add_argument("--max-bytes", type=_limit, help="bytes quota; 0 = unlimited, 'default' = the config's")
    a.add_argument("--max-videos", type=_limit, help="videos quota; 0 = unlimited, 'default' = the config's")
    a.add_argument("--password", action="store_true",
                   help="set their password: asked twice on a terminal, else read from stdin (one line)")
    a = usub.add_parser("invite", help="print a one-use invite link for an email (7 days)")
    common(a)
    a.add_argument("email")
    a.add_argument("--role", choices=("admin", "uploader", "viewer"))
    a = usub.add_parser("stats", help="videos by status, storage, queue depth and workers")
    common(a)


_DEFAULT = object()


def _limit(text: str):
    if text == "default":
        return _DEFAULT
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("an integer >= 0, or 'default'") from None
    if value < 0:
        raise argparse.ArgumentTypeError("an integer >= 0, or 'default'")
    return value


def _limit_text(n: int, size: bool) -> str:
    from streamforge.units import human_size
    return "unlimited" if not n else (human_size(n) if size else str(n))


def _line(user, cfg: Config, used: dict) -> str:
    from streamforge.store import users
    q = users.quota(user, cfg.quota)
    role = users.effective_role(user, cfg.auth.admins)
    seen = user.last_seen_at.isoformat(timespec="seconds") + "Z" if user.last_seen_at else "never"
    return (f"{user.email}\t{role}{' (disabled)' if user.disabled else ''}\t"
            f"{used['bytes']} bytes of {_limit_text(q['max_bytes'], True)}\t"
            f"{used['videos']} videos of {_limit_text(q['max_videos'], False)}\tlast seen {seen}")


def cmd_user(args, cfg: Config) -> int:
    """Run one `user` action against the configured database; prints what it did."""
    from streamforge.store import db as dbmod
    from streamforge.store import users
    dbmod.init_db(cfg.database_url)
    with dbmod.db.connection_context():
        action = args.user_command
        if action == "add":
            user = users.add_user(args.email, args.role, args.name)
            print(_line(user, cfg, users.usage(user)))
        elif action == "list":
            used = users.usage_by_user()
            for user in users.list_users():
                print(_line(user, cfg, used.get(user.id, {"bytes": 0, "videos": 0})))
        elif action == "set":
            user = users.find_user(args.email)
            quota = {k: (None if v is _DEFAULT else v) for k, v in
                     (("max_bytes", args.max_bytes), ("max_videos", args.max_videos)) if v is not None}
            if args.role is None and args.disabled is None and not quota and not args.password:
                raise ValidationError("nothing to change: give --role, --disable/--enable, --max-bytes, --max-videos "
                                      "or --password")
            if args.password:
                user = users.set_password(user, _read_password(user.email))
            user = users.update_user(user, role=args.role, disabled=args.disabled, quota=quota)
            print(_line(user, cfg, users.usage(user)) + ("\tpassword set" if args.password else ""))
        elif action == "invite":
            _, plain = users.create_invite(args.email, args.role or cfg.auth.default_role)
            print(f"{cfg.base_url}/login?invite={plain}")
        else:
            from streamforge.jobs import tasks
            tasks.configure(cfg)
            _print_stats()
    return 0


def _read_password(email: str) -> str:
    """The new password: typed twice on a terminal (not echoed), else the first line of stdin."""
    import getpass
    import sys
    if sys.stdin.isatty():
        first = getpass.getpass(f"New password for {email}: ")
        if getpass.getpass("The same password again: ") != first:
            raise ValidationError("the two passwords differ; nothing changed")
        return first
    line = sys.stdin.readline()
    if not line:
        raise ValidationError("no password on stdin; nothing changed")
    return line.rstrip("\r\n")


def _print_stats() -> None:
    from streamforge.web.admin import collect_stats
    s = collect_stats()
    print("videos: " + ", ".join(f"{k} {v}" for k, v in s["videos"].items()))
    print(f"storage: {s['storage_bytes']} bytes")
    print(f"queue: {s['queue_depth']} waiting")
    for w in s["workers"]:
        print(f"worker {w['name']}: last seen {w['last_seen_at']}, running {w['running']}"
              f"{'' if w['alive'] else ' (gone)'}")
    if not s["workers"]:
        print("workers: none reported in the last day")

