"""Replay a bag through segmentation_node and show the result in RViz.

    ros2 launch vseg replay.launch.py bag:=/data/drive_01 image:=/camera/image_raw weights:=/path/model.safetensors

The bag is played by vseg's own rclpy player (`bag_play`, the same as `vseg bag play`), so the
replay works where rosbag2 is not installed and the launch file runs no shell. With `loop:=true` the
stamps jump back at every restart and the node resets its temporal state there.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

ARGUMENTS = (
    ("bag", "", "rosbag2 directory to play (mcap or sqlite3)"),
    ("image", "/camera/image_raw", "the bag's image topic (sensor_msgs/Image)"),
    ("rate", "1.0", "playback speed factor"),
    ("loop", "false", "play the bag again and again"),
    ("model", "lstm_icnet_v2", "registered model name (`vseg models` lists them)"),
    ("weights", "", "checkpoint path (.safetensors with its .json) or a shipped name; empty: random weights"),
    ("device", "auto", "auto | cpu | cuda | cuda:N"),
    ("precision", "fp32", "fp32 | fp16 | bf16"),
    ("rviz", "true", "start RViz with config/vseg.rviz"),
)


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("vseg")
    params_file = DeclareLaunchArgument(
        "params_file",
        default_value=PathJoinSubstitution([share, "config", "segmentation.yaml"]),
        description="parameters YAML of segmentation_node",
    )
    declared = [DeclareLaunchArgument(n, default_value=d, description=t) for n, d, t in ARGUMENTS]
    player = Node(
        package="vseg",
        executable="bag_play",
        name="bag_play",
        output="screen",
        arguments=[LaunchConfiguration("bag"), "--rate", LaunchConfiguration("rate"), "--wait-for-subscribers", "30"],
        condition=UnlessCondition(LaunchConfiguration("loop")),
    )
    looping_player = Node(
        package="vseg",
        executable="bag_play",
        name="bag_play",
        output="screen",
        arguments=[
            LaunchConfiguration("bag"), "--rate", LaunchConfiguration("rate"), "--wait-for-subscribers", "30", "--loop",
        ],
        condition=IfCondition(LaunchConfiguration("loop")),
    )  # fmt: skip
    segmentation = Node(
        package="vseg",
        executable="segmentation_node",
        name="segmentation",
        output="screen",
        emulate_tty=True,
        parameters=[
            LaunchConfiguration("params_file"),
            {n: LaunchConfiguration(n) for n in ("model", "weights", "device", "precision")},
        ],
        remappings=[("image", LaunchConfiguration("image"))],
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz",
        arguments=["-d", PathJoinSubstitution([share, "config", "vseg.rviz"])],
        condition=IfCondition(LaunchConfiguration("rviz")),
    )
    return LaunchDescription([params_file, *declared, segmentation, player, looping_player, rviz])
