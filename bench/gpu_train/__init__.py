"""Benchmark on one GPU: CLEF's training steps and `clef predict`'s face scoring, against
open_clip's own training step on the same model, in one run; a JSON and a markdown table.

- Stage 1 (`clef_core.method.steps.pretrain_step`: two augmented views, the batch's activity
  texts, Eq. 1 twice) and stage 2 (`finetune_step` on BP4D's 12 AUs: the image, the label
  names and a description per label), each at the paper's batch (64) and at the largest batch
  that fits (doubling from 64 until CUDA runs out of memory, then two bisections), run as the
  training runs them: `run_epoch` (the config's autocast, AdamW, zero_grad, backward), uint8
  images from pinned host memory, augmented on the GPU (`augment.model_views`); no Ray and no
  data pipeline (the batches are in memory: this measures the GPU step, not the input).
- open_clip's plain training step on the same model and batch: its `ClipLoss`, one image and
  one caption per sample, AdamW with its parameter groups, under the config's autocast (bf16)
  and, on CUDA, also under its default `--precision amp` (fp16 autocast with a GradScaler).
- `clef predict`'s scoring of aligned 224-px face crops (`Predictor.score_crops` on a saved
  stage-2 checkpoint of the same model: pinned copy, resize and bf16 autocast on the GPU).

Every measurement: warm-up steps, then timed steps (about `--seconds`, between `--min-steps`
and `--max-steps`) between two device synchronisations; peak memory is
`torch.cuda.max_memory_allocated` (on the CPU: the process's peak resident size). Model FLOPs
are counted from the model's shapes (printed with the formula; training = 3x the forward);
MFU is model FLOP/s over the GPU's dense bf16 datasheet peak (a measured 8192^3 matrix product
beside it); on other devices, over the measured product. The whole run keeps to `--budget-s`
(a measurement that would not fit is skipped and listed); results are rewritten after every
measurement, so a run cut short keeps what it measured.

    python -m bench.gpu_train                          # paper preset (ViT-B/16) on cuda
    python -m bench.gpu_train --compile --out $OUT     # plus the torch.compile'd model, budget allowing
    .venv/bin/python -m bench.gpu_train --preset cpu-tiny --device cpu --smoke   # smoke test

The GPU switches TF32 (`--tf32`, on by default on CUDA), `--compile` and
`--grad-checkpointing` set the training config's own (`compute.tf32`, `compute.torch_compile`,
`compute.grad_checkpointing`) and are applied by the same functions the Ray worker calls
(`clef_core.method.hardware`).

Modules: `config` (the flags and constants), `device` (synchronisation, memory, matrix-product
peak), `flops` (model FLOPs), `runners` (the steps measured), `measure` (timing and the batch
search), `benchmark` (the run), `report` (the markdown table), `cli` (`main`).
"""
