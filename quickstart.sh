#!/usr/bin/env bash
# Set up .venv from this checkout and run one inpainting job end to end.
#   ./quickstart.sh     offline: a tiny UNTRAINED model, 8 steps on the mask's window at the model's 64 px (seconds;
#                       the output is noise, every stage of the pipeline is the real one)
#   MODEL=stable-diffusion-v1-5/stable-diffusion-inpainting ./quickstart.sh   a real checkpoint (downloads once),
#                       run with the default settings (50 steps on the whole image)
set -euo pipefail
cd "$(dirname "$0")"

python3 -m venv .venv
.venv/bin/pip install -q torch==2.13.0      # before the project, so no other torch build is pulled in
.venv/bin/pip install -q -e '.[test]' # this checkout, editable, with every extra and the test tools

mkdir -p demo
.venv/bin/python - <<'PY'
import numpy as np
from PIL import Image, ImageDraw

y, x = np.mgrid[0:384, 0:512]
sky = np.stack([90 + x * 0.2, 140 + y * 0.15, 220 - y * 0.2], axis=2).clip(0, 255).astype(np.uint8)
photo = Image.fromarray(sky)
ImageDraw.Draw(photo).rectangle([0, 300, 511, 383], fill=(70, 120, 60))  # a lawn
photo.save("demo/photo.png")
mask = Image.new("L", photo.size, 0)
ImageDraw.Draw(mask).ellipse([180, 170, 340, 330], fill=255)  # repaint this region
mask.save("demo/mask.png")
PY

SETTINGS=()  # a real model: the default settings
if [ -z "${MODEL:-}" ]; then
    MODEL=demo/tiny-model
    [ -d "$MODEL" ] || .venv/bin/inpaintkit make-tiny-model "$MODEL"
    # Untrained: 8 steps on the mask's window plus 32 px, painted at the model's native 64 px and pasted back, run
    # every stage in seconds (50 steps on the whole 512x384 picture took minutes to paint the same noise).
    SETTINGS=(--steps 8 --crop-padding 32)
fi
.venv/bin/inpaintkit run --model "$MODEL" --image demo/photo.png --mask demo/mask.png \
    --prompt "a red bicycle" --mask-blur 8 --seed 42 --output demo/out.png --overwrite ${SETTINGS[@]+"${SETTINGS[@]}"}
