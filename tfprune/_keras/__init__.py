"""The one door to Keras's and keras-hub's private API.

Keras has no public accessor for several things a graph rewriter needs: the
call nodes of a functional model and the tensors between them, running a
graph with substitutions, the projections inside attention layers, the
slots of an optimizer, the classes keras-hub keeps under ``keras_hub.src``.
Every use of such a private name in tfprune lives in this package, so that a
Keras upgrade is checked here and nowhere else; ``tests/test_one_door.py``
fails when a private Keras name appears in any other module.

Submodules:

- ``functional``: nodes, tensors' producers, the one walk of a graph, running
  a graph with substitutions.
- ``layers``: private fields of Keras layers (attention projections, ...).
- ``ops``: the classes of Keras's operations (``keras.src.ops``).
- ``optimizers``: optimizer slots.
- ``hub``: keras-hub classes found by their module path.
- ``decoders``: private methods of keras-hub decoder layers (a sliding-window mask).
- ``lite``: the LiteRT interpreter's list of a file's operators.
"""
