"""One admin's shell: its mode, its pending changes, its console; and the dispatcher.

Each SSH login (or local ``clusterd shell``) gets its own ``Shell``; nothing about a
session lives at module level.  ``run_line`` runs one command line and returns an exit
status (0 ok, 1 refused or failed, 2 unknown command or bad arguments); errors are
written to the console with the reason and change nothing.

Restricted commands (``schema.restrictions``) run in another mode ask to switch, with
the reference's prompt; login-host-only commands act on this machine whatever the mode.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from clusterd.cli.console import Console, pick
from clusterd.core import confirm as confirms
from clusterd.core import layers
from clusterd.core.errors import ClusterdError, InvalidSetting
from clusterd.core.modes import Mode
from clusterd.core.versions import Commit
from clusterd.node import api
from clusterd.schema.feature import Level
from clusterd.schema.restrictions import COMMANDS, Restriction, switch_prompt
from clusterd.store.session import Session
from clusterd.trust.logins import AdminLogin

if TYPE_CHECKING:
    from clusterd.node.api import ClusterAPI
    from clusterd.store.store import Store

log = logging.getLogger("clusterd.shell")
Handler = Callable[["Shell", list[str]], Awaitable[int]]


GUEST_COMMANDS = frozenset({"passwd", "help", "quit", "exit", "version"})


class Quit(Exception):
    """Raised by quit/exit: the shell ends."""


class Usage(ClusterdError):
    """Raised when a command line is malformed: says the right form."""


class Gone(Quit):
    """Raised when the shell's user (or the key it logged in with) was removed: the
    shell ends."""


class Shell:
    """One login's shell.  ``role`` is read again from the cluster's users at every
    command and at every commit (``clusterd.trust.logins``): a user demoted or deleted on any
    member loses the right at once, in this shell too."""

    def __init__(self, cluster: ClusterAPI, login: AdminLogin, console: Console):
        self.api = cluster
        self.login = login
        self.user = login.user
        self.console = console
        self.session = cluster.session(login.user)
        self.mode = Mode.machine(cluster.hostname)
        self.role = self._current_role()
        # Set while the client reads what we write (SSH flow control); None: no channel.
        self.can_write: asyncio.Event | None = None

    def _current_role(self) -> str:
        role = self.api.role(self.login)
        if role is None:
            raise Gone(f"user {self.user!r} no longer exists in this cluster")
        return role

    def __repr__(self) -> str:
        return (
            f"<Shell {self.user}@{self.hostname} {self.mode} pending={len(self.session.pending)}>"
        )

    @property
    def hostname(self) -> str:
        return self.api.hostname

    @property
    def store(self) -> Store:
        """For reading: changes go through ``commit``."""
        return self.api.store

    @property
    def cluster(self) -> str | None:
        return layers.cluster_name(self.store.state)

    def write(self, text: str = "") -> None:
        self.console.write(text)

    def prompt(self) -> str:
        """``(Cluster NAME)>``, ``(Group NAME)>``, ``(Machine FQDN)>`` or ``HOSTNAME>``."""
        self._check_mode()
        name = self.cluster
        if name is None:
            return f"{self.hostname}> "
        match self.mode.level:
            case Level.CLUSTER:
                text = f"(Cluster {name})"
            case Level.GROUP:
                text = f"(Group {self.mode.name})"
            case _:
                text = f"(Machine {self.mode.name})"
        if self.api.disconnected:
            text += " [Disconnected]"
        deadline = confirms.deadline(self.store.state)
        if deadline is not None:
            shown = "%H:%M:%S" if deadline - time.time() < 120 else "%H:%M"
            text += f" [Confirm by {time.strftime(shown, time.localtime(deadline))}]"
        return text + "> "

    def _check_mode(self) -> None:
        """A machine renamed meanwhile is followed to its new name; a mode that no longer
        exists (group deleted, left the cluster) falls back to this machine."""
        state = self.store.state
        for _ in range(len(self.api.former_names)):  # renamed again and again: follow
            renamed = self.api.former_names.get(self.mode.name)
            if self.mode.level is not Level.MACHINE or renamed is None:
                break
            self.mode = Mode.machine(renamed)
        gone = (
            self.cluster is None
            or (self.mode.level is Level.GROUP and self.mode.name not in layers.groups(state))
            or (self.mode.level is Level.MACHINE and self.mode.name not in layers.machines(state))
        )
        if gone:
            self.mode = Mode.machine(self.hostname)

    # -- running commands ---------------------------------------------------------------

    async def run_line(self, line: str) -> int:
        from clusterd.cli.commands import HANDLERS
        from clusterd.cli.editor import edit_feature

        try:
            words = shlex.split(line)
        except ValueError as exc:
            self.write(f"Error: {exc}")
            return 2
        if not words:
            return 0
        try:
            self.role = self._current_role()
        except Gone as exc:
            self.write(f"Error: {exc}: this session ends.")
            raise
        name, args = words[0].lower(), words[1:]
        info = COMMANDS.get(name)
        handler = HANDLERS.get(name)
        if handler is None and info is not None and name in self.store.catalogue:
            handler = edit_feature
            args = [name, *args]
        if handler is None:
            self.write(f"Unknown command: {words[0]}. Type 'help' for the list of commands.")
            return 2
        if self.role == "guest" and name not in GUEST_COMMANDS:
            allowed = ", ".join(sorted(GUEST_COMMANDS))
            self.write(f"Error: {self.user} is a guest: only {allowed} are open.")
            return 1
        before = self.session.pending.saved()
        status = await self._run(handler, args, name, info)
        if status:
            self.session.pending.restore(before)  # a failed command changes nothing
        return status

    async def _run(self, handler: Handler, args: list[str], name: str, info: Any) -> int:
        try:
            if info is not None and not await self._mode_allows(info.restriction):
                return 1
            return await handler(self, args)
        except Quit:
            raise
        except KeyboardInterrupt:
            self.write("Interrupted: nothing changed.")
            return 1
        except (ClusterdError, ValueError, KeyError) as exc:
            return self.failed(exc, name)

    def failed(self, exc: ClusterdError | ValueError | KeyError, name: str) -> int:
        """Say why command ``name`` failed (a usage line, or one line per problem) and
        return its exit status: 2 for a malformed line, else 1."""
        if isinstance(exc, Usage):
            self.write(f"Usage: {exc}")
            return 2
        if isinstance(exc, InvalidSetting):
            self.write("\n".join(f"Error: {p}" for p in exc.problems))
            return 1
        if not isinstance(exc, ClusterdError):
            log.info("%r: %s failed: %s", self, name, exc)
        self.write(f"Error: {exc}")
        return 1

    def require_write(self, what: str) -> None:
        """Refuse a change to a read-only user (the role as it is now)."""
        self.role = self._current_role()
        api.require_write(self.user, self.role, what)

    def require_admin(self, feature: str, *, doing: str = "") -> None:
        """Refuse users and SSH settings to all but an admin (the role as it is now)."""
        self.role = self._current_role()
        api.require_admin(self.user, self.role, feature, doing)

    async def commit(
        self,
        session: Session,
        comment: str,
        on_conflict: str = "keep",
        *,
        passwd_of: str | None = None,
        confirm: int | None = None,
        confirming: bool = False,
        probe: str | None = None,
    ) -> Commit | None:
        """Commit ``session``'s pending changes as this user, the role read again now (it
        may have changed while a question waited); every commit of the shell goes
        through here, and the rules are the API's."""
        self.role = self._current_role()
        return await self.api.commit(
            session,
            comment,
            role=self.role,
            on_conflict=on_conflict,
            passwd_of=passwd_of,
            confirm=confirm,
            confirming=confirming,
            probe=probe,
        )

    async def _mode_allows(self, restriction: Restriction) -> bool:
        """Cluster-only and machine-only commands offer to switch (in a cluster)."""
        if self.cluster is None:
            return True
        if restriction is Restriction.LOGIN_HOST_ONLY and self.mode.level is Level.MACHINE:
            if self.mode.name != self.hostname:
                self.write(f"This command acts on the machine you are logged in to "
                           f"({self.hostname}), not {self.mode.name}.")  # fmt: skip
                return False
            return True
        cluster_only = restriction is Restriction.CLUSTER_ONLY
        if cluster_only and self.mode.level is not Level.CLUSTER:
            target = Mode.cluster()
        elif restriction is Restriction.MACHINE_ONLY and self.mode.level is not Level.MACHINE:
            target = Mode.machine(self.hostname)
        else:
            return True
        if self.role == "guest":
            return True  # passwd for a guest: cluster data, no warning, no switch
        question = switch_prompt(restriction).removesuffix(" [Y]>")
        if (await self.console.ask(question, "Y")).strip().lower() not in ("y", "yes"):
            self.write("Command not run: wrong mode.")
            return False
        if not cluster_only:
            target = Mode.machine(await self._which_machine())
        self.mode = target
        if not self.console.interactive:  # (no prompt shows it: say so)
            level = "cluster" if cluster_only else "machine"
            self.console.note(f"This command is restricted to {level} mode: now in {target} mode.")
        return True

    async def _which_machine(self) -> str:
        """The machine a machine-only command run from group or cluster mode acts on:
        one of the machines that mode covers, the login host first when it is one."""
        machines = sorted(layers.machines_under(self.store.state, self.mode))
        if self.hostname in machines:
            machines = [self.hostname, *(m for m in machines if m != self.hostname)]
        if not machines:
            raise ClusterdError(f"{self.mode} has no machines: use clustermode machine NAME")
        if len(machines) == 1:
            return machines[0]
        question = f"Choose the machine of {self.mode} to switch to:"
        default = self.hostname if self.hostname in machines else ""
        return await pick(self.console, question, machines, default)
