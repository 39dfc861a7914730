"""The ``costopt`` command: demo, report, project, calibrate, bench.

Each command is a thin shell: it reads files, calls one engine function and
prints what it returns. The engine imports no framework, so the demo (which
needs LangChain and LlamaIndex) loads its package by name at run time.
Every bad argument or file becomes a usage error that names the value and
the fix, never a traceback.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from costopt_core.errors import CostOptError

if TYPE_CHECKING:
    from costopt_core.projection import Projection
    from costopt_core.routing.tiers import Tiers

app = typer.Typer(
    help="Cut and account for the inference bill of LangChain and LlamaIndex apps.",
    no_args_is_help=True,
    add_completion=False,
    # Click's plain help wraps long option names; rich's table cut them short
    # ("--requests-per…") in an 80-column terminal.
    rich_markup_mode=None,
)

#: the ladder ``project`` and ``calibrate`` use when no --tier is given
DEFAULT_TIERS = ("small=gpt-4o-mini", "mid=gpt-4.1-mini", "frontier=gpt-4o")


@contextmanager
def _usage_errors(param: str | None = None) -> Iterator[None]:
    """Engine errors about the user's input become usage errors (exit code 2)."""
    try:
        yield
    except CostOptError as exc:
        raise typer.BadParameter(str(exc), param_hint=param) from None


def _output_file(path: Path, param: str) -> Path:
    """Check an output file's place before the work, creating its folder.

    A command that measures or calibrates for minutes must not fail on its
    last line because the folder is missing or the path is a directory.
    """
    if path.is_dir():
        raise typer.BadParameter(f"{path} is a directory: give a file name", param_hint=param)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise typer.BadParameter(
            f"cannot create the folder of {path} ({exc.strerror or exc}): pick a writable path",
            param_hint=param,
        ) from None
    return path


def _write(path: Path, text: str, param: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        typer.echo(
            f"Error: could not write {path} ({exc.strerror or exc}): pick a writable path "
            f"for {param}",
            err=True,
        )
        raise typer.Exit(1) from None


def _given(ctx: typer.Context, name: str) -> bool:
    """The user set option ``name`` (on the command line or in the environment)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def _chart_file(path: Path) -> Path:
    """The chart's real file name (``.png`` added when there is no extension), checked early."""
    from costopt_core.charts import chart_path

    if path.is_dir():  # before ".png" is added, which would write beside it
        return _output_file(path, "--chart")
    with _usage_errors("--chart"):
        real = chart_path(path)
    return _output_file(real, "--chart")


def _check_priced(tiers: Tiers, catalog: Any) -> None:
    """Every tier model needs a price, or its requests silently drop out of the projection."""
    for t in tiers:
        for model in t.models:
            if catalog.get(model, warn=False) is None:
                raise typer.BadParameter(
                    f"tier {t.name!r}: model {model!r} has no price in the catalog (a typo?); "
                    "use a priced model name, e.g. small=gpt-4o-mini",
                    param_hint="--tier",
                )


def _tiers(specs: Sequence[str]) -> Tiers:
    from costopt_core.routing.tiers import Tier, Tiers

    tiers = []
    for spec in specs:
        name, sep, models = spec.partition("=")
        if not sep or not name.strip() or not models.strip():
            raise typer.BadParameter(
                f"{spec!r} is not NAME=MODEL[,MODEL...] (e.g. small=gpt-4o-mini)",
                param_hint="--tier",
            )
        with _usage_errors("--tier"):
            tiers.append(Tier(name.strip(), tuple(m.strip() for m in models.split(","))))
    if len(tiers) < 2:
        raise typer.BadParameter("give at least two tiers, cheapest first", param_hint="--tier")
    with _usage_errors("--tier"):
        return Tiers(tiers)


def _check_order(tiers: Tiers, catalog: Any) -> None:
    """Tiers go cheapest first: the last is the baseline every saving is measured against."""
    if tiers.is_cost_ordered(catalog):
        return
    ladder = ", ".join(f"{t.name}={t.primary}" for t in tiers)
    raise typer.BadParameter(
        f"the tiers {ladder} are not cheapest first (a tier costs more than the one after "
        "it): order them cheap to frontier, the frontier last",
        param_hint="--tier",
    )


@app.command()
def demo(
    requests: Annotated[int, typer.Option(min=1, max=100_000, help="Requests to run.")] = 300,
    seed: Annotated[int, typer.Option(help="Workload seed.")] = 7,
    out: Annotated[
        Path, typer.Option(help="Directory for the ledger export and the chart.")
    ] = Path("costopt-demo-output"),
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    local: Annotated[
        bool | None,
        typer.Option(
            "--local/--no-local",
            help="Tier 1 on the real local model (default: where the local extra is installed).",
        ),
    ] = None,
) -> None:
    """Run the offline demo workload (no keys, no servers) and print the ledger summary."""
    # The demo writes here only after the whole run: a bad --out fails now.
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = "it is a file" if out.exists() else (exc.strerror or str(exc))
        raise typer.BadParameter(
            f"cannot use {out} as the output folder ({reason}): give a folder path",
            param_hint="--out",
        ) from None
    try:
        demo_mod = importlib.import_module("costopt_demo")
    except ImportError as exc:
        raise typer.BadParameter(
            f"the demo needs the LangChain and LlamaIndex adapters ({exc}); "
            "install with: pip install llm-costopt"
        ) from None
    # Loaded before the run: --local on a machine without the extra (or with a model
    # that does not load) fails now, instead of every call quietly going one tier up.
    try:
        local_model, note = demo_mod.load_local_model(local)
    except demo_mod.LocalModelUnavailable as exc:
        raise typer.BadParameter(
            f"{exc}; or leave --local out (tier 1 is then a stand-in)", param_hint="--local"
        ) from None
    typer.echo(
        "costopt demo: a support-assistant workload through a LangChain RAG chain and a "
        "LlamaIndex query engine.\nProvider models are scripted STAND-INS (no network), "
        "priced as the models they stand for.\n"
    )
    if note:
        typer.echo(f"Warning: {note}", err=True)
    try:
        result = demo_mod.run_demo(
            requests,
            seed=seed,
            out_dir=out,
            progress=progress,
            local=local_model if local_model is not None else False,
        )
    finally:
        if local_model is not None:
            local_model.close()
    _say_who_answered_tier_1(result, local, note)
    typer.echo("")
    typer.echo(result.engine.ledger.summary_table())
    typer.echo(f"\nbaseline: every request on {result.engine.baseline_model}")
    if result.ledger_path:
        typer.echo(f"ledger written to {result.ledger_path}")
    chart = getattr(result, "chart_path", None)
    if chart:
        typer.echo(f"chart written to {chart}")
    typer.echo(f"done in {result.seconds:.1f} s")
    if local and result.local_failures and not result.local_calls:
        typer.echo(
            "Error: --local was given, but the local model answered none of the "
            f"{len(result.local_failures)} calls sent to it (see the warning above)",
            err=True,
        )
        raise typer.Exit(1)


def _say_who_answered_tier_1(result: Any, local: bool | None, note: str | None) -> None:
    """What answered the LangChain small tier: the local model only if it did.

    ``note`` says why an installed local model did not load (warned already).
    """
    failed = len(result.local_failures)
    if result.local_calls:
        typer.echo(
            "LangChain tier 1 (small) was the REAL local model: SmolLM2-135M-Instruct on "
            f"llama.cpp, priced at $0 ({result.local_calls} calls answered)"
        )
    elif result.local_loaded:
        why = "every call to it failed" if failed else "no request was routed to it"
        typer.echo(f"LangChain tier 1 (small): the local model answered no call ({why})")
    elif local is False:
        typer.echo("tier 1 (small) was a stand-in (--no-local)")
    elif note is not None:  # installed, but it did not load
        typer.echo("tier 1 (small) was a stand-in: the local model did not load")
    else:
        typer.echo(
            "tier 1 (small) was a stand-in; pip install 'llm-costopt[local]' for the real "
            "local model (SmolLM2-135M on llama.cpp)"
        )
    if failed:
        typer.echo(
            f"Warning: {failed} of {failed + result.local_calls} calls to the local model "
            f"failed and went to the next tier; the first: {result.local_failures[0]}",
            err=True,
        )


_DIMENSIONS = ("tier", "model", "tenant", "framework", "outcome", "mode")


@app.command()
def report(
    ledger: Annotated[Path, typer.Argument(metavar="LEDGER", help="A ledger export (JSONL).")],
    by: Annotated[
        list[str] | None,
        typer.Option(help=f"Extra breakdowns, any of {', '.join(_DIMENSIONS)}."),
    ] = None,
    chart: Annotated[
        Path | None, typer.Option(help="Write a PNG: cost by tier, savings by lever.")
    ] = None,
) -> None:
    """Print cost vs the all-frontier baseline, savings by lever, and breakdowns."""
    from costopt_core.ledger import CostLedger
    from costopt_core.report import format_breakdown

    dims = by if by else ["model", "tenant"]
    for d in dims:
        if d not in _DIMENSIONS:
            raise typer.BadParameter(
                f"{d!r} is not one of {', '.join(_DIMENSIONS)}", param_hint="--by"
            )
    chart_file = _chart_file(chart) if chart is not None else None
    with _usage_errors("LEDGER"):
        # Every record, not the in-memory default cap: the chart counts records
        # and must agree with the totals for ledgers of any size.
        loaded = CostLedger.from_jsonl(ledger, max_records=None)
    if not loaded.records():
        # All-$0 tables would read as a report of nothing spent.
        raise typer.BadParameter(
            f"ledger file {ledger} has no records: pass a file CostLedger.to_jsonl wrote "
            "(the demo writes costopt-demo-output/demo-ledger.jsonl)",
            param_hint="LEDGER",
        )
    typer.echo(loaded.summary_table())
    for d in dims:
        if d != "tier":  # the summary already has it
            typer.echo("\n" + format_breakdown(loaded, d))  # type: ignore[arg-type]
    if chart_file is not None:
        from costopt_core.charts import ledger_chart

        with _usage_errors("--chart"):
            typer.echo(f"\nchart written to {ledger_chart(loaded, chart_file)}")


def _print_projection(p: Projection) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(100, Console().width), highlight=False)
    table = Table(
        title=f"Projected spend at {p.requests_per_day:,} requests/day "
        f"({p.days_per_month}-day month, baseline {p.baseline_model})"
    )
    for col in ("scenario", "$/month", "input", "output", "saved", "saved %"):
        table.add_column(col, justify="left" if col == "scenario" else "right")
    for s in p.scenarios:
        pct = "-" if s.savings_fraction is None else f"{s.savings_fraction:.1%}"
        table.add_row(
            s.label,
            f"${s.usd_per_month:,.2f}",
            f"${s.usd_per_month_input:,.2f}",
            f"${s.usd_per_month_output:,.2f}",
            f"${s.savings_usd_per_month:,.2f}",
            pct,
        )
    console.print(table)
    if p.savings_by_lever:
        levers = Table(title="All levers combined: savings by lever")
        for col in ("lever", "saved/month", "share"):
            levers.add_column(col, justify="left" if col == "lever" else "right")
        shares = p.lever_shares()
        for lever, amount in p.savings_by_lever.items():
            levers.add_row(lever, f"${amount:,.2f}", f"{shares[lever]:.1%}")
        console.print(levers)
    m = p.measured
    mix = ", ".join(f"{k} {v:.0%}" for k, v in m["tier_mix"].items()) or "-"
    removed = ", ".join(f"{k} {v:.1%}" for k, v in m["input_tokens_removed_share"].items())
    console.print(
        f"measured on {p.sample_requests} sample requests: cache hit rate "
        f"{m['cache_hit_rate']:.1%} ({m['cache_exact_rate']:.1%} exact, "
        f"{m['cache_semantic_rate']:.1%} semantic); tier mix {mix}; escalations "
        f"{m['escalation_rate']:.1%}; input tokens removed {removed or '0%'}; batch share "
        f"{m['batch_share']:.1%}; mean tokens in/out {m['mean_input_tokens']:,.0f}/"
        f"{m['mean_output_tokens']:,.0f}"
    )
    for note in p.notes:
        console.print(f"note: {note}")


#: ``project`` options that only steer the measurement of a request sample (a
#: ledger's tiers were recorded too: --tier on one changed only the baseline)
_REQUEST_ONLY = {
    "tier": "--tier",
    "cache": "--no-cache",
    "compression": "--no-compression",
    "output_tokens": "--output-tokens",
    "calibration": "--calibration",
}


@app.command()
def project(
    ctx: typer.Context,
    sample: Annotated[
        Path,
        typer.Argument(
            metavar="SAMPLE",
            help="JSONL of requests (prompt/messages, tokens, tier...) or a ledger.",
        ),
    ],
    requests_per_day: Annotated[
        int, typer.Option("--requests-per-day", "-n", min=1, help="Production volume.")
    ],
    tier: Annotated[
        list[str] | None,
        typer.Option(help="NAME=MODEL[,MODEL], cheapest first; repeat per tier."),
    ] = None,
    baseline: Annotated[
        str | None, typer.Option(help="All-frontier model (default: the last tier's).")
    ] = None,
    days: Annotated[int, typer.Option(min=1, max=31, help="Days per month.")] = 30,
    calibration: Annotated[
        Path | None, typer.Option(help="Routing calibration from `costopt calibrate --out`.")
    ] = None,
    cache: Annotated[bool, typer.Option(help="Measure the semantic cache.")] = True,
    compression: Annotated[
        bool, typer.Option(help="Measure context summarization and memory.")
    ] = True,
    output_tokens: Annotated[
        int, typer.Option(min=0, help="Output size of requests with no response/tokens.")
    ] = 200,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the JSON here.")] = None,
    chart: Annotated[Path | None, typer.Option(help="Write a PNG of the scenarios.")] = None,
) -> None:
    """Project monthly spend per scenario (all-frontier, each lever, combined).

    Hit rates, tier mix and compression are measured on the sample with the
    real cache, router, summarizer and memory; a ledger export is read as is.
    """
    from costopt_core.engine import CostEngine
    from costopt_core.pricing.catalog import PriceCatalog, UnknownModelPriceWarning
    from costopt_core.projection import project as run_projection
    from costopt_core.routing.calibrate import (
        CalibrationReport,
        calibration_classifier_mismatch,
    )
    from costopt_core.routing.router import Router
    from costopt_core.workload import WorkloadSample, measure_records, measure_requests

    tiers = _tiers(tier or DEFAULT_TIERS)
    if json_out is not None:
        _output_file(json_out, "--json")
    chart_file = _chart_file(chart) if chart is not None else None
    with _usage_errors("SAMPLE"):
        loaded = WorkloadSample.from_jsonl(sample)
    if loaded.records:
        given = [
            flag
            for name, flag in _REQUEST_ONLY.items()
            # by name: typer vendors click, so click's own enum is not the one used
            if _given(ctx, name)
        ]
        if given:
            baseline_hint = (
                " (--baseline sets the all-frontier model it is compared with)"
                if "--tier" in given
                else ""
            )
            raise typer.BadParameter(
                f"{sample} is a ledger export: its tiers, cache hits, compression and token "
                "counts were recorded, not measured, so these options cannot change them: "
                f"drop them{baseline_hint}, or give a JSONL of requests to measure",
                param_hint=", ".join(given),
            )
    catalog = PriceCatalog.default()
    if not loaded.records:
        # before the engine: an unpriced last tier is the default baseline, and
        # its error must name --tier, the option the user gave
        _check_priced(tiers, catalog)
        _check_order(tiers, catalog)
    with _usage_errors("--baseline"):
        engine = CostEngine(baseline_model=baseline or tiers.frontier.primary, catalog=catalog)
    router = None
    if calibration is not None:
        with _usage_errors("--calibration"):
            report = CalibrationReport.from_dict(_read_json(calibration, "--calibration"))
            mismatch = calibration_classifier_mismatch(report, "heuristic")
            if mismatch is not None:
                raise typer.BadParameter(
                    f"{mismatch} the CLI routes with: calibrate with --classifier heuristic",
                    param_hint="--calibration",
                )
            if tuple(report.tier_names) != tiers.names:
                raise typer.BadParameter(
                    f"the calibration's tiers {list(report.tier_names)} are not the --tier "
                    f"ladder {list(tiers.names)}",
                    param_hint="--calibration",
                )
            router = Router(tiers, calibration=report)
    with _usage_errors():
        if loaded.records:
            measured = measure_records(loaded.records)
        else:
            measured = measure_requests(
                loaded.requests,
                tiers=tiers,
                engine=engine,
                router=router,
                cache=cache,
                compression=compression,
                memory=compression,
                expected_output_tokens=output_tokens,
            )
        with warnings.catch_warnings():
            # the same text is printed as a note under the table
            warnings.simplefilter("ignore", UnknownModelPriceWarning)
            result = run_projection(
                measured,
                requests_per_day=requests_per_day,
                baseline_model=engine.baseline_model,
                catalog=engine.catalog,
                days_per_month=days,
            )
    _print_projection(result)
    if json_out is not None:
        _write(json_out, json.dumps(result.to_dict(), indent=2) + "\n", "--json")
        typer.echo(f"JSON written to {json_out}")
    if chart_file is not None:
        from costopt_core.charts import projection_chart

        with _usage_errors("--chart"):
            typer.echo(f"chart written to {projection_chart(result, chart_file)}")


def _read_json(path: Path, param: str) -> Any:
    if path.is_dir():
        raise typer.BadParameter(
            f"{str(path)!r} is a directory; pass a JSON file", param_hint=param
        )
    if not path.is_file():
        raise typer.BadParameter(f"{str(path)!r} does not exist", param_hint=param)
    try:
        # utf-8-sig: editors on Windows save JSON with a byte-order mark
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"{path} is not JSON ({exc.msg})", param_hint=param) from None
    except UnicodeDecodeError:
        raise typer.BadParameter(
            f"{path} is not UTF-8 text; save the JSON as UTF-8", param_hint=param
        ) from None
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc.strerror}", param_hint=param) from None


@app.command()
def calibrate(
    samples: Annotated[
        Path,
        typer.Argument(
            metavar="SAMPLES",
            help='JSONL: routing samples {"prompt", "labels": {tier: 0/1 or score}} and/or '
            'cache pairs {"a", "b", "label": 0/1}.',
        ),
    ],
    tier: Annotated[
        list[str] | None, typer.Option(help="NAME=MODEL[,MODEL], cheapest first.")
    ] = None,
    target_quality: Annotated[
        float, typer.Option(min=0.01, max=1.0, help="Share of frontier quality to keep.")
    ] = 0.95,
    target_precision: Annotated[
        float, typer.Option(min=0.01, max=1.0, help="Cache hit precision to reach.")
    ] = 0.95,
    classifier: Annotated[
        str, typer.Option(help="heuristic (no training) or learned (embedding + classifier).")
    ] = "heuristic",
    out: Annotated[Path | None, typer.Option(help="Write the calibration JSON here.")] = None,
) -> None:
    """Choose router thresholds and the cache threshold from labelled samples."""
    from costopt_core.workload import read_calibration_samples

    if classifier not in ("heuristic", "learned"):
        raise typer.BadParameter(
            f"{classifier!r}: use heuristic or learned", param_hint="--classifier"
        )
    from costopt_core.pricing.catalog import PriceCatalog

    tiers = _tiers(tier or DEFAULT_TIERS)
    _check_order(tiers, PriceCatalog.default())
    if out is not None:
        _output_file(out, "--out")
    with _usage_errors("SAMPLES"):
        routing_samples, pairs = read_calibration_samples(samples, tiers)
    result: dict[str, Any] = {}
    from costopt_core.engine import CostEngine

    with _usage_errors("--tier"):
        engine = CostEngine(baseline_model=tiers.frontier.primary)
    if routing_samples:
        from costopt_core.routing.calibrate import calibrate as calibrate_router
        from costopt_core.routing.classifiers import HeuristicClassifier, LearnedClassifier

        clf: Any = (
            HeuristicClassifier(n_tiers=len(tiers))
            if classifier == "heuristic"
            else LearnedClassifier(embedder=engine.embedder)
        )
        with _usage_errors("SAMPLES"):
            report = calibrate_router(
                routing_samples, tiers=tiers, classifier=clf, target_quality=target_quality
            )
        typer.echo(f"Router ({len(routing_samples)} samples, {report.classifier} classifier)")
        typer.echo(report.summary())
        result["routing"] = report.to_dict()
    if pairs:
        from costopt_core.cache.calibrate import calibrate_pair_threshold, calibrate_threshold
        from costopt_core.embeddings import is_default_embedder

        with _usage_errors("SAMPLES"):
            cal = calibrate_threshold(
                pairs, target_precision=target_precision, embedder=engine.embedder
            )
        state = "reached" if cal.reached else "NOT reached (the cache would serve nothing)"
        typer.echo(
            f"\nCache ({cal.n_pairs} labelled pairs): threshold {cal.threshold:.3f}, "
            f"precision {cal.precision:.3f}, recall {cal.recall:.3f}; target "
            f"{cal.target_precision:.0%} {state}"
        )
        result["cache"] = {
            "threshold": cal.threshold,
            "precision": cal.precision,
            "recall": cal.recall,
            "n_pairs": cal.n_pairs,
            "target_precision": cal.target_precision,
            "reached": cal.reached,
        }
        if is_default_embedder(engine.embedder):
            # The default embedder turns the pair check on: its threshold is the one
            # that decides, behind the default gate.
            with _usage_errors("SAMPLES"):
                pc = calibrate_pair_threshold(
                    pairs, target_precision=target_precision, embedder=engine.embedder
                )
            pc_state = "reached" if pc.reached else "NOT reached"
            typer.echo(
                f"with the pair check (the default for this embedder): pair_threshold "
                f"{pc.threshold:.3f}, precision {pc.precision:.3f}, recall {pc.recall:.3f}; "
                f"target {pc_state} (the threshold above is for pair_check='off')"
            )
            result["cache"]["pair_threshold"] = pc.threshold
            result["cache"]["pair_check"] = {
                "precision": pc.precision,
                "recall": pc.recall,
                "reached": pc.reached,
            }
    if out is not None:
        _write(out, json.dumps(result.get("routing", result), indent=2) + "\n", "--out")
        if "routing" in result and "cache" in result:
            cache_out = out.with_name(out.stem + ".cache.json")
            _write(cache_out, json.dumps(result["cache"], indent=2) + "\n", "--out")
            typer.echo(f"\nrouting calibration written to {out}; cache to {cache_out}")
        else:
            typer.echo(f"\ncalibration written to {out}")


def _bench_dir(directory: Path | None) -> Path:
    candidates = [directory] if directory else [Path.cwd() / "benchmarks"]
    for c in candidates:
        if c is not None and c.is_dir() and any(not p.stem.startswith("_") for p in c.glob("*.py")):
            return c
    raise typer.BadParameter(
        f"no benchmarks in {candidates[0]}: run from a costopt source checkout (the "
        "benchmarks are not in the wheel) or pass --dir",
        param_hint="--dir",
    )


@app.command()
def bench(
    names: Annotated[
        list[str] | None,
        typer.Argument(metavar="NAMES", help="Benchmarks to run (default: all)."),
    ] = None,
    directory: Annotated[
        Path | None, typer.Option("--dir", help="The benchmarks folder (default ./benchmarks).")
    ] = None,
    list_only: Annotated[bool, typer.Option("--list", help="List the benchmarks.")] = False,
) -> None:
    """Run benchmarks; each prints a table and writes JSON to benchmarks/results/."""
    folder = _bench_dir(directory)
    # Helpers (_common) and training scripts (train_pair_model, tens of minutes)
    # are run directly, never as part of "all".
    available = sorted(
        p.stem for p in folder.glob("*.py") if not p.stem.startswith(("_", "train_"))
    )
    if list_only:
        typer.echo("\n".join(available))
        return
    chosen = names or available
    unknown = [n for n in chosen if n not in available]
    if unknown:
        raise typer.BadParameter(
            f"unknown benchmark(s) {unknown}; available: {', '.join(available)}",
            param_hint="NAMES",
        )
    results = folder / "results"
    try:
        results.mkdir(exist_ok=True)
    except OSError as exc:
        raise typer.BadParameter(
            f"cannot write results to {results}: {exc.strerror}; remove or rename it",
            param_hint="--dir",
        ) from None
    failed = []
    for name in chosen:
        typer.echo(f"== {name}")
        cmd = [sys.executable, str(folder / f"{name}.py"), "--out", str(results / f"{name}.json")]
        if subprocess.run(cmd, check=False).returncode != 0:
            failed.append(name)
    if failed:
        typer.echo(f"failed: {', '.join(failed)}", err=True)
        raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
