"""`GET /api/openapi.json`: the HTTP API as OpenAPI 3.1, from the hand-written `openapi.yaml` beside this module.

Hand-written rather than generated: the views parse their JSON by hand (no pydantic or marshmallow
models for spectree, flask-openapi3 or apispec to read), and one file is easier to keep whole while
several people add routes than YAML docstrings spread over every view. tests/test_openapi.py keeps it
true: every route of the app described, nothing described that the app does not serve, and
schemathesis drives the API from it."""
from __future__ import annotations

import copy
import functools
from pathlib import Path

from flask import Blueprint, jsonify

from streamforge.web.common import app_url

SPEC = Path(__file__).with_name("openapi.yaml")
bp = Blueprint("openapi", __name__)


@functools.cache
def _document() -> dict:
    import yaml
    with open(SPEC, encoding="utf-8") as f:
        return yaml.safe_load(f)


def document(server_url: str = "") -> dict:
    """The OpenAPI document, naming `server_url` as its server when given."""
    doc = copy.deepcopy(_document())
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc


@bp.route("/api/openapi.json")
def openapi():
    """The OpenAPI 3.1 description of the whole HTTP API."""
    resp = jsonify(document(app_url()))
    resp.headers["Cache-Control"] = "public, max-age=300"
    return resp


def init_app(app) -> None:
    """Register /api/openapi.json."""
    app.register_blueprint(bp)
