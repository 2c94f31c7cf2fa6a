"""Start the VGGT perception node.

    ros2 launch vggt_ros perception.launch.py checkpoint:=facebook/VGGT-1B \
        image_topic:=/camera/color/image_raw camera_info_topic:=/camera/color/camera_info

Arguments (``ros2 launch vggt_ros perception.launch.py --show-args``):
    checkpoint          VGGT checkpoint file or Hugging Face repo id ("" = the embedded compact
                        model, docs/model_card_compact.md)
    params_file         parameter YAML (default: the package's config/perception.yaml)
    image_topic         image topic of the first camera (remaps /camera/image_raw)
    camera_info_topic   its CameraInfo topic (remaps /camera/camera_info)
    device              auto | cpu | cuda | cuda:N
    precision           auto | fp32 | bf16 | fp16
    model_config        "" (from the weights) | vggt-1b | vggt-small | vggt-compact | vggt-tiny
    untrained           true to run on random weights (pipeline tests only)
    namespace           namespace of the node and its topics
    lifecycle           true: a managed lifecycle node (configure / activate / deactivate / cleanup)
    autostart           with lifecycle:=true, configure and activate at start-up (default true)
For several cameras, list them in a copy of the parameter file (``cameras`` and
``camera.<name>.*``) and pass it as params_file.
"""

from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription

ARGUMENTS = {
    "checkpoint": ("", "VGGT checkpoint file or Hugging Face repo id (empty: the embedded compact model)"),
    "params_file": (
        PathJoinSubstitution([FindPackageShare("vggt_ros"), "config", "perception.yaml"]),
        "Parameter YAML file",
    ),
    "image_topic": ("/camera/image_raw", "Image topic of the first camera"),
    "camera_info_topic": ("/camera/camera_info", "CameraInfo topic of the first camera"),
    "device": ("auto", "Torch device: auto, cpu, cuda or cuda:N"),
    "precision": ("auto", "Compute precision: auto, fp32, bf16 or fp16"),
    "backend": ("eager", "Compiled sections: eager or torch (torch.compile, compiles once per window size)"),
    "model_config": (
        "",
        "Model architecture (empty: from the weights): vggt-1b, vggt-small, vggt-compact, vggt-tiny",
    ),
    "untrained": ("false", "Run on untrained random weights (pipeline tests only)"),
    "namespace": ("", "Namespace of the node and its topics"),
    "lifecycle": ("false", "Run as a managed lifecycle node (as Nav2 expects)"),
    "autostart": ("true", "With lifecycle:=true, configure and activate the node at start-up"),
}

# launch argument -> command-line option of the executable (not parameters: they choose the
# node class and what it does before any parameter is read).
EXECUTABLE_ARGUMENTS = {"lifecycle": "--lifecycle", "autostart": "--autostart"}

# launch argument -> node parameter it sets (tests check these names against the node's).
PARAMETER_ARGUMENTS = {
    "checkpoint": "model.checkpoint",
    "device": "model.device",
    "precision": "model.precision",
    "backend": "model.backend",
    "model_config": "model.config",
    "untrained": "model.untrained",
}

# topic the parameter file subscribes to -> launch argument that remaps it.
REMAPPINGS = {
    "/camera/image_raw": "image_topic",
    "/camera/camera_info": "camera_info_topic",
}


def generate_launch_description() -> LaunchDescription:
    """The node with the parameter file, the overriding arguments and topic remappings."""
    declared = [
        DeclareLaunchArgument(name, default_value=default, description=description)
        for name, (default, description) in ARGUMENTS.items()
    ]
    overrides = {
        "model.checkpoint": ParameterValue(LaunchConfiguration("checkpoint"), value_type=str),
        "model.device": LaunchConfiguration("device"),
        "model.precision": LaunchConfiguration("precision"),
        "model.backend": LaunchConfiguration("backend"),
        "model.config": ParameterValue(LaunchConfiguration("model_config"), value_type=str),
        "model.untrained": ParameterValue(LaunchConfiguration("untrained"), value_type=bool),
    }
    node = Node(
        package="vggt_ros",
        executable="perception_node",
        name="vggt_perception",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        emulate_tty=True,
        parameters=[LaunchConfiguration("params_file"), overrides],
        arguments=[
            part for arg, opt in EXECUTABLE_ARGUMENTS.items() for part in (opt, LaunchConfiguration(arg))
        ],
        remappings=[(topic, LaunchConfiguration(arg)) for topic, arg in REMAPPINGS.items()],
    )
    return LaunchDescription([*declared, node])
