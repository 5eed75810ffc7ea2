"""Shared test set-up: quiet TensorFlow, pinned threads.

No MPLBACKEND here: notebook kernels started by nbval inherit this process's environment,
and Agg there would suppress their inline figures. test_viz selects Agg itself.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tf_setup():
    """Call mc.environment.setup once per session (TensorFlow fixes thread pools at start-up)."""
    import medseg_course as mc

    return mc.environment.setup(seed=0, threads=2)


@pytest.fixture(scope="session")
def tiny_run(tf_setup, tmp_path_factory):
    """A run folder with a tiny model (1 epoch on 12 phantoms, 32x32), for tests of predict."""
    import medseg_course as mc

    out = tmp_path_factory.mktemp("tiny_model") / "run"
    code = mc.cli.main(["train", "--data", "phantom", "--num-images", "12", "--image-size", "32", "--depth", "2",
                        "--base-filters", "4", "--epochs", "1", "--batch-size", "4", "--out", str(out)])
    assert code == 0
    return out
