"""The management API's routes, one ``APIRouter`` per resource (contract section 5)."""
