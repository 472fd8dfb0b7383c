"""`helm install | upgrade | uninstall | template | lint` through the Helm SDK (helm-python-sdk),
for machines with no helm binary. Flags follow helm's own for the common cases:

    python -m e2e.helm install llmfleet helm/llmfleet -n llmfleet-system --create-namespace [--set k=v] [-f values.yaml]
    python -m e2e.helm upgrade llmfleet helm/llmfleet -n llmfleet-system [--set k=v]
    python -m e2e.helm template llmfleet helm/llmfleet -n llmfleet-system
    python -m e2e.helm lint helm/llmfleet --strict
    python -m e2e.helm uninstall llmfleet -n llmfleet-system
"""

from __future__ import annotations

import argparse
import sys

import helm_python as helm
import yaml


def _values(args) -> dict:
    """Values from ``-f`` files, then ``--set``, later ones winning key by key, as helm does."""
    values: dict = {}
    for f in args.values or []:
        values = _merge(values, yaml.safe_load(open(f)) or {})
    for s in args.set or []:
        values = _merge(values, helm.parse_set_string(s))
    return values


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m e2e.helm", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("install", "upgrade", "template"):
        p = sub.add_parser(name)
        p.add_argument("release")
        p.add_argument("chart")
        p.add_argument("-n", "--namespace", default="default")
        p.add_argument("--set", action="append")
        p.add_argument("-f", "--values", action="append")
        if name == "install":
            p.add_argument("--create-namespace", action="store_true")
    p = sub.add_parser("uninstall")
    p.add_argument("release")
    p.add_argument("-n", "--namespace", default="default")
    p = sub.add_parser("lint")
    p.add_argument("chart")
    p.add_argument("--strict", action="store_true")
    args = ap.parse_args(argv)

    try:
        if args.cmd == "lint":
            report = helm.lint(args.chart, strict=args.strict)
            for m in report["messages"]:
                print(f"[{['UNKNOWN', 'INFO', 'WARNING', 'ERROR'][m['severity']]}] {m['path']}: {m['error']}")
            bad = report["errors"] or any(m["severity"] >= (2 if args.strict else 3) for m in report["messages"])
            print(f"{report['total_charts_linted']} chart(s) linted, {'failed' if bad else 'no failures'}")
            return 1 if bad else 0
        if args.cmd == "template":
            out = helm.Chart.load(args.chart).render(_values(args), name=args.release, namespace=args.namespace,
                                                     is_install=True)
            for path, text in sorted(out.items()):
                if not path.endswith("NOTES.txt") and text.strip():
                    print(f"---\n# Source: {path}\n{text.strip()}")
            return 0
        cfg = helm.Config(namespace=args.namespace)
        if args.cmd == "install":
            rel = cfg.install(args.chart, args.release, _values(args), namespace=args.namespace,
                              create_namespace=args.create_namespace, timeout=300)
        elif args.cmd == "upgrade":
            rel = cfg.upgrade(args.chart, args.release, _values(args), namespace=args.namespace, timeout=300)
        else:
            cfg.uninstall(args.release)
            print(f'release "{args.release}" uninstalled')
            return 0
    except helm.HelmError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1
    print(f"NAME: {rel['name']}\nNAMESPACE: {rel['namespace']}\nSTATUS: {rel['status']}\nREVISION: {rel['revision']}")
    if rel.get("notes"):
        print(f"NOTES:\n{rel['notes']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
