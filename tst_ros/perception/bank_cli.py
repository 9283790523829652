"""`tst-ros bank init|add|list|remove|activate`: the per-building adapter bank
(`tst_ros.perception.bank`). Results go to stdout as JSON (`list` also as a table on stderr)."""
from __future__ import annotations

import json
import logging

from tst_ros.perception.bank import DEFAULT_PROTOTYPES


def register(sub) -> None:
    p = sub.add_parser("bank", help="per-building adapter bank: entries sharing one frozen base encoder")
    bsub = p.add_subparsers(dest="bank_command", metavar="ACTION", required=True)

    q = bsub.add_parser("init", help="create a bank on a base encoder")
    q.add_argument("bank", help="bank directory")
    q.add_argument("--base", required=True, help="base encoder: pre-training run dir or encoder .safetensors")
    q.set_defaults(func=run_init)

    q = bsub.add_parser("add", help="add a transferred model as a building's entry, fingerprinted on its frames")
    q.add_argument("bank")
    q.add_argument("name", help="entry name (letters, digits, _ - .)")
    q.add_argument("--model", required=True, help="model directory written by `tst-ros transfer` on the base")
    q.add_argument("--frames", required=True, help="the building's frames: a dataset store or a labeled set")
    q.add_argument("--prototypes", type=int, default=DEFAULT_PROTOTYPES, help="fingerprint prototypes K (k-means)")
    q.add_argument("--building", default="", help="description of the building (default: the frames' path)")
    q.add_argument("--base", help="create the bank on this base encoder if it does not exist yet")
    q.set_defaults(func=run_add)

    q = bsub.add_parser("list", help="the bank's entries: tasks, modalities, stored size, active")
    q.add_argument("bank")
    q.add_argument("--json", action="store_true", help="print JSON only")
    q.set_defaults(func=run_list)

    q = bsub.add_parser("remove", help="remove an entry")
    q.add_argument("bank")
    q.add_argument("name")
    q.set_defaults(func=run_remove)

    q = bsub.add_parser("activate", help="make an entry the one nodes start with")
    q.add_argument("bank")
    q.add_argument("name")
    q.set_defaults(func=run_activate)


def _log() -> logging.Logger:
    return logging.getLogger("tst_ros.bank")


def run_init(args) -> int:
    from tst_ros.perception.bank import init_bank

    bank = init_bank(args.bank, args.base)
    print(json.dumps({"bank": args.bank, "base": bank["base"]["path"], "sha256": bank["base"]["sha256"]}))
    return 0


def run_add(args) -> int:
    from tst_ros.perception.bank import add_entry

    info = add_entry(args.bank, args.name, args.model, args.frames, args.prototypes, args.building, args.base)
    stored, whole = info["stored"], info["model"]
    _log().info(f"entry {args.name!r}: stores {stored['params']:,} of {whole['params']:,} parameters "
                f"({stored['params'] / max(1, whole['params']):.1%}), {stored['bytes']:,} bytes "
                f"vs {whole['bytes']:,} for the whole model; fingerprint {info['fingerprint']['prototypes']} "
                f"prototypes of {info['fingerprint']['frames']} frames")
    print(json.dumps({k: v for k, v in info.items() if k != "base_keys"}))
    return 0


def table(rows: list[dict]) -> str:
    head = f"{'name':<20} {'tasks':<24} {'modalities':<14} {'stored params':>14} {'stored bytes':>13} " \
           f"{'of model':>9}  active"
    lines = [head]
    for r in rows:
        share = r["stored_bytes"] / max(1, r["model_bytes"])
        lines.append(f"{r['name']:<20} {','.join(r['tasks']):<24} {','.join(r['modalities']):<14} "
                     f"{r['stored_params']:>14,} {r['stored_bytes']:>13,} {share:>9.1%}  {'*' if r['active'] else ''}")
    return "\n".join(lines)


def run_list(args) -> int:
    from tst_ros.perception.bank import list_entries

    rows = list_entries(args.bank)
    if not args.json:
        _log().info("\n" + table(rows))
    print(json.dumps(rows))
    return 0


def run_remove(args) -> int:
    from tst_ros.perception.bank import remove_entry

    remove_entry(args.bank, args.name)
    print(json.dumps({"removed": args.name}))
    return 0


def run_activate(args) -> int:
    from tst_ros.perception.bank import set_active

    print(json.dumps({"active": set_active(args.bank, args.name)["active"]}))
    return 0
