"""
Trust on two drives (issue 20): what a robot would be told, with and without odometry.

For each drive, a map is built from one traverse and the other traverse is driven past it:
the first part of the drive calibrates the map (``r2former calibrate``), the rest is evaluated
(``r2former eval --json``) three ways: single frame (``--filter none``), the sequence filter
without odometry (``--filter hmm``) and with the drive's odometry (``--filter hmm --odom-topic
/odom``, on a copy of the map calibrated with the same odometry). Every drive bag carries
synthetic odometry (``traverse_bag.SyntheticOdometry``: 10 Hz, 3% scale error, 5% noise per frame
step, seeded) integrated from the true track. A kidnapped drive (the robot is carried ahead
inside the map) measures recovery.

Drives:
(a) the bundled corridor (60 + 60 frames, 10 m per frame): calibrate on drive frames 0-29,
    evaluate 30-59 on the whole map; and, to measure leaving the map, the same frames on a map
    of frames 0-44 only (its own calibration, same calibration frames);
(b) ``--drive DIR`` (optional): a folder with ``map/`` and ``drive/`` (frame-aligned images:
    frame i of the drive shows the place of frame i of the map) and ``drive.json`` (spacing_m,
    lateral_m, threshold_m, map_frames, calibration_frames, extra_flags). The map keeps its first
    ``map_frames`` frames; the drive is calibrated on its first ``calibration_frames`` and
    evaluated on the rest, which runs past the map's end. The data never lives in this
    repository: see the drive folder's README for where it comes from.

Per configuration: in-map R@1 (filtered where filtering), single-frame R@1, published precision
(``matched_precision``) and the in-map share published, out-of-map share published, ECE,
``pose_consistency`` (when eval reports it), frames to "not in the map" after the map's end,
and kidnap recovery frames. The odometry rows are skipped with a note while ``r2former eval`` /
``calibrate`` have no ``--odom-topic`` (detected from ``--help``).

    .venv/bin/python bench/trust_drives.py [--drive DIR] [--out OUT]
    .venv/bin/python bench/trust_drives.py --table   # the README's table of the committed run

Prints one JSON summary and writes it to bench/trust_drives.json (and OUT/report.json).

The second drive of bench/trust_drives.json is the full VPR-Bench Corridor (111 + 111 frames;
frames 60-110 are not bundled; MIT, github.com/MubarizZaffar/VPR-Bench, IJRR 2013 paper by
M. Milford): the map keeps frames 0-82, the drive calibrates on 0-43 and is evaluated on 44-110,
28 frames past the map's end. To make its folder:

    git clone --depth 1 https://github.com/MubarizZaffar/VPR-Bench
    mkdir -p corridor_vprbench/map corridor_vprbench/drive
    cp VPR-Bench/datasets/corridor/ref/*.jpg corridor_vprbench/map/
    cp VPR-Bench/datasets/corridor/query/*.jpg corridor_vprbench/drive/
    cat > corridor_vprbench/drive.json <<'EOF'
    {"name": "corridor-111 (VPR-Bench Corridor, full sequence)", "spacing_m": 10.0,
     "lateral_m": 1.0, "threshold_m": 25.0, "map_frames": 83, "calibration_frames": 44,
     "extra_flags": []}
    EOF
    .venv/bin/python bench/trust_drives.py --drive corridor_vprbench

GardensPoint Walking (issue 20's own example: doi:10.5281/zenodo.4590133; map/ = day_right,
drive/ = day_left, spacing_m 3, lateral_m 2, threshold_m 7.5, map_frames 150,
calibration_frames 80, extra_flags ["--rerank-top", "20", "--max-speed", "10"]) runs the same
way once downloaded; no copy of it could be reached from the development machine.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
import json
import os
from pathlib import Path
import shutil
import tempfile
import time
from typing import Any

from drive_tools import (
    ROOT,
    VENV,
    CommandFailed,
    cli_has_flag,
    code_state,
    frames_to_leave,
    frames_to_recover,
    read_json,
    run,
)
import numpy as np

from r2former_ros.core.io.traverse_bag import (
    GPS_TOPIC,
    IMAGE_TOPIC,
    ODOM_TOPIC,
    QUERY_OFFSET_M,
    SPACING_M,
    SyntheticOdometry,
    bundled_corridor,
    write_traverse_bag,
)

CONFIGS = ('single_frame', 'filter', 'filter_odometry')
KIDNAP_BEFORE = 15  # frames driven before the robot is carried ahead
IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png')


@dataclass
class Drive:
    """A map traverse and a drive traverse, frame-aligned, and how the bench splits them."""

    name: str
    map_images: list[Path]
    drive_images: list[Path]
    spacing_m: float
    lateral_m: float
    threshold_m: float
    map_frames: int
    calibration_frames: int
    leaving_map_frames: int | None = None  # a second, shorter map to measure leaving on
    extra_flags: list[str] = field(default_factory=list)
    source: str = ''

    def kidnap_frames(self) -> tuple[list[int], int]:
        """Drive frames of a kidnap inside the map: KIDNAP_BEFORE frames, then carried ahead."""
        first = list(range(self.calibration_frames, self.calibration_frames + KIDNAP_BEFORE))
        # carried at least 4 threshold distances ahead, and still 8 frames before the map's end
        jump = max(int(np.ceil(4 * self.threshold_m / self.spacing_m)), 5)
        start = first[-1] + jump
        return first + list(range(start, min(start + 15, self.map_frames - 1))), len(first)


def corridor_drive() -> Drive:
    data = bundled_corridor()
    return Drive(name='corridor (bundled, 60 + 60 frames)',
                 map_images=sorted((data / 'ref').glob('*.jpg')),
                 drive_images=sorted((data / 'query').glob('*.jpg')),
                 spacing_m=SPACING_M, lateral_m=QUERY_OFFSET_M, threshold_m=25.0, map_frames=60,
                 calibration_frames=30, leaving_map_frames=45,
                 source='r2former_ros/data/demo/corridor (VPR-Bench Corridor frames 0-59)')


def folder_drive(folder: Path) -> Drive:
    """Read a drive folder (map/, drive/, drive.json); one clear error names what is missing."""
    spec_file = folder / 'drive.json'
    if not spec_file.is_file():
        raise SystemExit(f'{spec_file} is missing (see bench/trust_drives.py for its fields)')
    spec = json.loads(spec_file.read_text(encoding='utf-8'))
    images = {}
    for side in ('map', 'drive'):
        images[side] = sorted(p for p in (folder / side).glob('*')
                              if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images[side]:
            raise SystemExit(f'{folder / side} holds no images')
    if len(images['map']) != len(images['drive']):
        raise SystemExit(f'{folder}: map/ has {len(images["map"])} images, drive/ '
                         f'{len(images["drive"])}; they must be frame-aligned')
    return Drive(name=str(spec.get('name', folder.name)), map_images=images['map'],
                 drive_images=images['drive'], spacing_m=float(spec['spacing_m']),
                 lateral_m=float(spec.get('lateral_m', 0.0)),
                 threshold_m=float(spec['threshold_m']), map_frames=int(spec['map_frames']),
                 calibration_frames=int(spec['calibration_frames']),
                 extra_flags=[str(f) for f in spec.get('extra_flags', [])],
                 source=str(folder))


def write_bag(path: Path, images: list[Path], frames: list[int], drive: Drive,
              lateral_m: float) -> Path:
    """Frames of a traverse as a bag at their track positions, with synthetic odometry."""
    return write_traverse_bag(path, [images[i] for i in frames], lateral_m, along=frames,
                              odometry=SyntheticOdometry(), spacing_m=drive.spacing_m)


class DriveBench:
    """The commands of one drive and what they measured."""

    def __init__(self, drive: Drive, out: Path, log: list[dict[str, Any]]) -> None:
        self.drive = drive
        self.out = out
        self.log = log
        self.odometry = cli_has_flag('eval', '--odom-topic') and \
            cli_has_flag('calibrate', '--odom-topic')
        self.notes: list[str] = []
        if not self.odometry:
            self.notes.append('r2former eval/calibrate have no --odom-topic yet: the odometry '
                              'rows are skipped')

    def common(self) -> list[Any]:
        return ['--image-topic', IMAGE_TOPIC, '--gps-topic', GPS_TOPIC, '--threshold-m',
                self.drive.threshold_m, *self.drive.extra_flags]

    def build_map(self, name: str, frames: int) -> Path:
        bag = write_bag(self.out / 'bags' / f'map_{frames}', self.drive.map_images,
                        list(range(frames)), self.drive, 0.0)
        map_dir = self.out / name
        run([VENV / 'build_map', '--bag', bag, '--image-topic', IMAGE_TOPIC, '--gps-topic',
             GPS_TOPIC, '--all-frames', '--backbone', 'dinov2-s14', '--out', map_dir,
             '--overwrite', '--quiet'], self.log)
        return map_dir

    def calibrate(self, map_dir: Path, bag: Path, odometry: bool) -> Path:
        """Calibrate the map (a copy of it, when with odometry); return the calibrated map."""
        target = map_dir.with_name(map_dir.name + '_odom') if odometry else map_dir
        if odometry:
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(map_dir, target)
        flags = ['--odom-topic', ODOM_TOPIC] if odometry else []
        run([VENV / 'r2former', 'calibrate', target, '--bag', bag, *self.common(), '--filter',
             'hmm', *flags, '--json', self.out / f'calibrate_{target.name}.json'], self.log)
        return target

    def evaluate(self, label: str, maps: dict[str, Path], bag: Path) -> dict[str, Any]:
        """Eval JSON of each configuration (or why it is missing)."""
        results: dict[str, Any] = {}
        for config in CONFIGS:
            if config == 'filter_odometry' and not self.odometry:
                results[config] = {'skipped': 'no --odom-topic in r2former eval yet'}
                continue
            map_dir = maps['odometry' if config == 'filter_odometry' else 'plain']
            result = self.out / f'eval_{label}_{config}.json'
            flags = ['--odom-topic', ODOM_TOPIC] if config == 'filter_odometry' else []
            try:
                run([VENV / 'r2former', 'eval', '--map', map_dir, '--bag', bag, *self.common(),
                     '--filter', 'none' if config == 'single_frame' else 'hmm', *flags,
                     '--json', result], self.log)
            except CommandFailed as err:
                results[config] = {'failed': str(err), 'stderr_tail': self.log[-1].get(
                    'stderr_tail')}
                continue
            results[config] = read_json(result)
        return results

    def measure(self) -> dict[str, Any]:
        drive = self.drive
        total = len(drive.drive_images)
        calib = list(range(drive.calibration_frames))
        rest = list(range(drive.calibration_frames, total))
        kidnap, jump_at = drive.kidnap_frames()
        bags = self.out / 'bags'
        calib_bag = write_bag(bags / 'drive_calibration', drive.drive_images, calib, drive,
                              drive.lateral_m)
        test_bag = write_bag(bags / 'drive_test', drive.drive_images, rest, drive,
                             drive.lateral_m)
        kidnap_bag = write_bag(bags / 'drive_kidnap', drive.drive_images, kidnap, drive,
                               drive.lateral_m)
        map_dir = self.build_map('map', drive.map_frames)
        maps = {'plain': self.calibrate(map_dir, calib_bag, odometry=False)}
        if self.odometry:
            maps['odometry'] = self.calibrate(map_dir, calib_bag, odometry=True)
        test = self.evaluate('test', maps, test_bag)
        kidnapped = self.evaluate('kidnap', maps, kidnap_bag)
        leaving = test
        leaving_map = None
        if drive.leaving_map_frames:
            leaving_map = self.build_map('map_leaving', drive.leaving_map_frames)
            short = {'plain': self.calibrate(leaving_map, calib_bag, odometry=False)}
            if self.odometry:
                short['odometry'] = self.calibrate(leaving_map, calib_bag, odometry=True)
            leaving = self.evaluate('leaving', short, test_bag)
        report: dict[str, Any] = {
            'drive': drive.name, 'source': drive.source, 'spacing_m': drive.spacing_m,
            'threshold_m': drive.threshold_m, 'extra_flags': drive.extra_flags,
            'map_frames': f'0-{drive.map_frames - 1}',
            'calibration_frames': f'0-{drive.calibration_frames - 1}',
            'evaluated_frames': f'{rest[0]}-{rest[-1]}',
            'leaving_map_frames': f'0-{(drive.leaving_map_frames or drive.map_frames) - 1}',
            'kidnap': {'frames': f'{kidnap[0]}-{kidnap[jump_at - 1]} then '
                                 f'{kidnap[jump_at]}-{kidnap[-1]}', 'jump_after': jump_at},
            'notes': self.notes,
            'configurations': {},
        }
        for config in CONFIGS:
            row = row_of(test[config])
            if 'error' not in row:
                leave = row_of(leaving[config]) if leaving is not test else row
                if 'error' in leave:
                    row['leaving_error'] = leave['error']
                row['out_of_map_share_published'] = leave.get('out_of_map_share_published')
                row['out_of_map_frames'] = leave.get('out_of_map_frames')
                row['leaving_the_map'] = leave.get('leaving_the_map')
                row['kidnap_recovery_frames'] = (
                    frames_to_recover(kidnapped[config], jump_at, drive.spacing_m,
                                      drive.threshold_m)
                    if 'track' in kidnapped[config] else kidnapped[config])
            report['configurations'][config] = row
        report['calibration'] = {name: calibration_brief(self.out / f'calibrate_{m.name}.json')
                                 for name, m in maps.items()}
        return report


def row_of(summary: dict[str, Any]) -> dict[str, Any]:
    """Pick the numbers issue 20 asks for from one eval JSON (or say why there are none)."""
    if 'track' not in summary:
        return {'error': summary}
    track = summary['track']
    in_map = np.asarray(track['in_map'], dtype=bool)
    matched = np.asarray(track['matched'], dtype=bool)
    recall = summary['recall_filtered'] or summary['recall_reranked']
    return {
        'filter': summary['filter'],
        'odometry': summary.get('odometry', summary.get('odom_topic')),
        'calibrated': summary['calibrated'],
        'confidence_threshold': summary['confidence']['threshold'],
        'threshold_source': summary['confidence'].get('threshold_source'),
        'in_map_frames': int(in_map.sum()),
        'in_map_R@1': recall['1'],
        'single_frame_R@1': summary['single_frame']['recall_at_1'],
        'published_precision': summary['matched_precision'],
        'in_map_share_published': float(matched[in_map].mean()) if in_map.any() else None,
        'out_of_map_frames': summary['outside_map']['num_queries'],
        'out_of_map_share_published': summary['outside_map']['matched_fraction'],
        'ece': summary['ece'],
        'pose_consistency': summary.get('pose_consistency', 'not reported by eval'),
        'leaving_the_map': frames_to_leave(summary),
    }


def calibration_brief(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {'missing': str(path)}
    calibration = read_json(path)
    return {key: calibration[key] for key in ('num_frames', 'single', 'filtered')
            if key in calibration}


ROW_NAMES = {'single_frame': 'single frame', 'filter': 'filter `hmm`',
             'filter_odometry': 'filter `hmm` + odometry'}


def markdown_table(report: dict[str, Any]) -> str:
    """Return the README's table of a report (``--table``): a row per drive and configuration."""
    lines = ['| drive (evaluated frames) | published output | R@1 in map | precision of published '
             '| in-map frames published | out-of-map frames published | ECE | within own 95% '
             '| frames to "not in map" after the end | kidnap: frames to recover |',
             '|' + '---|' * 10]
    for drive in report['drives']:
        label = f"{drive['drive'].split(' (')[0]} ({drive['evaluated_frames']})"
        for key in CONFIGS:
            row = drive['configurations'].get(key)
            if row is None:
                continue
            consistency = row['pose_consistency']
            within = (f"{consistency['within_95']:.2f}" if isinstance(consistency, dict)
                      else '-')
            leave = row['leaving_the_map']['frames_to_no_match']
            cells = [label, ROW_NAMES[key], f"{row['in_map_R@1']:.3f}",
                     f"{row['published_precision']:.3f}",
                     f"{row['in_map_share_published']:.2f}",
                     f"{row['out_of_map_share_published']:.2f} of {row['out_of_map_frames']}",
                     f"{row['ece']:.3f}", within,
                     'never' if leave is None else str(leave),
                     str(row['kidnap_recovery_frames'])]
            lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--table', action='store_true',
                        help='print the README table of bench/trust_drives.json and exit')
    parser.add_argument('--drive', type=Path, help='second drive folder (map/, drive/, '
                                                   'drive.json); default: the corridor only')
    parser.add_argument('--out', type=Path, help='where bags, maps and JSON go '
                                                 '(default: a fresh temporary directory)')
    args = parser.parse_args()
    if args.table:
        print(markdown_table(read_json(ROOT / 'bench' / 'trust_drives.json')))
        return
    out = args.out or Path(tempfile.mkdtemp(prefix='trust_drives-'))
    drives = [corridor_drive()] + ([folder_drive(args.drive)] if args.drive else [])
    log: list[dict[str, Any]] = []
    start = time.perf_counter()
    load_before = os.getloadavg()
    reports = []
    for index, drive in enumerate(drives):
        folder = out / f'drive_{index}'
        folder.mkdir(parents=True, exist_ok=True)
        reports.append(DriveBench(drive, folder, log).measure())
    report = {
        'what': 'issue 20 trust numbers: DINOv2 fallback on CPU, synthetic odometry (10 Hz, 3% '
                'scale error, 5% noise per frame step, seed 0) on every drive bag',
        'machine': {'cpus': os.cpu_count(), 'load_before': [round(v, 2) for v in load_before],
                    'load_after': [round(v, 2) for v in os.getloadavg()],
                    'seconds': round(time.perf_counter() - start, 1)},
        'code': code_state(),
        'drives': reports,
        'commands': log,
    }
    text = json.dumps(report, indent=2) + '\n'
    (out / 'report.json').write_text(text, encoding='utf-8')
    (ROOT / 'bench' / 'trust_drives.json').write_text(text, encoding='utf-8')
    print(text)


if __name__ == '__main__':
    main()
