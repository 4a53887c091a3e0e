"""The management API (FastAPI): workspaces, destinations, test deliveries."""
