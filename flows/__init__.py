"""Entry points: the `clef` command line and the Prefect flows (thin; logic lives below)."""

from clef_core.runtime import configure_environment, install_torchvision_fix

install_torchvision_fix()
configure_environment()
