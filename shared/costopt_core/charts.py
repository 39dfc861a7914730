"""PNG charts of a ledger and of a projection, for reports, the CLI and the demo.

matplotlib is optional (the ``notebooks`` extra): it is imported when a
chart is drawn, with the Agg backend so no display is needed, and its
absence is a clear error naming the extra to install.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from costopt_core.errors import ConfigurationError
from costopt_core.types import LEVERS

if TYPE_CHECKING:
    from costopt_core.ledger import CostLedger
    from costopt_core.projection import Projection

__all__ = ["ledger_chart", "projection_chart"]


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigurationError(
            "charts need matplotlib: pip install 'llm-costopt[notebooks]' (or matplotlib)"
        ) from None
    return plt


def _save(fig: Any, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(p, dpi=110)
    fig.clf()
    _pyplot().close(fig)
    return p


def ledger_chart(ledger: CostLedger, path: str | Path, *, title: str = "") -> Path:
    """Actual vs all-frontier baseline per tier, and savings by lever, as one PNG.

    Args:
        ledger: the calls to chart.
        path: the PNG to write (its folder is created).
        title: a title over both panels.

    Returns:
        ``path``.
    """
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    by_tier = sorted(ledger.totals_by("tier").items(), key=lambda kv: str(kv[0]))
    names = [str(k) if k is not None else "(no tier)" for k, _ in by_tier]
    actual = [float(t.cost_usd) for _, t in by_tier]
    baseline = [float(t.baseline_cost_usd) for _, t in by_tier]
    xs = range(len(names))
    left.bar([x - 0.2 for x in xs], baseline, width=0.4, label="all-frontier baseline")
    left.bar([x + 0.2 for x in xs], actual, width=0.4, label="actual")
    left.set_xticks(list(xs), names)
    left.set_ylabel("USD")
    left.set_title("Cost by tier")
    left.legend()
    levers = ledger.savings_by_lever()
    shown = [lever for lever in LEVERS if levers.get(lever)]
    right.barh(shown, [float(levers[lever]) for lever in shown], color="tab:green")
    right.invert_yaxis()
    right.set_xlabel("USD saved")
    total = ledger.totals()
    pct = f" ({total.savings_fraction:.1%} saved)" if total.savings_fraction is not None else ""
    right.set_title("Savings by lever" + pct)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def projection_chart(projection: Projection, path: str | Path) -> Path:
    """Monthly spend per scenario, split into input and output, as one PNG.

    Args:
        projection: from :func:`costopt_core.projection.project`.
        path: the PNG to write (its folder is created).

    Returns:
        ``path``.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 4.5))
    labels = [s.label for s in projection.scenarios]
    inputs = [float(s.usd_per_month_input) for s in projection.scenarios]
    outputs = [float(s.usd_per_month_output) for s in projection.scenarios]
    ax.barh(labels, inputs, label="input tokens")
    ax.barh(labels, outputs, left=inputs, label="output tokens")
    for y, s in enumerate(projection.scenarios):
        if s.savings_fraction:
            ax.annotate(
                f"-{s.savings_fraction:.0%}",
                (float(s.usd_per_month), y),
                xytext=(4, 0),
                textcoords="offset points",
                va="center",
            )
    ax.invert_yaxis()
    ax.set_xlabel("USD per month")
    ax.set_title(
        f"Projected spend at {projection.requests_per_day:,} requests/day "
        f"(baseline {projection.baseline_model})"
    )
    ax.legend(loc="lower right")
    return _save(fig, path)
