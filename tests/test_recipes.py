"""mc.recipes.RecipeTrainer: one compiled model per architecture, re-initialised per run."""

import numpy as np
import pytest

import medseg_course as mc


@pytest.fixture(scope="module")
def phantoms(tf_setup):
    return mc.data.make_phantoms(8, image_size=32, seed=0)


def test_same_seed_same_model_and_one_compile(phantoms):
    x, y = phantoms
    trainer = mc.recipes.RecipeTrainer(32, base_filters=4, batch_size=4)
    first, history = trainer.train(x, y, seed=0, depth=2, steps=3, copy=True)
    second, _ = trainer.train(x, y, seed=0, depth=2, steps=3, copy=True)
    assert set(history) >= {"loss", "dice"}
    for a, b in zip(first.get_weights(), second.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # re-initialised under the seed: the same run again
    other, _ = trainer.train(x, y, seed=1, depth=2, steps=3)
    assert other is trainer.compiled(depth=2)  # without copy: the shared compiled model
    assert any(not np.array_equal(a, b) for a, b in zip(first.get_weights(), other.get_weights(), strict=True))
    trainer.train(x, y, seed=0, depth=2, epochs=1, validation=(x, y))
    assert len(trainer._compiled) == 1  # one architecture, compiled once


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one of steps and epochs"),
        ({"steps": 2, "epochs": 1}, "exactly one of steps and epochs"),
        ({"steps": 0}, "steps"),
        ({"steps": 1, "seed": -1}, "seed"),
    ],
)
def test_bad_arguments(phantoms, kwargs, match):
    x, y = phantoms
    trainer = mc.recipes.RecipeTrainer(32, base_filters=4)
    kwargs.setdefault("seed", 0)
    with pytest.raises(ValueError, match=match):
        trainer.train(x, y, **kwargs)
    with pytest.raises(ValueError, match=r"images must have shape \(N, 48, 48, 1\)"):
        mc.recipes.RecipeTrainer(48).train(x, y, seed=0, steps=1)
    with pytest.raises(ValueError, match="image_size"):
        mc.recipes.RecipeTrainer(0)
