"""Launch the clipsam_inspector node (and, optionally, RViz on its overlay).

    ros2 launch clipsam_ros inspect.launch.py image_topic:=/camera/image_raw
    ros2 launch clipsam_ros inspect.launch.py config:=/path/line3.yaml namespace:=line3 device:=cuda rviz:=true

Arguments:
  config        ROS 2 params YAML (default: the package's config/inspect.yaml)
  image_topic   the camera topic, remapped onto the node's `image` input; with
                input.compressed true, give the CompressedImage topic (.../compressed).
                Several cameras on one node: input.image_topics in the config instead
  namespace     namespace of the node (and of RViz)
  device        auto | cpu | cuda; empty = what the config says
  use_sim_time  true when replaying a bag with --clock
  rviz          true: also start rviz2 with config/inspect.rviz (overlay + raw image)

The config file is read with clipsam_ros's own loader (the one the CLI uses), so a
bad value stops the launch with a one-line message naming the key, and numbers
reach the node with the right types; the values then go to the node as
parameters, where they can be inspected and (where not read-only) changed with
`ros2 param`.
"""
import os
import tempfile

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from clipsam_ros.config import camera_names, load, to_dict

PACKAGE = "clipsam_ros"
NODE_NAME = "clipsam_inspector"
# the topics config/inspect.rviz shows; replaced by the launched names
RVIZ_OVERLAY_TOPIC = "/clipsam_inspector/overlay"
RVIZ_RAW_TOPIC = "/camera/image_raw"

ARGUMENTS = [
    ("config", "", "ROS 2 params YAML; empty = the package's config/inspect.yaml"),
    ("image_topic", "/camera/image_raw", "camera topic remapped onto the node's `image` input"),
    ("namespace", "", "namespace of the node and of RViz"),
    ("device", "", "auto | cpu | cuda; empty = the config's device"),
    ("use_sim_time", "false", "use /clock (bag replay)"),
    ("rviz", "false", "also start rviz2 showing the overlay and the raw image"),
]


def _flag(text):
    return text.strip().lower() in ("true", "1", "yes")


def _resolve(namespace, topic):
    """A topic name as the node sees it: relative names live in the namespace."""
    if topic.startswith("/"):
        return topic
    return f"/{namespace}/{topic}" if namespace else f"/{topic}"


def _rviz_config(share, overlay_topic, raw_topic):
    """config/inspect.rviz with the launched topic names (RViz has no remapping of displays)."""
    with open(os.path.join(share, "config", "inspect.rviz")) as f:
        text = f.read()
    text = text.replace(f"Value: {RVIZ_OVERLAY_TOPIC}\n", f"Value: {overlay_topic}\n")
    text = text.replace(f"Value: {RVIZ_RAW_TOPIC}\n", f"Value: {raw_topic}\n")
    with tempfile.NamedTemporaryFile("w", prefix="clipsam_inspect_", suffix=".rviz", delete=False) as f:
        f.write(text)
        return f.name


def _launch_setup(context):
    def arg(name):
        return LaunchConfiguration(name).perform(context).strip()

    share = get_package_share_directory(PACKAGE)
    config = arg("config") or os.path.join(share, "config", "inspect.yaml")
    cfg = load(config, [f"device={arg('device')}"] if arg("device") else [])
    namespace = arg("namespace").strip("/")
    image_topic = arg("image_topic")
    sim_time = _flag(arg("use_sim_time"))

    params = to_dict(cfg)
    topics = params["input"].pop("image_topics")   # an empty list cannot be typed as a parameter
    if topics:
        params["input"]["image_topics"] = topics
    actions = [Node(
        package=PACKAGE, executable=NODE_NAME, name=NODE_NAME, namespace=namespace,
        parameters=[params, {"use_sim_time": sim_time}],
        remappings=[("image", image_topic)],
        output="screen", emulate_tty=True)]
    if _flag(arg("rviz")):
        # several cameras: RViz shows the first one (its overlay and raw image)
        overlay = _resolve(namespace, f"{NODE_NAME}/{camera_names(topics)[0]}/overlay" if topics
                           else f"{NODE_NAME}/overlay")
        rviz_file = _rviz_config(share, overlay, _resolve(namespace, topics[0] if topics else image_topic))
        actions.append(Node(
            package="rviz2", executable="rviz2", name="rviz2", namespace=namespace,
            arguments=["-d", rviz_file], parameters=[{"use_sim_time": sim_time}], output="screen"))
    return actions


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text)
         for name, default, text in ARGUMENTS]
        + [OpaqueFunction(function=_launch_setup)])
