"""Quantization methods as mechanisms the recipes compose: LtSQ, TGQ, the builders that
turn statistics into quantizers, smoothing, rotations, reparameterization, JLSS, the
Hessian-weighted metric and entropy groups."""
