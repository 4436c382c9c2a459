"""The Turbo model's tests (its fixture model and engine: ``tests/conftest.py``)."""

import torch

torch.set_num_threads(1)
