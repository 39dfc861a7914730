"""The ``costopt`` command.

The engine imports no framework, so commands that need LangChain or
LlamaIndex (the demo) load their application package by name at run time.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated

import typer

from costopt_core.errors import CostOptError

app = typer.Typer(
    help="Cut and account for the inference bill of LangChain and LlamaIndex apps.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def demo(
    requests: Annotated[int, typer.Option(min=1, max=100_000, help="Requests to run.")] = 300,
    seed: Annotated[int, typer.Option(help="Workload seed.")] = 7,
    out: Annotated[Path, typer.Option(help="Directory for the ledger export.")] = Path(
        "costopt-demo-output"
    ),
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Run the offline demo workload (no keys, no servers) and print the ledger summary."""
    try:
        demo_mod = importlib.import_module("costopt_demo")
    except ImportError as exc:
        raise typer.BadParameter(
            f"the demo needs the LangChain and LlamaIndex adapters ({exc}); "
            "install with: pip install llm-costopt"
        ) from None
    typer.echo(
        "costopt demo: a support-assistant workload through a LangChain chain and a "
        "LlamaIndex LLM.\nProvider models are scripted STAND-INS (no network), priced as the "
        "models they stand for.\n"
    )
    result = demo_mod.run_demo(requests, seed=seed, out_dir=out, progress=progress)
    typer.echo("")
    typer.echo(result.engine.ledger.summary_table())
    typer.echo(f"\nbaseline: every request on {result.engine.baseline_model}")
    if result.ledger_path:
        typer.echo(f"ledger written to {result.ledger_path}")
    typer.echo(f"done in {result.seconds:.1f} s")


@app.command()
def report(
    ledger: Annotated[Path, typer.Argument(help="A ledger export (JSONL).")],
) -> None:
    """Print the summary tables of a ledger export."""
    from costopt_core.ledger import CostLedger

    try:
        loaded = CostLedger.from_jsonl(ledger)
    except CostOptError as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(loaded.summary_table())


def main() -> None:
    app()


if __name__ == "__main__":
    main()
