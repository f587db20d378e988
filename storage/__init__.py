"""The only package that speaks SQL: the DuckDB store, its schema and repository functions."""

from storage.db import Store
from storage.errors import ConflictError, NotFoundError, StoreBusyError, StoreError, ValidationError

__all__ = ["ConflictError", "NotFoundError", "Store", "StoreBusyError", "StoreError", "ValidationError"]
