"""The Ray engine: the same dataset as the local engine, on Ray's local cluster (2 CPUs)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import sys
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("pyarrow")
ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from ess_widgets.adapters import load  # noqa: E402
from ess_widgets.corpus import (  # noqa: E402
    read_failures,
    read_sweep,
    read_texts,
    storage,
    sweep,
    sweep_settings,
)

sys.path.insert(0, str(Path(__file__).parent))  # the shared tiny model (corpus_models.py)
from corpus_models import CORPUS, tiny_llama_folder  # noqa: E402

OPTIONS = dict(tol=1e-2, relative=True, shard_size=2, progress=False)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_llama_folder(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="module")
def cluster():
    """Ray's local cluster with 2 CPUs, as on a laptop; shut down after the module."""
    for attempt in range(3):  # a loaded machine can miss Ray's fixed 30 s raylet start-up wait
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            break
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def local(model_dir, tmp_path_factory):
    return sweep(model_dir, CORPUS, out=tmp_path_factory.mktemp("local") / "ess", **OPTIONS)


def _same_dataset(a: Path, b: Path) -> None:
    pd.testing.assert_frame_equal(read_sweep(a), read_sweep(b))
    pd.testing.assert_frame_equal(read_texts(a), read_texts(b))
    pd.testing.assert_frame_equal(read_failures(a), read_failures(b))
    assert sweep_settings(a) == sweep_settings(b)
    assert sorted(p.relative_to(a) for p in a.rglob("*")) == sorted(
        p.relative_to(b) for p in b.rglob("*")
    )


def test_ray_equals_local(cluster, model_dir, local, tmp_path):
    """Two actors, each loading the saved model once: the same files and numbers."""
    result = sweep(model_dir, CORPUS, out=tmp_path / "ess", engine="ray", concurrency=2, **OPTIONS)
    assert result.engine == "ray" and result.written == 4 and result.failures == 2
    _same_dataset(local.path, result.path)
    meta = storage.shard_metadata(storage.part_path(result.path, "ess", 0))
    assert meta["engine"] == "ray"


def test_ray_with_a_handle_and_resume_of_a_local_run(cluster, model_dir, local, tmp_path):
    """A handle travels through the object store; a local run's shards are skipped."""
    handle = load(model_dir)
    out = tmp_path / "ess"
    first = sweep(handle, CORPUS[:4], out=out, **OPTIONS)  # shards 0 and 1, locally
    assert first.written == 2
    rest = sweep(handle, CORPUS, out=out, engine="ray", num_cpus=1, **OPTIONS)
    assert rest.skipped == 2 and rest.written == 2
    pd.testing.assert_frame_equal(read_sweep(out), read_sweep(local.path))
    pd.testing.assert_frame_equal(read_failures(out), read_failures(local.path))
