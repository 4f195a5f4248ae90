"""histobreast: H&E breast histopathology classification (Zhu et al. 2019; Liu et al. 2022).

Data flows one way: files -> records (``histobreast.data``) -> pre-processing
(``histobreast.preprocess``) -> model (``histobreast.models``) -> probabilities -> votes
(``histobreast.votes``) -> metrics (``histobreast.metrics``) -> report (``histobreast.report``).
"""

__version__ = "0.1.0"
