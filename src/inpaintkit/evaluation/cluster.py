"""`inpaintkit bench --ray ADDRESS`: the outputs, and their per-sample metrics, are made on a Ray cluster.

With `--ray`, bench first makes every output that is missing (or unusable, or made by another run, or every output with
`--overwrite`) on the cluster: the samples with outputs to make become the rows of a Ray Dataset (in-memory rows for a
folder or a listing; PIPE read with `ray.data.read_parquet` on its parquet files, ray_pipe.py), and `map_batches`
hands them to a pool of actors (`--ray-workers N`; one GPU each on a CUDA run, else one CPU each) that each load the
Inpainter once, and CLIP too with `--metric`. An actor makes each of a sample's missing outputs exactly as the local
run does (the same generate function, settings, seed and PNG metadata, written atomically by run.py's own
`_made_or_kept`), scores it with the same per-sample metrics (run.py's `measure_output`), and returns one small row:
the `PATH<TAB>status` line printed here, and the output's metrics.csv row. The driver gathers those rows into
metrics.csv (saved every SAVE_EVERY_S seconds and at the end). Then the local `evaluate()` runs as it always does:
every output and metrics row is present, so it generates and scores nothing (only what the cluster could not do, e.g.
outputs of an earlier run), and computes KID over all the samples' crops, the grids, summary.json and the report:
the same files as a run without `--ray`.

Resumable and fault tolerant: the outputs present and valid are not sent to the cluster (run.py decides, as on a local
resume); an actor that dies is restarted and its rows are retried, and since each output is written atomically and
an output already made is kept, nothing is lost or made twice. A sample that kills every worker given it ends the run
after MAX_RESTARTS retries, in one sentence that names it (an AttemptLedger actor counts the tries). `--ray local`
starts a cluster on this machine, `auto` or `ray://host:10001` joins a running one (SRC, and a DST folder, must then be
the same paths on every node: a shared file system; an object-store DST needs none, store.py). On a CPU run each actor
uses the driver's torch thread count: a CPU's sums depend on it, and so would the pixels and the metrics. Without
`--ray` nothing here is imported, nor is Ray.

Left for later (issue 18): the driver loading the model once itself (to check the methods and record the model family),
a `--device cuda` run from a driver without a GPU (the device resolves at the driver), and the driver reading every
output back for the grids and KID (one machine's I/O, however large the cluster).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import socket
import tempfile
import time
import warnings
import weakref
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from ..errors import InputError, first_line
from .learned_metrics import ClipScorer, LearnedMetrics, load_clip
from .pipe import parse_pipe_source
from .ray_pipe import pipe_sample
from .run import Evaluation, OnOutput, _made_or_kept, _read_output, measure_output, wanted_metrics
from .samples import Pixels, Sample
from .scoring import MetricsTable, content_digest
from .store import Destination

log = logging.getLogger("inpaintkit")
CPU_WORKERS = 2  # the default pool on a CPU run: --ray-workers sets it; a CUDA run uses every GPU of the cluster
MAX_BLOCKS = 4096  # rows per block (what a dead actor's retry redoes) stay few: one row per block up to this many
MAX_RESTARTS = 3  # per actor: a lost node or a killed process, not a poison image
SAVE_EVERY_S = 30.0  # the gathered metrics rows reach metrics.csv at least this often: an interruption keeps them
CRASH_ONCE = "INPAINTKIT_TEST_RAY_CRASH_ONCE"  # tests only: a file; the actor that removes it exits at once
CRASH_ON = "INPAINTKIT_TEST_RAY_CRASH_ON"  # tests only: a file naming a sample; an actor given it exits while it exists


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
    # --quiet: Ray's driver-side warnings (e.g. its token authentication notice) and its workers' lines stay out too.
    options: dict[str, Any] = {"logging_level": logging.ERROR if quiet else logging.WARNING, "log_to_driver": not quiet}
    if quiet:  # the core worker's own (C++) log lines, read when it starts: Ray has no ray.init argument for them
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
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
    evaluation: Evaluation,
    arguments: argparse.Namespace,
    base: dict[str, Any],
    device,
    on_output: OnOutput,
    destination: Optional[Destination] = None,
) -> tuple[Evaluation, set[Path]]:
    """Make the outputs `evaluation` lacks on the connected cluster, with their metrics rows (into metrics.csv) when
    it scores; returns the evaluation to finish the run with (it generates nothing: an output the cluster could not
    make is skipped with the cluster's reason), and the outputs already reported through `on_output`.
    """
    import ray
    import torch

    destination = destination or Destination(evaluation.dst)
    work = pending(evaluation)
    gathered = Gathered(evaluation, destination)
    if work:
        workers, resources = pool(arguments.ray_workers, device)
        configure_ray_data(arguments.quiet)
        pipe_split = parse_pipe_source(arguments.src)
        ledger = ray.remote(num_cpus=0)(AttemptLedger).remote()
        with warnings.catch_warnings():  # Ray 2.60 has no named parameter for max_restarts and max_task_retries
            warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
            made = rows_to_make(evaluation, work, arguments, pipe_split).map_batches(
                OutputMaker,
                batch_size=1,
                fn_constructor_kwargs={
                    "evaluation": dataclasses.replace(
                        evaluation, samples=[] if pipe_split else evaluation.samples, generate=None, learned=None
                    ),
                    "arguments": {**vars(arguments), "device": "cuda" if device.type == "cuda" else str(device)},
                    "base": base,
                    "threads": torch.get_num_threads(),
                    "scoring": scoring(evaluation, arguments),
                    "destination": destination,
                    "ledger": ledger,
                },
                compute=ray.data.ActorPoolStrategy(size=workers),  # Ray Data restarts a dead actor, retries its rows
                # ...at most MAX_RESTARTS times each: an image that kills its worker every time ends the run in one
                # sentence naming it (the outputs made are kept) instead of being retried for ever.
                max_restarts=MAX_RESTARTS,
                max_task_retries=MAX_RESTARTS,
                **resources,
            )
        try:
            for row in made.iter_rows():
                on_output(gathered.add(row), row["status"])
        except (KeyboardInterrupt, InputError):
            raise
        except Exception as error:  # a sample that kills every worker, a lost cluster, an actor that cannot start
            raise InputError(failure(error, ledger)) from None
        finally:
            gathered.save()  # the metrics rows gathered so far are kept, as a local run keeps them
    generate = not_made(evaluation, gathered.problems)
    return dataclasses.replace(evaluation, generate=generate, overwrite=False), gathered.reported


def configure_ray_data(quiet: bool) -> None:
    """Ray Data's progress bars unless --quiet; its sort shuffle for PIPE's join (tasks: no actors to start for it)."""
    import ray

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = not quiet
    context.shuffle_strategy = ray.data.context.ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    # Ray Data logs a failed run's traceback, and its plan and a "Progress bars disabled" notice as it starts: the
    # progress bars say what runs, and a failure ends the run in our one sentence.
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)


def rows_to_make(evaluation: Evaluation, work: list[tuple[int, list[str]]], arguments, pipe_split: Optional[str]):
    """One row per sample with outputs to make: PIPE's read from its parquet files on the cluster, the others' as
    in-memory rows (the sample's index; the actors hold the sample list).
    """
    import ray

    if pipe_split is not None:
        from .ray_pipe import pipe_rows

        wanted = {evaluation.samples[index].name: ",".join(methods) for index, methods in work}
        return pipe_rows(pipe_split, arguments.pipe_images, arguments.pipe_masks, wanted, MAX_BLOCKS)
    rows = [{"sample": index, "methods": ",".join(methods)} for index, methods in work]
    return ray.data.from_items(rows, override_num_blocks=min(len(rows), MAX_BLOCKS))


def pending(evaluation: Evaluation) -> list[tuple[int, list[str]]]:
    """Per sample (by index), the methods whose output to make: what a local run would make (present and valid
    outputs are kept).
    """
    work = []
    for index, sample in enumerate(evaluation.samples):
        if sample.problem:  # evaluate() reports it
            continue
        pixels = None
        methods = []
        for method in evaluation.methods:
            path = evaluation.prediction_path(sample.name, method)
            if not evaluation.overwrite and path.is_file():
                if pixels is None:
                    try:
                        pixels = sample.load()
                    except InputError:  # evaluate() reports it
                        methods = []
                        break
                if _read_output(path, pixels, evaluation.fingerprint) is not None:
                    continue
            methods.append(method)
        if methods:
            work.append((index, methods))
    return work


def scoring(evaluation: Evaluation, arguments: argparse.Namespace) -> Optional[dict[str, Any]]:
    """What the actors score with: None without --metric; the CLIP model if the driver could load it (else the
    actors leave CLIP's cells out too)."""
    if evaluation.learned is None:
        return None
    return {"clip_model": arguments.clip_model if evaluation.learned.clip is not None else None}


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


class Gathered:
    """The actors' rows at the driver: the outputs reported, the problems, and the metrics rows (into metrics.csv)."""

    def __init__(self, evaluation: Evaluation, destination: Destination):
        self.destination = destination
        self.table = MetricsTable(evaluation.dst / "metrics.csv") if evaluation.learned is not None else None
        self.problems: dict[Path, str] = {}
        self.reported: set[Path] = set()
        self.saved = time.monotonic()

    def add(self, row: dict[str, Any]) -> Path:
        path = Path(row["path"])
        self.reported.add(path)
        if row["problem"]:
            self.problems[path] = row["problem"]
        elif not self.destination.fetch(path):  # from the object store; on a file system, a node's private disk
            self.problems[path] = f"it was made on the Ray cluster but is not at {self.destination.shown(path)}"
        if self.table is not None and row["digest"]:
            self.table.keep_if_current(row["sample"], row["method"], row["digest"])
            self.table.update(row["sample"], row["method"], json.loads(row["metrics"]), row["digest"])
            if time.monotonic() - self.saved > SAVE_EVERY_S:
                self.save()
        return path

    def save(self) -> None:
        if self.table is not None:
            self.table.save()
            self.destination.commit(self.table.path)
            self.saved = time.monotonic()


class AttemptLedger:
    """A Ray actor: how often each sample was started and whether it finished, to name one that kills its workers."""

    def __init__(self):
        self.started: dict[str, int] = {}
        self.finished: set[str] = set()

    def start(self, name: str) -> None:
        self.started[name] = self.started.get(name, 0) + 1

    def finish(self, name: str) -> None:
        self.finished.add(name)

    def most_retried(self) -> Optional[tuple[str, int]]:
        """The unfinished sample started most often, if it was started more than once."""
        unfinished = [(count, name) for name, count in self.started.items() if name not in self.finished]
        count, name = max(unfinished, default=(0, ""))
        return (name, count) if count > 1 else None


def failure(error: Exception, ledger) -> str:
    """The one sentence a failed Ray run ends with: the sample that killed every worker given it, if there is one."""
    import ray

    try:
        culprit = ray.get(ledger.most_retried.remote(), timeout=10)
    except Exception:  # the cluster itself is gone
        culprit = None
    if culprit is not None:
        name, times = culprit
        return (
            f"The sample {name} stopped its Ray worker each of the {times} times it was tried (a dead worker is "
            f"restarted at most {MAX_RESTARTS} times), so the run ends; the outputs made so far are kept: fix or "
            "remove that sample and run the same command again to resume."
        )
    return (
        f"The Ray run failed ({first_line(error)}); the outputs made so far are kept: run the same command again to "
        "resume."
    )


OUTPUT_COLUMNS = ("path", "status", "problem", "sample", "method", "digest", "metrics")


class OutputMaker:
    """A Ray actor: loads the Inpainter (and CLIP, when it scores) once, then makes, scores and writes the outputs of
    its rows, one sample with every method it lacks per row.
    """

    def __init__(
        self,
        evaluation: Evaluation,
        arguments: dict[str, Any],
        base: dict[str, Any],
        threads: int,
        scoring: Optional[dict[str, Any]],
        destination: Destination,
        ledger,
    ):
        import torch

        from ..model_arguments import inpainter_from_arguments
        from .commands import generator

        # A CPU's results depend on how many threads share a matrix product: the driver's count, for the same pixels.
        torch.set_num_threads(threads)
        inpainter = inpainter_from_arguments(argparse.Namespace(**arguments))
        self.evaluation = dataclasses.replace(evaluation, generate=generator(inpainter, base))
        self.destination = destination
        # Outputs are written where the driver reads them (a shared file system), or here and then to the store.
        self.folder = destination.folder if destination.store is None else Path(tempfile.mkdtemp(prefix="inpaintkit-"))
        if destination.store is not None:  # the actor's own staging: removed when the actor goes (a kill may skip it)
            weakref.finalize(self, shutil.rmtree, str(self.folder), True)
        self.learned = None if scoring is None else actor_metrics(scoring["clip_model"], inpainter.components.device)
        self.ledger = ledger

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        import ray

        made: dict[str, list[str]] = {column: [] for column in OUTPUT_COLUMNS}
        for row in batch_rows(batch):
            sample = pipe_sample(row) if "name" in row else self.evaluation.samples[int(row["sample"])]
            ray.get(self.ledger.start.remote(sample.name))  # recorded before the sample can take the process down
            crash_for_tests(sample.name)
            for output in self.outputs(sample, str(row["methods"]).split(",")):
                for column in OUTPUT_COLUMNS:
                    made[column].append(output.get(column, ""))
            self.ledger.finish.remote(sample.name)
        return made

    def outputs(self, sample: Sample, methods: list[str]) -> Iterator[dict[str, str]]:
        try:
            pixels = sample.load()
        except InputError as error:  # this sample only, as in a local run
            for method in methods:
                yield self.row(sample, method, "skipped", str(error))
            return
        for method in methods:
            yield self.output(sample, pixels, method)

    def output(self, sample: Sample, pixels: Pixels, method: str) -> dict[str, str]:
        """One output made (or found), scored and put where the driver reads it; the row the driver gets for it."""
        relative = self.destination.relative(self.path(sample, method))
        local = self.folder / relative
        try:
            local.parent.mkdir(parents=True, exist_ok=True)
            output, status = _made_or_kept(self.evaluation, sample, pixels, method, local)
            row = self.row(sample, method, status, "")
            if self.learned is not None:  # while the output is at hand: the driver only gathers the rows
                wanted = wanted_metrics(self.learned)
                values = measure_output(output, pixels, sample.prompt, local, wanted, self.learned)
                row.update(digest=content_digest(pixels, sample.prompt, output), metrics=json.dumps(values))
            if self.destination.store is not None:
                self.destination.store.commit(local, relative)
                local.unlink()
        except InputError as error:  # this output only, as in a local run
            return self.row(sample, method, "skipped", str(error))
        return row

    def path(self, sample: Sample, method: str) -> Path:
        return self.evaluation.prediction_path(sample.name, method)

    def row(self, sample: Sample, method: str, status: str, problem: str) -> dict[str, str]:
        return {
            "path": str(self.path(sample, method)),
            "status": status,
            "problem": problem,
            "sample": sample.name,
            "method": method,
        }


def actor_metrics(clip_model: Optional[str], device) -> LearnedMetrics:
    """An actor's per-sample scorer: CLIP if the driver has it (KID is the driver's, over every sample's crops)."""
    learned = LearnedMetrics(device=device)
    if clip_model is not None:
        try:
            learned.clip = ClipScorer(*load_clip(clip_model), device=device)
        except Exception as error:  # e.g. not cached on this node: the driver computes these cells instead
            log.warning("CLIP could not be loaded on a Ray worker (%s); the driver scores it.", first_line(error))
    return learned


def batch_rows(batch: dict[str, Any]) -> Iterator[dict[str, Any]]:
    columns = list(batch)
    for values in zip(*(batch[column] for column in columns)):
        yield dict(zip(columns, values))


def crash_for_tests(sample: str) -> None:
    """Tests kill workers: the first actor to remove the file named by CRASH_ONCE exits on the spot, and every actor
    given the sample named in the file CRASH_ON names (while it exists) does.
    """
    flag = os.environ.get(CRASH_ONCE)
    if flag:
        try:
            os.remove(flag)
            os._exit(1)
        except FileNotFoundError:
            pass
    poison = os.environ.get(CRASH_ON)
    if poison:
        try:
            if Path(poison).read_text().strip() == sample:
                os._exit(1)
        except FileNotFoundError:
            pass
