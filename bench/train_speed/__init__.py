"""Benchmark: the training step inside Ray Train against the same step in a plain PyTorch
loop (the floor), for stage 1 and stage 2, on the same model, batch and data, in one run; and
where a stage-2 step's time goes.

- Ray Train: `clef_core.training.ray_train.run_stage`, the project's real loop (worker-group,
  Ray Datasets from the shards or the decoded cache as the preset says, worker-side
  augmentation, AdamW), for a fixed number of steps. Only warm steps are timed, from the step
  timestamps the worker reports (`run_stage(time_steps=True)`): worker start, the first
  steps, evaluation and checkpoints are outside the window; the data hand-off is inside.
- plain: the same stage's step function (`Stage.step_fn`: `pretrain_step` / `finetune_step`),
  its augmentation, backward and AdamW step over one in-memory uint8 batch of the same rows,
  in this process with the worker's thread count.
Each stage runs plain, Ray, plain (the plain figure is the mean of the two): a shared
machine's load falls on both alike. The last line is `ray/plain stage1 R1 stage2 R2`
(images/s ratios).

    .venv/bin/python -m bench.train_speed [--preset cpu-tiny] [--steps 40] [--warm 5] [--smoke]
"""
