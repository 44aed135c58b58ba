"""Calibration observers: primitive ones (base.py) and the engine's per-point wrappers
(act.py for tensor points, scan.py for the scan's in-loop points)."""
