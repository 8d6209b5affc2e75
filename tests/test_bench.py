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


def test_lm_head_benchmark_parses_and_asks_for_cuda(monkeypatch, capsys):
    """python -m tinylab.bench.lm_head: --help works anywhere; without a GPU it says so before any work."""
    from tinylab.bench import lm_head
    from tinylab.errors import DeviceError, UsageError

    with pytest.raises(SystemExit) as exit_:
        lm_head.main(["--help"])
    assert exit_.value.code == 0 and "--kernels" in capsys.readouterr().out
    with pytest.raises(UsageError, match="not one of"):
        lm_head.main(["--kernels", "auto,fp9"])
    monkeypatch.setattr(lm_head, "pick_device", lambda: torch.device("cpu"))
    with pytest.raises(DeviceError, match="CUDA"):
        lm_head.main([])
