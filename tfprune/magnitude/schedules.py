"""Pruning schedules: at which training step to update masks, and to what sparsity.

Zhu & Gupta's gradual magnitude pruning ("To prune, or not to prune", 2017)
raises the sparsity of every pruned weight from an initial to a final value
along a polynomial, updating the masks every `frequency` steps. The schedules
are plain Python objects evaluated outside the training graph (by
`tfprune.callbacks.UpdatePruningStep` or `tfprune.magnitude.update_pruning_step`),
and they serialize with the model that uses them.
"""

import keras

__all__ = ["ConstantSparsity", "PolynomialDecay", "PruningSchedule"]


def _check_sparsity(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(
            f"`{name}` must be a number in [0, 1) (the share of weights set to zero). "
            f"Received: {name}={value!r}"
        )
    return float(value)


def _check_step(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}. Received: {name}={value!r}")
    return value


@keras.saving.register_keras_serializable(package="tfprune")
class PruningSchedule:
    """Base class of pruning schedules: when to prune, and how much.

    A schedule prunes at step `begin_step`, then every `frequency` steps, and
    at `end_step` itself, until `end_step` (inclusive; `-1` means forever).
    Subclasses implement `sparsity(step)`; `__call__(step)` returns
    `(should_prune, sparsity)` like TensorFlow Model Optimization's schedules.

    Args:
        begin_step: Int. First step at which masks are updated. Defaults to `0`.
        end_step: Int. Last step at which masks are updated, or `-1` for no
            end. Defaults to `-1`.
        frequency: Int. Number of steps between two mask updates. Defaults to `100`.

    Raises:
        ValueError: If a step is negative, `end_step` is before `begin_step`,
            or `frequency` is smaller than 1.

    Example:

    >>> import tfprune
    >>> schedule = tfprune.ConstantSparsity(0.5, begin_step=10, frequency=5)
    >>> schedule(10), schedule(12), schedule(15)
    ((True, 0.5), (False, 0.5), (True, 0.5))
    """

    def __init__(self, begin_step=0, end_step=-1, frequency=100):
        self.begin_step = _check_step("begin_step", begin_step, 0)
        self.end_step = _check_step("end_step", end_step, -1)
        self.frequency = _check_step("frequency", frequency, 1)
        if end_step != -1 and end_step < begin_step:
            raise ValueError(
                "`end_step` must be -1 (no end) or at least `begin_step`; pass a later end_step. "
                f"Received: begin_step={begin_step}, end_step={end_step}"
            )

    def should_prune(self, step):
        """Returns whether masks are updated at `step`.

        Args:
            step: Int. The training step (0 for the first batch).

        Returns:
            Bool.

        Example:

        >>> import tfprune
        >>> tfprune.ConstantSparsity(0.5, begin_step=0, end_step=250).should_prune(250)
        True
        """
        if step < self.begin_step or (self.end_step != -1 and step > self.end_step):
            return False
        return (step - self.begin_step) % self.frequency == 0 or step == self.end_step

    def sparsity(self, step):
        """Returns the target sparsity at `step` (subclasses implement it).

        Args:
            step: Int. The training step.

        Returns:
            Float in [0, 1).

        Raises:
            NotImplementedError: Always, in the base class.

        Example:

        >>> import tfprune
        >>> tfprune.ConstantSparsity(0.8).sparsity(3)
        0.8
        """
        raise NotImplementedError(f"{type(self).__name__} must implement `sparsity(step)`.")

    def __call__(self, step):
        return self.should_prune(step), self.sparsity(step)

    def get_config(self):
        """Returns the arguments of the schedule as a dict.

        Returns:
            Dict that `from_config` accepts.

        Example:

        >>> import tfprune
        >>> tfprune.ConstantSparsity(0.5).get_config()["target_sparsity"]
        0.5
        """
        return {
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
        }

    @classmethod
    def from_config(cls, config):
        """Creates a schedule from `get_config()`'s dict.

        Args:
            config: Dict.

        Returns:
            A schedule of this class.

        Example:

        >>> import tfprune
        >>> schedule = tfprune.ConstantSparsity(0.5)
        >>> type(schedule).from_config(schedule.get_config()).target_sparsity
        0.5
        """
        return cls(**config)

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __repr__(self):
        arguments = ", ".join(f"{key}={value!r}" for key, value in self.get_config().items())
        return f"{type(self).__name__}({arguments})"


@keras.saving.register_keras_serializable(package="tfprune")
class ConstantSparsity(PruningSchedule):
    """Prunes to one fixed sparsity at every pruning step.

    Args:
        target_sparsity: Float in [0, 1). Share of each pruned weight set to zero.
        begin_step: Int. First step at which masks are updated. Defaults to `0`.
        end_step: Int. Last step at which masks are updated, or `-1` for no
            end. Defaults to `-1`.
        frequency: Int. Number of steps between two mask updates. Defaults to `100`.

    Raises:
        ValueError: If `target_sparsity` is outside [0, 1) or a step argument is invalid.

    Example:

    >>> import tfprune
    >>> tfprune.ConstantSparsity(0.75, begin_step=100)(100)
    (True, 0.75)
    """

    def __init__(self, target_sparsity, begin_step=0, end_step=-1, frequency=100):
        super().__init__(begin_step=begin_step, end_step=end_step, frequency=frequency)
        self.target_sparsity = _check_sparsity("target_sparsity", target_sparsity)

    def sparsity(self, step):
        return self.target_sparsity

    def get_config(self):
        return {"target_sparsity": self.target_sparsity, **super().get_config()}


@keras.saving.register_keras_serializable(package="tfprune")
class PolynomialDecay(PruningSchedule):
    """Gradual magnitude pruning (Zhu & Gupta 2017): sparsity rises along a polynomial.

    At step `t` the target sparsity is
    `final + (initial - final) * (1 - p) ** power` with
    `p = clip((t - begin_step) / (end_step - begin_step), 0, 1)`, so pruning is
    fast at first and slows down as the network has fewer weights left. Masks
    are updated every `frequency` steps from `begin_step` and at `end_step`,
    so the final sparsity is always reached.

    Args:
        initial_sparsity: Float in [0, 1). Sparsity at `begin_step`.
        final_sparsity: Float in [0, 1). Sparsity from `end_step` on.
        begin_step: Int. First step at which masks are updated.
        end_step: Int. Step at which `final_sparsity` is reached; must be
            later than `begin_step`.
        power: Number. Exponent of the polynomial; `1` is linear. Defaults to `3`.
        frequency: Int. Number of steps between two mask updates. Defaults to `100`.

    Raises:
        ValueError: If a sparsity is outside [0, 1), `end_step <= begin_step`,
            `power` is not positive or `frequency` is smaller than 1.

    Example:

    >>> import tfprune
    >>> schedule = tfprune.PolynomialDecay(0.0, 0.9, begin_step=0, end_step=100, power=1)
    >>> schedule.sparsity(50), schedule.sparsity(500)
    (0.45, 0.9)
    """

    def __init__(
        self, initial_sparsity, final_sparsity, begin_step, end_step, power=3, frequency=100
    ):
        super().__init__(begin_step=begin_step, end_step=end_step, frequency=frequency)
        self.initial_sparsity = _check_sparsity("initial_sparsity", initial_sparsity)
        self.final_sparsity = _check_sparsity("final_sparsity", final_sparsity)
        if end_step <= begin_step:
            raise ValueError(
                "`end_step` of PolynomialDecay must be later than `begin_step`; pass a later "
                f"end_step. Received: begin_step={begin_step}, end_step={end_step}"
            )
        if isinstance(power, bool) or not isinstance(power, (int, float)) or power <= 0:
            raise ValueError(f"`power` must be a positive number such as 3. Received: power={power!r}")
        self.power = power

    def sparsity(self, step):
        progress = (step - self.begin_step) / (self.end_step - self.begin_step)
        progress = min(1.0, max(0.0, progress))
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (
            1.0 - progress
        ) ** self.power

    def get_config(self):
        return {
            "initial_sparsity": self.initial_sparsity,
            "final_sparsity": self.final_sparsity,
            "power": self.power,
            **super().get_config(),
        }
