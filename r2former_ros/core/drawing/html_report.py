"""
One self-contained HTML page: headings, text, tables and figures, every image embedded.

Images are PNG data URIs, so the file can be mailed, attached to an issue or opened offline and
still shows everything. The page keeps a list of its figures (:attr:`HtmlReport.figures`) so a
caller can say what it contains.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
import html
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from r2former_ros.core.errors import ConfigError

_STYLE = ('body{font-family:sans-serif;max-width:1100px;margin:1em auto;color:#222}'
          'table{border-collapse:collapse;margin:.5em 0}'
          'td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}'
          'th:first-child,td:first-child{text-align:left}'
          'figure{display:inline-block;margin:.5em;vertical-align:top}'
          'figcaption{font-size:90%;color:#555;max-width:640px}'
          'pre{background:#f6f6f6;padding:.5em;overflow-x:auto}'
          '.note{color:#a40}')


def png_data_uri(image: NDArray[np.uint8] | str | Path) -> str:
    """Encode an RGB array or a PNG file as a ``data:image/png;base64,...`` URI."""
    if isinstance(image, np.ndarray):
        ok, encoded = cv2.imencode('.png', cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if not ok:
            raise ConfigError('cannot encode the image as PNG')
        data = encoded.tobytes()
    else:
        data = Path(image).read_bytes()
    return 'data:image/png;base64,' + base64.b64encode(data).decode('ascii')


class HtmlReport:
    """Build the page part by part, then :meth:`write` it."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.parts: list[str] = [f'<h1>{html.escape(title)}</h1>']
        self.figures: list[str] = []  # captions of the embedded figures, in page order

    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append(f'<h{level}>{html.escape(text)}</h{level}>')

    def paragraph(self, text: str, note: bool = False) -> None:
        css = ' class="note"' if note else ''
        self.parts.append(f'<p{css}>{html.escape(text)}</p>')

    def preformatted(self, text: str) -> None:
        self.parts.append(f'<pre>{html.escape(text)}</pre>')

    def table(self, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        head = ''.join(f'<th>{html.escape(str(h))}</th>' for h in header)
        body = ''.join('<tr>' + ''.join(f'<td>{html.escape(str(v))}</td>' for v in row)
                       + '</tr>' for row in rows)
        self.parts.append(f'<table><tr>{head}</tr>{body}</table>')

    def figure(self, image: NDArray[np.uint8] | str | Path, caption: str,
               width: int | None = None) -> None:
        size = f' width="{int(width)}"' if width else ''
        self.parts.append(f'<figure><img src="{png_data_uri(image)}" alt="{html.escape(caption)}"'
                          f'{size}><figcaption>{html.escape(caption)}</figcaption></figure>')
        self.figures.append(caption)

    def render(self) -> str:
        return ('<!doctype html><html><head><meta charset="utf-8">'
                f'<title>{html.escape(self.title)}</title><style>{_STYLE}</style></head><body>'
                + '\n'.join(self.parts) + '</body></html>\n')

    def write(self, path: str | Path) -> Path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(self.render(), encoding='utf-8')
        return out
