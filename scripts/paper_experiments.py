"""The ESS paper's other experiments, on tiny models the CPU trains in minutes.

    nice -n 19 python scripts/paper_experiments.py tasks        # (a) ESS/kv vs accuracy
    nice -n 19 python scripts/paper_experiments.py regularizer  # (b) collapse, lambda
    nice -n 19 python scripts/paper_experiments.py init         # (c) S6- vs GLA-style init
    nice -n 19 python scripts/paper_experiments.py distill      # (d) teachers -> student
    nice -n 19 python scripts/paper_experiments.py copy_hard    # (a') harder selective copying
    python scripts/paper_experiments.py tasks --quick --out /tmp/x   # a smoke run (tests)

Each experiment appends one row per model to its CSV in ``ess_widgets/models/paper``
(``paper_path(name)``) as soon as the model is measured, and skips the rows already
there: an interrupted run resumes where it stopped. Every model is measured on 256
fresh sequences of its task (seed 20_000, never used in training): accuracy at the
positions with a target, tolerance-ESS (relative tolerance 1e-2) and entropy-ESS on
the first 32, averaged as in ``ess_widgets.models.experiment``. Settings of each
experiment are the constants below; ``training.train`` documents the loop.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import pandas as pd
import torch
from scipy import stats

from ess_widgets.models.experiment import FRESH_SEED, measure_batch
from ess_widgets.models.model import MQARConfig, MQARModel, save_model
from ess_widgets.models.paper import PAPER_DIR, task_model_name
from ess_widgets.models.registry import WEIGHTS_DIR, load_mqar_model
from ess_widgets.models.training import (
    TrainConfig,
    apply_init,
    forward_with_mixers,
    model_transition_penalty,
    train,
)
from ess_widgets.tasks import make_batch

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"d_model": 32, "batch": 32, "warmup": 30, "eval_every": 100}

# (a) tasks: every family at three state sizes on both tasks.
TASK_SETTINGS = {
    "selective_copying": {"num_items": 6, "seq_len": 24, "vocab_size": 16},
    "compression": {"num_items": 6, "seq_len": 12, "vocab_size": 16},
}
TASK_GRID = [*((f, s) for f in ("la", "wla", "gla", "s6") for s in (2, 4, 8)), ("sa", 8)]
TASK_STEPS = 400

# (a') selective copying made hard: 12 tokens among 36 noise positions, every family at four
# state sizes, trained to convergence (early stop at 0.99 held-out accuracy).
COPY_HARD = {"task": "selective_copying", "num_items": 12, "seq_len": 48, "vocab_size": 16}
COPY_HARD_GRID = [*((f, s) for f in ("la", "wla", "gla", "s6") for s in (2, 4, 8, 16)), ("sa", 8)]
COPY_HARD_STEPS = 2000

# (b) regularizer: GLA and WLA on MQAR, key size above the pairs (capacity to spare).
REG_TASK = {"task": "mqar", "num_items": 8, "seq_len": 32, "vocab_size": 32}
REG_GRID = [(f, s, lam) for f in ("gla", "wla") for s in (8, 16) for lam in (0.0, 1.0, 10.0)]
REG_STEPS = 400

# (c) initialization: ESS at init (all sizes) and after training (TRAINED_STATES).
INIT_TASK = REG_TASK
INIT_STATES = (2, 4, 8, 16, 32)
TRAINED_STATES = (4, 8, 16)
INIT_STEPS = 300

# (d) distillation: the shipped MQAR models with 8 pairs as teachers, one GLA student.
STUDENT = {"family": "gla", "state": 2}
DISTILL_STEPS, DISTILL_BATCH = 150, 16


def measure(model, task: dict, *, quick=False) -> dict:
    batch = make_batch(
        task["task"],
        64 if quick else 256,
        num_items=task["num_items"],
        seq_len=task["seq_len"],
        vocab_size=task["vocab_size"],
        seed=FRESH_SEED,
    )
    row = measure_batch(model, batch, num_items=task["num_items"], ess_sequences=8 if quick else 32)
    with torch.no_grad():
        _, io = forward_with_mixers(model, batch.inputs[:32])
        row["transition_distance"] = float(model_transition_penalty(model, io))
    return row


class Sheet:
    """A results CSV written row by row; ``done(key)`` tells a finished row."""

    def __init__(self, path: Path, key: tuple[str, ...]):
        self.path, self.key = path, key
        self.rows = pd.read_csv(path).to_dict("records") if path.exists() else []

    def done(self, **key) -> bool:
        return any(all(str(r[k]) == str(v) for k, v in key.items()) for r in self.rows)

    def add(self, row: dict) -> None:
        self.rows.append(row)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        cols = list(dict.fromkeys(k for r in self.rows for k in r))
        with open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=cols)
            writer.writeheader()
            for r in self.rows:
                writer.writerow(
                    {k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()}
                )


def _cfg(family, state, task: dict, steps, seed=0, **kw) -> TrainConfig:
    return TrainConfig(family, state, steps=steps, seed=seed, **SMALL, **task, **kw)


def _log(msg):
    print(msg, flush=True)


def run_tasks(out: Path, weights: Path, quick: bool):
    sheet = Sheet(out / "tasks_results.csv", ("name",))
    for task, settings in TASK_SETTINGS.items():
        for family, state in TASK_GRID[:2] if quick else TASK_GRID:
            name = task_model_name(task, family, state, settings["num_items"])
            if sheet.done(name=name):
                continue
            _log(name)
            cfg = _cfg(family, state, {"task": task, **settings}, 4 if quick else TASK_STEPS)
            model, rec = _train_and_ship(cfg, name, weights)
            row = {
                "name": name,
                "task": task,
                "family": family,
                "state": state,
                "num_items": settings["num_items"],
                "seq_len": settings["seq_len"],
                "train_steps": rec["steps_run"],
                "train_seconds": rec["train_seconds"],
            }
            row.update(measure(model, {"task": task, **settings}, quick=quick))
            _log(f"  acc {row['accuracy']:.3f} ess {row['ess_tol']:.2f} tss {row['tss']:.1f}")
            sheet.add(row)


def _train_and_ship(cfg, name: str, weights: Path):
    """Train, and save the model as the built-in ``name`` with its training record."""
    model, rec = train(cfg, log=_log)
    rec["name"] = name
    weights.mkdir(parents=True, exist_ok=True)
    save_model(model, weights / f"{name}.safetensors", {"training": rec})
    return model, rec


def run_copy_hard(out: Path, weights: Path, quick: bool, families=None):
    sheet = Sheet(out / "copy_hard_results.csv", ("name",))
    grid = [(f, s) for f, s in COPY_HARD_GRID if not families or f in families]
    settings = {k: v for k, v in COPY_HARD.items() if k != "task"}
    for family, state in grid[:2] if quick else grid:
        name = task_model_name(COPY_HARD["task"], family, state, COPY_HARD["num_items"])
        if sheet.done(name=name):
            continue
        _log(name)
        cfg = _cfg(family, state, COPY_HARD, 4 if quick else COPY_HARD_STEPS)
        model, rec = _train_and_ship(cfg, name, weights)
        row = {
            "name": name,
            "task": COPY_HARD["task"],
            "family": family,
            "state": state,
            **settings,
            "train_steps": rec["steps_run"],
            "train_seconds": rec["train_seconds"],
            "train_cpu_seconds": rec["train_cpu_seconds"],
            "train_accuracy": rec["train_accuracy"],
            "num_params": rec["num_params"],
        }
        row.update(measure(model, COPY_HARD, quick=quick))
        _log(f"  acc {row['accuracy']:.3f} ess {row['ess_tol']:.2f} tss {row['tss']:.1f}")
        sheet.add(row)


def run_regularizer(out: Path, quick: bool):
    sheet = Sheet(out / "regularizer_results.csv", ("family", "state", "reg_lambda"))
    for family, state, lam in REG_GRID[:2] if quick else REG_GRID:
        if sheet.done(family=family, state=state, reg_lambda=lam):
            continue
        _log(f"{family} {state} lambda {lam}")
        model, rec = train(
            _cfg(family, state, REG_TASK, 4 if quick else REG_STEPS, reg_lambda=lam), log=_log
        )
        row = {
            "family": family,
            "state": state,
            "reg_lambda": lam,
            **REG_TASK,
            "train_steps": rec["steps_run"],
            "train_seconds": rec["train_seconds"],
        }
        row.update(measure(model, REG_TASK, quick=quick))
        _log(f"  acc {row['accuracy']:.3f} ess {row['ess_tol']:.2f} regime {row['regime']}")
        sheet.add(row)


def run_init(out: Path, quick: bool):
    sheet = Sheet(out / "init_results.csv", ("family", "init", "state", "stage"))
    states = INIT_STATES[:2] if quick else INIT_STATES
    for family in ("gla", "s6"):
        for scheme in ("gla", "s6"):
            for state in states:
                if sheet.done(family=family, init=scheme, state=state, stage="init"):
                    continue
                torch.manual_seed(0)
                model = MQARModel(
                    MQARConfig(family, state, INIT_TASK["vocab_size"], SMALL["d_model"])
                )
                apply_init(model, scheme).eval()
                row = {
                    "family": family,
                    "init": scheme,
                    "state": state,
                    "stage": "init",
                    "train_steps": 0,
                    **INIT_TASK,
                }
                row.update(measure(model, INIT_TASK, quick=quick))
                _log(f"{family} {scheme} {state} init: ess {row['ess_ent']:.2f} tss {row['tss']}")
                sheet.add(row)
    trained = TRAINED_STATES[:1] if quick else TRAINED_STATES
    for family in ("gla", "s6"):
        for scheme in ("gla", "s6"):
            for state in trained:
                if sheet.done(family=family, init=scheme, state=state, stage="trained"):
                    continue
                _log(f"{family} {scheme} {state} training")
                cfg = _cfg(family, state, INIT_TASK, 4 if quick else INIT_STEPS, init=scheme)
                model, rec = train(cfg, log=_log)
                row = {
                    "family": family,
                    "init": scheme,
                    "state": state,
                    "stage": "trained",
                    "train_steps": rec["steps_run"],
                    **INIT_TASK,
                }
                row.update(measure(model, INIT_TASK, quick=quick))
                _log(f"  acc {row['accuracy']:.3f} ess {row['ess_ent']:.2f}")
                sheet.add(row)


def teachers() -> list[str]:
    # The models with the student's block (an MLP per block, whose weights the student
    # takes over frozen): not the MLP-free s6ng models.
    manifest = pd.read_csv(WEIGHTS_DIR / "manifest.csv")
    plain = ~manifest["name"].str.startswith("mqar-s6ng-")
    return manifest[(manifest.num_pairs == 8) & plain]["name"].tolist()


def run_distill(out: Path, quick: bool):
    sheet = Sheet(out / "distill_results.csv", ("teacher",))
    measured = pd.read_csv(ROOT / "ess_widgets" / "models" / "mqar_results.csv").set_index("name")
    names = teachers()[:2] if quick else teachers()
    for name in names:
        if sheet.done(teacher=name):
            continue
        teacher, trec = load_mqar_model(name, with_record=True)
        _log(f"distill {name}")
        cfg = TrainConfig(
            STUDENT["family"],
            STUDENT["state"],
            task="mqar",
            num_items=trec["num_pairs"],
            seq_len=trec["seq_len"],
            vocab_size=trec["vocab_size"],
            d_model=trec["d_model"],
            steps=3 if quick else DISTILL_STEPS,
            batch=DISTILL_BATCH,
            warmup=20,
            eval_every=DISTILL_STEPS,
            distill="mixer",
        )
        _, rec = train(cfg, teacher=teacher, log=_log)
        m = measured.loc[name]
        row = {
            "teacher": name,
            "teacher_family": trec["family"],
            "teacher_state": trec["state"],
            "teacher_accuracy": m["accuracy"],
            "teacher_ess_tol": m["ess_tol"],
            "teacher_ess_ent": m["ess_ent"],
            "teacher_tss": m["tss"],
            "teacher_total_ess_tol": m["total_ess_tol"],
            "teacher_total_ess_ent": m["total_ess_ent"],
            "teacher_total_tss": m["total_tss"],
            "student": f"{STUDENT['family']}-dk{STUDENT['state']}",
            "distill_loss": rec["distill_loss"],
            "student_accuracy": rec["train_accuracy"],
            "train_steps": rec["steps_run"],
            "train_seconds": rec["train_seconds"],
        }
        _log(f"  distill loss {row['distill_loss']:.4f} student acc {row['student_accuracy']:.3f}")
        sheet.add(row)
    frame = pd.DataFrame(sheet.rows)
    rows = []
    for measure_ in (
        "teacher_total_ess_ent",
        "teacher_total_ess_tol",
        "teacher_total_tss",
        "teacher_ess_ent",
        "teacher_ess_tol",
        "teacher_tss",
    ):
        x, y = frame[measure_].to_numpy(), frame["distill_loss"].to_numpy()
        ok = len(set(x)) > 1 and len(set(y)) > 1
        sp = stats.spearmanr(x, y) if ok else (float("nan"),) * 2
        pe = stats.pearsonr(x, y) if ok else (float("nan"),) * 2
        rows.append(
            {
                "measure": measure_,
                "n": len(frame),
                "spearman": float(sp[0]),
                "spearman_p": float(sp[1]),
                "pearson": float(pe[0]),
                "pearson_p": float(pe[1]),
            }
        )
    pd.DataFrame(rows).to_csv(out / "distill_correlations.csv", index=False)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "experiment", choices=("tasks", "regularizer", "init", "distill", "copy_hard")
    )
    parser.add_argument("--families", nargs="*", help="copy_hard: only these families")
    parser.add_argument("--quick", action="store_true", help="a few steps: a smoke run")
    parser.add_argument("--out", type=Path, default=PAPER_DIR, help="CSV folder")
    parser.add_argument(
        "--weights",
        type=Path,
        help="model folder (tasks, copy_hard; default: --out's "
        "weights when --out is given, else the package's)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.time()
    weights = args.weights or (WEIGHTS_DIR if args.out == PAPER_DIR else args.out / "weights")
    if args.experiment == "tasks":
        run_tasks(args.out, weights, args.quick)
    elif args.experiment == "copy_hard":
        run_copy_hard(args.out, weights, args.quick, args.families)
    elif args.experiment == "regularizer":
        run_regularizer(args.out, args.quick)
    elif args.experiment == "init":
        run_init(args.out, args.quick)
    else:
        run_distill(args.out, args.quick)
    _log(f"{args.experiment}: {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
