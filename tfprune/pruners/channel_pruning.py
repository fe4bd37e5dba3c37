"""`ChannelPruning`: He et al.'s (ICCV 2017) reconstruction-based channel pruning.

Group by group in graph order: the channels of a group are chosen by LASSO so
that its consumers' outputs are reconstructed (`tfprune.criteria.reconstruction`),
the group is cut to its target width, and the consumers' kernels are refit
by least squares on the kept channels. As in the paper, the inputs come from
the model pruned so far and the targets are the ORIGINAL model's outputs, so
each step also corrects the error of the steps before it.
"""

import math

import keras
import numpy as np

from tfprune import _features, surgery
from tfprune import graph as graph_module
from tfprune._utils import require_graph_model
from tfprune.analysis import analyze
from tfprune.criteria.reconstruction import (
    flat_kernel,
    group_scores,
    moments,
    reconstructable_consumers,
    sampled_inputs,
)

# `prune`'s argument checks and target selection, shared so that `targets`
# means the same thing here.
from tfprune.pruning import GroupWidth, PruneResult, _check_arguments, _targeted_groups


class ChannelPruning:
    """Prunes channels by LASSO selection and least-squares reconstruction (He et al.).

    Every targeted group that has a reconstructable consumer (a `Conv2D` or
    `Dense` reading only its channels) loses `rate` of its channels, one group
    at a time; after each cut the consumers are refit so that their outputs
    match the original model's on the data (METHODS.md §5). Consumers whose
    own output width changed in the same cut (a squeeze-excite bottleneck under
    MobileNetV3's keep-ratio rule) are sliced but not refit. The result is
    usually accurate before any fine-tuning.

    Args:
        rate: Float in [0, 1). Share of each targeted group's channels to remove.
            Defaults to `0.5`.
        targets: `"all"`, `"expansion"` or a callable `ChannelGroup -> bool`,
            as in `tfprune.prune`. With `"expansion"`, squeeze-excite
            bottlenecks keep MobileNetV3's ratio. Defaults to `"all"`.
        min_channels: Int. A group never keeps fewer. Defaults to `1`.
        refit: Bool. Refit the consumers by least squares. Defaults to `True`.
        num_batches: Int. Batches of data used. Defaults to `5`.
        batch_size: Int. Batch size when the data is an array. Defaults to `128`.
        positions_per_example: Int. Output positions sampled per example
            (the paper samples 10). Defaults to `10`.
        seed: Optional int for the sampled positions. Defaults to 0.
        verbose: Int. 1 shows a progress bar over the groups. Defaults to `1`.

    Raises:
        ValueError: If an argument is out of range.

    Example:

    >>> # pruner = tfprune.pruners.ChannelPruning(rate=0.5, targets="expansion")
    >>> # small, result = pruner.prune(model, x_train)
    >>> # small.compile(...); small.evaluate(x_test, y_test)   # before any fine-tuning
    """

    def __init__(
        self,
        rate=0.5,
        targets="all",
        min_channels=1,
        refit=True,
        num_batches=5,
        batch_size=128,
        positions_per_example=10,
        seed=None,
        verbose=1,
    ):
        _check_arguments(rate, None, "group", targets, min_channels, None, 1, ())
        if (
            isinstance(positions_per_example, bool)
            or not isinstance(positions_per_example, int)
            or positions_per_example < 1
        ):
            raise ValueError(
                "`positions_per_example` must be an int >= 1. "
                f"Received: positions_per_example={positions_per_example!r}"
            )
        self.rate = rate
        self.targets = targets
        self.min_channels = min_channels
        self.refit = bool(refit)
        self.num_batches = num_batches
        self.batch_size = batch_size
        self.positions_per_example = positions_per_example
        self.seed = 0 if seed is None else int(seed)
        self.verbose = verbose

    def _moments(self, model, names, batches, targets=None):
        return moments(model, names, batches, self.seed, self.positions_per_example, targets)

    def prune(self, model, data):
        """Returns the pruned model with refit consumers and a `PruneResult`.

        Args:
            model: A built Sequential or functional single-input `keras.Model`. Not modified.
            data: A `tf.data.Dataset` of batches (`x` or `(x, y)`), an array of
                inputs or an `(x, y)` tuple of arrays.

        Returns:
            Tuple `(pruned_model, PruneResult)`; groups without a
            reconstructable consumer are listed in `result.skipped`.

        Raises:
            TypeError: If `model` is not a graph model or `data` is not a dataset or array.
            ValueError: If `data` is missing or empty or has the wrong input shape.

        Example:

        >>> # small, result = tfprune.pruners.ChannelPruning(rate=0.5).prune(model, x_train)
        """
        require_graph_model(model, "tfprune.pruners.ChannelPruning.prune")
        batches = _features.input_batches(
            model, data, self.num_batches, self.batch_size, "tfprune.pruners.ChannelPruning"
        )
        graph = graph_module.build(model)
        targeted = _targeted_groups(model, graph, self.targets, ignore=())
        consumers = {group.name: reconstructable_consumers(model, group) for group in targeted}
        groups = [group for group in targeted if consumers[group.name]]
        names = [name for group in groups for name, _ in consumers[group.name]]
        # The original outputs (without bias) at the sampled positions: the targets of every step.
        original_outputs = {
            (layer.name, batch_index): rows @ flat_kernel(layer)
            for layer, batch_index, rows in sampled_inputs(
                model, names, batches, self.seed, self.positions_per_example
            )
        }
        se_policy = "keep_ratio" if self.targets == "expansion" else None
        current, records = model, []
        progress = keras.utils.Progbar(len(groups), verbose=self.verbose, unit_name="group")
        for group in groups:
            layer_names = [name for name, _ in consumers[group.name]]
            requested = group.size - math.floor(self.rate * group.size + 0.5)  # rounds halves up
            width = max(min(self.min_channels, group.size), requested)
            records.append(GroupWidth(group.name, group.size, width, width > requested))
            if width < group.size:
                current_group = graph_module.build(current)[group.name]
                scores = group_scores(
                    current,
                    current_group,
                    self._moments(current, layer_names, batches, original_outputs),
                )
                current = surgery.set_widths(
                    current, {group.name: width}, {group.name: scores}, se_policy
                )
                if self.refit:
                    self._refit(current, layer_names, batches, original_outputs)
            progress.add(1)
        before, after = analyze(model), analyze(current)
        result = PruneResult(
            criterion="reconstruction",
            rate=self.rate,
            scope="group",
            threshold=None,
            groups=tuple(records),
            skipped=tuple(group.name for group in targeted if not consumers[group.name]),
            params_before=before.params,
            params_after=after.params,
            macs_before=before.macs,
            macs_after=after.macs,
        )
        return current, result

    def _refit(self, model, layer_names, batches, original_outputs):
        """Least-squares kernels of the consumers on the kept channels (in place, on our copy)."""
        units = {name: original_outputs[(name, 0)].shape[-1] for name in layer_names}
        refit_names = [
            name for name in layer_names if model.get_layer(name).kernel.shape[-1] == units[name]
        ]
        if not refit_names:
            return
        for name, (gram, cross, _) in self._moments(
            model, refit_names, batches, original_outputs
        ).items():
            layer = model.get_layer(name)
            kernel = np.linalg.lstsq(gram, cross, rcond=None)[0]
            layer.kernel.assign(kernel.reshape(layer.kernel.shape).astype(layer.kernel.dtype))
