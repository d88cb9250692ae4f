"""The --tune_mode switch: which parameters train, how they are grouped, at which learning rates.

`apply.apply_tune_mode` is the only place in the code base that sets requires_grad.
"""
