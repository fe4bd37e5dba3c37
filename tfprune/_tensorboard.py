"""TensorBoard summaries written with TensorFlow alone (not public API)."""


def write_summary(tag, value, plugin_name="scalars"):
    """Writes one TensorBoard summary with TensorFlow alone, into the default writer.

    `tf.summary.scalar`/`histogram` live in the TensorBoard package, which
    tfprune does not depend on; `tf.summary.write` with the plugin's metadata
    writes the same event records.

    Args:
        tag: String. Summary name.
        value: Scalar or array (a histogram tensor for `"histograms"`).
        plugin_name: String. TensorBoard plugin, `"scalars"` or `"histograms"`.
    """
    from tfprune._optional import require_tensorflow

    tf = require_tensorflow("Writing TensorBoard summaries (log_dir=...)")

    metadata = tf.compat.v1.SummaryMetadata()
    metadata.plugin_data.plugin_name = plugin_name
    tf.summary.write(tag, value, metadata=metadata)
