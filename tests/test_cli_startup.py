"""`inpaintkit --help` and argument errors answer without importing torch or diffusers (seconds of start-up).

These are properties, not timings: a heavy import added back to the parser's path fails them whatever the
machine's speed (the timings themselves belong in benchmarks/).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from .helpers import assert_one_line_error

HEAVY_MODULES = ("torch", "diffusers", "transformers", "numpy", "PIL", "cv2")


def run_in_fresh_interpreter(argv: list[str]) -> tuple[int, list[str], str]:
    """Run cli.main(ARGV) in a new Python (the test process has torch loaded already): (exit code, heavy modules
    loaded, stderr).
    """
    script = textwrap.dedent(f"""
        import json, sys
        from inpaintkit.cli import main
        try:
            code = main({argv!r})
        except SystemExit as exit_:  # argparse exits itself for --help and usage errors
            code = exit_.code
        print(json.dumps({{"code": code, "loaded": [name for name in {HEAVY_MODULES!r} if name in sys.modules]}}))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])  # --help prints before it
    return report["code"], report["loaded"], result.stderr


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["bench", "--help"], ["--version"]])
def test_help_imports_no_heavy_library(argv):
    code, loaded, _ = run_in_fresh_interpreter(argv)
    assert code == 0
    assert loaded == [], f"`inpaintkit {' '.join(argv)}` imported {', '.join(loaded)}"


@pytest.mark.parametrize(
    "argv, phrase",
    [
        (["run", "--image", "photo.png"], "the following arguments are required: --output"),
        (["run", "--image", "photo.png", "--output", "out.png", "--method", "magic"], "invalid choice: 'magic'"),
        (["outpaint", "--image", "photo.png", "--output", "out.png", "--steps", "many"], "invalid int value: 'many'"),
        (["paint"], "invalid choice: 'paint'"),
    ],
)
def test_argument_errors_import_no_heavy_library(argv, phrase):
    code, loaded, stderr = run_in_fresh_interpreter(argv)
    assert_one_line_error(code, stderr, phrase)
    assert loaded == [], f"`inpaintkit {' '.join(argv)}` imported {', '.join(loaded)}"


def test_importing_the_package_imports_no_heavy_library():
    script = f"import sys, inpaintkit; print([name for name in {HEAVY_MODULES!r} if name in sys.modules])"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"


def test_public_names_are_unchanged():
    import inpaintkit
    from inpaintkit import Cancelled, Inpainter, InpaintSettings, InputError
    from inpaintkit.errors import Cancelled as errors_cancelled
    from inpaintkit.errors import InputError as errors_input_error
    from inpaintkit.inpainter import Inpainter as inpainter_class
    from inpaintkit.settings import InpaintSettings as settings_class

    assert inpaintkit.__all__ == ["Cancelled", "Inpainter", "InpaintSettings", "InputError", "__version__"]
    assert (Inpainter, InpaintSettings, InputError, Cancelled) == (
        inpainter_class,
        settings_class,
        errors_input_error,
        errors_cancelled,
    )
    assert isinstance(inpaintkit.__version__, str)
    star: dict = {}
    exec("from inpaintkit import *", star)
    assert set(inpaintkit.__all__) <= set(star)
    assert set(inpaintkit.__all__) <= set(dir(inpaintkit))
    with pytest.raises(AttributeError, match="no attribute 'Painter'"):
        inpaintkit.Painter  # noqa: B018


def test_the_method_registry_follows_names():
    """names.py lists the methods for --help; the registry must hold exactly those, in that order."""
    from inpaintkit.methods import METHOD_NAMES, METHODS
    from inpaintkit.names import METHOD_SUMMARIES

    assert METHOD_NAMES == ("auto", *METHODS)
    assert [(name, method.summary) for name, method in METHODS.items()] == list(METHOD_SUMMARIES.items())


def test_dtype_choices_are_the_loaders():
    from inpaintkit.devices import DTYPES
    from inpaintkit.names import DTYPE_CHOICES

    assert DTYPE_CHOICES == ("auto", *DTYPES)
