"""`ChannelPruning`: He et al.'s (ICCV 2017) reconstruction-based channel pruning.

Group by group in graph order: the channels of a group are chosen by LASSO so
that its consumers' outputs are reconstructed (`tfprune.criteria.reconstruction`),
the group is cut to its target width, and the consumers' kernels are refit
by least squares on the kept channels. As in the paper, the inputs come from
the model pruned so far and the targets are the ORIGINAL model's outputs, so
each step also corrects the error of the steps before it.
"""

import keras
import numpy as np

from tfprune import _features, criteria, surgery
from tfprune import graph as graph_module
from tfprune._utils import check_verbose, require_graph_model
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
from tfprune.pruning import GroupWidth, PruneResult, _check_arguments, _floor, _targeted_groups

__all__ = ["ChannelPruning"]


class ChannelPruning:
    """Prunes channels by LASSO selection and least-squares reconstruction (He et al.).

    Every targeted group that has a reconstructable consumer (a `Conv2D` or
    `Dense` reading only its channels) loses `rate` of its channels, one group
    at a time; after each cut the consumers are refit so that their outputs
    match the original model's on the data (docs/METHODS.md §5), on the output
    channels they still have. The result is usually accurate before any
    fine-tuning.

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
        verbose: `"auto"` (1), 0, 1 or 2, as in Keras: 1 shows a progress bar
            over the groups. Defaults to `"auto"`.

    Raises:
        ValueError: If an argument (`verbose` included) is out of range.

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
        verbose="auto",
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
        self.verbose = check_verbose(verbose, "ChannelPruning")

    def _moments(self, model, names, batches, targets=None):
        return moments(model, names, batches, self.seed, self.positions_per_example, targets)

    def prune(self, model, data):
        """Returns the pruned model with refit consumers and a `PruneResult`.

        Args:
            model: A built Sequential or functional single-input `keras.Model`. Not modified.
            data: What `model.fit` accepts: an array of inputs, an `(x, y)`
                tuple of arrays, or batches (`x` or `(x, y)`) from a
                `tf.data.Dataset`, `keras.utils.PyDataset` or generator.

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
        current, records = model, []
        # Original output channels each layer still has, so that the targets of a
        # consumer whose own outputs were cut earlier keep only its remaining columns.
        self._kept_outputs = {}
        progress = keras.utils.Progbar(len(groups), verbose=self.verbose, unit_name="group")
        for group in groups:
            layer_names = [name for name, _ in consumers[group.name]]
            # Rounded down: a group never loses more than the rate.
            requested = group.size - _floor(self.rate * group.size)
            width = max(min(self.min_channels, group.size), requested)
            records.append(GroupWidth(group.name, group.size, width, width > requested))
            if width < group.size:
                targets = self._targets(original_outputs, layer_names)
                current_graph = graph_module.build(current)
                scores = group_scores(
                    current,
                    current_graph[group.name],
                    self._moments(current, layer_names, batches, targets),
                )
                current = self._cut(current, current_graph, group.name, scores, width)
                if self.refit:
                    targets = self._targets(original_outputs, layer_names)
                    self._refit(current, layer_names, batches, targets)
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
            uncounted_layers=tuple(dict.fromkeys(before.uncounted_layers + after.uncounted_layers)),
        )
        return current, result

    def _targets(self, original_outputs, layer_names):
        """The original outputs of `layer_names`, restricted to the columns that remain."""
        return {
            (name, batch_index): rows[:, self._kept_outputs.get(name, slice(None))]
            for (name, batch_index), rows in original_outputs.items()
            if name in layer_names
        }

    def _cut(self, model, graph, name, scores, width):
        """Removes the lowest-scored channels of group `name` (and of its SE bottleneck
        under the MobileNetV3 rule), recording which outputs each producer keeps."""
        removals = {name: np.sort(np.argsort(-scores, kind="stable")[width:])}
        if self.targets == "expansion":
            l1 = criteria.l1(model, graph)
            for group in graph.groups:
                if group.squeeze_excite_of == name:
                    keep = min(group.size, surgery.se_bottleneck_width(width))
                    removals[group.name] = np.sort(
                        np.argsort(-l1[group.name], kind="stable")[keep:]
                    )
        for group_name, removed in removals.items():
            removed = set(removed.tolist())
            for member in graph[group_name].members:
                if member.role != "output":
                    continue
                layer = model.get_layer(member.layer_name)
                kept = self._kept_outputs.get(layer.name, np.arange(layer.kernel.shape[-1]))
                gone = [p for p, c in zip(member.positions, member.channels) if c in removed]
                self._kept_outputs[layer.name] = np.delete(kept, gone)
        return surgery.remove_channels(model, removals)

    def _refit(self, model, layer_names, batches, targets):
        """Least-squares kernels of the consumers on the kept channels (in place, on our copy)."""
        for name, (gram, cross, _) in self._moments(model, layer_names, batches, targets).items():
            layer = model.get_layer(name)
            kernel = np.linalg.lstsq(gram, cross, rcond=None)[0]
            layer.kernel.assign(kernel.reshape(layer.kernel.shape).astype(layer.kernel.dtype))
