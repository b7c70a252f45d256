"""Dataset readers, decoding, face alignment, Parquet shards, folds and the synthetic generator.

Knows nothing of training: it uses only `clef_core`'s errors, version and Ray start-up.
Importing it sets nothing for the process (entry points do: `clef_core.common.runtime`).
"""
