"""Model registry in the style of timm: ``@register_model`` on a builder, ``create_model(name)``.

Builders take ``num_classes`` plus their own keyword arguments and return an ``nn.Module``.
``create_model(..., weights=PATH)`` initialises from a local safetensors file; nothing is ever
downloaded (there are no ImageNet weights on our machines, and asking for them fails fast).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from histobreast.errors import CheckpointError, ConfigError

ModelBuilder = Callable[..., nn.Module]
_REGISTRY: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator: make ``builder`` available as ``create_model(name)``."""

    def decorator(builder: ModelBuilder) -> ModelBuilder:
        if name in _REGISTRY and _REGISTRY[name] is not builder:
            raise ValueError(f"model name {name!r} is registered twice")
        _REGISTRY[name] = builder
        return builder

    return decorator


def _ensure_builtin_models() -> None:
    # Importing the model modules runs their @register_model decorators.
    import histobreast.models.zoo  # noqa: F401


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    _ensure_builtin_models()
    return sorted(_REGISTRY)


def model_builder(name: str) -> ModelBuilder:
    """The registered builder of ``name`` (its docstring describes the model)."""
    _ensure_builtin_models()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; registered models: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def model_parameters(name: str) -> frozenset[str] | None:
    """Keyword arguments ``create_model(name, **kwargs)`` accepts, for checking a config at load.

    The builder's named parameters; a builder that forwards ``**kwargs`` adds the defaulted
    parameters of the class it returns (its return annotation). None: not knowable (that class
    takes ``**kwargs`` too, or the builder names no class).
    """
    builder = model_builder(name)
    params = inspect.signature(builder).parameters.values()
    named = {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        return frozenset(named)
    built = typing.get_type_hints(builder).get("return")
    if not inspect.isclass(built):
        return None
    forwarded = inspect.signature(built).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in forwarded):
        return None
    return frozenset(named | {p.name for p in forwarded if p.default is not p.empty})


def create_model(
    name: str,
    *,
    num_classes: int = 2,
    weights: str | Path | None = None,
    strict: bool = True,
    **kwargs: Any,
) -> nn.Module:
    """Build model ``name``; optionally initialise it from a local safetensors ``weights`` file.

    ``weights`` must be a path: the strings "imagenet"/"DEFAULT" are refused with a clear message,
    because no pretrained weights can be downloaded here.
    """
    model = model_builder(name)(num_classes=num_classes, **kwargs)
    if weights is not None:
        from histobreast.models.weights import load_weights

        path = Path(weights)
        if not path.suffix and not path.exists():
            raise CheckpointError(
                f"weights={weights!r}: only a local weights file can be used; nothing is downloaded "
                "(no ImageNet weights exist on this machine). Pass the path of a .safetensors file."
            )
        load_weights(model, path, strict=strict)
    return model
