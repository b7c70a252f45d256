"""Dataset readers, decoding, face alignment, Parquet shards, folds and the synthetic generator.

Knows nothing of training. Shares only the process set-up (environment, torchvision fix)
with `clef_core.runtime`.
"""

from clef_core.runtime import configure_environment, install_torchvision_fix

install_torchvision_fix()
configure_environment()
