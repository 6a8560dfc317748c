"""Turning batches of ledger entries into NDJSON lines or CSV rows.

CSV cells are neutralised against formula injection (OWASP, "CSV Injection"): a cell that a
spreadsheet would read as a formula, one starting with ``=``, ``+``, ``-``, ``@``, a tab, a
carriage return or a line feed, gets a single quote in front, so it is shown as text and never
evaluated. The one exception is a cell that is nothing but a decimal number, such as the amount
``-0.5`` of an adjustment that gives money back: a spreadsheet reads it as the number it is, no
formula can hide in it, and quoting it would turn amounts into text that no longer adds up.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from typing import Literal

import msgspec

from agent_ledger.ledger.schemas import LedgerEntry

__all__ = ["CSV_COLUMNS", "MEDIA_TYPES", "ExportFormat", "encoder_for", "neutralise_cell"]

ExportFormat = Literal["ndjson", "csv"]
# Litestar adds "; charset=utf-8" to text/* media types itself; naming it here doubled it.
MEDIA_TYPES: dict[str, str] = {
    "ndjson": "application/x-ndjson",
    "csv": "text/csv",
}
CSV_COLUMNS: tuple[str, ...] = LedgerEntry.__struct_fields__

_FORMULA_START = frozenset("=+-@\t\r\n")
_PLAIN_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")
_json = msgspec.json.Encoder()


def neutralise_cell(text: str) -> str:
    """The cell as a spreadsheet may safely show it (see the module's docstring)."""
    if text[:1] in _FORMULA_START and not _PLAIN_NUMBER.match(text):
        return "'" + text
    return text


def _cell(value: object) -> str:
    if value is None:
        return ""
    if type(value) is str:
        return neutralise_cell(value)
    if type(value) is int:
        return str(value)  # a plain number, negative or not: nothing to neutralise
    return neutralise_cell(_json.encode(value).decode())


class NdjsonEncoder:
    def header(self) -> bytes:
        return b""

    def encode(self, entries: Sequence[LedgerEntry]) -> bytes:
        return _json.encode_lines(entries)


class CsvEncoder:
    """RFC 4180 CSV (CRLF line ends, quotes where needed), one header row first."""

    def __init__(self) -> None:
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, lineterminator="\r\n")

    def _drain(self) -> bytes:
        text = self._buffer.getvalue()
        self._buffer.seek(0)
        self._buffer.truncate()
        return text.encode()

    def header(self) -> bytes:
        self._writer.writerow(CSV_COLUMNS)
        return self._drain()

    def encode(self, entries: Sequence[LedgerEntry]) -> bytes:
        # to_builtins gives times the same RFC 3339 text as the JSON forms.
        for entry in msgspec.to_builtins(entries):
            self._writer.writerow([_cell(entry[column]) for column in CSV_COLUMNS])
        return self._drain()


def encoder_for(export_format: str) -> NdjsonEncoder | CsvEncoder:
    return CsvEncoder() if export_format == "csv" else NdjsonEncoder()
