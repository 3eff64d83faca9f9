"""What a check returns, and the guards that turn a student's broken code into feedback.

`call_student` runs the student's function under a time limit and turns every way it can
fail (NotImplementedError, any exception, a runaway) into `StudentProblem` with a one-line
message; `as_number` / `as_matrix` / `as_mask` check what it returned (type, shape, dtype,
NaN). `compare` decides pass/fail against the ground truth and, on failure, names the known
mistake the answer matches (each mistake's value computed from the same inputs).

The grade cell of a notebook ends with the `CheckResult`: its repr is the bare number of
points, which nbgrader's autograder reads as the cell's partial credit.
"""
from __future__ import annotations

import contextlib
import io
import math
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Callable

import torch

DEFAULT_TIME_LIMIT = 60.0   # seconds one call of a student's function may take
RTOL, ATOL = 1e-5, 1e-8     # agreement with the ground truth (float64 models): relative, and absolute x scale


@dataclass(repr=False)
class CheckResult:
    """Outcome of one exercise's check."""

    exercise: str
    passed: bool
    points: float
    max_points: float
    feedback: str

    def line(self) -> str:
        tag = "PASS" if self.passed else "FAIL"
        return f"[{tag}] {self.exercise}: {self.feedback} ({self.points:g}/{self.max_points:g} points)"

    def __repr__(self) -> str:
        # the notebook's grade cell shows this value; nbgrader reads it as the cell's score
        return f"{self.points:g}"


class StudentProblem(Exception):
    """The student's code failed in a way that is the student's to fix (message: one line)."""


class _TimeUp(BaseException):
    """Raised by the alarm; a BaseException so that a student's `except Exception` cannot eat it."""


@contextlib.contextmanager
def _time_limit(seconds: float):
    """Interrupt the block after `seconds` (SIGALRM: Unix main thread; elsewhere checked after)."""
    use_alarm = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not use_alarm:
        start = time.monotonic()
        yield
        if time.monotonic() - start > seconds:
            raise _TimeUp
        return

    def on_alarm(signum, frame):
        raise _TimeUp

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160]}" if text else type(e).__name__


def call_student(fn, *args, time_limit: float = DEFAULT_TIME_LIMIT):
    """fn(*args), or `StudentProblem` saying in one line why there is no usable answer.

    Warnings are silenced and stderr goes to stdout during the call: nbgrader gives zero
    points to a grade cell that writes to stderr, and a warning is not a wrong answer.
    """
    if fn is None:
        raise StudentProblem("your function is not defined: run its cell above (and check that it finished "
                             "without an error)")
    if not callable(fn):
        raise StudentProblem(f"expected your function, got a {type(fn).__name__}")
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(sys.stdout), _time_limit(time_limit):
            warnings.simplefilter("ignore")
            return fn(*args)
    except NotImplementedError:
        raise StudentProblem("not yet implemented: replace `raise NotImplementedError()` in the cell "
                             "above with your code, run that cell, then this one") from None
    except _TimeUp:
        raise StudentProblem(f"stopped after {time_limit:g} s: an endless loop, or a loop over edges "
                             "where one forward/backward for all edges is enough?") from None
    except Exception as e:   # noqa: BLE001 - any error of the student's code is feedback
        raise StudentProblem(f"your function raised {_one_line(e)}") from None


def as_number(out) -> float:
    """A finite Python float from a float / 0-d tensor / one-element array."""
    if isinstance(out, torch.Tensor):
        if out.numel() != 1:
            raise StudentProblem(f"returned a tensor of shape {list(out.shape)}; expected one number "
                                 "(the mean over the batch: .mean().item())")
        out = out.item()
    if hasattr(out, "item") and not isinstance(out, (int, float)):
        out = out.item()
    if isinstance(out, bool) or not isinstance(out, (int, float)):
        raise StudentProblem(f"returned {type(out).__name__}; expected one number (a float)")
    if not math.isfinite(out):
        raise StudentProblem(f"returned {out}: look for a division by zero or a log of 0")
    return float(out)


def as_matrix(out, shape: tuple[int, ...], what: str) -> torch.Tensor:
    """A finite float64 tensor of exactly `shape` (`what` names the axes for messages)."""
    if not isinstance(out, torch.Tensor):
        raise StudentProblem(f"returned {type(out).__name__}; expected a torch.Tensor of shape {what} = {list(shape)}")
    if tuple(out.shape) != tuple(shape):
        raise StudentProblem(f"returned shape {list(out.shape)}; expected {what} = {list(shape)}")
    if not out.is_floating_point():
        raise StudentProblem(f"returned dtype {out.dtype}; expected a floating-point tensor (scores are real numbers)")
    out = out.detach().to("cpu", torch.float64)
    if not torch.isfinite(out).all():
        raise StudentProblem(f"returned {int((~torch.isfinite(out)).sum())} NaN/inf entries")
    return out


def as_mask(out, shape: tuple[int, ...], what: str) -> torch.Tensor:
    """A bool tensor of exactly `shape` (a circuit: True = the edge is in it)."""
    if not isinstance(out, torch.Tensor):
        raise StudentProblem(f"returned {type(out).__name__}; expected a bool torch.Tensor of shape {what} = {list(shape)}")
    if tuple(out.shape) != tuple(shape):
        raise StudentProblem(f"returned shape {list(out.shape)}; expected {what} = {list(shape)}")
    if out.dtype != torch.bool:
        raise StudentProblem(f"returned dtype {out.dtype}; expected torch.bool (True = the edge is in the circuit)")
    return out.detach().cpu()


def close(got, want, rtol: float = RTOL, atol: float = ATOL) -> bool:
    """Every entry of got within atol * scale + rtol * |want| of want (scale: max |want|, at least 1)."""
    got, want = torch.as_tensor(got, dtype=torch.float64), torch.as_tensor(want, dtype=torch.float64)
    if got.shape != want.shape:
        return False
    scale = max(1.0, float(want.abs().max())) if want.numel() else 1.0
    return bool(((got - want).abs() <= atol * scale + rtol * want.abs()).all())


def compare(exercise: str, points: float, got, want, mistakes, where: Callable[[int], str], ok_text: str) -> CheckResult:
    """Pass if got matches want; else the first known mistake it matches, else where it differs most.

    mistakes: [(value, hint)], the value that mistake gives on the same inputs. where(i): a
    name for flat index i (an edge, a model shape) for the message.
    """
    got_t, want_t = torch.as_tensor(got, dtype=torch.float64), torch.as_tensor(want, dtype=torch.float64)
    if close(got_t, want_t):
        return CheckResult(exercise, True, points, points, ok_text)
    err = (got_t - want_t).abs().flatten()
    i = int(err.argmax())
    at = f"largest difference at {where(i)}: yours {got_t.flatten()[i].item():.6g}, expected {want_t.flatten()[i].item():.6g}"
    for value, hint in mistakes:
        if close(got_t, value):
            return CheckResult(exercise, False, 0.0, points, f"{hint} ({at})")
    return CheckResult(exercise, False, 0.0, points, f"does not match the ground truth; {at}")


def run_check(exercise: str, points: float, body: Callable[[], CheckResult], verbose: bool = True) -> CheckResult:
    """Run a check body; a `StudentProblem` becomes a zero-point result. Prints the one line."""
    try:
        # the checker's own model boots print progress bars to stderr: nbgrader would zero the cell
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            res = body()
    except StudentProblem as p:
        res = CheckResult(exercise, False, 0.0, points, str(p))
    if verbose:
        print(res.line())
    return res
