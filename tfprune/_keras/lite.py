"""The LiteRT interpreter's list of a `.tflite` file's operators, which it keeps private.

`ai_edge_litert.interpreter.Interpreter` has public accessors for a file's
tensors and signatures but none for its operators; tfprune counts them to
report which operators an export uses.
"""

__all__ = ["ops_details"]


def ops_details(interpreter):
    """One dict per operator of the interpreter's model (`op_name`, `index`, `inputs`, `outputs`).

    Args:
        interpreter: An `ai_edge_litert.interpreter.Interpreter` (or
            `tf.lite.Interpreter`). Without delegates, each entry is one
            operator of the file.

    Returns:
        A list of dicts, in execution order.

    Example:
        >>> import tensorflow as tf
        >>> from ai_edge_litert.interpreter import Interpreter
        >>> @tf.function(input_signature=[tf.TensorSpec((1, 2), tf.float32)])
        ... def double(x):
        ...     return x + x
        >>> function = double.get_concrete_function()
        >>> converter = tf.lite.TFLiteConverter.from_concrete_functions([function], double)
        >>> interpreter = Interpreter(model_content=converter.convert())
        >>> [op["op_name"] for op in ops_details(interpreter)]
        ['ADD']
    """
    return list(interpreter._get_ops_details())
