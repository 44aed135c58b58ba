"""The calibration engine."""
