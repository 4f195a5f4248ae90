"""Explanation cost on one CPU core: what ``explain`` (and ``predict --review --explain``) adds per image.

For each model kind (System A, System B, the ResNet18 and Spanhol 2016 baselines) at its CPU config's size (untrained weights: the cost does not depend on them),
on ``--images`` images of the real BACH copies (1024x768 JPEG) when ``../shared/data/bach`` is
present, else on synthetic BACH-size images: the pipeline's own prediction, the maps (Grad-CAM:
one forward and one backward pass per network input), and writing the figure and ``.npy`` maps.

    python -m benchmarks.bench_explain [--images 4] [--no-write]

Writes the ``explain`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import os

# One core, set before numpy / OpenCV / torch start their thread pools.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from benchmarks.common import benchmark_parser, machine_info, today, write_section  # noqa: E402
from histobreast.data.readers import read_dataset  # noqa: E402
from histobreast.data.synthetic import synth_bach  # noqa: E402
from histobreast.explain import explain, write_explanations  # noqa: E402
from histobreast.models import create_model  # noqa: E402
from histobreast.models.googlenet_sep import GoogLeNetSEP  # noqa: E402
from histobreast.models.hybrid import HybridCNN  # noqa: E402
from histobreast.pipelines import get_pipeline, liu2022, spanhol2016, zhu2019  # noqa: E402
from histobreast.pipelines.bagging import is_ensemble_folder, save_ensemble_folder  # noqa: E402
from histobreast.pipelines.config import load_config  # noqa: E402
from histobreast.pipelines.network import build_network  # noqa: E402
from histobreast.pipelines.package import load_model_folder, save_model_folder  # noqa: E402

REAL_BACH = Path(__file__).resolve().parents[2] / "shared" / "data" / "bach"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BACH_MPP = 0.84  # the real copies' scale


def model_folders(out: Path) -> dict[str, Path]:
    """An untrained model folder per kind, at the size of its CPU config."""
    folders = {}
    cfg = load_config(CONFIGS / "zhu2019" / "bach_binary_cpu.yaml")
    branch, hybrid = zhu2019.split_kwargs(cfg)
    model = HybridCNN(GoogLeNetSEP(2, **branch), GoogLeNetSEP(2, **branch), **hybrid)
    folders["System A hybrid (GoogLeNet-SEP x 2, 112 px, 5x3 patches)"] = save_model_folder(
        out / "a",
        model,
        cfg,
        ["non-carcinoma", "carcinoma"],
        model_name=zhu2019.HYBRID_NAME,
        microns_per_pixel=BACH_MPP,
    )
    cfg = load_config(CONFIGS / "liu2022" / "bach4_joint_jitter_cpu.yaml")
    classes = ["Normal", "Benign", "InSitu", "Invasive"]
    folders["System B (3 x ResNet18, 112 px crops, 6 views)"] = save_model_folder(
        out / "b",
        liu2022.build_model(cfg, classes),
        cfg,
        classes,
        model_kwargs=liu2022.model_kwargs(cfg, classes),
        microns_per_pixel=BACH_MPP,
    )
    cfg = load_config(CONFIGS / "baselines" / "resnet18_bach_binary_cpu.yaml")
    folders["ResNet18 baseline (whole image at 3.36 µm/px)"] = save_model_folder(
        out / "r", build_network(cfg, 2), cfg, ["non-carcinoma", "carcinoma"], microns_per_pixel=BACH_MPP
    )
    cfg = load_config(CONFIGS / "baselines" / "spanhol2016_bach_binary_cpu.yaml")
    members = []
    for name, size, extraction in cfg.spanhol.members():
        kwargs = {"num_classes": 2, "patch_size": size}
        settings = {"name": name, "patch_size": size, "extraction": extraction, **asdict(cfg.spanhol)}
        members.append(
            save_model_folder(
                out / "s" / name,
                create_model(spanhol2016.MODEL_NAME, **kwargs),
                cfg,
                ["non-carcinoma", "carcinoma"],
                extra={"spanhol": settings},
                model_name=spanhol2016.MODEL_NAME,
                model_kwargs=kwargs,
                microns_per_pixel=BACH_MPP,
            )
        )
    sizes = "/".join(str(size) for size in cfg.spanhol.patch_sizes)
    folders[f"Spanhol 2016 baseline (4 patch CNNs, {sizes} px, image at x{cfg.spanhol.scale:g}, max rule)"] = (
        save_ensemble_folder(out / "s", members, cfg.spanhol.fusion, extra={"pipeline": "spanhol2016"})
    )
    return folders


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--images", type=int, default=4, help="images per model kind")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if REAL_BACH.is_dir():
            records = read_dataset(REAL_BACH)[:: max(1, 268 // args.images)][: args.images]
            source = f"real BACH copies ({REAL_BACH.name}, 1024x768 JPEG, {BACH_MPP} µm/px)"
        else:
            records = synth_bach(Path(tmp) / "bach", per_class=-(-args.images // 4), size=(1024, 768))[: args.images]
            source = "synthetic BACH-size images (1024x768)"
        for kind, folder in model_folders(Path(tmp) / "models").items():
            ensemble = is_ensemble_folder(folder)  # the Spanhol baseline: its members are loaded per call
            loaded = folder if ensemble else load_model_folder(folder)
            pipeline = get_pipeline("spanhol2016" if ensemble else loaded.pipeline)
            pipeline.predict_records(loaded, records[:1], device="cpu")  # warm-up
            start = time.perf_counter()
            pipeline.predict_records(loaded, records, device="cpu")
            predict = (time.perf_counter() - start) / len(records)
            start = time.perf_counter()
            found = explain(loaded, records, device="cpu")
            maps = (time.perf_counter() - start) / len(records)
            out = Path(tmp) / "explained" / folder.name
            start = time.perf_counter()
            write_explanations(found, out)
            written = (time.perf_counter() - start) / len(records)
            size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / len(records) / 2**20
            rows.append(
                f"| {kind} | {len(records)} | {1000 * predict:.0f} | {1000 * maps:.0f} | {1000 * written:.0f} | "
                f"{maps / predict:.1f}x | {size:.1f} |"
            )
    section = "\n".join(
        [
            "## Explanations (`explain`, `predict --review --explain`)",
            "",
            f"`python -m benchmarks.bench_explain --images {args.images}` on {today()}; machine: {machine_info()}.",
            f"Images: {source}. Grad-CAM, one core, untrained weights at each CPU config's size. "
            "predict: the pipeline's own prediction; maps: `explain()` (its own forward and backward passes); "
            "write: the figure and the raw `.npy` maps.",
            "",
            "| model | images | predict ms/image | maps ms/image | write ms/image | maps / predict | MiB written per image |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
            *rows,
        ]
    )
    print(section)
    if not args.no_write:
        write_section("explain", section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
