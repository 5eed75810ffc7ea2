import numpy as np
import pytest

from medseg_course import postprocessing as post


def blobs():
    mask = np.zeros((12, 12), np.uint8)
    mask[1:7, 1:7] = 1  # 36 pixels, with a hole
    mask[3, 3] = 0
    mask[9:11, 9:11] = 1  # 4 pixels
    mask[10, 1] = 1  # 1 pixel
    return mask


def test_binarize():
    np.testing.assert_array_equal(post.binarize(np.array([0.2, 0.5, 0.9]), 0.5), [0, 1, 1])


def test_remove_small_components():
    out = post.remove_small_components(blobs(), min_size=4)
    assert out.sum() == 35 + 4 and out[10, 1] == 0
    assert post.remove_small_components(blobs(), min_size=5).sum() == 35


def test_fill_holes_and_largest():
    assert post.fill_holes(blobs()).sum() == blobs().sum() + 1
    largest = post.keep_largest_component(blobs())
    assert largest.sum() == 35 and largest[9, 9] == 0
    assert post.keep_largest_component(np.zeros((4, 4))).sum() == 0


def test_connectivity():
    diagonal = np.eye(4, dtype=np.uint8)
    assert post.keep_largest_component(diagonal, connectivity=2).sum() == 4
    assert post.keep_largest_component(diagonal, connectivity=1).sum() == 1


def test_smooth_edges_removes_spur_keeps_square():
    mask = np.zeros((20, 20), np.uint8)
    mask[5:15, 5:15] = 1
    mask[10, 15:18] = 1  # a one-pixel spur
    out = post.smooth_edges(mask, radius=1)
    assert out[10, 16] == 0 and out[6:14, 6:14].all()
    np.testing.assert_array_equal(post.smooth_edges(mask, 0), mask)


def test_input_is_not_modified_and_channel_kept():
    mask = blobs()[..., None]
    before = mask.copy()
    out = post.fill_holes(mask)
    np.testing.assert_array_equal(mask, before)
    assert out.shape == mask.shape and out.dtype == mask.dtype


def test_postprocess_pipeline():
    probs = np.stack([blobs() * 0.9, blobs() * 0.3])[..., None].astype("float32")
    out = post.postprocess(probs, threshold=0.5, min_size=5, fill=True)
    assert out.shape == probs.shape and out.dtype == np.uint8
    assert out[0].sum() == 36 and out[1].sum() == 0


def test_argmax_labels():
    probs = np.array([[[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]]])
    np.testing.assert_array_equal(post.argmax_labels(probs), [[1, 0]])
    with pytest.raises(ValueError, match="binarize"):
        post.argmax_labels(np.zeros((2, 2, 1)))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: post.fill_holes(np.full((4, 4), 0.5)), "binary"),
        (lambda: post.fill_holes(np.zeros((2, 4, 4))), "one 2D mask"),
        (lambda: post.remove_small_components(np.zeros((4, 4)), min_size=-1), "min_size"),
        (lambda: post.keep_largest_component(np.zeros((4, 4)), connectivity=3), "connectivity"),
        (lambda: post.binarize(np.zeros(3), threshold=1.5), "threshold"),
        (lambda: post.postprocess(np.zeros((1, 4, 4, 3))), "one foreground channel"),
    ],
)
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_keep_largest_structure_keeps_touching_labels_together_in_3d():
    labels = np.zeros((8, 10, 12), np.uint8)
    labels[2:6, 2:6, 2:5] = 1
    labels[2:6, 2:6, 5:9] = 2  # touches label 1: one structure of two parts
    labels[0, 9, 11] = 2  # a stray voxel
    labels[7, 0:2, 0:2] = 1  # a small separate blob
    kept = post.keep_largest_structure(labels)
    expected = labels.copy()
    expected[0, 9, 11] = 0
    expected[7, 0:2, 0:2] = 0
    np.testing.assert_array_equal(kept, expected)
    assert kept.dtype == labels.dtype
    np.testing.assert_array_equal(post.keep_largest_structure(np.zeros((4, 4), np.uint8)), 0)
