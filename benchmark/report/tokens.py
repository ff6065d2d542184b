"""Token heat maps for text runs: each saved sentence's tokens coloured by attribution, rows methods, columns stages.

Colours are diverging (blue negative, red positive, white 0), scaled per map by its largest |value| over the
scored tokens, so each cell reads on its own: a method whose maps survive randomization keeps its red tokens
across a row. [CLS], [SEP] and other unscored tokens are gray; padding is not shown. In report.md the same
sentences appear as text with each map's three highest tokens.
"""

from __future__ import annotations

import html
from typing import Sequence

import numpy as np

CELL_CSS = ("table.tokens td{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;max-width:340px;"
            "white-space:normal}table.tokens span{padding:0 1px;margin:0 1px;border-radius:2px}"
            "table.tokens span.unscored{color:#999}")


def _colour(v: float) -> str:
    """rgb of v in [-1, 1]: white at 0, red (+) / blue (-) at full strength."""
    v = float(np.clip(v, -1.0, 1.0))
    fade = int(round(255 * (1 - abs(v))))
    return f"rgb(255,{fade},{fade})" if v >= 0 else f"rgb({fade},{fade},255)"


def _cell(words: Sequence[str], values: np.ndarray) -> str:
    finite = np.isfinite(values)
    peak = float(np.abs(values[finite]).max()) if finite.any() else 0.0
    spans = []
    for w, v in zip(words, values):
        if not w:
            continue
        text = html.escape(w)
        if not np.isfinite(v):
            spans.append(f"<span class='unscored'>{text}</span>")
        else:
            scaled = v / peak if peak > 0 else 0.0
            spans.append(f"<span style='background:{_colour(scaled)}' title='{v:.4g}'>{text}</span>")
    return " ".join(spans)


def token_table_html(arrays: dict[str, np.ndarray], methods: Sequence[str], layers: Sequence[str], k: int) -> str:
    """One sentence (saved row ``k``): an HTML table, rows methods, columns stages, tokens coloured by the signed map."""
    words = [str(w) for w in arrays["tokens"][k]]
    head = "".join(f"<th>{html.escape(str(layer))}</th>" for layer in layers)
    rows = []
    for m in methods:
        key = f"{m}/signed"
        if key not in arrays:
            continue
        maps = np.asarray(arrays[key], dtype=np.float64)  # (stages, K, L)
        cells = "".join(f"<td>{_cell(words, maps[s, k])}</td>" for s in range(min(len(layers), len(maps))))
        rows.append(f"<tr><th>{html.escape(m)}</th>{cells}</tr>")
    return (f"<style>{CELL_CSS}</style><table class='tokens'><thead><tr><th>method</th>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def token_table_markdown(arrays: dict[str, np.ndarray], methods: Sequence[str], layers: Sequence[str], k: int) -> str:
    """The same sentence in text: its tokens, then per method and stage the three highest |value| tokens."""
    words = [str(w) for w in arrays["tokens"][k]]
    lines = ["`" + " ".join(w for w in words if w) + "`", "", "| method | " + " | ".join(map(str, layers)) + " |",
             "|---" * (len(layers) + 1) + "|"]
    for m in methods:
        key = f"{m}/signed"
        if key not in arrays:
            continue
        maps = np.asarray(arrays[key], dtype=np.float64)
        cells = []
        for s in range(min(len(layers), len(maps))):
            v = np.where(np.isfinite(maps[s, k]), np.abs(maps[s, k]), -np.inf)
            top = [words[i] for i in np.argsort(-v, kind="stable")[:3] if np.isfinite(v[i]) and words[i]]
            cells.append(" ".join(top))
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def token_blocks(arrays: dict[str, np.ndarray], methods: Sequence[str], layers: Sequence[str], n: int) -> list[tuple]:
    """Report blocks for the first ``n`` saved sentences."""
    out: list[tuple] = []
    for k in range(min(n, len(arrays["tokens"]))):
        sentence = int(arrays["image_ids"][k])
        out += [("h", 3, f"Held-out sentence {sentence}"),
                ("html", token_table_html(arrays, methods, layers, k), token_table_markdown(arrays, methods, layers, k))]
    return out
