"""The daemon's configuration: ``clusterd.toml`` in the data directory, then flags.

Every setting has one name in the file and one flag (``--ping-interval`` for
``ping_interval``); flags win.  Unknown keys and bad values are refused with the file
name and the key, before anything starts.
"""

from __future__ import annotations

import ipaddress
import shlex
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from clusterd import __version__
from clusterd.core.errors import ConfigError
from clusterd.node import nodechecks
from clusterd.node.alertmail import parse_relay
from clusterd.schema.fields import DOMAIN_RE, host_key
from clusterd.schema.membership import SERIAL_RE

CONFIG_NAME = "clusterd.toml"
Port = Annotated[int, Field(ge=1, le=65535)]
CheckList = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=nodechecks.MAX_TEXT)]],
    Field(max_length=nodechecks.MAX_ITEMS),
]


def web_address(value: str) -> tuple[str, int]:
    """``ADDRESS:PORT`` (``[::1]:8443`` for IPv6) of the web interface."""
    host, colon, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        address = ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise ValueError("ADDRESS:PORT, e.g. 127.0.0.1:8443 or [::1]:8443") from None
    if not colon or not 1 <= number <= 65535:
        raise ValueError("ADDRESS:PORT, with a port from 1 to 65535")
    return str(address), number


class DaemonConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data_dir: Path
    hostname: str
    serial: str
    listen: str = "127.0.0.1"
    ssh_port: Port = 22
    ccs_enabled: bool = False
    ccs_port: Port = 2222
    ping_interval: Annotated[float, Field(ge=0.2, le=3600)] = 60.0
    database: str = "store.db"  # a file in the data directory, or any SQLAlchemy URL
    software_version: str | None = None  # tests only: pretend to run another version
    log_level: str = "INFO"
    log_max_bytes: Annotated[int, Field(ge=4096)] = 10 * 1024 * 1024  # clusterd.log rotates
    log_backups: Annotated[int, Field(ge=0, le=100)] = 5  # ... keeping this many old files
    blocked_peers: list[str] = []  # serials never linked directly (a firewall, for tests)
    # Tests only: seconds in one minute of ``commit confirmed MINUTES`` (short deadlines).
    confirm_minute: Annotated[float, Field(gt=0, le=60)] = 60.0
    # Measurement and fault injection (benchmarks, fault campaigns; off by default):
    # append "<monotonic ns> commit|apply <origin> <seq>", "<ns> install <peer> <vv json>"
    # (a state transfer) and "<ns> note <text>" lines
    trace_file: str | None = None  # relative to the data directory
    link_delay_ms: Annotated[float, Field(ge=0, le=60_000)] = 0.0  # hold frames we send
    link_jitter_ms: Annotated[float, Field(ge=0, le=60_000)] = 0.0  # ... plus up to this
    # Membership rows carry this machine's address; when false, peers resolve its name.
    advertise_address: bool = True
    dns_servers: list[str] = []  # empty: the host's resolver configuration
    dns_port: Port = 53
    dns_timeout: Annotated[float, Field(gt=0, le=30)] = 2.0
    hosts_file: str = "/etc/hosts"
    reverse_dns: Literal["require", "warn", "off"] = "warn"  # for connecting members
    login_failures: Annotated[int, Field(ge=1, le=1000)] = 5  # within login_window ...
    login_window: Annotated[float, Field(gt=0)] = 60.0
    login_lockout: Annotated[float, Field(ge=0)] = 60.0  # ... lock the source out this long
    # What strangers may hold open (clusterd.mesh.transport.limits; members are never limited).
    max_startups: Annotated[int, Field(ge=1, le=100_000)] = 64  # unauthenticated, in total
    max_startups_per_source: Annotated[int, Field(ge=1, le=100_000)] = 8  # ... per address
    login_grace_time: Annotated[float, Field(gt=0, le=3600)] = 30.0  # s to authenticate
    max_auth_tries: Annotated[int, Field(ge=1, le=1000)] = 12  # attempts per connection
    max_channels: Annotated[int, Field(ge=1, le=1000)] = 8  # sessions per connection
    max_sessions_per_user: Annotated[int, Field(ge=1, le=10_000)] = 16  # shells at once
    max_pending_changes: Annotated[int, Field(ge=1, le=10_000_000)] = 10_000  # per session
    # Run after every change of the effective configuration (clusterd.node.publish): a local
    # setting only, never replicated (SECURITY.md).
    publish_hook: str | None = None  # a command line; the changed features are appended
    publish_hook_timeout: Annotated[float, Field(gt=0, le=3600)] = 60.0
    # Targets: service files rendered, validated, swapped in and reloaded (docs/services.md),
    # declared in [[target]] tables of the files of this directory (beside clusterd.toml).
    targets_dir: str = "targets.d"
    # s a watcher over SSH may leave what it is sent unread before it is dropped.
    watch_unread_drop: Annotated[float, Field(gt=0, le=3600)] = 30.0
    # The web interface (docs/web.md): HTTPS on ADDRESS:PORT; nothing: none.  The
    # certificate: these files, or one this machine makes for its name (web.crt, web.key).
    web_listen: str | None = None
    web_cert: Path | None = None
    web_key: Path | None = None
    web_session_minutes: Annotated[float, Field(gt=0, le=24 * 60)] = 30.0
    # Alerts by mail to the alertconfig recipients (clusterd.node.alertmail).
    alert_relay: str = "localhost:25"  # host or host:port: a relay, or the local MTA
    alert_from: str | None = None  # default clusterd@HOSTNAME
    alert_gather: Annotated[float, Field(ge=0, le=3600)] = 10.0  # s to wait for company
    alert_repeat: Annotated[float, Field(ge=0)] = 600.0  # one mail per (kind, member) per s
    alert_max_per_hour: Annotated[int, Field(ge=1, le=10_000)] = 30
    # Cross-node checks that clustercheck compares on every member (clusterd.node.nodechecks).
    check_users: CheckList = []  # numeric uid equal everywhere
    check_groups: CheckList = []  # numeric gid equal everywhere
    check_paths: CheckList = []  # exists everywhere (relative: to the data directory)
    check_addresses: CheckList = []  # assigned to an interface of every member
    passwd_file: str = "/etc/passwd"
    group_file: str = "/etc/group"

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str) -> str:
        name = host_key(value)
        if not DOMAIN_RE.fullmatch(name):
            raise ValueError("a fully qualified host name (two labels or more: ny.example.com)")
        return name

    @field_validator("web_listen")
    @classmethod
    def _web_listen(cls, value: str | None) -> str | None:
        if value is not None:
            web_address(value)
        return value

    @model_validator(mode="after")
    def _web_files(self) -> DaemonConfig:
        if (self.web_cert is None) != (self.web_key is None):
            raise ValueError("web_cert and web_key go together (or neither: this machine's own)")
        return self

    @field_validator("alert_relay")
    @classmethod
    def _relay(cls, value: str) -> str:
        parse_relay(value)
        return value

    @field_validator("publish_hook")
    @classmethod
    def _hook(cls, value: str | None) -> str | None:
        if value is not None and not shlex.split(value):  # (unbalanced quotes: ValueError)
            raise ValueError("an empty command line")
        return value

    @field_validator("check_addresses")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ValueError(f"{address!r} is not an IP address") from None
        return value

    @field_validator("serial")
    @classmethod
    def _serial(cls, value: str) -> str:
        if not SERIAL_RE.fullmatch(value):
            raise ValueError("a serial number: letters, digits and '-' (64 at most)")
        return value

    @property
    def software(self) -> str:
        """The version members compare on hello: links need equal versions."""
        return self.software_version or __version__

    @property
    def database_url(self) -> str:
        return self.database if "://" in self.database else str(self.data_dir / self.database)

    @property
    def host_key(self) -> Path:
        return self.data_dir / "ssh_host_ed25519_key"

    @property
    def machine_key(self) -> Path:
        return self.data_dir / "machine_ed25519_key"

    @property
    def admin_key(self) -> Path:
        """The local admin key: ``clusterd shell`` logs in as admin with it (0600)."""
        return self.data_dir / "admin_ed25519_key"

    @property
    def control_socket(self) -> Path:
        return self.data_dir / "control.sock"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "clusterd.log"

    def file_settings(self) -> dict[str, Any]:
        """What ``init`` writes to the file (everything but the directory itself)."""
        found = self.model_dump(mode="json", exclude={"data_dir"}, exclude_none=True)
        return {k: v for k, v in found.items() if v != []}


def load(data_dir: Path, overrides: dict[str, Any] | None = None) -> DaemonConfig:
    path = data_dir / CONFIG_NAME
    try:
        settings = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found; run `clusterd init` first") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    settings.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return parse(settings, data_dir, str(path))


def parse(settings: dict[str, Any], data_dir: Path, where: str) -> DaemonConfig:
    try:
        return DaemonConfig(data_dir=data_dir, **settings)
    except ValidationError as exc:
        problems = [
            f"{where}: {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        ]
        raise ConfigError("\n".join(problems)) from None


def dump_toml(settings: dict[str, Any]) -> str:
    """Flat TOML for our flat settings (strings, numbers, booleans)."""
    lines = []
    for key, value in settings.items():
        if isinstance(value, list):
            text = "[" + ", ".join(dump_toml({"x": v})[4:-1] for v in value) + "]"
        elif isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int | float):
            text = repr(value)
        else:
            text = '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


def save(config: DaemonConfig, **changes: Any) -> DaemonConfig:
    """Change settings in ``clusterd.toml`` (what the running daemon switched at run time)."""
    path = config.data_dir / CONFIG_NAME
    try:
        settings = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    settings.update(changes)
    updated = parse(settings, config.data_dir, str(path))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(dump_toml(settings), encoding="utf-8")
    tmp.replace(path)
    return config.model_copy(update=changes) if updated else config
