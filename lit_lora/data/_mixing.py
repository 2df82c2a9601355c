"""Seeded index arithmetic for multi-source data: per-source order, caps, 90/10 splits, mixing quotas."""

from __future__ import annotations

import random


def source_rng(seed: int, name: str) -> random.Random:
    """A generator that depends on the seed and the source's name only.

    Adding, removing or reordering other sources therefore never changes this source's sample or split.
    """
    return random.Random(f"lit_lora/{seed}/{name}")


def capped_order(n_rows: int, cap: int | None, rng: random.Random) -> list[int]:
    """A seeded random sample of at most ``cap`` row indices, in random order (all rows when cap is None)."""
    order = list(range(n_rows))
    rng.shuffle(order)
    return order if cap is None else order[:cap]


def validation_count(n_rows: int, fraction: float) -> int:
    """Rows held out for validation: round(n x fraction), at least one and never all rows."""
    if n_rows < 2:
        return 0
    return min(n_rows - 1, max(1, round(n_rows * fraction)))


def quotas(weights: list[float], total: int) -> list[int]:
    """Split ``total`` rows between sources in proportion to ``weights`` (largest-remainder rounding).

    The counts are exact rather than sampled, so the proportions hold for any total, not just on average.
    """
    scale = total / sum(weights)
    exact = [w * scale for w in weights]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


def draw(n_rows: int, count: int, rng: random.Random) -> list[int]:
    """``count`` row indices out of ``n_rows``: without replacement while rows last.

    When more rows are asked for than exist, every row is taken once per full pass and the remainder
    is a random subset, so each row appears either floor(count / n) or ceil(count / n) times.
    """
    full, rest = divmod(count, n_rows)
    picked = list(range(n_rows)) * full + rng.sample(range(n_rows), rest)
    rng.shuffle(picked)
    return picked
