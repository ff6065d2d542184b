"""One block list, two renderings: report.md (figures as PNG files beside it) and a self-contained
report.html (figures embedded as base64, no network needed).

Blocks: ``("h", level, text)``, ``("p", text)``, ``("facts", [(key, value), ...])``,
``("table", DataFrame, show_index)``, ``("figure", file name, caption, png bytes)``, ``("html", markup, markdown)``
(markup for report.html, its text rendering for report.md: the token heat maps).
"""

from __future__ import annotations

import base64
import html
import re

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1180px;margin:1.5em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.5em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd}h3{font-size:1.05em}
table{border-collapse:collapse;font-size:13px;margin:0.6em 0;display:block;overflow-x:auto;max-width:100%}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}th{background:#f3f3f3}
td.v-pass,td.v-fail,td.v-inconclusive,table.nowrap td{white-space:nowrap}
td.v-pass{background:#d5efe6}td.v-fail{background:#f8dccb}td.v-inconclusive{background:#ececec}
figure{margin:1.2em 0}figcaption{font-size:14px;color:#333;max-width:900px;margin-top:0.3em}
img{max-width:100%;height:auto;border:0}ul.facts li{margin:0.1em 0}p.note{color:#444;font-size:14px}
"""
_VERDICT_CELL = re.compile(r"<td>(pass|fail|inconclusive)\b")


def markdown(blocks: list[tuple]) -> str:
    out: list[str] = []
    for b in blocks:
        if b[0] == "h":
            out += ["#" * b[1] + " " + b[2], ""]
        elif b[0] == "facts":
            out += [f"- **{k}**: {v}" for k, v in b[1]] + [""]
        elif b[0] == "p":
            out += [b[1], ""]
        elif b[0] == "html":
            out += [b[2], ""]
        elif b[0] == "table":
            out += [b[1].to_markdown(index=b[2], floatfmt=".3f") if len(b[1]) else "(none)", ""]
        else:  # figure: the PNG file beside the report
            out += [f"![{b[2]}]({b[1]})", "", f"*{b[2]}*", ""]
    return "\n".join(out)


def to_html(blocks: list[tuple], title: str) -> str:
    out = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
           "<meta name='viewport' content='width=device-width, initial-scale=1'>",
           f"<style>{_CSS}</style></head><body>"]
    for b in blocks:
        if b[0] == "h":
            out.append(f"<h{b[1]}>{html.escape(b[2])}</h{b[1]}>")
        elif b[0] == "facts":
            out += ["<ul class='facts'>"] + [f"<li><b>{html.escape(k)}</b>: {_inline(str(v))}</li>" for k, v in b[1]]
            out.append("</ul>")
        elif b[0] == "p":
            out.append(f"<p class='note'>{_inline(b[1])}</p>")
        elif b[0] == "html":
            out.append(b[1])
        elif b[0] == "table":
            short = len(b[1]) and b[1].map(lambda v: len(str(v))).to_numpy().max() <= 45  # no wrapping inside short cells
            t = (b[1].to_html(index=b[2], float_format="%.3f", na_rep="", border=0, classes="nowrap" if short else None)
                 if len(b[1]) else "<p>(none)</p>")
            out.append(_VERDICT_CELL.sub(lambda m: f"<td class='v-{m.group(1)}'>{m.group(1)}", t))
        else:
            b64 = base64.b64encode(b[3]).decode()
            out.append(f"<figure><img alt='{html.escape(b[1])}' src='data:image/png;base64,{b64}'>"
                       f"<figcaption>{html.escape(b[2])}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out)


def _inline(text: str) -> str:
    """Escape, then render `code` spans."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))
