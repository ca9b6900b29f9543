#!/usr/bin/env python3
"""Turns LiveKit's config-sample.yaml into a test fixture with every key uncommented.

Usage: scripts/livekit-config-sample.py SAMPLE_YAML SOURCE_NOTE > signaling/tests/fixtures/livekit-config-sample.yaml

A commented line is uncommented when what follows its first `#` is a YAML key
(`name:` then a space or the end) or a list item (`- `); prose stays a comment. Removing
`# ` where the `#` stands keeps the indentation LiveKit wrote. Placeholders that are not
values (`<external-ip-of-node>`, `<api_key>`) are replaced by example values, because
Prism checks the keys it implements.
"""
import re
import sys

KEY = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*:(\s|$)|- )")
PLACEHOLDERS = {
    "<external-ip-of-node>": "192.0.2.10",
    "<api_key>": "key1",
}


def uncomment(line: str) -> str:
    m = re.match(r"^(\s*)#( ?)(.*)$", line)
    if not m:
        return line
    indent, _, rest = m.groups()
    if rest.lstrip().startswith("#") or not KEY.match(rest):
        return line
    return indent + rest


def main() -> None:
    sample, note = sys.argv[1], sys.argv[2]
    print(f"# LiveKit's config-sample.yaml ({note}) with every key uncommented by")
    print("# scripts/livekit-config-sample.py; placeholders replaced by example values.")
    with open(sample, encoding="utf-8") as f:
        for line in f.read().splitlines():
            out = uncomment(line)
            for k, v in PLACEHOLDERS.items():
                out = out.replace(k, v)
            print(out)


if __name__ == "__main__":
    main()
