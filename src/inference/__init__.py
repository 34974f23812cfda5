"""inference: a trained model made ready to predict (:class:`~src.inference.predictor.Predictor`).

Below registry, monitoring and serving, which all load models through it; it imports only
core, learning and features.
"""
