"""Where results go: MLflow logging through a local spool (runbook), plots, the results report and
the paper's figures.
"""
