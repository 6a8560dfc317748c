"""Which status a refused input gets, and a detail that names the field in words.

The one rule (README, "Errors"):

- **400** ``validation-error``: the request cannot be read as this operation's input. The body
  is not ``application/json``, not JSON, nested too deep or has a key twice; a value has the wrong
  JSON type (a number where a string belongs, a string where a number belongs); a field is
  missing or unknown; a query parameter is unknown, repeated, or not of its type (an integer, an
  RFC 3339 time); a cursor is not one the service issued.
- **422** ``validation-error``: the input is well formed and of the right types, but a value
  breaks a rule: out of range, too long or short, not one of the allowed values, not matching its
  pattern, an amount that is zero or has more than 9 fractional digits, a time outside 1970-9000,
  a reference to something that does not exist.

msgspec reports both kinds with messages such as ``Expected `int`, got `str` - at `$.limit```;
``explain`` sorts them by that rule and rewrites them for people.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Sequence
from typing import Any

import msgspec

from agent_ledger.patterns import (
    AMOUNT_PATTERN,
    CURRENCY_PATTERN,
    RUN_ID_PATTERN,
    SIGNED_AMOUNT_PATTERN,
)

__all__ = ["Explained", "explain", "join_field", "type_names"]

_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_EXPECTED_GOT = re.compile(r"^Expected `(?P<expected>[^`]+)`, got `(?P<got>[^`]+)`$")
_CONSTRAINT = re.compile(r"^Expected `(?P<type>[^`]+)` (?P<rule>.+)$")
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]+)`$")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<name>[^`]+)`$")
_ENUM = re.compile(r"^Invalid enum value (?P<value>.+)$")
_COMPARISON = re.compile(r"^(?P<op>>=|<=|>|<) (?P<bound>\S+)$")
_LENGTH = re.compile(r"^of length (?P<op>>=|<=) (?P<bound>\d+)$")
_REGEX = re.compile(r"^matching regex '(?P<regex>.*)'$", re.DOTALL)

_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "null": "null",
    "object": "a JSON object",
    "array": "a JSON array",
    "datetime": "an RFC 3339 time such as 2026-11-28T19:30:00Z",
}
_COMPARISON_WORDS = {">=": "at least", "<=": "at most", ">": "greater than", "<": "less than"}
_LENGTH_UNITS = {"str": "characters", "object": "members", "array": "items"}


class Explained(msgspec.Struct, frozen=True):
    status: int  # 400 or 422, by the rule above
    field: str | None  # dotted name, "limits.total"; None for the body as a whole
    detail: str


def join_field(*parts: str | None) -> str | None:
    """``join_field("limits", "total")`` -> ``"limits.total"``; empty parts are skipped."""
    names = [p for p in parts if p]
    return ".".join(names).replace(".[", "[") or None


def explain(message: str, *, field: str | None = None, annotation: Any = None) -> Explained:
    """Turn one msgspec validation message into words and a status.

    ``field`` names where the checked value sits (a query parameter, say) when the message's
    own path (``$.limits.total``) starts below it; ``annotation`` is the type that was checked,
    used to list the allowed values of an enum.
    """
    at = _AT.match(message)
    assert at is not None  # the pattern matches any text
    text, path = at["message"].strip(), _field_from_path(at["path"])
    where = join_field(field, path)
    name = where or "the request body"
    if match := _EXPECTED_GOT.match(text):
        expected = _words(match["expected"])
        if match["expected"].startswith("str") and match["got"] in ("int", "float"):
            expected += ' (amounts are decimal strings such as "0.0175", never JSON numbers)'
        return Explained(400, where, f"{name} must be {expected}, not {_words(match['got'])}.")
    if match := _MISSING.match(text):
        missing = join_field(where, match["name"])
        return Explained(400, missing, f"{missing} is required.")
    if match := _UNKNOWN.match(text):
        unknown = join_field(where, match["name"])
        return Explained(
            400, unknown, f"{unknown} is not a field of this request; remove it (see the API docs)."
        )
    if text.startswith("Invalid RFC3339"):
        return Explained(400, where, f"{name} must be {_TYPE_WORDS['datetime']}.")
    if match := _ENUM.match(text):
        allowed = _allowed_values(annotation, path)
        listed = f" one of {', '.join(allowed)}" if allowed else " one of the documented values"
        return Explained(422, where, f"{name} must be{listed}, not {match['value']}.")
    if match := _CONSTRAINT.match(text):
        rule = _rule_words(match["type"], match["rule"])
        if rule is not None:
            return Explained(422, where, f"{name} {rule}.")
    return Explained(400, where, f"{name}: {text}." if where else f"{text}.")


def _field_from_path(path: str | None) -> str | None:
    if not path:
        return None
    return path.lstrip(".") or None


def _words(msgspec_type: str) -> str:
    parts = [p.strip() for p in msgspec_type.split("|")]
    words = [_TYPE_WORDS.get(p, f"`{p}`") for p in parts]
    return " or ".join(words)


def _rule_words(type_name: str, rule: str) -> str | None:
    """The predicate a constraint states: "must be at least 1", "must have at most 64 members"."""
    if match := _COMPARISON.match(rule):
        return f"must be {_COMPARISON_WORDS[match['op']]} {match['bound']}"
    if match := _LENGTH.match(rule):
        bound = f"{_COMPARISON_WORDS[match['op']]} {match['bound']}"
        if type_name == "str":
            return f"must be {bound} characters long"
        return f"must have {bound} {_LENGTH_UNITS.get(type_name, 'items')}"
    if match := _REGEX.match(rule):
        # msgspec quotes the pattern as a Python literal would: each backslash doubled.
        regex = match["regex"].replace("\\\\", "\\")
        if regex == AMOUNT_PATTERN:
            return 'must be a decimal string such as "0.0175", with at most 9 fractional digits'
        if regex == CURRENCY_PATTERN:
            return "must be a three-letter ISO 4217 code such as USD"
        if regex == RUN_ID_PATTERN:
            return "must be 1 to 255 printable ASCII characters"
        if regex == SIGNED_AMOUNT_PATTERN:
            return (
                'must be a decimal string such as "0.0175" or "-2.5", with at most 9 '
                "fractional digits"
            )
        return f"must match the pattern {regex}"
    return None


def _allowed_values(annotation: Any, path: str | None) -> list[str]:
    """The literal values allowed where ``path`` points inside ``annotation``, if an enum."""
    if annotation is None:
        return []
    try:
        info = msgspec.inspect.type_info(annotation)
    except Exception:  # an annotation msgspec cannot describe: list nothing, explain the rest
        return []
    for name in _path_names(path):
        info = _field_type(_unwrap(info), name)
        if info is None:
            return []
    literal = _unwrap(info)
    if isinstance(literal, msgspec.inspect.LiteralType):
        return [str(v) for v in literal.values]
    return []


def _path_names(path: str | None) -> Sequence[str]:
    return [p for p in re.split(r"\.|\[\d+\]", path or "") if p]


def _unwrap(info: Any) -> Any:
    while True:
        if isinstance(info, msgspec.inspect.Metadata):
            info = info.type
        elif isinstance(info, msgspec.inspect.UnionType):
            kept = [t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)]
            if len(kept) != 1:
                return info
            info = kept[0]
        else:
            return info


def _field_type(info: Any, name: str) -> Any:
    if isinstance(info, msgspec.inspect.StructType):
        for struct_field in info.fields:
            if struct_field.encode_name == name:
                return struct_field.type
    return None


def type_names(annotation: Any) -> set[type]:
    """The plain types an annotation admits: ``int | None`` -> {int, NoneType}."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, type(int | None)):
        return set().union(*(type_names(a) for a in args))
    if typing.get_origin(annotation) is typing.Literal:
        return {type(a) for a in args}
    return {annotation}
