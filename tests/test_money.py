"""Money: exact decimal strings on the wire, integer nano-units inside, exact pricing."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_ledger.errors import InvalidInput
from agent_ledger.money import MAX_AMOUNT, NANOS_PER_UNIT, format_amount, parse_amount

nanos = st.integers(min_value=1, max_value=MAX_AMOUNT)


@given(nanos)
def test_format_then_parse_is_the_identity(value: int) -> None:
    """Every amount in range survives formatting and parsing unchanged."""
    assert parse_amount(format_amount(value)) == value


@given(nanos)
def test_formatting_agrees_with_decimal_arithmetic(value: int) -> None:
    """The string is the exact decimal value of the nano-units, with no trailing zeros."""
    text = format_amount(value)
    assert Decimal(text) == Decimal(value) / NANOS_PER_UNIT
    assert not ("." in text and text.endswith("0"))


@given(st.decimals(min_value=Decimal("0.000000001"), max_value=Decimal(1_000_000), places=9))
def test_parsing_agrees_with_decimal_arithmetic(value: Decimal) -> None:
    """Any decimal with up to nine places parses to exactly value * 10^9 nano-units."""
    text = format(value, "f")
    assert parse_amount(text) == int(value * NANOS_PER_UNIT)


def test_the_smallest_token_price_is_exact() -> None:
    """One token at $0.15 per million tokens is 0.00000015, exactly."""
    assert parse_amount("0.00000015") == 150
    assert format_amount(150) == "0.00000015"


@pytest.mark.parametrize(
    "text",
    [
        "0",
        "-1",
        "0.0000000001",
        "1e3",
        "1,5",
        " 1",
        "1.",
        ".5",
        "",
        "NaN",
        "1000000.000000001",
        "\u0661",
        "1\n",
        "\uff11",
    ],
)
def test_inexact_or_out_of_range_amounts_are_refused(text: str) -> None:
    """Zero, negatives, over nine decimals, exponents, junk, huge amounts, digits of other
    scripts and trailing newlines are refused."""
    with pytest.raises(InvalidInput):
        parse_amount(text)


def test_negative_amounts_only_where_allowed() -> None:
    """Adjustments may be negative; charges may not."""
    assert parse_amount("-0.5", allow_negative=True) == -500_000_000
    assert format_amount(-500_000_000) == "-0.5"


def _reference_price(tokens_in: int, tokens_out: int, price_in: int, price_out: int) -> int:
    """Nano-units, computed with Decimal: the exact cost rounded up to a whole nano-unit."""
    exact = (Decimal(tokens_in) * price_in + Decimal(tokens_out) * price_out) / 1_000_000
    return int(exact.to_integral_value(rounding="ROUND_CEILING"))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 1_000_000_000),
            st.integers(0, 1_000_000_000),
            st.integers(0, 1_000 * NANOS_PER_UNIT),
            st.integers(0, 1_000 * NANOS_PER_UNIT),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_database_pricing_matches_decimal_reference(database_url: str, cases: list) -> None:
    """ledger_price() in SQL is exact and rounds a fraction of a nano-unit up."""

    async def price_all() -> list[int]:
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch(
                """
                SELECT ledger_price(ROW('m', 'USD', pin, pout, now())::prices, tin, tout) AS cost
                FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[])
                     WITH ORDINALITY AS c (tin, tout, pin, pout, n)
                ORDER BY n
                """,
                *map(list, zip(*cases, strict=True)),
            )
            return [r["cost"] for r in rows]
        finally:
            await conn.close()

    assert asyncio.run(price_all()) == [_reference_price(*case) for case in cases]
