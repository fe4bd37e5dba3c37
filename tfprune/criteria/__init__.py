"""Channel importance criteria for structured pruning, in a registry.

`tfprune.criteria.get(name)` returns a criterion, `register(name, fn)` adds
one. A criterion maps `(model, graph, data=None, seed=None)` to
`{group_name: scores}`, one score per channel (higher is more important); see
`tfprune.criteria.base` for the rule that combines the layers of a group.
"""

from tfprune.criteria.base import available, from_layer_scores, get, register
from tfprune.criteria.magnitude import (
    bn_gamma,
    filter_sparsity,
    l1,
    l2,
    random,
    sparsity,
    sparsity_gamma,
    str_zero_filters,
)

__all__ = [
    "available",
    "bn_gamma",
    "filter_sparsity",
    "from_layer_scores",
    "get",
    "l1",
    "l2",
    "random",
    "register",
    "sparsity",
    "sparsity_gamma",
    "str_zero_filters",
]
