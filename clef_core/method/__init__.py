"""The method (the paper): model, text, labels, losses, metrics, weights, augmentation, training
steps, distributed loss helpers, checkpoints and config. Plain torch: no Ray, MLflow or Prefect.
"""
