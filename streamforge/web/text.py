"""Template filters for text people wrote and dates: `linkify` (a description's web addresses become
links, everything else stays escaped text) and `ago` ("3 days ago", the exact date in a tooltip)."""
from __future__ import annotations

import datetime
import re

from markupsafe import Markup, escape

# http(s) addresses up to the next space or angle bracket; a closing ) . , ; : ! ? is punctuation after it
URL = re.compile(r"https?://[^\s<>\"']+[^\s<>\"'.,;:!?)\]]")


def linkify(text: str | None) -> Markup:
    """Escaped `text` whose http(s) addresses are links that leave the site: rel="nofollow noopener"."""
    out, last = [], 0
    source = text or ""
    for match in URL.finditer(source):
        url = match.group(0)
        out.append(escape(source[last:match.start()]))
        out.append(Markup('<a href="{0}" rel="nofollow noopener noreferrer" target="_blank">{0}</a>').format(url))
        last = match.end()
    out.append(escape(source[last:]))
    return Markup("").join(out)


UNITS = (("year", 365 * 86400), ("month", 30 * 86400), ("week", 7 * 86400), ("day", 86400), ("hour", 3600),
         ("minute", 60))


def ago(value: str | datetime.datetime | None, now: datetime.datetime | None = None) -> str:
    """How long ago an ISO time (as VIDEO has them, UTC) was: "just now", "5 minutes ago", "2 years ago"."""
    if not value:
        return ""
    when = value if isinstance(value, datetime.datetime) else datetime.datetime.fromisoformat(value.rstrip("Z"))
    now = now or datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    seconds = (now - when.replace(tzinfo=None)).total_seconds()
    if seconds < 60:
        return "just now"
    for name, size in UNITS:
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {name}{'' if n == 1 else 's'} ago"
    return "just now"


def init_app(app) -> None:
    """Register the filters."""
    app.add_template_filter(linkify, "linkify")
    app.add_template_filter(ago, "ago")
