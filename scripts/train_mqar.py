"""Train the MQAR models the package ships (CPU, one thread, seeded).

    python scripts/train_mqar.py                 # the whole grid (see GRID)
    python scripts/train_mqar.py --only mqar-gla-dk8-kv8 --steps 200 --out /tmp/w

Each model (d_model 64, seq_len 64, vocab 64): AdamW (lr 3e-3, weight decay 0.1,
50 warmup steps then cosine), batch 64 of fresh MQAR sequences per step (seed =
model seed * 1_000_003 + step), evaluation on 256 held-out sequences (seed 10_000 +
model seed) every 100 steps, early stop once the held-out accuracy reaches 0.99. Weights go to
``ess_widgets/models/weights/<name>.safetensors`` with config and training record in
the safetensors header; ``manifest.csv`` lists them all. The loop is
``ess_widgets.models.training.train`` (shared with ``scripts/train_task.py``).
S6 trains only with its B/C projections initialised at O(1) and ``A = -1`` (see
``SelectiveSSMMixer``): with PyTorch's default init and S4D-real ``A`` it stayed at
chance (held-out accuracy 0.03 after 150 steps, loss ln 32) where LA was already at 0.19.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch

from ess_widgets.models.model import save_model
from ess_widgets.models.registry import S6NG_BLOCK, model_name
from ess_widgets.models.training import TrainConfig, train

WEIGHTS = Path(__file__).resolve().parents[1] / "ess_widgets" / "models" / "weights"

SEQ_LEN, VOCAB, D_MODEL = 64, 64, 64
BATCH, LR, WD, WARMUP, EVAL_EVERY, TARGET = 64, 3e-3, 0.1, 50, 100, 0.99

S6_SETTINGS = ((2, 8), (8, 8), (16, 8), (8, 4), (8, 16))
PLAIN, S6NG = (1, 2, True), S6NG_BLOCK  # (expand, mlp_ratio, gate)

# (family, state, num_pairs, max_steps, block). "s6ng": S6 in Mamba's block (expansion 2,
# no MLP) without its output gate silu(z), which kept the "s6" models at ~0.2 accuracy.
GRID = [
    *(
        (f, dk, kv, 1000, PLAIN)
        for f in ("la", "wla", "gla")
        for dk, kv in ((4, 8), (8, 8), (16, 8), (8, 4), (8, 16))
    ),
    *(("sa", 16, kv, 600, PLAIN) for kv in (4, 8, 16)),
    *(("s6", n, kv, 1000, PLAIN) for n, kv in S6_SETTINGS),
    *(("s6", n, kv, 800, S6NG) for n, kv in S6_SETTINGS),
]


def train_one(
    family,
    state,
    num_pairs,
    max_steps,
    *,
    block=PLAIN,
    seed=0,
    out=WEIGHTS,
    log=print,
):
    cfg = TrainConfig(
        family,
        state,
        task="mqar",
        num_items=num_pairs,
        seq_len=SEQ_LEN,
        vocab_size=VOCAB,
        d_model=D_MODEL,
        expand=block[0],
        mlp_ratio=block[1],
        gate=block[2],
        steps=max_steps,
        batch=BATCH,
        lr=LR,
        weight_decay=WD,
        warmup=WARMUP,
        eval_every=EVAL_EVERY,
        target=TARGET,
        seed=seed,
    )
    model, rec = train(cfg, log=log)
    step, acc, seconds = rec["steps_run"], rec["train_accuracy"], rec["train_seconds"]
    expand, mlp_ratio, gate = block
    name = model_name(family, state, num_pairs, expand=expand, mlp_ratio=mlp_ratio, gate=gate)
    record = {
        "name": name,
        "family": family,
        "state": state,
        "num_pairs": num_pairs,
        "seq_len": SEQ_LEN,
        "vocab_size": VOCAB,
        "d_model": D_MODEL,
        "seed": seed,
        "steps": step,
        "train_accuracy": round(acc, 4),
        "train_seconds": seconds,
        "train_cpu_seconds": rec["train_cpu_seconds"],
        "expand": expand,
        "mlp_ratio": mlp_ratio,
        "gate": gate,
        "num_params": rec["num_params"],
        # the training options of ``training.train`` these models use
        "task": "mqar",
        "reg_lambda": 0.0,
        "init": "default",
        "distill": None,
    }
    out.mkdir(parents=True, exist_ok=True)
    save_model(model.eval(), out / f"{name}.safetensors", {"training": record})
    return record


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="model names to (re)train")
    parser.add_argument("--steps", type=int, help="override max steps")
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    manifest = args.out / "manifest.csv"
    rows = {}
    if manifest.exists():
        with open(manifest) as f:
            rows = {r["name"]: r for r in csv.DictReader(f)}
    order = [model_name(f, s, k, expand=b[0], mlp_ratio=b[1], gate=b[2]) for f, s, k, _, b in GRID]
    for (family, state, kv, steps, block), name in zip(GRID, order):
        if args.only and name not in args.only:
            continue
        print(name, flush=True)
        rec = train_one(
            family,
            state,
            kv,
            args.steps or steps,
            block=block,
            out=args.out,
        )
        print(f"  -> acc {rec['train_accuracy']} in {rec['train_seconds']} s", flush=True)
        rows[name] = rec
        with open(manifest, "w", newline="") as f:
            # older rows lack the newer columns (expand, gate, num_params, ...): left empty
            writer = csv.DictWriter(f, fieldnames=list(rec))
            writer.writeheader()
            for key in sorted(rows, key=lambda n: order.index(n) if n in order else 99):
                writer.writerow(rows[key])


if __name__ == "__main__":
    main()
