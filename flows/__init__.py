"""Entry points: the `clef` command line and the Prefect flows (thin; logic lives below).

The process set-up (`clef_core.common.runtime.configure_process`) runs when an entry point starts
(`flows.cli.main`, the `clef` flow, `flows.serve`), not when a module is imported.
"""
