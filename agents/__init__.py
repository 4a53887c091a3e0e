"""Faust agents of the pipeline. ``auditrelay.agents.app.create_app`` builds the worker's app."""
