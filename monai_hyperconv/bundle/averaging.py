"""Exponential moving average of the weights (Polyak averaging) for validation and the saved model.

Small-data segmentation at a useful learning rate makes the validation score of the *current*
weights jump from epoch to epoch (docs/training.md, section 6): a lesion near the decision
threshold is found in one epoch and missed in the next. Validating and saving an exponential
moving average of the weights instead (Polyak & Juditsky 1992; the ``ExponentialMovingAverage``
of TensorFlow and timm's ``ModelEmaV2``) averages these oscillations out at no extra training
cost. The averaged copy also averages the BatchNorm buffers, so it is evaluated with statistics
that match its weights.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import torch

from .checkpoint import unwrap
from .guards import loss_value

__all__ = ["WeightAverage"]


class WeightAverage:
    """An ignite handler keeping ``module``, an exponential moving average of ``network``'s weights.

    After every training iteration with a finite loss, every floating-point parameter and buffer
    is updated as ``avg = d * avg + (1 - d) * w`` with ``d = min(decay, (1 + n) / (10 + n))``
    (``n``: the number of updates so far; the ramp lets the average forget the random
    initialisation quickly, as in TensorFlow's ``ExponentialMovingAverage(num_updates=...)``);
    integer buffers (BatchNorm's ``num_batches_tracked``) are copied.

    Use ``module`` as the evaluator's network and as the network of the best-model saver, and put
    the handler itself in the checkpoint's ``save_dict`` so a resumed run continues the average.

    Args:
        network: the trained network (a DDP wrapper is unwrapped).
        decay: the averaging decay per iteration, in [0, 1). ``None`` or 0 disables averaging:
            ``module`` is then ``network`` itself (unwrapped) and the handler does nothing.
    """

    def __init__(self, network: torch.nn.Module, decay: float | None = 0.99) -> None:
        if decay is not None and not (isinstance(decay, (int, float)) and 0.0 <= float(decay) < 1.0):
            raise ValueError(f"WeightAverage: decay must be a number in [0, 1) or None, got {decay!r}.")
        self.network = network
        self.decay = float(decay) if decay else 0.0
        self.num_updates = 0
        source = unwrap(network)
        if self.enabled:
            self.module = copy.deepcopy(source)
            for p in self.module.parameters():
                p.requires_grad_(False)
        else:
            self.module = source

    @property
    def enabled(self) -> bool:
        return self.decay > 0.0

    def attach(self, engine) -> None:
        from ignite.engine import Events

        if not self.enabled:
            return
        engine.add_event_handler(Events.STARTED, self.sync)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)

    def sync(self, engine=None) -> None:
        """Start the average from the network's current weights (a run's start; not after a resume)."""
        if self.enabled and self.num_updates == 0:
            self.module.load_state_dict(unwrap(self.network).state_dict())

    def iteration_completed(self, engine) -> None:
        loss = loss_value(engine.state.output)
        if loss is not None and not math.isfinite(loss):
            return  # the NonFiniteGuard skipped or stopped this step; keep the average clean
        self.update()

    @torch.no_grad()
    def update(self) -> None:
        """One averaging step from the network's current weights and buffers."""
        if not self.enabled:
            return
        d = min(self.decay, (1.0 + self.num_updates) / (10.0 + self.num_updates))
        source = unwrap(self.network).state_dict()
        for name, avg in self.module.state_dict().items():
            new = source[name].detach()
            if avg.is_floating_point():
                avg.lerp_(new.to(avg.dtype), 1.0 - d)
            else:
                avg.copy_(new)
        self.num_updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "num_updates": self.num_updates,
                "module": self.module.state_dict() if self.enabled else None}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.num_updates = int(state["num_updates"])
        if self.enabled and state.get("module") is not None:
            self.module.load_state_dict(state["module"])
