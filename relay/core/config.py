"""Server configuration: one YAML file, validated once at load.

Every error names its key path (``listen[1].port: must be 1-65535``); the
server refuses to start on any. The built-in default (no file at all) is the
models' defaults and equals configs/default.yaml, which a test checks.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

EXIT_CONFIG_ERROR = 2


class ConfigError(Exception):
    """A configuration error; `errors` holds one "key.path: message" line per problem."""

    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


def _port(v: int) -> int:
    if not 1 <= v <= 65535:
        raise ValueError("must be 1-65535")
    return v


def _positive(v):
    if v <= 0:
        raise ValueError("must be > 0")
    return v


def _server_id(v: str) -> str:
    if not re.fullmatch(r"[0-9][0-9A-Z]{2}", v):
        raise ValueError("must be 3 characters: a digit, then two digits or capital letters (e.g. 001, 0AB)")
    return v


def _server_name(v: str) -> str:
    if len(v) > 63 or not re.fullmatch(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+", v):
        raise ValueError("must be a host-like name with at least one dot, at most 63 characters")
    return v


Port = Annotated[int, AfterValidator(_port)]
PositiveInt = Annotated[int, AfterValidator(_positive)]
PositiveFloat = Annotated[float, AfterValidator(_positive)]
ServerId = Annotated[str, AfterValidator(_server_id)]
ServerName = Annotated[str, AfterValidator(_server_name)]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class ServerSection(Strict):
    id: ServerId = "001"
    name: ServerName = "relay.local"
    description: str = "relaynet server"
    network: Annotated[str, AfterValidator(lambda v: v if re.fullmatch(r"[A-Za-z0-9_.-]{1,32}", v)
                                           else _raise("must be 1-32 letters, digits, '_', '.', '-'"))] = "relaynet"


def _raise(msg: str):
    raise ValueError(msg)


class LogSection(Strict):
    level: LogLevel = "info"
    file: str = "relay.log"
    max_bytes: PositiveInt = 10 * 1024 * 1024
    backups: Annotated[int, Field(ge=0)] = 5


class Listener(Strict):
    proto: Annotated[str, Field(min_length=1)]
    host: str = "127.0.0.1"
    port: Port
    tls: bool = False
    # Per-listener TLS files; fall back to the tls: section.
    cert: str | None = None
    key: str | None = None
    # udp: a datagram protocol (a module's `datagram_protocol`); no TLS (DTLS is not supported).
    transport: Literal["tcp", "udp"] = "tcp"

    @model_validator(mode="after")
    def _udp_without_tls(self) -> "Listener":
        if self.transport == "udp" and self.tls:
            raise ValueError("tls: a udp listener cannot use TLS")
        return self


class HttpSection(Strict):
    """Limits of the `http` listener (plain HTTP routes and WebSocket protocols)."""
    max_header_bytes: Annotated[int, Field(ge=1024)] = 16384     # request line and headers: 431 past it
    max_body_bytes: Annotated[int, Field(ge=0)] = 1024 * 1024    # request body: 413 past it
    max_message_bytes: Annotated[int, Field(ge=512)] = 65536     # one message of a line protocol: close 1009
    request_timeout: PositiveFloat = 30.0                        # a request, or a keep-alive wait: 408 past it


class LimitsSection(Strict):
    sendq: PositiveInt = 1024 * 1024
    link_sendq: PositiveInt = 64 * 1024 * 1024
    max_connections: PositiveInt = 60000
    shutdown_grace: PositiveFloat = 5.0
    # A TLS handshake, or a control-socket request, must be done within this (at most
    # irc.registration_timeout is used), so an idle or slow peer is closed.
    handshake_timeout: PositiveFloat = 10.0


class TlsSection(Strict):
    cert: str | None = None
    key: str | None = None


class NetworkSection(Strict):
    """Limits every protocol shares, so a name valid on one server is valid on all of them."""
    nicklen: Annotated[int, Field(ge=1, le=64)] = 9
    channellen: Annotated[int, Field(ge=2, le=200)] = 50
    topiclen: Annotated[int, Field(ge=1, le=400)] = 390
    awaylen: Annotated[int, Field(ge=1, le=400)] = 200
    kicklen: Annotated[int, Field(ge=1, le=400)] = 255
    chanlimit: Annotated[int, Field(ge=1)] = 50   # channels per member
    maxlist: Annotated[int, Field(ge=1)] = 100    # entries per ban/exception/invite list
    whowas: Annotated[int, Field(ge=0)] = 100     # departed members remembered (WHOWAS)
    # How nicks and channel names fold for comparison: IRC's rfc1459 ([]\~ are the upper case of {}|^)
    # or plain ascii. Names from XMPP and SIP are folded the same way once mapped onto nicks and channels.
    casemapping: Literal["rfc1459", "ascii"] = "rfc1459"


# Keys that lived under irc: before the network: section existed; still accepted there.
NETWORK_KEYS = tuple(NetworkSection.model_fields)


class AccountsSection(Strict):
    scram_iterations: Annotated[int, Field(ge=4096)] = 4096
    # Realm of the SIP digest HA1 kept at registration; defaults to server.name.
    realm: str | None = None
    # Seconds a removal is remembered (stored) for servers that missed it: one apart for longer
    # may bring the account back at the netjoin. 30 days.
    tombstone_lifetime: PositiveFloat = 30 * 86400.0


class StorageSection(Strict):
    backend: Literal["sqlite", "postgresql"] = "sqlite"
    file: str = "relay.db"                    # sqlite: inside data_dir (WAL)
    dsn: str | None = None                    # postgresql: libpq DSN or URI (required for it)
    pool_size: Annotated[int, Field(ge=1, le=100)] = 4
    flush_interval: PositiveFloat = 0.05      # seconds between the writer's commits (what kill -9 may lose)
    queue_limit: PositiveInt = 100000         # queued writes past which clients are read no more

    @field_validator("dsn")
    @classmethod
    def _dsn(cls, v: str | None, info) -> str | None:
        # Its syntax and reachability are checked when the server opens it (relay/storage).
        if info.data.get("backend") == "postgresql" and not v:
            raise ValueError("required when storage.backend is postgresql")
        return v


class LinkBlock(Strict):
    name: ServerName
    id: ServerId | None = None
    host: str = "127.0.0.1"
    port: Port
    secret: Annotated[str, Field(min_length=8)]
    autoconnect: bool = False
    tls: bool = False
    fingerprint: str | None = None


class LinkingSection(Strict):
    ping_interval: PositiveFloat = 30.0      # seconds of silence before a link is PINGed
    timeout: PositiveFloat = 90.0            # seconds of silence before a link is dropped (a netsplit)
    handshake_timeout: PositiveFloat = 15.0
    retry_min: PositiveFloat = 1.0           # autoconnect backoff: min * 2^failures, jittered, capped at max
    retry_max: PositiveFloat = 60.0
    verify_interval: PositiveFloat = 60.0    # anti-entropy: state digests compared with every server


class ReplaySection(Strict):
    max_frames: PositiveInt = 10000          # message frames kept for replay after a short split
    max_age: PositiveFloat = 60.0            # seconds a frame is kept


class Config(Strict):
    server: ServerSection = ServerSection()
    data_dir: str = "data"
    control_socket: str | None = None
    log: LogSection = LogSection()
    listen: list[Listener] = [Listener(proto="irc", port=6667), Listener(proto="irc", port=6697, tls=True),
                              Listener(proto="mqtt", port=1883), Listener(proto="http", port=8080),
                              Listener(proto="xmpp", port=5222), Listener(proto="xmpp", port=5223, tls=True),
                              Listener(proto="sip", port=5060, transport="udp"), Listener(proto="sip", port=5060)]
    http: HttpSection = HttpSection()
    limits: LimitsSection = LimitsSection()
    tls: TlsSection = TlsSection()
    network: NetworkSection = NetworkSection()
    accounts: AccountsSection = AccountsSection()
    storage: StorageSection = StorageSection()
    links: list[LinkBlock] = []
    linking: LinkingSection = LinkingSection()
    hub: bool = True
    split_hold: Annotated[float, Field(ge=0)] = 30.0
    replay: ReplaySection = ReplaySection()
    modules: dict[str, dict[str, Any] | None] = {"mqtt": {}, "xmpp": {}, "pubsub": {}, "sip": {}, "muc": {}}
    acl: dict[str, Any] = {"local": {"ip": ["127.0.0.0/8", "::1/128"]}}
    access_rules: dict[str, Any] = {"oper": [{"allow": "all"}], "register": [{"allow": "all"}],
                                    "create_channel": [{"allow": "all"}], "link": [{"allow": "all"}]}
    shapers: dict[str, Any] = {"normal": {"bytes_per_second": 8192, "messages_per_second": 4, "burst": 20}}
    shaper_rules: list[Any] = [{"normal": "all"}]

    # Set by load(): where relative paths are resolved from.
    base_dir: str = Field(default=".", exclude=True)
    # Top-level sections owned by protocol modules (irc:, later xmpp:, sip:), validated by the
    # module's Options model: name -> options. Set by parse().
    sections: dict[str, Any] = Field(default={}, exclude=True)

    def section(self, name: str) -> Any:
        """The validated options of a module's own top-level section (None if it has none)."""
        return self.sections.get(name)

    @field_validator("listen")
    @classmethod
    def _distinct_listeners(cls, v: list[Listener]) -> list[Listener]:
        seen: dict[tuple[str, str, int], int] = {}
        for i, l in enumerate(v):
            key = (l.transport, l.host, l.port)  # a UDP and a TCP listener may share a port (SIP: 5060 both)
            if key in seen:
                raise ValueError(f"listen[{i}] uses {l.host}:{l.port} already used by listen[{seen[key]}]")
            seen[key] = i
        return v

    @model_validator(mode="after")
    def _links_unique(self) -> "Config":
        names = [l.name for l in self.links]
        for i, n in enumerate(names):
            if n == self.server.name:
                raise ValueError(f"links[{i}].name: is this server's own name")
            if names.index(n) != i:
                raise ValueError(f"links[{i}].name: {n} appears twice")
        return self

    # Paths resolved against the config file's directory.
    def path(self, p: str) -> Path:
        return Path(p) if os.path.isabs(p) else Path(self.base_dir, p).resolve()

    @property
    def data_path(self) -> Path:
        return self.path(self.data_dir)

    @property
    def control_path(self) -> Path:
        return self.path(self.control_socket) if self.control_socket else self.data_path / "control.sock"

    @property
    def pid_path(self) -> Path:
        return self.data_path / "relay.pid"

    @property
    def realm(self) -> str:
        return self.accounts.realm or self.server.name


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


_PYDANTIC_NOISE = re.compile(r"^(Value error|Assertion failed), ")


def format_errors(e: ValidationError) -> list[str]:
    lines = []
    for err in e.errors():
        loc = _loc(tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith(("function-", "literal[")))))
        msg = _PYDANTIC_NOISE.sub("", err["msg"])
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        # Model-level validators already put the path in their message.
        lines.append(f"{loc}: {msg}" if loc else msg)
    return lines


def parse(data: Any, base_dir: str = ".") -> Config:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(["(top level): must be a mapping of keys to values"])
    data = dict(data)
    moved: list[str] = []
    old = data.get("irc")
    if isinstance(old, dict) and any(k in old for k in NETWORK_KEYS):
        # Network limits moved from irc: to network:; an irc: that still has them keeps working.
        old = dict(old)
        net = dict(data.get("network") or {})
        for k in NETWORK_KEYS:
            if k in old and k not in net:
                net[k] = old.pop(k)
                moved.append(k)
        data["irc"], data["network"] = old, net
    owned = {k: data.pop(k) for k in list(data) if k not in Config.model_fields}
    errors: list[str] = []
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        # An error in a moved key is named where the file has it.
        errors = [f"irc.{line[8:]}" if line.startswith("network.") and line[8:].split(":")[0].split(".")[0]
                  in moved else line for line in format_errors(e)]
        cfg = None
    sections = _module_sections(owned, errors)
    if errors:
        raise ConfigError(errors)
    cfg.base_dir = base_dir
    cfg.sections = sections
    # ACL sections are validated by their own schema; imported late to keep config importable alone.
    from relay.core.acl import Acl, AclConfigError
    try:
        Acl.from_config(cfg.acl, cfg.access_rules, cfg.shapers, cfg.shaper_rules)
    except AclConfigError as e:
        raise ConfigError(e.errors) from None
    return cfg


# Protocol modules loaded on every server; their top-level sections exist even when the file omits them.
# (xmpp: is loaded by default, so its section is in the default configuration too.)
DEFAULT_PROTOCOL_MODULES = ("irc", "xmpp")


def _module_sections(owned: dict[str, Any], errors: list[str]) -> dict[str, Any]:
    """Validate top-level sections that belong to modules (their `Options`); others are unknown keys."""
    from relay.core.module_names import ModuleError, section_model
    out: dict[str, Any] = {}
    for name in dict.fromkeys([*DEFAULT_PROTOCOL_MODULES, *owned]):
        try:
            model = section_model(name)
        except ModuleError:
            model = None
        if model is None:
            errors.append(f"{name}: unknown key")
            continue
        value = owned.get(name)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            errors.append(f"{name}: must be a mapping of keys to values")
            continue
        try:
            out[name] = model.model_validate(value)
        except ValidationError as e:
            errors.extend(f"{name}.{line}" for line in format_errors(e))
    return out


def dump(cfg: Config) -> dict:
    """The whole configuration as plain data, modules' sections included."""
    out = cfg.model_dump(mode="json")
    for name, opts in cfg.sections.items():
        out[name] = opts.model_dump(mode="json")
    return out


def load(path: str | os.PathLike | None) -> Config:
    """Load and validate a config file; None means the built-in default."""
    if path is None:
        return parse({}, base_dir=os.getcwd())
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError([f"{path}: not valid YAML{where}: {getattr(e, 'problem', e)}"]) from None
    return parse(data, base_dir=str(p.resolve().parent))


def defaults_dump() -> dict:
    return dump(parse({}))
