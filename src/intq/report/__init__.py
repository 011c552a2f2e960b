"""Reports: per-layer quantization error tables (and plots) for people to read."""

from intq.report.layers import LayerRow, format_layer_report, layer_report

__all__ = ["LayerRow", "format_layer_report", "layer_report"]
