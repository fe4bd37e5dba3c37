"""`DropNet` (Tan & Motani, ICML 2020): iteratively drop the least active channels, retrain."""

from tfprune._utils import renamed_argument
from tfprune.pruning import prune

__all__ = ["DropNet"]


class DropNet:
    """Iterative pruning by mean post-activation value, with retraining between rounds.

    Each round removes `rate` of the remaining targeted channels with the
    lowest `tfprune.criteria.activation` score (per group or one global
    threshold), optionally gives the pruned network fresh weights (the paper
    shows pruned networks can be re-initialised and retrained), then trains it
    with `model.fit` (docs/METHODS.md §8). Use `step` to drive the loop yourself, or
    `fit` to run `rounds` of prune-then-fit with your `fit` arguments.

    Args:
        rate: Float in [0, 1). Share of the remaining channels removed per
            round (`rate` of `tfprune.prune`, applied each round). Defaults to `0.2`.
        scope: String. `"global"` (one threshold over all targeted channels)
            or `"group"` (every group loses `rate`). Defaults to `"global"`.
        targets: `"all"`, `"expansion"` or a callable `ChannelGroup -> bool`,
            as in `tfprune.prune`. Defaults to `"all"`.
        reinitialize: Bool. Give the pruned network fresh random weights each
            round. Defaults to `False`.
        min_channels: Int. A group never keeps fewer. Defaults to `1`.
        fraction: Deprecated name of `rate`; it still works, with a
            `DeprecationWarning`.

    Raises:
        ValueError: If an argument is out of range (checked by the first round).
        TypeError: If both `rate` and its old name `fraction` are given.

    Example:

    >>> # pruner = tfprune.pruners.DropNet(rate=0.3)
    >>> # small = pruner.fit(model, x_train, y_train, rounds=2, epochs=3, verbose=0)
    >>> # [result.params_after for result in pruner.results]
    """

    def __init__(
        self,
        rate=0.2,
        scope="global",
        targets="all",
        reinitialize=False,
        min_channels=1,
        fraction=None,
    ):
        rate = renamed_argument("tfprune.pruners.DropNet", "rate", rate, 0.2, "fraction", fraction)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            raise ValueError(f"`rate` must be a number in [0, 1), e.g. 0.2. Received: rate={rate!r}")
        self.rate = rate
        self.scope = scope
        self.targets = targets
        self.reinitialize = bool(reinitialize)
        self.min_channels = min_channels
        self.results = []
        self.histories = []

    def step(self, model, data):
        """Runs one pruning round (no training); returns `(pruned_model, PruneResult)`.

        Args:
            model: A built Sequential or functional single-input `keras.Model`. Not modified.
            data: Data to score the activations on: an array of inputs, an
                `(x, y)` tuple of arrays, or batches from a `tf.data.Dataset`,
                `keras.utils.PyDataset` or generator.

        Returns:
            Tuple `(pruned_model, PruneResult)`; the result is also appended to `self.results`.

        Raises:
            ValueError: If `data` is missing, empty or of the wrong shape.

        Example:

        >>> # small, result = tfprune.pruners.DropNet(rate=0.5).step(model, x_train)
        """
        pruned, result = prune(
            model,
            "activation",
            rate=self.rate,
            scope=self.scope,
            targets=self.targets,
            min_channels=self.min_channels,
            round_to=1,  # DropNet removes exactly its rate of the lowest-activity channels
            reinitialize=self.reinitialize,
            data=data,
        )
        self.results.append(result)
        return pruned, result

    def fit(self, model, x=None, y=None, rounds=1, score_data=None, **fit_kwargs):
        """Runs `rounds` of prune-then-`model.fit`; returns the last trained model.

        Every pruned model is compiled with the input model's compile
        configuration (a fresh optimizer) and trained with
        `pruned.fit(x, y, **fit_kwargs)`; the histories go to `self.histories`.

        Args:
            model: A built, compiled Sequential or functional `keras.Model`. Not modified.
            x: Training inputs or a `tf.data.Dataset`, as for `model.fit`.
            y: Optional targets, as for `model.fit`.
            rounds: Int >= 1. Number of prune-and-train rounds. Defaults to `1`.
            score_data: Optional data to score activations on; defaults to `x`.
            **fit_kwargs: Passed to `model.fit` (`epochs`, `batch_size`,
                `callbacks`, `validation_data`, ...).

        Returns:
            The pruned and trained `keras.Model`.

        Raises:
            ValueError: If `model` is not compiled or `rounds` is not an int >= 1.

        Example:

        >>> # small = tfprune.pruners.DropNet(0.3).fit(model, train_ds, rounds=3, epochs=2)
        """
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
            raise ValueError(f"`rounds` must be an int >= 1. Received: rounds={rounds!r}")
        compile_config = model.get_compile_config() if model.compiled else None
        if compile_config is None:
            raise ValueError(
                f"DropNet.fit retrains with the compile settings of the model, but model "
                f"'{model.name}' is not compiled; call model.compile(...) first or use DropNet.step."
            )
        for _ in range(rounds):
            model, _ = self.step(model, x if score_data is None else score_data)
            model.compile_from_config(compile_config)
            self.histories.append(model.fit(x, y, **fit_kwargs))
        return model
