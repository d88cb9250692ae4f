"""A tokenizer's chat template is a program from a file: run it with its time, memory and output bounded.

`--conv_template auto` renders the tokenizer's Jinja chat template for every sample. transformers
runs it in Jinja's sandbox, which stops it from reaching Python but not from raising, failing to
parse, looping (`range` is capped at 100000 items, but loops nest) or building a huge string
(`'x' * 10**10`). bounded_render turns each into one line naming the template:
  * any exception it raises (a syntax error, raise_exception(), a type error) is that line;
  * time: a trace function on the template's own compiled code (Jinja compiles to Python code
    named "<template>") checks a deadline every few dozen lines, so a loop stops after
    RENDER_SECONDS (skipped when a debugger or coverage tool already traces the process);
  * memory: for the duration of the render the process may map at most RENDER_BYTES more private
    memory (RLIMIT_DATA, Linux), so one huge string fails as a MemoryError instead of taking the
    machine; the limit is put back at once;
  * output: the rendered text may be at most 4 characters per character of message text, plus
    1 MiB (system prompts and turn markers are far below that).
"""
import resource
import sys
import time
from contextlib import contextmanager

from llava_ln.core.errors import LlavaLnError

RENDER_SECONDS = 5.0
RENDER_BYTES = 2**30
TEMPLATE_CODE = "<template>"  # the file name Jinja gives the code it compiles a template to
_CHECK_EVERY = 32


class _OutOfTime(BaseException):
    """Raised inside the template's frames when the deadline passes (BaseException: nothing in the way swallows it)."""


@contextmanager
def _deadline(seconds: float):
    if sys.gettrace() is not None:  # a debugger or coverage owns tracing; the other bounds still hold
        yield
        return
    stop, lines = time.monotonic() + seconds, [0]

    def in_template(frame, event, arg):
        if event == "line":
            lines[0] += 1
            if lines[0] % _CHECK_EVERY == 0 and time.monotonic() > stop:
                raise _OutOfTime
        return in_template

    def on_call(frame, event, arg):
        return in_template if frame.f_code.co_filename == TEMPLATE_CODE else None

    sys.settrace(on_call)
    try:
        yield
    finally:
        sys.settrace(None)


def _private_memory() -> int | None:
    """Bytes of private data mappings now (VmData), or None where /proc does not say."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


@contextmanager
def _memory_limit(extra: int):
    current = _private_memory()
    if current is None:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    wanted = current + extra
    if (soft != resource.RLIM_INFINITY and soft <= wanted) or (hard != resource.RLIM_INFINITY and hard < wanted):
        yield  # already limited at least as tightly
        return
    resource.setrlimit(resource.RLIMIT_DATA, (wanted, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def output_bound(messages) -> int:
    return 4 * sum(len(text) for _, text in messages) + 2**20


def bounded_render(render, messages, what: str = "--conv_template auto") -> str:
    """render() (a chat-template rendering of messages) within the module's bounds; LlavaLnError otherwise."""
    try:
        with _memory_limit(RENDER_BYTES), _deadline(RENDER_SECONDS):
            text = render()
    except _OutOfTime:
        raise LlavaLnError(f"{what}: the tokenizer's chat template ran for more than {RENDER_SECONDS:g} s on one "
                           "conversation (a loop?); pick an explicit template") from None
    except MemoryError:
        raise LlavaLnError(f"{what}: the tokenizer's chat template needed more than {RENDER_BYTES // 2**20} MiB for "
                           "one conversation; pick an explicit template") from None
    except RecursionError:
        raise LlavaLnError(f"{what}: the tokenizer's chat template recursed too deeply; pick an explicit template"
                           ) from None
    except Exception as err:  # noqa: BLE001 - whatever the template raises is the template's fault, told in one line
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise LlavaLnError(f"{what}: the tokenizer's chat template fails ({type(err).__name__}: {first}); pick an "
                           "explicit template") from None
    if not isinstance(text, str):
        raise LlavaLnError(f"{what}: the tokenizer's chat template gave a {type(text).__name__}, not text")
    if len(text) > output_bound(messages):
        raise LlavaLnError(f"{what}: the tokenizer's chat template made {len(text)} characters from "
                           f"{sum(len(t) for _, t in messages)} characters of messages; pick an explicit template")
    return text
