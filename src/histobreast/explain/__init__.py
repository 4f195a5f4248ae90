"""Explanations: class activation maps of both systems, their ensembles and plain classifiers.

Built on the maintained ``grad-cam`` library; each network names its own target layers
(``cam_target_layers()`` on the model classes). :func:`explain` gives one
:class:`~histobreast.explain.maps.Explanation` per image, :func:`write_explanations` writes the
overlays and raw maps (``histobreast explain``; ``predict --review --explain`` puts them on the cards).
"""

from histobreast.explain.api import explain, write_explanations
from histobreast.explain.cam import DEFAULT_METHOD, METHODS, ExplainError
from histobreast.explain.maps import Explanation

__all__ = ["DEFAULT_METHOD", "METHODS", "ExplainError", "Explanation", "explain", "write_explanations"]
