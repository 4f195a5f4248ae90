"""Imports every model module so that their ``@register_model`` builders are registered."""

# One import per model module (each module's builders register themselves on import).
import histobreast.models.msmv  # noqa: F401,E402  (System B: msmv_pfenet)
