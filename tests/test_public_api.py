"""The public API is declared and documented: every public module has `__all__`,
every name in it exists, and every function or class in it has a docstring with
an "Example" section (and "Args:" when it takes arguments)."""

import doctest
import importlib
import inspect
import pathlib
import sys
import types

import pytest

import tfprune

PACKAGE_DIRECTORY = pathlib.Path(tfprune.__file__).parent


def _public_module_names():
    names = []
    for path in sorted(PACKAGE_DIRECTORY.rglob("*.py")):
        parts = path.relative_to(PACKAGE_DIRECTORY).with_suffix("").parts
        if any(part.startswith("_") and part != "__init__" for part in parts):
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(("tfprune",) + parts))
    return names


PUBLIC_MODULES = _public_module_names()


def _exported_objects():
    objects = {}
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", ()):
            value = getattr(module, name, None)
            if inspect.isclass(value) or inspect.isfunction(value):
                # by identity: the criteria `l1`, `l2`, ... are closures sharing one qualified name
                objects.setdefault(id(value), (f"{module_name}.{name}", value))
    return sorted(objects.values(), key=lambda item: item[0])


def _takes_arguments(value):
    if inspect.isclass(value):
        # The arguments of a constructor inherited from Keras or Python (a Keras
        # operation's `name`, an exception's message) are documented there.
        owner = next(klass for klass in value.__mro__ if "__init__" in vars(klass) or "__new__" in vars(klass))
        if not owner.__module__.startswith("tfprune"):
            return False
    try:
        signature = inspect.signature(value)
    except (TypeError, ValueError):
        return False
    return any(name not in ("self", "cls") for name in signature.parameters)


def test_the_discovery_finds_the_modules():
    assert {"tfprune", "tfprune.pruning", "tfprune.export.convert", "tfprune.search.dmcp"} <= set(PUBLIC_MODULES)
    assert not any(part.startswith("_") for name in PUBLIC_MODULES for part in name.split("."))


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_public_module_declares_all_with_existing_names(module_name):
    module = importlib.import_module(module_name)
    assert hasattr(module, "__all__"), f"{module_name} has no __all__"
    exported = list(module.__all__)
    assert len(exported) == len(set(exported)), f"{module_name}.__all__ lists a name twice"
    missing = [name for name in exported if not hasattr(module, name)]
    assert not missing, f"{module_name}.__all__ names what the module does not define: {missing}"


@pytest.mark.parametrize("qualified_name, value", _exported_objects(), ids=lambda item: item if isinstance(item, str) else "")
def test_every_exported_function_and_class_is_documented(qualified_name, value):
    docstring = inspect.getdoc(value) or ""
    assert docstring, f"{qualified_name} has no docstring"
    assert "Example" in docstring, f"{qualified_name}'s docstring has no Example section"
    if _takes_arguments(value):
        # A class may document its constructor's arguments as `Attributes:` (a result record).
        sections = ("Args:", "Attributes:") if inspect.isclass(value) else ("Args:",)
        assert any(section in docstring for section in sections), f"{qualified_name}'s docstring has no Args section"


def test_the_checks_catch_an_undocumented_function():
    def undocumented(model):
        return model

    def documented(model):
        """Returns `model`.

        Args:
            model: Anything.

        Example:

        >>> documented(1)
        1
        """
        return model

    assert _takes_arguments(undocumented) and "Example" not in (inspect.getdoc(undocumented) or "")
    test_every_exported_function_and_class_is_documented("documented", documented)
    with pytest.raises(AssertionError, match="no docstring"):
        test_every_exported_function_and_class_is_documented("undocumented", undocumented)
    undocumented.__doc__ = "Returns `model`.\n\nArgs:\n    model: Anything.\n"
    with pytest.raises(AssertionError, match="no Example section"):
        test_every_exported_function_and_class_is_documented("undocumented", undocumented)
    undocumented.__doc__ = "Returns `model`.\n\nExample:\n\n>>> undocumented(1)\n1\n"
    with pytest.raises(AssertionError, match="no Args section"):
        test_every_exported_function_and_class_is_documented("undocumented", undocumented)



def test_the_checks_catch_a_module_without_all_or_with_a_missing_name(monkeypatch):
    module = types.ModuleType("tfprune_stand_in")
    monkeypatch.setitem(sys.modules, "tfprune_stand_in", module)
    with pytest.raises(AssertionError, match="tfprune_stand_in has no __all__"):
        test_every_public_module_declares_all_with_existing_names("tfprune_stand_in")
    module.__all__ = ["absent"]
    with pytest.raises(AssertionError, match=r"does not define: \['absent'\]"):
        test_every_public_module_declares_all_with_existing_names("tfprune_stand_in")

def _run_examples(value, name):
    globs = dict(vars(importlib.import_module(value.__module__)))
    test = doctest.DocTestParser().get_doctest(inspect.getdoc(value), globs, name, None, 0)
    return doctest.DocTestRunner(optionflags=doctest.ELLIPSIS).run(test, out=lambda text: None)


@pytest.mark.parametrize(
    "qualified_name",
    [
        # closures built by `from_layer_scores`, which `doctest.testmod` skips (defined in criteria.base)
        "tfprune.criteria.l1",
        "tfprune.criteria.l2",
        "tfprune.criteria.bn_gamma",
        "tfprune.criteria.sparsity",
        "tfprune.criteria.sparsity_gamma",
        "tfprune.criteria.str_zero_filters",
        # modules whose docstring examples no other test runs
        "tfprune.demo.DemoResult",
    ],
)
def test_docstring_examples_run(qualified_name):
    module_name, name = qualified_name.rsplit(".", 1)
    results = _run_examples(getattr(importlib.import_module(module_name), name), qualified_name)
    assert results.attempted >= 3 and results.failed == 0
