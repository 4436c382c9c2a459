"""Where every T3 input sits: RoPE positions and learned speech positions.

The original T3 prompt of length L is ``[cond | text | BOS | BOS]``; the k-th fed-back speech
token (k = 0, 1, ...) has RoPE position ``L + k`` and learned speech index ``k + 1``.

vLLM gives a decode token only one number, its position. We shift every request's RoPE positions
so that its last prompt row (the second BOS) sits at the same fixed ``SPEECH_ORIGIN`` for all
requests. RoPE attention depends only on position differences, so the shift changes nothing, and
a decode token at position ``p`` has learned speech index ``p - SPEECH_ORIGIN`` whatever its
request's text length, batch neighbours, chunking or preemption history.
"""

from __future__ import annotations

from vllm_chatterbox.config import T3Config


def max_prompt_len(cfg: T3Config) -> int:
    """Conditioning rows + longest text (with start/stop) + two BOS rows."""
    return cfg.cond_len + cfg.text_pos_table_size + 2


def speech_origin(cfg: T3Config) -> int:
    """Shifted RoPE position of every request's last prompt row (the second BOS)."""
    return max_prompt_len(cfg) - 1


def rope_table_size(cfg: T3Config) -> int:
    """Positions up to the last learned speech index must fit the RoPE tables."""
    return speech_origin(cfg) + cfg.speech_pos_table_size


def prompt_position_shift(cfg: T3Config, prompt_len: int) -> int:
    """Amount added to ``arange(prompt_len)`` so that the last prompt row lands on the origin."""
    if not 0 < prompt_len <= max_prompt_len(cfg):
        raise ValueError(f"T3 prompt length {prompt_len} outside 1..{max_prompt_len(cfg)}")
    return speech_origin(cfg) - (prompt_len - 1)
