"""A model's inputs by name, and the data `to_tflite` feeds them.

An input is named by its key when the model takes a dict (keras-hub's text
models: `token_ids`, `padding_mask`, `segment_ids`), otherwise by its
`keras.Input` layer's name. The `.tflite` file's signature uses the same
names (a character a TensorFlow signature refuses becomes `_`), and data are
matched to inputs by these names, never by position: only a list given for a
model's inputs is read in `model.inputs` order.

Data are held as a list of *batches*: dicts name -> NumPy array whose arrays
have the same number of samples. A NumPy array or a dict is one batch; a
`tf.data.Dataset` whose elements change shape (text padded per batch to its
longest sequence) gives one batch per run of elements of the same shapes, so
that every batch can be stacked and run at once.
"""

import dataclasses
import re

import keras
import numpy as np

from tfprune._keras.functional import input_name
from tfprune._optional import is_tf_dataset

__all__ = ["ModelInput", "as_batches", "model_inputs", "random_batch"]


# Characters a TensorFlow signature name may hold (`[A-Za-z0-9_.\-/]`, not first `_-/`).
_SIGNATURE_CHARACTER = re.compile(r"[^A-Za-z0-9_.\-/]")


@dataclasses.dataclass(frozen=True)
class ModelInput:
    """One input of a model.

    Args:
        name: String. The dict key the model is called with, or the name of
            its `keras.Input` layer.
        signature_name: String. The input's name in the `.tflite` signature.
        shape: Tuple. The input's shape, batch axis first, None for unknown
            sizes.
        dtype: String. The input's dtype, e.g. "float32" or "int32".

    Example:

    >>> import keras
    >>> from tfprune.export.inputs import model_inputs
    >>> inputs = keras.Input((3,), name="pixels")
    >>> model_inputs(keras.Model(inputs, keras.layers.Dense(2)(inputs)))[0]
    ModelInput(name='pixels', signature_name='pixels', shape=(None, 3), dtype='float32')
    """

    name: str
    signature_name: str
    shape: tuple
    dtype: str


def model_inputs(model):
    """The inputs of a model, by the names data are matched to them with.

    An input is named by its key when the model is called with a dict,
    otherwise by its `keras.Input` layer's name. Its signature name is that
    name with every character a TensorFlow signature refuses replaced by
    `_` (and `_` appended until it differs from the ones before).

    Args:
        model: A built Sequential or functional Keras model.

    Returns:
        A list of `ModelInput`, in `model.inputs` order.

    Raises:
        ValueError: If two inputs have the same name, so that data could not
            be matched to them.

    Example:

    >>> ids = keras.Input((None,), dtype="int32", name="token ids")
    >>> model = keras.Model(ids, keras.layers.Embedding(10, 4)(ids))
    >>> model_inputs(model)
    [ModelInput(name='token ids', signature_name='token_ids', shape=(None, None), dtype='int32')]
    """
    structure = _input_structure(model)
    named_by_key = isinstance(structure, dict)
    inputs, signature_names = [], set()
    for path, tensor in keras.tree.flatten_with_path(structure):
        if named_by_key and len(path) == 1:
            name = str(path[0])
        else:
            name = input_name(tensor)
        signature_name = _SIGNATURE_CHARACTER.sub("_", name).lstrip("_-/") or "input"
        while signature_name in signature_names:
            signature_name += "_"
        signature_names.add(signature_name)
        inputs.append(ModelInput(name, signature_name, tuple(tensor.shape), str(tensor.dtype)))
    names = [model_input.name for model_input in inputs]
    if len(set(names)) != len(names):
        raise ValueError(
            f"The inputs of model '{model.name}' do not have distinct names, so data cannot be "
            f"matched to them; name each keras.Input. Received: inputs named {names}"
        )
    return inputs


def _input_structure(model):
    """The structure (tensor, list or dict of input tensors) `model` is called with."""
    if isinstance(model, keras.Sequential):
        return model.inputs[0]
    return model.input


def _call_arguments(structure, inputs, batch):
    """Packs the arrays of `batch` (a dict name -> array) into the model's input structure."""
    return keras.tree.pack_sequence_as(structure, [batch[model_input.name] for model_input in inputs])


def _describe(inputs):
    """`'token_ids' (None, None) int32, ...` for error messages."""
    return ", ".join(f"'{item.name}' {item.shape} {item.dtype}" for item in inputs)


def as_batches(data, inputs, argument, limit):
    """`data` as a list of batches (dicts name -> array) for `inputs`.

    Each array is converted to its input's dtype. The elements of a
    `tf.data.Dataset` are grouped into one batch per run of elements of the
    same shapes.

    Args:
        data: A NumPy array (one-input models), a dict name -> array, a list
            or tuple of arrays in `model.inputs` order (several inputs), or a
            `tf.data.Dataset` of such elements, batched or not, or of
            `(inputs, labels)` tuples.
        inputs: List of `ModelInput`, from `model_inputs`.
        argument: String. The argument's name in error messages.
        limit: Int. At most this many samples are kept.

    Returns:
        A list of dicts input name -> array, the arrays of each dict with the
        same number of samples, `limit` samples at most in all.

    Raises:
        TypeError: If `data` is not one of the above, or does not hold one
            array per input.
        ValueError: If a dict's keys are not the inputs' names, an array
            does not have its input's shape or holds no sample, the inputs'
            arrays have different numbers of samples, or a dataset is empty.

    Example:

    >>> inputs = [ModelInput("image", "image", (None, 2, 2), "float32")]
    >>> [batch["image"].shape for batch in as_batches(np.zeros((5, 2, 2)), inputs, "data", 3)]
    [(3, 2, 2)]
    >>> as_batches(np.zeros((5, 3)), inputs, "data", 3)
    Traceback (most recent call last):
    ...
    ValueError: `data` must hold at least one sample of input 'image' of shape (None, 2, 2) (samples first). Received: data with shape (5, 3)
    """
    if is_tf_dataset(data):
        batches = _dataset_batches(data, inputs, argument, limit)
    else:
        batches = [_checked(_named_arrays(data, inputs, argument), inputs, argument)]
    kept, count = [], 0
    for batch in batches:
        size = min(len(next(iter(batch.values()))), limit - count)
        kept.append({name: values[:size] for name, values in batch.items()})
        count += size
        if count >= limit:
            break
    return kept


def _sample_count(batches):
    """The number of samples in a list of batches (dicts name -> array)."""
    return sum(len(next(iter(batch.values()))) for batch in batches)


def _named_arrays(data, inputs, argument):
    """`data` as a dict name -> array, before any shape check."""
    names = [model_input.name for model_input in inputs]
    if isinstance(data, dict):
        missing = [name for name in names if name not in data]
        extra = sorted(str(key) for key in data if key not in names)
        if missing or extra:
            problem = f"no array for {missing}" if missing else f"keys that name no input: {extra}"
            raise ValueError(
                f"`{argument}` must map each input name of the model to an array: {names}; it has "
                f"{problem}. Received: {argument} with keys {sorted(str(key) for key in data)}"
            )
        values = [data[name] for name in names]
    elif len(inputs) == 1:
        values = [data]
    elif isinstance(data, (list, tuple)) and len(data) == len(inputs):
        values = list(data)
    else:
        received = f"a {type(data).__name__} of length {len(data)}" if isinstance(data, (list, tuple)) \
            else f"an object of type {type(data).__name__}"  # fmt: skip
        raise TypeError(
            f"The model has {len(inputs)} inputs ({_describe(inputs)}); give `{argument}` as a dict "
            f"name -> array with one array per input (or a list in model.inputs order). "
            f"Received: {received}"
        )
    arrays = {}
    for model_input, value in zip(inputs, values):
        try:
            arrays[model_input.name] = np.asarray(value, dtype=model_input.dtype)
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"`{argument}` must hold NumPy arrays of inputs (samples first) or be a tf.data.Dataset. "
                f"Received: {argument} of type {type(data).__name__} ({error})"
            ) from None
    return arrays


def _checked(arrays, inputs, argument):
    for model_input in inputs:
        array = arrays[model_input.name]
        expected = model_input.shape
        fits = array.ndim == len(expected) and all(
            size is None or size == actual for size, actual in zip(expected[1:], array.shape[1:])
        )
        if not fits or len(array) == 0:
            received = argument if len(inputs) == 1 else f"{argument}['{model_input.name}']"
            raise ValueError(
                f"`{argument}` must hold at least one sample of input '{model_input.name}' of "
                f"shape {expected} (samples first). Received: {received} with shape {array.shape}"
            )
    counts = {name: len(array) for name, array in arrays.items()}
    if len(set(counts.values())) > 1:
        raise ValueError(
            f"`{argument}` must hold the same number of samples for every input. "
            f"Received: {argument} with sample counts {counts}"
        )
    return arrays


def _dataset_batches(dataset, inputs, argument, limit):
    batches, run, count = [], [], 0
    for element in dataset:
        if isinstance(element, tuple):
            element = element[0]  # (inputs, labels) or (inputs, labels, sample_weights), as fit takes
        arrays = {
            name: values[None] if values.ndim == len(model_input.shape) - 1 else values
            for model_input, (name, values) in zip(
                inputs, _named_arrays(element, inputs, argument).items()
            )
        }  # unbatched elements get a batch axis
        arrays = _checked(arrays, inputs, argument)
        if run and _shapes(run[-1]) != _shapes(arrays):
            batches.append(_concatenate(run))
            run = []
        run.append(arrays)
        count += len(next(iter(arrays.values())))
        if count >= limit:
            break
    if run:
        batches.append(_concatenate(run))
    if not batches:
        raise ValueError(f"`{argument}` is an empty tf.data.Dataset; give it at least one input.")
    return batches


def _shapes(batch):
    return {name: values.shape[1:] for name, values in batch.items()}


def _concatenate(run):
    return {name: np.concatenate([arrays[name] for arrays in run]) for name in run[0]}


def _unknown_sizes(inputs, shapes=None):
    """The `ModelInput`s whose sample shape (`shapes[name]` if given) has an unknown size."""
    shapes = shapes or {}
    return [item for item in inputs if None in shapes.get(item.name, item.shape[1:])]


def random_batch(inputs, count, shapes=None, seed=0):
    """Verification or calibration inputs that are valid for any model with these inputs.

    Inputs whose name contains "mask" (padding masks) and bool inputs are
    ones (True); other floats are uniform in [0, 1); uint8 inputs (image
    pixels) are uniform over 0..255; other integer inputs (token ids, segment ids) are zeros, the one
    value below every vocabulary size, which is not known from the model in
    general.

    Args:
        inputs: List of `ModelInput`, from `model_inputs`.
        count: Int. Samples per input.
        shapes: Optional dict name -> sample shape (without the batch axis)
            for inputs with unknown sizes.
        seed: Int. Seed of the random floats and pixels. Defaults to `0`.

    Returns:
        A dict name -> array (one batch).

    Raises:
        ValueError: If an input has a size other than the batch unknown and
            `shapes` gives none for it.

    Example:

    >>> inputs = [ModelInput("token_ids", "token_ids", (None, None), "int32"),
    ...           ModelInput("padding_mask", "padding_mask", (None, None), "bool")]
    >>> batch = random_batch(inputs, 2, shapes={"token_ids": (3,), "padding_mask": (3,)})
    >>> batch["token_ids"], batch["padding_mask"]
    (array([[0, 0, 0],
           [0, 0, 0]], dtype=int32), array([[ True,  True,  True],
           [ True,  True,  True]]))
    """
    shapes = shapes or {}
    unknown = _unknown_sizes(inputs, shapes)
    if unknown:
        raise ValueError(
            f"Random inputs need a size for every unknown axis but the batch; give `shapes` a "
            f"sample shape for {[item.name for item in unknown]}. Received: inputs "
            f"{_describe(inputs)} and shapes={shapes!r}"
        )
    random = np.random.default_rng(seed)
    batch = {}
    for model_input in inputs:
        shape = (count, *shapes.get(model_input.name, model_input.shape[1:]))
        dtype = np.dtype(model_input.dtype)
        if "mask" in model_input.name.lower() or dtype == np.bool_:
            values = np.ones(shape)
        elif np.issubdtype(dtype, np.floating):
            values = random.uniform(0.0, 1.0, size=shape)
        elif dtype == np.uint8:
            values = random.integers(0, 256, size=shape)
        else:
            values = np.zeros(shape)
        batch[model_input.name] = values.astype(dtype)
    return batch
