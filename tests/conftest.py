"""Shared session fixtures: tiny models trained in-session on sklearn's 8x8 ``digits`` and their artifacts.

* ``digits_data``: the digits splits (20% validation so the export's parity check has >= 256 val samples);
* ``digits_run``: a ``bin_enc`` mlp run directory (a few seconds on one thread; distinct class codes asserted);
* ``digits_artifact``: its exported ``model.onnx`` (vertex-distance reliability);
* ``digits_baseline_run`` / ``digits_baseline_artifact``: the same for a ``no_pen`` model (max-softmax).

The BentoML model store of the whole session lives in a temporary directory (``BENTOML_HOME``) and tracking is
off, so tests never touch ``~/bentoml``. torch is imported lazily, inside the fixtures that train.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

_BENTOML_HOME = tempfile.mkdtemp(prefix="binenc-test-bentoml-")
os.environ["BENTOML_HOME"] = _BENTOML_HOME
os.environ["BENTOML_DO_NOT_TRACK"] = "True"
atexit.register(shutil.rmtree, _BENTOML_HOME, True)

# A recipe that gives 10 distinct codes on digits in ~2 s (the quick profile's gamma cap collapses this tiny set).
DIGITS_RECIPE = dict(
    dataset="digits",
    backbone="mlp",
    latent_dim=8,
    epochs=60,
    batch_size=64,
    lr=3e-3,
    head_lr=3e-3,
    gamma_cap=10.0,
    val_fraction=0.2,
    seed=0,
    num_threads=1,
)


@pytest.fixture(scope="session")
def bentoml_home() -> Path:
    """The session's temporary BentoML home (already exported as ``BENTOML_HOME``)."""
    return Path(_BENTOML_HOME)


@pytest.fixture(scope="session")
def digits_recipe() -> dict:
    """The training recipe of the digits fixtures (tests import it through this fixture: importing conftest as a
    module would run its set-up, a second BENTOML_HOME included, again)."""
    return dict(DIGITS_RECIPE)


@pytest.fixture(scope="session")
def digits_data():
    from training.data import load_dataset

    return load_dataset("digits", None, DIGITS_RECIPE["val_fraction"], DIGITS_RECIPE["seed"])


def _train(variant: str, out: Path, data) -> Path:
    import torch

    from training.config import make_config
    from training.train import train

    torch.set_num_threads(1)
    cfg = make_config("quick", variant=variant, **DIGITS_RECIPE)
    train(cfg, out, data=data, progress=False)
    return out


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory, digits_data) -> Path:
    """A trained ``bin_enc`` run directory on digits (checkpoint.pt, metrics.json, ...)."""
    import json

    run = _train("bin_enc", tmp_path_factory.mktemp("runs") / "digits_mlp_bin_enc", digits_data)
    m = json.loads((run / "metrics.json").read_text())
    assert m["train"]["distinct_class_codes"] == 10, (
        f"digits fixture did not reach 10 distinct codes: {m['train']}"
    )
    return run


@pytest.fixture(scope="session")
def digits_artifact(digits_run, digits_data) -> Path:
    """``model.onnx`` exported from ``digits_run`` (score ``vertex_distance``)."""
    from training.export import export_run

    return export_run(digits_run, data=digits_data)


@pytest.fixture(scope="session")
def digits_baseline_run(tmp_path_factory, digits_data) -> Path:
    return _train("no_pen", tmp_path_factory.mktemp("runs") / "digits_mlp_no_pen", digits_data)


@pytest.fixture(scope="session")
def digits_baseline_artifact(digits_baseline_run, digits_data) -> Path:
    """``model.onnx`` of a ``no_pen`` model (score ``max_softmax``)."""
    from training.export import export_run

    return export_run(digits_baseline_run, data=digits_data)
