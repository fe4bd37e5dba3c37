"""Gradients for tests of backend-neutral code, computed by the current Keras backend.

The library uses only `keras.ops`; its tests check gradients the same way on
TensorFlow and JAX (and PyTorch), so no test reaches for `tf.GradientTape`.
"""

import os

import keras
import numpy as np
import pytest

# Finite differences at a step of 1e-6 need float64, which JAX only computes with
# JAX_ENABLE_X64 set; the float32 closed-form gradient tests cover those layers there.
needs_float64 = pytest.mark.skipif(
    keras.backend.backend() == "jax" and os.environ.get("JAX_ENABLE_X64", "") not in ("1", "true", "True"),
    reason="float64 finite differences: JAX computes in float32 unless JAX_ENABLE_X64=1",
)


def gradients(loss, variables):
    """Returns d loss() / d variable for each variable, as NumPy arrays.

    Args:
        loss: Callable with no arguments returning a scalar tensor; it reads
            the variables (e.g. by calling a layer).
        variables: List of `keras.Variable`.

    Returns:
        List of NumPy arrays, one per variable.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            value = loss()
        return [np.asarray(gradient) for gradient in tape.gradient(value, [v.value for v in variables])]
    if backend == "jax":
        import jax

        def stateless(values):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return loss()

        return [np.asarray(gradient) for gradient in jax.grad(stateless)([v.value for v in variables])]
    if backend == "torch":
        import torch

        values = [v.value for v in variables]
        return [gradient.detach().cpu().numpy() for gradient in torch.autograd.grad(loss(), values)]
    raise NotImplementedError(f"No gradient helper for the {backend} backend.")
