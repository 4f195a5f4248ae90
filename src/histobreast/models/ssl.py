"""Self-supervised pre-training networks: any registered network's trunk + lightly's heads and losses.

:func:`build_trunk` turns a network name into the part a pre-trained weights file holds: a
torchvision encoder of System B (``resnet18`` ... ``googlenet``, also the ResNet baselines' trunk)
or System A's GoogLeNet-SEP / GoogLeNet-BN without its classifier and auxiliary heads. Its
state-dict keys are those of the full network minus the heads, so the file ``histobreast pretrain``
writes loads with ``model.kwargs.encoder_weights`` into every model kind.

:class:`SSLModel` wraps a trunk for one method: SimCLR (Chen et al. 2020: projection head, NT-Xent),
BYOL (Grill et al. 2020: projection + prediction heads, a momentum target network) or DINO (Caron
et al. 2021: self-distillation of a momentum teacher into the student, the teacher seeing the two
global crops and the student every global and local crop, centred and sharpened softmax targets).
Its forward takes a batch of views (``(B, 2, 3, H, W)``; DINO with local crops: a dict of
``"global"`` and ``"local"`` views) and returns the stacked head outputs that :class:`SSLLoss`
scores, so the engine's one training loop trains it like any classifier.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping
from typing import Any, Literal, Union

import torch
from torch import Tensor, nn

from histobreast.errors import ConfigError
from histobreast.models.encoders import ENCODERS, build_encoder, encoder_spec
from histobreast.models.googlenet_sep import GoogLeNetSEP

try:  # the optional extra histobreast[pretrain]
    from lightly.loss import DINOLoss, NegativeCosineSimilarity, NTXentLoss
    from lightly.models.modules import (
        BYOLPredictionHead,
        BYOLProjectionHead,
        DINOProjectionHead,
        SimCLRProjectionHead,
    )
    from lightly.models.utils import deactivate_requires_grad, update_momentum
    from lightly.utils.scheduler import cosine_schedule
except ImportError as err:  # pragma: no cover - lightly is in requirements.lock
    raise ConfigError("histobreast pretrain needs lightly: pip install 'histobreast[pretrain]'") from err

Method = Literal["simclr", "byol", "dino"]
METHODS: tuple[str, ...] = ("simclr", "byol", "dino")
#: The methods with a momentum teacher (target) network, moved by :meth:`SSLModel.momentum_update`.
MOMENTUM_METHODS = ("byol", "dino")
#: DINO's head: the bottleneck before its weight-normalised last layer (Caron et al. 2021 use 256).
DINO_BOTTLENECK = 256
#: A batch of views: ``(B, V, 3, H, W)``, or DINO's ``{"global": (B, 2, 3, H, W), "local": (B, L, 3, h, w)}``.
Views = Union[Tensor, Mapping[str, Tensor]]
#: System A's branch networks, whose trunk is the network without its fc and auxiliary heads.
SYSTEM_A_NETWORKS = ("googlenet_sep", "googlenet_bn")


def trunk_names() -> list[str]:
    """Every network :func:`build_trunk` knows: System B's encoders (the ResNet baselines among them), System A's."""
    return [*ENCODERS, *SYSTEM_A_NETWORKS]


def build_trunk(name: str, **kwargs: Any) -> tuple[nn.Module, int]:
    """``(trunk, feature size)``: network ``name`` mapping ``(B, 3, H, W)`` to pooled vectors ``(B, D)``.

    ``kwargs`` go to System A's GoogLeNetSEP (e.g. small ``widths`` for tests); torchvision
    encoders take none.
    """
    if name in SYSTEM_A_NETWORKS:
        net = GoogLeNetSEP(2, se=name == "googlenet_sep", aux_logits=False, **kwargs)
        features = net.fc.in_features
        net.fc = nn.Identity()  # forward then returns the pooled concat of the four head sources
        return net, features
    if name not in ENCODERS:
        raise ConfigError(f"pretrain.encoder: unknown network {name!r}; choose one of {', '.join(trunk_names())}")
    if kwargs:
        raise ConfigError(f"pretrain.encoder_kwargs: encoder {name!r} takes no options, got {sorted(kwargs)}")
    return build_encoder(name), encoder_spec(name).out_features


class SSLModel(nn.Module):
    """A trunk with the heads of one self-supervised method.

    ``forward(views)`` with two views ``(B, 2, 3, H, W)`` returns ``(2, B, D)`` projections for
    SimCLR, and ``(4, B, D)`` for BYOL: the two online predictions, then the two target projections.
    DINO returns ``(2 + V, B, D)``: the teacher's outputs on the two global crops, then the student's
    on all ``V`` crops (global first, then local). BYOL's target and DINO's teacher follow the
    online network by :meth:`momentum_update` after each step. DINO's centre of the teacher outputs
    is a buffer of :attr:`dino_loss`, part of the model's state, so a resumed run continues it.
    """

    def __init__(
        self,
        encoder: str,
        method: Method = "simclr",
        *,
        encoder_kwargs: Mapping[str, Any] | None = None,
        hidden_dim: int = 512,
        output_dim: int = 128,
        momentum: tuple[float, float] = (0.99, 1.0),
        temperature: float = 0.1,
        teacher_temperature: float = 0.04,
    ) -> None:
        super().__init__()
        if method not in METHODS:
            raise ConfigError(f"pretrain.method: unknown method {method!r}; choose one of {', '.join(METHODS)}")
        self.method = method
        self.momentum = momentum
        self.backbone, self.feature_dim = build_trunk(encoder, **dict(encoder_kwargs or {}))
        if method == "simclr":
            self.projection: nn.Module = SimCLRProjectionHead(self.feature_dim, hidden_dim, output_dim)
        elif method == "byol":
            self.projection = BYOLProjectionHead(self.feature_dim, hidden_dim, output_dim)
            self.prediction = BYOLPredictionHead(output_dim, hidden_dim, output_dim)
        else:
            head = (self.feature_dim, hidden_dim, min(DINO_BOTTLENECK, hidden_dim), output_dim)
            self.projection = _dino_head(*head)
            self.dino_loss = DINOLoss(output_dim, teacher_temperature, teacher_temperature, student_temp=temperature)
        if method in MOMENTUM_METHODS:
            self.backbone_momentum = copy.deepcopy(self.backbone)
            if method == "dino":  # its weight-normalised last layer cannot be deep-copied: a twin, same weights
                self.projection_momentum = _dino_head(*head)
                self.projection_momentum.load_state_dict(self.projection.state_dict())
            else:
                self.projection_momentum = copy.deepcopy(self.projection)
            deactivate_requires_grad(self.backbone_momentum)
            deactivate_requires_grad(self.projection_momentum)

    def forward(self, views: Views) -> Tensor:
        if self.method == "dino":
            return self._dino(views)
        if not isinstance(views, Tensor) or views.ndim != 5 or views.shape[1] != 2:
            shape = tuple(views.shape) if isinstance(views, Tensor) else sorted(views)
            raise ValueError(f"expected two views (B, 2, 3, H, W), got {shape}")
        flat, per_view = _flat(views)
        online = self.projection(self.backbone(flat))
        if self.method == "simclr":
            return per_view(online)
        with torch.no_grad():
            target = self.projection_momentum(self.backbone_momentum(flat))
        return torch.cat([per_view(self.prediction(online)), per_view(target.detach())])

    def _dino(self, views: Views) -> Tensor:
        crops = dict(views) if isinstance(views, Mapping) else {"global": views}
        global_views = crops["global"]
        if global_views.ndim != 5 or global_views.shape[1] != 2:
            raise ValueError(f"expected two global views (B, 2, 3, H, W), got {tuple(global_views.shape)}")
        flat, per_view = _flat(global_views)
        with torch.no_grad():
            teacher = per_view(self.projection_momentum(self.backbone_momentum(flat))).detach()
        student = [per_view(self.projection(self.backbone(flat)))]
        local = crops.get("local")
        if local is not None and local.shape[1] > 0:  # local crops are another size: their own trunk pass
            flat_local, per_local = _flat(local)
            student.append(per_local(self.projection(self.backbone(flat_local))))
        return torch.cat([teacher, *student])

    def momentum_update(self, step: int, total_steps: int) -> None:
        """BYOL, DINO: move the target (teacher) towards the online network (tau from ``momentum[0]`` to ``[1]``, cosine)."""
        if self.method not in MOMENTUM_METHODS:
            return
        tau = cosine_schedule(step, max(total_steps, 1), self.momentum[0], self.momentum[1])
        update_momentum(self.backbone, self.backbone_momentum, m=tau)
        update_momentum(self.projection, self.projection_momentum, m=tau)

    def encoder_state(self) -> dict[str, Tensor]:
        """The trunk's weights: what ``model.kwargs.encoder_weights`` loads."""
        return self.backbone.state_dict()


def _dino_head(*sizes: int) -> nn.Module:
    """lightly's DINO head (its last layer weight-normalised through torch's deprecated ``weight_norm``, warning muted)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`torch.nn.utils.weight_norm` is deprecated", FutureWarning)
        return DINOProjectionHead(*sizes)


def _flat(views: Tensor) -> tuple[Tensor, Any]:
    """``(B, V, 3, H, W)`` as one batch ``(B * V, 3, H, W)``, sample-major, and the inverse ``(B*V, D) -> (V, B, D)``."""
    batch, count = views.shape[:2]

    def per_view(x: Tensor) -> Tensor:
        return x.reshape(batch, count, -1).transpose(0, 1)

    return views.flatten(0, 1), per_view


class SSLLoss(nn.Module):
    """The method's loss on :class:`SSLModel`'s output (the engine's ``loss_fn(output, target)``; target unused).

    SimCLR: NT-Xent over the two views (``temperature``; gathered over DDP processes). BYOL: the
    symmetric negative cosine similarity of each view's prediction and the other view's target.
    DINO: ``dino`` (the model's :attr:`SSLModel.dino_loss`, which holds the centre), the student's
    cross-entropy to the teacher's targets over every pair of different crops.
    """

    def __init__(self, method: Method = "simclr", temperature: float = 0.1, dino: nn.Module | None = None) -> None:
        super().__init__()
        if method == "dino" and dino is None:
            raise ValueError("DINO's loss is the model's dino_loss: pass SSLLoss('dino', dino=model.dino_loss)")
        self.method = method
        self.ntxent = NTXentLoss(temperature=temperature, gather_distributed=True)
        self.cosine = NegativeCosineSimilarity()
        self.dino = [dino]  # a list, so the model's module (and its centre) is not registered twice

    def forward(self, output: Tensor, target: Tensor | None = None) -> Tensor:
        output = output.float()  # the similarities in float32 under bf16 autocast
        if self.method == "simclr":
            return self.ntxent(output[0], output[1])
        if self.method == "dino":
            return self.dino[0](list(output[:2]), list(output[2:]))  # type: ignore[misc]
        p0, p1, z0, z1 = output[0], output[1], output[2], output[3]
        return 0.5 * (self.cosine(p0, z1) + self.cosine(p1, z0))
