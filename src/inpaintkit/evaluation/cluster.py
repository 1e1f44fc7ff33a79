"""`inpaintkit bench --ray ADDRESS`: the outputs are made on a Ray cluster, then scored here as a local run scores.

Step 1 of issue 18. With `--ray`, bench first makes every output that is missing (or unusable, or made by another
run, or every output with `--overwrite`) on the cluster: those (sample, method) pairs become the rows of a Ray
Dataset, and `map_batches` hands them to a pool of actors (`--ray-workers N`; one GPU each on a CUDA run, else one
CPU each) that each load the Inpainter once. An actor makes an output exactly as the local run does (the same
generate function, settings, seed and PNG metadata, written atomically by run.py's own `_made_or_kept`), and returns
one small status row, printed here as the `PATH<TAB>status` line. Then the local `evaluate()` runs as it always does:
it finds every output present, so it generates nothing, and scores them, computes KID and writes the grids,
metrics.csv, summary.json and the report, the same files as a run without `--ray`.

Resumable and fault tolerant: the outputs present and valid are not sent to the cluster (run.py decides, as on a local
resume); an actor that dies is restarted and its rows are retried, and since each output is written atomically and
an output already made is kept, nothing is lost or made twice. `--ray local` starts a cluster on this machine, `auto`
or `ray://host:10001` joins a running one (SRC and DST must then be the same paths on every node: a shared file
system). On a CPU run each actor uses the driver's torch thread count: a CPU's sums depend on it, and so would the
pixels. Without `--ray` nothing here is imported, nor is Ray.

Left for later (issue 18): per-sample metrics in the actors (they run here at the driver in this step), PIPE read
with `ray.data.read_parquet` (samples are shipped to the actors as in-memory rows), object-store `--dst` (s3://,
gs://), the driver loading the model once itself (to check the methods and record the model family), and a
`--device cuda` run from a driver without a GPU (the device resolves at the driver). Retries are capped
(MAX_RESTARTS per actor); the cap is not tested with an image that kills every worker.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import socket
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from ..errors import InputError, first_line
from .run import Evaluation, OnOutput, _made_or_kept, _read_output

log = logging.getLogger("inpaintkit")
CPU_WORKERS = 2  # the default pool on a CPU run: --ray-workers sets it; a CUDA run uses every GPU of the cluster
MAX_BLOCKS = 4096  # rows per block (what a dead actor's retry redoes) stay few: one row per block up to this many
MAX_RESTARTS = 3  # per actor: a lost node or a killed process, not a poison image
CRASH_ONCE = "INPAINTKIT_TEST_RAY_CRASH_ONCE"  # tests only: a file; the actor that removes it exits at once


@contextlib.contextmanager
def ray_cluster(address: str, quiet: bool = False) -> Iterator[None]:
    """Connected to the Ray cluster at `address` (`local` starts one, shut down at the end) for the with block.

    A session already connected in this process (ray.init called before) is used as it is.
    """
    try:
        import ray
    except ImportError:
        raise InputError("--ray needs Ray, which is not installed: pip install 'inpaintkit[cluster]'.") from None
    if ray.is_initialized():
        yield
        return
    options: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": not quiet}
    try:
        check_reachable(address)
        if address == "local":
            ray.init(address="local", include_dashboard=False, **options)
        else:
            ray.init(address=address, **options)
    except Exception as error:  # nothing listening, a ray:// address without Ray's client, a bad address, ...
        raise InputError(f"Cannot reach the Ray cluster at {address} ({first_line(error)}).") from None
    try:
        yield
    finally:
        ray.shutdown()


def check_reachable(address: str) -> None:
    """A HOST:PORT or ray://HOST:PORT address that nothing listens on: fail now (Ray itself waits minutes for it)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if address in ("local", "auto") or not host or not port.isdigit():
        return
    with socket.create_connection((host.strip("[]"), int(port)), timeout=10):
        pass


def generate_on_ray(
    evaluation: Evaluation, arguments: argparse.Namespace, base: dict[str, Any], device, on_output: OnOutput
) -> tuple[Evaluation, set[Path]]:
    """Make the outputs `evaluation` lacks on the connected cluster; returns the evaluation to score them with (it
    generates nothing: an output the cluster could not make is skipped with the cluster's reason), and the outputs
    already reported through `on_output`.
    """
    import ray
    import torch

    rows = pending(evaluation)
    problems: dict[Path, str] = {}
    reported: set[Path] = set()
    if rows:
        workers, resources = pool(arguments.ray_workers, device)
        actor_arguments = {**vars(arguments), "device": "cuda" if device.type == "cuda" else str(device)}
        ray.data.DataContext.get_current().enable_progress_bars = not arguments.quiet
        if arguments.quiet:
            logging.getLogger("ray.data").setLevel(logging.WARNING)
        dataset = ray.data.from_items(rows, override_num_blocks=min(len(rows), MAX_BLOCKS))
        made = dataset.map_batches(
            OutputMaker,
            batch_size=1,
            fn_constructor_kwargs={
                "evaluation": dataclasses.replace(evaluation, generate=None, learned=None),
                "arguments": actor_arguments,
                "base": base,
                "threads": torch.get_num_threads(),
            },
            compute=ray.data.ActorPoolStrategy(size=workers),  # Ray Data restarts a dead actor and retries its rows
            # ...at most MAX_RESTARTS times each: an image that kills its worker every time ends the run in one
            # sentence (the outputs made are kept) instead of being retried for ever.
            max_restarts=MAX_RESTARTS,
            max_task_retries=MAX_RESTARTS,
            **resources,
        )
        try:
            for row in made.iter_rows():
                path = Path(row["path"])
                if row["problem"]:
                    problems[path] = row["problem"]
                reported.add(path)
                on_output(path, row["status"])
        except (KeyboardInterrupt, InputError):
            raise
        except Exception as error:  # e.g. a lost cluster, an actor that cannot start
            raise InputError(
                f"The Ray run failed ({first_line(error)}); the outputs made so far are kept: run the same command "
                "again to resume."
            ) from None
    return dataclasses.replace(evaluation, generate=not_made(evaluation, problems), overwrite=False), reported


def pending(evaluation: Evaluation) -> list[dict[str, Any]]:
    """The (sample index, method) pairs to make: what a local run would make (present and valid outputs are kept)."""
    rows = []
    for index, sample in enumerate(evaluation.samples):
        if sample.problem:  # evaluate() reports it
            continue
        pixels = None
        for method in evaluation.methods:
            path = evaluation.prediction_path(sample.name, method)
            if not evaluation.overwrite and path.is_file():
                if pixels is None:
                    try:
                        pixels = sample.load()
                    except InputError:  # evaluate() reports it
                        break
                if _read_output(path, pixels, evaluation.fingerprint) is not None:
                    continue
            rows.append({"sample": index, "method": method})
    return rows


def pool(requested: Optional[int], device) -> tuple[int, dict[str, float]]:
    """How many actors, and what each one holds: a GPU on a CUDA run (one actor per GPU by default), else a CPU."""
    import ray

    if device.type != "cuda":
        return requested or CPU_WORKERS, {"num_cpus": 1}
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus < 1:
        raise InputError(f"The Ray cluster has no GPU, but the run is on {device}; use --device cpu.")
    return requested or gpus, {"num_gpus": 1}


def not_made(evaluation: Evaluation, problems: dict[Path, str]) -> Callable:
    """The driver's stand-in generate: an output the cluster did not make is skipped with the cluster's reason."""

    def generate(sample, pixels, method: str):
        path = evaluation.prediction_path(sample.name, method)
        raise InputError(problems.get(path, "it was not made on the Ray cluster"))

    return generate


class OutputMaker:
    """A Ray actor: loads the Inpainter once, then makes and writes the outputs of its rows."""

    def __init__(self, evaluation: Evaluation, arguments: dict[str, Any], base: dict[str, Any], threads: int):
        import torch

        from ..model_arguments import inpainter_from_arguments
        from .commands import generator

        # A CPU's results depend on how many threads share a matrix product: the driver's count, for the same pixels.
        torch.set_num_threads(threads)
        inpainter = inpainter_from_arguments(argparse.Namespace(**arguments))
        self.evaluation = dataclasses.replace(evaluation, generate=generator(inpainter, base))

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        paths, statuses, problems = [], [], []
        for index, method in zip(batch["sample"], batch["method"]):
            crash_once_for_tests()
            sample, method = self.evaluation.samples[int(index)], str(method)
            path = self.evaluation.prediction_path(sample.name, method)
            try:
                _, status = _made_or_kept(self.evaluation, sample, sample.load(), method, path)
                problem = ""
            except InputError as error:  # this output only, as in a local run
                status, problem = "skipped", str(error)
            paths.append(str(path))
            statuses.append(status)
            problems.append(problem)
        return {"path": paths, "status": statuses, "problem": problems}


def crash_once_for_tests() -> None:
    """Tests kill a worker mid-run: the first actor to remove the file named by CRASH_ONCE exits on the spot."""
    flag = os.environ.get(CRASH_ONCE)
    if not flag:
        return
    try:
        os.remove(flag)
    except FileNotFoundError:
        return
    os._exit(1)
