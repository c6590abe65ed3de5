"""Randomised two-way sync: both sides change between syncs, and after every
`--once` the two sides agree and no edit was lost.

Seed: $DAVSYNCD_SEED, else DEFAULT_SEED; every failure message starts with
the seed, the server and the round (the collection and its policy follow),
so a failure can be replayed with
`DAVSYNCD_SEED=<seed> pytest tests/integration/test_convergence.py`.

One account per conflict policy (server-wins as the default, local-wins,
newest), each with a calendar and an address book on the same server, all
synced by the same `--once` runs. Each round applies random operations to
every collection, on the local vdir files and on the server, then runs
`--once`. Every edit
writes a unique marker into SUMMARY (events) or FN (contacts) and a fresh
LAST-MODIFIED/REV stamp (a global counter, so "newest" has a strict order).
The expected outcome of a round follows the rules in README.md ("How a sync
works"), per item touched this round (L = local side, S = server side):

  L edit          -> the L marker on both sides
  S edit          -> the S marker on both sides
  L edit + S edit -> conflict: the policy's winner on both sides, the loser's
                     marker in the conflicts folder (side = the losing side)
  L delete / S delete / both delete -> gone on both sides
  L delete + S edit -> the S marker on both sides (an edit beats a deletion)
  L edit + S delete -> the L marker on both sides
  create on one side (possibly edited again before the sync) -> the last
                     marker on both sides
  two edits on one side -> the second marker; the first one is superseded

After each round: the same UIDs and the same content per UID on both sides,
the expected marker per item, exactly the expected new conflict copies, the
conflict count on each line, and a second `--once` that changes nothing and
costs one request per collection. Every marker written in the round is then
accounted for: on both sides, in the conflicts folder, or superseded by a
later edit on the same side in the same round.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import random
from collections import Counter


from davtest import sampledata as sd
from davtest.daemon import account_for
from davtest.vdir import (
    assert_same_items, conflict_copies, local_by_uid, replace_title, run_once, server_by_uid,
    server_delete, server_put, set_property, title_of, uid_of, vdir_folder, write_local,
)

DEFAULT_SEED = 20240611
SEED = int(os.environ.get("DAVSYNCD_SEED") or DEFAULT_SEED)
ROUNDS = 8
MIN_ITEMS = 4          # never let a side drop below this (mass-deletion guard)

# Operation kinds and their weights.
OPS = {
    "l_edit": 3, "s_edit": 3, "both_edit": 2,
    "l_create": 1.5, "s_create": 1.5, "l_create_edit": 0.5, "s_create_edit": 0.5,
    "l_delete": 1, "s_delete": 1, "both_delete": 0.5,
    "l_delete_s_edit": 1, "l_edit_s_delete": 1,
    "l_edit_twice": 0.7, "s_edit_twice": 0.7,
}


class Collection:
    def __init__(self, account, policy, name, path, folder, ext):
        self.account, self.policy = account, policy
        self.name, self.path, self.folder, self.ext = name, path, folder, ext
        self.expected: dict[str, str] = {}   # uid -> marker (title) expected on both sides

    @property
    def is_cards(self) -> bool:
        return self.ext == ".vcf"


class Round:
    """One round's operations on one collection and what they must lead to."""

    def __init__(self):
        self.outcome: dict[str, str | None] = {}       # uid -> final marker or None (gone)
        self.conflicts: Counter = Counter()            # (uid, losing side, loser marker)
        self.markers: dict[str, tuple[str, str]] = {}  # marker -> (uid, fate)
        # fate: "final" (on both sides), "conflict-local"/"conflict-server"
        # (in the conflicts folder), "superseded"


class Driver:
    def __init__(self, srv, env, rng):
        self.srv, self.env, self.rng = srv, env, rng
        self.counter = 0

    def ctx(self, rnd) -> str:
        return f"seed={SEED} server={self.srv.name} round={rnd}"

    def marker(self, side: str) -> tuple[str, str]:
        """(unique title, modification stamp) for an edit made now."""
        self.counter += 1
        stamp = (dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
                 + dt.timedelta(seconds=self.counter)).strftime("%Y%m%dT%H%M%SZ")
        return f"conv {side} edit {self.counter:05d} {self.rng.randrange(16**6):06x}", stamp

    def edited(self, coll: Collection, text: str, side: str) -> tuple[str, str, str]:
        title, stamp = self.marker(side)
        text = replace_title(text, title)
        text = set_property(text, "REV" if coll.is_cards else "LAST-MODIFIED", stamp)
        return text, title, stamp

    def new_item(self, coll: Collection, side: str) -> tuple[str, str, str, str]:
        title, stamp = self.marker(side)
        uid = f"conv-{side}-{self.counter:05d}@davsyncd.test"
        if coll.is_cards:
            text = sd.make_contact(self.counter, "conv", uid=uid, given="Conv", family=str(self.counter))
            text = replace_title(text, title)
            text = set_property(text, "REV", stamp)
        else:
            text = sd.make_event(self.counter % 300, "conv", uid=uid, summary=title)
            text = set_property(text, "LAST-MODIFIED", stamp)
        return uid, text, title, stamp

    @staticmethod
    def conflict_winner(policy: str, l_stamp: str, s_stamp: str) -> str:
        if policy == "local-wins":
            return "local"
        if policy == "newest":
            return "local" if l_stamp > s_stamp else "server"
        return "server"

    # ----- one round on one collection -----

    def play(self, coll: Collection, n_ops: int) -> Round:
        rnd = Round()
        local = local_by_uid(coll.folder)
        remote = server_by_uid(self.srv, coll.path)
        assert set(local) == set(remote) == set(coll.expected)
        untouched = sorted(coll.expected)
        self.rng.shuffle(untouched)
        alive_local = len(untouched)
        alive_server = len(untouched)
        kinds, weights = zip(*OPS.items())

        def take():
            return untouched.pop() if untouched else None

        def l_write(uid, text):
            write_local(local[uid].path, text)
            local[uid].text = text

        def s_write(uid, text):
            etag = server_put(self.srv, remote[uid], text)
            remote[uid].etag, remote[uid].text = etag, text

        for _ in range(n_ops):
            kind = self.rng.choices(kinds, weights)[0]
            deletes_local = kind in ("l_delete", "both_delete", "l_delete_s_edit")
            deletes_server = kind in ("s_delete", "both_delete", "l_edit_s_delete")
            if (deletes_local and alive_local <= MIN_ITEMS) or (deletes_server and alive_server <= MIN_ITEMS):
                kind = "l_edit"
                deletes_local = deletes_server = False

            if kind in ("l_create", "s_create", "l_create_edit", "s_create_edit"):
                side = "local" if kind.startswith("l_") else "server"
                uid, text, title, _ = self.new_item(coll, side)
                final = title
                if kind.endswith("_edit"):
                    rnd.markers[title] = (uid, "superseded")
                    text, final, _ = self.edited(coll, text, side)
                if side == "local":
                    write_local(coll.folder / f"{uid}{coll.ext}", text)
                    alive_local += 1
                else:
                    self.srv.put_item(coll.path, f"{uid}{coll.ext}", text)
                    alive_server += 1
                rnd.markers[final] = (uid, "final")
                rnd.outcome[uid] = final
                continue

            uid = take()
            if uid is None:
                break
            if deletes_local:
                alive_local -= 1
            if deletes_server:
                alive_server -= 1

            if kind in ("l_edit", "l_edit_twice"):
                if kind == "l_edit_twice":
                    text, first, _ = self.edited(coll, local[uid].text, "local")
                    l_write(uid, text)
                    rnd.markers[first] = (uid, "superseded")
                text, title, _ = self.edited(coll, local[uid].text, "local")
                l_write(uid, text)
                rnd.markers[title] = (uid, "final")
                rnd.outcome[uid] = title
            elif kind in ("s_edit", "s_edit_twice"):
                if kind == "s_edit_twice":
                    text, first, _ = self.edited(coll, remote[uid].text, "server")
                    s_write(uid, text)
                    rnd.markers[first] = (uid, "superseded")
                text, title, _ = self.edited(coll, remote[uid].text, "server")
                s_write(uid, text)
                rnd.markers[title] = (uid, "final")
                rnd.outcome[uid] = title
            elif kind == "both_edit":
                # Which side edits first decides the stamps' order ("newest").
                order = ["local", "server"]
                self.rng.shuffle(order)
                made = {}
                for side in order:
                    if side == "local":
                        text, title, stamp = self.edited(coll, local[uid].text, "local")
                        l_write(uid, text)
                    else:
                        text, title, stamp = self.edited(coll, remote[uid].text, "server")
                        s_write(uid, text)
                    made[side] = (title, stamp)
                winner = self.conflict_winner(coll.policy, made["local"][1], made["server"][1])
                loser = "server" if winner == "local" else "local"
                rnd.outcome[uid] = made[winner][0]
                rnd.markers[made[winner][0]] = (uid, "final")
                rnd.markers[made[loser][0]] = (uid, f"conflict-{loser}")
                rnd.conflicts[(uid, loser, made[loser][0])] += 1
            elif kind == "l_delete":
                local[uid].path.unlink()
                rnd.outcome[uid] = None
            elif kind == "s_delete":
                server_delete(self.srv, remote[uid])
                rnd.outcome[uid] = None
            elif kind == "both_delete":
                local[uid].path.unlink()
                server_delete(self.srv, remote[uid])
                rnd.outcome[uid] = None
            elif kind == "l_delete_s_edit":
                local[uid].path.unlink()
                text, title, _ = self.edited(coll, remote[uid].text, "server")
                s_write(uid, text)
                rnd.markers[title] = (uid, "final")
                rnd.outcome[uid] = title
            elif kind == "l_edit_s_delete":
                text, title, _ = self.edited(coll, local[uid].text, "local")
                l_write(uid, text)
                server_delete(self.srv, remote[uid])
                rnd.markers[title] = (uid, "final")
                rnd.outcome[uid] = title
            else:
                raise AssertionError(kind)
        return rnd


@contextlib.contextmanager
def context(prefix: str):
    try:
        yield
    except (AssertionError, TimeoutError) as e:
        raise AssertionError(f"{prefix}: {e}") from None


POLICIES = {"sw": "server-wins", "lw": "local-wins", "nw": "newest"}


def test_random_changes_on_both_sides_converge(dav_server, daemon_env):
    """One account per conflict policy, each with a calendar and an address
    book on the same server, all synced by the same `--once` runs."""
    srv = dav_server
    rng = random.Random(f"{SEED}-{srv.name}")
    driver = Driver(srv, daemon_env, rng)

    colls: list[Collection] = []
    accounts = []
    for acc_id, policy in POLICIES.items():
        cal = srv.make_calendar(f"{acc_id}-cal", f"Calendar {policy}", "#1E90FF")
        ab = srv.make_addressbook(f"{acc_id}-ab", f"Contacts {policy}")
        for path, ext, count in ((cal, ".ics", 10), (ab, ".vcf", 7)):
            name = path.rstrip("/").rsplit("/", 1)[-1]
            coll = Collection(acc_id, policy, name, path,
                              vdir_folder(daemon_env, acc_id, name), ext)
            for _ in range(count):
                uid, text, title, _ = driver.new_item(coll, "seed")
                srv.put_item(coll.path, f"{uid}{coll.ext}", text)
                coll.expected[uid] = title
            colls.append(coll)
        acc = account_for(srv, acc_id, collections={"include": [f"{acc_id}-cal", f"{acc_id}-ab"]})
        if policy != "server-wins":       # the default must be server-wins
            acc["conflict_policy"] = policy
        accounts.append(acc)
    cfg = daemon_env.write_config(accounts)

    with context(driver.ctx(0)):
        lines = run_once(daemon_env, cfg)
        assert set(lines) == {f"{c.account}/{c.name}" for c in colls}
        for coll in colls:
            assert_same_items(local_by_uid(coll.folder), server_by_uid(srv, coll.path), coll.name)

    total_ops = 0
    for rnd_no in range(1, ROUNDS + 1):
        with context(driver.ctx(rnd_no)):
            before = {c.name: {cc.key for cc in conflict_copies(daemon_env, c.account, c.name)}
                      for c in colls}
            rounds = {}
            for coll in colls:
                n_ops = rng.randint(4, 8)
                rounds[coll.name] = driver.play(coll, n_ops)
                total_ops += n_ops

            lines = run_once(daemon_env, cfg)

            for coll in colls:
                check_round(daemon_env, srv, coll, rounds[coll.name],
                            lines[f"{coll.account}/{coll.name}"], before[coll.name])
            second = run_once(daemon_env, cfg)
            for label, line in second.items():
                assert (line.transfers, line.conflicts, line.skipped, line.requests, line.refused) \
                    == (0, 0, 0, 1, None), f"second --once was not quiet: {line.text}"
    assert total_ops >= 200, f"only {total_ops} operations (seed {SEED})"


def check_round(env, srv, coll: Collection, rnd: Round, line, conflicts_before: set):
    where = f"{coll.account}/{coll.name} ({coll.policy})"
    assert line.refused is None and line.skipped == 0, line.text
    # Expected items and markers.
    for uid, final in rnd.outcome.items():
        if final is None:
            coll.expected.pop(uid, None)
        else:
            coll.expected[uid] = final
    local = local_by_uid(coll.folder)
    remote = server_by_uid(srv, coll.path)
    assert_same_items(local, remote, where)
    missing = sorted(set(coll.expected) - set(local))
    extra = sorted(set(local) - set(coll.expected))
    assert not missing and not extra, f"{where}: UIDs missing {missing}, unexpected {extra}\n{line.text}"
    wrong = {u: (title_of(local[u].text), want) for u, want in coll.expected.items()
             if title_of(local[u].text) != want}
    assert not wrong, f"{where}: wrong versions (have, want): {wrong}\n{line.text}"

    # Conflict copies made by this sync: exactly the losers of this round.
    copies = [c for c in conflict_copies(env, coll.account, coll.name) if c.key not in conflicts_before]
    got = Counter((uid_of(c.text), c.side, title_of(c.text)) for c in copies)
    assert got == rnd.conflicts, (f"{where}: conflict copies {dict(got)}, expected {dict(rnd.conflicts)}"
                                  f"\n{line.text}")
    for c in copies:
        assert c.file == local[uid_of(c.text)].name, f"{where}: {c.path.name} names another file"
    assert line.conflicts == sum(rnd.conflicts.values()), f"{where}: {line.text}"

    # Every marker written this round is accounted for.
    local_titles = {title_of(i.text) for i in local.values()}
    remote_titles = {title_of(i.text) for i in remote.values()}
    copy_titles = {(c.side, title_of(c.text)) for c in copies}
    for marker, (uid, fate) in rnd.markers.items():
        if fate == "final":
            assert marker in local_titles and marker in remote_titles, \
                f"{where}: edit {marker!r} of {uid} is not on both sides"
        elif fate.startswith("conflict-"):
            assert (fate.split("-", 1)[1], marker) in copy_titles, \
                f"{where}: losing edit {marker!r} of {uid} is not in the conflicts folder"
            assert marker not in local_titles and marker not in remote_titles
        else:
            assert fate == "superseded"
            assert marker not in local_titles and marker not in remote_titles, \
                f"{where}: superseded edit {marker!r} of {uid} is still in place"
