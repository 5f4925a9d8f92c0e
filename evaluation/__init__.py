"""Evaluation of what ships: served model versions and exported graphs, on held-out and real data.

It runs a model version through the service's own offline path (``service.inference.offline``:
readers, preprocessing, ONNX graph and the postprocessing that rolls labels up into classes),
exactly as ``specula classify`` does, and scores exported graphs on the trainer's held-out
simulated test splits. So it depends on both the product (``service``) and the trainer
(``training``), and neither depends on it: a check that copied the service's steps into training
would test the copy instead of the product, and the trainer must never know how a model is served.
"""
