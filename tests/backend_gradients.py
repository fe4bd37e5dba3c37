"""Gradients for tests of backend-neutral code, computed by the current Keras backend.

The library uses only `keras.ops`; its tests check gradients the same way on
TensorFlow and JAX (and PyTorch), so no test reaches for `tf.GradientTape`.
"""

import os

import keras
import pytest

from tfprune._gradients import loss_gradients

# Finite differences at a step of 1e-6 need float64, which JAX only computes with
# JAX_ENABLE_X64 set; the float32 closed-form gradient tests cover those layers there.
needs_float64 = pytest.mark.skipif(
    keras.backend.backend() == "jax" and os.environ.get("JAX_ENABLE_X64", "") not in ("1", "true", "True"),
    reason="float64 finite differences: JAX computes in float32 unless JAX_ENABLE_X64=1",
)


def gradients(loss, variables):
    """Returns d loss() / d variable for each variable, as NumPy arrays.

    The same per-backend code as the `"taylor"` criterion's
    (`tfprune._gradients`), whose own tests check it against finite differences.

    Args:
        loss: Callable with no arguments returning a scalar tensor; it reads
            the variables (e.g. by calling a layer).
        variables: List of `keras.Variable`.

    Returns:
        List of NumPy arrays, one per variable.
    """
    gradients = loss_gradients(loss, variables)[1]
    unread = [variable.path for variable, gradient in zip(variables, gradients) if gradient is None]
    assert not unread, f"the loss does not read {unread}"
    return gradients
