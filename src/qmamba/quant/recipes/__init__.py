"""Recipes: named compositions of the quantization methods."""
