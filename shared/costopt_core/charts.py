"""PNG charts of a ledger and of a projection, for ``costopt report``, ``project`` and the demo.

matplotlib is optional (the ``notebooks`` extra): it is imported when a
chart is drawn, and its absence is a clear error naming the extra. Each
figure is drawn on an Agg canvas of its own, so no global backend or pyplot
state of the user's process changes (a notebook's inline backend included).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from costopt_core.errors import ConfigurationError
from costopt_core.types import CACHE_OUTCOMES, LEVERS

if TYPE_CHECKING:
    from costopt_core.ledger import CostLedger
    from costopt_core.projection import Projection

__all__ = ["ledger_chart", "projection_chart", "request_mix"]

_GREEN, _GREY, _BLUE = "#2f7d4f", "#9aa5b1", "#4a6fa5"


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigurationError(
            "charts need matplotlib: pip install 'llm-costopt[notebooks]' (or matplotlib)"
        ) from None
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def chart_path(path: str | Path) -> Path:
    """The file a chart of ``path`` is written to, checked before any drawing.

    A path with no extension gets ``.png`` (matplotlib would add it silently,
    and callers print the path they were given); an extension matplotlib
    cannot write is refused here rather than after the work.

    Raises:
        ConfigurationError: matplotlib is not installed, or it cannot write
            files of ``path``'s extension (the message lists the ones it can).
    """
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        raise ConfigurationError(
            "charts need matplotlib: pip install 'llm-costopt[notebooks]' (or matplotlib)"
        ) from None
    p = Path(path)
    if not p.suffix:
        return p.with_name(p.name + ".png")
    supported = FigureCanvasBase.get_supported_filetypes()
    if p.suffix[1:].lower() not in supported:
        raise ConfigurationError(
            f"cannot write a chart as {p.suffix!r} ({p}): use one of "
            f"{', '.join('.' + ext for ext in sorted(supported))} (e.g. .png)"
        )
    return p


def _save(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` (see :func:`chart_path`).

    Raises:
        ConfigurationError: the file cannot be written there.
    """
    p = chart_path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(p, dpi=110)
    except OSError as exc:
        raise ConfigurationError(
            f"could not write the chart {p} ({exc.strerror or exc}): pick a writable path"
        ) from None
    return p


def request_mix(ledger: CostLedger) -> Counter[str]:
    """Answered requests by what served them: the cache, a tier's model, or a batch job."""
    mix: Counter[str] = Counter()
    for r in ledger.records():
        if r.outcome in CACHE_OUTCOMES:
            mix["cache"] += 1
        elif r.outcome == "model" and r.mode == "batch":
            mix[f"batch ({r.model})"] += 1
        elif r.outcome == "model":
            mix[f"{r.tier or 'direct'} ({r.model})"] += 1
    return mix


def ledger_chart(ledger: CostLedger, path: str | Path, *, title: str = "") -> Path:
    """Actual vs all-frontier baseline, savings by lever and who answered, as one PNG.

    Args:
        ledger: the calls to chart.
        path: the PNG to write (its folder is created).
        title: a title over the three panels.

    Returns:
        The file written: ``path``, with ``.png`` added when it has no extension.

    Raises:
        ConfigurationError: matplotlib is not installed, or it cannot write
            ``path``'s extension.
    """
    chart_path(path)  # a bad extension fails before the drawing
    fig = _figure(14, 4.8)
    totals = ledger.totals()
    levers = ledger.savings_by_lever()
    mix = request_mix(ledger)
    cost_ax, lever_ax, mix_ax = fig.subplots(1, 3, width_ratios=(1, 1.4, 1.4))

    money = [totals.baseline_cost_usd, totals.cost_usd]  # None: no call could be priced
    values = [float(m) if m is not None else 0.0 for m in money]
    bars = cost_ax.bar(["all-frontier\nbaseline", "actual"], values, color=[_GREY, _GREEN])
    cost_ax.bar_label(bars, labels=[f"${m:,.4f}" if m is not None else "unknown" for m in money])
    cost_ax.set_title(f"Cost: {totals.savings_fraction or 0.0:.1%} saved")
    cost_ax.set_ylabel("USD")

    amounts = [float(levers[n]) for n in LEVERS]
    lever_bars = lever_ax.barh(list(LEVERS), amounts, color=_GREEN)
    lever_ax.bar_label(lever_bars, labels=[f"${a:,.4f}" for a in amounts], padding=2)
    lever_ax.invert_yaxis()
    lever_ax.set_title("Savings by lever")
    lever_ax.set_xlabel("USD saved")
    lever_ax.margins(x=0.25)

    ranked = sorted(mix.items(), key=lambda kv: -kv[1])
    mix_bars = mix_ax.barh([k for k, _ in ranked], [v for _, v in ranked], color=_BLUE)
    mix_ax.bar_label(mix_bars, padding=2)
    mix_ax.invert_yaxis()
    rate = totals.cache_hit_rate or 0.0
    shown = sum(mix.values())
    # A ledger capped by max_records keeps only its newest records while its
    # totals cover every call: say which ones the bars count.
    scope = (
        f"the last {shown:,} of {totals.requests:,} requests"
        if shown < totals.requests
        else f"{totals.requests:,} requests"
    )
    mix_ax.set_title(f"Who answered {scope} (cache hits {rate:.0%})")
    mix_ax.margins(x=0.15)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def projection_chart(projection: Projection, path: str | Path) -> Path:
    """Monthly spend per scenario, split into input and output, as one PNG.

    Args:
        projection: from :func:`costopt_core.projection.project`.
        path: the PNG to write (its folder is created).

    Returns:
        The file written: ``path``, with ``.png`` added when it has no extension.

    Raises:
        ConfigurationError: matplotlib is not installed, or it cannot write
            ``path``'s extension.
    """
    chart_path(path)  # a bad extension fails before the drawing
    fig = _figure(10, 4.5)
    ax = fig.subplots()
    labels = [s.label for s in projection.scenarios]
    inputs = [float(s.usd_per_month_input) for s in projection.scenarios]
    outputs = [float(s.usd_per_month_output) for s in projection.scenarios]
    ax.barh(labels, inputs, label="input tokens", color=_BLUE)
    ax.barh(labels, outputs, left=inputs, label="output tokens", color=_GREY)
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
    ax.margins(x=0.1)
    ax.set_xlabel("USD per month")
    ax.set_title(
        f"Projected spend at {projection.requests_per_day:,} requests/day "
        f"(baseline {projection.baseline_model})"
    )
    ax.legend(loc="lower right")
    return _save(fig, path)
