"""The target form of `BNSparsity`: the controller of its strength, and its argument checks.

With `target`, the strength follows a quantile of the targeted scales to a
schedule: `share_quantile` measures it, `tracking_error` compares it with the
schedule and `adapt_strength` corrects the strength.
"""

import numpy as np

MODES = ("proximal", "subgradient")
PENALTIES = ("channel", "gamma")
TARGETS = ("all", "expansion")


def share_quantile(magnitudes, share):
    """Returns the `ceil(share * n)`-th smallest of `magnitudes`: below a threshold iff `share` of them are.

    Args:
        magnitudes: 1-D array of |γ|.
        share: Float in `(0, 1)`.

    Returns:
        Float (`0.0` for an empty array).

    Example:

    >>> import numpy as np
    >>> from tfprune.callbacks.bn_sparsity import share_quantile
    >>> share_quantile(np.array([0.3, 0.0, 1.0, 0.004]), 0.5)
    0.004
    """
    magnitudes = np.asarray(magnitudes, "float64").ravel()
    count = max(int(np.ceil(share * magnitudes.size - 1e-9)), 1)
    if magnitudes.size == 0:
        return 0.0
    return float(np.partition(magnitudes, count - 1)[count - 1])


def tracking_error(quantile, goal):
    """Returns the controller's error: `log2(quantile / goal)` clipped to `[-1, 1]`, and `0` at an exact zero.

    Positive when the scale at the target share is above where it should be
    (too few small scales: the strength must rise), negative below (the
    shrinking is ahead of the ramp: it slows down). The error saturates at a
    factor of 2 either way. An exact zero (the proximal step gives them) means
    the target share is reached: the strength is held, so that the zeroed
    channels stay zero (lowering it let a zeroed channel grow back to 0.01 in
    the tests); the channels above the share are not penalised, so holding
    it costs them nothing.

    Args:
        quantile: Non-negative float, from `share_quantile`.
        goal: Positive float. Where the quantile should be now.

    Returns:
        Float in `[-1, 1]`.

    Example:

    >>> from tfprune.callbacks.bn_sparsity import tracking_error
    >>> tracking_error(0.2, 0.1), tracking_error(0.0, 0.005), tracking_error(0.01, 0.1)
    (1.0, 0.0, -1.0)
    >>> round(tracking_error(0.12, 0.1), 4)
    0.263
    """
    if quantile <= 0.0:
        return 0.0
    return float(np.clip(np.log2(quantile / goal), -1.0, 1.0))


def adapt_strength(strength, error, gain, elapsed):
    """Returns the strength after one feedback step: `strength * exp(gain * error * elapsed)`.

    An integral controller in log space: the strength rises while the error
    is positive (too few small scales) and falls while it is negative, by a
    factor of at most `exp(gain)` per epoch, whatever the strength's scale.

    Args:
        strength: Positive float. The current strength.
        error: Float in `[-1, 1]`, from `tracking_error`.
        gain: Positive float. Log-strength change per epoch at full error.
        elapsed: Non-negative float. Epochs since the last step (`1 / steps_per_epoch` per batch).

    Returns:
        Positive float.

    Example:

    >>> from tfprune.callbacks.bn_sparsity import adapt_strength
    >>> round(adapt_strength(0.02, 1.0, 2.0, 0.5), 6)  # 0.02 * e
    0.054366
    """
    return float(strength * np.exp(gain * error * elapsed))


def check_arguments(
    l1,
    mode,
    penalty,
    targets,
    warmup_epochs,
    schedule,
    thresholds,
    target,
    target_threshold,
    ramp_epochs,
    gain,
):
    """Refuses `BNSparsity` arguments out of range (the messages name the argument).

    Raises:
        ValueError: For a value out of range.
        TypeError: For a `schedule` that is not callable.
    """
    if isinstance(l1, bool) or not isinstance(l1, (int, float)) or l1 < 0:
        raise ValueError(f"`l1` must be a non-negative number such as 0.02. Received: l1={l1!r}")
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}. Received: mode={mode!r}")
    if penalty not in PENALTIES:
        raise ValueError(f"`penalty` must be one of {PENALTIES}. Received: penalty={penalty!r}")
    if mode == "subgradient" and penalty != "gamma":
        raise ValueError(
            "`mode='subgradient'` is the Network Slimming L1 on γ: pass penalty='gamma' with it. "
            f"Received: penalty={penalty!r}"
        )
    if targets not in TARGETS and not callable(targets):
        raise ValueError(
            "`targets` must be 'all', 'expansion' or a callable `group -> bool`. "
            f"Received: targets={targets!r}"
        )
    if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or warmup_epochs < 0:
        raise ValueError(
            f"`warmup_epochs` must be a non-negative int. Received: warmup_epochs={warmup_epochs!r}"
        )
    if schedule is not None and not callable(schedule):
        raise TypeError(
            "`schedule` must be a callable `(epoch, l1) -> float` or None. "
            f"Received: schedule={schedule!r}"
        )
    if not thresholds or any(
        isinstance(t, bool) or not isinstance(t, (int, float)) or t <= 0 for t in thresholds
    ):
        raise ValueError(
            f"`thresholds` must be a non-empty tuple of positive numbers. Received: thresholds={thresholds!r}"
        )
    if target is not None:
        if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target < 1:
            raise ValueError(
                "`target` must be the share of the targeted γ to bring below `target_threshold`, strictly "
                f"between 0 and 1 (e.g. 0.5, the rate you will prune at), or None. Received: target={target!r}"
            )
        if mode != "proximal":
            raise ValueError(
                "`target` adapts the strength at every step, which only the proximal step follows: "
                f"use mode='proximal' with it. Received: mode={mode!r}"
            )
        if schedule is not None:
            raise ValueError(
                "`target` sets the strength itself: pass either `target` or `schedule`, not both. "
                f"Received: schedule={schedule!r}"
            )
        if l1 == 0:
            raise ValueError(
                "With `target`, `l1` is the starting strength and must be positive (the controller "
                f"multiplies it). Received: l1={l1!r}"
            )
    if (
        isinstance(target_threshold, bool)
        or not isinstance(target_threshold, (int, float))
        or not (target_threshold > 0)
    ):
        raise ValueError(
            f"`target_threshold` must be a positive number such as 0.01. Received: target_threshold={target_threshold!r}"
        )
    if ramp_epochs is not None and (
        isinstance(ramp_epochs, bool)
        or not isinstance(ramp_epochs, (int, float))
        or not ramp_epochs > 0
    ):
        raise ValueError(
            "`ramp_epochs` must be a positive number of epochs (or None for two thirds of the epochs "
            f"after the warm-up). Received: ramp_epochs={ramp_epochs!r}"
        )
    if isinstance(gain, bool) or not isinstance(gain, (int, float)) or not gain > 0:
        raise ValueError(f"`gain` must be a positive number such as 2.0. Received: gain={gain!r}")
