"""Persistence for duplex: open a database by URL for named layers, transactions, model
binding, migrations.

The per-layer models, store functions and `Layer` values live in their own modules
(`storage.agent.AGENT_LAYER`, `storage.server.SERVER_LAYER`, later `storage.chat`); this
namespace only re-exports the database base. Importing a layer's module registers nothing:
a program passes the layers it uses to `open_database(url, layers=[...])`. The package
logger gets a `NullHandler`: a program that set up no logging prints nothing of ours.
"""

import logging

from storage.database import (
    LAYER_VERSION_BLOCKS,
    BoundModels,
    CounterSnapshot,
    Database,
    DatabaseKind,
    Layer,
    Migration,
    StorageCounters,
    bind_models,
    open_database,
)

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "LAYER_VERSION_BLOCKS",
    "BoundModels",
    "CounterSnapshot",
    "Database",
    "DatabaseKind",
    "Layer",
    "Migration",
    "StorageCounters",
    "bind_models",
    "open_database",
]
