"""The pipeline's stages, one module per agent; ``auditrelay.agents.app`` composes them."""
