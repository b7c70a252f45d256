"""Benchmarks, each run as a module from the repository root: `python -m bench.<name>`
(ablation, label_efficiency, probes, train_speed, preprocess_speed, predict_speed,
synth_speed, gpu_train). `bench.common` holds what the training benchmarks share."""
