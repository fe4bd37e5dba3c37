"""ABCPruner (Lin et al., IJCAI 2020): width search with an artificial bee colony.

Pruning is treated as choosing how many channels each group keeps, from a
small set of kept fractions (10%, 20%, ..., 100%). The search itself is the
artificial bee colony algorithm (Karaboga), written here as a pure function
over integer vectors, `bee_colony(fitness, choices, ...)`:

- food sources: `colony_size` vectors, entry `d` an index into the `choices[d]`
  options of dimension `d`;
- employed bees: each source tries a neighbour (a few entries moved towards or
  away from a random other source, `x + phi * (x - x_partner)`, phi uniform in
  [-1, 1], rounded) and keeps it if it is fitter (greedy selection);
- onlooker bees: as many again, each picks a source with probability growing
  with its fitness and tries a neighbour of it;
- scout bee: a source that failed to improve more than `limit` times in a
  row is abandoned for a random vector.

A budget is a feasibility test on vectors; infeasible vectors are repaired by
lowering random entries until they pass (the test must be monotone: lowering
an entry of a feasible vector keeps it feasible, as MACs and parameter counts
are) and, with `fill=True` (ABCPruner), raised again one random entry at a
time while they stay feasible, so candidates use the budget rather than
landing anywhere below it. Fitness values are cached per vector, so a vector
is evaluated once.

`ABCPruner` wraps it for a model: the options are the candidate widths of each
channel group, fitness is the validation metric of the candidate after
`finetune_steps` steps of fine-tuning from the model's weights, and the
budget is a share of the model's MACs or parameters computed exactly with
`tfprune.search.cost.CostModel` before any candidate is trained.

Candidates are not rebuilt one by one: that would retrace the training step
for every candidate (tens of seconds each for MobileNetV3). Instead one copy
of the model gets binary `ChannelMasks` at the input of every layer reading
a searched group (`tfprune.search.gates`): a masked channel contributes
nothing forward and its weights get no gradient, so the masked copy trains
and predicts like the candidate that channel surgery builds (the highest-L1
channels of each group kept, by `set_widths` with the same scores), up to
float rounding and the random draws of dropout. Before each candidate the
copy's variables and optimizer state are restored, so candidates do not
influence each other. The best widths are then built by channel surgery.
"""

import dataclasses
import math

import keras
import numpy as np

from tfprune._utils import check_verbose, clone_graph
from tfprune.search.cost import check_reachable, check_share
from tfprune.search.gates import ChannelMasks, chain_ranks, gated_model, reading_sites
from tfprune.search.result import build_pruned, compile_like, make_result, prepare
from tfprune.surgery import squeeze_excite_widths

__all__ = ["ABCPruner", "ColonyResult", "bee_colony"]

_DEFAULT_CANDIDATES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclasses.dataclass(frozen=True)
class ColonyResult:
    """The outcome of `bee_colony`.

    Attributes:
        best: Tuple of ints. The fittest vector evaluated.
        best_fitness: Float. Its fitness.
        history: Tuple of floats. The best fitness after the initial colony
            and after each cycle (`cycles + 1` values, never decreasing).
        evaluations: Int. Number of distinct vectors evaluated.

    Example:

    >>> result = bee_colony(lambda x: -sum(x), choices=(3, 3), seed=0)
    >>> result.best, result.best_fitness
    ((0, 0), 0.0)
    """

    best: tuple
    best_fitness: float
    history: tuple
    evaluations: int


def bee_colony(
    fitness,
    choices,
    colony_size=10,
    cycles=10,
    limit=5,
    changes=1,
    feasible=None,
    fill=False,
    seed=None,
    verbose="auto",
):
    """Maximises `fitness` over integer vectors with the artificial bee colony.

    Args:
        fitness: Callable `tuple of ints -> float`, maximised. Called once per
            distinct vector (results are cached).
        choices: Sequence of ints >= 1: entry `d` of a vector is in
            `[0, choices[d])`.
        colony_size: Int >= 2. Number of food sources (and of employed and of
            onlooker bees). Defaults to `10`.
        cycles: Int >= 0. Employed-onlooker-scout cycles. Defaults to `10`.
        limit: Int >= 1. A source not improved for more than `limit` tries is
            abandoned by the scout. Defaults to `5`.
        changes: Int >= 1. Entries moved per neighbour. Defaults to `1`.
        feasible: Optional callable `tuple of ints -> bool`, monotone (lowering
            an entry keeps a feasible vector feasible). Every vector passed to
            `fitness` satisfies it.
        fill: Bool. With `feasible`, after repairing a vector also raise
            random entries by one while it stays feasible, so every vector
            tried lies on the budget's boundary (where the optimum is when
            fitness grows with every entry, as accuracy with widths).
            Defaults to `False`.
        seed: Optional int. The same seed gives the same search.
        verbose: `"auto"` (1), 0, 1 or 2, as in Keras: 1 shows a progress bar
            over the cycles. Defaults to `"auto"`.

    Returns:
        A `ColonyResult`.

    Raises:
        ValueError: If an argument (`verbose` included) is out of range or the
            all-zeros vector is not feasible.

    Example:

    >>> target = (2, 0, 4)
    >>> result = bee_colony(lambda x: -sum((a - b) ** 2 for a, b in zip(x, target)),
    ...                     choices=(5, 5, 5), colony_size=6, cycles=20, seed=0)
    >>> result.best
    (2, 0, 4)
    """
    choices = np.asarray(choices)
    if choices.ndim != 1 or choices.size == 0 or not np.issubdtype(choices.dtype, np.integer) or (choices < 1).any():
        raise ValueError(
            "`choices` must be a non-empty sequence of ints >= 1 (options per entry). "
            f"Received: choices={choices.tolist()!r}"
        )
    for name, value, lowest in (("colony_size", colony_size, 2), ("cycles", cycles, 0), ("limit", limit, 1), ("changes", changes, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
            raise ValueError(f"`{name}` must be an int >= {lowest}. Received: {name}={value!r}")
    if feasible is not None and not feasible((0,) * choices.size):
        raise ValueError(
            "No vector is feasible: even the all-zeros vector (the smallest option of every "
            "entry) fails `feasible`; loosen the constraint."
        )
    rng = np.random.default_rng(seed)
    cache = {}
    best = {"vector": None, "fitness": -math.inf}

    def evaluate(vector):
        key = tuple(int(value) for value in vector)
        if key not in cache:
            cache[key] = float(fitness(key))
            if cache[key] > best["fitness"]:
                best["vector"], best["fitness"] = key, cache[key]
        return cache[key]

    def allowed(vector):
        return feasible is None or feasible(tuple(int(value) for value in vector))

    def raised(vector, entry):
        vector = vector.copy()
        vector[entry] += 1
        return vector

    def repair(vector):
        while not allowed(vector):
            vector[rng.choice(np.flatnonzero(vector > 0))] -= 1
        while fill and feasible is not None:
            room = [entry for entry in np.flatnonzero(vector < choices - 1) if allowed(raised(vector, entry))]
            if not room:
                break
            vector[rng.choice(room)] += 1
        return vector

    def neighbour(index):
        partner = rng.choice([other for other in range(colony_size) if other != index])
        vector = sources[index].copy()
        for entry in rng.choice(choices.size, size=min(changes, choices.size), replace=False):
            step = rng.uniform(-1.0, 1.0) * (sources[index][entry] - sources[partner][entry])
            moved = int(np.rint(vector[entry] + step))
            if moved == vector[entry]:  # equal partners would never move: take one step
                moved += rng.choice((-1, 1))
            vector[entry] = np.clip(moved, 0, choices[entry] - 1)
        return repair(vector)

    def try_neighbour(index):
        vector = neighbour(index)
        value = evaluate(vector)
        if value > fitnesses[index]:
            sources[index], fitnesses[index], trials[index] = vector, value, 0
        else:
            trials[index] += 1

    sources = [repair(rng.integers(0, choices)) for _ in range(colony_size)]
    fitnesses = np.array([evaluate(vector) for vector in sources])
    trials = np.zeros(colony_size, dtype=np.int64)
    history = [best["fitness"]]
    progress = keras.utils.Progbar(cycles, verbose=check_verbose(verbose, "tfprune.search.bee_colony"), unit_name="cycle", stateful_metrics=["best", "evaluated"])
    for cycle in range(cycles):
        for index in range(colony_size):  # employed bees
            try_neighbour(index)
        spread = fitnesses.max() - fitnesses.min()
        normalised = (fitnesses - fitnesses.min()) / spread if spread > 0 else np.ones(colony_size)
        probabilities = 0.1 + 0.9 * normalised
        for _ in range(colony_size):  # onlooker bees
            try_neighbour(rng.choice(colony_size, p=probabilities / probabilities.sum()))
        abandoned = int(np.argmax(trials))
        if trials[abandoned] > limit:  # scout bee
            sources[abandoned] = repair(rng.integers(0, choices))
            fitnesses[abandoned], trials[abandoned] = evaluate(sources[abandoned]), 0
        history.append(best["fitness"])
        progress.update(cycle + 1, [("best", best["fitness"]), ("evaluated", len(cache))])
    return ColonyResult(best["vector"], best["fitness"], tuple(history), len(cache))


class ABCPruner:
    """Searches per-group widths with an artificial bee colony (ABCPruner).

    Every prunable channel group (or the `targets`) may keep one of the
    `candidates` fractions of its channels. `search()` runs `bee_colony` over
    those choices; a candidate's fitness is the model's metric on
    `validation_data` after `finetune_steps` training steps from the model's
    weights, with the channels surgery would remove masked (module
    docstring). With a `budget`, only candidates whose MACs (or parameters)
    are at most `budget` times the model's are trained.

    Every candidate starts from the same variables (including the dropout
    seed states) and optimizer state and is fine-tuned on the same examples in
    the same order, so the search is deterministic under `seed` (for the
    TensorFlow CPU kernels). The global Keras seed is left alone (setting it
    would make TensorFlow retrace the training step).

    Args:
        model: A built, compiled Sequential or functional `keras.Model` (its
            loss, optimizer and metrics are used for the fine-tunes). Not modified.
        data: Tuple `(x, y)` of NumPy arrays for the fine-tunes.
        budget: Optional float in (0, 1]: the share of the model's `cost` a
            candidate may keep. Defaults to `None` (no budget).
        cost: String. `"macs"` or `"params"`. Defaults to `"macs"`.
        candidates: Tuple of floats in (0, 1]: the kept fractions a group may
            take (widths are rounded, at least 1). Defaults to `(0.1, ..., 1.0)`.
        colony_size: Int. Food sources. Defaults to `10`.
        cycles: Int. Colony cycles. Defaults to `10`.
        limit: Int. Abandonment limit of a source. Defaults to `5`.
        finetune_steps: Int >= 0. Training steps before a candidate is
            evaluated. Defaults to `20`.
        batch_size: Int. Defaults to `64`.
        validation_data: Optional `(x, y)` for the fitness; defaults to `data`.
        targets: `"all"`, `"expansion"` or a callable `ChannelGroup -> bool`,
            as for `tfprune.prune`. With `"expansion"`, squeeze-excite
            bottlenecks keep MobileNetV3's ratio. Defaults to `"all"`.
        metric: Optional string. The `evaluate` metric to maximise; defaults
            to the first one that is not the loss.
        seed: Int. Seeds the colony and the fine-tune order. Defaults to `0`.
        verbose: `"auto"` (1), 0, 1 or 2, as in Keras: 1 shows a progress bar
            over the cycles. Defaults to `"auto"`.
        unknown: String. A layer or operation tfprune has no channel
            handler for: `"raise"` refuses the model, `"freeze"` leaves every
            channel around it unpruned (see `tfprune.graph.build`). Defaults
            to `"raise"`.

    Raises:
        TypeError: If `model` is not a graph model or `data` is not `(x, y)`.
        ValueError: If the model is not compiled, `candidates` is empty or out
            of (0, 1], the budget is out of (0, 1] or unreachable with the
            smallest candidates, or another argument (`verbose` included) is
            out of range.

    Example:

    >>> model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])  # doctest: +SKIP
    >>> pruner = tfprune.search.ABCPruner(model, (x, y), budget=0.5,  # doctest: +SKIP
    ...                                   colony_size=6, cycles=4, finetune_steps=20)  # doctest: +SKIP
    >>> result = pruner.search()  # doctest: +SKIP
    >>> result.widths, result.macs_share, result.history["best_fitness"]  # doctest: +SKIP
    >>> result.model.fit(x, y, epochs=5)  # doctest: +SKIP
    """

    def __init__(
        self,
        model,
        data,
        budget=None,
        cost="macs",
        candidates=_DEFAULT_CANDIDATES,
        colony_size=10,
        cycles=10,
        limit=5,
        finetune_steps=20,
        batch_size=64,
        validation_data=None,
        targets="all",
        metric=None,
        seed=0,
        verbose="auto",
        unknown="raise",
    ):
        self.graph, self.groups, follows, self.costs = prepare(
            model, "tfprune.search.ABCPruner", targets, cost, unknown
        )
        self.unknown = unknown
        if not model.compiled:
            raise ValueError(
                f"ABCPruner fine-tunes and evaluates every candidate with the model's compile "
                f"settings, but model '{model.name}' is not compiled; call "
                "model.compile(optimizer, loss, metrics=['accuracy']) first."
            )
        candidates = tuple(candidates)
        if not candidates or any(
            isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1 for value in candidates
        ):
            raise ValueError(
                "`candidates` must be a non-empty tuple of kept fractions in (0, 1], e.g. "
                f"(0.25, 0.5, 0.75, 1.0). Received: candidates={candidates!r}"
            )
        for name, value, lowest in (("finetune_steps", finetune_steps, 0), ("batch_size", batch_size, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
                raise ValueError(f"`{name}` must be an int >= {lowest}. Received: {name}={value!r}")
        self.model, self.follows = model, follows
        self.data = _checked_pair(data, "data")
        self.validation_data = self.data if validation_data is None else _checked_pair(validation_data, "validation_data")
        # Options of each group: distinct widths in increasing order, so a
        # lower index never costs more (the budget test is monotone).
        self.options = [
            sorted({max(1, math.floor(fraction * group.size + 0.5)) for fraction in candidates}) for group in self.groups
        ]
        self.budget = None if budget is None else check_share("budget", budget)
        if self.budget is not None:
            smallest = self._widths([0] * len(self.groups))
            check_reachable(self.costs, self.budget, smallest, "budget")
        self.candidates, self.metric = candidates, metric
        self.colony_size, self.cycles, self.limit = colony_size, cycles, limit
        self.finetune_steps, self.batch_size, self.seed, self.verbose = finetune_steps, batch_size, seed, verbose
        masked_groups = [self.graph[name] for name in self.costs.names]  # searched + followers
        ranks = chain_ranks(model, self.graph, masked_groups)
        self._scores = {name: -rank.astype(np.float64) for name, rank in ranks.items()}  # surgery keeps the same
        sites = reading_sites(model, self.graph, masked_groups, ranks)
        self.masks = ChannelMasks([group.size for group in masked_groups], sites, name="abc_masks")
        self._plain = clone_graph(model)
        self.masked_model = gated_model(self._plain, self.masks)
        compile_like(model, self.masked_model)
        self.masked_model.optimizer.build(self.masked_model.trainable_variables)
        self._initial = [variable.numpy() for variable in self.masked_model.variables]
        self._initial_optimizer = [variable.numpy() for variable in self.masked_model.optimizer.variables]

    def _widths(self, vector):
        widths = {group.name: options[index] for group, options, index in zip(self.groups, self.options, vector)}
        return squeeze_excite_widths(self.graph, widths) if self.follows else widths

    def feasible(self, vector):
        """Whether the candidate `vector` (option indices) is within the budget.

        Args:
            vector: Sequence of ints, one option index per searched group.

        Returns:
            Bool. Always True without a budget.

        Example:

        >>> pruner.feasible([0] * len(pruner.groups))                  # doctest: +SKIP
        True
        """
        if self.budget is None:
            return True
        return self.costs.of_widths(self._widths(vector)) <= self.budget * self.costs.total

    def fitness(self, vector):
        """Fine-tunes the candidate `finetune_steps` steps and returns its metric.

        Args:
            vector: Sequence of ints, one option index per searched group
                (`options[i][vector[i]]` channels kept).

        Returns:
            Float. The metric on `validation_data`.

        Example:

        >>> pruner.fitness([len(options) - 1 for options in pruner.options])  # doctest: +SKIP
        0.93
        """
        widths = self._widths(vector)
        self.masks.set_widths([widths.get(name, size) for name, size in zip(self.costs.names, self.costs.sizes)])
        model = self.masked_model
        for variable, value in zip(model.variables, self._initial):
            if variable is not self.masks.mask:
                variable.assign(value)
        for variable, value in zip(model.optimizer.variables, self._initial_optimizer):
            variable.assign(value)
        # train_on_batch/test_on_batch reuse one traced step for every
        # candidate (fit/evaluate would retrace for each new data iterator).
        x, y = self.data
        order = np.resize(np.random.default_rng(self.seed).permutation(len(x)), self.finetune_steps * self.batch_size)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            model.train_on_batch(x[batch], y[batch])
        x, y = self.validation_data
        totals = {}
        for start in range(0, len(x), self.batch_size):
            logs = model.test_on_batch(x[start : start + self.batch_size], y[start : start + self.batch_size], return_dict=True)
            for key, value in logs.items():  # means over the batch, weighted by its size
                totals[key] = totals.get(key, 0.0) + float(value) * len(x[start : start + self.batch_size])
        name = self.metric or next((key for key in totals if key != "loss"), "loss")
        if name not in totals:
            raise ValueError(f"`metric` {name!r} is not one of {sorted(totals)}. Received: metric={self.metric!r}")
        return totals[name] / len(x)

    def build(self, vector):
        """Builds the candidate by channel surgery on the input model's weights.

        Args:
            vector: Sequence of ints, one option index per searched group.

        Returns:
            Tuple `(widths dict, keras.Model)`.

        Example:

        >>> widths, small = pruner.build([0] * len(pruner.groups))      # doctest: +SKIP
        """
        return build_pruned(
            self.model, self.graph, self._widths(vector), self.follows, self._scores, self.unknown
        )

    def search(self):
        """Runs the colony; returns the best widths and the pruned model.

        Returns:
            A `SearchResult` (`method="abc"`): `widths`, `model` (surgery on
            the input model's weights, not fine-tuned), `fitness` of the best
            candidate, `history["best_fitness"]` per cycle and `plot()`.
            The optimiser's `ColonyResult` is kept as `self.colony`.

        Example:

        >>> result = pruner.search()                                   # doctest: +SKIP
        """
        self.colony = colony = bee_colony(
            self.fitness,
            [len(options) for options in self.options],
            colony_size=self.colony_size,
            cycles=self.cycles,
            limit=self.limit,
            changes=min(2, len(self.options)),  # ABCPruner moves two widths per neighbour
            feasible=None if self.budget is None else self.feasible,
            fill=True,  # use the budget: more channels rarely hurt accuracy
            seed=self.seed,
            verbose=self.verbose,
        )
        widths, pruned = self.build(colony.best)
        history = {"best_fitness": colony.history}
        return make_result("abc", self.model, pruned, widths, history, fitness=colony.best_fitness)


def _checked_pair(data, argument):
    if not isinstance(data, (tuple, list)) or len(data) != 2 or len(data[0]) != len(data[1]):
        raise TypeError(
            f"`{argument}` must be a tuple (x, y) of NumPy arrays with one label per example. "
            f"Received: an object of type {type(data).__name__}"
        )
    return np.asarray(data[0]), np.asarray(data[1])
