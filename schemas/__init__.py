"""The wire contract of auditrelay: event envelope, topic layout, settings, errors.

Everything else in the project imports from here; this package imports nothing
of ours, so services can embed it (with ``producer/``) without the pipeline.
"""
