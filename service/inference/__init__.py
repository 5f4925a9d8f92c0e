"""The inference lifecycle: find and verify models, run them, batch requests onto them.

One room per job, in data-path order:
``repository`` (find, verify, load) → ``runner`` (arrays through an ONNX Runtime session) →
``batcher`` (queue items, call a function on a list) → ``pipeline`` (the named steps of a
request: decode_request → preprocess → batch → predict → unbatch → encode_response) →
``postprocess`` (probabilities into classes, uncertainty, redshift) → ``serving`` (the live
models, reload and drain). ``offline`` runs the same steps without a server.
"""
