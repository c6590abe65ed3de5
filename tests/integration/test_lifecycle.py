"""Collections that come and go on a real Radicale: one created (or shared)
on the server shows up at the next Sync(); one deleted there is noticed in
the same sync that meets its 404, and its folder is moved aside, never
deleted. The daemon runs on a private bus; waits are conditions with
deadlines.
"""

from __future__ import annotations

from davtest import sampledata as sd
from davtest.daemon import account_for
from davtest.dbus import ACCOUNT as ACCOUNT_IFACE, COLLECTION, account_path, collection_path
from davtest.vdir import local_by_uid, run_once, vdir_folder
from test_daemon import INTERVAL, start_daemon  # noqa: F401  (fixture)

ACCOUNT = "life"


def _seed(server, name: str, count: int) -> str:
    path = server.make_calendar(name, name.title())
    for i in range(count):
        server.put_item(path, f"{name}{i}.ics", sd.make_event(i, name))
    return path


def _objects(bus) -> set[str]:
    return {p for p, ifaces in bus.managed_objects().items() if COLLECTION in ifaces}


def test_new_and_deleted_collections_are_noticed_at_the_next_sync(radicale, daemon_env, bus, start_daemon):
    _seed(radicale, "work", 3)
    doomed = _seed(radicale, "doomed", 4)
    d = start_daemon(daemon_env.write_config([account_for(radicale, ACCOUNT, sync_interval=INTERVAL)]))
    d.wait_synced(ACCOUNT)
    doomed_dir = vdir_folder(daemon_env, ACCOUNT, "doomed")
    assert len(local_by_uid(doomed_dir)) == 4
    mon = bus.monitor().wait_ready()

    # On the server: one calendar created (or shared with us), one deleted.
    _seed(radicale, "fresh", 2)
    radicale.delete_collection(doomed)
    before = d.account(ACCOUNT)["LastSync"]
    bus.call(account_path(ACCOUNT), f"{ACCOUNT_IFACE}.Sync")
    d.wait_synced(ACCOUNT, after=before)

    objects = _objects(bus)
    assert collection_path(ACCOUNT, "fresh") in objects
    assert collection_path(ACCOUNT, "doomed") not in objects
    assert len(local_by_uid(vdir_folder(daemon_env, ACCOUNT, "fresh"))) == 2
    # Nothing local was deleted: the folder moved aside with its four items.
    removed = mon.wait_for(lambda s: s.member == "CollectionRemoved", 10, "CollectionRemoved")
    mon.stop()
    _id, folder, kept_at = removed.args
    assert folder == "doomed"
    assert not doomed_dir.exists()
    kept = list((daemon_env.state_dir / ACCOUNT / "removed").glob("doomed-*/items"))
    assert len(kept) == 1 and str(kept[0]) == kept_at
    assert len(local_by_uid(kept[0])) == 4
    assert d.account(ACCOUNT)["LastResult"] == "ok"
    assert "gone from the server" in d.log()


def test_a_collection_deleted_between_discoveries_is_set_aside_on_its_404(radicale, daemon_env):
    """--once trusts its discovery cache for a while; the 404 itself must
    lead to a new discovery in the same run."""
    _seed(radicale, "work", 2)
    doomed = _seed(radicale, "doomed", 3)
    cfg = daemon_env.write_config([account_for(radicale, ACCOUNT)])
    run_once(daemon_env, cfg)
    radicale.delete_collection(doomed)
    res = daemon_env.run("--config", cfg, "--once")
    assert f"{ACCOUNT}/doomed: FAILED" in res.stdout, res.stdout
    assert "gone from the server" in res.stderr, res.stderr
    kept = list((daemon_env.state_dir / ACCOUNT / "removed").glob("doomed-*/items"))
    assert len(kept) == 1 and len(local_by_uid(kept[0])) == 3
    # The next run knows only the collections that exist.
    again = run_once(daemon_env, cfg)
    assert set(again) == {f"{ACCOUNT}/work"}
