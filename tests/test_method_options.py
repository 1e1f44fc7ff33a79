"""Each method option is declared once (method_options.py) and every front end and check derives from it."""

from __future__ import annotations

from dataclasses import fields

import pytest

from inpaintkit import InpaintSettings
from inpaintkit.errors import InputError
from inpaintkit.method_options import OPTIONS
from inpaintkit.methods import METHODS
from inpaintkit.settings import FIELD_KINDS, OPTIONAL_FIELDS

KINDS = {int: "whole", float: "number", str: "text"}


def test_the_settings_hold_exactly_the_declared_options_with_their_kinds():
    declared = {option.name: KINDS[option.kind] for option in OPTIONS}
    method_fields = {field.name for field in fields(InpaintSettings) if field.name in OPTIONAL_FIELDS}
    # optional settings of every job, not method options (guidance None: the family's default; true_cfg: Flux's)
    method_fields -= {"seed", "crop_padding", "guidance", "true_cfg"}
    assert method_fields == set(declared)
    assert {name: FIELD_KINDS[name] for name in declared} == declared


def test_each_method_takes_its_defaults_from_the_declarations():
    for option in OPTIONS:
        assert METHODS[option.method].defaults[option.name] == option.default
    assert sum(len(method.defaults) for method in METHODS.values()) == len(OPTIONS)


def test_every_default_is_in_its_own_range():
    assert all(option.problem(option.default) is None for option in OPTIONS)


def out_of_range(option):
    """A value just outside each declared bound."""
    if option.choices:
        return ["magic"]
    values = [option.minimum - 1] if option.minimum is not None else []
    if option.maximum is not None:
        values.append(option.maximum + 1)
    if option.below is not None:
        values.append(option.below)
    return [option.kind(value) for value in values]


@pytest.mark.parametrize(
    "option, value", [(option, value) for option in OPTIONS for value in out_of_range(option)], ids=str
)
def test_a_value_outside_the_declared_range_is_refused_in_one_sentence(inpainter4, option, value):
    settings = InpaintSettings(method=option.method, scheduler="ddim", steps=20, **{option.name: value})
    with pytest.raises(InputError, match=f"{option.flag} ") as raised:
        inpainter4.check(settings)
    assert str(raised.value) == option.problem(value)


def test_the_cli_offers_each_option_with_its_default():
    from inpaintkit.cli import build_parser

    run = build_parser()._subparsers._group_actions[0].choices["run"]
    actions = {action.dest: action for action in run._actions}
    for option in OPTIONS:
        assert f"(default {option.default})" in actions[option.name].help
        assert actions[option.name].type is option.kind
        assert tuple(actions[option.name].choices or ()) == option.choices


def test_the_http_schema_lists_each_option_and_its_choices():
    from inpaintkit.server.forms import request_body_schema

    properties = request_body_schema()["content"]["multipart/form-data"]["schema"]["properties"]
    for option in OPTIONS:
        assert option.name in properties
        assert tuple(properties[option.name].get("enum", ())) == option.choices


def test_the_ui_builds_each_control_from_its_declaration():
    from inpaintkit.ui.app import method_option_field

    for option in OPTIONS:
        control = method_option_field(option.name)
        assert control.value == option.default
        assert control.label == option.label
        if option.choices:
            assert [choice[1] for choice in control.choices] == list(option.choices)
        else:
            assert control.minimum == option.minimum


def test_the_web_ui_s_run_handler_takes_every_option():
    """The UI's Run inputs are the handler's parameters (ui/app.py): an option missing there is shown, then ignored."""
    import inspect

    from inpaintkit.ui.jobs import InpaintJobs

    parameters = set(inspect.signature(InpaintJobs.inpaint).parameters)
    assert {option.name for option in OPTIONS} <= parameters
