"""Persistence for duplex: open a database by URL, transactions, model binding, migrations.

The per-layer models and store functions live in their own modules (`storage.agent`,
`storage.chat`, `storage.server`); this namespace only re-exports the database base.
"""

from storage.database import (
    LAYER_VERSION_BLOCKS,
    BoundModels,
    Database,
    DatabaseKind,
    Migration,
    bind_models,
    open_database,
    register_migrations,
    registered_migrations,
)

__all__ = [
    "LAYER_VERSION_BLOCKS",
    "BoundModels",
    "Database",
    "DatabaseKind",
    "Migration",
    "bind_models",
    "open_database",
    "register_migrations",
    "registered_migrations",
]
