"""Money: exact decimal strings on the wire, integer nano-units inside, exact pricing."""

from __future__ import annotations

import asyncio
import json
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


def _reference_price(
    tokens_in: int,
    tokens_out: int,
    price_in: int,
    price_out: int,
    cached: int = 0,
    written: int = 0,
    price_cached: int = 0,
    price_written: int = 0,
    per_request: int = 0,
) -> int:
    """Nano-units in exact integer arithmetic: the cost rounded up to a whole nano-unit, once."""
    numerator = (
        tokens_in * price_in
        + cached * price_cached
        + written * price_written
        + tokens_out * price_out
        + per_request * 1_000_000
    )
    return -(-numerator // 1_000_000)


async def _database_costs(database_url: str, cases: list) -> list[int]:
    """ledger.token_cost for (input, output, input price, output price[, cached, written,
    cached price, written price, per request]) cases."""
    cases = [(*case, 0, 0, 0, 0, 0)[:9] for case in cases]
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            """
            SELECT ledger.token_cost(tin, cin, win, tout, pin, pcin, pwin, pout, fee) AS cost
            FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[],
                        $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[])
                 WITH ORDINALITY AS c (tin, tout, pin, pout, cin, win, pcin, pwin, fee, n)
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


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(tokens, tokens, prices, prices, tokens, tokens, prices, prices, prices),
        min_size=1,
        max_size=50,
    )
)
def test_every_price_dimension_is_summed_exactly_and_rounded_once(
    database_url: str, cases: list
) -> None:
    """With cached input, cache writes and a per-request fee, the cost is still the exact sum
    of every count times its price, plus the fee, rounded up once: never a rounding per
    dimension (three tokens at a third of a nano-unit each cost one nano-unit, not three)."""
    assert asyncio.run(_database_costs(database_url, cases)) == [
        _reference_price(*case) for case in cases
    ]
    thirds = (1, 0, 333_334, 0, 1, 1, 333_333, 333_333, 0)
    assert asyncio.run(_database_costs(database_url, [thirds])) == [1]


# --- tiers and a hold's worst case (ledger.tokens_at_price) -------------------------------

small_tokens = st.integers(0, 400_000)
rates = st.integers(0, 50 * NANOS_PER_UNIT)
rate_set = st.tuples(rates, rates, rates, rates)  # input, cached input, cache write, output
tier_lists = st.lists(
    st.tuples(st.integers(0, 500_000), rate_set), max_size=3, unique_by=lambda t: t[0]
)


def _price_json(base: tuple, tiers: list, per_request: int) -> dict:
    names = ("input_per_mtok", "cached_input_per_mtok", "cache_write_per_mtok", "output_per_mtok")
    return {
        "model": "m",
        "currency": "USD",
        **dict(zip(names, base, strict=True)),
        "per_request": per_request,
        "tiers": [
            {"above_input_tokens": above, **dict(zip(names, r, strict=True))}
            for above, r in sorted(tiers)
        ],
        "effective_from": "2030-01-01T00:00:00Z",
        "updated_at": "2030-01-01T00:00:00Z",
    }


def _reference_tiered(price: dict, counts: tuple[int, int, int, int]) -> int:
    """The contract's rule by hand: the highest tier the prompt is above, else the base."""
    plain, cached, written, out = counts
    rates = price
    for tier in price["tiers"]:
        if plain + cached + written > tier["above_input_tokens"]:
            rates = tier
    return _reference_price(
        plain,
        out,
        rates["input_per_mtok"],
        rates["output_per_mtok"],
        cached,
        written,
        rates["cached_input_per_mtok"],
        rates["cache_write_per_mtok"],
        price["per_request"],
    )


async def _tiered_costs(database_url: str, price: dict, usages: list, worst: bool) -> list[int]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            """
            SELECT ledger.tokens_at_price(
                       jsonb_populate_record(NULL::prices, $1::text::jsonb), u.i, u.c, u.w, u.o,
                       $6) AS cost
            FROM unnest($2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[])
                 WITH ORDINALITY AS u (i, c, w, o, n)
            ORDER BY n
            """,
            json.dumps(price),
            *map(list, zip(*usages, strict=True)),
            worst,
        )
        return [int(r["cost"]) for r in rows]
    finally:
        await conn.close()


usages = st.tuples(small_tokens, small_tokens, small_tokens, small_tokens)


@settings(max_examples=30, deadline=None)
@given(rate_set, tier_lists, rates, st.lists(usages, min_size=1, max_size=20))
def test_tiered_prices_follow_the_prompt_size(
    database_url: str, base: tuple, tiers: list, per_request: int, cases: list
) -> None:
    """A request whose prompt (input + cached + cache writes) is above a tier's threshold is
    priced whole at the highest such tier, exactly, rounded up once."""
    price = _price_json(base, tiers, per_request)
    assert asyncio.run(_tiered_costs(database_url, price, cases, worst=False)) == [
        _reference_tiered(price, case) for case in cases
    ]


@settings(max_examples=30, deadline=None)
@given(rate_set, tier_lists, rates, usages, st.lists(usages, min_size=1, max_size=20))
def test_a_holds_worst_case_bounds_every_usage_within_it(
    database_url: str, base: tuple, tiers: list, per_request: int, held: tuple, used: list
) -> None:
    """What a hold reserves for its counts is at least what any usage within them costs: any
    split of a prompt no larger than the hold's into plain, cached and written tokens, and no
    more output, in whichever tier that smaller prompt falls (even a tier cheaper than a lower
    one)."""
    price = _price_json(base, tiers, per_request)
    [reserved] = asyncio.run(_tiered_costs(database_url, price, [held], worst=True))
    prompt, out = sum(held[:3]), held[3]
    within = []
    for plain, cached, written, output in used:
        total = plain + cached + written
        scale = min(1, prompt / total) if total else 1
        plain, cached = int(plain * scale), int(cached * scale)
        written = max(0, min(int(written * scale), prompt - plain - cached))
        within.append((plain, cached, written, min(output, out)))
    within.append((0, 0, prompt, out))  # all cache writes
    within.append((0, prompt, 0, out))  # all cache reads
    costs = asyncio.run(_tiered_costs(database_url, price, within, worst=False))
    assert all(cost <= reserved for cost in costs), (reserved, costs)
    # And never more than the dearest of those: the bound is tight at the top.
    dearest = max(
        _reference_tiered(price, split)
        for split in [(prompt, 0, 0, out), (0, prompt, 0, out), (0, 0, prompt, out)]
    )
    assert reserved >= dearest


def test_a_plain_price_reserves_exactly_its_cost(database_url: str) -> None:
    """With no tiers and cache rates at most the input rate, a hold reserves exactly what its
    counts cost: two-count holds are priced as they always were."""
    price = _price_json((2_500_000_000, 1_250_000_000, 2_500_000_000, 10_000_000_000), [], 0)
    held = [(3000, 0, 0, 1024)]
    assert asyncio.run(_tiered_costs(database_url, price, held, worst=True)) == [
        _reference_tiered(price, held[0])
    ]
