"""Access control modelled on ejabberd: acl, access_rules, shapers, shaper_rules.

    acl:            named sets of subjects; a set matches if ANY of its entries
                    match (account, group, server, ip, glob).
    access_rules:   named ordered lists of ``allow: <acl>`` / ``deny: <acl>``;
                    the first matching line decides; no match (or a rule name
                    nobody defined) means deny.
    shapers:        named token-bucket limits for bytes and messages.
    shaper_rules:   one ordered list of ``<shaper>: <acl>``; the first match
                    picks the connection's shaper. ``none`` means unshaped.

``all`` and ``none`` are builtin ACL names; a bare ``- allow`` / ``- deny`` /
``- <shaper>`` line is short for ``<outcome>: all``.

Everything here is pure and synchronous: time is passed in as ``now`` (use
one clock throughout) and nothing does I/O. Matching is done per connection or
registration; only `Shaper.consume` runs per message.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from dataclasses import dataclass
from typing import Annotated, Any, Callable

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationError, model_validator

BUILTIN_ACLS = ("all", "none")
NO_SHAPER = "none"
# decide() name for the shaper_rules list; an access rule may not use it.
SHAPER_RULES = "shaper_rules"
ACCESS_OUTCOMES = ("allow", "deny")


class AclConfigError(ValueError):
    """Invalid acl/access_rules/shapers/shaper_rules; `errors` holds one "key.path: message" per problem."""

    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


# --- schema ---------------------------------------------------------------


def _as_list(v: Any) -> Any:
    # `account: alice` is short for `account: [alice]`.
    return [v] if isinstance(v, str) else v


def _parse_network(s: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        net = ipaddress.ip_network(s, strict=False)
    except ValueError:
        raise ValueError(f"not an IP network: {s!r}") from None
    # ::ffff:a.b.c.d/104 is written for mapped clients; clients are matched as IPv4.
    if net.version == 6 and net.prefixlen >= 96 and net.network_address.ipv4_mapped is not None:
        return ipaddress.IPv4Network((net.network_address.ipv4_mapped, net.prefixlen - 96))
    return net


def _network(s: str) -> str:
    _parse_network(s)
    return s


def _at_least_one(v):
    if v < 1:
        raise ValueError("must be >= 1")
    return v


def _positive(v):
    if v <= 0:
        raise ValueError("must be > 0")
    return v


Names = Annotated[list[str], BeforeValidator(_as_list)]
Networks = Annotated[list[Annotated[str, AfterValidator(_network)]], BeforeValidator(_as_list)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AclEntry(_Strict):
    """One named ACL. Names and globs compare case-insensitively."""

    account: Names = []
    group: Names = []
    server: Names = []   # globs over the server id or name
    ip: Networks = []    # networks; host bits are ignored (strict=False)
    glob: Names = []     # globs over the connection's "user@host"


class ShaperSpec(_Strict):
    """Token buckets: `burst` messages, refilled at `messages_per_second`.

    The byte bucket holds the same burst window: burst / messages_per_second
    seconds' worth of bytes_per_second (normal: 10 / 5 = 2 s = 20000 bytes).
    """

    bytes_per_second: Annotated[float, AfterValidator(_positive)]
    messages_per_second: Annotated[float, AfterValidator(_positive)]
    burst: Annotated[int, AfterValidator(_at_least_one)]


def _rule_line(v: Any, outcomes: tuple[str, ...] | None) -> dict[str, str]:
    expected = "'allow: <acl>' or 'deny: <acl>'" if outcomes else "'<shaper>: <acl>'"
    if isinstance(v, str):
        v = {v: "all"}
    if not isinstance(v, dict) or len(v) != 1:
        raise ValueError(f"must be one {expected}")
    (outcome, acl), = v.items()
    if not isinstance(outcome, str) or (outcomes and outcome not in outcomes):
        raise ValueError(f"must be one {expected}, not {outcome!r}")
    if not isinstance(acl, str):
        raise ValueError(f"{outcome}: must name one acl")
    return v


AccessRuleLine = Annotated[dict[str, str], BeforeValidator(lambda v: _rule_line(v, ACCESS_OUTCOMES))]
ShaperRuleLine = Annotated[dict[str, str], BeforeValidator(lambda v: _rule_line(v, None))]

# Types of the four top-level config sections, for a config model to declare.
ACL_SCHEMA: dict[str, Any] = {
    "acl": dict[str, AclEntry],
    "access_rules": dict[str, list[AccessRuleLine]],
    "shapers": dict[str, ShaperSpec],
    "shaper_rules": list[ShaperRuleLine],
}


class AclConfig(_Strict):
    """The four sections together, with cross-references checked.

    Key paths in errors are top-level (``acl.admin.ip[0]``), so a config model
    can inherit from this class to embed it.
    """

    acl: dict[str, AclEntry] = {}
    access_rules: dict[str, list[AccessRuleLine]] = {}
    shapers: dict[str, ShaperSpec] = {}
    shaper_rules: list[ShaperRuleLine] = []

    @model_validator(mode="after")
    def _references(self) -> "AclConfig":
        errors = []
        for name in self.acl:
            if name in BUILTIN_ACLS:
                errors.append(f"acl.{name}: '{name}' is a builtin acl and cannot be redefined")
        if NO_SHAPER in self.shapers:
            errors.append(f"shapers.{NO_SHAPER}: '{NO_SHAPER}' is builtin (no shaping) and cannot be redefined")
        if SHAPER_RULES in self.access_rules:
            errors.append(f"access_rules.{SHAPER_RULES}: the name is reserved for the shaper_rules section")

        known_acls = f"defined: {', '.join(sorted(self.acl)) or '(none)'}; builtin: {', '.join(BUILTIN_ACLS)}"

        def check_acl(path: str, line: dict[str, str]) -> None:
            (outcome, acl), = line.items()
            if acl not in self.acl and acl not in BUILTIN_ACLS:
                errors.append(f"{path}.{outcome}: unknown acl {acl!r} ({known_acls})")

        for rule, lines in self.access_rules.items():
            for i, line in enumerate(lines):
                check_acl(f"access_rules.{rule}[{i}]", line)
        for i, line in enumerate(self.shaper_rules):
            shaper = next(iter(line))
            if shaper != NO_SHAPER and shaper not in self.shapers:
                errors.append(f"shaper_rules[{i}]: unknown shaper {shaper!r} "
                              f"(defined: {', '.join(sorted(self.shapers)) or '(none)'}; builtin: {NO_SHAPER})")
            check_acl(f"shaper_rules[{i}]", line)
        if errors:
            raise ValueError("\n".join(errors))
        return self


_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "required key is missing",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "list_type": "must be a list",
    "string_type": "must be a string (quote values such as \"001\")",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
}


def format_errors(e: ValidationError) -> list[str]:
    """One "key.path: message" line per error, e.g. ``acl.admin.ip[0]: not an IP network: 'x'``."""
    lines = []
    for err in e.errors():
        path = ""
        for part in err["loc"]:
            if isinstance(part, int):
                path += f"[{part}]"
            elif not part.startswith("function-"):
                path += ("." if path else "") + part
        msg = _MESSAGES.get(err["type"]) or re.sub(r"^Value error, ", "", err["msg"])
        if path:
            lines.append(f"{path}: {msg}")
        else:
            # Model-level checks already name their paths, one per line.
            lines.extend(msg.splitlines())
    return lines


# --- matching -------------------------------------------------------------


@dataclass(slots=True)
class Subject:
    """Who is asking: one connection, as far as it is known yet."""

    account: str | None = None
    groups: frozenset[str] = frozenset()
    server: str | None = None        # server id, e.g. "001"
    server_name: str | None = None
    ip: str | None = None            # client address; IPv4-mapped IPv6 is matched as IPv4
    ident: str | None = None         # "user@host"


Matcher = Callable[[Subject], bool]


def _compile_globs(patterns: list[str]) -> re.Pattern | None:
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns), re.IGNORECASE)


def _client_address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if addr.version == 6 and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


class _Entry:
    """A compiled AclEntry: matches if any of its parts does."""

    __slots__ = ("accounts", "groups", "server", "networks", "ident")

    def __init__(self, spec: AclEntry):
        self.accounts = frozenset(a.casefold() for a in spec.account)
        self.groups = frozenset(g.casefold() for g in spec.group)
        self.server = _compile_globs(spec.server)
        self.networks = tuple(_parse_network(n) for n in spec.ip)
        self.ident = _compile_globs(spec.glob)

    def __call__(self, s: Subject) -> bool:
        if s.account is not None and s.account.casefold() in self.accounts:
            return True
        if self.groups and any(g.casefold() in self.groups for g in s.groups):
            return True
        if self.server is not None and (
                (s.server is not None and self.server.match(s.server))
                or (s.server_name is not None and self.server.match(s.server_name))):
            return True
        if self.ident is not None and s.ident is not None and self.ident.match(s.ident):
            return True
        if self.networks and s.ip:
            addr = _client_address(s.ip)
            if addr is not None and any(addr in net for net in self.networks):
                return True
        return False


def _always(s: Subject) -> bool:
    return True


def _never(s: Subject) -> bool:
    return False


# --- shaping --------------------------------------------------------------


class Shaper:
    """Per-connection token buckets for messages and bytes; both start full.

    `consume` never takes tokens for a refused message: the caller retries it
    after the returned delay (deferring reads) or disconnects for excess flood.
    A message larger than the byte bucket is let through once the bucket is
    full and leaves it in debt, so big messages are slowed, never starved.
    """

    __slots__ = ("name", "bytes_per_second", "messages_per_second", "burst", "burst_bytes",
                 "_msgs", "_bytes", "_last", "_msg_slack", "_byte_slack")

    def __init__(self, bytes_per_second: float, messages_per_second: float, burst: int,
                 now: float | None, *, name: str = ""):
        if bytes_per_second <= 0 or messages_per_second <= 0 or burst < 1:
            raise ValueError("shaper rates must be > 0 and burst >= 1")
        self.name = name
        self.bytes_per_second = float(bytes_per_second)
        self.messages_per_second = float(messages_per_second)
        self.burst = float(burst)
        self.burst_bytes = self.bytes_per_second * burst / self.messages_per_second
        self._msgs = self.burst
        self._bytes = self.burst_bytes
        # None: start the clock at the first consume (the buckets are full either way).
        self._last = float("-inf") if now is None else now
        # Admit up to 1 µs early, so retrying at now + delay succeeds despite float rounding of `now`.
        self._msg_slack = self.messages_per_second * 1e-6
        self._byte_slack = self.bytes_per_second * 1e-6

    def consume(self, nbytes: int, now: float) -> float:
        """0.0 if a message of `nbytes` may pass now (tokens taken), else seconds until it may."""
        elapsed = now - self._last
        if elapsed > 0:  # a clock that steps back refills nothing
            self._last = now
            m = self._msgs + elapsed * self.messages_per_second
            self._msgs = m if m < self.burst else self.burst
            b = self._bytes + elapsed * self.bytes_per_second
            self._bytes = b if b < self.burst_bytes else self.burst_bytes
        need = nbytes if nbytes < self.burst_bytes else self.burst_bytes
        msg_short = 1.0 - self._msgs
        byte_short = need - self._bytes
        if msg_short <= self._msg_slack and byte_short <= self._byte_slack:
            self._msgs -= 1.0
            self._bytes -= nbytes
            return 0.0
        msg_wait = msg_short / self.messages_per_second
        byte_wait = byte_short / self.bytes_per_second
        return msg_wait if msg_wait > byte_wait else byte_wait


# --- the compiled configuration -------------------------------------------


class Acl:
    """Compiled acl/access_rules/shapers/shaper_rules; immutable once built."""

    __slots__ = ("_acls", "_rules", "_shapers", "_shaper_rules")

    def __init__(self, config: AclConfig | None = None):
        config = config or AclConfig()
        self._acls: dict[str, Matcher] = {"all": _always, "none": _never}
        for name, spec in config.acl.items():
            self._acls[name] = _Entry(spec)
        # Lines hold the matcher itself, so deciding needs no name lookups.
        self._rules = {name: self._compile(lines) for name, lines in config.access_rules.items()}
        self._shapers = {name: (s.bytes_per_second, s.messages_per_second, s.burst)
                         for name, s in config.shapers.items()}
        self._shaper_rules = self._compile(config.shaper_rules)

    def _compile(self, lines: list[dict[str, str]]) -> tuple[tuple[str, Matcher], ...]:
        return tuple((outcome, self._acls[acl]) for line in lines for outcome, acl in line.items())

    @classmethod
    def from_config(cls, acl: dict | None = None, access_rules: dict | None = None,
                    shapers: dict | None = None, shaper_rules: list | None = None) -> "Acl":
        """Validate and compile the parsed YAML sections; raises AclConfigError (a ValueError)."""
        try:
            config = AclConfig.model_validate({
                "acl": {} if acl is None else acl,
                "access_rules": {} if access_rules is None else access_rules,
                "shapers": {} if shapers is None else shapers,
                "shaper_rules": [] if shaper_rules is None else shaper_rules,
            })
        except ValidationError as e:
            raise AclConfigError(format_errors(e)) from None
        return cls(config)

    def match(self, acl_name: str, subject: Subject) -> bool:
        """Whether `subject` is in the named ACL; an unknown name matches nobody."""
        m = self._acls.get(acl_name)
        return m is not None and m(subject)

    def decide(self, rule_name: str, subject: Subject) -> str:
        """The first matching line's outcome.

        For an access rule: "allow" or "deny"; no match, or a rule that is not
        defined, is "deny" (fail closed: a typo'd or removed rule locks out,
        never lets in). For SHAPER_RULES: a shaper name, or "none".
        """
        if rule_name == SHAPER_RULES:
            return _first(self._shaper_rules, subject, NO_SHAPER)
        return _first(self._rules.get(rule_name, ()), subject, "deny")

    def allowed(self, rule_name: str, subject: Subject) -> bool:
        return self.decide(rule_name, subject) == "allow"

    def shaper_for(self, subject: Subject, now: float | None = None) -> Shaper | None:
        """A new Shaper for a connection, or None when unshaped (no match, or `none`).

        `now` starts the buckets' clock; None starts it at the first consume.
        """
        name = _first(self._shaper_rules, subject, NO_SHAPER)
        if name == NO_SHAPER:
            return None
        bps, mps, burst = self._shapers[name]
        return Shaper(bps, mps, burst, now, name=name)

    def rule_names(self) -> list[str]:
        """Access rule names, in config order."""
        return list(self._rules)


def _first(lines: tuple[tuple[str, Matcher], ...], subject: Subject, default: str) -> str:
    for outcome, matches in lines:
        if matches(subject):
            return outcome
    return default
