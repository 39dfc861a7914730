"""The demo's savings chart: actual vs all-frontier baseline, savings by lever, request mix.

matplotlib comes with the ``notebooks`` extra; without it there is no chart
(``save_chart`` returns ``None``) and the demo still runs. The figure is drawn
on an Agg canvas of its own, so no global backend or pyplot state changes.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from costopt_core.ledger import CostLedger
from costopt_core.types import LEVERS

__all__ = ["request_mix", "save_chart"]


def request_mix(ledger: CostLedger) -> Counter[str]:
    """Answered requests by what served them: the cache, a tier, or a batch job."""
    mix: Counter[str] = Counter()
    for r in ledger.records():
        if r.outcome in ("cache_exact", "cache_semantic"):
            mix["cache"] += 1
        elif r.outcome == "model" and r.mode == "batch":
            mix[f"batch ({r.model})"] += 1
        elif r.outcome == "model":
            mix[f"{r.tier or 'direct'} ({r.model})"] += 1
    return mix


def save_chart(ledger: CostLedger, path: Path, *, title: str) -> Path | None:
    """Draw the ledger's savings to ``path`` (PNG); ``None`` if matplotlib is missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    totals = ledger.totals()
    levers = ledger.savings_by_lever()
    mix = request_mix(ledger)

    fig = Figure(figsize=(14, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    cost_ax, lever_ax, mix_ax = fig.subplots(1, 3, width_ratios=(1, 1.4, 1.4))

    values = [float(totals.baseline_cost_usd), float(totals.cost_usd)]
    bars = cost_ax.bar(["all-frontier\nbaseline", "actual"], values, color=["#9aa5b1", "#2f7d4f"])
    cost_ax.bar_label(bars, labels=[f"${v:.4f}" for v in values])
    saved = totals.savings_fraction or 0.0
    cost_ax.set_title(f"Cost: {saved:.1%} saved")
    cost_ax.set_ylabel("USD")

    names = list(LEVERS)
    amounts = [float(levers[n]) for n in names]
    lever_bars = lever_ax.barh(names, amounts, color="#2f7d4f")
    lever_ax.bar_label(lever_bars, labels=[f"${a:.4f}" for a in amounts], padding=2)
    lever_ax.invert_yaxis()
    lever_ax.set_title("Savings by lever")
    lever_ax.set_xlabel("USD saved")
    lever_ax.margins(x=0.25)

    labels, counts = (
        zip(*sorted(mix.items(), key=lambda kv: -kv[1]), strict=True) if mix else ((), ())
    )
    mix_bars = mix_ax.barh(list(labels), list(counts), color="#4a6fa5")
    mix_ax.bar_label(mix_bars, padding=2)
    mix_ax.invert_yaxis()
    rate = totals.cache_hit_rate or 0.0
    mix_ax.set_title(f"Who answered {totals.requests} requests (cache hits {rate:.0%})")
    mix_ax.margins(x=0.15)

    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
