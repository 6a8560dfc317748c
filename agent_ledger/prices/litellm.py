"""Reading LiteLLM's price file, ``model_prices_and_context_window.json``, into exact prices.

The file gives prices per token as JSON numbers (``"input_cost_per_token": 2.5e-06``). Each
number is read from its text as a decimal, never through a binary float, so 2.5e-06 per token
is exactly 2.5 per million tokens (2,500,000,000 nano-units), not 2.4999999999999998. A price
finer than a nano-unit per million tokens is rounded up, and the model is named in ``rounded``.

Which keys mean what (LiteLLM's names):
- ``input_cost_per_token``, ``output_cost_per_token``: plain input and output;
- ``cache_read_input_token_cost``: cached input (cache reads); default the input price;
- ``cache_creation_input_token_cost``: cache writes; default the input price;
- ``input_cost_per_token_above_{N}k_tokens`` (with ``output_cost_per_token_above_...``,
  ``cache_read_input_token_cost_above_...``, ``cache_creation_input_token_cost_above_...``):
  a tier for prompts above N thousand tokens. A tier without its own output price keeps the
  base one; without a cache-read price it uses its input price; without a cache-write price
  the dearer of its input price and the base cache-write price (never cheaper than either).

Entries without both per-token prices (images, audio, embeddings priced otherwise, the
``sample_spec`` template) are skipped, each with the reason.

LiteLLM names models its own way (``claude-sonnet-4-5``, ``gemini/gemini-2.5-pro``), not always
as the ledger's prices and its clients do (``claude-sonnet-4.5``, ``gemini-2.5-pro``). An import
may rename: ``rename`` maps a name as the file writes it to the ledger's; a name not in it loses
the first of ``strip_prefixes`` it starts with. Two entries that would get one name refuse the
import (which price would be meant?), and so does a rename to a name the ledger cannot take.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Any

from agent_ledger.prices.service import MAX_PRICE_PER_MTOK, PriceSpec, valid_model_name

__all__ = ["ImportRefused", "LiteLLMPrices", "parse_litellm", "per_mtok_nanos", "prices_of"]

# Nano-units per million tokens for a price per token: 10^6 tokens x 10^9 nano-units.
_SCALE = Decimal(10) ** 15
_TIER = re.compile(r"^input_cost_per_token_above_(\d+)k_tokens$")
_TOKEN_MODES = {None, "chat", "completion", "responses"}


class ImportRefused(ValueError):
    """A file, or a renaming, that cannot be imported as asked; ``field`` names the option."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class LiteLLMPrices:
    """The prices a file gives (``specs``, by the ledger's names), what it left out and why
    (``skipped``, by the file's names), the models whose prices were rounded up to a whole
    nano-unit per million tokens, the file's name of each model it renamed (``renamed``), and
    the names of the rename mapping that are not in the file (also in ``skipped``)."""

    def __init__(self) -> None:
        self.specs: dict[str, PriceSpec] = {}
        self.skipped: dict[str, str] = {}
        self.rounded: list[str] = []
        self.renamed: dict[str, str] = {}
        self.unknown_renames: list[str] = []


def per_mtok_nanos(per_token: Decimal) -> tuple[int, bool]:
    """Nano-units per million tokens for a per-token price, rounded up; True when rounded."""
    exact = per_token * _SCALE
    nanos = exact.to_integral_value(rounding=ROUND_CEILING)
    return int(nanos), nanos != exact


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        return None
    if isinstance(value, float):
        # A float already decoded (the import endpoint's body): its shortest repr is the
        # decimal the file wrote, 2.5e-06 and not the binary value's 2.49999999999999989e-06.
        return Decimal(repr(value))
    return Decimal(value)


def _entry_spec(entry: Mapping[str, Any]) -> tuple[PriceSpec | None, str, bool]:
    """(the price, why not, whether rounded) for one model's entry."""
    rounded = False

    def nanos(key: str, default: int | None = None) -> int | None:
        nonlocal rounded
        if key not in entry:
            return default
        value = _number(entry[key])
        if value is None or not value.is_finite() or value < 0:
            raise ValueError(f"{key} is not a price")
        result, was_rounded = per_mtok_nanos(value)
        if result > MAX_PRICE_PER_MTOK:
            raise ValueError(f"{key} is beyond any model's price")
        rounded |= was_rounded
        return result

    if entry.get("mode") not in _TOKEN_MODES:
        return None, f"mode {entry.get('mode')!r} is not priced by tokens", False
    try:
        base_input = nanos("input_cost_per_token")
        base_output = nanos("output_cost_per_token")
        if base_input is None or base_output is None:
            return None, "no per-token input and output prices", False
        base_write = nanos("cache_creation_input_token_cost", base_input)
        tiers = []
        for key in entry:
            match = _TIER.match(key)
            if match is None:
                continue
            size = match.group(1)
            tier_input = nanos(key)
            tiers.append(
                (
                    int(size) * 1000,
                    tier_input,
                    nanos(f"cache_read_input_token_cost_above_{size}k_tokens", tier_input),
                    nanos(
                        f"cache_creation_input_token_cost_above_{size}k_tokens",
                        max(tier_input, base_write),
                    ),
                    nanos(f"output_cost_per_token_above_{size}k_tokens", base_output),
                )
            )
        spec = PriceSpec(
            currency="USD",
            input_per_mtok=base_input,
            cached_input_per_mtok=nanos("cache_read_input_token_cost", base_input),
            cache_write_per_mtok=base_write,
            output_per_mtok=base_output,
            tiers=tuple(sorted(tiers)),
        )
    except (ValueError, InvalidOperation) as exc:
        return None, str(exc), False
    return spec, "", rounded


def parse_litellm(
    text: str | bytes,
    providers: Iterable[str] | None = None,
    *,
    strip_prefixes: Iterable[str] = (),
    rename: Mapping[str, str] | None = None,
) -> LiteLLMPrices:
    """The prices of a LiteLLM price file, optionally only those of ``providers`` (its
    ``litellm_provider`` values, e.g. openai, anthropic, gemini), renamed as ``prices_of``
    says."""
    try:
        data = json.loads(text, parse_float=Decimal)
    except ValueError as exc:
        raise ValueError(f"not a JSON price file: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError("not a JSON price file: the top level must be an object of models")
    return prices_of(data, providers, strip_prefixes=strip_prefixes, rename=rename)


def _ledger_name(model: str, rename: Mapping[str, str], strip_prefixes: list[str]) -> str:
    if model in rename:
        return rename[model]
    for prefix in strip_prefixes:
        if model.startswith(prefix) and len(model) > len(prefix):
            return model[len(prefix) :]
    return model


def prices_of(
    data: Mapping[str, Any],
    providers: Iterable[str] | None = None,
    *,
    strip_prefixes: Iterable[str] = (),
    rename: Mapping[str, str] | None = None,
) -> LiteLLMPrices:
    """As ``parse_litellm``, from the file's content already decoded. Each model is imported
    under ``rename[name]`` if there is one, else under its name without the first of
    ``strip_prefixes`` it starts with, else under its name; ImportRefused when a rename is not
    a name the ledger takes, or when two priced entries would share a name."""
    wanted = set(providers) if providers is not None else None
    rename = dict(rename or {})
    prefixes = [p for p in strip_prefixes if p]
    for source, target in rename.items():
        if not valid_model_name(target):
            raise ImportRefused(
                f"rename: {source!r} -> {target!r}: model names are 1 to 100 letters, digits "
                "and . _ : / @ + -",
                "rename",
            )
    result = LiteLLMPrices()
    sources: dict[str, str] = {}
    for model, entry in data.items():
        if model == "sample_spec":
            continue
        if not isinstance(entry, dict):
            result.skipped[model] = "not an object"
            continue
        if wanted is not None and entry.get("litellm_provider") not in wanted:
            continue
        name = _ledger_name(model, rename, prefixes)
        if not valid_model_name(name):
            result.skipped[model] = "not a model name the ledger accepts"
            continue
        spec, reason, rounded = _entry_spec(entry)
        if spec is None:
            result.skipped[model] = reason
            continue
        if name in sources:
            raise ImportRefused(
                f"{sources[name]!r} and {model!r} would both be imported as {name!r}: leave "
                "one out (--provider, providers) or rename one (--rename, rename)",
                "prices",
            )
        sources[name] = model
        result.specs[name] = spec
        if name != model:
            result.renamed[name] = model
        if rounded:
            result.rounded.append(name)
    for source in rename:
        if source not in data:
            result.skipped[source] = "named in the rename mapping, but not in the file"
            result.unknown_renames.append(source)
    return result
