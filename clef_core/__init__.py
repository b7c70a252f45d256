"""CLEF: the method (model, text, losses, metrics, training steps, checkpoints).

Free of orchestration: nothing here imports Prefect. Importing the package is cheap; heavy
modules (torch, open_clip) load when their submodules are imported. Importing any module sets
nothing for the process: entry points call `clef_core.common.runtime.configure_process()`.
"""

__version__ = "0.1.0"
