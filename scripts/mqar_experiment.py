"""ESS versus accuracy on MQAR for every shipped model (docs/definitions.md: aggregations).

    python scripts/mqar_experiment.py
    python scripts/mqar_experiment.py --only mqar-mamba-ds8-kv8   # re-measure some, keep the rest

For each model in ``ess_widgets/models/weights``: accuracy on 256 fresh sequences
(seed 20_000, never used in training), tolerance-ESS (relative tol 1e-2) and
entropy-ESS per layer on the first 32 of them, TSS, and ESS/kv, TSS/kv (see
``ess_widgets.models.experiment``). Then Spearman and Pearson correlations of
accuracy with ESS/kv (both measures) and with TSS/kv, per family and over all
models. Writes ``ess_widgets/models/mqar_results.csv`` and
``ess_widgets/models/mqar_correlations.csv``. Groups: ``arch``, the name's second
part: the five families, and ``s6ng`` (S6 without the output gate ``silu(z)``).
``num_params`` counts every parameter of the model.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch
from scipy import stats

from ess_widgets.models.experiment import measure_model
from ess_widgets.models.registry import load_mqar_model, mqar_model_names

OUT = Path(__file__).resolve().parents[1] / "ess_widgets" / "models"
MEASURES = ("ess_tol_per_kv", "ess_ent_per_kv", "tss_per_kv")


def correlations(results: pd.DataFrame) -> pd.DataFrame:
    rows = []
    groups = [("all", results), *results.groupby("arch", sort=False)]
    for group, frame in groups:
        for measure in MEASURES:
            x, y = frame[measure].to_numpy(), frame["accuracy"].to_numpy()
            constant = len(set(x)) < 2 or len(set(y)) < 2
            sp = (float("nan"),) * 2 if constant else stats.spearmanr(x, y)
            pe = (float("nan"),) * 2 if constant else stats.pearsonr(x, y)
            rows.append(
                {
                    "group": group,
                    "measure": measure,
                    "n": len(frame),
                    "spearman": round(float(sp[0]), 4),
                    "spearman_p": float(sp[1]),
                    "pearson": round(float(pe[0]), 4),
                    "pearson_p": float(pe[1]),
                }
            )
    return pd.DataFrame(rows)


def describe(name: str):
    """``(model, record, row)``: the model and the columns that need no measurement."""
    model, rec = load_mqar_model(name, with_record=True)
    row = {
        "name": name,
        "family": rec["family"],
        "arch": name.split("-")[1],
        "state": rec["state"],
        "num_pairs": rec["num_pairs"],
        "seq_len": rec["seq_len"],
        "vocab_size": rec["vocab_size"],
        "expand": model.cfg.expand,
        "mlp_ratio": model.cfg.mlp_ratio,
        "gate": model.cfg.gate,
        "num_params": sum(p.numel() for p in model.parameters()),
        "train_steps": rec["steps"],
        "train_accuracy": rec["train_accuracy"],
    }
    return model, rec, row


def measure_row(name: str) -> dict:
    model, rec, row = describe(name)
    row.update(
        measure_model(
            model,
            num_pairs=rec["num_pairs"],
            seq_len=rec["seq_len"],
            vocab_size=rec["vocab_size"],
        )
    )
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", nargs="*", help="measure these models; keep the other rows of the CSV"
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    kept = {}
    if args.only and (args.out / "mqar_results.csv").exists():
        old = pd.read_csv(args.out / "mqar_results.csv")
        kept = {r["name"]: r for r in old.to_dict("records")}
    rows, columns = [], None
    for name in mqar_model_names():
        if args.only and name not in args.only:
            if name in kept:  # its measurements as they were; the descriptive columns anew
                rows.append({**kept[name], **describe(name)[2]})
            continue
        start = time.time()
        row = measure_row(name)
        rows.append(row)
        columns = list(row)
        print(
            f"{name:22s} acc {row['accuracy']:.3f} ESS(tol) {row['ess_tol']:.2f} "
            f"ESS(ent) {row['ess_ent']:.2f} TSS {row['tss']:.1f} {row['regime']} "
            f"({time.time() - start:.1f} s)",
            flush=True,
        )
    results = pd.DataFrame(rows)
    if columns:  # the column order of a freshly measured row
        results = results[columns + [c for c in results.columns if c not in columns]]
    args.out.mkdir(parents=True, exist_ok=True)
    results.round(6).to_csv(args.out / "mqar_results.csv", index=False)
    corr = correlations(results)
    corr.to_csv(args.out / "mqar_correlations.csv", index=False)
    print(corr.to_string(index=False))


if __name__ == "__main__":
    main()
