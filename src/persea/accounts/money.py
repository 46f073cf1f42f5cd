"""Money and billing months: exact `Decimal` arithmetic, parsing and display.

Amounts are `Decimal` everywhere, never float. Prices are money per million tokens and are
accepted to `PRICE_PLACES` (6) decimal places, so the cost of any whole number of tokens,
price x tokens / 10^6, is exact to 12 places: the precision the database keeps (see
`persea.db.types`). Every amount a person sets (a price, a budget) is at most `MAX_AMOUNT`,
checked here, before the database. Billing months are calendar months in UTC, written
`YYYY-MM`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation

from persea.db.types import MONEY_PLACES

CURRENCY = "USD"  # the one currency of a deployment; every amount is in it
PRICE_PLACES = 6
MTOK = 1_000_000
# The largest price (per million tokens) or monthly budget: a round number under what the
# database stores exactly (persea.db.types.MONEY_CEILING, about 9.2 million on SQLite), so
# that a budgeted organisation's spent plus reserved, which never pass its budget, fit too.
MAX_AMOUNT = Decimal(9_000_000)
_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


@dataclass(frozen=True)
class Price:
    """Money per million tokens, for prompt (input) and completion (output) tokens."""

    input_per_mtok: Decimal
    output_per_mtok: Decimal

    def cost(self, input_tokens: int, output_tokens: int) -> tuple[Decimal, Decimal]:
        """The exact (input, output) cost of so many tokens."""
        return (self.input_per_mtok * input_tokens / MTOK,
                self.output_per_mtok * output_tokens / MTOK)


def parse_amount(text: str | Decimal | int, what: str = "amount",
                 places: int = MONEY_PLACES) -> Decimal:
    """An amount from 0 to `MAX_AMOUNT` with at most `places` decimal places, or ValueError
    saying why (naming `what` and the range)."""
    if isinstance(text, float):
        raise ValueError(f"{what}: money must not be a float")
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation:
        raise ValueError(f"{what}: {text!r} is not a number") from None
    if not value.is_finite() or not 0 <= value <= MAX_AMOUNT:
        raise ValueError(f"{what}: {text!r} must be a number >= 0 and <= {MAX_AMOUNT}")
    if value != value.quantize(Decimal(1).scaleb(-places)):
        raise ValueError(f"{what}: {text!r} has more than {places} decimal places")
    return value


def parse_price(text: str) -> tuple[str, Price]:
    """`MODEL=IN/OUT` (money per million input and output tokens) -> (model, Price)."""
    model, eq, rest = text.partition("=")
    parts = rest.split("/")
    if not eq or not model.strip() or len(parts) != 2:
        raise ValueError(f"price {text!r}: expected MODEL=IN/OUT, for example "
                         "my-model=0.50/1.50 (money per million input/output tokens)")
    return model.strip(), Price(
        parse_amount(parts[0], f"price {text!r} input", PRICE_PLACES),
        parse_amount(parts[1], f"price {text!r} output", PRICE_PLACES))


def month_of(moment: datetime) -> str:
    """The UTC calendar month of an aware datetime, as YYYY-MM."""
    if moment.tzinfo is None:
        raise ValueError("month_of needs a timezone-aware datetime")
    return moment.astimezone(timezone.utc).strftime("%Y-%m")


def parse_month(text: str) -> str:
    """Check a YYYY-MM month and return it, or ValueError."""
    if not _MONTH.match(text.strip()):
        raise ValueError(f"month {text!r}: expected YYYY-MM, for example 2026-01")
    return text.strip()


def format_money(value: Decimal, places: int = 2) -> str:
    """For people: at least `places` decimals, more only when the value needs them, never an
    exponent (so 0.000150000000 shows as 0.00015 and 12 as 12.00)."""
    text = f"{value:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(places, '0')}" if places or frac else whole


def money_json(value: Decimal) -> str:
    """For machines: an exact decimal string without exponent or trailing zeros."""
    text = f"{value:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"
