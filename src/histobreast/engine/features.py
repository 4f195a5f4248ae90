"""Frozen-encoder mode and the SVM discriminator of System B (Liu et al. 2022, Table 4).

Frozen mode runs a PFENet's encoders once over every sample of a
:class:`~histobreast.datasets.key_regions.KeyRegionDataset` (eval mode, no gradients), keeps the pooled
per-scale vectors ``(S, D)`` in an on-disk cache, and then trains only the discriminator on them —
minutes instead of hours on a CPU, which makes quick ablations possible. A cache entry holds one
image's samples and is keyed by the image's content hash, its views and region selection (KREM
parameters, top-k, seed, stain target), the delivered levels, the input transform and a hash of the
encoders' weights, so a change to any of them computes the features again.

:class:`SVMDiscriminator` is Table 4's "PFENet + SVM": scikit-learn's ``SVC`` on the concatenated
pooled vectors.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.calibration import CalibratedClassifierCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from torch import Tensor
from torch.utils.data import Dataset

from histobreast.datasets.key_regions import KeyRegionDataset
from histobreast.errors import ConfigError
from histobreast.models.msmv import MSMVPFENet, SVMHead
from histobreast.preprocess.cache import DiskCache


def encoder_fingerprint(model: MSMVPFENet) -> str:
    """SHA-256 over the encoder name, the scales and every encoder tensor (names, shapes, bytes)."""
    digest = hashlib.sha256(f"{model.encoder_name}|{list(model.scales)}".encode())
    for name, tensor in sorted(model.encoders.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"|{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class FeatureDataset(Dataset):
    """Pooled encoder features of a key-region dataset: ``dataset[i] -> ((S, D) float32, class index)``.

    Rows are in the source dataset's order, so its ``image_slices`` and the evaluation helpers
    (``view_predictions`` / ``image_predictions``) apply unchanged.
    """

    def __init__(self, features: np.ndarray, targets: np.ndarray) -> None:
        if features.ndim != 3 or len(features) != len(targets):
            raise ValueError(
                f"features must be (N, S, D) with one target per row, got {features.shape} and {len(targets)} targets"
            )
        self.features = np.ascontiguousarray(features, dtype=np.float32)
        self.targets = np.asarray(targets, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return torch.from_numpy(self.features[index]), int(self.targets[index])


@torch.no_grad()
def encode_samples(
    model: MSMVPFENet, dataset: KeyRegionDataset, indices: range, batch_size: int, device: torch.device
) -> np.ndarray:
    """Pooled vectors ``(len(indices), S, D)`` float32 of ``dataset[indices]`` (the model's current mode)."""
    out = []
    for start in range(indices.start, indices.stop, batch_size):
        batch = torch.stack([dataset[i][0] for i in range(start, min(start + batch_size, indices.stop))])
        out.append(model.encode(batch.to(device)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(model.scales), model.feature_dim), dtype=np.float32)


def extract_features(
    model: MSMVPFENet,
    dataset: KeyRegionDataset,
    cache_dir: str | Path | None = None,
    *,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> FeatureDataset:
    """Encode every sample of ``dataset`` with ``model``'s encoders in eval mode, image by image.

    With ``cache_dir`` each image's features are stored on disk (atomically) and read back on the
    next call with the same inputs and encoder weights. ``progress(done, total)`` follows the images.
    The model's train/eval mode is restored afterwards.
    """
    if tuple(dataset.levels) != tuple(model.scales):
        raise ConfigError(
            f"dataset delivers KREM levels {list(dataset.levels)} but the model encodes "
            f"{list(model.scales)}; build the dataset with levels=model.scales"
        )
    device = torch.device(device)
    cache = DiskCache(cache_dir) if cache_dir is not None else None
    weights_hash = encoder_fingerprint(model) if cache is not None else ""
    was_training = model.training
    model.eval()
    parts = []
    try:
        for j, part in enumerate(dataset.image_slices):
            indices = range(part.start, part.stop)

            def compute(indices: range = indices) -> np.ndarray:
                return encode_samples(model, dataset, indices, batch_size, device)

            if cache is None:
                parts.append(compute())
            else:
                key = {"stage": "pfenet_features", "inputs": dataset.input_key(j), "encoders": weights_hash}
                parts.append(cache.get_or_compute(key, compute))
            if progress is not None:
                progress(j + 1, len(dataset.image_slices))
    finally:
        model.train(was_training)
    empty = np.zeros((0, len(model.scales), model.feature_dim), dtype=np.float32)
    features = np.concatenate(parts) if parts else empty
    return FeatureDataset(features, dataset.targets[dataset.sample_image])


class SVMDiscriminator:
    """Table 4's SVM discriminator: standardise the concatenated ``S x D`` pooled vector, then ``SVC``.

    Defaults (the paper gives none): RBF kernel, ``C=1``, ``gamma="scale"`` (scikit-learn's
    defaults) after per-feature standardisation. Probabilities are, by default, the softmax of
    the one-vs-rest decision values: cheap, and their arg-max is the SVM's own prediction.
    ``probability=True`` uses Platt scaling instead (``CalibratedClassifierCV``, sigmoid, 5-fold:
    calibrated, about 5x slower, and its arg-max may differ from the SVM's own prediction). The
    fitted model lives in memory only: it is refitted from the feature cache in seconds, and
    pickles are never written.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        kernel: str = "rbf",
        C: float = 1.0,
        gamma: str | float = "scale",
        probability: bool = False,
    ) -> None:
        if C <= 0:
            raise ConfigError(f"SVM C must be > 0, got {C}")
        self.num_classes = num_classes
        self.probability = probability
        svc = SVC(kernel=kernel, C=C, gamma=gamma)
        # scikit-learn's replacement for SVC(probability=True): Platt scaling on 5-fold
        # cross-validated decision values, the final SVC fitted on all the data.
        classifier = CalibratedClassifierCV(svc, method="sigmoid", ensemble=False) if probability else svc
        self.pipeline: Pipeline = make_pipeline(StandardScaler(), classifier)
        self._svc = svc
        self._fitted = False

    @staticmethod
    def _flat(features: np.ndarray | Tensor) -> np.ndarray:
        array = features.detach().cpu().numpy() if isinstance(features, Tensor) else np.asarray(features)
        return array.reshape(len(array), -1)

    def fit(self, features: np.ndarray | Tensor, targets: np.ndarray | Tensor) -> SVMDiscriminator:
        """Fit on pooled features ``(N, S, D)`` (or ``(N, S*D)``) and class indices ``(N,)``."""
        y = np.asarray(targets, dtype=np.int64)
        if len(np.unique(y)) < 2:
            raise ConfigError("the SVM needs training samples of at least two classes")
        if y.min() < 0 or y.max() >= self.num_classes:
            raise ConfigError(f"SVM targets must be class indices in 0..{self.num_classes - 1}")
        self.pipeline.fit(self._flat(features), y)
        self._fitted = True
        return self

    def fit_features(self, data: FeatureDataset) -> SVMDiscriminator:
        """Fit on a :class:`FeatureDataset` (all its rows)."""
        return self.fit(data.features, data.targets)

    def predict_proba(self, features: np.ndarray | Tensor) -> np.ndarray:
        """Probabilities ``(N, num_classes)``; classes absent from the training data get 0."""
        if not self._fitted:
            raise ConfigError("SVMDiscriminator.predict_proba called before fit")
        x = self._flat(features)
        seen = self.pipeline.classes_
        out = np.zeros((len(x), self.num_classes))
        if self.probability:
            out[:, seen] = self.pipeline.predict_proba(x)
            return out
        scores = self.pipeline.decision_function(x)
        if scores.ndim == 1:  # two classes: one signed margin for seen[1]
            scores = np.stack([-scores / 2, scores / 2], axis=1)
        scores = scores - scores.max(axis=1, keepdims=True)
        exp = np.exp(scores)
        out[:, seen] = exp / exp.sum(axis=1, keepdims=True)
        return out

    def predict(self, features: np.ndarray | Tensor) -> np.ndarray:
        """Class indices ``(N,)`` (the arg-max of :meth:`predict_proba`)."""
        return self.predict_proba(features).argmax(axis=1)

    def to_module(self, in_features: int, n_scales: int) -> SVMHead:
        """The fitted SVM as an :class:`~histobreast.models.msmv.SVMHead` (same probabilities as
        :meth:`predict_proba`), to become a model's discriminator and be saved with its weights.
        Only the default (softmax of decision values) RBF SVM can be exported."""
        if not self._fitted:
            raise ConfigError("SVMDiscriminator.to_module called before fit")
        svc = self._svc
        if self.probability or svc.kernel != "rbf":
            raise ConfigError("only an RBF SVM without Platt scaling (probability=False) can become an SVMHead")
        scaler: StandardScaler = self.pipeline.steps[0][1]
        head = SVMHead(in_features, n_scales, self.num_classes, len(svc.support_vectors_), len(svc.classes_))
        # scikit-learn flips the signs of a binary SVC's public coefficients; the head uses libsvm's own.
        sign = -1.0 if len(svc.classes_) == 2 else 1.0
        values = {
            "mean": scaler.mean_,
            "scale": scaler.scale_,
            "support_vectors": svc.support_vectors_,
            "dual_coef": sign * svc.dual_coef_,
            "intercept": sign * svc.intercept_,
            "gamma": np.asarray(svc._gamma),
            "n_support": svc.n_support_,
            "classes": svc.classes_,
        }
        for name, value in values.items():
            buffer = getattr(head, name)
            buffer.copy_(torch.as_tensor(np.asarray(value)).reshape(buffer.shape).to(buffer.dtype))
        return head.eval()

    def params(self) -> dict[str, Any]:
        """The SVM's settings as plain values (for run records)."""
        svc = self._svc
        return {
            "kernel": svc.kernel,
            "C": svc.C,
            "gamma": svc.gamma,
            "probability": self.probability,
            "standardize": True,
        }
