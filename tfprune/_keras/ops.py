"""The classes behind `keras.ops` functions, which Keras does not export.

A functional graph records `keras.ops.matmul(a, b)` as an instance of a
class in `keras.src.ops.numpy`; tfprune recognises operations by these
classes (or by `(module, class name)` keys built here).
"""


__all__ = ["NN", "NUMPY", "CORE", "operation_class", "public_module"]

NUMPY = "keras.src.ops.numpy"
NN = "keras.src.ops.nn"
CORE = "keras.src.ops.core"
_PRIVATE_OPS = "keras.src.ops."


def operation_class(function, *args, **kwargs):
    """The class of the operation a `keras.ops` function records on symbolic inputs.

    Args:
        function: a `keras.ops` function.
        *args, **kwargs: symbolic arguments to call it with.

    Returns:
        A subclass of `keras.Operation`.

    Example:
        >>> import keras
        >>> operation_class(keras.ops.multiply, keras.KerasTensor((2,)), keras.KerasTensor((2,))).__name__
        'Multiply'
    """
    return type(function(*args, **kwargs)._keras_history.operation)


def public_module(module):
    """The public spelling of an operation's module (`keras.src.ops.nn` -> `keras.ops.nn`).

    Example:
        >>> public_module("keras.src.ops.numpy")
        'keras.ops.numpy'
    """
    return module.replace(_PRIVATE_OPS, "keras.ops.")
