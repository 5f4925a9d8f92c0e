"""21cm lightcone regression: simulate with 21cmFAST, train a 3D CNN with Gaussian outputs,
export to ONNX. ``specula train lightcone`` runs :func:`training.lightcone.cli.main`."""
