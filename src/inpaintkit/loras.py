"""LoRAs on a loaded model: each source loaded once (a small cache), switched on with its weight for one job, and
switched off after it, whether the job succeeds, fails or is cancelled, so the next job gets the base model's exact
pixels (the web UI and the service share one model).

Through diffusers' LoRA loaders (peft) on the family's own pipeline class, built over the loaded modules (no copy):
diffusers' and Kohya/A1111 key layouts alike, for the UNet and the text encoders.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional

from .errors import InputError, first_line
from .lora_specs import LoraSpec, looks_local
from .quiet import errors_muted, quiet_libraries

if TYPE_CHECKING:
    from .models import Components

log = logging.getLogger("inpaintkit")
LORA_SUFFIXES = (".safetensors",)  # what --loras-dir lists; pickled .bin/.pt files are never loaded from a request


@dataclass(frozen=True)
class LoadedLora:
    adapter: str  # peft's adapter name in the model
    digest: Optional[str]  # the first 12 hex digits of the file's SHA-256 (as A1111 shortens); None: a hub id, a folder


class LoraAdapters:
    """The LoRAs loaded into one model, by source. `root`: when set (the service, the web UI), a source must be the
    name of a .safetensors file in that folder; otherwise a file, a folder or a hub id."""

    def __init__(self, components: Components, root: Optional[Path] = None):
        self.components = components
        self.root = root
        self.served = False  # set by the service and the web UI: without a root they take no LoRA at all
        self.fused: tuple[LoraSpec, ...] = ()  # merged into the weights for good (--fuse-lora)
        self.fused_digests: list[tuple[LoraSpec, Optional[str]]] = []
        self._loaded: dict[str, LoadedLora] = {}
        self._pipeline = None

    @property
    def loaded(self) -> bool:
        return bool(self._loaded)

    def available(self) -> list[str]:
        """The LoRA names a request may use (the files in `root`), sorted."""
        if self.root is None or not self.root.is_dir():
            return []
        return sorted(
            path.name for path in self.root.iterdir() if path.suffix.lower() in LORA_SUFFIXES and path.is_file()
        )

    def resolve(self, source: str) -> str:
        """Where a source is loaded from; with a root, only a file name in it (one sentence otherwise)."""
        if self.root is None and self.served:
            raise InputError(f"LoRA {source}: this service takes no LoRAs (start it with --loras-dir DIR).")
        if self.root is None:
            return source
        candidates = [source] if source.lower().endswith(LORA_SUFFIXES) else [source, source + ".safetensors"]
        for name in candidates:
            path = self.root / name
            if "/" not in name and "\\" not in name and name not in (".", "..") and path.is_file():
                return str(path)
        known = ", ".join(self.available()) or "none"
        raise InputError(f"LoRA {source!r} is not one of this service's LoRAs ({known}).")

    def check(self, specs: tuple[LoraSpec, ...]) -> None:
        """Cheap checks before any work: the sources exist (a local path that is not there is not a hub id either),
        and no file is named twice under two names (it would be applied twice)."""
        family = self.components.family
        if specs and family.denoiser != "unet":  # not yet: their loaders and key layouts are not wired or tested here
            raise InputError(
                f"LoRAs run on SD and SDXL models; this {family.name} model's transformer takes none yet (drop --lora)."
            )
        if self.fused and specs not in ((), self.fused):
            raise InputError(
                f"This model's LoRAs are fused into its weights ({', '.join(map(str, self.fused))}); other LoRAs "
                "need a model loaded without --fuse-lora."
            )
        seen: dict[str, str] = {}
        for spec in specs:
            source = self.resolve(spec.source)
            if looks_local(source) and not Path(source).expanduser().exists():
                raise InputError(f"LoRA {spec.source}: no such file or folder.")
            identity = str(Path(source).expanduser().resolve()) if Path(source).expanduser().exists() else source
            if identity in seen:
                raise InputError(
                    f"LoRA {spec.source} is the same file as {seen[identity]}; give it once with the weight you want."
                )
            seen[identity] = spec.source

    def load(self, source: str) -> LoadedLora:
        """Load a source once; later jobs reuse it. One sentence when it does not fit this model."""
        if source in self._loaded:
            return self._loaded[source]
        location = self.resolve(source)
        adapter = f"lora_{len(self._loaded)}"
        pipeline = self.pipeline()
        try:
            with quiet_libraries(), errors_muted():
                pipeline.load_lora_weights(str(Path(location).expanduser()) if Path(location).exists() else location,
                                           adapter_name=adapter)  # fmt: skip
        except Exception as error:  # diffusers and peft raise ValueError, RuntimeError, KeyError, OSError...
            with errors_muted():
                self._forget(adapter)
            reason = telling_line(error)[:300]
            if self.root is not None:  # a client of the service does not need the server's folders
                reason = reason.replace(str(self.root) + "/", "").replace(str(self.root), "")
            raise InputError(
                f"LoRA {source} could not be loaded into this {self.components.family.name} model ({reason}); is it "
                "a LoRA for this architecture?"
            ) from None
        if adapter not in self._adapters_in_model():
            raise InputError(f"LoRA {source} holds no weights for this {self.components.family.name} model's layers.")
        digest = file_digest(Path(location).expanduser())
        self._loaded[source] = LoadedLora(adapter, digest)
        log.info("Loaded LoRA %s (adapter %s).", source, adapter)
        return self._loaded[source]

    @contextlib.contextmanager
    def active(self, specs: tuple[LoraSpec, ...]) -> Iterator[list[dict]]:
        """These LoRAs on, with their weights, for the block; every LoRA off after it. Yields what the outputs
        record (source, weight, digest)."""
        if self.fused and specs in ((), self.fused):  # merged into the weights: every job runs with them
            yield [{"source": s.source, "weight": s.weight, "sha256": d, "fused": True} for s, d in self.fused_digests]
            return
        self.check(specs)
        if not specs and not self._loaded:
            yield []  # nothing was ever loaded: the model has no LoRA layers to switch
            return
        loaded = [self.load(spec.source) for spec in specs]
        pipeline = self.pipeline()
        try:
            if specs:
                pipeline.enable_lora()
                pipeline.set_adapters([each.adapter for each in loaded], adapter_weights=[s.weight for s in specs])
            else:
                pipeline.disable_lora()
            yield [
                {"source": spec.source, "weight": spec.weight, "sha256": each.digest}
                for spec, each in zip(specs, loaded)
            ]
        finally:
            pipeline.disable_lora()

    def fuse(self, specs: tuple[LoraSpec, ...]) -> None:
        """Merge these LoRAs into the weights (faster calls; the model then runs with them only)."""
        if not specs:
            return
        self.check(specs)
        loaded = [self.load(spec.source) for spec in specs]
        pipeline = self.pipeline()
        pipeline.set_adapters([each.adapter for each in loaded], adapter_weights=[s.weight for s in specs])
        pipeline.fuse_lora(adapter_names=[each.adapter for each in loaded])
        pipeline.unload_lora_weights()
        self.fused_digests = [(spec, each.digest) for spec, each in zip(specs, loaded)]
        self._loaded.clear()
        self.fused = specs

    def pipeline(self):
        """The family's diffusers pipeline over the loaded modules: its LoRA loader knows the key layouts."""
        if self._pipeline is None:
            import diffusers

            components = self.components
            pipeline_class = getattr(diffusers, components.family.pipeline)
            modules = {"vae": components.vae, "unet": components.unet, "scheduler": None}
            for name in (*components.family.text_encoders, *components.family.tokenizers):
                modules[name] = getattr(components, name)
            extras = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
            accepted = pipeline_class.__init__.__code__.co_varnames
            modules.update({key: value for key, value in extras.items() if key in accepted})
            with quiet_libraries():
                self._pipeline = pipeline_class(**modules)
        return self._pipeline

    def _adapters_in_model(self) -> set[str]:
        names: set[str] = set()
        for module in (self.components.unet, *self.components.text_modules().values()):
            names.update(getattr(module, "peft_config", {}) or {})
        return names

    def _forget(self, adapter: str) -> None:
        """Undo a load that failed half-way (best effort: it may have added nothing)."""
        if adapter in self._adapters_in_model():
            with contextlib.suppress(Exception):
                self.pipeline().delete_adapters(adapter)


def telling_line(error: BaseException) -> str:
    """The line of a loading error that says what did not fit (torch's "size mismatch for ..."), else its first."""
    for line in str(error).splitlines():
        if "size mismatch" in line:
            return line.strip().rstrip(".")
    return first_line(error)


def file_digest(path: Path) -> Optional[str]:
    """The first 12 hex digits of the SHA-256 of a LoRA file, or of a folder's one .safetensors file (diffusers'
    layout); None for a hub id or a folder of several files. Read in chunks: LoRAs reach hundreds of MB."""
    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
        path = files[0] if len(files) == 1 else path
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]
