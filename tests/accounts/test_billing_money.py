"""Money parsing and display: exact decimals in, exact decimals out, no float anywhere."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from persea.accounts.money import (Price, format_money, money_json, month_of, parse_amount,
                                parse_month, parse_price)


def test_parse_price():
    assert parse_price(" persea-small = 0.50/1.5 ") == (
        "persea-small", Price(Decimal("0.50"), Decimal("1.5")))
    assert parse_price("org/model=1/2") == ("org/model", Price(Decimal(1), Decimal(2)))


@pytest.mark.parametrize("text, message", [
    ("m", "expected MODEL=IN/OUT"), ("=1/2", "expected MODEL=IN/OUT"),
    ("m=1", "expected MODEL=IN/OUT"), ("m=1/2/3", "expected MODEL=IN/OUT"),
    ("m=x/2", "is not a number"), ("m=-1/2", ">= 0"), ("m=NaN/2", ">= 0"),
    ("m=Infinity/2", ">= 0"), ("m=0.0000001/1", "more than 6 decimal places"),
])
def test_bad_prices_say_what_was_expected(text, message):
    with pytest.raises(ValueError, match=message):
        parse_price(text)


def test_amounts_refuse_floats():
    with pytest.raises(ValueError, match="float"):
        parse_amount(0.1)


@given(st.decimals(min_value=0, max_value=10**6, places=6, allow_nan=False,
                   allow_infinity=False),
       st.decimals(min_value=0, max_value=10**6, places=6, allow_nan=False,
                   allow_infinity=False),
       st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1))
def test_cost_is_exact_to_twelve_places(p_in, p_out, n_in, n_out):
    cost_in, cost_out = Price(p_in, p_out).cost(n_in, n_out)
    assert cost_in * 10**6 == p_in * n_in and cost_out * 10**6 == p_out * n_out
    assert cost_in == cost_in.quantize(Decimal("1e-12"))  # fits the database's precision
    assert Decimal(money_json(cost_in)) == cost_in


@pytest.mark.parametrize("value, shown, exact", [
    (Decimal("0E-12"), "0.00", "0"), (Decimal("12"), "12.00", "12"),
    (Decimal("0.000150000000"), "0.00015", "0.00015"), (Decimal("1E+3"), "1000.00", "1000"),
    (Decimal("2.5"), "2.50", "2.5"),
])
def test_display(value, shown, exact):
    assert format_money(value) == shown and money_json(value) == exact


def test_months_are_utc_calendar_months():
    assert month_of(datetime(2026, 1, 31, 23, 59, 59, tzinfo=timezone.utc)) == "2026-01"
    assert month_of(datetime(2026, 2, 1, tzinfo=timezone.utc)) == "2026-02"
    # 20:00 on Jan 31 in New York (UTC-5) is already February in UTC
    assert month_of(datetime(2026, 1, 31, 20, tzinfo=timezone(timedelta(hours=-5)))) == "2026-02"
    with pytest.raises(ValueError):
        month_of(datetime(2026, 1, 1))
    assert parse_month("2026-12") == "2026-12"
    for bad in ("2026-13", "2026-1", "26-01", "2026/01", ""):
        with pytest.raises(ValueError, match="YYYY-MM"):
            parse_month(bad)
