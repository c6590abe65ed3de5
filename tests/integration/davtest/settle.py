"""settle() for a rig of a running davsyncd behind the push front and the
UnifiedPush distributor (test_push.py's Rig, the benchmark's DaemonRig).

The rig provides `front` and `dist` (either may be None), `wait(predicate,
timeout, what)` and `_daemon_idle()`: the number of SyncStarted signals
seen so far plus one when every account is idle with nothing pending, else
None."""

from __future__ import annotations


class SettleMixin:
    def _upstream_idle(self) -> bool:
        """Nothing on its way to the daemon: no push in the front, no
        distributor call unanswered."""
        if self.front is not None and not self.front.idle():
            return False
        if self.dist is not None and any(c["result"] == "pending" for c in self.dist.calls()):
            return False
        return True

    def settle(self, timeout: float = 60.0) -> None:
        """Waits until the daemon is idle and nothing is on its way to it
        (checked twice around the upstream check, so that a push that
        arrived in between is seen)."""
        def check():
            n = self._daemon_idle()
            if not n or not self._upstream_idle():
                return False
            return self._daemon_idle() == n
        self.wait(check, timeout, "the daemon to be idle with no push in flight")
