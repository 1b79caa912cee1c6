"""``engine="ray"``: the sweep's shards on a pool of Ray actors (Ray Data).

Ray Data does the scheduling: the pending shards become a dataset with one row
(and one block) per shard, ``map_batches`` runs ``ShardWorker`` on them with
``batch_size=1`` in an actor pool (``concurrency`` actors, ``num_cpus`` /
``num_gpus`` each), and each actor loads the model once in its constructor. An
actor computes a shard with the same ``compute_shard`` as the local engine and
writes it with the same ``write_shard`` (temporary names, the ``ess`` part last),
then returns one small row of counts that the driver turns into progress. On a
multi-node cluster ``out`` must therefore be a folder every node can write (a
shared file system), as for Ray's own ``write_parquet`` to a local path.

Ray is optional: ``pip install 'ess-widgets[ray]'``.
"""

from __future__ import annotations

import json

import numpy as np

from .compute import compute_shard
from .storage import write_shard
from .texts import Shard, item_json

__all__ = ["require_ray", "run_ray", "ShardWorker"]


def require_ray():
    """``ray`` with Ray Data, or an ImportError that says how to install it."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise ImportError(
            "engine='ray' needs Ray Data, which is not installed: "
            "pip install 'ess-widgets[ray]' (or pip install 'ray[data]' pyarrow)."
        ) from None
    return ray


class ShardWorker:
    """A Ray Data callable class: loads the model once, then computes and writes shards.

    Parameters
    ----------
    model : list of one item
        A name or folder (loaded here with ``ess_widgets.load``), or a Ray
        ``ObjectRef`` of a handle or model (fetched here). Wrapped in a list so that
        Ray hands the reference over unresolved.
    settings : dict
        The sweep's recorded settings.
    metadata : dict
        Part metadata by shard number (str keys).
    out : str
        The dataset folder.
    load_options : dict or None
    threads : int
        Torch threads of this actor (its CPU share).
    """

    def __init__(self, model, settings, metadata, out, load_options, threads):
        import torch

        from .driver import compute_settings, load_handle

        torch.set_num_threads(max(1, int(threads)))
        source = model[0]
        if not isinstance(source, str):
            import ray

            source = ray.get(source)
        self.handle = load_handle(source, settings, load_options)
        self.compute = compute_settings(settings)
        self.metadata = metadata
        self.out = out

    def __call__(self, batch: dict) -> dict:
        counts = {"shard": [], "texts": [], "failures": [], "rows": []}
        for index, first_id, payload in zip(batch["shard"], batch["first_id"], batch["payload"]):
            items = tuple(
                item if isinstance(item, str) else tuple(item) for item in json.loads(payload)
            )
            shard = Shard(index=int(index), first_id=int(first_id), items=items)
            tables = compute_shard(self.handle, shard, self.compute)
            write_shard(self.out, shard.index, tables, self.metadata[str(shard.index)])
            counts["shard"].append(shard.index)
            counts["texts"].append(len(items))
            counts["failures"].append(tables["failures"].num_rows)
            counts["rows"].append(tables["ess"].num_rows)
        return {k: np.asarray(v, dtype=np.int64) for k, v in counts.items()}


def _pool_size(ray, num_cpus: float, num_gpus: float, pending: int) -> int:
    resources = ray.cluster_resources()
    if num_gpus > 0:
        fit = int(resources.get("GPU", 0) // num_gpus)
        if fit < 1:
            raise ValueError(
                f"`num_gpus` = {num_gpus} per actor, but the Ray cluster has "
                f"{resources.get('GPU', 0)} GPUs."
            )
    else:
        fit = int(resources.get("CPU", 1) // num_cpus)
    return max(1, min(fit, pending))


def run_ray(
    model,
    pending: list[Shard],
    *,
    out,
    settings: dict,
    metadata: dict,
    load_options=None,
    on_shard=None,
    concurrency=None,
    num_cpus=None,
    num_gpus=None,
    address=None,
) -> dict:
    """Compute and write ``pending`` shards on Ray actors; returns counts.

    Connects to the cluster ``ray.init`` already reached, else to ``address``,
    else starts a local one; a cluster this call connected to is released at the
    end (``ray.shutdown``).

    Returns
    -------
    dict
        ``shards``, ``texts``, ``failures``, ``rows`` written.
    """
    ray = require_ray()
    num_cpus = 1.0 if num_cpus is None else float(num_cpus)
    num_gpus = 0.0 if num_gpus is None else float(num_gpus)
    if num_cpus <= 0 or num_gpus < 0:
        raise ValueError(f"`num_cpus` must be > 0 and `num_gpus` >= 0, got {num_cpus}, {num_gpus}.")
    if concurrency is not None and (isinstance(concurrency, bool) or int(concurrency) < 1):
        raise ValueError(f"`concurrency` must be an int >= 1, got {concurrency!r}.")
    connected_here = not ray.is_initialized()
    if connected_here:
        ray.init(address=address) if address else ray.init()
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the sweep's own bar counts texts
        size = (
            int(concurrency) if concurrency else _pool_size(ray, num_cpus, num_gpus, len(pending))
        )
        source = [str(model)] if isinstance(model, str) else [ray.put(model)]
        rows = [
            {
                "shard": s.index,
                "first_id": s.first_id,
                "payload": "[" + ",".join(item_json(i) for i in s.items) + "]",
            }
            for s in pending
        ]
        shards = ray.data.from_items(rows, override_num_blocks=len(rows))
        results = shards.map_batches(
            ShardWorker,
            fn_constructor_kwargs={
                "model": source,
                "settings": settings,
                "metadata": {str(k): v for k, v in metadata.items()},
                "out": str(out),
                "load_options": load_options,
                "threads": max(1, int(num_cpus)),
            },
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=size),
            num_cpus=num_cpus,
            num_gpus=num_gpus,
        )
        totals = {"shards": 0, "texts": 0, "failures": 0, "rows": 0}
        for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
            texts = int(batch["texts"].sum())
            totals["shards"] += len(batch["shard"])
            totals["texts"] += texts
            totals["failures"] += int(batch["failures"].sum())
            totals["rows"] += int(batch["rows"].sum())
            if on_shard is not None:
                on_shard(texts)
        return totals
    finally:
        if connected_here:
            ray.shutdown()
