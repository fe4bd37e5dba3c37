"""Pruners: algorithms that prune in several steps or change weights, not just scores.

- `ChannelPruning` (He et al.): LASSO channel selection and least-squares
  reconstruction of the next layer, group by group.
- `DropNet` (Tan & Motani): iterative removal of the least active channels
  with retraining in between.
"""

from tfprune.pruners.channel_pruning import ChannelPruning
from tfprune.pruners.dropnet import DropNet

__all__ = ["ChannelPruning", "DropNet"]
