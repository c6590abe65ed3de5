"""Fills Radicale's caches without a server, with Radicale's own storage code
(so the cache files are exactly the ones the server would write).

    python3 radicale_warm.py items STORAGE_FOLDER K N /alice/contacts/ [/alice/events/ ...]
        item cache and history cache of every item whose index in the sorted
        listing is K mod N; run N of these in parallel
    python3 radicale_warm.py sync STORAGE_FOLDER /alice/contacts/
        the sync token and etag of the current state (cheap once the
        history cache exists)

Fsync is off here and files are replaced with a plain rename instead of
Radicale's temporary folder per write: the files are the same, it only
saves minutes (file creation is the slow part on small VMs).
"""

import contextlib
import os
import sys

from radicale import config, storage
from radicale.storage.multifilesystem.base import CollectionBase


@contextlib.contextmanager
def _plain_atomic_write(self, path, mode="w", newline=None):
    tmp = f"{path}.bench-{os.getpid()}.tmp"
    with open(tmp, mode, newline=newline, encoding=None if "b" in mode else self._encoding) as f:
        yield f
    os.replace(tmp, path)


CollectionBase._atomic_write = _plain_atomic_write


def open_storage(folder: str):
    configuration = config.load()
    configuration.update({"storage": {"filesystem_folder": folder, "_filesystem_fsync": "False"}},
                         "bench", privileged=True)
    return storage.load(configuration)


def main() -> None:
    mode, folder = sys.argv[1], sys.argv[2]
    store = open_storage(folder)
    if mode == "items":
        k, n = int(sys.argv[3]), int(sys.argv[4])
        with store.acquire_lock("r"):
            for path in sys.argv[5:]:
                (coll,) = list(store.discover(path))
                hrefs = sorted(h for h in os.listdir(coll._filesystem_path) if not h.startswith("."))
                mine = hrefs[k::n]
                # _get() per href, as get_all() does (get_multi() tests every
                # href against a list of all names: quadratic at 50 000 items).
                for h in mine:
                    item = coll._get(h, verify_href=False)
                    if item is None:
                        raise SystemExit(f"{path}{h}: not readable by Radicale")
                    coll._update_history_etag(h, item)
    elif mode == "sync":
        with store.acquire_lock("w"):
            (coll,) = list(store.discover(sys.argv[3]))
            coll.sync("")
            coll.etag
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
