"""Hourly and monthly cost estimates from the dated price table in catalog.py."""

from __future__ import annotations

from .catalog import (
    HOURS_PER_MONTH,
    ON_DEMAND_USD_PER_HOUR,
    PRICES_AS_OF,
    PRICES_SOURCE,
    SPOT_PRICE_FACTOR,
    VERTEX_PRICE_FACTOR,
)
from .config import StackConfig


def replica_usd_per_hour(config: StackConfig) -> float:
    price = ON_DEMAND_USD_PER_HOUR[config.hardware.machine_type]
    if config.hardware.spot:
        price *= SPOT_PRICE_FACTOR
    if config.platform == "vertex":
        price *= VERTEX_PRICE_FACTOR
    return price


def estimate_cost(config: StackConfig) -> dict[str, float | str]:
    """Cost at minReplicas (what runs all month) and at maxReplicas (the ceiling autoscaling can reach)."""
    per_replica = replica_usd_per_hour(config)
    hourly = per_replica * config.scaling.min_replicas
    return {
        "hourlyUsd": round(hourly, 2),
        "monthlyUsd": round(hourly * HOURS_PER_MONTH, 2),
        "maxMonthlyUsd": round(per_replica * config.scaling.max_replicas * HOURS_PER_MONTH, 2),
        "pricesAsOf": PRICES_AS_OF,
        "source": PRICES_SOURCE,
    }
