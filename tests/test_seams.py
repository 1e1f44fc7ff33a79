"""The seams DESIGN.md draws, checked on the source: methods ask the noise schedule, never a scheduler."""

from __future__ import annotations

import re
from pathlib import Path

import inpaintkit.methods

METHODS_DIR = Path(inpaintkit.methods.__file__).parent
# What a method must not touch: the scheduler object, or the internals the noise schedule wraps (issue 14).
SCHEDULER_INTERNALS = re.compile(
    r"(?<!settings)\.scheduler\b|add_noise|alphas_cumprod|init_noise_sigma|\.sigmas\b|\.timesteps\b"
)


def test_methods_read_noise_levels_only_through_the_noise_schedule():
    offending = [
        f"{path.name}:{number}: {line.strip()}"
        for path in sorted(METHODS_DIR.glob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if SCHEDULER_INTERNALS.search(line.split("#")[0]) and not line.lstrip().startswith(('"', "'"))
    ]
    assert not offending, offending


def test_the_check_sees_a_scheduler_attribute(tmp_path):
    # The pattern must catch what it is for, or the test above could never fail.
    assert SCHEDULER_INTERNALS.search("state.scheduler.add_noise(z, n, t)")
    assert SCHEDULER_INTERNALS.search("scheduler.alphas_cumprod[t]")
    assert not SCHEDULER_INTERNALS.search("state.schedule.noised(z, n, i)")
    assert not SCHEDULER_INTERNALS.search("settings.scheduler")  # the setting, a name


FRONT_ENDS = ("cli", "server", "ui", "evaluation")
PACKAGE_DIR = METHODS_DIR.parent


def test_no_front_end_imports_another():
    """The web UI, the service and bench share model_arguments.py and import neither cli.py nor each other (the
    command line is the entry point that launches each of them, so cli.py alone may name them)."""
    offending = []
    for front_end in ("server", "ui", "evaluation"):
        others = "|".join(name for name in FRONT_ENDS if name != front_end)
        pattern = re.compile(rf"from \.+({others})\b|from \.\. import ({others})\b|inpaintkit\.({others})\b")
        for path in sorted((PACKAGE_DIR / front_end).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    offending.append(f"{path.relative_to(PACKAGE_DIR)}:{number}: {line.strip()}")
    assert not offending, offending
