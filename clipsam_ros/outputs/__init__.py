"""What the node publishes, built once for the live node and for replayed bags.

    topics.py            the output topic table: names, types, image or not, publishing order
    message_types.py     the message classes as one bundle (rclpy's or a rosbags typestore's)
    builder.py           one frame's {topic: message}, and the Image / Header / verdict JSON helpers
    annotations.py       ~/annotations: defect boxes and mask outlines as one visualization_msgs/ImageMarker
    vision_msgs.py       Detection2DArray and Classification (vision_msgs is optional on the node)
    vision_msgs_defs.py  the vision_msgs .msg text, so bags carry vision_msgs without it installed
"""
