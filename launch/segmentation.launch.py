"""Run segmentation_node against a live camera.

    ros2 launch vseg segmentation.launch.py image:=/camera/image_raw model:=accel18 weights:=/path/model.safetensors

Arguments override the values of `params_file` (default: the installed config/segmentation.yaml).
Written for the launch API of Humble and Jazzy; no substitution here evaluates Python or runs a shell.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

ARGUMENTS = (
    ("image", "/camera/image_raw", "input image topic (sensor_msgs/Image), remapped onto the node's `image`"),
    ("model", "lstm_icnet_v2", "registered model name (`vseg models` lists them)"),
    ("weights", "", "checkpoint path (.safetensors with its .json) or a shipped name; empty: random weights"),
    ("device", "auto", "auto | cpu | cuda | cuda:N"),
    ("precision", "fp32", "fp32 | fp16 | bf16"),
    ("namespace", "", "namespace of the node"),
)


def generate_launch_description() -> LaunchDescription:
    params_file = DeclareLaunchArgument(
        "params_file",
        default_value=PathJoinSubstitution([FindPackageShare("vseg"), "config", "segmentation.yaml"]),
        description="parameters YAML of segmentation_node",
    )
    declared = [DeclareLaunchArgument(n, default_value=d, description=t) for n, d, t in ARGUMENTS]
    node = Node(
        package="vseg",
        executable="segmentation_node",
        name="segmentation",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        emulate_tty=True,
        parameters=[
            LaunchConfiguration("params_file"),
            {n: LaunchConfiguration(n) for n in ("model", "weights", "device", "precision")},
        ],
        remappings=[("image", LaunchConfiguration("image"))],
    )
    return LaunchDescription([params_file, *declared, node])
