"""The multilingual T3 on vLLM against the plain-PyTorch reference loop (text vocabulary 2454).

Four requests decode together (Spanish, English, French, German; different text lengths,
voices, CFG weights incl. 0, exaggerations). At every greedy step we check (a) the raw cond and
uncond logits equal the reference's, teacher-forced on the tokens vLLM produced (atol 1e-3, as
in tests/t3: fp32 on both sides, differing only in kernel summation order), and (b) vLLM's
token is the argmax of the reference's guided logits (CFG + repetition penalty) unless the
reference's top-2 margin is below 1e-2. Also: the multilingual audio trim and ``language`` in
``generate_long``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from reference.t3 import ReferenceT3
from tests.t3.llama.driver import assert_matches_reference, run_recorded
from vllm_chatterbox.demo_model import random_voice
from vllm_chatterbox.pipeline.batch import s3gen_seed
from vllm_chatterbox.voice.voice import Voice

LOGITS_ATOL = 1e-3
FLIP_MARGIN = 1e-2
STEPS = 48
REPETITION_PENALTY = 1.2
SAMPLES_PER_TOKEN = 960  # 24 kHz / 25 tokens per second


@dataclass(frozen=True)
class Job:
    tag: str
    language: str
    text: str
    voice: Voice
    exaggeration: float
    cfg_weight: float


@pytest.fixture(scope="module")
def reference(mtl_tts):
    return ReferenceT3(mtl_tts.files.t3, mtl_tts.config.t3)


@pytest.fixture(scope="module")
def jobs(mtl_tts):
    voices = [mtl_tts.builtin_voice, random_voice(torch.Generator().manual_seed(21), prompt_tokens=150),
              random_voice(torch.Generator().manual_seed(22), prompt_tokens=60),
              random_voice(torch.Generator().manual_seed(23), prompt_tokens=100)]
    return [
        Job("es", "es", "Hola.", voices[0], 0.5, 0.5),
        Job("en", "en", "The lighthouse keeper counted ships until the fog rolled in.", voices[1], 0.9, 0.3),
        Job("fr", "fr", "Après la tempête, le village s'est réuni sur la plage pour compter ce que la mer "
                        "avait rendu : du bois flotté, des flotteurs de verre et une lettre illisible.",
            voices[2], 0.3, 0.0),
        Job("de", "de", "Sieben helle Laternen schwangen über dem Marktplatz.", voices[3], 1.2, 1.0),
    ]


def test_mixed_language_batch_matches_reference(mtl_tts, reference, jobs, tmp_path):
    requests = [
        mtl_tts.prepare_t3_requests(j.text, j.voice, language=j.language, exaggeration=j.exaggeration,
                                    cfg_weight=j.cfg_weight, repetition_penalty=REPETITION_PENALTY, temperature=0,
                                    max_new_tokens=STEPS)[0]
        for j in jobs
    ]
    outputs = run_recorded(mtl_tts.t3_engine, requests, tmp_path, [j.tag for j in jobs])
    stop = mtl_tts.config.t3.stop_speech_token
    for job in jobs:
        tokens = list(outputs[job.tag].token_ids)
        assert len(tokens) == STEPS or tokens[-1] == stop
        assert len(tokens) >= 40, f"{job.tag}: stopped after {len(tokens)} tokens"
        assert_matches_reference(reference, mtl_tts, job, mtl_tts.text_token_ids(job.text, job.language), tokens,
                                 tmp_path, repetition_penalty=REPETITION_PENALTY, logits_atol=LOGITS_ATOL,
                                 flip_margin=FLIP_MARGIN)


def test_audio_drops_the_last_tokens_samples(mtl_tts):
    """As the original at HEAD: keep max(1, Ts - 1) * 960 samples of the vocoded audio."""
    options = dict(language="es", temperature=0, max_new_tokens=12)
    tokens = mtl_tts.generate_speech_tokens("Hola mundo.", **options)[0]
    assert len(tokens) > 2
    wav = mtl_tts.generate("Hola mundo.", **options, n_timesteps=2, seed=7)[0]
    full = mtl_tts.s3gen.inference([tokens], [mtl_tts.builtin_voice], n_timesteps=2,
                                   seeds=[s3gen_seed(7)])[0]
    assert len(full) == len(tokens) * SAMPLES_PER_TOKEN
    assert len(wav) == (len(tokens) - 1) * SAMPLES_PER_TOKEN
    np.testing.assert_allclose(wav, full[: len(wav)], atol=1e-5)
    again = mtl_tts.speech_tokens_to_audio([tokens], n_timesteps=2, seed=7)[0]
    np.testing.assert_allclose(again, wav, atol=1e-5)
    one = mtl_tts.speech_tokens_to_audio([tokens[:1]], n_timesteps=2, seed=7)[0]
    assert len(one) == SAMPLES_PER_TOKEN  # a single token keeps its audio


def test_generate_long_passes_the_language(mtl_tts, monkeypatch):
    seen = []
    prepare = mtl_tts.prepare_t3_requests

    def spy(texts, voice=None, **parameters):
        seen.append((list(texts), parameters.get("language")))
        return prepare(texts, voice, **parameters)

    monkeypatch.setattr(mtl_tts, "prepare_t3_requests", spy)
    text = "Buenos días a todos. ¿Cómo están hoy? Vamos a la playa."
    wav = mtl_tts.generate_long(text, language="es", max_chunk_tokens=24, temperature=0, max_new_tokens=6,
                                n_timesteps=2, progress=False)
    (chunks, language), = seen
    assert language == "es" and len(chunks) > 1
    # Chunks were measured with the multilingual tokeniser (language tag included).
    assert all(len(mtl_tts.text_token_ids(c, "es")) - 2 <= 24 for c in chunks)
    assert wav.dtype == np.float32 and len(wav) > 0
