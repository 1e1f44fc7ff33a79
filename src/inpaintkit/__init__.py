"""inpaintkit: text-guided image inpainting with latent diffusion models."""

__version__ = "0.1.0"

from .errors import Cancelled, InputError  # noqa: E402
from .inpainter import Inpainter  # noqa: E402
from .settings import InpaintSettings  # noqa: E402

__all__ = ["Cancelled", "Inpainter", "InpaintSettings", "InputError", "__version__"]
