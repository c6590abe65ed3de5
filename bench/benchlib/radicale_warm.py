"""Fills Radicale's caches without a server, with Radicale's own storage code
(so the cache files are exactly the ones the server would write).

    python3 radicale_warm.py items STORAGE_FOLDER K N /alice/contacts/ [/alice/events/ ...]
        parses every item whose index in the sorted listing is K mod N
        (the item cache); run N of these in parallel
    python3 radicale_warm.py sync STORAGE_FOLDER /alice/contacts/
        history cache, sync token and etag of the current state

Fsync is off here: the files are the same, it only saves minutes.
"""

import os
import sys

from radicale import config, storage


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
                got = sum(1 for _, item in coll.get_multi(mine) if item is not None)
                if got != len(mine):
                    raise SystemExit(f"{path}: only {got} of {len(mine)} items readable")
    elif mode == "sync":
        with store.acquire_lock("w"):
            (coll,) = list(store.discover(sys.argv[3]))
            coll.sync("")
            coll.etag
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
