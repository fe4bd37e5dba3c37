"""Channel importance criteria for structured pruning, in a registry.

`tfprune.criteria.get(name)` returns a criterion, `register(name, fn)` adds
one. A criterion maps `(model, graph, data=None, seed=None)` to
`{group_name: scores}`, one score per channel (higher is more important); see
`tfprune.criteria.base` for the rule that combines the layers of a group.
"""

from tfprune.criteria.activation import activation
from tfprune.criteria.base import (
    available,
    comparable_across_groups,
    from_layer_scores,
    get,
    register,
)
from tfprune.criteria.hrank import hrank
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
from tfprune.criteria.reconstruction import reconstruction
from tfprune.criteria.taylor import taylor

__all__ = [
    "activation",
    "available",
    "bn_gamma",
    "comparable_across_groups",
    "filter_sparsity",
    "from_layer_scores",
    "get",
    "hrank",
    "l1",
    "l2",
    "random",
    "reconstruction",
    "register",
    "sparsity",
    "sparsity_gamma",
    "str_zero_filters",
    "taylor",
]
