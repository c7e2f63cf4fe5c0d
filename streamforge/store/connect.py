"""Which object store a config names: `[storage] endpoint`, else the embedded SeaweedFS."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from streamforge.errors import StorageError
from streamforge.store.embedded import embedded_object_store
from streamforge.store.objects import ObjectStore

if TYPE_CHECKING:
    from streamforge.config import Config


def object_store(config: Config) -> ObjectStore:
    """The ObjectStore of `config`: its external endpoint, or the embedded store's S3 ports."""
    if config.embedded_storage:
        return embedded_object_store(config)
    return ObjectStore.from_config(config)


@contextlib.contextmanager
def running_object_store(config: Config, create_bucket: bool = False) -> Iterator[ObjectStore]:
    """The ObjectStore of `config`, answering: the embedded store is started (notifications off) for the
    block when nothing serves it yet, e.g. for `migrate` or `backup` while `serve` is stopped. An external
    store's bucket is created when missing with `create_bucket` (a target), else must exist (a source)."""
    if not config.embedded_storage:
        store = ObjectStore.from_config(config)
        if create_bucket:
            store.ensure_bucket()
        else:
            store.ping()
        yield store
        return
    store = embedded_object_store(config)
    try:
        store.ping()
        answering = True  # `serve` or `storage` runs it
    except StorageError:
        answering = False
    if answering:
        yield store
        return
    from streamforge.store.embedded import EmbeddedStore
    with EmbeddedStore(config, webhook_url="") as embedded:
        yield embedded.object_store()
