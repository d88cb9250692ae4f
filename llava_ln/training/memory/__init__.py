"""Memory: where a training step's bytes go, and the choices that bound them.

  policy         precision policy (frozen weights in the compute dtype, trainable ones fp32), gradient
                 checkpointing, and the static estimate (weights, gradients, optimizer states per device)
  step_account   the real training step on the meta device: exact saved bytes and FLOPs, no weights
  recompute      --gradient_checkpointing true|false|auto: which blocks recompute, and the estimated peak

`llava-ln describe` and bench/step_cost.py print these numbers; training uses the same functions to plan.
"""
