"""The one class-name rule (src.core.names) where class folders are born (scanning a dataset), and the
spreadsheet-formula escaping of the CSV files written for people (src.core.csv_cells)."""

import csv
import io
import shutil
import unicodedata

import pytest
from helpers import make_image_folder

from src.core.csv_cells import csv_text, escape_cell, unescape_cell
from src.core.errors import DataError
from src.core.names import MAX_BYTES, class_name_problem

NFC_CAFE = unicodedata.normalize("NFC", "café")
NFD_CAFE = unicodedata.normalize("NFD", "café")

REFUSED = {
    "formula =": "=1+1", "formula @": "@SUM(A1)", "formula dde": "=cmd|' -c calc'!A0", "formula +": "+1",
    "formula -": "-x", "zero-width space": "ap\u200bple", "delete char": "ap\x7fple", "bidi override": "\u202eelppa",
    "NFD": NFD_CAFE, "slash": "a/b", "backslash": "a\\b", "dot": ".hidden", "dotdot": "..", "tab": "a\tb",
    "newline": "a\nb", "no-break space": "a\u00a0b", "trailing space": "apple ", "too long": "x" * 300,
    "long in bytes": "é" * (MAX_BYTES // 2 + 1), "empty": "",
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_the_rule_refuses(case):
    assert class_name_problem(REFUSED[case])


@pytest.mark.parametrize("name", ["apple", "soda_can", NFC_CAFE, "Red Bell Pepper", "苹果", "x" * MAX_BYTES, "a=b"])
def test_the_rule_accepts(name):
    assert class_name_problem(name) is None


@pytest.mark.parametrize("folder", ["=1+1", "ap\u200bple", "ap\x7fple", "\u202eelppa", "x" * 200])
def test_scanning_refuses_a_class_folder_against_the_rule(tmp_path, capsys, folder):
    from src.data.scan import scan_dataset
    from src.data_versioning import main

    data = make_image_folder(tmp_path / "d", per_split={"train": 1, "test": 1})
    shutil.move(data / "train" / "c", data / "train" / folder)
    with pytest.raises(DataError, match="class folder"):
        scan_dataset(data)
    assert main(["--data-dir", str(data), "--store", str(tmp_path / "s"), "--wandb-mode", "disabled"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: class folder") and "rename" in err[0]


def test_an_nfd_folder_beside_its_nfc_twin_is_a_clash(tmp_path):
    from src.data.dataset import image_dataset

    data = make_image_folder(tmp_path / "d", classes=("a", NFC_CAFE), per_split={"train": 2, "test": 1})
    shutil.copytree(data / "train" / NFC_CAFE, data / "train" / NFD_CAFE)
    with pytest.raises(DataError, match="another Unicode form.*look identical"):
        image_dataset(data)


def test_hidden_folders_are_still_ignored_not_refused(tmp_path):
    from src.data.scan import scan_dataset

    data = make_image_folder(tmp_path / "d", per_split={"train": 1, "test": 1})
    (data / "train" / ".ipynb_checkpoints").mkdir()
    assert scan_dataset(data)["manifest"]


@pytest.mark.parametrize("cell", ["=1+1", "@SUM(A1)", "=cmd|' -c calc'!A0", "+1", "-1", "\tx", "\rx", "'=x", "''",
                                  "'", "'a", "apple", ""])
def test_formula_cells_are_escaped_and_read_back_as_written(cell):
    text = csv_text(["path", "label"], [["unlabeled/x.png", cell]])
    (row,) = list(csv.DictReader(io.StringIO(text, newline="")))
    assert not row["label"].startswith(("=", "+", "-", "@", "\t", "\r"))
    assert unescape_cell(row["label"]) == cell
    assert escape_cell(0.5) == 0.5 and escape_cell(-1.0) == -1.0  # numbers are not formulas
