"""The pipeline tests share the session's tiny random model and its engine (``tests/conftest.py``:
``tiny_model_dir``, ``tts_tiny``)."""

import torch

torch.set_num_threads(1)
