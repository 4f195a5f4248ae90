"""``histobreast compare``: is one experiment's accuracy really different from another's?"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from histobreast.cli.options import seed_option


def compare(
    run_a: Path = typer.Argument(..., help="Experiment folder of `histobreast train` (method A)."),
    run_b: Path = typer.Argument(..., help="Experiment folder on the same images (method B, e.g. a baseline)."),
    method: Optional[str] = typer.Option(None, "--method", help="Evaluation method of A (default: its headline)."),
    method_b: Optional[str] = typer.Option(None, "--method-b", help="Evaluation method of B (default: its headline)."),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=1, help="Bootstrap resamples of the patients."),
    seed: int = seed_option("Seed of the bootstrap."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the result as JSON here."),
) -> None:
    """Paired comparison of two experiments' image-level accuracy on the test images of their shared folds.

    Prints both accuracies, their difference with a 95% interval (patients resampled, both runs
    together), the images only one of them gets right and McNemar's exact p-value.

    Example: histobreast compare runs/sysb_joint_jitter runs/resnet18_bach4_cpu --out runs/compare.json
    """
    from rich.console import Console

    from histobreast.atomic import atomic_write_json
    from histobreast.errors import DatasetError
    from histobreast.metrics import paired_accuracy_difference
    from histobreast.pipelines.fold_predictions import pooled_test_predictions, read_fold_predictions

    saved_a, saved_b = read_fold_predictions(run_a), read_fold_predictions(run_b)
    folds = sorted(set(saved_a) & set(saved_b))
    if not folds:
        raise DatasetError(f"{run_a} and {run_b} share no fold with saved predictions")
    result = paired_accuracy_difference(
        pooled_test_predictions(saved_a, method, folds, run_a),
        pooled_test_predictions(saved_b, method_b, folds, run_b),
        n_boot=bootstrap,
        seed=seed,
    )
    result.update(run_a=str(run_a), run_b=str(run_b), folds=folds)
    console = Console(soft_wrap=True, highlight=False)
    console.print(f"{result['n_images']} test images of {result['n_patients']} patients, folds {folds}")
    console.print(f"A {run_a}: {result['accuracy_a']:.3f}    B {run_b}: {result['accuracy_b']:.3f}")
    console.print(
        f"A - B = {result['estimate']:+.3f}, {100 * result['level']:.0f}% interval "
        f"[{result['low']:+.3f}, {result['high']:+.3f}] (patients resampled {bootstrap} times)"
    )
    console.print(
        f"only A right: {result['only_a_right']} images, only B right: {result['only_b_right']}; "
        f"McNemar exact p = {result['mcnemar_p']:.3g}"
    )
    if out is not None:
        atomic_write_json(out, result)
        console.print(f"written: {out}")


def register(app: typer.Typer) -> None:
    """Add the ``compare`` command."""
    app.command("compare")(compare)
