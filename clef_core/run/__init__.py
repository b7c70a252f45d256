"""The composition layer: what needs both the method's training (`clef_core.training`) and
experiment tracking (`clef_core.tracking`), which do not import each other. Running a
protocol unit (train or reuse it, score it, record it: `unit`) and scoring a checkpoint
(`evaluate`: the one way, for training, the flow's evaluation step and `clef evaluate`).
Flows call these; nothing in clef_core below this package imports it.
"""
