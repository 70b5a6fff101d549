"""pip install of the ROS-free parts (model, maps, evaluation); ROS users build with colcon."""

from pathlib import Path
import re

from setuptools import find_packages, setup

VERSION = re.search(r"__version__ = '([^']+)'",
                    Path(__file__).with_name('r2former_ros').joinpath('__init__.py').read_text()
                    ).group(1)

README = Path(__file__).with_name('README.md')

setup(
    name='r2former_ros',
    version=VERSION,
    description='Visual place recognition with R2Former for ROS 2: map building, localization, '
                'evaluation',
    long_description=README.read_text(encoding='utf-8') if README.is_file() else '',
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.10',
    packages=find_packages(include=['r2former_ros', 'r2former_ros.*']),
    package_data={'r2former_ros': ['py.typed', 'data/**/*']},
    # The .msg files: localize-bag registers them with rosbags (looked up under <prefix>/share).
    data_files=[('share/r2former_ros/msg', sorted(str(p) for p in Path('msg').glob('*.msg')))],
    # Lower bounds only: users bring their own CUDA build of torch; CI pins exact versions.
    install_requires=[
        'numpy>=1.23',
        'torch>=2.1',
        'timm>=0.9.16',
        'faiss-cpu>=1.7.4',
        'opencv-python-headless>=4.6',
        'rosbags>=0.10',
        'tqdm>=4.60',
    ],
    extras_require={
        'eval': ['matplotlib>=3.6'],
        'dinov2': ['onnx>=1.14'],
        # `r2former weights fetch r2former|msls-deits`: the authors' Google Drive files
        'official': ['gdown>=5'],
        # `build_map --ray`: decoding tasks and model actors on Ray Data (a cluster or local)
        'ray': ['ray[data]>=2.9'],
        'test': ['pytest>=7.4', 'rosbags-image>=0.10', 'ruff>=0.5'],
    },
    entry_points={
        'console_scripts': [
            'build_map = r2former_ros.cli.build_map:main',
            'r2former = r2former_ros.cli.main:main',
            'localization_node = r2former_ros.ros.localization_node:run',
        ],
    },
)
