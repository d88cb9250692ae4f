"""Stop signals during training: finish the optimizer step, write a checkpoint, say where, exit 128+signal.

Cluster schedulers send SIGTERM some seconds before they kill a job; Ctrl-C sends SIGINT; a dropped
ssh session sends SIGHUP; SLURM sends SIGUSR1 ahead of the time limit when asked (`--signal=USR1@90`).
--stop_signals names the ones handled (default TERM,INT,HUP,USR1; TERM and INT always are); a signal
already ignored when the run starts (SIGHUP under nohup) stays ignored. While a
run is still being set up there is nothing to save, so either signal stops it at once with one
line (exit 143 or 130). Once training runs, the handler only notes the signal (it is async: it must
not touch a collective or a file); the loop sees it at the next optimizer-step boundary, where all
ranks agree through the step's all-reduce (training.guards.step_guard), finishes that step, writes a
checkpoint collectively and raises Interrupted. Repeated signals are ignored (a launcher forwards
the scheduler's SIGTERM to ranks that already got it), except a second SIGINT, which stops at once
like any kill: the checkpoints already written stay intact. DataLoader workers are forked with
this handler installed, so a signal sent to the whole process group does not kill them mid-step.
"""
import logging
import os
import signal
import threading

from llava_ln.core.errors import LlavaLnError

logger = logging.getLogger(__name__)

ALWAYS = ("TERM", "INT")
DEFAULT_STOP_SIGNALS = "TERM,INT,HUP,USR1"


def parse_stop_signals(spec: str) -> tuple:
    """--stop_signals "TERM,INT,HUP,USR1" -> the signal numbers (TERM and INT always included)."""
    names = [part.strip().upper().removeprefix("SIG") for part in (spec or "").split(",") if part.strip()]
    found = []
    for name in list(ALWAYS) + names:
        number = getattr(signal, f"SIG{name}", None)
        if not isinstance(number, signal.Signals) or name in ("KILL", "STOP"):
            raise LlavaLnError(f"--stop_signals: {name!r} is not a signal a run can catch (e.g. TERM,INT,HUP,USR1)")
        if number not in found:
            found.append(number)
    return tuple(found)


class Interrupted(LlavaLnError):
    """The run stopped on a signal (after saving what it could); exit status 128 + the signal's number."""

    label = "stopped"

    def __init__(self, signum: int, message: str):
        super().__init__(f"{signal.Signals(signum).name} {message}")
        self.signum = signum
        self.exit_code = 128 + signum


class StopSignals:
    """Context manager owning the stop-signal handlers of one training run (main thread only)."""

    def __init__(self, spec: str = DEFAULT_STOP_SIGNALS):
        self.signals = parse_stop_signals(spec)
        self.received = None  # the first stop signal seen while training
        self.training = False
        self._previous = {}
        self._pid = os.getpid()

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                if signal.getsignal(signum) is signal.SIG_IGN and signum not in (signal.SIGTERM, signal.SIGINT):
                    continue  # ignored on purpose (nohup): keep it so
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}
        if self.received is not None and exc_info[0] is None:
            logger.warning("%s arrived during the final save; the run finished and was saved",
                           signal.Signals(self.received).name)
        return False

    def start_training(self) -> None:
        """From now on a signal is noted, and acted on at the next step boundary."""
        self.training = True

    def pending(self, signum: int) -> int:
        return int(self.received == signum)

    def _handle(self, signum, frame):
        if os.getpid() != self._pid:
            return  # a forked DataLoader worker: the main process decides
        name = signal.Signals(signum).name
        if not self.training:
            raise Interrupted(signum, "while the run was being set up: nothing to save")
        if self.received is None:
            self.received = signum
            _say(f"llava-ln: {name} received: finishing this optimizer step, then writing a checkpoint\n")
        elif signum == signal.SIGINT and self.received == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now (checkpoints already written stay intact)
        else:
            _say(f"llava-ln: {name} received again: still stopping after the checkpoint\n")


def _say(text: str) -> None:
    # A signal handler may interrupt the logging module mid-write: a raw write to stderr is safe.
    try:
        os.write(2, text.encode())
    except OSError:
        pass
