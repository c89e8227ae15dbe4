"""``python -m training --help`` tells the truth: its choices are the config's allowed values and every default it
names is the one a run started without that flag trains with."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import typing
from pathlib import Path

import pytest

from training import cli
from training.config import CHOICES, PROFILES, TrainConfig, make_config

REPO = Path(__file__).resolve().parents[2]
DEFAULT = re.compile(r"\bdefault:? ([^;)\s]+)[;)]")  # "(default 0.1)", "(default: quick)", "default 3000;"


def _actions() -> list[argparse.Action]:
    return [
        a for a in cli.build_parser()._actions if a.dest in {f.name for f in dataclasses.fields(TrainConfig)}
    ]


def test_every_choice_list_is_the_configs_literal():
    by_dest = {a.dest: a for a in _actions()}
    for name, allowed in CHOICES.items():
        hint = typing.get_type_hints(TrainConfig)[name]
        literal = (
            next(t for t in typing.get_args(hint) if typing.get_origin(t) is typing.Literal)
            if typing.get_origin(hint) is not typing.Literal
            else hint
        )
        assert allowed == typing.get_args(literal)
        assert tuple(by_dest[name].choices) == allowed, name


def test_every_default_in_a_help_text_is_the_default_run():
    quick = make_config(cli.DEFAULT_PROFILE)
    checked = 0
    for action in _actions():
        for shown in DEFAULT.findall(action.help or ""):
            value = getattr(quick, action.dest)
            assert shown == ("off" if value is None else str(value)), f"--{action.dest}: help says {shown}"
            checked += 1
    assert checked >= 25
    assert cli.default("lr_schedule") == TrainConfig.lr_schedule
    assert cli.default("gamma_cap") == PROFILES["quick"]["gamma_cap"]


def test_help_names_every_profile_and_schedule():
    text = cli.build_parser().format_help()
    for name in (*PROFILES, *CHOICES["lr_schedule"]):
        assert name in text
    assert (
        cli.build_parser().parse_args(["--out", "x"]).lr_schedule is None
    )  # unset flags leave the profile's


@pytest.mark.parametrize("option", sorted(CHOICES))
def test_an_unknown_value_is_refused_once_by_the_config(option):
    with pytest.raises(ValueError, match=f"unknown {option} 'bogus'; expected one of"):
        make_config("quick", **{option: "bogus"})
    with pytest.raises(ValueError, match=f"unknown {option}"):
        TrainConfig.from_dict({**TrainConfig().to_dict(), option: "bogus"})


def test_recorded_configs_still_load():
    paths = sorted((REPO / "docs" / "runs").glob("*/config.json")) + sorted(
        (REPO / "research" / "runs").glob("*/config.json")
    )
    assert paths
    for path in paths:
        TrainConfig.from_dict(json.loads(path.read_text())["train"])
