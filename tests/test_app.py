"""The web page without a browser: upload validation, heat maps, checkpoint discovery, the
serve command, the captioning adapter, and the page itself through Streamlit's AppTest."""

import mlx_caption  # noqa: F401, I001  (loads the optimized BLAS before mlx.core)

import io
import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile
from prerequisites import require_module

from mlx_caption import zoo
from mlx_caption.app import heatmap
from mlx_caption.app.captioning import CaptionResult, Decoding
from mlx_caption.app.checkpoints import (
    CheckpointAccess,
    checkpoint_mtime,
    checkpoint_options,
    find_checkpoints,
    is_checkpoint,
    is_loopback,
    option_label,
)
from mlx_caption.app.describe import describe_model
from mlx_caption.app.drawing import background, board_for, drawing_image
from mlx_caption.app.results import ShownCaption, captions_csv, captions_json
from mlx_caption.app.uploads import UploadError, UploadLimits, load_upload
from mlx_caption.cli import main
from mlx_caption.data.look import ImageLook, background_of
from mlx_caption.data.preprocess import PreprocessConfig
from mlx_caption.errors import UserError
from mlx_caption.models.captioner import CaptionerConfig
from mlx_caption.models.clip import CLIPVisionConfig
from mlx_caption.models.decoder import DecoderConfig

APP_FILE = Path(mlx_caption.__file__).parent / "app" / "streamlit_app.py"


# ----------------------------------------------------------------------------- helpers


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png16(arr: np.ndarray) -> bytes:
    """A 16-bit PNG (grey, RGB or RGBA) written by hand: Pillow cannot write 16-bit RGB."""
    h, w, c = arr.shape
    colour_type = {1: 0, 3: 2, 4: 6}[c]
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))
    header = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(raw))
        + png_chunk(b"IEND", b"")
    )


def png_bomb(width: int, height: int) -> bytes:
    """A few hundred bytes that declare a width x height RGB image (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    # A little compressed data is enough: the page must refuse it before decoding any.
    row = b"\x00" + b"\x00" * (3 * min(width, 1024))
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(row * 4))
        + png_chunk(b"IEND", b"")
    )


def photo(w: int = 40, h: int = 30) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), mode="RGB")


# ----------------------------------------------------------------------------- uploads


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF"])
def test_upload_formats_decode_to_rgb(fmt):
    item = load_upload(f"x.{fmt.lower()}", encode(photo(), fmt))
    assert item.image.mode == "RGB"
    assert item.image.size == (40, 30)
    assert item.format == fmt
    assert item.notes == []


def test_upload_png_pixels_are_exact():
    img = photo()
    item = load_upload("x.png", encode(img, "PNG"))
    np.testing.assert_array_equal(np.asarray(item.image), np.asarray(img))


def test_upload_empty_and_too_large():
    with pytest.raises(UploadError, match="empty"):
        load_upload("a.png", b"")
    data = encode(photo(), "PNG")
    with pytest.raises(UploadError, match="the limit is"):
        load_upload("a.png", data, UploadLimits(max_bytes=len(data) - 1))


def test_upload_not_an_image():
    with pytest.raises(UploadError, match="not an image"):
        load_upload("notes.png", b"hello, I am plain text\n" * 20)


def test_upload_format_outside_the_allowed_set_is_refused():
    # BMP and TIFF decode fine in Pillow, but the page only tries the four formats it offers.
    for fmt in ("BMP", "TIFF"):
        with pytest.raises(UploadError, match="not an image this page can read"):
            load_upload(f"x.{fmt.lower()}", encode(photo(), fmt))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_upload_truncated(fmt):
    data = encode(photo(64, 64), fmt)
    with pytest.raises(UploadError, match="damaged or truncated"):
        load_upload("cut", data[: len(data) // 2])


def test_upload_pixel_limit_checked_before_decoding(monkeypatch):
    # 30000 x 30000 = 900 MP declared in a few KB: refused from the header, before any pixel
    # is decoded (decoding would make ImageFile.load fail here).
    bomb = png_bomb(30000, 30000)
    assert len(bomb) < 20_000

    def no_decoding(self):
        raise AssertionError("pixels were decoded before the size check")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(UploadError, match="pixels"):
        load_upload("bomb.png", bomb)
    monkeypatch.undo()
    # Under Pillow's own threshold but over ours.
    with pytest.raises(UploadError, match="limit is 100"):
        load_upload("small.png", encode(photo(), "PNG"), UploadLimits(max_pixels=100))


def test_upload_pillow_bomb_error_is_a_message():
    # Over twice Pillow's MAX_IMAGE_PIXELS, Image.open itself raises DecompressionBombError.
    side = int((2 * Image.MAX_IMAGE_PIXELS) ** 0.5) + 10
    with pytest.raises(UploadError, match="pixels"):
        load_upload("bomb.png", png_bomb(side, side), UploadLimits(max_pixels=10**12))


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_upload_animated_uses_first_frame(fmt):
    frames = [Image.new("RGB", (16, 16), c) for c in ((200, 30, 30), (30, 30, 200))]
    kw = {"lossless": True} if fmt == "WEBP" else {}
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, **kw)
    item = load_upload(f"anim.{fmt.lower()}", data)
    assert any("2 frames" in n and "first" in n for n in item.notes)
    r, g, b = np.asarray(item.image)[8, 8].tolist()
    assert r > 150 and b < 80  # the red first frame, not the blue second


def test_upload_16bit_grey_is_scaled_not_clipped():
    arr = np.full((8, 8, 1), 32768, dtype=np.uint16)
    item = load_upload("deep.png", png16(arr))
    assert any("16-bit" in n for n in item.notes)
    assert item.image.mode == "RGB"
    assert abs(int(np.asarray(item.image)[0, 0, 0]) - 128) <= 1


def test_upload_16bit_rgb_is_noted():
    arr = np.zeros((8, 8, 3), dtype=np.uint16)
    arr[..., 0] = 65535
    item = load_upload("deep.png", png16(arr))
    assert any("16-bit" in n for n in item.notes)
    assert np.asarray(item.image)[0, 0].tolist() == [255, 0, 0]


def test_upload_transparency_composited_on_white():
    img = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    img.putpixel((0, 0), (0, 0, 255, 255))
    item = load_upload("logo.png", encode(img, "PNG"))
    px = np.asarray(item.image)
    assert px[4, 4].tolist() == [255, 255, 255]
    assert px[0, 0].tolist() == [0, 0, 255]


def test_upload_exif_orientation_applied():
    img = photo(40, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    item = load_upload("phone.jpg", encode(img, "JPEG", exif=exif))
    assert item.image.size == (20, 40)
    assert item.original_size == (40, 20)


def test_upload_cmyk_jpeg():
    item = load_upload("print.jpg", encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"))
    assert item.image.mode == "RGB"
    assert any("CMYK" in n for n in item.notes)
    r, g, b = np.asarray(item.image)[4, 4].tolist()
    assert r > 200 and g < 60 and b < 60


# ----------------------------------------------------------------------------- heat maps


def test_patch_grid_drops_class_token_and_reshapes():
    w = np.arange(17, dtype=np.float32)
    g = heatmap.patch_grid(w)
    assert g.shape == (4, 4) and g[0, 0] == 1 and g[3, 3] == 16
    assert heatmap.patch_grid(np.arange(16)).shape == (4, 4)
    assert heatmap.patch_grid(np.arange(7), grid=(2, 3)).tolist() == [[1, 2, 3], [4, 5, 6]]
    with pytest.raises(ValueError):
        heatmap.patch_grid(np.arange(7))
    # A class token and registers (DINOv2) before the grid are dropped too.
    assert heatmap.patch_grid(np.arange(11), grid=(2, 3)).tolist() == [[5, 6, 7], [8, 9, 10]]
    with pytest.raises(ValueError):
        heatmap.patch_grid(np.arange(5), grid=(2, 3))


def test_normalize_flat_map_is_zero():
    assert heatmap.normalize(np.full((2, 2), 0.25)).tolist() == [[0, 0], [0, 0]]
    assert heatmap.normalize(np.array([[1.0, 3.0]])).tolist() == [[0.0, 1.0]]


def test_overlay_highlights_the_attended_patch():
    image = Image.new("RGB", (64, 64), (128, 128, 128))
    grid = np.zeros((4, 4), dtype=np.float32)
    grid[0, 0] = 1.0
    out = np.asarray(heatmap.overlay(image, grid), dtype=np.float32)
    assert out.shape == (64, 64, 3)
    top_left = out[:12, :12].mean()
    bottom_right = out[-16:, -16:].mean()
    assert top_left > bottom_right + 60


def test_model_view_is_the_centre_crop():
    img = Image.new("RGB", (100, 50))
    img.paste((255, 0, 0), (25, 0, 75, 50))  # the centre square is red
    view = heatmap.model_view(img, PreprocessConfig(resize_shortest_edge=32, crop_size=32))
    assert view.size == (50, 50)
    assert np.asarray(view)[:, [0, -1]].reshape(-1, 3).min(axis=0).tolist() == [255, 0, 0]
    flat = PreprocessConfig(resize_shortest_edge=32, crop_size=32, do_center_crop=False)
    assert heatmap.model_view(img, flat, size=20).size == (20, 20)


def _word_decoder(pieces):
    # Like a byte-level BPE: pieces starting with a space begin a word.
    def decode(ids):
        return " ".join("".join(pieces[i] for i in ids).split())

    return decode


def test_group_words_joins_subword_pieces():
    pieces = {5: " a", 6: " bl", 7: "ue", 8: " star", 9: ","}
    decode = _word_decoder(pieces)
    assert heatmap.group_words([5, 6, 7, 8, 9], decode) == [[0], [1, 2], [3, 4]]


def test_word_maps_average_the_pieces():
    pieces = {5: " a", 6: " bl", 7: "ue"}
    att = np.zeros((3, 5), dtype=np.float32)  # class token + 2x2 grid
    att[0, 1] = 1.0
    att[1, 2] = 1.0
    att[2, 4] = 1.0
    maps = heatmap.word_maps([5, 6, 7], att, _word_decoder(pieces), grid=(2, 2))
    assert [w for w, _ in maps] == ["a", "blue"]
    assert maps[0][1].tolist() == [[1, 0], [0, 0]]
    assert maps[1][1].tolist() == [[0, 0.5], [0, 0.5]]
    with pytest.raises(ValueError):
        heatmap.word_maps([5, 6, 7], att[:2], _word_decoder(pieces))


# ----------------------------------------------------------------------------- checkpoints


def _fake_checkpoint(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (folder / name).write_text("{}")
    return folder


def test_find_checkpoints(tmp_path):
    a = _fake_checkpoint(tmp_path / "runs" / "a" / "best")
    b = _fake_checkpoint(tmp_path / "demo_out" / "checkpoint")
    _fake_checkpoint(tmp_path / "runs" / ".tmp-x")  # half-written: hidden, skipped
    _fake_checkpoint(tmp_path / "d1" / "d2" / "d3" / "d4" / "d5" / "deep")  # too deep
    (tmp_path / "runs" / "partial").mkdir()
    (tmp_path / "runs" / "partial" / "config.json").write_text("{}")
    os.utime(a / "model.safetensors", (1, 1))
    for name in ("config.json", "tokenizer.json"):
        os.utime(a / name, (1, 1))
    found = find_checkpoints(tmp_path)
    assert found == [b.resolve(), a.resolve()]  # newest first
    assert is_checkpoint(a) and not is_checkpoint(tmp_path / "runs" / "partial")
    assert checkpoint_mtime(a) == 1
    assert find_checkpoints(tmp_path / "missing") == []
    assert find_checkpoints(a) == [a.resolve()]


# ----------------------------------------------------------------------------- who may load what


def test_is_loopback():
    assert all(map(is_loopback, ["127.0.0.1", "127.1.2.3", "::1", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.168.1.4", "example.org", "", None]))


def test_open_access_loads_what_is_typed(tmp_path):
    access = CheckpointAccess(root=tmp_path, open_to_any=True)
    assert access.note is None
    for text in ("/anywhere/at/all", "owner/hub-model", "../up"):
        assert access.resolve(text) == text


def test_network_access_loads_only_what_is_offered(tmp_path, monkeypatch):
    root = tmp_path / "root"
    inside = _fake_checkpoint(root / "runs" / "a")
    outside = _fake_checkpoint(tmp_path / "private" / "model")
    (root / "escape").symlink_to(outside.parent, target_is_directory=True)
    access = CheckpointAccess(root=root, served=str(outside), open_to_any=False)
    assert "loads only the served checkpoint" in access.note

    assert access.resolve(str(outside)) == str(outside)  # the operator served it
    assert access.resolve("runs/a") == str(inside.resolve())  # read from the root
    assert access.resolve(str(inside)) == str(inside.resolve())
    assert access.resolve("owner/model") == str((root / "owner" / "model").resolve())  # no hub

    def refusal(text: str) -> str:
        with pytest.raises(UserError) as info:
            access.resolve(text)
        return str(info.value).replace(repr(text), "PATH")

    refusals = {
        refusal(text)
        for text in (
            str(outside.parent),  # exists
            str(tmp_path / "private" / "nothing"),  # does not
            "../private/model",
            "runs/../../private",
            "escape/model",  # a link under the root to a folder outside it
            "/etc",
        )
    }
    assert len(refusals) == 1  # the same words whether or not the path exists
    assert "not a checkpoint this page may load" in refusals.pop()

    # Zoo captioners load by name; encoder names are not captioners.
    captioner = zoo.ZooEntry("tiny-captioner", "org/tiny", "blip", "captioner", "", dict)
    monkeypatch.setitem(zoo.ZOO, captioner.name, captioner)
    assert access.resolve("tiny-captioner") == "tiny-captioner"
    assert access.resolve("clip-vit-base-patch32") == str(root / "clip-vit-base-patch32")


def test_picker_options_and_labels(tmp_path):
    found = _fake_checkpoint(tmp_path / "runs" / "a")
    served = _fake_checkpoint(tmp_path.parent / f"{tmp_path.name}-served" / "best")
    captioners = [e.name for e in zoo.entries("captioner")]
    assert captioners  # the zoo's pretrained captioners come after the folders
    assert checkpoint_options(str(served), tmp_path) == [
        str(served),
        str(found.resolve()),
        *captioners,
    ]
    assert checkpoint_options(None, tmp_path) == [str(found.resolve()), *captioners]
    assert option_label(str(found.resolve()), tmp_path) == "runs/a"
    assert option_label(str(served), tmp_path) == "best"  # no server path shown
    assert option_label("owner/model", tmp_path) == "owner/model"


# ----------------------------------------------------------------------------- drawing

DEMO_LOOK = ImageLook(background=(80, 79, 79), noise=8.3, size=64,
                      object_sizes=(("small", 0.18), ("large", 0.3)), images=64)  # fmt: skip


def test_board_sizes():
    demo = board_for(DEMO_LOOK)
    assert (demo.canvas, demo.side) == (256, 64)
    assert demo.brushes == {"small": 46, "large": 77}  # 0.18 and 0.3 of 256 px
    assert (board_for(ImageLook(size=96)).canvas, board_for(ImageLook(size=96)).side) == (288, 96)
    assert (board_for(ImageLook(size=500)).canvas, board_for(ImageLook(size=500)).side) == (
        256,
        256,
    )
    white = board_for(None)
    assert (white.canvas, white.side, white.brushes) == (256, 256, {})
    assert "white" in white.describe()
    assert "small ones 46 px, large ones 77 px" in demo.describe()


def test_background_is_the_looks_colour_and_noise():
    board = board_for(DEMO_LOOK)
    canvas = background(board)
    assert canvas.size == (256, 256)
    pixels = np.asarray(canvas)
    assert (pixels[::4, ::4] == pixels[3::4, 3::4]).all()  # one model pixel per 4 x 4 block
    colour, noise = background_of(canvas.resize((64, 64), Image.Resampling.NEAREST))
    assert np.abs(colour - np.array(DEMO_LOOK.background)).max() <= 1
    assert noise == pytest.approx(DEMO_LOOK.noise, abs=0.5)
    white = np.asarray(background(board_for(None)))
    assert (white == 255).all()


def test_drawing_image_is_the_strokes_on_the_background():
    board = board_for(DEMO_LOOK)
    strokes = np.zeros((256, 256, 4), np.uint8)
    assert np.array_equal(  # nothing drawn: the background at the model's side
        np.asarray(drawing_image(strokes, board)),
        np.asarray(background(board).resize((64, 64), Image.Resampling.BOX)),
    )
    strokes[96:160, 96:160] = (225, 30, 30, 255)  # an opaque red square, 16 model pixels
    strokes[0:4, 0:4] = (0, 0, 255, 128)  # a half-transparent blue model pixel
    image = np.asarray(drawing_image(strokes, board)).astype(int)
    assert image.shape == (64, 64, 3)
    assert (image[24:40, 24:40] == (225, 30, 30)).all()
    under = np.asarray(background(board))[0, 0].astype(int)
    assert np.abs(image[0, 0] - (under * 127 + np.array([0, 0, 255]) * 128) / 255).max() <= 1
    # A browser that renders the canvas at twice the size: the same picture.
    double = strokes.repeat(2, axis=0).repeat(2, axis=1)
    assert np.abs(np.asarray(drawing_image(double, board)).astype(int) - image).max() <= 1


# ----------------------------------------------------------------------------- what is loaded


def _config(encoder_name=None, layers=2) -> CaptionerConfig:
    vision = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                              num_attention_heads=2, image_size=32, patch_size=8)  # fmt: skip
    decoder = DecoderConfig(vocab_size=300, hidden_size=32, num_layers=1, num_heads=2)
    return CaptionerConfig(vision=vision, decoder=decoder, encoder_name=encoder_name)


def _state(folder: Path, model: dict, data: dict, history: list) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model": model, "data": data}
    (folder / "state.json").write_text(json.dumps({"config": config, "history": history}))
    return folder


def test_model_card_of_a_training_checkpoint(tmp_path):
    history = [
        {"step": 200, "CIDEr": 1.0},
        {"step": 400, "val_images": 100, "CIDEr": 4.2512, "Bleu_4": 0.8123, "pair_f1": 0.93,
         "exact": 0.9, "val_loss": 0.31, "examples": []},
    ]  # fmt: skip
    synthetic = {"synthetic": {"images": 20000, "size": 64, "seed": 0}}
    folder = _state(tmp_path / "ckpt", {"encoder": "scratch", "encoder_mode": "finetune"},
                    synthetic, history)  # fmt: skip
    card = describe_model(folder, _config())
    assert card.encoder == "ViT 64 x 2, trained from scratch (8-px patches of 32-px images)"
    assert card.decoder == (
        "Transformer decoder 32 x 1 layer, 2 heads, 300-token vocabulary, linear projector"
    )
    assert card.data == "synthetic shapes: 20,000 images of 64 px (seed 0)"
    assert card.validation == (
        "validation (step 400, 100 images): CIDEr 4.25 · BLEU-4 0.812 · shape F1 0.93 · "
        "exact scenes 0.9 · loss 0.31"
    )
    # No state.json (a hub id, a copied folder) or a damaged one: the config alone.
    assert describe_model(None, _config()).data is None
    (folder / "state.json").write_text("{not json")
    bare = describe_model(folder, _config())
    assert (bare.data, bare.validation) == (None, None)


def test_model_card_names_the_encoder(tmp_path):
    frozen = {"encoder_mode": "frozen"}
    flickr = {"format": "karpathy", "annotations": "/srv/data/dataset_flickr8k.json"}
    folder = _state(tmp_path / "zoo", frozen, flickr, [])
    card = describe_model(folder, _config("clip-vit-base-patch32"))
    assert card.encoder == "clip-vit-base-patch32 (OpenAI CLIP ViT-B/32, 50 tokens), frozen"
    assert card.data == "karpathy: dataset_flickr8k.json"  # the file, not the server's path
    assert card.validation is None

    converted = tmp_path / "weights" / "my-clip"
    converted.mkdir(parents=True)
    (converted / "convert.json").write_text(json.dumps({"original_source": "org/clip-x"}))
    last2 = {"encoder_mode": "finetune", "finetune_last_n": 2}
    folder = _state(tmp_path / "conv", last2, {}, [])
    card = describe_model(folder, _config(str(converted)))
    assert card.encoder == (
        "converted from org/clip-x (ViT 64 x 2, 8-px patches of 32-px images), "
        "last 2 blocks fine-tuned"
    )
    (converted / "convert.json").write_text(json.dumps({"original_source": "/home/me/clip"}))
    assert describe_model(None, _config(str(converted))).encoder.startswith("converted from clip")
    assert describe_model(None, _config("/gone/enc")).encoder.startswith("enc (ViT 64 x 2")


# ----------------------------------------------------------------------------- results


def test_captions_as_json_and_csv():
    shown = [
        ShownCaption("a.jpg", CaptionResult("a red circle", -0.25, -1.5, True,
                                            [("a red square", -0.5, -2.0), ("red", -0.9, -1.8)])),
        ShownCaption('odd, "name".png', CaptionResult("a star, blue", -0.1, -0.7, False)),
    ]  # fmt: skip
    record = json.loads(captions_json(shown, "runs/best", Decoding("beam", num_beams=3)))
    assert record["model"] == "runs/best"
    assert record["decoding"]["strategy"] == "beam" and record["decoding"]["num_beams"] == 3
    assert record["captions"] == [
        {"image": "a.jpg", "caption": "a red circle", "score": -0.25, "log_prob": -1.5,
         "finished": True, "others": [
             {"caption": "a red square", "score": -0.5, "log_prob": -2.0},
             {"caption": "red", "score": -0.9, "log_prob": -1.8}]},
        {"image": 'odd, "name".png', "caption": "a star, blue", "score": -0.1,
         "log_prob": -0.7, "finished": False, "others": []},
    ]  # fmt: skip
    import csv

    rows = list(csv.reader(io.StringIO(captions_csv(shown))))
    assert rows == [
        ["image", "rank", "caption", "score", "log_prob", "finished"],
        ["a.jpg", "1", "a red circle", "-0.25", "-1.5", "True"],
        ["a.jpg", "2", "a red square", "-0.5", "-2.0", ""],
        ["a.jpg", "3", "red", "-0.9", "-1.8", ""],
        ['odd, "name".png', "1", "a star, blue", "-0.1", "-0.7", "False"],
    ]


# ----------------------------------------------------------------------------- serve


def _dry_run(capsys, *args):
    code = main(["serve", "--dry-run", "--json", *args])
    out = capsys.readouterr()
    return code, out


def test_serve_dry_run_command(tmp_path, capsys):
    ckpt = _fake_checkpoint(tmp_path / "ckpt")
    code, out = _dry_run(
        capsys, "--checkpoint", str(ckpt), "--port", "8999", "--max-upload-mb", "5"
    )
    assert code == 0
    cmd = json.loads(out.out.strip().splitlines()[-1])["command"]
    assert cmd[1:4] == ["-m", "streamlit", "run"]
    assert cmd[4].endswith("streamlit_app.py") and Path(cmd[4]).is_file()
    opts = dict(zip(cmd[5 : cmd.index("--")][::2], cmd[5 : cmd.index("--")][1::2], strict=True))
    assert opts["--server.port"] == "8999"
    assert opts["--server.address"] == "127.0.0.1"
    assert opts["--server.headless"] == "true"
    assert opts["--server.maxUploadSize"] == "5"
    assert opts["--browser.gatherUsageStats"] == "false"
    app_args = cmd[cmd.index("--") + 1 :]
    assert app_args[app_args.index("--checkpoint") + 1] == str(ckpt.resolve())
    assert app_args[app_args.index("--max-upload-mb") + 1] == "5"


def test_serve_refuses_bad_input(tmp_path, capsys):
    not_ckpt = tmp_path / "empty"
    not_ckpt.mkdir()
    code, out = _dry_run(capsys, "--checkpoint", str(not_ckpt))
    assert code == 2 and "not a captioner checkpoint" in out.err and "model.safetensors" in out.err
    code, out = _dry_run(capsys, "--checkpoint", str(tmp_path / "nope"))
    assert code == 2 and "not found" in out.err
    code, out = _dry_run(capsys, "--port", "0")
    assert code == 2 and "--port" in out.err
    code, out = _dry_run(capsys, "--checkpoint", "someone/captioner")  # a hub id: the page loads it
    assert code == 0


def test_serve_passes_who_may_load_what(tmp_path, capsys, monkeypatch):
    def page_args(*args):
        code, out = _dry_run(capsys, *args)
        assert code == 0
        cmd = json.loads(out.out.strip().splitlines()[-1])["command"]
        return cmd[cmd.index("--") + 1 :]

    assert "--allow-any-checkpoint" not in page_args("--host", "0.0.0.0")
    assert "--allow-any-checkpoint" in page_args("--host", "0.0.0.0", "--allow-any-checkpoint")

    # Serving on a network address says what visitors may load (Streamlit itself not run).
    ran = []
    monkeypatch.setattr(os, "execv", lambda exe, cmd: ran.append(cmd))
    assert main(["serve", "--host", "0.0.0.0", "--checkpoints-root", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "visitors may load only the served checkpoint, folders under --checkpoints-root" in err
    assert main(["serve", "--host", "0.0.0.0", "--allow-any-checkpoint"]) == 0
    assert "any folder or hub id" in capsys.readouterr().err
    assert main(["serve"]) == 0  # loopback: nothing to say
    assert "visitors" not in capsys.readouterr().err
    assert len(ran) == 3


# ----------------------------------------------------------------------------- with a model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from app_fixtures import synthetic_images, tiny_checkpoint

    root = tmp_path_factory.mktemp("app")
    paths, captions = synthetic_images(root / "synthetic", images=4)
    # A few seconds of training so captions are words (a random model emits stray bytes).
    firsts = [captions[5 * i] for i in range(len(paths))]
    ckpt = tiny_checkpoint(root / "ckpt", captions, images=paths, image_captions=firsts, steps=120)
    return ckpt, paths


def test_caption_image_matches_the_library(tiny):
    from mlx_caption.app.captioning import Decoding, caption_image, load_model

    ckpt, paths = tiny
    loaded = load_model(ckpt)
    assert loaded.grid == (4, 4)
    item = load_upload(paths[0].name, paths[0].read_bytes())
    result = caption_image(loaded, item.image, Decoding(max_length=10), attention=True)
    expected = mlx_caption.caption(paths[0], checkpoint=ckpt, strategy="greedy", max_length=10)
    assert result.text == expected[0].text
    assert result.score == pytest.approx(expected[0].score, abs=1e-4)
    assert [w for w, _ in result.words] == result.text.split()
    assert all(g.shape == (4, 4) for _, g in result.words)

    beam = caption_image(loaded, item.image, Decoding(strategy="beam", num_beams=3), False)
    assert len(beam.alternatives) == 2 and beam.words == []
    assert all(beam.score >= s for _, s, _ in beam.alternatives)


def _app(monkeypatch, checkpoint: str, root: str):
    from streamlit.testing.v1 import AppTest

    # The page reads these on every rerun, so they stay set for the whole test.
    monkeypatch.setenv("MLX_CAPTION_CHECKPOINT", checkpoint)
    monkeypatch.setenv("MLX_CAPTION_CHECKPOINTS_ROOT", root)
    return AppTest.from_file(str(APP_FILE), default_timeout=60).run()


def test_page_on_a_network_address_loads_only_what_is_offered(tiny, tmp_path, monkeypatch):
    require_module("streamlit", "streamlit (the [app] extra)")
    ckpt, _ = tiny
    root = tmp_path / "root"
    shutil.copytree(ckpt, root / "runs" / "copy")
    private = shutil.copytree(ckpt, tmp_path / "private")
    # AppTest runs the page with Streamlit's default address: unset, every interface.
    at = _app(monkeypatch, str(ckpt), str(root))
    assert not at.exception
    assert any("loads only the served checkpoint" in c.value for c in at.sidebar.caption)
    at.sidebar.selectbox[0].select("Another folder...").run()
    errors = []
    for typed in (str(private), str(tmp_path / "missing")):  # outside the root, there or not
        at.sidebar.text_input[0].input(typed).run()
        assert not at.exception
        errors.append(at.error[0].value.replace(repr(typed), "PATH"))
    assert errors[0] == errors[1] and "may load" in errors[0]
    at.sidebar.text_input[0].input("runs/copy").run()  # under the root
    assert not at.exception and not at.error
    assert any("Encoder" in c.value for c in at.sidebar.caption)

    monkeypatch.setenv("MLX_CAPTION_ALLOW_ANY_CHECKPOINT", "1")  # the operator opens it
    at.sidebar.text_input[0].input(str(private)).run()
    assert not at.exception and not at.error
    assert not any("loads only" in c.value for c in at.sidebar.caption)


def test_page_without_checkpoint_says_how_to_get_one(tmp_path, monkeypatch):
    require_module("streamlit", "streamlit (the [app] extra)")
    at = _app(monkeypatch, "", str(tmp_path))
    assert not at.exception
    assert any("No captioner is loaded" in i.value for i in at.info)
    assert any("mlx-caption serve --checkpoint demo_out/checkpoint" in c.value for c in at.code)


def test_page_uploads(tiny, monkeypatch):
    require_module("streamlit", "streamlit (the [app] extra)")
    ckpt, paths = tiny
    at = _app(monkeypatch, str(ckpt), "/nonexistent")
    assert not at.exception
    frames = [Image.open(paths[1]).convert("RGB"), Image.new("RGB", (64, 64), "red")]
    gif = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    at.get("file_uploader")[0].set_value(
        [
            (paths[0].name, paths[0].read_bytes(), "image/jpeg"),
            ("fake.png", b"not an image at all" * 10, "image/png"),
            ("anim.gif", gif, "image/gif"),
        ]
    ).run()
    assert not at.exception
    expected = mlx_caption.caption(paths[0], checkpoint=ckpt, strategy="greedy")[0].text
    assert len(expected.split()) >= 3
    headings = [m.value for m in at.markdown]
    assert any(expected.replace(" ", "") in h.replace("\\", "").replace(" ", "") for h in headings)
    assert any("fake.png" in e.value and "not an image" in e.value for e in at.error)
    assert any("anim.gif" in w.value and "first" in w.value for w in at.warning)

    # Beam search shows the other beams.
    at.sidebar.radio(key="strategy").set_value("beam").run()
    assert not at.exception
    assert len(at.dataframe) == 2  # the JPEG and the GIF each get an alternatives table
    # Both captions can be taken away (the browser test reads the files).
    assert any("2 captions on this page" in c.value for c in at.sidebar.caption)
    assert len(at.get("download_button")) == 2
