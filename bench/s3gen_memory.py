"""Peak memory of S3Gen for one long item (the per-item cap's reason).

``PYTHONPATH=. /usr/bin/time -v python bench/s3gen_memory.py --tokens 4000`` on the CLI's tiny
random-weight demo model (built once in the cache) or ``--model-dir DIR`` (random speech tokens,
the model's built-in voice). Prints the peak RSS that ``resource`` reports, or the error when
the input is refused.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from vllm_chatterbox.config import ChatterboxConfig
from vllm_chatterbox.demo_model import cached_test_model
from vllm_chatterbox.model_files import ModelFiles
from vllm_chatterbox.s3gen.model import S3Gen
from vllm_chatterbox.t3.engine import cache_root
from vllm_chatterbox.voice.voice import Voice


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--n-timesteps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model-dir", default=None, help="an English model directory (default: the tiny demo model)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model_dir = args.model_dir or cached_test_model(cache_root() / "demo-tiny", "tiny", seed=0)
    files = ModelFiles.from_dir(model_dir, variant="original")
    model = S3Gen.from_file(files.s3gen, ChatterboxConfig.for_model_dir(files.directory))
    voice = Voice.load(files.conds)
    tokens = torch.randint(0, 6561, (args.tokens,), generator=torch.Generator().manual_seed(0)).tolist()
    start = time.perf_counter()
    try:
        wav = model.inference([tokens], [voice], n_timesteps=args.n_timesteps)[0]
        outcome = f"{len(wav) / 24000:.1f} s of audio"
    except ValueError as exc:
        outcome = f"refused: {exc}"
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"tokens={args.tokens} wall={time.perf_counter() - start:.1f}s peak_rss={peak_mib:.0f}MiB {outcome}")


if __name__ == "__main__":
    main()
