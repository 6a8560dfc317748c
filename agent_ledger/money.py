"""Exact money: decimal strings on the wire, integer nano-units (10^-9) everywhere else.

No float ever touches an amount. Parsing is by pattern and integer arithmetic, so
"0.00000015" is exactly 150 nano-units and formats back to exactly "0.00000015".
"""

from __future__ import annotations

import re

from agent_ledger.errors import AmountOutOfRange, InvalidInput

__all__ = [
    "MAX_NANOS",
    "NANOS_PER_UNIT",
    "format_amount",
    "format_optional",
    "parse_amount",
]

NANOS_PER_UNIT = 1_000_000_000
FRACTION_DIGITS = 9
# Amounts, limits and every counter are bigint nano-units in the database: this is the one
# bound on all of them (9223372036.854775807 units). Whatever would pass it, an amount here or
# a counter in the ledger (agent_ledger/ledger/sql/20_budgets.sql), is 422 amount-out-of-range.
MAX_NANOS = 2**63 - 1

# ASCII digits only (\d would take any script's digits) and no trailing newline ($ would).
_AMOUNT = re.compile(r"(-?)([0-9]{1,16})(?:\.([0-9]{1,30}))?")


def parse_amount(
    text: str,
    *,
    field: str = "amount",
    allow_negative: bool = False,
    allow_zero: bool = False,
    maximum: int = MAX_NANOS,
) -> int:
    """Parse a decimal string into nano-units, refusing anything inexact or out of range."""
    match = _AMOUNT.fullmatch(text)
    if match is None:
        raise InvalidInput(
            f'{field} must be a decimal string such as "0.0175", got {text!r}.', field=field
        )
    sign, whole, fraction = match.groups()
    fraction = fraction or ""
    if len(fraction) > FRACTION_DIGITS:
        raise InvalidInput(
            f"{field} has more than {FRACTION_DIGITS} fractional digits: {text!r}.", field=field
        )
    nanos = int(whole) * NANOS_PER_UNIT + int(fraction.ljust(FRACTION_DIGITS, "0"))
    if sign:
        nanos = -nanos
    if nanos < 0 and not allow_negative:
        raise InvalidInput(f"{field} must not be negative.", field=field)
    if nanos == 0 and not allow_zero:
        raise InvalidInput(f"{field} must not be zero.", field=field)
    if abs(nanos) > MAX_NANOS:
        raise AmountOutOfRange(
            f"{field} is larger than {format_amount(MAX_NANOS)}, the most the ledger can record.",
            field=field,
        )
    if abs(nanos) > maximum:
        raise InvalidInput(
            f"{field} is larger than {format_amount(maximum)}, the most this service accepts.",
            field=field,
        )
    return nanos


def format_amount(nanos: int) -> str:
    """Nano-units as the shortest exact decimal string: 17500000 -> "0.0175", 0 -> "0"."""
    sign = "-" if nanos < 0 else ""
    whole, fraction = divmod(abs(nanos), NANOS_PER_UNIT)
    if fraction == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{str(fraction).rjust(FRACTION_DIGITS, '0').rstrip('0')}"


def format_optional(nanos: int | None) -> str | None:
    return None if nanos is None else format_amount(nanos)
