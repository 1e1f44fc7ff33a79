"""`inpaintkit bench` and `inpaintkit metrics`: arguments checked first, then the shared evaluation loop."""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable, Optional, Union

from ..devices import dtype_flag, resolve_device, resolve_dtype
from ..errors import InputError
from ..io import check_writable, write_text_atomic
from ..methods import METHOD_OPTIONS, METHODS
from ..names import DEFAULT_SEED
from ..presets import with_preset
from ..settings import InpaintSettings
from .pipe import parse_pipe_source, read_pipe
from .run import Evaluation, evaluate
from .samples import IMAGE_SUFFIXES, Sample, read_samples
from .store import Destination, object_store_uri, staged

log = logging.getLogger("inpaintkit")
SCORING_PACKAGES = ("torchmetrics", "matplotlib")  # SSIM and CLIP score; the charts
RUN_FILE = "run.json"  # the model and settings a --dst was made with, so a resume cannot mix two runs


def command_bench(arguments: argparse.Namespace) -> int:
    methods = parse_methods(arguments.pipeline, "--pipeline")
    if arguments.metric:
        require_scoring_packages()
    base = bench_settings_base(arguments)
    for method in methods:
        settings_for(base, method, "")  # every setting is valid for every method, before anything loads
    uri = object_store_uri(arguments.dst)
    if uri is not None and uri.startswith("memory://") and getattr(arguments, "ray", None) is not None:
        raise InputError(
            "--dst memory:// lives in one process, so the Ray workers cannot write to it; use a file://, s3:// or "
            "gs:// URI."
        )
    samples = open_samples(arguments)
    if uri is None:
        return bench(arguments, methods, base, samples, Destination(prepare_dst(arguments.dst, methods)))
    with staged(uri, methods, resume=not arguments.overwrite) as destination:
        prepare_dst(destination.folder, methods)
        return bench(arguments, methods, base, samples, destination)


def bench(
    arguments: argparse.Namespace,
    methods: list[str],
    base: dict[str, Any],
    samples: list[Sample],
    destination: Destination,
) -> int:
    """Load the model, bind --dst to this run (run.json), make and score the outputs, write the report."""
    from ..model_arguments import inpainter_from_arguments, warn_if_untrained

    dst = destination.folder
    # Everything that changes an output's pixels: a resume must not mix two of these. Device and dtype
    # as resolved, because `auto` means fp16 on a GPU, and bf16 or fp32 on a CPU depending on the CPU.
    device = resolve_device(arguments.device)
    arguments.dtype = dtype_flag(resolve_dtype(arguments.dtype, device))  # the model then loads in exactly this one
    run = {
        "model": str(arguments.model),
        "config": arguments.config,
        "vae": arguments.vae,
        "device": str(device),
        "dtype": arguments.dtype,
        "compile": arguments.compile,
        "vae_tiling": arguments.vae_tiling,
        "fuse_qkv": arguments.fuse_qkv,
        "latentpaint_weights": arguments.latentpaint_weights,
        "settings": base,
    }
    # Quantized weights change pixels too; recorded only when used, so runs from before these options still resume.
    if getattr(arguments, "fp8_weights", False):
        run["fp8_weights"] = True
    if getattr(arguments, "transformer", None):  # resolved, so ./fill.gguf and fill.gguf are one run
        run["transformer"] = str(Path(arguments.transformer).expanduser().resolve())
    check_same_run(dst, run, arguments.overwrite, shown=destination.shown(dst))
    inpainter = inpainter_from_arguments(arguments)
    for method in methods:
        inpainter.check(settings_for(base, method, ""))  # a method this checkpoint cannot run fails before any work
    # Only now: a run that never started binds nothing. The family is a fact of the model (not compared on resume).
    write_text_atomic(dst / RUN_FILE, json.dumps({**run, "family": inpainter.capabilities.family}, indent=2) + "\n")
    destination.commit(dst / RUN_FILE)
    warn_if_untrained(inpainter, arguments.model)
    learned = load_metrics(arguments, inpainter.components.device) if arguments.metric else None
    info = {
        "source": arguments.src,
        "model": str(arguments.model),
        "family": inpainter.capabilities.family,
        "device": inpainter.components.device.type,
        "dtype": str(inpainter.components.dtype).removeprefix("torch."),
        "settings": base,
    }
    evaluation = Evaluation(
        samples,
        methods,
        dst,
        lambda sample, method: dst / method / f"{sample}.png",
        generate=generator(inpainter, base) if getattr(arguments, "ray", None) is None else None,
        fingerprint=run,
        learned=learned,
        overwrite=arguments.overwrite,
        info=info,
    )
    if getattr(arguments, "ray", None) is None:
        return finish(evaluation, quiet=arguments.quiet, destination=destination)
    from .cluster import generate_on_ray  # the outputs (and their metrics rows) are made on the cluster

    del inpainter  # each Ray actor loads its own
    with Progress(0, enabled=False) as progress:
        evaluation, reported = generate_on_ray(
            evaluation,
            arguments,
            base,
            device,
            lambda path, status: progress(destination.shown(path), status),
            destination,
        )
    return finish(evaluation, quiet=arguments.quiet, reported=reported, destination=destination)


def command_metrics(arguments: argparse.Namespace) -> int:
    require_scoring_packages()
    pred = arguments.pred
    for flag, value in (("--pred", pred), ("--dst", arguments.dst)):
        if value is not None and object_store_uri(value) is not None:
            raise InputError(f"{flag} must be a local folder for `metrics` (an object-store URI is for bench --dst).")
    if not pred.is_dir():
        raise InputError(f"--pred {pred} is not a folder.")
    folders = (
        {method: pred / method for method in parse_methods(arguments.method, "--method", known_only=False)}
        if arguments.method
        else prediction_folders(pred)
    )
    absent = [str(folder) for folder in folders.values() if not folder.is_dir()]
    if absent:
        raise InputError(f"No prediction folder {', '.join(absent)}; --method names subfolders of --pred.")
    samples = open_samples(arguments)
    dst = prepare_dst(arguments.dst or pred, [])
    learned = load_metrics(arguments, resolve_device(arguments.device))
    info = {"source": arguments.src, "predictions": str(pred)}
    evaluation = Evaluation(
        samples,
        list(folders),
        dst,
        lambda sample, method: find_prediction(folders[method], sample),
        learned=learned,
        info=info,
    )
    return finish(evaluation, quiet=arguments.quiet)


def finish(
    evaluation: Evaluation,
    quiet: bool,
    reported: frozenset | set = frozenset(),
    destination: Optional[Destination] = None,
) -> int:
    """Evaluate, with one `PATH<TAB>status` line per output; not again for the `reported` ones (bench --ray).

    With an object-store `destination`, each output made goes onto the store before its line, the report at the end.
    """
    destination = destination or Destination(evaluation.dst)
    total = len(evaluation.samples) * len(evaluation.methods) - len(reported)
    with Progress(total, enabled=not quiet) as progress:

        def on_output(path: Path, status: str) -> None:
            destination.on_output(path, status)
            if path not in reported:
                progress(destination.shown(path), status)

        summary = evaluate(evaluation, on_output)
    destination.publish()
    report = destination.shown(evaluation.dst / "report.md")
    print(f"{report}\t{summary['samples_evaluated']} samples, {len(summary['skipped'])} skipped", flush=True)
    return 0


def require_scoring_packages() -> None:
    """SSIM and the charts need the [eval] extra: say so before any work, not after the first sample."""
    missing = [package for package in SCORING_PACKAGES if importlib.util.find_spec(package) is None]
    if missing:
        raise InputError(
            f"Scoring needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed: pip "
            "install 'inpaintkit[eval]'."
        )


def parse_methods(text: str, flag: str, known_only: bool = True) -> list[str]:
    """'blend,native' -> ['blend', 'native'], each named once (and a known method, if `known_only`); errors name
    `flag`.
    """
    methods = [name.strip() for name in text.split(",") if name.strip()]
    if not methods:
        raise InputError(f"{flag} names no method; give e.g. {flag} blend,native.")
    unknown = [name for name in methods if known_only and name not in METHODS]
    if unknown:
        raise InputError(f"Unknown method(s) {', '.join(unknown)} in {flag}; choose from {', '.join(METHODS)}.")
    duplicates = sorted({name for name in methods if methods.count(name) > 1})
    if duplicates:
        raise InputError(f"{flag} names {', '.join(duplicates)} more than once.")
    return methods


def bench_settings_base(arguments: argparse.Namespace) -> dict[str, Any]:
    """The run settings given on the command line (every InpaintSettings field bench has a flag for)."""
    base = {
        field.name: getattr(arguments, field.name)
        for field in fields(InpaintSettings)
        if hasattr(arguments, field.name)
    }
    base["seed"] = DEFAULT_SEED if base.get("seed") is None else base["seed"]
    base["loras"] = list(base.get("loras") or ())  # a list: run.json holds it, and a resume compares the two
    return with_preset(getattr(arguments, "preset", None), base)  # what was not given: the preset, else the default


def settings_for(base: dict[str, Any], method: str, prompt: str) -> InpaintSettings:
    """One method's settings: the shared ones, minus the options that belong to other methods."""
    own = {option: value for option, value in base.items() if METHOD_OPTIONS.get(option, method) == method}
    return InpaintSettings.from_options(**{**own, "method": method, "prompt": prompt, "num_images": 1})


def generator(inpainter, base: dict[str, Any]) -> Callable:
    from .measure import measured

    def generate(sample: Sample, pixels, method: str):
        settings = settings_for(base, method, sample.prompt)
        with measured(inpainter.components.device) as measurement:
            image = inpainter.run(pixels.image, pixels.mask, settings)[0]
        parameters = {
            **image.info["inpaintkit"],
            "sample": sample.name,
            "seconds": measurement.seconds,
            "peak_memory_mb": measurement.peak_memory_mb,
            "memory_kind": measurement.memory_kind,
        }
        return image, parameters

    return generate


def open_samples(arguments: argparse.Namespace) -> list[Sample]:
    split = parse_pipe_source(arguments.src)
    if split is not None:
        return read_pipe(split, arguments.limit, arguments.pipe_images, arguments.pipe_masks)
    return read_samples(Path(arguments.src))[: arguments.limit]


def prepare_dst(dst: Path, methods: list[str]) -> Path:
    if dst.exists() and not dst.is_dir():
        raise InputError(f"--dst {dst} exists and is not a folder.")
    try:
        for folder in (dst, *(dst / method for method in methods)):
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"Cannot create {dst} ({error.strerror or error}).") from None
    check_writable(dst)
    return dst


def check_same_run(dst: Path, run: dict[str, Any], overwrite: bool, shown: Union[Path, str, None] = None) -> None:
    """Refuse to resume into a --dst made with another model or other settings (unless --overwrite); run.json says.

    Each output also stores the run it came from, so an interrupted --overwrite, resumed, remakes the old ones.
    """
    path = dst / RUN_FILE
    shown = shown or dst  # --dst as the user named it (a URI for an object store)
    if not path.is_file() or overwrite:
        return
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        previous = None
    if not isinstance(previous, dict) or not isinstance(previous.get("settings"), dict):
        raise InputError(
            f"{shown}/{RUN_FILE} is unreadable; use another --dst, or --overwrite to make every output again."
        )
    settings = {**previous["settings"], **run["settings"]}
    changed = sorted(key for key in settings if previous["settings"].get(key) != run["settings"].get(key))
    # Both runs' keys: an option recorded only when used (fp8_weights, transformer) is absent, i.e. off, in the other.
    options = (set(run) | set(previous)) - {"settings", "family"}
    changed += sorted(key for key in options if (previous.get(key) or None) != (run.get(key) or None))
    if changed:
        raise InputError(
            f"{shown} holds a run with other settings ({', '.join(changed)}); use another --dst, the same settings to "
            "resume, "
            "or --overwrite to make every output again."
        )


def load_metrics(arguments: argparse.Namespace, device):
    """CLIP and the KID features, on the device that generates (bench) or the one asked for (metrics)."""
    from .learned_metrics import load_learned_metrics

    return load_learned_metrics(arguments.clip_model, arguments.kid_features, device)


def prediction_folders(pred: Path) -> dict[str, Path]:
    """Method name -> folder of its outputs: PRED's subfolders with images, or PRED itself (named after it)."""

    def has_images(folder: Path) -> bool:
        return any(path.suffix.lower() in IMAGE_SUFFIXES for path in folder.iterdir())

    folders = {
        folder.name: folder
        for folder in sorted(pred.iterdir())
        if folder.is_dir() and folder.name not in ("grids", "charts") and has_images(folder)
    }
    if folders:
        return folders
    if has_images(pred):
        return {pred.name: pred}
    raise InputError(f"--pred {pred} holds no images (expected PRED/METHOD/NAME.png or PRED/NAME.png).")


def find_prediction(folder: Path, sample: str) -> Path:
    """NAME.png, or NAME with another image suffix; the .png path if there is none (reported as missing)."""
    for suffix in IMAGE_SUFFIXES:
        if (folder / f"{sample}{suffix}").is_file():
            return folder / f"{sample}{suffix}"
    return folder / f"{sample}.png"


class Progress:
    """A tqdm bar with ETA on a terminal; one `PATH<TAB>status` line per output on stdout either way."""

    def __init__(self, total: int, enabled: bool):
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="image", file=sys.stderr)

    def __enter__(self) -> Callable:
        return self.on_output

    def on_output(self, path: Path, status: str) -> None:
        line = f"{path}\t{status}"
        if self.bar is not None:
            self.bar.write(line, file=sys.stdout)
            self.bar.update(1)
        else:
            print(line, flush=True)

    def __exit__(self, *exc_info) -> None:
        if self.bar is not None:
            self.bar.close()
