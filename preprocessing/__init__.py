"""Dataset readers, the preprocessing pipeline, Parquet shards and folds.

Faces (decoding, detection, alignment) come from `faces`; the synthetic datasets from
`synthetic`.

Knows nothing of training: it uses only `clef_core`'s errors, version and Ray start-up.
Importing it sets nothing for the process (entry points do: `clef_core.common.runtime`).
"""
