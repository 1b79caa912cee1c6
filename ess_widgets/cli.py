"""The ``ess-widgets`` command (also ``python -m ess_widgets``).

Two jobs:

- without ``--model``: the ESS of the built-in example mixers (LTI system, convolution,
  linear attention, SSM, softmax attention, ...), whose state sizes are known; writes
  ``out/ess_report.csv`` (one row per mixer);
- with ``--model NAME``: the ESS table of a model on a text (``load(NAME).ess_table``):
  one row per layer, head or channel and split; writes ``out/ess_table.csv`` (or
  ``.parquet``), and prints the average ESS of each layer.

Errors (an unknown model, a text too long, a missing wheel) end with one line on stderr
and exit status 1; usage errors with exit status 2 (argparse).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "build_parser"]

DEFAULT_TEXT = "The capital of France is Paris. It is known for the Eiffel Tower."
_FORMATS = (".csv", ".parquet")


def _layers(value: str) -> list[int]:
    try:
        layers = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected layer numbers separated by commas (e.g. 0,5,29), got {value!r}"
        ) from None
    if not layers:
        raise argparse.ArgumentTypeError("expected at least one layer number")
    return layers


def _splits(value: str) -> int | list[int]:
    try:
        parts = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        parts = []
    if not parts:
        raise argparse.ArgumentTypeError(
            f"expected a stride (e.g. 8) or split numbers separated by commas, got {value!r}"
        )
    return parts[0] if len(parts) == 1 and "," not in value else parts


def _tolerance(value: str) -> float:
    try:
        tol = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not tol >= 0:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"expected a tolerance >= 0, got {value!r}")
    return tol


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser (``ess-widgets --help`` prints its help)."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="ess-widgets",
        description=(
            "Measure the effective state-size (ESS) of sequence mixers. Without --model: "
            "the built-in example mixers, whose state sizes are known. With --model: the "
            "ESS of every layer, head or channel and split of a model on a text."
        ),
        epilog=(
            "Examples:\n"
            "  ess-widgets\n"
            "  ess-widgets --model smollm2-135m --text 'The capital of France is Paris.'\n"
            "  ess-widgets --model mqar-gla-dk8-kv8 --splits 4 --output gla.parquet\n"
            "Definitions: docs/definitions.md in the project repository."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-m",
        "--model",
        help=(
            "a built-in model name (smollm2-135m, mqar-gla-dk8-kv8, ...; see "
            "ess_widgets.builtin_models()), a local model folder, or a cached hub id"
        ),
    )
    text = parser.add_mutually_exclusive_group()
    text.add_argument(
        "-t",
        "--text",
        help=(
            "the text to analyse (with --model; default: the model's own example, or a "
            "short English sentence)"
        ),
    )
    text.add_argument("--text-file", type=Path, help="read the text from this UTF-8 file")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        help=(
            "where to write the table, .csv or .parquet (default: out/ess_report.csv, or "
            "out/ess_table.csv with --model)"
        ),
    )
    parser.add_argument(
        "--layers", type=_layers, help="layers to analyse, e.g. 0,5,29 (default: all)"
    )
    parser.add_argument(
        "--splits",
        type=_splits,
        help=(
            "with --model: a stride k (every k-th split, and the last; e.g. 8) or split "
            "numbers separated by commas (default: every split)"
        ),
    )
    parser.add_argument(
        "--tol",
        type=_tolerance,
        help="tolerance of the tolerance-ESS (default: 1e-3 with --model, else 1e-6)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--relative",
        dest="relative",
        action="store_true",
        default=None,
        help="count singular values above tol * sigma_1 of each split",
    )
    mode.add_argument(
        "--absolute",
        dest="relative",
        action="store_false",
        help="count singular values above tol (default with --model)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def _write(table, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".parquet":
        table.to_parquet(path, index=False)
    else:
        table.to_csv(path, index=False)
    return path


def _examples(args) -> Path:
    import pandas as pd

    from .app.report import ess_report

    length = 64
    tol = 1e-6 if args.tol is None else args.tol
    relative = True if args.relative is None else args.relative
    table = ess_report(length, tol=tol, relative=relative)
    mode = "relative" if relative else "absolute"
    print(f"ESS of the built-in example mixers, L = {length}, tolerance {tol:g} ({mode})\n")
    with pd.option_context("display.width", 160, "display.precision", 2):
        print(table.to_string(index=False))
    return _write(table, args.output or Path("out") / "ess_report.csv")


def _model_table(args) -> Path:
    import pandas as pd

    from .adapters import load

    if args.text_file is not None:
        text = args.text_file.read_text(encoding="utf-8")
    else:
        text = args.text
    handle = load(args.model)
    if text is None:
        text = getattr(handle, "default_text", None) or DEFAULT_TEXT
    options = {}
    if args.tol is not None:
        options["tol"] = args.tol
    if args.relative is not None:
        options["relative"] = args.relative
    if args.splits is not None:
        options["splits"] = args.splits
    table = handle.ess_table(text, args.layers, progress=False, **options)
    print(f"ESS of {args.model} on {len(handle.encode(text))} tokens")
    summary = table.groupby("layer")[["tolerance_ess", "entropy_ess", "tss"]].mean()
    print("mean over heads/channels and splits, per layer:\n")
    with pd.option_context("display.width", 160, "display.precision", 2):
        print(summary.to_string())
    return _write(table, args.output or Path("out") / "ess_table.csv")


def _one_line(err: BaseException) -> str:
    message = " ".join(str(err).split()) or type(err).__name__
    return f"ess-widgets: error: {message}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (0 on success).

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments (``sys.argv[1:]`` by default).

    Returns
    -------
    int
        0 on success, 1 when the job fails (one line on stderr); argparse exits with 2 on
        a usage error and 0 after ``--help``.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.output is not None and args.output.suffix.lower() not in _FORMATS:
        parser.error(f"--output must end in .csv or .parquet, got {str(args.output)!r}")
    if args.model is None and (args.text is not None or args.text_file is not None):
        parser.error("--text and --text-file need --model (the example mixers take no text)")
    if args.model is None and (args.layers is not None or args.splits is not None):
        parser.error("--layers and --splits need --model")
    try:
        path = _model_table(args) if args.model is not None else _examples(args)
    except (ValueError, TypeError, ImportError, OSError, RuntimeError, MemoryError) as err:
        print(_one_line(err), file=sys.stderr)
        return 1
    print(f"\nwritten: {path}")
    return 0
