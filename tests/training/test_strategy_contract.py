"""The Strategy contract: the base class declares everything its callers use, both strategies implement it,
optimizer_step returns what the step did, and forward_backward takes an explicit loss weight."""
import ast
import math
import os

import pytest
import torch
from model_helpers import mixed_batch

from llava_ln.core.distributed import DistContext
from llava_ln.kernels import count_supervised_tokens
from llava_ln.model.args import ModelArguments
from llava_ln.model.backbones import load_tokenizer
from llava_ln.model.builder import build_mllm
from llava_ln.training.args import TrainingArguments
from llava_ln.training.memory.policy import Precision, resolve_precision
from llava_ln.training.strategy import StepOutcome, Strategy, TorchStrategy
from llava_ln.training.zero.strategy import DeepSpeedStrategy
from llava_ln.tuning.args import TuningArguments
from llava_ln.tuning.plan import apply_tune_mode

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "llava_ln")
# Every module that holds a strategy and calls it.
CALLERS = ("training/loop.py", "training/checkpointing.py", "training/reporting.py", "training/guards/step_guard.py",
           "training/grad_stats.py", "train.py", "evaluation/during_training.py")


def _is_strategy(node: ast.AST) -> bool:
    """`strategy` or `self.strategy`."""
    return (isinstance(node, ast.Name) and node.id == "strategy") or (
        isinstance(node, ast.Attribute) and node.attr == "strategy" and isinstance(node.value, ast.Name)
        and node.value.id == "self")


def _strategy_uses(path: str):
    tree = ast.parse(open(os.path.join(PACKAGE, path), encoding="utf-8").read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_strategy(node.value):
            yield node.lineno, node.attr
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr") \
                and node.args and _is_strategy(node.args[0]):
            yield node.lineno, f"{node.func.id}() probing"


def _declared(name: str) -> bool:
    instance_attributes = {"args", "context", "precision", "device"}  # set by Strategy.__init__
    return hasattr(Strategy, name) or name in Strategy.__annotations__ or name in instance_attributes


def test_the_base_class_declares_everything_its_callers_use():
    undeclared = [f"{path}:{line} strategy.{name}" for path in CALLERS for line, name in _strategy_uses(path)
                  if not _declared(name)]
    assert not undeclared, "used but not declared on Strategy:\n" + "\n".join(undeclared)
    used = {name for path in CALLERS for _, name in _strategy_uses(path)}
    assert {"forward_backward", "optimizer_step", "loss_scaler_state", "load_loss_scaler_state", "zero_stage",
            "deepspeed_config"} <= used  # the scan does see the calls


@pytest.mark.parametrize("strategy", [TorchStrategy, DeepSpeedStrategy])
def test_both_strategies_implement_the_whole_surface(strategy):
    assert not strategy.__abstractmethods__


@pytest.fixture(scope="module")
def tiny_ln(tiny_llm, tiny_vision):
    """A tiny composed model in `ln` mode, its TuningPlan and a batch."""
    path = tiny_llm("llama")
    model, spec = build_mllm(ModelArguments(model_name_or_path=path, vision_tower=tiny_vision("clip")),
                             load_tokenizer(path))
    model, plan = apply_tune_mode(model, TuningArguments(tune_mode="ln"))
    return model, plan, mixed_batch(spec)


def _strategy(tiny_ln, precision: Precision | None = None, loss_weighting: str = "llava") -> TorchStrategy:
    """llava weighting by default: these tests call forward_backward without a loss weight."""
    model, plan, _ = tiny_ln
    args = TrainingArguments(output_dir="unused", learning_rate=1e-2, gradient_accumulation_steps=2,
                             loss_weighting=loss_weighting)
    strategy = TorchStrategy(args, DistContext(), precision or resolve_precision(args, torch.device("cpu")))
    strategy.setup(model, plan.param_groups(model, args.learning_rate, args.weight_decay))
    return strategy


def _weights(strategy: TorchStrategy) -> list:
    return [p.detach().clone() for p in strategy.trainable]


def _grads(strategy: TorchStrategy) -> list:
    return [p.grad.clone() for p in strategy.trainable if p.grad is not None]


def test_optimizer_step_returns_what_the_step_did(tiny_ln):
    strategy, batch = _strategy(tiny_ln), tiny_ln[2]
    before = _weights(strategy)
    strategy.forward_backward(batch, last_micro_step=True)
    outcome = strategy.optimizer_step()
    assert outcome.applied and math.isfinite(outcome.grad_norm) and outcome.grad_norm > 0
    assert not outcome.nonfinite_gradient
    assert any(not torch.equal(a, b) for a, b in zip(before, _weights(strategy)))
    with pytest.raises(AttributeError):
        outcome.applied = False  # frozen: nobody changes a step's record after the fact

    before = _weights(strategy)
    strategy.forward_backward(batch, last_micro_step=True)
    skipped = strategy.optimizer_step(skip=True)
    assert (skipped.applied, skipped.dropped_nonfinite) == (False, False) and math.isfinite(skipped.grad_norm)
    assert all(torch.equal(a, b) for a, b in zip(before, _weights(strategy)))

    strategy.forward_backward(batch, last_micro_step=True)
    strategy.trainable[0].grad.fill_(float("nan"))
    dropped = strategy.optimizer_step()
    assert dropped == StepOutcome(grad_norm=dropped.grad_norm, applied=False, dropped_nonfinite=True)
    assert math.isnan(dropped.grad_norm) and dropped.nonfinite_gradient
    assert all(torch.equal(a, b) for a, b in zip(before, _weights(strategy)))
    assert all(p.grad is None for p in strategy.trainable)  # a dropped step's gradients do not leak into the next


def test_an_fp16_loss_scale_overflow_is_a_routine_skip(tiny_ln):
    # fp16's GradScaler without autocast: the scaler's own bookkeeping runs on a CPU too.
    strategy, batch = _strategy(tiny_ln, Precision(compute_dtype=torch.float32, bf16=False, fp16=True)), tiny_ln[2]
    before, scale = _weights(strategy), strategy.scaler.get_scale()
    strategy.forward_backward(batch, last_micro_step=True)
    strategy.trainable[0].grad.fill_(float("inf"))
    overflow = strategy.optimizer_step()
    assert (overflow.applied, overflow.nonfinite_gradient) == (False, False)  # the scaler's skip is not counted
    assert strategy.scaler.get_scale() < scale
    assert all(torch.equal(a, b) for a, b in zip(before, _weights(strategy)))
    strategy.forward_backward(batch, last_micro_step=True)
    assert strategy.optimizer_step().applied


def test_an_explicit_loss_weight_is_what_the_default_applies(tiny_ln):
    strategy, batch = _strategy(tiny_ln), tiny_ln[2]
    loss = strategy.forward_backward(batch, last_micro_step=True)
    default = _grads(strategy)
    strategy.optimizer_step(skip=True)
    again = strategy.forward_backward(batch, last_micro_step=True, loss_weight=1 / 2)  # 1 / accumulation
    assert torch.equal(loss, again)  # the returned loss is the micro-batch's own, whatever its weight
    assert all(torch.equal(a, b) for a, b in zip(default, _grads(strategy)))
    strategy.optimizer_step(skip=True)
    strategy.forward_backward(batch, last_micro_step=True, loss_weight=1.0)  # e.g. a token-weighted step's share
    assert all(torch.equal(a * 2, b) for a, b in zip(default, _grads(strategy)))
    strategy.optimizer_step(skip=True)


def test_token_weighting_sums_the_token_losses_and_needs_an_explicit_weight(tiny_ln):
    batch = tiny_ln[2]
    supervised = count_supervised_tokens(batch["labels"])
    llava = _strategy(tiny_ln)
    mean = llava.forward_backward(batch, last_micro_step=True, loss_weight=1.0)
    mean_grads = _grads(llava)
    llava.optimizer_step(skip=True)
    token = _strategy(tiny_ln, loss_weighting="token")
    assert token.loss_reduction == "sum" and llava.loss_reduction == "mean"
    with pytest.raises(ValueError, match="needs loss_weight"):  # a sum weighed by 1 / accumulation is wrong
        token.forward_backward(batch, last_micro_step=True)
    token_sum = token.forward_backward(batch, last_micro_step=True, loss_weight=1 / supervised)
    assert supervised > 1 and torch.allclose(token_sum, mean * supervised, rtol=1e-6)
    # The sum weighed by 1 / its own token count is the micro-batch mean: the same gradient.
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-8) for a, b in zip(mean_grads, _grads(token)))
    token.optimizer_step(skip=True)
