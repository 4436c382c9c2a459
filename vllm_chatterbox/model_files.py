"""Finding a model's files: a local directory in the official layout, or a hub snapshot.

Two layouts live in the same hub repository. English: ``t3_cfg.safetensors``,
``s3gen.safetensors``, ``ve.safetensors``, ``tokenizer.json``, ``conds.pt``. Multilingual (23
languages): ``t3_mtl23ls_v2.safetensors`` and/or ``t3_mtl23ls_v3.safetensors``, ``s3gen.pt``,
``ve.pt`` (plain state dicts), ``grapheme_mtl_merged_expanded_v1.json``, ``conds.pt`` and, for
Chinese, ``Cangjie5_TC.json``. Turbo (``ResembleAI/chatterbox-turbo``) and Nano
(``ResembleAI/chatterbox-nano``): ``t3_turbo_v1.safetensors`` / ``t3_nano_v1.safetensors``,
``s3gen_meanflow.safetensors``, ``ve.safetensors``, the GPT-2 tokenizer files and ``conds.pt``.
A directory is recognised by its contents.
"""

from __future__ import annotations

import logging
import pickle
import re
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_REPO = "ResembleAI/chatterbox"
ENGLISH_FILES = ("t3_cfg.safetensors", "s3gen.safetensors", "ve.safetensors", "tokenizer.json", "conds.pt")

MULTILINGUAL_T3_FILES = {"v2": "t3_mtl23ls_v2.safetensors", "v3": "t3_mtl23ls_v3.safetensors"}
DEFAULT_MULTILINGUAL_VERSION = "v2"
MULTILINGUAL_TOKENIZER = "grapheme_mtl_merged_expanded_v1.json"
# Besides the chosen T3 file; the Cangjie table is optional (only Chinese text needs it).
MULTILINGUAL_FILES = ("s3gen.pt", "ve.pt", MULTILINGUAL_TOKENIZER, "conds.pt")
CANGJIE_TABLE = "Cangjie5_TC.json"
# Text-token vocabulary of the v2/v3 multilingual T3 (the English one has 704).
MULTILINGUAL_TEXT_VOCAB_SIZE = 2454
# A hub repository id: "owner/name" with the characters the hub allows.
HUB_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# First bytes of audio files someone might have renamed to .pt.
AUDIO_SIGNATURES = (b"RIFF", b"RIFX", b"RF64", b"fLaC", b"OggS", b"ID3", b"FORM", b"\xff\xfb", b"\xff\xf3")
TORCH_ZIP_SIGNATURE = b"PK\x03\x04"

TURBO_REPOS = {"turbo": "ResembleAI/chatterbox-turbo", "nano": "ResembleAI/chatterbox-nano"}
TURBO_T3_FILES = {"turbo": "t3_turbo_v1.safetensors", "nano": "t3_nano_v1.safetensors"}
TURBO_S3GEN = "s3gen_meanflow.safetensors"
TURBO_TOKENIZER_FILES = ("vocab.json", "merges.txt", "added_tokens.json", "special_tokens_map.json",
                         "tokenizer_config.json")
# Besides the variant's T3 file.
TURBO_FILES = (TURBO_S3GEN, "ve.safetensors", "conds.pt", *TURBO_TOKENIZER_FILES)
VARIANTS = ("original", "turbo", "nano")


@dataclass(frozen=True)
class ModelFiles:
    directory: Path
    t3: Path
    s3gen: Path
    voice_encoder: Path
    tokenizer: Path
    conds: Path
    multilingual: bool = False
    # "original" (English / multilingual), "turbo" or "nano"; for the last two ``tokenizer``
    # is the directory holding the GPT-2 tokenizer files.
    variant: str = "original"

    @property
    def is_turbo(self) -> bool:
        """Turbo or Nano: GPT-2 T3 and meanflow S3Gen."""
        return self.variant != "original"

    @classmethod
    def from_dir(cls, directory: str | Path, *, multilingual: bool | None = None,
                 version: str | None = None, variant: str | None = None) -> "ModelFiles":
        """The model files of ``directory``.

        ``multilingual=None`` decides by the contents: a complete English set is English (a full
        hub snapshot holds both), otherwise multilingual files make it multilingual. ``version``
        picks the multilingual T3 ("v2", the default, or "v3") and implies multilingual.
        ``variant=None`` recognises a Turbo / Nano directory by its T3 file (Turbo when both
        are present); "turbo" / "nano" ask for one, "original" for English / multilingual.
        """
        directory = Path(directory).expanduser()
        if not directory.is_dir():
            raise ValueError(f"model directory not found: {directory}")
        if variant is not None and variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        if variant is None and not multilingual and version is None and not _all_present(directory, ENGLISH_FILES):
            variant = next((v for v, name in TURBO_T3_FILES.items() if (directory / name).is_file()), None)
        if variant in TURBO_T3_FILES:
            if multilingual or version is not None:
                raise ValueError(f"the {variant} model is English only (no multilingual / version)")
            return cls._turbo(directory, variant)
        if version is not None and multilingual is False:
            raise ValueError(f"version={version!r} applies to the multilingual model only")
        if multilingual is None:
            multilingual = version is not None or (
                not _all_present(directory, ENGLISH_FILES) and _has_multilingual_files(directory))
        if multilingual:
            return cls._multilingual(directory, version)
        missing = [name for name in ENGLISH_FILES if not (directory / name).is_file()]
        if missing:
            raise ValueError(
                f"{directory} is not a Chatterbox model directory: missing {', '.join(missing)} "
                f"(expected the official files {', '.join(ENGLISH_FILES)})"
            )
        return cls(
            directory=directory,
            t3=directory / "t3_cfg.safetensors",
            s3gen=directory / "s3gen.safetensors",
            voice_encoder=directory / "ve.safetensors",
            tokenizer=directory / "tokenizer.json",
            conds=directory / "conds.pt",
        )

    def check_readable(self) -> None:
        """Cheap integrity checks of every weights file (headers and archive directories, no
        tensor data), so a truncated or garbage file is a clear ValueError before anything loads."""
        for field in fields(self):
            path = getattr(self, field.name)
            if not isinstance(path, Path) or field.name == "directory":
                continue
            if path.suffix == ".safetensors":
                check_safetensors(path)
            elif path.suffix == ".pt":
                check_torch_file(path)

    @classmethod
    def _turbo(cls, directory: Path, variant: str) -> "ModelFiles":
        expected = (TURBO_T3_FILES[variant], *TURBO_FILES)
        missing = [name for name in expected if not (directory / name).is_file()]
        if missing:
            raise ValueError(f"{directory} is not a Chatterbox {variant} model directory: missing "
                             f"{', '.join(missing)} (expected {', '.join(expected)})")
        return cls(
            directory=directory,
            t3=directory / TURBO_T3_FILES[variant],
            s3gen=directory / TURBO_S3GEN,
            voice_encoder=directory / "ve.safetensors",
            tokenizer=directory,
            conds=directory / "conds.pt",
            variant=variant,
        )

    @classmethod
    def _multilingual(cls, directory: Path, version: str | None) -> "ModelFiles":
        version = version or DEFAULT_MULTILINGUAL_VERSION
        t3_name = multilingual_t3_file(version)
        if not (directory / t3_name).is_file():
            present = [v for v, name in MULTILINGUAL_T3_FILES.items() if (directory / name).is_file()]
            hint = (f"it has version {', '.join(present)} (pass version=...)" if present
                    else f"expected one of {', '.join(MULTILINGUAL_T3_FILES.values())}")
            raise ValueError(f"{directory}: multilingual T3 file {t3_name} (version {version!r}) not found; {hint}")
        missing = [name for name in MULTILINGUAL_FILES if not (directory / name).is_file()]
        if missing:
            raise ValueError(
                f"{directory} is not a multilingual Chatterbox model directory: missing {', '.join(missing)} "
                f"(expected {t3_name}, {', '.join(MULTILINGUAL_FILES)})"
            )
        return cls(
            directory=directory,
            t3=directory / t3_name,
            s3gen=directory / "s3gen.pt",
            voice_encoder=directory / "ve.pt",
            tokenizer=directory / MULTILINGUAL_TOKENIZER,
            conds=directory / "conds.pt",
            multilingual=True,
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def check_safetensors(path: Path) -> None:
    """Read the header of a safetensors file: catches garbage and truncated files."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except Exception as exc:  # safetensors raises its own SafetensorError
        raise ValueError(f"{path}: not a valid safetensors file, damaged or incomplete ({_first_line(exc)})") from None


def load_safetensors(path: Path, prefix: str = "") -> dict[str, Any]:
    """The tensors of a safetensors file whose names start with ``prefix`` (prefix removed)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k[len(prefix):]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}
    except Exception as exc:
        raise ValueError(f"{path}: not a valid safetensors file, damaged or incomplete ({_first_line(exc)})") from None


def check_torch_file(path: Path, what: str = "torch.save file") -> None:
    """Signature and archive directory of a torch.save file, without unpickling anything."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{what} not found: {path}")
    if not path.is_file():
        raise ValueError(f"{what} is not a file: {path}")
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(AUDIO_SIGNATURES):
        raise ValueError(f"{path}: this is an audio file, not a {what}; give audio files their own extension "
                         "(.wav, .flac, .mp3, .ogg)")
    if not head.startswith(TORCH_ZIP_SIGNATURE):
        raise ValueError(f"{path}: not a {what} (it was not written by torch.save)")
    try:
        with zipfile.ZipFile(path) as archive:
            archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueError(f"{path}: damaged or incomplete {what} ({_first_line(exc)})") from None


def load_torch_file(path: Path, what: str = "torch.save file", mmap: bool = False) -> Any:
    """``torch.load`` restricted to tensors and plain containers, with one-line errors.

    Files holding other Python objects are refused and, unlike torch's own message, the error
    never suggests loading them with ``weights_only=False`` (that would run their code)."""
    import torch

    check_torch_file(path, what)
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError:
        raise ValueError(f"{path}: refused: it holds Python objects other than tensors, which a {what} never "
                         "contains; such a file is not loaded because loading it could run its code") from None
    except Exception as exc:  # torch raises several unrelated types for damaged files
        raise ValueError(f"{path}: not a readable {what} ({type(exc).__name__}: {_first_line(exc)})") from None


def is_hub_repo_id(model: str) -> bool:
    """Whether ``model`` can only be a hub repository id, not a local path: "owner/name" and no
    path syntax (absolute, ~, ./ or ../, more than one separator)."""
    return bool(HUB_REPO_ID.match(model)) and not model.startswith((".", "~"))


def multilingual_t3_file(version: str | None) -> str:
    """The T3 file name of a multilingual version (None means the default, v2)."""
    version = DEFAULT_MULTILINGUAL_VERSION if version is None else version
    if version not in MULTILINGUAL_T3_FILES:
        raise ValueError(
            f"unknown multilingual T3 version {version!r}; choose one of {', '.join(MULTILINGUAL_T3_FILES)}"
        )
    return MULTILINGUAL_T3_FILES[version]


def _all_present(directory: Path, names) -> bool:
    return all((directory / name).is_file() for name in names)


def _has_multilingual_files(directory: Path) -> bool:
    return any((directory / name).is_file() for name in (MULTILINGUAL_TOKENIZER, *MULTILINGUAL_T3_FILES.values()))


def download(repo_id: str = DEFAULT_REPO, revision: str | None = None, *, multilingual: bool = False,
             version: str | None = None, variant: str | None = None) -> Path:
    """Local snapshot of a hub repository's English (multilingual, Turbo, Nano) model files (cached copy first)."""
    if variant in TURBO_T3_FILES:
        if multilingual or version is not None:
            raise ValueError(f"the {variant} model is English only (no multilingual / version)")
        files = [TURBO_T3_FILES[variant], *TURBO_FILES]
    elif variant not in (None, "original"):
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    elif multilingual:
        files = [multilingual_t3_file(version), *MULTILINGUAL_FILES, CANGJIE_TABLE]
    elif version is not None:
        raise ValueError(f"version={version!r} applies to the multilingual model only (pass multilingual=True)")
    else:
        files = list(ENGLISH_FILES)
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - huggingface_hub is a dependency
        raise RuntimeError("huggingface_hub is required to download models") from exc
    try:
        path = Path(snapshot_download(repo_id, revision=revision, allow_patterns=files, local_files_only=True))
        if _all_present(path, files[:-1] if multilingual else files):
            return path
    except Exception:
        pass
    logger.info("%s not in the local hub cache; downloading", repo_id)
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=files))
    except Exception as exc:
        raise RuntimeError(
            f"could not download {repo_id!r} from the Hugging Face hub ({type(exc).__name__}: {exc}). "
            f"If this machine is offline, copy the model files ({', '.join(files)}) into a "
            f"directory and use ChatterboxTTS.from_dir(path) / --model PATH instead."
        ) from exc
