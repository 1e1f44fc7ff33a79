"""native: a dedicated inpainting checkpoint (9-channel UNet) sees the mask and the masked image itself.

The engine feeds the extra channels for any 9-channel UNet; this method adds nothing on top.
"""

from .base import Method


class Native(Method):
    name = "native"
    requires_inpainting_unet = True
