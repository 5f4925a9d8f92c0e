"""The HTTP layer: a thin FastAPI app over service.inference (see main.create_app)."""
