"""Two things about a JSON text that decoders do not check: how deep it nests, and whether an
object names a key twice (most decoders keep the last; for money that is a silent change).

``check_shape`` answers both cheaply on the raw bytes, before any recursive decoder sees them:
counting brackets settles the depth of almost every body in C, and the standard library's parser
(C too) reports duplicates through a hook called once per object. Only when something is wrong
does a slower token scan run, to name the place in the refusal.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from itertools import accumulate
from typing import Any

from agent_ledger.validation import join_field

__all__ = ["ShapeError", "check_shape"]

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}
# A JSON string (escapes included), optionally followed by the colon that makes it a key, or a
# bracket. Unrolled so that long strings are matched without backtracking.
_TOKEN = re.compile(rb'("[^"\\]*(?:\\.[^"\\]*)*")(\s*:)?|[\[\]{}]', re.DOTALL)


class ShapeError(ValueError):
    def __init__(self, detail: str, field: str | None) -> None:
        super().__init__(detail)
        self.detail, self.field = detail, field


def check_shape(body: bytes, max_depth: int) -> None:
    """Raise ``ShapeError`` if ``body`` nests deeper than ``max_depth`` or repeats a key.

    Malformed JSON passes: the decoder that runs next describes it better.
    """
    if _depth(body, max_depth) > max_depth or _repeats_a_key(body):
        _locate(body, max_depth)


def _depth(body: bytes, max_depth: int) -> int:
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return 0  # cannot be deeper than the brackets it has
    brackets = _NOT_BRACKET.sub(b"", _STRING.sub(b"", body))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


class _Repeated(Exception):
    pass


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _Repeated
    return result


# Built once: json.loads with a hook builds a new decoder on every call.
_DUPLICATE_FINDER = json.JSONDecoder(object_pairs_hook=_unique)


def _repeats_a_key(body: bytes) -> bool:
    if b":" not in body:
        return False
    try:
        # As json.loads reads bytes: the encoding it detects, lone surrogates let through.
        _DUPLICATE_FINDER.decode(body.decode(json.detect_encoding(body), "surrogatepass"))
    except _Repeated:
        return True
    except (ValueError, RecursionError):  # malformed, or too deep for it: not ours to say
        return False
    return False


def _locate(body: bytes, max_depth: int) -> None:
    """Walk the tokens to raise ``ShapeError`` naming where the depth or the repeat is."""
    keys: list[set[str] | None] = []  # per open container: keys seen (objects) or None (arrays)
    path: list[str | None] = []  # per open container: the key being read in it
    for token, is_key in _tokens(body):
        if token in (b"{", b"["):
            if len(keys) >= max_depth:
                where = join_field(*(p for p in path[:4] if p))
                raise ShapeError(
                    f"{where or 'the body'} is nested deeper than {max_depth} levels of arrays "
                    "and objects; flatten it.",
                    where,
                )
            keys.append(set() if token == b"{" else None)
            path.append(None)
        elif token in (b"}", b"]"):
            if keys:
                keys.pop()
                path.pop()
        elif is_key and keys and keys[-1] is not None:
            name = _key_text(token)
            if name in keys[-1]:
                where = join_field(*(p for p in path[:-1] if p), name)
                raise ShapeError(f"{where} appears twice in one object; send each key once.", where)
            keys[-1].add(name)
            path[-1] = name


def _tokens(body: bytes) -> Iterator[tuple[bytes, bool]]:
    for match in _TOKEN.finditer(body):
        string, colon = match.group(1), match.group(2)
        yield (string, colon is not None) if string is not None else (match.group(0), False)


def _key_text(token: bytes) -> str:
    try:
        return token[1:-1].decode() if b"\\" not in token else json.loads(token)
    except (UnicodeDecodeError, ValueError):
        raise ShapeError("The body is not valid UTF-8 JSON.", None) from None
