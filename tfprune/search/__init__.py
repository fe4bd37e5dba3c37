"""Width search: how many channels each group keeps (docs/METHODS.md §7 and §9).

- `ABCPruner`: artificial bee colony over per-group kept fractions, fitness =
  accuracy after a short fine-tune (`bee_colony` is the optimiser alone).
- `DMCP`: differentiable Markov channel pruning trained with `model.fit`.
- `CostModel`: MACs or parameters as an exact function of group widths.
"""

from tfprune.search.bee_colony import ABCPruner, ColonyResult, bee_colony
from tfprune.search.cost import CostModel
from tfprune.search.dmcp import (
    DMCP,
    ExpectedCostPenalty,
    MarkovChannelGates,
    expected_width,
    keep_probabilities,
)
from tfprune.search.result import SearchResult

__all__ = [
    "ABCPruner",
    "ColonyResult",
    "CostModel",
    "DMCP",
    "ExpectedCostPenalty",
    "MarkovChannelGates",
    "SearchResult",
    "bee_colony",
    "expected_width",
    "keep_probabilities",
]
