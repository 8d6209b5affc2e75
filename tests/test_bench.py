"""tinylab.bench's choice of GPU (the timings themselves are scripts run on a GPU, not tests)."""
import pytest
import torch

from tinylab.bench import __main__ as bench


class Picked(Exception):
    """Raised where the benchmark would start timing: the device is chosen by then."""


def picked(*args):
    raise Picked


@pytest.mark.parametrize("device, index", [("cuda", None), ("cuda:1", 1)])
def test_gpu_benchmarks_run_on_the_device_tinylab_device_names(monkeypatch, device, index):
    from torch.cuda._utils import _get_device_index

    chosen = []
    monkeypatch.setattr(bench, "pick_device", lambda: torch.device(device))
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: chosen.append(_get_device_index(d)))  # torch's own check
    monkeypatch.setattr(torch.cuda, "get_device_name", picked)
    with pytest.raises(Picked):
        bench.main(["matmul"])
    assert chosen == ([] if index is None else [index])
