"""finalbn.data.images on real files: wide samples (16-bit, 32-bit, float) scaled to 8 bits, 8-bit images
decoded as before, and decompression bombs skipped and counted at planning."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_data import tree_cfg

from finalbn.config import SPLITS, DataConfig
from finalbn.data import build_manifest, load_split_tensors
from finalbn.data.images import (
    TOO_MANY_PIXELS,
    decode_image,
    decode_problem,
    inspect_file,
    inspect_files,
    load_image_tensor,
    stretch_to_uint8,
)
from finalbn.errors import UserError

SIDE = 64
# 12-bit data in 16-bit containers, as scientific cameras write it: a left-to-right ramp 0..4095.
RAMP = np.tile(np.linspace(0, 4095, SIDE).round().astype(np.uint16), (SIDE, 1))


def stretched(samples: np.ndarray) -> np.ndarray:
    """The documented rule, written out independently: samples' min..max -> 0..255, rounded."""
    low, high = samples.min(), samples.max()
    return np.rint((samples.astype(np.float64) - low) * 255 / (high - low)).astype(np.uint8)


def decoded(path: Path) -> np.ndarray:
    """``path`` at its own size (no resize), so every pixel can be checked against the rule."""
    out = decode_image(path, SIDE)
    assert out.shape == (SIDE, SIDE, 3) and out.dtype == np.uint8
    return out


def assert_ramp_kept(out: np.ndarray) -> None:
    """Dark stays dark, bright stays bright: the full 0..255 range, increasing left to right."""
    assert out.min() == 0 and out.max() == 255
    assert (out == 255).mean() < 0.1, "mostly white: the samples were clipped, not scaled"
    columns = out[..., 0].mean(axis=0)
    assert np.all(np.diff(columns) >= 0)
    assert out[:, : SIDE // 2].mean() < 100 < out[:, SIDE // 2 :].mean()


# ------------------------------------------------------------ file writers


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(width: int, height: int, bit_depth: int, colour_type: int, scanlines: bytes) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    chunks = _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(scanlines)) + _chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def write_png16(path: Path, samples: np.ndarray) -> None:
    """A 16-bit-per-channel RGB or RGBA PNG, which Pillow cannot write.

    Rows cycle through PNG filters None, Sub and Up, so decoding goes through
    the unfiltering a real encoder's output needs.
    """
    height, width, channels = samples.shape
    rows = [np.frombuffer(samples[y].astype(">u2").tobytes(), dtype=np.uint8) for y in range(height)]
    pixel_bytes = 2 * channels
    scanlines = b""
    for y, row in enumerate(rows):
        kind = y % 3
        if kind == 1:  # Sub: minus the byte one pixel to the left
            left = np.concatenate([np.zeros(pixel_bytes, np.uint8), row[:-pixel_bytes]])
            row = row - left  # uint8 arithmetic wraps modulo 256, as PNG's does
        elif kind == 2:  # Up: minus the byte above
            row = row - rows[y - 1]
        scanlines += bytes([kind]) + row.tobytes()
    path.write_bytes(png_bytes(width, height, 16, {3: 2, 4: 6}[channels], scanlines))


def write_tiff16(path: Path, samples: np.ndarray, byte_order: str, deflate: bool, rows_per_strip: int) -> None:
    """A 16-bit-per-channel RGB TIFF (Pillow cannot write one): strips, either byte order, raw or deflated."""
    height, width, channels = samples.shape
    end = {"little": "<", "big": ">"}[byte_order]
    strips = []
    for top in range(0, height, rows_per_strip):
        raw = samples[top : top + rows_per_strip].astype(f"{end}u2").tobytes()
        strips.append(zlib.compress(raw) if deflate else raw)
    entries = 10
    bits_at = 8 + 2 + 12 * entries + 4
    offsets_at = bits_at + 2 * channels
    counts_at = offsets_at + 4 * len(strips)
    data_at = counts_at + 4 * len(strips)
    offsets = list(np.cumsum([data_at, *map(len, strips)])[:-1])

    def entry(tag: int, kind: int, count: int, value: int) -> bytes:
        if kind == 3 and count == 1:  # one SHORT sits in the entry itself, left-aligned
            return struct.pack(f"{end}HHIHH", tag, kind, count, value, 0)
        return struct.pack(f"{end}HHII", tag, kind, count, value)

    ifd = [
        entry(256, 4, 1, width),
        entry(257, 4, 1, height),
        entry(258, 3, channels, bits_at),  # BitsPerSample: 16 per channel
        entry(259, 3, 1, 8 if deflate else 1),  # Compression: Adobe deflate or none
        entry(262, 3, 1, 2),  # Photometric: RGB
        entry(273, 4, len(strips), offsets_at),
        entry(277, 3, 1, channels),
        entry(278, 4, 1, rows_per_strip),
        entry(279, 4, len(strips), counts_at),
        entry(284, 3, 1, 1),  # PlanarConfiguration: chunky
    ]
    assert len(strips) > 1, "StripOffsets point at a table only when there are several strips"
    data = (b"II*\x00" if end == "<" else b"MM\x00*") + struct.pack(f"{end}I", 8)
    data += struct.pack(f"{end}H", entries) + b"".join(ifd) + struct.pack(f"{end}I", 0)
    data += struct.pack(f"{end}{channels}H", *[16] * channels)
    data += struct.pack(f"{end}{len(strips)}I", *offsets) + struct.pack(f"{end}{len(strips)}I", *map(len, strips))
    path.write_bytes(data + b"".join(strips))


def bomb_png(path: Path, width: int, height: int) -> None:
    """A tiny PNG whose header declares ``width`` x ``height`` RGB pixels."""
    path.write_bytes(png_bytes(width, height, 8, 2, b"\x00" * 64))


# ------------------------------------------------- more than 8 bits per sample


def test_12_bit_grey_png_is_stretched_not_clipped(tmp_path: Path) -> None:
    path = tmp_path / "ramp.png"
    Image.fromarray(RAMP).save(path)
    with Image.open(path) as image:
        assert image.mode == "I;16"
        # What convert("RGB") alone made of it: nearly all white.
        assert (np.asarray(image.convert("RGB")) == 255).mean() > 0.9
    out = decoded(path)
    assert_ramp_kept(out)
    assert np.array_equal(out[..., 0], stretched(RAMP))
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])


def _i16_tiff(path: Path) -> None:
    Image.fromarray(RAMP).save(path)


def _i16b_tiff(path: Path) -> None:
    Image.frombytes("I;16B", (SIDE, SIDE), RAMP.astype(">u2").tobytes()).save(path)


def _int32_tiff(path: Path) -> None:
    # Signed and wider than 16 bits: -100,000 .. 309,500.
    Image.fromarray(RAMP.astype(np.int32) * 100 - 100_000).save(path)


def _float_tiff(path: Path) -> None:
    # A thermal export: degrees Celsius, 18.0 .. 22.095.
    Image.fromarray(RAMP.astype(np.float32) / 1000 + 18).save(path)


@pytest.mark.parametrize(
    ("write", "mode"),
    [(_i16_tiff, "I;16"), (_i16b_tiff, "I;16B"), (_int32_tiff, "I"), (_float_tiff, "F")],
    ids=["I;16", "I;16B", "I", "F"],
)
def test_wide_grey_tiff_is_stretched_from_its_range(tmp_path: Path, write, mode: str) -> None:
    path = tmp_path / "ramp.tif"
    write(path)
    with Image.open(path) as image:
        assert image.mode == mode
        samples = np.asarray(image)
    out = decoded(path)
    assert_ramp_kept(out)
    assert np.array_equal(out[..., 0], stretched(samples))


def test_float_nan_and_infinity_become_black_and_the_rest_is_stretched(tmp_path: Path) -> None:
    samples = RAMP.astype(np.float32) / 1000 + 18
    samples[0, :3] = [np.nan, np.inf, -np.inf]
    path = tmp_path / "holes.tif"
    Image.fromarray(samples).save(path)
    out = decoded(path)[..., 0]
    assert out[0, :3].tolist() == [0, 0, 0]
    finite = samples[np.isfinite(samples)]
    assert out[0, 3] == np.rint((samples[0, 3] - finite.min()) * 255 / (finite.max() - finite.min()))
    assert out.max() == 255


def test_a_constant_wide_image_is_black() -> None:
    assert not stretch_to_uint8(np.full((4, 4), 1234, np.uint16)).any()
    assert not stretch_to_uint8(np.full((4, 4), np.nan, np.float32)).any()


def colour_ramp(channels: int) -> np.ndarray:
    """Red rises, green rises at half the rate, blue falls; alpha (if any) is opaque."""
    planes = [RAMP, RAMP // 2, 4095 - RAMP, np.full_like(RAMP, 65535)]
    return np.stack(planes[:channels], axis=-1)


@pytest.mark.parametrize("channels", [3, 4], ids=["RGB", "RGBA"])
def test_16_bit_colour_png_is_stretched_with_one_range_for_all_channels(tmp_path: Path, channels: int) -> None:
    samples = colour_ramp(channels)
    path = tmp_path / "ramp.png"
    write_png16(path, samples)
    with Image.open(path) as image:
        # Pillow keeps only each sample's high byte: 12-bit data comes out as 0..15.
        assert np.asarray(image.convert("RGB")).max() == 4095 >> 8
    out = decoded(path)
    assert_ramp_kept(out)
    # One range over the colour channels (0..4095), so green stays half of red.
    assert np.array_equal(out, stretched(samples[..., :3]))


@pytest.mark.parametrize("byte_order", ["little", "big"])
@pytest.mark.parametrize("deflate", [False, True], ids=["raw", "deflate"])
def test_16_bit_colour_tiff_is_stretched(tmp_path: Path, byte_order: str, deflate: bool) -> None:
    samples = colour_ramp(3)
    path = tmp_path / "ramp.tif"
    write_tiff16(path, samples, byte_order, deflate, rows_per_strip=16)
    with Image.open(path) as image:
        assert image.mode == "RGB" and np.asarray(image).max() == 4095 >> 8
    out = decoded(path)
    assert_ramp_kept(out)
    assert np.array_equal(out, stretched(samples))


def test_a_folder_of_16_bit_pngs_trains_on_its_pictures_not_on_white(tmp_path: Path) -> None:
    """The planning and loading path, decoded-image cache included, on 12-bit grey and colour files."""
    rng = np.random.default_rng(0)
    for folder, count in (("dim", 8), ("bright", 4)):
        (tmp_path / folder).mkdir()
        for i in range(count):
            noise = rng.integers(0, 4096, (40, 40), dtype=np.uint16)
            if folder == "dim":
                Image.fromarray(noise).save(tmp_path / folder / f"{i}.png")
            else:
                write_png16(tmp_path / folder / f"{i}.png", np.stack([noise, noise // 2, 4095 - noise], axis=-1))
    cfg = DataConfig(
        source="folder",
        root=str(tmp_path),
        majority=("dim",),
        minority=("bright",),
        image_size=32,
        **{f"{s}_majority": n for s, n in zip(SPLITS, (4, 2, 2), strict=True)},
        **{f"{s}_minority": n for s, n in zip(SPLITS, (2, 1, 1), strict=True)},
    )
    manifest = build_manifest(cfg)
    assert manifest.skipped == {} and manifest.table.height == 12
    tensors = load_split_tensors(manifest, cfg, cache_dir=tmp_path / "cache")
    for split in SPLITS:
        x = tensors.x[split]
        assert x.shape[1:] == (3, 32, 32)
        assert (x == 255).float().mean() < 0.1
        assert x.float().std() > 20, "noise stays noise, not a flat image"


# ------------------------------------------------ 8-bit images: as before


def before(path: Path, size: int) -> np.ndarray:
    """decode_image as it was before wide samples were scaled: Pillow's convert("RGB") and resize."""
    with Image.open(path) as image:
        image.draft("RGB", (size, size))
        rgb = image.convert("RGB")
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def photo(height: int, width: int, channels: int) -> np.ndarray:
    """Smooth colour structure plus noise, so JPEG and resizing have something to do; [H, W] for one channel."""
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:height, 0:width]
    phase = np.arange(channels)[None, None, :]
    base = 127 + 100 * np.sin(x / 17.0)[..., None] * np.cos(y[..., None] / 23.0 + phase)
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    return pixels[..., 0] if channels == 1 else pixels


EIGHT_BIT = {
    "photo.jpg": lambda: Image.fromarray(photo(300, 200, 3)),
    "grey.jpg": lambda: Image.fromarray(photo(300, 200, 1)),
    "photo.png": lambda: Image.fromarray(photo(300, 200, 3)),
    "grey.png": lambda: Image.fromarray(photo(120, 90, 1)),
    "alpha.png": lambda: Image.fromarray(photo(120, 90, 4)),
    "palette.png": lambda: Image.fromarray(photo(120, 90, 3)).convert("P"),
    "grey-alpha.png": lambda: Image.fromarray(photo(120, 90, 3)).convert("LA"),
    "bilevel.png": lambda: Image.fromarray(photo(120, 90, 1)).convert("1"),
    "photo.tif": lambda: Image.fromarray(photo(90, 120, 3)),
}


@pytest.mark.parametrize("name", sorted(EIGHT_BIT))
@pytest.mark.parametrize("size", [32, 224])
def test_8_bit_images_decode_to_the_same_bytes_as_before(tmp_path: Path, name: str, size: int) -> None:
    path = tmp_path / name
    EIGHT_BIT[name]().save(path)
    expected = before(path, size)
    assert expected.std() > 5, "a real picture, not a blank"
    assert np.array_equal(decode_image(path, size), expected)


@pytest.mark.plantvillage
def test_plantvillage_jpegs_decode_to_the_same_bytes_as_before(plantvillage_root: Path) -> None:
    for folder in ("Apple___healthy", "Apple___Apple_scab"):
        for path in sorted((plantvillage_root / folder).iterdir())[:5]:
            for size in (32, 224):
                assert np.array_equal(decode_image(path, size), before(path, size)), path


# ------------------------------------------------------- decompression bombs


def test_a_bomb_header_is_found_cheaply_and_by_the_full_check(tmp_path: Path) -> None:
    # 900 million pixels, over twice Pillow's limit: Image.open itself raises.
    path = tmp_path / "bomb.png"
    bomb_png(path, 30_000, 30_000)
    assert path.stat().st_size < 200
    assert inspect_file(path, 32).problem == TOO_MANY_PIXELS
    assert decode_problem(path) == TOO_MANY_PIXELS
    with pytest.raises(UserError, match=r"cannot read .*bomb\.png listed in the manifest"):
        load_image_tensor(tmp_path, ["bomb.png"], 32)


def bomb_tree(root: Path) -> DataConfig:
    """Two classes of small real PNGs; two bombs among the minority: one past twice the limit, one past the limit."""
    rng = np.random.default_rng(2)
    for folder, count in (("good", 8), ("sick", 4)):
        (root / folder).mkdir()
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / folder / f"{i}.png")
    bomb_png(root / "sick" / "huge.png", 30_000, 30_000)
    # 100 million pixels: between Pillow's limit and twice it, where Pillow only warns.
    bomb_png(root / "sick" / "large.png", 10_000, 10_000)
    return tree_cfg(
        root, train_majority=4, val_majority=2, test_majority=2, train_minority=2, val_minority=1, test_minority=1
    )


def test_bombs_are_skipped_and_counted_at_planning_without_a_warning(tmp_path: Path) -> None:
    cfg = bomb_tree(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        manifest = build_manifest(cfg)
    assert manifest.skipped == {TOO_MANY_PIXELS: 2}
    assert not {"sick/huge.png", "sick/large.png"} & set(manifest.table["path"])
    assert manifest.table.height == 12
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_bombs_are_skipped_when_warnings_are_errors(tmp_path: Path) -> None:
    """As under python -W error: Pillow's warning raised as an exception is one more skipped file."""
    cfg = bomb_tree(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        manifest = build_manifest(cfg)
        assert inspect_file(tmp_path / "sick" / "large.png", 32).problem == TOO_MANY_PIXELS
    assert manifest.skipped == {TOO_MANY_PIXELS: 2}


def test_a_bomb_under_strict_is_named(tmp_path: Path) -> None:
    cfg = bomb_tree(tmp_path)
    with pytest.raises(UserError, match=r"sick/(huge|large)\.png is unreadable \(too many pixels\).*--strict"):
        build_manifest(DataConfig(**{**cfg.__dict__, "strict": True}))


def test_the_limit_is_pillows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lowering Image.MAX_IMAGE_PIXELS lowers the limit; None (Pillow's "no limit") lifts it."""
    path = tmp_path / "small.png"
    Image.fromarray(photo(40, 40, 3)).save(path)
    assert inspect_files([path], 32)[0].problem is None
    # 1,600 pixels: past the lowered limit, under twice it, where Pillow only warns.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert inspect_files([path], 32)[0].problem == TOO_MANY_PIXELS
    assert decode_problem(path) == TOO_MANY_PIXELS
    with pytest.raises(UserError, match=r"small\.png listed in the manifest \(40x40 is more than 1,000 pixels\)"):
        load_image_tensor(tmp_path, ["small.png"], 32)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert inspect_files([path], 32)[0].problem is None and decode_problem(path) is None
