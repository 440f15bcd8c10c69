"""Request traces: the `Trace` record and loaders for the public LLM serving trace formats.

A trace is what the simulator and the benchmarks replay: one arrival time, prompt length and
output length per request, plus (Mooncake only) the prefix-block ids that tell which requests
can share KV cache. Three trace formats are read:

* Azure LLM inference trace 2023 (CSV: ``TIMESTAMP,ContextTokens,GeneratedTokens``),
* Mooncake FAST'25 traces (JSON lines with ``timestamp`` in ms and ``hash_ids``),
* BurstGPT (CSV: ``Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type``).

A fourth format, the *lengths table* (CSV with ``PromptTokens,OutputTokens`` columns, such as
the bundled ShareGPT V3 table), has no arrival times: it is loaded as a `LengthTable` by
`load_lengths_csv` and can only feed a length distribution; `load_trace` refuses it.

Every loader reports a malformed file as `TraceFormatError` naming the file, the 1-based line
and what was expected, so a bad row in a million-line trace can be found with an editor.
Rows must already be in time order; the loaders refuse to sort, because an out-of-order row in
these files means a corrupted or hand-edited copy, and sorting would hide that.

Zero-length requests, per format:

* a prompt of 0 tokens is always a `TraceFormatError` (there is nothing to prefill);
* Azure and Mooncake rows with 0 output tokens are kept as 1 output token, since a served
  request always emits at least the token produced by prefill (the bundled files have none);
* BurstGPT marks failed requests with ``Response tokens == 0``; they are dropped unless
  ``include_failed=True``, which keeps them as 1 output token (they still cost a prefill);
* lengths tables follow Azure: 0 output tokens are kept as 1.
"""

import csv
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, TextIO, TypeGuard

import numpy as np
import numpy.typing as npt

from lumen.data import traces_dir
from lumen.workload.trace import Trace

__all__ = [
    "AZURE_COLUMNS",
    "BUNDLED_TRACES",
    "BURSTGPT_COLUMNS",
    "LENGTHS_COLUMNS",
    "MOONCAKE_BLOCK_TOKENS",
    "MOONCAKE_KEYS",
    "FileFormat",
    "LengthTable",
    "Trace",
    "TraceFormat",
    "TraceFormatError",
    "detect_trace_format",
    "load_azure_csv",
    "load_burstgpt_csv",
    "load_lengths",
    "load_lengths_csv",
    "load_mooncake_jsonl",
    "load_trace",
    "resolve_trace_path",
]

#: Formats with arrival times, which `load_trace` replays.
TraceFormat = Literal["azure", "mooncake", "burstgpt"]
#: Every format `detect_trace_format` tells apart: the trace formats and the lengths table.
FileFormat = Literal["azure", "mooncake", "burstgpt", "lengths"]

AZURE_COLUMNS: tuple[str, ...] = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
#: Columns the BurstGPT loader reads; the real files also carry ``Total tokens`` and
#: ``Log Type``, which are not needed (total = request + response).
BURSTGPT_COLUMNS: tuple[str, ...] = ("Timestamp", "Model", "Request tokens", "Response tokens")
MOONCAKE_KEYS: tuple[str, ...] = ("timestamp", "input_length", "output_length", "hash_ids")
#: Columns the lengths-table loader reads; the bundled ShareGPT table also carries
#: ``PromptChars`` and ``OutputChars`` (the characters the token counts were derived from).
LENGTHS_COLUMNS: tuple[str, ...] = ("PromptTokens", "OutputTokens")
#: Prompt tokens covered by one Mooncake ``hash_ids`` entry.
MOONCAKE_BLOCK_TOKENS = 512

_BURSTGPT_HEADER = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type"
_LENGTHS_HEADER = "PromptChars,OutputChars,PromptTokens,OutputTokens"

#: vLLM's serving benchmark keeps a ShareGPT pair only when prompt and output have at least
#: this many tokens, the prompt at most `VLLM_MAX_PROMPT` and both together at most
#: `VLLM_MAX_TOTAL` (see `load_lengths_csv`'s ``vllm_filter``).
VLLM_MIN_TOKENS = 4
VLLM_MAX_PROMPT = 1024
VLLM_MAX_TOTAL = 2048


class TraceFormatError(ValueError):
    """A trace file does not match its format.

    Attributes:
        path: the file.
        line: 1-based line number of the offending row, or None for file-level problems.
        detail: what was wrong and what was expected.
    """

    def __init__(self, path: Path | str, line: int | None, detail: str) -> None:
        self.path = Path(path)
        self.line = line
        self.detail = detail
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {detail}")

    def __reduce__(self) -> tuple[Any, ...]:
        # The default reduce replays args=(message,), which does not fit __init__; without
        # this the error cannot cross a process boundary (multiprocessing, pytest-xdist).
        return (type(self), (self.path, self.line, self.detail))


def load_trace(path: Path | str, format: Literal["auto"] | TraceFormat = "auto") -> Trace:
    """Load a trace file, detecting its format with `detect_trace_format` unless given.

    A lengths table (no arrival times) is a `TraceFormatError`: load it with
    `load_lengths_csv`, or `load_lengths` for the length columns of any format.
    """
    path = Path(path)
    fmt = detect_trace_format(path) if format == "auto" else format
    if fmt == "lengths":
        raise TraceFormatError(
            path,
            None,
            "a lengths table (PromptTokens,OutputTokens; no arrival times) cannot be replayed "
            "as a trace; use it as a length distribution instead, e.g. in a scenario "
            "workload.synthetic.prompt_tokens: {distribution: trace, file: ...}",
        )
    if fmt == "azure":
        return load_azure_csv(path)
    if fmt == "mooncake":
        return load_mooncake_jsonl(path)
    if fmt == "burstgpt":
        return load_burstgpt_csv(path)
    raise ValueError(f"unknown trace format {format!r}; expected auto, azure, mooncake or burstgpt")


def detect_trace_format(path: Path | str) -> FileFormat:
    """Tell a trace's format from its extension and first line.

    ``.jsonl``/``.json`` files, or any file whose first non-blank line starts with ``{``, are
    Mooncake; CSV files are told apart by their header (``lengths`` for a lengths table).
    """
    path = Path(path)
    if path.suffix.lower() in (".jsonl", ".json"):
        return "mooncake"
    with _open_text(path) as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            if line.lstrip().startswith("{"):
                return "mooncake"
            header = {name.strip() for name in next(csv.reader([line]))}
            if header.issuperset(AZURE_COLUMNS):
                return "azure"
            if header.issuperset(BURSTGPT_COLUMNS):
                return "burstgpt"
            if header.issuperset(LENGTHS_COLUMNS):
                return "lengths"
            raise TraceFormatError(
                path,
                line_no,
                f"cannot tell the trace format from header {line.strip()!r}; expected an Azure "
                f"header ({','.join(AZURE_COLUMNS)}), a BurstGPT header ({_BURSTGPT_HEADER}), "
                f"a lengths-table header ({','.join(LENGTHS_COLUMNS)}) or Mooncake JSON lines",
            )
    raise TraceFormatError(path, None, "file is empty; cannot tell the trace format")


def load_azure_csv(path: Path | str) -> Trace:
    """Load an Azure LLM inference trace (2023) CSV.

    Columns ``TIMESTAMP`` (``YYYY-MM-DD HH:MM:SS.fffffff``: seven fractional digits, which
    `datetime` cannot represent, so the fraction is parsed separately; an optional UTC offset
    such as ``+00:00`` is accepted), ``ContextTokens`` and ``GeneratedTokens``, in any order.
    Arrival times are relative to the first row. Rows must be in time order.
    """
    path = Path(path)
    prompt: list[int] = []
    output: list[int] = []
    arrival: list[float] = []
    origin: tuple[datetime, float] | None = None
    prev_line = 0
    with _open_text(path) as f:
        for line, row, col in _csv_rows(path, f, AZURE_COLUMNS):
            moment = _parse_azure_timestamp(path, line, row[col["TIMESTAMP"]])
            if origin is None:
                origin = moment
            t = _seconds_between(path, line, origin, moment)
            if arrival and t < arrival[-1]:
                raise _backwards(path, line, row[col["TIMESTAMP"]], prev_line)
            arrival.append(t)
            prev_line = line
            prompt.append(_prompt_count(path, line, "ContextTokens", row[col["ContextTokens"]]))
            output.append(
                max(1, _count(path, line, "GeneratedTokens", row[col["GeneratedTokens"]]))
            )
    return _build(path, arrival, prompt, output, None)


def load_mooncake_jsonl(path: Path | str) -> Trace:
    """Load a Mooncake trace: one JSON object per line (blank lines are skipped).

    Keys ``timestamp`` (ms after the first request), ``input_length``, ``output_length`` and
    ``hash_ids`` (one int per `MOONCAKE_BLOCK_TOKENS`-token prompt block, so exactly
    ``ceil(input_length / 512)`` of them); other keys are ignored. Hash ids are kept.
    """
    path = Path(path)
    prompt: list[int] = []
    output: list[int] = []
    arrival_ms: list[float] = []
    hash_ids: list[tuple[int, ...]] = []
    prev_line = 0
    with _open_text(path) as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as e:
                raise TraceFormatError(
                    path,
                    line,
                    f"invalid JSON ({e.msg} at column {e.colno}); expected an object "
                    f"with keys {', '.join(MOONCAKE_KEYS)}",
                ) from None
            if not isinstance(record, dict):
                raise TraceFormatError(
                    path, line, f"expected a JSON object, got {type(record).__name__}"
                )
            missing = [key for key in MOONCAKE_KEYS if key not in record]
            if missing:
                raise TraceFormatError(
                    path,
                    line,
                    f"missing key(s) {', '.join(missing)}; expected keys "
                    f"{', '.join(MOONCAKE_KEYS)}",
                )
            ts = record["timestamp"]
            if not _is_number(ts) or not math.isfinite(ts) or ts < 0:
                raise TraceFormatError(
                    path, line, f"timestamp must be a finite number of ms >= 0, got {ts!r}"
                )
            if arrival_ms and ts < arrival_ms[-1]:
                raise _backwards(path, line, ts, prev_line)
            input_length = _json_count(path, line, "input_length", record["input_length"])
            if input_length < 1:
                raise TraceFormatError(path, line, "input_length must be >= 1, got 0")
            output_length = _json_count(path, line, "output_length", record["output_length"])
            blocks = record["hash_ids"]
            if not isinstance(blocks, list) or not all(_is_int(b) for b in blocks):
                raise TraceFormatError(path, line, "hash_ids must be a list of integers")
            expected = -(-input_length // MOONCAKE_BLOCK_TOKENS)
            if len(blocks) != expected:
                raise TraceFormatError(
                    path,
                    line,
                    f"hash_ids has {len(blocks)} entries, expected "
                    f"ceil(input_length / {MOONCAKE_BLOCK_TOKENS}) = {expected} "
                    f"for input_length {input_length}",
                )
            arrival_ms.append(float(ts))
            prompt.append(input_length)
            output.append(max(1, output_length))
            hash_ids.append(tuple(blocks))
            prev_line = line
    if not arrival_ms:
        raise TraceFormatError(path, None, "no requests in file")
    arrival = [(t - arrival_ms[0]) / 1000.0 for t in arrival_ms]
    return _build(path, arrival, prompt, output, tuple(hash_ids))


def load_burstgpt_csv(
    path: Path | str, model: str | None = None, include_failed: bool = False
) -> Trace:
    """Load a BurstGPT CSV.

    Columns ``Timestamp`` (seconds, may be fractional), ``Model`` (e.g. ``ChatGPT``,
    ``GPT-4``), ``Request tokens`` and ``Response tokens`` are read; ``Total tokens`` and
    ``Log Type`` may be present and are ignored. Rows must be in time order (checked over the
    whole file, before filtering).

    Args:
        path: the CSV file.
        model: keep only rows whose ``Model`` equals this; all rows when None.
        include_failed: BurstGPT marks failed requests with ``Response tokens == 0``. They
            are dropped by default; when True they are kept as 1 output token, since the
            failed request still occupied a prefill.
    """
    path = Path(path)
    prompt: list[int] = []
    output: list[int] = []
    arrival: list[float] = []
    models_seen: set[str] = set()
    last_t = -math.inf
    prev_line = 0
    with _open_text(path) as f:
        for line, row, col in _csv_rows(path, f, BURSTGPT_COLUMNS, _BURSTGPT_HEADER):
            text = row[col["Timestamp"]]
            try:
                t = float(text)
            except ValueError:
                t = math.nan
            if not (math.isfinite(t) and t >= 0):
                raise TraceFormatError(
                    path, line, f"column 'Timestamp': expected seconds >= 0, got {text!r}"
                )
            if t < last_t:
                raise _backwards(path, line, text, prev_line)
            last_t, prev_line = t, line
            request = _prompt_count(path, line, "Request tokens", row[col["Request tokens"]])
            response = _count(path, line, "Response tokens", row[col["Response tokens"]])
            row_model = row[col["Model"]].strip()
            models_seen.add(row_model)
            if (model is not None and row_model != model) or (response == 0 and not include_failed):
                continue
            arrival.append(t)
            prompt.append(request)
            output.append(max(1, response))
    if not arrival:
        raise TraceFormatError(
            path,
            None,
            f"no requests left (model={model!r}, include_failed={include_failed}); "
            f"models in file: {', '.join(sorted(models_seen)) or 'none'}",
        )
    origin = arrival[0]
    source = str(path) if model is None else f"{path} [model={model}]"
    return _build(source, [t - origin for t in arrival], prompt, output, None)


# --------------------------------------------------------------------------------------------
# Lengths tables
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class LengthTable:
    """Prompt and output lengths of requests, without arrival times.

    Row ``i`` of both arrays is one request, so the pairing of a prompt and its output is kept
    (a length distribution may still resample the columns independently). The arrays are
    read-only int64 copies, each value >= 1; equality is identity, as for `Trace`.
    """

    prompt_tokens: npt.NDArray[np.int64]
    output_tokens: npt.NDArray[np.int64]
    source: str = "<memory>"

    def __post_init__(self) -> None:
        columns = {}
        for name in ("prompt_tokens", "output_tokens"):
            values = np.array(getattr(self, name), dtype=np.int64)  # a copy
            if values.ndim != 1 or values.size == 0:
                raise ValueError(f"{name} must be a non-empty 1-D array, got shape {values.shape}")
            if values.min() < 1:
                raise ValueError(f"{name} must be >= 1, got {values.min()}")
            values.setflags(write=False)
            columns[name] = values
        if columns["prompt_tokens"].size != columns["output_tokens"].size:
            raise ValueError(
                f"arrays differ in length: prompt_tokens {columns['prompt_tokens'].size}, "
                f"output_tokens {columns['output_tokens'].size}"
            )
        for name, values in columns.items():
            object.__setattr__(self, name, values)

    def __len__(self) -> int:
        return int(self.prompt_tokens.shape[0])


def load_lengths_csv(path: Path | str, vllm_filter: bool = False) -> LengthTable:
    """Load a lengths table: a CSV with ``PromptTokens`` and ``OutputTokens`` columns.

    Other columns (the bundled ShareGPT table's ``PromptChars`` and ``OutputChars``) are
    ignored. Rows have no order. A prompt of 0 tokens is an error; 0 output tokens count as 1.

    Args:
        path: the CSV file.
        vllm_filter: keep only the rows vLLM's serving benchmark keeps from ShareGPT: prompt
            and output of at least 4 tokens, a prompt of at most 1,024 and prompt + output of
            at most 2,048 tokens (applied to the token counts of the file, before a 0 output
            becomes 1). Off by default: every row is kept.
    """
    path = Path(path)
    prompt: list[int] = []
    output: list[int] = []
    with _open_text(path) as f:
        for line, row, col in _csv_rows(path, f, LENGTHS_COLUMNS, _LENGTHS_HEADER):
            p = _prompt_count(path, line, "PromptTokens", row[col["PromptTokens"]])
            o = _count(path, line, "OutputTokens", row[col["OutputTokens"]])
            if vllm_filter and not _vllm_keeps(p, o):
                continue
            prompt.append(p)
            output.append(max(1, o))
    if not prompt:
        raise TraceFormatError(path, None, "no rows left after vLLM's benchmark filter")
    source = f"{path} [vllm_filter]" if vllm_filter else str(path)
    return LengthTable(
        prompt_tokens=np.array(prompt, dtype=np.int64),
        output_tokens=np.array(output, dtype=np.int64),
        source=source,
    )


def load_lengths(path: Path | str, format: Literal["auto"] | FileFormat = "auto") -> LengthTable:
    """The prompt and output lengths of any supported file: a lengths table as it is, a trace
    without its arrival times (and Mooncake hash ids)."""
    path = Path(path)
    fmt = detect_trace_format(path) if format == "auto" else format
    if fmt == "lengths":
        return load_lengths_csv(path)
    trace = load_trace(path, format=fmt)
    return LengthTable(trace.prompt_tokens, trace.output_tokens, trace.source)


def _vllm_keeps(prompt: int, output: int) -> bool:
    return (
        prompt >= VLLM_MIN_TOKENS
        and output >= VLLM_MIN_TOKENS
        and prompt <= VLLM_MAX_PROMPT
        and prompt + output <= VLLM_MAX_TOTAL
    )


# --------------------------------------------------------------------------------------------
# Bundled traces
# --------------------------------------------------------------------------------------------

#: Traces shipped in ``lumen/data/traces`` (see NOTICE.md there), by the name used after '@'.
#: ``sharegpt-v3`` is a lengths table (no arrival times), usable only as a length distribution.
BUNDLED_TRACES: Mapping[str, Path] = MappingProxyType(
    {
        "azure-conv-2023": traces_dir() / "azure_llm_2023_conv.csv",
        "mooncake-synthetic": traces_dir() / "mooncake_fast25_synthetic_trace.jsonl",
        "sharegpt-v3": traces_dir() / "sharegpt_v3_lengths.csv",
    }
)


def resolve_trace_path(ref: str, base_dir: Path | None = None) -> Path:
    """Turn a trace reference into an existing file path.

    ``@name`` names a bundled trace (see `BUNDLED_TRACES`); anything else is a path, relative
    ones resolved against `base_dir` (e.g. the directory of the scenario file that names the
    trace) or the working directory when `base_dir` is None.

    Raises:
        ValueError: unknown ``@name``, or the path is a directory or a device, pipe or socket.
        FileNotFoundError: the file does not exist.
    """
    if ref.startswith("@"):
        try:
            path = BUNDLED_TRACES[ref[1:]]
        except KeyError:
            names = ", ".join(f"@{name}" for name in BUNDLED_TRACES)
            raise ValueError(f"unknown bundled trace {ref!r}; bundled traces: {names}") from None
        if not path.is_file():
            raise FileNotFoundError(f"bundled trace {ref} is missing from the install: {path}")
        return path
    path = Path(ref).expanduser()
    relative = not path.is_absolute()
    if relative:
        path = (base_dir if base_dir is not None else Path.cwd()) / path
    if path.exists() and not path.is_file():
        kind = "a directory" if path.is_dir() else "a device, pipe or socket"
        raise ValueError(f"trace file {ref!r} is {kind}, not a file ({path})")
    if not path.is_file():
        raise FileNotFoundError(
            f"trace file {ref!r} not found (looked for {path}"
            + (f", relative to {base_dir})" if relative and base_dir is not None else ")")
        )
    return path


# --------------------------------------------------------------------------------------------
# Parsing helpers
# --------------------------------------------------------------------------------------------

_AZURE_TIMESTAMP = re.compile(
    r"(\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})?"
)
_ONE_SECOND = timedelta(seconds=1)


def _open_text(path: Path) -> TextIO:
    # utf-8-sig drops the byte-order mark spreadsheet exports put before the header;
    # newline="" lets the csv module handle the CRLF line ends of the Azure files.
    return open(path, encoding="utf-8-sig", newline="")


def _csv_rows(
    path: Path, f: TextIO, required: Sequence[str], full_header: str | None = None
) -> Iterator[tuple[int, list[str], dict[str, int]]]:
    """Check the header, then yield (line number, fields, column index) per non-blank row."""
    reader = csv.reader(f)
    expected = full_header or ",".join(required)
    header = next(reader, None)
    if header is None:
        raise TraceFormatError(path, None, f"file is empty; expected header {expected}")
    names = [name.strip() for name in header]
    missing = [name for name in required if name not in names]
    if missing:
        raise TraceFormatError(
            path,
            reader.line_num,
            f"header {','.join(names)!r} lacks {', '.join(missing)}; expected columns {expected}",
        )
    col = {name: names.index(name) for name in required}
    rows = 0
    for row in reader:
        if not any(field.strip() for field in row):
            continue
        if len(row) != len(names):
            raise TraceFormatError(
                path,
                reader.line_num,
                f"expected {len(names)} fields ({','.join(names)}), "
                f"got {len(row)}: {','.join(row)!r}",
            )
        rows += 1
        yield reader.line_num, row, col
    if rows == 0:
        raise TraceFormatError(path, None, "no requests in file (header only)")


def _parse_azure_timestamp(path: Path, line: int, text: str) -> tuple[datetime, float]:
    """Split a timestamp into whole seconds (datetime) and the sub-second fraction."""
    match = _AZURE_TIMESTAMP.fullmatch(text.strip())
    if match is not None:
        whole, fraction, zone = match.groups()
        try:
            moment = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone or ""))
        except ValueError:
            pass  # e.g. month 13: report with the expected format below
        else:
            return moment, (int(fraction) / 10 ** len(fraction) if fraction else 0.0)
    raise TraceFormatError(
        path, line, f"column 'TIMESTAMP': expected 'YYYY-MM-DD HH:MM:SS.fffffff', got {text!r}"
    )


def _seconds_between(
    path: Path, line: int, origin: tuple[datetime, float], moment: tuple[datetime, float]
) -> float:
    try:
        whole = (moment[0] - origin[0]) // _ONE_SECOND  # exact integer: both are whole seconds
    except TypeError:
        raise TraceFormatError(
            path, line, "TIMESTAMP mixes values with and without a UTC offset"
        ) from None
    return whole + (moment[1] - origin[1])


def _count(path: Path, line: int, column: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise TraceFormatError(
            path, line, f"column {column!r}: expected a non-negative integer, got {text!r}"
        ) from None
    if value < 0:
        raise TraceFormatError(path, line, f"column {column!r}: must be >= 0, got {value}")
    return value


def _prompt_count(path: Path, line: int, column: str, text: str) -> int:
    value = _count(path, line, column, text)
    if value < 1:
        raise TraceFormatError(path, line, f"column {column!r}: a prompt needs >= 1 token, got 0")
    return value


def _json_count(path: Path, line: int, key: str, value: object) -> int:
    if not _is_int(value):
        raise TraceFormatError(path, line, f"{key} must be an integer, got {value!r}")
    if value < 0:
        raise TraceFormatError(path, line, f"{key} must be >= 0, got {value}")
    return value


def _is_int(value: object) -> TypeGuard[int]:
    # bool is an int subclass, but `true` is never a token count or a block id.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _backwards(path: Path, line: int, value: object, prev_line: int) -> TraceFormatError:
    return TraceFormatError(
        path,
        line,
        f"timestamp {value} is earlier than the one on line {prev_line}; "
        "rows must be in time order",
    )


def _build(
    source: Path | str,
    arrival: list[float],
    prompt: list[int],
    output: list[int],
    hash_ids: tuple[tuple[int, ...], ...] | None,
) -> Trace:
    return Trace(
        arrival_s=np.array(arrival, dtype=np.float64),
        prompt_tokens=np.array(prompt, dtype=np.int64),
        output_tokens=np.array(output, dtype=np.int64),
        hash_ids=hash_ids,
        source=str(source),
    )
