"""Where results go: MLflow through a local spool (`spool`: the transport, never waiting on
the server) in the layout of `runbook` (experiments, parent and nested runs, the registry),
plots, the results report and the paper's figures. Reads results (`clef_core.common.results`);
never imports training.
"""
