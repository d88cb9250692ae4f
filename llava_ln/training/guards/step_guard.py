"""What every optimizer step checks, agreed by all ranks: non-finite losses and gradients, and stop signals.

Before the update, one all-reduce per step sums over ranks how many of this step's micro-batch
losses were not finite and which stop signals arrived (training.guards.stop_signals), so every rank takes
the same decision. The strategy then skips the update (gradients dropped, optimizer untouched) when
a loss anywhere or the global gradient norm is not finite, and its optimizer_step returns a
StepOutcome saying what it did, which after_step judges; under fp16 the loss scaler's own skip of
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
from typing import Protocol

from llava_ln.core.distributed import DistContext, all_reduce_sum
from llava_ln.core.errors import LlavaLnError
from llava_ln.training.strategy import StepOutcome

logger = logging.getLogger(__name__)


class TrainingDiverged(LlavaLnError):
    """Non-finite losses, gradients or weights: the run stopped without saving them."""

    exit_code = 3


@dataclass(frozen=True)
class StepVerdict:
    """What every rank agreed on before the update (StepGuard.before_step returns it)."""

    nonfinite_loss: bool  # some rank saw a non-finite micro-batch loss in this step
    stop_signal: int | None  # a stop signal (SIGTERM, SIGINT, SIGHUP, SIGUSR1: --stop_signals) any rank received


class PendingSignals(Protocol):
    """Where the stop signals that arrived are noted (training.guards.stop_signals.StopSignals)."""

    signals: tuple[int, ...]  # the stop signals handled (--stop_signals), the same on every rank, SIGTERM first

    def pending(self, signum: int) -> int:
        """1 when signal signum arrived and is waiting to be acted on, else 0."""


class StepGuard:
    """The checks around one optimizer step; the only state it keeps is how many steps in a row were skipped."""

    def __init__(self, context: DistContext, max_nonfinite_steps: int, stops: PendingSignals | None = None):
        self.context = context
        self.max_nonfinite_steps = max_nonfinite_steps
        self.stops = stops
        self.in_a_row = 0

    def before_step(self, micro_losses: list[float]) -> StepVerdict:
        """Collective: what every rank must know before the update.

        Args:
            micro_losses: this rank's micro-batch losses of the step.

        Returns:
            Whether any rank saw a non-finite loss, and the stop signal any rank received.
        """
        handled = self.stops.signals if self.stops else ()  # the same on every rank (one flag), SIGTERM first
        local_nonfinite = sum(not math.isfinite(loss) for loss in micro_losses)
        nonfinite, *pending = all_reduce_sum(self.context, [local_nonfinite]
                                             + [self.stops.pending(signum) for signum in handled])
        stop = next((signum for signum, count in zip(handled, pending) if count), None)
        return StepVerdict(nonfinite_loss=nonfinite > 0, stop_signal=stop)

    def after_step(self, step: int, verdict: StepVerdict, outcome: StepOutcome, *,
                   last_checkpoint: str | None) -> bool:
        """Judge the step just taken.

        Args:
            step: its number (1-based), for the messages.
            verdict: what before_step agreed on.
            outcome: what Strategy.optimizer_step returned.
            last_checkpoint: the newest checkpoint folder, named in the message when the run stops.

        Returns:
            True when the step was skipped as non-finite (no update).

        Raises:
            TrainingDiverged: an update went in with a non-finite loss or gradient, or too many steps in a row
                were skipped.
        """
        if not (verdict.nonfinite_loss or outcome.nonfinite_gradient):
            self.in_a_row = 0
            return False
        what = "loss" if verdict.nonfinite_loss else f"gradient norm ({outcome.grad_norm})"
        kept = f"the last checkpoint, {last_checkpoint}, is intact" if last_checkpoint else "no checkpoint was written"
        if outcome.applied:
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
