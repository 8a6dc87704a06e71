"""rosbag2 recordings: read, write, salvage a damaged one, replay one through the Inspector."""
