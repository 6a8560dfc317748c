"""The OpenAPI document, made to tell the truth from the code that answers.

Litestar describes paths, parameters, bodies and success responses from the handlers' types.
``api_document`` adds what it cannot know, derived per operation from the handler itself:

- the problem answers each operation can give (``problem_statuses``): 400 everywhere (a query
  parameter the operation does not take is refused), 401, 403 and 429 where a key is needed
  (``opt["roles"]``), 404 where a path names a resource, 413 and 422 where input is read, 503
  wherever the database is, plus the refusals a route declares in ``opt["problems"]`` (402,
  409, ...), each as a ``Problem`` under ``application/problem+json``;
- bearer authentication as a security scheme, listed by every operation that needs a key and
  by no other;
- the schemas of bodies and answers as msgspec itself reads and writes them (bounds, patterns,
  enums, ``additionalProperties: false`` where unknown fields are refused), and the shape of ids
  and headers the types leave as plain strings;
- the media types of streamed answers (``opt["media_types"]``);
- query parameters as they are written on the wire: an optional one is left out to mean "no
  filter", never given as ``null`` (``kind=null`` is refused like any value not in the enum).

The document is built once per app and served at ``/schema/openapi.json``; ``agent-ledger
openapi`` writes the same document to ``openapi/openapi.json``.
"""

from __future__ import annotations

import copy
import typing
from collections.abc import Iterator
from typing import Any

import msgspec
from litestar import Litestar, Request, Response
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.routes import HTTPRoute

from agent_ledger.config import ENVIRONMENT
from agent_ledger.deadline import DEADLINE_OPT
from agent_ledger.patterns import CURSOR_PATTERN, ID_OF, ID_PREFIXES, RUN_ID_PATTERN, id_pattern
from agent_ledger.request_input import declared_query

__all__ = ["PROBLEM_MEDIA_TYPE", "DocumentRenderPlugin", "api_document", "problem_statuses"]

PROBLEM_MEDIA_TYPE = "application/problem+json"
SECURITY_SCHEME = "bearerAuth"
_CACHE_KEY = "_api_document"

# What each status means wherever it appears; a route's own opt["problems"] adds its codes.
GENERIC_PROBLEMS: dict[int, str] = {
    400: "`validation-error`: the request cannot be read as this operation's input (not "
    "`application/json`, not JSON, nested deeper than 32 levels, a duplicate key, a value of "
    "the wrong JSON type, a missing or unknown field or parameter).",
    401: "`unauthorized`: no key, or a malformed, unknown, revoked or expired one.",
    403: "`forbidden`: this key's role may not call this operation, or the resource belongs to "
    "another agent.",
    404: "`not-found`: no such resource.",
    408: "`request-timeout`: the body did not arrive within LEDGER_REQUEST_TIMEOUT_SECONDS.",
    413: "`payload-too-large`: the body is larger than LEDGER_MAX_BODY_BYTES.",
    422: "`validation-error`: the input is well formed, but a value breaks a rule of its field "
    "(range, length, allowed values, pattern, a reference to something that does not exist, "
    "a cursor not issued here).",
    429: "`rate-limited`: this key made more than LEDGER_RATE_LIMIT_PER_KEY requests in this "
    "second (only where an operator set a limit). Retry after `Retry-After` seconds.",
    503: "`database-unavailable`: the database did not answer within "
    "LEDGER_REQUEST_TIMEOUT_SECONDS, or could not be reached. Whether the request took effect "
    "is not known: retry after `Retry-After` seconds, with the same `Idempotency-Key` where the "
    "operation takes one.",
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer", "minimum": 0},
    }
}
_WWW_AUTHENTICATE = {
    "WWW-Authenticate": {
        "description": 'The scheme to use: `Bearer realm="agent-ledger"`.',
        "schema": {"type": "string"},
    }
}
_HEADERS_BY_STATUS = {
    401: _WWW_AUTHENTICATE,
    408: _RETRY_AFTER,
    429: _RETRY_AFTER,
    503: _RETRY_AFTER,
}

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An RFC 9457 problem. `code` is stable; refusals add members of their own "
    "(`field` and `errors` for validation, `scope`, `window`, `limit`, `spent`, `held` and "
    "`requested` for `budget-exceeded`).",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "code": {"type": "string", "pattern": "^[a-z][a-z-]*$"},
        "instance": {"type": "string"},
        "field": {"type": ["string", "null"]},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "message": {"type": "string"},
                    "key": {"type": ["string", "null"]},
                    "source": {"type": ["string", "null"]},
                },
            },
        },
        "request_id": {"type": "string"},
    },
    "additionalProperties": True,
}

IDEMPOTENCY_KEY_SCHEMA = {
    "type": "string",
    "minLength": 1,
    "maxLength": 255,
    "pattern": "^[\\x20-\\x7e]+$",
}


def problem_statuses(handler: HTTPRouteHandler, path_params: set[str]) -> dict[int, str]:
    """Every problem status ``handler`` can answer, with what it means there."""
    # Every operation reads its query string, if only to refuse a parameter it does not take.
    statuses: dict[int, str] = {400: GENERIC_PROBLEMS[400]}
    reads_input = bool(declared_query(handler, path_params)) or "data" in _signature(handler)
    if not handler.opt.get("public"):
        statuses |= {s: GENERIC_PROBLEMS[s] for s in (401, 403, 429)}
    if path_params:
        statuses[404] = GENERIC_PROBLEMS[404]
    if reads_input:
        statuses[422] = GENERIC_PROBLEMS[422]
    if "data" in _signature(handler):
        statuses |= {s: GENERIC_PROBLEMS[s] for s in (408, 413)}
    if handler.opt.get("database", True):
        statuses[503] = GENERIC_PROBLEMS[503]
        if deadline := handler.opt.get(DEADLINE_OPT):  # a route answered within its own
            statuses[503] = statuses[503].replace(
                "LEDGER_REQUEST_TIMEOUT_SECONDS", ENVIRONMENT[deadline]
            )
    for status, meaning in handler.opt.get("problems", {}).items():
        statuses[status] = f"{statuses[status]} {meaning}" if status in statuses else meaning
    return dict(sorted(statuses.items()))


def api_document(app: Litestar) -> dict[str, Any]:
    """The finished document for ``app`` (built on first use, then kept)."""
    document = app.state.get(_CACHE_KEY)
    if document is None:
        document = _build(app)
        app.state[_CACHE_KEY] = document
    return document


class DocumentRenderPlugin(JsonRenderPlugin):
    """Serves ``api_document`` at ``/schema/openapi.json`` instead of Litestar's raw one."""

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return self.render_json(request, api_document(request.app))


def _build(app: Litestar) -> dict[str, Any]:
    document = copy.deepcopy(app.openapi_schema.to_schema())
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    components["securitySchemes"] = {
        SECURITY_SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key: `Authorization: Bearer al_...`.",
        }
    }
    handlers = dict(_operations(app))
    for item in document.get("paths", {}).values():
        for operation in item.values():
            handler, path_params = handlers[operation["operationId"]]
            _describe(operation, handler, path_params)
    # msgspec describes its own types exactly as it decodes them: bounds, patterns, enums and
    # additionalProperties: false for forbid_unknown_fields (Litestar's rendering drops some).
    structs = _structs([h for h, _ in handlers.values()])
    _, exact = msgspec.json.schema_components(structs, ref_template="#/components/schemas/{name}")
    schemas.update(exact)
    for struct in structs:
        _describe_times(struct, schemas[struct.__name__])
    for name, schema in schemas.items():
        if schema.get("additionalProperties") is not False:  # answers, not request bodies
            _describe_answer_fields(name, schema)
    return document


def _describe_times(struct: type[msgspec.Struct], schema: dict[str, Any]) -> None:
    """msgspec leaves a zone-less ``datetime`` as a plain string; ours are RFC 3339 times."""
    for field in msgspec.inspect.type_info(struct).fields:
        info = field.type
        while isinstance(info, msgspec.inspect.Metadata | msgspec.inspect.UnionType):
            info = (
                info.type
                if isinstance(info, msgspec.inspect.Metadata)
                else next(
                    (t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)), None
                )
            )
        if isinstance(info, msgspec.inspect.DateTimeType):
            for branch in (prop := schema["properties"][field.encode_name]).get("anyOf", [prop]):
                if branch.get("type") == "string":
                    branch["format"] = "date-time"


def _describe_answer_fields(name: str, schema: dict[str, Any]) -> None:
    """Ids and cursors in answers are plain ``str`` to msgspec; give them their shape."""
    for field, prop in schema.get("properties", {}).items():
        prefix = ID_OF.get(name) if field == "id" else ID_PREFIXES.get(field)
        if prefix is not None:
            _constrain_string(prop, id_pattern(prefix))
        elif field == "next_cursor":
            _constrain_string(prop, CURSOR_PATTERN)


def _constrain_string(prop: dict[str, Any], pattern: str) -> None:
    for branch in prop.get("anyOf", [prop]):
        if branch.get("type") == "string":
            branch["pattern"] = pattern


def _operations(app: Litestar) -> Iterator[tuple[str, tuple[HTTPRouteHandler, set[str]]]]:
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            for handler in route.route_handlers:
                if isinstance(handler.operation_id, str):
                    yield handler.operation_id, (handler, set(route.path_parameters))


def _describe(operation: dict[str, Any], handler: HTTPRouteHandler, path_params: set[str]) -> None:
    responses = {
        code: response
        for code, response in operation.get("responses", {}).items()
        if int(code) < 400 or _declared_by_handler(handler, int(code))
    }
    for status, meaning in problem_statuses(handler, path_params).items():
        responses[str(status)] = {
            "description": meaning,
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
            **({"headers": _HEADERS_BY_STATUS[status]} if status in _HEADERS_BY_STATUS else {}),
        }
    if media_types := handler.opt.get("media_types"):
        for code, response in responses.items():
            if code.startswith("2"):
                response["content"] = {
                    media_type: {"schema": {"type": "string"}} for media_type in media_types
                }
    operation["responses"] = dict(sorted(responses.items()))
    body = _signature(handler).get("data")
    if body is not None and body.is_optional and "requestBody" in operation:
        operation["requestBody"]["required"] = False  # no body at all is fine here
    if not handler.opt.get("public"):
        operation["security"] = [{SECURITY_SCHEME: []}]
    for parameter in operation.get("parameters", []):
        _describe_parameter(parameter)


def _declared_by_handler(handler: HTTPRouteHandler, status: int) -> bool:
    """A non-problem error answer the handler itself declares (readiness' 503, say)."""
    return status in (handler.responses or {})


def _describe_parameter(parameter: dict[str, Any]) -> None:
    name, where = parameter.get("name"), parameter.get("in")
    if where == "path" and name in ID_PREFIXES:
        parameter["schema"] = {"type": "string", "pattern": id_pattern(ID_PREFIXES[name])}
    elif where == "path" and name == "run_id":
        parameter["schema"] = {"type": "string", "pattern": RUN_ID_PATTERN}
    elif where == "header" and name == "Idempotency-Key":
        parameter["schema"] = dict(IDEMPOTENCY_KEY_SCHEMA)
    elif where == "query" and "schema" in parameter:
        parameter["schema"] = _without_null(parameter["schema"])


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter's schema without the ``null`` its Python type (``X | None``) adds:
    leaving the parameter out is how a client says none, and the text ``null`` is no value of
    it (``kind=null`` is refused)."""
    schema = dict(schema)
    for key in ("oneOf", "anyOf"):
        if key in schema:
            branches = [b for b in schema.pop(key) if b.get("type") != "null"]
            if len(branches) == 1:
                schema = {**branches[0], **schema}
            else:
                schema[key] = branches
    if isinstance(kinds := schema.get("type"), list):
        kinds = [k for k in kinds if k != "null"]
        schema["type"] = kinds[0] if len(kinds) == 1 else kinds
    if "enum" in schema:
        schema["enum"] = [value for value in schema["enum"] if value is not None]
    return schema


def _signature(handler: HTTPRouteHandler) -> dict[str, Any]:
    return handler.parsed_fn_signature.parameters


def _structs(handlers: list[HTTPRouteHandler]) -> list[type[msgspec.Struct]]:
    """Every Struct a handler reads or answers with, nested ones included."""
    found: dict[str, type[msgspec.Struct]] = {}
    annotations = []
    for handler in handlers:
        signature = handler.parsed_fn_signature
        if (body := signature.parameters.get("data")) is not None:
            annotations.append(body.annotation)
        annotations.extend(_unwrapped(signature.return_type.annotation))

    def walk(info: Any, seen: set[int]) -> None:
        if id(info) in seen:
            return
        seen.add(id(info))
        if isinstance(info, msgspec.inspect.StructType):
            found.setdefault(info.cls.__name__, info.cls)
            for field in info.fields:
                walk(field.type, seen)
        for child in ("type", "item_type", "key_type", "value_type"):
            if hasattr(info, child):
                walk(getattr(info, child), seen)
        for member in getattr(info, "types", ()):
            walk(member, seen)

    for annotation in annotations:
        try:
            walk(msgspec.inspect.type_info(annotation), set())
        except TypeError:  # not a msgspec type (a raw Response, say): nothing to describe
            continue
    return list(found.values())


def _unwrapped(annotation: Any) -> list[Any]:
    """``Response[X]`` -> [X]; anything else as it is."""
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin is not None and isinstance(origin, type) and issubclass(origin, Response):
        return list(args)
    return [annotation]
