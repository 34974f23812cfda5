"""Library errors name parameters (what a notebook caller passed); the scripts print them as flags."""

from __future__ import annotations

import argparse

import pytest

from src.core.cli import flag_of, speak_flags
from src.core.errors import ConfigError


def test_a_library_error_names_the_parameter_not_the_flag():
    from src.monitoring.monitor import check_settings
    from src.serving.server import ServeOptions

    with pytest.raises(ConfigError) as e:
        check_settings(0, 0.05, 1)
    assert str(e.value).startswith("`window` must be an integer >= 20") and "--" not in str(e.value)
    assert e.value.params == ("window",)
    with pytest.raises(ConfigError, match=r"^`workers` and `threads` must be >= 1$"):
        ServeOptions(model="m", workers=0).check()


def test_promotion_errors_name_parameters():
    from src.registry.policy import check_request

    with pytest.raises(ConfigError) as e:
        check_request(force=True, reason=None, tolerance=0.01)
    assert str(e.value).startswith("`force` needs a `reason`") and "--" not in str(e.value)


def test_the_cli_names_the_flag(tmp_path, capsys):
    from src.inference_monitor import main

    rc = main(["--model-path", str(tmp_path / "never-loaded.skops"), "--window", "0", "--store", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == ConfigError.exit_code and err == [
        "error: --window must be an integer >= 20 (drift detection needs at least 20 predictions), got 0"]


def test_a_parameter_whose_flag_has_another_name(tmp_path, capsys):
    from src.housekeeping import main

    assert main(["gc", "--older-than", "-1", "--store", str(tmp_path)]) == ConfigError.exit_code
    assert capsys.readouterr().err.strip() == ("error: --older-than must be a number of days >= 0, got -1.0 "
                                               "(for example --older-than 30)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    p.add_argument("-w", "--window", type=int)
    p.add_argument("--model", "--model-path", dest="model")
    sub = p.add_subparsers().add_parser("promote")
    sub.add_argument("--force", action="store_true")
    sub.add_argument("--reason")
    return p


@pytest.mark.parametrize("text, params, flags, said", [
    ("`window` must be >= 20", ("window",), None, "--window must be >= 20"),
    ("pass `window=300`", ("window",), None, "pass --window 300"),
    ("pass `force=True` with `reason='...'`", ("force", "reason"), None, "pass --force with --reason '...'"),
    ("no `model` given", ("model",), None, "no --model given"),  # the first long spelling
    ("no `model` given", ("model",), {"model": "--model-path"}, "no --model-path given"),
    ("`alpha` must be in (0, 1)", ("alpha",), None, "`alpha` must be in (0, 1)"),  # no such flag: left as is
    ("window `window`", (), None, "window `window`"),  # only the listed parameters, only in backquotes
])
def test_speak_flags(text, params, flags, said):
    assert speak_flags(text, params, parser(), flags) == said


def test_flag_of_looks_into_subcommands():
    assert flag_of(parser(), "reason") == "--reason" and flag_of(parser(), "window") == "--window"
    assert flag_of(parser(), "nothing") is None
