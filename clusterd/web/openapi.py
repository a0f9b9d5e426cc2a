"""The OpenAPI 3.1 description of the JSON API, generated: the paths from the API's
route table, every feature's value schema from its pydantic model (a table: an object
of rows by name)."""

from __future__ import annotations

import functools
from typing import Any

from pydantic import TypeAdapter

from clusterd import __version__
from clusterd.schema.feature import Catalogue

REF = "#/components/schemas/{model}"
ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
STATUSES = {"400": "the request is wrong", "401": "no session: log in",
            "403": "not for this role, or no CSRF token", "409": "a commit conflict",
            "422": "an invalid value: one problem per line"}  # fmt: skip
EDIT = {
    "type": "object",
    "required": ["op"],
    "properties": {
        "op": {
            "enum": ["define", "undefine", "set_record", "set_row", "delete_row", "copy", "move"]
        },
        "start": {"enum": ["empty", "defaults", "inherited"], "description": "define"},
        "row": {"type": "string", "description": "set_row, delete_row"},
        "value": {"description": "set_record, set_row: the feature's record or row"},
        "to": {"type": "string", "description": "copy, move: a mode key, or allgroups"},
    },
}


@functools.cache
def _document(catalogue: Catalogue) -> dict[str, Any]:
    from clusterd.web.api import ROUTES

    schemas: dict[str, Any] = {"Error": ERROR, "Edit": EDIT}
    for feature in catalogue:
        if feature.internal:
            continue
        schema = TypeAdapter(feature.model).json_schema(ref_template=REF)
        schemas.update(schema.pop("$defs", {}))
        if feature.is_table:
            schema = {"type": "object", "additionalProperties": schema}
        described = {"title": feature.title, "description": feature.description}
        schemas[f"feature.{feature.command}"] = {**schema, **described}
    paths: dict[str, dict[str, Any]] = {
        "/api/v1/login": {"post": {
            "summary": "Log in with a cluster user: a session token (Bearer) and a cookie",
            "requestBody": {"content": {"application/json": {"schema": {
                "type": "object", "required": ["user", "passphrase"],
                "properties": {"user": {"type": "string"},
                               "passphrase": {"type": "string"}}}}}},
            "responses": {"200": {"description": "the session"},
                          "401": {"description": "refused"}}}},
        "/api/v1/login/challenge": {"post": {
            "summary": "A key login: {user, key} -> {challenge}; then POST /api/v1/login "
                       "{challenge, signature}: base64 of the key's SSH signature of "
                       "'clusterd web login ' + challenge",
            "responses": {"200": {"description": "the challenge"},
                          "401": {"description": "refused"}}}},
    }  # fmt: skip
    for path, method, _, summary in ROUTES:
        spec: dict[str, Any] = {
            "summary": summary,
            "responses": {"200": {"description": "done"},
                          **{code: {"description": text, "content": {"application/json": {
                              "schema": {"$ref": REF.format(model="Error")}}}}
                             for code, text in STATUSES.items()}},
        }  # fmt: skip
        if "{feature}" in path:
            commands = [f.command for f in catalogue if not f.internal]
            mode = {"name": "mode", "in": "query", "schema": {"type": "string"},
                    "description": "cluster, group:NAME or machine:NAME"}  # fmt: skip
            spec["parameters"] = [{"name": "feature", "in": "path", "required": True,
                                   "schema": {"enum": commands}}, mode]  # fmt: skip
        if path.endswith("/edit"):
            spec["requestBody"] = {"content": {"application/json": {
                "schema": {"$ref": REF.format(model="Edit")}}}}  # fmt: skip
        paths.setdefault(path, {})[method.lower()] = spec
    return {
        "openapi": "3.1.0",
        "info": {"title": "clusterd", "version": __version__},
        "components": {"schemas": schemas,
                       "securitySchemes": {"session": {"type": "http", "scheme": "bearer"}}},
        "security": [{"session": []}],
        "paths": paths,
    }  # fmt: skip


def document(catalogue: Catalogue) -> dict[str, Any]:
    return _document(catalogue)
