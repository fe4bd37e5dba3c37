"""What a layer reads on calibration data, folded into its Hessian `XᵀX` (not public API).

One-shot pruning needs, for each layer, the Gram matrix `H = XᵀX` of the
rows `X` it multiplies its kernel with (`KernelView.rows`). The layer's
`call` is wrapped while the model runs on the calibration batches; each
call's rows are added to `H` (float64) and dropped, so memory holds one
batch's rows and one `(inputs, inputs)` matrix, never the activations of
the whole data or of other layers. Once the layer has read its last input
of a forward pass the pass is stopped: layers after it are not run.
Positions that a batch's `padding_mask` (keras-hub's input name) marks as
padding are left out.
"""

import contextlib

import numpy as np

from tfprune._features import padding_mask


class _ForwardStopped(BaseException):
    """Ends a forward pass once the calibrated layer has read all its inputs.

    A BaseException: Keras re-raises an Exception from a layer's call as a new
    object with its arguments in the message, and models may catch Exceptions.
    """


@contextlib.contextmanager
def _intercepted(layer, on_call):
    """Calls `on_call(inputs)` before each call of `layer` while the block runs."""
    own = layer.__dict__.get("call")  # a call already set on the instance
    original = layer.call

    def call(inputs, *args, **kwargs):
        on_call(inputs)
        return original(inputs, *args, **kwargs)

    # Layer.__setattr__ would track the function; an instance attribute shadows the method.
    object.__setattr__(layer, "call", call)
    try:
        yield
    finally:
        if own is None:
            object.__delattr__(layer, "call")
        else:
            object.__setattr__(layer, "call", own)


def call_order(model, layers, batch):
    """The layers in the order `model` first calls them on `batch`, and how often each is called.

    Args:
        model: A Keras model.
        layers: The layers to follow.
        batch: One input batch (an array or a dict of arrays).

    Returns:
        Tuple `(order, calls)`: the layers `model` called, first call first
        (a topological order of the graph, nested layers included), and
        `{id(layer): calls per forward pass}`.
    """
    order, calls = [], {}

    def recorder(layer):
        def record(inputs):
            if id(layer) not in calls:
                order.append(layer)
            calls[id(layer)] = calls.get(id(layer), 0) + 1

        return record

    with contextlib.ExitStack() as stack:
        for layer in layers:
            stack.enter_context(_intercepted(layer, recorder(layer)))
        model(batch, training=False)
    return order, calls


def hessian(model, view, batches, calls):
    """`XᵀX` (float64) of the rows `view.layer` reads while `model` runs on `batches`.

    Args:
        model: The model holding the layer (already pruned before it).
        view: The layer's `KernelView`.
        batches: List of input batches.
        calls: Int. How many times the layer is called per forward pass.

    Returns:
        Tuple `(hessian, rows)`: the `(inputs, inputs)` matrix and the number
        of rows summed into it.
    """
    size = view.matrix().shape[0]
    state = {"hessian": np.zeros((size, size)), "rows": 0, "calls": 0, "mask": None}

    def add(inputs):
        rows, leading = view.rows(inputs)
        mask = state["mask"]
        if mask is not None and tuple(leading) == mask.shape:
            rows = rows[mask.reshape(-1)]
        state["hessian"] += rows.T @ rows
        state["rows"] += len(rows)
        state["calls"] += 1
        if state["calls"] == calls:
            raise _ForwardStopped()

    with _intercepted(view.layer, add):
        for batch in batches:
            state["calls"], state["mask"] = 0, padding_mask(batch)
            try:
                model(batch, training=False)
            except _ForwardStopped:
                pass
    return state["hessian"], state["rows"]
