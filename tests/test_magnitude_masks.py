"""Tests for the mask patterns against NumPy references, and for check_m_by_n."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfprune.magnitude import block_mask, count_m_by_n_violations, m_by_n_mask, magnitude_mask


def _numpy(tensor):
    return np.asarray(tensor)


@settings(max_examples=25, deadline=None)
@given(
    shape=st.sampled_from([(7,), (3, 5), (2, 3, 4), (3, 3, 2, 4)]),
    sparsity=st.floats(0.0, 0.99),
    seed=st.integers(0, 2**16),
)
def test_magnitude_mask_zeroes_exactly_the_smallest(shape, sparsity, seed):
    weight = np.random.default_rng(seed).normal(size=shape).astype("float32")
    mask = _numpy(magnitude_mask(weight, sparsity))
    assert mask.shape == shape and set(np.unique(mask)) <= {0.0, 1.0}
    assert abs(np.sum(mask == 0) - sparsity * weight.size) <= 1
    kept, pruned = np.abs(weight[mask == 1]), np.abs(weight[mask == 0])
    if kept.size and pruned.size:
        assert kept.min() >= pruned.max()


def _block_scores_reference(matrix, block_size, pooling):
    """Per-tile avg or max of |w| over a 2-D matrix, edge tiles over their real weights."""
    rows, columns = block_size
    tiles = {}
    for row in range(0, matrix.shape[0], rows):
        for column in range(0, matrix.shape[1], columns):
            tile = np.abs(matrix[row : row + rows, column : column + columns])
            tiles[(row, column)] = tile.mean() if pooling == "avg" else tile.max()
    return tiles


@pytest.mark.parametrize("pooling", ["avg", "max"])
@pytest.mark.parametrize(("shape", "block_size"), [((8, 6), (2, 3)), ((5, 7), (2, 3)), ((6, 4), (1, 4))])
def test_block_mask_prunes_whole_tiles_with_the_smallest_scores(shape, block_size, pooling):
    weight = np.random.default_rng(0).normal(size=shape).astype("float32")
    mask = _numpy(block_mask(weight, 0.5, block_size, pooling))
    scores = _block_scores_reference(weight, block_size, pooling)
    rows, columns = block_size
    pruned_scores, kept_scores = [], []
    for (row, column), score in scores.items():
        tile = mask[row : row + rows, column : column + columns]
        assert np.all(tile == tile.flat[0]), "a tile is partly pruned"
        (kept_scores if tile.flat[0] == 1 else pruned_scores).append(score)
    assert len(pruned_scores) == int(np.floor(0.5 * len(scores) + 0.5))
    assert min(kept_scores) >= max(pruned_scores) - 1e-7


def test_block_mask_on_a_convolution_kernel_tiles_each_kernel_position():
    weight = np.random.default_rng(1).normal(size=(3, 3, 4, 8)).astype("float32")
    mask = _numpy(block_mask(weight, 0.75, (4, 2), "avg"))
    tiles = mask.reshape(3, 3, 1, 4, 4, 2)  # (kh, kw, tile row, 4 inputs, tile column, 2 outputs)
    assert np.all(tiles == tiles[:, :, :, :1, :, :1])
    assert np.sum(tiles[:, :, :, 0, :, 0] == 0) == 27  # 0.75 of the 36 tiles


@pytest.mark.parametrize("shape", [(8, 3), (3, 3, 12, 5), (3, 6, 2), (6, 4)])
def test_m_by_n_mask_keeps_the_two_largest_of_every_four_input_channels(shape):
    weight = np.random.default_rng(2).normal(size=shape).astype("float32")
    mask = _numpy(m_by_n_mask(weight, 2, 4))
    # NumPy reference: runs of 4 along axis -2, last run may be shorter.
    runs_weight = np.moveaxis(weight, -2, -1)
    runs_mask = np.moveaxis(mask, -2, -1)
    inputs = runs_weight.shape[-1]
    for start in range(0, inputs, 4):
        magnitudes = np.abs(runs_weight[..., start : start + 4]).reshape(-1, min(4, inputs - start))
        kept = runs_mask[..., start : start + 4].reshape(magnitudes.shape)
        expected = np.zeros_like(kept)
        order = np.argsort(-magnitudes, axis=-1)[:, :2]
        np.put_along_axis(expected, order, 1.0, axis=-1)
        np.testing.assert_array_equal(kept, expected)
    runs, violations = count_m_by_n_violations(weight * mask, 2, 4)
    assert violations == 0 and runs == np.prod(shape[:-2]) * shape[-1] * -(-shape[-2] // 4)


def test_count_m_by_n_violations_on_a_dense_kernel():
    weight = np.arange(1.0, 25.0).reshape(8, 3)  # no zero: every run of 4 has 4 non-zeros
    assert count_m_by_n_violations(weight, 2, 4) == (6, 6)
    weight[0:2, 0] = 0.0  # column 0, first run: now 2 non-zeros
    assert count_m_by_n_violations(weight, 2, 4) == (6, 5)
    assert count_m_by_n_violations(weight, 4, 4) == (6, 0)


def test_masks_refuse_vectors():
    with pytest.raises(ValueError, match=r"at least 2 axes.*shape=\(5,\)"):
        block_mask(np.ones(5), 0.5, (1, 2))
    with pytest.raises(ValueError, match="Received: block_pooling='median'"):
        block_mask(np.ones((4, 4)), 0.5, (2, 2), "median")
