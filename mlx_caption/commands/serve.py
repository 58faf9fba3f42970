"""``mlx-caption serve``: the captioning web page (Streamlit)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

from mlx_caption.errors import UserError

HELP = "Serve the captioning web page (upload or draw an image; needs the [app] extra)."

APP_FILE = Path(__file__).resolve().parent.parent / "app" / "streamlit_app.py"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        help="captioner to open first: a checkpoint folder (config.json, model.safetensors, "
        "tokenizer.json) or a zoo captioner (blip-base); the page lists the zoo's too",
    )
    parser.add_argument(
        "--checkpoints-root",
        default=".",
        help="folder searched for checkpoints to offer in the model picker (default: .); on a "
        "network --host, visitors may load only folders under it, the served checkpoint and "
        "zoo names",
    )
    parser.add_argument(
        "--allow-any-checkpoint",
        action="store_true",
        help="on a network --host, let visitors load any folder or hub id they type (the "
        "server's disk and the hub are then theirs to read)",
    )
    parser.add_argument("--port", type=int, default=8501, help="port (default 8501)")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; 0.0.0.0 to serve the network)",
    )
    parser.add_argument(
        "--max-upload-mb", type=int, default=20, help="largest upload in MB (default 20)"
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=40_000_000,
        help="largest image in pixels, against decompression bombs (default 40,000,000)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the streamlit command instead of running it",
    )
    parser.add_argument("--json", action="store_true", help="with --dry-run: print it as JSON")


def _check_checkpoint(path: str) -> str:
    """An existing folder must be a checkpoint; anything else may be a zoo captioner or a
    hub id for the page."""
    from mlx_caption import zoo
    from mlx_caption.app.checkpoints import CHECKPOINT_FILES, is_checkpoint

    entry = zoo.lookup(path)
    if entry is not None and entry.kind == "captioner":
        return entry.name
    p = Path(path).expanduser()
    if p.exists():
        if not is_checkpoint(p):
            missing = [n for n in CHECKPOINT_FILES if not (p / n).is_file()]
            raise UserError(f"{path} is not a captioner checkpoint (missing {', '.join(missing)})")
        return str(p.resolve())
    if path.count("/") == 1 and not path.startswith((".", "/", "~")):
        return path  # owner/name on the Hugging Face hub; the page loads (and reports) it
    raise UserError(f"checkpoint folder not found: {path}")


def streamlit_command(args: argparse.Namespace) -> list[str]:
    """The ``python -m streamlit run`` command line for these arguments."""
    if not 1 <= args.port <= 65535:
        raise UserError(f"--port must be 1..65535, got {args.port}")
    if args.max_upload_mb < 1:
        raise UserError(f"--max-upload-mb must be at least 1, got {args.max_upload_mb}")
    if args.max_pixels < 1:
        raise UserError(f"--max-pixels must be positive, got {args.max_pixels}")
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP_FILE),
        "--server.port",
        str(args.port),
        "--server.address",
        args.host,
        "--server.headless",
        "true",
        "--server.maxUploadSize",
        str(args.max_upload_mb),
        # No usage statistics leave the machine, and no file watcher spends a core on inotify.
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
        # A captioning page, not a Streamlit workspace: no "Deploy" button or developer menu.
        "--client.toolbarMode",
        "viewer",
        "--",
        "--checkpoints-root",
        str(Path(args.checkpoints_root).expanduser().resolve()),
        "--max-upload-mb",
        str(args.max_upload_mb),
        "--max-pixels",
        str(args.max_pixels),
    ]
    if args.checkpoint:
        cmd += ["--checkpoint", _check_checkpoint(args.checkpoint)]
    if args.allow_any_checkpoint:
        cmd.append("--allow-any-checkpoint")
    return cmd


def run(args: argparse.Namespace) -> int:
    from mlx_caption.app.checkpoints import is_loopback

    cmd = streamlit_command(args)
    if args.dry_run:
        if args.json:
            from mlx_caption.commands import print_json

            print_json({"command": cmd, "url": f"http://{args.host}:{args.port}"})
        else:
            print(" ".join(cmd))
        return 0
    if importlib.util.find_spec("streamlit") is None:
        raise UserError(
            "the web page needs Streamlit: pip install 'mlx-caption[app]' "
            "(streamlit and streamlit-drawable-canvas)"
        )
    print(f"mlx-caption: serving on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    if not is_loopback(args.host):
        reach = (
            "any folder or hub id (--allow-any-checkpoint)"
            if args.allow_any_checkpoint
            else "only the served checkpoint, folders under --checkpoints-root and zoo names"
        )
        print(f"mlx-caption: visitors may load {reach}", file=sys.stderr, flush=True)
    # Replace this process: Ctrl-C and a supervisor's SIGTERM reach Streamlit directly, and
    # no idle parent is left holding the terminal.
    os.execv(cmd[0], cmd)
    return 0  # not reached
