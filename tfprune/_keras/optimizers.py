"""The slots Keras optimizers keep per variable (moments, accumulators), which are private."""

__all__ = ["slot"]

_SLOTS = {
    "velocity": "_velocities",
    "u": "_u",
    "accumulator": "_accumulators",
    "momentum": "_momentums",
}


def slot(optimizer, variable, name):
    """One of an optimizer's per-variable slots for `variable`, or None when it has none.

    Args:
        optimizer: a built `keras.optimizers.Optimizer`.
        variable: a variable the optimizer updates.
        name: "velocity" (Adam's second moment, RMSprop's mean square),
            "momentum", "u" (Adamax) or "accumulator" (Adagrad).

    Returns:
        The slot variable, or None.

    Raises:
        ValueError: for another `name`.

    Example:
        >>> import keras
        >>> variable = keras.Variable([1.0, 2.0])
        >>> optimizer = keras.optimizers.Adam()
        >>> optimizer.build([variable])
        >>> tuple(slot(optimizer, variable, "velocity").shape), slot(optimizer, variable, "u")
        ((2,), None)
    """
    if name not in _SLOTS:
        raise ValueError(f"Unknown optimizer slot name={name!r}; use one of {sorted(_SLOTS)}.")
    slots = getattr(optimizer, _SLOTS[name], None)
    if not slots:
        return None
    return slots[optimizer._get_variable_index(variable)]
