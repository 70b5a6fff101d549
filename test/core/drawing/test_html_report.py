"""The demo's HTML report is one self-contained file: images embedded, text escaped."""

import base64
import re

import cv2
import numpy as np

from r2former_ros.core.drawing.html_report import HtmlReport, png_data_uri


def test_report_embeds_every_image_and_lists_the_figures(tmp_path):
    png = tmp_path / 'plot.png'
    cv2.imwrite(str(png), np.zeros((4, 5, 3), np.uint8))
    report = HtmlReport('demo <1>')
    report.paragraph('a < b')
    report.table(('what', 'value'), [('R@1', '0.85')])
    report.figure(png, 'recall plot')
    report.figure(np.full((3, 3, 3), 255, np.uint8), 'a picture')
    page = report.write(tmp_path / 'r.html').read_text()
    assert report.figures == ['recall plot', 'a picture']
    sources = re.findall(r'<img src="([^"]*)"', page)
    assert len(sources) == 2 and all(s.startswith('data:image/png;base64,') for s in sources)
    decoded = cv2.imdecode(np.frombuffer(base64.b64decode(sources[1].split(',', 1)[1]),
                                         np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (3, 3, 3)
    assert '<title>demo &lt;1&gt;</title>' in page and 'a &lt; b' in page
    assert '<td>R@1</td><td>0.85</td>' in page


def test_data_uri_of_a_file_is_its_bytes(tmp_path):
    png = tmp_path / 'p.png'
    cv2.imwrite(str(png), np.zeros((2, 2, 3), np.uint8))
    uri = png_data_uri(png)
    assert base64.b64decode(uri.split(',', 1)[1]) == png.read_bytes()
