"""The project's set-up files agree with each other."""

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
    imports keras or tensorflow before ``mc.environment.setup`` trains with the slower default
    kernels on AVX2 CPUs, and its committed outputs would not be the ones a reader gets."""
    import json

    for notebook in sorted((ROOT / "book").glob("*.ipynb")):
        code = "\n".join(
            "".join(cell["source"]) for cell in json.loads(notebook.read_text())["cells"] if cell["cell_type"] == "code"
        )
        first_tf = re.search(r"^(import|from) (keras|tensorflow)\b", code, re.MULTILINE)
        setup = code.find("mc.environment.setup(")
        if first_tf:
            assert 0 <= setup < first_tf.start(), f"{notebook.name}: call mc.environment.setup() before importing keras/tensorflow"


def test_notebook_outputs_compared_unless_tagged_cpu_dependent(tmp_path):
    """conftest.py compares every notebook output except those of cells tagged
    depends-on-cpu, which run (their asserts included) uncompared; --compare-outputs=all
    compares those too."""
    import subprocess
    import sys

    import nbformat

    def run(tags, *options):
        wrong = nbformat.v4.new_code_cell("print(1 + 1)", execution_count=1, metadata={"tags": tags})
        wrong.outputs = [nbformat.v4.new_output("stream", name="stdout", text="3\n")]
        checked = nbformat.v4.new_code_cell("assert 1 + 1 == 2", metadata={"tags": tags})
        notebook = tmp_path / f"n{len(tags)}{len(options)}.ipynb"
        nbformat.write(nbformat.v4.new_notebook(cells=[wrong, checked]), notebook)
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "--nbval", "--nbval-current-env", "-p", "no:cacheprovider",
             "-p", "conftest",  # the repository's conftest.py: the notebook lies outside it
             f"--rootdir={ROOT}", "-c", str(ROOT / "pyproject.toml"), *options, str(notebook)],
            cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
        return done.returncode, done.stdout

    code, out = run([])
    assert code == 1 and "1 failed, 1 passed" in out, out[-2000:]
    code, out = run(["depends-on-cpu"])
    assert code == 0 and "2 passed" in out and "0 cells with outputs compared, 1 not compared" in out, out[-2000:]
    code, out = run(["depends-on-cpu"], "--compare-outputs=all")
    assert code == 1 and "1 failed, 1 passed" in out, out[-2000:]
