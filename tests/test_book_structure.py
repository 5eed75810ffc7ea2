"""The book's chapters as readers meet them: set-up cell, exercises, glossary links, citations.

Fast checks of the notebooks' sources; the Sphinx build (-W -n) and the browser test check
the rendered pages.
"""

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("[0-9][0-9]*_*.ipynb"))
REPOSITORY = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]


def cells(notebook, kind):
    return ["".join(c["source"]) for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == kind]


def glossary_terms():
    text = (ROOT / "book" / "glossary.md").read_text()
    block = text.split("```{glossary}", 1)[1].split("\n```", 1)[0]
    return {line.strip().lower() for line in block.splitlines() if line and not line.startswith(" ")}


def test_there_are_chapters():
    assert len(CHAPTERS) == 16


@pytest.mark.parametrize("notebook", CHAPTERS, ids=lambda p: p.stem)
def test_first_cell_installs_the_package_only_when_missing(notebook):
    first = json.loads(notebook.read_text())["cells"]
    first = next(c for c in first if c["cell_type"] == "code")
    source = "".join(first["source"])
    assert "except ModuleNotFoundError:" in source and "%pip install" in source, source
    assert source.index("import medseg_course") < source.index("%pip install")
    assert f"git+{REPOSITORY}" in source, f"{notebook.name}: install from {REPOSITORY} (_config.yml)"
    assert "remove-cell" in first["metadata"].get("tags", [])


@pytest.mark.parametrize("notebook", CHAPTERS, ids=lambda p: p.stem)
def test_at_least_three_exercises_each_with_a_folded_solution(notebook):
    text = "\n".join(cells(notebook, "markdown"))
    labels = re.findall(r"```\{exercise\}[^\n]*\n:label: (\S+)", text)
    solved = re.findall(r"```\{solution\} (\S+)\n:class: dropdown", text)
    assert len(labels) >= 3, f"{notebook.name}: {len(labels)} exercises"
    assert sorted(labels) == sorted(solved), f"{notebook.name}: exercises {labels}, folded solutions {solved}"
    assert "{admonition} Solution" not in text


def test_every_linked_term_is_in_the_glossary():
    terms = glossary_terms()
    assert len(terms) >= 60
    missing = set()
    for notebook in CHAPTERS:
        for role in re.findall(r"\{term\}`([^`]+)`", "\n".join(cells(notebook, "markdown"))):
            target = re.search(r"<([^>]+)>$", role)
            name = (target.group(1) if target else role).strip().lower()
            if name not in terms:
                missing.add((notebook.name, name))
    assert not missing, sorted(missing)


def test_every_chapter_links_the_glossary():
    for notebook in CHAPTERS:
        assert "{term}`" in "\n".join(cells(notebook, "markdown")), notebook.name


def test_every_citation_is_in_the_bibliography():
    keys = set(re.findall(r"^@\w+\{([^,]+),", (ROOT / "references.bib").read_text(), re.MULTILINE))
    cited = set()
    for notebook in CHAPTERS:
        for group in re.findall(r"\{cite(?::[pt])?\}`([^`]+)`", "\n".join(cells(notebook, "markdown"))):
            cited.update(key.strip() for key in group.split(","))
    assert cited, "no chapter cites a source"
    assert cited <= keys, sorted(cited - keys)
    for key in ("ronneberger2015unet", "isensee2021nnunet", "antonelli2022msd", "dice1945",
                "huttenlocher1993hausdorff", "fonov2011mni"):
        assert key in cited, key


@pytest.mark.parametrize("notebook", CHAPTERS, ids=lambda p: p.stem)
def test_every_figure_has_a_caption_and_alt_text(notebook):
    """myst-nb reads a cell's ``mystnb.figure.caption`` and ``mystnb.image.alt``. It applies
    them to every rich output of the cell, so a figure cell must not also end in a table (the
    table would get the figure's caption): the table goes in the next cell."""
    for cell in json.loads(notebook.read_text())["cells"]:
        if cell["cell_type"] != "code" or not any("image/png" in o.get("data", {}) for o in cell["outputs"]):
            continue
        options = cell["metadata"].get("mystnb", {})
        where = f"{notebook.name}, cell {cell.get('id')}"
        assert options.get("figure", {}).get("caption", "").strip(), f"{where}: figure without a caption"
        assert options.get("image", {}).get("alt", "").strip(), f"{where}: figure without alt text"
        assert not any(o["output_type"] == "execute_result" for o in cell["outputs"]), f"{where}: a table beside the figure"
