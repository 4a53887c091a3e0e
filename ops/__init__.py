"""The outer layer: the ``auditrelay`` CLI and local provisioning. Nothing imports it."""
