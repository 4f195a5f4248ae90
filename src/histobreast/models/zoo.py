"""Imports every model module so that their ``@register_model`` builders are registered."""

# One import per model module (each module's builders register themselves on import).
import histobreast.models.googlenet_sep  # noqa: F401,E402  (System A: googlenet_sep, googlenet_bn)
import histobreast.models.hybrid  # noqa: F401,E402  (System A: hybrid_googlenet_sep)
import histobreast.models.msmv  # noqa: F401,E402  (System B: msmv_pfenet)
import histobreast.models.spanhol  # noqa: F401,E402  (baseline: spanhol_patch_cnn)
import histobreast.models.torchvision_models  # noqa: F401,E402  (baselines: resnet18, resnet50)
