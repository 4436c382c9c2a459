"""Peak memory of S3Gen for one long item (the per-item cap's reason).

``PYTHONPATH=. /usr/bin/time -v python bench/s3gen_memory.py --tokens 4000`` on the tiny
fixture model (random speech tokens, the fixture's built-in voice). Prints the peak RSS that
``resource`` reports, or the error when the input is refused.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from tests.paths import FIXTURE_CKPT
from vllm_chatterbox.config import tiny_config
from vllm_chatterbox.s3gen.model import S3Gen
from vllm_chatterbox.voice.voice import Voice


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--n-timesteps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = S3Gen.from_file(FIXTURE_CKPT / "s3gen.safetensors", tiny_config())
    voice = Voice.load(FIXTURE_CKPT / "conds.pt")
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
