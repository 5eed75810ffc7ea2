"""Shared test set-up: quiet TensorFlow, pinned threads.

No MPLBACKEND here: notebook kernels started by nbval inherit this process's environment,
and Agg there would suppress their inline figures. test_viz selects Agg itself.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tf_setup():
    """Call mc.utils.setup once per session (TensorFlow fixes thread pools at start-up)."""
    import medseg_course as mc

    return mc.utils.setup(seed=0, threads=2)
