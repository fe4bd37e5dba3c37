"""One-shot pruning of one kernel matrix: magnitude, Wanda and SparseGPT.

Each function takes a kernel as an `(inputs, outputs)` matrix (Keras's
layout: `outputs = x @ weights`) and returns a copy with exact zeros, at a
`sparsity` or in an M:N pattern (`m_by_n=(2, 4)`: in every run of 4
consecutive inputs, at most 2 non-zeros per output, the runs restarting
every `channels` inputs as they do at each kernel position of a
convolution). `tfprune.oneshot.prune` applies them layer by layer.

- `magnitude`: the smallest |w| of the whole matrix (the layer-wise baseline);
  M:N keeps the largest |w| of each run, as `tfprune.magnitude.m_by_n_mask`.
- `wanda` (Sun et al. 2023): the score `|w_ij| * ||X_i||_2` (the norm of
  input `i` over the calibration rows) is compared per output: each output
  keeps its `(1 - sparsity) * inputs` best weights.
- `sparsegpt` (Frantar & Alistarh 2023): with `H = XᵀX + λI` (`λ` =
  `dampening` times the mean of its diagonal), the inputs are processed in
  blocks of `block_columns`; in each block the weights with the smallest
  `w² / [U]_ii²` (`U` the upper Cholesky factor of `H⁻¹`) are pruned and
  every pruned weight's error is spread over the inputs not yet processed
  with the optimal brain surgeon update `δ = -(w_i / U_ii) U_i,i:`; the
  block's error reaches the later blocks in one product (lazy batch update).
  M:N masks are chosen when a run begins, from the updated weights.
"""

import math

import keras
import numpy as np

from tfprune.magnitude.masks import m_by_n_mask, magnitude_mask

__all__ = ["magnitude", "reconstruction_error", "sparsegpt", "wanda"]


def _pruned_count(sparsity, size):
    # As tfprune.magnitude's masks round: exactly round(sparsity * size) zeros.
    return min(size, int(math.floor(sparsity * size + 0.5)))


def _m_by_n_keep(scores, m_by_n, channels):
    """Boolean `(inputs, outputs)` mask keeping the M largest scores of each run of N inputs."""
    inputs, outputs = scores.shape
    stacked = scores.reshape(inputs // channels, channels, outputs)
    mask = keras.ops.convert_to_numpy(m_by_n_mask(stacked.astype("float32"), *m_by_n))
    return mask.reshape(inputs, outputs) > 0


def _check_matrix(weights, channels):
    weights = np.array(weights, dtype="float64")
    if weights.ndim != 2:
        raise ValueError(
            f"`weights` must be an (inputs, outputs) matrix. Received: shape={weights.shape}"
        )
    channels = weights.shape[0] if channels is None else channels
    if weights.shape[0] % channels:
        raise ValueError(
            f"`channels` must divide the number of inputs {weights.shape[0]}. Received: channels={channels}"
        )
    return weights, channels


def magnitude(weights, sparsity=None, m_by_n=None, channels=None):
    """Zeroes the smallest-magnitude weights of a kernel matrix.

    Args:
        weights: Array `(inputs, outputs)`.
        sparsity: Float in [0, 1). Exactly `round(sparsity * size)` weights
            of the whole matrix become zero. Give this or `m_by_n`.
        m_by_n: Tuple `(m, n)`: each output keeps the `m` largest |w| of
            every run of `n` inputs.
        channels: Int. M:N runs restart every `channels` inputs. Defaults to
            all inputs.

    Returns:
        Float64 array of `weights`'s shape.

    Example:

    >>> import numpy as np
    >>> from tfprune.oneshot import magnitude
    >>> magnitude(np.array([[0.1, -3.0], [0.5, 2.0]]), sparsity=0.5).tolist()
    [[0.0, -3.0], [0.0, 2.0]]
    """
    weights, channels = _check_matrix(weights, channels)
    if m_by_n is not None:
        return np.where(_m_by_n_keep(np.abs(weights), m_by_n, channels), weights, 0.0)
    keep = keras.ops.convert_to_numpy(magnitude_mask(weights.astype("float32"), sparsity)) > 0
    return np.where(keep, weights, 0.0)


def wanda(weights, column_norms, sparsity=None, m_by_n=None, channels=None):
    """Wanda: zeroes the weights with the smallest `|w_ij| * ||X_i||`, per output.

    Args:
        weights: Array `(inputs, outputs)`.
        column_norms: Array `(inputs,)`: the L2 norm of each input over the
            calibration rows (`sqrt(diag(XᵀX))`).
        sparsity: Float in [0, 1). Each output loses `round(sparsity *
            inputs)` weights. Give this or `m_by_n`.
        m_by_n: Tuple `(m, n)`: each output keeps the `m` best scores of
            every run of `n` inputs.
        channels: Int. As in `magnitude`.

    Returns:
        A float64 copy of `weights` with the pruned weights zero.

    Example:

    >>> import numpy as np
    >>> from tfprune.oneshot import wanda
    >>> wanda(np.array([[1.0], [2.0]]), column_norms=np.array([10.0, 1.0]), sparsity=0.5).tolist()
    [[1.0], [0.0]]
    """
    weights, channels = _check_matrix(weights, channels)
    scores = np.abs(weights) * np.asarray(column_norms, "float64")[:, None]
    if m_by_n is not None:
        return np.where(_m_by_n_keep(scores, m_by_n, channels), weights, 0.0)
    pruned = _pruned_count(sparsity, weights.shape[0])
    weakest = np.argsort(scores, axis=0, kind="stable")[:pruned]
    keep = np.ones(weights.shape, bool)
    np.put_along_axis(keep, weakest, False, axis=0)
    return np.where(keep, weights, 0.0)


def _inverse_cholesky(hessian, dampening):
    """The upper Cholesky factor `U` of `(H + λI)⁻¹` (`H⁻¹ = UᵀU`), `λ = dampening * mean(diag(H))`."""
    hessian = hessian + dampening * np.mean(np.diag(hessian)) * np.eye(len(hessian))
    try:
        inverse = np.linalg.inv(np.linalg.cholesky(hessian))
        return np.linalg.cholesky(inverse.T @ inverse).T
    except np.linalg.LinAlgError:
        raise ValueError(
            "SparseGPT's Hessian XᵀX of the calibration inputs is singular; pass more calibration data "
            f"or a larger `dampening`. Received: dampening={dampening}"
        ) from None


def _blocks(inputs, block_columns, runs):
    """`(start, stop)` of each block of inputs; with M:N runs, blocks end where a run ends."""
    starts = sorted({start for start, _ in runs}) if runs else None
    blocks, start = [], 0
    while start < inputs:
        stop = min(start + block_columns, inputs)
        if starts is not None:
            stop = next((run_start for run_start in starts if run_start >= stop), inputs)
        blocks.append((start, stop))
        start = stop
    return blocks


def _runs(inputs, channels, n):
    """`(start, stop)` of each M:N run: `n` inputs, restarting every `channels` inputs."""
    return [(position + start, position + min(start + n, channels))
            for position in range(0, inputs, channels) for start in range(0, channels, n)]  # fmt: skip


def _smallest(scores, count):
    """Boolean mask of `scores`'s shape, True at its `count` smallest entries."""
    mask = np.zeros(scores.size, bool)
    if count > 0:
        mask[np.argpartition(scores.reshape(-1), count - 1)[:count]] = True
    return mask.reshape(scores.shape)


def sparsegpt(
    weights, hessian, sparsity=None, m_by_n=None, channels=None, block_columns=128, dampening=0.01
):
    """SparseGPT: prunes a kernel matrix and updates the weights left to reconstruct its outputs.

    Inputs whose calibration values are all zero (`H_ii = 0`) get zero
    weights, as in the paper's reference implementation.

    Args:
        weights: Array `(inputs, outputs)`.
        hessian: Array `(inputs, inputs)`: `XᵀX` of the calibration rows.
        sparsity: Float in [0, 1). In each block, `round(sparsity * block
            size)` weights become zero (over all outputs). Give this or `m_by_n`.
        m_by_n: Tuple `(m, n)`: each output keeps `m` weights of every run of
            `n` inputs.
        channels: Int. As in `magnitude`.
        block_columns: Int. Inputs per block (the paper's lazy batch and mask
            block size). Defaults to `128`.
        dampening: Float. `λ` added to the Hessian's diagonal, as a share of
            its mean. Defaults to `0.01`.

    Returns:
        Float64 array of `weights`'s shape.

    Raises:
        ValueError: If the dampened Hessian is not positive definite.

    Example:

    >>> import numpy as np
    >>> from tfprune.oneshot import sparsegpt
    >>> x = np.random.default_rng(0).normal(size=(64, 4))
    >>> pruned = sparsegpt(np.ones((4, 2)), x.T @ x, sparsity=0.5)
    >>> int(np.sum(pruned == 0))
    4
    """
    weights, channels = _check_matrix(weights, channels)
    rows = weights.T.copy()  # the paper's layout: one row per output
    hessian = np.array(hessian, dtype="float64")
    dead = np.diag(hessian) == 0
    hessian[dead, dead] = 1.0
    rows[:, dead] = 0.0
    factor = _inverse_cholesky(hessian, dampening)
    runs = _runs(len(hessian), channels, m_by_n[1]) if m_by_n is not None else []
    run_stops = dict(runs)
    for start, stop in _blocks(len(hessian), block_columns, runs):
        block = rows[:, start:stop].copy()
        errors = np.zeros_like(block)
        diagonal = np.diag(factor)[start:stop]
        pruned = np.zeros(block.shape, bool)
        if m_by_n is None:
            pruned = _smallest(block**2 / diagonal**2, _pruned_count(sparsity, block.size))
        for column in range(stop - start):
            run_stop = run_stops.get(start + column)
            if run_stop is not None:  # a run begins: its mask, from the weights as updated so far
                end = run_stop - start
                scores = block[:, column:end] ** 2 / diagonal[column:end] ** 2
                weakest = np.argsort(scores, axis=1, kind="stable")[
                    :, : max(end - column - m_by_n[0], 0)
                ]
                np.put_along_axis(pruned[:, column:end], weakest, True, axis=1)
            weight = block[:, column]
            kept = np.where(pruned[:, column], 0.0, weight)
            error = (weight - kept) / diagonal[column]
            block[:, column:] -= np.outer(error, factor[start + column, start + column : stop])
            block[:, column] = kept  # exactly zero where pruned
            errors[:, column] = error
        rows[:, start:stop] = block
        rows[:, stop:] -= errors @ factor[start:stop, stop:]
    return rows.T


def reconstruction_error(weights, pruned, hessian):
    """`||XW - XW'|| / ||XW||` over the calibration rows `X`, from `H = XᵀX`.

    Args:
        weights: Array `(inputs, outputs)`, the kernel before pruning.
        pruned: Array of the same shape, after.
        hessian: Array `(inputs, inputs)`: `XᵀX` (undampened).

    Returns:
        Float (0.0 when the outputs are all zero).

    Example:

    >>> import numpy as np
    >>> from tfprune.oneshot import reconstruction_error
    >>> reconstruction_error(np.array([[3.0], [4.0]]), np.array([[3.0], [0.0]]), np.eye(2))
    0.8
    """
    weights, pruned, hessian = (
        np.asarray(value, "float64") for value in (weights, pruned, hessian)
    )
    difference = weights - pruned
    total = float(np.sum(weights * (hessian @ weights)))
    lost = float(np.sum(difference * (hessian @ difference)))
    return math.sqrt(max(lost, 0.0) / total) if total > 0 else 0.0
