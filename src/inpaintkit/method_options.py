"""Each method option, declared once: its method, kind, default, range or choices, and help.

The CLI's flags, the web UI's Advanced controls, the HTTP form's schema, each Method's defaults and the
validation all derive from this table (issue 14: one option used to be written in about eight places).
Importable without torch, numpy or diffusers, so `inpaintkit --help` answers at once. The fields of
InpaintSettings that hold them are typed there; tests/test_method_options.py keeps the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from .names import FUSE_BLOCKS, RECONSTRUCTIONS


@dataclass(frozen=True)
class MethodOption:
    name: str  # the setting (InpaintSettings field, HTTP field, UI parameter); the CLI flag is --name-with-dashes
    method: str  # the method it belongs to; with any other method it is refused
    kind: type  # int, float or str
    default: Any
    help: str  # one line, for --help and the UI
    label: str  # the UI's label
    minimum: Optional[float] = None  # inclusive
    maximum: Optional[float] = None  # inclusive
    below: Optional[float] = None  # an exclusive upper bound
    choices: tuple[str, ...] = ()
    metavar: Optional[str] = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def problem(self, value: Any) -> Optional[str]:
        """Why `value` is out of this option's range, in one sentence; None when it is fine."""
        if self.choices:
            return (
                None
                if value in self.choices
                else f"Unknown {self.flag} '{value}'; choose one of: {', '.join(self.choices)}."
            )
        low, high, below = self.minimum, self.maximum, self.below
        if (low is None or value >= low) and (high is None or value <= high) and (below is None or value < below):
            return None
        if below is not None:
            return f"{self.flag} must be in [{low:g}, {below:g}), got {value}."
        if high is not None:
            return f"{self.flag} must be from {low:g} to {high:g}, got {value}."
        return f"{self.flag} must be {low:g} or more, got {value}."


OPTIONS: tuple[MethodOption, ...] = (
    MethodOption(
        "blend_start", "bld", float, 0.25, "fraction of the steps skipped, starting from noise", "Blend start",
        minimum=0.0, below=1.0,
    ),
    MethodOption(
        "mask_dilation_iterations", "bld", int, 0, "progressive mask shrinking: N dilated masks first",
        "Mask dilation iterations", minimum=0, metavar="N",
    ),
    MethodOption(
        "reconstruct", "bld", str, "optimize", "background reconstruction after decoding; optimize is slow on a CPU",
        "Reconstruct", choices=RECONSTRUCTIONS,
    ),
    MethodOption("jump_length", "repaint", int, 10, "steps per jump back up", "Jump length", minimum=1, metavar="J"),
    # RePaint uses r = 10 (up to 20 in its ablations); far beyond, the hole stops changing while the cost grows.
    MethodOption(
        "jump_n_sample", "repaint", int, 10, "times each block is resampled", "Jump samples", minimum=1, maximum=100,
        metavar="R",
    ),
    MethodOption(
        "known_t", "tdpaint", int, 50, "the known region's constant noise level (a training timestep)", "Known t",
        minimum=0, maximum=999, metavar="T",
    ),
    MethodOption(
        "fuse_blocks", "latentpaint", str, "all", "the UNet blocks whose hidden states take the context "
        "pass's in the known region", "Fuse blocks", choices=FUSE_BLOCKS,
    ),
    MethodOption(
        "fuse_until", "latentpaint", float, 1.0, "fraction of the steps (from the first) that fuse hidden states; the "
        "rest cost what blend does", "Fuse until", minimum=0.0, maximum=1.0,
    ),
    MethodOption(
        "propagation", "latentpaint", float, 1.0, "scale of the trained propagation module's output (a model loaded "
        "with --latentpaint-weights; without one, only 0 and the default 1 are accepted)", "Propagation",
        minimum=0.0, maximum=4.0,
    ),
    # LanPaint (Zheng et al., TMLR 2025): the authors' defaults, and the ranges of their ComfyUI nodes' widgets.
    MethodOption(
        "lanpaint_steps", "lanpaint", int, 5, "Langevin iterations before each step, each one more model call (fewer "
        "as the noise falls, none at the last step)", "Langevin steps", minimum=0, maximum=100, metavar="N",
    ),
    MethodOption(
        "lanpaint_lambda", "lanpaint", float, 5.0, "bidirectional guidance: how hard the known region pulls the "
        "generated one into agreement", "Lambda", minimum=0.1, maximum=50.0,
    ),
    MethodOption(
        "lanpaint_step_size", "lanpaint", float, 0.2, "time step of each Langevin iteration", "Langevin step size",
        minimum=0.0001, maximum=1.0,
    ),
    MethodOption(
        "lanpaint_beta", "lanpaint", float, 1.0, "the known region's Langevin step size relative to the generated "
        "region's", "Beta", minimum=0.0001, maximum=5.0,
    ),
)  # fmt: skip
OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}
