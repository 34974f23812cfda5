"""Nothing in a dataset folder is skipped silently: what the walk cannot read (a folder nested too
deep, a path over the system's limit, an unreadable folder or file) is a named quality finding, and
versioning and training refuse it in one line (exit 2). File names with control characters never
split a report line or an error line.

CI runs as root, which reads any file: unreadability is simulated by patching ``os.scandir`` and
``Path.read_bytes`` for chosen paths.
"""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path

import pytest
from helpers import make_image_folder

from src import data_versioning as dv
from src.core.errors import DataError
from src.data.dataset import image_dataset

pytestmark = pytest.mark.usefixtures("drop_log_handlers")  # main() points logging at captured stderr
D = "disabled"


def one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and len(err.strip().splitlines()) == 1, err
    return lines[0]


def nest(top: Path, names: list[str], file_from: Path) -> None:
    """Folders ``names`` one inside the other below ``top`` and a copy of ``file_from`` at the bottom,
    made by relative steps (the full path may be longer than the system allows)."""
    cwd = os.getcwd()
    os.chdir(top)
    try:
        for name in names:
            os.mkdir(name)
            os.chdir(name)
        Path("deep.png").write_bytes(file_from.read_bytes())
    finally:
        os.chdir(cwd)


def unnest(top: Path, names: list[str]) -> None:
    """Remove what :func:`nest` made, bottom up (``shutil.rmtree`` recurses once per level, as ``os.walk`` did)."""
    cwd = os.getcwd()
    os.chdir(top)
    try:
        for name in names:
            os.chdir(name)
        for f in os.listdir("."):
            os.unlink(f)
        for name in reversed(names):
            os.chdir("..")
            os.rmdir(name)
    finally:
        os.chdir(cwd)


@pytest.fixture
def ds(tmp_path) -> Path:
    return make_image_folder(tmp_path / "ds", per_split={"train": 3, "test": 1})


def assert_refused(ds: Path, capsys, expected: str) -> None:
    """Versioning and training refuse the dataset in one line; nothing is stored."""
    assert dv.main(["--data-dir", str(ds), "--wandb-mode", D]) == 2
    assert expected in one_error_line(capsys.readouterr().err)
    assert dv.list_versions() == []
    with pytest.raises(DataError, match=expected):
        image_dataset(ds)


@pytest.mark.parametrize("case", ["too_deep", "too_long"])
def test_deep_or_long_paths_are_findings_and_refused_in_one_line(ds, capsys, request, case):
    """A folder 1,200 deep hit the recursion limit (RecursionError); a path over PATH_MAX dropped out unseen."""
    names = ["d"] * 1200 if case == "too_deep" else [f"{i:02d}" + "x" * 240 for i in range(20)]  # 20 x 242 > 4096
    nest(ds / "train" / "a", names, ds / "train" / "a" / "a_0.png")
    request.addfinalizer(lambda: unnest(ds / "train" / "a", names))
    rep = dv.quality_check(ds)
    assert rep["counts"].get(case) == 1, rep["counts"]
    (finding,) = [f for f in rep["findings"] if f["kind"] == case]
    assert finding["severity"] == "error" and finding["paths"][0].startswith("train/a/" + names[0])
    assert rep["stats"]["files"] == 3 * 3 + 3  # the reachable files are all there
    assert dv.main(["--quality-check", "--data-dir", str(ds), "--fail-on-issues"]) == 1
    out = capsys.readouterr().out
    assert case in out and max(len(line) for line in out.splitlines()) < 400  # the long path is cut, not printed
    expected = "folders below its class folder" if case == "too_deep" else "longer than the system allows"
    assert_refused(ds, capsys, expected)


@pytest.mark.parametrize("what", ["sub-folder", "class folder", "file"])
def test_unreadable_folders_and_files_are_named_not_skipped(ds, capsys, monkeypatch, what):
    target = {"sub-folder": ds / "train" / "b" / "sub", "class folder": ds / "train" / "c",
              "file": ds / "train" / "b" / "b_1.png"}[what]
    (ds / "train" / "b" / "sub").mkdir()
    (ds / "train" / "b" / "sub" / "x.png").write_bytes((ds / "train" / "b" / "b_0.png").read_bytes())
    real_scandir, real_read = os.scandir, Path.read_bytes

    def scandir(path="."):
        if Path(path) == target:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path)

    def read_bytes(self):
        if self == target:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_read(self)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    rep = dv.quality_check(ds)
    rel = target.relative_to(ds).as_posix()
    assert [f["paths"] for f in rep["findings"] if f["kind"] == "unreadable"] == [[rel]], rep["counts"]
    assert "empty_class" not in rep["counts"]  # an unreadable class folder is not an empty one
    assert dv.main(["--quality-check", "--data-dir", str(ds)]) == 0
    assert f"left out: {rel} cannot be read" in capsys.readouterr().out
    assert_refused(ds, capsys, "cannot read")


def test_control_characters_in_file_names_never_split_a_line(ds, capsys, monkeypatch):
    name = "odd\nname\x1b[2J.png"
    (ds / "train" / "a" / name).write_bytes(b"")  # a zero-byte file: a finding that names it
    real_read = Path.read_bytes
    with monkeypatch.context() as m:  # first, while nothing is cached: reading it fails
        m.setattr(Path, "read_bytes", lambda p: (_ for _ in ()).throw(PermissionError(
            errno.EACCES, "Permission denied")) if p.name == name else real_read(p))
        assert dv.main(["--data-dir", str(ds), "--wandb-mode", D]) == 2
    assert "odd\\nname\\x1b[2J.png: cannot read file" in one_error_line(capsys.readouterr().err)
    assert dv.main(["--quality-check", "--data-dir", str(ds)]) == 0
    out = capsys.readouterr().out
    assert "zero-byte file: train/a/odd\\nname\\x1b[2J.png" in out and "\x1b" not in out
    assert [f["paths"] for f in dv.quality_check(ds)["findings"] if f["kind"] == "zero_byte"] == [[f"train/a/{name}"]]


def test_an_unreadable_dataset_folder_is_one_line(ds, capsys, monkeypatch):
    real_scandir, real_listdir = os.scandir, os.listdir

    def refused(real):
        def listing(path="."):
            if Path(path) == ds:
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real(path)
        return listing

    monkeypatch.setattr(os, "scandir", refused(real_scandir))
    monkeypatch.setattr(os, "listdir", refused(real_listdir))
    for argv in (["--quality-check", "--data-dir", str(ds)], ["--data-dir", str(ds), "--wandb-mode", D]):
        assert dv.main(argv) == 2
        assert f"cannot read the dataset folder {ds} (unreadable)" in one_error_line(capsys.readouterr().err)


def test_an_unreadable_train_folder_is_one_line_in_training(ds, capsys, monkeypatch, tmp_path):
    """Training lists train/'s class folders before the scan: an unreadable train/ (chmod 000) ended in a
    PermissionError traceback there, not in the walk's one line naming the folder."""
    from src.train_with_wandb import main as train

    real_scandir, real_iterdir = os.scandir, Path.iterdir

    def scandir(path="."):
        if Path(path) == ds / "train":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path)

    def iterdir(self):
        if self == ds / "train":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(Path, "iterdir", iterdir)
    assert train(["--data-dir", str(ds), "--fine-tune-epochs", "0", "--wandb-mode", D, "--store",
                  str(tmp_path / "s"), "--models-dir", str(tmp_path / "m"), "--no-progress"]) == 2
    assert f"cannot read {ds / 'train'}" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "m").exists()
    with pytest.raises(DataError, match="cannot read"):
        image_dataset(ds)


def test_a_deep_test_dir_is_one_line_in_monitoring(ds, capsys, request, tmp_path):
    """``inference_monitor.py --test-dir`` walked with ``Path.rglob``, which recurses once per level: a folder
    1,200 deep raised RecursionError. It now walks as training does and refuses it in the same line."""
    from src.inference_monitor import main as monitor

    names = ["d"] * 1200
    nest(ds / "test" / "a", names, ds / "test" / "a" / "a_0.png")
    request.addfinalizer(lambda: unnest(ds / "test" / "a", names))
    assert monitor(["--model-path", str(tmp_path / "never-loaded.skops"), "--test-dir", str(ds / "test"),
                    "--store", str(tmp_path / "s"), "--wandb-mode", D, "--no-progress"]) == 2
    assert "folders below its class folder" in one_error_line(capsys.readouterr().err)


def test_the_monitoring_sample_is_the_walk_of_the_test_dir(ds, tmp_path):
    """The walk keeps what the sample was: every image, labels from the folder holding it (none at the top),
    hidden files left out, the same order before the seeded shuffle."""
    from src.monitoring.batch import sample_images

    (ds / "test" / "a" / "sub").mkdir()
    (ds / "test" / "a" / "sub" / "x.png").write_bytes((ds / "test" / "a" / "a_0.png").read_bytes())
    (ds / "test" / "flat.png").write_bytes((ds / "test" / "a" / "a_0.png").read_bytes())
    (ds / "test" / "a" / ".hidden.png").write_bytes(b"")
    (ds / "test" / "a" / "notes.txt").write_text("not an image")
    expected = sorted([(ds / "test" / "a" / "a_0.png", "a"), (ds / "test" / "b" / "b_0.png", "b"),
                       (ds / "test" / "c" / "c_0.png", "c"), (ds / "test" / "a" / "sub" / "x.png", "sub"),
                       (ds / "test" / "flat.png", None)], key=lambda item: item[0])
    random.Random(7).shuffle(expected)  # sorted paths, then the seeded shuffle: the same sample as before
    assert sample_images(ds / "test", 0, 7) == expected and sample_images(ds / "test", 3, 7) == expected[:3]


def test_the_quality_check_lists_images_every_command_would_refuse(tmp_path):
    """An EPS named .jpg (Pillow's EPS plugin hands files to Ghostscript) and a 2000 x 10 strip: training,
    monitoring and the server refuse both, so the quality check lists them before any of those runs."""
    from PIL import Image

    ds = make_image_folder(tmp_path / "d", per_split={"train": 2, "test": 1})
    (ds / "train" / "a" / "eps.jpg").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n")
    Image.new("RGB", (2000, 10), (200, 30, 30)).save(ds / "train" / "a" / "strip.png")
    found = {f["kind"]: f["paths"] for f in dv.quality_check(ds)["findings"]}
    assert "train/a/eps.jpg" in found["non_image"] and found["bad_aspect_ratio"] == ["train/a/strip.png"]
