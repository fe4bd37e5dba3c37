"""`STRLowRankDense`: a factorised Dense kernel whose singular values are soft-thresholded."""

import keras
import numpy as np
from keras import ops

from tfprune.layers.str_base import SoftThresholdMixin

__all__ = ["STRLowRankDense"]


@keras.saving.register_keras_serializable(package="tfprune")
class STRLowRankDense(SoftThresholdMixin, keras.layers.Layer):
    """A Dense layer with kernel `U diag(σ_eff) V` whose rank is learned by STR.

    The structured STR of docs/METHODS.md §1 applied to singular values, as the
    paper does for RNN cells: the kernel is factorised as `U (input_dim, rank)`,
    `σ (rank,)`, `V (rank, units)`, and the forward pass uses
    `σ_eff = sign(σ) * relu(|σ| - g(s))` with one trainable `s` (default
    `g = exp`). Every `σ_eff` that reaches zero removes one rank, i.e.
    `input_dim + units` parameters. `U` and `V` are not constrained to be
    orthonormal, so `σ` are singular values only up to that scaling.

    Args:
        units: Positive int. Output dimension.
        rank: Positive int. Maximal rank of the kernel.
        activation: Activation function or name. Defaults to `None`.
        use_bias: Bool. Whether to add a bias. Defaults to `True`.
        factor_initializer: Initializer of `U` and `V`. Defaults to `"orthogonal"`.
        singular_value_initializer: Initializer of `σ`. Defaults to `"ones"`.
        bias_initializer: Initializer of the bias. Defaults to `"zeros"`.
        s_init: Float. Initial threshold parameter. Defaults to `-20.0`.
        threshold_fn: String. `"exp"` (the paper's choice here) or `"sigmoid"`.
            Defaults to `"exp"`.
        threshold_regularizer: Regularizer on `s` (see `STRMixin`). Defaults
            to `"default"` (`L2(5e-5)`).
        **kwargs: Base layer arguments (`name`, `dtype`, ...).

    Raises:
        ValueError: If `units` or `rank` is not a positive int, or an STR
            argument is invalid.

    Example:

    >>> import keras, tfprune
    >>> layer = tfprune.layers.STRLowRankDense(6, rank=3)
    >>> tuple(layer(keras.ops.ones((2, 4))).shape)
    (2, 6)
    >>> layer.effective_rank()
    3
    """

    def __init__(
        self,
        units,
        rank,
        activation=None,
        use_bias=True,
        factor_initializer="orthogonal",
        singular_value_initializer="ones",
        bias_initializer="zeros",
        s_init=-20.0,
        threshold_fn="exp",
        threshold_regularizer="default",
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, value in (("units", units), ("rank", rank)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"STRLowRankDense needs a positive int `{name}`. Received: {name}={value!r}"
                )
        self.units = units
        self.rank = rank
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.factor_initializer = keras.initializers.get(factor_initializer)
        self.singular_value_initializer = keras.initializers.get(singular_value_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self._init_threshold(s_init, threshold_fn, threshold_regularizer)

    def build(self, input_shape):
        input_dim = input_shape[-1]
        self.left_factor = self.add_weight(
            name="left_factor", shape=(input_dim, self.rank), initializer=self.factor_initializer
        )
        self.singular_values = self.add_weight(
            name="singular_values", shape=(self.rank,), initializer=self.singular_value_initializer
        )
        self.right_factor = self.add_weight(
            name="right_factor", shape=(self.rank, self.units), initializer=self.factor_initializer
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.units,), initializer=self.bias_initializer)
        self._add_threshold_parameter(())

    @property
    def effective_singular_values(self):
        """`σ_eff = sign(σ) * relu(|σ| - g(s))`, shape `(rank,)`."""
        threshold = ops.cast(self.threshold, self.singular_values.dtype)
        return ops.sign(self.singular_values) * ops.relu(ops.abs(self.singular_values) - threshold)

    @property
    def sparse_kernel(self):
        """The effective `(input_dim, units)` kernel `U diag(σ_eff) V`."""
        return ops.matmul(self.left_factor * self.effective_singular_values, self.right_factor)

    def call(self, inputs):
        outputs = ops.matmul(ops.matmul(inputs, self.left_factor) * self.effective_singular_values, self.right_factor)
        if self.use_bias:
            outputs = outputs + self.bias
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def effective_rank(self):
        """Returns the number of non-zero effective singular values.

        Returns:
            Int between 0 and `rank`.

        Example:

        >>> import tfprune
        >>> layer = tfprune.layers.STRLowRankDense(4, rank=2, s_init=1.0)
        >>> layer.build((None, 3))
        >>> layer.effective_rank()  # g(1) = e > 1 = every σ
        0
        """
        return int(np.count_nonzero(ops.convert_to_numpy(self.effective_singular_values)))

    def pruning_scores(self):
        """Returns `(|σ|, g(s), input_dim + units)`: each σ stands for one rank's parameters.

        Returns:
            Tuple `(scores, thresholds, weights_per_score)` as in
            `STRMixin.pruning_scores`.

        Example:

        >>> import tfprune
        >>> layer = tfprune.layers.STRLowRankDense(4, rank=2)
        >>> layer.build((None, 3))
        >>> layer.pruning_scores()[2]
        7
        """
        scores = np.abs(ops.convert_to_numpy(ops.cast(self.singular_values, "float32")))
        threshold = ops.convert_to_numpy(ops.cast(self.threshold, "float32"))
        return scores, threshold, self.left_factor.shape[0] + self.units

    def stripped_layer(self):
        """Returns a plain `keras.layers.Dense` with kernel `U diag(σ_eff) V` (strip protocol).

        Returns:
            A new, built `Dense` with the same name, activation and bias.

        Example:

        >>> import tfprune
        >>> layer = tfprune.layers.STRLowRankDense(4, rank=2, name="low_rank")
        >>> layer.build((None, 3))
        >>> plain = layer.stripped_layer()
        >>> type(plain).__name__, plain.name, tuple(plain.kernel.shape)
        ('Dense', 'low_rank', (3, 4))
        """
        plain = keras.layers.Dense(
            self.units,
            activation=self.activation,
            use_bias=self.use_bias,
            name=self.name,
            dtype=self.dtype_policy,
        )
        plain.build((None, self.left_factor.shape[0]))
        plain.kernel.assign(self.sparse_kernel)
        if self.use_bias:
            plain.bias.assign(np.array(self.bias.numpy()))  # a copy: on JAX, variables share buffers
        return plain

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "rank": self.rank,
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "factor_initializer": keras.initializers.serialize(self.factor_initializer),
                "singular_value_initializer": keras.initializers.serialize(self.singular_value_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        config.update(self._threshold_config())
        return config

