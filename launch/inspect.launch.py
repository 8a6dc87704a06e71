"""Launch the clipsam_inspector lifecycle node (and, optionally, RViz on its overlay).

    ros2 launch clipsam_ros inspect.launch.py image_topic:=/camera/image_raw
    ros2 launch clipsam_ros inspect.launch.py config:=/path/line3.yaml namespace:=line3 device:=cuda rviz:=true
    ros2 launch clipsam_ros inspect.launch.py \
        config:=$(ros2 pkg prefix clipsam_ros)/share/clipsam_ros/config/offline.yaml reference_dir:=/data/line3/good
    ros2 launch clipsam_ros inspect.launch.py autostart:=false     # a lifecycle manager drives it

Arguments:
  config        ROS 2 params YAML (default: the package's config/inspect.yaml); its sections
                for this node are found as ROS finds them (`clipsam_inspector:`,
                `/line3/clipsam_inspector:`, `/**/clipsam_inspector:`, `/**:`)
  image_topic   the camera topic, remapped onto the node's `image` input; with
                input.compressed true, give the CompressedImage topic (.../compressed).
                Several cameras on one node: input.image_topics in the config instead
  namespace     namespace of the node (and of RViz)
  device        auto | cpu | cuda; empty = what the config says
  reference_dir localizer.reference_dir (folder of good parts); empty = the config's
  bank          localizer.bank (a saved reference bank); empty = the config's
  set           more keys, space separated: set:="refiner.threshold=0.6 decision.deadline_ms=150"
  autostart     true: configure and activate the node; false: leave it unconfigured
                for a lifecycle manager (nav2_lifecycle_manager, `ros2 lifecycle set`)
  use_sim_time  true when replaying a bag with --clock
  rviz          true: also start rviz2 with config/inspect.rviz, when rviz2 is installed

The config file is read with clipsam_ros's own loader (the one the CLI uses), so a
bad value stops the launch with a one-line message naming the key, and numbers
reach the node with the right types; the values then go to the node as
parameters, where they can be inspected and (where not read-only) changed with
`ros2 param`. When the inspector exits, the launch ends; non-zero when it failed.
"""
import os
import shlex
import shutil
import tempfile

import lifecycle_msgs.msg
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, LogInfo, OpaqueFunction, RegisterEventHandler, Shutdown
from launch.event_handlers import OnProcessExit, OnShutdown
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState

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
    ("reference_dir", "", "localizer.reference_dir: folder of good parts; empty = the config's"),
    ("bank", "", "localizer.bank: a saved reference bank; empty = the config's"),
    ("set", "", "more config keys, space separated key=value pairs"),
    ("autostart", "true", "configure and activate the node; false = leave it to a lifecycle manager"),
    ("use_sim_time", "false", "use /clock (bag replay)"),
    ("rviz", "false", "also start rviz2 showing the overlay and the raw image (when rviz2 is installed)"),
]


def _flag(text):
    return text.strip().lower() in ("true", "1", "yes")


def _resolve(namespace, topic):
    """A topic name as the node sees it: relative names live in the namespace."""
    if topic.startswith("/"):
        return topic
    return f"/{namespace}/{topic}" if namespace else f"/{topic}"


def _rviz_config(share, overlay_topic, raw_topic):
    """config/inspect.rviz with the launched topic names (RViz has no remapping of displays),
    in a temporary file that the launch removes when it shuts down."""
    with open(os.path.join(share, "config", "inspect.rviz")) as f:
        text = f.read()
    text = text.replace(f"Value: {RVIZ_OVERLAY_TOPIC}\n", f"Value: {overlay_topic}\n")
    text = text.replace(f"Value: {RVIZ_RAW_TOPIC}\n", f"Value: {raw_topic}\n")
    with tempfile.NamedTemporaryFile("w", prefix="clipsam_inspect_", suffix=".rviz", delete=False) as f:
        f.write(text)
        return f.name


def _remove(path):
    def remove(context):
        if os.path.exists(path):
            os.unlink(path)
    return OpaqueFunction(function=remove)


def _inspector_exited(event, context):
    """The inspector is the point of this launch: when it exits, everything ends, and a
    failure (non-zero exit) makes `ros2 launch` fail too (launch returns 1 on an exception)."""
    if event.returncode:
        raise RuntimeError(f"{NODE_NAME} exited with code {event.returncode}")
    return [Shutdown(reason=f"{NODE_NAME} exited")]


def _overrides(arg):
    """--set style key=value strings from the launch arguments that name config keys."""
    sets = shlex.split(arg("set"))
    for name, key in (("device", "device"), ("reference_dir", "localizer.reference_dir"),
                      ("bank", "localizer.bank")):
        if arg(name):
            sets.append(f"{key}={arg(name)}")
    return sets


def _launch_setup(context):
    def arg(name):
        return LaunchConfiguration(name).perform(context).strip()

    share = get_package_share_directory(PACKAGE)
    config = arg("config") or os.path.join(share, "config", "inspect.yaml")
    namespace = arg("namespace").strip("/")
    cfg = load(config, _overrides(arg), namespace=namespace)
    image_topic = arg("image_topic")
    sim_time = _flag(arg("use_sim_time"))

    params = to_dict(cfg)
    topics = params["input"].pop("image_topics")   # an empty list cannot be typed as a parameter
    if topics:
        params["input"]["image_topics"] = topics
    inspector = LifecycleNode(
        package=PACKAGE, executable=NODE_NAME, name=NODE_NAME, namespace=namespace,
        parameters=[params, {"use_sim_time": sim_time}],
        remappings=[("image", image_topic)],
        arguments=["--managed"],            # the transitions come from here or from a manager
        output="screen", emulate_tty=True)
    actions = [inspector, RegisterEventHandler(OnProcessExit(target_action=inspector, on_exit=_inspector_exited))]
    if _flag(arg("autostart")):
        def change(transition):
            return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(inspector),
                                               transition_id=transition))
        # activate only after the configure that autostart asked for: a manager's later
        # deactivate (active -> inactive) must not bounce back to active
        actions.append(RegisterEventHandler(OnStateTransition(
            target_lifecycle_node=inspector, start_state="configuring", goal_state="inactive",
            entities=[change(lifecycle_msgs.msg.Transition.TRANSITION_ACTIVATE)])))
        actions.append(change(lifecycle_msgs.msg.Transition.TRANSITION_CONFIGURE))
    if _flag(arg("rviz")):
        if shutil.which("rviz2") is None:
            actions.append(LogInfo(msg="rviz:=true but rviz2 is not installed (apt install ros-jazzy-rviz2): "
                                       "starting the inspector without it"))
            return actions
        # several cameras: RViz shows the first one (its overlay and raw image)
        overlay = _resolve(namespace, f"{NODE_NAME}/{camera_names(topics)[0]}/overlay" if topics
                           else f"{NODE_NAME}/overlay")
        rviz_file = _rviz_config(share, overlay, _resolve(namespace, topics[0] if topics else image_topic))
        actions.append(RegisterEventHandler(OnShutdown(on_shutdown=[_remove(rviz_file)])))
        actions.append(Node(
            package="rviz2", executable="rviz2", name="rviz2", namespace=namespace,
            arguments=["-d", rviz_file], parameters=[{"use_sim_time": sim_time}], output="screen"))
    return actions


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text)
         for name, default, text in ARGUMENTS]
        + [OpaqueFunction(function=_launch_setup)])
