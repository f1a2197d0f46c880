"""The method: the 12 CNNs, Algorithm 1's training, and scoring a checkpoint: the train and evaluate
stages' library.

It owns building models (`architectures`), where and how they run (`runtime`), batched augmentation
(`augment`), training (`training`) and stopping it at a batch on a signal (`stopping`), images to
probabilities (`inference`), the validation metrics (`metrics`), calibration (`calibration`) and the
evaluate stage (`evaluation`). It may import `core` and `data`.
"""
