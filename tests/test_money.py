"""Money: exact decimal strings on the wire, integer nano-units inside, exact pricing."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_ledger.errors import AmountOutOfRange, InvalidInput
from agent_ledger.money import MAX_NANOS, NANOS_PER_UNIT, format_amount, parse_amount
from agent_ledger.prices.service import MAX_PRICE_PER_MTOK

nanos = st.integers(min_value=1, max_value=MAX_NANOS)
MAX_TOKENS = 1_000_000_000  # the most tokens of one kind a request may carry


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


@pytest.mark.parametrize("text", ["9223372036.854775808", "-9223372036.854775808", "1" * 16])
def test_amounts_beyond_a_counter_are_out_of_range(text: str) -> None:
    """Past a bigint of nano-units an amount cannot be stored: 422 amount-out-of-range, the
    code of every request that would push a counter past what the ledger can record."""
    with pytest.raises(AmountOutOfRange):
        parse_amount(text, allow_negative=True)
    assert parse_amount("9223372036.854775807") == MAX_NANOS


def test_negative_amounts_only_where_allowed() -> None:
    """Adjustments may be negative; charges may not."""
    assert parse_amount("-0.5", allow_negative=True) == -500_000_000
    assert format_amount(-500_000_000) == "-0.5"


def _reference_price(tokens_in: int, tokens_out: int, price_in: int, price_out: int) -> int:
    """Nano-units in exact integer arithmetic: the cost rounded up to a whole nano-unit."""
    return -(-(tokens_in * price_in + tokens_out * price_out) // 1_000_000)


async def _database_costs(database_url: str, cases: list) -> list[int]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            """
            SELECT ledger.token_cost(tin, tout, pin, pout) AS cost
            FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[])
                 WITH ORDINALITY AS c (tin, tout, pin, pout, n)
            ORDER BY n
            """,
            *map(list, zip(*cases, strict=True)),
        )
        return [int(r["cost"]) for r in rows]
    finally:
        await conn.close()


def test_a_cost_past_sixteen_digits_still_rounds_up(database_url: str) -> None:
    """12.345678901 per million input tokens times 810,023,949 tokens is exactly
    10000295576474000049 / 10^6 nano-units, so the charge is ...475; numeric division would
    keep ~16 significant digits and charge ...474."""
    case = (810_023_949, 0, 12_345_678_901, 0)
    assert _reference_price(*case) == 10_000_295_576_475
    assert asyncio.run(_database_costs(database_url, [case])) == [10_000_295_576_475]


tokens = st.one_of(st.integers(0, MAX_TOKENS), st.sampled_from([0, 1, 999_999, MAX_TOKENS]))
prices = st.one_of(
    st.integers(0, MAX_PRICE_PER_MTOK), st.sampled_from([0, 1, 999_999, MAX_PRICE_PER_MTOK])
)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(tokens, tokens, prices, prices), min_size=1, max_size=50))
def test_database_pricing_matches_exact_arithmetic(database_url: str, cases: list) -> None:
    """ledger.token_cost() equals exact integer ceiling division for every token count and
    price a request and a price list may carry."""
    assert asyncio.run(_database_costs(database_url, cases)) == [
        _reference_price(*case) for case in cases
    ]
