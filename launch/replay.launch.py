"""Replay a bag's camera through segmentation_node on the bag's time, and show the result in RViz.

    ros2 launch vseg replay.launch.py bag:=/data/drive_01 image:=/camera/image_raw weights:=/path/model.safetensors

The bag is played by vseg's own rclpy player (`bag_play`, the same as `vseg bag play`), so the replay
works where rosbag2 is not installed and the launch file runs no shell. Only the `image` topic is
played, reliably, and the node subscribes to it reliably (live it takes sensor data best effort), so
no frame is lost between them; the player publishes the bag's time on /clock and every node here runs
with use_sim_time, so the node's latency compares bag time with bag time. With `loop:=true` the
stamps jump back at every restart and the node resets its temporal state there.

Everything is checked before anything starts: `rviz:=true` where RViz is not installed ends the
launch with one line and no process behind (pass rviz:=false). A player that fails (a bag without
the `image` topic, say) ends the whole launch; a player that simply reaches the bag's end leaves the
node and RViz running, to look at the last frame.
"""

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, RegisterEventHandler, Shutdown
from launch.conditions import IfCondition
from launch.event_handlers import OnProcessExit
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from vseg_ros.launch_arguments import (
    MODEL_PARAMETERS,
    node_parameter_arguments,
    replay_node_parameters,
    rviz_installed,
    segmentation_topics,
)
from vseg_ros.rviz_config import write_rviz_config

NODE_NAME = "segmentation"
ARGUMENTS = (
    ("bag", "", "rosbag2 directory to play (mcap or sqlite3)"),
    ("image", "/camera/image_raw", "the bag's image topic (sensor_msgs/Image)"),
    ("rate", "1.0", "playback speed factor"),
    ("loop", "false", "play the bag again and again"),
    *node_parameter_arguments(MODEL_PARAMETERS),
    ("rviz", "true", "start RViz showing input, overlay and legend (fails at once if rviz2 is not installed)"),
)
# Nodes that use the bag's time: all of them (the player's own timing is wall time whatever this says).
SIM_TIME = {"use_sim_time": True}


def _stop_launch_if_failed(event, context):
    if event.returncode != 0:
        return [Shutdown(reason=f"bag_play failed (exit code {event.returncode})")]
    return None


def _setup(context):
    def value(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    with_rviz = IfCondition(LaunchConfiguration("rviz")).evaluate(context)
    if with_rviz and not rviz_installed():
        # launch prints it and stops before starting anything
        raise RuntimeError("rviz:=true, but the package rviz2 is not installed: install it or pass rviz:=false")
    if not value("bag"):
        raise RuntimeError("launch argument 'bag' is empty: pass bag:=/path/to/rosbag2_directory")
    node_parameters = replay_node_parameters(value("image"))
    actions = []
    if with_rviz:
        topics = segmentation_topics(namespace="", node=NODE_NAME, image=value("image"), cameras=("",))
        template = f"{get_package_share_directory('vseg')}/config/vseg.rviz"
        actions.append(
            Node(
                package="rviz2",
                executable="rviz2",
                name="rviz",
                arguments=["-d", str(write_rviz_config(template, topics))],
                parameters=[SIM_TIME],
            )
        )
    segmentation = Node(
        package="vseg",
        executable="segmentation_node",
        name=NODE_NAME,
        output="screen",
        emulate_tty=True,
        parameters=[
            LaunchConfiguration("params_file"),
            {n: LaunchConfiguration(n) for n in MODEL_PARAMETERS},
            node_parameters,
        ],
        remappings=[("image", LaunchConfiguration("image"))],
    )
    loop = ["--loop"] if IfCondition(LaunchConfiguration("loop")).evaluate(context) else []
    player = Node(
        package="vseg",
        executable="bag_play",
        name="bag_play",
        output="screen",
        arguments=[
            value("bag"), "--rate", value("rate"), "--topics", value("image"), "--wait-for-subscribers", "60",
            "--clock", *loop,
        ],
        parameters=[SIM_TIME],
    )  # fmt: skip
    on_player_exit = RegisterEventHandler(OnProcessExit(target_action=player, on_exit=_stop_launch_if_failed))
    return [*actions, on_player_exit, segmentation, player]


def generate_launch_description() -> LaunchDescription:
    params_file = DeclareLaunchArgument(
        "params_file",
        default_value=PathJoinSubstitution([FindPackageShare("vseg"), "config", "segmentation.yaml"]),
        description="parameters YAML of segmentation_node",
    )
    declared = [DeclareLaunchArgument(n, default_value=d, description=t) for n, d, t in ARGUMENTS]
    return LaunchDescription([params_file, *declared, OpaqueFunction(function=_setup)])
