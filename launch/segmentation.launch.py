"""Run segmentation_node against a live camera.

    ros2 launch vseg segmentation.launch.py image:=/camera/image_raw model:=accel18 weights:=/path/model.safetensors
    ros2 launch vseg segmentation.launch.py namespace:=car1 cameras:=front,rear rviz:=true

Arguments override the values of `params_file` (default: the installed config/segmentation.yaml);
`cameras` (comma-separated namespaces) overrides the file's `cameras` when given. Every argument is
checked before anything starts, so a bad namespace or camera list, or `rviz:=true` where RViz is not
installed, ends the launch with one line and no process left behind. RViz gets config/vseg.rviz
rewritten for the node's actual topics. Written for the launch API of Humble and Jazzy; nothing here
evaluates Python expressions or runs a shell.
"""

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from vseg_ros.launch_arguments import (
    MODEL_PARAMETERS,
    LaunchArgumentError,
    check_namespace,
    node_parameter_arguments,
    parse_cameras,
    rviz_installed,
    segmentation_topics,
)
from vseg_ros.rviz_config import write_rviz_config

NODE_NAME = "segmentation"
ARGUMENTS = (
    ("image", "/camera/image_raw", "input image topic (sensor_msgs/Image), remapped onto the node's `image`"),
    *node_parameter_arguments(MODEL_PARAMETERS),
    ("namespace", "", "namespace of the node"),
    ("cameras", "", "comma-separated camera namespaces (front,rear: front/image, rear/image); empty: params_file's"),
    ("use_sim_time", "false", "take time from /clock"),
    (
        "managed",
        "false",
        "start the lifecycle node (managed_segmentation_node): unconfigured until a manager configures it",
    ),
    ("rviz", "false", "also start RViz, showing input, overlay and legend (fails at once if rviz2 is not installed)"),
)


def _setup(context):
    def value(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    try:
        namespace = check_namespace(value("namespace"))
        cameras = parse_cameras(value("cameras"))
        with_rviz = IfCondition(LaunchConfiguration("rviz")).evaluate(context)
        if with_rviz and not rviz_installed():
            raise LaunchArgumentError("rviz:=true, but package rviz2 is not installed: install it or pass rviz:=false")
    except LaunchArgumentError as exc:
        raise RuntimeError(str(exc)) from None  # launch prints it and stops before starting anything
    use_sim_time = IfCondition(LaunchConfiguration("use_sim_time")).evaluate(context)
    managed = IfCondition(LaunchConfiguration("managed")).evaluate(context)
    parameters = {n: LaunchConfiguration(n) for n in MODEL_PARAMETERS}
    if value("cameras"):
        parameters["cameras"] = list(cameras)
    actions = [
        Node(
            package="vseg",
            executable="managed_segmentation_node" if managed else "segmentation_node",
            name=NODE_NAME,
            namespace=namespace,
            output="screen",
            emulate_tty=True,
            parameters=[LaunchConfiguration("params_file"), parameters, {"use_sim_time": use_sim_time}],
            remappings=[("image", LaunchConfiguration("image"))],
        )
    ]
    if with_rviz:
        topics = segmentation_topics(namespace=namespace, node=NODE_NAME, image=value("image"), cameras=cameras)
        template = f"{get_package_share_directory('vseg')}/config/vseg.rviz"
        actions.append(
            Node(
                package="rviz2",
                executable="rviz2",
                name="rviz",
                arguments=["-d", str(write_rviz_config(template, topics))],
                parameters=[{"use_sim_time": use_sim_time}],
            )
        )
    return actions


def generate_launch_description() -> LaunchDescription:
    params_file = DeclareLaunchArgument(
        "params_file",
        default_value=PathJoinSubstitution([FindPackageShare("vseg"), "config", "segmentation.yaml"]),
        description="parameters YAML of segmentation_node",
    )
    declared = [DeclareLaunchArgument(n, default_value=d, description=t) for n, d, t in ARGUMENTS]
    return LaunchDescription([params_file, *declared, OpaqueFunction(function=_setup)])
