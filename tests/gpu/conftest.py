"""Every test in this folder is marked `gpu` and is skipped, with the reason, where CUDA is absent.

`make test-gpu` (`pytest -m gpu`) runs only these; `make test` collects them too and reports
them as skipped on a machine without a GPU. The root conftest sets TINYLAB_DEVICE=cpu for the
rest of the suite; these tests name "cuda" themselves.
"""
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before `-m gpu` deselects by marker
def pytest_collection_modifyitems(config, items):
    no_cuda = pytest.mark.skip(reason=f"needs a CUDA GPU: torch {torch.__version__} sees none "
                                      f"(run `make test-gpu` on a machine with one)")
    for item in items:  # the hook sees the whole session's items: mark only this folder's
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.gpu)
            if not torch.cuda.is_available():
                item.add_marker(no_cuda)
