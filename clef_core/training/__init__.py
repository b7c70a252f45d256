"""Running the method: data input (Ray Data or in-process), the Ray Train runner, the protocol
(folds, units and their order), the unit cache, stage-1 row selection, evaluation on held-out
parts and the zero-shot experiments.
"""
