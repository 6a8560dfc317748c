"""Strict reading of what a request carries, before Litestar converts it.

Litestar converts input leniently (msgspec's lax mode): ``"100"`` becomes 100, ``kind=null``
becomes "no filter", ``since=0.5`` a Unix time, a ``text/plain`` body is read as JSON and a
duplicate key silently wins. In a service that moves money each of those turns a client's mistake
into a different decision, so every request is first read here, strictly, against the types its
handler declares (``check_request_input``, the app's ``before_request`` hook; it runs after the
guard, so nothing is revealed to a caller without a key):

- a body only as ``application/json`` (UTF-8), nested at most ``MAX_DEPTH`` levels (checked on the
  raw bytes, before any decoding), without a key twice in one object, each value of its declared
  JSON type (an integer may be written ``100.0``, as JSON Schema allows; never ``"100"``);
- only the query parameters the operation declares, each at most once, integers written as
  integers and times as RFC 3339;
- path parameters that can name something: an id of the shape this service issues for its kind
  (``patterns.ID_PREFIXES``), any other text without a NUL (which Postgres cannot store).
  Anything else is answered 404 ``not-found``, as an unknown id is, before the database is
  asked. Names a client chooses (a run id, a model) are checked by their service instead, as
  they are in a body: 422 naming the field.

What passes converts to the same values in Litestar's lenient mode, so handlers are unchanged.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from litestar import Request
from litestar.handlers import HTTPRouteHandler
from litestar.params import QueryParameter

from agent_ledger.errors import BadRequest, InvalidInput, NotFound
from agent_ledger.json_shape import ShapeError, check_shape
from agent_ledger.path_segments import restore_encoded_segments
from agent_ledger.patterns import ID_PREFIXES, id_pattern
from agent_ledger.validation import Explained, explain, type_names

__all__ = ["MAX_DEPTH", "check_request_input", "declared_query"]

MAX_DEPTH = 32
_PLAN_KEY = "_strict_input_plan"
_INTEGER = re.compile(r"^-?[0-9]{1,19}$")
_INT_GOT_FLOAT = re.compile(r"^Expected `int[^`]*`, got `float`")
_JSON_MEDIA_TYPE = "application/json"
# What a path parameter may be to name anything at all (matched whole); other names: _STORABLE.
_PATH_VALUES = {name: re.compile(id_pattern(prefix)) for name, prefix in ID_PREFIXES.items()}
_STORABLE = re.compile(r"[^\x00]*")
# Chosen by clients and checked by their services (runs.service.check_run_id, prices'
# valid_model_name), before any database work.
_NAMED_BY_CLIENT = frozenset({"run_id", "model"})
# Handler parameters Litestar fills from the connection itself, never from the query string.
_RESERVED = frozenset(
    {"request", "socket", "state", "scope", "headers", "cookies", "query", "body"}
)


class _Plan(msgspec.Struct, frozen=True):
    """What one handler reads: its body type (if any) and its query parameters by wire name."""

    body: Any
    body_required: bool
    query: dict[str, Any]


def _plan_for(handler: HTTPRouteHandler, path_params: set[str]) -> _Plan:
    plan = handler.opt.get(_PLAN_KEY)
    if plan is None:
        plan = _build_plan(handler, path_params)
        handler.opt[_PLAN_KEY] = plan
    return plan


def declared_query(handler: HTTPRouteHandler, path_params: set[str]) -> dict[str, Any]:
    """The query parameters ``handler`` reads, by their name on the wire, with their types."""
    query: dict[str, Any] = {}
    not_query = path_params | set(handler.resolve_dependencies()) | _RESERVED
    for name, field in handler.parsed_fn_signature.parameters.items():
        definition = field.kwarg_definition
        if isinstance(definition, QueryParameter) and name not in path_params:
            query[definition.query or definition.name or name] = field.annotation
        elif definition is None and name not in not_query and name != "data":
            query[name] = field.annotation  # Litestar reads an unmarked parameter from the query
    return query


def _build_plan(handler: HTTPRouteHandler, path_params: set[str]) -> _Plan:
    body = handler.parsed_fn_signature.parameters.get("data")
    return _Plan(
        body=None if body is None else body.annotation,
        body_required=body is not None and not body.is_optional,
        query=declared_query(handler, path_params),
    )


async def check_request_input(request: Request[Any, Any, Any]) -> None:
    """``before_request`` hook: refuse what cannot be read strictly (400) or breaks a declared
    rule of its type (422), with a detail that names the field."""
    handler = request.route_handler
    if not isinstance(handler, HTTPRouteHandler):
        return
    restore_encoded_segments(request.scope)  # a run id holding "/", sent as %2F
    if request.method != "OPTIONS":  # which methods a path has, whatever its ids name
        _check_path(request.path_params)
    plan = _plan_for(handler, set(request.path_params))
    _check_query(request, plan.query)
    if plan.body is not None:
        await _check_body(request, plan)


def _refuse(explained: Explained, source: str) -> None:
    error = InvalidInput if explained.status == 422 else BadRequest
    located = {"field": explained.field} if explained.field else {}
    raise error(
        explained.detail,
        **located,
        errors=[{"message": explained.detail, "key": explained.field, "source": source}],
    )


def _check_path(path_params: dict[str, Any]) -> None:
    for name, value in path_params.items():
        if name in _NAMED_BY_CLIENT or not isinstance(value, str):
            continue
        if not _PATH_VALUES.get(name, _STORABLE).fullmatch(value):
            raise NotFound(f"No {name.removesuffix('_id')} with id {value!r}.")


def _check_query(request: Request[Any, Any, Any], declared: dict[str, Any]) -> None:
    for name in request.query_params:
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none"
            _refuse(
                Explained(
                    400,
                    name,
                    f"{name} is not a query parameter of this operation (it takes: {known}).",
                ),
                "query",
            )
        values = request.query_params.getall(name)
        if len(values) > 1:
            _refuse(Explained(400, name, f"{name} is given more than once."), "query")
        annotation = declared[name]
        try:
            msgspec.convert(_typed(values[0], annotation), annotation, strict=True)
        except msgspec.ValidationError as exc:
            _refuse(explain(str(exc), field=name, annotation=annotation), "query")


def _typed(raw: str, annotation: Any) -> Any:
    """A query value as the JSON value it spells, where its type is a number or a boolean:
    only an integer literal is an integer ("1e3", "0x10", " 5" and "5.0" stay text, and are
    refused), and only ``true`` and ``false`` are booleans ("1", "yes" and "True" are refused)."""
    names = type_names(annotation)
    if int in names and _INTEGER.match(raw):
        return int(raw)
    if bool in names and raw in ("true", "false"):
        return raw == "true"
    return raw


async def _check_body(request: Request[Any, Any, Any], plan: _Plan) -> None:
    body = await request.body()
    if not body:
        if plan.body_required:
            _refuse(
                Explained(
                    400, None, "This operation needs a JSON body (Content-Type: application/json)."
                ),
                "body",
            )
        return
    media_type, options = request.content_type
    if media_type.lower() != _JSON_MEDIA_TYPE or options.get("charset", "utf-8").lower() not in (
        "utf-8",
        "utf8",
    ):
        sent = request.headers.get("content-type")
        _refuse(
            Explained(
                400,
                None,
                "The body must be sent with Content-Type: application/json "
                f"(UTF-8); this request has {sent or 'none'}.",
            ),
            "body",
        )
    try:
        check_shape(body, MAX_DEPTH)
    except ShapeError as refused:
        _refuse(Explained(400, refused.field, refused.detail), "body")
    try:
        msgspec.json.decode(body, type=plan.body, strict=True)
    except msgspec.ValidationError as exc:
        if not _INT_GOT_FLOAT.match(str(exc)):
            _refuse(explain(str(exc), annotation=plan.body), "body")
        _check_with_integral_numbers(body, plan.body)
    except msgspec.DecodeError as exc:
        _refuse(Explained(400, None, f"The body is not valid JSON: {exc}."), "body")


def _check_with_integral_numbers(body: bytes, annotation: Any) -> None:
    """Check again, reading numbers without a fraction (``100.0``, ``1e2``) as integers.

    JSON has one number type and JSON Schema calls 100.0 an integer, so an integer field takes
    it (Litestar then converts it exactly); ``100.5``, ``"100"`` and ``true`` stay refused.
    """
    try:
        msgspec.convert(_integral_as_int(msgspec.json.decode(body)), annotation, strict=True)
    except msgspec.ValidationError as exc:
        _refuse(explain(str(exc), annotation=annotation), "body")


def _integral_as_int(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    if isinstance(value, dict):
        return {k: _integral_as_int(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral_as_int(v) for v in value]
    return value
