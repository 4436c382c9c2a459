"""Finding a model's files: a local directory in the official layout, or a hub snapshot."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_REPO = "ResembleAI/chatterbox"
ENGLISH_FILES = ("t3_cfg.safetensors", "s3gen.safetensors", "ve.safetensors", "tokenizer.json", "conds.pt")


@dataclass(frozen=True)
class ModelFiles:
    directory: Path
    t3: Path
    s3gen: Path
    voice_encoder: Path
    tokenizer: Path
    conds: Path

    @classmethod
    def from_dir(cls, directory: str | Path) -> "ModelFiles":
        directory = Path(directory).expanduser()
        if not directory.is_dir():
            raise ValueError(f"model directory not found: {directory}")
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


def download(repo_id: str = DEFAULT_REPO, revision: str | None = None) -> Path:
    """Local snapshot of a hub repository's English model files (cached copy first)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - huggingface_hub is a dependency
        raise RuntimeError("huggingface_hub is required to download models") from exc
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=list(ENGLISH_FILES),
                                      local_files_only=True))
    except Exception:
        logger.info("%s not in the local hub cache; downloading", repo_id)
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=list(ENGLISH_FILES)))
    except Exception as exc:
        raise RuntimeError(
            f"could not download {repo_id!r} from the Hugging Face hub ({type(exc).__name__}: {exc}). "
            f"If this machine is offline, copy the model files ({', '.join(ENGLISH_FILES)}) into a "
            f"directory and use ChatterboxTTS.from_dir(path) / --model PATH instead."
        ) from exc
