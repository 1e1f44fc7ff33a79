"""The evaluation harness: run methods over a dataset (`bench`), score outputs (`metrics`), and report.

samples.py / pipe.py   where samples come from (a folder, a listing, the PIPE dataset)
run.py                 the loop: generate or find outputs, score them, grids, KID, report
pixel_metrics.py       background MSE/PSNR/SSIM, MSE/PSNR in the mask against a ground truth
learned_metrics.py     CLIP score and KID (torchmetrics), unavailable with a reason when offline
inception.py           KID's default features: the FID Inception-v3, ported from torch-fidelity (torch only)
scoring.py             metrics.csv rows (resumable) and their per-method summary
report.py / grid.py    summary.json, report.md, charts, comparison grids
measure.py             seconds and peak memory per image
commands.py            the `bench` and `metrics` command lines
cluster.py             bench --ray: outputs and their per-sample metrics made by Ray actors
ray_pipe.py            PIPE for --ray: ray.data.read_parquet on the parquet files datasets reads, joined
store.py               an object-store --dst (s3://, gs://, ...): staged locally, committed atomically
"""
