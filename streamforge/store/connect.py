"""Which object store a config names: `[storage] endpoint`, else the embedded SeaweedFS."""
from __future__ import annotations

from typing import TYPE_CHECKING

from streamforge.store.embedded import embedded_object_store
from streamforge.store.objects import ObjectStore

if TYPE_CHECKING:
    from streamforge.config import Config


def object_store(config: Config) -> ObjectStore:
    """The ObjectStore of `config`: its external endpoint, or the embedded store's S3 ports."""
    if config.embedded_storage:
        return embedded_object_store(config)
    return ObjectStore.from_config(config)
