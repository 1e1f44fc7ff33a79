"""The models a service or the web UI may switch to: the checkpoints in --models-dir and the diffusers pipelines in the
local Hugging Face cache, by name. A request names one of these, never a path or hub id of its choosing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .errors import InputError

log = logging.getLogger("inpaintkit")
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")


@dataclass
class ModelCatalog:
    models_dir: Optional[Path] = None
    use_hf_cache: bool = True
    extra: tuple[str, ...] = ()  # names always listed (the model the service started with)
    _hub: Optional[list[str]] = field(default=None, repr=False)

    def names(self) -> list[str]:
        """Every model a client may name: the started one first, then --models-dir's, then the cache's."""
        names = list(self.extra) + self.in_folder() + self.in_hf_cache()
        return list(dict.fromkeys(names))

    def in_folder(self) -> list[str]:
        """Diffusers folders (a model_index.json) and single checkpoint files in --models-dir, by name."""
        if self.models_dir is None or not self.models_dir.is_dir():
            return []
        found = []
        for path in sorted(self.models_dir.iterdir()):
            if path.is_dir() and (path / "model_index.json").is_file():
                found.append(path.name)
            elif path.is_file() and path.suffix.lower() in SINGLE_FILE_SUFFIXES:
                found.append(path.name)
        return found

    def in_hf_cache(self) -> list[str]:
        """Hub ids of diffusers pipelines already downloaded (read once: scanning a big cache takes a moment)."""
        if not self.use_hf_cache:
            return []
        if self._hub is None:
            self._hub = []
            try:
                from huggingface_hub import scan_cache_dir

                for repo in scan_cache_dir().repos:
                    if repo.repo_type == "model" and any(
                        file.file_name == "model_index.json" for revision in repo.revisions for file in revision.files
                    ):
                        self._hub.append(repo.repo_id)
            except Exception as error:  # no cache yet, or an unreadable one: nothing to list
                log.debug("Hugging Face cache not listed: %s", error)
            self._hub.sort()
        return self._hub

    def resolve(self, name: str) -> str:
        """What to load for a listed name (a path in --models-dir, or the hub id); one sentence for any other."""
        if name in self.extra:
            return name
        if self.models_dir is not None and name in self.in_folder():
            return str(self.models_dir / name)
        if name in self.in_hf_cache():
            return name
        listed = ", ".join(self.names()) or "none"
        raise InputError(f"Model {name!r} is not one this service can load ({listed}).")
