"""Lenient numbers: the app writes parameters and outcome columns as numbers or as strings."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any


def finite_number(value: Any) -> float | None:
    """`value` as a finite float ("10", 10, Decimal("10") alike), or None when it is not one."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        return None
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (ValueError, OverflowError):  # OverflowError: an integer too long for a float (10**400)
        return None
    return number if math.isfinite(number) else None
