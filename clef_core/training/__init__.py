"""Running the method: data input (Ray Data or in-process), the Ray Train runner, the protocol
(folds, units and their order), the unit cache (`unit_cache`), stage-1 row selection, held-out
predictions and the zero-shot experiments. Never imports tracking: the workers log through the
tracker they are handed (`tracker`); a unit recorded in MLflow is `clef_core.run`'s.
"""
