"""Faust agents of the pipeline. ``agents.app.create_app`` builds the worker's app."""
