"""Node configuration and subscription options as XEP-0004 data forms (XEP-0060 §16.4).

`NODE_OPTIONS` is the table of node options: name -> (type, the values it may take or None).
A form is parsed into a dict of the options it sets (ValueError on a bad value) and built from one.
"""

from __future__ import annotations

from lxml import etree

DATA = "jabber:x:data"
NODE_CONFIG = "http://jabber.org/protocol/pubsub#node_config"
SUBSCRIBE_OPTIONS = "http://jabber.org/protocol/pubsub#subscribe_options"
PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"
SUBSCRIBE_AUTHORIZATION = "http://jabber.org/protocol/pubsub#subscribe_authorization"

ACCESS_MODELS = ("open", "presence", "roster", "authorize", "whitelist")
PUBLISH_MODELS = ("publishers", "subscribers", "open")
SEND_LAST = ("never", "on_sub", "on_sub_and_presence")

# name (without "pubsub#") -> (XEP-0004 field type, allowed values or None)
NODE_OPTIONS: dict[str, tuple[str, tuple | None]] = {
    "title": ("text-single", None),
    "description": ("text-single", None),
    "access_model": ("list-single", ACCESS_MODELS),
    "publish_model": ("list-single", PUBLISH_MODELS),
    "max_items": ("text-single", None),
    "item_expire": ("text-single", None),
    "persist_items": ("boolean", None),
    "deliver_payloads": ("boolean", None),
    "deliver_notifications": ("boolean", None),
    "notify_config": ("boolean", None),
    "notify_delete": ("boolean", None),
    "notify_retract": ("boolean", None),
    "notify_sub": ("boolean", None),
    "presence_based_delivery": ("boolean", None),
    "send_last_published_item": ("list-single", SEND_LAST),
    "roster_groups_allowed": ("list-multi", None),
    "max_payload_size": ("text-single", None),
    "node_type": ("list-single", ("leaf", "collection")),
    "collection": ("text-multi", None),
    "children": ("text-multi", None),
    "type": ("text-single", None),
    "subscribe": ("boolean", None),
}

SUB_OPTIONS: dict[str, tuple[str, tuple | None]] = {
    "deliver": ("boolean", None),
    "include_body": ("boolean", None),
    "subscription_type": ("list-single", ("items", "nodes")),
    "subscription_depth": ("list-single", ("1", "all")),
    "expire": ("text-single", None),
}


def _q(ns: str, name: str) -> str:
    return "{%s}%s" % (ns, name)


def _value(kind: str, allowed, values: list[str], max_items_limit: int):
    if kind == "boolean":
        v = (values[0] if values else "").strip().lower()
        if v not in ("1", "0", "true", "false"):
            raise ValueError("not a boolean")
        return v in ("1", "true")
    if kind in ("list-multi", "text-multi"):
        return [v for v in values if v]
    v = values[0] if values else ""
    if allowed is not None and v not in allowed:
        raise ValueError(f"{v!r} is not one of {', '.join(allowed)}")
    return v


def parse(form: etree._Element, table: dict, max_items_limit: int) -> dict:
    """The options a submitted form sets (FORM_TYPE and unknown fields skipped; ValueError on bad ones)."""
    out: dict = {}
    if form.get("type") in ("cancel",):
        return out
    for field in form.findall(_q(DATA, "field")):
        var = field.get("var") or ""
        name = var[len("pubsub#"):] if var.startswith("pubsub#") else None
        if name is None or name not in table:
            continue
        kind, allowed = table[name]
        values = [v.text or "" for v in field.findall(_q(DATA, "value"))]
        out[name] = _value(kind, allowed, values, max_items_limit)
    if "max_items" in out:
        out["max_items"] = max_items(out["max_items"], max_items_limit)
    for name in ("item_expire", "max_payload_size"):
        if name in out:
            try:
                out[name] = max(0, int(out[name] or 0))
            except ValueError:
                raise ValueError(f"pubsub#{name} is not a number") from None
    return out


def max_items(value, limit: int) -> int:
    if value in ("max", ""):
        return limit
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ValueError("pubsub#max_items is not a number") from None
    if n < 0 or n > limit:
        raise ValueError(f"pubsub#max_items must be within 0..{limit}")
    return n


def build(form_type: str, options: dict, table: dict, kind: str = "form") -> etree._Element:
    x = etree.Element(_q(DATA, "x"), nsmap={None: DATA}, type=kind)
    f = etree.SubElement(x, _q(DATA, "field"), var="FORM_TYPE", type="hidden")
    etree.SubElement(f, _q(DATA, "value")).text = form_type
    for name, (ftype, allowed) in table.items():
        if name not in options:
            continue
        v = options[name]
        f = etree.SubElement(x, _q(DATA, "field"), var="pubsub#" + name, type=ftype)
        if allowed:
            for a in allowed:
                etree.SubElement(etree.SubElement(f, _q(DATA, "option")), _q(DATA, "value")).text = a
        for one in (v if isinstance(v, list) else [v]):
            etree.SubElement(f, _q(DATA, "value")).text = ("1" if one else "0") if isinstance(one, bool) else str(one)
    return x


def form_type(form: etree._Element) -> str | None:
    for field in form.findall(_q(DATA, "field")):
        if field.get("var") == "FORM_TYPE":
            return field.findtext(_q(DATA, "value"))
    return None


def fields(form: etree._Element) -> dict[str, list[str]]:
    return {f.get("var"): [v.text or "" for v in f.findall(_q(DATA, "value"))]
            for f in form.findall(_q(DATA, "field")) if f.get("var")}
