"""What the concurrency test prints: the four count lines runbooks grep for, which layer said
no, latencies per outcome, and a verdict in words; or the same as JSON."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from garagebook.concurrency.fire import Response
from garagebook.concurrency.run import Config, Iteration

Echo = Callable[[str], None]


def count_lines(total: int, created: int, conflicts: int, errors: int) -> list[str]:
    """Exactly these four lines: existing runbooks parse them."""
    return [
        f"{'Total Requests:':<23}{total}",
        f"{'✓ Successful (201):':<23}{created}",
        f"{'⚠ Conflicts (409):':<23}{conflicts}",
        f"{'✗ Errors (other):':<23}{errors}",
    ]


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    index = max(0, min(len(sorted_values) - 1, round(fraction * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


def latency_stats(responses: Sequence[Response]) -> dict[str, float] | None:
    values = sorted(r.latency * 1000 for r in responses)
    if not values:
        return None
    return {
        "min": round(values[0], 2),
        "p50": round(percentile(values, 0.50), 2),
        "p95": round(percentile(values, 0.95), 2),
        "max": round(values[-1], 2),
    }


def _outcomes(responses: Sequence[Response]) -> dict[str, list[Response]]:
    return {
        "201": [r for r in responses if r.status == 201],
        "409": [r for r in responses if r.status == 409],
        "other": [r for r in responses if r.status not in (201, 409)],
    }


def _latency_lines(responses: Sequence[Response]) -> list[str]:
    lines = [f"  {'latency (ms)':<14}{'n':>6}{'min':>9}{'p50':>9}{'p95':>9}{'max':>9}"]
    for outcome, group in _outcomes(responses).items():
        stats = latency_stats(group)
        if stats is None:
            continue
        figures = "".join(f"{stats[k]:>9.1f}" for k in ("min", "p50", "p95", "max"))
        lines.append(f"  {outcome:<14}{len(group):>6}{figures}")
    return lines


def _error_samples(iterations: Sequence[Iteration], limit: int = 3) -> list[str]:
    samples: list[str] = []
    for iteration in iterations:
        for response in iteration.errors:
            if len(samples) == limit:
                return samples
            what = f"HTTP {response.status}" if response.status else response.error
            body = response.body.decode(errors="replace").strip()[:300]
            samples.append(
                f"  iteration {iteration.number}: {what}" + (f": {body}" if body else "")
            )
    return samples


def print_iteration(echo: Echo, iteration: Iteration, of: int) -> None:
    slot = iteration.slot
    echo(
        f"\nIteration {iteration.number}/{of}: slot {slot['id']} "
        f"(bay {slot['bay_id']}, {slot['starts_at']})"
    )
    for line in count_lines(
        len(iteration.responses),
        len(iteration.created),
        len(iteration.conflicts),
        len(iteration.errors),
    ):
        echo(line)
    layers = iteration.rejected_by()
    echo(
        f"  409s rejected by: reservation {layers.pop('reservation')}, "
        f"database {layers.pop('database')}"
        + "".join(f", {name} {count}" for name, count in layers.items())
    )
    for line in _latency_lines(iteration.responses):
        echo(line)
    if iteration.slot_shows_taken is not None:
        echo(f"  slot shows as taken afterwards: {'yes' if iteration.slot_shows_taken else 'no'}")
    if iteration.cancelled:
        echo(f"  cleaned up: {iteration.cancelled} booking(s) cancelled")
    echo(f"  {'PASS' if iteration.passed else 'FAIL: ' + '; '.join(iteration.problems)}")


def print_summary(echo: Echo, iterations: Sequence[Iteration], config: Config) -> None:
    responses = [r for it in iterations for r in it.responses]
    echo(
        f"\n=== Total: {len(iterations)} iteration(s) × {config.requests} simultaneous requests ==="
    )
    for line in count_lines(
        len(responses),
        sum(len(it.created) for it in iterations),
        sum(len(it.conflicts) for it in iterations),
        sum(len(it.errors) for it in iterations),
    ):
        echo(line)
    reservation = sum(it.rejected_by()["reservation"] for it in iterations)
    database = sum(it.rejected_by()["database"] for it in iterations)
    echo(f"  409s rejected by: reservation {reservation}, database {database}")
    for line in _latency_lines(responses):
        echo(line)
    failed = [it for it in iterations if not it.passed]
    if not failed and (config.by_time or config.drop_off):
        unit = "day had places" if config.drop_off else "time had free"
        echo(
            f"\nPASS: every iteration had exactly as many 201s as its {unit} "
            f"({', '.join(str(it.units) for it in iterations)}), the rest 409s and no errors"
        )
        return
    if not failed:
        echo(
            f"\nPASS: every iteration had exactly one 201, {config.requests - 1} 409s and no errors"
        )
        return
    echo(f"\nFAIL: {len(failed)} of {len(iterations)} iteration(s) failed")
    for iteration in failed:
        echo(f"  iteration {iteration.number}: {'; '.join(iteration.problems)}")
    samples = _error_samples(failed)
    if samples:
        echo("First error responses:")
        for sample in samples:
            echo(sample)


def as_json(iterations: Sequence[Iteration], config: Config) -> dict[str, Any]:
    def outcome_block(responses: Sequence[Response]) -> dict[str, Any]:
        groups = _outcomes(responses)
        return {
            "total": len(responses),
            "successful": len(groups["201"]),
            "conflicts": len(groups["409"]),
            "errors": len(groups["other"]),
            "latency_ms": {k: latency_stats(v) for k, v in groups.items()},
        }

    return {
        "verdict": "PASS" if all(it.passed for it in iterations) else "FAIL",
        "api_urls": config.urls,
        "concurrent_requests": config.requests,
        "iterations": [
            {
                "number": it.number,
                "slot_id": it.slot["id"],
                "starts_at": it.slot["starts_at"],
                "free": it.units,
                "passed": it.passed,
                "problems": it.problems,
                "rejected_by": it.rejected_by(),
                "slot_shows_taken": it.slot_shows_taken,
                "cancelled": it.cancelled,
                "booking_ids": [_booking_id(r) for r in it.created],
                "error_samples": [
                    {
                        "status": r.status,
                        "error": r.error,
                        "body": r.body.decode(errors="replace")[:300],
                    }
                    for r in it.errors[:3]
                ],
                **outcome_block(it.responses),
            }
            for it in iterations
        ],
        "total": outcome_block([r for it in iterations for r in it.responses]),
    }


def _booking_id(response: Response) -> str | None:
    try:
        return str(json.loads(response.body)["id"])
    except (ValueError, KeyError, TypeError):
        return None
