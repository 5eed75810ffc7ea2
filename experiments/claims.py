"""The comparative claims of chapters 5, 6, 8, 10, 13 and 14, computed from the committed records.

    python experiments/claims.py           # print the table
    python experiments/claims.py --write   # rewrite the table in experiments/README.md

Each row: the chapter and cell that state and assert the claim, the claim, the paired
difference over the committed seeds with its 95 % t interval, n, and the verdict the chapter
asserts. tests/test_stats.py checks that the README's table is this script's output.
"""

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).parent
README = HERE / "README.md"
BEGIN, END = "<!-- claims: begin (python experiments/claims.py --write) -->", "<!-- claims: end -->"


def _lab(c):
    lost = lambda shift, model: c[f"lab {shift} 0 {model}"] - c[f"lab {shift} 3 {model}"]  # noqa: E731
    curve = lambda n, aug: c[f"curve {n} {'augmentation' if aug else 'no augmentation'}"]  # noqa: E731
    gain = lambda n: curve(n, True) - curve(n, False)  # noqa: E731
    at3 = pd.DataFrame({s: c[f"lab {s} 3 baseline"] for s in ("noise", "blur", "bias field", "contrast", "resolution")})
    rows = [
        ("6", "wrong pixels within 2 px of the boundary, minus the reference share (points)",
         c["errors near (%)"] - c["reference near (%)"]),
        ("8", "per-lesion Dice, small minus large third", c["small Dice"] - c["large Dice"]),
        ("8", "predicted / true area, small minus large third",
         c["small predicted / true area"] - c["large predicted / true area"]),
        ("8", "predicted / true area of the small third, minus 1", c["small predicted / true area"] - 1),
        ("12", "baseline: worst of blur, bias field, resolution minus better of contrast, noise (Dice at severity 3)",
         at3[["blur", "bias field", "resolution"]].min(axis=1) - at3[["contrast", "noise"]].max(axis=1)),
    ]
    for shift in ("noise", "blur", "bias field", "contrast", "resolution"):
        rows.append(("12", f"{shift}: Dice the baseline loses from severity 0 to 3", lost(shift, "baseline")))
    for model in ("preprocessing", "augmentation"):
        for shift in ("noise", "blur", "bias field", "contrast", "resolution"):
            rows.append(("12", f"{shift}: {model}'s loss minus the baseline's", lost(shift, model) - lost(shift, "baseline")))
    rows += [
        ("17", "learning curve without augmentation, 4 -> 16 images", curve(16, False) - curve(4, False)),
        ("17", "learning curve without augmentation, 16 -> 64 images", curve(64, False) - curve(16, False)),
        ("17", "first quadrupling's gain minus the second's",
         (curve(16, False) - curve(4, False)) - (curve(64, False) - curve(16, False))),
        ("17", "augmentation gain with 4 images", gain(4)),
        ("17", "augmentation gain with 16 images", gain(16)),
        ("17", "augmentation gain with 64 images", gain(64)),
        ("17", "augmentation gain with 4 images minus with 16", gain(4) - gain(16)),
        ("19", "errors among the 5 % most uncertain pixels: MC dropout minus plain probability (points)",
         c["MC dropout caught (%)"] - c["plain probability caught (%)"]),
        ("19", "errors among the 5 % flagged pixels: MC dropout minus nearness to the predicted boundary (points)",
         c["MC dropout caught (%)"] - c["boundary distance caught (%)"]),
    ]
    return rows


def _recipes(c):
    wide = c.pivot(index="seed", columns="recipe", values="Dice")
    noisy = c.pivot(index="seed", columns="recipe", values="Dice, 2x noise")
    base = c[c.recipe == "baseline"].set_index("seed")
    rows = [("13", "baseline: errors within 2 px of the boundary, minus the reference share (points)",
             base["errors within 2 px of the boundary (%)"] - base["reference within 2 px (%)"]),
            ("13", "baseline: Dice lost when the noise doubles", base["Dice"] - base["Dice, 2x noise"])]
    for recipe in ("4x more data", "Dice + CE loss", "augmentation", "deeper network"):
        rows.append(("18", f"{recipe}: Dice gain over the baseline", wide[recipe] - wide["baseline"]))
    for recipe in ("4x more data", "Dice + CE loss", "augmentation", "deeper network"):
        rows.append(("18", f"{recipe}: gain under doubled noise", noisy[recipe] - noisy["baseline"]))
    return rows


def _losses(c):
    dice = c.pivot(index="seed", columns="loss", values="Dice")
    aware = ["weighted BCE", "soft Dice", "Dice + BCE", "Tversky"]
    rows = [("21", f"Dice, focal minus {name}", dice["focal"] - dice[name]) for name in aware]
    rows += [("21", f"Dice, {a} minus {b}", dice[a] - dice[b]) for i, a in enumerate(aware) for b in aware[i + 1:]]
    rows += [("25", f"Dice, {name} minus BCE", dice[name] - dice["BCE"]) for name in aware]
    return rows


def _leakage(c):
    copy = c.pivot(index="seed", columns="split", values="copy-nearest Dice")
    unet = c.pivot(index="seed", columns="split", values="U-Net Dice")
    return [("23", "copying the nearest training slice: Dice, slice-wise minus slab split", copy["slice-wise"] - copy["slab"]),
            ("23", "U-Net: Dice, slice-wise minus slab split", unet["slice-wise"] - unet["slab"]),
            ("23", "slice-wise split: U-Net minus copying", unet["slice-wise"] - copy["slice-wise"]),
            ("23", "slab split: U-Net minus copying", unet["slab"] - copy["slab"])]


def _models(c):
    wide = {v: c.pivot(index="seed", columns="model", values=v)
            for v in ("Dice", "surface Dice @1 px", "HD95 (px)", "edge sharpness")}
    rows = [("19", f"U-Net minus the article's model: {v}", wide[v]["U-Net"] - wide[v]["article's encoder-decoder"])
            for v in ("Dice", "surface Dice @1 px", "HD95 (px)")]
    rows += [("22", f"U-Net minus the same U-Net without skips: {v}", wide[v]["U-Net"] - wide[v]["U-Net without skips"])
             for v in ("edge sharpness", "surface Dice @1 px", "Dice")]
    rows.append(("22", "U-Net minus the article's model: edge sharpness",
                 wide["edge sharpness"]["U-Net"] - wide["edge sharpness"]["article's encoder-decoder"]))
    return rows


def _scanner(c):
    def value(augmentation, condition, column):
        return c[(c.augmentation == augmentation) & (c.condition == condition)].set_index("seed")[column]

    def gain(condition, column):
        return value("+ scanner", condition, column) - value("default", condition, column)

    return [("16", "default augmentation: grey-matter Dice, strong shift minus test slabs",
             value("default", "strong shift", "grey matter") - value("default", "test slabs", "grey matter")),
            ("16", "scanner minus default augmentation: grey-matter Dice, moderate shift",
             gain("moderate shift", "grey matter")),
            ("16", "scanner minus default augmentation: grey-matter Dice, strong shift", gain("strong shift", "grey matter")),
            ("16", "scanner minus default augmentation: pooled white-matter Dice, strong shift",
             gain("strong shift", "white matter (slabs pooled)")),
            ("16", "scanner minus default augmentation: pooled white-matter Dice, test slabs",
             gain("test slabs", "white matter (slabs pooled)")),
            ("16", "scanner minus default augmentation: brain Dice, test slabs", gain("test slabs", "brain"))]


def _brain(c):
    wide = {v: c.pivot(index="seed", columns="method", values=v) for v in ("brain Dice", "HD95 (mm)")}
    return [("8", f"brain extraction, U-Net minus random forest: {v}",
             wide[v]["U-Net"] - wide[v]["random forest, 20 features"]) for v in ("brain Dice", "HD95 (mm)")]


def table():
    sys.path.insert(0, str(HERE.parent))
    from medseg_course import stats  # noqa: PLC0415

    lines = ["| chapter, cell | claim (paired difference over seeds) | mean | 95 % interval | n | verdict |",
             "| --- | --- | --- | --- | --- | --- |"]
    for chapter, name, rows_of in (("05", "losses", _losses), ("06", "leakage", _leakage), ("08", "models", _models),
                                   ("10", "scanner", _scanner), ("13", "lesion_lab", _lab),
                                   ("14", "brain_methods", _brain), ("14", "recipes", _recipes)):
        records = json.loads((HERE / "results" / f"{name}.json").read_text())["records"]
        frame = pd.DataFrame(records)
        frame = frame.set_index("seed") if name == "lesion_lab" else frame
        for cell, claim, values in rows_of(frame):
            iv = stats.paired_interval(values.to_numpy())
            lines.append(f"| {chapter}, {cell} | {claim} | {iv.mean:+.3f} | [{iv.low:+.3f}, {iv.high:+.3f}] | "
                         f"{iv.n} | {iv.verdict} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite the table in experiments/README.md")
    args = parser.parse_args(argv)
    text = table()
    if not args.write:
        print(text, end="")
        return 0
    readme = README.read_text()
    if BEGIN not in readme or END not in readme:
        print(f"claims.py: {README} lacks the markers {BEGIN} ... {END}; add them where the table goes",
              file=sys.stderr)
        return 2
    head, rest = readme.split(BEGIN, 1)
    README.write_text(head + BEGIN + "\n" + text + END + rest.split(END, 1)[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
