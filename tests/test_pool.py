"""The unlabeled pool: layout (any depth, folder names never classes), manifest rows, synth, EXIF."""

import hashlib

import numpy as np
from helpers import make_image_folder
from PIL import Image

from src.core.images import open_image
from src.data.dataset import image_dataset
from src.data.scan import POOL, scan_dataset


def add_pool(root, n=4, nested=True):
    """``root/unlabeled/`` with ``n`` images, half of them one folder deeper (a folder named like a class)."""
    for i in range(n):
        d = root / POOL / ("a" if nested and i % 2 else "")
        d.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), (10 + 40 * i, 120, 200)).save(d / f"p{i}.png")
    return root


def test_pool_rows_have_no_class_and_no_stray_note(tmp_path):
    data = add_pool(make_image_folder(tmp_path / "d"))
    scan = scan_dataset(data)
    pool = [e for e in scan["manifest"] if e["split"] == POOL]
    assert len(pool) == 4 and all(e["class"] == "" for e in pool)
    assert {e["path"] for e in pool} >= {"unlabeled/p0.png", "unlabeled/a/p1.png"}
    assert not any("unlabeled" in n for n in scan["notes"])


def test_dataset_pool_has_paths_digests_and_no_labels(tmp_path):
    data = add_pool(make_image_folder(tmp_path / "d"))
    (data / POOL / ".DS_Store").write_bytes(b"junk")
    ds = image_dataset(data)
    assert ds.classes == ["a", "b", "c"]  # unlabeled/a is not a class, and no class "unlabeled"
    assert ds.has_pool and len(ds.pool) == 4 and (ds.pool.labels == -1).all()
    p = ds.pool.paths[0]
    assert ds.pool.digests[0] == hashlib.sha256(p.read_bytes()).hexdigest()
    assert len(ds.train) == 18  # the pool is not in train


def test_no_pool_folder_means_no_pool(tmp_path):
    ds = image_dataset(make_image_folder(tmp_path / "d"))
    assert ds.pool is None and not ds.has_pool


def test_synth_pool_is_seeded_and_leaves_labeled_bytes_alone(tmp_path):
    from src.synth import main

    args = ["--classes", "2", "--train-per-class", "2", "--test-per-class", "1", "--image-size", "32"]
    assert main(["--out", str(tmp_path / "plain"), *args]) == 0
    assert main(["--out", str(tmp_path / "a"), *args, "--unlabeled", "5", "--pool-truth", str(tmp_path / "t.csv")]) == 0
    assert main(["--out", str(tmp_path / "b"), *args, "--unlabeled", "5"]) == 0
    pool_a = sorted((tmp_path / "a" / POOL).rglob("*.jpg"))
    assert len(pool_a) == 5
    assert [p.read_bytes() for p in pool_a] == [p.read_bytes() for p in sorted((tmp_path / "b" / POOL).rglob("*.jpg"))]
    for p in (tmp_path / "plain" / "train").rglob("*.jpg"):
        assert (tmp_path / "a" / p.relative_to(tmp_path / "plain")).read_bytes() == p.read_bytes()
    truth = (tmp_path / "t.csv").read_text().splitlines()
    assert truth[0] == "path,label" and len(truth) == 6 and truth[1].startswith("unlabeled/")


def test_synth_rejects_negative_pool(tmp_path, capsys):
    from src.synth import main

    assert main(["--out", str(tmp_path / "x"), "--unlabeled", "-1"]) == 2
    assert "--unlabeled" in capsys.readouterr().err


def test_exif_orientation_is_applied(tmp_path):
    """A 40x20 photo stored with orientation 6 (rotate 90° clockwise to view) opens as 20x40, upright."""
    a = np.zeros((20, 40, 3), dtype=np.uint8)
    a[:, :20] = (255, 0, 0)  # left half red, right half blue
    a[:, 20:] = (0, 0, 255)
    img = Image.fromarray(a)
    exif = img.getexif()
    exif[0x0112] = 6
    p = tmp_path / "phone.jpg"
    img.save(p, exif=exif, quality=95)
    out = open_image(p)
    assert out.size == (20, 40)
    px = np.asarray(out).astype(int)
    assert px[2, 10, 0] > 200 and px[2, 10, 2] < 60  # the stored left (red) is on top after rotating clockwise
    assert px[-3, 10, 2] > 200 and px[-3, 10, 0] < 60
    plain = tmp_path / "plain.jpg"
    img.save(plain, quality=95)
    assert open_image(plain).size == (40, 20)
