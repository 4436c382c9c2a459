"""Where the tests find the shared reference material (``../shared`` beside the checkout)."""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("CHATTERBOX_SHARED_DIR", REPO_ROOT.parent / "shared"))
FIXTURE_DIR = SHARED_DIR / "fixtures" / "tiny"
FIXTURE_CKPT = FIXTURE_DIR / "ckpt"
FIXTURE_REF = FIXTURE_DIR / "ref"
FIXTURE_AUDIO = FIXTURE_DIR / "audio"
SHARED_DATA = SHARED_DIR / "data"
TURBO_FIXTURE_DIR = SHARED_DIR / "fixtures" / "tiny-turbo"
TURBO_CKPT = TURBO_FIXTURE_DIR / "ckpt"
TURBO_REF = TURBO_FIXTURE_DIR / "ref"
TURBO_AUDIO = TURBO_FIXTURE_DIR / "audio"
