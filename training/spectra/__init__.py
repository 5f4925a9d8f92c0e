"""Training the spectrum classifier: simulate, train, calibrate, export, evaluate."""
