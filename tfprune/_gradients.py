"""Gradients of a loss with respect to chosen variables, on the current Keras backend (not public API).

`keras.ops` has no gradient operation: each backend differentiates its own
way, as Keras's own trainers do. `loss_gradients` hides that for the
data-driven criteria that need first-order information (`"taylor"`): the
TensorFlow tape, `jax.grad` over a `keras.StatelessScope`, or PyTorch's
autograd. Non-trainable variables are differentiated as well (a frozen
layer's weights still have a gradient); no variable is changed.
"""

import keras
import numpy as np

from tfprune._optional import require_tensorflow


def loss_gradients(loss, variables):
    """Returns `d loss() / d variable` for each variable, as float64 NumPy arrays.

    Args:
        loss: Callable with no arguments returning a scalar tensor; it reads
            the variables (e.g. by calling the model).
        variables: List of `keras.Variable`.

    Returns:
        Tuple `(value, gradients)`: the loss as a float and a list with one
        float64 NumPy array per variable, or None for a variable the loss
        does not read (TensorFlow and PyTorch; JAX gives zeros).

    Raises:
        NotImplementedError: On a backend other than TensorFlow, JAX or PyTorch.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        tf = require_tensorflow("Gradients on the TensorFlow backend")

        values = [variable.value for variable in variables]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(values)
            value = loss()
        gradients = tape.gradient(value, values)
    elif backend == "jax":
        import jax

        def stateless(values):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return loss()

        value, gradients = jax.value_and_grad(stateless)([variable.value for variable in variables])
    elif backend == "torch":
        import torch

        values = [variable.value for variable in variables]
        required = [tensor.requires_grad for tensor in values]
        try:
            for tensor in values:
                tensor.requires_grad_(True)
            with torch.enable_grad():
                value = loss()
                gradients = torch.autograd.grad(value, values, allow_unused=True)
        finally:
            for tensor, flag in zip(values, required):
                tensor.requires_grad_(flag)
        value = value.detach()
        gradients = [None if gradient is None else gradient.detach() for gradient in gradients]
    else:
        raise NotImplementedError(f"tfprune computes no gradients on the {backend!r} backend.")
    arrays = [
        None if gradient is None else np.asarray(keras.ops.convert_to_numpy(gradient), "float64")
        for gradient in gradients
    ]
    return float(keras.ops.convert_to_numpy(value)), arrays
