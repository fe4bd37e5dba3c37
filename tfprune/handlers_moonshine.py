"""keras-hub's Moonshine: its attention layers copied as a subclass a functional graph can record."""

import keras

from tfprune import _first_use, _utils
from tfprune._keras import hub
from tfprune.handlers_attention import _MultiHeadAttention

__all__ = ["recordable_moonshine_attention"]


_MOONSHINE_ATTENTION = (
    hub.model_module("moonshine.moonshine_multi_head_attention"),
    "MoonshineMultiHeadAttention",
)
_RECORDABLE = {}  # the class made by `recordable_moonshine_attention`, once made


def recordable_moonshine_attention():
    """tfprune's subclass of keras-hub's `MoonshineMultiHeadAttention`, which a functional graph can record.

    Moonshine's blocks call their attention layers with a `rotary_embedding`
    (and a `cache`), which Keras's `MultiHeadAttention.compute_output_spec`
    refuses, so a block could not be inlined: it stayed whole and neither its
    heads nor its MLP units pruned. `tfprune.graph.flatten` copies the
    attention layers as this class (same weights, same `call`), whose output
    spec takes those arguments; its config also keeps `attention_bias`,
    `attention_dropout`, `use_causal_mask` and `apply_rotary_embedding`,
    which keras-hub's own does not write. Its heads prune as a
    `MultiHeadAttention`'s do. Made and registered for serialization
    (package `tfprune`) on first use, so that importing tfprune does not
    import keras-hub.

    Returns:
        The class, or None when keras-hub (or Moonshine) is not installed.

    Example:

    >>> recordable_moonshine_attention().__name__  # doctest: +SKIP
    'MoonshineMultiHeadAttention'
    """
    module, name = _MOONSHINE_ATTENTION
    try:
        return _first_use.subclass(_RECORDABLE, name, module, _Recordable, __name__,
                                   handler=_RecordableAttention, doc=_Recordable.__doc__)  # fmt: skip
    except ImportError:
        return None


class _Recordable:
    """tfprune's subclass of keras-hub's `MoonshineMultiHeadAttention`, which a functional graph can record."""

    def compute_output_spec(self, query, value, key=None, rotary_embedding=None, attention_mask=None, cache=None,
                            cache_update_index=None, training=None, **kwargs):  # fmt: skip
        output = super().compute_output_spec(query, value, key, attention_mask=attention_mask)
        return (
            output if cache is None else (output, keras.KerasTensor(cache.shape, dtype=cache.dtype))
        )

    def get_config(self):
        return {**super().get_config(), "attention_bias": self.attention_bias,
                "attention_dropout": self.attention_dropout, "use_causal_mask": self.use_causal_mask,
                "apply_rotary_embedding": self.apply_rotary_embedding}  # fmt: skip


class _RecordableAttention(_MultiHeadAttention):
    """Moonshine's attention layers: heads as a `MultiHeadAttention`'s, copied as `recordable_moonshine_attention`."""

    def copy(self, layer):
        """A copy of `layer` (built, same weights) as tfprune's recordable class (`tfprune.graph.flatten`)."""
        cls = recordable_moonshine_attention()
        if type(layer) is cls:
            return None  # its own config loads back
        copy = cls.from_config({**layer.get_config(), "attention_bias": layer.attention_bias,
                                "attention_dropout": layer.attention_dropout, "use_causal_mask": layer.use_causal_mask,
                                "apply_rotary_embedding": layer.apply_rotary_embedding})  # fmt: skip
        _utils._build_like(copy, layer)
        copy.set_weights(layer.get_weights())
        return copy


# A `.keras` file names the class `tfprune>MoonshineMultiHeadAttention`: this stand-in, registered
# under that name when tfprune is imported, makes the real class when such a file is loaded.
_DeferredMoonshineAttention = _first_use.register_stand_in(
    "MoonshineMultiHeadAttention", lambda name: recordable_moonshine_attention()
)
