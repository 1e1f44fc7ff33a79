#!/usr/bin/env bash
# Set up .venv and run one inpainting job end to end.
#   ./quickstart.sh                      offline: a tiny UNTRAINED model (the output is noise, the pipeline is real)
#   MODEL=stable-diffusion-v1-5/stable-diffusion-inpainting ./quickstart.sh   a real checkpoint (downloads once)
set -euo pipefail
cd "$(dirname "$0")"

python3 -m venv .venv
.venv/bin/pip install -q torch==2.13.0      # before the project, so no other torch build is pulled in
.venv/bin/pip install -q -e '.[test]'

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

if [ -z "${MODEL:-}" ]; then
    MODEL=demo/tiny-model
    [ -d "$MODEL" ] || .venv/bin/inpaintkit make-tiny-model "$MODEL"
fi
.venv/bin/inpaintkit run --model "$MODEL" --image demo/photo.png --mask demo/mask.png \
    --prompt "a red bicycle" --mask-blur 8 --seed 42 --output demo/out.png --overwrite
