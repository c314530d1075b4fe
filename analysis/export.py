"""Write tables as CSV, JSON (records) and LaTeX (booktabs, no jinja2 needed)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
}


def escape_latex(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def _cell(value: object, digits: int) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.{digits}f}"
    return escape_latex(str(value))


def to_latex(df: pd.DataFrame, caption: str = "", digits: int = 3) -> str:
    """A ``table`` environment with a booktabs ``tabular``; floats to ``digits`` decimals."""
    header = " & ".join(escape_latex(str(c)) for c in df.columns) + r" \\"
    body = [
        " & ".join(_cell(v, digits) for v in row) + r" \\" for row in df.itertuples(index=False)
    ]
    lines = [
        r"\begin{table}[ht]",
        r"\centering",
        *([rf"\caption{{{escape_latex(caption)}}}"] if caption else []),
        rf"\begin{{tabular}}{{{'l' * len(df.columns)}}}",
        r"\toprule",
        header,
        r"\midrule",
        *body,
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
        "",
    ]
    return "\n".join(lines)


def export_tables(
    tables: dict[str, pd.DataFrame],
    folder: Path,
    captions: dict[str, str] | None = None,
    data_only: tuple[str, ...] = (),
) -> list[Path]:
    """Write each table as ``<name>.csv``, ``<name>.json`` and ``<name>.tex`` in ``folder``;
    the tables named in ``data_only`` (points to plot, not to print) without the ``.tex``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, df in tables.items():
        formats = [(".csv", df.to_csv(index=False)),
                   (".json", df.to_json(orient="records", indent=1))]
        if name not in data_only:
            formats.append((".tex", to_latex(df, (captions or {}).get(name, name))))
        for suffix, text in formats:
            path = folder / f"{name}{suffix}"
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
            written.append(path)
    return written
