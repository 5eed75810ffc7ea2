import os

import numpy as np
import pytest

import medseg_course as mc
from medseg_course import utils


def test_setup_reports_and_repeats(tf_setup):
    import tensorflow as tf

    assert tf_setup.device in ("CPU",) or tf_setup.device.startswith("GPU:")
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
    assert tf.config.threading.get_intra_op_parallelism_threads() == 2
    assert "numpy" in tf_setup.versions and "keras" in str(tf_setup)
    np.random.seed(123)  # whatever earlier tests left in the global generators...
    mc.environment.setup(seed=0, threads=2)  # ...same threads again: allowed, re-seeds
    a = (np.random.rand(), float(tf.random.uniform([])))
    mc.environment.setup(seed=0, threads=2)
    assert (np.random.rand(), float(tf.random.uniform([]))) == a
    assert a[0] == np.random.RandomState(0).rand()  # setup seeds NumPy's global generator


def test_setup_refuses_to_change_threads_after_start(tf_setup):
    with pytest.raises(RuntimeError, match="restart the kernel"):
        mc.environment.setup(seed=0, threads=1)


@pytest.mark.parametrize("kwargs, message", [({"seed": -1}, "seed"), ({"seed": 1.5}, "seed"), ({"threads": 0}, "threads")])
def test_setup_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        mc.environment.setup(**kwargs)


def test_check_array_messages():
    with pytest.raises(ValueError, match=r"image must have rank 2 or 3. Received: image.shape=\(2,\)"):
        utils.check_array([1, 2], "image", ndim=(2, 3))
    with pytest.raises(ValueError, match="2 NaN or infinite"):
        utils.check_array([np.nan, np.inf, 1.0], "x")
    with pytest.raises(ValueError, match="ragged"):
        utils.check_array([[1, 2], [3]], "x")
    with pytest.raises(ValueError, match="None"):
        utils.check_array(None, "x")
    assert utils.check_binary_mask(np.array([0.0, 1.0]), "m").dtype == bool


def test_onednn_default_on_opt_out_and_tensorflow_start_up_silent():
    """Unset, the package turns oneDNN's kernels on, on every CPU (TensorFlow alone does for
    some; 1.25-2.5x faster training here); TF_ENABLE_ONEDNN_OPTS=0 keeps them off. Their
    start-up line, which ignores TF_CPP_MIN_LOG_LEVEL, reaches neither stderr (the CLI's
    one-line errors) nor notebooks."""
    import subprocess
    import sys

    base = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")}
    for value in ("1", "0", None):
        env = dict(base) if value is None else dict(base, TF_ENABLE_ONEDNN_OPTS=value)
        # TensorFlow imported through the models (no set-up call), then the set-up's report
        code = ("import medseg_course as mc; mc.models; print(mc.environment.onednn_enabled()); "
                "print(mc.environment.setup().onednn)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        assert (out.stdout.split(), out.stderr) == ([str(value != "0")] * 2, ""), value


def test_import_is_lazy():
    import subprocess
    import sys

    code = "import sys, medseg_course as mc; mc.metrics; mc.data; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_footer_reports_versions_seed_device_and_time():
    import medseg_course as mc

    mc.environment.setup(seed=3)
    record = mc.environment.footer()
    text, markdown = str(record), record._repr_markdown_()
    assert text.startswith("Reproducibility: medseg-course ") and markdown.startswith("**Reproducibility:**")
    for part in ("Python ", "TensorFlow 2.", "Keras 3.", "seed 3", "2 threads", "oneDNN ", "chapter wall time "):
        assert part in text, (part, text)
    assert record.seconds >= 0


def test_footer_before_setup_says_what_to_call(monkeypatch):
    import medseg_course as mc

    monkeypatch.setattr(mc.environment, "_LAST_SETUP", None)
    with pytest.raises(RuntimeError, match=r"call mc\.environment\.setup\(seed=0\)"):
        mc.environment.footer()


def test_missing_tensorflow_says_how_to_install_it(monkeypatch):
    import sys

    import medseg_course as mc

    monkeypatch.setitem(sys.modules, "tensorflow", None)  # what an environment without it raises
    with pytest.raises(ModuleNotFoundError, match=r"medseg-course\[cpu\]"):
        mc.environment.import_tensorflow()
