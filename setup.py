"""pip install for the vggt_ros library and CLI (the ROS side builds with colcon)."""

from setuptools import find_packages, setup

setup(
    name="vggt_ros",
    version="0.1.0",
    description="VGGT (Visual Geometry Grounded Transformer) for ROS 2: dense 3D from cameras",
    packages=find_packages(include=["vggt_ros", "vggt_ros.*"]),
    # The embedded default model (vggt_ros/model/weights/, docs/model_card_compact.md).
    package_data={"vggt_ros.model": ["weights/*.safetensors"]},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.3",
        "numpy>=1.24",
        "safetensors>=0.4",
        "huggingface_hub>=0.20",
        "opencv-python-headless>=4.8",
        "tqdm>=4.60",
        "scipy>=1.10",
        "pyyaml>=6",
        "matplotlib>=3.7",
        "rosbags>=0.10",
        "evo>=1.28",
        "pycolmap>=3.10",
        "gtsam>=4.2",  # the mapping back end's Sim(3) pose graph (iSAM2)
    ],
    extras_require={
        "test": [
            "pytest>=7",
            "ruff>=0.5",
            "onnx>=1.16",
            "onnxruntime>=1.18",
            "onnxscript>=0.1",
            "tensorboard>=2.14",
        ],
        "train": ["tensorboard>=2.14"],
        "onnx": ["onnx>=1.16", "onnxruntime>=1.18", "onnxscript>=0.1"],
    },
    entry_points={"console_scripts": ["vggt-ros=vggt_ros.cli:main"]},
)
