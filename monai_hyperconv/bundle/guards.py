"""Training that never continues on, or saves, non-finite numbers.

:class:`NonFiniteGuard` (a trainer handler) looks at every step's gradients *before* the
optimiser applies them (an optimiser step pre-hook) and at every step's loss. On a NaN/inf it
either stops the run (``policy="stop"``, the default: :class:`NonFiniteError` naming the epoch,
the iteration and the first non-finite parameter's gradient) or skips the update
(``policy="skip"``: the gradients are dropped, so the optimiser leaves the weights and its state
alone, and the network's buffers, e.g. BatchNorm statistics the bad forward pass updated, are
restored) and stops once ``max_skips`` consecutive steps were skipped. Under AMP the ``GradScaler``
already skips steps with inf/NaN gradients; the loss check still catches a loss that stays
non-finite. :func:`assert_finite` is what the checkpoint writers call so that a non-finite
model is never saved.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["NonFiniteError", "NonFiniteGuard", "assert_finite", "first_non_finite"]

logger = logging.getLogger(__name__)


class NonFiniteError(RuntimeError):
    """A loss, gradient or weight became NaN/inf."""


def first_non_finite(tensors: Mapping[str, Any]) -> str | None:
    """Name of the first floating-point tensor with a NaN/inf entry (nested mappings searched), else None."""
    for name, t in tensors.items():
        if isinstance(t, Mapping):
            inner = first_non_finite(t)
            if inner is not None:
                return f"{name}.{inner}"
        elif isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return str(name)
    return None


def assert_finite(state: Mapping[str, Any], what: str) -> None:
    """Raise :class:`NonFiniteError` if any floating tensor of ``state`` is NaN/inf (``what``: for the message)."""
    bad = first_non_finite(state)
    if bad is not None:
        raise NonFiniteError(f"refusing to save {what}: {bad!r} has non-finite (NaN/inf) values; the previous "
                             f"file (if any) is kept.")


def _loss(output: Any) -> Any:
    if isinstance(output, list) and output:
        output = output[0]
    if isinstance(output, Mapping):
        return output.get("loss")
    return None


def loss_value(output: Any) -> float | None:
    """The loss of a trainer step's output (a dict, or the first of a list of dicts) as a float, or None."""
    loss = _loss(output)
    return float(loss.detach().float().item()) if isinstance(loss, torch.Tensor) else loss


class NonFiniteGuard:
    """Stop (or skip the step) when a loss or gradient is NaN/inf.

    Args:
        optimizer: the trainer's optimiser (its step pre-hook checks the gradients).
        policy: "stop" (raise :class:`NonFiniteError`) or "skip" (drop the step's update).
        max_skips: with "skip", stop after this many consecutive skipped steps.
        network: with "skip", the network whose floating-point buffers (BatchNorm running
            statistics) are restored after a skipped step (copied before every step).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, policy: str = "stop", max_skips: int = 10,
                 network: torch.nn.Module | None = None) -> None:
        if policy not in ("stop", "skip"):
            raise ValueError(f"policy must be 'stop' or 'skip', got {policy!r}.")
        if int(max_skips) < 1:
            raise ValueError(f"max_skips must be >= 1, got {max_skips!r}.")
        self.optimizer = optimizer
        self.policy = policy
        self.max_skips = int(max_skips)
        self.network = network
        self._buffers: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.skipped = 0  # total skipped steps
        self._consecutive = 0
        self._engine = None
        self._hook = None
        self._flagged = False  # this iteration's step was already stopped/skipped by the pre-hook

    def attach(self, engine) -> None:
        from ignite.engine import Events

        self._engine = engine
        self._hook = self.optimizer.register_step_pre_hook(self._pre_step)
        if self.policy == "skip" and self.network is not None:
            engine.add_event_handler(Events.ITERATION_STARTED, self._copy_buffers)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._after_iteration)
        engine.add_event_handler(Events.COMPLETED, self._detach)

    def _where(self) -> str:
        st = getattr(self._engine, "state", None)
        return f"epoch {getattr(st, 'epoch', '?')}, iteration {getattr(st, 'iteration', '?')}"

    def _skip_or_stop(self, what: str) -> None:
        self._consecutive += 1
        if self.policy == "stop" or self._consecutive > self.max_skips:
            extra = f" ({self._consecutive} consecutive steps skipped)" if self.policy == "skip" else ""
            raise NonFiniteError(
                f"{what} at {self._where()}{extra}: training stopped before the update, so the weights and the "
                f"saved model stay finite. Check the data (the pre-training check reports NaN/inf voxels), lower "
                f"the learning rate, or use the guard's policy 'skip' to drop such steps."
            )
        self.skipped += 1
        with torch.no_grad():
            for buf, saved in self._buffers:
                buf.copy_(saved)
        logger.warning(f"{what} at {self._where()}: step skipped ({self.skipped} so far).")

    def _copy_buffers(self, engine) -> None:
        self._buffers = [(b, b.detach().clone()) for b in self.network.buffers() if b.is_floating_point()]

    def _pre_step(self, optimizer, args, kwargs) -> None:
        for g, group in enumerate(optimizer.param_groups):
            for i, p in enumerate(group["params"]):
                if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
                    name = f"param_groups[{g}]['params'][{i}] {tuple(p.shape)}"
                    if self.policy == "skip":
                        for g in optimizer.param_groups:  # no gradient: the optimiser leaves these alone
                            for q in g["params"]:
                                q.grad = None
                    self._skip_or_stop(f"non-finite gradient in {name}")
                    self._flagged = True
                    return
        self._flagged = False

    def _after_iteration(self, engine) -> None:
        v = loss_value(engine.state.output)
        if v is not None and not math.isfinite(v):
            if self._flagged:
                return  # already handled before the step
            self._skip_or_stop(f"non-finite loss ({v})")
        elif not self._flagged:
            self._consecutive = 0
        self._flagged = False

    def _detach(self, engine) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
