"""`mlx-caption train`: train a captioner from a YAML recipe (``configs/*.yaml``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

HELP = "Train a captioner from a YAML recipe (frozen or fine-tuned encoder, resumable)."

EXIT_INTERRUPTED = 130  # Ctrl-C: a checkpoint was saved first
EXIT_DIVERGED = 3  # NaN/inf loss: stopped, last good checkpoint kept


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE.yaml", help="training recipe (configs/*.yaml)")
    parser.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override a recipe value, dotted keys, YAML values (e.g. --set optim.lr=1e-3)",
    )
    parser.add_argument("--out", metavar="DIR", help="run folder (default runs/<recipe name>)")
    parser.add_argument(
        "--resume",
        metavar="DIR",
        help="continue a run: its folder (latest checkpoint) or one ckpt-<step> folder",
    )
    parser.add_argument("--wandb", action="store_true", help="also log to Weights & Biases")
    parser.add_argument("--wandb-project", default="mlx-caption", help=argparse.SUPPRESS)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print a JSON summary as last line")


def yaml_loader():
    """PyYAML's safe loader, reading ``1e-3`` as a float (YAML 1.1 needs ``1.0e-3``)."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    float_re = re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    )
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", float_re, list("-+0123456789."))
    return Loader


def yaml_load(text: str) -> Any:
    """Parse YAML text with :func:`yaml_loader`."""
    import yaml

    return yaml.load(text, Loader=yaml_loader())  # noqa: S506  (a SafeLoader subclass)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["optim.lr=1e-3", "model.decoder=tiny"]`` -> nested dict with YAML-typed values."""
    import yaml

    from mlx_caption.errors import UserError
    from mlx_caption.train.config import set_dotted

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            value = yaml_load(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            raise UserError(f"--set {key}: cannot parse {raw!r}: {err}") from err
        set_dotted(out, key.strip(), value)
    return out


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge (``over`` wins); returns a new dict."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def load_recipe(path: str | Path) -> dict[str, Any]:
    """A YAML recipe as a dict (UserError if missing or malformed)."""
    import yaml

    from mlx_caption.errors import UserError

    path = Path(path)
    if not path.is_file():
        raise UserError(f"training config not found: {path}")
    try:
        data = yaml_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise UserError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a mapping of sections (model, data, optim, ...)")
    return data


def run(args: argparse.Namespace) -> int:
    from mlx_caption.commands import print_json
    from mlx_caption.errors import UserError
    from mlx_caption.train.checkpoint import list_checkpoints, read_state, resolve_checkpoint
    from mlx_caption.train.config import TrainConfig
    from mlx_caption.train.trainer import Trainer

    overrides = parse_overrides(args.set)
    resume = None
    if args.resume:
        resume = resolve_checkpoint(args.resume)
        base = read_state(resume).config
        if args.config:
            base = merge(base, load_recipe(args.config))
        out = Path(args.out) if args.out else resume.parent
    else:
        if not args.config:
            raise UserError("give --config FILE.yaml (or --resume DIR to continue a run)")
        base = load_recipe(args.config)
        out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
        if list_checkpoints(out):
            raise UserError(
                f"{out} already holds checkpoints: continue it with --resume {out}, "
                "or pick another --out"
            )
    cfg = TrainConfig.from_dict(merge(base, overrides))
    trainer = Trainer.from_recipe(
        cfg,
        out,
        resume=resume,
        progress=not args.no_progress and not args.json,
        wandb=args.wandb,
        wandb_project=args.wandb_project,
    )
    result = trainer.fit()
    if args.json and trainer.world.is_main:
        print_json(result.to_dict())
    if result.status == "time_limit" and trainer.world.is_main:
        print(f"time limit: {result.message}", file=sys.stderr)
    if result.status == "interrupted":
        return EXIT_INTERRUPTED
    if result.status == "diverged":
        return EXIT_DIVERGED
    return 0
