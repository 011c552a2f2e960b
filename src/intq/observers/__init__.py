"""Range estimators (observers): min/max, EMA, percentile, MSE-optimal and KL/entropy clipping.

Every observer is an ``nn.Module`` with state in buffers and the interface ``update(x)``,
``ranges() -> (min_val, max_val)``, ``merge(other)``, ``reset()``, ``has_data``; build one by
name with ``make_observer``.
"""

from intq.observers.base import Observer
from intq.observers.ema import EMAObserver
from intq.observers.factory import OBSERVER_KINDS, make_observer
from intq.observers.histogram import HistogramObserver
from intq.observers.kl import KLObserver
from intq.observers.minmax import MinMaxObserver
from intq.observers.mse import MSEObserver, TensorMSEObserver
from intq.observers.percentile import PercentileObserver

__all__ = [
    # factory
    "OBSERVER_KINDS",
    "make_observer",
    # interface
    "Observer",
    "HistogramObserver",
    # kinds
    "MinMaxObserver",
    "EMAObserver",
    "PercentileObserver",
    "MSEObserver",
    "TensorMSEObserver",
    "KLObserver",
]
