"""What every optimizer step checks, agreed by all ranks: non-finite losses and gradients, and stop signals.

Before the update, one all-reduce per step sums over ranks how many of this step's micro-batch
losses were not finite and which stop signals arrived (training.guards.stop_signals), so every rank takes
the same decision. The strategy then skips the update (gradients dropped, optimizer untouched) when
a loss anywhere or the global gradient norm is not finite; under fp16 the loss scaler's own skip of
an overflowing gradient is routine and is not counted. A skipped step still consumes its data and
advances the schedule, so positions stay those of an uninterrupted run; the optimizer's own step
count does not advance (TrainState.skipped_steps remembers the difference for resume).

Up to --max_nonfinite_steps skipped steps in a row are tolerated, each with a warning; one more
stops the run with TrainingDiverged (exit 3) naming the step, and nothing more is saved. Should
a strategy apply an update whose gradient norm was not finite (a DeepSpeed without its own
non-finite skip), the run stops at that step: its weights can no longer be trusted.
"""
import logging
import math
from dataclasses import dataclass

from llava_ln.core.distributed import all_reduce_sum
from llava_ln.core.errors import LlavaLnError

logger = logging.getLogger(__name__)


class TrainingDiverged(LlavaLnError):
    """Non-finite losses, gradients or weights: the run stopped without saving them."""

    exit_code = 3


@dataclass(frozen=True)
class StepVerdict:
    nonfinite_loss: bool  # some rank saw a non-finite micro-batch loss in this step
    stop_signal: int | None  # a stop signal (SIGTERM, SIGINT, SIGHUP, SIGUSR1: --stop_signals) any rank received


class StepGuard:
    def __init__(self, context, max_nonfinite_steps: int, stops=None):
        self.context = context
        self.max_nonfinite_steps = max_nonfinite_steps
        self.stops = stops
        self.local_nonfinite = 0
        self.in_a_row = 0

    def add_loss(self, loss: float) -> None:
        if not math.isfinite(loss):
            self.local_nonfinite += 1

    def before_step(self) -> StepVerdict:
        """Collective: what every rank must know before the update."""
        handled = self.stops.signals if self.stops else ()  # the same on every rank (one flag), SIGTERM first
        nonfinite, *pending = all_reduce_sum(self.context, [self.local_nonfinite]
                                             + [self.stops.pending(signum) for signum in handled])
        self.local_nonfinite = 0
        stop = next((signum for signum, count in zip(handled, pending) if count), None)
        return StepVerdict(nonfinite_loss=nonfinite > 0, stop_signal=stop)

    def after_step(self, step: int, verdict: StepVerdict, strategy, grad_norm: float, last_checkpoint) -> bool:
        """True when the step was skipped as non-finite; raises TrainingDiverged when the run must stop.

        strategy: its step_applied / dropped_nonfinite / applied_nonfinite describe the step just taken.
        """
        bad_gradient = strategy.dropped_nonfinite or strategy.applied_nonfinite
        if not (verdict.nonfinite_loss or bad_gradient):
            self.in_a_row = 0
            return False
        what = "loss" if verdict.nonfinite_loss else f"gradient norm ({grad_norm})"
        kept = f"the last checkpoint, {last_checkpoint}, is intact" if last_checkpoint else "no checkpoint was written"
        if strategy.step_applied:
            raise TrainingDiverged(f"step {step}: the {what} is not finite and the optimizer applied the update anyway; "
                                   f"stopped before saving anything non-finite ({kept}); lower the learning rate(s)")
        self.in_a_row += 1
        if self.in_a_row > self.max_nonfinite_steps:
            raise TrainingDiverged(f"step {step}: the {what} is not finite, on {self.in_a_row} steps in a row "
                                   f"(--max_nonfinite_steps {self.max_nonfinite_steps}); the run diverged and stopped "
                                   f"without saving ({kept}); lower the learning rate(s)")
        logger.warning("step %d: the %s is not finite; step skipped, no update (%d in a row, at most %d: "
                       "--max_nonfinite_steps)", step, what, self.in_a_row, self.max_nonfinite_steps)
        return True
