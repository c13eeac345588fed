"""monai_hyperconv.bundle.WeightAverage: the exponential moving average of the weights that the
bundles validate and save."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine

from monai_hyperconv.bundle import WeightAverage


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))


def test_average_matches_the_formula_with_the_decay_ramp():
    net = _net()
    avg = WeightAverage(net, decay=0.5)
    w0 = net[0].weight.detach().clone()
    ref = w0.clone()
    for n in range(4):
        with torch.no_grad():
            net[0].weight.add_(1.0)
            net[1].num_batches_tracked.add_(3)
        avg.update()
        d = min(0.5, (1.0 + n) / (10.0 + n))  # 0.1, 0.18, 0.25, 0.5
        ref = d * ref + (1 - d) * net[0].weight.detach()
    torch.testing.assert_close(avg.module[0].weight, ref, rtol=0, atol=1e-6)
    assert avg.num_updates == 4
    assert int(avg.module[1].num_batches_tracked) == 12  # integer buffers are copied, not averaged
    assert not avg.module[0].weight.requires_grad and net[0].weight.requires_grad
    # the copy is independent of the network
    assert not torch.equal(avg.module[0].weight, net[0].weight)


def test_disabled_average_is_the_network_itself():
    net = _net()
    for decay in (None, 0, 0.0):
        avg = WeightAverage(net, decay=decay)
        assert avg.module is net and not avg.enabled
        avg.update()
        assert avg.num_updates == 0


@pytest.mark.parametrize("decay", [1.0, -0.1, "0.9", float("nan")])
def test_bad_decay_is_rejected(decay):
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(_net(), decay=decay)


def test_handler_skips_non_finite_steps_and_resumes_from_its_state():
    net = _net()
    losses = iter([1.0, float("nan"), 0.5])

    def step(engine, batch):
        with torch.no_grad():
            net[0].weight.add_(0.1)
        return {"loss": torch.tensor(next(losses))}

    engine = Engine(step)
    avg = WeightAverage(net, decay=0.9)
    avg.attach(engine)
    with torch.no_grad():
        net[0].weight.mul_(2.0)  # changed after construction: the average starts from the weights at STARTED
    start = net[0].weight.detach().clone()
    engine.run([0, 1, 2], max_epochs=1)
    assert avg.num_updates == 2  # the NaN step was not averaged in
    d0, d1 = 0.1, min(0.9, 2 / 11)
    ref = d0 * start + (1 - d0) * (start + 0.1)
    ref = d1 * ref + (1 - d1) * (start + 0.3)
    torch.testing.assert_close(avg.module[0].weight, ref, rtol=0, atol=1e-6)

    resumed = WeightAverage(_net(), decay=0.9)
    resumed.load_state_dict(avg.state_dict())
    assert resumed.num_updates == 2
    for a, b in zip(resumed.module.state_dict().values(), avg.module.state_dict().values()):
        assert torch.equal(a, b)
    resumed.sync()  # a resumed average is not restarted from the network
    assert torch.equal(resumed.module[0].weight, avg.module[0].weight)
