"""The netsplit module: split-hold, netjoin merge rules and the replay buffer for the link layer.

The core loads it at start (it is what the link layer calls on splits and
bursts); its options come from the config's `split_hold` and `replay:` keys.
"""

from __future__ import annotations

from netsplit.policy import NetsplitPolicy
from netsplit.verify import Verifier

# Operator commands, syntax: help (read by relayctl without a server; setup() binds the handlers).
COMMANDS = {
    "netsplit stats": "splits, held users, replay counters",
    "verify start": "ask every server for its state digest (relayctl verify waits for the answers)",
    "verify result ROUND": "the answers of a verification round",
}


def setup(module) -> None:
    core = module.core
    cfg = core.config
    policy = NetsplitPolicy(core, cfg.split_hold, cfg.replay.max_frames, cfg.replay.max_age)
    core.links.policy = policy
    def expire(now: float) -> None:
        policy.replay.expire(now)
        policy.prune_backlog(now)

    module.every(5.0, expire)

    def stats(ctx):
        from relay.core.admin import Reply
        d = dict(policy.stats, buffered=len(policy.replay), backlog=len(policy.backlog),
                 held_servers=sorted(policy.held))
        return Reply("\n".join(f"{k}: {v}" for k, v in d.items()), d)

    module.command("netsplit stats", stats)

    verifier = Verifier(core)
    module.hook("link_extension", verifier.on_frame)
    module.every(cfg.linking.verify_interval, verifier.periodic)

    def verify_start(ctx):
        from relay.core.admin import Reply
        r = verifier.start(ctx.now)
        return Reply(f"verification round {r['id']} started; expecting {len(r['expected'])} servers",
                     {"round": r["id"], "expected": r["expected"]})

    def verify_result(ctx, rid):
        from relay.core.admin import AdminError, Reply
        try:
            res = verifier.result(int(rid))
        except (KeyError, ValueError):
            raise AdminError(f"no verification round {rid}") from None
        lines = [f"{name}: {a['digest'][:16]} users {a['users']} channels {a['channels']}"
                 for name, a in sorted(res["answers"].items())]
        if res["missing"]:
            lines.append("no answer yet from: " + ", ".join(res["missing"]))
        lines.append("converged" if res["converged"] else
                     ("differs: " + ", ".join(res["differ"]) if res["differ"] else "incomplete"))
        return Reply("\n".join(lines), res, status=0 if res["converged"] or not res["complete"] else 3)

    module.command("verify start", verify_start)
    module.command("verify result", verify_result)
