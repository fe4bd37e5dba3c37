"""Keras's and keras-hub's private API is used in `tfprune/_keras/` only.

The check reads every module of the package with `ast` and flags, outside
`tfprune/_keras/`:

- imports of `keras.src` / `keras_hub.src`, attribute chains `keras.src...`,
  and strings naming those modules;
- `obj._name` (and `getattr(obj, "_name")`) where `_name` is not defined by
  tfprune itself: an underscore attribute of a Keras object;
- `self._name` inside a tfprune class where `_name` is a private attribute
  Keras defines and tfprune does not (a Keras base class's internals);
- a string that is exactly a private attribute name Keras or keras-hub sets
  (`"_router_gate"` in a table of sublayers to `getattr`).

A private name that Keras also uses counts as tfprune's own only when listed
in `OWN_SHARED`, with the class that owns it (a plain class, or a callback
whose Keras base does not define it).
"""

import ast
import doctest
import pathlib

import keras
import numpy as np
import pytest

import tfprune
from tfprune import _keras
from tfprune._keras import decoders, functional, hub, layers, lite, ops, optimizers

PACKAGE = pathlib.Path(tfprune.__file__).parent
DOOR = PACKAGE / "_keras"

# Files still being moved behind the door, with the private names they use.
# This shrinks to nothing; an entry that is no longer needed fails the test.
ALLOWED = {
}


# tfprune's own attributes whose names Keras also uses somewhere, on tfprune classes
# whose Keras bases (if any) do not define them.
OWN_SHARED = {
    "_name": "tfprune._utils.LazyModule and tfprune._optional.OptionalModule (plain classes)",
    "_variables": "tfprune.callbacks.BNSparsity (a keras.callbacks.Callback, which has no _variables)",
    "_steps_seen": "tfprune.callbacks.BNSparsity",
    "_layers": "tfprune.callbacks.SparsityBudget (a keras.callbacks.Callback, which has no _layers)",
}


def _trees():
    return {path: ast.parse(path.read_text()) for path in sorted(PACKAGE.rglob("*.py"))}


def _own_names(trees, keras_private=frozenset()):
    """The names tfprune defines: functions, classes, module names, attributes set on self/cls.

    An attribute tfprune sets on `self` under a name Keras also sets is Keras's
    (a base class's internals) unless listed in `OWN_SHARED`.
    """
    own, stored = set(), set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                own.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                own.add(node.id)
            elif isinstance(node, ast.alias):
                own.add(node.asname or node.name.split(".")[-1])
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Store)
                and isinstance(node.value, ast.Name)
                and node.value.id in ("self", "cls")
            ):
                stored.add(node.attr)
    return own | (stored - set(keras_private)) | set(OWN_SHARED)


def _keras_private_names():
    """Underscore attributes Keras and keras-hub set on their own objects (`self._x = ...`)."""
    names = set()
    roots = [pathlib.Path(keras.__file__).parent / "src"]
    try:
        import keras_hub

        roots.append(pathlib.Path(keras_hub.__file__).parent / "src")
    except ImportError:
        pass
    for root in roots:
        for path in root.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Attribute)
                    and isinstance(node.ctx, ast.Store)
                    and isinstance(node.value, ast.Name)
                    and node.value.id == "self"
                    and node.attr.startswith("_")
                ):
                    names.add(node.attr)
    return names


def _private(name):
    return name.startswith("_") and not name.startswith("__") and not name.startswith("_tfprune")


def _violations(path, tree, own, keras_private):
    found = []

    def flag(node, what):
        found.append((node.lineno, what))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(("keras.src", "keras_hub.src")):
                    flag(node, alias.name)
        elif isinstance(node, ast.ImportFrom):
            if (node.module or "").startswith(("keras.src", "keras_hub.src")):
                flag(node, node.module)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if "keras.src" in node.value or "keras_hub.src" in node.value:
                flag(node, repr(node.value[:60]))
            elif _private(node.value) and node.value in keras_private and node.value not in own:
                flag(node, repr(node.value))
        elif isinstance(node, ast.Attribute):
            if (
                node.attr == "src"
                and isinstance(node.value, ast.Name)
                and node.value.id in ("keras", "keras_hub")
            ):
                flag(node, f"{node.value.id}.src")
            elif _private(node.attr):
                on_self = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
                if on_self and node.attr in keras_private and node.attr not in own:
                    flag(node, f"self.{node.attr}")
                elif not on_self and node.attr not in own:
                    flag(node, f".{node.attr}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in ("getattr", "hasattr", "setattr") and len(node.args) >= 2:
                name = node.args[1]
                if isinstance(name, ast.Constant) and isinstance(name.value, str):
                    if _private(name.value) and name.value not in own:
                        flag(node, f"{node.func.id}(..., {name.value!r})")
    return found


@pytest.fixture(scope="module")
def violations():
    trees = _trees()
    outside = {path: tree for path, tree in trees.items() if DOOR not in path.parents}
    keras_private = _keras_private_names()
    own = _own_names(outside, keras_private)
    found = {}
    for path, tree in outside.items():
        hits = _violations(path, tree, own, keras_private)
        if hits:
            found[str(path.relative_to(PACKAGE.parent))] = hits
    return found


def test_private_keras_names_only_behind_the_door(violations):
    unexpected = {
        path: [
            f"line {line}: {what}" for line, what in hits if what not in ALLOWED.get(path, set())
        ]
        for path, hits in violations.items()
    }
    unexpected = {path: hits for path, hits in unexpected.items() if hits}
    assert not unexpected, (
        "Keras/keras-hub private API used outside tfprune/_keras/ (add an accessor there): "
        f"{unexpected}"
    )


def test_allowlist_has_no_stale_entries(violations):
    used = {path: {what for _, what in hits} for path, hits in violations.items()}
    stale = {path: names - used.get(path, set()) for path, names in ALLOWED.items()}
    assert not {path: names for path, names in stale.items() if names}


def test_checker_flags_each_kind_of_private_use():
    source = (
        "import keras\n"
        "from keras.src.models import functional\n"
        "class Mine(keras.layers.Layer):\n"
        "    def call(self, x):\n"
        "        self._tracker\n"
        "        return x._keras_history, getattr(x, '_inbound_nodes'), keras.src.ops\n"
        "KEY = 'keras_hub.src.models.x'\n"
    )
    hits = {what for _, what in _violations(None, ast.parse(source), set(), {"_tracker"})}
    assert hits == {
        "keras.src.models",
        "self._tracker",
        "._keras_history",
        "getattr(..., '_inbound_nodes')",
        "keras.src",
        "'keras_hub.src.models.x'",
    }


def test_checker_accepts_tfprune_own_private_names():
    source = "class A:\n    def f(self, other):\n        self._mine = 1\n        return other._mine, other._tfprune_marker\n"
    tree = ast.parse(source)
    assert _violations(None, tree, _own_names({None: tree}), set()) == []


def test_door_docstring_examples_run():
    for module in (_keras, functional, layers, hub, ops, optimizers, decoders, lite):
        failures, _ = doctest.testmod(module, extraglobs={"keras": keras, "numpy": np})
        assert failures == 0, module.__name__


def _diamond():
    inputs = keras.Input((4,), name="x")
    a = keras.layers.Dense(4, name="a")(inputs)
    b = keras.layers.Dense(4, name="b")(inputs)
    shared = keras.layers.Dense(4, name="shared")
    c = shared(a)
    d = shared(b)
    out = keras.layers.Concatenate(name="cat")([keras.layers.Add(name="add")([c, d]), a])
    return inputs, keras.Model(inputs, out)


def test_walk_is_topological_and_visits_each_call_once():
    inputs, model = _diamond()
    nodes = functional.walk(model.outputs, stop=model.inputs)
    position = {id(node): index for index, node in enumerate(nodes)}
    assert len(position) == len(nodes) == 6  # a, b, shared twice, add, cat
    for node in nodes:
        for tensor in node.input_tensors:
            made_by = functional.producing_node(tensor)
            if id(tensor) != id(inputs):
                assert position[id(made_by)] < position[id(node)]
    assert [node.operation.name for node in nodes] == ["a", "shared", "b", "shared", "add", "cat"]


def test_walk_without_stop_includes_the_input_node():
    _, model = _diamond()
    names = [node.operation.name for node in functional.walk(model.outputs)]
    assert names[0] == "x" and names.count("x") == 1


def test_model_nodes_are_this_models_calls_only():
    inputs, model = _diamond()
    other_inputs = keras.Input((4,))
    model.get_layer("shared")(other_inputs)  # a call outside the model
    assert len(functional.call_nodes(model.get_layer("shared"))) == 3
    ids = {id(node) for node in functional.model_nodes(model)}
    assert sum(id(node) in ids for node in functional.call_nodes(model.get_layer("shared"))) == 2


def test_run_graph_substitutes_operations():
    inputs, model = _diamond()
    x = np.random.default_rng(0).normal(size=(2, 4)).astype("float32")
    same = functional.run_graph(model, [x], operation_fn=lambda operation: operation)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(same), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )
    zeroed = functional.run_graph(
        model,
        [x],
        operation_fn=lambda op: (
            (lambda *a, **k: keras.ops.zeros_like(a[0])) if op.name == "a" else op
        ),
    )
    assert np.all(keras.ops.convert_to_numpy(zeroed)[:, 4:] == 0)
