"""The project's set-up files agree with each other."""

import os
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def pins(lines):
    found = {}
    for line in lines:
        match = re.match(r"^\s*-?\s*([A-Za-z0-9_.\-\[\]]+)==([^\s#]+)", line)
        if match:
            found[match.group(1).lower()] = match.group(2)
    return found


def test_environment_yml_has_the_requirements_pins():
    required = pins((ROOT / "requirements.txt").read_text().splitlines())
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda_pins = pins(pip_section)
    assert {k: conda_pins.get(k) for k in required} == required
    assert "-e ." in pip_section


def test_jupyter_book_pinned_below_2():
    assert pins((ROOT / "requirements.txt").read_text().splitlines())["jupyter-book"].startswith("1.")


def test_every_notebook_is_in_the_toc():
    toc = (ROOT / "_toc.yml").read_text()
    assert yaml.safe_load(toc)["format"] == "jb-book"
    for notebook in sorted((ROOT / "book").glob("*.ipynb")):
        assert f"book/{notebook.stem}" in toc, f"{notebook.name} is missing from _toc.yml"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make book" in readme
    assert "make test" in ci


def test_notebooks_set_up_before_importing_tensorflow():
    """TensorFlow reads TF_ENABLE_ONEDNN_OPTS once, when it is imported: a chapter that
    imports keras or tensorflow before ``mc.utils.setup`` trains with the slower default
    kernels on AVX2 CPUs, and its committed outputs would not be the ones a reader gets."""
    import json

    for notebook in sorted((ROOT / "book").glob("*.ipynb")):
        code = "\n".join(
            "".join(cell["source"]) for cell in json.loads(notebook.read_text())["cells"] if cell["cell_type"] == "code"
        )
        first_tf = re.search(r"^(import|from) (keras|tensorflow)\b", code, re.MULTILINE)
        setup = code.find("mc.utils.setup(")
        if first_tf:
            assert 0 <= setup < first_tf.start(), f"{notebook.name}: call mc.utils.setup() before importing keras/tensorflow"


def test_notebook_outputs_compared_only_where_the_arithmetic_matches(tmp_path, monkeypatch):
    """conftest.py compares notebook outputs bit for bit on a machine whose numerics
    fingerprint matches the reference, and otherwise runs them uncompared, saying so: a
    notebook whose stored output is wrong fails in the first case and passes in the second.
    The AVX2 caps reach the notebook's kernel only in the first case, and only for a
    reference recorded under them."""
    import json
    import subprocess
    import sys

    import nbformat
    import numerics  # tests/numerics.py (pytest puts tests/ on the path)

    for key in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "NPY_DISABLE_CPU_FEATURES", "OPENCV_CPU_DISABLE"):
        monkeypatch.delenv(key, raising=False)  # as a fresh shell has it
    env = dict(os.environ)
    capped_isa = numerics.reproducible_environment().get("ONEDNN_MAX_CPU_ISA")

    def run(fingerprint, avx2_caps, isa):
        wrong = nbformat.v4.new_code_cell("print(1 + 1)", execution_count=1)
        wrong.outputs = [nbformat.v4.new_output("stream", name="stdout", text="3\n")]
        kernels = nbformat.v4.new_code_cell(f"import os\nassert os.environ.get('ONEDNN_MAX_CPU_ISA') == {isa!r}")
        notebook = tmp_path / f"{fingerprint}_{avx2_caps}.ipynb"
        nbformat.write(nbformat.v4.new_notebook(cells=[wrong, kernels]), notebook)
        reference = tmp_path / f"{fingerprint}_{avx2_caps}.json"
        reference.write_text(json.dumps({"fingerprint": fingerprint, "machine": "a test", "recorded": "today",
                                         "avx2_caps": avx2_caps}))
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "--nbval", "--nbval-current-env", "-p", "no:cacheprovider",
             "-p", "conftest",  # the repository's conftest.py: the notebook lies outside it
             f"--rootdir={ROOT}", "-c", str(ROOT / "pyproject.toml"), str(notebook)],
            cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
            env={**env, "MEDSEG_NUMERICS_REFERENCE": str(reference)})
        return done.returncode, done.stdout

    for avx2_caps, isa in ((True, capped_isa), (False, None)):
        here = numerics.fingerprint_here(capped=avx2_caps)
        code, out = run(here, avx2_caps, isa)
        assert f"compared bit for bit; this machine reproduces the committed run (numerics fingerprint {here})" in out
        assert code == 1 and "1 failed, 1 passed" in out, out[-2000:]
    code, out = run("0123456789abcdef", True, None)
    here = numerics.fingerprint_here()
    assert f"NOT compared; this machine's numerics fingerprint {here} differs from the committed run's 0123456789abcdef" in out
    assert code == 0 and "2 passed" in out, out[-2000:]
