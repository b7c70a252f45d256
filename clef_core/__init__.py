"""CLEF: the method (model, text, losses, metrics, training steps, checkpoints).

Free of orchestration: nothing here imports Prefect. Importing the package is cheap; heavy
modules (torch, open_clip) load when their submodules are imported.
"""

from clef_core.runtime import configure_environment, install_torchvision_fix

__version__ = "0.1.0"

install_torchvision_fix()
configure_environment()
