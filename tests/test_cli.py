"""The ``vllm-chatterbox`` command: the README's main job, voices, and one-line errors."""

import contextlib
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch

from tests.paths import SHARED_DIR
from vllm_chatterbox import cli
from vllm_chatterbox.demo_model import make_test_model
from vllm_chatterbox.voice.voice import Voice
from vllm_chatterbox.watermark import apply_watermark, detect, is_marked

REFERENCE_WAV = SHARED_DIR / "fixtures" / "tiny" / "audio" / "voice2_24k.wav"


def run_cli(*args, cache_dir, timeout=600):
    env = dict(os.environ, VLLM_CHATTERBOX_CACHE=str(cache_dir))
    return subprocess.run([sys.executable, "-m", "vllm_chatterbox.cli", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout)


def assert_quiet_exit(result) -> None:
    """rc 0 and nothing alarming at exit: the engine was shut down, not left to vLLM's __del__."""
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    for alarm in ("Traceback", "ERROR", "Exception ignored"):
        assert alarm not in output, output[-3000:]
    # Start-up noise a newcomer should not meet (issue 20): vLLM's INFO lines, its Triton notice and
    # checkpoint loading bars, the deprecation its Triton dispatcher triggers, torch's C++ NUMA notice.
    for noise in (" INFO ", "Triton", "Loading safetensors", "FutureWarning", "NUMA binding"):
        assert noise not in output, output[-3000:]


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("vllm-chatterbox: error: ")
    return err[0]


def test_speak_without_model_uses_the_demo_model_and_says_so(tmp_path):
    """The README's first command, after set-up."""
    out = tmp_path / "hello.wav"
    result = run_cli("speak", "Hello from the test.", "-o", out, "--max-new-tokens", 12, "--seed", 1,
                     cache_dir=tmp_path / "cache")
    assert_quiet_exit(result)
    assert "RANDOM-WEIGHT demo model" in result.stderr
    assert "noise, not speech" in result.stderr
    wav, rate = soundfile.read(out)
    assert rate == 24000 and wav.ndim == 1
    assert 0 < len(wav) <= 12 * 960
    assert np.isfinite(wav).all() and np.abs(wav).max() > 0
    assert is_marked(detect(wav, rate)), "the default output carries the watermark"


def use_session_engine(monkeypatch, model_dir, tts) -> list:
    """``speak --model <a session model>`` in this process on that model's session engine
    (``tests/conftest.py``): the command runs as in its own process, without a 15-50 s engine
    start of its own (the README command's test still pays one, in a real subprocess). Returns
    the list of model loads."""
    loads = []

    def load(files, args):
        assert files.t3.parent == model_dir, files
        loads.append(args)
        return contextlib.nullcontext(tts)  # speak closes what it loads; the session engine stays up

    monkeypatch.setattr(cli, "_load_model", load)
    return loads


@pytest.fixture
def session_engine(monkeypatch, tts_tiny, tiny_model_dir):
    return use_session_engine(monkeypatch, tiny_model_dir, tts_tiny)


def test_speak_file_with_model_and_voice(tmp_path, tiny_model_dir, session_engine, caplog):
    caplog.set_level(logging.INFO, logger="vllm_chatterbox")
    text = tmp_path / "chapter.txt"
    text.write_text("The first sentence of the chapter. " * 3 + "And the last one.", encoding="utf-8")
    out = tmp_path / "chapter.wav"
    assert cli.main(["speak", "--file", str(text), "-o", str(out), "--model", str(tiny_model_dir),
                     "--voice", str(REFERENCE_WAV), "--max-new-tokens", "8", "--seed", "3", "--exaggeration", "0.7",
                     "--cfg-weight", "0.3", "--no-watermark"]) == 0
    assert len(session_engine) == 1
    assert "RANDOM-WEIGHT" not in caplog.text
    wav, rate = soundfile.read(out)
    assert rate == 24000 and len(wav) > 0
    assert not is_marked(detect(wav, rate)), "--no-watermark output carries the watermark"


STREAM_ARGS = ["A streamed sentence. And a second one.", "--stream", "--max-new-tokens", "30", "--seed", "2",
               "--n-timesteps", "2"]


@pytest.mark.parametrize("model,engine", [("tiny_model_dir", "tts_tiny"), ("turbo_model_dir", "turbo_tts")])
def test_speak_stream_writes_pieces_and_reports_first_audio(tmp_path, monkeypatch, request, caplog, model, engine):
    caplog.set_level(logging.INFO, logger="vllm_chatterbox")
    directory = request.getfixturevalue(model)
    loads = use_session_engine(monkeypatch, directory, request.getfixturevalue(engine))
    out = tmp_path / "streamed.flac"
    assert cli.main(["speak", *STREAM_ARGS, "-o", str(out), "--model", str(directory)]) == 0
    assert len(loads) == 1
    assert "time to first audio:" in caplog.text
    wav, rate = soundfile.read(out)
    assert rate == 24000 and 0 < len(wav) <= 2 * 30 * 960 + 24000
    assert not list(tmp_path.glob(".streamed.flac.*")), "the temporary file was left behind"
    assert is_marked(detect(wav, rate)), "the streamed output carries the watermark"


def test_voice_command_writes_a_loadable_voice_without_starting_vllm(tmp_path, tiny_model_dir, monkeypatch, capsys):
    def no_engine(*args, **kwargs):
        raise AssertionError("the voice command started the T3 engine")

    monkeypatch.setattr("vllm_chatterbox.tts.T3Engine", no_engine)
    out = tmp_path / "voice.pt"
    assert cli.main(["voice", str(REFERENCE_WAV), "-o", str(out), "--model", str(tiny_model_dir),
                     "--exaggeration", "0.3"]) == 0
    voice = Voice.load(out)
    builtin = Voice.load(tiny_model_dir / "conds.pt")
    assert voice.exaggeration == pytest.approx(0.3)
    for name in ("speaker_emb", "embedding"):
        assert getattr(voice, name).shape == getattr(builtin, name).shape
        assert torch.isfinite(getattr(voice, name)).all()
    assert voice.prompt_feat.shape[-1] == builtin.prompt_feat.shape[-1]


@pytest.mark.parametrize("args,message", [
    (["speak", "-o", "x.wav"], "give the text to speak as TEXT or --file FILE"),
    (["speak", "Hi.", "--file", "t.txt", "-o", "x.wav"], "give the text to speak as TEXT or --file FILE"),
    (["speak", "--file", "/nonexistent/chapter.txt", "-o", "x.wav"], "cannot read --file"),
])
def test_speak_errors_are_one_line_and_non_zero(args, message, capsys):
    assert cli.main(args) == 2
    assert message in error_line(capsys)


def test_voice_errors_are_one_line_and_non_zero(tmp_path, tiny_model_dir, capsys):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"this is not audio")
    assert cli.main(["voice", str(bad), "-o", str(tmp_path / "v.pt"), "--model", str(tiny_model_dir)]) == 2
    assert "bad.wav" in error_line(capsys)


def test_watermark_unavailable_fails_before_loading_the_model(monkeypatch, capsys, tmp_path):
    import importlib.metadata

    import vllm_chatterbox.watermark as watermark

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    monkeypatch.setattr(cli, "_model_files", lambda *a: pytest.fail("model files read before the watermark check"))
    watermark._load.cache_clear()
    try:
        assert cli.main(["speak", "Hi.", "-o", str(tmp_path / "x.wav")]) == 2
    finally:
        watermark._load.cache_clear()
    line = error_line(capsys)
    assert "resemble-perth is not installed" in line and "--no-watermark" in line


@pytest.fixture(scope="module")
def detect_files(tmp_path_factory):
    """A marked and an unmarked speech clip (wav, and the marked one as mp3 and opus), a
    broken file."""
    from vllm_chatterbox.server.encoding import AudioEncoder

    directory = tmp_path_factory.mktemp("detect")
    speech, rate = soundfile.read(REFERENCE_WAV, dtype="float32")
    marked = apply_watermark(speech, rate)
    soundfile.write(directory / "marked.wav", marked, rate)
    soundfile.write(directory / "plain.flac", speech, rate)
    for response_format in ("mp3", "opus"):
        encoder = AudioEncoder(response_format)
        (directory / f"marked.{response_format}").write_bytes(encoder.encode(marked) + encoder.finish())
    (directory / "broken.wav").write_bytes(b"RIFF but not really a wav file")
    return directory


def detect_lines(capsys) -> tuple[list[list[str]], list[str]]:
    captured = capsys.readouterr()
    return [line.split("\t") for line in captured.out.splitlines()], captured.err.splitlines()


def test_detect_prints_path_confidence_verdict(detect_files, capsys):
    files = [detect_files / name for name in ("marked.wav", "marked.mp3", "marked.opus")]
    assert cli.main(["detect", *map(str, files)]) == 0
    lines, errors = detect_lines(capsys)
    assert errors == []
    assert [line[0] for line in lines] == list(map(str, files))
    for path, confidence, verdict in lines:
        assert verdict == "marked" and float(confidence) > 0.5, (path, confidence)


def test_detect_exit_codes(detect_files, capsys):
    marked, plain, broken = (str(detect_files / name) for name in ("marked.wav", "plain.flac", "broken.wav"))
    assert cli.main(["detect", marked, plain]) == 1
    lines, errors = detect_lines(capsys)
    assert [line[2] for line in lines] == ["marked", "unmarked"] and errors == []
    assert float(lines[1][1]) < 0.5

    assert cli.main(["detect", broken, marked, str(detect_files / "missing.wav")]) == 2
    lines, errors = detect_lines(capsys)
    assert [line[0] for line in lines] == [marked]  # the readable file is still reported
    assert len(errors) == 2 and all(e.startswith("vllm-chatterbox: error: ") for e in errors)
    assert "broken.wav: not a readable audio file" in errors[0] and "missing.wav: no such file" in errors[1]


def test_make_test_model(tmp_path, capsys):
    assert cli.main(["make-test-model", str(tmp_path / "m"), "--size", "tiny", "--seed", "2"]) == 0
    assert {"t3_cfg.safetensors", "s3gen.safetensors", "ve.safetensors", "tokenizer.json", "conds.pt"} <= \
        {p.name for p in (tmp_path / "m").iterdir()}


def test_missing_language_package_is_a_one_line_error(monkeypatch, capsys, tmp_path):
    """Japanese without pykakasi: the tokenizer's ImportError becomes the CLI's one-line error."""
    from tests.paths import SHARED_DATA
    from vllm_chatterbox.text import MultilingualTokenizer

    tokenizer = MultilingualTokenizer.from_file(SHARED_DATA / "grapheme_mtl_merged_expanded_v1.json")

    class TokenizingOnly:
        def generate(self, text, voice, language=None, **params):
            return [tokenizer.encode(text, language)]

    monkeypatch.setitem(sys.modules, "pykakasi", None)
    monkeypatch.setenv("VLLM_CHATTERBOX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cli, "_load_model", lambda *a: TokenizingOnly())
    assert cli.main(["speak", "東京です。", "-o", str(tmp_path / "ja.wav"), "--language", "ja", "--multilingual"]) == 2
    assert "pykakasi" in error_line(capsys)


# ---------------------------------------------------------------- checked before the engine starts


class FakeTTS:
    """The loaded model, minus vLLM: records what speak asks for and returns a short waveform."""

    def __init__(self):
        self.calls = []
        self.closed = False

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.closed = True

    def resolve_voice(self, voice):
        return voice

    def generate(self, text, voice, **params):
        self.calls.append((text, voice, params))
        return [np.linspace(-0.5, 0.5, 2400, dtype=np.float32)]


@pytest.fixture
def no_engine(monkeypatch):
    """speak must fail before the model (and so vLLM) is loaded."""
    monkeypatch.setattr(cli, "_load_model", lambda *a: pytest.fail("the model was loaded before the check"))


@pytest.fixture
def fake_tts(monkeypatch):
    tts = FakeTTS()
    monkeypatch.setattr(cli, "_load_model", lambda *a: tts)
    return tts


@pytest.mark.parametrize("output,message", [
    ("noext", "has no extension; give a file name ending in .wav, .flac"),
    ("out.txt", "unsupported extension '.txt'; use .wav, .flac"),
    ("", "is a directory"),
    ("sub/", "is a directory"),
])
def test_bad_output_path_fails_before_any_work(tmp_path, tiny_model_dir, no_engine, capsys, output, message):
    (tmp_path / "sub").mkdir()
    target = str(tmp_path / output) if output else str(tmp_path)
    if output == "sub/":
        target = str(tmp_path / "sub") + "/"
    assert cli.main(["speak", "Hello.", "-o", target, "--model", str(tiny_model_dir)]) == 2
    assert message in error_line(capsys)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any directory")
def test_unwritable_output_directory_fails_before_any_work(tmp_path, tiny_model_dir, no_engine, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        assert cli.main(["speak", "Hello.", "-o", str(locked / "x.wav"), "--model", str(tiny_model_dir)]) == 2
    finally:
        locked.chmod(0o700)
    assert "is not writable" in error_line(capsys)


def test_voice_output_must_be_pt(tmp_path, tiny_model_dir, capsys, monkeypatch):
    monkeypatch.setattr(cli, "_model_files", lambda *a: pytest.fail("model files read before the output check"))
    assert cli.main(["voice", str(REFERENCE_WAV), "-o", str(tmp_path / "voice.wav")]) == 2
    assert "unsupported extension '.wav'; use .pt" in error_line(capsys)


@pytest.mark.parametrize("value", ["3", "-0.5", "nan"])
def test_voice_exaggeration_has_speaks_range(tmp_path, capsys, monkeypatch, value):
    monkeypatch.setattr(cli, "_model_files", lambda *a: pytest.fail("model files read before the check"))
    assert cli.main(["voice", str(REFERENCE_WAV), "-o", str(tmp_path / "v.pt"), "--exaggeration", value]) == 2
    assert "exaggeration must be" in error_line(capsys)


@pytest.mark.parametrize("args,message", [
    (["--temperature", "5"], r"temperature must be in [0.0, 2.0], got 5.0"),
    (["--exaggeration", "2.5"], "exaggeration must be in"),
    (["--seed", str(2 ** 64)], "seed must be None or an integer in [0, 2**64 - 1]"),
    (["--n-timesteps", "0"], "n_timesteps must be an integer in [1, 100]"),
    (["--max-new-tokens", "0"], "max_new_tokens must be in"),
    (["--language", "xx"], "unsupported language 'xx'"),
])
def test_bad_parameters_fail_in_well_under_a_second(tmp_path, no_engine, capsys, monkeypatch, args, message):
    """Without --model, even the demo model is not looked at before the parameters are checked."""
    import time

    monkeypatch.setattr(cli, "_model_files", lambda *a: pytest.fail("model files read before the check"))
    start = time.perf_counter()
    assert cli.main(["speak", "Hello.", "-o", str(tmp_path / "x.wav"), *args]) == 2
    assert time.perf_counter() - start < 0.5
    assert message in error_line(capsys)


def test_temperature_5_from_a_fresh_process_fails_fast(tmp_path):
    """The whole command says so in about a second, interpreter start-up included (it took ~40 s):
    neither torch nor vLLM is imported before the arguments are checked."""
    import time

    code = ("import sys; from vllm_chatterbox import cli; "
            f"code = cli.main(['speak', 'Hello.', '-o', {str(tmp_path / 'x.wav')!r}, '--temperature', '5']); "
            "print(code, 'torch' in sys.modules, 'vllm' in sys.modules)")
    env = dict(os.environ, VLLM_CHATTERBOX_CACHE=str(tmp_path / "cache"))
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - start
    assert result.stdout.split() == ["2", "False", "False"], result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == ["vllm-chatterbox: error: temperature must be in [0.0, 2.0], got 5.0"]
    assert elapsed < 5, f"{elapsed:.1f} s (about 1 s on an idle 2-core machine)"
    assert not (tmp_path / "cache").exists(), "the demo model was built before the check"


def test_invalid_utf8_argument_is_one_line(tmp_path):
    env = dict(os.environ, VLLM_CHATTERBOX_CACHE=str(tmp_path / "cache"), LC_ALL="C.UTF-8")
    result = subprocess.run([sys.executable, "-m", "vllm_chatterbox.cli", "speak", b"caf\xe9 noir",
                             "-o", str(tmp_path / "x.wav")], env=env, capture_output=True, timeout=60)
    err = result.stderr.decode("utf-8", "replace").strip().splitlines()
    assert result.returncode == 2 and len(err) == 1, err
    assert "text is not valid UTF-8/Unicode: undecodable character at position 3" in err[0]


def test_empty_text_fails_before_the_engine(tmp_path, tiny_model_dir, no_engine, capsys):
    assert cli.main(["speak", "  ", "-o", str(tmp_path / "x.wav"), "--model", str(tiny_model_dir)]) == 2
    assert "text is empty" in error_line(capsys)


def test_long_file_is_not_limited_but_its_language_is_checked(tmp_path, tiny_model_dir, no_engine, capsys):
    text = tmp_path / "t.txt"
    text.write_text("Hello there. " * 400, encoding="utf-8")
    assert cli.main(["speak", "--file", str(text), "-o", str(tmp_path / "x.wav"), "--model", str(tiny_model_dir),
                     "--language", "fr"]) == 2
    assert "the English model cannot speak language 'fr'" in error_line(capsys)


@pytest.fixture(scope="module")
def turbo_dir(tmp_path_factory):
    return make_test_model(tmp_path_factory.mktemp("cli-turbo"), "tiny", seed=0, variant="turbo")


def test_turbo_text_is_checked_with_its_own_tokenizer(tmp_path, turbo_dir, fake_tts, capsys):
    """The checks before the model loads use the Turbo model's GPT-2 tokenizer and its rules."""
    out = tmp_path / "x.wav"
    assert cli.main(["speak", "Oh [sigh] hello.", "-o", str(out), "--model", str(turbo_dir)]) == 0
    assert fake_tts.calls[0][0] == "Oh [sigh] hello." and out.exists()
    capsys.readouterr()
    fake_tts.calls.clear()
    assert cli.main(["speak", "Hello.", "-o", str(out), "--model", str(turbo_dir), "--language", "fr"]) == 2
    assert "the turbo model speaks English only" in error_line(capsys) and not fake_tts.calls


def test_file_that_is_not_utf8_is_one_line(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_bytes(b"caf\xe9")
    assert cli.main(["speak", "--file", str(text), "-o", str(tmp_path / "x.wav")]) == 2
    assert "is not UTF-8 text" in error_line(capsys)


def test_mistyped_local_model_path_is_a_missing_directory(tmp_path, no_engine, capsys, monkeypatch):
    monkeypatch.setattr("vllm_chatterbox.model_files.download", lambda *a, **k: pytest.fail("tried the hub"))
    for model in (str(tmp_path / "chaterbox"), "./models/chatterbox", "~/no/such/model", "chatterbox"):
        assert cli.main(["speak", "Hi.", "-o", str(tmp_path / "x.wav"), "--model", model]) == 2
        assert "model directory not found" in error_line(capsys)


@pytest.mark.parametrize("name,damage,message", [
    ("t3_cfg.safetensors", "truncate", "t3_cfg.safetensors: not a valid safetensors file, damaged or incomplete"),
    ("s3gen.safetensors", "garbage", "s3gen.safetensors: not a valid safetensors file"),
    ("ve.safetensors", "truncate", "ve.safetensors: not a valid safetensors file"),
    ("tokenizer.json", "truncate", "tokenizer.json: not a valid tokenizer file"),
    ("conds.pt", "truncate", "conds.pt: damaged or incomplete"),
])
def test_damaged_model_files_are_one_line(tmp_path, tiny_model_dir, no_engine, capsys, name, damage, message):
    model = tmp_path / "model"
    model.mkdir()
    for path in tiny_model_dir.iterdir():
        (model / path.name).symlink_to(path)
    (model / name).unlink()
    data = (tiny_model_dir / name).read_bytes()
    (model / name).write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00garbage" * 1000)
    assert cli.main(["speak", "Hi.", "-o", str(tmp_path / "x.wav"), "--model", str(model)]) == 2
    assert message in error_line(capsys)


def test_malicious_voice_pickle_error_never_suggests_unsafe_loading(tmp_path, tiny_model_dir, no_engine, capsys):
    class RunsCode:
        def __reduce__(self):
            return (os.getcwd, ())

    evil = tmp_path / "evil.pt"
    torch.save({"t3": RunsCode(), "gen": {}}, evil)
    assert cli.main(["speak", "Hi.", "-o", str(tmp_path / "x.wav"), "--model", str(tiny_model_dir),
                     "--voice", str(evil)]) == 2
    line = error_line(capsys)
    assert "refused" in line and "weights_only" not in line


def test_wav_renamed_pt_voice_is_named_as_audio(tmp_path, tiny_model_dir, no_engine, capsys):
    renamed = tmp_path / "voice.pt"
    renamed.write_bytes(REFERENCE_WAV.read_bytes())
    assert cli.main(["speak", "Hi.", "-o", str(tmp_path / "x.wav"), "--model", str(tiny_model_dir),
                     "--voice", str(renamed)]) == 2
    assert "voice.pt: this is an audio file, not a conds.pt voice file" in error_line(capsys)


def test_bad_reference_audio_fails_before_the_engine(tmp_path, tiny_model_dir, no_engine, capsys):
    loud = tmp_path / "loud.wav"
    soundfile.write(loud, np.full(24000, 1e30, dtype=np.float32), 24000, subtype="FLOAT")
    assert cli.main(["speak", "Hi.", "-o", str(tmp_path / "x.wav"), "--model", str(tiny_model_dir),
                     "--voice", str(loud)]) == 2
    assert "float audio must lie in [-1, 1]" in error_line(capsys)


def test_speak_leaves_exaggeration_to_the_voice(tmp_path, tiny_model_dir, fake_tts):
    saved = tmp_path / "v.pt"
    Voice.load(tiny_model_dir / "conds.pt").with_exaggeration(0.7).save(saved)
    out = tmp_path / "x.flac"
    assert cli.main(["speak", "Hi.", "-o", str(out), "--model", str(tiny_model_dir), "--voice", str(saved)]) == 0
    (_, voice, params), = fake_tts.calls
    assert params.get("exaggeration") is None and voice.exaggeration == pytest.approx(0.7)
    assert soundfile.info(str(out)).format == "FLAC"


def test_wav_is_written_atomically(tmp_path, tiny_model_dir, fake_tts, monkeypatch, capsys):
    """A full disk mid-write leaves neither a truncated WAV nor a temporary file."""
    out = tmp_path / "out.wav"
    assert cli.main(["speak", "Hi.", "-o", str(out), "--model", str(tiny_model_dir)]) == 0
    wav, rate = soundfile.read(out, dtype="float32")
    np.testing.assert_allclose(wav, np.linspace(-0.5, 0.5, 2400), atol=1 / 32768)
    before = out.read_bytes()
    capsys.readouterr()

    def disk_full(path, data, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"RIFF\x24\x00\x00\x00WAVEfmt ")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(soundfile, "write", disk_full)
    for target in (out, tmp_path / "new.wav"):
        assert cli.main(["speak", "Hi.", "-o", str(target), "--model", str(tiny_model_dir)]) == 2
        assert "No space left on device" in error_line(capsys)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav"]


def test_full_disk_is_one_line_for_speak_and_convert(tmp_path, tiny_model_dir, fake_tts, monkeypatch, capsys):
    """A real full file system (a small tmpfs, filled): ``speak -o`` and ``convert -o`` (one-shot
    and streamed) fail with one line naming the file and the cause, exit 2, and leave nothing."""
    from tests.storage import fill, small_tmpfs
    from vllm_chatterbox.conversion import VoiceConverter

    class FakeConverter:
        def convert(self, source, voice, **options):
            return np.linspace(-0.5, 0.5, 24000, dtype=np.float32)

        def convert_stream(self, source, voice, **options):
            yield from np.array_split(self.convert(source, voice), 4)

        def close(self):
            pass

    monkeypatch.setattr(VoiceConverter, "from_files", lambda *a, **k: FakeConverter())
    with small_tmpfs(tmp_path / "disk") as disk:
        filler = fill(disk)
        out = disk / "out.wav"
        commands = [["speak", "Hi.", "-o", str(out), "--model", str(tiny_model_dir)],
                    ["convert", str(SOURCE_WAV), "-o", str(out), "--model", str(tiny_model_dir)],
                    ["convert", str(SOURCE_WAV), "-o", str(out), "--model", str(tiny_model_dir), "--stream"]]
        for command in commands:
            assert cli.main(command) == 2, command
            assert error_line(capsys).endswith(f"cannot write {out}: No space left on device"), command
            assert [p.name for p in disk.iterdir()] == [filler.name], command
        filler.unlink()
        assert all(cli.main(command) == 0 for command in commands)
        assert soundfile.info(str(out)).frames == 24000


def test_unexpected_errors_are_still_one_line(tmp_path, tiny_model_dir, monkeypatch, capsys):
    def broken(*args):
        raise KeyError("something unforeseen")

    monkeypatch.setattr(cli, "_load_model", broken)
    assert cli.main(["speak", "Hi.", "-o", str(tmp_path / "x.wav"), "--model", str(tiny_model_dir)]) == 2
    assert "KeyError: 'something unforeseen' (run with -v for details)" in error_line(capsys)


def test_dtype_reaches_the_model_and_a_bad_one_is_refused(tmp_path, tiny_model_dir, monkeypatch, capsys):
    from vllm_chatterbox.tts import ChatterboxTTS

    options = {}
    monkeypatch.setattr(ChatterboxTTS, "from_files",
                        classmethod(lambda cls, files, **kwargs: options.update(kwargs) or FakeTTS()))
    out = tmp_path / "x.wav"
    assert cli.main(["speak", "Hi.", "-o", str(out), "--model", str(tiny_model_dir), "--dtype", "bfloat16"]) == 0
    assert options["dtype"] == "bfloat16"
    for command in (["speak", "Hi.", "-o", str(out)], ["serve"]):
        with pytest.raises(SystemExit):
            cli.main([*command, "--dtype", "float16"])
        assert "argument --dtype: invalid choice: 'float16'" in capsys.readouterr().err


def test_dtype_is_checked_before_the_model_loads(tiny_model_dir):
    from vllm_chatterbox.tts import ChatterboxTTS

    with pytest.raises(ValueError, match="dtype must be one of 'float32', 'bfloat16', got 'half'"):
        ChatterboxTTS.from_dir(tiny_model_dir, dtype="half")


SOURCE_WAV = SHARED_DIR / "fixtures" / "tiny" / "audio" / "builtin_voice_src_24k.wav"


def test_convert_without_model_uses_the_demo_model_says_so_and_never_imports_vllm(tmp_path):
    out = tmp_path / "converted.wav"
    code = ("import sys; from vllm_chatterbox import cli; "
            f"rc = cli.main(['convert', {str(SOURCE_WAV)!r}, '-o', {str(out)!r}, '--seed', '1', '--n-timesteps', '2']); "
            "print('vllm imported:', 'vllm' in sys.modules); sys.exit(rc)")
    env = dict(os.environ, VLLM_CHATTERBOX_CACHE=str(tmp_path / "cache"))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "RANDOM-WEIGHT demo model" in result.stderr and "noise, not speech" in result.stderr
    assert "vllm imported: False" in result.stdout
    wav, rate = soundfile.read(out)
    source, source_rate = soundfile.read(SOURCE_WAV)
    assert rate == 24000 and abs(len(wav) / rate - len(source) / source_rate) < 0.05
    assert np.abs(wav).max() > 0


def test_convert_stream_with_model_and_voice(tmp_path, tiny_model_dir, caplog):
    caplog.set_level(logging.INFO, logger="vllm_chatterbox")
    streamed, whole = tmp_path / "streamed.flac", tmp_path / "whole.flac"
    args = ["convert", str(SOURCE_WAV), "--model", str(tiny_model_dir), "--voice", str(REFERENCE_WAV), "--seed", "3",
            "--n-timesteps", "2"]
    assert cli.main(args + ["-o", str(streamed), "--stream"]) == 0
    assert cli.main(args + ["-o", str(whole)]) == 0
    assert "time to first audio:" in caplog.text and "RANDOM-WEIGHT" not in caplog.text
    # The same audio; the watermark's windowed pass over a stream and its pass over the whole file may
    # round a sample to the neighbouring 16-bit step when torch runs with another thread count.
    np.testing.assert_allclose(soundfile.read(streamed)[0], soundfile.read(whole)[0], rtol=0, atol=2 ** -15 + 1e-9)


def _write(path, samples, rate=16000):
    soundfile.write(path, samples, rate)
    return path


@pytest.mark.parametrize("make,extra,message", [
    (lambda d: _write(d / "silent.wav", np.zeros(16000)), [], "audio is silent"),
    (lambda d: _write(d / "short.wav", np.full(800, 0.2)), [], "too short"),
    (lambda d: d / "missing.wav", [], "audio file not found"),
    (lambda d: _write(d / "text.wav", np.full(16000, 0.2)).with_suffix(".txt").write_text("x") and d / "text.txt",
     [], "not a readable audio file"),
    (lambda d: SOURCE_WAV, ["--seed", "-1"], "seed must be"),
    (lambda d: SOURCE_WAV, ["--n-timesteps", "0"], "n_timesteps"),
    (lambda d: SOURCE_WAV, ["--max-piece-seconds", "2"], "max_piece_seconds"),
    (lambda d: SOURCE_WAV, ["--voice", "nowhere.wav"], "audio file not found"),
    (lambda d: SOURCE_WAV, ["--voice", "nowhere.pt"], "voice file not found"),
])
def test_convert_errors_are_one_line_before_any_model_loads(tmp_path, tiny_model_dir, capsys, monkeypatch, make, extra,
                                                            message):
    from vllm_chatterbox.conversion import VoiceConverter

    monkeypatch.setattr(VoiceConverter, "from_files", lambda *a, **k: pytest.fail("the model was loaded first"))
    source = make(tmp_path)
    assert cli.main(["convert", str(source), "-o", str(tmp_path / "out.wav"), "--model", str(tiny_model_dir),
                     *extra]) != 0
    assert message in error_line(capsys)


def test_convert_refuses_a_voice_for_another_model(tmp_path, tiny_model_dir, capsys, monkeypatch):
    from vllm_chatterbox.conversion import VoiceConverter

    monkeypatch.setattr(VoiceConverter, "from_files", lambda *a, **k: pytest.fail("the model was loaded first"))
    voice = Voice.load(tiny_model_dir / "conds.pt")
    Voice(speaker_emb=voice.speaker_emb, cond_prompt_speech_tokens=voice.cond_prompt_speech_tokens, exaggeration=0.5,
          prompt_token=voice.prompt_token, prompt_feat=voice.prompt_feat[:, :, :40],
          embedding=voice.embedding).save(tmp_path / "narrow.pt")
    assert cli.main(["convert", str(SOURCE_WAV), "-o", str(tmp_path / "o.wav"), "--model", str(tiny_model_dir),
                     "--voice", str(tmp_path / "narrow.pt")]) != 0
    assert "prompt_feat must be (1, frames, 80)" in error_line(capsys)


def run_cli_fast(*args, timeout=30):
    """The command as users run it, for errors that must come before any model or vLLM loads."""
    return subprocess.run([sys.executable, "-m", "vllm_chatterbox.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def busy_port():
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


@pytest.mark.parametrize("args,message", [
    (["serve", "--port", "99999"], "--port 99999 is not a port number"),
    (["serve", "--host", "no-such-host.invalid"], "--host 'no-such-host.invalid' is not an address"),
    (["serve", "--port", "BUSY"], "port BUSY on 127.0.0.1 is in use"),
    (["speak", "-o", "OUT/a.wav"], "give the text to speak as TEXT or --file FILE"),
    (["speak", "hi", "-o", "OUT/no-such-dir/a.wav"], "directory OUT/no-such-dir does not exist"),
    (["speak", "hi", "-o", "/proc/x.wav"], "output /proc/x.wav cannot be written"),
    (["speak", "hi", "-o", "OUT/a.wav", "--voice", "OUT/missing.wav"], "OUT/missing.wav: audio file not found"),
    (["convert", "OUT/missing.wav", "-o", "OUT/a.wav"], "source OUT/missing.wav: audio file not found"),
    (["convert", "REF", "-o", "/proc/x.wav"], "output /proc/x.wav cannot be written"),
    (["convert", "REF", "-o", "OUT/a.wav", "--voice", "OUT"], "is a directory, not a file"),
    (["voice", "OUT/missing.wav", "-o", "OUT/v.pt"], "audio OUT/missing.wav: audio file not found"),
    (["voice", "REF", "-o", "OUT/no-such-dir/v.pt"], "directory OUT/no-such-dir does not exist"),
])
def test_bad_arguments_fail_in_one_line_before_anything_loads(tmp_path, busy_port, args, message):
    def fill(text):
        return text.replace("OUT", str(tmp_path)).replace("BUSY", str(busy_port)).replace("REF", str(REFERENCE_WAV))

    result = run_cli_fast(*map(fill, args))
    err = result.stderr.strip().splitlines()
    assert result.returncode == 2
    assert len(err) == 1 and err[0].startswith("vllm-chatterbox: error: "), err
    assert fill(message) in err[0]
    assert "serving on" not in result.stderr
    assert not (tmp_path / "a.wav").exists() and not (tmp_path / "no-such-dir").exists()


def test_verbose_is_accepted_after_the_command(busy_port):
    result = run_cli_fast("serve", "-v", "--port", busy_port)
    assert result.returncode == 2
    assert result.stderr.strip() == f"vllm-chatterbox: error: port {busy_port} on 127.0.0.1 is in use"
    assert cli.build_parser().parse_args(["speak", "hi", "-o", "a.wav", "--verbose"]).verbose
    assert cli.build_parser().parse_args(["-v", "speak", "hi", "-o", "a.wav"]).verbose


def test_version():
    from importlib.metadata import version

    result = run_cli_fast("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"vllm-chatterbox {version('vllm-chatterbox')}"


def test_every_option_is_explained_with_its_default():
    import argparse

    parser = cli.build_parser()
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    for name, command in commands.choices.items():
        for action in command._actions:
            assert action.help, f"{name} {action.dest} has no help text"
            scalar_default = action.default not in (None, False, True, argparse.SUPPRESS)
            if scalar_default and action.option_strings:
                shown = f"{action.default:g}" if isinstance(action.default, float) else str(action.default)
                assert "default" in action.help and shown in action.help, f"{name} {action.dest}: {action.help}"
    help_text = run_cli_fast("serve", "--help").stdout
    assert "address to listen on (default: 127.0.0.1" in help_text
    assert "TCP port to listen on (default: 8000)" in help_text
