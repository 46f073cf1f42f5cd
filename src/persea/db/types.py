"""Column types shared by every table: exact money and UTC timestamps.

Money is a `Decimal` in Python and exact in both databases, never a float:

- PostgreSQL stores it as `NUMERIC(38, 12)`;
- SQLite has no true decimal type (its NUMERIC affinity turns values into floats), so it
  stores money as a 64-bit INTEGER count of 10^-12 currency units. Arithmetic inside SQL
  (`reserved + :cost`) is then integer arithmetic, exact and atomic. The ceiling is about
  9.2 million currency units per stored value; a value past it is refused, never rounded.

Twelve decimal places are what a per-token cost needs: prices are accepted to six decimal
places per million tokens (see `persea.accounts.money`), so price x tokens / 10^6 always fits.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator

MONEY_PLACES = 12
_SCALE = 10 ** MONEY_PLACES
_SQLITE_MAX = 2 ** 63 - 1
MONEY_CEILING = Decimal(_SQLITE_MAX).scaleb(-MONEY_PLACES)  # the most SQLite stores exactly


class Money(TypeDecorator):
    """A `Decimal` amount, exact to 10^-12: NUMERIC(38, 12) on PostgreSQL, integer
    10^-12 units on SQLite."""

    impl = sa.Numeric(38, MONEY_PLACES, asdecimal=True)
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.BigInteger())
        return dialect.type_descriptor(sa.Numeric(38, MONEY_PLACES, asdecimal=True))

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, float):
            raise TypeError("money must be a Decimal or an int, never a float")
        value = Decimal(value)
        units = value * _SCALE
        if units != units.to_integral_value():
            raise ValueError(f"{value} has more than {MONEY_PLACES} decimal places")
        if dialect.name == "sqlite":
            units = int(units)
            if abs(units) > _SQLITE_MAX:
                raise ValueError(f"{value} is past what SQLite stores exactly "
                                 f"({MONEY_CEILING:.0f}); use PostgreSQL")
            return units
        return value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if dialect.name == "sqlite":
            return Decimal(int(value)).scaleb(-MONEY_PLACES)
        return Decimal(value)


class UTCDateTime(TypeDecorator):
    """An aware UTC `datetime` in Python, stored as a naive UTC timestamp, so that SQLite's
    text timestamps and PostgreSQL's compare the same way inside SQL."""

    impl = sa.DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware (UTC)")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, str):  # pragma: no cover - SQLAlchemy parses SQLite text
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=timezone.utc)
