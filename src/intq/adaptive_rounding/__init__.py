"""AdaRound (Nagel et al. 2020): learned up-or-down rounding of the weights, layer by layer,
on calibration data. ``adaround`` is PTQ with it; ``adaround_graph`` rounds a calibrated graph."""

from intq.adaptive_rounding.pipeline import AdaRoundLayer, adaround, adaround_graph
from intq.adaptive_rounding.rounding import AdaRoundSettings

__all__ = ["AdaRoundLayer", "AdaRoundSettings", "adaround", "adaround_graph"]
