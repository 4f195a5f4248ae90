"""MSMV-PFENet (Liu et al. 2022, System B): parallel per-scale encoders + a BiLSTM over the scales.

PFENet: ``S`` parallel encoders of the same structure with their own weights, one per key-region
scale (coarse -> fine), each pooled to one vector (ResNet50: 2048-d). FDNet: the ``S`` vectors as a
sequence, coarse first, into a bidirectional LSTM (paper: 2 layers, hidden 256) and a fully
connected layer to the class scores. Both are trained jointly, end to end.

Choices the paper leaves open (documented defaults, all constructor arguments):

- **Which LSTM output feeds the FC**: the concatenation of the last layer's final forward hidden
  state (after reading coarse -> fine) and its final backward hidden state (after reading fine ->
  coarse), ``2 * hidden`` values; each direction has then seen every scale.
- **Single and double FENet** (Table 4 rows 1-2) use the scales in :data:`DEFAULT_SCALES`:
  single = level 1 (the 897 px window at 0.42 µm/px, downscaled 4x: the most tissue context),
  double = levels 1 and 3 (the two ends of the scale range). ``scales=`` picks others.
- **VGG16 / GoogLeNet / ResNet-101 rows** are single encoders on the same scale as single FENet:
  the paper credits PFENet's advantage over them to its "3 CNNs in parallel".
- **SVM discriminator**: an RBF SVM fitted on the pooled vectors (scikit-learn), carried by
  :class:`SVMHead` as buffers so a model folder keeps it without pickles.
- **FC discriminator**: one linear layer on the concatenated vectors (Table 1: "Concatenation
  2048 x 3" -> FC).
- **Encoders** are torchvision's (post-activation ResNet), not the BN-ReLU-conv order that Table 1
  lists; VGG16/GoogLeNet pool their last conv map to one 512-/1024-d vector.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from histobreast.errors import ConfigError
from histobreast.models.encoders import build_encoder, encoder_spec
from histobreast.models.layers import ProbabilityMixin
from histobreast.models.registry import register_model
from histobreast.preprocess.transforms import IMAGENET_MEAN, IMAGENET_STD

# KREM levels, coarse -> fine: 0 = 897 px window (4x down), 1 = 400 px (1.79x), 2 = 224 px (1x).
N_LEVELS = 3
DEFAULT_SCALES: dict[int, tuple[int, ...]] = {1: (0,), 2: (0, 2), 3: (0, 1, 2)}

Discriminator = Literal["bilstm", "fc", "svm"]


class BiLSTMDiscriminator(ProbabilityMixin, nn.Module):
    """FDNet: a bidirectional LSTM over the per-scale vectors ``(B, S, D)`` -> logits ``(B, C)``.

    The FC reads the last layer's final forward and backward hidden states, concatenated.
    """

    def __init__(
        self, in_features: int, num_classes: int, hidden: int = 256, num_layers: int = 2, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if num_layers < 1 or hidden < 1:
            raise ConfigError(f"BiLSTM needs lstm_layers >= 1 and hidden >= 1, got {num_layers} and {hidden}")
        self.lstm = nn.LSTM(in_features, hidden, num_layers=num_layers, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(2 * hidden, num_classes)

    def forward(self, features: Tensor) -> Tensor:
        """``features`` ``(B, S, D)``, coarse scale first."""
        _, (h_n, _) = self.lstm(features)  # h_n: (layers * 2, B, hidden); the last two are the top layer
        final = torch.cat([h_n[-2], h_n[-1]], dim=-1)  # forward after the finest, backward after the coarsest
        return self.fc(self.dropout(final))


class FCDiscriminator(ProbabilityMixin, nn.Module):
    """Table 4's FC discriminator: one linear layer on the concatenated per-scale vectors."""

    def __init__(self, in_features: int, n_scales: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features * n_scales, num_classes)

    def forward(self, features: Tensor) -> Tensor:
        """``features`` ``(B, S, D)`` -> logits ``(B, C)``."""
        return self.fc(self.dropout(features.flatten(1)))


class SVMHead(ProbabilityMixin, nn.Module):
    """A fitted RBF SVM (Table 4's SVM discriminator) as a module: standardise the concatenated
    vectors, one-vs-one decision values against the support vectors, then scikit-learn's
    one-vs-rest vote + confidence transform. ``forward`` returns those scores as logits, so
    ``predict_proba`` is their softmax (what :class:`histobreast.engine.features.SVMDiscriminator` gives).

    The fitted values are buffers, saved with the weights; ``n_support_vectors`` and
    ``n_seen_classes`` fix their shapes (they are model kwargs). Classes the SVM never saw get
    logit -inf. It is fitted, not trained: :meth:`histobreast.engine.features.SVMDiscriminator.to_module`.
    """

    def __init__(
        self,
        in_features: int,
        n_scales: int,
        num_classes: int,
        n_support_vectors: int,
        n_seen_classes: int | None = None,
    ) -> None:
        super().__init__()
        seen = num_classes if n_seen_classes is None else n_seen_classes
        if n_support_vectors < 1 or not 2 <= seen <= num_classes:
            raise ConfigError(
                f"an SVM head needs svm_support_vectors >= 1 and 2..{num_classes} seen classes, "
                f"got {n_support_vectors} and {seen}"
            )
        width = in_features * n_scales
        self.num_classes = num_classes
        for name, shape, dtype in (
            ("mean", (width,), torch.float64),
            ("scale", (width,), torch.float64),
            ("support_vectors", (n_support_vectors, width), torch.float64),
            ("dual_coef", (seen - 1, n_support_vectors), torch.float64),
            ("intercept", (seen * (seen - 1) // 2,), torch.float64),
            ("gamma", (), torch.float64),
            ("n_support", (seen,), torch.int64),
            ("classes", (seen,), torch.int64),
        ):
            self.register_buffer(name, torch.zeros(shape, dtype=dtype))

    def forward(self, features: Tensor) -> Tensor:
        """``features`` ``(B, S, D)`` -> scores ``(B, num_classes)`` (float32)."""
        with torch.autocast(features.device.type, enabled=False):  # float64 throughout, also under bf16 autocast
            return self._scores(features.flatten(1).double()).float()

    def _scores(self, features: Tensor) -> Tensor:
        x = (features - self.mean) / self.scale
        kernel = torch.exp(-self.gamma * torch.cdist(x, self.support_vectors).square())  # (B, n_SV)
        starts = torch.cumsum(self.n_support, 0) - self.n_support
        seen = len(self.n_support)
        votes = x.new_zeros(len(x), seen)
        confidence = x.new_zeros(len(x), seen)
        pair = 0
        for i in range(seen):  # libsvm's one-vs-one order; positive decision = class i
            for j in range(i + 1, seen):
                si = slice(int(starts[i]), int(starts[i] + self.n_support[i]))
                sj = slice(int(starts[j]), int(starts[j] + self.n_support[j]))
                decision = (
                    kernel[:, si] @ self.dual_coef[j - 1, si]
                    + kernel[:, sj] @ self.dual_coef[i, sj]
                    + self.intercept[pair]
                )
                votes[:, i] += decision >= 0
                votes[:, j] += decision < 0
                confidence[:, i] += decision
                confidence[:, j] -= decision
                pair += 1
        if seen == 2:  # scikit-learn's binary SVC: one signed margin for the second class
            scores = torch.stack([confidence[:, 0] / 2, confidence[:, 1] / 2], dim=1)
        else:
            scores = votes + confidence / (3 * (confidence.abs() + 1))
        out = torch.full((len(x), self.num_classes), float("-inf"), dtype=torch.float64, device=x.device)
        out[:, self.classes] = scores
        return out


def build_discriminator(
    kind: str,
    in_features: int,
    n_scales: int,
    num_classes: int,
    *,
    hidden: int = 256,
    lstm_layers: int = 2,
    dropout: float = 0.0,
    svm_support_vectors: int | None = None,
    svm_seen_classes: int | None = None,
) -> nn.Module:
    """The FDNet variant ``kind`` ("bilstm", "fc" or a fitted "svm") for ``n_scales`` vectors of ``in_features``."""
    if kind == "bilstm":
        return BiLSTMDiscriminator(in_features, num_classes, hidden=hidden, num_layers=lstm_layers, dropout=dropout)
    if kind == "fc":
        return FCDiscriminator(in_features, n_scales, num_classes, dropout=dropout)
    if kind == "svm":
        if svm_support_vectors is None:
            raise ConfigError(
                "discriminator='svm' is fitted, not trained: use frozen encoders (model.frozen_encoders) or fit "
                "histobreast.engine.features.SVMDiscriminator on pooled features; a saved SVM model also needs "
                "svm_support_vectors"
            )
        return SVMHead(in_features, n_scales, num_classes, svm_support_vectors, svm_seen_classes)
    raise ConfigError(f"unknown discriminator {kind!r}; choose 'bilstm', 'fc' or (fitted) 'svm'")


def resolve_scales(n_encoders: int, scales: Sequence[int] | None) -> tuple[int, ...]:
    """The KREM levels the encoders read, coarse -> fine: ``scales`` if given, else DEFAULT_SCALES."""
    if scales is None:
        if n_encoders not in DEFAULT_SCALES:
            raise ConfigError(f"n_encoders must be 1, 2 or 3 (or give scales=), got {n_encoders}")
        return DEFAULT_SCALES[n_encoders]
    resolved = tuple(int(s) for s in scales)
    if len(resolved) != n_encoders:
        raise ConfigError(f"scales {list(resolved)} has {len(resolved)} entries but n_encoders={n_encoders}")
    if not resolved or list(resolved) != sorted(set(resolved)) or not all(0 <= s < N_LEVELS for s in resolved):
        raise ConfigError(
            f"scales must be distinct KREM levels in 0..{N_LEVELS - 1}, coarse first; got {list(resolved)}"
        )
    return resolved


def _encoder_input(crop: Tensor, encoder: nn.Module, uint8_mean: Tensor, uint8_std: Tensor) -> Tensor:
    # uint8 crops are normalised here, on the model's device; a 5-D batch cannot be channels_last
    # itself, so each crop follows its encoder's memory layout.
    if crop.dtype == torch.uint8:
        crop = (crop.float() - uint8_mean) / uint8_std
    weight = next(encoder.parameters())
    if weight.dim() == 4 and not weight.is_contiguous() and weight.is_contiguous(memory_format=torch.channels_last):
        return crop.contiguous(memory_format=torch.channels_last)
    return crop


class MSMVPFENet(ProbabilityMixin, nn.Module):
    """PFENet (one encoder per scale) + FDNet: ``forward(x (B, S, 3, H, W)) -> logits (B, C)``.

    ``x[:, i]`` is the crop at KREM level ``scales[i]``; the data path delivers exactly these levels
    (see ``histobreast.datasets.key_regions.KeyRegionDataset(levels=model.scales)``).
    """

    def __init__(
        self,
        num_classes: int = 4,
        encoder: str = "resnet50",
        n_encoders: int = 3,
        scales: Sequence[int] | None = None,
        discriminator: Discriminator = "bilstm",
        lstm_layers: int = 2,
        hidden: int = 256,
        dropout: float = 0.0,
        encoder_weights: str | Path | None = None,
        svm_support_vectors: int | None = None,
        svm_seen_classes: int | None = None,
    ) -> None:
        super().__init__()
        self.scales = resolve_scales(n_encoders, scales)
        self.encoder_name = encoder
        self.feature_dim = encoder_spec(encoder).out_features
        self.encoders = nn.ModuleList(build_encoder(encoder, encoder_weights) for _ in self.scales)
        self.discriminator = build_discriminator(
            discriminator,
            self.feature_dim,
            len(self.scales),
            num_classes,
            hidden=hidden,
            lstm_layers=lstm_layers,
            dropout=dropout,
            svm_support_vectors=svm_support_vectors,
            svm_seen_classes=svm_seen_classes,
        )
        # uint8 crops are normalised here, on the model's device (not saved in the state dict).
        self.register_buffer("uint8_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("uint8_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255, persistent=False)

    def encode(self, x: Tensor) -> Tensor:
        """Pooled per-scale vectors ``(B, S, D)`` of crops ``x`` ``(B, S, 3, H, W)``: ImageNet-normalised
        floats, or raw uint8 RGB that is normalised on the model's device."""
        if x.ndim != 5 or x.shape[1] != len(self.scales) or x.shape[2] != 3:
            raise ValueError(
                f"MSMVPFENet expects (batch, {len(self.scales)} scales, 3, H, W) crops "
                f"(levels {list(self.scales)}), got shape {tuple(x.shape)}"
            )
        return torch.stack(
            [enc(_encoder_input(x[:, i], enc, self.uint8_mean, self.uint8_std)) for i, enc in enumerate(self.encoders)],
            dim=1,
        )

    def cam_target_layers(self) -> list[nn.Module]:
        """The layers class activation maps read: each encoder's last conv stage, one per scale, coarse first."""
        spec = encoder_spec(self.encoder_name)
        return [spec.cam_layer(encoder) for encoder in self.encoders]

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, C)`` of crops ``x`` ``(B, S, 3, H, W)``, coarse scale first."""
        return self.discriminator(self.encode(x))


class ScaleClassifier(ProbabilityMixin, nn.Module):
    """One PFENet encoder and a linear head on its own scale's crops, for per-scale pre-training.

    ``forward(x (B, S, 3, H, W))`` reads only ``x[:, index]``. The encoder is ``model``'s own module
    (trained in place), and the classifier holds no other part of ``model``, so an optimizer over
    its parameters touches exactly this encoder and the head.
    """

    def __init__(self, model: MSMVPFENet, index: int, num_classes: int) -> None:
        super().__init__()
        if not 0 <= index < len(model.encoders):
            raise ValueError(f"scale index {index} out of range: the model has {len(model.encoders)} encoders")
        self.index = index
        self.encoder = model.encoders[index]
        self.head = nn.Linear(model.feature_dim, num_classes)
        self.register_buffer("uint8_mean", model.uint8_mean.clone(), persistent=False)
        self.register_buffer("uint8_std", model.uint8_std.clone(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(_encoder_input(x[:, self.index], self.encoder, self.uint8_mean, self.uint8_std)))


@register_model("msmv_pfenet")
def msmv_pfenet(num_classes: int = 4, **kwargs: Any) -> MSMVPFENet:
    """Liu et al. 2022's MSMV-PFENet: one encoder per KREM scale + a discriminator (default 3 x ResNet50 + BiLSTM x 2).

    kwargs: encoder, n_encoders, scales, discriminator, lstm_layers, hidden, dropout, encoder_weights,
    svm_support_vectors, svm_seen_classes (see :class:`MSMVPFENet`, :class:`SVMHead`). Defaults are the
    paper's best model (3 x ResNet50 + BiLSTM x 2, hidden 256).
    """
    return MSMVPFENet(num_classes=num_classes, **kwargs)


@dataclass(frozen=True)
class Table4Variant:
    """One row of paper B's Table 4: labels, ``create_model("msmv_pfenet", **model_kwargs)``, and the
    paper's patch-/image-level accuracy (%). ``svm`` rows fit an SVM on the pooled features of the
    trained ``svm_features_of`` row instead of training a network of their own."""

    key: str
    encoding: str
    discrimination: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    paper_patch: float = 0.0
    paper_image: float = 0.0
    svm_features_of: str | None = None


TABLE4_VARIANTS: tuple[Table4Variant, ...] = (
    Table4Variant("single_fenet_fc", "Single FENet", "FC", {"n_encoders": 1, "discriminator": "fc"}, 84.3, 85.4),
    Table4Variant("double_fenet_fc", "Double FENet", "FC", {"n_encoders": 2, "discriminator": "fc"}, 86.6, 88.9),
    Table4Variant("vgg16_fc", "VGG16", "FC", {"encoder": "vgg16", "n_encoders": 1, "discriminator": "fc"}, 78.8, 80.1),
    Table4Variant(
        "googlenet_fc", "GoogLeNet", "FC", {"encoder": "googlenet", "n_encoders": 1, "discriminator": "fc"}, 82.0, 82.6
    ),
    Table4Variant(
        "resnet101_fc", "ResNet-101", "FC", {"encoder": "resnet101", "n_encoders": 1, "discriminator": "fc"}, 85.5, 86.1
    ),
    Table4Variant("pfenet_fc", "PFENet", "FC", {"discriminator": "fc"}, 88.7, 92.5),
    Table4Variant("pfenet_svm", "PFENet", "SVM", {"discriminator": "fc"}, 89.1, 90.0, svm_features_of="pfenet_fc"),
    Table4Variant("pfenet_bilstm1", "PFENet", "BiLSTM", {"lstm_layers": 1}, 89.5, 92.3),
    Table4Variant("pfenet_bilstm2", "PFENet", "BiLSTM x 2", {"lstm_layers": 2}, 93.0, 94.8),  # the paper's best
    Table4Variant("pfenet_bilstm3", "PFENet", "BiLSTM x 3", {"lstm_layers": 3}, 91.2, 93.7),
)


def table4_variant(key: str) -> Table4Variant:
    """The Table 4 row ``key`` (e.g. "pfenet_bilstm2"); unknown keys raise ConfigError listing them."""
    for variant in TABLE4_VARIANTS:
        if variant.key == key:
            return variant
    raise ConfigError(f"unknown Table 4 variant {key!r}; choose one of {', '.join(v.key for v in TABLE4_VARIANTS)}")
