"""Trainings that save the gradient of their first optimizer step: `python gradient_capture.py RUNS.json`.

RUNS.json is a list of [train argv, gradient file]. Each training runs to completion (train.py's
main, one after another in this process, as run_trainings.py does); just before its first
Strategy.optimizer_step, every trainable parameter's full gradient (what the optimizer is about to
use: accumulated over the step's micro-batches and averaged over ranks, before clipping) is written
by rank 0 to the gradient file as safetensors. Under the deepspeed launcher (2 ranks, gloo) too: the
plain strategy's gradients are DDP's averaged .grad, DeepSpeed's come from
deepspeed.utils.safe_get_full_grad (collective, so every rank takes part).

Reading the gradient itself, rather than the weights an optimizer made of it, compares what the loss
weighting decides and nothing else: no Adam normalisation (whose first step is about sign(g)), no
clipping, no learning-rate rounding.
"""
# ruff: noqa: E402  (the imports follow the sys.path fix below)
import json
import os
import sys

# Run as a file (by the deepspeed launcher too): the checkout's package, whatever the working directory.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import torch
from safetensors.torch import save_file

from llava_ln.core.errors import run_command
from llava_ln.train import main
from llava_ln.training.strategy import TorchStrategy
from llava_ln.training.zero.strategy import DeepSpeedStrategy

_TARGET = {"path": None}  # the current run's gradient file; None once written


def full_gradients(strategy) -> dict[str, torch.Tensor]:
    """{parameter name: full fp32 gradient on CPU} for every trainable parameter (collective under DeepSpeed)."""
    named = [(name, param) for name, param in strategy.module.named_parameters() if param.requires_grad]
    if isinstance(strategy, DeepSpeedStrategy):
        from deepspeed.utils import safe_get_full_grad

        grads = {name: safe_get_full_grad(param) for name, param in named}
    else:
        grads = {name: param.grad for name, param in named}
    return {name: grad.detach().float().cpu().contiguous() for name, grad in grads.items() if grad is not None}


def _capturing(real_optimizer_step):
    def optimizer_step(self, *, skip: bool = False):
        if _TARGET["path"] is not None:
            grads = full_gradients(self)
            if self.context.is_main:
                save_file(grads, _TARGET["path"])
            _TARGET["path"] = None
        return real_optimizer_step(self, skip=skip)

    return optimizer_step


for _strategy in (TorchStrategy, DeepSpeedStrategy):
    _strategy.optimizer_step = _capturing(_strategy.optimizer_step)

if __name__ == "__main__":
    with open(sys.argv[-1], encoding="utf-8") as handle:  # the deepspeed launcher puts --local_rank=N first
        runs = json.load(handle)
    for argv, gradient_file in runs:
        _TARGET["path"] = gradient_file
        code = run_command(main, argv)
        if code:
            sys.exit(code)
