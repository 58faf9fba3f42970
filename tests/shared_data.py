"""Where the project's shared development data lives: ``../shared/data`` beside the checkout.

CI clones the repository into a fresh folder with a copy of ``shared/`` beside it; developers
have it at the same relative place. ``MLX_CAPTION_SHARED_DATA`` overrides (and is then the only
place looked at, so pointing it at an empty folder shows what the tests do without the data).
"""

import os
from pathlib import Path

from prerequisites import requires

_OVERRIDE = os.environ.get("MLX_CAPTION_SHARED_DATA", "")
_CANDIDATES = [
    str(Path(__file__).resolve().parents[2] / "shared" / "data"),
    "/work/shared/data",
]
SHARED_DATA = (
    Path(_OVERRIDE)
    if _OVERRIDE
    else next((Path(p) for p in _CANDIDATES if Path(p).is_dir()), Path(_CANDIDATES[0]))
)
FLICKR8K = SHARED_DATA / "flickr8k"
FLICKR8K_CAPTIONS = FLICKR8K / "Flickr8k.token.txt"

# For the tests that read the real captions: skipped without them, failed under CI.
needs_flickr8k = requires(
    FLICKR8K_CAPTIONS.is_file(), f"{FLICKR8K_CAPTIONS} (the shared Flickr8k captions)"
)
