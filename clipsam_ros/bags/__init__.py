"""rosbag2 recordings, read and written with `rosbags` (no ROS install needed).

    rosbag2.py   open a recording (folder, .mcap or .db3) and write one (BagError: one line)
    salvage.py   read what a recording cut short still holds
    replay.py    every frame of a recording through the Inspector, into a bag of the node's topics
"""
