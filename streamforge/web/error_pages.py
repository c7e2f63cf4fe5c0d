"""The app's own answers for unknown URLs and failures outside the blueprints' handlers: an HTML page
(404, 405, 500, ...) for a browser, `{"error": {"code", "message"}}` for `/api/`, `/hooks/` and `/play/`."""
from __future__ import annotations

import logging

from flask import render_template, request
from werkzeug.exceptions import HTTPException, InternalServerError

from streamforge.web.common import error

log = logging.getLogger("streamforge.web")
JSON_PREFIXES = ("/api/", "/hooks/", "/play/", "/oembed")
TITLES = {404: "Page not found", 405: "Not allowed here", 500: "Something went wrong"}


def wants_json() -> bool:
    """True for the API's paths (and clients that ask for JSON rather than HTML)."""
    if request.path.startswith(JSON_PREFIXES):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json" and request.accept_mimetypes[best] > request.accept_mimetypes["text/html"]


def answer(e: HTTPException):
    """One error as JSON or as the app's page."""
    status = e.code or 500
    if wants_json():
        return error(status, (e.name or "error").lower().replace(" ", "_"), e.description or e.name)
    title = TITLES.get(status, e.name or "Error")
    return render_template("error.html", status=status, title=title, message=e.description), status


def init_app(app) -> None:
    """Register the handlers for every HTTP error and for unexpected exceptions."""
    app.register_error_handler(HTTPException, answer)

    @app.errorhandler(Exception)
    def _unexpected(e: Exception):
        if isinstance(e, HTTPException):
            return answer(e)
        log.exception("unexpected error on %s %s", request.method, request.path)
        return answer(InternalServerError("The server hit an unexpected error; it has been logged. "
                                          "Try again in a moment."))
