"""Where the project's shared development data lives: ``../shared/data`` beside the checkout.

CI clones the repository into a fresh folder with a copy of ``shared/`` beside it; developers
have it at the same relative place. ``MLX_CAPTION_SHARED_DATA`` overrides.
"""

import os
from pathlib import Path

_CANDIDATES = [
    os.environ.get("MLX_CAPTION_SHARED_DATA", ""),
    str(Path(__file__).resolve().parents[2] / "shared" / "data"),
    "/work/shared/data",
]
SHARED_DATA = next((Path(p) for p in _CANDIDATES if p and Path(p).is_dir()), Path(_CANDIDATES[1]))
FLICKR8K = SHARED_DATA / "flickr8k"
